"""Shared helpers: Markdown tables and a one-line description of the machine and its load
(the numbers of a shared machine mean little without it)."""

from __future__ import annotations

import os
import platform
import time
from typing import Callable, Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence], align: str = "") -> str:
    """A Markdown table; ``align`` has one letter per column ("l" or "r"; default: first left)."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU model, cores and the 1-minute load average (other work on the machine)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu_name()}, {os.cpu_count()} cores, load average {load:.1f} at start"


def best_time(fn: Callable[[], object], reps: int = 3, warmup: int = 1) -> float:
    """Fastest of ``reps`` timed calls (seconds): on a shared machine the minimum is the least
    disturbed estimate of the work itself."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
