"""A time-lapse of unknown length: the first dimension is unbounded.

Run: python examples/unbounded_timelapse.py [zarr|tiff]
"""

import sys

import numpy as np

from ome_stream import AcquisitionSettings, Dimension, create_stream

FORMAT = sys.argv[1] if len(sys.argv) > 1 else "zarr"

settings = AcquisitionSettings(
    root_path=f"example_unbounded.ome.{FORMAT}",
    dimensions=[
        Dimension(name="t", count=None, type="time", unit="s", scale=0.5),
        Dimension(name="p", type="position", coords=["Pos0", "Pos1"]),
        Dimension(name="y", count=128, chunk_size=64, type="space"),
        Dimension(name="x", count=128, chunk_size=64, type="space"),
    ],
    dtype="uint16",
    overwrite=True,
)

rng = np.random.default_rng(2)
timepoints = 0
with create_stream(settings) as stream:
    while True:
        for _position in range(2):
            stream.append(rng.integers(0, 1000, size=(128, 128), dtype=np.uint16))
        timepoints += 1
        if rng.random() < 0.2 or timepoints == 20:  # the experiment decides to stop
            break

print(f"wrote {timepoints} time points per position to {settings.output_path}")
