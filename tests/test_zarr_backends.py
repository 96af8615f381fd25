"""Every Zarr backend (tensorstore, zarr-python, acquire-zarr) writes the same
store for the same settings: same layout, same NGFF and per-frame metadata,
same pixels, read back with readers we did not write. Plus backend choice
("auto", missing extras, settings a backend cannot write), reading frames
back while writing, Zarr get/update_metadata, and recovery after a kill.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import threading
import time
import uuid
import warnings
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
from ome_stream._formats import create_backend
from ome_stream._formats.zarr.selection import choose_zarr_backend
from ome_stream._journal import journal_path, read_journal
from ome_stream._routing import FrameRouter
from tests import _readers as readers
from tests._cases import CASES, FRAME, Case, kill_when_ready, make_frame

# Both optional backends are in the `test` extra: a missing one must fail.
BACKENDS = ["tensorstore", "zarr-python", "acquire-zarr"]
OTHER_BACKENDS = BACKENDS[1:]  # compared with tensorstore, the reference
# acquire-zarr cannot store the first acquired dimension anywhere but first
ACQUIRE_ZARR_UNSUPPORTED = {"chunked_transposed"}


def settings_for(
    case: Case, root: Path, backend: str, dtype: str = "uint16", **overrides: Any
) -> AcquisitionSettings:
    return AcquisitionSettings(
        root_path=str(root),
        dimensions=case.dims,
        dtype=dtype,
        plate=case.plate,
        format={"name": "ome-zarr", "backend": backend},
        **{**case.settings, **overrides},
    )


def write(
    case: Case,
    root: Path,
    backend: str,
    *,
    skipped: frozenset[int] = frozenset(),
    frames: int | None = None,
    dtype: str = "uint16",
    **overrides: Any,
) -> AcquisitionSettings:
    """Write `case` (frames numbered in acquisition order; `skipped` ones
    skipped; stopping after `frames`) with global metadata."""
    settings = settings_for(case, root, backend, dtype, **overrides)
    with create_stream(settings) as stream:
        stream.set_global_metadata("experiment", {"id": 7})
        for number in range(case.n_frames() if frames is None else frames):
            if number in skipped:
                stream.skip()
            else:
                stream.append(
                    make_frame(number, dtype), frame_metadata={"frame": number}
                )
    if backend != "auto":
        assert stream.settings.format.backend == backend
    return settings


def expected_pixels(
    case: Case, skipped: frozenset[int] = frozenset(), frames: int | None = None
) -> list[np.ndarray]:
    n = case.n_frames() if frames is None else frames
    data = case.acquisition_array("uint16", n)
    flat = data.reshape(-1, *FRAME)
    for number in [*skipped, *range(n, len(flat))]:
        flat[number] = 0
    return case.zarr_expected(data)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tensorstore store of a case (written once per module)."""
    stores: dict[tuple[Any, ...], Path] = {}

    def get(name: str, **kwargs: Any) -> Path:
        key = (name, *sorted(kwargs.items()))
        if key not in stores:
            root = tmp_path_factory.mktemp("reference") / f"{name}.ome.zarr"
            stores[key] = write(CASES[name], root, "tensorstore", **kwargs).output_path
        return stores[key]

    return get


def assert_same_store(root: Path, reference_root: Path, backend: str) -> None:
    """Same nodes; group documents equal; array documents byte-equal for
    zarr-python, equal in shape, type, names and grid for acquire-zarr (it
    writes its own codecs)."""
    documents = readers.zarr_documents(root)
    wanted = readers.zarr_documents(reference_root)
    assert list(documents) == list(wanted)
    for path, want in wanted.items():
        got = documents[path]
        if want["node_type"] == "group":
            assert got == want, path
        elif backend == "zarr-python":
            assert (root / path / "zarr.json").read_bytes() == (
                reference_root / path / "zarr.json"
            ).read_bytes()
        else:
            for key in ("shape", "data_type", "dimension_names", "fill_value"):
                assert got[key] == want[key], (path, key)
            assert got["chunk_grid"] == want["chunk_grid"], path


# ------------------------------------------------- same store as tensorstore


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_backend_writes_the_tensorstore_store(
    backend: str, name: str, tmp_path: Path, reference: Any
) -> None:
    case = CASES[name]
    root = tmp_path / "out.ome.zarr"
    if backend == "acquire-zarr" and name in ACQUIRE_ZARR_UNSUPPORTED:
        with pytest.raises(ValueError, match="storage_order='acquisition'"):
            write(case, root, backend)
        assert not root.exists()
        return
    settings = write(case, root, backend)
    for array_path, want in zip(case.zarr_paths, expected_pixels(case)):
        np.testing.assert_array_equal(readers.read_tensorstore(root / array_path), want)
        np.testing.assert_array_equal(readers.read_zarr_python(root / array_path), want)
    assert_same_store(settings.output_path, reference(name), backend)
    assert not journal_path(root).exists()


@pytest.mark.parametrize("name", ["5d", "multi_position", "plate", "unbounded_chunked"])
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_ngff_readers_open_every_backend(
    backend: str, name: str, tmp_path: Path
) -> None:
    case = CASES[name]
    root = write(case, tmp_path / "out.ome.zarr", backend).output_path
    readers.validate_yaozarrs(root)
    report = readers.validate_ome_zarr_models(root)
    assert report.warnings == []
    expected = expected_pixels(case)
    images = readers.read_ome_zarr_py(root)
    assert len(images) == len(expected)
    for got, want in zip(images, expected):
        np.testing.assert_array_equal(got, want)
    if name in ("5d", "multi_position"):  # stored t, c, z: bioio's TCZYX
        scenes = readers.read_bioio(root)
        assert len(scenes) == len(expected)
        for scene, want in zip(scenes, expected):
            np.testing.assert_array_equal(scene.data, want)
        if name == "5d":
            assert scenes[0].channel_names == ["DAPI", "GFP", "mCherry"]
            assert scenes[0].physical_pixel_sizes == pytest.approx((0.5, 0.1, 0.1))


@pytest.mark.parametrize(
    ("name", "skipped", "frames"),
    [
        ("5d", frozenset({1, 5, 6}), 20),  # skips, then an early close
        ("unbounded_chunked", frozenset({0, 7}), 11),  # ends inside a chunk
        ("multi_position", frozenset({3}), 13),
    ],
)
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_skipped_and_unsent_frames_are_zero_and_missing(
    backend: str,
    name: str,
    skipped: frozenset[int],
    frames: int,
    tmp_path: Path,
    reference: Any,
) -> None:
    case = CASES[name]
    root = write(
        case, tmp_path / "out.ome.zarr", backend, skipped=skipped, frames=frames
    )
    root = root.output_path
    for array_path, want in zip(
        case.zarr_paths, expected_pixels(case, skipped, frames)
    ):
        np.testing.assert_array_equal(readers.read_tensorstore(root / array_path), want)
    ref = reference(name, skipped=skipped, frames=frames)
    assert_same_store(root, ref, backend)
    assert readers.zarr_missing_frames(root / case.zarr_paths[0][:-2])
    readers.validate_yaozarrs(root)


