"""Architectures of the deep image prior from a declarative spec.

An :class:`ArchSpec` names every choice the papers vary - kind, depth, width,
skips, upsampler, Lipschitz bound, normalisation, activation, padding, input
noise - and :func:`build` turns it into a module plus the fixed random input it
is fitted from. Kinds:

* ``hourglass`` - Ulyanov et al.'s encoder-decoder with skips (REFERENCE §5);
* ``decoder`` - the same without the encoder (paper 000 §3.2, Fig. 2);
* ``convnet`` - the decoder without upsampling (paper 000 Fig. 2);
* ``conv_decoder`` - ConvDecoder, [upsample, conv k×k, act, norm] per level
  (Darestani & Heckel 2021; paper 004 §4);
* ``mlp_decoder`` - the same with 1×1 convolutions (paper 004);
* ``deep_decoder`` - Deep Decoder, [1×1 conv, upsample, act, norm] per level (Heckel & Hand 2019).

In these three, as in their codes, ``depth`` counts layers and the last (full-resolution) layer has no
upsampler: ``depth - 1`` upsamplings (ConvDecoder's ``num_layers``, the Deep Decoder's d).

The specs (:mod:`~archlab.models.spec`) need no torch; the networks (:mod:`~archlab.models.networks`:
:func:`build`, :func:`make_input`, :func:`count_parameters`) are imported on first use.
"""

import importlib

from archlab.models.spec import (
    ACTS,
    DOWNSAMPLES,
    KINDS,
    LAYERED,
    LIPSCHITZ_BY_INPUT_SIDE,
    NOISES,
    NORMS,
    PRESETS,
    ArchSpec,
    check_size,
    for_size,
    lipschitz_for_size,
    load_spec,
    preset,
)

_NETWORKS = ("build", "count_parameters", "make_input")
__all__ = ["ACTS", "DOWNSAMPLES", "KINDS", "LAYERED", "LIPSCHITZ_BY_INPUT_SIDE", "NOISES", "NORMS", "PRESETS", "ArchSpec",
           "check_size", "for_size", "lipschitz_for_size", "load_spec", "preset", *_NETWORKS]


def __getattr__(name: str):
    if name in _NETWORKS:
        return getattr(importlib.import_module("archlab.models.networks"), name)
    raise AttributeError(f"module 'archlab.models' has no attribute {name!r}")
