"""The fast fit engine: the device, safe fast settings, and a compiled network with a clean fallback.

* :func:`fast_settings` / :func:`engine_settings` - the precision (bfloat16 autocast with
  fp32 weights), memory format (channels-last) and ``torch.compile`` that ``fit(fast=True)``
  may use on a device; :func:`fastest` measures which of them is fastest for the network on this
  machine, which is what ``fit(fast=True)`` runs; the fp32 eager path stays the reference.
* :class:`CompiledModule` - ``torch.compile`` of a network (forward and, through
  AOTAutograd, backward) that falls back to eager execution if compilation fails.

:mod:`archlab.fitting` builds on this module; batched fits are :mod:`archlab.batched`.
"""

from __future__ import annotations

import copy
import time
import warnings

import torch
import torch.nn as nn

PRECISIONS = ("fp32", "bf16")

#: Whether ``fast=True`` may use bfloat16 autocast. Measured (results/bench/README.md): after 1,000
#: iterations bf16 moves the PSNR by -0.11 dB on average (EMA output: -0.03 dB), within the ±0.15 dB
#: that any rounding change (fp32 channels-last) causes; set False if ``python benchmarks/speed.py dip`` disagrees.
BF16_SAFE = True

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda requested but no CUDA device is available; use cpu or auto")
    return device


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively (AVX512-BF16/AMX on CPU, Ampere+ on CUDA)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


#: Largest relative error of any layer's activations under bfloat16 that :func:`bf16_error` lets pass.
#: bfloat16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 0.2 % per operation); a layer whose output
#: is dominated by cancellation - paper 000's decoder at initialisation, activations of std ~1e-5 after
#: Lipschitz-bounded convolutions and mean-only BN, relative error 116-149 % - has lost its signal.
BF16_MAX_RELATIVE_ERROR = 0.05


def bf16_error(net: nn.Module, net_input: torch.Tensor) -> tuple[float, str]:
    """The largest relative error ``‖a_bf16 − a_fp32‖ / ‖a_fp32‖`` over the activations of every leaf
    module of ``net`` on ``net_input``, and the name of that module.

    One forward pass in fp32 and one under bfloat16 autocast, on a copy of ``net`` (batch-norm
    running statistics of ``net`` are untouched). Use it to decide whether a network keeps its
    signal in bfloat16 (:data:`BF16_MAX_RELATIVE_ERROR`).
    """
    probe = copy.deepcopy(net).train()
    device = net_input.device
    outputs: dict[str, list[torch.Tensor]] = {}
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: outputs.setdefault(name, []).append(o.float()))
             for name, module in probe.named_modules() if not list(module.children())]
    try:
        with torch.no_grad():
            probe(net_input)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                probe(net_input)
    finally:
        for hook in hooks:
            hook.remove()
    worst, where = 0.0, ""
    for name, (exact, rounded) in ((n, o) for n, o in outputs.items() if len(o) == 2):
        scale = exact.norm()
        error = float((rounded - exact).norm() / scale) if scale > 0 else 0.0
        if error > worst:
            worst, where = error, name
    return worst, where


#: Timed forward-backward passes per candidate of :func:`fastest` (after one untimed warm-up pass).
TIMED_STEPS = 2
#: How much faster than the first candidate another must measure to be chosen instead (timing noise
#: alone must not change what a fit computes).
MARGIN = 0.10
_CHOICES: dict = {}


