"""Per-frame metadata kept for the final metadata without growing memory:
`FrameRecords` spill to an anonymous file on the output's disk, and the
files still hold every frame's metadata exactly."""

from __future__ import annotations

import gc
import json
import os
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ome_stream._frame_metadata as frame_metadata
from ome_stream import AcquisitionSettings, Dimension, create_stream
from ome_stream._frame_metadata import (
    FrameRecord,
    MetadataJSON,
    RecordSpill,
    encode_metadata,
)
from tests import _readers as readers
from tests._cases import UNBOUNDED_8X8_SCRIPT, run_python


def _metadata(number: int) -> MetadataJSON:
    # escapes, non-ASCII, nesting and tabs/newlines inside strings: the
    # spill file's lines must keep them apart from its own separators
    return encode_metadata(
        {
            "n": number,
            "text": f"tab\there\nnew line µ {number}",
            "nested": {"a": [number, None, True]},
        }
    )


def test_records_read_back_in_order_across_spills(tmp_path: Path) -> None:
    spill = RecordSpill(tmp_path, memory_bytes=1500)
    images = [spill.records() for _ in range(3)]
    expected: list[list[FrameRecord]] = [[], [], []]
    for number in range(200):
        image = number % 3 if number % 7 else 0  # uneven, interleaved
        index = (number, image)
        images[image].append(index, _metadata(number))
        expected[image].append(FrameRecord(index, _metadata(number)))
        assert spill.in_memory < 1500  # spilled as soon as the budget is reached
    assert os.listdir(tmp_path) == []  # the file has no name
    for records, want in zip(images, expected):
        assert len(records) == len(want)
        assert list(records) == want
        assert len(records._blocks) > 3  # most of them came from the file
        for start in (0, 1, 5, len(want) - 1, len(want), len(want) + 3):
            assert list(records.since(start)) == want[start:]
    # a failed write's frames: spilled ones, the newest (in memory), and
    # one that never had metadata; twice, the second overlapping the first
    size = spill._size
    kept = expected[1]
    for lost in (
        {r.storage_index for r in kept[3:40:4]} | {(999, 1)},
        {r.storage_index for r in kept[7:40:4] + kept[-3:]},
    ):
        images[1].discard(lost)
        kept = [r for r in kept if r.storage_index not in lost]
        assert list(images[1]) == kept
        assert len(images[1]) == len(kept)
        for start in (0, 2, 10, len(kept) - 1):
            assert list(images[1].since(start)) == kept[start:]
    assert spill._size == size  # marked dropped, not written again
    assert list(images[2]) == expected[2]  # the others are untouched


FULL_DISK_SPILL = """
import json, resource, sys
from pathlib import Path
from ome_stream._frame_metadata import RecordSpill, encode_metadata

def metadata(n):
    return encode_metadata({"n": n, "text": "x" * 50})

spill = RecordSpill(Path(sys.argv[1]), memory_bytes=1000)
records = spill.records()
n = 0
while not records._blocks:  # a first spill goes through
    records.append((n,), metadata(n)); n += 1
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (spill._size, hard))  # disk full
blocks = len(records._blocks)
for _ in range(40):  # spills that fail: the records stay in memory
    records.append((n,), metadata(n)); n += 1
assert len(records._blocks) == blocks and spill.in_memory > 2000
# still readable while the disk is full (nothing pending in a buffer)
assert [r.storage_index for r in records] == [(i,) for i in range(n)]
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
for _ in range(40):
    records.append((n,), metadata(n)); n += 1
assert len(records._blocks) > blocks and spill.in_memory < 1000
assert [r.metadata_json for r in records] == [metadata(i) for i in range(n)]
print("ok", n)
"""


