"""Inverse problems as tasks (what degrades a clean image) and physics (what the fit inverts).

A task is a frozen dataclass of plain parameters with ``degrade(x, seed) -> y``, which makes an
observation from a clean ``(N, C, H, W)`` image, and ``physics(y_shape, seed, device)``, which
builds the forward operator ``A`` the deep image prior is fitted through (deepinv style):

    θ* = argmin_θ  ‖A(f_θ(z)) − y‖²  (mean over the known entries),   x̂ = restore(f_θ*(z), y).

The same seed gives the same noise in ``degrade`` and the same mask in ``physics``. The operators
are those of paper 000 §5 (denoising, JPEG deblocking, inpainting, super-resolution, enhancement)
and the Poisson noise of paper 004 §4.2 (Table 4); REFERENCE.md §5 lists the settings.
"""

import dataclasses
import io
import numbers
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from archlab import images

#: Support ``a`` (in low-resolution pixels) of the super-resolution downsampling kernels.
KERNEL_SUPPORT = {"lanczos3": 3, "lanczos2": 2, "bicubic": 2}
MASK_KINDS = ("center", "bernoulli", "file")


def _number(task: str, name: str, value, *, low: float, high: float = float("inf"),
            open_low: bool = False, open_high: bool = False, accepted: str) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = (low < value if open_low else low <= value) and (value < high if open_high else value <= high)
    if not ok:
        raise ValueError(f"{task}: {name} must be {accepted}, got {value!r}")
    return value


