"""Connecting to Ray: the cluster of ``ray job submit`` / ``RAY_ADDRESS``, or an embedded local one.

By default a command's terminal shows raybird's own lines (a progress bar, a line per training
epoch), not Ray's: Ray Data's and Ray Train's INFO lines, Ray Data's periodic progress logs,
Ray's deprecation warnings about its own internals and the token-authentication notice stay out
of it (Ray Train's go to ``/tmp/ray/session_latest/logs/train``). Not hidden: the core
worker's error-level note on actors whose constructor arguments sit in the object store
(ray-project/ray#53727; Ray Data and Ray Train pass their own actors' arguments that way). It
comes from C++, where only a log level set for every Ray process would hide it, and that prints
a line of its own in each. :func:`set_verbose` (``--verbose``) shows everything."""

from __future__ import annotations

import logging
import os

_verbose = False
# for this process and (inherited through its raylet) every process of an embedded Ray: Ray Data's
# loggers at ERROR, and no warnings about Ray's own deprecated internals (Ray Train's
# DatasetManager uses one in 2.60)
QUIET_ENV = {"RAY_DATA_LOG_LEVEL": "ERROR", "PYTHONWARNINGS": "ignore::DeprecationWarning"}


def set_verbose(verbose: bool) -> None:
    """Show Ray's own log lines on the terminal (before :func:`init_ray`)."""
    global _verbose
    _verbose = verbose


def train_log_level() -> str:
    """Ray Train's console level for ``RunConfig(logging_config=...)``."""
    return "INFO" if _verbose else "WARNING"


def only_ours_below_warning() -> None:
    """In a Ray Train worker: its console shows raybird's INFO lines (one per epoch), not Ray
    Train's (a ``TrainingReport(...)`` dump per report, from a logger Ray names by file path)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda r: r.levelno >= logging.WARNING or r.name.startswith("raybird"))


def init_ray(num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Join the running cluster when there is one (``RAY_ADDRESS``, set by ``ray job submit``),
    else start an embedded local Ray, with its dashboard when ``dashboard``: training needs it,
    as Ray Train's placement-group cleaner polls the state API, which the dashboard serves, once a
    second and logs a warning each time it finds none (4119 lines in one 70-minute run). Idempotent."""
    import ray

    if ray.is_initialized():
        return
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True}
    if not _verbose:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    if not os.environ.get("RAY_ADDRESS"):
        # an embedded Ray serves one command: its dashboard costs ~370 MB and 12 processes
        kwargs["include_dashboard"] = dashboard
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)
    if not _verbose:
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False  # raybird draws its own
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # configured at import, before the env
