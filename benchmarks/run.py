"""Write throughput of ome-stream vs a raw sequential write vs ome-writers.

One command runs every scenario against every contender, side by side:

    python benchmarks/run.py [--quick] [--repeat N] [--out DIR]

Each (scenario, contender, repeat) runs in a fresh subprocess
(`run.py --single ...`) so that its peak memory is its own. The frames are
generated once per scenario by the parent, saved next to the output, and
loaded by the child *before* anything is timed. See docs/performance.md for
the method and the latest numbers; results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
MB = 1e6  # throughput is in decimal megabytes (10^6 bytes) per second
MiB = 2**20
# Pregenerated frames kept in memory (distinct frames are cycled beyond this).
POOL_BUDGET_BYTES = 512 * MiB
# ome-stream's default `max_queue_bytes` (the memory target is this + 100 MB).
DEFAULT_QUEUE_BYTES = 256 * MiB


# --------------------------------------------------------------------------
# scenarios


@dataclass(frozen=True)
class Axis:
    name: str
    count: int
    type: str
    chunk: int | None = None
    shard: int | None = None


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    axes: tuple[Axis, ...]  # index axes in acquisition order (frame Y, X follow)
    frame: tuple[int, int]
    families: tuple[str, ...] = ("zarr", "tiff")  # formats taking part
    compression: str | None = None
    dtype: str = "uint16"
    frame_chunked: bool = True  # one frame per chunk (the 0.9x raw target)
    rate_hz: float | None = None  # append at this pace (a camera), not flat out
    # each frame appended with hardware metadata, as pymmcore-plus gives it
    frame_metadata: bool = False

    @property
    def num_frames(self) -> int:
        return math.prod(a.count for a in self.axes)

    @property
    def frame_nbytes(self) -> int:
        return math.prod(self.frame) * np.dtype(self.dtype).itemsize

    @property
    def total_bytes(self) -> int:
        return self.num_frames * self.frame_nbytes

    def describe(self) -> str:
        dims = " x ".join(f"{a.name}={a.count}" for a in self.axes)
        text = f"{dims}, {self.frame[0]}x{self.frame[1]} {self.dtype}"
        extras = [
            f"chunk {a.name}={a.chunk}" for a in self.axes if a.chunk not in (None, 1)
        ]
        extras += [f"shard {a.name}={a.shard} chunks" for a in self.axes if a.shard]
        if self.compression:
            extras.append(f"compression={self.compression}")
        if self.rate_hz:
            extras.append(f"paced at {self.rate_hz:g} frames/s")
        if self.frame_metadata:
            extras.append("per-frame metadata")
        if extras:
            text += " (" + ", ".join(extras) + ")"
        return text


def _t(n: int, **kw: Any) -> Axis:
    return Axis("t", n, "time", **kw)


def scenarios(quick: bool) -> list[Scenario]:
    """The benchmark scenarios (smaller ones with `quick`, for a smoke check)."""
    big = (512, 512) if quick else (2048, 2048)
    mid = (128, 128) if quick else (512, 512)
    n_big = 8 if quick else 100
    n_small = 300 if quick else 4000
    return [
        Scenario("large-frames", "Large frames", (_t(n_big),), big),
        Scenario("small-frames", "Small frames (256²)", (_t(n_small),), (256, 256)),
        Scenario(
            "5d-multiposition",
            "5-D multi-position, t-p-c-z order",
            (
                _t(2 if quick else 4),
                Axis("p", 2 if quick else 3, "position"),
                Axis("c", 2, "channel"),
                Axis("z", 3 if quick else 10, "space"),
            ),
            mid,
        ),
        Scenario(
            "compressed",
            "Large frames, blosc-zstd",
            (_t(n_big),),
            big,
            families=("zarr",),
            compression="blosc-zstd",
        ),
        Scenario(
            "z-chunks",
            "z chunks of 16",
            (
                _t(1 if quick else 2),
                Axis("c", 2, "channel"),
                Axis("z", 32 if quick else 64, "space", chunk=16),
            ),
            mid,
            families=("zarr",),
            frame_chunked=False,
        ),
        Scenario(
            "sharded-small",
            "Small frames (256²) to sharded Zarr",
            (_t(n_small, shard=100),),
            (256, 256),
            families=("zarr",),
            frame_chunked=False,
        ),
        # An MDA: every frame comes with its hardware state, which both
        # libraries keep (OME-XML Plane + MapAnnotation; Zarr attributes).
        Scenario(
            "frame-metadata",
            "Small frames with per-frame metadata (an MDA)",
            (_t(150 if quick else 1000), Axis("c", 2, "channel")),
            (256, 256),
            frame_chunked=False,
            frame_metadata=True,
        ),
        # Latency while the disk keeps up: frames arrive at a camera's pace,
        # well below every contender's throughput, so nothing waits for room.
        Scenario(
            "paced-small",
            "Paced small frames (append latency)",
            (_t(100 if quick else 2000),),
            (256, 256),
            rate_hz=1000,
        ),
        Scenario(
            "paced-large",
            "Paced large frames (append latency)",
            (_t(5 if quick else 60),),
            big,
            rate_hz=30,
        ),
    ]


# --------------------------------------------------------------------------
# contenders


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    library: str | None  # import name; None for the raw write
    format: str | None
    family: str  # "raw", "zarr" or "tiff"
    needs: tuple[str, ...] = ()
    copy: bool = True  # ome-stream: append copies the frame (the default)

    @property
    def ours(self) -> bool:
        return self.library == "ome_stream"

    @property
    def available(self) -> bool:
        mods = ((self.library,) if self.library else ()) + self.needs
        return all(importlib.util.find_spec(m) is not None for m in mods)


CONTENDERS = [
    Contender("raw", "raw write", None, None, "raw"),
    Contender("os-zarr", "ome-stream zarr", "ome_stream", "ome-zarr", "zarr"),
    Contender("os-tiff", "ome-stream tiff", "ome_stream", "ome-tiff", "tiff"),
    # append(copy=False): the array itself is queued, as ome-writers does
    Contender(
        "os-zarr-nocopy",
        "ome-stream zarr, copy=False",
        "ome_stream",
        "ome-zarr",
        "zarr",
        copy=False,
    ),
    Contender(
        "os-tiff-nocopy",
        "ome-stream tiff, copy=False",
        "ome_stream",
        "ome-tiff",
        "tiff",
        copy=False,
    ),
    Contender(
        "os-zarr-python",
        "ome-stream zarr-python",
        "ome_stream",
        "zarr-python",
        "zarr",
        ("zarr",),
    ),
    Contender(
        "os-acquire-zarr",
        "ome-stream acquire-zarr",
        "ome_stream",
        "acquire-zarr",
        "zarr",
        ("acquire_zarr",),
    ),
    Contender(
        "ow-tensorstore",
        "ome-writers tensorstore",
        "ome_writers",
        "tensorstore",
        "zarr",
        ("tensorstore",),
    ),
    Contender(
        "ow-zarr-python",
        "ome-writers zarr-python",
        "ome_writers",
        "zarr-python",
        "zarr",
        ("zarr",),
    ),
    Contender(
        "ow-acquire-zarr",
        "ome-writers acquire-zarr",
        "ome_writers",
        "acquire-zarr",
        "zarr",
        ("acquire_zarr",),
    ),
    Contender(
        "ow-tifffile",
        "ome-writers tifffile",
        "ome_writers",
        "tifffile",
        "tiff",
        ("tifffile",),
    ),
]
CONTENDER_BY_KEY = {c.key: c for c in CONTENDERS}
# ome-stream contenders the targets are evaluated for
OURS_WITH_TARGETS = ("os-zarr", "os-tiff", "os-zarr-nocopy", "os-tiff-nocopy")


def contenders_for(scenario: Scenario, wanted: set[str] | None) -> list[Contender]:
    chosen = []
    for c in CONTENDERS:
        if c.family != "raw" and c.family not in scenario.families:
            continue
        if wanted is not None and c.key not in wanted and c.key != "raw":
            continue
        if c.available:
            chosen.append(c)
    return chosen


# --------------------------------------------------------------------------
# frames


def make_frames(scenario: Scenario, seed: int = 0) -> np.ndarray:
    """A pool of distinct, realistic frames (cycled when appending).

    A handful of planes are rendered by `SyntheticSample` (cells drifting in t,
    changing with channel and z); each pool frame is one of them plus its own
    precomputed shot-like noise, so no two pool frames are identical.
    """
    from ome_stream._synthetic import SyntheticSample

    n_pool = max(
        1, min(scenario.num_frames, POOL_BUDGET_BYTES // scenario.frame_nbytes)
    )
    n_render = min(n_pool, 8)
    sample = SyntheticSample(scenario.frame, seed=seed)
    renders = [
        sample.frame(t=i, c=i % 3, z=(i % 5) / 5 - 0.4, dtype=scenario.dtype)
        for i in range(n_render)
    ]
    rng = np.random.default_rng(seed + 1)
    pool = np.empty((n_pool, *scenario.frame), scenario.dtype)
    top = np.iinfo(scenario.dtype).max
    for i in range(n_pool):
        noise = rng.integers(0, 200, size=scenario.frame, dtype=np.int32)
        np.minimum(renders[i % n_render] + noise, top, out=noise)
        pool[i] = noise
    return pool


# --------------------------------------------------------------------------
# one measured run (child process)


def _proc_status_kb(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so the peak measured
    after the run is the run's own and not frame generation's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _settings(contender: Contender, scenario: Scenario, root: Path) -> Any:
    mod = importlib.import_module(contender.library or "")
    dims = [
        mod.Dimension(
            name=a.name,
            count=a.count,
            type=a.type,
            chunk_size=a.chunk,
            shard_size_chunks=a.shard,
        )
        for a in scenario.axes
    ]
    dims += [
        mod.Dimension(name="y", count=scenario.frame[0], type="space"),
        mod.Dimension(name="x", count=scenario.frame[1], type="space"),
    ]
    suffix = ".ome.zarr" if contender.family == "zarr" else ".ome.tiff"
    return mod.AcquisitionSettings(
        root_path=str(root / f"data{suffix}"),
        dimensions=dims,
        dtype=scenario.dtype,
        format=contender.format,
        compression=scenario.compression,
        overwrite=True,
    )


class _RawStream:
    """The baseline: open a file, write each frame's bytes, close (no fsync)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115

    def append(self, frame: np.ndarray, frame_metadata: Any = None) -> None:
        """Write the pixels (per-frame metadata is not written)."""
        view = memoryview(frame).cast("B")
        while view:  # one write() call per frame, unless the kernel writes less
            view = view[self._file.write(view) :]

    def close(self) -> None:
        self._file.close()


