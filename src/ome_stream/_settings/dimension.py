"""`Dimension`, `StandardAxis` and `dims_from_standard_axes`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from .base import SettingsModel
from .channel import Channel, check_unique_channel_names
from .position import Position, check_unique_position_names
from .units import known_units, normalize_unit

DimensionType = Literal["space", "time", "channel", "position", "other"]
Coord = str | float | Channel | Position

# The standard axis names and the type each implies.
_STANDARD_TYPES: dict[str, DimensionType] = {
    "x": "space",
    "y": "space",
    "z": "space",
    "t": "time",
    "c": "channel",
    "p": "position",
}


class Dimension(SettingsModel):
    """One axis of the acquisition, in acquisition order (slowest first).

    `count=None` marks an unbounded axis (only the first may be). `type` is
    inferred when omitted: from `Channel`/`Position` coords, then from the unit
    (length -> "space", time -> "time"), then from the standard names
    t, c, z, y, x, p. `unit` is stored as its OME-NGFF name ("um" -> "micrometer").
    `chunk_size` is in elements; `shard_size_chunks` counts chunks per shard.
    `scale` is the physical step (pixel size, time interval) and `translation`
    the physical position of the first element.
    """

    name: str = Field(min_length=1)
    count: PositiveInt | None = None
    type: DimensionType | None = None
    coords: list[Coord] | None = None
    chunk_size: PositiveInt | None = None
    shard_size_chunks: PositiveInt | None = None
    unit: str | None = None
    scale: float | None = None
    translation: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _infer_type_and_coords(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        name = data.get("name")
        coords = data.get("coords")
        if coords is not None:
            if isinstance(coords, (str, bytes)) or not isinstance(coords, Sequence):
                raise ValueError(
                    f"Dimension {name!r}: coords must be a list, got "
                    f"{type(coords).__name__}."
                )
            coords = list(coords)
        if data.get("type") is None:
            data["type"] = _infer_type(name, coords, data.get("unit"))
        dim_type = data["type"]
        count = data.get("count")
        if dim_type == "position":
            if coords is None:
                if count is None:
                    raise ValueError(
                        f"Dimension {name!r}: a position dimension needs a count or "
                        "coords (unbounded positions cannot be split into images)."
                    )
                coords = [str(i) for i in range(count)]
            elif not coords:
                raise ValueError(
                    f"Dimension {name!r}: position coords may not be empty."
                )
        if coords is not None:
            if count is None:
                data["count"] = len(coords)
            elif count != len(coords):
                raise ValueError(
                    f"Dimension {name!r}: length of coords ({len(coords)}) does not "
                    f"match count ({count})."
                )
            data["coords"] = _cast_coords(name, dim_type, coords)
        return data

    @field_validator("unit")
    @classmethod
    def _normalize_unit(cls, unit: str | None) -> str | None:
        if unit is None:
            return None
        recognised = normalize_unit(unit)
        return recognised[0] if recognised else unit

    @field_validator("scale")
    @classmethod
    def _scale_positive(cls, scale: float | None) -> float | None:
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ValueError(
                f"scale must be a positive, finite physical step, got {scale}. "
                "Leave it None when the step is unknown."
            )
        return scale

    @field_validator("translation")
    @classmethod
    def _translation_finite(cls, translation: float | None) -> float | None:
        if translation is not None and not math.isfinite(translation):
            raise ValueError(f"translation must be finite, got {translation}.")
        return translation

    @model_validator(mode="after")
    def _unit_matches_type(self) -> Dimension:
        if self.unit is None or self.type not in ("space", "time"):
            return self
        recognised = normalize_unit(self.unit)
        if recognised is None or recognised[1] != self.type:
            kind = "length" if self.type == "space" else "time"
            raise ValueError(
                f"Dimension {self.name!r} (type={self.type!r}): unrecognized unit of "
                f"{kind} {self.unit!r}. Use one of {known_units(self.type)} "
                "(or an abbreviation such as 'um', 'nm', 'ms', 's')."
            )
        return self

    @property
    def is_unbounded(self) -> bool:
        return self.count is None

    @property
    def coord_names(self) -> list[str] | None:
        """Coordinates as strings (Channel/Position by name), or None."""
        if self.coords is None:
            return None
        return [
            c.name if isinstance(c, (Channel, Position)) else str(c)
            for c in self.coords
        ]


def _infer_type(name: Any, coords: list[Any] | None, unit: Any) -> DimensionType | None:
    from_coords: DimensionType | None = None
    if coords:
        if any(isinstance(c, Channel) for c in coords):
            from_coords = "channel"
        elif any(isinstance(c, Position) for c in coords):
            from_coords = "position"
    from_unit: DimensionType | None = None
    if isinstance(unit, str):
        recognised = normalize_unit(unit)
        if recognised:
            from_unit = recognised[1]
    if from_coords and from_unit and from_coords != from_unit:
        raise ValueError(
            f"Dimension {name!r}: conflicting type inference: coords suggest "
            f"type={from_coords!r} but unit {unit!r} suggests type={from_unit!r}. "
            "Set `type` explicitly or remove the conflicting field."
        )
    if from_coords or from_unit:
        return from_coords or from_unit
    if isinstance(name, str):
        return _STANDARD_TYPES.get(name.lower())
    return None


def _cast_coords(name: Any, dim_type: Any, coords: list[Any]) -> list[Any]:
    for model, model_type in ((Channel, "channel"), (Position, "position")):
        if any(isinstance(c, model) for c in coords):
            if dim_type != model_type:
                raise ValueError(
                    f"Dimension {name!r}: {model.__name__} coords require "
                    f"type={model_type!r}, got type={dim_type!r}."
                )
            if not all(isinstance(c, (model, str)) for c in coords):
                raise ValueError(
                    f"Dimension {name!r}: may not mix {model.__name__} objects with "
                    "other coordinate types."
                )
    if dim_type == "channel":
        channels = [Channel.model_validate(c) for c in coords]
        check_unique_channel_names(channels)
        return channels
    if dim_type == "position":
        positions = [Position.model_validate(c) for c in coords]
        check_unique_position_names(positions)
        return positions
    return coords


class StandardAxis(str, Enum):
    """The standard axis names and what they imply."""

    X = "x"
    Y = "y"
    Z = "z"
    CHANNEL = "c"
    TIME = "t"
    POSITION = "p"

    def dimension_type(self) -> DimensionType:
        return _STANDARD_TYPES[self.value]

    def unit(self) -> str | None:
        """The default unit: micrometer for x/y/z, second for t."""
        if self in (StandardAxis.X, StandardAxis.Y, StandardAxis.Z):
            return "micrometer"
        if self is StandardAxis.TIME:
            return "second"
        return None

    def to_dimension(
        self,
        *,
        count: int | None = None,
        coords: Sequence[Coord] | None = None,
        chunk_size: int | None = None,
        shard_size_chunks: int | None = None,
        scale: float | None = None,
    ) -> Dimension:
        """A `Dimension` with this axis' name, type and default unit."""
        return Dimension(
            name=self.value,
            count=count,
            type=self.dimension_type(),
            coords=list(coords) if coords is not None else None,
            chunk_size=chunk_size,
            shard_size_chunks=shard_size_chunks,
            unit=self.unit(),
            scale=scale,
        )


