"""Reproductions of the papers' fixed experiments, written as tables anyone can rerun.

Each experiment fits a list of (configuration, image) runs and appends one CSV row per
run as soon as it finishes, so an interrupted reproduction resumes where it stopped;
the Markdown table is rebuilt from the CSV. Commands: ``archlab reproduce NAME -o DIR``.
The experiments themselves (their runs) are :mod:`archlab.reproductions`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from archlab import images, learnt, metrics, models, recommend, report, restoration, stopping, tasks
from archlab.fitting import AUTO_STOP, RULES
from archlab.reproductions import AUTO, DIP_BASELINE, EXPERIMENTS, STOPPING_FITS, STOPPING_TASKS, Run, short_name


def load_clean(run: Run) -> torch.Tensor:
    """The clean image of a run: dataset file (or built-in), downscaled, cropped to the architecture
    (:func:`archlab.restoration.clean_image`)."""
    source = run.image if run.image in images.builtin_names() else images.datasets_root() / run.image
    task = tasks.task_from_dict(run.task)
    spec = recommend.crop_spec(task) if run.arch == AUTO else models.load_spec(run.arch)
    multiple = restoration.multiple_for(spec, task)
    return restoration.clean_image(source, scale=1 / run.downscale if run.downscale > 1 else None,
                                   crop=(run.size, run.size) if run.size else None, multiple=multiple,
                                   method=run.resize)


def read_rows(csv: Path) -> pd.DataFrame:
    """The rows so far; configuration and image names stay strings (an image named ``0000`` is not 0)."""
    return pd.read_csv(csv, dtype={"config": str, "image": str}) if csv.exists() else pd.DataFrame()


def _finished(csv: Path) -> set[str]:
    done = read_rows(csv)
    return set(done["config"] + "|" + done["image"]) if len(done) else set()


def slug(key: str) -> str:
    """``key`` (a run's ``config|image`` or a task label) as a file name: runs of other characters than
    letters, digits and ``._=-`` become one ``_``, none at either end."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", key).strip("_")


