"""useq-schema `MDASequence` -> the dimensions (and plate) of an acquisition.

The result follows the order in which useq-schema 0.9.2 yields events
(`list(seq)`), so frame *i* of the stream is event *i* of the sequence's
events that take an image (an autofocus event, which useq yields before the
frame it focuses for, takes none). Only
sequences that form a regular nested loop can be written as arrays; anything
else raises `IrregularSequenceError` naming the axis and the fix.

Positions
---------
Stage positions (`p`) and a grid (`g`, global or per position) become ONE
position dimension named "p", in event order. Each `Position` carries the x/y/z
the events send to the stage (relative grids: stage xy + grid offset; absolute
grids: the grid xy; z: the stage position's z). Names:

- a stage position keeps its name; an unnamed one is its index ("0", "1", ...);
- a grid point appends `_r{row}_c{col}` (its grid cell) to that name, or
  `_g{i}` for grids without cells (RandomPoints); a grid without stage
  positions uses the suffix alone ("r0_c1", "g3");
- WellPlatePlan points are named `fov{i}` (i = index of the point in its well),
  with `plate_row` A..Z, AA, AB... and `plate_column` "1".. ;
- a name that would repeat (within a well, or in the whole acquisition outside
  plates) gets `_1`, `_2`, ... in event order.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from ._settings import Channel, Dimension, Plate, Position, StandardAxis
from ._settings.plate import _row_letters

if TYPE_CHECKING:
    import useq
    from useq._position import PositionBase

__all__ = [
    "IrregularSequenceError",
    "UseqSettings",
    "dims_from_useq",
    "useq_to_acquisition_settings",
]

_INSTALL_HINT = (
    "Converting a useq.MDASequence needs useq-schema>=0.9.2: "
    "`pip install 'useq-schema>=0.9.2'`."
)
# Axes a `units` override may name (channels and positions have no unit).
_UNIT_AXES = ("t", "z", "y", "x")
# Axes `chunk_shapes`/`shard_shapes` may name; the position axes are ignored
# (every position is its own array).
_SHAPE_AXES = ("t", "p", "g", "c", "z", "y", "x")
_POSITION_AXES = ("p", "g")


class UseqSettings(TypedDict):
    """What a useq sequence fixes: spread into `AcquisitionSettings(**result)`."""

    dimensions: list[Dimension]
    plate: Plate | None


class IrregularSequenceError(ValueError):
    """The sequence does not form a regular array (a ragged axis)."""


def useq_to_acquisition_settings(
    seq: useq.MDASequence,
    image_width: int,
    image_height: int,
    *,
    pixel_size_um: float | None = None,
    units: Mapping[str, tuple[float | None, str | None]] | None = None,
    chunk_shapes: Mapping[str, int] | None = None,
    shard_shapes: Mapping[str, int] | None = None,
) -> UseqSettings:
    """Dimensions and plate of the acquisition a `useq.MDASequence` describes.

    Dimensions follow `seq.axis_order` for the axes the sequence uses, `p` and
    `g` merged into one position dimension "p", then y (`image_height`) and x
    (`image_width`). Scales are only set when they are true for the whole axis:
    x/y `pixel_size_um` (micrometer), t the interval in seconds when all
    timepoints are evenly spaced, z the step (or the spacing of evenly spaced
    z positions) in micrometer. An unbounded time plan (useq's
    `TIntervalDuration` with `interval=0`) gives `count=None`.

    `units` maps an axis letter (t, z, y, x) to `(scale, unit)`, overriding
    both (`"nm"`, `"ms"`... are normalised like any `Dimension` unit).
    `chunk_shapes` and `shard_shapes` map axis letters (y and x included) to a
    chunk size in elements and a shard size in chunks; position keys are ignored.

    Raises `TypeError` if `seq` is not an `MDASequence`, `IrregularSequenceError`
    (a `ValueError`) for sequences that are not a regular array, `ValueError`
    for bad arguments, and `ImportError` without useq-schema.
    """
    _require_useq()
    from useq import MDASequence

    if not isinstance(seq, MDASequence):
        raise TypeError(
            f"seq must be a useq.MDASequence, got {type(seq).__name__}. Build one "
            "with useq.MDASequence(...) (or MDASequence.model_validate(dict))."
        )
    units = dict(units or {})
    chunk_shapes = dict(chunk_shapes or {})
    shard_shapes = dict(shard_shapes or {})
    _check_keys("units", units, _UNIT_AXES)
    _check_keys("chunk_shapes", chunk_shapes, _SHAPE_AXES)
    _check_keys("shard_shapes", shard_shapes, _SHAPE_AXES)

    sizes = _axis_sizes(seq)
    used = [axis for axis in _axis_order(seq) if sizes[axis] != 0]
    _check_regular(seq, used, sizes)

    def make(
        axis: StandardAxis,
        count: int | None,
        scale: float | None,
        coords: Sequence[Channel] | None = None,
    ) -> Dimension:
        scale_override, unit_override = units.get(axis.value, (scale, axis.unit()))
        return Dimension(
            name=axis.value,
            count=count,
            type=axis.dimension_type(),
            coords=list(coords) if coords is not None else None,
            chunk_size=chunk_shapes.get(axis.value),
            shard_size_chunks=shard_shapes.get(axis.value),
            unit=unit_override,
            scale=scale_override,
        )

    dimensions: list[Dimension] = []
    plate: Plate | None = None
    for axis in used:
        if axis == "t":
            assert seq.time_plan is not None
            dimensions.append(
                make(StandardAxis.TIME, sizes["t"], _time_scale(seq.time_plan))
            )
        elif axis == "c":
            names = _deduplicate([channel.config for channel in seq.channels])
            channels = [Channel(name=name) for name in names]
            dimensions.append(make(StandardAxis.CHANNEL, len(channels), None, channels))
        elif axis == "z":
            assert seq.z_plan is not None
            dimensions.append(make(StandardAxis.Z, sizes["z"], _z_scale(seq.z_plan)))
        elif not any(d.type == "position" for d in dimensions):
            # The first of p and g: both become this one position dimension.
            positions, plate = _positions(seq, used)
            dimensions.append(
                Dimension(name="p", type="position", coords=list(positions))
            )
    pixel_size = _pixel_size(pixel_size_um)
    dimensions.append(make(StandardAxis.Y, image_height, pixel_size))
    dimensions.append(make(StandardAxis.X, image_width, pixel_size))
    return {"dimensions": dimensions, "plate": plate}


def dims_from_useq(
    seq: useq.MDASequence,
    image_width: int,
    image_height: int,
    *,
    pixel_size_um: float | None = None,
    units: Mapping[str, tuple[float | None, str | None]] | None = None,
    chunk_shapes: Mapping[str, int] | None = None,
    shard_shapes: Mapping[str, int] | None = None,
) -> list[Dimension]:
    """Deprecated: use `useq_to_acquisition_settings(...)["dimensions"]`."""
    warnings.warn(
        "dims_from_useq is deprecated and drops the plate; use "
        "useq_to_acquisition_settings(...) and spread the result into "
        "AcquisitionSettings.",
        DeprecationWarning,
        stacklevel=2,
    )
    result = useq_to_acquisition_settings(
        seq,
        image_width,
        image_height,
        pixel_size_um=pixel_size_um,
        units=units,
        chunk_shapes=chunk_shapes,
        shard_shapes=shard_shapes,
    )
    return result["dimensions"]


# ---------------------------------------------------------------- arguments


def _require_useq() -> None:
    try:
        from useq import Position as UseqPosition
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    if "plate_row" not in UseqPosition.model_fields:
        raise ImportError(f"This useq-schema is too old. {_INSTALL_HINT}")


def _check_keys(what: str, mapping: Mapping[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(key for key in mapping if key not in allowed)
    if unknown:
        raise ValueError(
            f"{what} keys must be axis letters among {list(allowed)}; got {unknown}."
        )


def _pixel_size(pixel_size_um: float | None) -> float | None:
    if pixel_size_um is None:
        return None
    if not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        warnings.warn(
            f"Invalid pixel_size_um={pixel_size_um}: it must be a positive number "
            "of micrometers. It is ignored (x and y get no scale).",
            UserWarning,
            stacklevel=3,
        )
        return None
    return float(pixel_size_um)


# --------------------------------------------------------------- axis sizes


def _axis_order(seq: useq.MDASequence) -> list[str]:
    # useq's Axis is a str enum whose str() is the letter.
    return [str(axis) for axis in seq.axis_order]


def _axis_sizes(seq: useq.MDASequence) -> dict[str, int | None]:
    """Size of each axis of `seq.axis_order` (None: unbounded time).

    Not `seq.sizes`: it iterates the time plan, which raises ZeroDivisionError
    for unbounded plans, and for a one-loop `TDurationLoops`.
    """
    sizes: dict[str, int | None] = {}
    for axis in _axis_order(seq):
        if axis == "t":
            sizes[axis] = 0 if seq.time_plan is None else _num_timepoints(seq.time_plan)
        elif axis == "z":
            sizes[axis] = 0 if seq.z_plan is None else len(list(seq.z_plan))
        elif axis == "c":
            sizes[axis] = len(seq.channels)
        elif axis == "p":
            sizes[axis] = len(seq.stage_positions)
        else:
            sizes[axis] = 0 if seq.grid_plan is None else len(list(seq.grid_plan))
    return sizes


def _is_unbounded(plan: useq.AnyTimePlan) -> bool:
    """useq writes "no fixed number of timepoints" as interval=0 with a duration."""
    from useq import MultiPhaseTimePlan, TIntervalDuration

    if isinstance(plan, MultiPhaseTimePlan):
        return any(_is_unbounded(phase) for phase in plan.phases)
    return isinstance(plan, TIntervalDuration) and plan.interval == timedelta(0)


def _num_timepoints(plan: useq.AnyTimePlan) -> int | None:
    from useq import MultiPhaseTimePlan

    if _is_unbounded(plan):
        return None
    if isinstance(plan, MultiPhaseTimePlan):
        # Each later phase starts at the previous phase's last timepoint, which
        # useq skips; `num_timepoints()` miscounts from three phases on.
        return 1 + sum(max(phase.loops, 1) - 1 for phase in plan.phases)
    return max(plan.loops, 0)


def _interval_seconds(plan: useq.AnyTimePlan) -> float | None:
    """A single-phase plan's interval in seconds, or None when it has no step."""
    from useq import MultiPhaseTimePlan

    if isinstance(plan, MultiPhaseTimePlan) or plan.loops < 2:
        return None  # one timepoint (and TDurationLoops would divide by zero)
    seconds = plan.interval.total_seconds()
    return seconds if seconds > 0 else None


