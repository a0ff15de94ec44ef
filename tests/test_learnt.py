"""The recommendation learnt from a study: its table, its regressors, its choice under the time bar."""

import numpy as np
import pandas as pd
import pytest

from archlab import fitting, learnt, models, restoration, studies, texture
from archlab.studies import worker
from studyfiles import study_toml


@pytest.fixture(autouse=True)
def fresh_shipped_tables():
    """Tests point ``learnt.table_path`` at their own tables: nothing learnt from another table is kept."""
    caches = (learnt.shipped_recommender, learnt.shipped_best_single, learnt.held_out_choice)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


def synthetic_table(images: range, seed: int = 0) -> pd.DataFrame:
    """Width 32 suits smooth images (+1 dB where the first feature is negative), width 128 textured ones
    (+1.5 dB, but slower than the default 64), 64 is neutral; PSNR also has a per-image offset."""
    rng = np.random.default_rng(seed)
    rows = []
    for image in images:
        feats = dict(zip(texture.FEATURE_NAMES, rng.normal(size=len(texture.FEATURE_NAMES))))
        smooth = feats[texture.FEATURE_NAMES[0]] < 0
        offset = rng.uniform(20, 30)
        for width in (32, 64, 128):
            gain = {32: 1.0 if smooth else -1.0, 64: 0.0, 128: -1.0 if smooth else 1.5}[width]
            rows.append({"task": "denoise", "image": f"im{image}", **learnt.DEFAULT_CONFIG, "width": width,
                         "stop_psnr": offset + gain + rng.normal(0, 0.05), "seconds": width / 10, **feats,
                         "channels": 3.0})
    return pd.DataFrame(rows)


def test_the_choice_follows_the_texture_within_the_default_time():
    model = learnt.LearntRecommender(synthetic_table(range(60)))
    held_out = synthetic_table(range(60, 70), seed=1).drop_duplicates("image")
    right = 0
    for _, row in held_out.iterrows():
        chosen, ranking = model.choose(row)
        smooth = row[texture.FEATURE_NAMES[0]] < 0
        assert chosen.seconds <= next(c for c in ranking if c.config["width"] == 64).seconds + 1e-9
        assert chosen.config["width"] != 128  # the best PSNR on textured images, but slower than the default
        right += chosen.config["width"] == (32 if smooth else 64)
        if smooth:
            assert chosen.gain_over_default > 0.5
        assert ranking[0].gain >= chosen.gain and len(ranking) == 3
    assert right >= 8


def test_the_default_is_scored_once_when_its_table_rows_are_rounded(tmp_path):
    path = tmp_path / "table.csv"
    synthetic_table(range(20)).to_csv(path, index=False, float_format="%.6g")  # as `study learn` writes it
    table = learnt.load_table("denoise", path)
    assert table["input_jitter"].iloc[0] != learnt.DEFAULT_CONFIG["input_jitter"]  # 0.0333333, not 1/30
    model = learnt.LearntRecommender(table)
    ranking = model.rank(table.iloc[0])
    assert len(ranking) == 3 and sorted(c.config["width"] for c in ranking) == [32, 64, 128]
    default = next(c for c in ranking if c.config["width"] == 64)
    assert default.is_default and default.gain_over_default == 0.0 and sum(c.is_default for c in ranking) == 1
    assert model.choose(table.iloc[0])[0].seconds <= default.seconds


def test_the_choice_follows_the_number_of_channels():
    table = synthetic_table(range(60))  # width 32 gains on grey images, loses on colour ones, whatever the texture
    grey = table["image"].isin([f"im{i}" for i in range(0, 60, 2)])
    table.loc[grey, "channels"] = 1.0
    table["stop_psnr"] += np.where(table["width"] == 32, np.where(grey, 2.0, -2.0), 0.0)
    model = learnt.LearntRecommender(table)
    row = table.iloc[0].copy()
    for channels, width in ((1.0, 32), (3.0, 64)):
        row["channels"] = channels
        assert model.choose(row)[0].config["width"] == width


