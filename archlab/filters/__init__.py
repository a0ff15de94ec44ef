"""Upsampling filters: design, exact frequency responses, summaries and the catalogue.

Upsampling by an integer factor ``s`` inserts ``s - 1`` zeros between samples and
convolves the result with a low-pass FIR ``h`` (REFERENCE §1; paper 004 §3.3).
Zero insertion keeps the input spectrum on the *passband* ``[0, 0.5/s)`` and
creates a mirrored *replica* above it, starting at ``0.5/s``; ``h`` must keep the
first and suppress the second. Frequencies are in cycles per output sample, on
``[0, 0.5]``. Every filter's taps sum to ``s`` (DC gain ``s``, so a constant
signal stays constant).

Kinds (:data:`KINDS`, parameters in :func:`design`): ``nearest``, ``linear``
(bilinear in 2-D), ``cubic`` (Keys), ``lanczos``, ``gaussian`` (paper 000), the
designed ``kaiser`` (Kaiser's window formulas, as ``scipy.signal.kaiserord``/``firwin``), ``equiripple``
(``remez``) and ``least_squares`` (``firls``), and explicit ``taps``.

The kernel kinds (nearest .. lanczos) sample their continuous kernel ``K(x)``,
``x`` in input pixels, at output offsets ``d`` from the filter centre:
``h = K(d / s)``, with ``d`` half-integer for even ``s`` (an even number of taps)
and integer for odd ``s``. This is PyTorch's ``interpolate(..., align_corners=False)``
(REFERENCE §1): nearest ×2 = ``[1, 1]``, linear ×2 = ``[0.25, 0.75, 0.75, 0.25]``.
Gaussian and designed filters have an odd number of taps; for even ``s`` their
centre tap lands on the input sample (sample-aligned, paper 000). The centre of every filter is the (possibly half-integer)
index :attr:`Filter.delay` ``= (len(taps) - 1) / 2``.

Modules: :mod:`~archlab.filters.design` (:class:`Filter`, :func:`design`), :mod:`~archlab.filters.response`
(exact responses), :mod:`~archlab.filters.catalogue` (shipped and user filters, TOML); every public
name is here.
"""

from archlab.filters.catalogue import (
    USER_ENV,
    catalog,
    catalogue_dir,
    get,
    load,
    names,
    save,
    source,
    to_toml,
    user_dirs,
)
from archlab.filters.design import KINDS, MAX_TAPS, Filter, design

__all__ = ["KINDS", "MAX_TAPS", "USER_ENV", "Filter", "catalog", "catalogue_dir", "design", "get", "load", "names",
           "save", "source", "to_toml", "user_dirs"]
