"""Which configuration, fitted how many times, restores best within the default restoration's time.

``archlab restore`` averages seeded fits (:func:`archlab.restoration.fit_restarts`): its default restoration is
``controlled-64`` fitted :data:`archlab.restoration.DEFAULT_RESTARTS` times. A configuration of the task's learnt
table that takes t_c CPU seconds a fit, against the default's t_d, can be fitted k_c = ⌊3 t_d / t_c⌋ times in that
budget (at most ``--max-fits``). This chooses, on the training images of the study the table was learnt from, the
(configuration, k) with the best mean PSNR of the k fits' mean whose mean CPU time is within the default
restoration's, and measures the same candidates on the held-out images of ``archlab reproduce recommend``
(:data:`archlab.reproductions.RECOMMEND_IMAGES`), which the choice never saw.

Candidates (from the table's single fits, :func:`candidates`): per budget level k = 1..``--max-fits``, the
``--per-level`` configurations with the best mean PSNR among those with k_c = k. The budget is ``--budget``, the
default restoration's mean time measured on the training images (the shipped Poisson rows: 4.75 CPU s, from the
default's rows of a first run), else three times the table's mean fit of the default, which underestimates it where
the study capped its fits below restore's 500 iterations (``recommend-poisson-fast``: 400). The choice also
requires the restoration to take longer than the default on at most :data:`archlab.learnt.MAX_SLOWER` of the
images. Every fit is stopped by the task's automatic rule; the default as ``archlab restore`` fits it (at most
500 iterations), the candidates as the held-out evaluation does (at most 1,000); seeds 0, 1, ...; one image after
another in one process (``--shard i/n`` splits the images between processes, each writing its own ``--out``).

    OMP_NUM_THREADS=1 python benchmarks/restore_budget.py --task poisson --budget 4.75 --shard 0/2 -o a.csv
    OMP_NUM_THREADS=1 python benchmarks/restore_budget.py --task poisson --budget 4.75 --shard 1/2 -o b.csv
    OMP_NUM_THREADS=1 python benchmarks/restore_budget.py --task poisson --budget 4.75 --images held-out \
        --seed 0 --methods default,c3 -o held-out.csv
    python benchmarks/restore_budget.py --task poisson --table a.csv b.csv [--ship]

``--ship`` writes the rows of ``--table`` as the task's shipped restorations
(:func:`archlab.learnt.restorations_path`), from which ``restore --arch auto`` and ``--arch studied`` take their
configuration and number of fits. For a table learnt from studies of your own, give ``--learnt CSV`` (the table of
``archlab study learn``) and ``--study FILE`` (the study whose training images to fit); the held-out images are
those of ``archlab reproduce recommend`` (denoising and Poisson).

Rows are appended per (image, method); a rerun skips those already there. Times are CPU seconds
(:attr:`archlab.fitting.FitResult.cpu_seconds`), which other processes on the cores do not inflate.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import pandas as pd
import torch

from archlab import images, learnt, metrics, recommend, reproduce, reproductions, restoration, tasks
from archlab.studies import spec as study_spec
from archlab.studies import worker

#: The study each task's shipped table was learnt from (its training images), where that is one study.
STUDIES = {"poisson": "studies/recommend-poisson-fast.toml"}
DEFAULT_FITS = restoration.DEFAULT_RESTARTS
COMMON = {"device": "cpu", "progress": False, "fast": False, "eval_every": 10, "stop": "auto"}


def candidates(table: pd.DataFrame, max_fits: int, per_level: int, budget: float | None = None) -> pd.DataFrame:
    """The configurations to measure: their fields, mean single-fit PSNR and seconds over the table's images, and
    ``fits`` = k_c = min(⌊B / t_c⌋, ``max_fits``), the most fits within the default restoration's time B
    (``budget``; default restarts · t_d, the table's mean time of the default); per k, the ``per_level`` best by
    mean PSNR (configurations fitted to every image)."""
    time = learnt.time_column(table)
    columns = list(learnt.CONFIG_COLUMNS)
    means = table.groupby(columns, as_index=False).agg(psnr=("stop_psnr", "mean"), seconds=(time, "mean"),
                                                        images=("image", "nunique"))
    means = means[means["images"] == table["image"].nunique()].drop(columns="images")
    is_default = (learnt._config_ids(means) == learnt._config_id(learnt.DEFAULT_CONFIG)).to_numpy()
    if budget is None:
        budget = DEFAULT_FITS * float(means.loc[is_default, "seconds"].iloc[0])
    means["fits"] = [min(math.floor(budget / s), max_fits) for s in means["seconds"]]
    means = means[(means["fits"] >= 1) & ~is_default]
    chosen = means.sort_values("psnr", ascending=False).groupby("fits").head(per_level)
    chosen = chosen.sort_values(["fits", "psnr"], ascending=[True, False]).reset_index(drop=True)
    chosen.insert(0, "candidate", [f"c{k + 1}" for k in range(len(chosen))])
    return chosen


def observations(task_name: str, which: str, study: str | None = None, seed: int | None = None
                 ) -> list[tuple[str, int, tasks.Task, object, torch.Tensor]]:
    """(image, degradation seed, task, observation, clean) of the training images of ``study`` (a study file or
    shipped name; default the task's :data:`STUDIES` entry; degraded with its ``degradation_seed``) or of the
    held-out images (degraded with ``seed``, default that of ``archlab reproduce recommend``)."""
    if which == "training":
        spec = study_spec.load_study(study or STUDIES[task_name])
        return [(o.image, spec.degradation_seed, o.task, o.observation, o.reference)
                for o in worker.observations(spec)]
    out = []
    for run in (r for r in reproductions.recommend_runs() if r.config == f"{task_name} · default"):
        task, x, draw = tasks.task_from_dict(run.task), reproduce.load_clean(run), run.seed if seed is None else seed
        out.append((reproductions.short_name(run.image), draw, task, task.observe(x, seed=draw), x))
    return out


def measure(image: str, seed: int, task: tasks.Task, observation, x: torch.Tensor, method: str, config: dict,
            fit: dict, fits: int) -> list[dict]:
    """The rows of ``fits`` seeded fits of one configuration (:data:`archlab.learnt.CONFIG_COLUMNS`) to one image:
    per k = 1..fits, the PSNR of the first k fits' mean and their CPU seconds."""
    arch, settings = learnt.split_config(config)
    spec = recommend.LEARNT_BASE.replace(**arch)
    _, runs = restoration.fit_restarts(spec, task, observation, fits, seed=0, **COMMON, **fit, **settings)
    rows = []
    for k in range(1, fits + 1):
        mean = torch.stack([r.restored for r in runs[:k]]).mean(0)
        rows.append({"seed": seed, "image": image, "method": method, **config, "fits": k,
                     "psnr": float(metrics.psnr(mean, x)),
                     "cpu_seconds": sum(r.cpu_seconds for r in runs[:k]),
                     "capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                     "load": round(os.getloadavg()[0], 2)})
    return rows


def budget_table(rows: pd.DataFrame) -> str:
    """Per restoration (method, k) of :func:`archlab.learnt.measured_restorations`: mean PSNR and its gain over the
    default restoration, CPU seconds over its, images where it took longer, and the restoration
    :func:`archlab.learnt.best_within_budget` chooses from these rows."""
    measured = learnt.measured_restorations(rows, DEFAULT_FITS)
    if measured is None:
        raise ValueError(f"the rows hold no default restoration ({learnt.DEFAULT_CONFIG} fitted {DEFAULT_FITS} times)")
    best = learnt.best_within_budget(rows, DEFAULT_FITS)
    default = measured[measured["is_default"]].iloc[0]
    names = rows.assign(config_id=learnt._config_ids(rows), fits=rows["fits"].astype(int)).groupby(
        ["config_id", "fits"])["method"].first()
    lines = [f"{default['images']} images; default ×{DEFAULT_FITS}: {default['psnr']:.2f} dB, "
             f"{default['cpu_seconds']:.2f} CPU s; best within its time in these rows: {best.fits} × "
             + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.config.items()),
             "", "| method | fits | PSNR dB | − default dB | × default's CPU time | images slower | configuration |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    table = []
    for key, r in measured.iterrows():
        method = names[key]
        if method == "default":
            continue
        table.append((r["psnr"], method, r["fits"], r["gain"], r["time_ratio"], round(r["slower"] * r["images"]),
                      r["images"], f"depth {r['depth']}, width {r['width']}, skip {r['skip']}, {r['upsampler']}, "
                                   f"λ {r['lipschitz']:.3g}, lr {r['lr']:.3g}, jitter {r['input_jitter']:.3g}"))
    for psnr, method, k, gain, ratio, slower, count, config in sorted(table, reverse=True):
        lines.append(f"| {method} | {k} | {psnr:.2f} | {gain:+.2f} | {ratio:.2f} | {slower} of {count} | {config} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="poisson", help="a task with a learnt table (default poisson)")
    parser.add_argument("--study", help="the study whose training images to fit (default: the one the task's shipped "
                                        f"table was learnt from: {', '.join(f'{t} {s}' for t, s in STUDIES.items())})")
    parser.add_argument("--learnt", type=Path,
                        help="the learnt table to take candidates from (default the shipped one)")
    parser.add_argument("--images", default="training", help="training or held-out (default training)")
    parser.add_argument("--budget", type=float,
                        help="the default restoration's mean time on the training images, in the table's unit "
                             "(default: restarts × the table's mean time of the default)")
    parser.add_argument("--max-fits", type=int, default=6, help="most fits of one candidate (default 6)")
    parser.add_argument("--per-level", type=int, default=2, help="candidates per number of fits (default 2)")
    parser.add_argument("--seed", type=int, help="with --images held-out: the degradation's seed (default that of "
                                                 "`archlab reproduce recommend`, 0)")
    parser.add_argument("--methods", help="measure only these, comma-separated (default, c1, c2, ...; default all)")
    parser.add_argument("--shard", default="0/1", help="i/n: this process measures every n-th image from the i-th")
    parser.add_argument("-o", "--out", type=Path, help="CSV of the rows (appended, resumable)")
    parser.add_argument("--table", nargs="+", type=Path, help="print the table of these CSVs and stop")
    parser.add_argument("--ship", action="store_true",
                        help="with --table: write the rows as the task's shipped restorations "
                             "(archlab.learnt.restorations_path), which `restore --arch auto` chooses from")
    args = parser.parse_args(argv)
    if args.images == "training" and args.study is None and args.task not in STUDIES and not args.table:
        parser.error(f"--study is required for --task {args.task!r}; default studies: {', '.join(STUDIES)}")
    if args.images not in ("training", "held-out"):
        parser.error(f"--images: {args.images!r} is invalid; allowed: training, held-out")
    for name in ("max_fits", "per_level"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: {getattr(args, name)} is invalid; allowed: an integer ≥ 1")
    shard = args.shard.split("/")
    if len(shard) != 2 or not all(v.isdigit() for v in shard) or not int(shard[0]) < int(shard[1]):
        parser.error(f"--shard: {args.shard!r} is invalid; allowed: i/n with 0 ≤ i < n")
    if args.ship and not args.table:
        parser.error("--ship writes the rows of --table CSV ...; give them")
    if args.table:
        missing = [str(p) for p in args.table if not p.is_file()]
        if missing:
            parser.error(f"--table: {', '.join(missing)} is not a file; allowed: CSVs this script wrote")
        frame = pd.concat([pd.read_csv(p, dtype={"image": str, "upsampler": str}) for p in args.table],
                          ignore_index=True)
        if "seed" in frame and frame["seed"].nunique() > 1:  # one image under several draws: one row each
            frame["image"] = frame["seed"].astype(str) + "/" + frame["image"]
        try:
            print(budget_table(frame))
        except ValueError as error:
            parser.error(f"--table: {error}")
        if args.ship:
            with images.atomic_path(learnt.restorations_path(args.task)) as tmp:
                frame.drop(columns=["capability", "threads", "load"]).to_csv(tmp, index=False, float_format="%.6g")
            print(f"wrote {learnt.restorations_path(args.task)}")
        return 0
    if args.out is None:
        parser.error("-o/--out is required unless --table is given")
    index, count = (int(v) for v in shard)
    torch.set_num_threads(1)
    previous = pd.read_csv(args.out, dtype={"image": str}) if args.out.is_file() else pd.DataFrame(
        columns=["seed", "image", "method"])
    done = set(zip(previous["seed"], previous["image"], previous["method"]))
    chosen = candidates(learnt.load_table(args.task, args.learnt), args.max_fits, args.per_level, args.budget)
    print(chosen.round(4).to_string(), flush=True)
    default_fit = {k: v for k, v in restoration.DEFAULT_FIT.items() if k not in learnt.FIT_COLUMNS}
    methods = [("default", learnt.DEFAULT_CONFIG, default_fit, DEFAULT_FITS)]
    for row in chosen.itertuples(index=False):
        config = {c: getattr(row, c) for c in learnt.CONFIG_COLUMNS}
        methods.append((row.candidate, config, {"iterations": 1000}, int(row.fits)))
    if args.methods:
        wanted = args.methods.split(",")
        unknown = sorted(set(wanted) - {m[0] for m in methods})
        if unknown:
            parser.error(f"--methods: {', '.join(unknown)} is invalid; allowed: {', '.join(m[0] for m in methods)}")
        methods = [m for m in methods if m[0] in wanted]
    for image, seed, task, observation, x in observations(args.task, args.images, args.study, args.seed)[index::count]:
        for method, config, fit, fits in methods:
            if (seed, image, method) in done:
                continue
            rows = pd.DataFrame(measure(image, seed, task, observation, x, method, config, fit, fits))
            rows.to_csv(args.out, mode="a", header=not args.out.is_file(), index=False, float_format="%.6g")
            print(f"{image} {method} ×{fits}: {rows['psnr'].iloc[-1]:.2f} dB, {rows['cpu_seconds'].iloc[-1]:.2f} "
                  f"CPU s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
