"""Paper 000's ratio rule (§4.3, eq. 8) and the divergence guard of its code.

    Δr_t = | mean(r_{t-1} .. r_{t-n}) − mean(r_{t-n-1} .. r_{t-2n}) | < ε,   n = 100, ε = 0.01.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from archlab import checks

#: n of eq. 8, in iterations (paper 000: 100).
DEFAULT_WINDOW = 100
#: ε of eq. 8 (paper 000: 0.01).
DEFAULT_EPS = 0.01
#: ε of eq. 8 for each pair of measures (:data:`MEASURES`): the paper's 0.01 with its own measures; with archlab's
#: (scikit-image's blur, absolute MLV) Δr is 0.75-0.96× the paper's on the same outputs (median per run over fp32
#: fits of paper 000's decoder on Set9 ×¼, σ 25; ``benchmarks/ratio_eps.py``), and ε = 0.008 stops closest to
#: where the paper's rule at 0.01 stops (results/denoise-set9/README.md).
EPS_FOR_MEASURES = {"skimage": 0.008, "paper": DEFAULT_EPS}


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
    k = checks.integer("ratio_rule_delta: samples_per_window", samples_per_window)
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
        checks.integer("RatioRule: window", window)
        checks.integer("RatioRule: eval_every", eval_every)
        if window % eval_every:
            raise ValueError(f"RatioRule: window ({window}) must be a multiple of eval_every ({eval_every})")
        checks.number("RatioRule: eps", eps, low=0, open_low=True)
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
        checks.number("DivergenceGuard: jump_db", jump_db, low=0, open_low=True)
        checks.integer("DivergenceGuard: max_restores", max_restores, 0)
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
