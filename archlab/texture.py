"""Texture features and the width predictor of paper 004 (Liu et al., ICCV 2023, §3.5, §4.4).

An image is described by spatial features, the grey-level co-occurrence matrix (GLCM) properties of
Haralick et al. (``skimage.feature.graycomatrix/graycoprops``), and frequency features, the radial
power spectral density (PSD, ``spectral.radial_psd``) at fixed normalised radii plus its log-log
slope, all measured on a fixed analysis scale: tiles of :data:`ANALYSIS_SIDE` pixels, averaged, so
the vector describes texture per pixel and not the image's size. A decision tree selects features and
support-vector machines classify the width of a 2-level hourglass into {32, 64, 128}
(:class:`WidthPredictor`), trained on the Texture-DIP labels through a features table shipped as
package data (no pickle).

The image given is often the noisy observation. Features are computed after discounting white noise
of standard deviation sigma (estimated by :func:`estimate_noise_sigma` unless given): the PSD loses
its white-noise floor sigma^2 and the GLCM is taken on a Wiener-filtered image
(``scipy.signal.wiener`` with noise power sigma^2).
"""

from __future__ import annotations

import functools
import io
import os
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.signal
import scipy.stats
import torch
from skimage.feature import graycomatrix, graycoprops
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_selection import SelectFromModel
from sklearn.metrics import confusion_matrix, roc_auc_score
from sklearn.model_selection import LeaveOneGroupOut, RepeatedStratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler, label_binarize
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from archlab import images, spectral

#: Smallest accepted height and width (pixels).
MIN_SIZE = 32
#: GLCM pixel-pair distances (pixels) and angles (degrees). graycomatrix rounds the offset
#: (d sin a, d cos a), so d = 2 at 45 degrees would repeat d = 1; 1, 3, 5 give distinct offsets.
GLCM_DISTANCES = (1, 3, 5)
GLCM_ANGLES = (0, 45, 90, 135)
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
#: Grey levels the luma is quantised to before the GLCM.
GLCM_LEVELS = 64
#: Radii of the radial PSD (``spectral.radial_psd(bins=PSD_RINGS)``): 0, 1/16, ..., 1/2 cycles/pixel,
#: i.e. 1/8, 2/8, ..., 1 of the Nyquist frequency past the DC ring; defined from 16 px up.
PSD_RINGS = 9
#: Median absolute deviation of a standard normal variable, Phi^-1(3/4).
MAD_PER_SIGMA = float(scipy.stats.norm.ppf(0.75))
#: Absolute power (image units squared) added before logarithms so that a flat image stays finite;
#: far below 8-bit quantisation noise (1/255)^2/12 ~ 1.3e-6.
POWER_EPS = 1e-10
#: After subtracting the white-noise floor sigma^2 a PSD value keeps at least this fraction of it.
FLOOR_KEEP = 0.1

#: Side (pixels) of the square tiles the features are measured on (the image's shorter side when smaller),
#: and the most tiles averaged (evenly spread over the image).
ANALYSIS_SIDE = 64
MAX_TILES = 16

FEATURE_NAMES = tuple(
    f"glcm_{prop}_d{d}_a{a}" for prop in GLCM_PROPS for d in GLCM_DISTANCES for a in GLCM_ANGLES
) + tuple(f"psd_r{k}" for k in range(1, PSD_RINGS)) + ("psd_slope",)

LABELS_CSV = "texture-dip/labels.csv"
TABLE_RESOURCE = "texture_features.csv"
#: Noise levels (0..255 scale) of the observations stored in the features table.
TABLE_SIGMAS = (0, 25, 50)


