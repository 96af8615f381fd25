"""OME-Zarr backend writing arrays with tensorstore's `zarr3` driver."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorstore as ts

from ..._settings import AcquisitionSettings
from .arrays import array_metadata
from .layout import ImageLocation, file_kvstore
from .regions import Completion, Region, RegionWriterBackend


class TensorStoreBackend(RegionWriterBackend):
    """Asynchronous region writes; tensorstore writes each zarr.json.

    Whole uncompressed chunks of whole frames, and uncompressed shards of
    them, bypass tensorstore (`chunkfiles.py`): such a file is the chunks'
    bytes (and a shard's index), and plain writes are faster than
    tensorstore's chunk cache, encoding copies and thread hand-offs.
    Everything else (compression, chunks within a frame) is tensorstore's.
    """

    direct_chunk_files = True

    def __init__(self, settings: AcquisitionSettings) -> None:
        super().__init__(settings)
        # No fsync per chunk file: our promise is surviving a killed process,
        # which the OS page cache already gives; fsync per chunk halved
        # large-frame throughput (docs/performance.md).
        self._context = ts.Context({"file_io_sync": False})

    def _create_array(self, location: ImageLocation, shape: tuple[int, ...]) -> Any:
        spec = {
            "driver": "zarr3",
            "kvstore": file_kvstore(self.root / location.array_path),
            "metadata": array_metadata(self.settings, shape),
            "create": True,
            "delete_existing": True,
        }
        return ts.open(spec, context=self._context).result()

    def _write_region(self, array: Any, region: Region, data: np.ndarray) -> Completion:
        future: Completion = array[region].write(data)
        return future

    def _resize_array(
        self, location: ImageLocation, array: Any, shape: tuple[int, ...]
    ) -> Any:
        current = tuple(array.shape)
        exclusive_max = [
            new if new != old else None for new, old in zip(shape, current)
        ]
        grow = any(new > old for new, old in zip(shape, current))
        return array.resize(
            exclusive_max=exclusive_max,
            resize_metadata_only=True,
            expand_only=grow,
            shrink_only=not grow,
        ).result()

    def _read_region(self, array: Any, region: Region) -> np.ndarray:
        return np.asarray(array[region].read().result())
