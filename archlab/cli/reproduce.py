"""``archlab reproduce NAME -o DIR``: rerun a paper experiment and write its table (resumable)."""

from __future__ import annotations

from archlab import reproductions


def register(subparsers) -> None:
    p = subparsers.add_parser("reproduce", help="rerun a paper experiment and write its results table",
                              description=__doc__.splitlines()[0])
    p.add_argument("name", choices=sorted(reproductions.EXPERIMENTS), help="the experiment")
    p.add_argument("-o", "--out", required=True, help="output folder (results.csv, table.md); reruns resume")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--only", default=None, help="run only this configuration (e.g. to split over processes)")
    p.add_argument("--fast", action="store_true",
                   help="fit on the fast engine (bf16 where native) instead of eager fp32, the evidence's precision")
    p.add_argument("--trajectories", action="store_true",
                   help="also save every fit's outputs at each evaluation (OUT/trajectories/*.npz)")
    p.set_defaults(func=run)


def run(args) -> int:
    from archlab import reproduce

    table = reproduce.run_experiment(args.name, args.out, device=args.device, only=args.only, fast=args.fast,
                                     trajectories=args.trajectories)
    print(reproduce.write_table(args.name, table, args.out))
    return 0
