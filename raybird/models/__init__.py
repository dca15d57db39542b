"""The networks (U-Net and peers) and the classical threshold baseline."""