def test_no_slower_than_the_default_compares_times_on_images_of_the_same_channels():
    table = synthetic_table(range(60))  # width 32 gains everywhere; on grey images it is slower than the default
    grey = table["image"].isin([f"im{i}" for i in range(0, 60, 2)])
    table.loc[grey, "channels"] = 1.0
    table["stop_psnr"] += np.where(table["width"] == 32, 2.0, 0.0)
    table["seconds"] = np.select([table["width"] == 128, grey & (table["width"] == 64), grey, table["width"] == 64],
                                 [20.0, 4.0, 5.0, 10.0], 6.0)
    model = learnt.LearntRecommender(table)  # on the mean over both, width 32 (5.5 s) looks faster than 64 (7 s)
    row = table.iloc[0].copy()
    for channels, seconds, width in ((1.0, 4.0, 64), (3.0, 10.0, 32)):
        row["channels"] = channels
        chosen, ranking = model.choose(row)
        assert chosen.config["width"] == width
        assert next(c for c in ranking if c.is_default).seconds == pytest.approx(seconds, rel=0.05)


def test_a_configuration_is_ranked_only_for_images_of_the_channels_it_was_fitted_to():
    table = synthetic_table(range(60))  # width 32 fitted to the grey images only, where it gains 2 dB
    grey = table["image"].isin([f"im{i}" for i in range(0, 60, 2)])
    table.loc[grey, "channels"] = 1.0
    table.loc[grey & (table["width"] == 32), "stop_psnr"] += 2.0
    model = learnt.LearntRecommender(table[grey | (table["width"] != 32)])
    row = table.iloc[0].copy()
    row["channels"] = 1.0
    assert model.choose(row)[0].config["width"] == 32
    row["channels"] = 3.0
    ranking = model.rank(row)
    assert sorted(c.config["width"] for c in ranking) == [64, 128] and model.choose(row)[0].is_default
    colour_only = learnt.LearntRecommender(table[~grey])
    row["channels"] = 1.0  # no grey image in that table: every configuration is scored
    assert len(colour_only.rank(row)) == 3


def test_cross_validation_measures_the_choice_on_images_it_did_not_learn_from():
    table = synthetic_table(range(40))
    rows = learnt.cross_validate(table, folds=4)
    assert len(rows) == 40 and sorted(rows["fold"].unique()) == [0, 1, 2, 3]
    measured = table.set_index(["image", "width"])["stop_psnr"]
    for _, row in rows.iterrows():  # every number is the table's own measurement of that image
        assert row["default_psnr"] == measured[(row["image"], 64)]
        assert row["learnt_psnr"] in set(measured[row["image"]])
        assert row["oracle_psnr"] == measured[row["image"]].max() >= row["learnt_psnr"]
    # width 32 gains 1 dB on the smooth half and loses 1 dB on the rest: no single configuration beats the
    # default on average, the per-image choice does (and width 128, slower than the default, is never taken)
    assert rows["fixed_psnr"].mean() < rows["default_psnr"].mean() + 0.2
    assert rows["learnt_psnr"].mean() > rows["default_psnr"].mean() + 0.3
    assert (rows["learnt_seconds"] <= rows["default_seconds"]).all()


def test_cross_validation_chooses_among_the_configurations_measured_on_the_held_out_image():
    table = synthetic_table(range(40))  # as two studies that share the default: width 32 fitted to half the images
    unmeasured = table["image"].isin([f"im{i}" for i in range(0, 40, 2)])
    table = table[~(unmeasured & (table["width"] == 32))]
    rows = learnt.cross_validate(table, folds=4).set_index("image")
    measured = table.set_index(["image", "width"])["stop_psnr"]
    for image, row in rows.iterrows():
        assert row["learnt_psnr"] in set(measured[image])
    halves = rows.index.isin([f"im{i}" for i in range(0, 40, 2)])
    assert (rows.loc[halves, "learnt_psnr"] == rows.loc[halves, "default_psnr"]).all()  # 128 is too slow
    assert rows.loc[~halves, "learnt_psnr"].mean() > rows.loc[~halves, "default_psnr"].mean() + 0.3


def test_cross_validation_measures_a_configuration_run_twice_by_its_mean():
    table = synthetic_table(range(20))
    again = table[table["width"] == 32].assign(stop_psnr=lambda t: t["stop_psnr"] + 1.0)  # as a repeated trial
    rows = learnt.cross_validate(pd.concat([table, again], ignore_index=True), folds=4).set_index("image")
    once = table[table["width"] == 32].set_index("image")["stop_psnr"]
    chose_32 = rows["learnt_psnr"].round(9).isin(set((once + 0.5).round(9)))
    assert chose_32.any() and rows.index.is_unique


