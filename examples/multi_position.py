"""Several stage positions: one 5-D image per position.

Run: python examples/multi_position.py [zarr|tiff]
"""

import sys

import numpy as np

from ome_stream import AcquisitionSettings, Dimension, Position, create_stream

FORMAT = sys.argv[1] if len(sys.argv) > 1 else "zarr"

settings = AcquisitionSettings(
    root_path=f"example_multi_position.ome.{FORMAT}",
    dimensions=[
        Dimension(name="t", count=2, type="time"),
        Dimension(
            name="p",
            type="position",
            coords=[
                Position(name="Pos0", x_coord=0.0, y_coord=0.0, z_coord=10.0),
                Position(name="Pos1", x_coord=500.0, y_coord=-250.0, z_coord=12.0),
            ],
        ),
        Dimension(name="c", count=3, type="channel"),
        Dimension(name="z", count=4, type="space", scale=5, unit="um"),
        Dimension(name="y", count=128, chunk_size=64, type="space", scale=2, unit="um"),
        Dimension(name="x", count=128, chunk_size=64, type="space", scale=2, unit="um"),
    ],
    dtype="uint16",
    overwrite=True,
)

rng = np.random.default_rng(1)
with create_stream(settings) as stream:
    for _ in range(settings.num_frames or 0):
        stream.append(rng.integers(0, 1000, size=(128, 128), dtype=np.uint16))

print(f"wrote {len(settings.positions)} positions to {settings.output_path}")
