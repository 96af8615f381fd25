"""Checks a dataset with the same readers the tests use, in plain words.

OME-Zarr: the NGFF 0.5 metadata and structure (yaozarrs), every array read in
full with tensorstore, and our own records (frame metadata, missing frames)
inside the array bounds. OME-TIFF: every file's OME-XML against the OME
schema (ome-types), its TiffData against the pages present, every page
decoded with tifffile.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import _missing as missing


def validate_dataset(path: str | Path) -> list[str]:
    """Problems found in the dataset at `path` (an empty list: it is valid)."""
    path = Path(path)
    if not path.exists():
        return [does_not_exist(path)]
    problems: list[str] = []
    if (path / "zarr.json").is_file():
        problems = _validate_zarr(path)
        return problems + _interrupted(path, problems)
    from ._inspect import tiff_dataset_files

    files = [path] if path.is_file() else tiff_dataset_files(path)
    if not files:
        return [f"{path} is neither an OME-Zarr store nor OME-TIFF."]
    for file in files:
        if file.name.lower().endswith(".ome"):
            problems += _validate_companion(file)
        else:
            problems += _validate_tiff(file)
    return problems + _interrupted(path, problems)


def does_not_exist(path: Path) -> str:
    """What to say of a dataset's path that does not exist: an OME-TIFF run
    with a file per position, given as `run.ome.tiff`, is written to
    `run/`."""
    from ._settings.formats import TIFF_SUFFIXES

    name = path.name
    for suffix in (*(".ome" + s for s in TIFF_SUFFIXES), *TIFF_SUFFIXES):
        stem = name[: -len(suffix)]
        if not (stem and name.lower().endswith(suffix)):
            continue
        directory = path.with_name(stem)
        if directory.is_dir():
            return (
                f"{path} does not exist; an OME-TIFF run with a file per "
                f"position given that path writes {directory}: give that "
                "directory (or any of its files)."
            )
    return (
        f"{path} does not exist. Give the dataset's own path: the OME-Zarr "
        "store, the OME-TIFF file, or the directory an OME-TIFF run with a "
        "file per position writes (named as the file, without its suffix)."
    )


def _interrupted(path: Path, problems: list[str]) -> list[str]:
    """What a journal beside the dataset says: a problem of its own when
    the run was interrupted (or may have been: the dataset reads, but is
    not what the run would have made until recovered - an OME-Zarr store
    sized for the whole run, without its missing-frame record); with
    problems, the reason for them when a stream is still writing it."""
    found = _journal_note(path)
    if found is None:
        return []
    note, live = found
    return [note] if problems or not live else []


def interrupted_note(path: str | Path) -> str | None:
    """When a journal is beside the dataset `path` is (or is a file of):
    whether the run is still being written or was interrupted, and the
    command completing an interrupted one. Otherwise None."""
    found = _journal_note(path)
    return None if found is None else found[0]


def _journal_note(path: str | Path) -> tuple[str, bool] | None:
    """`interrupted_note`, and whether a stream (or a recovery) holds the
    journal (False when none does, or that cannot be told)."""
    import shlex

    from ._journal import find_dataset_journal, journal_in_use, path_spellings

    found = find_dataset_journal(path)
    if found is None:
        return None
    dataset, journal = found
    given = Path(path)
    if dataset not in path_spellings(given):
        given = given.parent  # a file of a directory layout: its directory
    command = f"`ome-stream recover {shlex.quote(str(given))}`"
    in_use = journal_in_use(journal)
    unusable = None if in_use else _unusable(journal)
    if unusable is not None:
        return (
            f"{journal.name} is beside it: the run was interrupted, and its "
            f"journal cannot be used to recover it ({unusable}). The dataset is "
            "as the run left it; delete the journal to keep it so."
        ), False
    if in_use:
        return (
            f"{journal.name} is beside it, held by a stream still writing (or "
            "a recovery running): the run is not finished (validate it again "
            "once it is closed)."
        ), True
    if in_use is False:
        return (
            f"{journal.name} is beside it: the run was interrupted; {command} "
            "completes it."
        ), False
    return (
        f"{journal.name} is beside it: the run was interrupted, or is still "
        f"being written; once its process has ended, {command} completes it."
    ), True  # (cannot be told: noted, not failed)


def _unusable(journal: Path) -> str | None:
    """Why `recover` could not use the journal (its first record damaged,
    or not of this version's settings), or None. The first line only: the
    rest is for recover to check."""
    import warnings

    from pydantic import ValidationError

    from ._settings import AcquisitionSettings

    try:
        with journal.open("rb") as f:
            record = json.loads(f.readline())
        if not isinstance(record, dict) or record.get("event") != "open":
            return "it does not start with the run's settings"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            AcquisitionSettings.model_validate(record["settings"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "settings"
        return (
            f"its settings' {where}: {first['msg']}; from another version of "
            "ome-stream? That version recovers it"
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return str(exc).splitlines()[0].rstrip(".")
    return None


def _validate_zarr(root: Path) -> list[str]:
    import tensorstore as ts
    from yaozarrs import validate_zarr_store

    from ._formats.zarr.layout import file_kvstore

    problems: list[str] = []
    try:
        with _plain_path(root) as plain:
            validate_zarr_store(str(plain))
    except Exception as exc:  # the validator's own words, whatever its type
        problems.append(f"OME-Zarr metadata is invalid: {exc}")
        return problems
    for group, document in _zarr_nodes(root):
        if document.get("node_type") == "array":
            spec = {
                "driver": "zarr3",
                "kvstore": file_kvstore(group),
            }
            try:
                array = ts.open(spec, open=True, read=True).result()
                _read_every_chunk(array, group, document)
            except Exception as exc:
                problems.append(
                    f"array {group.relative_to(root)} cannot be read: {exc}"
                )
            continue
        ours: dict[str, Any] = document.get("attributes", {}).get("ome_stream", {})
        if set(ours) & {"frame_metadata", *MISSING_KEYS}:
            problems += _check_records(group, root, ours)
    return problems


MISSING_KEYS = ("missing_frame_ranges", "missing_frame_count")


def _zarr_nodes(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every node below `root` (its directory and parsed zarr.json), in
    path order; an array's chunks are not searched."""
    from ._formats.zarr.layout import walk_store

    for directory, _, document in walk_store(root):
        if document is not None:
            yield directory, document


# bytes read at a time when checking that every chunk decodes
READ_PIECE_BYTES = 64 * 2**20


def _read_every_chunk(array: Any, group: Path, document: dict[str, Any]) -> None:
    """Read every stored chunk (or shard) of the array at `group` once, so
    that a file that does not decode is found. The time taken follows what
    is stored, not the array's shape (an early-closed run may plan millions
    of frames and hold ten). A chunk is read whole; a shard, a run of whole
    inner chunks along its first axis at a time (about READ_PIECE_BYTES, at
    least one inner chunk). Arrays with another chunk key encoding than the
    "default" with "/" are read frame by frame."""
    from ._formats.zarr.chunkfiles import stored_chunks

    encoding = document.get("chunk_key_encoding", {})
    separator = encoding.get("configuration", {}).get("separator", "/")
    if encoding.get("name") != "default" or separator != "/":
        _read_frame_by_frame(array)
        return
    grid = tuple(document["chunk_grid"]["configuration"]["chunk_shape"])
    inner = _inner_chunk_shape(document)
    itemsize = array.dtype.numpy_dtype.itemsize
    for _, region in stored_chunks(group, grid, tuple(array.shape)):
        if inner is None:
            array[region].read().result()
            continue
        first = region[0]
        layer = math.prod(r.stop - r.start for r in region[1:]) * itemsize
        step = max(1, READ_PIECE_BYTES // max(1, layer * inner[0])) * inner[0]
        for start in range(first.start, first.stop, step):
            piece = (slice(start, min(start + step, first.stop)), *region[1:])
            array[piece].read().result()


def _inner_chunk_shape(document: dict[str, Any]) -> tuple[int, ...] | None:
    """The inner chunk shape of a sharded array's zarr.json, else None."""
    for codec in document.get("codecs", []):
        if isinstance(codec, dict) and codec.get("name") == "sharding_indexed":
            return tuple(codec["configuration"]["chunk_shape"])
    return None


def _read_frame_by_frame(array: Any) -> None:
    for index in range(array.shape[0] if array.ndim > 2 else 1):
        (array[index] if array.ndim > 2 else array).read().result()


# What fsspec, which yaozarrs reads through, does not take as a plain local
# path: `[`, `*` and `?` start a glob pattern, `::` chains URLs.
_NOT_PLAIN = re.compile(r"[\[*?]|::")


@contextlib.contextmanager
def _plain_path(root: Path) -> Iterator[Path]:
    """`root`, or a symbolic link to it from a temporary directory, named
    like it with `_` for what fsspec would not read as a plain path (a store
    named like `well[A1].ome.zarr` or `a::b.ome.zarr` was reported to have
    no zarr.json)."""
    if not _NOT_PLAIN.search(str(root.absolute())):
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="ome-stream-validate-") as scratch:
        link = Path(scratch) / (_NOT_PLAIN.sub("_", root.name) or "store")
        try:
            if _NOT_PLAIN.search(str(link)):
                raise OSError("the temporary directory's path is not plain either")
            link.symlink_to(root.absolute(), target_is_directory=True)
        except OSError:  # e.g. Windows without the right to make symbolic links
            yield root
            return
        yield link


def _check_records(group: Path, root: Path, ours: dict[str, Any]) -> list[str]:
    """The per-frame metadata and the missing-frames record (`_missing.py`):
    indices within the array, and no frame both recorded and missing."""
    name = str(group.relative_to(root)) if group != root else "."
    array_json = group / "0" / "zarr.json"
    if not array_json.is_file():
        return [f"{name} has frame records but no array 0."]
    shape = json.loads(array_json.read_text())["shape"][:-2]
    records = [r.get("storage_index") for r in ours.get("frame_metadata", [])]
    for index in records:
        if not missing.is_storage_index(index, shape):
            return [
                f"{name}: storage_index {index} is outside the array's index "
                f"shape {shape}."
            ]
    present = [key for key in MISSING_KEYS if key in ours]
    if not present:
        return []
    if len(present) == 1:
        other = next(key for key in MISSING_KEYS if key not in ours)
        return [f"{name}: ome_stream has {present[0]} but no {other}."]
    ranges = ours["missing_frame_ranges"]
    try:
        number = missing.count(ranges, shape)
    except ValueError as exc:
        return [f"{name}: {exc}."]
    problems = []
    recorded = ours["missing_frame_count"]
    if type(recorded) is not int or recorded != number:
        problems.append(
            f"{name}: missing_frame_count is {ours['missing_frame_count']!r}, but "
            f"the missing-frame ranges cover {number} frames."
        )
    both = missing.covered(ranges, shape, records)
    if both:
        problems.append(
            f"{name}: {len(both)} frame(s) have metadata but are listed as "
            f"missing, the first at storage index {both[0]}."
        )
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
    return problems + _plane_counts(file, ome)


def _plane_counts(file: Path, ome: Any) -> list[str]:
    """Each Image's SizeZ x SizeC x SizeT against the planes its TiffData
    map (Bio-Formats refuses a file where they differ: "ZCT size vs image
    count mismatch")."""
    problems = []
    for image in ome.images:
        pixels = image.pixels
        sizes = pixels.size_z * pixels.size_c * pixels.size_t
        # (a TiffData without PlaneCount maps one plane, or, alone with no
        # IFD, every plane of the image)
        blocks = pixels.tiff_data_blocks
        if len(blocks) == 1 and blocks[0].plane_count is None:
            continue
        mapped = sum(
            1 if block.plane_count is None else block.plane_count for block in blocks
        )
        if blocks and mapped != sizes:
            problems.append(
                f"{file.name}: Image {image.id} ({image.name or 'unnamed'}) is "
                f"SizeZ x SizeC x SizeT = {pixels.size_z} x {pixels.size_c} x "
                f"{pixels.size_t} = {sizes} planes, but its TiffData map "
                f"{mapped}: readers such as Bio-Formats refuse it."
            )
    return problems


def _validate_tiff(file: Path) -> list[str]:
    """The file's own OME-XML (full or a BinaryOnly reference) against the
    schema; the full metadata's TiffData for this file against its pages;
    every page decoded."""
    import tifffile
    from ome_types import from_xml

    from ._formats.tiff.layout import read_dataset_ome
    from ._formats.tiff.pages import FirstIfd

    try:
        with file.open("rb") as f:
            FirstIfd.read(f.fileno())
    except (OSError, ValueError) as exc:
        return [f"{file.name} holds no readable image: {exc}."]
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
            if holder == file:  # (each Image once: in the file holding it)
                problems += _plane_counts(file, ome)
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
