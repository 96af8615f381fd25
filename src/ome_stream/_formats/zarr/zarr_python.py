"""OME-Zarr backend writing arrays with zarr-python (>= 3.1.3).

Imported only when this backend is chosen (`pip install "ome-stream[zarr-python]"`).
We write each array's zarr.json ourselves (`array_document`, the document
tensorstore writes for the same settings) and let zarr-python read it and
write the chunks, so both backends produce the same store. Resizing rewrites
that document and reopens the array: zarr-python's own `resize` would write
its own form of the document (and may delete chunks outside the new shape).
Writes are synchronous. Runtime options are set per array (`with_config`),
never through the process-global `zarr.config`, so other zarr users in the
process (or several streams) cannot change each other's behaviour.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from .arrays import array_document
from .layout import ImageLocation, write_json_atomic
from .regions import Completion, Done, Region, RegionWriterBackend

if TYPE_CHECKING:
    from zarr.core.array_spec import ArrayConfigParams

# Every chunk we write is stored, even one equal to the fill value: checking
# each chunk for emptiness cost two thirds of the write rate (100 x 2048²
# uint16: ~250 MB/s with the check, ~800 MB/s without). Skipped frames still
# cost no disk: no region is written for them unless they share a chunk.
_ARRAY_CONFIG: ArrayConfigParams = {"write_empty_chunks": True}
_DONE = Done()


def _replaces_files_whole() -> bool:
    """Whether zarr-python's local store writes a chunk file to a temporary
    renamed into place (3.1.3 on), rather than over the file."""
    numbers = [int(n) for n in re.findall(r"\d+", zarr.__version__)[:3]]
    return tuple(numbers) >= (3, 1, 3)


class ZarrPythonBackend(RegionWriterBackend):
    """Synchronous region writes through zarr-python; zarr.json written by us."""

    pause_writes = _replaces_files_whole()

    def _open(self, location: ImageLocation, shape: tuple[int, ...]) -> Any:
        path = self.root / location.array_path
        document = array_document(self.settings, shape)
        write_json_atomic(path / "zarr.json", document, compact=True)
        array = zarr.open_array(str(path), mode="r+", zarr_format=3)
        return array.with_config(_ARRAY_CONFIG)

    def _create_array(self, location: ImageLocation, shape: tuple[int, ...]) -> Any:
        return self._open(location, shape)

    def _write_region(self, array: Any, region: Region, data: np.ndarray) -> Completion:
        array[region] = data
        return _DONE

    def _resize_array(
        self, location: ImageLocation, array: Any, shape: tuple[int, ...]
    ) -> Any:
        return self._open(location, shape)

    def _read_region(self, array: Any, region: Region) -> np.ndarray:
        return np.asarray(array[region])
