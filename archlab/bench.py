"""Benchmarks: the polyphase upsampler and the fit engine against the papers' forms.

Each function runs its contenders in one process, interleaved round by round (so a
machine whose load changes slows them alike), and returns a table of medians:

* :func:`bench_upsample` - forward + backward of :class:`~archlab.layers.Upsampler`
  against :func:`~archlab.layers.upsample_naive` (zero insertion, one depthwise 2-D
  convolution with the outer-product kernel: the papers' form);
* :func:`bench_dip` - a DIP fit as the papers' code runs it (:func:`reference_fit`) against
  :func:`archlab.fit.fit` with its fast settings and with the fp32 reference settings:
  seconds per iteration, PSNR after N iterations, achieved GFLOP/s and the fraction of the
  machine's measured matmul peak (a roofline fraction);
* :func:`bench_many` - :func:`archlab.engine.fit_many` of K runs against K sequential fits;
* :func:`bench_monitors` - what a fit's measurements cost: the on-device monitor every
  ``eval_every`` iterations against the papers' per-step host copy and NumPy PSNR.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio
from torch.utils.flop_counter import FlopCounterMode

from archlab import filters, images, layers, models, tasks
from archlab.engine import engine_settings, fit_many
from archlab.fit import _Monitor, fit, resolve_device

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
    ``speedup`` = naive median / method median (issue 2 bar: ≥ 5 for ``L-60``).
    """
    device = resolve_device(device)
    flt = filters.get(filter)
    layer = layers.Upsampler(channels, flt, factor=flt.factor).to(device)
    taps = np.array(flt.taps)
    x = torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    if not torch.allclose(layer(x), layers.upsample_naive(x, taps, flt.factor), atol=1e-4):
        raise RuntimeError(f"bench upsample: Upsampler and the naive form disagree for {flt.name}")

    def run(upsample):
        def call():
            leaf = x.detach().requires_grad_()
            upsample(leaf).sum().backward()
        return call

    naive_form = run(lambda t: layers.upsample_naive(t, taps, flt.factor))
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
    "psnr_ema": the same for the averaged output}``.
    """
    device = resolve_device(device)
    net, z = reference_network(spec, observation.shape[1], tuple(observation.shape[-2:]), seed=seed)
    net, z = net.to(device).train(), z.to(device)
    y = observation.to(device)
    noisy_np, clean_np = observation[0].cpu().numpy(), clean[0].cpu().numpy()
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    noise = z.detach().clone()
    out_avg, last_net, psnr_noisy_last, psnr_gt, psnr_gt_sm = None, None, 0.0, float("nan"), float("nan")
    seconds = []
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
    return {"seconds": np.asarray(seconds), "psnr": float(psnr_gt), "psnr_ema": float(psnr_gt_sm)}


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
    (and fast − fp32, issue 8 bar: |Δ| ≤ 0.1 dB after 1,000 iterations) and of the
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
    """Fit-iterations per second of :func:`~archlab.engine.fit_many` (K runs, seeds 0..K-1) against K sequential fits.

    Both compute in the precision ``fit_many`` resolves (``fast`` may leave an SVD-bounded
    spec in fp32, see :func:`~archlab.engine.fit_many`); the sequential fits otherwise use
    ``fast``'s settings (channels-last). Only the loops are timed (``FitResult.seconds``);
    rounds interleave batched and sequential. ``speedup`` = batched / sequential throughput
    (issue 8 bar: ≥ 2 at K = 4, 64×64).
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


def bench_monitors(spec: models.ArchSpec | str = "controlled-64", sizes=(64, 128, 256), repeats: int = 20,
                   eval_every: int = 10, device: str | torch.device = "auto") -> pd.DataFrame:
    """What measuring a fit costs per iteration, against one training step.

    ``monitor_ms``: archlab's evaluation (loss, PSNR and SSIM of the output and its EMA,
    blur/sharpness ratio, FBC - :class:`archlab.fit._Monitor` - and its one host transfer);
    ``host_metrics_ms``: the papers' per-step host copy of the output and of its average and
    three NumPy PSNRs; ``step_ms``: one fp32 forward + backward + Adam step of ``spec``.
    ``monitor_per_it_ms`` = ``monitor_ms`` / ``eval_every``.
    """
    device = resolve_device(device)
    rows = []
    for size in sizes:
        clean, noisy = denoising_pair("astronaut", size)
        net, z = models.build(spec, 3, (size, size))
        net, z, y, x = net.to(device), z.to(device), noisy.to(device), clean.to(device)
        optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
        out = net(z).detach()
        monitor = _Monitor(x, y, 5)
        noisy_np, clean_np = noisy[0].numpy(), clean[0].numpy()

        def step():
            optimiser.zero_grad()
            F.mse_loss(net(z), y).backward()
            optimiser.step()

        def measure():
            with torch.no_grad():
                monitor.measure(0, 0.0, F.mse_loss(out, y), out, out, out).tolist()
            monitor.drop_last()

        def host_metrics():
            out_np = out.detach().cpu().numpy()[0]
            peak_signal_noise_ratio(noisy_np, out_np, data_range=1.0)
            peak_signal_noise_ratio(clean_np, out_np, data_range=1.0)
            peak_signal_noise_ratio(clean_np, out.detach().cpu().numpy()[0], data_range=1.0)

        times = interleaved({"step": step, "monitor": measure, "host": host_metrics}, repeats, device)
        ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
        rows.append({"arch": _label(spec), "size": f"{size}x{size}", "step_ms": ms["step"], "monitor_ms": ms["monitor"],
                     "monitor_per_it_ms": ms["monitor"] / eval_every, "host_metrics_ms": ms["host"],
                     "monitor_share": ms["monitor"] / eval_every / ms["step"], "host_share": ms["host"] / ms["step"]})
    return pd.DataFrame(rows)
