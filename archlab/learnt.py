"""A recommendation learnt from a study: which configuration restores *this* image best.

A study of the controlled DIP (``studies/recommend-*.toml``) fits every configuration it tries to every
training image and keeps, per (configuration, image), the PSNR at the automatic stop and the seconds
it took. From those rows two regressors are learnt (scikit-learn's ``HistGradientBoostingRegressor``):

    gain(f, c)    = PSNR(c, image) − mean_c' PSNR(c', image)    from the image's features f (its texture,
                                                                 :func:`archlab.texture.features`, and its
                                                                 number of channels) and c,
    log seconds(c, channels)                                    from the configuration and the image's number
                                                                 of channels (the fits' CPU seconds where the
                                                                 table has them for every row, else their wall
                                                                 seconds: :func:`time_column`),

so the difficulty of an image (its mean PSNR) drops out and what is learnt is how a configuration suits a
texture. For a new image every configuration of the study is scored and the one with the largest
predicted gain is recommended among those predicted no slower than the default (:data:`DEFAULT_CONFIG`)
on images of its number of channels (the default stops sooner on grey images: 4.5 s against 9.7 s per 64-px
crop in the denoising studies, so a time learnt from the configuration alone let grey images take longer).
The rows are shipped as a CSV per task (package data, no pickles) and the regressors are fitted from them at
first use (seconds); :func:`archlab.studies.learning_table` builds a table from any study storage (``archlab
study learn``), so a user can learn from studies of their own images and tasks. :func:`cross_validate` measures
the choice on the study's own images held out of the learning (every configuration was fitted to every image, so
the chosen one's PSNR is measured, not predicted).

A restoration averages seeded fits, so a configuration faster than the default can spend the time it saves on more
of them: :func:`best_within_budget` chooses, from restorations measured on a study's training images (a
configuration fitted k times, the PSNR of the fits' mean and their CPU seconds; ``benchmarks/restore_budget.py``
measures and ships them per task), the (configuration, k) with the best mean PSNR within the default
restoration's CPU time.
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import GroupKFold

from archlab import checks, texture
from archlab.fitting import FitSettings

#: The configuration a learnt recommendation chooses (the searchable parameters of the recommend studies).
CONFIG_COLUMNS = ("depth", "width", "skip", "upsampler", "lipschitz", "lr", "input_jitter")
#: The fields of :data:`CONFIG_COLUMNS` that are fit settings (:class:`archlab.fitting.FitSettings`); the rest
#: are :class:`archlab.models.ArchSpec` fields.
FIT_COLUMNS = ("lr", "input_jitter")
#: The fields of :data:`CONFIG_COLUMNS` that are numbers (the rest are categories).
NUMERIC = ("depth", "width", "skip", "lipschitz", "lr", "input_jitter")
#: The fields of :data:`CONFIG_COLUMNS` that are integers.
INTEGERS = ("depth", "width", "skip")
#: The configuration to beat: ``controlled-64`` with its learning rate and input jitter in ``archlab restore``
#: (:data:`archlab.restoration.DEFAULT_FIT`).
DEFAULT_CONFIG = {"depth": 3, "width": 64, "skip": 0, "upsampler": "bilinear", "lipschitz": 2.0, "lr": 0.002,
                  "input_jitter": FitSettings.input_jitter}
#: What the regressors read of an image (:func:`image_features`): its texture features, which are measured on
#: the luma, and its number of channels (1 grey, 3 colour), because one texture restores differently when the
#: network sees it in three channels.
FEATURES = (*texture.FEATURE_NAMES, "channels")
#: The shipped table of each task (package data), as ``archlab study learn`` writes it.
TABLE_RESOURCE = "recommend-{task}.csv"
#: The measured restorations of each task (package data), as ``benchmarks/restore_budget.py --ship`` writes them.
RESTORATIONS_RESOURCE = "recommend-{task}-restorations.csv"
#: The choices that :func:`cross_validate` measures and :func:`held_out_choice` picks between.
CHOICES = ("learnt", "fixed")


def split_config(config: dict) -> tuple[dict, dict]:
    """A configuration's :class:`~archlab.models.ArchSpec` fields and its fit settings (:data:`FIT_COLUMNS`)."""
    return ({k: v for k, v in config.items() if k not in FIT_COLUMNS},
            {k: v for k, v in config.items() if k in FIT_COLUMNS})


