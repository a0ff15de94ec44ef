"""Figures of the papers' spectral measurements: FBC (paper 000 Fig. 3, 5), radial power spectra (paper 004
Fig. 2), trajectory distances (paper 001 Fig. 1) and per-frequency errors (paper 001 Fig. 3)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from archlab.report.figures import plain_title, save_figure

#: Names of the five FBC bands of paper 000 §3.2, lowest first.
BAND_NAMES = ("lowest", "low", "medium", "high", "highest")


def _band_columns(history: pd.DataFrame) -> list[str]:
    columns = sorted((c for c in history.columns if c.startswith("fbc_")), key=lambda c: int(c[4:]))
    if not columns:
        raise ValueError("history: no fbc_* columns (fit with fbc_bands > 0 and an observation the output's size)")
    return columns


def _band_label(index: int, count: int) -> str:
    return f"band {index} ({BAND_NAMES[index]})" if count == len(BAND_NAMES) else f"band {index}"


def _band_colours(count: int) -> list:
    cmap = colormaps["viridis"]
    return [cmap(i / max(count - 1, 1) * 0.9) for i in range(count)]


def plot_fbc(history: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Paper 000 Fig. 3: the frequency-band correspondence of every band and the PSNR against iterations.

    Top: ``fbc_0 .. fbc_{B-1}`` (eq. 1, band means of ``|F{f_theta}| / |F{y0}|``, clipped to [0, 1]).
    Bottom: PSNR against the clean image (or against the observation when there is no ``psnr`` column).
    The iteration of peak PSNR is marked by a vertical line in both panels, as the paper's green lines.

    Parameters
    ----------
    history : pandas.DataFrame
        A :class:`archlab.fitting.FitResult` history: ``iteration``, ``fbc_*`` and ``psnr`` or ``psnr_obs``.
    path : str or os.PathLike
        PNG to write.
    title : str
        Figure title (a file path in it is shown as the file's stem).
    """
    bands = _band_columns(history)
    has_reference = "psnr" in history and history["psnr"].notna().any()
    psnr = history["psnr" if has_reference else "psnr_obs"]
    figure = Figure(figsize=(7.0, 6.0), layout="constrained")
    ax_fbc, ax_psnr = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    for i, (column, colour) in enumerate(zip(bands, _band_colours(len(bands)))):
        ax_fbc.plot(history["iteration"], history[column], color=colour, lw=1.5, label=_band_label(i, len(bands)))
    ax_fbc.set_ylim(0.0, 1.02)
    ax_fbc.set_ylabel("FBC (eq. 1)")
    ax_fbc.legend(fontsize="small", loc="lower right")
    ax_psnr.plot(history["iteration"], psnr, color="k", lw=1.4)
    ax_psnr.set_ylabel("PSNR (dB)" if has_reference else "PSNR vs observation (dB)")
    ax_psnr.set_xlabel("iteration")
    peak = psnr.idxmax()
    if has_reference and not np.isnan(psnr[peak]):
        at = history["iteration"][peak]
        for ax in (ax_fbc, ax_psnr):
            ax.axvline(at, color="tab:green", lw=1.2)
        ax_psnr.plot(at, psnr[peak], "o", color="tab:green", label=f"peak {psnr[peak]:.2f} dB at {at}")
        ax_psnr.legend(fontsize="small", loc="lower right")
    for ax in (ax_fbc, ax_psnr):
        ax.grid(True, alpha=0.3)
    ax_fbc.set_title(plain_title(title))
    return save_figure(figure, path)


def plot_radial_psd(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike,
                    title: str = "Radial power spectral density") -> Path:
    """Paper 004 Fig. 2: radially averaged power spectra of several images on one log-log plot.

    Parameters
    ----------
    curves : mapping of name -> (radius, psd)
        From :func:`archlab.spectral.radial_psd` (radius in cycles per pixel); the DC ring (radius 0) is
        left out of the log axis.
    path : str or os.PathLike
        PNG to write.
    """
    if not curves:
        raise ValueError("curves: give at least one image")
    figure = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = figure.add_subplot()
    for name, (radius, psd) in curves.items():
        radius, psd = np.asarray(radius), np.asarray(psd)
        keep = radius > 0
        ax.loglog(radius[keep], psd[keep], lw=1.3, label=name)
    ax.set_xlabel("radial frequency (cycles / pixel)")
    ax.set_ylabel("mean power |F{Y}|² / HW")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize="small")
    ax.set_title(plain_title(title))
    return save_figure(figure, path)


