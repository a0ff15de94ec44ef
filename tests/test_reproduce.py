"""Reproductions: resumable CSV rows, runs split over processes by claims, the Markdown table."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from archlab import models, reproduce

TINY = models.ArchSpec(kind="decoder", depth=2, width=8, skip=0, lipschitz=2.0, norm="mean_only").to_dict()


def _runs():
    fit = {"iterations": 20, "lr": 0.01, "eval_every": 10, "window": 10, "stop": "record"}
    return [reproduce.Run(config, "camera", TINY, {"task": "denoise", "sigma": 25.0}, fit, downscale=16)
            for config in ("a", "b")]


@pytest.fixture
def tiny_experiment(monkeypatch):
    monkeypatch.setitem(reproduce.EXPERIMENTS, "tiny", _runs)
    return "tiny"


def test_rows_are_written_once_and_a_rerun_resumes(tiny_experiment, tmp_path):
    table = reproduce.run_experiment(tiny_experiment, tmp_path, device="cpu", fast=False, log=lambda _: None)
    assert list(table["config"]) == ["a", "b"] and (table["engine"] == "fp32").all()
    assert table["peak_psnr"].between(5, 40).all() and (table["iterations"] == 20).all()
    again = reproduce.run_experiment(tiny_experiment, tmp_path, device="cpu", fast=False,
                                     log=lambda line: pytest.fail(f"reran: {line}"))
    assert len(again) == 2
    assert "### a" in reproduce.write_table(tiny_experiment, again, tmp_path)
    assert (tmp_path / "table.md").exists() and not list((tmp_path / "claims").iterdir())


def test_a_live_claim_is_left_to_its_process_and_a_dead_one_is_taken_over(tiny_experiment, tmp_path):
    claims = tmp_path / "claims"
    claims.mkdir()
    (claims / "a_camera.pid").write_text(str(os.getpid()))  # "a" is being fitted by a live process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (claims / "b_camera.pid").write_text(dead.stdout.strip())  # "b" was claimed by a process that died
    table = reproduce.run_experiment(tiny_experiment, tmp_path, device="cpu", fast=False, log=lambda _: None)
    assert list(pd.read_csv(tmp_path / "results.csv")["config"]) == ["b"] and len(table) == 1


def test_unknown_experiment_and_configuration_name_the_choices(tiny_experiment, tmp_path):
    with pytest.raises(ValueError, match="known: .*denoise-set9"):
        reproduce.run_experiment("nope", tmp_path)
    with pytest.raises(ValueError, match="configurations: a, b"):
        reproduce.run_experiment(tiny_experiment, tmp_path, only="c")
