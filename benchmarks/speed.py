"""Speed benchmarks: the polyphase upsampler and the fit engine against the papers' forms.

Run from the repository root: ``python benchmarks/speed.py upsample | dip | many | monitors | overhead``
(each prints its table and the conditions it ran under - CPU capability, threads, load - and with
``-o`` writes the table as CSV). Each function runs its contenders in one process, interleaved round
by round (so a machine whose load changes slows them alike), and returns a table of medians:

* :func:`bench_upsample` - forward + backward of :class:`archlab.layers.Upsampler` against
  :func:`upsample_naive` (zero insertion, one depthwise 2-D convolution with the outer-product
  kernel: the papers' form);
* :func:`bench_dip` - a DIP fit as the papers' code runs it (:func:`reference_fit`) against
  :func:`archlab.fitting.fit` with its fast settings and with the fp32 reference settings:
  seconds per iteration, PSNR after N iterations, achieved GFLOP/s and the fraction of the
  machine's measured matmul peak (a roofline fraction);
* :func:`bench_many` - :func:`archlab.fitting.fit_many` of K runs against K sequential fits;
* :func:`bench_monitors` - the on-device monitors of a fit (Crete blur, MLV sharpness, FBC, two PSNRs)
  against paper 000's per-iteration NumPy/SciPy code for the same metrics and against tuned NumPy
  forms of archlab's definitions, on one 512×512 RGB image;
* :func:`monitor_overhead` - the share of a fit's wall time its evaluations take.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.signal import convolve2d
from skimage.color import rgb2gray
from skimage.measure import blur_effect as skimage_blur_effect
from skimage.metrics import peak_signal_noise_ratio
from torch.utils.flop_counter import FlopCounterMode

from archlab import filters, images, layers, metrics, models, restoration, spectral, stopping, tasks
from archlab.checks import integer as check_count
from archlab.layers import filter_offset, pad_axis, polyphase_kernels
from archlab.engine import engine_settings, resolve_device
from archlab.fitting import fit, fit_many, output_measures

DIP_CONFIGS = (("ulyanov-dip", 128), ("faster-dip-64", 256))


def conditions(device: torch.device) -> dict:
    """What a timing depends on: device, threads, torch, CPU vector ISA and the load average."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": f"{device.type} ({name})", "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "load_1min": round(load, 2)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                warmup: int = 1) -> dict[str, np.ndarray]:
    """Seconds per call of each contender, calling them in turn ``repeats`` times after ``warmup`` rounds."""
    if repeats < 1:
        raise ValueError(f"repeats: {repeats!r} must be an integer ≥ 1")
    times = {name: [] for name in contenders}
    for round_ in range(warmup + repeats):
        for name, call in contenders.items():
            _sync(device)
            start = time.perf_counter()
            call()
            _sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: np.asarray(values) for name, values in times.items()}


def bench_upsample(filter: str = "L-60", channels: int = 128, size: int = 64, repeats: int = 30,
                   device: str | torch.device = "auto") -> pd.DataFrame:
    """Forward + backward of the polyphase :class:`~archlab.layers.Upsampler` against the naive form.

    Both upsample a ``(1, channels, size, size)`` fp32 input by the filter's factor with the
    same taps, alignment and reflect borders (their outputs are compared before timing) and
    back-propagate a sum. Returns one row per method: median and minimum milliseconds, and
    ``speedup`` = naive median / method median.
    """
    device = resolve_device(device)
    flt = filters.get(filter)
    layer = layers.Upsampler(channels, flt, factor=flt.factor).to(device)
    taps = np.array(flt.taps)
    x = torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    if not torch.allclose(layer(x), upsample_naive(x, taps, flt.factor), atol=1e-4):
        raise RuntimeError(f"bench upsample: Upsampler and the naive form disagree for {flt.name}")

    def run(upsample):
        def call():
            leaf = x.detach().requires_grad_()
            upsample(leaf).sum().backward()
        return call

    naive_form = run(lambda t: upsample_naive(t, taps, flt.factor))
    times = interleaved({"archlab.Upsampler (polyphase)": run(layer), "naive (zeros + 2-D depthwise conv)": naive_form},
                        repeats, device)
    naive = np.median(times["naive (zeros + 2-D depthwise conv)"])
    return pd.DataFrame([{"method": name, "filter": flt.name, "input": f"1x{channels}x{size}x{size}",
                          "median_ms": 1e3 * np.median(t), "min_ms": 1e3 * t.min(), "speedup": naive / np.median(t)}
                         for name, t in times.items()])


def reference_network(spec: models.ArchSpec | str, out_channels: int, size: tuple[int, int],
                      seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """``models.build`` with every :class:`~archlab.layers.Upsampler` swapped for
    ``nn.Upsample(scale_factor=s, mode="bilinear")``, as in Ulyanov et al.'s ``skip`` network."""
    net, z = models.build(spec, out_channels, size, seed=seed)

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, layers.Upsampler):
                setattr(module, name, nn.Upsample(scale_factor=child.factor, mode="bilinear"))
            else:
                swap(child)

    swap(net)
    return net, z


