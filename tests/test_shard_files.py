"""Uncompressed shards of whole frames written straight to their files
(tensorstore backend): each shard file is its inner chunks then the index
with its CRC-32C, readers that check the checksum read them, inner chunks
past the array's end are not stored, a partial inner chunk is padded, a
failed write leaves no shard behind, and `recover` clears interrupted ones."""

from __future__ import annotations

import os
import struct
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
from ome_stream._validate import validate_dataset
from tests import _readers as readers
from tests._cases import make_frame
from tests.test_chunk_files import append_then_close, disk_full_on
from tests.test_recovery import LARGE, _kill_while_writing

SHAPE = (24, 40)
NOT_STORED = 2**64 - 1


def _refuse_tensorstore_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("a whole raw shard went through tensorstore")

    monkeypatch.setattr(TensorStoreBackend, "_write_region", refuse)


@pytest.fixture(autouse=True)
def _small_shards_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every shard here is written directly, small ones too (the size
    threshold has its own test): tensorstore only creates, resizes and
    reads the arrays."""
    monkeypatch.setattr(chunkfiles, "MIN_DIRECT_CHUNK_BYTES", 0)
    _refuse_tensorstore_writes(monkeypatch)


def _settings(
    root: Path, dims: list[Dimension], dtype: str = "uint16"
) -> AcquisitionSettings:
    dims += [Dimension(name="y", count=SHAPE[0]), Dimension(name="x", count=SHAPE[1])]
    settings = AcquisitionSettings(root_path=str(root), dimensions=dims, dtype=dtype)
    assert writes_whole_shards(settings)
    assert not writes_whole_chunks(settings)
    return settings


def _index(shard: Path, cells: int) -> list[tuple[int, int]]:
    """(offset, length) of each inner chunk, read from the end of the shard
    file by the sharding codec's layout (little-endian uint64 pairs, then a
    4-byte checksum)."""
    data = shard.read_bytes()
    raw = data[-(16 * cells + 4) : -4]
    values = struct.unpack(f"<{2 * cells}Q", raw)
    return [(values[2 * i], values[2 * i + 1]) for i in range(cells)]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float64"])
def test_each_shard_file_is_its_frames_then_the_index(
    dtype: str, tmp_path: Path
) -> None:
    """t in shards of 3 frames over 7 time points, 2 channels: the shard
    files hold the frames' little-endian bytes in t order; the last shard
    stores its one frame and marks the two past the array's end as not
    stored; tensorstore and zarr-python (which check the index's CRC-32C)
    read every frame back."""
    root = tmp_path / "a.ome.zarr"
    dims = [
        Dimension(name="t", count=7, shard_size_chunks=3),
        Dimension(name="c", coords=["DAPI", "GFP"]),
    ]
    with create_stream(_settings(root, dims, dtype)) as stream:
        for i in range(14):
            stream.append(make_frame(i, dtype, SHAPE))
    frame_bytes = SHAPE[0] * SHAPE[1] * np.dtype(dtype).itemsize
    little = np.dtype(dtype).newbyteorder("<")
    for shard_t in range(3):
        for c in range(2):
            shard = root / "0" / "c" / str(shard_t) / str(c) / "0" / "0"
            ts = [t for t in range(3 * shard_t, 3 * shard_t + 3) if t < 7]
            pixels = b"".join(
                make_frame(2 * t + c, dtype, SHAPE).astype(little).tobytes() for t in ts
            )
            assert shard.read_bytes()[: len(pixels)] == pixels
            expected_index = [(n * frame_bytes, frame_bytes) for n in range(len(ts))]
            expected_index += [(NOT_STORED, NOT_STORED)] * (3 - len(ts))
            assert _index(shard, 3) == expected_index
            assert shard.stat().st_size == len(pixels) + 3 * 16 + 4
    expected = np.stack([make_frame(i, dtype, SHAPE) for i in range(14)])
    expected = expected.reshape(7, 2, *SHAPE)
    np.testing.assert_array_equal(readers.read_tensorstore(root / "0"), expected)
    np.testing.assert_array_equal(readers.read_zarr_python(root / "0"), expected)
    assert list(root.rglob("*.partial")) == []
    readers.validate_yaozarrs(root)
    assert validate_dataset(root) == []


def test_a_corrupted_index_is_refused_by_the_readers(tmp_path: Path) -> None:
    """The checksum is real: one flipped bit in a shard's index and
    tensorstore and zarr-python refuse to read the shard (so both checked
    the CRC-32C this writer computed)."""
    root = tmp_path / "a.ome.zarr"
    dims = [Dimension(name="t", count=4, shard_size_chunks=2)]
    with create_stream(_settings(root, dims)) as stream:
        for i in range(4):
            stream.append(make_frame(i, shape=SHAPE))
    np.testing.assert_array_equal(
        readers.read_tensorstore(root / "0")[3], make_frame(3, shape=SHAPE)
    )
    shard = root / "0" / "c" / "1" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0x01  # in the index (its last entry's length), not the checksum
    shard.write_bytes(bytes(data))
    with pytest.raises(Exception, match=r"(?i)digest mismatch"):
        readers.read_tensorstore(root / "0")
    with pytest.raises(ValueError, match=r"(?i)checksum do not match"):
        readers.read_zarr_python(root / "0")


def test_chunks_of_several_frames_in_a_shard_pad_the_edge(tmp_path: Path) -> None:
    """z in chunks of 2, shards of 2 chunks, over 5 planes, t unbounded and
    closed early with a skipped frame: the last shard along z stores one
    chunk, padded past z=4, and marks the other not stored; the last t
    shard stores only the time points reached."""
    root = tmp_path / "a.ome.zarr"
    dims = [
        Dimension(name="t", count=None, chunk_size=1, shard_size_chunks=2),
        Dimension(name="z", count=5, chunk_size=2, shard_size_chunks=2),
    ]
    settings = _settings(root, dims)
    expected = np.zeros((3, 5, *SHAPE), np.uint16)
    with create_stream(settings) as stream:
        for i in range(13):  # t=0, t=1, then 3 planes of t=2
            if i == 6:
                stream.skip(frames=1)
                continue
            stream.append(make_frame(i, shape=SHAPE))
            expected[divmod(i, 5)] = make_frame(i, shape=SHAPE)
    edge = root / "0" / "c" / "0" / "1" / "0" / "0"  # t 0-1, z 4-7
    chunk_bytes = 2 * SHAPE[0] * SHAPE[1] * 2
    # cells in C order over (t, z): (0,0) (0,1) (1,0) (1,1), each 1 t x 2 z
    assert _index(edge, 4) == [
        (0, chunk_bytes),
        (NOT_STORED, NOT_STORED),
        (chunk_bytes, chunk_bytes),
        (NOT_STORED, NOT_STORED),
    ]
    padding = edge.read_bytes()[chunk_bytes // 2 : chunk_bytes]
    assert padding == bytes(chunk_bytes // 2)  # z=5 past the array's end
    np.testing.assert_array_equal(readers.read_tensorstore(root / "0"), expected)
    np.testing.assert_array_equal(readers.read_zarr_python(root / "0"), expected)
    missing = readers.zarr_missing_frames(root)
    assert missing == [(1, 1), (2, 3), (2, 4)]
    assert validate_dataset(root) == []


def test_a_shard_write_failing_half_way_leaves_no_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full in the middle of the second shard: the error reaches the
    caller, the first shard is intact, the second and its temporary are not
    there, and its frames are recorded missing."""
    disk_full_on(monkeypatch, make_frame(2, shape=SHAPE))
    root = tmp_path / "a.ome.zarr"
    dims = [Dimension(name="t", count=6, shard_size_chunks=2)]
    stream = create_stream(_settings(root, dims))
    with pytest.raises(WriterError, match="No space left on device"):
        append_then_close(stream, 6)
    stream.close()
    monkeypatch.undo()
    assert not (root / "0" / "c" / "1" / "0" / "0").exists()
    assert list(root.rglob("*.partial")) == []
    data = readers.read_tensorstore(root / "0")
    for i in range(2):
        np.testing.assert_array_equal(data[i], make_frame(i, shape=SHAPE))
    missing = readers.zarr_missing_frames(root)
    assert missing[:2] == [(2,), (3,)]
    assert stream.frames_written == 6 - len(missing)
    assert validate_dataset(root) == []


def test_recover_removes_a_shard_a_kill_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer killed while its 256 KiB frames go to shards of 4 along t
    (1 MiB shards, written directly whatever the threshold): recover keeps
    every journaled frame (test_recovery's checks) and deletes the temporary
    of the shard being written, as a kill during its write leaves it."""
    monkeypatch.undo()  # the real threshold
    root = tmp_path / "run.ome.zarr"
    _kill_while_writing(root, sharded=True, seed=12, shape=LARGE)
    shards = root / "0" / "c"
    next_shard = 1 + max(int(p.name) for p in shards.iterdir() if p.name.isdigit())
    interrupted = shards / str(next_shard) / "0" / "0" / ".0.partial"
    interrupted.parent.mkdir(parents=True)
    interrupted.write_bytes(b"\x01" * 100)
    recover(root)
    assert not interrupted.exists()
    assert list(root.rglob("*.partial")) == []
    assert validate_dataset(root) == []
    readers.validate_yaozarrs(root)


def test_shards_below_the_size_threshold_stay_with_tensorstore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for chunks (`MIN_DIRECT_CHUNK_BYTES`): a file per one or two small
    frames written from Python threads made `append` wait for the GIL, so
    such shards stay with tensorstore; from the threshold up they do not."""
    monkeypatch.undo()  # the real threshold, tensorstore allowed
    threshold = chunkfiles.MIN_DIRECT_CHUNK_BYTES
    frame_bytes = 2 * SHAPE[0] * SHAPE[1]
    below = threshold // frame_bytes  # frames per shard just under it
    for frames, direct in ((below, False), (below + 1, True)):
        root = tmp_path / f"s{frames}.ome.zarr"
        dims = [Dimension(name="t", count=frames, shard_size_chunks=frames)]
        dims += [
            Dimension(name="y", count=SHAPE[0]),
            Dimension(name="x", count=SHAPE[1]),
        ]
        settings = AcquisitionSettings(
            root_path=str(root), dimensions=dims, dtype="uint16"
        )
        assert writes_whole_shards(settings) == direct
        if direct:
            _refuse_tensorstore_writes(monkeypatch)
        with create_stream(settings) as stream:
            for i in range(frames):
                stream.append(make_frame(i, shape=SHAPE))
        np.testing.assert_array_equal(
            readers.read_zarr_python(root / "0")[-1],
            make_frame(frames - 1, shape=SHAPE),
        )


def test_chunk_and_shard_files_are_opened_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the platform has O_BINARY (Windows), files opened without it
    translate each newline byte of the pixels; the flag is asked for."""
    fake_binary = 0x40000000  # stands for O_BINARY, not a flag Linux has
    monkeypatch.setattr(os, "O_BINARY", fake_binary, raising=False)
    real_open = os.open
    opened: list[int] = []

    def spy(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(".partial"):
            opened.append(flags)
            flags &= ~fake_binary
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    root = tmp_path / "a.ome.zarr"
    dims = [Dimension(name="t", count=2, shard_size_chunks=2)]
    with create_stream(_settings(root, dims)) as stream:
        for i in range(2):
            stream.append(make_frame(i, shape=SHAPE))
    assert opened
    assert all(flags & fake_binary for flags in opened)
