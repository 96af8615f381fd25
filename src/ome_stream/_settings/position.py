"""`Position`: one field of view of a position dimension."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import Field, model_validator

from .base import SettingsModel, Text


class Position(SettingsModel):
    """A stage position (field of view).

    `plate_row`/`plate_column` place it in a well of `AcquisitionSettings.plate`;
    `grid_row`/`grid_column` place it in a tile grid; `x_coord`, `y_coord`,
    `z_coord` are its stage coordinates in micrometers, written as the
    OME-XML `StageLabel` and plane positions, and in OME-Zarr metadata.
    """

    name: Text = Field(min_length=1)
    plate_row: str | None = None
    plate_column: str | None = None
    grid_row: int | None = None
    grid_column: int | None = None
    x_coord: float | None = None
    y_coord: float | None = None
    z_coord: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _pairs_complete(self) -> Position:
        if (self.plate_row is None) != (self.plate_column is None):
            raise ValueError(
                f"Position {self.name!r}: plate_row and plate_column must both be "
                "set or both be None."
            )
        if (self.grid_row is None) != (self.grid_column is None):
            raise ValueError(
                f"Position {self.name!r}: grid_row and grid_column must both be "
                "set or both be None."
            )
        return self

    @property
    def well(self) -> tuple[str, str] | None:
        """(row, column) of the well, or None outside a plate."""
        if self.plate_row is None or self.plate_column is None:
            return None
        return self.plate_row, self.plate_column


def check_unique_position_names(positions: list[Position]) -> None:
    """Names must be unique within a well and grid cell (globally without them)."""
    groups: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for pos in positions:
        key = (pos.plate_row, pos.plate_column, pos.grid_row, pos.grid_column)
        groups[key].append(pos.name)
    for (row, col, grid_row, grid_col), names in groups.items():
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if not duplicates:
            continue
        where = []
        if row is not None:
            where.append(f"well ({row!r}, {col!r})")
        if grid_row is not None:
            where.append(f"grid cell ({grid_row}, {grid_col})")
        place = " and ".join(where) or "the acquisition"
        raise ValueError(
            f"Position names must be unique within {place}; repeated: "
            f"{duplicates}. Rename them or give them distinct grid_row/grid_column."
        )