def as_image(image) -> torch.Tensor:
    """An image given as a tensor, an array, a path or a built-in name, checked, as float64 (1, C, H, W).

    Raises ValueError for an unreadable file, a shape other than (1, 1 or 3, H, W), non-finite values,
    or a height or width below :data:`MIN_SIZE`.
    """
    if isinstance(image, (str, os.PathLike)):
        try:
            image = images.load(image)
        except OSError as exc:
            raise ValueError(f"image: cannot read {image}: {exc}") from exc
    elif isinstance(image, np.ndarray):
        image = images.from_numpy(image)
    elif not isinstance(image, torch.Tensor):
        raise ValueError(f"image: expected a tensor, an array or a path, got {type(image).__name__}")
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] not in (1, 3):
        raise ValueError(f"image: expected a (1, C, H, W) tensor with C in (1, 3), got {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ValueError("image: contains non-finite values")
    h, w = image.shape[-2:]
    if min(h, w) < MIN_SIZE:
        raise ValueError(f"image: {w}x{h} pixels is too small; height and width must be >= {MIN_SIZE}")
    return image.detach().to("cpu", torch.float64).clamp(0, 1)


def _grey_and_sigma(image, noise_sigma) -> tuple[np.ndarray, float]:
    """The luma of ``image`` and the standard deviation of its white noise (``noise_sigma`` per channel)."""
    tensor = as_image(image)
    grey = images.to_grey(tensor)[0, 0].numpy()
    if isinstance(noise_sigma, str) and noise_sigma == "auto":
        return grey, _mad_sigma(grey)
    try:
        sigma = float(noise_sigma)
    except (TypeError, ValueError):
        sigma = float("nan")
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"noise_sigma: expected 'auto' or a number >= 0, got {noise_sigma!r}")
    if tensor.shape[1] == 3:
        sigma *= float(np.linalg.norm(images.LUMA))
    return grey, sigma


def _mad_sigma(grey: np.ndarray) -> float:
    h, w = grey.shape[0] // 2 * 2, grey.shape[1] // 2 * 2
    g = grey[:h, :w]
    diagonal = (g[0::2, 0::2] - g[0::2, 1::2] - g[1::2, 0::2] + g[1::2, 1::2]) / 2
    return float(np.median(np.abs(diagonal)) / MAD_PER_SIGMA)


def estimate_noise_sigma(image) -> float:
    """Standard deviation of additive white Gaussian noise in an image, in [0, 1] image units.

    Donoho & Johnstone's robust median estimator (Biometrika 1994): sigma = median(|HH|) / 0.6745,
    HH the finest diagonal Haar wavelet sub-band, per channel, averaged over channels, as
    ``skimage.restoration.estimate_sigma(..., average_sigmas=True)`` does (computed directly, so
    PyWavelets is not needed). Texture finer than 2 px leaks into HH and biases sigma upwards.

    Parameters
    ----------
    image : tensor (1, C, H, W), array (H, W[, C]), path or built-in name

    Returns
    -------
    float
        sigma; multiply by 255 for the 0..255 scale of the papers.
    """
    channels = as_image(image)[0].numpy()
    return float(np.mean([_mad_sigma(channel) for channel in channels]))


def _psd(grey: np.ndarray) -> np.ndarray:
    """Radial PSD of the luma at the radii k / (2 (PSD_RINGS - 1)) cycles/pixel, k = 1 .. PSD_RINGS - 1."""
    return spectral.radial_psd(torch.from_numpy(grey)[None, None], bins=PSD_RINGS)[1][0, 1:].numpy()


def tiles(grey: np.ndarray) -> list[np.ndarray]:
    """The analysis tiles of an image: squares of :data:`ANALYSIS_SIDE` pixels (the shorter side when
    smaller) on a grid over the image, at most :data:`MAX_TILES` of them, evenly spread."""
    side = min(ANALYSIS_SIDE, *grey.shape)
    rows, cols = grey.shape[0] // side, grey.shape[1] // side
    corners = [(r * side, c * side) for r in range(rows) for c in range(cols)]
    if len(corners) > MAX_TILES:
        corners = [corners[i] for i in np.linspace(0, len(corners) - 1, MAX_TILES).round().astype(int)]
    return [grey[r:r + side, c:c + side] for r, c in corners]


def _psd_summary(psd: np.ndarray) -> tuple[np.ndarray, float]:
    log_power = np.log10(psd + POWER_EPS)
    return log_power, float(np.polyfit(np.log10(np.arange(1, PSD_RINGS)), log_power, 1)[0])


def _glcm(grey: np.ndarray) -> np.ndarray:
    levels = np.clip(np.floor(grey * GLCM_LEVELS), 0, GLCM_LEVELS - 1).astype(np.uint8)
    matrix = graycomatrix(
        levels, GLCM_DISTANCES, np.deg2rad(GLCM_ANGLES), levels=GLCM_LEVELS, symmetric=True, normed=True
    )
    return np.concatenate([graycoprops(matrix, prop).ravel() for prop in GLCM_PROPS])


