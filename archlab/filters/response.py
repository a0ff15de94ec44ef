"""Exact frequency responses of symmetric FIR filters: amplitude, magnitude, extrema, band power, cut-off.

Frequencies are in cycles per output sample on [0, 0.5]; extrema are found on a grid of :data:`GRID`
points per interval and refined by golden-section search.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

#: Grid points per frequency interval before the local refinement of an extremum.
GRID = 4097
#: |H| at the half-power cut-off, relative to DC.
HALF_POWER = 1.0 / math.sqrt(2.0)


def amplitude(taps: np.ndarray, f) -> np.ndarray:
    """Zero-phase amplitude ``A(f) = Σ_k h[k] cos(2π f (k - c))`` (``H(f) = A(f) e^{-i 2π f c}`` for
    symmetric taps, ``|H| = |A|``), in blocks of about a million products."""
    f = np.atleast_1d(np.asarray(f, dtype=np.float64))
    offsets = np.arange(len(taps)) - (len(taps) - 1) / 2
    out = np.empty(len(f))
    block = max(1, 2**20 // len(taps))
    for start in range(0, len(f), block):
        out[start:start + block] = np.cos(2 * np.pi * np.outer(f[start:start + block], offsets)) @ taps
    return out


def magnitude(taps: np.ndarray, f) -> np.ndarray:
    return np.abs(amplitude(taps, f))


def extreme(taps: np.ndarray, low: float, high: float, *, largest: bool) -> float:
    """Largest (or smallest) ``|H(f)|`` on ``[low, high]``: grid, then a bounded local search.

    The smallest is 0 when the amplitude changes sign on the grid (a null in the band).
    """
    grid = np.linspace(low, high, GRID)
    values = amplitude(taps, grid)
    if not largest and np.any(np.signbit(values[1:]) != np.signbit(values[:-1])):
        return 0.0
    values = np.abs(values)
    i = int(np.argmax(values) if largest else np.argmin(values))
    best = values[i]
    if 0 < i < len(grid) - 1:
        sign = -1.0 if largest else 1.0
        found = golden(lambda f: sign * magnitude(taps, f)[0], grid[i - 1], grid[i + 1])
        best = max(best, -found) if largest else min(best, found)
    return float(best)


def golden(function: Callable[[float], float], low: float, high: float, tolerance: float = 1e-12) -> float:
    """The minimum of a unimodal ``function`` on ``[low, high]`` by golden-section search."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = function(c), function(d)
    while b - a > tolerance:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = function(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = function(d)
    return min(fc, fd, function(low), function(high))


def mean_power(taps: np.ndarray, low: float, high: float) -> float:
    """Mean of ``|H(f)|²`` over ``[low, high]``, exact: ``|H|² = Σ_m r[m] cos(2π f m)``, ``r`` the
    autocorrelation of the taps."""
    r = np.correlate(taps, taps, mode="full")[len(taps) - 1:]
    if high <= low:
        return float(r[0] + 2.0 * np.sum(r[1:] * np.cos(2.0 * np.pi * low * np.arange(1, len(r)))))
    m = np.arange(1, len(r))
    sines = (np.sin(2.0 * np.pi * m * high) - np.sin(2.0 * np.pi * m * low)) / (np.pi * m)
    return float((r[0] * (high - low) + np.sum(r[1:] * sines)) / (high - low))


def cutoff(taps: np.ndarray, dc: float) -> float:
    grid = np.linspace(0.0, 0.5, GRID)
    below = np.nonzero(magnitude(taps, grid) <= dc * HALF_POWER)[0]
    if len(below) == 0:
        return float("nan")
    low, high = grid[int(below[0]) - 1], grid[int(below[0])]
    while high - low > 1e-13:  # bisection on the first crossing of the half-power level
        middle = (low + high) / 2
        low, high = (middle, high) if magnitude(taps, middle)[0] > dc * HALF_POWER else (low, middle)
    return float((low + high) / 2)
