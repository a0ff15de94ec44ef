"""``archlab restore``: fit a controlled DIP to one image and write the restoration.

Two modes: from a clean image (``--image``, degraded here with ``--seed``; PSNR and
SSIM are reported against it) or from an already degraded observation
(``--observed``; no reference, so no PSNR). Task flags are generated from the task
dataclasses' fields and validated by them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import torch

from archlab import images, metrics, models, recommend, report, tasks
from archlab.fit import fit

DEFAULT_IMAGE = "camera"
DEFAULT_ARCH = "controlled-64"


def _task_fields() -> dict[str, dataclasses.Field]:
    found = {}
    for cls in tasks.TASKS.values():
        for f in dataclasses.fields(cls):
            found.setdefault(f.name, f)
    return found


def register(subparsers) -> None:
    p = subparsers.add_parser("restore", help="restore an image with a controlled deep image prior",
                              description=__doc__.splitlines()[0])
    add_fit_arguments(p, out="restored")
    p.add_argument("--auto-stop", action="store_true", help="stop at the blur/sharpness ratio rule (paper 000 §4.3)")
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
    parser.add_argument("--arch", default=DEFAULT_ARCH,
                        help=f"a preset ({', '.join(sorted(models.PRESETS))}), 'auto', or a spec .toml/.json")
    parser.add_argument("--iterations", type=int, default=500, help="maximum iterations (default 500)")
    parser.add_argument("--lr", type=float, default=0.002, help="Adam learning rate (default 0.002)")
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
        params[name] = value
    if args.task == "inpaint" and params.get("mask") not in (None, "center", "bernoulli"):
        params["path"], params["mask"] = params["mask"], "file"
    return tasks.make_task(args.task, **params)


def prepare(args, task: tasks.Task, spec: models.ArchSpec):
    """(observation, clean reference or None, notes) cropped to sizes the architecture accepts."""
    factor = getattr(task, "factor", 1)
    multiple = math.lcm(spec.multiple, factor)
    notes = []
    if args.observed is not None:
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
    x = images.load(source)
    note = images.describe(source)
    if note:
        notes.append(note)
    if args.size:
        if args.size < 2:
            raise ValueError(f"--size: {args.size} must be ≥ 2 (or 0 to keep the image size)")
        scale = args.size / max(x.shape[-2:])
        if scale < 1:
            x = images.resize(x, scale=scale)
    if min(x.shape[-2:]) < 2 * multiple:
        models.check_size(spec, tuple(x.shape[-2:]))
    x = images.center_crop(x, multiple)
    reference = task.reference(x)
    return task.degrade(x, seed=args.seed), reference, notes


def setup(args) -> tuple[tasks.Task, models.ArchSpec, torch.Tensor, torch.Tensor | None, list[str]]:
    """Task, architecture (``--arch auto`` recommends one from the observation), observation,
    reference and notes from the arguments of :func:`add_fit_arguments`."""
    task = make_task(args)
    if args.iterations < 1:
        raise ValueError(f"--iterations: {args.iterations} must be ≥ 1")
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
    task, spec, y, reference, notes = setup(args)
    out = Path(args.out)
    result = fit(spec, task, y, iterations=args.iterations, lr=args.lr, ema=args.ema, seed=args.seed,
                 device=args.device, eval_every=args.eval_every, reference=reference,
                 stop="auto" if args.auto_stop else "none")
    summary = {"task": task.to_dict(), "arch": args.arch, "image": args.observed or args.image or DEFAULT_IMAGE,
               "size": list(y.shape[-2:]), "notes": notes, **result.summary()}
    if reference is not None:
        physics = task.physics(tuple(y.shape), seed=args.seed)
        summary["observation_psnr"] = _psnr_or_nan(physics.baseline(y), reference)
        summary["psnr"] = float(metrics.psnr(result.output, reference))
        summary["ssim"] = float(metrics.ssim(result.output, reference))
        summary["psnr_ema"] = float(metrics.psnr(result.ema_output, reference))
    out.mkdir(parents=True, exist_ok=True)
    images.save(result.ema_output if args.ema else result.output, out / "restored.png")
    images.save(result.output, out / "restored_last.png")
    images.save(y, out / "observed.png")
    if args.task == "sr":
        images.save(task.physics(tuple(y.shape)).baseline(y), out / "baseline_bicubic.png")
    with images.atomic_path(out / "history.csv") as tmp:
        result.history.to_csv(tmp, index=False)
    with images.atomic_path(out / "spec.json") as tmp:
        tmp.write_text(json.dumps({"arch": result.spec, "fit": result.settings, "task": result.task}, indent=2))
    with images.atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float))
    report.plot_fit_curves(result.history, out / "curves.png", stop_iteration=result.auto_stop_iteration,
                           title=f"{task.name} - {args.arch}")
    _print_summary(summary, out)
    return 0


def _psnr_or_nan(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    if estimate.shape != reference.shape:
        return math.nan
    return float(metrics.psnr(estimate, reference))


def _print_summary(summary: dict, out: Path) -> None:
    lines = [f"task {summary['task']['task']} on {summary['image']} ({summary['size'][1]}x{summary['size'][0]}), "
             f"arch {summary['arch']}"]
    lines += [f"note: {n}" for n in summary["notes"]]
    if "psnr" in summary:
        baseline = "bicubic" if summary["task"]["task"] == "sr" else "observation"
        lines.append(f"PSNR {baseline} {summary['observation_psnr']:.2f} dB -> restored (EMA) {summary['psnr_ema']:.2f} dB "
                     f"(last iterate {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.3f}; "
                     f"peak {summary['peak_psnr']:.2f} dB at {summary['peak_iteration']})")
    lines.append(f"{summary['iterations']} iterations ({summary['stop_reason']}) in {summary['seconds']:.1f} s; "
                 f"wrote {out}/restored.png, history.csv, curves.png, spec.json")
    print("\n".join(lines))
