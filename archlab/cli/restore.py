"""``archlab restore``: fit a controlled DIP to one image and write the restoration.

Two modes: from a clean image (``--image``, degraded here with ``--seed``; PSNR and
SSIM are reported against it) or from an already degraded observation
(``--observed``; no reference, so no PSNR). Task flags are generated from the task
dataclasses' fields and validated by them.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import torch

from archlab import images, models, stopping, tasks

DEFAULT_IMAGE = "camera"
DEFAULT_ARCH = "controlled-64"
#: Fit settings of a restoration when neither the user nor ``--arch auto`` gives them.
DEFAULT_FIT = {"iterations": 500, "lr": 0.002}
#: Largest network output a fit starts on without ``--max-pixels`` (1024 x 1024).
DEFAULT_MAX_PIXELS = 1 << 20
#: Memory of a fit per output pixel and channel of the widest level, in bytes: activations, their
#: gradients, the monitors' buffers (measured: controlled-64 and ulyanov-dip at 128² and 256², fp32 CPU,
#: about 21 float32 maps of the width per pixel; 24 here).
FIT_BYTES_PER_PIXEL_CHANNEL = 96
#: The files ``restore`` writes into its output folder (an existing folder may hold only these).
OUTPUTS = ("restored.png", "restored_last.png", "observed.png", "baseline_bicubic.png", "history.csv",
           "curves.png", "spec.json", "summary.json")


def _task_fields() -> dict[str, dataclasses.Field]:
    found = {}
    for cls in tasks.TASKS.values():
        for f in dataclasses.fields(cls):
            found.setdefault(f.name, f)
    return found


def register(subparsers) -> None:
    p = subparsers.add_parser("restore", help="restore an image with a controlled deep image prior",
                              description=__doc__.splitlines()[0],
                              epilog="Written as one folder (under a temporary name, renamed at the end). Ctrl-C or "
                                     "SIGTERM keeps the output so far, marked \"interrupted\": true, exit 130.")
    add_fit_arguments(p, out="restored")
    p.add_argument("--stop", default="auto", choices=("none", "auto", "ratio", "wmv", "emv", "discrepancy"),
                   help="where to stop without the clean image: auto (the task's rule, default), a rule by name, "
                        "or none (run --iterations, return the moving average)")
    p.set_defaults(func=run)


def add_fit_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The inputs of a restoration, shared with ``archlab spectral fbc``: task and its flags,
    image or observation, size, architecture, fit settings, seed, device and ``-o`` (default ``out``)."""
    parser.add_argument("--task", default="denoise", choices=sorted(tasks.TASKS), help="inverse problem (default denoise)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--image", default=None,
                     help=f"clean image: a file or a built-in ({', '.join(images.builtin_names())}); "
                          f"default {DEFAULT_IMAGE}")
    src.add_argument("--observed", default=None, help="an already degraded image (no PSNR is reported)")
    parser.add_argument("--size", type=int, default=128,
                        help="resize a clean image so its longer side is SIZE pixels before degrading (0 = keep; 128)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse a fit whose output has more pixels (memory; default {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--arch", default=DEFAULT_ARCH,
                        help=f"a preset ({', '.join(sorted(models.PRESETS))}), 'auto', or a spec .toml/.json")
    parser.add_argument("--iterations", type=int, default=None,
                        help=f"maximum iterations (default {DEFAULT_FIT['iterations']}; --arch auto: recommended)")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"Adam learning rate (default {DEFAULT_FIT['lr']}; --arch auto: recommended)")
    parser.add_argument("--ema", type=float, default=0.99, help="weight of the output moving average (default 0.99)")
    parser.add_argument("--eval-every", type=int, default=10, help="iterations between measurements (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the degradation, the input and the weights")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("-o", "--out", default=out, help=f"output folder (default ./{out})")
    add_task_flags(parser)


def add_task_flags(parser) -> None:
    """One flag per task parameter (``--sigma``, ``--quality``, ``--mask`` ...), from the task dataclasses."""
    for name, f in _task_fields().items():
        flag = "--" + name.replace("_", "-")
        if name == "mask":
            parser.add_argument(flag, default=None, help="inpaint: center, bernoulli, or a mask image (white = known)")
        elif name == "path":
            continue
        elif f.type is bool:
            parser.add_argument(flag, default=None, action=argparse.BooleanOptionalAction, help=f.metadata.get("help"))
        else:
            parser.add_argument(flag, type=f.type, default=None, help=f.metadata.get("help"))


