"""archlab: how upsamplers and architecture choices shape the deep image prior.

The public API (imported on first use, so ``import archlab`` stays light):

* :func:`restore` - an image in, a restored image out (``archlab restore`` as one call);
* :func:`fit`, :func:`fit_many`, :class:`FitSettings`, :class:`FitResult` - fit DIP networks, one or K at once;
* :func:`preset`, :class:`ArchSpec` - the networks (presets as their papers' code builds them);
* :func:`make_task` and the problems :class:`Denoise`, :class:`PoissonDenoise`, :class:`JPEGDeblock`,
  :class:`Inpaint`, :class:`SuperResolution`, :class:`Enhance`, and :class:`Observation` (``task.observe(x,
  seed)``: the degraded image with the physics that made it, what a fit inverts);
* :mod:`archlab.filters` (``filters.get``, ``filters.design``) - upsampling filters with exact responses;
* :mod:`archlab.recommend` (``recommend.recommend(image, task)``) - an architecture for an image, from its texture.

Modules, bottom-up (a module imports only from layers below it): vocabulary, checks, images, metrics -> filters,
spectral, engine -> layers, tasks, physics, stopping, texture, report -> models -> loop, batched -> fitting,
restoration, learnt, recommend -> experiments, reproductions, reproduce, studies -> cli.

Examples
--------
>>> import archlab
>>> archlab.preset("controlled-64").depth
3
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "restore": "archlab.restoration", "Restoration": "archlab.restoration",
    "fit": "archlab.fitting", "fit_many": "archlab.fitting", "FitSettings": "archlab.fitting", "FitResult": "archlab.fitting",
    "preset": "archlab.models", "ArchSpec": "archlab.models",
    "make_task": "archlab.tasks", "Denoise": "archlab.tasks", "PoissonDenoise": "archlab.tasks",
    "JPEGDeblock": "archlab.tasks", "Inpaint": "archlab.tasks", "SuperResolution": "archlab.tasks",
    "Enhance": "archlab.tasks", "Observation": "archlab.tasks",
}
#: Modules of the public API (attributes of the package once imported).
_MODULES = ("filters", "recommend")
__all__ = sorted([*_PUBLIC, *_MODULES])


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"archlab.{name}")
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'archlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
