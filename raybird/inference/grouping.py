"""Grouping a recording's regions into segments: the harmonics of one call, and (with a merge
gap) the notes of one song. Why and with which defaults: "Grouping" and "Songs" in
:mod:`raybird.inference.postprocess`."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

GROUP_OVERLAP = 0.7  # see "Grouping" in raybird.inference.postprocess
GROUP_GAP_HZ = 3000.0


def group_boxes(
    boxes,
    overlap: Optional[float] = GROUP_OVERLAP,
    gap_hz: float = GROUP_GAP_HZ,
    merge_gap_s: Optional[float] = None,
    labels: Optional[Sequence] = None,
) -> list[list[int]]:
    """Groups (lists of indices, each sorted; groups in order of their first index) of boxes
    ``(start_s, end_s, low_hz, high_hz)`` linked, transitively, when their frequency ranges are
    at most ``gap_hz`` apart and their time spans overlap by at least ``overlap`` of the shorter
    span or (with ``merge_gap_s``) lie at most ``merge_gap_s`` apart. ``None`` turns a rule off.
    ``labels`` (a class model's class of each box): boxes of the same class linked in time are
    linked whatever their frequency gap, since a syllable or call of one class is one event
    (the finch's introductory notes reach from 0.5 to 11 kHz with a gap above 4 kHz wide).
    A sweep over start times compares only boxes near enough in time."""
    b = np.asarray(boxes, float).reshape(-1, 4)
    parent = list(range(len(b)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = np.argsort(b[:, 0], kind="stable")
    active: list[int] = []  # boxes whose span may still overlap, or lie within the gap of, a later start
    reach = -np.inf if merge_gap_s is None else merge_gap_s
    for i in order.tolist():
        active = [j for j in active if b[j, 1] > b[i, 0] or b[i, 0] - b[j, 1] <= reach + 1e-12]
        for j in active:
            shared = min(b[i, 1], b[j, 1]) - b[i, 0]  # negative: the silence between them
            shorter = min(b[i, 1] - b[i, 0], b[j, 1] - b[j, 0])
            gap = max(b[i, 2], b[j, 2]) - min(b[i, 3], b[j, 3])
            linked = (overlap is not None and shared >= overlap * shorter - 1e-12) or -shared <= reach + 1e-12
            if linked and (gap <= gap_hz or (labels is not None and labels[i] == labels[j])):
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
        active.append(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(b)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())