def test_cross_validation_rejects_what_it_cannot_measure():
    table = synthetic_table(range(6))
    with pytest.raises(ValueError, match="folds: 1 is invalid; allowed: 2 to the number of images"):
        learnt.cross_validate(table, folds=1)
    with pytest.raises(ValueError, match="default configuration was not fitted to every image"):
        learnt.cross_validate(table[(table["width"] != 64) | (table["image"] != "im0")], folds=2)


def test_tables_load_with_one_line_errors(tmp_path):
    path = tmp_path / "t.csv"
    synthetic_table(range(3)).to_csv(path, index=False)
    assert len(learnt.load_table("denoise", path)) == 9
    with pytest.raises(ValueError, match=r"^recommendation: no learnt table for task 'x' .*archlab study learn"):
        learnt.load_table("x", tmp_path / "missing.csv")
    synthetic_table(range(3)).drop(columns="seconds").to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"lacks the columns \['seconds'\]"):
        learnt.load_table("denoise", path)
    with pytest.raises(ValueError, match="no rows"):
        learnt.LearntRecommender(synthetic_table(range(0)))


def test_a_study_table_has_a_row_per_configuration_and_image_with_its_features(tmp_path, monkeypatch):
    from test_studies import fake_fit

    text = study_toml("learn", images=[{"source": "astronaut", "size": 64, "crop": 32},
                                       {"source": "camera", "size": 64, "crop": 32}],
                      arch={"kind": "decoder", "depth": 2, "width": 8, "skip": 0, "lipschitz": 2.0},
                      fit={"iterations": 30, "eval_every": 5, "window": 10, "lr": 0.01},
                      objectives={"stop_psnr": "maximize", "seconds": "minimize"})
    path = tmp_path / "learn.toml"
    path.write_text(text)
    monkeypatch.setattr(worker, "fit", fake_fit({"nearest": (30.0, 40), "bilinear": (32.0, 60)}))
    studies.run(path, log=lambda _: None)
    table = studies.learning_table(str(path))
    assert len(table) == 4 and set(table["upsampler"]) == {"nearest", "bilinear"}
    study = studies.open_existing(str(path))
    running = study.ask()  # a trial still running (or killed) with the results of its first images: left out
    for key, value in study.trials[0].user_attrs.items():
        running.set_user_attr(key, value)
    assert len(studies.learning_table(str(path))) == 4
    assert set(table["image"]) == {"astronaut", "camera"} and (table["width"] == 8).all()
    assert table[list(learnt.FEATURES)].notna().all().all()
    assert dict(zip(table["image"], table["channels"])) == {"astronaut": 3, "camera": 1}
    one = table[table["image"] == "camera"].iloc[0]
    np.testing.assert_allclose(one[list(texture.FEATURE_NAMES)].to_numpy(float),
                               texture.features(worker.observations(studies.load_study(str(path)))[1]
                                                .observation.y).to_numpy(), rtol=1e-9)


def test_recommend_uses_a_learnt_table_for_every_choice(tmp_path, monkeypatch, capsys):
    from archlab import images, recommend, tasks
    from archlab.cli import main

    path = tmp_path / "recommend-denoise.csv"
    synthetic_table(range(30)).to_csv(path, index=False)
    monkeypatch.setattr(learnt, "table_path", lambda task: path if task == "denoise" else tmp_path / "none.csv")
    learnt.shipped_recommender.cache_clear()
    try:
        x = images.resize(images.load("camera"), size=(64, 64))
        advice = recommend.recommend(x, task=tasks.Denoise(25))
        assert advice.spec.kind == "decoder" and advice.spec.width in (32, 64)  # 128: slower than the default
        assert advice.fit == {"iterations": recommend.LEARNT_ITERATIONS, "lr": learnt.DEFAULT_CONFIG["lr"],
                              "input_jitter": learnt.DEFAULT_CONFIG["input_jitter"], "stop": "auto"}
        assert "predicted" in advice.sources["width"] and len(advice.alternatives) == 3
        assert advice.to_dict()["alternatives"][0]["config"]["width"] in (32, 64, 128)
        other = recommend.recommend(x, task=tasks.Inpaint())  # no table for inpainting: the rules
        assert other.spec.kind == "hourglass" and not other.alternatives
        assert main(["recommend", "camera"]) == 0
        assert "dB" in capsys.readouterr().out
    finally:
        learnt.shipped_recommender.cache_clear()


