"""Automatic stopping for the deep image prior: blur, sharpness, and the stop rules.

Paper 000 (Shi et al., IJCV 2022), §4.3, eq. 8, stops a fit when the ratio of the
output's blur to its sharpness, r = B / S, has stopped moving:

    Δr_t = | mean(r_{t-1} .. r_{t-n}) − mean(r_{t-n-1} .. r_{t-2n}) | < ε,   n = 100, ε = 0.01.

B is the no-reference blur of Crete et al. (2007) exactly as ``skimage.measure.blur_effect``
computes it; S is the maximum-local-variation sharpness of Bahrami & Kot (2014).

Wang et al. (TMLR 2023) stop at the minimum of the variance of the recent outputs, over a
window (:class:`WMVRule`, ES-WMV) or exponentially weighted (:class:`EMVRule`, ES-EMV); the
discrepancy principle (:class:`DiscrepancyRule`) stops when the data-fit residual reaches the
noise level, given or estimated by :func:`estimate_sigma`; for JPEG, :class:`JPEGConsistencyRule` stops when the
moving average enters the observation's quantisation constraint set. :class:`EMA` is the bias-corrected
moving average of the outputs and :class:`DivergenceGuard` the backtracking of paper 000's code.

Modules: :mod:`~archlab.stopping.measures` (blur, sharpness), :mod:`~archlab.stopping.ratio` (the ratio
rule, the guard), :mod:`~archlab.stopping.variance` (ES-WMV, ES-EMV, the EMA),
:mod:`~archlab.stopping.discrepancy` (the discrepancy principle, σ estimated from y),
:mod:`~archlab.stopping.consistency` (JPEG consistency, block DCT); their public names
are all here.

Every stop rule, for K runs at once, has the same small interface:

    flags = rule.update(iteration, value)   # bool (K,): runs that have stopped (a flag stays set)
    rule.stopped, rule.stop_iteration       # bool (K,), int64 (K,) (−1 while running)
    rule.detected_iteration                 # int64 (K,): the iteration whose output to keep (−1: none yet)
    rule.reset(); rule.to_dict()            # forget everything; settings and state as plain numbers

``value`` is what the rule watches: r (K,) for :class:`RatioRule`, the outputs (K, C, H, W)
for :class:`WMVRule` and :class:`EMVRule`, the residual (K,) for :class:`DiscrepancyRule`, the moving
averages (K, C, H, W) for :class:`JPEGConsistencyRule`;
``iteration`` must increase from call to call. ``update`` is device-tensor work only, on the
input's device, with no host synchronisation; read the state (``to_dict``, ``.tolist()``,
``detected_output``) at evaluation points. :class:`DivergenceGuard` alone takes host scalars.
"""
from archlab.stopping.consistency import (
    DEFAULT_CONSISTENCY_TAU,
    JPEGConsistencyRule,
    block_coefficients,
    dct_matrix,
)
from archlab.stopping.discrepancy import (
    DEFAULT_TAU,
    DiscrepancyRule,
    clipped_noise_power,
    clipped_poisson_power,
    estimate_sigma,
    poisson_power_table,
)
from archlab.stopping.measures import (
    DEFAULT_DECAY,
    DEFAULT_H_SIZE,
    DEFAULT_TOP,
    MEASURES,
    blur_effect,
    blur_effect_paper,
    blur_sharpness_ratio,
    mlv_map,
    mlv_sharpness,
    mlv_sharpness_paper,
)
from archlab.stopping.ratio import DEFAULT_EPS, DEFAULT_WINDOW, EPS_FOR_MEASURES, DivergenceGuard, RatioRule, ratio_rule_delta
from archlab.stopping.variance import (
    DEFAULT_EMA_BETA,
    DEFAULT_EMV_DECAY,
    DEFAULT_EMV_WARMUP,
    DEFAULT_PATIENCE,
    DEFAULT_VARIANCE_WINDOW,
    EMA,
    EMVRule,
    WMVRule,
)

__all__ = [
    "DEFAULT_CONSISTENCY_TAU", "JPEGConsistencyRule", "block_coefficients", "dct_matrix", "DEFAULT_DECAY", "DEFAULT_EMA_BETA", "DEFAULT_EMV_DECAY", "DEFAULT_EMV_WARMUP", "DEFAULT_EPS", "DEFAULT_H_SIZE",
    "DEFAULT_PATIENCE", "DEFAULT_TAU", "DEFAULT_TOP", "DEFAULT_VARIANCE_WINDOW", "DEFAULT_WINDOW", "EMA", "EMVRule",
    "EPS_FOR_MEASURES", "MEASURES", "DiscrepancyRule", "DivergenceGuard", "RatioRule", "WMVRule", "blur_effect",
    "blur_effect_paper", "blur_sharpness_ratio", "clipped_noise_power", "clipped_poisson_power", "estimate_sigma", "mlv_map", "mlv_sharpness", "mlv_sharpness_paper",
    "poisson_power_table", "ratio_rule_delta",
]
