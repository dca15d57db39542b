"""How much of the synthetic truth can be predicted at all, and where a model's errors lie.

    python -m benchmarks.ceiling [--n 300] [--seed 9001] [--pred SEGMENT_OUT]

The truth (``raybird.synth.generator``) marks a call's pixels where its clean magnitude is within 40 dB
of its own peak and its local power reaches the *realised* background's. A segmenter sees only
the mixture, never the background's random draw apart from the call. The oracle here knows every
call's clean spectrogram exactly, so its 40-dB core too, but the background only as its power
averaged over a patch of rows x frames (the level one can estimate from around a pixel). Its IoU
against the truth is what the background's draw alone costs: a ceiling estimate, per SNR band,
for issue 6's targets. It is not a strict bound: a model that could also separate the draw
from the mixture could do better, but a model also has to find the calls.

The recordings are the accuracy benchmark's test set (same seed, count and durations), made in
memory. Each recording's truth is first rebuilt from its parts and must equal the generator's.

``--pred``: a ``raybird segment`` output of those recordings (e.g. ``--out`` of a run over the
test folder). Its pixel errors are then sorted by the level of the strongest call there
relative to that call's peak, and by the local call-to-background power ratio; and the share of
the truth it misses is broken down by frequency on the same two scales.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.ndimage

from benchmarks.accuracy import ALL, BANDS, TEST_SEED, band_of
from benchmarks.common import table
from raybird.dsp.spectrogram import SpecConfig, get_config, magnitude, row_freqs
from raybird.synth import generator as synth

LEVEL_BINS = (-np.inf, -60, -50, -45, -40, -35, -30, -20, np.inf)  # dB relative to the call's peak
RATIO_BINS = (-np.inf, -3, 0, 3, 6, 10, 20, np.inf)  # local call / background power, dB
FREQ_EDGES = (0, 1000, 3000, 5000, 7000, 8000, 9000, 10000, np.inf)  # Hz
# coarser bins for the misses by frequency (truth pixels are within 40 dB of their call's peak)
MISS_LEVEL_BINS = (-np.inf, -30, -20, -10, np.inf)
MISS_RATIO_BINS = (-np.inf, 3, 10, 20, np.inf)  # as many bins as MISS_LEVEL_BINS: one array holds both


def _mono(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1) if x.ndim == 2 else x


def parts(rec: synth.Recording, cfg: SpecConfig) -> tuple[list, np.ndarray]:
    """``([(call magnitude, first frame), ...], background magnitude)`` on the truth's grid and
    scale: the calls as the generator placed and levelled them in the mono mix-down."""
    if rec.sample_rate != cfg.sample_rate:
        raise ValueError("the ceiling needs recordings at the spectrogram's sample rate")
    n_frames = rec.mask.shape[1]
    placed = np.zeros(len(rec.vocals), np.float64)
    calls = []
    for c in rec.calls:
        x = synth.render_call(c, rec.sample_rate) * float(np.mean(c.gains))
        a = c.span(rec.sample_rate)[0]
        placed[a : a + len(x)] += x
        calls.append(synth.call_magnitude(x, a, cfg, n_frames))
    vocals = _mono(rec.vocals).astype(np.float64)
    scale = float(vocals @ placed / max(placed @ placed, 1e-30))  # the generator's SNR and level gains
    return [(m * scale, first) for m, first in calls], magnitude(_mono(rec.background), cfg, n_frames=n_frames)


def audible_cores(calls: list, background_power: np.ndarray, shape: tuple) -> np.ndarray:
    """The generator's truth rule, against any background power map."""
    mask = np.zeros(shape, bool)
    for m, first in calls:
        sl = slice(first, first + m.shape[1])
        mask[:, sl] |= synth.audible_core(synth.core_of(m).astype(bool), m, background_power[:, sl])
    return mask