@contextlib.contextmanager
def _claim(out: Path, key: str):
    """Claim run ``key`` for this process (a file holding its PID), so that processes sharing ``out``
    split the runs; a claim whose process has died is taken over. Yields whether the claim is ours."""
    path = out / "claims" / (slug(key) + ".pid")
    path.parent.mkdir(exist_ok=True)
    with open(out / "claims.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            try:
                os.kill(int(path.read_text()), 0)
                yield False
                return
            except (ValueError, ProcessLookupError):
                pass
        path.write_text(str(os.getpid()))
    try:
        yield True
    finally:
        path.unlink(missing_ok=True)


def _append_row(csv: Path, row: dict) -> pd.DataFrame:
    """Append ``row`` to ``csv`` (atomically, under a lock, rereading rows other processes added)."""
    with open(csv.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = read_rows(csv)
        done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
        with images.atomic_path(csv) as tmp:
            done.to_csv(tmp, index=False)
    return done


#: Iterations at which a row keeps the PSNR of the network output (the papers' curves are quoted there).
CHECKPOINTS = (250, 500, 1000, 2000, 3000, 4000)


def execute(run: Run, device: str = "auto", fast: bool = False, trajectory: Path | None = None,
            curve: Path | None = None) -> dict:
    """Fit one run and return its table row (PSNRs against the clean image; per stop rule of
    :data:`archlab.fitting.RULES` where it detected, stopped, and the PSNR of its output).

    ``fast=False`` (the default) fits in eager fp32. With ``trajectory`` the network's output at every
    evaluation is saved there (``.npz``: ``iteration`` and ``output`` as float16), for measures computed
    after the fit (stopping rules, their calibration); with ``curve`` the PSNR of the output and of its
    EMA at every evaluation (CSV).
    """
    task = tasks.task_from_dict(run.task)
    x = load_clean(run)
    observation = task.observe(x, seed=run.seed)
    y, reference = observation.y, observation.reference
    arch, settings = run.arch, dict(run.fit)
    if arch == AUTO:  # as `restore --arch auto`: the recommendation for the observation, its fit settings too
        advice = recommend.recommend(y, task=task)
        arch, settings = advice.spec.to_dict(), {**settings, **advice.fit}
    frames: list[tuple[int, torch.Tensor]] = []
    if trajectory is not None and run.restarts > 1:
        raise ValueError(f"{run.config}: trajectories are recorded for one fit; this run averages {run.restarts}")
    record = (lambda i, out: frames.append((i, out.detach().to("cpu", torch.float16)))) if trajectory else None
    mean, fits = restoration.fit_restarts(arch, task, observation, run.restarts, seed=run.seed, device=device,
                                          progress=False, fast=fast, on_evaluation=record, **settings)
    result = fits[0]
    if trajectory is not None:
        with images.atomic_path(trajectory) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, iteration=np.array([i for i, _ in frames]),
                                output=torch.cat([o for _, o in frames]).numpy(), observation=y.numpy(),
                                reference=reference.numpy())
    if curve is not None:
        with images.atomic_path(curve) as tmp:
            result.history[["iteration", "psnr", "psnr_ema"]].to_csv(tmp, index=False, float_format="%.4f")
    s = result.summary()
    row = {"config": run.config, "image": short_name(run.image), "size": f"{x.shape[-1]}x{x.shape[-2]}",
           "observation_psnr": math.nan if result.observation_psnr is None else result.observation_psnr,
           "peak_psnr": s["peak_psnr"], "peak_iteration": s["peak_iteration"], "final_psnr": s["final_psnr"],
           "peak_psnr_ema": s["peak_psnr_ema"], "final_psnr_ema": s["final_psnr_ema"],
           "stop_iteration": s["auto_stop_iteration"], "stop_psnr": s.get("stop_psnr", math.nan),
           "iterations": s["iterations"], "stop_reason": s["stop_reason"], "seconds": s["seconds"],
           "cpu_seconds": s["cpu_seconds"], "engine": result.settings["precision"],
           "lipschitz": result.spec.get("lipschitz"), "stop_rule": s["stop_rule"], "rules": " ".join(result.rules)}
    row.update({key: value for key, value in s.items() if key.startswith(tuple(f"{rule}_" for rule in RULES))})
    psnr = result.history.set_index("iteration")["psnr"] if "psnr" in result.history else None
    for checkpoint in CHECKPOINTS:
        if psnr is not None and checkpoint in psnr.index:
            row[f"psnr_{checkpoint}"] = float(psnr[checkpoint])
    if run.restarts > 1:  # the mean is what the configuration returns; the other columns are the first fit's
        row.update(stop_psnr=float(metrics.psnr(mean, reference)), seconds=round(sum(f.seconds for f in fits), 2),
                   cpu_seconds=round(sum(f.cpu_seconds for f in fits), 2), fits=len(fits))
    if run.arch == AUTO:
        row["chosen"] = " ".join(f"{k}={result.spec.get(k, result.settings.get(k))}"
                                 for k in learnt.CONFIG_COLUMNS)
    if task.name == "enhance":
        row["sharpness_observed"] = float(stopping.mlv_sharpness(y))
        row["sharpness_restored"] = float(stopping.mlv_sharpness(result.output))
    return row


def run_experiment(name: str, out: str | Path, device: str = "auto", only: str | None = None,
                   fast: bool = False, log=print, trajectories: bool = False) -> pd.DataFrame:
    """Run (or resume) experiment ``name``, appending rows to ``out/results.csv``; return the table.

    Processes that share ``out`` split the runs: each claims a run before fitting it
    (``out/claims/``) and appends its row under a file lock; ``only`` restricts a process to
    one configuration.
    The fits run in eager fp32 (the reference precision of every published number); ``fast``
    runs them on archlab's engine instead (:func:`archlab.engine.fast_settings`). The engine used
    is recorded in every row. ``trajectories`` saves each fit's outputs at every evaluation to
    ``out/trajectories/`` (see :func:`execute`).
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"reproduce: unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    every = EXPERIMENTS[name]()
    runs = [r for r in every if only is None or r.config == only]
    if not runs:
        configs = ", ".join(dict.fromkeys(r.config for r in every))
        raise ValueError(f"reproduce: no run of {name} has configuration {only!r}; configurations: {configs}")
    _check_sources(name, runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / report.RESULTS_CSV
    finished = _finished(csv)
    keys = {f"{run.config}|{short_name(run.image)}" for run in runs}
    with images.atomic_path(out / "runs.json") as tmp:
        tmp.write_text(json.dumps([r.__dict__ | {"fast": fast} for r in every], indent=2))
    for run in runs:
        key = f"{run.config}|{short_name(run.image)}"
        if key in finished:
            continue
        with _claim(out, key) as mine:
            if not mine or key in _finished(csv):
                continue
            path = None
            if trajectories:
                path = out / "trajectories" / (slug(key) + ".npz")
                path.parent.mkdir(exist_ok=True)
            curve = out / "curves" / (slug(key) + ".csv")
            curve.parent.mkdir(exist_ok=True)
            row = execute(run, device, fast=fast, trajectory=path, curve=curve)
            table = _append_row(csv, row)
        done = table[(table["config"] + "|" + table["image"]).isin(keys)]
        left = len(keys) - len(done)
        eta = f", about {left * done['seconds'].mean() / 60:.0f} min of fits left" if left else ""
        log(f"[{len(done)}/{len(keys)}] {run.config} {row['image']}: peak {row['peak_psnr']:.2f} @ "
            f"{row['peak_iteration']}, final {row['final_psnr']:.2f}, {row['seconds']:.0f} s{eta}")
    return read_rows(csv)


def _datasets(runs: list[Run]) -> list[str]:
    return sorted({Path(run.image).parts[0] for run in runs if run.image not in images.builtin_names()})


def _check_sources(name: str, runs: list[Run]) -> None:
    """Fail before anything is written when an image of the runs is missing (naming the datasets)."""
    if not _datasets(runs):  # built-in images only
        return
    needed = ", ".join(_datasets(runs))
    try:
        root = images.datasets_root()
    except ValueError:
        raise ValueError(f"reproduce {name}: needs the shared datasets ({needed}); none found - set "
                         f"ARCHLAB_DATASETS to the folder that holds them (or place it at ../shared/datasets)") from None
    missing = [run.image for run in runs if run.image not in images.builtin_names() and not (root / run.image).is_file()]
    if missing:
        raise ValueError(f"reproduce {name}: {missing[0]} not found under {root} ({len(missing)} image(s) missing; "
                         f"it needs {needed})")


_ITERATIONS = ("peak_iteration", "stop_iteration", "iterations")


def _with_mean(group: pd.DataFrame) -> pd.DataFrame:
    """Rows per image plus their mean; iteration counts as integers."""
    frame = pd.concat([group, group.mean(numeric_only=True).rename("mean").to_frame().T])
    for col in _ITERATIONS:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").round().astype("Int64")
    return frame


def _generic_text(table: pd.DataFrame) -> str:
    cols = ["observation_psnr", "peak_psnr", "peak_iteration", "final_psnr", "peak_psnr_ema", "final_psnr_ema",
            "stop_iteration", "stop_psnr", "iterations", "seconds"]
    return "\n\n".join(f"### {config}\n\n" + report.markdown_table(_with_mean(group.set_index("image")[cols]))
                        for config, group in table.groupby("config", sort=False)) + "\n"


#: The papers' own code run on the same images and noise (REFERENCE §5b; fp32, seed 0): the oracle peak of
#: Ulyanov et al.'s ``skip`` network, and paper 000's ``decoder`` (λ 2, Gaussian) at the checkpoints.
REFERENCE_CODE = {
    "ulyanov-dip": {"Baboon": {"peak_psnr": 24.85}, "F16": {"peak_psnr": 26.59}, "House": {"peak_psnr": 27.27},
                    "Peppers": {"peak_psnr": 26.19}},
    "shi-decoder": {"F16": dict(zip((f"psnr_{c}" for c in CHECKPOINTS), (24.25, 25.85, 26.75, 27.21, 27.45, 27.60))),
                    "Peppers": dict(zip((f"psnr_{c}" for c in CHECKPOINTS),
                                        (24.42, 25.99, 27.05, 27.31, 27.68, 27.66)))},
}


def _denoise_set9_text(table: pd.DataFrame) -> str:
    """Per configuration: the oracle peak and the last iterate (raw and EMA), the PSNR at the checkpoints,
    and the papers' own code on the same images beside them. Where the stop rules stop is replayed from the
    trajectories (``benchmarks/stop_rules.py``), the same way for every run."""
    parts = []
    for config, group in table.groupby("config", sort=False):
        group = group.set_index("image")
        cols = ["observation_psnr", "peak_psnr", "peak_iteration", "final_psnr", "peak_psnr_ema", "final_psnr_ema",
                "lipschitz", "seconds", "engine"]
        frame = group[[c for c in cols if c in group]].copy()
        frame.insert(frame.columns.get_loc("final_psnr") + 1, "drop", frame["peak_psnr"] - frame["final_psnr"])
        reference = REFERENCE_CODE.get(config, {})
        if config == "ulyanov-dip":
            frame.insert(2, "their code: peak", [reference.get(i, {}).get("peak_psnr", math.nan) for i in frame.index])
        parts.append(f"### {config}\n\n" + report.markdown_table(_with_mean(frame)))
        checkpoints = [c for c in (f"psnr_{k}" for k in CHECKPOINTS) if c in group]
        if checkpoints and config != "ulyanov-dip":
            curve = group[checkpoints].copy()
            curve.columns = [c.removeprefix("psnr_") for c in checkpoints]
            rows = []
            for image, values in curve.iterrows():
                rows.append(values.rename(f"{image}"))
                if image in reference:
                    theirs = pd.Series({c.removeprefix("psnr_"): v for c, v in reference[image].items()})
                    rows.append(theirs.reindex(curve.columns).rename(f"{image}: their code"))
                    rows.append((values - theirs.reindex(curve.columns)).rename(f"{image}: difference"))
            frame = pd.DataFrame(rows)
            frame.index.name = "PSNR at iteration"
            parts.append(f"### {config}: PSNR at the checkpoints\n\n" + report.markdown_table(frame))
    return "\n\n".join(parts) + "\n"


def _tasks_text(table: pd.DataFrame) -> str:
    """A row per task: the observation (SR: bicubic), the controlled DIP at the task's automatic stop (the
    rule, where it stopped, its PSNR), its last iterate and its oracle peak, and the papers' DIP the same
    way; enhancement is scored by MLV sharpness (no clean image exists)."""
    baseline = table["config"].str.endswith(DIP_BASELINE)
    dip = table[baseline].assign(config=table.loc[baseline, "config"].str.removesuffix(DIP_BASELINE))
    dip = dip.set_index("config")
    frame = table[~baseline].set_index("config")
    out = frame[["image", "size", "observation_psnr", "stop_rule", "stop_iteration", "stop_psnr", "final_psnr",
                 "peak_psnr", "peak_iteration", "iterations", "seconds"]].rename(
        columns={"observation_psnr": "observation (SR: bicubic)", "stop_rule": "rule",
                 "stop_iteration": "auto stop at", "stop_psnr": "controlled DIP at the stop",
                 "final_psnr": "last", "peak_psnr": "oracle peak", "peak_iteration": "peak at", "iterations": "ran"})
    for col in ("auto stop at", "ran", "peak at"):
        out[col] = pd.to_numeric(out[col], errors="coerce").round().astype("Int64")
    enhance = frame.index.str.startswith("enhance")
    at_stop = frame["stop_psnr"].where(frame["stop_psnr"].notna(), frame["final_psnr"])
    beats = at_stop > frame["observation_psnr"]
    if "sharpness_restored" in frame:
        beats[enhance] = frame.loc[enhance, "sharpness_restored"] > frame.loc[enhance, "sharpness_observed"]
        columns = ["observation (SR: bicubic)", "controlled DIP at the stop", "last", "oracle peak"]
        out.loc[enhance, columns] = math.nan
        out.loc[enhance, "peak at"] = pd.NA
    out["beats the observation"] = ["yes" if b else "NO" for b in beats]
    out["DIP at its stop"] = dip["stop_psnr"].reindex(out.index)
    out["DIP last"] = dip["final_psnr"].reindex(out.index)
    out["DIP peak"] = dip["peak_psnr"].reindex(out.index)
    out["DIP seconds"] = dip["seconds"].reindex(out.index)
    out.index.name = "task"
    text = report.markdown_table(out)
    if enhance.any():
        row = frame[enhance].iloc[0]
        text += (f"\n\nEnhancement is scored by MLV sharpness: observed {row['sharpness_observed']:.4f}, "
                 f"enhanced {row['sharpness_restored']:.4f}.")
    return text + "\n"


def _recommend_text(table: pd.DataFrame) -> str:
    """Per task: the PSNR at the automatic stop and the seconds of the recommended configuration, the
    default, ``ulyanov-dip`` and the per-image oracle (the best of the grid configurations on each image),
    their means, the recommendation's differences to each, and the CPU seconds of the recommended and default
    configurations where every image's row has them."""
    parts = []
    frame = table.assign(task=table["config"].str.split(" · ").str[0], method=table["config"].str.split(" · ").str[1])
    for task, rows in frame.groupby("task", sort=False):
        psnr = rows.pivot_table(index="image", columns="method", values="stop_psnr", sort=False)
        seconds = rows.pivot_table(index="image", columns="method", values="seconds", sort=False)
        grid = [c for c in psnr.columns if c.startswith("grid")]
        out = pd.DataFrame(index=psnr.index)
        restarted = [c for c in psnr.columns if "×" in c]  # e.g. "recommended ×2", "default ×3"
        for method in ("recommended", "default", "ulyanov-dip", *restarted):
            if method in psnr:
                out[f"{method} dB"], out[f"{method} s"] = psnr[method], seconds[method]
        if grid:
            out["oracle dB"] = psnr[grid].max(axis=1)
            out["oracle config"] = psnr[grid].idxmax(axis=1)
        if "recommended" in psnr:
            for other, column in (("default", "default dB"), ("ulyanov-dip", "ulyanov-dip dB"),
                                  ("oracle", "oracle dB")):
                if column in out:
                    out[f"recommended − {other}"] = out["recommended dB"] - out[column]
        for method in (m for m in restarted if m.startswith("recommended")):
            for default in (m for m in restarted if m.startswith("default")):  # the two restorations restore runs
                out[f"{method} − {default}"] = out[f"{method} dB"] - out[f"{default} dB"]
        if "cpu_seconds" in rows:  # CPU time: comparable between methods run at different loads
            cpu = rows.pivot_table(index="image", columns="method", values="cpu_seconds", sort=False)
            for method in ("recommended", "default", *restarted):
                if method in cpu and cpu[method].reindex(out.index).notna().all():
                    out[f"{method} CPU s"] = cpu[method]
        mean = out.drop(columns=[c for c in out.columns if c == "oracle config"]).mean().to_frame("mean").T
        text = report.markdown_table(pd.concat([out, mean]))
        chosen = rows.loc[rows["method"] == "recommended", "chosen"] if "chosen" in rows else pd.Series(dtype=str)
        parts.append(f"### {task}\n\n{text}\n\nConfigurations recommended: "
                     + "; ".join(f"{n}× {c}" for c, n in chosen.value_counts().items()) + "\n")
    return "\n".join(parts)


