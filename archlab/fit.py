"""The DIP optimisation loop: fit one network to one degraded image, measuring as it goes.

``fit`` minimises the task's data term ‖A f_θ(z + η_t) − y‖² over the weights θ
with Adam (Ulyanov et al. 2018), from a fixed random input z jittered by
η_t ~ N(0, input_jitter²) each step, keeps an exponential moving average of the
outputs (weight ``ema``, Ulyanov's ``exp_weight``), and every ``eval_every``
iterations measures - on the device, with one host transfer per evaluation, not
per step - the loss, PSNR/SSIM of the output and its EMA against a reference, the
blur/sharpness ratio of paper 000 §4.3 and the frequency-band correspondence
(paper 000 eq. 1). Stop rules run beside the loop (:data:`RULES`: paper 000's ratio
rule, Wang et al.'s windowed and exponential moving variance, the discrepancy principle):
each records where it would stop, and one of them - named, or the task's :data:`AUTO_STOP`
rule - may end the fit and give its output. The moving average is bias-corrected as in
Adam; a divergence guard restores the last good weights after a loss jump and gives up
after repeated ones.
"""

from __future__ import annotations

import copy
import math
import signal
import sys
import threading
import time
import dataclasses
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch
import torch.nn as nn

from archlab import images, metrics, spectral, stopping
from archlab.engine import BF16_MAX_RELATIVE_ERROR, PRECISIONS, CompiledModule, bf16_error, engine_settings, resolve_device
from archlab.models import ArchSpec, build, for_size, load_spec
from archlab.tasks import Task

