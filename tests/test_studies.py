"""Study files, the trial objective, resumable runs, failures, reports and the ``study`` CLI.

Most tests replace :func:`archlab.fitting.fit` inside the worker by a fake with closed-form PSNR
curves, so the objectives can be checked exactly and the tests stay fast; one runs real fits
on a 32×32 crop (2-level hourglass of width 8, 30 iterations).
"""

import math
import re
import tomllib
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

from archlab import filters, report, studies
from archlab.cli import main
from archlab.fitting import FitResult
from archlab.studies import worker
from studyfiles import study_toml

TINY = study_toml("tiny", description="two upsamplers on 32x32 crops",
                  images=[{"source": "astronaut", "size": 64, "crop": 32},
                          {"source": "camera", "label": "cam", "size": 64, "crop": 32}],
                  fit={"iterations": 30, "eval_every": 5, "window": 10})


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


def curve(peak: float, peak_at: int, iterations: int = 100, every: int = 10) -> pd.DataFrame:
    """A parabola of PSNR: ``peak − 0.001 (i − peak_at)²`` at every ``every``-th iteration, FBC bands rising."""
    it = np.arange(every, iterations + 1, every)
    psnr = peak - 0.001 * (it - peak_at) ** 2
    frame = pd.DataFrame({"iteration": it, "loss": 0.01, "psnr_obs": 20.0, "blur": 0.3, "sharpness": 1.0,
                          "ratio": 0.3, "psnr": psnr, "psnr_ema": psnr - 1, "ssim": 0.5, "ssim_ema": 0.5})
    for band in range(5):
        frame[f"fbc_{band}"] = it / iterations / (band + 1)
    frame["seconds"] = it / 1000
    return frame


def fake_fit(peaks: dict, stop_at: int | None = 70, calls: list | None = None, fail: dict | None = None):
    """``fit`` stand-in: PSNR curve(peaks[upsampler]) per image; ``fail[upsampler]`` is raised or 'diverged'."""
    def run(arch, task, observation, *, seed, **settings):
        y, reference = observation.y, observation.reference
        if calls is not None:
            calls.append((arch.upsampler, tuple(y.shape), seed))
        failure = (fail or {}).get(arch.upsampler)
        if isinstance(failure, BaseException):
            raise failure
        peak, peak_at = peaks[arch.upsampler]
        history = curve(peak, peak_at)
        return FitResult(output=reference, ema_output=reference, history=history,
                         stopped_at=int(history["iteration"].iloc[-1]),
                         stop_reason="diverged" if failure == "diverged" else "iterations", seconds=0.5,
                         cpu_seconds=0.4,
                         spec=arch.to_dict(), settings=settings, task=task.to_dict(), auto_stop_iteration=stop_at)
    return run


# --- study files -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["quick-demo", "lipschitz-sweep", "gaussian-sigma", "upsampler-ablation",
                                  "depth-width-skips", "texture-width-labels", "recommend-denoise", "recommend-poisson",
                                  "recommend-denoise-grey", "recommend-poisson-fast"])
def test_shipped_studies_validate_and_round_trip(name):
    spec = studies.load_study(name)
    assert spec.name == name
    assert studies.StudySpec.from_dict(spec.to_dict()) == spec
    assert re.search(r"runtime: about \d+ minutes", studies.shipped()[name])
    grids = [p.grid() for p in spec.space]
    assert spec.grid_size == (None if None in grids else math.prod(len(g) for g in grids))
    assert spec.is_grid or spec.n_trials


def test_a_folder_source_takes_limit_images_after_skip(tmp_path):
    from PIL import Image

    for name in ("a", "b", "c", "d"):
        Image.new("L", (8, 8)).save(tmp_path / f"{name}.png")
    picked = studies.spec.ImageSpec.parse(0, {"source": str(tmp_path), "skip": 1, "limit": 2, "grey": True})
    assert [label for label, _ in picked.resolve()] == ["b", "c"]
    assert picked.to_value() == {"source": str(tmp_path), "grey": True, "skip": 1, "limit": 2}
    assert [label for label, _ in studies.spec.ImageSpec.parse(0, {"source": str(tmp_path), "skip": 3}).resolve()] == ["d"]
    with pytest.raises(ValueError, match=r"images.skip: 4 is invalid; allowed: 0 to 3 \(folder .* holds 4 images\)"):
        studies.spec.ImageSpec.parse(0, {"source": str(tmp_path), "skip": 4}).resolve()
    with pytest.raises(ValueError, match="images\\[0\\].skip: -1 is invalid; allowed: an integer ≥ 0"):
        studies.spec.ImageSpec.parse(0, {"source": str(tmp_path), "skip": -1})


