"""Automatic stopping for the deep image prior: blur, sharpness, and the stop rules.

Paper 000 (Shi et al., IJCV 2022), §4.3, eq. 8, stops a fit when the ratio of the
output's blur to its sharpness, r = B / S, has stopped moving:

    Δr_t = | mean(r_{t-1} .. r_{t-n}) − mean(r_{t-n-1} .. r_{t-2n}) | < ε,   n = 100, ε = 0.01.

B is the no-reference blur of Crete et al. (2007) exactly as ``skimage.measure.blur_effect``
computes it; S is the maximum-local-variation sharpness of Bahrami & Kot (2014).

Wang et al. (TMLR 2023) stop at the minimum of the variance of the recent outputs, over a
window (:class:`WMVRule`, ES-WMV) or exponentially weighted (:class:`EMVRule`, ES-EMV); the
discrepancy principle (:class:`DiscrepancyRule`) stops when the data-fit residual reaches the
noise level, given or estimated by :func:`estimate_sigma`. :class:`EMA` is the bias-corrected
moving average of the outputs and :class:`DivergenceGuard` the backtracking of paper 000's code.

Every stop rule, for K runs at once, has the same small interface:

    flags = rule.update(iteration, value)   # bool (K,): runs that have stopped (a flag stays set)
    rule.stopped, rule.stop_iteration       # bool (K,), int64 (K,) (−1 while running)
    rule.detected_iteration                 # int64 (K,): the iteration whose output to keep (−1: none yet)
    rule.reset(); rule.to_dict()            # forget everything; settings and state as plain numbers

``value`` is what the rule watches: r (K,) for :class:`RatioRule`, the outputs (K, C, H, W)
for :class:`WMVRule` and :class:`EMVRule`, the residual (K,) for :class:`DiscrepancyRule`;
``iteration`` must increase from call to call. ``update`` is device-tensor work only, on the
input's device, with no host synchronisation; read the state (``to_dict``, ``.tolist()``,
``detected_output``) at evaluation points. :class:`DivergenceGuard` alone takes host scalars.
"""

from __future__ import annotations

import functools
import math
import numbers
import statistics
from typing import Literal

import torch
import torch.nn.functional as F

from archlab.images import LUMA

#: n of eq. 8, in iterations (paper 000: 100).
DEFAULT_WINDOW = 100
#: ε of eq. 8 (paper 000: 0.01).
DEFAULT_EPS = 0.01
#: ε of eq. 8 for each pair of measures (:data:`MEASURES`): the paper's 0.01 with its own measures; with archlab's
#: (scikit-image's blur, absolute MLV) Δr is 0.75-0.96× the paper's on the same outputs (median per run over fp32
#: fits of paper 000's decoder on Set9 ×¼, σ 25; ``benchmarks/ratio_eps.py``), and ε = 0.008 stops closest to
#: where the paper's rule at 0.01 stops (results/denoise-set9/README.md).
EPS_FOR_MEASURES = {"skimage": 0.008, "paper": DEFAULT_EPS}
#: Re-blurring box length of the Crete blur: 9, the 1×9 box of paper 000's code. With it Δr is
#: 0.88-1.02× the Δr of the paper's code along a sharpening trajectory (Set9 ×¼, Gaussian blur
#: σ 3 → 0) and 0.90-0.93× in small controlled-DIP fits (h_size 11: 0.76-0.91×, 0.82-0.86×),
#: so ε = 0.01 here acts like ε ≈ 0.011 there.
DEFAULT_H_SIZE = 9
#: Number of sorted MLV values kept by the sharpness (Bahrami & Kot's T).
DEFAULT_TOP = 1000
#: Decay η of the MLV rank weights exp(−η i).
DEFAULT_DECAY = 0.01

# scikit-image's rgb2gray weights (ITU-R BT.709), which blur_effect applies to colour input.
_BT709 = (0.2125, 0.7154, 0.0721)
# np.spacing(1.0): blur_effect's floor on the gradient magnitudes.
_EPSILON = 2.0**-52


def _check_image(x: torch.Tensor, name: str, min_size: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: x must be a (N, C, H, W) tensor with C in {{1, 3}}, got {shape}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"{name}: x must be at least {min_size}x{min_size} pixels, got {x.shape[-1]}x{x.shape[-2]}")


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


