"""The pymmcore-plus handler: real MDA runs on the simulated microscope, and
deterministic runs with a scripted engine on a bare MDARunner."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq
from pymmcore_plus.mda import MDARunner, SkipEvent

from ome_stream.mmcore import OMEStreamHandler, simulated_core
from tests import _readers as readers

SHAPE = (32, 48)


# --------------------------------------------------------- scripted engine


def frame_for(event: useq.MDAEvent) -> np.ndarray:
    """A frame that encodes its event index (t, p, c, z) in every pixel."""
    index = event.index
    code = (
        1000 * index.get("t", 0)
        + 100 * index.get("p", 0)
        + 10 * index.get("c", 0)
        + index.get("z", 0)
        + 1
    )
    return np.full(SHAPE, code, np.uint16)


class ScriptedEngine:
    """An MDA engine with no hardware: fails, skips or drops chosen events."""

    def __init__(
        self,
        *,
        fail_snap: Iterable[int] = (),
        skip: Iterable[int] = (),
        yield_none: Iterable[int] = (),
        raise_at: int | None = None,
        cameras: int = 1,
    ) -> None:
        self.cameras = cameras
        self.fail_snap = set(fail_snap)
        self.skip = set(skip)
        self.yield_none = set(yield_none)
        self.raise_at = raise_at
        self.count = -1

    def setup_sequence(self, sequence: useq.MDASequence) -> dict[str, Any]:
        info = {
            "camera_label": "Cam",
            "width": SHAPE[1],
            "height": SHAPE[0],
            "dtype": "uint16",
            "pixel_size_um": 0.5,
            "plane_shape": SHAPE,
        }
        infos = [info]
        if self.cameras > 1:
            infos = [
                {
                    **info,
                    "camera_label": "Multi Camera",
                    "num_camera_adapter_channels": self.cameras,
                },
                *({**info, "camera_label": f"Cam{i}"} for i in range(self.cameras)),
            ]
        return {"format": "summary-dict", "version": "1.0", "image_infos": infos}

    def event_iterator(
        self, events: Iterable[useq.MDAEvent]
    ) -> Iterator[useq.MDAEvent]:
        return iter(events)

    def setup_event(self, event: useq.MDAEvent) -> None:
        self.count += 1
        if self.count == self.raise_at:
            raise RuntimeError("hardware boom")
        if self.count in self.skip:
            raise SkipEvent(num_frames=1, reason="autofocus failed")

    def exec_event(self, event: useq.MDAEvent) -> Iterator[Any]:
        if self.count in self.fail_snap:
            return  # like MDAEngine after "Failed to snap image": no frame
        if self.count in self.yield_none:
            yield None
            return
        meta = {
            "exposure_ms": 10.0,
            "runner_time_ms": 5.0 * self.count,
            "position": {"x": 1.0, "y": 2.0, "z": 3.0},
            "camera_device": "Cam",
            "property_values": ({"dev": "Filter", "prop": "Label", "val": "GFP"},),
        }
        if self.cameras == 1:
            yield frame_for(event), event, meta
            return
        for cam in range(self.cameras):
            sub = event.model_copy(update={"index": {**event.index, "cam": cam}})
            yield (
                frame_for(event) + 50 * cam,
                sub,
                {**meta, "camera_device": f"Cam{cam}"},
            )

    def teardown_event(self, event: useq.MDAEvent) -> None:
        """No hardware to reset."""

    def teardown_sequence(self, sequence: useq.MDASequence) -> None:
        """No hardware to release."""


def run_scripted(
    seq: Any,
    path: Path,
    engine: ScriptedEngine,
    attach: bool = False,
    handler: OMEStreamHandler | None = None,
) -> OMEStreamHandler:
    """Run `seq` on `engine` into a handler (made for `path` if not given),
    attached to the runner or as its `output=`."""
    runner = MDARunner()
    runner.set_engine(engine)
    handler = OMEStreamHandler(path) if handler is None else handler
    if attach:
        handler.attach(runner)
        runner.run(seq)
        handler.detach()
    else:
        runner.run(seq, output=handler)
    return handler


SEQ = useq.MDASequence(
    axis_order="tpcz",
    time_plan={"interval": 0, "loops": 2},
    stage_positions=[(0, 0, 0), {"x": 100, "y": 50, "z": 1, "name": "pos1"}],
    channels=["DAPI", "FITC"],
    z_plan={"range": 2, "step": 1},
)


def expected_tczyx(
    seq: useq.MDASequence, missing: set[int] = frozenset()
) -> dict[int, np.ndarray]:
    """Per position, the (t, c, z, y, x) data an index-placing writer stores."""
    sizes = seq.sizes
    out = {
        p: np.zeros((sizes["t"], sizes["c"], sizes["z"], *SHAPE), np.uint16)
        for p in range(sizes["p"])
    }
    for number, event in enumerate(seq):
        if number in missing:
            continue
        i = event.index
        out[i["p"]][i["t"], i["c"], i["z"]] = frame_for(event)
    return out


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
@pytest.mark.parametrize("attach", [False, True])
def test_failed_snaps_skips_and_none_leave_gaps_in_place(
    suffix: str, attach: bool, tmp_path: Path
) -> None:
    engine = ScriptedEngine(fail_snap={3}, skip={7, 8}, yield_none={20})
    handler = run_scripted(SEQ, tmp_path / f"run{suffix}", engine, attach=attach)
    assert handler.errors == []
    want = expected_tczyx(SEQ, missing={3, 7, 8, 20})
    out = handler.output_path
    assert out is not None
    if suffix == ".ome.zarr":
        for p, name in enumerate(["0", "pos1"]):
            np.testing.assert_array_equal(
                readers.read_tensorstore(out / name / "0"), want[p]
            )
        readers.validate_yaozarrs(out)
        status = json.loads((out / "zarr.json").read_text())["attributes"][
            "acquisition_status"
        ]
        assert status["frames_written"] == 20
        assert status["frames_skipped"] == 4
    else:
        for p in range(2):
            path = out / f"{out.name}_p{p:03d}.ome.tiff"
            got = readers.bioformats_pixels(path, series=p)
            np.testing.assert_array_equal(got, want[p])


def test_frame_metadata_keeps_hardware_state(tmp_path: Path) -> None:
    handler = run_scripted(SEQ, tmp_path / "m.ome.zarr", ScriptedEngine())
    out = handler.output_path
    assert out is not None
    records = json.loads((out / "pos1" / "zarr.json").read_text())["attributes"][
        "ome_stream"
    ]["frame_metadata"]
    assert len(records) == 12
    first = records[0]
    assert first["exposure_time"] == pytest.approx(0.01)
    assert first["position_x"] == 1.0
    assert first["camera_device"] == "Cam"
    assert first["property_values"] == [
        {"dev": "Filter", "prop": "Label", "val": "GFP"}
    ]
    assert first["channel"] == "DAPI"
    assert first["event_index"] == {"t": 0, "p": 1, "c": 0, "z": 0}
    assert first["storage_index"] == [0, 0, 0]
    root = json.loads((out / "zarr.json").read_text())["attributes"]
    assert root["pymmcore_plus"]["summary_metadata"]["image_infos"][0]["width"] == 48


def test_error_in_engine_closes_dataset_truthfully(tmp_path: Path) -> None:
    engine = ScriptedEngine(raise_at=5)
    runner = MDARunner()
    runner.set_engine(engine)
    handler = OMEStreamHandler(tmp_path / "e.ome.tiff")
    handler.attach(runner)
    with pytest.raises(RuntimeError, match="hardware boom"):
        runner.run(SEQ)
    out = handler.output_path
    assert out is not None
    assert handler.stream is not None
    assert handler.stream.closed
    info = readers.bioformats_info(out / f"{out.name}_p000.ome.tiff")
    assert info.is_ome_tiff
    assert info.warnings == []
    # (no signal says an engine error ended the run: attached, the runner's
    # status does)
    status = _acquisition_status(out, ".ome.tiff")
    assert status["finish_reason"] == "errored"
    assert (status["frames_written"], status["frames_never_arrived"]) == (5, 19)


@pytest.mark.parametrize("attached", [True, False], ids=["attach", "output"])
def test_a_last_event_without_a_frame_is_a_finished_run(
    attached: bool, tmp_path: Path
) -> None:
    """An event at the end that gives no frame (a SkipEvent here) leaves a
    frame that never came: attached, the runner says the run completed; as
    `output=`, nothing tells it from an engine error, so the status says
    "incomplete" (and the count shows which frames)."""
    runner = MDARunner()
    runner.set_engine(ScriptedEngine(skip=[23]))
    handler = OMEStreamHandler(tmp_path / "skip.ome.zarr")
    if attached:
        handler.attach(runner)
        runner.run(SEQ)
    else:
        runner.run(SEQ, output=handler)
    assert handler.wait_closed(timeout=60)
    out = handler.output_path
    assert out is not None
    status = _acquisition_status(out, ".ome.zarr")
    assert status["finish_reason"] == ("finished" if attached else "incomplete")
    assert (status["frames_written"], status["frames_never_arrived"]) == (23, 1)
    readers.validate_yaozarrs(out)


def test_cancel_closes_with_what_was_acquired(tmp_path: Path) -> None:
    runner = MDARunner()
    engine = ScriptedEngine()
    runner.set_engine(engine)
    handler = OMEStreamHandler(tmp_path / "c.ome.zarr")
    handler.attach(runner)
    runner.events.frameReady.connect(
        lambda *a: runner.cancel() if engine.count == 4 else None
    )
    runner.run(SEQ)
    out = handler.output_path
    assert out is not None
    status = json.loads((out / "zarr.json").read_text())["attributes"][
        "acquisition_status"
    ]
    assert status["finish_reason"] == "canceled"
    assert status["frames_written"] == 5
    assert status["frames_never_arrived"] == 19
    readers.validate_yaozarrs(out)


# ------------------------------- pymmcore-plus's relay losing sequenceFinished


class _Recorder:
    """A second `output=` handler: what the relay delivered."""

    def __init__(self) -> None:
        self.frames = 0
        self.finished = 0

    def frameReady(self, *_: Any) -> None:
        self.frames += 1

    def sequenceFinished(self, *_: Any) -> None:
        self.finished += 1


@pytest.fixture
def relay_loses_sequence_finished(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pymmcore-plus's race certain: its relay thread's stop flag is set
    before sequenceFinished is queued, and a relay that finds its queue
    empty in between ends without delivering it. Here the relay is let
    finish there, as a slow scheduler may."""
    from pymmcore_plus.mda import _thread_relay

    stop = _thread_relay.MDARelayThread.stop

    def stop_and_let_it_end(self: Any) -> None:
        stop(self)
        self.join(timeout=60)

    monkeypatch.setattr(_thread_relay.MDARelayThread, "stop", stop_and_let_it_end)