def _rule_outcomes(table: pd.DataFrame) -> pd.DataFrame:
    """Per run and rule of :data:`archlab.fitting.RULES`: the PSNR of what a fit stopped by that rule returns and
    its gap to the run's oracle peak. A rule that never detected returns the fit's last EMA, as ``fit`` does;
    ``auto`` is the task's rule of :data:`archlab.fitting.AUTO_STOP` (its EMA where the fit recorded that rule's)."""
    rows = []
    for _, run in table.iterrows():
        task, arch = run["config"].split(" · ")
        row = {"task": task, "arch": arch, "image": run["image"], "peak": run["peak_psnr"],
               "peak at": run["peak_iteration"], "peak EMA": run["peak_psnr_ema"], "last": run["final_psnr"]}
        for rule in str(run["rules"]).split():
            detected = pd.notna(run.get(f"{rule}_iteration"))
            psnr = run[f"{rule}_psnr"] if detected else run["final_psnr_ema"]
            row |= {f"{rule} at": run.get(f"{rule}_iteration"), f"{rule}": psnr, f"{rule} gap": run["peak_psnr"] - psnr}
        chosen = AUTO_STOP[task.split()[0]]
        ema = run.get(f"{chosen}_psnr_ema", math.nan) if run.get("stop_rule") == chosen else math.nan
        row |= {"auto rule": chosen, "auto": row.get(chosen, math.nan), "auto gap": row.get(f"{chosen} gap", math.nan),
                "auto EMA": ema}
        rows.append(row)
    return pd.DataFrame(rows)