def reference_fit(spec: models.ArchSpec | str, observation: torch.Tensor, clean: torch.Tensor, *, iterations: int,
                  lr: float = 0.01, input_jitter: float = 1 / 30, ema: float = 0.99, seed: int = 0,
                  device: str | torch.device = "auto") -> dict:
    """Denoising as the DIP codes run it (Ulyanov et al. 2018, ``denoising.ipynb``).

    Eager fp32 NCHW, :func:`reference_network`, Adam; every step the input is re-jittered
    (``noise.normal_()``), the output averaged, the output copied to the host
    (``out.detach().cpu().numpy()``) for three NumPy PSNRs (noisy, clean, averaged) and the
    backtracking check (restore the last parameters when the noisy PSNR falls by 5 dB).
    Returns ``{"seconds": per-step times, "psnr": PSNR of the last output to the clean image,
    "psnr_ema": the same for the averaged output, "psnr_curve": the PSNR of every step's output,
    "psnr_ema_curve": the same for the averaged output}``.
    """
    device = resolve_device(device)
    net, z = reference_network(spec, observation.shape[1], tuple(observation.shape[-2:]), seed=seed)
    net, z = net.to(device).train(), z.to(device)
    y = observation.to(device)
    noisy_np, clean_np = observation[0].cpu().numpy(), clean[0].cpu().numpy()
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    noise = z.detach().clone()
    out_avg, last_net, psnr_noisy_last, psnr_gt, psnr_gt_sm = None, None, 0.0, float("nan"), float("nan")
    seconds, curve, ema_curve = [], [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed + 1)
        for i in range(iterations):
            _sync(device)
            start = time.perf_counter()
            optimiser.zero_grad()
            net_input = z + noise.normal_() * input_jitter
            out = net(net_input)
            out_avg = out.detach() if out_avg is None else out_avg * ema + out.detach() * (1 - ema)
            loss = F.mse_loss(out, y)
            loss.backward()
            out_np = out.detach().cpu().numpy()[0]
            psnr_noisy = peak_signal_noise_ratio(noisy_np, out_np, data_range=1.0)
            psnr_gt = peak_signal_noise_ratio(clean_np, out_np, data_range=1.0)
            psnr_gt_sm = peak_signal_noise_ratio(clean_np, out_avg.detach().cpu().numpy()[0], data_range=1.0)
            if i % 100:  # the notebook's show_every
                if psnr_noisy - psnr_noisy_last < -5:
                    with torch.no_grad():
                        for saved, param in zip(last_net, net.parameters()):
                            param.copy_(saved.to(device))
                else:
                    last_net = [p.detach().cpu() for p in net.parameters()]
                    psnr_noisy_last = psnr_noisy
            optimiser.step()
            seconds.append(time.perf_counter() - start)
            curve.append(psnr_gt)
            ema_curve.append(psnr_gt_sm)
    return {"seconds": np.asarray(seconds), "psnr": float(psnr_gt), "psnr_ema": float(psnr_gt_sm),
            "psnr_curve": np.asarray(curve), "psnr_ema_curve": np.asarray(ema_curve)}


def peak_gflops(dtype: torch.dtype, device: str | torch.device = "auto", n: int = 2048, repeats: int = 5) -> float:
    """The machine's measured peak: GFLOP/s of the best of ``repeats`` n×n matmuls in ``dtype``."""
    device = resolve_device(device)
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator).to(device, dtype) for _ in range(2))
    a @ b
    times = interleaved({"mm": lambda: a @ b}, repeats, device, warmup=1)["mm"]
    return 2 * n**3 / times.min() / 1e9


