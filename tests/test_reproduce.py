"""Reproductions: resumable CSV rows, runs split over processes by claims, the Markdown table."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from archlab import images, metrics, models, reproduce, reproductions, restoration, tasks

TINY = models.ArchSpec(kind="decoder", depth=2, width=8, skip=0, lipschitz=2.0, norm="mean_only").to_dict()


def _runs():
    fit = {"iterations": 20, "lr": 0.01, "eval_every": 10, "window": 10, "stop": "record"}
    return [reproductions.Run(config, "camera", TINY, {"task": "denoise", "sigma": 25.0}, fit, downscale=16)
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
        reproduce.run_experiment(tiny_experiment, tmp_path / "out", only="c")
    assert not (tmp_path / "out").exists()  # bad input leaves no output folder


def _row(config, image, **values):
    base = {"config": config, "image": image, "size": "128x128", "observation_psnr": 20.0, "peak_psnr": 25.0,
            "peak_iteration": 500, "final_psnr": 24.0, "peak_psnr_ema": 25.5, "final_psnr_ema": 24.5,
            "stop_iteration": 900, "stop_psnr": 24.5, "iterations": 3000, "seconds": 10.0}
    return {**base, **values}


def test_denoise_set9_table_puts_the_papers_code_beside_each_run(tmp_path):
    rows = []
    for image, peak in (("Baboon", 24.9), ("F16", 26.5), ("House", 27.2), ("Peppers", 26.1)):
        rows.append(_row("ulyanov-dip", image, peak_psnr=peak, final_psnr=21.0))
        rows.append(_row("shi-decoder", image, peak_psnr=27.5, final_psnr=27.4, psnr_1000=26.55, psnr_2000=27.3))
    text = reproduce.write_table("denoise-set9", pd.DataFrame(rows), tmp_path)
    assert "| F16 | 20.00 | 26.50 | 26.59 | 500 | 21.00 | 5.50 |" in text  # ours, their code's peak, the drop
    mean = next(line for line in text.splitlines() if line.startswith("| mean"))
    assert mean.split(" | ")[3] == "26.22"  # their code's mean peak, 26.225 (REFERENCE §5b: 26.23)
    assert "| F16: their code | 26.75 | 27.21 |" in text and "| F16: difference | -0.20 | 0.09 |" in text
    assert "| Baboon | 26.55 | 27.30 |" in text and "Baboon: their code" not in text
    assert "met" not in text  # verdicts belong to the results README, not to the library's output


def test_denoise_set9_runs_use_the_reference_degradation_and_fp32():
    runs = reproductions.denoise_set9_runs()
    assert {r.config for r in runs} == {"ulyanov-dip", "shi-decoder"} and len(runs) == 8
    assert all(r.task == {"task": "denoise", "sigma": 25.0, "rng": "numpy"} and r.resize == "pil" for r in runs)
    decoder = next(r for r in runs if r.config == "shi-decoder")
    assert decoder.arch["lipschitz"] == "auto" and decoder.fit["lr"] == 0.001 and decoder.fit["input_jitter"] == 0


def test_tasks_table_scores_every_task_against_its_observation(tmp_path):
    rows = [_row("denoise σ=25", "0000", stop_rule="discrepancy", stop_psnr=27.0),
            _row("sr ×4", "F16", observation_psnr=26.0, stop_rule="wmv", stop_psnr=25.5),
            _row("enhance λ=1", "tulips", stop_rule="ratio", stop_psnr=float("nan"), sharpness_observed=0.02,
                 sharpness_restored=0.05),
            _row("denoise σ=25" + reproduce.DIP_BASELINE, "0000", stop_rule="discrepancy", stop_psnr=26.0,
                 final_psnr=22.5, peak_psnr=28.25, seconds=30.0)]
    text = reproduce.write_table("tasks", pd.DataFrame(rows), tmp_path)
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert len(lines) == 5  # header, separator, three tasks: the DIP run is a column, not a row
    assert "| discrepancy | 900 | 27.00 | 24.00 | 25.00 |" in lines["denoise σ=25"]
    assert lines["denoise σ=25"].endswith("| yes | 26.00 | 22.50 | 28.25 | 30.00 |")
    assert lines["sr ×4"].endswith("| NO |  |  |  |  |")
    assert lines["enhance λ=1"].endswith("| yes |  |  |  |  |") and "enhanced 0.0500" in text


def test_numeric_image_names_stay_strings(tmp_path):
    pd.DataFrame([_row("denoise σ=25", "0000")]).to_csv(tmp_path / "results.csv", index=False)
    assert reproduce._finished(tmp_path / "results.csv") == {"denoise σ=25|0000"}


def test_missing_datasets_fail_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce.images, "datasets_root", lambda: tmp_path / "empty")
    with pytest.raises(ValueError, match=r"set9/image_Baboon512rgb.png not found .* it needs set9"):
        reproduce.run_experiment("denoise-set9", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"it needs cbsd68, classic5, enhancement, inpainting, set12, set9"):
        reproduce.run_experiment("tasks", tmp_path / "out")


def test_progress_lines_count_the_runs_and_estimate_the_time_left(tiny_experiment, tmp_path):
    lines = []
    reproduce.run_experiment(tiny_experiment, tmp_path, device="cpu", log=lines.append)
    assert lines[0].startswith("[1/2] a camera") and "min of fits left" in lines[0]
    assert lines[1].startswith("[2/2] b camera") and "left" not in lines[1]


def _datasets_found() -> bool:
    try:
        images.datasets_root()
    except ValueError:
        return False
    return True


@pytest.mark.skipif(not _datasets_found(), reason="needs the shared datasets ($ARCHLAB_DATASETS)")
def test_stopping_covers_every_task_on_four_images_through_both_networks():
    runs = reproductions.stopping_runs()
    tasks = {r.config.split(" · ")[0] for r in runs}
    assert tasks == {"denoise σ=15", "denoise σ=25", "denoise σ=50", "poisson ζ=0.1", "jpeg q=10",
                     "inpaint center 0.25", "inpaint bernoulli 0.5", "sr ×4"}
    for task in tasks:
        for arch in ("ulyanov-dip", "controlled-64"):
            chosen = [r for r in runs if r.config == f"{task} · {arch}"]
            assert len({r.image for r in chosen}) == 4 and all(r.fit["stop"] == "record" for r in chosen)
    assert all(tuple(reproduce.load_clean(r).shape[-2:]) == (64, 64) for r in runs[::8])


def test_stopping_table_scores_each_rule_against_the_oracle_peak(tmp_path):
    curves = tmp_path / "curves"
    curves.mkdir()
    history = pd.DataFrame({"iteration": [10, 20, 30], "psnr": [20.0, 25.0, 24.0], "psnr_ema": [19.0, 24.0, 24.5]})
    rows = []
    for image, wmv_psnr in (("a", 24.0), ("b", 25.0)):
        rows.append(_row("denoise σ=25 · controlled-64", image, peak_psnr=25.0, final_psnr_ema=24.5,
                         rules="ratio wmv emv discrepancy ema_discrepancy", stop_rule="ema_discrepancy",
                         ratio_iteration=None, ratio_psnr=None, wmv_iteration=20, wmv_psnr=wmv_psnr,
                         emv_iteration=30, emv_psnr=24.0, discrepancy_iteration=20, discrepancy_psnr=24.8,
                         ema_discrepancy_iteration=30, ema_discrepancy_psnr=25.2, ema_discrepancy_psnr_ema=25.2))
        history.to_csv(curves / (reproduce.slug(f"denoise σ=25 · controlled-64|{image}") + ".csv"), index=False)
    rows.append(_row("sr ×4 · controlled-64", "c", peak_psnr=23.0, rules="ratio wmv emv", stop_rule="wmv",
                     wmv_iteration=20, wmv_psnr=22.0))
    text = reproduce.write_table("stopping", pd.DataFrame(rows), tmp_path)
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    # a rule that never detected returns the last EMA (24.5: gap 0.5); the auto rule is the task's
    assert "| a | 25.00 | 500 | 25.50 | 24.00 |  | 24.50 | 0.50 | 20 | 24.00 | 1.00 |" in text
    assert "| 20 | 24.80 | 0.20 | 30 | 25.20 | -0.20 | ema_discrepancy | 25.20 | -0.20 | 25.20 |" in lines["a"]
    assert "b" in lines
    assert "sr ×4" in text and "discrepancy" not in lines["c"]
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["denoise_=25.png"]


def test_an_auto_run_fits_what_the_recommendation_gives_its_observation(tmp_path, monkeypatch):
    from archlab import recommend

    fit = {"iterations": 6, "eval_every": 2, "window": 4, "stop": "record"}
    run = reproductions.Run("auto", "camera", reproductions.AUTO, {"task": "denoise", "sigma": 25.0}, fit,
                            downscale=16)
    advice = recommend.recommend(images.resize(images.load("camera"), scale=1 / 16))
    monkeypatch.setattr(recommend, "recommend", lambda y, task: advice.__class__(
        **{**advice.__dict__, "spec": TINY_SPEC, "fit": {"iterations": 4, "lr": 0.02, "stop": "auto"}}))
    row = reproduce.execute(run, "cpu")
    assert row["chosen"] == f"depth=2 width=8 skip=0 upsampler=bilinear lipschitz=2.0 lr=0.02 input_jitter={1 / 30}"
    assert row["iterations"] <= 4  # the advice's budget and its stop


TINY_SPEC = models.ArchSpec.from_dict(TINY)


def test_the_recommend_reproduction_puts_the_recommendation_beside_default_dip_and_oracle(tmp_path, monkeypatch):
    from archlab import learnt
    from test_learnt import synthetic_table

    path = tmp_path / "recommend-denoise.csv"
    synthetic_table(range(10)).to_csv(path, index=False)
    monkeypatch.setattr(learnt, "table_path", lambda task: path if task == "denoise" else tmp_path / "none.csv")
    runs = reproductions.recommend_runs()
    methods = {r.config for r in runs}
    assert methods == {"denoise · recommended", "denoise · default", "denoise · ulyanov-dip", "denoise · grid 1",
                       "denoise · grid 2", "denoise · grid 3",  # the table has three configurations
                       "denoise · recommended ×3", "denoise · default ×3"}
    assert len(runs) == 8 * len(reproductions.RECOMMEND_IMAGES) >= 8 * 20
    assert {r.restarts for r in runs if "×3" in r.config} == {3} and {r.restarts for r in runs if "×" not in r.config} == {1}
    assert not any(r.image.startswith("cbsd68") for r in runs)  # the studies' training images stay out
    assert next(r for r in runs if r.config.endswith("grid 1")).arch["kind"] == "decoder"
    grid = next(r for r in runs if r.config.endswith("grid 1"))
    assert grid.fit["input_jitter"] == learnt.DEFAULT_CONFIG["input_jitter"] and "input_jitter" not in grid.arch
    table = synthetic_table(range(10))
    table[(table["width"] != 128) | (table["image"] != "im0")].to_csv(path, index=False)
    partial = {r.config for r in reproductions.recommend_runs()}  # width 128 missed an image: not in the grid
    assert {m for m in partial if "grid" in m} == {"denoise · grid 1", "denoise · grid 2"}
    rows = []
    for image, offset in (("01", 0.0), ("02", 1.0)):
        for method, psnr, seconds in (("recommended", 27.0, 5.0), ("default", 26.0, 6.0), ("ulyanov-dip", 25.5, 9.0),
                                      ("grid 1", 27.5, 5.0), ("grid 2", 26.5, 4.0), ("recommended ×3", 27.75, 15.0),
                                      ("default ×3", 26.25, 18.0)):
            rows.append({"config": f"denoise · {method}", "image": image, "stop_psnr": psnr + offset,
                         "seconds": seconds, "chosen": "depth=3 width=32" if method == "recommended" else None})
    text = reproduce.write_table("recommend", pd.DataFrame(rows), tmp_path)
    mean = next(line for line in text.splitlines() if line.startswith("| mean"))
    assert "| 27.50 | 5.00 | 26.50 | 6.00 | 26.00 | 9.00 | 28.25 | 15.00 | 26.75 | 18.00 | 28.00 |" in mean
    assert mean.endswith("| 1.00 | 1.50 | -0.50 | 1.50 |")  # recommended ×3 − default ×3: 1.50
    assert "2× depth=3 width=32" in text
    timed = pd.DataFrame(rows).assign(cpu_seconds=lambda f: f["seconds"] / 2)
    timed.loc[(timed["config"] == "denoise · default ×3") & (timed["image"] == "02"), "cpu_seconds"] = float("nan")
    mean = next(line for line in reproduce.write_table("recommend", timed, tmp_path).splitlines()
                if line.startswith("| mean"))
    assert mean.endswith("| 1.00 | 1.50 | -0.50 | 1.50 | 2.50 | 3.00 | 7.50 |")  # default ×3 lacks one: no column
    monkeypatch.setattr(learnt, "table_path", lambda task: tmp_path / "none.csv")
    with pytest.raises(ValueError, match="no learnt table for the tasks of recommend-denoise, recommend-poisson"):
        reproductions.recommend_runs()


def test_the_recommend_evaluation_fits_the_tasks_its_studies_learnt_from():
    from archlab import studies

    tasks_evaluated = {run.task["task"]: run.task for run in reproductions.recommend_runs()}
    for name in reproductions.RECOMMEND_STUDIES:
        (label, task), = studies.load_study(name).tasks
        assert tasks.task_from_dict(tasks_evaluated[task.name]).to_dict() == task.to_dict()


def test_a_run_with_restarts_reports_the_mean_of_its_seeded_fits(tmp_path):
    fit = {"iterations": 6, "eval_every": 2, "window": 4, "stop": "auto", "lr": 0.01}
    task = {"task": "denoise", "sigma": 25.0}
    one = reproductions.Run("one", "camera", TINY, task, fit, downscale=16)
    three = reproductions.Run("three", "camera", TINY, task, fit, downscale=16, restarts=3)
    single, averaged = reproduce.execute(one, "cpu"), reproduce.execute(three, "cpu")
    assert averaged["fits"] == 3 and "fits" not in single
    assert averaged["peak_psnr"] == pytest.approx(single["peak_psnr"])  # the first fit is the single run
    t = tasks.task_from_dict(task)
    observation = t.observe(reproduce.load_clean(three), seed=0)
    mean, fits = restoration.fit_restarts(TINY_SPEC, t, observation, 3, device="cpu", progress=False, fast=False,
                                          **fit)
    assert averaged["stop_psnr"] == pytest.approx(float(metrics.psnr(mean, observation.reference)), abs=1e-4)
    assert averaged["seconds"] >= single["seconds"]
    with pytest.raises(ValueError, match="trajectories are recorded for one fit"):
        reproduce.execute(three, "cpu", trajectory=tmp_path / "t.npz")


def test_the_recommend_reproduction_runs_the_recommendation_as_restore_does(tmp_path, monkeypatch):
    from archlab import learnt
    from test_learnt import budget_rows, synthetic_table

    path, measured = tmp_path / "recommend-denoise.csv", tmp_path / "recommend-denoise-restorations.csv"
    synthetic_table(range(10)).to_csv(path, index=False)
    budget_rows().to_csv(measured, index=False)  # within the default's time: six fits of width 8
    monkeypatch.setattr(learnt, "table_path", lambda task: path if task == "denoise" else tmp_path / "none.csv")
    monkeypatch.setattr(learnt, "restorations_path", lambda task: measured if task == "denoise" else tmp_path / "no.csv")
    learnt.shipped_within_budget.cache_clear()
    try:
        runs = reproductions.recommend_runs()
    finally:
        learnt.shipped_within_budget.cache_clear()
    restored = {r.config: r.restarts for r in runs if "×" in r.config}
    assert restored == {"denoise · recommended ×6": 6, "denoise · default ×3": 3}
    rows = [{"config": f"denoise · {method}", "image": image, "stop_psnr": psnr, "seconds": seconds}
            for image in ("01", "02") for method, psnr, seconds in
            (("recommended", 27.0, 5.0), ("default", 26.0, 6.0), ("recommended ×6", 28.0, 17.0),
             ("default ×3", 26.25, 18.0))]
    text = reproduce.write_table("recommend", pd.DataFrame(rows), tmp_path)
    assert "recommended ×6 − default ×3" in text
    assert next(line for line in text.splitlines() if line.startswith("| mean")).endswith("| 1.00 | 1.75 |")