def _stopping_text(table: pd.DataFrame) -> str:
    """Per task and network: the mean and largest gap of every rule to the oracle peak; then every run.
    Tasks and networks in the experiment's order, rules in :data:`archlab.fitting.RULES` order, then ``auto``."""
    outcomes = _rule_outcomes(table)
    order = {label: i for i, (label, _, _) in enumerate(STOPPING_TASKS)} | {arch: i for i, arch in enumerate(STOPPING_FITS)}
    outcomes = outcomes.sort_values(["task", "arch"], key=lambda c: c.map(order).fillna(len(order)), kind="stable")
    gaps = [f"{rule} gap" for rule in (*RULES, "auto") if f"{rule} gap" in outcomes]
    summary = outcomes.groupby(["task", "arch"], sort=False)[gaps].agg(["mean", "max"])
    summary.columns = [f"{rule.removesuffix(' gap')} {stat}" for rule, stat in summary.columns]
    summary.insert(0, "runs", outcomes.groupby(["task", "arch"], sort=False).size())
    summary.insert(1, "auto rule", outcomes.groupby(["task", "arch"], sort=False)["auto rule"].first())
    summary.index = [f"{task} · {arch}" for task, arch in summary.index]
    summary.index.name = "task · network"
    overall = outcomes[gaps].agg(["mean", "max"])
    overall = overall.T.rename_axis("rule").assign(runs=outcomes[gaps].notna().sum().to_numpy())
    parts = ["### Gap to the oracle peak (dB), mean and largest per task\n\n" + report.markdown_table(summary),
             "### Over every run the rule applies to\n\n" + report.markdown_table(overall)]
    columns = ["image", "peak", "peak at", "peak EMA", "last"]
    columns += [f"{rule}{part}" for rule in RULES for part in (" at", "", " gap") if f"{rule}{part}" in outcomes]
    columns += ["auto rule", "auto", "auto gap", "auto EMA"]
    for (task, arch), group in outcomes.groupby(["task", "arch"], sort=False):
        absent = [f"{rule}{part}" for rule in RULES if f"{rule} gap" in group and group[f"{rule} gap"].isna().all()
                  for part in (" at", "", " gap")]  # rules that do not apply to the task
        frame = group[[c for c in columns if c not in absent]].set_index("image")
        for col in [c for c in frame if c.endswith(" at")]:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").round().astype("Int64")
        parts.append(f"### {task} · {arch}\n\n" + report.markdown_table(frame))
    return "\n\n".join(parts) + "\n"


