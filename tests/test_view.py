"""`stream.view()`, coordinate events and get/update_metadata of the stream.

The view is compared with numpy expectations (tests/_cases.py) and with the
data read back from the files by readers we did not write (tensorstore and
zarr-python for OME-Zarr, tifffile for OME-TIFF), during and after writing.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

import ome_stream._stream as stream_module
from ome_stream import (
    AcquisitionSettings,
    CoordUpdate,
    Dimension,
    OMEStream,
    StreamView,
    create_stream,
)
from ome_stream._formats.memory import MemoryBackend
from ome_stream._formats.zarr.acquire_zarr_support import acquire_zarr_incompatibility
from tests import _readers as readers
from tests._cases import CASES, FRAME, Case, make_frame, to_tczyx

# Every format, each Zarr backend and the single-file TIFF layout.
VARIANTS: dict[str, Any] = {
    "scratch": "scratch",
    "ome-zarr": {"name": "ome-zarr", "backend": "tensorstore"},
    "zarr-python": {"name": "ome-zarr", "backend": "zarr-python"},
    "acquire-zarr": {"name": "ome-zarr", "backend": "acquire-zarr"},
    "ome-tiff": "ome-tiff",
    "tiff-single": {"name": "ome-tiff", "prefer_single_file": "always"},
}
FORMATS = ["scratch", "ome-zarr", "ome-tiff"]


def suffix(variant: str) -> str:
    if variant == "scratch":
        return ""
    return ".ome.tiff" if "tiff" in variant else ".ome.zarr"


def case_settings(
    case: Case, variant: str, root: Path, **kw: Any
) -> AcquisitionSettings:
    return AcquisitionSettings(
        root_path="" if variant == "scratch" else str(root / f"out{suffix(variant)}"),
        format=VARIANTS[variant],
        dimensions=case.dims,
        dtype="uint16",
        plate=case.plate,
        **{**case.settings, **kw},
    )


def open_case(case: Case, fmt: str, tmp_path: Path, **overrides: Any) -> OMEStream:
    return create_stream(case_settings(case, fmt, tmp_path, **overrides))


def visited(case: Case, frames: int) -> tuple[int, ...]:
    """Extent of each loop dimension after `frames` frames, by brute force."""
    counts = [d.count for d in case.loop_dims]
    if not counts:
        return ()
    inner = [
        int(np.prod([c or 1 for c in counts[i + 1 :]])) for i in range(len(counts))
    ]
    extents = []
    for axis, count in enumerate(counts):
        seen = {(f // inner[axis]) % (count or 10**9) for f in range(frames)}
        extents.append(max(seen) + 1 if seen else 0)
    return tuple(extents)


def read_back(case: Case, fmt: str, stream: OMEStream) -> list[np.ndarray]:
    """Per position, the stored data as an external reader sees it, in the
    order our expectations use (zarr: storage order; TIFF: page order;
    single-file TIFF: T, C, Z, Y, X as tifffile maps the TiffData)."""
    out = stream.output_path
    if "zarr" in fmt:
        return [readers.read_tensorstore(out / p) for p in case.zarr_paths]
    if fmt == "tiff-single":
        return readers.tifffile_ome_series(out)
    if case.n_positions == 1:
        paths = [out]
    else:
        paths = [out / f"{out.name}_p{p:03d}.ome.tiff" for p in range(case.n_positions)]
    planes = []
    for path in paths:
        with tifffile.TiffFile(path) as tif:
            planes.append(np.stack([page.asarray() for page in tif.pages]))
    return planes


def stored_layout(case: Case, fmt: str, data: np.ndarray) -> list[np.ndarray]:
    """Acquisition-order data laid out as `read_back` returns it."""
    if "zarr" in fmt:
        return case.zarr_expected(data)
    if fmt == "tiff-single":
        return [to_tczyx(p, case.index_names()) for p in case.per_position(data)]
    return [p.reshape(-1, *FRAME) for p in case.per_position(data)]


def _writable(case: Case, variant: str) -> bool:
    if "tiff" in variant:
        return case.tiff
    if variant == "acquire-zarr":
        settings = case_settings(case, variant, Path("unused"))
        return acquire_zarr_incompatibility(settings) is None
    return True


CASE_FORMATS = [
    (name, variant)
    for name, case in CASES.items()
    for variant in VARIANTS
    if _writable(case, variant)
]


@pytest.mark.parametrize(("name", "fmt"), CASE_FORMATS)
def test_view_matches_data_during_and_after_writing(
    name: str, fmt: str, tmp_path: Path
) -> None:
    case = CASES[name]
    n = case.n_frames()
    half = n // 2 + 1
    stream = open_case(case, fmt, tmp_path)
    dynamic = stream.view()
    static = stream.view(dynamic_shape=False)
    assert dynamic.shape == (*visited(case, 0), *FRAME)
    assert dynamic.dims == tuple(d.name for d in case.dims)
    for i in range(half):
        stream.append(make_frame(i))

    partial = case.acquisition_array("uint16", half)
    live = dynamic.shape[:-2]
    assert live == visited(case, half)
    np.testing.assert_array_equal(
        dynamic[...], partial[tuple(slice(0, e) for e in live)]
    )
    np.testing.assert_array_equal(static[:], partial)  # unwritten frames are 0
    assert static.shape == partial.shape

    for i in range(half, n):
        stream.append(make_frame(i))
    stream.close()

    expected = case.acquisition_array("uint16")
    after = np.asarray(dynamic)
    np.testing.assert_array_equal(after, expected)
    np.testing.assert_array_equal(stream.view(dynamic_shape=False)[:], expected)
    if fmt != "scratch":
        for got, want in zip(
            read_back(case, fmt, stream), stored_layout(case, fmt, after)
        ):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt", [v for v in VARIANTS if v != "scratch"])
def test_view_mid_write_agrees_with_the_files(fmt: str, tmp_path: Path) -> None:
    """After a flush point the stored frames, as an external reader sees them,
    equal the view's frames."""
    case = CASES["5d"]
    stream = open_case(case, fmt, tmp_path)
    view = stream.view()
    for i in range(12):
        stream.append(make_frame(i))
    data = view[0]  # t=0: frames 0..11 (3 channels x 4 z)
    np.testing.assert_array_equal(data, case.acquisition_array("uint16")[0])
    stream.close()
    stored = read_back(case, fmt, stream)[0]
    # The declared shape: zarr keeps it; an early-closed TIFF ends at t=1.
    full = stored_layout(case, fmt, stream.view(dynamic_shape=False)[:])[0]
    np.testing.assert_array_equal(stored, full[: len(stored)])
    assert not full[len(stored) :].any()


