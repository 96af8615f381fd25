"""`Plate`: the multi-well plate of a high-content-screening acquisition."""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field, field_validator

from .base import SettingsModel, Text

# OME-NGFF 0.5 "plate": row and column names MUST be alphanumeric (they become
# path segments of the well groups).
_ALPHANUMERIC = re.compile(r"^[A-Za-z0-9]+$")


def _row_letters(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA, 27 -> AB (spreadsheet style)."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


class Plate(SettingsModel):
    """Plate layout: every row and column of the plate, not only those imaged."""

    STANDARD_WELLS: ClassVar[dict[int, tuple[int, int]]] = {
        6: (2, 3),
        12: (3, 4),
        24: (4, 6),
        48: (6, 8),
        96: (8, 12),
        384: (16, 24),
        1536: (32, 48),
    }

    row_names: list[str] = Field(min_length=1)
    column_names: list[str] = Field(min_length=1)
    name: Text | None = None

    @field_validator("row_names", "column_names")
    @classmethod
    def _names_alphanumeric_unique(cls, names: list[str]) -> list[str]:
        bad = [n for n in names if not _ALPHANUMERIC.match(n)]
        if bad:
            raise ValueError(
                f"plate row/column names must be alphanumeric (they become zarr "
                f"paths), got {bad}."
            )
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"plate row/column names repeat: {duplicates}.")
        return names

    @classmethod
    def from_standard_wells(
        cls, wells: int | tuple[int, int], name: str | None = None
    ) -> Plate:
        """A plate of a standard well count (6 … 1536) or `(rows, columns)`.

        Rows are named A … Z, AA, AB …; columns "1" … "n".
        """
        if isinstance(wells, tuple):
            if len(wells) != 2 or not all(isinstance(n, int) and n > 0 for n in wells):
                raise ValueError(
                    "A plate shape must be (n_rows, n_columns) with positive "
                    f"integers, got {wells!r}."
                )
            rows, columns = wells
        elif wells in cls.STANDARD_WELLS:
            rows, columns = cls.STANDARD_WELLS[wells]
        else:
            raise ValueError(
                f"Unrecognized standard plate size: {wells!r}. Supported sizes: "
                f"{sorted(cls.STANDARD_WELLS)}, or pass (n_rows, n_columns)."
            )
        return cls(
            row_names=[_row_letters(i) for i in range(rows)],
            column_names=[str(i + 1) for i in range(columns)],
            name=name,
        )