def image_features(image, texture_features: pd.Series | None = None) -> pd.Series:
    """:data:`FEATURES` of an observation (as :func:`archlab.texture.as_image` takes it):
    :func:`archlab.texture.features` (noise σ estimated on the luma and discounted; ``texture_features`` when
    already computed) and ``channels`` = C."""
    image = texture.as_image(image)
    texture_features = texture.features(image) if texture_features is None else texture_features
    return pd.concat([texture_features, pd.Series({"channels": float(image.shape[-3])})])


def table_path(task: str) -> Path:
    """Where the table shipped for ``task`` lives (it may not exist)."""
    return Path(str(resources.files("archlab.data") / TABLE_RESOURCE.format(task=task)))


def restorations_path(task: str) -> Path:
    """Where the restorations measured for ``task`` (:func:`best_within_budget`'s rows) are shipped (it may not
    exist)."""
    return Path(str(resources.files("archlab.data") / RESTORATIONS_RESOURCE.format(task=task)))


def held_out_path(table: str | os.PathLike) -> Path:
    """Where ``archlab study learn --folds K`` writes the :func:`cross_validate` rows of the table at ``table``."""
    table = Path(table)
    return table.with_name(f"{table.stem}-cv.csv")


@functools.lru_cache(maxsize=8)
def held_out_choice(task: str) -> tuple[str, pd.Series] | None:
    """Which choice the shipped table's cross-validation supports: ``"learnt"`` (the per-image choice of
    :class:`LearntRecommender`) or ``"fixed"`` (:func:`best_single`), whichever had the higher mean measured
    PSNR on the held-out images (the per-image choice must win outright to be used), with the mean PSNR gain
    over the default of each of :data:`CHOICES`; None when no cross-validation was shipped for ``task``.

    This is model selection by the error on images held out of the learning (the written rows of
    ``archlab study learn --folds K``).

    References
    ----------
    .. [1] T. Hastie, R. Tibshirani and J. Friedman, *The Elements of Statistical Learning*, 2nd ed., 2009,
       §7.10 (cross-validation).
    """
    path = held_out_path(table_path(task))
    if not path.is_file():
        return None
    rows = pd.read_csv(path)
    gains = pd.Series({name: float((rows[f"{name}_psnr"] - rows["default_psnr"]).mean()) for name in CHOICES})
    return ("learnt" if gains["learnt"] > gains["fixed"] else "fixed"), gains


def load_table(task: str, path: str | os.PathLike | None = None) -> pd.DataFrame:
    """A table of :func:`archlab.studies.learning_table` rows: ``path``, else the one shipped for ``task``."""
    source = Path(path) if path is not None else table_path(task)
    if not source.is_file():
        checks.fail("recommendation", f"no learnt table for task {task!r} ({source}); build one with "
                                      f"`archlab study learn STUDY`")
    table = pd.read_csv(io.StringIO(source.read_text()), dtype={"image": str, "task": str, "upsampler": str})
    missing = [c for c in ("image", *CONFIG_COLUMNS, "stop_psnr", "seconds", *FEATURES) if c not in table]
    if missing:
        checks.fail("table", f"{source} lacks the columns {missing[:4]}; rebuild it with `archlab study learn`")
    return table


