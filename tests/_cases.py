"""Acquisition setups shared by the format tests, and the data they expect.

Expected data is computed here with numpy alone (reshape, transpose), never
with ome-stream's router, so a routing bug cannot hide itself.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ome_stream import Channel, Dimension, Plate, Position

FRAME = (24, 40)


def make_frame(
    number: int, dtype: str = "uint16", shape: tuple[int, int] = FRAME
) -> np.ndarray:
    """A frame whose every pixel depends on its acquisition number."""
    dt = np.dtype(dtype)
    ramp = np.arange(shape[0] * shape[1], dtype=np.int64).reshape(shape)
    if dt.kind == "f":
        return (ramp * 0.5 + number * 1000.25).astype(dt)
    modulus = min(int(np.iinfo(dt).max) + 1, 2**31)
    values = (ramp * 7 + number * 1009) % modulus
    if dt.kind == "i":
        values = values + np.iinfo(dt).min
    return values.astype(dt)


@dataclass
class Case:
    """One acquisition: dimensions in acquisition order plus expectations."""

    name: str
    dims: list[Dimension]
    zarr_storage: str  # storage order of the index axes in OME-Zarr ("tcz")
    tiff_order: str  # expected Pixels.DimensionOrder in OME-TIFF
    frames: int | None = None  # frames to append (needed when unbounded)
    plate: Plate | None = None
    zarr_paths: list[str] = field(default_factory=lambda: ["0"])
    settings: dict[str, Any] = field(default_factory=dict)
    tiff: bool = True

    @property
    def loop_dims(self) -> list[Dimension]:
        return self.dims[:-2]

    @property
    def position_axis(self) -> int | None:
        for i, d in enumerate(self.loop_dims):
            if d.type == "position":
                return i
        return None

    @property
    def n_positions(self) -> int:
        axis = self.position_axis
        return 1 if axis is None else int(self.loop_dims[axis].count or 1)

    def n_frames(self) -> int:
        if self.frames is not None:
            return self.frames
        return math.prod(d.count or 1 for d in self.loop_dims)

    def acquisition_array(self, dtype: str, n_frames: int | None = None) -> np.ndarray:
        """All frames in acquisition order, shaped (loop dims..., Y, X).

        An unbounded first axis is sized to hold `n_frames` (rounded up;
        frames never appended are zero, like a fill value)."""
        n = self.n_frames() if n_frames is None else n_frames
        counts = [d.count for d in self.loop_dims]
        if counts and counts[0] is None:
            inner = math.prod(c or 1 for c in counts[1:])
            counts[0] = max(1, math.ceil(n / inner))
        shape = [int(c or 1) for c in counts]
        total = math.prod(shape)
        flat = np.zeros((total, *FRAME), dtype)
        for i in range(n):
            flat[i] = make_frame(i, dtype)
        return flat.reshape(*shape, *FRAME)

    def per_position(self, data: np.ndarray) -> list[np.ndarray]:
        """Split acquisition-order data by position (index axes keep order)."""
        axis = self.position_axis
        if axis is None:
            return [data]
        return [np.take(data, p, axis=axis) for p in range(self.n_positions)]

    def index_names(self) -> list[str]:
        return [d.name for d in self.loop_dims if d.type != "position"]

    def zarr_expected(self, data: np.ndarray) -> list[np.ndarray]:
        names = self.index_names()
        order = [names.index(a) for a in self.zarr_storage]
        n = len(names)
        return [np.transpose(p, [*order, n, n + 1]) for p in self.per_position(data)]


# The start of a script for `run_python`: `settings` for an unbounded t of
# 8 x 8 uint16 frames written to sys.argv[1] (os, sys, time and numpy as np
# imported).
UNBOUNDED_8X8_SCRIPT = """
import os, sys, time
import numpy as np
from ome_stream import AcquisitionSettings, Dimension, create_stream
settings = AcquisitionSettings(
    root_path=sys.argv[1],
    dimensions=[
        Dimension(name="t", count=None, type="time"),
        Dimension(name="y", count=8, type="space"),
        Dimension(name="x", count=8, type="space"),
    ],
    dtype="uint16",
)
"""


def kill_when_ready(script: str, *args: str, ready: str, after: float) -> None:
    """Run `script` in a Python process of its own, wait for it to print the
    line `ready`, let it run `after` seconds more, then SIGKILL it. If it
    prints anything else first (it failed), raise with its stderr."""
    with subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        if child.stdout.readline().strip() != ready:
            child.kill()
            raise AssertionError(child.stderr.read())
        time.sleep(after)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)


def run_python(
    script: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `script` in a Python process of its own (a kill, an exit, a
    resource limit that must not touch the test's process)."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def to_tczyx(data: np.ndarray, names: list[str]) -> np.ndarray:
    """Acquisition-order data (names..., Y, X) as (T, C, Z, Y, X), the order
    Bio-Formats and tifffile's OME series report."""
    for axis in "tcz":
        if axis not in names:
            data = data[np.newaxis]
            names = [axis, *names]
    n = len(names)
    return np.transpose(data, [*(names.index(a) for a in "tcz"), n, n + 1])


