"""Settings models: what to write, validated when built."""

from .acquisition import AcquisitionSettings, tiff_axis_letter
from .channel import Channel
from .dimension import Dimension, DimensionType, StandardAxis, dims_from_standard_axes
from .formats import OmeTiffFormat, OmeZarrFormat, ScratchFormat
from .plate import Plate
from .position import Position

__all__ = [
    "AcquisitionSettings",
    "Channel",
    "Dimension",
    "DimensionType",
    "OmeTiffFormat",
    "OmeZarrFormat",
    "Plate",
    "Position",
    "ScratchFormat",
    "StandardAxis",
    "dims_from_standard_axes",
    "tiff_axis_letter",
]
