"""The command line: `ome-stream demo` writes both formats and reads them back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from ome_stream.cli import app
from tests import _readers as readers


def test_demo_writes_both_formats_that_readers_accept(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "identical" in result.output
    assert "MISMATCH" not in result.output
    zarr = tmp_path / "demo" / "demo.ome.zarr"
    tiff = tmp_path / "demo" / "demo.ome.tiff"
    readers.validate_yaozarrs(zarr)
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(tiff))
    assert [c.name for c in ome.images[0].pixels.channels] == ["DAPI", "GFP"]
    (scene,) = readers.read_bioio(zarr)
    assert scene.channel_names == ["DAPI", "GFP"]
    tiff_data = readers.bioformats_pixels(tiff)
    np.testing.assert_array_equal(tiff_data, scene.data)


def test_demo_rejects_unknown_format(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", str(tmp_path), "--format", "hdf5"])
    assert result.exit_code != 0
    assert "zarr, tiff or both" in result.output
