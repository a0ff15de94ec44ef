"""Figures the README shows that are drawn from data, not from new fits (seconds of CPU):

* ``docs/filter-responses.png`` - the designed upsampling filters of paper 004 beside nearest and bilinear;
* ``results/spectral/lipschitz/lipschitz.png`` - paper 000 Fig. 5, redrawn from ``results/spectral/lipschitz/curves.csv``
  (the fits of ``archlab spectral lipschitz``, ``shi-decoder-text``) with the title that command gives.

    python docs/readme_figures.py
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from archlab import report

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    path = report.plot_filter_responses(["nearest", "bilinear", "L14", "L15", "L-60", "L-100"],
                                        ROOT / "docs" / "filter-responses.png")
    print(f"wrote {path}")
    spectral = ROOT / "results" / "spectral" / "lipschitz"
    curves = pd.read_csv(spectral / report.CURVES_CSV)
    # the command of results/spectral/README.md: --image .../image_F16_512rgb.png --size 64 (σ 25, the default arch)
    title = "denoising σ = 25, shi-decoder-text, image_F16_512rgb 64px"
    print(f"wrote {report.plot_lipschitz_fbc(curves, spectral / 'lipschitz.png', title)}")


if __name__ == "__main__":
    main()
