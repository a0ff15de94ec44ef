"""Study reports and figures: the Reproduce line, the stop column, importances, LaTeX that compiles, figure files.

Studies here run with a stand-in for the fit (closed-form PSNR curves) so each takes seconds; the LaTeX
document is compiled with pdflatex where one is installed (Debian: texlive-latex-base and
texlive-latex-recommended), else only its structure is checked.
"""

import shutil
import subprocess

import matplotlib
import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from matplotlib.axes import Axes

from archlab import report, studies
from archlab.fitting import FitResult
from archlab.studies import worker
from studyfiles import study_toml

STUDY = study_toml("rep", description="λ against the upsampler, denoising σ = 25 at ¼ scale (64 × 64 ≥ 32 px)",
                   seeds=[0, 1], metrics=["peak_psnr", "stop_iteration", "stop_psnr"],
                   space={"upsampler": ["nearest", "bilinear"], "lipschitz": [1.0, 2.0]})


def fake_fit(arch, task, observation, *, seed, **settings):
    """PSNR ``peak − 0.001 (i − 50)²`` with the peak by upsampler, λ and seed; the ratio rule fires at 70 for
    nearest with seed 0 only."""
    peak = 28.0 + 2.0 * (arch.upsampler == "bilinear") + arch.lipschitz + 0.5 * seed
    it = np.arange(10, 101, 10)
    psnr = peak - 0.001 * (it - 50) ** 2
    history = pd.DataFrame({"iteration": it, "loss": 0.01, "psnr_obs": 20.0, "ratio": 0.3, "psnr": psnr,
                            "psnr_ema": psnr - 1, "fbc_0": it / 100, "fbc_4": it / (500 + 100 * seed),
                            "seconds": it / 1000})
    stop = 70 if arch.upsampler == "nearest" and seed == 0 else None
    reference = observation.reference
    return FitResult(output=reference, ema_output=reference, history=history, stopped_at=100,
                     stop_reason="iterations", seconds=0.1, spec=arch.to_dict(), settings=settings,
                     task=task.to_dict(), auto_stop_iteration=stop)


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rep")
    path = folder / "rep.toml"
    path.write_text(STUDY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    patch = pytest.MonkeyPatch()
    patch.setattr(worker, "fit", fake_fit)
    try:
        studies.run(path, log=lambda _: None)
    finally:
        patch.undo()
        torch.set_num_threads(threads)
    return path


def test_stop_iterations_are_blank_where_the_rule_never_fired_and_the_fires_are_counted(study_file, tmp_path):
    frame = studies.load(str(study_file))
    nearest = frame[(frame["upsampler"] == "nearest")]
    assert (nearest["stop_iteration"] == 70).all() and (nearest["stops"] == 1).all()
    assert frame.loc[frame["upsampler"] == "bilinear", "stop_iteration"].isna().all()
    trial = next(t for t in optuna.load_study(study_name="rep", storage=studies.default_storage(study_file)).trials
                 if t.params["upsampler"] == "bilinear")
    assert trial.user_attrs["run0.stop_iteration"] is None and trial.user_attrs["run0.stopped"] is False
    studies.write_report(str(study_file), fmt="md", out_dir=tmp_path)
    text = (tmp_path / "table.md").read_text()
    assert "| upsampler | Lipschitz bound λ | astronaut | mean | rule fired |" in text
    assert "| bilinear | 1.0 |  |  | 0/2 |" in text and "| nearest | 1.0 | **70** | **70** | 1/2 |" in text
    assert "The ratio rule fired in 2 of 8 fits" in text


def test_the_reproduce_line_names_the_file_the_study_came_from(study_file, tmp_path, monkeypatch):
    monkeypatch.chdir(study_file.parent)
    studies.write_report("rep.toml", fmt="md", out_dir=tmp_path)
    text = (tmp_path / "table.md").read_text()
    assert "Reproduce: `archlab study run rep.toml`, then `archlab study report rep.toml --format md -o DIR`." in text
    assert studies.results.reproduce_command("quick-demo") == "archlab study run quick-demo"
    assert studies.results.reproduce_command("quick-demo", "postgresql://ann:secret@db/archlab") == \
        "archlab study run quick-demo --storage 'postgresql://ann:***@db/archlab'"
    assert studies.results.reproduce_command("only-in-a-database") is None


def test_importances_need_enough_trials_and_two_varied_parameters():
    def study_of(n: int, varied: int) -> optuna.Study:
        study = optuna.create_study(direction="maximize")
        study.set_user_attr("spec", {"objectives": {"peak_psnr": "maximize"}})
        rng = np.random.default_rng(0)
        for i in range(n):
            params = {"a": float(rng.random()), "b": float(rng.random()) if varied > 1 else 0.5}
            study.add_trial(optuna.trial.create_trial(
                params=params, value=params["a"] + 0.1 * params["b"],
                distributions={k: optuna.distributions.FloatDistribution(0, 1) for k in params}))
        return study

    few = study_of(studies.results.MIN_IMPORTANCE_TRIALS - 1, 2)
    assert "needs at least 10" in studies.results.importance_note(few) and studies.importances(few) == {}
    single = study_of(12, 1)
    assert "fewer than two parameters vary" in studies.results.importance_note(single)
    enough = study_of(12, 2)
    assert studies.results.importance_note(enough) is None
    weights = studies.importances(enough)["peak_psnr"]
    assert set(weights) == {"a", "b"} and weights["a"] > weights["b"]


def test_latex_standalone_document_compiles(study_file, tmp_path):
    written = studies.write_report(str(study_file), fmt="latex", out_dir=tmp_path, standalone=True,
                                   figure_format="pdf")
    assert sorted(p.name for p in written) == ["curves.pdf", "table.tex"]
    tex = (tmp_path / "table.tex").read_text()
    assert tex.startswith("\\documentclass") and tex.rstrip().endswith("\\end{document}")
    assert "\\usepackage{booktabs}" in tex and "\\usepackage{graphicx}" in tex
    assert "\\includegraphics[width=\\linewidth]{curves.pdf}" in tex and "\\toprule" in tex
    assert "Lipschitz bound $\\lambda$" in tex and "peak\\_psnr" not in tex and "λ" not in tex
    assert "$\\sigma$ = 25" in tex and "$\\frac{1}{4}$" in tex and "$\\geq$" in tex
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed; the structure was checked")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "table.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:]
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")