def _time_scale(plan: useq.AnyTimePlan) -> float | None:
    """The interval between all timepoints in seconds, if there is one."""
    from useq import MultiPhaseTimePlan

    if _is_unbounded(plan):
        return None
    if not isinstance(plan, MultiPhaseTimePlan):
        return _interval_seconds(plan)
    # A one-loop phase adds no timepoint, and a phase boundary is one step of
    # the next phase: the spacing is even iff all stepping phases agree.
    return _common_value(
        [_interval_seconds(phase) for phase in plan.phases if phase.loops > 1]
    )


def _z_scale(plan: useq.AnyZPlan) -> float | None:
    """The z step in micrometers, or the spacing of evenly spaced positions."""
    step = getattr(plan, "step", None)
    if step is not None:
        return abs(float(step)) or None
    z_values = list(plan)
    steps: list[float | None] = [b - a for a, b in itertools.pairwise(z_values)]
    common = _common_value(steps)
    return None if common is None else abs(common) or None


def _common_value(values: Sequence[float | None]) -> float | None:
    """The value all `values` share (within rounding), else None."""
    if not values or values[0] is None:
        return None
    first = values[0]
    if all(
        v is not None and math.isclose(v, first, rel_tol=1e-9, abs_tol=1e-12)
        for v in values
    ):
        return first
    return None