def _yx(**kw: Any) -> list[Dimension]:
    return [
        Dimension(name="y", count=FRAME[0], **kw),
        Dimension(name="x", count=FRAME[1], **kw),
    ]


PLATE_POSITIONS = [
    Position(name="fov0", plate_row="A", plate_column="1", x_coord=10.0, y_coord=20.0),
    Position(name="fov0", plate_row="A", plate_column="2"),
    Position(name="fov0", plate_row="C", plate_column="4"),
    Position(name="fov1", plate_row="C", plate_column="4"),
]


def cases() -> list[Case]:
    channels = [
        Channel(name="DAPI", emission_wavelength_nm=460, color="blue"),
        Channel(name="GFP", excitation_wavelength_nm=488, color="#00ff00"),
        Channel(name="mCherry", fluorophore="mCherry", color=(255, 0, 0)),
    ]
    return [
        Case("2d", _yx(unit="um", scale=0.5), "", "XYZCT"),
        Case(
            "5d",
            [
                Dimension(name="t", count=2, unit="s", scale=1.5),
                Dimension(name="c", coords=channels),
                Dimension(name="z", count=4, unit="um", scale=0.5),
                *_yx(unit="um", scale=0.1),
            ],
            "tcz",
            "XYZCT",
        ),
        Case(
            "5d_transposed",
            [
                Dimension(name="t", count=2),
                Dimension(name="z", count=4, unit="um", scale=0.5),
                Dimension(name="c", coords=channels),
                *_yx(),
            ],
            "tcz",
            "XYCZT",
        ),
        Case(
            "multi_position",
            [
                Dimension(name="t", count=2),
                Dimension(
                    name="p",
                    coords=[
                        Position(name="Pos0", x_coord=1.5, y_coord=-2.0, z_coord=3.0),
                        Position(name="Pos1", x_coord=100.0, y_coord=200.0),
                    ],
                ),
                Dimension(name="c", count=3),
                Dimension(name="z", count=2, unit="um", scale=5),
                *_yx(unit="um", scale=2),
            ],
            "tcz",
            "XYZCT",
            zarr_paths=["Pos0/0", "Pos1/0"],
        ),
        Case(
            "plate",
            [
                Dimension(name="t", count=2),
                Dimension(name="p", coords=PLATE_POSITIONS),
                Dimension(name="c", count=2),
                *_yx(),
            ],
            "tc",
            "XYCTZ",
            plate=Plate(
                name="Example Plate",
                row_names=["A", "B", "C", "D"],
                column_names=[str(i) for i in range(1, 9)],
            ),
            zarr_paths=["A/1/0/0", "A/2/0/0", "C/4/0/0", "C/4/1/0"],
        ),
        Case(
            "unbounded",
            [
                Dimension(name="t", count=None),
                Dimension(name="p", coords=["Pos0", "Pos1"]),
                *_yx(),
            ],
            "t",
            "XYTCZ",
            frames=10,
            zarr_paths=["Pos0/0", "Pos1/0"],
        ),
        Case(
            "unbounded_partial",  # ends mid-timepoint: 7 frames of t x c(3)
            [Dimension(name="t", count=None), Dimension(name="c", count=3), *_yx()],
            "tc",
            "XYCTZ",
            frames=7,
        ),
        Case(
            "chunked_z",  # z chunks of 4 with a partial edge chunk
            [
                Dimension(name="t", count=2),
                Dimension(name="c", count=2),
                Dimension(name="z", count=6, chunk_size=4),
                *_yx(),
            ],
            "tcz",
            "XYZCT",
        ),
        Case(
            "chunked_transposed",  # chunks filled out of order (z outer, c inner)
            [
                Dimension(name="z", count=5, chunk_size=2),
                Dimension(name="c", count=2, chunk_size=2),
                *_yx(),
            ],
            "cz",
            "XYCZT",
        ),
        Case(
            "unbounded_chunked",
            [
                Dimension(name="t", count=None, chunk_size=3),
                Dimension(name="c", count=2),
                *_yx(),
            ],
            "tc",
            "XYCTZ",
            frames=14,
        ),
        Case(
            "sharded",
            [
                Dimension(name="t", count=5, shard_size_chunks=2),
                Dimension(name="c", count=2),
                Dimension(name="y", count=FRAME[0], chunk_size=12, shard_size_chunks=2),
                Dimension(name="x", count=FRAME[1], chunk_size=20, shard_size_chunks=2),
            ],
            "tc",
            "XYCTZ",
        ),
    ]


CASES = {case.name: case for case in cases()}
