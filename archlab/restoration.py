"""From an image to a restored image: the one way archlab prepares an image, and :func:`restore`.

Preparing is load → resize → centre crop to sizes the architecture (and an SR factor) accepts →
degrade (seeded) → reference: :func:`clean_image` and :func:`prepare` do it for the command line,
the reproductions, the studies and the experiments alike. :func:`restore` is ``archlab restore`` as one
call: prepare, fit with the automatic stop (:data:`archlab.fitting.AUTO_STOP`) from :func:`default_restarts`
seeds, return the mean of their restorations (:func:`fit_restarts`).

Its defaults are what ``archlab restore`` offers; torch and the image I/O are imported by the functions
that use them, so the command line reads the defaults without loading torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from archlab import models, tasks

if TYPE_CHECKING:
    import torch

DEFAULT_IMAGE = "camera"
#: The architecture of a restoration whose task ships no study table and has no :data:`TASK_DEFAULTS` entry
#: (:func:`default_arch`).
DEFAULT_ARCH = "controlled-64"
#: Fit settings of a restoration when neither the user nor a recommendation gives them.
DEFAULT_FIT = {"iterations": 500, "lr": 0.002, "input_jitter": 1 / 30}
#: How many independently seeded fits a restoration averages (:func:`fit_restarts`).
DEFAULT_RESTARTS = 3
#: The architecture and number of fits of a restoration for the tasks that ship no study but restore better
#: with another architecture than :data:`DEFAULT_ARCH` (:func:`default_arch`, :func:`default_restarts`).
#: JPEG quality 10 (grey), at the stop of :class:`archlab.stopping.JPEGConsistencyRule`: one fit of paper 004's
#: rules (:func:`archlab.recommend.rules`) restores 0.06 dB more than one of ``controlled-64`` on three training
#: crops (CBSD68 0010, 0030, Set12 01 at 128 px) in three to four times its time; on nine images of
#: ``benchmarks/time_to_quality.py`` a second fit adds 0.04 dB and a third 0.01 dB, so two are averaged.
TASK_DEFAULTS = {"jpeg": ("rules", 2)}
#: The ``arch`` names of a configuration with its own fit settings (:func:`archlab.recommend.studied`,
#: :func:`archlab.recommend.rules`; :func:`setup`).
NAMED_CONFIGURATIONS = ("studied", "rules")
#: Longer side a clean image is resized to before it is degraded (0 keeps it).
DEFAULT_SIZE = 128
#: Largest network output a fit starts on unless told otherwise (1024 x 1024).
DEFAULT_MAX_PIXELS = 1 << 20
#: Memory of a fit per output pixel and channel of the widest level, in bytes: activations, their
#: gradients, the monitors' buffers (measured: controlled-64 and ulyanov-dip at 128² and 256², fp32 CPU,
#: about 21 float32 maps of the width per pixel; 24 here).
FIT_BYTES_PER_PIXEL_CHANNEL = 96


def multiple_for(spec: models.ArchSpec, task: tasks.Task) -> int:
    """The multiple the clean image's sides must be: the architecture's and the SR factor's (lcm)."""
    return math.lcm(spec.multiple, getattr(task, "factor", 1))


