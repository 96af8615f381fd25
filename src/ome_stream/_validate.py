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
    files = [path] if path.is_file() else sorted(path.glob("*.ome.tif*"))
    if not files:
        return [f"{path} is neither an OME-Zarr store nor OME-TIFF."]
    problems: list[str] = []
    for file in files:
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


def _validate_tiff(file: Path) -> list[str]:
    import tifffile
    from ome_types import from_xml

    problems: list[str] = []
    try:
        with tifffile.TiffFile(file) as tif:
            description = tif.pages.first.description
            try:
                ome = from_xml(description, validate=True)
            except Exception as exc:
                return [f"{file.name}: the OME-XML is not valid: {exc}"]
            expected = 0
            for image in ome.images:
                for block in image.pixels.tiff_data_blocks:
                    in_this_file = (
                        block.uuid is None or block.uuid.file_name == file.name
                    )
                    if in_this_file:
                        expected += block.plane_count or 0
            pages = len(tif.pages)
            if pages != expected:
                problems.append(
                    f"{file.name}: the OME-XML describes {expected} planes in this "
                    f"file but it has {pages} pages."
                )
            for page in tif.pages:
                page.asarray()
    except Exception as exc:
        problems.append(f"{file.name} cannot be read: {exc}")
    return problems
