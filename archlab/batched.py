"""Batched multi-run fits: K independent DIP fits of one architecture as one vectorised computation.

:func:`fit_many` runs fits that share an architecture (different seeds, learning rates,
Lipschitz bounds λ, Gaussian upsampler σ or images of equal size): the K weight sets are
stacked (``torch.func.stack_module_state``) and the network is evaluated with ``vmap`` over
``functional_call``, Adam runs on the stacked tensors with per-run learning rates, and a run
that stops (ratio rule or divergence) is removed from the stack so it stops costing compute.
In fp32 the results equal K sequential :func:`archlab.fit.fit` calls.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import time
from collections.abc import Sequence
from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, replace_all_batch_norm_modules_, stack_module_state, vmap

from archlab import filters, stopping
from archlab.engine import engine_settings, resolve_device
from archlab.fit import FitResult, FitSettings, _Monitor
from archlab.layers import LipschitzConv2d, Upsampler, pad_axis, polyphase_kernels
from archlab.models import ArchSpec, build, load_spec
from archlab.tasks import Task

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8



#: Stops of :func:`fit_many`: the ratio rule only (``record``: note where it fires and run on).
BATCHED_STOPS = ("none", "record", "ratio")

class _VmapUpsampler(nn.Module):
    """:class:`~archlab.layers.Upsampler`'s polyphase filter without its channels-last step,
    which ``vmap`` cannot run (torch 2.13: "NYI: querying is_contiguous inside of vmap").

    Same phase kernels (the ``weight`` buffer), padding and interleave, so the output is
    the layer's up to rounding.
    """

    def __init__(self, layer: Upsampler):
        super().__init__()
        self.factor, self.padding = layer.factor, layer.padding
        self.pad_before, self.pad_after = layer.pad_before, layer.pad_after
        self.register_buffer("weight", layer.weight, persistent=False)

    def _upsample_axis(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        n, c, h, w = x.shape
        x = pad_axis(x, dim, self.pad_before, self.pad_after, self.padding)
        weight = self.weight.to(x.dtype).unsqueeze(-1 if dim == 2 else -2).squeeze(2 if dim == 2 else 3)
        phases = [F.conv2d(x, weight[p].unsqueeze(1), groups=c) for p in range(self.factor)]
        phases = torch.stack(phases, dim=dim + 1)
        return phases.reshape(n, c, h * self.factor, w) if dim == 2 else phases.reshape(n, c, h, w * self.factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._upsample_axis(self._upsample_axis(x, 3), 2)


def _vmappable(module: nn.Module) -> nn.Module:
    """A copy of ``module`` on the meta device whose fixed upsamplers run under ``vmap``."""
    module = copy.deepcopy(module)
    for name, child in list(module.named_children()):
        if isinstance(child, Upsampler) and child.transposed is None:
            setattr(module, name, _VmapUpsampler(child))
        else:
            setattr(module, name, _vmappable(child))
    return module


def use_gaussian_upsampling(module: nn.Module, sigma: float) -> nn.Module:
    """Make every fixed :class:`~archlab.layers.Upsampler` of ``module`` a Gaussian of ``sigma``.

    The taps are ``filters.design("gaussian", s, sigma=σ)`` (paper 000 eq. 6-7, the
    default ``2 s + 1`` taps) with the layer's 2-D gain kept. The layer's polyphase
    layout (phase length and padding) must be the Gaussian's - true of ``gauss-*`` and,
    for ×2, ``bilinear`` - so the result is exactly the layer built with that filter.
    Returns ``module``, changed in place.
    """
    for layer in module.modules():
        if not isinstance(layer, Upsampler) or layer.transposed is not None:
            continue
        taps = filters.design("gaussian", layer.factor, sigma=sigma).taps
        kernels, before, after = polyphase_kernels(taps, layer.factor)
        if (before, after) != (layer.pad_before, layer.pad_after) or kernels.shape[1] != layer.weight.shape[-1]:
            raise ValueError(f"sigmas: the upsampler {layer.name!r} has {layer.weight.shape[-1]}-tap phases padded "
                             f"({layer.pad_before}, {layer.pad_after}), not the Gaussian's; per-run sigma needs "
                             f"upsamplers with its layout (gauss-*, or bilinear for factor 2)")
        gain_root = layer.weight[:, 0].sum() / layer.factor  # Σ taps = s, times the layer's √gain
        new = torch.from_numpy(kernels).to(layer.weight)[:, None, None, :] * gain_root
        layer.weight.copy_(new.expand_as(layer.weight))
    return module


@contextlib.contextmanager
def _bounds(convs: list[LipschitzConv2d], lam: torch.Tensor | None):
    """Give each bounded convolution the (batched) λ of the run being evaluated."""
    if lam is None:
        yield
        return
    saved = [conv.lipschitz for conv in convs]
    for conv in convs:
        conv.lipschitz = lam
    try:
        yield
    finally:
        for conv, value in zip(convs, saved):
            conv.lipschitz = value


class _BatchedAdam:
    """Adam (Kingma & Ba 2015, Algorithm 1) on stacked runs, as ``torch.optim.Adam`` computes it.

    For each run k with its own learning rate α_k and step count t_k:
    ``m ← β1 m + (1-β1) g``, ``v ← β2 v + (1-β2) g²``,
    ``θ ← θ - (α_k / (1-β1^t_k)) · m / (√v / √(1-β2^t_k) + ε)``, with β = (0.9, 0.999),
    ε = 1e-8 (the defaults the single fit uses). Every tensor's leading axis is the run.
    """

    def __init__(self, params: list[torch.Tensor], lrs: torch.Tensor):
        self.lrs = lrs.double()
        self.steps = torch.zeros_like(self.lrs)
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def _per_run(self, values: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
        values = values.float()
        return [values.view(-1, *([1] * (p.ndim - 1))) for p in like]

    @torch.no_grad()
    def step(self, params: list[torch.Tensor]) -> None:
        b1, b2 = ADAM_BETAS
        grads = [p.grad for p in params]
        self.steps += 1
        step_size = self.lrs / (1 - b1**self.steps)
        bias2_root = (1 - b2**self.steps).sqrt()
        torch._foreach_lerp_(self.m, grads, 1 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, grads, grads, 1 - b2)
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_div_(denom, self._per_run(bias2_root, params))
        torch._foreach_add_(denom, ADAM_EPS)
        update = torch._foreach_div(self.m, denom)
        torch._foreach_mul_(update, self._per_run(step_size, params))
        torch._foreach_sub_(params, update)

    def state(self) -> list[torch.Tensor]:
        """The tensors a roll-back restores (moments and step counts)."""
        return [*self.m, *self.v, self.steps]

    def select(self, index: torch.Tensor) -> None:
        """Keep only the runs at ``index``."""
        self.lrs, self.steps = self.lrs[index], self.steps[index]
        self.m = [m[index] for m in self.m]
        self.v = [v[index] for v in self.v]


class _Run:
    """One run of a batched fit: its settings, physics, monitors and results so far."""

    def __init__(self, index, spec, settings, task, physics, y, reference, generator, monitor, rule, sigma):
        self.index, self.spec, self.settings, self.task = index, spec, settings, task
        self.physics, self.y, self.reference, self.generator = physics, y, reference, generator
        self.monitor, self.rule, self.guard, self.sigma = monitor, rule, stopping.DivergenceGuard(), sigma
        self.best = (-math.inf, None, None)
        self.auto_stop, self.stop_output, self.restores = None, None, 0
        self.result: FitResult | None = None


def _as_list(name: str, value) -> list | None:
    """``value`` as a list of per-run values (one value is shared), or None when not given."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.ndim != 4:
            raise ValueError(f"{name}: expected (1, C, H, W), (K, C, H, W) or a list of (1, C, H, W) tensors, "
                             f"got shape {tuple(value.shape)}")
        return list(value.unsqueeze(1))
    if isinstance(value, (str, numbers.Number)):
        return [value]
    if isinstance(value, Sequence) and len(value) > 0:
        return list(value)
    raise ValueError(f"{name}: expected a value or a non-empty list of per-run values, got {value!r}")