#: The stop rules a fit runs beside itself (:mod:`archlab.stopping`): paper 000's blur/sharpness ratio,
#: Wang et al.'s windowed and exponential moving variance, and the discrepancy principle (noise tasks).
RULES = ("ratio", "wmv", "emv", "discrepancy")
#: ``none``: run every iteration, recording where each rule would stop; a rule's name: stop there;
#: ``auto``: stop at the rule :data:`AUTO_STOP` gives for the task; ``record``: run every iteration
#: and report where that rule would have stopped (its output, PSNR and iteration) without stopping.
STOPS = ("none", "record", "auto", *RULES)
#: The rule ``stop="auto"`` uses for each task. Gaussian denoising: the discrepancy principle, which replayed on the
#: fp32 Set9 ×¼ trajectories (results/stopping/README.md) stopped closest to the run's peak; it also stops
#: earliest, with no patience to wait out. The other tasks: ES-WMV, the rule Wang et al. (TMLR 2023) measured
#: across denoising, inpainting and super-resolution; enhancement: paper 000's ratio rule, its own use.
AUTO_STOP = {"denoise": "discrepancy", "poisson": "wmv", "jpeg": "wmv", "inpaint": "wmv", "sr": "wmv",
             "enhance": "ratio"}


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
    eps: float | None = None
    patience: int = stopping.DEFAULT_PATIENCE
    ratio_measures: str = "skimage"
    fbc_bands: int = 5
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self):
        if self.eps is None and self.ratio_measures in stopping.MEASURES:  # ε calibrated for the measures
            object.__setattr__(self, "eps", stopping.EPS_FOR_MEASURES[self.ratio_measures])
        checks = {
            "iterations": (isinstance(self.iterations, int) and self.iterations >= 1, "an integer ≥ 1"),
            "lr": (self.lr > 0, "a number > 0"),
            "input_jitter": (self.input_jitter >= 0, "a number ≥ 0"),
            "ema": (0 <= self.ema < 1, "0 ≤ ema < 1"),
            "eval_every": (isinstance(self.eval_every, int) and self.eval_every >= 1, "an integer ≥ 1"),
            "stop": (self.stop in STOPS, ", ".join(STOPS)),
            "window": (isinstance(self.window, int) and self.window >= 1 and self.window % self.eval_every == 0,
                       "a positive multiple of eval_every"),
            "ratio_measures": (self.ratio_measures in stopping.MEASURES, ", ".join(stopping.MEASURES)),
            "eps": (self.eps is not None and self.eps > 0, "a number > 0"),
            "patience": (isinstance(self.patience, int) and self.patience >= 1, "an integer ≥ 1"),
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
    the network output), ``ema_output`` the same from the bias-corrected EMA of the outputs,
    ``best_output`` the output at the best evaluated PSNR (only with a reference),
    ``stop_output`` the output the stop rule selects (``stop_rule``; its detected iteration is
    ``auto_stop_iteration``) and ``stop_ema_output`` the EMA at that iteration.
    ``history`` has one row per evaluation; ``rules`` says, per rule, where it detected and
    stopped (and the PSNR of its output where a reference was given).
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
    stop_rule: str | None = None
    stop_ema_output: torch.Tensor | None = None
    rules: dict = field(default_factory=dict)

    @property
    def restored(self) -> torch.Tensor:
        """The restoration a user gets: the stop rule's output where it selected one, else the EMA."""
        return self.stop_output if self.stop_output is not None else self.ema_output

    def summary(self) -> dict:
        """Scalar results: peak/final/stop PSNR and iterations where a reference was known."""
        h = self.history
        out = {"iterations": self.stopped_at, "stop_reason": self.stop_reason, "seconds": round(self.seconds, 2),
               "stop_rule": self.stop_rule, "auto_stop_iteration": self.auto_stop_iteration}
        for name, rule in self.rules.items():
            out.update({f"{name}_{key}": value for key, value in rule.items()})
        if "psnr" in h and h["psnr"].notna().any():
            peak = h.loc[h["psnr"].idxmax()]
            out.update(peak_psnr=float(peak["psnr"]), peak_iteration=int(peak["iteration"]),
                       final_psnr=float(h["psnr"].iloc[-1]), final_psnr_ema=float(h["psnr_ema"].iloc[-1]),
                       peak_psnr_ema=float(h["psnr_ema"].max()))
            out["psnr_drop"] = out["peak_psnr"] - out["final_psnr"]
            if self.auto_stop_iteration is not None:
                out["stop_psnr"] = self.rules.get(self.stop_rule, {}).get("psnr", math.nan)
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
        stop: str = "none", window: int = stopping.DEFAULT_WINDOW, eps: float | None = None,
        patience: int = stopping.DEFAULT_PATIENCE, ratio_measures: str = "skimage", fbc_bands: int = 5, fast: bool = True, precision: str | None = None, channels_last: bool | None = None,
        compile: bool | None = None, net_input: torch.Tensor | None = None, progress: bool | None = None,
        degradation_seed: int | None = None, on_evaluation=None, interruptible: bool = False) -> FitResult:
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
    stop : {"none", "record", "auto", "ratio", "wmv", "emv", "discrepancy"}
        Every rule of :data:`RULES` that applies to the task runs beside the fit and records
        where it would stop (``none`` runs all ``iterations``); naming a rule stops there and
        returns its output; ``auto`` takes the task's rule from :data:`AUTO_STOP`; ``record``
        reports where that rule would stop but runs all ``iterations``.
        ``ratio`` is paper 000 eq. 8 (Δr < ``eps`` over windows of ``window`` iterations; ``eps``
        defaults to the value calibrated for ``ratio_measures``, :data:`archlab.stopping.EPS_FOR_MEASURES`);
        ``wmv``/``emv`` stop ``patience`` iterations after the variance of the outputs was
        least (Wang et al. 2023) and return the output there; ``discrepancy`` stops when
        the data-fit residual reaches the noise level (Gaussian σ or Poisson ζ of the task).
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
    interruptible : bool
        A SIGINT (Ctrl-C) or SIGTERM mapped to ``KeyboardInterrupt`` ends the loop after the
        current iteration and the fit returns what it has, ``stop_reason="interrupted"``;
        a second one raises. Without it (the default) ``KeyboardInterrupt`` propagates.

    Returns
    -------
    FitResult
    """

    device = resolve_device(device)
    engine = engine_settings(device, fast, precision, channels_last, compile)
    precision_requested = precision is not None
    settings = FitSettings(iterations=iterations, lr=lr, input_jitter=input_jitter, ema=ema, seed=seed,
                           eval_every=eval_every, stop=stop, window=window, eps=eps, patience=patience,
                           ratio_measures=ratio_measures, fbc_bands=fbc_bands, **engine)  # validated before any work
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
    engine_note = "as requested" if precision_requested or settings.precision == "fp32" else "bf16 keeps the signal"
    if settings.precision == "bf16" and not precision_requested:
        error, layer = bf16_error(net, z)
        if error > BF16_MAX_RELATIVE_ERROR:
            settings = dataclasses.replace(settings, precision="fp32")
            engine_note = (f"fp32: in bf16 the activations of layer {layer} are off by {error:.0%} "
                           f"(> {BF16_MAX_RELATIVE_ERROR:.0%})")
    precision, channels_last = settings.precision, settings.channels_last
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
    rules = _StopRules(task, y, settings)
    guard = stopping.DivergenceGuard()
    good_state = _snapshot(net, optimiser)
    average = stopping.EMA(ema)
    best = (-math.inf, None, None)
    reason, restores = "iterations", 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    iteration_bar = _progress(iterations, progress)
    start = time.perf_counter()
    iteration = 0
    interrupted = [False]
    for iteration in _iterations(iterations, interrupted if interruptible else None):
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
            ema_out = average.update(out)
            rules.step(iteration, out, loss.detach(), ema_out)
        if iteration % eval_every and iteration != iterations:
            continue
        with torch.no_grad():
            restored = physics.restore(out, y)
            ema_restored = physics.restore(ema_out, y)
            row = monitor.measure(iteration, time.perf_counter() - start, loss, out, restored, ema_restored)
            if iteration % eval_every == 0:
                rules.evaluate(iteration, row[4:5], restored)
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
        if rules.chosen is not None and rules.stops and rules.stopped():
            reason = rules.chosen
            break
    if interrupted[0]:  # also where a rule stopped the fit in the same iteration: the caller must see the signal
        reason = "interrupted"
    elif restores and not monitor.rows:  # no evaluation was ever kept: a NaN/inf loss from the first one
        reason = "diverged"
    seconds = time.perf_counter() - start
    if iteration_bar is not None:
        iteration_bar.close()
    history = monitor.frame()
    with torch.no_grad():
        if reason == "diverged":  # report the last good weights, not the blown-up iterate
            net.load_state_dict(good_state[0])
            out = ema_out = net(z).float()
        final, ema_final = physics.restore(out, y), physics.restore(ema_out, y)
        if reason != "interrupted" and not (final.isfinite().all() and ema_final.isfinite().all()):
            reason = "diverged"  # not even the last kept weights give a finite output
        selected = rules.selected(physics, y, ref)
    return FitResult(output=final.cpu(), ema_output=ema_final.cpu(), history=history, stopped_at=iteration,
                     stop_reason=reason, seconds=seconds, spec=spec_dict, settings=asdict(settings),
                     task=task.to_dict(), best_output=None if best[2] is None else best[2].cpu(),
                     best_iteration=best[1], auto_stop_iteration=selected["iteration"],
                     stop_output=selected["output"], stop_ema_output=selected["ema"], stop_rule=rules.chosen,
                     rules=selected["rules"], restores=restores, extras={"engine": engine_note})


class _StopRules:
    """The stop rules of a fit (:data:`RULES` that apply to its task), fed as it runs; one may end it.

    Per iteration (device work only, no host synchronisation) the variance rules take the output and
    the discrepancy rule the residual (the task's data term: the mean squared error over observed
    values); per evaluation the ratio rule takes r. The chosen rule (``stop``, or :data:`AUTO_STOP`
    for ``auto``) also keeps the bias-corrected EMA at its detected iteration.
    """

    def __init__(self, task: Task, y: torch.Tensor, settings: FitSettings):
        stop = settings.stop
        self.chosen = AUTO_STOP.get(task.name, "ratio") if stop in ("auto", "record") else stop if stop in RULES else None
        self.stops = stop != "record"
        self.ratio = stopping.RatioRule(settings.window, settings.eps, settings.eval_every)
        self.ratio_output: torch.Tensor | None = None
        self.variance = {"wmv": stopping.WMVRule(patience=settings.patience),
                         "emv": stopping.EMVRule(patience=settings.patience)}
        self.discrepancy = None
        if task.name == "denoise" and task.sigma > 0:
            self.discrepancy = stopping.DiscrepancyRule(sigma=task.sigma / 255.0)
        elif task.name == "poisson":
            self.discrepancy = stopping.DiscrepancyRule.poisson(task.scale, y)
        if self.chosen == "discrepancy" and self.discrepancy is None:
            raise ValueError(f"fit.stop: discrepancy needs a noise level; the {task.name} task has none "
                             f"(use ratio, wmv, emv or auto)")
        self.ema: torch.Tensor | None = None

    def _rule(self, name: str):
        return {"ratio": self.ratio, "discrepancy": self.discrepancy, **self.variance}[name]

    def step(self, iteration: int, out: torch.Tensor, loss: torch.Tensor, ema: torch.Tensor) -> None:
        for rule in self.variance.values():
            rule.update(iteration, out)
        if self.discrepancy is not None:
            self.discrepancy.update(iteration, loss.reshape(1), out)
        if self.chosen in ("wmv", "emv", "discrepancy"):
            at = self._rule(self.chosen).detected_iteration == iteration
            self.ema = ema.clone() if self.ema is None else torch.where(at.view(-1, 1, 1, 1), ema, self.ema)

    def evaluate(self, iteration: int, r: torch.Tensor, restored: torch.Tensor) -> None:
        fired = self.ratio.update(iteration, r)
        if self.ratio_output is None and bool(fired[0]):  # the flag stays set: the first fire keeps the output
            self.ratio_output = restored.clone()

    def stopped(self) -> bool:
        flags = self._rule(self.chosen).stopped
        return flags is not None and bool(flags[0])

    def selected(self, physics, y: torch.Tensor, reference: torch.Tensor | None) -> dict:
        """Per rule where it detected and stopped (and the PSNR of its output); the chosen rule's output."""
        summary, outputs = {}, {}
        for name in RULES:
            rule = self._rule(name)
            if rule is None or rule.stopped is None:
                continue
            detected, stopped = int(rule.detected_iteration[0]), int(rule.stop_iteration[0])
            if name == "ratio":
                output = self.ratio_output
            else:
                raw = rule.detected_output()
                output = None if detected < 0 else physics.restore(raw, y)
            entry = {"iteration": detected if detected >= 0 else None, "stopped_at": stopped if stopped >= 0 else None}
            if reference is not None and output is not None:
                entry["psnr"] = float(metrics.psnr(output, reference))
            summary[name], outputs[name] = entry, output
        chosen = self.chosen
        output = outputs.get(chosen)
        ema = None
        if output is not None and self.ema is not None:
            ema = physics.restore(self.ema, y)
            if reference is not None:
                summary[chosen]["psnr_ema"] = float(metrics.psnr(ema, reference))
            ema = ema.cpu()
        return {"rules": summary, "output": None if output is None else output.cpu(), "ema": ema,
                "iteration": summary.get(chosen, {}).get("iteration") if output is not None else None}


def _iterations(count: int, interrupted: list[bool] | None):
    """1 .. ``count``; with ``interrupted``, a signal that would raise ``KeyboardInterrupt`` (SIGINT, or
    SIGTERM where the caller mapped it so) sets ``interrupted[0]`` and ends the sequence instead (a second
    one raises). The handlers are installed in the main thread only, and put back when the loop ends
    or is left by an exception (the generator is closed then)."""
    handlers = {}
    if interrupted is not None and threading.current_thread() is threading.main_thread():
        def stop(signum, frame):
            if interrupted[0]:
                raise KeyboardInterrupt
            interrupted[0] = True

        handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)
                    if signal.getsignal(sig) is signal.default_int_handler}
    try:
        for iteration in range(1, count + 1):
            if interrupted is not None and interrupted[0]:
                return
            yield iteration
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


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
