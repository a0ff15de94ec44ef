"""``archlab bench``: time the upsampler and the fit engine against the papers' forms.

* ``upsample`` - the polyphase Upsampler against zero insertion + one 2-D depthwise convolution;
* ``dip`` - the papers' DIP loop against ``fit`` (fast and fp32), with PSNR after N iterations and roofline;
* ``many`` - ``fit_many`` of K runs against K sequential fits;
* ``monitors`` - a fit's on-device monitors (blur, MLV sharpness, FBC, two PSNRs) against paper 000's
  per-iteration NumPy/SciPy code and tuned NumPy, on one 512×512 image (``bench.bench_monitors``);
* ``overhead`` - the share of a fit's wall time its evaluations take (``experiments.monitor_overhead``).

Each prints a table and the conditions it ran under, and with ``-o`` writes the table as CSV (atomically).
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from archlab import bench, experiments, images
from archlab.engine import resolve_device


def register(subparsers) -> None:
    """Add ``bench upsample | dip | many | monitors | overhead`` to the ``archlab`` parser."""
    p = subparsers.add_parser("bench", help="time the upsampler and the fit engine against the papers' forms")
    sub = p.add_subparsers(dest="bench_command", required=True, metavar="SUBCOMMAND")

    upsample = sub.add_parser("upsample", help="polyphase Upsampler vs zero insertion + 2-D depthwise conv (fwd+bwd)")
    upsample.add_argument("--filter", default="L-60", help="catalogue name or filter TOML (default L-60)")
    upsample.add_argument("--channels", type=int, default=128, help="channels of the input (default 128)")
    upsample.add_argument("--size", type=int, default=64, help="input side in pixels (default 64)")
    upsample.add_argument("--repeats", type=int, default=30, help="interleaved timed rounds (default 30)")
    _add_common(upsample)
    upsample.set_defaults(func=run_upsample)

    dip = sub.add_parser("dip", help="the papers' DIP loop vs archlab's engine: s/iteration, PSNR, roofline")
    dip.add_argument("--config", action="append", metavar="PRESET:SIZE",
                     help="architecture preset and image side, repeatable (default ulyanov-dip:128 faster-dip-64:256)")
    dip.add_argument("--iterations", type=int, default=1000, help="iterations of every loop (default 1000)")
    dip.add_argument("--image", default="astronaut", help="clean image, file or built-in (default astronaut)")
    dip.add_argument("--sigma", type=float, default=25.0, help="noise σ on the 0..255 scale (default 25)")
    dip.add_argument("--seed", type=int, default=0, help="seed of noise, weights and input (default 0)")
    dip.add_argument("--repeats", type=int, default=1, help="rounds of the three loops (default 1)")
    _add_common(dip)
    dip.set_defaults(func=run_dip)

    many = sub.add_parser("many", help="fit_many of K runs vs K sequential fits: fit-iterations per second")
    many.add_argument("--arch", default="controlled-64", help="preset or spec file (default controlled-64)")
    many.add_argument("--size", type=int, default=64, help="image side (default 64)")
    many.add_argument("--k", type=int, nargs="+", default=[1, 4, 8], help="numbers of runs (default 1 4 8)")
    many.add_argument("--iterations", type=int, default=100, help="iterations of every fit (default 100)")
    many.add_argument("--repeats", type=int, default=1, help="rounds per K (default 1)")
    many.add_argument("--fp32", action="store_true", help="compare in fp32 eager instead of the fast settings")
    _add_common(many)
    many.set_defaults(func=run_many)

    monitors = sub.add_parser("monitors", help="on-device monitors vs paper 000's NumPy/SciPy code and tuned NumPy")
    monitors.add_argument("--size", type=int, default=512, help="image side (default 512)")
    monitors.add_argument("--repeats", type=int, default=7, help="interleaved timed rounds (default 7)")
    _add_common(monitors)
    monitors.set_defaults(func=run_monitors)

    overhead = sub.add_parser("overhead", help="share of a fit's wall time spent on its evaluations")
    overhead.add_argument("--arch", default="faster-dip-32", help="preset or spec file (default faster-dip-32)")
    overhead.add_argument("--size", type=int, default=128, help="image side (default 128)")
    overhead.add_argument("--iterations", type=int, default=200, help="iterations of every fit (default 200)")
    overhead.add_argument("--eval-every", type=int, default=10, help="iterations between evaluations (default 10)")
    overhead.add_argument("--repeats", type=int, default=3, help="rounds of the two fits (default 3)")
    _add_common(overhead)
    overhead.set_defaults(func=run_overhead)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("-o", "--output", default=None, help="also write the table to this CSV file")


def _prepare(args) -> torch.device:
    """The device (``--threads`` is the global option, applied before the command runs)."""
    return resolve_device(args.device)


def _report(table: pd.DataFrame, args, device: torch.device, bar: str) -> None:
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False))
    print("conditions: " + ", ".join(f"{k}={v}" for k, v in bench.conditions(device).items()))
    print(bar)
    if args.output:
        with images.atomic_path(args.output) as tmp:
            table.to_csv(tmp, index=False)
        print(f"wrote {args.output}")


def run_upsample(args) -> int:
    device = _prepare(args)
    table = bench.bench_upsample(args.filter, args.channels, args.size, args.repeats, device)
    _report(table, args, device, "speedup: naive median / Upsampler median")
    return 0


def _configs(values: list[str] | None) -> tuple[tuple[str, int], ...]:
    if not values:
        return bench.DIP_CONFIGS
    configs = []
    for value in values:
        preset, _, size = value.rpartition(":")
        if not preset or not size.isdigit():
            raise ValueError(f"config: {value!r} is not PRESET:SIZE (e.g. ulyanov-dip:128)")
        configs.append((preset, int(size)))
    return tuple(configs)


def run_dip(args) -> int:
    device = _prepare(args)
    table = bench.bench_dip(_configs(args.config), args.iterations, args.image, args.sigma, args.seed, args.repeats,
                            device=device)
    _report(table, args, device, "speedup: reference loop / archlab fit; fast_minus_fp32_db: PSNR difference of the two engines")
    return 0


def run_many(args) -> int:
    device = _prepare(args)
    table = bench.bench_many(args.arch, args.size, tuple(args.k), args.iterations, repeats=args.repeats,
                             fast=not args.fp32, device=device)
    _report(table, args, device, "speedup: batched / sequential throughput")
    return 0


def run_monitors(args) -> int:
    device = _prepare(args)
    table = pd.DataFrame([bench.bench_monitors(args.size, args.repeats, device=device)])
    _report(table, args, device, "ratio: papers_s / torch_s; max_rel_diff: largest relative numpy/torch disagreement")
    return 0


def run_overhead(args) -> int:
    device = _prepare(args)
    table = pd.DataFrame([experiments.monitor_overhead(args.arch, size=args.size, iterations=args.iterations,
                                                       eval_every=args.eval_every, repeats=args.repeats,
                                                       device=device)])
    _report(table, args, device, "overhead: the evaluations' share of the fit's wall time")
    return 0
