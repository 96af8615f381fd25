"""In-memory backend: one numpy array per position, in storage order."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from .._frame_metadata import FrameRecord, MetadataJSON
from .._settings import AcquisitionSettings, ScratchFormat
from .backend import ArrayBackend


class MemoryBackend(ArrayBackend):
    """Keeps everything in RAM; arrays and metadata are read from the stream."""

    def __init__(self, settings: AcquisitionSettings) -> None:
        super().__init__(settings)
        fmt = settings.format
        assert isinstance(fmt, ScratchFormat)
        self.max_memory_bytes = fmt.max_memory_bytes
        dims = settings.storage_index_dimensions
        self._unbounded_axis = next(
            (i for i, d in enumerate(dims) if d.count is None), None
        )
        self._shape = [d.count or 0 for d in dims] + list(settings.frame_shape)
        self.arrays: list[np.ndarray] = []
        self.extents: list[int] = []
        self.frame_metadata: list[list[FrameRecord]] = []
        self.skipped: list[list[tuple[int, ...]]] = []
        self.global_metadata: dict[str, dict[str, Any]] = {}

    def open(self) -> None:
        n = len(self.settings.positions)
        self._check_memory(math.prod(self._shape) * n)
        for _ in range(n):
            self.arrays.append(np.zeros(self._shape, self.settings.dtype))
            self.extents.append(0)
            self.frame_metadata.append([])
            self.skipped.append([])

    def _check_memory(self, elements: int) -> None:
        nbytes = elements * np.dtype(self.settings.dtype).itemsize
        if nbytes > self.max_memory_bytes:
            raise MemoryError(
                f"The in-memory arrays would need {nbytes / 2**30:.2f} GiB, more "
                f"than max_memory_bytes={self.max_memory_bytes}. Raise "
                "format.max_memory_bytes or write to OME-Zarr/OME-TIFF."
            )

    def _reserve(self, position_index: int, storage_index: tuple[int, ...]) -> None:
        axis = self._unbounded_axis
        if axis is None:
            return
        needed = storage_index[axis] + 1
        self.extents[position_index] = max(self.extents[position_index], needed)
        array = self.arrays[position_index]
        if needed <= array.shape[axis]:
            return
        shape = list(array.shape)
        shape[axis] = max(needed, math.ceil(shape[axis] * 1.5), 4)
        self._check_memory(math.prod(shape) * len(self.arrays))
        grown = np.zeros(shape, array.dtype)
        grown[tuple(slice(0, s) for s in array.shape)] = array
        self.arrays[position_index] = grown

    def write(
        self,
        position_index: int,
        storage_index: tuple[int, ...],
        frame: np.ndarray,
        frame_metadata: MetadataJSON | None,
    ) -> None:
        self._reserve(position_index, storage_index)
        self.arrays[position_index][storage_index] = frame
        if frame_metadata is not None:
            self.frame_metadata[position_index].append(
                FrameRecord(storage_index, frame_metadata)
            )

    def skip(self, position_index: int, storage_index: tuple[int, ...]) -> None:
        self._reserve(position_index, storage_index)
        self.skipped[position_index].append(storage_index)

    def set_global_metadata(self, namespace: str, metadata: dict[str, Any]) -> None:
        self.global_metadata[namespace] = metadata

    def read_frame(
        self, position_index: int, storage_index: tuple[int, ...]
    ) -> np.ndarray | None:
        array = self.arrays[position_index]
        axis = self._unbounded_axis
        if axis is not None and storage_index[axis] >= array.shape[axis]:
            return None
        frame: np.ndarray = array[storage_index].copy()
        return frame

    def get_metadata(self) -> dict[str, Any]:
        """{"global": {namespace: ...}, "frame_metadata": per position a
        list of each frame's metadata plus its "storage_index",
        "missing_frames": per position a list of storage indices}."""
        return {
            "global": copy.deepcopy(self.global_metadata),
            "frame_metadata": [
                [r.to_json() for r in records] for records in self.frame_metadata
            ],
            "missing_frames": [[list(i) for i in skipped] for skipped in self.skipped],
        }

    def update_metadata(self, metadata: Any) -> None:
        """Only the global namespaces can be replaced in memory."""
        if not isinstance(metadata, dict):
            raise TypeError(
                f"Expected a dict like get_metadata() returns, got "
                f"{type(metadata).__name__}."
            )
        unknown = set(metadata) - {"global", "frame_metadata", "missing_frames"}
        if unknown:
            raise KeyError(
                f"Unknown metadata keys {sorted(unknown)}; the in-memory format "
                "has 'global', 'frame_metadata' and 'missing_frames'."
            )
        current = self.get_metadata()
        for key in ("frame_metadata", "missing_frames"):
            if key in metadata and metadata[key] != current[key]:
                raise ValueError(
                    f"{key!r} records what was acquired and cannot be edited; "
                    "change only 'global' (or use set_global_metadata)."
                )
        new_global = metadata.get("global", current["global"])
        if not isinstance(new_global, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) for k, v in new_global.items()
        ):
            raise TypeError(
                "'global' must be a dict of namespace (str) -> dict of metadata."
            )
        self.global_metadata = copy.deepcopy(new_global)

    def close(self) -> None:
        axis = self._unbounded_axis
        if axis is None:
            return
        for i, array in enumerate(self.arrays):
            index = [slice(None)] * array.ndim
            index[axis] = slice(0, max(self.extents[i], 1))
            self.arrays[i] = array[tuple(index)].copy()
