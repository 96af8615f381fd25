"""Crash safety: SIGKILL a writing process at random moments, recover, and
check with external readers that every frame the journal says was written is
there, with its metadata."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from ome_stream import recover
from ome_stream._frame_metadata import checked_metadata_json
from ome_stream._journal import journal_path, read_journal
from ome_stream._validate import interrupted_note, validate_dataset
from ome_stream.cli import app
from tests import _readers as readers
from tests._cases import (
    UNBOUNDED_8X8_SCRIPT,
    kill_when_ready,
    make_frame,
    run_python,
)

WRITER = r"""
import sys, time
import numpy as np
from ome_stream import AcquisitionSettings, Dimension, create_stream
sys.path.insert(0, {tests_parent!r})
from tests._cases import make_frame

root, sharded = sys.argv[1], sys.argv[2] == "1"
shape = (int(sys.argv[3]), int(sys.argv[4]))
dims = [
    Dimension(name="t", count=None, shard_size_chunks=4 if sharded else None),
    Dimension(name="c", coords=["DAPI", "GFP"]),
    Dimension(name="y", count=shape[0]),
    Dimension(name="x", count=shape[1]),
]
settings = AcquisitionSettings(root_path=root, dimensions=dims, dtype="uint16")
stream = create_stream(settings)
stream.set_global_metadata("experiment", {{"id": 7}})
print("started", flush=True)
for i in range(100000):
    if i % 17 == 5:
        stream.skip(frames=1)
        continue
    stream.append(make_frame(i, shape=shape), frame_metadata={{"frame": i}})
    time.sleep(0.002)
"""


SMALL = (24, 40)
# 256 KiB frames: their chunks, and their shards of 4 along t, are written
# straight to their files (`chunkfiles.py`); smaller ones by tensorstore
LARGE = (256, 512)


def _kill_while_writing(
    root: Path, sharded: bool, seed: int, shape: tuple[int, int] = SMALL
) -> None:
    script = WRITER.format(tests_parent=str(Path(__file__).parents[1]))
    args = [str(root), "1" if sharded else "0", *map(str, shape)]
    after = random.Random(seed).uniform(0.05, 0.8)
    kill_when_ready(script, *args, ready="started", after=after)


CASES = [
    (".ome.zarr", False, 1, SMALL),
    (".ome.zarr", False, 2, SMALL),
    (".ome.zarr", False, 7, LARGE),
    (".ome.zarr", False, 8, LARGE),
    (".ome.zarr", True, 3, SMALL),
    (".ome.zarr", True, 4, SMALL),
    (".ome.zarr", True, 9, LARGE),
    (".ome.tiff", False, 5, SMALL),
    (".ome.tiff", False, 6, SMALL),
]


@pytest.mark.parametrize(("suffix", "sharded", "seed", "shape"), CASES)
def test_sigkill_then_recover_keeps_every_journaled_frame(
    suffix: str, sharded: bool, seed: int, shape: tuple[int, int], tmp_path: Path
) -> None:
    root = tmp_path / f"run{suffix}"
    _kill_while_writing(root, sharded, seed, shape)
    journal = read_journal(journal_path(root))
    assert journal.frames, "the writer was killed before writing anything"
    report = recover(root)
    assert not journal_path(root).exists()
    assert validate_dataset(root) == []
    assert report.frames_recovered == len(journal.frames)
    assert report.frames_lost == journal.lost
    frames = {
        index: json.loads(text)["frame"] for (_, index), text in journal.frames.items()
    }
    reached = [*frames, *(i for _, i in journal.skipped), *(i for _, i in journal.lost)]
    n_t = max(index[0] for index in reached) + 1
    if suffix == ".ome.zarr":
        readers.validate_yaozarrs(root)
        readers.validate_ome_zarr_models(root)
        data = readers.read_tensorstore(root / "0")
        assert data.shape == (n_t, 2, *shape)
        for index, number in frames.items():
            np.testing.assert_array_equal(data[index], make_frame(number, shape=shape))
        attrs = json.loads((root / "zarr.json").read_text())["attributes"]
        records = {
            tuple(r["storage_index"]): r["frame"]
            for r in attrs["ome_stream"]["frame_metadata"]
        }
        assert records == frames
        missing = set(readers.zarr_missing_frames(root))
        assert missing.isdisjoint(frames)
        assert {i for _, i in journal.skipped} <= missing
        assert {i for _, i in journal.lost} <= missing
        assert attrs["experiment"] == {"id": 7}
        assert list(root.rglob("*.partial")) == []  # interrupted chunk files
    else:
        info = readers.bioformats_info(root)
        assert info.is_ome_tiff
        assert info.warnings == []
        pixels = info.ome.images[0].pixels
        assert (pixels.size_c, pixels.size_t) == (2, n_t)
        tczyx = readers.bioformats_pixels(root, info=info)
        for (t, c), number in frames.items():
            np.testing.assert_array_equal(
                tczyx[t, c, 0], make_frame(number, shape=shape)
            )
        ome = readers.validate_ome_xml(readers.tiff_ome_xml(root))
        annotations = {a.id: a for a in ome.structured_annotations.map_annotations}
        planes = {}
        for plane in ome.images[0].pixels.planes:
            ann = annotations[plane.annotation_refs[0].id]
            planes[(plane.the_t, plane.the_c)] = int(ann.value.ms[0].value)
        assert planes == frames
        by_ns = {a.namespace: a for a in annotations.values() if a.namespace}
        assert "experiment" in by_ns


def test_recover_cli_reports_and_validates(tmp_path: Path) -> None:
    root = tmp_path / "cli.ome.zarr"
    _kill_while_writing(root, sharded=True, seed=11)
    result = CliRunner().invoke(app, ["recover", str(root)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Recovered" in text
    assert "is valid" in text
    again = CliRunner().invoke(app, ["recover", str(root)])
    assert again.exit_code == 1
    assert "nothing to recover" in " ".join(again.output.split())


PAUSING_WRITER = r"""
import sys, time
from ome_stream import AcquisitionSettings, Dimension, create_stream
sys.path.insert(0, {tests_parent!r})
from tests._cases import make_frame

shape = (int(sys.argv[2]), int(sys.argv[3]))
planes = int(sys.argv[5]) if len(sys.argv) > 5 else 1  # a z-stack's
blocks = sys.argv[6] if len(sys.argv) > 6 else ""  # time points a shard/chunk
t_blocks = {{}}
if blocks.startswith("shard"):
    t_blocks = {{"chunk_size": 1, "shard_size_chunks": int(blocks[5:])}}
elif blocks.startswith("chunk"):
    t_blocks = {{"chunk_size": int(blocks[5:])}}
dims = [
    Dimension(name="t", count=None, **t_blocks),
    Dimension(name="c", coords=["DAPI", "GFP"]),
    *([Dimension(name="z", count=planes)] if planes > 1 else []),
    Dimension(name="y", count=shape[0]),
    Dimension(name="x", count=shape[1]),
]
compression = None if sys.argv[4] == "none" else sys.argv[4]
stream = create_stream(
    AcquisitionSettings(
        root_path=sys.argv[1], dimensions=dims, dtype="uint16", compression=compression
    )
)
# a burst (a z-stack's pace), then the wait for the next time point
for i in range({n_frames}):
    if i == 7:
        stream.skip(frames=1)
    else:
        stream.append(make_frame(i, shape=shape), frame_metadata={{"frame": i}})
while stream.frames_written + stream.frames_skipped < {n_frames}:
    time.sleep(0.001)
print("paused", flush=True)
time.sleep(600)
"""
PAUSE_FRAMES = 300  # 150 time points of 2 channels


def _killed_in_a_pause(
    root: Path,
    n_frames: int = PAUSE_FRAMES,
    compression: str = "none",
    shape: tuple[int, int] = SMALL,
    planes: int = 1,
) -> dict[Path, bytes]:
    """A dataset killed after `n_frames` frames (one skipped); the bytes of
    each of its files, journal included. `planes`: a z axis of that many
    planes in each of the 2 channels."""
    script = PAUSING_WRITER.format(
        tests_parent=str(Path(__file__).parents[1]), n_frames=n_frames
    )
    args = [str(root), *map(str, shape), compression, str(planes)]
    kill_when_ready(script, *args, ready="paused", after=0.3)
    return {p: p.read_bytes() for p in root.parent.iterdir()}


def _assert_recovered_whole(
    root: Path, n_frames: int = PAUSE_FRAMES, shape: tuple[int, int] = SMALL
) -> None:
    (tczyx,) = readers.tifffile_ome_series(root)
    assert tczyx.shape == (-(-n_frames // 2), 2, 1, *shape)
    for i in range(tczyx.shape[0] * 2):
        blank = i == 7 or i >= n_frames  # skipped, or the last step's padding
        expected = np.zeros(shape, np.uint16) if blank else make_frame(i, shape=shape)
        np.testing.assert_array_equal(tczyx[i // 2, i % 2, 0], expected)
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(root))
    metadata = {
        2 * t + c: int(values["frame"])
        for (t, c, _), values in readers.plane_map_values(ome).items()
    }
    assert metadata == {i: i for i in range(n_frames) if i != 7}
    assert validate_dataset(root) == []


def _as_if_free(monkeypatch: pytest.MonkeyPatch, path: Path, free: int) -> None:
    import ome_stream._recover as recover_module

    usage = shutil.disk_usage(path)
    monkeypatch.setattr(
        recover_module.shutil, "disk_usage", lambda _: usage._replace(free=free)
    )


def test_recover_completes_an_ome_tiff_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uncompressed, the files are cut after their journaled pages and
    completed where they are: a disk with room for a tenth of the dataset
    will do (a disk filled by the acquisition is the commonest reason for
    one to be interrupted)."""
    root = tmp_path / "inplace.ome.tiff"
    shape = (128, 128)  # 32 KB frames: 9.6 MB
    before = _killed_in_a_pause(root, n_frames=301, shape=shape)  # last step half
    inode = root.stat().st_ino
    _as_if_free(monkeypatch, tmp_path, len(before[root]) // 10)
    report = recover(root)
    assert report.frames_recovered == 300
    assert report.frames_skipped == 1
    assert report.shapes == [(302,)]
    assert report.pages_not_journaled == 0
    assert root.stat().st_ino == inode  # not replaced by a copy
    _assert_recovered_whole(root, n_frames=301, shape=shape)
    with tifffile.TiffFile(root) as tif:
        assert len(tif.pages) == 302
    # blank and recorded as missing: the skipped frame and the padding
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(root))
    assert readers.tiff_missing_planes(ome) == [[0, 1, 3], [0, 1, 150]]
    assert [p.name for p in tmp_path.iterdir()] == [root.name]


