"""The DIP optimisation loop: fit one network to one degraded image, measuring as it goes.

``fit`` minimises the task's data term ‖A f_θ(z + η_t) − y‖² over the weights θ
with Adam (Ulyanov et al. 2018), from a fixed random input z jittered by
η_t ~ N(0, input_jitter²) each step, keeps an exponential moving average of the
outputs (weight ``ema``, Ulyanov's ``exp_weight``), and every ``eval_every``
iterations measures - on the device, with one host transfer per evaluation, not
per step - the loss, PSNR/SSIM of the output and its EMA against a reference, the
blur/sharpness ratio of paper 000 §4.3 and the frequency-band correspondence
(paper 000 eq. 1). The ratio rule stops the fit (``stop="auto"``) or only records
where it would have stopped (``stop="record"``); a divergence guard restores the
last good weights after a loss jump and gives up after repeated ones.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch
import torch.nn as nn

from archlab import images, metrics, spectral, stopping
from archlab.engine import BF16_MAX_RELATIVE_ERROR, PRECISIONS, CompiledModule, bf16_error, engine_settings, resolve_device
from archlab.models import ArchSpec, build, for_size, load_spec
from archlab.tasks import Task

STOPS = ("none", "auto", "record")


@dataclass(frozen=True)
class FitSettings:
    """Everything but the architecture and the task that decides a fit (serialisable)."""

    iterations: int = 3000
    lr: float = 0.01
    input_jitter: float = 1 / 30
    ema: float = 0.99
    seed: int = 0
    eval_every: int = 10
    stop: str = "none"
    window: int = stopping.DEFAULT_WINDOW
    eps: float = stopping.DEFAULT_EPS
    ratio_measures: str = "skimage"
    fbc_bands: int = 5
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self):
        checks = {
            "iterations": (isinstance(self.iterations, int) and self.iterations >= 1, "an integer ≥ 1"),
            "lr": (self.lr > 0, "a number > 0"),
            "input_jitter": (self.input_jitter >= 0, "a number ≥ 0"),
            "ema": (0 <= self.ema < 1, "0 ≤ ema < 1"),
            "eval_every": (isinstance(self.eval_every, int) and self.eval_every >= 1, "an integer ≥ 1"),
            "stop": (self.stop in STOPS, ", ".join(STOPS)),
            "window": (isinstance(self.window, int) and self.window >= 1 and self.window % self.eval_every == 0,
                       "a positive multiple of eval_every"),
            "eps": (self.eps > 0, "a number > 0"),
            "ratio_measures": (self.ratio_measures in stopping.MEASURES, ", ".join(stopping.MEASURES)),
            "fbc_bands": (isinstance(self.fbc_bands, int) and self.fbc_bands >= 0, "an integer ≥ 0 (0 = off)"),
            "precision": (self.precision in PRECISIONS, ", ".join(PRECISIONS)),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise ValueError(f"fit.{name}: {getattr(self, name)!r} is invalid; allowed: {allowed}")


@dataclass
class FitResult:
    """What a fit returns.

    ``output`` is the restored image from the last iterate (the task's ``restore`` of
    the network output), ``ema_output`` the same from the EMA of the outputs,
    ``best_output`` the output at the best evaluated PSNR (only with a reference),
    ``stop_output`` the output where the ratio rule fired (``stop`` = auto/record).
    ``history`` has one row per evaluation.
    """

    output: torch.Tensor
    ema_output: torch.Tensor
    history: pd.DataFrame
    stopped_at: int
    stop_reason: str
    seconds: float
    spec: dict
    settings: dict
    task: dict
    best_output: torch.Tensor | None = None
    best_iteration: int | None = None
    auto_stop_iteration: int | None = None
    stop_output: torch.Tensor | None = None
    restores: int = 0
    extras: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Scalar results: peak/final/stop PSNR and iterations where a reference was known."""
        h = self.history
        out = {"iterations": self.stopped_at, "stop_reason": self.stop_reason, "seconds": round(self.seconds, 2),
               "auto_stop_iteration": self.auto_stop_iteration}
        if "psnr" in h and h["psnr"].notna().any():
            peak = h.loc[h["psnr"].idxmax()]
            out.update(peak_psnr=float(peak["psnr"]), peak_iteration=int(peak["iteration"]),
                       final_psnr=float(h["psnr"].iloc[-1]), final_psnr_ema=float(h["psnr_ema"].iloc[-1]),
                       peak_psnr_ema=float(h["psnr_ema"].max()))
            out["psnr_drop"] = out["peak_psnr"] - out["final_psnr"]
            if self.auto_stop_iteration is not None:
                row = h[h["iteration"] == self.auto_stop_iteration]
                out["stop_psnr"] = float(row["psnr"].iloc[0]) if len(row) else math.nan
        return out