def _denoised(grey: np.ndarray, sigma: float) -> np.ndarray:
    """The luma Wiener-filtered for white noise of ``sigma`` (unchanged for sigma = 0)."""
    if sigma <= 0:
        return grey
    with np.errstate(divide="ignore", invalid="ignore"):
        return scipy.signal.wiener(grey, mysize=5, noise=sigma**2)


def features(image, noise_sigma="auto") -> pd.Series:
    """The texture feature vector of paper 004 §3.5 for one image.

    Spatial: the GLCM properties contrast, dissimilarity, homogeneity, energy, correlation and ASM
    (``graycoprops``) at distances :data:`GLCM_DISTANCES` and angles 0, 45, 90, 135 degrees, on the
    luma quantised to :data:`GLCM_LEVELS` levels. Frequency: the radial PSD
    S(r) = mean_{|f| ~ r} |F{Y}(f)|^2 / HW of ``spectral.radial_psd`` (the azimuthal average of paper
    004 §3.5) at r = k/16 cycles/pixel, k = 1..8 (fixed normalised radii, so the vector does not depend
    on the image size), as log10 S, plus the least-squares slope of log10 S against log10 r (about -2 to
    -3 for natural images, 0 for white noise). Both are measured on :func:`tiles` of :data:`ANALYSIS_SIDE`
    pixels (GLCM properties and PSD values averaged over the tiles), so two images of one texture at
    different sizes give the same vector; the image's size is not a feature (paper 004's PSD vector, on
    integer radii, carries it implicitly, and the Texture-DIP widths follow it: every 256 x 256 image is
    labelled 32).

    Noise compensation (white noise of standard deviation sigma has a flat PSD of height sigma^2):
    each PSD value becomes max(S - sigma^2, 0.1 sigma^2) and the GLCM is computed on
    ``scipy.signal.wiener(x, 5, noise=sigma^2)``.

    Parameters
    ----------
    image : tensor (1, C, H, W), array (H, W[, C]), path or built-in name
        Grey or RGB (RGB -> BT.601 luma), any size with height and width >= 32.
    noise_sigma : "auto" or float
        Standard deviation (in [0, 1] image units, per channel, independent across channels) of the
        white noise to discount; "auto" estimates it on the luma with :func:`estimate_noise_sigma`'s
        estimator; 0 computes the features of the image as given.

    Returns
    -------
    pandas.Series
        float64 values indexed by :data:`FEATURE_NAMES`.
    """
    grey, sigma = _grey_and_sigma(image, noise_sigma)
    psd = np.mean([_psd(tile) for tile in tiles(grey)], axis=0)
    bins, slope = _psd_summary(np.maximum(psd - sigma**2, FLOOR_KEEP * sigma**2))
    glcm = np.mean([_glcm(tile) for tile in tiles(_denoised(grey, sigma))], axis=0)
    values = np.concatenate([glcm, bins, [slope]])
    return pd.Series(values, index=list(FEATURE_NAMES), dtype=np.float64)


def texture_score(image, noise_sigma="auto") -> float:
    """Texture score in [0, 1]: high-frequency power relative to white noise, on a log scale.

    With S_k = max(S(k/16) - sigma^2, 0) the noise-compensated radial PSD of :func:`features`
    (k = 1..8, up to the Nyquist radius 1/2 cycles/pixel), q = sum_{k>=4} k S_k / sum_{k>=4} k divided
    by sum_k k S_k / sum_k k, the mean power above half the Nyquist frequency over the mean power
    (rings weighted by their circumference k); q = 1 for white noise and q -> 0 for smooth content
    (paper 004 §3.1: fine-grained images have flatter PSDs). The score is
    clip(1 + log10(q) / 3, 0, 1): 1 for white noise, 0 for a flat image or any image whose
    half-Nyquist band holds less than 1/1000 of white noise's share; natural images fall between
    (fine-grained above coarse-grained).

    Under strong noise the half-Nyquist band of most images lies below the noise floor and the
    compensated score is uncertain; pure white noise is then indistinguishable from a flat image plus
    noise, so pass noise_sigma=0 to score an image as given.
    """
    grey, sigma = _grey_and_sigma(image, noise_sigma)
    psd = np.maximum(_psd(grey) - sigma**2, 0.0)
    rings = np.arange(1, PSD_RINGS)
    high = rings >= PSD_RINGS // 2
    q = (np.sum(psd[high] * rings[high]) / np.sum(rings[high])) / (np.sum(psd * rings) / np.sum(rings) + POWER_EPS)
    return float(np.clip(1 + np.log10(max(q, 1e-3)) / 3, 0.0, 1.0))


