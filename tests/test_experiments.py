import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from archlab import experiments, models, report
from archlab.cli import main

TINY_HOURGLASS = models.ArchSpec(kind="hourglass", depth=1, width=8, skip=2, upsampler="bilinear")
TINY_DECODER = models.ArchSpec(kind="decoder", depth=2, width=8, skip=0, upsampler="bilinear", norm="mean_only",
                               leak=0.01, lipschitz=2.0)


@pytest.fixture(autouse=True)
def _one_thread():
    # The fits here are tiny; on a shared machine one thread is faster than two.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_png(path, array):
    Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


def _smooth(size=16):
    y, x = np.mgrid[:size, :size] / size
    return 0.5 + 0.3 * np.sin(2 * np.pi * x) * np.cos(2 * np.pi * y)


# -- 1-D two-sinusoid experiment (paper 001 §3.1) --------------------------------------------------------------

def test_amplitudes_recover_sine_amplitudes_exactly():
    n = np.arange(64) / 64
    signal = 0.7 * np.sin(2 * np.pi * 3 * n + 0.4) + 1.9 * np.sin(2 * np.pi * 20 * n - 1.0)
    amp = experiments.amplitudes(torch.tensor(signal), [3, 20, 7])
    np.testing.assert_allclose(amp.numpy(), [0.7, 1.9, 0.0], atol=1e-12)
    np.testing.assert_allclose(experiments.amplitudes(experiments.sinusoid(64, (5, 12)), [5, 12])[0, 0].numpy(),
                               [1.0, 1.0], atol=1e-5)


def test_sinusoid_rejects_frequencies_at_or_above_nyquist():
    with pytest.raises(ValueError, match="frequencies"):
        experiments.sinusoid(64, (5, 32))


def test_networks_map_signal_to_signal():
    z = torch.randn(1, 1, 64)
    assert experiments.conv_encoder_decoder(layers=4, width=8)(z).shape == (1, 1, 64)
    assert experiments.linear_encoder_decoder(64, layers=3, width=16)(z).shape == (1, 1, 64)


def test_convergence_table_first_iteration_below_delta():
    curves = pd.DataFrame({
        "kind": ["conv"] * 6 + ["linear"] * 6,
        "iteration": [0, 1, 2] * 4,
        "frequency": ([5] * 3 + [50] * 3) * 2,
        "se": [1.0, 0.005, 0.0, 1.0, 0.5, 0.009, 1.0, 1.0, 0.02, 1.0, 0.3, 0.2],
    })
    table = experiments.convergence_table(curves, delta=0.01).set_index("kind")
    assert table.loc["conv", "converged_k5"] == 1 and table.loc["conv", "converged_k50"] == 2
    assert table.loc["conv", "ratio"] == 2.0
    assert math.isnan(table.loc["linear", "converged_k5"]) and math.isnan(table.loc["linear", "converged_k50"])


def test_sinusoid_conv_learns_low_frequency_first_linear_does_not():
    curves = experiments.sinusoid_experiment(frequencies=(2, 20), length=64, layers=4, width=16, iterations=300,
                                             lr=1e-3, device="cpu")
    table = experiments.convergence_table(curves).set_index("kind")
    assert table.loc["conv", "converged_k2"] < table.loc["conv", "converged_k20"] / 3
    assert table.loc["linear", "ratio"] == pytest.approx(1.0, abs=0.2)


# -- trajectories (paper 001 §2) --------------------------------------------------------------------------------