def _open(contender: Contender, scenario: Scenario, root: Path) -> Any:
    if contender.library is None:
        return _RawStream(root / "data.raw")
    mod = importlib.import_module(contender.library)
    return mod.create_stream(_settings(contender, scenario, root))


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _natural(path: Path) -> list[Any]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", str(path))]


def _read_back(
    contender: Contender, scenario: Scenario, root: Path, pool: np.ndarray
) -> tuple[int, bool]:
    """Frames found on disk, and whether the first and last frames read back
    equal to what was appended (other readers are checked by the tests)."""
    first = pool[0]
    last = pool[(scenario.num_frames - 1) % len(pool)]
    if contender.family == "raw":
        path = root / "data.raw"
        n = path.stat().st_size // scenario.frame_nbytes
        count = math.prod(scenario.frame)
        a = np.fromfile(path, scenario.dtype, count=count)
        b = np.fromfile(
            path, scenario.dtype, count=count, offset=(n - 1) * scenario.frame_nbytes
        )
        return n, bool(
            np.array_equal(a, first.ravel()) and np.array_equal(b, last.ravel())
        )
    if contender.family == "tiff":
        import tifffile

        files = sorted(
            (p for p in root.rglob("*") if p.suffix in (".tif", ".tiff")), key=_natural
        )
        n = 0
        for path in files:
            with tifffile.TiffFile(path) as tif:
                n += len(tif.pages)
        with tifffile.TiffFile(files[0]) as tif:
            a = tif.pages[0].asarray()
        with tifffile.TiffFile(files[-1]) as tif:
            b = tif.pages[-1].asarray()
        return n, bool(np.array_equal(a, first) and np.array_equal(b, last))
    import tensorstore as ts

    arrays = []
    for doc in root.rglob("zarr.json"):
        if json.loads(doc.read_text()).get("node_type") == "array":
            arrays.append(doc.parent)
    arrays.sort(key=_natural)
    opened = [
        ts.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(p)}},
            open=True,
        ).result()
        for p in arrays
    ]
    n = sum(math.prod(a.shape[:-2]) for a in opened)
    ndim = opened[0].rank
    a = opened[0][(0,) * (ndim - 2)].read().result()
    b = opened[-1][tuple(s - 1 for s in opened[-1].shape[:-2])].read().result()
    return n, bool(np.array_equal(a, first) and np.array_equal(b, last))


