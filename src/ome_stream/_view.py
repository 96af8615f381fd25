"""Live views of a stream: `StreamView` and the coordinate events.

A view is an array-like over every frame appended so far, in acquisition
order (the dimensions of `settings.dimensions`, positions included). Reading
it never waits for the disk: frames still queued for the writer thread are
read from the queue, frames handed to the backend from the backend (which
includes frames buffered for a chunk or shard). Frames not yet appended, and
skipped frames, read as zeros (the fill value).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

from ._settings import Channel, Dimension, Position

if TYPE_CHECKING:
    from ._stream import OMEStream


@dataclass(frozen=True, slots=True)
class CoordUpdate:
    """What the stream's coordinate events carry.

    `max_coords`: per dimension (acquisition order) the coordinates visited
    so far: channel and position names, other coords as given, else a range;
    the frame dimensions always in full. `current_indices`: the index of the
    latest frame along each non-frame dimension. `frame_number`: that
    frame's number (for a skip, the last skipped frame).
    `is_high_water_mark`: True when some dimension reached a new maximum.
    """

    max_coords: Mapping[str, Sequence[Any]]
    current_indices: Mapping[str, int]
    frame_number: int
    is_high_water_mark: bool


def coord_labels(dim: Dimension, extent: int) -> Sequence[Any]:
    """The first `extent` coordinates of a dimension, as a reader shows them."""
    if dim.coords is None:
        return range(extent)
    labels: list[Any] = []
    for coord in dim.coords[:extent]:
        labels.append(coord.name if isinstance(coord, (Channel, Position)) else coord)
    return labels


class LoopGeometry:
    """Extents of the loop (non-frame) dimensions after n frames.

    In acquisition order the frame number is a mixed-radix number, so the
    largest index visited along a dimension after n frames is
    min(count - 1, (n - 1) // stride).
    """

    def __init__(self, dims: Sequence[Dimension]) -> None:
        self.counts = [d.count for d in dims]
        strides: list[int] = []
        stride = 1
        for count in reversed(self.counts):
            strides.append(stride)
            stride *= count or 1
        self.strides = list(reversed(strides))

    def visited(self, frames: int) -> list[int]:
        """Per dimension, how many indices frames 0..frames-1 have visited."""
        if frames <= 0:
            return [0] * len(self.counts)
        last = frames - 1
        extents = []
        for count, stride in zip(self.counts, self.strides):
            reached = last // stride
            extents.append(reached + 1 if count is None else min(count, reached + 1))
        return extents

    def declared(self, frames: int) -> list[int]:
        """Declared counts; an unbounded dimension's extent so far."""
        visited = self.visited(frames)
        return [v if c is None else c for c, v in zip(self.counts, visited)]


class StreamView:
    """A read-only, numpy-indexable view of a stream's data.

    Shape and dimensions follow `settings.dimensions` (acquisition order,
    the position dimension included). With `dynamic_shape=True` (default)
    each non-frame dimension shows only the extent visited so far and grows
    as frames arrive (`coords_changed` is emitted, with no arguments, when
    it does); with False bounded dimensions show their full count and an
    unbounded one its extent so far. Indexing takes ints, slices, `...`,
    lists or integer/boolean arrays, as numpy does. With `strict=True` an
    integer index past the visited extent raises IndexError; otherwise
    anything within the declared shape reads (unwritten frames are zeros).
    """

    coords_changed = Signal()

    def __init__(
        self, stream: OMEStream, *, dynamic_shape: bool = True, strict: bool = False
    ) -> None:
        self._stream = stream
        settings = stream.settings
        self._dims = settings.dimensions
        self._loop = LoopGeometry(self._dims[:-2])
        self._frame_shape = settings.frame_shape
        self.dtype = np.dtype(settings.dtype)
        self.dynamic_shape = dynamic_shape
        self.strict = strict
        self._last_shape = self.shape
        stream.events.coords_expanded.connect(self._on_expanded)

    # ------------------------------------------------------------ geometry

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(d.name for d in self._dims)

    @property
    def ndim(self) -> int:
        return len(self._dims)

    @property
    def shape(self) -> tuple[int, ...]:
        frames = self._stream.frames_appended
        loop = (
            self._loop.visited(frames)
            if self.dynamic_shape
            else self._loop.declared(frames)
        )
        return (*loop, *self._frame_shape)

    @property
    def coords(self) -> dict[str, Sequence[Any]]:
        """Coordinates of each dimension over the current shape."""
        return {
            dim.name: coord_labels(dim, extent)
            for dim, extent in zip(self._dims, self.shape)
        }

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        dims = ", ".join(f"{n}={s}" for n, s in zip(self.dims, self.shape))
        return f"StreamView({dims}, dtype={self.dtype})"

    # -------------------------------------------------------------- events

    def _on_expanded(self, update: CoordUpdate) -> None:
        shape = self.shape
        if shape != self._last_shape:
            self._last_shape = shape
            self.coords_changed.emit()

    def close(self) -> None:
        """Stop following the stream's events (a dropped view stops too)."""
        self._stream.events.coords_expanded.disconnect(self._on_expanded)

    # ------------------------------------------------------------- reading

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError(
                "A StreamView cannot be converted to an array without copying; "
                "use np.asarray(view) or view[...]"
            )
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        frames = self._stream.frames_appended
        shape = self.shape
        visited = self._loop.visited(frames)
        declared = self._loop.declared(frames)
        keys = self._expand(key)
        needed: list[np.ndarray] = []
        remapped: list[Any] = []
        for axis, (part, size) in enumerate(zip(keys, shape)):
            is_loop = axis < len(visited)
            limit = size
            if is_loop and not (self.dynamic_shape and self.strict):
                limit = max(size, declared[axis])  # zeros past the visited extent
            indices, local = _normalize(part, size, limit, self.dims[axis])
            needed.append(indices)
            remapped.append(local)
        block = self._gather(needed)
        return np.asarray(block[tuple(remapped)])

    def _expand(self, key: Any) -> list[Any]:
        parts = list(key) if isinstance(key, tuple) else [key]
        ellipses = sum(1 for p in parts if p is Ellipsis)
        if ellipses > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        if any(p is None for p in parts):
            raise TypeError(
                "StreamView does not take np.newaxis/None; index first, then "
                "add axes to the numpy result."
            )
        explicit = len(parts) - ellipses
        if explicit > self.ndim:
            raise IndexError(
                f"too many indices for StreamView: {self.ndim} dimensions "
                f"({', '.join(self.dims)}), {explicit} indexed"
            )
        if ellipses:
            at = next(i for i, p in enumerate(parts) if p is Ellipsis)
            fill = [slice(None)] * (self.ndim - explicit)
            parts = parts[:at] + fill + parts[at + 1 :]
        return parts + [slice(None)] * (self.ndim - len(parts))

    def _gather(self, needed: list[np.ndarray]) -> np.ndarray:
        """The block of every combination of the needed indices."""
        n_loop = len(needed) - 2
        ys, xs = needed[-2], needed[-1]
        y_key = _as_slice(ys)
        x_key = _as_slice(xs)
        out = np.zeros([len(n) for n in needed], self.dtype)
        if out.size == 0:
            return out
        reader = self._stream._frame_reader()
        for out_index, loop_index in zip(
            itertools.product(*(range(len(n)) for n in needed[:n_loop])),
            itertools.product(*(n.tolist() for n in needed[:n_loop])),
        ):
            frame = reader(loop_index)
            if frame is None:
                continue
            if y_key is not None and x_key is not None:
                out[out_index] = frame[y_key, x_key]
            else:
                out[out_index] = frame[np.ix_(ys, xs)]
        return out


def _as_slice(indices: np.ndarray) -> slice | None:
    """A slice selecting exactly these sorted unique indices, if contiguous."""
    if indices.size == 0:
        return slice(0, 0)
    start, stop = int(indices[0]), int(indices[-1]) + 1
    return slice(start, stop) if stop - start == indices.size else None


def _normalize(part: Any, size: int, limit: int, name: str) -> tuple[np.ndarray, Any]:
    """The sorted unique indices `part` needs along one axis, and the key
    that selects the result from a block holding exactly those indices.

    `size` is the axis' shown extent (slices are clipped to it); `limit`
    the bound for explicit indices.
    """
    if isinstance(part, slice):
        selected = np.arange(*part.indices(size), dtype=np.intp)
        unique = np.unique(selected)
        step = part.step or 1
        return unique, slice(None) if step > 0 else slice(None, None, -1)
    if isinstance(part, (int, np.integer)) and not isinstance(part, bool):
        index = _check_index(int(part), size, limit, name)
        return np.array([index], np.intp), 0
    array = np.asarray(part)
    if array.dtype == bool:
        if array.ndim != 1 or array.shape[0] not in (size, limit):
            raise IndexError(
                f"boolean index of length {array.shape} does not match dimension "
                f"{name!r} of size {size}"
            )
        array = np.flatnonzero(array)
    elif array.size == 0:
        array = array.astype(np.intp)
    elif not np.issubdtype(array.dtype, np.integer):
        raise IndexError(
            f"index {part!r} for dimension {name!r}: only integers, slices, "
            "'...', and integer or boolean lists/arrays are valid indices"
        )
    array = np.where(array < 0, array + size, array)  # negatives count from the end
    if array.size and (array.min() < 0 or array.max() >= limit):
        bad = array[(array < 0) | (array >= limit)][0]
        raise IndexError(f"index {bad} is out of bounds for {name!r} with size {limit}")
    unique = np.unique(array)
    return unique, np.searchsorted(unique, array)


def _check_index(index: int, size: int, limit: int, name: str) -> int:
    value = index + size if index < 0 else index
    if not 0 <= value < limit:
        raise IndexError(
            f"index {index} is out of bounds for {name!r} with size {limit}"
        )
    return value


FrameReader = Callable[[tuple[int, ...]], "np.ndarray | None"]
