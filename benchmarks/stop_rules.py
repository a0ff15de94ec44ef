"""Where each stop rule would stop recorded fits, and how far its output is from the run's oracle peak.

Reads fit trajectories (``archlab reproduce NAME -o DIR --trajectories``: the network output, the observation
and the clean image at every evaluation) and replays the rules of :mod:`archlab.stopping` on them: the ratio
rule (archlab's and paper 000's measures), ES-WMV and ES-EMV (on the saved outputs, one every ``e`` iterations:
a window of 100 iterations is 100/e samples, the patience counted in iterations), and the discrepancy
principle (the known σ and σ estimated from y). Writes one row per run and rule: the detected iteration, the
PSNR of the output there and its gap to the run's peak PSNR among the saved outputs.

    python benchmarks/stop_rules.py results/denoise-set9/trajectories/*.npz --sigma 25 -o results/stopping/set9.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from archlab import images, metrics, report, stopping
from archlab.fitting import output_measures


def replay(path: Path, sigma: float | None, patience: int = 1000) -> list[dict]:
    """Every rule replayed on one trajectory; a row per rule."""
    data = np.load(path)
    saved = [int(i) for i in data["iteration"]]
    every = min(b - a for a, b in zip(saved, saved[1:]))
    # An evaluation the fit rolled back (a loss jump) was not saved; the fit went on from the last kept
    # state, so the replay gives the rules that state's output there.
    iterations = list(range(saved[0], saved[-1] + 1, every))
    index = np.searchsorted(saved, iterations, side="right") - 1
    outputs = torch.from_numpy(data["output"].astype(np.float32))[torch.from_numpy(index)]
    y = torch.from_numpy(data["observation"].astype(np.float32))
    reference = torch.from_numpy(data["reference"].astype(np.float32))
    psnr = [float(metrics.psnr(o[None], reference)) for o in outputs]
    peak = int(np.argmax(psnr))
    rules = {
        "ratio (archlab measures)": stopping.RatioRule(100, stopping.EPS_FOR_MEASURES["skimage"], every),
        "ratio (paper measures)": stopping.RatioRule(100, stopping.EPS_FOR_MEASURES["paper"], every),
        "wmv": stopping.WMVRule(window=max(2, 100 // every), patience=patience),
        "emv": stopping.EMVRule(decay=1 - (1 - stopping.DEFAULT_EMV_DECAY) ** every, patience=patience),
    }
    if outputs.shape[1:] == y.shape[1:]:  # the residual to y needs no operator (not SR)
        rules["discrepancy (estimated σ)"] = stopping.DiscrepancyRule(y=y)
    if sigma is not None:
        rules["discrepancy (known σ)"] = stopping.DiscrepancyRule(sigma=sigma / 255.0)
        rules["discrepancy (known σ, clipped noise)"] = stopping.DiscrepancyRule(sigma=sigma / 255.0, clipped=True)
    for iteration, output in zip(iterations, outputs):
        x = output[None]
        for measures in ("archlab", "paper"):
            blur, sharpness, _ = output_measures(x, measures="paper" if measures == "paper" else "skimage")
            rules[f"ratio ({measures} measures)"].update(iteration, blur / sharpness)
        rules["wmv"].update(iteration, x)
        rules["emv"].update(iteration, x)
        discrepancy = [name for name in rules if name.startswith("discrepancy")]
        if discrepancy:
            residual = (x - y).square().mean().reshape(1)
            for name in discrepancy:
                rules[name].update(iteration, residual, x)
    rows = []
    for name, rule in rules.items():
        detected = int((rule.stop_iteration if name.startswith("ratio") else rule.detected_iteration)[0])
        row = {"run": path.stem, "rule": name, "peak PSNR": psnr[peak], "peak at": iterations[peak],
               "detected at": detected if detected >= 0 else None}
        if detected >= 0:
            row["PSNR there"] = psnr[iterations.index(detected)]
            row["gap to peak"] = psnr[peak] - row["PSNR there"]
        else:
            row["PSNR there"] = psnr[-1]  # a rule that never fires returns the last output
            row["gap to peak"] = psnr[peak] - psnr[-1]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trajectories", nargs="+", type=Path)
    parser.add_argument("--sigma", type=float, default=None, help="the noise σ (0..255) where known")
    parser.add_argument("--patience", type=int, default=1000, help="WMV/EMV patience in iterations")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    frame = pd.DataFrame([row for path in args.trajectories for row in replay(path, args.sigma, args.patience)])
    per_run = frame.set_index("run")
    summary = frame.groupby("rule")["gap to peak"].agg(["mean", "max"]).rename(
        columns={"mean": "mean gap to peak", "max": "largest gap"}).sort_values("mean gap to peak")
    text = ("Per run and rule (PSNR of the network output; a rule that never fired: the last output)\n\n"
            + report.markdown_table(per_run) + "\n\nPer rule, over the runs\n\n" + report.markdown_table(summary) + "\n")
    with images.atomic_path(args.out) as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