def test_shipped_studies_carry_the_papers_grids():
    ablation = studies.load_study("upsampler-ablation")
    assert ablation.grid_space() == {"upsampler": ["nearest", "bilinear", "L14", "L15", "L-60", "L-100"]}
    assert [label for image in ablation.images for label, _ in image.resolve()] == ["F16 (coarse)", "Baboon (fine)"]
    assert studies.load_study("lipschitz-sweep").grid_space() == {"lipschitz": [1.0, 2.0, 3.0]}
    sigma = studies.load_study("gaussian-sigma")
    assert [sigma.configure({"sigma": s})[0].upsampler for s in (0.0, 0.5, 1.0)] == \
        ["bed-of-nails", "gauss-0.5", "gauss-1.0"]


MALFORMED = [
    (("seeds = [0]", "seeds = [0]\ncolour = 3"), "study: unknown key 'colour'; allowed: name,"),
    (("upsampler = [", "upsampler_kind = ["), "space: unknown parameter 'upsampler_kind'; allowed: kind, depth"),
    (('peak_psnr = "maximize"', 'peak_psnr = "up"'),
     "objectives.peak_psnr: 'up' is invalid; allowed: maximize, minimize"),
    (('peak_psnr = "maximize"', 'best = "maximize"'), "objectives: unknown objective 'best'; allowed: peak_psnr,"),
    (('["nearest", "bilinear"]', '["nearest", "no-such-filter"]'),
     "space {'upsampler': 'no-such-filter'}: arch.upsampler: 'no-such-filter' is invalid; allowed: L-100"),
    (('["nearest", "bilinear"]', '["nearest"]\nwidth = [8, 0]'),
     "arch.width: 0 is invalid; allowed: positive integers"),
    (('["nearest", "bilinear"]', '["nearest"]\nlr = { low = 0.001, high = 0.1, log = true }'),
     "space.lr: the grid sampler needs choices or a step"),
    (('["nearest", "bilinear"]', '["nearest"]\nlr = { low = 0.0, high = 0.1, log = true }'),
     "space.lr.low: 0.0 is invalid; allowed: a number > 0 with log = true"),
    (('["nearest", "bilinear"]', '["nearest"]\nlr = { low = 0.1, high = 0.01 }'),
     "space.lr: low=0.1, high=0.01 are invalid; allowed: numbers with low < high"),
    (('["nearest", "bilinear"]', '["nearest"]\nlr = { low = 0.01, high = 0.1, by = 2 }'),
     "space.lr: unknown key 'by'; allowed: low, high, log, step"),
    (("window = 10", "window = 10\nseed = 3"), "fit: unknown key 'seed'; allowed: iterations"),
    (("window = 10", "window = 7"), "fit.window: 7 is invalid; allowed: a positive multiple of eval_every"),
    (('sigma = 25', 'sigma = -1'), "denoise.sigma"),
    (('task = "denoise"', 'task = "deblur"'), "task: unknown task 'deblur'; accepted: denoise"),
    (('source = "camera"', 'source = "no/such/image.png"'), "images.source: 'no/such/image.png' is not a built-in"),
    (("crop = 32\n\n[[images]]", "crop = 1\n\n[[images]]"), "images[0].crop: 1 is invalid; allowed: an integer ≥ 2"),
    (('label = "cam"', 'label = "astronaut"'), "images: two images share the label"),
    (('[objectives]', '[sampler]\nkind = "tpe"\n\n[objectives]'), "n_trials: the tpe sampler needs n_trials"),
    (('[objectives]', '[sampler]\nkind = "annealing"\n\n[objectives]'),
     "sampler.kind: 'annealing' is invalid; allowed: grid, random, tpe, nsga2, cmaes"),
    (("seeds = [0]", "seeds = [0]\nn_trials = 5"), "n_trials: not used by the grid sampler (the grid has 2 points)"),
    (('[objectives]', '[pruner]\nkind = "median"\n\n[objectives]\npeak_iteration = "minimize"'),
     "pruner.kind: pruning needs a single objective"),
    (('[objectives]', '[pruner]\nkind = "early"\n\n[objectives]'),
     "pruner.kind: 'early' is invalid; allowed: none, median, percentile"),
    (("seeds = [0]", "seeds = []"), "seeds: [] is invalid"),
    (('name = "tiny"', 'name = "tiny study!"'), "name: 'tiny study!' is invalid"),
]


@pytest.mark.parametrize(("change", "message"), MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_study_files_are_rejected_before_any_trial(tmp_path, change, message):
    path = write(tmp_path, edit(TINY, *change))
    with pytest.raises(ValueError) as info:
        studies.run(path, n_trials=1)
    assert message in str(info.value)
    assert not (tmp_path / "study.db").exists()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("fit", 3, "fit: 3 is invalid; allowed: a table [fit]"),
    ("tasks", {"task": "denoise"}, "tasks: {'task': 'denoise'} is invalid; allowed: an array of tables [[tasks]]"),
    ("images", [{"path": "x.png"}], "images[0]: {'path': 'x.png'} is invalid; allowed: a source string or a table"),
    ("space", {}, "space: missing or empty"),
])
def test_sections_of_the_wrong_shape_are_rejected(key, value, message):
    data = {**tomllib.loads(TINY), key: value}
    with pytest.raises(ValueError) as info:
        studies.StudySpec.from_dict(data)
    assert message in str(info.value)


