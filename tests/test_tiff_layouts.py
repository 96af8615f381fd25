"""OME-TIFF layouts (one file, a directory with redundant / master-tiff /
companion-file metadata), reading frames back, and get/update_metadata.

Every dataset is written for real and read back with readers we did not
write: Bio-Formats (one dataset, one series per position, every pixel and
the per-frame metadata of every position), the OME 2016-06 schema, tifffile
and bioio.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from ome_types import OME, model

from ome_stream import AcquisitionSettings, Dimension, Position, create_stream, recover
from ome_stream._formats.tiff.layout import read_dataset_ome
from ome_stream._formats.tiff.tifffile import TiffFileBackend
from ome_stream._journal import journal_path, read_journal
from tests import _readers as readers
from tests._cases import CASES, FRAME, kill_when_ready, make_frame, run_python

POSITIONS = [
    Position(name="A1", x_coord=1.0, y_coord=2.0),
    Position(name="B2", x_coord=10.0, y_coord=20.0),
    Position(name="C3", x_coord=100.0, y_coord=200.0),
]
CHANNELS = ["DAPI", "GFP"]


@dataclass(frozen=True)
class Layout:
    name: str
    prefer_single_file: str
    multi_file_metadata: str
    n_positions: int
    position_axis: bool = True  # False: no position dimension at all

    @property
    def single_file(self) -> bool:
        if self.prefer_single_file == "auto":
            return self.n_positions == 1
        return self.prefer_single_file == "always"

    def format(self) -> dict[str, Any]:
        return {
            "name": "ome-tiff",
            "prefer_single_file": self.prefer_single_file,
            "multi_file_metadata": self.multi_file_metadata,
        }

    def tiffs(self, root: Path) -> list[Path]:
        """The TIFF files for root_path `root` (".../run.ome.tiff")."""
        if self.single_file:
            return [root]
        directory = root.parent / "run"
        return [directory / f"run_p{p:03d}.ome.tiff" for p in range(self.n_positions)]

    def companion(self, root: Path) -> Path | None:
        if self.single_file or self.multi_file_metadata != "companion-file":
            return None
        return root.parent / "run" / "run.companion.ome"

    def full_xml(self, root: Path) -> dict[str, str]:
        """{name: OME-XML} of every file that carries the full metadata."""
        companion = self.companion(root)
        if companion is not None:
            return {companion.name: companion.read_text(encoding="utf-8")}
        tiffs = self.tiffs(root)
        if self.multi_file_metadata == "master-tiff" and not self.single_file:
            tiffs = tiffs[:1]
        return {path.name: readers.tiff_ome_xml(path) for path in tiffs}

    def stubs(self, root: Path) -> list[Path]:
        """TIFFs holding only a BinaryOnly reference."""
        if self.single_file or self.multi_file_metadata == "redundant":
            return []
        tiffs = self.tiffs(root)
        return tiffs if self.companion(root) is not None else tiffs[1:]

    def entry(self, root: Path) -> Path:
        """What a user opens: the file, the companion, or any TIFF (the last,
        which is a BinaryOnly stub in master-tiff)."""
        companion = self.companion(root)
        return companion if companion is not None else self.tiffs(root)[-1]


LAYOUTS = {
    layout.name: layout
    for layout in [
        Layout("single", "auto", "redundant", 1, position_axis=False),
        Layout("always", "always", "redundant", 3),
        Layout("never", "never", "redundant", 1),
        Layout("redundant", "auto", "redundant", 3),
        Layout("master-tiff", "auto", "master-tiff", 3),
        Layout("companion-file", "auto", "companion-file", 2),
    ]
}


def dimensions(layout: Layout, t: int | None = 2, c: int = 2, z: int = 2) -> list[Any]:
    """t-p-c-z acquisition order (positions interleave inside each time
    point), then the frame."""
    dims: list[Any] = [Dimension(name="t", count=t, unit="s", scale=2.0)]
    if layout.position_axis:
        dims.append(Dimension(name="p", coords=POSITIONS[: layout.n_positions]))
    dims += [
        Dimension(name="c", coords=CHANNELS[:c]),
        Dimension(name="z", count=z, unit="um", scale=0.5),
        Dimension(name="y", count=FRAME[0], unit="um", scale=0.25),
        Dimension(name="x", count=FRAME[1], unit="um", scale=0.25),
    ]
    return dims


def settings_for(
    layout: Layout, root: Path, *, t: int | None = 2, **overrides: Any
) -> AcquisitionSettings:
    return AcquisitionSettings(
        root_path=str(root),
        dimensions=dimensions(layout, t=t),
        dtype="uint16",
        format=layout.format(),
        **overrides,
    )


def frame_number(p: int, t: int, c: int, z: int, n_positions: int) -> int:
    return ((t * n_positions + p) * 2 + c) * 2 + z


def frame_metadata(number: int) -> dict[str, Any]:
    return {
        "delta_t": 0.5 * number,
        "exposure_time": 0.001 * (number + 1),
        "position_x": 1000.0 + number,
        "frame": number,
    }


def expected_pixels(
    n_positions: int,
    t: int = 2,
    zero: set[int] = frozenset(),  # type: ignore[assignment]
) -> list[np.ndarray]:
    """(T, C, Z, Y, X) of each position; frame numbers in `zero` are zeros."""
    result = []
    for p in range(n_positions):
        data = np.zeros((t, 2, 2, *FRAME), np.uint16)
        for ti in range(t):
            for c in range(2):
                for z in range(2):
                    number = frame_number(p, ti, c, z, n_positions)
                    if number not in zero:
                        data[ti, c, z] = make_frame(number)
        result.append(data)
    return result


def write_dataset(layout: Layout, root: Path, **overrides: Any) -> AcquisitionSettings:
    settings = settings_for(layout, root, **overrides)
    with create_stream(settings) as stream:
        stream.set_global_metadata("experiment", {"id": 42, "lab": "ours"})
        for number in range(settings.num_frames or 0):
            stream.append(make_frame(number), frame_metadata=frame_metadata(number))
    return settings


def plane_table(ome: OME, image: int) -> dict[tuple[int, int, int], dict[str, Any]]:
    """(t, c, z) -> the plane's fields and its MapAnnotation values."""
    annotations = {
        a.id: a
        for a in (
            ome.structured_annotations.map_annotations
            if ome.structured_annotations
            else []
        )
    }
    table = {}
    for plane in ome.images[image].pixels.planes:
        values: dict[str, Any] = {
            "delta_t": plane.delta_t,
            "exposure_time": plane.exposure_time,
            "position_x": plane.position_x,
        }
        for ref in plane.annotation_refs:
            values.update({m.k: m.value for m in annotations[ref.id].value.ms})
        table[(plane.the_t, plane.the_c, plane.the_z)] = values
    return table


def assert_frame_metadata(ome: OME, n_positions: int, t: int = 2) -> None:
    """Every plane of every position carries its frame's metadata."""
    for p in range(n_positions):
        table = plane_table(ome, p)
        assert len(table) == t * 4, f"position {p}"
        for (ti, c, z), values in table.items():
            number = frame_number(p, ti, c, z, n_positions)
            assert values["delta_t"] == pytest.approx(0.5 * number)
            assert values["exposure_time"] == pytest.approx(0.001 * (number + 1))
            assert values["position_x"] == pytest.approx(1000.0 + number)
            assert int(values["frame"]) == number


def wait_written(stream: Any, frames: int) -> None:
    """Until the writer thread has handed `frames` frames to the backend."""
    deadline = time.monotonic() + 30
    while stream.frames_written < frames:
        assert time.monotonic() < deadline, "the writer thread is stuck"
        time.sleep(0.01)


def file_bytes(paths: list[Path]) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in paths}


