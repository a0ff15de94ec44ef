"""What each reproduction fits: its runs (configuration, image, architecture, task, fit settings) as plain
data, without torch, so the command line can name the experiments before it loads anything heavy.
:mod:`archlab.reproduce` runs them and writes their tables."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from archlab import models
from archlab.studies.files import study_text

SET9_DENOISE = ("image_Baboon512rgb.png", "image_F16_512rgb.png", "image_House256rgb.png", "image_Peppers512rgb.png")


#: The architecture of a run that fits what :func:`archlab.recommend.recommend` gives its observation
#: (spec and fit settings, as ``restore --arch auto``).
AUTO = "auto"


@dataclass(frozen=True)
class Run:
    """One fit of an experiment: a configuration on one image (``arch``: a preset, a spec dict or
    :data:`AUTO`); with ``restarts`` > 1 the mean of that many seeded fits, as ``archlab restore`` returns it
    (:func:`archlab.restoration.fit_restarts`)."""

    config: str
    image: str
    arch: str | dict
    task: dict
    fit: dict
    downscale: int = 4
    size: int = 0
    seed: int = 0
    resize: str = "torch"
    extra: dict = field(default_factory=dict)
    restarts: int = 1


def short_name(image: str) -> str:
    """The image's name in tables: its stem without the Set9 file name's decorations."""
    stem = Path(image).stem
    return stem.replace("image_", "").replace("512rgb", "").replace("256rgb", "").replace("_", "")


def controlled_decoder(lipschitz: float | str = "auto", preset: str = "shi-decoder") -> dict:
    """A controlled-decoder preset with bound λ (``"auto"``: chosen for the image size), as a spec dict."""
    return models.preset(preset).replace(lipschitz=lipschitz).to_dict()


#: The degradation of the papers' reference runs (REFERENCE §5b): NumPy's normal noise, clipped.
REFERENCE_DENOISE = {"task": "denoise", "sigma": 25.0, "rng": "numpy"}


def denoise_set9_runs(iterations_dip: int = 3000, iterations_controlled: int = 4000) -> list[Run]:
    """Ulyanov's DIP beside paper 000's controlled decoder on Set9 ×¼, σ = 25, seed 0.

    The images and the noise are those of the papers' reference runs (Pillow bicubic ×¼ on
    8-bit values, NumPy noise; REFERENCE §5b), so each row compares with their code. ``ulyanov-dip``
    runs Ulyanov et al.'s denoising settings (lr 0.01, input jitter 1/30, EMA 0.99); ``shi-decoder``
    runs as paper 000's code does (lr 0.001, no jitter), λ chosen for the image size
    (:func:`archlab.models.lipschitz_for_size`), the ratio rule recording where it stops.
    """
    controlled = {"iterations": iterations_controlled, "lr": 0.001, "input_jitter": 0.0, "ema": 0.99,
                  "stop": "record"}
    dip = {"iterations": iterations_dip, "lr": 0.01, "input_jitter": 1 / 30, "ema": 0.99, "stop": "record"}
    runs = []
    for image in SET9_DENOISE:
        path = f"set9/{image}"
        runs.append(Run("ulyanov-dip", path, "ulyanov-dip", REFERENCE_DENOISE, dip, resize="pil"))
        runs.append(Run("shi-decoder", path, controlled_decoder(), REFERENCE_DENOISE, controlled, resize="pil"))
    return runs


#: λ values of :func:`decoder_lambda_runs`.
LAMBDA_GRID = (1.4, 1.7, 2.0)


def decoder_lambda_runs(iterations: int = 3000) -> list[Run]:
    """Paper 000's decoder (``shi-decoder``) at each λ of :data:`LAMBDA_GRID` on the Set9 images at 64 px
    (×⅛; House ×¼), σ = 25, the reference degradation: where it underfits and where it decays, the
    measurement behind :func:`archlab.models.lipschitz_for_size` (the 128-px points are ``denoise-set9``)."""
    fit_settings = {"iterations": iterations, "lr": 0.001, "input_jitter": 0.0, "ema": 0.99, "stop": "record"}
    return [Run(f"shi-decoder λ={lipschitz:g} 64px", f"set9/{image}", controlled_decoder(lipschitz),
                REFERENCE_DENOISE, fit_settings, downscale=4 if "256" in image else 8, resize="pil")
            for lipschitz in LAMBDA_GRID for image in SET9_DENOISE]


def decoder_lambda_256_runs(iterations: int = 2000) -> list[Run]:
    """Paper 000's decoder (``shi-decoder``) on the Set9 images at 256 px (×½; House as it is), σ = 25, the
    reference degradation, at λ 2 (the 128-px point of :func:`archlab.models.lipschitz_for_size`) and 2.6
    (the log-linear trend from 64 to 128 px, continued): whether each underfits or decays at 256 px, the
    measurement behind the rule's 256-px point. F16 and Peppers first, then House and Baboon."""
    fit_settings = {"iterations": iterations, "lr": 0.001, "input_jitter": 0.0, "ema": 0.99, "stop": "record"}
    return [Run(f"shi-decoder λ={lipschitz:g} 256px", f"set9/{image}", controlled_decoder(lipschitz), REFERENCE_DENOISE,
                fit_settings, downscale=1 if "256" in image else 2, resize="pil")
            for images_ in (("image_F16_512rgb.png", "image_Peppers512rgb.png"),
                            ("image_House256rgb.png", "image_Baboon512rgb.png"))
            for lipschitz in (2.0, 2.6) for image in images_]


