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
from ome_stream._formats.zarr.chunkfiles import writes_whole_chunks
from ome_stream._formats.zarr.tensorstore import TensorStoreBackend
from ome_stream._validate import validate_dataset
from tests import _readers as readers
from tests._cases import make_frame
from tests.test_recovery import _kill_while_writing

SHAPE = (24, 40)


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
    attrs = readers.zarr_documents(root)[""]["attributes"]
    missing = sorted(map(tuple, attrs["ome_stream"]["missing_frames"]))
    assert missing == [(2, 0), (6, 1)]
    assert validate_dataset(root) == []


@pytest.mark.parametrize(
    "kw",
    [
        {"compression": "blosc-zstd"},
        {"t": {"shard_size_chunks": 3}},
        {"y": {"chunk_size": 8}},
    ],
    ids=["compressed", "sharded", "chunks-within-a-frame"],
)
def test_tensorstore_still_writes_what_is_not_whole_raw_chunks(
    kw: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "a.ome.zarr"
    settings = _settings(root, **kw)
    assert not writes_whole_chunks(settings)
    regions: list[Any] = []
    original = TensorStoreBackend._write_region

    def spy(self: Any, array: Any, region: Any, data: np.ndarray) -> Any:
        regions.append(region)
        return original(self, array, region, data)

    monkeypatch.setattr(TensorStoreBackend, "_write_region", spy)
    with create_stream(settings) as stream:
        for i in range(6):
            stream.append(make_frame(i, shape=SHAPE))
    assert regions  # through tensorstore
    expected = np.stack([make_frame(i, shape=SHAPE) for i in range(6)])
    np.testing.assert_array_equal(
        readers.read_zarr_python(root / "0"), expected.reshape(3, 2, *SHAPE)
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
    """Disk full in the middle of the 4th chunk: the error reaches the caller;
    the three chunks before it are intact; neither the failed chunk nor its
    temporary file is left."""
    real_write = chunkfiles.os.write  # the os module's: every user's
    calls = 0

    def disk_full(fd: int, data: Any) -> int:
        nonlocal calls
        if memoryview(data).nbytes != SHAPE[0] * SHAPE[1] * 2:
            return real_write(fd, data)  # not a chunk (the journal)
        calls += 1
        if calls == 4:
            real_write(fd, bytes(memoryview(data)[:100]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(chunkfiles.os, "write", disk_full)
    root = tmp_path / "a.ome.zarr"
    stream = create_stream(_settings(root))
    for i in range(6):
        stream.append(make_frame(i, shape=SHAPE))
    with pytest.raises(WriterError, match="No space left on device"):
        stream.close()
    monkeypatch.undo()
    assert stream.frames_written == 3
    assert not (root / "0" / "c" / "1" / "1" / "0" / "0").exists()  # frame 3
    assert _partials(root) == []
    data = readers.read_tensorstore(root / "0")
    for i in range(3):
        np.testing.assert_array_equal(data[divmod(i, 2)], make_frame(i, shape=SHAPE))


def test_recover_removes_a_chunk_a_kill_interrupted(tmp_path: Path) -> None:
    root = tmp_path / "run.ome.zarr"
    _kill_while_writing(root, sharded=False, seed=7)
    chunk_dir = root / "0" / "c" / "0" / "0" / "0"
    assert (chunk_dir / "0").is_file()  # the first frame was written directly
    interrupted = chunk_dir / ".5.partial"  # as a kill during a write leaves it
    interrupted.write_bytes(b"\x01" * 100)
    recover(root)
    assert not interrupted.exists()
    assert _partials(root) == []
    assert validate_dataset(root) == []
    readers.validate_yaozarrs(root)