def test_study_learn_writes_the_table(tmp_path, monkeypatch, capsys):
    from archlab.cli import main
    from test_studies import fake_fit

    path = tmp_path / "learn.toml"
    path.write_text(study_toml("learn2", arch={"kind": "decoder", "depth": 2, "width": 8, "skip": 0, "lipschitz": 2.0},
                               fit={"iterations": 30, "eval_every": 5, "window": 10, "lr": 0.01}))
    monkeypatch.setattr(worker, "fit", fake_fit({"nearest": (30.0, 40), "bilinear": (32.0, 60)}))
    studies.run(path, log=lambda _: None)
    out = tmp_path / "t.csv"
    assert main(["study", "learn", str(path), "-o", str(out)]) == 0
    assert "2 fits, 1 images, 2 configurations" in capsys.readouterr().out
    written = learnt.load_table("denoise", out)
    assert len(written) == 2 and (written["seconds"] == 0.5).all() and (written["cpu_seconds"] == 0.4).all()
    out.unlink()
    assert main(["study", "learn", str(path), "-o", str(out), "--folds", "3"]) == 2  # 1 image: nothing written
    assert "folds: 3 is invalid; allowed: 2 to the number of images (1)" in capsys.readouterr().err
    assert not out.exists()
    other = tmp_path / "learn-grey.toml"  # the same task on another image, in its own storage
    other.write_text(study_toml("learn3", images=[{"source": "camera", "size": 64, "crop": 32}],
                                arch={"kind": "decoder", "depth": 2, "width": 8, "skip": 0, "lipschitz": 2.0},
                                fit={"iterations": 30, "eval_every": 5, "window": 10, "lr": 0.01}))
    studies.run(other, log=lambda _: None)
    assert main(["study", "learn", str(path), str(other), "-o", str(out)]) == 0
    assert "4 fits, 2 images, 2 configurations" in capsys.readouterr().out
    assert sorted(learnt.load_table("denoise", out)["channels"].unique()) == [1, 3]


def test_the_held_out_table_names_the_time_the_table_compares_by():
    from archlab.cli.study import held_out_table

    table = synthetic_table(range(20)).assign(cpu_seconds=lambda t: t["seconds"] / 2)
    text = held_out_table(learnt.cross_validate(table, folds=4), 4, learnt.TIME_UNITS[learnt.time_column(table)])
    assert "| choice | PSNR dB | − default dB | CPU s | × default's time |" in text
    assert text.splitlines()[-2].startswith("| default configuration |") and text.splitlines()[-2].endswith("| 3.2 | 1.00 |")


def test_restore_arch_auto_fits_what_the_recommendation_says_unless_told(tmp_path, monkeypatch, capsys):
    import json

    from archlab import fitting, recommend
    from archlab.cli import main

    table = synthetic_table(range(30))
    table["lr"], table["input_jitter"] = 0.004, 0.1  # the learnt configurations' fit settings: the fit must use them
    path = tmp_path / "recommend-denoise.csv"
    table.to_csv(path, index=False)
    monkeypatch.setattr(learnt, "table_path", lambda task: path if task == "denoise" else tmp_path / "none.csv")
    monkeypatch.setattr(learnt, "DEFAULT_CONFIG", {**learnt.DEFAULT_CONFIG, "lr": 0.004, "input_jitter": 0.1})
    learnt.shipped_recommender.cache_clear()
    seen = []
    real_fit = fitting.fit
    monkeypatch.setattr(fitting, "fit", lambda *a, **k: seen.append(k) or real_fit(*a, **{**k, "iterations": 4}))
    try:
        base = ["restore", "--image", "camera", "--size", "48", "--arch", "auto", "--eval-every", "2",
                "--restarts", "1"]
        assert main([*base, "-o", str(tmp_path / "a")]) == 0
        assert seen[-1]["lr"] == 0.004 and seen[-1]["input_jitter"] == 0.1  # the advice's fit settings
        assert seen[-1]["iterations"] == recommend.LEARNT_ITERATIONS == 3000
        summary = json.loads((tmp_path / "a" / "summary.json").read_text())
        assert any(note.startswith("--arch auto: depth 3, width") for note in summary["notes"])
        assert main([*base, "--lr", "0.02", "--iterations", "6", "--input-jitter", "0", "-o", str(tmp_path / "b")]) == 0
        assert seen[-1]["lr"] == 0.02 and seen[-1]["iterations"] == 6 and seen[-1]["input_jitter"] == 0  # the user's win
        assert main([*base, "--input-jitter", "-0.1", "-o", str(tmp_path / "c")]) == 2
        assert "--input-jitter: -0.1 must be ≥ 0" in capsys.readouterr().err
    finally:
        learnt.shipped_recommender.cache_clear()


