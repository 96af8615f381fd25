"""Zarr backends that write rectangular regions of an array (tensorstore,
zarr-python).

`RegionWriterBackend` turns routed frames into region writes: frames are
gathered into write blocks covering whole chunks (whole shards when sharded)
so no chunk is ever read-modified-written; unbounded axes grow ahead of the
data and are trimmed at close; writes are kept in flight (bounded in count
and bytes) and each frame is journaled once its write has completed (the
frames of a write that failed are forgotten: missing, not written). A
backend supplies four hooks: create an array, write a region (returning a
completion handle), resize, and read.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from abc import abstractmethod
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..._frame_metadata import MetadataJSON
from ..._settings import AcquisitionSettings
from .arrays import (
    BlockBuffer,
    BlockPool,
    chunk_shape,
    shard_shape,
    write_block_shape,
)
from .base import ZarrBackend, ZarrImage
from .chunkfiles import (
    ChunkFiles,
    ShardFiles,
    writes_whole_chunks,
    writes_whole_shards,
)
from .layout import ImageLocation

# Writes in flight before the oldest is awaited: bounds the memory a backend
# holds for data it has not written yet (beyond the stream's queue bound), and
# surfaces write errors promptly.
MAX_WRITES_IN_FLIGHT = 64
MAX_BYTES_IN_FLIGHT = 32 * 2**20
# While the stream is idle with writes in flight, how often to look for
# completed ones to journal: after IDLE_POLL_S, then twice as long each
# time up to IDLE_POLL_MAX_S (a write held up by a slow disk).
IDLE_POLL_S = 0.005
IDLE_POLL_MAX_S = 0.1
# Threads writing chunk files directly (`chunkfiles.py`): a new file costs
# the file system a few metadata updates (mkdir, create, rename), which take
# 150-400 µs each while writeback runs on this kind of VM; several in flight
# overlap them, as tensorstore's own I/O threads do.
CHUNK_FILE_THREADS = 4
# The "received" journal lines of frames taken into a write block are
# written together: once RECEIVED_EVERY_S have passed since the first of
# them (at the next frame), before any block is written, and when the
# writer goes idle (IDLE_AFTER_S). One system call per batch, not per
# frame: each call made the writer thread give up the GIL and take it back
# from `append` (4 000 256² frames to shards of 100, copied: medians 4 600
# against 5 700 frames/s, docs/performance.md). A kill leaves unnamed by
# recover at most the frames that arrived in that time, as it leaves those
# still in the stream's queue.
RECEIVED_EVERY_S = 0.02
# Unbounded axes grow ahead of the data (then are trimmed at close) so the
# array metadata is not rewritten for every frame.
MAX_GROWTH_STEP = 1024
# A write block (a chunk or shard spanning several frames) still open once
# the stream has been idle this long - a time-lapse waiting for its next
# time point, with chunks or shards along t - is written as it is, the
# frames still to come as the fill value, so that a kill during the pause
# loses none of its frames; written again when complete (or at close). With
# many bytes to write (all the open blocks' together) the wait is longer,
# one second per PAUSE_WRITE_BYTES_PER_S, so that an acquisition pausing
# again and again just past it writes at most that much more; one block is
# written at a time, frames that come meanwhile first. Not for blocks over
# PAUSE_WRITE_MAX_BYTES: the copy taken (frames may be copied into the block
# meanwhile) would take that much memory; uncompressed shards of a frame per
# inner chunk written directly (`ShardFiles.write_frames`) take the frames
# added as they are, up to PAUSE_WRITE_MAX_SHARD_BYTES (the write holds up
# the frames of an acquisition resuming meanwhile: about what the stream's
# queue holds by default, or a second or two of the disk's time). Only
# where a chunk file is replaced whole (a kill while one is rewritten must
# not tear frames it holds already): `pause_writes`.
PAUSE_WRITE_S = 1.0
PAUSE_WRITE_BYTES_PER_S = 4 * 2**20
PAUSE_WRITE_MAX_BYTES = 64 * 2**20
PAUSE_WRITE_MAX_SHARD_BYTES = 256 * 2**20

Region = tuple[slice | int, ...]
logger = logging.getLogger(__name__)


class Completion(Protocol):
    """A write in progress (a tensorstore future, or one already done)."""

    def done(self) -> bool: ...

    def result(self) -> Any: ...


class Done:
    """The completion of a write that finished before it was returned."""

    def done(self) -> bool:
        return True

    def result(self) -> None:
        return None


# (storage index, frame metadata, skipped?) of a frame awaiting its write
_Entry = tuple[tuple[int, ...], MetadataJSON | None, bool]


@dataclass
class _ArrayState:
    array: Any  # the backend's array handle
    shape: list[int]  # current shape, including growth ahead of the data
    buffer: BlockBuffer | None
    # set when whole uncompressed chunks are written straight to their files
    chunk_files: ChunkFiles | None = None
    # frames gathered in each open write block, for the journal
    block_frames: dict[tuple[int, ...], list[_Entry]] = field(default_factory=dict)
    # of which written with the block in a pause (`_write_open_block`)
    paused_frames: dict[tuple[int, ...], int] = field(default_factory=dict)


def _frames_only(state: _ArrayState) -> bool:
    """Whether a block of the array is written in a pause without a copy
    (`ShardFiles.write_frames`)."""
    files = state.chunk_files
    return isinstance(files, ShardFiles) and files.frame_chunks


class RegionWriterBackend(ZarrBackend):
    """Frames to `<image>/0` arrays through region writes (see module doc)."""

    # Write whole uncompressed chunks, and uncompressed shards of whole
    # frames, straight to their files (`chunkfiles.py`) rather than through
    # `_write_region`.
    direct_chunk_files = False
    # Write open blocks in a pause (PAUSE_WRITE_S): the backend replaces a
    # chunk file whole (a temporary renamed), never in place.
    pause_writes = True

    def __init__(self, settings: AcquisitionSettings) -> None:
        super().__init__(settings)
        self._arrays: list[_ArrayState] = []
        self._pending: deque[tuple[Completion, int, list[_Entry], int]] = deque()
        self._pending_bytes = 0
        self._idle_poll = IDLE_POLL_S
        self._idle_since: float | None = None  # (None: frames came since)
        self._received: list[tuple[int, tuple[int, ...]]] = []  # (not journaled)
        self._received_due = 0.0
        self._pause_writes = self.pause_writes  # (off after one fails)
        self._block_shape = write_block_shape(settings)
        self._buffered = any(b > 1 for b in self._block_shape)
        self._block_bytes = math.prod(self._block_shape) * settings.frame_nbytes
        self._chunk_io: ThreadPoolExecutor | None = None

    # ----------------------------------------------------------------- hooks

    @abstractmethod
    def _create_array(self, location: ImageLocation, shape: tuple[int, ...]) -> Any:
        """Create (replacing) the array at `location.array_path`; its handle."""

    @abstractmethod
    def _write_region(self, array: Any, region: Region, data: np.ndarray) -> Completion:
        """Start writing `data` to `region`; `data` is not modified until the
        write completes."""

    @abstractmethod
    def _resize_array(
        self, location: ImageLocation, array: Any, shape: tuple[int, ...]
    ) -> Any:
        """Change the shape (metadata only: chunks are neither read nor
        deleted); the handle to use from now on."""

    @abstractmethod
    def _read_region(self, array: Any, region: Region) -> np.ndarray:
        """Read `region` (every write to it has completed)."""

    # ----------------------------------------------------------------- open

    def _open_arrays(self) -> None:
        settings = self.settings
        frame_shape = settings.frame_shape
        initial = tuple(0 if c is None else c for c in self._index_shape)
        pool = BlockPool()
        dtype = np.dtype(settings.dtype)
        shards = shard_shape(settings)
        direct = self.direct_chunk_files and (
            writes_whole_chunks(settings) or writes_whole_shards(settings)
        )
        if direct:
            self._chunk_io = ThreadPoolExecutor(
                CHUNK_FILE_THREADS, thread_name_prefix="ome-stream-chunk-io"
            )
        self._warn_of_blocks_beyond_the_bound()
        for image in self._images:
            array = self._create_array(image.location, initial + frame_shape)
            buffer = None
            if self._buffered:
                buffer = BlockBuffer(
                    self._block_shape,
                    self._index_shape,
                    frame_shape,
                    dtype,
                    pool,
                )
            chunk_files = None
            if direct:
                array_dir = self.root / image.location.array_path
                if shards is None:
                    chunk_files = ChunkFiles(array_dir, chunk_shape(settings), dtype)
                else:
                    chunk_files = ShardFiles(
                        array_dir, shards, chunk_shape(settings), dtype
                    )
            self._arrays.append(
                _ArrayState(array, list(initial + frame_shape), buffer, chunk_files)
            )

    def _warn_of_blocks_beyond_the_bound(self) -> None:
        """Open write blocks are held beside the queue's bound (one per
        chunk or shard being filled, whatever the run's length): say so
        when the stream starts if an image's one each already exceeds it."""
        if not self._buffered:
            return
        settings = self.settings
        n_open = self._blocks_open_at_once()
        held = n_open * self._block_bytes
        if held <= settings.max_queue_bytes:
            return

        def mb(n: int) -> str:
            if n < 2**20:
                return f"{n / 2**10:.0f} KB"
            return f"{n / 2**20:.{0 if n >= 10 * 2**20 else 1}f} MB"

        warnings.warn(
            "Write blocks filled at once in this acquisition order: "
            f"{n_open} of {mb(self._block_bytes)} (a chunk or shard of "
            f"{math.prod(self._block_shape)} frames each), {mb(held)} held "
            f"beside max_queue_bytes={mb(settings.max_queue_bytes)}. Use smaller "
            "chunks or shards along the slow axes (or fewer positions per "
            "stream) to bound memory more tightly.",
            UserWarning,
            stacklevel=2,
        )

    def _blocks_open_at_once(self) -> int:
        """Write blocks being filled at the same time: frames come in
        acquisition order, so while the slowest dimension that a block
        spans several steps of runs through one block's steps, every
        faster dimension runs through all of its blocks (every position,
        for a position dimension)."""
        settings = self.settings
        names = [d.name for d in settings.storage_index_dimensions]
        block = dict(zip(names, self._block_shape))
        loops = list(settings.dimensions[:-2])  # (acquisition order)
        spans = [i for i, d in enumerate(loops) if block.get(d.name, 1) > 1]
        if not spans:
            return 0
        n_open = 1
        for dim in loops[spans[0] + 1 :]:
            count = dim.count or 1
            n_open *= count if dim.type == "position" else -(-count // block[dim.name])
        return n_open

    # ---------------------------------------------------------------- frames

    def _write_frame(
        self,
        position_index: int,
        image: ZarrImage,
        storage_index: tuple[int, ...],
        frame: np.ndarray,
        frame_metadata: MetadataJSON | None,
    ) -> None:
        self._store(position_index, (storage_index, frame_metadata, False), frame)

    def _skip_frame(
        self, position_index: int, image: ZarrImage, storage_index: tuple[int, ...]
    ) -> None:
        self._store(position_index, (storage_index, None, True), None)

    def _store(
        self, position_index: int, entry: _Entry, frame: np.ndarray | None
    ) -> None:
        storage_index = entry[0]
        state = self._arrays[position_index]
        self._idle_since = None
        # writes finished since: journaled now, not at the next block's
        # write (a chunk of 50 frames at 50 frames/s: a second later)
        self._complete_finished()
        if self._unbounded_axis is not None:
            needed = storage_index[self._unbounded_axis] + 1
            if state.buffer is not None:
                block = self._block_shape[self._unbounded_axis]
                needed = math.ceil(needed / block) * block
            self._ensure_capacity(position_index, needed)
        if state.buffer is None:
            if frame is not None:
                completion = self._write(state, storage_index, frame)
                self._submit(completion, position_index, [entry], frame.nbytes)
            elif self.journal is not None:
                self._journal(self.journal.skip, position_index, storage_index)
            return
        key = tuple(i // b for i, b in zip(storage_index, self._block_shape))
        state.block_frames.setdefault(key, []).append(entry)
        if self.journal is not None and frame is not None:
            now = time.monotonic()
            if not self._received:
                self._received_due = now + RECEIVED_EVERY_S
            self._received.append((position_index, storage_index))
            if now >= self._received_due:
                self._journal_received()
        complete = state.buffer.add(storage_index, frame)
        if complete is not None:
            entries = self._unwritten(state, key)
            self._write_block(position_index, *complete, entries)

    @property
    def held_bytes(self) -> int:
        # Writes in flight only. Open write blocks are left out: `append`
        # copies most frames straight into them while the frames are still
        # counted as queued, and their number is fixed by the layout (one per
        # chunk or shard being filled), whatever the acquisition's length.
        return self._pending_bytes

    def frame_slot(
        self, position_index: int, storage_index: tuple[int, ...]
    ) -> np.ndarray | None:
        buffer = self._arrays[position_index].buffer if self._arrays else None
        if buffer is None or self._closed:
            return None
        return buffer.slot(storage_index)

    def _write_block(
        self,
        position_index: int,
        start: tuple[int, ...],
        block: np.ndarray,
        entries: list[_Entry],
    ) -> None:
        # (first: the frames a kill during this write would lose must be
        # named, and `_submit` may wait for earlier writes)
        self._journal_received()
        state = self._arrays[position_index]
        limits = list(state.shape)
        if self._closed and self._unbounded_axis is not None:
            # no tail past the data
            limits[self._unbounded_axis] = self._images[position_index].extent
        stop = [min(s + b, limit) for s, b, limit in zip(start, block.shape, limits)]
        region = tuple(slice(s, e) for s, e in zip(start, stop))
        data = block[tuple(slice(0, e - s) for s, e in zip(start, stop))]
        if data.size:
            try:
                completion = self._write(state, region, data)
            except Exception as exc:  # its frames, earlier ones included
                self._failed(position_index, entries, exc)
            else:
                self._submit(completion, position_index, entries, data.nbytes)
        del data
        if state.buffer is not None and state.buffer.pool is not None:
            state.buffer.pool.give_back(block)  # reused once the write let go

    def _write(
        self, state: _ArrayState, region: Region, data: np.ndarray
    ) -> Completion:
        if state.chunk_files is not None and self._chunk_io is not None:
            # the work item holds `data` until written (see the pools)
            return self._chunk_io.submit(state.chunk_files.write, region, data)
        return self._write_region(state.array, region, data)

    def _ensure_capacity(self, position_index: int, needed: int) -> None:
        axis = self._unbounded_axis
        assert axis is not None
        current = self._arrays[position_index].shape[axis]
        if needed <= current:
            return
        grown = max(needed, current + min(max(current, 1), MAX_GROWTH_STEP))
        self._resize(position_index, grown)

    def _resize(self, position_index: int, size: int) -> None:
        axis = self._unbounded_axis
        assert axis is not None
        state = self._arrays[position_index]
        shape = list(state.shape)
        shape[axis] = size
        location = self._images[position_index].location
        state.array = self._resize_array(location, state.array, tuple(shape))
        state.shape = shape

    def _submit(
        self,
        completion: Completion,
        position_index: int,
        entries: list[_Entry],
        nbytes: int,
    ) -> None:
        self._pending.append((completion, position_index, entries, nbytes))
        self._pending_bytes += nbytes
        while (
            len(self._pending) > MAX_WRITES_IN_FLIGHT
            or self._pending_bytes > MAX_BYTES_IN_FLIGHT
        ):
            self._complete_oldest()
        self._complete_finished()

    def _complete_finished(self) -> None:
        """Complete (and journal) the writes finished, oldest first."""
        pending = self._pending
        while pending and pending[0][0].done():
            self._complete_oldest()

    def _complete_oldest(self) -> None:
        completion, position_index, entries, nbytes = self._pending.popleft()
        self._pending_bytes -= nbytes
        try:
            completion.result()
        except Exception as exc:
            self._failed(position_index, entries, exc)
            return
        if self.journal is not None:
            self._journal(
                self.journal.written,
                [
                    (position_index, index, metadata, skipped)
                    for index, metadata, skipped in entries
                ],
            )

    def _journal(self, record: Callable[..., None], *args: Any) -> None:
        """Write journal lines. Should that fail (the disk full), the frames
        stay recorded as written - they are in the store - and the error is
        kept as the write error: the stream raises it, and close finishes
        the store (the journal only matters to a killed process)."""
        try:
            record(*args)
        except Exception as exc:
            if self.write_error is None:
                self.write_error = exc

    def _failed(
        self, position_index: int, entries: list[_Entry], error: Exception
    ) -> None:
        """A write of `entries` failed after `write` returned (e.g. the disk
        filled up): its frames are missing, not written; the stream raises
        the first such error and finishes the store with the rest."""
        written = self._images[position_index].written
        # (a frame whose `write` raised was forgotten, and never counted)
        lost = [i for i, _, skipped in entries if not skipped and written[i]]
        self._forget(position_index, lost)
        self.frames_lost += len(lost)
        if self.write_error is None:
            self.write_error = error

    def _journal_received(self) -> None:
        if self._received and self.journal is not None:
            entries, self._received = self._received, []
            self._journal(self.journal.received, entries)

    def flush(self) -> None:
        self._journal_received()
        while self._pending:
            self._complete_oldest()

    def idle(self) -> float | None:
        """Journal the writes that have completed; look again while some are
        still in flight (soon, then less often). Write the open blocks once
        the pause has lasted PAUSE_WRITE_S."""
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        self._journal_received()
        self._complete_finished()
        due = None
        blocks = self._blocks_to_write()
        if blocks:
            after = len(blocks) * self._block_bytes / PAUSE_WRITE_BYTES_PER_S
            due = self._idle_since + max(PAUSE_WRITE_S, after) - now
            if due <= 0:  # one at a time: frames that come meanwhile first
                self._write_open_block(*blocks[0])
                due = IDLE_POLL_S if len(blocks) > 1 else None
        if not self._pending:
            self._idle_poll = IDLE_POLL_S
            return due
        wait = self._idle_poll
        self._idle_poll = min(2 * wait, IDLE_POLL_MAX_S)
        return wait if due is None else min(wait, due)

    def _blocks_to_write(self) -> list[tuple[int, tuple[int, ...]]]:
        """(position, block) of each open write block holding frames it did
        not hold when last written in a pause, and small enough to write so
        (see PAUSE_WRITE_MAX_BYTES)."""
        found: list[tuple[int, tuple[int, ...]]] = []
        if not self._pause_writes:
            return found
        for position_index, state in enumerate(self._arrays):
            if state.buffer is None or self._closed:
                continue
            limit = PAUSE_WRITE_MAX_BYTES
            if _frames_only(state):
                limit = max(limit, PAUSE_WRITE_MAX_SHARD_BYTES)
            if self._block_bytes > limit:
                continue
            for key, entries in state.block_frames.items():
                if len(entries) > state.paused_frames.get(key, 0):
                    found.append((position_index, key))
        return found

    def _write_open_block(self, position_index: int, key: tuple[int, ...]) -> None:
        """Write an open block that holds frames not yet in the store, as it
        is (see PAUSE_WRITE_S), and journal those frames once written. A
        failure here is not the stream's: the frames are still in memory,
        and their block's write when complete (or at close) says; pause
        writes stop for the rest of the stream."""
        state = self._arrays[position_index]
        assert state.buffer is not None
        entries = list(state.block_frames[key])
        files = state.chunk_files
        taken = state.buffer.added(key)
        if taken is None:  # (never: its frames are listed while it is open)
            self._pause_writes = False
            return
        start, block, present = taken
        stop = [
            min(s + b, limit) for s, b, limit in zip(start, block.shape, state.shape)
        ]
        region = tuple(slice(s, e) for s, e in zip(start, stop))
        within = tuple(slice(0, e - s) for s, e in zip(start, stop))
        try:
            if isinstance(files, ShardFiles) and files.frame_chunks:
                files.write_frames(region, block[within], present[within])
            else:
                data = block.copy()  # (see PAUSE_WRITE_MAX_BYTES)
                data[~present] = 0
                self._write(state, region, data[within]).result()
        except Exception:
            self._pause_writes = False
            logger.warning(
                "Writing an open block of %d frames in a pause failed; they are "
                "written once it is complete (no more blocks are written in "
                "pauses)",
                len(entries),
                exc_info=True,
            )
            return
        journaled = state.paused_frames.get(key, 0)
        state.paused_frames[key] = len(entries)
        if self.journal is not None:  # (those of earlier pauses are)
            self._journal(
                self.journal.written,
                [
                    (position_index, index, metadata, skipped)
                    for index, metadata, skipped in entries[journaled:]
                ],
            )

    @staticmethod
    def _unwritten(state: _ArrayState, key: tuple[int, ...]) -> list[_Entry]:
        """The frames of a block about to be written whole that no pause
        write has stored (those are journaled, and stay in the store should
        this write fail: it replaces the file whole or not at all)."""
        entries = state.block_frames.pop(key, [])
        return entries[state.paused_frames.pop(key, 0) :]

    # ------------------------------------------------------------------ read

    def read_frame(
        self, position_index: int, storage_index: tuple[int, ...]
    ) -> np.ndarray | None:
        if not self.was_written(position_index, storage_index):
            return None
        state = self._arrays[position_index]
        if state.buffer is not None:
            buffered = state.buffer.peek(storage_index)
            if buffered is not None:
                return buffered.copy()
        self.flush()  # a write of this frame may still be in flight
        if not self.was_written(position_index, storage_index):
            return None  # and it failed
        return np.asarray(self._read_region(state.array, tuple(storage_index)))

    # ----------------------------------------------------------------- close

    def _finish_arrays(self) -> None:
        try:
            self._drain_and_trim()
        finally:
            if self._chunk_io is not None:
                self._chunk_io.shutdown(wait=True)

    def _drain_and_trim(self) -> None:
        axis = self._unbounded_axis
        for position_index, state in enumerate(self._arrays):
            if state.buffer is None:
                continue
            image = self._images[position_index]
            for start, block in state.buffer.drain():
                if axis is not None:
                    self._ensure_capacity(position_index, image.extent)
                key = tuple(s // b for s, b in zip(start, self._block_shape))
                entries = self._unwritten(state, key)
                self._write_block(position_index, start, block, entries)
        self.flush()
        if axis is None:
            return
        for position_index, state in enumerate(self._arrays):
            final = self.final_index_shape(self._images[position_index])[axis]
            if final != state.shape[axis]:
                self._resize(position_index, final)
