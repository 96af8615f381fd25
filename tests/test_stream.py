"""The stream: lifecycle, skip, early close, queue bounds, and every error
path, checking that data written before the error is intact."""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ome_stream import (
    AcquisitionSettings,
    BackpressureError,
    Dimension,
    WriterError,
    create_stream,
    dims_from_standard_axes,
)
from ome_stream._formats.memory import MemoryBackend
from ome_stream._formats.zarr.regions import RegionWriterBackend
from ome_stream._formats.zarr.tensorstore import TensorStoreBackend
from ome_stream._journal import journal_path, read_journal
from ome_stream._stream import QUEUE_ITEM_BYTES
from tests import _readers as readers
from tests._cases import FRAME, make_frame

SUFFIXES = [".ome.zarr", ".ome.tiff"]


def _settings(
    root: Path | str, sizes: dict[str, Any] | None = None, **kw: Any
) -> AcquisitionSettings:
    sizes = sizes or {"t": 2, "c": 3}
    dims = dims_from_standard_axes({**sizes, "y": FRAME[0], "x": FRAME[1]})
    return AcquisitionSettings(
        root_path=str(root), dimensions=dims, dtype="uint16", **kw
    )


def _read(settings: AcquisitionSettings) -> np.ndarray:
    return readers.read_single_image(settings.output_path)


def _planes(data: np.ndarray) -> np.ndarray:
    return data.reshape(-1, *FRAME)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_context_manager_closes_and_data_is_readable(
    suffix: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path / f"a{suffix}")
    with create_stream(settings) as stream:
        assert not stream.closed
        for i in range(6):
            stream.append(make_frame(i))
    assert stream.closed
    assert stream.frames_written == 6
    assert stream.output_path == settings.output_path
    want = np.stack([make_frame(i) for i in range(6)])
    np.testing.assert_array_equal(_planes(_read(settings)), want)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_metadata_keyword_is_accepted(suffix: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path / f"a{suffix}", {"t": 1})
    with create_stream(settings) as stream:
        stream.append(make_frame(0), metadata={"temperature": 37.0})
        with pytest.raises(TypeError, match="not both"):
            stream.append(make_frame(1), {"a": 1}, metadata={"b": 2})


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_wrong_shape_raises_and_earlier_frames_survive(
    suffix: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path / f"a{suffix}")
    with create_stream(settings) as stream:
        stream.append(make_frame(0))
        with pytest.raises(ValueError, match=r"Frame shape \(24, 41\) does not match"):
            stream.append(np.zeros((24, 41), np.uint16))
        with pytest.raises(ValueError, match="Frame shape"):
            stream.append(np.zeros((2, *FRAME), np.uint16))
        stream.append(make_frame(1))
    planes = _planes(_read(settings))
    np.testing.assert_array_equal(planes[0], make_frame(0))
    np.testing.assert_array_equal(planes[1], make_frame(1))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_wrong_dtype_raises_with_fix(suffix: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path / f"a{suffix}")
    with create_stream(settings) as stream:
        stream.append(make_frame(0))
        with pytest.raises(ValueError, match=r"astype\('uint16'\)"):
            stream.append(make_frame(1).astype(np.float64))
        stream.append(make_frame(1))
    np.testing.assert_array_equal(_planes(_read(settings))[1], make_frame(1))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_too_many_frames_raises_and_file_is_complete(
    suffix: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path / f"a{suffix}", {"t": 2})
    with create_stream(settings) as stream:
        stream.append(make_frame(0))
        stream.append(make_frame(1))
        with pytest.raises(IndexError, match="exceed the total of 2 frames"):
            stream.append(make_frame(2))
    np.testing.assert_array_equal(
        _planes(_read(settings)), np.stack([make_frame(0), make_frame(1)])
    )


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_non_json_metadata_raises_at_append(suffix: str, tmp_path: Path) -> None:
    import datetime

    settings = _settings(tmp_path / f"a{suffix}")
    with create_stream(settings) as stream:
        stream.append(make_frame(0), {"ok": 1})
        with pytest.raises(TypeError, match="JSON-serializable at key 'when'"):
            stream.append(make_frame(1), {"when": datetime.datetime.now()})
        with pytest.raises(TypeError, match="NaN"):
            stream.append(make_frame(1), {"value": float("nan")})
        with pytest.raises(TypeError, match="must be a dict"):
            stream.append(make_frame(1), ["not", "a", "dict"])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="'storage_index' is reserved"):
            stream.append(make_frame(1), {"storage_index": 3})
        stream.append(make_frame(1), {"numpy": np.float32(1.5), "arr": np.arange(2)})
    assert stream.frames_written == 2


