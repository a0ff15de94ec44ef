"""Automatic stopping for the deep image prior: blur, sharpness, the ratio rule, a divergence guard.

Paper 000 (Shi et al., IJCV 2022), §4.3, eq. 8, stops a fit when the ratio of the
output's blur to its sharpness, r = B / S, has stopped moving:

    Δr_t = | mean(r_{t-1} .. r_{t-n}) − mean(r_{t-n-1} .. r_{t-2n}) | < ε,   n = 100, ε = 0.01.

B is the no-reference blur of Crete et al. (2007) exactly as ``skimage.measure.blur_effect``
computes it; S is the maximum-local-variation sharpness of Bahrami & Kot (2014). Everything
here is torch, batched over N and on the input's device, with no host synchronisation,
except :class:`DivergenceGuard`, which takes the scalar loss at evaluation points.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
import torch.nn.functional as F

from archlab.images import LUMA

#: n of eq. 8, in iterations (paper 000: 100).
DEFAULT_WINDOW = 100
#: ε of eq. 8 (paper 000: 0.01).
DEFAULT_EPS = 0.01
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
