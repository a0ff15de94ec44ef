"""Every preset against the module of the code it names, restated here in plain torch.nn.

Each reference below restates, in its own words, what the papers' released code computes (the
repository and file are cited on each). A test builds the preset with :func:`archlab.models.build`,
gives its parameters random values (so that BN affines, mean-only biases and the Lipschitz bound all
act), copies them into the restatement in module order (after checking the shapes) and compares the
outputs in train mode, as a DIP fit runs: in float32, as fitted, and in float64 with the gradients.
Two more tests per preset check the initial weights against the code's initialisation and that the
upsampler's border mode is visible (a preset built with reflected borders gives another output).
``controlled-64`` is archlab's own design and has no code to compare with.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from archlab import models
from archlab.layers import LipschitzConv2d, MeanOnlyBatchNorm

SIZE = (64, 96)  # non-square, so a transposed axis shows; 64 is the least a 5- or 6-level network allows
OUT = 3


# --- Ulyanov et al.: DmitryUlyanov/deep-image-prior, models/skip.py (`skip`) and models/common.py ---------------

def _ulyanov_conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    """common.conv with pad='reflection': mirror (k-1)/2 pixels, then an unpadded convolution (torch init)."""
    return nn.Sequential(nn.ReflectionPad2d((k - 1) // 2), nn.Conv2d(cin, cout, k, stride))


class _UlyanovLevel(nn.Module):
    """One scale of `skip`: skip path ‖ (stride-2 conv, conv, deeper scales, ×2 upsampling), then
    BN, a 3×3 and a 1×1 conv (need1x1_up). Every conv is followed by BN and LeakyReLU(0.2)."""

    def __init__(self, cin: int, widths: list[int], skips: list[int], level: int):
        super().__init__()
        w, s = widths[level], skips[level]

        def bn_act(c):
            return [nn.BatchNorm2d(c), nn.LeakyReLU(0.2)]

        self.skip = nn.Sequential(_ulyanov_conv(cin, s, 1), *bn_act(s)) if s else None
        self.down = nn.Sequential(_ulyanov_conv(cin, w, 3, stride=2), *bn_act(w), _ulyanov_conv(w, w, 3), *bn_act(w))
        last = level == len(widths) - 1
        self.inner = None if last else _UlyanovLevel(w, widths, skips, level + 1)
        k = w if last else widths[level + 1]
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.merge = nn.Sequential(nn.BatchNorm2d(s + k), _ulyanov_conv(s + k, w, 3), *bn_act(w),
                                   _ulyanov_conv(w, w, 1), *bn_act(w))

    def forward(self, x):
        deep = self.down(x)
        if self.inner is not None:
            deep = self.inner(deep)
        deep = self.up(deep)
        return self.merge(deep if self.skip is None else torch.cat([self.skip(x), deep], dim=1))


def ulyanov_skip(cin: int, cout: int, width: int, levels: int, skip: int = 4) -> nn.Module:
    """`skip(cin, cout, [width]*levels, [width]*levels, [skip]*levels, upsample_mode='bilinear',
    pad='reflection', act_fun='LeakyReLU', need_sigmoid=True)`: the levels, a 1×1 output conv, sigmoid."""
    return nn.Sequential(_UlyanovLevel(cin, [width] * levels, [skip] * levels, 0),
                         _ulyanov_conv(width, cout, 1), nn.Sigmoid())


# --- Shi et al. (paper 000): shizenglin/Measure-and-Control-Spectral-Bias, code/models/{decoder,common}.py ------

class _ShiConv(nn.Module):
    """common.conv: reflection pad, a conv initialised kaiming_uniform_(a=0, fan_in), wrapped (λ > 0) in
    SpectralNorm, which divides the weight by max(1, σ₁/λ) with σ₁ the top singular value of the weight
    as an (out, in·k·k) matrix. The code takes σ₁ of w.data (a constant for autograd); ``detach=False`` is
    the paper's text, where the quotient is differentiated in full."""

    def __init__(self, cin: int, cout: int, k: int, lam: float, detach: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k)
        nn.init.kaiming_uniform_(self.conv.weight, a=0, mode="fan_in")
        self.pad, self.lam, self.detach = (k - 1) // 2, lam, detach

    def forward(self, x):
        w = self.conv.weight
        if self.lam > 0:
            matrix = w.reshape(w.shape[0], -1)
            sigma = torch.linalg.svdvals(matrix.detach() if self.detach else matrix)[0]
            w = w / torch.clamp(sigma / self.lam, min=1.0)
        if self.pad:
            x = F.pad(x, [self.pad] * 4, mode="reflect")
        return F.conv2d(x, w, self.conv.bias)


