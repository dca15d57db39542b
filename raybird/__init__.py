"""raybird: find bird vocalizations in large audio archives (U-Net on spectrograms, on Ray).

From Python: ``raybird.segment_file(path_or_samples, sr=None, model="default")`` returns one
recording's segments as a pandas DataFrame; ``raybird.load_model(...)`` reads a checkpoint once
(:mod:`raybird.api`)."""

__version__ = "0.1.0"
__all__ = ["segment_file", "load_model", "__version__"]


def __getattr__(name: str):
    # imported on first use: `import raybird` (and `raybird --version`) stays light
    if name in ("segment_file", "load_model"):
        from raybird import api

        return getattr(api, name)
    raise AttributeError(f"module 'raybird' has no attribute {name!r}")
