"""Argument checks shared by the stop rules and measures: one-line errors naming the argument and what it accepts."""

from __future__ import annotations

import math
import numbers

import torch


def image(x: torch.Tensor, name: str, min_size: int) -> None:
    """An image batch (N, C, H, W), C in {1, 3}, at least ``min_size`` pixels a side."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: x must be a (N, C, H, W) tensor with C in {{1, 3}}, got {shape}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"{name}: x must be at least {min_size}x{min_size} pixels, got {x.shape[-1]}x{x.shape[-2]}")


def positive_int(value, name: str) -> int:
    """An integer ≥ 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value



def fraction(value, name: str, low_open: bool) -> float:
    """A number in [0, 1), or (0, 1) with ``low_open``."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and (0 < value < 1 if low_open else 0 <= value < 1)):
        raise ValueError(f"{name} must be a number in {'(0, 1)' if low_open else '[0, 1)'}, got {value!r}")
    return float(value)


def outputs(name: str, outputs, shape: tuple | None) -> torch.Tensor:
    """Outputs (K, C, H, W), of ``shape`` when given (that of the first update); detached."""
    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 4:
        got = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise ValueError(f"{name}: outputs must be a (K, C, H, W) tensor, got {got}")
    if shape is not None and tuple(outputs.shape) != shape:
        raise ValueError(f"{name}: outputs must keep the shape {shape} of the first update, got {tuple(outputs.shape)}")
    return outputs.detach()


def iteration(name: str, iteration, last: int | None) -> int:
    """An integer iteration, after ``last`` when given."""
    if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral):
        raise ValueError(f"{name}: iteration must be an integer, got {iteration!r}")
    if last is not None and iteration <= last:
        raise ValueError(f"{name}: iteration must be > {last} (the previous update's), got {iteration}")
    return int(iteration)


def plain(values: torch.Tensor | None) -> list | None:
    """A (K,) tensor as a JSON-ready list: floats/ints/bools, None for inf and NaN (host sync: evaluation time)."""
    if values is None:
        return None
    return [v if not isinstance(v, float) or math.isfinite(v) else None for v in values.tolist()]
