"""Connecting to Ray: the cluster of ``ray job submit`` / ``RAY_ADDRESS``, or an embedded local one."""
from __future__ import annotations

import logging
import os


def init_ray(num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Join the running cluster when there is one (``RAY_ADDRESS``, set by ``ray job submit``),
    else start an embedded local Ray, with its dashboard when ``dashboard``: training needs it,
    as Ray Train's placement-group cleaner polls the state API, which the dashboard serves, once a
    second and logs a warning each time it finds none (4119 lines in one 70-minute run). Idempotent."""
    import ray

    if ray.is_initialized():
        return
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True}
    if not os.environ.get("RAY_ADDRESS"):
        # an embedded Ray serves one command: its dashboard costs ~370 MB and 12 processes
        kwargs["include_dashboard"] = dashboard
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)
