"""Fit DIP networks to degraded images: :func:`fit` (one run) and :func:`fit_many` (K runs at once).

``fit`` minimises the task's data term ‖A f_θ(z + η_t) − y‖² over the weights θ
with Adam (Ulyanov et al. 2018), from a fixed random input z jittered by
η_t ~ N(0, input_jitter²) each step, keeps an exponential moving average of the
outputs (weight ``ema``, Ulyanov's ``exp_weight``), and every ``eval_every``
iterations measures - on the device, with one host transfer per evaluation, not
per step - the loss, PSNR/SSIM of the output and its EMA against a reference, the
blur/sharpness ratio of paper 000 §4.3 and the frequency-band correspondence
(paper 000 eq. 1). Stop rules run beside the loop (:data:`RULES`: paper 000's ratio
rule, Wang et al.'s windowed and exponential moving variance, the discrepancy principle on the output
and on its moving average):
each records where it would stop, and one of them - named, or the task's :data:`AUTO_STOP`
rule - may end the fit and give its output. The moving average is bias-corrected as in
Adam; a divergence guard restores the last good weights after a loss jump and gives up
after repeated ones. The loop itself is :func:`archlab.loop.run`, shared by both.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch
import torch.nn as nn

from archlab import loop, stopping
from archlab.batched import VmappedNets
from archlab.engine import (
    BF16_MAX_RELATIVE_ERROR,
    PRECISIONS,
    CompiledModule,
    bf16_error,
    describe_choice,
    engine_settings,
    fastest,
    resolve_device,
)
from archlab.loop import AUTO_STOP, RULES, STOPS, output_measures
from archlab.models import ArchSpec, build, for_size, load_spec
from archlab.models.spec import per_level
from archlab.tasks import Observation, Task

__all__ = ["AUTO_STOP", "RULES", "STOPS", "FitResult", "FitSettings", "fit", "fit_many", "output_measures"]

#: The fields of :class:`FitSettings` the engine chooses under ``fast=True`` unless given.
ENGINE_FIELDS = ("precision", "channels_last", "compile")


@dataclass(frozen=True)
class FitSettings:
    """Everything but the architecture and the task that decides a fit (serialisable).

    Frozen; :meth:`replace` gives a changed copy, validated like a new one (a bad value raises
    ``ValueError`` naming the field and what it accepts).

    Examples
    --------
    >>> settings = FitSettings(iterations=500, lr=0.002, stop="auto")
    >>> settings.replace(iterations=200).iterations, settings.eps
    (200, 0.008)
    """

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

    def replace(self, **changes) -> "FitSettings":
        """A copy with ``changes`` (validated as a new instance is)."""
        return dataclasses.replace(self, **changes)

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
    stopped (and the PSNR of its output where a reference was given). ``baseline`` is the task's
    naive restoration of the observation (itself; bicubic for SR) and ``observation_psnr`` its PSNR
    against the reference (None without a reference of its size). ``seconds`` is the wall time of the fit,
    ``cpu_seconds`` the CPU time the process spent in it: with one torch thread the fit's own work, which
    other processes on the cores do not inflate (a one-thread fit beside two busy processes on two cores
    took 1.5-1.7× the wall time and the same CPU time), so fits timed at different loads compare by it.

    Examples
    --------
    >>> from archlab import images, tasks
    >>> clean = images.resize(images.load("camera"), size=(32, 32))
    >>> result = fit("controlled-64", tasks.Denoise(25), tasks.Denoise(25).observe(clean), iterations=20,
    ...              eval_every=10, window=10, stop="auto", fast=False, progress=False)
    >>> result.stop_rule, result.restored.shape, result.history["iteration"].tolist()
    ('ema_discrepancy', torch.Size([1, 1, 32, 32]), [10, 20])
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
    baseline: torch.Tensor | None = None
    observation_psnr: float | None = None
    stop_ema_output: torch.Tensor | None = None
    rules: dict = field(default_factory=dict)
    cpu_seconds: float = math.nan

    @property
    def restored(self) -> torch.Tensor:
        """The restoration a user gets: the stop rule's output where it selected one, else the EMA."""
        return self.stop_output if self.stop_output is not None else self.ema_output

    def summary(self) -> dict:
        """Scalar results: peak/final/stop PSNR and iterations where a reference was known."""
        h = self.history
        out = {"iterations": self.stopped_at, "stop_reason": self.stop_reason, "seconds": round(self.seconds, 2),
               "cpu_seconds": round(self.cpu_seconds, 2),
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


def _settings(settings: FitSettings | None, overrides: dict, device: torch.device, fast: bool,
              **engine_given) -> tuple[FitSettings, bool]:
    """The run's settings: ``settings`` (default :class:`FitSettings`) with ``overrides``; the engine's
    fields as given (a keyword, or ``settings`` itself when not ``fast``), else chosen by
    :func:`archlab.engine.engine_settings`. Also whether the precision was asked for."""
    fields = {f.name for f in dataclasses.fields(FitSettings)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"fit: unknown setting {unknown[0]!r}; settings: {', '.join(sorted(fields))}")
    base = settings if settings is not None else FitSettings()
    given = {k: overrides.pop(k, None) for k in ENGINE_FIELDS} | {k: v for k, v in engine_given.items() if v is not None}
    if settings is not None and not fast:
        given = {k: getattr(settings, k) if given.get(k) is None else given[k] for k in ENGINE_FIELDS}
    requested = given.get("precision") is not None
    engine = engine_settings(device, fast, given.get("precision"), given.get("channels_last"), given.get("compile"))
    return base.replace(**overrides, **engine), requested


def _observe(task: Task, observation, device: torch.device, reference: torch.Tensor | None,
             names: tuple[str, str] = ("observation", "reference")):
    """The observation on the device, its physics (an :class:`~archlab.tasks.Observation`'s own, else the
    task's for an image observed as given) and the reference (given, else the observation's), checked against
    the output size; ``names`` are what errors call them."""
    if isinstance(observation, Observation):
        y, physics = observation.y, observation.physics
        reference = observation.reference if reference is None else reference
    else:
        y, physics = observation, None
    if not isinstance(y, torch.Tensor) or y.ndim != 4 or y.shape[0] != 1:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"{names[0]}: expected shape (1, C, H, W) or an Observation, got {shape}")
    y = y.to(device, torch.float32)
    physics = (task.observed(y, device=device).physics if physics is None else physics).to(device)
    out_size = tuple(physics.output_shape)
    ref = None if reference is None else reference.to(device, torch.float32)
    if ref is not None and ref.shape[-2:] != out_size:
        raise ValueError(f"{names[1]}: size {tuple(ref.shape[-2:])} does not match the output size {out_size}")
    return physics, y, ref


