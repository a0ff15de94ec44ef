"""PSNR and SSIM against scikit-image."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from archlab import metrics


def _pair(channels, seed=0, shape=(37, 45)):
    rng = np.random.default_rng(seed)
    x = rng.random((*shape, channels))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    return x, y


def _tensor(a):
    return torch.from_numpy(a).permute(2, 0, 1)[None]


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_skimage_gaussian_weights(channels):
    x, y = _pair(channels)
    expected = structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=1.0, channel_axis=-1)
    assert metrics.ssim(_tensor(x).float(), _tensor(y).float()).item() == pytest.approx(expected, abs=2e-6)


def test_psnr_matches_skimage_and_both_are_batched():
    pairs = [_pair(3, seed) for seed in range(3)]
    xs = torch.cat([_tensor(x) for x, _ in pairs]).float()
    ys = torch.cat([_tensor(y) for _, y in pairs]).float()
    expected = [peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in pairs]
    np.testing.assert_allclose(metrics.psnr(xs, ys).numpy(), expected, atol=1e-4)
    batched = metrics.ssim(xs, ys)
    single = torch.cat([metrics.ssim(xs[i:i + 1], ys[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single)
    assert metrics.ssim(xs, xs).allclose(torch.ones(3))
