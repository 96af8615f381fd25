"""Watch an acquisition while it is written: a live view and coordinate events.

`stream.view()` is an array over every frame appended so far (numpy indexing;
frames not yet acquired read as zeros); `coords_expanded` fires from the
writer thread whenever a dimension reaches a new index, e.g. to grow a
viewer's sliders. Here the "viewer" prints a running maximum projection.

Run: python examples/live_view.py [zarr|tiff]
"""

import sys

import numpy as np

from ome_stream import AcquisitionSettings, CoordUpdate, Dimension, create_stream

FORMAT = sys.argv[1] if len(sys.argv) > 1 else "zarr"

settings = AcquisitionSettings(
    root_path=f"example_live_view.ome.{FORMAT}",
    dimensions=[
        Dimension(name="t", count=3, type="time", unit="s", scale=2.0),
        Dimension(name="c", coords=["DAPI", "GFP"]),
        Dimension(name="z", count=5, type="space", unit="um", scale=1.0),
        Dimension(name="y", count=96, type="space", unit="um", scale=0.5),
        Dimension(name="x", count=96, type="space", unit="um", scale=0.5),
    ],
    dtype="uint16",
    overwrite=True,
)

grown: list[dict[str, int]] = []


def on_expanded(update: CoordUpdate) -> None:
    # Runs on the writer thread: keep it short (or connect with thread=...).
    grown.append({name: len(coords) for name, coords in update.max_coords.items()})


with create_stream(settings) as stream:
    stream.on("coords_expanded", on_expanded)
    view = stream.view()
    rng = np.random.default_rng(0)
    for t in range(3):
        for c in range(2):
            for z in range(5):
                frame = rng.poisson(100, (96, 96)).astype(np.uint16)
                frame[40 + 5 * c : 50 + 5 * c, 10 * t : 10 * t + 20] += 1000 * (z + 1)
                stream.append(frame)
        # The latest time point, as a viewer would show it.
        projection = view[t, :, :, :, :].max(axis=1)  # (c, y, x)
        print(f"t={t}: view shape {view.shape}, brightest {projection.max()}")

stream.off("coords_expanded", on_expanded)  # every event has arrived by close

print(f"dimension extents grew {len(grown)} times; last: {grown[-1]}")
print(f"after close, the view still reads: {view[-1, -1, -1].mean():.1f}")