# --------------------------------------------------------------- regularity


def _check_regular(
    seq: useq.MDASequence, used: list[str], sizes: Mapping[str, int | None]
) -> None:
    from useq import WellPlatePlan

    if sizes.get("t", 0) is None and used[0] != "t":
        raise IrregularSequenceError(
            f"axis 't': the time plan is unbounded but axis_order={''.join(used)!r} "
            "(used axes) does not start with 't'; an endless loop can only be "
            "the outermost. Put 't' first in axis_order or give the plan an end "
            "(interval > 0 or TIntervalLoops)."
        )
    z_count = sizes.get("z") or 0
    t_count = sizes.get("t", 0)
    for channel in seq.channels:
        if not channel.do_stack and z_count > 1:
            raise IrregularSequenceError(
                f"axis 'z': channel {channel.config!r} has do_stack=False, so it "
                f"images one plane where the others image {z_count}: a ragged z "
                "axis. Set do_stack=True, or acquire that channel in a separate "
                "sequence."
            )
        if channel.acquire_every > 1 and (t_count is None or t_count > 1):
            raise IrregularSequenceError(
                f"axis 't': channel {channel.config!r} has "
                f"acquire_every={channel.acquire_every}, so it skips timepoints: a "
                "ragged time axis. Set acquire_every=1, or acquire that channel "
                "in a separate sequence."
            )
    plate_plan = isinstance(seq.stage_positions, WellPlatePlan)
    if plate_plan and "p" in used and "g" in used:
        raise IrregularSequenceError(
            "axis 'g': a WellPlatePlan with a grid_plan is not supported. Put the "
            "grid in WellPlatePlan.well_points_plan instead."
        )
    position_axes = [i for i, axis in enumerate(used) if axis in _POSITION_AXES]
    if len(position_axes) == 2 and position_axes[1] != position_axes[0] + 1:
        raise IrregularSequenceError(
            f"axes 'p' and 'g': axis_order={''.join(used)!r} (used axes) puts other "
            "axes between them, but positions and grid points become one position "
            "dimension, which needs them adjacent. Use e.g. 'tpgcz' or 'tgpcz'."
        )
    if plate_plan or "p" not in used:
        return
    for index, stage in enumerate(seq.stage_positions):
        _check_sub_sequence(seq, stage, index, used)


