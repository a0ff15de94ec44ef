"""The names archlab's layers, specs and command line share, in one place and without torch.

The command line offers these (choices, help texts) before it imports anything heavy; the layers
and :class:`archlab.models.ArchSpec` validate against the same tuples.
"""

from pathlib import Path

#: scikit-image bundled samples usable by name (``skimage.data.<name>()``).
BUILTIN_IMAGES = {
    "astronaut": "astronaut",
    "camera": "camera",
    "cat": "chelsea",
    "chelsea": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "brick": "brick",
    "grass": "grass",
    "gravel": "gravel",
    "moon": "moon",
    "text": "text",
}


def check_image_source(source) -> None:
    """``source`` must be an image file or a built-in name (:data:`BUILTIN_IMAGES`): the one-line error
    :func:`archlab.images.load` gives, checked before anything heavy is loaded."""
    if str(source) not in BUILTIN_IMAGES and not Path(source).is_file():
        raise ValueError(f"image: {str(source)!r} is neither a file nor a built-in image; "
                         f"built-ins: {', '.join(sorted(BUILTIN_IMAGES))}")


#: How an upsampler extends the image at its border (PyTorch's ``F.pad`` modes).
PADDINGS = ("reflect", "replicate", "zeros", "circular")
#: Paddings of the bounded convolutions (a subset of :data:`PADDINGS`).
CONV_PADDINGS = ("reflect", "zeros")
#: How a convolution's Lipschitz norm is computed: exact SVD, power iteration, or the operator norm.
LIPSCHITZ_METHODS = ("svd", "power", "operator")
#: Initialisations of the convolutions: archlab's He-uniform for LeakyReLU(0.01), paper 000's (a = 0), PyTorch's.
INITS = ("kaiming-leaky", "kaiming", "torch")

#: The stop rules a fit runs beside itself (:data:`archlab.loop.RULES`): paper 000's blur/sharpness ratio,
#: Wang et al.'s windowed and exponential moving variance, and the discrepancy principle (noise tasks) on the
#: output (``discrepancy``) and on the EMA of the outputs (``ema_discrepancy``), which then returns the EMA, and
#: for grey JPEG the EMA's entry into the observation's quantisation constraint set (``jpeg_consistency``).
STOP_RULES = ("ratio", "wmv", "emv", "discrepancy", "ema_discrepancy", "jpeg_consistency")
#: The stop rules that return the moving average of the outputs where they stop (the others: the output).
EMA_STOP_RULES = ("ema_discrepancy", "jpeg_consistency")
