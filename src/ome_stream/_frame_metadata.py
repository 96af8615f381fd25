"""Per-frame metadata: checked and encoded on `append`, stored by backends.

Special keys (units fixed by the spec we follow, `spec/003`): `delta_t` and
`exposure_time` in seconds, `position_x`, `position_y`, `position_z` in
micrometers. OME-TIFF writes them as `Plane` attributes; every other key goes
to a `MapAnnotation`. OME-Zarr stores the dict as given, with `storage_index`.

A frame's metadata travels and is kept as compact JSON text (`MetadataJSON`):
`append` encodes it once to check it, the journal writes that text as it is,
and backends keep it for the final metadata - every frame's, for the whole
run - in `FrameRecords`: the newest in memory, the rest in an anonymous file
on the output's disk (`RecordSpill`), so that memory does not grow with the
length of the run. It is decoded when the final metadata is built.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, NewType

import numpy as np

from ._anonymous import AnonymousFile

PLANE_KEYS = ("delta_t", "exposure_time", "position_x", "position_y", "position_z")
RESERVED_KEYS = ("storage_index",)

# A frame's metadata as compact JSON text of an object (see the module doc).
MetadataJSON = NewType("MetadataJSON", str)


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """Metadata of one stored frame, in its image's storage coordinates."""

    storage_index: tuple[int, ...]
    metadata_json: MetadataJSON

    @classmethod
    def of(
        cls, storage_index: tuple[int, ...], metadata: dict[str, Any]
    ) -> FrameRecord:
        """A record of metadata already checked (e.g. read from a journal)."""
        return cls(storage_index, encode_metadata(metadata))

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata, decoded anew at each call."""
        decoded: dict[str, Any] = json.loads(self.metadata_json)
        return decoded

    def to_json(self) -> dict[str, Any]:
        return {**self.metadata, "storage_index": list(self.storage_index)}

    def json_text(self) -> str:
        """`to_json` as compact JSON text, without decoding the metadata."""
        index = ",".join(map(str, self.storage_index))
        text = self.metadata_json
        # (an object's text: "{}" or "{...}"; `storage_index` is reserved,
        # so it is never there already)
        sep = "" if text == "{}" else ","
        return f'{text[:-1]}{sep}"storage_index":[{index}]}}'


# Records kept in memory, in all of a backend's images, before they go to
# the spill file (counted as their JSON text plus RECORD_BYTES each).
SPILL_MEMORY_BYTES = 2**20
RECORD_BYTES = 120  # a FrameRecord, its index tuple and the str object


class RecordSpill:
    """One anonymous file holding the frame records of all of a backend's
    images, written in blocks: whenever the records kept in memory reach
    `memory_bytes`, every image's are appended to it in one write. The file
    is made in `directory` (the one holding the output, so on its disk, not
    in a RAM-backed /tmp) at the first spill, and has no name on POSIX
    systems: nothing is left behind, even by a killed process (the journal
    is what `recover` reads). If it cannot be made or written (a full
    disk), the records stay in memory and it is tried again once as much
    more has come: no record is ever lost. Used from one thread at a time
    (the backend's lock)."""

    def __init__(self, directory: Path | None, memory_bytes: int | None = None) -> None:
        self._directory = directory
        self._memory_bytes = (
            SPILL_MEMORY_BYTES if memory_bytes is None else memory_bytes
        )
        self._file: AnonymousFile | None = None
        self._size = 0
        self._members: list[FrameRecords] = []
        self.in_memory = 0  # bytes of records kept in memory, all images
        self._next_try = self._memory_bytes

    def records(self) -> FrameRecords:
        """The records of one more image, spilled here."""
        member = FrameRecords(self)
        self._members.append(member)
        return member

    def added(self, nbytes: int) -> None:
        self.in_memory += nbytes
        if self.in_memory >= self._next_try and self._directory is not None:
            self.spill()

    def spill(self) -> bool:
        """Write every image's records in memory to the file; False if it
        could not be (they stay in memory)."""
        blocks = [(m, m._encoded_tail()) for m in self._members if m._tail]
        data = b"".join(text for _, text in blocks)
        try:
            if self._file is None:
                self._file = AnonymousFile(self._directory, ".ome-stream-records-")
            self._file.write_at(self._size, data)
        except OSError:
            self._next_try = self.in_memory + self._memory_bytes
            return False
        offset = self._size
        for member, text in blocks:
            member._spilled(offset, len(text))
            offset += len(text)
        self._size = offset
        self.in_memory = sum(m._tail_bytes for m in self._members)
        self._next_try = self._memory_bytes
        return True

    def read(self, offset: int, nbytes: int) -> bytes:
        assert self._file is not None
        return self._file.read_at(offset, nbytes)


@dataclass
class _Block:
    """Records of one image in the spill file."""

    offset: int
    nbytes: int
    count: int  # records in it, less the dropped ones
    dropped: set[bytes] = field(default_factory=set)  # their index keys


class FrameRecords:
    """The frame records of one image, in the order they were added: the
    newest in memory, the others in their `RecordSpill`'s file (a line each,
    `i,j,k<TAB>metadata JSON`). Without a spill, all in memory."""

    def __init__(self, spill: RecordSpill | None = None) -> None:
        self._spill = spill
        self._blocks: list[_Block] = []
        self._spilled_count = 0
        self._tail: list[FrameRecord] = []
        self._tail_bytes = 0

    def append(self, storage_index: tuple[int, ...], metadata: MetadataJSON) -> None:
        self._tail.append(FrameRecord(storage_index, metadata))
        nbytes = len(metadata) + RECORD_BYTES
        self._tail_bytes += nbytes
        if self._spill is not None:
            self._spill.added(nbytes)

    def __len__(self) -> int:
        return self._spilled_count + len(self._tail)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[FrameRecord]:
        return self.since(0)

    def since(self, start: int) -> Iterator[FrameRecord]:
        """The records from the `start`-th on (a block of the file at a time
        in memory)."""
        for block in self._blocks:
            if start >= block.count:
                start -= block.count
                continue
            lines = self._block_lines(block)
            if block.dropped:
                lines = [
                    line
                    for line in lines
                    if line.partition(b"\t")[0] not in block.dropped
                ]
            for line in islice(lines, start, None):
                yield _record_from_line(line)
            start = 0
        yield from islice(self._tail, start, None)

    def _block_lines(self, block: _Block) -> list[bytes]:
        assert self._spill is not None
        lines = self._spill.read(block.offset, block.nbytes).split(b"\n")
        lines.pop()  # (after the last newline)
        return lines

    def discard(self, storage_indices: set[tuple[int, ...]]) -> None:
        """Drop the records of these frames (a write that failed: the most
        recent frames, so mostly in memory). In the file they are marked
        dropped in their block, which stays as it is."""
        found = {r.storage_index for r in self._tail} & storage_indices
        kept = [r for r in self._tail if r.storage_index not in storage_indices]
        if len(kept) != len(self._tail):
            dropped_bytes = sum(
                len(r.metadata_json) + RECORD_BYTES
                for r in self._tail
                if r.storage_index in storage_indices
            )
            self._tail = kept
            self._tail_bytes -= dropped_bytes
            if self._spill is not None:
                self._spill.in_memory -= dropped_bytes
        keys = {_index_key(index) for index in storage_indices if index not in found}
        for block in reversed(self._blocks):
            if not keys:
                break
            assert self._spill is not None  # (blocks are in its file)
            data = b"\n" + self._spill.read(block.offset, block.nbytes)
            candidates = {k for k in keys if b"\n" + k + b"\t" in data}
            if not candidates:
                continue
            present = {line.partition(b"\t")[0] for line in self._block_lines(block)}
            hit = (candidates & present) - block.dropped
            block.dropped |= hit
            block.count -= len(hit)
            self._spilled_count -= len(hit)
            keys -= hit

    def _encoded_tail(self) -> bytes:
        return "".join(
            [
                f"{_index_key_text(r.storage_index)}\t{r.metadata_json}\n"
                for r in self._tail
            ]
        ).encode("utf-8", "surrogatepass")

    def _spilled(self, offset: int, nbytes: int) -> None:
        """The records in memory are now at `offset` in the file."""
        self._blocks.append(_Block(offset, nbytes, len(self._tail)))
        self._spilled_count += len(self._tail)
        self._tail = []
        self._tail_bytes = 0


def _index_key_text(storage_index: tuple[int, ...]) -> str:
    return ",".join(map(str, storage_index))


def _index_key(storage_index: tuple[int, ...]) -> bytes:
    return _index_key_text(storage_index).encode()


def _record_from_line(line: bytes) -> FrameRecord:
    index, _, text = line.partition(b"\t")
    storage_index = tuple(map(int, index.split(b","))) if index else ()
    return FrameRecord(
        storage_index, MetadataJSON(text.decode("utf-8", "surrogatepass"))
    )


def encode_metadata(metadata: dict[str, Any]) -> MetadataJSON:
    """JSON-safe metadata (as `checked_metadata` returns) as MetadataJSON."""
    return MetadataJSON(json.dumps(metadata, separators=(",", ":"), allow_nan=False))


def _to_builtin(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def checked_metadata(metadata: Any, argument: str = "frame_metadata") -> dict[str, Any]:
    """A JSON-safe deep copy of `metadata`, or a clear error naming the problem.

    numpy scalars and arrays become Python numbers and lists; anything else that
    JSON cannot hold (datetime, objects, NaN, non-string keys) raises.
    """
    result: dict[str, Any] = json.loads(checked_metadata_json(metadata, argument))
    return result


def checked_metadata_json(
    metadata: Any, argument: str = "frame_metadata"
) -> MetadataJSON:
    """`checked_metadata`, as compact JSON text (one encoding, no copy)."""
    if not isinstance(metadata, Mapping):
        raise TypeError(
            f"{argument} must be a dict of JSON values, got {type(metadata).__name__}."
        )
    for key in metadata:
        if not isinstance(key, str):
            raise TypeError(f"{argument} keys must be strings; got {key!r}.")
        if key in RESERVED_KEYS:
            raise ValueError(
                f"{argument} key {key!r} is reserved (the writer sets it); rename it."
            )
    try:
        encoded = json.dumps(
            metadata, default=_to_builtin, allow_nan=False, separators=(",", ":")
        )
    except (TypeError, ValueError) as exc:
        bad = _first_bad_key(metadata)
        where = f" at key {bad!r}" if bad else ""
        raise TypeError(
            f"{argument} must be JSON-serializable{where}: {exc}. Convert the value "
            "to a str, number, bool, None, list or dict (NaN/inf are not JSON: use "
            "None)."
        ) from None
    return MetadataJSON(encoded)


def _first_bad_key(metadata: Mapping[str, Any]) -> str | None:
    for key, value in metadata.items():
        try:
            json.dumps(value, default=_to_builtin, allow_nan=False)
        except (TypeError, ValueError):
            return key
    return None


def plane_value(metadata: Mapping[str, Any], key: str) -> float | None:
    """A special key's value as a finite float, or None if absent/unusable."""
    value = metadata.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range: not a plane value
        return None
    return number if math.isfinite(number) else None