def _expand_runs(given: dict) -> tuple[int, dict]:
    """K, the common length of the per-run lists, and every given value as a list of K."""
    lists = {name: _as_list(name, value) for name, value in given.items()}
    lengths = sorted({len(v) for v in lists.values() if v is not None} - {1})
    if len(lengths) > 1:
        raise ValueError(f"runs: per-run lists have different lengths {lengths}; give one value or K values each")
    k = lengths[0] if lengths else 1
    return k, {name: None if v is None else v * k if len(v) == 1 else v for name, v in lists.items()}


def fit_many(spec: ArchSpec | str, task: Task, observations, *, seeds=0, lrs=0.01, lipschitz=None, sigmas=None,
             references=None, iterations: int = 3000, input_jitter: float = 1 / 30, ema: float = 0.99,
             eval_every: int = 10, stop: str = "none", window: int = stopping.DEFAULT_WINDOW,
             eps: float | None = None, fbc_bands: int = 5, device: str | torch.device = "auto",
             fast: bool = True, precision: str | None = None, degradation_seed: int | None = None) -> list[FitResult]:
    """K independent DIP fits of one architecture as one vectorised computation.

    Run k is what ``fit(spec_k, task, observation_k, seed=seeds[k], lr=lrs[k],
    reference=references[k], ...)`` computes (Ulyanov et al. 2018; paper 000 §4), where
    ``spec_k`` is ``spec`` with ``lipschitz=lipschitz[k]`` and every upsampler a Gaussian
    of ``sigmas[k]`` (paper 000 eq. 6-7) when those are given. The K weight sets are
    stacked and the network runs under ``torch.func.vmap`` of ``functional_call``
    (batch-norm layers use batch statistics only, as in training); each run has its own
    jitter generator, physics, EMA, monitor, ratio rule and divergence guard. A run that
    stops (``stop="ratio"`` or divergence) leaves the stack and stops costing compute. In
    fp32 the outputs and histories equal the sequential fits' to 1e-4 (tests/test_engine.py)
    wherever the fit itself is numerically stable: both compute the same sums in another
    order, and fits whose gradients have rounding-level elements (a batch norm's scale and
    shift feeding another normalisation, a pre-activation exactly at a ReLU kink) amplify
    that rounding through Adam, as they would across thread counts.

    Parameters
    ----------
    spec : ArchSpec, preset name or path
        The shared architecture.
    task : Task
        The inverse problem (the physics of run k uses ``degradation_seed``, or ``seeds[k]`` when it
        is None, as ``fit`` does).
    observations : Tensor (1, C, h, w), Tensor (K, C, h, w) or list of (1, C, h, w)
        One observation for every run, or one per run (images of equal size).
    seeds, lrs, lipschitz, sigmas, references
        A single value shared by all runs or one per run; K is the common length.
        ``lipschitz`` must be given for all runs or none; ``sigmas`` needs upsamplers
        with the Gaussian's polyphase layout (:func:`use_gaussian_upsampling`).
    iterations, input_jitter, ema, eval_every, stop, window, eps, fbc_bands
        As in :func:`archlab.fit.fit`, shared by all runs.
    fast, precision
        ``fast`` picks bfloat16 autocast where :func:`archlab.engine.fast_settings` does (the
        Lipschitz norms are computed in fp32 outside autocast, as in ``fit``); ``precision``
        overrides it. Channels-last and compilation do not apply under ``vmap``.
    degradation_seed
        As in :func:`archlab.fit.fit`.

    Returns
    -------
    list of FitResult
        In run order; ``seconds`` is the wall time until the run ended and ``extras``
        holds ``{"batch": K, "run": k}`` (and ``"sigma"`` when given).
    """
    device = resolve_device(device)
    engine = engine_settings(device, fast, precision, channels_last=False, compile=False)
    k, per_run = _expand_runs({"observations": observations, "seeds": seeds, "lrs": lrs, "lipschitz": lipschitz,
                               "sigmas": sigmas, "references": references})
    if per_run["lipschitz"] is not None and any(lam is None for lam in per_run["lipschitz"]):
        raise ValueError("lipschitz: give a bound λ > 0 for every run, or none at all")
    base_spec = load_spec(spec)
    overrides = task.arch_overrides()
    base_spec = base_spec.replace(**overrides) if overrides else base_spec
    nets, inputs, runs = [], [], []
    for index in range(k):
        seed, lr = int(per_run["seeds"][index]), float(per_run["lrs"][index])
        y = per_run["observations"][index]
        if not isinstance(y, torch.Tensor) or y.ndim != 4 or y.shape[0] != 1:
            raise ValueError(f"observations: run {index} is not a (1, C, H, W) tensor")
        y = y.to(device, torch.float32)
        if index and y.shape != runs[0].y.shape:
            raise ValueError(f"observations: run {index} has shape {tuple(y.shape)}, run 0 "
                             f"{tuple(runs[0].y.shape)}; batched runs need images of equal size")
        run_spec = base_spec
        if per_run["lipschitz"] is not None:
            run_spec = base_spec.replace(lipschitz=float(per_run["lipschitz"][index]))
        if stop not in BATCHED_STOPS:
            raise ValueError(f"fit_many.stop: {stop!r} is invalid; allowed: {', '.join(BATCHED_STOPS)} "
                             f"(the variance and discrepancy rules run in archlab.fit.fit)")
        settings = FitSettings(iterations=iterations, lr=lr, input_jitter=input_jitter, ema=ema, seed=seed,
                               eval_every=eval_every, stop=stop, window=window, eps=eps, fbc_bands=fbc_bands,
                               precision=engine["precision"], channels_last=False, compile=False)
        physics = task.physics(tuple(y.shape), seed=seed if degradation_seed is None else degradation_seed,
                               device=device).to(device)
        out_size = tuple(physics.output_shape)
        net, z = build(run_spec, y.shape[1], out_size, seed=seed)
        sigma = None if per_run["sigmas"] is None else float(per_run["sigmas"][index])
        if sigma is not None:
            use_gaussian_upsampling(net, sigma)
        nets.append(replace_all_batch_norm_modules_(net.to(device)))
        inputs.append(z.to(device))
        ref = None if per_run["references"] is None else per_run["references"][index].to(device, torch.float32)
        if ref is not None and ref.shape[-2:] != out_size:
            raise ValueError(f"references: size {tuple(ref.shape[-2:])} does not match the output size {out_size}")
        runs.append(_Run(index, run_spec, settings, task, physics, y, ref,
                         torch.Generator(device=device).manual_seed(seed + 1), _Monitor(ref, y, fbc_bands),
                         stopping.RatioRule(window, settings.eps, eval_every), sigma))
    return _BatchedFit(nets, inputs, runs, device, engine["precision"], per_run["lipschitz"]).run()


