"""Tests of archlab.filters (design, responses, summaries, catalogue), the report figure and `archlab filters`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tomllib

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import signal

from archlab import filters
from archlab.cli import main
from archlab.filters import Filter, design
from archlab.report import plot_filter_responses

CATALOGUE = {"nearest", "bilinear", "bicubic", "lanczos3", "bed-of-nails", "gauss-0.1", "gauss-0.5", "gauss-1.0",
             "L14", "L15", "L-60", "L-100", "kaiser-60", "kaiser-100"}
PUBLISHED_L14 = [-0.0054, -0.0518, 0.2554, 0.6036, 0.2554, -0.0518, -0.0054]

# Measured once with Filter.summary() on each filter's bands as its catalogue file stores them (the split
# 0.25 of zero insertion for the kernels, L14 and L15; 0.133/0.327 for L-60 and 0.25/0.251 for L-100, the
# main lobes of their Kaiser designs; 0.175/0.325 for the Kaiser designs): dc_gain, passband_edge,
# passband_ripple_db, stopband_edge, stopband_attenuation_db, stopband_mean_attenuation_db, cutoff_3db,
# replica_center_db.
MEASURED = {
    "L-100": (2.0, 0.25, 101.9382, 0.251, 91.1789, 102.8818, 0.0596, -112.5720),
    "L-60": (2.0, 0.133, 0.0301, 0.327, 50.1865, 57.7824, 0.2066, -59.5769),
    "L14": (2.0, 0.25, 3.0092, 0.25, 3.0092, 8.9794, 0.2500, -12.5870),
    "L15": (2.0, 0.25, 3.0092, 0.25, 3.0092, 10.0931, 0.2500, -17.4800),
    "bed-of-nails": (2.0, 0.25, 0.0, 0.25, 0.0, 0.0, math.nan, 0.0),
    "bicubic": (2.0, 0.25, 6.2648, 0.25, 6.2648, 14.2435, 0.2005, -23.5369),
    "bilinear": (2.0, 0.25, 9.0309, 0.25, 9.0309, 16.8370, 0.1501, -25.0296),
    "gauss-0.1": (2.0, 0.25, 0.0001, 0.25, 0.0001, 0.0001, math.nan, -0.0001),
    "gauss-0.5": (2.0, 0.25, 10.6436, 0.25, 10.6436, 18.4316, 0.1363, -24.8419),
    "gauss-1.0": (2.0, 0.25, math.inf, 0.25, 17.4415, 20.6132, 0.0995, -24.1030),
    "kaiser-100": (2.0, 0.175, 0.0002, 0.325, 100.4471, 107.8757, 0.2379, -107.9691),
    "kaiser-60": (2.0, 0.175, 0.0142, 0.325, 60.2076, 69.6965, 0.2350, -66.5112),
    "lanczos3": (2.0, 0.25, 6.1079, 0.25, 5.9879, 15.8942, 0.2201, -39.5369),
    "nearest": (2.0, 0.25, 3.0103, 0.25, 3.0103, 7.4067, 0.2500, -8.3432),
}
KEYS = ("dc_gain", "passband_edge", "passband_ripple_db", "stopband_edge", "stopband_attenuation_db",
        "stopband_mean_attenuation_db", "cutoff_3db", "replica_center_db")


@pytest.fixture(autouse=True)
def _no_user_filters(tmp_path_factory, monkeypatch):
    """The catalogue as shipped: no user folder from the environment of whoever runs the tests."""
    monkeypatch.setenv("ARCHLAB_FILTERS", "")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))



def upsample(x: np.ndarray, flt: Filter) -> np.ndarray:
    """Zero insertion then the filter, its centre (s - 1) / 2 samples after each nail (REFERENCE §1)."""
    s = flt.factor
    nails = np.zeros(s * len(x))
    nails[::s] = x
    full = np.convolve(nails, flt.taps)
    shift = (len(flt.taps) - s) // 2
    return full[shift:shift + s * len(x)]


@pytest.mark.parametrize("kind, factor, params, expected", [
    ("nearest", 2, {}, [1, 1]),
    ("nearest", 3, {}, [1, 1, 1]),
    ("linear", 2, {}, [0.25, 0.75, 0.75, 0.25]),
    ("linear", 3, {}, [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3]),
    ("cubic", 2, {}, [-0.0234375, -0.0703125, 0.2265625, 0.8671875, 0.8671875, 0.2265625, -0.0703125, -0.0234375]),
    ("gaussian", 2, {"sigma": 0}, [0, 0, 2, 0, 0]),
    ("gaussian", 3, {"sigma": 0, "taps": 3}, [0, 3, 0]),
])
def test_kernel_taps_by_hand(kind, factor, params, expected):
    flt = design(kind, factor, **params)
    np.testing.assert_allclose(flt.taps, expected, rtol=0, atol=1e-15)
    assert flt.taps.dtype == np.float64 and flt.factor == factor and flt.taps.sum() == pytest.approx(factor)


def test_gaussian_taps_follow_paper_000():
    flt = design("gaussian", 2, sigma=0.5, taps=7)
    k = np.arange(-3, 4)
    g = np.exp(-((k / 2) ** 2) / (2 * 0.5**2))
    np.testing.assert_allclose(flt.taps, 2 * g / g.sum(), rtol=1e-14)
    assert len(design("gaussian", 2, sigma=0.5).taps) == 5


@pytest.mark.parametrize("s", [2, 3, 4])
def test_nearest_response_is_the_dirichlet_kernel(s):
    f, h = design("nearest", s).response(513)
    with np.errstate(invalid="ignore", divide="ignore"):
        dirichlet = np.where(f == 0, s, np.sin(np.pi * s * f) / np.sin(np.pi * f))
    np.testing.assert_allclose(np.abs(h), np.abs(dirichlet), rtol=0, atol=1e-9)
    assert len(f) == 513 and f[0] == 0 and f[-1] == 0.5 and np.iscomplexobj(h)


@pytest.mark.parametrize("s", [3, 5])
def test_odd_linear_response_is_dirichlet_squared_over_s(s):
    f, h = design("linear", s).response(257)
    with np.errstate(invalid="ignore", divide="ignore"):
        dirichlet = np.where(f == 0, s, np.sin(np.pi * s * f) / np.sin(np.pi * f))
    np.testing.assert_allclose(np.abs(h), dirichlet**2 / s, rtol=0, atol=1e-9)


def test_half_pixel_bilinear_response_is_cos_cubed():
    f, h = design("linear", 2).response(257)
    np.testing.assert_allclose(np.abs(h), 2 * np.abs(np.cos(np.pi * f)) ** 3, rtol=0, atol=1e-9)


def test_gaussian_response_is_the_cosine_sum_with_linear_phase():
    flt = design("gaussian", 2, sigma=0.5)
    f, h = flt.response(301)
    g = flt.taps
    amplitude = g[2] + 2 * (g[3] * np.cos(2 * np.pi * f) + g[4] * np.cos(4 * np.pi * f))
    np.testing.assert_allclose(h, np.exp(-2j * np.pi * f * flt.delay) * amplitude, rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode, kind, s", [("nearest", "nearest", 2), ("nearest", "nearest", 3),
                                           ("linear", "linear", 2), ("linear", "linear", 3)])
def test_alignment_matches_torch_interpolate(mode, kind, s):
    x = np.random.default_rng(0).random(24)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    ref = F.interpolate(torch.from_numpy(x)[None, None], scale_factor=s, mode=mode, **kwargs)[0, 0].numpy()
    ours = upsample(x, design(kind, s))
    np.testing.assert_allclose(ours[2 * s:-2 * s], ref[2 * s:-2 * s], atol=1e-12)


def test_cubic_matches_torch_bicubic_with_its_a():
    x = np.random.default_rng(1).random(24)
    ref = F.interpolate(torch.from_numpy(x)[None, None, None], scale_factor=(1, 2), mode="bicubic",
                        align_corners=False)[0, 0, 0].numpy()
    ours = upsample(x, design("cubic", 2, a=-0.75))
    np.testing.assert_allclose(ours[8:-8], ref[8:-8], atol=1e-12)


@pytest.mark.parametrize("resample, kind, params, s", [
    (Image.Resampling.BICUBIC, "cubic", {}, 2), (Image.Resampling.BICUBIC, "cubic", {}, 3),
    (Image.Resampling.LANCZOS, "lanczos", {"a": 3}, 2), (Image.Resampling.LANCZOS, "lanczos", {"a": 3}, 3),
])
def test_cubic_and_lanczos_match_pil(resample, kind, params, s):
    x = np.random.default_rng(2).random(32).astype(np.float32)
    ref = np.asarray(Image.fromarray(x[None]).resize((s * len(x), 1), resample))[0]
    ours = upsample(x.astype(np.float64), design(kind, s, **params))
    margin = 4 * s
    np.testing.assert_allclose(ours[margin:-margin], ref[margin:-margin], atol=2e-6)


def test_summary_closed_forms():
    nearest, linear = design("nearest").summary(), design("linear").summary()
    assert nearest["dc_gain"] == 2.0
    assert nearest["cutoff_3db"] == pytest.approx(0.25, abs=1e-10)
    assert nearest["stopband_attenuation_db"] == pytest.approx(10 * np.log10(2), abs=1e-9)
    assert nearest["passband_ripple_db"] == pytest.approx(10 * np.log10(2), abs=1e-9)
    assert nearest["replica_center_db"] == pytest.approx(20 * np.log10(np.cos(3 * np.pi / 8)), abs=1e-9)
    assert linear["cutoff_3db"] == pytest.approx(np.arccos(2 ** (-1 / 6)) / np.pi, abs=1e-10)
    assert linear["stopband_attenuation_db"] == pytest.approx(30 * np.log10(2), abs=1e-9)
    assert linear["replica_center_db"] == pytest.approx(60 * np.log10(np.cos(3 * np.pi / 8)), abs=1e-9)
    assert design("nearest").summary(stopband_edge=0.4)["stopband_attenuation_db"] == pytest.approx(
        -20 * np.log10(np.cos(0.4 * np.pi)), abs=1e-9)


def test_passband_null_gives_infinite_ripple():
    flt = design("gaussian", sigma=1.0)
    f, h = flt.response(4097)
    assert np.abs(h[f <= 0.25]).min() < 1e-2
    assert flt.summary()["passband_ripple_db"] == math.inf


@pytest.mark.parametrize("kind", ["kaiser", "equiripple", "least_squares"])
@pytest.mark.parametrize("attenuation, width", [(60, 0.1), (100, 0.15)])
def test_designed_filters_meet_their_spec(kind, attenuation, width):
    flt = design(kind, 2, attenuation_db=attenuation, transition_width=width)
    assert len(flt.taps) % 2 == 1 and flt.taps.sum() == pytest.approx(2.0, abs=1e-12)
    np.testing.assert_array_equal(flt.taps, flt.taps[::-1])
    assert (flt.passband_edge, flt.stopband_edge) == pytest.approx((0.25 - width / 2, 0.25 + width / 2))
    f = np.linspace(flt.stopband_edge, 0.5, 20001)
    gain = 20 * np.log10(np.abs(signal.freqz(flt.taps, worN=f, fs=1.0)[1]) / 2)
    assert gain.max() <= -attenuation
    assert flt.summary()["stopband_attenuation_db"] >= attenuation
    assert flt.summary()["passband_ripple_db"] < 0.1


def test_kaiser_grows_kaiserord_length_until_the_spec_is_met():
    # kaiserord's estimate (39 taps) reaches only 59.25 dB; 41 taps (end taps zero, a half-band) meet it.
    flt = design("kaiser", 2, attenuation_db=60, transition_width=0.1)
    numtaps, beta = signal.kaiserord(60, 0.2)
    short = signal.firwin(numtaps | 1, 0.25, window=("kaiser", beta), fs=1.0)
    assert Filter("k", 2, 2 * short / short.sum(), stopband_edge=0.3).summary()["stopband_attenuation_db"] < 60
    ref = signal.firwin((numtaps | 1) + 2, 0.25, window=("kaiser", beta), fs=1.0)
    np.testing.assert_allclose(flt.taps, 2 * ref[1:-1] / ref.sum(), atol=1e-15)


@pytest.mark.parametrize("kind", ["equiripple", "least_squares"])
def test_attenuation_search_finds_a_short_length(kind):
    flt = design(kind, 2, attenuation_db=60, transition_width=0.1)
    shorter = design(kind, 2, numtaps=len(flt.taps) - 4, transition_width=0.1)
    assert shorter.summary()["stopband_attenuation_db"] < 60 <= flt.summary()["stopband_attenuation_db"]


@pytest.mark.parametrize("call, field", [
    (lambda: design("wavelet"), "kind"),
    (lambda: design("gaussian", sigma=-1), "sigma"),
    (lambda: design("gaussian"), "sigma"),
    (lambda: design("gaussian", sigma=0.5, taps=4), "taps"),
    (lambda: design("nearest", factor=1), "factor"),
    (lambda: design("nearest", factor=2.5), "factor"),
    (lambda: design("nearest", factor=True), "factor"),
    (lambda: design("taps", taps=[]), "taps"),
    (lambda: design("taps", taps=[0.5, float("nan"), 0.5]), "taps"),
    (lambda: design("taps", taps=[0.2, 0.3, 0.5]), "taps"),
    (lambda: design("taps", taps=[[1.0]]), "taps"),
    (lambda: design("taps", taps=[-1.0, 2.0, -1.0]), "taps"),
    (lambda: design("kaiser", attenuation_db=0, transition_width=0.1), "attenuation_db"),
    (lambda: design("kaiser", attenuation_db=-5, transition_width=0.1), "attenuation_db"),
    (lambda: design("kaiser", attenuation_db=60), "transition_width"),
    (lambda: design("kaiser", attenuation_db=60, transition_width=0.6), "transition_width"),
    (lambda: design("kaiser", attenuation_db=400, transition_width=0.1), "attenuation_db"),
    (lambda: design("equiripple", transition_width=0.1, numtaps=31, attenuation_db=60), "numtaps"),
    (lambda: design("equiripple", transition_width=0.1, numtaps=30), "numtaps"),
    (lambda: design("cubic", b=1), "b"),
    (lambda: design("lanczos", a=2.5), "a"),
    (lambda: Filter("x", 2, [1.5, 0.5]), "taps"),
    (lambda: Filter("x", 2, [1.0, 1.0, 1.0]), "taps"),
    (lambda: Filter.from_dict({"factor": 2}), "kind"),
])
def test_bad_specs_raise_value_errors_naming_the_field(call, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        call()


def test_unmet_spec_says_so():
    with pytest.raises(ValueError, match="cannot be met"):
        design("equiripple", attenuation_db=150, transition_width=0.001)


def test_published_taps_are_scaled_to_the_factor():
    flt = filters.get("L14")
    np.testing.assert_allclose(flt.taps, 2 * np.array(PUBLISHED_L14), rtol=1e-15)
    assert "scaled by 2/1 = 2" in flt.provenance
    assert "1.999998" in filters.get("L-60").provenance


def test_catalogue_names_and_round_trip():
    catalogue = filters.catalog()
    assert set(catalogue) == CATALOGUE and list(catalogue) == sorted(catalogue)
    for name, flt in catalogue.items():
        assert flt.name == name and flt.factor == 2
        data = json.loads(json.dumps(flt.to_dict()))
        assert Filter.from_dict(data) == flt
        np.testing.assert_array_equal(Filter.from_dict(data).taps, flt.taps)


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_catalogue_summaries_as_measured(name):
    summary = filters.get(name).summary()
    assert list(summary) == list(KEYS)
    for key, expected in zip(KEYS, MEASURED[name]):
        tolerance = 1e-4 if key == "cutoff_3db" else 0.01
        assert summary[key] == pytest.approx(expected, abs=tolerance, nan_ok=True), key


def test_designed_catalogue_entries_meet_their_attenuation():
    for name, attenuation in (("kaiser-60", 60), ("kaiser-100", 100)):
        flt = filters.get(name)
        assert flt.stopband_edge == pytest.approx(0.325)
        assert flt.summary()["stopband_attenuation_db"] >= attenuation


def test_get_reads_a_user_toml(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('kind = "gaussian"\nsigma = 0.5\nprovenance = "test"\n')
    flt = filters.get(str(path))
    assert flt.name == "mine"
    np.testing.assert_array_equal(flt.taps, design("gaussian", sigma=0.5).taps)
    assert filters.get(path) == flt and filters.get(flt) is flt


def test_get_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown name 'nope'.*nearest"):
        filters.get("nope")
    with pytest.raises(OSError):
        filters.get(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("kind = gaussian\n")
    with pytest.raises(ValueError, match="bad.toml: not valid TOML"):
        filters.get(bad)
    bad.write_text('kind = "gaussian"\nsigma = -1\n')
    with pytest.raises(ValueError, match="bad.toml: sigma: "):
        filters.get(bad)


def test_filter_is_immutable_and_centred():
    flt = filters.get("bilinear")
    with pytest.raises(dataclasses.FrozenInstanceError):
        flt.factor = 3
    with pytest.raises(ValueError):
        flt.taps[0] = 1.0
    assert flt.delay == 1.5 and filters.get("gauss-0.5").delay == 2.0
    assert hash(flt) == hash(filters.get("bilinear"))
    with pytest.raises(ValueError, match="^n: "):
        flt.response(1)


def test_l60_is_the_kaiser_design_its_bands_come_from():
    published = np.array(tomllib.loads((filters.catalogue_dir() / "L-60.toml").read_text())["taps"])
    kaiser = signal.firwin(17, 0.23, window=("kaiser", 4.5), fs=1.0)
    assert np.abs(published - kaiser).max() <= 5e-7  # equal to the 6 published decimals
    flt = filters.get("L-60")
    f, h = flt.response(200001)
    amplitude = np.real(h * np.exp(2j * np.pi * f * flt.delay))
    first_null = f[np.nonzero(np.diff(np.signbit(amplitude)))[0][0]]
    assert first_null == pytest.approx(flt.stopband_edge, abs=5e-4)
    assert flt.passband_edge == pytest.approx(2 * 0.23 - flt.stopband_edge, abs=1e-9)
    summary = flt.summary()  # named for 60 dB: 57.8 dB mean power, 50.2 dB at the first side lobe, 59.6 dB at 0.375
    assert 57 < summary["stopband_mean_attenuation_db"] < 60
    assert -summary["replica_center_db"] == pytest.approx(60, abs=1)


def test_mean_attenuation_is_the_integral_of_the_power_response():
    for flt in (filters.get("L-60"), design("linear"), design("kaiser", attenuation_db=60, transition_width=0.1)):
        low = flt.edges[1]
        f = np.linspace(low, 0.5, 200001)
        power = np.abs(signal.freqz(flt.taps, worN=f, fs=1.0)[1] / flt.factor) ** 2
        mean = np.sum((power[1:] + power[:-1]) / 2) * (f[1] - f[0]) / (0.5 - low)
        assert flt.summary()["stopband_mean_attenuation_db"] == pytest.approx(-10 * np.log10(mean), abs=1e-6)


def test_edges_may_be_stored_with_any_kind_and_a_band_may_be_empty():
    flt = Filter.from_dict({"kind": "nearest", "factor": 2, "passband_edge": 0.1, "stopband_edge": 0.4})
    assert flt.edges == (0.1, 0.4) and flt.summary()["stopband_edge"] == 0.4
    assert Filter.from_dict(flt.to_dict()) == flt
    assert design("nearest").edges == Filter("n", 2, [1.0, 1.0], "", 0.25, 0.25).edges
    with pytest.raises(ValueError, match="^passband_edge: 0.3 must not exceed stopband_edge 0.2"):
        Filter("x", 2, [1.0, 1.0], "", 0.3, 0.2)


def test_a_user_folder_adds_filters_by_name(tmp_path, monkeypatch):
    mine, config = tmp_path / "mine", tmp_path / "config"
    (config / "archlab" / "filters").mkdir(parents=True)
    mine.mkdir()
    (mine / "soft.toml").write_text('kind = "gaussian"\nsigma = 0.8\nprovenance = "mine"\n')
    (config / "archlab" / "filters" / "boxy.toml").write_text('kind = "nearest"\nfactor = 3\n')
    monkeypatch.setenv("ARCHLAB_FILTERS", str(mine))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    assert filters.user_dirs() == [mine, config / "archlab" / "filters"]
    assert {"soft", "boxy"} <= set(filters.names()) and CATALOGUE <= set(filters.names())
    assert filters.get("soft") == design("gaussian", sigma=0.8, name="soft", provenance="mine")
    assert filters.get("boxy").factor == 3 and filters.source("soft") == str(mine / "soft.toml")
    assert filters.source("L-60") == "shipped"
    from archlab.models import ArchSpec
    assert ArchSpec(upsampler="soft").upsampler == "soft"  # a user's filter is a valid upsampler by name
    (mine / "L-60.toml").write_text('kind = "nearest"\n')
    with pytest.raises(ValueError, match="filter: 'L-60' is defined twice"):
        filters.get("L-60")
    assert main(["filters", "list"]) == 2


def test_cli_design_writes_a_filter_that_works_by_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARCHLAB_FILTERS", str(tmp_path / "catalogue"))
    out = tmp_path / "k70.toml"
    argv = ["filters", "design", "kaiser", "--attenuation", "70", "--transition-width", "0.1", "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "stopband attenuation, minimum on [0.3, 0.5] (dB)" in printed
    flt = filters.get(str(out))
    assert flt.name == "k70" and flt.summary()["stopband_attenuation_db"] >= 70
    assert tomllib.loads(out.read_text())["kind"] == "kaiser"  # the specification, not only taps
    assert main(argv) == 2 and "exists" in capsys.readouterr().err
    assert main(["filters", "design", "gaussian", "--sigma", "0.7", "--user", "soft7"]) == 0
    capsys.readouterr()
    assert filters.get("soft7").taps == pytest.approx(design("gaussian", sigma=0.7).taps)
    assert main(["filters", "show", "soft7"]) == 0 and "soft7" in capsys.readouterr().out
    assert main(["filters", "design", "nearest", "--user", "nearest"]) == 2
    assert "already a catalogue filter" in capsys.readouterr().err
    assert main(["filters", "design", "nearest", "--attenuation", "3", "-o", str(tmp_path / "x.toml")]) == 2
    assert "attenuation_db: not a parameter of kind 'nearest'" in capsys.readouterr().err
    assert not (tmp_path / "x.toml").exists()


def test_the_catalogue_needs_no_scipy():
    # `archlab filters list` must start fast: responses, summaries and Kaiser designs are numpy only
    code = "import sys, archlab.filters as f; [x.summary() for x in f.catalog().values()]; print('scipy' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr


def test_cli_list_and_show(capsys):
    assert main(["filters", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in CATALOGUE)
    row = next(line for line in out.splitlines() if line.startswith("L-60 "))
    assert row.split() == ["L-60", "2", "17", "[0,", "0.133]", "0.03", "[0.327,", "0.5]", "50.19", "57.78", "0.2066",
                           "shipped"]
    assert "Bands in cycles per output sample" in out
    assert main(["filters", "show", "L-60"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"stopband attenuation, mean power on \[0.327, 0.5\] \(dB\) +57.7824\n", out)
    assert "50.1865" in out and "-59.5769" in out and "1.999998" in out and "firwin(17, 0.23" in out
    assert main(["filters", "show", "L-60", "--stopband-edge", "0.25"]) == 0
    assert re.search(r"stopband attenuation, minimum on \[0.25, 0.5\] \(dB\) +9.8693\n", capsys.readouterr().out)
    assert main(["filters", "show", "nope"]) == 2
    assert "unknown name 'nope'" in capsys.readouterr().err


def test_cli_plot(tmp_path, monkeypatch, capsys):
    out = tmp_path / "two.png"
    assert main(["filters", "plot", "nearest", "L-60", "-o", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 600
    matplotlib.rcParams["svg.fonttype"] = "none"  # keep the SVG's text as text
    try:
        assert main(["filters", "plot", "nearest", "-o", str(tmp_path / "one.svg")]) == 0
    finally:
        matplotlib.rcParams["svg.fonttype"] = "path"
    svg = (tmp_path / "one.svg").read_text()
    assert "frequency (cycles per output sample, 0.5 = output Nyquist)" in svg and "rad" not in svg
    assert main(["filters", "plot", "nearest", "-o", str(tmp_path / "one.pdf")]) == 0
    assert (tmp_path / "one.pdf").read_bytes().startswith(b"%PDF")
    assert main(["filters", "plot", "nearest", "-o", str(tmp_path / "one.gif")]) == 2
    for name in ("one.svg", "one.pdf"):
        (tmp_path / name).unlink()
    monkeypatch.chdir(tmp_path)
    assert main(["filters", "plot"]) == 0
    assert (tmp_path / "filters.png").stat().st_size > 10_000
    assert main(["filters", "plot", "nearest", "nope", "-o", "failed.png"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["filters.png", "two.png"]


def test_plot_refuses_mixed_factors(tmp_path):
    with pytest.raises(ValueError, match="one factor per plot"):
        plot_filter_responses([design("nearest", 2), design("nearest", 3)], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