@pytest.mark.usefixtures("relay_loses_sequence_finished")
@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_a_run_is_closed_at_its_last_frame(suffix: str, tmp_path: Path) -> None:
    """Without sequenceFinished, the dataset is still complete when `run`
    returns: the handler closes it once the last frame is written."""
    runner = MDARunner()
    runner.set_engine(ScriptedEngine())
    handler = OMEStreamHandler(tmp_path / f"last{suffix}")
    recorder = _Recorder()
    runner.run(SEQ, output=[handler, recorder])
    assert (recorder.frames, recorder.finished) == (24, 0)  # the race happened
    assert handler.errors == []
    assert handler.stream is not None
    assert handler.stream.closed
    out = handler.output_path
    assert out is not None
    status = _acquisition_status(out, suffix)
    assert status["finish_reason"] == "finished"
    assert status["frames_written"] == 24
    want = expected_tczyx(SEQ)
    if suffix == ".ome.zarr":
        readers.validate_yaozarrs(out)
        attrs = json.loads((out / "pos1" / "zarr.json").read_text())["attributes"]
        assert len(attrs["ome_stream"]["frame_metadata"]) == 12
        assert "missing_frame_count" in attrs["ome_stream"]  # written at close
        np.testing.assert_array_equal(
            readers.read_tensorstore(out / "pos1" / "0"), want[1]
        )
    else:
        info = readers.bioformats_info(out / f"{out.name}_p001.ome.tiff")
        assert info.warnings == []
        assert len(info.ome.images[0].pixels.planes) == 12


def _events(n: int) -> Iterator[useq.MDAEvent]:
    return (useq.MDAEvent(index={"t": i}) for i in range(n))


@pytest.mark.usefixtures("relay_loses_sequence_finished")
@pytest.mark.parametrize("run", ["canceled", "errored", "open-ended"])
def test_a_run_is_closed_when_the_relay_ends_without_sequence_finished(
    run: str, tmp_path: Path
) -> None:
    """A run that ends before its last frame is closed at sequenceCanceled,
    when `run` returns; one that an engine error ends, or of unknown length
    (a generator of events), when the relay thread ends (`wait_closed`)."""
    runner = MDARunner()
    engine = ScriptedEngine(raise_at=5 if run == "errored" else None)
    runner.set_engine(engine)
    if run == "canceled":
        runner.events.frameReady.connect(
            lambda *a: runner.cancel() if engine.count == 4 else None
        )
    handler = OMEStreamHandler(tmp_path / "r.ome.zarr")
    recorder = _Recorder()
    outputs = [handler, recorder]
    if run == "errored":
        with pytest.raises(RuntimeError, match="hardware boom"):
            runner.run(SEQ, output=outputs)
    else:
        runner.run(SEQ if run == "canceled" else _events(7), output=outputs)
    assert recorder.finished == 0  # the race happened
    assert handler.stream is not None
    if run == "canceled":
        assert handler.stream.closed
    assert handler.wait_closed(timeout=60)
    assert handler.errors == []
    out = handler.output_path
    assert out is not None
    readers.validate_yaozarrs(out)
    status = _acquisition_status(out, ".ome.zarr")
    if run != "open-ended":
        assert status["finish_reason"] == run.replace("errored", "incomplete")
        assert status["frames_written"] == 5
        assert status["frames_never_arrived"] == 19
    else:
        assert status["finish_reason"] == "finished"
        assert status["frames_written"] == 7
        data = readers.read_tensorstore(out / "0")
        np.testing.assert_array_equal(data[:, 0, 0], [1000 * i + 1 for i in range(7)])


