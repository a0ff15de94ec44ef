"""Every bad input through the CLI entry point: exit 2, one line on stderr, no traceback, no new files.

The table holds the inputs the reliability issue found broken (tracebacks, files left behind,
values accepted that should not be) beside the ones that already worked, for every command group.
Each case runs ``archlab.cli.main`` in an empty folder holding only the fixtures below; afterwards the
folder must hold exactly the fixtures. A few cases check the message further (the flag named, a
password hidden). Images of every mode (grey, grey+alpha, RGBA, 16-bit, palette) must still work.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archlab.cli import main, redact

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--iterations", "3", "--eval-every", "1", "--size", "32", "--arch", "faster-dip-32"]
DEEP_STUDY = """
name = "too-deep"
[[tasks]]
task = "denoise"
[[images]]
source = "astronaut"
size = 32
[arch]
kind = "hourglass"
depth = 2
width = 4
[fit]
iterations = 10
eval_every = 5
window = 10
[space]
depth = [2, 5]
[objectives]
peak_psnr = "maximize"
"""


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    """A folder of bad inputs: a plain file, empty/junk/truncated/1x1/large images, bad TOML files."""
    folder = tmp_path_factory.mktemp("fixtures")
    (folder / "afile").write_text("not a folder")
    (folder / "empty.png").write_bytes(b"")
    (folder / "junk.png").write_bytes(b"not an image at all")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(folder / "dot.png")
    noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(folder / "whole.png")
    data = (folder / "whole.png").read_bytes()
    (folder / "trunc.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.zeros((1100, 1100), np.uint8)).save(folder / "big.png")  # > 1,048,576 pixels
    (folder / "deep.toml").write_text(DEEP_STUDY)
    (folder / "badkey.toml").write_text(DEEP_STUDY.replace("[space]", "colour = 1\n[space]"))
    (folder / "broken.toml").write_text("name = [unclosed")
    (folder / "infsigma.toml").write_text(DEEP_STUDY.replace('task = "denoise"', 'task = "denoise"\nsigma = inf'))
    (folder / "spec.toml").write_text('kind = "hourglass"\nwdith = 8\n')
    (folder / "filter.toml").write_text('name = "x"\nkind = "nonsense"\nfactor = 2\n')
    (folder / "occupied").mkdir()
    (folder / "occupied" / "notes.txt").write_text("a user's file")
    return folder


# (arguments, a piece of the message). {f} is the fixtures folder.
CASES = [
    # the command line itself
    ([], "required: COMMAND"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["--threads", "0", "filters", "list"], "--threads"),
    (["--threads", "x", "filters", "list"], "--threads"),
    (["--threads", "4096", "filters", "list"], "--threads"),
    (["filters", "list", "--threads", "-1"], "--threads"),
    (["reproduce", "bogus", "-o", "out"], "invalid choice"),
    # restore: argument errors, one line naming the flag and the allowed values
    (["restore", "--task", "bogus"], "choose from"),
    (["restore", "--size", "x"], "--size: 'x' is invalid; expected an integer"),
    (["restore", "--iterations", "1.5"], "--iterations"),
    (["restore", "--lr", "abc"], "--lr"),
    (["restore", "--seed", "x"], "--seed"),
    (["restore", "--max-pixels", "x"], "--max-pixels"),
    (["restore", "--image", "camera", "--observed", "x.png"], "not allowed with argument --image"),
    (["restore", "--no-such-flag"], "unrecognized arguments"),
    # restore: values
    (["restore", "--arch", "resnet"], "unknown preset"),
    (["restore", "--arch", "{f}/missing.toml"], "not found"),
    (["restore", "--arch", "{f}/spec.toml"], "wdith"),
    (["restore", "--sigma", "-3"], "sigma"),
    (["restore", "--sigma", "nan"], "sigma"),
    (["restore", "--sigma", "inf"], "--sigma: inf is invalid"),
    (["restore", "--sigma", "inf", "--no-clip"], "--sigma: inf is invalid"),
    (["restore", "--task", "denoise", "--quality", "10"], "--quality"),
    (["restore", "--task", "jpeg", "--quality", "120"], "quality"),
    (["restore", "--task", "jpeg", "--quality", "0"], "quality"),
    (["restore", "--task", "inpaint", "--ratio", "1.5"], "ratio"),
    (["restore", "--task", "inpaint", "--mask", "bernoulli", "--ratio", "0.3"], "--ratio: only used with --mask"),
    (["restore", "--task", "inpaint", "--mask", "center", "--drop", "0.3"], "--drop: only used with --mask bernoulli"),
    (["restore", "--task", "inpaint", "--mask", "{f}/missing.png"], "missing.png"),
    (["restore", "--task", "sr", "--factor", "1"], "factor"),
    (["restore", "--task", "sr", "--factor", "0"], "factor"),
    (["restore", "--task", "poisson", "--scale", "0"], "scale"),
    (["restore", "--task", "poisson", "--scale", "-1"], "scale"),
    (["restore", "--arch", "ulyanov-dip", "--size", "32"], "depth"),
    (["restore", "--size", "1"], "--size"),
    (["restore", "--size", "-5"], "--size"),
    (["restore", "--iterations", "0"], "--iterations"),
    (["restore", "--iterations", "-3"], "--iterations"),
    (["restore", "--eval-every", "0"], "--eval-every: 0 is invalid"),
    (["restore", "--eval-every", "-1"], "--eval-every"),
    (["restore", "--eval-every", "3"], "a divisor of the stop rules' window"),
    (["restore", "--lr", "nan"], "lr"),
    (["restore", "--lr", "0"], "lr"),
    (["restore", "--lr", "-1"], "lr"),
    (["restore", "--ema", "1"], "ema"),
    (["restore", "--ema", "-0.1"], "ema"),
    (["restore", "--ema", "nan"], "ema"),
    (["restore", "--device", "bogus"], "--device: 'bogus' is invalid"),
    (["restore", "--max-pixels", "0"], "--max-pixels"),
    (["restore", "--lr", "inf", "--size", "64", "--iterations", "3", "-o", "out"], "diverged at iteration 3"),
    (["restore", "--arch", "studied", "--lr", "inf", "--size", "64", "--iterations", "3", "-o", "out"],
     "diverged at iteration 3"),
    (["restore", *FAST, "--iterations", "2", "--eval-every", "2", "--lr", "1e30"], "diverged at iteration 2"),
    # restore: files
    (["restore", "-o", "{f}/afile"], "is a file"),
    (["restore", "-o", "{f}/occupied"], "holds files"),
    (["restore", "-o", "{f}/afile/sub"], "-o"),
    (["restore", "-o", "."], "current folder"),
    (["restore", "-o", ".."], "current folder"),
    (["restore", "--image", "no_such_image.png"], "neither a file nor a built-in"),
    (["restore", "--observed", "no_such_image.png"], "neither a file nor a built-in"),
    (["restore", "--image", "{f}/big.png", "--size", "0"], "--max-pixels 1,048,576"),
    (["restore", "--observed", "{f}/big.png"], "--max-pixels 1,048,576"),
    (["restore", "--task", "sr", "--factor", "2", "--observed", "{f}/whole.png", "--max-pixels", "10000"],
     "128x128 output"),
    (["restore", "--image", "{f}/trunc.png"], "trunc.png"),
    (["restore", "--observed", "{f}/trunc.png"], "trunc.png"),
    (["restore", "--observed", "{f}/empty.png"], "empty"),
    (["restore", "--observed", "{f}/junk.png"], "cannot read"),
    (["restore", "--observed", "{f}/dot.png"], "1x1"),
    (["restore", "--image", "{f}/afile"], "cannot read"),
    # spectral
    (["spectral"], "required: SUBCOMMAND"),
    (["spectral", "bogus"], "invalid choice"),
    (["spectral", "fbc", "--device", "bogus"], "--device"),
    (["spectral", "fbc", *FAST, "--iterations", "2", "--eval-every", "2", "--lr", "inf", "-o", "fbc"],
     "diverged at iteration 2"),
    (["spectral", "fbc", "--bands", "-1", *FAST], "fbc_bands"),
    (["spectral", "fbc", "-o", "{f}/afile"], "is a file"),
    (["spectral", "psd", "{f}/missing.png"], "missing.png"),
    (["spectral", "psd"], "required: IMAGE"),
    (["spectral", "trajectory", "{f}/missing.png", "--iterations", "2"], "missing.png"),
    (["spectral", "lipschitz", "--lambdas", "0", "--iterations", "2"], "lipschitz"),
    (["spectral", "sinusoid", "--length", "0", "--iterations", "2"], "length"),
    # filters
    (["filters"], "required: SUBCOMMAND"),
    (["filters", "show", "NOPE"], "unknown name 'NOPE'"),
    (["filters", "show", "{f}/filter.toml"], "kind"),
    (["filters", "show", "L-60", "--stopband-edge", "2"], "stopband"),
    (["filters", "plot", "NOPE", "-o", "x.png"], "unknown name 'NOPE'"),
    (["filters", "list", "extra"], "unrecognized arguments"),
    # recommend and texture
    (["recommend", "{f}/missing.png"], "missing.png"),
    (["recommend", "{f}/trunc.png"], "trunc.png"),
    (["recommend", "camera", "--task", "bogus"], "invalid choice"),
    (["recommend", "camera", "--sigma", "inf"], "--sigma"),
    (["texture", "features", "{f}/missing.png"], "missing.png"),
    (["texture", "features", "camera", "--noise-sigma", "-1"], "--noise-sigma"),
    (["texture", "cv", "--table", "{f}/missing.csv"], "missing.csv"),
    (["texture", "cv", "--train-sigmas", "a,b"], "--train-sigmas"),
    (["texture", "cv", "--folds", "1"], "n_splits"),
    # study
    (["study"], "required: SUBCOMMAND"),
    (["study", "run"], "required: study"),
    (["study", "show", "NOPE"], "unknown study 'NOPE'"),
    (["study", "show", "{f}/badkey.toml"], "unknown key 'colour'"),
    (["study", "show", "{f}/broken.toml"], "cannot parse"),
    (["study", "run", "{f}/infsigma.toml", "--storage", "sqlite:///s.db"], "tasks[0].sigma: inf is invalid"),
    (["study", "run", "NOPE"], "unknown study 'NOPE'"),
    (["study", "run", "{f}/deep.toml", "--storage", "sqlite:///s.db"], "space.depth = 5"),
    (["study", "run", "quick-demo", "--storage", "sqlite:////no/such/dir/x.db"], "does not exist"),
    (["study", "run", "quick-demo", "--storage", "sqlite:///{f}/occupied"], "is a folder"),
    (["study", "run", "quick-demo", "--storage", "mysql://user@host/db"], "allowed: sqlite:///FILE"),
    (["study", "run", "quick-demo", "--storage", "not a url"], "storage"),
    (["study", "run", "quick-demo", "--storage", "postgresql://user:secret@127.0.0.1:9/db"], "cannot open"),
    (["study", "run", "quick-demo", "--storage", "postgresql+nodriver://u:secret@h/db"], "storage"),
    (["study", "run", "quick-demo", "--n-trials", "0"], "--n-trials: '0' is invalid"),
    (["study", "run", "quick-demo", "--n-trials", "-1"], "--n-trials"),
    (["study", "run", "quick-demo", "--timeout", "0"], "--timeout"),
    (["study", "run", "quick-demo", "--heartbeat", "0"], "--heartbeat"),
    (["study", "run", "quick-demo", "--artifacts", "{f}/afile", "--storage", "sqlite:///s.db"], "is a file"),
    (["study", "run", "quick-demo", "--device", "bogus"], "--device"),
    (["study", "report", "UNKNOWN", "--storage", "sqlite:///r.db"], "does not exist"),
    (["study", "report", "quick-demo", "--format", "bogus"], "invalid choice"),
    (["study", "dashboard"], "give a study"),
    (["study", "dashboard", "--storage", "sqlite:///nope.db"], "does not exist"),
]


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("args,needle", CASES, ids=[" ".join(a)[:60] or "(none)" for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_no_files(fixtures, tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{f}", str(fixtures)) for a in args]
    before_fixtures, before_here = _tree(fixtures), _tree(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("archlab") and "Traceback" not in err
    assert needle.replace("{f}", str(fixtures)) in err, err
    assert "secret" not in err + captured.out
    assert _tree(tmp_path) == before_here and _tree(fixtures) == before_fixtures


def test_redact_hides_passwords():
    assert redact("cannot open postgresql://ann:s3cret@db.example/x: refused") == \
        "cannot open postgresql://ann:***@db.example/x: refused"
    assert redact("sqlite:///a.db and postgresql://ann@host/db") == "sqlite:///a.db and postgresql://ann@host/db"


def test_argument_errors_through_the_console_script_are_one_line():
    """The real entry point (``python -m archlab``) and an argparse error: no usage block."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "archlab", "restore", "--task", "bogus"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "archlab restore: error: argument --task: invalid choice: 'bogus' "
        "(choose from 'denoise', 'enhance', 'inpaint', 'jpeg', 'poisson', 'sr')"]


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "I;16"])
def test_every_image_mode_restores(tmp_path, capsys, mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray((rng.random((32, 32)) * 65535).astype(np.uint16))
    else:
        image = Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).convert(mode)
    image.save(tmp_path / "in.png")
    for flag in ("--image", "--observed"):
        out = tmp_path / f"out{flag}"
        assert main(["restore", flag, str(tmp_path / "in.png"), *FAST, "-o", str(out)]) == 0, capsys.readouterr().err
        summary = json.loads((out / "summary.json").read_text())
        assert summary["iterations"] == 3 and summary["interrupted"] is False
    assert Image.open(tmp_path / "out--image" / "restored.png").mode == ("L" if mode in ("L", "LA", "I;16") else "RGB")