class _BatchedFit:
    """The loop of :func:`fit_many`: :func:`archlab.fit.fit`'s loop over stacked runs."""

    def __init__(self, nets, inputs, runs, device, precision, lipschitz):
        self.device, self.runs, self.all_runs, self.k = device, runs, list(runs), len(runs)
        self.settings = runs[0].settings
        self.base = _vmappable(nets[0]).to("meta")
        self.convs = [m for m in self.base.modules() if isinstance(m, LipschitzConv2d) and m.lipschitz is not None]
        params, self.buffers = stack_module_state(nets)
        self.params = {name: p.detach().requires_grad_() for name, p in params.items()}
        self.z = torch.stack(inputs)
        self.lam = None if lipschitz is None else torch.tensor([float(v) for v in lipschitz], device=device)
        lrs = torch.tensor([run.settings.lr for run in runs], device=device)
        self.adam = _BatchedAdam(list(self.params.values()), lrs)
        self.good = [t.clone() for t in self._state()]
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def _state(self) -> list[torch.Tensor]:
        return [*self.params.values(), *self.buffers.values(), *self.adam.state()]

    def _forward_one(self, params, buffers, x, lam):
        with _bounds(self.convs, lam):
            return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The K networks on their K inputs (K, 1, C, H, W)."""
        dims = (0, 0, 0, None if self.lam is None else 0)
        with self.autocast:
            out = vmap(self._forward_one, in_dims=dims, randomness="error")(self.params, self.buffers, x, self.lam)
        return out.float()

    def _copy_runs(self, target: list[torch.Tensor], source: list[torch.Tensor], mask: torch.Tensor) -> None:
        """``target[k] = source[k]`` for the runs where ``mask`` is set."""
        with torch.no_grad():
            for t, s in zip(target, source):
                t.copy_(torch.where(mask.view(-1, *([1] * (t.ndim - 1))), s, t))

    def _select(self, keep: list[int]) -> None:
        """Drop the stopped runs from every stacked tensor."""
        index = torch.tensor(keep, device=self.device)
        self.params = {n: p.detach()[index].requires_grad_() for n, p in self.params.items()}
        self.buffers = {n: b[index] for n, b in self.buffers.items()}
        self.adam.select(index)
        self.good = [g[index] for g in self.good]
        self.z, self.out, self.ema_out = self.z[index], self.out[index], self.ema_out[index]
        self.lam = None if self.lam is None else self.lam[index]
        self.runs = [self.runs[i] for i in keep]

    def _finish(self, slot: int, iteration: int, reason: str, seconds: float) -> None:
        run = self.runs[slot]
        out, ema_out = self.out[slot], self.ema_out[slot]
        with torch.no_grad():
            if reason == "diverged":  # report the last good weights, not the blown-up iterate (as fit does)
                n_params, n_buffers = len(self.params), len(self.buffers)
                params = dict(zip(self.params, (g[slot] for g in self.good[:n_params])))
                buffers = dict(zip(self.buffers, (g[slot] for g in self.good[n_params : n_params + n_buffers])))
                lam = None if self.lam is None else self.lam[slot]
                out = ema_out = self._forward_one(params, buffers, self.z[slot], lam).float()
            final, ema_final = run.physics.restore(out, run.y), run.physics.restore(ema_out, run.y)
        extras = {"batch": self.k, "run": run.index}
        if run.sigma is not None:
            extras["sigma"] = run.sigma
        run.result = FitResult(
            output=final.cpu(), ema_output=ema_final.cpu(), history=run.monitor.frame(), stopped_at=iteration,
            stop_reason=reason, seconds=seconds, spec=run.spec.to_dict(), settings=asdict(run.settings),
            task=run.task.to_dict(), best_output=None if run.best[2] is None else run.best[2].cpu(),
            best_iteration=run.best[1], auto_stop_iteration=run.auto_stop,
            stop_output=None if run.stop_output is None else run.stop_output.cpu(), restores=run.restores,
            extras=extras)

    def _step(self, iteration: int) -> torch.Tensor:
        for p in self.params.values():
            p.grad = None
        jitter = self.settings.input_jitter
        if jitter:
            shape = self.z.shape[1:]
            x = self.z + jitter * torch.stack([torch.randn(shape, generator=run.generator, device=self.device)
                                               for run in self.runs])
        else:
            x = self.z
        out = self.forward(x)
        losses = torch.stack([run.physics.loss(out[slot], run.y) for slot, run in enumerate(self.runs)])
        losses.sum().backward()  # runs are independent: each run's gradient is that of its own loss
        self.adam.step(list(self.params.values()))
        with torch.no_grad():
            out = out.detach()
            ema = self.settings.ema
            if iteration == 1 or not ema:
                self.ema_out = out.clone()
            else:  # the bias-corrected EMA of archlab.stopping.EMA: gain (1 − β)/(1 − β^t) on the new output
                self.ema_out.lerp_(out, (1 - ema) / (1 - ema**iteration))
        self.out = out
        return losses.detach()

    def _evaluate(self, iteration: int, losses: torch.Tensor, seconds: float) -> list[tuple[int, str]]:
        """Measure every run, then apply its guard, best output and stopping rule (as ``fit``)."""
        rows, flags, restored = [], [], []
        with torch.no_grad():
            for slot, run in enumerate(self.runs):
                out = self.out[slot]
                restored.append(run.physics.restore(out, run.y))
                row = run.monitor.measure(iteration, seconds, losses[slot], out, restored[-1],
                                          run.physics.restore(self.ema_out[slot], run.y))
                fired = run.rule.update(iteration, row[4:5]) if iteration % self.settings.eval_every == 0 else None
                rows.append(row)
                flags.append(torch.zeros(1, dtype=torch.bool, device=self.device) if fired is None else fired)
            table = torch.cat([torch.stack(rows), torch.stack(flags).to(rows[0].dtype)], dim=1)
        table = table.tolist()  # the one host transfer per evaluation
        ok = torch.zeros(len(self.runs), dtype=torch.bool)
        back = torch.zeros(len(self.runs), dtype=torch.bool)
        ended = []
        for slot, (run, values) in enumerate(zip(self.runs, table)):
            verdict = run.guard.check(values[0])
            if verdict != "ok":
                run.monitor.drop_last()
                if verdict == "diverged":
                    ended.append((slot, "diverged"))
                else:
                    run.restores += 1
                    back[slot] = True
                continue
            ok[slot] = True
            if run.reference is not None:
                psnr_now = values[run.monitor.columns.index("psnr")]
                if psnr_now > run.best[0]:
                    run.best = (psnr_now, iteration, restored[slot].clone())
            if values[-1] and run.auto_stop is None:
                run.auto_stop, run.stop_output = iteration, restored[slot].clone()
                if self.settings.stop == "ratio":
                    ended.append((slot, "ratio"))
        state = self._state()
        if back.any():
            self._copy_runs(state, self.good, back.to(self.device))
        if ok.any():
            self._copy_runs(self.good, state, ok.to(self.device))
        return ended

    def run(self) -> list[FitResult]:
        iterations, eval_every = self.settings.iterations, self.settings.eval_every
        start = time.perf_counter()
        for iteration in range(1, iterations + 1):
            losses = self._step(iteration)
            if iteration % eval_every and iteration != iterations:
                continue
            ended = self._evaluate(iteration, losses, time.perf_counter() - start)
            if iteration == iterations:
                done = {slot for slot, _ in ended}
                ended += [(slot, "iterations") for slot in range(len(self.runs)) if slot not in done]
            if not ended:
                continue
            seconds = time.perf_counter() - start
            for slot, reason in ended:
                self._finish(slot, iteration, reason, seconds)
            stopped = {slot for slot, _ in ended}
            keep = [slot for slot in range(len(self.runs)) if slot not in stopped]
            if not keep:
                break
            self._select(keep)
        return [run.result for run in self.all_runs]
