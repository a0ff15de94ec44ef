"""The building blocks of controlled DIP networks.

* :class:`Upsampler` - zero insertion followed by a fixed separable low-pass
  filter (REFERENCE §1, paper 004 §3.1), computed in polyphase form.
* :class:`LipschitzConv2d` - a convolution whose weight is rescaled as
  ``w / max(1, ‖w‖ / λ)`` (paper 000 §4.1).
* :class:`MeanOnlyBatchNorm` - subtract the per-channel mean, add a learnt bias
  (paper 000 eq. 5).
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from archlab import filters
from archlab.vocabulary import CONV_PADDINGS, INITS, LIPSCHITZ_METHODS, PADDINGS


def filter_offset(length: int, factor: int) -> int:
    """Index of the filter tap that lands on the first nail's output sample.

    Output sample ``n`` of the upsampler is ``y[n] = Σ_k h[k] u[n + c - k]`` with
    ``u[s i] = x[i]`` the bed of nails. ``c = (L - s) / 2`` when ``L - s`` is even: the
    filter is centred ``(s - 1) / 2`` samples after the nail, PyTorch's
    ``align_corners=False`` convention (nearest ×2 = [1, 1], bilinear ×2 =
    [0.25, 0.75, 0.75, 0.25]). Otherwise (odd taps, even factor: Gaussian, designed
    filters) the centre tap sits on the nail, ``c = (L - 1) // 2``.
    """
    return (length - factor) // 2 if (length - factor) % 2 == 0 else (length - 1) // 2


def polyphase_kernels(taps: np.ndarray, factor: int) -> tuple[np.ndarray, int, int]:
    """Split ``taps`` into ``factor`` phase kernels for a correlation on the input grid.

    Returns ``(kernels, pad_before, pad_after)``: ``kernels[p, t]`` multiplies
    ``x[m + t - pad_before]`` in output sample ``s m + p`` (derived from
    ``y[s m + p] = Σ_j h[p + c + s j] x[m - j]``).
    """
    taps = np.asarray(taps, dtype=np.float64)
    length, c = len(taps), filter_offset(len(taps), factor)
    js = [j for p in range(factor) for j in range(-length, length + 1) if 0 <= p + c + factor * j < length]
    jmin, jmax = min(js), max(js)
    kernels = np.zeros((factor, jmax - jmin + 1))
    for p in range(factor):
        for j in range(jmin, jmax + 1):
            k = p + c + factor * j
            if 0 <= k < length:
                kernels[p, jmax - j] = taps[k]
    return kernels, jmax, -jmin


@lru_cache(maxsize=256)
def _reflect_index(n: int, before: int, after: int, mode: str) -> torch.Tensor:
    idx = np.arange(-before, n + after)
    if mode == "reflect":
        period = 2 * (n - 1) if n > 1 else 1
        idx = np.abs(idx) % period
        idx = np.where(idx >= n, period - idx, idx)
    elif mode == "replicate":
        idx = np.clip(idx, 0, n - 1)
    else:
        idx = idx % n
    return torch.from_numpy(idx)


def pad_axis(x: torch.Tensor, dim: int, before: int, after: int, mode: str) -> torch.Tensor:
    """Pad one spatial axis; reflection repeats for inputs shorter than the pad."""
    if before == 0 and after == 0:
        return x
    if mode == "zeros":
        pads = [0, 0, 0, 0]
        pads[(3 - dim) * 2 : (3 - dim) * 2 + 2] = [before, after]
        return F.pad(x, pads)
    index = _reflect_index(x.shape[dim], before, after, mode).to(x.device)
    return x.index_select(dim, index)


class Upsampler(nn.Module):
    """Upsampling by zero insertion and a separable low-pass filter, in polyphase form.

    The 1-D filter ``h`` (taps summing to the factor ``s``) is applied along rows then
    columns of the bed of nails ``u[s i] = x[i]`` (REFERENCE §1). Instead of
    multiplying the inserted zeros, each of the ``s`` output phases is a short
    correlation of the *input* with the phase kernel ``h[p + c + s j]`` (see
    :func:`polyphase_kernels`), and the phases are interleaved; the result equals
    zero insertion followed by the full filter. The alignment follows PyTorch's
    ``align_corners=False`` (:func:`filter_offset`); borders are padded on the input
    grid with ``padding`` (reflect by default; ``replicate`` reproduces
    ``F.interpolate`` exactly for nearest and bilinear).

    Parameters
    ----------
    channels : int
        Number of channels (the filter is depthwise; the taps are non-trainable buffers).
    filter : str, Filter or "transposed"
        A catalogue name, a TOML path, an :class:`archlab.filters.Filter`, or
        ``"transposed"`` for a learnable ``ConvTranspose2d`` (the papers' baseline).
    factor : int
        Integer upsampling factor ≥ 2; the output is exactly ``(s H, s W)``.
    gain : float
        Extra scalar gain of the 2-D operator (1 keeps a constant image constant).
    """

    def __init__(self, channels: int, filter="bilinear", factor: int = 2, padding: str = "reflect", gain: float = 1.0):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding: {padding!r} is not one of {', '.join(PADDINGS)}")
        if int(factor) != factor or factor < 2:
            raise ValueError(f"factor: {factor!r} must be an integer ≥ 2")
        self.channels, self.factor, self.padding = channels, int(factor), padding
        if isinstance(filter, str) and filter == "transposed":
            self.name = "transposed"
            odd = self.factor % 2
            self.transposed = nn.ConvTranspose2d(channels, channels, 2 * self.factor - odd, stride=self.factor,
                                                 padding=(self.factor - odd) // 2, bias=False)
            return
        flt = filters.get(filter) if isinstance(filter, (str, os.PathLike)) else filter
        if flt.factor != self.factor:
            raise ValueError(f"filter: {flt.name!r} is designed for factor {flt.factor}, not {self.factor}; "
                             f"design one with archlab.filters.design(kind, factor={self.factor})")
        self.name = flt.name
        self.transposed = None
        kernels, self.pad_before, self.pad_after = polyphase_kernels(flt.taps, self.factor)
        kernels = torch.from_numpy(kernels * np.sqrt(gain)).float()
        # (s, channels, 1, K): phase p's depthwise kernel, the same for every channel.
        self.register_buffer("weight", kernels[:, None, None, :].repeat(1, channels, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return f"{self.channels}, filter={self.name!r}, factor={self.factor}, padding={self.padding!r}"

    def _upsample_axis(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Upsample along ``dim`` (2 = rows, 3 = columns): one depthwise correlation per
        phase on the input grid, interleaved. Works in channels-last memory, where the
        depthwise convolutions vectorise over channels and the interleave is one stack."""
        n, c, h, w = x.shape
        if self.padding == "reflect" and x.shape[dim] > max(self.pad_before, self.pad_after):
            pads = [self.pad_before, self.pad_after, 0, 0] if dim == 3 else [0, 0, self.pad_before, self.pad_after]
            x = F.pad(x, pads, mode="reflect")
        else:
            x = pad_axis(x, dim, self.pad_before, self.pad_after, self.padding)
        x = x.contiguous(memory_format=torch.channels_last)
        weight = self.weight.to(x.dtype)
        weight = weight.unsqueeze(-1 if dim == 2 else -2).squeeze(2 if dim == 2 else 3)
        phases = [F.conv2d(x, weight[p].unsqueeze(1), groups=c).permute(0, 2, 3, 1) for p in range(self.factor)]
        if dim == 3:
            y = torch.stack(phases, dim=3).reshape(n, h, w * self.factor, c)
        else:
            y = torch.stack(phases, dim=2).reshape(n, h * self.factor, w, c)
        return y.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed is not None:
            return self.transposed(x)
        return self._upsample_axis(self._upsample_axis(x, 3), 2)


def spectral_norm(matrix: torch.Tensor) -> torch.Tensor:
    """Exact largest singular value, ``sqrt(λ_max(W Wᵀ))`` on the smaller Gram matrix.

    Equal to ``torch.linalg.matrix_norm(W, ord=2)`` (an SVD) and differentiable, but the
    symmetric eigensolver on the ``min(m, n)``-square Gram matrix is 5-25× faster on CPU. Non-finite
    entries (weights of a diverged fit) are zeroed first, without a host sync, so the solver does not fail:
    the weights' own non-finite values make the output non-finite, which the fit's divergence guard catches.
    """
    gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix
    gram = torch.nan_to_num(gram, nan=0.0, posinf=0.0, neginf=0.0)
    return torch.linalg.eigvalsh(gram)[-1].clamp_min(0).sqrt()


class LipschitzConv2d(nn.Conv2d):
    """A convolution with a Lipschitz bound: the forward pass uses ``w / max(1, ‖w‖ / λ)``.

    Paper 000 §4.1. ``method`` picks the norm ``‖w‖``:

    * ``"svd"`` - exact largest singular value of ``w`` reshaped to ``(out, in·k·k)``,
      every step (the paper's choice; its code found power iteration unstable), computed
      by :func:`spectral_norm`;
    * ``"power"`` - the same norm by a persistent power iteration on the Gram matrix raised
      to the power 256 by eight squarings (``power_iterations`` per forward, each worth 256
      iterations on the Gram matrix; matrix products only, no eigensolver);
    * ``"operator"`` - the operator norm of the convolution itself on a periodic
      ``grid × grid`` map: the largest singular value over frequencies of the
      kernel's 2-D DFT (Sedghi, Gupta, Long 2019), estimated by a persistent batched
      power iteration per frequency. It is ≤ the ``"svd"`` norm times ``k`` and
      usually much tighter than the reshaped-matrix norm.

    With ``detach_norm`` the norm is a constant in the backward pass, as in paper 000's code
    (``torch.svd`` of ``w.data``): the gradient reaches ``w`` only through the numerator, so its
    radial part grows ``‖w‖`` while the forward pass stays at λ, and each Adam step moves the
    effective weight less and less - a decaying effective learning rate that the differentiable
    norm (the default) does not have.

    With ``lipschitz=None`` it is a plain convolution. ``init`` sets the initial weights
    (the bias keeps PyTorch's default, U(±1/√fan_in), in every case):

    * ``"kaiming-leaky"`` - He-uniform for LeakyReLU(0.01), archlab's own choice;
    * ``"kaiming"`` - He-uniform with a = 0, fan-in (paper 000's code);
    * ``"torch"`` - PyTorch's default, He-uniform with a = √5 (Ulyanov et al.'s and paper 004's code).

    Padding is explicit (``pad`` = one of :data:`CONV_PADDINGS`) as in the DIP codes.
    """

    METHODS = LIPSCHITZ_METHODS
    INITS = INITS
    POWER_SQUARINGS = 8

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, lipschitz: float | None = None,
                 method: str = "svd", pad: str = "reflect", bias: bool = True, stride: int = 1,
                 power_iterations: int = 10, grid: int = 16, detach_norm: bool = False, init: str = "kaiming-leaky"):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias)
        if lipschitz is not None and not lipschitz > 0:
            raise ValueError(f"lipschitz: {lipschitz!r} must be > 0 (or None for no bound)")
        if method not in self.METHODS:
            raise ValueError(f"lipschitz_method: {method!r} is not one of {', '.join(self.METHODS)}")
        if pad not in CONV_PADDINGS:
            raise ValueError(f"pad: {pad!r} is not one of {', '.join(CONV_PADDINGS)}")
        if init not in self.INITS:
            raise ValueError(f"init: {init!r} is not one of {', '.join(self.INITS)}")
        if init == "kaiming-leaky":
            nn.init.kaiming_uniform_(self.weight, a=0.01, nonlinearity="leaky_relu")
        elif init == "kaiming":
            nn.init.kaiming_uniform_(self.weight, a=0, mode="fan_in")
        self.lipschitz, self.method, self.pad_mode, self.detach_norm = lipschitz, method, pad, detach_norm
        self.power_iterations, self.grid = power_iterations, grid
        self.halo = (kernel_size - 1) // 2
        if lipschitz is not None and method == "power":
            size = min(out_channels, in_channels * kernel_size * kernel_size)
            self.register_buffer("u", F.normalize(torch.randn(size), dim=0))
        if lipschitz is not None and method == "operator":
            freqs = grid * (grid // 2 + 1)
            self.register_buffer("u", F.normalize(torch.randn(freqs, out_channels, dtype=torch.cfloat), dim=1))

    def extra_repr(self) -> str:
        detached = ", detach_norm=True" if self.detach_norm else ""
        return super().extra_repr() + f", lipschitz={self.lipschitz}, method={self.method!r}{detached}"

    def _power_norm(self, matrix: torch.Tensor) -> torch.Tensor:
        # Power iteration on A = G^(2^s) / tr(.), G the small Gram matrix (min(m, n) square), by
        # s = POWER_SQUARINGS trace-normalised squarings: each A·u is 2^s iterations on G, so
        # a top singular value that training pushes up beside others clustered at λ (a gap of
        # 1 %) is still found within 1e-4 in a few iterations from the persistent vector.
        # σ = sqrt(uᵀ G u) is then differentiable in w through G.
        gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix
        with torch.no_grad():
            power = gram / gram.diagonal().sum().clamp_min(1e-30)
            for _ in range(self.POWER_SQUARINGS):
                power = power @ power
                power = power / power.diagonal().sum().clamp_min(1e-30)
            u = self.u
            for _ in range(self.power_iterations):
                u = F.normalize(power @ u, dim=0)
            self.u.copy_(u)
        return (u @ gram @ u).clamp_min(0).sqrt()

    def _operator_norm(self, weight: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft2(weight.float(), s=(self.grid, self.grid)).permute(2, 3, 0, 1)
        spectrum = spectrum.reshape(-1, weight.shape[0], weight.shape[1])
        with torch.no_grad():
            u = self.u
            for _ in range(self.power_iterations):
                v = F.normalize(torch.einsum("foi,fo->fi", spectrum.conj(), u), dim=1)
                u = F.normalize(torch.einsum("foi,fi->fo", spectrum, v), dim=1)
            self.u.copy_(u)
        return torch.einsum("fo,foi,fi->f", u.conj(), spectrum, v).abs().max()

    def norm(self) -> torch.Tensor:
        """The norm ‖w‖ that ``method`` bounds (differentiable in ``w``)."""
        matrix = self.weight.reshape(self.weight.shape[0], -1).float()
        with torch.autocast(self.weight.device.type, enabled=False):  # the bound is computed in fp32 under bf16 fits
            if self.method == "svd":
                return spectral_norm(matrix)
            if self.method == "power":
                return self._power_norm(matrix)
            return self._operator_norm(self.weight)

    def effective_weight(self) -> torch.Tensor:
        """``w / max(1, ‖w‖ / λ)`` (or ``w`` without a bound)."""
        if self.lipschitz is None:
            return self.weight
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_norm):
            norm = self.norm()
        scale = torch.clamp(norm / self.lipschitz, min=1.0)
        return self.weight / scale.to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.halo and self.pad_mode == "zeros":
            x = F.pad(x, [self.halo] * 4)
        elif self.halo and min(x.shape[-2:]) > self.halo:
            x = F.pad(x, [self.halo] * 4, mode="reflect")
        elif self.halo:
            x = pad_axis(pad_axis(x, 3, self.halo, self.halo, "reflect"), 2, self.halo, self.halo, "reflect")
        return F.conv2d(x, self.effective_weight(), self.bias, self.stride)


class MeanOnlyBatchNorm(nn.Module):
    """Mean-only batch normalisation: ``x - μ + b`` (paper 000 eq. 5).

    ``μ`` is the per-channel mean over the batch and spatial axes (always the batch
    statistics: a DIP fit is a single training run), ``b`` a learnt bias. Unlike batch
    norm it does not divide by the standard deviation, so it preserves the Lipschitz
    bound of the preceding convolution.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=(0, 2, 3), keepdim=True) + self.bias.view(1, -1, 1, 1)
