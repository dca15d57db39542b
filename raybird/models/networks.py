"""Segmentation networks for spectrogram tiles: the report's U-Net and the Table 2 baselines.

Every network maps ``(N, in_channels, H, W)`` to logits ``(N, n_classes, H, W)`` for any H, W
(softmax belongs to the loss / the predictor). U-Net and SegNet halve the resolution ``depth``
times, so they zero-pad the input on the bottom/right to a multiple of ``2**depth`` and crop
the logits back; zero is what a spectrogram holds after the end of a recording, so the padding
looks like silence. DeepLabV3 works at any size and upsamples bilinearly to the input size.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ARCHS = ("unet", "unet-se", "segnet", "deeplabv3")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network; stored (as JSON) in every checkpoint."""

    arch: str = "unet"
    width: int = 8  # channels of the first level, doubling per level; 8 keeps the U-Net
    # >100x real time on 2 CPU cores (16 is ~3x slower)
    depth: int = 5  # U-Net/SegNet: number of 2x down-samplings
    dropout: float = 0.1
    n_classes: int = 2
    in_channels: int = 1
    output_stride: int = 16  # deeplabv3 only: 8 or 16
    # a class model's outputs 1.. in order (output 0 is the background); empty: bird/background
    class_names: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.class_names and self.n_classes != len(self.class_names) + 1:
            raise ValueError(f"n_classes {self.n_classes} does not fit {len(self.class_names)} class names")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if not self.class_names:  # a binary model's config reads as it always has
            del d["class_names"]
        return d

    @classmethod
    def from_dict(cls, d: dict | str) -> "ModelConfig":
        d = json.loads(d) if isinstance(d, str) else d
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def with_classes(cls, class_names, **params) -> "ModelConfig":
        """A network with one output per class plus the background (none: bird/background)."""
        return cls(n_classes=len(class_names) + 1 if class_names else 2, class_names=tuple(class_names), **params)

    def build(self) -> nn.Module:
        if self.arch not in _BUILDERS:
            raise ValueError(f"unknown arch {self.arch!r}; known: {list(ARCHS)}")
        model = _BUILDERS[self.arch](self)
        model.config = self
        return model


def build_model(arch: str = "unet", **params) -> nn.Module:
    """``build_model("unet", width=8)``; the model carries its :class:`ModelConfig` as ``.config``."""
    return ModelConfig(arch=arch, **params).build()


