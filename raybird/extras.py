"""Dependencies that only one feature needs (pip extras), imported when that feature runs.

A missing one stops that feature with a message naming the extra to install, before any work
starts, and costs nothing to everyone who does not use the feature.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {  # module -> (pip extra, what needs it)
    "s3fs": ("s3", "s3:// inputs and outputs"),
    "librosa": ("denoise", "denoised audio (--denoise)"),
    "matplotlib": ("plot", "plots (raybird plot, training curves)"),
    "crowsetta": (
        "labels",
        "label files in formats read through crowsetta (Praat TextGrid, evsonganaly .not.mat, "
        "crowsetta's simple-seq CSV)",
    ),
}


class MissingExtra(ImportError):
    """A feature's optional dependency is not installed."""


def require(module: str) -> ModuleType:
    """Import ``module`` (one of :data:`EXTRAS` or a submodule of one), or raise
    :class:`MissingExtra` saying which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        extra, feature = EXTRAS[top]
        raise MissingExtra(f"{feature} need {top}, which is not installed: pip install 'raybird[{extra}]'") from None


def available(module: str) -> bool:
    try:
        require(module)
    except MissingExtra:
        return False
    return True
