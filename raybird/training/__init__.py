"""One training step, validation and checkpoints (plain PyTorch), augmentation, pixel metrics."""
