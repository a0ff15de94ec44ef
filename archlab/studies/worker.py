"""Running a study: its observations, the trial objective, progress lines and :func:`run`.

:class:`~optuna.samplers.GridSampler` gives trial number *k* < grid size grid point *k*, so workers do not
repeat points; ``optimize(catch=...)`` records a failing trial as FAIL; where the study lives and the
locks around it are :mod:`archlab.studies.storage`.
"""

from __future__ import annotations

import math
import os
import re
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from archlab import images, metrics, report, restoration
from archlab.fitting import FitSettings, fit, fit_many
from archlab.checks import fail
from archlab.studies.spec import StudySpec, default_storage, load_study
from archlab.studies.storage import (GRACE_PERIOD, HEARTBEAT_INTERVAL, ClaimLock, artifacts_dir, creation_lock,
                                     make_storage, storage_url)
from archlab.tasks import Observation, Task

def _work_left(study: optuna.Study, spec: StudySpec) -> str:
    """``claim`` (a queued trial or an unclaimed point/budget), ``wait`` (only running trials), or ``done``."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return "claim"
    if spec.is_grid:
        claimed = {t.system_attrs.get("grid_id") for t in trials}
        left = any(i not in claimed for i in range(spec.grid_size))
    else:
        replaced = {t.system_attrs["retry_history"][-1] for t in trials if t.system_attrs.get("retry_history")}
        left = sum(t.number not in replaced for t in trials) < spec.n_trials
    if left:
        return "claim"
    return "wait" if any(t.state == TrialState.RUNNING for t in trials) else "done"


def open_study(spec: StudySpec, storage: RDBStorage) -> optuna.Study:
    """Create the study or load it; an existing study must come from the same definition. The file's
    ``[[enqueue]]`` points are queued unless a trial already has them (Optuna's ``enqueue_trial``)."""
    directions = [direction for _, direction in spec.objectives]
    study = optuna.create_study(study_name=spec.name, storage=storage, sampler=spec.make_sampler(),
                                pruner=spec.make_pruner(), directions=directions, load_if_exists=True)
    definition = {k: v for k, v in spec.to_dict().items() if k not in ("description", "n_trials", "metrics", "enqueue")}
    stored = study.user_attrs.get("definition")
    if stored is None:
        study.set_user_attr("definition", definition)
    elif _jsonable(stored) != _jsonable(definition):
        changed = sorted(k for k in definition if _jsonable(stored.get(k)) != _jsonable(definition[k]))
        fail("study", f"{spec.name!r} exists in the storage with a different definition (changed: "
                       f"{', '.join(changed)}); rename the study or use another storage")
    study.set_user_attr("spec", spec.to_dict())  # the latest description, trial budget and report metrics
    for point in spec.enqueue:  # points the file asks to try first, once whatever the number of workers
        study.enqueue_trial(dict(point), skip_if_exists=True)
    names = [name for name, _ in spec.objectives]
    if study.metric_names != names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)  # optuna-dashboard labels the objectives and Pareto axes with them
    return study


def _finished_elsewhere(study: optuna.Study, number: int | None) -> bool:
    """Whether trial ``number`` was finished by someone else while this worker ran it (Optuna then refuses
    to tell its result)."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    return trial is not None and trial.state.is_finished()


def _register_worker(storage: RDBStorage, name: str) -> int:
    """How many workers opened the study before this one (counted in the study's system attribute
    ``workers``; call under :func:`~archlab.studies.storage.creation_lock`)."""
    study_id = storage.get_study_id_from_name(name)
    before = int(storage.get_study_system_attrs(study_id).get("workers", 0))
    storage.set_study_system_attr(study_id, "workers", before + 1)
    return before


def _jsonable(value):
    """Values as JSON stores them (tuples -> lists, NaN -> None), for comparisons and user attributes."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass
class StudyObservation:
    """One (task, image) pair of a study: its labels, the task and the :class:`~archlab.tasks.Observation`."""

    task_label: str
    task: Task
    image: str
    observation: Observation

    @property
    def reference(self):
        """The clean reference of the observation."""
        return self.observation.reference


