"""Reading a study back: one row per trial × task × image, the curves, importances, and the report."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import optuna
import pandas as pd
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from archlab import report
from archlab.images import atomic_path
from archlab.studies.spec import EXTRA_METRICS, OBJECTIVES, _fail, resolve_target
from archlab.studies.worker import make_storage

#: Tables every report shows besides the objectives (paper 004 Fig. 4 and Table 1; paper 000 Fig. 5).
DEFAULT_METRICS = ("peak_psnr", "final_psnr", "peak_iteration", "stop_iteration", "final_fbc_high")


def open_existing(name: str, storage: str | None = None) -> optuna.Study:
    """The stored study ``name`` (a study name, shipped name or study file; storage as in :func:`resolve_target`)."""
    name, url = resolve_target(name, storage)
    try:
        return optuna.load_study(study_name=name, storage=make_storage(url))
    except KeyError:
        _fail("study", f"no study {name!r} in {url}")


def _study(source) -> optuna.Study:
    return source if isinstance(source, optuna.Study) else open_existing(source)


def load(name: str | optuna.Study, storage: str | None = None) -> pd.DataFrame:
    """One row per trial × task × image (metrics averaged over the seeds; ``seeds`` = how many).

    Columns: ``trial``, ``state``, the parameters, ``task``, ``image``, the objectives and
    ``final_fbc_high``, ``seeds``, ``fail_reason``, ``retry_of`` (the trial a retry re-runs,
    ``RetryHeartbeatStaleTrialCallback.retried_trial_number``) and ``worker``. Trials without
    results (failed, running, waiting) give one row with empty metrics.
    """
    study = name if isinstance(name, optuna.Study) else open_existing(name, storage)
    rows = []
    for t in study.get_trials(deepcopy=False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry_of = RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
        base = {"trial": t.number, "state": t.state.name, **t.params, "fail_reason": t.user_attrs.get("fail_reason"),
                "retry_of": retry_of, "worker": t.user_attrs.get("worker")}
        results = pd.DataFrame(t.user_attrs.get("results", []))
        if results.empty:
            rows.append(base)
            continue
        metrics = [c for c in [*OBJECTIVES, *EXTRA_METRICS] if c in results]
        grouped = results.groupby(["task", "image"], sort=False)
        means = grouped[metrics].mean().join(grouped.size().rename("seeds")).reset_index()
        rows += [{**base, **row} for row in means.to_dict("records")]
    return pd.DataFrame(rows)


def load_curves(name: str | optuna.Study, storage: str | None = None) -> pd.DataFrame:
    """Compact curves of the complete trials, long form: ``trial``, parameters, ``task``, ``image``,
    ``seed``, ``iteration``, ``psnr``, ``psnr_ema``, ``ratio``, ``fbc_low``, ``fbc_high``."""
    study = name if isinstance(name, optuna.Study) else open_existing(name, storage)
    frames = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        for curve in t.user_attrs.get("curves", []):
            series = {k: v for k, v in curve.items() if isinstance(v, list)}
            frames.append(pd.DataFrame(series).assign(trial=t.number, task=curve["task"], image=curve["image"],
                                                      seed=curve["seed"], **t.params))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def importances(name: str | optuna.Study, storage: str | None = None) -> dict[str, dict[str, float]]:
    """Parameter importances per objective: fANOVA (Hutter et al. 2014) via
    ``optuna.importance.get_param_importances`` with seed 0; objectives with too few trials are left out."""
    study = name if isinstance(name, optuna.Study) else open_existing(name, storage)
    out = {}
    for i, objective in enumerate(study.user_attrs["spec"]["objectives"]):
        with contextlib.suppress(ValueError, RuntimeError, ZeroDivisionError):
            values = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target=lambda t, i=i: t.values[i])
            if values:
                out[objective] = values
    return out


def _config(frame: pd.DataFrame, params: list[str]) -> pd.Series:
    if len(params) == 1:
        return frame[params[0]].astype(str)
    return frame[params].astype(str).apply(lambda row: ", ".join(f"{k}={v}" for k, v in row.items()), axis=1)


def _ordered(frame: pd.DataFrame, params: list[str], space: dict) -> pd.DataFrame:
    """Rows in the order of the study file's choices (numbers and strings in their natural order otherwise)."""
    def key(column: pd.Series) -> pd.Series:
        choices = space.get(column.name)
        if isinstance(choices, list):
            return column.map(lambda v: choices.index(v) if v in choices else len(choices))
        return column
    return frame.sort_values(params, key=key, kind="stable") if params else frame