def _check_sub_sequence(
    seq: useq.MDASequence, stage: useq.Position, index: int, used: list[str]
) -> None:
    sub = stage.sequence
    if sub is None:
        return
    label = repr(stage.name) if stage.name else str(index)
    own = [
        name
        for name, value in (
            ("time_plan", sub.time_plan),
            ("channels", sub.channels),
            ("z_plan", sub.z_plan),
            ("stage_positions", sub.stage_positions),
        )
        if value
    ]
    if own:
        raise IrregularSequenceError(
            f"axis 'p': position {label} has a sub-sequence with its own "
            f"{', '.join(own)}, so its dimensions differ from the other "
            "positions'. Position sub-sequences may only contain grid_plan; "
            "acquire differing positions in separate sequences."
        )
    if sub.grid_plan is None:
        if sub.autofocus_plan is None and "c" in used and len(seq.channels) > 1:
            # useq 0.9.2 then acquires only the first channel at that position.
            raise IrregularSequenceError(
                f"axis 'c': position {label} has an empty sub-sequence, for which "
                "useq acquires only the first channel. Remove it (sequence=None)."
            )
        return
    after = used[max(used.index(a) for a in _POSITION_AXES if a in used) + 1 :]
    if after:
        raise IrregularSequenceError(
            f"axis 'g': position {label} has its own grid_plan, whose tiles useq "
            f"visits innermost (after {after}), interleaving them with those axes. "
            "Put the position axes last in axis_order (e.g. 'tczp') or use the "
            "sequence's grid_plan instead."
        )
    if sub.autofocus_plan is not None and "g" in used:
        raise IrregularSequenceError(
            f"axis 'g': position {label} has a sub-sequence with both a grid_plan "
            "and an autofocus_plan while the sequence also has a grid_plan; useq "
            "then repeats its tiles for every global grid point. Drop one grid."
        )