def test_a_hard_linked_copy_is_left_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file with another name (a backup made with hard links) would change
    under that name too if completed in place: it is rebuilt and replaced
    instead, and the other name keeps the interrupted file as it was. The
    error for a disk without room for that says why."""
    root = tmp_path / "linked.ome.tiff"
    before = _killed_in_a_pause(root)
    backup = tmp_path / "backup"
    backup.mkdir()
    os.link(root, backup / root.name)
    _as_if_free(monkeypatch, tmp_path, len(before[root]) // 2)
    with pytest.raises(OSError, match="has another link") as info:
        recover(root)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    report = recover(root)
    assert report.frames_recovered == PAUSE_FRAMES - 1
    assert (backup / root.name).read_bytes() == before[root]
    assert root.stat().st_nlink == 1
    _assert_recovered_whole(root)


def test_blank_pages_take_no_disk_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed one plane into a 2 x 25-plane step: recover pads the step
    with 48 blank pages, whose pixels are holes in the file (zeros to any
    reader, no disk space), so a disk with room for the metadata will do.
    The frame skipped during the run is a hole too."""
    root = tmp_path / "stack.ome.tiff"
    shape = (256, 256)  # 128 KB frames; the blank pages would be 6.3 MB
    before = _killed_in_a_pause(root, n_frames=52, shape=shape, planes=25)
    blocks = root.stat().st_blocks * 512
    _as_if_free(monkeypatch, tmp_path, 1_000_000)
    report = recover(root)
    assert report.shapes == [(100,)]
    grown = root.stat().st_blocks * 512 - blocks
    assert root.stat().st_size - len(before[root]) > 48 * 2**17
    assert grown < 1_000_000  # the IFDs and the OME-XML only
    with tifffile.TiffFile(root) as tif:
        assert len(tif.pages) == 100
        stack = tif.series[0].asarray()  # (t, c, z, y, x)
    assert stack.shape == (2, 2, 25, *shape)
    for i in range(100):
        plane = stack[i // 50, (i // 25) % 2, i % 25]
        blank = i == 7 or i >= 52
        expected = np.zeros(shape, np.uint16) if blank else make_frame(i, shape=shape)
        np.testing.assert_array_equal(plane, expected)
    info = readers.bioformats_info(root)
    assert info.warnings == []
    np.testing.assert_array_equal(
        readers.bioformats_pixels(root, info=info)[1, 1, 24], np.zeros(shape)
    )
    assert validate_dataset(root) == []


def test_the_room_for_blank_pages_counts_the_file_systems_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the file system allocates in 128 KiB units (ZFS's default
    record), the edges of a blank page's hole take up to two of them (at
    most the frame's own bytes; blank pages in a row make one hole, so that
    is an upper bound): recover counts that, and with 1 MB free
    refuses the 48 blank pages it would need (which take 4 KiB blocks of
    that room where those are the unit: test_blank_pages_take_no_disk_space)."""
    import types

    import ome_stream._formats.tiff.tifffile as backend_module

    root = tmp_path / "stack.ome.tiff"
    before = _killed_in_a_pause(root, n_frames=52, shape=(256, 256), planes=25)
    _as_if_free(monkeypatch, tmp_path, 1_000_000)
    real_statvfs = os.statvfs

    def statvfs(path: Any) -> Any:
        found = real_statvfs(path)
        return types.SimpleNamespace(f_frsize=2**17, f_bsize=found.f_bsize)

    monkeypatch.setattr(backend_module.os, "statvfs", statvfs)
    with pytest.raises(OSError, match="Not enough free space") as info:
        recover(root)
    found = re.search(r"needs about ([\d.]+) MB", str(info.value))
    assert found is not None, info.value
    assert float(found[1]) >= 48 * 2**17 / 1e6  # (a 128 KiB frame each)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("compression", ["none", "lzw"])
def test_recover_without_room_refuses_before_changing_anything(
    compression: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In place (uncompressed), room for the final OME-XML is needed; to
    rebuild (compressed), room for a copy of the files too."""
    root = tmp_path / "full.ome.tiff"
    before = _killed_in_a_pause(root, compression=compression)
    too_little = 1000 if compression == "none" else len(before[root]) // 2
    _as_if_free(monkeypatch, tmp_path, too_little)
    with pytest.raises(OSError, match="Not enough free space") as info:
        recover(root)
    assert info.value.errno == errno.ENOSPC
    assert "recover the copy" in str(info.value)
    where = "where they are" if compression == "none" else "rebuilds"
    assert where in str(info.value)
    result = CliRunner().invoke(app, ["recover", str(root)])
    assert result.exit_code == 1
    assert "Not enough free space" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.undo()
    recover(root)
    _assert_recovered_whole(root)


@pytest.mark.parametrize("filled_by", ["pages", "records"])
def test_a_disk_full_while_rebuilding_changes_nothing(
    filled_by: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compressed files are rebuilt beside the originals, which stay as
    they are until the new ones are complete. `records`: the disk fills
    while the rebuilt pages' metadata is recorded (the page itself in the
    file): recovery must not finish without it."""
    from ome_stream._frame_metadata import FrameRecords

    root = tmp_path / "filling.ome.tiff"
    before = _killed_in_a_pause(root, compression="lzw")
    writes = 0
    patched: Any = tifffile.TiffWriter if filled_by == "pages" else FrameRecords
    real_write = patched.write if filled_by == "pages" else patched.append

    # (the records of the journal's frames are first replayed in memory)
    fill_at = 100 if filled_by == "pages" else PAUSE_FRAMES + 100

    def filling_up(*args: Any, **kwargs: Any) -> Any:
        nonlocal writes
        writes += 1
        if writes > fill_at:  # pages written before it filled
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(
        patched, "write" if filled_by == "pages" else "append", filling_up
    )
    with pytest.raises(OSError, match="Not enough free space") as info:
        recover(root)
    assert isinstance(info.value.__cause__, OSError)
    assert "Nothing was changed" in str(info.value)
    assert writes > fill_at
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before  # no scratch
    monkeypatch.undo()
    recover(root)
    _assert_recovered_whole(root)


@pytest.mark.parametrize("filled_by", ["journal", "padding", "metadata"])
def test_a_disk_full_while_completing_in_place_keeps_every_page(
    filled_by: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In place, a full disk stops recovery part way: every journaled page
    is still there, the files still read as the interim OME-XML describes
    them, and recover finishes once there is room. Stopped at its first
    step (the journal's recover record), nothing was changed and it says
    so."""
    import ome_stream._formats.tiff.pages as pages
    import ome_stream._formats.tiff.tifffile as backend_module

    root = tmp_path / "filling.ome.tiff"
    n_frames = 301 if filled_by == "padding" else PAUSE_FRAMES
    before = _killed_in_a_pause(root, n_frames=n_frames)
    (killed,) = readers.tifffile_ome_series(root)

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    if filled_by == "journal":  # (part of its record written, then full)
        journal = journal_path(root).stat().st_ino
        real = pages._pwritev

        def journal_full(fd: int, buffers: list[Any], offset: int) -> int:
            if os.fstat(fd).st_ino == journal:
                real(fd, [bytes(buffers[0])[:5]], offset)
                full()
            return real(fd, buffers, offset)

        monkeypatch.setattr(pages, "_pwritev", journal_full)
    elif filled_by == "padding":  # the blank page completing the last step
        journal = journal_path(root).stat().st_ino
        real = pages._pwritev

        def tiff_full(fd: int, buffers: list[Any], offset: int) -> int:
            if os.fstat(fd).st_ino != journal:
                full()
            return real(fd, buffers, offset)

        monkeypatch.setattr(pages, "_pwritev", tiff_full)
    else:
        monkeypatch.setattr(backend_module, "write_description", full)
    with pytest.raises(OSError, match="Not enough free space") as info:
        recover(root)
    assert info.value.errno == errno.ENOSPC
    if filled_by == "journal":
        assert "Nothing was changed" in str(info.value)
        assert root.read_bytes() == before[root]
    else:
        assert "Every journaled page is still in the files" in str(info.value)
        assert "run recover again" in str(info.value)
    assert journal_path(root).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [root.name, journal_path(root).name]
    )
    # as the kill left it, to readers (the interim OME-XML describes only
    # journaled pages, and none of those was cut)
    (series,) = readers.tifffile_ome_series(root)
    np.testing.assert_array_equal(series, killed)
    monkeypatch.undo()
    recover(root)
    _assert_recovered_whole(root, n_frames=n_frames)


def test_after_a_write_error_the_pages_written_are_still_journaled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writing stops at a failure, the journaling of what is in the file
    does not: a failed acquisition is the one likely to be killed next."""
    import ome_stream._formats.tiff.pages as pages
    from ome_stream import AcquisitionSettings, WriterError, create_stream
    from ome_stream import dims_from_standard_axes as dims

    real_pwritev = pages._pwritev
    calls = 0

    def filling_up(fd: int, buffers: Any, offset: int) -> int:
        nonlocal calls
        calls += 1
        if calls > 300:  # ~150 pages and their links
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwritev(fd, buffers, offset)

    monkeypatch.setattr(pages, "_pwritev", filling_up)
    root = tmp_path / "failed.ome.tiff"
    settings = AcquisitionSettings(
        root_path=str(root),
        dimensions=dims({"t": 400, "y": 24, "x": 40}),
        dtype="uint16",
    )
    stream = create_stream(settings)
    for i in range(400):
        try:
            stream.append(make_frame(i))
        except WriterError:  # the failure, if the writer got there already
            break
    deadline = time.monotonic() + 10
    while stream.queued_bytes and time.monotonic() < deadline:
        time.sleep(0.01)  # written up to the failure, the rest dropped
    time.sleep(0.3)  # the writer's pause: it journals what is in the file
    written = stream.frames_written
    assert 100 < written < 400
    journal = read_journal(journal_path(root))
    assert sorted(index for _, index in journal.frames) == [
        (t,) for t in range(written)
    ]
    with contextlib.suppress(WriterError):  # (raised once, by append or here)
        stream.close()
    assert stream.closed
    assert stream.frames_written == written


METADATA_WRITER = r"""
import os, signal, sys, time
import numpy as np
from ome_stream import (
    AcquisitionSettings, Dimension, OmeTiffFormat, OmeZarrFormat, create_stream
)

n_positions = int(sys.argv[2])
dims = [
    Dimension(name="t", count=None),
    Dimension(name="p", coords=[f"P{i}" for i in range(n_positions)]),
    Dimension(name="y", count=16),
    Dimension(name="x", count=16),
]
if len(sys.argv) > 3:  # OME-Zarr with a suffix of its own
    fmt = OmeZarrFormat(suffix=sys.argv[3])
else:
    fmt = "ome-zarr" if sys.argv[1].endswith(".zarr") else OmeTiffFormat()
