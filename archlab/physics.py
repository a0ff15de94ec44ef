"""The forward operators the deep image prior is fitted through, and the degradations that make observations.

A :class:`Physics` is built for one observation shape ``(N, C, H, W)`` (deepinv style): ``A`` and ``Aᵀ``,
the data term, the restoration of a network output and the naive baseline:

    θ* = argmin_θ  ‖A(f_θ(z)) − y‖²  (mean over the known entries),   x̂ = restore(f_θ*(z), y).

The functions below them are the degradations of :mod:`archlab.tasks` in torch (seeded noise,
JPEG coding, masks, downsampling); the tasks hold the parameters and call them.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from archlab import images
from archlab.tasks import KERNEL_SUPPORT


def generator(seed: int) -> torch.Generator:
    """A seeded CPU generator: the same draws on every device."""
    return torch.Generator().manual_seed(int(seed))


class Physics(torch.nn.Module):
    """The identity operator ``A = I`` fitted with the mean squared error (denoising, deblocking).

    Made for one observation shape ``(N, C, H, W)``; ``output_shape`` is the ``(H, W)`` the
    network must produce. Subclasses change ``forward``/``adjoint`` (the linear ``A`` and ``Aᵀ``),
    ``loss`` (the data term), ``restore`` (network output -> restored image) and ``baseline``
    (the naive restoration compared with).
    """

    def __init__(self, y_shape: tuple[int, int, int, int], output_shape: tuple[int, int] | None = None):
        super().__init__()
        self.y_shape = tuple(y_shape)
        self.channels = self.y_shape[1]
        self.output_shape = tuple(output_shape) if output_shape is not None else self.y_shape[-2:]

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        """``A(out)``: the network output mapped to the observation space."""
        return out

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``Aᵀ y`` (``⟨A x, y⟩ = ⟨x, Aᵀ y⟩``)."""
        return y

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Data term ``mean((A(out) − y)²)``, a scalar tensor."""
        return F.mse_loss(self(out), y)

    def restore(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The restored image: the network output itself."""
        return out

    def baseline(self, y: torch.Tensor) -> torch.Tensor:
        """The naive restoration: the observation itself."""
        return y


class MaskPhysics(Physics):
    """Pixel mask ``A x = m ⊙ x`` (``m`` ∈ {0, 1}, 1 = known, shared by all channels); ``Aᵀ = A``.

    The data term averages only over known entries: ``Σ m (out − y)² / (N · C · Σ m)``
    (Ulyanov et al. 2018, inpainting; paper 000 §5.3).
    """

    def __init__(self, y_shape, mask: torch.Tensor):
        super().__init__(y_shape)
        self.register_buffer("mask", mask.to(torch.float32).view(1, 1, *mask.shape[-2:]))
        known = int(mask.sum())
        if known == 0:
            raise ValueError("inpaint: the mask has no known pixel (all zero); white = known")
        self.known_entries = known * self.y_shape[0] * self.y_shape[1]

    def forward(self, out):
        """``m ⊙ out``."""
        return out * self.mask

    def adjoint(self, y):
        """``m ⊙ y`` (a mask is self-adjoint)."""
        return y * self.mask

    def loss(self, out, y):
        """``Σ m (out − y)² / #known``: values at unknown pixels do not enter."""
        return ((out - y).square() * self.mask).sum() / self.known_entries


class UnsharpPhysics(Physics):
    """Identity fit whose restoration is the unsharp mask ``x_e = x0 + (x0 − x_s)`` (paper 000 §5.5).

    The network output ``x_s`` is a smoothed fit of the observed image ``x0 = y``;
    ``restore`` returns ``clip(2 y − x_s, 0, 1)``.
    """

    def restore(self, out, y):
        """``clip(y + (y − out), 0, 1)``."""
        return (2 * y - out).clamp(0.0, 1.0)