def test_sampler_keyword_errors_list_the_allowed_keys(tmp_path):
    text = edit(TINY, "seeds = [0]", "seeds = [0]\nn_trials = 2")
    path = write(tmp_path, edit(text, "[objectives]", '[sampler]\nkind = "tpe"\nwarmup = 3\n\n[objectives]'))
    with pytest.raises(ValueError, match=r"allowed keys for TPESampler: kind, .*n_startup_trials"):
        studies.load_study(path)


def test_toml_syntax_errors_and_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="study: cannot parse"):
        studies.load_study(write(tmp_path, "name = \n"))
    with pytest.raises(ValueError, match="study: unknown study 'nope'; shipped: depth-width-skips, gaussian-sigma"):
        studies.load_study("nope")


def test_ranges_grids_and_suggestions():
    width = studies.Param.parse("width", {"low": 8, "high": 32, "step": 8})
    lr = studies.Param.parse("lr", {"low": 0.001, "high": 0.1, "log": True})
    sigma = studies.Param.parse("sigma", {"low": 0.0, "high": 1.0, "step": 0.25})
    assert width.is_int and width.grid() == [8, 16, 24, 32]
    assert sigma.grid() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert lr.grid() is None and not lr.is_int
    trial = optuna.trial.FixedTrial({"width": 24, "lr": 0.01})
    assert width.suggest(trial) == 24 and lr.suggest(trial) == 0.01
    for param in (width, lr, sigma):
        assert studies.Param.parse(param.name, param.to_value()) == param


def test_sigma_makes_the_gaussian_upsampler_of_paper_000(tmp_path):
    spec = studies.load_study("gaussian-sigma")
    arch, _ = spec.configure({"sigma": 0.7})
    assert arch.upsampler == {"kind": "gaussian", "sigma": 0.7}  # held by the spec: no file is written
    np.testing.assert_allclose(filters.get(arch.upsampler).taps, filters.design("gaussian", 2, sigma=0.7).taps)
    assert spec.configure({"sigma": 0.5})[0].upsampler == "gauss-0.5"
    assert not list(tmp_path.iterdir())


def test_default_storage_sits_beside_a_file_or_in_the_current_folder(tmp_path, monkeypatch):
    path = write(tmp_path, TINY)
    assert studies.default_storage(path) == f"sqlite:///{tmp_path / 'study.db'}"
    monkeypatch.chdir(tmp_path)
    assert studies.default_storage("quick-demo") == f"sqlite:///{tmp_path / 'quick-demo.db'}"
    assert studies.resolve_target(str(path), None) == ("tiny", f"sqlite:///{tmp_path / 'study.db'}")
    with pytest.raises(ValueError, match="storage: 'mysql://x' is invalid; allowed: sqlite"):
        studies.make_storage("mysql://x")


@pytest.mark.parametrize(("iterations", "space", "stride"), [
    (30, "", 50), (100, "", 100), (1500, "", 2000), (1200, "\niterations = [500, 3000]", 5000)])
def test_intermediate_steps_of_every_trial_share_one_stride(iterations, space, stride):
    text = edit(TINY, "iterations = 30", f"iterations = {iterations}")
    text = edit(text, '["nearest", "bilinear"]', '["nearest", "bilinear"]' + space)
    assert worker.step_stride(studies.StudySpec.from_dict(tomllib.loads(text))) == stride


def test_trial_results_rebuild_the_flat_run_attributes():
    trial = optuna.trial.create_trial(value=1.0, user_attrs={
        "run1.image": "cam", "run0.image": "astronaut", "run0.peak_psnr": 30.5, "run1.peak_psnr": 28.0,
        "run10.image": "x", "arch.depth": 2, "runner": "no"})
    assert studies.trial_results(trial) == [{"image": "astronaut", "peak_psnr": 30.5},
                                            {"image": "cam", "peak_psnr": 28.0}, {"image": "x"}]
    legacy = optuna.trial.create_trial(value=1.0, user_attrs={"results": [{"image": "a"}]})
    assert studies.trial_results(legacy) == [{"image": "a"}]


# --- running trials (fake fits) -------------------------------------------------------------------

