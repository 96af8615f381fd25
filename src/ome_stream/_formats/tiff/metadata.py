"""Checking and merging OME documents a user passes to `update_metadata`.

A document may change anything except what describes the pixels as they are
in the files - the Image count and order, each Pixels' sizes, Type,
DimensionOrder and byte order, the TiffData blocks (which IFD of which file
holds which plane), the UUIDs those blocks and BinaryOnly references rely
on - since a reader would then decode the wrong planes or none. Anything
else is the user's: names, descriptions, instruments, annotations, Planes.
"""

from __future__ import annotations

from typing import Any

import ome_types
from ome_types import OME, model

from .ome_xml import MISSING_FRAMES_NAMESPACE

_PIXEL_LAYOUT = (
    "size_x",
    "size_y",
    "type",
    "size_z",
    "size_c",
    "size_t",
    "dimension_order",
)


def _xml_name(attribute: str) -> str:
    return "".join(part.capitalize() for part in attribute.split("_"))


def _value(item: Any) -> Any:
    return getattr(item, "value", item)


def _tiff_data_key(block: model.TiffData) -> tuple[Any, ...]:
    uuid = block.uuid
    return (
        block.ifd,
        block.first_z,
        block.first_c,
        block.first_t,
        block.plane_count,
        uuid.value if uuid is not None else None,
        uuid.file_name if uuid is not None else None,
    )


def check_document(
    where: str, document: OME, expected: OME, *, earlier: OME | None = None
) -> None:
    """Raise ValueError when `document` would not describe the pixels that
    `expected` (the document ome-stream writes) describes. While the stream
    is open, describing them as `earlier` did (the document get_metadata
    last returned; frames written since change sizes and TiffData, which
    close brings up to date) is accepted too."""
    fix = "keep it as get_metadata() returned it"
    if expected.binary_only is not None:
        reference = expected.binary_only
        given = document.binary_only
        if given is None or document.images:
            raise ValueError(
                f"{where} holds only a BinaryOnly reference to "
                f"{reference.metadata_file}, where the metadata is; pass a "
                "BinaryOnly OME for it and edit the metadata under the key of "
                f"{reference.metadata_file}."
            )
        if (given.metadata_file, given.uuid) != (
            reference.metadata_file,
            reference.uuid,
        ):
            raise ValueError(
                f"{where}: BinaryOnly must name MetadataFile="
                f"{reference.metadata_file!r} UUID={reference.uuid!r}, the file "
                f"holding the metadata; got {given.metadata_file!r} "
                f"{given.uuid!r}. {fix.capitalize()}."
            )
    elif document.binary_only is not None:
        raise ValueError(
            f"{where} holds the full metadata, not a BinaryOnly reference; "
            "pass the full OME (start from get_metadata())."
        )
    if document.uuid != expected.uuid:
        raise ValueError(
            f"{where}: the OME UUID is {document.uuid!r} but the file is known as "
            f"{expected.uuid!r} to the TiffData and BinaryOnly elements that "
            f"refer to it; {fix}."
        )
    if len(document.images) != len(expected.images):
        raise ValueError(
            f"{where}: {len(document.images)} Images, but the dataset holds "
            f"{len(expected.images)} (one per position, in position order); "
            "keep one Image per position."
        )
    try:
        _check_images(where, document, expected)
    except ValueError:
        if earlier is None:
            raise
        try:
            _check_images(where, document, earlier)
        except ValueError:
            _check_images(where, document, expected)  # report today's layout
    try:
        ome_types.validate_xml(document.to_xml(), warn_on_schema_update=False)
    except Exception as exc:  # the validator's own words, whatever its type
        raise ValueError(
            f"{where} is not valid OME-XML (schema 2016-06): {exc}"
        ) from None


def _check_images(where: str, document: OME, expected: OME) -> None:
    for number, (image, want) in enumerate(zip(document.images, expected.images)):
        _check_pixels(f"{where}: Image {number}", image.pixels, want.pixels)


def _check_pixels(where: str, pixels: model.Pixels, want: model.Pixels) -> None:
    for attribute in _PIXEL_LAYOUT:
        given, expected = getattr(pixels, attribute), getattr(want, attribute)
        if _value(given) != _value(expected):
            name = _xml_name(attribute)
            raise ValueError(
                f"{where} has Pixels {name}={_value(given)} but the pixels "
                f"written have {name}={_value(expected)}; a reader would decode "
                f"the wrong planes. Keep {name} as get_metadata() returned it."
            )
    if pixels.big_endian:
        raise ValueError(
            f"{where} says BigEndian=true but the pixels are little-endian; "
            "keep BigEndian=false."
        )
    given_blocks = [_tiff_data_key(block) for block in pixels.tiff_data_blocks]
    want_blocks = [_tiff_data_key(block) for block in want.tiff_data_blocks]
    if given_blocks != want_blocks:
        planes = sum(block[4] or 0 for block in given_blocks)
        expected = sum(block[4] or 0 for block in want_blocks)
        raise ValueError(
            f"{where} maps {planes} planes in {len(given_blocks)} TiffData "
            f"elements, but the file holds {expected} planes in the "
            f"{len(want_blocks)} TiffData elements get_metadata() returned "
            "(which IFD of which file holds which plane); keep those TiffData."
        )
    sizes = (pixels.size_z, pixels.size_c, pixels.size_t)
    for plane in pixels.planes:
        if not all(
            index < size
            for index, size in zip((plane.the_z, plane.the_c, plane.the_t), sizes)
        ):
            raise ValueError(
                f"{where} has a Plane at TheZ={plane.the_z} TheC={plane.the_c} "
                f"TheT={plane.the_t}, outside SizeZ={sizes[0]} SizeC={sizes[1]} "
                f"SizeT={sizes[2]}; remove it or fix its indices."
            )