def test_the_status_lists_only_its_own_runs_errors(tmp_path: Path) -> None:
    """`handler.errors` keeps every run's; each run's status names its own."""
    runner = MDARunner()
    runner.set_engine(ScriptedEngine())
    handler = OMEStreamHandler(tmp_path / "twice.ome.zarr", overwrite=True)
    handler.attach(runner)
    runner.run(SEQ)
    handler.frameReady(np.zeros((3, 3), np.uint16), next(iter(SEQ)), {})  # closed
    assert len(handler.errors) == 1
    runner.run(SEQ)
    assert len(handler.errors) == 1
    out = handler.output_path
    assert out is not None
    assert _acquisition_status(out, ".ome.zarr")["handler_errors"] == []


def _acquisition_status(out: Path, suffix: str) -> dict[str, Any]:
    """The status the handler wrote, as a reader of the file finds it."""
    if suffix == ".ome.zarr":
        status: dict[str, Any] = readers.zarr_document(out)["attributes"][
            "acquisition_status"
        ]
        return status
    ome = readers.validate_ome_xml(
        readers.tiff_ome_xml(
            out if out.is_file() else out / f"{out.name}_p000.ome.tiff"
        )
    )
    assert ome.structured_annotations is not None
    (annotation,) = [
        a
        for a in ome.structured_annotations.map_annotations
        if a.namespace == "acquisition_status"
    ]
    # a value is JSON, or a string as it is
    return {
        m.k: m.value if m.k == "finish_reason" else json.loads(m.value)
        for m in annotation.value.ms
    }


def test_the_status_is_written_with_the_final_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status goes into the OME-XML written at close: the documents
    (every plane with its metadata) are serialised once, not once more for
    the status after close."""
    from ome_stream._formats.tiff.tifffile import TiffFileBackend

    calls = []
    for name in ("_write_documents", "_write_texts"):  # models, or close's text
        real = getattr(TiffFileBackend, name)

        def counting(self: Any, documents: Any, *args: Any, real: Any = real) -> None:
            calls.append(len(documents))
            real(self, documents, *args)

        monkeypatch.setattr(TiffFileBackend, name, counting)
    handler = run_scripted(SEQ, tmp_path / "s.ome.tiff", ScriptedEngine())
    assert handler.errors == []
    assert len(calls) == 1
    out = handler.output_path
    assert out is not None
    status = _acquisition_status(out, ".ome.tiff")
    assert status["finish_reason"] == "finished"
    assert status["frames_written"] == 24
    assert status["frames_skipped"] == 0


class _WaitingEngine(ScriptedEngine):
    """Holds event `wait_at` until `failed` is set (the writer has failed),
    so that the appends after it see the error."""

    def __init__(self, wait_at: int | None, failed: threading.Event) -> None:
        super().__init__()
        self.wait_at = wait_at
        self.failed = failed

    def setup_event(self, event: useq.MDAEvent) -> None:
        super().setup_event(event)
        if self.count == self.wait_at:
            assert self.failed.wait(10), "the injected failure never happened"


@pytest.mark.parametrize("seen_by", ["append", "close"])
@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_the_status_counts_frames_lost_to_a_full_disk(
    suffix: str, seen_by: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk is full for one frame's write (an early one, or the last)
    and space is freed before close: the handler records the error once - by
    the appends after it, or else by the close after the last frame - and
    the status says how many frames the dataset holds (corrected after
    close), which is what the file holds."""
    from ome_stream import WriterError

    fail_at = 10 if seen_by == "append" else 24  # the n-th frame written
    failed = threading.Event()
    if suffix == ".ome.zarr":
        from ome_stream._formats.zarr.tensorstore import TensorStoreBackend
        from tests.test_zarr_backends import _FailedWrite

        class Failed(_FailedWrite):  # and says when its failure is seen
            def result(self) -> None:
                failed.set()
                super().result()

        real_region = TensorStoreBackend._write_region
        writes: list[int] = []

        def write_region(self: Any, array: Any, region: Any, data: Any) -> Any:
            writes.append(1)
            if len(writes) == fail_at:
                return Failed()
            future = real_region(self, array, region, data)
            future.result()  # done at once: the failure is seen when written
            return future

        monkeypatch.setattr(TensorStoreBackend, "_write_region", write_region)
    else:
        from ome_stream._formats.tiff.tifffile import TiffFileBackend

        real_page = TiffFileBackend._write_page
        pages: list[int] = []

        def write_page(self: Any, image: Any, frame: Any) -> None:
            pages.append(1)
            if len(pages) == fail_at:
                failed.set()
                raise OSError(28, "No space left on device")
            real_page(self, image, frame)

        monkeypatch.setattr(TiffFileBackend, "_write_page", write_page)
    engine = _WaitingEngine(fail_at + 2 if seen_by == "append" else None, failed)
    handler = run_scripted(SEQ, tmp_path / f"full{suffix}", engine)
    assert failed.is_set()
    assert handler.errors
    assert all(isinstance(e.error, WriterError) for e in handler.errors)
    callbacks = {e.callback for e in handler.errors}
    if seen_by == "append":
        assert callbacks == {"frameReady"}  # not raised again at the end
    else:  # by the close after the last frame
        assert callbacks == {"frameReady (closing after the last frame)"}
    stream = handler.stream
    assert stream is not None
    assert stream.closed
    assert 0 < stream.frames_written < 24
    monkeypatch.undo()
    out = handler.output_path
    assert out is not None
    status = _acquisition_status(out, suffix)
    assert status["frames_written"] == stream.frames_written
    if suffix == ".ome.zarr":
        held = 0
        for name in ("0", "pos1"):
            held += 12 - len(readers.zarr_missing_frames(out / name))
        readers.validate_yaozarrs(out)
    else:
        ome = readers.validate_ome_xml(
            readers.tiff_ome_xml(out / f"{out.name}_p000.ome.tiff")
        )
        held = sum(len(image.pixels.planes) for image in ome.images)
    assert held == stream.frames_written


