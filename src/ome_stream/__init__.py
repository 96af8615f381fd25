"""ome-stream: stream microscope frames into OME-Zarr and OME-TIFF."""

from ._recover import RecoveryReport, recover
from ._settings import (
    AcquisitionSettings,
    Channel,
    Dimension,
    OmeTiffFormat,
    OmeZarrFormat,
    Plate,
    Position,
    ScratchFormat,
    StandardAxis,
    dims_from_standard_axes,
)
from ._stream import (
    BackpressureError,
    OMEStream,
    StreamEvents,
    StreamStats,
    WriterError,
    create_stream,
)
from ._useq import (
    IrregularSequenceError,
    UseqSettings,
    dims_from_useq,
    useq_to_acquisition_settings,
)
from ._version import __version__
from ._view import CoordUpdate, StreamView

__all__ = [
    "AcquisitionSettings",
    "BackpressureError",
    "Channel",
    "CoordUpdate",
    "Dimension",
    "IrregularSequenceError",
    "OMEStream",
    "OmeTiffFormat",
    "OmeZarrFormat",
    "Plate",
    "Position",
    "RecoveryReport",
    "ScratchFormat",
    "StandardAxis",
    "StreamEvents",
    "StreamStats",
    "StreamView",
    "UseqSettings",
    "WriterError",
    "__version__",
    "create_stream",
    "dims_from_standard_axes",
    "dims_from_useq",
    "recover",
    "useq_to_acquisition_settings",
]