@functools.lru_cache(maxsize=16)
def _weights(weights: tuple[float, float, float], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(weights, device=device, dtype=dtype)


def _grey(x: torch.Tensor, weights: tuple[float, float, float]) -> torch.Tensor:
    """(N, 1, H, W) weighted sum of RGB, one contraction over the channels (weights cached per device)."""
    if x.shape[1] == 1:
        return x
    return torch.einsum("nchw,c->nhw", x, _weights(weights, x.device, x.dtype)).unsqueeze(1)


def _symmetric_pad(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """Pad like SciPy's ``mode="reflect"`` (d c b a | a b c d | d c b a), periodic for short axes."""
    n = x.shape[dim]
    if before <= n and after <= n:
        return torch.cat([x.narrow(dim, 0, before).flip(dim), x, x.narrow(dim, n - after, after).flip(dim)], dim)
    index = torch.arange(-before, n + after, device=x.device) % (2 * n)
    index = torch.where(index >= n, 2 * n - 1 - index, index)
    return x.index_select(dim, index)


def _box_sum(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """``size`` × ``scipy.ndimage.uniform_filter1d(x, size, axis=dim, mode="reflect")`` on (N, 1, H, W).

    Sums of shifted blocks, vectorised adds of views, by doubling: the sums of 1, 2, 4, ... consecutive
    entries along ``dim``, then the binary digits of ``size`` joined (``size`` = 9: four adds, not
    eight; a 1-channel ``avg_pool2d`` runs a scalar loop on CPU, 5-10× slower at 512×512).
    """
    padded = _symmetric_pad(x, dim, size // 2, size - 1 - size // 2)
    n = x.shape[dim]
    total, covered, block, width = None, 0, padded, 1
    while True:
        if size & width:
            part = block.narrow(dim, covered, n)
            total = part.clone() if total is None else total.add_(part)
            covered += width
        if 2 * width > size:
            return total
        length = block.shape[dim] - width
        block = block.narrow(dim, 0, length) + block.narrow(dim, width, length)
        width *= 2


def _sobel_abs(x: torch.Tensor, dim: int) -> torch.Tensor:
    """4·|``skimage.filters.sobel(x, axis=dim)``| on (N, 1, H, W), ``dim`` ∈ {−2, −1}: [1, 0, −1] along
    ``dim``, [1, 2, 1] across it, reflect border (the Sobel's 1/4 is left to the caller: the blur is a
    ratio of sums)."""
    across = -3 - dim
    # SciPy's reflect border repeats the edge pixel, which for a one-pixel pad is torch's replicate.
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    n, m = p.shape[dim] - 2, p.shape[across] - 2
    d = p.narrow(dim, 2, n) - p.narrow(dim, 0, n)
    s = d.narrow(across, 0, m) + d.narrow(across, 2, m)
    return s.add_(d.narrow(across, 1, m), alpha=2).abs_()


def blur_effect(x: torch.Tensor, h_size: int = DEFAULT_H_SIZE) -> torch.Tensor:
    """No-reference perceptual blur of Crete et al. (2007), as ``skimage.measure.blur_effect``.

    For each axis a: re-blur the grey image with a length-``h_size`` box along a
    (``uniform_filter1d``, reflect border), take absolute Sobel derivatives along a of the
    image (D) and of the re-blurred image (D_b), both floored at 2⁻⁵², and with
    V = max(0, D − D_b) and sums over the pixels [2:H−1, 2:W−1],

        B_a = | ΣD − ΣV | / ΣD,        B = max_a B_a.

    0 means sharp, 1 fully blurred (a constant image gives 1).

    Parameters
    ----------
    x : Tensor (N, C, H, W)
        Images in [0, 1], C = 1 or 3 (RGB is converted with scikit-image's ``rgb2gray``
        weights 0.2125, 0.7154, 0.0721), H, W >= 4.
    h_size : int
        Length of the re-blurring box (scikit-image's default is 11; paper 000's code uses 9).

    Returns
    -------
    Tensor (N,)
        The blur of each image, in ``x``'s dtype, on ``x``'s device.

    References
    ----------
    Crete, Dolmiere, Ladret, Nicolas, "The blur effect: perception and estimation with a new
    no-reference perceptual blur metric", Proc. SPIE 6492 (2007); paper 000, eq. 8.
    """
    _check_image(x, "blur_effect", 4)
    _check_positive_int(h_size, "blur_effect: h_size")
    grey = _grey(x, _BT709)
    height, width = grey.shape[-2:]
    per_axis = []
    # Both axes run on views of the same image (no transposed copy). D is kept at 4× and D_b at 4·h_size×
    # their value (the Sobel's 1/4 and the box's 1/h_size left out, D_b's h_size folded into V): B_a is a
    # ratio of sums, so it is unchanged. scikit-image's floor of D and D_b at 2⁻⁵² moves a sum by at most
    # its pixel count × 2⁻⁵² and is left out, except where it decides: an axis without any gradient
    # (ΣD = 0) has B_a = 1.
    for dim in (-2, -1):
        sharp = _sobel_abs(grey, dim)
        blurred = _sobel_abs(_box_sum(grey, h_size, dim), dim)
        variation = torch.sub(sharp, blurred, alpha=1 / h_size).clamp_min_(0)
        m1 = sharp[..., 2 : height - 1, 2 : width - 1].sum((1, 2, 3), dtype=torch.float64)
        m2 = variation[..., 2 : height - 1, 2 : width - 1].sum((1, 2, 3), dtype=torch.float64)
        per_axis.append(torch.where(m1 > 0, (m1 - m2).abs() / m1.clamp_min(_EPSILON), 1.0))
    return torch.stack(per_axis).amax(0).to(x.dtype)


def mlv_map(x: torch.Tensor) -> torch.Tensor:
    """Maximum local variation of Bahrami & Kot (2014): ψ(x_c) = max over the 8 neighbours of |x_nb − x_c|.

    Parameters
    ----------
    x : Tensor (N, C, H, W)
        Images in [0, 1], C = 1 or 3 (RGB is converted to BT.601 luma), H, W >= 3.

    Returns
    -------
    Tensor (N, H − 2, W − 2)
        The map on the interior pixels (those with all 8 neighbours).
    """
    _check_image(x, "mlv_map", 3)
    grey = _grey(x, LUMA)[:, 0]
    # max |x_nb − x_c| over the 3×3 block = max(max_block − x_c, x_c − min_block), the block's
    # max and min taken separably (rows of three, then three rows).
    triples = (grey[:, :, :-2], grey[:, :, 1:-1], grey[:, :, 2:])
    row_max = torch.maximum(torch.maximum(*triples[:2]), triples[2])
    row_min = torch.minimum(torch.minimum(*triples[:2]), triples[2])
    block_max = torch.maximum(torch.maximum(row_max[:, :-2], row_max[:, 1:-1]), row_max[:, 2:])
    block_min = torch.minimum(torch.minimum(row_min[:, :-2], row_min[:, 1:-1]), row_min[:, 2:])
    centre = grey[:, 1:-1, 1:-1]
    return torch.maximum(block_max - centre, centre - block_min)


def mlv_sharpness(x: torch.Tensor, top: int = DEFAULT_TOP, decay: float = DEFAULT_DECAY) -> torch.Tensor:
    """Maximum-local-variation sharpness of Bahrami & Kot (2014), as used by paper 000 §4.3.

    With ψ_1 >= ψ_2 >= ... the values of :func:`mlv_map` sorted in descending order and
    K = min(top, number of interior pixels),

        S = sqrt( (1/K) Σ_{i=1..K} (exp(−decay·i) ψ_i)² ),

    the root mean square of the rank-weighted largest local variations.

    Parameters
    ----------
    x : Tensor (N, C, H, W)
        Images in [0, 1], C = 1 or 3 (RGB is converted to BT.601 luma), H, W >= 3.
    top : int
        Number of largest local variations kept (T = 1000 in the paper's code).
    decay : float
        Rank-weight decay η >= 0 (0.01 in the paper's code).

    Returns
    -------
    Tensor (N,)
        The sharpness of each image (0 for a constant image).

    Notes
    -----
    Paper 000's code takes the signed max(x_nb − x_c) and drops the two largest values; the
    absolute differences of Bahrami & Kot used here give an S 8-21 % larger on Set9 ×¼ images.

    References
    ----------
    Bahrami, Kot, "A fast approach for no-reference image sharpness assessment based on
    maximum local variation", IEEE Signal Processing Letters 21(6):751-755 (2014).
    """
    _check_positive_int(top, "mlv_sharpness: top")
    if not (isinstance(decay, (int, float)) and math.isfinite(decay) and decay >= 0):
        raise ValueError(f"mlv_sharpness: decay must be a finite number >= 0, got {decay!r}")
    variation = mlv_map(x).flatten(1)
    k = min(top, variation.shape[1])
    largest = _largest(variation, k)
    ranks = torch.arange(1, k + 1, device=x.device, dtype=largest.dtype)
    weighted = largest * torch.exp(-decay * ranks)
    return weighted.square().mean(1).sqrt()


def _largest(values: torch.Tensor, k: int, chunk: int = 32) -> torch.Tensor:
    """The ``k`` largest of each row of ``values`` (N, M), descending: ``values.topk(k, dim=1).values``.

    Exact and 2-4× faster for M ≫ k: the rows are cut into chunks of ``chunk`` values and only the
    ``k`` chunks with the largest maxima are ranked. Every value above the k-th largest chunk maximum
    t lies in one of them (else k chunk maxima, hence k values, would exceed it), and they hold at
    least k values ≥ t, so their k largest values are the row's.
    """
    n = values.shape[1]
    if n < 4 * k * chunk:
        return values.topk(k, dim=1).values
    chunks = F.pad(values, (0, -n % chunk), value=-math.inf).view(values.shape[0], -1, chunk)
    best = chunks.amax(2).topk(k, dim=1).indices
    return chunks.gather(1, best.unsqueeze(-1).expand(-1, -1, chunk)).flatten(1).topk(k, dim=1).values


def blur_sharpness_ratio(
    x: torch.Tensor, h_size: int = DEFAULT_H_SIZE, top: int = DEFAULT_TOP, decay: float = DEFAULT_DECAY
) -> torch.Tensor:
    """The stopping statistic r = B / S of paper 000, eq. 8 (:func:`blur_effect` / :func:`mlv_sharpness`).

    Returns a Tensor (N,); a constant image has S = 0 and r = inf.
    """
    return blur_effect(x, h_size) / mlv_sharpness(x, top, decay)


#: Paper 000's code converts colour with these weights (``rgb2gray``) and clips the grey image to [0, 1].
_PAPER_GREY = (0.2989, 0.5870, 0.1140)


def _paper_grey(x: torch.Tensor) -> torch.Tensor:
    return _grey(x, _PAPER_GREY).clamp(0.0, 1.0)[:, 0] if x.shape[1] == 3 else x[:, 0]


def blur_effect_paper(x: torch.Tensor, h_size: int = DEFAULT_H_SIZE) -> torch.Tensor:
    """The Crete et al. (2007) blur exactly as paper 000's code computes it (its ``PerceptualBlurMetric``).

    Differs from :func:`blur_effect` (scikit-image's form) in three ways: the re-blur is a 1×``h_size``
    box with zeros beyond the border, after which both images lose ⌈h/2⌉ rows/columns at the start and
    ⌊h/2⌋ at the end; the derivatives are first differences |x_j − x_{j−1}| (not Sobel), kept on the
    interior of that crop; grey is ``0.2989 R + 0.5870 G + 0.1140 B`` clipped to [0, 1]. Per axis,
    with D_F the differences of the image and D_B those of its re-blurred copy,

        b = (Σ D_F − Σ max(0, D_F − D_B)) / Σ D_F,   B = max(b_rows, b_columns).

    On the same image it is 0.7-0.85× the scikit-image value (REFERENCE §4).

    Parameters
    ----------
    x : Tensor (N, C, H, W)
        Images in [0, 1], C = 1 or 3, H, W ≥ h_size + 3.

    Returns
    -------
    Tensor (N,)

    References
    ----------
    Crete, Dolmiere, Ladret, Nicolas, "The blur effect: perception and estimation with a new
    no-reference perceptual blur metric", Proc. SPIE 6492 (2007). Shi et al., "On Measuring and
    Controlling the Spectral Bias of the Deep Image Prior", IJCV 130 (2022), §4.3.
    """
    _check_positive_int(h_size, "blur_effect_paper: h_size")
    _check_image(x, "blur_effect_paper", h_size + 3)
    grey = _paper_grey(x.float()).double()
    start, end = (h_size + 1) // 2, h_size // 2
    box = torch.ones(1, 1, 1, h_size, dtype=grey.dtype, device=grey.device) / h_size
    image = grey[:, None]
    blurred_w = F.conv2d(image, box, padding=(0, h_size // 2))
    blurred_h = F.conv2d(image, box.transpose(2, 3), padding=(h_size // 2, 0))
    crop = (..., slice(start, grey.shape[-2] - end), slice(start, grey.shape[-1] - end))
    image, blurred_w, blurred_h = image[crop], blurred_w[crop], blurred_h[crop]
    axes = []
    for blurred, dim in ((blurred_w, 3), (blurred_h, 2)):
        def difference(t):
            d = (t.narrow(dim, 1, t.shape[dim] - 1) - t.narrow(dim, 0, t.shape[dim] - 1)).abs()
            other = 2 if dim == 3 else 3  # interior on both axes: rows/columns 1 .. len − 2
            return d.narrow(dim, 0, t.shape[dim] - 2).narrow(other, 1, t.shape[other] - 2)
        d_image, d_blurred = difference(image), difference(blurred)
        total = d_image.sum((1, 2, 3))
        lost = (d_image - d_blurred).clamp_min(0).sum((1, 2, 3))
        axes.append((total - lost) / total)
    return torch.stack(axes).amax(0).to(x.dtype)


def mlv_sharpness_paper(x: torch.Tensor, top: int = DEFAULT_TOP, decay: float = DEFAULT_DECAY) -> torch.Tensor:
    """MLV sharpness exactly as paper 000's code computes it (its ``MLVSharpnessMeasure``).

    Differs from :func:`mlv_sharpness`: the local variation is signed, ψ = max over the 8 neighbours
    of (x_nb − x_c), on the region R that drops two rows/columns at the start and one at the end,
    with neighbours outside R counted as 0; of the values sorted in descending order,
    ψ_(0) ≥ ψ_(1) ≥ ..., the two largest are dropped and the rank weights start at exp(−2·decay):

        S = sqrt( (1/(top−1)) Σ_{i=2..top} (exp(−decay·i) ψ_(i))² );

    grey as in :func:`blur_effect_paper`.

    Returns
    -------
    Tensor (N,)

    References
    ----------
    Bahrami, Kot, IEEE Signal Processing Letters 21(6):751-755 (2014); Shi et al., IJCV 130 (2022), §4.3.
    """
    _check_positive_int(top, "mlv_sharpness_paper: top")
    _check_image(x, "mlv_sharpness_paper", 6)
    region = _paper_grey(x.float())[:, 2:-1, 2:-1]
    padded = F.pad(region, (1, 1, 1, 1))
    h, w = region.shape[-2:]
    variation = torch.stack([padded[:, 1 + di : 1 + di + h, 1 + dj : 1 + dj + w] - region
                             for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj]).amax(0).flatten(1)
    k = min(top + 1, variation.shape[1])
    ranked = variation.topk(k, dim=1).values[:, 2:]  # ψ_(2) .. ψ_(top): the code drops the two largest
    weights = torch.exp(-decay * torch.arange(2, k, device=x.device, dtype=ranked.dtype))
    return (ranked * weights).square().mean(1).sqrt().to(x.dtype)


#: The blur/sharpness pairs the ratio rule can use: scikit-image's Crete blur with Bahrami & Kot's MLV
#: (``"skimage"``, archlab's default), or paper 000's code's own (``"paper"``).
MEASURES = {"skimage": (blur_effect, mlv_sharpness), "paper": (blur_effect_paper, mlv_sharpness_paper)}


def ratio_rule_delta(r_history: torch.Tensor, samples_per_window: int) -> torch.Tensor:
    """Δr of paper 000, eq. 8, at every sample that has two full windows behind it.

    With k = ``samples_per_window`` and r_0, r_1, ... the evaluated ratios (oldest first),

        Δ_t = | mean(r_{t−k+1} .. r_t) − mean(r_{t−2k+1} .. r_{t−k}) |,   t = 2k − 1 .. T − 1.

    Parameters
    ----------
    r_history : Tensor (T, ...)
        Ratios along the leading (time) axis, e.g. (T, N) for N runs.
    samples_per_window : int
        k, the window n in iterations divided by the evaluation period.

    Returns
    -------
    Tensor (max(0, T − 2k + 1), ...)
        Δ_t; row j belongs to sample t = 2k − 1 + j.
    """
    k = _check_positive_int(samples_per_window, "ratio_rule_delta: samples_per_window")
    if r_history.ndim < 1:
        raise ValueError("ratio_rule_delta: r_history must have a leading time axis, got a 0-d tensor")
    if r_history.shape[0] < 2 * k:
        return r_history.new_empty((0, *r_history.shape[1:]))
    means = r_history.unfold(0, k, 1).mean(-1)
    return (means[k:] - means[:-k]).abs()


class RatioRule:
    """Stateful stopping rule of paper 000, eq. 8, for N runs at once.

    The fit evaluates r every ``eval_every`` iterations; the window of ``window`` iterations
    is k = window / eval_every evaluated samples. Each :meth:`update` appends r_t of all runs
    to a ring buffer of the last 2k samples (kept on r's device) and, once 2k samples are in,
    computes Δ with :func:`ratio_rule_delta` over the current and the previous window (the
    current sample counts as the newest of the recent window). A run stops at the first
    update with Δ < ``eps``; its flag then stays set. A non-finite r (a constant output has
    S = 0) gives a non-finite Δ, which never stops. Paper 000's code evaluates r every
    iteration; with fewer samples per window Δ is noisier and may dip below ε earlier.

    Parameters
    ----------
    window : int
        n of eq. 8, in iterations (paper: 100).
    eps : float
        ε of eq. 8 (paper: 0.01).
    eval_every : int
        Iterations between evaluations; must divide ``window``.

    Attributes
    ----------
    stopped : Tensor bool (N,) or None
        Per-run stop flags (None before the first update).
    stop_iteration : Tensor int64 (N,) or None
        Iteration at which each run stopped, −1 while it has not.
    delta : Tensor (N,) or None
        The latest Δ, NaN until two windows of history exist.
    """

    def __init__(self, window: int = DEFAULT_WINDOW, eps: float = DEFAULT_EPS, eval_every: int = 1):
        _check_positive_int(window, "RatioRule: window")
        _check_positive_int(eval_every, "RatioRule: eval_every")
        if window % eval_every:
            raise ValueError(f"RatioRule: window ({window}) must be a multiple of eval_every ({eval_every})")
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"RatioRule: eps must be a finite number > 0, got {eps!r}")
        self.window, self.eps, self.eval_every = window, float(eps), eval_every
        self.samples_per_window = window // eval_every
        self.reset()

    def reset(self) -> None:
        """Forget all history and stop flags."""
        self._buffer: torch.Tensor | None = None
        self._count = 0
        self._last_iteration: int | None = None
        self.stopped: torch.Tensor | None = None
        self.stop_iteration: torch.Tensor | None = None
        self.delta: torch.Tensor | None = None

    def update(self, iteration: int, r: torch.Tensor) -> torch.Tensor:
        """Record r (N,) evaluated at ``iteration``; return the per-run stop flags, bool (N,).

        ``iteration`` must advance by ``eval_every`` between calls.
        """
        if not isinstance(r, torch.Tensor) or r.ndim != 1:
            raise ValueError(f"RatioRule.update: r must be a 1-D tensor (N,), got {getattr(r, 'shape', type(r))}")
        if self._last_iteration is not None and iteration != self._last_iteration + self.eval_every:
            raise ValueError(
                f"RatioRule.update: iteration must be {self._last_iteration + self.eval_every} "
                f"(previous + eval_every={self.eval_every}), got {iteration}"
            )
        size = 2 * self.samples_per_window
        if self._buffer is None:
            self._buffer = r.new_zeros((size, r.shape[0]))
            self.stopped = torch.zeros(r.shape, dtype=torch.bool, device=r.device)
            self.stop_iteration = torch.full(r.shape, -1, dtype=torch.int64, device=r.device)
            self.delta = torch.full_like(r, math.nan)
        elif r.shape[0] != self._buffer.shape[1]:
            raise ValueError(f"RatioRule.update: r must keep N={self._buffer.shape[1]} runs, got {r.shape[0]}")
        self._buffer[self._count % size] = r.detach()
        self._count += 1
        self._last_iteration = iteration
        if self._count >= size:
            history = self._buffer.roll(-(self._count % size), dims=0)
            self.delta = ratio_rule_delta(history, self.samples_per_window)[-1]
            fire = (self.delta < self.eps) & ~self.stopped
            self.stop_iteration = torch.where(fire, iteration, self.stop_iteration)
            self.stopped = self.stopped | fire
        return self.stopped.clone()

    @property
    def detected_iteration(self) -> torch.Tensor | None:
        """The iteration whose output the rule picks: where it fired (the common stop-rule interface)."""
        return self.stop_iteration

    def to_dict(self) -> dict:
        """The settings as a plain dict (``RatioRule.from_dict`` rebuilds an equal, fresh rule)."""
        return {"window": self.window, "eps": self.eps, "eval_every": self.eval_every}

    @classmethod
    def from_dict(cls, data: dict) -> RatioRule:
        """Build a fresh rule from :meth:`to_dict`'s output."""
        unknown = set(data) - {"window", "eps", "eval_every"}
        if unknown:
            raise ValueError(f"RatioRule: unknown fields {sorted(unknown)}; accepted: window, eps, eval_every")
        return cls(**data)


class DivergenceGuard:
    """Detect a fit that blew up, as the backtracking of paper 000's code, and give up after repeats.

    Paper 000's code restores the last checkpoint when the PSNR of the output against the
    observation falls by more than 5 dB. For an MSE loss that is the rule used here:

        restore  if loss is not finite, or 10·log10(loss / last_ok) > ``jump_db``,

    where last_ok is the loss of the latest check that returned ``"ok"`` (a zero last_ok
    accepts every finite loss). After ``max_restores`` consecutive restores the next failed
    check returns ``"diverged"``. The caller keeps the weights of the last ``"ok"`` check and
    puts them back on ``"restore"``.

    Parameters
    ----------
    jump_db : float
        Largest accepted rise of the loss, in dB (paper's code: 5 dB, a factor 10^0.5 ≈ 3.16).
    max_restores : int
        Consecutive restores allowed before declaring divergence (>= 0).
    """

    def __init__(self, jump_db: float = 5.0, max_restores: int = 5):
        if not (isinstance(jump_db, (int, float)) and math.isfinite(jump_db) and jump_db > 0):
            raise ValueError(f"DivergenceGuard: jump_db must be a finite number > 0, got {jump_db!r}")
        if isinstance(max_restores, bool) or not isinstance(max_restores, int) or max_restores < 0:
            raise ValueError(f"DivergenceGuard: max_restores must be an integer >= 0, got {max_restores!r}")
        self.jump_db, self.max_restores = float(jump_db), max_restores
        self.reset()

    def reset(self) -> None:
        """Forget the last good loss and the restore count."""
        self.last_ok: float | None = None
        self.restores = 0

    def check(self, loss: float) -> Literal["ok", "restore", "diverged"]:
        """Classify the loss of this evaluation: ``"ok"``, ``"restore"`` or ``"diverged"``."""
        loss = float(loss)
        factor = 10.0 ** (self.jump_db / 10.0)
        jumped = self.last_ok is not None and self.last_ok > 0 and loss > factor * self.last_ok
        if math.isfinite(loss) and not jumped:
            self.last_ok, self.restores = loss, 0
            return "ok"
        self.restores += 1
        return "diverged" if self.restores > self.max_restores else "restore"

    def to_dict(self) -> dict:
        """The settings as a plain dict (``DivergenceGuard.from_dict`` rebuilds a fresh guard)."""
        return {"jump_db": self.jump_db, "max_restores": self.max_restores}

    @classmethod
    def from_dict(cls, data: dict) -> DivergenceGuard:
        """Build a fresh guard from :meth:`to_dict`'s output."""
        unknown = set(data) - {"jump_db", "max_restores"}
        if unknown:
            raise ValueError(f"DivergenceGuard: unknown fields {sorted(unknown)}; accepted: jump_db, max_restores")
        return cls(**data)


#: W of ES-WMV: outputs in the variance window, one per iteration (Wang et al.'s code: 100).
DEFAULT_VARIANCE_WINDOW = 100
#: P of ES-WMV/EMV: iterations without a new variance minimum before stopping (their code: 1000).
DEFAULT_PATIENCE = 1000
#: α of ES-EMV, the weight of the newest output in the moving mean and variance (their code: 0.1).
DEFAULT_EMV_DECAY = 0.1
#: ES-EMV ignores the variance up to this iteration while it builds up from 0 (their code: 100).
DEFAULT_EMV_WARMUP = 100
#: τ of the discrepancy principle. The clean image itself leaves E‖x − y‖²/N = σ² (Gaussian noise,
#: every value observed), so a fit below σ² is explaining noise; τ = 1 stops where the fit is as close
#: to y as the clean image is. A DIP output at its PSNR peak leaves about σ² + MSE(peak), so τ > 1 stops
#: earlier, nearer the peak; regularisation theory asks for τ > 1 (Engl, Hanke, Neubauer 1996, §4.3).
DEFAULT_TAU = 1.0
#: β of :class:`EMA` (Ulyanov et al.'s ``exp_weight``: 0.99).
DEFAULT_EMA_BETA = 0.99

# Daubechies-2 high-pass decomposition taps (PyWavelets' ``Wavelet("db2").dec_hi``) from their closed
# form, and Φ⁻¹(0.75), the MAD of a unit normal.
_SQRT3 = math.sqrt(3)
_DB2_HIGH = tuple(c / (4 * math.sqrt(2)) for c in (-1 - _SQRT3, 3 + _SQRT3, _SQRT3 - 3, 1 - _SQRT3))
_NORMAL_MAD = statistics.NormalDist().inv_cdf(0.75)


def _check_fraction(value, name: str, low_open: bool) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and (0 < value < 1 if low_open else 0 <= value < 1)):
        raise ValueError(f"{name} must be a number in {'(0, 1)' if low_open else '[0, 1)'}, got {value!r}")
    return float(value)


def _check_outputs(name: str, outputs, shape: tuple | None) -> torch.Tensor:
    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 4:
        got = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise ValueError(f"{name}: outputs must be a (K, C, H, W) tensor, got {got}")
    if shape is not None and tuple(outputs.shape) != shape:
        raise ValueError(f"{name}: outputs must keep the shape {shape} of the first update, got {tuple(outputs.shape)}")
    return outputs.detach()


def _check_iteration(name: str, iteration, last: int | None) -> int:
    if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral):
        raise ValueError(f"{name}: iteration must be an integer, got {iteration!r}")
    if last is not None and iteration <= last:
        raise ValueError(f"{name}: iteration must be > {last} (the previous update's), got {iteration}")
    return int(iteration)


def _plain(values: torch.Tensor | None) -> list | None:
    """A (K,) tensor as a JSON-ready list: floats/ints/bools, None for inf and NaN (host sync: evaluation time)."""
    if values is None:
        return None
    return [v if not isinstance(v, float) or math.isfinite(v) else None for v in values.tolist()]


def estimate_sigma(y: torch.Tensor) -> torch.Tensor:
    """Robust estimate of the standard deviation of additive white Gaussian noise in ``y``.

    The median absolute deviation of the finest diagonal wavelet detail coefficients d of each
    channel (Daubechies-2, the 'dd' band of one level of the separable transform, symmetric border,
    exactly zero coefficients left out), divided by the MAD of a unit normal:

        σ̂_c = median_i |d_i| / Φ⁻¹(0.75),   Φ⁻¹(0.75) ≈ 0.6745,      σ̂ = mean_c σ̂_c.

    The finest diagonal band of a natural image holds almost only noise; the image content that
    leaks into it makes σ̂ slightly high on textured images. This is
    ``skimage.restoration.estimate_sigma(y, average_sigmas=True, channel_axis=-1)``, batched, in torch.

    Parameters
    ----------
    y : Tensor (N, C, H, W)
        Observations, C = 1 or 3, on the [0, 1] scale (σ̂ is on the same scale: 25/255 for σ = 25).

    Returns
    -------
    Tensor (N,)
        σ̂ of each image (the mean of its channels' estimates), in ``y``'s dtype, on its device.

    References
    ----------
    Donoho, Johnstone, "Ideal spatial adaptation by wavelet shrinkage", Biometrika 81(3):425-455
    (1994), §4.2.
    """
    _check_image(y, "estimate_sigma", 1)
    n, c, h, w = y.shape
    taps = torch.tensor(_DB2_HIGH[::-1], dtype=y.dtype, device=y.device)
    detail = y.reshape(n * c, 1, h, w)
    for dim, kernel, stride in ((-2, taps.view(1, 1, 4, 1), (2, 1)), (-1, taps.view(1, 1, 1, 4), (1, 2))):
        # PyWavelets' symmetric-mode DWT: extend by 3 on each side, filter, keep every other sample from the second.
        length = detail.shape[dim]
        detail = F.conv2d(_symmetric_pad(detail, dim, 3, 3).narrow(dim, 1, length + 5), kernel, stride=stride)
    magnitude = detail.flatten(1).abs()
    magnitude = torch.where(magnitude > 0, magnitude, math.nan)
    return (magnitude.nanquantile(0.5, dim=1) / _NORMAL_MAD).view(n, c).mean(1)


class EMA:
    """Exponential moving average with the start-up bias correction of Adam (Kingma & Ba 2015, §3).

        m_t = β m_{t−1} + (1 − β) x_t,   m_0 = 0,        value_t = m_t / (1 − β^t),   t ≥ 1,

    the average of x_1 .. x_t with weights β^{t−i} normalised to sum to 1; without the division the
    first values are pulled towards 0. Computed in the equivalent corrected form

        value_t = value_{t−1} + (x_t − value_{t−1}) · (1 − β) / (1 − β^t),

    whose gain is exactly 1 at t = 1, so a constant sequence gives exactly the constant.

    Parameters
    ----------
    beta : float
        Decay β in [0, 1) (Ulyanov et al.'s ``exp_weight`` 0.99; β = 0 keeps the latest x).

    Attributes
    ----------
    value : Tensor or None
        The corrected average (None before the first update); :meth:`update` returns this tensor
        itself and changes it in place afterwards, so clone it to keep it.
    count : int
        t, the number of updates.
    """

    def __init__(self, beta: float = DEFAULT_EMA_BETA):
        self.beta = _check_fraction(beta, "EMA: beta", low_open=False)
        self.reset()

    def reset(self) -> None:
        """Forget the average."""
        self.value: torch.Tensor | None = None
        self.count = 0

    def update(self, x: torch.Tensor) -> torch.Tensor:
        """Fold in x (any shape, fixed after the first update); return value_t, on x's device."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"EMA.update: x must be a tensor, got {type(x).__name__}")
        if self.value is not None and x.shape != self.value.shape:
            raise ValueError(f"EMA.update: x must keep the shape {tuple(self.value.shape)}, got {tuple(x.shape)}")
        self.count += 1
        if self.value is None:
            self.value = x.detach().clone()
        else:
            self.value.lerp_(x.detach().to(self.value.dtype), (1 - self.beta) / (1 - self.beta**self.count))
        return self.value

    def to_dict(self) -> dict:
        """Settings and state as plain numbers: ``{"beta": β, "count": t}``."""
        return {"beta": self.beta, "count": self.count}


class _ArgminPatience:
    """The detection and stop of ES-WMV/EMV for K runs, all (K,) device tensors.

    A candidate update with v_t < the best so far (strictly: ties keep the earlier) records t as the
    detected iteration, with the output and the mean at t. A run stops once ``patience`` iterations
    have passed since its detection, t − t* ≥ P, and then keeps its detection.
    """

    def __init__(self, patience: int, flat: torch.Tensor):
        k, device = flat.shape[0], flat.device
        self.patience = patience
        self.best = torch.full((k,), math.inf, dtype=torch.float64, device=device)
        self.detected = torch.full((k,), -1, dtype=torch.int64, device=device)
        self.stopped = torch.zeros(k, dtype=torch.bool, device=device)
        self.stop_iteration = torch.full((k,), -1, dtype=torch.int64, device=device)
        self.output = torch.full_like(flat, math.nan)
        self.mean = torch.full_like(flat, math.nan)

    def step(self, iteration: int, value: torch.Tensor | None, output: torch.Tensor, mean: torch.Tensor | None) -> None:
        if value is not None:
            improved = (value < self.best) & ~self.stopped
            self.best = torch.where(improved, value, self.best)
            self.detected = torch.where(improved, iteration, self.detected)
            self.output = torch.where(improved[:, None], output, self.output)
            self.mean = torch.where(improved[:, None], mean, self.mean)
        fire = ~self.stopped & (self.detected >= 0) & (iteration - self.detected >= self.patience)
        self.stop_iteration = torch.where(fire, iteration, self.stop_iteration)
        self.stopped = self.stopped | fire

    def state(self) -> dict:
        return {"best_variance": _plain(self.best), "detected_iteration": _plain(self.detected),
                "stopped": _plain(self.stopped), "stop_iteration": _plain(self.stop_iteration)}


class _VarianceRule:
    """What :class:`WMVRule` and :class:`EMVRule` share: the checks, the detection, the readers."""

    _name = ""
    _fields: tuple[str, ...] = ()

    def reset(self) -> None:
        """Forget all history, the detection and the stop flags."""
        self._shape: tuple | None = None
        self._count = 0
        self._last_iteration: int | None = None
        self._track: _ArgminPatience | None = None
        self.variance: torch.Tensor | None = None

    def _begin(self, iteration, outputs) -> torch.Tensor:
        """Check an update's arguments; return the outputs as (K, N) in the working dtype (fp32 or fp64)."""
        outputs = _check_outputs(f"{self._name}.update", outputs, self._shape)
        self._last_iteration = _check_iteration(f"{self._name}.update", iteration, self._last_iteration)
        self._shape = tuple(outputs.shape)
        return outputs.reshape(outputs.shape[0], -1).to(torch.promote_types(outputs.dtype, torch.float32))

    @property
    def stopped(self) -> torch.Tensor | None:
        """bool (K,): runs that have stopped (None before the first update)."""
        return None if self._track is None else self._track.stopped

    @property
    def stop_iteration(self) -> torch.Tensor | None:
        """int64 (K,): the iteration at which each run stopped, −1 while it runs."""
        return None if self._track is None else self._track.stop_iteration

    @property
    def detected_iteration(self) -> torch.Tensor | None:
        """int64 (K,): argmin_t of the variance so far (the detected point), −1 before the first candidate."""
        return None if self._track is None else self._track.detected

    @property
    def best_variance(self) -> torch.Tensor | None:
        """float64 (K,): the variance at the detected point (inf before the first candidate)."""
        return None if self._track is None else self._track.best

    def detected_output(self, mean: bool = False) -> torch.Tensor | None:
        """(K, C, H, W): the output at each run's detected iteration, or with ``mean`` the window/moving
        mean there; NaN for a run without a detection yet. A device tensor; read it at evaluation time."""
        if self._track is None:
            return None
        return (self._track.mean if mean else self._track.output).view(self._shape)

    def to_dict(self) -> dict:
        """Settings and, under ``"state"``, the state as plain numbers (None for inf/NaN; a host sync)."""
        state = {"updates": self._count, "iteration": self._last_iteration}
        if self._track is not None:
            state.update(self._track.state(), variance=_plain(self.variance))
        return {**{field: getattr(self, field) for field in self._fields}, "state": state}

    @classmethod
    def from_dict(cls, data: dict):
        """A fresh rule with the settings of :meth:`to_dict`'s output (its ``"state"`` is not restored)."""
        unknown = set(data) - set(cls._fields) - {"state"}
        if unknown:
            accepted = ", ".join((*cls._fields, "state"))
            raise ValueError(f"{cls._name}: unknown fields {sorted(unknown)}; accepted: {accepted}")
        return cls(**{field: data[field] for field in cls._fields if field in data})


class WMVRule(_VarianceRule):
    """ES-WMV of Wang et al. (TMLR 2023): stop at the minimum of the windowed variance of the outputs.

    With x_{t−W+1} .. x_t the last W outputs (one per update), x̄_t their mean and N the number of
    values in one output,

        VAR_t = (1/W) Σ_{i=t−W+1..t} ‖x_i − x̄_t‖² / N,

    defined once W outputs are in. The detected point is t* = argmin_t VAR_t (the first of equal
    minima); a run stops when VAR has found no new minimum for P iterations, t − t* ≥ P, and keeps
    its t*. :meth:`detected_output` gives x_{t*} (what their code reports) or x̄_{t*}.

    Each update costs O(N), whatever W: a ring buffer of the W outputs lives on the device, and
    running sums of the shifted outputs, S1 = Σ (x_i − c) and S2 = Σ ‖x_i − c‖², give

        VAR_t = (S2 − ‖S1‖² / W) / (W N).

    The shift c (a recent window mean) keeps S2 and ‖S1‖²/W from being two large, nearly equal
    numbers; every W updates c moves to the current window mean and S1, S2 are recomputed from the
    buffer, so rounding cannot pile up (Chan, Golub, LeVeque 1983). S2 is kept in float64.
    Memory: W outputs per run (W = 100 at 512×512×3 in fp32: 315 MB).

    Call :meth:`update` every iteration, as the paper does; called every e iterations, the window
    spans W·e iterations (the patience stays in iterations).

    Parameters
    ----------
    window : int
        W, outputs in the window (>= 2; their code: 100).
    patience : int
        P, in iterations (>= 1; their code: 1000).

    Attributes
    ----------
    variance : Tensor float64 (K,) or None
        The latest VAR_t, NaN until W outputs are in.

    References
    ----------
    Wang, Li, Zhuang, Chen, Liang, Sun, "Early Stopping for Deep Image Prior", Transactions on
    Machine Learning Research (2023), arXiv:2112.06074, ES-WMV. Chan, Golub, LeVeque, "Algorithms
    for computing the sample variance: analysis and recommendations", The American Statistician
    37(3):242-247 (1983).
    """

    _name = "WMVRule"
    _fields = ("window", "patience")

    def __init__(self, window: int = DEFAULT_VARIANCE_WINDOW, patience: int = DEFAULT_PATIENCE):
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"WMVRule: window must be an integer >= 2, got {window!r}")
        self.window = window
        self.patience = _check_positive_int(patience, "WMVRule: patience")
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._buffer: torch.Tensor | None = None
        self._centre: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._sum_sq: torch.Tensor | None = None

    def update(self, iteration: int, outputs: torch.Tensor) -> torch.Tensor:
        """Add the outputs (K, C, H, W) of ``iteration``; return the stop flags, bool (K,)."""
        x = self._begin(iteration, outputs)
        w = self.window
        if self._buffer is None:
            self._buffer = x.new_empty((w, *x.shape))
            self._centre = x.clone()
            self._sum = torch.zeros_like(x)
            self._sum_sq = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
            self._track = _ArgminPatience(self.patience, x)
        slot = self._count % w
        if self._count >= w:
            leaving = self._buffer[slot] - self._centre
            self._sum.sub_(leaving)
            self._sum_sq.sub_(torch.linalg.vecdot(leaving, leaving))
        arriving = x - self._centre
        self._sum.add_(arriving)
        self._sum_sq.add_(torch.linalg.vecdot(arriving, arriving))
        self._buffer[slot] = x
        self._count += 1
        if self._count % w == 0:
            self._recentre()
        value = mean = None
        if self._count >= w:
            value = (self._sum_sq - torch.linalg.vecdot(self._sum, self._sum) / w) / (w * x.shape[1])
            mean = torch.add(self._centre, self._sum, alpha=1 / w)
        self.variance = value if value is not None else torch.full_like(self._sum_sq, math.nan)
        self._track.step(self._last_iteration, value, x, mean)
        return self._track.stopped.clone()

    def _recentre(self) -> None:
        """Move the shift to the window mean and recompute S1, S2 from the buffer (O(W N), every W updates)."""
        self._centre = self._buffer.mean(0)
        self._sum.zero_()
        dots = self._sum.new_empty((self.window, self._sum.shape[0]))
        # One output at a time into one scratch row: a (W, K, N) temporary costs more in fresh memory than in work.
        deviation = torch.empty_like(self._sum)
        for row, dot in zip(self._buffer, dots):
            torch.sub(row, self._centre, out=deviation)
            self._sum.add_(deviation)
            torch.linalg.vecdot(deviation, deviation, out=dot)
        self._sum_sq = dots.sum(0, dtype=torch.float64)


class EMVRule(_VarianceRule):
    """ES-EMV of Wang et al. (TMLR 2023): stop at the minimum of the exponential moving variance.

    With α the weight of the newest output and N the number of values in one output, from
    μ_1 = x_1, v_1 = 0:

        δ_t = x_t − μ_{t−1},
        μ_t = clip(μ_{t−1} + α δ_t, 0, 1),
        v_t = (1 − α) (v_{t−1} + α ‖δ_t‖² / N),

    the exponentially weighted mean and variance (Finch 2009) as their code computes them (the clip
    changes nothing for outputs in [0, 1]; their v is N times this one, which moves no minimum).
    Updates at iterations ≤ ``warmup`` are no candidates, while v builds up from 0. Detection and
    stop as :class:`WMVRule`: t* = argmin v_t, stop when t − t* ≥ P. No buffer: O(N) per update and
    one mean per run. :meth:`detected_output` gives x_{t*} or μ_{t*}.

    Parameters
    ----------
    decay : float
        α in (0, 1) (their code: 0.1).
    patience : int
        P, in iterations (>= 1; their code: 1000).
    warmup : int
        Iterations ≤ ``warmup`` are never detected (>= 0; their code: 100, counting from 0).

    Attributes
    ----------
    variance : Tensor float64 (K,) or None
        The latest v_t.
    ema : Tensor (K, C, H, W) or None
        The latest μ_t.

    References
    ----------
    Wang, Li, Zhuang, Chen, Liang, Sun, "Early Stopping for Deep Image Prior", Transactions on
    Machine Learning Research (2023), arXiv:2112.06074, ES-EMV. Finch, "Incremental calculation of
    weighted mean and variance", University of Cambridge (2009), §9.
    """

    _name = "EMVRule"
    _fields = ("decay", "patience", "warmup")

    def __init__(self, decay: float = DEFAULT_EMV_DECAY, patience: int = DEFAULT_PATIENCE,
                 warmup: int = DEFAULT_EMV_WARMUP):
        self.decay = _check_fraction(decay, "EMVRule: decay", low_open=True)
        self.patience = _check_positive_int(patience, "EMVRule: patience")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"EMVRule: warmup must be an integer >= 0, got {warmup!r}")
        self.warmup = warmup
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._mean: torch.Tensor | None = None

    @property
    def ema(self) -> torch.Tensor | None:
        """(K, C, H, W): the latest moving mean μ_t (None before the first update)."""
        return None if self._mean is None else self._mean.view(self._shape)

    def update(self, iteration: int, outputs: torch.Tensor) -> torch.Tensor:
        """Add the outputs (K, C, H, W) of ``iteration``; return the stop flags, bool (K,)."""
        x = self._begin(iteration, outputs)
        if self._mean is None:
            self._mean = x.clone()
            self.variance = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
            self._track = _ArgminPatience(self.patience, x)
        else:
            delta = x - self._mean
            self._mean.add_(delta, alpha=self.decay).clamp_(0.0, 1.0)
            spread = torch.linalg.vecdot(delta, delta).double() / x.shape[1]
            self.variance = (self.variance + self.decay * spread) * (1 - self.decay)
        candidate = self._count > 0 and self._last_iteration > self.warmup
        self._count += 1
        self._track.step(self._last_iteration, self.variance if candidate else None, x, self._mean)
        return self._track.stopped.clone()


class DiscrepancyRule:
    """The discrepancy principle of Morozov (1966): stop when the residual reaches the noise level.

    With the per-value data-fit residual ρ_t = ‖A f(z_t) − y‖² / N of each run (the MSE loss of the
    problem; for a mask, the mean over the observed values) and the noise level

        ρ_noise = E‖A x − y‖² / N = σ²   (additive Gaussian noise of std σ),

    a run stops at the first update with ρ_t ≤ τ · ρ_noise; the detected iteration is that one.
    Fitting below the noise level means fitting the noise. ``σ`` is on the [0, 1] scale (25/255 for
    σ = 25); when it is not given, :func:`estimate_sigma` estimates it from y. Clipping y to [0, 1]
    lowers the true level near black and white, so the rule then fires a little later.

    For Poisson noise of scale ζ, y = ζ · Poisson(x/ζ), Var(y_i) = ζ x_i, so
    ρ_noise = ζ · mean(x), estimated by ζ · mean(y) (:meth:`poisson`).

    Parameters
    ----------
    sigma : float, sequence or Tensor (K,), optional
        Noise standard deviation(s) > 0 on the [0, 1] scale, one for all runs or one per run.
    y : Tensor (K, C, H, W), optional
        The observations, to estimate σ from when ``sigma`` is None.
    tau : float
        Safety factor τ > 0 (default 1: see :data:`DEFAULT_TAU`).

    Attributes
    ----------
    sigma : Tensor float64 (K,) or 0-d
        The effective σ, √ρ_noise.
    residual : Tensor (K,) or None
        The latest residual.

    References
    ----------
    Morozov, "On the solution of functional equations by the method of regularization", Soviet
    Math. Doklady 7:414-417 (1966); Engl, Hanke, Neubauer, "Regularization of Inverse Problems",
    Kluwer (1996), §4.3.
    """

    def __init__(self, sigma=None, y: torch.Tensor | None = None, tau: float = DEFAULT_TAU):
        if not (isinstance(tau, (int, float)) and not isinstance(tau, bool) and math.isfinite(tau) and tau > 0):
            raise ValueError(f"DiscrepancyRule: tau must be a finite number > 0, got {tau!r}")
        if sigma is None:
            if y is None:
                raise ValueError("DiscrepancyRule: give sigma (> 0, the [0, 1] scale) or y to estimate it from")
            sigma = estimate_sigma(y)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).detach()
        if sigma.ndim > 1 or not (torch.isfinite(sigma) & (sigma > 0)).all():
            raise ValueError(f"DiscrepancyRule: sigma must be a number > 0 or one per run (K,), got {sigma.tolist()}")
        self.sigma, self.tau = sigma, float(tau)
        self.reset()

    @classmethod
    def poisson(cls, scale: float, y: torch.Tensor, tau: float = DEFAULT_TAU) -> DiscrepancyRule:
        """The rule for Poisson noise of scale ζ = ``scale`` (> 0): ρ_noise = ζ · mean(y) per run."""
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"DiscrepancyRule.poisson: scale must be a finite number > 0, got {scale!r}")
        _check_image(y, "DiscrepancyRule.poisson", 1)
        return cls(sigma=(scale * y.double().mean((1, 2, 3))).sqrt(), tau=tau)

    def reset(self) -> None:
        """Forget the stop flags and the kept outputs."""
        self._threshold: torch.Tensor | None = None
        self._last_iteration: int | None = None
        self._output: torch.Tensor | None = None
        self.residual: torch.Tensor | None = None
        self.stopped: torch.Tensor | None = None
        self.stop_iteration: torch.Tensor | None = None

    def update(self, iteration: int, residual: torch.Tensor, outputs: torch.Tensor | None = None) -> torch.Tensor:
        """Record the residual (K,) of ``iteration``; return the stop flags, bool (K,).

        With ``outputs`` (K, C, H, W), each run's output at its stop is kept for :meth:`detected_output`.
        """
        name = "DiscrepancyRule.update"
        iteration = _check_iteration(name, iteration, self._last_iteration)
        if not isinstance(residual, torch.Tensor) or residual.ndim != 1:
            got = tuple(residual.shape) if isinstance(residual, torch.Tensor) else type(residual).__name__
            raise ValueError(f"{name}: residual must be a 1-D tensor (K,), got {got}")
        k = residual.shape[0] if self.stopped is None else self.stopped.shape[0]
        if self.sigma.ndim == 1:
            k = self.sigma.shape[0]
        if residual.shape[0] != k:
            raise ValueError(f"{name}: residual must have K={k} values (one per run), got {residual.shape[0]}")
        if outputs is not None:
            outputs = _check_outputs(name, outputs, None if self._output is None else tuple(self._output.shape))
            if outputs.shape[0] != k:
                raise ValueError(f"{name}: outputs must have K={k} runs, got {outputs.shape[0]}")
        if self.stopped is None:
            self._threshold = (self.tau * self.sigma.square()).to(residual.device)
            self.stopped = torch.zeros(residual.shape, dtype=torch.bool, device=residual.device)
            self.stop_iteration = torch.full(residual.shape, -1, dtype=torch.int64, device=residual.device)
        self._last_iteration = iteration
        self.residual = residual.detach()
        fire = (self.residual <= self._threshold) & ~self.stopped
        self.stop_iteration = torch.where(fire, iteration, self.stop_iteration)
        self.stopped = self.stopped | fire
        if outputs is not None:
            kept = torch.full_like(outputs, math.nan) if self._output is None else self._output
            self._output = torch.where(fire.view(-1, 1, 1, 1), outputs, kept)
        return self.stopped.clone()

    @property
    def detected_iteration(self) -> torch.Tensor | None:
        """int64 (K,): where each run stopped (the discrepancy principle keeps that output), −1 while running."""
        return self.stop_iteration

    def detected_output(self) -> torch.Tensor | None:
        """(K, C, H, W): the output at each run's stop, NaN while it runs (None if no outputs were given)."""
        return self._output

    def to_dict(self) -> dict:
        """Settings (``sigma``: the effective σ) and, under ``"state"``, the state as plain numbers."""
        sigma = self.sigma.tolist()
        state = {"iteration": self._last_iteration, "stopped": _plain(self.stopped),
                 "stop_iteration": _plain(self.stop_iteration), "residual": _plain(self.residual)}
        return {"sigma": sigma, "tau": self.tau, "state": state}

    @classmethod
    def from_dict(cls, data: dict) -> DiscrepancyRule:
        """A fresh rule with the settings of :meth:`to_dict`'s output (its ``"state"`` is not restored)."""
        unknown = set(data) - {"sigma", "tau", "state"}
        if unknown:
            raise ValueError(f"DiscrepancyRule: unknown fields {sorted(unknown)}; accepted: sigma, tau, state")
        return cls(sigma=data.get("sigma"), tau=data.get("tau", DEFAULT_TAU))