def test_the_best_single_configuration_is_the_best_mean_no_slower_than_the_default():
    table = synthetic_table(range(20))  # width 32: +1 dB on smooth images, −1 on the rest; 128 slower
    smooth = table[texture.FEATURE_NAMES[0]] < 0
    table.loc[(table["width"] == 32) & ~smooth, "stop_psnr"] += 1.5  # now +0.5 dB on the rest: the best on average
    table.loc[table["width"] == 128, "stop_psnr"] += 5  # the best PSNR, but slower than the default
    best = learnt.best_single(table)
    by_width = table.groupby("width")["stop_psnr"].mean()
    assert best.config["width"] == 32 and not best.is_default
    assert best.gain_over_default == pytest.approx(by_width[32] - by_width[64])
    assert best.seconds == pytest.approx(3.2) and best.gain == pytest.approx(by_width[32] - table["stop_psnr"].mean())
    assert learnt.best_single(table[table["width"] != 64]) is None  # no default to compare with
    assert learnt.best_single(table[table["width"] == 64]).is_default


def test_configurations_are_compared_by_cpu_time_where_every_fit_has_it():
    table = synthetic_table(range(20))  # width 32 (+1 dB on smooth images) is faster than the default 64
    table.loc[table["width"] == 32, "stop_psnr"] += 2  # the best mean PSNR
    table.loc[table["width"] == 32, "seconds"] = 9.0  # timed under a heavy load: slower than the default's 6.4 s
    assert learnt.time_column(table) == "seconds" and learnt.best_single(table).is_default
    table["cpu_seconds"] = table["width"] / 10  # its CPU time: faster than the default
    assert learnt.time_column(table) == "cpu_seconds"
    best = learnt.best_single(table)
    assert best.config["width"] == 32 and best.seconds == pytest.approx(3.2) and best.time_unit == "CPU s"
    rows = learnt.cross_validate(table, folds=4)
    assert (rows["fixed_seconds"] == 3.2).all() and (rows["default_seconds"] == 6.4).all()
    choice, ranking = learnt.LearntRecommender(table).choose(table.iloc[0])
    assert choice.config["width"] == 32 and choice.seconds < next(c for c in ranking if c.is_default).seconds
    assert {c.time_unit for c in ranking} == {"CPU s"}
    table.loc[table["image"] == "im0", "cpu_seconds"] = np.nan  # joined with a study that did not record it
    assert learnt.time_column(table) == "seconds" and learnt.best_single(table).is_default
    assert learnt.best_single(table).time_unit == "s"


def test_restore_arch_studied_fits_the_study_s_best_single_configuration(tmp_path, monkeypatch, capsys):
    import json

    from archlab import recommend
    from archlab.cli import main

    table = synthetic_table(range(20))
    table.loc[table["width"] == 32, ["stop_psnr", "lr", "input_jitter"]] = [40.0, 0.004, 0.1]
    path = tmp_path / "recommend-denoise.csv"
    table.to_csv(path, index=False)
    monkeypatch.setattr(learnt, "table_path", lambda task: path if task == "denoise" else tmp_path / "none.csv")
    learnt.shipped_best_single.cache_clear()
    seen = []
    real_fit = fitting.fit
    monkeypatch.setattr(fitting, "fit", lambda *a, **k: seen.append((a[0], k)) or real_fit(*a, **{**k, "iterations": 4}))
    try:
        base = ["restore", "--image", "camera", "--size", "48", "--arch", "studied", "--eval-every", "2",
                "--restarts", "1"]
        assert main([*base, "-o", str(tmp_path / "a")]) == 0
        spec, settings = seen[-1]
        assert spec.width == 32 and settings["lr"] == 0.004 and settings["input_jitter"] == 0.1
        assert settings["iterations"] == recommend.LEARNT_ITERATIONS
        summary = json.loads((tmp_path / "a" / "summary.json").read_text())
        assert any(note.startswith("--arch studied: depth 3, width 32") and "the best single configuration of the "
                   "denoise study" in note for note in summary["notes"])
        assert main([*base, "--lr", "0.02", "-o", str(tmp_path / "b")]) == 0 and seen[-1][1]["lr"] == 0.02
        assert main([*base, "--task", "jpeg", "-o", str(tmp_path / "c")]) == 2
        assert ("arch: 'studied' needs a learnt table of the jpeg task in which the default configuration was "
                "fitted to every image; tasks with one: denoise") in capsys.readouterr().err
        assert not (tmp_path / "c").exists()
    finally:
        learnt.shipped_best_single.cache_clear()


