"""The DIP optimisation loop, written once for K ≥ 1 runs.

Each run minimises its task's data term ‖A f_θ(z + η_t) − y‖² over the weights θ with Adam
(Ulyanov et al. 2018), from a fixed random input z jittered by η_t ~ N(0, jitter²) each step, keeps
the bias-corrected exponential moving average of its outputs (:class:`archlab.stopping.EMA`) and feeds
its stop rules (:class:`RuleSet`) at every step; every ``eval_every`` iterations it is measured on the
device (:class:`Monitor`), with one host transfer per evaluation for all runs, and a divergence guard
rolls back the weights after a loss jump.

The networks come as a *stack* of K runs, :class:`ModuleNets` (one ``nn.Module`` and
``torch.optim.Adam``: K = 1) or :class:`archlab.batched.VmappedNets` (K networks under
``torch.func.vmap``); the loop never looks inside them. A run that ends - its rule stopped it, it
diverged, or it was interrupted - leaves the stack and stops costing compute.
"""

from __future__ import annotations

import copy
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn as nn

from archlab import images, metrics, spectral, stopping
from archlab.physics import jpeg_table
from archlab.vocabulary import STOP_RULES

#: The stop rules a fit runs beside itself (:mod:`archlab.stopping`; :data:`archlab.vocabulary.STOP_RULES`).
RULES = STOP_RULES
#: ``none``: run every iteration, recording where each rule would stop; a rule's name: stop there;
#: ``auto``: stop at the rule :data:`AUTO_STOP` gives for the task; ``record``: run every iteration
#: and report where that rule would have stopped (its output, PSNR and iteration) without stopping.
STOPS = ("none", "record", "auto", *RULES)
#: The rule ``stop="auto"`` uses for each task, from the fp32 fits of every rule on every task
#: (results/stopping-tasks/README.md). Gaussian and Poisson denoising: the discrepancy principle with the level
#: of the clipped noise, applied to the EMA of the outputs, which it returns: the average of the outputs
#: around the point where the fit reaches the noise level is better than any one of them (0.6-0.9 dB above the
#: output where the residual reaches the level, on 128-px denoising at σ 25), for 20-30 % more iterations.
#: JPEG (a grey encoding; colour falls back to ES-WMV): the moving average's entry into the observation's
#: quantisation constraint set (:class:`archlab.stopping.JPEGConsistencyRule`), the same principle with the
#: coding's bins for the noise level, which returns the average.
#: The other tasks: ES-WMV, the rule Wang et al. (TMLR 2023) measured across denoising, inpainting and
#: super-resolution; enhancement: paper 000's ratio rule, its own use.
AUTO_STOP = {"denoise": "ema_discrepancy", "poisson": "ema_discrepancy", "jpeg": "jpeg_consistency", "inpaint": "wmv",
             "sr": "wmv", "enhance": "ratio"}


def auto_rule(task) -> str:
    """The rule ``stop="auto"`` uses for ``task``: :data:`AUTO_STOP`'s, ES-WMV for colour JPEG (whose chroma
    is subsampled, which the consistency rule's bins do not describe), the ratio rule for a task not listed."""
    if task.name == "jpeg" and not task.grey:
        return "wmv"
    return AUTO_STOP.get(task.name, "ratio")


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


class Monitor:
    """A run's evaluation-time measurements, computed on the device and kept there until the end.

    Columns: ``loss``, ``psnr_obs`` (the output against the observation), ``blur``, ``sharpness`` and
    their ``ratio`` (paper 000 eq. 8); with a reference ``psnr``/``psnr_ema``/``ssim``/``ssim_ema``; with
    ``bands`` the FBC of every band against the observation (paper 000 eq. 1).
    """

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

    def measure(self, iteration: int, seconds: float, loss: torch.Tensor, net_out: torch.Tensor,
                restored: torch.Tensor, ema: torch.Tensor) -> torch.Tensor:
        """Measure one evaluation; returns its row (on the device) and keeps it."""
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