def test_summary_json_is_strict_json_with_reasons(tmp_path):
    """No NaN/Infinity in the outputs: a value that is not finite is null with a reason beside it."""
    out = tmp_path / "o"
    assert main(["restore", "--observed", "camera", *FAST, "-o", str(out)]) == 0
    text = (out / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    assert summary["interrupted"] is False
    json.loads((out / "spec.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in spec.json"))


def test_an_earlier_output_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "o"
    assert main(["restore", *FAST, "--task", "sr", "--factor", "2", "-o", str(out)]) == 0
    assert (out / "baseline_bicubic.png").is_file()
    assert main(["restore", *FAST, "-o", str(out)]) == 0
    assert not (out / "baseline_bicubic.png").exists()  # nothing of the earlier run is left in the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no temporary folder either


def test_threads_are_set_before_the_command(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    try:
        assert main(["--threads", "1", "restore", *FAST]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_default_threads_leave_the_busy_cores_alone(monkeypatch):
    from archlab.cli import default_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert [default_threads(load) for load in (0.0, 1.4, 2.6, 3.9, 7.0)] == [4, 3, 1, 1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert default_threads(0.0) == 2 and default_threads(3.0) == 1


def test_study_defaults_agree_with_the_library():
    from archlab import studies
    from archlab.cli import study

    assert (study.HEARTBEAT_INTERVAL, study.GRACE_PERIOD) == (studies.HEARTBEAT_INTERVAL, studies.GRACE_PERIOD)


def test_summaries_agree_with_the_command_modules():
    """``archlab --help`` lists the groups from ``GROUPS`` without importing them; the modules say the same."""
    from archlab.cli import GROUPS, build_parser

    full = build_parser()
    choices = {a.dest: a.help for a in full.commands._choices_actions}
    assert choices == GROUPS


#: One-line errors and listings that must not load torch (importing it alone costs ~1.5-3.5 s of CPU here).
LIGHT = [
    ["--help"], ["filters", "list"], ["study", "list"], ["study", "show", "no-such-study"], ["study", "run"],
    ["restore", "--size", "x"], ["restore", "--task", "nope"], ["restore", "--iterations", "0"], ["restore", "--restarts", "0"],
    ["restore", "--device", "bogus"], ["restore", "-o", "README.md"], ["restore", "--task", "sr", "--sigma", "5"],
    ["recommend"], ["recommend", "no-such-image.png"], ["spectral", "fbc", "--iterations", "0"],
    ["spectral", "sinusoid", "--delta", "x"], ["reproduce", "nope", "-o", "x"], ["texture", "features", "nope.png"],
    ["texture", "cv", "--folds", "x"],
]


def test_one_line_errors_and_listings_do_not_load_torch(tmp_path):
    script = ("import json, sys\nfrom archlab.cli import main\nout = []\nfor argv in json.loads(sys.argv[1]):\n"
              "    code = main(argv)\n    out.append([argv, code, 'torch' in sys.modules])\nprint(json.dumps(out))\n")
    for argv in LIGHT:  # one fresh interpreter per case: an earlier case must not have loaded torch for it
        done = subprocess.run([sys.executable, "-c", script, json.dumps([argv])], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
        (_, code, torch_loaded), = json.loads(done.stdout.strip().splitlines()[-1])
        assert code in (0, 2) and not torch_loaded, (argv, code, done.stderr[-500:])
