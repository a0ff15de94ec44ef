"""Reading a study back: one row per trial × task × image, the curves, importances, and the report."""

from __future__ import annotations

import contextlib
import os
import shlex
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from archlab import learnt, report
from archlab.checks import fail
from archlab.fitting import FitSettings
from archlab.images import atomic_path
from archlab.studies.files import shipped, study_file
from archlab.studies.spec import EXTRA_METRICS, OBJECTIVES, StudySpec, resolve_target
from archlab.studies.storage import artifacts_dir, make_storage, shown
from archlab.studies.worker import curve_frame, observations, trial_results

#: Tables every report shows besides the objectives (paper 004 Fig. 4 and Table 1; paper 000 Fig. 5).
DEFAULT_METRICS = ("peak_psnr", "final_psnr", "peak_iteration", "stop_iteration", "final_fbc_high")
#: Fewest complete trials for parameter importances (fANOVA's random forest fitted on fewer is noise).
MIN_IMPORTANCE_TRIALS = 10


def open_existing(name: str, storage: str | None = None) -> optuna.Study:
    """The stored study ``name`` (a study name, shipped name or study file; storage as in :func:`resolve_target`)."""
    name, url = resolve_target(name, storage)
    try:
        return optuna.load_study(study_name=name, storage=make_storage(url))
    except KeyError:
        fail("study", f"no study {name!r} in {url}")


def _storage_url(study: optuna.Study) -> str | None:
    """The URL of a study's RDB storage (None for other storages)."""
    backend = getattr(study._storage, "_backend", study._storage)
    return getattr(backend, "url", None)