def make_task(args) -> tasks.Task:
    """The task from ``--task`` and its flags; a flag another task owns is an error."""
    cls = tasks.TASKS[args.task]
    own = {f.name for f in dataclasses.fields(cls)}
    params = {}
    for name in _task_fields():
        value = getattr(args, name, None)
        if value is None:
            continue
        if name not in own:
            raise ValueError(f"--{name.replace('_', '-')}: not a parameter of task {args.task}; "
                             f"its parameters: {', '.join(sorted(own - {'path'})) or 'none'}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')}: {value} is invalid; allowed: a finite number")
        params[name] = value
    if args.task == "inpaint":
        mask = params.get("mask", "center")
        for flag, kind in (("ratio", "center"), ("drop", "bernoulli")):
            if flag in params and mask != kind:
                raise ValueError(f"--{flag}: only used with --mask {kind}, not with --mask {mask}; "
                                 f"remove --{flag} or use --mask {kind}")
    if args.task == "inpaint" and params.get("mask") not in (None, "center", "bernoulli"):
        params["path"], params["mask"] = params["mask"], "file"
    return tasks.make_task(args.task, **params)


def prepare(args, task: tasks.Task, spec: models.ArchSpec):
    """(observation, clean reference or None, notes) cropped to sizes the architecture accepts."""
    factor = getattr(task, "factor", 1)
    multiple = math.lcm(spec.multiple, factor)
    notes = []
    if args.observed is not None:
        check_pixels(spec, images.image_size(args.observed), factor, args.max_pixels, "--observed")
        y = images.load(args.observed)
        note = images.describe(args.observed)
        if note:
            notes.append(note)
        obs_multiple = spec.multiple // math.gcd(spec.multiple, factor)
        if min(y.shape[-2:]) * factor < 2 * spec.multiple:
            models.check_size(spec, tuple(s * factor for s in y.shape[-2:]))
        cropped = images.center_crop(y, obs_multiple)
        if cropped.shape != y.shape:
            if args.task == "inpaint" and getattr(task, "mask", "") == "file":
                raise ValueError(f"observed: {y.shape[-1]}x{y.shape[-2]} is not a multiple of {obs_multiple} "
                                 f"(needed by --arch); crop the image and its mask first")
            notes.append(f"cropped {y.shape[-1]}x{y.shape[-2]} to {cropped.shape[-1]}x{cropped.shape[-2]}")
        if args.task == "jpeg" and getattr(task, "grey", False):
            cropped = images.to_grey(cropped)
        return cropped, None, notes
    source = args.image or DEFAULT_IMAGE
    if args.size and args.size < 2:
        raise ValueError(f"--size: {args.size} must be ≥ 2 (or 0 to keep the image size)")
    header = images.image_size(source)
    if header is not None:
        check_pixels(spec, _working_size(header, args.size), 1, args.max_pixels, "--image")
    x = images.load(source)
    note = images.describe(source)
    if note:
        notes.append(note)
    if args.size:
        scale = args.size / max(x.shape[-2:])
        if scale < 1:
            x = images.resize(x, scale=scale)
    check_pixels(spec, tuple(x.shape[-2:]), 1, args.max_pixels, "--image")
    if min(x.shape[-2:]) < 2 * multiple:
        models.check_size(spec, tuple(x.shape[-2:]))
    x = images.center_crop(x, multiple)
    reference = task.reference(x)
    return task.degrade(x, seed=args.seed), reference, notes


def _working_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """``(H, W)`` after ``--size`` (the longer side made ``longest`` when it is larger; 0 keeps it)."""
    scale = longest / max(size) if longest else 1.0
    return size if scale >= 1 else (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))


def check_pixels(spec: models.ArchSpec, size: tuple[int, int] | None, factor: int, max_pixels: int,
                 flag: str) -> None:
    """Refuse a fit whose output (``size`` × ``factor``) has more than ``max_pixels`` pixels, with the
    memory it would need: about ``FIT_BYTES_PER_PIXEL_CHANNEL`` bytes per pixel and channel of the widest level."""
    if size is None:
        return
    if max_pixels < 1:
        raise ValueError(f"--max-pixels: {max_pixels} is invalid; allowed: an integer ≥ 1")
    h, w = size[0] * factor, size[1] * factor
    if h * w <= max_pixels:
        return
    width = max(spec.width) if isinstance(spec.width, tuple) else spec.width
    gigabytes = h * w * width * FIT_BYTES_PER_PIXEL_CHANNEL / 1e9
    raise ValueError(f"{flag}: a fit with a {w}x{h} output ({h * w:,} pixels, width {width}) needs about "
                     f"{gigabytes:.1f} GB; the limit is --max-pixels {max_pixels:,}; resize the image "
                     f"(--size for --image) or raise --max-pixels")


