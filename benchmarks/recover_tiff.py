"""How long `recover` takes for an OME-TIFF whose writer was killed.

    python benchmarks/recover_tiff.py [--frames N] [--side PIXELS]
        [--metadata] [--repeat R] [--dir DIR]

Each repeat writes N frames of side x side uint16 to a fresh OME-TIFF with
an unbounded t axis (per-frame metadata like an MDA's with --metadata), in a
process that ends with `os._exit` once every frame is written, as a kill
would leave it (no close); then times `recover` on it in this process and
prints the seconds, the dataset's size, and the median over the repeats.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRITER = r"""
import os, sys, time
import numpy as np
from ome_stream import AcquisitionSettings, Dimension, create_stream

root, frames, side = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
metadata = sys.argv[4] == "1"
dims = [
    Dimension(name="t", count=None),
    Dimension(name="y", count=side),
    Dimension(name="x", count=side),
]
settings = AcquisitionSettings(root_path=root, dimensions=dims, dtype="uint16")
stream = create_stream(settings)
frame = np.arange(side * side, dtype="uint16").reshape(side, side)
properties = {f"Device{k}-Property": f"value {k}" for k in range(20)}
for number in range(frames):
    meta = None
    if metadata:
        meta = {"runner_time_ms": 1.5 * number, "exposure_ms": 10.0,
                "x": float(number), "y": 2.0, "z": 3.0, "camera": "Camera",
                "properties": properties}
    stream.append(frame, frame_metadata=meta)
while stream.frames_written < frames:
    time.sleep(0.01)
time.sleep(0.1)  # past the journal's last batch
os._exit(9)  # as a kill: no close
"""


def killed_dataset(root: Path, frames: int, side: int, metadata: bool) -> None:
    args = [str(root), str(frames), str(side), "1" if metadata else "0"]
    done = subprocess.run([sys.executable, "-c", WRITER, *args], capture_output=True)
    if done.returncode != 9:
        raise SystemExit(f"the writer failed:\n{done.stderr.decode()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--side", type=int, default=16)
    parser.add_argument("--metadata", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()

    from ome_stream import recover

    seconds = []
    for repeat in range(args.repeat):
        directory = Path(tempfile.mkdtemp(prefix="ome-stream-recover-", dir=args.dir))
        try:
            root = directory / "killed.ome.tiff"
            killed_dataset(root, args.frames, args.side, args.metadata)
            size = root.stat().st_size
            started = time.perf_counter()
            report = recover(root)
            seconds.append(time.perf_counter() - started)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        if report.frames_recovered != args.frames:
            raise SystemExit(
                f"recovered {report.frames_recovered} frames of {args.frames}"
            )
        print(
            f"run {repeat + 1}: {seconds[-1]:.2f} s for {args.frames} frames "
            f"({size / 1e6:,.1f} MB)"
        )
    print(f"median: {statistics.median(seconds):.2f} s")


if __name__ == "__main__":
    main()