def test_high_band_share_white_noise_matches_ring_area():
    noise = torch.rand(4, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    expected = math.pi * (0.5**2 - 0.4**2)  # area of the ring 0.4 < rho <= 0.5 in the unit frequency square
    np.testing.assert_allclose(experiments.high_band_share(noise).numpy(), expected, rtol=0.03)
    assert float(experiments.high_band_share(torch.from_numpy(_smooth(128)).float()[None, None])[0]) < 1e-6


def test_trajectory_divergence_runs_two_seeds_and_converges_on_smooth_image(tmp_path):
    path = _write_png(tmp_path / "smooth.png", _smooth())
    curves = experiments.trajectory_divergence([path], arch=TINY_HOURGLASS, iterations=60, lr=0.02, every=20,
                                               device="cpu")
    assert list(curves["iteration"]) == [0, 20, 40, 60] and set(curves["image"]) == {"smooth"}
    np.testing.assert_allclose(curves["rms"], np.sqrt(curves["eps"] / 256), rtol=1e-5)
    assert curves["eps"].iloc[-1] < curves["eps"].iloc[0] / 10
    assert curves["psnr_a"].iloc[-1] > curves["psnr_a"].iloc[0] + 5
    with pytest.raises(ValueError, match="seeds"):
        experiments.trajectory_divergence([path], arch=TINY_HOURGLASS, seeds=(1, 1), iterations=2)


def test_trajectory_summary_first_minimum_then_peak():
    curves = pd.DataFrame({"image": ["b"] * 5 + ["a"] * 5, "iteration": [0, 10, 20, 30, 40] * 2,
                           "eps": [9.0, 1.0, 3.0, 2.0, 2.5, 9.0, 4.0, 2.0, 8.0, 1.0], "rms": 0.0,
                           "psnr_a": np.arange(10.0), "psnr_b": 0.0, "high_band_share": [0.5] * 5 + [0.1] * 5})
    table = experiments.trajectory_summary(curves)
    assert list(table["image"]) == ["a", "b"]
    assert list(table["first_min_iteration"]) == [20, 10] and list(table["eps_first_min"]) == [2.0, 1.0]
    assert list(table["eps_peak"]) == [8.0, 3.0] and list(table["peak_iteration"]) == [30, 20]
    assert list(table["eps_mean"]) == [11 / 3, 2.125] and list(table["psnr_final"]) == [9.0, 4.0]


# -- Lipschitz FBC (paper 000 §4.4) -----------------------------------------------------------------------------

def test_lipschitz_fbc_records_fbc_per_lambda_and_small_lambda_fits_less(tmp_path):
    path = _write_png(tmp_path / "img.png", np.random.default_rng(0).random((16, 16)) * 0.5 + _smooth() * 0.5)
    histories = experiments.lipschitz_fbc(path, lambdas=(0.3, 8.0), size=16, arch=TINY_DECODER, iterations=60,
                                          lr=0.01, eval_every=20, device="cpu")
    assert sorted(set(histories["lipschitz"])) == [0.3, 8.0]
    assert {f"fbc_{i}" for i in range(5)} <= set(histories.columns)
    table = experiments.lipschitz_summary(histories).set_index("lipschitz")
    assert table.loc[0.3, "fbc_4"] < table.loc[8.0, "fbc_4"]


# -- figures and tables -----------------------------------------------------------------------------------------

def test_markdown_table_and_the_results_folder(tmp_path):
    table = pd.DataFrame({"name": ["a", "b"], "value": [1.234567, float("nan")], "n": [1, 2]})
    assert report.markdown_table(table, 3, style="g", index=False) + "\n" == "| name | value | n |\n| --- | --- | --- |\n| a | 1.23 | 1 |\n| b |  | 2 |\n"
    curves = pd.DataFrame({"iteration": [10, 20], "psnr": [20.0, 21.5]})
    written = report.write_results(tmp_path / "run", table, curves)
    assert [p.name for p in written] == ["results.csv", "table.md", "curves.csv"]
    pd.testing.assert_frame_equal(pd.read_csv(written[0]), table)
    pd.testing.assert_frame_equal(pd.read_csv(written[2]), curves)
    assert written[1].read_text().startswith("| name |")


def test_plot_fbc_needs_fbc_columns(tmp_path):
    history = pd.DataFrame({"iteration": [10, 20], "psnr": [20.0, 21.0]})
    with pytest.raises(ValueError, match="fbc"):
        report.plot_fbc(history, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    history = history.assign(**{f"fbc_{i}": [0.5, 0.6] for i in range(5)})
    with Image.open(report.plot_fbc(history, tmp_path / "fbc.png")) as im:
        assert im.size[0] > 500


# -- command line -----------------------------------------------------------------------------------------------

def test_cli_psd_writes_figure_and_rejects_missing_image(tmp_path, capsys):
    a = _write_png(tmp_path / "a.png", _smooth(32))
    b = _write_png(tmp_path / "b.png", np.random.default_rng(0).random((32, 32)))
    assert main(["spectral", "psd", str(a), str(b), "-o", str(tmp_path / "psd.png")]) == 0
    assert (tmp_path / "psd.png").stat().st_size > 0
    assert main(["spectral", "psd", str(tmp_path / "missing.png"), "-o", str(tmp_path / "bad.png")]) == 2
    assert "error" in capsys.readouterr().err and not (tmp_path / "bad.png").exists()


def test_cli_fbc_writes_figure_history_and_summary(tmp_path):
    spec = tmp_path / "tiny.json"
    spec.write_text(TINY_HOURGLASS.to_json())
    out = tmp_path / "out"
    code = main(["spectral", "fbc", "--task", "denoise", "--sigma", "25", "--image", "camera", "--size", "32",
                 "--arch", str(spec), "--iterations", "20", "--eval-every", "10", "--device", "cpu",
                 "-o", str(out)])
    assert code == 0
    history = pd.read_csv(out / "history.csv")
    assert list(history["iteration"]) == [10, 20]
    assert history[[f"fbc_{i}" for i in range(5)]].notna().all().all()
    assert (out / "fbc.png").stat().st_size > 0 and (out / "summary.json").exists()


def test_cli_sinusoid_writes_table(tmp_path):
    out = tmp_path / "sin"
    assert main(["spectral", "sinusoid", "--length", "32", "--frequencies", "2", "9", "--layers", "2", "--width",
                 "8", "--iterations", "5", "--device", "cpu", "-o", str(out)]) == 0
    table = pd.read_csv(out / "results.csv")
    assert list(table["kind"]) == ["conv", "linear"]
    assert (out / "sinusoid.png").exists() and (out / "table.md").exists() and (out / "curves.csv").exists()
