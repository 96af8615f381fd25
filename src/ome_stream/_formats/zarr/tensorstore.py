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
from ..._version import __version__
from ..backend import ArrayBackend
from . import ngff
from .arrays import BlockBuffer, array_metadata, write_block_shape
from .layout import (
    ImageLocation,
    group_document,
    image_locations,
    prepare_store,
    write_hierarchy,
    write_json_atomic,
)

# Writes in flight before the oldest is awaited: bounds the memory tensorstore
# holds for frames it has not copied yet, and surfaces write errors promptly.
MAX_WRITES_IN_FLIGHT = 64
# Unbounded axes grow ahead of the data (then are trimmed at close) so the
# array metadata is not rewritten for every frame.
MAX_GROWTH_STEP = 1024

NAMESPACE = "ome_stream"


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


class TensorStoreBackend(ArrayBackend):
    """Frames to `<image>/0` arrays; NGFF metadata in the group documents."""

    def __init__(self, settings: AcquisitionSettings) -> None:
        super().__init__(settings)
        self.root = settings.output_path
        self._images: list[_Image] = []
        self._pending: deque[Any] = deque()
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
        context = ts.Context()
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
        self._store(image, storage_index, frame)
        image.written[storage_index] = True

    def skip(self, position_index: int, storage_index: tuple[int, ...]) -> None:
        image = self._images[position_index]
        image.skipped.append(storage_index)
        self._store(image, storage_index, None)

    def _store(
        self, image: _Image, storage_index: tuple[int, ...], frame: np.ndarray | None
    ) -> None:
        if self._unbounded_axis is not None:
            needed = storage_index[self._unbounded_axis] + 1
            image.extent = max(image.extent, needed)
            if image.buffer is not None:
                block = self._block_shape[self._unbounded_axis]
                needed = math.ceil(needed / block) * block
            self._ensure_capacity(image, needed)
        if image.buffer is None:
            if frame is not None:
                self._submit(image.array[storage_index].write(frame))
            return
        complete = image.buffer.add(storage_index, frame)
        if complete is not None:
            self._write_block(image, *complete)

    def _write_block(
        self, image: _Image, start: tuple[int, ...], block: np.ndarray
    ) -> None:
        limits = list(image.shape)
        if self._closed and self._unbounded_axis is not None:
            limits[self._unbounded_axis] = image.extent  # no tail past the data
        stop = [min(s + b, limit) for s, b, limit in zip(start, block.shape, limits)]
        region = tuple(slice(s, e) for s, e in zip(start, stop))
        data = block[tuple(slice(0, e - s) for s, e in zip(start, stop))]
        if data.size:
            self._submit(image.array[region].write(data))

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

    def _submit(self, future: Any) -> None:
        self._pending.append(future)
        while len(self._pending) > MAX_WRITES_IN_FLIGHT:
            self._pending.popleft().result()

    def flush(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    # -------------------------------------------------------------- metadata

    def set_global_metadata(self, namespace: str, metadata: dict[str, Any]) -> None:
        self._global[namespace] = metadata
        if self._images and self._images[0].location.group_path == "":
            self._write_image_document(self._images[0])
        else:
            attributes = dict(self._documents.get("", {}))
            attributes.update(self._global)
            write_json_atomic(self.root / "zarr.json", group_document(attributes))

    def _write_image_document(self, image: _Image) -> None:
        settings = self.settings
        name = image.location.position.name
        attributes: dict[str, Any] = {
            "ome": ngff.image_attributes(
                settings, name, validate=settings.storage_order == "ome"
            )
        }
        section: dict[str, Any] = {
            "version": __version__,
            "position": _position_info(image),
        }
        if image.records:
            section["frame_metadata"] = [r.to_json() for r in image.records]
        if self._closed:
            section["missing_frames"] = _missing(image, self._unbounded_axis)
        attributes[NAMESPACE] = section
        if image.location.group_path == "":
            attributes.update(self._global)
        path = self.root / image.location.group_path / "zarr.json"
        write_json_atomic(path, group_document(attributes))

    # ----------------------------------------------------------------- close

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for image in self._images:
            if image.buffer is not None:
                for start, block in image.buffer.drain():
                    if self._unbounded_axis is not None:
                        self._ensure_capacity(image, image.extent)
                    self._write_block(image, start, block)
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


def _position_info(image: _Image) -> dict[str, Any]:
    info: dict[str, Any] = image.location.position.model_dump(exclude_none=True)
    return info
