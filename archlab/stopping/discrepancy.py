"""The discrepancy principle (Morozov 1966) as a stop rule, and a noise level estimated from the observation."""

from __future__ import annotations

import math
import statistics

import torch
import torch.nn.functional as F

from archlab import checks
from archlab.stopping.variance import json_values
from archlab.stopping.measures import symmetric_pad

#: τ of the discrepancy principle. The clean image itself leaves E‖x − y‖²/N = σ² (Gaussian noise,
#: every value observed), so a fit below σ² is explaining noise; τ = 1 stops where the fit is as close
#: to y as the clean image is. A DIP output at its PSNR peak leaves about σ² + MSE(peak), so τ > 1 stops
#: earlier, nearer the peak; regularisation theory asks for τ > 1 (Engl, Hanke, Neubauer 1996, §4.3).
DEFAULT_TAU = 1.0

# Daubechies-2 high-pass decomposition taps (PyWavelets' ``Wavelet("db2").dec_hi``) from their closed
# form, and Φ⁻¹(0.75), the MAD of a unit normal.
_SQRT3 = math.sqrt(3)
_DB2_HIGH = tuple(c / (4 * math.sqrt(2)) for c in (-1 - _SQRT3, 3 + _SQRT3, _SQRT3 - 3, 1 - _SQRT3))
_NORMAL_MAD = statistics.NormalDist().inv_cdf(0.75)


def clipped_noise_power(x: torch.Tensor, sigma) -> torch.Tensor:
    """Per value, the power of Gaussian noise clipped to the image range: E[(clip(x + n, 0, 1) − x)²].

    With n ~ N(0, σ²), a = −x/σ, b = (1 − x)/σ, Φ and φ the unit normal's CDF and density:

        E[(clip(x + n, 0, 1) − x)²] = σ² [Φ(b) − Φ(a) − (b φ(b) − a φ(a))] + x² Φ(a) + (1 − x)² (1 − Φ(b)).

    It is σ² for x far from 0 and 1 and falls towards σ²/2 at black and white, where half the noise is
    clipped away. ``x`` (K, C, H, W) is clamped to [0, 1]; ``sigma`` is a number or one per run (K,), on
    the [0, 1] scale. Returns a tensor of x's shape (float64).
    """
    x = x.detach().double().clamp(0.0, 1.0)
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    if sigma.ndim == 1:
        sigma = sigma.view(-1, 1, 1, 1)
    a, b = -x / sigma, (1 - x) / sigma
    cdf_a, cdf_b = torch.special.ndtr(a), torch.special.ndtr(b)
    pdf = lambda t: torch.exp(-0.5 * t.square()) / math.sqrt(2 * math.pi)  # noqa: E731
    inside = sigma.square() * (cdf_b - cdf_a - (b * pdf(b) - a * pdf(a)))
    return inside + x.square() * cdf_a + (1 - x).square() * (1 - cdf_b)


#: Points of the table on [0, 1] that :func:`clipped_poisson_power` interpolates.
POISSON_TABLE_POINTS = 1025


def poisson_power_table(scale: float, points: int = POISSON_TABLE_POINTS) -> torch.Tensor:
    """E[(min(ζ K, 1) − x)²] with K ~ Poisson(x/ζ), at ``points`` values of x evenly spaced on [0, 1] (float64).

    The sum over k runs to k_max = ⌈1/ζ + 12 √(1/ζ) + 12⌉, beyond which the Poisson tail is below 1e-20 for
    every x ≤ 1; ζK ≥ 1 is clipped to 1 (white).
    """
    x = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    k_max = math.ceil(1 / scale + 12 * math.sqrt(1 / scale) + 12)
    k = torch.arange(k_max + 1, dtype=torch.float64)
    rate = (x / scale).clamp_min(1e-300)[:, None]
    pmf = torch.exp(k * rate.log() - rate - torch.lgamma(k + 1))
    pmf[0] = (k == 0).double()  # x = 0: no photons
    return (pmf * ((scale * k).clamp_max(1.0) - x[:, None]).square()).sum(1)


def clipped_poisson_power(x: torch.Tensor, scale: float, table: torch.Tensor | None = None) -> torch.Tensor:
    """Per value, the power of Poisson noise of scale ζ clipped at white: E[(min(ζ K, 1) − x)²], K ~ Poisson(x/ζ).

    Without the clip it is ζ x (the Poisson variance); the clip takes away the part above 1, most near
    white. Interpolated linearly in ``table`` (:func:`poisson_power_table`, computed when not given) at
    ``x`` clamped to [0, 1]. Returns a tensor of x's shape (float64).
    """
    table = poisson_power_table(scale) if table is None else table
    table = table.to(x.device)
    position = x.detach().double().clamp(0.0, 1.0) * (len(table) - 1)
    low = position.floor().long().clamp_max(len(table) - 2)
    weight = position - low
    return torch.lerp(table[low], table[low + 1], weight)


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
    checks.image("estimate_sigma", y, min_size=1)
    n, c, h, w = y.shape
    taps = torch.tensor(_DB2_HIGH[::-1], dtype=y.dtype, device=y.device)
    detail = y.reshape(n * c, 1, h, w)
    for dim, kernel, stride in ((-2, taps.view(1, 1, 4, 1), (2, 1)), (-1, taps.view(1, 1, 1, 4), (1, 2))):
        # PyWavelets' symmetric-mode DWT: extend by 3 on each side, filter, keep every other sample from the second.
        length = detail.shape[dim]
        detail = F.conv2d(symmetric_pad(detail, dim, 3, 3).narrow(dim, 1, length + 5), kernel, stride=stride)
    magnitude = detail.flatten(1).abs()
    magnitude = torch.where(magnitude > 0, magnitude, math.nan)
    return (magnitude.nanquantile(0.5, dim=1) / _NORMAL_MAD).view(n, c).mean(1)



