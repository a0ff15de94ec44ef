"""``archlab filters``: list, show, plot and design upsampling filters (the catalogue, the user's, TOML files)."""

from __future__ import annotations

import argparse
from pathlib import Path

from archlab import filters

#: Row labels of ``filters show``; ``{pass}``/``{stop}`` become the bands the figure is measured on.
SUMMARY_LABELS = {
    "dc_gain": "DC gain",
    "passband_edge": "passband (cycles/sample)",
    "passband_ripple_db": "passband ripple on {pass} (dB)",
    "stopband_edge": "stopband (cycles/sample)",
    "stopband_attenuation_db": "stopband attenuation, minimum on {stop} (dB)",
    "stopband_mean_attenuation_db": "stopband attenuation, mean power on {stop} (dB)",
    "cutoff_3db": "-3 dB cut-off (cycles/sample)",
    "replica_center_db": "gain at the replica centre 0.75/s (dB)",
}
#: ``filters design`` options -> :func:`archlab.filters.design` parameters.
DESIGN_OPTIONS = {"attenuation": "attenuation_db", "transition_width": "transition_width", "cutoff": "cutoff",
                  "numtaps": "numtaps", "stopband_weight": "stopband_weight", "sigma": "sigma",
                  "gaussian_taps": "taps", "a": "a", "coefficients": "taps"}


def register(subparsers) -> None:
    """Add ``filters list | show | plot | design`` to the ``archlab`` parser."""
    p = subparsers.add_parser("filters", help="list, show, plot and design upsampling filters (the catalogue, "
                                              "your own folder, or TOML files)")
    sub = p.add_subparsers(dest="filters_command", required=True, metavar="SUBCOMMAND")
    listing = sub.add_parser("list", help="the catalogue (shipped and your own folder): one line per filter, "
                                          "its figures on its design bands")
    listing.set_defaults(func=list_filters)
    show = sub.add_parser("show", help="a filter's taps and frequency-response summary")
    show.add_argument("name", help="catalogue name or path to a filter TOML")
    show.add_argument("--stopband-edge", type=float, help="start of the stopband (default: the design edge or 0.5/s)")
    show.add_argument("--passband-edge", type=float, help="end of the passband (default: the design edge or 0.5/s)")
    show.set_defaults(func=show_filter)
    plot = sub.add_parser("plot", help="magnitude responses (dB) with passband and replica band shaded "
                                       "(PNG, PDF or SVG by the file's suffix)")
    plot.add_argument("names", nargs="*", metavar="NAME", help="catalogue names or TOML paths (default: all)")
    plot.add_argument("-o", "--output", default="filters.png",
                      help="figure to write: .png, .pdf or .svg (default: filters.png)")
    plot.set_defaults(func=plot_filters)
    make = sub.add_parser("design", help="design a filter and write it as a TOML (then usable by name from your "
                                         f"folder: ${filters.USER_ENV} or ~/.config/archlab/filters)")
    make.add_argument("kind", choices=filters.KINDS, help="filter kind")
    make.add_argument("--factor", type=int, default=2, help="upsampling factor (default 2)")
    make.add_argument("--attenuation", type=float, help="stopband attenuation in dB (kaiser, equiripple, "
                                                        "least_squares)")
    make.add_argument("--transition-width", type=float, help="transition band width, cycles per output sample "
                                                             "(centred on --cutoff)")
    make.add_argument("--cutoff", type=float, help="centre of the transition band (default 0.5/factor)")
    make.add_argument("--numtaps", type=int, help="odd length instead of --attenuation (equiripple, least_squares)")
    make.add_argument("--stopband-weight", type=float, help="stopband weight (equiripple, least_squares)")
    make.add_argument("--sigma", type=float, help="Gaussian σ in input pixels (gaussian)")
    make.add_argument("--gaussian-taps", type=int, help="odd tap count of a gaussian (default 2·factor + 1)")
    make.add_argument("--a", type=float, help="cubic a (default -0.5) or lanczos lobes (default 3)")
    make.add_argument("--coefficients", type=lambda text: [float(v) for v in text.split(",")],
                      help="comma-separated symmetric taps (kind taps)")
    make.add_argument("--passband-edge", type=float, help="passband edge to store (default: the design's)")
    make.add_argument("--stopband-edge", type=float, help="stopband edge to store (default: the design's)")
    make.add_argument("--provenance", default="", help="a note stored with the filter")
    where = make.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", help="TOML to write, NAME.toml (the filter is named NAME)")
    where.add_argument("--user", metavar="NAME", help="write NAME.toml into your filter folder (the first of "
                                                      f"${filters.USER_ENV}, else ~/.config/archlab/filters)")
    make.set_defaults(func=design_filter)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _number(value: float, digits: int) -> str:
    return f"{round(value, digits) + 0.0:.{digits}f}"


