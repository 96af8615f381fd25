"""OME-Zarr backend writing arrays with tensorstore's `zarr3` driver."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from ..._frame_metadata import FrameRecord
from ..._settings import AcquisitionSettings
from ..backend import ArrayBackend
from .arrays import BlockBuffer, array_metadata, write_block_shape
from .layout import (
    ImageLocation,
    image_locations,
    prepare_store,
    write_hierarchy,
    write_image_document,
    write_root_globals,
)

# Writes in flight before the oldest is awaited: bounds the memory tensorstore
# holds for data it has not written yet (beyond the stream's queue bound), and
# surfaces write errors promptly.
MAX_WRITES_IN_FLIGHT = 64
MAX_BYTES_IN_FLIGHT = 32 * 2**20
# Unbounded axes grow ahead of the data (then are trimmed at close) so the
# array metadata is not rewritten for every frame.
MAX_GROWTH_STEP = 1024


@dataclass
class _Image:
    location: ImageLocation
    array: Any  # tensorstore.TensorStore
    shape: list[int]
    extent: int = 0  # stored extent of the unbounded axis (max index + 1)
    records: list[FrameRecord] = field(default_factory=list)
    skipped: list[tuple[int, ...]] = field(default_factory=list)
    buffer: BlockBuffer | None = None
    written: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    # frames gathered in each open write block, for the journal
    block_frames: dict[tuple[int, ...], list[_Entry]] = field(default_factory=dict)


# (storage index, frame metadata, skipped?) of a frame awaiting its write
_Entry = tuple[tuple[int, ...], dict[str, Any] | None, bool]


class TensorStoreBackend(ArrayBackend):
    """Frames to `<image>/0` arrays; NGFF metadata in the group documents."""

    def __init__(self, settings: AcquisitionSettings) -> None:
        super().__init__(settings)
        self.root = settings.output_path
        self._images: list[_Image] = []
        self._pending: deque[tuple[Any, int, list[_Entry], int]] = deque()
        self._pending_bytes = 0
        self._documents: dict[str, dict[str, Any]] = {}
        self._global: dict[str, dict[str, Any]] = {}
        dims = settings.storage_index_dimensions
        self._unbounded_axis = next(
            (i for i, d in enumerate(dims) if d.count is None), None
        )
        self._block_shape = write_block_shape(settings)
        self._buffered = any(b > 1 for b in self._block_shape)
        self._closed = False

    # ----------------------------------------------------------------- open

    def open(self) -> None:
        settings = self.settings
        prepare_store(self.root, settings.overwrite)
        locations = image_locations(settings)
        self._documents = write_hierarchy(self.root, settings, locations)
        frame_shape = settings.frame_shape
        index_shape = tuple(d.count for d in settings.storage_index_dimensions)
        initial = tuple(0 if c is None else c for c in index_shape) + frame_shape
        # No fsync per chunk file: our promise is surviving a killed process,
        # which the OS page cache already gives; fsync per chunk halved
        # large-frame throughput (docs/performance.md).
        context = ts.Context({"file_io_sync": False})
        for loc in locations:
            array = ts.open(
                {
                    "driver": "zarr3",
                    "kvstore": {
                        "driver": "file",
                        "path": str(self.root / loc.array_path),
                    },
                    "metadata": array_metadata(settings, initial),
                    "create": True,
                    "delete_existing": True,
                },
                context=context,
            ).result()
            buffer = None
            if self._buffered:
                buffer = BlockBuffer(
                    self._block_shape,
                    index_shape,
                    frame_shape,
                    np.dtype(settings.dtype),
                )
            image = _Image(loc, array, list(initial), buffer=buffer)
            image.written = np.zeros(initial[:-2], bool)
            self._images.append(image)
            self._write_image_document(image)

    # ---------------------------------------------------------------- frames

    def write(
        self,
        position_index: int,
        storage_index: tuple[int, ...],
        frame: np.ndarray,
        frame_metadata: dict[str, Any] | None,
    ) -> None:
        image = self._images[position_index]
        if frame_metadata is not None:
            image.records.append(FrameRecord(storage_index, frame_metadata))
        self._store(
            position_index, image, (storage_index, frame_metadata, False), frame
        )
        image.written[storage_index] = True

    def skip(self, position_index: int, storage_index: tuple[int, ...]) -> None:
        image = self._images[position_index]
        image.skipped.append(storage_index)
        self._store(position_index, image, (storage_index, None, True), None)

    def _store(
        self,
        position_index: int,
        image: _Image,
        entry: _Entry,
        frame: np.ndarray | None,
    ) -> None:
        storage_index = entry[0]
        if self._unbounded_axis is not None:
            needed = storage_index[self._unbounded_axis] + 1
            image.extent = max(image.extent, needed)
            if image.buffer is not None:
                block = self._block_shape[self._unbounded_axis]
                needed = math.ceil(needed / block) * block
            self._ensure_capacity(image, needed)
        if image.buffer is None:
            if frame is not None:
                future = image.array[storage_index].write(frame)
                self._submit(future, position_index, [entry], frame.nbytes)
            elif self.journal is not None:
                self.journal.skip(position_index, storage_index)
            return
        key = tuple(i // b for i, b in zip(storage_index, self._block_shape))
        image.block_frames.setdefault(key, []).append(entry)
        if self.journal is not None and frame is not None:
            self.journal.received(position_index, storage_index)
        complete = image.buffer.add(storage_index, frame)
        if complete is not None:
            entries = image.block_frames.pop(key)
            self._write_block(position_index, image, *complete, entries)

    def _write_block(
        self,
        position_index: int,
        image: _Image,
        start: tuple[int, ...],
        block: np.ndarray,
        entries: list[_Entry],
    ) -> None:
        limits = list(image.shape)
        if self._closed and self._unbounded_axis is not None:
            limits[self._unbounded_axis] = image.extent  # no tail past the data
        stop = [min(s + b, limit) for s, b, limit in zip(start, block.shape, limits)]
        region = tuple(slice(s, e) for s, e in zip(start, stop))
        data = block[tuple(slice(0, e - s) for s, e in zip(start, stop))]
        if data.size:
            future = image.array[region].write(data)
            self._submit(future, position_index, entries, data.nbytes)

    def _ensure_capacity(self, image: _Image, needed: int) -> None:
        axis = self._unbounded_axis
        assert axis is not None
        current = image.shape[axis]
        if needed <= current:
            return
        grown = max(needed, current + min(max(current, 1), MAX_GROWTH_STEP))
        self._resize(image, grown)
        pad = [(0, 0)] * image.written.ndim
        pad[axis] = (0, grown - image.written.shape[axis])
        image.written = np.pad(image.written, pad)

    def _resize(self, image: _Image, size: int) -> None:
        axis = self._unbounded_axis
        assert axis is not None
        exclusive_max: list[int | None] = [None] * len(image.shape)
        exclusive_max[axis] = size
        grow = size > image.shape[axis]
        image.array = image.array.resize(
            exclusive_max=exclusive_max,
            resize_metadata_only=True,
            expand_only=grow,
            shrink_only=not grow,
        ).result()
        image.shape[axis] = size

    def _submit(
        self, future: Any, position_index: int, entries: list[_Entry], nbytes: int
    ) -> None:
        self._pending.append((future, position_index, entries, nbytes))
        self._pending_bytes += nbytes
        while (
            len(self._pending) > MAX_WRITES_IN_FLIGHT
            or self._pending_bytes > MAX_BYTES_IN_FLIGHT
            or (self._pending and self._pending[0][0].done())
        ):
            self._complete_oldest()  # also journals finished writes promptly

    def _complete_oldest(self) -> None:
        future, position_index, entries, nbytes = self._pending.popleft()
        self._pending_bytes -= nbytes
        future.result()
        if self.journal is None:
            return
        for storage_index, metadata, skipped in entries:
            if skipped:
                self.journal.skip(position_index, storage_index)
            else:
                self.journal.frame(position_index, storage_index, metadata)

    def flush(self) -> None:
        while self._pending:
            self._complete_oldest()

    # -------------------------------------------------------------- metadata

    def set_global_metadata(self, namespace: str, metadata: dict[str, Any]) -> None:
        self._global[namespace] = metadata
        if self._images and self._images[0].location.group_path == "":
            self._write_image_document(self._images[0])
        else:
            write_root_globals(self.root, self._documents.get("", {}), self._global)

    def _write_image_document(self, image: _Image) -> None:
        write_image_document(
            self.root,
            self.settings,
            image.location,
            records=image.records,
            missing=_missing(image, self._unbounded_axis) if self._closed else None,
            global_metadata=self._global,
        )

    # ----------------------------------------------------------------- close

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for position_index, image in enumerate(self._images):
            if image.buffer is not None:
                for start, block in image.buffer.drain():
                    if self._unbounded_axis is not None:
                        self._ensure_capacity(image, image.extent)
                    key = tuple(s // b for s, b in zip(start, self._block_shape))
                    entries = image.block_frames.pop(key, [])
                    self._write_block(position_index, image, start, block, entries)
        self.flush()
        for image in self._images:
            if self._unbounded_axis is not None:
                final = max(image.extent, 1)
                if final != image.shape[self._unbounded_axis]:
                    self._resize(image, final)
            self._write_image_document(image)

    @property
    def output_root(self) -> Path:
        return self.root


def _missing(image: _Image, unbounded_axis: int | None) -> list[list[int]]:
    """Storage indices of frames that never arrived or were skipped (they
    read as the fill value, 0; this list tells them from real zeros)."""
    written = image.written
    if unbounded_axis is not None:
        short = image.shape[unbounded_axis] - written.shape[unbounded_axis]
        if short > 0:
            pad = [(0, 0)] * written.ndim
            pad[unbounded_axis] = (0, short)
            written = np.pad(written, pad)
        index = [slice(None)] * written.ndim
        index[unbounded_axis] = slice(0, image.shape[unbounded_axis])
        written = written[tuple(index)]
    missing: list[list[int]] = np.argwhere(~written).tolist()
    return missing
