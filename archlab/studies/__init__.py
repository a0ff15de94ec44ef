"""Optuna studies of the deep image prior: study files, resumable and distributed runs, reports.

A study relates architecture and fit settings (λ, the Gaussian σ, depth, width, skips, the
upsampler, lr, iterations) to the objectives of each fit — peak/final PSNR, the PSNR drop, the
iteration of the peak (paper 004 Table 1), the ratio rule's stop iteration and PSNR (paper 000
§4.3), seconds. Each trial fits every (task, image, seed) of the study with one configuration
and returns the objectives' means over them; several objectives make a Pareto study.

- :mod:`~archlab.studies.spec`: the TOML study file → validated :class:`StudySpec`.
- :mod:`~archlab.studies.worker`: storage (SQLite by default, PostgreSQL), heartbeats and
  retries, :func:`run` (one worker; start several on one storage to share a study).
- :mod:`~archlab.studies.results`: :func:`load` (one row per trial × task × image),
  :func:`load_curves`, :func:`importances`, :func:`write_report` (Markdown/LaTeX/CSV).
"""

from archlab.studies.results import DEFAULT_METRICS, importances, load, load_curves, open_existing, tables, write_report
from archlab.studies.spec import (EXTRA_METRICS, OBJECTIVES, PRUNERS, SAMPLERS, SPACE_NAMES, ImageSpec, Param,
                                  StudySpec, default_storage, load_study, resolve_target, shipped, study_dir)
from archlab.studies.storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, artifacts_dir, make_storage
from archlab.studies.worker import TrialDiverged, TrialProgress, observations, open_study, run, trial_results

__all__ = ["DEFAULT_METRICS", "EXTRA_METRICS", "GRACE_PERIOD", "HEARTBEAT_INTERVAL", "OBJECTIVES", "PRUNERS",
           "SAMPLERS", "SPACE_NAMES", "ImageSpec", "Param", "StudySpec", "TrialDiverged", "TrialProgress", "artifacts_dir",
           "default_storage", "importances", "load", "load_curves", "load_study", "make_storage", "observations",
           "open_existing", "open_study", "resolve_target", "run", "shipped", "study_dir", "tables", "trial_results",
           "write_report"]
