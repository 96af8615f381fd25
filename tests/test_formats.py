"""Every format x the common setups of spec/000: write real files, read them
back with readers we did not write, and compare every pixel and the metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from ome_stream import AcquisitionSettings, OMEStream, create_stream
from tests import _readers as readers
from tests._cases import CASES, Case, make_frame, to_tczyx


def write_case(
    case: Case, root: Path, dtype: str = "uint16", **overrides: Any
) -> tuple[AcquisitionSettings, OMEStream]:
    settings = AcquisitionSettings(
        root_path=str(root),
        dimensions=case.dims,
        dtype=dtype,
        plate=case.plate,
        **{**case.settings, **overrides},
    )
    with create_stream(settings) as stream:
        for i in range(case.n_frames()):
            stream.append(make_frame(i, dtype), frame_metadata={"frame": i})
    return settings, stream


def zarr_metadata(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / "zarr.json").read_text())
    return data


# ---------------------------------------------------------------- OME-Zarr


@pytest.mark.parametrize("name", list(CASES))
def test_zarr_pixels_match_with_tensorstore_and_zarr_python(
    name: str, tmp_path: Path
) -> None:
    case = CASES[name]
    settings, _ = write_case(case, tmp_path / "out.ome.zarr")
    root = settings.output_path
    expected = case.zarr_expected(case.acquisition_array("uint16"))
    assert len(expected) == len(case.zarr_paths)
    for array_path, want in zip(case.zarr_paths, expected):
        np.testing.assert_array_equal(readers.read_tensorstore(root / array_path), want)
        np.testing.assert_array_equal(readers.read_zarr_python(root / array_path), want)


@pytest.mark.parametrize("name", list(CASES))
def test_zarr_validates_and_opens_in_ngff_readers(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    settings, _ = write_case(case, tmp_path / "out.ome.zarr")
    root = settings.output_path
    readers.validate_yaozarrs(root)
    readers.validate_ome_zarr_models(root)
    expected = case.zarr_expected(case.acquisition_array("uint16"))
    images = readers.read_ome_zarr_py(root)
    assert len(images) == len(expected)
    for got, want in zip(images, expected):
        np.testing.assert_array_equal(np.asarray(got), want)


def test_zarr_multiscales_axes_units_scale_and_channels(tmp_path: Path) -> None:
    case = CASES["5d"]
    settings, _ = write_case(case, tmp_path / "out.ome.zarr")
    ome = zarr_metadata(settings.output_path)["attributes"]["ome"]
    assert ome["version"] == "0.5"
    (multiscale,) = ome["multiscales"]
    assert multiscale["axes"] == [
        {"name": "t", "type": "time", "unit": "second"},
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    (dataset,) = multiscale["datasets"]
    assert dataset["path"] == "0"
    assert dataset["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.5, 1.0, 0.5, 0.1, 0.1]}
    ]
    channels = ome["omero"]["channels"]
    assert [c["label"] for c in channels] == ["DAPI", "GFP", "mCherry"]
    assert [c["color"] for c in channels] == ["0000FF", "00FF00", "FF0000"]
    assert channels[0]["window"]["max"] == 65535
    scenes = readers.read_bioio(settings.output_path)
    assert scenes[0].channel_names == ["DAPI", "GFP", "mCherry"]
    assert tuple(scenes[0].physical_pixel_sizes) == pytest.approx((0.5, 0.1, 0.1))


def test_zarr_translation_written_when_set(tmp_path: Path) -> None:
    from ome_stream import Dimension

    dims = [
        Dimension(name="z", count=2, unit="um", scale=2.0, translation=-3.0),
        Dimension(name="y", count=8, unit="um", scale=0.5, translation=10.0),
        Dimension(name="x", count=8, unit="um", scale=0.5),
    ]
    settings = AcquisitionSettings(
        root_path=str(tmp_path / "t.ome.zarr"), dimensions=dims, dtype="uint8"
    )
    with create_stream(settings) as stream:
        for _ in range(2):
            stream.append(np.zeros((8, 8), np.uint8))
    transforms = zarr_metadata(settings.output_path)["attributes"]["ome"][
        "multiscales"
    ][0]["datasets"][0]["coordinateTransformations"]
    assert transforms[1] == {"type": "translation", "translation": [-3.0, 10.0, 0.0]}
    readers.validate_yaozarrs(settings.output_path)


def test_zarr_plate_layout_has_no_path_collisions(tmp_path: Path) -> None:
    case = CASES["plate"]
    settings, _ = write_case(case, tmp_path / "plate.ome.zarr")
    root = settings.output_path
    plate = zarr_metadata(root)["attributes"]["ome"]["plate"]
    assert plate["name"] == "Example Plate"
    assert [w["path"] for w in plate["wells"]] == ["A/1", "A/2", "C/4"]
    assert [(w["rowIndex"], w["columnIndex"]) for w in plate["wells"]] == [
        (0, 0),
        (0, 1),
        (2, 3),
    ]
    assert plate["field_count"] == 2
    well = zarr_metadata(root / "C" / "4")["attributes"]["ome"]["well"]
    assert [i["path"] for i in well["images"]] == ["0", "1"]
    names = [
        zarr_metadata(root / p)["attributes"]["ome"]["multiscales"][0]["name"]
        for p in ("C/4/0", "C/4/1")
    ]
    assert names == ["fov0", "fov1"]


def test_zarr_bf2raw_series_listing(tmp_path: Path) -> None:
    settings, _ = write_case(CASES["multi_position"], tmp_path / "mp.ome.zarr")
    root = settings.output_path
    assert zarr_metadata(root)["attributes"]["ome"]["bioformats2raw.layout"] == 3
    assert zarr_metadata(root / "OME")["attributes"]["ome"]["series"] == [
        "Pos0",
        "Pos1",
    ]
    position = zarr_metadata(root / "Pos0")["attributes"]["ome_stream"]["position"]
    assert position == {"name": "Pos0", "x_coord": 1.5, "y_coord": -2.0, "z_coord": 3.0}


def test_zarr_frame_metadata_with_storage_index(tmp_path: Path) -> None:
    case = CASES["5d_transposed"]  # acquisition t z c, storage t c z
    settings, _ = write_case(case, tmp_path / "fm.ome.zarr")
    section = zarr_metadata(settings.output_path)["attributes"]["ome_stream"]
    records = section["frame_metadata"]
    assert len(records) == 24
    for record in records:
        i = record["frame"]
        t, z, c = np.unravel_index(i, (2, 4, 3))
        assert record["storage_index"] == [t, c, z]


@pytest.mark.parametrize("compression", ["blosc-zstd", "blosc-lz4", "zstd", "none"])
def test_zarr_compression_codecs(compression: str, tmp_path: Path) -> None:
    case = CASES["5d"]
    settings, _ = write_case(case, tmp_path / "c.ome.zarr", compression=compression)
    meta = zarr_metadata(settings.output_path / "0")
    names = [codec["name"] for codec in meta["codecs"]]
    expected = {
        "blosc-zstd": ["bytes", "blosc"],
        "blosc-lz4": ["bytes", "blosc"],
        "zstd": ["bytes", "zstd"],
        "none": ["bytes"],
    }[compression]
    assert names == expected
    if compression.startswith("blosc"):
        assert meta["codecs"][1]["configuration"]["cname"] == compression[6:]
    want = case.zarr_expected(case.acquisition_array("uint16"))[0]
    np.testing.assert_array_equal(
        readers.read_zarr_python(settings.output_path / "0"), want
    )


def test_zarr_chunks_and_shards_in_array_metadata(tmp_path: Path) -> None:
    settings, _ = write_case(CASES["sharded"], tmp_path / "s.ome.zarr")
    meta = zarr_metadata(settings.output_path / "0")
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [2, 1, 24, 40]
    (sharding,) = meta["codecs"]
    assert sharding["name"] == "sharding_indexed"
    assert sharding["configuration"]["chunk_shape"] == [1, 1, 12, 20]
    assert meta["dimension_names"] == ["t", "c", "y", "x"]
    chunked, _ = write_case(CASES["chunked_z"], tmp_path / "z.ome.zarr")
    zmeta = zarr_metadata(chunked.output_path / "0")
    assert zmeta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 1, 4, 24, 40]


def test_zarr_unbounded_array_sized_to_data(tmp_path: Path) -> None:
    settings, _ = write_case(CASES["unbounded_partial"], tmp_path / "u.ome.zarr")
    assert zarr_metadata(settings.output_path / "0")["shape"] == [3, 3, 24, 40]


@pytest.mark.parametrize(
    "dtype",
    [
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "float32",
        "float64",
        "int64",
    ],
)
def test_zarr_dtypes(dtype: str, tmp_path: Path) -> None:
    case = CASES["5d"]
    settings, _ = write_case(case, tmp_path / "d.ome.zarr", dtype=dtype)
    want = case.zarr_expected(case.acquisition_array(dtype))[0]
    got = readers.read_tensorstore(settings.output_path / "0")
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, want)
    readers.validate_yaozarrs(settings.output_path)


def test_zarr_global_metadata_on_root(tmp_path: Path) -> None:
    case = CASES["multi_position"]
    settings = AcquisitionSettings(
        root_path=str(tmp_path / "g.ome.zarr"), dimensions=case.dims, dtype="uint16"
    )
    with create_stream(settings) as stream:
        stream.set_global_metadata("microscope", {"objective": "60x", "na": 1.4})
        stream.set_global_metadata("microscope", {"objective": "40x"})
        stream.set_global_metadata("lab", {"name": "imaging core"})
        for i in range(case.n_frames()):
            stream.append(make_frame(i))
    stream.set_global_metadata("after", {"note": "written after close"})
    attrs = zarr_metadata(settings.output_path)["attributes"]
    assert attrs["microscope"] == {"objective": "40x"}
    assert attrs["lab"] == {"name": "imaging core"}
    assert attrs["after"] == {"note": "written after close"}
    assert attrs["ome"]["bioformats2raw.layout"] == 3
    readers.validate_yaozarrs(settings.output_path)


# ---------------------------------------------------------------- OME-TIFF

TIFF_CASES = [name for name, case in CASES.items() if case.tiff]


def _tiff_paths(settings: AcquisitionSettings, case: Case) -> list[Path]:
    if case.n_positions == 1:
        return [settings.output_path]
    out = settings.output_path
    return [out / f"{out.name}_p{p:03d}.ome.tiff" for p in range(case.n_positions)]


@pytest.mark.parametrize("name", TIFF_CASES)
def test_tiff_pixels_and_xml(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    settings, _ = write_case(case, tmp_path / "out.ome.tiff")
    expected = case.per_position(case.acquisition_array("uint16"))
    paths = _tiff_paths(settings, case)
    for p, (path, want) in enumerate(zip(paths, expected)):
        xml = readers.tiff_ome_xml(path)
        ome = readers.validate_ome_xml(xml)
        assert len(ome.images) == case.n_positions
        pixels = ome.images[p].pixels
        assert pixels.dimension_order.value == case.tiff_order
        assert (pixels.size_y, pixels.size_x) == want.shape[-2:]
        n_planes = pixels.size_t * pixels.size_c * pixels.size_z
        with tifffile.TiffFile(path) as tif:
            assert len(tif.pages) == n_planes
            planes = np.stack([page.asarray() for page in tif.pages])
        np.testing.assert_array_equal(planes, want.reshape(-1, *want.shape[-2:]))


@pytest.mark.parametrize("name", TIFF_CASES)
def test_tiff_opens_in_bioformats_with_right_pixels(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    settings, _ = write_case(case, tmp_path / "out.ome.tiff")
    path = _tiff_paths(settings, case)[0]
    info = readers.bioformats_info(path)
    assert info.is_ome_tiff, info.stdout
    assert info.warnings == []
    assert len(info.series) == case.n_positions
    expected = case.per_position(case.acquisition_array("uint16"))
    names = case.index_names()
    for series, want in enumerate(expected):
        tczyx = to_tczyx(want, names)
        got = readers.bioformats_pixels(path, series=series)
        np.testing.assert_array_equal(got, tczyx)


def test_tiff_metadata_as_bioformats_reads_it(tmp_path: Path) -> None:
    case = CASES["5d"]
    settings = AcquisitionSettings(
        root_path=str(tmp_path / "m.ome.tiff"), dimensions=case.dims, dtype="uint16"
    )
    with create_stream(settings) as stream:
        for i in range(case.n_frames()):
            t = i // 12
            stream.append(
                make_frame(i),
                frame_metadata={
                    "delta_t": 1.5 * t,
                    "exposure_time": 0.02,
                    "position_x": 10.0 + i,
                    "position_y": -5.0,
                    "position_z": 0.5 * (i % 4),
                    "camera": "sim",
                    "binning": [1, 1],
                },
            )
    info = readers.bioformats_info(settings.output_path)
    assert info.is_ome_tiff
    assert info.warnings == []
    (series,) = info.series
    assert (series.size_t, series.size_c, series.size_z) == (2, 3, 4)
    assert series.dimension_order == "XYZCT"
    pixels = info.ome.images[0].pixels
    assert [c.name for c in pixels.channels] == ["DAPI", "GFP", "mCherry"]
    assert pixels.channels[0].emission_wavelength == 460
    assert pixels.channels[0].emission_wavelength_unit.value == "nm"
    assert pixels.physical_size_x == pytest.approx(0.1)
    assert pixels.physical_size_x_unit.value == "µm"
    assert pixels.physical_size_z == pytest.approx(0.5)
    assert pixels.time_increment == pytest.approx(1.5)
    assert pixels.time_increment_unit.value == "s"
    planes = sorted(pixels.planes, key=lambda p: (p.the_t, p.the_c, p.the_z))
    assert len(planes) == 24
    plane = planes[13]  # t=1, c=0, z=1 -> frame 13
    assert (plane.the_t, plane.the_c, plane.the_z) == (1, 0, 1)
    assert plane.delta_t == pytest.approx(1.5)
    assert plane.delta_t_unit.value == "s"
    assert plane.exposure_time == pytest.approx(0.02)
    assert plane.position_x == pytest.approx(23.0)
    assert plane.position_x_unit.value == "µm"
    assert plane.position_z == pytest.approx(0.5)
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(settings.output_path))
    annotations = {a.id: a for a in ome.structured_annotations.map_annotations}
    own_plane = next(
        p
        for p in ome.images[0].pixels.planes
        if p.the_t == 1 and p.the_c == 0 and p.the_z == 1
    )
    values = {
        m.k: m.value for m in annotations[own_plane.annotation_refs[0].id].value.ms
    }
    assert values == {"camera": "sim", "binning": "[1, 1]"}


def test_tiff_stage_positions_and_resolution_tags(tmp_path: Path) -> None:
    settings, _ = write_case(CASES["multi_position"], tmp_path / "mp.ome.tiff")
    path = _tiff_paths(settings, CASES["multi_position"])[1]
    info = readers.bioformats_info(path)
    assert [s.name for s in info.series] == ["Pos0", "Pos1"]
    stage = info.ome.images[1].stage_label
    assert (stage.x, stage.y) == (100.0, 200.0)
    assert stage.x_unit.value == "µm"
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        # 2 um pixels -> 5000 pixels per centimeter
        assert page.tags["ResolutionUnit"].value == 3
        x_res = page.tags["XResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(5000)


@pytest.mark.parametrize(
    "dtype",
    ["int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"],
)
def test_tiff_every_bioformats_pixel_type(dtype: str, tmp_path: Path) -> None:
    case = CASES["5d_transposed"]
    settings, _ = write_case(case, tmp_path / "d.ome.tiff", dtype=dtype)
    info = readers.bioformats_info(settings.output_path)
    assert info.is_ome_tiff
    assert info.warnings == []
    assert info.series[0].dtype == np.dtype(dtype)
    want = to_tczyx(case.acquisition_array(dtype), case.index_names())
    np.testing.assert_array_equal(
        readers.bioformats_pixels(settings.output_path, info=info), want
    )


@pytest.mark.parametrize("compression", ["lzw", "deflate"])
def test_tiff_compression_read_by_bioformats(compression: str, tmp_path: Path) -> None:
    case = CASES["5d"]
    settings, _ = write_case(case, tmp_path / "c.ome.tiff", compression=compression)
    with tifffile.TiffFile(settings.output_path) as tif:
        assert (
            tif.pages[0].compression.name
            == {"lzw": "LZW", "deflate": "ADOBE_DEFLATE"}[compression]
        )
    want = to_tczyx(case.acquisition_array("uint16"), case.index_names())
    np.testing.assert_array_equal(readers.bioformats_pixels(settings.output_path), want)


def test_tiff_bigtiff_only_when_the_data_can_pass_4gb(tmp_path: Path) -> None:
    from ome_stream import Dimension

    small, _ = write_case(CASES["5d"], tmp_path / "small.ome.tiff")
    with tifffile.TiffFile(small.output_path) as tif:
        assert not tif.is_bigtiff
    unbounded, _ = write_case(CASES["unbounded_partial"], tmp_path / "u.ome.tiff")
    with tifffile.TiffFile(unbounded.output_path) as tif:
        assert tif.is_bigtiff
    huge = AcquisitionSettings(
        root_path=str(tmp_path / "huge.ome.tiff"),
        dimensions=[
            Dimension(name="t", count=1000),  # 1000 x 2048^2 x 2 B = 8.4 GB declared
            Dimension(name="y", count=2048),
            Dimension(name="x", count=2048),
        ],
        dtype="uint16",
    )
    with create_stream(huge) as stream:
        stream.append(np.ones((2048, 2048), np.uint16))  # closed early
    with tifffile.TiffFile(huge.output_path) as tif:
        assert tif.is_bigtiff
        assert len(tif.pages) == 1
    info = readers.bioformats_info(huge.output_path)
    assert info.is_ome_tiff
    assert info.series[0].size_t == 1


def test_tiff_global_metadata_as_namespaced_annotation(tmp_path: Path) -> None:
    case = CASES["multi_position"]
    settings = AcquisitionSettings(
        root_path=str(tmp_path / "g.ome.tiff"), dimensions=case.dims, dtype="uint16"
    )
    with create_stream(settings) as stream:
        stream.set_global_metadata("microscope", {"objective": "60x", "na": 1.4})
        for i in range(case.n_frames()):
            stream.append(make_frame(i))
    stream.set_global_metadata("after", {"note": "post close"})
    for path in _tiff_paths(settings, case):  # every file carries the full XML
        ome = readers.validate_ome_xml(readers.tiff_ome_xml(path))
        by_ns = {a.namespace: a for a in ome.structured_annotations.map_annotations}
        values = {m.k: m.value for m in by_ns["microscope"].value.ms}
        assert values == {"objective": "60x", "na": "1.4"}
        assert "after" in by_ns
        assert len(ome.images) == 2
        uuids = {img.pixels.tiff_data_blocks[0].uuid.file_name for img in ome.images}
        assert uuids == {p.name for p in _tiff_paths(settings, case)}


# characters XML 1.0 cannot hold, as a device might report them
CONTROL = "ready\x01\x1b[0m \ud800 \uffff"
CONTROL_ESCAPED = "ready\\u0001\\u001b[0m \\ud800 \\uffff"


@pytest.mark.parametrize("suffix", [".ome.tiff", ".ome.zarr"])
def test_metadata_with_characters_xml_cannot_hold(suffix: str, tmp_path: Path) -> None:
    """Frame and global metadata strings with control characters: OME-TIFF
    writes them escaped (the OME-XML stays valid, the frames described);
    OME-Zarr keeps them as they are (JSON holds them)."""
    case = CASES["5d"]
    settings = AcquisitionSettings(
        root_path=str(tmp_path / f"c{suffix}"), dimensions=case.dims, dtype="uint16"
    )
    frame_metadata = {"state": CONTROL, f"key{CONTROL}": 1, "nested": [CONTROL]}
    with create_stream(settings) as stream:
        stream.set_global_metadata(f"lab{CONTROL}", {"note": CONTROL})
        for i in range(case.n_frames()):
            stream.append(make_frame(i), frame_metadata=frame_metadata)
    if suffix == ".ome.zarr":
        attributes = zarr_metadata(settings.output_path)["attributes"]
        assert attributes[f"lab{CONTROL}"] == {"note": CONTROL}
        records = attributes["ome_stream"]["frame_metadata"]
        assert [{**r, "storage_index": None} for r in records] == [
            {**frame_metadata, "storage_index": None}
        ] * case.n_frames()
        return
    ome = readers.validate_ome_xml(readers.tiff_ome_xml(settings.output_path))
    annotations = {a.id: a for a in ome.structured_annotations.map_annotations}
    planes = ome.images[0].pixels.planes
    assert len(planes) == case.n_frames()
    for plane in planes:
        values = {
            m.k: m.value for m in annotations[plane.annotation_refs[0].id].value.ms
        }
        assert values == {
            "state": CONTROL_ESCAPED,
            f"key{CONTROL_ESCAPED}": "1",
            "nested": json.dumps([CONTROL]),  # JSON escapes them itself
        }
    (lab,) = [a for a in annotations.values() if (a.namespace or "").startswith("lab")]
    # not an xs:anyURI as given: percent-encoded (UTF-8)
    assert lab.namespace == "labready%01%1B%5B0m%20%ED%A0%80%20%EF%BF%BF"
    assert {m.k: m.value for m in lab.value.ms} == {"note": CONTROL_ESCAPED}
    info = readers.bioformats_info(settings.output_path)  # its own XML parser
    assert info.is_ome_tiff
    want = to_tczyx(case.acquisition_array("uint16"), case.index_names())
    np.testing.assert_array_equal(
        readers.bioformats_pixels(settings.output_path, info=info), want
    )


# ------------------------------------------------------------------ memory


@pytest.mark.parametrize("name", list(CASES))
def test_memory_format_holds_the_same_pixels(name: str) -> None:
    case = CASES[name]
    _, stream = write_case(case, Path(""), format="scratch")
    arrays = stream._backend.arrays  # type: ignore[attr-defined]
    expected = case.per_position(case.acquisition_array("uint16"))
    assert len(arrays) == len(expected)
    for got, want in zip(arrays, expected):
        np.testing.assert_array_equal(got, want)