def check_output(out: str, names: tuple[str, ...]) -> Path:
    """The ``-o`` folder, checked before any work: not a file, and if it exists, holding only ``names``
    (an earlier output, which the new one replaces whole); its parent must be writable."""
    path = Path(out)
    if Path.cwd().resolve().is_relative_to(path.resolve()):
        raise ValueError(f"-o: {out} is the current folder or holds it; give a folder of its own")
    if path.exists() and not path.is_dir():
        raise ValueError(f"-o: {out} is a file; give a folder (new, empty, or an earlier output)")
    if path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if p.name not in names)
        if foreign:
            raise ValueError(f"-o: folder {out} holds files this command does not write (e.g. {foreign[0]!r}) and "
                             f"would be replaced; give a new or empty folder, or an earlier output")
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"-o: cannot create {out}: {parent} is not a writable folder")
    return path


def check_fit(result) -> None:
    """Raise ``ValueError`` for a fit that diverged with nothing to write: no evaluation kept, or no
    finite output even from the last kept weights."""
    finite = bool(result.output.isfinite().all() and result.ema_output.isfinite().all())
    if result.stop_reason == "diverged" and (result.history.empty or not finite):
        raise ValueError(f"fit: diverged at iteration {result.stopped_at}: the loss or the output was not finite "
                         f"({result.restores} roll-backs of the weights); lower --lr (was {result.settings['lr']})")