# ---- building blocks ------------------------------------------------------------------------
def conv_bn_relu(cin: int, cout: int, dilation: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SqueezeExcite(nn.Module):
    """Channel re-weighting (Hu et al. 2018) from global average pooled features."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, x):
        return x * self.fc(F.adaptive_avg_pool2d(x, 1))


class DoubleConv(nn.Sequential):
    """Two 3x3 conv + BatchNorm + ReLU, optionally followed by squeeze-and-excitation."""

    def __init__(self, cin: int, cout: int, se: bool = False):
        layers = [conv_bn_relu(cin, cout), conv_bn_relu(cout, cout)]
        if se:
            layers.append(SqueezeExcite(cout))
        super().__init__(*layers)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


# ---- U-Net ------------------------------------------------------------------------------------
class UNet(nn.Module):
    """Ronneberger et al. 2015 as in the report: ``depth`` encoder blocks (DoubleConv then
    max-pool), a bottleneck DoubleConv + dropout, ``depth`` decoder blocks (2x transposed conv,
    concatenated skip, DoubleConv, dropout) and a 1x1 conv to the classes."""

    def __init__(self, cfg: ModelConfig, se: bool = False):
        super().__init__()
        w = [cfg.width * 2**i for i in range(cfg.depth + 1)]
        self.multiple = 2**cfg.depth
        self.encoders = nn.ModuleList(
            DoubleConv(cin, cout, se) for cin, cout in zip([cfg.in_channels] + w[:-2], w[:-1])
        )
        self.bottleneck = nn.Sequential(DoubleConv(w[-2], w[-1], se), nn.Dropout2d(cfg.dropout))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in reversed(range(cfg.depth)))
        self.decoders = nn.ModuleList(
            nn.Sequential(DoubleConv(2 * w[i], w[i], se), nn.Dropout2d(cfg.dropout)) for i in reversed(range(cfg.depth))
        )
        self.head = nn.Conv2d(w[0], cfg.n_classes, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        x = _pad_to_multiple(x, self.multiple)
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)[..., :h, :w]


# ---- SegNet -----------------------------------------------------------------------------------
class SegNet(nn.Module):
    """Badrinarayanan et al. 2017, scaled down: ``depth`` encoder blocks (DoubleConv, max-pool
    keeping the indices) and mirrored decoder blocks (MaxUnpool2d with those indices, DoubleConv);
    no skip concatenation -- the pooling indices alone carry the positions back up."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = [cfg.width * 2**i for i in range(cfg.depth)]
        self.multiple = 2**cfg.depth
        self.encoders = nn.ModuleList(DoubleConv(cin, cout) for cin, cout in zip([cfg.in_channels] + w[:-1], w))
        # decoder i undoes encoder i: w[i] -> w[i-1] (the first one ends at w[0])
        self.decoders = nn.ModuleList(DoubleConv(w[i], w[max(i - 1, 0)]) for i in reversed(range(cfg.depth)))
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.head = nn.Conv2d(w[0], cfg.n_classes, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        x = _pad_to_multiple(x, self.multiple)
        indices = []
        for enc in self.encoders:
            x, idx = F.max_pool2d(enc(x), 2, return_indices=True)
            indices.append(idx)
        x = self.dropout(x)
        for dec, idx in zip(self.decoders, reversed(indices)):
            x = dec(F.max_unpool2d(x, idx, 2))
        return self.head(self.dropout(x))[..., :h, :w]


# ---- DeepLabV3 --------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """ResNet basic block; ``dilation`` replaces stride once the output stride is reached."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, dilation, stride)
        self.conv2 = nn.Sequential(
            nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout)
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 conv, three dilated 3x3 convs and image pooling.
    The pooling branch has no BatchNorm, so a batch of one 1x1 vector still trains."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...], dropout: float):
        super().__init__()
        self.branches = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))]
            + [conv_bn_relu(cin, cout, r) for r in rates]
        )
        self.pool = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(
            nn.Conv2d(cout * (len(rates) + 2), cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )

    def forward(self, x):
        pooled = self.pool(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DeepLabV3(nn.Module):
    """Chen et al. 2017 on a small ResNet-18-like encoder (one basic block per stage).

    Stem: two stride-2 convs (output stride 4). Stages at widths w, 2w, 4w, 8w; stages that
    would go past ``output_stride`` use dilation instead of stride. ASPP rates are (6, 12, 18)
    at output stride 16 and doubled at 8, as in the paper."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.output_stride not in (8, 16):
            raise ValueError("deeplabv3 output_stride must be 8 or 16")
        w = cfg.width
        self.stem = nn.Sequential(conv_bn_relu(cfg.in_channels, w, stride=2), conv_bn_relu(w, w, stride=2))
        stages, stride, dilation, cin = [], 4, 1, w
        for i, cout in enumerate([w, 2 * w, 4 * w, 8 * w]):
            s = 1 if i == 0 else 2
            if stride * s > cfg.output_stride:
                dilation, s = dilation * s, 1
            stride *= s
            stages.append(BasicBlock(cin, cout, s, dilation))
            cin = cout
        self.stages = nn.Sequential(*stages)
        rates = (6, 12, 18) if cfg.output_stride == 16 else (12, 24, 36)
        self.aspp = ASPP(cin, 4 * w, rates, cfg.dropout)
        self.head = nn.Sequential(conv_bn_relu(4 * w, 4 * w), nn.Conv2d(4 * w, cfg.n_classes, 1))

    def forward(self, x):
        logits = self.head(self.aspp(self.stages(self.stem(x))))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


_BUILDERS = {
    "unet": UNet,
    "unet-se": lambda cfg: UNet(cfg, se=True),
    "segnet": SegNet,
    "deeplabv3": DeepLabV3,
    "threshold": lambda cfg: _threshold(cfg),  # the classical baseline: no weights, not in ARCHS (nothing to train)
}


def _threshold(cfg: ModelConfig) -> nn.Module:
    from raybird.models import baseline  # it builds on this module's ModelConfig: imported when first built

    return baseline.build(cfg)
