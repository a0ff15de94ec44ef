import math

import numpy as np
import pytest
import torch
from skimage import data, filters
from skimage.measure import blur_effect as skimage_blur_effect

from archlab.images import from_numpy
from archlab.stopping import (
    DEFAULT_EPS,
    DEFAULT_H_SIZE,
    DEFAULT_WINDOW,
    DivergenceGuard,
    RatioRule,
    blur_effect,
    blur_sharpness_ratio,
    mlv_map,
    mlv_sharpness,
    ratio_rule_delta,
)

RNG = np.random.default_rng(7)
IMAGES = {
    "astronaut-grey": (data.astronaut() @ [0.299, 0.587, 0.114]).astype(np.uint8),
    "camera": data.camera(),
    "random": RNG.random((61, 47)),
    "astronaut-rgb": data.astronaut(),
    "random-rgb": RNG.random((40, 53, 3)),
}


def skimage_reference(x: torch.Tensor, h_size: int) -> float:
    array = x[0].permute(1, 2, 0).double().numpy()
    if array.shape[2] == 1:
        return skimage_blur_effect(array[..., 0], h_size=h_size)
    return skimage_blur_effect(array, h_size=h_size, channel_axis=-1)


def numpy_mlv_sharpness(grey: np.ndarray, top: int, decay: float) -> float:
    """The definition written out: per-pixel max |neighbour - centre|, sort, weight, RMS."""
    h, w = grey.shape
    values = []
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            patch = grey[i - 1 : i + 2, j - 1 : j + 2]
            values.append(np.abs(patch - grey[i, j]).max())
    values = np.sort(np.array(values))[::-1][:top]
    weights = np.exp(-decay * np.arange(1, len(values) + 1))
    return float(np.sqrt(np.mean((values * weights) ** 2)))


def numpy_ratio_rule_delta(r: np.ndarray, k: int) -> np.ndarray:
    out = []
    for t in range(2 * k - 1, len(r)):
        recent = r[t - k + 1 : t + 1].mean(axis=0)
        older = r[t - 2 * k + 1 : t - k + 1].mean(axis=0)
        out.append(np.abs(recent - older))
    return np.array(out).reshape(-1, *r.shape[1:])


@pytest.mark.parametrize("h_size", [9, 11])
@pytest.mark.parametrize("name", list(IMAGES))
def test_blur_effect_matches_skimage(name, h_size):
    x = from_numpy(IMAGES[name])
    assert blur_effect(x, h_size).item() == pytest.approx(skimage_reference(x, h_size), abs=1e-6)


@pytest.mark.parametrize("h_size", [2, 10, 15])
def test_blur_effect_even_sizes_and_boxes_longer_than_the_image(h_size):
    # 6x7 with a 15-box: SciPy's reflect border wraps around the image more than once.
    x = torch.rand(1, 1, 6, 7, generator=torch.Generator().manual_seed(1))
    assert blur_effect(x, h_size).item() == pytest.approx(skimage_reference(x, h_size), abs=1e-6)


def test_published_astronaut_value():
    # REFERENCE §4: scikit-image's blur of grey astronaut at filter size 9 is 0.451.
    assert blur_effect(from_numpy(IMAGES["astronaut-grey"]), 9).item() == pytest.approx(0.451, abs=5e-4)


def test_constant_image_is_fully_blurred_and_has_no_sharpness():
    x = torch.full((2, 1, 16, 16), 0.3)
    assert torch.equal(blur_effect(x), torch.ones(2))
    assert torch.equal(mlv_sharpness(x), torch.zeros(2))
    assert torch.isinf(blur_sharpness_ratio(x)).all()


@pytest.mark.parametrize("top, decay", [(1000, 0.01), (50, 0.05), (10**6, 0.0)])
def test_mlv_sharpness_matches_numpy(top, decay):
    grey = RNG.random((23, 31))
    expected = numpy_mlv_sharpness(grey, top, decay)
    got = mlv_sharpness(torch.from_numpy(grey)[None, None], top, decay).item()
    assert got == pytest.approx(expected, rel=1e-12)


def test_mlv_uses_luma_for_rgb():
    rgb = RNG.random((12, 14, 3))
    expected = numpy_mlv_sharpness(rgb @ [0.299, 0.587, 0.114], 1000, 0.01)
    assert mlv_sharpness(torch.from_numpy(rgb).permute(2, 0, 1)[None]).item() == pytest.approx(expected, rel=1e-12)


