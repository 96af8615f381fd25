"""The OME-Zarr missing-frames record: ranges of storage indices whose size
follows the number of gaps, not the number of frames planned."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ome_stream import AcquisitionSettings, Dimension, _validate, create_stream
from ome_stream._formats.zarr import chunkfiles
from ome_stream._missing import missing_frames, ranges_of
from ome_stream._validate import validate_dataset
from ome_stream.cli import app
from tests import _readers as readers
from tests._cases import make_frame


def _expand(ranges: list[list[list[int]]], shape: tuple[int, ...]) -> list[tuple]:
    """Every storage index the ranges cover, with numpy's C-order ravelling."""
    indices: list[tuple] = []
    for first, last in ranges:
        if not shape:
            indices.append(())
            continue
        start = int(np.ravel_multi_index(tuple(first), shape))
        stop = int(np.ravel_multi_index(tuple(last), shape))
        flat = np.arange(start, stop + 1)
        indices += [
            tuple(int(i) for i in row)
            for row in np.stack(np.unravel_index(flat, shape), axis=-1)
        ]
    return indices


@pytest.mark.parametrize(
    "shape", [(), (1,), (7,), (0, 3), (3, 4), (2, 3, 5), (4, 1, 3), (2, 2, 2, 2)]
)
@pytest.mark.parametrize("seed", range(4))
def test_ranges_cover_exactly_the_frames_not_written(
    shape: tuple[int, ...], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    written = rng.random(shape) < [0.0, 0.3, 0.7, 1.0][seed]
    expected = [tuple(int(i) for i in row) for row in np.argwhere(~written)]
    record = missing_frames(written)
    assert _expand(record.ranges, shape) == expected
    assert record.count == len(expected)
    # ranges never touch: a written frame lies between two of them
    for (_, last), (first, _) in zip(record.ranges, record.ranges[1:]):
        gap = np.ravel_multi_index(tuple(first), shape) - np.ravel_multi_index(
            tuple(last), shape
        )
        assert gap > 1
    shuffled = rng.permutation(len(expected)) if expected else []
    assert ranges_of([expected[i] for i in shuffled] * 2, shape) == record.ranges


@pytest.mark.parametrize("backend", ["tensorstore", "zarr-python"])
def test_an_early_close_of_millions_of_planned_frames_is_recorded_in_two_ranges(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run planned for 3 000 000 frames and closed after 8 (one skipped):
    the record is two ranges, zarr.json stays small, close holds no list
    of millions of indices (a list of indices traced ~120 MB more for
    1 000 000 planned frames), and validate reads only the chunks stored."""
    planned = 3_000_000
    settings = AcquisitionSettings(
        root_path=str(tmp_path / "long.ome.zarr"),
        dimensions=[
            Dimension(name="t", count=planned, type="time"),
            Dimension(name="y", count=4, type="space"),
            Dimension(name="x", count=4, type="space"),
        ],
        dtype="uint16",
        format={"name": "ome-zarr", "backend": backend},
    )
    stream = create_stream(settings)
    for i in range(8):
        if i == 5:
            stream.skip()
        else:
            stream.append(make_frame(i, shape=(4, 4)))
    tracemalloc.start()
    try:
        stream.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16e6, peak  # the 3 MB written mask and a few of its size
    root = settings.output_path
    assert (root / "zarr.json").stat().st_size < 4096
    import zarr  # zarr-python, in the test extra

    section = zarr.open_group(str(root), mode="r").attrs["ome_stream"]
    assert section["missing_frame_ranges"] == [[[5], [5]], [[8], [planned - 1]]]
    assert section["missing_frame_count"] == planned - 7
    array = zarr.open_array(str(root / "0"), mode="r")
    assert array.shape == (planned, 4, 4)
    data = array[:10]
    assert not data[5].any()
    assert not data[8:].any()
    for i in (0, 4, 6, 7):
        np.testing.assert_array_equal(data[i], make_frame(i, shape=(4, 4)))
    read: list[tuple[slice, ...]] = []
    stored_chunks = chunkfiles.stored_chunks

    def stored(*args: Any) -> Iterator[tuple[Path, tuple[slice, ...]]]:
        for path, region in stored_chunks(*args):
            read.append(region)
            yield path, region

    def frame_by_frame(array: Any) -> None:
        raise AssertionError("validate read the array over its whole shape")

    with monkeypatch.context() as patch:
        patch.setattr(chunkfiles, "stored_chunks", stored)
        patch.setattr(_validate, "_read_frame_by_frame", frame_by_frame)
        assert validate_dataset(root) == []
    # only the 7 frames' chunk files were read, not 3 000 000 frames
    assert sorted(r[0].start for r in read) == [0, 1, 2, 3, 4, 6, 7]
    result = CliRunner().invoke(app, ["info", str(root)])
    assert result.exit_code == 0, result.output
    assert "missing in 0: t=5; t=8 to t=2999999\n" in result.output


def _uint8_4x4(path: Path, **counts: int) -> AcquisitionSettings:
    """4 x 4 uint8 frames over the index axes `counts` (name=count)."""
    types = {"t": "time", "c": "channel"}
    return AcquisitionSettings(
        root_path=str(path),
        dimensions=[
            *(Dimension(name=n, count=k, type=types[n]) for n, k in counts.items()),
            Dimension(name="y", count=4, type="space"),
            Dimension(name="x", count=4, type="space"),
        ],
        dtype="uint8",
    )


def test_info_lists_at_most_twenty_ranges(tmp_path: Path) -> None:
    settings = _uint8_4x4(tmp_path / "gappy.ome.zarr", t=50)
    with create_stream(settings) as stream:
        for t in range(50):
            if t % 2:
                stream.skip()
            else:
                stream.append(np.full((4, 4), t, np.uint8))
    assert readers.zarr_missing_frames(settings.output_path) == [
        (t,) for t in range(1, 50, 2)
    ]
    document = json.loads((settings.output_path / "zarr.json").read_text())
    assert len(document["attributes"]["ome_stream"]["missing_frame_ranges"]) == 25
    result = CliRunner().invoke(app, ["info", str(settings.output_path)])
    assert result.exit_code == 0, result.output
    listed = " ".join(result.output.split()).split("missing in 0: ")[1]
    shown = "; ".join(f"t={t}" for t in range(1, 40, 2))
    assert listed.startswith(f"{shown}; and 5 more ranges")
    # one range past the twenty: "range", not "ranges"
    with create_stream(settings.model_copy(update={"overwrite": True})) as stream:
        for t in range(41):
            if t % 2:
                stream.skip()
            else:
                stream.append(np.full((4, 4), t, np.uint8))
    result = CliRunner().invoke(app, ["info", str(settings.output_path)])
    assert "; and 1 more range\n" in result.output  # t=41 to t=49


def test_info_names_a_damaged_record_instead_of_failing(tmp_path: Path) -> None:
    settings = _uint8_4x4(tmp_path / "damaged.ome.zarr", t=3, c=2)
    with create_stream(settings) as stream:
        stream.append(np.ones((4, 4), np.uint8))
    path = settings.output_path / "zarr.json"
    document = json.loads(path.read_text())
    document["attributes"]["ome_stream"]["missing_frame_ranges"] = [[[1], [2]]]
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(app, ["info", str(settings.output_path)])
    assert result.exit_code == 0, result.output
    assert "missing in 0: (the record cannot be read" in result.output
    assert validate_dataset(settings.output_path) == [
        ".: missing-frame range [[1], [2]] is not [first, last] with two storage "
        "indices within the index shape [3, 2]."
    ]