def _network(arch, task: Task, physics, channels: int, seed: int, device: torch.device):
    """The spec (the task's overrides applied, sized for the output) and its network and input on the device."""
    out_size = tuple(physics.output_shape)
    spec = load_spec(arch)
    overrides = task.arch_overrides()
    spec = for_size(spec.replace(**overrides) if overrides else spec, out_size)
    net, z = build(spec, channels, out_size, seed=seed)
    return spec, net.to(device).train(), z.to(device)


def _result(run: loop.Run, spec: dict, extras: dict) -> FitResult:
    outcome, selected = run.outcome, run.outcome["selected"]
    best = outcome["best"]
    return FitResult(output=outcome["output"], ema_output=outcome["ema_output"], history=outcome["history"],
                     stopped_at=outcome["stopped_at"], stop_reason=outcome["reason"], seconds=outcome["seconds"],
                     spec=spec, settings=asdict(run.settings), task=run.task.to_dict(), best_output=best[2],
                     best_iteration=best[1], auto_stop_iteration=selected["iteration"],
                     stop_output=selected["output"], stop_ema_output=selected["ema"], stop_rule=run.rules.chosen,
                     rules=selected["rules"], restores=run.restores, extras=extras, baseline=outcome["baseline"],
                     observation_psnr=outcome["observation_psnr"], cpu_seconds=outcome["cpu_seconds"])


