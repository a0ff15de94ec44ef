"""Spectral measurements of images and fits: centred FFT, radial bands, FBC, radial PSD, trajectories.

Frequencies are in cycles per pixel: pixel ``(p, q)`` of a centred (fftshifted) ``H x W`` spectrum sits at
``(fy, fx) = ((p - H // 2) / H, (q - W // 2) / W)`` and at radius ``rho = sqrt(fy**2 + fx**2)``; the Nyquist
circle is ``rho = 0.5``. Rings are assigned with integer arithmetic (``rho <= n / d`` is tested as
``d**2 * s <= n**2 * L**2`` with ``L = lcm(H, W)`` and ``s = (L * rho)**2`` an integer, held in float64 and so
exact for square images up to 8192 pixels), so pixels lying exactly on a ring edge fall in the inner ring.
Everything is torch, batched over ``N``, on the input's device, and free of host synchronisation; the ring
maps are built once per (size, device) and cached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch

from archlab import checks
from archlab.images import to_grey

TARGET_EPS = 1e-8
"""Added to ``|F{target}|`` in eq. 1 of paper 000, as in its reference code."""


def _check_pair(output: torch.Tensor, target: torch.Tensor, bands: int) -> None:
    checks.image("output", output, floating=True)
    checks.image("target", target, floating=True)
    if target.shape[-2:] != output.shape[-2:] or target.shape[0] not in (1, output.shape[0]):
        raise ValueError(
            f"target: expected shape (1 or N, C, H, W) matching output {tuple(output.shape)}, "
            f"got {tuple(target.shape)}"
        )
    _check_bands(bands, *output.shape[-2:])


def _check_bands(bands: int, h: int, w: int) -> None:
    most = min(h, w) // 2
    if isinstance(bands, bool) or not isinstance(bands, int) or not 1 <= bands <= most:
        raise ValueError(f"bands: expected an integer in [1, {most}] for a {h}x{w} image, got {bands!r}")


@lru_cache(maxsize=64)
def _rings(h: int, w: int, d: int, numerators: tuple[int, ...], device: torch.device, half: bool = False):
    """Ring index map for the edges ``rho <= n / d`` (n in numerators), with the pixel count of each ring.

    Ring ``k`` holds ``n[k-1] / d < rho <= n[k] / d``; ring 0 starts at the DC term and pixels beyond the last
    edge get index ``len(numerators)``. The integers are held in float64, exact below 2**53.
    ``half`` gives the map of the unshifted ``rfft2`` half-plane (counts still of the full plane).
    """
    lcm = math.lcm(h, w)
    fy = (torch.arange(h, dtype=torch.float64) - h // 2) * (lcm // h)
    fx = (torch.arange(w, dtype=torch.float64) - w // 2) * (lcm // w)
    if half:  # the unshifted rfft2 layout: rows in FFT order, columns 0 .. W // 2
        fy = fy.roll(-(h // 2))
        fx = torch.arange(w // 2 + 1, dtype=torch.float64) * (lcm // w)
    scaled = d**2 * (fy[:, None] ** 2 + fx[None, :] ** 2)
    edges = torch.tensor(numerators, dtype=torch.float64) ** 2 * float(lcm) ** 2
    index = torch.bucketize(scaled, edges, right=False)
    counts = torch.bincount(index.flatten(), minlength=len(numerators) + 1)[: len(numerators)]
    return index.to(device), counts.to(device=device, dtype=torch.float32)


def _band_rings(h: int, w: int, bands: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    return _rings(h, w, 2 * bands, tuple(range(1, bands + 1)), torch.device(device))


def _ring_mean(values: torch.Tensor, rings: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean of ``values`` (N, H, W) over each ring -> (N, rings); pixels outside every ring are dropped."""
    index, counts = rings
    n = counts.shape[0]
    sums = values.new_zeros(values.shape[0], n + 1).index_add_(1, index.flatten(), values.flatten(1))
    return sums[:, :n] / counts.to(values.dtype)