def write_stop_figures(table: pd.DataFrame, out: str | Path) -> list[Path]:
    """One figure per task of a ``stopping`` table (``out/figures/TASK.png``): each run's PSNR curve
    (from ``out/curves/``) with the iteration every rule detected marked."""
    out = Path(out)
    written = []
    for task, group in table.assign(task=table["config"].str.split(" · ").str[0]).groupby("task", sort=False):
        curves, stops = {}, {}
        for _, run in group.iterrows():
            key = f"{run['config']}|{run['image']}"
            path = out / "curves" / (slug(key) + ".csv")
            if not path.exists():
                continue
            label = f"{run['image']} · {run['config'].split(' · ')[1]}"
            curves[label] = pd.read_csv(path)
            stops[label] = {rule: run.get(f"{rule}_iteration") for rule in RULES}
        if curves:
            written.append(report.plot_stop_points(curves, stops, out / "figures" / f"{slug(task)}.png", title=task))
    return written


def write_table(name: str, table: pd.DataFrame, out: str | Path) -> str:
    """Markdown table of an experiment (per image and mean per configuration), written to ``out/table.md``
    (``stopping``: also its figures, :func:`write_stop_figures`)."""
    if name == "tasks":
        text = _tasks_text(table)
    elif name == "stopping":
        text = _stopping_text(table)
        write_stop_figures(table, out)
    elif name == "recommend":
        text = _recommend_text(table)
    else:
        text = _denoise_set9_text(table) if name == "denoise-set9" else _generic_text(table)
    with images.atomic_path(Path(out) / report.TABLE_MD) as tmp:
        tmp.write_text(text)
    return text