def test_records_stay_in_memory_while_the_spill_cannot_be_written(
    tmp_path: Path,
) -> None:
    """A full disk (here a file-size limit, in a process of its own): the
    records stay in memory, none lost, all still readable; the spill is
    tried again once as much more has come, and goes through once there is
    room."""
    done = run_python(FULL_DISK_SPILL, str(tmp_path), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


def _settings(path: Path, positions: int, **kw: Any) -> AcquisitionSettings:
    return AcquisitionSettings(
        root_path=str(path),
        dimensions=[
            Dimension(name="t", count=None, type="time"),
            Dimension(name="p", count=positions, type="position"),
            Dimension(name="c", count=2, type="channel"),
            Dimension(name="y", count=8, type="space"),
            Dimension(name="x", count=8, type="space"),
        ],
        dtype="uint16",
        **kw,
    )


def _mda_metadata(number: int) -> dict[str, Any]:
    return {
        "delta_t": 0.25 * number,
        "exposure_time": 0.01,
        "position_x": 10.0 + number,
        "camera": "Camera",
        "property_values": json.dumps([{"dev": "Filter", "val": f"F{number % 3}"}]),
        "frame": number,
    }


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_spilled_metadata_reaches_the_files(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a spill every few frames, the files hold every frame's metadata,
    read back by zarr-python or by ome-types from the OME-XML tifffile
    reads."""
    monkeypatch.setattr(frame_metadata, "SPILL_MEMORY_BYTES", 2000)
    settings = _settings(tmp_path / f"spill{suffix}", positions=2)
    with create_stream(settings) as stream:
        for number in range(5 * 2 * 2 + 2):  # the last step incomplete
            stream.append(
                np.full((8, 8), number, np.uint16), frame_metadata=_mda_metadata(number)
            )
    backend = stream._backend
    assert all(len(member._blocks) >= 2 for member in backend._spill._members)
    # The spill file is beside the dataset, not in it: a closed stream's
    # object holds it until collected, and a file open in the dataset keeps
    # it from being deleted (named until closed on Windows, `.nfs...` on NFS).
    spill_fd = backend._spill._file._file.fileno()
    fd_link = Path(f"/proc/self/fd/{spill_fd}")
    if fd_link.is_symlink():  # (Linux: the file an fd is open on)
        # (a file with no name: "<directory>/#<inode> (deleted)")
        where = Path(os.readlink(fd_link)).parent
        assert where == settings.output_path.absolute().parent, where
    # after close, the records still reach the files
    stream.set_global_metadata("late", {"x": 1})
    # frame n: t = n // 4, position (n // 2) % 2, c = n % 2
    by_position: dict[int, list[tuple[int, int, int]]] = {0: [], 1: []}
    for number in range(22):
        by_position[(number // 2) % 2].append((number, number // 4, number % 2))
    if suffix == ".ome.zarr":
        import zarr

        for position, frames in by_position.items():
            attrs = zarr.open_group(str(settings.output_path / str(position))).attrs
            got = attrs["ome_stream"]["frame_metadata"]
            assert got == [
                {**_mda_metadata(n), "storage_index": [t, c]} for n, t, c in frames
            ]
        assert zarr.open_group(str(settings.output_path)).attrs["late"] == {"x": 1}
        return
    # (a file per position, each with the whole dataset's OME-XML)
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(backend.paths[1]))
    annotations = {a.id: a for a in ome.structured_annotations.map_annotations}
    assert any((a.namespace or "").endswith("late") for a in annotations.values())
    for position, frames in by_position.items():
        planes = {(p.the_t, p.the_c): p for p in ome.images[position].pixels.planes}
        for number, t, c in frames:
            plane = planes[(t, c)]
            assert plane.delta_t == pytest.approx(0.25 * number)
            assert plane.position_x == pytest.approx(10.0 + number)
            (ref,) = plane.annotation_refs
            values = {m.k: m.value for m in annotations[ref.id].value.ms}
            assert values["frame"] == str(number)
            assert values["property_values"] == _mda_metadata(number)["property_values"]


def _wait_written(stream: Any) -> None:
    deadline = time.monotonic() + 60
    while stream.queued_bytes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.queued_bytes == 0


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_metadata_of_a_long_run_does_not_grow_memory(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python memory after 20 000 frames with metadata is about what it was
    after 4 000: the records went to the spill file (held in memory they
    took about 0.35 KB a frame, 5.6 MB more here; the rest varies by about
    0.5 MB, pydantic's work for the interim OME-XML, and the buffers kept
    for reuse, at most as many as the queue held at once: a small queue).
    Garbage is collected before each measure: reference cycles left by
    `inspect.signature` calls (~48 KB each) made it 1-2.4 MB at times."""
    monkeypatch.setattr(frame_metadata, "SPILL_MEMORY_BYTES", 64 * 1024)
    settings = _settings(
        tmp_path / f"long{suffix}",
        positions=1,
        max_queue_bytes=2**20,
        append_timeout=None,
    )
    frame = np.zeros((8, 8), np.uint16)
    tracemalloc.start()
    try:
        with create_stream(settings) as stream:
            for number in range(20_000):
                stream.append(frame, frame_metadata=_mda_metadata(number))
                if number == 3_999:
                    _wait_written(stream)
                    gc.collect()  # live memory, not cycles awaiting collection
                    early, _ = tracemalloc.get_traced_memory()
            _wait_written(stream)
            gc.collect()
            late, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert late - early < 1_500_000
    assert len(stream._backend._images[0].records) == 20_000


@pytest.mark.parametrize("count", [1, 511, 512, 513, 1024, 1025])
def test_records_are_written_to_zarr_json_in_pieces(count: int, tmp_path: Path) -> None:
    """zarr.json's frame_metadata is written piece by piece (never all in
    memory); the document is the same JSON whatever the count."""
    from ome_stream._formats.zarr.layout import (
        RawJSONPieces,
        group_document,
        write_json_atomic,
    )
    from ome_stream._formats.zarr.layout import _records_json as records_json

    spill = RecordSpill(tmp_path, memory_bytes=4000)
    records = spill.records()
    for number in range(count):
        records.append((number, 0), _metadata(number))
    pieces = list(records_json(records))
    assert max(map(len, pieces)) < 200 * 512  # a batch of records at most
    document = group_document(
        {"ome_stream": {"frame_metadata": RawJSONPieces(lambda: records_json(records))}}
    )
    write_json_atomic(tmp_path / "zarr.json", document)
    written = json.loads((tmp_path / "zarr.json").read_text("utf-8"))
    assert written["attributes"]["ome_stream"]["frame_metadata"] == [
        {**json.loads(_metadata(n)), "storage_index": [n, 0]} for n in range(count)
    ]


UNCLOSED_WRITER = (
    UNBOUNDED_8X8_SCRIPT
    + """
import ome_stream._frame_metadata as frame_metadata

frame_metadata.SPILL_MEMORY_BYTES = 4096  # spilled many times over
stream = create_stream(settings)
for number in range(600):
    stream.append(np.full((8, 8), number, np.uint16), frame_metadata={"n": number})
while stream.queued_bytes:  # all written, so spilled before exit
    time.sleep(0.01)
assert stream._backend._spill._members[0]._blocks
# never closed: the stream is finished at exit
"""
)


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_a_stream_left_open_is_finished_at_exit_with_its_spilled_metadata(
    suffix: str, tmp_path: Path
) -> None:
    """The records in the spill file are still readable when the exit hook
    closes a stream left open (the file is not closed first)."""
    root = tmp_path / f"open{suffix}"
    done = run_python(UNCLOSED_WRITER, str(root))
    assert done.returncode == 0, done.stderr
    assert "failed" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]
    if suffix == ".ome.zarr":
        records = readers.zarr_documents(root)[""]["attributes"]["ome_stream"][
            "frame_metadata"
        ]
        assert records == [{"n": n, "storage_index": [n]} for n in range(600)]
        return
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(root))
    assert readers.plane_map_values(ome) == {
        (t, 0, 0): {"n": str(t)} for t in range(600)
    }