def test_numpy_metadata_is_stored_as_json_numbers(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "a.ome.zarr", {"t": 1})
    with create_stream(settings) as stream:
        stream.append(make_frame(0), {"gain": np.int64(3), "xy": np.array([1.5, 2.5])})
    attrs = json.loads((settings.output_path / "zarr.json").read_text())["attributes"]
    assert attrs["ome_stream"]["frame_metadata"] == [
        {"gain": 3, "xy": [1.5, 2.5], "storage_index": [0]}
    ]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_existing_output_needs_overwrite(suffix: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path / f"a{suffix}", {"t": 1})
    with create_stream(settings) as stream:
        stream.append(make_frame(7))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        create_stream(settings)
    # the earlier data is untouched
    np.testing.assert_array_equal(_planes(_read(settings))[0], make_frame(7))
    again = settings.model_copy(update={"overwrite": True})
    with create_stream(again) as stream:
        stream.append(make_frame(8))
    np.testing.assert_array_equal(_planes(_read(settings))[0], make_frame(8))


def test_overwrite_refuses_to_delete_a_non_zarr_directory(tmp_path: Path) -> None:
    target = tmp_path / "precious.zarr"
    target.mkdir()
    (target / "thesis.txt").write_text("do not delete")
    settings = _settings(target, {"t": 1}, overwrite=True)
    with pytest.raises(FileExistsError, match="not a zarr store"):
        create_stream(settings)
    assert (target / "thesis.txt").read_text() == "do not delete"


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_append_after_close_raises(suffix: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path / f"a{suffix}", {"t": 1})
    stream = create_stream(settings)
    stream.append(make_frame(0))
    stream.close()
    stream.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        stream.append(make_frame(1))
    with pytest.raises(RuntimeError, match="closed"):
        stream.skip()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_skip_leaves_zero_frames_and_later_frames_land_in_place(
    suffix: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path / f"a{suffix}", {"t": 2, "c": 3})
    with create_stream(settings) as stream:
        stream.append(make_frame(0))
        stream.skip(frames=2)
        for i in range(3, 6):
            stream.append(make_frame(i))
        with pytest.raises(ValueError, match="positive"):
            stream.skip(frames=0)
        with pytest.raises(IndexError, match="Cannot skip 1 frame"):
            stream.skip(frames=1)
    planes = _planes(_read(settings))
    np.testing.assert_array_equal(planes[0], make_frame(0))
    assert not planes[1].any()
    assert not planes[2].any()
    for i in range(3, 6):
        np.testing.assert_array_equal(planes[i], make_frame(i))
    assert stream.frames_skipped == 2


