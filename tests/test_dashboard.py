"""optuna-dashboard serving a finished archlab study over HTTP, as a user opens it in a browser.

A two-trial, two-objective study is run with a stand-in for the fit (closed-form PSNR curves, so it takes
seconds), then ``archlab study dashboard`` is started on 127.0.0.1 on a free port and the study page, a
trial page, the JSON API behind them and an artifact are fetched. Every wait polls with a generous
deadline: the server imports torch and optuna before it answers, which takes long on a busy machine.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from archlab import studies
from archlab.fitting import FitResult
from archlab.studies import worker
from studyfiles import study_toml

ROOT = Path(__file__).resolve().parents[1]
STUDY = study_toml("dash", description="nearest against bilinear, for the dashboard",
                   objectives={"peak_psnr": "maximize", "peak_iteration": "minimize"})

pytestmark = pytest.mark.skipif(importlib.util.find_spec("optuna_dashboard") is None,
                                reason="optuna-dashboard not installed (extra 'dashboard')")


def fake_fit(arch, task, observation, *, seed, **settings):
    """A fit stand-in: a parabola of PSNR peaking at iteration 40 (nearest) or 60 (bilinear)."""
    peak, at = {"nearest": (30.0, 40), "bilinear": (32.0, 60)}[arch.upsampler]
    it = np.arange(10, 101, 10)
    psnr = peak - 0.001 * (it - at) ** 2
    history = pd.DataFrame({"iteration": it, "loss": 0.01, "psnr_obs": 20.0, "ratio": 0.3, "psnr": psnr,
                            "psnr_ema": psnr - 1, "fbc_0": it / 100, "fbc_4": it / 500, "seconds": it / 1000})
    reference = observation.reference
    return FitResult(output=reference, ema_output=reference, history=history, stopped_at=100,
                     stop_reason="iterations", seconds=0.1, spec=arch.to_dict(), settings=settings,
                     task=task.to_dict(), auto_stop_iteration=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(fetch, deadline: float, what: str, server: subprocess.Popen):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = fetch()
        if value is not None:
            return value
        if server.poll() is not None:
            raise AssertionError(f"the dashboard exited with {server.returncode}: {server.stdout.read()[-2000:]!r}")
        time.sleep(0.5)
    raise AssertionError(f"no answer within {deadline} s: {what}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(get, study)``: a finished study served by ``archlab study dashboard``; ``get(path)`` fetches a URL."""
    folder = tmp_path_factory.mktemp("dash")
    path = folder / "dash.toml"
    path.write_text(STUDY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    patch = pytest.MonkeyPatch()
    patch.setattr(worker, "fit", fake_fit)
    try:
        study = studies.run(path, log=lambda _: None)
    finally:
        patch.undo()
        torch.set_num_threads(threads)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "archlab", "study", "dashboard", str(path), "--port", str(port)],
                              cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def get(route: str, timeout: float = 30) -> tuple[int, str, bytes] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=timeout) as reply:
                return reply.status, reply.headers.get("Content-Type", ""), reply.read()
        except OSError:
            return None

    try:
        poll(lambda: get("/api/studies", timeout=5), 240, "optuna-dashboard to start", server)
        yield get, study
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
        server.stdout.close()


def api(get, route: str) -> dict:
    status, kind, body = get(route)
    assert status == 200 and kind.startswith("application/json")
    return json.loads(body)


def test_study_and_trial_pages_are_served(served):
    get, study = served
    summaries = api(get, "/api/studies")["study_summaries"]
    study_id = next(s["study_id"] for s in summaries if s["study_name"] == "dash")
    for route in (f"/dashboard/studies/{study_id}", f"/dashboard/studies/{study_id}/trials?numbers=0"):
        status, kind, body = get(route)
        assert status == 200 and kind.startswith("text/html") and b"<script" in body
    assert get("/static/bundle.js")[0] == 200  # the page's application


def test_the_api_gives_named_objectives_curves_flat_attributes_and_artifacts(served):
    get, study = served
    summaries = api(get, "/api/studies")["study_summaries"]
    study_id = next(s["study_id"] for s in summaries if s["study_name"] == "dash")
    detail = api(get, f"/api/studies/{study_id}?after=0")
    assert detail["objective_names"] == ["peak_psnr", "peak_iteration"]
    assert detail["has_intermediate_values"]
    trials = {t["params"][0]["param_external_value"]: t for t in detail["trials"]}
    bilinear = trials["bilinear"]
    assert [float(v) for v in bilinear["values"]] == pytest.approx([32.0, 60.0])
    curve = {v["step"]: v["value"] for v in bilinear["intermediate_values"]}
    assert sorted(curve) == list(range(10, 101, 10)) and curve[60] == pytest.approx(32.0)
    attrs = {a["key"]: a["value"] for a in bilinear["user_attrs"]}
    assert attrs["arch.upsampler"] == "bilinear" and attrs["run0.image"] == "astronaut"
    assert float(attrs["run0.peak_psnr"]) == pytest.approx(32.0) and attrs["fit.iterations"] == "100"
    assert max(len(v) for v in attrs.values()) < 100  # no one-line JSON blob cut at the edge
    artifacts = {a["filename"]: a for a in bilinear["artifacts"]}
    n = bilinear["number"]
    assert {f"trial-{n}-denoise-astronaut-observed.png", f"trial-{n}-denoise-astronaut-restored.png",
            f"trial-{n}-curves.png", f"trial-{n}-curves.csv"} == set(artifacts)
    observed = artifacts[f"trial-{n}-denoise-astronaut-observed.png"]
    status, kind, body = get(f"/artifacts/{study_id}/{bilinear['trial_id']}/{observed['artifact_id']}")
    assert status == 200 and body.startswith(b"\x89PNG")
