"""Pinned fits: a short fixed-seed fit per preset and per task, compared with values recorded before a
refactoring, so a change of structure that changes a number fails here.

Regenerate (only when a number is meant to change, saying why in the commit):
``python tests/test_pinned.py`` rewrites ``tests/data/pinned_fits.json``.

Tolerance: the fits run on one thread, so on the CPU that pinned them the numbers agree to a relative 1e-6.
Another CPU, even of the same ``torch.backends.cpu.get_cpu_capability()``, may run other kernels (oneDNN picks
them by instruction set: measured, an AVX512 machine with avx512_fp16 moved ``ulyanov-dip``'s loss by 30 % in
six iterations), and Adam's first steps (≈ lr · sign(g)) turn a flipped sign of a near-zero gradient into a
step of full size. So the file keeps one set of pins per CPU kind met so far and each case must match one of
them to 1e-6; ``python tests/test_pinned.py --add`` adds the pins of a new kind of CPU (only with the code
unchanged since the last pins).
"""

import json
import platform
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from archlab import images, models, reproduce, tasks
from archlab.fitting import fit

PINNED = Path(__file__).parent / "data" / "pinned_fits.json"
RESULTS = Path(__file__).parent.parent / "results"
COLUMNS = ("loss", "psnr", "psnr_ema", "ratio", "fbc_0", "fbc_4")
TASKS = {"denoise": {"task": "denoise", "sigma": 25.0}, "poisson": {"task": "poisson", "scale": 0.1},
         "jpeg": {"task": "jpeg", "quality": 10}, "inpaint-center": {"task": "inpaint", "mask": "center", "ratio": 0.25},
         "inpaint-bernoulli": {"task": "inpaint", "mask": "bernoulli", "drop": 0.5},
         "sr": {"task": "sr", "factor": 2}, "enhance": {"task": "enhance", "lipschitz": 1.0}}
CASES = {**{f"preset {name}": (name, TASKS["denoise"]) for name in models.PRESETS},
         **{f"task {name}": ("controlled-64", task) for name, task in TASKS.items()}}


def _fit(arch: str, task_dict: dict) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_one_thread(arch, task_dict)
    finally:
        torch.set_num_threads(threads)


def _fit_one_thread(arch: str, task_dict: dict) -> dict:
    task = tasks.task_from_dict(task_dict)
    clean = images.center_crop(images.resize(images.load("camera"), scale=64 / 512), 32, size=(64, 64))
    result = fit(arch, task, task.observe(clean, seed=0), iterations=6, eval_every=2, window=2, seed=0,
                 progress=False, fast=False, device="cpu")
    history = result.history
    values = {c: history[c].tolist() for c in COLUMNS if c in history}
    restored = result.restored.double()
    return values | {"restored_sum": float(restored.sum()), "restored_abs_dev": float((restored - restored.mean()).abs().sum())}


@pytest.mark.parametrize("case", list(CASES))
def test_a_short_fit_gives_the_pinned_numbers(case):
    got = _fit(*CASES[case])
    errors = []
    for pins in json.loads(PINNED.read_text())["pins"]:
        expected = pins["cases"][case]
        assert set(got) == set(expected)
        try:
            for key, value in expected.items():
                np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-7, err_msg=f"{case}: {key}")
            return
        except AssertionError as exc:
            errors.append(f"pins of {pins['cpu']}: {str(exc).strip()}")
    pytest.fail("\n".join(errors))


def _cpu() -> str:
    """The CPU's name and capability (what a set of pins was recorded on)."""
    names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M) \
        if Path("/proc/cpuinfo").exists() else []
    return f"{names[0] if names else platform.processor()} ({torch.backends.cpu.get_cpu_capability()})"


@pytest.mark.parametrize("name", ["denoise-set9", "decoder-lambda", "decoder-lambda-256", "tasks"])
def test_the_committed_tables_are_rebuilt_from_their_rows_unchanged(name, tmp_path):
    folder = RESULTS / name
    table = reproduce.write_table(name, reproduce.read_rows(folder / "results.csv"), tmp_path)
    assert table == (folder / "table.md").read_text()


if __name__ == "__main__":
    pins = {"cpu": _cpu(), "cases": {case: _fit(*args) for case, args in CASES.items()}}
    kept = json.loads(PINNED.read_text())["pins"] if "--add" in sys.argv else []
    PINNED.write_text(json.dumps({"pins": [*kept, pins]}, indent=1) + "\n")
    sys.exit(0)
