"""``archlab filters``: list, show and plot the upsampling filter catalogue."""

from __future__ import annotations

import argparse

from archlab import filters
from archlab.report import plot_filter_responses

SUMMARY_LABELS = {
    "dc_gain": "DC gain",
    "passband_ripple_db": "passband ripple (dB)",
    "stopband_attenuation_db": "stopband attenuation (dB)",
    "cutoff_3db": "-3 dB cut-off (cycles/sample)",
    "replica_center_db": "replica centre gain (dB)",
}


def register(subparsers) -> None:
    """Add ``filters list | show | plot`` to the ``archlab`` parser."""
    p = subparsers.add_parser("filters", help="list, show and plot upsampling filters (the catalogue or TOML files)")
    sub = p.add_subparsers(dest="filters_command", required=True, metavar="SUBCOMMAND")
    listing = sub.add_parser("list", help="the catalogue: one line per filter")
    listing.set_defaults(func=list_filters)
    show = sub.add_parser("show", help="a filter's taps and frequency-response summary")
    show.add_argument("name", help="catalogue name or path to a filter TOML")
    show.add_argument("--stopband-edge", type=float, help="start of the stopband (default: the design edge or 0.5/s)")
    show.add_argument("--passband-edge", type=float, help="end of the passband (default: the design edge or 0.5/s)")
    show.set_defaults(func=show_filter)
    plot = sub.add_parser("plot", help="magnitude responses (dB) with passband and replica band shaded, as a PNG")
    plot.add_argument("names", nargs="*", metavar="NAME", help="catalogue names or TOML paths (default: all)")
    plot.add_argument("-o", "--output", default="filters.png", help="PNG to write (default: filters.png)")
    plot.set_defaults(func=plot_filters)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def list_filters(args: argparse.Namespace) -> int:
    """Print name, factor, length, stopband attenuation, cut-off and provenance of each catalogue filter."""
    rows = [["name", "factor", "taps", "atten_db", "cutoff_3db", "provenance"]]
    for name, flt in filters.catalog().items():
        summary = flt.summary()
        rows.append([name, str(flt.factor), str(len(flt.taps)), f"{summary['stopband_attenuation_db']:.2f}",
                     f"{summary['cutoff_3db']:.4f}", flt.provenance])
    print(_table(rows))
    return 0


def show_filter(args: argparse.Namespace) -> int:
    """Print a filter's summary table (:meth:`archlab.filters.Filter.summary`), band edges and taps."""
    flt = filters.get(args.name)
    summary = flt.summary(stopband_edge=args.stopband_edge, passband_edge=args.passband_edge)
    passband, stopband = flt.edges
    passband = passband if args.passband_edge is None else args.passband_edge
    stopband = stopband if args.stopband_edge is None else args.stopband_edge
    rows = [["name", flt.name], ["factor", str(flt.factor)], ["taps", str(len(flt.taps))],
            ["passband", f"[0, {passband:.4g}]"], ["stopband", f"[{stopband:.4g}, 0.5]"]]
    rows += [[SUMMARY_LABELS[key], f"{value:.4f}"] for key, value in summary.items()]
    print(_table(rows))
    print(f"provenance: {flt.provenance}")
    print("coefficients: " + ", ".join(f"{t:.8g}" for t in flt.taps))
    return 0


def plot_filters(args: argparse.Namespace) -> int:
    """Write the response figure of the named filters (all of the catalogue when none is named)."""
    chosen = args.names or list(filters.catalog().values())
    path = plot_filter_responses(chosen, args.output)
    print(f"wrote {path}")
    return 0