def test_tiff_skips_are_recorded_as_missing_planes(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "a.ome.tiff", {"t": 2, "c": 3})
    with create_stream(settings) as stream:
        stream.append(make_frame(0))
        stream.skip(frames=2)
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(settings.output_path))
    (annotation,) = ome.structured_annotations.map_annotations
    values = {m.k: m.value for m in annotation.value.ms}
    # skipped (c=1, c=2 at t=0); the stream closed after t=0, so nothing padded
    assert json.loads(values["missing_planes_zct"]) == [[0, 1, 0], [0, 2, 0]]
    assert ome.images[0].pixels.size_t == 1


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_early_close_gives_consistent_metadata(suffix: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path / f"a{suffix}", {"t": 4, "c": 3})
    with create_stream(settings) as stream:
        for i in range(5):  # t=0 complete, t=1 has c=0, c=1
            stream.append(make_frame(i))
    data = _read(settings)
    if suffix == ".ome.tiff":
        ome = readers.validate_ome_xml(readers.tiff_ome_xml(settings.output_path))
        pixels = ome.images[0].pixels
        # trimmed to what was acquired; the rest of t=1 padded and recorded
        assert (pixels.size_t, pixels.size_c) == (2, 3)
        assert pixels.tiff_data_blocks[0].plane_count == 6
        assert data.shape == (6, *FRAME)
        info = readers.bioformats_info(settings.output_path)
        assert info.is_ome_tiff
        assert info.warnings == []
        assert info.series[0].size_t == 2
    else:
        assert data.shape == (4, 3, *FRAME)  # declared shape kept, fill value 0
    planes = _planes(data)
    for i in range(5):
        np.testing.assert_array_equal(planes[i], make_frame(i))
    assert not planes[5:].any()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_empty_stream_is_still_a_valid_dataset(suffix: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path / f"empty{suffix}", {"t": 3, "c": 2})
    create_stream(settings).close()
    if suffix == ".ome.tiff":
        ome = readers.validate_ome_xml(readers.tiff_ome_xml(settings.output_path))
        assert ome.images[0].pixels.size_t == 1
        info = readers.bioformats_info(settings.output_path)
        assert info.is_ome_tiff
        assert info.warnings == []
    else:
        readers.validate_yaozarrs(settings.output_path)
        assert not _read(settings).any()


# ------------------------------------------------------------ writer failure


class _FailingBackend(MemoryBackend):
    """Fails on the n-th write, like a disk filling up."""

    fail_at = 3

    def write(
        self,
        position_index: int,
        storage_index: tuple[int, ...],
        frame: np.ndarray,
        frame_metadata: dict[str, Any] | None,
    ) -> None:
        if self.fail_at == 0:
            raise OSError(28, "No space left on device")
        self.fail_at -= 1
        super().write(position_index, storage_index, frame, frame_metadata)


def _memory_stream(
    monkeypatch: pytest.MonkeyPatch, backend_cls: type, **kw: Any
) -> Any:
    import ome_stream._stream as stream_module

    monkeypatch.setattr(stream_module, "create_backend", backend_cls)
    return create_stream(_settings("", {"t": 10}, **kw))


def _queue_charge(frame_bytes: int, count: int = 1) -> int:
    """What `count` frames without metadata take of max_queue_bytes."""
    return count * (frame_bytes + QUEUE_ITEM_BYTES)


def test_writer_failure_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _memory_stream(monkeypatch, _FailingBackend)
    for i in range(4):  # the 4th write fails in the writer thread
        stream.append(make_frame(i))
    deadline = time.monotonic() + 10
    while stream.queued_bytes and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(WriterError, match="No space left on device") as info:
        stream.append(make_frame(4))
    assert isinstance(info.value.__cause__, OSError)
    assert stream.frames_written == 3
    stream.close()  # already reported: finishes quietly
    arrays = stream._backend.arrays[0]
    for i in range(3):
        np.testing.assert_array_equal(arrays[i], make_frame(i))


def test_writer_failure_raised_by_close_if_not_yet_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = _memory_stream(monkeypatch, _FailingBackend)
    for i in range(4):  # the 4th write fails, after append has returned
        stream.append(make_frame(i))
    with pytest.raises(WriterError, match="closed with the 3 frames written"):
        stream.close()
    assert stream.closed


class _IdleFailingBackend(MemoryBackend):
    """Fails when the writer, idle, has it journal what it deferred (the
    journal's disk full during a pause)."""

    def idle(self) -> float | None:
        raise OSError(28, "No space left on device")


def test_a_failure_while_idle_reaches_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = _memory_stream(monkeypatch, _IdleFailingBackend)
    stream.append(make_frame(0))
    stream.append(make_frame(1))
    deadline = time.monotonic() + 10
    while stream._error is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the writer goes idle ~20 ms after the last frame
    with pytest.raises(WriterError, match="No space left on device"):
        stream.append(make_frame(2))
    assert stream.frames_written == 2
    stream.close()  # already reported: finishes quietly
    for i in range(2):
        np.testing.assert_array_equal(stream._backend.arrays[0][i], make_frame(i))


