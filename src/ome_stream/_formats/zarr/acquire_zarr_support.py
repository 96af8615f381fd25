"""What the acquire-zarr backend can write, decided without importing it
(so "auto" can pass over it and an explicit request fails at create_stream
with the fix)."""

from __future__ import annotations

import numpy as np

from ..._settings import AcquisitionSettings

# numpy dtypes acquire-zarr's DataType covers
ACQUIRE_ZARR_DTYPES = (
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float32",
    "float64",
)


def acquire_zarr_incompatibility(settings: AcquisitionSettings) -> str | None:
    """Why acquire-zarr cannot write `settings` (with the fix), or None."""
    if settings.compression == "zstd":
        return (
            "acquire-zarr compresses only through blosc; use "
            "compression='blosc-zstd' (or 'blosc-lz4'), or backend='tensorstore' "
            "for a standalone zstd codec."
        )
    dtype = np.dtype(settings.dtype).name
    if dtype not in ACQUIRE_ZARR_DTYPES:
        return (
            f"acquire-zarr cannot store dtype {dtype!r} (it stores "
            f"{', '.join(ACQUIRE_ZARR_DTYPES)}); use backend='tensorstore'."
        )
    acquired = [d.name for d in settings.index_dimensions]
    stored = [d.name for d in settings.storage_index_dimensions]
    if acquired and stored[0] != acquired[0]:
        return (
            "acquire-zarr streams each array along its first acquired dimension "
            f"{acquired[0]!r} and must store it first, but the storage order "
            f"{stored} moves it. Acquire {stored[0]!r} outermost, or use "
            "backend='tensorstore' (storage_order='acquisition' also avoids it, "
            "in an axis order OME-Zarr readers may refuse)."
        )
    return None
