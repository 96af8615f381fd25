"""Whole uncompressed chunks written straight to their files (tensorstore
backend): the files are the chunks' bytes, other libraries read them, the
array's edge is padded, everything else still goes through tensorstore, a
failed write leaves no chunk behind, and `recover` clears interrupted ones."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ome_stream import (
    AcquisitionSettings,
    Dimension,
    WriterError,
    create_stream,
    recover,
)
from ome_stream._formats.zarr import chunkfiles
from ome_stream._formats.zarr.chunkfiles import writes_whole_chunks, writes_whole_shards
from ome_stream._formats.zarr.tensorstore import TensorStoreBackend
from ome_stream._journal import journal_path
from ome_stream._validate import validate_dataset
from tests import _readers as readers
from tests._cases import make_frame
from tests.test_recovery import _kill_while_writing

SHAPE = (24, 40)


@pytest.fixture(autouse=True)
def _small_chunks_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small frames keep these tests fast: let their chunks be written
    directly too (the size threshold has its own test)."""
    monkeypatch.setattr(chunkfiles, "MIN_DIRECT_CHUNK_BYTES", 0)


def _settings(
    root: Path,
    n_t: int | None = 3,
    t: dict[str, Any] | None = None,
    y: dict[str, Any] | None = None,
    **kw: Any,
) -> AcquisitionSettings:
    dims = [
        Dimension(name="t", count=n_t, **(t or {})),
        Dimension(name="c", coords=["DAPI", "GFP"]),
        Dimension(name="y", count=SHAPE[0], **(y or {})),
        Dimension(name="x", count=SHAPE[1]),
    ]
    return AcquisitionSettings(
        root_path=str(root), dimensions=dims, dtype=kw.pop("dtype", "uint16"), **kw
    )


def _partials(root: Path) -> list[Path]:
    return sorted(root.rglob("*.partial"))


