"""Checks a dataset with the same readers the tests use, in plain words.

OME-Zarr: the NGFF 0.5 metadata and structure (yaozarrs), every array read in
full with tensorstore, and our own records (frame metadata, missing frames)
inside the array bounds. OME-TIFF: every file's OME-XML against the OME
schema (ome-types), its TiffData against the pages present, every page
decoded with tifffile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def validate_dataset(path: str | Path) -> list[str]:
    """Problems found in the dataset at `path` (an empty list: it is valid)."""
    path = Path(path)
    if not path.exists():
        return [f"{path} does not exist."]
    if (path / "zarr.json").is_file():
        return _validate_zarr(path)
    from ._inspect import tiff_dataset_files

    files = [path] if path.is_file() else tiff_dataset_files(path)
    if not files:
        return [f"{path} is neither an OME-Zarr store nor OME-TIFF."]
    problems: list[str] = []
    for file in files:
        if file.name.lower().endswith(".ome"):
            problems += _validate_companion(file)
        else:
            problems += _validate_tiff(file)
    return problems


def _validate_zarr(root: Path) -> list[str]:
    import tensorstore as ts
    from yaozarrs import validate_zarr_store

    problems: list[str] = []
    try:
        validate_zarr_store(str(root))
    except Exception as exc:  # the validator's own words, whatever its type
        problems.append(f"OME-Zarr metadata is invalid: {exc}")
        return problems
    for array_json in sorted(root.rglob("zarr.json")):
        document = json.loads(array_json.read_text())
        group = array_json.parent
        if document.get("node_type") == "array":
            spec = {
                "driver": "zarr3",
                "kvstore": {"driver": "file", "path": str(group)},
            }
            try:
                array = ts.open(spec, open=True, read=True).result()
                for index in range(array.shape[0] if array.ndim > 2 else 1):
                    (array[index] if array.ndim > 2 else array).read().result()
            except Exception as exc:
                problems.append(
                    f"array {group.relative_to(root)} cannot be read: {exc}"
                )
            continue
        ours: dict[str, Any] = document.get("attributes", {}).get("ome_stream", {})
        if "frame_metadata" in ours or "missing_frames" in ours:
            problems += _check_records(group, root, ours)
    return problems


def _check_records(group: Path, root: Path, ours: dict[str, Any]) -> list[str]:
    array_json = group / "0" / "zarr.json"
    if not array_json.is_file():
        return [f"{group.relative_to(root)} has frame records but no array 0."]
    shape = json.loads(array_json.read_text())["shape"][:-2]
    problems = []
    records = [r.get("storage_index") for r in ours.get("frame_metadata", [])]
    for index in records + ours.get("missing_frames", []):
        if (
            not isinstance(index, list)
            or len(index) != len(shape)
            or any(not 0 <= i < n for i, n in zip(index, shape))
        ):
            problems.append(
                f"{group.relative_to(root) or '.'}: storage_index {index} is outside "
                f"the array's index shape {shape}."
            )
            break
    return problems


def _validate_companion(file: Path) -> list[str]:
    from ome_types import from_xml

    try:
        ome = from_xml(file.read_text(encoding="utf-8"), validate=True)
    except Exception as exc:
        return [f"{file.name}: the companion OME-XML is not valid: {exc}"]
    problems = []
    for image in ome.images:
        for block in image.pixels.tiff_data_blocks:
            if block.uuid is None or not block.uuid.file_name:
                problems.append(
                    f"{file.name}: {image.id} has TiffData without a file name."
                )
            elif not (file.parent / block.uuid.file_name).is_file():
                problems.append(
                    f"{file.name}: {image.id} refers to {block.uuid.file_name}, "
                    "which is missing."
                )
    return problems


def _validate_tiff(file: Path) -> list[str]:
    """The file's own OME-XML (full or a BinaryOnly reference) against the
    schema; the full metadata's TiffData for this file against its pages;
    every page decoded."""
    import tifffile
    from ome_types import from_xml

    from ._formats.tiff.layout import read_dataset_ome

    problems: list[str] = []
    try:
        with tifffile.TiffFile(file) as tif:
            description = tif.pages.first.description
            try:
                own = from_xml(description, validate=True)
            except Exception as exc:
                return [f"{file.name}: the OME-XML is not valid: {exc}"]
            if own.binary_only is not None:
                try:
                    ome, holder = read_dataset_ome(file)
                except Exception as exc:
                    return [f"{file.name}: {exc}"]
            else:
                ome, holder = own, file
            expected = 0
            for image in ome.images:
                for block in image.pixels.tiff_data_blocks:
                    named = block.uuid is not None and block.uuid.file_name
                    if (named and block.uuid.file_name == file.name) or (
                        not named and holder == file
                    ):
                        expected += block.plane_count or 0
            pages = len(tif.pages)
            if pages != expected:
                where = "" if holder == file else f" in {holder.name}"
                problems.append(
                    f"{file.name}: the OME-XML{where} describes {expected} planes "
                    f"in this file but it has {pages} pages."
                )
            for page in tif.pages:
                page.asarray()
    except Exception as exc:
        problems.append(f"{file.name} cannot be read: {exc}")
    return problems