settings = AcquisitionSettings(
    root_path=sys.argv[1], dimensions=dims, dtype="uint16", format=fmt
)
stream = create_stream(settings)
keys = int(os.environ.get("METADATA_KEYS", 30))
for i in range(20 * n_positions):  # 30 keys a frame, as an MDA's properties
    meta = {f"Device{k}-Property": f"value {i} {k}" for k in range(keys)}
    stream.append(np.full((16, 16), i, np.uint16), frame_metadata=meta)
while stream.frames_written < 20 * n_positions:
    time.sleep(0.001)
print("written", flush=True)
time.sleep(600)
"""


def _killed_with_metadata(root: Path, n_positions: int, *suffix: str) -> None:
    args = (str(root), str(n_positions), *suffix)
    kill_when_ready(METADATA_WRITER, *args, ready="written", after=0.3)


@pytest.mark.parametrize("suffix", [".ome.tiff", ".ome.zarr"])
def test_a_copied_dataset_is_recovered_where_it_is_now(
    suffix: str, tmp_path: Path
) -> None:
    """The journal names the path the dataset was written at; recover works
    on the path it is given (copied from the microscope's computer)."""
    written = tmp_path / "microscope" / f"run{suffix}"
    written.parent.mkdir()
    _killed_with_metadata(written, 1)
    before = {p: p.stat().st_mtime_ns for p in written.parent.rglob("*")}
    copy = tmp_path / "analysis" / f"run{suffix}"
    shutil.copytree(written.parent, copy.parent)
    report = recover(copy)
    assert report.output_path == copy
    assert report.frames_recovered == 20
    assert report.pages_not_journaled == 0
    assert not journal_path(copy).exists()
    assert validate_dataset(copy) == []
    if suffix == ".ome.tiff":
        (data,) = readers.tifffile_ome_series(copy)
    else:
        data = readers.read_tensorstore(copy / "0")
    assert data.shape[0] == 20
    for t in range(20):
        assert (data[t] == t).all()
    # the dataset where it was written is untouched, still to recover
    assert {p: p.stat().st_mtime_ns for p in written.parent.rglob("*")} == before
    assert journal_path(written).is_file()


def test_a_dataset_with_a_suffix_of_its_own_is_recovered_where_it_is(
    tmp_path: Path,
) -> None:
    written = tmp_path / "a" / "run"  # written as run.ngff
    written.parent.mkdir()
    _killed_with_metadata(written, 1, ".ngff")
    copy = tmp_path / "b" / "run.ngff"
    shutil.copytree(written.parent, copy.parent)
    assert recover(copy).frames_recovered == 20
    data = readers.read_tensorstore(copy / "0")
    assert [int(data[t].max()) for t in range(20)] == list(range(20))
    renamed = tmp_path / "c" / "renamed.ngff"  # renamed with its journal
    renamed.parent.mkdir()
    (written.parent / "run.ngff").rename(renamed)
    journal_path(written.parent / "run.ngff").rename(journal_path(renamed))
    assert recover(renamed).frames_recovered == 20
    assert validate_dataset(renamed) == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ('{"event":"frame","i":[0]}', "a record lacks its 'p' field"),
        ('{"event":"frame","p":5,"i":[0]}', "position 5, index [0]"),
        ('{"event":"frame","p":0,"i":[0,1]}', "index [0, 1]) does not fit"),
    ],
)
def test_a_journal_record_that_does_not_fit_is_refused(
    damage: str, message: str, tmp_path: Path
) -> None:
    root = tmp_path / "odd.ome.zarr"
    _killed_with_metadata(root, 1)
    journal = journal_path(root)
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join([*lines[:-1], damage, lines[-1]]) + "\n")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="cannot be used to recover") as info:
        recover(root)
    assert message in str(info.value)
    result = CliRunner().invoke(app, ["recover", str(root)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_a_dataset_missing_its_parts_is_refused_and_kept(tmp_path: Path) -> None:
    zarr = tmp_path / "parts.ome.zarr"
    _killed_with_metadata(zarr, 1)
    array_json = zarr / "0" / "zarr.json"
    kept = array_json.read_bytes()
    array_json.unlink()  # the chunks are there, the array metadata not
    with pytest.raises(ValueError, match=r"0/zarr.json is missing"):
        recover(zarr)
    assert journal_path(zarr).is_file()
    array_json.write_bytes(kept)
    moved = tmp_path / "elsewhere"
    zarr.rename(moved)  # the data moved, its journal left behind
    with pytest.raises(FileNotFoundError, match="only its journal"):
        recover(zarr)
    assert journal_path(zarr).is_file()
    moved.rename(zarr)
    assert recover(zarr).frames_recovered == 20
    data = readers.read_tensorstore(zarr / "0")
    assert [int(data[t].max()) for t in range(20)] == list(range(20))
    tiffs = tmp_path / "files.ome.tiff"  # three files, one per position
    _killed_with_metadata(tiffs, 3)
    directory = tmp_path / "files"
    (directory / "files_p001.ome.tiff").unlink()
    with pytest.raises(FileNotFoundError, match=r"files_p001\.ome\.tiff missing"):
        recover(directory)
    assert journal_path(directory).is_file()


@pytest.mark.parametrize("first_recovery", ["none", "killed-after-cut"])
def test_pages_past_the_journal_are_reported(
    first_recovery: str, tmp_path: Path
) -> None:
    """Pages a kill left out of the journal (its last ~10 ms) have no record
    of their frames: recover does not keep them, and says how many - also
    when run again after a recovery that was killed once it had cut them
    from the file."""
    root = tmp_path / "late.ome.tiff"
    _killed_with_metadata(root, 1)
    journal = journal_path(root)
    lines = journal.read_text().splitlines(keepends=True)
    frames = [i for i, line in enumerate(lines) if line.startswith('{"event":"frame"')]
    assert len(frames) == 20
    journal.write_text(
        "".join(line for i, line in enumerate(lines) if i not in frames[-5:])
    )
    if first_recovery == "killed-after-cut":
        done = run_python(RECOVER_KILLED_AT, str(root), "cut")
        assert done.returncode == 9, done.stderr
        with tifffile.TiffFile(root) as tif:
            assert len(tif.pages) == 15  # cut already
    result = CliRunner().invoke(app, ["recover", str(root)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "15 frames" in text
    assert "5 pages written in the last moments" in text
    (data,) = readers.tifffile_ome_series(root)
    assert data.shape[0] == 15
    assert [int(data[t].max()) for t in range(15)] == list(range(15))
    with tifffile.TiffFile(root) as tif:
        assert len(tif.pages) == 15
    content = root.read_bytes()  # cut from the file, not only unlinked
    for t in range(20):
        pixels = np.full((16, 16), t, np.uint16).tobytes()
        assert (pixels in content) == (t < 15)


RECOVER_KILLED_AT = r"""
import os, sys
from pathlib import Path
import ome_stream._formats.tiff.pages as pages
import ome_stream._formats.tiff.tifffile as backend_module
from ome_stream import recover

root, stage = Path(sys.argv[1]), sys.argv[2]

def killed(*args, **kwargs):
    os._exit(9)  # as a SIGKILL

if stage == "cut":  # the first file cut, nothing appended yet
    real_apply = pages.ChainCut.apply
    def apply(self):
        real_apply(self)
        killed()
    pages.ChainCut.apply = apply
elif stage == "padding":  # a blank page appended
    real_append = pages.PageAppender.append_blank
    def append_blank(self, nbytes):
        real_append(self, nbytes)
        killed()
    pages.PageAppender.append_blank = append_blank
else:  # half the final OME-XML written
    real_write_parts = backend_module.write_parts
    def write_parts(parts, write):
        text = b"".join(backend_module.part_chunks(parts))
        write(text[: len(text) // 2])
        write.__self__.flush()
        killed()
    backend_module.write_parts = write_parts
recover(root)
"""


@pytest.mark.parametrize(
    ("n_frames", "shown"), [(3, (1, 1, 3)), (13, (1, 1, 10))], ids=["z", "c"]
)
def test_a_kill_in_the_first_step_leaves_the_planes_written_readable(
    n_frames: int, shown: tuple[int, int, int], tmp_path: Path
) -> None:
    """Killed before its first time point is whole (a z-stack of 10 planes
    in each of 2 channels), the file's interim OME-XML describes the whole
    part of it - 3 planes of the first channel, or all 10 - so Bio-Formats
    opens the file before `recover` (an image of no planes it cannot)."""
    root = tmp_path / "first.ome.tiff"
    script = PAUSING_WRITER.format(
        tests_parent=str(Path(__file__).parents[1]), n_frames=n_frames
    )
    args = [str(root), *map(str, SMALL), "none", "10"]
    # (past the interim OME-XML's refresh, ~1 s after the first page)
    kill_when_ready(script, *args, ready="paused", after=1.5)

    def expected(number: int) -> np.ndarray:
        if number == 7:  # (skipped)
            return np.zeros(SMALL, np.uint16)
        return make_frame(number, shape=SMALL)

    info = readers.bioformats_info(root)
    assert info.is_ome_tiff, info.stdout
    assert info.warnings == []
    (series,) = info.series
    assert (series.size_t, series.size_c, series.size_z) == shown
    tczyx = readers.bioformats_pixels(root, info=info)
    assert tczyx.shape == (*shown, *SMALL)
    for z in range(shown[2]):
        np.testing.assert_array_equal(tczyx[0, 0, z], expected(z))
    report = recover(root)
    assert report.frames_recovered == n_frames - (n_frames > 7)
    (tczyx,) = readers.tifffile_ome_series(root)
    assert tczyx.shape == (1, 2, 10, *SMALL)
    for number in range(20):
        c, z = divmod(number, 10)
        blank = np.zeros(SMALL, np.uint16)
        want = expected(number) if number < n_frames else blank
        np.testing.assert_array_equal(tczyx[0, c, z], want)
    assert validate_dataset(root) == []


@pytest.mark.parametrize(
    ("stage", "n_frames"),
    [
        ("cut", 301),
        ("padding", 301),
        ("metadata", 301),  # the final OME-XML is appended, then pointed at
        ("metadata", 5),  # ...even where it would fit over the interim one
    ],
)
def test_a_kill_while_recovering_in_place_then_recover_again(
    stage: str, n_frames: int, tmp_path: Path
) -> None:
    """Recovery in place changes the files; killed at any step, the journal
    is still there, and recover, run again, finishes the work. Killed while
    it writes the final OME-XML, the file keeps the interim one, whole."""
    root = tmp_path / "twice.ome.tiff"
    _killed_in_a_pause(root, n_frames=n_frames)
    once = tmp_path / "once"  # a copy, recovered without a kill
    once.mkdir()
    for path in tmp_path.iterdir():
        if path.is_file():
            shutil.copy2(path, once / path.name)
    expected = recover(once / root.name)
    done = run_python(RECOVER_KILLED_AT, str(root), stage)
    assert done.returncode == 9, done.stderr
    assert journal_path(root).is_file()
    if stage == "metadata":
        interim = readers.validate_ome_xml(readers.tiff_ome_xml(root))
        assert interim.images[0].pixels.size_t >= 1
    report = recover(root)
    steps = -(-n_frames // 2)
    assert report.frames_recovered == n_frames - (n_frames > 7)
    assert report.shapes == [(2 * steps,)]
    # as found before the first run changed anything (not its blank page)
    assert report.pages_not_journaled == expected.pages_not_journaled
    assert (report.frames_skipped, report.frames_lost) == (
        expected.frames_skipped,
        expected.frames_lost,
    )
    _assert_recovered_whole(root, n_frames=n_frames)
    with tifffile.TiffFile(root) as tif:
        assert len(tif.pages) == 2 * steps
    info = readers.bioformats_info(root)
    assert info.is_ome_tiff
    assert info.warnings == []
    assert info.series[0].size_t == steps


def test_the_interim_ome_xml_describes_only_journaled_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """recover cuts each file after its journaled pages: a page the interim
    OME-XML describes must be journaled before the XML is written, or a
    recovery stopped part way (a full disk) leaves it describing a page
    no longer there. Checked at every refresh, against the journal on
    disk."""
    import ome_stream._formats.tiff.tifffile as backend_module
    from ome_stream import AcquisitionSettings, Dimension, create_stream

    monkeypatch.setattr(backend_module, "INTERIM_XML_INTERVAL_S", 0.0)
    refreshes: list[tuple[int, int]] = []  # (pages described, pages journaled)
    real_rewrite = backend_module.TiffFileBackend._rewrite_reserved

    def rewrite(self: Any, file: Any, document: Any, xml: bytes) -> None:
        blocks = document.images[0].pixels.tiff_data_blocks
        described = sum(block.plane_count for block in blocks)
        records = journal_path(root).read_text().count('"event":"frame"')
        refreshes.append((described, records))
        real_rewrite(self, file, document, xml)

    monkeypatch.setattr(backend_module.TiffFileBackend, "_rewrite_reserved", rewrite)
    root = tmp_path / "interim.ome.tiff"
    dims = [
        Dimension(name="t", count=None),
        Dimension(name="c", coords=["DAPI", "GFP"]),
        Dimension(name="y", count=SMALL[0]),
        Dimension(name="x", count=SMALL[1]),
    ]
    settings = AcquisitionSettings(root_path=root, dimensions=dims, dtype="uint16")
    with create_stream(settings) as stream:
        for i in range(400):
            stream.append(make_frame(i, shape=SMALL))
            time.sleep(0.001)  # (a refresh is due 10x its time after one)
    assert len([r for r in refreshes if r[0] > 2]) > 5
    assert all(described <= journaled for described, journaled in refreshes)


@pytest.mark.parametrize("compression", ["none", "lzw"])
def test_recovery_keeps_the_acquisition_date(compression: str, tmp_path: Path) -> None:
    """The recovered OME-XML dates the images when they were acquired (the
    journal's open record), not when they were recovered."""
    from datetime import datetime, timezone

    root = tmp_path / "dated.ome.tiff"
    _killed_in_a_pause(root, compression=compression)
    interim = readers.validate_ome_xml(readers.tiff_ome_xml(root))
    acquired = interim.images[0].acquisition_date
    assert acquired is not None
    journaled = read_journal(journal_path(root)).created
    assert journaled is not None
    assert abs((journaled - acquired).total_seconds()) < 1e-3
    started = datetime.now(timezone.utc)
    assert (started - acquired).total_seconds() > 0.3  # (killed 0.3 s after)
    recover(root)
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(root))
    assert [image.acquisition_date for image in ome.images] == [acquired]


def test_damage_past_the_journaled_pages_does_not_stop_recovery(
    tmp_path: Path,
) -> None:
    """A file cut short inside a page the journal does not list (a power
    loss after the page was linked, before its bytes were on disk) still
    recovers: only the journaled pages must be sound."""
    root = tmp_path / "torn.ome.tiff"
    _killed_with_metadata(root, 1)
    journal = journal_path(root)
    lines = journal.read_text().splitlines(keepends=True)
    frames = [i for i, line in enumerate(lines) if line.startswith('{"event":"frame"')]
    journal.write_text(
        "".join(line for i, line in enumerate(lines) if i not in frames[-5:])
    )
    with tifffile.TiffFile(root) as tif:
        last_pixels = tif.pages[19].dataoffsets[0]
    with root.open("r+b") as f:
        f.truncate(last_pixels + 10)  # inside the last page's pixels
    report = recover(root)
    assert report.frames_recovered == 15
    assert validate_dataset(root) == []
    (data,) = readers.tifffile_ome_series(root)
    assert [int(data[t].max()) for t in range(data.shape[0])] == list(range(15))


def test_a_journal_with_a_gap_is_refused_for_a_rebuild_too(tmp_path: Path) -> None:
    root = tmp_path / "gap.ome.tiff"
    before = _killed_in_a_pause(root, compression="lzw")
    journal = journal_path(root)
    lines = journal.read_text().splitlines(keepends=True)
    frames = [i for i, line in enumerate(lines) if line.startswith('{"event":"frame"')]
    journal.write_text("".join(line for i, line in enumerate(lines) if i != frames[9]))
    with pytest.raises(ValueError, match="not journaled in order"):
        recover(root)
    result = CliRunner().invoke(app, ["recover", str(root)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert root.read_bytes() == before[root]


def test_the_room_needed_covers_the_metadata_in_every_file(tmp_path: Path) -> None:
    """Multi-file OME-TIFF keeps the full OME-XML, with each frame's metadata,
    in every file ("redundant"): the estimate counts it once per file."""
    import ome_stream._recover as recover_module
    from ome_stream._formats.tiff.tifffile import TiffFileBackend
    from ome_stream._settings import AcquisitionSettings

    root = tmp_path / "multi.ome.tiff"
    _killed_with_metadata(root, 3)
    output = tmp_path / "multi"
    contents = read_journal(journal_path(output))
    settings = AcquisitionSettings.model_validate(contents.settings)
    original = TiffFileBackend(settings)
    assert len(original.paths) == 3
    to_rebuild = recover_module._room_to_rebuild(original, output)
    pages = original.replay(recover_module._write_order(original, contents))
    in_place = recover_module._room_in_place(original, contents, pages)
    sizes = sum(path.stat().st_size for path in original.paths)
    recover(output)
    completed = sum(path.stat().st_size for path in original.paths)
    assert completed - sizes > 3 * 20 * 30 * 10  # the metadata, in each file
    assert completed - sizes <= in_place
    assert completed <= to_rebuild  # (the files a rebuild makes: the same)
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(original.paths[2]))
    values = readers.plane_map_values(ome, image=2)
    assert values[(19, 0, 0)]["Device29-Property"] == "value 59 29"


def test_the_room_needed_covers_files_started_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of which nothing was journaled is started anew in place: its
    first page reserves room for the interim OME-XML (twice its size, for
    the versions to come). The estimate counts that, and the disk blocks
    each file's new bytes take: with little metadata, most of the room."""
    import ome_stream._recover as recover_module
    from ome_stream._formats.tiff.tifffile import TiffFileBackend
    from ome_stream._settings import AcquisitionSettings

    root = tmp_path / "anew.ome.tiff"
    monkeypatch.setenv("METADATA_KEYS", "0")
    _killed_with_metadata(root, 20)
    output = tmp_path / "anew"
    journal = journal_path(output)
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text(  # every record of the positions but the first lost
        "".join(line for line in lines if '"p":' not in line or '"p":0,' in line)
    )
    contents = read_journal(journal)
    settings = AcquisitionSettings.model_validate(contents.settings)
    original = TiffFileBackend(settings)
    pages = original.replay(recover_module._write_order(original, contents))
    assert pages == [20] + [0] * 19
    new_files = original.new_files_nbytes(pages)
    estimate = recover_module._room_in_place(original, contents, pages)
    before = [path.stat() for path in original.paths]
    report = recover(output)
    assert report.pages_not_journaled == 19 * 20
    after = [path.stat() for path in original.paths]
    grown = sum(  # disk blocks taken: file 0 grows, the others anew
        a.st_blocks * 512 - (b.st_blocks * 512 if kept else 0)
        for a, b, kept in zip(after, before, pages)
    )
    assert estimate - new_files < grown <= estimate  # (short without them)
    assert validate_dataset(output) == []


def test_a_file_with_no_page_yet_is_started_anew_without_a_warning(
    tmp_path: Path,
) -> None:
    """A file per position is made (its TIFF header written) before its first
    page; killed between the two, it holds no page. recover starts it anew
    and says nothing of it (tifffile, asked, logs that it has no pages)."""
    import logging

    root = tmp_path / "header.ome.tiff"
    _killed_with_metadata(root, 3)
    output = tmp_path / "header"
    journal = journal_path(output)
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(line for line in lines if '"p":2,' not in line))
    last = sorted(output.glob("*.ome.tiff"))[-1]
    with tifffile.TiffFile(last) as tif:
        header = 16 if tif.is_bigtiff else 8
    last.write_bytes(last.read_bytes()[: header - (8 if header == 16 else 4)])
    last.write_bytes(last.read_bytes().ljust(header, b"\0"))  # (no IFD linked)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        report = recover(output)
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []
    assert report.frames_recovered == 2 * 20
    assert report.pages_not_journaled == 0
    assert validate_dataset(output) == []
    with tifffile.TiffFile(last) as tif:  # (its image: one blank time point)
        assert len(tif.pages) == 1
        assert not tif.pages.first.asarray().any()


def test_a_damaged_journal_or_file_is_refused_in_plain_words(tmp_path: Path) -> None:
    root = tmp_path / "damaged.ome.tiff"
    _killed_with_metadata(root, 1)
    journal = journal_path(root)
    kept = journal.read_bytes()
    journal.write_text("this is not a journal\n")
    before = root.read_bytes()
    with pytest.raises(ValueError, match="cannot be used to recover damaged"):
        recover(root)
    result = CliRunner().invoke(app, ["recover", str(root)])
    assert result.exit_code == 1
    assert "cannot be used to recover" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    journal.write_bytes(kept)
    with root.open("r+b") as f:  # the last pages cut off
        f.truncate(len(before) // 2)
    with pytest.raises(ValueError, match=r"page \d+ of damaged.ome.tiff cannot be"):
        recover(root)
    result = CliRunner().invoke(app, ["recover", str(root)])
    assert result.exit_code == 1
    assert "was the file truncated" in " ".join(result.output.split()).lower()
    assert root.read_bytes() == before[: len(before) // 2]
    assert journal.read_bytes() == kept
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_damaged_file_on_a_full_disk_is_named_as_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Freeing space would not help a file cut short: recover says what is
    wrong with it, not that the disk is full."""
    root = tmp_path / "damaged.ome.tiff"
    _killed_with_metadata(root, 1)
    before = root.read_bytes()
    with root.open("r+b") as f:
        f.truncate(len(before) // 2)
    _as_if_free(monkeypatch, tmp_path, 1000)
    with pytest.raises(ValueError, match=r"page \d+ of damaged.ome.tiff cannot be"):
        recover(root)
    assert root.read_bytes() == before[: len(before) // 2]


def test_recover_and_validate_of_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ome-stream validate .` and `recover .` inside a killed OME-Zarr
    store ("." has no name to put the journal's beside). The killed store
    reads, but is not what the run makes until recovered (sized for the
    whole run, no missing-frame record): validate fails it, naming the
    recover command (it exited 0, with a note a pipeline would not see)."""
    root = tmp_path / "here.ome.zarr"
    script = PAUSING_WRITER.format(
        tests_parent=str(Path(__file__).parents[1]), n_frames=PAUSE_FRAMES
    )
    args = [str(root), *map(str, SMALL), "none", "1"]
    kill_when_ready(script, *args, ready="paused", after=0.3)
    assert journal_path(root).is_file()
    monkeypatch.chdir(root)
    problems = validate_dataset(".")
    assert all("Traceback" not in problem for problem in problems)
    # killed: its journal is held by no one
    note = (
        "here.ome.zarr.ome-stream-journal.jsonl is beside it: the run was "
        "interrupted; `ome-stream recover .` completes it."
    )
    assert interrupted_note(".") == note
    assert problems == [note]
    result = CliRunner().invoke(app, ["validate", "."])
    assert result.exit_code == 1
    assert "`ome-stream recover .` completes it" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["recover", "."])
    assert result.exit_code == 0, result.output
    assert not journal_path(root).exists()
    assert validate_dataset(".") == []
    result = CliRunner().invoke(app, ["validate", "."])
    assert result.exit_code == 0, result.output


def test_a_full_disk_during_zarr_recovery_is_named_and_recoverable_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ome_stream._formats.zarr.layout as layout

    root = tmp_path / "full.ome.zarr"
    _killed_with_metadata(root, 1)

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(layout, "write_group", full)
    with pytest.raises(OSError, match="Not enough free space to recover full") as info:
        recover(root)
    assert info.value.errno == errno.ENOSPC
    assert "run recover again" in str(info.value)
    assert journal_path(root).is_file()
    monkeypatch.undo()
    assert recover(root).frames_recovered == 20
    assert validate_dataset(root) == []
    data = readers.read_tensorstore(root / "0")
    assert [int(data[t].max()) for t in range(20)] == list(range(20))


def test_clean_close_leaves_no_journal(tmp_path: Path) -> None:
    from ome_stream import AcquisitionSettings, create_stream, dims_from_standard_axes

    for suffix in (".ome.zarr", ".ome.tiff"):
        settings = AcquisitionSettings(
            root_path=str(tmp_path / f"c{suffix}"),
            dimensions=dims_from_standard_axes({"t": 2, "y": 4, "x": 4}),
            dtype="uint8",
        )
        with create_stream(settings) as stream:
            journal = journal_path(settings.output_path)
            assert journal.exists()
            # an ordinary data file: read-write, never executable
            assert journal.stat().st_mode & 0o111 == 0
            stream.append(np.zeros((4, 4), np.uint8))
            stream.append(np.ones((4, 4), np.uint8))
        assert not journal_path(settings.output_path).exists()
        assert sorted(p.name for p in tmp_path.iterdir() if "journal" in p.name) == []
    with tifffile.TiffFile(tmp_path / "c.ome.tiff") as tif:
        assert len(tif.pages) == 2


@pytest.mark.parametrize(
    ("suffix", "shape", "blocks"),
    [
        (".ome.zarr", SMALL, ""),
        (".ome.zarr", LARGE, ""),
        (".ome.zarr", SMALL, "shard8"),  # (tensorstore writes them)
        (".ome.zarr", LARGE, "shard8"),  # (written straight to their files)
        (".ome.zarr", SMALL, "chunk4"),
        (".ome.zarr", LARGE, "chunk4"),
        (".ome.tiff", SMALL, ""),
    ],
)
def test_a_kill_during_a_pause_loses_no_frame_written_before_it(
    suffix: str, shape: tuple[int, int], blocks: str, tmp_path: Path
) -> None:
    """Frames written in a burst are journaled (and, in OME-TIFF, described
    by the interim OME-XML) during the pause that follows, not only when the
    next frame comes: killed in the pause, nothing written is lost. With
    shards or chunks of 8 or 4 time points, the last is still open in the
    pause (6 or 2 of its time points came): a second into the pause it is
    written as it is, so its frames are not lost either."""
    root = tmp_path / f"paused{suffix}"
    script = PAUSING_WRITER.format(
        tests_parent=str(Path(__file__).parents[1]), n_frames=PAUSE_FRAMES
    )
    # the writer journals after ~20 ms idle, writes open shards or chunks
    # (of 2 MB at most here) after 1 s; the interim OME-XML is refreshed at
    # most every second
    args = [str(root), *map(str, shape), "none", "1", blocks]
    kill_when_ready(script, *args, ready="paused", after=2.5)
    frames = {(i // 2, i % 2): i for i in range(PAUSE_FRAMES) if i != 7}
    if suffix == ".ome.tiff":  # readable as it is, every page described
        ome = readers.validate_ome_xml(readers.tiff_ome_xml(root))
        assert ome.images[0].pixels.size_t == PAUSE_FRAMES // 2
        (series,) = readers.tifffile_ome_series(root)
        assert series.shape[:2] == (PAUSE_FRAMES // 2, 2)
        np.testing.assert_array_equal(series[149, 1, 0], make_frame(299, shape=shape))
    journal = read_journal(journal_path(root))
    journaled = {
        i: json.loads(text)["frame"] for (_, i), text in journal.frames.items()
    }
    assert journaled == frames
    assert [index for _, index in journal.skipped] == [(3, 1)]
    report = recover(root)
    assert report.frames_recovered == PAUSE_FRAMES - 1
    assert report.frames_lost == []
    assert validate_dataset(root) == []
    if suffix == ".ome.zarr":
        data = readers.read_tensorstore(root / "0")
        records = json.loads((root / "zarr.json").read_text())["attributes"]
        metadata = {
            tuple(r["storage_index"]): r["frame"]
            for r in records["ome_stream"]["frame_metadata"]
        }
        assert readers.zarr_missing_frames(root) == [(3, 1)]
    else:
        (tczyx,) = readers.tifffile_ome_series(root)
        data = tczyx[:, :, 0]
        ome = readers.validate_ome_xml(readers.tiff_ome_xml(root))
        metadata = {
            (t, c): int(values["frame"])
            for (t, c, _), values in readers.plane_map_values(ome).items()
        }
    assert data.shape == (PAUSE_FRAMES // 2, 2, *shape)
    for (t, c), number in frames.items():
        np.testing.assert_array_equal(data[t, c], make_frame(number, shape=shape))
    assert metadata == frames


BOUNDED_TIFF_WRITER = r"""
import sys, time
from ome_stream import AcquisitionSettings, create_stream, dims_from_standard_axes
sys.path.insert(0, {tests_parent!r})
from tests._cases import make_frame

dims = dims_from_standard_axes({{"t": 500, "c": 2, "y": 24, "x": 40}})
stream = create_stream(
    AcquisitionSettings(root_path=sys.argv[1], dimensions=dims, dtype="uint16")
)
print("started", flush=True)
for i in range(1000):
    stream.append(make_frame(i, shape=(24, 40)))
    time.sleep(0.005)
"""


def test_killed_tiff_is_fully_readable_before_recover(tmp_path: Path) -> None:
    root = tmp_path / "killed.ome.tiff"
    script = BOUNDED_TIFF_WRITER.format(tests_parent=str(Path(__file__).parents[1]))
    # past at least one in-place refresh of the OME-XML
    kill_when_ready(script, str(root), ready="started", after=2.5)
    info = readers.bioformats_info(root)
    assert info.is_ome_tiff
    assert info.warnings == []
    size_t = info.series[0].size_t
    assert 1 <= size_t < 500  # only complete time points are described
    data = readers.bioformats_pixels(root, info=info)
    assert data.shape == (size_t, 2, 1, 24, 40)
    for t in range(size_t):
        for c in range(2):
            np.testing.assert_array_equal(
                data[t, c, 0], make_frame(2 * t + c, shape=(24, 40))
            )


def test_journal_read_line_by_line_ignores_only_a_torn_last_line(
    tmp_path: Path,
) -> None:
    """Frame lines are read without decoding their metadata (kept as the
    text journaled); lines written some other way (spaces, another key
    order) are parsed as JSON; a bad last line (torn) is ignored, a bad
    line before it refused."""
    from ome_stream._journal import Journal

    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"dtype": "uint16"})
    journal.written([(0, (0,), checked_metadata_json({"n": 0, "s": "}\n"}), False)])
    journal.close()
    with path.open("a", encoding="utf-8") as f:
        f.write('{"event": "frame", "p": 0, "i": [1], "m": {"n": 1}}\n')
        f.write('{"p":0,"event":"frame","i":[2]}\n')
        f.write('{"event":"frame","p":0,"i":[3],"m":{"n":3,"s":"cut')  # torn
    contents = read_journal(path)
    assert list(contents.frames) == [(0, (0,)), (0, (1,)), (0, (2,))]
    assert contents.metadata((0, (0,))) == {"n": 0, "s": "}\n"}
    assert contents.metadata((0, (1,))) == {"n": 1}
    assert contents.metadata((0, (2,))) is None
    with path.open("a", encoding="utf-8") as f:
        f.write("\n")  # still the last line: ignored, with its newline too
    assert list(read_journal(path).frames) == [(0, (0,)), (0, (1,)), (0, (2,))]
    with path.open("a", encoding="utf-8") as f:
        f.write('{"event":"skip","p":0,"i":[4]}\n')  # and the journal went on
    with pytest.raises(ValueError, match="line 5 is not valid JSON"):
        read_journal(path)


@pytest.mark.parametrize(
    "tail",
    [
        '{"event":"frame","p":0,"i":[3],"m":{"n":3',  # torn
        '{"event":"global","namespace":"late","data":{"k":1}}',  # whole but "\n"
        "",
    ],
)
def test_a_recovery_record_follows_the_last_whole_line(
    tail: str, tmp_path: Path
) -> None:
    """recover journals what it found before it changes a file; the record
    goes after the last whole line (a torn tail cut, a newline added where
    only it is missing), so the journal still reads, with every record."""
    from ome_stream._journal import Journal, record_recovery

    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"dtype": "uint16"})
    journal.written([(0, (i,), None, False) for i in range(3)])
    journal.close()
    with path.open("a", encoding="utf-8") as f:
        f.write(tail)
    contents = read_journal(path)
    assert contents.recovery is None
    record_recovery(path, contents, pages_not_journaled=4)
    record_recovery(path, read_journal(path), pages_not_journaled=0)  # (a rerun)
    again = read_journal(path)
    assert again.recovery == {"event": "recover", "pages_not_journaled": 4}
    assert list(again.frames) == [(0, (0,)), (0, (1,)), (0, (2,))]
    assert again.global_metadata == ({"late": {"k": 1}} if "global" in tail else {})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(json.loads(line) for line in lines)  # every line whole JSON
    assert again.end == path.stat().st_size


@pytest.mark.parametrize(
    ("created", "read"),
    [
        ('"2026-11-22T10:00:00.250000+00:00"', "2026-11-22T10:00:00.250000+00:00"),
        ('"2026-11-22T10:00:00"', None),  # no time zone: not a point in time
        ('"yesterday"', None),
        ("12", None),
    ],
)
def test_the_journal_dates_the_acquisition(
    created: str, read: str | None, tmp_path: Path
) -> None:
    from datetime import datetime

    from ome_stream._journal import Journal

    path = tmp_path / "j.jsonl"
    Journal(
        path, {}, datetime.fromisoformat(read or "2000-01-01T00:00:00+00:00")
    ).close()
    assert read_journal(path).created is not None
    path.write_text(f'{{"event":"open","created":{created},"settings":{{}}}}\n')
    contents = read_journal(path)
    assert contents.created == (None if read is None else datetime.fromisoformat(read))


def test_journal_lines_are_plain_json_read_back_exactly(tmp_path: Path) -> None:
    from ome_stream._journal import Journal

    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"dtype": "uint16"})
    metadata = {"note": 'quote " and ü', "xy": [1.5, -2], "nested": {"ok": True}}
    journal.written(
        [
            (0, (0, 1), None, False),
            (1, (2, 0), checked_metadata_json(metadata), False),
            (0, (3, 0), None, True),
        ]
    )
    journal.written([(2, (4, 4), None, False)])
    journal.skip(2, (5, 0))
    journal.received([(1, (6, 1))])
    journal.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    # every line is standard JSON (other tools may read the journal)
    assert [json.loads(line)["event"] for line in lines] == [
        "open",
        "frame",
        "frame",
        "skip",
        "frame",
        "skip",
        "received",
    ]
    contents = read_journal(path)
    assert contents.settings == {"dtype": "uint16"}
    assert contents.created is None  # (not given: recovery dates it as now)
    assert contents.frames == {
        (0, (0, 1)): None,
        (1, (2, 0)): checked_metadata_json(metadata),  # the text journaled
        (2, (4, 4)): None,
    }
    assert contents.metadata((1, (2, 0))) == metadata
    assert contents.skipped == {(0, (3, 0)), (2, (5, 0))}
    assert contents.lost == [(1, (6, 1))]


KILLED_IN_ZARR_JSON = (
    UNBOUNDED_8X8_SCRIPT
    + """
stream = create_stream(settings)
for i in range(5):
    stream.append(np.full((8, 8), i, np.uint16), {"i": i})
while stream.frames_written < 5:  # all journaled as written
    time.sleep(0.01)
replace = os.replace
def killed(source, target):  # the temporary is whole, not yet renamed
    if str(target).endswith("zarr.json"):
        os._exit(9)
    replace(source, target)
os.replace = killed
stream.set_global_metadata("lab", {"room": 1})  # rewrites the group zarr.json
stream.close()
"""
)


def test_recover_removes_the_zarr_json_a_kill_interrupted(tmp_path: Path) -> None:
    """A kill while a zarr.json was being replaced leaves its hidden
    temporary beside it (the document itself stays whole); recover deletes
    it, and keeps every frame the journal holds."""
    root = tmp_path / "killed.ome.zarr"
    done = run_python(KILLED_IN_ZARR_JSON, str(root))
    assert done.returncode == 9, done.stderr
    left = [p.name for p in root.glob(".zarr.json.*.tmp")]
    assert len(left) == 1
    journaled = sorted(index for _, index in read_journal(journal_path(root)).frames)
    assert journaled  # (the last write may not have been confirmed yet)
    report = recover(root)
    assert report.frames_recovered == len(journaled)
    assert list(root.rglob("*.tmp")) == []
    assert validate_dataset(root) == []
    data = readers.read_tensorstore(root / "0")
    for (t,) in journaled:
        assert int(data[t, 0, 0]) == t


def test_a_journal_write_cut_short_is_taken_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk cuts a journal write short (part of its lines in the file,
    then ENOSPC): that part is cut off again, so the lines written at the
    next try are read back whole. Left there, they made one line of two in
    the middle of the journal, which refused the whole journal."""
    import ome_stream._journal as journal_module
    from ome_stream._journal import Journal

    path = tmp_path / "run.ome.zarr.ome-stream-journal.jsonl"
    journal = Journal(path, {"root_path": "run.ome.zarr"})
    first = [(0, (i,), f'{{"frame":{i}}}', False) for i in range(3)]
    journal.written(first)
    later = [(0, (i,), f'{{"frame":{i}}}', i == 4) for i in range(3, 6)]
    real_write = os.write

    def cut_short(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", cut_short)
    with pytest.raises(OSError, match="No space"):
        journal.written(later)
    monkeypatch.undo()
    journal.written(later)  # the next try (idle, close)
    journal.written([(0, (6,), '{"frame":6}', False)])
    journal.close()
    contents = read_journal(path)
    assert sorted(contents.frames) == [(0, (i,)) for i in (0, 1, 2, 3, 5, 6)]
    assert contents.skipped == {(0, (4,))}
    assert contents.metadata((0, (6,))) == {"frame": 6}
    assert path.read_bytes().count(b"\n") == 8  # the open line and 7 frames


def test_a_journal_write_that_cannot_be_taken_back_stops_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The part of a cut-short write cannot be cut off either: nothing more
    is written to the journal (a line after it would join it, and the
    whole journal be refused), and what it held reads back."""
    import ome_stream._journal as journal_module
    from ome_stream._journal import Journal

    path = tmp_path / "run.ome.zarr.ome-stream-journal.jsonl"
    journal = Journal(path, {"root_path": "run.ome.zarr"})
    journal.written([(0, (0,), '{"frame":0}', False)])
    real_write = os.write

    def cut_short(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    def refused(fd: int, size: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(journal_module.os, "write", cut_short)
    monkeypatch.setattr(journal_module.os, "ftruncate", refused)
    with pytest.raises(OSError, match="No space"):
        journal.written([(0, (1,), '{"frame":1}', False)])
    monkeypatch.undo()
    with pytest.raises(OSError, match="could not be taken back"):
        journal.written([(0, (2,), '{"frame":2}', False)])
    journal.close()
    assert sorted(read_journal(path).frames) == [(0, (0,))]  # (a torn tail)


def test_a_second_stream_at_the_same_path_is_refused_while_one_writes(
    tmp_path: Path,
) -> None:
    """A stream still writing holds its journal: another `create_stream` of
    the same output (overwrite=True) is refused before it touches anything,
    where it replaced the files under the first and emptied its journal."""
    from ome_stream import AcquisitionSettings, create_stream, dims_from_standard_axes

    for suffix in (".ome.zarr", ".ome.tiff"):
        settings = AcquisitionSettings(
            root_path=str(tmp_path / f"busy{suffix}"),
            dimensions=dims_from_standard_axes({"t": 4, "y": 8, "x": 8}),
            dtype="uint16",
            overwrite=True,
        )
        first = create_stream(settings)
        first.append(np.full((8, 8), 1, np.uint16))
        journal = journal_path(settings.output_path)
        before = journal.read_bytes()
        with pytest.raises(BlockingIOError, match="held by a stream still writing"):
            create_stream(settings)
        assert journal.read_bytes().startswith(before)  # (not emptied)
        first.append(np.full((8, 8), 2, np.uint16))
        first.close()
        assert validate_dataset(settings.output_path) == []
        with create_stream(settings) as second:  # free again
            second.append(np.full((8, 8), 3, np.uint16))


def test_a_journal_that_cannot_be_started_is_not_left_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal's first line cannot be written (a full disk):
    create_stream fails, and the journal is not left open and locked (it
    read as held by a stream still writing, and `recover` refused it)."""
    from ome_stream import AcquisitionSettings, create_stream, dims_from_standard_axes
    from ome_stream._journal import Journal

    settings = AcquisitionSettings(
        root_path=str(tmp_path / "nospace.ome.zarr"),
        dimensions=dims_from_standard_axes({"t": 4, "y": 8, "x": 8}),
        dtype="uint16",
    )

    def full(self: Any, record: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Journal, "_write", full)
    with pytest.raises(OSError, match="No space"):
        create_stream(settings)
    monkeypatch.undo()
    # not left open, nor left empty (it read as an interrupted run's)
    assert not journal_path(settings.output_path).exists()
    assert interrupted_note(settings.output_path) is None
    with create_stream(settings.model_copy(update={"overwrite": True})) as stream:
        stream.append(np.ones((8, 8), np.uint16))
    assert validate_dataset(settings.output_path) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_does_not_hold_the_journal(tmp_path: Path) -> None:
    """A process forked while a stream writes (a multiprocessing pool, say)
    shares its open files: it must not keep the journal's lock once the
    stream's process lets go of it (it kept `recover` refusing)."""
    from ome_stream import AcquisitionSettings, create_stream, dims_from_standard_axes
    from ome_stream._journal import journal_in_use

    settings = AcquisitionSettings(
        root_path=str(tmp_path / "forked.ome.zarr"),
        dimensions=dims_from_standard_axes({"t": 4, "y": 8, "x": 8}),
        dtype="uint16",
    )
    stream = create_stream(settings)
    journal = journal_path(settings.output_path)
    read, write = os.pipe()
    started_read, started_write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(started_write, b"s")  # (after the fork handlers ran)
        os.read(read, 1)  # until the parent is done
        os._exit(0)
    try:
        assert os.read(started_read, 1) == b"s"
        assert journal_in_use(journal) is True
        stream._backend.journal.close()  # as the process ending would
        assert journal_in_use(journal) is False
    finally:
        os.write(write, b"x")
        os.waitpid(child, 0)
        for fd in (read, write, started_read, started_write):
            os.close(fd)
        stream.close()


def test_a_file_of_a_directory_reached_through_a_link_finds_its_journal(
    tmp_path: Path,
) -> None:
    """`run` a symbolic link to the directory of a directory layout (the
    journal is beside the link, where the stream wrote it): a file in it
    finds the journal beside `run`, not beside the link's target."""
    from ome_stream._journal import find_dataset_journal

    (tmp_path / "big" / "run").mkdir(parents=True)
    (tmp_path / "big" / "run" / "run_p000.ome.tiff").write_bytes(b"II*\0")
    (tmp_path / "run").symlink_to(tmp_path / "big" / "run", target_is_directory=True)
    journal = journal_path(tmp_path / "run")
    journal.write_text("{}\n")
    assert find_dataset_journal(tmp_path / "run" / "run_p000.ome.tiff") == (
        tmp_path / "run",
        journal,
    )
    # a file named otherwise is not one of the dataset's
    (tmp_path / "big" / "run" / "notes.ome.tiff").write_bytes(b"II*\0")
    assert find_dataset_journal(tmp_path / "run" / "notes.ome.tiff") is None


def test_a_store_reached_through_a_link_to_it_finds_its_journal(
    tmp_path: Path,
) -> None:
    """`here.ome.zarr` a symbolic link to a killed store: its journal is
    beside the store, and the recover command named is the link's."""
    from ome_stream._journal import find_dataset_journal

    root = tmp_path / "real.ome.zarr"
    _killed_with_metadata(root, 1)
    link = tmp_path / "here.ome.zarr"
    link.symlink_to(root, target_is_directory=True)
    assert find_dataset_journal(link) == (root, journal_path(root))
    assert interrupted_note(link) == (
        f"{journal_path(root).name} is beside it: the run was interrupted; "
        f"`ome-stream recover {link}` completes it."
    )
    assert recover(link).frames_recovered == 20
    assert validate_dataset(root) == []


def _small(root: Path, **fmt: Any) -> Any:
    from ome_stream import AcquisitionSettings, dims_from_standard_axes

    return AcquisitionSettings(
        root_path=str(root),
        dimensions=dims_from_standard_axes({"t": 4, "y": 8, "x": 8}),
        dtype="uint16",
        overwrite=True,
        **({"format": {"name": "ome-tiff", **fmt}} if fmt else {}),
    )


def test_a_stream_that_cannot_start_does_not_keep_its_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream fails after its journal is taken (its writer thread
    cannot start): the journal is let go and removed; another stream at
    the path starts (it was refused for the life of the process)."""
    import threading

    from ome_stream import create_stream

    settings = _small(tmp_path / "nothread.ome.zarr")
    real_start = threading.Thread.start

    def refused(self: threading.Thread) -> None:
        if self.name == "ome-stream-writer":
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", refused)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        create_stream(settings)
    monkeypatch.undo()
    assert not journal_path(settings.output_path).exists()
    with create_stream(settings) as stream:
        stream.append(np.ones((8, 8), np.uint16))
    assert validate_dataset(settings.output_path) == []


def test_a_journal_that_cannot_be_removed_is_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removing the journal at close fails: the error is raised, and the
    journal is not kept locked (recover and new streams were refused for
    the life of the process)."""
    from ome_stream import create_stream
    from ome_stream._journal import journal_in_use

    settings = _small(tmp_path / "stuck.ome.zarr")
    stream = create_stream(settings)
    stream.append(np.ones((8, 8), np.uint16))
    journal = journal_path(settings.output_path)
    real_unlink = Path.unlink

    def refused(self: Path, missing_ok: bool = False) -> None:
        if self == journal:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refused)
    with pytest.raises(PermissionError):
        stream.close()
    monkeypatch.undo()
    assert journal_in_use(journal) is False


def test_a_stream_started_while_another_opens_its_output_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first stream holds its journal before it makes its output: a
    second, started meanwhile (overwrite=True), is refused before it
    touches anything (between the first's check and its lock it replaced
    the files being made)."""
    from ome_stream import create_stream
    from ome_stream._formats.tiff.tifffile import TiffFileBackend

    settings = _small(tmp_path / "race.ome.tiff", prefer_single_file="always")
    real_open = TiffFileBackend.open
    refused: list[BaseException] = []

    def open_with_a_second_stream(self: TiffFileBackend) -> None:
        real_open(self)
        if not refused:
            with pytest.raises(BlockingIOError) as info:
                create_stream(settings)
            refused.append(info.value)

    monkeypatch.setattr(TiffFileBackend, "open", open_with_a_second_stream)
    with create_stream(settings) as stream:
        for i in range(4):
            stream.append(np.full((8, 8), i, np.uint16))
    assert "held by a stream still writing" in str(refused[0])
    assert validate_dataset(settings.output_path) == []
    with tifffile.TiffFile(settings.output_path) as tif:
        assert [int(page.asarray()[0, 0]) for page in tif.pages] == [0, 1, 2, 3]


def test_overwriting_the_other_tiff_layout_of_a_live_stream_is_refused(
    tmp_path: Path,
) -> None:
    """A stream writes `lay.ome.tiff` as one file; another, with the same
    root path as a directory and overwrite=True, would remove that file and
    its journal: it is refused, and the first finishes whole."""
    from ome_stream import create_stream

    single = _small(tmp_path / "lay.ome.tiff", prefer_single_file="always")
    directory = _small(tmp_path / "lay.ome.tiff", prefer_single_file="never")
    with create_stream(single) as stream:
        stream.append(np.full((8, 8), 1, np.uint16))
        with pytest.raises(BlockingIOError, match="held by a stream still"):
            create_stream(directory)
        assert journal_path(single.output_path).is_file()
        stream.append(np.full((8, 8), 2, np.uint16))
    assert validate_dataset(single.output_path) == []
    assert not directory.output_path.exists()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_leaves_the_parents_stream_alone(tmp_path: Path) -> None:
    """A child forked while a stream writes cannot write to it (its writer
    thread is not there: frames were queued and dropped), and exiting does
    not close it (that finished the parent's output under it and removed
    its journal)."""
    from ome_stream import create_stream
    from ome_stream._stream import _close_open_streams

    settings = _small(tmp_path / "parent.ome.tiff", prefer_single_file="always")
    stream = create_stream(settings)
    stream.append(np.full((8, 8), 1, np.uint16))
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        code = 4
        try:
            for write in (
                lambda: stream.append(np.full((8, 8), 9, np.uint16)),
                lambda: stream.set_global_metadata("child", {"x": 1}),
            ):
                try:
                    write()
                    code = 2
                    break
                except RuntimeError as exc:
                    code = 0 if "belongs to process" in str(exc) else 3
            _close_open_streams()  # (what exiting runs)
        finally:
            os._exit(code)  # (never back into pytest)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert journal_path(settings.output_path).is_file()
    for i in (2, 3):
        stream.append(np.full((8, 8), i, np.uint16))
    stream.close()
    assert validate_dataset(settings.output_path) == []
    with tifffile.TiffFile(settings.output_path) as tif:
        assert [int(page.asarray()[0, 0]) for page in tif.pages] == [1, 2, 3]


def test_a_stream_makes_the_directories_its_output_is_in(tmp_path: Path) -> None:
    """The journal is taken before the output is made: the directories the
    output goes in are made first (a new dated folder, say)."""
    from ome_stream import create_stream

    for name, fmt in [
        ("a.ome.zarr", {}),
        ("b.ome.tiff", {"prefer_single_file": "always"}),
        ("c.ome.tiff", {"prefer_single_file": "never"}),
    ]:
        settings = _small(tmp_path / "2026-11-23" / "sub" / name, **fmt)
        with create_stream(settings) as stream:
            stream.append(np.ones((8, 8), np.uint16))
        assert validate_dataset(settings.output_path) == [], name


def test_an_output_that_exists_keeps_what_is_beside_it(tmp_path: Path) -> None:
    """create_stream without overwrite on an output that exists: refused
    before it takes a journal, so what is beside the output stays as it
    was: no journal made, a killed run's kept, an empty one (left by an
    attempt killed before its first line) left and not taken for an
    interrupted run."""
    from ome_stream import create_stream

    settings = _small(tmp_path / "done.ome.zarr")
    with create_stream(settings) as stream:
        stream.append(np.ones((8, 8), np.uint16))
    keep = settings.model_copy(update={"overwrite": False})
    journal = journal_path(settings.output_path)
    with pytest.raises(FileExistsError):
        create_stream(keep)
    assert not journal.exists()  # (none made)
    journal.write_bytes(b"")
    assert interrupted_note(settings.output_path) is None  # (nothing in it)
    with pytest.raises(FileNotFoundError, match="No ome-stream journal"):
        recover(settings.output_path)
    with pytest.raises(FileExistsError):
        create_stream(keep)
    assert journal.read_bytes() == b""
    journal.write_bytes(b'{"event":"open"}\n')
    with pytest.raises(FileExistsError):
        create_stream(keep)
    assert journal.read_bytes() == b'{"event":"open"}\n'  # (a run's kept)


def test_an_output_a_live_stream_writes_exists_for_another(tmp_path: Path) -> None:
    """Without overwrite, an output another stream is still writing is
    refused as existing (FileExistsError, as for any output that exists:
    a "next free name" loop goes on), not as held."""
    from ome_stream import create_stream

    first = _small(tmp_path / "run_001.ome.zarr")
    with create_stream(first) as stream:
        stream.append(np.ones((8, 8), np.uint16))
        taken = first.model_copy(update={"overwrite": False})
        with pytest.raises(FileExistsError, match="already exists"):
            create_stream(taken)
    assert validate_dataset(first.output_path) == []


def test_recover_of_a_path_that_does_not_exist_says_so(tmp_path: Path) -> None:
    """A multi-position OME-TIFF run given as `run.ome.tiff` is written to
    `run/`: recover of `run.ome.tiff` says the path does not exist and
    which to give (it said the run was closed cleanly)."""
    result = CliRunner().invoke(app, ["recover", str(tmp_path / "run.ome.tiff")])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "run.ome.tiff does not exist" in text
    assert "closed cleanly" not in text


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_an_overwrite_that_fails_part_way_gives_up_the_killed_run(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """overwrite=True over a killed run, and the new stream fails after it
    removed the killed run's files (a full disk): the killed run's journal
    is not left beside data it no longer describes (validate called the
    path an interrupted run, and recover said its files were missing).
    Nothing is left to recover, and the path is free for the next stream."""
    from ome_stream import create_stream
    from ome_stream._formats.tiff.tifffile import TiffFileBackend
    from ome_stream._formats.zarr.base import ZarrBackend

    root = tmp_path / f"killed{suffix}"
    _killed_with_metadata(root, 1)
    journal = journal_path(root)
    assert read_journal(journal).frames  # (a run to recover, until replaced)

    def full(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    if suffix == ".ome.zarr":
        monkeypatch.setattr(ZarrBackend, "_write_group", full)
    else:
        monkeypatch.setattr(TiffFileBackend, "_new_file", full)
    settings = _small(root, **({"backend": "auto"} if suffix == ".ome.tiff" else {}))
    with pytest.raises(OSError, match="No space"):
        create_stream(settings)
    monkeypatch.undo()
    assert not root.exists()  # (removed before the failure)
    assert not journal.exists()
    assert interrupted_note(root) is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        recover(root)
    with create_stream(settings.model_copy(update={"overwrite": False})) as stream:
        stream.append(np.ones((8, 8), np.uint16))
    assert validate_dataset(root) == []


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_a_recovery_holds_the_journal_until_it_is_done(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While recover works on a killed run, a stream started to replace the
    dataset (overwrite=True) and a second recovery are refused, nothing
    changed (they were not: the stream deleted the files under the
    recovery, which then reported frames that were gone and deleted the
    new stream's journal), and validate says the run is not finished."""
    import ome_stream._recover as recovery
    from ome_stream import create_stream

    root = tmp_path / f"killed{suffix}"
    _killed_with_metadata(root, 1)
    journal = journal_path(root)
    recovering = "_recover_zarr" if suffix == ".ome.zarr" else "_recover_tiff"
    real = getattr(recovery, recovering)
    seen: dict[str, Any] = {}

    def meanwhile(settings: Any, contents: Any) -> Any:
        before = journal.read_bytes()
        replacing = _small(
            root, **({} if suffix == ".ome.zarr" else {"suffix": suffix})
        )
        with pytest.raises(BlockingIOError, match="or by a recovery of it") as refused:
            create_stream(replacing)
        seen["stream"] = str(refused.value)
        with pytest.raises(BlockingIOError, match="held by"):
            recover(root)
        seen["note"] = interrupted_note(root)
        assert journal.read_bytes() == before
        return real(settings, contents)

    monkeypatch.setattr(recovery, recovering, meanwhile)
    report = recover(root)
    assert "close that stream (or let the recovery finish) first" in seen["stream"]
    assert "held by a stream still writing (or a recovery running)" in seen["note"]
    assert report.frames_recovered == 20
    assert not journal.exists()
    assert validate_dataset(root) == []
    if suffix == ".ome.tiff":
        (data,) = readers.tifffile_ome_series(root)
    else:
        data = readers.read_tensorstore(root / "0")
    assert data.shape[0] == 20
    assert all((data[t] == t).all() for t in range(20))


def test_an_overwrite_refused_keeps_the_killed_run_it_would_replace(
    tmp_path: Path,
) -> None:
    """A killed single-file run, and a stream still writing the directory
    layout of the same root path: an overwrite of the single file is
    refused by that stream, "Nothing was changed", and the killed run's
    journal is kept whole (the overwrite had emptied it first: the run
    could no longer be recovered)."""
    from ome_stream import create_stream

    root = tmp_path / "lay.ome.tiff"
    _killed_with_metadata(root, 1)
    journal = journal_path(root)
    kept = journal.read_bytes(), root.read_bytes()
    directory = _small(root, prefer_single_file="never")
    with create_stream(directory.model_copy(update={"overwrite": False})) as stream:
        stream.append(np.full((8, 8), 1, np.uint16))
        single = _small(root, prefer_single_file="always")
        with pytest.raises(BlockingIOError, match="Nothing was changed"):
            create_stream(single)
        assert (journal.read_bytes(), root.read_bytes()) == kept
    assert validate_dataset(directory.output_path) == []
    assert recover(root).frames_recovered == 20
    assert validate_dataset(root) == []


def test_the_other_layout_is_given_up_before_its_files_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed run with a file per position, replaced by one file
    (overwrite=True), and a position's file cannot be removed (open in a
    viewer on Windows, say): the killed run's journal is gone with the
    files that were removed (it was left, and validate called the
    directory an interrupted run that recover could not complete)."""
    from ome_stream import create_stream

    root = tmp_path / "lay.ome.tiff"
    _killed_with_metadata(root, 2)
    directory = tmp_path / "lay"
    assert journal_path(directory).is_file()
    stuck = directory / "lay_p001.ome.tiff"
    real_unlink = Path.unlink

    def busy(self: Path, missing_ok: bool = False) -> None:
        if self == stuck:
            raise OSError(errno.EBUSY, "Device or resource busy", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", busy)
    with pytest.raises(OSError, match="busy"):
        create_stream(_small(root, prefer_single_file="always"))
    monkeypatch.undo()
    assert stuck.exists()
    assert not journal_path(directory).exists()
    assert interrupted_note(directory) is None
    with create_stream(_small(root, prefer_single_file="always")) as stream:
        stream.append(np.full((8, 8), 1, np.uint16))
    assert validate_dataset(root) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_child_forked_during_a_recovery_does_not_hold_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process forked while recover works (a worker pool started by
    another thread) does not keep the journal locked once the recovery
    stops: recover, run again, is not refused as "held" while the child
    lives."""
    import ome_stream._recover as recovery

    root = tmp_path / "killed.ome.zarr"
    _killed_with_metadata(root, 1)
    read, write = os.pipe()
    children = []

    def fork_then_stop(settings: Any, contents: Any) -> Any:
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            os.read(read, 1)
            os._exit(0)
        children.append(child)
        raise RuntimeError("stopped")

    monkeypatch.setattr(recovery, "_recover_zarr", fork_then_stop)
    with pytest.raises(RuntimeError, match="stopped"):
        recover(root)
    monkeypatch.undo()
    try:
        assert recover(root).frames_recovered == 20
    finally:
        os.write(write, b"x")
        for child in children:
            os.waitpid(child, 0)
        os.close(read)
        os.close(write)
    assert validate_dataset(root) == []


def test_a_read_only_journal_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """recover of an OME-TIFF records what it found in the journal before
    it changes the files: a journal it cannot write is named ("read-only
    ... make it writable"), nothing changed (it said only "truncate")."""
    import ome_stream._journal as journal_module

    root = tmp_path / "locked.ome.tiff"
    _killed_with_metadata(root, 1)
    journal = journal_path(root)
    before = journal.read_bytes(), root.read_bytes()
    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any) -> int:
        if Path(path) == journal and flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(journal_module.os, "open", read_only)
    result = CliRunner().invoke(app, ["recover", str(root)])
    monkeypatch.undo()
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "is read-only" in text, text
    assert "make it writable" in text
    assert "Nothing was changed" in text
    assert (journal.read_bytes(), root.read_bytes()) == before
    assert recover(root).frames_recovered == 20


@pytest.mark.parametrize("shards", [False, True])
def test_a_finished_block_is_journaled_while_frames_keep_coming(
    shards: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks (or shards) of several frames, frames coming without a
    pause: a block whose write has finished is journaled at the next frame,
    not when the next block is written (a chunk of 50 frames at 50
    frames/s: a second later, and a kill meanwhile had recover report the
    whole block, on disk, as lost)."""
    import threading

    import ome_stream._stream as stream_module
    from ome_stream import AcquisitionSettings, Dimension, create_stream
    from ome_stream._formats.zarr.tensorstore import TensorStoreBackend

    monkeypatch.setattr(stream_module, "IDLE_AFTER_S", 3600.0)  # (no pause)
    finished = threading.Event()  # (the block's write, told done from here)
    real_write = TensorStoreBackend._write_region

    class Later:
        def __init__(self, future: Any) -> None:
            self.future = future

        def done(self) -> bool:
            return finished.is_set() and bool(self.future.done())

        def result(self) -> Any:
            finished.wait(30)
            return self.future.result()

    def write_region(self: Any, array: Any, region: Any, data: Any) -> Any:
        return Later(real_write(self, array, region, data))

    monkeypatch.setattr(TensorStoreBackend, "_write_region", write_region)
    settings = AcquisitionSettings(
        root_path=str(tmp_path / "blocks.ome.zarr"),
        dimensions=[
            Dimension(
                name="t",
                count=None,
                chunk_size=5 if shards else 10,
                shard_size_chunks=2 if shards else None,
            ),
            Dimension(name="y", count=16),
            Dimension(name="x", count=16),
        ],
        dtype="uint16",
    )
    journal = journal_path(settings.output_path)
    with create_stream(settings) as stream:
        backend = stream._backend
        for t in range(10):  # the first block, then its write
            stream.append(np.full((16, 16), t, np.uint16))
        deadline = time.monotonic() + 30
        while stream.stats().frames_queued and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not read_journal(journal).frames  # (in flight: not journaled)
        finished.set()
        while not all(c.done() for c, *_ in backend._pending):
            time.sleep(0.005)
        stream.append(np.full((16, 16), 10, np.uint16))
        while stream.stats().frames_queued and time.monotonic() < deadline:
            time.sleep(0.005)
        assert sorted(read_journal(journal).frames) == [(0, (t,)) for t in range(10)]


def test_a_journal_recover_cannot_use_is_named_with_what_to_do(
    tmp_path: Path,
) -> None:
    """A killed run whose journal is damaged (or from another version):
    validate fails the dataset and says the journal cannot be used, and to
    delete it to keep the dataset as it is (it said `recover` completes
    it, which then refused); recover says the same; once it is deleted,
    the dataset validates as it is."""
    root = tmp_path / "damaged.ome.zarr"
    _killed_with_metadata(root, 1)
    journal = journal_path(root)
    journal.write_bytes(b"{not json\n" + journal.read_bytes())
    (problem,) = validate_dataset(root)
    assert "journal cannot be used to recover it" in problem
    assert "delete the journal to keep it so" in problem
    result = CliRunner().invoke(app, ["recover", str(root)])
    assert result.exit_code == 1
    assert "delete the journal to keep the dataset so" in " ".join(
        result.output.split()
    )
    # settings this version cannot take: named by field, with a hint
    lines = journal.read_bytes().split(b"\n", 2)
    record = json.loads(lines[1])
    record["settings"]["dtype"] = "complex256"
    journal.write_bytes(json.dumps(record).encode() + b"\n" + lines[2])
    (problem,) = validate_dataset(root)
    assert "its settings' dtype" in problem, problem
    assert "another version of ome-stream" in problem
    journal.unlink()
    assert validate_dataset(root) == []


ORDER_WRITER = r"""
import sys, time, warnings
import numpy as np
from ome_stream import AcquisitionSettings, create_stream, dims_from_standard_axes

warnings.simplefilter("ignore")  # (the order's warning, said at create_stream)
settings = AcquisitionSettings(
    root_path=sys.argv[1],
    dimensions=dims_from_standard_axes({"t": 4, "z": 2, "c": 2, "y": 8, "x": 8}),
    dtype="uint16",
    storage_order="acquisition",
)
stream = create_stream(settings)
for i in range(6):
    stream.append(np.full((8, 8), i, np.uint16))
while stream.frames_written < 6:
    time.sleep(0.001)
print("written", flush=True)
time.sleep(600)
"""


def test_recover_of_a_store_in_an_order_ngff_does_not_allow_does_not_warn(
    tmp_path: Path,
) -> None:
    """A store written in an order OME-Zarr does not allow (warned when it
    was made), killed: recover takes its journaled settings without
    warning again (where warnings are errors, as here, it raised)."""
    root = tmp_path / "order.ome.zarr"
    kill_when_ready(ORDER_WRITER, str(root), ready="written", after=0.1)
    assert read_journal(journal_path(root)).frames
    report = recover(root)  # (warnings are errors here)
    assert report.frames_recovered == 6