class _ShiMeanOnlyBN(nn.Module):
    """common.MeanOnlyBatchNorm: subtract each sample's per-channel spatial mean, add a learnt bias (zeros)."""

    def __init__(self, c: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return x - x.mean(dim=(2, 3), keepdim=True) + self.bias.view(1, -1, 1, 1)


class _ShiGaussianUp(nn.Module):
    """common.gaussian: a fixed depthwise transposed conv (5×5, stride 2, padding 2, output_padding 1) whose
    kernel is exp(-(di² + dj²)/2σ²) at di, dj ∈ {-1, -½, 0, ½, 1} input pixels, normalised to sum 1."""

    def __init__(self, c: int, sigma: float):
        super().__init__()
        d = (np.arange(1, 6) - 3.0) / 2.0
        kernel = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma**2))
        kernel /= kernel.sum()
        self.register_buffer("kernel", torch.from_numpy(kernel).float().expand(c, 1, 5, 5).clone())

    def forward(self, x):
        return F.conv_transpose2d(x, self.kernel, stride=2, padding=2, output_padding=1, groups=x.shape[1])


def shi_decoder(cin: int, cout: int, lam: float, stem: bool = True, bound_output: bool = False,
                detach: bool = True) -> nn.Module:
    """decoder.decoder(upsample_mode='gaussian', pad='reflection', need_bias=True, need_sigmoid=True):
    unetConv2 (2 × [conv 3×3, mean-only BN, LeakyReLU()]) from cin to 128, then five unetUp (Gaussian ×2
    with σ = 0.1, 0.1, 0.1, 0.5, 0.5, then unetConv2), a 1×1 output conv (ln_lambda 0: free) and sigmoid.
    ``stem=False, bound_output=True, detach=False`` is paper 000's text (Fig. 2, eq. 4): no blocks before
    the first upsampler, every conv bounded, the bound differentiated."""

    def block(a, b):
        return [_ShiConv(a, b, 3, lam, detach), _ShiMeanOnlyBN(b), nn.LeakyReLU()]

    layers, c = [], cin
    if stem:
        layers += block(c, 128) + block(128, 128)
        c = 128
    for sigma in (0.1, 0.1, 0.1, 0.5, 0.5):
        layers += [_ShiGaussianUp(c, sigma)] + block(c, 128) + block(128, 128)
        c = 128
    layers += [_ShiConv(128, cout, 1, lam if bound_output else 0.0, detach), nn.Sigmoid()]
    return nn.Sequential(*layers)


# --- ConvDecoder (Darestani & Heckel): YilinLiu97/FasterDIP-devil-in-upsampling, DIP-Recon/core/models/ -------
# light_cnn.py `ConvDecoder` (model_type "ConvDecoder"); ConvDecoder.py ("ConvDecoder_LPF") is the same with each
# upsampler moved after its convolution, for paper 004's zero-insertion filters.

def conv_decoder(num_layers: int, channels: int, cout: int, out_size, in_size, mode: str = "bilinear") -> nn.Module:
    """(num_layers − 1) × [Upsample(to the next hidden size), conv 3×3 zero-padded, ReLU, BN], then
    [conv 3×3, ReLU, BN] at the output size and a 1×1 conv; need_sigmoid=False. The hidden sizes grow
    geometrically from in_size to out_size: ceil(in · (out/in)^(n/(num_layers−1))), the last one out_size."""
    ratio = [(o / i) ** (1.0 / (num_layers - 1)) for o, i in zip(out_size, in_size)]
    sizes = [tuple(int(np.ceil(r**n * i)) for r, i in zip(ratio, in_size)) for n in range(1, num_layers - 1)]
    sizes.append(tuple(out_size))
    layers = []
    for size in sizes:
        layers += [nn.Upsample(size=size, mode=mode), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                   nn.BatchNorm2d(channels)]
    layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(channels),
               nn.Conv2d(channels, cout, 1)]
    return nn.Sequential(*layers)