@pytest.mark.parametrize("fmt", FORMATS)
def test_view_indexing_is_numpys(fmt: str, tmp_path: Path) -> None:
    case = CASES["5d"]  # t=2, c=3, z=4, y, x
    with open_case(case, fmt, tmp_path) as stream:
        for i in range(case.n_frames()):
            stream.append(make_frame(i))
    view = stream.view()
    data = case.acquisition_array("uint16")
    keys: list[Any] = [
        0,
        -1,
        (1, 2),
        (slice(None), 1),
        (..., 3, slice(2, 10, 3)),
        (1, ..., 5),
        (slice(None, None, -1), [2, 0, 2]),
        ([1, 0], slice(None), [3, 1]),  # two lists broadcast, numpy-style
        (slice(None), np.array([True, False, True])),
        (0, 1, np.array([[0, 1], [3, 2]])),
        (-1, -2, -3, slice(-5, None), -1),
        (slice(5, 2), 0),
        (np.int64(1), [], 0),
        ...,
    ]
    for key in keys:
        np.testing.assert_array_equal(view[key], data[key], err_msg=repr(key))
    assert len(view) == 2
    assert view.ndim == 5
    assert view.dtype == np.uint16
    assert view.coords["c"] == ["DAPI", "GFP", "mCherry"]
    assert "t=2" in repr(view)


def test_view_bad_keys_raise_index_and_type_errors() -> None:
    stream = open_case(CASES["5d"], "scratch", Path())
    view = stream.view()
    stream.append(make_frame(0))
    with pytest.raises(IndexError, match="too many indices"):
        view[0, 0, 0, 0, 0, 0]
    with pytest.raises(IndexError, match="single ellipsis"):
        view[..., 0, ...]
    with pytest.raises(TypeError, match="newaxis"):
        view[None]
    with pytest.raises(IndexError, match="out of bounds for 't' with size 2"):
        view[2]
    with pytest.raises(IndexError, match="out of bounds"):
        view[0, [0, 5]]
    with pytest.raises(IndexError, match="only integers"):
        view[0.5]
    with pytest.raises(IndexError, match="boolean index"):
        view[0, [True, False]]
    with pytest.raises(ValueError, match="without copying"):
        view.__array__(copy=False)
    stream.close()