def fit(arch: ArchSpec | str | nn.Module, task: Task, observation: torch.Tensor, settings: FitSettings | None = None,
        *, reference: torch.Tensor | None = None, device: str | torch.device = "auto", fast: bool = True,
        net_input: torch.Tensor | None = None, progress: bool | None = None, on_evaluation=None, interruptible: bool = False, **overrides) -> FitResult:
    """Fit a DIP network to one observation (Ulyanov et al. 2018; paper 000 §4).

    Parameters
    ----------
    arch : ArchSpec, preset name, path, or nn.Module
        The architecture; a module needs ``net_input``.
    task : Task
        The inverse problem (its ``physics`` gives A, the loss, the output size).
    observation : Observation or Tensor (1, C, h, w)
        The degraded image y in [0, 1] with its physics (:meth:`Task.observe <archlab.tasks.Task.observe>`),
        or y alone (the task's physics for it, :meth:`Task.observed <archlab.tasks.Task.observed>`).
    settings : FitSettings, optional
        Everything that decides the fit (default :class:`FitSettings`); any of its fields may also be
        given as a keyword (``iterations=500``), which replaces the field.
        ``stop``: every rule of :data:`RULES` that applies to the task runs beside the fit and records
        where it would stop (``none`` runs all ``iterations``); naming a rule stops there and
        returns its output; ``auto`` takes the task's rule from :data:`AUTO_STOP`; ``record``
        reports where that rule would stop but runs all ``iterations``.
        ``ratio`` is paper 000 eq. 8 (Δr < ``eps`` over windows of ``window`` iterations; ``eps``
        defaults to the value calibrated for ``ratio_measures``, :data:`archlab.stopping.EPS_FOR_MEASURES`);
        ``wmv``/``emv`` stop ``patience`` iterations after the variance of the outputs was
        least (Wang et al. 2023) and return the output there; ``discrepancy`` stops when
        the data-fit residual reaches the noise level (Gaussian σ or Poisson ζ of the task);
        ``ema_discrepancy`` when the residual of the moving average does, and returns the average;
        ``jpeg_consistency`` (grey JPEG) when the moving average enters the quantisation constraint set of
        the observation, and returns the average (:class:`archlab.stopping.JPEGConsistencyRule`).
    reference : Tensor, optional
        The clean image (in the task's reference space) for PSNR/SSIM; the best output is kept.
        Default: the observation's reference, if any.
    device : str or torch.device
        ``"auto"``: CUDA when present.
    fast : bool
        Let the engine pick ``precision``, ``channels_last`` and ``compile`` for the device
        (:func:`archlab.engine.fast_settings`) where they are not given as keywords; ``False`` runs
        them as ``settings`` says (by default the fp32 eager reference path). The engine keeps fp32
        where bf16 would lose the network's signal and says so in ``extras["engine"]``.
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

    Examples
    --------
    >>> from archlab import images, tasks
    >>> clean = images.resize(images.load("camera"), size=(32, 32))
    >>> task = tasks.Denoise(sigma=25)
    >>> result = fit("controlled-64", task, task.observe(clean, seed=0), iterations=20, eval_every=10,
    ...              window=10, fast=False, progress=False)
    >>> result.stopped_at, list(result.history["iteration"])
    (20, [10, 20])
    """
    device = resolve_device(device)
    measured = fast and overrides.get("channels_last") is None and overrides.get("precision") is None
    settings, requested = _settings(settings, overrides, device, fast)
    if isinstance(arch, nn.Module) and net_input is None:
        raise ValueError("net_input: a module needs its input tensor")
    physics, y, ref = _observe(task, observation, device, reference)
    if isinstance(arch, nn.Module):
        net, z, spec_dict = arch.to(device).train(), net_input.to(device), {"module": type(arch).__name__}
    else:
        spec, net, z = _network(arch, task, physics, y.shape[1], settings.seed, device)
        spec_dict = spec.to_dict()
    settings, note = _engine_choice(net, z, settings, requested, measured)
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    z = z.contiguous(memory_format=memory_format)
    nets = loop.ModuleNets(net, z, settings.lr, settings.precision, CompiledModule(net) if settings.compile else None,
                           memory_format)
    run = loop.Run(task, physics, y, ref, settings, torch.Generator(device=device).manual_seed(settings.seed + 1),
                   on_evaluation)
    loop.run(nets, [run], progress=progress, interruptible=interruptible)
    return _result(run, spec_dict, {"engine": note})