def clean_image(source: str | os.PathLike | torch.Tensor, *, multiple: int = 1, scale: float | None = None,
                size: tuple[int, int] | None = None, longest: int = 0, crop: tuple[int, int] | None = None,
                method: str = "torch", grey: bool = False) -> torch.Tensor:
    """A clean image as archlab fits it: loaded, resized, centre-cropped.

    Parameters
    ----------
    source : str, path or Tensor
        A file, a built-in name (:func:`archlab.images.builtin_names`) or an image (1, C, H, W).
    multiple : int
        The crop keeps the largest centred multiple of it (:func:`multiple_for`).
    scale, size, longest
        At most one resize: by ``scale``, to ``size`` = (H, W), or so that the longer side is
        ``longest`` when it is longer (never enlarging; 0 keeps it). Bicubic with antialiasing,
        ``method`` as :func:`archlab.images.resize`.
    crop : (int, int), optional
        Centre crop to this (H, W) first (then down to ``multiple``, in one centred crop).
    grey : bool
        Load as one channel.

    Examples
    --------
    >>> clean_image("camera", longest=100, multiple=32).shape
    torch.Size([1, 1, 96, 96])
    """
    import torch

    from archlab import images

    if sum(v is not None and v != 0 for v in (scale, size, longest)) > 1:
        raise ValueError("clean_image: give at most one of scale, size and longest")
    x = source if isinstance(source, torch.Tensor) else images.load(source, grey=grey)
    if longest and max(x.shape[-2:]) > longest:
        scale = longest / max(x.shape[-2:])
    if scale is not None or size is not None:
        x = images.resize(x, scale=scale, size=size, method=method)
    return images.center_crop(x, multiple, size=crop)


def check_pixels(spec: models.ArchSpec, size: tuple[int, int] | None, factor: int, max_pixels: int,
                 name: str = "image", limit: str = "max_pixels") -> None:
    """Refuse a fit whose output (``size`` × ``factor``) has more than ``max_pixels`` pixels, with the
    memory it would need: about :data:`FIT_BYTES_PER_PIXEL_CHANNEL` bytes per pixel and channel of the
    widest level. ``name`` is the input the message names, ``limit`` the limit's (``size`` None: only
    the limit is checked)."""
    if max_pixels < 1:
        raise ValueError(f"{limit}: {max_pixels} is invalid; allowed: an integer ≥ 1")
    if size is None:
        return
    h, w = size[0] * factor, size[1] * factor
    if h * w <= max_pixels:
        return
    width = max(spec.width) if isinstance(spec.width, tuple) else spec.width
    gigabytes = h * w * width * FIT_BYTES_PER_PIXEL_CHANNEL / 1e9
    raise ValueError(f"{name}: a fit with a {w}x{h} output ({h * w:,} pixels, width {width}) needs about "
                     f"{gigabytes:.1f} GB; the limit is {limit} {max_pixels:,}; resize the image or raise the limit")


@dataclass(frozen=True)
class Prepared:
    """What a fit starts from: the :class:`~archlab.tasks.Observation` (``y``, its physics, the clean
    reference in the task's reference space or None for an observed image) and notes on what was done to
    the input."""

    observation: tasks.Observation
    notes: list[str] = field(default_factory=list)

    @property
    def y(self) -> torch.Tensor:
        """The observation ``y``."""
        return self.observation.y

    @property
    def reference(self) -> torch.Tensor | None:
        """The clean reference, None for an observed image."""
        return self.observation.reference


def _working_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """``(H, W)`` after resizing the longer side to ``longest`` when it is larger (0 keeps it)."""
    scale = longest / max(size) if longest else 1.0
    return size if scale >= 1 else (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))