def resampling_taps(kernel: str, factor: int) -> np.ndarray:
    """Taps of the antialiased downsampling kernel by an integer ``factor``, summing to 1.

    The continuous kernel ``K`` (Lanczos-a ``sinc(t) sinc(t/a)`` for ``|t| < a``, or Keys'
    cubic with ``a = −0.5`` on ``|t| < 2``, as in Pillow) is stretched by the factor and sampled
    at the input-pixel offsets ``d = j − (s·i + (s − 1)/2)`` from the centre of output pixel
    ``i``, so output pixel ``i`` covers input pixels ``s·i … s·i + s − 1`` (Pillow's and PyTorch's
    ``align_corners=False`` geometry): ``h[k] ∝ K(d_k / s)``, ``|d_k| < a·s``; length
    ``2·a·s`` for even ``s`` (half-integer offsets) and ``2·a·s − 1`` for odd ``s``.
    """
    if kernel not in KERNEL_SUPPORT:
        raise ValueError(f"sr: kernel must be one of {', '.join(KERNEL_SUPPORT)}, got {kernel!r}")
    a = KERNEL_SUPPORT[kernel]
    length = 2 * a * factor - factor % 2
    t = (np.arange(length) - (length - 1) / 2) / factor
    if kernel == "bicubic":
        u = np.abs(t)
        taps = np.where(u <= 1, 1.5 * u**3 - 2.5 * u**2 + 1, -0.5 * u**3 + 2.5 * u**2 - 4 * u + 2)
        taps = np.where(u < 2, taps, 0.0)
    else:
        taps = np.sinc(t) * np.sinc(t / a)
    return taps / taps.sum()


class DownsamplePhysics(Physics):
    """Antialiased downsampling ``A``: reflect padding, then a separable strided depthwise conv.

    ``A x = (h ⊗ h) * pad(x)`` sampled every ``s`` pixels, ``h`` from :func:`resampling_taps`
    (the differentiable Lanczos downsampler of Ulyanov et al. 2018 used by paper 000 §5.4).
    ``Aᵀ`` is the transposed convolution followed by folding the reflected margins back.
    ``baseline`` is bicubic upsampling of ``y`` (PyTorch, ``align_corners=False``, clamped).
    """

    def __init__(self, y_shape, factor: int, kernel: str):
        n, c, h, w = y_shape
        super().__init__(y_shape, (h * factor, w * factor))
        taps = torch.from_numpy(resampling_taps(kernel, factor)).float()
        self.factor = factor
        self.pad = (len(taps) - factor) // 2
        if self.pad >= min(self.output_shape):
            raise ValueError(
                f"sr: output {self.output_shape[1]}x{self.output_shape[0]} is too small for {kernel} x{factor}"
                f" (reflect padding of {self.pad} pixels needs more than {self.pad} pixels per side)"
            )
        self.register_buffer("weight_w", taps.view(1, 1, 1, -1).repeat(c, 1, 1, 1))
        self.register_buffer("weight_h", taps.view(1, 1, -1, 1).repeat(c, 1, 1, 1))

    def forward(self, out):
        """Pad by reflection, filter and subsample rows, then columns."""
        p, s, c = self.pad, self.factor, self.channels
        out = F.conv2d(F.pad(out, (p, p, 0, 0), mode="reflect"), self.weight_w, stride=(1, s), groups=c)
        return F.conv2d(F.pad(out, (0, 0, p, p), mode="reflect"), self.weight_h, stride=(s, 1), groups=c)

    def adjoint(self, y):
        """Transposed strided conv per axis, then the adjoint of reflect padding."""
        s, c = self.factor, self.channels
        x = _unpad_reflect_adjoint(F.conv_transpose2d(y, self.weight_h, stride=(s, 1), groups=c), self.pad, -2)
        return _unpad_reflect_adjoint(F.conv_transpose2d(x, self.weight_w, stride=(1, s), groups=c), self.pad, -1)

    def baseline(self, y):
        """Bicubic upsampling to ``output_shape``, clamped to [0, 1]."""
        return F.interpolate(y, size=self.output_shape, mode="bicubic", align_corners=False).clamp(0.0, 1.0)


def _unpad_reflect_adjoint(g: torch.Tensor, p: int, dim: int) -> torch.Tensor:
    """Adjoint of reflect padding by ``p`` along ``dim``: margins fold back onto their sources."""
    n = g.shape[dim] - 2 * p
    core = g.narrow(dim, p, n).clone()
    core.narrow(dim, 1, p).add_(g.narrow(dim, 0, p).flip(dim))
    core.narrow(dim, n - 1 - p, p).add_(g.narrow(dim, p + n, p).flip(dim))
    return core