def _engine_choice(net: nn.Module, z: torch.Tensor, settings: FitSettings, requested: bool,
                   measured: bool) -> tuple[FitSettings, str]:
    """The settings the fit runs and what the engine says of them: bf16 only where it keeps the network's
    signal (:func:`archlab.engine.bf16_error`); with ``measured`` (``fast`` and neither the precision nor
    the memory format given) the fastest of the safe candidates as timed here
    (:func:`archlab.engine.fastest`)."""
    bf16 = settings.precision == "bf16" and not requested
    note = "bf16 keeps the signal" if bf16 else "as requested"
    if bf16:
        error, layer = bf16_error(net, z)
        if error > BF16_MAX_RELATIVE_ERROR:
            settings, bf16 = settings.replace(precision="fp32"), False
            note = f"fp32: in bf16 the activations of layer {layer} are off by {error:.0%} (> {BF16_MAX_RELATIVE_ERROR:.0%})"
    if not measured:
        return settings, note
    precisions = ("fp32", "bf16") if bf16 else ("fp32",)
    chosen, seconds = fastest(net, z, [(p, layout) for p in precisions for layout in (False, True)])
    settings = settings.replace(precision=chosen[0], channels_last=chosen[1])
    return settings, f"{describe_choice(chosen, seconds)}; {'bf16 not native here' if note == 'as requested' else note}"


