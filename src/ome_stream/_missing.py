"""The missing-frames record of an OME-Zarr image, as ranges.

Frames that were skipped or never arrived read as the fill value (0); the
record tells them from real zeros. It lists ranges of storage indices, so
that its size follows the number of gaps, not the number of frames: an
acquisition planned for millions of frames and cancelled after ten is one
range, where a list of indices would be millions of entries in zarr.json.

A range is `[first, last]`, two storage indices (one entry per index axis;
the frame's Y and X are left out). Both are missing, and so is every index
between them in C order (the last axis varying fastest). The ranges are in
storage order and never touch: a written frame lies between two of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MissingRange = list[list[int]]  # [first, last], each a storage index


@dataclass(frozen=True)
class MissingFrames:
    """How many frames are missing, and their ranges."""

    count: int
    ranges: list[MissingRange]


def missing_frames(written: np.ndarray) -> MissingFrames:
    """The frames `written` (a mask over the index shape) marks False."""
    # a byte per frame: missing or not, framed by "not" to find every edge
    framed = np.zeros(written.size + 2, bool)
    np.logical_not(written.reshape(-1), out=framed[1:-1])
    edges = np.flatnonzero(framed[1:] != framed[:-1])
    starts, stops = edges[0::2], edges[1::2] - 1
    return MissingFrames(
        int((stops - starts + 1).sum()), _ranges(starts, stops, written.shape)
    )


def ranges_of(
    indices: Iterable[Sequence[int]], shape: Sequence[int]
) -> list[MissingRange]:
    """The ranges covering exactly `indices` (storage indices within `shape`,
    in any order, repeats allowed)."""
    dims = tuple(shape)
    rows = np.array([list(i) for i in indices], dtype=np.int64)
    if not len(rows):
        return []
    if not dims:
        return [[[], []]]
    flat = np.unique(np.ravel_multi_index(tuple(rows.reshape(-1, len(dims)).T), dims))
    breaks = np.flatnonzero(np.diff(flat) != 1) + 1
    starts = flat[np.concatenate(([0], breaks))]
    stops = flat[np.concatenate((breaks - 1, [len(flat) - 1]))]
    return _ranges(starts, stops, dims)


def _ranges(
    starts: np.ndarray, stops: np.ndarray, shape: tuple[int, ...]
) -> list[MissingRange]:
    if not shape:  # an image of a single frame
        return [[[], []]] if len(starts) else []
    first = np.stack(np.unravel_index(starts, shape), axis=-1).tolist()
    last = np.stack(np.unravel_index(stops, shape), axis=-1).tolist()
    return [[a, b] for a, b in zip(first, last)]


def flat_bounds(ranges: Any, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The ranges' first and last flat (C-order) positions in `shape`.
    ValueError, in plain words, if `ranges` is not a valid record for an
    index shape `shape`."""
    dims = tuple(shape)
    if not isinstance(ranges, list):
        raise ValueError(f"the missing-frame ranges are not a list: {ranges!r:.80}")
    starts: list[int] = []
    stops: list[int] = []
    for entry in ranges:
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and all(is_storage_index(i, dims) for i in entry)
        ):
            raise ValueError(
                f"missing-frame range {entry!r:.80} is not [first, last] with two "
                f"storage indices within the index shape {list(dims)}"
            )
        first, last = (
            int(np.ravel_multi_index(tuple(i), dims)) if dims else 0 for i in entry
        )
        if last < first:
            raise ValueError(f"missing-frame range {entry} ends before it starts")
        if stops and first <= stops[-1] + 1:
            raise ValueError(
                f"missing-frame range {entry} overlaps or touches the one before "
                f"it, or is out of order"
            )
        starts.append(first)
        stops.append(last)
    return np.array(starts, np.int64), np.array(stops, np.int64)


def is_storage_index(index: Any, shape: Sequence[int]) -> bool:
    """Whether `index` is a list of integers within `shape`."""
    return (
        isinstance(index, list)
        and len(index) == len(shape)
        and all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n
            for i, n in zip(index, shape)
        )
    )


def count(ranges: Any, shape: Sequence[int]) -> int:
    """How many frames the ranges cover."""
    starts, stops = flat_bounds(ranges, shape)
    return int((stops - starts + 1).sum())


def covered(
    ranges: Any, shape: Sequence[int], indices: Iterable[Sequence[int]]
) -> list[list[int]]:
    """Those of `indices` (storage indices in `shape`) that the ranges cover."""
    dims = tuple(shape)
    starts, stops = flat_bounds(ranges, dims)
    found = []
    for index in indices:
        flat = int(np.ravel_multi_index(tuple(index), dims)) if dims else 0
        k = int(np.searchsorted(starts, flat, side="right")) - 1
        if k >= 0 and flat <= stops[k]:
            found.append(list(index))
    return found


def describe(
    ranges: Sequence[MissingRange], axes: Sequence[str], shape: Sequence[int]
) -> list[str]:
    """Each range in words: `t=5 c=1`, or `t=5 c=0 to t=9 c=1`; axes of
    size 1 (`shape`) are left out."""
    shown = [k for k, n in enumerate(shape) if n != 1]

    def where(index: Sequence[int]) -> str:
        return " ".join(f"{axes[k]}={index[k]}" for k in shown) or "the frame"

    return [
        where(first) if first == last else f"{where(first)} to {where(last)}"
        for first, last in ranges
    ]
