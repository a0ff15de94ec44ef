"""Where the JPEG consistency rule stops, for a range of τ: the evidence behind
:data:`archlab.stopping.DEFAULT_CONSISTENCY_TAU`.

Per image (JPEG quality 10, grey): one ``controlled-64`` fit as ``archlab restore`` runs it (lr 0.002, input jitter
1/30, EMA 0.99, seed 0), every iteration's output kept; then, replayed from them, the bias-corrected EMA ē_t, its
PSNR and the fraction φ_t of its block-DCT coefficients outside the observation's quantisation bins
(:class:`archlab.stopping.JPEGConsistencyRule`). A row per image: the EMA's best PSNR (the oracle, which needs the
clean image), its iteration and φ there; per τ, the first iteration with φ_t ≤ τ and its PSNR minus the best.
τ is chosen on the training images (:data:`TRAINING`, none of the time-to-quality benchmark's images);
``--held-out`` adds two of that benchmark's images, to look at, not to choose on.

    python benchmarks/jpeg_consistency.py -o results/stopping-jpeg/results.csv --held-out
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from archlab import fitting, images, metrics, physics, restoration, stopping, tasks
from archlab.report import markdown_table

#: The images τ is chosen on: five CBSD68 128-px centre crops and two Set12 images at ½ (128 px).
TRAINING = (("cbsd68/0001.png", None), ("cbsd68/0010.png", None), ("cbsd68/0020.png", None),
            ("cbsd68/0030.png", None), ("cbsd68/0040.png", None), ("set12/01.png", 0.5), ("set12/02.png", 0.5))
#: Two of the time-to-quality benchmark's images (Set9 at ¼), with ``--held-out``.
HELD_OUT = (("set9/image_F16_512rgb.png", 0.25), ("set9/image_Baboon512rgb.png", 0.25))
TAUS = (3e-3, 2e-3, 1.5e-3, 1e-3, 5e-4, 0.0)
QUALITY = 10


def clean(source: str, scale: float | None) -> torch.Tensor:
    """A dataset image at ``scale`` (Pillow bicubic), else its 128-px centre crop."""
    path = images.datasets_root() / source
    if scale is not None:
        return restoration.clean_image(path, scale=scale, multiple=8, method="pil")
    return restoration.clean_image(path, crop=(128, 128), multiple=8)


def measure(name: str, x: torch.Tensor, iterations: int, training: bool = True) -> dict:
    """The row of the clean image ``x`` (see the module's docstring)."""
    task = tasks.JPEGDeblock(QUALITY)
    observation = task.observe(x, seed=0)
    outputs = []
    fitting.fit("controlled-64", task, observation, iterations=iterations, lr=0.002, input_jitter=1 / 30,
                eval_every=1, window=10, stop="none", seed=0, progress=False,
                on_evaluation=lambda iteration, out: outputs.append(out.detach().float().cpu()))
    table = physics.jpeg_table(QUALITY)
    bins = stopping.block_coefficients(observation.y.double(), table).round()
    average, psnr, outside = stopping.EMA(0.99), [], []
    for out in outputs:
        ema = average.update(out)
        psnr.append(float(metrics.psnr(ema, observation.reference)))
        outside.append(float(((stopping.block_coefficients(ema, table) - bins).abs() > 0.5).float().mean()))
    psnr, outside = np.array(psnr), np.array(outside)
    best = int(np.argmax(psnr))
    row = {"image": name, "set": "training" if training else "held-out",
           "observation_psnr": float(metrics.psnr(observation.y, observation.reference)),
           "best_psnr": psnr[best], "best_iteration": best + 1, "outside_at_best": outside[best]}
    for tau in TAUS:
        hit = np.flatnonzero(outside <= tau)
        row[f"stop τ={tau:g}"] = hit[0] + 1 if hit.size else np.nan
        row[f"gap τ={tau:g}"] = psnr[hit[0]] - psnr[best] if hit.size else np.nan
    return row


def report(rows: pd.DataFrame) -> str:
    """Markdown: every row, then per set the mean and the worst gap per τ."""
    gaps = [f"gap τ={tau:g}" for tau in TAUS]
    summary = rows.groupby("set", sort=False)[gaps].agg(["mean", "min"]).T
    summary.index = [f"{gap.removeprefix('gap ')} {stat}" for gap, stat in summary.index]
    return (markdown_table(rows.set_index("image"), digits=4, style="g")
            + "\n\nPSNR at the stop minus the EMA's best, dB (mean and worst):\n\n" + markdown_table(summary, digits=3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, required=True, help="CSV of rows (rewritten)")
    parser.add_argument("--held-out", action="store_true", help="add two Set9 images of the time-to-quality benchmark")
    parser.add_argument("--iterations", type=int, default=800, help="iterations per fit (default 800)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    chosen = [(source, scale, True) for source, scale in TRAINING]
    chosen += [(source, scale, False) for source, scale in HELD_OUT] if args.held_out else []
    rows = pd.DataFrame([measure(Path(source).stem, clean(source, scale), args.iterations, training)
                         for source, scale, training in chosen])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with images.atomic_path(args.out) as tmp:
        rows.to_csv(tmp, index=False)
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