def _config_frame(configs: pd.DataFrame, categories: tuple[str, ...]) -> pd.DataFrame:
    """Configurations as numbers: depth, width, skip, log λ, log lr, input jitter, one column per upsampler."""
    frame = pd.DataFrame({"depth": configs["depth"].astype(float), "log2_width": np.log2(configs["width"].astype(float)),
                          "skip": configs["skip"].astype(float), "log_lipschitz": np.log(configs["lipschitz"].astype(float)),
                          "log_lr": np.log(configs["lr"].astype(float)),
                          "input_jitter": configs["input_jitter"].astype(float)}, index=configs.index)
    for name in categories:
        frame[f"upsampler={name}"] = (configs["upsampler"] == name).astype(float)
    return frame


@dataclass(frozen=True)
class Choice:
    """One scored configuration: its fields, the predicted PSNR gain over the study's mean on this image,
    the same over the default configuration, the predicted seconds, whether it is the default, and what the
    seconds measure (:data:`TIME_UNITS` of the table's :func:`time_column`)."""

    config: dict
    gain: float
    gain_over_default: float
    seconds: float
    is_default: bool = False
    time_unit: str = "s"


class LearntRecommender:
    """The regressors of the module docstring, fitted on the rows of :func:`archlab.studies.learning_table`.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`archlab.studies.learning_table` rows of one task.
    random_state : int
        Seed of the boosted trees.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> rows = []
    >>> for image in range(12):
    ...     feats = dict(zip(FEATURES, rng.normal(size=len(FEATURES))))
    ...     for width in (32, 128):  # wide suits images whose first feature is positive
    ...         psnr = 25 + (1 if (width == 128) == (feats[texture.FEATURE_NAMES[0]] > 0) else -1)
    ...         rows.append({"task": "denoise", "image": str(image), **DEFAULT_CONFIG, "width": width,
    ...                      "stop_psnr": psnr, "seconds": width / 10, **feats})
    >>> model = LearntRecommender(pd.DataFrame(rows))
    >>> len(model.configs), sorted(model.configs["width"])
    (2, [32, 128])
    """

    def __init__(self, table: pd.DataFrame, random_state: int = 0):
        if table.empty:
            checks.fail("table", "no rows to learn from")
        self.configs = table[list(CONFIG_COLUMNS)].drop_duplicates().reset_index(drop=True)
        self.categories = tuple(sorted(set(self.configs["upsampler"]) | {DEFAULT_CONFIG["upsampler"]}))
        gain = table["stop_psnr"] - table.groupby("image")["stop_psnr"].transform("mean")
        table = table.reset_index(drop=True)
        encoded = _config_frame(table, self.categories)
        design = pd.concat([table[list(FEATURES)], encoded], axis=1)
        self.psnr = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, max_leaf_nodes=15,
                                                  min_samples_leaf=10, random_state=random_state)
        self.psnr.fit(design, gain.to_numpy())
        self.time = HistGradientBoostingRegressor(max_iter=200, min_samples_leaf=5, random_state=random_state)
        self.time_unit = TIME_UNITS[time_column(table)]
        self.time.fit(_timed(encoded, table["channels"]), np.log(table[time_column(table)].astype(float)))
        # what rank scores, independent of the image: the study's configurations and the default (configurations
        # equal to the six significant digits the tables keep are one), encoded
        candidates = pd.concat([self.configs, pd.DataFrame([DEFAULT_CONFIG])], ignore_index=True)
        ids = _config_ids(candidates)
        unique = ~ids.duplicated()
        self._candidates = candidates[unique].reset_index(drop=True)
        self._encoded = _config_frame(self._candidates, self.categories)
        self._default = int(np.flatnonzero(ids[unique].to_numpy() == _config_id(DEFAULT_CONFIG))[0])
        # the numbers of channels each candidate was fitted to (a configuration one study tried on grey images
        # only has no evidence on colour ones)
        seen = table.groupby(_config_ids(table))["channels"].agg(lambda c: set(c.astype(float)))
        self._channels = [seen.get(i, set()) for i in ids[unique]]
        self._table_channels = set(table["channels"].astype(float))

    def rank(self, features: pd.Series) -> list[Choice]:
        """Every configuration the studies fitted to images of this number of channels (all of them when they
        fitted none), for an image of these ``features``, best predicted gain first (the default configuration
        is scored too, whether the study tried it or not; configurations equal to the six significant digits
        the tables keep are one)."""
        default, channels = self._default, float(features["channels"])
        unseen = channels not in self._table_channels
        scored = [i for i in range(len(self._candidates)) if unseen or i == default or channels in self._channels[i]]
        design = pd.concat([pd.DataFrame([features[list(FEATURES)]] * len(scored), index=scored),
                            self._encoded.loc[scored]], axis=1)
        gains = dict(zip(scored, self.psnr.predict(design)))
        seconds = dict(zip(scored, np.exp(self.time.predict(_timed(self._encoded.loc[scored], channels)))))
        choices = [Choice({k: _plain(k, v) for k, v in self._candidates.iloc[i].items()}, float(gains[i]),
                          float(gains[i] - gains[default]), float(seconds[i]), i == default, self.time_unit)
                   for i in scored]
        return sorted(choices, key=lambda c: -c.gain)

    def choose(self, features: pd.Series, among: set[str] | None = None) -> tuple[Choice, list[Choice]]:
        """The configuration with the largest predicted gain among those predicted no slower than the
        default (and, when given, whose :func:`_config_id` is in ``among``), and the full ranking."""
        ranking = self.rank(features)
        default = next(c for c in ranking if c.is_default)
        allowed = [c for c in ranking if c.seconds <= default.seconds * (1 + 1e-9)
                   and (among is None or _config_id(c.config) in among)]
        return (allowed[0] if allowed else default), ranking


