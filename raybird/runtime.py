"""Connecting to Ray: the cluster of ``ray job submit`` / ``RAY_ADDRESS``, or an embedded local one."""
from __future__ import annotations

import logging
import os


def init_ray(num_cpus: int | None = None) -> None:
    """Join the running cluster when there is one (``RAY_ADDRESS``, set by ``ray job submit``),
    else start an embedded local Ray. Idempotent."""
    import ray

    if ray.is_initialized():
        return
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True}
    if not os.environ.get("RAY_ADDRESS"):
        # an embedded Ray serves one command: its dashboard would cost ~370 MB and 12 processes
        kwargs["include_dashboard"] = False
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)
