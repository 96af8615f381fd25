"""Settings: validation at construction, inference, units, output paths."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ome_stream import (
    AcquisitionSettings,
    Channel,
    Dimension,
    OmeTiffFormat,
    OmeZarrFormat,
    Plate,
    Position,
    ScratchFormat,
    StandardAxis,
    dims_from_standard_axes,
)

YX = [Dimension(name="y", count=16), Dimension(name="x", count=16)]


def settings(**kwargs: object) -> AcquisitionSettings:
    base: dict[str, object] = {
        "root_path": "out.ome.zarr",
        "dimensions": [Dimension(name="t", count=2), *YX],
        "dtype": "uint16",
    }
    base.update(kwargs)
    return AcquisitionSettings(**base)  # type: ignore[arg-type]


# ----------------------------------------------------------------- dimension


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("t", "time"),
        ("c", "channel"),
        ("z", "space"),
        ("y", "space"),
        ("x", "space"),
        ("p", "position"),
        ("T", "time"),
        ("angle", None),
    ],
)
def test_type_inferred_from_standard_names(name: str, expected: str | None) -> None:
    assert Dimension(name=name, count=2).type == expected


def test_type_inferred_from_coords_and_unit() -> None:
    assert Dimension(name="ch", coords=[Channel(name="GFP")]).type == "channel"
    assert Dimension(name="site", coords=[Position(name="A")]).type == "position"
    assert Dimension(name="depth", count=3, unit="nm").type == "space"
    assert Dimension(name="when", count=3, unit="ms").type == "time"


def test_position_names_become_positions_and_channels_become_channels() -> None:
    pos = Dimension(name="p", coords=["a", "b"])
    assert [type(c) for c in pos.coords or []] == [Position, Position]
    assert pos.count == 2
    chan = Dimension(name="c", coords=["DAPI", "GFP"])
    assert [c.name for c in chan.coords or [] if isinstance(c, Channel)] == [
        "DAPI",
        "GFP",
    ]


def test_position_dimension_without_coords_gets_numbered_positions() -> None:
    dim = Dimension(name="p", count=3)
    assert [c.name for c in dim.coords or [] if isinstance(c, Position)] == [
        "0",
        "1",
        "2",
    ]


@pytest.mark.parametrize(
    ("unit", "ngff"),
    [
        ("um", "micrometer"),
        ("µm", "micrometer"),
        ("μm", "micrometer"),
        ("micron", "micrometer"),
        ("nm", "nanometer"),
        ("Å", "angstrom"),
        ("Micrometer", "micrometer"),
        ("mm", "millimeter"),
        ("Mm", "megameter"),
    ],
)
def test_length_units_normalised_to_ngff(unit: str, ngff: str) -> None:
    assert Dimension(name="z", count=2, unit=unit).unit == ngff


@pytest.mark.parametrize(
    ("unit", "ngff"),
    [
        ("s", "second"),
        ("sec", "second"),
        ("ms", "millisecond"),
        ("µs", "microsecond"),
        ("us", "microsecond"),
        ("min", "minute"),
        ("h", "hour"),
    ],
)
def test_time_units_normalised_to_ngff(unit: str, ngff: str) -> None:
    assert Dimension(name="t", count=2, unit=unit).unit == ngff


def test_unit_normalised_on_assignment_too() -> None:
    dim = Dimension(name="z", count=2, unit="um")
    dim.unit = "nm"
    assert dim.unit == "nanometer"
    with pytest.raises(ValidationError, match="unrecognized unit of length"):
        dim.unit = "furlong"


def test_unknown_unit_for_space_names_the_fix() -> None:
    with pytest.raises(
        ValidationError, match=r"unrecognized unit of length 'parsecs?x'"
    ):
        Dimension(name="z", count=2, type="space", unit="parsecsx")


def test_time_unit_on_space_dimension_rejected() -> None:
    with pytest.raises(ValidationError, match="unit of length 'second'"):
        Dimension(name="z", count=2, type="space", unit="s")


def test_conflicting_coords_and_unit() -> None:
    with pytest.raises(ValidationError, match="conflicting type inference"):
        Dimension(name="c", coords=[Channel(name="a")], unit="um")


def test_coords_count_mismatch() -> None:
    with pytest.raises(
        ValidationError, match=r"length of coords \(2\) does not match count \(3\)"
    ):
        Dimension(name="c", count=3, coords=["a", "b"])


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_scale_must_be_positive(scale: float) -> None:
    with pytest.raises(ValidationError, match="scale must be a positive"):
        Dimension(name="x", count=4, scale=scale)


def test_unique_channel_and_position_names() -> None:
    with pytest.raises(ValidationError, match="Channel names must be unique"):
        Dimension(name="c", coords=["GFP", "GFP"])
    with pytest.raises(ValidationError, match="Position names must be unique"):
        Dimension(name="p", coords=["a", "a"])
    # the same name in different wells is fine
    Dimension(
        name="p",
        coords=[
            Position(name="f0", plate_row="A", plate_column="1"),
            Position(name="f0", plate_row="A", plate_column="2"),
        ],
    )


def test_position_requires_complete_pairs() -> None:
    with pytest.raises(ValidationError, match="plate_row and plate_column"):
        Position(name="a", plate_row="A")
    with pytest.raises(ValidationError, match="grid_row and grid_column"):
        Position(name="a", grid_row=1)


def test_unbounded_position_rejected() -> None:
    with pytest.raises(ValidationError, match="needs a count or coords"):
        Dimension(name="p", type="position")


# ------------------------------------------------------------ standard axes


def test_standard_axis_to_dimension() -> None:
    dim = StandardAxis.Z.to_dimension(count=5, scale=0.5)
    assert (dim.name, dim.type, dim.unit, dim.scale) == (
        "z",
        "space",
        "micrometer",
        0.5,
    )
    assert StandardAxis.TIME.unit() == "second"
    assert StandardAxis.CHANNEL.dimension_type() == "channel"


def test_dims_from_standard_axes_defaults() -> None:
    dims = dims_from_standard_axes(
        {"t": None, "p": ["a", "b"], "c": 2, "z": 8, "y": 64, "x": 32},
        chunk_shapes={"z": 4},
        shard_shapes={"z": 2},
    )
    assert [d.name for d in dims] == ["t", "p", "c", "z", "y", "x"]
    assert [d.chunk_size for d in dims] == [1, None, 1, 4, 64, 32]
    assert dims[0].count is None
    assert dims[3].shard_size_chunks == 2
    assert dims[1].type == "position"


def test_dims_from_standard_axes_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="Standard axis names must be one of"):
        dims_from_standard_axes({"q": 3, "y": 4, "x": 4})


# ------------------------------------------------------------------- plate


@pytest.mark.parametrize(
    ("wells", "shape"), [(6, (2, 3)), (96, (8, 12)), (1536, (32, 48))]
)
def test_plate_from_standard_wells(wells: int, shape: tuple[int, int]) -> None:
    plate = Plate.from_standard_wells(wells)
    assert (len(plate.row_names), len(plate.column_names)) == shape
    assert plate.row_names[0] == "A"
    assert plate.column_names[-1] == str(shape[1])


def test_plate_rows_past_z_are_spreadsheet_style() -> None:
    assert Plate.from_standard_wells(1536).row_names[26:28] == ["AA", "AB"]


def test_plate_errors() -> None:
    with pytest.raises(ValueError, match="Unrecognized standard plate size: 50"):
        Plate.from_standard_wells(50)
    with pytest.raises(ValueError, match="must be \\(n_rows, n_columns\\)"):
        Plate.from_standard_wells((0, 3))
    with pytest.raises(ValidationError, match="alphanumeric"):
        Plate(row_names=["A/B"], column_names=["1"])


# ---------------------------------------------------- acquisition settings


def test_format_from_suffix() -> None:
    assert isinstance(settings(root_path="a.ome.zarr").format, OmeZarrFormat)
    assert isinstance(settings(root_path="a.zarr").format, OmeZarrFormat)
    assert isinstance(settings(root_path="a.ome.tiff").format, OmeTiffFormat)
    assert isinstance(settings(root_path="a.ome.tif").format, OmeTiffFormat)
    assert isinstance(settings(root_path="").format, ScratchFormat)


def test_format_by_name_picks_suffix() -> None:
    zarr = settings(root_path="data", format="ome-zarr")
    assert zarr.output_path == Path("data.ome.zarr")
    tiff = settings(root_path="data", format="tiff")
    assert tiff.output_path == Path("data.ome.tiff")
    backend = settings(
        root_path="data", format={"name": "ome-zarr", "backend": "tensorstore"}
    )
    assert isinstance(backend.format, OmeZarrFormat)
    assert backend.format.backend == "tensorstore"
    assert isinstance(settings(root_path="d", format="tifffile").format, OmeTiffFormat)


def test_root_suffix_kept_in_output_path() -> None:
    assert settings(root_path="a.ome.tif").output_path == Path("a.ome.tif")
    assert settings(root_path="run.zarr").output_path == Path("run.zarr")


def test_no_suffix_and_no_format_warns_and_writes_zarr() -> None:
    with pytest.warns(UserWarning, match="could not be inferred"):
        s = settings(root_path="data")
    assert isinstance(s.format, OmeZarrFormat)


def test_suffix_and_format_must_agree() -> None:
    with pytest.raises(
        ValidationError, match="has a ome-zarr suffix but format is 'ome-tiff'"
    ):
        settings(root_path="x.zarr", format="ome-tiff")


def test_unknown_format_names_choices() -> None:
    with pytest.raises(ValidationError, match="Unknown format 'hdf5'"):
        settings(format="hdf5")


def test_top_level_backend_rejected_with_fix() -> None:
    with pytest.raises(ValidationError, match="pass it inside format"):
        settings(backend="tensorstore")


def test_multi_position_tiff_output_is_a_directory() -> None:
    s = settings(
        root_path="exp.ome.tiff",
        dimensions=[Dimension(name="p", coords=["a", "b"]), *YX],
    )
    assert s.output_path == Path("exp")
    assert isinstance(s.format, OmeTiffFormat)
    assert s.format.file_paths(s.root_path, 2) == [
        Path("exp/exp_p000.ome.tiff"),
        Path("exp/exp_p001.ome.tiff"),
    ]


@pytest.mark.parametrize(
    ("dims", "match"),
    [
        (
            [Dimension(name="t", count=2), Dimension(name="t", count=2), *YX],
            "must be unique",
        ),
        ([Dimension(name="y", count=4)], "At least 2 non-position"),
        ([Dimension(name=n, count=2) for n in "abcd"] + YX, "At most 5 non-position"),
        (
            [Dimension(name="t", count=2), Dimension(name="z"), *YX],
            "Only the first dimension may be unbounded",
        ),
        (
            [Dimension(name="y", count=4), Dimension(name="c", count=3)],
            "must be type='space'",
        ),
    ],
)
def test_dimension_list_errors(dims: list[Dimension], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        settings(dimensions=dims)


def test_last_two_untyped_dimensions_become_space() -> None:
    s = settings(
        dimensions=[
            Dimension(name="t", count=2),
            Dimension(name="r", count=4),
            Dimension(name="q", count=4),
        ]
    )
    assert [d.type for d in s.dimensions[-2:]] == ["space", "space"]


def test_dtype_validated() -> None:
    assert settings(dtype="u2").dtype == "uint16"
    with pytest.raises(ValidationError, match="Invalid dtype"):
        settings(dtype="notatype")
    with pytest.raises(ValidationError, match="integer or floating"):
        settings(dtype="complex64")


def test_compression_checked_against_format() -> None:
    settings(compression="blosc-zstd")
    settings(root_path="a.ome.tiff", compression="lzw")
    with pytest.raises(ValidationError, match="'lzw' is not supported for ome-zarr"):
        settings(compression="lzw")
    with pytest.raises(ValidationError, match="'zstd' is not supported for ome-tiff"):
        settings(root_path="a.ome.tiff", compression="zstd")


def test_tiff_rejects_types_ome_xml_cannot_hold() -> None:
    with pytest.raises(ValidationError, match="OME-TIFF cannot store dtype 'int64'"):
        settings(root_path="a.ome.tiff", dtype="int64")


def test_tiff_rejects_axes_beyond_tcz() -> None:
    dims = [Dimension(name="angle", count=3, type="other"), *YX]
    with pytest.raises(ValidationError, match="maps to none of them"):
        settings(root_path="a.ome.tiff", dimensions=dims)


def test_ome_storage_order_for_zarr_is_tczyx() -> None:
    dims = dims_from_standard_axes({"z": 3, "t": 2, "c": 2, "y": 8, "x": 8})
    s = settings(dimensions=dims)
    assert [d.name for d in s.array_storage_dimensions] == list("tczyx")
    tiff = settings(root_path="a.ome.tiff", dimensions=dims)
    assert [d.name for d in tiff.array_storage_dimensions] == list("ztcyx")


def test_custom_axis_placed_between_time_and_space_for_zarr() -> None:
    dims = [
        Dimension(name="z", count=2),
        Dimension(name="angle", count=3),
        Dimension(name="t", count=2),
        *YX,
    ]
    s = settings(dimensions=dims)
    assert [d.name for d in s.array_storage_dimensions] == ["t", "angle", "z", "y", "x"]


def test_zarr_rejects_two_channel_like_axes_under_ome_order() -> None:
    dims = [Dimension(name="c", count=2), Dimension(name="angle", count=3), *YX]
    with pytest.raises(ValidationError, match="at most one channel or custom axis"):
        settings(dimensions=dims)
    acquired = settings(dimensions=dims, storage_order="acquisition")
    assert "as OME-Zarr 0.5 does not allow" in (acquired.ngff_order_problem() or "")


def test_explicit_storage_order() -> None:
    dims = dims_from_standard_axes({"t": 2, "c": 2, "z": 3, "y": 8, "x": 8})
    s = settings(dimensions=dims, storage_order=["z", "t", "c", "y", "x"])
    assert "types ['space', 'time', 'channel'" in (s.ngff_order_problem() or "")
    assert [d.name for d in s.storage_index_dimensions] == ["z", "t", "c"]
    assert s.storage_index_permutation == (2, 0, 1)
    with pytest.raises(ValidationError, match="must end with the frame dimensions"):
        settings(dimensions=dims, storage_order=["z", "t", "c", "x", "y"])
    with pytest.raises(ValidationError, match="must name every dimension"):
        settings(dimensions=dims, storage_order=["t", "c", "y", "x"])


def test_plate_requires_wells_inside_the_plate() -> None:
    plate = Plate.from_standard_wells(96)
    in_plate = Dimension(
        name="p", coords=[Position(name="f", plate_row="A", plate_column="1")]
    )
    settings(dimensions=[in_plate, *YX], plate=plate)
    outside = Dimension(
        name="p", coords=[Position(name="f", plate_row="Z", plate_column="1")]
    )
    with pytest.raises(ValidationError, match=r"Wells \['Z1'\] are not in the plate"):
        settings(dimensions=[outside, *YX], plate=plate)
    no_well = Dimension(name="p", coords=["f"])
    with pytest.raises(ValidationError, match="every position needs plate_row"):
        settings(dimensions=[no_well, *YX], plate=plate)
    with pytest.raises(ValidationError, match="no position dimension"):
        settings(plate=plate)


def test_properties() -> None:
    dims = dims_from_standard_axes({"t": 3, "p": ["a", "b"], "c": 2, "y": 8, "x": 4})
    s = settings(dimensions=dims)
    assert s.shape == (3, 2, 2, 8, 4)
    assert s.num_frames == 12
    assert [p.name for p in s.positions] == ["a", "b"]
    assert s.position_dimension_index == 1
    assert [d.name for d in s.index_dimensions] == ["t", "c"]
    assert s.frame_shape == (8, 4)
    unbounded = settings(
        dimensions=dims_from_standard_axes({"t": None, "y": 4, "x": 4})
    )
    assert unbounded.is_unbounded
    assert unbounded.num_frames is None


def test_root_path_required_for_files() -> None:
    with pytest.raises(ValidationError, match="root_path is required"):
        settings(root_path="", format="ome-zarr")


def test_unknown_field_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        settings(colour="red")


def test_assignment_is_validated() -> None:
    s = settings()
    with pytest.raises(ValidationError):
        s.dtype = "nonsense"


def test_no_warning_for_explicit_formats() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settings(root_path="data", format="ome-zarr")


def test_several_position_dimensions_multiply_into_images() -> None:
    settings = AcquisitionSettings(
        root_path="",
        format="scratch",
        dtype="uint8",
        dimensions=[
            Dimension(
                name="p",
                coords=[
                    Position(name="A", x_coord=1.0, plate_row="B", plate_column="2"),
                    Position(name="B", y_coord=5.0),
                ],
            ),
            Dimension(name="t", count=2),
            Dimension(name="cam", type="position", coords=["left", "right"]),
            *YX,
        ],
    )
    names = [p.name for p in settings.positions]
    assert names == ["A_left", "A_right", "B_left", "B_right"]
    first = settings.positions[0]
    assert (first.x_coord, first.plate_row, first.plate_column) == (1.0, "B", "2")
    assert settings.positions[3].y_coord == 5.0
    assert [d.name for d in settings.storage_index_dimensions] == ["t"]


@pytest.mark.parametrize(
    "make",
    [
        lambda name: Position(name=name),
        lambda name: Channel(name=name),
        lambda name: Channel(name="GFP", fluorophore=name),
        lambda name: Plate.from_standard_wells(96, name=name),
    ],
    ids=["position", "channel", "fluorophore", "plate"],
)
def test_names_xml_cannot_hold_are_refused(make: Any) -> None:
    """Names go into OME-XML as they are: a control character (which XML
    cannot hold even escaped) is refused where it is given, naming it."""
    with pytest.raises(ValidationError, match=r"contains U\+001B.*remove it"):
        make("FOV\x1b1")
    with pytest.raises(ValidationError, match=r"valid string|contains U\+D800"):
        make("FOV\ud800")
    fine = "FOV\t1 µ\n"  # tab, newline and non-ASCII are fine
    assert fine in make(fine).model_dump().values()


def test_a_zarr_storage_order_ngff_does_not_allow_warns_at_create_stream(
    tmp_path: Path,
) -> None:
    """A storage order of the user's that OME-Zarr 0.5 allows (time, one
    channel or custom axis, 2-3 space axes) is taken as it is; one it does
    not allow is named by the settings and warned of when the stream is
    made (not when settings are made or copied: recover re-reads them),
    more than three space axes included."""
    import warnings

    from ome_stream import create_stream

    dims = dims_from_standard_axes({"z": 3, "c": 2, "t": 2, "y": 8, "x": 8})
    good = settings(dimensions=dims, storage_order=["t", "c", "z", "y", "x"])
    assert good.ngff_order_problem() is None
    tiff = settings(
        root_path="a.ome.tiff", dimensions=dims, storage_order="acquisition"
    )
    assert tiff.ngff_order_problem() is None  # (OME-TIFF: any order)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bad = settings(
            root_path=str(tmp_path / "bad.ome.zarr"),
            dimensions=dims,
            storage_order="acquisition",
        )
    with pytest.warns(UserWarning, match="Use storage_order='ome'"):
        create_stream(bad).close()
    four = [Dimension(name="q", count=2, type="space"), *dims[:1], *YX]
    deep = settings(dimensions=four, storage_order="acquisition")
    assert "2-3 space axes" in (deep.ngff_order_problem() or "")