def _as_list(name: str, value) -> list | None:
    """``value`` as a list of per-run values (one value is shared), or None when not given."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.ndim != 4:
            raise ValueError(f"{name}: expected (1, C, H, W), (K, C, H, W) or a list of (1, C, H, W) tensors, "
                             f"got shape {tuple(value.shape)}")
        return list(value.unsqueeze(1))
    if isinstance(value, (str, numbers.Number, Observation)):
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


def _gaussian_upsamplers(spec: ArchSpec, sigma: float) -> tuple:
    """Every fixed upsampler of ``spec`` made the Gaussian of ``sigma`` (paper 000 eq. 6-7), as a filter
    specification; learnt (``transposed``) ones stay."""
    gaussian = {"kind": "gaussian", "sigma": sigma}
    return tuple(u if u in ("transposed", "none") else gaussian for u in per_level(spec.upsampler, spec.depth, "upsampler"))


def fit_many(arch: ArchSpec | str, task: Task, observations, settings: FitSettings | None = None, *, seeds=None,
             lrs=None, lipschitz=None, sigmas=None, references=None, device: str | torch.device = "auto",
             fast: bool = True, precision: str | None = None, progress: bool | None = False, on_evaluation=None,
             interruptible: bool = False, **overrides) -> list[FitResult]:
    """K independent DIP fits of one architecture as one vectorised computation.

    Run k is what ``fit(arch_k, task, observation_k, settings, seed=seeds[k], lr=lrs[k],
    reference=references[k])`` computes (Ulyanov et al. 2018; paper 000 §4), where ``arch_k`` is
    ``arch`` with ``lipschitz=lipschitz[k]`` and every fixed upsampler the Gaussian of ``sigmas[k]``
    (paper 000 eq. 6-7, a filter specification the spec holds) when those are given. With K ≥ 2 the weight sets are stacked and the
    network runs under ``torch.func.vmap`` (:class:`archlab.batched.VmappedNets`); each run has its
    own jitter generator, physics, EMA, monitor, stop rules and divergence guard, and a run that
    ends leaves the stack and stops costing compute. In fp32 the outputs and histories equal the
    sequential fits' to 1e-3 (tests/test_engine.py) wherever the fit itself is numerically stable:
    both compute the same sums in another order, and fits whose gradients have rounding-level
    elements (a batch norm's scale and shift feeding another normalisation, a pre-activation exactly
    at a ReLU kink) amplify that rounding through Adam, as they would across thread counts.

    Parameters
    ----------
    arch : ArchSpec, preset name or path
        The shared architecture.
    task : Task
        The inverse problem.
    observations : Observation, Tensor (1, C, h, w), Tensor (K, C, h, w) or a list of them
        One observation for every run, or one per run (images of equal size), as in :func:`fit`.
    settings : FitSettings, optional
        Shared by all runs, as in :func:`fit` (keywords replace its fields).
    seeds, lrs, lipschitz, sigmas, references
        A single value shared by all runs or one per run; K is the common length (``seeds`` and
        ``lrs`` default to the settings'). ``lipschitz`` must be given for all runs or none.
    fast, precision
        ``fast`` picks bfloat16 autocast where :func:`archlab.engine.fast_settings` does (the
        Lipschitz norms are computed in fp32 outside autocast, as in ``fit``); ``precision``
        overrides it. Channels-last and compilation do not apply under ``vmap``.
    progress, on_evaluation, interruptible
        As in :func:`fit`; ``on_evaluation`` is called for every run.

    Returns
    -------
    list of FitResult
        In run order; ``seconds`` is the wall time until the run ended and ``extras``
        holds ``{"batch": K, "run": k}`` (and ``"sigma"`` when given).

    Examples
    --------
    >>> from archlab import images, tasks
    >>> task = tasks.Denoise(25)
    >>> obs = task.observe(images.resize(images.load("camera"), size=(32, 32)), seed=0)
    >>> runs = fit_many("controlled-64", task, obs, seeds=[0, 1], iterations=10, eval_every=5, window=10,
    ...                 fast=False)
    >>> [r.extras["run"] for r in runs], bool(runs[0].history["psnr"].notna().all())
    ([0, 1], True)
    """
    device = resolve_device(device)
    base, _ = _settings(settings, overrides, device, fast, precision=precision, channels_last=False, compile=False)
    k, per_run = _expand_runs({"observations": observations, "seeds": base.seed if seeds is None else seeds,
                               "lrs": base.lr if lrs is None else lrs, "lipschitz": lipschitz, "sigmas": sigmas,
                               "references": references})
    if per_run["lipschitz"] is not None and any(lam is None for lam in per_run["lipschitz"]):
        raise ValueError("lipschitz: give a bound λ > 0 for every run, or none at all")
    base_spec = load_spec(arch)
    nets, inputs, runs, specs, extras = [], [], [], [], []
    for index in range(k):
        run_settings = base.replace(seed=int(per_run["seeds"][index]), lr=float(per_run["lrs"][index]))
        spec = base_spec
        if per_run["lipschitz"] is not None:
            spec = spec.replace(lipschitz=float(per_run["lipschitz"][index]))
        extra = {"batch": k, "run": index}
        if per_run["sigmas"] is not None:
            extra["sigma"] = float(per_run["sigmas"][index])
            spec = spec.replace(upsampler=_gaussian_upsamplers(spec, extra["sigma"]))
        reference = None if per_run["references"] is None else per_run["references"][index]
        physics, y, ref = _observe(task, per_run["observations"][index], device, reference,
                                   names=(f"observations: run {index}", "references"))
        spec, net, z = _network(spec, task, physics, y.shape[1], run_settings.seed, device)
        if index and y.shape != runs[0].y.shape:
            raise ValueError(f"observations: run {index} has shape {tuple(y.shape)}, run 0 "
                             f"{tuple(runs[0].y.shape)}; batched runs need images of equal size")
        nets.append(net)
        inputs.append(z)
        specs.append(spec.to_dict())
        extras.append(extra)
        runs.append(loop.Run(task, physics, y, ref, run_settings,
                             torch.Generator(device=device).manual_seed(run_settings.seed + 1), on_evaluation))
    if k == 1:
        stack = loop.ModuleNets(nets[0], inputs[0], runs[0].settings.lr, base.precision)
    else:
        lam = None if per_run["lipschitz"] is None else [float(v) for v in per_run["lipschitz"]]
        stack = VmappedNets(nets, inputs, [r.settings.lr for r in runs], base.precision, lam)
    loop.run(stack, runs, progress=progress, interruptible=interruptible)
    return [_result(run, spec, extra) for run, spec, extra in zip(runs, specs, extras)]