@lru_cache(maxsize=64)
def _half_band_weights(h: int, w: int, bands: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(H * (W//2 + 1), B) matrix that maps an ``rfft2`` half-plane to the band means of the full plane.

    A real image's spectrum is conjugate-symmetric, so every column ``0 < fx < W/2`` of the half-plane stands
    for itself and its mirror ``(-fy, -fx)`` at the same radius: weight 2; column 0 (and ``W/2`` for even W,
    the full plane's ``-W/2`` column) weight 1. Each weight is divided by its band's full-plane pixel count.
    """
    index, _ = _rings(h, w, 2 * bands, tuple(range(1, bands + 1)), torch.device("cpu"), half=True)
    _, counts = _band_rings(h, w, bands, "cpu")
    weight = torch.full((w // 2 + 1,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    index = index.flatten()
    inside = index < bands
    matrix = torch.zeros(index.numel(), bands, dtype=torch.float64)
    matrix[inside.nonzero()[:, 0], index[inside]] = weight.repeat(h)[inside]
    return (matrix / counts.double()).to(device=device, dtype=dtype)


def half_spectrum(x: torch.Tensor) -> torch.Tensor:
    """``|rfft2(Y)|`` of the luma ``Y``: the unshifted half-plane of :func:`centered_spectrum` (N, H, W//2 + 1),
    in float64 for float64 images and float32 otherwise."""
    checks.image("x", x, floating=True)
    grey = to_grey(x)[:, 0]
    return _magnitude(torch.fft.rfft2(grey if grey.dtype == torch.float64 else grey.float()))


def _magnitude(spectrum: torch.Tensor) -> torch.Tensor:
    """``|z|`` of a complex tensor as sqrt(re² + im²) by one fused multiply-add: complex ``abs()`` takes the
    overflow-safe hypot, 2-3× slower on CPU (spectra of images in [0, 1] are far from overflow)."""
    parts = torch.view_as_real(spectrum)
    real, imaginary = parts[..., 0], parts[..., 1]
    return torch.addcmul(real.square(), imaginary, imaginary).sqrt_()


class FBC:
    """:func:`fbc` against a fixed target, for monitoring a fit: ``FBC(target, bands)(output)``.

    The target's magnitude spectrum is computed once, each call then costs one real FFT of the
    output and one small matrix product: the half-plane form of eq. 1 (see :func:`_half_band_weights`),
    equal to the centred full-plane means up to float rounding (the band sums are taken in float64).
    """

    def __init__(self, target: torch.Tensor, bands: int = 5):
        checks.image("target", target, floating=True)
        _check_bands(bands, *target.shape[-2:])
        self.shape, self.bands = tuple(target.shape[-2:]), bands
        self.target_magnitude = half_spectrum(target) + TARGET_EPS
        self.weights = _half_band_weights(*self.shape, bands, target.device, torch.float64)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        checks.image("output", output, floating=True)
        if tuple(output.shape[-2:]) != self.shape or self.target_magnitude.shape[0] not in (1, output.shape[0]):
            raise ValueError(f"output: expected (N, C, {self.shape[0]}, {self.shape[1]}) matching the target "
                             f"(batch {self.target_magnitude.shape[0]}), got {tuple(output.shape)}")
        ratio = (half_spectrum(output) / self.target_magnitude).clamp(0.0, 1.0)
        # The band sums add up to H·W/2 terms: float64 keeps them exact to ~1e-12 (float32: ~3e-4 at 512²).
        return (ratio.flatten(1).double() @ self.weights).to(ratio.dtype)


def radial_bins(h: int, w: int, bands: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Index map (H, W) of ``bands`` equal-width radial bands of a centred spectrum (paper 000, §3.1, Fig. 1).

    Band ``n`` (0 = lowest) holds ``n / (2 B) < rho <= (n + 1) / (2 B)`` (band 0 includes the DC term), so the
    bands split the disc up to the Nyquist radius ``rho = 0.5`` into ``B`` rings of equal width. Corners beyond
    ``rho = 0.5`` get index ``bands`` and are left out of every band. This is the reference code of paper 000
    (``get_circular_statastic``: rings of radius ``W/2 * k/B`` pixels around the centre, the corners dropped)
    exactly for even square images; for other sizes ``rho`` is measured in cycles per pixel on each axis.

    Parameters
    ----------
    h, w : int
        Spectrum size.
    bands : int
        Number of bands ``B``, in ``[1, min(h, w) // 2]`` (so that every band holds pixels).
    device : torch.device or str
        Where the map lives; maps are cached per (h, w, bands, device).

    Returns
    -------
    torch.Tensor
        int64 (H, W) with values in ``0 .. bands``.
    """
    _check_bands(bands, h, w)
    return _band_rings(h, w, bands, device)[0]


def centered_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Magnitude ``|fftshift(fft2(Y))|`` of the luma ``Y`` of each image (paper 000, §3.1).

    Parameters
    ----------
    x : torch.Tensor
        (N, C, H, W) images, C in (1, 3); RGB is converted to ITU-R BT.601 luma first.

    Returns
    -------
    torch.Tensor
        (N, H, W) magnitudes, the DC term at ``(H // 2, W // 2)``.
    """
    checks.image("x", x, floating=True)
    spectrum = torch.fft.fft2(to_grey(x)[:, 0])
    return _magnitude(torch.fft.fftshift(spectrum, dim=(-2, -1)))


def fbc(output: torch.Tensor, target: torch.Tensor, bands: int = 5) -> torch.Tensor:
    """Frequency-band correspondence of paper 000, §3.1, eq. 1.

    ``H = clip(|F{output}| / (|F{target}| + 1e-8), 0, 1)`` element-wise on the centred FFT magnitudes of the
    luma, and ``FBC_n`` is the mean of ``H`` over radial band ``n`` of :func:`radial_bins` (0 = lowest).
    A value of 1 means the output holds all of the target's magnitude in that band.

    Parameters
    ----------
    output : torch.Tensor
        (N, C, H, W) network outputs.
    target : torch.Tensor
        (N, C, H, W) or (1, C, H, W) targets (the degraded observation ``y0`` in the paper).
    bands : int
        Number of radial bands ``B`` (paper: 5).

    Returns
    -------
    torch.Tensor
        (N, B) float, in [0, 1].
    """
    _check_pair(output, target, bands)
    return FBC(target, bands)(output)


def radial_psd(image: torch.Tensor, bins: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Azimuthally averaged power spectrum of paper 004, §3.5 and Fig. 2: ``S(r) = mean_{|f|~r} |F{Y}(f)|^2 / HW``.

    ``Y`` is the luma, not mean-subtracted: the DC term ``H W mean(Y)^2`` stays in the first ring. Dividing by
    ``H W`` makes white noise of variance ``s^2`` come out flat at ``s^2`` (Parseval). Rings are centred on a
    uniform grid of radii ``r_k = k * delta`` and each pixel goes to the nearest radius (ties inwards):

    * ``bins=None``: ``delta = 1 / min(H, W)``, ``k = 0 .. min(H, W) // 2`` -- for a square image, the usual
      average over integer pixel distance ``round(sqrt(i^2 + j^2))`` from the centre;
    * ``bins=K``: ``K`` radii from 0 to 0.5 (``delta = 0.5 / (K - 1)``), a fixed-length curve for any size.

    Pixels farther out than the last ring (the corners) are left out.

    Parameters
    ----------
    image : torch.Tensor
        (N, C, H, W) images, C in (1, 3).
    bins : int or None
        Number of radii ``K`` in ``[2, min(H, W) // 2 + 1]``, or None for one per pixel of radius.

    Returns
    -------
    radius : torch.Tensor
        (K,) float32 radii in cycles per pixel, from 0 to about 0.5.
    psd : torch.Tensor
        (N, K) mean power at each radius.
    """
    checks.image("image", image, floating=True)
    h, w = image.shape[-2:]
    most = min(h, w) // 2 + 1
    if bins is None:
        count, scale = most, min(h, w)
    elif isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= most:
        raise ValueError(f"bins: expected None or an integer in [2, {most}] for a {h}x{w} image, got {bins!r}")
    else:
        count, scale = bins, 2 * (bins - 1)
    power = centered_spectrum(image).square() / (h * w)
    rings = _rings(h, w, 2 * scale, tuple(range(1, 2 * count, 2)), image.device)
    radius = torch.arange(count, device=image.device, dtype=torch.float32) / scale
    return radius, _ring_mean(power, rings)


def power_spectrum_error(output: torch.Tensor, target: torch.Tensor, bands: int = 5) -> torch.Tensor:
    """Relative power-spectrum error per radial band: ``E_n = sum_n |P_o - P_t| / sum_n P_t``.

    ``P = |F{Y}|^2`` of the luma on the centred spectrum and ``sum_n`` runs over band ``n`` of
    :func:`radial_bins`. ``E_n = 0`` for a perfect match and ``|a^2 - 1|`` for ``output = a * target``; it is
    the power counterpart of :func:`fbc` (which only sees missing magnitude) and also counts excess power,
    such as fitted noise. A band where the target has no power gives ``inf`` (or NaN if the output has none).

    Parameters
    ----------
    output : torch.Tensor
        (N, C, H, W) images.
    target : torch.Tensor
        (N, C, H, W) or (1, C, H, W) references.
    bands : int
        Number of radial bands.

    Returns
    -------
    torch.Tensor
        (N, bands), non-negative.
    """
    _check_pair(output, target, bands)
    power_out = centered_spectrum(output).square()
    power_target = centered_spectrum(target).square()
    rings = _band_rings(*output.shape[-2:], bands, output.device)
    excess = _ring_mean((power_out - power_target).abs(), rings)
    return excess / _ring_mean(power_target, rings)


def _stack(run: torch.Tensor | Sequence[torch.Tensor], name: str) -> torch.Tensor:
    if isinstance(run, torch.Tensor):
        return run
    steps = list(run)
    if not steps or any(not isinstance(s, torch.Tensor) or s.shape != steps[0].shape for s in steps):
        raise ValueError(f"{name}: expected a tensor (T, ...) or a non-empty sequence of equal-shaped tensors")
    return torch.stack(steps)


def trajectory_distance(
    run_a: torch.Tensor | Sequence[torch.Tensor],
    run_b: torch.Tensor | Sequence[torch.Tensor],
    reduction: str = "sse",
) -> torch.Tensor:
    """Trajectory variation of paper 001, §2: ``eps_t = sum (T1_t - T2_t)^2`` between two runs' outputs.

    Parameters
    ----------
    run_a, run_b : torch.Tensor or sequence of torch.Tensor
        The outputs of two runs at the same steps: a (T, ...) tensor, or a sequence of T equal-shaped tensors
        (e.g. (1, C, H, W) snapshots), stacked along a new first axis.
    reduction : {"sse", "rms"}
        ``"sse"`` is the paper's sum of squared errors per step; ``"rms"`` is ``sqrt(sse / numel)`` with
        ``numel`` the size of one step, comparable across image sizes.

    Returns
    -------
    torch.Tensor
        (T,) distances, 0 where the runs agree.
    """
    if reduction not in ("sse", "rms"):
        raise ValueError(f"reduction: expected 'sse' or 'rms', got {reduction!r}")
    a, b = _stack(run_a, "run_a"), _stack(run_b, "run_b")
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            f"run_b: expected the shape of run_a (T, ...) with at least 2 axes, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    sse = (a - b).square().flatten(1).sum(dim=1)
    return sse if reduction == "sse" else (sse / a[0].numel()).sqrt()
