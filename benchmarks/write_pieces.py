"""How the size of each `write` call changes the speed of writing a file.

ome-stream writes pixels in calls of at most `WRITE_PIECE_BYTES` (1 MiB;
`src/ome_stream/_formats/backend.py` says why). This probe writes the same
bytes to new files one call per file, or in pieces of the sizes given,
alternating the sizes from round to round, and prints MB/s per round and
the median per size. Nothing of ome-stream is used: it measures the
machine.

    python benchmarks/write_pieces.py --dir DIR           # 40 files of 13.1 MB
    python benchmarks/write_pieces.py --file-mb 8.4 --files 100 --one-file
    python benchmarks/write_pieces.py --threads 4 --pieces 0,1024,256
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0)


def _write(fd: int, data: memoryview, piece: int, offset: int | None) -> None:
    """All of `data`, in calls of at most `piece` bytes (0: one call), at
    `offset` (None: where the file is)."""
    step = piece or len(data)
    if offset is not None:
        os.lseek(fd, offset, os.SEEK_SET)  # (then plain writes: no pwrite on Windows)
    done = 0
    while done < len(data):
        written = os.write(fd, data[done : done + step])
        if written <= 0:
            raise OSError(
                f"a write of {min(step, len(data) - done)} bytes wrote nothing"
            )
        done += written


def one_round(
    directory: Path, data: np.ndarray, files: int, piece: int, threads: int, one: bool
) -> float:
    """Write `files` copies of `data`; MB/s."""
    view = memoryview(data.tobytes())  # (bytes: a buffer to every checker)
    work = Path(tempfile.mkdtemp(dir=directory, prefix="pieces-"))
    try:
        start = time.perf_counter()
        if one:
            fd = os.open(work / "all", _FLAGS, 0o644)
            try:
                for i in range(files):
                    _write(fd, view, piece, i * len(view))
            finally:
                os.close(fd)
        else:

            def write_file(i: int) -> None:
                fd = os.open(work / str(i), _FLAGS, 0o644)
                try:
                    _write(fd, view, piece, None)
                finally:
                    os.close(fd)

            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(write_file, range(files)))
        elapsed = time.perf_counter() - start
    finally:
        shutil.rmtree(work)
    return files * len(view) / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where to write: the disk the data goes to (the default, the "
        "temporary directory, may be in memory: tmpfs)",
    )
    parser.add_argument(
        "--file-mb",
        type=float,
        default=13.1,
        help="MB (10^6 bytes) per file; the default: a shard of 100 256² uint16 frames",
    )
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="files written at once (not with --one-file)",
    )
    parser.add_argument("--one-file", action="store_true", help="append to one file")
    parser.add_argument(
        "--pieces", default="0,1024,2048", help="KiB per call, 0: one call"
    )
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    pieces = [int(p) * 1024 for p in args.pieces.split(",")]
    size = int(args.file_mb * 1e6) // 2 * 2
    data = np.random.default_rng(0).integers(0, 4096, size // 2, dtype=np.uint16)
    results: dict[int, list[float]] = {p: [] for p in pieces}
    for r in range(args.rounds):
        for piece in pieces if r % 2 == 0 else pieces[::-1]:
            rate = one_round(
                args.dir, data, args.files, piece, args.threads, args.one_file
            )
            results[piece].append(rate)
    where = "one file" if args.one_file else f"{args.files} files"
    threads = 1 if args.one_file else args.threads
    print(
        f"{args.files} writes of {size / 1e6:.1f} MB to {where} in {args.dir} "
        f"({threads} thread(s)), MB/s per round:"
    )
    for piece, rates in results.items():
        label = "one call" if not piece else f"{piece // 1024} KiB pieces"
        runs = " ".join(f"{x:.0f}" for x in rates)
        print(f"  {label:>16}: median {statistics.median(rates):6.0f}   ({runs})")


if __name__ == "__main__":
    main()