def test_objectives_are_the_image_means_of_closed_form_curves(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(worker, "fit", fake_fit({"nearest": (30.0, 40), "bilinear": (32.0, 60)}, calls=calls))
    objectives = ('peak_psnr = "maximize"\npsnr_drop = "minimize"\npeak_iteration = "minimize"\n'
                  'stop_psnr = "maximize"\nstop_iteration = "minimize"')
    text = edit(edit(TINY, 'peak_psnr = "maximize"', objectives), "iterations = 30", "iterations = 100")
    study = studies.run(write(tmp_path, text), log=lambda _: None)
    assert sorted(c[0] for c in calls) == ["bilinear", "bilinear", "nearest", "nearest"]
    assert {c[1] for c in calls} == {(1, 3, 32, 32), (1, 1, 32, 32)}
    by = {t.params["upsampler"]: t for t in study.trials}
    # final = peak − 0.001 (100 − peak_at)², stop = peak − 0.001 (70 − peak_at)²
    assert by["nearest"].values == pytest.approx([30.0, 3.6, 40, 30.0 - 0.9, 70])
    assert by["bilinear"].values == pytest.approx([32.0, 1.6, 60, 32.0 - 0.1, 70])
    attrs = by["bilinear"].user_attrs
    assert attrs["arch.upsampler"] == "bilinear" and attrs["fit.iterations"] == 100
    assert studies.load_study(tmp_path / "study.toml").arch.replace(upsampler="bilinear").to_dict() == \
        {key[5:]: value for key, value in attrs.items() if key.startswith("arch.")}
    assert all(not isinstance(v, (dict, list)) or len(str(v)) < 40 for v in attrs.values())  # flat, readable
    assert [r["image"] for r in studies.trial_results(by["nearest"])] == ["astronaut", "cam"]
    assert attrs["run1.image"] == "cam" and attrs["run1.peak_psnr"] == pytest.approx(32.0)
    assert study.metric_names == ["peak_psnr", "psnr_drop", "peak_iteration", "stop_psnr", "stop_iteration"]
    # the PSNR of run k at iteration i is the intermediate value at step 100 k + i
    it = np.arange(10, 101, 10)
    psnr = 32.0 - 0.001 * (it - 60.0) ** 2
    assert by["bilinear"].intermediate_values == pytest.approx({**dict(zip(it.tolist(), psnr)),
                                                                **dict(zip((it + 100).tolist(), psnr))})
    assert len(study.best_trials) == 2  # neither dominates: nearest peaks earlier, bilinear higher


def test_failures_are_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    text = edit(TINY, '["nearest", "bilinear"]', '["nearest", "bilinear", "L14"]')
    fail = {"nearest": RuntimeError("out of memory"), "L14": "diverged"}
    monkeypatch.setattr(worker, "fit", fake_fit({"bilinear": (30.0, 40), "L14": (31.0, 40)}, fail=fail))
    study = studies.run(write(tmp_path, text), log=lambda _: None)
    by = {t.params["upsampler"]: t for t in study.trials}
    assert by["bilinear"].state == optuna.trial.TrialState.COMPLETE
    assert by["nearest"].state == by["L14"].state == optuna.trial.TrialState.FAIL
    assert by["nearest"].user_attrs["fail_reason"] == "RuntimeError: out of memory"
    assert by["L14"].user_attrs["fail_reason"].startswith("TrialDiverged: denoise/astronaut seed 0: the fit diverged")
    frame = studies.load(tmp_path / "study.toml")
    assert frame.loc[frame["state"] == "FAIL", "fail_reason"].str.len().gt(0).all()
    again = studies.run(tmp_path / "study.toml", log=lambda _: None)
    assert len(again.trials) == 3  # finished (failed or complete) grid points are not rerun


def test_rerun_continues_and_never_repeats_grid_points(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(worker, "fit", fake_fit({"nearest": (30.0, 40), "bilinear": (32.0, 60)}, calls=calls))
    path = write(tmp_path, TINY)
    first = studies.run(path, n_trials=1, log=lambda _: None)
    assert len(first.trials) == 1
    second = studies.run(path, log=lambda _: None)
    third = studies.run(path, log=lambda _: None)
    assert len(third.trials) == 2 and len(calls) == 4
    assert sorted(t.params["upsampler"] for t in second.trials) == ["bilinear", "nearest"]


def test_a_changed_definition_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(worker, "fit", fake_fit({"nearest": (30.0, 40), "bilinear": (32.0, 60)}))
    path = write(tmp_path, TINY)
    studies.run(path, n_trials=1, log=lambda _: None)
    path.write_text(edit(TINY, "iterations = 30", "iterations = 40"))
    with pytest.raises(ValueError, match=r"'tiny' exists in the storage with a different definition \(changed: fit\)"):
        studies.run(path, log=lambda _: None)


def test_ctrl_c_requeues_the_interrupted_trial(tmp_path, monkeypatch):
    interrupt = {"nearest": KeyboardInterrupt(), "bilinear": KeyboardInterrupt()}
    monkeypatch.setattr(worker, "fit", fake_fit({}, fail=interrupt))
    path = write(tmp_path, TINY)
    with pytest.raises(KeyboardInterrupt):
        studies.run(path, log=lambda _: None)
    monkeypatch.setattr(worker, "fit", fake_fit({"nearest": (30.0, 40), "bilinear": (32.0, 60)}))
    study = studies.run(path, log=lambda _: None)
    first, *rest = study.trials
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["fail_reason"] == "interrupted"
    retry = [t for t in rest if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].params == first.params
    assert sorted(t.params["upsampler"] for t in study.trials if t.state.name == "COMPLETE") == ["bilinear", "nearest"]


def test_a_retry_keeps_the_fits_its_interrupted_trial_finished(tmp_path, monkeypatch):
    calls = []
    finishes = fake_fit({"nearest": (30.0, 40), "bilinear": (32.0, 60)}, calls=calls)

    def interrupted_on_the_second_image(arch, task, observation, **settings):
        if len(calls) == 1 and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        return finishes(arch, task, observation, **settings)

    interrupted = []

    monkeypatch.setattr(worker, "fit", interrupted_on_the_second_image)
    path = write(tmp_path, TINY)
    with pytest.raises(KeyboardInterrupt):
        studies.run(path, log=lambda _: None)
    lines = []
    study = studies.run(path, log=lines.append)
    assert len(calls) == 4  # the retry fits only the image its interrupted trial had not finished
    assert any(line.endswith("(1 fit kept from trial 0)") for line in lines)
    first = study.trials[0]
    retry = next(t for t in study.trials if worker.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0)
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert worker.trial_results(retry)[0] == worker.trial_results(first)[0]
    assert [r["image"] for r in worker.trial_results(retry)] == ["astronaut", "cam"]
    assert retry.value == {"nearest": 30.0, "bilinear": 32.0}[retry.params["upsampler"]]
    assert min(retry.intermediate_values) < worker.step_stride(studies.load_study(path))  # run 0's curve, inherited
    curves = studies.load_curves(study, storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert sorted(curves.loc[curves["trial"] == retry.number, "run"].unique()) == [0, 1]


def test_a_sampled_study_spends_its_trial_budget_once(tmp_path, monkeypatch):
    monkeypatch.setattr(worker, "fit", fake_fit({"nearest": (30.0, 40), "bilinear": (32.0, 60)}))
    text = edit(TINY, "seeds = [0]", "seeds = [0]\nn_trials = 3")
    sampled = 'lr = { low = 0.001, high = 0.1, log = true }\n\n[sampler]\nkind = "random"\nseed = 1\n\n[objectives]'
    text = edit(text, "[objectives]", sampled)
    path = write(tmp_path, text)
    assert len(studies.run(path, n_trials=1, log=lambda _: None).trials) == 1
    study = studies.run(path, log=lambda _: None)
    assert len(study.trials) == 3 and len(studies.run(path, log=lambda _: None).trials) == 3
    assert all(0.001 <= t.params["lr"] <= 0.1 and t.user_attrs["fit.lr"] == t.params["lr"] for t in study.trials)


def test_enqueued_points_run_first_and_once(tmp_path, monkeypatch):
    monkeypatch.setattr(worker, "fit", fake_fit({"nearest": (30.0, 40), "bilinear": (32.0, 60)}))
    text = edit(TINY, "seeds = [0]", "seeds = [0]\nn_trials = 3")
    sampled = ('lr = { low = 0.001, high = 0.1, log = true }\n\n[sampler]\nkind = "random"\nseed = 1\n\n'
               '[[enqueue]]\nupsampler = "bilinear"\nlr = 0.002\n\n[objectives]')
    path = write(tmp_path, edit(text, "[objectives]", sampled))
    first = studies.run(path, n_trials=1, log=lambda _: None).trials
    assert first[0].params == {"upsampler": "bilinear", "lr": 0.002}
    study = studies.run(path, log=lambda _: None)  # a second worker does not queue the point again
    assert len(study.trials) == 3 and sum(t.params == {"upsampler": "bilinear", "lr": 0.002} for t in study.trials) == 1


@pytest.mark.parametrize("enqueue, message", [
    ('[[enqueue]]\nupsampler = "bicubic"', r"enqueue\[0\]\.upsampler: 'bicubic' is outside the space"),
    ('[[enqueue]]\nlr = 0.5', r"enqueue\[0\]\.lr: 0.5 is outside the space; allowed: \{'low': 0.001"),
    ('[[enqueue]]\ndepth = 3', r"enqueue\[0\]: unknown parameter 'depth'; allowed: the space's upsampler, lr"),
    ('enqueue = [1]', r"enqueue: \[1\] is invalid; allowed: an array of tables"),
])
def test_enqueued_points_must_lie_in_the_space(tmp_path, enqueue, message):
    text = edit(TINY, "seeds = [0]", "seeds = [0]\nn_trials = 3")
    text = edit(text, "[objectives]", f'lr = {{ low = 0.001, high = 0.1, log = true }}\n\n[sampler]\nkind = "tpe"\n\n'
                                      f'{enqueue}\n\n[objectives]')
    if enqueue.startswith("enqueue ="):
        text = edit(text, "seeds = [0]\n", f"seeds = [0]\n{enqueue}\n").replace(f"\n{enqueue}\n\n[objectives]", "\n[objectives]")
    with pytest.raises(ValueError, match=message):
        studies.load_study(write(tmp_path, text))


def test_a_grid_study_refuses_enqueued_points(tmp_path):
    text = edit(TINY, "[objectives]", '[[enqueue]]\nupsampler = "nearest"\n\n[objectives]')
    with pytest.raises(ValueError, match="enqueue: the grid sampler tries every point already"):
        studies.load_study(write(tmp_path, text))


def test_cmaes_samples_a_continuous_space(tmp_path, monkeypatch):
    monkeypatch.setattr(worker, "fit", fake_fit({"nearest": (30.0, 40)}))
    text = edit(TINY, "seeds = [0]", "seeds = [0]\nn_trials = 3")
    text = edit(text, '["nearest", "bilinear"]', '["nearest"]\nlr = { low = 0.001, high = 0.1, log = true }\n'
                                                 'input_jitter = { low = 0.0, high = 0.05 }')
    text = edit(text, "[objectives]", '[sampler]\nkind = "cmaes"\nseed = 1\n\n[objectives]')
    study = studies.run(write(tmp_path, text), log=lambda _: None)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert isinstance(studies.load_study(tmp_path / "study.toml").make_sampler(), optuna.samplers.CmaEsSampler)
    assert len({(t.params["lr"], t.params["input_jitter"]) for t in study.trials}) == 3


def test_median_pruner_stops_a_trial_behind_the_median(tmp_path, monkeypatch):
    pruner = '[pruner]\nkind = "median"\nn_startup_trials = 1\nn_warmup_steps = 0\n\n[objectives]'
    text = edit(edit(TINY, "[objectives]", pruner), "iterations = 30", "iterations = 100")
    monkeypatch.setattr(worker, "fit", fake_fit({"nearest": (20.0, 40), "bilinear": (30.0, 40)}))
    lines = []
    study = studies.run(write(tmp_path, text), log=lines.append)
    by = {t.params["upsampler"]: t for t in study.trials}
    assert by["bilinear"].state == optuna.trial.TrialState.COMPLETE
    steps = sorted(by["bilinear"].intermediate_values)
    assert steps == [*range(10, 101, 10), *range(110, 201, 10)]  # run 1 starts at step 100 (the stride)
    assert by["bilinear"].intermediate_values[40] == by["bilinear"].intermediate_values[140] == 30.0
    if by["nearest"].number > by["bilinear"].number:
        assert by["nearest"].state == optuna.trial.TrialState.PRUNED
        assert len(studies.trial_results(by["nearest"])) == 1  # pruned after its first image
        assert by["nearest"].last_step == 100
        assert any(line.startswith(f"trial {by['nearest'].number} pruned in ") and "pruned at step 100" in line
                   for line in lines)
    else:
        assert by["nearest"].state == optuna.trial.TrialState.COMPLETE


def test_a_pruner_needs_a_psnr_objective(tmp_path):
    text = edit(TINY, "[objectives]", '[pruner]\nkind = "median"\n\n[objectives]')
    text = edit(text, 'peak_psnr = "maximize"', 'peak_iteration = "minimize"')
    with pytest.raises(ValueError, match="pruner.kind: a pruner compares the PSNR at each evaluation"):
        studies.run(write(tmp_path, text), log=lambda _: None)
    assert not (tmp_path / "study.db").exists()


def test_one_line_per_trial_with_parameters_objectives_and_seconds(tmp_path, monkeypatch):
    text = edit(TINY, '["nearest", "bilinear"]', '["nearest", "bilinear", "L14"]')
    monkeypatch.setattr(worker, "fit", fake_fit({"nearest": (30.0, 40), "bilinear": (32.0, 60)},
                                                fail={"L14": RuntimeError("no memory")}))
    lines = []
    studies.run(write(tmp_path, text), log=lines.append)
    assert len(lines) == 3
    by = {re.search(r"upsampler=(\S+) ", line)[1]: line for line in lines}
    assert re.fullmatch(r"trial \d complete in \d+\.\d s: upsampler=bilinear -> peak_psnr 32", by["bilinear"])
    assert re.fullmatch(r"trial \d fail in \d+\.\d s: upsampler=L14 -> RuntimeError: no memory", by["L14"])


def test_a_progress_bar_counts_the_study_s_finished_trials(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(worker, "fit", fake_fit({"nearest": (30.0, 40), "bilinear": (32.0, 60)}))
    path = write(tmp_path, TINY)
    studies.run(path, n_trials=1, log=lambda _: None)
    capsys.readouterr()
    studies.run(path, progress=True, log=lambda _: None)
    err = capsys.readouterr().err
    assert "tiny" in err and "1/2" in err and "2/2" in err


# --- real fits, reports, CLI ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    path = folder / "tiny.toml"
    path.write_text(edit(TINY, 'peak_psnr = "maximize"', 'peak_psnr = "maximize"\npeak_iteration = "minimize"'))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        study = studies.run(path, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return path, study


def test_real_fits_record_spec_results_curves_and_artifacts(tiny_study):
    path, study = tiny_study
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    trial = study.trials[0]
    rows = studies.trial_results(trial)
    means = [np.mean([r[name] for r in rows]) for name in ("peak_psnr", "peak_iteration")]
    assert trial.values == pytest.approx(means)
    assert all(10 < r["peak_psnr"] < 40 and 5 <= r["peak_iteration"] <= 30 for r in rows)
    curves = studies.load_curves(study)
    curves = curves[curves["trial"] == trial.number]
    assert list(curves.drop_duplicates("run")[["task", "image", "seed"]].itertuples(index=False, name=None)) == \
        [("denoise", "astronaut", 0), ("denoise", "cam", 0)]
    assert curves[curves["run"] == 0]["iteration"].to_list() == [5, 10, 15, 20, 25, 30]
    assert curves[curves["run"] == 0]["fbc_high"].equals(curves[curves["run"] == 0]["fbc_4"])
    store = studies.artifacts_dir(studies.default_storage(path))
    metas = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
    names = sorted(m.filename for m in metas)
    n = trial.number
    assert names == [f"trial-{n}-curves.csv", f"trial-{n}-curves.png", f"trial-{n}-denoise-astronaut-observed.png",
                     f"trial-{n}-denoise-astronaut-restored.png", f"trial-{n}-denoise-cam-observed.png",
                     f"trial-{n}-denoise-cam-restored.png"]
    assert all((store / m.artifact_id).stat().st_size > 100 for m in metas)
    csv = next(m for m in metas if m.filename.endswith(".csv"))
    history = pd.read_csv(store / csv.artifact_id)
    assert list(history.columns[:5]) == ["run", "task", "image", "seed", "iteration"]
    assert history.groupby("run")["psnr"].max().to_list() == pytest.approx([r["peak_psnr"] for r in rows], abs=1e-4)
    # the intermediate values, reported live during each fit, are its history's PSNR (run k at 50 k + i)
    expected = {50 * k + i: p for k, i, p in zip(history["run"], history["iteration"], history["psnr"])}
    assert trial.intermediate_values == pytest.approx(expected, abs=1e-4)
    assert trial.user_attrs["intermediate values"] == "PSNR (dB) of run k at iteration i, step = 50 k + i"


def test_load_gives_one_row_per_trial_and_image(tiny_study):
    path, study = tiny_study
    frame = studies.load(str(path))
    assert len(frame) == 4 and set(frame["image"]) == {"astronaut", "cam"}
    assert (frame["seeds"] == 1).all() and frame["worker"].notna().all() and frame["stops"].isin([0, 1]).all()
    means = frame.groupby("trial")["peak_psnr"].mean()
    assert means.to_dict() == pytest.approx({t.number: t.values[0] for t in study.trials})


def test_reports_in_three_formats(tiny_study, tmp_path):
    path, study = tiny_study
    md = studies.write_report(str(path), fmt="md", out_dir=tmp_path / "md")
    assert sorted(p.name for p in md) == ["curves.png", "pareto.png", "table.md"]
    text = (tmp_path / "md" / "table.md").read_text()
    frame = studies.load(str(path)).query("image == 'cam'")
    best = frame["peak_psnr"].max()
    assert f"**{best:.2f}**" in text and "| upsampler | astronaut | cam | mean |" in text
    assert "## Pareto front: peak PSNR (dB) against peak iteration" in text
    assert "## Parameter importances\n\nNot computed: 2 complete trials" in text
    tex = studies.write_report(str(path), fmt="latex", out_dir=tmp_path / "tex", figure_format="pdf")
    assert "\\textbf{" in (tmp_path / "tex" / "table.tex").read_text() and len(tex) == 3
    assert (tmp_path / "tex" / "curves.pdf").read_bytes().startswith(b"%PDF")
    csv = studies.write_report(str(path), fmt="csv", out_dir=tmp_path / "csv")
    assert {p.name for p in csv} >= {"results.csv", "table-peak_psnr.csv", "pareto.csv"}
    table = pd.read_csv(tmp_path / "csv" / "table-peak_psnr.csv")
    assert list(table.columns) == ["upsampler", "astronaut", "cam", "mean"]
    assert table["mean"].to_numpy() == pytest.approx(table[["astronaut", "cam"]].mean(axis=1).to_numpy())


def test_format_table_bolds_the_best_of_each_column():
    table = pd.DataFrame({"depth": [1, 2, 3], "F16": [27.004, 28.5, 28.5], "mean": [3.0, 1.0, 2.0]})
    md = report.format_table(table, ["F16", "mean"], {"F16": "max", "mean": "min"}, 2, "md").splitlines()
    assert md[0] == "| depth | F16 | mean |" and md[1] == "| --- | ---: | ---: |"
    assert md[2:] == ["| 1 | 27.00 | 3.00 |", "| 2 | **28.50** | **1.00** |", "| 3 | **28.50** | 2.00 |"]
    tex = report.format_table(table.assign(depth=["a_b", "c", "d"]), ["F16"], "max", 1, "latex")
    assert "a\\_b & 27.0 & 3.0 \\\\" in tex
    assert tex.startswith("\\begin{tabular}{lrl}") and "\\textbf{28.5}" in tex


def test_cli_list_show_report_and_errors(tiny_study, tmp_path, capsys):
    path, _ = tiny_study
    assert main(["study", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("quick-demo", "lipschitz-sweep", "upsampler-ablation", "gaussian-sigma",
                                          "depth-width-skips", "texture-width-labels"))
    assert main(["study", "show", "upsampler-ablation"]) == 0
    assert "6 trials × 2 fits of 1500 iterations" in capsys.readouterr().out
    assert main(["study", "report", str(path), "--format", "csv", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "results.csv").exists()
    bad = write(tmp_path, edit(TINY, 'peak_psnr = "maximize"', 'peak_psnr = "up"'), "bad.toml")
    assert main(["study", "run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "objectives.peak_psnr: 'up' is invalid; allowed: maximize, minimize" in err
    assert main(["study", "report", "nothing-here", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert "x.db does not exist" in capsys.readouterr().err  # no empty database is created
    assert tomllib.loads((Path(studies.study_dir()) / "quick-demo.toml").read_text())["name"] == "quick-demo"


def test_batch_seeds_fit_every_seed_at_once_with_the_observations_mask(tmp_path):
    text = edit(TINY, 'seeds = [0]', 'seeds = [0, 1]\nbatch_seeds = true')
    text = edit(text, 'task = "denoise"\nsigma = 25', 'task = "inpaint"\nmask = "bernoulli"\ndrop = 0.5')
    text = edit(text, 'upsampler = ["nearest", "bilinear"]', 'upsampler = ["nearest"]')
    path = tmp_path / "batched.toml"
    path.write_text(text)
    study = studies.run(path, log=lambda _: None)
    rows = studies.trial_results(study.trials[0])
    assert [(r["image"], r["seed"]) for r in rows] == [("astronaut", 0), ("astronaut", 1), ("cam", 0), ("cam", 1)]
    assert all(r["peak_psnr"] > 10 for r in rows)
    assert rows[0]["peak_psnr"] != rows[1]["peak_psnr"]  # two fits, not one repeated
    with pytest.raises(ValueError, match="batch_seeds"):
        studies.StudySpec.from_dict({**tomllib.loads(text), "batch_seeds": "yes"})


def test_workers_of_a_seeded_study_do_not_sample_the_same_parameters(tmp_path, monkeypatch):
    monkeypatch.setattr(worker, "fit", fake_fit({"nearest": (30.0, 40)}))
    text = edit(TINY, "seeds = [0]", "seeds = [0]\nn_trials = 4")
    text = edit(text, '["nearest", "bilinear"]', '["nearest"]\nlr = { low = 0.001, high = 0.1, log = true }')
    text = edit(text, "[objectives]", '[sampler]\nkind = "tpe"\nseed = 0\n\n[objectives]')
    path = write(tmp_path, text)
    for _ in range(2):  # two workers one after the other (as a resumed study), each from the file's seed 0
        study = studies.run(path, n_trials=2, log=lambda _: None)
    lrs = [t.params["lr"] for t in study.trials]
    assert len(lrs) == 4 and len(set(lrs)) == 4
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    again = studies.run(write(fresh, text), n_trials=2, log=lambda _: None)  # the first worker keeps the seed
    assert [t.params["lr"] for t in again.trials] == lrs[:2]


def test_a_worker_whose_trial_was_failed_elsewhere_goes_on(tmp_path, monkeypatch):
    text = edit(TINY, "seeds = [0]", "seeds = [0]\nn_trials = 2")
    text = edit(text, '["nearest", "bilinear"]', '["nearest"]\nlr = { low = 0.001, high = 0.1, log = true }')
    path = write(tmp_path, edit(text, "[objectives]", '[sampler]\nkind = "random"\n\n[objectives]'))
    real = fake_fit({"nearest": (30.0, 40)})

    def fit_while_failed_as_stale(*args, **kwargs):  # as another worker does when this one's heartbeat lapsed
        study = studies.open_existing(str(path))
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if trial.number == 0:
                study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "fit", fit_while_failed_as_stale)
    lines = []
    study = studies.run(path, log=lambda line: lines.append(str(line)))
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert any("trial 0 was finished elsewhere" in line for line in lines)