def test_mlv_of_a_step_edge_has_the_closed_form():
    # A vertical step of height a: the two columns beside it have MLV a, all others 0.
    h, w, a, eta = 12, 10, 0.6, 0.01
    x = torch.zeros(1, 1, h, w, dtype=torch.float64)
    x[..., w // 2 :] = a
    mlv = mlv_map(x)[0]
    assert torch.equal(mlv[:, w // 2 - 2 : w // 2], torch.full((h - 2, 2), a, dtype=torch.float64))
    assert mlv.count_nonzero() == 2 * (h - 2)
    m, k = 2 * (h - 2), (h - 2) * (w - 2)
    q = math.exp(-2 * eta)
    expected = a * math.sqrt(q * (1 - q**m) / (1 - q) / k)
    assert mlv_sharpness(x, top=1000, decay=eta).item() == pytest.approx(expected, rel=1e-12)


def test_blurrier_image_is_blurrier_and_less_sharp():
    sharp = IMAGES["camera"][100:228, 200:328] / 255.0
    blurred = filters.gaussian(sharp, sigma=2.0)
    batch = torch.cat([from_numpy(sharp), from_numpy(blurred)])
    b, s, r = blur_effect(batch), mlv_sharpness(batch), blur_sharpness_ratio(batch)
    assert b[1] > b[0] + 0.1
    assert s[1] < 0.5 * s[0]
    assert r[1] > 2 * r[0]


def test_batched_equals_unbatched():
    images = [from_numpy(IMAGES["astronaut-rgb"][i : i + 64, i : i + 80]) for i in (0, 100, 300)]
    batch = torch.cat(images)
    for fn in (blur_effect, mlv_sharpness, blur_sharpness_ratio):
        together = fn(batch)
        assert together.shape == (3,)
        assert torch.allclose(together, torch.cat([fn(im) for im in images]), rtol=1e-6, atol=0)
    assert len(set(blur_effect(batch).tolist())) == 3


@pytest.mark.parametrize("fn", [blur_effect, mlv_sharpness, blur_sharpness_ratio])
@pytest.mark.parametrize("shape", [(8, 8), (1, 2, 8, 8), (1, 1, 2, 8)])
def test_bad_images_are_rejected(fn, shape):
    with pytest.raises(ValueError, match="x must"):
        fn(torch.rand(shape))


def test_minimum_sizes():
    # The MLV map needs one interior pixel (3x3); the blur's border crop [2:H-1] needs 4 rows.
    assert mlv_sharpness(torch.rand(1, 1, 3, 3)).shape == (1,)
    with pytest.raises(ValueError, match="at least 4x4"):
        blur_effect(torch.rand(1, 1, 3, 8))


def test_bad_parameters_are_rejected():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="h_size"):
        blur_effect(x, 0)
    with pytest.raises(ValueError, match="top"):
        mlv_sharpness(x, top=0)
    with pytest.raises(ValueError, match="decay"):
        mlv_sharpness(x, decay=-1.0)
    with pytest.raises(ValueError, match="window"):
        RatioRule(window=100, eval_every=30)
    with pytest.raises(ValueError, match="eps"):
        RatioRule(eps=0)
    with pytest.raises(ValueError, match="unknown fields"):
        RatioRule.from_dict({"window": 10, "n": 3})


def test_ratio_rule_delta_matches_numpy_loop():
    r = RNG.random((57, 3))
    expected = numpy_ratio_rule_delta(r, 5)
    got = ratio_rule_delta(torch.from_numpy(r), 5)
    assert got.shape == (57 - 10 + 1, 3)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-15)
    assert ratio_rule_delta(torch.from_numpy(r[:9]), 5).shape == (0, 3)


def run_rule(rule, sequence, eval_every):
    flags = []
    for j, r in enumerate(sequence):
        flags.append(rule.update(j * eval_every, torch.as_tensor(r)))
    return torch.stack(flags)


def test_rule_fires_on_a_flat_sequence_and_not_on_a_rising_one():
    eval_every, k = 10, DEFAULT_WINDOW // 10
    t = np.arange(60) * eval_every
    flat = 0.8 + 1e-4 * np.sin(t)
    rising = 0.5 + 1e-3 * t  # window means differ by 1e-3 * n = 0.1 > eps
    rule = RatioRule(DEFAULT_WINDOW, DEFAULT_EPS, eval_every)
    flags = run_rule(rule, np.stack([flat, rising], axis=1), eval_every)
    assert not flags[: 2 * k - 1].any()
    assert flags[2 * k - 1 :, 0].all()
    assert not flags[:, 1].any()
    assert rule.stop_iteration.tolist() == [(2 * k - 1) * eval_every, -1]
    assert rule.delta[1].item() == pytest.approx(0.1, rel=1e-9)


def test_rule_stops_where_the_numpy_loop_says_and_latches():
    eval_every, window, eps = 5, 50, 0.004
    k = window // eval_every
    t = np.arange(400) * eval_every
    noise = 0.002 * RNG.standard_normal((400, 4))
    r = 0.6 + np.exp(-t[:, None] / np.array([100.0, 300.0, 600.0, 1e9])) + noise
    rule = RatioRule(window, eps, eval_every)
    flags = run_rule(rule, r, eval_every)
    delta = numpy_ratio_rule_delta(r, k)
    for run in range(4):
        below = np.flatnonzero(delta[:, run] < eps)
        first = below[0] + 2 * k - 1 if len(below) else None
        expected = -1 if first is None else first * eval_every
        assert rule.stop_iteration[run].item() == expected
        if first is not None:
            assert flags[first:, run].all() and not flags[:first, run].any()
    assert 0 < rule.stop_iteration[0] < rule.stop_iteration[1] < rule.stop_iteration[2]
    assert rule.stop_iteration[3] == (2 * k - 1) * eval_every  # flat from the start


def test_rule_state_round_trip_and_reset():
    rule = RatioRule(window=40, eps=0.02, eval_every=20)
    assert RatioRule.from_dict(rule.to_dict()).to_dict() == rule.to_dict() == {
        "window": 40, "eps": 0.02, "eval_every": 20,
    }
    rule.update(0, torch.ones(2))
    with pytest.raises(ValueError, match="iteration must be 20"):
        rule.update(30, torch.ones(2))
    with pytest.raises(ValueError, match="N=2"):
        rule.update(20, torch.ones(3))
    rule.reset()
    assert rule.stopped is None
    assert not rule.update(100, torch.ones(3)).any()


def test_divergence_guard_follows_the_papers_5db_backtracking():
    guard = DivergenceGuard()
    assert guard.check(1.0) == "ok"
    assert guard.check(0.5) == "ok"
    assert guard.check(0.5 * 3.1) == "ok"  # a 4.9 dB rise is accepted
    # 5 dB above the last accepted loss (1.55) is a factor 10**0.5: the PSNR drop of the paper.
    assert guard.check(1.55 * 3.17) == "restore"
    assert guard.check(float("nan")) == "restore"
    assert guard.check(1.6) == "ok"
    assert guard.restores == 0


def test_divergence_guard_gives_up_after_max_restores():
    guard = DivergenceGuard(jump_db=5.0, max_restores=2)
    assert guard.check(0.01) == "ok"
    assert [guard.check(float("inf")) for _ in range(4)] == ["restore", "restore", "diverged", "diverged"]
    guard.reset()
    assert guard.check(float("inf")) == "restore"
    assert DivergenceGuard.from_dict(guard.to_dict()).to_dict() == {"jump_db": 5.0, "max_restores": 2}
    with pytest.raises(ValueError, match="max_restores"):
        DivergenceGuard(max_restores=-1)


def test_defaults_are_the_papers():
    assert (DEFAULT_WINDOW, DEFAULT_EPS, DEFAULT_H_SIZE) == (100, 0.01, 9)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_synchronisation_on_cuda():
    x = torch.rand(3, 3, 64, 64, device="cuda")
    rule = RatioRule(window=20, eval_every=10)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(5):
            flags = rule.update(10 * step, blur_sharpness_ratio(x))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert flags.device.type == "cuda" and flags.all()


def test_mlv_sharpness_of_a_large_image_matches_numpy():
    grey = RNG.random((130, 140))
    expected = numpy_mlv_sharpness(grey, 1000, 0.01)
    assert mlv_sharpness(torch.from_numpy(grey)[None, None]).item() == pytest.approx(expected, rel=1e-12)


def test_largest_equals_topk_with_ties_and_a_batch():
    from archlab.stopping import _largest

    generator = torch.Generator().manual_seed(3)
    values = torch.randint(0, 50, (3, 200_003), generator=generator).float()  # heavy ties, a ragged last chunk
    values[1, :1500] = 49.0  # more than k copies of the maximum
    values[2] = torch.rand(200_003, generator=generator)
    assert torch.equal(_largest(values, 1000), values.topk(1000, dim=1).values)


def test_mlv_sharpness_takes_the_chunked_path_exactly():
    grey = RNG.random((400, 410))  # 159,192 interior values: above the chunked ranking's threshold
    expected = numpy_mlv_sharpness(grey, 1000, 0.01)
    assert mlv_sharpness(torch.from_numpy(grey)[None, None]).item() == pytest.approx(expected, rel=1e-12)


def test_blur_of_an_image_without_gradient_along_one_axis_matches_skimage():
    stripes = torch.rand(1, 1, 1, 24, generator=torch.Generator().manual_seed(2)).expand(1, 1, 20, 24).contiguous()
    assert blur_effect(stripes, 9).item() == pytest.approx(skimage_reference(stripes, 9), abs=1e-6)
    assert blur_effect(stripes.transpose(-1, -2), 9).item() == pytest.approx(1.0)
