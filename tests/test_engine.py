"""The fast engine: settings, compiled-module fallback, batched Adam and fit_many == sequential fits."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from archlab import batched, engine, images, layers, models, tasks
from archlab.fitting import fit_many
from archlab.engine import CompiledModule, engine_settings
from archlab.fitting import fit

TINY = models.ArchSpec(kind="hourglass", depth=2, width=8, skip=2, lipschitz=2.0, norm="mean_only")
SMALL_FIT = dict(iterations=10, eval_every=5, fast=False)


@pytest.fixture(scope="module")
def noisy():
    x = images.center_crop(images.resize(images.load("camera"), size=(16, 16)), 4)
    task = tasks.Denoise(25)
    return task, x, task.degrade(x, seed=0)


#: How far a vmapped fit may drift from the same fit run alone: the batched convolutions sum in another
#: order (float32 rounding ~1e-7 per step), and Adam's normalised updates carry that difference through every
#: iteration; over these tests' 20-60 steps it was up to 3e-4 on a busy 2-core machine (thread counts change
#: the order too), so 1e-3 - still far below the 1e-2 by which different runs differ.
SAME_FIT_ATOL = 1e-3


def _assert_same_fit(batched, single):
    error = (batched.output - single.output).abs().max()
    assert torch.allclose(batched.output, single.output, atol=SAME_FIT_ATOL), error
    assert torch.allclose(batched.ema_output, single.ema_output, atol=SAME_FIT_ATOL)
    a, b = batched.history.drop(columns="seconds"), single.history.drop(columns="seconds")
    assert list(a.columns) == list(b.columns)
    # Blur and sharpness are ratios of small differences: outputs equal to 1e-3 agree there to ~1e-2 relative.
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-2, atol=SAME_FIT_ATOL)
    assert (batched.stopped_at, batched.stop_reason, batched.auto_stop_iteration) == (
        single.stopped_at, single.stop_reason, single.auto_stop_iteration)
    assert batched.spec == single.spec
    assert {k: v for k, v in batched.settings.items() if k != "channels_last"} == {
        k: v for k, v in single.settings.items() if k != "channels_last"}


@pytest.mark.parametrize("spec, iterations", [
    (TINY, 10),
    # nn.BatchNorm2d (batch statistics per run under vmap), compared on the first output only: in chains
    # BN -> LeakyReLU -> BN the first BN's scale and shift cancel up to BN's ε, their gradients are ~1e-9
    # rounding noise, and Adam turns that noise into ±lr steps - a 1e-7 change of this tiny fit's input
    # moves its output by up to 0.07 after 20 iterations, so any two fp32 computations part ways.
    (TINY.replace(lipschitz=None, norm="batch", bias=False), 1),
    (TINY.replace(lipschitz_method="power"), 10),  # a persistent buffer updated in place inside vmap
])
def test_fit_many_equals_sequential_fits(noisy, spec, iterations):
    task, x, y = noisy
    seeds, lrs = [0, 1, 2], [0.01, 0.03, 0.01]
    settings = {**SMALL_FIT, "iterations": iterations, "eval_every": 5 if iterations > 5 else 1}
    many = fit_many(spec, task, y, seeds=seeds, lrs=lrs, references=x, **settings)
    assert [r.extras["run"] for r in many] == [0, 1, 2] and many[0].extras["batch"] == 3
    for result, seed, lr in zip(many, seeds, lrs):
        _assert_same_fit(result, fit(spec, task, y, seed=seed, lr=lr, reference=x, progress=False, **settings))
    assert not torch.allclose(many[0].output, many[1].output, atol=1e-3)  # the runs really differ


def test_fit_many_per_run_lipschitz_and_images(noisy):
    task, x, y = noisy
    other = images.to_grey(images.resize(images.load("astronaut"), size=(16, 16)))
    ys = torch.cat([y, task.degrade(other, seed=0)])
    many = fit_many(TINY, task, ys, lipschitz=[0.5, 2.5], references=[x, other], **SMALL_FIT)
    for result, lam, obs, ref in zip(many, [0.5, 2.5], ys, [x, other]):
        assert result.spec["lipschitz"] == lam
        single = fit(TINY.replace(lipschitz=lam), task, obs[None], reference=ref, progress=False, **SMALL_FIT)
        _assert_same_fit(result, single)


def test_fit_many_per_run_gaussian_sigma(noisy, tmp_path):
    task, x, y = noisy
    spec = TINY.replace(upsampler="gauss-0.5")
    many = fit_many(spec, task, y, sigmas=[0.3, 1.2], seeds=[4, 5], references=x, **SMALL_FIT)
    for result, sigma, seed in zip(many, [0.3, 1.2], [4, 5]):
        toml = tmp_path / f"gauss-{sigma}.toml"
        toml.write_text(f'name = "gauss-{sigma}"\nfactor = 2\nkind = "gaussian"\nsigma = {sigma}\n')
        single = fit(spec.replace(upsampler=str(toml)), task, y, seed=seed, reference=x, progress=False, **SMALL_FIT)
        assert result.extras["sigma"] == sigma and result.spec["upsampler"] == [{"kind": "gaussian", "sigma": sigma}] * 2
        assert torch.allclose(result.output, single.output, atol=1e-4)
    nearest = fit_many(TINY.replace(upsampler="nearest"), task, y, sigmas=[0.5, 1.0], **SMALL_FIT)  # any layout
    assert [r.spec["upsampler"][0]["sigma"] for r in nearest] == [0.5, 1.0]


def test_fit_many_stops_runs_independently(noisy):
    task, x, y = noisy
    # Without jitter, r of a barely moving run (lr 1e-6) drifts ~0.003 per iteration, so its Δr over
    # 3-iteration windows (~0.01) is below eps at once; a fast run's (lr 0.02) swings by far more.
    common = dict(iterations=30, eval_every=1, stop="ratio", window=3, eps=0.05, input_jitter=0.0, fast=False)
    many = fit_many(TINY, task, y, lrs=[1e-6, 0.02], references=x, **common)
    singles = [fit(TINY, task, y, lr=lr, reference=x, progress=False, **common) for lr in (1e-6, 0.02)]
    assert many[0].stop_reason == "ratio" and many[0].stopped_at < many[1].stopped_at
    for result, single in zip(many, singles):
        _assert_same_fit(result, single)
    assert many[0].seconds <= many[1].seconds


def test_fit_many_bad_input(noisy):
    task, x, y = noisy
    with pytest.raises(ValueError, match="lengths"):
        fit_many(TINY, task, y, seeds=[0, 1], lrs=[0.01, 0.02, 0.03], iterations=2)
    with pytest.raises(ValueError, match="lipschitz"):
        fit_many(TINY, task, y, lipschitz=[1.0, None], iterations=2)
    with pytest.raises(ValueError, match="equal size"):
        fit_many(TINY, task, [y, y[..., :8, :8]], iterations=2)
    with pytest.raises(ValueError, match="precision"):
        fit_many(TINY, task, y, precision="fp8", iterations=2)


@pytest.mark.parametrize("method", ["svd", "power"])
def test_fit_many_in_bf16_keeps_the_bound_in_fp32(noisy, method):
    task, x, y = noisy
    many = fit_many(TINY.replace(lipschitz_method=method), task, y, seeds=[0, 1], references=x, iterations=20,
                    eval_every=5, lrs=0.02, precision="bf16")
    for result in many:
        assert result.settings["precision"] == "bf16"
        assert result.history["psnr"].iloc[-1] > result.history["psnr"].iloc[0]


def test_batched_adam_equals_torch_adam():
    generator = torch.Generator().manual_seed(0)
    shapes, lrs = [(3, 4, 5), (3, 7)], [0.1, 0.01, 0.003]
    stacked = [torch.randn(s, generator=generator, requires_grad=True) for s in shapes]
    singles = [[p[k].detach().clone().requires_grad_() for p in stacked] for k in range(3)]
    optimisers = [torch.optim.Adam(params, lr=lr) for params, lr in zip(singles, lrs)]
    adam = batched._BatchedAdam(stacked, torch.tensor(lrs))
    for _ in range(5):
        grads = [torch.randn(s, generator=generator) for s in shapes]
        for p, g in zip(stacked, grads):
            p.grad = g.clone()
        adam.step(stacked)
        for k, (params, optimiser) in enumerate(zip(singles, optimisers)):
            for p, g in zip(params, grads):
                p.grad = g[k].clone()
            optimiser.step()
    for k, params in enumerate(singles):
        for p, q in zip(stacked, params):
            assert torch.allclose(p[k], q, atol=1e-6)


def test_vmappable_upsampler_equals_the_layer():
    layer = layers.Upsampler(4, "L-60")
    twin = batched._VmapUpsampler(layer)
    x = torch.rand(2, 4, 8, 8)
    assert torch.allclose(twin(x), layer(x), atol=1e-6)
    weights = torch.stack([layer.weight, 2 * layer.weight])
    stacked = torch.func.vmap(lambda w, t: torch.func.functional_call(twin, {"weight": w}, (t,)))(weights, x[:, None])
    assert torch.allclose(stacked[0, 0], layer(x[:1])[0], atol=1e-6)
    assert torch.allclose(stacked[1, 0], 4 * layer(x[1:2])[0], atol=1e-5)  # the 1-D kernels act along both axes


def test_engine_settings():
    cpu = torch.device("cpu")
    assert engine_settings(cpu, fast=False) == {"precision": "fp32", "channels_last": False, "compile": False}
    fast = engine_settings(cpu, fast=True)
    assert fast["channels_last"] is True and fast["compile"] is False
    assert fast["precision"] == ("bf16" if engine.BF16_SAFE and engine.bf16_supported(cpu) else "fp32")
    assert engine_settings(cpu, fast=True, precision="fp32", compile=True)["precision"] == "fp32"
    with pytest.raises(ValueError, match="precision"):
        engine_settings(cpu, precision="half")


def test_compiled_module_runs_and_falls_back():
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU())
    x = torch.rand(1, 2, 6, 6)
    compiled = CompiledModule(net, backend="eager")  # Dynamo tracing without a C++ toolchain
    assert torch.allclose(compiled(x), net(x)) and compiled.state == "compiled"

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no compiler here")

    fallback = CompiledModule(net, backend=broken_backend)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        out = fallback(x)
    assert torch.allclose(out, net(x)) and fallback.state == "eager" and "no compiler" in fallback.fallback_reason
    out.sum().backward()
    assert net[0].weight.grad is not None
    assert set(dict(fallback.named_parameters())) == {"module.0.weight", "module.0.bias"}


@pytest.mark.parametrize("fast", [False, True])
def test_fit_improves_in_fp32_and_fast_modes(noisy, fast):
    task, x, y = noisy
    result = fit(TINY, task, y, iterations=40, lr=0.02, reference=x, eval_every=10, fast=fast, progress=False)
    h = result.history
    assert h["loss"].iloc[-1] < h["loss"].iloc[0] and h["psnr"].iloc[-1] > h["psnr"].iloc[0]
    expected = engine_settings("cpu", fast=fast)
    if fast:  # the engine measured the safe candidates and runs the fastest
        assert "the fastest measured here" in result.extras["engine"]
        if expected["precision"] == "fp32":
            assert result.settings["precision"] == "fp32"
        expected = {"compile": False}
    assert {k: result.settings[k] for k in expected} == expected
    chosen = {k: result.settings[k] for k in ("precision", "channels_last")}
    again = fit(TINY, task, y, iterations=10, seed=3, eval_every=5, fast=fast, progress=False, **chosen)
    assert torch.allclose(again.output, fit(TINY, task, y, iterations=10, seed=3, eval_every=5, fast=fast,
                                            progress=False, **chosen).output, atol=1e-6)


def test_fastest_takes_the_quickest_pass_of_each_candidate():
    net, z = models.build(TINY, 1, (16, 16))
    durations = {("fp32", False): [0.9, 0.5, 0.6], ("fp32", True): [0.9, 0.7, 0.4], ("bf16", False): [0.3, 0.8, 0.8]}
    stamps = iter([t for d in durations.values() for step in d for t in (0.0, step)])
    engine._CHOICES.clear()
    chosen, seconds = engine.fastest(net, z, list(durations), timer=lambda: next(stamps))
    assert seconds == {("fp32", False): 0.5, ("fp32", True): 0.4, ("bf16", False): 0.8}  # the warm-up pass is not timed
    assert chosen == ("fp32", True)
    assert engine.describe_choice(chosen, seconds).startswith("fp32 channels-last, the fastest measured here")
    assert all(p.grad is None for p in net.parameters())  # measured on a copy
    assert engine.fastest(net, z, list(durations), timer=None) == (chosen, seconds)  # remembered: not timed again
    close = iter([t for d in ([0.5] * 3, [0.47] * 3) for step in d for t in (0.0, step)])
    engine._CHOICES.clear()
    assert engine.fastest(net, z, list(durations)[:2], timer=lambda: next(close))[0] == ("fp32", False)  # within 10 %
    engine._CHOICES.clear()


def test_fit_runs_the_layout_the_engine_measured_fastest_unless_told(noisy, monkeypatch):
    from archlab import fitting

    task, x, y = noisy
    calls = []

    def measured(net, z, candidates):
        calls.append(candidates)
        return ("fp32", False), {c: 0.1 for c in candidates}

    monkeypatch.setattr(fitting, "fastest", measured)
    result = fit(TINY, task, y, iterations=2, eval_every=1, window=2, fast=True, progress=False)
    assert result.settings["channels_last"] is False and len(calls) == 1
    assert ("fp32", True) in calls[0] and all(p in ("fp32", "bf16") for p, _ in calls[0])
    told = fit(TINY, task, y, iterations=2, eval_every=1, window=2, fast=True, channels_last=True, progress=False)
    assert told.settings["channels_last"] is True and len(calls) == 1  # given: nothing measured
    fit(TINY, task, y, iterations=2, eval_every=1, window=2, fast=False, progress=False)
    assert len(calls) == 1  # the fp32 reference path never measures


def test_fit_with_compile_falls_back_or_matches(noisy, monkeypatch):
    task, x, y = noisy
    monkeypatch.setattr(engine, "CompiledModule", lambda net: CompiledModule(net, backend="eager"))
    compiled = fit(TINY, task, y, iterations=10, eval_every=5, fast=False, compile=True, progress=False)
    eager = fit(TINY, task, y, iterations=10, eval_every=5, fast=False, progress=False)
    assert compiled.settings["compile"] is True
    assert torch.allclose(compiled.output, eager.output, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_many_on_cuda(noisy):
    task, x, y = noisy
    many = fit_many(TINY, task, y, seeds=[0, 1], references=x, device="cuda", **SMALL_FIT)
    single = fit(TINY, task, y, seed=1, reference=x, device="cuda", progress=False, **SMALL_FIT)
    assert torch.allclose(many[1].output, single.output, atol=1e-4)
    fast = fit(TINY, task, y, iterations=10, eval_every=5, device="cuda", progress=False)
    assert torch.isfinite(fast.output).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_engine_measures_on_cuda_and_syncs_only_at_evaluations(noisy, monkeypatch):
    task, x, y = noisy
    result = fit(TINY, task, y, iterations=20, eval_every=10, device="cuda", progress=False)
    assert "the fastest measured here" in result.extras["engine"] and torch.isfinite(result.output).all()
    transfers = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: transfers.append(t.device.type) or original(t))
    counts = []
    for iterations in (20, 40):
        transfers.clear()
        fit(TINY, task, y, iterations=iterations, eval_every=10, device="cuda", progress=False, precision="fp32",
            channels_last=False)
        counts.append(transfers.count("cuda"))
    assert counts[1] - counts[0] == 2  # 20 more iterations, 2 more evaluations: one transfer each, none per step