@pytest.mark.parametrize("task", ["denoise", "poisson"])
def test_the_recommend_studies_measure_the_configuration_to_beat_first(task):
    spec = studies.load_study(f"recommend-{task}")
    assert [dict(point) for point in spec.enqueue] == [learnt.DEFAULT_CONFIG]
    arch, settings = spec.configure(learnt.DEFAULT_CONFIG)
    assert arch == models.preset(restoration.DEFAULT_ARCH) and settings["lr"] == restoration.DEFAULT_FIT["lr"]
    assert settings["input_jitter"] == restoration.DEFAULT_FIT["input_jitter"] == fitting.FitSettings.input_jitter


def test_the_grey_study_repeats_configurations_of_the_colour_study_on_other_images():
    colour, grey = studies.load_study("recommend-denoise"), studies.load_study("recommend-denoise-grey")
    assert dict(grey.enqueue[0]) == learnt.DEFAULT_CONFIG and len(grey.enqueue) == 36 < grey.n_trials
    assert grey.space == colour.space and grey.tasks == colour.tasks and grey.fit == colour.fit
    colour_images = {label for image in colour.images for label, _ in image.resolve()}
    grey_images = {label for image in grey.images for label, _ in image.resolve()}
    assert len(grey_images) == 20 and not colour_images & grey_images and all(i.grey for i in grey.images)


def test_recommend_takes_the_best_single_configuration_where_it_won_on_held_out_images(tmp_path, monkeypatch, capsys):
    from archlab import images, recommend, tasks
    from archlab.cli import main

    table = synthetic_table(range(30))  # per image: width 32 on smooth images, the default on the rest
    smooth = table[texture.FEATURE_NAMES[0]] < 0
    table.loc[(table["width"] == 32) & ~smooth, "stop_psnr"] += 0.7  # 32 is also the best single one (−0.3 dB there)
    monkeypatch.setattr(studies, "resolve_target", lambda study, storage: (study, "sqlite:///unused.db"))
    monkeypatch.setattr("archlab.studies.storage.storage_url", lambda url, exists=False: url)
    monkeypatch.setattr(studies, "learning_table", lambda study, storage: table)
    path = tmp_path / "recommend-denoise.csv"
    monkeypatch.setattr(learnt, "table_path", lambda task: path if task == "denoise" else tmp_path / "none.csv")
    assert main(["study", "learn", "s", "-o", str(path), "--folds", "3"]) == 0
    assert f"wrote {learnt.held_out_path(path)}" in capsys.readouterr().out
    held_out = pd.read_csv(learnt.held_out_path(path))
    assert len(held_out) == 30 and held_out["fixed_psnr"].mean() < held_out["learnt_psnr"].mean()
    choice, gains = learnt.held_out_choice("denoise")
    assert choice == "learnt" and gains["learnt"] == pytest.approx((held_out["learnt_psnr"]
                                                                    - held_out["default_psnr"]).mean())
    x = images.resize(images.load("camera"), size=(64, 64))
    per_image = recommend.recommend(x, task=tasks.Denoise(25))
    assert per_image.sources["width"].startswith("learnt from the denoise study")

    held_out["fixed_psnr"] = held_out["learnt_psnr"] + 0.5  # as if one configuration had done better held out
    held_out.to_csv(learnt.held_out_path(path), index=False)
    learnt.held_out_choice.cache_clear()
    assert learnt.held_out_choice("denoise")[0] == "fixed"
    advice = recommend.recommend(x, task=tasks.Denoise(25))
    best = learnt.best_single(learnt.load_table("denoise", path))
    assert advice.spec.width == best.config["width"] == 32 and advice.fit["lr"] == best.config["lr"]
    assert "best single configuration" in advice.sources["width"] and "held out" in advice.sources["width"]
    assert advice.alternatives  # the per-image ranking is still shown

    assert main(["study", "learn", "s", "-o", str(path)]) == 0  # a new table without --folds: the old rows go
    assert "removed" in capsys.readouterr().out and not learnt.held_out_path(path).exists()
    learnt.held_out_choice.cache_clear()
    assert learnt.held_out_choice("denoise") is None