def test_latex_fragment_and_figure_formats(study_file, tmp_path):
    studies.write_report(str(study_file), fmt="latex", out_dir=tmp_path)
    tex = (tmp_path / "table.tex").read_text()
    assert "\\documentclass" not in tex and tex.startswith("% archlab study report: \\input{report}")
    assert "\\includegraphics[width=\\linewidth]{curves.png}" in tex
    svg = studies.write_report(str(study_file), fmt="md", out_dir=tmp_path / "svg", figure_format="svg")
    assert (tmp_path / "svg" / "curves.svg").read_text().lstrip().startswith("<?xml") and len(svg) == 2
    with pytest.raises(ValueError, match="figure_format: 'svg' is invalid with format latex; allowed: png, pdf"):
        studies.write_report(str(study_file), fmt="latex", out_dir=tmp_path / "x", figure_format="svg")
    with pytest.raises(ValueError, match="standalone: only for format latex"):
        studies.write_report(str(study_file), fmt="md", out_dir=tmp_path / "x", standalone=True)
    assert not (tmp_path / "x").exists()


def test_seed_ranges_are_shaded_where_there_are_several_seeds(monkeypatch, tmp_path):
    shaded = []
    original = Axes.fill_between
    monkeypatch.setattr(Axes, "fill_between", lambda self, *a, **k: shaded.append(a) or original(self, *a, **k))
    frame = pd.DataFrame({"iteration": [10, 20, 10, 20], "psnr": [20.0, 22.0, 21.0, 25.0], "seed": [0, 0, 1, 1],
                          "config": "a", "panel": "img"})
    report.plot_curves(frame, tmp_path / "two.png", columns=("psnr",), band="seed")
    (_, low, high), = shaded
    assert list(low) == [20.0, 22.0] and list(high) == [21.0, 25.0]
    report.plot_curves(frame[frame["seed"] == 0], tmp_path / "one.png", columns=("psnr",), band="seed")
    assert len(shaded) == 1


def test_titles_show_no_machine_paths(tmp_path, monkeypatch):
    assert report.plain_title("denoise - /home/ann/specs/hourglass-w16.toml - F16") == "denoise - hourglass-w16 - F16"
    assert report.plain_title("σ = 25, lr 1/30, shi-decoder") == "σ = 25, lr 1/30, shi-decoder"
    monkeypatch.setitem(matplotlib.rcParams, "svg.fonttype", "none")  # keep the SVG's text as text
    history = pd.DataFrame({"iteration": [10, 20], "psnr": [20.0, 21.0], "fbc_0": [0.5, 0.6], "fbc_1": [0.1, 0.2]})
    report.plot_fbc(history, tmp_path / "fbc.svg", title="denoise - /tmp/work/my_spec.toml - camera")
    svg = (tmp_path / "fbc.svg").read_text()
    assert "denoise - my_spec - camera" in svg and "/tmp/work" not in svg


def test_latex_escape_writes_symbols_pdflatex_knows():
    assert report.latex_escape("a_b & 50% λ≥2 x²") == "a\\_b \\& 50\\% $\\lambda$$\\geq$2 x$^{2}$"
