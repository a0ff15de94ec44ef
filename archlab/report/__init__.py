"""Reports: tables (Markdown, LaTeX, CSV) and figures (PNG, PDF, SVG), drawn from plain data.

:mod:`~archlab.report.tables` (one :func:`markdown_table`, LaTeX with booktabs, :func:`write_results`),
:mod:`~archlab.report.figures` (filters, a fit's curves, stop points, study curves, importances, Pareto
fronts) and :mod:`~archlab.report.spectral` (the papers' spectral figures); every public name is here.
Every results folder has one layout: ``results.csv`` (one row per run), ``table.md`` (its table),
``curves.csv`` or ``curves/`` (per evaluation), figures (``*.png`` or ``figures/``) and a ``README.md``.
"""

from archlab.report.figures import (
    CURVE_LABELS,
    FIGURE_FORMATS,
    FLOOR_DB,
    RULE_STYLES,
    plain_title,
    plot_curves,
    plot_filter_responses,
    plot_fit_curves,
    plot_importances,
    plot_pareto,
    plot_stop_points,
    save_figure,
)
from archlab.report.spectral import (
    BAND_NAMES,
    plot_fbc,
    plot_lipschitz_fbc,
    plot_radial_psd,
    plot_sinusoid,
    plot_trajectories,
)
from archlab.report.tables import (
    CURVES_CSV,
    LATEX_SYMBOLS,
    METRIC_DIGITS,
    METRIC_LABELS,
    METRIC_TITLES,
    PARAM_LABELS,
    RESULTS_CSV,
    TABLE_FORMATS,
    TABLE_MD,
    format_table,
    latex_escape,
    latex_table,
    markdown_table,
    write_results,
)

__all__ = [
    "BAND_NAMES", "CURVES_CSV", "CURVE_LABELS", "FIGURE_FORMATS", "FLOOR_DB", "LATEX_SYMBOLS", "METRIC_DIGITS", "METRIC_LABELS",
    "METRIC_TITLES", "PARAM_LABELS", "RESULTS_CSV", "RULE_STYLES", "TABLE_FORMATS", "TABLE_MD", "format_table", "latex_escape", "latex_table",
    "markdown_table", "plain_title", "plot_curves", "plot_fbc", "plot_filter_responses", "plot_fit_curves",
    "plot_importances", "plot_lipschitz_fbc", "plot_pareto", "plot_radial_psd", "plot_sinusoid", "plot_stop_points",
    "plot_trajectories", "save_figure", "write_results",
]