# --- Deep Decoder (Heckel & Hand): the same repository, DIP-Recon/core/models/DD.py (`decodernw`) ---------------

def deep_decoder(cout: int, channels: list[int]) -> nn.Module:
    """decodernw(cout, channels) with its defaults (upsample_first, BN after the activation, ReLU, bilinear,
    sigmoid): the list is extended by two copies of its last width; every step but the last is
    [1×1 conv without bias, ×2 bilinear, ReLU, BN], the last one has no upsampler; then a 1×1 output conv
    without bias and sigmoid."""
    widths = list(channels) + [channels[-1]] * 2
    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Conv2d(widths[i], widths[i + 1], 1, bias=False))
        if i < len(widths) - 2:
            layers.append(nn.Upsample(scale_factor=2, mode="bilinear"))
        layers += [nn.ReLU(), nn.BatchNorm2d(widths[i + 1])]
    layers += [nn.Conv2d(widths[-1], cout, 1, bias=False), nn.Sigmoid()]
    return nn.Sequential(*layers)


# --- the presets and the code each names ----------------------------------------------------------------------

def _lam(name):
    return models.lipschitz_for_size(models.preset(name), SIZE)


REFERENCES = {
    "ulyanov-dip": lambda: ulyanov_skip(32, OUT, 128, 5),
    **{f"faster-dip-{w}": (lambda w=w: ulyanov_skip(32, OUT, w, 2)) for w in (32, 64, 128)},
    "shi-decoder": lambda: shi_decoder(32, OUT, _lam("shi-decoder")),
    "shi-decoder-text": lambda: shi_decoder(32, OUT, 2.0, stem=False, bound_output=True, detach=False),
    "convdecoder": lambda: conv_decoder(6, 128, OUT, SIZE, (SIZE[0] // 32, SIZE[1] // 32)),
    "deep-decoder": lambda: deep_decoder(OUT, [128] * 5),
}
#: The gain of each code's He-uniform initialisation, bound = gain·sqrt(3 / fan_in): PyTorch's default
#: (kaiming_uniform_ with a = √5) for the codes built on Ulyanov et al.'s, a = 0 for paper 000's.
INIT_GAIN = {name: nn.init.calculate_gain("leaky_relu", 0 if name.startswith("shi") else math.sqrt(5))
             for name in REFERENCES}


def test_every_preset_but_controlled_64_has_a_reference():
    assert set(REFERENCES) == set(models.PRESETS) - {"controlled-64"}


def _randomise(net: nn.Module, seed: int = 1) -> None:
    """Scale the weights ×1.5 (so λ acts) and move the biases and norm affines off their initial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                p.mul_(1.5)
            else:
                p.add_(0.2 * torch.randn(p.shape, generator=g))


def _copy(src: nn.Module, dst: nn.Module) -> None:
    a, b = list(src.parameters()), list(dst.parameters())
    assert [tuple(p.shape) for p in a] == [tuple(p.shape) for p in b]
    with torch.no_grad():
        for p, q in zip(a, b):
            q.copy_(p)


def _run(net: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output and parameter gradients of ⟨out, r⟩ in train mode (batch statistics), r fixed."""
    net.train()
    net.zero_grad()
    out = net(z)
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=out.dtype)
    (out * r).sum().backward()
    return out.detach(), [p.grad.clone() for p in net.parameters()]


def _pair(name: str, **changes):
    spec = models.preset(name).replace(**changes) if changes else name
    net, z = models.build(spec, OUT, SIZE, seed=0)
    _randomise(net)
    ref = REFERENCES[name]()
    _copy(net, ref)
    return net, ref, z


def _float32_atol(out_ref: torch.Tensor) -> float:
    """float32 rounding, which the batch norms amplify: 1e-4 of the output's range (measured ≤ 2.1e-5)."""
    return 1e-4 * max(1.0, out_ref.abs().max().item())


#: float64 tolerances: the output, and a gradient relative to the largest one. LipschitzConv2d takes ‖w‖ in
#: float32 whatever the dtype, so the bounded presets agree to ~1e-8 (the others to ~1e-14).
ATOL64, GRAD_RTOL64 = 1e-7, 2e-7


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_preset_equals_the_code_it_names(name):
    net, ref, z = _pair(name)
    with torch.no_grad():  # float32, as fitted
        out, out_ref = net.train()(z), ref.train()(z)
    assert out.shape == (1, OUT, *SIZE)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=_float32_atol(out_ref))
    # float64, where rounding no longer hides a difference, with the gradients
    out, grads = _run(net.double(), z.double())
    out_ref, grads_ref = _run(ref.double(), z.double())
    torch.testing.assert_close(out, out_ref, rtol=0, atol=ATOL64)
    scale = max(g.abs().max().item() for g in grads_ref)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=0, atol=GRAD_RTOL64 * scale)


