"""archlab: how upsamplers and architecture choices shape the deep image prior.

Layers (bottom-up, a module imports only from layers below it):
images, metrics -> filters, spectral -> layers, tasks, stopping, texture -> models
-> fit, recommend -> studies, report -> cli.
"""

__version__ = "0.1.0"