def list_filters(args: argparse.Namespace) -> int:
    """Print each catalogue filter's figures on the bands it was designed for (stored in its TOML)."""
    rows = [["name", "factor", "taps", "passband", "ripple_db", "stopband", "atten_min_db", "atten_mean_db",
             "cutoff_3db", "from"]]
    for name, flt in filters.catalog().items():
        s = flt.summary()
        rows.append([name, str(flt.factor), str(len(flt.taps)), f"[0, {s['passband_edge']:.4g}]",
                     _number(s["passband_ripple_db"], 2), f"[{s['stopband_edge']:.4g}, 0.5]",
                     _number(s["stopband_attenuation_db"], 2), _number(s["stopband_mean_attenuation_db"], 2),
                     _number(s["cutoff_3db"], 4), filters.source(name)])
    print(_table(rows))
    print("Bands in cycles per output sample. ripple_db: max - min gain on the passband; atten_min_db: the "
          "smallest attenuation on the stopband (its highest side lobe); atten_mean_db: the attenuation of the "
          "mean power on the stopband; all relative to the DC gain. `archlab filters show NAME` gives the taps "
          "and where the bands come from.")
    return 0


def _summary_rows(summary: dict) -> list[list[str]]:
    bands = {"pass": f"[0, {summary['passband_edge']:.4g}]", "stop": f"[{summary['stopband_edge']:.4g}, 0.5]"}
    rows = []
    for key, value in summary.items():
        label = SUMMARY_LABELS[key].format(**bands)
        if key in ("passband_edge", "stopband_edge"):
            rows.append([label, bands[key[:4]]])
        else:
            rows.append([label, _number(value, 4)])
    return rows


def show_filter(args: argparse.Namespace) -> int:
    """Print a filter's summary table (:meth:`archlab.filters.Filter.summary`) on its bands, and its taps."""
    flt = filters.get(args.name)
    summary = flt.summary(stopband_edge=args.stopband_edge, passband_edge=args.passband_edge)
    rows = [["name", flt.name], ["factor", str(flt.factor)], ["taps", str(len(flt.taps))]]
    print(_table(rows + _summary_rows(summary)))
    print(f"provenance: {flt.provenance}")
    print("coefficients: " + ", ".join(f"{t:.8g}" for t in flt.taps))
    return 0


def plot_filters(args: argparse.Namespace) -> int:
    """Write the response figure of the named filters (all of the catalogue when none is named)."""
    from archlab.report import plot_filter_responses

    chosen = args.names or list(filters.catalog().values())
    path = plot_filter_responses(chosen, args.output)
    print(f"wrote {path}")
    return 0


def design_filter(args: argparse.Namespace) -> int:
    """Design a filter (:func:`archlab.filters.design`), write its specification as TOML and print its figures."""
    if args.user is not None:
        if not args.user or any(c in args.user for c in "/\\") or args.user.endswith(".toml"):
            raise ValueError(f"--user: {args.user!r} is invalid; allowed: a bare filter name (NAME, no .toml)")
        path = filters.user_dirs()[0] / f"{args.user}.toml"
    else:
        path = Path(args.output)
        if path.suffix != ".toml":
            raise ValueError(f"--output: {args.output!r} is invalid; allowed: a path ending in .toml")
    if path.exists():
        raise ValueError(f"--output: {path} exists; remove it or choose another name")
    name = path.stem
    if args.user is not None and name in filters.names():
        raise ValueError(f"--user: {name!r} is already a catalogue filter ({filters.source(name)}); "
                         "choose another name")
    params = {target: getattr(args, option) for option, target in DESIGN_OPTIONS.items()
              if getattr(args, option) is not None}
    if args.kind == "lanczos" and isinstance(params.get("a"), float) and params["a"].is_integer():
        params["a"] = int(params["a"])
    spec = {"name": name, "factor": args.factor, "kind": args.kind, **params,
            "passband_edge": args.passband_edge, "stopband_edge": args.stopband_edge,
            "provenance": args.provenance or f"archlab filters design {args.kind}"}
    flt = filters.save({key: value for key, value in spec.items() if value is not None}, path)
    print(_table([["name", flt.name], ["factor", str(flt.factor)], ["taps", str(len(flt.taps))]]
                 + _summary_rows(flt.summary())))
    print(f"provenance: {flt.provenance}")
    print(f"wrote {path}")
    if path.parent.resolve() not in [folder.resolve() for folder in filters.user_dirs()]:
        print(f"use it by its path, or by the name {name!r} once it is in ${filters.USER_ENV} or "
              f"{filters.user_dirs()[-1]}")
    return 0