def time_column(table: pd.DataFrame) -> str:
    """The time a table's configurations are compared by: ``cpu_seconds`` where every row has it, else
    ``seconds``.

    A study's fits run one after another over hours, beside whatever else loads the cores; their wall time
    follows that load (a one-thread fit beside two busy processes on two cores took 1.5-1.7× the wall time, the
    same CPU time), so a configuration fitted under a heavier load than the default looks slower than it is,
    and one fitted under a lighter load faster. The CPU time of a one-thread fit does not follow the load, so
    it is used wherever the table has it; a table joined from studies that did not record it is compared by
    wall time throughout, never by a mix of both.
    """
    return "cpu_seconds" if "cpu_seconds" in table and table["cpu_seconds"].notna().all() else "seconds"


#: How each time of :func:`time_column` is written beside a number.
TIME_UNITS = {"cpu_seconds": "CPU s", "seconds": "s"}


def _timed(encoded: pd.DataFrame, channels) -> pd.DataFrame:
    """What the time regressor reads: the images' numbers of channels and the encoded configurations."""
    channels = np.broadcast_to(np.asarray(channels, float), len(encoded))
    return pd.concat([pd.DataFrame({"channels": channels}, index=encoded.index), encoded], axis=1)


def cross_validate(table: pd.DataFrame, folds: int = 5, random_state: int = 0) -> pd.DataFrame:
    """The learnt choice on images held out of the learning, beside the alternatives, as measured.

    The images of ``table`` are split into ``folds`` groups (scikit-learn's ``GroupKFold``: an image's rows
    never sit on both sides). For each held-out image the rows of the other images give

    * ``learnt``: :meth:`LearntRecommender.choose` from the image's features, among the configurations
      fitted to the held-out image;
    * ``fixed``: the one configuration with the best mean PSNR over the other images among those fitted to
      every image and no slower than the default on their mean (what a study gives without per-image
      learning);

    and the image's own rows give ``default`` (:data:`DEFAULT_CONFIG`) and ``oracle`` (its best configuration,
    an upper bound no user can pick). Every PSNR and time is the measured one of that (configuration, image);
    the time is :func:`time_column`'s.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`archlab.studies.learning_table` rows of one task in which the default was fitted to every
        image (other configurations may have been fitted to some images only, as when studies are joined; one
        fitted twice to an image is measured by the mean of its rows).
    folds : int
        Number of image groups (at least 2, at most the number of images).
    random_state : int
        Seed of the boosted trees.

    Returns
    -------
    pandas.DataFrame
        One row per image: ``image``, ``fold`` and ``<choice>_psnr``, ``<choice>_seconds`` for ``learnt``,
        ``fixed``, ``default`` and ``oracle``.
    """
    ids = _config_ids(table)
    default_id = _config_id(DEFAULT_CONFIG)
    keyed = table.assign(config_id=ids, seconds=table[time_column(table)])
    measured = keyed.groupby(["image", "config_id"]).agg(  # a configuration a study ran twice: the mean
        {"stop_psnr": "mean", "seconds": "mean", **dict.fromkeys(FEATURES, "first")})
    images = table["image"].drop_duplicates().to_numpy()
    if not 2 <= folds <= len(images):
        checks.fail("folds", f"{folds} is invalid; allowed: 2 to the number of images ({len(images)})")
    if (ids == default_id).groupby(table["image"]).sum().min() == 0:
        checks.fail("table", "the default configuration was not fitted to every image; run it in the study")
    everywhere = _fitted_everywhere(keyed)
    rows = []
    for fold, (train, test) in enumerate(GroupKFold(folds).split(images, groups=images)):
        learning = keyed[keyed["image"].isin(images[train])]
        model = LearntRecommender(learning, random_state)
        fixed = _best_single_id(learning, everywhere)
        for image in images[test]:
            own = measured.loc[image]
            chosen, _ = model.choose(own.iloc[0], among=set(own.index))
            picks = {"learnt": _config_id(chosen.config), "fixed": fixed, "default": default_id,
                     "oracle": own["stop_psnr"].idxmax()}
            rows.append({"image": image, "fold": fold,
                         **{f"{name}_{measure}": own.loc[pick, column] for name, pick in picks.items()
                            for measure, column in (("psnr", "stop_psnr"), ("seconds", "seconds"))}})
    return pd.DataFrame(rows)