def test_generator_runs_fall_back_to_an_unbounded_axis(tmp_path: Path) -> None:
    events = (useq.MDAEvent(index={"t": i}) for i in range(5))
    handler = run_scripted(events, tmp_path / "g.ome.zarr", ScriptedEngine())
    out = handler.output_path
    assert out is not None
    data = readers.read_tensorstore(out / "0")
    assert data.shape == (5, *SHAPE)
    np.testing.assert_array_equal(data[:, 0, 0], [1, 1001, 2001, 3001, 4001])


def test_sequence_finished_without_start_is_harmless(tmp_path: Path) -> None:
    handler = OMEStreamHandler(tmp_path / "never.ome.zarr")
    handler.sequenceFinished(SEQ)
    assert handler.errors == []
    assert not (tmp_path / "never.ome.zarr").exists()


def test_exception_in_callback_is_recorded_and_later_frames_still_written(
    tmp_path: Path,
) -> None:
    handler = run_scripted(SEQ, tmp_path / "x.ome.zarr", ScriptedEngine())
    handler.frameReady(np.zeros((3, 3), np.uint16), next(iter(SEQ)), {})  # after close
    assert len(handler.errors) == 1
    out = handler.output_path
    assert out is not None
    want = expected_tczyx(SEQ)
    np.testing.assert_array_equal(readers.read_tensorstore(out / "0" / "0"), want[0])


# ------------------------------------------------------ simulated microscope


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_real_mda_on_simulated_microscope(suffix: str, tmp_path: Path) -> None:
    core = simulated_core(image_shape=SHAPE)
    handler = OMEStreamHandler(tmp_path / f"sim{suffix}")
    core.mda.run(SEQ, output=handler)
    assert handler.errors == []
    out = handler.output_path
    assert out is not None
    if suffix == ".ome.zarr":
        readers.validate_yaozarrs(out)
        readers.validate_ome_zarr_models(out)
        scenes = readers.read_bioio(out)
        assert [s.channel_names for s in scenes] == [["DAPI", "FITC"]] * 2
        assert scenes[0].shape == (2, 2, 3, *SHAPE)
        assert scenes[0].physical_pixel_sizes[1:] == pytest.approx((0.65, 0.65))
        meta = json.loads((out / "pos1" / "zarr.json").read_text())["attributes"]
        assert meta["ome_stream"]["position"]["x_coord"] == 100
        assert meta["ome_stream"]["frame_metadata"][0]["position_x"] == pytest.approx(
            100
        )
    else:
        path = out / f"{out.name}_p001.ome.tiff"
        info = readers.bioformats_info(path)
        assert info.is_ome_tiff
        assert info.warnings == []
        image = info.ome.images[1]
        assert image.name == "pos1"
        assert [c.name for c in image.pixels.channels] == ["DAPI", "FITC"]
        assert image.pixels.physical_size_x == pytest.approx(0.65)
        assert image.stage_label.x == pytest.approx(100)
        plane = image.pixels.planes[0]
        assert plane.position_x == pytest.approx(100)
        assert plane.position_x_unit.value == "µm"


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_multi_camera_run_writes_one_image_per_camera(
    suffix: str, tmp_path: Path
) -> None:
    seq = useq.MDASequence(
        axis_order="tcz",
        time_plan={"interval": 0, "loops": 2},
        channels=["DAPI", "FITC"],
        z_plan={"range": 1, "step": 1},
    )
    engine = ScriptedEngine(cameras=2, fail_snap={2})
    handler = run_scripted(seq, tmp_path / f"cam{suffix}", engine)
    assert handler.errors == []
    out = handler.output_path
    assert out is not None
    events = list(seq)
    for cam, name in enumerate(["Cam0", "Cam1"]):
        want = np.zeros((2, 2, 2, *SHAPE), np.uint16)
        for number, event in enumerate(events):
            if number != 2:
                i = event.index
                want[i["t"], i["c"], i["z"]] = frame_for(event) + 50 * cam
        if suffix == ".ome.zarr":
            readers.validate_yaozarrs(out)
            np.testing.assert_array_equal(
                readers.read_tensorstore(out / name / "0"), want
            )
        else:
            path = out / f"{out.name}_p{cam:03d}.ome.tiff"
            info = readers.bioformats_info(path)
            assert info.is_ome_tiff
            assert [s.name for s in info.series] == ["Cam0", "Cam1"]
            np.testing.assert_array_equal(
                readers.bioformats_pixels(path, series=cam, info=info), want
            )


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_multi_camera_with_positions_writes_an_image_per_position_and_camera(
    suffix: str, tmp_path: Path
) -> None:
    engine = ScriptedEngine(cameras=2, fail_snap={5})
    handler = run_scripted(SEQ, tmp_path / f"mc{suffix}", engine)
    assert handler.errors == []
    assert handler.settings is not None
    names = [p.name for p in handler.settings.positions]
    assert len(names) == 4
    assert names[1].endswith("_Cam1")
    assert names[2] == "pos1_Cam0"
    out = handler.output_path
    assert out is not None
    events = list(SEQ)
    for image in range(4):
        p, cam = divmod(image, 2)
        want = np.zeros((2, 2, 3, *SHAPE), np.uint16)
        for number, event in enumerate(events):
            i = event.index
            if number != 5 and i["p"] == p:
                want[i["t"], i["c"], i["z"]] = frame_for(event) + 50 * cam
        if suffix == ".ome.zarr":
            series = json.loads((out / "OME" / "zarr.json").read_text())
            group = series["attributes"]["ome"]["series"][image]
            got = readers.read_tensorstore(out / group / "0")
            np.testing.assert_array_equal(got, want)
        else:
            path = out / f"{out.name}_p{image:03d}.ome.tiff"
            got = readers.bioformats_pixels(path, series=image)
            np.testing.assert_array_equal(got, want)
    if suffix == ".ome.zarr":
        readers.validate_yaozarrs(out)
    else:
        info = readers.bioformats_info(out / f"{out.name}_p000.ome.tiff")
        assert info.warnings == []
        assert [s.name for s in info.series] == names


def test_pause_and_resume_keep_every_frame(tmp_path: Path) -> None:
    runner = MDARunner()
    engine = ScriptedEngine()
    runner.set_engine(engine)
    handler = OMEStreamHandler(tmp_path / "p.ome.zarr")
    handler.attach(runner)
    toggles: list[bool] = []
    runner.events.sequencePauseToggled.connect(toggles.append)

    def pause_once(*_: Any) -> None:
        if engine.count == 3 and not toggles:
            runner.set_paused(True)
            threading.Timer(0.3, runner.set_paused, args=(False,)).start()

    runner.events.frameReady.connect(pause_once)
    runner.run(SEQ)
    assert toggles == [True, False]
    out = handler.output_path
    assert out is not None
    want = expected_tczyx(SEQ)
    np.testing.assert_array_equal(readers.read_tensorstore(out / "pos1" / "0"), want[1])


