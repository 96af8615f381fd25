"""Where each image goes inside an OME-Zarr store, and the group documents.

- One position: the store root is the image group (array at `0`).
- Several positions without a plate: the bioformats2raw layout (NGFF 0.5,
  "bf2raw"): root `bioformats2raw.layout: 3`, `OME/zarr.json` listing the
  series, one image group per position.
- A plate: NGFF 0.5 "plate": `<row>/<column>/<field>` with plate and well
  metadata; fields are numbered within each well, so names never collide.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ..._frame_metadata import FrameRecord, FrameRecords
from ..._missing import MissingFrames
from ..._settings import AcquisitionSettings, Position
from ..._version import __version__
from . import ngff

NAMESPACE = "ome_stream"  # our section of an image group's attributes

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ImageLocation:
    position: Position
    group_path: str  # relative to the store root; "" for the root itself

    @property
    def array_path(self) -> str:
        return f"{self.group_path}/0" if self.group_path else "0"


def series_name(position: Position) -> str:
    """A path-safe, readable name for a position's image group."""
    name = position.name
    cell = f"r{position.grid_row}_c{position.grid_column}"
    if position.grid_row is not None and not name.endswith(cell):
        # (a name given to several tiles: told apart by their cells; one
        # naming its cell already, as useq's tiles do, is kept as it is)
        name = f"{name}_{position.grid_row}_{position.grid_column}"
    safe = _UNSAFE.sub("_", name).strip("._") or "image"
    return safe


def image_locations(settings: AcquisitionSettings) -> list[ImageLocation]:
    positions = settings.positions
    if settings.plate is not None:
        field_counter: dict[tuple[str, str], int] = defaultdict(int)
        locations = []
        for pos in positions:
            row, col = pos.well or ("", "")
            field = field_counter[(row, col)]
            field_counter[(row, col)] += 1
            locations.append(ImageLocation(pos, f"{row}/{col}/{field}"))
        return locations
    if len(positions) == 1:
        return [ImageLocation(positions[0], "")]
    used: set[str] = {"OME"}
    locations = []
    for pos in positions:
        name = base = series_name(pos)
        suffix = 1
        while name in used:
            name = f"{base}_{suffix}"
            suffix += 1
        used.add(name)
        locations.append(ImageLocation(pos, name))
    return locations


class RawJSON(str):
    """JSON text that `write_json_atomic` puts into a document as it is: long
    lists (the missing frames), which `indent=2` would otherwise send
    through json's pure-Python encoder, one line per number, at close."""


@dataclass(frozen=True)
class RawJSONPieces:
    """JSON text too long to hold at once (every frame's metadata):
    `write_json_atomic` writes the pieces `pieces()` yields, as they come."""

    pieces: Callable[[], Iterable[str]]


def _indented_parts(document: dict[str, Any]) -> list[str | RawJSONPieces]:
    """`document` as indented JSON, in parts: text, and the RawJSON and
    RawJSONPieces values where they go."""
    raw: dict[str, str | RawJSONPieces] = {}
    token = secrets.token_hex(8)

    def swap(value: Any) -> Any:
        if isinstance(value, (RawJSON, RawJSONPieces)):
            placeholder = f"ome-stream-raw-{token}-{len(raw)}"
            raw[json.dumps(placeholder)] = (
                str(value) if isinstance(value, RawJSON) else value
            )
            return placeholder
        if isinstance(value, dict):
            return {key: swap(item) for key, item in value.items()}
        if isinstance(value, list):
            return [swap(item) for item in value]
        return value

    text = json.dumps(swap(document), indent=2, ensure_ascii=False)
    # (the placeholders are unique: a random token, each once in the text)
    places = sorted((text.index(placeholder), placeholder) for placeholder in raw)
    parts: list[str | RawJSONPieces] = []
    start = 0
    for at, placeholder in places:
        parts += [text[start:at], raw[placeholder]]
        start = at + len(placeholder)
    parts.append(text[start:])
    return parts