# ---------------------------------------------------------------- positions


def _positions(
    seq: useq.MDASequence, used: list[str]
) -> tuple[list[Position], Plate | None]:
    """Positions in event order, and the plate they lie on (if any)."""
    from useq import WellPlatePlan

    if isinstance(seq.stage_positions, WellPlatePlan) and "p" in used:
        return _plate_positions(seq.stage_positions)
    # A plan whose axis is not in axis_order is not iterated by useq.
    grid = seq.grid_plan if "g" in used else None
    stages = list(seq.stage_positions) if "p" in used else []
    # (stage position, base name, grid point, index in its grid, xy known)
    visits: list[tuple[useq.Position | None, str, PositionBase | None, int, bool]]
    if not stages:
        assert grid is not None
        known = _reproducible(grid)
        visits = [(None, "", point, i, known) for i, point in enumerate(grid)]
    elif grid is None or used.index("p") < used.index("g"):
        visits = []
        for index, stage in enumerate(stages):
            own = stage.sequence.grid_plan if stage.sequence is not None else None
            points = own if own is not None else grid
            base = stage.name or str(index)
            if points is None:
                visits.append((stage, base, None, 0, True))
            else:
                known = _reproducible(points)
                visits.extend(
                    (stage, base, pt, i, known) for i, pt in enumerate(points)
                )
    else:
        # Grid first: useq visits a position's own grid once, at grid point 0.
        visits = []
        known = _reproducible(grid)
        for grid_index, grid_point in enumerate(grid):
            for index, stage in enumerate(stages):
                own = stage.sequence.grid_plan if stage.sequence is not None else None
                base = stage.name or str(index)
                if own is None:
                    visits.append((stage, base, grid_point, grid_index, known))
                elif grid_index == 0:
                    own_known = _reproducible(own)
                    visits.extend(
                        (stage, base, pt, i, own_known) for i, pt in enumerate(own)
                    )
    positions = [_visit_position(*visit) for visit in visits]
    return _unique_positions(positions), _inferred_plate(positions)


def _reproducible(grid: useq.MultiPointPlan) -> bool:
    """False for RandomPoints without a seed: each iteration draws new points."""
    from useq import RandomPoints

    if isinstance(grid, RandomPoints) and grid.random_seed is None:
        warnings.warn(
            "RandomPoints without random_seed draws new points each time it is "
            "iterated, so the tiles' x/y cannot be known in advance and are not "
            "recorded. Set random_seed to record them.",
            UserWarning,
            stacklevel=4,
        )
        return False
    return True


