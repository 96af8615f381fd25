"""The command line: `ome-stream demo` runs an MDA on the simulated
microscope and writes datasets the external readers accept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ome_stream import AcquisitionSettings, create_stream, dims_from_standard_axes
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


def _t2_c2_settings(path: Path, channels: list[str]) -> AcquisitionSettings:
    """Two time points of two 8 x 8 uint8 channels."""
    return AcquisitionSettings(
        root_path=str(path),
        dimensions=dims_from_standard_axes({"t": 2, "c": channels, "y": 8, "x": 8}),
        dtype="uint8",
    )


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_output_to_a_pipe_keeps_each_message_and_path_on_one_line(
    suffix: str, tmp_path: Path
) -> None:
    """Output that is not a terminal is not wrapped: a path longer than a
    line stays whole (grep, scripts), as does the message around it."""
    where = tmp_path / ("a_directory_name_long_enough_to_wrap_" * 3)
    settings = _t2_c2_settings(where / f"run{suffix}", ["DAPI", "GFP"])
    with create_stream(settings) as stream:
        stream.append(np.ones((8, 8), np.uint8))
    path = settings.output_path
    assert len(str(path)) > 120
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert f"✓ {path} is a valid, readable dataset." in result.output.splitlines()
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert str(path) in result.output


def test_info_summarises_both_formats(tmp_path: Path) -> None:
    for suffix in (".ome.zarr", ".ome.tiff"):
        settings = _t2_c2_settings(tmp_path / f"d{suffix}", ["DAPI", "GFP"])
        with create_stream(settings) as stream:
            stream.append(np.ones((8, 8), np.uint8), {"delta_t": 0.0})
            stream.skip(frames=1)
            stream.append(np.ones((8, 8), np.uint8), {"delta_t": 1.0})
            stream.set_global_metadata("lab", {"room": "B12"})
        result = CliRunner().invoke(app, ["info", str(settings.output_path)])
        assert result.exit_code == 0, result.output
        assert "DAPI, GFP" in result.output
        assert "t=2 c=2 y=8 x=8" in result.output
        assert "B12" in result.output
        row = next(line for line in result.output.splitlines() if "DAPI" in line)
        # the skipped frame and the one that never arrived (OME-TIFF pads
        # the last time point with a blank plane, recorded as missing)
        assert row.split("│")[-2].strip() == "2"
        # the two appended frames carry metadata (the column said "frames",
        # which read as "0 frames" for a run appended without metadata)
        assert "with metadata" in result.output
        assert row.split("│")[-3].strip() == "2"
        listed = "t=0 c=1; t=1 c=1"
        assert f"missing in 0: {listed}\n" in result.output


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_info_prints_names_and_metadata_as_they_are(
    suffix: str, tmp_path: Path
) -> None:
    """Square brackets in channel names or metadata are text, not rich
    markup (a closing tag like `[/x]` made `info` crash)."""
    settings = _t2_c2_settings(tmp_path / f"[b]{suffix}", ["[DAPI]", "[/x]"])
    with create_stream(settings) as stream:
        for _ in range(3):
            stream.append(np.ones((8, 8), np.uint8))
        stream.set_global_metadata("lab", {"note": "[/bold] and [red]x"})
    result = CliRunner().invoke(app, ["info", str(settings.output_path)])
    assert result.exit_code == 0, result.output
    assert "[DAPI], [/x]" in result.output
    assert "[/bold] and [red]x" in result.output
    assert "[b]" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["validate", str(settings.output_path)])
    assert result.exit_code == 0, result.output
    assert f"[b]{suffix} is a valid" in " ".join(result.output.split())


def test_info_on_something_else_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    result = CliRunner().invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 1
    assert "neither an OME-Zarr store nor OME-TIFF" in " ".join(result.output.split())


def test_acquire_runs_a_sequence_file_on_the_simulated_microscope(
    tmp_path: Path,
) -> None:
    seq_file = tmp_path / "seq.yaml"
    seq_file.write_text(
        "axis_order: tcz\n"
        "time_plan: {interval: 0, loops: 2}\n"
        "channels: [DAPI, Cy5]\n"
        "z_plan: {range: 2, step: 1}\n"
    )
    out = tmp_path / "acq.ome.zarr"
    result = CliRunner().invoke(app, ["acquire", str(seq_file), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "DAPI, Cy5" in result.output
    readers.validate_yaozarrs(out)
    data = readers.read_tensorstore(out / "0")
    assert data.shape == (2, 2, 3, 256, 256)
    assert data.all(axis=(3, 4)).all()  # every plane acquired (camera offset > 0)
    # again to the same output: refused before acquiring (it acquired every
    # frame and dropped them), the dataset left as it was
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = CliRunner().invoke(app, ["acquire", str(seq_file), "-o", str(out)])
    assert again.exit_code == 1
    text = " ".join(again.output.split())
    assert "already exists" in text
    assert "--overwrite" in text
    assert "frame" not in text.lower()  # (nothing acquired, nothing dropped)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_recover_names_lost_frames_as_ranges() -> None:
    """The frames of a lost shard are named as one range of storage
    indices per position (they were named one by one: 100 for a shard of
    100 frames)."""
    from ome_stream._recover import RecoveryReport
    from ome_stream.cli import _lost_frames

    report = RecoveryReport(
        output_path=Path("run.ome.zarr"),
        format="ome-zarr",
        frames_recovered=100,
        frames_skipped=0,
        frames_lost=[
            *((0, (t, c)) for t in range(100, 200) for c in range(2)),
            (1, (5, 0)),
            (1, (7, 1)),
        ],
        shapes=[(200, 2, 16, 16), (10, 2, 16, 16)],  # (as recover gives them)
    )
    assert _lost_frames(report) == (
        "position 0 index [100, 0] to [199, 1]; position 1 index [5, 0], [7, 1]"
    )


def test_acquire_names_a_hardware_error_without_a_traceback(tmp_path: Path) -> None:
    """A sequence naming a channel preset the microscope does not have: the
    run stops at its first event; acquire says why in a line, and where
    the dataset is (it printed pymmcore-plus's traceback)."""
    seq_file = tmp_path / "seq.yaml"
    seq_file.write_text("channels: [{config: Bogus}]\n")
    out = tmp_path / "bogus.ome.zarr"
    result = CliRunner().invoke(app, ["acquire", str(seq_file), "-o", str(out)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "The acquisition stopped:" in text
    assert '"Bogus" does not exist' in text
    assert "0 frames were written to" in text
    assert "Traceback" not in result.output
    assert (
        readers.zarr_document(out)["attributes"]["acquisition_status"]["finish_reason"]
        == "errored"
    )