def level_maps(calls: list, background_power: np.ndarray, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, of the strongest call there: its level relative to its peak (dB) and its local
    power over the background's (dB); -inf where no call reaches."""
    level, ratio = np.full(shape, -np.inf), np.full(shape, -np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for m, first in calls:
            sl = slice(first, first + m.shape[1])
            lv = 20 * np.log10(m / m.max())
            rt = 10 * np.log10(synth.local_power(m, "constant") / background_power[:, sl])
            louder = lv > level[:, sl]
            level[:, sl] = np.where(louder, lv, level[:, sl])
            ratio[:, sl] = np.where(louder, rt, ratio[:, sl])
    return level, ratio


def predicted_masks(pred_dir: str) -> dict[str, np.ndarray]:
    """``{recording stem: boolean mask}`` of a local ``raybird segment`` output (channels mixed)."""
    import pyarrow.dataset as pads

    from raybird.io.tables import MASK_SCHEMA, read_mask

    rows = (
        pads.dataset(Path(pred_dir) / "masks", format="parquet", schema=MASK_SCHEMA)
        .to_table(columns=["source", "n_rows", "n_frames", "mask"])
        .to_pylist()
    )
    return {Path(r["source"]).stem: read_mask(r).astype(bool) for r in rows}


def _count(counts: dict, key, truth: np.ndarray, pred: np.ndarray, axis=None) -> None:
    """Add ``[tp, fp, fn]`` (over the whole mask, or per row with ``axis=1``) to ``counts[key]``."""
    c = np.array([(truth & pred).sum(axis), (~truth & pred).sum(axis), (truth & ~pred).sum(axis)], np.int64)
    counts[key] = counts[key] + c if key in counts else c


def _iou(c: np.ndarray) -> float:
    return c[0] / max(c.sum(), 1)


def run(
    n: int, seed: int, duration: tuple[float, float], patches: list[tuple[int, int]], pred_dir: str | None = None
) -> dict:
    """``{"ceiling": {(patch, band): [tp, fp, fn]}, "errors": {(kind, band): (level hist, ratio hist, n)},
    "by_row": {patch or "model": [tp, fp, fn] per spectrogram row}, "misses_by_freq": {frequency range:
    (2, 2, 4) counts}}`` ("model" and the misses with ``pred_dir``). The misses by frequency count
    truth pixels ``[.., 0]`` and missed ones ``[.., 1]`` over ``MISS_LEVEL_BINS`` ``[0]`` and
    ``MISS_RATIO_BINS`` ``[1]``."""
    cfg = get_config(None)
    preds = predicted_masks(pred_dir) if pred_dir else {}
    freq_range = _freq_ranges(cfg)
    range_rows = [(int(k), freq_range == k) for k in np.unique(freq_range)]
    ceiling, errors, by_row, misses_by_freq = {}, {}, {}, {}
    for i, rec, _, _ in synth.archive_recordings(n, seed, duration_s=duration, spec_config=cfg):
        if rec.meta["empty"]:
            continue
        truth, shape = rec.mask.astype(bool), rec.mask.shape
        calls, bg = parts(rec, cfg)
        bg_power = synth.local_power(bg, "nearest")
        if not np.array_equal(audible_cores(calls, bg_power, shape), truth):
            raise AssertionError(f"recording {i}: the truth rebuilt from its parts differs from the generator's")
        bands = (band_of(rec.meta["snr_db"]), ALL)
        power = np.square(bg, dtype=np.float64)
        for patch in patches:
            oracle = audible_cores(calls, scipy.ndimage.uniform_filter(power, size=patch, mode="nearest"), shape)
            _count(by_row, patch, truth, oracle, axis=1)
            for b in bands:
                _count(ceiling, (patch, b), truth, oracle)
        pred = preds.get(f"syn{i:05d}")
        if pred is None:
            continue
        _count(by_row, "model", truth, pred, axis=1)
        level, ratio = level_maps(calls, bg_power, shape)
        missed = truth & ~pred
        for kind, sel in (("missed", missed), ("false alarm", ~truth & pred)):
            for b in bands:
                e = errors.setdefault((kind, b), [np.zeros(len(LEVEL_BINS) - 1), np.zeros(len(RATIO_BINS) - 1), 0])
                e[0] += np.histogram(level[sel], LEVEL_BINS)[0]
                e[1] += np.histogram(ratio[sel], RATIO_BINS)[0]
                e[2] += int(sel.sum())
        for k, rows in range_rows:
            m = misses_by_freq.setdefault(k, np.zeros((2, 2, len(MISS_LEVEL_BINS) - 1), np.int64))
            for j, (values, bins) in enumerate(((level[rows], MISS_LEVEL_BINS), (ratio[rows], MISS_RATIO_BINS))):
                m[j, 0] += np.histogram(values[truth[rows]], bins)[0]
                m[j, 1] += np.histogram(values[missed[rows]], bins)[0]
    return {"ceiling": ceiling, "errors": errors, "by_row": by_row, "misses_by_freq": misses_by_freq}


def _freq_ranges(cfg: SpecConfig) -> np.ndarray:
    """Each spectrogram row's index into ``FREQ_EDGES``' ranges."""
    return np.digitize(np.abs(row_freqs(cfg)), FREQ_EDGES) - 1


def _freq_name(k: int) -> str:
    lo, hi = FREQ_EDGES[k], FREQ_EDGES[k + 1]
    return f"{lo / 1000:g}–{hi / 1000:g} kHz" if np.isfinite(hi) else f"≥ {lo / 1000:g} kHz"


def _bin_names(bins) -> list[str]:
    def f(x):
        return "" if not np.isfinite(x) else f"{x:g}"

    return [
        f"< {f(hi)}" if not np.isfinite(lo) else f"≥ {f(lo)}" if not np.isfinite(hi) else f"{f(lo)}…{f(hi)}"
        for lo, hi in zip(bins[:-1], bins[1:])
    ]


def report(result: dict, patches: list[tuple[int, int]]) -> str:
    bands = [*BANDS, ALL]
    out = [
        "Oracle IoU against the truth: every call's clean spectrogram known, the background's power "
        "averaged over a patch (rows × frames) instead of its draw",
        table(
            ["background known as", *bands],
            [
                [f"mean over {r} × {c}"]
                + [
                    f"{_iou(result['ceiling'][((r, c), b)]):.3f}" if ((r, c), b) in result["ceiling"] else "—"
                    for b in bands
                ]
                for r, c in patches
            ],
        ),
    ]
    errors = result["errors"]
    for title, which, bins in (
        ("level of the strongest call there, relative to its peak (dB)", 0, LEVEL_BINS),
        ("local call / background power (dB)", 1, RATIO_BINS),
    ):
        rows = [
            [kind, b, f"{e[2]:,}"] + [f"{x / max(e[2], 1):.2f}" for x in e[which]]
            for (kind, b), e in sorted(errors.items(), key=lambda kv: (kv[0][0], bands.index(kv[0][1])))
        ]
        if rows:
            out += [
                f"\nThe model's pixel errors by the {title}: shares of each row's pixels",
                table(["error", "band", "pixels", *_bin_names(bins)], rows),
            ]
    freq_range = _freq_ranges(get_config(None))
    by_row = result["by_row"]
    rows = []
    for k in range(len(FREQ_EDGES) - 1):
        sel = freq_range == k
        truth_px = by_row[patches[0]][[0, 2]][:, sel].sum()
        rows.append([_freq_name(k), f"{truth_px:,}"] + [f"{_iou(c[:, sel].sum(axis=1)):.3f}" for c in by_row.values()])
    names = [f"oracle {k[0]} × {k[1]}" if k != "model" else "model" for k in by_row]
    out += ["\nIoU by frequency, all recordings", table(["rows", "truth pixels", *names], rows)]
    for title, j, bins in (
        ("the level of the strongest call there, relative to its peak (dB)", 0, MISS_LEVEL_BINS),
        ("the local call / background power (dB)", 1, MISS_RATIO_BINS),
    ):
        rows = [
            [_freq_name(k), f"{m[j, 0].sum():,}"] + [f"{x / max(n, 1):.2f}" for x, n in zip(m[j, 1], m[j, 0])]
            for k, m in sorted(result["misses_by_freq"].items())
            if m[j, 0].sum()
        ]
        if rows:
            out += [
                f"\nShare of the truth the model misses, by frequency and by {title}",
                table(["rows", "truth pixels", *_bin_names(bins)], rows),
            ]
    return "\n".join(out)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="recordings (the accuracy benchmark's test set: 300)")
    ap.add_argument("--seed", type=int, default=TEST_SEED)
    ap.add_argument("--duration", type=float, nargs=2, default=(4.0, 10.0), metavar=("MIN", "MAX"))
    ap.add_argument("--patches", default="1x9,1x31,3x31,5x61", help="background averaging patches, rows x frames")
    ap.add_argument("--pred", help="raybird segment output of the same recordings: sort its errors")
    a = ap.parse_args(argv)
    patches = [tuple(int(v) for v in p.split("x")) for p in a.patches.split(",")]
    result = run(a.n, a.seed, tuple(a.duration), patches, a.pred)
    print(report(result, patches))
    return result


if __name__ == "__main__":
    main()