def best_single(table: pd.DataFrame) -> Choice | None:
    """The one configuration a study gives without per-image learning: the best mean PSNR at the stop over the
    table's images among the configurations fitted to every image and no slower than :data:`DEFAULT_CONFIG` on
    their mean (in :func:`time_column`'s time; the ``fixed`` choice of :func:`cross_validate`, here from every
    image).

    Returns
    -------
    Choice or None
        The configuration, with its *measured* means: ``gain`` over the table's mean PSNR, ``gain_over_default``
        over the default's and ``seconds``; None when the default was not fitted to every image.
    """
    keyed = table.assign(config_id=_config_ids(table), seconds=table[time_column(table)])
    everywhere, default_id = _fitted_everywhere(keyed), _config_id(DEFAULT_CONFIG)
    if default_id not in everywhere:
        return None
    chosen = _best_single_id(keyed, everywhere)
    means = keyed.groupby("config_id")[["stop_psnr", "seconds"]].mean()
    config = keyed.loc[keyed["config_id"] == chosen, list(CONFIG_COLUMNS)].iloc[0]
    psnr = means.loc[chosen, "stop_psnr"]
    return Choice({k: _plain(k, v) for k, v in config.items()}, float(psnr - keyed["stop_psnr"].mean()),
                  float(psnr - means.loc[default_id, "stop_psnr"]), float(means.loc[chosen, "seconds"]),
                  chosen == default_id, TIME_UNITS[time_column(table)])


def _fitted_everywhere(keyed: pd.DataFrame) -> pd.Index:
    """The ``config_id`` of the configurations fitted to every image of ``keyed``."""
    counts = keyed.groupby("config_id")["image"].nunique()
    return counts.index[counts == keyed["image"].nunique()]


