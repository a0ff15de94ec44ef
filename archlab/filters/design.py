"""The :class:`Filter` (taps, factor, exact response and figures) and :func:`design`, one function for every kind."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from archlab.filters import response

KINDS = ("nearest", "linear", "cubic", "lanczos", "gaussian", "kaiser", "equiripple", "least_squares", "taps")

# Largest filter a design may need; beyond it a specification counts as unmet.
MAX_TAPS = 4097
# Grid points per frequency interval before the local refinement of an extremum.


@dataclass(frozen=True, eq=False)
class Filter:
    """A symmetric FIR low-pass filter for upsampling by ``factor``.

    Examples
    --------
    >>> flt = design("kaiser", 2, attenuation_db=60, transition_width=0.15)
    >>> flt.factor, len(flt.taps) % 2, round(float(flt.taps.sum()), 6)
    (2, 1, 2.0)

    Parameters
    ----------
    name : str
        Catalogue name or a description.
    factor : int
        Upsampling factor ``s`` ≥ 2 the filter is designed for.
    taps : array_like
        1-D symmetric coefficients on the output (upsampled) grid, summing to
        ``factor``; stored as a read-only float64 array.
    provenance : str
        Where the taps come from (design method and parameters, or the publication).
    passband_edge, stopband_edge : float, optional
        Band edges of a designed filter, in cycles per output sample; ``None``
        means the band split of zero insertion, ``0.5 / factor``.

    Notes
    -----
    ``taps[k]`` weights the output sample ``k - delay`` samples from the filter
    centre. ``H(f) = Σ_k h[k] e^{-i 2π f k}`` (:meth:`response`); since ``h`` is
    symmetric, ``|H(f)| = |h_c + 2 Σ_{m>0} h[c+m] cos(2π f m)|`` for odd length.
    """

    name: str
    factor: int
    taps: np.ndarray
    provenance: str = ""
    passband_edge: float | None = None
    stopband_edge: float | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: {self.name!r} must be a non-empty string")
        object.__setattr__(self, "factor", _factor(self.factor))
        taps = _taps_array(self.taps)
        if not math.isclose(taps.sum(), self.factor, rel_tol=1e-9):
            raise ValueError(f"taps: they sum to {taps.sum():.12g}, must sum to the factor {self.factor}")
        taps.setflags(write=False)
        object.__setattr__(self, "taps", taps)
        if not isinstance(self.provenance, str):
            raise ValueError(f"provenance: {self.provenance!r} must be a string")
        for field in ("passband_edge", "stopband_edge"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, _frequency(field, value))
        if None not in (self.passband_edge, self.stopband_edge) and self.passband_edge > self.stopband_edge:
            raise ValueError(f"passband_edge: {self.passband_edge} must not exceed stopband_edge {self.stopband_edge}")

    def __eq__(self, other):
        if not isinstance(other, Filter):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash((self.name, self.factor, self.taps.tobytes()))

    @property
    def delay(self) -> float:
        """Index of the filter centre, ``(len(taps) - 1) / 2`` (half-integer for even length)."""
        return (len(self.taps) - 1) / 2

    @property
    def edges(self) -> tuple[float, float]:
        """``(passband_edge, stopband_edge)``, each defaulting to ``0.5 / factor``."""
        split = 0.5 / self.factor
        return (self.passband_edge if self.passband_edge is not None else split,
                self.stopband_edge if self.stopband_edge is not None else split)

    def response(self, n: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Exact frequency response ``H(f) = Σ_k h[k] e^{-i 2π f k}``.

        Parameters
        ----------
        n : int
            Number of frequencies, evenly spaced on ``[0, 0.5]`` (both ends included).

        Returns
        -------
        f : ndarray, shape (n,)
            Frequencies in cycles per output sample.
        H : ndarray of complex, shape (n,)
            The DTFT of the taps at ``f`` (phase relative to tap 0): the zero-phase amplitude
            ``A(f) = Σ_k h[k] cos(2π f (k - c))`` times ``e^{-i 2π f c}``, ``c`` = :attr:`delay`.
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
            raise ValueError(f"n: {n!r} must be an integer ≥ 2")
        f = np.linspace(0.0, 0.5, int(n))
        return f, response.amplitude(self.taps, f) * np.exp(-2j * np.pi * f * self.delay)

    def summary(self, stopband_edge: float | None = None, passband_edge: float | None = None) -> dict[str, float]:
        """Figures of merit of the magnitude response on the filter's bands, relative to the DC gain.

        With ``G(f) = 20 log10(|H(f)| / |H(0)|)`` in dB and frequencies in cycles per output sample:

        * ``dc_gain`` - ``H(0) = Σ h[k]`` (equals the factor).
        * ``passband_edge`` - the passband is ``[0, passband_edge]``.
        * ``passband_ripple_db`` - ``max G - min G`` over the passband; for
          interpolators this is dominated by their roll-off towards the band edge;
          ``inf`` when the passband holds a null (the amplitude changes sign).
        * ``stopband_edge`` - the stopband is ``[stopband_edge, 0.5]``.
        * ``stopband_attenuation_db`` - ``-max G`` over the stopband: the smallest
          attenuation there (the highest side lobe), in positive dB.
        * ``stopband_mean_attenuation_db`` - ``-10 log10`` of the mean of ``|H(f) / H(0)|²``
          over the stopband (the least-squares stopband energy, as ``firls`` minimises it),
          computed exactly from the taps' autocorrelation ``r``:
          ``∫_a^b |H|² df = r[0] (b - a) + Σ_{m≥1} r[m] (sin 2πmb - sin 2πma) / (πm)``.
        * ``cutoff_3db`` - the lowest ``f`` with ``|H(f)| = |H(0)| / √2`` (half power,
          ``G = -3.0103`` dB); NaN if the response never falls that far.
        * ``replica_center_db`` - ``G(0.75 / s)``: the gain at the centre of the first
          replica band ``[0.5/s, 1/s]``, the mirror image of the passband centre.

        The edges default to the filter's design edges (:attr:`edges`: those of its
        design or its catalogue file), else ``0.5 / s``. Extremes are found on a
        4097-point grid per interval and refined with a bounded scalar search; the
        cut-off with Brent's method, on the exact DTFT.
        """
        pass_edge, stop_edge = self.edges
        pass_edge = pass_edge if passband_edge is None else _frequency("passband_edge", passband_edge)
        stop_edge = stop_edge if stopband_edge is None else _frequency("stopband_edge", stopband_edge)
        dc = abs(float(self.taps.sum()))
        with np.errstate(divide="ignore"):
            def gain_db(value):
                return float(20.0 * np.log10(value / dc))

            pass_max = response.extreme(self.taps, 0.0, pass_edge, largest=True)
            pass_min = response.extreme(self.taps, 0.0, pass_edge, largest=False)
            return {
                "dc_gain": float(self.taps.sum()),
                "passband_edge": pass_edge,
                "passband_ripple_db": gain_db(pass_max) - gain_db(pass_min),
                "stopband_edge": stop_edge,
                "stopband_attenuation_db": 0.0 - gain_db(response.extreme(self.taps, stop_edge, 0.5, largest=True)),
                "stopband_mean_attenuation_db": float(-10.0 * np.log10(response.mean_power(self.taps, stop_edge, 0.5)
                                                                       / dc**2)),
                "cutoff_3db": response.cutoff(self.taps, dc),
                "replica_center_db": gain_db(response.magnitude(self.taps, 0.75 / self.factor)[0]),
            }

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (TOML/JSON-ready) with the explicit taps; :meth:`from_dict` inverts it exactly."""
        data = {"name": self.name, "factor": self.factor, "kind": "taps",
                "taps": [float(t) for t in self.taps], "provenance": self.provenance}
        for field in ("passband_edge", "stopband_edge"):
            if getattr(self, field) is not None:
                data[field] = getattr(self, field)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Filter:
        """Build a filter from a specification dict: ``kind``, ``factor``, ``name``,
        ``provenance`` and the kind's parameters (the TOML catalogue format), via :func:`design`.

        The band edges ``passband_edge``/``stopband_edge`` may be given for every kind: they
        state the bands the filter was designed for and replace the design's own.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"filter specification: expected a mapping, got {type(data).__name__}")
        params = dict(data)
        if "kind" not in params:
            raise ValueError(f"kind: missing; accepted: {', '.join(KINDS)}")
        kind = params.pop("kind")
        if kind == "taps":
            return design(kind, **params)
        edges = {key: params.pop(key) for key in ("passband_edge", "stopband_edge") if key in params}
        flt = design(kind, **params)
        if not edges:
            return flt
        return Filter(flt.name, flt.factor, flt.taps, flt.provenance,
                      edges.get("passband_edge", flt.passband_edge), edges.get("stopband_edge", flt.stopband_edge))


def design(kind: str, factor: int = 2, *, name: str | None = None, provenance: str = "", **params) -> Filter:
    """Design an upsampling filter of the given ``kind`` for ``factor``.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    factor : int
        Upsampling factor ``s`` ≥ 2.
    name : str, optional
        Defaults to the kind and its parameters.
    provenance : str
        A note prepended to the design description recorded in the filter.
    **params
        Per kind (frequencies in cycles per output sample):

        * ``cubic``: ``a`` (default -0.5, Keys 1981):
          ``K(x) = (a+2)|x|³ - (a+3)|x|² + 1`` for ``|x| ≤ 1``,
          ``a|x|³ - 5a|x|² + 8a|x| - 4a`` for ``1 < |x| < 2``.
        * ``lanczos``: ``a``, a positive integer (default 3); each output phase is
          normalised to sum 1, as image resamplers do.
        * ``gaussian``: ``sigma`` ≥ 0 in input pixels and ``taps``, an odd count
          (default ``2 s + 1``: 5 for ×2, paper 000's kernel);
          ``g[k] ∝ exp(-(k/s)² / (2σ²))``, ``k = -K..K`` (paper 000 eq. 6-7), scaled
          to sum ``s``; ``sigma = 0`` is the bed of nails (centre tap ``s``, zeros around).
        * ``kaiser``: ``attenuation_db`` > 0, ``transition_width`` > 0, ``cutoff``
          (default ``0.5/s``); the transition band is ``cutoff ± width/2``. The length
          starts at ``scipy.signal.kaiserord``'s estimate and grows until the
          stopband ``[cutoff + width/2, 0.5]`` is attenuated by ``attenuation_db``.
        * ``equiripple`` (``remez``), ``least_squares`` (``firls``): the same band
          parameters, ``stopband_weight`` (default 1) and either ``numtaps`` (odd) or
          ``attenuation_db``, which picks the smallest odd length that meets it.
        * ``taps``: ``taps``, the symmetric coefficients (scaled by ``s / Σ taps``
          when they do not sum to ``s``, the scale recorded in the provenance);
          optional ``passband_edge``/``stopband_edge``.

    Returns
    -------
    Filter

    Raises
    ------
    ValueError
        Unknown kind or parameter, a value out of range, or a specification no
        filter of at most :data:`MAX_TAPS` taps meets; the message names the field.

    Examples
    --------
    >>> flt = design("kaiser", 2, attenuation_db=60, transition_width=0.15)
    >>> flt.factor, len(flt.taps) % 2, round(float(flt.taps.sum()), 6)
    (2, 1, 2.0)
    """
    if kind not in _DESIGNERS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    factor = _factor(factor)
    accepted, designer = _DESIGNERS[kind]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a parameter of kind {kind!r}; accepted: {', '.join(accepted) or 'none'}")
    taps, note, edges = designer(factor, **params)
    if name is None:
        name = kind + "".join(f"-{key}{value}" for key, value in sorted(params.items()) if np.ndim(value) == 0)
    if not isinstance(provenance, str):
        raise ValueError(f"provenance: {provenance!r} must be a string")
    provenance = "; ".join(part for part in (provenance, note) if part)
    return Filter(name, factor, taps, provenance, *edges)


def _factor(factor) -> int:
    if isinstance(factor, bool) or not isinstance(factor, numbers.Integral) or factor < 2:
        raise ValueError(f"factor: {factor!r} must be an integer ≥ 2")
    return int(factor)


def _taps_array(taps) -> np.ndarray:
    try:
        array = np.array(taps, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"taps: {taps!r} is not a list of numbers") from exc
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"taps: must be a non-empty 1-D list, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("taps: must all be finite")
    if not np.allclose(array, array[::-1], rtol=0.0, atol=1e-12 * np.abs(array).max()):
        raise ValueError("taps: must be symmetric (h[k] == h[L-1-k])")
    return (array + array[::-1]) / 2


def _real(field: str, value, low: float | None = None, *, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{field}: {value!r} must be a finite number")
    if low is not None and (value <= low if strict else value < low):
        raise ValueError(f"{field}: {value!r} must be {'>' if strict else '≥'} {low}")
    return float(value)


def _frequency(field: str, value) -> float:
    value = _real(field, value, 0.0, strict=True)
    if value > 0.5:
        raise ValueError(f"{field}: {value!r} must lie in (0, 0.5] cycles per output sample")
    return value


def _odd(field: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1 or value % 2 == 0:
        raise ValueError(f"{field}: {value!r} must be an odd positive integer")
    return int(value)


def _sample_kernel(kernel: Callable[[np.ndarray], np.ndarray], support: float, factor: int) -> np.ndarray:
    """``K(d / s)`` at the offsets ``d`` strictly inside ``support * s``, each phase summing to 1."""
    half = support * factor
    shift = 0.5 if factor % 2 == 0 else 0.0
    reach = math.ceil(half) + 1
    offsets = np.arange(-reach, reach + 1) + shift
    offsets = offsets[np.abs(offsets) < half]
    taps = kernel(offsets / factor)
    phases = np.arange(len(taps)) % factor
    return taps / np.bincount(phases, weights=taps)[phases]


def _nearest(factor):
    return _sample_kernel(np.ones_like, 0.5, factor), "box of s taps (nearest neighbour, REFERENCE §1)", ()


def _linear(factor):
    taps = _sample_kernel(lambda x: np.maximum(0.0, 1.0 - np.abs(x)), 1.0, factor)
    return taps, "triangle max(0, 1-|x|) at x = d/s, align_corners=False (linear, REFERENCE §1)", ()


def _cubic(factor, a=-0.5):
    a = _real("a", a)

    def keys(x):
        x = np.abs(x)
        inner = (a + 2) * x**3 - (a + 3) * x**2 + 1
        outer = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return np.where(x <= 1, inner, np.where(x < 2, outer, 0.0))

    return _sample_kernel(keys, 2.0, factor), f"Keys cubic convolution, a = {a:g}, at x = d/s, align_corners=False", ()


def _lanczos(factor, a=3):
    if isinstance(a, bool) or not isinstance(a, numbers.Integral) or a < 1:
        raise ValueError(f"a: {a!r} must be a positive integer (the Lanczos lobes, e.g. 2 or 3)")
    taps = _sample_kernel(lambda x: np.sinc(x) * np.sinc(x / a), float(a), factor)
    return taps, f"Lanczos sinc(x) sinc(x/{a}) at x = d/s, align_corners=False, phases normalised", ()


def _gaussian(factor, sigma=None, taps=None):
    if sigma is None:
        raise ValueError("sigma: required for kind 'gaussian' (≥ 0, in input pixels)")
    sigma = _real("sigma", sigma, 0.0)
    length = _odd("taps", 2 * factor + 1 if taps is None else taps)
    k = np.arange(length) - (length - 1) // 2
    if sigma == 0.0:
        weights = (k == 0).astype(np.float64)
        note = f"bed of nails (Gaussian sigma = 0), {length} taps"
    else:
        weights = np.exp(-((k / factor) ** 2) / (2 * sigma**2))
        note = f"Gaussian exp(-(k/s)^2/(2 sigma^2)), sigma = {sigma:g} input pixels, {length} taps (paper 000 eq. 6-7)"
    return factor * weights / weights.sum(), note, ()


def _bands(factor, transition_width, cutoff):
    if transition_width is None:
        raise ValueError("transition_width: required (cycles per output sample, > 0)")
    width = _real("transition_width", transition_width, 0.0, strict=True)
    centre = 0.5 / factor if cutoff is None else _frequency("cutoff", cutoff)
    low, high = centre - width / 2, centre + width / 2
    if low <= 0.0 or high >= 0.5:
        raise ValueError(f"transition_width: {width:g} around cutoff {centre:g} must keep the band inside (0, 0.5)")
    return low, high


def _attenuation(value) -> float:
    return _real("attenuation_db", value, 0.0, strict=True)


def _trim(taps: np.ndarray) -> np.ndarray:
    """Drop end taps that are zero up to rounding (half-band designs produce them)."""
    while len(taps) > 1 and abs(taps[0]) <= 1e-14 * np.abs(taps).max():
        taps = taps[1:-1]
    return taps


def _meeting(build: Callable[[int], np.ndarray], lengths: range, factor: int, stop: float, attenuation: float,
             method: str) -> np.ndarray:
    """The first length in ``lengths`` whose design attenuates ``[stop, 0.5]`` by ``attenuation`` dB."""
    for n in lengths:
        taps = _trim(build(n))
        taps = factor * taps / taps.sum()
        if 20 * np.log10(factor / response.extreme(taps, stop, 0.5, largest=True)) >= attenuation:
            return taps
    longest = lengths[-1] if lengths else MAX_TAPS
    raise ValueError(f"attenuation_db: {attenuation:g} dB from {stop:g} cannot be met by {method} "
                     f"with at most {longest} taps; widen transition_width or lower attenuation_db")


def _kaiser_length(attenuation: float, low: float, high: float) -> int:
    """Kaiser's length estimate (``scipy.signal.kaiserord``), made odd:
    ``N = ⌈(A - 7.95) / (2.285 · 2π Δf) + 1⌉``."""
    if attenuation < 8:
        raise ValueError(f"attenuation_db: {attenuation:g} is below 8 dB, where Kaiser's length formula "
                         "does not hold; allowed: ≥ 8")
    return math.ceil((attenuation - 7.95) / 2.285 / (2 * np.pi * (high - low)) + 1) | 1


def _kaiser_beta(attenuation: float) -> float:
    """Kaiser's window shape for a stopband attenuation ``A`` dB (``scipy.signal.kaiser_beta``)."""
    if attenuation > 50:
        return 0.1102 * (attenuation - 8.7)
    if attenuation > 21:
        return 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    return 0.0


def _windowed_sinc(n: int, cutoff: float, beta: float) -> np.ndarray:
    """``scipy.signal.firwin(n, cutoff, window=("kaiser", beta), fs=1)``: the ideal low-pass
    ``2 f_c sinc(2 f_c (k - c))`` times a Kaiser window, scaled to unit DC gain."""
    m = np.arange(n) - (n - 1) / 2
    taps = 2 * cutoff * np.sinc(2 * cutoff * m) * np.kaiser(n, beta)
    return taps / taps.sum()


def _kaiser(factor, attenuation_db=None, transition_width=None, cutoff=None):
    if attenuation_db is None:
        raise ValueError("attenuation_db: required for kind 'kaiser' (> 0 dB)")
    attenuation = _attenuation(attenuation_db)
    low, high = _bands(factor, transition_width, cutoff)
    beta = _kaiser_beta(attenuation)
    start = _kaiser_length(attenuation, low, high)
    lengths = range(start, min(MAX_TAPS, start + start // 4 + 8) + 1, 2)

    def build(n):
        return _windowed_sinc(n, (low + high) / 2, beta)

    taps = _meeting(build, lengths, factor, high, attenuation, "a Kaiser window design")
    note = (f"Kaiser window design (kaiserord/firwin): {attenuation:g} dB from {high:.4g}, transition "
            f"{low:.4g}-{high:.4g}, beta {beta:.4f}, {len(taps)} taps")
    return taps, note, (low, high)


def _optimal(method: str):
    """Designer for ``remez`` or ``firls``: fixed ``numtaps`` or the shortest meeting ``attenuation_db``."""

    def designer(factor, transition_width=None, cutoff=None, numtaps=None, attenuation_db=None, stopband_weight=1.0):
        low, high = _bands(factor, transition_width, cutoff)
        weight = _real("stopband_weight", stopband_weight, 0.0, strict=True)
        if (numtaps is None) == (attenuation_db is None):
            raise ValueError("numtaps: give exactly one of numtaps or attenuation_db")

        from scipy import signal  # only the optimal designs need it; importing it costs ~0.5 s

        def build(n):
            if method == "remez":
                return signal.remez(n, [0, low, high, 0.5], [1, 0], weight=[1, weight], fs=1.0)
            return signal.firls(n, [0, low, high, 0.5], [1, 1, 0, 0], weight=[1, weight], fs=1.0)

        if numtaps is not None:
            n = _odd("numtaps", numtaps)
            if n < 3 or n > MAX_TAPS:
                raise ValueError(f"numtaps: {n} must lie in [3, {MAX_TAPS}]")
            taps = _trim(build(n))
            taps, spec = factor * taps / taps.sum(), f"{n} taps"
        else:
            attenuation = _attenuation(attenuation_db)
            estimate = _kaiser_length(attenuation, low, high)
            lengths = range(max(3, estimate // 2 | 1), min(MAX_TAPS, 2 * estimate + 1) + 1, 2)
            taps = _meeting(build, lengths, factor, high, attenuation, f"scipy.signal.{method}")
            spec = f"{attenuation:g} dB from {high:.4g}, {len(taps)} taps"
        note = f"scipy.signal.{method}: band edges {low:.4g}/{high:.4g}, stopband weight {weight:g}, {spec}"
        return taps, note, (low, high)

    return designer


def _explicit(factor, taps=None, passband_edge=None, stopband_edge=None):
    if taps is None:
        raise ValueError("taps: required for kind 'taps'")
    array = _taps_array(taps)
    total = array.sum()
    if not total > 0:
        raise ValueError(f"taps: they sum to {total:.6g}; a low-pass filter needs a positive sum")
    note = ""
    if not math.isclose(total, factor, rel_tol=1e-12):
        array = array * (factor / total)
        note = f"scaled by {factor}/{total:.10g} = {factor / total:.10g} so the taps sum to the factor"
    return array, note, (passband_edge, stopband_edge)


_BANDS = ("transition_width", "cutoff")
_DESIGNERS: dict[str, tuple[tuple[str, ...], Callable]] = {
    "nearest": ((), _nearest),
    "linear": ((), _linear),
    "cubic": (("a",), _cubic),
    "lanczos": (("a",), _lanczos),
    "gaussian": (("sigma", "taps"), _gaussian),
    "kaiser": (("attenuation_db",) + _BANDS, _kaiser),
    "equiripple": (_BANDS + ("numtaps", "attenuation_db", "stopband_weight"), _optimal("remez")),
    "least_squares": (_BANDS + ("numtaps", "attenuation_db", "stopband_weight"), _optimal("firls")),
    "taps": (("taps", "passband_edge", "stopband_edge"), _explicit),
}
