"""The contract every storage backend fulfils.

A backend receives frames already routed: a position index and a storage
index (the frame's place in that position's array, in storage order). It
never sees acquisition order. `open` runs on the caller's thread (so that,
e.g., an existing path fails `create_stream`); `write`, `skip`, `flush` and
`close` come from the stream's single writer thread, in order. Reads
(`read_frame`, `get_metadata`) and `update_metadata` may come from any
thread, but the stream serialises every call to a backend with one lock, so
a backend never sees two calls at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .._frame_metadata import MetadataJSON
from .._journal import Journal
from .._settings import AcquisitionSettings

# Pixels that ome-stream writes itself (uncompressed OME-TIFF pages after
# a file's first, OME-Zarr chunks and shards written straight to their
# files) go out in system calls of at most this many bytes. On Linux 6.x a
# larger write lets the page cache take 2 MiB folios for it, which on a
# virtual machine whose memory its host backs lazily was up to ten times
# slower: 2048 x 2048 uint16 frames (8 MiB) written one call each ran at
# 260-940 MB/s, in 1 MiB pieces at 2 900-3 400 MB/s, in 2 MiB pieces at
# 560-2 100 MB/s (benchmarks/write_pieces.py, docs/performance.md). The
# cost: a thread takes the GIL back after each piece, which a caller busy in
# Python delays (up to the switch interval, 5 ms). Modules read it at call
# time (`backend.WRITE_PIECE_BYTES`), so that one setting governs all.
WRITE_PIECE_BYTES = 2**20


class ArrayBackend(ABC):
    """Writes routed frames and the metadata describing them."""

    def __init__(self, settings: AcquisitionSettings) -> None:
        self.settings = settings
        # When the acquisition began (OME-TIFF's AcquisitionDate); journaled,
        # so that a recovery keeps it.
        self.created = datetime.now(timezone.utc)
        # Set by the stream after `open`: the backend records each frame there
        # once its pixels are in the file (see _journal.py).
        self.journal: Journal | None = None
        # A backend that keeps writes in flight after `write` returns sets
        # these when one of them fails: the first error (the stream raises it
        # on the caller's thread) and the frames lost with it and any later
        # failure (no longer recorded as written: they are listed missing,
        # and the stream takes them off frames_written). Also set, with no
        # frame lost, when what follows a frame stored in the file fails
        # (OME-TIFF: its journal line or the interim metadata).
        self.write_error: BaseException | None = None
        self.frames_lost = 0

    def claim(self) -> None:
        """overwrite=True, before the stream gives up a killed run at its
        output: take what else `open` will replace (OME-TIFF: the other
        layout's killed run), refusing, with nothing changed, what a stream
        or a recovery holds. Let go by `open`, or by `unclaim`."""
        return None

    def unclaim(self) -> None:
        """Let go what `claim` took (the stream could not start)."""
        return None

    @abstractmethod
    def open(self) -> None:
        """Create the output (files, groups, arrays). Raise FileExistsError if
        it exists and `settings.overwrite` is False."""

    @abstractmethod
    def write(
        self,
        position_index: int,
        storage_index: tuple[int, ...],
        frame: np.ndarray,
        frame_metadata: MetadataJSON | None,
    ) -> None:
        """Store one frame (and its metadata, checked and encoded: see
        `_frame_metadata.py`) at `storage_index`."""

    @abstractmethod
    def skip(self, position_index: int, storage_index: tuple[int, ...]) -> None:
        """Record that no frame will come for `storage_index`."""

    @abstractmethod
    def set_global_metadata(self, namespace: str, metadata: dict[str, Any]) -> None:
        """Store acquisition-level metadata under `namespace` (replacing it).
        Also called after `close`, when it must update the closed output."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Push buffered data towards the disk (optional)."""

    def idle(self) -> float | None:
        """Called from the writer thread when no frame has come for a moment
        (IDLE_AFTER_S in _stream.py): record now what is deferred while
        frames keep coming, so that a process killed during a pause loses
        nothing that is in the files - journal frames whose writes have
        completed, refresh interim metadata. Returns in how many seconds to
        be called again if frames still do not come (work that is not due
        yet, or writes still in flight), or None."""
        return None

    @property
    def held_bytes(self) -> int:
        """Bytes of frames the backend still holds in memory after `write`
        returned (writes in flight); the stream counts them against
        `max_queue_bytes`. Read from the writer thread only. Zero for
        backends that write before `write` returns."""
        return 0

    def frame_slot(
        self, position_index: int, storage_index: tuple[int, ...]
    ) -> np.ndarray | None:
        """Where `append` may copy the frame for `storage_index` directly
        (then `write` gets that very array), or None. Called on the caller's
        thread without the stream's backend lock: it must not block on I/O.
        Optional; buffered Zarr writes return the frame's place in its
        write block."""
        return None

    @abstractmethod
    def read_frame(
        self, position_index: int, storage_index: tuple[int, ...]
    ) -> np.ndarray | None:
        """The frame stored at `storage_index` as written so far (including
        frames still buffered for a chunk or shard), or None when nothing is
        stored there yet (it reads as the fill value, 0). Works before and
        after `close`."""

    @abstractmethod
    def get_metadata(self) -> Any:
        """A deep copy of the format's metadata, in the form `update_metadata`
        takes (see OMEStream.get_metadata)."""

    @abstractmethod
    def update_metadata(self, metadata: Any) -> None:
        """Replace metadata (see OMEStream.update_metadata); before close it
        must survive the final metadata written at close."""

    @abstractmethod
    def close(self) -> None:
        """Write everything still buffered and the final metadata. When this
        returns, the output is complete and readable (a write that failed in
        flight is left recorded in `write_error`, its frames as missing)."""
