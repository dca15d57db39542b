"""Ingest's shards as training data: Ray Datasets of labelled tiles per split, decoded to arrays
for the train loop, and tiles drawn with pyarrow alone (for BatchNorm statistics)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raybird.io.label_masks import BIRD, MAX_CLASSES
from raybird.io.outputs import output_dataset


def _tiles(t: pa.Table, column: str) -> np.ndarray:
    """A binary column of shard rows as uint8 tiles ``(N, H, W)``, joined into one writable buffer
    (``bytearray().join`` copies once, as ``b"".join`` does; torch warns on read-only arrays)."""
    h, w = t["n_rows"][0].as_py(), t["n_frames"][0].as_py()
    return np.frombuffer(bytearray().join(t[column].to_pylist()), np.uint8).reshape(len(t), h, w)


def decode_batch(t: pa.Table, class_names: Optional[Sequence[str]] = None) -> dict:
    """Shard rows -> ``spec`` uint8 (N, H, W), ``mask`` uint8 (N, H, W), ``valid_frames`` (N,).
    With ``class_names`` (a class model's, in output order) ``mask`` is the training target of
    a class model instead: 0 background, k for ``class_names[k - 1]`` (:func:`class_targets`)."""
    return {
        "spec": _tiles(t, "spec"),
        "mask": _tiles(t, "mask") if class_names is None else class_targets(t, class_names),
        "valid_frames": t["valid_frames"].to_numpy().astype(np.int32),
    }


def class_targets(t: pa.Table, class_names: Sequence[str]) -> np.ndarray:
    """Shard rows' class maps, each recording's own class numbering (its ``class_names``) turned
    into ``class_names``'; a labelled row without classes (labels without text) is class
    :data:`~raybird.io.label_masks.BIRD` wherever its mask is set. Unknown classes raise."""
    _check_count(class_names)
    index = {name: k for k, name in enumerate(class_names, start=1)}
    masks = _tiles(t, "mask")
    out = np.zeros_like(masks)
    for i, (packed, names) in enumerate(zip(t["classes"].to_pylist(), t["class_names"].to_pylist())):
        names = names if packed is not None else [BIRD]
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ValueError(f"label classes {unknown} are not among the model's {list(class_names)}")
        lut = np.array([0, *(index[n] for n in names)], np.uint8)
        local = masks[i] if packed is None else np.frombuffer(packed, np.uint8).reshape(masks[i].shape)
        out[i] = lut[local]
    return out


def shard_classes(data: str) -> tuple[list[str], list[int]]:
    """The label classes of ingest output ``data``'s labelled tiles, sorted by name, and the
    training pixels of each output of a class model over them (background first), read with
    pyarrow. Tiles labelled without text count as :data:`~raybird.io.label_masks.BIRD`."""
    shards = output_dataset(data, "shards")
    if not shards or not shards.files:
        raise ValueError(f"no shards under {data}")
    cols = ["mask", "classes", "class_names", "n_rows", "n_frames", "valid_frames", "split"]
    pixels: dict[str, int] = {}
    background = 0
    for batch in shards.to_batches(columns=cols, filter=pc.is_valid(pc.field("mask"))):
        t = pa.Table.from_batches([batch])
        names = sorted({n for row in t["class_names"].to_pylist() for n in (row or [BIRD])})
        counts = np.zeros(len(names) + 1, np.int64)
        train = t.filter(pc.equal(t["split"], "train"))
        if len(train):
            target = class_targets(train, names)
            for i, vf in enumerate(train["valid_frames"].to_pylist()):
                counts += np.bincount(target[i][:, :vf].ravel(), minlength=len(counts))
        background += int(counts[0])
        for name, n in zip(names, counts[1:]):
            pixels[name] = pixels.get(name, 0) + int(n)
    if not pixels:
        raise ValueError(f"no labelled tiles under {data}")
    names = sorted(pixels)
    _check_count(names, f" in {data}")
    return names, [background, *(pixels[n] for n in names)]


def _check_count(names: Sequence[str], where: str = "") -> None:
    """A class target (a uint8 map, as segment's class maps) holds 1 + at most 255 classes."""
    if len(names) > MAX_CLASSES:
        raise ValueError(f"{len(names)} label classes{where}; a class model takes at most {MAX_CLASSES}")


def split_tiles(shards, split: Optional[str], tile_shape: tuple[int, int], class_names: Optional[Sequence[str]] = None):
    """The labelled tiles of one split (None: of every split) of a Ray Dataset of shard rows,
    decoded (with ``class_names``: targets of a class model, :func:`decode_batch`)."""
    return shards.map_batches(
        _decode_split, fn_args=(split, tile_shape, class_names), batch_format="pyarrow", batch_size=None
    )


def _decode_split(t: pa.Table, split: Optional[str], tile_shape: tuple[int, int], class_names=None):
    """decode_batch of a shard batch's labelled rows of ``split`` (None: any). A batch with none
    gives empty tensor columns: Ray Data would store an empty ndarray as pickled objects (with a
    warning), unlike the tensors of every other block."""
    keep = pc.is_valid(t["mask"])
    t = t.filter(keep if split is None else pc.and_(pc.equal(t["split"], split), keep))
    if len(t):
        return decode_batch(t, class_names)
    from ray.data.extensions import ArrowTensorArray

    empty = np.zeros((0, *tile_shape), np.uint8)
    return pa.table(
        {
            "spec": ArrowTensorArray.from_numpy(empty),
            "mask": ArrowTensorArray.from_numpy(empty),
            "valid_frames": pa.array([], pa.int32()),
        }
    )


def load_datasets(data: str, cache: bool = True, class_names: Optional[Sequence[str]] = None) -> tuple[dict, str]:
    """Ray Datasets ``{"train", "val"}`` of labelled tiles, and the shards' SpecConfig JSON;
    with ``class_names``, the targets of a class model with those outputs (:func:`decode_batch`)."""
    import ray

    # the first row straight from Parquet: a Ray Data take(1) would cost a whole execution (1-4 s)
    shards = output_dataset(data, "shards")
    first = shards.head(1, columns=["n_rows", "n_frames", "spec_config"]).to_pylist() if shards and shards.files else []
    if not first:
        raise ValueError(f"no shards under {data}")
    spec_json = first[0]["spec_config"]
    tile_shape = (first[0]["n_rows"], first[0]["n_frames"])
    cols = ["spec", "mask", "valid_frames", "n_rows", "n_frames", "split", "spec_config"]
    cols += ["classes", "class_names"] if class_names is not None else []
    base = ray.data.read_parquet(shards.files, filesystem=shards.filesystem, columns=cols)  # the files listed once
    out = {}
    for split in ("train", "val"):
        ds = split_tiles(base, split, tile_shape, class_names)
        out[split] = ds.materialize() if cache else ds
        if out[split].count() == 0:
            raise ValueError(f"no labelled {split} tiles under {data}; ingest more recordings")
    return out, spec_json


def sample_tiles(data: str, n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Up to ``n`` spectrogram tiles ``(n, H, W)`` uint8 drawn at random from the training split
    of ingest output ``data``, and the shards' SpecConfig JSON; read with pyarrow (the rows
    drawn only), not Ray. For recomputing a model's BatchNorm statistics (``raybird export
    --recalibrate``)."""
    shards = output_dataset(data, "shards")
    in_train = pc.field("split") == "train"
    count = shards.count_rows(filter=in_train) if shards and shards.files else 0
    if count == 0:
        raise ValueError(f"no training tiles under {data}")
    rows = np.sort(np.random.default_rng(seed).permutation(count)[:n])
    t = shards.take(rows, columns=["spec", "n_rows", "n_frames", "spec_config"], filter=in_train)
    return _tiles(t, "spec"), t["spec_config"][0].as_py()
