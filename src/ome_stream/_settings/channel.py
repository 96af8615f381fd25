"""`Channel`: one channel of a channel dimension."""

from __future__ import annotations

from typing import Any

from pydantic import Field, PositiveInt, model_validator
from pydantic_extra_types.color import Color

from .base import SettingsModel, Text


class Channel(SettingsModel):
    """A channel: its name and, optionally, its optics and display colour.

    Written to OME-XML `Channel` (Name, Excitation/EmissionWavelength in nm,
    Fluor, Color) and to OME-Zarr `omero.channels` (label, color).
    """

    name: Text = Field(min_length=1)
    excitation_wavelength_nm: PositiveInt | None = None
    emission_wavelength_nm: PositiveInt | None = None
    fluorophore: Text | None = None
    color: Color | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    def rgba(self) -> tuple[int, int, int, int] | None:
        """The colour as 8-bit (r, g, b, a), or None when unset."""
        if self.color is None:
            return None
        r, g, b, *alpha = self.color.as_rgb_tuple()
        a = round(float(alpha[0]) * 255) if alpha else 255
        return int(r), int(g), int(b), a

    def hex_color(self) -> str | None:
        """The colour as six upper-case hex digits (NGFF `omero`), or None."""
        rgba = self.rgba()
        return None if rgba is None else "{:02X}{:02X}{:02X}".format(*rgba[:3])


def check_unique_channel_names(channels: list[Channel]) -> None:
    names = [channel.name for channel in channels]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"Channel names must be unique; repeated: {duplicates}. "
            "Give each channel its own name."
        )
