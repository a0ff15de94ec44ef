"""``archlab spectral``: FBC of a fit, radial spectra, and the papers' spectral-bias experiments.

* ``fbc`` - fit like ``archlab restore`` and draw paper 000 Fig. 3 (FBC per band and PSNR, the peak marked);
* ``psd`` - radial power spectra of several images on one log-log plot (paper 004 Fig. 2);
* ``trajectory`` - paper 001 Fig. 1: distance between two seeds' trajectories on clean images;
* ``sinusoid`` - paper 001 Fig. 3: the 1-D two-sinusoid signal, convolutional vs fully-connected;
* ``lipschitz`` - paper 000 Fig. 5: FBC of the Decoder for several Lipschitz bounds λ.

Each experiment writes its figure and a table (CSV and Markdown) to the ``-o`` folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from archlab.cli import add_fit_arguments, check_fit, fit_inputs, progress_lines
from archlab.restoration import DEFAULT_IMAGE


def register(subparsers) -> None:
    """Add ``spectral fbc | psd | trajectory | sinusoid | lipschitz`` to the ``archlab`` parser."""
    p = subparsers.add_parser("spectral", help="FBC of a fit, radial spectra, the papers' spectral experiments")
    sub = p.add_subparsers(dest="spectral_command", required=True, metavar="SUBCOMMAND")

    fbc = sub.add_parser("fbc", help="fit like `restore` and plot FBC per band and PSNR (paper 000 Fig. 3)")
    add_fit_arguments(fbc, out="fbc")
    fbc.add_argument("--bands", type=int, default=5, help="FBC bands (default 5)")
    fbc.set_defaults(func=run_fbc)

    psd = sub.add_parser("psd", help="radial power spectra of images on one log-log plot (paper 004 Fig. 2)")
    psd.add_argument("images", nargs="+", metavar="IMAGE", help="files or built-in names")
    psd.add_argument("--bins", type=int, default=None, help="radii per curve (default: one per pixel of radius)")
    psd.add_argument("-o", "--output", default="psd.png", help="PNG to write (default psd.png)")
    psd.set_defaults(func=run_psd)

    trajectory = sub.add_parser("trajectory", help="trajectory distance of two seeds on clean images (paper 001 Fig. 1)")
    trajectory.add_argument("images", nargs="*", metavar="IMAGE",
                            help="clean images (default: the triangle-* set of the shared datasets)")
    trajectory.add_argument("--arch", default="faster-dip-32", help="preset or spec file (default faster-dip-32)")
    trajectory.add_argument("--iterations", type=int, default=300, help="Adam steps per run (default 300)")
    trajectory.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    trajectory.add_argument("--every", type=int, default=10, help="steps between recorded outputs (default 10)")
    trajectory.add_argument("--seeds", type=int, nargs=2, default=(0, 1), metavar=("A", "B"),
                            help="the two runs' seeds (default 0 1)")
    _add_common(trajectory, "trajectory")
    trajectory.set_defaults(func=run_trajectory)

    sinusoid = sub.add_parser("sinusoid", help="1-D two-sinusoid fit, conv vs fully-connected (paper 001 Fig. 3)")
    sinusoid.add_argument("--frequencies", type=int, nargs="+", default=[5, 50], help="k values (default 5 50)")
    sinusoid.add_argument("--length", type=int, default=256, help="samples (default 256)")
    sinusoid.add_argument("--layers", type=int, default=10, help="layers of each network (default 10)")
    sinusoid.add_argument("--width", type=int, default=256, help="channels / units per layer (default 256)")
    sinusoid.add_argument("--iterations", type=int, default=2000, help="Adam steps (default 2000)")
    sinusoid.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    sinusoid.add_argument("--delta", type=float, default=None,
                          help="convergence threshold δ (default paper 001's, experiments.DELTA = 0.01)")
    sinusoid.add_argument("--seed", type=int, default=0, help="seed of the weights and the input (default 0)")
    _add_common(sinusoid, "sinusoid")
    sinusoid.set_defaults(func=run_sinusoid)

    lipschitz = sub.add_parser("lipschitz", help="FBC of the Decoder for several λ, denoising (paper 000 Fig. 5)")
    lipschitz.add_argument("--image", default="astronaut", help="clean image, file or built-in (default astronaut)")
    lipschitz.add_argument("--size", type=int, default=64, help="longer side after resizing (default 64)")
    lipschitz.add_argument("--sigma", type=float, default=25.0, help="noise σ on the 0..255 scale (default 25)")
    lipschitz.add_argument("--lambdas", type=float, nargs="+", default=[1.0, 2.0, 3.0], help="λ values (1 2 3)")
    lipschitz.add_argument("--arch", default="shi-decoder-text", help="preset or spec file (default shi-decoder-text)")
    lipschitz.add_argument("--iterations", type=int, default=300, help="iterations per fit (default 300)")
    lipschitz.add_argument("--lr", type=float, default=0.01,
                           help="Adam learning rate (default 0.01; the paper's 0.001 needs ~10x the iterations)")
    lipschitz.add_argument("--eval-every", type=int, default=10, help="iterations between measurements (10)")
    lipschitz.add_argument("--seed", type=int, default=0, help="seed of the noise, input and weights (default 0)")
    _add_common(lipschitz, "lipschitz")
    lipschitz.set_defaults(func=run_lipschitz)


def _add_common(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("-o", "--out", default=name, help=f"output folder (default ./{name})")


def run_fbc(args: argparse.Namespace) -> int:
    """Fit, then write ``fbc.png`` (FBC bands and PSNR, peak marked), ``history.csv`` and ``summary.json``."""
    task, spec, observation, notes = fit_inputs(args, ("fbc.png", "history.csv", "summary.json"))
    from archlab import images, report
    from archlab.fitting import fit

    result = fit(spec, task, observation, iterations=args.iterations, lr=args.lr, input_jitter=args.input_jitter,
                 ema=args.ema, seed=args.seed,
                 device=args.device, eval_every=args.eval_every, fbc_bands=args.bands,
                 on_evaluation=progress_lines(args.iterations, "spectral fbc"))
    check_fit(result)
    out = Path(args.out)
    image = args.observed or args.image or DEFAULT_IMAGE
    summary = {"task": task.to_dict(), "arch": args.arch, "image": image, "notes": notes, **result.summary()}
    with images.atomic_dir(out) as tmp:
        report.plot_fbc(result.history, tmp / "fbc.png", title=f"{task.name} - {args.arch} - {Path(image).stem}")
        result.history.to_csv(tmp / "history.csv", index=False)
        images.write_json(summary, tmp / "summary.json")
    last = result.history.iloc[-1]
    bands = " ".join(f"{last[c]:.3f}" for c in result.history.columns if c.startswith("fbc_"))
    peak = f"; peak PSNR {summary['peak_psnr']:.2f} dB at {summary['peak_iteration']}" if "peak_psnr" in summary else ""
    print(f"FBC at iteration {int(last['iteration'])} (lowest → highest band): {bands}{peak}")
    print(f"wrote {out / 'fbc.png'}, history.csv, summary.json")
    return 0


def run_psd(args: argparse.Namespace) -> int:
    """Write the radial power spectra of the images (:func:`archlab.spectral.radial_psd`) on one plot."""
    from archlab import images, report, spectral

    curves = {}
    for name in args.images:
        radius, psd = spectral.radial_psd(images.load(name), bins=args.bins)
        curves[Path(name).stem] = (radius.numpy(), psd[0].numpy())
    path = report.plot_radial_psd(curves, args.output)
    print(f"wrote {path}")
    return 0


def run_trajectory(args: argparse.Namespace) -> int:
    """Paper 001 Fig. 1: write ``trajectory.png``, ``results.csv``, ``table.md`` and ``curves.csv``."""
    import pandas as pd

    from archlab import experiments, images, report

    sources = args.images or images.list_images(images.datasets_root() / "triangle")
    parts = []
    for source in sources:
        parts.append(experiments.trajectory_divergence([source], arch=args.arch, seeds=tuple(args.seeds),
                                                       iterations=args.iterations, lr=args.lr, every=args.every,
                                                       device=args.device))
        row = experiments.trajectory_summary(parts[-1]).iloc[0]
        print(f"{row['image']}: eps peak {row['eps_peak']:.4g} at {row['peak_iteration']} after the first minimum "
              f"{row['eps_first_min']:.4g} at {row['first_min_iteration']}", file=sys.stderr, flush=True)
    curves = pd.concat(parts, ignore_index=True)
    summary = experiments.trajectory_summary(curves)
    return _write(args.out, "trajectory", curves, summary, report.plot_trajectories)


def run_sinusoid(args: argparse.Namespace) -> int:
    """Paper 001 Fig. 3: write ``sinusoid.png``, ``results.csv``, ``table.md`` and ``curves.csv``."""
    from archlab import experiments, report

    delta = experiments.DELTA if args.delta is None else args.delta
    curves = experiments.sinusoid_experiment(frequencies=args.frequencies, length=args.length, layers=args.layers,
                                             width=args.width, iterations=args.iterations, lr=args.lr,
                                             seed=args.seed, device=args.device)
    summary = experiments.convergence_table(curves, delta)
    return _write(args.out, "sinusoid", curves, summary, lambda c, p: report.plot_sinusoid(c, p, delta))


def run_lipschitz(args: argparse.Namespace) -> int:
    """Paper 000 Fig. 5: write ``lipschitz.png``, ``results.csv``, ``table.md`` and ``curves.csv``."""
    import pandas as pd

    from archlab import experiments, report

    parts = []
    for lam in args.lambdas:
        parts.append(experiments.lipschitz_fbc(args.image, lambdas=[lam], sigma=args.sigma, size=args.size,
                                               arch=args.arch, iterations=args.iterations, lr=args.lr,
                                               eval_every=args.eval_every, seed=args.seed, device=args.device))
        print(f"λ = {lam:g}: peak PSNR {parts[-1]['psnr'].max():.2f} dB", file=sys.stderr, flush=True)
    histories = pd.concat(parts, ignore_index=True)
    summary = experiments.lipschitz_summary(histories)
    title = f"denoising σ = {args.sigma:g}, {args.arch}, {Path(args.image).stem} {args.size}px"
    return _write(args.out, "lipschitz", histories, summary, lambda c, p: report.plot_lipschitz_fbc(c, p, title))


def _write(folder: str, name: str, curves, summary, plot) -> int:
    from archlab import report

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    plot(curves, out / f"{name}.png")
    written = report.write_results(out, summary, curves)
    print(report.markdown_table(summary, 4, style="g", index=False) + "\n", end="")
    print(f"wrote {out / name}.png, " + ", ".join(p.name for p in written))
    return 0
