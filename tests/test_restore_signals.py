"""`archlab restore` under real signals: Ctrl-C/SIGTERM keep the output so far; SIGKILL leaves the
output folder whole or absent.

Each test runs ``python -m archlab restore`` as a subprocess and signals it at a moment it reports
itself: the first progress line (written every ~10 % when stderr is not a terminal) for SIGINT and
SIGTERM, the last one (the fit is done and the folder is being written) for SIGKILL. Waits poll with
generous deadlines, so a busy machine only makes the tests slower.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 600  # seconds; a 32-pixel fit of a few hundred iterations takes seconds on an idle machine
FAST = ["--image", "camera", "--size", "32", "--arch", "faster-dip-32", "--eval-every", "10"]
OUTPUTS = {"restored.png", "restored_last.png", "observed.png", "history.csv", "curves.png", "spec.json",
           "summary.json"}


def start(tmp_path: Path, out: Path, iterations: int) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    err = tmp_path / f"stderr-{time.monotonic_ns()}.txt"
    proc = subprocess.Popen([sys.executable, "-m", "archlab", "--threads", "1", "restore", *FAST, "--iterations",
                             str(iterations), "-o", str(out)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=err.open("w"))
    return proc, err


def wait_for(proc: subprocess.Popen, err: Path, needle: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while needle not in err.read_text():
        assert proc.poll() is None, f"exited {proc.returncode} before {needle!r}: {err.read_text()}"
        assert time.monotonic() < deadline, f"no {needle!r} within {DEADLINE} s"
        time.sleep(0.02)


def finish(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()


def whole(out: Path) -> bool:
    names = {p.name for p in out.iterdir()}
    return names == OUTPUTS and "iterations" in json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_keeps_the_output_so_far(tmp_path, sig):
    out = tmp_path / "out"
    proc, err = start(tmp_path, out, 1000)
    wait_for(proc, err, "iteration 100/1000")
    proc.send_signal(sig)
    assert finish(proc) == 130, err.read_text()
    lines = err.read_text().strip().splitlines()
    assert "Traceback" not in err.read_text() and lines[-1].startswith("archlab restore: interrupted at iteration")
    assert whole(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["stop_reason"] == "interrupted"
    assert 100 <= summary["iterations"] < 1000 and summary["peak_iteration"] >= 10
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) >= 1 + 10  # the header and every evaluation up to the interrupt
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_sigkill_leaves_the_folder_whole_or_absent(tmp_path):
    out = tmp_path / "out"
    outcomes = []
    for run in range(4):  # into a new folder, then each replacing the earlier output
        proc, err = start(tmp_path, out, 20)
        if run == 0:
            assert finish(proc) == 0, err.read_text()
            continue
        wait_for(proc, err, "iteration 20/20")  # the fit is over: the folder is being written
        proc.send_signal(signal.SIGKILL)
        finish(proc)
        outcomes.append("whole" if out.exists() and whole(out) else "absent" if not out.exists() else "broken")
        assert outcomes[-1] != "broken", sorted(p.name for p in out.iterdir())
    proc, err = start(tmp_path, out, 20)  # a later run finishes and clears what the killed ones left
    assert finish(proc) == 0, err.read_text()
    assert whole(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], outcomes