class WidthPredictor(ClassifierMixin, BaseEstimator):
    """Width classifier of paper 004 §3.5/§4.4: scaling, decision-tree feature selection, SVMs.

    A pipeline ``StandardScaler -> SelectFromModel(DecisionTreeClassifier) ->
    CalibratedClassifierCV(SVC, ensemble=False)``: features whose Gini importance in a depth-limited
    tree reaches ``threshold`` are kept, and a support-vector classifier (one-vs-one,
    i.e. three binary SVMs for the widths {32, 64, 128}) with probabilities from Platt's sigmoid
    calibration on 5-fold out-of-fold decision values (scikit-learn's replacement for the deprecated
    ``SVC(probability=True)``) classifies them. Generic on numeric X and any
    class labels; ``predict`` returns the most probable class, so it agrees with ``predict_proba``.

    Parameters
    ----------
    kernel : "linear", "rbf", "poly" or "sigmoid"
        SVM kernel; linear by default (65 labelled images, ~80 features: a linear boundary
        separates same-size images by texture better than an RBF one in cross-validation).
    C : float
        SVM regularisation.
    gamma : "scale", "auto" or float
        Coefficient of the non-linear kernels.
    tree_depth : int or None
        Maximum depth of the feature-selection tree.
    threshold : str or float
        ``SelectFromModel`` threshold on the tree's importances (default: half their mean).
    class_weight : "balanced", dict or None
        Class weights of the tree, and sample weights of the SVM and its calibration ("balanced":
        inversely proportional to class counts; None keeps the class priors, which the
        micro-averaged AUC rewards).
    random_state : int
        Seed of the selection tree.
    """

    def __init__(
        self,
        kernel="linear",
        C=0.1,
        gamma="scale",
        tree_depth=4,
        threshold="0.5*mean",
        class_weight=None,
        random_state=0,
    ):
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.tree_depth = tree_depth
        self.threshold = threshold
        self.class_weight = class_weight
        self.random_state = random_state

    def fit(self, X, y):
        """Fit the scaler, the selection tree and the SVMs on features X (n, d) and labels y (n,)."""
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        tree = DecisionTreeClassifier(
            max_depth=self.tree_depth, class_weight=self.class_weight, random_state=self.random_state
        )
        svm = CalibratedClassifierCV(SVC(kernel=self.kernel, C=self.C, gamma=self.gamma), ensemble=False)
        # Class weights as sample weights reach both the SVM and its sigmoid calibration.
        weights = compute_sample_weight(self.class_weight, y) if self.class_weight is not None else None
        self.pipeline_ = make_pipeline(StandardScaler(), SelectFromModel(tree, threshold=self.threshold), svm)
        self.pipeline_.fit(X, y, calibratedclassifiercv__sample_weight=weights)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n, n_classes), columns ordered as ``classes_``."""
        check_is_fitted(self)
        return self.pipeline_.predict_proba(validate_data(self, X, reset=False))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row of X."""
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def load_labels(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The Texture-DIP labels (paper 004 §4.4): image path, ``width`` (or NA), ``widths_ok``.

    Paths are relative to the datasets folder (``images.datasets_root()`` unless ``root`` is given).
    """
    root = Path(root) if root is not None else images.datasets_root()
    path = root / LABELS_CSV
    if not path.is_file():
        raise ValueError(f"datasets: {path} not found; set ARCHLAB_DATASETS to the datasets folder")
    labels = pd.read_csv(path, dtype={"image": str, "widths_ok": str})
    labels["width"] = labels["width"].astype("Int64")
    return labels


def noisy_observation(image: torch.Tensor, sigma: float, seed: int, key: str) -> torch.Tensor:
    """clip(x + sigma/255 n, 0, 1), n ~ N(0, I) seeded by (seed, sigma, crc32(key)); sigma on 0..255."""
    rng = np.random.default_rng([seed, int(sigma), zlib.crc32(key.encode())])
    noise = torch.from_numpy(rng.standard_normal(tuple(image.shape))).to(image.dtype)
    return (image + sigma / 255 * noise).clamp(0, 1)


def build_table(root=None, sigmas=TABLE_SIGMAS, seed: int = 0) -> pd.DataFrame:
    """Feature vectors of every Texture-DIP image, clean and noisy, with and without compensation.

    One row per (image, sigma in ``sigmas`` (0..255), compensated): the features of the observation
    :func:`noisy_observation` (sigma = 0: the clean image) with ``noise_sigma="auto"``
    (compensated) or 0, plus the label columns and ``noise_est`` (the luma noise estimate, 0..255).
    """
    root = Path(root) if root is not None else images.datasets_root()
    rows = []
    for record in load_labels(root).itertuples(index=False):
        clean = images.load(root / record.image)
        for sigma in sigmas:
            observed = clean if sigma == 0 else noisy_observation(clean, sigma, seed, record.image)
            estimate = _grey_and_sigma(observed, "auto")[1]
            for compensated in (True, False):
                values = features(observed, "auto" if compensated else 0.0)
                meta = {"image": record.image, "width": record.width, "widths_ok": record.widths_ok}
                meta |= {"sigma": sigma, "compensated": compensated, "noise_est": round(estimate * 255, 4)}
                rows.append(meta | values.to_dict())
    table = pd.DataFrame(rows)
    table["width"] = table["width"].astype("Int64")
    return table


def table_path() -> Path:
    """Where the features table shipped with the package lives."""
    return Path(str(resources.files("archlab.data") / TABLE_RESOURCE))


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a features table as CSV (6 significant digits), the format :func:`load_table` reads."""
    table.to_csv(path, index=False, float_format="%.6g")


def load_table(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read a features table written by :func:`build_table` (default: the one shipped in the package)."""
    if path is None:
        text = (resources.files("archlab.data") / TABLE_RESOURCE).read_text()
        source = io.StringIO(text)
    else:
        source = Path(path)
        if not source.is_file():
            raise ValueError(f"table: {source} not found")
    table = pd.read_csv(source, dtype={"image": str, "widths_ok": str})
    missing = [name for name in ("image", "width", "sigma", "compensated", *FEATURE_NAMES) if name not in table]
    if missing:
        raise ValueError(f"table: missing columns {missing[:5]}; rebuild it with `archlab texture build-table`")
    table["width"] = table["width"].astype("Int64")
    return table


def training_rows(table: pd.DataFrame, sigmas=TABLE_SIGMAS, compensated: bool = True) -> pd.DataFrame:
    """The labelled rows of ``table`` at noise levels ``sigmas`` and the given compensation."""
    keep = table["width"].notna() & table["sigma"].isin(list(sigmas)) & (table["compensated"] == compensated)
    return table[keep]


@functools.lru_cache(maxsize=1)
def default_predictor() -> WidthPredictor:
    """The shipped width predictor, fit at first use on the package's features table.

    Trained on the compensated features of every labelled image at sigma = 0, 25 and 50 (so it
    accepts clean or noisy observations); no pickle is loaded. Shared: clone it before refitting.
    """
    rows = training_rows(load_table())
    return WidthPredictor().fit(rows[list(FEATURE_NAMES)], rows["width"].astype(int).to_numpy())


def predict_width(image, noise_sigma="auto", predictor: WidthPredictor | None = None) -> tuple[int, dict]:
    """The width (32, 64 or 128) for ``image`` and the probability of each width (paper 004 §3.5).

    ``noise_sigma`` is passed to :func:`features` (the default predictor learnt compensated features,
    so keep "auto" or give the known noise level); ``predictor`` defaults to :func:`default_predictor`.
    """
    return width_from_features(features(image, noise_sigma), predictor)


def width_from_features(values: pd.Series, predictor: WidthPredictor | None = None) -> tuple[int, dict]:
    """:func:`predict_width` from an image's :func:`features` already computed."""
    predictor = predictor if predictor is not None else default_predictor()
    row = values.to_frame().T
    proba = predictor.predict_proba(row)[0]
    best = int(predictor.classes_[np.argmax(proba)])
    return best, {int(c): float(p) for c, p in zip(predictor.classes_, proba)}


@dataclass(frozen=True)
class CVResult:
    """Cross-validated width classification (paper 004 §4.4, Fig. 11a).

    ``micro_auc``: micro-averaged one-vs-rest ROC-AUC of the pooled out-of-fold probabilities,
    mean (and std) over repeats; ``accuracy``: exact width; ``acceptable``: predicted width in
    ``widths_ok``; ``confusion``: true (rows) vs predicted (columns) counts, mean over repeats.
    """

    micro_auc: float
    micro_auc_std: float
    accuracy: float
    accuracy_std: float
    acceptable: float
    confusion: pd.DataFrame
    n_images: int


def cross_validate(
    table: pd.DataFrame,
    *,
    test_sigma: int = 0,
    train_sigmas=TABLE_SIGMAS,
    compensated: bool = True,
    estimator=None,
    columns=FEATURE_NAMES,
    n_splits: int = 5,
    n_repeats: int = 10,
    seed: int = 0,
    groups: str | None = None,
) -> CVResult:
    """Repeated stratified k-fold CV over images (paper 004: 5 folds repeated 10 times), or one fold per
    source dataset.

    Folds split the labelled images (stratified by width), so an image's noisy versions never sit on
    both sides; each fold trains a clone of ``estimator`` (default :class:`WidthPredictor`) on the
    training images' rows at ``train_sigmas`` and scores the test images' rows at ``test_sigma``,
    using the feature ``columns``. With ``groups="dataset"`` each dataset (the first folder of an
    image's path: cbsd68, set12, set9) is the test fold once and the others train (leave one group
    out; ``n_splits``, ``n_repeats`` and ``seed`` do not apply), so images of one source and size
    never sit on both sides.
    """
    if groups not in (None, "dataset"):
        raise ValueError(f"groups: {groups!r} is invalid; allowed: None, 'dataset'")
    if test_sigma not in set(table["sigma"]) or not set(train_sigmas) <= set(table["sigma"]):
        raise ValueError(f"sigma: the table holds noise levels {sorted(set(table['sigma']))}")
    estimator = estimator if estimator is not None else WidthPredictor()
    rows = training_rows(table, set(train_sigmas) | {test_sigma}, compensated)
    names = rows.loc[rows["sigma"] == test_sigma, "image"].to_numpy()
    test_rows = rows[rows["sigma"] == test_sigma].set_index("image").loc[names]
    y = test_rows["width"].astype(int).to_numpy()
    classes = np.unique(y)
    if groups == "dataset":
        sources = np.array([name.split("/")[0] for name in names])
        n_repeats, n_splits = 1, len(set(sources))
        splits = LeaveOneGroupOut().split(names, y, sources)
    else:
        splits = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed).split(names, y)
    proba = np.zeros((n_repeats, len(y), len(classes)))
    for k, (train, test) in enumerate(splits):
        train_rows = rows[rows["image"].isin(names[train]) & rows["sigma"].isin(list(train_sigmas))]
        model = clone(estimator).fit(train_rows[list(columns)], train_rows["width"].astype(int).to_numpy())
        fold = np.zeros((len(test), len(classes)))  # a class the training fold lacks gets probability 0
        fold[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(test_rows[list(columns)].iloc[test])
        proba[k // n_splits, test] = fold
    truth = label_binarize(y, classes=classes)
    aucs = [roc_auc_score(truth, p, average="micro") for p in proba]
    predicted = classes[np.argmax(proba, axis=2)]
    accuracy = (predicted == y).mean(axis=1)
    ok = test_rows["widths_ok"].str.split().map(lambda ws: [int(w) for w in ws]).to_list()
    acceptable = np.mean([[p in ok[i] for i, p in enumerate(rep)] for rep in predicted])
    confusion = sum(confusion_matrix(y, rep, labels=classes) for rep in predicted) / n_repeats
    return CVResult(
        micro_auc=float(np.mean(aucs)),
        micro_auc_std=float(np.std(aucs)),
        accuracy=float(accuracy.mean()),
        accuracy_std=float(accuracy.std()),
        acceptable=float(acceptable),
        confusion=pd.DataFrame(confusion, index=classes, columns=classes),
        n_images=len(y),
    )