# ------------------------------------------------------------- layouts


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_is_one_dataset_with_a_series_per_position(
    name: str, tmp_path: Path
) -> None:
    layout = LAYOUTS[name]
    root = tmp_path / "run.ome.tiff"
    write_dataset(layout, root)
    n = layout.n_positions
    tiffs = layout.tiffs(root)
    companion = layout.companion(root)
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted([*tiffs, *([companion] if companion else [])])

    # the full OME-XML: schema-valid, every position's planes, copies agree
    full = {
        file_name: readers.validate_ome_xml(xml)
        for file_name, xml in layout.full_xml(root).items()
    }
    documents = list(full.values())
    for ome in documents:
        assert len(ome.images) == n
        assert_frame_metadata(ome, n)
        by_ns = {a.namespace: a for a in ome.structured_annotations.map_annotations}
        assert {m.k: m.value for m in by_ns["experiment"].value.ms} == {
            "id": "42",
            "lab": "ours",
        }
        assert ome.images == documents[0].images
        assert ome.structured_annotations == documents[0].structured_annotations
    tiff_uuids = {
        block.uuid.file_name: block.uuid.value
        for image in documents[0].images
        for block in image.pixels.tiff_data_blocks
        if block.uuid is not None
    }
    if layout.single_file:
        assert tiff_uuids == {}
    else:
        assert tiff_uuids.keys() == {path.name for path in tiffs}
        # each file holding the full XML carries its own UUID (the text is
        # serialised once and the root UUID put in for each file)
        for file_name, ome in full.items():
            if companion is not None and file_name == companion.name:
                assert ome.uuid not in tiff_uuids.values()
            else:
                assert ome.uuid == tiff_uuids[file_name]
    assert len({ome.uuid for ome in documents}) == len(documents)
    # BinaryOnly stubs: schema-valid, name the metadata file (relative) + UUID
    for stub in layout.stubs(root):
        ome = readers.validate_ome_xml(readers.tiff_ome_xml(stub))
        assert ome.images == []
        holder = companion.name if companion else tiffs[0].name
        assert ome.binary_only.metadata_file == holder
        holder_uuid = full[holder].uuid
        assert ome.binary_only.uuid == holder_uuid
        assert ome.uuid == tiff_uuids[stub.name]

    # every file leads to the full metadata (what `validate`/`info` rely on)
    for path in [*tiffs, *([companion] if companion else [])]:
        ome, holder = read_dataset_ome(path)
        assert holder.name in full
        assert ome.images == documents[0].images

    # Bio-Formats: one dataset, a series per position, pixels and metadata
    info = readers.bioformats_info(layout.entry(root))
    assert info.is_ome_tiff, info.stdout
    assert info.warnings == []
    assert info.series_count == n
    names = [p.name for p in POSITIONS[:n]] if layout.position_axis else ["0"]
    assert [s.name for s in info.series] == names
    for series, image in zip(info.series, info.ome.images):
        assert series.shape == (2, 2, 2, *FRAME)
        assert [c.name for c in image.pixels.channels] == CHANNELS
        assert image.pixels.physical_size_z == pytest.approx(0.5)
    assert_frame_metadata(info.ome, n)
    expected = expected_pixels(n)
    got = readers.bioformats_all_pixels(layout.entry(root), info=info)
    for position, (data, want) in enumerate(zip(got, expected)):
        np.testing.assert_array_equal(data, want, err_msg=f"position {position}")
    # tifffile's own OME parser maps the same planes from a full-metadata TIFF
    if companion is None:
        for data, want in zip(readers.tifffile_ome_series(tiffs[0]), expected):
            np.testing.assert_array_equal(data, want)


def test_single_file_positions_read_by_bioio(tmp_path: Path) -> None:
    root = tmp_path / "run.ome.tiff"
    write_dataset(LAYOUTS["always"], root)
    scenes = readers.read_bioio(root)
    assert [s.scene_id for s in scenes] == ["Image:0", "Image:1", "Image:2"]
    for scene, want in zip(scenes, expected_pixels(3)):
        assert scene.channel_names == CHANNELS
        np.testing.assert_array_equal(scene.data, want)


@pytest.mark.parametrize("name", ["always", "companion-file"])
def test_skips_and_early_close_recorded_as_missing(name: str, tmp_path: Path) -> None:
    layout = LAYOUTS[name]
    n = layout.n_positions
    root = tmp_path / "run.ome.tiff"
    settings = settings_for(layout, root, t=5)
    per_t = n * 4
    skipped = {per_t + 1, per_t + 6}  # t=1: p0 c0 z1, p1 c1 z0
    last = per_t + 4  # closed after p1's first plane of t=1
    with create_stream(settings) as stream:
        for number in range(last + 1):
            if number in skipped:
                stream.skip(frames=1)
            else:
                stream.append(make_frame(number), frame_metadata={"frame": number})
    never = set(range(last + 1, 2 * per_t))
    # each position keeps the time points it reached, the last one padded
    size_t = [
        1 + any(frame_number(p, 1, c, z, n) <= last for c in (0, 1) for z in (0, 1))
        for p in range(n)
    ]
    full = readers.validate_ome_xml(next(iter(layout.full_xml(root).values())))
    for p in range(n):
        absent = [
            (z, c, t)
            for t in range(size_t[p])
            for c in range(2)
            for z in range(2)
            if frame_number(p, t, c, z, n) in skipped | never
        ]
        missing = readers.tiff_missing_planes(full, p)
        assert sorted(map(tuple, missing)) == sorted(absent)
        assert full.images[p].pixels.size_t == size_t[p]
    info = readers.bioformats_info(layout.entry(root))
    assert info.is_ome_tiff
    assert info.warnings == []
    assert [s.shape for s in info.series] == [(t, 2, 2, *FRAME) for t in size_t]
    got = readers.bioformats_all_pixels(layout.entry(root), info=info)
    want = expected_pixels(n, zero=skipped | never)
    for data, expected, t in zip(got, want, size_t):
        np.testing.assert_array_equal(data, expected[:t])


def test_overwrite_removes_earlier_outputs_and_keeps_other_files(
    tmp_path: Path,
) -> None:
    root = tmp_path / "run.ome.tiff"
    directory = tmp_path / "run"
    bigger = Layout("three", "auto", "companion-file", 3)
    write_dataset(bigger, root)
    assert (directory / "run.companion.ome").is_file()
    unrelated = [
        directory / "notes.txt",
        directory / "run_p001.ome.tiff.bak",
        directory / "run_pXYZ.ome.tiff",
        directory / "other_p000.ome.tiff",
        tmp_path / "run.txt",
    ]
    for path in unrelated:
        path.write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_dataset(LAYOUTS["redundant"], root)

    smaller = Layout("two", "auto", "redundant", 2)
    write_dataset(smaller, root, overwrite=True)
    ours = sorted(p.name for p in directory.iterdir() if p not in unrelated)
    assert ours == ["run_p000.ome.tiff", "run_p001.ome.tiff"]  # no p002, companion
    ome = readers.validate_ome_xml(
        readers.tiff_ome_xml(directory / "run_p001.ome.tiff")
    )
    assert len(ome.images) == 2

    write_dataset(LAYOUTS["always"], root, overwrite=True)  # switch to one file
    assert sorted(p.name for p in directory.iterdir() if p not in unrelated) == []
    assert root.is_file()

    write_dataset(smaller, root, overwrite=True)  # and back to a directory
    assert not root.exists()
    assert all(path.read_text() == "keep me" for path in unrelated)

    # with no unrelated files left, switching to one file removes the directory
    for path in unrelated:
        path.unlink()
    write_dataset(LAYOUTS["always"], root, overwrite=True)
    assert not directory.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ome.tiff"]


# ------------------------------------------------------- kill, then recover

KILLED_WRITER = r"""
import sys, time
from ome_stream import AcquisitionSettings, Dimension, Position, create_stream
sys.path.insert(0, {tests_parent!r})
from tests._cases import make_frame

root, prefer, placement, n, t = sys.argv[1:6]
n = int(n)
dims = [
    Dimension(name="t", count=None if t == "none" else int(t)),
    Dimension(name="p", coords=[Position(name=f"P{{i}}") for i in range(n)]),
    Dimension(name="c", coords=["DAPI", "GFP"]),
    Dimension(name="y", count=24),
    Dimension(name="x", count=40),
]
fmt = {{"name": "ome-tiff", "prefer_single_file": prefer,
       "multi_file_metadata": placement}}
stream = create_stream(
    AcquisitionSettings(root_path=root, dimensions=dims, dtype="uint16", format=fmt)
)
stream.set_global_metadata("experiment", {{"id": 7}})
print("started", flush=True)
for i in range(100000):
    if i % 17 == 5:
        stream.skip(frames=1)
    else:
        stream.append(make_frame(i), frame_metadata={{"frame": i}})
    time.sleep(0.004)
"""


def _kill_after(seconds: float, root: Path, layout: Layout, t: str) -> None:
    script = KILLED_WRITER.format(tests_parent=str(Path(__file__).parents[1]))
    args = [str(root), layout.prefer_single_file, layout.multi_file_metadata]
    args += [str(layout.n_positions), t]
    kill_when_ready(script, *args, ready="started", after=seconds)


def _killed_frame(number: int) -> np.ndarray:
    if number % 17 == 5:
        return np.zeros(FRAME, np.uint16)
    return make_frame(number)


@pytest.mark.parametrize(
    ("name", "t"),
    [("always", "none"), ("companion-file", "500"), ("master-tiff", "none")],
)
def test_sigkill_readable_then_recovered(name: str, t: str, tmp_path: Path) -> None:
    layout = LAYOUTS[name]
    n = layout.n_positions
    root = tmp_path / "run.ome.tiff"
    output = root if layout.single_file else tmp_path / "run"
    _kill_after(2.5, root, layout, t)  # past at least one interim refresh

    # before recover: the interim metadata describes complete time points
    info = readers.bioformats_info(layout.entry(root))
    assert info.is_ome_tiff, info.stdout
    assert info.warnings == []
    assert info.series_count == n
    killed = readers.bioformats_all_pixels(layout.entry(root), info=info)
    for p, data in enumerate(killed):
        assert data.shape[0] >= 1
        for ti in range(data.shape[0]):
            for c in range(2):
                number = (ti * n + p) * 2 + c
                np.testing.assert_array_equal(data[ti, c, 0], _killed_frame(number))

    journal = read_journal(journal_path(output))
    # a directory layout is recovered through any of its files too
    report = recover(output if layout.single_file else layout.entry(root))
    assert report.frames_recovered == len(journal.frames)
    assert not journal_path(output).exists()
    assert not list(tmp_path.glob(".ome-stream-recover-*"))
    reached = [*journal.frames, *journal.skipped]
    size_t = [
        1 + max((index[0] for q, index in reached if q == p), default=0)
        for p in range(n)
    ]
    full = readers.validate_ome_xml(next(iter(layout.full_xml(root).values())))
    for stub in layout.stubs(root):
        readers.validate_ome_xml(readers.tiff_ome_xml(stub))
    annotations = {a.id: a for a in full.structured_annotations.map_annotations}
    assert "experiment" in {a.namespace for a in annotations.values()}
    for p in range(n):
        frames = {
            (index[0], index[1]): journal.metadata((position, index))["frame"]
            for position, index in journal.frames
            if position == p
        }
        recorded = {}
        for plane in full.images[p].pixels.planes:
            ann = annotations[plane.annotation_refs[0].id]
            recorded[(plane.the_t, plane.the_c)] = int(ann.value.ms[0].value)
        assert recorded == frames
    info = readers.bioformats_info(layout.entry(root))
    assert info.is_ome_tiff
    assert info.warnings == []
    assert [s.size_t for s in info.series] == size_t
    got = readers.bioformats_all_pixels(layout.entry(root), info=info)
    for key in journal.frames:
        p, (ti, c) = key
        number = journal.metadata(key)["frame"]
        np.testing.assert_array_equal(got[p][ti, c, 0], make_frame(number))