class _SlowBackend(MemoryBackend):
    gate = threading.Event()

    def write(self, *args: Any) -> None:
        self.gate.wait(10)
        super().write(*args)


class _GatedFailingBackend(_SlowBackend, _FailingBackend):
    """Holds the first write until the gate opens, so that the frames queued
    meanwhile reach the writer in one batch; then fails on the 4th."""


def test_a_failure_inside_a_batch_keeps_the_frames_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _GatedFailingBackend.gate = threading.Event()
    stream = _memory_stream(monkeypatch, _GatedFailingBackend)
    for i in range(8):
        stream.append(make_frame(i))
    assert stream.stats().frames_queued >= 7  # waiting behind the gate
    _GatedFailingBackend.gate.set()
    with pytest.raises(WriterError, match="closed with the 3 frames written"):
        stream.close()
    assert stream.frames_written == 3
    arrays = stream._backend.arrays[0]
    for i in range(3):
        np.testing.assert_array_equal(arrays[i], make_frame(i))
    assert not arrays[3:].any()  # nothing after the failed frame was written


def test_full_queue_times_out_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame_bytes = make_frame(0).nbytes
    _SlowBackend.gate = threading.Event()
    stream = _memory_stream(
        monkeypatch,
        _SlowBackend,
        max_queue_bytes=_queue_charge(frame_bytes, 3),
        append_timeout=0.2,
    )
    for i in range(3):  # the bound counts the frame being written too
        stream.append(make_frame(i))
    assert stream.queued_bytes == _queue_charge(frame_bytes, 3)
    with pytest.raises(BackpressureError, match="max_queue_bytes"):
        stream.append(make_frame(3))
    _SlowBackend.gate.set()
    stream.append(make_frame(3))  # nothing was lost; the stream carries on
    stream.close()
    arrays = stream._backend.arrays[0]
    for i in range(4):
        np.testing.assert_array_equal(arrays[i], make_frame(i))


class _PacedBackend(MemoryBackend):
    """A slow disk: 50 ms a frame."""

    def write(self, *args: Any) -> None:
        time.sleep(0.05)
        super().write(*args)


def test_a_slow_backend_frees_room_after_each_write_not_each_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer takes up to 32 queued frames at once; with 50 ms a frame,
    an `append` waiting for room must get it after about one write (well
    within its 1 s timeout), not after the whole batch (1.6 s)."""
    import ome_stream._stream as stream_module

    monkeypatch.setattr(stream_module, "create_backend", _PacedBackend)
    frame_bytes = make_frame(0).nbytes
    settings = _settings(
        "",
        {"t": 40},
        max_queue_bytes=_queue_charge(frame_bytes, 34),
        append_timeout=1.0,
    )
    with create_stream(settings) as stream:
        for i in range(40):  # from the 35th on, each waits for room
            stream.append(make_frame(i))
    arrays = stream._backend.arrays[0]
    for i in range(40):
        np.testing.assert_array_equal(arrays[i], make_frame(i))


def test_the_bound_counts_zarr_writes_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compressed chunks of 8 frames along t: the writer hands each block to
    tensorstore and holds it until written. Queue plus writes in flight never
    pass max_queue_bytes; every frame lands."""
    frame_bytes = make_frame(0).nbytes
    bound = 12 * frame_bytes  # a block is 8 frames
    dims = [
        Dimension(name="t", count=48, chunk_size=8),
        Dimension(name="y", count=FRAME[0]),
        Dimension(name="x", count=FRAME[1]),
    ]
    settings = AcquisitionSettings(
        root_path=str(tmp_path / "held.ome.zarr"),
        dimensions=dims,
        dtype="uint16",
        compression="zstd",
        max_queue_bytes=bound,
    )
    store = RegionWriterBackend._store
    write_region = TensorStoreBackend._write_region

    def slow_store(self: Any, *args: Any) -> None:
        time.sleep(0.002)  # a slow disk: the queue fills
        store(self, *args)

    def slow_write(self: Any, *args: Any) -> Any:
        return _Later(write_region(self, *args))  # done only when awaited

    monkeypatch.setattr(RegionWriterBackend, "_store", slow_store)
    monkeypatch.setattr(TensorStoreBackend, "_write_region", slow_write)
    used: list[tuple[int, int, int]] = []
    with create_stream(settings) as stream:
        queue = stream._queue
        for i in range(48):
            stream.append(make_frame(i))
            used.append((queue.queued_bytes, queue.held_bytes, len(queue)))
    assert max(held for _, held, _ in used) >= 8 * frame_bytes  # a block held
    over = [(q, h) for q, h, n in used if n > 1 and q + h > bound]
    assert over == []
    data = readers.read_tensorstore(settings.output_path / "0")
    for i in range(48):
        np.testing.assert_array_equal(data[i], make_frame(i))


