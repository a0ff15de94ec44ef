"""Tests of archlab.tasks: the degradations and their physics operators."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from archlab import images
from archlab.tasks import (
    TASKS,
    Denoise,
    Enhance,
    Inpaint,
    JPEGDeblock,
    PoissonDenoise,
    SuperResolution,
    make_task,
    task_from_dict,
)
from archlab.physics import resampling_taps


def rand_image(n=1, c=3, h=24, w=32, seed=0):
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(seed))


def dot(a, b):
    return (a * b).sum().item()


@pytest.mark.parametrize("kernel", ["lanczos3", "lanczos2", "bicubic"])
@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_resampling_taps_normalised_symmetric(kernel, factor):
    taps = resampling_taps(kernel, factor)
    support = {"lanczos3": 3, "lanczos2": 2, "bicubic": 2}[kernel]
    assert len(taps) == 2 * support * factor - factor % 2
    assert taps.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(taps, taps[::-1], atol=1e-15)


def test_lanczos_taps_closed_form_factor2():
    # offsets ±0.5, ±1.5, ... ±5.5 input pixels -> t = d / 2; h ∝ sinc(t) sinc(t/3)
    t = (np.arange(12) - 5.5) / 2
    expected = np.sinc(t) * np.sinc(t / 3)
    np.testing.assert_allclose(resampling_taps("lanczos3", 2), expected / expected.sum(), atol=1e-15)


@pytest.mark.parametrize("kernel", ["lanczos3", "bicubic"])
@pytest.mark.parametrize("factor", [2, 4, 8])
def test_downsampler_keeps_constant(kernel, factor):
    x = torch.full((2, 3, 8 * factor, 6 * factor), 0.37)
    y = SuperResolution(factor, kernel).degrade(x)
    assert y.shape == (2, 3, 8, 6)
    torch.testing.assert_close(y, torch.full_like(y, 0.37), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("kernel", "resample"), [("lanczos3", Image.LANCZOS), ("bicubic", Image.BICUBIC)])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsampler_matches_pillow_in_interior(kernel, resample, factor):
    a = np.random.default_rng(factor).random((48, 60)).astype(np.float32)
    expected = np.asarray(Image.fromarray(a, mode="F").resize((60 // factor, 48 // factor), resample))
    y = SuperResolution(factor, kernel).degrade(torch.from_numpy(a)[None, None])[0, 0].numpy()
    margin = -(-len(resampling_taps(kernel, factor)) // (2 * factor))  # Pillow renormalises at borders
    interior = np.abs(y - expected)[margin:-margin, margin:-margin]
    assert interior.size > 0 and interior.max() < 1e-5
    assert np.abs(y - expected).max() > 1e-3  # the borders differ (reflect vs. truncation): the test sees them


@pytest.mark.parametrize("kernel", ["lanczos3", "bicubic"])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsampler_adjoint(kernel, factor):
    physics = SuperResolution(factor, kernel).physics((2, 3, 7, 9)).double()
    x = torch.randn(2, 3, 7 * factor, 9 * factor, dtype=torch.float64)
    y = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    assert physics(x).shape == y.shape and physics.adjoint(y).shape == x.shape
    assert dot(physics(x), y) == pytest.approx(dot(x, physics.adjoint(y)), rel=1e-12)
    _, vjp = torch.func.vjp(physics, x)
    torch.testing.assert_close(physics.adjoint(y), vjp(y)[0])


def test_sr_shapes_crop_and_baseline():
    task = SuperResolution(4)
    x = rand_image(h=37, w=42)
    y = task.degrade(x)
    assert y.shape == (1, 3, 9, 10)
    ref = task.reference(x)
    torch.testing.assert_close(ref, x[..., 0:36, 1:41])
    physics = task.physics(y.shape)
    assert physics.output_shape == (36, 40)
    torch.testing.assert_close(physics(ref), y)
    base = physics.baseline(y)
    torch.testing.assert_close(base, F.interpolate(y, size=(36, 40), mode="bicubic", align_corners=False).clamp(0, 1))
    assert physics.restore(ref, y) is ref
    assert physics.loss(ref, y).item() < 1e-12


def test_sr_rejects_image_smaller_than_kernel():
    with pytest.raises(ValueError, match="too small"):
        SuperResolution(8).physics((1, 1, 2, 2))


def test_identity_and_mask_adjoint():
    x, y = torch.randn(2, 3, 8, 10, dtype=torch.float64), torch.randn(2, 3, 8, 10, dtype=torch.float64)
    for task in (Denoise(), JPEGDeblock(grey=False), Enhance(), Inpaint("bernoulli")):
        physics = task.physics(x.shape, seed=3).double()
        assert physics.output_shape == (8, 10)
        assert dot(physics(x), y) == pytest.approx(dot(x, physics.adjoint(y)), rel=1e-12)
    torch.testing.assert_close(Denoise().physics(x.shape)(x), x)


@pytest.mark.parametrize("kind", ["center", "bernoulli"])
def test_mask_loss_ignores_unknown_pixels(kind):
    task = Inpaint(kind, ratio=0.25, drop=0.5)
    x = rand_image(n=2)
    y = task.degrade(x, seed=4)
    physics = task.physics(y.shape, seed=4)
    mask = physics.mask.expand_as(x).bool()
    out = rand_image(n=2, seed=1)
    changed = torch.where(mask, out, out + 5.0)
    assert physics.loss(out, y).item() == pytest.approx(physics.loss(changed, y).item(), rel=1e-6)
    expected = ((out - x)[mask] ** 2).mean().item()
    assert physics.loss(out, y).item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(y, x * mask)
    assert physics.loss(x, y).item() == 0.0


def test_center_mask_area_and_position():
    mask = Inpaint("center", ratio=0.25).make_mask(40, 40)
    assert mask.sum().item() == 40 * 40 - 20 * 20
    assert mask[10:30, 10:30].sum().item() == 0 and mask[:10].all() and mask[30:].all()
    mask = Inpaint("center", ratio=0.1).make_mask(30, 50)
    assert mask.sum().item() == 1500 - 12 * 12  # side round(sqrt(150)) = 12
    with pytest.raises(ValueError, match="ratio"):
        Inpaint("center", ratio=0.9).make_mask(10, 100)


def test_bernoulli_mask_seeded_shared_by_channels():
    task = Inpaint("bernoulli", drop=0.3)
    x = torch.ones(1, 3, 64, 64)
    y = task.degrade(x, seed=7)
    assert torch.equal(y[0, 0], y[0, 1]) and torch.equal(y[0, 0], y[0, 2])
    assert abs(1 - y[0, 0].mean().item() - 0.3) < 0.03
    assert torch.equal(task.physics(y.shape, seed=7).mask[0, 0], y[0, 0])
    assert torch.equal(task.degrade(x, seed=7), y) and not torch.equal(task.degrade(x, seed=8), y)


def test_file_mask(tmp_path):
    known = np.zeros((12, 16), np.uint8)
    known[:, :10] = 200
    known[0, 0] = 100  # below 0.5: unknown
    path = tmp_path / "mask.png"
    Image.fromarray(known).save(path)
    task = Inpaint("file", path=str(path))
    mask = task.make_mask(12, 16)
    assert mask.sum().item() == 12 * 10 - 1 and mask[0, 0] == 0
    y = task.degrade(torch.ones(1, 1, 12, 16))
    assert torch.equal(y[0, 0], mask)
    with pytest.raises(ValueError, match="16x12.*20x12"):
        task.degrade(torch.ones(1, 1, 12, 20))


def dataset_pairs():
    try:
        root = images.datasets_root() / "inpainting"
    except ValueError:
        return []
    pairs = [(m.parent.parent / "images" / m.name, m) for m in sorted((root / "bernoulli" / "masks").glob("*.png"))]
    pairs += [(m.with_name(m.name.replace("_mask", "")), m) for m in sorted((root / "region").glob("*_mask.png"))]
    return pairs


@pytest.mark.skipif(not dataset_pairs(), reason="inpainting dataset absent")
def test_dataset_masks_load_and_match_images():
    pairs = dataset_pairs()
    assert len(pairs) >= 14
    for image_path, mask_path in pairs:
        with Image.open(image_path) as im:
            width, height = im.size
        mask = Inpaint("file", path=str(mask_path)).make_mask(height, width)
        known = mask.mean().item()
        if mask_path.parent.name == "masks":
            assert abs(known - 0.5) < 0.01, mask_path
        else:
            assert 0.5 < known < 1.0, mask_path


def pil_jpeg(image: Image.Image, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def test_jpeg_grey_matches_pil_round_trip():
    x = images.from_numpy(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    pil = Image.fromarray(np.round(images.to_numpy(x) * 255).astype(np.uint8))
    task = JPEGDeblock(quality=20)
    y = task.degrade(x)
    assert y.shape == (1, 1, 24, 32)
    expected = pil_jpeg(pil.convert("YCbCr").getchannel("Y"), 20)
    np.testing.assert_array_equal(np.round(y[0, 0].numpy() * 255), expected)
    ref = task.reference(x)
    np.testing.assert_array_equal(np.round(ref[0, 0].numpy() * 255), np.asarray(pil.convert("YCbCr"))[..., 0])
    assert torch.equal(task.degrade(x, seed=1), y)
    assert task.physics(y.shape).channels == 1
    with pytest.raises(ValueError, match="grey"):
        task.physics((1, 3, 24, 32))


def test_jpeg_colour_and_batch():
    x = torch.cat([rand_image(h=16, w=16), rand_image(h=16, w=16, seed=2)])
    task = JPEGDeblock(quality=50, grey=False)
    y = task.degrade(x)
    assert y.shape == x.shape
    for i in range(2):
        pil = Image.fromarray(np.round(x[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        np.testing.assert_array_equal(np.round(y[i].permute(1, 2, 0).numpy() * 255), pil_jpeg(pil, 50))
    assert task.reference(x) is x
    low, high = JPEGDeblock(quality=5, grey=False).degrade(x), JPEGDeblock(quality=95, grey=False).degrade(x)
    assert (low - x).abs().mean() > (high - x).abs().mean()


def test_gaussian_noise_seeded_with_sigma():
    x = torch.full((1, 3, 64, 64), 0.5)
    task = Denoise(25, clip=False)
    y = task.degrade(x, seed=1)
    assert torch.equal(task.degrade(x, seed=1), y) and not torch.equal(task.degrade(x, seed=2), y)
    noise = (y - x).flatten()
    assert noise.std().item() == pytest.approx(25 / 255, rel=0.03)
    assert abs(noise.mean().item()) < 0.005
    assert torch.equal(Denoise(25).degrade(x, seed=1), y.clamp(0, 1))
    clipped = Denoise(100).degrade(x, seed=1)
    assert clipped.min() == 0 and clipped.max() == 1
    assert torch.equal(Denoise(0).degrade(x), x)


def test_poisson_noise_mean_and_variance():
    x = torch.full((1, 1, 128, 128), 0.4)
    task = PoissonDenoise(0.05, clip=False)
    y = task.degrade(x, seed=3)
    assert torch.equal(task.degrade(x, seed=3), y) and not torch.equal(task.degrade(x, seed=4), y)
    counts = y / 0.05
    torch.testing.assert_close(counts, counts.round())
    assert y.mean().item() == pytest.approx(0.4, rel=0.02)
    assert y.var().item() == pytest.approx(0.05 * 0.4, rel=0.05)  # Var = ζ² · x/ζ = ζ x
    assert PoissonDenoise(0.2).degrade(torch.ones(1, 1, 32, 32)).max() == 1


def test_enhance_unsharp_mask():
    task = Enhance(lipschitz=0.5)
    x = rand_image()
    assert torch.equal(task.degrade(x), x)
    physics = task.physics(x.shape)
    smooth = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    torch.testing.assert_close(physics.restore(smooth, x), (x + (x - smooth)).clamp(0, 1))
    assert task.arch_overrides() == {"lipschitz": 0.5}
    assert Denoise().arch_overrides() == {}


def test_physics_buffers_follow_device():
    physics = Inpaint("bernoulli").physics((1, 1, 8, 8), device="cpu")
    assert "mask" in dict(physics.named_buffers())
    assert {"weight_w", "weight_h"} <= set(dict(SuperResolution(2).physics((1, 3, 8, 8)).named_buffers()))


ALL_TASKS = [
    Denoise(15, clip=False),
    PoissonDenoise(0.2),
    JPEGDeblock(30, grey=False),
    Inpaint("bernoulli", drop=0.4),
    Inpaint("file", path="masks/a.png"),
    SuperResolution(8, "bicubic"),
    Enhance(2.0),
]


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.name)
def test_round_trip_through_plain_dict(task):
    d = task.to_dict()
    assert d["task"] == task.name and all(isinstance(v, (int, float, str, bool)) for v in d.values())
    assert task_from_dict(d) == task and task_from_dict(dict(d)).to_dict() == d


def test_every_task_registered():
    assert set(TASKS) == {"denoise", "poisson", "jpeg", "inpaint", "sr", "enhance"}
    for name, cls in TASKS.items():
        assert cls.name == name and make_task(name) == cls()


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("denoise", {"sigma": -1}, "sigma"),
        ("denoise", {"sigma": "25"}, "sigma"),
        ("denoise", {"clip": "yes"}, "clip"),
        ("poisson", {"scale": 0}, "scale"),
        ("jpeg", {"quality": 0}, "quality"),
        ("jpeg", {"quality": 96}, "quality"),
        ("jpeg", {"quality": 20.5}, "quality"),
        ("inpaint", {"ratio": 1.0}, "ratio"),
        ("inpaint", {"drop": 0}, "drop"),
        ("inpaint", {"mask": "circle"}, "mask"),
        ("inpaint", {"mask": "file"}, "path"),
        ("sr", {"factor": 1}, "factor"),
        ("sr", {"factor": 2.5}, "factor"),
        ("sr", {"kernel": "box"}, "kernel"),
        ("enhance", {"lipschitz": 0}, "lipschitz"),
        ("denoise", {"sigmaa": 3}, "sigmaa"),
        ("deblur", {}, "deblur"),
    ],
)
def test_bad_parameters_name_the_field(name, params, field):
    with pytest.raises(ValueError, match=field):
        make_task(name, **params)


def test_bad_dict_and_image():
    with pytest.raises(ValueError, match="task"):
        task_from_dict({"sigma": 3})
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        Denoise().degrade(torch.zeros(3, 8, 8))


@pytest.mark.parametrize("task", [Denoise(25), PoissonDenoise(0.1), JPEGDeblock(10), Inpaint("center", ratio=0.25),
                                  Inpaint("bernoulli", drop=0.5), SuperResolution(2), Enhance(1.0)],
                         ids=lambda t: t.name + ("-" + t.mask if isinstance(t, Inpaint) else ""))
def test_observe_keeps_the_physics_that_made_y(task):
    x = rand_image(c=3, h=24, w=32, seed=2)
    obs = task.observe(x, seed=5)
    assert torch.equal(obs.y, task.degrade(x, seed=5))
    assert torch.equal(obs.reference, task.reference(x))
    assert obs.physics.y_shape == tuple(obs.y.shape)
    assert tuple(obs.physics.output_shape) == tuple(obs.reference.shape[-2:])
    if isinstance(task, (Inpaint, SuperResolution)):  # y = A x exactly: the fit's operator is the one that degraded x
        assert torch.allclose(obs.physics(obs.reference), obs.y, atol=1e-6)


def test_observed_refuses_a_mask_drawn_from_a_seed():
    y = rand_image(c=1)
    assert Inpaint("center").observed(y).reference is None
    with pytest.raises(ValueError, match="inpaint: the physics .* is drawn from a seed.*mask='file'"):
        Inpaint("bernoulli").observed(y)