def prepare(task: tasks.Task, spec: models.ArchSpec, image: str | os.PathLike | None = None, *,
            observed: str | os.PathLike | None = None, size: int = DEFAULT_SIZE, seed: int = 0,
            max_pixels: int = DEFAULT_MAX_PIXELS, names: Mapping[str, str] | None = None) -> Prepared:
    """A clean ``image`` resized (longer side ``size``, never enlarged), cropped for ``spec`` and degraded by
    ``task`` with ``seed``; or an ``observed`` (already degraded) image, cropped for ``spec``.

    Every size is checked before the image is decoded (``max_pixels``, :func:`check_pixels`). ``names`` maps
    the parameter names (``image``, ``observed``, ``size``, ``max_pixels``) to the names errors use (the
    command line's flags).
    """
    from archlab import images

    names = {"image": "image", "observed": "observed", "size": "size", "max_pixels": "max_pixels", **(names or {})}
    factor = getattr(task, "factor", 1)

    def pixels(shape, factor_, name):
        check_pixels(spec, shape, factor_, max_pixels, names[name], names["max_pixels"])

    pixels(None, factor, "image")  # the limit itself, before anything is read
    notes = []
    if observed is not None:
        pixels(images.image_size(observed), factor, "observed")
        y = images.load(observed)
        note = images.describe(observed)
        if note:
            notes.append(note)
        obs_multiple = spec.multiple // math.gcd(spec.multiple, factor)
        if min(y.shape[-2:]) * factor < 2 * spec.multiple:
            models.check_size(spec, tuple(s * factor for s in y.shape[-2:]))
        cropped = images.center_crop(y, obs_multiple)
        if cropped.shape != y.shape:
            if task.name == "inpaint" and getattr(task, "mask", "") == "file":
                raise ValueError(f"{names['observed']}: {y.shape[-1]}x{y.shape[-2]} is not a multiple of {obs_multiple} "
                                 f"(needed by the architecture); crop the image and its mask first")
            notes.append(f"cropped {y.shape[-1]}x{y.shape[-2]} to {cropped.shape[-1]}x{cropped.shape[-2]}")
        if task.name == "jpeg" and getattr(task, "grey", False):
            cropped = images.to_grey(cropped)
        return Prepared(task.observed(cropped), notes)
    source = image if image is not None else DEFAULT_IMAGE
    if size and size < 2:
        raise ValueError(f"{names['size']}: {size} must be ≥ 2 (or 0 to keep the image size)")
    header = images.image_size(source)
    if header is not None:
        pixels(_working_size(header, size), 1, "image")
    x = clean_image(source, longest=size)
    note = images.describe(source)
    if note:
        notes.append(note)
    pixels(tuple(x.shape[-2:]), 1, "image")
    multiple = multiple_for(spec, task)
    if min(x.shape[-2:]) < 2 * multiple:
        models.check_size(spec, tuple(x.shape[-2:]))
    x = images.center_crop(x, multiple)
    return Prepared(task.observe(x, seed=seed), notes)


@dataclass
class Restoration:
    """What :func:`restore` returns: the ``restored`` image (the mean of the fits' restorations), the
    ``observation`` it came from, the clean ``reference`` (None for an observed image), the first fit's
    :class:`archlab.fitting.FitResult` (``result``), notes, and every fit (``runs``).

    Examples
    --------
    >>> r = restore("camera", size=32, arch="faster-dip-32", iterations=10, eval_every=5, window=10)
    >>> r.observation.shape == r.restored.shape, r.reference is not None, isinstance(r.notes, list)
    (True, True, True)
    """

    restored: torch.Tensor
    observation: torch.Tensor
    reference: torch.Tensor | None
    result: object
    notes: list[str]
    runs: tuple = ()

    @property
    def psnr(self) -> float | None:
        """PSNR of the restoration against the reference (dB), where there is one."""
        from archlab import metrics

        return None if self.reference is None else float(metrics.psnr(self.restored, self.reference))


def default_arch(task: tasks.Task) -> str:
    """``"studied"`` (:func:`archlab.recommend.studied`: the best single configuration of the task's shipped
    study) where the task has one, else the task's :data:`TASK_DEFAULTS` architecture, else :data:`DEFAULT_ARCH`."""
    from archlab import learnt

    if learnt.shipped_best_single(task.name) is not None:
        return "studied"
    return TASK_DEFAULTS.get(task.name, (DEFAULT_ARCH,))[0]


def default_restarts(task: tasks.Task, arch: str | models.ArchSpec | None = None) -> int:
    """How many seeded fits a restoration of ``task`` with ``arch`` averages by default: for ``"studied"`` and
    ``"auto"`` where the task ships measured restorations, the number of fits of the one chosen within the
    default's time (:func:`archlab.recommend.within_budget`); else :data:`TASK_DEFAULTS`' number for the task;
    else :data:`DEFAULT_RESTARTS`."""
    if isinstance(arch, str) and arch in ("studied", "auto"):
        from archlab import recommend

        budgeted = recommend.within_budget(task)
        if budgeted is not None:
            return budgeted.fits
    return TASK_DEFAULTS.get(task.name, (None, DEFAULT_RESTARTS))[1]