def observations(spec: StudySpec) -> list[StudyObservation]:
    """Every (task, image) pair: the loaded, resized, cropped image degraded with ``degradation_seed``."""
    needs = {"arch.depth": spec.arch.multiple}  # where in the study file -> the multiple its architecture needs
    for param in (p for p in spec.space if p.name in ("depth", "factor")):
        values = param.grid() or [param.low, param.high]
        for value in values:
            needs[f"space.{param.name} = {value}"] = spec.configure({param.name: value})[0].multiple
    multiple = math.lcm(*needs.values())
    out = []
    for image in spec.images:
        for label, source in image.resolve(spec.base_dir):
            x = restoration.clean_image(source, scale=image.scale or None, size=image.size or None, grey=image.grey)
            for task_label, task in spec.tasks:
                m = math.lcm(multiple, getattr(task, "factor", 1))
                h, w = (side // m * m for side in images.center_crop(x, 1, size=image.crop).shape[-2:])
                for key, need in sorted(needs.items(), key=lambda item: -item[1]):  # the deepest named first
                    if min(h, w) < 2 * need:  # as models.check_size, before any storage is created
                        fail(key, f"needs image sides of at least {2 * need} pixels; image {label!r} is {w}x{h} "
                                   f"after its size/scale/crop (multiples of {m}); use a smaller depth or a larger "
                                   f"image")
                xi = restoration.clean_image(x, crop=image.crop, multiple=m)
                out.append(StudyObservation(task_label, task, label, task.observe(xi, seed=spec.degradation_seed)))
    return out


class TrialDiverged(RuntimeError):
    """A fit diverged (the divergence guard gave up, or PSNR is not finite)."""


def _results(result, obs: StudyObservation, seed: int) -> dict:
    """One fit's record. ``stop_iteration`` is where the ratio rule fired, None where it never did
    (``stopped`` says which); ``stop_psnr`` is the PSNR of the output the rule gives: at its stop, else
    the last iterate's."""
    if result.stop_reason == "interrupted":  # Ctrl-C/SIGTERM ended the fit early: the trial is interrupted
        raise KeyboardInterrupt
    s = result.summary()
    if result.stop_reason == "diverged" or not math.isfinite(s.get("peak_psnr", math.nan)):
        raise TrialDiverged(f"{obs.task_label}/{obs.image} seed {seed}: the fit diverged at iteration "
                            f"{result.stopped_at} ({result.restores} roll-backs)")
    stopped = result.auto_stop_iteration is not None
    stop_psnr = s.get("stop_psnr", math.nan) if stopped else s["final_psnr"]
    if not math.isfinite(stop_psnr):  # no PSNR of the rule's own output: the fit's at that evaluation
        row = result.history[result.history["iteration"] == result.auto_stop_iteration]
        stop_psnr = float(row["psnr"].iloc[0]) if len(row) else math.nan
    fbc = [c for c in result.history.columns if c.startswith("fbc_")]
    return {"task": obs.task_label, "image": obs.image, "seed": seed, "peak_psnr": s["peak_psnr"],
            "final_psnr": s["final_psnr"], "psnr_drop": s["psnr_drop"], "peak_iteration": s["peak_iteration"],
            "stop_iteration": result.auto_stop_iteration, "stop_psnr": stop_psnr,
            "seconds": result.seconds, "cpu_seconds": result.cpu_seconds,
            "final_fbc_high": float(result.history[fbc[-1]].iloc[-1]) if fbc else None,
            "stopped": stopped, "iterations": result.stopped_at, "stop_reason": result.stop_reason}


def _objective(rows: list[dict], name: str) -> float:
    """An objective's value for a trial: the mean over its fits. For ``stop_iteration`` a fit where the
    ratio rule never fired counts its last iteration (the fit ran to the end)."""
    if name == "stop_iteration":
        return float(np.mean([r["iterations"] if r["stop_iteration"] is None else r["stop_iteration"]
                              for r in rows]))
    return float(np.mean([r[name] for r in rows]))


#: Objectives whose intermediate values (the PSNR at each evaluation) a pruner may compare.
PSNR_OBJECTIVES = ("peak_psnr", "final_psnr", "stop_psnr")
RUN_KEY = re.compile(r"run(\d+)\.(.+)")


def flat_attrs(prefix: str, values: dict) -> dict:
    """``{f"{prefix}.{key}": value}``: one readable user attribute per field (JSON-safe)."""
    return {f"{prefix}.{key}": _jsonable(value) for key, value in values.items()}


def trial_results(trial) -> list[dict]:
    """A trial's per-fit records, rebuilt from its ``run<k>.<field>`` user attributes, in fit order
    (the ``results`` attribute of studies written before those)."""
    runs: dict[int, dict] = {}
    for key, value in trial.user_attrs.items():
        match = RUN_KEY.fullmatch(key)
        if match:
            runs.setdefault(int(match[1]), {})[match[2]] = value
    return [runs[k] for k in sorted(runs)] if runs else list(trial.user_attrs.get("results", []))


#: The fields of a fit's record (:func:`_results`); a ``run<k>`` record with all of them is a finished fit.
RESULT_FIELDS = ("task", "image", "seed", "peak_psnr", "final_psnr", "psnr_drop", "peak_iteration", "stop_iteration",
                 "stop_psnr", "seconds", "final_fbc_high", "stopped", "iterations", "stop_reason")


def finished_fits(trial) -> dict[tuple[str, str, int], dict]:
    """The fits a trial already holds, by (task, image, seed): its complete ``run<k>`` records. A fresh
    trial holds none; a retry of an interrupted or stale trial holds the fits that trial finished, since
    :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` copies the user attributes."""
    return {(row["task"], row["image"], row["seed"]): row for row in trial_results(trial)
            if all(field in row for field in RESULT_FIELDS)}


def step_stride(spec: StudySpec) -> int:
    """Steps between the starts of two fits in a trial's intermediate values: the study's largest
    iteration count rounded up to 1, 2 or 5 × 10^k (fit k's evaluation at iteration i is step
    ``k × stride + i``, the same step in every trial, as pruners compare)."""
    most = dict(spec.fit).get("iterations", FitSettings.__dataclass_fields__["iterations"].default)
    for param in spec.space:
        if param.name == "iterations":
            most = max(most, *(param.grid() or [param.high]))
    scale = 10 ** math.floor(math.log10(max(int(most), 1)))
    return next(int(m * scale) for m in (1, 2, 5, 10) if m * scale >= most)


class _Intermediate:
    """A trial's intermediate values, which optuna-dashboard shows and a pruner compares: the PSNR of
    fit ``k`` at each evaluation ``i``, at step ``k × stride + i``. Reported live from the fit
    (``fit(on_evaluation=...)``) and completed from the fit's history afterwards (batched fits)."""

    def __init__(self, trial: optuna.Trial, stride: int, single: bool, prune: bool):
        self.trial, self.stride, self.single, self.prune = trial, stride, single, prune
        self.reported = set(trial.storage.get_trial(trial._trial_id).intermediate_values)  # a retry inherits them

    def report(self, k: int, iteration: int, value: float, check: bool = True) -> None:
        step = k * self.stride + int(iteration)
        if step not in self.reported and math.isfinite(value):
            self.reported.add(step)
            value = round(float(value), 4)  # as the dashboard lists it; far below the PSNR's run-to-run noise
            if self.single:
                self.trial.report(value, step)
            else:  # Trial.report refuses several objectives (for pruners); the curve is still worth keeping
                self.trial.storage.set_trial_intermediate_value(self.trial._trial_id, step, value)
            if check:
                self.check(step)

    def check(self, step: int) -> None:
        """End the trial (``optuna.TrialPruned``) where the pruner says so."""
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")

    def live(self, k: int, obs: StudyObservation):
        """``on_evaluation(iteration, output)`` for fit ``k``: the PSNR of the restored output, as in the fit's
        history."""
        if obs.reference is None:
            return None
        state = {}

        def on_evaluation(iteration: int, output) -> None:
            if not state:
                observed = obs.observation
                state.update(physics=observed.physics.to(output.device), y=observed.y.to(output.device, output.dtype),
                             reference=observed.reference.to(output.device))
            restored = state["physics"].restore(output, state["y"])
            self.report(k, iteration, float(metrics.psnr(restored, state["reference"])[0]))

        return on_evaluation

    def complete(self, k: int, history: pd.DataFrame) -> None:
        """Report the evaluations of fit ``k`` not reported live, then let a pruner stop the trial."""
        if "psnr" in history and len(history):
            for iteration, value in zip(history["iteration"], history["psnr"]):
                self.report(k, int(iteration), float(value), check=False)
            self.check(k * self.stride + int(history["iteration"].iloc[-1]))


def curve_frame(history: pd.DataFrame) -> pd.DataFrame:
    """The history with its lowest and highest FBC bands (paper 000 eq. 1) as ``fbc_low``/``fbc_high``."""
    fbc = [c for c in history.columns if c.startswith("fbc_")]
    return history.assign(fbc_low=history[fbc[0]], fbc_high=history[fbc[-1]]) if fbc else history


class _Objective:
    """Runs one trial: every (task, image, seed) fit of the trial's configuration."""

    def __init__(self, spec: StudySpec, data: list[StudyObservation], store: FileSystemArtifactStore, device: str):
        self.spec, self.data, self.store = spec, data, store
        self.device = device
        self.release, self.current = (lambda: None), None

    def __call__(self, trial: optuna.Trial):
        self.release()
        self.current = trial.number
        if trial.user_attrs.get("fail_reason") is not None:  # copied from the trial this retry replaces
            trial.set_user_attr("fail_reason", None)
        try:
            return self._evaluate(trial)
        except optuna.TrialPruned:
            raise
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", " ".join(reason.split())[:500])
            raise

    def _evaluate(self, trial: optuna.Trial):
        """Fit every (task, image, seed); record readable flat user attributes (``arch.*``, ``fit.*``,
        ``run<k>.*`` per fit), the PSNR at every evaluation as intermediate values, and the curves
        (CSV, PNG), observations and restorations as artifacts.

        A retry keeps the fits its interrupted trial finished (:func:`finished_fits`; fits are seeded, so
        a rerun would repeat them) and runs the rest: its ``seconds`` add both attempts' fits, and the kept
        fits' curves stay with the interrupted trial (its intermediate values are inherited, its curves
        uploaded when it stopped)."""
        kept = finished_fits(trial)
        params = {p.name: p.suggest(trial) for p in self.spec.space}
        arch, settings = self.spec.configure(params)
        for key, value in {**flat_attrs("arch", arch.to_dict()), **flat_attrs("fit", settings),
                           "worker": f"{socket.gethostname()}:{os.getpid()}"}.items():
            trial.set_user_attr(key, value)
        single = len(self.spec.objectives) == 1
        prune = single and dict(self.spec.pruner)["kind"] != "none"
        stride = step_stride(self.spec)
        trial.set_user_attr("intermediate values", f"PSNR (dB) of run k at iteration i, step = {stride} k + i")
        intermediate = _Intermediate(trial, stride, single, prune)
        rows, histories, outputs = [], {}, {}
        try:
            for obs in self.data:
                first = len(rows)
                reused = [kept.get((obs.task_label, obs.image, seed)) for seed in self.spec.seeds]
                if all(reused):
                    rows.extend(reused)
                    for j, row in enumerate(reused):
                        for key, value in flat_attrs(f"run{first + j}", row).items():
                            trial.set_user_attr(key, value)
                    continue
                hooks = [intermediate.live(first + j, obs) for j in range(len(self.spec.seeds))]
                for j, (seed, result) in enumerate(zip(self.spec.seeds, self._fits(arch, settings, obs, hooks))):
                    rows.append(_results(result, obs, seed))
                    for key, value in flat_attrs(f"run{first + j}", rows[-1]).items():
                        trial.set_user_attr(key, value)
                    histories[first + j] = (obs, seed, result.history)
                    outputs.setdefault(f"{obs.task_label}-{obs.image}", (obs, result.restored))
                for k in range(first, len(rows)):
                    intermediate.complete(k, histories[k][2])
        except (optuna.TrialPruned, KeyboardInterrupt):
            self._upload(trial, histories, outputs)
            raise
        if len(rows) > len(histories):
            trial.set_user_attr("kept fits", len(rows) - len(histories))
        values = [_objective(rows, name) for name, _ in self.spec.objectives]
        for (name, _), value in zip(self.spec.objectives, values):
            if not math.isfinite(value):
                raise ValueError(f"objective {name} is {value} (an image without that measurement?)")
        self._upload(trial, histories, outputs)
        return values if not single else values[0]

    def _fits(self, arch, settings: dict, obs: StudyObservation, hooks: list):
        """The fits of every seed on one observation: one :func:`~archlab.fitting.fit_many` when the
        study sets ``batch_seeds`` (and has several seeds), else sequential :func:`~archlab.fitting.fit` calls,
        each reporting its evaluations through its hook (``on_evaluation``)."""
        if self.spec.batch_seeds and len(self.spec.seeds) > 1:
            batched = {k: v for k, v in settings.items() if k not in ("lr", "channels_last", "compile")}
            return fit_many(arch, obs.task, obs.observation, seeds=list(self.spec.seeds),
                            lrs=settings.get("lr", 0.01), device=self.device, **batched)
        return (fit(arch, obs.task, obs.observation, seed=seed, device=self.device, progress=False,
                    on_evaluation=hook, interruptible=True, **settings)
                for seed, hook in zip(self.spec.seeds, hooks))

    def _upload(self, trial: optuna.Trial, histories: dict, outputs: dict) -> None:
        """Trial artifacts, which optuna-dashboard shows: every fit's history as one CSV (``run``, ``task``,
        ``image``, ``seed`` and the history's columns), their curves as a PNG, and per (task, image) the
        observation and the restoration a user gets (:attr:`~archlab.fitting.FitResult.restored`, first seed)."""
        if not histories:
            return
        with tempfile.TemporaryDirectory() as tmp:
            table = pd.concat([h.assign(run=k, task=obs.task_label, image=obs.image, seed=seed)
                               for k, (obs, seed, h) in histories.items()], ignore_index=True)
            leading = ["run", "task", "image", "seed"]
            table = table[leading + [c for c in table.columns if c not in leading]]
            csv = Path(tmp) / f"trial-{trial.number}-curves.csv"
            table.to_csv(csv, index=False)
            frame = pd.concat([curve_frame(h).assign(panel=f"{obs.task_label}/{obs.image}", seed=f"seed {seed}")
                               for obs, seed, h in histories.values()])
            paths = [csv, report.plot_curves(frame, Path(tmp) / f"trial-{trial.number}-curves.png", line="seed",
                                             columns=("psnr", "ratio", "fbc_high"))]
            for label, (obs, output) in outputs.items():
                paths.append(images.save(obs.observation.y, Path(tmp) / f"trial-{trial.number}-{_slug(label)}-observed.png"))
                paths.append(images.save(output, Path(tmp) / f"trial-{trial.number}-{_slug(label)}-restored.png"))
            for path in paths:
                upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


class TrialProgress:
    """An Optuna callback (``study.optimize(callbacks=[...])``) that writes one line per finished trial —
    number, state, parameters, objectives (or why it failed or where it was pruned), seconds — and,
    when ``bar`` is true, keeps a tqdm bar of the study's finished trials on stderr."""

    def __init__(self, spec: StudySpec, study: optuna.Study, write=print, bar: bool = False):
        self.names = [name for name, _ in spec.objectives]
        self.total = spec.grid_size if spec.is_grid else spec.n_trials
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=min(self._finished(study), self.total), unit="trial",
                            desc=spec.name, file=sys.stderr, dynamic_ncols=True)
        self.write = self.bar.write if self.bar is not None and write is print else write

    @staticmethod
    def _finished(study: optuna.Study) -> int:
        trials = study.get_trials(deepcopy=False)
        retried = {t.system_attrs["retry_history"][-1] for t in trials if t.system_attrs.get("retry_history")}
        return sum(t.state.is_finished() and t.number not in retried for t in trials)

    @staticmethod
    def line(trial: optuna.trial.FrozenTrial, names: list[str]) -> str:
        """``trial N STATE in S s: params -> objectives`` (failure reason / pruning step instead of objectives)."""
        seconds = trial.duration.total_seconds() if trial.duration is not None else math.nan
        params = ", ".join(f"{k}={v}" for k, v in trial.params.items()) or "no parameters"
        if trial.state == TrialState.COMPLETE:
            outcome = ", ".join(f"{n} {v:.4g}" for n, v in zip(names, trial.values))
        elif trial.state == TrialState.PRUNED:
            last = trial.last_step
            value = trial.intermediate_values.get(last) if last is not None else None
            outcome = f"pruned at step {last}" + (f" (PSNR {value:.2f} dB)" if value is not None else "")
        else:
            outcome = trial.user_attrs.get("fail_reason", "no reason recorded")
        kept = trial.user_attrs.get("kept fits") if trial.system_attrs.get("failed_trial") is not None else None
        if kept:
            outcome += f" ({kept} fit{'s' * (kept != 1)} kept from trial {trial.system_attrs['retry_history'][-1]})"
        return f"trial {trial.number} {trial.state.name.lower()} in {seconds:.1f} s: {params} -> {outcome}"

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.write(self.line(trial, self.names))
        if self.bar is not None:
            self.bar.n = min(self._finished(study), self.total)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(source: str | os.PathLike | StudySpec, storage: str | None = None, *, n_trials: int | None = None,
        timeout: float | None = None, device: str = "auto", artifacts: str | os.PathLike | None = None,
        heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int | None = GRACE_PERIOD,
        log=print, progress: bool | None = None) -> optuna.Study:
    """Run (or continue) a study as one worker until its grid or trial budget is done.

    Several workers may run the same study on one storage; each claims the next queued
    trial, unclaimed grid point or unspent budget under :class:`ClaimLock`, so no point is
    run twice, and a seeded sampler draws from a seed of its own in each worker after the first
    (:meth:`StudySpec.make_sampler`), so workers do not sample the same parameters. Finished
    trials are never rerun. A trial that raises or diverges ends FAIL with user attribute
    ``fail_reason`` and the study goes on. A worker killed mid-trial
    stops its heartbeat: after ``grace_period`` seconds the trial is FAILed and re-queued
    (:class:`RetryHeartbeatStaleTrialCallback`); a worker with nothing left to claim waits
    for running trials for that reason; a worker whose trial was finished elsewhere meanwhile (failed as
    stale while its heartbeat lapsed) drops that result and goes on. Ctrl-C re-queues the interrupted trial.

    Parameters
    ----------
    source : path, shipped name or StudySpec
    storage : str, optional
        ``sqlite:///FILE`` or ``postgresql://...``; default :func:`default_storage`.
    n_trials, timeout
        Stop this worker after that many trials / seconds (the study may go on elsewhere).
    log : callable
        Receives one line per finished trial (:class:`TrialProgress`).
    progress : bool, optional
        A progress bar of the study's trials on stderr; default: when stderr is a terminal.
    """
    spec = source if isinstance(source, StudySpec) else load_study(source)
    if dict(spec.pruner)["kind"] != "none" and spec.objectives[0] not in [(n, "maximize") for n in PSNR_OBJECTIVES]:
        fail("pruner.kind", "a pruner compares the PSNR at each evaluation; allowed with the objective "
                             f"{', '.join(PSNR_OBJECTIVES)} (maximize); with {spec.objectives[0][0]}: none")
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        fail("n_trials", f"{n_trials!r} is invalid; allowed: an integer ≥ 1")
    url = storage_url(storage or default_storage(spec.name if isinstance(source, StudySpec) else source))
    data = observations(spec)  # every image loaded and checked against the space before anything is created
    store_dir = artifacts_dir(url, artifacts)
    if store_dir.exists() and not store_dir.is_dir():
        fail("artifacts", f"{store_dir} is a file; give a folder")
    with creation_lock(url):
        rdb = make_storage(url, heartbeat_interval, grace_period)
        study = open_study(spec, rdb)
        study.sampler = spec.make_sampler(worker=_register_worker(rdb, spec.name))
    store_dir.mkdir(parents=True, exist_ok=True)
    objective = _Objective(spec, data, FileSystemArtifactStore(str(store_dir)), device)
    lock = ClaimLock(url, spec.name)
    watcher = TrialProgress(spec, study, log, sys.stderr.isatty() if progress is None else progress)
    start, ran, todo = time.monotonic(), 0, "claim"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            while (n_trials is None or ran < n_trials) and (timeout is None or time.monotonic() - start < timeout):
                with lock.held() as release:
                    optuna.storages.fail_stale_trials(study)
                    todo = _work_left(study, spec)
                    if todo == "claim":
                        objective.release, objective.current = release, None
                        try:
                            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[watcher])
                        except Exception:
                            if not _finished_elsewhere(study, objective.current):
                                raise
                            log(f"trial {objective.current} was finished elsewhere while this worker ran it (failed "
                                f"as stale after its heartbeat lapsed, or by hand); its result is dropped")
                        ran += 1
                if todo == "done":
                    break
                if todo == "wait":
                    time.sleep(min(heartbeat_interval, 5))
    except KeyboardInterrupt:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        interrupted = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                       if t.number == objective.current and t.user_attrs.get("fail_reason") == "interrupted"]
        for trial in interrupted:
            RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)(study, trial)
        raise
    finally:
        watcher.close()
        lock.close()
    return study
