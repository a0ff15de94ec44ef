"""Figures of filters, fits and studies (matplotlib), written atomically as PNG, PDF or SVG."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from archlab import filters as filters_module
from archlab.images import atomic_path
from archlab.report.tables import METRIC_TITLES

# Lowest gain drawn, as in paper 004 Fig. 4 (left).
FLOOR_DB = -180.0


def plot_filter_responses(filters: Iterable, path: str | os.PathLike) -> Path:
    """Plot magnitude responses in dB against frequency and write the figure.

    The gain ``20 log10(|H(f)| / |H(0)|)`` (:meth:`archlab.filters.Filter.response`)
    is drawn against ``f`` in cycles per output sample on ``[0, 0.5]`` (0.5 = the output
    Nyquist frequency), with the passband ``[0, 0.5/s)`` and the first replica band
    ``[0.5/s, 1/s]`` of zero insertion shaded, as in paper 004 Fig. 4 (left).

    Parameters
    ----------
    filters : iterable of Filter or str
        Filters, catalogue names or TOML paths (:func:`archlab.filters.get`); all
        must share one factor.
    path : str or os.PathLike
        Output figure (PNG, PDF or SVG by its suffix), written atomically (temporary file, then rename).

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
    ax.axvspan(0.0, 0.5 / s, color="tab:green", alpha=0.12, lw=0, label="passband")
    ax.axvspan(0.5 / s, min(1.0 / s, 0.5), color="tab:red", alpha=0.10, lw=0, label="replica band")
    colours = colormaps["tab10"].colors
    styles = ("-", "--", "-.", ":")
    for i, flt in enumerate(chosen):
        f, response = flt.response(2048)
        with np.errstate(divide="ignore"):
            gain = 20 * np.log10(np.abs(response) / abs(flt.taps.sum()))
        ax.plot(f, np.maximum(gain, FLOOR_DB), color=colours[i % len(colours)],
                ls=styles[i // len(colours) % len(styles)], lw=1.4, label=flt.name)
    ax.set_xlim(0.0, 0.5)
    ax.set_ylim(FLOOR_DB, 10.0)
    ax.set_xlabel("frequency (cycles per output sample, 0.5 = output Nyquist)")
    ax.set_ylabel("gain (dB, re DC)")
    ax.set_title(f"Upsampling filters, factor {s}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return save_figure(figure, path, dpi=150)


def plain_title(text: str) -> str:
    """``text`` with every file path in it (a token with a file suffix) reduced to the file's stem, so a
    figure title names the image or architecture, not where it lies on a machine."""
    return _PATH_TOKEN.sub(lambda match: PurePath(match.group()).stem, str(text))


_PATH_TOKEN = re.compile(r"[^\s,;:()\[\]]+\.(?:toml|json|png|jpe?g|tiff?|bmp|webp|gif|npy|csv)(?![\w])",
                         re.IGNORECASE)


def plot_fit_curves(history, path: str | os.PathLike, stop_iteration: int | None = None, title: str = "") -> Path:
    """PSNR, EMA PSNR (when a reference was known) and the blur/sharpness ratio against iterations.

    The ratio r = B / S is the statistic of paper 000's stopping rule (§4.3, eq. 8); the
    iteration where the rule fired is marked with a dashed line, the PSNR peak with a dot.
    """
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    it = history["iteration"]
    if "psnr" in history and history["psnr"].notna().any():
        ax.plot(it, history["psnr"], label="PSNR", color="C0")
        ax.plot(it, history["psnr_ema"], label="PSNR (EMA)", color="C1", alpha=0.8)
        peak = history["psnr"].idxmax()
        ax.plot(it[peak], history["psnr"][peak], "o", color="C0")
        ax.set_ylabel("PSNR (dB)")
    else:
        ax.plot(it, history["psnr_obs"], label="PSNR vs observation", color="C0")
        ax.set_ylabel("PSNR against the observation (dB)")
    ratio_ax = ax.twinx()
    ratio_ax.plot(it, history["ratio"], label="blur / sharpness", color="C2", alpha=0.7)
    ratio_ax.set_ylabel("ratio r = B / S")
    if stop_iteration is not None:
        ax.axvline(stop_iteration, color="k", linestyle="--", label=f"auto-stop ({stop_iteration})")
    ax.set_xlabel("iteration")
    handles = ax.get_legend_handles_labels()[0] + ratio_ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_title(plain_title(title))
    return save_figure(fig, path, dpi=120)


#: Colour and line style of each stop rule in :func:`plot_stop_points`.
RULE_STYLES = {"ratio": ("C2", "--"), "wmv": ("C3", "-."), "emv": ("C4", ":"), "discrepancy": ("k", "--"),
               "ema_discrepancy": ("C5", "-"), "jpeg_consistency": ("C6", "-")}


def plot_stop_points(curves: Mapping[str, pd.DataFrame], stops: Mapping[str, Mapping[str, int | None]],
                     path: str | os.PathLike, title: str = "", columns: int = 4) -> Path:
    """PSNR curves with the iteration every stop rule detected marked on each.

    One panel per entry of ``curves`` (a fit's history: ``iteration``, ``psnr``, ``psnr_ema``), the raw
    output's PSNR and its EMA's, its peak as a dot, and a vertical line per rule of ``stops[key]``
    (rule name → detected iteration; ``None``: the rule did not detect, left out), styled by
    :data:`RULE_STYLES`. Written as PNG, PDF or SVG by the path's suffix.
    """
    keys = list(curves)
    if not keys:
        raise ValueError("curves: nothing to plot")
    rows = -(-len(keys) // columns)
    figure = Figure(figsize=(3.3 * min(columns, len(keys)) + 1.6, 2.6 * rows), layout="constrained")
    axes = figure.subplots(rows, min(columns, len(keys)), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        history = curves[key]
        ax.plot(history["iteration"], history["psnr"], color="C0", lw=1.1, label="output")
        ax.plot(history["iteration"], history["psnr_ema"], color="C1", lw=1.0, alpha=0.8, label="EMA")
        peak = history["psnr"].idxmax()
        ax.plot(history["iteration"][peak], history["psnr"][peak], "o", color="C0", ms=4, label="peak")
        for rule, iteration in stops.get(key, {}).items():
            if iteration is not None and not pd.isna(iteration):
                colour, style = RULE_STYLES.get(rule, ("0.5", "-"))
                ax.axvline(int(iteration), color=colour, linestyle=style, lw=1.1, label=rule)
        ax.set_title(plain_title(key), fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel("PSNR (dB)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="small", frameon=False)
    if title:
        figure.suptitle(plain_title(title))
    return save_figure(figure, path, dpi=110)


FIGURE_FORMATS = ("png", "pdf", "svg")
CURVE_LABELS = {"psnr": "PSNR (dB)", "psnr_ema": "PSNR of the EMA (dB)", "ratio": "blur / sharpness",
                "fbc_low": "FBC, lowest band", "fbc_high": "FBC, highest band"}



def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 130) -> Path:
    """Write ``figure`` atomically (temporary name, then rename) as PNG, PDF or SVG by the path's suffix."""
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in FIGURE_FORMATS:
        raise ValueError(f"figure: {path.name!r} has no figure suffix; allowed: "
                         + ", ".join(f".{k}" for k in FIGURE_FORMATS))
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=kind, dpi=dpi, metadata={"Software": "archlab"} if kind == "png" else None)
    return path


def plot_curves(frame, path: str | os.PathLike, *, line: str = "config", panel: str = "panel",
                columns: Iterable[str] = ("psnr", "fbc_high"), band: str | None = None) -> Path:
    """Curves against iteration: one column of axes per ``panel`` value, one row per metric,
    one line per ``line`` value (averaged over repeated rows, e.g. seeds).

    ``frame`` is long-form with ``iteration``, ``line``, ``panel`` and the metric columns
    (PSNR; ``fbc_high`` is the highest frequency band of paper 000 eq. 1). With ``band`` (a column
    such as ``seed``), the range over its values is shaded around each line that has several.
    Written as PNG, PDF or SVG by the path's suffix.
    """
    columns = [c for c in columns if c in frame and frame[c].notna().any()]
    if not columns:
        present = ", ".join(map(str, frame.columns))
        raise ValueError(f"curves: none of the metric columns is present; columns: {present}")
    panels = list(dict.fromkeys(frame[panel]))
    lines = list(dict.fromkeys(frame[line]))
    grouped = frame.groupby([panel, line, "iteration"], sort=False, observed=True)
    mean = grouped[columns].mean().reset_index()
    spread = band is not None and band in frame and (grouped[band].nunique() > 1).any()
    if spread:
        low, high = grouped[columns].min().reset_index(), grouped[columns].max().reset_index()
    figure = Figure(figsize=(4.2 * len(panels) + 2.2, 2.8 * len(columns)), layout="constrained")
    axes = figure.subplots(len(columns), len(panels), squeeze=False, sharex="col")
    colours = colormaps["tab10"].colors if len(lines) <= 10 else colormaps["viridis"](np.linspace(0, 0.9, len(lines)))
    for j, name in enumerate(panels):
        for i, column in enumerate(columns):
            ax = axes[i, j]
            for k, value in enumerate(lines):
                chosen = (mean[panel] == name) & (mean[line] == value)
                rows = mean[chosen]
                ax.plot(rows["iteration"], rows[column], color=colours[k], lw=1.3, label=str(value))
                if spread:
                    ax.fill_between(rows["iteration"], low.loc[chosen, column], high.loc[chosen, column],
                                    color=colours[k], alpha=0.18, lw=0)
            ax.grid(True, alpha=0.3)
            if j == 0:
                ax.set_ylabel(CURVE_LABELS.get(column, column))
        axes[0, j].set_title(str(name))
        axes[-1, j].set_xlabel("iteration")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    return save_figure(figure, path)


def plot_importances(importances: dict, path: str | os.PathLike) -> Path:
    """Horizontal bars of parameter importances (fANOVA, ``optuna.importance``) per objective."""
    if not importances:
        raise ValueError("importances: nothing to plot (fewer than two complete trials?)")
    figure = Figure(figsize=(5.5 * len(importances), 0.5 * max(len(v) for v in importances.values()) + 1.6),
                    layout="constrained")
    axes = figure.subplots(1, len(importances), squeeze=False)[0]
    for ax, (objective, values) in zip(axes, importances.items()):
        names = list(values)[::-1]
        ax.barh(names, [values[n] for n in names], color="tab:blue")
        ax.set_xlim(0, 1)
        ax.set_xlabel("importance")
        ax.set_title(objective)
    return save_figure(figure, path)


def plot_pareto(frame, x: str, y: str, path: str | os.PathLike, *, label: str = "config") -> Path:
    """Objective ``y`` against objective ``x`` for every complete trial, the Pareto front
    (boolean column ``front``, Optuna's ``study.best_trials``) joined and labelled."""
    figure = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = figure.add_subplot()
    ax.scatter(frame[x], frame[y], color="0.6", s=18, label="trials")
    front = frame[frame["front"]].sort_values(x)
    ax.plot(front[x], front[y], "o-", color="tab:red", label="Pareto front")
    for _, row in front.iterrows():
        ax.annotate(str(row[label]), (row[x], row[y]), fontsize="x-small", xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(METRIC_TITLES.get(x, x))
    ax.set_ylabel(METRIC_TITLES.get(y, y))
    ax.margins(x=0.25, y=0.1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(figure, path)