def named_configuration(arch: str, task: tasks.Task) -> tuple[models.ArchSpec, dict, str]:
    """The spec, fit settings and reason of ``arch``, one of :data:`NAMED_CONFIGURATIONS`, for ``task``."""
    from archlab import recommend  # the learnt tables (scikit-learn) only when asked for

    return {"studied": recommend.studied, "rules": recommend.rules}[arch](task)


def setup(arch: str | models.ArchSpec, task: tasks.Task,
          observed: torch.Tensor | None = None) -> tuple[models.ArchSpec, dict, str | None]:
    """The spec, fit settings and reason of what a restoration fits for ``arch``: a preset, spec file or spec
    with :data:`DEFAULT_FIT` (no reason); ``"studied"``, the task's study's best single configuration and its
    settings (:func:`archlab.recommend.studied`); ``"rules"``, paper 004's rules at width 64 and their settings
    (:func:`archlab.recommend.rules`); ``"auto"``, the recommendation for the observation ``observed``
    (:func:`archlab.recommend.recommend`; without it, the deepest architecture it may give, to crop for, and no
    reason). All stop automatically."""
    settings = {**DEFAULT_FIT, "stop": "auto"}
    if not isinstance(arch, str) or arch not in ("auto", *NAMED_CONFIGURATIONS):
        return models.load_spec(arch), settings, None
    if arch in NAMED_CONFIGURATIONS:
        spec, named_fit, reason = named_configuration(arch, task)
        return spec, settings | named_fit, reason
    from archlab import recommend

    if observed is None:
        return recommend.crop_spec(task), settings, None
    advice = recommend.recommend(observed, task=task)
    reason = (f"{advice.sources['width']} (texture score {advice.texture_score:.2f}, "
              f"noise σ ≈ {advice.noise_sigma * 255:.1f}/255 discounted)")
    return advice.spec, settings | advice.fit, reason


def configure(arch: str | models.ArchSpec, task: tasks.Task, image: str | os.PathLike | None = None,
              **prepare_kwargs) -> tuple[models.ArchSpec, dict, str | None, Prepared]:
    """What a restoration fits for ``arch`` and the observation it fits, as :func:`setup` and :func:`prepare` give
    them: the image is prepared for ``arch``'s spec (for ``"auto"``, the deepest it may give), and ``"auto"`` is
    then recommended from that observation. ``prepare_kwargs`` go to :func:`prepare`. Returns the spec, the fit
    settings, the reason (None for a preset or spec) and the prepared observation."""
    spec, settings, reason = setup(arch, task)
    prepared = prepare(task, spec, image, **prepare_kwargs)
    if isinstance(arch, str) and arch == "auto":
        spec, settings, reason = setup(arch, task, prepared.y)
    return spec, settings, reason, prepared


