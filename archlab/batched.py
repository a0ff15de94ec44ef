"""K DIP networks of one architecture as one vectorised computation, for :func:`archlab.fitting.fit_many`.

:class:`VmappedNets` stacks the K weight sets (``torch.func.stack_module_state``) and evaluates the
network with ``vmap`` over ``functional_call``; :class:`_BatchedAdam` runs Adam on the stacked tensors
with per-run learning rates; the fixed upsamplers get a vmap-able twin (:class:`_VmapUpsampler`) whose
filter (a buffer) may differ between runs. The loop that drives them is
:func:`archlab.loop.run`, the one every fit runs.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, replace_all_batch_norm_modules_, stack_module_state, vmap

from archlab.layers import LipschitzConv2d, Upsampler, pad_axis

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


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


class VmappedNets:
    """K networks of one architecture as a stack for :func:`archlab.loop.run`: the weight sets stacked
    (``torch.func.stack_module_state``), evaluated with ``vmap`` over ``functional_call`` (batch-norm
    layers use batch statistics only, as in training), with per-run learning rates (:class:`_BatchedAdam`)
    and Lipschitz bounds ``lipschitz`` (one λ per run, or None: each network's own)."""

    def __init__(self, nets: list[nn.Module], inputs: list[torch.Tensor], lrs: list[float], precision: str,
                 lipschitz: list[float] | None = None):
        device = inputs[0].device
        self.device = device
        nets = [replace_all_batch_norm_modules_(net) for net in nets]
        self.base = _vmappable(nets[0]).to("meta")
        self.convs = [m for m in self.base.modules() if isinstance(m, LipschitzConv2d) and m.lipschitz is not None]
        params, self.buffers = stack_module_state(nets)
        self.params = {name: p.detach().requires_grad_() for name, p in params.items()}
        self.z = torch.stack(inputs)
        self.lam = None if lipschitz is None else torch.tensor([float(v) for v in lipschitz], device=device)
        self.adam = _BatchedAdam(list(self.params.values()), torch.tensor(lrs, device=device))
        self.good = [t.clone() for t in self._state()]
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def _state(self) -> list[torch.Tensor]:
        return [*self.params.values(), *self.buffers.values(), *self.adam.state()]

    def _forward_one(self, params, buffers, x, lam):
        with _bounds(self.convs, lam):
            return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The K networks on their K inputs (K, 1, C, h, w); returns (K, 1, C, H, W) in fp32."""
        dims = (0, 0, 0, None if self.lam is None else 0)
        with self.autocast:
            out = vmap(self._forward_one, in_dims=dims, randomness="error")(self.params, self.buffers, x, self.lam)
        return out.float()

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    def step(self) -> None:
        self.adam.step(list(self.params.values()))

    def _copy_runs(self, target: list[torch.Tensor], source: list[torch.Tensor], mask: list[bool]) -> None:
        """``target[k] = source[k]`` for the runs where ``mask`` is set."""
        mask = torch.tensor(mask, device=self.device)
        with torch.no_grad():
            for t, s in zip(target, source):
                t.copy_(torch.where(mask.view(-1, *([1] * (t.ndim - 1))), s, t))

    def save(self, ok: list[bool]) -> None:
        """Keep the current state of the runs in ``ok`` as their last good one."""
        self._copy_runs(self.good, self._state(), ok)

    def roll_back(self, back: list[bool]) -> None:
        """Return the runs in ``back`` to their last good state."""
        self._copy_runs(self._state(), self.good, back)

    def keep(self, slots: list[int]) -> None:
        """Drop every run but those at ``slots`` from the stacked tensors."""
        index = torch.tensor(slots, device=self.device)
        self.params = {n: p.detach()[index].requires_grad_() for n, p in self.params.items()}
        self.buffers = {n: b[index] for n, b in self.buffers.items()}
        self.adam.select(index)
        self.good = [g[index] for g in self.good]
        self.z = self.z[index]
        self.lam = None if self.lam is None else self.lam[index]

    def good_output(self, slot: int) -> torch.Tensor:
        """The output of run ``slot``'s last good weights on its plain input."""
        n_params, n_buffers = len(self.params), len(self.buffers)
        params = dict(zip(self.params, (g[slot] for g in self.good[:n_params])))
        buffers = dict(zip(self.buffers, (g[slot] for g in self.good[n_params : n_params + n_buffers])))
        lam = None if self.lam is None else self.lam[slot]
        return self._forward_one(params, buffers, self.z[slot], lam).float()
