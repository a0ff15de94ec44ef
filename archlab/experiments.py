"""The papers' spectral-bias experiments and the share of a fit's time its monitors take.

* :func:`trajectory_divergence` - paper 001 §2, Fig. 1: two DIP runs from different seeds on a clean image;
  the distance between their output trajectories grows with the area of high-frequency content.
* :func:`sinusoid_experiment` - paper 001 §3.1, Fig. 3: a 1-D two-sinusoid signal fitted by a convolutional
  encoder-decoder and by the same with fully-connected layers; per-frequency amplitude errors and the
  iteration at which each frequency converges.
* :func:`lipschitz_fbc` - paper 000 §4.4, Fig. 5: the FBC of the Decoder for several Lipschitz bounds λ.

The experiment loops are plain Adam on the MSE, as in the papers' code; outputs are kept on the device and
measured once at the end, so the loops never synchronise with the host.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from archlab import checks, images, metrics, models, restoration, spectral, tasks
from archlab.engine import resolve_device
from archlab.fitting import fit

#: Convergence threshold δ on the squared amplitude error (paper 001 §3.1).
DELTA = 0.01


def _adam_snapshots(net: nn.Module, net_input: torch.Tensor, target: torch.Tensor, *, iterations: int,
                    lr: float, every: int) -> tuple[list[int], torch.Tensor]:
    """Fit ``net(net_input)`` to ``target`` by Adam on the MSE.

    Returns the iterations ``0, every, 2 every, ..., iterations`` and the outputs after that many updates,
    stacked on the device.
    """
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    steps, snapshots = [], []
    for iteration in range(iterations + 1):
        optimiser.zero_grad(set_to_none=True)
        out = net(net_input)
        if iteration % every == 0 or iteration == iterations:
            snapshots.append(out.detach())
            steps.append(iteration)
        if iteration < iterations:
            (out - target).square().mean().backward()
            optimiser.step()
    return steps, torch.stack(snapshots)


def high_band_share(image: torch.Tensor, bands: int = 5) -> torch.Tensor:
    """Share of an image's AC power in the highest of ``bands`` radial bands (:func:`archlab.spectral.radial_bins`).

    ``sum_{band B-1} |F{Y}|^2 / sum_{f != 0} |F{Y}|^2`` on the centred spectrum of the luma ``Y``; a measured
    stand-in for how much of the image a high-frequency pattern covers. Returns a Tensor (N,).
    """
    power = spectral.centered_spectrum(image).square()
    h, w = image.shape[-2:]
    power[:, h // 2, w // 2] = 0.0
    top = spectral.radial_bins(h, w, bands, image.device) == bands - 1
    return power[:, top].sum(1) / power.flatten(1).sum(1)


def trajectory_divergence(sources: Sequence[str | os.PathLike], *, arch: str | models.ArchSpec = "faster-dip-32",
                          seeds: tuple[int, int] = (0, 1), iterations: int = 300, lr: float = 0.01,
                          every: int = 10, device: str | torch.device = "auto") -> pd.DataFrame:
    """Trajectory variation of paper 001 §2, Fig. 1: ``eps_t = sum (T1_t - T2_t)^2`` for two seeds per image.

    Each clean image is fitted twice from scratch (weights and input drawn from ``seeds[0]`` and ``seeds[1]``
    by :func:`archlab.models.build`) by Adam on the MSE, without input jitter, as in the paper's code; the
    outputs at iterations ``0, every, 2 every, ...`` are compared with :func:`archlab.spectral.trajectory_distance`.

    Parameters
    ----------
    sources : sequence of str or path
        Clean images (files or built-in names), e.g. the ``triangle-*`` set.
    arch : str or ArchSpec
        The network (a preset, a spec file or a spec); the images must be multiples of ``arch.multiple``.
    seeds : (int, int)
        The seeds of the two runs.
    iterations, lr, every : int, float, int
        Adam steps, learning rate, and steps between recorded outputs.
    device : str or torch.device
        ``"auto"`` = CUDA when present.

    Returns
    -------
    pandas.DataFrame
        One row per (image, iteration): ``image``, ``iteration``, ``eps`` (the paper's SSE), ``rms``
        (``sqrt(eps / pixels)``), ``psnr_a``/``psnr_b`` (each run against the image) and ``high_band_share``
        (:func:`high_band_share` of the image).
    """
    checks.integer("iterations", iterations)
    checks.integer("every", every)
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ValueError(f"seeds: expected two different seeds, got {seeds!r}")
    spec = models.load_spec(arch)
    device = resolve_device(device)
    frames = []
    for source in sources:
        clean = images.load(source).to(device)
        runs = []
        for seed in seeds:
            net, net_input = models.build(spec, clean.shape[1], tuple(clean.shape[-2:]), seed=seed)
            steps, outputs = _adam_snapshots(net.to(device).train(), net_input.to(device), clean,
                                             iterations=iterations, lr=lr, every=every)
            runs.append(outputs)
        frame = pd.DataFrame({
            "image": Path(str(source)).stem,
            "iteration": steps,
            "eps": spectral.trajectory_distance(*runs).cpu().numpy(),
            "rms": spectral.trajectory_distance(*runs, reduction="rms").cpu().numpy(),
            "psnr_a": metrics.psnr(runs[0].flatten(0, 1), clean).cpu().numpy(),
            "psnr_b": metrics.psnr(runs[1].flatten(0, 1), clean).cpu().numpy(),
        })
        frame["high_band_share"] = float(high_band_share(clean)[0])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def trajectory_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Per image: the two phases of paper 001 Fig. 1(e) read off the ``eps`` curve.

    The trajectories first converge (both runs reach a low-frequency approximation): ``first_min_iteration``
    and ``eps_first_min`` are the first local minimum of ``eps``. They then diverge while the networks fit the
    high frequencies: ``eps_peak`` and ``peak_iteration`` are the maximum after that minimum, ``eps_mean``
    the mean from the minimum on. Also the image's ``high_band_share``, the last ``eps`` and run A's last PSNR.
    Rows are sorted by high-band share.
    """
    rows = []
    for name, c in curves.groupby("image", sort=False):
        eps = c["eps"].to_numpy()
        rising = np.flatnonzero(eps[1:] >= eps[:-1])
        first = int(rising[0]) if rising.size else len(eps) - 1
        peak = first + int(np.argmax(eps[first:]))
        rows.append({"image": name, "high_band_share": c["high_band_share"].iloc[0],
                     "first_min_iteration": int(c["iteration"].iloc[first]), "eps_first_min": eps[first],
                     "eps_peak": eps[peak], "peak_iteration": int(c["iteration"].iloc[peak]),
                     "eps_mean": float(eps[first:].mean()), "eps_final": eps[-1],
                     "psnr_final": c["psnr_a"].iloc[-1]})
    return pd.DataFrame(rows).sort_values("high_band_share", ignore_index=True)


def sinusoid(length: int = 256, frequencies: Sequence[int] = (5, 50)) -> torch.Tensor:
    """``x0(t) = sum_i sin(2 pi k_i t)``, ``t = n / length`` (paper 001 §3.1), as a (1, 1, length) tensor."""
    checks.integer("length", length, 4)
    for k in frequencies:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 < k < length // 2:
            raise ValueError(f"frequencies: expected integers in [1, {length // 2 - 1}], got {list(frequencies)}")
    t = torch.arange(length, dtype=torch.float64) / length
    signal = sum(torch.sin(2 * math.pi * k * t) for k in frequencies)
    return signal.float().reshape(1, 1, length)


def amplitudes(signals: torch.Tensor, frequencies: Sequence[int]) -> torch.Tensor:
    """Amplitude of each integer frequency ``k`` in signals (..., L): ``A_k = 2 |DFT(x)[k]| / L``.

    Exact for ``a sin(2 pi k n / L + phi)`` with ``0 < k < L / 2``. Returns (..., len(frequencies)).
    """
    length = signals.shape[-1]
    spectrum = torch.fft.rfft(signals, dim=-1)[..., list(frequencies)]
    return 2.0 * spectrum.abs() / length


def conv_encoder_decoder(layers: int = 10, width: int = 256, leak: float = 0.2) -> nn.Sequential:
    """DIP-Conv of paper 001 §3.1 in 1-D: ``layers // 2`` stride-2 conv blocks down, as many up.

    Down: [conv 3 (stride 2, reflect), BN, LeakyReLU]; up: [linear x2 upsampling, conv 3, BN, LeakyReLU];
    a 1x1 convolution to one channel. Input (1, 1, L) with ``L`` a multiple of ``2 ** (layers // 2)``.
    """
    half = checks.integer("layers", layers, 2) // 2
    checks.integer("width", width)
    blocks, cin = [], 1
    for _ in range(half):
        blocks += [nn.Conv1d(cin, width, 3, stride=2, padding=1, padding_mode="reflect"),
                   nn.BatchNorm1d(width), nn.LeakyReLU(leak)]
        cin = width
    for _ in range(half):
        blocks += [nn.Upsample(scale_factor=2, mode="linear"), nn.Conv1d(width, width, 3, padding=1,
                   padding_mode="reflect"), nn.BatchNorm1d(width), nn.LeakyReLU(leak)]
    return nn.Sequential(*blocks, nn.Conv1d(width, 1, 1))


def linear_encoder_decoder(length: int, layers: int = 10, width: int = 256, leak: float = 0.2) -> nn.Sequential:
    """DIP-Linear of paper 001 §3.1: the convolutions replaced by fully-connected layers of ``width`` units.

    ``layers`` linear layers (``length -> width -> ... -> width -> length``) with LeakyReLU between them,
    on the flattened (1, 1, length) input.
    """
    checks.integer("layers", layers, 2)
    checks.integer("width", width)
    blocks, cin = [nn.Flatten()], length
    for _ in range(layers - 1):
        blocks += [nn.Linear(cin, width), nn.LeakyReLU(leak)]
        cin = width
    return nn.Sequential(*blocks, nn.Linear(cin, length), nn.Unflatten(1, (1, length)))


def sinusoid_experiment(*, kinds: Sequence[str] = ("conv", "linear"), frequencies: Sequence[int] = (5, 50),
                        length: int = 256, layers: int = 10, width: int = 256, iterations: int = 2000,
                        lr: float = 1e-4, seed: int = 0, device: str | torch.device = "auto") -> pd.DataFrame:
    """Paper 001 §3.1, Fig. 3: fit the two-sinusoid signal from white noise, conv vs fully-connected.

    Both networks start from the same seed and input ``z ~ N(0, 1)`` of shape (1, 1, length) and are fitted
    by Adam on the MSE. At every iteration the amplitude ``A~_k`` of each frequency (:func:`amplitudes`) gives
    the squared error ``SE(k) = (A~_k - 1)^2`` of paper 001.

    Returns
    -------
    pandas.DataFrame
        Long format, one row per (kind, iteration, frequency): ``kind``, ``iteration``, ``frequency``,
        ``amplitude``, ``se``. :func:`convergence_table` reads the convergence iterations from it.
    """
    target_signal = sinusoid(length, frequencies)
    device = resolve_device(device)
    builders = {"conv": lambda: conv_encoder_decoder(layers, width),
                "linear": lambda: linear_encoder_decoder(length, layers, width)}
    unknown = [k for k in kinds if k not in builders]
    if unknown or not kinds:
        raise ValueError(f"kinds: expected a non-empty subset of {', '.join(builders)}, got {list(kinds)}")
    if length % 2 ** (layers // 2):
        raise ValueError(f"length: {length} must be a multiple of 2**(layers // 2) = {2 ** (layers // 2)}")
    frames = []
    for kind in kinds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = builders[kind]()
            net_input = torch.randn(1, 1, length)
        steps, outputs = _adam_snapshots(net.to(device).train(), net_input.to(device), target_signal.to(device),
                                         iterations=iterations, lr=lr, every=1)
        amp = amplitudes(outputs[:, 0, 0], frequencies).cpu().numpy()
        for j, k in enumerate(frequencies):
            frames.append(pd.DataFrame({"kind": kind, "iteration": steps, "frequency": k, "amplitude": amp[:, j],
                                        "se": (amp[:, j] - 1.0) ** 2}))
    return pd.concat(frames, ignore_index=True)


def convergence_table(curves: pd.DataFrame, delta: float = DELTA) -> pd.DataFrame:
    """First iteration with ``SE(k) <= delta`` per kind and frequency (paper 001 §3.1; NaN if never).

    Also the ratio of the last to the first frequency's convergence iteration per kind, so that a
    network with spectral bias shows a ratio well above 1 and one without it a ratio near 1.
    """
    hit = curves[curves["se"] <= delta].groupby(["kind", "frequency"])["iteration"].min()
    table = hit.reindex(pd.MultiIndex.from_frame(curves[["kind", "frequency"]].drop_duplicates())).unstack()
    table.columns = [f"converged_k{k}" for k in table.columns]
    table["ratio"] = table.iloc[:, -1] / table.iloc[:, 0]
    return table.reset_index()


def lipschitz_fbc(source: str | os.PathLike = "astronaut", *, lambdas: Sequence[float] = (1.0, 2.0, 3.0),
                  sigma: float = 25.0, size: int = 64, arch: str | models.ArchSpec = "shi-decoder-text",
                  iterations: int = 300, lr: float = 0.01, eval_every: int = 10, seed: int = 0,
                  device: str | torch.device = "auto") -> pd.DataFrame:
    """Paper 000 §4.4, Fig. 5: FBC and PSNR of the same network under Lipschitz bounds ``lambdas`` (denoising).

    The image is resized (bicubic, antialiased) so its longer side is at most ``size``, cropped to the network's
    multiple, degraded with Gaussian noise ``sigma`` (seeded) and fitted with :func:`archlab.fitting.fit` once per
    λ, with ``arch.replace(lipschitz=λ)``; the FBC target is the noisy observation, as in the paper. The fits
    run in fp32 (``fast=False``): bfloat16 rounding would add high-frequency error to the bands measured.

    Returns
    -------
    pandas.DataFrame
        The fits' histories (``iteration``, ``psnr``, ``fbc_0`` ... ``fbc_4``, ...) stacked, with a
        ``lipschitz`` column.
    """
    spec = models.load_spec(arch)
    clean = restoration.clean_image(source, longest=size, multiple=spec.multiple)
    task = tasks.Denoise(sigma=sigma)
    noisy = task.degrade(clean, seed=seed)
    frames = []
    for lam in lambdas:
        result = fit(spec.replace(lipschitz=float(lam)), task, noisy, iterations=iterations, lr=lr, seed=seed,
                     device=device, eval_every=eval_every, reference=clean, fast=False, progress=False)
        frames.append(result.history.assign(lipschitz=float(lam)))
    return pd.concat(frames, ignore_index=True)


def lipschitz_summary(histories: pd.DataFrame) -> pd.DataFrame:
    """Per λ: peak PSNR and its iteration, final PSNR, and the FBC of every band at the last iteration."""
    rows = []
    for lam, h in histories.groupby("lipschitz"):
        peak = h.loc[h["psnr"].idxmax()]
        last = h.iloc[-1]
        row = {"lipschitz": lam, "peak_psnr": peak["psnr"], "peak_iteration": int(peak["iteration"]),
               "final_psnr": last["psnr"]}
        row.update({c: last[c] for c in h.columns if c.startswith("fbc_")})
        rows.append(row)
    return pd.DataFrame(rows)
