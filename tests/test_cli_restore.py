"""`archlab restore`: outputs, both modes, and bad input (one line, exit 2, no files)."""

import json

import numpy as np
import pytest
from PIL import Image

from archlab.cli import main

FAST = ["--iterations", "20", "--eval-every", "10", "--size", "32", "--arch", "faster-dip-32", "--restarts", "1"]


def test_restore_writes_everything(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["restore", "--image", "camera", *FAST, "-o", str(out)]) == 0
    for name in ("restored.png", "restored_last.png", "observed.png", "history.csv", "curves.png", "spec.json",
                 "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 20 and "psnr" in summary and "observation_psnr" in summary
    spec = json.loads((out / "spec.json").read_text())
    assert spec["arch"]["width"] == 32 and spec["fit"]["iterations"] == 20 and spec["task"]["sigma"] == 25.0
    assert "PSNR observation" in capsys.readouterr().out
    assert not list(out.glob(".*"))  # no temporary files left


def test_observed_mode_grey_and_rgba(tmp_path, capsys):
    rgba = (np.random.default_rng(0).random((40, 36, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "noisy.png")
    out = tmp_path / "o"
    assert main(["restore", "--observed", str(tmp_path / "noisy.png"), *FAST, "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "alpha dropped" in text and "cropped 36x40 to 36x40" not in text
    assert "psnr" not in json.loads((out / "summary.json").read_text())
    Image.fromarray(rgba[..., 0], "L").save(tmp_path / "grey.png")
    assert main(["restore", "--observed", str(tmp_path / "grey.png"), *FAST, "-o", str(tmp_path / "g")]) == 0
    assert Image.open(tmp_path / "g" / "restored.png").mode == "L"


def test_sixteen_bit_image(tmp_path):
    grey16 = (np.random.default_rng(0).random((32, 32)) * 65535).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "deep.png")
    assert main(["restore", "--image", str(tmp_path / "deep.png"), *FAST, "-o", str(tmp_path / "o")]) == 0


@pytest.mark.parametrize("args,needle", [
    (["--arch", "resnet"], "unknown preset"),
    (["--task", "denoise", "--sigma", "-3"], "sigma"),
    (["--task", "denoise", "--quality", "10"], "--quality"),
    (["--task", "jpeg", "--quality", "120"], "quality"),
    (["--task", "inpaint", "--ratio", "1.5"], "ratio"),
    (["--task", "sr", "--factor", "1"], "factor"),
    (["--image", "no_such_image.png"], "neither a file nor a built-in"),
    (["--arch", "ulyanov-dip", "--size", "32"], "depth"),
])
def test_bad_input_is_one_line_exit_2_no_files(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    base = ["restore", "--iterations", "5", "--size", "32", "-o", str(out)]
    assert main(base + args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_unreadable_empty_and_tiny_files(tmp_path, capsys):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "dot.png")
    for name, needle in (("empty.png", "empty"), ("junk.png", "cannot read"), ("dot.png", "1x1")):
        assert main(["restore", "--observed", str(tmp_path / name), "-o", str(tmp_path / "o")]) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_restore_stops_automatically_and_says_what_it_returned(tmp_path, capsys):
    out = tmp_path / "auto"
    base = ["restore", "--image", "camera", "--size", "32", "--arch", "faster-dip-32", "--eval-every", "10",
            "--restarts", "1"]
    assert main([*base, "--iterations", "300", "--lr", "0.01", "-o", str(out)]) == 0  # --stop auto is the default
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_rule"] == "ema_discrepancy" and summary["stop_reason"] == "ema_discrepancy"
    assert summary["iterations"] < 300 and summary["auto_stop_iteration"] <= summary["iterations"]
    assert f"iteration {summary['auto_stop_iteration']}" in summary["returned"]
    assert summary["psnr_restored"] == pytest.approx(summary["ema_discrepancy_psnr"])
    assert summary["discrepancy_iteration"] <= summary["ema_discrepancy_iteration"]
    assert "restored.png is the moving average of the outputs (β = 0.99) at iteration" in capsys.readouterr().out
    none = tmp_path / "none"
    assert main([*base, "--iterations", "20", "--stop", "none", "-o", str(none)]) == 0
    summary = json.loads((none / "summary.json").read_text())
    assert summary["stop_rule"] is None and summary["iterations"] == 20 and "moving average" in summary["returned"]
    assert summary["psnr_restored"] == pytest.approx(summary["psnr_ema"])


def test_restarts_average_fits_of_the_next_seeds_on_one_observation(tmp_path, capsys):
    import torch

    from archlab import images, metrics, restoration, tasks
    from archlab.fitting import fit

    task = tasks.Denoise(25)
    observation = task.observe(images.resize(images.load("camera"), size=(32, 32)), seed=0)
    settings = {"iterations": 40, "eval_every": 10, "window": 10, "lr": 0.01, "stop": "auto", "fast": False,
                "progress": False}
    mean, runs = restoration.fit_restarts("faster-dip-32", task, observation, 2, seed=3, **settings)
    alone = [fit("faster-dip-32", task, observation, seed=s, **settings) for s in (3, 4)]
    assert [r.settings["seed"] for r in runs] == [3, 4]
    for run, single in zip(runs, alone):
        torch.testing.assert_close(run.restored, single.restored)
    torch.testing.assert_close(mean, (alone[0].restored + alone[1].restored) / 2)
    with pytest.raises(ValueError, match="restarts: 0 is invalid; allowed: an integer ≥ 1"):
        restoration.fit_restarts("faster-dip-32", task, observation, 0)

    out = tmp_path / "three"
    assert main(["restore", "--image", "camera", "--size", "32", "--arch", "faster-dip-32", "--eval-every", "10",
                 "--iterations", "40", "--lr", "0.01", "--restarts", "3", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert [r["seed"] for r in summary["restarts"]] == [0, 1, 2]
    assert summary["seconds"] == pytest.approx(sum(r["seconds"] for r in summary["restarts"]), abs=0.05)
    assert summary["returned"].startswith("the mean of 3 fits from the seeds 0-2")
    assert "each fit alone: " in printed and "restored.png is the mean of 3 fits" in printed
    restored = images.load(out / "restored.png")
    reference = images.resize(images.load("camera"), size=(32, 32))
    assert float(metrics.psnr(restored, reference)) == pytest.approx(summary["psnr_restored"], abs=0.05)
    assert main(["restore", "--restarts", "0", "-o", str(tmp_path / "none")]) == 2
    assert "--restarts: 0 is invalid; allowed: an integer ≥ 1" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_restarts_stop_after_an_interrupted_fit(monkeypatch):
    from types import SimpleNamespace

    import torch

    from archlab import restoration, tasks

    calls = []

    def fake_fit(spec, task, observation, seed=0, **kwargs):
        calls.append(seed)
        return SimpleNamespace(restored=torch.full((1, 1, 2, 2), float(seed)),
                               stop_reason="interrupted" if seed == 1 else "ema_discrepancy")

    monkeypatch.setattr("archlab.fitting.fit", fake_fit)
    mean, runs = restoration.fit_restarts("faster-dip-32", tasks.Denoise(25), None, 3)
    assert calls == [0, 1] and len(runs) == 2 and float(mean.mean()) == 0.5


def test_restarts_run_together_on_cuda_as_one_batched_fit(monkeypatch):
    from types import SimpleNamespace

    import torch

    from archlab import engine, fitting, restoration, tasks

    seen = {}

    def fake_fit_many(spec, task, observation, seeds=None, **kwargs):
        seen.update(seeds=seeds, **kwargs)
        return [SimpleNamespace(restored=torch.full((1, 1, 2, 2), float(s))) for s in seeds]

    monkeypatch.setattr(fitting, "fit_many", fake_fit_many)
    monkeypatch.setattr(fitting, "fit", lambda *a, **k: pytest.fail("one fit at a time on CUDA"))
    monkeypatch.setattr(engine, "resolve_device", lambda device="auto": torch.device("cuda"))
    mean, runs = restoration.fit_restarts("faster-dip-32", tasks.Denoise(25), None, 3, seed=5, device="cuda",
                                          progress=False, interruptible=True)
    assert seen["seeds"] == [5, 6, 7] and seen["interruptible"] and len(runs) == 3 and float(mean.mean()) == 6.0


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_restarts_on_cuda_average_the_batched_fits():
    import torch

    from archlab import images, restoration, tasks

    task = tasks.Denoise(25)
    observation = task.observe(images.resize(images.load("camera"), size=(32, 32)), seed=0)
    settings = {"iterations": 20, "eval_every": 10, "window": 10, "stop": "auto", "progress": False}
    mean, runs = restoration.fit_restarts("faster-dip-32", task, observation, 2, device="cuda", **settings)
    assert [r.extras["batch"] for r in runs] == [2, 2] and [r.settings["seed"] for r in runs] == [0, 1]
    torch.testing.assert_close(mean, (runs[0].restored + runs[1].restored) / 2)


def test_jpeg_restores_by_default_with_two_fits_of_paper_004_s_rules(tmp_path, monkeypatch):
    from archlab import fitting, recommend, restoration, tasks

    task = tasks.JPEGDeblock(10)
    assert restoration.default_arch(task) == "rules" and restoration.default_restarts(task) == 2
    assert restoration.default_restarts(tasks.Denoise(25)) == restoration.DEFAULT_RESTARTS == 3
    spec, settings, reason = restoration.setup("rules", task)
    assert reason.startswith("paper 004's rules at width 64")
    assert spec == recommend.BASE_SPEC and (spec.kind, spec.depth, spec.width, spec.skip) == ("hourglass", 2, 64, 4)
    assert settings == {**restoration.DEFAULT_FIT, "iterations": 3000, "lr": 0.01, "stop": "auto"}
    seen = []
    real_fit = fitting.fit
    monkeypatch.setattr(fitting, "fit", lambda *a, **k: seen.append((a[0], k)) or real_fit(*a, **{**k, "iterations": 4}))
    base = ["restore", "--task", "jpeg", "--image", "camera", "--size", "32", "--eval-every", "2"]
    assert main([*base, "-o", str(tmp_path / "default")]) == 0
    assert [s for s, _ in seen] == [recommend.BASE_SPEC] * 2
    assert [k["seed"] for _, k in seen] == [0, 1] and {k["lr"] for _, k in seen} == {0.01}
    summary = json.loads((tmp_path / "default" / "summary.json").read_text())
    assert summary["arch"] == "rules" and len(summary["restarts"]) == 2
    assert any(note.startswith("--arch rules: depth 2, width 64, skip 4, upsampler bilinear, lipschitz 2.0, lr 0.01, "
                               "input_jitter 0.0333, iterations 3000; paper 004's rules") for note in summary["notes"])
    seen.clear()
    assert main([*base, "--restarts", "1", "--lr", "0.005", "-o", str(tmp_path / "one")]) == 0
    assert len(seen) == 1 and seen[0][1]["lr"] == 0.005
    seen.clear()
    assert main(["restore", "--image", "camera", "--size", "32", "--eval-every", "2", "--arch", "faster-dip-32",
                 "-o", str(tmp_path / "denoise")]) == 0
    assert len(seen) == restoration.DEFAULT_RESTARTS