def write_json_atomic(
    path: Path, document: dict[str, Any], *, compact: bool = False
) -> None:
    """Replace `path` with `document` so readers never see a partial file.

    `compact`: sorted keys, no whitespace - the bytes tensorstore writes for
    an array's zarr.json, so every backend's array documents are identical.
    Otherwise indented, with any RawJSON or RawJSONPieces value's text as it
    is (the pieces written one by one, never all in memory).
    """
    parts: list[str | RawJSONPieces]
    if compact:
        parts = [
            json.dumps(
                document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            )
        ]
    else:
        parts = _indented_parts(document)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temporary(path.parent)
    try:
        with os.fdopen(fd, "wb", buffering=2**20) as f:
            for part in parts:
                for piece in [part] if isinstance(part, str) else part.pieces():
                    # a lone surrogate (no UTF-8 for it) as its JSON escape,
                    # \udXXX: it can only be inside a string
                    f.write(piece.encode("utf-8", "backslashreplace"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_kvstore(path: Path) -> dict[str, str]:
    """The tensorstore key-value store spec of the directory at `path`.
    tensorstore takes no `.` or `..` in a file path ("Invalid file path":
    a store given as `../run.ome.zarr` could not be written, validated or
    recovered), so the path goes absolute, its symbolic links resolved (as
    the OS resolves `link/..`: after the link)."""
    return {"driver": "file", "path": os.path.realpath(path)}


# the temporaries `write_json_atomic` makes (and tempfile.mkstemp made)
_METADATA_TEMPORARY = re.compile(r"\.zarr\.json\.[A-Za-z0-9_]+\.tmp")


def walk_store(root: Path) -> Iterator[tuple[Path, list[str], dict[str, Any] | None]]:
    """Every directory of the Zarr store at `root` but the chunk directories
    of its arrays (a store may hold millions of chunks), in path order: the
    directory, its files, and its parsed zarr.json (None if it has none)."""
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        document = None
        if "zarr.json" in files:
            document = json.loads((Path(directory) / "zarr.json").read_text())
            if document.get("node_type") == "array":
                subdirectories.clear()
        yield Path(directory), files, document


def metadata_temporaries(root: Path) -> list[Path]:
    """The zarr.json temporaries a killed writer left in the store at `root`
    (never valid: the document they were for is only replaced once whole)."""
    return [
        directory / name
        for directory, files, _ in walk_store(root)
        for name in sorted(files)
        if _METADATA_TEMPORARY.fullmatch(name)
    ]


def _new_temporary(directory: Path) -> tuple[int, str]:
    """A new hidden file in `directory` for a zarr.json to be renamed into
    place, opened for writing. Made with mode 0o666 less the umask, as any
    file is (tempfile.mkstemp makes 0o600, which left the metadata readable
    by its owner only)."""
    while True:
        name = os.path.join(directory, f".zarr.json.{secrets.token_hex(8)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue


def group_document(attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"zarr_format": 3, "node_type": "group", "attributes": attributes or {}}


def prepare_store(root: Path, overwrite: bool) -> None:
    """Make way for a new store at `root`."""
    if not root.exists() and not root.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(
            f"{root} already exists. Pass overwrite=True to replace it, or choose "
            "another root_path."
        )
    if root.is_dir() and not root.is_symlink():
        if any(root.iterdir()) and not (root / "zarr.json").exists():
            raise FileExistsError(
                f"{root} exists and is not a zarr store; refusing to delete it even "
                "with overwrite=True. Remove it yourself or choose another path."
            )
        shutil.rmtree(root)
    else:
        root.unlink()


def hierarchy_ome(
    settings: AcquisitionSettings, locations: list[ImageLocation]
) -> dict[str, dict[str, Any] | None]:
    """NGFF `ome` metadata of every group that is not an image, by group path
    (None: a plain group, e.g. a plate row, which NGFF gives no metadata)."""
    groups: dict[str, dict[str, Any] | None] = {}
    if settings.plate is not None:
        groups[""] = ngff.plate_attributes(settings.plate, locations)
        wells: dict[str, list[str]] = defaultdict(list)
        for loc in locations:
            row, col, field = loc.group_path.split("/")
            groups.setdefault(row, None)
            wells[f"{row}/{col}"].append(field)
        for well_path, fields in wells.items():
            groups[well_path] = ngff.well_attributes(fields)
    elif len(locations) > 1:
        groups[""] = ngff.bf2raw_attributes()
        groups["OME"] = ngff.series_attributes(locations)
    return groups


def image_ome(settings: AcquisitionSettings, location: ImageLocation) -> dict[str, Any]:
    """NGFF `ome` metadata of one position's image group."""
    return ngff.image_attributes(
        settings, location.position.name, validate=settings.storage_order == "ome"
    )


def image_section(
    location: ImageLocation,
    records: FrameRecords | list[FrameRecord],
    missing: MissingFrames | None,
    *,
    for_file: bool = False,
) -> dict[str, Any]:
    """Our section of an image group: position, per-frame metadata, and the
    missing frames once they are known (at close): their number and their
    ranges (`_missing.py`). `for_file`: the long lists as RawJSON, for
    `write_group` (the metadata stays encoded)."""
    section: dict[str, Any] = {
        "version": __version__,
        "position": location.position.model_dump(exclude_none=True),
    }
    if records:
        section["frame_metadata"] = (
            RawJSONPieces(partial(_records_json, records))
            if for_file
            else [r.to_json() for r in records]
        )
    if missing is not None:
        ranges = missing.ranges
        section["missing_frame_count"] = missing.count
        section["missing_frame_ranges"] = (
            RawJSON(json.dumps(ranges, separators=(",", ":"))) if for_file else ranges
        )
    return section


def _records_json(records: FrameRecords | list[FrameRecord]) -> Iterator[str]:
    """The frame records as a JSON list, a record a line, in pieces of a
    few hundred records (they may come from the spill file)."""
    yield "["
    batch: list[str] = []
    separator = "\n"
    for record in records:
        batch.append(record.json_text())
        if len(batch) == 512:
            yield separator + ",\n".join(batch)
            batch = []
            separator = ",\n"
    if batch:
        yield separator + ",\n".join(batch)
    yield "\n]"


def group_attributes(
    ome: dict[str, Any] | None,
    section: dict[str, Any] | None,
    user: dict[str, Any],
) -> dict[str, Any]:
    """A group's attributes: NGFF `ome`, our section, then the user's keys
    (global metadata namespaces and `update_metadata`), which never hold
    either reserved key."""
    attributes: dict[str, Any] = {}
    if ome is not None:
        attributes["ome"] = ome
    if section is not None:
        attributes[NAMESPACE] = section
    attributes.update(user)
    return attributes


def write_group(root: Path, group_path: str, attributes: dict[str, Any]) -> None:
    write_json_atomic(root / group_path / "zarr.json", group_document(attributes))


def read_group_attributes(root: Path, group_path: str) -> dict[str, Any] | None:
    """The attributes of the group document at `group_path`, or None when it
    is missing or unreadable."""
    try:
        document = json.loads((root / group_path / "zarr.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("node_type") != "group":
        return None
    attributes = document.get("attributes")
    return attributes if isinstance(attributes, dict) else None