class RuleSet:
    """The stop rules of one run (:data:`RULES` that apply to its task), fed as it runs; one may end it.

    Per iteration (device work only, no host synchronisation) the variance rules take the output and
    the discrepancy rule the residual (the task's data term: the mean squared error over observed
    values); the EMA discrepancy rule takes the same data term of the bias-corrected EMA ē_t,
    ‖A ē_t − y‖²/N, and stops where the average the fit returns, not its latest output, has fitted y
    down to the noise level; per evaluation the ratio rule takes r. The chosen rule (``stop``, or
    :data:`AUTO_STOP` for ``auto`` and ``record``) also keeps the EMA at its detected iteration.
    """

    def __init__(self, task, y: torch.Tensor, settings, physics):
        stop = settings.stop
        self.chosen = auto_rule(task) if stop in ("auto", "record") else stop if stop in RULES else None
        self.stops = stop != "record"
        self.ratio = stopping.RatioRule(settings.window, settings.eps, settings.eval_every)
        self.ratio_output: torch.Tensor | None = None
        self.variance = {"wmv": stopping.WMVRule(patience=settings.patience),
                         "emv": stopping.EMVRule(patience=settings.patience)}
        self.discrepancy = self.ema_discrepancy = None
        if task.name == "denoise" and task.sigma > 0:
            self.discrepancy, self.ema_discrepancy = (
                stopping.DiscrepancyRule(sigma=task.sigma / 255.0, clipped=bool(task.clip)) for _ in range(2))
        elif task.name == "poisson":
            self.discrepancy, self.ema_discrepancy = (
                stopping.DiscrepancyRule.poisson(task.scale, y, clipped=bool(task.clip)) for _ in range(2))
        if self.chosen in ("discrepancy", "ema_discrepancy") and self.discrepancy is None:
            raise ValueError(f"fit.stop: {self.chosen} needs a noise level; the {task.name} task has none "
                             f"(use ratio, wmv, emv or auto)")
        self.consistency = None
        if task.name == "jpeg" and task.grey:
            self.consistency = stopping.JPEGConsistencyRule(y, jpeg_table(task.quality))
        elif self.chosen == "jpeg_consistency":
            raise ValueError(f"fit.stop: jpeg_consistency needs a grey JPEG observation; the {task.name} task "
                             f"{'is colour' if task.name == 'jpeg' else 'is not JPEG'} (use ratio, wmv, emv or auto)")
        self.physics, self.y = physics, y
        self.ema: torch.Tensor | None = None

    def _rule(self, name: str):
        return {"ratio": self.ratio, "discrepancy": self.discrepancy, "ema_discrepancy": self.ema_discrepancy,
                "jpeg_consistency": self.consistency, **self.variance}[name]

    def step(self, iteration: int, out: torch.Tensor, loss: torch.Tensor, ema: torch.Tensor) -> None:
        """Feed the output, the data-term residual and the EMA of one iteration."""
        for rule in self.variance.values():
            rule.update(iteration, out)
        if self.discrepancy is not None:
            self.discrepancy.update(iteration, loss.reshape(1), out)
            self.ema_discrepancy.update(iteration, self.physics.loss(ema, self.y).reshape(1), ema)
        if self.consistency is not None:
            self.consistency.update(iteration, ema)
        if self.chosen in ("wmv", "emv", "discrepancy", "ema_discrepancy", "jpeg_consistency"):
            at = self._rule(self.chosen).detected_iteration == iteration
            self.ema = ema.clone() if self.ema is None else torch.where(at.view(-1, 1, 1, 1), ema, self.ema)

    def evaluate(self, iteration: int, r: torch.Tensor, restored: torch.Tensor) -> None:
        """Feed the ratio r of one evaluation; the first time the ratio rule fires, keep ``restored``."""
        fired = self.ratio.update(iteration, r)
        if self.ratio_output is None and bool(fired[0]):  # the flag stays set: the first fire keeps the output
            self.ratio_output = restored.clone()

    def stopped(self) -> bool:
        """Whether the chosen rule ends the run now (never under ``record``)."""
        if self.chosen is None or not self.stops:
            return False
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


@dataclass
class Run:
    """One run of the loop: what it fits and its state; ``outcome`` is set when it ends.

    ``settings`` is the run's :class:`archlab.fitting.FitSettings`; ``on_evaluation(iteration, output)``,
    when given, is called at every kept evaluation with the network's output (on the device).
    """

    task: object
    physics: object
    y: torch.Tensor
    reference: torch.Tensor | None
    settings: object
    generator: torch.Generator
    on_evaluation: object = None
    monitor: Monitor = field(init=False)
    rules: RuleSet = field(init=False)
    guard: stopping.DivergenceGuard = field(init=False, default_factory=stopping.DivergenceGuard)
    average: stopping.EMA = field(init=False)
    best: tuple = (-math.inf, None, None)
    restores: int = 0
    outcome: dict | None = None

    def __post_init__(self):
        s = self.settings
        self.monitor = Monitor(self.reference, self.y, s.fbc_bands, s.ratio_measures)
        self.rules = RuleSet(self.task, self.y, s, self.physics)
        self.average = stopping.EMA(s.ema)