class _Later:
    """A write's completion that reports not done until its result is
    awaited, so the writer keeps it in flight."""

    def __init__(self, future: Any) -> None:
        self._future = future

    def done(self) -> bool:
        return False

    def result(self) -> Any:
        return self._future.result()


class _Gated:
    """A write's completion that is done only once `gate` is set (a write
    held up by the disk)."""

    def __init__(self, future: Any, gate: threading.Event) -> None:
        self._future = future
        self._gate = gate

    def done(self) -> bool:
        return self._gate.is_set()

    def result(self) -> Any:
        self._gate.wait(10)
        return self._future.result()


def test_a_write_completing_in_a_pause_is_journaled_then_polling_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    write_region = TensorStoreBackend._write_region
    idle = RegionWriterBackend.idle
    waits: list[float | None] = []

    def held_write(self: Any, *args: Any) -> Any:
        return _Gated(write_region(self, *args), gate)

    def recorded_idle(self: Any) -> float | None:
        waits.append(idle(self))
        return waits[-1]

    monkeypatch.setattr(TensorStoreBackend, "_write_region", held_write)
    monkeypatch.setattr(RegionWriterBackend, "idle", recorded_idle)
    settings = _settings(tmp_path / "held.ome.zarr", {"t": 4})
    journal = journal_path(settings.output_path)
    with create_stream(settings) as stream:
        started = time.monotonic()
        stream.append(make_frame(0))
        time.sleep(0.5)  # the write is held: polled less and less often
        assert read_journal(journal).frames == {}
        held = time.monotonic() - started
        assert 5 <= len(waits) <= 6 + held / 0.1  # (every 5 ms: ~100)
        assert waits[:3] == [0.005, 0.01, 0.02]
        assert max(w for w in waits if w is not None) == 0.1
        gate.set()
        deadline = time.monotonic() + 5
        while waits[-1] is not None:
            assert time.monotonic() < deadline, "the completed write was not seen"
            time.sleep(0.01)
        assert list(read_journal(journal).frames) == [(0, (0,))]
        calls = len(waits)
        time.sleep(0.3)
        assert len(waits) == calls  # nothing in flight: no more polling
    np.testing.assert_array_equal(_read(settings)[0], make_frame(0))


def test_memory_format_keeps_arrays_and_metadata() -> None:
    settings = AcquisitionSettings(
        dimensions=[
            Dimension(name="t", count=None),
            Dimension(name="c", count=2),
            Dimension(name="y", count=FRAME[0]),
            Dimension(name="x", count=FRAME[1]),
        ],
        dtype="uint16",
    )
    with create_stream(settings) as stream:
        for i in range(5):
            stream.append(make_frame(i), {"i": i})
    backend = stream._backend
    assert isinstance(backend, MemoryBackend)
    (array,) = backend.arrays
    assert array.shape == (3, 2, *FRAME)
    np.testing.assert_array_equal(array[2, 0], make_frame(4))
    assert [r.metadata["i"] for r in backend.frame_metadata[0]] == list(range(5))


