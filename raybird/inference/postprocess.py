"""From bird probabilities per tile to a recording's mask and segments (plain NumPy/SciPy).

**Stitching.** Consecutive tiles share ``cfg.tile_overlap`` frames. Every frame is taken from
the one tile where it lies furthest from an edge (the model sees least context at tile
edges): tile ``k`` keeps its columns ``[ov // 2, W - (ov - ov // 2))`` (from 0 for the first
tile), clipped to its valid frames (:func:`kept_columns`). The kept parts cover every frame
of the recording exactly once, so a call crossing a tile boundary is stitched back whole.

**Segments.** Connected regions (8-connected) of ``probability >= threshold``, found on a
stream of column chunks in time order (:class:`Segmenter`): each chunk is labelled with
``scipy.ndimage.label``, regions meeting across a chunk border are merged (union-find), and a
region is closed as soon as a chunk's last column no longer touches it. Memory is one chunk
plus one record per open region, whatever the recording's length; the mask itself is kept
bit-packed (1 bit per pixel: 40 MB for 2 h at the default preset).

A segment's box has its edges half a pixel outside its extreme frame centres and bin
frequencies (clamped to the recording and to [0, Nyquist]), the convention of the synthetic
truth boxes, so ``label_masks.boxes_to_mask`` of a box covers exactly its pixel rectangle.
Regions shorter than ``min_duration_s`` (box duration) or smaller than ``min_pixels`` are
dropped from the segments; the mask keeps every thresholded pixel. For two-sided
spectrograms only the rows of non-negative frequency form segments (the others mirror them).

**Grouping** (:func:`raybird.inference.grouping.group_boxes`). The harmonics of one call are separate regions (silent
bands lie between them), so the surviving regions are then grouped: two regions whose time
spans overlap by at least ``group_overlap`` of the shorter span and whose frequency ranges are
at most ``group_gap_hz`` apart become one segment (transitively), its box the union, its score
the pixel-weighted mean. Regions that follow each other in time are never grouped: a silent
gap separates syllables (10-30 ms in Bengalese finch song). Defaults (:data:`GROUP_OVERLAP`,
:data:`GROUP_GAP_HZ`) were chosen on the regions of exact synthetic truth masks (seed 4242,
30 recordings) against their per-call boxes: event F1 0.27 ungrouped, 0.48 grouped (the same
for overlaps 0.7-1.0; 0.47 at 0.5 and 0.38 with a 1.5 kHz gap); what still misses is trills
(notes apart in time) and calls of different singers that overlap and touch in the mask.
Being transitive, grouping can chain the overlapping calls of a dense chorus into one wide box.
``group_overlap=None`` turns grouping off.

**Songs** (``merge_gap_s``, off by default). Labels of one box per song or bout (the petrel and
great-tit sets) want the calls of a song as one segment. With ``merge_gap_s=g``, grouping also
links regions at most ``g`` seconds apart in time (or overlapping by any amount) within
``group_gap_hz`` in frequency; transitively, so a song is one segment however many notes it
has, and so is a chorus whose calls never pause for ``g``.

**Syllables** (``split_depth_db``, 25 dB in the segment job). Syllables closer than the STFT
window (23 ms at the default preset) touch in the mask: the window smears the silent gap shut,
and a model taught each call's 40-dB range marks the smear. The input still shows the gap: the
loudest masked pixel per frame falls deep there (on the shared Bengalese finch song, at least 20
dB, median 39 dB, under the syllables on both sides in each of its 256 gaps shorter than 30 ms;
never more than 15 dB inside one of its 601 syllables). With
``split_depth_db=d`` a region is cut at each run of frames whose loudest pixel lies at least ``d``
dB under the loudest before and the loudest after (:func:`depth_cuts`); the run's quietest
frame is the gap and belongs to neither piece (the mask keeps it). A piece keeps the region's
mean score. The input level arrives with the probabilities (:meth:`Segmenter.add`'s
``level``); per region only its loudest pixel per frame is kept, so the stream stays small.
Measured with the shipped model, from no cut to 30, 25, 20 dB: finch syllable F1 (onset and
offset within 50 ms) 0.608, 0.873, 0.913, 0.927; per-call F1 on 300 generated recordings (seed
9002) 0.419, 0.416, 0.407, 0.390 (the generator's trills and purrs are one call each, their
notes apart); from 25 dB down it also cuts the last BSD region, two rising notes the reference
mask joins. 25 dB is the default.

**Classes.** With a class model's ``class_names`` the segmenter also keeps, per region and
frame, each class's probability summed over the region's pixels; pieces are cut where the class
changes, pieces of the same class that overlap in time are grouped whatever the frequency gap
between them (a syllable's bands are one syllable), and each segment is labelled
(:mod:`raybird.inference.classes`).

The masks are stored as the masks table encodes them (:mod:`raybird.io.tables`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import scipy.ndimage

from raybird.dsp.spectrogram import SpecConfig, frame_offset_s, row_freqs
from raybird.inference import classes as labels
from raybird.inference.grouping import GROUP_GAP_HZ, GROUP_OVERLAP, group_boxes
from raybird.io.tables import decode_mask, encode_mask, encode_probability

_EIGHT = np.ones((3, 3), bool)  # 8-connectivity: steep FM sweeps touch only diagonally
SPLIT_DEPTH_DB = 25.0  # see "Syllables"


# ---- stitching ---------------------------------------------------------------------------------
def kept_columns(tile_index: int, valid_frames: int, cfg: SpecConfig) -> slice:
    """The columns of a tile that go into the stitched recording (possibly empty for a last
    tile lying wholly inside its predecessor's overlap)."""
    ov = cfg.tile_overlap
    lo = 0 if tile_index == 0 else ov // 2
    hi = min(cfg.tile_frames - (ov - ov // 2), valid_frames)
    return slice(lo, max(lo, hi))


# ---- segments ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    segment_id: int
    start_s: float
    end_s: float
    low_hz: float
    high_hz: float
    score: float  # mean bird probability over the region's pixels
    first_frame: int  # pixel extent (inclusive), rows as in the spectrogram
    last_frame: int
    low_row: int
    high_row: int
    n_pixels: int
    label: Optional[str] = None  # a class model's (raybird.inference.classes); None from bird/background
    label_score: Optional[float] = None
    top: tuple = ()  # ((class, mean probability), ...), the most probable first

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.start_s, self.end_s, self.low_hz, self.high_hz


def segment_rows(cfg: SpecConfig) -> slice:
    """Rows that form segments: all, or the non-negative frequencies of a two-sided config."""
    if not cfg.two_sided:
        return slice(0, cfg.n_rows)
    keep = np.flatnonzero(row_freqs(cfg) >= 0)
    return slice(int(keep[0]), int(keep[-1]) + 1)


def box_of(
    first_frame: int, last_frame: int, low_row: int, high_row: int, cfg: SpecConfig, duration_s: float
) -> tuple[float, float, float, float]:
    """(start_s, end_s, low_hz, high_hz) of a pixel rectangle (edges half a pixel outside)."""
    t0, t1 = frame_offset_s(cfg) + np.array([first_frame, last_frame]) * cfg.frame_s
    f = np.abs(row_freqs(cfg)[low_row : high_row + 1])
    half_t, half_f = cfg.frame_s / 2, cfg.bin_hz / 2
    return (
        max(0.0, float(t0) - half_t),
        min(duration_s, float(t1) + half_t),
        max(0.0, float(f.min()) - half_f),
        min(cfg.sample_rate / 2, float(f.max()) + half_f),
    )


class Segmenter:
    """Streaming stitcher: feed the stitched probability columns in time order with
    :meth:`add`, then :meth:`finish` for the segments. Keeps the packed mask (and, with
    ``keep_probability``, the uint8 probabilities) for the masks table."""

    def __init__(
        self,
        cfg: SpecConfig,
        threshold: float = 0.5,
        min_duration_s: float = 0.0,
        min_pixels: int = 0,
        keep_probability: bool = False,
        group_overlap: Optional[float] = GROUP_OVERLAP,
        group_gap_hz: float = GROUP_GAP_HZ,
        split_depth_db: Optional[float] = None,
        merge_gap_s: Optional[float] = None,
        min_level_db: Optional[float] = None,
        class_names: Sequence[str] = (),
        keep_class_map: bool = False,
    ):
        self.cfg, self.threshold = cfg, threshold
        self.class_names = tuple(class_names)  # a class model's: add() takes its class probabilities
        self.min_level_db = min_level_db
        self.min_duration_s, self.min_pixels = min_duration_s, min_pixels
        self.group_overlap, self.group_gap_hz, self.merge_gap_s = group_overlap, group_gap_hz, merge_gap_s
        self.split_depth_db = split_depth_db
        self.rows = segment_rows(cfg)
        self.n_frames = 0
        self._parent: list[int] = []
        self._stats: list[list] = []  # per region: t0, t1, r0, r1, pixels, probability sum
        self._open: set[int] = set()  # roots of regions not yet closed
        self._edge: Optional[np.ndarray] = None  # region ids of the last column so far (-1: none)
        self._closed: list[int] = []  # roots of closed regions
        # with split_depth_db, per region: [(first frame, its loudest pixel per frame in dB), ...]
        self._levels: dict[int, list] = {}
        # with class_names, per region: [(first frame, its class probabilities summed per frame (K, n)), ...]
        self._class_sums: dict[int, list] = {}
        self._mask: list[bytes] = []
        self._prob: Optional[list[bytes]] = [] if keep_probability else None
        self._class_map: Optional[list[bytes]] = [] if keep_class_map and self.class_names else None

    # union-find over region ids
    def _find(self, i: int) -> int:
        root = i
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[i] != root:
            self._parent[i], i = root, self._parent[i]
        return root

    def _union(self, a: int, b: int) -> None:
        a, b = self._find(a), self._find(b)
        if a == b:
            return
        if b < a:
            a, b = b, a
        self._parent[b] = a
        for per_frame in (self._levels, self._class_sums):
            if b in per_frame:
                per_frame[a] += per_frame.pop(b)
        sa, sb = self._stats[a], self._stats[b]
        sa[:] = [
            min(sa[0], sb[0]),
            max(sa[1], sb[1]),
            min(sa[2], sb[2]),
            max(sa[3], sb[3]),
            sa[4] + sb[4],
            sa[5] + sb[5],
        ]
        self._open.discard(b)

    def add(
        self,
        prob: np.ndarray,
        first_frame: Optional[int] = None,
        level: Optional[np.ndarray] = None,
        classes: Optional[np.ndarray] = None,
    ) -> None:
        """Append the next columns ``(rows, n)`` (float in [0, 1] or uint8 0..255); ``level``:
        the model's input of the same pixels (needed with ``split_depth_db``); ``classes``: a
        class model's probability of each class ``(K, rows, n)`` (needed with ``class_names``)."""
        if prob.shape[1] == 0:  # a last tile whose new columns were all in the overlap
            return
        if self.class_names and (classes is None or classes.shape != (len(self.class_names), *prob.shape)):
            raise ValueError(f"a class model needs the probability of each of its {len(self.class_names)} classes")
        if self.split_depth_db is None and self.min_level_db is None:
            level = None
        elif level is None or level.shape != prob.shape:
            raise ValueError("split_depth_db and min_level_db need the input level of every pixel")
        else:
            level = level[self.rows]
        if first_frame is not None and first_frame != self.n_frames:
            raise ValueError(f"columns must be contiguous: got frame {first_frame}, expected {self.n_frames}")
        p = prob.astype(np.float32) / 255.0 if prob.dtype == np.uint8 else np.asarray(prob, np.float32)
        mask = p >= self.threshold
        self._mask.append(encode_mask(mask))
        if self._prob is not None:
            self._prob.append(encode_probability(prob))
        if self._class_map is not None:
            self._class_map.append(encode_probability(labels.class_map(mask, classes)))
        regions = mask[self.rows]
        if self.min_level_db is not None:
            regions = regions & (level_db(level, self.cfg) >= self.min_level_db)
        if self.class_names:  # probabilities in [0, 1] from here on, uint8 or not
            classes = classes[:, self.rows].astype(np.float32) / (255.0 if classes.dtype == np.uint8 else 1.0)
        else:
            classes = None
        self._label(regions, p[self.rows], level if self.split_depth_db is not None else None, classes)
        self.n_frames += prob.shape[1]

    def _label(self, mask: np.ndarray, p: np.ndarray, level: Optional[np.ndarray], classes: Optional[np.ndarray]):
        lab, n = scipy.ndimage.label(mask, structure=_EIGHT)
        base = len(self._parent)
        if n:
            flat = lab.ravel()
            pixels = np.bincount(flat, minlength=n + 1)[1:]
            psum = np.bincount(flat, weights=p.ravel(), minlength=n + 1)[1:]
            for k, (rs, cs) in enumerate(scipy.ndimage.find_objects(lab)):
                self._parent.append(base + k)
                self._stats.append(
                    [
                        self.n_frames + cs.start,
                        self.n_frames + cs.stop - 1,
                        rs.start,
                        rs.stop - 1,
                        int(pixels[k]),
                        float(psum[k]),
                    ]
                )
                self._open.add(base + k)
                if level is not None:  # the region's loudest pixel per column (levels are >= 0)
                    peak = np.where(lab[rs, cs] == k + 1, level[rs, cs], 0).max(axis=0)
                    self._levels[base + k] = [(self.n_frames + cs.start, level_db(peak, self.cfg))]
                if classes is not None:  # each class's probability summed over the region's pixels per column
                    inside = lab[rs, cs] == k + 1
                    sums = (classes[:, rs, cs] * inside).sum(axis=1, dtype=np.float64)
                    self._class_sums[base + k] = [(self.n_frames + cs.start, sums)]
        ids = np.where(lab > 0, lab - 1 + base, -1)
        if self._edge is not None:  # merge regions touching across the border (8-connected)
            prev, cur, R = self._edge, ids[:, 0], len(ids)
            for d in (-1, 0, 1):
                a, b = prev[max(0, -d) : R - max(0, d)], cur[max(0, d) : R - max(0, -d)]
                both = (a >= 0) & (b >= 0)
                for i, j in set(zip(a[both].tolist(), b[both].tolist())):
                    self._union(i, j)
        self._edge = ids[:, -1]
        touching = {self._find(i) for i in np.unique(self._edge[self._edge >= 0]).tolist()}
        for root in self._open - touching:
            self._closed.append(root)
        self._open &= touching

    def finish(self, duration_s: Optional[float] = None) -> list[Segment]:
        """Close the remaining regions; segments (filtered, in time order, ids 0..)."""
        self._closed += sorted(self._open)
        self._open = set()
        duration_s = self.n_frames * self.cfg.frame_s if duration_s is None else duration_s
        off = self.rows.start
        packed = self.mask_bytes() if self.split_depth_db is not None or self.class_names else b""
        regions = [piece for r in self._closed for piece in self._pieces(r, packed)]
        kept = []
        for t0, t1, r0, r1, n, psum, csum in regions:
            box = box_of(t0, t1, r0 + off, r1 + off, self.cfg, duration_s)
            if box[1] - box[0] + 1e-9 < self.min_duration_s or n < self.min_pixels:
                continue
            kept.append((box, (t0, t1, r0 + off, r1 + off, n, psum), csum))
        classes = None  # each piece's class, for a class model: see "Classes"
        if self.class_names:
            classes = [labels.label_of(csum, stats[4], self.class_names)["label"] for _, stats, csum in kept]
        groups = group_boxes([b for b, _, _ in kept], self.group_overlap, self.group_gap_hz, self.merge_gap_s, classes)
        out = []
        for g in groups:
            boxes, stats = np.array([kept[k][0] for k in g]), np.array([kept[k][1] for k in g])
            box = (boxes[:, 0].min(), boxes[:, 1].max(), boxes[:, 2].min(), boxes[:, 3].max())
            n, psum = int(stats[:, 4].sum()), stats[:, 5].sum()
            csum = sum(kept[k][2] for k in g) if self.class_names else None
            extent = (int(stats[:, 0].min()), int(stats[:, 1].max()), int(stats[:, 2].min()), int(stats[:, 3].max()))
            out.append((tuple(map(float, box)), psum / n, extent, n, labels.label_of(csum, n, self.class_names)))
        out.sort(key=lambda s: (s[0][0], s[0][2], s[0][1], s[0][3]))
        return [
            Segment(i, *box, float(score), *extent, n, **label) for i, (box, score, extent, n, label) in enumerate(out)
        ]

    def _per_frame(self, parts: list, t0: int, shape: tuple, combine) -> np.ndarray:
        """A region's per-frame values (levels, class sums) from its parts, ``combine``d where they overlap."""
        out = np.full(shape, -np.inf if combine is np.maximum else 0.0)
        for start, part in parts:
            span = (..., slice(start - t0, start - t0 + part.shape[-1]))
            out[span] = combine(out[span], part)
        return out

    def _pieces(self, root: int, packed: bytes) -> list[list]:
        """A closed region cut at its gaps (see "Syllables") and, for a class model, where its
        class changes (:func:`raybird.inference.classes.class_spans`): the stats of its pieces,
        each with its class probabilities summed over its pixels (None: bird/background)."""
        t0, t1, r0, r1, n, psum = self._stats[root]
        width = t1 - t0 + 1
        spans = [(0, width - 1)]
        if self.split_depth_db is not None:
            cuts = depth_cuts(self._per_frame(self._levels[root], t0, (width,), np.maximum), self.split_depth_db)
            spans = list(zip([0] + [c + 1 for c in cuts], [c - 1 for c in cuts] + [width - 1]))
        sums = None
        if self.class_names:
            sums = self._per_frame(self._class_sums[root], t0, (len(self.class_names), width), np.add)
            min_frames = max(1, round(labels.MIN_RUN_S / self.cfg.frame_s))
            spans = [(a + c, a + d) for a, b in spans for c, d in labels.class_spans(sums[:, a : b + 1], min_frames)]
        if len(spans) == 1:
            return [[t0, t1, r0, r1, n, psum, None if sums is None else sums.sum(axis=1)]]
        off = self.rows.start
        box = decode_mask(packed, self.cfg.n_rows, self.n_frames, t0, t1 + 1)[off + r0 : off + r1 + 1].astype(bool)
        lab, _ = scipy.ndimage.label(box, structure=_EIGHT)
        # the region is the one component of its own bounding box that spans all of it
        own = next(
            k + 1
            for k, sl in enumerate(scipy.ndimage.find_objects(lab))
            if sl is not None and sl[0].stop - sl[0].start == box.shape[0] and sl[1].stop - sl[1].start == box.shape[1]
        )
        region = lab == own
        pieces = []
        for a, b in spans:
            part = region[:, a : b + 1]
            rows = np.flatnonzero(part.any(axis=1))
            k = int(part.sum())
            csum = None if sums is None else sums[:, a : b + 1].sum(axis=1)
            pieces.append([t0 + a, t0 + b, r0 + int(rows[0]), r0 + int(rows[-1]), k, psum * k / n, csum])
        return pieces

    def mask_bytes(self) -> bytes:
        return b"".join(self._mask)

    def probability_bytes(self) -> Optional[bytes]:
        return None if self._prob is None else b"".join(self._prob)

    def class_map_bytes(self) -> Optional[bytes]:
        """With ``keep_class_map``: frame-major uint8, 1 + the class of each mask pixel, 0 elsewhere."""
        return None if self._class_map is None else b"".join(self._class_map)


def depth_cuts(levels: np.ndarray, depth: float) -> list[int]:
    """Columns at which to cut a region whose loudest pixel per column is ``levels`` (dB): the
    quietest column of each run lying at least ``depth`` dB under the smaller of the loudest
    columns before and after it."""
    levels = np.asarray(levels, float)
    before = np.maximum.accumulate(levels)
    after = np.maximum.accumulate(levels[::-1])[::-1]
    low = levels <= np.minimum(before, after) - depth
    if not low.any():  # most regions: no gap, and no labelling
        return []
    low, _ = scipy.ndimage.label(low)
    return [sl[0].start + int(np.argmin(levels[sl])) for sl in scipy.ndimage.find_objects(low)]


def level_db(level: np.ndarray, cfg: SpecConfig) -> np.ndarray:
    """The model's input (float in [0, 1] or uint8 0..255) as dB, up to a constant."""
    v = level.astype(np.float32) / 255.0 if level.dtype == np.uint8 else np.asarray(level, np.float32)
    if cfg.scale == "db":
        return v * cfg.top_db
    return 20.0 * np.log10(np.maximum(v, 1e-6))


def segments_of(
    prob: np.ndarray,
    cfg: SpecConfig,
    threshold: float = 0.5,
    min_duration_s: float = 0.0,
    min_pixels: int = 0,
    duration_s: Optional[float] = None,
    group_overlap: Optional[float] = GROUP_OVERLAP,
    group_gap_hz: float = GROUP_GAP_HZ,
    split_depth_db: Optional[float] = None,
    merge_gap_s: Optional[float] = None,
    level: Optional[np.ndarray] = None,
) -> list[Segment]:
    """Segments of a whole probability map ``(rows, frames)`` (a single chunk)."""
    seg = Segmenter(
        cfg,
        threshold,
        min_duration_s,
        min_pixels,
        group_overlap=group_overlap,
        group_gap_hz=group_gap_hz,
        split_depth_db=split_depth_db,
        merge_gap_s=merge_gap_s,
    )
    seg.add(prob, level=level)
    return seg.finish(duration_s)


def covered_seconds(segments: Sequence[Segment]) -> float:
    """Length of the union of the segments' time spans."""
    total, end = 0.0, -np.inf
    for s in sorted(segments, key=lambda s: s.start_s):
        if s.end_s > end:
            total += s.end_s - max(s.start_s, end)
            end = s.end_s
    return total