# ------------------------------------------------------------------ merging


def _annotations(document: OME) -> list[Any]:
    if document.structured_annotations is None:
        document.structured_annotations = model.StructuredAnnotations()
    annotations: list[Any] = document.structured_annotations.map_annotations
    return annotations


def _all_annotation_ids(document: OME) -> set[str]:
    if document.structured_annotations is None:
        return set()
    return {
        annotation.id
        for annotation in document.structured_annotations
        if hasattr(annotation, "id")
    }


class AnnotationIds:
    """Hands out `Annotation:N` IDs not used in a document."""

    def __init__(self, document: OME) -> None:
        self._used = _all_annotation_ids(document)
        self._next = len(self._used)

    def __call__(self) -> str:
        while f"Annotation:{self._next}" in self._used:
            self._next += 1
        annotation_id = f"Annotation:{self._next}"
        self._used.add(annotation_id)
        return annotation_id


def set_namespace_annotation(
    document: OME, annotation: model.MapAnnotation, new_id: AnnotationIds
) -> None:
    """Put `annotation` in `document`, replacing one with its namespace (and
    keeping that one's ID, so references to it hold)."""
    annotations = _annotations(document)
    for number, existing in enumerate(annotations):
        if existing.namespace == annotation.namespace:
            annotations[number] = annotation.model_copy(update={"id": existing.id})
            return
    annotations.append(annotation.model_copy(update={"id": new_id()}))


def rebase(
    document: OME,
    generated: OME,
    *,
    new_planes: list[set[tuple[int, int, int]]],
    namespaces: set[str],
) -> OME:
    """`document` (a user's, checked against an earlier state of the
    dataset) brought up to date with `generated` (ours, now): each Image
    takes the current sizes, TiffData and missing-frames record, gains the
    Planes (with their annotations) of `new_planes[image]` (z, c, t), and
    the global annotations of `namespaces` are replaced. All else stays as
    the user left it."""
    document = document.model_copy(deep=True)
    if generated.binary_only is not None:
        return document
    new_id = AnnotationIds(document)
    ours = {
        annotation.id: annotation
        for annotation in (
            generated.structured_annotations.map_annotations
            if generated.structured_annotations is not None
            else []
        )
    }
    for image, current, planes in zip(document.images, generated.images, new_planes):
        pixels, latest = image.pixels, current.pixels
        pixels.size_z, pixels.size_c, pixels.size_t = (
            latest.size_z,
            latest.size_c,
            latest.size_t,
        )
        pixels.tiff_data_blocks = [b.model_copy() for b in latest.tiff_data_blocks]
        present = {(p.the_z, p.the_c, p.the_t) for p in pixels.planes}
        for plane in latest.planes:
            zct = (plane.the_z, plane.the_c, plane.the_t)
            if zct not in planes or zct in present:
                continue
            plane = plane.model_copy(deep=True)
            refs = []
            for ref in plane.annotation_refs:
                annotation = ours[ref.id].model_copy(update={"id": new_id()})
                _annotations(document).append(annotation)
                refs.append(model.AnnotationRef(id=annotation.id))
            plane.annotation_refs = refs
            pixels.planes.append(plane)
        _replace_missing_record(document, image, current, ours, new_id)
    for annotation in ours.values():
        if annotation.namespace in namespaces:
            set_namespace_annotation(document, annotation, new_id)
    return document


def _replace_missing_record(
    document: OME,
    image: model.Image,
    current: model.Image,
    ours: dict[str, Any],
    new_id: AnnotationIds,
) -> None:
    annotations = _annotations(document)
    by_id = {annotation.id: annotation for annotation in annotations}
    stale = {
        ref.id
        for ref in image.annotation_refs
        if getattr(by_id.get(ref.id), "namespace", None) == MISSING_FRAMES_NAMESPACE
    }
    image.annotation_refs = [r for r in image.annotation_refs if r.id not in stale]
    annotations[:] = [a for a in annotations if a.id not in stale]
    for ref in current.annotation_refs:
        annotation = ours.get(ref.id)
        if annotation is not None and annotation.namespace == MISSING_FRAMES_NAMESPACE:
            copy = annotation.model_copy(update={"id": new_id()})
            annotations.append(copy)
            image.annotation_refs.append(model.AnnotationRef(id=copy.id))