def test_strict_view_refuses_indices_past_what_was_written() -> None:
    stream = open_case(CASES["5d"], "scratch", Path())
    strict = stream.view(strict=True)
    loose = stream.view()
    stream.append(make_frame(0))
    assert strict.shape == (1, 1, 1, *FRAME)
    with pytest.raises(IndexError, match="size 1"):
        strict[1]
    # Not strict: anything in the declared shape reads; unwritten is zero.
    assert not loose[1, 2, 3].any()
    np.testing.assert_array_equal(strict[0, 0, 0], make_frame(0))
    assert strict[:, :, :5].shape == (1, 1, 1, *FRAME)  # slices clip
    stream.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_skipped_frames_read_as_zeros_in_the_view(fmt: str, tmp_path: Path) -> None:
    stream = open_case(CASES["5d"], fmt, tmp_path / fmt)
    view = stream.view()
    stream.append(make_frame(0))
    stream.skip(frames=2)
    stream.append(make_frame(3))
    assert view.shape[:3] == (1, 1, 4)
    got = view[0, 0]
    np.testing.assert_array_equal(got[0], make_frame(0))
    assert not got[1:3].any()
    np.testing.assert_array_equal(got[3], make_frame(3))
    stream.close()
    np.testing.assert_array_equal(view[0, 0], got)


class _GatedBackend(MemoryBackend):
    gate = threading.Event()

    def write(self, *args: Any) -> None:
        self.gate.wait(10)
        super().write(*args)


