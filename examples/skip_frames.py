"""Dealing with bad frames: skip what never came, keep later frames in place.

Here autofocus "fails" at one position, so its whole z stack is skipped.
Skipped planes stay zero and are recorded as missing.

Run: python examples/skip_frames.py [zarr|tiff]
"""

import sys

import numpy as np

from ome_stream import AcquisitionSettings, Dimension, create_stream

FORMAT = sys.argv[1] if len(sys.argv) > 1 else "zarr"

settings = AcquisitionSettings(
    root_path=f"example_skip.ome.{FORMAT}",
    dimensions=[
        Dimension(name="t", count=3, type="time"),
        Dimension(name="z", count=5, type="space", unit="um", scale=1.0),
        Dimension(name="y", count=64, type="space"),
        Dimension(name="x", count=64, type="space"),
    ],
    dtype="uint16",
    overwrite=True,
)


class AutofocusFailed(Exception):
    """The simulated autofocus gave up on this frame."""


def acquire(t: int, z: int) -> np.ndarray:
    if t == 1:
        raise AutofocusFailed
    return np.full((64, 64), 1 + 10 * t + z, np.uint16)


with create_stream(settings) as stream:
    for t in range(3):
        for z in range(5):
            try:
                frame = acquire(t, z)
            except AutofocusFailed:
                stream.skip(frames=5 - z)  # the rest of this stack
                break
            stream.append(frame)

print(f"wrote {stream.frames_written} frames, skipped {stream.frames_skipped}")
