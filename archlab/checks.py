"""Argument checks: every layer's one-line errors, in one form.

A bad value raises ``ValueError("WHERE: VALUE is invalid; allowed: WHAT")`` (:func:`fail` for the
rest): ``WHERE`` names the argument as the caller knows it (``denoise.sigma``, ``RatioRule: window``,
``--iterations``, a study file's key), ``WHAT`` the values it accepts. Scalars are checked without
torch; tensors with torch imported where they are checked, so the command line stays light.

Examples
--------
>>> integer("iterations", 500)
500
>>> number("denoise.sigma", -1, low=0)
Traceback (most recent call last):
    ...
ValueError: denoise.sigma: -1 is invalid; allowed: a finite number ≥ 0
"""

from __future__ import annotations

import math
import numbers


def fail(where: str, message: str):
    """Raise the one-line error ``WHERE: MESSAGE``."""
    raise ValueError(f"{where}: {message}")


def invalid(where: str, value, allowed: str):
    """Raise ``WHERE: VALUE is invalid; allowed: ALLOWED``."""
    fail(where, f"{value!r} is invalid; allowed: {allowed}")


def integer(where: str, value, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int, which must be an integer (not a bool) in ``[low, high]``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        invalid(where, value, f"an integer ≥ {low}" if high is None else f"an integer in [{low}, {high}]")
    return int(value)


def _interval(low: float, high: float, open_low: bool, open_high: bool) -> str:
    if math.isinf(high):
        return "a finite number" if math.isinf(low) else f"a finite number {'>' if open_low else '≥'} {low:g}"
    return f"a number in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"


def number(where: str, value, *, low: float = -math.inf, high: float = math.inf, open_low: bool = False,
           open_high: bool = False) -> float:
    """``value`` as a float, which must be a finite real number (not a bool) in the interval from ``low`` to
    ``high`` (open at either end as asked)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (low < value if open_low else low <= value) and (value < high if open_high else value <= high)
    if not ok:
        invalid(where, value, _interval(low, high, open_low, open_high))
    return float(value)


def flag(where: str, value) -> bool:
    """``value``, which must be a bool (NumPy's included)."""
    if type(value).__name__ not in ("bool", "bool_"):
        invalid(where, value, "true, false")
    return bool(value)


def choice(where: str, value, allowed):
    """``value``, which must be one of ``allowed``."""
    if value not in allowed:
        invalid(where, value, ", ".join(map(str, allowed)))
    return value


def image(where: str, x, *, channels: tuple[int, ...] | None = (1, 3), min_size: int = 1,
          floating: bool = False) -> None:
    """``x`` must be an image batch: a ``(N, C, H, W)`` tensor, ``C`` in ``channels`` (any when None),
    at least ``min_size`` pixels a side, of a floating-point dtype when ``floating``."""
    import torch

    if not isinstance(x, torch.Tensor) or x.ndim != 4 or (channels is not None and x.shape[1] not in channels):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        kind = "" if channels is None else f" with C in {{{', '.join(map(str, channels))}}}"
        fail(where, f"expected an (N, C, H, W) tensor{kind}, got {got}")
    if min(x.shape[-2:]) < min_size:
        fail(where, f"expected at least {min_size}x{min_size} pixels, got {x.shape[-1]}x{x.shape[-2]}")
    if floating and not x.is_floating_point():
        fail(where, f"expected a floating-point tensor, got dtype {x.dtype}")


def outputs(where: str, outputs, shape: tuple | None):
    """Network outputs ``(K, C, H, W)``, of ``shape`` when given (that of the first update); detached."""
    import torch

    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 4:
        got = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        fail(where, f"outputs must be a (K, C, H, W) tensor, got {got}")
    if shape is not None and tuple(outputs.shape) != shape:
        fail(where, f"outputs must keep the shape {shape} of the first update, got {tuple(outputs.shape)}")
    return outputs.detach()


def iteration(where: str, value, last: int | None) -> int:
    """An integer iteration, after ``last`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(where, f"iteration must be an integer, got {value!r}")
    if last is not None and value <= last:
        fail(where, f"iteration must be > {last} (the previous update's), got {value}")
    return int(value)
