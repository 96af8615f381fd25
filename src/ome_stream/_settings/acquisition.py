"""`AcquisitionSettings`: everything needed to create a stream."""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from .base import SettingsModel
from .dimension import Dimension
from .formats import (
    FORMAT_ALIASES,
    FormatModel,
    OmeTiffFormat,
    OmeZarrFormat,
    ScratchFormat,
    format_from_suffix,
    path_suffix,
)
from .plate import Plate
from .position import Position

Compression = Literal["blosc-zstd", "blosc-lz4", "zstd", "lzw", "deflate", "none"]
ZARR_COMPRESSIONS = ("blosc-zstd", "blosc-lz4", "zstd", "none")
TIFF_COMPRESSIONS = ("lzw", "deflate", "none")

# OME-XML PixelType for each numpy dtype Bio-Formats reads.
OME_PIXEL_TYPES = {
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "float32": "float",
    "float64": "double",
}

# NGFF 0.5 axis ordering: time, then channel or custom, then space.
_NGFF_TYPE_RANK = {"time": 0, "channel": 1, None: 1, "other": 1, "space": 2}

MAX_NON_POSITION_DIMS = 5


class AcquisitionSettings(SettingsModel):
    """The dataset to write: dimensions in acquisition order, dtype, format.

    `dimensions` run slowest first; the last two are the frame (Y, X).
    `format` is a format model, a dict with `name` (and `backend`), a format
    or backend name, or "auto" (inferred from the suffix of `root_path`).
    `storage_order` is "ome" (a layout the format's specification allows),
    "acquisition" (no reordering), or a list of dimension names.
    `max_queue_bytes` bounds the memory held by frames waiting to be written
    (queued, or held by the writer in Zarr writes still in flight): their
    pixels, their metadata and ~0.5 KB of bookkeeping each. When it is full,
    `append` waits up to `append_timeout` seconds (None: no limit, 0: fail at
    once) and then raises `BackpressureError`.
    """

    root_path: str = ""
    dimensions: tuple[Dimension, ...] = ()
    dtype: str = ""
    format: FormatModel = Field(default="auto", validate_default=True)
    compression: Compression | None = None
    storage_order: Literal["ome", "acquisition"] | list[str] = "ome"
    plate: Plate | None = None
    overwrite: bool = False
    max_queue_bytes: PositiveInt = 256 * 2**20
    append_timeout: NonNegativeFloat | None = 30.0

    # ------------------------------------------------------------------ fields

    @model_validator(mode="before")
    @classmethod
    def _resolve_format(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "backend" in data:
            raise ValueError(
                "`backend` is not a field of AcquisitionSettings: pass it inside "
                "format, e.g. format={'name': 'ome-zarr', 'backend': 'tensorstore'}, "
                "or pass the backend name as format='tensorstore'."
            )
        root = str(data.get("root_path") or "")
        data["format"] = _resolve_format(data.get("format", "auto"), root)
        return data

    @field_validator("root_path", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype_name(cls, value: Any) -> str:
        if value in ("", None):
            return ""
        try:
            dtype = np.dtype(value)
        except TypeError as exc:
            raise ValueError(f"Invalid dtype {value!r}: {exc}") from None
        if dtype.kind not in "iuf":
            raise ValueError(
                f"dtype must be an integer or floating type, got {dtype.name!r}."
            )
        return str(dtype.name)

    @field_validator("dimensions")
    @classmethod
    def _check_dimensions(cls, dims: tuple[Dimension, ...]) -> tuple[Dimension, ...]:
        if not dims:
            return dims
        names = [d.name for d in dims]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"Dimension names must be unique; repeated: {duplicates}.")
        non_position = [d for d in dims if d.type != "position"]
        if len(non_position) < 2:
            raise ValueError(
                "At least 2 non-position dimensions are required: the frame's "
                "Y and X, last."
            )
        if len(non_position) > MAX_NON_POSITION_DIMS:
            raise ValueError(
                f"At most {MAX_NON_POSITION_DIMS} non-position dimensions are "
                f"allowed (OME images are at most TCZYX), got {len(non_position)}: "
                f"{[d.name for d in non_position]}. Fold extra axes into positions "
                "or an unbounded first axis with frame metadata."
            )
        for dim in dims[1:]:
            if dim.count is None:
                raise ValueError(
                    f"Only the first dimension may be unbounded (count=None); "
                    f"{dim.name!r} has no count. Set its count."
                )
        frame_dims = dims[-2:]
        for dim in frame_dims:
            if dim.type is None:
                dim.__dict__["type"] = "space"  # the frame axes are spatial
            elif dim.type != "space":
                raise ValueError(
                    f"The last two dimensions are the frame (Y, X) and must be "
                    f"type='space'; {dim.name!r} is type={dim.type!r}. Put it "
                    "before the frame dimensions."
                )
        return dims

    @model_validator(mode="after")
    def _check_consistency(self) -> AcquisitionSettings:
        fmt = self.format
        if not isinstance(fmt, ScratchFormat) and not self.root_path:
            raise ValueError(
                f"root_path is required for the {fmt.name} format. Give a path, "
                "or use format='scratch' to keep the data in memory."
            )
        self._check_compression()
        if self.dimensions:
            self._check_storage_order()
            self._check_plate()
            if isinstance(fmt, OmeTiffFormat):
                self._check_tiff()
            if isinstance(fmt, OmeZarrFormat) and self.storage_order == "ome":
                self._check_ngff_axes()
        return self

    def _check_compression(self) -> None:
        if self.compression is None or isinstance(self.format, ScratchFormat):
            return
        allowed = (
            ZARR_COMPRESSIONS
            if isinstance(self.format, OmeZarrFormat)
            else TIFF_COMPRESSIONS
        )
        if self.compression not in allowed:
            raise ValueError(
                f"compression {self.compression!r} is not supported for "
                f"{self.format.name}. Supported: {allowed}."
            )

    def _check_storage_order(self) -> None:
        order = self.storage_order
        if not isinstance(order, list):
            return
        frame = [d.name for d in self.dimensions[-2:]]
        index = [d.name for d in self.index_dimensions]
        wanted = [n for n in order if n not in self._position_names()]
        if sorted(wanted) != sorted(index + frame):
            raise ValueError(
                f"storage_order {order} must name every dimension "
                f"{index + frame} once (the position dimension may be omitted)."
            )
        if wanted[-2:] != frame:
            raise ValueError(
                f"storage_order must end with the frame dimensions {frame} in "
                f"that order; got {order}. Transposing the frame is not supported."
            )

    def _position_names(self) -> list[str]:
        return [d.name for d in self.dimensions if d.type == "position"]

    def _check_plate(self) -> None:
        if self.plate is None:
            return
        pos_dim = self.position_dimension
        if pos_dim is None:
            raise ValueError(
                "plate is set but there is no position dimension: add "
                "Dimension(name='p', type='position', coords=[Position(...), ...]) "
                "with plate_row/plate_column on each position."
            )
        missing = [p.name for p in self.positions if p.well is None]
        if missing:
            raise ValueError(
                "With a plate, every position needs plate_row and plate_column; "
                f"missing for positions {missing}."
            )
        outside = sorted(
            {
                f"{p.plate_row}{p.plate_column}"
                for p in self.positions
                if p.plate_row not in self.plate.row_names
                or p.plate_column not in self.plate.column_names
            }
        )
        if outside:
            raise ValueError(
                f"Wells {outside} are not in the plate (rows "
                f"{self.plate.row_names}, columns {self.plate.column_names}). "
                "Fix the positions' plate_row/plate_column or the Plate's names."
            )

    def _check_tiff(self) -> None:
        if self.dtype and self.dtype not in OME_PIXEL_TYPES:
            raise ValueError(
                f"OME-TIFF cannot store dtype {self.dtype!r}. Supported: "
                f"{list(OME_PIXEL_TYPES)}; use OME-Zarr for other types."
            )
        letters = [tiff_axis_letter(d) for d in self.index_dimensions]
        for dim, letter in zip(self.index_dimensions, letters):
            if letter is None:
                raise ValueError(
                    f"OME-TIFF has only T, C and Z besides the frame; dimension "
                    f"{dim.name!r} (type={dim.type!r}) maps to none of them. Name "
                    "it t, c or z (or type it time/channel/space), or use OME-Zarr."
                )
        repeated = sorted({str(ltr) for ltr in letters if letters.count(ltr) > 1})
        if repeated:
            raise ValueError(
                f"OME-TIFF allows one dimension per axis; several map to {repeated}."
            )
        if isinstance(self.storage_order, list):
            acquisition = [d.name for d in self.index_dimensions]
            stored = [d.name for d in self.storage_index_dimensions]
            if stored != acquisition:
                raise ValueError(
                    f"OME-TIFF writes planes in acquisition order {acquisition}; "
                    f"storage_order {self.storage_order} would reorder them. Use "
                    "storage_order='ome' (the DimensionOrder follows acquisition)."
                )

    def _check_ngff_axes(self) -> None:
        types = [d.type for d in self.array_dimensions]
        n_space = types.count("space")
        n_time = types.count("time")
        n_other = len(types) - n_space - n_time
        if n_space > 3 or n_time > 1 or n_other > 1:
            raise ValueError(
                "OME-Zarr 0.5 images hold 2-3 space axes, at most one time axis "
                "and at most one channel or custom axis; got types "
                f"{dict(zip([d.name for d in self.array_dimensions], types))}. "
                "Use a position dimension for the extra axis, or "
                "storage_order='acquisition' to write a non-compliant array."
            )

    def ngff_order_problem(self) -> str | None:
        """OME-Zarr: why the axes as stored are not in an order OME-Zarr 0.5
        allows (time, then one channel or custom axis, then 2-3 space axes),
        or None. A storage order of the user's that breaks it is written as
        asked; `create_stream` warns (it was found out after the
        acquisition, by a reader refusing the store)."""
        if not isinstance(self.format, OmeZarrFormat) or not self.dimensions:
            return None
        stored = self.array_storage_dimensions
        types = [d.type for d in stored]
        ranks = [_NGFF_TYPE_RANK.get(t, 1) for t in types]
        counts = (
            types.count("time") <= 1
            and sum(rank == 1 for rank in ranks) <= 1
            and 2 <= types.count("space") <= 3
        )
        if ranks == sorted(ranks) and counts:
            return None
        return (
            f"storage_order={self.storage_order!r} stores the axes "
            f"{[d.name for d in stored]} (types {types}) as OME-Zarr 0.5 does "
            "not allow (time, then one channel or custom axis, then 2-3 space "
            "axes): readers that check the specification, and `ome-stream "
            "validate`, will refuse the store. Use storage_order='ome' to store "
            "them as it requires (frames still come in acquisition order), or "
            "a position dimension for an extra axis."
        )

    # -------------------------------------------------------------- properties

    def _require_dimensions(self, what: str) -> None:
        if not self.dimensions:
            raise ValueError(f"Cannot access {what!r}: dimensions have not been set.")

    @property
    def output_path(self) -> Path:
        """Where the data goes: a zarr directory, a TIFF file, or a directory."""
        self._require_dimensions("output_path")
        return self.format.get_output_path(
            self.root_path, num_positions=len(self.positions)
        )

    @property
    def shape(self) -> tuple[int | None, ...]:
        self._require_dimensions("shape")
        return tuple(d.count for d in self.dimensions)

    @property
    def is_unbounded(self) -> bool:
        return bool(self.dimensions) and self.dimensions[0].count is None

    @property
    def num_frames(self) -> int | None:
        """Frames in the acquisition (None when unbounded)."""
        self._require_dimensions("num_frames")
        if self.is_unbounded:
            return None
        return math.prod(d.count or 1 for d in self.dimensions[:-2])

    @property
    def position_dimension(self) -> Dimension | None:
        return next((d for d in self.dimensions if d.type == "position"), None)

    @property
    def position_dimension_index(self) -> int | None:
        return next(
            (i for i, d in enumerate(self.dimensions) if d.type == "position"), None
        )

    @property
    def position_dimensions(self) -> tuple[Dimension, ...]:
        """Every position dimension, in acquisition order."""
        return tuple(d for d in self.dimensions if d.type == "position")

    @property
    def positions(self) -> tuple[Position, ...]:
        """One Position per image, or a single Position('0') without a position
        axis. Several position dimensions (e.g. stage position x camera)
        multiply, the last varying fastest: each combination is one image
        named "<a>_<b>", taking stage, plate and grid fields from the first
        of its parts that has them."""
        per_dim = [
            [c for c in d.coords or () if isinstance(c, Position)]
            for d in self.position_dimensions
        ]
        if not per_dim:
            return (Position(name="0"),)
        if len(per_dim) == 1:
            return tuple(per_dim[0])
        return tuple(_combined(parts) for parts in itertools.product(*per_dim))

    @property
    def frame_dimensions(self) -> tuple[Dimension, Dimension]:
        self._require_dimensions("frame_dimensions")
        return self.dimensions[-2], self.dimensions[-1]

    @property
    def frame_shape(self) -> tuple[int, int]:
        y, x = self.frame_dimensions
        return int(y.count or 0), int(x.count or 0)

    @property
    def index_dimensions(self) -> tuple[Dimension, ...]:
        """Non-frame, non-position dimensions in acquisition order."""
        return tuple(d for d in self.dimensions[:-2] if d.type != "position")

    @property
    def array_dimensions(self) -> tuple[Dimension, ...]:
        """Every dimension but position, in acquisition order."""
        return tuple(d for d in self.dimensions if d.type != "position")

    @property
    def storage_index_dimensions(self) -> tuple[Dimension, ...]:
        """The index dimensions in the order they are stored."""
        index = self.index_dimensions
        order = self.storage_order
        if isinstance(order, list):
            by_name = {d.name: d for d in index}
            return tuple(by_name[n] for n in order if n in by_name)
        if order == "ome" and isinstance(self.format, OmeZarrFormat):
            return tuple(sorted(index, key=lambda d: _NGFF_TYPE_RANK[d.type]))
        return index

    @property
    def storage_index_permutation(self) -> tuple[int, ...] | None:
        """Acquisition index position of each stored axis (None: identity)."""
        index = list(self.index_dimensions)
        permutation = tuple(index.index(d) for d in self.storage_index_dimensions)
        return None if permutation == tuple(range(len(index))) else permutation

    @property
    def array_storage_dimensions(self) -> tuple[Dimension, ...]:
        """Stored index dimensions followed by the frame dimensions."""
        return self.storage_index_dimensions + self.frame_dimensions

    @property
    def frame_nbytes(self) -> int:
        y, x = self.frame_shape
        return y * x * np.dtype(self.dtype).itemsize

    def validate_stream_ready(self) -> None:
        """Raise if the settings are not complete enough to write."""
        if not self.dimensions:
            raise ValueError(
                "settings.dimensions must be set before creating a stream."
            )
        if not self.dtype:
            raise ValueError("settings.dtype must be set before creating a stream.")


def _combined(parts: tuple[Position, ...]) -> Position:
    fields: dict[str, Any] = {"name": "_".join(p.name for p in parts)}
    for pairs in (("plate_row", "plate_column"), ("grid_row", "grid_column")):
        source = next((p for p in parts if getattr(p, pairs[0]) is not None), None)
        if source is not None:
            fields.update({f: getattr(source, f) for f in pairs})
    for name in ("x_coord", "y_coord", "z_coord"):
        values = [getattr(p, name) for p in parts if getattr(p, name) is not None]
        fields[name] = values[0] if values else None
    return Position(**fields)


def tiff_axis_letter(dim: Dimension) -> str | None:
    """The OME-TIFF axis (T, C, Z) a non-frame dimension maps to."""
    by_type = {"time": "T", "channel": "C", "space": "Z"}
    if dim.type in by_type:
        return by_type[dim.type]
    return {"t": "T", "c": "C", "z": "Z"}.get(dim.name.lower())


def _resolve_format(value: Any, root_path: str) -> Any:
    from_suffix = format_from_suffix(root_path)
    if value is None or (isinstance(value, str) and value.lower() == "auto"):
        if not root_path:
            return ScratchFormat()
        if from_suffix is None:
            warnings.warn(
                f"Output format could not be inferred from root_path {root_path!r}; "
                "writing OME-Zarr. Pass format='ome-zarr' or 'ome-tiff' (or use a "
                ".ome.zarr / .ome.tiff suffix) to choose.",
                UserWarning,
                stacklevel=4,
            )
            from_suffix = "ome-zarr"
        value = from_suffix
    if isinstance(value, str):
        key = value.lower()
        if key not in FORMAT_ALIASES:
            raise ValueError(
                f"Unknown format {value!r}. Use one of {sorted(FORMAT_ALIASES)}, "
                "'auto', or a dict like {'name': 'ome-zarr', 'backend': ...}."
            )
        value = dict(FORMAT_ALIASES[key])
    if isinstance(value, (OmeZarrFormat, OmeTiffFormat, ScratchFormat)):
        value = value.model_dump(exclude_unset=True) | {"name": value.name}
    if not isinstance(value, dict):
        return value
    name = value.get("name")
    if from_suffix is not None and name in ("ome-zarr", "ome-tiff"):
        if name != from_suffix:
            raise ValueError(
                f"root_path {root_path!r} has a {from_suffix} suffix but format is "
                f"{name!r}. Change the suffix or the format so they agree."
            )
        if "suffix" not in value:
            value = value | {"suffix": path_suffix(root_path)}
    return value
