"""The command line: `ome-stream demo` runs an MDA on the simulated
microscope and writes datasets the external readers accept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from ome_stream.cli import app
from tests import _readers as readers


def test_demo_writes_both_formats_that_readers_accept(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert result.output.count("valid") == 2
    assert "60/60" in result.output
    zarr = tmp_path / "demo" / "demo.ome.zarr"
    tiff_dir = tmp_path / "demo" / "demo"
    readers.validate_yaozarrs(zarr)
    readers.validate_ome_zarr_models(zarr)
    scenes = readers.read_bioio(zarr)
    assert [s.channel_names for s in scenes] == [["DAPI", "FITC"]] * 2
    first = tiff_dir / "demo_p000.ome.tiff"
    info = readers.bioformats_info(first)
    assert info.is_ome_tiff
    assert info.warnings == []
    assert [s.name for s in info.series] == ["A1-field", "B2-field"]
    assert scenes[0].shape == info.series[0].shape
    # the two runs are separate acquisitions (camera noise differs), but the
    # same simulated sample: channel means agree closely
    tiff_data = readers.bioformats_pixels(first, info=info)
    assert np.allclose(
        tiff_data.mean(axis=(0, 2, 3, 4)),
        scenes[0].data.mean(axis=(0, 2, 3, 4)),
        rtol=0.05,
    )


def test_demo_rejects_unknown_format(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", str(tmp_path), "--format", "hdf5"])
    assert result.exit_code != 0
    assert "zarr, tiff or both" in result.output
