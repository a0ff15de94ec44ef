"""Inverse problems as tasks: what degrades a clean image, and the physics the fit inverts.

A task is a frozen dataclass of plain parameters with ``degrade(x, seed) -> y``, which makes an
observation from a clean ``(N, C, H, W)`` image, and ``physics(y_shape, seed, device)``, which
builds the forward operator ``A`` the deep image prior is fitted through (deepinv style):

    θ* = argmin_θ  ‖A(f_θ(z)) − y‖²  (mean over the known entries),   x̂ = restore(f_θ*(z), y).

The same seed gives the same noise in ``degrade`` and the same mask in ``physics``; ``observe(x, seed)``
makes both at once and returns them together as an :class:`Observation`, the one object a fit needs
(so no seed has to travel with ``y``). The operators
are those of paper 000 §5 (denoising, JPEG deblocking, inpainting, super-resolution, enhancement)
and the Poisson noise of paper 004 §4.2 (Table 4); REFERENCE.md §5 lists the settings.

The tasks are plain parameters and import torch only when they degrade or build physics
(:mod:`archlab.physics` holds the operators and the degradations), so the command line lists
them, with their parameters, without loading torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from archlab import checks

#: Support ``a`` (in low-resolution pixels) of the super-resolution downsampling kernels.
KERNEL_SUPPORT = {"lanczos3": 3, "lanczos2": 2, "bicubic": 2}
MASK_KINDS = ("center", "bernoulli", "file")


def _shape(task: str, y_shape) -> tuple[int, int, int, int]:
    shape = tuple(int(s) for s in y_shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"{task}: y_shape must be (N, C, H, W) with positive sizes, got {shape}")
    return shape


@dataclass(frozen=True)
class Observation:
    """An observed problem: the degraded image ``y``, the :class:`~archlab.physics.Physics` the fit inverts
    (the operator, its mask or downsampler, the data term, the restoration, the baseline) and the clean
    ``reference`` a restoration is scored against (None for an image observed elsewhere).

    Made by :meth:`Task.observe` (a clean image degraded here) or :meth:`Task.observed` (a degraded
    image as given).

    Examples
    --------
    >>> import torch
    >>> obs = SuperResolution(factor=2).observe(torch.rand(1, 3, 16, 16), seed=0)
    >>> tuple(obs.y.shape), tuple(obs.physics.output_shape), tuple(obs.reference.shape)
    ((1, 3, 8, 8), (16, 16), (1, 3, 16, 16))
    """

    y: object
    physics: object
    reference: object = None


@dataclass(frozen=True)
class Task:
    """Base of the inverse problems: a frozen dataclass of plain parameters.

    Subclasses set ``name`` and implement ``degrade`` (clean -> observation) and ``physics``
    (observation shape -> :class:`Physics`). Field metadata ``help`` describes each parameter.
    """

    name: ClassVar[str] = ""

    @property
    def seeded_physics(self) -> bool:
        """Whether the physics has random parts (drawn from the seed), which an observed image alone
        cannot give back."""
        return False

    def observe(self, x, seed: int = 0, device="cpu") -> Observation:
        """The :class:`Observation` of a clean ``(1, C, H, W)`` image ``x``: ``degrade(x, seed)``, the physics of
        ``seed`` (the same mask) and ``reference(x)``, on ``device``.

        Examples
        --------
        >>> import torch
        >>> task = Inpaint(mask="bernoulli", drop=0.5)
        >>> obs = task.observe(torch.rand(1, 1, 8, 8), seed=3)
        >>> bool(torch.equal(obs.physics(obs.y), obs.y))  # the mask that made y is the fit's
        True
        """
        y = self.degrade(x, seed=seed).to(device)
        return Observation(y, self.physics(tuple(y.shape), seed=seed, device=device), self.reference(x).to(device))

    def observed(self, y, device="cpu") -> Observation:
        """The :class:`Observation` of an already degraded image ``y`` (no reference).

        A task whose physics is drawn from a seed (a Bernoulli mask) cannot know it from ``y``:
        use :meth:`observe` on the clean image, or a mask file.
        """
        if self.seeded_physics:
            raise ValueError(f"{self.name}: the physics of {self.to_dict()} is drawn from a seed, which an observed "
                             f"image does not carry; observe the clean image (task.observe(x, seed)) or give a "
                             f"mask file (mask='file')")
        y = y.to(device)
        return Observation(y, self.physics(tuple(y.shape), device=device))

    def degrade(self, x, seed: int = 0):
        """The observation ``y`` of a clean ``(N, C, H, W)`` image ``x`` in [0, 1]."""
        checks.image(self.name, x, channels=None)
        return x

    def physics(self, y_shape, seed: int = 0, device="cpu"):
        """The forward operator (:class:`archlab.physics.Physics`) for observations of shape ``y_shape``."""
        from archlab import physics

        return physics.Physics(_shape(self.name, y_shape)).to(device)

    def reference(self, x):
        """What a restoration of ``degrade(x)`` is compared with (the clean image itself here)."""
        return x

    def arch_overrides(self) -> dict:
        """Architecture settings this task recommends (none here)."""
        return {}

    def to_dict(self) -> dict:
        """``{"task": name, **params}``, plain values; inverse of :func:`task_from_dict`."""
        return {"task": self.name, **dataclasses.asdict(self)}


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

    Examples
    --------
    >>> import torch
    >>> x = torch.full((1, 1, 64, 64), 0.5)
    >>> y = Denoise(sigma=25).degrade(x, seed=0)
    >>> round(float((y - x).std()) * 255)
    25
    """

    RNGS: ClassVar[tuple[str, ...]] = ("torch", "numpy")
    name: ClassVar[str] = "denoise"
    sigma: float = field(default=25.0, metadata={"help": "noise standard deviation on the 0..255 scale (>= 0)"})
    clip: bool = field(default=True, metadata={"help": "clip the noisy image to [0, 1] as the papers' code does"})
    rng: str = field(default="torch", metadata={"help": "noise generator: torch, or numpy (the reference runs')"})

    def __post_init__(self):
        object.__setattr__(self, "sigma", checks.number(f"{self.name}.sigma", self.sigma, low=0))
        object.__setattr__(self, "clip", checks.flag(f"{self.name}.clip", self.clip))
        checks.choice(f"{self.name}.rng", self.rng, self.RNGS)

    def degrade(self, x, seed=0):
        """``x + N(0, (σ/255)²)``, clipped to [0, 1] when ``clip``."""
        from archlab import physics

        checks.image(self.name, x, channels=None)
        return physics.gaussian_noise(x, self.sigma, seed, self.rng, self.clip)


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
        scale = checks.number(f"{self.name}.scale", self.scale, low=0, open_low=True)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "clip", checks.flag(f"{self.name}.clip", self.clip))

    def degrade(self, x, seed=0):
        """``ζ · Poisson(x / ζ)``, clipped to [0, 1] when ``clip``."""
        from archlab import physics

        checks.image(self.name, x, channels=None)
        return physics.poisson_noise(x, self.scale, seed, self.clip)


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
        object.__setattr__(self, "quality", checks.integer(f"{self.name}.quality", self.quality, low=1, high=95))
        object.__setattr__(self, "grey", checks.flag(f"{self.name}.grey", self.grey))

    def degrade(self, x, seed=0):
        """Encode each image with ``Image.save(format="JPEG", quality=q)`` and decode it."""
        from archlab import physics

        checks.image(self.name, x, channels=None)
        return physics.jpeg(x, self.quality, self.grey)

    def reference(self, x):
        """The 8-bit Y channel of ``x`` when ``grey``, else ``x``."""
        from archlab import physics

        checks.image(self.name, x, channels=None)
        return physics.jpeg_reference(x, self.grey)

    def physics(self, y_shape, seed=0, device="cpu"):
        """Identity (the DIP fits the decoded JPEG); ``grey`` needs a one-channel observation."""
        from archlab import physics

        shape = _shape(self.name, y_shape)
        if self.grey and shape[1] != 1:
            raise ValueError(f"jpeg: grey=True needs a 1-channel observation, got {shape[1]} channels")
        return physics.Physics(shape).to(device)


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
        checks.choice(f"{self.name}.mask", self.mask, MASK_KINDS)
        open01 = dict(low=0, high=1, open_low=True, open_high=True)
        object.__setattr__(self, "ratio", checks.number(f"{self.name}.ratio", self.ratio, **open01))
        object.__setattr__(self, "drop", checks.number(f"{self.name}.drop", self.drop, **open01))
        if not isinstance(self.path, str):
            checks.invalid(f"{self.name}.path", self.path, "a string (a mask image's path)")
        if (self.mask == "file") != bool(self.path):
            raise ValueError(
                f"inpaint: path must be given exactly when mask='file' (mask={self.mask!r}, path={self.path!r})"
            )

    @property
    def seeded_physics(self) -> bool:
        """A Bernoulli mask is drawn from the seed."""
        return self.mask == "bernoulli"

    def make_mask(self, height: int, width: int, seed: int = 0):
        """The ``(H, W)`` float mask (1 = known) for an image of that size and ``seed``."""
        from archlab import physics

        return physics.mask(self.mask, height, width, ratio=self.ratio, drop=self.drop, path=self.path, seed=seed)

    def degrade(self, x, seed=0):
        """``m ⊙ x`` with the mask of ``seed``."""
        checks.image(self.name, x, channels=None)
        return x * self.make_mask(*x.shape[-2:], seed=seed).to(x.device, x.dtype)

    def physics(self, y_shape, seed=0, device="cpu"):
        """:class:`~archlab.physics.MaskPhysics` with the mask of ``seed`` (the one ``degrade`` used)."""
        from archlab import physics

        shape = _shape(self.name, y_shape)
        return physics.MaskPhysics(shape, self.make_mask(*shape[-2:], seed=seed)).to(device)


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
        f = int(self.factor) if isinstance(self.factor, float) and self.factor.is_integer() else self.factor
        object.__setattr__(self, "factor", checks.integer(f"{self.name}.factor", f, low=2))
        checks.choice(f"{self.name}.kernel", self.kernel, tuple(KERNEL_SUPPORT))

    def reference(self, x):
        """``x`` centre-cropped to multiples of the factor."""
        from archlab import images

        checks.image(self.name, x, channels=None)
        return images.center_crop(x, self.factor)

    def degrade(self, x, seed=0):
        """``A`` applied to the cropped ``x``."""
        import torch

        x = self.reference(x)
        n, c, h, w = x.shape
        with torch.no_grad():
            return self.physics((n, c, h // self.factor, w // self.factor), device=x.device)(x)

    def physics(self, y_shape, seed=0, device="cpu"):
        """:class:`~archlab.physics.DownsamplePhysics` producing observations of ``y_shape``."""
        from archlab import physics

        return physics.DownsamplePhysics(_shape(self.name, y_shape), self.factor, self.kernel).to(device)


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
        value = checks.number(f"{self.name}.lipschitz", self.lipschitz, low=0, open_low=True)
        object.__setattr__(self, "lipschitz", value)

    def physics(self, y_shape, seed=0, device="cpu"):
        """:class:`~archlab.physics.UnsharpPhysics` (identity fit, unsharp-mask restoration)."""
        from archlab import physics

        return physics.UnsharpPhysics(_shape(self.name, y_shape)).to(device)

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