def _visit_position(
    stage: useq.Position | None,
    base: str,
    point: PositionBase | None,
    index: int,
    xy_known: bool,
) -> Position:
    """The `Position` of one visit: a stage position, a grid point, or both."""
    from useq import RelativePosition

    x = stage.x if stage is not None else None
    y = stage.y if stage is not None else None
    grid_row = grid_column = None
    name = base
    if point is not None:
        if isinstance(point, RelativePosition):
            # As useq does: an unset stage coordinate counts as 0.
            x = None if point.x is None else point.x + (x or 0.0)
            y = None if point.y is None else point.y + (y or 0.0)
        else:
            x, y = point.x, point.y
        if not xy_known:
            x = y = None
        if point.grid_row is not None and point.grid_col is not None:
            grid_row, grid_column = point.grid_row, point.grid_col
            suffix = f"r{grid_row}_c{grid_column}"
        else:
            suffix = f"g{index}"
        name = f"{base}_{suffix}" if base else suffix
    plate_row = plate_column = None
    if stage is not None and (stage.plate_row, stage.plate_col) != (None, None):
        if stage.plate_row is None or stage.plate_col is None:
            raise ValueError(
                f"Stage position {base!r} has plate_row={stage.plate_row} but "
                f"plate_col={stage.plate_col}; set both (0-based) or neither."
            )
        plate_row = _row_letters(stage.plate_row)
        plate_column = str(stage.plate_col + 1)
    return Position(
        name=name,
        plate_row=plate_row,
        plate_column=plate_column,
        grid_row=grid_row,
        grid_column=grid_column,
        x_coord=x,
        y_coord=y,
        z_coord=stage.z if stage is not None else None,
    )


def _plate_positions(plan: useq.WellPlatePlan) -> tuple[list[Position], Plate]:
    points = list(plan.well_points_plan)
    images = list(plan.image_positions)
    positions = []
    for well_index, well in enumerate(plan.selected_well_positions):
        for point_index, point in enumerate(points):
            image = images[well_index * len(points) + point_index]
            has_cell = point.grid_row is not None and point.grid_col is not None
            positions.append(
                Position(
                    name=f"fov{point_index}",
                    plate_row=_row_letters(well.plate_row or 0),
                    plate_column=str((well.plate_col or 0) + 1),
                    grid_row=point.grid_row if has_cell else None,
                    grid_column=point.grid_col if has_cell else None,
                    x_coord=image.x,
                    y_coord=image.y,
                    z_coord=image.z,
                )
            )
    plate = Plate.from_standard_wells(
        (int(plan.plate.rows), int(plan.plate.columns)), name=plan.plate.name or None
    )
    return positions, plate


def _inferred_plate(positions: list[Position]) -> Plate | None:
    """A plate spanning A..last row, 1..last column of plate-annotated positions."""
    in_wells = [p for p in positions if p.well is not None]
    if not in_wells:
        return None
    if len(in_wells) != len(positions):
        outside = [p.name for p in positions if p.well is None]
        raise ValueError(
            f"Some stage positions have plate_row/plate_col and others "
            f"({outside}) do not. Set them on every position or on none."
        )
    rows = [p.plate_row for p in in_wells]
    columns = [p.plate_column for p in in_wells]
    row_count = max(_row_number(r) for r in rows if r is not None)
    column_count = max(int(c) for c in columns if c is not None)
    return Plate.from_standard_wells((row_count, column_count))


def _row_number(letters: str) -> int:
    """A -> 1, Z -> 26, AA -> 27 (inverse of `_row_letters`, 1-based)."""
    number = 0
    for letter in letters:
        number = number * 26 + ord(letter) - ord("A") + 1
    return number


def _unique_positions(positions: list[Position]) -> list[Position]:
    by_well: dict[tuple[str | None, str | None], list[int]] = {}
    for index, position in enumerate(positions):
        by_well.setdefault((position.plate_row, position.plate_column), []).append(
            index
        )
    result = list(positions)
    for indices in by_well.values():
        names = _deduplicate([positions[i].name for i in indices])
        for i, name in zip(indices, names):
            if name != positions[i].name:
                result[i] = positions[i].model_copy(update={"name": name})
    return result


def _deduplicate(names: Sequence[str]) -> list[str]:
    """Repeated names get `_1`, `_2`, ... (the first keeps its name).

    A suffixed name never takes a name that occurs in `names`.
    """
    taken = set(names)
    assigned: set[str] = set()
    unique = []
    for name in names:
        candidate = name
        suffix = 0
        while candidate in assigned:
            suffix += 1
            candidate = f"{name}_{suffix}"
            if candidate in taken:
                candidate = name  # keep counting past names already in use
        assigned.add(candidate)
        unique.append(candidate)
    return unique