def _flag(task: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{task}: {name} must be true or false, got {value!r}")
    return bool(value)


def _check_image(task: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{task}: image must be an (N, C, H, W) tensor, got {shape}")


def _shape(task: str, y_shape) -> tuple[int, int, int, int]:
    shape = tuple(int(s) for s in y_shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"{task}: y_shape must be (N, C, H, W) with positive sizes, got {shape}")
    return shape


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


@dataclass(frozen=True)
class Task:
    """Base of the inverse problems: a frozen dataclass of plain parameters.

    Subclasses set ``name`` and implement ``degrade`` (clean -> observation) and ``physics``
    (observation shape -> :class:`Physics`). Field metadata ``help`` describes each parameter.
    """

    name: ClassVar[str] = ""

    def degrade(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """The observation ``y`` of a clean ``(N, C, H, W)`` image ``x`` in [0, 1]."""
        _check_image(self.name, x)
        return x

    def physics(self, y_shape, seed: int = 0, device="cpu") -> Physics:
        """The forward operator for observations of shape ``y_shape`` = (N, C, H, W)."""
        return Physics(_shape(self.name, y_shape)).to(device)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """What a restoration of ``degrade(x)`` is compared with (the clean image itself here)."""
        return x

    def arch_overrides(self) -> dict:
        """Architecture settings this task recommends (none here)."""
        return {}

    def to_dict(self) -> dict:
        """``{"task": name, **params}``, plain values; inverse of :func:`task_from_dict`."""
        return {"task": self.name, **dataclasses.asdict(self)}


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


@dataclass(frozen=True)
class Denoise(Task):
    """Additive white Gaussian noise, ``y = clip(x + n, 0, 1)``, ``n ~ N(0, (σ/255)²)`` (paper 000 §5.1).

    Clipped by default because the reference code the papers build on (Ulyanov et al.'s
    ``get_noisy_image``) clips, so PSNRs compare with the published tables, and the observation
    stays an image in [0, 1]. ``clip=False`` gives the exact additive model (clipping lowers the
    effective σ and biases the mean near 0 and 1). Noise comes from a seeded CPU
    ``torch.Generator`` (``rng="torch"``), so it does not depend on the device, or from NumPy's
    ``default_rng(seed).normal`` drawn in (C, H, W) order (``rng="numpy"``), the noise of the
    papers' reference runs (REFERENCE §5b), so a fit can be compared with their code on the same y.
    """

    RNGS: ClassVar[tuple[str, ...]] = ("torch", "numpy")
    name: ClassVar[str] = "denoise"
    sigma: float = field(default=25.0, metadata={"help": "noise standard deviation on the 0..255 scale (>= 0)"})
    clip: bool = field(default=True, metadata={"help": "clip the noisy image to [0, 1] as the papers' code does"})
    rng: str = field(default="torch", metadata={"help": "noise generator: torch, or numpy (the reference runs')"})

    def __post_init__(self):
        object.__setattr__(self, "sigma", _number(self.name, "sigma", self.sigma, low=0, accepted="a number >= 0"))
        object.__setattr__(self, "clip", _flag(self.name, "clip", self.clip))
        if self.rng not in self.RNGS:
            raise ValueError(f"{self.name}.rng: {self.rng!r} is invalid; allowed: {', '.join(self.RNGS)}")

    def degrade(self, x, seed=0):
        """``x + N(0, (σ/255)²)``, clipped to [0, 1] when ``clip``."""
        _check_image(self.name, x)
        if self.rng == "numpy":
            draw = np.random.default_rng(int(seed)).normal(size=tuple(x.shape[1:]))
            noise = torch.from_numpy(draw)[None].to(x.device, x.dtype)
        else:
            noise = torch.randn(x.shape, generator=_generator(seed)).to(x.device, x.dtype)
        y = x + noise * (self.sigma / 255.0)
        return y.clamp(0.0, 1.0) if self.clip else y


@dataclass(frozen=True)
class PoissonDenoise(Task):
    """Poisson (shot) noise of scale ζ: ``y = ζ · Poisson(x / ζ)`` (paper 004 §4.2, Table 4).

    A pixel of value ``x`` collects ``x/ζ`` photons on average (``1/ζ`` at white), so the noise
    standard deviation is ``√(ζ x)``: ζ = 0.01, 0.1, 0.2 give ≈ 18, 57, 81 on the 0..255 scale
    at ``x = 0.5`` (observation PSNR 23.4, 14.1, 11.6 dB on average over Set9, seed 0) — the regime
    of Table 4 (restored PSNR ≈ 31, 23–25, 20–22 dB) — and the ``gain`` convention of deepinv's
    ``PoissonNoise``. Clipped to [0, 1] by default (bright pixels
    can count above ``1/ζ``), like :class:`Denoise`.
    """

    name: ClassVar[str] = "poisson"
    scale: float = field(default=0.1, metadata={"help": "Poisson scale zeta: 1/zeta photons at white (> 0)"})
    clip: bool = field(default=True, metadata={"help": "clip the noisy image to [0, 1]"})

    def __post_init__(self):
        scale = _number(self.name, "scale", self.scale, low=0, open_low=True, accepted="a number > 0")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "clip", _flag(self.name, "clip", self.clip))

    def degrade(self, x, seed=0):
        """``ζ · Poisson(x / ζ)``, clipped to [0, 1] when ``clip``."""
        _check_image(self.name, x)
        rate = x.detach().to("cpu", torch.float64).clamp_min(0) / self.scale
        y = (torch.poisson(rate, generator=_generator(seed)) * self.scale).to(x.device, x.dtype)
        return y.clamp(0.0, 1.0) if self.clip else y


@dataclass(frozen=True)
class JPEGDeblock(Task):
    """JPEG compression by Pillow's encoder at ``quality`` (paper 000 §5.2).

    With ``grey`` (the paper's setting, after Dong et al. 2015) an RGB image is first reduced to
    the Y channel of Pillow's YCbCr (``Y = 0.299 R + 0.587 G + 0.114 B``, 8-bit) and the
    observation has one channel; :meth:`reference` applies the same conversion to the clean image.
    Images are quantised to 8 bits before encoding. Deterministic: the seed is unused.
    """

    name: ClassVar[str] = "jpeg"
    quality: int = field(default=10, metadata={"help": "JPEG quality, an integer 1..95"})
    grey: bool = field(default=True, metadata={"help": "compress the Y (luma) channel only"})

    def __post_init__(self):
        q = self.quality
        if isinstance(q, bool) or not isinstance(q, numbers.Integral) or not 1 <= q <= 95:
            raise ValueError(f"jpeg: quality must be an integer in 1..95, got {q!r}")
        object.__setattr__(self, "quality", int(q))
        object.__setattr__(self, "grey", _flag(self.name, "grey", self.grey))

    def _encoder_input(self, image: torch.Tensor) -> Image.Image:
        if image.shape[0] not in (1, 3):
            raise ValueError(f"jpeg: images must have 1 or 3 channels, got {image.shape[0]}")
        array = np.round(image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
        pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        return pil.convert("YCbCr").getchannel("Y") if self.grey and pil.mode == "RGB" else pil

    def _stack(self, arrays: list[np.ndarray], like: torch.Tensor) -> torch.Tensor:
        batch = np.stack([a if a.ndim == 3 else a[:, :, None] for a in arrays])
        return torch.from_numpy(batch).permute(0, 3, 1, 2).to(like.device, like.dtype) / 255.0

    def degrade(self, x, seed=0):
        """Encode each image with ``Image.save(format="JPEG", quality=q)`` and decode it."""
        _check_image(self.name, x)
        decoded = []
        for image in x:
            buffer = io.BytesIO()
            self._encoder_input(image).save(buffer, format="JPEG", quality=self.quality)
            with Image.open(buffer) as jpeg:
                decoded.append(np.asarray(jpeg))
        return self._stack(decoded, x)

    def reference(self, x):
        """The 8-bit Y channel of ``x`` when ``grey``, else ``x``."""
        _check_image(self.name, x)
        if not self.grey:
            return x
        return self._stack([np.asarray(self._encoder_input(image)) for image in x], x)

    def physics(self, y_shape, seed=0, device="cpu"):
        """Identity (the DIP fits the decoded JPEG); ``grey`` needs a one-channel observation."""
        shape = _shape(self.name, y_shape)
        if self.grey and shape[1] != 1:
            raise ValueError(f"jpeg: grey=True needs a 1-channel observation, got {shape[1]} channels")
        return Physics(shape).to(device)


@dataclass(frozen=True)
class Inpaint(Task):
    """Missing pixels, ``y = m ⊙ x`` with a binary mask ``m`` (1 = known) (paper 000 §5.3).

    ``mask``: ``center`` — a central square hole of area ``ratio · H · W`` (Pathak et al. 2016);
    ``bernoulli`` — each pixel dropped with probability ``drop``, seeded, the same for all
    channels; ``file`` — a mask image at ``path`` (white = known, binarised at 0.5 on its luma),
    which must have the image's size.
    """

    name: ClassVar[str] = "inpaint"
    mask: str = field(default="center", metadata={"help": "mask kind: center, bernoulli or file"})
    ratio: float = field(default=0.25, metadata={"help": "center: hole-to-image area ratio in (0, 1)"})
    drop: float = field(default=0.5, metadata={"help": "bernoulli: probability of dropping a pixel, in (0, 1)"})
    path: str = field(default="", metadata={"help": "file: mask image, white = known, same size as the image"})

    def __post_init__(self):
        if self.mask not in MASK_KINDS:
            raise ValueError(f"inpaint: mask must be one of {', '.join(MASK_KINDS)}, got {self.mask!r}")
        open01 = dict(low=0, high=1, open_low=True, open_high=True, accepted="a number in (0, 1)")
        object.__setattr__(self, "ratio", _number(self.name, "ratio", self.ratio, **open01))
        object.__setattr__(self, "drop", _number(self.name, "drop", self.drop, **open01))
        if not isinstance(self.path, str):
            raise ValueError(f"inpaint: path must be a string, got {self.path!r}")
        if (self.mask == "file") != bool(self.path):
            raise ValueError(
                f"inpaint: path must be given exactly when mask='file' (mask={self.mask!r}, path={self.path!r})"
            )

    def make_mask(self, height: int, width: int, seed: int = 0) -> torch.Tensor:
        """The ``(H, W)`` float mask (1 = known) for an image of that size and ``seed``."""
        if self.mask == "bernoulli":
            return (torch.rand((height, width), generator=_generator(seed)) >= self.drop).float()
        if self.mask == "file":
            mask = images.to_grey(images.load(self.path))[0, 0]
            if tuple(mask.shape) != (height, width):
                raise ValueError(
                    f"inpaint: mask {self.path} is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}"
                )
            return (mask >= 0.5).float()
        side = round((self.ratio * height * width) ** 0.5)
        if side > min(height, width):
            raise ValueError(
                f"inpaint: ratio {self.ratio} needs a {side}-pixel square hole; the image is {width}x{height}"
            )
        mask = torch.ones((height, width))
        top, left = (height - side) // 2, (width - side) // 2
        mask[top : top + side, left : left + side] = 0
        return mask

    def degrade(self, x, seed=0):
        """``m ⊙ x`` with the mask of ``seed``."""
        _check_image(self.name, x)
        return x * self.make_mask(*x.shape[-2:], seed=seed).to(x.device, x.dtype)

    def physics(self, y_shape, seed=0, device="cpu"):
        """:class:`MaskPhysics` with the mask of ``seed`` (the one ``degrade`` used)."""
        shape = _shape(self.name, y_shape)
        return MaskPhysics(shape, self.make_mask(*shape[-2:], seed=seed)).to(device)


@dataclass(frozen=True)
class SuperResolution(Task):
    """Downsampling by an integer factor, ``y = A x`` (paper 000 §5.4; Ulyanov et al. 2018).

    The network outputs the high-resolution image (``factor`` × the observation's size);
    :class:`DownsamplePhysics` maps it to the observation with the antialiased ``kernel``
    (Lanczos-3 by default). ``degrade`` first centre-crops ``x`` to multiples of the factor;
    :meth:`reference` applies the same crop.
    """

    name: ClassVar[str] = "sr"
    factor: int = field(default=4, metadata={"help": "integer downsampling factor >= 2 (2, 4, 8 in the papers)"})
    kernel: str = field(default="lanczos3", metadata={"help": "downsampling kernel: lanczos3, lanczos2 or bicubic"})

    def __post_init__(self):
        f = self.factor
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or f != int(f) or f < 2:
            raise ValueError(f"sr: factor must be an integer >= 2, got {f!r}")
        object.__setattr__(self, "factor", int(f))
        if self.kernel not in KERNEL_SUPPORT:
            raise ValueError(f"sr: kernel must be one of {', '.join(KERNEL_SUPPORT)}, got {self.kernel!r}")

    def reference(self, x):
        """``x`` centre-cropped to multiples of the factor."""
        _check_image(self.name, x)
        return images.center_crop(x, self.factor)

    def degrade(self, x, seed=0):
        """``A`` applied to the cropped ``x``."""
        x = self.reference(x)
        n, c, h, w = x.shape
        with torch.no_grad():
            return self.physics((n, c, h // self.factor, w // self.factor), device=x.device)(x)

    def physics(self, y_shape, seed=0, device="cpu"):
        """:class:`DownsamplePhysics` producing observations of ``y_shape``."""
        return DownsamplePhysics(_shape(self.name, y_shape), self.factor, self.kernel).to(device)


@dataclass(frozen=True)
class Enhance(Task):
    """Detail enhancement by unsharp masking with a controlled DIP (paper 000 §5.5).

    The observation is the image itself; the fit (identity physics) gives a smoothed ``x_s`` and
    the result is ``x_e = x0 + (x0 − x_s)``. ``lipschitz`` is the λ recommended for the
    architecture (smaller λ -> smoother ``x_s`` -> stronger enhancement), see :meth:`arch_overrides`.
    """

    name: ClassVar[str] = "enhance"
    lipschitz: float = field(default=1.0, metadata={"help": "Lipschitz bound lambda for the architecture (> 0)"})

    def __post_init__(self):
        value = _number(self.name, "lipschitz", self.lipschitz, low=0, open_low=True, accepted="a number > 0")
        object.__setattr__(self, "lipschitz", value)

    def physics(self, y_shape, seed=0, device="cpu"):
        """:class:`UnsharpPhysics` (identity fit, unsharp-mask restoration)."""
        return UnsharpPhysics(_shape(self.name, y_shape)).to(device)

    def arch_overrides(self):
        """``{"lipschitz": λ}``."""
        return {"lipschitz": self.lipschitz}


TASKS: dict[str, type[Task]] = {
    t.name: t for t in (Denoise, PoissonDenoise, JPEGDeblock, Inpaint, SuperResolution, Enhance)
}


def make_task(name: str, **params) -> Task:
    """The task called ``name`` with ``params``; unknown names and parameters raise ``ValueError``.

    Parameters
    ----------
    name : str
        One of :data:`TASKS`: ``denoise``, ``poisson``, ``jpeg``, ``inpaint``, ``sr``, ``enhance``.
    params
        The task's fields (``sigma``, ``quality``, ``mask``, ``factor`` ...).

    Returns
    -------
    Task

    Examples
    --------
    >>> make_task("denoise", sigma=15).to_dict()
    {'task': 'denoise', 'sigma': 15.0, 'clip': True, 'rng': 'torch'}
    >>> make_task("sr", factor=4).factor
    4
    """
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; accepted: {', '.join(TASKS)}")
    cls = TASKS[name]
    accepted = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{name}: unknown parameter {unknown[0]!r}; accepted: {', '.join(accepted) or 'none'}")
    return cls(**params)


def task_from_dict(d: dict) -> Task:
    """Inverse of :meth:`Task.to_dict`: ``{"task": name, **params}`` -> task."""
    if not isinstance(d, dict) or "task" not in d:
        raise ValueError(f"task: expected a dict with a 'task' key (one of {', '.join(TASKS)}), got {d!r}")
    params = dict(d)
    return make_task(params.pop("task"), **params)
