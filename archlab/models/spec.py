"""Architecture specs: :class:`ArchSpec`, the presets as their papers' code builds them, and λ for the
image size. Plain data, without torch; :mod:`archlab.models.networks` builds the modules."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from archlab import filters
from archlab.vocabulary import CONV_PADDINGS, INITS, LIPSCHITZ_METHODS, PADDINGS

KINDS = ("hourglass", "decoder", "convnet", "conv_decoder", "mlp_decoder", "deep_decoder")
#: Kinds built layer by layer as their codes are: the last layer runs at full resolution, without upsampler.
LAYERED = ("conv_decoder", "mlp_decoder", "deep_decoder")
NORMS = ("batch", "mean_only", "none")
ACTS = ("leaky_relu", "relu")
DOWNSAMPLES = ("stride", "avg", "max")
NOISES = ("uniform", "normal", "fourier", "meshgrid")


def per_level(value, depth: int, name: str) -> tuple:
    """``value`` as one value per level (a single value repeated ``depth`` times); the error names ``name``."""
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * depth
    if len(values) != depth:
        raise ValueError(f"{name}: {len(values)} values given for depth {depth}; give one value or one per level")
    return values


@dataclass(frozen=True)
class ArchSpec:
    """A DIP architecture, frozen and serialisable (dict / JSON / TOML).

    ``width``, ``skip`` and ``upsampler`` take one value or one per level (level 0 is
    the full-resolution end). ``upsampler`` is a filter catalogue name or TOML path, a filter
    specification in the catalogue's own format (``{"kind": "gaussian", "sigma": 0.7}``; ``factor``
    defaults to the spec's), ``"transposed"`` (learnt) or ``"none"`` (only for ``convnet``). ``lipschitz`` = λ
    bounds every convolution by ``w / max(1, ‖w‖/λ)`` (paper 000 §4.1) with
    ``lipschitz_method``; ``lipschitz_detach`` treats ‖w‖ as a constant in the backward
    pass, as paper 000's code does (its SVD runs on ``w.data``), so the gradient reaches w
    only through the numerator; ``bound_output`` says whether the final 1×1 projection is
    bounded too (paper 000's code leaves it free). ``upsampler_gain`` scales each
    upsampler (paper 000's Gaussian upsampling has 2-D gain 1/s², REFERENCE §1);
    ``lipschitz = "auto"`` takes λ from :func:`lipschitz_for_size` when the network is built
    for an image size. ``upsampler_padding`` is how the upsampler extends the image at its border (``replicate``:
    ``nn.Upsample``, which clamps, as in Ulyanov et al.'s code; ``zeros``: a transposed
    convolution, as paper 000's Gaussian upsampler). ``init`` is the convolutions' initial
    weights (:class:`~archlab.layers.LipschitzConv2d`: ``torch`` for the codes built on
    Ulyanov et al.'s, ``kaiming`` for paper 000's). The input
    is ``input_depth`` channels of noise (``input_noise``, scaled by ``input_scale``) at
    the output size divided by :attr:`scale` for decoders (``factor**depth``; ``factor**(depth - 1)``
    for the layered ones); a decoder first runs
    ``stem`` blocks at that input size (paper 000's decoder: 2) before its first upsampler.

    Examples
    --------
    >>> spec = ArchSpec(kind="decoder", depth=3, width=32, upsampler={"kind": "gaussian", "sigma": 0.7})
    >>> spec.replace(width=(64, 32, 32)).width, spec.multiple
    ((64, 32, 32), 8)
    >>> ArchSpec.from_dict(spec.to_dict()) == spec
    True
    """

    kind: str = "hourglass"
    depth: int = 2
    width: int | tuple[int, ...] = 64
    skip: int | tuple[int, ...] = 4
    upsampler: str | Mapping | tuple[str | Mapping, ...] = "bilinear"
    factor: int = 2
    lipschitz: float | str | None = None
    lipschitz_method: str = "svd"
    lipschitz_detach: bool = False
    bound_output: bool = True
    norm: str = "batch"
    act: str = "leaky_relu"
    leak: float = 0.2
    kernel: int = 3
    pad: str = "reflect"
    bias: bool = True
    input_depth: int = 32
    input_noise: str = "uniform"
    input_scale: float = 0.1
    stem: int = 0
    downsample: str = "stride"
    upsampler_gain: float = 1.0
    upsampler_padding: str = "reflect"
    init: str = "kaiming-leaky"
    sigmoid: bool = True

    def __post_init__(self):
        def check(name, ok, allowed):
            if not ok:
                raise ValueError(f"arch.{name}: {getattr(self, name)!r} is invalid; allowed: {allowed}")

        check("kind", self.kind in KINDS, ", ".join(KINDS))
        check("depth", isinstance(self.depth, int) and 1 <= self.depth <= 10, "an integer 1..10")
        for name in ("width", "skip", "upsampler"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
            per_level(getattr(self, name), self.depth, f"arch.{name}")
        check("width", all(isinstance(w, int) and w >= 1 for w in per_level(self.width, self.depth, "width")),
              "positive integers")
        check("skip", all(isinstance(s, int) and s >= 0 for s in per_level(self.skip, self.depth, "skip")),
              "integers ≥ 0")
        check("factor", isinstance(self.factor, int) and self.factor >= 2, "an integer ≥ 2")
        check("lipschitz", self.lipschitz is None or self.lipschitz == "auto"
              or (isinstance(self.lipschitz, (int, float)) and not isinstance(self.lipschitz, bool)
                  and self.lipschitz > 0), "a number > 0, auto (chosen for the image size), or none")
        check("lipschitz_method", self.lipschitz_method in LIPSCHITZ_METHODS, ", ".join(LIPSCHITZ_METHODS))
        check("norm", self.norm in NORMS, ", ".join(NORMS))
        check("act", self.act in ACTS, ", ".join(ACTS))
        check("leak", 0 <= self.leak < 1, "0 ≤ leak < 1")
        check("kernel", isinstance(self.kernel, int) and self.kernel >= 1 and self.kernel % 2 == 1, "an odd integer ≥ 1")
        if self.pad == "zero":  # the name of spec files written before "zeros" (PyTorch's) was the only one
            object.__setattr__(self, "pad", "zeros")
        check("pad", self.pad in CONV_PADDINGS, ", ".join(CONV_PADDINGS))
        check("input_depth", isinstance(self.input_depth, int) and self.input_depth >= 1, "an integer ≥ 1")
        check("input_noise", self.input_noise in NOISES, ", ".join(NOISES))
        check("input_depth", self.input_noise != "fourier" or self.input_depth % 2 == 0,
              "an even integer for fourier input (sin and cos pairs)")
        check("stem", isinstance(self.stem, int) and not isinstance(self.stem, bool) and 0 <= self.stem <= 8
              and (self.stem == 0 or self.kind != "hourglass"), "an integer 0..8 (0 for hourglass)")
        for name in ("lipschitz_detach", "bound_output", "bias", "sigmoid"):
            check(name, isinstance(getattr(self, name), bool), "true or false")
        check("input_scale", self.input_scale > 0, "a number > 0")
        check("downsample", self.downsample in DOWNSAMPLES, ", ".join(DOWNSAMPLES))
        check("upsampler_gain", self.upsampler_gain > 0, "a number > 0")
        check("upsampler_padding", self.upsampler_padding in PADDINGS, ", ".join(PADDINGS))
        check("init", self.init in INITS, ", ".join(INITS))
        ups = per_level(self.upsampler, self.depth, "upsampler")
        names = [u for u in ups if not isinstance(u, Mapping)]
        check("upsampler", self.kind == "convnet" or "none" not in names,
              "a catalogue name, a filter TOML or specification, 'transposed' ('none' only for convnet)")
        for spec in (u for u in ups if isinstance(u, Mapping)):
            try:
                filters.Filter.from_dict({"factor": self.factor, **spec})
            except ValueError as exc:
                raise ValueError(f"arch.upsampler: filter specification {dict(spec)}: {exc}") from None
        if any(u not in ("none", "transposed") and not u.endswith(".toml") and "/" not in u for u in names):
            catalogue = filters.names()
            check("upsampler", all(u in ("none", "transposed") or u in catalogue or u.endswith(".toml") or "/" in u
                                   for u in names),
                  f"{', '.join(catalogue)}, transposed, none, a filter .toml path or a specification table")

    @property
    def scale(self) -> int:
        """How much smaller the input is than the output: ``factor**depth``, ``factor**(depth - 1)`` for the
        :data:`LAYERED` decoders (no upsampler in the last layer), 1 for hourglass and convnet."""
        if self.kind in ("hourglass", "convnet"):
            return 1
        return self.factor ** (self.depth - 1 if self.kind in LAYERED else self.depth)

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this (``factor**depth`` for hourglass, else :attr:`scale`)."""
        return self.factor**self.depth if self.kind == "hourglass" else self.scale

    def to_dict(self) -> dict:
        """Plain dict (tuples as lists, filter specifications as dicts, ``lipschitz=None`` kept) for JSON and TOML."""
        def plain(value):
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return dict(value) if isinstance(value, Mapping) else value

        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "ArchSpec":
        """Inverse of :meth:`to_dict`; an unknown key raises ``ValueError`` naming it."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"arch: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
        data = dict(data)
        if data.get("lipschitz") in ("none", "None"):
            data["lipschitz"] = None
        return cls(**data)

    def replace(self, **changes) -> "ArchSpec":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_toml(self) -> str:
        """TOML text (``lipschitz = "none"`` for no bound, as TOML has no null; a filter specification as an
        inline table)."""
        return "\n".join(f"{key} = {_toml_value('none' if value is None else value)}"
                         for key, value in self.to_dict().items()) + "\n"


def _toml_value(value) -> str:
    """A TOML value: booleans lower-case, strings and numbers as JSON writes them, lists, inline tables."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key} = {_toml_value(v)}" for key, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


# Paper 000 (Shi et al.): Decoder as its text describes it - λ = 2 (SVD) on every convolution, the norm
# differentiable as eq. 4 is written, mean-only BN, LeakyReLU(0.01) - with the Gaussian σ per level of its code
# (0.1, 0.1, 0.1, 0.5, 0.5 from the coarsest upsampling; levels here list the finest first) and the code's 2-D
# upsampler gain 1/s² (REFERENCE §1), which the λ = 2 convolutions offset. As in the code, the convolutions start
# He-uniform (a = 0) and the Gaussian upsampler is a transposed convolution, so zeros lie beyond the border.
_SHI_TEXT = ArchSpec(kind="decoder", depth=5, width=128, skip=0,
                     upsampler=("gauss-0.5", "gauss-0.5", "gauss-0.1", "gauss-0.1", "gauss-0.1"),
                     lipschitz=2.0, norm="mean_only", leak=0.01, upsampler_gain=0.25,
                     init="kaiming", upsampler_padding="zeros")

#: What Ulyanov et al.'s code (and paper 004's and Heckel's, built on it) does that archlab's defaults do not:
#: PyTorch's default initialisation, and ``nn.Upsample``, which clamps at the border.
_TORCH_CODE = {"init": "torch", "upsampler_padding": "replicate"}

PRESETS: dict[str, ArchSpec] = {
    # Ulyanov et al. 2018, denoising: 5 levels × 128, 4 skip channels, bilinear, BN + LeakyReLU(0.2).
    "ulyanov-dip": ArchSpec(kind="hourglass", depth=5, width=128, skip=4, upsampler="bilinear", **_TORCH_CODE),
    # The same decoder as paper 000's released code builds it: two blocks before the first upsampler, a free 1×1
    # output projection and the norm detached from the gradient. The input is the text's noise, U(0, 0.1), not
    # the code's sin/cos "fourier" input, ten times stronger, which overfits at 128 px.
    # λ follows the image size (lipschitz_for_size): 1.4 at 64 px, 2 at 128 px, 2.6 from 256 px up.
    "shi-decoder": _SHI_TEXT.replace(stem=2, bound_output=False, lipschitz_detach=True, lipschitz="auto"),
    "shi-decoder-text": _SHI_TEXT,
    # ConvDecoder (Darestani & Heckel; paper 004's light_cnn.py, num_layers = 6): 6 × [upsample, conv 3×3 128
    # zero-padded, ReLU, BN], the last layer at full size without upsampling, + 1×1 output.
    "convdecoder": ArchSpec(kind="conv_decoder", depth=6, width=128, skip=0, act="relu", pad="zeros", input_depth=128,
                            input_noise="normal", input_scale=1.0, sigmoid=False, **_TORCH_CODE),
    # Deep Decoder (Heckel & Hand; decodernw with [128] * 5, d = 6): 6 × [1×1 conv 128, bilinear, ReLU, BN], the
    # last without upsampling, no conv bias.
    "deep-decoder": ArchSpec(kind="deep_decoder", depth=6, width=128, skip=0, kernel=1, act="relu", bias=False,
                             input_depth=128, input_scale=0.1, **_TORCH_CODE),
    # Paper 004 (Liu et al.): 2-level hourglass of width 32 / 64 / 128.
    **{f"faster-dip-{w}": ArchSpec(kind="hourglass", depth=2, width=w, skip=4, upsampler="bilinear", **_TORCH_CODE)
       for w in (32, 64, 128)},
    # archlab's default: a small controlled decoder (paper 000 §4 with 3 levels of width 64, λ = 2, mean-only BN,
    # bilinear). An hourglass with skips under the same λ still overfits the noise: the skips carry it past the
    # bound. Under λ = 2 and mean-only BN every block passes less than it receives, so a deeper
    # decoder or the papers' U(0, 0.1) input starts from an almost constant output and can stall there (4 levels:
    # JPEG on lena stuck at the mean); 3 levels with a U(0, 1) input start learning at once.
    "controlled-64": ArchSpec(kind="decoder", depth=3, width=64, skip=0, upsampler="bilinear", lipschitz=2.0,
                              norm="mean_only", leak=0.01, input_scale=1.0),
}


def preset(name: str) -> ArchSpec:
    """A named preset (see :data:`PRESETS`).

    Parameters
    ----------
    name : str
        One of :data:`PRESETS` (``ulyanov-dip``, ``shi-decoder``, ``controlled-64``, ...).

    Returns
    -------
    ArchSpec

    Examples
    --------
    >>> spec = preset("ulyanov-dip")
    >>> spec.depth, spec.width, spec.upsampler, spec.init
    (5, 128, 'bilinear', 'torch')
    >>> spec.replace(depth=3).multiple
    8
    """
    if name not in PRESETS:
        raise ValueError(f"arch: unknown preset {name!r}; presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def load_spec(source: str | Path | dict | ArchSpec) -> ArchSpec:
    """An ``ArchSpec`` from a preset name, a ``.toml``/``.json`` file, a dict, or a spec."""
    if isinstance(source, ArchSpec):
        return source
    if isinstance(source, dict):
        return ArchSpec.from_dict(source)
    path = Path(source)
    if path.suffix in (".toml", ".json"):
        if not path.is_file():
            raise ValueError(f"arch: file {path} not found")
        text = path.read_text()
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"arch: cannot parse {path}: {exc}") from exc
        return ArchSpec.from_dict(data.get("arch", data))
    return preset(str(source))


def check_size(spec: ArchSpec, size: tuple[int, int]) -> None:
    """Raise ``ValueError`` unless both sides are multiples of ``spec.multiple`` and at least twice it.

    Twice, so the coarsest feature map has more than one pixel: a normalisation over a
    single value per channel is undefined (batch norm) or zero (mean-only).
    """
    h, w = size
    m = spec.multiple
    if h < 2 * m or w < 2 * m or h % m or w % m:
        raise ValueError(f"arch.depth: a depth-{spec.depth} {spec.kind} with factor {spec.factor} needs image sides "
                         f"that are multiples of {m} and at least {2 * m}; got {w}x{h} "
                         f"(use a smaller depth or another image size)")


#: Measured points of :func:`lipschitz_for_size`: (side of the decoder's input in pixels, λ).
LIPSCHITZ_BY_INPUT_SIDE = ((2, 1.4), (4, 2.0), (8, 2.6))


def lipschitz_for_size(spec: ArchSpec, size: tuple[int, int]) -> float:
    """λ at which a bounded decoder neither underfits nor decays, for an output of ``size``.

    What decides it is how few pixels feed the coarsest level: the side of the decoder's input,
    ``n = min(H, W) / spec.scale``. Paper 000's decoder (5 levels, input at H/32) at σ = 25 fits
    a 128-px image (n = 4) at λ = 2 without decay by 4,000 iterations, while a 64-px image (n = 2)
    overfits at λ = 2 and holds at λ = 1.4, in its code as in archlab (REFERENCE §5b;
    ``results/denoise-set9``, ``results/decoder-lambda``, whose READMEs give the numbers); at 1.4 smooth
    64-px images still rise after 3,000 iterations, so at 64 and 128 px the rule guards against decay, not
    slow fits. At 256 px (n = 8) λ = 2 underfits: on the four Set9 images it is still rising at 2,000
    iterations (mean 27.26 dB), where λ = 2.6 peaks at 480-1,960 and, stopped by the discrepancy rule on the
    moving average, keeps 28.58 dB (``results/decoder-lambda-256``); three of the four decay after their
    peak (0.9-3.2 dB by 2,000), so from 256 px up the rule relies on the automatic stop. Between the
    measured points of :data:`LIPSCHITZ_BY_INPUT_SIDE` λ is interpolated linearly in log₂ n and held
    constant outside them.

    Parameters
    ----------
    spec : ArchSpec
        The architecture (its :attr:`~ArchSpec.scale`).
    size : (int, int)
        Output height and width.

    Returns
    -------
    float
        λ for every bounded convolution.

    Examples
    --------
    >>> [lipschitz_for_size(preset("shi-decoder"), (side, side)) for side in (64, 128, 256)]
    [1.4, 2.0, 2.6]
    """
    side = max(1.0, min(size) / spec.scale)
    sides, lambdas = zip(*LIPSCHITZ_BY_INPUT_SIDE)
    return round(float(np.interp(math.log2(side), np.log2(sides), lambdas)), 4)


def for_size(spec: ArchSpec, size: tuple[int, int]) -> ArchSpec:
    """``spec`` with its size-dependent choices (``lipschitz = "auto"``) resolved for an output of ``size``."""
    return spec.replace(lipschitz=lipschitz_for_size(spec, size)) if spec.lipschitz == "auto" else spec
