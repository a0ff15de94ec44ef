"""``archlab texture``: texture features of an image, the width predictor's cross-validation, the table."""

from __future__ import annotations

import argparse

from archlab.vocabulary import check_image_source


def register(subparsers) -> None:
    """Add ``texture features | cv | build-table`` to the ``archlab`` parser."""
    p = subparsers.add_parser("texture", help="texture features, width prediction and its cross-validation")
    sub = p.add_subparsers(dest="texture_command", required=True, metavar="SUBCOMMAND")
    feats = sub.add_parser("features", help="an image's noise estimate, texture score, width and features")
    feats.add_argument("image", help="image file or built-in name")
    feats.add_argument(
        "--noise-sigma",
        default="auto",
        help="noise standard deviation to discount, 0..255 scale per channel, or 'auto' (default)",
    )
    feats.set_defaults(func=show_features)
    cv = sub.add_parser("cv", help="repeated stratified k-fold CV of the width predictor (clean and noisy)")
    cv.add_argument("--table", help="features table CSV (default: the one shipped in the package)")
    cv.add_argument("--folds", type=int, default=5, help="folds (default 5)")
    cv.add_argument("--repeats", type=int, default=10, help="repeats (default 10)")
    cv.add_argument("--seed", type=int, default=0, help="seed of the fold shuffles (default 0)")
    cv.add_argument(
        "--train-sigmas",
        default="0,25,50",
        help="noise levels of the training observations, comma-separated (default 0,25,50, as the shipped model)",
    )
    cv.add_argument("--groups", choices=("dataset",), default=None,
                    help="dataset: one fold per source dataset (leave one out), so no source or image size sits "
                         "on both sides; --folds/--repeats/--seed then do not apply")
    cv.add_argument("-o", "--output", help="also write the results table to this CSV")
    cv.set_defaults(func=run_cv)
    build = sub.add_parser("build-table", help="recompute the features table from the Texture-DIP images")
    build.add_argument("-o", "--output", help="CSV to write (default: the package's own table)")
    build.add_argument("--datasets", help="datasets folder (default: $ARCHLAB_DATASETS or ../shared/datasets)")
    build.add_argument("--seed", type=int, default=0, help="seed of the noisy observations (default 0)")
    build.set_defaults(func=build_table)


def _noise_sigma(text: str):
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"--noise-sigma: expected 'auto' or a number >= 0 (0..255 scale), got {text!r}")
    return value / 255


def show_features(args: argparse.Namespace) -> int:
    """Print the noise estimate, texture score, predicted width (with probabilities) and the features."""
    sigma = _noise_sigma(args.noise_sigma)
    check_image_source(args.image)
    from archlab import texture

    image = texture.as_image(args.image)
    width, proba = texture.predict_width(image, sigma)
    print(f"image: {args.image} ({image.shape[-1]}x{image.shape[-2]}, {image.shape[1]} channel(s))")
    print(f"noise sigma (estimated, 0..255): {texture.estimate_noise_sigma(image) * 255:.2f}")
    print(f"texture score: {texture.texture_score(image, sigma):.4f}")
    print(f"width: {width}  (" + ", ".join(f"{w}: {p:.3f}" for w, p in proba.items()) + ")")
    for name, value in texture.features(image, sigma).items():
        print(f"{name:32s} {value: .6g}")
    return 0


def _sigmas(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError as exc:
        raise ValueError(f"--train-sigmas: expected comma-separated integers, got {text!r}") from exc


def run_cv(args: argparse.Namespace) -> int:
    """Cross-validate the width predictor on each noise level of the table, with and without compensation."""
    import pandas as pd
    from sklearn.dummy import DummyClassifier

    from archlab import images, texture

    table = texture.load_table(args.table)
    train = _sigmas(args.train_sigmas)
    columns = list(texture.FEATURE_NAMES)
    settings = dict(train_sigmas=train, columns=columns, n_splits=args.folds, n_repeats=args.repeats, seed=args.seed,
                    groups=args.groups)
    rows, confusions = [], []
    for compensated in (True, False):
        for sigma in sorted(set(table["sigma"])):
            result = texture.cross_validate(table, test_sigma=sigma, compensated=compensated, **settings)
            rows.append(_row("WidthPredictor", compensated, sigma, result))
            if compensated:
                confusions.append((sigma, result.confusion))
    prior = texture.cross_validate(table, estimator=DummyClassifier(strategy="prior"), **settings)
    rows.append(_row("class prior", True, 0, prior))
    results = pd.DataFrame(rows)
    folds = ("one fold per dataset (leave one out)" if args.groups else
             f"{args.folds}-fold stratified CV x {args.repeats}")
    print(
        f"{folds} on {prior.n_images} labelled images; "
        f"trained on sigma {','.join(map(str, train))}; features: {len(columns)}"
    )
    print(results.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for sigma, confusion in confusions:
        print(f"\nconfusion (compensated, test sigma {sigma}; rows true, columns predicted, mean per repeat):")
        print(confusion.to_string(float_format=lambda v: f"{v:.1f}"))
    if args.output:
        with images.atomic_path(args.output) as tmp:
            results.to_csv(tmp, index=False)
        print(f"\nwrote {args.output}")
    return 0


def _row(model: str, compensated: bool, sigma: int, result) -> dict:
    """A results row from a :class:`archlab.texture.CVResult`."""
    return {
        "model": model,
        "compensated": compensated,
        "test_sigma": sigma,
        "micro_auc": result.micro_auc,
        "auc_std": result.micro_auc_std,
        "accuracy": result.accuracy,
        "acc_std": result.accuracy_std,
        "acceptable": result.acceptable,
    }


def build_table(args: argparse.Namespace) -> int:
    """Recompute the features of every Texture-DIP image (clean, sigma 25 and 50) and write the CSV atomically."""
    from archlab import images, texture

    output = args.output or texture.table_path()
    table = texture.build_table(args.datasets, seed=args.seed)
    with images.atomic_path(output) as tmp:
        texture.write_table(table, tmp)
    print(f"wrote {output} ({len(table)} rows)")
    return 0