def _tensorstore_writes(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The regions written through tensorstore from now on (the list fills)."""
    regions: list[Any] = []
    original = TensorStoreBackend._write_region

    def spy(self: Any, array: Any, region: Any, data: np.ndarray) -> Any:
        regions.append(region)
        return original(self, array, region, data)

    monkeypatch.setattr(TensorStoreBackend, "_write_region", spy)
    return regions


def disk_full_on(monkeypatch: pytest.MonkeyPatch, frame: np.ndarray) -> None:
    """From now on, the chunk or shard file write that starts with `frame`'s
    bytes puts 100 bytes in its file, then fails: the disk is full."""
    real_write = chunkfiles.os.write  # the os module's: every user's
    failing = frame.tobytes()[:64]

    def disk_full(fd: int, data: Any) -> int:
        if bytes(memoryview(data).cast("B")[:64]) == failing:
            real_write(fd, bytes(memoryview(data).cast("B")[:100]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(chunkfiles.os, "write", disk_full)


def append_then_close(stream: Any, count: int) -> None:
    """Append frames 0 to `count - 1`, then close (a write error surfaces in
    either)."""
    for i in range(count):
        stream.append(make_frame(i, shape=SHAPE))
    stream.close()


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "float64"])
def test_each_chunk_file_is_the_frames_little_endian_bytes(
    dtype: str, tmp_path: Path
) -> None:
    root = tmp_path / "a.ome.zarr"
    settings = _settings(root, dtype=dtype)
    assert writes_whole_chunks(settings)
    with create_stream(settings) as stream:
        for i in range(6):
            stream.append(make_frame(i, dtype, SHAPE))
    for i in range(6):
        t, c = divmod(i, 2)
        chunk = root / "0" / "c" / str(t) / str(c) / "0" / "0"
        expected = make_frame(i, dtype, SHAPE).astype(np.dtype(dtype).newbyteorder("<"))
        assert chunk.read_bytes() == expected.tobytes()
    assert _partials(root) == []
    expected_all = np.stack([make_frame(i, dtype, SHAPE) for i in range(6)])
    expected_all = expected_all.reshape(3, 2, *SHAPE)
    np.testing.assert_array_equal(readers.read_tensorstore(root / "0"), expected_all)
    np.testing.assert_array_equal(readers.read_zarr_python(root / "0"), expected_all)
    readers.validate_yaozarrs(root)
    assert validate_dataset(root) == []


def test_an_unbounded_axis_in_chunks_of_several_frames_pads_its_last_chunk(
    tmp_path: Path,
) -> None:
    """t chunks of 3 over 7 time points, one frame skipped, closed early: the
    last chunk is written whole (zeros past the end); readers see 7."""
    root = tmp_path / "a.ome.zarr"
    settings = _settings(root, n_t=None, t={"chunk_size": 3})
    assert writes_whole_chunks(settings)
    expected = np.zeros((7, 2, *SHAPE), np.uint16)
    with create_stream(settings) as stream:
        for i in range(13):  # the 14th frame never comes
            if i == 4:
                stream.skip(frames=1)
                continue
            stream.append(make_frame(i, shape=SHAPE))
            expected[divmod(i, 2)] = make_frame(i, shape=SHAPE)
    last = root / "0" / "c" / "2" / "0" / "0" / "0"
    assert last.stat().st_size == 3 * SHAPE[0] * SHAPE[1] * 2  # a whole chunk
    np.testing.assert_array_equal(readers.read_tensorstore(root / "0"), expected)
    np.testing.assert_array_equal(readers.read_zarr_python(root / "0"), expected)
    assert readers.zarr_missing_frames(root) == [(2, 0), (6, 1)]
    assert validate_dataset(root) == []


@pytest.mark.parametrize(
    "kw",
    [
        {"compression": "blosc-zstd"},
        {"t": {"shard_size_chunks": 3}, "compression": "blosc-zstd"},
        {"y": {"chunk_size": 8}},
        {"t": {"shard_size_chunks": 3}, "y": {"chunk_size": 8}},
    ],
    ids=[
        "compressed",
        "compressed-shards",
        "chunks-within-a-frame",
        "shards-of-chunks-within-a-frame",
    ],
)
def test_tensorstore_still_writes_what_is_not_whole_raw_chunks(
    kw: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "a.ome.zarr"
    settings = _settings(root, **kw)
    assert not writes_whole_chunks(settings)
    assert not writes_whole_shards(settings)
    regions = _tensorstore_writes(monkeypatch)
    with create_stream(settings) as stream:
        for i in range(6):
            stream.append(make_frame(i, shape=SHAPE))
    assert regions  # through tensorstore
    expected = np.stack([make_frame(i, shape=SHAPE) for i in range(6)])
    np.testing.assert_array_equal(
        readers.read_zarr_python(root / "0"), expected.reshape(3, 2, *SHAPE)
    )


def test_chunks_below_the_size_threshold_stay_with_tensorstore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # the real threshold
    threshold = chunkfiles.MIN_DIRECT_CHUNK_BYTES
    small = _settings(tmp_path / "small.ome.zarr")
    assert not writes_whole_chunks(small)
    # chunks of as many 24 x 40 uint16 frames along t as reach the threshold
    n_t = -(-threshold // (2 * SHAPE[0] * SHAPE[1]))
    large = _settings(tmp_path / "large.ome.zarr", n_t=n_t, t={"chunk_size": n_t})
    assert writes_whole_chunks(large)
    calls = _tensorstore_writes(monkeypatch)
    for settings, through_tensorstore in ((small, True), (large, False)):
        calls.clear()
        n_frames = 2 * (settings.dimensions[0].count or 0)
        with create_stream(settings) as stream:
            for i in range(n_frames):
                stream.append(make_frame(i, shape=SHAPE))
        assert bool(calls) == through_tensorstore
        data = readers.read_zarr_python(settings.output_path / "0")
        np.testing.assert_array_equal(
            data.reshape(-1, *SHAPE)[n_frames - 1],
            make_frame(n_frames - 1, shape=SHAPE),
        )


def test_whole_raw_chunks_do_not_go_through_tensorstore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("a whole raw chunk went through tensorstore")

    monkeypatch.setattr(TensorStoreBackend, "_write_region", refuse)
    root = tmp_path / "a.ome.zarr"
    with create_stream(_settings(root)) as stream:
        for i in range(6):
            stream.append(make_frame(i, shape=SHAPE))
    assert readers.read_tensorstore(root / "0").shape == (3, 2, *SHAPE)


def test_a_chunk_write_failing_half_way_leaves_no_chunk_and_reaches_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full in the middle of frame 3's chunk (chunks are written on
    several threads): the error reaches the caller; the chunks before it are
    intact; neither the failed chunk nor its temporary file is left."""
    disk_full_on(monkeypatch, make_frame(3, shape=SHAPE))
    root = tmp_path / "a.ome.zarr"
    stream = create_stream(_settings(root))
    with pytest.raises(WriterError, match="No space left on device"):
        append_then_close(stream, 6)
    stream.close()  # already reported: finishes quietly
    monkeypatch.undo()
    assert not (root / "0" / "c" / "1" / "1" / "0" / "0").exists()  # frame 3
    assert _partials(root) == []
    data = readers.read_tensorstore(root / "0")
    for i in range(3):
        np.testing.assert_array_equal(data[divmod(i, 2)], make_frame(i, shape=SHAPE))
    assert not data[1, 1].any()
    # the store is finished with what was written: frame 3 listed missing
    # (with whatever the writer dropped after noticing), not counted written
    missing = readers.zarr_missing_frames(root)
    assert missing[0] == (1, 1)
    assert stream.frames_written == 6 - len(missing)
    for t, c in np.ndindex(3, 2):
        if (t, c) not in missing:
            frame = make_frame(2 * t + c, shape=SHAPE)
            np.testing.assert_array_equal(data[t, c], frame)
    assert not journal_path(root).exists()
    assert validate_dataset(root) == []


def test_recover_removes_a_chunk_a_kill_interrupted(tmp_path: Path) -> None:
    root = tmp_path / "run.ome.zarr"
    _kill_while_writing(root, sharded=False, seed=7)
    chunk_dir = root / "0" / "c" / "0" / "0" / "0"
    assert (chunk_dir / "0").is_file()  # the first frame's chunk
    interrupted = chunk_dir / ".5.partial"  # as a kill during a write leaves it
    interrupted.write_bytes(b"\x01" * 100)
    recover(root)
    assert not interrupted.exists()
    assert _partials(root) == []
    assert validate_dataset(root) == []
    readers.validate_yaozarrs(root)


def test_stored_chunks_lists_chunk_keys_only(tmp_path: Path) -> None:
    """`stored_chunks` (what validate and recover read): the "default"
    chunk keys `c/<i>/<j>/<k>` of the array, each with its region; not
    temporaries, not names `int()` would also take, not chunks past the
    array's end, not directories where a chunk file belongs."""
    keys = ["0/0/0", "1/0/0", "+1/0/0", "01/0/0", " 1/0/0", "1_0/0/0", "²/0/0"]
    keys += ["2/0/.0.partial", "9/0/0", "4/1", "4/0/1"]
    for key in keys:
        path = tmp_path / "c" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (tmp_path / "c" / "3" / "0" / "0").mkdir(parents=True)
    found = sorted(
        (path.relative_to(tmp_path).as_posix(), region)
        for path, region in chunkfiles.stored_chunks(tmp_path, (1, 4, 4), (5, 4, 4))
    )
    whole = (slice(0, 4), slice(0, 4))
    assert found == [
        ("c/0/0/0", (slice(0, 1), *whole)),
        ("c/1/0/0", (slice(1, 2), *whole)),
    ]


@pytest.mark.parametrize(
    "t", [{"chunk_size": 3}, {"shard_size_chunks": 3}], ids=["chunks", "shards"]
)
def test_chunk_and_shard_files_are_written_in_pieces(
    t: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No system call writes more than WRITE_PIECE_BYTES of a chunk or shard
    file (large writes are slow on Linux VMs: see backend.py); the files
    still read back whole."""
    from ome_stream._formats import backend
    from ome_stream._formats.zarr import regions

    piece = 1000
    monkeypatch.setattr(backend, "WRITE_PIECE_BYTES", piece)
    monkeypatch.setattr(regions, "PAUSE_WRITE_S", 3600.0)  # (a stall: no pause write)
    temporaries: dict[int, list[int]] = {}  # fd: its writes' sizes
    files: list[list[int]] = []
    real_open, real_write = chunkfiles.os.open, chunkfiles.os.write
    real_close = chunkfiles.os.close

    def opening(path: Any, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, *args, **kwargs)
        if str(path).endswith(chunkfiles.PARTIAL_SUFFIX):
            temporaries[fd] = []
            files.append(temporaries[fd])
        return fd

    def writing(fd: int, data: Any) -> int:
        if fd in temporaries:
            temporaries[fd].append(len(memoryview(data).cast("B")))
        return real_write(fd, data)

    def closing(fd: int) -> None:
        temporaries.pop(fd, None)
        real_close(fd)

    monkeypatch.setattr(chunkfiles.os, "open", opening)
    monkeypatch.setattr(chunkfiles.os, "write", writing)
    monkeypatch.setattr(chunkfiles.os, "close", closing)
    root = tmp_path / "a.ome.zarr"
    settings = _settings(root, n_t=6, t=t)
    assert writes_whole_chunks(settings) or writes_whole_shards(settings)
    with create_stream(settings) as stream:
        for i in range(12):
            stream.append(make_frame(i, shape=SHAPE))
    monkeypatch.undo()
    block = 3 * SHAPE[0] * SHAPE[1] * 2  # three frames' bytes a file at least
    assert len(files) == 4  # 2 blocks along t x 2 channels
    for written in files:
        assert max(written) <= piece
        assert sum(written) >= block
    expected = np.stack([make_frame(i, shape=SHAPE) for i in range(12)])
    expected = expected.reshape(6, 2, *SHAPE)
    np.testing.assert_array_equal(readers.read_tensorstore(root / "0"), expected)
    np.testing.assert_array_equal(readers.read_zarr_python(root / "0"), expected)
    assert validate_dataset(root) == []