def plot_trajectories(curves: pd.DataFrame, path: str | os.PathLike,
                      title: str = "Trajectory distance of two seeds (paper 001 Fig. 1)") -> Path:
    """Paper 001 Fig. 1(e-h): ``eps = sum (T1 - T2)^2`` against iterations, one line per image.

    ``curves`` is :func:`archlab.experiments.trajectory_divergence`'s frame; lines are coloured by the
    image's high-band power share (light = little high-frequency content).
    """
    figure = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = figure.add_subplot()
    order = curves.groupby("image", sort=False)["high_band_share"].first().sort_values()
    cmap = colormaps["plasma"]
    for i, (name, share) in enumerate(order.items()):
        c = curves[curves["image"] == name]
        ax.plot(c["iteration"], c["eps"], color=cmap(0.1 + 0.75 * i / max(len(order) - 1, 1)), lw=1.4,
                label=f"{name} (high band {share:.1%})")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("ε = Σ (T₁ − T₂)²")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize="small")
    ax.set_title(plain_title(title))
    return save_figure(figure, path)


def plot_sinusoid(curves: pd.DataFrame, path: str | os.PathLike, delta: float = 0.01) -> Path:
    """Paper 001 Fig. 3(e, f): ``SE(k) = (A~_k - A_k)^2`` against iterations, one panel per network kind.

    ``curves`` is :func:`archlab.experiments.sinusoid_experiment`'s frame; the threshold ``delta`` is
    drawn and the first iteration below it is marked for each frequency.
    """
    kinds = list(dict.fromkeys(curves["kind"]))
    figure = Figure(figsize=(5.0 * len(kinds), 4.0), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(kinds), sharey=True))
    for ax, kind in zip(axes, kinds):
        part = curves[curves["kind"] == kind]
        for j, (k, c) in enumerate(part.groupby("frequency")):
            line, = ax.semilogy(c["iteration"], c["se"].clip(lower=1e-8), lw=1.3, label=f"SE(k={k})")
            below = c[c["se"] <= delta]
            if len(below):
                at = below["iteration"].iloc[0]
                ax.axvline(at, color=line.get_color(), ls=":", lw=1.0)
                ax.annotate(f"{at}", (at, delta), textcoords="offset points", xytext=(3, 4 + 10 * j),
                            color=line.get_color(), fontsize="small")
        ax.axhline(delta, color="0.4", ls="--", lw=0.8, label=f"δ = {delta}")
        ax.set_title(f"DIP-{kind}")
        ax.set_xlabel("iteration")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize="small")
    axes[0].set_ylabel("squared amplitude error")
    return save_figure(figure, path)


def plot_lipschitz_fbc(histories: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Paper 000 Fig. 5: PSNR against iterations for each λ (left) and the FBC bands for each λ (right).

    ``histories`` is :func:`archlab.experiments.lipschitz_fbc`'s frame (fit histories with a ``lipschitz``
    column).
    """
    groups = list(histories.groupby("lipschitz"))
    bands = _band_columns(histories)
    figure = Figure(figsize=(4.0 * (len(groups) + 1), 3.8), layout="constrained")
    axes = figure.subplots(1, len(groups) + 1)
    for lam, h in groups:
        axes[0].plot(h["iteration"], h["psnr"], lw=1.4, label=f"λ = {lam:g}")
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("PSNR (dB)")
    axes[0].legend(fontsize="small")
    for ax, (lam, h) in zip(axes[1:], groups):
        for i, (column, colour) in enumerate(zip(bands, _band_colours(len(bands)))):
            ax.plot(h["iteration"], h[column], color=colour, lw=1.3, label=_band_label(i, len(bands)))
        ax.set_ylim(0.0, 1.02)
        ax.set_title(f"FBC, λ = {lam:g}")
        ax.set_xlabel("iteration")
    axes[1].legend(fontsize="x-small", loc="lower right")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    figure.suptitle(plain_title(title))
    return save_figure(figure, path)
