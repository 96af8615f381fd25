"""A single 5-D image: at each time point, for each channel, a z stack.

Run: python examples/single_5d_image.py [zarr|tiff]
"""

import sys

import numpy as np

from ome_stream import AcquisitionSettings, Dimension, create_stream

FORMAT = sys.argv[1] if len(sys.argv) > 1 else "zarr"

settings = AcquisitionSettings(
    root_path=f"example_5d_image.ome.{FORMAT}",
    dimensions=[
        Dimension(name="t", count=2, chunk_size=1, type="time", unit="s", scale=10),
        Dimension(name="c", count=3, chunk_size=1, type="channel"),
        Dimension(name="z", count=4, chunk_size=1, type="space", scale=0.5, unit="um"),
        Dimension(
            name="y", count=256, chunk_size=128, type="space", scale=0.1, unit="um"
        ),
        Dimension(
            name="x", count=256, chunk_size=128, type="space", scale=0.1, unit="um"
        ),
    ],
    dtype="uint16",
    overwrite=True,
)

rng = np.random.default_rng(0)
with create_stream(settings) as stream:
    for _ in range(settings.num_frames or 0):
        stream.append(rng.integers(0, 4096, size=(256, 256), dtype=np.uint16))

print(f"wrote {stream.frames_written} frames to {settings.output_path}")
