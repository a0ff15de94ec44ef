"""How far a DIP's oracle peak moves with the random draw alone: the papers' own code beside archlab's
preset, seed by seed, on one image of the parity runs.

One image, one noisy observation (the reference runs' own: REFERENCE.md §5b, as ``reproduce denoise-set9``
makes it), and for each seed s two fits interleaved in one process:

* ``their code`` - the network of the paper's repository, imported from a checkout given with
  ``--their-code`` (the folder holding its ``models`` package) and built after ``torch.manual_seed(s)``, its
  input 0.1 · U(0, 1) drawn next, trained as their denoising scripts train it (Adam, MSE to the
  observation, the backtracking check on every step that is not a multiple of 100):
  ``ulyanov-dip``: DmitryUlyanov/deep-image-prior ``models.get_net(32, 'skip', 'reflection',
  skip_n33d=128, skip_n33u=128, skip_n11=4, num_scales=5, upsample_mode='bilinear')``, full-size input, lr
  0.01, input jitter 1/30 redrawn every step (``denoising.ipynb``); ``shi-decoder``:
  shizenglin/Measure-and-Control-Spectral-Bias ``code/models.decoder(32, 3, ln_lambda=2,
  upsample_mode='gaussian', pad='reflection')``, input at H/32 × W/32, lr 0.001, no jitter
  (``code/denoising.py`` with the reference runs' settings);
* ``archlab`` - :func:`archlab.fitting.fit` of the preset with ``seed=s`` and the settings of ``reproduce
  denoise-set9``, in eager fp32;
* ``archlab, their init`` (``--codes``) - the same fit of archlab's network started from the
  weights and input of their code's seed s (copied across), so that what is left between the two curves is
  the code alone (loop, kernels, rounding), not the random draw.

Both record the PSNR of the raw output every 10 iterations; a row keeps the oracle peak, its iteration, the
PSNR at 1,000-iteration checkpoints and the seconds. The table puts the mean and standard deviation over
seeds beside each other: a single-seed difference between the two codes means something only where it
exceeds this spread.

    python benchmarks/seed_spread.py --their-code PATH/deep-image-prior -o results/denoise-set9/seed-spread.csv
    python benchmarks/seed_spread.py --model shi-decoder --image Peppers --iterations 2000 \
        --their-code PATH/Measure-and-Control-Spectral-Bias/code -o results/denoise-set9/seed-spread.csv
    python benchmarks/seed_spread.py --model shi-decoder --image F16 --seeds 1 --iterations 3000 \
        --codes "archlab, their init" "their code" \
        --their-code PATH/Measure-and-Control-Spectral-Bias/code -o results/denoise-set9/seed-spread.csv
    python benchmarks/seed_spread.py -o results/denoise-set9/seed-spread.csv --table

Rows are appended as each fit ends (a rerun skips the (model, image, code, seed) rows already there).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from archlab import images, metrics, models, reproduce, reproductions, tasks
from archlab.fitting import fit

CODES = ("their code", "archlab", "archlab, their init")
MODELS = ("ulyanov-dip", "shi-decoder")
EVAL_EVERY = 10
CHECKPOINTS = (1000, 2000, 3000)


def observation(model: str, image: str):
    """The run of ``reproduce denoise-set9`` for ``model`` on ``image``: the run, the clean image, the observation."""
    runs = [r for r in reproductions.denoise_set9_runs()
            if r.config == model and reproductions.short_name(r.image) == image]
    if not runs:
        names = sorted({reproductions.short_name(r.image) for r in reproductions.denoise_set9_runs()})
        raise SystemExit(f"seed_spread: no {model} run on {image!r}; images: {', '.join(names)}")
    clean = reproduce.load_clean(runs[0])
    return runs[0], clean, tasks.task_from_dict(runs[0].task).observe(clean, seed=runs[0].seed)


def their_network(their_models, model: str, size: tuple[int, int]) -> tuple[torch.nn.Module, torch.Tensor]:
    """The paper's network from its own code and its input (0.1 · U(0, 1), drawn after the network)."""
    if model == "ulyanov-dip":
        net = their_models.get_net(32, "skip", "reflection", skip_n33d=128, skip_n33u=128, skip_n11=4,
                                   num_scales=5, upsample_mode="bilinear")
        shape = size
    else:
        net = their_models.decoder(num_input_channels=32, num_output_channels=3, ln_lambda=2,
                                   upsample_mode="gaussian", pad="reflection", need_sigmoid=True, need_bias=True)
        shape = (size[0] // 32, size[1] // 32)
    return net, torch.zeros(1, 32, *shape).uniform_() * 0.1


def their_start(their_models, model: str, size: tuple[int, int], seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """Their network and input as their code draws them for ``seed`` (network first, then input)."""
    torch.manual_seed(seed)
    return their_network(their_models, model, size)


def trainable_in_build_order(net: torch.nn.Module) -> list[torch.Tensor]:
    """Trainable parameters in archlab's order, a convolution's weight before its bias: their spectral-norm
    wrapper registers ``module.bias`` before ``module.weight_bar``, so those pairs are swapped (archlab's
    networks have no such pair and keep their order)."""
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    for i in range(len(named) - 1):
        if named[i][0].endswith("module.bias") and named[i + 1][0].endswith("module.weight_bar"):
            named[i], named[i + 1] = named[i + 1], named[i]
    return [p for _, p in named]


def copy_their_init(their_net: torch.nn.Module, net: torch.nn.Module) -> None:
    """Copy their network's initial trainable parameters into archlab's network of the same preset."""
    theirs, mine = trainable_in_build_order(their_net), trainable_in_build_order(net)
    if [tuple(p.shape) for p in theirs] != [tuple(p.shape) for p in mine]:
        raise SystemExit("seed_spread: their network's parameters do not line up with archlab's preset")
    with torch.no_grad():
        for src, dst in zip(theirs, mine):
            dst.copy_(src)


def their_fit(their_models, model: str, clean: torch.Tensor, y: torch.Tensor, seed: int, iterations: int,
              lr: float, jitter: float, every: int = EVAL_EVERY) -> tuple[np.ndarray, np.ndarray]:
    """The papers' denoising loop around their own network; the PSNR every ``every`` steps."""
    net, net_input = their_start(their_models, model, tuple(y.shape[-2:]), seed)
    noise = net_input.clone()
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    y_np = y[0].numpy()
    last, psnr_noisy_last, kept = None, 0.0, []
    for i in range(iterations):
        optimiser.zero_grad()
        out = net(net_input + noise.normal_() * jitter if jitter else net_input)
        loss = F.mse_loss(out, y)
        loss.backward()
        out_np = out.detach()
        if i % every == 0:
            kept.append((i, float(metrics.psnr(out_np.clamp(0, 1), clean))))
        if i % 100:
            psnr_noisy = 10 * np.log10(1 / np.mean((out_np[0].numpy() - y_np) ** 2))
            if psnr_noisy - psnr_noisy_last < -5:
                with torch.no_grad():
                    for saved, param in zip(last, net.parameters()):
                        param.copy_(saved)
            else:
                last = [p.detach().clone() for p in net.parameters()]
                psnr_noisy_last = psnr_noisy
        optimiser.step()
    with torch.no_grad():
        out = net(net_input + noise.normal_() * jitter if jitter else net_input)
    kept.append((iterations, float(metrics.psnr(out.clamp(0, 1), clean))))
    iteration, psnr = zip(*kept)
    return np.array(iteration), np.array(psnr)


def archlab_fit(run, obs, seed: int, iterations: int, start: tuple | None = None,
                every: int = EVAL_EVERY) -> tuple[np.ndarray, np.ndarray]:
    """archlab's fit of the run's preset with ``seed``, every rule off, the PSNR every ``every`` steps;
    ``start`` = (their network, their input) starts it from their code's draw instead of archlab's."""
    settings = {**run.fit, "iterations": iterations, "eval_every": every, "stop": "none"}
    arch, net_input = run.arch, None
    if start is not None:
        arch, net_input = models.build(run.arch, obs.y.shape[1], tuple(obs.y.shape[-2:]), seed=seed)
        copy_their_init(start[0], arch)
        net_input = start[1]
    result = fit(arch, tasks.task_from_dict(run.task), obs, seed=seed, device="cpu", fast=False,
                 net_input=net_input, progress=False, **settings)
    return result.history["iteration"].to_numpy(), result.history["psnr"].to_numpy()


def _cell(rows: pd.DataFrame, column: str) -> str:
    digits = 0 if column.endswith("iteration") else 2
    mean, sd = rows[column].mean(), rows[column].std()
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if len(rows) > 1 else f"{mean:.{digits}f}"


def table(rows: pd.DataFrame) -> str:
    """Per (model, image): each seed's peaks side by side, then mean ± sd over seeds of every measure; every
    archlab fit is compared with their code's fit of the same seed."""
    out = []
    for (model, image), group in rows.groupby(["model", "image"], sort=False):
        measures = ["peak_psnr", "peak_iteration", *(c for c in group if c.startswith("psnr_") and group[c].notna().any())]
        codes = [c for c in CODES if (group["code"] == c).any()]
        mine = [c for c in codes if c != "their code"]
        out += [f"### {model} on {image}", "", "| seed | " + " | ".join(f"{c}: peak dB (iteration)" for c in codes)
                + "".join(f" | {c} − their code" for c in mine) + " |", "| --- |" + " --- |" * (len(codes) + len(mine))]
        at = group.set_index(["seed", "code"])
        for seed in sorted(group["seed"].unique()):
            cells = [f"{at.loc[(seed, c), 'peak_psnr']:.2f} ({at.loc[(seed, c), 'peak_iteration']:.0f})"
                     if (seed, c) in at.index else "" for c in codes]
            diffs = [f"{at.loc[(seed, c), 'peak_psnr'] - at.loc[(seed, 'their code'), 'peak_psnr']:+.2f}"
                     if (seed, c) in at.index and (seed, "their code") in at.index else "" for c in mine]
            out.append(f"| {seed} | " + " | ".join(cells + diffs) + " |")
        out += ["", "| mean ± sd over seeds | " + " | ".join(measures) + " | seeds |",
                "| --- |" + " --- |" * (len(measures) + 1)]
        for code in codes:
            part = group[group["code"] == code]
            out.append(f"| {code} | " + " | ".join(_cell(part, m) for m in measures) + f" | {len(part)} |")
        theirs = group[group["code"] == "their code"]
        for code in mine if len(theirs) else []:
            part = group[group["code"] == code]
            out.append(f"| {code} − their code | " + " | ".join(f"{part[m].mean() - theirs[m].mean():+.2f}"
                                                                 for m in measures) + " | |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="ulyanov-dip")
    parser.add_argument("--their-code", type=Path, help="the folder of the paper's code that holds its models package")
    parser.add_argument("--image", default="House", help="an image of reproduce denoise-set9 (default House)")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--codes", nargs="+", choices=CODES, default=list(CODES[:2]),
                        help="the fits to run per seed, in this order (default: their code, archlab)")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--table", action="store_true", help="print the table of the rows in --out")
    args = parser.parse_args(argv)
    if args.table:
        print(table(pd.read_csv(args.out)))
        return
    if args.their_code is None or not (args.their_code / "models" / "__init__.py").is_file():
        parser.error("--their-code must name the folder of the paper's code that holds its models package")
    sys.path.insert(0, str(args.their_code))
    their_models = importlib.import_module("models")
    torch.set_num_threads(1)
    run, clean, obs = observation(args.model, args.image)
    done = pd.read_csv(args.out) if args.out.exists() else pd.DataFrame(columns=["model", "image", "code", "seed"])
    for seed in range(args.seeds):
        for code in args.codes:
            if ((done["model"] == args.model) & (done["image"] == args.image) & (done["code"] == code)
                    & (done["seed"] == seed)).any():
                continue
            start = time.perf_counter()
            if code == "archlab":
                iteration, psnr = archlab_fit(run, obs, seed, args.iterations)
            elif code == "archlab, their init":
                theirs = their_start(their_models, args.model, tuple(obs.y.shape[-2:]), seed)
                iteration, psnr = archlab_fit(run, obs, seed, args.iterations, start=theirs)
            else:
                iteration, psnr = their_fit(their_models, args.model, clean, obs.y, seed, args.iterations,
                                            run.fit["lr"], run.fit["input_jitter"])
            best = int(np.argmax(psnr))
            row = {"model": args.model, "image": args.image, "code": code, "seed": seed, "peak_psnr": psnr[best],
                   "peak_iteration": int(iteration[best]), "final_psnr": psnr[-1], "iterations": args.iterations,
                   **{f"psnr_{c}": psnr[iteration == c][0] for c in CHECKPOINTS if (iteration == c).any()},
                   "seconds": round(time.perf_counter() - start, 1), "threads": torch.get_num_threads(),
                   "capability": torch.backends.cpu.get_cpu_capability()}
            done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with images.atomic_path(args.out) as tmp:
                done.to_csv(tmp, index=False)
            print(f"{args.model} {args.image} {code} seed {seed}: peak {row['peak_psnr']:.2f} @ "
                  f"{row['peak_iteration']}, {row['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
