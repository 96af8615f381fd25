"""OME-XML (schema 2016-06) for the OME-TIFF writer, built with ome-types.

Rules followed (OME-TIFF specification, ome.xsd):
- one `Image` per position; `Pixels.DimensionOrder` is the order planes are
  stored in (fastest first, always starting XY);
- `TiffData` maps IFDs to planes: one element per run of consecutive IFDs
  holding consecutive planes (in DimensionOrder), starting at plane
  (FirstZ, FirstC, FirstT) - so pages of several Images may interleave in one
  file; with one file per position each `TiffData` names its file through
  `UUID` + `FileName` (multi-file OME-TIFF);
- a TIFF that does not carry the metadata holds only
  `<BinaryOnly MetadataFile=... UUID=...>` naming the file that does, by a
  name relative to its own directory;
- `Plane` attributes carry per-frame time, exposure and stage position with
  explicit units; other per-frame keys live in a `MapAnnotation` the plane
  references; acquisition-level metadata is a `MapAnnotation` with a namespace.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from ome_types import OME, model
from ome_types.model import Map
from pydantic import BaseModel

from ..._frame_metadata import PLANE_KEYS, plane_value
from ..._settings import AcquisitionSettings, Channel, Dimension, Position
from ..._settings.acquisition import OME_PIXEL_TYPES
from ..._settings.base import XML_INCOMPATIBLE
from ..._settings.units import ome_symbol
from .spool import TextPart, TextSpool, part_bytes, parts_text

MISSING_FRAMES_NAMESPACE = "ome-stream.org/missing-frames"
OME_NAMESPACE = "http://www.openmicroscopy.org/Schemas/OME/2016-06"

_Model = TypeVar("_Model", bound=BaseModel)


def built_xml(document: OME) -> str:
    """`document.to_xml()`, for a document this module built (or a copy of
    one made with `model_copy(update=...)`), at a fraction of the cost with
    per-plane metadata.

    ome-types writes only the fields a model was given, and first walks the
    whole document marking lists that were changed in place (pydantic cannot
    see those), which costs ~0.6 ms per Plane with a MapAnnotation: pydantic
    inspects the `list` default factory anew for every non-empty list. The
    documents built here pass every field to a constructor, to `model_copy`
    or by assignment, so the walk is skipped. The Planes and MapAnnotations
    (one per plane with metadata) are written here (`PlaneText`); the rest
    of the document by the serializer ome-types uses, called directly and
    kept between calls (building it costs several ms).
    `tests/test_tiff_layouts.py` compares the text with ome-types' for every
    layout and for awkward metadata. Documents a user may have changed go
    through `to_xml`.
    """
    serializer = _built_serializer()
    if serializer is None:
        return str(document.to_xml())
    spliced = PlaneText.of(document)
    if spliced is not None:
        text = spliced.insert_into(_render(serializer, spliced.rest))
        if text is not None:
            return text
    return _render(serializer, document)


def _render(serializer: Any, document: OME) -> str:
    return str(serializer.render(document, ns_map={None: OME_NAMESPACE}))


# The Plane fields ome-stream sets, as xsdata writes them (in this order).
_PLANE_ATTRIBUTES = [
    ("the_z", "TheZ"),
    ("the_t", "TheT"),
    ("the_c", "TheC"),
    ("delta_t", "DeltaT"),
    ("delta_t_unit", "DeltaTUnit"),
    ("exposure_time", "ExposureTime"),
    ("exposure_time_unit", "ExposureTimeUnit"),
    ("position_x", "PositionX"),
    ("position_x_unit", "PositionXUnit"),
    ("position_y", "PositionY"),
    ("position_y_unit", "PositionYUnit"),
    ("position_z", "PositionZ"),
    ("position_z_unit", "PositionZUnit"),
]
_PLANE_FIELDS = frozenset(name for name, _ in _PLANE_ATTRIBUTES) | {"annotation_refs"}
_MAP_ANNOTATION_FIELDS = frozenset({"id", "namespace", "description", "value"})
# lxml's escaping, which xsdata's writer uses
_IN_ATTRIBUTE = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)
_IN_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


def _attribute(value: Any) -> str:
    """An attribute's value as xsdata writes it (escaped)."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "INF" if value > 0 else "-INF"
        return repr(value).upper().replace("E+", "E")
    return str(value).translate(_IN_ATTRIBUTE)


