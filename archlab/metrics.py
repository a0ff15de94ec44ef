"""Image quality metrics in torch, batched and on the device.

PSNR = 10 log10(data_range² / MSE); SSIM follows Wang et al. 2004 with the
Gaussian window (σ = 1.5, 11×11) and K1 = 0.01, K2 = 0.03, matching
``skimage.metrics.structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(R² / mean((x - y)²))``, shape ``(N,)``."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-20))


def _gaussian_window(channels: int, size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (mean over channels and valid pixels), shape ``(N,)``.

    Wang, Bovik, Sheikh, Simoncelli (2004), eq. 13, with the Gaussian-weighted
    statistics of scikit-image (the border of half a window is cropped from the map).
    """
    x, y = x.float(), y.float()
    channels = x.shape[1]
    window = _gaussian_window(channels, win_size, sigma, x.device, x.dtype)

    def blur(t):
        return F.conv2d(t, window, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return smap.flatten(1).mean(dim=1)