# ----------------------------------------- grids and plates on the simulator


def _capture(core: Any) -> dict[tuple[tuple[str, int], ...], np.ndarray]:
    """What the camera produced, keyed by event index (recorded by a listener
    of our own, independent of the handler)."""
    frames: dict[tuple[tuple[str, int], ...], np.ndarray] = {}

    def keep(image: np.ndarray, event: useq.MDAEvent, meta: Any = None) -> None:
        frames[tuple(sorted(event.index.items()))] = np.array(image)

    core.mda.events.frameReady.connect(keep)
    return frames


GRID_SEQ = useq.MDASequence(
    axis_order="tpgcz",
    time_plan={"interval": 0, "loops": 2},
    stage_positions=[
        {"x": 0, "y": 0, "z": 0, "name": "left"},
        {"x": 400, "y": 300, "z": 2, "name": "right"},
    ],
    grid_plan={"rows": 1, "columns": 2, "fov_width": 40, "fov_height": 30},
    channels=["DAPI", "FITC"],
    z_plan={"range": 1, "step": 1},
)


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_real_mda_with_grid_plan(suffix: str, tmp_path: Path) -> None:
    """2 positions x a 1x2 grid = 4 images, each at its own stage coordinates."""
    core = simulated_core(image_shape=SHAPE)
    captured = _capture(core)
    handler = OMEStreamHandler(tmp_path / f"grid{suffix}")
    core.mda.run(GRID_SEQ, output=handler)
    assert handler.errors == []
    out = handler.output_path
    assert out is not None
    events = list(GRID_SEQ)
    images: dict[tuple[int, int], list[useq.MDAEvent]] = {}
    for event in events:
        images.setdefault((event.index["p"], event.index["g"]), []).append(event)
    assert len(images) == 4

    def want(image_events: list[useq.MDAEvent]) -> np.ndarray:
        data = np.zeros((2, 2, 2, *SHAPE), np.uint16)  # t, c, z
        for e in image_events:
            i = e.index
            data[i["t"], i["c"], i["z"]] = captured[tuple(sorted(i.items()))]
        return data

    if suffix == ".ome.zarr":
        readers.validate_yaozarrs(out)
        readers.validate_ome_zarr_models(out)
        series = json.loads((out / "OME" / "zarr.json").read_text())["attributes"]
        names = series["ome"]["series"]
        # the tiles' names, as OME-TIFF names their Images (they were
        # "left_r0_c0_0_0": the cell twice)
        assert names == ["left_r0_c0", "left_r0_c1", "right_r0_c0", "right_r0_c1"]
        for name, (_key, image_events) in zip(names, sorted(images.items())):
            first = image_events[0]
            assert name.startswith(first.pos_name.split("_")[0])
            np.testing.assert_array_equal(
                readers.read_tensorstore(out / name / "0"), want(image_events)
            )
            attrs = json.loads((out / name / "zarr.json").read_text())["attributes"]
            section = attrs["ome_stream"]
            assert section["position"]["x_coord"] == pytest.approx(first.x_pos)
            assert section["position"]["y_coord"] == pytest.approx(first.y_pos)
            assert section["frame_metadata"][0]["position_x"] == pytest.approx(
                first.x_pos
            )
    else:
        path = out / f"{out.name}_p000.ome.tiff"
        info = readers.bioformats_info(path)
        assert info.is_ome_tiff
        assert info.warnings == []
        assert len(info.series) == 4
        assert [image.name for image in info.ome.images] == [
            "left_r0_c0",
            "left_r0_c1",
            "right_r0_c0",
            "right_r0_c1",
        ]
        for s, (_key, image_events) in enumerate(sorted(images.items())):
            first = image_events[0]
            image = info.ome.images[s]
            assert image.stage_label.x == pytest.approx(first.x_pos)
            assert image.stage_label.y == pytest.approx(first.y_pos)
            assert [c.name for c in image.pixels.channels] == ["DAPI", "FITC"]
            np.testing.assert_array_equal(
                readers.bioformats_pixels(path, series=s, info=info),
                want(image_events),
            )


AF_SEQ = useq.MDASequence(
    axis_order="tpc",
    time_plan={"interval": 0, "loops": 2},
    stage_positions=[{"x": 0, "y": 0, "z": 0}, {"x": 400, "y": 300, "z": 2}],
    channels=["DAPI", "FITC"],
    autofocus_plan=useq.AxesBasedAF(autofocus_device_name="Z", axes=("p",)),
)


@pytest.mark.parametrize("attached", [False, True], ids=["output", "attach"])
@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_real_mda_with_an_autofocus_plan(
    suffix: str, attached: bool, tmp_path: Path
) -> None:
    """useq yields an autofocus event before each position's frames, with
    the index of the first of them; it takes no frame, so every frame is
    placed as without it: 8 written, none skipped or lost."""
    events = list(AF_SEQ)
    assert sum(type(e.action).__name__ == "HardwareAutofocus" for e in events) == 4
    core = simulated_core(image_shape=SHAPE)
    captured = _capture(core)
    handler = OMEStreamHandler(tmp_path / f"af{suffix}")
    if attached:
        handler.attach(core)
        core.mda.run(AF_SEQ)
    else:
        core.mda.run(AF_SEQ, output=handler)
    assert handler.wait_closed(timeout=60)
    assert handler.errors == []
    out = handler.output_path
    assert out is not None
    status = _acquisition_status(out, suffix)
    assert status["finish_reason"] == "finished"
    counts = ("frames_written", "frames_skipped", "frames_never_arrived")
    assert [status[k] for k in counts] == [8, 0, 0]
    assert len(captured) == 8
    for p in range(2):
        want = np.zeros((2, 2, *SHAPE), np.uint16)  # t, c
        for t in range(2):
            for c in range(2):
                want[t, c] = captured[(("c", c), ("p", p), ("t", t))]
        if suffix == ".ome.zarr":
            readers.validate_yaozarrs(out)
            assert readers.zarr_missing_frames(out / str(p)) == []
            got = readers.read_tensorstore(out / str(p) / "0")
        else:
            path = out / f"{out.name}_p000.ome.tiff"
            info = readers.bioformats_info(path)
            assert info.warnings == []
            got = readers.bioformats_pixels(path, series=p, info=info)[:, :, 0]
        np.testing.assert_array_equal(got, want)


