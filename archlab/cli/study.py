"""``archlab study``: list, show, run, report and watch Optuna studies of the deep image prior."""

from __future__ import annotations

import argparse
import logging
import math

#: ``archlab.studies.HEARTBEAT_INTERVAL`` and ``GRACE_PERIOD`` (seconds), here so that the parser needs no
#: import of the studies (optuna, torch); a test checks that they agree.
HEARTBEAT_INTERVAL, GRACE_PERIOD = 60, 120


def _positive(kind):
    """An argparse type: a finite ``kind`` (int or float) > 0."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is invalid; allowed: "
                                             f"{'an integer ≥ 1' if kind is int else 'a number > 0'}")
        return value
    return parse


def register(subparsers) -> None:
    """Add ``study list | show | run | report | learn | dashboard`` to the ``archlab`` parser."""
    p = subparsers.add_parser("study", help="Optuna studies: run (resumable, several workers), report, dashboard")
    sub = p.add_subparsers(dest="study_command", required=True, metavar="SUBCOMMAND")
    listing = sub.add_parser("list", help="the shipped studies, with their expected runtimes")
    listing.set_defaults(func=list_studies)
    show = sub.add_parser("show", help="validate a study file and print its size and settings")
    show.add_argument("study", help="shipped study name or path to a study TOML")
    show.set_defaults(func=show_study)
    run = sub.add_parser("run", help="run or continue a study as one worker (start several to share it)")
    run.add_argument("study", help="shipped study name or path to a study TOML")
    run.add_argument("--storage", help="sqlite:///FILE or postgresql://... (default: SQLite beside the file, "
                                       "or ./NAME.db for a shipped study)")
    run.add_argument("--n-trials", type=_positive(int), help="stop this worker after N trials")
    run.add_argument("--timeout", type=_positive(float), help="start no trial after S seconds")
    run.add_argument("--device", default="auto", help="auto, cpu or cuda[:i] (default: auto)")
    run.add_argument("--artifacts", help="folder of the trial artifacts (default: beside the SQLite file, "
                                         "else $ARCHLAB_ARTIFACTS or ./archlab-artifacts)")
    run.add_argument("--heartbeat", type=_positive(int), default=HEARTBEAT_INTERVAL,
                     help=f"heartbeat interval in seconds (default {HEARTBEAT_INTERVAL})")
    run.add_argument("--grace", type=_positive(int), default=GRACE_PERIOD,
                     help=f"seconds without heartbeat before a running trial counts as dead and is retried "
                          f"(default {GRACE_PERIOD})")
    run.set_defaults(func=run_study)
    rep = sub.add_parser("report", help="paper tables, curves, importances and Pareto front of a study")
    rep.add_argument("study", help="study name in the storage, shipped name or study TOML")
    rep.add_argument("--storage", help="storage URL (default: as for run)")
    rep.add_argument("--format", choices=("md", "latex", "csv"), default="md", help="output format (default md)")
    rep.add_argument("--figure-format", choices=("png", "pdf", "svg"), default="png",
                     help="figure files (default png; LaTeX takes png or pdf)")
    rep.add_argument("--standalone", action="store_true",
                     help="with --format latex: a document that compiles on its own (else a fragment to \\input)")
    rep.add_argument("--artifacts", help="folder of the trial artifacts, for the curves (default: as for run)")
    rep.add_argument("-o", "--output", default=".", help="folder to write into (default: .)")
    rep.set_defaults(func=report_study)
    learn = sub.add_parser("learn", help="the (configuration, image) table a per-image recommendation learns from")
    learn.add_argument("study", nargs="+", help="study names in the storage, shipped names or study TOMLs (several: "
                                                "their rows together, e.g. studies of the same task on other images)")
    learn.add_argument("--storage", help="storage URL (default: as for run)")
    learn.add_argument("-o", "--output", help="CSV to write (default: the package's table for the study's task, "
                                              "which `archlab recommend` then learns from)")
    learn.add_argument("--folds", type=int, metavar="K",
                       help="also measure the learnt choice on images held out of the learning, in K image folds, "
                            "beside the default, the best single configuration and the per-image best, and write "
                            "those rows beside the table (`archlab recommend` then uses the per-image choice only "
                            "where it beat the best single configuration there)")
    learn.set_defaults(func=learn_study)
    dash = sub.add_parser("dashboard", help="start optuna-dashboard on 127.0.0.1 (needs the 'dashboard' extra)")
    dash.add_argument("study", nargs="?", help="study file or shipped name (gives the default storage)")
    dash.add_argument("--storage", help="storage URL")
    dash.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    dash.add_argument("--artifacts", help="folder of the trial artifacts (default: as for run)")
    dash.set_defaults(func=dashboard)


def list_studies(args: argparse.Namespace) -> int:
    """Print each shipped study's name and its first comment line (description and expected runtime)."""
    from archlab.studies.files import shipped

    for name, note in shipped().items():
        print(f"{name:22s} {note}")
    return 0