# Where xsdata puts a Pixels' children (OME > Image > Pixels, two spaces a
# level): Plane text is written indented so, and checked against the text
# xsdata writes for the rest of the document.
PLANE_INDENT = "      "


@dataclass
class PlaneText:
    """A document's Planes and StructuredAnnotations written as text, and
    the document without them (`rest`), for xsdata; `parts` puts the text
    where xsdata would have written it. The text is strings, or ranges of
    spools on disk (`spool.py`) for a document built from frame records."""

    rest: OME
    planes: list[TextPart]  # per image, its Planes, indented (PLANE_INDENT)
    annotations: TextPart  # the MapAnnotations, indented
    spools: list[TextSpool] = field(default_factory=list)

    @classmethod
    def of(cls, document: OME) -> PlaneText | None:
        """None when the document has nothing to write here, or anything
        this does not write (then xsdata writes it all)."""
        images = document.images
        if not any(image.pixels.planes for image in images):
            return None
        annotations = document.structured_annotations
        if document.rois or document.binary_only is not None:
            return None  # (they would follow StructuredAnnotations)
        if annotations is not None and (
            not annotations.model_fields_set <= {"map_annotations"}
            or not annotations.map_annotations  # (xsdata writes it empty)
        ):
            return None
        planes = [_planes_xml(image.pixels.planes) for image in images]
        maps = _map_annotations_xml(
            annotations.map_annotations if annotations is not None else []
        )
        if maps is None or any(lines is None for lines in planes):
            return None
        indented: list[TextPart] = [
            "".join([PLANE_INDENT + line for line in lines or []]) for lines in planes
        ]
        return cls(_without_planes(document), indented, maps)

    def rest_text(self, uuid: str | None) -> str | None:
        """`rest` as xsdata writes it, with `uuid` as its root UUID (None
        without the direct serializer)."""
        serializer = _built_serializer()
        if serializer is None:
            return None
        return _render(serializer, self.rest.model_copy(update={"uuid": uuid}))

    def insert_into(self, text: str) -> str | None:
        """`text` (`rest` as xsdata wrote it) with the Planes and
        StructuredAnnotations in place; None if its Pixels are not as
        expected (one closing tag per image, children at PLANE_INDENT)."""
        parts = self.parts(text)
        return None if parts is None else parts_text(parts)

    def parts(self, text: str) -> list[TextPart] | None:
        """`insert_into`, as parts."""
        if text.count("</Pixels>") != len(self.planes):
            return None
        parts: list[TextPart] = []
        start = search = 0
        for planes in self.planes:
            end = text.find("</Pixels>", search)
            search = end + 1
            line = text.rfind("\n", 0, end) + 1
            if text[line:end] + "  " != PLANE_INDENT:
                return None
            parts += [text[start:line], planes]
            start = line
        end = text.rfind("</OME>")
        parts.append(text[start:end])
        if part_bytes(self.annotations):
            parts.append("  <StructuredAnnotations>\n")
            parts.append(self.annotations)
            parts.append("  </StructuredAnnotations>\n")
        parts.append(text[end:])
        return parts

    def close(self) -> None:
        """Drop the spools the text is in."""
        for spool in self.spools:
            spool.close()


def constructed(cls: type[_Model], **values: Any) -> _Model:
    """`cls.model_construct(**values)` (no validation), the fields left out
    made by their default factories here: pydantic's own `model_construct`
    inspects each factory's signature on every call, which made an OME
    document's construction ~1.8 ms instead of ~35 µs (a cost paid at the
    first page, each interim refresh and close). The fields set are those
    given, as `model_construct` would record them: pass values by field
    name, not alias."""
    factories = _default_factories(cls)
    filled = {name: make() for name, make in factories if name not in values}
    return cls.model_construct(_fields_set=set(values), **values, **filled)


