"""What the default's time buys when it is spent on more fits of the studied configuration.

``archlab restore`` averages seeded fits (:func:`archlab.restoration.fit_restarts`). The studied configuration
of a task (:func:`archlab.recommend.studied`, the shipped table's best single configuration) is faster than the
default (``controlled-64``) on some tasks, so the default's time holds more than three of its fits. This fits, on
the held-out images of ``archlab reproduce recommend`` (:data:`archlab.reproductions.RECOMMEND_IMAGES`, 64-px
crops, seed 0), the default three times (restore's restarts) and the studied configuration ``--fits`` times
(capped at 1,000 iterations as that evaluation fits it; every fit stopped by the task's rule), one image after
another in one process, and reports for every number k of studied fits the PSNR of their mean and
their CPU seconds beside the default's three: does any k gain ``--bar`` dB within the default's time?

    OMP_NUM_THREADS=1 python benchmarks/fits_budget.py --task poisson -o results/recommend/fits-budget.csv
    python benchmarks/fits_budget.py --task poisson -o results/recommend/fits-budget.csv --table

Rows are appended per image (a rerun skips the images already there). Times are CPU seconds
(:attr:`archlab.fitting.FitResult.cpu_seconds`), which other processes on the cores do not inflate.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
import torch

from archlab import metrics, recommend, reproduce, reproductions, restoration, tasks

DEFAULT_FITS = restoration.DEFAULT_RESTARTS


def measure(run: reproductions.Run, fits: int) -> list[dict]:
    """The rows of one held-out image: the default's three fits and 1..``fits`` studied fits."""
    task = tasks.task_from_dict(run.task)
    x = reproduce.load_clean(run)
    observation = task.observe(x, seed=run.seed)
    common = {"seed": 0, "device": "cpu", "progress": False, "fast": False, "eval_every": 10}
    spec, settings, _ = recommend.studied(task)
    rows = []
    for label, arch, fit_settings, count in (("default", "controlled-64", {**restoration.DEFAULT_FIT, "stop": "auto"},
                                              DEFAULT_FITS),
                                             ("studied", spec, {**settings, "iterations": 1000}, fits)):
        restored, runs = restoration.fit_restarts(arch, task, observation, count, **common, **fit_settings)
        outputs = [r.restored for r in runs]
        ks = range(1, count + 1) if label == "studied" else (count,)
        for k in ks:
            mean = torch.stack(outputs[:k]).mean(0)
            rows.append({"image": reproductions.short_name(run.image), "method": label, "fits": k,
                         "psnr": float(metrics.psnr(mean, x)), "cpu_seconds": sum(r.cpu_seconds for r in runs[:k]),
                         "capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                         "load": round(os.getloadavg()[0], 2)})
    return rows


def table(frame: pd.DataFrame, bar: float) -> str:
    """Per number of studied fits: mean PSNR, its gain over the default's three fits, CPU seconds over theirs and
    the images where it took longer."""
    default = frame[frame["method"] == "default"].set_index("image")
    lines = [f"{frame['image'].nunique()} images; default ×{DEFAULT_FITS}: {default['psnr'].mean():.2f} dB, "
             f"{default['cpu_seconds'].mean():.2f} CPU s", "",
             "| studied fits | PSNR dB | − default dB | CPU s | × default's time | images slower | gain ≥ bar within the time |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for k, rows in frame[frame["method"] == "studied"].groupby("fits"):
        rows = rows.set_index("image")
        gain = rows["psnr"].mean() - default["psnr"].mean()
        ratio = rows["cpu_seconds"].mean() / default["cpu_seconds"].mean()
        slower = int((rows["cpu_seconds"] > default["cpu_seconds"].reindex(rows.index)).sum())
        lines.append(f"| {k} | {rows['psnr'].mean():.2f} | {gain:+.2f} | {rows['cpu_seconds'].mean():.2f} | "
                     f"{ratio:.2f} | {slower} of {len(rows)} | {'yes' if gain >= bar and ratio <= 1 else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="poisson", help="a task with a shipped learnt table (default poisson)")
    parser.add_argument("--fits", type=int, default=6, help="studied fits per image (default 6)")
    parser.add_argument("--bar", type=float, default=0.5, help="the gain to reach, dB (default 0.5)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="CSV of the rows (appended, resumable)")
    parser.add_argument("--table", action="store_true", help="print the table of the rows in --out and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(pd.read_csv(args.out, dtype={"image": str}), args.bar))
        return 0
    if args.fits < 1:
        parser.error(f"--fits: {args.fits} is invalid; allowed: an integer ≥ 1")
    torch.set_num_threads(1)
    held_out = [r for r in reproductions.recommend_runs() if r.config.endswith(" · default")]
    runs = [r for r in held_out if r.config == f"{args.task} · default"]
    if not runs:
        tasks_evaluated = sorted({r.config.split(" · ")[0] for r in held_out})
        parser.error(f"--task: {args.task!r} is invalid; allowed: {', '.join(tasks_evaluated)}")
    done = set(pd.read_csv(args.out, dtype={"image": str})["image"]) if args.out.is_file() else set()
    for run in runs:
        if reproductions.short_name(run.image) in done:
            continue
        rows = pd.DataFrame(measure(run, args.fits))
        rows.to_csv(args.out, mode="a", header=not args.out.is_file(), index=False, float_format="%.4f")
        studied = rows[rows["method"] == "studied"]
        print(f"{run.image}: default {rows['psnr'].iloc[0]:.2f} dB; studied "
              + ", ".join(f"×{k} {p:.2f}" for k, p in zip(studied["fits"], studied["psnr"])), flush=True)
    print(table(pd.read_csv(args.out, dtype={"image": str}), args.bar))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