# metadata whose JSON text is spliced into zarr.json as encoded on append
AWKWARD_METADATA = [
    {},
    {"note": 'quotes " and ] brackets }, {"storage_index": 0}', "µm": "µ"},
    {"nested": {"a": [1, 2.5, None, True], "b": {}}, "empty": []},
    {"value": np.float32(0.5), "array": np.arange(3), "flag": np.bool_(True)},
]


@pytest.mark.parametrize("spill_bytes", [None, 300], ids=["in-memory", "spilled"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_metadata_and_missing_frames_read_back_exactly(
    backend: str, spill_bytes: int | None, tmp_path: Path, monkeypatch: Any
) -> None:
    """zarr.json holds each frame's metadata as appended (whatever its
    text), then its storage index, and the missing frames; readers we did
    not write parse it, and `get_metadata` still returns plain lists.
    "spilled": the records go to the spill file every frame or two."""
    if spill_bytes is not None:
        import ome_stream._frame_metadata as frame_metadata

        monkeypatch.setattr(frame_metadata, "SPILL_MEMORY_BYTES", spill_bytes)
    dims = [
        Dimension(name="t", count=3, type="time"),
        Dimension(name="c", count=4, type="channel"),
        Dimension(name="y", count=16, type="space"),
        Dimension(name="x", count=16, type="space"),
    ]
    settings = AcquisitionSettings(
        root_path=str(tmp_path / "m.ome.zarr"),
        dimensions=dims,
        dtype="uint16",
        format={"name": "ome-zarr", "backend": backend},
    )
    expected = []
    with create_stream(settings) as stream:
        stream.set_global_metadata("lab", {"text": "[1, 2]"})
        for number in range(10):  # frames 10 and 11 never arrive
            if number in (3, 7):
                stream.skip()
                continue
            metadata = AWKWARD_METADATA[number % len(AWKWARD_METADATA)]
            stream.append(np.full((16, 16), number, np.uint16), metadata)
            plain = {key: np.asarray(v).tolist() for key, v in metadata.items()}
            expected.append({**plain, "storage_index": [number // 4, number % 4]})
    if spill_bytes is not None:
        assert len(stream._backend._spill._members[0]._blocks) >= 3
    attributes = readers.zarr_documents(stream.output_path)[""]["attributes"]
    section = attributes["ome_stream"]
    assert section["frame_metadata"] == expected
    assert section["missing_frame_ranges"] == [
        [[0, 3], [0, 3]],
        [[1, 3], [1, 3]],
        [[2, 2], [2, 3]],
    ]
    assert section["missing_frame_count"] == 4
    missing = readers.zarr_missing_frames(stream.output_path)
    assert missing == [(0, 3), (1, 3), (2, 2), (2, 3)]
    assert attributes["lab"] == {"text": "[1, 2]"}
    closed = stream.get_metadata()[""]["ome_stream"]
    assert closed["missing_frame_ranges"] == section["missing_frame_ranges"]
    assert "frame_metadata" not in closed
    import zarr  # zarr-python, in the test extra

    group_attrs = zarr.open_group(str(stream.output_path), mode="r").attrs
    assert group_attrs["ome_stream"]["frame_metadata"] == expected
    readers.validate_yaozarrs(stream.output_path)


@pytest.mark.parametrize("compression", ["blosc-zstd", "blosc-lz4", "zstd", "none"])
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_compression_codecs(backend: str, compression: str, tmp_path: Path) -> None:
    case = CASES["sharded"]
    root = tmp_path / "c.ome.zarr"
    if backend == "acquire-zarr" and compression == "zstd":
        with pytest.raises(ValueError, match="compression='blosc-zstd'"):
            write(case, root, backend, compression=compression)
        return
    write(case, root, backend, compression=compression)
    reference = write(
        case, tmp_path / "ts.ome.zarr", "tensorstore", compression=compression
    )

    def inner_codecs(path: Path) -> list[dict[str, Any]]:
        (sharding,) = readers.zarr_documents(path)["0"]["codecs"]
        codecs: list[dict[str, Any]] = sharding["configuration"]["codecs"]
        return [c for c in codecs if c["name"] != "bytes"]

    assert inner_codecs(root) == inner_codecs(reference.output_path)
    (want,) = expected_pixels(case)
    np.testing.assert_array_equal(readers.read_zarr_python(root / "0"), want)


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("compression", [None, "blosc-zstd", "blosc-lz4", "zstd"])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32"])
def test_zarr_python_array_document_is_tensorstores_byte_for_byte(
    dtype: str, compression: str | None, sharded: bool, tmp_path: Path
) -> None:
    dims = [
        Dimension(name="t", count=None, shard_size_chunks=2 if sharded else None),
        Dimension(name="c", count=2),
        Dimension(name="y", count=8, chunk_size=4),
        Dimension(name="x", count=6),
    ]
    documents = []
    for backend in ("tensorstore", "zarr-python"):
        settings = AcquisitionSettings(
            root_path=str(tmp_path / f"{backend}.ome.zarr"),
            dimensions=dims,
            dtype=dtype,
            compression=compression,
            format={"name": "ome-zarr", "backend": backend},
        )
        with create_stream(settings) as stream:
            for _ in range(5):
                stream.append(np.ones((8, 6), dtype))
        documents.append((settings.output_path / "0" / "zarr.json").read_bytes())
    assert documents[0] == documents[1]


# ---------------------------------------------------------- backend choice


@pytest.fixture
def hide_modules(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make `find_spec` report the given top-level modules as not installed."""
    real_find_spec = importlib.util.find_spec

    def hide(*names: str) -> None:
        def find_spec(name: str, package: str | None = None) -> Any:
            if name.split(".")[0] in names:
                return None
            return real_find_spec(name, package)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return hide


def _settings(tmp_path: Path, backend: str = "auto", **kwargs: Any) -> Any:
    case = CASES[kwargs.pop("case", "5d")]
    return settings_for(case, tmp_path / "a.ome.zarr", backend, **kwargs)


def test_auto_takes_tensorstore_first(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    stream = create_stream(settings)
    stream.close()
    assert stream.settings.format.backend == "tensorstore"
    assert settings.format.backend == "auto"  # the caller's settings untouched


def test_auto_takes_the_next_installed_and_compatible_backend(
    tmp_path: Path, hide_modules: Any
) -> None:
    hide_modules("tensorstore")
    assert choose_zarr_backend(_settings(tmp_path)) == "acquire-zarr"
    # acquire-zarr cannot write these: passed over for zarr-python
    assert choose_zarr_backend(_settings(tmp_path, compression="zstd")) == "zarr-python"
    transposed = _settings(tmp_path, case="chunked_transposed")
    assert choose_zarr_backend(transposed) == "zarr-python"
    case = CASES["5d"]
    root = write(case, tmp_path / "auto.ome.zarr", "auto").output_path
    assert "storage_transformers" in readers.zarr_documents(root)["0"]  # acquire-zarr
    (want,) = expected_pixels(case)
    np.testing.assert_array_equal(readers.read_zarr_python(root / "0"), want)


def test_auto_without_any_backend_names_every_install_command(
    tmp_path: Path, hide_modules: Any
) -> None:
    hide_modules("tensorstore", "acquire_zarr", "zarr")
    with pytest.raises(ValueError, match="No installed Zarr backend") as error:
        create_stream(_settings(tmp_path))
    assert 'pip install "ome-stream[acquire-zarr]"' in str(error.value)
    assert 'pip install "ome-stream[zarr-python]"' in str(error.value)


@pytest.mark.parametrize(
    ("backend", "module"), [("acquire-zarr", "acquire_zarr"), ("zarr-python", "zarr")]
)
@pytest.mark.parametrize("spelling", ["dict", "alias"])
def test_requested_backend_not_installed_names_the_extra(
    backend: str, module: str, spelling: str, tmp_path: Path, hide_modules: Any
) -> None:
    hide_modules(module)
    root = tmp_path / "x.ome.zarr"
    fmt: Any = (
        backend if spelling == "alias" else {"name": "ome-zarr", "backend": backend}
    )
    settings = AcquisitionSettings(
        root_path=str(root), dimensions=CASES["5d"].dims, dtype="uint16", format=fmt
    )
    with pytest.raises(ImportError, match=f'pip install "ome-stream\\[{backend}\\]"'):
        create_stream(settings)
    assert not root.exists()


@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        ({"compression": "zstd"}, "compression='blosc-zstd'"),
        ({"dtype": "float16"}, "backend='tensorstore'"),
        ({"case": "chunked_transposed"}, "storage_order='acquisition'"),
        ({"case": "5d_transposed", "storage_order": ["c", "t", "z", "y", "x"]}, "'t'"),
    ],
)
def test_acquire_zarr_rejects_settings_it_cannot_write(
    overrides: dict[str, Any], fix: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, "acquire-zarr", **overrides)
    with pytest.raises(ValueError, match="cannot write these settings") as error:
        create_stream(settings)
    assert fix in str(error.value)
    assert not settings.output_path.exists()


def test_acquire_zarr_writes_acquisition_order_when_asked(tmp_path: Path) -> None:
    from ome_stream._validate import validate_dataset

    case = CASES["chunked_transposed"]  # acquired z, c
    with pytest.warns(UserWarning, match="as OME-Zarr 0.5 does not allow"):
        root = write(
            case, tmp_path / "a.ome.zarr", "acquire-zarr", storage_order="acquisition"
        ).output_path
    want = case.acquisition_array("uint16")
    np.testing.assert_array_equal(readers.read_tensorstore(root / "0"), want)
    assert readers.zarr_documents(root)["0"]["dimension_names"] == ["z", "c", "y", "x"]
    # as the warning said
    (problem,) = validate_dataset(root)
    assert "OME-Zarr metadata is invalid" in problem


# ------------------------------------------------------------ read_frame


def check_frames(backend: Any, targets: list[Any], skipped: set[int]) -> None:
    for number, target in targets:
        got = backend.read_frame(target.position_index, target.storage_index)
        if number in skipped:
            assert got is None
        else:
            np.testing.assert_array_equal(got, make_frame(number))


@pytest.mark.parametrize("name", ["5d", "chunked_z", "unbounded_chunked", "sharded"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_read_frame_while_writing_and_after_close(
    backend: str, name: str, tmp_path: Path
) -> None:
    case = CASES[name]
    settings = settings_for(case, tmp_path / "r.ome.zarr", backend)
    backend_object = create_backend(settings)
    backend_object.open()
    targets = list(zip(range(case.n_frames()), FrameRouter(settings)))
    first = targets[0][1]
    assert backend_object.read_frame(first.position_index, first.storage_index) is None
    skipped = {2}
    for number, target in targets:
        where = (target.position_index, target.storage_index)
        if number in skipped:
            backend_object.skip(*where)
            assert backend_object.read_frame(*where) is None
            continue
        backend_object.write(*where, make_frame(number), None)
        # In an open write block, in flight, or written (acquire-zarr: a
        # frame it holds, or its finished chunk file).
        got = backend_object.read_frame(*where)
        np.testing.assert_array_equal(got, make_frame(number))
    check_frames(backend_object, targets, skipped)  # earlier frames too
    backend_object.close()
    check_frames(backend_object, targets, skipped)
    with pytest.raises(IndexError):
        backend_object.read_frame(0, (99,) * len(first.storage_index))


def _blocks_along_t(
    root: Path, sharded: bool, shape: tuple[int, int], backend: str = "tensorstore"
) -> AcquisitionSettings:
    """Unbounded t in shards (or chunks) of 4 time points, 2 channels."""
    t_blocks = (
        {"chunk_size": 1, "shard_size_chunks": 4} if sharded else {"chunk_size": 4}
    )
    return AcquisitionSettings(
        root_path=str(root),
        dimensions=[
            Dimension(name="t", count=None, **t_blocks),
            Dimension(name="c", coords=["DAPI", "GFP"]),
            Dimension(name="y", count=shape[0]),
            Dimension(name="x", count=shape[1]),
        ],
        dtype="uint16",
        format={"name": "ome-zarr", "backend": backend},
    )


@pytest.mark.parametrize("shape", [FRAME, (256, 512)], ids=["small", "large"])
@pytest.mark.parametrize("blocks", ["shards", "chunks"])
@pytest.mark.parametrize("backend", ["tensorstore", "zarr-python"])
def test_open_blocks_are_written_in_a_pause_then_completed(
    backend: str,
    blocks: str,
    shape: tuple[int, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shards (or chunks) of 4 time points: 3 time points, then a pause -
    the open ones are written as they are, readable in the store while the
    stream stays open (the frames still to come as zeros) - then the rest,
    which complete them and start others; at close every frame is there
    once, nothing is missing. (Large frames: files written directly.)"""
    from ome_stream._formats.zarr import regions

    monkeypatch.setattr(regions, "PAUSE_WRITE_S", 0.05)
    root = tmp_path / "paused.ome.zarr"
    settings = _blocks_along_t(root, blocks == "shards", shape, backend)
    with create_stream(settings) as stream:
        for number in range(6):
            stream.append(make_frame(number, shape=shape))
        deadline = time.monotonic() + 30
        while True:  # (the writer writes them 0.05 s into the pause)
            journal = read_journal(journal_path(root))
            if len(journal.frames) == 6 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert len(journal.frames) == 6
        partial = readers.read_tensorstore(root / "0")
        for number in range(6):
            expected = make_frame(number, shape=shape)
            np.testing.assert_array_equal(partial[number // 2, number % 2], expected)
        assert not partial[3].any()  # (to come)
        for number in range(6, 12):
            stream.append(make_frame(number, shape=shape))
    data = readers.read_tensorstore(root / "0")
    assert data.shape == (6, 2, *shape)
    for number in range(12):
        expected = make_frame(number, shape=shape)
        np.testing.assert_array_equal(data[number // 2, number % 2], expected)
    assert readers.zarr_missing_frames(root) == []
    readers.validate_yaozarrs(root)


@pytest.mark.parametrize("blocks", ["shards", "chunks", "shards-over-their-limit"])
def test_open_blocks_over_the_copy_limit_are_written_only_as_shards_of_frames(
    blocks: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past PAUSE_WRITE_MAX_BYTES a block is not copied to be written in a
    pause: chunks of several frames are then left in memory, but shards of
    a frame per inner chunk written directly take the frames added as they
    are - each such shard file holds those frames only (the others not
    stored: zarr-python and tensorstore read zeros), so a kill loses none -
    up to PAUSE_WRITE_MAX_SHARD_BYTES."""
    from ome_stream._formats.zarr import regions

    monkeypatch.setattr(regions, "PAUSE_WRITE_S", 0.05)
    monkeypatch.setattr(regions, "PAUSE_WRITE_MAX_BYTES", 1)
    if blocks == "shards-over-their-limit":
        monkeypatch.setattr(regions, "PAUSE_WRITE_MAX_SHARD_BYTES", 1)
    shape = (256, 512)  # (256 KB frames: written straight to their files)
    root = tmp_path / "big.ome.zarr"
    settings = _blocks_along_t(root, blocks.startswith("shards"), shape)
    with create_stream(settings) as stream:
        for number in range(6):
            stream.append(make_frame(number, shape=shape))
        time.sleep(1.0)  # (0.05 s then suffices: 2 MB of open blocks)
        journal = read_journal(journal_path(root))
        if blocks != "shards":
            assert journal.frames == {}
            assert len(journal.received) == 6
        else:
            assert len(journal.frames) == 6
            frame_bytes = shape[0] * shape[1] * 2
            for c in range(2):  # 3 of 4 frames, and the index (16 B + CRC)
                shard = root / "0" / "c" / "0" / str(c) / "0" / "0"
                assert shard.stat().st_size == 3 * frame_bytes + 4 * 16 + 4
            partial = readers.read_zarr_python(root / "0")
            for number in range(6):
                t, c = divmod(number, 2)
                expected = make_frame(number, shape=shape)
                np.testing.assert_array_equal(partial[t, c], expected)
            assert not np.asarray(partial[3]).any()
        for number in range(6, 8):
            stream.append(make_frame(number, shape=shape))
    data = readers.read_tensorstore(root / "0")
    for number in range(8):
        expected = make_frame(number, shape=shape)
        np.testing.assert_array_equal(data[number // 2, number % 2], expected)
    assert readers.zarr_missing_frames(root) == []


@pytest.mark.parametrize(
    ("version", "whole"),
    [("3.1.2", False), ("3.1.3", True), ("3.2.0rc1", True), ("4.0", True)],
)
def test_zarr_python_rewrites_open_blocks_only_where_files_are_replaced_whole(
    version: str, whole: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """zarr-python before 3.1.3 writes a chunk file over the old one: a kill
    while a block written in a pause is written again would tear frames
    already journaled, so its streams write no blocks in pauses."""
    import zarr

    from ome_stream._formats.zarr import zarr_python

    monkeypatch.setattr(zarr, "__version__", version)
    assert zarr_python._replaces_files_whole() is whole


@pytest.mark.parametrize("backend", ["tensorstore", "zarr-python"])
def test_a_failed_write_keeps_the_frames_a_pause_stored(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards of 4 time points: 3 time points, a pause (the open shards are
    written as they are), then the disk fills up as the first completed
    shard is written whole. Its 3 frames of the pause are still in the
    store (a file is replaced whole or not at all), so only its 4th is lost
    - as `recover` would find after a kill at that moment."""
    from ome_stream._formats.zarr import regions

    monkeypatch.setattr(regions, "PAUSE_WRITE_S", 0.05)
    root = tmp_path / "full.ome.zarr"
    settings = AcquisitionSettings(
        root_path=str(root),
        dimensions=[
            Dimension(name="t", count=8, chunk_size=1, shard_size_chunks=4),
            Dimension(name="c", coords=["DAPI", "GFP"]),
            Dimension(name="y", count=FRAME[0]),
            Dimension(name="x", count=FRAME[1]),
        ],
        dtype="uint16",
        format={"name": "ome-zarr", "backend": backend},
    )
    stream = create_stream(settings)
    for number in range(6):
        stream.append(make_frame(number), frame_metadata={"frame": number})
    deadline = time.monotonic() + 30
    while len(read_journal(journal_path(root)).frames) < 6:
        assert time.monotonic() < deadline, "no pause write"
        time.sleep(0.02)
    backend_cls = type(stream._backend)
    real_write = backend_cls._write
    writes: list[Any] = []

    def write(self: Any, state: Any, region: Any, data: np.ndarray) -> Any:
        writes.append(region)
        if len(writes) == 1:  # the first shard completed: (t 0-3, c 0)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, state, region, data)

    monkeypatch.setattr(backend_cls, "_write", write)

    def append_the_rest_then_close() -> None:  # the error surfaces in either
        for number in range(6, 16):
            stream.append(make_frame(number), frame_metadata={"frame": number})
        stream.close()

    with pytest.raises(WriterError, match="No space left on device"):
        append_the_rest_then_close()
    stream.close()
    monkeypatch.undo()
    missing = set(readers.zarr_missing_frames(root))
    assert (3, 0) in missing  # the failed write's own frame
    stored = {divmod(n, 2) for n in range(6)}  # (t, c) of the pause
    assert not stored & missing
    data = readers.read_tensorstore(root / "0")
    for number in range(6):
        np.testing.assert_array_equal(data[number // 2, number % 2], make_frame(number))
    image = readers.zarr_document(root)["attributes"]["ome_stream"]
    listed = {tuple(r["storage_index"]) for r in image["frame_metadata"]}
    assert stored <= listed
    assert stream.frames_written == 16 - len(missing)


# ------------------------------------------------------ get/update_metadata


@pytest.mark.parametrize("backend", BACKENDS)
def test_get_metadata_lists_every_group_without_frame_metadata(
    backend: str, tmp_path: Path
) -> None:
    case = CASES["plate"]
    settings = settings_for(case, tmp_path / "p.ome.zarr", backend)
    with create_stream(settings) as stream:
        for number in range(case.n_frames()):
            stream.append(make_frame(number), frame_metadata={"frame": number})
        metadata = stream.get_metadata()
    fields = ["A/1/0", "A/2/0", "C/4/0", "C/4/1"]
    assert list(metadata) == ["", "A", "C", "A/1", "A/2", "C/4", *fields]
    assert metadata[""]["ome"]["plate"]["name"] == "Example Plate"
    assert metadata["A"] == {}
    assert [i["path"] for i in metadata["C/4"]["ome"]["well"]["images"]] == ["0", "1"]
    section = metadata["A/1/0"]["ome_stream"]
    assert "frame_metadata" not in section
    assert section["position"]["name"] == "fov0"
    metadata["A/1/0"]["ome"]["multiscales"][0]["name"] = "changed"  # a copy
    assert stream.get_metadata()["A/1/0"]["ome"]["multiscales"][0]["name"] == "fov0"
    closed = stream.get_metadata()["A/1/0"]["ome_stream"]
    assert closed["missing_frame_ranges"] == []
    assert closed["missing_frame_count"] == 0


def _rename_channel(metadata: dict[str, Any], path: str, label: str) -> dict[str, Any]:
    attributes = metadata[path]
    attributes["ome"]["omero"]["channels"][0]["label"] = label
    return attributes


@pytest.mark.parametrize("backend", BACKENDS)
def test_update_metadata_is_written_at_once_and_survives_close(
    backend: str, tmp_path: Path
) -> None:
    case = CASES["multi_position"]
    settings = settings_for(case, tmp_path / "u.ome.zarr", backend)
    root = settings.output_path
    with create_stream(settings) as stream:
        half = case.n_frames() // 2
        for number in range(half):
            stream.append(make_frame(number), frame_metadata={"frame": number})
        metadata = stream.get_metadata()
        image = _rename_channel(metadata, "Pos1", "first")
        image["analysis"] = {"threshold": 3}  # ome_stream round-trips unchanged
        stream.update_metadata({"": {"note": "root"}, "Pos1": image})
        # Only the group documents (ours, written atomically): acquire-zarr
        # writes its arrays' zarr.json in place (no temporary file and rename)
        # on its own threads, so a read while it streams can find one empty.
        root_document = readers.zarr_document(root)
        assert root_document["attributes"]["note"] == "root"
        assert root_document["attributes"]["ome"]["bioformats2raw.layout"] == 3
        pos1 = readers.zarr_document(root, "Pos1")
        assert pos1["attributes"]["analysis"] == {"threshold": 3}
        stream.set_global_metadata("experiment", {"id": 8})
        for number in range(half, case.n_frames()):
            stream.append(make_frame(number), frame_metadata={"frame": number})
    attributes = readers.zarr_documents(root)
    root_attrs = attributes[""]["attributes"]
    assert root_attrs["ome"]["bioformats2raw.layout"] == 3  # kept: no "ome" given
    assert {k: root_attrs[k] for k in ("note", "experiment")} == {
        "note": "root",
        "experiment": {"id": 8},
    }
    image_attrs = attributes["Pos1"]["attributes"]
    assert image_attrs["analysis"] == {"threshold": 3}
    assert image_attrs["ome"]["omero"]["channels"][0]["label"] == "first"
    assert len(image_attrs["ome_stream"]["frame_metadata"]) == case.n_frames() // 2
    stream.update_metadata({"Pos0": {"after_close": True}})
    assert readers.zarr_documents(root)["Pos0"]["attributes"]["after_close"] is True
    readers.validate_yaozarrs(root)
    readers.validate_ome_zarr_models(root)
    scenes = readers.read_bioio(root)
    assert scenes[1].channel_names[0] == "first"


@pytest.mark.parametrize(
    ("update", "error", "match"),
    [
        ([], TypeError, "dict of"),
        ({"": "x"}, TypeError, "must be a dict"),
        ({"": {"when": object()}}, TypeError, "JSON"),
        ({"nope": {}}, KeyError, "'OME', 'Pos0', 'Pos1'"),
        ({"Pos0": {"ome_stream": {}}}, ValueError, "cannot be changed"),
        ({"": {"ome_stream": {}}}, ValueError, "cannot be changed"),
        ({"Pos0": {"ome": {"version": "0.5"}}}, ValueError, "not valid OME-NGFF"),
        (
            {"OME": {"ome": {"version": "0.5", "series": ["Pos0"]}}},
            ValueError,
            "refers",
        ),
        ({"": {"ome": {"version": "0.5", "multiscales": []}}}, ValueError, "NGFF"),
    ],
)
def test_update_metadata_refuses_and_changes_nothing(
    update: Any, error: type[Exception], match: str, tmp_path: Path
) -> None:
    case = CASES["multi_position"]
    settings = settings_for(case, tmp_path / "e.ome.zarr", "tensorstore")
    root = settings.output_path
    with create_stream(settings) as stream:
        for number in range(case.n_frames()):
            stream.append(make_frame(number))
    before = readers.zarr_documents(root)
    with pytest.raises(error, match=match):
        stream.update_metadata(
            {"Pos1": {"fine": 1}, **update} if isinstance(update, dict) else update
        )
    assert readers.zarr_documents(root) == before
    readers.validate_yaozarrs(root)


def test_update_metadata_checks_the_image_axes_and_datasets(tmp_path: Path) -> None:
    case = CASES["5d"]
    settings = settings_for(case, tmp_path / "i.ome.zarr", "tensorstore")
    with create_stream(settings) as stream:
        metadata = stream.get_metadata()
        image = metadata[""]
        multiscale = image["ome"]["multiscales"][0]
        multiscale["datasets"][0]["path"] = "1"
        with pytest.raises(ValueError, match="refers to"):
            stream.update_metadata({"": image})
        multiscale["datasets"][0]["path"] = "0"
        del multiscale["axes"][2]  # z
        scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
        del scale[2]
        with pytest.raises(ValueError, match="5 axes"):
            stream.update_metadata({"": image})
        for number in range(case.n_frames()):
            stream.append(make_frame(number))
    readers.validate_yaozarrs(settings.output_path)


# ------------------------------------------------------------- recovery

WRITER = r"""
import sys, time
sys.path.insert(0, {tests_parent!r})
from ome_stream import AcquisitionSettings, Dimension, create_stream
from tests._cases import make_frame

root, backend = sys.argv[1], sys.argv[2]
dims = [
    Dimension(name="t", count=None),
    Dimension(name="c", coords=["DAPI", "GFP"]),
    Dimension(name="y", count=24),
    Dimension(name="x", count=40),
]
settings = AcquisitionSettings(
    root_path=root, dimensions=dims, dtype="uint16",
    format={{"name": "ome-zarr", "backend": backend}},
)
stream = create_stream(settings)
stream.set_global_metadata("experiment", {{"id": 7}})
for i in range(100000):
    if i % 13 == 4:
        stream.skip()
        continue
    stream.append(make_frame(i, shape=(24, 40)), frame_metadata={{"frame": i}})
    if i == 40:
        print("started", flush=True)
    time.sleep(0.002)
"""


def _kill_while_writing(root: Path, backend: str) -> None:
    script = WRITER.format(tests_parent=str(Path(__file__).parents[1]))
    kill_when_ready(script, str(root), backend, ready="started", after=0.2)


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_sigkill_then_recover(backend: str, tmp_path: Path) -> None:
    root = tmp_path / "run.ome.zarr"
    _kill_while_writing(root, backend)
    journal = read_journal(journal_path(root))
    assert journal.settings["format"]["backend"] == backend
    chunks = sorted(p for p in (root / "0" / "c").rglob("*") if p.is_file())
    if backend == "acquire-zarr" and chunks:
        # as if the kill came halfway through acquire-zarr writing a shard
        chunks[-1].write_bytes(chunks[-1].read_bytes()[:100])
    if backend == "zarr-python" and chunks:
        # as if the kill came while zarr-python's store wrote a chunk to its
        # temporary (renamed into place once whole)
        name = f"{chunks[-1].name}.{uuid.uuid4().hex}.partial"
        chunks[-1].with_name(name).write_bytes(chunks[-1].read_bytes()[:100])
    report = recover(root)
    assert list(root.rglob("*.partial")) == []
    readers.read_tensorstore(root / "0")  # every remaining chunk decodes
    readers.validate_yaozarrs(root)
    readers.validate_ome_zarr_models(root)
    attributes = readers.zarr_documents(root)[""]["attributes"]
    assert attributes["experiment"] == {"id": 7}
    missing = set(readers.zarr_missing_frames(root))
    assert {i for _, i in journal.skipped} <= missing
    assert {i for _, i in journal.lost} <= missing
    frames = {
        index: journal.metadata((p, index))["frame"] for p, index in journal.frames
    }
    if backend == "acquire-zarr":
        # acquire-zarr never says a frame is on disk: all are received only
        assert frames == {}
        assert report.frames_lost == journal.lost
        assert len(journal.lost) > 40
        return
    assert len(frames) > 30
    data = readers.read_zarr_python(root / "0")
    for index, number in frames.items():
        np.testing.assert_array_equal(data[index], make_frame(number, shape=(24, 40)))
    records = {
        tuple(r["storage_index"]): r["frame"]
        for r in attributes["ome_stream"]["frame_metadata"]
    }
    assert records == frames


@pytest.mark.parametrize("via", ["parent", "link"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_store_given_with_dot_dot_is_written_validated_and_recovered(
    backend: str, via: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`../run.ome.zarr`: tensorstore takes no `..` in a file path, and a
    store given so could not be written ("Invalid file path"), validated
    ("cannot be read") or recovered. `link/../run.ome.zarr`, with `link` a
    symbolic link: `..` is the link target's parent, as the OS takes it
    (taken as text, tensorstore wrote the arrays elsewhere than zarr.json)."""
    from typer.testing import CliRunner

    from ome_stream._validate import validate_dataset
    from ome_stream.cli import app

    (tmp_path / "here").mkdir()
    if via == "parent":
        prefix, where = "..", tmp_path
    else:
        (tmp_path / "deep" / "sub").mkdir(parents=True)
        link = tmp_path / "here" / "link"
        link.symlink_to(tmp_path / "deep" / "sub", target_is_directory=True)
        prefix, where = "link/..", tmp_path / "deep"
    monkeypatch.chdir(tmp_path / "here")
    case = CASES["sharded"]
    write(case, Path(f"{prefix}/w.ome.zarr"), backend)
    # all of it there (the spill file beside it is made only past 1 MB)
    other = "sub" if via == "link" else "here"
    assert sorted(p.name for p in where.iterdir()) == [other, "w.ome.zarr"]
    for array_path, want in zip(case.zarr_paths, expected_pixels(case)):
        got = readers.read_zarr_python(where / "w.ome.zarr" / array_path)
        np.testing.assert_array_equal(got, want)
    readers.validate_yaozarrs(where / "w.ome.zarr")
    assert validate_dataset(f"{prefix}/w.ome.zarr") == []
    result = CliRunner().invoke(app, ["validate", f"{prefix}/w.ome.zarr"])
    assert result.exit_code == 0, result.output

    _kill_while_writing(Path(f"{prefix}/k.ome.zarr"), backend)
    assert journal_path(where / "k.ome.zarr").is_file()
    result = CliRunner().invoke(app, ["recover", f"{prefix}/k.ome.zarr"])
    assert result.exit_code == 0, result.output
    assert not journal_path(where / "k.ome.zarr").exists()
    assert validate_dataset(f"{prefix}/k.ome.zarr") == []
    readers.validate_yaozarrs(where / "k.ome.zarr")
    readers.read_tensorstore(where / "k.ome.zarr" / "0")


@pytest.mark.parametrize("backend", BACKENDS)
def test_failed_open_leaves_no_store(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ome_stream._formats.zarr.base import ZarrBackend

    settings = settings_for(CASES["5d"], tmp_path / "f.ome.zarr", backend)
    created = create_backend(settings)
    assert isinstance(created, ZarrBackend)

    def refuse() -> None:
        raise RuntimeError("the array library refused")

    monkeypatch.setattr(created, "_open_arrays", refuse)
    with pytest.raises(RuntimeError, match="refused"):
        created.open()
    assert not settings.output_path.exists()
    with create_stream(settings) as stream:  # nothing left to block a retry
        stream.skip(frames=stream.settings.num_frames or 1)


# ----------------------------------------------------------- a failed write


class _FailedWrite:
    """A write in flight that fails, as a tensorstore future does when the
    disk fills up after `write` returned."""

    def done(self) -> bool:
        return True

    def result(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("when", ["in flight", "at once"])
@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("backend", ["tensorstore", "zarr-python"])
def test_a_failed_write_loses_only_its_own_frames_and_the_store_is_finished(
    backend: str,
    sharded: bool,
    when: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk fills up on one region write (one frame, or a whole shard of
    four): the error reaches the caller; closing finishes the store with the
    frames written - the failed write's frames listed missing, their metadata
    not listed, frames_written and bytes_written counting only what is on
    disk - and no journal is left for `recover`."""
    from ome_stream._formats.zarr.regions import RegionWriterBackend
    from ome_stream._validate import validate_dataset

    n_t = 12
    root = tmp_path / "full.ome.zarr"
    settings = AcquisitionSettings(
        root_path=str(root),
        dimensions=[
            Dimension(name="t", count=n_t, shard_size_chunks=4 if sharded else None),
            Dimension(name="c", coords=["DAPI", "GFP"]),
            Dimension(name="y", count=FRAME[0]),
            Dimension(name="x", count=FRAME[1]),
        ],
        dtype="uint16",
        format={"name": "ome-zarr", "backend": backend},
    )
    backend_cls = type(create_backend(settings))
    assert issubclass(backend_cls, RegionWriterBackend)
    # every region write, through the array library or straight to its file
    real_write = backend_cls._write
    regions: list[Any] = []

    def write(self: Any, state: Any, region: Any, data: np.ndarray) -> Any:
        regions.append(region)
        if len(regions) != 3:
            return real_write(self, state, region, data)
        if when == "at once":
            raise OSError(errno.ENOSPC, "No space left on device")
        return _FailedWrite()

    monkeypatch.setattr(backend_cls, "_write", write)
    stream = create_stream(settings)

    def append_all_then_close() -> None:  # the error surfaces in either
        for number in range(2 * n_t):
            stream.append(make_frame(number), frame_metadata={"frame": number})
        stream.close()

    with pytest.raises(WriterError, match="No space left on device"):
        append_all_then_close()
    stream.close()  # already reported: finishes quietly
    monkeypatch.undo()

    # the storage indices (t, c) the failed write covered
    failed = [r if isinstance(r, slice) else slice(r, r + 1) for r in regions[2][:2]]
    lost = {(t, c) for t in range(n_t)[failed[0]] for c in range(2)[failed[1]]}
    assert len(lost) == (4 if sharded else 1)
    image = readers.zarr_document(root)["attributes"]["ome_stream"]
    missing = set(readers.zarr_missing_frames(root))
    assert lost <= missing
    acquired_first = {divmod(n, 2) for n in range(2 * min(t for t, _ in lost))}
    assert not acquired_first & missing  # the writes before it are kept
    assert stream.frames_written == 2 * n_t - len(missing)
    assert (
        stream.stats().bytes_written
        == stream.frames_written * FRAME[0] * FRAME[1] * np.dtype("uint16").itemsize
    )
    listed = {tuple(r["storage_index"]): r["frame"] for r in image["frame_metadata"]}
    assert set(listed) == {divmod(n, 2) for n in range(2 * n_t)} - missing
    data = readers.read_zarr_python(root / "0")
    for t, c in np.ndindex(n_t, 2):
        if (t, c) in missing:
            assert not data[t, c].any()
        else:
            assert listed[(t, c)] == 2 * t + c
            np.testing.assert_array_equal(data[t, c], make_frame(2 * t + c))
    assert not journal_path(root).exists()
    assert validate_dataset(root) == []
    readers.validate_yaozarrs(root)


class _Written:
    """A write already done (the test performs it at once), that reports
    itself done only from its `ready_after`-th look on."""

    def __init__(self, ready_after: int = 0) -> None:
        self.looks = 0
        self.ready_after = ready_after

    def done(self) -> bool:
        self.looks += 1
        return self.looks > self.ready_after

    def result(self) -> None:
        return None


def test_a_journal_that_cannot_be_written_keeps_the_counts_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk is full under the journal too. A journal line that cannot be
    written stops the acquisition (the error reaches the caller) but loses no
    frame from the store, and the write in flight that then fails is
    counted lost once: frames_written is what the store holds."""
    from ome_stream._formats.zarr.tensorstore import TensorStoreBackend
    from ome_stream._journal import Journal

    root = tmp_path / "full.ome.zarr"
    settings = AcquisitionSettings(
        root_path=str(root),
        dimensions=[
            Dimension(name="t", count=6),
            Dimension(name="c", coords=["DAPI", "GFP"]),
            Dimension(name="y", count=FRAME[0]),
            Dimension(name="x", count=FRAME[1]),
        ],
        dtype="uint16",
        format={"name": "ome-zarr", "backend": "tensorstore"},
    )
    real_region = TensorStoreBackend._write_region
    writes: list[int] = []

    def write_region(self: Any, array: Any, region: Any, data: np.ndarray) -> Any:
        writes.append(1)
        if len(writes) == 3:  # frame 2's write fails in flight
            return _FailedWrite()
        real_region(self, array, region, data).result()
        # frame 1's write is seen done only when frame 2's has been handed over
        return _Written(ready_after=1 if len(writes) == 2 else 0)

    real_written = Journal.written
    lines: list[int] = []

    def journal_written(self: Journal, entries: Any) -> None:
        lines.append(1)
        if len(lines) >= 2:  # from frame 1's line on, the journal's disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_written(self, entries)

    monkeypatch.setattr(TensorStoreBackend, "_write_region", write_region)
    monkeypatch.setattr(Journal, "written", journal_written)
    stream = create_stream(settings)

    def append_all_then_close() -> None:
        for number in range(12):
            stream.append(make_frame(number), frame_metadata={"frame": number})
        stream.close()

    with pytest.raises(WriterError, match="No space left on device"):
        append_all_then_close()
    stream.close()
    monkeypatch.undo()
    section = readers.zarr_document(root)["attributes"]["ome_stream"]
    missing = set(readers.zarr_missing_frames(root))
    assert {(0, 0), (0, 1)}.isdisjoint(missing)  # frames 0 and 1 are kept
    assert (1, 0) in missing  # frame 2's write failed
    assert stream.frames_written == 12 - len(missing) == 2
    data = readers.read_zarr_python(root / "0")
    for t, c in np.ndindex(6, 2):
        if (t, c) in missing:
            assert not data[t, c].any()
        else:
            np.testing.assert_array_equal(data[t, c], make_frame(2 * t + c))
    assert [r["frame"] for r in section["frame_metadata"]] == [0, 1]
    assert not journal_path(root).exists()
    readers.validate_yaozarrs(root)


UMASK_WRITER = r"""
import os, sys, numpy as np
os.umask(0o027)
from ome_stream import AcquisitionSettings, Dimension, create_stream
root, backend, height = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = AcquisitionSettings(
    root_path=root,
    dimensions=[
        Dimension(name="t", count=4, type="time", chunk_size=1,
                  shard_size_chunks=2 if height == 8 else None),
        Dimension(name="y", count=height, type="space"),
        Dimension(name="x", count=512, type="space"),
    ],
    dtype="uint16",
    format={"name": "ome-zarr", "backend": backend},
)
with create_stream(settings) as stream:
    for i in range(3):
        stream.append(np.full((height, 512), i, np.uint16), {"i": i})
stream.set_global_metadata("lab", {"room": 1})  # zarr.json again, after close
"""


@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
@pytest.mark.parametrize("height", [8, 256], ids=["sharded", "whole-frame-chunks"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_file_is_made_with_the_umask(
    backend: str, height: int, tmp_path: Path
) -> None:
    """Every file of the store gets mode 0o666 less the umask, as a plain
    `open` would (the group zarr.json was made through tempfile.mkstemp,
    0o600: readable by its owner only, whatever the umask)."""
    from tests._cases import run_python

    root = tmp_path / "shared.ome.zarr"
    done = run_python(UMASK_WRITER, str(root), backend, str(height))
    assert done.returncode == 0, done.stderr
    modes = {
        path.relative_to(root).as_posix(): oct(path.stat().st_mode & 0o777)
        for path in root.rglob("*")
        if path.is_file()
    }
    assert {"zarr.json", "0/zarr.json"} <= set(modes)
    assert len(modes) > 2  # and the chunk files
    assert set(modes.values()) == {"0o640"}, modes
    assert readers.zarr_document(root)["attributes"]["lab"] == {"room": 1}


def test_write_blocks_beyond_the_queue_bound_are_named_at_the_start(
    tmp_path: Path,
) -> None:
    """Chunks of several frames keep a block per image in memory beside the
    queue's bound: when those alone exceed it, create_stream says so, with
    the figures and what to change (memory grew past the bound silently);
    frame-sized chunks hold none and say nothing."""
    from ome_stream import AcquisitionSettings, Dimension, Position, create_stream

    def settings(chunk: int | None, name: str) -> AcquisitionSettings:
        return AcquisitionSettings(
            root_path=str(tmp_path / name),
            dimensions=[
                Dimension(name="t", count=None, chunk_size=chunk),
                Dimension(
                    name="p",
                    type="position",
                    coords=[Position(name=f"p{i}") for i in range(4)],
                ),
                Dimension(name="y", count=64),
                Dimension(name="x", count=64),
            ],
            dtype="uint16",
            max_queue_bytes=100_000,
        )

    # t outermost, positions inside: a block per position fills at once
    with pytest.warns(
        UserWarning, match="at once in this acquisition order: 4 of 80 KB"
    ) as seen:
        stream = create_stream(settings(10, "blocks.ome.zarr"))
    with stream:
        for i in range(8):
            stream.append(np.full((64, 64), i, np.uint16))
    message = str(seen[0].message)
    assert "320 KB held beside max_queue_bytes=98 KB" in message
    assert "Use smaller chunks or shards" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with create_stream(settings(None, "frames.ome.zarr")) as stream:
            stream.append(np.ones((64, 64), np.uint16))


def test_write_blocks_filled_one_position_at_a_time_are_not_warned_of(
    tmp_path: Path,
) -> None:
    """Positions outermost: one position's blocks fill at a time, however
    many positions there are, so blocks within the bound are not warned of
    (it counted a block per image); blocks along z with channels inside
    are counted per channel (it said nothing)."""
    from ome_stream import AcquisitionSettings, Dimension, Position, create_stream

    positions = [Position(name=f"p{i}") for i in range(20)]
    outer = AcquisitionSettings(
        root_path=str(tmp_path / "outer.ome.zarr"),
        dimensions=[
            Dimension(name="p", type="position", coords=positions),
            Dimension(name="t", count=10, chunk_size=10),
            Dimension(name="y", count=64),
            Dimension(name="x", count=64),
        ],
        dtype="uint16",
        max_queue_bytes=100_000,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_stream(outer).close()
    inner = AcquisitionSettings(
        root_path=str(tmp_path / "zc.ome.zarr"),
        dimensions=[
            Dimension(name="z", count=8, chunk_size=4, type="space"),
            Dimension(name="c", coords=["A", "B", "C", "D"]),
            Dimension(name="y", count=32),
            Dimension(name="x", count=32),
        ],
        dtype="uint16",
        max_queue_bytes=20_000,
    )
    with pytest.warns(
        UserWarning, match="at once in this acquisition order: 4 of 8 KB"
    ):
        create_stream(inner).close()


@pytest.mark.parametrize("blocks", ["shards", "chunks"])
def test_frames_taken_into_open_blocks_are_journaled_in_batches(
    blocks: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "received" journal lines (which frames an open block holds, for
    recover to name those a kill loses) are written a batch at a time, not
    one system call a frame (each cost the writer the GIL), and still all
    reach the journal while the stream waits for more frames."""
    from ome_stream._formats.zarr import regions
    from ome_stream._journal import Journal

    monkeypatch.setattr(regions, "PAUSE_WRITE_S", 3600.0)  # (a stall: no pause write)
    calls: list[int] = []
    real = Journal.received

    def counting(self: Journal, entries: list[Any]) -> None:
        real(self, entries)
        calls.append(len(entries))  # (once in the file)

    monkeypatch.setattr(Journal, "received", counting)
    root = tmp_path / "batched.ome.zarr"
    settings = AcquisitionSettings(
        root_path=str(root),
        dimensions=[
            Dimension(
                name="t",
                count=1000,
                chunk_size=1 if blocks == "shards" else 500,
                **({"shard_size_chunks": 500} if blocks == "shards" else {}),
            ),
            Dimension(name="y", count=FRAME[0]),
            Dimension(name="x", count=FRAME[1]),
        ],
        dtype="uint16",
    )
    frames = [make_frame(i) for i in range(400)]
    with create_stream(settings) as stream:
        for frame in frames:
            stream.append(frame)
        deadline = time.monotonic() + 30
        while sum(calls) < 400 and time.monotonic() < deadline:
            time.sleep(0.005)
        journal = read_journal(journal_path(root))
        assert journal.received == {(0, (i,)) for i in range(400)}
        assert journal.frames == {}  # (all in the open block)
        assert len(calls) < 400 / 4  # batches of several frames
    np.testing.assert_array_equal(
        readers.read_zarr_python(root / "0")[:400], np.stack(frames)
    )


def test_a_block_s_frames_are_journaled_before_its_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard's "received" lines are in the journal before the shard's
    write starts (a kill during a slow write would lose those frames, and
    recover must name them), however soon after each other its frames came,
    and while the writer waits for that write."""
    from ome_stream._formats.zarr import chunkfiles, regions

    monkeypatch.setattr(regions, "RECEIVED_EVERY_S", 3600.0)  # (never by time)
    monkeypatch.setattr(regions, "MAX_WRITES_IN_FLIGHT", 0)  # (the writer waits)
    writing = threading.Event()
    release = threading.Event()
    real_store = chunkfiles.ChunkFiles._store

    def slow_store(self: Any, coords: Any, buffers: Any) -> None:
        writing.set()
        release.wait(30)
        real_store(self, coords, buffers)

    monkeypatch.setattr(chunkfiles.ChunkFiles, "_store", slow_store)
    shape = (256, 512)  # (256 KB frames: shards written straight to their files)
    root = tmp_path / "slow.ome.zarr"
    settings = _blocks_along_t(root, True, shape)
    stream = create_stream(settings)
    try:
        for number in range(8):  # one shard of 4 time points x 2 channels
            stream.append(make_frame(number, shape=shape))
        assert writing.wait(30)
        journal = read_journal(journal_path(root))
        assert journal.frames == {}
        # channel 0's shard (frames 0, 2, 4, 6) is being written
        assert {(0, (t, 0)) for t in range(4)} <= journal.received
    finally:
        release.set()
        stream.close()
    np.testing.assert_array_equal(
        readers.read_zarr_python(root / "0"),
        np.stack([make_frame(n, shape=shape) for n in range(8)]).reshape(4, 2, *shape),
    )