PLATE_SEQ = useq.MDASequence(
    axis_order="tpc",
    time_plan={"interval": 0, "loops": 2},
    channels=["DAPI", "FITC"],
    stage_positions=useq.WellPlatePlan(
        plate="96-well",
        a1_center_xy=(0, 0),
        selected_wells=([0, 1], [0, 2]),  # A1 and B3
        well_points_plan=useq.GridRowsColumns(
            rows=1, columns=2, fov_width=50, fov_height=50
        ),
    ),
)


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_real_mda_with_well_plate_plan(suffix: str, tmp_path: Path) -> None:
    core = simulated_core(image_shape=SHAPE)
    captured = _capture(core)
    handler = OMEStreamHandler(tmp_path / f"plate{suffix}")
    core.mda.run(PLATE_SEQ, output=handler)
    assert handler.errors == []
    out = handler.output_path
    assert out is not None
    by_position: dict[int, list[useq.MDAEvent]] = {}
    for event in PLATE_SEQ:
        by_position.setdefault(event.index["p"], []).append(event)
    # p -> (well row, well column, field within the well)
    fields = {0: ("A", "1", 0), 1: ("A", "1", 1), 2: ("B", "3", 0), 3: ("B", "3", 1)}

    def want(events: list[useq.MDAEvent]) -> np.ndarray:
        data = np.zeros((2, 2, 1, *SHAPE), np.uint16)  # t, c, z
        for e in events:
            i = e.index
            data[i["t"], i["c"], 0] = captured[tuple(sorted(i.items()))]
        return data

    if suffix == ".ome.zarr":
        readers.validate_yaozarrs(out)
        readers.validate_ome_zarr_models(out)
        plate = json.loads((out / "zarr.json").read_text())["attributes"]["ome"]
        wells = sorted(w["path"] for w in plate["plate"]["wells"])
        assert wells == ["A/1", "B/3"]
        for p, (row, col, field) in fields.items():
            group = out / row / col / str(field)
            data = readers.read_tensorstore(group / "0")  # t, c, y, x
            np.testing.assert_array_equal(data, want(by_position[p])[:, :, 0])
            attrs = json.loads((group / "zarr.json").read_text())["attributes"]
            first = by_position[p][0]
            assert attrs["ome_stream"]["position"]["x_coord"] == pytest.approx(
                first.x_pos
            )
    else:
        path = out / f"{out.name}_p000.ome.tiff"
        info = readers.bioformats_info(path)
        assert info.is_ome_tiff
        assert info.warnings == []
        assert len(info.series) == 4
        plate = info.ome.plates[0]
        well_names = sorted((w.row, w.column) for w in plate.wells)
        assert well_names == [(0, 0), (1, 2)]
        for p in range(4):
            first = by_position[p][0]
            assert info.ome.images[p].stage_label.x == pytest.approx(first.x_pos)
            np.testing.assert_array_equal(
                readers.bioformats_pixels(path, series=p, info=info),
                want(by_position[p]),
            )


def test_handler_backend_option(tmp_path: Path) -> None:
    core = simulated_core(image_shape=SHAPE)
    seq = useq.MDASequence(channels=["DAPI"], time_plan={"interval": 0, "loops": 2})
    handler = OMEStreamHandler(tmp_path / "b.ome.zarr", backend="tensorstore")
    core.mda.run(seq, output=handler)
    assert handler.errors == []
    assert handler.settings is not None
    assert handler.settings.format.backend == "tensorstore"
    readers.validate_yaozarrs(tmp_path / "b.ome.zarr")
    with pytest.raises(ValueError, match="contradicts"):
        OMEStreamHandler(
            tmp_path / "c.ome.zarr", format="tifffile", backend="tensorstore"
        )


# ------------------------------------------------------------ frame copies


def _record_append_copies(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The `copy` argument of every `OMEStream.append` call, as it happens."""
    from ome_stream import OMEStream

    copies: list[bool] = []
    append = OMEStream.append

    def spy(self: OMEStream, frame: np.ndarray, *args: Any, **kwargs: Any) -> None:
        copies.append(kwargs.get("copy", True))
        append(self, frame, *args, **kwargs)

    monkeypatch.setattr(OMEStream, "append", spy)
    return copies


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_frames_are_queued_uncopied_and_written_as_the_camera_gave_them(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The handler queues pymmcore-plus's arrays themselves: this holds only
    # if every frame is a new array nobody refills, on the snap path and on
    # the hardware-sequenced path of the simulated microscope alike.
    copies = _record_append_copies(monkeypatch)
    core = simulated_core(image_shape=SHAPE)
    seen: list[np.ndarray] = []
    sequenced: list[bool] = []

    def listener(image: np.ndarray, event: Any, meta: dict[str, Any]) -> None:
        seen.append(image.copy())
        sequenced.append(bool(meta.get("hardware_triggered")))

    core.mda.events.frameReady.connect(listener)
    burst = useq.MDASequence(time_plan={"interval": 0, "loops": 6})  # sequenced
    snaps = useq.MDASequence(channels=["DAPI", "FITC"], z_plan={"range": 2, "step": 1})
    for name, seq in (("burst", burst), ("snaps", snaps)):
        core.mda.engine.use_hardware_sequencing = name == "burst"
        seen.clear()
        copies.clear()
        sequenced.clear()
        handler = OMEStreamHandler(tmp_path / f"{name}{suffix}")
        core.mda.run(seq, output=handler)
        assert handler.errors == []
        assert sequenced == [name == "burst"] * len(seen)
        assert copies == [False] * len(seen)
        assert len(seen) == len(list(seq))
        assert len({frame.tobytes() for frame in seen}) > 1  # frames differ
        out = handler.output_path
        assert out is not None
        data = readers.read_single_image(out)
        np.testing.assert_array_equal(data.reshape(-1, *SHAPE), np.stack(seen))


def test_copy_frames_protects_from_a_listener_that_changes_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies = _record_append_copies(monkeypatch)
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 4})
    runner = MDARunner()
    runner.set_engine(ScriptedEngine())
    path = tmp_path / "copied.ome.tiff"
    handler = OMEStreamHandler(path, copy_frames=True)
    handler.attach(runner)
    # connected after the handler: changes each frame once it is queued
    runner.events.frameReady.connect(lambda image, *_: image.fill(7))
    runner.run(seq)
    handler.detach()
    assert handler.errors == []
    assert copies == [True] * 4
    want = np.stack([frame_for(event) for event in seq])
    np.testing.assert_array_equal(readers.read_single_image(path), want)


def test_an_output_that_exists_is_refused_before_the_run(tmp_path: Path) -> None:
    """Without overwrite, an output that exists is refused when the handler
    is made, before the microscope acquires anything (the whole run was
    acquired and every frame dropped), and left as it was."""
    out = tmp_path / "taken.ome.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        OMEStreamHandler(out)
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("attach", [True, False])
def test_a_run_whose_dataset_cannot_be_made_is_canceled(
    attach: bool, tmp_path: Path
) -> None:
    """The output appears between the handler's making and the run (another
    program wrote it): the run's dataset cannot be made. The error is
    recorded once (it was once per frame), the frames are counted dropped,
    and a run the handler is attached to is canceled at once: the
    microscope does not acquire frames that cannot be kept."""
    out = tmp_path / "late.ome.zarr"
    handler = OMEStreamHandler(out)
    out.mkdir()
    engine = ScriptedEngine()
    run_scripted(SEQ, out, engine, attach, handler)
    assert [(e.callback, type(e.error)) for e in handler.errors] == [
        ("sequenceStarted", FileExistsError)
    ]
    assert not any(out.iterdir())  # (left as it was)
    acquired = engine.count + 1
    assert handler.frames_dropped == acquired
    if attach:
        assert acquired <= 1  # (canceled before or at its first event)
    else:
        assert acquired == 24  # (an `output=` handler cannot cancel it)


def test_a_run_whose_disk_fills_is_canceled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attached, a run whose writing fails (a full disk) is canceled once
    the failure is seen, the error recorded once: the dataset is closed
    with what was written, and the frames acquired after the failure are
    counted dropped."""
    from ome_stream import WriterError
    from ome_stream._formats.tiff.tifffile import TiffFileBackend

    failed = threading.Event()
    real_page = TiffFileBackend._write_page
    pages: list[int] = []

    def write_page(self: Any, image: Any, frame: Any) -> None:
        pages.append(1)
        if len(pages) == 5:
            failed.set()
            raise OSError(28, "No space left on device")
        real_page(self, image, frame)

    monkeypatch.setattr(TiffFileBackend, "_write_page", write_page)
    engine = _WaitingEngine(7, failed)
    handler = run_scripted(SEQ, tmp_path / "full.ome.tiff", engine, attach=True)
    monkeypatch.undo()
    assert [(e.callback, type(e.error)) for e in handler.errors] == [
        ("frameReady", WriterError)
    ]
    acquired = engine.count + 1
    assert acquired < 24
    stream = handler.stream
    assert stream is not None
    assert stream.closed
    assert stream.frames_written == 4
    assert handler.frames_dropped == acquired - stream.frames_appended
    out = handler.output_path
    assert out is not None
    assert _acquisition_status(out, ".ome.tiff")["frames_written"] == 4