class FirstCrossing:
    """The state of a rule that stops each run once, at the first update where its statistic falls to a
    threshold, and keeps the output given there: ``stopped`` and ``stop_iteration`` (K,), the last iteration.

    Subclasses compute the comparison and call :meth:`_cross`; :meth:`reset` starts over.
    """

    def reset(self) -> None:
        """Forget the stop flags and the kept outputs."""
        self._last_iteration: int | None = None
        self._output: torch.Tensor | None = None
        self.stopped: torch.Tensor | None = None
        self.stop_iteration: torch.Tensor | None = None

    def _cross(self, iteration: int, below: torch.Tensor, outputs: torch.Tensor | None) -> torch.Tensor:
        """Stop the runs whose statistic is ``below`` (bool (K,)) their threshold for the first time at
        ``iteration``, keep their ``outputs`` (K, C, H, W) there; return the stop flags, bool (K,)."""
        if self.stopped is None:
            self.stopped = torch.zeros(below.shape, dtype=torch.bool, device=below.device)
            self.stop_iteration = torch.full(below.shape, -1, dtype=torch.int64, device=below.device)
        self._last_iteration = iteration
        fire = below & ~self.stopped
        self.stop_iteration = torch.where(fire, iteration, self.stop_iteration)
        self.stopped = self.stopped | fire
        if outputs is not None:
            kept = torch.full_like(outputs, math.nan) if self._output is None else self._output
            self._output = torch.where(fire.view(-1, 1, 1, 1), outputs, kept)
        return self.stopped.clone()

    @property
    def detected_iteration(self) -> torch.Tensor | None:
        """int64 (K,): where each run stopped (the output given there is kept), −1 while running."""
        return self.stop_iteration

    def detected_output(self) -> torch.Tensor | None:
        """(K, C, H, W): the output given at each run's stop, NaN while it runs (None if none was given)."""
        return self._output


