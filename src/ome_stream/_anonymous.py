"""A scratch file with no name, on the disk of the output.

Used for what would otherwise grow in memory with the length of a run: the
per-frame metadata records (`_frame_metadata.RecordSpill`) and the text of a
long final OME-XML (`_formats/tiff/spool.py`). `tempfile.TemporaryFile` has
no name on POSIX systems, so nothing is left behind, even by a killed
process. Unbuffered: a write that fails (a full disk) leaves nothing pending
that a later read would trip over.
"""

from __future__ import annotations

import tempfile
import weakref
from pathlib import Path
from typing import IO


class AnonymousFile:
    """Bytes written and read at offsets; closed with its owner's objects
    (never at interpreter exit, when streams left open are still to be
    finished with it: `_stream._close_open_streams`)."""

    def __init__(self, directory: Path | None, prefix: str) -> None:
        # (kept open as long as it is read: no `with`)
        self._file: IO[bytes] = tempfile.TemporaryFile(  # noqa: SIM115
            dir=directory, prefix=prefix, buffering=0
        )
        weakref.finalize(self, self._file.close).atexit = False

    def write_at(self, offset: int, data: bytes) -> None:
        """Write all of `data` at `offset` (OSError if the disk refuses)."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            self._file.seek(offset + done)
            written = self._file.write(view[done:])
            if not written:
                raise OSError(f"writing {len(view)} bytes wrote nothing")
            done += written

    def read_at(self, offset: int, size: int) -> bytes:
        """`size` bytes from `offset` (OSError if the file holds fewer)."""
        parts = []
        done = 0
        while done < size:
            self._file.seek(offset + done)
            part = self._file.read(size - done)
            if not part:
                raise OSError(f"Scratch data lost: read {done} of {size} bytes.")
            parts.append(part)
            done += len(part)
        return b"".join(parts)

    def close(self) -> None:
        self._file.close()
