"""The one way an image is prepared, and archlab.restore: the command line's job as one call."""

import json

import numpy as np
import pytest
import torch

import archlab
from archlab import images, models, restoration, tasks
from archlab.cli import main


def test_clean_image_resizes_once_never_enlarges_and_crops_to_the_multiple():
    x = images.load("camera")  # 512 x 512
    assert restoration.clean_image("camera", longest=100, multiple=32).shape[-2:] == (96, 96)
    assert restoration.clean_image("camera", longest=1000).shape[-2:] == (512, 512)  # never enlarged
    assert restoration.clean_image(x, crop=(100, 60), multiple=8).shape[-2:] == (96, 56)
    torch.testing.assert_close(restoration.clean_image(x, scale=0.25), images.resize(x, scale=0.25))
    with pytest.raises(ValueError, match="at most one of scale, size and longest"):
        restoration.clean_image(x, scale=0.5, longest=64)


def test_prepare_degrades_with_the_seed_and_crops_for_the_architecture_and_sr_factor():
    spec = models.preset("faster-dip-32")  # multiple 4
    task = tasks.SuperResolution(factor=3)
    a = restoration.prepare(task, spec, "camera", size=50, seed=1)
    b = restoration.prepare(task, spec, "camera", size=50, seed=1)
    assert a.reference.shape[-2:] == (48, 48) and a.y.shape[-2:] == (16, 16)  # lcm(4, 3) = 12
    torch.testing.assert_close(a.y, b.y)
    noisy = restoration.prepare(tasks.Denoise(25), spec, "camera", size=32, seed=0)
    other = restoration.prepare(tasks.Denoise(25), spec, "camera", size=32, seed=1)
    assert not torch.equal(noisy.y, other.y) and torch.equal(noisy.reference, other.reference)


def test_prepare_names_the_callers_flags_in_its_errors(tmp_path):
    spec = models.preset("controlled-64")
    with pytest.raises(ValueError, match=r"^--size: 1 must be"):
        restoration.prepare(tasks.Denoise(25), spec, "camera", size=1, names={"size": "--size"})
    with pytest.raises(ValueError, match=r"^image: .* the limit is max_pixels 100;"):
        restoration.prepare(tasks.Denoise(25), spec, "camera", size=64, max_pixels=100)
    path = tmp_path / "odd.png"
    images.save(images.resize(images.load("camera"), size=(30, 37)), path)
    prepared = restoration.prepare(tasks.Denoise(25), spec, observed=path)
    assert prepared.reference is None and prepared.y.shape[-2:] == (24, 32)
    assert prepared.notes[-1] == "cropped 37x30 to 32x24"


def test_restore_returns_what_the_command_line_writes(tmp_path):
    call = archlab.restore("camera", size=32, arch="faster-dip-32", iterations=12, eval_every=4, restarts=2)
    out = tmp_path / "out"
    assert main(["restore", "--image", "camera", "--size", "32", "--arch", "faster-dip-32", "--iterations", "12",
                 "--eval-every", "4", "--restarts", "2", "-o", str(out)]) == 0
    assert call.result.settings["stop"] == "auto" and call.result.settings["lr"] == restoration.DEFAULT_FIT["lr"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == call.result.stopped_at and summary["returned"]
    assert summary["psnr_restored"] == pytest.approx(call.psnr, abs=1e-4)
    written = images.load(out / "restored.png")  # 8-bit PNG of the same image
    assert call.restored.shape == written.shape == (1, 1, 32, 32)
    assert np.abs(written.numpy() - call.restored.numpy()).max() <= 0.5 / 255 + 1e-6


def test_the_public_api_names_functions_not_the_modules_that_hold_them():
    import importlib.util
    import inspect
    import subprocess
    import sys

    import archlab.fitting  # noqa: F401  (importing a submodule must not shadow a public name)

    assert inspect.isfunction(archlab.fit) and inspect.isfunction(archlab.restore)
    assert set(archlab.__all__) <= set(dir(archlab))
    for name in archlab.__all__:
        assert getattr(archlab, name) is not None
        if name not in ("filters", "recommend"):  # a submodule of that name would replace it once imported
            assert importlib.util.find_spec(f"archlab.{name}") is None, name
    text = subprocess.run([sys.executable, "-c", "import archlab; help(archlab)"], capture_output=True, text=True,
                          env={"PAGER": "cat", "PATH": ""}).stdout
    assert "restore" in text and "Observation" in text


def test_restore_fits_the_studied_configuration_where_the_task_ships_a_study():
    assert restoration.default_arch(tasks.Denoise(25)) == "studied"
    assert restoration.default_arch(tasks.PoissonDenoise(0.1)) == "studied"
    assert restoration.default_arch(tasks.JPEGDeblock(10)) == "rules"
    assert restoration.default_arch(tasks.Inpaint()) == restoration.DEFAULT_ARCH == "controlled-64"
