"""The stream: `create_stream` and `OMEStream`.

`append` checks the frame, routes it, copies it into a byte-bounded queue and
returns; one writer thread drains the queue into the backend in order. A
failure in that thread is kept and raised by the next `append`, `skip` or
`close` (never only logged). `close` returns once every queued frame and all
metadata are on disk. Every call into the backend holds one lock, so live
reads (`view`, `get_metadata`) from any thread see a consistent backend.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from psygnal import Signal, SignalGroup

from ._formats import ArrayBackend, create_backend
from ._frame_metadata import MetadataJSON, checked_metadata_json
from ._journal import Journal, journal_path
from ._refs import LOCAL_ONLY
from ._routing import FrameRouter
from ._settings import AcquisitionSettings, ScratchFormat
from ._view import CoordUpdate, LoopGeometry, StreamView, coord_labels

RESERVED_NAMESPACES = ("ome", "ome_stream")


class BackpressureError(TimeoutError):
    """`append` could not queue a frame within `append_timeout` seconds."""


class WriterError(RuntimeError):
    """Writing to the output failed; the original error is the `__cause__`."""


@dataclass(frozen=True, slots=True)
class StreamStats:
    """A snapshot of a stream's progress."""

    frames_appended: int  # accepted by append or skip
    frames_written: int  # handed to the backend, less any whose write failed
    frames_skipped: int
    frames_queued: int  # waiting for the writer thread
    bytes_queued: int
    bytes_written: int
    elapsed_s: float  # since the stream was created
    # in the files and journaled: what a process killed now keeps
    # (`recover`). Behind frames_written while frames wait in a chunk or
    # shard being filled (OME-Zarr), or for the next journal batch
    # (OME-TIFF: a few milliseconds); equal to it once closed.
    frames_on_disk: int = 0

    @property
    def mb_per_s(self) -> float:
        """Average write rate so far, in MB/s (10^6 bytes)."""
        return self.bytes_written / 1e6 / self.elapsed_s if self.elapsed_s else 0.0


class StreamEvents(SignalGroup):
    """Signals of a stream, emitted from the writer thread (keep callbacks
    short: they delay writing; or connect with psygnal's `thread=` option to
    have them delivered in another thread).

    - `progress(StreamStats)`: at most every PROGRESS_INTERVAL_S.
    - `finished(StreamStats)`: once, when close() completes.
    - `coords_changed(CoordUpdate)`: after each frame (or skip) reaches the
      backend, i.e. once it is readable through `view()` and the files.
    - `coords_expanded(CoordUpdate)`: the same, only when a dimension
      reaches a new maximum index (a viewer's sliders grow).
    """

    progress = Signal(StreamStats)
    finished = Signal(StreamStats)
    coords_changed = Signal(CoordUpdate)
    coords_expanded = Signal(CoordUpdate)


EVENT_NAMES = ("coords_changed", "coords_expanded", "progress", "finished")


PROGRESS_INTERVAL_S = 0.2
# What the queue charges each item on top of its pixels and metadata text:
# the Python objects that carry it (the item tuple, the array object, the
# index tuple, the queue's entry), ~420 bytes measured for a pooled copy.
# Without it, 256 MiB of 16 x 16 frames held ~0.5 GB. A skipped frame's
# target costs SKIP_TARGET_BYTES.
QUEUE_ITEM_BYTES = 512
SKIP_TARGET_BYTES = 128
# Written frames' buffers kept for reuse by append at most (see _FramePool).
POOL_MAX_BYTES = 16 * 2**20
POOL_ARRAY_BYTES = 128  # a buffer's array object and allocation, besides pixels


class _Stop:
    """The item `close` queues last: the writer thread ends on it."""


_STOP = _Stop()


