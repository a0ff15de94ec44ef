"""archlab's fit beside the paper's own code in exact arithmetic: is what is left between their curves rounding?

Both networks start from the same weights and input (their code's draw for the seed, copied into archlab's
network, :func:`seed_spread.copy_their_init`) on one observation of the parity runs (REFERENCE.md §5b), and:

1. **Gradients at initialisation** - the gradient of ``mean((f(z) − y)²)`` of every weight tensor from their
   code in fp32, archlab in fp32 and archlab in float64, each relative to their code in float64
   (‖g − g₆₄‖ / ‖g₆₄‖, the largest over the weight tensors; convolution biases followed by a mean-only norm are
   left out: their exact gradient is zero, so only rounding is left of it).
2. **The fits in float64** - archlab's :func:`archlab.fitting.fit` and their denoising loop
   (:func:`seed_spread.their_fit`), the PSNR after every update; archlab's evaluation at iteration k is the
   forward pass of step k (after k − 1 updates), compared with theirs after k − 1 updates.

If the float64 curves agree to float64 rounding and the fp32 gradients of both codes are as far from the exact
ones as from each other, the two codes compute the same thing and their fp32 curves part by rounding alone.

    python benchmarks/exact_parity.py --their-code PATH/Measure-and-Control-Spectral-Bias/code --model shi-decoder \\
        --image F16 --iterations 150 -o results/denoise-set9/exact-parity.md
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from archlab import images, models, tasks

sys.path.insert(0, str(Path(__file__).resolve().parent))

import seed_spread  # noqa: E402


def _pair(their_models, model: str, run, size: tuple[int, int], seed: int, dtype: torch.dtype):
    """Their network, archlab's with their weights, and their input, all in ``dtype``."""
    theirs, z = seed_spread.their_start(their_models, model, size, seed)
    mine, _ = models.build(run.arch, 3, size, seed=seed)
    seed_spread.copy_their_init(theirs, mine)
    return theirs.to(dtype), mine.to(dtype), z.to(dtype)


def gradient_errors(their_models, model: str, run, y: torch.Tensor, seed: int) -> dict[str, float]:
    """Largest relative gradient error (over weight tensors) of each fp32/float64 gradient against their float64 one."""
    grads = {}
    for dtype in (torch.float32, torch.float64):
        theirs, mine, z = _pair(their_models, model, run, tuple(y.shape[-2:]), seed, dtype)
        for name, net in (("their code", theirs), ("archlab", mine)):
            net.zero_grad()
            F.mse_loss(net(z), y.to(dtype)).backward()
            grads[(name, dtype)] = [p.grad.double() for p in seed_spread.trainable_in_build_order(net)]
    exact = grads[("their code", torch.float64)]
    keep = [i for i, g in enumerate(exact) if g.dim() > 1]  # weight tensors (biases before a mean-only norm: 0)

    def error(key):
        return max(float((grads[key][i] - exact[i]).norm() / exact[i].norm()) for i in keep)

    return {"their code fp32": error(("their code", torch.float32)), "archlab fp32": error(("archlab", torch.float32)),
            "archlab float64": error(("archlab", torch.float64))}


def float64_curves(their_models, model: str, run, clean: torch.Tensor, y: torch.Tensor, seed: int,
                   iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Both fits in float64, PSNR after every update: (updates, archlab, their code, archlab s, their s)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        obs = dataclasses.replace(tasks.task_from_dict(run.task).observed(y.double()), reference=clean.double())
        start = time.perf_counter()
        theirs = seed_spread.their_start(their_models, model, tuple(y.shape[-2:]), seed)
        mine_it, mine = seed_spread.archlab_fit(run, obs, seed, iterations, start=theirs, every=1)
        mine_s = time.perf_counter() - start
        start = time.perf_counter()
        their_it, their = seed_spread.their_fit(their_models, model, clean.double(), y.double(), seed, iterations,
                                                run.fit["lr"], run.fit["input_jitter"], every=1)
        their_s = time.perf_counter() - start
    finally:
        torch.set_default_dtype(default)
    at = dict(zip(their_it.tolist(), their))
    updates = np.array([k - 1 for k in mine_it.tolist() if k - 1 in at])
    ours = np.array([p for k, p in zip(mine_it.tolist(), mine) if k - 1 in at])
    return updates, ours, np.array([at[u] for u in updates]), mine_s, their_s


def report(model: str, image: str, errors: dict, curves: tuple) -> str:
    """The Markdown report of both measurements."""
    updates, ours, theirs, mine_s, their_s = curves
    diff = np.abs(ours - theirs)
    marks = sorted({int(u) for u in updates[:: max(1, len(updates) // 10)]} | {int(updates[-1])})
    at = dict(zip(updates.tolist(), zip(ours, theirs)))
    lines = [f"### {model} on {image}: archlab beside the paper's code from the same weights and input", "",
             f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch threads {torch.get_num_threads()}.", "",
             "Gradients at initialisation, largest relative error over the weight tensors against their code in "
             "float64:", "", "| gradient | ‖g − g₆₄(their code)‖ / ‖g₆₄‖ |", "| --- | --- |"]
    lines += [f"| {name} | {value:.2e} |" for name, value in errors.items()]
    lines += ["", f"The fits in float64 ({len(updates)} updates; archlab {mine_s:.0f} s, their code {their_s:.0f} s): "
              f"largest |ΔPSNR| **{diff.max():.2e} dB**.", "",
              "| updates | archlab dB | their code dB | Δ dB |", "| --- | --- | --- | --- |"]
    lines += [f"| {u} | {at[u][0]:.6f} | {at[u][1]:.6f} | {at[u][0] - at[u][1]:+.1e} |" for u in marks]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=seed_spread.MODELS, default="shi-decoder")
    parser.add_argument("--their-code", type=Path, required=True,
                        help="the folder of the paper's code that holds its models package")
    parser.add_argument("--image", default="F16", help="an image of reproduce denoise-set9 (default F16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("-o", "--out", type=Path, help="write the Markdown report here (also printed)")
    args = parser.parse_args(argv)
    if not (args.their_code / "models" / "__init__.py").is_file():
        parser.error("--their-code must name the folder of the paper's code that holds its models package")
    sys.path.insert(0, str(args.their_code))
    their_models = importlib.import_module("models")
    torch.set_num_threads(1)
    run, clean, obs = seed_spread.observation(args.model, args.image)
    errors = gradient_errors(their_models, args.model, run, obs.y, args.seed)
    curves = float64_curves(their_models, args.model, run, clean, obs.y, args.seed, args.iterations)
    text = report(args.model, args.image, errors, curves)
    print(text, end="")
    if args.out is not None:
        with images.atomic_path(args.out) as tmp:
            Path(tmp).write_text(text)


if __name__ == "__main__":
    main()
