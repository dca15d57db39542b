"""On-the-fly augmentation of spectrogram batches, on whatever device the batch lives.

All geometric changes of one item (time flip, optional frequency flip, rotation, zoom, random
crop resized back) are folded into one affine map and applied with a single ``grid_sample``:
bilinear for the spectrogram, nearest for the mask, so labels stay exact integers (including
a negative ignore index) and stay aligned with the pixels they label. Areas moved in from
outside the tile become silence (0) and background (0). Intensity jitter touches the
spectrogram only.

``strength`` in [0, 1] scales every probability and range linearly; 0 returns the inputs.
Random numbers come from ``generator`` (on its own device, CPU by default), so a seeded
generator reproduces a batch exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Limits at ``strength`` 1. Spectrograms are not symmetric in frequency (pitch matters),
    so the frequency flip is off unless asked for."""

    strength: float = 0.5
    time_flip: float = 0.5  # probability of reversing time
    freq_flip: float = 0.0  # probability of flipping frequency (opt-in)
    rotate_deg: float = 4.0  # uniform in [-r, r]
    zoom: float = 0.2  # scale factor uniform in [1 - z, 1 + z]
    crop: float = 0.3  # crop a box of side (1 - u * crop), u ~ U(0, 1), resize back
    crop_p: float = 0.5  # probability of the crop
    brightness: float = 0.1  # additive offset in [-b, b]
    contrast: float = 0.2  # scale about the item mean by [1 - c, 1 + c]
    gain: float = 0.2  # multiplicative factor in [1 - g, 1 + g]
    noise: float = 0.0  # std of additive Gaussian noise
    spec_mode: str = "bilinear"  # grid_sample mode for the spectrogram


def _uniform(n: int, lo: float, hi: float, g: Optional[torch.Generator]) -> torch.Tensor:
    dev = g.device if g is not None else None
    return torch.rand(n, generator=g, device=dev) * (hi - lo) + lo


def _chance(n: int, p: float, g: Optional[torch.Generator]) -> torch.Tensor:
    return _uniform(n, 0.0, 1.0, g) < p


def affine_params(
    n: int, height: int, width: int, cfg: AugmentConfig, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """``(n, 2, 3)`` affine matrices for ``F.affine_grid`` (output -> input, normalised coords)."""
    s, g = cfg.strength, generator
    a = torch.deg2rad(_uniform(n, -cfg.rotate_deg * s, cfg.rotate_deg * s, g))
    zoom = _uniform(n, 1 - cfg.zoom * s, 1 + cfg.zoom * s, g)
    # crop of relative side c at a random position, stretched back to the full tile
    side = 1 - _uniform(n, 0, cfg.crop * s, g) * _chance(n, cfg.crop_p * s, g)
    shift = (_uniform(n, -1, 1, g) * (1 - side), _uniform(n, -1, 1, g) * (1 - side))
    fx = torch.where(_chance(n, cfg.time_flip * s, g), -1.0, 1.0)
    fy = torch.where(_chance(n, cfg.freq_flip * s, g), -1.0, 1.0)
    k = side / zoom
    # rotation is done in pixel units (tiles are not square): diag(2/W, 2/H) R diag(W/2, H/2)
    theta = torch.zeros(n, 2, 3, device=a.device)
    theta[:, 0, 0] = k * torch.cos(a) * fx
    theta[:, 0, 1] = -k * torch.sin(a) * height / width * fy
    theta[:, 1, 0] = k * torch.sin(a) * width / height * fx
    theta[:, 1, 1] = k * torch.cos(a) * fy
    theta[:, 0, 2], theta[:, 1, 2] = shift
    return theta


def augment_batch(
    spec: torch.Tensor,
    mask: torch.Tensor,
    cfg: AugmentConfig = AugmentConfig(),
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment ``spec`` (N, 1, H, W) float in [0, 1] and ``mask`` (N, H, W) integer alike."""
    if cfg.strength <= 0:
        return spec, mask
    n, _, h, w = spec.shape
    s, g = cfg.strength, generator
    theta = affine_params(n, h, w, cfg, g).to(spec.device)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    out = F.grid_sample(spec.float(), grid, mode=cfg.spec_mode, padding_mode="zeros", align_corners=False)
    lab = F.grid_sample(mask[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    mask = lab[:, 0].round().to(mask.dtype)

    def per_item(lo: float, hi: float) -> torch.Tensor:
        return _uniform(n, lo, hi, g).to(spec.device).view(n, 1, 1, 1)

    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * per_item(1 - cfg.contrast * s, 1 + cfg.contrast * s) + mean
    out = out * per_item(1 - cfg.gain * s, 1 + cfg.gain * s) + per_item(-cfg.brightness * s, cfg.brightness * s)
    if cfg.noise > 0:
        out = out + cfg.noise * s * torch.randn(out.shape, generator=g, device=g.device if g else None).to(out.device)
    return out.clamp_(0.0, 1.0).to(spec.dtype), mask
