"""Smoke check of the benchmark suite: `benchmarks/run.py --quick` runs every
scenario against every contender and reports sane numbers. Speeds are not
asserted here; they are measured by the benchmark itself."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


def _load_script(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _load_runner() -> ModuleType:
    return _load_script(RUN, "_bench_run")


def _run_script(
    name: str, args: list[str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run benchmarks/`name` with `args` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, str(RUN.parent / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("bench")
    results = tmp / "results"
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--quick",
            "--jobs",
            "2",
            "--out",
            str(tmp),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (results / "latest.md").read_text().startswith("# ome-stream benchmark")
    # the temporary output is deleted after the runs
    assert [p.name for p in tmp.iterdir()] == ["results"]
    return json.loads((results / "latest.json").read_text())


def test_every_scenario_and_contender_reported(report: dict) -> None:
    runner = _load_runner()
    expected = runner.scenarios(quick=True)
    assert [s["key"] for s in report["scenarios"]] == [s.key for s in expected]
    keys = {c.key for c in runner.CONTENDERS}
    assert {"raw", "os-zarr", "os-tiff"} <= keys
    for scenario, entry in zip(expected, report["scenarios"]):
        wanted = {c.key for c in runner.contenders_for(scenario, None)}
        assert {"raw", "os-zarr"} <= wanted
        assert set(entry["results"]) == wanted, scenario.key
        for key, item in entry["results"].items():
            assert item["errors"] == [], (scenario.key, key, item["errors"])
            assert item["repeats"] == report["repeat"] == 1
            assert "median" in item, (scenario.key, key)


def test_numbers_are_sane(report: dict) -> None:
    for entry in report["scenarios"]:
        for key, item in entry["results"].items():
            where = (entry["key"], key)
            m = item["median"]
            run = item["runs"][0]
            assert run["frames"] == entry["frames"], where
            assert m["frames_on_disk"] == entry["frames"], where
            assert m["readback_ok"], where
            if entry["compression"] is None:
                assert m["disk_bytes"] >= entry["bytes"], where
            else:
                assert m["disk_bytes"] > 0, where
            assert m["mb_per_s"] > 0, where
            assert m["frames_per_s"] > 0, where
            assert m["ratio_to_raw"] > 0, where
            assert 0 <= m["append_p50_us"] <= m["append_p99_us"] <= m["append_max_us"]
            assert run["total_s"] >= run["append_loop_s"] + run["close_s"], where
            assert m["peak_rss_mb"] >= 0, where
        assert entry["results"]["raw"]["median"]["ratio_to_raw"] == pytest.approx(1.0)
    assert report["targets"], "targets are evaluated"
    assert {"target", "met", "detail"} <= set(report["targets"][0])


def test_render_rewrites_the_tables(report: dict, tmp_path: Path) -> None:
    source = tmp_path / "run.json"
    source.write_text(json.dumps(report))
    proc = subprocess.run(
        [sys.executable, str(RUN), "--render", str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "run.md").read_text()
    for entry in report["scenarios"]:
        assert f"## {entry['title']}" in text
    assert "## Targets" in text


def test_the_recovery_benchmark_runs(tmp_path: Path) -> None:
    """`benchmarks/recover_tiff.py` kills a writer and times `recover`; it
    refuses to report a run that did not recover every frame."""
    args = ["--frames", "300", "--metadata", "--repeat", "2", "--dir", str(tmp_path)]
    proc = _run_script("recover_tiff.py", args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["run 1", "run 2", "median"]
    assert "for 300 frames" in lines[0]
    assert list(tmp_path.iterdir()) == []  # each run's dataset removed


def test_the_write_size_probe_runs(tmp_path: Path) -> None:
    """`benchmarks/write_pieces.py` writes the same bytes whole and in
    pieces, one median per piece size, and leaves nothing behind."""
    args = ["--dir", str(tmp_path), "--file-mb", "0.3", "--files", "3"]
    args += ["--pieces", "0,64", "--rounds", "2", "--threads", "2"]
    proc = _run_script("write_pieces.py", args, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("3 writes of 0.3 MB to 3 files")
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "one call",
        "64 KiB pieces",
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("one_file", [False, True], ids=["files", "one-file"])
def test_the_write_size_probe_writes_every_byte(
    one_file: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the probe times is a whole write: its pieces put every byte in
    place (checked here by keeping the files)."""
    probe = _load_script(RUN.parent / "write_pieces.py", "_write_pieces")
    data = np.random.default_rng(1).integers(0, 4096, 70_001, dtype=np.uint16)

    def keeping_files(path: Any) -> None:  # (the probe removes its own)
        for file in Path(path).iterdir():
            file.rename(tmp_path / f"kept-{file.name}")
        shutil.rmtree(path)

    monkeypatch.setattr(probe, "shutil", SimpleNamespace(rmtree=keeping_files))
    rate = probe.one_round(tmp_path, data, 3, 4096, 2, one_file)
    assert rate > 0
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("kept-"))
    if one_file:
        assert names == ["kept-all"]
        whole = np.fromfile(tmp_path / "kept-all", np.uint16)
        np.testing.assert_array_equal(whole, np.tile(data, 3))
    else:
        assert names == ["kept-0", "kept-1", "kept-2"]
        for name in names:
            np.testing.assert_array_equal(np.fromfile(tmp_path / name, np.uint16), data)