# The writer takes the queued items in batches of at most this many items
# and bytes, and frees their room in the queue once per batch - or sooner,
# once DRAIN_RELEASE_S have passed, so that with a slow backend an `append`
# waiting for room waits for one write, not for a whole batch.
DRAIN_BATCH_ITEMS = 32
DRAIN_BATCH_BYTES = 4 * 2**20
DRAIN_RELEASE_S = 0.005
# When no item has come for this long, the writer lets the backend do what
# it defers while frames keep coming (journal the last pages, refresh the
# interim OME-XML): a burst of frames and then a pause (a z-stack, then the
# wait for the next time point) must not leave the burst's last frames out
# of the journal for the whole pause.
IDLE_AFTER_S = 0.02
IDLE_MIN_WAIT_S = 0.001  # (a backend asking to be called again at once)


class _ByteBoundedQueue:
    """FIFO holding items that cost at most `max_bytes` of memory (what
    `put` charges each), counting with them the bytes the backend still
    holds of frames already taken (`held_bytes`, set by the writer: writes
    in flight). An item always fits in an empty queue, so a frame bigger
    than the bound cannot deadlock."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self.held_bytes = 0
        self._items: deque[tuple[Any, int]] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)

    def put(
        self, item: Any, nbytes: int, timeout: float | None, *, wait: bool = True
    ) -> bool:
        """Queue `item`, charged `nbytes`, once there is room (waiting up to
        `timeout`; False if none came). `wait=False`: at once, room or not
        (it is counted, so later items wait the longer)."""
        with self._not_full:
            if (
                wait
                and not self._has_room(nbytes)
                and not self._not_full.wait_for(
                    lambda: self._has_room(nbytes), timeout=timeout
                )
            ):
                return False
            self._items.append((item, nbytes))
            self.queued_bytes += nbytes
            self._not_empty.notify()
            return True

    def _has_room(self, nbytes: int) -> bool:
        used = self.queued_bytes + self.held_bytes
        return not self._items or used + nbytes <= self.max_bytes

    def snapshot(self) -> list[Any]:
        """The items waiting (or being written), oldest first."""
        with self._lock:
            return [item for item, _ in self._items]

    def get_batch(
        self, max_items: int, max_bytes: int, timeout: float | None = None
    ) -> list[tuple[Any, int]]:
        """The oldest items: at least one, then as many as fit both limits
        (left in the queue until `done`); none if nothing came in `timeout`."""
        with self._not_empty:
            if not self._not_empty.wait_for(lambda: bool(self._items), timeout):
                return []
            items = self._items
            batch = [items[0]]
            total = batch[0][1]
            for n in range(1, min(max_items, len(items))):
                entry = items[n]
                total += entry[1]
                if total > max_bytes:
                    break
                batch.append(entry)
            return batch

    def done(self, count: int, nbytes: int, held_bytes: int) -> None:
        """Release the `count` oldest items, `nbytes` in all (they stay
        counted until written); `held_bytes`: what the backend holds now."""
        with self._lock:
            popleft = self._items.popleft
            for _ in range(count):
                popleft()
            self.queued_bytes -= nbytes
            self.held_bytes = held_bytes
            self._not_full.notify_all()

    def __len__(self) -> int:
        return len(self._items)


class _FramePool:
    """Buffers for `append`'s copies, reused once written.

    Copying a small frame into a fresh array costs more in page faults than
    in copying (about 27 vs 4 µs for 256 x 256 uint16 here). So the writer
    thread hands each written frame's buffer back, and `copy` reuses the
    oldest one returned as soon as nothing else refers to it any more: a
    backend may still hold it (a write tensorstore has not copied yet,
    acquire-zarr's recent frames), or a live view reading it. Only buffers
    made here come back (never a caller's array passed with copy=False); at
    most `max_bytes` of them wait, counted with POOL_ARRAY_BYTES each.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, max_bytes: int):
        self._shape = shape
        self._dtype = dtype
        nbytes = math.prod(shape) * dtype.itemsize + POOL_ARRAY_BYTES
        # deque.append/popleft are atomic: the writer thread returns, the
        # caller's thread takes
        self._returned: deque[np.ndarray] = deque(maxlen=max(2, max_bytes // nbytes))

    def copy(self, frame: np.ndarray) -> np.ndarray:
        buffer = self._reusable()
        if buffer is None:
            buffer = np.empty(self._shape, self._dtype)
        np.copyto(buffer, frame)
        return buffer

    def _reusable(self) -> np.ndarray | None:
        """The first of the oldest few returned buffers nothing refers to."""
        returned = self._returned
        for _ in range(min(len(returned), 4)):
            try:
                buffer = returned.popleft()
            except IndexError:
                return None
            # held by `buffer` only (see _refs)
            if sys.getrefcount(buffer) <= LOCAL_ONLY:
                return buffer
            returned.append(buffer)  # still in use: look again later
        return None

    def release(self, buffer: np.ndarray) -> None:
        """A buffer from `copy` the writer is done with (others may still
        hold it)."""
        self._returned.append(buffer)


class OMEStream:
    """An open acquisition: append frames, then close. Use `create_stream`."""

    def __init__(
        self,
        settings: AcquisitionSettings,
        backend: ArrayBackend,
        router: FrameRouter,
    ) -> None:
        self._settings = settings
        self._backend = backend
        self._router = router
        self._frame_shape = settings.frame_shape
        self._dtype = np.dtype(settings.dtype)
        self._num_frames = router.num_frames
        self._timeout = settings.append_timeout
        self._queue = _ByteBoundedQueue(settings.max_queue_bytes)
        self._pool = _FramePool(
            self._frame_shape,
            self._dtype,
            min(POOL_MAX_BYTES, settings.max_queue_bytes),
        )
        self._next_frame = 0
        self._frames_written = 0
        # the backend's frames_lost, copied once the frame being written is
        # counted (read from other threads, the counters never go below)
        self._frames_lost = 0
        self._frames_skipped = 0
        self._bytes_written = 0
        self._started = time.monotonic()
        self.events = StreamEvents()
        self._error: BaseException | None = None
        self._error_reported = False
        self._closed = False
        self._forked_from: int | None = None  # (see _forget_streams_in_child)
        self._close_lock = threading.Lock()
        self._backend_lock = threading.RLock()
        self._loop = LoopGeometry(settings.dimensions[:-2])
        self._written_extents = self._loop.visited(0)
        self._thread = threading.Thread(
            target=self._drain, name="ome-stream-writer", daemon=True
        )
        self._thread.start()
        _OPEN_STREAMS.add(self)

    # -------------------------------------------------------------- properties

    @property
    def settings(self) -> AcquisitionSettings:
        """The (copied) settings this stream writes."""
        return self._settings

    @property
    def output_path(self) -> Path:
        """The file or directory holding the data."""
        return self._settings.output_path

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def frames_appended(self) -> int:
        """Frames accepted by `append` or `skip` so far."""
        return self._next_frame

    @property
    def frames_written(self) -> int:
        """Frames the writer thread has handed to the backend, less any whose
        write failed later (a write still in flight counts as written)."""
        return self._frames_written - self._frames_lost

    def _bytes_written_now(self) -> int:
        lost = self._frames_lost * math.prod(self._frame_shape)
        return self._bytes_written - lost * self._dtype.itemsize

    @property
    def frames_skipped(self) -> int:
        """Frames declared missing with `skip`."""
        return self._frames_skipped

    @property
    def queued_bytes(self) -> int:
        """Memory held by what waits for the writer thread: each frame's
        pixels and metadata text, and QUEUE_ITEM_BYTES of bookkeeping per
        item (the measure `max_queue_bytes` bounds)."""
        return self._queue.queued_bytes

    def stats(self) -> StreamStats:
        """Counters of frames and bytes, queued and written, and the rate."""
        return StreamStats(
            frames_appended=self._next_frame,
            frames_written=self.frames_written,
            frames_skipped=self._frames_skipped,
            frames_queued=len(self._queue),
            bytes_queued=self._queue.queued_bytes,
            bytes_written=self._bytes_written_now(),
            elapsed_s=time.monotonic() - self._started,
            frames_on_disk=self._frames_on_disk(),
        )

    def _frames_on_disk(self) -> int:
        written = self.frames_written
        journal = self._backend.journal
        if journal is None or (self._closed and self._error is None):
            return written  # (in memory; or finished)
        return min(journal.frames_recorded, written)

    # ------------------------------------------------------------------ writing

    def append(
        self,
        frame: np.ndarray,
        frame_metadata: dict[str, Any] | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        copy: bool = True,
    ) -> None:
        """Queue the next frame (acquisition order) with optional metadata.

        The frame is copied, so the caller may reuse its buffer at once.
        `copy=False` queues the array itself, saving a copy per frame (at
        small frame sizes about a third of the write rate): only for arrays
        nobody modifies afterwards, such as a fresh array per frame from the
        camera; a buffer refilled in place would be written with its later
        content.

        Raises ValueError for a frame of the wrong shape or dtype, TypeError for
        metadata JSON cannot hold, IndexError past the last frame,
        BackpressureError when the queue stays full past `append_timeout`,
        WriterError when writing has failed, RuntimeError after close.
        """
        self._check_usable()
        if metadata is not None:
            if frame_metadata is not None:
                raise TypeError("Pass frame_metadata or metadata, not both.")
            frame_metadata = metadata
        if type(frame) is not np.ndarray:
            frame = np.asarray(frame)
        if frame.shape != self._frame_shape or frame.dtype != self._dtype:
            self._raise_bad_frame(frame)
        number = self._next_frame
        if self._num_frames is not None and number >= self._num_frames:
            raise IndexError(
                f"Cannot append frame: would exceed the total of {self._num_frames} "
                "frames in settings.dimensions. Make the first dimension unbounded "
                "(count=None) to append an open-ended number of frames."
            )
        encoded: MetadataJSON | None = None
        if frame_metadata is not None:
            encoded = checked_metadata_json(frame_metadata)
        target = self._router.route(number)
        pooled = False
        slot = None
        if copy:
            slot = self._backend.frame_slot(target.position_index, target.storage_index)
        if slot is not None:  # copied straight into the backend's write block
            np.copyto(slot, frame)
            data = slot
        elif copy:
            data = self._pool.copy(frame)
            pooled = True
        else:
            data = np.ascontiguousarray(frame)
        item = (
            "frame",
            target.position_index,
            target.storage_index,
            data,
            encoded,
            number,
            pooled,
        )
        try:
            self._put(item, frame.nbytes + self._item_overhead(encoded))
        except BaseException:
            if slot is not None:
                slot[...] = 0  # not queued: its place must read as missing
            raise
        self._next_frame = number + 1

    @staticmethod
    def _item_overhead(encoded: MetadataJSON | None) -> int:
        """What a queued frame costs besides its pixels."""
        return QUEUE_ITEM_BYTES + (0 if encoded is None else len(encoded))

    def _raise_bad_frame(self, frame: np.ndarray) -> None:
        if frame.shape != self._frame_shape:
            raise ValueError(
                f"Frame shape {frame.shape} does not match the frame dimensions "
                f"{self._frame_shape} (Y, X) of the settings. Append 2-D frames of "
                "that shape, one at a time."
            )
        raise ValueError(
            f"Frame dtype {frame.dtype} does not match settings dtype "
            f"{self._dtype}. Convert it first, e.g. frame.astype({self._dtype.name!r})."
        )

    def skip(self, *, frames: int = 1) -> None:
        """Declare that the next `frames` frames will never come.

        They stay at the fill value (zeros) and are recorded as missing.
        """
        self._check_usable()
        if not isinstance(frames, int) or frames <= 0:
            raise ValueError(f"frames must be a positive integer, got {frames!r}.")
        start = self._next_frame
        if self._num_frames is not None and start + frames > self._num_frames:
            raise IndexError(
                f"Cannot skip {frames} frame(s): would exceed the total of "
                f"{self._num_frames} frames ({start} already appended or skipped)."
            )
        targets = [
            (t.position_index, t.storage_index)
            for t in map(self._router.route, range(start, start + frames))
        ]
        # (counted, but queued at once: skip and set_global_metadata never
        # wait for room, as they never did)
        self._queue.put(
            ("skip", targets, start + frames - 1),
            QUEUE_ITEM_BYTES + SKIP_TARGET_BYTES * frames,
            None,
            wait=False,
        )
        self._next_frame = start + frames
        self._frames_skipped += frames

    def set_global_metadata(self, namespace: str, metadata: dict[str, Any]) -> None:
        """Store acquisition-level metadata under `namespace`, replacing any
        earlier value. Zarr: the root group's attributes; OME-TIFF: a
        MapAnnotation with that namespace. Allowed after close."""
        if not isinstance(namespace, str) or not namespace:
            raise ValueError("namespace must be a non-empty string.")
        if namespace in RESERVED_NAMESPACES:
            raise ValueError(
                f"namespace {namespace!r} is reserved by ome-stream; choose another."
            )
        encoded = checked_metadata_json(metadata, argument="metadata")
        checked = json.loads(encoded)
        self._check_own()
        with self._close_lock:
            if self._closed:
                with self._backend_lock:
                    self._backend.set_global_metadata(namespace, checked)
                return
        self._check_usable()
        self._queue.put(
            ("global", namespace, checked),
            self._item_overhead(encoded),
            None,
            wait=False,
        )

    def _put(self, item: Any, nbytes: int) -> None:
        if not self._queue.put(item, nbytes, self._timeout):
            self._check_usable()
            raise BackpressureError(
                f"The write queue stayed full ({self._queue.queued_bytes} bytes "
                f"queued, {self._queue.held_bytes} held by the writer, "
                f"max_queue_bytes={self._settings.max_queue_bytes}) for "
                f"{self._timeout} s: the disk is slower than the acquisition. "
                "Raise max_queue_bytes or append_timeout, or write to a faster disk."
                " Nothing was lost; this frame was not queued."
            )

    def _check_own(self) -> None:
        """RuntimeError in a process forked from the one that opened the
        stream (see _forget_streams_in_child)."""
        if self._forked_from is not None:
            raise RuntimeError(
                f"This stream belongs to process {self._forked_from}, which "
                "opened it; a process forked from it cannot write to it "
                "(its writer thread is not there). Create a stream in this "
                "process."
            )

    def _check_usable(self) -> None:
        self._check_own()
        if self._error is not None:
            self._error_reported = True
            raise WriterError(
                f"Writing to {self.output_path} failed: {self._error!r}. Frames "
                f"written before the failure: {self.frames_written}. Close the "
                "stream to finish the file with what was written."
            ) from self._error
        if self._closed:
            raise RuntimeError("The stream is closed; create a new stream to write.")

    # ------------------------------------------------------------ writer thread

    def _drain(self) -> None:
        queue = self._queue
        next_progress = time.monotonic() + PROGRESS_INTERVAL_S
        idle_wait: float | None = None  # wait this long for items, then `_idle`
        unreported = False  # items handled since the last progress signal
        while True:
            # Several items per round when the queue has filled up: one lock
            # round, and at most one wake-up of an `append` waiting for room,
            # per batch rather than per frame (small frames: see CHANGELOG).
            batch = queue.get_batch(DRAIN_BATCH_ITEMS, DRAIN_BATCH_BYTES, idle_wait)
            if not batch:
                idle_wait = self._idle()
                now = time.monotonic()
                if unreported and now >= next_progress:
                    # the counts after a burst, while the pause lasts
                    next_progress = now + PROGRESS_INTERVAL_S
                    unreported = False
                    self._emit(self.events.progress)
                if unreported:
                    due = next_progress - now
                    idle_wait = due if idle_wait is None else min(idle_wait, due)
                continue
            idle_wait = IDLE_AFTER_S
            unreported = True
            size = len(batch)
            stop = batch[-1][0] is _STOP  # always the last item queued
            batch.reverse()  # popped oldest first: no reference outlives its item
            release_at = time.monotonic() + DRAIN_RELEASE_S
            count = nbytes = 0
            pooled: list[np.ndarray] = []
            while batch:
                item, item_bytes = batch.pop()
                if item is not _STOP:
                    buffer = self._write_item(item)
                    if buffer is not None:
                        pooled.append(buffer)
                count += 1
                nbytes += item_bytes
                # drop this loop's references before the buffers go back to
                # the pool, or they stay busy
                item = buffer = None
                if batch and time.monotonic() >= release_at:
                    self._release(count, nbytes, pooled)
                    count = nbytes = 0
                    release_at = time.monotonic() + DRAIN_RELEASE_S
            self._release(count, nbytes, pooled)
            now = time.monotonic()
            if now >= next_progress and not (stop and size == 1):
                next_progress = now + PROGRESS_INTERVAL_S
                unreported = False
                self._emit(self.events.progress)
            if stop:
                return

    def _idle(self) -> float | None:
        """No item came for a while: let the backend record what it deferred
        (so that a process killed now loses nothing written; see
        ArrayBackend.idle). Returns how long to wait for items before
        calling this again (None: until one comes)."""
        try:
            # also after an error: what is in the files is journaled all the
            # same (a failed acquisition is the one likely to be killed)
            with self._backend_lock:
                wait = self._backend.idle()
            self._raise_write_error()
        except BaseException as exc:  # kept and raised on the caller's thread
            if self._error is None:
                self._error = exc
            return None
        return None if wait is None else max(wait, IDLE_MIN_WAIT_S)

    def _release(self, count: int, nbytes: int, pooled: list[np.ndarray]) -> None:
        """Free the queue's room for the `count` items handled; hand the
        pool's buffers among them back (emptying `pooled`)."""
        self._queue.done(count, nbytes, self._backend.held_bytes)
        while pooled:  # (no loop variable left holding a buffer)
            self._pool.release(pooled.pop())

    def _write_item(self, item: Any) -> np.ndarray | None:
        """Hand one queued item to the backend. An error is kept (raised on
        the caller's thread) and every later item is dropped. Returns the
        pool's buffer of a frame written, if it was one."""
        if self._error is not None:
            return None
        backend = self._backend
        buffer: np.ndarray | None = None
        try:
            kind = item[0]
            if kind == "frame":
                with self._backend_lock:
                    backend.write(item[1], item[2], item[3], item[4])
                self._frames_written += 1
                self._bytes_written += item[3].nbytes
                self._emit_coords(item[5])
                if item[6]:  # the pool's buffer
                    buffer = item[3]
            elif kind == "skip":
                with self._backend_lock:
                    for position_index, storage_index in item[1]:
                        backend.skip(position_index, storage_index)
                self._emit_coords(item[2])
            else:
                with self._backend_lock:
                    backend.set_global_metadata(item[1], item[2])
                    if backend.journal is not None:
                        backend.journal.global_metadata(item[1], item[2])
            self._raise_write_error()
        except BaseException as exc:  # kept and raised on the caller's thread
            self._error = exc
        return buffer

    def _raise_write_error(self) -> None:
        """Raise the error of a write in flight that failed, if one did,
        taking its frames off frames_written."""
        backend = self._backend
        if backend.write_error is not None:
            self._frames_lost = backend.frames_lost
            raise backend.write_error

    def _emit(self, signal: Any) -> None:
        # A failing listener must not stop the writing.
        with contextlib.suppress(Exception):
            signal.emit(self.stats())

    def _emit_coords(self, frame_number: int) -> None:
        """Coordinate events for the frames up to `frame_number`, written."""
        changed = self.events.coords_changed
        expanded = self.events.coords_expanded
        if not len(changed) and not len(expanded):
            return
        extents = self._loop.visited(frame_number + 1)
        grew = extents != self._written_extents
        self._written_extents = extents
        if not len(changed) and not grew:
            return
        dims = self._settings.dimensions
        loop_index = self._router.loop_index(frame_number)
        max_coords = {
            dim.name: coord_labels(dim, extent) for dim, extent in zip(dims, extents)
        }
        for dim in dims[-2:]:
            max_coords[dim.name] = range(dim.count or 0)
        update = CoordUpdate(
            max_coords=max_coords,
            current_indices={d.name: i for d, i in zip(dims, loop_index)},
            frame_number=frame_number,
            is_high_water_mark=grew,
        )
        with contextlib.suppress(Exception):
            changed.emit(update)
        if grew:
            with contextlib.suppress(Exception):
                expanded.emit(update)

    # ------------------------------------------------------- reading, events

    def view(self, *, dynamic_shape: bool = True, strict: bool = False) -> StreamView:
        """A live, numpy-indexable view of everything appended so far (see
        StreamView); also works after close."""
        return StreamView(self, dynamic_shape=dynamic_shape, strict=strict)

    def _frame_reader(self) -> Any:
        """A function: acquisition loop index -> frame (or None for zeros),
        seeing frames still queued as well as those in the backend."""
        queued: dict[tuple[int, tuple[int, ...]], np.ndarray | None] = {}
        for item in self._queue.snapshot():
            if item is _STOP:
                continue
            if item[0] == "frame":
                queued[(item[1], item[2])] = item[3]
            elif item[0] == "skip":
                for key in item[1]:
                    queued[key] = None
        locate = self._router.locate
        backend = self._backend
        lock = self._backend_lock

        def read(loop_index: tuple[int, ...]) -> np.ndarray | None:
            key = locate(loop_index)
            if key in queued:
                return queued[key]
            with lock:
                return backend.read_frame(*key)

        return read

    def on(self, event: str, callback: Any) -> Any:
        """Connect `callback` to one of the stream's events by name
        ("coords_changed", "coords_expanded", "progress", "finished");
        returns the callback. Disconnect with `off`."""
        self._signal(event).connect(callback)
        return callback

    def off(self, event: str, callback: Any) -> None:
        """Disconnect a callback connected with `on` (or events.<name>.connect)."""
        self._signal(event).disconnect(callback, missing_ok=True)

    def _signal(self, event: str) -> Any:
        if event not in EVENT_NAMES:
            raise ValueError(
                f"Unknown event {event!r}. Events: {', '.join(EVENT_NAMES)}."
            )
        return getattr(self.events, event)

    # ---------------------------------------------------------------- metadata

    def get_metadata(self) -> Any:
        """A copy of the format's metadata, to edit and pass to
        `update_metadata`. OME-Zarr: {group path: attributes} ("" is the
        root; per-frame metadata omitted). OME-TIFF: {file index:
        ome_types.OME} (-1: the companion file). In memory: {"global": ...,
        "frame_metadata": ..., "missing_frames": ...}."""
        with self._backend_lock:
            return self._backend.get_metadata()

    def update_metadata(self, metadata: Any) -> None:
        """Replace metadata in the form `get_metadata` returns, before or
        after close. It is checked first: nothing is changed when it is not
        valid for the data (TypeError/KeyError/ValueError saying why)."""
        self._check_own()
        if self._error is not None:
            self._check_usable()
        with self._backend_lock:
            self._backend.update_metadata(metadata)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Write everything queued, finish the metadata, release the files.

        Idempotent. Raises WriterError if writing failed (the output is still
        finished with what was written).
        """
        with self._close_lock:
            if self._closed:
                return
            self._queue.put(_STOP, 0, None)
            self._thread.join()
            journal = self._backend.journal
            unfinished: BaseException | None = None
            try:
                with self._backend_lock:
                    self._backend.close()
            except BaseException as exc:
                unfinished = exc
                if self._error is None:
                    self._error = exc
                if journal is not None:
                    journal.close()  # kept: `ome-stream recover` needs it
            else:
                if self._error is None:  # a write in flight failed at the end
                    self._error = self._backend.write_error
                if journal is not None:
                    journal.remove()  # complete; failed writes listed missing
            finally:
                self._frames_lost = self._backend.frames_lost
                self._closed = True
                _OPEN_STREAMS.discard(self)
                self._emit(self.events.finished)
        if unfinished is not None:
            # (raised even when an earlier failure was: the output is not
            # what that error said closing would make of it)
            self._error_reported = True
            kept = journal is not None and journal.path.is_file()
            raise WriterError(
                f"Closing {self.output_path} failed: {unfinished!r}"
                + (
                    ""
                    if unfinished is self._error
                    else f", after writing failed: {self._error!r}"
                )
                + f". {self.frames_written} frames were written; the output is "
                "not finished"
                + (
                    f": its journal is kept, and `ome-stream recover "
                    f"{self.output_path}` finishes it with the frames the "
                    "journal records, once the cause is mended (room on the "
                    "disk, say)."
                    if kept
                    else "."
                )
            ) from unfinished
        if self._error is not None and not self._error_reported:
            self._error_reported = True
            raise WriterError(
                f"Writing to {self.output_path} failed: {self._error!r}. The output "
                f"was closed with the {self.frames_written} frames written before."
            ) from self._error

    def __enter__(self) -> OMEStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # Do not hide the exception that is already propagating.
        with contextlib.suppress(WriterError):
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<OMEStream {state} {self.output_path} "
            f"frames={self._next_frame}/{self._num_frames or '∞'}>"
        )


_OPEN_STREAMS: weakref.WeakSet[OMEStream] = weakref.WeakSet()


def _forget_streams_in_child() -> None:
    """In a process forked while streams were open: they are its parent's
    (their writer threads are not here). Marked closed, never closed here
    (at exit, that finished the parent's output under it and removed its
    journal)."""
    parent = os.getppid()
    for stream in list(_OPEN_STREAMS):
        stream._forked_from = parent
        stream._closed = True
    _OPEN_STREAMS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_streams_in_child)


@atexit.register
def _close_open_streams() -> None:
    """Finish streams left open at interpreter exit so no queued frame is lost."""
    for stream in list(_OPEN_STREAMS):
        warnings.warn(
            f"{stream!r} was not closed; closing it at exit. Use `with "
            "create_stream(...) as stream:` or call stream.close().",
            ResourceWarning,
            stacklevel=1,
        )
        try:
            stream.close()
        except Exception as exc:  # nothing left to raise to at exit
            warnings.warn(f"closing {stream!r} failed: {exc!r}", stacklevel=1)


def create_stream(settings: AcquisitionSettings) -> OMEStream:
    """Create the output described by `settings` and return a stream to it.

    Raises FileExistsError if the output exists and `settings.overwrite` is
    False; BlockingIOError if another stream is still writing it; ValueError
    if dimensions or dtype are not set.
    """
    settings.validate_stream_ready()
    settings = settings.model_copy(deep=True)
    backend = create_backend(settings)
    problem = settings.ngff_order_problem()
    if problem is not None:
        warnings.warn(problem, UserWarning, stacklevel=2)
    journal = None
    if not isinstance(settings.format, ScratchFormat):
        # taken (locked) before anything is made: a stream still writing
        # there is refused, its files left alone
        output = settings.output_path
        if not settings.overwrite and (output.exists() or output.is_symlink()):
            # (as the backend would say: checked before the journal, which
            # a stream still writing there holds)
            raise FileExistsError(
                f"{output} already exists. Pass overwrite=True to replace it, "
                "or choose another root_path."
            )
        journal_file = journal_path(output)
        journal_file.parent.mkdir(parents=True, exist_ok=True)
        journal = Journal(journal_file)
        try:
            if settings.overwrite:
                backend.claim()  # (refuses what another stream holds)
            journal.clear()  # (a killed run it held is given up)
        except BaseException:
            backend.unclaim()
            journal.abandon()
            raise
    opened = False
    try:
        backend.open()
        opened = True
        if journal is not None:
            journal.start(settings.model_dump(mode="json"), backend.created)
            backend.journal = journal
        return OMEStream(settings, backend, FrameRouter(settings))
    except BaseException:
        if opened:  # (before the journal is let go: the output is still ours)
            with contextlib.suppress(Exception):
                backend.close()  # (an empty dataset, its files released)
        else:
            backend.unclaim()
        if journal is not None:
            journal.abandon()
        raise