@pytest.mark.parametrize("task", ["denoise", "poisson"])
def test_the_shipped_cross_validation_is_of_the_shipped_table(task):
    table = learnt.load_table(task)
    held_out = pd.read_csv(learnt.held_out_path(learnt.table_path(task)), dtype={"image": str})
    assert sorted(held_out["image"]) == sorted(table["image"].unique())
    default = table[learnt._config_ids(table) == learnt._config_id(learnt.DEFAULT_CONFIG)]
    measured = default.groupby("image")["stop_psnr"].mean()
    np.testing.assert_allclose(held_out.set_index("image")["default_psnr"].loc[measured.index], measured, atol=1e-4)


def budget_rows() -> pd.DataFrame:
    """Restorations of two images: the default ×1..3 (1 s a fit, 20 dB ×3), a slower configuration (width 16,
    1.4 s a fit, +1 dB once, +1.3 dB twice) and a faster one (width 8, 0.5 s a fit, +0.4 dB per doubling)."""
    slow, fast = {**learnt.DEFAULT_CONFIG, "width": 16}, {**learnt.DEFAULT_CONFIG, "width": 8}
    rows = []
    for image, offset in (("a", 0.0), ("b", 2.0)):
        rows += [{"image": image, **learnt.DEFAULT_CONFIG, "fits": k, "psnr": 19.8 + 0.1 * k + offset,
                  "cpu_seconds": 1.0 * k} for k in (1, 2, 3)]
        rows += [{"image": image, **slow, "fits": k, "psnr": 20.7 + 0.3 * k + offset, "cpu_seconds": 1.4 * k}
                 for k in (1, 2)]
        rows += [{"image": image, **fast, "fits": k, "psnr": 19.6 + 0.4 * k + offset, "cpu_seconds": 0.5 * k}
                 for k in range(1, 7)]
    return pd.DataFrame(rows)


def test_the_best_restoration_within_the_default_s_time_may_spend_it_on_fewer_or_more_fits():
    rows = budget_rows()
    best = learnt.best_within_budget(rows, default_fits=3)  # fast ×6 (3.0 s, 22.0 dB) over slow ×2 (2.8 s, 21.3)
    assert best.config["width"] == 8 and best.fits == 6
    assert best.gain == pytest.approx(22.0 - 20.1) and best.time_ratio == pytest.approx(1.0) and best.images == 2
    cheaper = rows[~((rows["width"] == 8) & (rows["fits"] >= 4))]  # the fast one at most three times
    best = learnt.best_within_budget(cheaper, default_fits=3)
    assert (best.config["width"], best.fits) == (16, 2) and best.time_ratio == pytest.approx(2.8 / 3.0)
    assert best.config == {**learnt.DEFAULT_CONFIG, "width": 16}
    # within the default's mean time but longer than the default on one image of two: allowed only if told so
    uneven = rows.copy()
    six = (uneven["width"] == 8) & (uneven["fits"] == 6)
    uneven.loc[six, "cpu_seconds"] = uneven.loc[six, "image"].map({"a": 3.5, "b": 2.5})
    assert learnt.best_within_budget(uneven, default_fits=3).fits != 6
    lenient = learnt.best_within_budget(uneven, default_fits=3, max_slower=0.5)
    assert (lenient.fits, lenient.slower) == (6, 0.5) and lenient.to_dict()["slower"] == 0.5
    # a restoration measured on one image only is compared over the images that have every restoration
    partial = pd.concat([cheaper, pd.DataFrame([{**cheaper.iloc[-1].to_dict(), "image": "c", "psnr": 99.0}])])
    assert learnt.best_within_budget(partial, default_fits=3) == best
    # the default alone, or its restoration not measured
    default_only = rows[rows["width"] == learnt.DEFAULT_CONFIG["width"]]
    assert learnt.best_within_budget(default_only, default_fits=3).gain == 0.0
    assert learnt.best_within_budget(rows, default_fits=4) is None


