"""Storage formats and their backends; `create_backend` picks one."""

from __future__ import annotations

from .._settings import AcquisitionSettings, OmeTiffFormat, OmeZarrFormat
from .backend import ArrayBackend


def create_backend(settings: AcquisitionSettings) -> ArrayBackend:
    """The backend that writes `settings.format`.

    Zarr: the requested backend, or for "auto" the first installed one in
    `ZARR_BACKEND_ORDER` that can write the settings; the choice is recorded
    in `settings.format.backend`. Raises ImportError naming the install
    command when a requested backend is not installed, ValueError when it
    cannot write the settings.
    """
    fmt = settings.format
    if isinstance(fmt, OmeZarrFormat):
        from .zarr.selection import create_zarr_backend

        return create_zarr_backend(settings)
    if isinstance(fmt, OmeTiffFormat):
        from .tiff.tifffile import TiffFileBackend

        return TiffFileBackend(settings)
    from .memory import MemoryBackend

    return MemoryBackend(settings)


__all__ = ["ArrayBackend", "create_backend"]