def tables(trials: pd.DataFrame, spec: dict) -> dict[str, pd.DataFrame]:
    """Per metric, configurations × (task/)image means of the complete trials with a ``mean`` column."""
    params = list(spec["space"])
    done = trials[trials["state"] == "COMPLETE"].copy()
    several = done["task"].nunique() > 1
    done["column"] = done["task"] + "/" + done["image"] if several else done["image"]
    columns = list(dict.fromkeys(done["column"]))
    metrics = list(dict.fromkeys([*spec["objectives"], *(spec.get("metrics") or DEFAULT_METRICS)]))
    out = {}
    for metric in (m for m in metrics if m in done and done[m].notna().any()):
        table = done.pivot_table(index=params, columns="column", values=metric, aggfunc="mean", sort=False)
        table = table.reindex(columns=columns)
        table["mean"] = table.mean(axis=1)
        out[metric] = _ordered(table.reset_index(), params, spec["space"])
    return out


def _pareto(study: optuna.Study, spec: dict) -> tuple[pd.DataFrame, str, str] | None:
    names = list(spec["objectives"])
    if len(names) < 2:
        return None
    y = next((n for n in names if "psnr" in n), names[0])
    x = next((n for n in names if n != y and ("iteration" in n or n == "seconds")), next(n for n in names if n != y))
    front = {t.number for t in study.best_trials}
    rows = [{"trial": t.number, **t.params, **dict(zip(names, t.values)), "front": t.number in front}
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    frame = pd.DataFrame(rows)
    frame["config"] = _config(frame, list(spec["space"]))
    return frame, x, y


def write_report(name: str, storage: str | None = None, fmt: str = "md",
                 out_dir: str | os.PathLike = ".") -> list[Path]:
    """Write a study's report to ``out_dir``: ``md`` (report.md + PNG figures), ``latex``
    (report.tex + figures) or ``csv`` (trials.csv, table-<metric>.csv, importances/pareto CSVs).

    The tables are configurations × images with a mean column and the best value of each
    column in bold (paper 004 Table 1 / Fig. 4 style); the figures are PSNR and the highest
    FBC band against iteration per configuration, parameter importances, and for
    multi-objective studies the Pareto front (``study.best_trials``).
    """
    if fmt not in report.TABLE_FORMATS:
        _fail("format", f"{fmt!r} is invalid; allowed: {', '.join(report.TABLE_FORMATS)}")
    study = open_existing(name, storage)
    spec = study.user_attrs["spec"]
    trials = load(study)
    if "task" not in trials or not (trials["state"] == "COMPLETE").any():
        _fail("study", f"{study.study_name!r} has no complete trial to report yet")
    out, written = Path(out_dir), []
    out.mkdir(parents=True, exist_ok=True)
    per_metric, weights = tables(trials, spec), importances(study)
    pareto = _pareto(study, spec)

    def write(filename: str, text: str) -> None:
        with atomic_path(out / filename) as tmp:
            tmp.write_text(text, encoding="utf-8")
        written.append(out / filename)

    if fmt == "csv":
        write("trials.csv", trials.to_csv(index=False))
        for metric, table in per_metric.items():
            write(f"table-{metric}.csv", table.to_csv(index=False))
        if weights:
            write("importances.csv", pd.DataFrame(weights).rename_axis("parameter").to_csv())
        if pareto is not None:
            write("pareto.csv", pareto[0].to_csv(index=False))
        return written
    figures = _figures(study, spec, out, weights, pareto)
    written += list(figures.values())
    text = _document(study, spec, trials, per_metric, weights, pareto, figures, fmt)
    write("report.md" if fmt == "md" else "report.tex", text)
    return written


def _figures(study, spec, out: Path, weights: dict, pareto) -> dict[str, Path]:
    figures = {}
    curves = load_curves(study)
    if not curves.empty:
        params = list(spec["space"])
        curves["config"] = _config(curves, params)
        several = curves["task"].nunique() > 1
        curves["panel"] = curves["task"] + "/" + curves["image"] if several else curves["image"]
        order = _ordered(curves.drop_duplicates("config"), params, spec["space"])["config"].tolist()
        curves["config"] = pd.Categorical(curves["config"], categories=order, ordered=True)
        figures["curves"] = report.plot_curves(curves.sort_values("config", kind="stable"), out / "curves.png")
    if weights:
        figures["importances"] = report.plot_importances(weights, out / "importances.png")
    if pareto is not None:
        figures["pareto"] = report.plot_pareto(pareto[0], pareto[1], pareto[2], out / "pareto.png")
    return figures


def _document(study, spec, trials, per_metric, weights, pareto, figures, fmt: str) -> str:
    md = fmt == "md"
    head = (lambda s: f"## {s}") if md else (lambda s: f"\\subsection*{{{report.latex_escape(s)}}}")
    counts = trials.drop_duplicates("trial")["state"].value_counts().to_dict()
    lines = [f"# Study `{study.study_name}`" if md else f"\\section*{{Study {report.latex_escape(study.study_name)}}}",
             "", spec.get("description", "") if md else report.latex_escape(spec.get("description", "")), "",
             "Trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) + ". Objectives: "
             + ", ".join(f"{k} ({v})" for k, v in spec["objectives"].items()) + ".", ""]
    if md:
        lines += [f"Reproduce: `archlab study run {study.study_name}`, then "
                  f"`archlab study report {study.study_name} --format md -o DIR`.", ""]
    for metric, table in per_metric.items():
        better = "max" if {**OBJECTIVES, **EXTRA_METRICS}[metric] == "maximize" else "min"
        title = f"{report.METRIC_TITLES.get(metric, metric)} ({'higher' if better == 'max' else 'lower'} is better)"
        value_columns = [c for c in table.columns if c not in spec["space"]]
        body = report.format_table(table, value_columns, better, report.METRIC_DIGITS.get(metric, 2), fmt)
        lines += [head(title), "", body if md else f"\\begin{{center}}\n{body}\n\\end{{center}}", ""]
    captions = {"curves": "PSNR and the highest FBC band against iteration, per configuration (mean over seeds)",
                "importances": "Parameter importances (fANOVA)", "pareto": "Pareto front"}
    if weights:
        frame = pd.DataFrame(weights).rename_axis("parameter").reset_index()
        lines += [head("Parameter importances"), "", report.format_table(frame, list(weights), "max", 2, fmt), ""]
    if pareto is not None:
        front = pareto[0][pareto[0]["front"]].drop(columns=["front", "config"]).sort_values(pareto[1])
        names = list(spec["objectives"])
        directions = {n: "max" if d == "maximize" else "min" for n, d in spec["objectives"].items()}
        digits = {n: report.METRIC_DIGITS.get(n, 2) for n in names}
        lines += [head(f"Pareto front: {pareto[2]} against {pareto[1]}"), "",
                  report.format_table(front, names, directions, digits, fmt), ""]
    for key, path in figures.items():
        lines += [f"![{captions[key]}]({path.name})" if md else
                  f"\\begin{{figure}}[h]\\centering\\includegraphics[width=\\linewidth]{{{path.name}}}"
                  f"\\caption{{{captions[key]}}}\\end{{figure}}", ""]
    failed = trials[trials["state"] == "FAIL"].drop_duplicates("trial")
    if len(failed):
        frame = failed[["trial", *spec["space"], "fail_reason"]].fillna("heartbeat lost (worker killed)")
        lines += [head("Failed trials"), "", report.format_table(frame, [], "max", 0, fmt), ""]
    return "\n".join(lines).rstrip() + "\n"