def test_view_shows_frames_still_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames waiting for a slow disk are visible at once."""
    monkeypatch.setattr(stream_module, "create_backend", _GatedBackend)
    _GatedBackend.gate = threading.Event()
    stream = open_case(CASES["5d"], "scratch", Path())
    view = stream.view()
    for i in range(5):
        stream.append(make_frame(i))
    assert stream.frames_written == 0
    np.testing.assert_array_equal(
        view[0, 0], np.stack([make_frame(i) for i in range(4)])
    )
    np.testing.assert_array_equal(view[0, 1, 0], make_frame(4))
    _GatedBackend.gate.set()
    stream.close()
    np.testing.assert_array_equal(view[0, 1, 0], make_frame(4))


@pytest.mark.parametrize("fmt", FORMATS)
def test_view_grows_with_an_unbounded_axis(fmt: str, tmp_path: Path) -> None:
    case = CASES["unbounded_partial"]  # t unbounded x c=3
    stream = open_case(case, fmt, tmp_path / fmt)
    static = stream.view(dynamic_shape=False)
    assert static.shape == (0, 3, *FRAME)
    for i in range(7):
        stream.append(make_frame(i))
    assert static.shape == (3, 3, *FRAME)
    stream.close()
    np.testing.assert_array_equal(static[:], case.acquisition_array("uint16", 7))


# ------------------------------------------------------------------ events


def test_coordinate_events_follow_the_written_frames() -> None:
    case = CASES["5d"]  # t=2, c=3, z=4
    stream = open_case(case, "scratch", Path())
    changed: list[CoordUpdate] = []
    expanded: list[CoordUpdate] = []
    stream.on("coords_changed", changed.append)
    stream.events.coords_expanded.connect(expanded.append)
    for i in range(case.n_frames()):
        stream.append(make_frame(i))
    stream.close()
    assert [u.frame_number for u in changed] == list(range(24))
    # new maxima: frame 0 (all), z at 1, 2, 3, c at 4, 8, t at 12
    assert [u.frame_number for u in expanded] == [0, 1, 2, 3, 4, 8, 12]
    assert all(u.is_high_water_mark for u in expanded)
    assert sum(u.is_high_water_mark for u in changed) == 7
    last = changed[-1]
    assert last.current_indices == {"t": 1, "c": 2, "z": 3}
    assert last.max_coords["c"] == ["DAPI", "GFP", "mCherry"]
    assert list(last.max_coords["z"]) == [0, 1, 2, 3]
    assert list(expanded[4].max_coords["z"]) == [0, 1, 2, 3]
    assert expanded[4].max_coords["c"] == ["DAPI", "GFP"]


def test_events_disconnect_and_unknown_names() -> None:
    stream = open_case(CASES["5d"], "scratch", Path())
    seen: list[int] = []

    def callback(update: CoordUpdate) -> None:
        seen.append(update.frame_number)

    assert stream.on("coords_changed", callback) is callback
    stream.append(make_frame(0))
    stream.append(make_frame(1))
    _wait_written(stream, 2)
    stream.off("coords_changed", callback)
    stream.append(make_frame(2))
    stream.close()
    assert seen == [0, 1]
    with pytest.raises(ValueError, match="Unknown event 'coords'"):
        stream.on("coords", callback)


def test_events_with_plain_string_and_float_coords() -> None:
    """The peer crashes on these (its tracker assumes `.name`)."""
    settings = AcquisitionSettings(
        root_path="",
        format="scratch",
        dtype="uint8",
        dimensions=[
            Dimension(name="c", coords=["DAPI", "GFP"], type="other"),
            Dimension(name="z", coords=[0.5, 1.0, 1.5]),
            Dimension(name="y", count=4),
            Dimension(name="x", count=4),
        ],
    )
    stream = create_stream(settings)
    updates: list[CoordUpdate] = []
    stream.on("coords_expanded", updates.append)
    view = stream.view()
    for i in range(6):
        stream.append(np.full((4, 4), i, np.uint8))
    stream.close()
    assert updates[-1].max_coords == {
        "c": ["DAPI", "GFP"],
        "z": [0.5, 1.0, 1.5],
        "y": range(4),
        "x": range(4),
    }
    assert view.coords["z"] == [0.5, 1.0, 1.5]
    assert view[1, 2, 0, 0] == 5


def test_view_signal_fires_when_its_shape_grows_and_stops_after_close() -> None:
    stream = open_case(CASES["5d"], "scratch", Path())
    view = stream.view()
    shapes: list[tuple[int, ...]] = []
    view.coords_changed.connect(lambda: shapes.append(view.shape))
    stream.append(make_frame(0))
    _wait_written(stream, 1)
    view.close()
    for i in range(1, 6):
        stream.append(make_frame(i))
    stream.close()
    assert shapes == [(1, 1, 1, *FRAME)]
    assert isinstance(view, StreamView)


def _wait_written(stream: OMEStream, frames: int) -> None:
    for _ in range(1000):
        if stream.frames_written >= frames:
            return
        threading.Event().wait(0.005)
    raise AssertionError("writer thread did not catch up")


# ---------------------------------------------------------------- metadata


def test_memory_metadata_round_trip_and_errors() -> None:
    stream = open_case(CASES["5d"], "scratch", Path())
    stream.append(make_frame(0), frame_metadata={"exposure_time": 0.01})
    stream.skip()
    stream.set_global_metadata("lab", {"scope": "A"})
    stream.close()
    meta = stream.get_metadata()
    assert meta["global"] == {"lab": {"scope": "A"}}
    assert meta["frame_metadata"][0] == [
        {"exposure_time": 0.01, "storage_index": [0, 0, 0]}
    ]
    assert meta["missing_frames"] == [[[0, 0, 1]]]
    meta["global"]["lab"]["scope"] = "B"
    assert stream.get_metadata()["global"]["lab"]["scope"] == "A"  # a copy
    stream.update_metadata(meta)
    assert stream.get_metadata()["global"]["lab"]["scope"] == "B"
    with pytest.raises(TypeError, match="Expected a dict"):
        stream.update_metadata(["x"])
    with pytest.raises(KeyError, match="Unknown metadata keys"):
        stream.update_metadata({"planes": []})
    with pytest.raises(ValueError, match="cannot be edited"):
        stream.update_metadata({"missing_frames": [[]]})
    with pytest.raises(TypeError, match="namespace"):
        stream.update_metadata({"global": {"lab": 3}})
    assert stream.get_metadata()["global"] == {"lab": {"scope": "B"}}
