"""Tables: Markdown (GitHub), LaTeX (booktabs) and CSV, and the study metrics' labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from archlab.images import atomic_path

#: Decimals per study metric in tables.
METRIC_DIGITS = {"peak_psnr": 2, "final_psnr": 2, "psnr_drop": 2, "stop_psnr": 2, "peak_iteration": 0,
                 "stop_iteration": 0, "seconds": 1, "final_fbc_high": 3}
#: Short column headers of the study metrics.
METRIC_LABELS = {"peak_psnr": "peak PSNR (dB)", "final_psnr": "last PSNR (dB)", "psnr_drop": "PSNR drop (dB)",
                 "peak_iteration": "peak iteration", "stop_iteration": "stop iteration",
                 "stop_psnr": "PSNR at the stop (dB)", "seconds": "seconds", "final_fbc_high": "last highest FBC"}
#: Column headers of the searchable parameters (anything else: its name with spaces for underscores).
PARAM_LABELS = {"lipschitz": "Lipschitz bound λ", "sigma": "Gaussian σ", "lr": "learning rate",
                "skip": "skip channels", "norm": "normalisation", "input_jitter": "input jitter",
                "eval_every": "evaluation interval", "input_depth": "input channels", "kind": "architecture"}
METRIC_TITLES = {"peak_psnr": "peak PSNR (dB)", "final_psnr": "last-iteration PSNR (dB)",
                 "psnr_drop": "PSNR drop, peak − last (dB)", "stop_psnr": "PSNR where the stop rule stops (dB)",
                 "peak_iteration": "iteration of the peak PSNR", "stop_iteration": "iteration where the stop rule stops",
                 "seconds": "seconds per fit", "final_fbc_high": "highest FBC band at the last iteration"}
TABLE_FORMATS = ("md", "latex", "csv")
#: The files of a results folder (:func:`write_results`, ``archlab reproduce``, study reports):
#: the rows, their table (``table.tex`` in LaTeX) and the per-evaluation curves.
RESULTS_CSV, TABLE_MD, CURVES_CSV = "results.csv", "table.md", "curves.csv"


#: Characters pdflatex's utf8 input does not know, as LaTeX (text mode).
LATEX_SYMBOLS = {"λ": r"$\lambda$", "σ": r"$\sigma$", "ζ": r"$\zeta$", "π": r"$\pi$", "ε": r"$\varepsilon$",
                 "μ": r"$\mu$", "α": r"$\alpha$", "β": r"$\beta$", "θ": r"$\theta$", "×": r"$\times$",
                 "−": r"$-$", "≥": r"$\geq$", "≤": r"$\leq$", "≈": r"$\approx$", "→": r"$\rightarrow$",
                 "·": r"$\cdot$", "²": r"$^{2}$", "³": r"$^{3}$", "¼": r"$\frac{1}{4}$", "½": r"$\frac{1}{2}$",
                 "√": r"$\surd$", "∞": r"$\infty$", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "\\": r"\textbackslash{}"}


def latex_escape(text) -> str:
    """``text`` with LaTeX's special characters escaped and the Greek letters and math symbols
    archlab writes (λ, σ, ×, −, ≥, ², ¼, ...) as LaTeX, so pdflatex compiles it."""
    return "".join("\\" + c if c in "&%$#_{}" else LATEX_SYMBOLS.get(c, c) for c in str(text))


def latex_table(tabular: str) -> str:
    """A tabular centred, shrunk to the line width when wider (``graphicx``'s ``\\resizebox``)."""
    return ("\\begin{center}\n\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
            + tabular + "}\n\\end{center}")


def format_table(table, value_columns: list[str], better: str | dict, digits: int | dict, fmt: str,
                 labels: dict | None = None) -> str:
    """A configurations × images table as Markdown or LaTeX (booktabs), the best value of
    each value column in bold (``better``: ``max`` or ``min``, ``digits``: decimals; either
    one for all value columns or a dict per column; ties all bold). A missing value is an empty
    cell; ``labels`` maps column names to the header words shown."""
    if fmt not in ("md", "latex"):
        raise ValueError(f"format: {fmt!r} is invalid; allowed: md, latex")
    places = {c: digits[c] if isinstance(digits, dict) else digits for c in value_columns}
    rounded = {c: table[c].astype(float).round(places[c]) for c in value_columns}
    wanted = {c: better[c] if isinstance(better, dict) else better for c in value_columns}
    best = {c: rounded[c].max() if wanted[c] == "max" else rounded[c].min() for c in value_columns}
    bold = (lambda s: f"**{s}**") if fmt == "md" else (lambda s: f"\\textbf{{{s}}}")
    rows = []
    for i in range(len(table)):
        cells = []
        for c in table.columns:
            value = table[c].iloc[i]
            if c in value_columns:
                missing = value is None or np.isnan(value)
                text = "" if missing else f"{value:.{places[c]}f}"
                cells.append(bold(text) if not missing and round(value, places[c]) == best[c] else text)
            else:
                cells.append(str(value) if fmt == "md" else latex_escape(value))
        rows.append(cells)
    words = [str((labels or {}).get(c, c)) for c in table.columns]
    header = words if fmt == "md" else [latex_escape(c) for c in words]
    if fmt == "md":
        align = ["---:" if c in value_columns else "---" for c in table.columns]
        return "\n".join("| " + " | ".join(r) + " |" for r in [header, align, *rows])
    spec = "".join("r" if c in value_columns else "l" for c in table.columns)
    body = [" & ".join(r) + r" \\" for r in rows]
    return "\n".join([f"\\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}"])


def markdown_table(frame, digits: int = 2, style: str = "f", index: bool = True) -> str:
    """A pandas DataFrame as a GitHub Markdown table; floats as ``f"{v:.{digits}{style}}"``, NaN empty.

    With ``index`` the index is the first column (headed by its name).
    """

    def cell(value) -> str:
        if value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value)):
            return ""
        if isinstance(value, (float, np.floating)):
            return f"{value:.{digits}{style}}"
        return str(value)

    header = ([str(frame.index.name or "")] if index else []) + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for row in frame.itertuples(index=index):  # itertuples keeps each column's dtype (ints stay ints)
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def write_results(out: str | os.PathLike, rows: pd.DataFrame, curves: pd.DataFrame | None = None,
                  digits: int = 4) -> list[Path]:
    """Write an experiment's results folder, atomically, in the layout every results folder of archlab
    shares: :data:`RESULTS_CSV` (one row per run or configuration), :data:`TABLE_MD` (those rows as a
    Markdown table, ``digits`` significant digits) and, when given, :data:`CURVES_CSV` (one row per
    evaluation). Figures and a hand-written ``README.md`` sit beside them. Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in ((RESULTS_CSV, rows), (CURVES_CSV, curves)):
        if frame is not None:
            with atomic_path(out / name) as tmp:
                frame.to_csv(tmp, index=False)
            written.append(out / name)
    with atomic_path(out / TABLE_MD) as tmp:
        tmp.write_text(markdown_table(rows, digits, style="g", index=False) + "\n")
    return written[:1] + [out / TABLE_MD] + written[1:]
