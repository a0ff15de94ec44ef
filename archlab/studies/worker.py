"""Running a study: Optuna storage with heartbeats, the claim lock, the trial objective, :func:`run`.

Everything concurrent is Optuna's: an :class:`optuna.storages.RDBStorage` (a SQLite file by
default, PostgreSQL for many machines) with heartbeats and
:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` re-queueing a killed worker's
trial, :class:`~optuna.samplers.GridSampler` (which gives trial number *k* < grid size grid
point *k*, so workers do not repeat points), ``optimize(catch=...)`` recording a failing
trial as FAIL, and the artifact store. The one addition is :class:`_ClaimLock` around
"is work left? → ask": without it two workers finishing together both ask, and the grid
sampler hands the second a point that is already running.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import re
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from archlab import images, report
from archlab.batched import fit_many
from archlab.fit import fit
from archlab.studies.spec import StudySpec, _fail, default_storage, load_study
from archlab.tasks import Task

HEARTBEAT_INTERVAL, GRACE_PERIOD, MAX_RETRY = 60, 120, 3


def make_storage(url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL,
                 grace_period: int | None = GRACE_PERIOD) -> RDBStorage:
    """An Optuna RDB storage with heartbeats; a stale trial is FAILed and re-queued (up to 3 times).

    SQLite gets a 60 s busy timeout so concurrent local workers wait instead of failing.
    """
    if not url.startswith(("sqlite:", "postgresql")):
        _fail("storage", f"{url!r} is invalid; allowed: sqlite:///FILE or postgresql://... URLs")
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))


def artifacts_dir(url: str, artifacts: str | os.PathLike | None = None) -> Path:
    """Where trial artifacts go: ``artifacts``, else ``<db>-artifacts`` beside a SQLite file,
    else ``$ARCHLAB_ARTIFACTS`` or ``./archlab-artifacts``."""
    if artifacts:
        return Path(artifacts)
    database = sqlalchemy.engine.make_url(url).database if url.startswith("sqlite") else None
    if database and database != ":memory:":
        return Path(database).with_name(Path(database).stem + "-artifacts")
    return Path(os.environ.get("ARCHLAB_ARTIFACTS", "archlab-artifacts"))


class _ClaimLock:
    """Serialises "is work left? → ask" across workers: a file lock beside a SQLite database,
    a PostgreSQL advisory lock otherwise. Both vanish with a killed process."""

    def __init__(self, url: str, name: str):
        self.file = self.engine = self.connection = None
        if url.startswith("sqlite"):
            database = sqlalchemy.engine.make_url(url).database
            if database and database != ":memory:":
                self.file = open(f"{database}.claim-lock", "a")
        else:
            self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
            self.connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self.key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)

    @contextlib.contextmanager
    def held(self):
        """Hold the lock; yields a ``release()`` to drop it early (idempotent)."""
        held = [True]
        if self.file:
            fcntl.flock(self.file, fcntl.LOCK_EX)
        elif self.connection is not None:
            self.connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})

        def release():
            if held[0]:
                held[0] = False
                if self.file:
                    fcntl.flock(self.file, fcntl.LOCK_UN)
                elif self.connection is not None:
                    self.connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})

        try:
            yield release
        finally:
            release()

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.connection is not None:
            self.connection.close()
            self.engine.dispose()


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
    """Create the study or load it; an existing study must come from the same definition."""
    directions = [direction for _, direction in spec.objectives]
    study = optuna.create_study(study_name=spec.name, storage=storage, sampler=spec.make_sampler(),
                                pruner=spec.make_pruner(), directions=directions, load_if_exists=True)
    definition = {k: v for k, v in spec.to_dict().items() if k not in ("description", "n_trials", "metrics")}
    stored = study.user_attrs.get("definition")
    if stored is None:
        study.set_user_attr("definition", definition)
    elif _jsonable(stored) != _jsonable(definition):
        changed = sorted(k for k in definition if _jsonable(stored.get(k)) != _jsonable(definition[k]))
        _fail("study", f"{spec.name!r} exists in the storage with a different definition (changed: "
                       f"{', '.join(changed)}); rename the study or use another storage")
    study.set_user_attr("spec", spec.to_dict())  # the latest description, trial budget and report metrics
    return study


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
class _Observation:
    task_label: str
    task: Task
    image: str
    y: object
    reference: object


def observations(spec: StudySpec) -> list[_Observation]:
    """Every (task, image) pair: the loaded, resized, cropped image degraded with ``degradation_seed``."""
    multiple = 1
    for param in (p for p in spec.space if p.name in ("depth", "factor")):
        values = param.grid() or [param.low, param.high]
        for value in values:
            multiple = math.lcm(multiple, spec.configure({param.name: value}, None)[0].multiple)
    multiple = math.lcm(multiple, spec.arch.multiple)
    out = []
    for image in spec.images:
        for label, source in image.resolve(spec.base_dir):
            x = images.load(source, grey=image.grey)
            if image.size or image.scale:
                x = images.resize(x, scale=image.scale, size=image.size)
            for task_label, task in spec.tasks:
                m = math.lcm(multiple, getattr(task, "factor", 1))
                xi = images.center_crop(x, m, size=image.crop)
                out.append(_Observation(task_label, task, label, task.degrade(xi, seed=spec.degradation_seed),
                                        task.reference(xi)))
    return out


class TrialDiverged(RuntimeError):
    """A fit diverged (the divergence guard gave up, or PSNR is not finite)."""


def _results(result, obs: _Observation, seed: int) -> dict:
    s = result.summary()
    if result.stop_reason == "diverged" or not math.isfinite(s.get("peak_psnr", math.nan)):
        raise TrialDiverged(f"{obs.task_label}/{obs.image} seed {seed}: the fit diverged at iteration "
                            f"{result.stopped_at} ({result.restores} roll-backs)")
    stopped = result.auto_stop_iteration is not None
    fbc = [c for c in result.history.columns if c.startswith("fbc_")]
    return {"task": obs.task_label, "image": obs.image, "seed": seed, "peak_psnr": s["peak_psnr"],
            "final_psnr": s["final_psnr"], "psnr_drop": s["psnr_drop"], "peak_iteration": s["peak_iteration"],
            "stop_iteration": result.auto_stop_iteration if stopped else result.stopped_at,
            "stop_psnr": s["stop_psnr"] if stopped else s["final_psnr"], "seconds": result.seconds,
            "final_fbc_high": float(result.history[fbc[-1]].iloc[-1]) if fbc else None, "stopped": stopped,
            "stop_reason": result.stop_reason}


def _curve_frame(history: pd.DataFrame) -> pd.DataFrame:
    """The history with its lowest and highest FBC bands (paper 000 eq. 1) as ``fbc_low``/``fbc_high``."""
    fbc = [c for c in history.columns if c.startswith("fbc_")]
    return history.assign(fbc_low=history[fbc[0]], fbc_high=history[fbc[-1]]) if fbc else history


def _compact(history: pd.DataFrame, points: int) -> dict:
    """Every k-th evaluation (at most ``points``, the last always kept), rounded, for a user attribute."""
    frame = _curve_frame(history)
    k = max(1, math.ceil(len(frame) / points))
    rows = frame.iloc[sorted(set(range(len(frame) - 1, -1, -k)))]
    digits = {"psnr": 2, "psnr_ema": 2, "ratio": 4, "fbc_low": 3, "fbc_high": 3}
    out = {"iteration": [int(v) for v in rows["iteration"]]}
    for name, d in digits.items():
        if name in rows:
            out[name] = _jsonable([round(float(v), d) for v in rows[name]])
    return out


class _Objective:
    """Runs one trial: every (task, image, seed) fit of the trial's configuration."""

    def __init__(self, spec: StudySpec, data: list[_Observation], store: FileSystemArtifactStore, filter_dir: Path,
                 device: str, log):
        self.spec, self.data, self.store, self.filter_dir = spec, data, store, filter_dir
        self.device, self.log = device, log
        self.release, self.current = (lambda: None), None

    def __call__(self, trial: optuna.Trial):
        self.release()
        self.current = trial.number
        try:
            return self._evaluate(trial)
        except optuna.TrialPruned:
            raise
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", " ".join(reason.split())[:500])
            raise

    def _evaluate(self, trial: optuna.Trial):
        params = {p.name: p.suggest(trial) for p in self.spec.space}
        arch, settings = self.spec.configure(params, self.filter_dir)
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_user_attr("fit", settings)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        rows, curves, histories, outputs = [], [], {}, {}
        single = len(self.spec.objectives) == 1
        for step, obs in enumerate(self.data):
            for seed, result in zip(self.spec.seeds, self._fits(arch, settings, obs)):
                rows.append(_results(result, obs, seed))
                curves.append({"task": obs.task_label, "image": obs.image, "seed": seed,
                               **_compact(result.history, self.spec.curve_points)})
                histories[f"{obs.task_label}/{obs.image}/seed {seed}"] = result.history
                outputs.setdefault(f"{obs.task_label}-{obs.image}", result.output)
            if single and dict(self.spec.pruner)["kind"] != "none":
                name = self.spec.objectives[0][0]
                trial.report(float(np.mean([r[name] for r in rows])), step)
                if trial.should_prune():
                    trial.set_user_attr("results", _jsonable(rows))
                    raise optuna.TrialPruned(f"pruned after {step + 1} of {len(self.data)} images")
        trial.set_user_attr("results", _jsonable(rows))
        trial.set_user_attr("curves", curves)
        values = [float(np.mean([r[name] for r in rows])) for name, _ in self.spec.objectives]
        for (name, _), value in zip(self.spec.objectives, values):
            if not math.isfinite(value):
                raise ValueError(f"objective {name} is {value} (an image without that measurement?)")
        self._upload(trial, histories, outputs)
        summary = ", ".join(f"{name} {v:.2f}" for (name, _), v in zip(self.spec.objectives, values))
        self.log(f"trial {trial.number} {params}: {summary}")
        return values if not single else values[0]

    def _fits(self, arch, settings: dict, obs: _Observation):
        """The fits of every seed on one observation: one :func:`~archlab.batched.fit_many` when the
        study sets ``batch_seeds`` (and has several seeds), else sequential :func:`~archlab.fit.fit` calls."""
        if self.spec.batch_seeds and len(self.spec.seeds) > 1:
            batched = {k: v for k, v in settings.items() if k not in ("lr", "channels_last", "compile")}
            return fit_many(arch, obs.task, obs.y, seeds=list(self.spec.seeds), lrs=settings.get("lr", 0.01),
                            references=obs.reference, device=self.device,
                            degradation_seed=self.spec.degradation_seed, **batched)
        return (fit(arch, obs.task, obs.y, seed=seed, reference=obs.reference, device=self.device,
                    degradation_seed=self.spec.degradation_seed, progress=False, **settings)
                for seed in self.spec.seeds)

    def _upload(self, trial: optuna.Trial, histories: dict, outputs: dict) -> None:
        """The curve PNG and the restored images (first seed) as trial artifacts (optuna-dashboard shows them)."""
        with tempfile.TemporaryDirectory() as tmp:
            frame = pd.concat([_curve_frame(h).assign(panel=k.rsplit("/", 1)[0], seed=k.rsplit("/", 1)[1])
                               for k, h in histories.items()])
            paths = [report.plot_curves(frame, Path(tmp) / f"trial-{trial.number}-curves.png", line="seed",
                                        columns=("psnr", "ratio", "fbc_high"))]
            for label, output in outputs.items():
                paths.append(images.save(output, Path(tmp) / f"trial-{trial.number}-{_slug(label)}.png"))
            for path in paths:
                upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def run(source: str | os.PathLike | StudySpec, storage: str | None = None, *, n_trials: int | None = None,
        timeout: float | None = None, device: str = "auto", artifacts: str | os.PathLike | None = None,
        heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int | None = GRACE_PERIOD,
        log=print) -> optuna.Study:
    """Run (or continue) a study as one worker until its grid or trial budget is done.

    Several workers may run the same study on one storage; each claims the next queued
    trial, unclaimed grid point or unspent budget under :class:`_ClaimLock`, so no point is
    run twice. Finished trials are never rerun. A trial that raises or diverges ends FAIL
    with user attribute ``fail_reason`` and the study goes on. A worker killed mid-trial
    stops its heartbeat: after ``grace_period`` seconds the trial is FAILed and re-queued
    (:class:`RetryHeartbeatStaleTrialCallback`); a worker with nothing left to claim waits
    for running trials for that reason. Ctrl-C re-queues the interrupted trial.

    Parameters
    ----------
    source : path, shipped name or StudySpec
    storage : str, optional
        ``sqlite:///FILE`` or ``postgresql://...``; default :func:`default_storage`.
    n_trials, timeout
        Stop this worker after that many trials / seconds (the study may go on elsewhere).
    """
    spec = source if isinstance(source, StudySpec) else load_study(source)
    url = storage or default_storage(spec.name if isinstance(source, StudySpec) else source)
    rdb = make_storage(url, heartbeat_interval, grace_period)
    study = open_study(spec, rdb)
    store_dir = artifacts_dir(url, artifacts)
    store_dir.mkdir(parents=True, exist_ok=True)
    objective = _Objective(spec, observations(spec), FileSystemArtifactStore(str(store_dir)), store_dir / "filters",
                           device, log)
    lock = _ClaimLock(url, spec.name)
    start, ran, todo = time.monotonic(), 0, "claim"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            while (n_trials is None or ran < n_trials) and (timeout is None or time.monotonic() - start < timeout):
                with lock.held() as release:
                    optuna.storages.fail_stale_trials(study)
                    todo = _work_left(study, spec)
                    if todo == "claim":
                        objective.release = release
                        study.optimize(objective, n_trials=1, catch=(Exception,))
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
            RetryHeartbeatStaleTrialCallback()(study, trial)
        raise
    finally:
        lock.close()
    return study