#: Suffix of the configurations that fit the papers' DIP preset as the baseline of a task.
DIP_BASELINE = " · DIP"


def tasks_runs(iterations: int = 2000) -> list[Run]:
    """Every task through paper 000's controlled decoder as its code builds it (``shi-decoder``, λ chosen
    for the image size, lr 0.001, no input jitter), seed 0, images of 128 px (SR: 128 px output); then the
    same through ``ulyanov-dip`` (lr 0.01, input jitter 1/30, the papers' DIP baseline; not for
    enhancement). Every fit runs ``iterations`` and records where the task's automatic rule stops, so the
    table sets the output at that stop beside the run's peak and its last iterate."""
    fit_settings = {"iterations": iterations, "lr": 0.001, "input_jitter": 0.0, "ema": 0.99, "stop": "record"}
    decoder = controlled_decoder()
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


#: The tasks of :func:`stopping_runs`: (label, task, (image, downscale) x 4); every image ends 64 x 64.
STOPPING_TASKS = (
    *((f"denoise σ={sigma:g}", {"task": "denoise", "sigma": float(sigma), "rng": "numpy"},
       tuple((f"set9/{image}", 4 if "256" in image else 8) for image in SET9_DENOISE)) for sigma in (15, 25, 50)),
    ("poisson ζ=0.1", {"task": "poisson", "scale": 0.1},
     tuple((f"set12/{n}.png", 4) for n in ("01", "02", "04", "05"))),
    ("jpeg q=10", {"task": "jpeg", "quality": 10},
     tuple((f"classic5/{n}.png", 8) for n in ("lena", "boats", "barbara", "peppers"))),
    ("inpaint center 0.25", {"task": "inpaint", "mask": "center", "ratio": 0.25},
     tuple((f"set9/kodim{n}.png", 8) for n in ("01", "02", "03", "12"))),
    ("inpaint bernoulli 0.5", {"task": "inpaint", "mask": "bernoulli", "drop": 0.5},
     tuple((f"inpainting/bernoulli/images/{n}", 4) for n in ("house.png", "peppers256.png", "Cameraman256.png",
                                                             "couple.png"))),
    ("sr ×4", {"task": "sr", "factor": 4}, tuple((f"cbsd68/{n:04d}.png", 4) for n in (10, 11, 12, 13))),
)
#: Fit settings of :func:`stopping_runs` per preset: Ulyanov et al.'s for their network, ``archlab restore``'s
#: for the default decoder; both record every rule and run to the cap, so the oracle peak is known.
STOPPING_FITS = {"ulyanov-dip": {"iterations": 2000, "lr": 0.01, "input_jitter": 1 / 30, "ema": 0.99, "stop": "record"},
                 "controlled-64": {"iterations": 3000, "lr": 0.002, "input_jitter": 1 / 30, "ema": 0.99,
                                   "stop": "record"}}


def stopping_runs() -> list[Run]:
    """Every stop rule on every task: each task of :data:`STOPPING_TASKS` on its four 64-px images, through
    ``ulyanov-dip`` and ``controlled-64`` (:data:`STOPPING_FITS`), seed 0, every rule recorded beside the fit.
    The images are small so that the 64 fits take about three CPU hours on one thread each."""
    return [Run(f"{label} · {arch}", image, arch, task, fit_settings, downscale=down, size=64, resize="pil")
            for label, task, sources in STOPPING_TASKS for image, down in sources
            for arch, fit_settings in STOPPING_FITS.items()]


