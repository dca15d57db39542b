"""What a training run starts from, checked against its shards before Ray Train starts: a class
model's classes (:func:`class_setup`), the ``--init`` model's weights (:func:`initial_weights`)
and the checkpoints a re-run resumes from (:func:`check_resume`). Read on the driver, so workers
on other nodes need no access to the ``--init`` file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from raybird.pipelines.train import TrainConfig


@dataclass(frozen=True)
class ClassSetup:
    """A class model's outputs 1.. (``names``) and its cross-entropy weights (background first)."""

    names: tuple[str, ...]
    weights: list[float]


def class_setup(tc: TrainConfig) -> Optional[ClassSetup]:
    """The classes of ``tc.data``'s shards (None without ``--classes``), in the order of the
    ``--init`` model's outputs when that is a class model (which must know every class)."""
    if not tc.classes:
        return None
    from raybird.pipelines.shards import shard_classes
    from raybird.training.engine import class_weights

    names, pixels = shard_classes(tc.data)
    if tc.init:
        known = _init_config(tc.init).class_names
        if known:
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(
                    f"--init {tc.init}: label classes {unknown} are unknown to the model, whose classes are "
                    f"{list(known)}; relabel, or train a new class model (--init a bird/background model or none)"
                )
            counts = dict(zip(names, pixels[1:]))
            names, pixels = list(known), [pixels[0], *(counts.get(n, 0) for n in known)]
    return ClassSetup(tuple(names), class_weights(pixels))


def _init_config(init: str):
    from raybird.models.checkpoint import read_checkpoint, read_payload
    from raybird.models.networks import ModelConfig

    return ModelConfig.from_dict(read_payload(read_checkpoint(init).data)["model_config"])


def initial_weights(tc: TrainConfig, spec_json: str, classes: Optional[ClassSetup] = None) -> Optional[dict]:
    """The weights of ``tc.init`` (None without one), after checking that they fit this run: the
    same network, and the spectrogram settings the shards were made with (a model only knows the
    pixel grid it was trained on). Where the number of outputs differs (a bird/background model
    starting a class model of more than one class, or the reverse) the body is kept and the head
    left out, to start at random.
    Read here, on the driver, so workers on other nodes need no access to the file."""
    if not tc.init:
        return None
    from raybird.dsp.spectrogram import SpecConfig
    from raybird.models.checkpoint import read_checkpoint, read_payload
    from raybird.models.networks import ModelConfig

    ckpt = read_checkpoint(tc.init)
    payload = read_payload(ckpt.data)
    have, want = ModelConfig.from_dict(payload["model_config"]), tc.model_config(classes.names if classes else ())
    # every field but dropout, which holds no weights, and the outputs fixes the network's body
    wrong = _differences(have, want, ("dropout", "n_classes", "class_names"))
    if wrong:
        raise ValueError(
            f"--init {tc.init}: the model has " + ", ".join(wrong) + "; pass the matching --arch/--width/--depth"
        )
    shards = SpecConfig.from_json(spec_json)
    wrong = [
        f"{k} {v!r} (shards: {getattr(shards, k)!r})" for k, v in vars(ckpt.cfg).items() if getattr(shards, k) != v
    ]
    if wrong:
        raise ValueError(
            f"--init {tc.init}: the model was trained on other spectrograms: "
            + ", ".join(wrong)
            + "; ingest with its settings (raybird ingest --preset)"
        )
    state, shapes = payload["model_state"], {k: v.shape for k, v in want.build().state_dict().items()}
    kept = {k: v for k, v in state.items() if shapes.get(k) == v.shape}
    # training loads these with strict=False: only a head for other outputs may be left out (it starts at random)
    new_head = have.class_names != want.class_names
    if wrong := sorted(k for k in shapes if k not in kept and not (new_head and k.startswith("head."))):
        raise ValueError(
            f"--init {tc.init}: {len(wrong)} weights of the network are missing from the checkpoint "
            f"or shaped otherwise, e.g. {wrong[0]}"
        )
    return kept


def check_resume(tc: TrainConfig, classes: Optional[ClassSetup] = None) -> None:
    """A re-run of a run name resumes from its checkpoints, so they must hold the network this run
    builds: else their weights would not load, or a class model's outputs would stand for other
    classes (the shards' classes changed since). Raises ``ValueError`` naming what differs."""
    from raybird.io import storage
    from raybird.models.checkpoint import read_payload
    from raybird.models.networks import ModelConfig

    fs, path = storage.filesystem(storage.join(tc.storage_path, tc.name))
    found = sorted(fs.glob(f"{path}/checkpoint_*/checkpoint.pt"))
    if not found:
        return
    with fs.open(found[-1], "rb") as f:
        have = ModelConfig.from_dict(read_payload(f.read())["model_config"])
    wrong = _differences(have, tc.model_config(classes.names if classes else ()), ("dropout",))
    if wrong:
        raise ValueError(
            f"run {tc.name!r} in {tc.storage_path} resumes from checkpoints whose model has "
            + ", ".join(wrong)
            + "; train under another --name, or delete that run folder to start it again"
        )


def _differences(have, want, ignore: tuple[str, ...]) -> list[str]:
    """``field have (this run: want)`` for each field of two ModelConfigs that differs, but ``ignore``."""
    return [
        f"{f.name} {getattr(have, f.name)!r} (this run: {getattr(want, f.name)!r})"
        for f in dataclasses.fields(have)
        if f.name not in ignore and getattr(have, f.name) != getattr(want, f.name)
    ]