def snapshot(net: nn.Module, optimiser: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Copies of the weights and the optimiser state, for the divergence guard's roll-back."""
    return copy.deepcopy(net.state_dict()), copy.deepcopy(optimiser.state_dict())


class ModuleNets:
    """One network as a stack of K = 1 runs: its forward under the engine's autocast and memory
    format (and ``compiled``, a :class:`archlab.engine.CompiledModule`, when given), ``torch.optim.Adam``,
    and ``state_dict`` copies for the roll-back."""

    def __init__(self, net: nn.Module, z: torch.Tensor, lr: float, precision: str = "fp32",
                 compiled: nn.Module | None = None, memory_format: torch.memory_format = torch.contiguous_format):
        self.net, self.forward_net = net, compiled if compiled is not None else net
        self.z, self.memory_format = z.unsqueeze(0), memory_format
        self.optimiser = torch.optim.Adam(net.parameters(), lr=lr)
        self.good = snapshot(net, self.optimiser)
        self.autocast = torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network on its input (1, 1, C, h, w); returns (1, 1, C, H, W) in fp32."""
        with self.autocast:
            out = self.forward_net(x[0].contiguous(memory_format=self.memory_format))
        return out.float().unsqueeze(0)

    def zero_grad(self) -> None:
        self.optimiser.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.optimiser.step()

    def save(self, ok: list[bool]) -> None:
        """Keep the current state as the last good one."""
        if ok[0]:
            self.good = snapshot(self.net, self.optimiser)

    def roll_back(self, back: list[bool]) -> None:
        """Return to the last good state."""
        if back[0]:
            self.net.load_state_dict(self.good[0])
            self.optimiser.load_state_dict(self.good[1])

    def keep(self, slots: list[int]) -> None:
        """Nothing to drop: the loop ends when its only run does."""

    def good_output(self, slot: int) -> torch.Tensor:
        """The output of the last good weights on the plain input."""
        self.net.load_state_dict(self.good[0])
        return self.forward_net(self.z[0].contiguous(memory_format=self.memory_format)).float()


def iterations(count: int, interrupted: list[bool] | None):
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


def progress_bar(total: int, enabled: bool | None):
    """A tqdm bar on an interactive terminal (or when asked), else None."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="it", leave=False)


def run(nets, runs: list[Run], *, progress: bool | None = False, interruptible: bool = False) -> list[Run]:
    """Fit the stacked ``runs`` to the end; each run's ``outcome`` then holds its results.

    All runs share ``iterations``, ``eval_every`` and ``input_jitter`` (those of ``runs[0].settings``).
    ``interruptible``: SIGINT/SIGTERM end the loop after the current iteration (reason ``interrupted``).
    ``outcome`` keys: ``output``/``ema_output`` (the task's restore of the last output and of the EMA),
    ``history``, ``stopped_at``, ``reason`` (``iterations``, a rule's name, ``diverged`` or ``interrupted``),
    ``seconds`` (wall time until the run ended), ``cpu_seconds`` (the process's CPU time until then: with one
    torch thread the fit's own work, unchanged when other processes load the cores), ``best`` (PSNR,
    iteration, output), ``selected`` (:meth:`RuleSet.selected`), ``baseline`` (the task's naive restoration of y: y itself, or bicubic for
    SR) and ``observation_psnr`` (the baseline's PSNR, where a reference of its size is known).
    """
    settings = runs[0].settings
    total, every, jitter = settings.iterations, settings.eval_every, settings.input_jitter
    live, everyone = list(runs), list(runs)
    bar = progress_bar(total, progress)
    interrupted = [False]
    start, cpu_start = time.perf_counter(), time.process_time()
    iteration, out = 0, None
    for iteration in iterations(total, interrupted if interruptible else None):
        nets.zero_grad()
        z = nets.z
        x = z + jitter * torch.stack([torch.randn(z.shape[1:], generator=r.generator, device=z.device)
                                      for r in live]) if jitter else z
        out = nets.forward(x)
        losses = torch.stack([r.physics.loss(out[slot], r.y) for slot, r in enumerate(live)])
        losses.sum().backward()  # runs are independent: each run's gradient is that of its own loss
        nets.step()
        out, losses = out.detach(), losses.detach()
        with torch.no_grad():
            for slot, r in enumerate(live):
                r.rules.step(iteration, out[slot], losses[slot], r.average.update(out[slot]))
        if iteration % every and iteration != total:
            continue
        ended, table = _evaluate(nets, live, iteration, out, losses, time.perf_counter() - start)
        if bar is not None:
            bar.update(iteration - bar.n)
            monitor = live[0].monitor
            if monitor.iterations and monitor.iterations[-1] == iteration:  # kept, not rolled back
                bar.set_postfix({k: f"{table[0][monitor.columns.index(k)]:.2f}" for k in ("psnr", "ratio")
                                 if k in monitor.columns})
        if not ended:
            continue
        seconds = (time.perf_counter() - start, time.process_time() - cpu_start)
        for slot, reason in ended.items():
            _finish(nets, live[slot], slot, out[slot], iteration, reason, seconds)
        keep = [slot for slot in range(len(live)) if slot not in ended]
        live = [live[slot] for slot in keep]
        if not live:
            break
        nets.keep(keep)
        out = out[keep]
    seconds = (time.perf_counter() - start, time.process_time() - cpu_start)
    if bar is not None:
        bar.close()
    for slot, r in enumerate(live):
        reason = "iterations"
        if interrupted[0]:
            reason = "interrupted"
        elif r.restores and not r.monitor.rows:  # no evaluation was ever kept: a NaN/inf loss from the first one
            reason = "diverged"
        _finish(nets, r, slot, out[slot], iteration, reason, seconds)
    if interrupted[0]:  # also where a rule stopped a run in the last iteration: the caller must see the signal
        for r in everyone:
            if r.outcome["stopped_at"] == iteration:
                r.outcome["reason"] = "interrupted"
    return everyone


def _evaluate(nets, live: list[Run], iteration: int, out: torch.Tensor, losses: torch.Tensor,
              seconds: float) -> tuple[dict[int, str], list[list[float]]]:
    """Measure every run, then apply its guard, best output and stop rule; returns the runs that end
    (slot -> reason) and every run's measurements (one row per run, on the host)."""
    rows, restored = [], []
    with torch.no_grad():
        for slot, r in enumerate(live):
            restored.append(r.physics.restore(out[slot], r.y))
            row = r.monitor.measure(iteration, seconds, losses[slot], out[slot], restored[-1],
                                    r.physics.restore(r.average.value, r.y))
            if iteration % r.settings.eval_every == 0:
                r.rules.evaluate(iteration, row[4:5], restored[-1])
            rows.append(row)
    table = torch.stack(rows).tolist()  # the one host transfer per evaluation
    ok, back, ended = [False] * len(live), [False] * len(live), {}
    for slot, (r, values) in enumerate(zip(live, table)):
        verdict = r.guard.check(values[0])
        if verdict != "ok":
            r.monitor.drop_last()
            if verdict == "diverged":
                ended[slot] = "diverged"
            else:
                r.restores += 1
                back[slot] = True
            continue
        ok[slot] = True
        if r.on_evaluation is not None:
            r.on_evaluation(iteration, out[slot])
        if r.reference is not None:
            psnr_now = values[r.monitor.columns.index("psnr")]
            if psnr_now > r.best[0]:
                r.best = (psnr_now, iteration, restored[slot].clone())
        if r.rules.stopped():
            ended[slot] = r.rules.chosen
    if any(back):
        nets.roll_back(back)
    if any(ok):
        nets.save(ok)
    return ended, table


def _finish(nets, r: Run, slot: int, out: torch.Tensor, iteration: int, reason: str,
            seconds: tuple[float, float]) -> None:
    """Close run ``r``: its final outputs (the last good weights' after a divergence) and rule results;
    ``seconds``: the wall and CPU time until it ended."""
    with torch.no_grad():
        ema_out = r.average.value
        if reason == "diverged":  # report the last good weights, not the blown-up iterate
            out = ema_out = nets.good_output(slot)
        final, ema_final = r.physics.restore(out, r.y), r.physics.restore(ema_out, r.y)
        if reason != "interrupted" and not (final.isfinite().all() and ema_final.isfinite().all()):
            reason = "diverged"  # not even the last kept weights give a finite output
        selected = r.rules.selected(r.physics, r.y, r.reference)
        baseline = r.physics.baseline(r.y)
        observation_psnr = None
        if r.reference is not None and baseline.shape == r.reference.shape:
            observation_psnr = float(metrics.psnr(baseline, r.reference))
    r.outcome = {"output": final.cpu(), "ema_output": ema_final.cpu(), "history": r.monitor.frame(),
                 "baseline": baseline.cpu(), "observation_psnr": observation_psnr,
                 "stopped_at": iteration, "reason": reason, "seconds": seconds[0], "cpu_seconds": seconds[1],
                 "best": (r.best[0], r.best[1], None if r.best[2] is None else r.best[2].cpu()),
                 "selected": selected}
