import copy
import json

import numpy as np
import pytest
import torch

from raybird import cli
from raybird.dsp.spectrogram import PRESETS, SpecConfig
from raybird.models.checkpoint import (
    average_checkpoints,
    export_for_inference,
    load_checkpoint,
    recalibrate_checkpoint,
    save_checkpoint,
)
from raybird.models.networks import ModelConfig, build_model
from raybird.training.augment import AugmentConfig, augment_batch
from raybird.training.engine import (
    IGNORE_INDEX,
    EarlyStopping,
    class_weights,
    fold_batchnorm,
    make_loss,
    make_optimizer,
    make_scheduler,
    native_bf16_cpu,
    pick_device,
    pixel_classes,
    precision_settings,
    predict_classes,
    predict_proba,
    prepare_batch,
    recalibrate_batchnorm,
    train_step,
    validate,
)
from raybird.training.metrics import PixelMetrics


def synthetic_tiles(n, rows=64, frames=128, seed=0):
    """Noise with bright frequency-modulated strokes and boxes; the mask is the strokes."""
    rng = np.random.default_rng(seed)
    spec = (0.3 * rng.random((n, rows, frames))).astype(np.float32)
    mask = np.zeros((n, rows, frames), np.uint8)
    r = np.arange(rows)[:, None]
    for i in range(n):
        for _ in range(rng.integers(1, 4)):  # FM strokes: a sinusoidal sweep, 3 px thick
            t0 = rng.integers(0, frames - 30)
            t = np.arange(t0, t0 + rng.integers(20, frames - t0))
            f = (
                rng.uniform(15, rows - 15)
                + rng.uniform(3, 10) * np.sin(t / rng.uniform(4, 12))
                + rng.uniform(-0.1, 0.1) * (t - t0)
            )
            mask[i][:, t] |= np.abs(r - f[None]) <= 1.5
        b0, f0 = rng.integers(0, frames - 12), rng.integers(0, rows - 8)
        mask[i, f0 : f0 + rng.integers(3, 8), b0 : b0 + rng.integers(4, 12)] = 1
    spec[mask == 1] = 0.55 + 0.45 * rng.random(int(mask.sum()))
    return spec, mask


def box_mask(n=3, h=32, w=48):
    mask = torch.zeros(n, h, w, dtype=torch.long)
    for i in range(n):
        mask[i, 5 + i : 15 + 2 * i, 8 : 30 - i] = 1
        mask[i, 20:24, 30 + i : 44] = 1
    return mask


# ---- training and evaluation ------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_unet_overfits_synthetic_tiles(precision):
    """Both training precisions learn the strokes (bf16: autocast, weights stay fp32)."""
    torch.manual_seed(0)
    spec, mask = synthetic_tiles(8)
    batch = {"spec": spec, "mask": mask}
    model = build_model("unet", width=8, dropout=0.0)
    settings = precision_settings("cpu", precision)
    settings.prepare_model(model)
    opt = make_optimizer(model, lr=3e-3)
    loss_fn = make_loss("ce")
    losses = [train_step(model, batch, opt, loss_fn, settings) for _ in range(50)]
    metrics = validate(model, [batch], settings=settings)
    assert losses[-1] < 0.3 * losses[0]
    assert metrics["iou"] > 0.9, metrics
    assert metrics["pixel_acc"] > 0.98
    prob = predict_proba(model, spec[:2], settings)
    assert prob.shape == (2, 64, 128) and prob.dtype == torch.float32
    assert ((prob > 0.5).numpy() == mask[:2]).mean() > 0.98


