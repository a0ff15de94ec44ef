"""Networks from an :class:`~archlab.models.spec.ArchSpec`: the blocks, the kinds, the fixed random input, :func:`build`."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn as nn

from archlab import filters
from archlab.layers import LipschitzConv2d, MeanOnlyBatchNorm, Upsampler
from archlab.models.spec import ArchSpec, check_size, for_size, load_spec, per_level

def _conv(spec: ArchSpec, cin: int, cout: int, kernel: int, stride: int = 1, bounded: bool = True) -> LipschitzConv2d:
    """A convolution of ``spec`` (its bound λ unless ``bounded`` is False, padding, bias, initialisation)."""
    return LipschitzConv2d(cin, cout, kernel, lipschitz=spec.lipschitz if bounded else None,
                           method=spec.lipschitz_method, pad=spec.pad, bias=spec.bias, stride=stride,
                           detach_norm=spec.lipschitz_detach, init=spec.init)


def _norm(spec: ArchSpec, channels: int) -> nn.Module:
    """The normalisation of ``spec``: batch norm, mean-only batch norm (paper 000 eq. 5) or none."""
    if spec.norm == "batch":
        return nn.BatchNorm2d(channels)
    return MeanOnlyBatchNorm(channels) if spec.norm == "mean_only" else nn.Identity()


def _act(spec: ArchSpec) -> nn.Module:
    """The activation of ``spec``: LeakyReLU(``leak``) or ReLU."""
    return nn.LeakyReLU(spec.leak) if spec.act == "leaky_relu" else nn.ReLU()


class _Block(nn.Sequential):
    """conv → norm → activation (paper 000 eq. 5 order: convolution, normalisation, activation)."""

    def __init__(self, spec: ArchSpec, cin: int, cout: int, kernel: int | None = None, stride: int = 1):
        conv = _conv(spec, cin, cout, spec.kernel if kernel is None else kernel, stride)
        super().__init__(conv, _norm(spec, cout), _act(spec))


class _Concat(nn.Module):
    """Run branches on one input and concatenate along channels (Ulyanov's ``Concat``)."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def _upsampler(spec: ArchSpec, channels: int, level: int) -> nn.Module:
    name = per_level(spec.upsampler, spec.depth, "upsampler")[level]
    if isinstance(name, Mapping):  # a filter specification: the spec's factor unless it names one
        name = filters.Filter.from_dict({"factor": spec.factor, **name})
    return Upsampler(channels, name, factor=spec.factor, padding=spec.upsampler_padding, gain=spec.upsampler_gain)


def _downsampler(spec: ArchSpec, cin: int, cout: int) -> nn.Module:
    if spec.downsample == "stride":
        return _Block(spec, cin, cout, stride=spec.factor)
    pool = nn.AvgPool2d(spec.factor) if spec.downsample == "avg" else nn.MaxPool2d(spec.factor)
    return nn.Sequential(pool, _Block(spec, cin, cout))


def _hourglass(spec: ArchSpec, out_channels: int) -> nn.Module:
    """Ulyanov et al.'s ``skip`` network, level by level from the full-resolution end."""
    widths = per_level(spec.width, spec.depth, "width")
    skips = per_level(spec.skip, spec.depth, "skip")

    def level(i: int, cin: int) -> nn.Module:
        deeper = [_downsampler(spec, cin, widths[i]), _Block(spec, widths[i], widths[i])]
        if i + 1 < spec.depth:
            deeper.append(level(i + 1, widths[i]))
            k = widths[i + 1]
        else:
            k = widths[i]
        deeper.append(_upsampler(spec, k, i))
        deeper = nn.Sequential(*deeper)
        if skips[i]:
            body = _Concat(_Block(spec, cin, skips[i], kernel=1), deeper)
        else:
            body = deeper
        return nn.Sequential(body, _norm(spec, skips[i] + k), _Block(spec, skips[i] + k, widths[i]), _Block(spec, widths[i], widths[i], kernel=1))

    return nn.Sequential(level(0, spec.input_depth), _output(spec, widths[0], out_channels))


def _output(spec: ArchSpec, cin: int, out_channels: int) -> nn.Module:
    """The final 1×1 projection to the image's channels (bounded only with ``bound_output``), and a sigmoid."""
    conv = _conv(spec, cin, out_channels, 1, bounded=spec.bound_output)
    return nn.Sequential(conv, nn.Sigmoid()) if spec.sigmoid else conv


def _decoder(spec: ArchSpec, out_channels: int) -> nn.Module:
    """Decoder / ConvNet (paper 000 Fig. 2), ConvDecoder / MLP decoder / Deep Decoder (paper 004 §4)."""
    widths = per_level(spec.width, spec.depth, "width")
    layers, cin = [], spec.input_depth
    kernel = 1 if spec.kind in ("mlp_decoder", "deep_decoder") else spec.kernel
    for _ in range(spec.stem):  # paper 000's decoder: two blocks at the input's size (its code's first unetConv2)
        layers.append(_Block(spec, cin, widths[-1], kernel=kernel))
        cin = widths[-1]
    # Levels are listed from the full-resolution end; a decoder runs from the coarsest level up.
    for i in reversed(range(spec.depth)):
        if spec.kind == "deep_decoder":
            # [1×1 conv, upsample, act, norm] (Heckel & Hand)
            conv = _conv(spec, cin, widths[i], 1)
            layers += [conv, *([_upsampler(spec, widths[i], i)] if i else []), _act(spec), _norm(spec, widths[i])]
        elif spec.kind in ("conv_decoder", "mlp_decoder"):
            # [upsample, conv, act, norm] (Darestani & Heckel)
            conv = _conv(spec, cin, widths[i], kernel)
            layers += [*([_upsampler(spec, cin, i)] if i else []), conv, _act(spec), _norm(spec, widths[i])]
        else:
            if spec.kind == "decoder":
                layers.append(_upsampler(spec, cin, i))
            layers += [_Block(spec, cin, widths[i]), _Block(spec, widths[i], widths[i])]
        cin = widths[i]
    layers.append(_output(spec, cin, out_channels))
    return nn.Sequential(*layers)


def make_input(spec: ArchSpec, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """The fixed network input: ``input_depth`` channels at ``size / spec.scale``, seeded.

    ``uniform``: U(0, 1)·scale (Ulyanov's ``get_noise('u')``); ``normal``: N(0, 1)·scale;
    ``fourier``: u ~ U(0, 1)·scale on half the channels, then sin 2πu and cos 2πu (paper 000's
    code, ``get_noise('fourier', var=scale)``); ``meshgrid``: two coordinate channels in [0, 1]
    (Ulyanov's ``meshgrid`` input).
    """
    h, w = size[0] // spec.scale, size[1] // spec.scale
    generator = torch.Generator().manual_seed(seed)
    shape = (1, spec.input_depth, h, w)
    if spec.input_noise == "uniform":
        return torch.rand(shape, generator=generator) * spec.input_scale
    if spec.input_noise == "normal":
        return torch.randn(shape, generator=generator) * spec.input_scale
    if spec.input_noise == "fourier":
        phase = 2 * math.pi * spec.input_scale * torch.rand((1, spec.input_depth // 2, h, w), generator=generator)
        return torch.cat([phase.sin(), phase.cos()], dim=1)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    grid = torch.stack([xs, ys])[None]
    return grid.repeat(1, (spec.input_depth + 1) // 2, 1, 1)[:, : spec.input_depth] * spec.input_scale


def build(spec: ArchSpec | str, out_channels: int, out_size: tuple[int, int], seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Build the network and its fixed input for an output of ``out_channels × out_size``.

    The same ``seed`` gives the same initial weights and the same input. Returns
    ``(module, input)`` with ``module(input)`` of shape ``(1, out_channels, *out_size)``.
    """
    spec = for_size(load_spec(spec), tuple(out_size))
    check_size(spec, tuple(out_size))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _hourglass(spec, out_channels) if spec.kind == "hourglass" else _decoder(spec, out_channels)
    return net, make_input(spec, tuple(out_size), seed)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