def _best_single_id(keyed: pd.DataFrame, among: pd.Index) -> str:
    """The ``config_id`` among ``among`` with the best mean PSNR at the stop over ``keyed``'s images, no slower than
    the default on their mean."""
    means = keyed[keyed["config_id"].isin(among)].groupby("config_id")[["stop_psnr", "seconds"]].mean()
    return means[means["seconds"] <= means.loc[_config_id(DEFAULT_CONFIG), "seconds"]]["stop_psnr"].idxmax()


@dataclass(frozen=True)
class Budgeted:
    """A configuration and how many seeded fits of it a restoration averages, with what was measured of that
    restoration over ``images`` images: the mean PSNR ``gain`` over the default restoration's (dB),
    ``time_ratio``, its mean CPU seconds over the default restoration's, and ``slower``, the fraction of the
    images on which it took longer than the default restoration."""

    config: dict
    fits: int
    gain: float
    time_ratio: float
    images: int
    slower: float = 0.0

    def to_dict(self) -> dict:
        return {"config": self.config, "fits": self.fits, "gain_db": round(self.gain, 4),
                "time_ratio": round(self.time_ratio, 4), "images": self.images, "slower": round(self.slower, 4)}


#: The largest fraction of the images on which a restoration chosen by :func:`best_within_budget` may take longer
#: than the default restoration. Not zero: the default's own time on an image depends on where its stop fires, so
#: no restoration chosen before the fits is faster on every image.
MAX_SLOWER = 0.1


def measured_restorations(rows: pd.DataFrame, default_fits: int) -> pd.DataFrame | None:
    """Every restoration measured in ``rows`` (a configuration fitted k times) beside the default restoration.

    Parameters
    ----------
    rows : pandas.DataFrame
        One row per (image, configuration, k): ``image``, :data:`CONFIG_COLUMNS`, ``fits`` (k), ``psnr`` (of the
        mean of the first k fits) and ``cpu_seconds`` (of those fits), including the default's rows at
        ``default_fits``. Only images on which every (configuration, k) was measured are compared.
    default_fits : int
        How many fits the default restoration (:data:`DEFAULT_CONFIG`) averages.

    Returns
    -------
    pandas.DataFrame or None
        One row per restoration, indexed by (``config_id``: the configuration as one string, numbers to the six
        significant digits the tables keep; ``fits``): :data:`CONFIG_COLUMNS`, ``fits``, the means ``psnr`` and ``cpu_seconds`` over the
        images, ``gain`` (dB) and ``time_ratio`` over the default restoration's, ``slower`` (the fraction of the
        images on which it took longer than the default), ``images`` and ``is_default``; None when the default
        restoration is not in ``rows``.
    """
    keyed = rows.assign(config_id=_config_ids(rows), fits=rows["fits"].astype(int))
    counts = keyed.drop_duplicates(["image", "config_id", "fits"]).groupby("image").size()
    keyed = keyed[keyed["image"].isin(counts.index[counts == counts.max()])]
    default = (_config_id(DEFAULT_CONFIG), default_fits)
    indexed = keyed.set_index(["config_id", "fits"], drop=False)
    if default not in indexed.index:
        return None
    default_time = indexed.loc[default].set_index("image")["cpu_seconds"]
    keyed = keyed.assign(slower=keyed["cpu_seconds"].to_numpy() > default_time.reindex(keyed["image"]).to_numpy())
    out = keyed.groupby(["config_id", "fits"]).agg(**{c: (c, "first") for c in CONFIG_COLUMNS}, psnr=("psnr", "mean"),
                                                   cpu_seconds=("cpu_seconds", "mean"), slower=("slower", "mean"))
    out["fits"] = out.index.get_level_values("fits")
    out["gain"] = out["psnr"] - out.loc[default, "psnr"]
    out["time_ratio"] = out["cpu_seconds"] / out.loc[default, "cpu_seconds"]
    return out.assign(images=keyed["image"].nunique(), is_default=out.index == default)