def fastest(net: nn.Module, net_input: torch.Tensor, candidates, *, steps: int = TIMED_STEPS,
            timer=time.perf_counter) -> tuple[tuple[str, bool], dict]:
    """The fastest of ``candidates`` for this network on this machine, measured, and every measurement.

    Each candidate ``(precision, channels_last)`` runs one warm-up and ``steps`` timed passes of
    ``out = net(z); out.square().mean().backward()`` (the cost of a fit's step but for the optimiser's,
    which is the same in every layout) on a copy of ``net``, in that memory format and under bfloat16
    autocast for ``"bf16"``; the candidate's time is its fastest pass (the least disturbed by other work
    on the machine). The first candidate is kept unless another is faster by more than :data:`MARGIN`,
    and the choice is remembered for this network, input shape, device and thread count for the rest
    of the process, so fits of one configuration compute the same numbers. Why measure: which layout
    wins depends on the machine and the network - on AVX2-only CPUs a 128-channel 3×3 convolution at 128²
    runs forward and backward in 0.45 s contiguous and 0.86-0.96 s channels-last (1 thread), on AVX512
    machines channels-last is faster.

    Returns
    -------
    (precision, channels_last), dict
        The chosen candidate and ``{candidate: seconds per pass}``.
    """
    key = (repr(net), tuple(net_input.shape), str(net_input.device), torch.get_num_threads(), tuple(candidates))
    if key in _CHOICES:
        return _CHOICES[key]
    device = net_input.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    seconds = {}
    for precision, channels_last in candidates:
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        probe = copy.deepcopy(net).train().to(memory_format=memory_format)
        z = net_input.contiguous(memory_format=memory_format)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        times = []
        for step in range(steps + 1):
            sync()
            start = timer()
            with autocast:
                out = probe(z)
            out.float().square().mean().backward()
            sync()
            elapsed = timer() - start
            if step:
                times.append(elapsed)
        seconds[(precision, channels_last)] = min(times)
    first = tuple(candidates[0])
    best = min(seconds, key=seconds.get)
    chosen = best if seconds[best] < (1 - MARGIN) * seconds[first] else first
    _CHOICES[key] = chosen, seconds
    return chosen, seconds


def describe_choice(chosen: tuple[str, bool], seconds: dict) -> str:
    """One line: every measured candidate's seconds per pass and the one chosen."""
    def name(candidate):
        return candidate[0] + (" channels-last" if candidate[1] else "")

    measured = ", ".join(f"{name(c)} {s * 1e3:.1f} ms" for c, s in seconds.items())
    return f"{name(chosen)}, the fastest measured here (forward+backward: {measured}; others must win by {MARGIN:.0%})"


def fast_settings(device: str | torch.device = "auto") -> dict:
    """The engine options ``fast=True`` picks for ``device``.

    * ``precision`` - ``"bf16"`` where the hardware has native bfloat16 and
      :data:`BF16_SAFE` holds, else ``"fp32"``;
    * ``channels_last`` - ``True``: oneDNN and cuDNN run NHWC convolutions without the
      layout reorders NCHW needs, and :class:`~archlab.layers.Upsampler` works in NHWC;
    * ``compile`` - ``False``: on the 2-core CPU, compiling a 2-level hourglass took
      165-190 s and did not make its step measurably faster (see the engine notes in
      results/bench/README.md); pass ``compile=True`` to opt in.
    """
    device = resolve_device(device)
    precision = "bf16" if BF16_SAFE and bf16_supported(device) else "fp32"
    return {"precision": precision, "channels_last": True, "compile": False}


def engine_settings(device: str | torch.device, fast: bool = True, precision: str | None = None,
                    channels_last: bool | None = None, compile: bool | None = None) -> dict:
    """Resolve the engine options of a fit: explicit values win, the rest come from
    :func:`fast_settings` when ``fast`` and from the fp32 eager reference otherwise."""
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"fit.precision: {precision!r} is invalid; allowed: {', '.join(PRECISIONS)}")
    chosen = fast_settings(device) if fast else {"precision": "fp32", "channels_last": False, "compile": False}
    given = {"precision": precision, "channels_last": channels_last, "compile": compile}
    return {key: chosen[key] if value is None else value for key, value in given.items()}


class CompiledModule(nn.Module):
    """``torch.compile`` of ``module`` that falls back to eager execution if compiling fails.

    Compilation happens at the first call (Dynamo traces the forward, AOTAutograd derives
    the backward, Inductor generates the kernels); an error there - no C++ compiler, an
    unsupported operation - is reported once as a warning and the eager module is used
    from then on. The parameters are ``module``'s own, so optimisers and ``state_dict``
    round trips see the same tensors.
    """

    def __init__(self, module: nn.Module, **options):
        super().__init__()
        self.module = module
        self.compiled = torch.compile(module.forward, **options)  # a function: the weights stay registered once
        self.state = "pending"
        self.fallback_reason: str | None = None

    def forward(self, *args):
        if self.state == "eager":
            return self.module(*args)
        if self.state == "compiled":
            return self.compiled(*args)
        try:
            out = self.compiled(*args)
        except Exception as exc:  # whatever the compiler stack raises, the eager module still runs
            self.state, self.fallback_reason = "eager", " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
            warnings.warn(f"torch.compile failed, running eagerly: {self.fallback_reason}", RuntimeWarning,
                          stacklevel=2)
            return self.module(*args)
        self.state = "compiled"
        return out


