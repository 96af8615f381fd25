"""What `append` does with the caller's array, and how OME-TIFF pages after
the first are appended.

- `append` copies by default, into buffers the stream reuses once written:
  a caller refilling one buffer in place gets every frame as it was at its
  `append`, in every format and backend - also those that hold on to a
  frame after writing it (tensorstore until it has copied it, acquire-zarr's
  recent frames), which must keep their buffer out of reuse.
- `append(copy=False)` queues the caller's array itself.
- Uncompressed OME-TIFF pages after the first are packed by ome-stream
  (`PageAppender`): read back here by tifffile and Bio-Formats, and a page
  is linked into the file only once it is complete.
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from ome_stream import AcquisitionSettings, Dimension, create_stream
from ome_stream._formats.tiff import pages as tiff_pages
from ome_stream._formats.tiff.pages import PageAppender
from ome_stream._formats.tiff.tifffile import write_description
from tests import _readers as readers

N_FRAMES = 300
SHAPE = (32, 48)

FORMATS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    # name: (suffix, format, t-dimension options)
    "tensorstore": (
        ".ome.zarr",
        {"name": "ome-zarr", "backend": "tensorstore"},
        {},
    ),
    "tensorstore-sharded": (
        ".ome.zarr",
        {"name": "ome-zarr", "backend": "tensorstore"},
        {"chunk_size": 1, "shard_size_chunks": 50},
    ),
    "zarr-python": (".ome.zarr", {"name": "ome-zarr", "backend": "zarr-python"}, {}),
    "acquire-zarr": (
        ".ome.zarr",
        {"name": "ome-zarr", "backend": "acquire-zarr"},
        {"chunk_size": 10},
    ),
    "tiff": (".ome.tiff", {"name": "ome-tiff"}, {}),
}


def _settings(
    root: Path, name: str, count: int | None = N_FRAMES
) -> AcquisitionSettings:
    suffix, fmt, t_options = FORMATS[name]
    return AcquisitionSettings(
        root_path=str(root / f"out{suffix}"),
        dimensions=[
            Dimension(name="t", count=count, **t_options),
            Dimension(name="y", count=SHAPE[0]),
            Dimension(name="x", count=SHAPE[1]),
        ],
        dtype="uint16",
        format=fmt,
    )


def _frame(i: int) -> np.ndarray:
    rows = np.arange(SHAPE[0], dtype=np.uint16)[:, None]
    return (rows * 7 + np.arange(SHAPE[1], dtype=np.uint16) + i * 101).astype(np.uint16)


def _read_back(settings: AcquisitionSettings) -> np.ndarray:
    return readers.read_single_image(settings.output_path)


def _sharded_t(
    root: Path, shard: int, *more: Dimension, **kw: Any
) -> AcquisitionSettings:
    """Unbounded t, one frame per chunk, `shard` chunks per shard, then
    `more` dimensions and the frame."""
    return AcquisitionSettings(
        root_path=str(root),
        dimensions=[
            Dimension(name="t", count=None, chunk_size=1, shard_size_chunks=shard),
            *more,
            Dimension(name="y", count=SHAPE[0]),
            Dimension(name="x", count=SHAPE[1]),
        ],
        dtype="uint16",
        **kw,
    )


@pytest.mark.parametrize("name", list(FORMATS))
def test_a_buffer_refilled_in_place_is_written_as_it_was_at_append(
    name: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, name)
    buffer = np.empty(SHAPE, np.uint16)
    with create_stream(settings) as stream:
        for i in range(N_FRAMES):
            buffer[...] = _frame(i)
            stream.append(buffer)
            buffer[...] = 0xFFFF  # the camera overwrites its buffer
        live = stream.view()[:]
    expected = np.stack([_frame(i) for i in range(N_FRAMES)])
    np.testing.assert_array_equal(live, expected)
    np.testing.assert_array_equal(_read_back(settings), expected)


@pytest.mark.parametrize("name", ["tensorstore", "tiff"])
def test_copy_false_writes_the_callers_arrays(name: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, name, count=6)
    frames = [_frame(i) for i in range(6)]
    # a Fortran-ordered array and a strided view are written in C order
    frames[2] = np.asfortranarray(frames[2])
    wide = np.zeros((SHAPE[0], SHAPE[1] * 2), np.uint16)
    wide[:, ::2] = frames[3]
    frames[3] = wide[:, ::2]
    with create_stream(settings) as stream:
        for frame in frames:
            stream.append(frame, frame_metadata={"x": 1}, copy=False)
    np.testing.assert_array_equal(
        _read_back(settings), np.stack([np.ascontiguousarray(f) for f in frames])
    )


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        ("uint8", (5, 7)),
        ("int16", (33, 31)),
        ("float32", (16, 16)),
    ],
)
@pytest.mark.parametrize("name", ["tensorstore", "sharded", "tiff"])
def test_appended_copies_are_exact_for_any_memory_layout(
    name: str, dtype: str, shape: tuple[int, int], tmp_path: Path
) -> None:
    """`append`'s copies of C-ordered, Fortran-ordered and strided frames of
    any dtype, into the pool's buffers and straight into a shard's block,
    are the frames as given: read back by tensorstore (Zarr) or tifffile."""
    fmt: Any = (
        {"name": "ome-zarr", "backend": "tensorstore"} if name != "tiff" else "ome-tiff"
    )
    shard = {"chunk_size": 1, "shard_size_chunks": 2} if name == "sharded" else {}
    suffix = ".ome.tiff" if name == "tiff" else ".ome.zarr"
    settings = AcquisitionSettings(
        root_path=str(tmp_path / f"out{suffix}"),
        dimensions=[
            Dimension(name="t", count=4, **shard),
            Dimension(name="y", count=shape[0]),
            Dimension(name="x", count=shape[1]),
        ],
        dtype=dtype,
        format=fmt,
    )
    rng = np.random.default_rng(4)
    wanted = (rng.random((4, *shape)) * 100).astype(dtype)
    wide = np.zeros((shape[0], shape[1] * 2), dtype)
    wide[:, 1::2] = wanted[2]
    frames = [wanted[0], np.asfortranarray(wanted[1]), wide[:, 1::2], wanted[3]]
    with create_stream(settings) as stream:
        for frame in frames:
            stream.append(frame)
    if name == "tiff":
        got = tifffile.imread(settings.output_path)
    else:
        got = readers.read_tensorstore(settings.output_path / "0")
    np.testing.assert_array_equal(got, wanted)


# ----------------------------------------------------------- TIFF page appender


@pytest.mark.parametrize(
    ("dtype", "shape", "count"),
    [
        ("uint8", (5, 7), 9),  # odd byte count: pages padded to a word boundary
        ("int16", (16, 20), None),  # unbounded: BigTIFF
        ("float32", (9, 11), 4),
        ("float64", (3, 5), None),
    ],
)
def test_appended_pages_read_back_in_tifffile_and_bioformats(
    dtype: str, shape: tuple[int, int], count: int | None, tmp_path: Path
) -> None:
    n = count or 7
    settings = AcquisitionSettings(
        root_path=str(tmp_path / "p.ome.tiff"),
        dimensions=[
            Dimension(name="t", count=count),
            Dimension(name="y", count=shape[0], unit="um", scale=0.5),
            Dimension(name="x", count=shape[1], unit="um", scale=0.5),
        ],
        dtype=dtype,
    )
    rng = np.random.default_rng(3)
    frames = (
        rng.random((n, *shape)) * 100 - (0 if dtype.startswith("u") else 50)
    ).astype(dtype)
    with create_stream(settings) as stream:
        for frame in frames:
            stream.append(frame)
    with tifffile.TiffFile(settings.output_path) as tif:
        assert tif.is_bigtiff == (count is None)
        assert len(tif.pages) == n
        first = tif.pages.first
        for page in tif.pages:
            # every page describes itself as the first does, bar the OME-XML
            assert page.shape == shape
            assert page.dtype == np.dtype(dtype)
            assert page.compression == first.compression == 1
            assert page.tags["XResolution"].value == first.tags["XResolution"].value
            assert page.tags["ResolutionUnit"].value == 3  # centimeter
            assert page.dataoffsets[0] % np.dtype(dtype).itemsize == 0
            assert page.offset % 2 == 0
        np.testing.assert_array_equal(
            np.stack([p.asarray() for p in tif.pages]), frames
        )
    info = readers.bioformats_info(settings.output_path)
    assert info.is_ome_tiff
    pixels = readers.bioformats_pixels(settings.output_path, info=info)
    np.testing.assert_array_equal(pixels[:, 0, 0], frames)


@pytest.mark.parametrize("bigtiff", [False, True])
def test_appended_pixels_follow_one_another_with_their_ifds_in_blocks(
    bigtiff: bool, tmp_path: Path
) -> None:
    """The pixels of the pages after the first follow one another, as a
    raw write lays them out; their IFDs are packed in blocks before the
    pixels they describe, linked in file order: the first small, where the
    first page ends, the others ending on a multiple of IFD_BLOCK_BYTES.
    Skipped frames are holes among the pixels. Read while written (across
    blocks) and after, by tifffile and Bio-Formats."""
    from ome_stream._formats.tiff.tifffile import TiffFileBackend

    n, skipped = 1200, {5, 6, 700}
    settings = _settings(tmp_path, "tiff", count=None if bigtiff else n)
    backend = TiffFileBackend(settings)
    backend.open()
    for i in range(n):
        if i in skipped:
            backend.skip(0, (i,))
        else:
            backend.write(0, (i,), _frame(i % 600), None)
        # the newest page and the one before every time (the next IFD goes
        # where reading that one may have read zeros), others now and then
        extra = (i // 2, 0) if i % 97 == 0 or 80 <= i <= 85 else ()
        for j in (i, max(i - 1, 0), *extra):
            want = None if j in skipped else _frame(j % 600)
            got = backend.read_frame(0, (j,))
            assert (got is None) == (want is None), j
            if want is not None:
                np.testing.assert_array_equal(got, want)
    backend.close()
    assert backend.write_error is None  # (nothing failed after a page)
    nbytes = SHAPE[0] * SHAPE[1] * 2
    block = tiff_pages.IFD_BLOCK_BYTES
    with tifffile.TiffFile(settings.output_path) as tif:
        assert tif.is_bigtiff == bigtiff
        pages = list(tif.pages)
        assert len(pages) == n
        ifds = [page.offset for page in pages]
        data = [page.dataoffsets[0] for page in pages]
        assert ifds == sorted(ifds)
        assert data[0] + nbytes <= ifds[1] <= data[0] + nbytes + 2
        first_block = data[1] - ifds[1]
        assert data[1] % 16 == 0
        assert 0 <= first_block - tiff_pages.FIRST_IFD_BLOCK_BYTES < 16
        starts = [1]  # the pages whose IFD opens a block
        for k in range(2, n):
            if ifds[k] >= data[k - 1]:
                starts.append(k)
                assert ifds[k] == data[k - 1] + nbytes  # right after the pixels
                assert data[k] % block == 0
                assert block // 2 <= data[k] - ifds[k] < block // 2 + block
            else:
                assert data[k] == data[k - 1] + nbytes
        assert len(starts) >= 3
        for first, end in zip(starts, [*starts[1:], n]):
            assert all(ifds[k] < data[first] for k in range(first, end))
        assert os.path.getsize(settings.output_path) == data[-1] + nbytes
        read = np.stack([page.asarray() for page in pages])
    want = np.stack(
        [
            np.zeros_like(_frame(i % 600)) if i in skipped else _frame(i % 600)
            for i in range(n)
        ]
    )
    np.testing.assert_array_equal(read, want)
    pixels = readers.bioformats_pixels(settings.output_path)
    np.testing.assert_array_equal(pixels[:, 0, 0], want)


def test_a_file_of_a_few_pages_is_hardly_larger_than_its_pixels(
    tmp_path: Path,
) -> None:
    """A file per position of two 256 x 256 planes: the second page's IFD
    takes a small block, not the 128 KiB the blocks of long files take."""
    settings = AcquisitionSettings(
        root_path=str(tmp_path / "few.ome.tiff"),
        dimensions=[
            Dimension(name="p", count=4, type="position"),
            Dimension(name="t", count=2),
            Dimension(name="y", count=256),
            Dimension(name="x", count=256),
        ],
        dtype="uint16",
        format={"name": "ome-tiff", "prefer_single_file": "never"},
    )
    frames = np.arange(8 * 256 * 256, dtype=np.uint16).reshape(8, 256, 256)
    with create_stream(settings) as stream:
        for frame in frames:
            stream.append(frame)
    paths = sorted((tmp_path / "few").glob("*.ome.tiff"))
    assert len(paths) == 4
    for p, path in enumerate(paths):
        with tifffile.TiffFile(path, is_ome=False) as tif:
            first, second = tif.pages
            first_end = first.dataoffsets[0] + first.databytecounts[0]
            assert second.offset - first_end <= 2
            extra = path.stat().st_size - first_end - second.databytecounts[0]
            assert extra <= tiff_pages.FIRST_IFD_BLOCK_BYTES + 16
            np.testing.assert_array_equal(tif.asarray(), frames[2 * p : 2 * p + 2])


def test_the_page_appender_writes_any_layout_and_byte_order(tmp_path: Path) -> None:
    """Frames that are not the file's byte order or not C-contiguous are
    written as their values (the stream hands over C-contiguous frames of
    the settings' dtype; the appender does not rely on it)."""
    path = tmp_path / "o.tif"
    rng = np.random.default_rng(5)
    wanted = rng.integers(0, 60000, (5, 6, 10), dtype=np.uint16)
    with tifffile.TiffWriter(path) as writer:
        writer.write(wanted[0], photometric="minisblack", metadata=None)
    wide = np.zeros((6, 20), np.uint16)
    wide[:, ::2] = wanted[3]
    frames = [
        wanted[1].astype(">u2"),  # big-endian into a little-endian file
        np.asfortranarray(wanted[2]),
        wide[:, ::2],  # strided
        wanted[4].astype("<u2"),  # explicit little-endian
    ]
    appender = PageAppender(path)
    for frame in frames:
        appender.append(frame)
    appender.close()
    np.testing.assert_array_equal(tifffile.imread(path), wanted)


# descriptions around the inline sizes (4 bytes classic, 8 BigTIFF, with
# the NUL), and long ones
_DESCRIPTIONS = ["ab", "abc", "abcd", "abcdefg", "abcdefgh", "<OME/>" * 40]


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("bigtiff", [False, True])
@pytest.mark.parametrize("description", _DESCRIPTIONS)
def test_the_first_ifd_is_read_as_tifffile_reads_it(
    byteorder: str, bigtiff: bool, description: str, tmp_path: Path
) -> None:
    """`FirstIfd` (which replaced opening the file with tifffile to find the
    ImageDescription, at the first interim refresh and at close) finds the
    tag where tifffile does, in classic TIFF and BigTIFF of either byte
    order, with the text in its entry (a short one) or elsewhere; and
    `write_description` then writes texts of every length around the
    inline size, and long ones, each read back by tifffile with every page."""
    path = tmp_path / "f.tif"
    frames = np.arange(3 * 12, dtype=np.uint16).reshape(3, 3, 4)
    with tifffile.TiffWriter(path, bigtiff=bigtiff, byteorder=byteorder) as writer:
        writer.write(frames[0], description=description, metadata=None)
        for frame in frames[1:]:
            writer.write(frame, metadata=None)

    def first_ifd() -> tiff_pages.FirstIfd:
        with path.open("rb") as f:
            return tiff_pages.FirstIfd.read(f.fileno())

    def check(text: str) -> None:
        ifd = first_ifd()
        found = ifd.tag(tiff_pages.IMAGE_DESCRIPTION)
        with tifffile.TiffFile(path) as tif:
            assert (ifd.order, ifd.big) == (tif.byteorder, tif.is_bigtiff)
            assert ifd.offset == tif.pages.first.offset
            tag = tif.pages.first.tags[270]
            assert (found.entry, found.count, found.value_offset) == (
                tag.offset,
                tag.count,
                tag.valueoffset,
            )
            assert tag.count == len(text) + 1
            assert tif.pages.first.description == text
            np.testing.assert_array_equal(tif.asarray(), frames)

    check(description)
    with pytest.raises(KeyError, match="tag 999"):
        first_ifd().tag(999)
    # longer, then shorter, then longer again: each branch (in the entry,
    # over the text there, after the end of the file) from each of them
    texts = [*("x" * n for n in range(10)), "y" * 700, "z" * 5, "w" * 300, "v"]
    for text in texts:
        write_description(path, [text])
        check(text)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"PK" + bytes(20), "not a TIFF"),
        (b"II" + bytes([7, 0]) + bytes(20), "version 7"),
        # a classic TIFF whose first IFD (at 8) says it has 5 entries, then ends
        (b"II*\0" + (8).to_bytes(4, "little") + (5).to_bytes(2, "little"), "ends"),
    ],
    ids=["not-tiff", "version", "truncated"],
)
def test_a_file_that_is_not_a_whole_tiff_is_refused(
    content: bytes, problem: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    with path.open("rb") as f, pytest.raises(ValueError, match=problem):
        tiff_pages.FirstIfd.read(f.fileno())


def test_the_page_appender_without_pwritev_writes_every_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where there is no pwritev (Windows), each page is written by seeks and
    writes of one buffer at a time, here cut short at random: the file reads
    back whole."""
    path = tmp_path / "w.tif"
    rng = np.random.default_rng(6)
    wanted = rng.integers(0, 255, (6, 5, 7), dtype=np.uint8)  # odd sizes: padded
    with tifffile.TiffWriter(path) as writer:
        writer.write(wanted[0], photometric="minisblack", metadata=None)
    real_write = os.write
    cut = random.Random(6)
    calls: list[int] = []

    def short(fd: int, data: Any) -> int:
        view = memoryview(data).cast("B")
        calls.append(len(view))
        return real_write(fd, view[: cut.randint(1, len(view))])

    monkeypatch.setattr(tiff_pages, "_HAS_PWRITEV", False)
    monkeypatch.setattr(tiff_pages.os, "write", short)
    appender = PageAppender(path)
    for frame in wanted[1:]:
        appender.append(frame)
    appender.close()
    monkeypatch.undo()
    assert len(calls) > 2 * 5  # the writes were cut short, and continued
    np.testing.assert_array_equal(tifffile.imread(path), wanted)


def test_a_page_is_linked_only_once_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails half way (disk full) leaves the file as it was:
    the earlier pages, and no link to the broken one."""
    path = tmp_path / "a.tif"
    frames = np.arange(4 * 64 * 64, dtype=np.uint16).reshape(4, 64, 64)
    with tifffile.TiffWriter(path) as writer:
        writer.write(frames[0], photometric="minisblack", metadata=None)
    appender = PageAppender(path)
    appender.append(frames[1])
    appender.append(frames[2])

    real = os.pwritev

    def disk_full(fd: int, buffers: list[Any], offset: int) -> int:
        real(fd, [bytes(buffers[0])[:100]], offset)  # part of the IFD, then fail
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tiff_pages.os, "pwritev", disk_full)
    with pytest.raises(OSError, match="No space"):
        appender.append(frames[3])
    appender.close()
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 3
        np.testing.assert_array_equal(tif.asarray(), frames[:3])


