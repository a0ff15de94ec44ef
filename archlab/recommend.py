"""Image → architecture: a DIP for this image without a search.

The width comes from the texture classifier of paper 004 §3.5/§4.4
(:func:`archlab.texture.predict_width`, GLCM + radial-PSD features, noise-compensated so
the noisy observation a user has can be scored); everything else comes from the
rules in :data:`RULES`, each with its source. Later studies replace rules by learnt
ones here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archlab import texture
from archlab.models import ArchSpec
from archlab.tasks import Task

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
    "stop": ("auto", "the task's stop rule (archlab.fitting.AUTO_STOP: the discrepancy principle for Gaussian noise)"),
}

#: The architecture the rules give before the width is known (what an image must be cropped for).
BASE_SPEC = ArchSpec(kind=RULES["kind"][0], depth=RULES["depth"][0], width=64, skip=RULES["skip"][0],
                     upsampler=RULES["upsampler"][0], lipschitz=RULES["lipschitz"][0], norm=RULES["norm"][0])


@dataclass(frozen=True)
class Recommendation:
    """What :func:`recommend` returns: the spec, fit settings, and the evidence behind them."""

    spec: ArchSpec
    fit: dict
    width: int
    probabilities: dict
    texture_score: float
    noise_sigma: float
    sources: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"arch": self.spec.to_dict(), "fit": self.fit, "width": self.width,
                "probabilities": {str(k): round(v, 4) for k, v in self.probabilities.items()},
                "texture_score": round(self.texture_score, 4), "noise_sigma_255": round(self.noise_sigma * 255, 2),
                "sources": self.sources}


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
    >>> advice.width in (32, 64, 128), advice.spec.width == advice.width, advice.fit["stop"]
    (True, True, 'auto')
    """
    sigma = texture.estimate_noise_sigma(image)
    width, probabilities = texture.predict_width(image, noise_sigma=sigma)
    spec = BASE_SPEC.replace(width=width)
    if task is not None and task.arch_overrides():
        spec = spec.replace(**task.arch_overrides())
    fit = {key: RULES[key][0] for key in ("iterations", "lr", "stop")}
    sources = {key: source for key, (_, source) in RULES.items()}
    sources["width"] = "paper 004 §3.5: texture classifier (archlab.texture.default_predictor)"
    return Recommendation(spec=spec, fit=fit, width=width, probabilities=probabilities,
                          texture_score=texture.texture_score(image, noise_sigma=sigma), noise_sigma=sigma,
                          sources=sources)
