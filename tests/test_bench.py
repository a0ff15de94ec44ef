"""Speed benchmarks (benchmarks/speed.py): the contenders compute the same thing, the tables hold what they claim, the CLI writes them."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from skimage.metrics import peak_signal_noise_ratio

from archlab import images, layers, models, spectral, stopping
from benchmarks import speed as bench
from benchmarks.speed import main

TINY = models.ArchSpec(kind="hourglass", depth=2, width=8, skip=2, lipschitz=2.0, norm="mean_only")


def test_interleaved_alternates_and_skips_warmup():
    calls = []
    times = bench.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3,
                              device=torch.device("cpu"), warmup=1)
    assert calls == ["a", "b"] * 4
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3}
    with pytest.raises(ValueError, match="repeats"):
        bench.interleaved({"a": lambda: None}, repeats=0, device=torch.device("cpu"))


def test_bench_upsample_table():
    table = bench.bench_upsample("L-60", channels=4, size=16, repeats=2, device="cpu")
    assert list(table["method"]) == ["archlab.Upsampler (polyphase)", "naive (zeros + 2-D depthwise conv)"]
    assert (table["median_ms"] > 0).all() and (table["min_ms"] <= table["median_ms"]).all()
    assert table["speedup"].iloc[1] == 1.0
    assert math.isclose(table["speedup"].iloc[0], table["median_ms"].iloc[1] / table["median_ms"].iloc[0])


def test_reference_network_swaps_only_the_upsamplers():
    net, z = models.build("faster-dip-32", 3, (32, 32), seed=1)
    ref, ref_z = bench.reference_network("faster-dip-32", 3, (32, 32), seed=1)
    assert torch.equal(z, ref_z)
    assert not any(isinstance(m, layers.Upsampler) for m in ref.modules())
    ups = [m for m in ref.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == sum(isinstance(m, layers.Upsampler) for m in net.modules()) == 2
    assert all(m.mode == "bilinear" and m.scale_factor == 2 for m in ups)
    for (name, p), (ref_name, q) in zip(net.named_parameters(), ref.named_parameters()):
        assert name == ref_name and torch.equal(p, q)  # the same initial weights
    # Bilinear x2 with align_corners=False: the layer's interior equals nn.Upsample's.
    x = torch.rand(1, 2, 8, 8)
    assert torch.allclose(layers.Upsampler(2, "bilinear")(x)[..., 2:-2, 2:-2], ups[0](x)[..., 2:-2, 2:-2], atol=1e-6)


def test_reference_fit_reports_the_last_psnr():
    clean, noisy = bench.denoising_pair("camera", 16)
    out = bench.reference_fit(TINY, noisy, clean, iterations=5, seed=0, device="cpu")
    assert out["seconds"].shape == (5,) and (out["seconds"] > 0).all()
    assert 5 < out["psnr"] < 40
    # Same seed, same run: the loop is deterministic.
    assert bench.reference_fit(TINY, noisy, clean, iterations=5, seed=0, device="cpu")["psnr"] == out["psnr"]


def test_denoising_pair_psnr_matches_sigma():
    clean, noisy = bench.denoising_pair("astronaut", 64, sigma=25.0)
    assert clean.shape == noisy.shape == (1, 3, 64, 64)
    # σ = 25/255 additive noise (clipped): PSNR ≈ 20 log10(255/25) = 20.2 dB, a little higher after clipping.
    psnr = peak_signal_noise_ratio(clean[0].numpy(), noisy[0].numpy(), data_range=1.0)
    assert 20.0 < psnr < 21.5


def test_step_flops_closed_form():
    conv = nn.Conv2d(4, 6, 3)
    x = torch.rand(1, 4, 10, 10)
    forward = 2 * 6 * 4 * 9 * 8 * 8  # 2 · C_out · C_in · k² · H_out · W_out
    # The input needs no gradient: backward computes only the weight gradient, as many FLOPs as the forward.
    assert bench.step_flops(nn.Sequential(conv), x) == 2 * forward
    assert conv.weight.grad is None


def test_peak_gflops_positive():
    assert bench.peak_gflops(torch.float32, "cpu", n=128, repeats=2) > 0


def test_bench_dip_row():
    table = bench.bench_dip([("faster-dip-32", 32)], iterations=8, eval_every=4, matmul_size=128, device="cpu")
    row = table.iloc[0]
    assert row["config"] == "faster-dip-32 32x32" and row["iterations"] == 8
    numeric = row.drop(["config", "engine", "iterations"]).astype(float)
    assert np.isfinite(numeric).all() and (numeric[[c for c in numeric.index if c.endswith("per_it")]] > 0).all()
    assert math.isclose(row["speedup"], row["reference_s_per_it"] / row["fast_s_per_it"])
    assert math.isclose(row["fast_minus_fp32_db"], row["fast_psnr"] - row["fp32_psnr"], abs_tol=1e-9)
    assert 0 < row["reference_roofline"] and 0 < row["fast_roofline"]


def test_bench_many_table():
    many = bench.bench_many(TINY, size=16, ks=(1, 2), iterations=8, eval_every=4, device="cpu")
    assert list(many["K"]) == [1, 2]
    assert (many["batched_it_per_s"] > 0).all() and (many["sequential_it_per_s"] > 0).all()
    assert (many["batched_engine"] == many["sequential_engine"].str.split("+").str[0]).all()  # same precision


def test_bench_monitors_sides_agree_and_report_ratio():
    result = bench.bench_monitors(size=64, repeats=1, device="cpu")
    assert result["ratio"] == pytest.approx(result["papers_s"] / result["torch_s"])
    assert result["ratio_numpy"] == pytest.approx(result["numpy_s"] / result["torch_s"])
    assert result["max_rel_diff"] < 1e-4
    for side in ("papers", "numpy", "torch"):
        assert result[f"{side}_s"] > 0
        assert all(result[f"{side}_{m}_s"] > 0 for m in ("psnr", "fbc", "blur", "sharpness"))
    assert result["papers_copy_s"] > 0
    assert (result["size"], result["repeats"], result["device"]) == (64, 1, "cpu")
    assert result["threads"] == torch.get_num_threads()
    with pytest.raises(ValueError, match="size"):
        bench.bench_monitors(size=8, repeats=1, device="cpu")


def test_numpy_fbc_matches_torch_fbc():
    rng = np.random.default_rng(1)
    target = rng.random((32, 32, 3))
    output = np.clip(target + 0.2 * rng.standard_normal(target.shape), 0, 1)
    torch_fbc = spectral.fbc(torch.from_numpy(output).permute(2, 0, 1)[None].float(),
                             torch.from_numpy(target).permute(2, 0, 1)[None].float())
    np.testing.assert_allclose(bench._numpy_fbc(output, target, 5), torch_fbc[0].numpy(), rtol=1e-4)


def test_papers_fbc_is_the_fbc_with_rgb2gray_weights():
    # The papers' FBC differs from archlab's only in the grey weights: on grey images they agree.
    rng = np.random.default_rng(2)
    target = rng.random((32, 32))
    output = np.clip(target + 0.2 * rng.standard_normal(target.shape), 0, 1)
    torch_fbc = spectral.fbc(torch.from_numpy(output)[None, None].float(), torch.from_numpy(target)[None, None].float())
    np.testing.assert_allclose(bench._papers_fbc(output, target, 5), torch_fbc[0].numpy(), rtol=1e-4)


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_papers_blur_and_sharpness_track_archlabs(name):
    # Different borders, grey weights, [1, -1] vs Sobel differences and signed vs absolute variations:
    # the values are close, not equal, and order a sharp and a blurred image alike.
    from scipy.ndimage import gaussian_filter

    sharp = images.to_numpy(images.resize(images.load(name), size=(64, 64)))
    sharp = np.repeat(sharp[..., None], 3, axis=-1) if sharp.ndim == 2 else sharp
    blurred = gaussian_filter(sharp, sigma=(1.5, 1.5, 0))
    values = {}
    for label, image in (("sharp", sharp), ("blurred", blurred)):
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        values[label] = (bench._papers_blur(image), float(stopping.blur_effect(tensor)[0]),
                         bench._papers_mlv_sharpness(image), float(stopping.mlv_sharpness(tensor)[0]))
        papers_blur, blur, papers_sharpness, sharpness = values[label]
        assert papers_blur == pytest.approx(blur, abs=0.15)
        assert papers_sharpness == pytest.approx(sharpness, rel=0.25)
    for i in (0, 1):
        assert values["blurred"][i] > values["sharp"][i] + 0.1
    for i in (2, 3):
        assert values["blurred"][i] < values["sharp"][i] / 2


def test_command_writes_csv(tmp_path, capsys):
    out = tmp_path / "upsample.csv"
    code = main(["upsample", "--channels", "4", "--size", "16", "--repeats", "2", "--threads", "1",
                 "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "speedup" in printed and "conditions: device=cpu" in printed and "naive median / Upsampler median" in printed
    assert list(pd.read_csv(out)["filter"]) == ["L-60", "L-60"]
    assert [p.name for p in tmp_path.iterdir()] == ["upsample.csv"]  # no temporary file left


def test_command_bad_input(capsys):
    assert main(["dip", "--config", "ulyanov-dip"]) == 2
    assert "PRESET:SIZE" in capsys.readouterr().err
    assert main(["upsample", "--threads", "0"]) == 2


def test_command_monitors_and_overhead_write_csv(tmp_path, capsys):
    out = tmp_path / "monitors.csv"
    assert main(["monitors", "--size", "32", "--repeats", "1", "--threads", "1", "--device", "cpu",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "papers_s" in printed and "ratio: papers_s / torch_s" in printed and "conditions: device=cpu" in printed
    row = pd.read_csv(out).iloc[0]
    assert row["size"] == 32 and row["ratio"] == pytest.approx(row["papers_s"] / row["torch_s"])
    out = tmp_path / "overhead.csv"
    assert main(["overhead", "--arch", "faster-dip-32", "--size", "32", "--iterations", "4",
                 "--eval-every", "2", "--repeats", "1", "--threads", "1", "--device", "cpu", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "overhead" in printed and "share of the fit's wall time" in printed
    row = pd.read_csv(out).iloc[0]
    assert row["evaluations"] == 2 and row["iterations"] == 4 and row["fit_s"] > 0
    assert row["overhead"] == pytest.approx((row["fit_s"] - row["plain_s"]) / row["fit_s"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["monitors.csv", "overhead.csv"]
    assert main(["overhead", "--iterations", "1"]) == 2


def test_time_to_quality_rows_and_ratios(tmp_path, monkeypatch):
    from benchmarks import time_to_quality as ttq

    from archlab import fitting, restoration

    real_fit = fitting.fit
    monkeypatch.setattr(ttq, "PAPERS_ITERATIONS", 6)
    monkeypatch.setattr(fitting, "fit", lambda *a, **k: real_fit(*a, **{**k, "iterations": 4, "eval_every": 2,
                                                                         "window": 4}))
    monkeypatch.setattr(ttq, "clean", lambda source, scale: images.center_crop(
        images.resize(images.load("camera"), size=(64, 64)), 32))
    rows = ttq.measure("denoise σ=25", {"task": "denoise", "sigma": 25.0}, "set9/camera.png", 0.25)
    assert [r["method"] for r in rows] == list(ttq.METHODS)
    by = {r["method"]: r for r in rows}
    papers, oracle, oracle_ema, restore = by["papers"], by["papers-oracle"], by["papers-oracle-ema"], by["restore"]
    assert oracle["psnr"] >= papers["psnr"] - 1e-9 and oracle["seconds"] <= papers["seconds"] + 1e-9
    assert oracle_ema["psnr"] >= papers["psnr_ema"] - 1e-9 and oracle_ema["seconds"] <= papers["seconds"] + 1e-9
    assert 1 <= oracle["iterations"] <= 6
    assert restore["fits"] == restoration.DEFAULT_RESTARTS and restore["iterations"] == 4 * restore["fits"]
    assert by["restore-single"]["fits"] == by["restore-controlled-64"]["fits"] == 1
    assert by["restore-single"]["iterations"] == 4
    assert {"cpu_capability", "threads", "load_1min"} <= set(rows[0])
    fp32 = by["restore-fp32"]
    assert (fp32["precision"], fp32["channels_last"]) == ("fp32", False)
    table = ttq.summary(pd.DataFrame(rows))
    assert list(table.index) == ["camera", "mean (1)"]
    line = table.loc["camera"]
    assert line["oracle s / restore s"] == pytest.approx(oracle["seconds"] / restore["seconds"])
    assert line["restore − oracle dB"] == pytest.approx(restore["psnr"] - oracle["psnr"])
    assert line["restore − fp32 dB"] == pytest.approx(restore["psnr"] - fp32["psnr"])
    assert line["restore-single dB"] == pytest.approx(by["restore-single"]["psnr"])
    assert line["papers-oracle-ema it"] == oracle_ema["iterations"]
    text = ttq.report(pd.DataFrame(rows))
    assert text.startswith("### denoise σ=25") and "| mean (1) |" in text and "CPU capability" in text


def test_time_to_quality_refresh_measures_restore_again_without_the_papers_loop(tmp_path, monkeypatch):
    from benchmarks import time_to_quality as ttq

    calls = []

    def fake_measure(label, task_dict, source, scale, seed=0, methods=ttq.METHODS):
        calls.append((Path(source).stem, methods))
        return [{"task": label, "image": Path(source).stem, "method": m, "psnr": 30.0 if len(calls) > 2 else 20.0,
                 "seconds": 1.0} for m in methods]

    monkeypatch.setattr(ttq, "measure", fake_measure)
    monkeypatch.setattr(ttq, "IMAGES", (("set9/a.png", 0.25), ("set9/b.png", 0.25)))
    monkeypatch.setattr(ttq, "TASKS", {"denoise σ=25": {"task": "denoise", "sigma": 25.0}})
    out = tmp_path / "rows.csv"
    assert ttq.main(["-o", str(out)]) == 0 and [c[1] for c in calls] == [ttq.METHODS] * 2
    rows = pd.read_csv(out)
    rows[~((rows["image"] == "b") & (rows["method"] != "restore-auto"))].to_csv(out, index=False)  # b: only one row
    assert ttq.main(["-o", str(out), "--refresh", "restore,restore-auto"]) == 0
    assert calls[2:] == [("a", ("restore", "restore-auto")), ("b", ("restore", "restore-auto"))]
    rows = pd.read_csv(out).set_index(["image", "method"])["psnr"]
    assert len(rows) == len(ttq.METHODS) + 2 and rows.index.is_unique
    assert rows[("a", "restore")] == rows[("a", "restore-auto")] == rows[("b", "restore")] == 30.0
    assert rows[("a", "papers")] == rows[("a", "restore-fp32")] == 20.0
    with pytest.raises(SystemExit) as exit_:
        ttq.main(["-o", str(out), "--refresh", "papers"])
    assert exit_.value.code == 2
    calls.clear()
    assert ttq.main(["-o", str(out), "--refresh", "restore", "--images", "b"]) == 0
    assert calls == [("b", ("restore",))]
    with pytest.raises(SystemExit) as exit_:
        ttq.main(["-o", str(out), "--images", "c"])
    assert exit_.value.code == 2
    calls.clear()
    monkeypatch.setattr(ttq, "TASKS", {"denoise σ=25": {"task": "denoise", "sigma": 25.0},
                                       "jpeg q=10": {"task": "jpeg", "quality": 10}})
    assert ttq.main(["-o", str(out), "--methods", "papers,papers-oracle,restore"]) == 0  # only what pairs lack
    assert calls == [("b", ("papers", "papers-oracle")), ("a", ("papers", "papers-oracle", "restore")),
                     ("b", ("papers", "papers-oracle", "restore"))]
    with pytest.raises(SystemExit) as exit_:
        ttq.main(["-o", str(out), "--methods", "paper"])
    assert exit_.value.code == 2
    calls.clear()
    assert ttq.main(["-o", str(out), "--refresh", "restore", "--tasks", "jpeg"]) == 0
    assert calls == [("a", ("restore",)), ("b", ("restore",))] and pd.read_csv(out).query("task == 'jpeg q=10'").shape[0] == 6
    with pytest.raises(SystemExit) as exit_:
        ttq.main(["-o", str(out), "--tasks", "jpg"])
    assert exit_.value.code == 2


def test_stop_rule_replay_fills_a_rolled_back_evaluation_with_the_kept_state(tmp_path):
    from benchmarks import stop_rules

    rng = np.random.default_rng(0)
    clean = rng.uniform(0.2, 0.8, (1, 16, 16)).astype(np.float32)
    observation = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    iterations = [i for i in range(10, 310, 10) if i != 150]  # 150 was rolled back: not saved
    outputs = np.stack([clean + (observation - clean) * min(1.0, i / 300) for i in iterations]).astype(np.float16)
    path = tmp_path / "run.npz"
    np.savez(path, iteration=np.array(iterations), output=outputs, observation=observation[None],
             reference=clean[None])
    rows = stop_rules.replay(path, sigma=25.0, patience=50)
    assert {r["rule"] for r in rows} >= {"wmv", "emv", "ratio (archlab measures)", "discrepancy (known σ)"}
    assert all(r["peak at"] == 10 for r in rows)


def test_seed_spread_table_sets_the_codes_side_by_side():
    from benchmarks import seed_spread

    rows = pd.DataFrame([{"model": "ulyanov-dip", "image": "House", "code": code, "seed": seed, "peak_psnr": peak,
                          "peak_iteration": 300 + 10 * seed}
                         for seed, (theirs, ours) in enumerate([(27.0, 26.8), (26.6, 26.9)])
                         for code, peak in (("their code", theirs), ("archlab", ours))])
    text = seed_spread.table(rows)
    assert "| 0 | 27.00 (300) | 26.80 (300) | -0.20 |" in text and "| 1 | 26.60 (310) | 26.90 (310) | +0.30 |" in text
    assert "| their code | 26.80 ± 0.28 | 305 ± 7 | 2 |" in text and "| archlab − their code | +0.05 |" in text


def test_seed_spread_runs_the_papers_loop_around_their_network():
    from types import SimpleNamespace

    from benchmarks import seed_spread

    built = []

    def get_net(channels, *args, **kwargs):
        built.append((channels, args, kwargs))
        return torch.nn.Sequential(torch.nn.Conv2d(channels, 3, 3, padding=1), torch.nn.Sigmoid())

    clean = torch.rand(1, 3, 16, 16)
    y = (clean + 0.1 * torch.randn(1, 3, 16, 16)).clamp(0, 1)
    iteration, psnr = seed_spread.their_fit(SimpleNamespace(get_net=get_net), "ulyanov-dip", clean, y, seed=1,
                                            iterations=30, lr=0.01, jitter=1 / 30)
    assert built[0][0] == 32 and built[0][2]["num_scales"] == 5 and built[0][2]["upsample_mode"] == "bilinear"
    assert list(iteration) == [0, 10, 20, 30] and np.isfinite(psnr).all()
    again = seed_spread.their_fit(SimpleNamespace(get_net=get_net), "ulyanov-dip", clean, y, seed=1, iterations=30,
                                  lr=0.01, jitter=1 / 30)
    assert np.array_equal(psnr, again[1])  # the seed fixes the weights, the input and the jitter


def test_seed_spread_copies_their_init_weight_before_bias():
    from benchmarks import seed_spread

    class TheirSpectralNorm(torch.nn.Module):  # their wrapper: module.bias registered before module.weight_bar
        def __init__(self, conv):
            super().__init__()
            self.module = torch.nn.Module()
            self.module.bias = torch.nn.Parameter(conv.bias.detach().clone())
            self.module.weight_bar = torch.nn.Parameter(conv.weight.detach().clone())

    convs = [torch.nn.Conv2d(2, 4, 3), torch.nn.Conv2d(4, 4, 3)]
    theirs = torch.nn.Sequential(*(TheirSpectralNorm(c) for c in convs))
    frozen = torch.nn.Conv2d(4, 4, 1)
    frozen.requires_grad_(False)
    theirs.append(frozen)  # frozen (their Gaussian upsampler) is not copied
    mine = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Conv2d(4, 4, 3))
    seed_spread.copy_their_init(theirs, mine)
    for conv, wrapped in zip(mine, theirs):
        assert torch.equal(conv.weight, wrapped.module.weight_bar) and torch.equal(conv.bias, wrapped.module.bias)
    with pytest.raises(SystemExit, match="do not line up"):
        seed_spread.copy_their_init(theirs, torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3)))


def test_seed_spread_table_compares_every_archlab_fit_with_their_code():
    from benchmarks import seed_spread

    rows = pd.DataFrame([
        {"model": "shi-decoder", "image": "F16", "code": "their code", "seed": 0, "peak_psnr": 27.6, "peak_iteration": 2990,
         "psnr_1000": 26.75},
        {"model": "shi-decoder", "image": "F16", "code": "archlab, their init", "seed": 0, "peak_psnr": 27.5,
         "peak_iteration": 2980, "psnr_1000": 26.70}])
    text = seed_spread.table(rows)
    assert "| 0 | 27.60 (2990) | 27.50 (2980) | -0.10 |" in text
    assert "| archlab, their init − their code | -0.10 | -10.00 | -0.05 | |" in text


def test_exact_parity_finds_no_difference_between_one_code_and_itself():
    """With archlab's own network standing in for the paper's, the float64 curves of the two loops (their denoising
    loop, archlab's fit) agree once archlab's iteration k is matched with their k − 1 updates, and archlab's
    float64 gradient is the exact one."""
    from types import SimpleNamespace

    from benchmarks import exact_parity, seed_spread

    run, clean, obs = seed_spread.observation("shi-decoder", "House")  # 64 px: the smallest parity image
    stand_in = SimpleNamespace(decoder=lambda **kwargs: models.build(run.arch, 3, tuple(obs.y.shape[-2:]), seed=0)[0])
    errors = exact_parity.gradient_errors(stand_in, "shi-decoder", run, obs.y, seed=0)
    assert errors["archlab float64"] < 1e-12 and 0 < errors["archlab fp32"] == errors["their code fp32"] < 0.1
    updates, ours, theirs, _, _ = exact_parity.float64_curves(stand_in, "shi-decoder", run, clean, obs.y, seed=0,
                                                             iterations=3)
    assert list(updates) == [0, 1, 2] and np.abs(ours - theirs).max() < 1e-4 and ours[2] > ours[0]
    assert torch.get_default_dtype() == torch.float32 and seed_spread.EVAL_EVERY == 10  # dtype restored, setting untouched


def test_jpeg_consistency_rows_stop_later_for_a_smaller_tau_and_never_above_the_best():
    from benchmarks import jpeg_consistency as jc

    x = images.center_crop(images.resize(images.load("camera"), size=(32, 32)), 8)
    row = jc.measure("camera", x, iterations=200)
    assert row["set"] == "training" and 1 <= row["best_iteration"] <= 200 and row["best_psnr"] > row["observation_psnr"]
    stops = [row[f"stop τ={tau:g}"] for tau in jc.TAUS]
    gaps = [row[f"gap τ={tau:g}"] for tau in jc.TAUS]
    assert not np.isnan(stops[0]) and all(np.isnan(b) or a <= b for a, b in zip(stops, stops[1:]))
    assert all(np.isnan(g) or g <= 0 for g in gaps)
    text = jc.report(pd.DataFrame([row, row | {"image": "again", "set": "held-out"}]))
    assert "| camera |" in text and "τ=0.0015 mean" in text


def test_restore_budget_candidates_fill_the_default_restoration_s_time_and_the_table_marks_the_choice():
    from benchmarks.restore_budget import budget_table, candidates

    from archlab import learnt

    table = []
    for image in ("a", "b"):  # per fit: the default 1 s; width 16: 1.4 s; width 8: 0.5 s; width 12: 0.9 s
        for width, seconds, psnr in ((64, 1.0, 20.0), (16, 1.4, 21.0), (8, 0.5, 20.2), (12, 0.9, 20.5), (24, 4.0, 23)):
            table.append({"image": image, **learnt.DEFAULT_CONFIG, "width": width, "stop_psnr": psnr,
                          "seconds": seconds, "cpu_seconds": seconds})
    table.append({**table[0], "lipschitz": 3.0, "stop_psnr": 30.0})  # the default's network at another λ: a candidate
    table = pd.DataFrame(table)
    chosen = candidates(table[table["lipschitz"] == 2.0], max_fits=4, per_level=1)
    # within 3 s: width 16 twice, width 12 three times, width 8 four (of six); width 24 never; the default is the base
    assert list(zip(chosen["candidate"], chosen["width"], chosen["fits"])) == [("c1", 16, 2), ("c2", 12, 3), ("c3", 8, 4)]
    larger = candidates(table[table["lipschitz"] == 2.0], max_fits=4, per_level=1, budget=4.2)  # a measured budget
    assert list(zip(larger["width"], larger["fits"])) == [(24, 1), (16, 3), (12, 4)]  # width 8 (4 fits too) is below 12
    assert len(candidates(table[table["image"] == "a"], max_fits=1, per_level=3)) == 3  # λ 3 counts as a candidate

    rows = [{"image": image, "method": "default", **learnt.DEFAULT_CONFIG, "fits": k, "psnr": 20.0 + 0.1 * k,
             "cpu_seconds": 1.0 * k} for image in ("a", "b") for k in (1, 2, 3)]
    rows += [{"image": image, "method": method, **learnt.DEFAULT_CONFIG, "width": width, "fits": k,
              "psnr": psnr + 0.2 * k, "cpu_seconds": seconds * k}
             for image in ("a", "b") for method, width, seconds, psnr, fits in (("c1", 16, 1.4, 20.8, 2),
                                                                                ("c2", 12, 0.9, 20.3, 3))
             for k in range(1, fits + 1)]
    rows.append({**rows[0], "image": "c", "psnr": 30.0})  # an image with the default only: left out
    text = budget_table(pd.DataFrame(rows)).splitlines()  # over a and b only (the header's "2 images")
    assert text[0].startswith("2 images; default ×3: 20.30 dB, 3.00 CPU s; best within its time in these rows: 2 × depth=3, "
                              "width=16")
    assert text[4] == ("| c1 | 2 | 21.20 | +0.90 | 0.93 | 0 of 2 | depth 3, width 16, skip 0, bilinear, λ 2, "
                       "lr 0.002, jitter 0.0333 |")
    assert text[5].startswith("| c1 | 1 | 21.00 | +0.70 | 0.47 | 0 of 2 |")  # best PSNR first
    assert text[6].startswith("| c2 | 3 | 20.90 | +0.60 | 0.90 | 0 of 2 |")


@pytest.mark.parametrize("argv, message", [
    (["--task", "sr"], "--study is required for --task 'sr'; default studies: poisson"),
    (["--images", "test"], "--images: 'test' is invalid; allowed: training, held-out"),
    (["--max-fits", "0"], "--max-fits: 0 is invalid; allowed: an integer ≥ 1"),
    (["--shard", "2/2"], "--shard: '2/2' is invalid; allowed: i/n with 0 ≤ i < n"),
    (["--ship"], "--ship writes the rows of --table CSV ...; give them"),
    (["--table", "no-such.csv", "--ship"], "--table: no-such.csv is not a file; allowed: CSVs this script wrote"),
    ([], "-o/--out is required unless --table is given")])
def test_restore_budget_rejects_bad_arguments_before_fitting(argv, message, capsys):
    from benchmarks.restore_budget import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err



def test_restore_budget_ships_the_rows_with_their_configurations(tmp_path, monkeypatch, capsys):
    from benchmarks.restore_budget import main

    from archlab import learnt

    first = {**learnt.DEFAULT_CONFIG, "width": 12, "skip": 4, "upsampler": "bicubic", "lr": 0.0295}
    rows = [{"image": image, "method": "default", **learnt.DEFAULT_CONFIG, "fits": k, "psnr": 20.0 + k * 0.1,
             "cpu_seconds": 1.0 * k, "capability": "AVX2", "threads": 1, "load": 0.5}
            for image in ("a", "b") for k in (1, 2, 3)]
    rows += [{"image": image, "method": "c1", **first, "fits": 1, "psnr": 21.0, "cpu_seconds": 2.0,
              "capability": "AVX2", "threads": 1, "load": 0.5} for image in ("a", "b")]
    measured = tmp_path / "rows.csv"
    pd.DataFrame(rows).to_csv(measured, index=False)
    shipped = tmp_path / "recommend-poisson-restorations.csv"
    monkeypatch.setattr(learnt, "restorations_path", lambda task: shipped)
    learnt.shipped_within_budget.cache_clear()
    try:
        assert main(["--table", str(measured), "--ship"]) == 0
        assert f"wrote {shipped}" in capsys.readouterr().out
        best = learnt.shipped_within_budget("poisson", 3)
        assert best.fits == 1 and best.gain == pytest.approx(0.7) and best.time_ratio == pytest.approx(2 / 3)
        assert learnt._config_id(best.config) == learnt._config_id(first)  # to the six digits the CSV keeps
        assert "capability" not in pd.read_csv(shipped)
    finally:
        learnt.shipped_within_budget.cache_clear()


def test_restore_budget_table_without_the_default_restoration_is_one_line_and_ships_nothing(tmp_path, monkeypatch,
                                                                                             capsys):
    from benchmarks.restore_budget import main

    from archlab import learnt

    rows = tmp_path / "rows.csv"
    pd.DataFrame([{"image": "a", "method": "c1", **learnt.DEFAULT_CONFIG, "width": 8, "fits": 1, "psnr": 20.0,
                   "cpu_seconds": 1.0, "capability": "AVX2", "threads": 1, "load": 0.5}]).to_csv(rows, index=False)
    shipped = tmp_path / "shipped.csv"
    monkeypatch.setattr(learnt, "restorations_path", lambda task: shipped)
    with pytest.raises(SystemExit) as exit_:
        main(["--table", str(rows), "--ship"])
    assert exit_.value.code == 2 and "--table: the rows hold no default restoration" in capsys.readouterr().err
    assert not shipped.exists()
