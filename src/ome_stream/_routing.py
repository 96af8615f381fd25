"""Acquisition order -> (position, storage index).

Frames arrive in acquisition order: a nested loop over the non-frame
dimensions, the last varying fastest. The router turns the running frame
number into the position it belongs to and its index in that position's
array, in storage order. It knows nothing of file formats.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from ._settings import AcquisitionSettings


@dataclass(frozen=True, slots=True)
class FrameTarget:
    """Where one frame goes."""

    frame_number: int
    position_index: int
    storage_index: tuple[int, ...]


class FrameRouter:
    """Maps frame numbers (acquisition order) to storage locations."""

    def __init__(self, settings: AcquisitionSettings) -> None:
        loop_dims = settings.dimensions[:-2]
        self._counts = [d.count for d in loop_dims]
        self.num_frames = settings.num_frames
        # Strides of each loop dimension in frame numbers (the first may be
        # unbounded: its stride is the product of the others).
        strides = []
        stride = 1
        for count in reversed(self._counts):
            strides.append(stride)
            stride *= count or 1
        self._strides = tuple(reversed(strides))
        self._first_unbounded = bool(loop_dims) and loop_dims[0].count is None
        # Several position dimensions multiply (the last varies fastest).
        self._position_axes = tuple(
            i for i, d in enumerate(loop_dims) if d.type == "position"
        )
        self._position_counts = tuple(
            loop_dims[i].count or 1 for i in self._position_axes
        )
        index_axes = [
            i for i, d in enumerate(loop_dims) if d.type != "position"
        ]  # acquisition positions of the index dimensions
        acquisition_names = [loop_dims[i].name for i in index_axes]
        storage_names = [d.name for d in settings.storage_index_dimensions]
        self._storage_axes = tuple(
            index_axes[acquisition_names.index(name)] for name in storage_names
        )
        self.storage_shape: tuple[int | None, ...] = tuple(
            loop_dims[i].count for i in self._storage_axes
        )
        self.num_positions = len(settings.positions)
        self.frames_per_position = (
            None if self.num_frames is None else self.num_frames // self.num_positions
        )

    def loop_index(self, frame_number: int) -> tuple[int, ...]:
        """The acquisition-order index of a frame (one entry per loop dim)."""
        index = []
        remainder = frame_number
        for axis, stride in enumerate(self._strides):
            if axis == 0 and self._first_unbounded:
                value, remainder = divmod(remainder, stride)
            else:
                count = self._counts[axis] or 1
                value = (remainder // stride) % count
            index.append(value)
        return tuple(index)

    def route(self, frame_number: int) -> FrameTarget:
        """Where frame number `frame_number` (0-based) is stored."""
        if self.num_frames is not None and frame_number >= self.num_frames:
            raise IndexError(frame_number)
        position, storage = self.locate(self.loop_index(frame_number))
        return FrameTarget(frame_number, position, storage)

    def locate(self, loop_index: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        """(position, storage index) of an acquisition-order loop index."""
        position = 0
        for axis, count in zip(self._position_axes, self._position_counts):
            position = position * count + loop_index[axis]
        return position, tuple(loop_index[axis] for axis in self._storage_axes)

    def __iter__(self) -> Iterator[FrameTarget]:
        frame = 0
        while self.num_frames is None or frame < self.num_frames:
            yield self.route(frame)
            frame += 1

    def frames_for_outer(self, outer_count: int) -> int:
        """Frames per position needed to fill `outer_count` of the outermost
        stored dimension (with all inner stored dimensions complete)."""
        inner = math.prod(c or 1 for c in self.storage_shape[1:])
        return outer_count * inner
