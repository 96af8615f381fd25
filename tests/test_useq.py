"""useq-schema MDASequence -> AcquisitionSettings.

Every bounded case checks the conversion against the events useq itself
yields: `num_frames == len(list(seq))`, and frame *i* routed by our
`FrameRouter` lands at the position and storage index of event *i*, at the
stage coordinates the event sends.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import useq

from ome_stream import (
    AcquisitionSettings,
    Channel,
    IrregularSequenceError,
    Plate,
    Position,
    dims_from_useq,
    useq_to_acquisition_settings,
)
from ome_stream._routing import FrameRouter

WIDTH, HEIGHT = 40, 24

TIME = useq.TIntervalLoops(interval=2, loops=3)
CHANNELS = ["DAPI", "FITC"]
Z = useq.ZRangeAround(range=2, step=1)
STAGE = [useq.Position(x=1, y=2, z=3, name="left"), useq.Position(x=10, y=20)]


def make_settings(
    seq: useq.MDASequence, tmp_path: Path, **kwargs: Any
) -> AcquisitionSettings:
    """Convert and build real settings (proves the result is accepted)."""
    result = useq_to_acquisition_settings(seq, WIDTH, HEIGHT, **kwargs)
    return AcquisitionSettings(
        **result, root_path=str(tmp_path / "x.ome.zarr"), dtype="uint16"
    )


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, abs_tol=1e-9)


def assert_matches_events(settings: AcquisitionSettings, seq: useq.MDASequence) -> None:
    """Frame i of the router is event i of `seq`: same position, same index."""
    events = list(seq)
    assert settings.num_frames == len(events)
    router = FrameRouter(settings)
    stored = [d.name for d in settings.storage_index_dimensions]
    positions = settings.positions
    position_of: dict[tuple[int | None, int | None], int] = {}
    for frame, event in enumerate(events):
        index = {str(axis): value for axis, value in event.index.items()}
        target = router.route(frame)
        assert target.storage_index == tuple(index[name] for name in stored), frame
        # Positions are numbered in the order the events first visit them.
        visit = (index.get("p"), index.get("g"))
        assert target.position_index == position_of.setdefault(visit, len(position_of))
        position = positions[target.position_index]
        assert same(position.x_coord, event.x_pos), (frame, position)
        assert same(position.y_coord, event.y_pos), (frame, position)
        if "z" not in index:
            assert same(position.z_coord, event.z_pos), (frame, position)
    assert len(position_of) == len(positions)


def dim_names(settings: AcquisitionSettings) -> str:
    return "".join(d.name for d in settings.dimensions)


def dim(settings: AcquisitionSettings, name: str) -> Any:
    return next(d for d in settings.dimensions if d.name == name)


# ---------------------------------------------------------------- axis order


@pytest.mark.parametrize(
    ("axis_order", "plans", "expected"),
    [
        ("ptcz", {"t": TIME, "p": STAGE, "c": CHANNELS, "z": Z}, "ptczyx"),
        ("tcpz", {"t": TIME, "p": STAGE, "c": CHANNELS, "z": Z}, "tcpzyx"),
        ("tpcz", {"t": TIME, "p": STAGE, "c": CHANNELS, "z": Z}, "tpczyx"),
        ("tcz", {"t": TIME, "c": CHANNELS, "z": Z}, "tczyx"),
        ("cz", {"c": CHANNELS, "z": Z}, "czyx"),
        ("tc", {"t": TIME, "c": CHANNELS}, "tcyx"),
        ("tpgcz", {"t": TIME, "p": STAGE, "c": CHANNELS, "z": Z}, "tpczyx"),
        ("tpgcz", {"c": CHANNELS}, "cyx"),
        ("zc", {"c": CHANNELS, "z": Z}, "zcyx"),
    ],
)
def test_dimensions_follow_axis_order(
    axis_order: str, plans: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    seq = useq.MDASequence(
        axis_order=axis_order,
        time_plan=plans.get("t"),
        stage_positions=plans.get("p", ()),
        channels=plans.get("c", ()),
        z_plan=plans.get("z"),
    )
    settings = make_settings(seq, tmp_path)
    assert dim_names(settings) == expected
    assert settings.frame_shape == (HEIGHT, WIDTH)
    types = {"t": "time", "c": "channel", "z": "space", "p": "position"}
    for d in settings.dimensions[:-2]:
        assert d.type == types[d.name]
    assert_matches_events(settings, seq)


def test_no_axes_is_a_single_frame(tmp_path: Path) -> None:
    # useq yields no event at all for an empty sequence; the closest array is
    # one frame (an array cannot have zero frames).
    settings = make_settings(useq.MDASequence(), tmp_path)
    assert dim_names(settings) == "yx"
    assert settings.num_frames == 1
    assert settings.plate is None


# ---------------------------------------------------------------------- time


@pytest.mark.parametrize(
    ("plan", "count", "scale"),
    [
        (useq.TIntervalLoops(interval=2, loops=3), 3, 2.0),
        (useq.TIntervalLoops(interval=0.25, loops=4), 4, 0.25),
        (useq.TIntervalLoops(interval=0, loops=3), 3, None),
        (useq.TIntervalLoops(interval=5, loops=1), 1, None),
        (useq.TDurationLoops(duration=6, loops=4), 4, 2.0),
        (useq.TIntervalDuration(interval=2, duration=6), 4, 2.0),
        (
            useq.MultiPhaseTimePlan(
                phases=[
                    useq.TIntervalLoops(interval=1, loops=3),
                    useq.TIntervalLoops(interval=1, loops=4),
                ]
            ),
            6,
            1.0,
        ),
        (
            useq.MultiPhaseTimePlan(
                phases=[
                    useq.TIntervalLoops(interval=1, loops=3),
                    useq.TIntervalLoops(interval=5, loops=3),
                ]
            ),
            5,
            None,
        ),
        (
            # useq's own num_timepoints() says 10 here; the events are 9.
            useq.MultiPhaseTimePlan(
                phases=[
                    useq.TIntervalLoops(interval=1, loops=3),
                    useq.TIntervalLoops(interval=1, loops=4),
                    useq.TDurationLoops(duration=3, loops=4),
                ]
            ),
            9,
            1.0,
        ),
    ],
    ids=[
        "interval-loops",
        "subsecond",
        "interval-0",
        "one-loop",
        "duration-loops",
        "interval-duration",
        "multiphase-same-interval",
        "multiphase-mixed-intervals",
        "multiphase-three-phases",
    ],
)
def test_time_plan_count_and_truthful_scale(
    plan: useq.AnyTimePlan, count: int, scale: float | None, tmp_path: Path
) -> None:
    seq = useq.MDASequence(time_plan=plan, channels=CHANNELS)
    settings = make_settings(seq, tmp_path)
    t = dim(settings, "t")
    assert (t.count, t.scale, t.unit, t.type) == (count, scale, "second", "time")
    assert_matches_events(settings, seq)


def test_one_loop_duration_plan_has_one_timepoint(tmp_path: Path) -> None:
    # useq 0.9.2 cannot iterate this plan (interval = duration / 0), but it
    # describes one timepoint.
    seq = useq.MDASequence(time_plan=useq.TDurationLoops(duration=6, loops=1))
    t = dim(make_settings(seq, tmp_path), "t")
    assert (t.count, t.scale) == (1, None)


@pytest.mark.parametrize(
    "plan",
    [
        useq.TIntervalDuration(interval=0, duration=10),
        useq.MultiPhaseTimePlan(
            phases=[
                useq.TIntervalLoops(interval=1, loops=3),
                useq.TIntervalDuration(interval=0, duration=10),
            ]
        ),
    ],
    ids=["interval-0-duration", "multiphase-ending-unbounded"],
)
def test_unbounded_time_is_the_first_dimension(
    plan: useq.AnyTimePlan, tmp_path: Path
) -> None:
    seq = useq.MDASequence(
        axis_order="tpcz", time_plan=plan, stage_positions=STAGE, channels=CHANNELS
    )
    settings = make_settings(seq, tmp_path)
    assert dim_names(settings) == "tpcyx"
    t = settings.dimensions[0]
    assert (t.count, t.scale, t.unit) == (None, None, "second")
    assert settings.is_unbounded
    assert settings.num_frames is None
    # The frames repeat the order of a bounded version of the same sequence.
    bounded = seq.replace(time_plan=useq.TIntervalLoops(interval=1, loops=3))
    events = list(bounded)
    router = FrameRouter(settings)
    for frame, event in enumerate(events):
        target = router.route(frame)
        assert target.position_index == event.index["p"]
        assert target.storage_index == (event.index["t"], event.index["c"])


# ------------------------------------------------------------------------- z


@pytest.mark.parametrize(
    ("plan", "count", "scale"),
    [
        (useq.ZRangeAround(range=4, step=1), 5, 1.0),
        (useq.ZRangeAround(range=4, step=1, go_up=False), 5, 1.0),
        (useq.ZTopBottom(top=10, bottom=0, step=2.5), 5, 2.5),
        (useq.ZAboveBelow(above=1, below=2, step=0.5), 7, 0.5),
        (useq.ZAbsolutePositions(absolute=[0, 2, 4]), 3, 2.0),
        (useq.ZAbsolutePositions(absolute=[4, 2, 0]), 3, 2.0),
        (useq.ZAbsolutePositions(absolute=[0, 1, 4]), 3, None),
        (useq.ZRelativePositions(relative=[-0.5, 0, 0.5]), 3, 0.5),
        (useq.ZRelativePositions(relative=[0, 1, 0]), 3, None),
        (useq.ZRelativePositions(relative=[3]), 1, None),
    ],
    ids=[
        "range-around",
        "range-around-down",
        "top-bottom",
        "above-below",
        "absolute-even",
        "absolute-even-descending",
        "absolute-uneven",
        "relative-even",
        "relative-back-and-forth",
        "relative-single",
    ],
)
def test_z_plan_count_and_step(
    plan: useq.AnyZPlan, count: int, scale: float | None, tmp_path: Path
) -> None:
    seq = useq.MDASequence(z_plan=plan, stage_positions=STAGE, axis_order="pz")
    settings = make_settings(seq, tmp_path)
    z = dim(settings, "z")
    assert (z.count, z.scale, z.unit, z.type) == (count, scale, "micrometer", "space")
    assert_matches_events(settings, seq)


# ------------------------------------------------------------------ channels


def test_channels_become_named_channel_coords(tmp_path: Path) -> None:
    seq = useq.MDASequence(
        channels=[
            useq.Channel(config="DAPI", exposure=10),
            useq.Channel(config="GFP", group="Laser"),
            useq.Channel(config="GFP", group="LED"),
            "GFP_1",
        ]
    )
    settings = make_settings(seq, tmp_path)
    c = dim(settings, "c")
    assert c.coords == [
        Channel(name="DAPI"),
        Channel(name="GFP"),
        Channel(name="GFP_2"),
        Channel(name="GFP_1"),
    ]
    assert (c.count, c.scale, c.unit) == (4, None, None)
    assert_matches_events(settings, seq)


# ------------------------------------------------------ pixel size and units


def test_pixel_size_scales_x_and_y(tmp_path: Path) -> None:
    settings = make_settings(useq.MDASequence(), tmp_path, pixel_size_um=0.325)
    y, x = settings.frame_dimensions
    assert (y.count, y.scale, y.unit) == (HEIGHT, 0.325, "micrometer")
    assert (x.count, x.scale, x.unit) == (WIDTH, 0.325, "micrometer")


def test_no_pixel_size_leaves_x_and_y_unscaled(tmp_path: Path) -> None:
    y, x = make_settings(useq.MDASequence(), tmp_path).frame_dimensions
    assert (y.scale, x.scale) == (None, None)


@pytest.mark.parametrize("pixel_size", [0, -0.5, math.nan])
def test_nonpositive_pixel_size_warns_and_is_ignored(
    pixel_size: float, tmp_path: Path
) -> None:
    with pytest.warns(UserWarning, match=r"pixel_size_um=.*ignored"):
        settings = make_settings(useq.MDASequence(), tmp_path, pixel_size_um=pixel_size)
    assert [d.scale for d in settings.frame_dimensions] == [None, None]


def test_units_override_scale_and_unit_normalised(tmp_path: Path) -> None:
    seq = useq.MDASequence(time_plan=TIME, z_plan=Z)
    settings = make_settings(
        seq,
        tmp_path,
        pixel_size_um=0.5,
        units={"t": (500, "ms"), "z": (0.2, "um"), "y": (100, "nm"), "x": (None, None)},
    )
    t, z, y, x = settings.dimensions
    assert (t.scale, t.unit) == (500, "millisecond")
    assert (z.scale, z.unit) == (0.2, "micrometer")
    assert (y.scale, y.unit) == (100, "nanometer")
    assert (x.scale, x.unit) == (None, None)


def test_units_of_the_wrong_kind_are_rejected() -> None:
    seq = useq.MDASequence(time_plan=TIME)
    with pytest.raises(ValueError, match="unrecognized unit of time 'micrometer'"):
        useq_to_acquisition_settings(seq, WIDTH, HEIGHT, units={"t": (1, "um")})


def test_chunk_and_shard_shapes_by_axis_letter(tmp_path: Path) -> None:
    seq = useq.MDASequence(time_plan=TIME, stage_positions=STAGE, z_plan=Z)
    settings = make_settings(
        seq,
        tmp_path,
        chunk_shapes={"t": 1, "p": 7, "z": 3, "y": 12, "x": 20},
        shard_shapes={"t": 3, "g": 2, "y": 2},
    )
    chunks = {d.name: (d.chunk_size, d.shard_size_chunks) for d in settings.dimensions}
    assert chunks == {
        "t": (1, 3),
        "p": (None, None),
        "z": (3, None),
        "y": (12, 2),
        "x": (20, None),
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"units": {"c": (1, "um")}}, r"units keys .* got \['c'\]"),
        ({"chunk_shapes": {"q": 1}}, r"chunk_shapes keys .* got \['q'\]"),
        ({"shard_shapes": {"T": 1}}, r"shard_shapes keys .* got \['T'\]"),
    ],
)
def test_unknown_axis_keys_are_rejected(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        useq_to_acquisition_settings(useq.MDASequence(), WIDTH, HEIGHT, **kwargs)


# ----------------------------------------------------------------- positions


def test_stage_positions_keep_names_and_coordinates(tmp_path: Path) -> None:
    seq = useq.MDASequence(
        stage_positions=[
            useq.Position(x=1.5, y=-2, z=30, name="cell"),
            useq.Position(x=10, y=20),
            useq.Position(x=5, y=6, z=7, name="cell"),
        ],
        channels=CHANNELS,
    )
    settings = make_settings(seq, tmp_path)
    assert dim_names(settings) == "pcyx"
    assert settings.positions == (
        Position(name="cell", x_coord=1.5, y_coord=-2, z_coord=30),
        Position(name="1", x_coord=10, y_coord=20),
        Position(name="cell_1", x_coord=5, y_coord=6, z_coord=7),
    )
    assert settings.plate is None
    assert_matches_events(settings, seq)


GRID = useq.GridRowsColumns(rows=2, columns=2, fov_width=10, fov_height=8)


def _sub_grid(rows: int, columns: int) -> useq.MDASequence:
    return useq.MDASequence(
        grid_plan=useq.GridRowsColumns(
            rows=rows, columns=columns, fov_width=4, fov_height=4
        )
    )


def test_global_grid_merges_into_positions(tmp_path: Path) -> None:
    seq = useq.MDASequence(
        axis_order="tpgcz",
        time_plan=TIME,
        stage_positions=STAGE,
        grid_plan=GRID,
        channels=CHANNELS,
        z_plan=Z,
    )
    settings = make_settings(seq, tmp_path)
    assert dim_names(settings) == "tpczyx"
    names = [p.name for p in settings.positions]
    assert names == [
        "left_r0_c0",
        "left_r0_c1",
        "left_r1_c1",
        "left_r1_c0",
        "1_r0_c0",
        "1_r0_c1",
        "1_r1_c1",
        "1_r1_c0",
    ]
    first = settings.positions[0]
    assert (first.grid_row, first.grid_column) == (0, 0)
    assert (first.x_coord, first.y_coord, first.z_coord) == (-4, 6, 3)
    assert_matches_events(settings, seq)


def test_grid_first_order_visits_every_position_per_tile(tmp_path: Path) -> None:
    seq = useq.MDASequence(
        axis_order="tgpc",
        time_plan=TIME,
        stage_positions=STAGE,
        grid_plan=useq.GridRowsColumns(rows=1, columns=2),
        channels=CHANNELS,
    )
    settings = make_settings(seq, tmp_path)
    assert dim_names(settings) == "tpcyx"
    assert [p.name for p in settings.positions] == [
        "left_r0_c0",
        "1_r0_c0",
        "left_r0_c1",
        "1_r0_c1",
    ]
    assert_matches_events(settings, seq)


def test_grid_without_stage_positions(tmp_path: Path) -> None:
    seq = useq.MDASequence(
        axis_order="tgcz", time_plan=TIME, grid_plan=GRID, channels=CHANNELS, z_plan=Z
    )
    settings = make_settings(seq, tmp_path)
    assert dim_names(settings) == "tpczyx"
    assert [p.name for p in settings.positions] == [
        "r0_c0",
        "r0_c1",
        "r1_c1",
        "r1_c0",
    ]
    assert_matches_events(settings, seq)


def test_absolute_grid_uses_grid_coordinates(tmp_path: Path) -> None:
    edges = useq.GridFromEdges(
        top=0, left=0, bottom=10, right=10, fov_width=5, fov_height=5
    )
    seq = useq.MDASequence(
        axis_order="pgc",
        stage_positions=[useq.Position(z=12, name="s")],
        grid_plan=edges,
        channels=CHANNELS,
    )
    settings = make_settings(seq, tmp_path)
    assert settings.positions[0] == Position(
        name="s_r0_c0", grid_row=0, grid_column=0, x_coord=2.5, y_coord=7.5, z_coord=12
    )
    assert_matches_events(settings, seq)


def test_plans_missing_from_axis_order_are_not_iterated(tmp_path: Path) -> None:
    seq = useq.MDASequence(
        axis_order="tcp",
        channels=CHANNELS,
        grid_plan=GRID,
        stage_positions=[
            useq.Position(x=1),
            useq.Position(x=2, sequence=_sub_grid(1, 2)),
        ],
    )
    settings = make_settings(seq, tmp_path)
    assert [p.name for p in settings.positions] == ["0", "1_r0_c0", "1_r0_c1"]
    assert_matches_events(settings, seq)


def test_absolute_grid_alone(tmp_path: Path) -> None:
    polygon = useq.GridFromPolygon(
        vertices=[(0, 0), (0, 20), (20, 20), (20, 0)], fov_width=10, fov_height=10
    )
    seq = useq.MDASequence(grid_plan=polygon, channels=CHANNELS)
    settings = make_settings(seq, tmp_path)
    assert len(settings.positions) == len(list(polygon))
    assert_matches_events(settings, seq)


def test_random_points_are_numbered(tmp_path: Path) -> None:
    points = useq.RandomPoints(
        num_points=3, max_width=100, max_height=100, random_seed=7
    )
    seq = useq.MDASequence(stage_positions=STAGE[:1], grid_plan=points)
    settings = make_settings(seq, tmp_path)
    assert [p.name for p in settings.positions] == ["left_g0", "left_g1", "left_g2"]
    assert all(p.grid_row is None for p in settings.positions)
    assert_matches_events(settings, seq)


def test_unseeded_random_points_record_no_xy(tmp_path: Path) -> None:
    points = useq.RandomPoints(num_points=3, max_width=100, max_height=100)
    seq = useq.MDASequence(grid_plan=points, channels=CHANNELS)
    with pytest.warns(UserWarning, match="without random_seed .* not recorded"):
        settings = make_settings(seq, tmp_path)
    assert [p.name for p in settings.positions] == ["g0", "g1", "g2"]
    assert all(p.x_coord is None and p.y_coord is None for p in settings.positions)
    assert settings.num_frames == len(list(seq))


def test_position_sub_grids_of_different_shapes(tmp_path: Path) -> None:
    seq = useq.MDASequence(
        axis_order="tcp",
        time_plan=TIME,
        channels=CHANNELS,
        stage_positions=[
            useq.Position(x=0, y=0, name="a", sequence=_sub_grid(1, 2)),
            useq.Position(x=100, y=100, z=5, name="b"),
            useq.Position(x=200, y=0, name="c", sequence=_sub_grid(2, 2)),
        ],
    )
    settings = make_settings(seq, tmp_path)
    assert dim_names(settings) == "tcpyx"
    assert [p.name for p in settings.positions] == [
        "a_r0_c0",
        "a_r0_c1",
        "b",
        "c_r0_c0",
        "c_r0_c1",
        "c_r1_c1",
        "c_r1_c0",
    ]
    assert_matches_events(settings, seq)


@pytest.mark.parametrize("axis_order", ["tpg", "tgp"])
def test_position_sub_grid_mixed_with_global_grid(
    axis_order: str, tmp_path: Path
) -> None:
    seq = useq.MDASequence(
        axis_order=axis_order,
        time_plan=TIME,
        grid_plan=useq.GridRowsColumns(rows=2, columns=1, fov_width=4, fov_height=4),
        stage_positions=[
            useq.Position(x=0, y=0, name="a", sequence=_sub_grid(1, 3)),
            useq.Position(x=50, y=50, name="b"),
        ],
    )
    settings = make_settings(seq, tmp_path)
    assert sorted(p.name for p in settings.positions) == [
        "a_r0_c0",
        "a_r0_c1",
        "a_r0_c2",
        "b_r0_c0",
        "b_r1_c0",
    ]
    assert_matches_events(settings, seq)


def test_absolute_position_sub_grid(tmp_path: Path) -> None:
    edges = useq.GridFromEdges(top=0, left=0, bottom=4, right=8, fov_width=4)
    seq = useq.MDASequence(
        channels=CHANNELS,
        axis_order="cp",
        stage_positions=[
            useq.Position(z=1, sequence=useq.MDASequence(grid_plan=edges))
        ],
    )
    settings = make_settings(seq, tmp_path)
    assert settings.positions[0].name == "0_r0_c0"
    assert_matches_events(settings, seq)


# -------------------------------------------------------------------- plates


def test_well_plate_plan_gives_plate_and_wells(tmp_path: Path) -> None:
    plan = useq.WellPlatePlan(
        plate=96,
        a1_center_xy=(100, 200),
        selected_wells=([0, 1], [0, 2]),
        well_points_plan=useq.GridRowsColumns(
            rows=1, columns=2, fov_width=10, fov_height=10
        ),
    )
    seq = useq.MDASequence(stage_positions=plan, channels=CHANNELS, time_plan=TIME)
    settings = make_settings(seq, tmp_path)
    assert dim_names(settings) == "tpcyx"
    assert settings.plate == Plate(
        row_names=list("ABCDEFGH"),
        column_names=[str(i) for i in range(1, 13)],
        name="96-well",
    )
    positions = settings.positions
    assert [(p.name, p.plate_row, p.plate_column) for p in positions] == [
        ("fov0", "A", "1"),
        ("fov1", "A", "1"),
        ("fov0", "B", "3"),
        ("fov1", "B", "3"),
    ]
    assert [(p.grid_row, p.grid_column) for p in positions] == [(0, 0), (0, 1)] * 2
    assert_matches_events(settings, seq)


def test_well_plate_rows_beyond_z_use_spreadsheet_letters(tmp_path: Path) -> None:
    plan = useq.WellPlatePlan(
        plate=1536, a1_center_xy=(0, 0), selected_wells=([25, 26, 27], [0, 0, 47])
    )
    settings = make_settings(useq.MDASequence(stage_positions=plan), tmp_path)
    wells = [p.well for p in settings.positions]
    assert wells == [("Z", "1"), ("AA", "1"), ("AB", "48")]
    assert [p.name for p in settings.positions] == ["fov0"] * 3
    assert settings.plate is not None
    assert settings.plate.row_names[-1] == "AF"
    assert len(settings.plate.column_names) == 48
    assert_matches_events(settings, useq.MDASequence(stage_positions=plan))


@pytest.mark.parametrize("with_grid", [False, True])
def test_plate_annotated_positions_infer_the_plate(
    with_grid: bool, tmp_path: Path
) -> None:
    seq = useq.MDASequence(
        axis_order="pgc",
        stage_positions=[
            useq.Position(x=0, y=0, plate_row=0, plate_col=0, name="A1"),
            useq.Position(x=9000, y=0, plate_row=1, plate_col=2),
        ],
        grid_plan=useq.GridRowsColumns(rows=1, columns=2) if with_grid else None,
        channels=CHANNELS,
    )
    settings = make_settings(seq, tmp_path)
    assert settings.plate == Plate(row_names=["A", "B"], column_names=["1", "2", "3"])
    wells = [(p.name, p.well) for p in settings.positions]
    if with_grid:
        assert wells == [
            ("A1_r0_c0", ("A", "1")),
            ("A1_r0_c1", ("A", "1")),
            ("1_r0_c0", ("B", "3")),
            ("1_r0_c1", ("B", "3")),
        ]
    else:
        assert wells == [("A1", ("A", "1")), ("1", ("B", "3"))]
    assert_matches_events(settings, seq)


def test_half_plate_annotation_is_an_error() -> None:
    seq = useq.MDASequence(stage_positions=[useq.Position(x=0, plate_row=1)])
    with pytest.raises(ValueError, match="plate_row=1 but plate_col=None"):
        useq_to_acquisition_settings(seq, WIDTH, HEIGHT)


def test_mixing_plate_and_plain_positions_is_an_error() -> None:
    seq = useq.MDASequence(
        stage_positions=[
            useq.Position(x=0, plate_row=0, plate_col=0),
            useq.Position(x=5, name="free"),
        ]
    )
    with pytest.raises(ValueError, match=r"others \(\['free'\]\) do not"):
        useq_to_acquisition_settings(seq, WIDTH, HEIGHT)


# --------------------------------------------------- regular after all (lenient)


def test_do_stack_false_with_one_plane_is_regular(tmp_path: Path) -> None:
    seq = useq.MDASequence(
        channels=[useq.Channel(config="BF", do_stack=False), "GFP"],
        z_plan=useq.ZRelativePositions(relative=[0]),
    )
    settings = make_settings(seq, tmp_path)
    assert_matches_events(settings, seq)


def test_acquire_every_without_time_is_regular(tmp_path: Path) -> None:
    seq = useq.MDASequence(channels=[useq.Channel(config="BF", acquire_every=3)])
    settings = make_settings(seq, tmp_path)
    assert_matches_events(settings, seq)


def test_autofocus_only_sub_sequence_is_allowed(tmp_path: Path) -> None:
    autofocus = useq.AxesBasedAF(autofocus_device_name="Z", axes=("p",))
    seq = useq.MDASequence(
        channels=CHANNELS,
        stage_positions=[
            useq.Position(x=1, sequence=useq.MDASequence(autofocus_plan=autofocus)),
            useq.Position(x=2),
        ],
    )
    settings = make_settings(seq, tmp_path)
    assert settings.num_frames == 4
    images = [e for e in seq if e.action is None or e.action.type == "acquire_image"]
    assert len(images) == 4


# -------------------------------------------------------------------- errors


def test_not_a_sequence_is_a_type_error() -> None:
    not_a_sequence: Any = {"channels": ["DAPI"]}
    with pytest.raises(TypeError, match=r"seq must be a useq\.MDASequence, got dict"):
        useq_to_acquisition_settings(not_a_sequence, WIDTH, HEIGHT)


IRREGULAR = [
    (
        useq.MDASequence(
            channels=[useq.Channel(config="BF", do_stack=False), "GFP"], z_plan=Z
        ),
        r"axis 'z': channel 'BF' has do_stack=False",
    ),
    (
        useq.MDASequence(
            time_plan=TIME, channels=["GFP", useq.Channel(config="BF", acquire_every=2)]
        ),
        r"axis 't': channel 'BF' has acquire_every=2",
    ),
    (
        useq.MDASequence(
            axis_order="ptgc",
            time_plan=TIME,
            stage_positions=STAGE,
            grid_plan=GRID,
            channels=CHANNELS,
        ),
        r"axes 'p' and 'g': axis_order='ptgc'",
    ),
    (
        useq.MDASequence(
            axis_order="gtpc",
            time_plan=TIME,
            stage_positions=STAGE,
            grid_plan=GRID,
        ),
        r"axes 'p' and 'g': axis_order='gtp'",
    ),
    (
        useq.MDASequence(
            stage_positions=useq.WellPlatePlan(
                plate=96, a1_center_xy=(0, 0), selected_wells=([0], [0])
            ),
            grid_plan=GRID,
        ),
        r"axis 'g': a WellPlatePlan with a grid_plan .*WellPlatePlan\.well_points_plan",
    ),
    (
        useq.MDASequence(
            stage_positions=[
                useq.Position(x=0, name="a", sequence=useq.MDASequence(time_plan=TIME)),
                useq.Position(x=1),
            ]
        ),
        r"axis 'p': position 'a' has a sub-sequence with its own time_plan",
    ),
    (
        useq.MDASequence(
            stage_positions=[
                useq.Position(x=0, sequence=useq.MDASequence(channels=["a", "b"]))
            ]
        ),
        r"axis 'p': position 0 has a sub-sequence with its own channels",
    ),
    (
        useq.MDASequence(
            stage_positions=[
                useq.Position(x=0, sequence=useq.MDASequence(z_plan=Z, grid_plan=GRID))
            ]
        ),
        r"own z_plan, so .* may only contain grid_plan",
    ),
    (
        useq.MDASequence(
            axis_order="tpcz",
            channels=CHANNELS,
            stage_positions=[useq.Position(x=0, name="a", sequence=_sub_grid(1, 2))],
        ),
        r"axis 'g': position 'a' has its own grid_plan, .* innermost \(after \['c'\]\)",
    ),
    (
        useq.MDASequence(
            channels=CHANNELS,
            stage_positions=[useq.Position(x=0, sequence=useq.MDASequence())],
        ),
        r"axis 'c': position 0 has an empty sub-sequence",
    ),
    (
        useq.MDASequence(
            grid_plan=GRID,
            stage_positions=[
                useq.Position(
                    x=0,
                    sequence=useq.MDASequence(
                        grid_plan=GRID,
                        autofocus_plan=useq.AxesBasedAF(
                            autofocus_device_name="Z", axes=("g",)
                        ),
                    ),
                )
            ],
        ),
        r"axis 'g': position 0 has a sub-sequence with both a grid_plan and an "
        r"autofocus_plan",
    ),
    (
        useq.MDASequence(
            axis_order="ptc",
            time_plan=useq.TIntervalDuration(interval=0, duration=5),
            stage_positions=STAGE,
        ),
        r"axis 't': the time plan is unbounded but axis_order='pt'",
    ),
]


@pytest.mark.parametrize(("seq", "match"), IRREGULAR)
def test_irregular_sequences_raise(seq: useq.MDASequence, match: str) -> None:
    with pytest.raises(IrregularSequenceError, match=match):
        useq_to_acquisition_settings(seq, WIDTH, HEIGHT)


def test_irregular_sequence_error_is_a_value_error() -> None:
    assert issubclass(IrregularSequenceError, ValueError)


def test_missing_useq_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    seq = useq.MDASequence()
    monkeypatch.setitem(sys.modules, "useq", None)
    with pytest.raises(ImportError, match=r"pip install 'useq-schema>=0\.9\.2'"):
        useq_to_acquisition_settings(seq, WIDTH, HEIGHT)


# ---------------------------------------------------------------- deprecated


def test_dims_from_useq_warns_once_and_returns_the_dimensions() -> None:
    seq = useq.MDASequence(time_plan=TIME, channels=CHANNELS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dims = dims_from_useq(seq, WIDTH, HEIGHT, pixel_size_um=0.5)
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "use useq_to_acquisition_settings" in str(caught[0].message)
    assert caught[0].filename == __file__
    expected = useq_to_acquisition_settings(seq, WIDTH, HEIGHT, pixel_size_um=0.5)
    assert dims == expected["dimensions"]