def dims_from_standard_axes(
    sizes: Mapping[str, int | Sequence[Coord] | None],
    chunk_shapes: Mapping[str, int] | None = None,
    shard_shapes: Mapping[str, int] | None = None,
) -> list[Dimension]:
    """Dimensions from `{axis: size}` in acquisition order.

    A size is a count, a list of coordinates (channel or position names), or
    None for an unbounded first axis. Default chunks are the full frame for y/x
    and 1 elsewhere; `shard_shapes` gives chunks per shard.
    """
    valid = [a.value for a in StandardAxis]
    unknown = [key for key in sizes if key not in valid]
    if unknown:
        raise ValueError(f"Standard axis names must be one of {valid}. Got: {unknown}.")
    chunk_shapes = chunk_shapes or {}
    shard_shapes = shard_shapes or {}
    dims = []
    for key, size in sizes.items():
        axis = StandardAxis(key)
        count = size if isinstance(size, int) or size is None else None
        coords = None if isinstance(size, int) or size is None else list(size)
        chunk = chunk_shapes.get(key)
        if chunk is None and axis is not StandardAxis.POSITION:
            is_frame_axis = axis in (StandardAxis.X, StandardAxis.Y)
            chunk = count if is_frame_axis else 1
        dims.append(
            axis.to_dimension(
                count=count,
                coords=coords,
                chunk_size=chunk,
                shard_size_chunks=shard_shapes.get(key),
            )
        )
    return dims
