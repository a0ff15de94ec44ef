"""``archlab restore``: fit a controlled DIP to one image and write the restoration.

Two modes: from a clean image (``--image``, degraded here with ``--seed``; PSNR and
SSIM are reported against it) or from an already degraded observation
(``--observed``; no reference, so no PSNR). Task flags are generated from the task
dataclasses' fields and validated by them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from archlab.cli import add_fit_arguments, check_fit, fit_inputs, progress_lines
from archlab.restoration import DEFAULT_IMAGE
from archlab.vocabulary import STOP_RULES

#: The files ``restore`` writes into its output folder (an existing folder may hold only these).
OUTPUTS = ("restored.png", "restored_last.png", "observed.png", "baseline_bicubic.png", "history.csv",
           "curves.png", "spec.json", "summary.json")


def register(subparsers) -> None:
    p = subparsers.add_parser("restore", help="restore an image with a controlled deep image prior",
                              description=__doc__.splitlines()[0],
                              epilog="Written as one folder (under a temporary name, renamed at the end). Ctrl-C or "
                                     "SIGTERM keeps the output so far, marked \"interrupted\": true, exit 130.")
    add_fit_arguments(p, out="restored")
    p.add_argument("--stop", default="auto", choices=("none", "auto", *STOP_RULES),
                   help="where to stop without the clean image: auto (the task's rule, default), a rule by name, "
                        "or none (run --iterations, return the moving average)")
    p.set_defaults(func=run)


def run(args) -> int:
    task, spec, observation, notes = fit_inputs(args, OUTPUTS)
    y, reference = observation.y, observation.reference
    from archlab import images, metrics, report
    from archlab.fitting import fit

    out = Path(args.out)
    result = fit(spec, task, observation, iterations=args.iterations, lr=args.lr, input_jitter=args.input_jitter,
                 ema=args.ema, seed=args.seed,
                 device=args.device, eval_every=args.eval_every,
                 stop=args.stop, interruptible=True,
                 on_evaluation=progress_lines(args.iterations, "restore"))
    check_fit(result)
    restored = result.restored if args.ema or result.stop_output is not None else result.output
    if result.stop_output is not None:
        what = (f"the moving average of the outputs (β = {args.ema})" if result.stop_rule == "ema_discrepancy"
                else "the network output")
        returned = f"{what} at iteration {result.auto_stop_iteration}, where the {result.stop_rule} rule detected the stop"
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
        summary["observation_psnr"] = result.observation_psnr
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
            images.save(result.baseline, tmp / "baseline_bicubic.png")
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