def test_global_metadata_reserved_namespaces(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "g.ome.zarr", {"t": 1})
    with create_stream(settings) as stream:
        for namespace in ("ome", "ome_stream", ""):
            with pytest.raises(ValueError, match=r"reserved|non-empty"):
                stream.set_global_metadata(namespace, {})
        with pytest.raises(TypeError, match="JSON"):
            stream.set_global_metadata("x", {"bad": object()})
        stream.append(make_frame(0))


def test_zarr_records_skipped_and_never_arrived_frames(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "m.ome.zarr", {"t": 3, "c": 2})
    with create_stream(settings) as stream:
        stream.append(make_frame(0))
        stream.skip(frames=1)
        stream.append(make_frame(2))
    missing = readers.zarr_missing_frames(settings.output_path)
    assert missing == [(0, 1), (1, 1), (2, 0), (2, 1)]
    section = readers.zarr_document(settings.output_path)["attributes"]["ome_stream"]
    assert section["missing_frame_ranges"] == [[[0, 1], [0, 1]], [[1, 1], [2, 1]]]
    data = _read(settings)
    np.testing.assert_array_equal(data[1, 0], make_frame(2))
    assert not data[0, 1].any()


def test_stats_and_progress_signals(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "s.ome.zarr", {"t": 20})
    stream = create_stream(settings)
    seen: list[Any] = []
    finished: list[Any] = []
    stream.events.progress.connect(seen.append)
    stream.events.finished.connect(finished.append)
    for i in range(10):
        stream.append(make_frame(i))
    stream.skip(frames=2)
    time.sleep(0.3)  # progress is emitted at most every 0.2 s
    stream.append(make_frame(12))
    stream.close()
    (final,) = finished
    assert final.frames_appended == 13
    assert final.frames_written == 11
    assert final.frames_skipped == 2
    assert final.frames_queued == 0
    assert final.bytes_written == 11 * make_frame(0).nbytes
    assert final.mb_per_s > 0
    assert seen
    assert all(s.frames_written <= 11 for s in seen)
    assert stream.stats().frames_written == 11


def test_progress_reports_a_burst_during_the_pause_after_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "p.ome.tiff", {"t": 400})
    seen: list[tuple[float, Any]] = []
    with create_stream(settings) as stream:
        stream.events.progress.connect(lambda s: seen.append((time.monotonic(), s)))
        for burst in range(3):  # bursts shorter than the progress interval
            for i in range(100):
                stream.append(make_frame(100 * burst + i))
            deadline = time.monotonic() + 5
            while not seen or seen[-1][1].frames_written < 100 * (burst + 1):
                assert time.monotonic() < deadline, "no progress after the burst"
                time.sleep(0.01)
            time.sleep(0.25)
        assert [s.frames_written for _, s in seen][-1] == 300
    times = [t for t, _ in seen]
    # at most 5/s (stamped in the callbacks, which may run a little late)
    assert all(b - a >= 0.15 for a, b in itertools.pairwise(times))
    # nothing new to report during the pauses: no signal repeated the counts
    assert len({s.frames_written for _, s in seen}) == len(seen)


class _SlowDiskBackend(MemoryBackend):
    """Takes 2 ms per frame and keeps nothing (a slow disk)."""

    def write(self, *args: Any) -> None:
        time.sleep(0.002)


def test_memory_stays_within_the_queue_bound_with_a_slow_disk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tracemalloc

    import ome_stream._stream as stream_module

    frame = np.ones((512, 512), np.uint16)  # 0.5 MB
    bound = 8 * frame.nbytes
    monkeypatch.setattr(stream_module, "create_backend", _SlowDiskBackend)
    settings = AcquisitionSettings(
        dimensions=dims_from_standard_axes({"t": None, "y": 512, "x": 512}),
        dtype="uint16",
        max_queue_bytes=bound,
        append_timeout=None,
    )
    stream = create_stream(settings)
    tracemalloc.start()
    try:
        for _ in range(200):  # 100 MB offered, far faster than the "disk"
            stream.append(frame)
            assert stream.queued_bytes <= bound
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        stream.close()
    assert peak < bound + 4 * frame.nbytes
    assert stream.frames_written == 200


