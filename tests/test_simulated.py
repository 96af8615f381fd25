"""The simulated microscope runs real pymmcore-plus MDA sequences.

Frames must reflect the hardware state (filter, focus, stage, exposure, time)
well beyond camera noise, and pymmcore-plus must report that state in its
frame and summary metadata.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import useq
from pymmcore_plus.experimental.unicore import UniMMCore

from ome_stream.mmcore import _simulated, simulated_core

SHAPE = (64, 64)
PIXEL_SIZE_UM = 0.65
POSITIONS = [(0.0, 0.0, 0.0), (100.0, 50.0, 1.0)]  # (x, y, z) in um
CHANNELS = ["DAPI", "FITC"]
Z_OFFSETS_UM = [-1.0, 0.0, 1.0]
SEQUENCE = useq.MDASequence(
    axis_order="tpcz",
    time_plan={"interval": 0, "loops": 2},
    stage_positions=[POSITIONS[0], {"x": 100, "y": 50, "z": 1, "name": "pos1"}],
    channels=CHANNELS,
    z_plan={"range": 2, "step": 1},
)

Key = tuple[int, int, int, int]  # (t, p, c, z) indices


@dataclass
class Run:
    """What an MDA run emitted, keyed by (t, p, c, z)."""

    summary: dict[str, Any] = field(default_factory=dict)
    frames: dict[Key, np.ndarray] = field(default_factory=dict)
    metadata: dict[Key, dict[str, Any]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def run() -> Run:
    core = simulated_core(image_shape=SHAPE, pixel_size_um=PIXEL_SIZE_UM)
    result = Run()

    def on_started(sequence: useq.MDASequence, summary: dict[str, Any]) -> None:
        result.summary.update(summary)

    def on_frame(image: np.ndarray, event: useq.MDAEvent, meta: dict[str, Any]) -> None:
        index = event.index
        key = (index["t"], index["p"], index["c"], index["z"])
        result.frames[key] = image.copy()
        result.metadata[key] = meta

    core.mda.events.sequenceStarted.connect(on_started)
    core.mda.events.frameReady.connect(on_frame)
    core.mda.run(SEQUENCE)
    return result


def _rms_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def _noise(run: Run, p: int, c: int, z: int) -> float:
    """The same hardware state snapped twice (t=0, t=1): what noise alone does.

    Over 4096 pixels this RMS is known to about 1 %, so a difference 1.5 times
    larger is dozens of standard errors beyond noise.
    """
    return _rms_difference(run.frames[(0, p, c, z)], run.frames[(1, p, c, z)])


def test_every_frame_arrives_with_the_camera_shape_and_dtype(run: Run) -> None:
    assert len(run.frames) == 24
    assert set(run.frames) == {
        (t, p, c, z)
        for t in range(2)
        for p in range(2)
        for c in range(2)
        for z in range(3)
    }
    for image in run.frames.values():
        assert image.shape == SHAPE
        assert image.dtype == np.uint16
        assert 0 < image.mean() < np.iinfo(np.uint16).max


def test_repeated_frames_differ_only_by_noise(run: Run) -> None:
    for (t, p, c, z), image in run.frames.items():
        if t == 0:
            repeat = run.frames[(1, p, c, z)]
            assert np.corrcoef(image.ravel(), repeat.ravel())[0, 1] > 0.95
            assert not np.array_equal(image, repeat)  # noise is drawn per snap


@pytest.mark.parametrize("p", [0, 1])
@pytest.mark.parametrize("z", [0, 1, 2])
def test_channels_differ_beyond_noise(run: Run, p: int, z: int) -> None:
    difference = _rms_difference(run.frames[(0, p, 0, z)], run.frames[(0, p, 1, z)])
    assert difference > 1.5 * max(_noise(run, p, 0, z), _noise(run, p, 1, z))


@pytest.mark.parametrize("p", [0, 1])
@pytest.mark.parametrize("c", [0, 1])
def test_z_planes_differ_beyond_noise(run: Run, p: int, c: int) -> None:
    for z_a, z_b in [(0, 1), (1, 2), (0, 2)]:
        difference = _rms_difference(
            run.frames[(0, p, c, z_a)], run.frames[(0, p, c, z_b)]
        )
        assert difference > 1.5 * max(_noise(run, p, c, z_a), _noise(run, p, c, z_b))


def test_positions_show_different_cells(run: Run) -> None:
    for c in range(2):
        # Same focus relative to the cells: z index 1 at p0 is 0 um, z index 0
        # at p1 is 1 - 1 = 0 um.
        here, there = run.frames[(0, 0, c, 1)], run.frames[(0, 1, c, 0)]
        assert abs(np.corrcoef(here.ravel(), there.ravel())[0, 1]) < 0.5
        assert _rms_difference(here, there) > 1.5 * _noise(run, 0, c, 1)


def test_frame_metadata_reports_stage_exposure_and_channel(run: Run) -> None:
    for (_, p, c, z), meta in run.metadata.items():
        x_um, y_um, z_um = POSITIONS[p]
        assert meta["position"] == pytest.approx(
            {"x": x_um, "y": y_um, "z": z_um + Z_OFFSETS_UM[z]}
        )
        assert meta["exposure_ms"] == pytest.approx(10.0)
        assert meta["pixel_size_um"] == pytest.approx(PIXEL_SIZE_UM)
        assert meta["camera_device"] == "Camera"
        assert tuple(meta["property_values"]) == (
            {"dev": "Filter", "prop": "Label", "val": CHANNELS[c]},
        )


def test_summary_metadata_describes_the_camera(run: Run) -> None:
    (image_info,) = run.summary["image_infos"]
    assert image_info["camera_label"] == "Camera"
    assert (image_info["height"], image_info["width"]) == SHAPE
    assert tuple(image_info["plane_shape"]) == SHAPE
    assert image_info["dtype"] == "uint16"
    assert image_info["pixel_size_um"] == pytest.approx(PIXEL_SIZE_UM)
    assert {group["name"] for group in run.summary["config_groups"]} >= {"Channel"}


def _snap(core: UniMMCore) -> np.ndarray:
    core.snapImage()
    return np.asarray(core.getImage(), dtype=np.float64)


def test_intensity_scales_with_exposure() -> None:
    core = simulated_core(image_shape=SHAPE)
    core.setExposure(10)
    short = _snap(core)
    core.setExposure(20)
    long = _snap(core)
    assert long.mean() / short.mean() == pytest.approx(2.0, rel=0.05)


def test_a_stage_move_translates_the_same_field_of_cells() -> None:
    core = simulated_core(image_shape=SHAPE, pixel_size_um=PIXEL_SIZE_UM)
    # Start 40 px into the first field and move 30 px right and 20 px down, so
    # the second view straddles four fields: the field is continuous anyway.
    core.setXYPosition(40 * PIXEL_SIZE_UM, 40 * PIXEL_SIZE_UM)
    before = _snap(core)
    core.setXYPosition(70 * PIXEL_SIZE_UM, 60 * PIXEL_SIZE_UM)
    after = _snap(core)
    overlap_before, overlap_after = before[20:, 30:], after[:-20, :-30]
    assert np.corrcoef(overlap_before.ravel(), overlap_after.ravel())[0, 1] > 0.95
    core.setXYPosition(40 * PIXEL_SIZE_UM, 40 * PIXEL_SIZE_UM)
    assert np.corrcoef(_snap(core).ravel(), before.ravel())[0, 1] > 0.95


def test_the_sample_drifts_slowly(monkeypatch: pytest.MonkeyPatch) -> None:
    core = simulated_core(image_shape=SHAPE, pixel_size_um=PIXEL_SIZE_UM)
    now = time.monotonic()
    monkeypatch.setattr(_simulated, "_now", lambda: now + 600.0)  # ten minutes on
    drifted = _snap(core)
    # The drift is a stage offset of DRIFT_UM_PER_S * 600 s, in whole pixels.
    drift_y, drift_x = (
        round(rate * 600.0 / PIXEL_SIZE_UM) for rate in _simulated.DRIFT_UM_PER_S
    )
    assert 0 < drift_y < SHAPE[0] // 2
    monkeypatch.setattr(_simulated, "_now", lambda: now)
    core.setXYPosition(drift_x * PIXEL_SIZE_UM, drift_y * PIXEL_SIZE_UM)
    assert np.corrcoef(_snap(core).ravel(), drifted.ravel())[0, 1] > 0.95


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"dtype": "float32"}, "dtype"),
        ({"image_shape": (0, 64)}, "image_shape"),
        ({"pixel_size_um": 0.0}, "pixel_size_um"),
        ({"channels": ("DAPI", "DAPI")}, "channels"),
    ],
)
def test_invalid_arguments_name_the_field(
    kwargs: dict[str, Any], field_name: str
) -> None:
    with pytest.raises(ValueError, match=field_name):
        simulated_core(**kwargs)