def test_prepare_batch_marks_padding_and_loss_ignores_it():
    spec, mask = synthetic_tiles(2, rows=32, frames=64)
    settings = pick_device("cpu")
    s, t = prepare_batch({"spec": (spec * 255).astype(np.uint8), "mask": mask, "valid_frames": [64, 40]}, settings)
    assert s.shape == (2, 1, 32, 64) and s.dtype == torch.float32 and float(s.max()) <= 1.0
    assert s.is_contiguous(memory_format=torch.channels_last)
    assert (t[1, :, 40:] == IGNORE_INDEX).all() and (t[0] >= 0).all() and (t[1, :, :40] >= 0).all()
    logits = torch.randn(2, 2, 32, 64)
    for name in ("ce", "ce+dice"):
        loss = make_loss(name)
        scrambled = logits.clone()
        scrambled[1, :, :, 40:] = 100 * torch.randn(2, 32, 24)  # padding: any output is fine
        assert float(loss(scrambled, t)) == pytest.approx(float(loss(logits, t)), rel=1e-6)
    assert float(make_loss("ce+dice")(logits, t)) > float(make_loss("ce")(logits, t))
    with pytest.raises(ValueError):
        make_loss("focal")


def test_train_step_meter_and_seeded_augmentation():
    spec, mask = synthetic_tiles(4, rows=32, frames=64)
    batch = (spec, mask, [64, 64, 50, 30])
    meter = PixelMetrics()
    torch.manual_seed(0)
    model = build_model("unet-se", width=4, depth=3)
    train_step(model, batch, make_optimizer(model), make_loss("ce"), meter=meter)
    assert meter.counts.sum() == 32 * (64 + 64 + 50 + 30)  # padded frames left out

    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("unet-se", width=4, depth=3)
        losses.append(
            train_step(
                model,
                batch,
                make_optimizer(model),
                make_loss("ce+dice"),
                augment=AugmentConfig(strength=1.0),
                generator=torch.Generator().manual_seed(1),
            )
        )
    assert np.isfinite(losses[0]) and losses[0] == losses[1]


def test_predict_proba_accepts_uint8_arrays():
    torch.manual_seed(0)
    model = build_model("segnet", width=4, depth=3)
    q = np.random.default_rng(0).integers(0, 256, (3, 24, 40), dtype=np.uint8)
    p8 = predict_proba(model, q, "cpu")
    pf = predict_proba(model, torch.from_numpy(q).float()[:, None] / 255, "cpu")
    torch.testing.assert_close(p8, pf)
    assert p8.shape == (3, 24, 40) and 0 <= float(p8.min()) and float(p8.max()) <= 1
    assert not model.training


@pytest.mark.parametrize("arch", ["unet", "unet-se", "segnet", "deeplabv3"])
def test_bf16_autocast_path(arch):
    """The CUDA recipe (bf16 autocast + channels_last), exercised on the CPU."""
    torch.manual_seed(0)
    bf16 = pick_device("cpu", amp="bf16")
    model = bf16.prepare_model(build_model(arch, width=4, depth=3))
    spec, mask = synthetic_tiles(2, rows=32, frames=48)
    loss = train_step(model, (spec, mask), make_optimizer(model), make_loss("ce+dice"), bf16)
    assert np.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    fast, exact = predict_proba(model, spec, bf16), predict_proba(model, spec, pick_device("cpu"))
    assert fast.dtype == torch.float32 and float((fast - exact).abs().max()) < 0.02


def test_device_settings():
    s = pick_device("cpu")
    assert s.device.type == "cpu" and s.amp_dtype is None and s.channels_last
    assert pick_device("cpu", amp="bf16").amp_dtype == torch.bfloat16
    with pytest.raises(ValueError):
        pick_device("cpu", amp="fp8")


# ---- schedule and early stopping ------------------------------------------------------------
def test_scheduler_decays_as_configured():
    def lrs(**kw):
        opt = make_optimizer(torch.nn.Linear(2, 2), lr=1e-3)
        sched = make_scheduler(opt, **kw)
        out = []
        for _ in range(5):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    assert lrs(kind="exponential", gamma=0.5) == pytest.approx([1e-3, 5e-4, 2.5e-4, 1.25e-4, 6.25e-5])
    assert lrs(kind="none") == pytest.approx([1e-3] * 5)
    assert lrs(kind="cosine", epochs=4)[2] == pytest.approx(5e-4)


