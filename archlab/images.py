"""Image I/O, built-in samples and small geometric helpers.

Inside archlab an image is a ``(N, C, H, W)`` float32 tensor in [0, 1]; NumPy
``(H, W[, C])`` arrays appear only at the I/O edges handled here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from archlab.vocabulary import BUILTIN_IMAGES, check_image_source

#: ITU-R BT.601 luma weights (the Y of Pillow's YCbCr and of ``convert("L")``).
LUMA = (0.299, 0.587, 0.114)


def builtin_names() -> list[str]:
    """Names accepted by :func:`load` besides file paths (scikit-image's bundled samples)."""
    return sorted(BUILTIN_IMAGES)


def from_numpy(array: np.ndarray) -> torch.Tensor:
    """Convert an ``(H, W)`` or ``(H, W, C)`` array to a ``(1, C, H, W)`` float32 tensor in [0, 1].

    Integer arrays are scaled by their dtype's maximum (8- and 16-bit alike); an alpha
    channel is dropped (RGBA -> RGB, grey+alpha -> grey).
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"image: unsupported array shape {array.shape}; expected (H, W), (H, W, 1|3|4)")
    if array.shape[2] in (2, 4):
        array = array[:, :, :-1]
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float64) / np.iinfo(array.dtype).max
    elif array.dtype == bool:
        array = array.astype(np.float64)
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)[None]
    if not torch.isfinite(tensor).all():
        raise ValueError("image: contains non-finite values")
    return tensor.clamp(0.0, 1.0).contiguous()


def to_numpy(image: torch.Tensor) -> np.ndarray:
    """The first image of a batch as an ``(H, W)`` (grey) or ``(H, W, C)`` float array in [0, 1]."""
    array = image.detach()[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


def _read_file(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I"):
                return np.clip(np.asarray(im, dtype=np.int64), 0, 65535).astype(np.uint16)
            if im.mode not in ("L", "LA", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            return np.asarray(im)
    except UnidentifiedImageError as exc:
        raise ValueError(f"image: cannot read {path} (not an image Pillow understands)") from exc
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:  # truncated, corrupt, or a decompression bomb
        raise ValueError(f"image: cannot read {path}: {' '.join(str(exc).split())}") from exc


def load(source: str | os.PathLike, *, grey: bool = False) -> torch.Tensor:
    """Load an image file or a built-in sample as a ``(1, C, H, W)`` tensor in [0, 1].

    Parameters
    ----------
    source : str or path
        A file (PNG/JPEG/BMP/TIFF; grey, RGB or RGBA; 8 or 16 bit) or one of
        :func:`builtin_names`. RGBA loses its alpha channel; grey stays one channel.
    grey : bool
        Convert to luma (ITU-R BT.601) after loading.
    """
    name = str(source)
    if name in BUILTIN_IMAGES and not Path(name).exists():
        import skimage.data

        array = getattr(skimage.data, BUILTIN_IMAGES[name])()
    else:
        path = Path(name)
        check_image_source(name)
        if path.stat().st_size == 0:
            raise ValueError(f"image: {name} is empty")
        array = _read_file(path)
    image = from_numpy(array)
    if min(image.shape[-2:]) < 2:
        raise ValueError(f"image: {name} is {image.shape[-1]}x{image.shape[-2]} pixels; at least 2x2 is needed")
    return to_grey(image) if grey else image


def image_size(source: str | os.PathLike) -> tuple[int, int] | None:
    """``(H, W)`` of an image file from its header alone (nothing is decoded); None for a built-in (or no file)."""
    name = str(source)
    if not Path(name).is_file():
        return None  # a built-in, or nothing: :func:`load` says which
    try:
        with Image.open(name) as im:
            return im.size[1], im.size[0]
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"image: cannot read {name}: {' '.join(str(exc).split())}") from exc


def describe(source: str | os.PathLike) -> str:
    """A short note on conversions :func:`load` applies to ``source`` (grey, alpha dropped, 16-bit)."""
    name = str(source)
    if name in BUILTIN_IMAGES and not Path(name).exists():
        return ""
    with Image.open(name) as im:
        mode = im.mode
    notes = {"LA": "grey with alpha: alpha dropped", "RGBA": "RGBA: alpha dropped", "P": "palette: converted to RGB"}
    if mode.startswith("I"):
        return "16-bit: scaled to [0, 1]"
    return notes.get(mode, "grey: one channel" if mode == "L" else "")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success, remove it on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a finished output gets the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a new, empty temporary folder beside ``path``; on success it takes the place of ``path``
    (an earlier folder there is moved aside, then removed), on failure it is removed. So ``path`` is
    whole or absent, even if the process is killed: a folder left by a killed process
    (``.NAME.partial-PID-*`` or ``.NAME.old-PID-*``) is removed by the next call for the same path."""
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("partial", "old"):
        for stale in path.parent.glob(f".{path.name}.{kind}-*"):
            pid = stale.name[len(f".{path.name}.{kind}-"):].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a finished output gets the usual permissions
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-{os.getpid()}-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def finite_json(data: dict, reasons: dict[str, str] | None = None) -> dict:
    """``data`` made strict JSON: every NaN/±inf number becomes null, and ``data["nulls"]`` says why, per
    key (``reasons[key]`` where the caller knows it, else "not a finite number (nan)")."""
    reasons, nulls = reasons or {}, {}

    def clean(value, key: str):
        if isinstance(value, dict):
            return {k: clean(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, (float, np.floating)) and not np.isfinite(value):
            nulls[key] = reasons.get(key, f"not a finite number ({float(value)})")
            return None
        return value.item() if isinstance(value, np.generic) else value

    out = clean(data, "")
    nulls.update({k: v for k, v in reasons.items() if k in out and out[k] is None})
    if nulls:
        out["nulls"] = nulls
    return out


def write_json(data: dict, path: str | os.PathLike, reasons: dict[str, str] | None = None) -> Path:
    """Write :func:`finite_json` of ``data`` (indented, no NaN/Infinity) atomically to ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(finite_json(data, reasons), indent=2, allow_nan=False, default=float) + "\n")
    return path


def save(image: torch.Tensor | np.ndarray, path: str | os.PathLike) -> Path:
    """Save the first image of a batch (or an array in [0, 1]) as an 8-bit file, atomically."""
    array = to_numpy(image) if isinstance(image, torch.Tensor) else np.asarray(image)
    array = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    return path


def to_grey(image: torch.Tensor) -> torch.Tensor:
    """Luma Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601); one-channel input is returned as is."""
    if image.shape[1] == 1:
        return image
    return torch.einsum("nchw,c->nhw", image, image.new_tensor(LUMA)).unsqueeze(1)  # one pass over the channels


RESIZE_METHODS = ("torch", "pil")


def resize(image: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None,
           method: str = "torch") -> torch.Tensor:
    """Bicubic, antialiased resize by ``scale`` or to ``size`` = (H, W), clamped to [0, 1].

    ``method="torch"`` interpolates the float image (``F.interpolate``, a = −0.75);
    ``method="pil"`` resizes the 8-bit image with Pillow's ``BICUBIC`` (a = −0.5) and keeps
    8-bit values, as the papers' code prepares Set9 ×¼ (REFERENCE §5b).
    """
    if (scale is None) == (size is None):
        raise ValueError("resize: give exactly one of scale or size")
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize: method {method!r} is invalid; allowed: {', '.join(RESIZE_METHODS)}")
    if size is None:
        size = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
    if method == "pil":
        array = (image[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        pil = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        return from_numpy(np.asarray(pil.resize((size[1], size[0]), Image.BICUBIC)))
    out = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True)
    return out.clamp(0.0, 1.0)


def center_crop(image: torch.Tensor, multiple: int = 1, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Centre crop to ``size`` (H, W) if given, then down to multiples of ``multiple``."""
    h, w = image.shape[-2:]
    th, tw = size if size is not None else (h, w)
    th, tw = min(th, h) // multiple * multiple, min(tw, w) // multiple * multiple
    if th < 1 or tw < 1:
        raise ValueError(f"image: {w}x{h} is too small for a multiple of {multiple}")
    top, left = (h - th) // 2, (w - tw) // 2
    return image[..., top : top + th, left : left + tw]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files of a dataset folder, sorted by name."""
    suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"images: {folder} is not a folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)


def datasets_root() -> Path:
    """Where the shared datasets live: ``$ARCHLAB_DATASETS``, else ``../shared/datasets`` from here or the cwd."""
    env = os.environ.get("ARCHLAB_DATASETS")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent.parent
    candidates += [here.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ValueError("datasets: not found; set ARCHLAB_DATASETS to the datasets folder")