def fit_restarts(spec, task: tasks.Task, observation, restarts: int = DEFAULT_RESTARTS, *, seed: int = 0,
                 **kwargs) -> tuple[torch.Tensor, list]:
    """Fit ``restarts`` networks to one observation from the seeds ``seed``, ``seed + 1``, ... (each its own
    initial weights, input and jitter, each stopped by its own rule) and average their restorations.

    A fit's restoration is x̂_k = x + b + e_k, with b the bias the prior and the stop share and e_k the error of
    run k's random start; the mean of K runs keeps b and divides the variance of e by K where the e_k are
    independent, so that E‖x̄ − x‖² = ‖b‖² + E‖e‖²/K. It is a Monte-Carlo estimate of the mean over the DIP's
    random starts, the posterior mean that Cheng et al. approximate by averaging the outputs of one
    Langevin-perturbed run. Measured (denoising σ 25, 128 px, the study's best single configuration): three
    runs gain 0.5-0.7 dB over one on F16, Baboon, Lena and Peppers, in three times its time.

    Parameters
    ----------
    spec, task, observation
        As :func:`archlab.fitting.fit` takes them.
    restarts : int
        Number of fits (≥ 1); 1 is a single fit.
    seed : int
        Seed of the first fit.
    kwargs
        :func:`archlab.fitting.fit` keywords, shared by the fits. On the CPU the fits run one after the other
        (``archlab bench many``: four fits under ``vmap`` ran at 0.69-0.92× the speed of four in a row), and
        after a fit that ends ``interrupted`` no other is started; on CUDA they run together
        (:func:`archlab.fitting.fit_many`), where one small fit leaves the device idle.

    Returns
    -------
    (Tensor, list of FitResult)
        The mean of the fits' :attr:`~archlab.fitting.FitResult.restored` and the fits, in seed order.

    References
    ----------
    .. [1] Z. Cheng, M. Gadelha, S. Maji and D. Sheldon, "A Bayesian Perspective on the Deep Image Prior",
       CVPR 2019, §3-4.
    """
    import torch

    from archlab import fitting
    from archlab.engine import resolve_device

    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts: {restarts!r} is invalid; allowed: an integer ≥ 1")
    if restarts > 1 and resolve_device(kwargs.get("device", "auto")).type == "cuda":
        # one small fit leaves a GPU idle: the fits run as one vectorised computation
        results = fitting.fit_many(spec, task, observation, seeds=[seed + k for k in range(restarts)], **kwargs)
    else:
        results = []
        for k in range(restarts):
            results.append(fitting.fit(spec, task, observation, seed=seed + k, **kwargs))
            if results[-1].stop_reason == "interrupted":
                break
    return torch.stack([r.restored for r in results]).mean(dim=0), results


def restore(image: str | os.PathLike | None = None, *, observed: str | os.PathLike | None = None,
            task: str | tasks.Task = "denoise", arch: str | models.ArchSpec | None = None, size: int = DEFAULT_SIZE,
            seed: int = 0, device: str | torch.device = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
            restarts: int | None = None, **settings) -> Restoration:
    """Restore an image with a controlled deep image prior, stopped automatically: ``archlab restore`` as a call.

    Parameters
    ----------
    image : str or path, optional
        A clean image (file or built-in; default ``camera``), degraded here by ``task`` with ``seed``.
    observed : str or path, optional
        An already degraded image instead (then no PSNR is known).
    task : str or Task
        A task name (its default parameters, :data:`archlab.tasks.TASKS`) or a task.
    arch : str or ArchSpec, optional
        A preset, a spec file, a spec, ``"studied"``, ``"rules"`` or ``"auto"`` (:func:`setup`); default
        :func:`default_arch`.
    size : int
        Longer side a clean image is resized to first (0 keeps it).
    restarts : int, optional
        How many seeded fits to average (:func:`fit_restarts`); default :func:`default_restarts`.
    settings
        :class:`archlab.fitting.FitSettings` fields; by default :data:`DEFAULT_FIT` (or the studied configuration's)
        and ``stop="auto"``.

    Returns
    -------
    Restoration

    Examples
    --------
    >>> r = restore("camera", size=32, arch="faster-dip-32", iterations=20, eval_every=10, window=10, restarts=2)
    >>> r.restored.shape, r.psnr > 10, len(r.runs)
    (torch.Size([1, 1, 32, 32]), True, 2)
    """
    task = tasks.make_task(task) if isinstance(task, str) else task
    arch = default_arch(task) if arch is None else arch
    spec, base, _, prepared = configure(arch, task, image, observed=observed, size=size, seed=seed,
                                        max_pixels=max_pixels)
    restarts = default_restarts(task, arch) if restarts is None else restarts
    restored, runs = fit_restarts(spec, task, prepared.observation, restarts, seed=seed, device=device,
                                  progress=False, **{**base, **settings})
    return Restoration(restored, prepared.y, prepared.reference, runs[0], prepared.notes, tuple(runs))