def step_flops(net: nn.Module, net_input: torch.Tensor) -> int:
    """FLOPs of one training step's forward and backward (``torch.utils.flop_counter``; convolutions and matmuls)."""
    with FlopCounterMode(display=False) as counter:
        net(net_input).square().mean().backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def denoising_pair(image: str, size: int, sigma: float = 25.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A square ``size``² crop-and-resize of ``image`` and its noisy observation (AWGN σ/255)."""
    x = images.load(image)
    side = min(x.shape[-2:])
    x = images.resize(images.center_crop(x, size=(side, side)), size=(size, size))
    return x, tasks.Denoise(sigma).degrade(x, seed=seed)


def _engine_seconds_per_iteration(history: pd.DataFrame) -> np.ndarray:
    """Per-iteration seconds of a fit over its evaluation intervals (monitor cost included)."""
    steps = np.diff(np.concatenate([[0], history["iteration"].to_numpy()]))
    return np.diff(np.concatenate([[0.0], history["seconds"].to_numpy()]))[1:] / steps[1:]


def bench_dip(configs=DIP_CONFIGS, iterations: int = 1000, image: str = "astronaut", sigma: float = 25.0,
              seed: int = 0, repeats: int = 1, eval_every: int = 10, matmul_size: int = 2048,
              device: str | torch.device = "auto") -> pd.DataFrame:
    """The papers' DIP loop against archlab's engine, per configuration ``(preset, size)``.

    In each of ``repeats`` rounds: :func:`reference_fit`, then ``fit(fast=True)``, then
    ``fit(fast=False)`` (the fp32 engine), all on the same noisy image with the same seed
    and ``iterations``. Reported: median seconds per iteration (the engine's over its
    evaluation intervals, measurements included; the first interval, with its warm-up, is
    left out), ``speedup`` = reference / fast, PSNR of the last output to the clean image
    (and fast − fp32) and of the
    exponential average of the outputs (``*_psnr_ema``), GFLOP of one
    forward + backward (FlopCounterMode), achieved GFLOP/s, the measured matmul peak for
    the dtype each loop computes in, and their ratio (roofline fraction).
    """
    device = resolve_device(device)
    fast = engine_settings(device, fast=True)
    dtype = torch.bfloat16 if fast["precision"] == "bf16" else torch.float32
    peaks = {"fp32": peak_gflops(torch.float32, device, matmul_size),
             fast["precision"]: peak_gflops(dtype, device, matmul_size)}
    rows = []
    for preset, size in configs:
        clean, noisy = denoising_pair(image, size, sigma, seed)
        task = tasks.Denoise(sigma)
        times = {"reference": [], "fast": [], "fp32": []}
        psnrs = {"reference": [], "fast": [], "fp32": []}
        emas = {"reference": [], "fast": [], "fp32": []}
        for _ in range(repeats):
            ref = reference_fit(preset, noisy, clean, iterations=iterations, seed=seed, device=device)
            times["reference"].append(ref["seconds"][1:])
            psnrs["reference"].append(ref["psnr"])
            emas["reference"].append(ref["psnr_ema"])
            for name, is_fast in (("fast", True), ("fp32", False)):
                result = fit(preset, task, noisy, reference=clean, iterations=iterations, seed=seed, fast=is_fast,
                             eval_every=eval_every, device=device, progress=False)
                times[name].append(_engine_seconds_per_iteration(result.history))
                psnrs[name].append(float(result.history["psnr"].iloc[-1]))
                emas[name].append(float(result.history["psnr_ema"].iloc[-1]))
        median = {name: float(np.median(np.concatenate(t))) for name, t in times.items()}
        psnr = {name: float(np.median(p)) for name, p in psnrs.items()}
        ema = {name: float(np.median(p)) for name, p in emas.items()}
        ref_net, ref_z = reference_network(preset, 3, (size, size), seed=seed)
        net, z = models.build(preset, 3, (size, size), seed=seed)
        flops = {"reference": step_flops(ref_net.to(device), ref_z.to(device)),
                 "engine": step_flops(net.to(device), z.to(device))}
        achieved_ref = flops["reference"] / median["reference"] / 1e9
        achieved_fast = flops["engine"] / median["fast"] / 1e9
        rows.append({
            "config": f"{_label(preset)} {size}x{size}", "iterations": iterations, "engine": _describe(fast),
            "reference_s_per_it": median["reference"], "fast_s_per_it": median["fast"], "fp32_s_per_it": median["fp32"],
            "speedup": median["reference"] / median["fast"], "reference_psnr": psnr["reference"],
            "fast_psnr": psnr["fast"], "fp32_psnr": psnr["fp32"], "fast_minus_fp32_db": psnr["fast"] - psnr["fp32"],
            "reference_psnr_ema": ema["reference"], "fast_psnr_ema": ema["fast"], "fp32_psnr_ema": ema["fp32"],
            "gflop_per_step": flops["engine"] / 1e9, "reference_gflops": achieved_ref, "fast_gflops": achieved_fast,
            "peak_fp32_gflops": peaks["fp32"], f"peak_{fast['precision']}_gflops": peaks[fast["precision"]],
            "reference_roofline": achieved_ref / peaks["fp32"],
            "fast_roofline": achieved_fast / peaks[fast["precision"]],
        })
    return pd.DataFrame(rows)


def _label(spec: models.ArchSpec | str) -> str:
    return spec if isinstance(spec, str) else f"{spec.kind}-{spec.depth}x{spec.width}"


def _describe(settings: dict) -> str:
    flags = [name.replace("_", "-") for name in ("channels_last", "compile") if settings[name]]
    return "+".join([settings["precision"], *flags])


def bench_many(spec: models.ArchSpec | str = "controlled-64", size: int = 64, ks=(1, 4, 8), iterations: int = 100,
               image: str = "astronaut", sigma: float = 25.0, repeats: int = 1, eval_every: int = 10,
               fast: bool = True, device: str | torch.device = "auto") -> pd.DataFrame:
    """Fit-iterations per second of :func:`~archlab.fitting.fit_many` (K runs, seeds 0..K-1) against K sequential fits.

    Both compute in the precision ``fit_many`` resolves from ``fast``; the sequential fits
    also use ``fast``'s channels-last, which ``vmap`` cannot. Only the loops are timed (``FitResult.seconds``);
    rounds interleave batched and sequential. ``speedup`` = batched / sequential throughput.
    """
    device = resolve_device(device)
    clean, noisy = denoising_pair(image, size, sigma)
    task = tasks.Denoise(sigma)
    common = dict(iterations=iterations, eval_every=eval_every, fast=fast, device=device)
    rows = []
    for k in ks:
        batched, sequential = [], []
        for _ in range(repeats):
            results = fit_many(spec, task, noisy, seeds=list(range(k)), references=clean, **common)
            precision = results[0].settings["precision"]
            batched.append(k * iterations / max(r.seconds for r in results))
            singles = [fit(spec, task, noisy, reference=clean, seed=s, precision=precision, progress=False, **common)
                       for s in range(k)]
            sequential.append(k * iterations / sum(r.seconds for r in singles))
        rows.append({"arch": _label(spec), "size": f"{size}x{size}", "K": k, "iterations": iterations,
                     "batched_engine": _describe(results[0].settings),
                     "sequential_engine": _describe(singles[0].settings),
                     "batched_it_per_s": float(np.median(batched)), "sequential_it_per_s": float(np.median(sequential)),
                     "speedup": float(np.median(batched) / np.median(sequential))})
    return pd.DataFrame(rows)


#: The metrics every side of :func:`bench_monitors` computes, in the order paper 000's loop computes them.
MONITOR_METRICS = ("psnr", "fbc", "blur", "sharpness")


def _papers_grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) → (H, W) by ``skimage.color.rgb2gray`` (BT.709 weights), as paper 000's code; grey passes."""
    return rgb2gray(image) if image.ndim == 3 else image


def _papers_fbc(output: np.ndarray, target: np.ndarray, bands: int = 5) -> list[float]:
    """Paper 000's per-iteration FBC (``get_circular_statastic``) restated: (H, W, 3) or (H, W) arrays.

    Full complex ``fft2`` and ``fftshift`` of both grey images, the magnitude ratio clipped to [0, 1],
    and ``bands`` rings of radius ``(W // 2) · k / bands`` around the centre, their integer masks rebuilt
    from ``np.ogrid`` on every call; each band's value is the masked sum over the mask's count.
    """
    magnitudes = [np.abs(np.fft.fftshift(np.fft.fft2(_papers_grey(a)))) for a in (output, target)]
    ratio = np.clip(magnitudes[0] / (magnitudes[1] + spectral.TARGET_EPS), 0.0, 1.0)
    h, w = ratio.shape
    rows, cols = np.ogrid[:h, :w]
    distance = np.sqrt((cols - w // 2) ** 2 + (rows - h // 2) ** 2)
    inside = np.zeros((h, w))
    values = []
    for fraction in np.linspace(1 / bands, 1, bands):
        disc = (distance <= (w // 2) * fraction).astype(np.int32)
        ring = (disc - inside).astype(np.int32)
        inside = disc
        values.append(np.sum(ring * ratio) / np.sum(ring))
    return values


def _papers_blur(image: np.ndarray, size: int = 9) -> float:
    """Paper 000's Crete blur (``PerceptualBlurMetric``, filter size 9) restated on an (H, W, 3) array.

    The grey image is re-blurred along each axis by a zero-padded ``scipy.signal.convolve2d`` with a
    1×``size`` (then ``size``×1) box, ``'same'``; image and re-blurred images are cropped to
    ``[ceil(size/2) : H − size//2]`` on both axes; absolute ``[1, −1]`` differences along the blur's axis
    (``'same'``, cropped by one pixel all round) give D of the image and D_b of its re-blurred form, and
    with V = max(D − D_b, 0) the blur per axis is (ΣD − ΣV) / ΣD; the result is the larger of the two.
    """
    grey = _papers_grey(image)
    box = np.full((1, size), 1.0 / size)
    first, last = math.ceil(size / 2), size // 2
    crop = (slice(first, grey.shape[0] - last), slice(first, grey.shape[1] - last))
    difference = np.array([[1.0, -1.0]])
    per_axis = []
    for kernel, step in ((box, difference), (box.T, difference.T)):
        reblurred = convolve2d(grey, kernel, "same")[crop]
        sharp = np.abs(convolve2d(grey[crop], step, "same"))[1:-1, 1:-1]
        blurred = np.abs(convolve2d(reblurred, step, "same"))[1:-1, 1:-1]
        variation = np.maximum(sharp - blurred, 0.0)
        per_axis.append((sharp.sum() - variation.sum()) / sharp.sum())
    return float(max(per_axis))


def _papers_mlv_sharpness(image: np.ndarray, top: int = stopping.DEFAULT_TOP,
                          decay: float = stopping.DEFAULT_DECAY) -> float:
    """Paper 000's MLV sharpness (``MLVMap`` + ``MLVSharpnessMeasure``) restated on an (H, W, 3) array.

    The map is taken on the grey interior ``g[2:H−1, 2:W−1]``: at each pixel the largest signed difference
    (neighbour − centre) over its 8 neighbours, neighbours outside that interior counting as 0 (the
    code's zero-filled shifted copies). All values are ranked by a full Python
    ``sorted(values.tolist(), reverse=True)``; as in the code the largest is dropped, the rest weighted
    by ``exp(−decay · i)``, i = 1, 2, …, the first weighted value dropped, the next ``top − 1`` kept, and
    their root mean square returned.
    """
    core = _papers_grey(image)[2:-1, 2:-1].astype(np.float64)  # the code's shifted copies are float64 zeros
    h, w = core.shape
    padded = np.pad(core, 1)
    variation = np.full(core.shape, -np.inf)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                variation = np.maximum(variation, padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] - core)
    ranked = sorted(variation.reshape(-1).tolist(), reverse=True)
    weighted = np.array(ranked[1:]) * np.exp(-decay * np.arange(1, len(ranked)))
    kept = weighted[1:top]
    return float(np.sqrt(np.mean(kept**2)))


def _numpy_fbc(output: np.ndarray, target: np.ndarray, bands: int) -> np.ndarray:
    """:func:`archlab.spectral.fbc`'s definition in NumPy (BT.601 luma, float64), rings rebuilt on every call."""
    luma = np.array(images.LUMA)
    ratio = (np.abs(np.fft.fftshift(np.fft.fft2(output @ luma)))
             / (np.abs(np.fft.fftshift(np.fft.fft2(target @ luma))) + spectral.TARGET_EPS))
    ratio = np.clip(ratio, 0.0, 1.0)
    h, w = ratio.shape
    y, x = np.ogrid[:h, :w]
    distance = np.sqrt((x - w // 2) ** 2 + (y - h // 2) ** 2)
    inner = np.zeros((h, w), dtype=bool)
    means = []
    for fraction in np.linspace(1 / bands, 1, bands):
        disc = distance <= (w // 2) * fraction
        means.append(ratio[disc & ~inner].mean())
        inner = disc
    return np.array(means)


def _numpy_mlv_sharpness(image: np.ndarray) -> float:
    """:func:`archlab.stopping.mlv_sharpness`'s definition (absolute differences, BT.601 luma) by a full ``np.sort``."""
    grey = image @ np.array(images.LUMA)
    h, w = grey.shape
    centre = grey[1:-1, 1:-1]
    variation = np.zeros_like(centre)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                variation = np.maximum(variation, np.abs(grey[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx] - centre))
    ranked = np.sort(variation, axis=None)[::-1][:stopping.DEFAULT_TOP]
    weighted = ranked * np.exp(-stopping.DEFAULT_DECAY * np.arange(1, ranked.size + 1))
    return float(np.sqrt(np.mean(weighted**2)))


def _numpy_psnr(output: np.ndarray, target: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((output - target) ** 2)))


def _papers_monitors(output: torch.Tensor, observation: torch.Tensor, clean: torch.Tensor):
    """Paper 000's per-iteration measurements (``code/denoising.py``'s closure) restated.

    Returns ``(iteration, parts)``: ``iteration()`` does what one iteration of that loop does - two PSNRs
    of ``out.detach().cpu().numpy()[0]`` (each with its own host copy) against the noisy and the clean
    image by ``skimage.metrics.peak_signal_noise_ratio``, a third host copy transposed to (H, W, 3), and
    on it the FBC against the noisy image, the blur and the sharpness; ``parts`` times the same pieces one
    by one (``copy`` = the third host copy; the others start from one made in advance).
    """
    noisy_chw, clean_chw = observation[0].cpu().numpy(), clean[0].cpu().numpy()  # made once, as the code's

    def host() -> np.ndarray:
        return output.detach().cpu().numpy()[0]

    def psnrs() -> tuple[float, float]:
        # The code passes no data_range: for float images in [0, 1] scikit-image infers 1.
        return peak_signal_noise_ratio(noisy_chw, host()), peak_signal_noise_ratio(clean_chw, host())

    def iteration() -> tuple:
        psnr_noisy, psnr_clean = psnrs()
        image = host().transpose(1, 2, 0)
        fbc = _papers_fbc(image, noisy_chw.transpose(1, 2, 0))
        return psnr_noisy, psnr_clean, fbc, _papers_blur(image), _papers_mlv_sharpness(image)

    image = host().transpose(1, 2, 0).copy()
    parts = {"psnr": psnrs, "copy": lambda: host().transpose(1, 2, 0),
             "fbc": lambda: _papers_fbc(image, noisy_chw.transpose(1, 2, 0)),
             "blur": lambda: _papers_blur(image), "sharpness": lambda: _papers_mlv_sharpness(image)}
    return iteration, parts


def _numpy_monitors(output: np.ndarray, observation: np.ndarray, clean: np.ndarray) -> dict:
    """archlab's definitions of the metrics in tuned NumPy/scikit-image on (H, W, 3) float64 arrays, as thunks."""
    return {
        "psnr": lambda: np.array([_numpy_psnr(output, observation), _numpy_psnr(output, clean)]),
        "fbc": lambda: _numpy_fbc(output, observation, 5),
        "blur": lambda: skimage_blur_effect(output, h_size=stopping.DEFAULT_H_SIZE, channel_axis=-1),
        "sharpness": lambda: _numpy_mlv_sharpness(output),
    }


def _torch_monitors(output: torch.Tensor, observation: torch.Tensor, clean: torch.Tensor,
                    fbc: spectral.FBC) -> dict:
    """archlab's on-device monitors as a fit runs them (``fbc``: the FBC against the observation, its
    target spectrum computed once, as the fit's monitor and paper 000's loop), as thunks."""
    return {
        "psnr": lambda: torch.cat([metrics.psnr(output, observation), metrics.psnr(output, clean)]),
        "fbc": lambda: fbc(output)[0],
        "blur": lambda: stopping.blur_effect(output),
        "sharpness": lambda: stopping.mlv_sharpness(output),
    }


def _torch_iteration(output: torch.Tensor, observation: torch.Tensor, clean: torch.Tensor, fbc: spectral.FBC):
    """One evaluation of the on-device monitors as a fit takes it: two PSNRs and
    :func:`archlab.fitting.output_measures` (blur, sharpness, FBC on one luma)."""

    def iteration() -> list:
        return [metrics.psnr(output, observation), metrics.psnr(output, clean), *output_measures(output, fbc)]

    return iteration


def bench_monitors(size: int = 512, repeats: int = 7, sigma: float = 25.0, seed: int = 0,
                   device: str | torch.device = "auto") -> dict:
    """A fit's on-device monitors against paper 000's per-iteration NumPy/SciPy code and tuned NumPy.

    One RGB image, scikit-image's astronaut resized to ``size`` x ``size``, with Gaussian noise ``sigma``
    (seed ``seed``) stands for the network's output and a second noisy draw (seed ``seed + 1``) for the
    observation, the target of the FBC and of the first PSNR; the clean image is that of the second. Three sides, in one process:

    * ``papers`` - a restatement of what paper 000's reference code (``code/denoising.py`` with
      ``code/utils/measure_utils.py``) computes at every iteration, starting from the output tensor on
      ``device``: ``out.detach().cpu().numpy()`` host copies, two ``skimage.metrics.peak_signal_noise_ratio``
      (against the noisy and the clean image), the FBC by ``np.fft.fft2`` + ``fftshift`` of the
      ``rgb2gray`` images with five ring masks rebuilt from ``np.ogrid`` per call, the Crete blur by
      ``scipy.signal.convolve2d`` with a 1×9 / 9×1 box and ``[1, −1]`` differences, and the MLV sharpness
      by a full Python ``sorted`` of the map (:func:`_papers_monitors`);
    * ``numpy`` - archlab's definitions of the same metrics in tuned NumPy on float64 host arrays:
      ``skimage.measure.blur_effect`` (h_size 9), the MLV sharpness by ``np.sort``, the FBC by ``np.fft``
      with boolean rings, two PSNRs by ``np.mean``;
    * ``torch`` - archlab's monitors as :func:`archlab.fitting.fit` runs them on ``device``:
      :func:`archlab.stopping.blur_effect`, :func:`archlab.stopping.mlv_sharpness`,
      :class:`archlab.spectral.FBC` (built once before timing, as a fit's monitor builds it once per fit)
      and :func:`archlab.metrics.psnr` against the noisy and the clean image.

    The three sides run interleaved (:func:`interleaved`), one warm-up round, then ``repeats`` rounds;
    the metrics are then timed one by one in the same way.

    Returns
    -------
    dict
        ``papers_s``, ``numpy_s``, ``torch_s``: median seconds of all the side's metrics;
        ``<side>_<metric>_s`` for the metrics ``psnr`` (both), ``fbc``, ``blur``, ``sharpness`` (and
        ``papers_copy_s``, the code's third host copy); ``ratio`` = papers_s / torch_s; ``ratio_numpy`` = numpy_s / torch_s; ``max_rel_diff``: the largest relative
        disagreement between the numpy and torch values (the papers' code differs in definition: grey
        weights, borders, signed differences); ``size``, ``repeats``, ``device``, ``threads``.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise ValueError(f"size: expected an integer >= 16, got {size!r}")
    device = resolve_device(device)
    clean = images.resize(images.load("astronaut"), size=(size, size))
    task = tasks.Denoise(sigma=sigma)
    noisy, observation = task.degrade(clean, seed=seed), task.degrade(clean, seed=seed + 1)

    def host(x: torch.Tensor) -> np.ndarray:
        return images.to_numpy(x).astype(np.float64)

    papers_iteration, papers_parts = _papers_monitors(noisy.to(device), observation, clean)
    numpy_parts = _numpy_monitors(host(noisy), host(observation), host(clean))
    on_device = noisy.to(device), observation.to(device), clean.to(device)
    fbc = spectral.FBC(on_device[1], 5)
    torch_parts = _torch_monitors(*on_device, fbc)
    sides = {"papers": papers_iteration,
             "numpy": lambda: [part() for part in numpy_parts.values()],
             "torch": _torch_iteration(*on_device, fbc)}
    totals = interleaved(sides, repeats, device)
    result = {f"{side}_s": float(np.median(t)) for side, t in totals.items()}
    result["ratio"] = result["papers_s"] / result["torch_s"]
    result["ratio_numpy"] = result["numpy_s"] / result["torch_s"]
    parts = {f"{side}_{name}": part for side, side_parts in
             (("papers", papers_parts), ("numpy", numpy_parts), ("torch", torch_parts))
             for name, part in side_parts.items()}
    result.update({f"{name}_s": float(np.median(t)) for name, t in interleaved(parts, repeats, device).items()})
    differences = []
    for name in MONITOR_METRICS:
        expected = np.atleast_1d(numpy_parts[name]()).astype(np.float64)
        measured = torch_parts[name]().double().cpu().numpy().ravel()
        differences.append(np.max(np.abs(measured - expected) / np.maximum(np.abs(expected), 1e-12)))
    result["max_rel_diff"] = float(max(differences))
    result.update(size=size, repeats=repeats, device=str(device), threads=torch.get_num_threads())
    return result


def upsample_naive(x: torch.Tensor, taps: np.ndarray, factor: int, padding: str = "reflect") -> torch.Tensor:
    """The papers' form, kept as the speed baseline: insert zeros, then one depthwise 2-D
    convolution with the outer-product kernel ``h hᵀ`` (it multiplies every inserted zero).
    Same alignment and borders as :class:`Upsampler`, so the outputs are equal."""
    n, c, h, w = x.shape
    s, length = factor, len(taps)
    _, before, after = polyphase_kernels(taps, s)
    before, after = before + 1, after + 1
    x = pad_axis(pad_axis(x, 3, before, after, padding), 2, before, after, padding)
    nails = x.new_zeros(n, c, x.shape[2] * s, x.shape[3] * s)
    nails[:, :, ::s, ::s] = x
    t = torch.as_tensor(np.asarray(taps), dtype=x.dtype, device=x.device)
    kernel = torch.outer(t, t).flip(0, 1).expand(c, 1, length, length)
    y = F.conv2d(nails, kernel, groups=c)
    # y[m] = Σ_k h[k] nails[m + L - 1 - k] and nails[q] = u[q - s·before], so output n sits at m = n + off.
    off = filter_offset(length, s) + s * before - (length - 1)
    return y[:, :, off : off + h * s, off : off + w * s]


def monitor_overhead(arch: str | models.ArchSpec = "faster-dip-32", source: str | os.PathLike = "astronaut", *,
                     size: int = 128, iterations: int = 200, eval_every: int = 10, repeats: int = 3,
                     seed: int = 0, device: str | torch.device = "auto") -> dict:
    """Share of a fit's wall time spent on its evaluations (FBC, ratio, PSNR/SSIM, the host transfer).

    A denoising fit (σ 25) of ``iterations`` steps on a ``size`` x ``size`` image is timed with
    ``eval_every`` and with a single evaluation at the end (``eval_every = iterations``), alternately,
    ``repeats`` times each; the medians give ``overhead = (t_eval - t_plain) / t_eval``. ``python benchmarks/speed.py overhead`` prints it.

    Returns
    -------
    dict
        ``fit_s`` (median, with evaluations), ``plain_s`` (median, without), ``overhead`` (fraction of
        ``fit_s``), ``evaluations``, ``size``, ``iterations``, ``eval_every``, ``device``.
    """
    check_count("iterations", iterations, 2)
    check_count("eval_every", eval_every)
    check_count("repeats", repeats)
    spec = models.load_spec(arch)
    clean = images.load(source)
    clean = restoration.clean_image(clean, scale=size / min(clean.shape[-2:]), crop=(size, size), multiple=spec.multiple)
    task = tasks.Denoise(sigma=25.0)
    noisy = task.degrade(clean, seed=seed)

    def run(every: int) -> float:
        window = every * math.ceil(stopping.DEFAULT_WINDOW / every)
        return fit(spec, task, noisy, iterations=iterations, seed=seed, device=device, eval_every=every,
                   window=window, reference=clean, progress=False).seconds

    run(eval_every)
    timed, plain = [], []
    for _ in range(repeats):
        timed.append(run(eval_every))
        plain.append(run(iterations))
    fit_s, plain_s = statistics.median(timed), statistics.median(plain)
    return {"fit_s": fit_s, "plain_s": plain_s, "overhead": (fit_s - plain_s) / fit_s,
            "evaluations": iterations // eval_every, "size": size, "iterations": iterations,
            "eval_every": eval_every, "device": str(resolve_device(device))}


# --- the command line ---

def parser() -> argparse.ArgumentParser:
    """``python benchmarks/speed.py upsample | dip | many | monitors | overhead [--threads N]``."""
    p = argparse.ArgumentParser(prog="benchmarks/speed.py", description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    sub = p.add_subparsers(dest="bench_command", required=True, metavar="SUBCOMMAND")

    upsample = sub.add_parser("upsample", help="polyphase Upsampler vs zero insertion + 2-D depthwise conv (fwd+bwd)")
    upsample.add_argument("--filter", default="L-60", help="catalogue name or filter TOML (default L-60)")
    upsample.add_argument("--channels", type=int, default=128, help="channels of the input (default 128)")
    upsample.add_argument("--size", type=int, default=64, help="input side in pixels (default 64)")
    upsample.add_argument("--repeats", type=int, default=30, help="interleaved timed rounds (default 30)")
    _add_common(upsample)
    upsample.set_defaults(func=run_upsample)

    dip = sub.add_parser("dip", help="the papers' DIP loop vs archlab's engine: s/iteration, PSNR, roofline")
    dip.add_argument("--config", action="append", metavar="PRESET:SIZE",
                     help="architecture preset and image side, repeatable (default ulyanov-dip:128 faster-dip-64:256)")
    dip.add_argument("--iterations", type=int, default=1000, help="iterations of every loop (default 1000)")
    dip.add_argument("--image", default="astronaut", help="clean image, file or built-in (default astronaut)")
    dip.add_argument("--sigma", type=float, default=25.0, help="noise σ on the 0..255 scale (default 25)")
    dip.add_argument("--seed", type=int, default=0, help="seed of noise, weights and input (default 0)")
    dip.add_argument("--repeats", type=int, default=1, help="rounds of the three loops (default 1)")
    _add_common(dip)
    dip.set_defaults(func=run_dip)

    many = sub.add_parser("many", help="fit_many of K runs vs K sequential fits: fit-iterations per second")
    many.add_argument("--arch", default="controlled-64", help="preset or spec file (default controlled-64)")
    many.add_argument("--size", type=int, default=64, help="image side (default 64)")
    many.add_argument("--k", type=int, nargs="+", default=[1, 4, 8], help="numbers of runs (default 1 4 8)")
    many.add_argument("--iterations", type=int, default=100, help="iterations of every fit (default 100)")
    many.add_argument("--repeats", type=int, default=1, help="rounds per K (default 1)")
    many.add_argument("--fp32", action="store_true", help="compare in fp32 eager instead of the fast settings")
    _add_common(many)
    many.set_defaults(func=run_many)

    monitors = sub.add_parser("monitors", help="on-device monitors vs paper 000's NumPy/SciPy code and tuned NumPy")
    monitors.add_argument("--size", type=int, default=512, help="image side (default 512)")
    monitors.add_argument("--repeats", type=int, default=7, help="interleaved timed rounds (default 7)")
    _add_common(monitors)
    monitors.set_defaults(func=run_monitors)

    overhead = sub.add_parser("overhead", help="share of a fit's wall time spent on its evaluations")
    overhead.add_argument("--arch", default="faster-dip-32", help="preset or spec file (default faster-dip-32)")
    overhead.add_argument("--size", type=int, default=128, help="image side (default 128)")
    overhead.add_argument("--iterations", type=int, default=200, help="iterations of every fit (default 200)")
    overhead.add_argument("--eval-every", type=int, default=10, help="iterations between evaluations (default 10)")
    overhead.add_argument("--repeats", type=int, default=3, help="rounds of the two fits (default 3)")
    _add_common(overhead)
    overhead.set_defaults(func=run_overhead)
    return p


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=argparse.SUPPRESS, help="torch threads")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("-o", "--output", default=None, help="also write the table to this CSV file")


def _prepare(args) -> torch.device:
    """The device (``--threads`` is the global option, applied before the command runs)."""
    return resolve_device(args.device)


def _report(table: pd.DataFrame, args, device: torch.device, bar: str) -> None:
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False))
    print("conditions: " + ", ".join(f"{k}={v}" for k, v in conditions(device).items()))
    print(bar)
    if args.output:
        with images.atomic_path(args.output) as tmp:
            table.to_csv(tmp, index=False)
        print(f"wrote {args.output}")


def run_upsample(args) -> int:
    device = _prepare(args)
    table = bench_upsample(args.filter, args.channels, args.size, args.repeats, device)
    _report(table, args, device, "speedup: naive median / Upsampler median")
    return 0


def _configs(values: list[str] | None) -> tuple[tuple[str, int], ...]:
    if not values:
        return DIP_CONFIGS
    configs = []
    for value in values:
        preset, _, size = value.rpartition(":")
        if not preset or not size.isdigit():
            raise ValueError(f"config: {value!r} is not PRESET:SIZE (e.g. ulyanov-dip:128)")
        configs.append((preset, int(size)))
    return tuple(configs)


def run_dip(args) -> int:
    device = _prepare(args)
    table = bench_dip(_configs(args.config), args.iterations, args.image, args.sigma, args.seed, args.repeats,
                            device=device)
    _report(table, args, device, "speedup: reference loop / archlab fit; fast_minus_fp32_db: PSNR difference of the two engines")
    return 0


def run_many(args) -> int:
    device = _prepare(args)
    table = bench_many(args.arch, args.size, tuple(args.k), args.iterations, repeats=args.repeats,
                             fast=not args.fp32, device=device)
    _report(table, args, device, "speedup: batched / sequential throughput")
    return 0


def run_monitors(args) -> int:
    device = _prepare(args)
    table = pd.DataFrame([bench_monitors(args.size, args.repeats, device=device)])
    _report(table, args, device, "ratio: papers_s / torch_s; max_rel_diff: largest relative numpy/torch disagreement")
    return 0


def run_overhead(args) -> int:
    device = _prepare(args)
    table = pd.DataFrame([monitor_overhead(args.arch, size=args.size, iterations=args.iterations,
                                                       eval_every=args.eval_every, repeats=args.repeats,
                                                       device=device)])
    _report(table, args, device, "overhead: the evaluations' share of the fit's wall time")
    return 0

def main(argv: list[str] | None = None) -> int:
    """Run one benchmark; bad input is one line on stderr and exit code 2."""
    args = parser().parse_args(argv)
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            print(f"speed: error: --threads: {args.threads} is invalid; allowed: an integer >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:
        print(f"speed {args.bench_command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