def test_early_stopping_after_patience():
    stop = EarlyStopping(patience=3, mode="max")
    decisions = [stop.step(v) for v in [0.50, 0.60, 0.60, 0.55, 0.58]]
    assert decisions == [False, False, False, False, True]
    assert (stop.best, stop.best_epoch, stop.bad_epochs) == (0.60, 1, 3)
    resumed = EarlyStopping(patience=3)
    resumed.load_state_dict(json.loads(json.dumps(stop.state_dict())))
    assert resumed.step(0.61) is False and resumed.best_epoch == 5
    low = EarlyStopping(patience=2, mode="min", min_delta=0.01)
    assert [low.step(v) for v in [1.0, 0.995, 0.9, 0.95, 0.899]] == [False, False, False, False, True]


# ---- checkpoints ------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["unet", "deeplabv3"])
def test_checkpoint_round_trip(tmp_path, arch):
    torch.manual_seed(0)
    spec, mask = synthetic_tiles(2, rows=32, frames=64)
    model = build_model(arch, width=4, depth=3)
    opt = make_optimizer(model)
    sched = make_scheduler(opt, gamma=0.9)
    train_step(model, {"spec": spec, "mask": mask}, opt, make_loss("ce"))
    sched.step()
    spec_cfg = PRESETS["default"].replace(tile_frames=64)
    path = save_checkpoint(
        tmp_path / "ckpt",
        model,
        opt,
        epoch=3,
        spec_config_json=spec_cfg.to_json(),
        metrics={"iou": np.float32(0.5)},
        extra={"run": "t", "steps": np.int64(1)},
        scheduler=sched,
    )
    assert path == tmp_path / "ckpt" / "checkpoint.pt" and not list((tmp_path / "ckpt").glob("*.tmp"))
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 3 and raw["metrics"] == {"iou": 0.5} and raw["extra"] == {"run": "t", "steps": 1}

    loaded, payload = load_checkpoint(tmp_path / "ckpt")
    assert ModelConfig.from_dict(payload["model_config"]) == model.config
    assert SpecConfig.from_json(payload["spec_config"]) == spec_cfg
    x = torch.rand(2, 1, 32, 64)
    model.eval()
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))
    opt2 = make_optimizer(loaded)
    opt2.load_state_dict(payload["optimizer_state"])
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    sched2 = make_scheduler(opt2, gamma=0.9)
    sched2.load_state_dict(payload["scheduler_state"])
    assert sched2.last_epoch == 1
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "bad.pt", model, metrics={"x": object()})

    # the shipped form: same predictions and metadata, no optimizer state, a third of the size
    shipped = export_for_inference(path, tmp_path / "ship" / "model.pt")
    if arch == "unet":  # Adam keeps two tensors per weight
        assert shipped.stat().st_size < 0.5 * path.stat().st_size
    small, meta = load_checkpoint(shipped)
    assert meta["optimizer_state"] is None and meta["epoch"] == 3 and meta["spec_config"] == spec_cfg.to_json()
    with torch.inference_mode():
        assert torch.equal(small(x), model(x))