@functools.cache
def _default_factories(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    """The fields of `cls` made by a factory that takes no arguments."""
    found = []
    for name, info in cls.model_fields.items():
        make = info.default_factory
        # (pydantic < 2.10 passes factories nothing)
        takes_data = getattr(info, "default_factory_takes_validated_data", False)
        if make is not None and not takes_data:
            found.append((name, make))
    return tuple(found)


def _without_planes(document: OME) -> OME:
    return document.model_copy(
        update={
            "images": [
                image.model_copy(
                    update={"pixels": image.pixels.model_copy(update={"planes": []})}
                )
                for image in document.images
            ],
            "structured_annotations": None,
        }
    )


@dataclass
class _PlaneSink:
    """Where a document built as text puts its Planes: each image's are a
    range of `spool`."""

    spool: TextSpool
    planes: list[TextPart] = field(default_factory=list)

    def write(self, lines: list[str]) -> None:
        """Write the lines (not indented) and empty the list."""
        self.spool.write("".join([PLANE_INDENT + line for line in lines]))
        lines.clear()


class _AnnotationText:
    """The MapAnnotations of a document built as text, in order: plane
    annotations come as their lines, the others as models."""

    def __init__(self, spool: TextSpool) -> None:
        self.spool = spool

    def append(self, annotation: list[str] | model.MapAnnotation) -> None:
        if isinstance(annotation, list):
            self.spool.write("".join(annotation))
            return
        written = _map_annotations_xml([annotation])
        assert written is not None  # (built here: nothing else set)
        self.spool.write(written)


def _planes_xml(planes: list[model.Plane]) -> list[str] | None:
    """The Planes' elements: lines ending in a newline, not indented."""
    lines: list[str] = []
    for plane in planes:
        fields = plane.model_fields_set
        if not fields <= _PLANE_FIELDS:
            return None
        values = plane.__dict__
        refs = plane.annotation_refs
        _plane_lines(
            lines,
            {name: values[name] for name in fields if name != "annotation_refs"},
            [ref.id for ref in refs] if refs else [],
        )
    return lines


def _plane_lines(lines: list[str], fields: dict[str, Any], refs: list[str]) -> None:
    """Append a Plane's lines: `fields` (those set, by model field name) and
    the IDs of its AnnotationRefs."""
    attributes = "".join(
        [
            f' {xml}="{_attribute(fields[name])}"'
            for name, xml in _PLANE_ATTRIBUTES
            if fields.get(name) is not None
        ]
    )
    if not refs:
        lines.append(f"<Plane{attributes}/>\n")
        return
    lines.append(f"<Plane{attributes}>\n")
    lines.extend([f'  <AnnotationRef ID="{_attribute(ref)}"/>\n' for ref in refs])
    lines.append("</Plane>\n")


def _map_annotations_xml(annotations: list[model.MapAnnotation]) -> str | None:
    """The MapAnnotations' elements, indented as in StructuredAnnotations."""
    lines: list[str] = []
    for annotation in annotations:
        if not annotation.model_fields_set <= _MAP_ANNOTATION_FIELDS:
            return None
        _map_annotation_lines(
            lines,
            annotation.id,
            [(entry.k, entry.value) for entry in annotation.value.ms],
            namespace=annotation.namespace,
            description=annotation.description,
        )
    return "".join(lines)


def _map_annotation_lines(
    lines: list[str],
    annotation_id: str,
    entries: list[tuple[str | None, str]],
    *,
    namespace: str | None = None,
    description: str | None = None,
) -> None:
    """Append a MapAnnotation's lines, indented as in StructuredAnnotations."""
    head = f'    <MapAnnotation ID="{_attribute(annotation_id)}"'
    if namespace is not None:
        head += f' Namespace="{_attribute(namespace)}"'
    lines.append(head + ">\n")
    if description is not None:
        text = description.translate(_IN_TEXT)
        lines.append(f"      <Description>{text}</Description>\n")
    if not entries:
        lines.append("      <Value/>\n")
    else:
        lines.append("      <Value>\n")
        for k, value in entries:
            key = "" if k is None else f' K="{_attribute(k)}"'
            if value:
                lines.append(f"        <M{key}>{value.translate(_IN_TEXT)}</M>\n")
            else:
                lines.append(f"        <M{key}/>\n")
        lines.append("      </Value>\n")
    lines.append("    </MapAnnotation>\n")


@functools.cache
def _built_serializer() -> Any:
    try:  # ome-types' serializer for pydantic models (shipped with it)
        from xsdata_pydantic_basemodel.bindings import SerializerConfig, XmlSerializer

        config = SerializerConfig(
            indent="  ",  # (xsdata >= 24.2)
            xml_declaration=False,
            ignore_unset_attributes=True,
            schema_location=f"{OME_NAMESPACE} {OME_NAMESPACE}/ome.xsd",
        )
    except (ImportError, TypeError):  # pragma: no cover - other versions
        return None
    return XmlSerializer(config=config)


@dataclass
class PlaneRecord:
    the_z: int
    the_c: int
    the_t: int
    metadata: dict[str, Any]


@dataclass
class TiffDataRecord:
    """`plane_count` planes, consecutive in DimensionOrder from (first_z,
    first_c, first_t), stored in consecutive IFDs from `ifd`."""

    ifd: int
    first_z: int
    first_c: int
    first_t: int
    plane_count: int
    file_name: str | None = None  # for multi-file OME-TIFF
    file_uuid: str | None = None


@dataclass
class ImageRecord:
    """What the XML needs to know about one position's image."""

    index: int
    position: Position
    sizes: dict[str, int]  # "T", "C", "Z" -> size
    dimension_order: str
    # No TiffData: a position not started while the stream is open, which
    # the interim document leaves out (see TiffFileBackend._document); where
    # it is kept (to size the room for the XML), its Pixels are MetadataOnly.
    tiff_data: list[TiffDataRecord]
    # (may be read more than once: a list, or decoded from frame records at
    # each pass)
    planes: Iterable[PlaneRecord] = field(default_factory=list)
    missing: list[tuple[int, int, int]] = field(default_factory=list)  # (z, c, t)
    acquisition_date: datetime | None = None


def tiff_data_runs(
    ifds: Sequence[int],
    zct_of: Any,
    *,
    file_name: str | None = None,
    file_uuid: str | None = None,
) -> list[TiffDataRecord]:
    """TiffData for planes 0..len(ifds)-1 (in DimensionOrder) stored at
    `ifds`: one element per run of consecutive IFDs. `zct_of(plane)` gives
    a plane's (z, c, t). With no planes, none: the Image's Pixels are then
    MetadataOnly (see `ImageRecord.tiff_data`)."""
    if not len(ifds):
        return []
    pages = np.asarray(ifds, dtype=np.int64)
    # a run ends where the next plane is not in the next IFD
    starts = [0, *(np.flatnonzero(np.diff(pages) != 1) + 1).tolist()]
    ends = [*starts[1:], len(pages)]
    runs = []
    for start, end in zip(starts, ends):
        z, c, t = zct_of(start)
        runs.append(
            TiffDataRecord(
                int(pages[start]), z, c, t, end - start, file_name, file_uuid
            )
        )
    return runs


def dimension_order(letters: list[str]) -> str:
    """DimensionOrder for planes stored in `letters` order (slowest first)."""
    prefix = "XY" + "".join(reversed(letters))
    # Absent axes have size 1, so any completion is right; take the first
    # order the schema lists, as other OME-TIFF writers do.
    return next(
        order.value
        for order in model.Pixels_DimensionOrder
        if order.value.startswith(prefix)
    )


def _unit(enum: Any, ngff: str | None) -> Any:
    symbol = ome_symbol(ngff) if ngff else None
    if symbol is None:
        return None
    try:
        return enum(symbol)
    except ValueError:
        return None


def _physical(dim: Dimension | None) -> tuple[float | None, Any]:
    if dim is None or dim.scale is None or dim.type != "space":
        return None, None
    unit = (
        _unit(model.UnitsLength, dim.unit) if dim.unit else model.UnitsLength.MICROMETER
    )
    if unit is None:
        return None, None
    return dim.scale, unit


def _channels(
    settings: AcquisitionSettings, image_index: int, size_c: int
) -> list[model.Channel]:
    channel_dim = next(
        (d for d in settings.index_dimensions if d.type == "channel"), None
    )
    coords = channel_dim.coords if channel_dim is not None else None
    channels = []
    for c in range(size_c):
        kwargs: dict[str, Any] = {
            "id": f"Channel:{image_index}:{c}",
            "samples_per_pixel": 1,
        }
        item = coords[c] if coords else None
        if isinstance(item, Channel):
            kwargs["name"] = item.name
            if item.excitation_wavelength_nm:
                kwargs["excitation_wavelength"] = float(item.excitation_wavelength_nm)
                kwargs["excitation_wavelength_unit"] = model.UnitsLength.NANOMETER
            if item.emission_wavelength_nm:
                kwargs["emission_wavelength"] = float(item.emission_wavelength_nm)
                kwargs["emission_wavelength_unit"] = model.UnitsLength.NANOMETER
            if item.fluorophore:
                kwargs["fluor"] = item.fluorophore
            rgba = item.rgba()
            if rgba is not None:
                kwargs["color"] = model.Color((*rgba[:3], rgba[3] / 255))
        elif item is not None:
            kwargs["name"] = str(item)
        channels.append(model.Channel(**kwargs))
    return channels


def xml_text(text: str) -> str:
    """`text` with each character XML cannot hold (a control character from
    a device, say) written as its JSON escape, e.g. `\\u0001`: metadata is
    kept, and the OME-XML stays well-formed."""
    if XML_INCOMPATIBLE.search(text) is None:
        return text
    return XML_INCOMPATIBLE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def _uri_reference_pattern() -> re.Pattern[str]:
    """RFC 3986's URI-reference (section 4.1), as a regular expression."""
    unreserved = r"A-Za-z0-9\-._~"
    sub_delims = r"!$&'()*+,;="
    pct = r"%[0-9A-Fa-f]{2}"
    pchar = rf"(?:[{unreserved}{sub_delims}:@]|{pct})"
    segment = rf"{pchar}*"
    segment_nz = rf"{pchar}+"
    segment_nz_nc = rf"(?:[{unreserved}{sub_delims}@]|{pct})+"
    query = rf"(?:{pchar}|[/?])*"
    ip_literal = rf"\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[{unreserved}{sub_delims}:]+)\]"
    host = rf"(?:{ip_literal}|(?:[{unreserved}{sub_delims}]|{pct})*)"
    userinfo = rf"(?:(?:[{unreserved}{sub_delims}:]|{pct})*@)?"
    authority = rf"{userinfo}{host}(?::[0-9]*)?"
    path_abempty = rf"(?:/{segment})*"
    path_absolute = rf"/(?:{segment_nz}(?:/{segment})*)?"
    path_rootless = rf"{segment_nz}(?:/{segment})*"
    path_noscheme = rf"{segment_nz_nc}(?:/{segment})*"
    tail = rf"(?:\?{query})?(?:#{query})?"
    scheme = r"[A-Za-z][A-Za-z0-9+\-.]*"
    absolute = (
        rf"{scheme}:(?://{authority}{path_abempty}|{path_absolute}|{path_rootless}|)"
    )
    relative = rf"(?://{authority}{path_abempty}|{path_absolute}|{path_noscheme}|)"
    return re.compile(rf"(?:{absolute}|{relative}){tail}")


_URI_REFERENCE = _uri_reference_pattern()
# what a URI keeps as it is when a namespace is percent-encoded
_URI_SAFE = re.compile(r"[A-Za-z0-9\-._~/]")


def namespace_uri(namespace: str) -> str:
    """A global-metadata namespace as a valid MapAnnotation Namespace (an
    xs:anyURI, which XML schema validators check as an RFC 3986 reference
    once spaces and non-ASCII characters are escaped): as it is when it is
    one ("lab", "http://example.org/ns#v2", "urn:lab:scope"), else
    percent-encoded as UTF-8 but for letters, digits, "-._~" and "/"
    ("Lab notes: run 2" -> "Lab%20notes%3A%20run%202")."""
    escaped = "".join(
        char if " " < char < "\x7f" else _percent(char) for char in namespace
    )
    if XML_INCOMPATIBLE.search(namespace) is None and _URI_REFERENCE.fullmatch(escaped):
        return namespace
    return "".join(
        char if _URI_SAFE.match(char) else _percent(char) for char in namespace
    )


def _percent(char: str) -> str:
    data = char.encode("utf-8", "surrogatepass")
    return "".join(f"%{byte:02X}" for byte in data)


def _map_entry(key: str, value: Any) -> Map.M:
    """A MapAnnotation entry: strings as they are, other values as JSON."""
    return Map.M(k=xml_text(key), value=_map_text(value))


def _map_text(value: Any) -> str:
    return xml_text(value if isinstance(value, str) else json.dumps(value))


# frame-metadata keys written as Plane attributes (PLANE_KEYS), with their unit
_PLANE_VALUES = [
    (
        key,
        model.UnitsTime.SECOND
        if key in ("delta_t", "exposure_time")
        else model.UnitsLength.MICROMETER,
    )
    for key in PLANE_KEYS
]


def _plane_parts(
    plane: PlaneRecord,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A plane's Plane fields, and the entries of its MapAnnotation (every
    other key): (key, value) as written."""
    meta = plane.metadata
    fields: dict[str, Any] = {
        "the_z": plane.the_z,
        "the_c": plane.the_c,
        "the_t": plane.the_t,
    }
    used = set()
    for key, unit in _PLANE_VALUES:
        value = plane_value(meta, key)
        if value is not None:
            fields[key] = value
            fields[f"{key}_unit"] = unit
            used.add(key)
    entries = [(xml_text(k), _map_text(v)) for k, v in meta.items() if k not in used]
    return fields, entries


class OmeXmlBuilder:
    """Builds the OME document for a set of positions."""

    def __init__(self, settings: AcquisitionSettings) -> None:
        self.settings = settings
        self._annotation_count = 0

    def _next_annotation_id(self) -> str:
        ann_id = f"Annotation:{self._annotation_count}"
        self._annotation_count += 1
        return ann_id

    def build(
        self,
        images: list[ImageRecord],
        global_metadata: dict[str, dict[str, Any]],
        *,
        uuid: str | None = None,
    ) -> OME:
        document, _ = self._build(images, global_metadata, uuid, text=False)
        return document

    def build_text(
        self,
        images: list[ImageRecord],
        global_metadata: dict[str, dict[str, Any]],
        directory: Path | None = None,
    ) -> PlaneText:
        """What `built_xml(build(...))` writes, without the models of the
        Planes and their MapAnnotations (the bulk of a document with
        per-frame metadata): they are written as text from the records,
        into spools in `directory` (close the PlaneText when done)."""
        _, text = self._build(images, global_metadata, None, text=directory or True)
        assert text is not None
        return text

    def _build(
        self,
        images: list[ImageRecord],
        global_metadata: dict[str, dict[str, Any]],
        uuid: str | None,
        *,
        text: Path | bool,
    ) -> tuple[OME, PlaneText | None]:
        """The document; `text` (True, or the spools' directory): with the
        Planes and MapAnnotations written as text instead of models."""
        self._annotation_count = 0
        sink = None
        annotations: list[Any] | _AnnotationText = []
        if text is not False:
            directory = text if isinstance(text, Path) else None
            sink = _PlaneSink(TextSpool(directory))
            annotations = _AnnotationText(TextSpool(directory))
        ome_images = [self._image(img, annotations, sink) for img in images]
        for namespace, values in global_metadata.items():
            annotations.append(
                global_annotation(self._next_annotation_id(), namespace, values)
            )
        # constructed: the parts are validated models already, and OME()
        # would walk the whole tree again linking every reference (~70 us
        # per Plane with metadata, a third of the build)
        ome = constructed(
            OME,
            uuid=uuid,
            creator="ome-stream",
            images=ome_images,
            structured_annotations=model.StructuredAnnotations(
                map_annotations=annotations
            )
            if annotations and isinstance(annotations, list)
            else None,
        )
        if self.settings.plate is not None:
            ome.plates = [self._plate(images)]
        if sink is None or not isinstance(annotations, _AnnotationText):
            return ome, None
        maps = annotations.spool
        return ome, PlaneText(ome, sink.planes, maps.part(0), spools=[sink.spool, maps])

    def _image(
        self,
        img: ImageRecord,
        annotations: list[Any] | _AnnotationText,
        sink: _PlaneSink | None,
    ) -> model.Image:
        """The Image; with a `sink` (text mode) its Planes are written there,
        and their MapAnnotations to `annotations`, instead of models."""
        settings = self.settings
        y_dim, x_dim = settings.frame_dimensions
        z_dim = next((d for d in settings.index_dimensions if _letter(d) == "Z"), None)
        t_dim = next((d for d in settings.index_dimensions if _letter(d) == "T"), None)
        pixels_kwargs: dict[str, Any] = {
            "id": f"Pixels:{img.index}",
            "dimension_order": img.dimension_order,
            "type": OME_PIXEL_TYPES[settings.dtype],
            "size_x": x_dim.count,
            "size_y": y_dim.count,
            "size_z": img.sizes["Z"],
            "size_c": img.sizes["C"],
            "size_t": img.sizes["T"],
            "big_endian": False,
            "interleaved": False,
            "significant_bits": _significant_bits(settings.dtype),
        }
        for key, dim in (("x", x_dim), ("y", y_dim), ("z", z_dim)):
            size, unit = _physical(dim)
            if size is not None:
                pixels_kwargs[f"physical_size_{key}"] = size
                pixels_kwargs[f"physical_size_{key}_unit"] = unit
        if t_dim is not None and t_dim.scale is not None and t_dim.type == "time":
            unit = _unit(model.UnitsTime, t_dim.unit or "second")
            if unit is not None:
                pixels_kwargs["time_increment"] = t_dim.scale
                pixels_kwargs["time_increment_unit"] = unit
        pixels = model.Pixels(
            **pixels_kwargs,
            channels=_channels(settings, img.index, img.sizes["C"]),
            tiff_data_blocks=[_tiff_data(block) for block in img.tiff_data],
            metadata_only=None if img.tiff_data else model.MetadataOnly(),
            planes=[self._plane(p, annotations) for p in img.planes]
            if sink is None
            else [],
        )
        if sink is not None:
            start = sink.spool.tell()
            lines: list[str] = []
            for plane in img.planes:
                self._plane_text(plane, lines, annotations)
                if len(lines) >= 1024:
                    sink.write(lines)
            sink.write(lines)
            sink.planes.append(sink.spool.part(start))
        image_kwargs: dict[str, Any] = {
            "id": f"Image:{img.index}",
            "name": img.position.name,
            "pixels": pixels,
            "acquisition_date": img.acquisition_date,
        }
        stage = img.position
        if any(v is not None for v in (stage.x_coord, stage.y_coord, stage.z_coord)):
            image_kwargs["stage_label"] = model.StageLabel(
                name=stage.name,
                x=stage.x_coord,
                x_unit=model.UnitsLength.MICROMETER,
                y=stage.y_coord,
                y_unit=model.UnitsLength.MICROMETER,
                z=stage.z_coord,
                z_unit=model.UnitsLength.MICROMETER,
            )
        if img.missing:
            ann_id = self._next_annotation_id()
            annotations.append(
                model.MapAnnotation(
                    id=ann_id,
                    namespace=MISSING_FRAMES_NAMESPACE,
                    description="Planes with no acquired data (skipped or never "
                    "arrived); their pixels are zero.",
                    value=Map(
                        ms=[
                            Map.M(
                                k="missing_planes_zct", value=json.dumps(img.missing)
                            ),
                            Map.M(k="missing_count", value=str(len(img.missing))),
                        ]
                    ),
                )
            )
            image_kwargs["annotation_refs"] = [model.AnnotationRef(id=ann_id)]
        return model.Image(**image_kwargs)

    def _plane(
        self, plane: PlaneRecord, annotations: list[Any] | _AnnotationText
    ) -> model.Plane:
        fields, entries = _plane_parts(plane)
        if entries:
            ann_id = self._next_annotation_id()
            annotations.append(
                model.MapAnnotation(
                    id=ann_id,
                    value=Map(ms=[Map.M(k=k, value=v) for k, v in entries]),
                )
            )
            fields["annotation_refs"] = [model.AnnotationRef(id=ann_id)]
        return model.Plane(**fields)

    def _plane_text(
        self,
        plane: PlaneRecord,
        lines: list[str],
        annotations: list[Any] | _AnnotationText,
    ) -> None:
        """`_plane` as the lines `built_xml` would write for its model (and
        those of its MapAnnotation, added to `annotations`)."""
        fields, entries = _plane_parts(plane)
        refs = []
        if entries:
            ann_id = self._next_annotation_id()
            annotation: list[str] = []
            _map_annotation_lines(annotation, ann_id, list(entries))
            annotations.append(annotation)
            refs.append(ann_id)
        _plane_lines(lines, fields, refs)

    def _plate(self, images: list[ImageRecord]) -> model.Plate:
        plate = self.settings.plate
        assert plate is not None
        wells: dict[tuple[str, str], list[ImageRecord]] = {}
        for img in images:
            well = img.position.well
            if well is not None:
                wells.setdefault(well, []).append(img)
        ome_wells = []
        for (row, col), members in wells.items():
            r = plate.row_names.index(row)
            c = plate.column_names.index(col)
            samples = []
            for img in members:
                pos = img.position
                sample: dict[str, Any] = {
                    "id": f"WellSample:{img.index}",
                    "index": img.index,
                    "image_ref": model.ImageRef(id=f"Image:{img.index}"),
                }
                if pos.x_coord is not None:
                    sample["position_x"] = pos.x_coord
                    sample["position_x_unit"] = model.UnitsLength.MICROMETER
                if pos.y_coord is not None:
                    sample["position_y"] = pos.y_coord
                    sample["position_y_unit"] = model.UnitsLength.MICROMETER
                samples.append(model.WellSample(**sample))
            ome_wells.append(
                model.Well(id=f"Well:{r}_{c}", row=r, column=c, well_samples=samples)
            )
        return model.Plate(
            id="Plate:0",
            name=plate.name,
            rows=len(plate.row_names),
            columns=len(plate.column_names),
            row_naming_convention=_naming(plate.row_names),
            column_naming_convention=_naming(plate.column_names),
            wells=ome_wells,
        )


def global_annotation(
    annotation_id: str, namespace: str, values: dict[str, Any]
) -> model.MapAnnotation:
    """Acquisition-level metadata: one MapAnnotation per namespace, each
    top-level key an entry whose value is JSON (strings as they are)."""
    return model.MapAnnotation(
        id=annotation_id,
        namespace=namespace_uri(namespace),
        value=Map(ms=[_map_entry(k, v) for k, v in values.items()]),
    )


def binary_only(uuid: str, metadata_file: str, metadata_uuid: str) -> OME:
    """The OME-XML of a TIFF whose metadata is in another file
    (OME-TIFF specification, "BinaryOnly"): `metadata_file` is that file's
    name relative to this file's directory."""
    return OME(
        uuid=f"urn:uuid:{uuid}",
        creator="ome-stream",
        binary_only=OME.BinaryOnly(
            metadata_file=metadata_file, uuid=f"urn:uuid:{metadata_uuid}"
        ),
    )


def _tiff_data(block: TiffDataRecord) -> model.TiffData:
    kwargs: dict[str, Any] = {"ifd": block.ifd, "plane_count": block.plane_count}
    # FirstZ/FirstC/FirstT default to 0; written only when they are not
    for key, value in (
        ("first_z", block.first_z),
        ("first_c", block.first_c),
        ("first_t", block.first_t),
    ):
        if value:
            kwargs[key] = value
    if block.file_name is not None:
        kwargs["uuid"] = model.TiffData.UUID(
            value=f"urn:uuid:{block.file_uuid}", file_name=block.file_name
        )
    return model.TiffData(**kwargs)


def _naming(names: list[str]) -> Any:
    if all(n.isalpha() for n in names):
        return model.NamingConvention.LETTER
    if all(n.isdigit() for n in names):
        return model.NamingConvention.NUMBER
    return None


def _significant_bits(dtype: str) -> int:
    return np.dtype(dtype).itemsize * 8


def _letter(dim: Dimension) -> str | None:
    from ..._settings import tiff_axis_letter

    return tiff_axis_letter(dim)