@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_grid_tiles_are_recorded_where_the_stage_went(
    suffix: str, tmp_path: Path
) -> None:
    """A grid planned with another field of view than the camera's, its
    sequence iterated before the run (a progress bar's `len(list(seq))`):
    useq keeps those events, pymmcore-plus then sets the grid's field of
    view to the camera's, and the stage goes where the kept events say.
    Each tile's recorded position is that (it was the grid re-laid with
    the camera's field of view: tens of micrometers off)."""
    seq = useq.MDASequence(
        axis_order="pgc",
        stage_positions=[{"x": 100, "y": 200, "z": 0, "name": "P1"}],
        grid_plan={"rows": 2, "columns": 2, "fov_width": 80, "fov_height": 60},
        channels=["DAPI"],
    )
    assert len(list(seq)) == 4  # (iterated before the run)
    core = simulated_core(image_shape=SHAPE)  # (another field of view)
    went: list[tuple[float, float]] = []
    core.mda.events.frameReady.connect(
        lambda image, event, meta: went.append(
            (meta["position"]["x"], meta["position"]["y"])
        )
    )
    handler = OMEStreamHandler(tmp_path / f"tiles{suffix}")
    core.mda.run(seq, output=handler)
    assert handler.wait_closed(10)
    assert handler.errors == []
    out = handler.output_path
    assert out is not None
    assert len(set(went)) == 4
    if suffix == ".ome.zarr":
        readers.validate_yaozarrs(out)
        names = json.loads((out / "OME" / "zarr.json").read_text())["attributes"]
        recorded = []
        for name in names["ome"]["series"]:
            attrs = json.loads((out / name / "zarr.json").read_text())["attributes"]
            position = attrs["ome_stream"]["position"]
            recorded.append((position["x_coord"], position["y_coord"]))
    else:
        ome = readers.validate_ome_xml(
            readers.tiff_ome_xml(out / f"{out.name}_p000.ome.tiff")
        )
        recorded = [(i.stage_label.x, i.stage_label.y) for i in ome.images]
    assert [v for xy in recorded for v in xy] == pytest.approx(
        [v for xy in went for v in xy]
    )


@pytest.mark.parametrize("loops", [3, 2])
@pytest.mark.parametrize("suffix", [".ome.zarr", ".ome.tiff"])
def test_a_channel_taken_at_some_timepoints_keeps_the_channel_axis(
    suffix: str, loops: int, tmp_path: Path
) -> None:
    """FITC taken every other timepoint (`acquire_every=2`) at one plane
    (`do_stack=False`), DAPI at every timepoint and plane: the dataset is
    the t x c x z array, each frame in its place, the frames the sequence
    never takes recorded missing (they were all laid along one unbounded
    axis, the channel axis lost). With 2 loops the sequence ends on a
    frame before the array's last (FITC is not taken at t=1)."""
    seq = useq.MDASequence(
        axis_order="tcz",
        time_plan={"interval": 0, "loops": loops},
        channels=[
            {"config": "DAPI"},
            {"config": "FITC", "acquire_every": 2, "do_stack": False},
        ],
        z_plan={"range": 2, "step": 1},
    )
    core = simulated_core(image_shape=SHAPE)
    captured = _capture(core)
    handler = OMEStreamHandler(tmp_path / f"every{suffix}")
    core.mda.run(seq, output=handler)
    assert handler.wait_closed(10)
    assert handler.errors == []
    out = handler.output_path
    assert out is not None
    taken = {(i["t"], i["c"], i["z"]) for i in (dict(k) for k in captured)}
    assert len(taken) == 3 * loops + len(range(0, loops, 2))
    grid = {(t, c, z) for t in range(loops) for c in range(2) for z in range(3)}
    if suffix == ".ome.zarr":
        readers.validate_yaozarrs(out)
        data = readers.read_tensorstore(out / "0")
        missing = {tuple(i) for i in readers.zarr_missing_frames(out)}
        channels = [
            c["label"]
            for c in readers.zarr_document(out)["attributes"]["ome"]["omero"][
                "channels"
            ]
        ]
    else:
        ome = readers.validate_ome_xml(readers.tiff_ome_xml(out))
        data = readers.tifffile_ome_series(out)[0]
        missing = {(t, c, z) for z, c, t in readers.tiff_missing_planes(ome)}
        channels = [c.name for c in ome.images[0].pixels.channels]
    assert channels == ["DAPI", "FITC"]
    assert data.shape == (loops, 2, 3, *SHAPE)
    assert missing == grid - taken
    for key, frame in captured.items():
        i = dict(key)
        np.testing.assert_array_equal(data[i["t"], i["c"], i["z"]], frame)
    status = _acquisition_status(out, suffix)
    assert status["finish_reason"] == "finished"
    assert status["frames_written"] == len(taken)
    assert status["frames_not_planned"] == len(grid - taken)
    assert status["frames_never_arrived"] == 0