def test_averaged_checkpoint_holds_the_mean_weights(tmp_path, capsys):
    """raybird export A B C --out soup.pt: weights and BatchNorm statistics averaged, integer
    buffers kept, the sources recorded; checkpoints of different networks or spectrograms refused."""
    spec_json = PRESETS["default"].to_json()
    spec, mask = synthetic_tiles(2, rows=32, frames=64)
    model = build_model("unet", width=4, depth=3)
    opt = make_optimizer(model, lr=1e-2)
    paths = []
    for epoch in range(3):  # three checkpoints of one run
        model.train()
        train_step(model, {"spec": spec, "mask": mask}, opt, make_loss("ce"))
        paths.append(
            save_checkpoint(
                tmp_path / f"e{epoch}",
                model,
                opt,
                epoch=epoch,
                spec_config_json=spec_json,
                metrics={"val_iou": 0.1 * epoch},
            )
        )
    states = [load_checkpoint(p)[1]["model_state"] for p in paths]
    assert cli.main(["export", *map(str, paths), "--out", str(tmp_path / "soup.pt")]) == 0
    soup, payload = load_checkpoint(tmp_path / "soup.pt")
    changed = 0
    for name, value in soup.state_dict().items():
        if value.is_floating_point():
            expected = (states[0][name].double() + states[1][name].double() + states[2][name].double()) / 3
            assert torch.allclose(value.double(), expected, atol=1e-6), name
            changed += not torch.equal(states[0][name], states[2][name])
        else:  # BatchNorm's num_batches_tracked: the first checkpoint's
            assert torch.equal(value, states[0][name]), name
    assert changed > 10  # the checkpoints differ, so the mean is not any one of them
    assert any(n.endswith("running_mean") for n, v in soup.state_dict().items())
    assert payload["metrics"] == {} and payload["optimizer_state"] is None
    sources = payload["extra"]["averaged"]
    assert [(a["epoch"], a["metrics"]["val_iou"]) for a in sources] == [(0, 0.0), (1, 0.1), (2, 0.2)]
    assert payload["spec_config"] == spec_json

    wider = save_checkpoint(tmp_path / "w6", build_model("unet", width=6, depth=3), spec_config_json=spec_json)
    assert cli.main(["export", str(paths[0]), str(wider), "--out", str(tmp_path / "bad.pt")]) == 2
    assert "model config differs" in capsys.readouterr().err
    hop256 = PRESETS["default"].replace(hop_length=256).to_json()
    other_spec = save_checkpoint(tmp_path / "hop", model, spec_config_json=hop256)
    with pytest.raises(ValueError, match="spectrogram config differs"):
        average_checkpoints([paths[0], other_spec], tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([paths[0]], tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


# ---- augmentation -----------------------------------------------------------------------------
GEOMETRY_ONLY = dict(brightness=0.0, contrast=0.0, gain=0.0)


def test_augmentation_keeps_spec_and_mask_aligned():
    mask = box_mask()
    g = torch.Generator().manual_seed(0)
    cfg = AugmentConfig(strength=1.0, spec_mode="nearest", **GEOMETRY_ONLY)
    spec_out, mask_out = augment_batch(mask[:, None].float(), mask, cfg, g)
    assert torch.equal(spec_out[:, 0].long(), mask_out)
    assert not torch.equal(mask_out, mask)  # something did move
    # bilinear spectrogram vs nearest mask: they disagree at most on a thin edge
    spec_out, mask_out = augment_batch(mask[:, None].float(), mask, AugmentConfig(strength=1.0, **GEOMETRY_ONLY), g)
    assert ((spec_out[:, 0] > 0.5).long() == mask_out).float().mean() > 0.97


def test_augmentation_is_seeded_and_strength_zero_is_identity():
    mask = box_mask()
    spec = torch.rand(3, 1, 32, 48)
    cfg = AugmentConfig(strength=0.8, noise=0.05)
    a = augment_batch(spec, mask, cfg, torch.Generator().manual_seed(7))
    b = augment_batch(spec, mask, cfg, torch.Generator().manual_seed(7))
    c = augment_batch(spec, mask, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert 0.0 <= float(a[0].min()) and float(a[0].max()) <= 1.0
    s0, m0 = augment_batch(spec, mask, AugmentConfig(strength=0.0))
    assert s0 is spec and m0 is mask


def test_flips_time_by_default_and_frequency_only_when_asked():
    mask = box_mask(n=16)
    mask[:, 0, :] = IGNORE_INDEX  # an ignored row survives nearest sampling exactly
    spec = torch.rand(16, 1, 32, 48)
    still = dict(rotate_deg=0.0, zoom=0.0, crop=0.0, **GEOMETRY_ONLY)
    s, m = augment_batch(
        spec, mask, AugmentConfig(strength=1.0, time_flip=0.5, **still), torch.Generator().manual_seed(0)
    )
    flipped = [torch.equal(m[i], mask[i].flip(-1)) for i in range(16)]
    for i in range(16):
        assert torch.equal(m[i], mask[i].flip(-1) if flipped[i] else mask[i])
        torch.testing.assert_close(s[i], spec[i].flip(-1) if flipped[i] else spec[i])
    assert 3 <= sum(flipped) <= 13
    s, m = augment_batch(spec, mask, AugmentConfig(strength=1.0, time_flip=0.0, freq_flip=1.0, **still))
    assert torch.equal(m, mask.flip(-2)) and (m[:, -1] == IGNORE_INDEX).all()


def test_precision_settings_fold_and_quantize():
    """The predictor's speed settings: folding BatchNorm is the same function, uint8 made on the
    device equals quantizing the float probabilities on the host, bf16 only when asked or native."""
    torch.manual_seed(0)
    model = build_model("unet", width=4, depth=3)
    spec, _ = synthetic_tiles(2, rows=32, frames=64)
    train_step(model, (spec, np.zeros_like(spec, np.uint8)), make_optimizer(model), make_loss("ce"))  # BN stats move
    exact = pick_device("cpu", amp=False)
    before = predict_proba(model, spec, exact)
    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 2 * (2 * 3 + 1)
    torch.testing.assert_close(predict_proba(folded, spec, exact), before, atol=1e-5, rtol=0)
    q = predict_proba(folded, spec, exact, quantize=True)
    assert q.dtype == torch.uint8
    np.testing.assert_array_equal(q.numpy(), np.round(predict_proba(folded, spec, exact).numpy() * 255))
    assert precision_settings("cpu", "fp32").amp_dtype is None
    assert precision_settings("cpu", "bf16").amp_dtype == torch.bfloat16
    assert [precision_settings("cpu", p).precision for p in ("fp32", "bf16")] == ["fp32", "bf16"]
    assert (precision_settings("cpu", "auto").amp_dtype == torch.bfloat16) == native_bf16_cpu()
    with pytest.raises(ValueError):
        precision_settings("cpu", "fp16")


def test_recalibrated_batchnorm_holds_the_statistics_of_the_given_tiles(tmp_path):
    """Each BatchNorm layer ends with the average, over the batches weighted by their tiles, of its
    input's batch mean and (unbiased) variance, with dropout off (so twice gives the same), the model left in
    eval mode with its momentum; a checkpoint file rewritten so, its source recorded."""
    spec, mask = synthetic_tiles(12, rows=32, frames=64)
    model = build_model("unet", width=4, depth=3, dropout=0.5)
    opt = make_optimizer(model, lr=1e-2)
    aug = AugmentConfig(strength=1.0)
    for _ in range(3):  # running averages of augmented batches
        train_step(model, {"spec": spec[:4], "mask": mask[:4]}, opt, make_loss("ce"), augment=aug)
    first_conv, first_bn = model.encoders[0][0][0], model.encoders[0][0][1]
    batches = [torch.from_numpy(spec[i:j])[:, None] for i, j in ((0, 5), (5, 9), (9, 12))]  # 5, 4, 3 tiles
    with torch.no_grad():
        outs = [first_conv(b) for b in batches]
    weights = torch.tensor([5.0, 4.0, 3.0])[:, None] / 12
    want_mean = (torch.stack([o.mean((0, 2, 3)) for o in outs]) * weights).sum(0)  # = the mean over all tiles
    want_var = (torch.stack([o.transpose(0, 1).flatten(1).var(1) for o in outs]) * weights).sum(0)
    assert not torch.allclose(first_bn.running_mean, want_mean, atol=1e-3)

    assert recalibrate_batchnorm(model, [b[:, 0] for b in batches]) == 12
    assert torch.allclose(first_bn.running_mean, want_mean, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(want_mean, first_conv(torch.from_numpy(spec)[:, None]).mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(first_bn.running_var, want_var, rtol=1e-4)
    assert not model.training and not first_bn.training and first_bn.momentum == 0.1
    once = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    recalibrate_batchnorm(model, [b[:, 0] for b in batches])
    deep = [k for k in once if k.startswith("decoders.1")]  # after a dropout layer
    assert deep and all(torch.equal(once[k], model.state_dict()[k]) for k in once)
    with pytest.raises(ValueError, match="no tiles"):
        recalibrate_batchnorm(model, [])

    path = save_checkpoint(tmp_path / "c", model, spec_config_json=PRESETS["default"].to_json())
    tiles = (spec[:8] * 255).astype(np.uint8)  # as the shards hold them
    assert recalibrate_checkpoint(path, tiles, "s3://bucket/ingest", batch_size=4) == 8
    again, payload = load_checkpoint(path)
    assert payload["extra"]["bn_recalibrated"] == {"data": "s3://bucket/ingest", "tiles": 8}
    with torch.no_grad():
        mean8 = torch.stack(
            [first_conv(torch.from_numpy(tiles[i : i + 4])[:, None].float() / 255).mean((0, 2, 3)) for i in (0, 4)]
        ).mean(0)
    assert torch.allclose(again.encoders[0][0][1].running_mean, mean8, atol=1e-5)


def test_class_weights_lift_rare_classes_and_leave_the_background_at_one():
    w = class_weights([10_000, 400, 100, 400, 0])
    assert w[0] == 1.0 and w[1] == w[3] == 1.0  # the median class
    assert w[2] == pytest.approx(2.0)  # a quarter of the median's pixels
    assert w[4] == 10.0  # none at all: the cap


def test_a_class_model_predicts_bird_as_one_minus_background_and_each_class():
    torch.manual_seed(0)
    model = ModelConfig.with_classes(["a", "b", "c"], width=4, depth=2).build().eval()
    spec = torch.rand(2, 32, 48)
    bird, classes = predict_classes(model, spec, "cpu")
    assert classes.shape == (2, 3, 32, 48) and torch.allclose(classes.sum(1), bird, atol=1e-5)
    assert torch.equal(predict_proba(model, spec, "cpu"), bird)
    q_bird, q_classes = predict_classes(model, spec, "cpu", quantize=True)
    assert q_classes.dtype == torch.uint8 and (q_bird.int() - (bird * 255).round().int()).abs().max() == 0
    binary = ModelConfig(width=4, depth=2).build().eval()
    assert predict_classes(binary, spec, "cpu")[1] is None
    assert "class_names" not in binary.config.to_dict()  # a binary model's config reads as before
    assert ModelConfig.from_dict(json.dumps(model.config.to_dict())) == model.config
    with pytest.raises(ValueError, match="n_classes 2 does not fit 3 class names"):
        ModelConfig(class_names=("a", "b", "c"))


def test_training_metrics_count_bird_pixels_as_the_segment_job_does():
    """Background 0.4, classes 0.3/0.3: a bird pixel for segment (1 - 0.4 >= 0.5) that the argmax
    would call background; background 0.6: background for both."""
    p = torch.tensor([[0.4, 0.3, 0.3], [0.6, 0.1, 0.3], [0.2, 0.3, 0.5]]).T.reshape(1, 3, 1, 3)
    assert pixel_classes(p.log()).tolist() == [[[1, 0, 2]]]
    assert p.log().argmax(dim=1).tolist() == [[[0, 0, 2]]]
    two = torch.tensor([[0.6, 0.4], [0.3, 0.7]]).T.reshape(1, 2, 1, 2).log()
    assert pixel_classes(two).tolist() == two.argmax(dim=1).tolist() == [[[0, 1]]]


def test_class_weighted_loss_counts_a_rare_class_more():
    logits = torch.zeros(1, 3, 1, 4)
    target = torch.tensor([[[0, 1, 2, 2]]])
    plain = make_loss("ce")(logits, target)
    weighted = make_loss("ce", class_weights=[1.0, 1.0, 4.0])(logits, target)
    assert plain == pytest.approx(weighted)  # uniform logits: every pixel's loss is log 3 either way
    logits[0, 2] = 5.0  # class 2 right, the others wrong: weighting class 2 lowers the mean loss
    assert make_loss("ce", class_weights=[1.0, 1.0, 4.0])(logits, target) < make_loss("ce")(logits, target)


def test_a_one_class_model_is_a_class_model():
    """Labels without text train one class, 'bird': two outputs, as a bird/background model
    has, but its class probabilities and class confusion are kept."""
    model = ModelConfig.with_classes(["bird"], width=4, depth=2).build().eval()
    bird, classes = predict_classes(model, torch.rand(1, 32, 48), "cpu")
    assert model.config.n_classes == 2 and classes.shape == (1, 1, 32, 48)
    assert torch.allclose(classes[:, 0], bird)
    assert PixelMetrics(2).update(torch.ones(1, 2, 2), torch.ones(1, 2, 2)).matrix.tolist() == [[0, 0], [0, 4]]