#: Held-out images of :func:`recommend_runs` (none in the recommend studies' training set): (path, downscale).
RECOMMEND_IMAGES = (*((f"set12/{n:02d}.png", 2) for n in range(1, 13)),
                    *((f"set9/{image}", 2 if "256" in image else 4) for image in
                      (*SET9_DENOISE, "image_Lena512rgb.png", "kodim01.png", "kodim02.png", "kodim03.png", "kodim12.png")),
                    *((f"classic5/{n}.png", 4) for n in ("baboon", "barbara", "boats", "lena", "peppers")))
#: The shipped studies whose learnt tables :func:`recommend_runs` evaluates (each studies one task).
RECOMMEND_STUDIES = ("recommend-denoise", "recommend-poisson")
#: How many of the learnt table's best configurations (by mean PSNR) form the per-image oracle's grid.
ORACLE_CONFIGS = 6


def recommend_runs() -> list[Run]:
    """The learnt recommendation on images it never saw: per task of :data:`RECOMMEND_STUDIES` (as the study
    file states it) whose learnt table exists and per image of :data:`RECOMMEND_IMAGES` (64-px centre crops), the recommended configuration
    (:data:`AUTO`), the default (``controlled-64``, ``archlab restore``'s settings), ``ulyanov-dip`` (lr 0.01,
    jitter 1/30) and the :data:`ORACLE_CONFIGS` best configurations of the table by mean PSNR among those fitted
    to all its images (the grid of the per-image oracle), all stopped by the task's automatic rule, seed 0; and the
    recommended and default configurations again as ``archlab restore`` runs them, as the mean of seeded fits
    (:func:`archlab.restoration.default_restarts` of ``--arch auto`` and of ``controlled-64``)."""
    from archlab import learnt, restoration, tasks  # scikit-learn: only when the runs are made

    runs = []
    for study in RECOMMEND_STUDIES:
        task = dict(tomllib.loads(study_text(study)[0])["tasks"][0])
        label = task["task"]
        if not learnt.table_path(label).is_file():
            continue
        table = learnt.load_table(label)
        by_config = table.groupby(list(learnt.CONFIG_COLUMNS), as_index=False)
        best = by_config.agg(stop_psnr=("stop_psnr", "mean"), images=("image", "nunique"))
        best = best[best["images"] == table["image"].nunique()].drop(columns="images")  # means over the same images
        best = best.sort_values("stop_psnr", ascending=False).head(ORACLE_CONFIGS)
        stop = {"eval_every": 10, "stop": "auto"}
        restarts = {arch: restoration.default_restarts(tasks.task_from_dict(task), arch)
                    for arch in ("auto", "controlled-64")}
        base = models.preset("controlled-64")
        default = {"iterations": 500, "lr": 0.002, **stop}
        configs = [("recommended", AUTO, {"iterations": 1000, **stop}, 1),
                   ("default", "controlled-64", default, 1),
                   ("ulyanov-dip", "ulyanov-dip", {"iterations": 1000, "lr": 0.01, "input_jitter": 1 / 30, **stop}, 1),
                   (f"recommended ×{restarts['auto']}", AUTO, {"iterations": 1000, **stop}, restarts["auto"]),
                   (f"default ×{restarts['controlled-64']}", "controlled-64", default, restarts["controlled-64"])]
        for k, row in enumerate(best.itertuples(index=False)):
            arch, fit = learnt.split_config(dict(zip(learnt.CONFIG_COLUMNS, row)))
            configs.append((f"grid {k + 1}", base.replace(**arch).to_dict(),
                            {"iterations": 1000, **{key: float(value) for key, value in fit.items()}, **stop}, 1))
        runs += [Run(f"{label} · {name}", image, arch, task, fit, downscale=down, size=64, restarts=restarts)
                 for image, down in RECOMMEND_IMAGES for name, arch, fit, restarts in configs]
    if not runs:
        raise ValueError(f"reproduce recommend: no learnt table for the tasks of {', '.join(RECOMMEND_STUDIES)}; "
                         "run those studies and `archlab study learn` first")
    return runs


EXPERIMENTS = {"denoise-set9": denoise_set9_runs, "decoder-lambda": decoder_lambda_runs,
               "decoder-lambda-256": decoder_lambda_256_runs, "tasks": tasks_runs,
               "stopping": stopping_runs, "recommend": recommend_runs}