def test_tiny_frames_with_metadata_stay_within_the_queue_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bound counts what a queued frame really costs: for an 8 x 8 frame
    its metadata and the objects carrying it are most of it."""
    import tracemalloc

    import ome_stream._stream as stream_module

    bound = 2**20
    monkeypatch.setattr(stream_module, "create_backend", _SlowBackend)
    _SlowBackend.gate = threading.Event()  # the writer blocks on the first frame
    settings = AcquisitionSettings(
        dimensions=dims_from_standard_axes({"t": None, "y": 8, "x": 8}),
        dtype="uint16",
        max_queue_bytes=bound,
        append_timeout=0,
    )
    stream = create_stream(settings)
    metadata = {"camera": "Camera", "note": "x" * 200, "delta_t": 0.5}
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        queued = 0
        full = False
        while not full:  # until the queue is full
            frame = np.full((8, 8), queued, np.uint16)  # fresh, as a camera's
            try:
                stream.append(frame, frame_metadata={**metadata, "i": queued})
            except BackpressureError:
                full = True
            else:
                queued += 1
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        _SlowBackend.gate.set()
        stream.close()
    assert stream.queued_bytes == 0
    assert stream.frames_written == queued
    assert queued > 500  # (the bound was not refused at the first frames)
    assert held - before < bound + 128 * 1024


def test_skip_and_global_metadata_never_wait_for_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """They are counted against the bound, but queued at once even when it
    is full (the pymmcore-plus handler records the acquisition's status,
    and fills gaps, that way)."""
    import ome_stream._stream as stream_module

    monkeypatch.setattr(stream_module, "create_backend", _SlowBackend)
    _SlowBackend.gate = threading.Event()
    frame_bytes = make_frame(0).nbytes
    stream = create_stream(
        _settings(
            "",
            {"t": 10},
            max_queue_bytes=_queue_charge(frame_bytes, 2),
            append_timeout=0,
        )
    )
    try:
        stream.append(make_frame(0))
        stream.append(make_frame(1))
        with pytest.raises(BackpressureError):
            stream.append(make_frame(2))
        stream.skip(frames=3)
        stream.set_global_metadata("status", {"state": "paused"})
        assert stream.queued_bytes > _queue_charge(frame_bytes, 2)  # counted
        with pytest.raises(BackpressureError):  # the frames wait the longer
            stream.append(make_frame(5))
    finally:
        _SlowBackend.gate.set()
    deadline = time.monotonic() + 10
    while stream.queued_bytes and time.monotonic() < deadline:
        time.sleep(0.01)  # (append_timeout=0: room must be there first)
    stream.append(make_frame(5))
    stream.close()
    assert stream.frames_written == 3
    assert stream.frames_skipped == 3
    backend = stream._backend
    np.testing.assert_array_equal(backend.arrays[0][5], make_frame(5))
    assert backend.get_metadata()["global"]["status"] == {"state": "paused"}


def _deep_size(value: Any, seen: set[int] | None = None) -> int:
    """Bytes of Python objects `value` holds (containers, slots), each once."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        parts = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        slots = getattr(type(value), "__slots__", ())
        parts = [getattr(value, name) for name in slots if hasattr(value, name)]
    return size + sum(_deep_size(part, seen) for part in parts)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_frame_metadata_is_kept_compactly_for_the_whole_run(
    suffix: str, tmp_path: Path
) -> None:
    """Every frame's metadata is kept until close (for the final metadata),
    so it must cost little per frame: the hardware metadata pymmcore-plus
    gives (~260 bytes of JSON) is kept as its JSON text, not as dicts
    (~2.2 KB a frame of records before), and read back exactly."""

    def hardware(number: int) -> dict[str, Any]:
        return {
            "delta_t": number * 0.1,
            "exposure_time": 0.01,
            "position_x": 1.5,
            "position_y": 2.5,
            "position_z": 3.0,
            "camera_device": "Camera",
            "pixel_size_um": 0.65,
            "property_values": [{"dev": "Filter", "prop": "Label", "val": "DAPI"}],
            "event_index": {"t": number, "p": 0, "c": 0},
            "channel": "DAPI",
        }

    n = 2000
    frame = np.zeros((8, 8), np.uint16)
    settings = AcquisitionSettings(
        root_path=str(tmp_path / f"m{suffix}"),
        dimensions=dims_from_standard_axes({"t": None, "y": 8, "x": 8}),
        dtype="uint16",
    )
    with create_stream(settings) as stream:
        for number in range(n):
            stream.append(frame, hardware(number), copy=False)
        deadline = time.monotonic() + 60
        while stream.frames_written < n:
            assert time.monotonic() < deadline, "the writer is stuck"
            time.sleep(0.01)
        with stream._backend_lock:
            records = list(stream._backend._images[0].records)
        assert len(records) == n
        held = _deep_size(records) - sys.getsizeof(records)
        assert held / n < 700  # bytes a frame
    if suffix == ".ome.zarr":
        section = readers.zarr_document(settings.output_path)["attributes"]
        written = section["ome_stream"]["frame_metadata"]
        assert [r.pop("storage_index") for r in written] == [[i] for i in range(n)]
        assert written == [hardware(i) for i in range(n)]
    else:
        ome = readers.validate_ome_xml(readers.tiff_ome_xml(settings.output_path))
        planes = ome.images[0].pixels.planes
        assert len(planes) == n
        assert planes[-1].delta_t == pytest.approx((n - 1) * 0.1)
        assert planes[-1].position_z == pytest.approx(3.0)


