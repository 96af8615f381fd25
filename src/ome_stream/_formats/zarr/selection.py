"""Which Zarr backend writes a stream: the one asked for, or for "auto" the
first of `ZARR_BACKEND_ORDER` that is installed and can write the settings.

Optional backends are looked up with `importlib.util.find_spec` and imported
only once chosen, so an uninstalled one costs nothing.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from typing import cast

from ..._settings import AcquisitionSettings, OmeZarrFormat
from ..._settings.formats import BACKEND_EXTRAS, ZARR_BACKEND_ORDER, ZarrBackendName
from ..backend import ArrayBackend
from .acquire_zarr_support import acquire_zarr_incompatibility

# The module each backend imports.
_MODULES = {
    "tensorstore": "tensorstore",
    "acquire-zarr": "acquire_zarr",
    "zarr-python": "zarr",
}


def is_installed(backend: str) -> bool:
    if importlib.util.find_spec(_MODULES[backend]) is None:
        return False
    if backend == "zarr-python":  # zarr 2 has another API
        return _version("zarr") >= (3, 1)
    return True


def _version(distribution: str) -> tuple[int, ...]:
    """(major, minor) of an installed distribution; (0,) when unknown."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        numbers = re.findall(r"\d+", version(distribution))[:2]
    except PackageNotFoundError:
        return (0,)
    return tuple(int(n) for n in numbers)


def install_hint(backend: str) -> str:
    extra = BACKEND_EXTRAS.get(backend)
    if extra is None:  # a core dependency
        return f'pip install --force-reinstall "ome-stream" (it needs {backend})'
    hint = f'pip install "ome-stream[{extra}]"'
    if backend == "zarr-python" and sys.version_info < (3, 11):
        hint += " (zarr-python 3 needs Python >= 3.11)"
    return hint


def incompatibility(backend: str, settings: AcquisitionSettings) -> str | None:
    """Why `backend` cannot write `settings`, or None if it can."""
    if backend == "acquire-zarr":
        return acquire_zarr_incompatibility(settings)
    return None


def choose_zarr_backend(settings: AcquisitionSettings) -> str:
    """The backend name for `settings.format.backend` ("auto" resolved).

    Raises ImportError (with the install command) when an explicitly
    requested backend is not installed, ValueError when it cannot write the
    settings or when "auto" finds no backend that can.
    """
    fmt = settings.format
    assert isinstance(fmt, OmeZarrFormat)
    if fmt.backend != "auto":
        if not is_installed(fmt.backend):
            raise ImportError(
                f"The Zarr backend {fmt.backend!r} is not installed. Install it "
                f"with: {install_hint(fmt.backend)}, or use backend='auto'.",
                name=_MODULES[fmt.backend],
            )
        reason = incompatibility(fmt.backend, settings)
        if reason is not None:
            raise ValueError(
                f"The Zarr backend {fmt.backend!r} cannot write these "
                f"settings: {reason}"
            )
        return fmt.backend
    reasons = []
    for backend in ZARR_BACKEND_ORDER:
        if not is_installed(backend):
            reasons.append(f"{backend}: not installed ({install_hint(backend)})")
            continue
        reason = incompatibility(backend, settings)
        if reason is None:
            return backend
        reasons.append(f"{backend}: {reason}")
    raise ValueError(
        "No installed Zarr backend can write these settings:\n  " + "\n  ".join(reasons)
    )


def create_zarr_backend(settings: AcquisitionSettings) -> ArrayBackend:
    """The backend that writes `settings` as OME-Zarr. The choice is recorded
    in `settings.format.backend` (so the journal and `stream.settings` name
    it); see `choose_zarr_backend` for the errors."""
    backend = choose_zarr_backend(settings)
    fmt = settings.format
    assert isinstance(fmt, OmeZarrFormat)
    fmt.backend = cast(ZarrBackendName, backend)
    if backend == "acquire-zarr":
        from .acquire_zarr import AcquireZarrBackend

        return AcquireZarrBackend(settings)
    if backend == "zarr-python":
        from .zarr_python import ZarrPythonBackend

        return ZarrPythonBackend(settings)
    from .tensorstore import TensorStoreBackend

    return TensorStoreBackend(settings)
