"""Screenshot of a trial page of ``archlab study dashboard`` (optuna-dashboard) with headless Chromium.

Runs a small real study (astronaut at 64 px, σ = 25, a 2-level hourglass with nearest and bilinear
upsampling, 1200 iterations; about a minute of CPU), serves it on 127.0.0.1 and writes
``docs/dashboard-trial.png``:

    python docs/dashboard_screenshot.py [-o docs/dashboard-trial.png] [--chromium chromium]

Needs the ``dashboard`` extra and a Chromium (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = """
name = "dashboard-demo"
description = "Nearest against bilinear upsampling, denoising astronaut (64 px, sigma 25)."
seeds = [0]

[[tasks]]
task = "denoise"
sigma = 25

[[images]]
source = "astronaut"
scale = 0.25
crop = 64

[arch]
kind = "hourglass"
depth = 2
width = 16
skip = 4
norm = "mean_only"

[fit]
iterations = 1200
lr = 0.01
eval_every = 20
window = 200

[space]
upsampler = ["nearest", "bilinear"]

[objectives]
peak_psnr = "maximize"
"""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "dashboard-trial.png"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--size", default="1400,1300", help="window size WIDTH,HEIGHT in pixels")
    args = parser.parse_args()
    if not args.chromium:
        parser.error("--chromium: no chromium found; install it (apt-get install chromium)")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "dashboard-demo.toml"
        study.write_text(STUDY)
        subprocess.run([sys.executable, "-m", "archlab", "study", "run", str(study)], cwd=tmp, env=env, check=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "archlab", "study", "dashboard", str(study),
                                   "--port", str(port)], cwd=tmp, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            study_id = _wait_for_study(base, "dashboard-demo", deadline=300)
            url = f"{base}/dashboard/studies/{study_id}/trials?numbers=1"
            with tempfile.TemporaryDirectory() as profile:
                subprocess.run([args.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                f"--window-size={args.size}", "--virtual-time-budget=20000",
                                f"--screenshot={Path(args.output).resolve()}", url],
                               check=True, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            server.terminate()
            server.wait(30)
    print(f"wrote {args.output}")
    return 0


def _wait_for_study(base: str, name: str, deadline: float) -> int:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as reply:
                found = [s for s in json.load(reply)["study_summaries"] if s["study_name"] == name]
            if found:
                return found[0]["study_id"]
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"optuna-dashboard did not answer within {deadline} s")


if __name__ == "__main__":
    sys.exit(main())
