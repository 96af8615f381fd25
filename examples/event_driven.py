"""Event-driven imaging: frames whose structure is not known in advance.

Each frame goes to an unbounded first axis with metadata describing it. The
special keys delta_t, exposure_time (seconds) and position_x/y/z
(micrometers) become OME-XML Plane attributes in OME-TIFF; other keys become
MapAnnotations. OME-Zarr keeps every dict with the frame's storage_index.

Run: python examples/event_driven.py [zarr|tiff]
"""

import sys
import time
from collections.abc import Iterator

import numpy as np

from ome_stream import AcquisitionSettings, Dimension, create_stream

FORMAT = sys.argv[1] if len(sys.argv) > 1 else "zarr"

settings = AcquisitionSettings(
    root_path=f"example_event_driven.ome.{FORMAT}",
    dimensions=[
        Dimension(name="t", count=None, type="time"),
        Dimension(name="y", count=128, chunk_size=64, type="space"),
        Dimension(name="x", count=128, chunk_size=64, type="space"),
    ],
    dtype="uint16",
    overwrite=True,
)


def frames_from_microscope() -> Iterator[tuple[np.ndarray, dict]]:
    """Stand-in for hardware that produces frames when something happens."""
    rng = np.random.default_rng(3)
    start = time.perf_counter()
    for index in range(12):
        metadata = {
            "delta_t": time.perf_counter() - start,
            "exposure_time": 0.01,
            "position_x": 100.0 + index * 0.5,  # stage drift
            "position_y": 200.0 + index * 0.3,
            "position_z": 50.0,
            "temperature": 37.0 + rng.normal() * 0.1,
            "laser_power": 50.0,
            "event": "division" if index % 4 == 0 else "tracking",
        }
        yield rng.integers(0, 4096, size=(128, 128), dtype=np.uint16), metadata


with create_stream(settings) as stream:
    for frame, metadata in frames_from_microscope():
        stream.append(frame, frame_metadata=metadata)

print(f"wrote {stream.frames_written} event frames to {settings.output_path}")