def progress_lines(total: int, label: str):
    """An ``on_evaluation`` callback printing a line on stderr every ~10 % of ``total`` iterations, or
    None when stderr is a terminal (the fit shows a progress bar there)."""
    if sys.stderr.isatty():
        return None
    start, step = time.monotonic(), [1]

    def report(iteration: int, output) -> None:
        if iteration * 10 >= step[0] * total:
            print(f"archlab {label}: iteration {iteration}/{total} ({100 * iteration // total} %), "
                  f"{time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
            step[0] = iteration * 10 // total + 1

    return report


def setup(args, outputs: tuple[str, ...] = OUTPUTS) -> tuple[tasks.Task, models.ArchSpec, torch.Tensor,
                                                              torch.Tensor | None, list[str]]:
    """Task, architecture (``--arch auto`` recommends one from the observation), observation,
    reference and notes from the arguments of :func:`add_fit_arguments`, every input checked
    (``-o`` against ``outputs`` included) before anything is fitted or written."""
    task = make_task(args)
    advised = {}
    if args.arch == "auto":
        from archlab import recommend  # the texture model (scikit-learn) only when asked for

        advised = {key: recommend.RULES[key][0] for key in ("iterations", "lr")}
    for key, value in DEFAULT_FIT.items():  # what the user gave wins, then the recommendation, then the defaults
        if getattr(args, key, None) is None:
            setattr(args, key, advised.get(key, value))
    if args.iterations < 1:
        raise ValueError(f"--iterations: {args.iterations} must be ≥ 1")
    window = stopping.DEFAULT_WINDOW
    if args.eval_every < 1 or window % args.eval_every:
        divisors = ", ".join(str(d) for d in range(1, window + 1) if window % d == 0)
        raise ValueError(f"--eval-every: {args.eval_every} is invalid; allowed: a divisor of the stop rules' window "
                         f"of {window} iterations ({divisors})")
    check_output(args.out, outputs)
    spec = recommend.BASE_SPEC if args.arch == "auto" else models.load_spec(args.arch)
    y, reference, notes = prepare(args, task, spec)
    if args.arch == "auto":
        advice = recommend.recommend(y, task=task)
        spec = advice.spec
        notes.append(f"--arch auto: width {advice.width} (p = {advice.probabilities[advice.width]:.2f}) from the "
                     f"texture of the observation (score {advice.texture_score:.2f}, "
                     f"noise σ ≈ {advice.noise_sigma * 255:.1f}/255 discounted)")
    return task, spec, y, reference, notes


def run(args) -> int:
    from archlab import metrics, report
    from archlab.fit import fit

    task, spec, y, reference, notes = setup(args)
    out = Path(args.out)
    result = fit(spec, task, y, iterations=args.iterations, lr=args.lr, ema=args.ema, seed=args.seed,
                 device=args.device, eval_every=args.eval_every, reference=reference,
                 stop=args.stop, interruptible=True,
                 on_evaluation=progress_lines(args.iterations, "restore"))
    check_fit(result)
    restored = result.restored if args.ema or result.stop_output is not None else result.output
    if result.stop_output is not None:
        returned = (f"the network output at iteration {result.auto_stop_iteration}, where the {result.stop_rule} "
                    f"rule detected the stop")
    elif args.ema:
        returned = f"the moving average of the outputs (β = {args.ema}) at iteration {result.stopped_at}"
    else:
        returned = f"the network output at iteration {result.stopped_at}"
    summary = {"task": task.to_dict(), "arch": args.arch, "image": args.observed or args.image or DEFAULT_IMAGE,
               "size": list(y.shape[-2:]), "notes": notes, **result.summary(), "returned": returned,
               "engine": result.extras.get("engine"), "interrupted": result.stop_reason == "interrupted"}
    reasons = {}
    if result.stop_reason == "diverged":
        notes.append(f"the fit diverged at iteration {result.stopped_at}; the outputs come from the last weights "
                     f"whose loss was finite")
    if reference is not None:
        physics = task.physics(tuple(y.shape), seed=args.seed)
        baseline = physics.baseline(y)
        summary["observation_psnr"] = (float(metrics.psnr(baseline, reference)) if baseline.shape == reference.shape
                                       else None)
        reasons["observation_psnr"] = "the baseline and the reference differ in size"
        summary["psnr_restored"] = float(metrics.psnr(restored, reference))
        summary["ssim_restored"] = float(metrics.ssim(restored, reference))
        summary["psnr"] = float(metrics.psnr(result.output, reference))
        summary["ssim"] = float(metrics.ssim(result.output, reference))
        summary["psnr_ema"] = float(metrics.psnr(result.ema_output, reference))
    with images.atomic_dir(out) as tmp:
        images.save(restored, tmp / "restored.png")
        images.save(result.output, tmp / "restored_last.png")
        images.save(y, tmp / "observed.png")
        if args.task == "sr":
            images.save(task.physics(tuple(y.shape)).baseline(y), tmp / "baseline_bicubic.png")
        result.history.to_csv(tmp / "history.csv", index=False)
        images.write_json({"arch": result.spec, "fit": result.settings, "task": result.task}, tmp / "spec.json")
        images.write_json(summary, tmp / "summary.json", reasons)
        if not result.history.empty:
            report.plot_fit_curves(result.history, tmp / "curves.png", stop_iteration=result.auto_stop_iteration,
                                   title=f"{task.name} - {args.arch}")
    _print_summary(summary, out)
    if summary["interrupted"]:
        print(f"archlab restore: interrupted at iteration {result.stopped_at}; kept the output so far in {out}",
              file=sys.stderr)
        return 130
    return 0


def _print_summary(summary: dict, out: Path) -> None:
    lines = [f"task {summary['task']['task']} on {summary['image']} ({summary['size'][1]}x{summary['size'][0]}), "
             f"arch {summary['arch']}"]
    lines += [f"note: {n}" for n in summary["notes"]]
    if "psnr" in summary and "peak_psnr" in summary:
        baseline = "bicubic" if summary["task"]["task"] == "sr" else "observation"
        observed = summary["observation_psnr"]
        observed = "n/a" if observed is None else f"{observed:.2f} dB"
        lines.append(f"PSNR {baseline} {observed} -> restored {summary['psnr_restored']:.2f} dB "
                     f"(SSIM {summary['ssim_restored']:.3f}; last iterate {summary['psnr']:.2f} dB, moving average "
                     f"{summary['psnr_ema']:.2f} dB; peak {summary['peak_psnr']:.2f} dB at {summary['peak_iteration']})")
    lines.append(f"restored.png is {summary['returned']}")
    lines.append(f"{summary['iterations']} iterations ({summary['stop_reason']}) in {summary['seconds']:.1f} s; "
                 f"wrote {out}/restored.png, history.csv, curves.png, spec.json, summary.json")
    print("\n".join(lines))