# ---------------------------------------------------------------- read_frame


@pytest.mark.parametrize(
    ("name", "compression"),
    [
        ("single", None),
        ("always", None),
        ("always", "lzw"),
        ("companion-file", "deflate"),
    ],
)
def test_read_frame_while_writing_and_after_close(
    name: str, compression: str | None, tmp_path: Path
) -> None:
    layout = LAYOUTS[name]
    n = layout.n_positions
    settings = settings_for(
        layout, tmp_path / "run.ome.tiff", t=3, compression=compression
    )
    backend = TiffFileBackend(settings)
    backend.open()
    order = [
        (p, (t, c, z), frame_number(p, t, c, z, n))
        for t in range(3)
        for p in range(n)
        for c in range(2)
        for z in range(2)
    ]
    written = order[: len(order) - 3]  # closed early: the last planes are padding
    skipped = {number for _, _, number in written if number % 7 == 3}
    for step, (p, index, number) in enumerate(written):
        assert backend.read_frame(p, index) is None
        if number in skipped:
            backend.skip(p, index)
            assert backend.read_frame(p, index) is None
            continue
        backend.write(p, index, make_frame(number), None)
        np.testing.assert_array_equal(backend.read_frame(p, index), make_frame(number))
        earlier_p, earlier_index, earlier_number = written[step // 2]
        earlier = backend.read_frame(earlier_p, earlier_index)
        if earlier_number in skipped:
            assert earlier is None
        else:
            np.testing.assert_array_equal(earlier, make_frame(earlier_number))
    backend.close()
    assert backend.write_error is None  # (nothing failed after a page)
    for p, index, number in order:
        got = backend.read_frame(p, index)
        if number in skipped or (p, index, number) not in written:
            assert got is None
        else:
            np.testing.assert_array_equal(got, make_frame(number))
    path = layout.tiffs(tmp_path / "run.ome.tiff")[0]
    with tifffile.TiffFile(path) as tif:
        expected = {None: "NONE", "lzw": "LZW", "deflate": "ADOBE_DEFLATE"}
        assert tif.pages.first.compression.name == expected[compression]


# ----------------------------------------------------- get/update_metadata


def _rename(ome: OME, suffix: str) -> OME:
    for image in ome.images:
        image.name = f"{image.name}{suffix}"
        image.description = f"edited {suffix}"
    return ome


def test_update_metadata_after_close_is_written_at_once(tmp_path: Path) -> None:
    layout = LAYOUTS["master-tiff"]
    root = tmp_path / "run.ome.tiff"
    settings = settings_for(layout, root)
    with create_stream(settings) as stream:
        for number in range(settings.num_frames or 0):
            stream.append(make_frame(number), frame_metadata=frame_metadata(number))
    metadata = stream.get_metadata()
    assert sorted(metadata) == [0, 1, 2]
    assert metadata[1].binary_only.metadata_file == "run_p000.ome.tiff"
    full = _rename(metadata[0], "-edited")
    full.structured_annotations.map_annotations.append(
        model.MapAnnotation(
            id="Annotation:user",
            namespace="user",
            value=model.Map(ms=[model.Map.M(k="a", value="b")]),
        )
    )
    stream.update_metadata({0: full})
    assert stream.get_metadata()[0] == full
    on_disk = readers.validate_ome_xml(readers.tiff_ome_xml(layout.tiffs(root)[0]))
    assert [i.name for i in on_disk.images] == ["A1-edited", "B2-edited", "C3-edited"]
    assert_frame_metadata(on_disk, 3)
    # global metadata set after close joins the user's document
    stream.set_global_metadata("late", {"note": 1})
    on_disk = readers.validate_ome_xml(readers.tiff_ome_xml(layout.tiffs(root)[0]))
    namespaces = {a.namespace for a in on_disk.structured_annotations.map_annotations}
    assert {"user", "late"} <= namespaces
    assert on_disk.images[0].name == "A1-edited"
    info = readers.bioformats_info(layout.entry(root))
    assert info.warnings == []
    assert [s.name for s in info.series] == ["A1-edited", "B2-edited", "C3-edited"]


@pytest.mark.parametrize("name", ["always", "companion-file"])
def test_update_metadata_before_close_survives_close(name: str, tmp_path: Path) -> None:
    layout = LAYOUTS[name]
    n = layout.n_positions
    root = tmp_path / "run.ome.tiff"
    settings = settings_for(layout, root, t=3)
    stream = create_stream(settings)
    half = n * 4 + 3  # mid-way through t=1
    for number in range(half):
        stream.append(make_frame(number), frame_metadata=frame_metadata(number))
    metadata = stream.get_metadata()  # as it would be if closed now
    keys = [-1, *range(n)] if layout.companion(root) else [0]
    assert sorted(metadata) == keys
    key = keys[0]
    stream.update_metadata({key: _rename(metadata[key], "-x")})
    for number in range(half, 2 * n * 4):  # then close early, before t=2
        stream.append(make_frame(number), frame_metadata=frame_metadata(number))
    stream.set_global_metadata("after-update", {"ok": True})
    stream.close()
    full = readers.validate_ome_xml(next(iter(layout.full_xml(root).values())))
    assert [i.name for i in full.images] == [f"{p.name}-x" for p in POSITIONS[:n]]
    assert all(i.description == "edited -x" for i in full.images)
    assert_frame_metadata(full, n)  # planes written after the update included
    assert "after-update" in {
        a.namespace for a in full.structured_annotations.map_annotations
    }
    assert stream.get_metadata()[key] == full
    stream.set_global_metadata("after-close", {"ok": 2})  # where the OME is
    full = readers.validate_ome_xml(next(iter(layout.full_xml(root).values())))
    assert {"after-update", "after-close"} <= {
        a.namespace for a in full.structured_annotations.map_annotations
    }
    assert full.images[0].name == f"{POSITIONS[0].name}-x"
    info = readers.bioformats_info(layout.entry(root))
    assert info.warnings == []
    assert [s.shape for s in info.series] == [(2, 2, 2, *FRAME)] * n
    assert [s.name for s in info.series] == [f"{p.name}-x" for p in POSITIONS[:n]]


def _bad_documents(metadata: dict[int, OME], key: int) -> list[tuple[Any, type, str]]:
    """(argument, error, message) for every way update_metadata refuses."""
    cases: list[tuple[Any, type, str]] = [
        ([metadata[key]], TypeError, "dict"),
        ({key: metadata[key].to_xml()}, TypeError, "ome_types.OME"),
        ({7: metadata[key]}, KeyError, "valid indices"),
    ]

    def changed(edit: Any) -> OME:
        ome = metadata[key].model_copy(deep=True)
        edit(ome)
        return ome

    def set_pixels(attribute: str, value: Any) -> Any:
        return lambda ome: setattr(ome.images[0].pixels, attribute, value)

    cases += [
        ({key: changed(set_pixels("size_x", 41))}, ValueError, "SizeX=41"),
        ({key: changed(set_pixels("type", "uint8"))}, ValueError, "Type=uint8"),
        ({key: changed(set_pixels("size_t", 1))}, ValueError, "SizeT=1"),
        ({key: changed(lambda o: o.images.pop())}, ValueError, "Images"),
        (
            {key: changed(lambda o: o.images[1].pixels.tiff_data_blocks.pop())},
            ValueError,
            "TiffData",
        ),
        ({key: changed(lambda o: setattr(o, "uuid", None))}, ValueError, "UUID"),
    ]
    return cases


@pytest.mark.parametrize("when", ["before close", "after close"])
def test_update_metadata_refuses_what_would_misdescribe_the_pixels(
    when: str, tmp_path: Path
) -> None:
    layout = LAYOUTS["companion-file"]
    root = tmp_path / "run.ome.tiff"
    settings = settings_for(layout, root)
    stream = create_stream(settings)
    for number in range(settings.num_frames or 0):
        stream.append(make_frame(number), frame_metadata=frame_metadata(number))
    if when == "after close":
        stream.close()
    else:
        wait_written(stream, settings.num_frames or 0)
    metadata = stream.get_metadata()
    files = [*layout.tiffs(root), layout.companion(root)]
    before = file_bytes(files) if when == "after close" else None
    stub = metadata[0].model_copy(deep=True)
    stub.binary_only = None
    stub.images = metadata[-1].images
    cases = [
        *_bad_documents(metadata, -1),
        ({0: stub}, ValueError, "BinaryOnly"),
        ({0: metadata[-1]}, ValueError, "BinaryOnly"),
    ]
    for argument, error, message in cases:
        with pytest.raises(error, match=message):
            stream.update_metadata(argument)
    stream.close()
    if before is not None:
        assert file_bytes(files) == before
    assert stream.get_metadata()[-1] == metadata[-1]
    info = readers.bioformats_info(layout.entry(root))
    assert info.is_ome_tiff
    assert info.warnings == []
    assert info.series_count == 2


def test_documents_differing_only_in_uuid_are_serialised_as_ome_types_would() -> None:
    from ome_stream._formats.tiff.tifffile import _xml_each

    pixels = model.Pixels(
        size_x=4, size_y=3, size_z=1, size_c=1, size_t=2, type="uint16",
        dimension_order="XYZCT", tiff_data_blocks=[model.TiffData(plane_count=2)],
    )  # fmt: skip
    base = OME(
        images=[model.Image(pixels=pixels)],
        structured_annotations=model.StructuredAnnotations(
            map_annotations=[model.MapAnnotation(namespace="x", value={"k": "v"})]
        ),
    )
    uuids = [f"urn:uuid:{uuid.UUID(int=n)}" for n in range(1, 4)]
    copies = [base.model_copy(update={"uuid": u}) for u in uuids]
    # not a copy sharing the rest: serialised in full
    other = base.model_copy(update={"uuid": uuids[0], "structured_annotations": None})
    documents = [*copies, other, copies[1]]
    texts = _xml_each(documents)
    assert texts == [str(d.to_xml()).encode() for d in documents]
    assert [OME.from_xml(t.decode()).uuid for t in texts] == [
        *uuids,
        uuids[0],
        uuids[1],
    ]


# per-frame metadata whose Plane and MapAnnotation text ome-stream writes
# itself (`PlaneText`): numbers xsdata formats its own way, characters XML
# escapes, values that are not Plane attributes
AWKWARD_PLANES: list[dict[str, Any]] = [
    {},
    {
        "delta_t": 0,
        "exposure_time": 1e-9,
        "position_x": -0.0,
        "position_y": 1e20,
        "position_z": 123456789.123456789,
    },
    {"note": "a&b<c>\"d' \t\n\r e µ ✓ ]]>", "": "empty key", "empty": ""},
    {"position_z": True, "delta_t": "soon", "exposure_time": None},
    {"ctrl": "x\x01y", "list": [1, "two", None], "dict": {"a": 1.5}},
    {"big": 2**70, "third": 1 / 3, "position_y": -2.5e-300},
    {"delta_t": 10**400, "exposure_time": 2**1023 * 2},  # beyond float: entries
]


@pytest.mark.parametrize(
    "name",
    [name for name, case in CASES.items() if case.tiff and case.n_frames() >= 4],
)
def test_built_documents_are_serialised_as_ome_types_would(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`built_xml` skips ome-types' walk over the document (see its doc):
    for the documents ome-stream builds - interim, final as if closed now
    (per-plane metadata, a skipped frame, frames never arrived, global
    metadata, plates, positions), their per-file copies and BinaryOnly
    stubs - the text must be ome-types' own, byte for byte. Close's text
    goes through its spool files here (small buffers and copy chunks,
    which split multi-byte characters)."""
    from ome_stream._formats.tiff import spool
    from ome_stream._formats.tiff.ome_xml import (
        PlaneText,
        _built_serializer,
        built_xml,
    )

    monkeypatch.setattr(spool, "SPOOL_BUFFER_BYTES", 300)
    monkeypatch.setattr(spool, "COPY_CHUNK_BYTES", 777)

    assert _built_serializer() is not None  # not the fallback
    case = CASES[name]
    settings = AcquisitionSettings(
        root_path=str(tmp_path / "b.ome.tiff"),
        dimensions=case.dims,
        dtype="uint16",
        plate=case.plate,
        format="ome-tiff",
        **case.settings,
    )
    stream = create_stream(settings)
    stream.set_global_metadata("experiment", {"id": 7, "tags": ["a", "b"]})
    for number in range(case.n_frames() - 2):  # the last two never arrive
        if number == 1:
            stream.skip()
            continue
        if number % 3 == 0:
            metadata = {"frame": number}
        elif number % 3 == 1:
            metadata = frame_metadata(number)
        else:
            metadata = AWKWARD_PLANES[number // 3 % len(AWKWARD_PLANES)]
        stream.append(make_frame(number), frame_metadata=metadata)
    wait_written(stream, case.n_frames() - 3)
    backend = stream._backend
    with stream._backend_lock:
        documents = [backend._document(final=False), backend._document(final=True)]
        generated = backend._generated()
        documents += list(generated.values())
        # what close writes: text from the records, no Plane models
        made = backend._close_texts()
    assert made is not None
    assert sorted(made.parts) == sorted(generated)
    for key, document in generated.items():
        assert made.xml(key) == document.to_xml().encode(), key
    made.plane_text.close()
    stream.close()
    assert any(i.pixels.planes for d in documents for i in d.images)
    for document in documents:
        if any(image.pixels.planes for image in document.images):
            assert PlaneText.of(document) is not None  # not left to xsdata
        text = built_xml(document)  # first: to_xml changes what is marked set
        assert text == document.to_xml()
        readers.validate_ome_xml(text)  # the OME schema, and ome-types' models
    # the models get_metadata returns after close are built then, and are
    # what the files hold
    after = stream.get_metadata()
    for key, path in enumerate(backend.paths):
        on_disk = readers.tiff_ome_xml(path)
        assert after[key].to_xml().strip() == on_disk.strip(), key


def test_documents_changed_in_place_are_written_in_full(tmp_path: Path) -> None:
    """Global metadata set after close goes into the documents written at
    close, changing their lists in place (which pydantic does not mark as
    set): they go through ome-types' own serialisation, not `built_xml`, and
    the files hold the change. So does a user's document edited in place."""
    layout = LAYOUTS["always"]
    root = tmp_path / "run.ome.tiff"
    settings = settings_for(layout, root)
    with create_stream(settings) as stream:  # no annotations at all
        for number in range(settings.num_frames or 0):
            stream.append(make_frame(number))
    first = layout.tiffs(root)[0]
    before = readers.validate_ome_xml(readers.tiff_ome_xml(first))
    assert before.structured_annotations is not None  # (read back empty)
    assert not before.structured_annotations.map_annotations
    stream.set_global_metadata("late", {"note": 1})
    on_disk = readers.validate_ome_xml(readers.tiff_ome_xml(first))
    assert on_disk.structured_annotations is not None
    (late,) = on_disk.structured_annotations.map_annotations
    assert late.namespace == "late"
    assert {m.k: m.value for m in late.value.ms} == {"note": "1"}
    document = stream.get_metadata()[0]
    document.experimenters.append(
        model.Experimenter(id="Experimenter:0", first_name="Ada")
    )
    stream.update_metadata({0: document})
    on_disk = readers.validate_ome_xml(readers.tiff_ome_xml(first))
    assert [e.first_name for e in on_disk.experimenters] == ["Ada"]
    assert on_disk.structured_annotations is not None


def test_files_started_later_hold_a_valid_interim_xml_with_their_own_uuid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file per position: the second and third files start with the
    interim XML the first was given, with their own UUID put in (no refresh
    happens here), which readers open while the stream is still writing."""
    from ome_stream._formats.tiff import tifffile as tiff_backend

    monkeypatch.setattr(tiff_backend, "INTERIM_XML_INTERVAL_S", 3600.0)
    layout = LAYOUTS["redundant"]
    root = tmp_path / "run.ome.tiff"
    settings = settings_for(layout, root)
    tiffs = layout.tiffs(root)
    with create_stream(settings) as stream:
        per_step = layout.n_positions * 4  # p x c x z
        for number in range(per_step + 1):  # a complete time point, and one more
            stream.append(make_frame(number))
        wait_written(stream, per_step + 1)
        interim = [readers.validate_ome_xml(readers.tiff_ome_xml(p)) for p in tiffs]
        for p, path in enumerate(tiffs):
            with tifffile.TiffFile(path) as tif:
                assert tif.is_ome
                first = tif.pages.first.asarray()
            np.testing.assert_array_equal(
                first, make_frame(frame_number(p, 0, 0, 0, 3))
            )
    final = {
        path.name: readers.validate_ome_xml(readers.tiff_ome_xml(path))
        for path in tiffs
    }
    # each file keeps its UUID from the first page to the final XML
    assert [ome.uuid for ome in interim] == [final[p.name].uuid for p in tiffs]
    assert len({ome.uuid for ome in interim}) == layout.n_positions
    named = {
        block.uuid.file_name: block.uuid.value
        for image in final[tiffs[0].name].images
        for block in image.pixels.tiff_data_blocks
    }
    assert [named[p.name] for p in tiffs] == [ome.uuid for ome in interim]
    # the interim documents describe the same dataset (a subset of it)
    for ome in interim:
        assert [image.name for image in ome.images] == [
            image.name for image in interim[0].images
        ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_disk_filling_up_leaves_records_matching_the_file(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up part way through a page: the page is not in the
    file, and the records forget it. Once space is freed and the stream
    closed, frames_written, the planes and missing frames of the OME-XML
    and the pixels all agree with the file (the XML described a page too
    many before)."""
    from ome_stream import WriterError
    from ome_stream._formats.tiff import pages as tiff_pages

    settings = _time_series(tmp_path / "full.ome.tiff", None)
    real = os.pwritev
    fail_at = random.Random(seed).randrange(3, 40)  # the n-th write that grows
    state = {"growing": 0, "full": True}

    def filling(fd: int, buffers: list[Any], offset: int) -> int:
        data = b"".join(bytes(b) for b in buffers)
        if state["full"] and offset + len(data) > os.fstat(fd).st_size:
            state["growing"] += 1
            if state["growing"] == fail_at:  # a short write first
                return real(fd, [data[: len(data) * 2 // 3]], offset)
            if state["growing"] > fail_at:
                raise OSError(28, "No space left on device")
        return real(fd, buffers, offset)

    monkeypatch.setattr(tiff_pages.os, "pwritev", filling)
    skipped = set(range(3, 5000, 7))
    stream = create_stream(settings)

    def acquire() -> None:
        for number in range(5000):
            if number in skipped:
                stream.skip()
            else:
                stream.append(make_frame(number), frame_metadata={"frame": number})

    with pytest.raises(WriterError, match="No space left on device"):
        acquire()
    state["full"] = False  # space freed: close finishes the file
    stream.close()

    with tifffile.TiffFile(settings.output_path) as tif:
        pages = np.stack([page.asarray() for page in tif.pages])
    n = len(pages)
    assert n > 1
    for number in range(n):
        want = 0 if number in skipped else make_frame(number)
        np.testing.assert_array_equal(pages[number], want)
    frames = [number for number in range(n) if number not in skipped]
    assert stream.frames_written == len(frames)
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(settings.output_path))
    assert ome.images[0].pixels.size_t == n
    table = plane_table(ome, 0)
    assert {t: int(v["frame"]) for (t, _, _), v in table.items()} == {
        number: number for number in frames
    }
    assert sorted(t for _, _, t in readers.tiff_missing_planes(ome, 0)) == sorted(
        skipped & set(range(n))
    )
    info = readers.bioformats_info(settings.output_path)
    assert info.is_ome_tiff, info.stdout
    assert info.series[0].size_t == n


@pytest.mark.parametrize(("compression", "seed"), [("lzw", 1), ("deflate", 2)])
def test_a_disk_filling_up_during_a_compressed_page_leaves_no_page_too_many(
    compression: str, seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compressed page (written by tifffile, which links a page from the
    one before before it writes it) fails part way: once space is freed
    and the stream closed, the file ends after its whole pages, and they,
    the OME-XML and frames_written agree (the file had a page more than
    its OME-XML, the torn one)."""
    from ome_stream import WriterError
    from ome_stream._validate import validate_dataset

    settings = _time_series(tmp_path / "full.ome.tiff", None)
    settings = settings.model_copy(update={"compression": compression})
    real = tifffile.FileHandle.write
    fail_at = random.Random(seed).randrange(10, 60)  # the n-th write that grows
    state: dict[str, Any] = {"growing": 0, "full": False, "end": {}}

    def filling(self: Any, buffer: Any) -> int:
        end = state["end"].get(id(self), 0)
        here = self.tell()
        if state["full"] and here + len(buffer) > end:
            state["growing"] += 1
            if state["growing"] == fail_at:  # part of it, then the error
                real(self, bytes(buffer)[: len(buffer) // 2])
            if state["growing"] >= fail_at:
                raise OSError(28, "No space left on device")
        written = real(self, buffer)
        state["end"][id(self)] = max(end, here + written)
        return written

    monkeypatch.setattr(tifffile.FileHandle, "write", filling)
    stream = create_stream(settings)
    state["full"] = True

    def acquire() -> None:
        for number in range(5000):
            stream.append(make_frame(number), frame_metadata={"frame": number})

    with pytest.raises(WriterError, match="No space left on device"):
        acquire()
    state["full"] = False  # space freed: close finishes the file
    stream.close()

    assert validate_dataset(settings.output_path) == []
    with tifffile.TiffFile(settings.output_path) as tif:
        pages = np.stack([page.asarray() for page in tif.pages])
    n = len(pages)
    assert n == stream.frames_written >= 1
    for number in range(n):
        np.testing.assert_array_equal(pages[number], make_frame(number))
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(settings.output_path))
    assert ome.images[0].pixels.size_t == n
    assert {t: int(v["frame"]) for (t, _, _), v in plane_table(ome, 0).items()} == {
        number: number for number in range(n)
    }
    info = readers.bioformats_info(settings.output_path)
    assert info.is_ome_tiff, info.stdout
    assert info.series[0].size_t == n


def _first_frame_then_the_failure(stream: Any) -> None:
    """Append the first frame, let the writer take it, and see the next
    append report the failure after it, with that frame counted."""
    from ome_stream import WriterError

    stream.append(make_frame(0), frame_metadata={"frame": 0})
    deadline = time.monotonic() + 30
    while stream.stats().frames_queued and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(WriterError, match="written before the failure: 1\\."):
        stream.append(make_frame(1))


@pytest.mark.parametrize("name", ["single", "companion-file"])
def test_a_full_disk_after_a_page_counts_the_page_written(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk is full when the interim OME-XML is refreshed after the
    first page (a companion file is refreshed there; the single file once
    due): the page is in the file, so the error reaches the caller with it
    counted written (it said "Frames written before the failure: 0"), and
    closing once space is freed describes it."""
    import errno

    from ome_stream._formats.tiff import tifffile as tiff_backend
    from ome_stream._validate import validate_dataset

    def full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tiff_backend, "INTERIM_XML_INTERVAL_S", 0.0)
    layout = LAYOUTS[name]
    root = tmp_path / "run.ome.tiff"
    stream = create_stream(settings_for(layout, root))  # (writes the companion)
    monkeypatch.setattr(TiffFileBackend, "_rewrite_reserved", full)
    monkeypatch.setattr(TiffFileBackend, "_replace_companion", full)
    _first_frame_then_the_failure(stream)
    assert stream.frames_written == 1
    monkeypatch.undo()  # space freed
    stream.close()  # (already reported)
    assert stream.frames_written == 1
    assert validate_dataset(layout.entry(root)) == []
    entry = layout.companion(root) or root
    ome = readers.validate_ome_xml(layout.full_xml(root)[entry.name])
    assert {k: v["frame"] for k, v in plane_table(ome, 0).items()} == {(0, 0, 0): "0"}
    info = readers.bioformats_info(entry)
    assert info.is_ome_tiff, info.stdout
    first = readers.bioformats_all_pixels(entry, info=info)[0]
    np.testing.assert_array_equal(first.reshape(-1, *FRAME)[0], make_frame(0))


@pytest.mark.parametrize("fails", ["journal", "metadata"])
def test_a_disk_still_full_at_close(
    fails: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills after the first page: its journal line (`journal`) or
    the interim OME-XML (`metadata`) cannot be written; the page is counted
    and the failure reported. `journal`: close still finishes the file (the
    final OME-XML fits in the room reserved, and a finished file needs no
    journal; it stopped at the journal). `metadata`: the final OME-XML
    cannot be written either, and close says the output is not finished (it
    returned quietly, the failure already reported, leaving the interim XML
    and the journal); recover finishes it once there is room."""
    import errno

    import ome_stream._formats.tiff.tifffile as backend_module
    from ome_stream import WriterError
    from ome_stream._journal import Journal
    from ome_stream._validate import validate_dataset

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    layout = LAYOUTS["single"]
    root = tmp_path / "run.ome.tiff"
    monkeypatch.setattr(backend_module, "INTERIM_XML_INTERVAL_S", 0.0)
    stream = create_stream(settings_for(layout, root))
    if fails == "journal":
        monkeypatch.setattr(Journal, "written", full)
    else:
        monkeypatch.setattr(TiffFileBackend, "_rewrite_reserved", full)
        monkeypatch.setattr(backend_module, "write_description", full)
    _first_frame_then_the_failure(stream)
    if fails == "journal":
        stream.close()  # (the failure reported already)
    else:
        with pytest.raises(WriterError) as info:
            stream.close()
        message = " ".join(str(info.value).split())
        assert f"Closing {root} failed" in message
        assert "the output is not finished" in message
        assert f"`ome-stream recover {root}`" in message
        assert journal_path(root).is_file()
        monkeypatch.undo()  # room again
        recover(root)
    assert stream.closed
    assert not journal_path(root).exists()
    assert validate_dataset(root) == []
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(root))
    assert ome.images[0].pixels.size_t == 1  # closed early: the first step
    with tifffile.TiffFile(root) as tif:
        np.testing.assert_array_equal(tif.pages[0].asarray(), make_frame(0))


@pytest.mark.parametrize("unbounded", [False, True], ids=["bounded", "early-close"])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_close_writes_the_documents_get_metadata_returns(
    name: str, unbounded: bool, tmp_path: Path
) -> None:
    """Close writes our documents as text, without building their models;
    `get_metadata` builds them afterwards. In every layout (companion file,
    BinaryOnly stubs, a file per position) and after an early close, each
    file holds exactly the serialisation of the document get_metadata
    returns for it, which the OME schema accepts."""
    layout = LAYOUTS[name]
    root = tmp_path / "run.ome.tiff"
    settings = settings_for(layout, root, t=None if unbounded else 2)
    count = (layout.n_positions * 4) + (3 if unbounded else 4 * layout.n_positions)
    with create_stream(settings) as stream:
        stream.set_global_metadata("lab", {"room": "B-1 <east>"})
        for number in range(count):
            metadata = AWKWARD_PLANES[number % len(AWKWARD_PLANES)]
            stream.append(make_frame(number), frame_metadata=metadata)
    written = stream.get_metadata()
    paths: dict[int, Path] = dict(enumerate(stream._backend.paths))
    companion = layout.companion(root)
    if companion is not None:
        paths[-1] = companion
    assert sorted(written) == sorted(paths)
    for key, path in paths.items():
        on_disk = path.read_text("utf-8") if key == -1 else readers.tiff_ome_xml(path)
        assert written[key].to_xml().strip() == on_disk.strip(), key
        readers.validate_ome_xml(on_disk)


def test_a_close_that_fails_leaves_no_documents_for_later_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up while close pads the last time point: close raises,
    get_metadata has nothing written to report, and global metadata set
    afterwards (as the pymmcore-plus handler records the status) does not
    write documents describing pages the file does not hold - the file
    keeps its interim OME-XML and every page reads back."""
    from ome_stream._formats.tiff import pages as tiff_pages

    settings = AcquisitionSettings(
        root_path=str(tmp_path / "pad.ome.tiff"),
        dimensions=[
            Dimension(name="t", count=None),
            Dimension(name="c", count=2),
            Dimension(name="y", count=FRAME[0]),
            Dimension(name="x", count=FRAME[1]),
        ],
        dtype="uint16",
    )
    stream = create_stream(settings)
    for number in range(3):  # the second time point lacks a channel
        stream.append(make_frame(number), frame_metadata={"frame": number})
    while stream.frames_written < 3:
        time.sleep(0.01)
    real = os.pwritev

    def full(fd: int, buffers: list[Any], offset: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tiff_pages.os, "pwritev", full)
    with pytest.raises(Exception, match="No space left on device"):
        stream.close()
    monkeypatch.setattr(tiff_pages.os, "pwritev", real)
    assert stream.get_metadata() == {}
    stream.set_global_metadata("status", {"finish_reason": "failed"})
    with tifffile.TiffFile(settings.output_path) as tif:
        pages = [page.asarray() for page in tif.pages]
    assert len(pages) == 3
    for number, page in enumerate(pages):
        np.testing.assert_array_equal(page, make_frame(number))
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(settings.output_path))
    described = sum(b.plane_count or 1 for b in ome.images[0].pixels.tiff_data_blocks)
    assert described <= 3


def _time_series(path: Path, count: int | None) -> AcquisitionSettings:
    """t frames of FRAME, one position, to one OME-TIFF."""
    return AcquisitionSettings(
        root_path=str(path),
        dimensions=[
            Dimension(name="t", count=count),
            Dimension(name="y", count=FRAME[0]),
            Dimension(name="x", count=FRAME[1]),
        ],
        dtype="uint16",
    )


def test_a_disk_full_while_writing_the_final_xml_keeps_the_interim_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final OME-XML is written after the end of the file and the tag
    pointed at it only once it is all there: a disk that fills up halfway
    leaves the file with its interim OME-XML, schema-valid, and every page
    readable (as a kill at that moment would)."""
    from ome_stream._formats.tiff import tifffile as tiff_backend

    settings = _time_series(tmp_path / "full.ome.tiff", None)
    stream = create_stream(settings)
    for number in range(40):
        stream.append(make_frame(number), frame_metadata={"frame": number})
    wait_written(stream, 40)  # (the first page and its interim XML are there)
    with tifffile.TiffFile(settings.output_path) as tif:
        interim_offset = tif.pages.first.tags[270].valueoffset
    real = tiff_backend.write_parts

    def half_then_full(parts: list[Any], write: Any) -> int:
        def limited(chunk: bytes) -> None:
            write(chunk[: len(chunk) // 2])
            raise OSError(28, "No space left on device")

        return real(parts, limited)

    monkeypatch.setattr(tiff_backend, "write_parts", half_then_full)
    with pytest.raises(Exception, match="No space left on device"):
        stream.close()
    with tifffile.TiffFile(settings.output_path) as tif:
        assert tif.pages.first.tags[270].valueoffset == interim_offset
        pages = [page.asarray() for page in tif.pages]
    assert len(pages) == 40
    for number, page in enumerate(pages):
        np.testing.assert_array_equal(page, make_frame(number))
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(settings.output_path))
    assert ome.images[0].pixels.size_t <= 40


@pytest.mark.parametrize("metadata", [False, True], ids=["plain", "per-frame"])
def test_final_xml_that_fits_goes_where_the_interim_one_is(
    metadata: bool, tmp_path: Path
) -> None:
    """When the final OME-XML fits in the room reserved for the interim one,
    close writes it there (in the slot the interim text is not in, then
    points the tag at it): the file does not grow, so a disk that cannot
    take one more byte still gets its final metadata (here a file-size
    limit, as a full disk)."""
    import resource

    settings = _time_series(tmp_path / "fits.ome.tiff", 6)
    stream = create_stream(settings)
    for number in range(6):
        stream.append(
            make_frame(number),
            frame_metadata={"delta_t": number / 2} if metadata else None,
        )
    wait_written(stream, 6)
    path = settings.output_path
    with tifffile.TiffFile(path) as tif:
        interim = tif.pages.first.tags[270]
        offset = interim.valueoffset
    size = path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))  # cannot grow
    try:
        stream.close()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert path.stat().st_size == size
    with tifffile.TiffFile(path) as tif:
        final = tif.pages.first.tags[270]
        assert final.valueoffset != offset  # (the interim text stays till then)
        pages = [page.asarray() for page in tif.pages]
    for number, page in enumerate(pages):
        np.testing.assert_array_equal(page, make_frame(number))
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(path))
    assert ome.images[0].pixels.size_t == 6
    planes = ome.images[0].pixels.planes
    assert [p.delta_t for p in planes] == (
        [n / 2 for n in range(6)] if metadata else []
    )
    assert readers.bioformats_info(path).warnings == []


KILLED_IN_CLOSE = """
import os, sys
import numpy as np
from ome_stream import AcquisitionSettings, Dimension, create_stream
from ome_stream._formats.tiff import tifffile as backend_module

settings = AcquisitionSettings(
    root_path=sys.argv[1],
    dimensions=[
        Dimension(name="t", count=None),
        Dimension(name="y", count=8),
        Dimension(name="x", count=8),
    ],
    dtype="uint16",
)
stream = create_stream(settings)
for number in range(200):
    stream.append(np.full((8, 8), number, np.uint16), frame_metadata={"n": number})

def killed(*args, **kwargs):
    os._exit(9)  # as a SIGKILL while close writes the final OME-XML

backend_module.write_description = killed
stream.close()
"""


@pytest.mark.parametrize("bigtiff", [False, True], ids=["classic", "bigtiff"])
def test_description_slots_alternate_and_each_version_reads_whole(
    bigtiff: bool, tmp_path: Path
) -> None:
    """A first page made with a text over two slots: each write goes in the
    slot the tag does not point at, then the tag points at it; tifffile and
    ome-types read each version whole, and the other slot keeps the one
    before. A text too long for a slot is refused before anything is
    written."""
    from ome_stream._formats.tiff.pages import DescriptionSlots

    path = tmp_path / "slots.ome.tiff"

    def document(planes: int) -> bytes:
        ome = OME(
            images=[
                model.Image(
                    pixels=model.Pixels(
                        dimension_order="XYZCT",
                        type="uint16",
                        size_x=FRAME[1],
                        size_y=FRAME[0],
                        size_z=1,
                        size_c=1,
                        size_t=planes,
                        channels=[model.Channel()],
                        tiff_data_blocks=[model.TiffData(plane_count=planes)],
                    )
                )
            ]
        )
        return ome.to_xml().encode()

    texts = {planes: document(planes) for planes in range(1, 5)}
    size = 4 * len(texts[1]) + 2
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        first = DescriptionSlots.initial(texts[1], size)
        for number in range(3):
            description = None if number else first
            tif.write(make_frame(number), description=description, metadata=None)
    with tifffile.TiffFile(path) as tif:  # (the NULs after it are room)
        tag = tif.pages.first.tags[270]
        assert tag.count == len(texts[1]) + 1
        with path.open("rb") as f:
            f.seek(tag.valueoffset)
            assert f.read(2 * size) == texts[1].ljust(2 * size, b"\0")
    fd = os.open(path, os.O_RDWR)
    try:
        slots = DescriptionSlots.find(fd, size)
        seen = []
        previous = texts[1]
        for planes in (2, 3, 4):
            slots.write(fd, texts[planes])
            with tifffile.TiffFile(path) as tif:
                tag = tif.pages.first.tags[270]
                seen.append(tag.valueoffset - slots.start)
                assert tag.count == len(texts[planes]) + 1
                ome = readers.validate_ome_xml(tif.pages.first.description)
                assert ome.images[0].pixels.size_t == planes
                for number, page in enumerate(tif.pages):
                    np.testing.assert_array_equal(page.asarray(), make_frame(number))
            other = slots.start + size - seen[-1]
            assert os.pread(fd, len(previous), other) == previous
            previous = texts[planes]
        assert seen == [size, 0, size]
        before = path.read_bytes()
        with pytest.raises(ValueError, match="in a slot of"):
            slots.write(fd, b"x" * size)
        assert path.read_bytes() == before
    finally:
        os.close(fd)


def test_the_interim_xml_of_many_channels_fits_its_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The room for the interim OME-XML is reserved with the first page,
    whose text (before a time point is whole) describes one channel; it is
    sized for a whole time point, so with 48 channels, each with its
    optics, the interim XML of later time points fits and is written: a
    reader (or a kill) meanwhile finds them all."""
    from ome_stream import Channel
    from ome_stream._formats.tiff import tifffile as tiff_backend

    monkeypatch.setattr(tiff_backend, "INTERIM_XML_INTERVAL_S", 0.0)
    channels = [
        Channel(
            name=f"Spectral {400 + 5 * c} nm",
            excitation_wavelength_nm=405,
            emission_wavelength_nm=400 + 5 * c,
            fluorophore="mixed",
            color="#00ff00",
        )
        for c in range(48)
    ]
    path = tmp_path / "spectral.ome.tiff"
    settings = AcquisitionSettings(
        root_path=str(path),
        dimensions=[
            Dimension(name="t", count=None),
            Dimension(name="c", coords=channels),
            Dimension(name="y", count=FRAME[0]),
            Dimension(name="x", count=FRAME[1]),
        ],
        dtype="uint16",
    )
    with create_stream(settings) as stream:
        for number in range(3 * 48):
            stream.append(make_frame(number))
        wait_written(stream, 3 * 48)
        deadline = time.monotonic() + 30
        while True:  # (the writer refreshes a stale interim XML when idle)
            interim = readers.validate_ome_xml(readers.tiff_ome_xml(path))
            pixels = interim.images[0].pixels
            if pixels.size_t == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (pixels.size_t, pixels.size_c, len(pixels.channels)) == (3, 48, 48)
        assert pixels.channels[47].name == "Spectral 635 nm"
        info = readers.bioformats_info(path)
        assert info.warnings == []
        (series,) = info.series
        assert (series.size_t, series.size_c) == (3, 48)


@pytest.mark.parametrize(
    ("name", "plate"),
    [
        ("always", False),
        ("always", True),
        ("redundant", False),
        ("master-tiff", False),
        ("companion-file", True),
    ],
)
def test_the_interim_xml_leaves_out_positions_not_started(
    name: str, plate: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While position 2 has no plane yet (t-p-c-z, a run killed at
    position 1, say), the interim OME-XML describes positions 0 and 1 only:
    no TiffData means "no planes" to every reader (tifffile takes
    PlaneCount="0" as every page, and showed position 0's pixels for it, or
    failed to open a file per position with KeyError; Bio-Formats takes
    MetadataOnly as every page). Plates list the WellSamples of those two."""
    from ome_stream import Plate
    from ome_stream._formats.tiff import tifffile as tiff_backend
    from tests._cases import PLATE_POSITIONS

    monkeypatch.setattr(tiff_backend, "INTERIM_XML_INTERVAL_S", 0.0)
    layout = Layout(name, *dataclasses.astuple(LAYOUTS[name])[1:3], 3)
    root = tmp_path / "run.ome.tiff"
    dims = dimensions(layout)
    if plate:
        dims[1] = Dimension(name="p", coords=PLATE_POSITIONS[1:])  # A2, C4, C4
    settings = AcquisitionSettings(
        root_path=str(root),
        dimensions=dims,
        dtype="uint16",
        format=layout.format(),
        plate=Plate(name="P", row_names=list("ABC"), column_names=["2", "4"])
        if plate
        else None,
    )
    companion = layout.companion(root)

    def full_xml() -> str:  # (the first file's, or the companion's)
        if companion is not None:
            return companion.read_text(encoding="utf-8")
        return readers.tiff_ome_xml(layout.tiffs(root)[0])

    # position 0 whole (c, z = 2 x 2), position 1 its first z-stack
    written = 6
    with create_stream(settings) as stream:
        for number in range(written):
            stream.append(make_frame(number))
        wait_written(stream, written)
        deadline = time.monotonic() + 30
        while True:  # (the writer refreshes a stale interim XML when idle)
            interim = readers.validate_ome_xml(full_xml())
            sizes = [(i.pixels.size_c, i.pixels.size_z) for i in interim.images]
            if sizes == [(2, 2), (1, 2)] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert [image.id for image in interim.images] == ["Image:0", "Image:1"]
        assert sizes == [(2, 2), (1, 2)]
        if plate:
            (well_plate,) = interim.plates
            refs = [
                sample.image_ref.id
                for well in well_plate.wells
                for sample in well.well_samples
                if sample.image_ref is not None
            ]
            assert refs == ["Image:0", "Image:1"]
        expected = [
            np.stack([make_frame(n) for n in range(4)]).reshape(2, 2, *FRAME),
            np.stack([make_frame(4), make_frame(5)]).reshape(1, 2, *FRAME),
        ]
        tiffs = [path for path in layout.tiffs(root) if path.stat().st_size > 16]
        assert len(tiffs) == (1 if layout.single_file else 2)  # no page of p2 yet
        for path in tiffs:
            if "<BinaryOnly" in readers.tiff_ome_xml(path):
                continue  # (tifffile does not follow it)
            with tifffile.TiffFile(path) as tif:
                assert len(tif.series) == 2, path.name
                for series, want in zip(tif.series, expected):
                    got = series.asarray().reshape(want.shape)
                    np.testing.assert_array_equal(got, want)
        info = readers.bioformats_info(companion or tiffs[0])
        assert info.warnings == []
        assert [(s.size_c, s.size_z) for s in info.series] == [(2, 2), (1, 2)]
        pixels = readers.bioformats_all_pixels(tiffs[0], info=info)
        for got, want in zip(pixels, expected):
            np.testing.assert_array_equal(got.reshape(want.shape), want)
        stream.append(make_frame(written))
    # closed early: every position described, the rest padding
    final = readers.validate_ome_xml(full_xml())
    assert len(final.images) == 3


def test_the_companion_describes_the_first_plane_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The companion file is written at open, describing no planes, and the
    TIFFs refer to it: it is refreshed as soon as the first page is
    written, not an interim interval later, so a run killed in its first
    second opens too."""
    from ome_stream._formats.tiff import tifffile as tiff_backend

    monkeypatch.setattr(tiff_backend, "INTERIM_XML_INTERVAL_S", 3600.0)
    layout = LAYOUTS["companion-file"]
    root = tmp_path / "run.ome.tiff"
    companion = layout.companion(root)
    assert companion is not None
    with create_stream(settings_for(layout, root)) as stream:
        stream.append(make_frame(0))
        stream.append(make_frame(1))
        wait_written(stream, 2)
        interim = readers.validate_ome_xml(companion.read_text(encoding="utf-8"))
        (image,) = interim.images
        assert (image.pixels.size_c, image.pixels.size_z) == (1, 1)
        info = readers.bioformats_info(companion)
        assert info.warnings == []
        assert [(s.size_c, s.size_z) for s in info.series] == [(1, 1)]
        (pixels,) = readers.bioformats_all_pixels(companion, info=info)
        np.testing.assert_array_equal(pixels.reshape(FRAME), make_frame(0))


KILLED_WRITING_THE_DESCRIPTION = """
import os, sys, time
import numpy as np
import ome_stream._formats.tiff.pages as pages
import ome_stream._formats.tiff.tifffile as backend
from ome_stream import AcquisitionSettings, Dimension, create_stream
sys.path.insert(0, {tests_parent!r})
from tests._cases import FRAME, make_frame

root, t, stage, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
backend.INTERIM_XML_INTERVAL_S = 0.0  # (a refresh 10x its time after one)
if stage == "refresh":  # the 4th interim OME-XML half written
    real_write_fully = pages._write_fully
    refreshes = []
    def write_fully(fd, buffers, offset, done=0):
        text = bytes(buffers[0])
        if b"<OME" in text[:200]:
            refreshes.append(offset)
            if len(refreshes) == 4:
                os.pwrite(fd, text[: len(text) // 2], offset)
                os._exit(9)  # as a SIGKILL
        return real_write_fully(fd, buffers, offset, done)
    pages._write_fully = write_fully
real_write_parts = backend.write_parts
def write_parts(parts, write):  # the final OME-XML half written
    text = b"".join(backend.part_chunks(parts))
    write(text[: len(text) // 2])
    write.__self__.flush()
    os._exit(9)

if stage != "refresh":
    backend.write_parts = write_parts
settings = AcquisitionSettings(
    root_path=root,
    dimensions=[
        Dimension(name="t", count=None if t == "none" else int(t)),
        Dimension(name="c", coords=["DAPI", "GFP"]),
        Dimension(name="y", count=FRAME[0]),
        Dimension(name="x", count=FRAME[1]),
    ],
    dtype="uint16",
)
stream = create_stream(settings)
for number in range(n):
    stream.append(make_frame(number), frame_metadata={{"n": number}})
    time.sleep(0.005)
if stage == "update-after-close":
    backend.write_parts = real_write_parts
    stream.close()
    backend.write_parts = write_parts
if stage.startswith("update"):  # the user's OME, renamed
    ome = stream.get_metadata()[0]
    ome.images[0].name = "edited"
    stream.update_metadata({{0: ome}})
stream.close()
"""


@pytest.mark.parametrize("t", ["none", "500"], ids=["bigtiff", "classic"])
@pytest.mark.parametrize(
    ("stage", "n"),
    [
        ("refresh", 60),
        ("close", 60),
        ("close", 10),
        ("update-before-close", 10),
        ("update-after-close", 10),
    ],
    ids=["refresh", "close-appended", "close-in-the-room", "updated", "update"],
)
def test_a_kill_while_the_ome_xml_is_rewritten_leaves_a_whole_one(
    stage: str, n: int, t: str, tmp_path: Path
) -> None:
    """The OME-XML of a file being written is rewritten about every second,
    and at close (also the user's, from update_metadata before close or
    after): each version goes where readers do not look (the final one
    after the end of the file, or in the room reserved when it fits: 10
    frames), and the tag is then pointed at it with one write. So a process
    killed half way through leaves the version before, whole: Bio-Formats
    opens the file and reads the planes it describes, before any `recover`
    (after close: the final version, with the frames' metadata)."""
    root = tmp_path / "run.ome.tiff"
    script = KILLED_WRITING_THE_DESCRIPTION.format(
        tests_parent=str(Path(__file__).parents[1])
    )
    done = run_python(script, str(root), t, stage, str(n))
    assert done.returncode == 9, done.stderr
    with tifffile.TiffFile(root) as tif:
        assert tif.is_bigtiff == (t == "none")
    killed = readers.validate_ome_xml(readers.tiff_ome_xml(root))
    size_t = killed.images[0].pixels.size_t
    assert size_t >= 1
    info = readers.bioformats_info(root)
    assert info.is_ome_tiff, info.stdout
    assert info.warnings == []
    data = readers.bioformats_pixels(root, info=info)
    assert data.shape[:2] == (size_t, 2)
    for ti in range(size_t):
        for c in range(2):
            np.testing.assert_array_equal(data[ti, c, 0], make_frame(2 * ti + c))
    assert killed.images[0].name != "edited"
    if stage == "update-after-close":  # the final version, as close wrote it
        assert not journal_path(root).exists()
        assert readers.plane_map_values(killed) == {
            (n // 2, n % 2, 0): {"n": str(n)} for n in range(10)
        }
        return
    frames = len(read_journal(journal_path(root)).frames)
    assert frames == n if stage != "refresh" else 2 * size_t <= frames < n
    report = recover(root)
    assert report.frames_recovered == frames
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(root))
    assert readers.plane_map_values(ome) == {
        (n // 2, n % 2, 0): {"n": str(n)} for n in range(frames)
    }
    with tifffile.TiffFile(root) as tif:
        assert len(tif.pages) == frames + frames % 2  # (a step padded)


def test_a_kill_while_close_writes_the_xml_loses_no_frame(tmp_path: Path) -> None:
    """close journals the pages written last before its long work, so
    `recover` finds every frame (the journal is written at most every
    10 ms or 256 pages while frames come)."""
    root = tmp_path / "killed.ome.tiff"
    done = run_python(KILLED_IN_CLOSE, str(root))
    assert done.returncode == 9, done.stderr
    report = recover(root)
    assert report.frames_recovered == 200
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(root))
    assert readers.plane_map_values(ome) == {
        (t, 0, 0): {"n": str(t)} for t in range(200)
    }
    with tifffile.TiffFile(root) as tif:
        assert len(tif.pages) == 200
        np.testing.assert_array_equal(tif.pages[199].asarray(), np.full((8, 8), 199))


NAMESPACES = {
    # valid xs:anyURI: written as given
    "lab": "lab",
    "lab note": "lab note",
    "http://[::1]/ns": "http://[::1]/ns",
    "urn:lab:scope": "urn:lab:scope",
    "http://example.org/ns#v2": "http://example.org/ns#v2",
    "µ/x": "µ/x",
    # not: percent-encoded (UTF-8) but for letters, digits, "-._~/"
    "Lab notes: run 2": "Lab%20notes%3A%20run%202",
    "1:x": "1%3Ax",
    "lab[1]": "lab%5B1%5D",
    "50% done": "50%25%20done",
    "a#b#c": "a%23b%23c",
    "é:x": "%C3%A9%3Ax",
    "ctrl\x01": "ctrl%01",
}


@pytest.mark.parametrize("edited", [False, True], ids=["ours", "user-edited"])
@pytest.mark.parametrize("namespace", list(NAMESPACES))
def test_global_metadata_namespaces_are_valid_uris(
    namespace: str, edited: bool, tmp_path: Path
) -> None:
    """A MapAnnotation's Namespace is an xs:anyURI: namespaces that are one
    are written as given, others percent-encoded, so both schema validators
    accept the file; and a namespace set after the user's update_metadata
    replaces its annotation there too, once."""
    layout = LAYOUTS["single"]
    settings = settings_for(layout, tmp_path / "ns.ome.tiff")
    with create_stream(settings) as stream:
        stream.set_global_metadata(namespace, {"k": "old"})
        for number in range(settings.num_frames or 0):
            stream.append(make_frame(number))
            if edited and number == 0:
                stream.update_metadata(stream.get_metadata())
        stream.set_global_metadata(namespace, {"k": "new"})
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(settings.output_path))
    annotations = ome.structured_annotations.map_annotations
    (found,) = [a for a in annotations if a.namespace == NAMESPACES[namespace]]
    assert {m.k: m.value for m in found.value.ms} == {"k": "new"}


def test_global_metadata_landing_between_get_and_update_metadata_is_kept(
    tmp_path: Path,
) -> None:
    """set_global_metadata is queued: the writer can apply it after the
    user's get_metadata and before their update_metadata. The document
    they pass lacks it, yet the file gets it, with their edit."""
    layout = LAYOUTS["single"]
    settings = settings_for(layout, tmp_path / "race.ome.tiff")
    stream = create_stream(settings)
    for number in range(settings.num_frames or 0):
        stream.append(make_frame(number))
    backend = stream._backend
    with stream._backend_lock:  # the order the writer thread can produce
        handed_out = backend.get_metadata()
        backend.set_global_metadata("lab", {"room": "B-1"})
        handed_out[0].images[0].name = "renamed"
        backend.update_metadata(handed_out)
    stream.close()
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(settings.output_path))
    assert ome.images[0].name == "renamed"
    (lab,) = [
        a for a in ome.structured_annotations.map_annotations if a.namespace == "lab"
    ]
    assert {m.k: m.value for m in lab.value.ms} == {"room": "B-1"}


def test_a_stream_closed_early_pads_with_holes(tmp_path: Path) -> None:
    """Closed one plane into a 2 x 25-plane step (or with frames skipped),
    the blank pages that complete it are holes in the file: zeros to
    tifffile and Bio-Formats, no disk space taken."""
    from ome_stream import Dimension

    shape = (256, 256)
    dims = [
        Dimension(name="t", count=None),
        Dimension(name="c", coords=["DAPI", "GFP"]),
        Dimension(name="z", count=25),
        Dimension(name="y", count=shape[0]),
        Dimension(name="x", count=shape[1]),
    ]
    root = tmp_path / "early.ome.tiff"
    settings = AcquisitionSettings(root_path=root, dimensions=dims, dtype="uint16")
    with create_stream(settings) as stream:
        for i in range(51):
            stream.append(make_frame(i, shape=shape))
        stream.skip(frames=10)  # a failed z-stack of 10 planes
        stream.append(make_frame(61, shape=shape))
    # 62 frames: 51 and 1 real, 10 skipped, 38 padding - 48 blank (6.3 MB)
    assert root.stat().st_size > 100 * 2**17
    assert root.stat().st_blocks * 512 < 53 * 2**17 + 2**20
    with tifffile.TiffFile(root) as tif:
        stack = tif.series[0].asarray()
    assert stack.shape == (2, 2, 25, *shape)
    flat = stack.reshape(100, *shape)
    for i in range(100):
        real = i < 51 or i == 61
        expected = make_frame(i, shape=shape) if real else np.zeros(shape, np.uint16)
        np.testing.assert_array_equal(flat[i], expected)
    info = readers.bioformats_info(root)
    assert info.warnings == []
    pixels = readers.bioformats_pixels(root, info=info)
    np.testing.assert_array_equal(pixels[1, 0, 5], np.zeros(shape))  # skipped
    np.testing.assert_array_equal(pixels[1, 0, 11], make_frame(61, shape=shape))