def _until(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


@pytest.mark.parametrize("suffix", [".ome.tiff", ".ome.zarr"])
def test_frames_on_disk_counts_what_a_kill_would_keep(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stats().frames_on_disk` counts the frames in the files and in the
    journal - what `recover` keeps if the process dies now -, apart from
    frames_written, which counts frames still in a chunk being filled:
    OME-Zarr chunks of 10 frames hold 5 frames written, none on disk,
    until the block is written; OME-TIFF pages are on disk once
    journaled. Equal to frames_written once closed; the progress signal
    carries it."""
    import ome_stream._formats.zarr.regions as regions

    monkeypatch.setattr(regions, "PAUSE_WRITE_S", 3600.0)  # (no pause write)
    chunked = suffix == ".ome.zarr"
    settings = AcquisitionSettings(
        root_path=str(tmp_path / f"safe{suffix}"),
        dimensions=[
            Dimension(name="t", count=20, chunk_size=10 if chunked else None),
            Dimension(name="y", count=FRAME[0]),
            Dimension(name="x", count=FRAME[1]),
        ],
        dtype="uint16",
    )
    seen: list[Any] = []
    stream = create_stream(settings)
    stream.events.progress.connect(seen.append)
    for i in range(5):
        stream.append(make_frame(i))
    _until(lambda: stream.stats().frames_written == 5)
    journal = journal_path(settings.output_path)
    if chunked:
        time.sleep(0.1)  # (the writer idles: nothing more is written)
        assert stream.stats().frames_on_disk == 0
        assert read_journal(journal).frames == {}
    else:
        _until(lambda: stream.stats().frames_on_disk == 5)
        assert stream.stats().frames_on_disk == 5
        assert len(read_journal(journal).frames) == 5
    for i in range(5, 12):  # (the first chunk fills, and is written)
        stream.append(make_frame(i))
    expected = 10 if chunked else 12
    _until(lambda: stream.stats().frames_on_disk == expected)
    assert stream.stats().frames_on_disk == expected
    assert len(read_journal(journal).frames) == expected
    _until(lambda: bool(seen))  # (at most every 0.2 s, and at a pause)
    finished: list[Any] = []
    stream.events.finished.connect(finished.append)
    stream.close()
    assert stream.stats().frames_on_disk == stream.frames_written == 12
    assert seen  # (progress carried it, never ahead of what was written)
    assert all(s.frames_on_disk <= s.frames_written for s in seen)
    assert [s.frames_on_disk for s in finished] == [12]
