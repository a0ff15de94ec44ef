"""Reproductions of the papers' fixed experiments, written as tables anyone can rerun.

Each experiment fits a list of (configuration, image) runs and appends one CSV row per
run as soon as it finishes, so an interrupted reproduction resumes where it stopped;
the Markdown table is rebuilt from the CSV. Commands: ``archlab reproduce NAME -o DIR``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from archlab import images, metrics, models, report, stopping, tasks
from archlab.fit import fit

SET9_DENOISE = ("image_Baboon512rgb.png", "image_F16_512rgb.png", "image_House256rgb.png", "image_Peppers512rgb.png")
#: Paper 001 Table 2 (DIP oracle PSNR, Set9 ×¼, σ = 25, mean of 5 runs).
PAPER_001_TABLE_2 = {"Baboon": 24.73, "F16": 27.00, "House": 26.89, "Peppers": 27.12}


@dataclass(frozen=True)
class Run:
    """One fit of an experiment: a configuration on one image."""

    config: str
    image: str
    arch: str | dict
    task: dict
    fit: dict
    downscale: int = 4
    size: int = 0
    seed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.config}|{self.image}"


def _short(image: str) -> str:
    stem = Path(image).stem
    return stem.replace("image_", "").replace("512rgb", "").replace("256rgb", "").replace("_", "")


#: λ of the controlled decoder in the evidence: paper 000's released denoising code uses ``ln_lambda = 1.4``
#: (its text: λ = 2). On House ×¼ (64 px, σ 25, 4,000 iterations, ``results/denoise-set9``) λ = 2 overfits
#: (peak 28.02 dB at 200, 21.27 dB at the end) and λ = 1.4 holds (27.74 dB at 3,950, 27.70 at the end).
#: At 128 px λ = 1.4 is still rising at 4,000.
CONTROLLED_LAMBDA = 1.4

#: Bounds between the code's 1.4 and the text's 2 that the Set9 evidence also runs on every image: the
#: larger λ, the sooner the 128-px images fit and the more House (64 px) loses after its peak.
LAMBDA_SWEEP = (1.5, 1.6)


def controlled_decoder(lipschitz: float = CONTROLLED_LAMBDA, preset: str = "shi-decoder") -> dict:
    """A controlled-decoder preset with bound λ, as a spec dict (what a :class:`Run` stores)."""
    return models.preset(preset).replace(lipschitz=lipschitz).to_dict()


def denoise_set9_runs(iterations_dip: int = 3000, iterations_controlled: int = 4000) -> list[Run]:
    """Issue evidence: Ulyanov's DIP vs the controlled decoder on Set9 ×¼, σ = 25, seed 0.

    The controlled decoder runs as paper 000's code does (lr 0.001, no input jitter) with λ =
    :data:`CONTROLLED_LAMBDA` on every image; the preset's λ = 2 is kept on House alone (the smallest
    image, the quickest to overfit). The same decoder as the paper's text describes it
    (``shi-decoder-text``, λ = :data:`CONTROLLED_LAMBDA`, input jitter 1/30) runs beside it, and the code
    decoder again at each λ of :data:`LAMBDA_SWEEP`.
    """
    runs = []
    controlled = {"iterations": iterations_controlled, "lr": 0.001, "input_jitter": 0.0, "ema": 0.99,
                  "stop": "record"}
    text = controlled_decoder(preset="shi-decoder-text")
    for image in SET9_DENOISE:
        path = f"set9/{image}"
        runs.append(Run("ulyanov-dip", path, "ulyanov-dip", {"task": "denoise", "sigma": 25.0},
                        {"iterations": iterations_dip, "lr": 0.01, "input_jitter": 1 / 30, "ema": 0.99}))
        runs.append(Run(f"shi-decoder λ={CONTROLLED_LAMBDA:g}", path, controlled_decoder(),
                        {"task": "denoise", "sigma": 25.0}, controlled))
        runs.append(Run(f"shi-decoder-text λ={CONTROLLED_LAMBDA:g}", path, text, {"task": "denoise", "sigma": 25.0},
                        controlled | {"input_jitter": 1 / 30}))
    house = next(image for image in SET9_DENOISE if "House" in image)
    runs.append(Run("shi-decoder λ=2", f"set9/{house}", "shi-decoder", {"task": "denoise", "sigma": 25.0}, controlled))
    runs += [Run(f"shi-decoder λ={lipschitz:g}", f"set9/{image}", controlled_decoder(lipschitz),
                 {"task": "denoise", "sigma": 25.0}, controlled)
             for lipschitz in LAMBDA_SWEEP for image in SET9_DENOISE]
    return runs


#: Suffix of the configurations that fit the papers' DIP preset as the baseline of a task.
DIP_BASELINE = " · DIP"


def tasks_runs(iterations: int = 2000) -> list[Run]:
    """Issue evidence: every task through the controlled decoder as paper 000's text describes it
    (``shi-decoder-text`` at λ = :data:`CONTROLLED_LAMBDA`, lr 0.001, input jitter 1/30), auto-stop at the
    ratio rule within ``iterations``, seed 0, images of 128 px (SR: 128 px output); then the same through
    ``ulyanov-dip`` (lr 0.01, ``iterations``, the papers' DIP baseline; not for enhancement)."""
    fit_settings = {"iterations": iterations, "lr": 0.001, "input_jitter": 1 / 30, "ema": 0.99, "stop": "auto"}
    decoder = controlled_decoder(preset="shi-decoder-text")
    table = [
        ("denoise σ=25", {"task": "denoise", "sigma": 25.0}, ("cbsd68/0000.png", 2, 128)),
        ("poisson ζ=0.1", {"task": "poisson", "scale": 0.1}, ("set12/02.png", 2, 0)),
        ("jpeg q=10", {"task": "jpeg", "quality": 10}, ("classic5/lena.png", 4, 0)),
        ("inpaint center 0.1", {"task": "inpaint", "mask": "center", "ratio": 0.1}, ("set12/04.png", 2, 0)),
        ("inpaint bernoulli 0.5", {"task": "inpaint", "mask": "bernoulli", "drop": 0.5},
         ("inpainting/bernoulli/images/house.png", 2, 0)),
        ("sr ×4", {"task": "sr", "factor": 4}, ("set9/image_F16_512rgb.png", 4, 0)),
        ("enhance λ=1", {"task": "enhance", "lipschitz": 1.0}, ("enhancement/tulips.png", 4, 128)),
    ]
    runs = [Run(config, image, decoder, task, fit_settings, downscale=down, size=size)
            for config, task, *images_ in table for image, down, size in images_]
    dip_settings = {"iterations": iterations, "lr": 0.01, "input_jitter": 1 / 30, "ema": 0.99, "stop": "record"}
    runs += [Run(f"{config}{DIP_BASELINE}", image, "ulyanov-dip", task, dip_settings, downscale=down, size=size)
             for config, task, *images_ in table if task["task"] != "enhance" for image, down, size in images_]
    return runs


EXPERIMENTS = {"denoise-set9": denoise_set9_runs, "tasks": tasks_runs}


def load_clean(run: Run) -> torch.Tensor:
    """The clean image of a run: dataset file (or built-in), downscaled, cropped to the architecture."""
    source = run.image if run.image in images.builtin_names() else images.datasets_root() / run.image
    x = images.load(source)
    if run.downscale > 1:
        x = images.resize(x, scale=1 / run.downscale)
    if run.size:
        x = images.center_crop(x, size=(run.size, run.size))
    task = tasks.task_from_dict(run.task)
    spec = models.load_spec(run.arch)
    return images.center_crop(x, math.lcm(spec.multiple, getattr(task, "factor", 1)))


def _read(csv: Path) -> pd.DataFrame:
    """The rows so far; configuration and image names stay strings (an image named ``0000`` is not 0)."""
    return pd.read_csv(csv, dtype={"config": str, "image": str}) if csv.exists() else pd.DataFrame()


def _finished(csv: Path) -> set[str]:
    done = _read(csv)
    return set(done["config"] + "|" + done["image"]) if len(done) else set()


@contextlib.contextmanager
def _claim(out: Path, key: str):
    """Claim run ``key`` for this process (a file holding its PID), so that processes sharing ``out``
    split the runs; a claim whose process has died is taken over. Yields whether the claim is ours."""
    path = out / "claims" / (re.sub(r"[^A-Za-z0-9._=-]+", "_", key) + ".pid")
    path.parent.mkdir(exist_ok=True)
    with open(out / "claims.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            try:
                os.kill(int(path.read_text()), 0)
                yield False
                return
            except (ValueError, ProcessLookupError):
                pass
        path.write_text(str(os.getpid()))
    try:
        yield True
    finally:
        path.unlink(missing_ok=True)


def _append_row(csv: Path, row: dict) -> pd.DataFrame:
    """Append ``row`` to ``csv`` (atomically, under a lock, rereading rows other processes added)."""
    with open(csv.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = _read(csv)
        done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
        with images.atomic_path(csv) as tmp:
            done.to_csv(tmp, index=False)
    return done


def execute(run: Run, device: str = "auto", fast: bool = True) -> dict:
    """Fit one run and return its table row (PSNRs against the clean image)."""
    task = tasks.task_from_dict(run.task)
    x = load_clean(run)
    y = task.degrade(x, seed=run.seed)
    reference = task.reference(x)
    result = fit(run.arch, task, y, seed=run.seed, device=device, reference=reference, progress=False, fast=fast,
                 **run.fit)
    s = result.summary()
    baseline = task.physics(tuple(y.shape)).baseline(y)
    row = {"config": run.config, "image": _short(run.image), "size": f"{x.shape[-1]}x{x.shape[-2]}",
           "observation_psnr": float(metrics.psnr(baseline, reference)) if baseline.shape == reference.shape else math.nan,
           "peak_psnr": s["peak_psnr"], "peak_iteration": s["peak_iteration"], "final_psnr": s["final_psnr"],
           "peak_psnr_ema": s["peak_psnr_ema"], "final_psnr_ema": s["final_psnr_ema"],
           "stop_iteration": s["auto_stop_iteration"], "stop_psnr": s.get("stop_psnr", math.nan),
           "iterations": s["iterations"], "seconds": s["seconds"], "engine": result.settings["precision"]}
    if task.name == "enhance":
        row["sharpness_observed"] = float(stopping.mlv_sharpness(y))
        row["sharpness_restored"] = float(stopping.mlv_sharpness(result.output))
    return row


def run_experiment(name: str, out: str | Path, device: str = "auto", only: str | None = None,
                   fast: bool = True, log=print) -> pd.DataFrame:
    """Run (or resume) experiment ``name``, appending rows to ``out/results.csv``; return the table.

    Processes that share ``out`` split the runs: each claims a run before fitting it
    (``out/claims/``) and appends its row under a file lock; ``only`` restricts a process to
    one configuration.
    ``fast`` runs the fits on archlab's engine (bf16 autocast and channels-last where the
    hardware has them, :func:`archlab.engine.fast_settings`); ``fast=False`` is the fp32
    eager reference. The engine used is recorded in every row.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"reproduce: unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    every = EXPERIMENTS[name]()
    runs = [r for r in every if only is None or r.config == only]
    if not runs:
        configs = ", ".join(dict.fromkeys(r.config for r in every))
        raise ValueError(f"reproduce: no run of {name} has configuration {only!r}; configurations: {configs}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "results.csv"
    finished = _finished(csv)
    with images.atomic_path(out / "runs.json") as tmp:
        tmp.write_text(json.dumps([r.__dict__ | {"fast": fast} for r in every], indent=2))
    for run in runs:
        key = f"{run.config}|{_short(run.image)}"
        if key in finished:
            continue
        with _claim(out, key) as mine:
            if not mine or key in _finished(csv):
                continue
            row = execute(run, device, fast=fast)
            _append_row(csv, row)
        log(f"{run.config} {row['image']}: peak {row['peak_psnr']:.2f} @ {row['peak_iteration']}, "
            f"final {row['final_psnr']:.2f}, {row['seconds']:.0f} s")
    return _read(csv)


_ITERATIONS = ("peak_iteration", "stop_iteration", "iterations")


def _with_mean(group: pd.DataFrame) -> pd.DataFrame:
    """Rows per image plus their mean; iteration counts as integers."""
    frame = pd.concat([group, group.mean(numeric_only=True).rename("mean").to_frame().T])
    for col in _ITERATIONS:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").round().astype("Int64")
    return frame


def _generic_text(table: pd.DataFrame) -> str:
    cols = ["observation_psnr", "peak_psnr", "peak_iteration", "final_psnr", "peak_psnr_ema", "final_psnr_ema",
            "stop_iteration", "stop_psnr", "iterations", "seconds"]
    return "\n\n".join(f"### {config}\n\n" + report.markdown_table(_with_mean(group.set_index("image")[cols]))
                        for config, group in table.groupby("config", sort=False)) + "\n"


def _denoise_set9_text(table: pd.DataFrame) -> str:
    """Issue 3's evidence: (a) the DIP's oracle peak and final PSNR, (b) the controlled decoder at its auto-stop
    point and at the end, paper 001 Table 2 beside them, and the three bars checked."""
    parts, dip, controlled, summary = [], None, {}, {}
    order = list(dict.fromkeys(run.config for run in denoise_set9_runs()))
    configs = sorted(table["config"].unique(), key=lambda c: order.index(c) if c in order else len(order))
    for config in configs:
        group = table[table["config"] == config].set_index("image")
        if config == "ulyanov-dip":
            frame = group[["observation_psnr", "peak_psnr", "peak_iteration", "final_psnr", "peak_psnr_ema",
                           "final_psnr_ema", "seconds"]].copy()
            frame["paper_001_dip_oracle"] = [PAPER_001_TABLE_2.get(i, math.nan) for i in frame.index]
            dip = group
        else:
            frame = group[["observation_psnr", "stop_psnr", "stop_iteration", "peak_psnr", "peak_iteration",
                           "final_psnr", "final_psnr_ema", "seconds"]].copy()
            controlled[config] = group
        parts.append(f"### {config}\n\n" + report.markdown_table(_with_mean(frame)))
    for config, group in controlled.items():
        images_ = [] if dip is None else [i for i in dip.index if i in group.index]
        if len(images_) < 2:
            continue
        a, b = dip.loc[images_], group.loc[images_]
        drop = b["peak_psnr"] - b["final_psnr"]
        decayed = int(((a["peak_psnr"] - a["final_psnr"]) >= 1.0).sum())
        stop = b["stop_psnr"].fillna(b["final_psnr"])  # where the rule never fired a run ends at its last iterate
        unfired = f" (the last iterate where the rule did not fire: {int(b['stop_psnr'].isna().sum())})" \
            if b["stop_psnr"].isna().any() else ""
        bar_1 = "met" if stop.mean() >= a["peak_psnr"].mean() else "NOT met"
        bar_2 = "met" if (drop <= 0.5).all() else "NOT met"
        bars = [f"(b) mean PSNR at the auto-stop point{unfired} {stop.mean():.2f} dB vs (a) mean oracle peak "
                f"{a['peak_psnr'].mean():.2f} dB: {bar_1}",
                f"(b) PSNR at the last iteration within 0.5 dB of its peak on every image (largest drop "
                f"{drop.max():.2f} dB): {bar_2}",
                f"(a) last iterate ≥ 1 dB below its peak on {decayed} of {len(images_)} images (bar: ≥ 3): "
                f"{'met' if decayed >= 3 else 'NOT met'}"]
        parts.append(f"### Bars ({len(images_)} images, (b) = {config})\n\n"
                     + "\n".join(f"- {line}" for line in bars))
        summary[config] = {"mean at stop": stop.mean(), "(a) mean oracle peak": a["peak_psnr"].mean(),
                           "bar 1": bar_1, "largest drop": drop.max(), "on": drop.idxmax(), "bar 2": bar_2}
    if len(summary) > 1:
        frame = pd.DataFrame.from_dict(summary, orient="index")
        frame.index.name = "(b)"
        parts.append("### Every controlled configuration against both bars\n\n" + report.markdown_table(frame))
    return "\n\n".join(parts) + "\n"


def _tasks_text(table: pd.DataFrame) -> str:
    """Issue 4's evidence: a row per task with the observation (SR: bicubic) and the controlled DIP at its
    auto-stop point; enhancement is scored by MLV sharpness (no clean image exists)."""
    baseline = table["config"].str.endswith(DIP_BASELINE)
    dip = table[baseline].assign(config=table.loc[baseline, "config"].str.removesuffix(DIP_BASELINE))
    dip = dip.set_index("config")
    frame = table[~baseline].set_index("config")
    out = frame[["image", "size", "observation_psnr", "final_psnr", "stop_iteration", "iterations", "peak_psnr",
                 "peak_iteration", "final_psnr_ema", "seconds"]].rename(
        columns={"observation_psnr": "observation (SR: bicubic)", "final_psnr": "controlled DIP",
                 "stop_iteration": "auto-stop at", "iterations": "ran", "peak_psnr": "oracle peak",
                 "peak_iteration": "peak at", "final_psnr_ema": "EMA at stop"})
    for col in ("auto-stop at", "ran", "peak at"):
        out[col] = pd.to_numeric(out[col], errors="coerce").round().astype("Int64")
    enhance = frame.index.str.startswith("enhance")
    beats = frame["final_psnr"] > frame["observation_psnr"]
    if "sharpness_restored" in frame:
        beats[enhance] = frame.loc[enhance, "sharpness_restored"] > frame.loc[enhance, "sharpness_observed"]
        out.loc[enhance, ["observation (SR: bicubic)", "controlled DIP", "oracle peak", "EMA at stop"]] = math.nan
        out.loc[enhance, "peak at"] = pd.NA
    out["beats the observation"] = ["yes" if b else "NO" for b in beats]
    out["DIP preset: last"] = dip["final_psnr"].reindex(out.index)
    out["DIP preset: peak"] = dip["peak_psnr"].reindex(out.index)
    out.index.name = "task"
    text = report.markdown_table(out)
    if enhance.any():
        row = frame[enhance].iloc[0]
        text += (f"\n\nEnhancement is scored by MLV sharpness: observed {row['sharpness_observed']:.4f}, "
                 f"enhanced {row['sharpness_restored']:.4f}.")
    return text + "\n"


def write_table(name: str, table: pd.DataFrame, out: str | Path) -> str:
    """Markdown table of an experiment (per image and mean per configuration), written to ``out/table.md``."""
    if name == "tasks":
        text = _tasks_text(table)
    else:
        text = _denoise_set9_text(table) if name == "denoise-set9" else _generic_text(table)
    with images.atomic_path(Path(out) / "table.md") as tmp:
        tmp.write_text(text)
    return text
