"""A simulated microscope: a real `UniMMCore` whose devices are pure Python.

No Micro-Manager installation or device adapter is needed, so the demo and the
tests run real MDA sequences (real stage moves, channel presets, z offsets and
frame metadata from pymmcore-plus) on any machine.

The optics are a toy: the camera looks through the filter wheel at a plane of
the sample chosen by the Z stage, at the patch of an endless field of cells
under the XY stage. Everything the camera renders comes from the other
devices' physical state, so a frame shows what the hardware was set to.
"""

from __future__ import annotations

import atexit
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path

import numpy as np

from ome_stream._synthetic import SyntheticSample

try:
    from pymmcore_plus import CMMCorePlus
    from pymmcore_plus.experimental.unicore import (
        ShutterDevice,
        SimpleCameraDevice,
        StageDevice,
        StateDevice,
        UniMMCore,
        XYStageDevice,
    )
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "The simulated microscope needs pymmcore-plus>=0.18: "
        "`pip install 'pymmcore-plus>=0.18'`."
    ) from error

__all__ = ["simulated_core"]

CAMERA = "Camera"
XY_STAGE = "XY"
Z_STAGE = "Z"
FILTER_WHEEL = "Filter"
SHUTTER = "Shutter"
CHANNEL_GROUP = "Channel"
PIXEL_SIZE_CONFIG = "Res10x"

# The sample plane in focus; cells lie within +-1 um of it (see SyntheticSample).
FOCAL_PLANE_UM = 0.0
# Axial chromatic aberration: each filter position focuses this much deeper.
FOCAL_SHIFT_PER_FILTER_UM = 0.4
# How fast the sample creeps under the stage (um/s): about 2 px per minute.
DRIFT_UM_PER_S = (0.02, 0.012)  # (y, x)
CELLS_PER_FIELD = 40
DEFAULT_EXPOSURE_MS = 10.0
# At the default exposure an in-focus cell of brightness 1 fills this fraction
# of the dtype's range; longer exposures collect proportionally more photons.
FULL_WELL_FRACTION_AT_DEFAULT_EXPOSURE = 0.25
# Tiles of the endless field kept rendered-ready (each holds two float grids).
MAX_CACHED_FIELDS = 16
SUPPORTED_DTYPES = ("uint8", "uint16")

# The camera's clock for drift; a module attribute so tests can fast-forward it.
_now = time.monotonic

# Cores still alive, so that their callbacks can be stopped before Python exits.
_live_cores: weakref.WeakSet[UniMMCore] = weakref.WeakSet()


@atexit.register
def _stop_core_callbacks() -> None:
    """Unregister each live core's event relay before interpreter shutdown.

    MMCore (pymmcore 12.5) delivers device notifications on its own thread. If
    one is being delivered into Python while the interpreter finalizes, that
    thread is torn down inside C++ and the process aborts ("FATAL: exception not
    rethrown", exit code 134) after everything else succeeded. Unregistering the
    relay joins that thread while Python is still fully alive.
    """
    for core in list(_live_cores):
        with suppress(Exception):
            super(CMMCorePlus, core).registerCallback(None)


class _XYStage(XYStageDevice):
    """An XY stage that moves instantly; `set_origin_*` zeroes its coordinates."""

    def __init__(self) -> None:
        super().__init__()
        self.physical_um = (0.0, 0.0)
        self._origin_um = (0.0, 0.0)

    def set_position_um(self, x: float, y: float) -> None:
        self.physical_um = (x + self._origin_um[0], y + self._origin_um[1])

    def get_position_um(self) -> tuple[float, float]:
        return (
            self.physical_um[0] - self._origin_um[0],
            self.physical_um[1] - self._origin_um[1],
        )

    def set_origin_x(self) -> None:
        self._origin_um = (self.physical_um[0], self._origin_um[1])

    def set_origin_y(self) -> None:
        self._origin_um = (self._origin_um[0], self.physical_um[1])

    def home(self) -> None:
        self.physical_um = (0.0, 0.0)

    def stop(self) -> None:
        """Moves are instantaneous: nothing to stop."""


class _ZStage(StageDevice):
    """A focus drive that moves instantly; `set_origin` zeroes its coordinate."""

    def __init__(self) -> None:
        super().__init__()
        self.physical_um = 0.0
        self._origin_um = 0.0

    def set_position_um(self, val: float) -> None:
        self.physical_um = val + self._origin_um

    def get_position_um(self) -> float:
        return self.physical_um - self._origin_um

    def set_origin(self) -> None:
        self._origin_um = self.physical_um

    def home(self) -> None:
        self.physical_um = 0.0

    def stop(self) -> None:
        """Moves are instantaneous: nothing to stop."""