class _NaNSummaryEngine(ScriptedEngine):
    """Its summary metadata holds a NaN, which JSON metadata refuses."""

    def setup_sequence(self, sequence: useq.MDASequence) -> dict[str, Any]:
        return {**super().setup_sequence(sequence), "focus": float("nan")}


@pytest.mark.parametrize("attach", [True, False])
def test_summary_metadata_that_cannot_be_kept_does_not_stop_the_run(
    attach: bool, tmp_path: Path
) -> None:
    """The dataset is made, then the summary metadata cannot be stored (a
    NaN): the error is recorded, and every frame is still written (the run
    was canceled, or every frame dropped)."""
    handler = run_scripted(SEQ, tmp_path / "nan.ome.zarr", _NaNSummaryEngine(), attach)
    assert [e.callback for e in handler.errors] == [
        "sequenceStarted (summary metadata)"
    ]
    assert handler.frames_dropped == 0
    stream = handler.stream
    assert stream is not None
    assert stream.frames_written == 24


@pytest.mark.parametrize(
    ("path", "options", "taken"),
    [
        ("run.ome.tiff", {}, "run"),  # (a file per position: run/)
        ("run", {"format": "ome-zarr"}, "run.ome.zarr"),
    ],
)
def test_the_output_a_run_would_write_is_checked_when_the_handler_is_made(
    path: str, options: dict[str, Any], taken: str, tmp_path: Path
) -> None:
    """The handler's path is not always where a run writes: a multi-position
    OME-TIFF writes the directory named as the file, a path without suffix
    gains the format's. Either, existing, is refused when the handler is
    made (it was acquired in full and dropped)."""
    (tmp_path / taken).mkdir()
    if taken == "run":  # (an earlier run's directory: its files)
        (tmp_path / "run" / "run_p000.ome.tiff").write_bytes(b"II*\0")
    with pytest.raises(FileExistsError, match=f"{taken} already exists"):
        OMEStreamHandler(tmp_path / path, **options)
    OMEStreamHandler(tmp_path / path, overwrite=True, **options)  # (as asked)


def test_a_directory_of_another_use_beside_a_tiff_path_is_left_alone(
    tmp_path: Path,
) -> None:
    """`cells/` holding other files, and a handler for `cells.ome.tiff`: a
    run of one position writes the file only, so the handler is not
    refused (it was: suggesting overwrite=True, which would replace
    `cells/` if the run had several positions)."""
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "notes.txt").write_text("mine")
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 2})
    handler = run_scripted(seq, tmp_path / "cells.ome.tiff", ScriptedEngine())
    assert handler.errors == []
    assert handler.output_path == tmp_path / "cells.ome.tiff"
    assert (tmp_path / "cells" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("attach", [True, False])
def test_frames_never_taken_are_not_counted_as_never_arrived(
    attach: bool, tmp_path: Path
) -> None:
    """FITC at every other timepoint, and the run's last snap fails: the
    status counts that one frame as never arrived, not the frames the
    sequence never takes (those are `frames_not_planned`). Attached, the
    runner says the run completed; as `output=`, it is "incomplete"."""
    seq = useq.MDASequence(
        axis_order="tcz",
        time_plan={"interval": 0, "loops": 2},
        channels=[{"config": "DAPI"}, {"config": "FITC", "acquire_every": 2}],
        z_plan={"range": 2, "step": 1},
    )
    n_events = len(list(seq.model_copy(deep=True)))  # 9 of the 12 frames
    assert n_events == 9
    engine = ScriptedEngine(fail_snap=[n_events - 1])
    handler = run_scripted(seq, tmp_path / f"last{attach}.ome.zarr", engine, attach)
    assert handler.wait_closed(10)
    out = handler.output_path
    assert out is not None
    status = _acquisition_status(out, ".ome.zarr")
    assert status["frames_not_planned"] == 3
    assert status["frames_never_arrived"] == 1
    assert status["frames_written"] == 8
    assert status["finish_reason"] == ("finished" if attach else "incomplete")


def test_tiles_laid_out_before_the_run_are_written_as_they_came(
    tmp_path: Path,
) -> None:
    """A grid whose number of tiles depends on the field of view, its
    sequence iterated before the run: the runner takes the tiles of the
    planned field of view, the grid plan then gives the camera's. The
    frames do not fit the array the plans give now: each is written as it
    comes, along one axis (with its event index), and the log says why
    (images stood empty, the run "incomplete")."""
    seq = useq.MDASequence(
        axis_order="gc",
        grid_plan={"width": 100, "height": 60, "fov_width": 60, "fov_height": 60},
        channels=["DAPI"],
    )
    tiles = len(list(seq))  # (kept by useq: the runner takes these)
    core = simulated_core(image_shape=SHAPE)  # (another field of view)
    handler = OMEStreamHandler(tmp_path / "edges.ome.zarr")
    with _logged() as logged:
        core.mda.run(seq, output=handler)
        assert handler.wait_closed(10)
    assert handler.errors == []
    assert "do not lay out as its plans now do" in "".join(logged)
    stream = handler.stream
    assert stream is not None
    assert stream.frames_written == tiles
    out = handler.output_path
    assert out is not None
    assert readers.read_tensorstore(out / "0").shape[0] == tiles


def test_a_settings_warning_does_not_stop_the_run(tmp_path: Path) -> None:
    """A storage order OME-Zarr does not allow warns at create_stream;
    where warnings are errors (as in this test suite), the handler logs it
    and writes the run (it was recorded as the start's failure: the run
    canceled, or every frame dropped)."""
    handler = OMEStreamHandler(
        tmp_path / "order.ome.zarr", storage_order=["c", "t", "p", "z", "y", "x"]
    )
    runner = MDARunner()
    runner.set_engine(ScriptedEngine())
    handler.attach(runner)
    with _logged() as logged:
        runner.run(SEQ)
    handler.detach()
    assert handler.errors == []
    assert "OME-Zarr 0.5 does not allow" in "".join(logged)
    stream = handler.stream
    assert stream is not None
    assert stream.frames_written == 24


@contextlib.contextmanager
def _logged() -> Iterator[list[str]]:
    """The messages the handler logs at WARNING or above meanwhile."""
    import logging

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("ome_stream.mmcore")
    keep = Keep(logging.WARNING)
    logger.addHandler(keep)
    try:
        yield messages
    finally:
        logger.removeHandler(keep)
