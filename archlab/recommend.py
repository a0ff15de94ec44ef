"""Image → architecture: a DIP for this image without a search.

Where a table learnt from a study exists for the task (:mod:`archlab.learnt`, built by ``archlab study
learn``), the configuration - depth, width, skips, upsampler, λ, learning rate and input jitter - is the one the
study's regressors predict restores this image best, no slower than the default; where the table's
cross-validation shows that the study's best single configuration did better on held-out images than that per-image
choice (:func:`archlab.learnt.held_out_choice`), it is that configuration. Otherwise the width
comes from the texture classifier of paper 004 §3.5/§4.4 (:func:`archlab.texture.predict_width`,
GLCM + radial-PSD features, noise-compensated so the noisy observation a user has can be scored) and
everything else from the rules in :data:`RULES`, each with its source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archlab import checks, learnt, restoration, texture
from archlab.models import ArchSpec, preset
from archlab.tasks import TASKS, Task

#: The rules that fill an ArchSpec and the fit settings around the predicted width, with their sources.
RULES = {
    "kind": ("hourglass", "paper 004 §4.4: a 2-level hourglass suffices for coarse and fine images"),
    "depth": (2, "paper 004 §4.4 / Fig. 5: deeper = smoother (more upsampling attenuation)"),
    "skip": (4, "Ulyanov et al.'s 4 skip channels; paper 004 Fig. 5b: skips keep fine detail in deep nets"),
    "upsampler": ("bilinear", "paper 004 Fig. 4: bilinear has the best peak PSNR on coarse and fine images"),
    "lipschitz": (2.0, "paper 000 §4.1: λ = 2 (λ = 1 underfits, λ = 3 still degrades)"),
    "norm": ("mean_only", "paper 000 eq. 5: mean-only BN keeps the Lipschitz bound"),
    "iterations": (3000, "paper 004 §4: at most 3,000 iterations, stopped earlier by the stop rule"),
    "lr": (0.01, "Ulyanov et al.: Adam, lr 0.01 for hourglass networks"),
    "stop": ("auto", "the task's stop rule (archlab.fitting.AUTO_STOP: for Gaussian and Poisson noise the "
                     "discrepancy principle on the moving average)"),
}

#: The architecture the rules give before the width is known (what an image must be cropped for).
BASE_SPEC = ArchSpec(kind=RULES["kind"][0], depth=RULES["depth"][0], width=64, skip=RULES["skip"][0],
                     upsampler=RULES["upsampler"][0], lipschitz=RULES["lipschitz"][0], norm=RULES["norm"][0])


#: The architecture a learnt configuration fills in (the ``[arch]`` of the recommend studies).
LEARNT_BASE = preset("controlled-64")
#: The iteration budget of a learnt configuration. The studies cap their 64-px fits at 1,000 iterations and
#: every fit stops before; at 128 px a fit of the denoising study's best configuration to ``camera`` was still
#: rising at 1,000 and stopped at 1,267, so a restoration is capped at the papers' 3,000 and the automatic stop
#: ends it.
LEARNT_ITERATIONS = 3000


def crop_spec(task: Task | None = None) -> ArchSpec:
    """The deepest architecture :func:`recommend` may give for ``task``: what an image is cropped for before
    the recommendation is known (the learnt table's deepest configuration, else :data:`BASE_SPEC`)."""
    name = task.name if task is not None else "denoise"
    if learnt.table_path(name).is_file():
        return LEARNT_BASE.replace(depth=int(learnt.shipped_recommender(name).configs["depth"].max()))
    return BASE_SPEC


#: Where a recommendation's number of fits comes from when no measured restoration gives it.
RESTARTS_SOURCE = "archlab restore's default number of seeded fits (archlab.restoration.default_restarts)"


def studied(task: Task | None = None) -> tuple[ArchSpec, dict, str]:
    """What the task's learnt data give an image they know nothing about, as the spec, its fit settings and the
    reason: the restoration measured best within the default restoration's time (:func:`within_budget`) where the
    task ships measured restorations, else the study's best single configuration (:func:`archlab.learnt.best_single`:
    the best mean PSNR at the stop over the study's images, no slower than the default on their mean).

    Examples
    --------
    >>> spec, fit, reason = studied()
    >>> spec.kind, fit["stop"], reason.startswith("the best single configuration of the denoise study")
    ('decoder', 'auto', True)
    """
    name = task.name if task is not None else "denoise"
    budgeted = within_budget(task)
    if budgeted is not None:
        spec, fit = _learnt_setup(budgeted.config, task)
        return spec, fit, (f"the best restoration within the default's time measured on the {name} study's "
                           f"{budgeted.images} training images ({learnt.restorations_path(name).name}): the mean of "
                           f"{budgeted.fits} fits of this configuration gained {budgeted.gain:+.2f} dB over the "
                           f"default restoration (controlled-64, the mean of {restoration.DEFAULT_RESTARTS} fits) at "
                           f"{budgeted.time_ratio:.2f}× its CPU time, taking longer on "
                           f"{round(budgeted.slower * budgeted.images)} of the {budgeted.images} images")
    choice = learnt.shipped_best_single(name)
    if choice is None:
        have = ", ".join(t for t in sorted(TASKS) if learnt.shipped_best_single(t) is not None) or "none"
        checks.fail("arch", f"'studied' needs a learnt table of the {name} task in which the default configuration "
                            f"was fitted to every image; tasks with one: {have}")
    spec, fit = _learnt_setup(choice.config, task)
    reason = (f"the best single configuration of the {name} study ({learnt.table_path(name).name}): "
              f"{choice.gain_over_default:+.2f} dB over the default configuration on average over its images, "
              f"{choice.seconds:.1f} {choice.time_unit} per 64-px fit")
    return spec, fit, reason


def within_budget(task: Task | None = None) -> learnt.Budgeted | None:
    """The restoration (configuration and number of fits) of the task's shipped measured restorations with the
    best mean PSNR among those no slower than the default restoration (``controlled-64`` fitted
    :data:`archlab.restoration.DEFAULT_RESTARTS` times; :func:`archlab.learnt.best_within_budget`), or None where
    the task ships none."""
    name = task.name if task is not None else "denoise"
    return learnt.shipped_within_budget(name, restoration.DEFAULT_RESTARTS)


def rules(task: Task | None = None) -> tuple[ArchSpec, dict, str]:
    """Paper 004's rules (:data:`RULES`) at :data:`BASE_SPEC`'s width 64, without the texture classifier: the
    spec (the task's overrides applied), its fit settings and the reason. What ``--arch rules`` fits and, for the
    tasks of :data:`archlab.restoration.TASK_DEFAULTS`, ``archlab restore``'s default.

    Examples
    --------
    >>> spec, fit, reason = rules()
    >>> spec.kind, spec.depth, spec.width, fit["lr"], fit["stop"]
    ('hourglass', 2, 64, 0.01, 'auto')
    """
    spec = BASE_SPEC
    if task is not None and task.arch_overrides():
        spec = spec.replace(**task.arch_overrides())
    fit = {key: RULES[key][0] for key in ("iterations", "lr", "stop")}
    return spec, fit, ("paper 004's rules at width 64: a 2-level hourglass with 4 skip channels, bilinear "
                       "upsampling, λ 2, mean-only BN, lr 0.01")


def _learnt_setup(config: dict, task: Task | None) -> tuple[ArchSpec, dict]:
    """A learnt table's configuration as the spec (:data:`LEARNT_BASE` filled in, the task's overrides applied)
    and the fit settings it was measured with (capped at :data:`LEARNT_ITERATIONS`, the automatic stop)."""
    arch, fit_settings = learnt.split_config(config)
    spec = LEARNT_BASE.replace(**arch)
    if task is not None and task.arch_overrides():
        spec = spec.replace(**task.arch_overrides())
    return spec, {"iterations": LEARNT_ITERATIONS, **fit_settings, "stop": "auto"}


@dataclass(frozen=True)
class Recommendation:
    """What :func:`recommend` returns: the spec, fit settings, how many seeded fits to average, and the evidence
    behind them."""

    spec: ArchSpec
    fit: dict
    width: int
    probabilities: dict
    texture_score: float
    noise_sigma: float
    sources: dict = field(default_factory=dict)
    alternatives: tuple = ()
    restarts: int = restoration.DEFAULT_RESTARTS

    def to_dict(self) -> dict:
        return {"arch": self.spec.to_dict(), "fit": self.fit, "restarts": self.restarts, "width": self.width,
                "probabilities": {str(k): round(v, 4) for k, v in self.probabilities.items()},
                "texture_score": round(self.texture_score, 4), "noise_sigma_255": round(self.noise_sigma * 255, 2),
                "sources": self.sources,
                "alternatives": [{"config": c.config, "predicted_gain_db": round(c.gain_over_default, 3),
                                  "predicted_seconds": round(c.seconds, 2)} for c in self.alternatives]}


def recommend(image, task: Task | None = None) -> Recommendation:
    """Recommend an architecture and fit settings for ``image`` (clean or the degraded observation).

    The noise level is estimated from the image (MAD of the finest wavelet detail,
    :func:`archlab.texture.estimate_noise_sigma`) and discounted from the features, so
    a noisy observation gets the width its clean version would.

    Parameters
    ----------
    image : str, path or Tensor (1, C, H, W)
        The image (a file, a built-in name or pixels in [0, 1]).
    task : Task, optional
        Its architecture overrides (enhancement's λ) are applied to the recommended spec.

    Returns
    -------
    Recommendation
        The width with its class probabilities, the spec, the fit settings and the reason for each.

    Examples
    --------
    >>> from archlab import images
    >>> advice = recommend(images.resize(images.load("camera"), size=(64, 64)))
    >>> advice.width in (16, 32, 64, 128), advice.spec.width == advice.width, advice.fit["stop"]
    (True, True, 'auto')
    """
    image = texture.as_image(image)  # read once
    sigma = texture.estimate_noise_sigma(image)
    features = texture.features(image)  # σ estimated on the luma, as the classifier and the tables learnt
    width, probabilities = texture.width_from_features(features)
    score = texture.texture_score(image, noise_sigma=sigma)
    name = task.name if task is not None else "denoise"
    restarts = restoration.default_restarts(task, "auto") if task is not None else restoration.DEFAULT_RESTARTS
    if learnt.table_path(name).is_file():
        chosen, ranking = learnt.shipped_recommender(name).choose(learnt.image_features(image, features))
        config = chosen.config
        spec, fit = _learnt_setup(config, task)
        default = next(c for c in ranking if c.is_default)
        reason = (f"learnt from the {name} study ({learnt.table_path(name).name}): predicted "
                  f"{chosen.gain_over_default:+.2f} dB over the default configuration, "
                  f"{chosen.seconds:.2f} {chosen.time_unit} per 64-px fit (the default: "
                  f"{default.seconds:.2f}; configurations predicted slower are not chosen)")
        budgeted, selected = within_budget(task), learnt.held_out_choice(name)
        if budgeted is not None:  # measured as restorations, within the default restoration's time
            spec, fit, reason = studied(task)
            config = budgeted.config
            reason += (f"; chosen over the per-image prediction ({chosen.gain_over_default:+.2f} dB predicted here "
                       f"for one fit of its configuration), which was learnt from single fits")
        elif selected is not None and selected[0] == "fixed":  # one configuration did better on held-out images
            spec, fit, reason = studied(task)
            config = learnt.shipped_best_single(name).config
            reason += (f"; chosen over the per-image prediction ({chosen.gain_over_default:+.2f} dB predicted here) "
                       f"because on the study's images held out of the learning it gained "
                       f"{selected[1]['fixed']:+.2f} dB over the default, the per-image choice {selected[1]['learnt']:+.2f}")
        sources = {key: reason for key in learnt.CONFIG_COLUMNS}
        sources["stop"] = RULES["stop"][1]
        sources["restarts"] = reason if budgeted is not None else RESTARTS_SOURCE
        return Recommendation(spec=spec, fit=fit,
                              width=config["width"], probabilities=probabilities, texture_score=score,
                              noise_sigma=sigma, sources=sources, alternatives=tuple(ranking[:5]),
                              restarts=restarts)
    spec, fit, _ = rules(task)
    spec = spec.replace(width=width)
    sources = {key: source for key, (_, source) in RULES.items()}
    sources["width"] = "paper 004 §3.5: texture classifier (archlab.texture.default_predictor)"
    sources["restarts"] = RESTARTS_SOURCE
    return Recommendation(spec=spec, fit=fit, width=width, probabilities=probabilities, texture_score=score,
                          noise_sigma=sigma, sources=sources, restarts=restarts)
