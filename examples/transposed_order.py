"""Acquire all channels at each z plane (t, z, c order).

OME-Zarr stores TCZYX, so frames are placed into t, c, z order as they
arrive; OME-TIFF keeps the acquisition order and says so in DimensionOrder.

Run: python examples/transposed_order.py [zarr|tiff]
"""

import sys

import numpy as np

from ome_stream import AcquisitionSettings, Dimension, create_stream

FORMAT = sys.argv[1] if len(sys.argv) > 1 else "zarr"

settings = AcquisitionSettings(
    root_path=f"example_transposed.ome.{FORMAT}",
    dimensions=[
        Dimension(name="t", count=2, type="time"),
        Dimension(name="z", count=4, type="space", scale=0.5, unit="um"),
        Dimension(name="c", count=3, type="channel"),
        Dimension(name="y", count=128, type="space", scale=0.1, unit="um"),
        Dimension(name="x", count=128, type="space", scale=0.1, unit="um"),
    ],
    dtype="uint16",
    overwrite=True,
)

with create_stream(settings) as stream:
    for t in range(2):
        for z in range(4):
            for c in range(3):
                # encode (t, z, c) in the frame so the placement can be checked
                stream.append(np.full((128, 128), 100 * t + 10 * z + c, np.uint16))

order = [d.name for d in settings.array_storage_dimensions]
print(f"wrote {settings.output_path} stored as {order}")
