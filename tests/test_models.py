"""ArchSpec round trips, presets' parameter counts, build contracts."""

import json
import tomllib

import pytest
import torch

from archlab import models


@pytest.mark.parametrize("name,expected,rel", [
    ("ulyanov-dip", 2_217_831, 0.0),       # Ulyanov's 5×128 skip network, 32 input channels (exact)
    ("convdecoder", 890_000, 0.01),        # ConvDecoder ≈ 0.89 M (paper 004 Table 2)
    ("deep-decoder", 100_000, 0.01),       # Deep Decoder ≈ 0.1 M
])
def test_preset_parameter_counts(name, expected, rel):
    net, _ = models.build(models.preset(name), 3, (128, 128))
    count = models.count_parameters(net)
    assert count == expected if rel == 0 else abs(count - expected) <= rel * expected


def test_faster_dip_counts_within_paper_range():
    # Paper 004: their networks have 0.05–0.92 M parameters.
    counts = [models.count_parameters(models.build(models.preset(f"faster-dip-{w}"), 3, (64, 64))[0])
              for w in (32, 64, 128)]
    assert counts == sorted(counts) and 0.05e6 <= counts[0] and counts[-1] <= 0.92e6


@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_every_preset_builds_and_outputs_the_size(name):
    spec = models.preset(name)
    size = (spec.multiple * 2, spec.multiple * 3) if spec.multiple <= 16 else (spec.multiple * 2, spec.multiple * 2)
    net, z = models.build(spec, 1, size, seed=3)
    out = net(z)
    assert out.shape == (1, 1, *size)
    assert z.shape[-2:] == (size[0] // spec.scale, size[1] // spec.scale)


@pytest.mark.parametrize("kind", models.KINDS)
def test_kinds_with_lipschitz_and_mean_only(kind):
    spec = models.ArchSpec(kind=kind, depth=2, width=8, skip=2 if kind == "hourglass" else 0,
                           upsampler="none" if kind == "convnet" else "L15", lipschitz=2.0, norm="mean_only")
    net, z = models.build(spec, 3, (16, 12))
    assert net(z).shape == (1, 3, 16, 12)


def test_round_trip_dict_json_toml():
    spec = models.preset("shi-decoder")
    assert models.ArchSpec.from_dict(spec.to_dict()) == spec
    assert models.ArchSpec.from_dict(json.loads(spec.to_json())) == spec
    assert models.ArchSpec.from_dict(tomllib.loads(spec.to_toml())) == spec
    plain = models.preset("ulyanov-dip")
    assert models.ArchSpec.from_dict(tomllib.loads(plain.to_toml())) == plain


def test_same_seed_same_weights_and_input():
    a, za = models.build("faster-dip-32", 3, (16, 16), seed=5)
    b, zb = models.build("faster-dip-32", 3, (16, 16), seed=5)
    c, zc = models.build("faster-dip-32", 3, (16, 16), seed=6)
    assert torch.equal(za, zb) and not torch.equal(za, zc)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("changes,field", [
    ({"kind": "unet"}, "kind"), ({"lipschitz": 0}, "lipschitz"), ({"lipschitz": -1.0}, "lipschitz"),
    ({"norm": "layer"}, "norm"), ({"width": (8, 8, 8)}, "width"), ({"depth": 0}, "depth"),
    ({"pad": "mirror"}, "pad"), ({"upsampler": "none"}, "upsampler"), ({"upsampler": "bilinearr"}, "upsampler"),
    ({"upsampler": ("nearest", "cubic")}, "upsampler"), ({"factor": 1}, "factor"),
])
def test_bad_fields_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        models.ArchSpec(**{"depth": 2, **changes})


def test_unknown_preset_field_and_too_deep():
    with pytest.raises(ValueError, match="unknown preset"):
        models.preset("resnet")
    with pytest.raises(ValueError, match="unknown field"):
        models.ArchSpec.from_dict({"depht": 3})
    with pytest.raises(ValueError, match="depth"):
        models.build("ulyanov-dip", 3, (16, 16))


def test_fourier_input_is_sin_cos_pairs_of_uniform_phases():
    spec = models.ArchSpec(kind="decoder", depth=2, width=8, skip=0, input_noise="fourier", input_scale=1.0)
    z = models.make_input(spec, (32, 32), seed=4)
    half = spec.input_depth // 2
    assert z.shape == (1, spec.input_depth, 8, 8)
    torch.testing.assert_close(z[:, :half] ** 2 + z[:, half:] ** 2, torch.ones(1, half, 8, 8))
    phase = torch.atan2(z[:, :half], z[:, half:]).remainder(2 * torch.pi)
    expected = 2 * torch.pi * torch.rand((1, half, 8, 8), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(phase, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="input_depth"):
        spec.replace(input_depth=5)


def test_stem_adds_its_blocks_and_an_unbounded_output_is_free():
    base = models.ArchSpec(kind="decoder", depth=2, width=8, skip=0, lipschitz=1.0, norm="mean_only")
    plain = models.count_parameters(models.build(base, 3, (16, 16))[0])
    stem = models.count_parameters(models.build(base.replace(stem=2), 3, (16, 16))[0])
    # The first block then maps 8 → 8 instead of 32 → 8 channels, and two 32 → 8, 8 → 8 blocks come first.
    block = lambda cin: cin * 8 * 9 + 8 + 8  # conv weight and bias, mean-only BN bias
    assert stem - plain == block(32) + block(8) + block(8) - block(32)
    net, _ = models.build(base.replace(bound_output=False), 3, (16, 16))
    assert net[-1][0].lipschitz is None and net[-2][0].lipschitz == 1.0
    with pytest.raises(ValueError, match="stem"):
        models.ArchSpec(kind="hourglass", stem=1)


def test_one_padding_vocabulary_and_old_spec_files_still_load():
    spec = models.ArchSpec(kind="decoder", depth=2, width=8, skip=0, pad="zero")  # the name spec files used before
    assert spec.pad == "zeros" and models.preset("convdecoder").pad == "zeros"
    with pytest.raises(ValueError, match="reflect, zeros"):
        models.ArchSpec(kind="decoder", depth=2, width=8, skip=0, pad="circle")


def test_a_spec_holds_a_filter_specification_and_builds_what_its_file_would(tmp_path):
    spec = models.preset("controlled-64").replace(upsampler={"kind": "gaussian", "sigma": 0.7})
    again = models.load_spec(tomllib.loads(spec.to_toml()) | {"lipschitz": spec.lipschitz})
    assert again == spec and json.loads(spec.to_json())["upsampler"] == {"kind": "gaussian", "sigma": 0.7}
    path = tmp_path / "g.toml"
    path.write_text('name = "g"\nkind = "gaussian"\nfactor = 2\nsigma = 0.7\n')
    held, _ = models.build(spec, 1, (16, 16), seed=3)
    filed, _ = models.build(spec.replace(upsampler=str(path)), 1, (16, 16), seed=3)
    z = torch.rand(1, 32, 4, 4)
    torch.testing.assert_close(held(z), filed(z))
    with pytest.raises(ValueError, match=r"arch.upsampler: filter specification .*sigma"):
        spec.replace(upsampler={"kind": "gaussian", "sigma": -1.0})
