"""A multi-well plate (HCS): fields of view in wells, two in well C4.

Run: python examples/plate.py [zarr|tiff]
"""

import sys

import numpy as np

from ome_stream import AcquisitionSettings, Dimension, Plate, Position, create_stream

FORMAT = sys.argv[1] if len(sys.argv) > 1 else "zarr"

settings = AcquisitionSettings(
    root_path=f"example_plate.ome.{FORMAT}",
    dimensions=[
        Dimension(name="t", count=2, type="time"),
        Dimension(
            name="p",
            type="position",
            # the order of stage positions visited during the acquisition
            coords=[
                Position(name="fov0", plate_row="A", plate_column="1"),
                Position(name="fov0", plate_row="A", plate_column="2"),
                Position(name="fov0", plate_row="C", plate_column="4"),
                Position(name="fov1", plate_row="C", plate_column="4"),
            ],
        ),
        Dimension(name="c", count=2, type="channel"),
        Dimension(name="z", count=3, type="space"),
        Dimension(name="y", count=64, type="space"),
        Dimension(name="x", count=64, type="space"),
    ],
    dtype="uint16",
    plate=Plate.from_standard_wells(96, name="Example Plate"),
    overwrite=True,
)

with create_stream(settings) as stream:
    for i in range(settings.num_frames or 0):
        stream.append(np.full((64, 64), i, np.uint16))

print(f"wrote a plate with {len(settings.positions)} fields to {settings.output_path}")
