"""Time to a restored image: the papers' DIP loop against ``archlab restore``, on the same images, noise and
machine, in one process.

Per (task, image), one after the other (so the machine's load is the same for all four):

* ``papers`` - the DIP loop as published (:func:`speed.reference_fit`: Ulyanov et al.'s network and
  settings, 3,000 iterations, per-step host copies and NumPy PSNRs as in their notebook): the PSNR of its
  last output and of its moving average, and its wall time;
* ``papers-oracle`` - the same run at its best iteration: the PSNR no user can pick (it needs the clean
  image) and the wall time it took to get there;
* ``papers-oracle-ema`` - the same for its moving average (the output Ulyanov et al.'s notebook also shows),
  whose best is higher and later;
* ``restore`` - ``archlab restore``'s defaults (:func:`archlab.restoration.restore`: the task's studied
  configuration where its study ships, else its :data:`~archlab.restoration.TASK_DEFAULTS` architecture (JPEG:
  paper 004's rules at width 64), else ``controlled-64``; the mean of
  :func:`~archlab.restoration.default_restarts` seeded fits, each stopped by the task's rule) - the PSNR of what
  it returns and its wall time;
* ``restore-auto`` - ``restore --arch auto`` (:func:`archlab.recommend.recommend` on the observation, its
  architecture and fit settings), with the default restarts;
* ``restore-single`` - ``restore --restarts 1``: one fit of the default architecture, what the restarts add;
* ``restore-controlled-64`` - ``restore --arch controlled-64 --restarts 1``, the single fit ``restore`` ran before;
* ``restore-fp32`` - ``restore``'s fits in eager fp32 (``fast=False``): whether the engine's choice (bf16 where it
  judges the signal safe, channels-last where measured faster) changes the PSNR, and what it saves.

Rows are appended to a CSV as each (task, image) finishes (a rerun skips what is there), with the CPU
capability, threads and load beside them; ``--refresh restore,restore-auto`` measures those methods again on
the pairs already there and replaces their rows (the papers' loop, 96 % of a pair's time, is not rerun);
``--methods`` measures only some methods where a pair lacks them; ``--shard i/n`` lets n processes split the
pairs, ``--images`` and ``--tasks`` restrict them; ``--table`` prints them as Markdown with the ratios: the
papers' loop's time to its best PSNR (output and moving average) over ``restore``'s time, and the PSNR
differences.

    python benchmarks/time_to_quality.py -o results/time-to-quality/results.csv --shard 0/2 &   # resumable
    python benchmarks/time_to_quality.py -o results/time-to-quality/results.csv --shard 1/2
    python benchmarks/time_to_quality.py -o results/time-to-quality/results.csv --table
"""

from __future__ import annotations

import argparse
import fcntl
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import conditions, reference_fit  # noqa: E402

from archlab import images, metrics, restoration, tasks  # noqa: E402

#: Held-out images: six of Set9 at ¼ (128 px, kodim 192×128) and four CBSD68 images the recommend studies
#: do not train on, at 128 px.
IMAGES = (("set9/image_Baboon512rgb.png", 0.25), ("set9/image_F16_512rgb.png", 0.25),
          ("set9/image_Lena512rgb.png", 0.25), ("set9/image_Peppers512rgb.png", 0.25),
          ("set9/kodim01.png", 0.25), ("set9/kodim03.png", 0.25),
          ("cbsd68/0064.png", None), ("cbsd68/0065.png", None), ("cbsd68/0066.png", None), ("cbsd68/0067.png", None))
TASKS = {"denoise σ=25": {"task": "denoise", "sigma": 25.0}, "jpeg q=10": {"task": "jpeg", "quality": 10}}
PAPERS_ITERATIONS = 3000
METHODS = ("papers", "papers-oracle", "papers-oracle-ema", "restore", "restore-auto", "restore-single",
           "restore-controlled-64", "restore-fp32")
#: The methods ``--refresh`` measures again without the papers' loop.
RESTORE_METHODS = METHODS[3:]


def clean(source: str, scale: float | None) -> torch.Tensor:
    """The clean image: ``scale`` (Pillow bicubic as the papers' reference runs), else the 128-px centre crop."""
    path = images.datasets_root() / source
    if scale is not None:
        return restoration.clean_image(path, scale=scale, multiple=32, method="pil")
    return restoration.clean_image(path, crop=(128, 128), multiple=32)