def hardware_metadata(number: int) -> dict[str, Any]:
    """What a camera frame of an MDA comes with (pymmcore-plus's frame
    metadata, as `ome_stream.mmcore` passes it on): time, exposure and stage
    position (OME Plane fields) and the rest (a MapAnnotation in OME-TIFF).
    Lists and dicts (property values, the event index) are given as JSON
    text: ome-writers' tifffile backend accepts only scalar values (a list
    raises a pydantic ValidationError), and every contender gets the same."""
    channel = "DAPI" if number % 2 else "FITC"
    return {
        "delta_t": 0.05 * number,
        "exposure_time": 0.01,
        "position_x": 100.0 + (number % 7),
        "position_y": 200.0,
        "position_z": 3.5,
        "camera_device": "Camera",
        "pixel_size_um": 0.65,
        "property_values": json.dumps(
            [{"dev": "Filter", "prop": "Label", "val": channel}]
        ),
        "event_index": json.dumps({"t": number // 2, "c": number % 2}),
        "channel": channel,
    }


def _warm_up(scenario: Scenario, contender: Contender, work: Path) -> None:
    """Write and delete a tiny dataset first, so that one-time costs of the
    process (lazy imports such as ome-types, schema building) are not timed."""
    tiny = Scenario(
        "warm-up",
        "warm-up",
        tuple(Axis(a.name, min(a.count, 2), a.type) for a in scenario.axes),
        (32, 32),
        compression=scenario.compression,
        dtype=scenario.dtype,
    )
    root = Path(tempfile.mkdtemp(prefix="warm-up-", dir=work))
    try:
        stream = _open(contender, tiny, root)
        for number in range(tiny.num_frames):
            meta = hardware_metadata(number) if scenario.frame_metadata else None
            stream.append(np.zeros(tiny.frame, tiny.dtype), frame_metadata=meta)
        stream.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_single(
    scenario: Scenario, contender: Contender, frames_path: Path, work: Path
) -> dict[str, Any]:
    """Measure one run; everything before `t_start` is untimed preparation."""
    pool = np.load(frames_path)
    if contender.library:
        _warm_up(scenario, contender, work)  # also does every (lazy) import
    root = Path(tempfile.mkdtemp(prefix=f"{contender.key}-", dir=work))
    n = scenario.num_frames
    n_pool = len(pool)
    frames = [pool[i % n_pool] for i in range(n)]  # views, no copies
    metadata = [
        hardware_metadata(i) if scenario.frame_metadata else None for i in range(n)
    ]
    latencies = np.zeros(n, np.int64)
    gc.collect()
    peak_reset = _reset_peak_rss()
    baseline_kb = _proc_status_kb("VmRSS")
    threads_before = set(threading.enumerate())
    clock = time.perf_counter_ns

    t_start = clock()
    stream = _open(contender, scenario, root)
    t_opened = clock()
    append = stream.append
    if not contender.copy:
        append = functools.partial(stream.append, copy=False)
    if scenario.rate_hz:
        period = int(1e9 / scenario.rate_hz)
        for i, frame in enumerate(frames):
            wait = t_opened + i * period - clock()
            if wait > 0:
                time.sleep(wait / 1e9)  # sleeping releases the GIL
            t0 = clock()
            append(frame, frame_metadata=metadata[i])
            latencies[i] = clock() - t0
    else:
        for i, frame in enumerate(frames):
            t0 = clock()
            append(frame, frame_metadata=metadata[i])
            latencies[i] = clock() - t0
    t_appended = clock()
    stream.close()
    t_closed = clock()
    # ome-writers' tifffile backend may return from close() while its writer
    # thread is still writing (it joins with a 5 s timeout): wait for it, so
    # that every contender is timed until its data has been written.
    # (Only writer threads: zarr-python's event-loop thread never ends.)
    for thread in set(threading.enumerate()) - threads_before:
        if "writer" in thread.name.lower():
            thread.join(timeout=600)
    t_done = clock()

    peak_kb = (
        _proc_status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    )
    del stream
    disk = _disk_bytes(root)
    frames_on_disk, readback_ok = _read_back(contender, scenario, root, pool)
    shutil.rmtree(root, ignore_errors=True)

    total_s = (t_done - t_start) / 1e9
    lat_us = latencies / 1e3
    return {
        "scenario": scenario.key,
        "contender": contender.key,
        "rate_hz": scenario.rate_hz,
        "frames": n,
        "bytes": scenario.total_bytes,
        "total_s": total_s,
        "mb_per_s": scenario.total_bytes / MB / total_s,
        "frames_per_s": n / total_s,
        "open_s": (t_opened - t_start) / 1e9,
        "append_loop_s": (t_appended - t_opened) / 1e9,
        "close_s": (t_closed - t_appended) / 1e9,
        "after_close_s": (t_done - t_closed) / 1e9,
        "append_p50_us": float(np.percentile(lat_us, 50)),
        "append_p99_us": float(np.percentile(lat_us, 99)),
        "append_max_us": float(lat_us.max()),
        "peak_rss_mb": max(0, peak_kb - baseline_kb) * 1024 / MB,
        "peak_rss_method": "VmHWM after clear_refs" if peak_reset else "ru_maxrss",
        "baseline_rss_mb": baseline_kb * 1024 / MB,
        "disk_bytes": disk,
        "frames_on_disk": frames_on_disk,
        "readback_ok": readback_ok,
    }


# --------------------------------------------------------------------------
# the whole suite (parent process)

METRICS = (
    "mb_per_s",
    "frames_per_s",
    "total_s",
    "open_s",
    "append_loop_s",
    "close_s",
    "after_close_s",
    "append_p50_us",
    "append_p99_us",
    "append_max_us",
    "peak_rss_mb",
    "disk_bytes",
)


@dataclass
class Outcome:
    contender: Contender
    runs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, data: dict[str, Any], console: Any) -> None:
        if "error" in data:
            self.errors.append(data["error"])
            console.print(f"  [red]{self.contender.label}: {data['error']}[/red]")
        else:
            self.runs.append(data)

    def median(self, metric: str) -> float:
        return statistics.median(r[metric] for r in self.runs)


def _run_child(
    contender: Contender,
    scenario: Scenario,
    frames_path: Path,
    work: Path,
    quick: bool,
    timeout: float,
    tag: str,
) -> dict[str, Any]:
    result = work / f"result-{tag}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--single",
        scenario.key,
        contender.key,
        "--frames",
        str(frames_path),
        "--work",
        str(work),
        "--result",
        str(result),
    ]
    if quick:
        cmd.append("--quick")
    os.sync()  # start every run with no dirty pages left by the previous one
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0 or not result.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}
    data: dict[str, Any] = json.loads(result.read_text())
    result.unlink()
    return data


