"""Frames/s and CPU time of one ome-stream configuration, optionally A/B
against another source tree, alternating runs.

On a shared two-core VM the rate of a run varies two- or threefold from
minute to minute; the process's CPU time (user and system) varies less, and
alternating the trees run by run spreads the machine's moods over both.
Each run is a fresh process writing frames made before timing (random
values, a pool of at most 64 frames and 256 MiB) to a new directory, then
removed; a two-frame dataset written first, untimed, pays the backend's
imports. The CPU times are the process's (all its threads), not the
kernel's writeback threads'.

    python benchmarks/stream_cpu.py --frames 4000 --side 256 --shard 100
    python benchmarks/stream_cpu.py --frames 100 --side 2048 --no-copy
    python benchmarks/stream_cpu.py --format ome-tiff --against /tmp/old/src

`--against` takes the `src` directory of another checkout (e.g. made with
`git worktree add /tmp/old REV`): its runs import ome_stream from there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
POOL_BYTES = 256 * 2**20  # frames made before timing, reused in turn


def child(args: argparse.Namespace) -> None:
    """One run in this process; prints its figures as a JSON line."""
    import numpy as np

    import ome_stream
    from ome_stream import AcquisitionSettings, Dimension, create_stream

    side = args.side
    pooled = max(1, min(64, args.frames, POOL_BYTES // (2 * side * side)))
    pool = np.random.default_rng(0).integers(
        100, 4000, size=(pooled, side, side), dtype=np.uint16
    )
    t: dict[str, Any] = {}
    if args.chunk:
        t["chunk_size"] = args.chunk
    if args.shard:
        t = {"chunk_size": args.chunk or 1, "shard_size_chunks": args.shard}
    suffix = ".ome.zarr" if args.format == "ome-zarr" else ".ome.tiff"
    work = Path(tempfile.mkdtemp(dir=args.dir, prefix="stream-cpu-"))

    def settings(name: str, frames: int) -> AcquisitionSettings:
        (work / name).mkdir()
        return AcquisitionSettings(
            root_path=str(work / name / f"run{suffix}"),
            dimensions=[
                Dimension(name="t", count=frames, type="time", **t),
                Dimension(name="y", count=side, type="space"),
                Dimension(name="x", count=side, type="space"),
            ],
            dtype="uint16",
            format=args.format,
        )

    try:
        # untimed: a few frames first, so that the backend's imports and
        # first-use costs (tensorstore, tifffile, the OME model) are paid
        # before timing, as benchmarks/run.py does
        with create_stream(settings("warm-up", 2)) as stream:
            for frame in pool[:1].repeat(2, axis=0):
                stream.append(frame)
        shutil.rmtree(work / "warm-up")
        run_settings = settings("run", args.frames)
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        with create_stream(run_settings) as stream:
            for i in range(args.frames):
                stream.append(pool[i % len(pool)], copy=args.copy)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        shutil.rmtree(work)
    print(
        json.dumps(
            {
                "frames_per_s": args.frames / elapsed,
                "user_us": (after.ru_utime - before.ru_utime) * 1e6 / args.frames,
                "sys_us": (after.ru_stime - before.ru_stime) * 1e6 / args.frames,
                "source": str(Path(ome_stream.__file__).parent.parent),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--side", type=int, default=256, help="frames are side²")
    parser.add_argument(
        "--format", choices=["ome-zarr", "ome-tiff"], default="ome-zarr"
    )
    parser.add_argument("--chunk", type=int, default=0, help="frames a chunk along t")
    parser.add_argument("--shard", type=int, default=0, help="chunks a shard along t")
    parser.add_argument("--copy", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--runs", type=int, default=4, help="runs per tree")
    parser.add_argument("--against", type=Path, help="another tree's src directory")
    parser.add_argument("--dir", type=Path, default=None, help="where to write")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    if args.child:
        child(args)
        return
    trees: dict[str, Path] = {"this": HERE.parent / "src"}
    if args.against:
        trees["against"] = args.against.resolve()
        if not (trees["against"] / "ome_stream" / "__init__.py").is_file():
            parser.error(
                f"--against {args.against}: no ome_stream package there; give "
                "the src directory of a checkout"
            )
    forwarded = [a for a in sys.argv[1:] if a not in ("--child",)]
    forwarded = _without_option(forwarded, "--against")
    forwarded = _without_option(forwarded, "--runs")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for run in range(args.runs):
        order = list(trees) if run % 2 == 0 else list(trees)[::-1]
        for name in order:
            path = [str(trees[name]), os.environ.get("PYTHONPATH", "")]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
            proc = subprocess.run(
                [sys.executable, __file__, "--child", *forwarded],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode:
                sys.exit(f"a run of {name} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.splitlines()[-1])
            if Path(result["source"]).resolve() != trees[name]:
                sys.exit(f"{name} imported ome_stream from {result['source']}")
            results[name].append(result)
    copy = "copied" if args.copy else "copy=False"
    blocks = f", t chunks {args.chunk or 1}, shards {args.shard}" if args.shard else ""
    if args.chunk and not args.shard:
        blocks = f", t chunks {args.chunk}"
    print(
        f"{args.frames} {args.side}² uint16 frames to {args.format}{blocks}, "
        f"{copy}; {args.runs} runs per tree, medians (min-max):"
    )
    for name, runs in results.items():
        print(f"  {name:>8} ({trees[name]}):")
        for key, label in (
            ("frames_per_s", "frames/s"),
            ("user_us", "user CPU µs a frame"),
            ("sys_us", "system CPU µs a frame"),
        ):
            values = [r[key] for r in runs]
            print(
                f"    {label:>22}: {statistics.median(values):8.0f} "
                f"({min(values):.0f}-{max(values):.0f})"
            )


def _without_option(argv: list[str], option: str) -> list[str]:
    """`argv` without `option` and its value (either spelling)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(f"{option}="):
            kept.append(arg)
    return kept


if __name__ == "__main__":
    main()