def load(name: str | optuna.Study, storage: str | None = None) -> pd.DataFrame:
    """One row per trial × task × image (metrics averaged over the seeds; ``seeds`` = how many).

    Columns: ``trial``, ``state``, the parameters, ``task``, ``image``, the objectives and
    ``final_fbc_high``, ``seeds``, ``stops`` (how many of the fits the ratio rule stopped;
    ``stop_iteration`` averages those and is empty where it never fired), ``fail_reason``,
    ``retry_of`` (the trial a retry re-runs, ``RetryHeartbeatStaleTrialCallback.retried_trial_number``)
    and ``worker``. Trials without results (failed, running, waiting) give one row with empty metrics.
    """
    study = name if isinstance(name, optuna.Study) else open_existing(name, storage)
    rows = []
    for t in study.get_trials(deepcopy=False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry_of = RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
        base = {"trial": t.number, "state": t.state.name, **t.params, "fail_reason": t.user_attrs.get("fail_reason"),
                "retry_of": retry_of, "worker": t.user_attrs.get("worker")}
        results = pd.DataFrame(trial_results(t))
        if results.empty:
            rows.append(base)
            continue
        metrics = [c for c in [*OBJECTIVES, *EXTRA_METRICS] if c in results]
        results[metrics] = results[metrics].apply(pd.to_numeric, errors="coerce")
        if "stopped" in results:  # where the rule never fired there is no stop iteration
            results["stopped"] = results["stopped"].astype(bool)
            results.loc[~results["stopped"], "stop_iteration"] = np.nan
        grouped = results.groupby(["task", "image"], sort=False)
        means = grouped[metrics].mean().join(grouped.size().rename("seeds"))
        if "stopped" in results:
            means = means.join(grouped["stopped"].sum().rename("stops"))
        rows += [{**base, **row} for row in means.reset_index().to_dict("records")]
    return pd.DataFrame(rows)


def load_curves(name: str | optuna.Study, storage: str | None = None,
                artifacts: str | os.PathLike | None = None) -> pd.DataFrame:
    """The fit histories of the complete trials, long form: ``trial``, parameters, ``run``, ``task``,
    ``image``, ``seed``, ``iteration``, ``psnr``, ``psnr_ema``, ``ratio``, ``fbc_0`` ..., ``fbc_low``,
    ``fbc_high`` (the lowest and highest FBC band), read from each trial's ``-curves.csv`` artifact
    (``artifacts``: the artifact folder, default :func:`~archlab.studies.artifacts_dir` of the storage).
    A retry's fits that it kept from the interrupted trials before it come from those trials' artifacts.
    Empty when the artifacts are not there."""
    study = name if isinstance(name, optuna.Study) else open_existing(name, storage)
    url = storage or _storage_url(study)
    store_dir = artifacts_dir(url, artifacts) if url or artifacts else None
    if store_dir is None or not store_dir.is_dir():
        return pd.DataFrame()
    store = FileSystemArtifactStore(str(store_dir))
    frames = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        trials = study.get_trials(deepcopy=False)
        for t in (t for t in trials if t.state == TrialState.COMPLETE):
            attempts = [t, *(trials[n] for n in reversed(RetryHeartbeatStaleTrialCallback.retry_history(t)))]
            seen: set[int] = set()
            for attempt in attempts:  # the latest first: a run refitted after an interruption replaces its curve
                curves = [c for c in _curve_artifacts(attempt, study, store) if len(c)]
                runs = set().union(*(set(c["run"]) for c in curves))
                frames += [c[~c["run"].isin(seen)].assign(trial=t.number, **t.params) for c in curves]
                seen |= runs
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _curve_artifacts(trial: optuna.trial.FrozenTrial, study: optuna.Study,
                     store: FileSystemArtifactStore) -> list[pd.DataFrame]:
    """The ``-curves.csv`` artifacts uploaded for one trial, with their FBC extremes (:func:`curve_frame`)."""
    frames = []
    for meta in (m for m in get_all_artifact_meta(trial, storage=study._storage) if m.filename.endswith("-curves.csv")):
        with contextlib.suppress(OSError, optuna.artifacts.exceptions.ArtifactNotFound):
            with store.open_reader(meta.artifact_id) as reader:
                frames.append(curve_frame(pd.read_csv(reader)))
    return frames


def importance_note(study: optuna.Study) -> str | None:
    """Why parameter importances are not computed for ``study`` (None when they are): fewer than
    :data:`MIN_IMPORTANCE_TRIALS` complete trials, or fewer than two parameters that vary."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = [name for name in {k for t in trials for k in t.params}
              if len({repr(t.params.get(name)) for t in trials}) > 1]
    if len(trials) < MIN_IMPORTANCE_TRIALS:
        return (f"not computed: {len(trials)} complete trials; fANOVA's random forest needs at least "
                f"{MIN_IMPORTANCE_TRIALS} to say more than noise")
    if len(varied) < 2:
        return "not computed: fewer than two parameters vary (one parameter's importance is 1 by definition)"
    return None


def importances(name: str | optuna.Study, storage: str | None = None) -> dict[str, dict[str, float]]:
    """Parameter importances per objective: fANOVA (Hutter et al. 2014) via
    ``optuna.importance.get_param_importances`` with seed 0; empty when :func:`importance_note` says
    they are not computed; objectives fANOVA cannot rank are left out."""
    study = name if isinstance(name, optuna.Study) else open_existing(name, storage)
    if importance_note(study) is not None:
        return {}
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
    """Per metric, configurations × (task/)image means of the complete trials with a ``mean`` column.

    The ``stop_iteration`` table averages the fits the ratio rule stopped (a cell is empty where it
    never fired) and adds the column :data:`FIRED`: fits stopped / fits, per configuration."""
    params = list(spec["space"])
    done = trials[trials["state"] == "COMPLETE"].copy()
    several = done["task"].nunique() > 1
    done["column"] = done["task"] + "/" + done["image"] if several else done["image"]
    columns = list(dict.fromkeys(done["column"]))
    metrics = list(dict.fromkeys([*spec["objectives"], *(spec.get("metrics") or DEFAULT_METRICS)]))
    out = {}
    for metric in (m for m in metrics if m in done and (m == "stop_iteration" or done[m].notna().any())):
        grouped = done.groupby([*params, "column"], sort=False, dropna=False)
        table = grouped[metric].mean().unstack("column").reindex(columns=columns)
        table["mean"] = table.mean(axis=1)
        if metric == "stop_iteration" and "stops" in done:
            counts = done.groupby(params, sort=False, dropna=False)[["stops", "seeds"]].sum()
            table[FIRED] = [f"{int(a)}/{int(b)}" for a, b in counts.reindex(table.index).to_numpy()]
        out[metric] = _ordered(table.reset_index(), params, spec["space"])
    return out


#: Column of the ``stop_iteration`` table: how many of a configuration's fits the ratio rule stopped.
FIRED = "rule fired"


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


def reproduce_command(source: str | os.PathLike, storage: str | None = None) -> str | None:
    """The ``archlab study run`` command that runs ``source`` again: a study file by its path (relative
    to the current folder when inside it), a shipped study by its name; ``--storage`` (password hidden)
    when one was given. None for a study known only by its name in a storage."""
    text = str(source)
    if text.endswith(".toml") or Path(text).is_file():
        path = study_file(text).resolve()
        target = os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    elif text in shipped():
        target = text
    else:
        return None
    command = f"archlab study run {shlex.quote(target)}"
    if storage:
        command += f" --storage {shlex.quote(shown(storage))}"
    return command


def write_report(name: str, storage: str | None = None, fmt: str = "md", out_dir: str | os.PathLike = ".", *,
                 figure_format: str = "png", standalone: bool = False,
                 artifacts: str | os.PathLike | None = None) -> list[Path]:
    """Write a study's report to ``out_dir``, a results folder (:func:`archlab.report.write_results`):
    ``md`` (table.md + figures), ``latex`` (table.tex + figures: a fragment to ``\\input``, needing
    ``booktabs`` and ``graphicx``, or with ``standalone`` a document that compiles on its own) or ``csv``
    (results.csv with a row per trial, table-<metric>.csv, importances/pareto CSVs).

    The tables are configurations × images with a mean column and the best value of each
    column in bold (paper 004 Table 1 / Fig. 4 style); the figures (``figure_format``: png, pdf or
    svg; LaTeX takes png or pdf) are PSNR and the highest FBC band against iteration per
    configuration (the mean over seeds, their range shaded), parameter importances (from
    :data:`MIN_IMPORTANCE_TRIALS` complete trials and two varied parameters on), and for
    multi-objective studies the Pareto front (``study.best_trials``). The curves come from the
    trials' artifacts (``artifacts``: their folder, default as for the run).
    """
    if fmt not in report.TABLE_FORMATS:
        fail("format", f"{fmt!r} is invalid; allowed: {', '.join(report.TABLE_FORMATS)}")
    allowed = report.FIGURE_FORMATS if fmt != "latex" else ("png", "pdf")
    if figure_format not in allowed:
        fail("figure_format", f"{figure_format!r} is invalid with format {fmt}; allowed: {', '.join(allowed)}")
    if standalone and fmt != "latex":
        fail("standalone", f"only for format latex, not {fmt}")
    study = open_existing(name, storage)
    spec = study.user_attrs["spec"]
    trials = load(study)
    if "task" not in trials or not (trials["state"] == "COMPLETE").any():
        fail("study", f"{study.study_name!r} has no complete trial to report yet")
    out, written = Path(out_dir), []
    out.mkdir(parents=True, exist_ok=True)
    per_metric, weights = tables(trials, spec), importances(study)
    pareto = _pareto(study, spec)

    def write(filename: str, text: str) -> None:
        with atomic_path(out / filename) as tmp:
            tmp.write_text(text, encoding="utf-8")
        written.append(out / filename)

    if fmt == "csv":
        write(report.RESULTS_CSV, trials.to_csv(index=False))
        for metric, table in per_metric.items():
            write(f"table-{metric}.csv", table.to_csv(index=False))
        if weights:
            write("importances.csv", pd.DataFrame(weights).rename_axis("parameter").to_csv())
        if pareto is not None:
            write("pareto.csv", pareto[0].to_csv(index=False))
        return written
    curves = load_curves(study, resolve_target(name, storage)[1], artifacts)
    figures = _figures(spec, out, curves, weights, pareto, figure_format)
    written += list(figures.values())
    context = {"reproduce": reproduce_command(name, storage), "importance_note": importance_note(study),
               "curves_missing": curves.empty, "format": fmt}
    text = _document(study, spec, trials, per_metric, weights, pareto, figures, context)
    if fmt == "latex":
        text = _latex_document(text, standalone)
    write(report.TABLE_MD if fmt == "md" else Path(report.TABLE_MD).with_suffix(".tex").name, text)
    return written


def _figures(spec, out: Path, curves: pd.DataFrame, weights: dict, pareto, ext: str) -> dict[str, Path]:
    figures = {}
    if not curves.empty:
        params = list(spec["space"])
        curves["config"] = _config(curves, params)
        several = curves["task"].nunique() > 1
        curves["panel"] = curves["task"] + "/" + curves["image"] if several else curves["image"]
        order = _ordered(curves.drop_duplicates("config"), params, spec["space"])["config"].tolist()
        curves["config"] = pd.Categorical(curves["config"], categories=order, ordered=True)
        figures["curves"] = report.plot_curves(curves.sort_values("config", kind="stable"), out / f"curves.{ext}",
                                               band="seed")
    if weights:
        figures["importances"] = report.plot_importances(
            {report.METRIC_LABELS.get(k, k): v for k, v in weights.items()}, out / f"importances.{ext}")
    if pareto is not None:
        figures["pareto"] = report.plot_pareto(pareto[0], pareto[1], pareto[2], out / f"pareto.{ext}")
    return figures


def _document(study, spec, trials, per_metric, weights, pareto, figures, context: dict) -> str:
    md = context["format"] == "md"
    text = (lambda s: s) if md else report.latex_escape
    head = (lambda s: f"## {s}") if md else (lambda s: f"\\subsection*{{{report.latex_escape(s)}}}")
    code = (lambda s: f"`{s}`") if md else (lambda s: f"\\texttt{{{report.latex_escape(s)}}}")
    words = {**report.PARAM_LABELS, **report.METRIC_LABELS}
    counts = trials.drop_duplicates("trial")["state"].value_counts().to_dict()
    directions = {"maximize": "higher is better", "minimize": "lower is better"}
    lines = [f"# Study `{study.study_name}`" if md else f"\\section*{{Study {report.latex_escape(study.study_name)}}}",
             "", text(spec.get("description", "")), "",
             text("Trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) + ". Objectives: "
                  + "; ".join(f"{report.METRIC_LABELS.get(k, k)}, {directions[v]}"
                              for k, v in spec["objectives"].items()) + "."), ""]
    again = context["reproduce"]
    flags = f"--format {context['format']} -o DIR"
    if again:
        report_command = again.replace("archlab study run", "archlab study report", 1) + " " + flags
        lines += [f"Reproduce: `{again}`, then `{report_command}`." if md else
                  f"Reproduce:\n\\begin{{quote}}\n{code(again)}\\\\\n{code(report_command)}\n\\end{{quote}}", ""]
    else:
        lines += [text(f"Reproduce: run the study file that defined {study.study_name!r} with ") +
                  code("archlab study run FILE.toml --storage URL") +
                  text(" (the definition is stored in the study's user attribute 'definition')."), ""]
    for metric, table in per_metric.items():
        better = "max" if {**OBJECTIVES, **EXTRA_METRICS}[metric] == "maximize" else "min"
        title = f"{report.METRIC_TITLES.get(metric, metric)} ({'higher' if better == 'max' else 'lower'} is better)"
        value_columns = [c for c in table.columns if c not in spec["space"] and c != FIRED]
        body = report.format_table(table, value_columns, better, report.METRIC_DIGITS.get(metric, 2),
                                   context["format"], labels=words)
        lines += [head(title), "", _table(body, md), ""]
        if metric == "stop_iteration" and FIRED in table:
            done = trials[trials["state"] == "COMPLETE"]
            fired, fits = int(done["stops"].sum()), int(done["seeds"].sum())
            lines += [text(f"The ratio rule fired in {fired} of {fits} fits; the cells average the fits it "
                           "stopped, and a blank cell means it never fired there (those fits ran all their "
                           "iterations)."), ""]
        if metric == "stop_psnr":
            lines += [text("Where the ratio rule never fired, the PSNR of the last iterate (the output the fit "
                           "ends with)."), ""]
    captions = {"curves": "PSNR and the highest FBC band against iteration, per configuration (the mean over seeds; "
                          "shaded: their range, where there are several)",
                "importances": "Parameter importances (fANOVA)", "pareto": "Pareto front"}
    n_complete = int((trials.drop_duplicates("trial")["state"] == "COMPLETE").sum())
    if weights:
        frame = pd.DataFrame(weights).rename_axis("parameter").reset_index()
        lines += [head("Parameter importances"), "",
                  text(f"fANOVA (random forest, seed 0) on {n_complete} complete trials; importances from few trials "
                       "move with the seed and the trials, read them as a ranking, not as measured shares."), "",
                  _table(report.format_table(frame, list(weights), "max", 2, context["format"], labels=words), md), ""]
    elif context["importance_note"]:
        note = context["importance_note"]
        lines += [head("Parameter importances"), "", text(f"{note[0].upper()}{note[1:]}."), ""]
    if pareto is not None:
        front = pareto[0][pareto[0]["front"]].drop(columns=["front", "config"]).sort_values(pareto[1])
        names = list(spec["objectives"])
        directions_short = {n: "max" if d == "maximize" else "min" for n, d in spec["objectives"].items()}
        digits = {n: report.METRIC_DIGITS.get(n, 2) for n in names}
        title = (f"Pareto front: {report.METRIC_LABELS.get(pareto[2], pareto[2])} against "
                 f"{report.METRIC_LABELS.get(pareto[1], pareto[1])}")
        body = report.format_table(front, names, directions_short, digits, context["format"], labels=words)
        lines += [head(title), "", _table(body, md), ""]
    if context["curves_missing"]:
        lines += [text("No curves figure: the trials' curve artifacts were not found (give their folder with "
                       "--artifacts)."), ""]
    for key, path in figures.items():
        lines += [f"![{captions[key]}]({path.name})" if md else
                  f"\\begin{{figure}}[htbp]\\centering\\includegraphics[width=\\linewidth]{{{path.name}}}"
                  f"\\caption{{{report.latex_escape(captions[key])}}}\\end{{figure}}", ""]
    failed = trials[trials["state"] == "FAIL"].drop_duplicates("trial")
    if len(failed):
        frame = failed[["trial", *spec["space"], "fail_reason"]].fillna("heartbeat lost (worker killed)")
        body = report.format_table(frame, [], "max", 0, context["format"], labels={**words, "fail_reason": "reason"})
        lines += [head("Failed trials"), "", _table(body, md), ""]
    return "\n".join(lines).rstrip() + "\n"


def _table(body: str, md: bool) -> str:
    return body if md else report.latex_table(body)


def _latex_document(body: str, standalone: bool) -> str:
    """The LaTeX report: a fragment (``\\input`` it where ``booktabs`` and ``graphicx`` are loaded) or,
    with ``standalone``, an article that compiles with pdflatex, xelatex or lualatex."""
    if not standalone:
        return ("% archlab study report: \\input{report} in a document that loads booktabs and graphicx;\n"
                "% the figures are beside this file.\n" + body)
    return "\n".join([r"\documentclass[10pt]{article}", r"\usepackage[utf8]{inputenc}", r"\usepackage[T1]{fontenc}",
                      r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\setlength{\parindent}{0pt}",
                      r"\setlength{\parskip}{0.5em}", r"\begin{document}", body.rstrip(), r"\end{document}", ""])


def learning_table(study, storage: str | None = None) -> pd.DataFrame:
    """The rows a recommendation learns from: one per (configuration, task, image) of a study's complete trials, with
    the PSNR at the automatic stop, the seconds, and the features of the image as the study observed it
    (:func:`archlab.learnt.image_features`).

    Parameters
    ----------
    study : str or optuna.Study
        A study name, shipped study or study file (see :func:`load`), whose search space
        holds the parameters of :data:`archlab.learnt.CONFIG_COLUMNS` (fixed ones are read from its ``[arch]``/``[fit]``,
        else :class:`~archlab.fitting.FitSettings`' defaults; so are a parameter's values in trials that did not
        search it).
    storage : str, optional
        Its storage URL.

    Returns
    -------
    pandas.DataFrame
        ``task``, ``image``, :data:`archlab.learnt.CONFIG_COLUMNS`, ``stop_psnr``, ``seconds``,
        ``cpu_seconds`` (where the study recorded it; empty for fits that did not) and
        :data:`archlab.learnt.FEATURES`.
    """
    study = study if isinstance(study, optuna.Study) else open_existing(study, storage)
    spec = StudySpec.from_dict(study.user_attrs["spec"])
    rows = load(study)
    complete = rows["state"] == optuna.trial.TrialState.COMPLETE.name  # a running or killed trial saw only some images
    rows = rows[complete & rows["stop_psnr"].notna() & rows["seconds"].notna()]
    fixed = {**asdict(FitSettings()), **spec.arch.to_dict(), **dict(spec.fit)}
    for column in learnt.CONFIG_COLUMNS:
        if column in fixed:  # searched in some trials or none: the fixed value wherever a trial has none
            rows = rows.assign(**{column: rows[column].fillna(fixed[column]) if column in rows else fixed[column]})
        elif column not in rows or rows[column].isna().any():
            fail("study", f"{study.study_name!r} neither searches nor sets {column!r}")
    features = {(obs.task_label, obs.image): learnt.image_features(obs.observation.y)
                for obs in observations(spec)}
    times = ["seconds", "cpu_seconds"] if "cpu_seconds" in rows else ["seconds"]
    table = rows[["task", "image", *learnt.CONFIG_COLUMNS, "stop_psnr", *times]].reset_index(drop=True)
    values = pd.DataFrame([features[key] for key in zip(table["task"], table["image"])], index=table.index)
    return pd.concat([table, values], axis=1)
