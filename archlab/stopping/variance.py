"""ES-WMV and ES-EMV (Wang, Li, Zhuang, Chen, Liang, Sun, "Early Stopping for Deep Image Prior", TMLR 2023)
and the bias-corrected moving average of the outputs."""

from __future__ import annotations

import math

import torch

from archlab import checks

#: W of ES-WMV: outputs in the variance window, one per iteration (Wang et al.'s code: 100).
DEFAULT_VARIANCE_WINDOW = 100
#: P of ES-WMV/EMV: iterations without a new variance minimum before stopping (their code: 1000).
DEFAULT_PATIENCE = 1000
#: α of ES-EMV, the weight of the newest output in the moving mean and variance (their code: 0.1).
DEFAULT_EMV_DECAY = 0.1
#: ES-EMV ignores the variance up to this iteration while it builds up from 0 (their code: 100).
DEFAULT_EMV_WARMUP = 100
#: β of :class:`EMA` (Ulyanov et al.'s ``exp_weight``: 0.99).
DEFAULT_EMA_BETA = 0.99



def json_values(values: torch.Tensor | None) -> list | None:
    """A (K,) tensor as a JSON-ready list: floats/ints/bools, None for inf and NaN (host sync: evaluation time)."""
    if values is None:
        return None
    return [v if not isinstance(v, float) or math.isfinite(v) else None for v in values.tolist()]


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
        self.beta = checks.number("EMA: beta", beta, low=0, high=1, open_high=True)
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
        return {"best_variance": json_values(self.best), "detected_iteration": json_values(self.detected),
                "stopped": json_values(self.stopped), "stop_iteration": json_values(self.stop_iteration)}


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
        outputs = checks.outputs(f"{self._name}.update", outputs, self._shape)
        self._last_iteration = checks.iteration(f"{self._name}.update", iteration, self._last_iteration)
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
            state.update(self._track.state(), variance=json_values(self.variance))
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
        self.window = checks.integer("WMVRule: window", window, 2)
        self.patience = checks.integer("WMVRule: patience", patience)
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
        self.decay = checks.number("EMVRule: decay", decay, low=0, high=1, open_low=True, open_high=True)
        self.patience = checks.integer("EMVRule: patience", patience)
        self.warmup = checks.integer("EMVRule: warmup", warmup, 0)
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
