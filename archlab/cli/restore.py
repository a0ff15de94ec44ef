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
from archlab.restoration import DEFAULT_IMAGE, DEFAULT_RESTARTS, TASK_DEFAULTS, default_restarts
from archlab.vocabulary import EMA_STOP_RULES, STOP_RULES

#: The files ``restore`` writes into its output folder (an existing folder may hold only these).
OUTPUTS = ("restored.png", "restored_last.png", "observed.png", "baseline_bicubic.png", "history.csv",
           "curves.png", "spec.json", "summary.json")


def register(subparsers) -> None:
    p = subparsers.add_parser("restore", help="restore an image with a controlled deep image prior",
                              description=__doc__.splitlines()[0],
                              epilog="Written as one folder (under a temporary name, renamed at the end). Ctrl-C or "
                                     "SIGTERM keeps the output so far, marked \"interrupted\": true, exit 130.")
    add_fit_arguments(p, out="restored")
    p.add_argument("--restarts", type=int, default=None,
                   help=f"fits from the seeds SEED, SEED+1, ... whose restorations are averaged (default "
                        f"{DEFAULT_RESTARTS}, {', '.join(f'{n} for {name}' for name, (_, n) in TASK_DEFAULTS.items())}"
                        f"; with --arch studied or auto, the number of fits of the task's restoration measured "
                        f"best within the default's time, where the task ships one; 1: a single fit)")
    p.add_argument("--stop", default="auto", choices=("none", "auto", *STOP_RULES),
                   help="where to stop without the clean image: auto (the task's rule, default), a rule by name, "
                        "or none (run --iterations, return the moving average)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.restarts is not None and args.restarts < 1:
        raise ValueError(f"--restarts: {args.restarts} is invalid; allowed: an integer ≥ 1")
    task, spec, observation, notes = fit_inputs(args, OUTPUTS)
    if args.restarts is None:
        args.restarts = default_restarts(task, args.arch)
    y, reference = observation.y, observation.reference
    from archlab import images, metrics, report
    from archlab.restoration import fit_restarts

    out = Path(args.out)
    mean, runs = fit_restarts(spec, task, observation, args.restarts, seed=args.seed, iterations=args.iterations,
                              lr=args.lr, input_jitter=args.input_jitter, ema=args.ema, device=args.device,
                              eval_every=args.eval_every, stop=args.stop, interruptible=True,
                              on_evaluation=progress_lines(args.iterations, "restore"))
    for run_result in runs:
        check_fit(run_result)
    result = runs[0]
    restored = mean if args.ema or result.stop_output is not None else sum(r.output for r in runs) / len(runs)
    summary = {"task": task.to_dict(), "arch": args.arch, "image": args.observed or args.image or DEFAULT_IMAGE,
               "size": list(y.shape[-2:]), "notes": notes, **result.summary(),
               "returned": _returned(runs, args.ema, args.seed), "engine": result.extras.get("engine"),
               "interrupted": any(r.stop_reason == "interrupted" for r in runs)}
    if len(runs) > 1:
        summary["seconds"] = round(sum(r.seconds for r in runs), 2)
        each = [r.summary() for r in runs]
        summary["restarts"] = [{"seed": args.seed + k, **{key: s[key] for key in
                                ("iterations", "stop_reason", "auto_stop_iteration", "seconds")}}
                               for k, s in enumerate(each)]
    reasons = {}
    for k, run_result in enumerate(runs):
        if run_result.stop_reason == "diverged":
            fit_name = "the fit" if len(runs) == 1 else f"the fit of seed {args.seed + k}"
            notes.append(f"{fit_name} diverged at iteration {run_result.stopped_at}; its outputs come from the last "
                         f"weights whose loss was finite")
    if reference is not None:
        summary["observation_psnr"] = result.observation_psnr
        reasons["observation_psnr"] = "the baseline and the reference differ in size"
        summary["psnr_restored"] = float(metrics.psnr(restored, reference))
        for k, run_result in enumerate(runs if len(runs) > 1 else ()):
            summary["restarts"][k]["psnr_restored"] = float(metrics.psnr(run_result.restored, reference))
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


def _returned(runs: list, ema: float, seed: int) -> str:
    """What ``restored.png`` is: the first fit's stop output, moving average or last output; with several fits
    the mean of theirs."""
    result = runs[0]
    if len(runs) > 1:
        stopped, average = [r for r in runs if r.stop_output is not None], "moving average of the outputs"
        parts = []
        if stopped:
            rule = stopped[0].stop_rule
            parts.append(f"{average if rule in EMA_STOP_RULES else 'output'} where its {rule} rule detected the stop")
        if len(stopped) < len(runs):
            parts.append(f"{average if ema else 'output'} at its last iteration")
        return (f"the mean of {len(runs)} fits from the seeds {seed}-{seed + len(runs) - 1}: each fit's "
                + " or, where it did not stop, ".join(parts))
    if result.stop_output is not None:
        what = (f"the moving average of the outputs (β = {ema})" if result.stop_rule in EMA_STOP_RULES
                else "the network output")
        return f"{what} at iteration {result.auto_stop_iteration}, where the {result.stop_rule} rule detected the stop"
    what = f"the moving average of the outputs (β = {ema})" if ema else "the network output"
    return f"{what} at iteration {result.stopped_at}"


def _print_summary(summary: dict, out: Path) -> None:
    lines = [f"task {summary['task']['task']} on {summary['image']} ({summary['size'][1]}x{summary['size'][0]}), "
             f"arch {summary['arch']}"]
    lines += [f"note: {n}" for n in summary["notes"]]
    if "psnr" in summary and "peak_psnr" in summary:
        baseline = "bicubic" if summary["task"]["task"] == "sr" else "observation"
        observed = summary["observation_psnr"]
        observed = "n/a" if observed is None else f"{observed:.2f} dB"
        first = "; the first fit's" if "restarts" in summary else ";"
        lines.append(f"PSNR {baseline} {observed} -> restored {summary['psnr_restored']:.2f} dB "
                     f"(SSIM {summary['ssim_restored']:.3f}{first} last iterate {summary['psnr']:.2f} dB, moving "
                     f"average {summary['psnr_ema']:.2f} dB; peak {summary['peak_psnr']:.2f} dB at "
                     f"{summary['peak_iteration']})")
        if "restarts" in summary:
            lines.append("each fit alone: " + ", ".join(f"{r['psnr_restored']:.2f}" for r in summary["restarts"])
                         + " dB")
    lines.append(f"restored.png is {summary['returned']}")
    runs = summary.get("restarts", [summary])
    lines.append(f"{' + '.join(str(r['iterations']) for r in runs)} iterations "
                 f"({', '.join(dict.fromkeys(r['stop_reason'] for r in runs))}) in {summary['seconds']:.1f} s; "
                 f"wrote {out}/restored.png, history.csv, curves.png, spec.json, summary.json (history and curves: "
                 f"{'the first fit' if len(runs) > 1 else 'the fit'})")
    print("\n".join(lines))
