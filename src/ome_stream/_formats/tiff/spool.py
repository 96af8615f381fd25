"""Long OME-XML text kept on disk while it is made, and written in pieces.

With per-frame metadata, the final OME-XML holds a Plane and a MapAnnotation
per frame: about 1 KB a frame, 100 MB for a 100 000-frame run. `TextSpool`
takes that text as it is made (in memory up to 1 MiB, then in an anonymous
file in the output's directory); a document is then a list of `TextPart`s
(strings, and ranges of a spool), which `write_parts` copies to a file a
chunk at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from ..._anonymous import AnonymousFile

SPOOL_BUFFER_BYTES = 2**20
COPY_CHUNK_BYTES = 2**20


class TextSpool:
    """Text appended as it is made, read back by byte ranges (UTF-8)."""

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._file: AnonymousFile | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._size = 0  # bytes in the file

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= SPOOL_BUFFER_BYTES:
            self._flush()

    def tell(self) -> int:
        """Bytes written so far: the end of what was written last."""
        return self._size + self._pending_bytes

    def part(self, start: int) -> SpoolRange:
        """What was written since `start` (a `tell()`)."""
        return SpoolRange(self, start, self.tell())

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._file is None:
            self._file = AnonymousFile(self._directory, ".ome-stream-xml-")
        data = b"".join(self._pending)
        self._file.write_at(self._size, data)
        self._size += len(data)
        self._pending = []
        self._pending_bytes = 0

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes from `start` to `end`, a chunk at a time (text that
        never reached the file is read from memory)."""
        if self._file is None:
            data = b"".join(self._pending)
            for at in range(start, end, COPY_CHUNK_BYTES):
                yield data[at : min(end, at + COPY_CHUNK_BYTES)]
            return
        self._flush()
        for at in range(start, end, COPY_CHUNK_BYTES):
            yield self._file.read_at(at, min(COPY_CHUNK_BYTES, end - at))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._pending = []


class SpoolRange:
    """A range of a spool's text."""

    def __init__(self, spool: TextSpool, start: int, end: int) -> None:
        self.spool = spool
        self.start = start
        self.end = end

    def __len__(self) -> int:
        return self.end - self.start

    def chunks(self) -> Iterator[bytes]:
        return self.spool.chunks(self.start, self.end)


TextPart = str | bytes | SpoolRange  # (bytes: UTF-8 already)


def part_bytes(part: TextPart) -> int:
    return len(part.encode("utf-8")) if isinstance(part, str) else len(part)


def part_chunks(parts: list[TextPart]) -> Iterator[bytes]:
    """The document the parts make, as UTF-8 bytes, a chunk at a time."""
    for part in parts:
        if isinstance(part, str):
            if part:
                yield part.encode("utf-8")
        elif isinstance(part, bytes):
            if part:
                yield part
        else:
            yield from part.chunks()


def parts_text(parts: list[TextPart]) -> str:
    """The whole document as one string (for small documents and tests)."""
    return b"".join(part_chunks(parts)).decode("utf-8")


def write_parts(parts: list[TextPart], write: Callable[[bytes], object]) -> int:
    """Write the document with `write`; its size in bytes."""
    size = 0
    for chunk in part_chunks(parts):
        write(chunk)
        size += len(chunk)
    return size