def best_within_budget(rows: pd.DataFrame, default_fits: int, max_slower: float = MAX_SLOWER) -> Budgeted | None:
    """The restoration with the best mean PSNR among those measured to take no more CPU time than the default's.

    A restoration averages k seeded fits of one configuration c (:func:`archlab.restoration.fit_restarts`); its
    PSNR is that of the mean x̄_k, which rises with k as the fits' independent errors average out, and its time is
    the fits' sum. The default restoration is :data:`DEFAULT_CONFIG` fitted ``default_fits`` times (its time
    T_d). Among the measured (c, k) whose mean time over the images is at most the mean T_d and which take longer
    than the default on at most a fraction ``max_slower`` of the images,

        (c*, k*) = argmax_(c, k) mean_images PSNR(x̄_k(c)),

    so a configuration faster than the default may spend the time it saves on more fits, and a slower one may
    take the place of several of the default's.

    Parameters
    ----------
    rows, default_fits
        As :func:`measured_restorations` takes them.
    max_slower : float
        The largest fraction of the images on which the restoration may take longer than the default
        (:data:`MAX_SLOWER`).

    Returns
    -------
    Budgeted or None
        The restoration chosen, with its measured means; None when the default restoration is not in ``rows``.
    """
    measured = measured_restorations(rows, default_fits)
    if measured is None:
        return None
    allowed = measured[(measured["time_ratio"] <= 1.0) & (measured["slower"] <= max_slower)]
    chosen = measured.loc[allowed["psnr"].idxmax()]
    return Budgeted({k: _plain(k, chosen[k]) for k in CONFIG_COLUMNS}, int(chosen["fits"]), float(chosen["gain"]),
                    float(chosen["time_ratio"]), int(chosen["images"]), float(chosen["slower"]))


@functools.lru_cache(maxsize=8)
def shipped_within_budget(task: str, default_fits: int) -> Budgeted | None:
    """:func:`best_within_budget` of the restorations shipped for ``task`` (None without them)."""
    path = restorations_path(task)
    if not path.is_file():
        return None
    rows = pd.read_csv(io.StringIO(path.read_text()), dtype={"image": str, "upsampler": str})
    missing = [c for c in ("image", *CONFIG_COLUMNS, "fits", "psnr", "cpu_seconds") if c not in rows]
    if missing:
        checks.fail("restorations", f"{path} lacks the columns {missing[:4]}; rebuild it with "
                                    f"`python benchmarks/restore_budget.py --ship`")
    return best_within_budget(rows, default_fits)


@functools.lru_cache(maxsize=8)
def shipped_best_single(task: str) -> Choice | None:
    """:func:`best_single` of the table shipped for ``task`` (None without one)."""
    return best_single(load_table(task)) if table_path(task).is_file() else None


def _config_id(config: dict) -> str:
    """A configuration as one string, numbers to the six significant digits the tables keep."""
    return "|".join(f"{_plain(k, config[k]):.6g}" if k in NUMERIC else str(config[k]) for k in CONFIG_COLUMNS)


def _config_ids(frame: pd.DataFrame) -> pd.Series:
    """:func:`_config_id` of each row of ``frame``."""
    return frame[list(CONFIG_COLUMNS)].apply(lambda row: _config_id(row.to_dict()), axis=1)


def _plain(key: str, value):
    """A configuration field as a plain Python value (depth, width and skip as ints)."""
    value = value.item() if hasattr(value, "item") else value
    return int(value) if key in INTEGERS else float(value) if key in NUMERIC else str(value)


@functools.lru_cache(maxsize=8)
def shipped_recommender(task: str) -> LearntRecommender:
    """The recommender learnt from the table shipped for ``task`` (fitted at first use; shared)."""
    return LearntRecommender(load_table(task))