def run_suite(args: argparse.Namespace, console: Any) -> dict[str, Any]:
    quick = args.quick
    repeat = args.repeat or (1 if quick else 3)
    wanted_s = set(args.scenarios.split(",")) if args.scenarios else None
    wanted_c = set(args.contenders.split(",")) if args.contenders else None
    out_parent = Path(args.out) if args.out else Path(tempfile.gettempdir())
    out_parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ome-stream-bench-", dir=out_parent))
    report: dict[str, Any] = {
        "quick": quick,
        "repeat": repeat,
        "jobs": args.jobs,
        "out": str(out_parent),
        "machine": machine_info(out_parent),
        "scenarios": [],
    }
    t_suite = time.perf_counter()
    try:
        for scenario in scenarios(quick):
            if wanted_s is not None and scenario.key not in wanted_s:
                continue
            contenders = contenders_for(scenario, wanted_c)
            console.print(
                f"[bold]{scenario.title}[/bold]: {scenario.describe()} — "
                f"{scenario.total_bytes / MB:.0f} MB, {len(contenders)} contenders "
                f"x {repeat}"
            )
            t0 = time.perf_counter()
            pool = make_frames(scenario)
            frames_path = work / f"frames-{scenario.key}.npy"
            np.save(frames_path, pool)
            console.print(
                f"  {len(pool)} distinct frames generated in "
                f"{time.perf_counter() - t0:.1f} s (untimed)"
            )
            del pool
            outcomes = {c.key: Outcome(c) for c in contenders}

            # rotate the order so no contender always runs first or last
            tasks = [
                (r, c)
                for r in range(repeat)
                for c in contenders[r % len(contenders) :]
                + contenders[: r % len(contenders)]
            ]
            child = (scenario, frames_path, work, quick, args.timeout)
            if args.jobs > 1:  # smoke checks only: concurrent runs skew timings
                with ThreadPoolExecutor(args.jobs) as executor:
                    futures = [
                        (c, executor.submit(_run_child, c, *child, f"{c.key}-{r}"))
                        for r, c in tasks
                    ]
                    for c, future in futures:
                        outcomes[c.key].add(future.result(), console)
            else:
                for r, c in tasks:
                    outcome = outcomes[c.key]
                    if outcome.errors or (
                        outcome.runs and outcome.runs[0]["total_s"] > args.slow
                    ):
                        continue  # failed, or too slow to repeat
                    outcome.add(_run_child(c, *child, f"{c.key}-{r}"), console)
            frames_path.unlink()
            entry = scenario_entry(scenario, outcomes)
            report["scenarios"].append(entry)
            print_table(console, entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["elapsed_s"] = time.perf_counter() - t_suite
    report["machine"]["loadavg_end"] = _loadavg()
    report["targets"] = evaluate_targets(report)
    return report


def scenario_entry(scenario: Scenario, outcomes: dict[str, Outcome]) -> dict[str, Any]:
    raw = outcomes.get("raw")
    raw_mbps = raw.median("mb_per_s") if raw and raw.runs else None
    results = {}
    for key, outcome in outcomes.items():
        item: dict[str, Any] = {
            "label": outcome.contender.label,
            "family": outcome.contender.family,
            "repeats": len(outcome.runs),
            "errors": outcome.errors,
            "runs": outcome.runs,
        }
        if outcome.runs:
            median = {m: outcome.median(m) for m in METRICS}
            median["ratio_to_raw"] = (
                median["mb_per_s"] / raw_mbps if raw_mbps else float("nan")
            )
            median["frames_on_disk"] = min(r["frames_on_disk"] for r in outcome.runs)
            median["readback_ok"] = all(r["readback_ok"] for r in outcome.runs)
            item["median"] = median
        results[key] = item
    return {
        "key": scenario.key,
        "title": scenario.title,
        "description": scenario.describe(),
        "frames": scenario.num_frames,
        "frame_shape": list(scenario.frame),
        "bytes": scenario.total_bytes,
        "compression": scenario.compression,
        "frame_chunked": scenario.frame_chunked,
        "rate_hz": scenario.rate_hz,
        "params": asdict(scenario),
        "results": results,
    }


# --------------------------------------------------------------------------
# targets (PRODUCT.md / the issue)


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def med(entry: dict[str, Any], key: str) -> dict[str, Any] | None:
        item = entry["results"].get(key)
        return item.get("median") if item else None

    def add(name: str, ok: bool, detail: str) -> None:
        targets.append({"target": name, "met": ok, "detail": detail})

    for entry in report["scenarios"]:
        key = entry["key"]
        for ours in OURS_WITH_TARGETS:
            m = med(entry, ours)
            if m is None:
                continue
            label = CONTENDER_BY_KEY[ours].label
            paced = entry["rate_hz"] is not None
            if entry["frame_chunked"] and not entry["compression"] and not paced:
                ratio = m["ratio_to_raw"]
                add(
                    "uncompressed frame-chunked ≥ 0.9x raw",
                    ratio >= 0.9,
                    f"{key}, {label}: {ratio:.2f}x raw",
                )
            if paced:
                p99 = m["append_p99_us"]
                add(
                    "append p99 < 1 ms while the disk keeps up",
                    p99 < 1000,
                    f"{key}, {label}: {p99:.0f} µs",
                )
            rss = m["peak_rss_mb"]
            bound = (DEFAULT_QUEUE_BYTES + 100 * MB) / MB
            add(
                "peak RSS ≤ queue bound + 100 MB",
                rss <= bound,
                f"{key}, {label}: {rss:.0f} MB (bound {bound:.0f} MB)",
            )
            family = CONTENDER_BY_KEY[ours].family
            theirs = [
                (item["median"]["mb_per_s"], item["label"])
                for k, item in entry["results"].items()
                if k.startswith("ow-") and item["family"] == family and "median" in item
            ]
            if theirs and not paced:
                best, best_label = max(theirs)
                add(
                    "ahead of the best ome-writers backend",
                    m["mb_per_s"] > best,
                    f"{key}, {label}: {m['mb_per_s']:.0f} vs {best:.0f} MB/s "
                    f"({best_label})",
                )
        for ours, goal_key, goal, what in (
            ("os-tiff", "small-frames", 20000, "TIFF"),
            ("os-tiff-nocopy", "small-frames", 20000, "TIFF"),
            ("os-zarr", "sharded-small", 10000, "sharded Zarr"),
            ("os-zarr-nocopy", "sharded-small", 10000, "sharded Zarr"),
        ):
            if key == goal_key and (m := med(entry, ours)):
                fps = m["frames_per_s"]
                add(
                    f"256² to {what} ≥ {goal:,} frames/s".replace(",", " "),
                    fps >= goal,
                    f"{CONTENDER_BY_KEY[ours].label}: {fps:.0f} frames/s",
                )
    return targets


# --------------------------------------------------------------------------
# reporting

COLUMNS = (
    ("contender", "contender"),
    ("MB/s", "mb_per_s"),
    ("MB/s min-max", "runs"),
    ("frames/s", "frames_per_s"),
    ("x raw", "ratio_to_raw"),
    ("append p50 µs", "append_p50_us"),
    ("p99 µs", "append_p99_us"),
    ("max ms", "append_max_us"),
    ("open s", "open_s"),
    ("close s", "close_s"),
    ("peak RSS MB", "peak_rss_mb"),
    ("on disk MB", "disk_bytes"),
    ("n", "repeats"),
)


def _cells(item: dict[str, Any]) -> list[str]:
    m = item.get("median")
    if m is None:
        err = (item["errors"] or ["not run"])[0]
        return [item["label"], f"failed: {err[:60]}"] + [""] * (len(COLUMNS) - 2)
    flag = "" if m["readback_ok"] else " (read-back FAILED)"
    speeds = [r["mb_per_s"] for r in item["runs"]]
    return [
        item["label"] + flag,
        f"{m['mb_per_s']:.0f}",
        f"{min(speeds):.0f}-{max(speeds):.0f}",
        f"{m['frames_per_s']:.0f}",
        f"{m['ratio_to_raw']:.2f}",
        f"{m['append_p50_us']:.0f}",
        f"{m['append_p99_us']:.0f}",
        f"{m['append_max_us'] / 1000:.1f}",
        f"{m['open_s']:.3f}",
        f"{m['close_s']:.3f}",
        f"{m['peak_rss_mb']:.0f}",
        f"{m['disk_bytes'] / MB:.0f}",
        str(item["repeats"]),
    ]


def print_table(console: Any, entry: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(
        title=f"{entry['title']}: {entry['description']}", title_justify="left"
    )
    for i, (name, _) in enumerate(COLUMNS):
        table.add_column(name, justify="left" if i == 0 else "right")
    for item in entry["results"].values():
        table.add_row(*_cells(item))
    console.print(table)


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# ome-stream benchmark results",
        "",
        f"Generated by `python benchmarks/run.py{' --quick' if report['quick'] else ''}"
        f" --repeat {report['repeat']}"
        f"{' --jobs ' + str(report['jobs']) if report['jobs'] > 1 else ''}` on "
        f"{machine['date']} "
        f"({report['elapsed_s'] / 60:.1f} min). Medians of {report['repeat']} runs; "
        "MB = 10^6 bytes; `x raw` = MB/s ÷ the raw write's MB/s in the same "
        "scenario. Each run is a fresh process; the raw write does not fsync "
        "(the libraries keep their defaults, see docs/performance.md).",
        "",
        f"Machine: {machine['cpu']}, {machine['nproc']} CPUs, "
        f"{machine['memory']} RAM, output on {machine['disk']}; "
        f"{machine['python']}. Load average (1/5/15 min) at start "
        f"{machine['loadavg_start']}, at end {machine['loadavg_end']}.",
        "",
        f"ome-stream at {machine['git']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
        + ".",
        "",
    ]
    header = [name for name, _ in COLUMNS]
    for entry in report["scenarios"]:
        lines += [
            f"## {entry['title']}",
            "",
            f"{entry['description']} — {entry['frames']} frames, "
            f"{entry['bytes'] / MB:.0f} MB.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        ]
        for item in entry["results"].values():
            lines.append("| " + " | ".join(_cells(item)) + " |")
        lines.append("")
    lines += ["## Targets", "", "| target | met | measured |", "|---|---|---|"]
    for t in report["targets"]:
        lines.append(
            f"| {t['target']} | {'yes' if t['met'] else '**no**'} | {t['detail']} |"
        )
    lines.append("")
    return "\n".join(lines)


def _command(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""
    return out.strip()


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine_info(out: Path) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = {}
    for dist in (
        "ome-stream",
        "ome-writers",
        "tensorstore",
        "tifffile",
        "zarr",
        "numpy",
        "imagecodecs",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages[dist] = importlib.metadata.version(dist)
    free = _command(["free", "-h"])
    df = _command(["df", "-h", str(out)])
    mem_line = next((ln for ln in free.splitlines() if ln.startswith("Mem:")), "")
    df_lines = df.splitlines()
    disk = " ".join(df_lines[-1].split()[:2]) if len(df_lines) > 1 else str(out)
    commit = _command(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"])
    dirty = _command(["git", "-C", str(HERE.parent), "status", "--porcelain", "src"])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "git": f"{commit}{' + uncommitted changes in src/' if dirty else ''}",
        "loadavg_start": _loadavg(),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "memory": mem_line.split()[1] if mem_line else "?",
        "disk": disk,
        "free_h": free,
        "df_h": df,
        "python": f"Python {platform.python_version()} ({platform.platform()})",
        "packages": packages,
    }


# --------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small scenarios, 1 repeat"
    )
    parser.add_argument("--repeat", type=int, default=None, help="runs per contender")
    parser.add_argument(
        "--out", help="directory for the (temporary) output; default: the temp dir"
    )
    parser.add_argument(
        "--results",
        help="directory for latest.md/latest.json (default benchmarks/results; "
        "with --quick the files are named quick.*)",
    )
    parser.add_argument("--scenarios", help="comma-separated scenario keys")
    parser.add_argument("--contenders", help="comma-separated contender keys")
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds allowed per run"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at a time (>1 only for smoke checks: it skews the timings)",
    )
    parser.add_argument(
        "--slow",
        type=float,
        default=20,
        help="a contender whose first run takes longer is not repeated",
    )
    parser.add_argument(
        "--render",
        metavar="JSON",
        help="only re-render the tables and targets of an earlier results file",
    )
    # internal: one measured run
    parser.add_argument("--single", nargs=2, metavar=("SCENARIO", "CONTENDER"))
    parser.add_argument("--frames", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.single:
        scenario = {s.key: s for s in scenarios(args.quick)}[args.single[0]]
        contender = CONTENDER_BY_KEY[args.single[1]]
        data = run_single(scenario, contender, Path(args.frames), Path(args.work))
        Path(args.result).write_text(json.dumps(data))
        return 0

    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=170)
    if args.render:  # re-render the tables of an earlier run
        source = Path(args.render)
        report = json.loads(source.read_text())
        report["targets"] = evaluate_targets(report)
        for entry in report["scenarios"]:
            print_table(console, entry)
        results, stem = source.parent, source.stem
    else:
        report = run_suite(args, console)
        results = Path(args.results) if args.results else RESULTS_DIR
        stem = "quick" if args.quick and not args.results else "latest"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (results / f"{stem}.md").write_text(markdown(report))
    met = sum(t["met"] for t in report["targets"])
    console.print(
        f"Targets met: {met}/{len(report['targets'])}. Results: "
        f"{results / stem}.md and .json ({report['elapsed_s']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
