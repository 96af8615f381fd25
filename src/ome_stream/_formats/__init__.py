"""Storage formats and their backends; `create_backend` picks one."""

from __future__ import annotations

from .._settings import AcquisitionSettings, OmeTiffFormat, OmeZarrFormat
from .backend import ArrayBackend


def create_backend(settings: AcquisitionSettings) -> ArrayBackend:
    """The backend that writes `settings.format`."""
    fmt = settings.format
    if isinstance(fmt, OmeZarrFormat):
        from .zarr.tensorstore import TensorStoreBackend

        return TensorStoreBackend(settings)
    if isinstance(fmt, OmeTiffFormat):
        from .tiff.tifffile import TiffFileBackend

        return TiffFileBackend(settings)
    from .memory import MemoryBackend

    return MemoryBackend(settings)


__all__ = ["ArrayBackend", "create_backend"]