class _FilterWheel(StateDevice):
    """A filter wheel with one position per channel name."""

    def __init__(self, channels: Sequence[str]) -> None:
        super().__init__(dict(enumerate(channels)))
        self.position = 0

    def get_state(self) -> int:
        return self.position

    def set_state(self, position: int) -> None:
        self.position = position


class _Shutter(ShutterDevice):
    """An illumination shutter.

    The camera ignores it: UniMMCore 0.18.1 does not actuate a Python shutter
    around `snapImage` under auto-shutter, so a closed shutter would turn every
    MDA frame dark. It exists because the MDA engine needs a shutter device.
    """

    def __init__(self) -> None:
        super().__init__()
        self.is_open = False

    def get_open(self) -> bool:
        return self.is_open

    def set_open(self, open: bool) -> None:
        self.is_open = open


class _Camera(SimpleCameraDevice):
    """A camera that renders the sample under the stages through the filter.

    The field of cells is endless: it is tiled by fields the size of the
    sensor, each a `SyntheticSample` seeded by its tile index, so the same
    stage position always shows the same cells and neighbouring positions
    overlap where their fields do. On top of the stage position, the sample
    drifts slowly with time. Photon (Poisson) noise is drawn last, with a mean
    proportional to the exposure.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, int],
        dtype: str,
        pixel_size_um: float,
        xy_stage: _XYStage,
        z_stage: _ZStage,
        filter_wheel: _FilterWheel,
        seed: int,
    ) -> None:
        super().__init__()
        self._shape = shape
        self._dtype = np.dtype(dtype)
        self._pixel_size_um = pixel_size_um
        self._xy_stage = xy_stage
        self._z_stage = z_stage
        self._filter_wheel = filter_wheel
        self._seed = seed
        self._start_time = _now()
        self._exposure_ms = DEFAULT_EXPOSURE_MS
        self._noise = np.random.default_rng(seed)
        self._fields: OrderedDict[tuple[int, int], SyntheticSample] = OrderedDict()
        full_scale = float(np.iinfo(self._dtype).max)
        self._photons_per_ms = (
            FULL_WELL_FRACTION_AT_DEFAULT_EXPOSURE * full_scale / DEFAULT_EXPOSURE_MS
        )

    def get_exposure(self) -> float:
        return self._exposure_ms

    def set_exposure(self, exposure: float) -> None:
        self._exposure_ms = float(exposure)

    def sensor_shape(self) -> tuple[int, int]:
        return self._shape

    def dtype(self) -> np.dtype[np.generic]:
        return self._dtype

    def snap(self, buffer: np.ndarray) -> Mapping[str, str]:
        """Fill `buffer` with the current view and return what the camera saw."""
        x_um, y_um = self._xy_stage.physical_um
        z_um = self._z_stage.physical_um
        channel_index = self._filter_wheel.position
        elapsed_s = _now() - self._start_time
        row = round((y_um + DRIFT_UM_PER_S[0] * elapsed_s) / self._pixel_size_um)
        column = round((x_um + DRIFT_UM_PER_S[1] * elapsed_s) / self._pixel_size_um)
        focal_plane_um = FOCAL_PLANE_UM + FOCAL_SHIFT_PER_FILTER_UM * channel_index
        signal = self._render(row, column, z_um - focal_plane_um, channel_index)
        expected = np.clip(signal, 0, None) * (self._photons_per_ms * self._exposure_ms)
        counts = self._noise.poisson(expected)
        np.clip(counts, 0, np.iinfo(self._dtype).max, out=counts)
        buffer[:] = counts
        # UniMMCore 0.18.1 drops this mapping for snapped frames; it reaches
        # `camera_metadata` of hardware-sequenced MDA frames only.
        return {
            "SimulatedStageX-um": f"{x_um:.3f}",
            "SimulatedStageY-um": f"{y_um:.3f}",
            "SimulatedFocus-um": f"{z_um:.3f}",
            "SimulatedFilter": str(self._filter_wheel.get_property_value("Label")),
            "SimulatedExposure-ms": f"{self._exposure_ms:g}",
        }

    def _render(
        self, row: int, column: int, defocus_um: float, channel_index: int
    ) -> np.ndarray:
        """The noiseless-ish (float) view whose top-left pixel is (row, column)."""
        height, width = self._shape
        tile_row, row_in_tile = divmod(row, height)
        tile_column, column_in_tile = divmod(column, width)
        # The view straddles at most 2 x 2 tiles; render only those it touches.
        tile_rows = 2 if row_in_tile else 1
        tile_columns = 2 if column_in_tile else 1
        mosaic = np.empty((tile_rows * height, tile_columns * width), np.float32)
        for i in range(tile_rows):
            for j in range(tile_columns):
                field = self._field(tile_row + i, tile_column + j)
                mosaic[i * height : (i + 1) * height, j * width : (j + 1) * width] = (
                    field.frame(c=channel_index, z=defocus_um, dtype="float32")
                )
        return mosaic[
            row_in_tile : row_in_tile + height, column_in_tile : column_in_tile + width
        ]

    def _field(self, tile_row: int, tile_column: int) -> SyntheticSample:
        """The sample tile at this index, the same every time it is asked for."""
        key = (tile_row, tile_column)
        field = self._fields.get(key)
        if field is None:
            # SeedSequence takes non-negative entropy: fold signs in (zigzag).
            entropy = [self._seed, *(2 * k if k >= 0 else -2 * k - 1 for k in key)]
            tile_seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
            field = SyntheticSample(self._shape, CELLS_PER_FIELD, seed=tile_seed)
            self._fields[key] = field
            if len(self._fields) > MAX_CACHED_FIELDS:
                self._fields.popitem(last=False)
        else:
            self._fields.move_to_end(key)
        return field


def simulated_core(
    *,
    image_shape: tuple[int, int] = (256, 256),
    pixel_size_um: float = 0.65,
    dtype: str = "uint16",
    channels: Sequence[str] = ("DAPI", "FITC", "Cy5"),
    seed: int = 0,
) -> UniMMCore:
    """An initialised `UniMMCore` driving a simulated widefield microscope.

    Devices (labels): camera `"Camera"`, XY stage `"XY"`, focus stage `"Z"`,
    filter wheel `"Filter"` (one position per channel, labelled with the
    channel name) and shutter `"Shutter"`. All are selected as the core's
    current devices. The config group `"Channel"` has one preset per channel
    name, setting `Filter`/`Label`, and is the channel group, so
    `useq.Channel(config=name)` selects a channel. The pixel size config
    `"Res10x"` sets `pixel_size_um`.

    Frames are synthetic cells that change with the filter (channel), with
    the focus position (in focus at z = 0 um, cells lie within +-1 um), with
    the XY position (an endless field; 1 pixel is `pixel_size_um`), and drift
    by about 2 pixels a minute. The photon noise is Poisson, and intensity
    grows linearly with the exposure (10 ms at start) up to saturation.

    Parameters
    ----------
    image_shape
        Sensor `(height, width)` in pixels.
    pixel_size_um
        Size of one pixel in the sample plane, in micrometres.
    dtype
        Pixel type, `"uint8"` or `"uint16"`.
    channels
        Channel names: the filter wheel's labels and the `"Channel"` presets.
    seed
        Seeds the field of cells and the noise.

    Raises
    ------
    ValueError
        If an argument cannot describe a camera; the message names it.
    """
    height, width = image_shape
    if height < 1 or width < 1:
        raise ValueError(
            f"image_shape must be a positive (height, width), got {image_shape}."
        )
    if not pixel_size_um > 0:
        raise ValueError(f"pixel_size_um must be > 0, got {pixel_size_um}.")
    if np.dtype(dtype).name not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be one of {SUPPORTED_DTYPES}, got {dtype!r}.")
    if not channels or len(set(channels)) != len(channels):
        raise ValueError(
            f"channels must be one or more distinct names, got {channels}."
        )

    xy_stage = _XYStage()
    z_stage = _ZStage()
    filter_wheel = _FilterWheel(channels)
    camera = _Camera(
        shape=(height, width),
        dtype=np.dtype(dtype).name,
        pixel_size_um=pixel_size_um,
        xy_stage=xy_stage,
        z_stage=z_stage,
        filter_wheel=filter_wheel,
        seed=seed,
    )
    # Any existing directory as mm_path skips the search for a Micro-Manager
    # installation (and its ERROR log); no C++ adapter is ever loaded.
    core = UniMMCore(mm_path=str(Path(__file__).parent))
    devices = {
        CAMERA: camera,
        XY_STAGE: xy_stage,
        Z_STAGE: z_stage,
        FILTER_WHEEL: filter_wheel,
        SHUTTER: _Shutter(),
    }
    for label, device in devices.items():
        core.loadPyDevice(label, device)
        core.initializeDevice(label)
    core.setCameraDevice(CAMERA)
    core.setXYStageDevice(XY_STAGE)
    core.setFocusDevice(Z_STAGE)
    # Required: with auto-shutter on, the MDA engine closes "the" shutter after
    # each frame and fails on an empty shutter label.
    core.setShutterDevice(SHUTTER)
    for name in channels:
        core.defineConfig(CHANNEL_GROUP, name, FILTER_WHEEL, "Label", name)
    core.setChannelGroup(CHANNEL_GROUP)
    core.definePixelSizeConfig(PIXEL_SIZE_CONFIG)
    core.setPixelSizeUm(PIXEL_SIZE_CONFIG, pixel_size_um)
    core.setPixelSizeConfig(PIXEL_SIZE_CONFIG)
    _live_cores.add(core)
    return core
