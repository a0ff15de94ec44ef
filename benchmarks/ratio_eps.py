"""Calibrate ε of the ratio rule for archlab's blur/sharpness against paper 000's own measures.

Reads fit trajectories (``archlab reproduce NAME -o DIR --trajectories`` saves the network output at every
evaluation), computes both ratios r = B / S on every saved output, runs the ratio rule (paper 000 eq. 8,
n = 100) with the paper's measures at its ε = 0.01 and with archlab's measures over a grid of ε, and writes
where each stops, the PSNR there, and the ε at which archlab's measures stop where the paper's do.

    python benchmarks/ratio_eps.py results/denoise-set9/trajectories/*.npz -o results/denoise-set9/ratio-eps.md
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from archlab import images, metrics, report, stopping
from archlab.fitting import output_measures

EPS_GRID = tuple(round(0.002 * k, 3) for k in range(1, 31))


def ratio(x: torch.Tensor, measures: str) -> torch.Tensor:
    """r = B / S of an output as a fit measures it with ``measures`` (:func:`archlab.fitting.output_measures`)."""
    blur, sharpness, _ = output_measures(x, measures=measures)
    return blur / sharpness


def ratios(path: Path) -> pd.DataFrame:
    """Per saved evaluation: iteration, PSNR of the output, r with archlab's and with the paper's measures."""
    data = np.load(path)
    outputs = torch.from_numpy(data["output"].astype(np.float32))
    reference = torch.from_numpy(data["reference"].astype(np.float32))
    rows = []
    for iteration, output in zip(data["iteration"], outputs):
        x = output[None]
        rows.append({"iteration": int(iteration), "psnr": float(metrics.psnr(x, reference)),
                     "r_skimage": float(ratio(x, "skimage")), "r_paper": float(ratio(x, "paper"))})
    return pd.DataFrame(rows)


def stop_iteration(frame: pd.DataFrame, column: str, eps: float, window: int = 100) -> int | None:
    """Where the ratio rule fires on ``frame[column]`` (evaluations every ``iteration`` step), or None."""
    every = int(frame["iteration"].iloc[1] - frame["iteration"].iloc[0])
    rule = stopping.RatioRule(window, eps, every)
    for iteration, r in zip(frame["iteration"], frame[column]):
        if bool(rule.update(int(iteration), torch.tensor([r]))[0]):
            return int(iteration)
    return None


def calibrate(paths: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per run: the paper rule's stop and PSNR, archlab's at ε = 0.01 and at each ε of the grid."""
    per_run, grid = [], []
    for path in paths:
        frame = ratios(path)
        psnr = frame.set_index("iteration")["psnr"]
        name = path.stem.replace("_", " ")
        paper = stop_iteration(frame, "r_paper", stopping.DEFAULT_EPS)
        delta = lambda c: stopping.ratio_rule_delta(torch.tensor(frame[c].values), 10)  # noqa: E731
        per_run.append({"run": name, "paper stop": paper, "paper stop PSNR": psnr.get(paper, math.nan),
                        "archlab stop (ε 0.01)": stop_iteration(frame, "r_skimage", stopping.DEFAULT_EPS),
                        "peak PSNR": psnr.max(), "peak at": int(psnr.idxmax()),
                        "median Δr archlab / paper": float((delta("r_skimage") / delta("r_paper")).median())})
        for eps in EPS_GRID:
            stop = stop_iteration(frame, "r_skimage", eps)
            grid.append({"run": name, "eps": eps, "stop": stop, "paper stop": paper,
                         "stop PSNR": psnr.get(stop, math.nan)})
    return pd.DataFrame(per_run).set_index("run"), pd.DataFrame(grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trajectories", nargs="+", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    per_run, grid = calibrate(args.trajectories)
    last = grid["paper stop"].fillna(grid.groupby("run")["stop"].transform(lambda s: s.max()))
    grid["miss"] = (grid["stop"].fillna(10**6) - last).abs()
    score = grid.groupby("eps")["miss"].mean()
    best = float(score.idxmin())
    table = grid.pivot(index="run", columns="eps", values="stop").loc[:, [e for e in EPS_GRID if e in (0.004, 0.006, 0.008, 0.01, 0.012, best, 0.016, 0.02)]]
    text = ("Per run: paper 000's rule with its own measures at ε = 0.01 and archlab's measures at ε = 0.01\n\n"
            + report.markdown_table(per_run)
            + "\n\nWhere archlab's measures stop, by ε (iterations; blank: never)\n\n" + report.markdown_table(table)
            + f"\n\nε that stops archlab's measures closest to the paper's rule (mean |Δ iteration| "
              f"{score[best]:.0f}): {best:g}\n")
    with images.atomic_path(args.out) as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
