"""Distributed studies for real: worker processes (``archlab study run``) sharing one storage.

Two workers run a 4-point grid concurrently; once a trial has finished and the first worker
is inside a trial, that worker is SIGKILLed and a third one is started. The study must end
with every grid point completed exactly once, the killed trial FAILed by the heartbeat check
and re-run once (``RetryHeartbeatStaleTrialCallback``), and no finished trial lost. It runs on
the default local storage (SQLite) and on PostgreSQL (``ARCHLAB_PG_URL``, see
``.ci/postgres.sh``). The dashboard test reads a study back through optuna-dashboard's HTTP API.
"""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from archlab import studies
from studyfiles import study_toml

ROOT = Path(__file__).resolve().parents[1]
GRID = study_toml("{name}", fit={"iterations": 50, "eval_every": 10, "window": 20},
                  space={"upsampler": ["nearest", "bilinear"], "lr": [0.01, 0.02]})


def worker(study: Path, storage: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "archlab", "study", "run", str(study), "--storage", storage,
               "--heartbeat", "1", "--grace", "3", "--artifacts", str(study.parent / "artifacts")]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def trials(storage: optuna.storages.RDBStorage, name: str) -> list:
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []


def wait_until(condition, timeout: float, what: str, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for proc in procs:
            assert proc.poll() is None or proc.returncode == 0, f"a worker exited with {proc.returncode}"
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def kill_and_resume(tmp_path: Path, url: str) -> None:
    name = f"grid-{uuid.uuid4().hex[:8]}"
    study = tmp_path / "grid.toml"
    study.write_text(GRID.format(name=name))
    log = tmp_path / "workers.log"
    storage = optuna.storages.RDBStorage(url)
    first, second = worker(study, url, log), worker(study, url, log)
    try:
        host = socket.gethostname()

        def both_busy_and_first_mid_trial():
            ts = trials(storage, name)
            running = [t for t in ts if t.state == TrialState.RUNNING
                       and t.user_attrs.get("worker") == f"{host}:{first.pid}"]
            done = [t for t in ts if t.state == TrialState.COMPLETE]
            second_ran = any(t.user_attrs.get("worker") == f"{host}:{second.pid}" for t in ts)
            return (running[0].number, {t.number: t.values for t in done}) if running and done and second_ran else None

        killed, finished = wait_until(both_busy_and_first_mid_trial, 120,
                                      "a finished trial, a trial of the second worker and the first one mid-trial",
                                      (first, second))
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        third = worker(study, url, log)
        for proc in (second, third):
            assert proc.wait(180) == 0, log.read_text()[-3000:]
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
    ts = trials(storage, name)
    storage.engine.dispose()
    assert sorted(t.number for t in ts) == list(range(len(ts)))  # every trial recorded once
    complete = [t for t in ts if t.state == TrialState.COMPLETE]
    points = sorted((t.params["upsampler"], t.params["lr"]) for t in complete)
    expected = sorted((u, lr) for u in ("nearest", "bilinear") for lr in (0.01, 0.02))
    assert points == expected, "every grid point completed exactly once"
    by_number = {t.number: t for t in ts}
    assert by_number[killed].state == TrialState.FAIL and "fail_reason" not in by_number[killed].user_attrs
    retries = [t for t in ts if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) is not None]
    assert [RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in retries] == [killed]
    assert retries[0].state == TrialState.COMPLETE and retries[0].params == by_number[killed].params
    assert len(ts) == 5
    for number, values in finished.items():
        assert by_number[number].state == TrialState.COMPLETE and by_number[number].values == values
    assert {f"{host}:{first.pid}", f"{host}:{second.pid}"} <= {t.user_attrs["worker"] for t in ts}
    assert all(len(studies.trial_results(t)) == 1 for t in complete)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_workers_share_a_grid_and_recover_a_killed_trial_on_sqlite(tmp_path):
    kill_and_resume(tmp_path, studies.default_storage(tmp_path / "grid.toml"))


@pytest.mark.postgres
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.skipif(not os.environ.get("ARCHLAB_PG_URL"), reason="ARCHLAB_PG_URL is not set (.ci/postgres.sh)")
def test_workers_share_a_grid_and_recover_a_killed_trial_on_postgres(tmp_path):
    kill_and_resume(tmp_path, os.environ["ARCHLAB_PG_URL"])


@pytest.mark.skipif(importlib.util.find_spec("optuna_dashboard") is None, reason="optuna-dashboard not installed")
def test_dashboard_serves_the_study_over_http(tmp_path):
    storage = f"sqlite:///{tmp_path / 'dash.db'}"
    study = optuna.create_study(study_name="dash-demo", storage=storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"width": 8}, values=[21.5], user_attrs={"worker": "test"},
                                              distributions={"width": optuna.distributions.IntDistribution(4, 16)}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "archlab", "study", "dashboard", "--storage", storage,
                               "--port", str(port), "--artifacts", str(tmp_path / "artifacts")],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def get(path):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
                    return json.load(reply)
            except OSError:
                return None

        summaries = wait_until(lambda: get("/api/studies"), 60, "optuna-dashboard to answer", (server,))
        found = [s for s in summaries["study_summaries"] if s["study_name"] == "dash-demo"]
        assert len(found) == 1 and found[0]["directions"] == ["maximize"]
        detail = get(f"/api/studies/{found[0]['study_id']}?after=0")
        assert [t["values"] for t in detail["trials"]] == [[21.5]]
        assert detail["trials"][0]["params"][0]["name"] == "width"
    finally:  # a loaded machine can take a while to stop the server: wait, then kill
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
