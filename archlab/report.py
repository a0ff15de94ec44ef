"""Paper figures and tables from filters, fits and studies (matplotlib)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from archlab import filters as filters_module
from archlab.images import atomic_path

# Lowest gain drawn, as in paper 004 Fig. 4 (left).
FLOOR_DB = -180.0


def plot_filter_responses(filters: Iterable, path: str | os.PathLike) -> Path:
    """Plot magnitude responses in dB against normalised frequency and write a PNG.

    The gain ``20 log10(|H(f)| / |H(0)|)`` (:meth:`archlab.filters.Filter.response`)
    is drawn against ``2 f`` (``×π`` rad per output sample, 1 = the output Nyquist
    frequency), with the passband ``[0, 1/s)`` and the first replica band
    ``[1/s, 2/s]`` of zero insertion shaded, as in paper 004 Fig. 4 (left).

    Parameters
    ----------
    filters : iterable of Filter or str
        Filters, catalogue names or TOML paths (:func:`archlab.filters.get`); all
        must share one factor.
    path : str or os.PathLike
        Output PNG, written atomically (temporary file, then rename).

    Returns
    -------
    Path
        The written file.
    """
    chosen = [filters_module.get(item) for item in filters]
    if not chosen:
        raise ValueError("filters: give at least one filter to plot")
    factors = sorted({flt.factor for flt in chosen})
    if len(factors) > 1:
        raise ValueError(f"filters: one factor per plot, got factors {factors}")
    s = factors[0]
    figure = Figure(figsize=(8.5, 4.8), layout="constrained")
    ax = figure.add_subplot()
    ax.axvspan(0.0, 1.0 / s, color="tab:green", alpha=0.12, lw=0, label="passband")
    ax.axvspan(1.0 / s, min(2.0 / s, 1.0), color="tab:red", alpha=0.10, lw=0, label="replica band")
    colours = colormaps["tab10"].colors
    styles = ("-", "--", "-.", ":")
    for i, flt in enumerate(chosen):
        f, response = flt.response(2048)
        with np.errstate(divide="ignore"):
            gain = 20 * np.log10(np.abs(response) / abs(flt.taps.sum()))
        ax.plot(2 * f, np.maximum(gain, FLOOR_DB), color=colours[i % len(colours)],
                ls=styles[i // len(colours) % len(styles)], lw=1.4, label=flt.name)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(FLOOR_DB, 10.0)
    ax.set_xlabel("normalised frequency (×π rad/sample, 1 = output Nyquist)")
    ax.set_ylabel("gain (dB, re DC)")
    ax.set_title(f"Upsampling filters, factor {s}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=150)
    return path