def output_measures(output: torch.Tensor, fbc: spectral.FBC | None = None, measures: str = "skimage"):
    """The no-reference measures of a network output as a fit takes them at every evaluation:
    ``(blur, sharpness, fbc values or None)`` (paper 000 eq. 8 and eq. 1). ``measures`` picks the
    blur/sharpness pair (:data:`archlab.stopping.MEASURES`); with ``"skimage"`` the luma is computed
    once for the sharpness and the FBC (both BT.601; the blur uses scikit-image's BT.709 grey)."""
    luma = images.to_grey(output)
    bands = None if fbc is None else fbc(luma)[0]
    if measures == "paper":
        return stopping.blur_effect_paper(output), stopping.mlv_sharpness_paper(output), bands
    return stopping.blur_effect(output), stopping.mlv_sharpness(luma), bands


class _Monitor:
    """Evaluation-time measurements, computed on the device and kept there until the end."""

    def __init__(self, reference: torch.Tensor | None, observation: torch.Tensor, bands: int,
                 measures: str = "skimage"):
        self.reference, self.observation, self.bands, self.measures = reference, observation, bands, measures
        self.rows: list[torch.Tensor] = []
        self.iterations: list[int] = []
        self.times: list[float] = []
        self.columns = ["loss", "psnr_obs", "blur", "sharpness", "ratio"]
        if reference is not None:
            self.columns += ["psnr", "psnr_ema", "ssim", "ssim_ema"]
        self.fbc = None  # FBC against the observation, where the network outputs its shape
        if bands and min(observation.shape[-2:]) >= 2 * bands:
            self.columns += [f"fbc_{i}" for i in range(bands)]
            self.fbc = spectral.FBC(observation.float(), bands)
        else:
            self.bands = 0

    def drop_last(self) -> None:
        """Forget the latest evaluation (its weights were rolled back)."""
        for values in (self.rows, self.iterations, self.times):
            values.pop()

    def frame(self) -> pd.DataFrame:
        """The history: one row per kept evaluation (one host transfer for all of them)."""
        data = torch.stack(self.rows).cpu().numpy() if self.rows else None
        history = pd.DataFrame(data, columns=self.columns)
        history.insert(0, "iteration", self.iterations)
        history["seconds"] = self.times
        return history

    def measure(self, iteration: int, seconds: float, loss: torch.Tensor, net_out: torch.Tensor, restored: torch.Tensor, ema: torch.Tensor) -> torch.Tensor:
        net_out = net_out.float()
        same_shape = net_out.shape == self.observation.shape
        values = [loss.detach().float().reshape(1), metrics.psnr(net_out, self.observation)
                  if same_shape else loss.new_full((1,), math.nan)]
        blur, sharp, bands = output_measures(net_out, self.fbc if self.bands and same_shape else None, self.measures)
        values += [blur, sharp, blur / sharp]
        if self.reference is not None:
            values += [metrics.psnr(restored, self.reference), metrics.psnr(ema, self.reference),
                       metrics.ssim(restored, self.reference), metrics.ssim(ema, self.reference)]
        if self.bands:
            values.append(bands if bands is not None else net_out.new_full((self.bands,), math.nan))
        row = torch.cat([v.reshape(-1).float() for v in values])
        self.rows.append(row)
        self.iterations.append(iteration)
        self.times.append(seconds)
        return row