def test_shi_decoder_gradient_sees_the_detached_norm():
    # The gradient check above tells the code's detached σ₁ from a differentiated one.
    net, _, z = _pair("shi-decoder")
    ref = shi_decoder(32, OUT, _lam("shi-decoder"), detach=False)
    _copy(net, ref)
    grads, grads_ref = _run(net.double(), z.double())[1], _run(ref.double(), z.double())[1]
    scale = max(g.abs().max().item() for g in grads_ref)
    assert max((g - h).abs().max().item() for g, h in zip(grads, grads_ref)) > 20 * GRAD_RTOL64 * scale


def _bounds(module: nn.Module):
    """(layer, sqrt(3 / fan_in), 1 / sqrt(fan_in)) per convolution: He-uniform bound at gain 1, bias bound."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, LipschitzConv2d)):
            fan_in = m.weight[0].numel()
            yield m, math.sqrt(3.0 / fan_in), 1.0 / math.sqrt(fan_in)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_initial_weights_follow_the_code(name):
    net, _ = models.build(name, OUT, SIZE, seed=0)
    ref = REFERENCES[name]()
    ours, theirs = list(_bounds(net)), list(_bounds(ref))
    assert len(ours) == len(theirs)
    gain = INIT_GAIN[name]
    for (conv, unit, bias_bound), (conv_ref, _, _) in zip(ours, theirs):
        w, bound = conv.weight.detach(), gain * unit
        assert w.abs().max() <= bound * (1 + 1e-6)
        if w.numel() >= 100:  # U(-b, b): the largest of ≥ 100 draws is below 0.9 b with odds < 3e-5
            assert w.abs().max() >= 0.9 * bound
        if w.numel() >= 10_000:  # the spread of U(-b, b), b / √3, and the reference's own initial spread
            assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
            assert w.std().item() == pytest.approx(conv_ref.weight.std().item(), rel=0.03)
        if conv.bias is not None:  # every code keeps PyTorch's bias: U(±1/√fan_in)
            assert conv.bias.abs().max() <= bias_bound * (1 + 1e-6)
        assert (conv.bias is None) == (conv_ref.bias is None)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
        if isinstance(m, MeanOnlyBatchNorm):
            assert not m.bias.any()


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_upsampler_border_is_the_codes(name):
    # The same weights with mirrored borders in every upsampler give another output, far outside the parity
    # test's tolerance, so that test fails unless the preset's border is the code's.
    spec = models.preset(name)
    assert spec.upsampler_padding != "reflect"
    net, ref, z = _pair(name)
    mirrored, _ = models.build(spec.replace(upsampler_padding="reflect"), OUT, SIZE, seed=0)
    _copy(net, mirrored)
    with torch.no_grad():
        out_ref = ref(z)
        diff = (mirrored(z) - out_ref).abs()[0].amax(0)
    assert diff.max() > 10 * _float32_atol(out_ref)
    assert diff[0].max() > 0 and diff[-1].max() > 0 and diff[:, 0].max() > 0 and diff[:, -1].max() > 0