def show_study(args: argparse.Namespace) -> int:
    """Print a validated study: tasks, images, space, objectives, sampler, trials × fits."""
    from archlab.studies.files import study_text

    study_text(args.study)  # an unknown study is one line before Optuna and torch are loaded
    from archlab import studies

    spec = studies.load_study(args.study)
    fits = len(studies.observations(spec)) * len(spec.seeds)
    trials = spec.grid_size if spec.is_grid else spec.n_trials
    print(f"{spec.name}: {spec.description}")
    print(f"tasks: {', '.join(label for label, _ in spec.tasks)}; seeds: {list(spec.seeds)}")
    for param in spec.space:
        print(f"space.{param.name} = {param.to_value()}")
    print(f"objectives: {dict(spec.objectives)}; sampler: {dict(spec.sampler)}; pruner: {dict(spec.pruner)}")
    print(f"{trials} trials × {fits} fits of {dict(spec.fit).get('iterations', 3000)} iterations")
    return 0


def run_study(args: argparse.Namespace) -> int:
    """Run one worker; print a line per trial and a summary."""
    from archlab.studies.files import study_text

    study_text(args.study)  # an unknown study is one line before Optuna and torch are loaded
    import optuna

    from archlab import studies

    optuna.logging.set_verbosity(logging.ERROR)  # a failed trial is one line of ours; Ctrl-C no traceback
    study = studies.run(args.study, args.storage, n_trials=args.n_trials, timeout=args.timeout, device=args.device,
                        artifacts=args.artifacts, heartbeat_interval=args.heartbeat, grace_period=args.grace)
    states = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    print(f"study {study.study_name}: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    return 0


def report_study(args: argparse.Namespace) -> int:
    """Write the report files and list them."""
    from archlab import studies
    from archlab.studies.storage import storage_url

    storage_url(studies.resolve_target(args.study, args.storage)[1], exists=True)  # create no empty database
    for path in studies.write_report(args.study, args.storage, args.format, args.output, artifacts=args.artifacts,
                                     figure_format=args.figure_format, standalone=args.standalone):
        print(f"wrote {path}")
    return 0


def learn_study(args: argparse.Namespace) -> int:
    """Write the studies' rows with the features of their images (:func:`archlab.studies.learning_table`)."""
    import pandas as pd

    from archlab import images, learnt, studies
    from archlab.studies.storage import storage_url

    for study in args.study:
        storage_url(studies.resolve_target(study, args.storage)[1], exists=True)  # create no empty database
    table = pd.concat([studies.learning_table(study, args.storage) for study in args.study], ignore_index=True)
    tasks = sorted(set(table["task"]))
    if args.output is None and len(tasks) != 1:
        raise ValueError(f"-o: the studies have the tasks {', '.join(tasks) or 'none'}; give one output file")
    path = args.output or learnt.table_path(tasks[0])
    held_out = learnt.cross_validate(table, args.folds) if args.folds is not None else None  # fails before writing
    with images.atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    print(f"wrote {path}: {len(table)} fits, {table['image'].nunique()} images, "
          f"{len(table.drop_duplicates(list(learnt.CONFIG_COLUMNS)))} configurations")
    if held_out is None and learnt.held_out_path(path).is_file():  # it measured the table just replaced
        learnt.held_out_path(path).unlink()
        print(f"removed {learnt.held_out_path(path)}: it held out rows of the previous table (--folds K measures "
              f"this one)")
    if held_out is not None:
        with images.atomic_path(learnt.held_out_path(path)) as tmp:
            held_out.to_csv(tmp, index=False, float_format="%.6g")
        print(f"wrote {learnt.held_out_path(path)}: the held-out rows `archlab recommend` chooses by")
        print(held_out_table(held_out, args.folds, learnt.TIME_UNITS[learnt.time_column(table)]))
    return 0


def held_out_table(rows, folds: int, unit: str = "s") -> str:
    """Mean PSNR and time (in ``unit``, :data:`archlab.learnt.TIME_UNITS`) of each choice of
    :func:`archlab.learnt.cross_validate` over the held-out images."""
    lines = [f"Held out, {folds} image folds, {len(rows)} images (measured PSNR at the automatic stop and time):",
             "", f"| choice | PSNR dB | − default dB | {unit} | × default's time |", "| --- | --- | --- | --- | --- |"]
    labels = {"learnt": "learnt, per image", "fixed": "best single configuration of the other images",
              "default": "default configuration", "oracle": "per-image best (oracle)"}
    for name, label in labels.items():
        psnr, seconds = rows[f"{name}_psnr"].mean(), rows[f"{name}_seconds"].mean()
        lines.append(f"| {label} | {psnr:.2f} | {psnr - rows['default_psnr'].mean():+.2f} | {seconds:.1f} | "
                     f"{seconds / rows['default_seconds'].mean():.2f} |")
    return "\n".join(lines)


def dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard for the storage on 127.0.0.1 (blocks until interrupted)."""
    import optuna

    from archlab import studies
    from archlab.studies.storage import shown, storage_url

    try:
        import optuna_dashboard
    except ModuleNotFoundError as exc:
        raise ValueError("dashboard: optuna-dashboard is not installed; pip install 'archlab[dashboard]'") from exc
    if args.study is None and args.storage is None:
        raise ValueError("dashboard: give a study (file or name) or --storage URL")
    url = storage_url(args.storage or studies.default_storage(args.study), exists=True)
    store_dir = studies.artifacts_dir(url, args.artifacts)
    store_dir.mkdir(parents=True, exist_ok=True)
    print(f"optuna-dashboard on http://127.0.0.1:{args.port}/ for {shown(url)}", flush=True)
    optuna_dashboard.run_server(studies.make_storage(url), host="127.0.0.1", port=args.port,
                                artifact_store=optuna.artifacts.FileSystemArtifactStore(str(store_dir)))
    return 0