def fit(spec_or_module: ArchSpec | str | nn.Module, task: Task, observation: torch.Tensor, *,
        iterations: int = 3000, lr: float = 0.01, input_jitter: float = 1 / 30, ema: float = 0.99, seed: int = 0,
        device: str | torch.device = "auto", eval_every: int = 10, reference: torch.Tensor | None = None,
        stop: str = "none", window: int = stopping.DEFAULT_WINDOW, eps: float = stopping.DEFAULT_EPS,
        ratio_measures: str = "skimage", fbc_bands: int = 5, fast: bool = True, precision: str | None = None, channels_last: bool | None = None,
        compile: bool | None = None, net_input: torch.Tensor | None = None, progress: bool | None = None,
        degradation_seed: int | None = None, on_evaluation=None) -> FitResult:
    """Fit a DIP network to one observation (Ulyanov et al. 2018; paper 000 §4).

    Parameters
    ----------
    spec_or_module : ArchSpec, preset name, path, or nn.Module
        The architecture; a module needs ``net_input``.
    task : Task
        The inverse problem (its ``physics`` gives A, the loss, the output size).
    observation : Tensor (1, C, h, w)
        The degraded image y in [0, 1].
    reference : Tensor, optional
        The clean image (in the task's reference space) for PSNR/SSIM; the best output is kept.
    seed : int
        Seeds the weights, the input noise and its jitter.
    degradation_seed : int, optional
        The seed ``task.degrade`` made the observation with; the physics rebuilds its seeded
        parts from it (a Bernoulli inpainting mask). Default: ``seed``.
    stop : {"none", "auto", "record"}
        ``auto`` stops at the ratio rule (paper 000 eq. 8: Δr < ``eps`` over windows of
        ``window`` iterations); ``record`` notes where it fires and runs on.
    ratio_measures : {"skimage", "paper"}
        The blur and sharpness of the ratio (:data:`archlab.stopping.MEASURES`): scikit-image's
        Crete blur with Bahrami & Kot's MLV, or paper 000's code's own forms.
    fast : bool
        Let the engine pick ``precision``, ``channels_last`` and ``compile`` for the device
        (:func:`archlab.engine.fast_settings`); ``False`` is the fp32 eager reference path.
    precision, channels_last, compile
        Override the engine's choice: ``bf16`` runs forward and backward under bfloat16
        autocast (fp32 weights), ``channels_last`` keeps activations NHWC, ``compile``
        wraps the network in :class:`archlab.engine.CompiledModule`.
    on_evaluation : callable, optional
        Called as ``on_evaluation(iteration, output)`` at every kept evaluation with the
        network's output (on the device), e.g. to record the trajectory of the fit.

    Returns
    -------
    FitResult
    """

    device = resolve_device(device)
    engine = engine_settings(device, fast, precision, channels_last, compile)
    precision_requested = precision is not None
    FitSettings(iterations=iterations, lr=lr, input_jitter=input_jitter, ema=ema, seed=seed, eval_every=eval_every,
                stop=stop, window=window, eps=eps, ratio_measures=ratio_measures, fbc_bands=fbc_bands, **engine)  # validate before any work
    if observation.ndim != 4 or observation.shape[0] != 1:
        raise ValueError(f"observation: expected shape (1, C, H, W), got {tuple(observation.shape)}")
    y = observation.to(device, torch.float32)
    physics = task.physics(tuple(y.shape), seed=seed if degradation_seed is None else degradation_seed,
                           device=device).to(device)
    out_size = tuple(physics.output_shape)
    if isinstance(spec_or_module, nn.Module):
        if net_input is None:
            raise ValueError("net_input: a module needs its input tensor")
        net, z, spec_dict = spec_or_module, net_input, {"module": type(spec_or_module).__name__}
    else:
        spec = load_spec(spec_or_module)
        overrides = task.arch_overrides()
        spec = for_size(spec.replace(**overrides) if overrides else spec, out_size)
        net, z = build(spec, y.shape[1], out_size, seed=seed)
        spec_dict = spec.to_dict()
    net = net.to(device).train()
    z = z.to(device)
    engine_note = "as requested" if precision_requested or engine["precision"] == "fp32" else "bf16 keeps the signal"
    if engine["precision"] == "bf16" and not precision_requested:
        error, layer = bf16_error(net, z)
        if error > BF16_MAX_RELATIVE_ERROR:
            engine["precision"] = "fp32"
            engine_note = (f"fp32: in bf16 the activations of layer {layer} are off by {error:.0%} "
                           f"(> {BF16_MAX_RELATIVE_ERROR:.0%})")
    precision, channels_last = engine["precision"], engine["channels_last"]
    settings = FitSettings(iterations=iterations, lr=lr, input_jitter=input_jitter, ema=ema, seed=seed,
                           eval_every=eval_every, stop=stop, window=window, eps=eps, ratio_measures=ratio_measures,
                           fbc_bands=fbc_bands, **engine)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    z = z.contiguous(memory_format=memory_format)
    if engine["compile"]:
        net = CompiledModule(net)
    ref = None if reference is None else reference.to(device, torch.float32)
    if ref is not None and ref.shape[-2:] != out_size:
        raise ValueError(f"reference: size {tuple(ref.shape[-2:])} does not match the output size {out_size}")

    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    monitor = _Monitor(ref, y, fbc_bands, ratio_measures)
    rule = stopping.RatioRule(window, eps, eval_every)
    guard = stopping.DivergenceGuard()
    good_state = _snapshot(net, optimiser)
    ema_out = None
    best = (-math.inf, None, None)
    auto_stop, stop_output, reason, restores = None, None, "iterations", 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    iteration_bar = _progress(iterations, progress)
    start = time.perf_counter()
    iteration = 0
    for iteration in range(1, iterations + 1):
        optimiser.zero_grad(set_to_none=True)
        net_in = z + input_jitter * torch.randn(z.shape, generator=generator, device=device) if input_jitter else z
        with autocast:
            out = net(net_in)
        out = out.float()
        loss = physics.loss(out, y)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            out = out.detach()
            if ema_out is None or not ema:
                ema_out = out.clone()
            else:
                ema_out.mul_(ema).add_(out, alpha=1 - ema)
        if iteration % eval_every and iteration != iterations:
            continue
        with torch.no_grad():
            restored = physics.restore(out, y)
            ema_restored = physics.restore(ema_out, y)
            row = monitor.measure(iteration, time.perf_counter() - start, loss, out, restored, ema_restored)
            fired = rule.update(iteration, row[4:5]) if iteration % eval_every == 0 else None
        values = row.tolist()  # the one host transfer per evaluation
        verdict = guard.check(values[0])
        if verdict != "ok":
            monitor.drop_last()
            if verdict == "diverged":
                reason = "diverged"
                break
            restores += 1
            net.load_state_dict(good_state[0])
            optimiser.load_state_dict(good_state[1])
            continue
        good_state = _snapshot(net, optimiser)
        if on_evaluation is not None:
            on_evaluation(iteration, out)
        if ref is not None:
            psnr_now = values[monitor.columns.index("psnr")]
            if psnr_now > best[0]:
                best = (psnr_now, iteration, restored.clone())
        if iteration_bar is not None:
            iteration_bar.update(iteration - iteration_bar.n)
            iteration_bar.set_postfix({k: f"{values[monitor.columns.index(k)]:.2f}"
                                       for k in ("psnr", "ratio") if k in monitor.columns})
        if fired is not None and auto_stop is None and bool(fired[0]):
            auto_stop, stop_output = iteration, restored.clone()
            if stop == "auto":
                reason = "auto"
                break
    seconds = time.perf_counter() - start
    if iteration_bar is not None:
        iteration_bar.close()
    history = monitor.frame()
    with torch.no_grad():
        if reason == "diverged":  # report the last good weights, not the blown-up iterate
            net.load_state_dict(good_state[0])
            out = ema_out = net(z).float()
        final, ema_final = physics.restore(out, y), physics.restore(ema_out, y)
    return FitResult(output=final.cpu(), ema_output=ema_final.cpu(), history=history, stopped_at=iteration,
                     stop_reason=reason, seconds=seconds, spec=spec_dict, settings=asdict(settings),
                     task=task.to_dict(), best_output=None if best[2] is None else best[2].cpu(),
                     best_iteration=best[1], auto_stop_iteration=auto_stop,
                     stop_output=None if stop_output is None else stop_output.cpu(), restores=restores,
                     extras={"engine": engine_note})


def _snapshot(net: nn.Module, optimiser: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Copies of the weights and the optimiser state, for the divergence guard's roll-back."""
    return copy.deepcopy(net.state_dict()), copy.deepcopy(optimiser.state_dict())


def _progress(total: int, enabled: bool | None):
    """A tqdm bar on an interactive terminal (or when asked), else None."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="it", leave=False)
