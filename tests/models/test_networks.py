import json

import pytest
import torch
import torch.nn.functional as F

from raybird.models.networks import ARCHS, ModelConfig, SqueezeExcite, build_model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", [(1, 1, 97, 131), (2, 1, 256, 512)])
def test_logits_have_input_size(arch, shape):
    torch.manual_seed(0)
    model = build_model(arch, width=8).eval()
    with torch.inference_mode():
        y = model(torch.rand(shape))
    assert y.shape == (shape[0], 2, *shape[2:])
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_trains_on_odd_size_batch_of_one(arch):
    model = build_model(arch, width=4, n_classes=3)
    y = model(torch.rand(1, 1, 45, 70))
    assert y.shape == (1, 3, 45, 70)
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unet_zero_pads_and_crops():
    torch.manual_seed(0)
    model = build_model("unet", width=4).eval()
    x = torch.rand(1, 1, 97, 131)
    with torch.inference_mode():
        direct = model(x)
        padded = model(F.pad(x, (0, 160 - 131, 0, 128 - 97)))[..., :97, :131]
    torch.testing.assert_close(direct, padded)


@pytest.mark.parametrize("arch", ARCHS)
def test_channels_last_gives_same_logits(arch):
    torch.manual_seed(0)
    model = build_model(arch, width=4).eval()
    x = torch.rand(2, 1, 64, 96)
    with torch.inference_mode():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_architectures_differ_as_specified():
    unet, se = build_model("unet", width=8), build_model("unet-se", width=8)
    assert sum(isinstance(m, SqueezeExcite) for m in se.modules()) == 11  # 5 enc + bottleneck + 5 dec
    assert not any(isinstance(m, SqueezeExcite) for m in unet.modules())
    # parameter counts quoted in the report (width 8, depth 5)
    assert count_parameters(unet) == 1_946_258
    assert count_parameters(build_model("segnet", width=8)) == 443_962
    assert count_parameters(build_model("deeplabv3", width=8)) == 152_010
    # U-Net: 5 transposed-conv up-samplings, channels 8..256 in the bottleneck
    ups = [m for m in unet.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [u.in_channels for u in ups] == [256, 128, 64, 32, 16]
    segnet = build_model("segnet", width=8, depth=3)
    x = torch.rand(1, 1, 40, 40)
    assert segnet(x).shape == (1, 2, 40, 40)


def test_deeplab_output_stride_8_uses_doubled_rates():
    model = build_model("deeplabv3", width=4, output_stride=8)
    dilations = sorted({m.dilation[0] for m in model.aspp.modules() if isinstance(m, torch.nn.Conv2d)})
    assert dilations == [1, 12, 24, 36]
    assert model(torch.rand(1, 1, 33, 65)).shape == (1, 2, 33, 65)
    with pytest.raises(ValueError):
        build_model("deeplabv3", output_stride=32)


def test_config_round_trip():
    cfg = ModelConfig(arch="unet-se", width=12, depth=4, dropout=0.2)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert ModelConfig.from_dict(json.dumps(cfg.to_dict())) == cfg
    model = build_model("segnet", width=4, depth=3)
    assert model.config == ModelConfig(arch="segnet", width=4, depth=3)
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vit")
    with pytest.raises(TypeError):
        build_model("unet", widht=8)