def gaussian_noise(x: torch.Tensor, sigma: float, seed: int, rng: str, clip: bool) -> torch.Tensor:
    """``x + N(0, (σ/255)²)`` (seeded; ``rng`` "torch" or "numpy"), clipped to [0, 1] when ``clip``."""
    if rng == "numpy":
        draw = np.random.default_rng(int(seed)).normal(size=tuple(x.shape[1:]))
        noise = torch.from_numpy(draw)[None].to(x.device, x.dtype)
    else:
        noise = torch.randn(x.shape, generator=generator(seed)).to(x.device, x.dtype)
    y = x + noise * (sigma / 255.0)
    return y.clamp(0.0, 1.0) if clip else y


def poisson_noise(x: torch.Tensor, scale: float, seed: int, clip: bool) -> torch.Tensor:
    """``ζ · Poisson(x / ζ)`` (seeded), clipped to [0, 1] when ``clip``."""
    rate = x.detach().to("cpu", torch.float64).clamp_min(0) / scale
    y = (torch.poisson(rate, generator=generator(seed)) * scale).to(x.device, x.dtype)
    return y.clamp(0.0, 1.0) if clip else y


def _encoder_input(image: torch.Tensor, grey: bool) -> Image.Image:
    if image.shape[0] not in (1, 3):
        raise ValueError(f"jpeg: images must have 1 or 3 channels, got {image.shape[0]}")
    array = np.round(image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    return pil.convert("YCbCr").getchannel("Y") if grey and pil.mode == "RGB" else pil


def _stack(arrays: list[np.ndarray], like: torch.Tensor) -> torch.Tensor:
    batch = np.stack([a if a.ndim == 3 else a[:, :, None] for a in arrays])
    return torch.from_numpy(batch).permute(0, 3, 1, 2).to(like.device, like.dtype) / 255.0


def jpeg(x: torch.Tensor, quality: int, grey: bool) -> torch.Tensor:
    """Each image 8-bit quantised (its Y channel when ``grey``), encoded by Pillow at ``quality`` and decoded."""
    decoded = []
    for image in x:
        buffer = io.BytesIO()
        _encoder_input(image, grey).save(buffer, format="JPEG", quality=quality)
        with Image.open(buffer) as coded:
            decoded.append(np.asarray(coded))
    return _stack(decoded, x)


def jpeg_table(quality: int) -> torch.Tensor:
    """The luma quantisation table (8, 8), natural order, Pillow's encoder uses at ``quality`` (the IJG table
    scaled as libjpeg's ``jpeg_set_quality`` does, steps 1..255), as the decoder reads it back."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="JPEG", quality=quality)
    with Image.open(buffer) as coded:
        return torch.tensor(coded.quantization[0], dtype=torch.float64).view(8, 8)


def jpeg_reference(x: torch.Tensor, grey: bool) -> torch.Tensor:
    """What :func:`jpeg` encodes, without the coding: the 8-bit Y channel when ``grey``, else ``x``."""
    return _stack([np.asarray(_encoder_input(image, grey)) for image in x], x) if grey else x


def mask(kind: str, height: int, width: int, *, ratio: float, drop: float, path: str, seed: int) -> torch.Tensor:
    """The ``(H, W)`` float inpainting mask (1 = known): ``center`` square hole of area ``ratio · H · W``,
    ``bernoulli`` drops of probability ``drop`` (seeded), or the ``file`` at ``path`` (binarised at 0.5)."""
    if kind == "bernoulli":
        return (torch.rand((height, width), generator=generator(seed)) >= drop).float()
    if kind == "file":
        loaded = images.to_grey(images.load(path))[0, 0]
        if tuple(loaded.shape) != (height, width):
            raise ValueError(
                f"inpaint: mask {path} is {loaded.shape[1]}x{loaded.shape[0]} but the image is {width}x{height}"
            )
        return (loaded >= 0.5).float()
    side = round((ratio * height * width) ** 0.5)
    if side > min(height, width):
        raise ValueError(f"inpaint: ratio {ratio} needs a {side}-pixel square hole; the image is {width}x{height}")
    hole = torch.ones((height, width))
    top, left = (height - side) // 2, (width - side) // 2
    hole[top : top + side, left : left + side] = 0
    return hole
