"""raybird: find bird vocalizations in large audio archives (U-Net on spectrograms, on Ray)."""
__version__ = "0.1.0"