def test_short_writes_are_continued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.tif"
    frames = np.arange(3 * 40 * 40, dtype=np.uint16).reshape(3, 40, 40)
    with tifffile.TiffWriter(path) as writer:
        writer.write(frames[0], photometric="minisblack", metadata=None)
    real = os.pwritev

    def short(fd: int, buffers: list[Any], offset: int) -> int:
        data = b"".join(bytes(b) for b in buffers)
        return real(fd, [data[: max(1, len(data) // 3)]], offset)

    monkeypatch.setattr(tiff_pages.os, "pwritev", short)
    appender = PageAppender(path)
    appender.append(frames[1])
    appender.append(frames[2])
    appender.close()
    with tifffile.TiffFile(path) as tif:
        np.testing.assert_array_equal(tif.asarray(), frames)


@pytest.mark.parametrize("backend", ["tensorstore", "zarr-python"])
def test_reused_zarr_blocks_keep_skipped_and_missing_frames_zero(
    backend: str, tmp_path: Path
) -> None:
    """Write blocks are reused once written: a skipped frame, and the frames
    an early close never delivered, must read as zeros, not as the pixels an
    earlier block left there."""
    settings = _sharded_t(
        tmp_path / "z.ome.zarr", 20, format={"name": "ome-zarr", "backend": backend}
    )
    skipped = {45, 46, 70}
    expected = []
    with create_stream(settings) as stream:
        for i in range(87):  # the last block (80-99) stays incomplete
            if i in skipped:
                stream.skip()
                expected.append(np.zeros(SHAPE, np.uint16))
            else:
                stream.append(_frame(i) | 1)  # never zero
                expected.append(_frame(i) | 1)
    got = readers.read_tensorstore(settings.output_path / "0")
    assert got.shape == (87, *SHAPE)
    np.testing.assert_array_equal(got, np.stack(expected))


def test_reused_zarr_block_of_an_early_close_has_zeros_where_frames_never_came(
    tmp_path: Path,
) -> None:
    settings = _sharded_t(
        tmp_path / "e.ome.zarr", 10, Dimension(name="c", count=2, chunk_size=2)
    )
    n = 2 * 47 + 1  # t=47 gets channel 0 only
    with create_stream(settings) as stream:
        for i in range(n):
            stream.append(_frame(i) | 1)
    got = readers.read_tensorstore(settings.output_path / "0")
    expected = np.zeros((48, 2, *SHAPE), np.uint16)
    expected.reshape(-1, *SHAPE)[:n] = [_frame(i) | 1 for i in range(n)]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", ["tensorstore", "tiff"])
def test_callers_arrays_are_never_reused_as_copy_buffers(
    name: str, tmp_path: Path
) -> None:
    """Arrays passed with copy=False (here temporary views of the caller's
    stack) go back to the caller untouched; only the stream's own copy
    buffers are reused."""
    settings = _settings(tmp_path, name, count=200)
    stack = np.stack([_frame(i) for i in range(100)])
    original = stack.copy()
    with create_stream(settings) as stream:
        for i in range(100):
            stream.append(stack[i], copy=False)  # a view nobody else keeps
        for i in range(100, 200):
            stream.append(_frame(i))
    np.testing.assert_array_equal(stack, original)
    np.testing.assert_array_equal(
        _read_back(settings), np.stack([_frame(i) for i in range(200)])
    )


def test_a_blank_page_after_a_write_cut_short_reads_as_zeros(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame whose pixels were written in part when the disk filled is
    not a page; the blank page then written in its place (the frame
    recorded as missing) reads as zeros, not as the bytes left there."""
    import errno

    from ome_stream._formats.tiff.tifffile import TiffFileBackend

    settings = _settings(tmp_path, "tiff", count=4)
    backend = TiffFileBackend(settings)
    backend.open()
    backend.write(0, (0,), _frame(0), None)
    real = tiff_pages._pwritev
    calls = 0

    def filling_up(fd: int, buffers: list[Any], offset: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:  # half the pixels of frame 1
            return os.pwrite(fd, bytes(memoryview(buffers[0]).cast("B")[:1000]), offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tiff_pages, "_pwritev", filling_up)
    with pytest.raises(OSError, match="No space"):
        backend.write(0, (1,), _frame(1) | 1, None)
    monkeypatch.setattr(tiff_pages, "_pwritev", real)
    backend.skip(0, (1,))
    backend.write(0, (2,), _frame(2), None)
    backend.close()
    with tifffile.TiffFile(settings.output_path) as tif:
        read = tif.asarray()
    np.testing.assert_array_equal(read[0], _frame(0))
    np.testing.assert_array_equal(read[1], 0)
    np.testing.assert_array_equal(read[2], _frame(2))
    assert len(read) == 3  # (closed early: the outermost axis trimmed)


def test_a_write_that_writes_nothing_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "z.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(np.zeros((8, 8), np.uint16), photometric="minisblack")
    appender = PageAppender(path)
    monkeypatch.setattr(tiff_pages.os, "pwritev", lambda fd, buffers, offset: 0)
    with pytest.raises(OSError, match="wrote nothing"):
        appender.append(np.ones((8, 8), np.uint16))
    appender.close()
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1


def test_a_frame_refused_by_a_full_queue_leaves_no_trace_in_its_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Buffered Zarr: `append` copies the frame straight into its write
    block. When the queue then refuses it (BackpressureError), its place
    must read as missing, not as the refused pixels."""
    from ome_stream import BackpressureError
    from ome_stream._formats.zarr.tensorstore import TensorStoreBackend
    from ome_stream._stream import QUEUE_ITEM_BYTES

    gate = threading.Event()
    real_write = TensorStoreBackend.write

    def slow_write(self: Any, *args: Any) -> None:
        gate.wait(timeout=30)
        real_write(self, *args)

    monkeypatch.setattr(TensorStoreBackend, "write", slow_write)
    frame_bytes = SHAPE[0] * SHAPE[1] * 2
    settings = _sharded_t(
        tmp_path / "q.ome.zarr",
        10,
        max_queue_bytes=2 * (frame_bytes + QUEUE_ITEM_BYTES),
        append_timeout=0.2,
    )

    def refuse_frame_2() -> Any:
        """Frames 0 and 1 fill the queue; frame 2 is refused; then the
        writer goes on."""
        with pytest.warns(
            UserWarning, match="Write blocks filled at once"
        ):  # (tiny queue)
            stream = create_stream(settings)
        stream.append(_frame(0) | 1)
        stream.append(_frame(1) | 1)
        with pytest.raises(BackpressureError):
            stream.append(_frame(2) | 1)
        gate.set()
        return stream

    stream = refuse_frame_2()
    stream.close()  # frame 2 never came
    got = readers.read_tensorstore(settings.output_path / "0")
    assert got.shape[0] == 2
    np.testing.assert_array_equal(got, np.stack([_frame(0) | 1, _frame(1) | 1]))

    # and with a later frame in the same block, frame 2's place is zero
    settings = settings.model_copy(update={"root_path": str(tmp_path / "r.ome.zarr")})
    gate.clear()
    stream = refuse_frame_2()
    stream.skip()  # frame 2 will never come
    stream.append(_frame(3) | 1)
    stream.close()
    got = readers.read_tensorstore(settings.output_path / "0")
    expected = np.stack([_frame(0) | 1, _frame(1) | 1, _frame(0) * 0, _frame(3) | 1])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("pwritev", [True, False], ids=["pwritev", "no-pwritev"])
def test_a_page_larger_than_a_write_piece_is_written_in_pieces(
    pwritev: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No system call writes more than WRITE_PIECE_BYTES of a page's pixels
    (large writes are slow on Linux VMs: see backend.py), also where there
    is no pwritev (Windows) and when writes come back short; the stream's
    OME-TIFF reads back whole in tifffile and Bio-Formats."""
    from ome_stream._formats import backend

    piece = 1000
    monkeypatch.setattr(backend, "WRITE_PIECE_BYTES", piece)
    monkeypatch.setattr(tiff_pages, "_HAS_PWRITEV", pwritev and tiff_pages._HAS_PWRITEV)
    real = tiff_pages._pwritev
    cut = random.Random(8)
    sizes: list[int] = []

    def recording(fd: int, buffers: list[Any], offset: int) -> int:
        views = [memoryview(b).cast("B") for b in buffers]
        sizes.append(sum(v.nbytes for v in views))
        if sizes[-1] > 1 and cut.random() < 0.3:  # cut short
            return real(fd, [views[0][: cut.randint(1, views[0].nbytes)]], offset)
        return real(fd, buffers, offset)

    monkeypatch.setattr(tiff_pages, "_pwritev", recording)
    root = tmp_path / "a.ome.tiff"
    shape = (40, 64)  # 5 120 bytes a page
    settings = AcquisitionSettings(
        root_path=str(root),
        dimensions=[
            Dimension(name="t", count=5),
            Dimension(name="y", count=shape[0]),
            Dimension(name="x", count=shape[1]),
        ],
        dtype="uint16",
    )
    frames = np.random.default_rng(7).integers(0, 4000, (5, *shape), np.uint16)
    with create_stream(settings) as stream:
        for frame in frames:
            stream.append(frame)
    monkeypatch.undo()
    assert sum(sizes) >= 4 * frames[0].nbytes  # the pages after the first
    assert max(sizes) <= piece
    np.testing.assert_array_equal(tifffile.imread(root), frames)
    np.testing.assert_array_equal(readers.bioformats_pixels(root)[:, 0, 0], frames)