def measure(label: str, task_dict: dict, source: str, scale: float | None, seed: int = 0,
            methods: tuple[str, ...] = METHODS) -> list[dict]:
    """The rows of ``methods`` (of :data:`METHODS`; the three ``papers`` rows come from one run of the papers'
    loop) for one (task, image)."""
    task = tasks.task_from_dict(task_dict)
    observation = task.observe(clean(source, scale), seed=seed)
    y, reference = observation.y, observation.reference
    base = {"task": label, "image": Path(source).stem, "size": f"{y.shape[-1]}x{y.shape[-2]}",
            "observation_psnr": float(metrics.psnr(y, reference)), **conditions(torch.device("cpu"))}
    rows = []
    if any(method.startswith("papers") for method in methods):
        start = time.perf_counter()
        papers = reference_fit("ulyanov-dip", y, reference, iterations=PAPERS_ITERATIONS, seed=seed, device="cpu")
        wall = time.perf_counter() - start
        elapsed = np.cumsum(papers["seconds"]) * wall / float(np.sum(papers["seconds"]))
        rows.append({**base, "method": "papers", "psnr": papers["psnr"], "psnr_ema": papers["psnr_ema"],
                     "iterations": PAPERS_ITERATIONS, "seconds": wall})
        for method, curve in (("papers-oracle", papers["psnr_curve"]), ("papers-oracle-ema", papers["psnr_ema_curve"])):
            best = int(np.argmax(curve))
            rows.append({**base, "method": method, "psnr": float(curve[best]), "iterations": best + 1,
                         "seconds": float(elapsed[best])})
    default = restoration.default_arch(task)
    for method, arch, restarts, extra in (("restore", default, None, {}), ("restore-auto", "auto", None, {}),
                                          ("restore-single", default, 1, {}),
                                          ("restore-controlled-64", "controlled-64", 1, {}),
                                          ("restore-fp32", default, None, {"fast": False})):
        if method not in methods:
            continue
        start = time.perf_counter()
        spec, fit_settings, _ = restoration.setup(arch, task, y)  # what restore --arch ARCH fits
        restored, runs = restoration.fit_restarts(spec, task, observation,
                                                  restarts or restoration.default_restarts(task), seed=seed,
                                                  device="cpu", progress=False, **fit_settings, **extra)
        wall = time.perf_counter() - start
        rows.append({**base, "method": method, "psnr": float(metrics.psnr(restored, reference)),
                     "iterations": sum(r.stopped_at for r in runs), "seconds": wall, "fits": len(runs),
                     "engine": runs[0].extras.get("engine"), "precision": runs[0].settings["precision"],
                     "channels_last": runs[0].settings["channels_last"]})
    return [row for row in rows if row["method"] in methods]


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One task's rows side by side: per image the PSNR, iterations and seconds of every method, the papers'
    loop's time to its best over ``restore``'s time and the PSNR gaps; last, the mean over the images."""
    at = rows.set_index(["image", "method"])
    lines = []
    for image in rows["image"].unique():
        def get(method, column):
            return at.loc[(image, method), column] if (image, method) in at.index else np.nan
        line = {"image": image,
                "papers last dB": get("papers", "psnr"), "papers EMA dB": get("papers", "psnr_ema"),
                "papers s": get("papers", "seconds")}
        for method in ("papers-oracle", "papers-oracle-ema", "restore"):
            line |= {f"{method} dB": get(method, "psnr"), f"{method} it": get(method, "iterations"),
                     f"{method} s": get(method, "seconds")}
        for method in ("restore-single", "restore-controlled-64", "restore-auto", "restore-fp32"):
            line |= {f"{method} dB": get(method, "psnr"), f"{method} s": get(method, "seconds")}
        line |= {"restore − oracle dB": line["restore dB"] - line["papers-oracle dB"],
                 "oracle s / restore s": line["papers-oracle s"] / line["restore s"],
                 "oracle-ema s / restore s": line["papers-oracle-ema s"] / line["restore s"],
                 "restore − fp32 dB": line["restore dB"] - line["restore-fp32 dB"]}
        lines.append(line)
    frame = pd.DataFrame(lines).set_index("image")
    frame.loc[f"mean ({len(frame)})"] = frame.mean()
    return frame


def report(table: pd.DataFrame) -> str:
    """Markdown: per task the :func:`summary` and the conditions of its rows."""
    out = []
    for task, rows in table.groupby("task", sort=False):
        cells = summary(rows).map(lambda v: "" if pd.isna(v) else f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}")
        out += [f"### {task}", "", "| image | " + " | ".join(cells.columns) + " |",
                "| --- |" + " --- |" * len(cells.columns)]
        out += [f"| {image} | " + " | ".join(row) + " |" for image, row in cells.iterrows()]
        load = rows["load_1min"].astype(float)
        restore = rows[rows["method"] == "restore"]
        engines = restore["precision"] + restore["channels_last"].map({True: " channels-last", False: ""})
        out += ["", f"Conditions: {', '.join(sorted(set(rows['device'])))}; CPU capability "
                    f"{', '.join(sorted(set(rows['cpu_capability'])))}; torch threads "
                    f"{', '.join(str(int(t)) for t in sorted(set(rows['threads'])))}; 1-min load {load.min():.2f}-"
                    f"{load.max():.2f}; the engine's choice for restore: {', '.join(sorted(set(engines)))}.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, required=True, help="CSV of rows (appended; a rerun resumes)")
    parser.add_argument("--table", action="store_true", help="print the table of the rows so far (Markdown) and stop")
    parser.add_argument("--shard", default="0/1", help="i/n: this process measures every n-th pair from the i-th")
    parser.add_argument("--images", default="", metavar="NAME[,NAME]",
                        help="only the pairs of these images (file stems, e.g. kodim03,0064)")
    parser.add_argument("--tasks", default="", metavar="TASK[,TASK]",
                        help=f"only the pairs of these tasks (of {', '.join(t['task'] for t in TASKS.values())})")
    parser.add_argument("--methods", default="", metavar="METHOD[,METHOD]",
                        help=f"measure only these of {', '.join(METHODS)} where a pair lacks them (default: all; "
                             "the three papers rows come from one run of the papers' loop)")
    parser.add_argument("--refresh", default="", metavar="METHOD[,METHOD]",
                        help=f"measure these of {', '.join(RESTORE_METHODS)} again on the pairs already measured "
                             "(after a change of restore's defaults or of the learnt tables) and replace their rows; "
                             "the papers' loop is not rerun")
    args = parser.parse_args(argv)
    try:
        shard, shards = (int(v) for v in args.shard.split("/"))
        assert 0 <= shard < shards
    except (ValueError, AssertionError):
        parser.error(f"--shard {args.shard!r} is invalid; allowed: i/n with 0 <= i < n")
    refresh = tuple(m for m in args.refresh.split(",") if m)
    if any(m not in RESTORE_METHODS for m in refresh):
        parser.error(f"--refresh {args.refresh!r} is invalid; allowed: a comma-separated subset of "
                     f"{', '.join(RESTORE_METHODS)}")
    methods = tuple(m for m in args.methods.split(",") if m) or METHODS
    if any(m not in METHODS for m in methods):
        parser.error(f"--methods {args.methods!r} is invalid; allowed: a comma-separated subset of {', '.join(METHODS)}")
    done = pd.read_csv(args.out) if args.out.is_file() else pd.DataFrame(columns=["task", "image", "method"])
    if args.table:
        print(report(done))
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    known = [Path(source).stem for source, _ in IMAGES]
    only = [name for name in args.images.split(",") if name]
    if any(name not in known for name in only):
        parser.error(f"--images {args.images!r} is invalid; allowed: a comma-separated subset of {', '.join(known)}")
    names = [name for name in args.tasks.split(",") if name]
    if any(name not in [t["task"] for t in TASKS.values()] for name in names):
        parser.error(f"--tasks {args.tasks!r} is invalid; allowed: a comma-separated subset of "
                     f"{', '.join(t['task'] for t in TASKS.values())}")
    pairs = [(label, task_dict, source, scale) for label, task_dict in TASKS.items() for source, scale in IMAGES
             if (not only or Path(source).stem in only) and (not names or task_dict["task"] in names)]
    for label, task_dict, source, scale in pairs[shard::shards]:
        present = set(done.loc[(done["task"] == label) & (done["image"] == Path(source).stem), "method"])
        todo = (refresh if present else ()) if refresh else tuple(m for m in methods if m not in present)
        if not todo:
            continue
        rows = measure(label, task_dict, source, scale, methods=todo)
        with open(args.out.with_suffix(".lock"), "w") as lock:  # other shards append to the same file
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = pd.read_csv(args.out) if args.out.is_file() else done
            replaced = (done["task"] == label) & (done["image"] == Path(source).stem) & done["method"].isin(todo)
            done = pd.concat([done[~replaced], pd.DataFrame(rows)], ignore_index=True)
            with images.atomic_path(args.out) as tmp:
                done.to_csv(tmp, index=False)
        shown = ", ".join(f"{r['method']} {r['psnr']:.2f} dB {r['seconds']:.0f} s" for r in rows)
        print(f"{label} {Path(source).stem}: {shown}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
