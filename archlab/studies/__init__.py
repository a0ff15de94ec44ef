"""Optuna studies of the deep image prior: study files, resumable and distributed runs, reports.

A study relates architecture and fit settings (λ, the Gaussian σ, depth, width, skips, the
upsampler, lr, iterations) to the objectives of each fit — peak/final PSNR, the PSNR drop, the
iteration of the peak (paper 004 Table 1), the stop rule's iteration and PSNR (paper 000
§4.3), seconds. Each trial fits every (task, image, seed) of the study with one configuration
and returns the objectives' means over them; several objectives make a Pareto study.

- :mod:`~archlab.studies.spec`: the TOML study file → validated :class:`StudySpec`.
- :mod:`~archlab.studies.worker`: storage (SQLite by default, PostgreSQL), heartbeats and
  retries, :func:`run` (one worker; start several on one storage to share a study).
- :mod:`~archlab.studies.results`: :func:`load` (one row per trial × task × image),
  :func:`load_curves`, :func:`importances`, :func:`write_report` (Markdown/LaTeX/CSV),
  :func:`learning_table` (the rows :mod:`archlab.learnt` learns a recommendation from).
"""

import importlib

#: Public name -> the submodule that defines it (imported on first use: ``study list`` needs no Optuna).
_WHERE = {
    **dict.fromkeys(("DEFAULT_METRICS", "importances", "learning_table", "load", "load_curves", "open_existing", "tables",
                     "write_report"), "results"),
    **dict.fromkeys(("EXTRA_METRICS", "OBJECTIVES", "PRUNERS", "SAMPLERS", "SPACE_NAMES", "ImageSpec", "Param",
                     "StudySpec", "default_storage", "load_study", "resolve_target"), "spec"),
    **dict.fromkeys(("shipped", "study_dir"), "files"),
    **dict.fromkeys(("GRACE_PERIOD", "HEARTBEAT_INTERVAL", "artifacts_dir", "make_storage"), "storage"),
    **dict.fromkeys(("TrialDiverged", "TrialProgress", "observations", "open_study", "run", "trial_results"), "worker"),
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"archlab.studies.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'archlab.studies' has no attribute {name!r}")