class DiscrepancyRule(FirstCrossing):
    """The discrepancy principle of Morozov (1966): stop when the residual reaches the noise level.

    With the per-value data-fit residual ρ_t = ‖A f(z_t) − y‖² / N of each run (the MSE loss of the
    problem; for a mask, the mean over the observed values) and the noise level

        ρ_noise = E‖A x − y‖² / N = σ²   (additive Gaussian noise of std σ),

    a run stops at the first update with ρ_t ≤ τ · ρ_noise; the detected iteration is that one.
    Fitting below the noise level means fitting the noise. ``σ`` is on the [0, 1] scale (25/255 for
    σ = 25); when it is not given, :func:`estimate_sigma` estimates it from y.

    When y was clipped to [0, 1] (``clipped=True``, as the papers' denoising data are) the noise left in
    y is weaker than σ near black and white, and σ² overstates the level: the residual crosses it before
    the network has fitted the image (at σ = 50 on 64-px Set9, 20 iterations before the peak of PSNR,
    1-2 dB short). The level is then that of clipped noise (:func:`clipped_noise_power`) at the
    current output, the best estimate of x the fit has, updated at every step:

        ρ_noise,t = mean_i E[(clip(x_i + n, 0, 1) − x_i)²] at x = f(z_t).

    For Poisson noise of scale ζ, y = ζ · Poisson(x/ζ), Var(y_i) = ζ x_i, so
    ρ_noise = ζ · mean(x), estimated by ζ · mean(y) (:meth:`poisson`); clipped at white, the level is
    :func:`clipped_poisson_power` at the current output.

    Parameters
    ----------
    sigma : float, sequence or Tensor (K,), optional
        Noise standard deviation(s) > 0 on the [0, 1] scale, one for all runs or one per run.
    y : Tensor (K, C, H, W), optional
        The observations, to estimate σ from when ``sigma`` is None.
    tau : float
        Safety factor τ > 0 (default 1: see :data:`DEFAULT_TAU`).
    clipped : bool
        y is clip(x + n, 0, 1): compare with the clipped noise's level at the current output, which
        :meth:`update` then needs (``outputs``).

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

    def __init__(self, sigma=None, y: torch.Tensor | None = None, tau: float = DEFAULT_TAU, clipped: bool = False):
        checks.number("DiscrepancyRule: tau", tau, low=0, open_low=True)
        if sigma is None:
            if y is None:
                raise ValueError("DiscrepancyRule: give sigma (> 0, the [0, 1] scale) or y to estimate it from")
            sigma = estimate_sigma(y)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).detach()
        if sigma.ndim > 1 or not (torch.isfinite(sigma) & (sigma > 0)).all():
            checks.invalid("DiscrepancyRule: sigma", sigma.tolist(), "a number > 0 or one per run (K,)")
        checks.flag("DiscrepancyRule: clipped", clipped)
        self.sigma, self.tau, self.clipped = sigma, float(tau), clipped
        self.noise, self.scale, self._table = "gaussian", None, None
        self.reset()

    @classmethod
    def poisson(cls, scale: float, y: torch.Tensor, tau: float = DEFAULT_TAU, clipped: bool = False) -> DiscrepancyRule:
        """The rule for Poisson noise of scale ζ = ``scale`` (> 0): ρ_noise = ζ · mean(y) per run, or with
        ``clipped`` (y clipped at white) :func:`clipped_poisson_power` at the current output."""
        checks.number("DiscrepancyRule.poisson: scale", scale, low=0, open_low=True)
        checks.image("DiscrepancyRule.poisson", y, min_size=1)
        rule = cls(sigma=(scale * y.double().mean((1, 2, 3))).sqrt(), tau=tau, clipped=clipped)
        rule.noise, rule.scale = "poisson", float(scale)
        if clipped:
            rule._table = poisson_power_table(scale)
        return rule

    def reset(self) -> None:
        """Forget the stop flags and the kept outputs."""
        super().reset()
        self._threshold: torch.Tensor | None = None
        self.residual: torch.Tensor | None = None

    def update(self, iteration: int, residual: torch.Tensor, outputs: torch.Tensor | None = None) -> torch.Tensor:
        """Record the residual (K,) of ``iteration``; return the stop flags, bool (K,).

        With ``outputs`` (K, C, H, W), each run's output at its stop is kept for :meth:`detected_output`.
        """
        name = "DiscrepancyRule.update"
        iteration = checks.iteration(name, iteration, self._last_iteration)
        if not isinstance(residual, torch.Tensor) or residual.ndim != 1:
            got = tuple(residual.shape) if isinstance(residual, torch.Tensor) else type(residual).__name__
            raise ValueError(f"{name}: residual must be a 1-D tensor (K,), got {got}")
        k = residual.shape[0] if self.stopped is None else self.stopped.shape[0]
        if self.sigma.ndim == 1:
            k = self.sigma.shape[0]
        if residual.shape[0] != k:
            raise ValueError(f"{name}: residual must have K={k} values (one per run), got {residual.shape[0]}")
        if outputs is not None:
            outputs = checks.outputs(name, outputs, None if self._output is None else tuple(self._output.shape))
            if outputs.shape[0] != k:
                raise ValueError(f"{name}: outputs must have K={k} runs, got {outputs.shape[0]}")
        elif self.clipped:
            raise ValueError(f"{name}: a rule for clipped noise needs the outputs (K, C, H, W)")
        if self.clipped:
            if self.noise == "poisson":
                level = clipped_poisson_power(outputs, self.scale, self._table).mean((1, 2, 3))
            else:
                level = clipped_noise_power(outputs, self.sigma.to(outputs.device)).mean((1, 2, 3))
            self._threshold = (self.tau * level).to(residual.dtype)
        if self.stopped is None and not self.clipped:
            self._threshold = (self.tau * self.sigma.square()).to(residual.device)
        self.residual = residual.detach()
        return self._cross(iteration, self.residual <= self._threshold, outputs)

    def to_dict(self) -> dict:
        """Settings (``sigma``: the effective σ) and, under ``"state"``, the state as plain numbers."""
        sigma = self.sigma.tolist()
        state = {"iteration": self._last_iteration, "stopped": json_values(self.stopped),
                 "stop_iteration": json_values(self.stop_iteration), "residual": json_values(self.residual)}
        noise = {"noise": self.noise} | ({"scale": self.scale} if self.scale is not None else {})
        return {"sigma": sigma, "tau": self.tau, "clipped": self.clipped, **noise, "state": state}

    @classmethod
    def from_dict(cls, data: dict) -> DiscrepancyRule:
        """A fresh rule with the settings of :meth:`to_dict`'s output (its ``"state"`` is not restored)."""
        unknown = set(data) - {"sigma", "tau", "clipped", "noise", "scale", "state"}
        if unknown:
            raise ValueError(f"DiscrepancyRule: unknown fields {sorted(unknown)}; accepted: sigma, tau, clipped, noise, "
                             f"scale, state")
        rule = cls(sigma=data.get("sigma"), tau=data.get("tau", DEFAULT_TAU), clipped=data.get("clipped", False))
        if data.get("noise", "gaussian") == "poisson":
            rule.noise, rule.scale = "poisson", float(data["scale"])
            rule._table = poisson_power_table(rule.scale) if rule.clipped else None
        return rule