def test_restore_studied_and_auto_fit_the_shipped_restoration_within_budget(tmp_path, monkeypatch, capsys):
    import json

    from archlab import images, recommend, tasks
    from archlab.cli import main

    table = synthetic_table(range(20))
    table_csv, rows_csv = tmp_path / "recommend-denoise.csv", tmp_path / "recommend-denoise-restorations.csv"
    table.to_csv(table_csv, index=False)
    budget_rows().to_csv(rows_csv, index=False)
    monkeypatch.setattr(learnt, "table_path", lambda task: table_csv if task == "denoise" else tmp_path / "none.csv")
    monkeypatch.setattr(learnt, "restorations_path",
                        lambda task: rows_csv if task == "denoise" else tmp_path / "none.csv")
    for cached in (learnt.shipped_best_single, learnt.shipped_within_budget, learnt.shipped_recommender,
                   learnt.held_out_choice):
        cached.cache_clear()
    seen = []
    real_fit = fitting.fit
    monkeypatch.setattr(fitting, "fit", lambda *a, **k: seen.append((a[0], k)) or real_fit(*a, **{**k, "iterations": 4}))
    try:
        task = tasks.Denoise(25)
        assert restoration.default_restarts(task, "studied") == restoration.default_restarts(task, "auto") == 6
        assert restoration.default_restarts(task, "controlled-64") == restoration.DEFAULT_RESTARTS
        assert restoration.default_restarts(tasks.make_task("jpeg"), "auto") == 2  # no restorations shipped

        advice = recommend.recommend(images.resize(images.load("camera"), size=(64, 64)), task=task)
        assert advice.spec.width == 8 and advice.restarts == 6 and advice.to_dict()["restarts"] == 6
        assert "the mean of 6 fits of this configuration gained +1.90 dB over the default restoration" in advice.sources["restarts"]
        assert "chosen over the per-image prediction" in advice.sources["width"] and advice.alternatives

        assert main(["restore", "--image", "camera", "--size", "48", "--arch", "studied", "--eval-every", "2",
                     "-o", str(tmp_path / "a")]) == 0
        assert len(seen) == 6 and {s.width for s, _ in seen} == {8}
        summary = json.loads((tmp_path / "a" / "summary.json").read_text())
        assert len(summary["restarts"]) == 6
        assert any("the best restoration within the default's time measured on the denoise study's 2 training "
                   "images" in note for note in summary["notes"])
        assert main(["recommend", "camera"]) == 0 and "restarts: 6 (the mean of 6 seeded fits" in capsys.readouterr().out
    finally:
        for cached in (learnt.shipped_best_single, learnt.shipped_within_budget, learnt.shipped_recommender,
                       learnt.held_out_choice):
            cached.cache_clear()


def test_the_shipped_poisson_restorations_choose_among_the_table_s_configurations_within_the_default_s_time():
    from archlab import recommend, tasks

    best = learnt.shipped_within_budget("poisson", restoration.DEFAULT_RESTARTS)
    rows = pd.read_csv(learnt.restorations_path("poisson"), dtype={"image": str})
    assert best.images == rows["image"].nunique() == 60 and best.time_ratio <= 1.0 and best.gain >= 0.5
    assert best.slower <= learnt.MAX_SLOWER
    table = learnt.load_table("poisson")
    assert learnt._config_id(best.config) in set(learnt._config_ids(table))  # a configuration the study fitted
    assert set(rows["image"]) == set(table["image"])  # the study's training images, none of the evaluation's
    spec, fit, reason = recommend.studied(tasks.make_task("poisson"))
    assert spec.width == best.config["width"] and fit["lr"] == best.config["lr"] and f"{best.fits} fits" in reason
    assert learnt.shipped_within_budget("denoise", restoration.DEFAULT_RESTARTS) is None  # none measured
