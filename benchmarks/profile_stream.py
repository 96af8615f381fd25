"""cProfile of one ome-stream benchmark scenario, split by thread.

    python benchmarks/profile_stream.py SCENARIO {os-zarr,os-tiff} [--quick]
        [--top N] [--no-fsync]

Profiles the caller's thread (the `append` loop) and the stream's writer
thread separately (cProfile only sees the thread it is enabled in), and
prints the wall time, so that the cost of the queue, of the backend and of
the libraries underneath can be told apart. `--no-fsync` opens tensorstore
with `file_io_sync: false` (an experiment; ome-stream itself is unchanged) to
show what tensorstore's per-file fsync costs. Time spent inside tensorstore's
C++ threads is not visible to cProfile; it shows up as waiting on futures.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # benchmarks/run.py, beside this file


def _stats(profile: cProfile.Profile, top: int) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    return text[text.find("   ncalls") :] if "   ncalls" in text else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario")
    parser.add_argument("contender", choices=["os-zarr", "os-tiff"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args(argv)

    from ome_stream import _stream

    scenario = {s.key: s for s in run.scenarios(args.quick)}[args.scenario]
    contender = run.CONTENDER_BY_KEY[args.contender]
    if args.no_fsync:
        import tensorstore as ts

        from ome_stream._formats.zarr import tensorstore as backend_module

        class _Ts:  # the module, with a Context that does not fsync
            def __getattr__(self, name: str) -> Any:
                return getattr(ts, name)

            @staticmethod
            def Context(spec: Any = None) -> Any:
                return ts.Context({"file_io_sync": False, **(spec or {})})

        backend_module.ts = _Ts()  # type: ignore[assignment]

    writer = cProfile.Profile()
    original = _stream.OMEStream._drain

    def profiled_drain(self: Any) -> None:
        writer.enable()
        try:
            original(self)
        finally:
            writer.disable()

    _stream.OMEStream._drain = profiled_drain  # type: ignore[method-assign]

    pool = run.make_frames(scenario)
    work = Path(tempfile.mkdtemp(prefix="ome-stream-profile-"))
    try:
        run._warm_up(scenario, contender, work)
        frames = [pool[i % len(pool)] for i in range(scenario.num_frames)]
        caller = cProfile.Profile()
        t0 = time.perf_counter()
        caller.enable()
        stream = run._open(contender, scenario, work)
        for frame in frames:
            stream.append(frame)
        t_appended = time.perf_counter()
        stream.close()
        caller.disable()
        t1 = time.perf_counter()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = t1 - t0
    print(
        f"{scenario.key} / {contender.label}"
        f"{' (tensorstore file_io_sync=false)' if args.no_fsync else ''}: "
        f"{scenario.num_frames} frames in {seconds:.2f} s = "
        f"{scenario.num_frames / seconds:.0f} frames/s, "
        f"{scenario.total_bytes / run.MB / seconds:.0f} MB/s "
        f"(append loop {t_appended - t0:.2f} s, close {t1 - t_appended:.2f} s; "
        "wall times include the profiler's overhead)"
    )
    print("\n=== caller thread (append + close) ===")
    print(_stats(caller, args.top))
    print("=== writer thread ===")
    print(_stats(writer, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