@pytest.mark.parametrize("fmt", ["ome-zarr", "ome-tiff"])
def test_the_stream_cpu_probe_runs_and_alternates_trees(
    fmt: str, tmp_path: Path
) -> None:
    """`benchmarks/stream_cpu.py` times one configuration in fresh
    processes, against a second source tree when asked (here the same
    one), checks that each run imported the tree it names, and leaves
    nothing behind."""
    src = RUN.parent.parent / "src"
    args = ["--frames", "40", "--side", "32", "--shard", "10", "--runs", "2"]
    args += ["--against", str(src), "--dir", str(tmp_path), "--no-copy"]
    args += ["--format", fmt]
    proc = _run_script("stream_cpu.py", args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"40 32² uint16 frames to {fmt}, t chunks 1, shards 10")
    assert "copy=False; 2 runs per tree" in lines[0]
    assert sum("frames/s:" in line for line in lines) == 2
    assert list(tmp_path.iterdir()) == []


def test_the_stream_cpu_probe_refuses_a_tree_without_ome_stream(tmp_path: Path) -> None:
    """`--against` given a directory that holds no ome_stream (a checkout's
    root instead of its src) is refused before any run."""
    proc = _run_script("stream_cpu.py", ["--frames", "10", "--against", str(tmp_path)])
    assert proc.returncode == 2
    assert "no ome_stream package there" in proc.stderr


def test_the_stream_cpu_probe_imports_the_tree_it_names(tmp_path: Path) -> None:
    """A tree whose ome_stream is not the one a run imports is caught (here
    a package that is no ome_stream at all: its run fails), and options
    given either way are not passed on to the runs."""
    probe = _load_script(RUN.parent / "stream_cpu.py", "_stream_cpu")
    argv = ["--frames", "4", "--against=/x", "--runs", "3", "--no-copy"]
    argv += ["--against", "/y"]
    kept = probe._without_option(probe._without_option(argv, "--against"), "--runs")
    assert kept == ["--frames", "4", "--no-copy"]
    fake = tmp_path / "src" / "ome_stream"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not the real one')\n")
    args = ["--frames", "4", "--side", "16", "--runs", "1"]
    args += ["--against", str(tmp_path / "src"), "--dir", str(tmp_path)]
    proc = _run_script("stream_cpu.py", args)
    assert proc.returncode != 0
    assert "a run of against failed" in proc.stderr
    assert "not the real one" in proc.stderr
