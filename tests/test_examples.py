"""Every script in examples/ runs, for both formats, and writes a dataset the
external readers accept, with the content the example describes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests import _readers as readers

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))
OUTPUTS = {
    "single_5d_image": "example_5d_image",
    "transposed_order": "example_transposed",
    "multi_position": "example_multi_position",
    "plate": "example_plate",
    "unbounded_timelapse": "example_unbounded",
    "event_driven": "example_event_driven",
    "skip_frames": "example_skip",
    "live_view": "example_live_view",
}


def test_every_example_is_listed() -> None:
    assert sorted(p.stem for p in EXAMPLES) == sorted(OUTPUTS)


def _run(example: str, fmt: str, cwd: Path) -> Path:
    script = next(p for p in EXAMPLES if p.stem == example)
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script), fmt],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    stem = OUTPUTS[example]
    single = cwd / f"{stem}.ome.{fmt}"
    return single if single.exists() else cwd / stem


@pytest.mark.parametrize("example", sorted(OUTPUTS))
def test_example_writes_valid_ome_zarr(example: str, tmp_path: Path) -> None:
    out = _run(example, "zarr", tmp_path)
    readers.validate_yaozarrs(out)
    readers.validate_ome_zarr_models(out)
    images = readers.read_ome_zarr_py(out)
    assert images
    if example == "transposed_order":
        (data,) = images
        assert data.shape == (2, 3, 4, 128, 128)  # stored t, c, z
        t, c, z = np.indices((2, 3, 4))
        np.testing.assert_array_equal(data[..., 0, 0], 100 * t + 10 * z + c)
    if example == "skip_frames":
        (data,) = images
        assert not data[1].any()
        assert data[2, 0, 0, 0] == 21
    if example == "event_driven":
        attrs = json.loads((out / "zarr.json").read_text())["attributes"]
        records = attrs["ome_stream"]["frame_metadata"]
        assert [r["storage_index"] for r in records] == [[i] for i in range(12)]
        assert records[4]["event"] == "division"
    if example == "plate":
        assert len(images) == 4
    if example == "live_view":
        (data,) = images
        assert data.shape == (3, 2, 5, 96, 96)
        assert data[2, 1, 4, 50, 25] >= 5000  # the last frame's bright block


@pytest.mark.parametrize("example", sorted(OUTPUTS))
def test_example_writes_valid_ome_tiff(example: str, tmp_path: Path) -> None:
    out = _run(example, "tiff", tmp_path)
    first = out if out.is_file() else sorted(out.glob("*.ome.tiff"))[0]
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(first))
    info = readers.bioformats_info(first)
    assert info.is_ome_tiff
    assert info.warnings == []
    assert len(info.series) == len(ome.images)
    if example == "transposed_order":
        assert ome.images[0].pixels.dimension_order.value == "XYCZT"
        data = readers.bioformats_pixels(first, info=info)
        t, c, z = np.indices((2, 3, 4))
        np.testing.assert_array_equal(data[..., 0, 0], 100 * t + 10 * z + c)
    if example == "event_driven":
        planes = ome.images[0].pixels.planes
        assert len(planes) == 12
        assert planes[3].position_x == pytest.approx(101.5)
        assert planes[3].position_x_unit.value == "µm"
        assert planes[3].exposure_time == pytest.approx(0.01)
        assert planes[3].exposure_time_unit.value == "s"
        annotation_ids = {a.id for a in ome.structured_annotations.map_annotations}
        assert planes[3].annotation_refs[0].id in annotation_ids
    if example == "skip_frames":
        with tifffile.TiffFile(first) as tif:
            assert not tif.pages[5].asarray().any()
        assert ome.images[0].annotation_refs  # the missing-planes record
    if example == "plate":
        assert len(ome.plates[0].wells) == 3
        assert len(info.series) == 4
