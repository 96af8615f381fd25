"""OME-NGFF 0.5 metadata, built through the yaozarrs models.

Each function returns the value of a group's `attributes.ome` as JSON data;
the models validate the spec's rules (axis order and types, unique paths,
plate/well structure) before anything is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from yaozarrs import v05

from ..._settings import AcquisitionSettings, Channel, Dimension, Plate

if TYPE_CHECKING:
    from .layout import ImageLocation


def _dump(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    return data


def _axis(dim: Dimension) -> Any:
    if dim.type == "space":
        return v05.SpaceAxis(name=dim.name, unit=dim.unit)
    if dim.type == "time":
        return v05.TimeAxis(name=dim.name, unit=dim.unit)
    if dim.type == "channel":
        return v05.ChannelAxis(name=dim.name)
    return v05.CustomAxis(name=dim.name, type=dim.type, unit=dim.unit)


def _channel_window(dtype: np.dtype) -> v05.OmeroWindow:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return v05.OmeroWindow(
            min=float(info.min),
            max=float(info.max),
            start=float(max(info.min, 0)),
            end=float(info.max),
        )
    return v05.OmeroWindow(min=0.0, max=1.0, start=0.0, end=1.0)


def _omero(settings: AcquisitionSettings, dims: tuple[Dimension, ...]) -> Any:
    channel_dim = next((d for d in dims if d.type == "channel"), None)
    if channel_dim is None or channel_dim.count is None:
        return None
    window = _channel_window(np.dtype(settings.dtype))
    channels: list[Any] = channel_dim.coords or [None] * channel_dim.count
    entries = []
    for index, channel in enumerate(channels):
        label = channel.name if isinstance(channel, Channel) else str(index)
        color = channel.hex_color() if isinstance(channel, Channel) else None
        entries.append(
            v05.OmeroChannel(
                label=label, color=color or "FFFFFF", window=window, active=True
            )
        )
    return v05.Omero(channels=entries)


def image_attributes(
    settings: AcquisitionSettings, name: str, *, validate: bool = True
) -> dict[str, Any]:
    """`attributes.ome` of one position's image group (array at path "0")."""
    dims = settings.array_storage_dimensions
    scale = [d.scale if d.scale is not None else 1.0 for d in dims]
    transforms: list[Any] = [v05.ScaleTransformation(scale=scale)]
    if any(d.translation is not None for d in dims):
        translation = [d.translation or 0.0 for d in dims]
        transforms.append(v05.TranslationTransformation(translation=translation))
    axes = [_axis(d) for d in dims]
    dataset = v05.Dataset(path="0", coordinateTransformations=transforms)
    if validate:
        multiscale = v05.Multiscale(name=name, axes=axes, datasets=[dataset])
        image = v05.Image(multiscales=[multiscale], omero=_omero(settings, dims))
    else:
        # storage_order other than "ome" may break NGFF's axis-order rule; the
        # user asked for it, so write the metadata as it is.
        multiscale = v05.Multiscale.model_construct(
            name=name, axes=axes, datasets=[dataset]
        )
        image = v05.Image.model_construct(
            version="0.5", multiscales=[multiscale], omero=_omero(settings, dims)
        )
    return _dump(image)


def plate_attributes(plate: Plate, locations: list[ImageLocation]) -> dict[str, Any]:
    wells: dict[str, Any] = {}
    fields_per_well: dict[str, int] = {}
    for loc in locations:
        row, col = loc.position.well or ("", "")
        path = f"{row}/{col}"
        fields_per_well[path] = fields_per_well.get(path, 0) + 1
        wells.setdefault(
            path,
            v05.PlateWell(
                path=path,
                rowIndex=plate.row_names.index(row),
                columnIndex=plate.column_names.index(col),
            ),
        )
    definition = v05.PlateDef(
        name=plate.name,
        rows=[v05.Row(name=r) for r in plate.row_names],
        columns=[v05.Column(name=c) for c in plate.column_names],
        wells=list(wells.values()),
        field_count=max(fields_per_well.values()),
    )
    return _dump(v05.Plate(plate=definition))


def well_attributes(field_paths: list[str]) -> dict[str, Any]:
    images = [v05.FieldOfView(path=p) for p in field_paths]
    return _dump(v05.Well(well=v05.WellDef(images=images)))


def bf2raw_attributes() -> dict[str, Any]:
    return _dump(v05.Bf2Raw.model_validate({"bioformats2raw.layout": 3}))


def series_attributes(locations: list[ImageLocation]) -> dict[str, Any]:
    return _dump(v05.Series(series=[loc.group_path for loc in locations]))


# The NGFF 0.5 model of each kind of group we write (see `group_kind`).
_GROUP_MODELS: dict[str, Any] = {
    "image": v05.Image,
    "plate": v05.Plate,
    "well": v05.Well,
    "bf2raw": v05.Bf2Raw,
    "series": v05.Series,
}


def group_kind(ome: dict[str, Any]) -> str:
    """ "image", "plate", "well", "bf2raw" or "series", from a group's `ome`."""
    for key, kind in (
        ("multiscales", "image"),
        ("plate", "plate"),
        ("well", "well"),
        ("bioformats2raw.layout", "bf2raw"),
        ("series", "series"),
    ):
        if key in ome:
            return kind
    raise ValueError(f"not an NGFF 0.5 group of a kind ome-stream writes: {ome!r}")


def validate_group(kind: str, ome: Any, *, strict: bool = True) -> None:
    """Check `ome` against the NGFF 0.5 model of a `kind` group.

    `strict=False` (an image whose storage order the user chose, which may
    break NGFF's axis-order rule) checks only that it is an object. Raises
    ValueError (pydantic's ValidationError is one) naming what is wrong.
    """
    if not isinstance(ome, dict):
        raise ValueError(f"'ome' must be an object, got {type(ome).__name__}.")
    if strict:
        _GROUP_MODELS[kind].model_validate(ome)


def referenced_paths(ome: dict[str, Any]) -> set[str]:
    """The child paths a group's `ome` refers to (datasets of an image, wells
    of a plate, fields of a well, series of `OME`); they must exist."""
    try:
        if "multiscales" in ome:
            return {d["path"] for m in ome["multiscales"] for d in m["datasets"]}
        if "plate" in ome:
            return {w["path"] for w in ome["plate"]["wells"]}
        if "well" in ome:
            return {i["path"] for i in ome["well"]["images"]}
        if "series" in ome:
            return {str(s) for s in ome["series"]}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed 'ome' metadata ({exc!r}).") from None
    return set()


def axis_counts(ome: dict[str, Any]) -> set[int]:
    """The number of axes of each multiscale of an image's `ome`."""
    try:
        return {len(m["axes"]) for m in ome["multiscales"]}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed 'multiscales' metadata ({exc!r}).") from None
