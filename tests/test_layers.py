"""Upsampler (polyphase zero insertion + LPF) and Lipschitz layers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from archlab import filters
from archlab.layers import LipschitzConv2d, MeanOnlyBatchNorm, Upsampler, spectral_norm
from benchmarks.speed import upsample_naive

CATALOGUE = sorted(filters.catalog())


@pytest.mark.parametrize("name", CATALOGUE)
def test_measured_response_equals_filter_response(name):
    flt = filters.get(name)
    up = Upsampler(1, flt, padding="circular").double()
    n = 64
    impulse = torch.zeros(1, 1, 1, n, dtype=torch.float64)
    impulse[..., n // 2] = 1.0
    # Upsample along one axis only: columns of a 1-row image, circular borders make the FFT exact.
    y = up._upsample_axis(impulse, 3)[0, 0, 0].numpy()
    measured = np.abs(np.fft.rfft(y))
    f = np.fft.rfftfreq(len(y))
    _, h = flt.response(n=len(f))
    expected = np.abs(np.polyval(flt.taps[::-1], np.exp(-2j * np.pi * f)))
    assert np.allclose(measured, expected, atol=1e-5)
    assert np.allclose(np.abs(h), expected, atol=1e-9)


@pytest.mark.parametrize("mode,factor", [("nearest", 2), ("bilinear", 2), ("nearest", 3), ("bilinear", 3)])
def test_nearest_and_bilinear_match_interpolate(mode, factor):
    kind = "nearest" if mode == "nearest" else "linear"
    up = Upsampler(3, filters.design(kind, factor=factor), factor=factor, padding="replicate").double()
    x = torch.rand(2, 3, 11, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(x, scale_factor=factor, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
    assert up(x).shape == (2, 3, 11 * factor, 9 * factor)
    assert torch.allclose(up(x), ref, atol=1e-6)
    # The default reflect border differs from interpolate's clamp only within the filter's reach.
    inner = slice(2 * factor, -2 * factor)
    assert torch.allclose(Upsampler(3, "bilinear" if (mode, factor) == ("bilinear", 2) else
                                    filters.design(kind, factor=factor), factor=factor).double()(x)[..., inner, inner],
                          ref[..., inner, inner], atol=1e-6)


def test_bilinear_taps_convention():
    assert np.allclose(filters.get("bilinear").taps, [0.25, 0.75, 0.75, 0.25])
    assert np.allclose(filters.get("nearest").taps, [1, 1])


@pytest.mark.parametrize("name", CATALOGUE)
def test_constant_stays_constant(name):
    flt = filters.get(name)
    y = Upsampler(2, flt).double()(torch.full((1, 2, 8, 8), 0.5, dtype=torch.float64))
    if name in ("nearest", "bilinear"):
        assert torch.equal(y, torch.full_like(y, 0.5))
        return
    # Phase p sums to (1/s) Σ_k H(k/s) e^{2πik(p+c)/s}: 1 up to g = |H(1/2)|/2 per axis (s = 2).
    g = abs(np.polyval(flt.taps[::-1], -1.0)) / flt.factor
    assert (y - 0.5).abs().max().item() <= 0.5 * ((1 + g) ** 2 - 1) + 1e-6  # taps are float32 buffers


def test_polyphase_equals_naive_zero_insertion():
    x = torch.rand(1, 4, 10, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for name in ("L-60", "gauss-0.5", "bicubic", "lanczos3"):
        flt = filters.get(name)
        assert torch.allclose(Upsampler(4, flt).double()(x), upsample_naive(x, flt.taps, 2), atol=1e-6)
    flt = filters.design("lanczos", factor=3, a=3)
    assert torch.allclose(Upsampler(4, flt, factor=3).double()(x), upsample_naive(x, flt.taps, 3), atol=1e-6)


def test_gradcheck_and_dtypes():
    up = Upsampler(2, "L15").double()
    x = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(up, (x,))
    for dtype in (torch.float32, torch.bfloat16):
        y = Upsampler(2, "L15")(x.detach().to(dtype))
        assert y.dtype == dtype and y.shape == (1, 2, 10, 12)


def test_transposed_and_bad_input():
    up = Upsampler(3, "transposed", factor=3)
    assert up(torch.rand(1, 3, 4, 5)).shape == (1, 3, 12, 15)
    assert sum(p.numel() for p in up.parameters()) > 0
    with pytest.raises(ValueError, match="factor"):
        Upsampler(3, "bilinear", factor=3)
    with pytest.raises(ValueError, match="padding"):
        Upsampler(3, "bilinear", padding="mirror")


def test_spectral_norm_matches_svd():
    w = torch.randn(20, 45, generator=torch.Generator().manual_seed(0))
    assert spectral_norm(w).item() == pytest.approx(torch.linalg.svdvals(w)[0].item(), rel=1e-5)
    assert spectral_norm(w.T).item() == pytest.approx(torch.linalg.svdvals(w)[0].item(), rel=1e-5)


def _train(conv, lr, steps=60):
    opt = torch.optim.Adam(conv.parameters(), lr=lr)
    x = torch.randn(2, conv.in_channels, 12, 12, generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        opt.zero_grad()
        (-(conv(x) ** 2).mean()).backward()
        opt.step()


def test_svd_bound_holds_after_large_steps():
    torch.manual_seed(0)
    conv = LipschitzConv2d(8, 16, 3, lipschitz=1.5, method="svd")
    _train(conv, lr=0.5)
    w = conv.effective_weight().detach()
    assert torch.linalg.svdvals(w.reshape(16, -1))[0].item() <= 1.5 * (1 + 1e-4)
    assert conv.weight.reshape(16, -1).norm(2).item() > 1.5  # the raw weight did grow past the bound


@pytest.mark.parametrize("lr, steps", [(0.01, 100), (0.5, 60)])
def test_power_converges_to_the_exact_norm_and_holds_the_bound_in_training(lr, steps):
    torch.manual_seed(0)
    conv = LipschitzConv2d(8, 16, 3, lipschitz=1.5, method="power")
    exact = torch.linalg.svdvals(conv.weight.detach().reshape(16, -1))[0].item()
    assert conv.norm().item() == pytest.approx(exact, rel=1e-4)
    _train(conv, lr=lr, steps=steps)
    w = conv.effective_weight().detach()
    # Training clusters the top singular values at the bound, where a plain power iteration
    # lags by percents; the squared Gram matrix keeps the bound within 1e-4.
    assert torch.linalg.svdvals(w.reshape(16, -1))[0].item() <= 1.5 * (1 + 1e-4)
    assert conv.weight.reshape(16, -1).norm(2).item() > 1.5


def _conv_operator_norm_by_power(weight, size, iterations=300):
    x = torch.randn(1, weight.shape[1], size, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    k = weight.shape[-1] // 2
    for _ in range(iterations):
        y = F.conv2d(F.pad(x, [k] * 4, mode="circular"), weight)
        x = F.conv_transpose2d(F.pad(y, [k] * 4, mode="circular"), weight)[..., 2 * k:-2 * k, 2 * k:-2 * k]
        x = x / x.norm()
    y = F.conv2d(F.pad(x, [k] * 4, mode="circular"), weight)
    return y.norm().item()


def test_operator_norm_matches_power_iteration_on_the_convolution():
    torch.manual_seed(0)
    conv = LipschitzConv2d(4, 6, 3, lipschitz=1.0, method="operator", grid=8, power_iterations=50)
    w = conv.weight.detach().double()
    assert conv.norm().item() == pytest.approx(_conv_operator_norm_by_power(w, 8), rel=1e-3)
    # The operator norm is never above the reshaped-matrix bound times the kernel size.
    assert conv.norm().item() <= spectral_norm(w.reshape(6, -1)).item() * 3 + 1e-6


def test_operator_bound_holds_after_steps():
    torch.manual_seed(0)
    conv = LipschitzConv2d(4, 6, 3, lipschitz=1.0, method="operator", grid=12, power_iterations=3)
    _train(conv, lr=0.05)
    w = conv.effective_weight().detach().double()
    assert _conv_operator_norm_by_power(w, 12) <= 1.0 * (1 + 1e-4)


def test_mean_only_batch_norm():
    bn = MeanOnlyBatchNorm(3)
    with torch.no_grad():
        bn.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x = torch.randn(2, 3, 5, 5) * 4 + 7
    y = bn(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.tensor([1.0, 2.0, 3.0]), atol=1e-5)
    centred = x - x.mean(dim=(0, 2, 3), keepdim=True)
    assert torch.allclose(y - bn.bias.view(1, 3, 1, 1), centred, atol=1e-5)  # no division by the std


def test_lipschitz_bad_values():
    with pytest.raises(ValueError, match="lipschitz"):
        LipschitzConv2d(2, 2, 3, lipschitz=0)
    with pytest.raises(ValueError, match="lipschitz_method"):
        LipschitzConv2d(2, 2, 3, lipschitz=1, method="qr")


def test_detached_norm_gradient_is_the_scaled_effective_gradient_and_the_free_one_is_tangential():
    # Above the bound the forward pass uses W = λ w / ‖w‖. A differentiable ‖w‖ makes the loss
    # scale-invariant in w, so its gradient is orthogonal to w; paper 000's code (SVD of w.data)
    # treats ‖w‖ as a constant, so the gradient is ∂L/∂W · λ / ‖w‖ exactly.
    x = torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(0))
    grads, effective = {}, {}
    for detach in (False, True):
        torch.manual_seed(1)
        conv = LipschitzConv2d(4, 6, 3, lipschitz=0.5, detach_norm=detach)
        weight = conv.effective_weight()
        weight.retain_grad()
        F.conv2d(F.pad(x, [1] * 4, mode="reflect"), weight, conv.bias).square().sum().backward()
        grads[detach], effective[detach] = conv.weight.grad, weight.grad
        norm = spectral_norm(conv.weight.detach().reshape(6, -1))
    assert norm > 0.5
    w = conv.weight.detach()
    assert abs((grads[False] * w).sum()) <= 1e-5 * grads[False].norm() * w.norm()
    torch.testing.assert_close(grads[True], effective[True] * 0.5 / norm)
    torch.testing.assert_close(effective[True], effective[False])
