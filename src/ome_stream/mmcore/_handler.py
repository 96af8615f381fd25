"""`OMEStreamHandler`: turns a pymmcore-plus MDA run into an OME dataset.

Use it as `core.mda.run(seq, output=OMEStreamHandler(path))` (pymmcore-plus
connects the methods below by name and calls them on its relay thread) or
`handler.attach(core)` (connected directly to every MDA signal).

A run is closed at its last frame, at sequenceCanceled, or at
sequenceFinished, whichever comes first; should the relay thread end
without delivering any of them (a run ended by an engine error, or a
generator of events, whose length is not known), when the relay thread
ends (`wait_closed`).

Frames are placed by `event.index`, not by arrival order: an event that
produced no frame (a failed snap, `SkipEvent`, an engine yielding nothing)
leaves a recorded gap and later frames still land where they belong.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .._settings import AcquisitionSettings, Dimension, Position
from .._stream import OMEStream, WriterError, create_stream
from .._useq import IrregularSequenceError, useq_to_acquisition_settings

logger = logging.getLogger("ome_stream.mmcore")

MDA_SIGNALS = (
    "sequenceStarted",
    "eventStarted",
    "frameReady",
    "sequenceCanceled",
    "sequenceFinished",
)
# FrameMetaV1 keys that become OME plane fields (with unit conversion) or are
# pymmcore-plus bookkeeping; everything else is kept as it came.
_CONVERTED_KEYS = ("runner_time_ms", "exposure_ms", "position", "format", "version")


@dataclass
class HandlerError:
    """An exception raised inside one of the handler's callbacks."""

    callback: str
    error: BaseException


@dataclass
class _Run:
    stream: OMEStream
    frame_numbers: FrameNumbers | None
    expected_frames: int | None
    # channels taken at some timepoints or planes only (`acquire_every`,
    # `do_stack=False`): the frame number of the sequence's last frame, and
    # the frames of the array it never takes (skipped, recorded missing)
    last_frame: int | None = None
    not_planned: int = 0
    planned: list[int] | None = None  # the frame numbers it takes, in order
    canceled: bool = False
    out_of_order: list[dict[str, int]] = field(default_factory=list)
    first_error: int = 0  # the handler's errors from this one on are the run's
    watcher: threading.Thread | None = None  # see `_close_when_relay_ends`


IndexKey = tuple[tuple[str, int], ...]


def _index_key(index: Mapping[Any, int]) -> IndexKey:
    return tuple(
        sorted((str(getattr(k, "value", k)), int(v)) for k, v in index.items())
    )


@dataclass
class FrameNumbers:
    """Event index -> frame number in acquisition order.

    For an unbounded first axis (`outer`), only one step of the inner loops
    is tabulated: frame = outer_index * frames_per_step + offset.
    """

    offsets: dict[IndexKey, int]
    outer: str | None = None
    frames_per_step: int = 0

    def lookup(self, key: IndexKey) -> int | None:
        if self.outer is None:
            return self.offsets.get(key)
        outer_index = dict(key).get(self.outer, 0)
        inner = tuple(item for item in key if item[0] != self.outer)
        offset = self.offsets.get(inner)
        if offset is None:
            return None
        return outer_index * self.frames_per_step + offset


def _acquires_an_image(event: Any) -> bool:
    """Whether an event takes a frame: not an autofocus event (which useq
    yields before the frame it focuses for, with the same index) or another
    action that gives none."""
    action = getattr(event, "action", None)
    return getattr(action, "type", "acquire_image") == "acquire_image"


def _frame_numbers(sequence: Any, dims: list[Dimension]) -> FrameNumbers:
    """Number the sequence's events that take a frame in iteration
    (= acquisition) order."""
    events = filter(_acquires_an_image, sequence)
    if dims[0].count is not None:
        return FrameNumbers(
            {_index_key(event.index): n for n, event in enumerate(events)}
        )
    outer = dims[0].name
    per_step = math.prod(d.count or 1 for d in dims[1:-2])
    offsets = {}
    for n, event in enumerate(itertools.islice(events, per_step)):
        key = tuple(i for i in _index_key(event.index) if i[0] != outer)
        offsets[key] = n
    return FrameNumbers(offsets, outer, per_step)


def _stage_xy_of_events(
    sequence: Any, dims: list[Dimension], numbers: FrameNumbers
) -> list[Dimension]:
    """`dims` with each position's x/y where its first event sends the
    stage. The positions come from the sequence's plans, iterated anew;
    the runner's events may have been made before: useq keeps a
    sequence's events once iterated (a progress bar's `len(list(seq))`),
    and pymmcore-plus sets the grid's field of view to the camera's after
    that, so its tiles lay out otherwise than the grid plan now says. A
    position whose x/y the plans leave unknown (random points without a
    seed) is left so. IrregularSequenceError when the events do not fit
    the positions one to one (a grid whose number of tiles depends on the
    field of view: `GridFromEdges`, `GridWidthHeight`)."""
    axis = next((i for i, d in enumerate(dims) if d.type == "position"), None)
    if axis is None:
        return dims  # (no positions: no tiles to fit, nor x/y to take)
    # Only a grid's tiles can move (its field of view set after its events
    # were made): without one, the walk ends once every position is seen.
    gridded = _has_grid(sequence)
    positions = list(dims[axis].coords or ())
    stride = math.prod(d.count or 1 for d in dims[axis + 1 : -2])
    events: Iterable[Any] = filter(_acquires_an_image, sequence)
    if numbers.outer is not None:  # (one step of an unbounded outer axis)
        events = itertools.islice(events, numbers.frames_per_step)
    where: dict[int, tuple[float | None, float | None]] = {}
    tile_of: dict[int, Any] = {}  # position -> the (p, g) of its events
    for event in events:
        key = _index_key(event.index)
        number = numbers.lookup(key)
        if number is None:
            raise _tiles_moved(f"event {dict(key)} has no place in the array")
        position = (number // stride) % len(positions)
        tile = (event.index.get("p", 0), event.index.get("g", 0))
        if tile_of.setdefault(position, tile) != tile:
            raise _tiles_moved(f"events {tile_of[position]} and {tile} share an image")
        where.setdefault(position, (event.x_pos, event.y_pos))
        if not gridded and len(where) == len(positions):
            break
    if len(tile_of) != len(positions):
        raise _tiles_moved(
            f"its events visit {len(tile_of)} positions, its plans give "
            f"{len(positions)}"
        )
    corrected = [
        p
        if not isinstance(p, Position)
        or None in where[i]
        or p.x_coord is None
        or p.y_coord is None
        else p.model_copy(update={"x_coord": where[i][0], "y_coord": where[i][1]})
        for i, p in enumerate(positions)
    ]
    if corrected == positions:
        return dims
    fixed = dims[axis].model_copy(update={"coords": corrected})
    return [*dims[:axis], fixed, *dims[axis + 1 :]]


def _has_grid(sequence: Any) -> bool:
    """Whether the sequence, or a position's sub-sequence, has a grid."""
    if getattr(sequence, "grid_plan", None) is not None:
        return True
    return any(
        getattr(getattr(p, "sequence", None), "grid_plan", None) is not None
        for p in getattr(sequence, "stage_positions", None) or ()
    )


def _tiles_moved(detail: str) -> IrregularSequenceError:
    return IrregularSequenceError(
        f"the sequence's events do not lay out as its plans now do ({detail}): "
        "useq keeps the events of a sequence once iterated, and pymmcore-plus "
        "then set the grid's field of view to the camera's. Iterate a copy "
        "(sequence.model_copy(deep=True)) before a run, not the sequence"
    )


def _every_frame(sequence: Any) -> Any:
    """`sequence` with every channel taken at every timepoint and plane: the
    regular array its frames lie in, when channels are taken at some
    timepoints only (`acquire_every`) or at one plane (`do_stack=False`).
    The frames it does not take are skipped: recorded missing."""
    channels = getattr(sequence, "channels", ())
    if all(c.acquire_every == 1 and c.do_stack for c in channels):
        return sequence
    every = [
        c.model_copy(update={"acquire_every": 1, "do_stack": True}) for c in channels
    ]
    return sequence.model_copy(update={"channels": tuple(every)})


def _planned_numbers(sequence: Any, numbers: FrameNumbers) -> list[int]:
    """The frame numbers of the frames `sequence` takes."""
    found = (
        numbers.lookup(_index_key(event.index))
        for event in filter(_acquires_an_image, sequence)
    )
    return [number for number in found if number is not None]


def _with_cameras(
    dims: list[Dimension], numbers: FrameNumbers | None, cameras: list[str]
) -> tuple[list[Dimension], FrameNumbers | None]:
    """Each camera becomes its own image: a position axis after every loop
    (pymmcore-plus emits the cameras' frames of an event one after another).
    With stage positions too, the two position axes multiply: one image per
    (position, camera), named "<position>_<camera>"."""
    camera_dim = Dimension(name="cam", type="position", coords=cameras)
    dims = [*dims[:-2], camera_dim, *dims[-2:]]
    if numbers is None:
        return dims, None
    n = len(cameras)
    offsets = {
        tuple(sorted((*key, ("cam", cam)))): number * n + cam
        for key, number in numbers.offsets.items()
        for cam in range(n)
    }
    return dims, FrameNumbers(offsets, numbers.outer, numbers.frames_per_step * n)


def _merge_backend(
    format: str | dict[str, Any] | None, backend: str | None, path: Path
) -> str | dict[str, Any] | None:
    """`format` with the `backend` option folded in (checked by the settings
    when the run starts)."""
    if backend is None:
        return format
    if isinstance(format, dict):
        if format.get("backend", backend) != backend:
            raise ValueError(
                f"backend={backend!r} contradicts format={format!r}; give the "
                "backend once."
            )
        return {**format, "backend": backend}
    from .._settings.formats import FORMAT_ALIASES, format_from_suffix

    name = format or format_from_suffix(str(path)) or "ome-zarr"
    base = FORMAT_ALIASES.get(name.lower(), {"name": name})
    if base.get("backend", backend) != backend:
        raise ValueError(
            f"backend={backend!r} contradicts format={format!r}; give the backend "
            "once, e.g. format='ome-zarr', backend='zarr-python'."
        )
    return {**base, "backend": backend}


class OMEStreamHandler:
    """Writes every frame of an MDA run to OME-Zarr or OME-TIFF at `path`.

    Options: `format` ("ome-zarr", "ome-tiff" or a backend name; default from
    the suffix of `path`), `backend` ("tensorstore", "zarr-python",
    "acquire-zarr", "tifffile"; default "auto"), `chunk_shapes` /
    `shard_shapes` (by axis letter, e.g. {"z": 16}), `compression`,
    `overwrite`, `storage_order`, and any other `AcquisitionSettings` field
    (e.g. `max_queue_bytes`).

    `copy_frames`: pymmcore-plus hands over a new array for every frame
    (`getImage` and `popNextImage` copy out of the core's buffers), which
    nothing else writes to, so by default the handler queues it as it is
    (`append(copy=False)`), saving a copy per frame. Pass `copy_frames=True`
    when another `frameReady` listener changes frames in place.

    An output that exists without `overwrite` is refused here
    (FileExistsError), before the run. Should the run's dataset fail to be
    made or written (a full disk), the error is recorded once in `errors`,
    the run's later frames are counted in `frames_dropped`, and a run the
    handler is attached to (`attach`) is canceled: the microscope does not
    go on acquiring frames that cannot be kept. (An `output=` handler has
    no hold on the runner: its run goes on.)
    """

    def __init__(
        self,
        path: str | Path,
        *,
        format: str | dict[str, Any] | None = None,
        backend: str | None = None,
        chunk_shapes: Mapping[str, int] | None = None,
        shard_shapes: Mapping[str, int] | None = None,
        compression: str | None = None,
        overwrite: bool = False,
        copy_frames: bool = False,
        **settings: Any,
    ) -> None:
        self.path = Path(path)
        self.copy_frames = copy_frames
        self._format = _merge_backend(format, backend, self.path)
        if not overwrite:
            for output in self._outputs():
                raise FileExistsError(
                    f"{output} already exists. Pass overwrite=True to replace "
                    "it, or choose another path."
                )
        self._chunk_shapes = dict(chunk_shapes or {})
        self._shard_shapes = dict(shard_shapes or {})
        self._options: dict[str, Any] = {"overwrite": overwrite, **settings}
        if compression is not None:
            self._options["compression"] = compression
        self._run: _Run | None = None
        self._lock = threading.Lock()
        self._disconnect: list[Callable[[], None]] = []
        self._runner: Any = None  # the MDARunner `attach` connected to
        self.errors: list[HandlerError] = []
        self.settings: AcquisitionSettings | None = None
        # the current run's dataset could not be made or written: its later
        # frames are dropped (counted), the error recorded once
        self._failed: BaseException | None = None
        self.frames_dropped = 0
        # set by `_layout` when the sequence leaves frames of its array out
        self._gaps: tuple[Any, FrameNumbers] | None = None

    # ----------------------------------------------------------- properties

    @property
    def stream(self) -> OMEStream | None:
        """The stream of the current (or last) run."""
        return None if self._run is None else self._run.stream

    @property
    def output_path(self) -> Path | None:
        return None if self.settings is None else self.settings.output_path

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the current (or last) run's dataset is closed; return
        whether it is. A run is closed by the time `core.mda.run` returns,
        except when pymmcore-plus's relay thread loses sequenceFinished and
        the run did not end at its last frame or by a cancel (an engine
        error, a last event that gave no frame, a generator of events): then
        it is closed when the relay thread ends, a little later."""
        run = self._run
        if run is None:
            return False
        if run.watcher is not None:
            run.watcher.join(timeout)
        return run.stream.closed

    # ------------------------------------------------------------- wiring

    def attach(self, core_or_runner: Any) -> Callable[[], None]:
        """Connect to every MDA signal of a `CMMCorePlus` or `MDARunner`.

        Callbacks then run synchronously on the runner's thread (and see
        `eventStarted`, which `output=` handlers never receive). Returns a
        function that disconnects them; `detach()` does the same.
        """
        runner = getattr(core_or_runner, "mda", core_or_runner)
        self._runner = runner
        events = runner.events
        for name in MDA_SIGNALS:
            signal = getattr(events, name)
            callback = getattr(self, name)
            signal.connect(callback)
            self._disconnect.append(partial(signal.disconnect, callback))
        return self.detach

    def detach(self) -> None:
        while self._disconnect:
            self._disconnect.pop()()
        self._runner = None

    def _finish_reason_told(self) -> str | None:
        """Why the runner says its run finished, when attached to one that
        says (`MDARunner.status`, pymmcore-plus 0.18.1 on; set once the run
        is finishing): "finished", "canceled" or "errored"."""
        try:
            status = getattr(self._runner, "status", None)
            told = getattr(status, "finish_reason", None)
        except Exception:  # (an older or unusual runner: the counts decide)
            return None
        reasons = {"completed": "finished", "canceled": "canceled"}
        return None if told is None else reasons.get(str(told), str(told))

    def _guard(
        self, name: str, function: Callable[[], None], *, fatal: bool = False
    ) -> None:
        # pymmcore-plus stops calling an `output=` handler for the rest of the
        # run once a callback raises; record and log instead, so one bad frame
        # never ends the writing of the others. An error that leaves the run
        # nothing to write to (`fatal`, or the stream failed) is recorded
        # once, and cancels the run the handler is attached to.
        try:
            with self._lock:
                function()
        except Exception as exc:
            self.errors.append(HandlerError(name, exc))
            logger.exception("ome-stream handler: %s failed", name)
            if self._failed is None and (fatal or isinstance(exc, WriterError)):
                self._failed = exc
                if name == "frameReady":
                    self.frames_dropped += 1  # (not queued)
                self._cancel_run()

    def _cancel_run(self) -> None:
        """Cancel the run the handler is attached to (its frames could not
        be kept)."""
        runner = self._runner
        if runner is None:
            logger.error(
                "ome-stream handler: the run's frames cannot be written; they "
                "are dropped until it ends (attach the handler to have the "
                "run canceled)"
            )
            return
        logger.error(
            "ome-stream handler: the run's frames cannot be written; canceling it"
        )
        try:
            runner.cancel()
        except Exception:
            logger.exception("ome-stream handler: canceling the run failed")

    # ------------------------------------------------------- MDA callbacks

    def sequenceStarted(self, sequence: Any, metadata: Any = None) -> None:
        self._failed = None
        self.frames_dropped = 0
        summary = metadata or {}
        self._guard(
            "sequenceStarted", lambda: self._start(sequence, summary), fatal=True
        )
        if self._failed is None and summary:  # (the dataset is there: not fatal)
            self._guard(
                "sequenceStarted (summary metadata)", partial(self._summary, summary)
            )

    def eventStarted(self, event: Any) -> None:
        """Nothing to do: frames are placed by their own `event.index`."""

    def frameReady(self, image: Any, event: Any, metadata: Any = None) -> None:
        if self._failed is not None:
            self.frames_dropped += 1  # (the error is recorded once)
            return
        self._guard("frameReady", lambda: self._frame(image, event, metadata or {}))
        run = self._run
        if run is not None and run.expected_frames is not None:
            stream = run.stream
            if not stream.closed and stream.frames_appended >= run.expected_frames:
                # The last frame: the dataset is complete, so close it now
                # rather than at sequenceFinished, which an `output=` handler
                # may never receive (see `_close_when_relay_ends`).
                self._guard("frameReady (closing after the last frame)", self._finish)

    def sequenceCanceled(self, sequence: Any) -> None:
        def cancel() -> None:
            if self._run is not None:
                self._run.canceled = True
                # no frame comes after it (pymmcore-plus emits it as the run
                # finishes), so close now: sequenceFinished may never come
                self._finish()

        self._guard("sequenceCanceled", cancel)

    def sequenceFinished(self, sequence: Any) -> None:
        self._guard("sequenceFinished", self._finish)

    # -------------------------------------------------------------- work

    def _start(self, sequence: Any, summary: Mapping[str, Any]) -> None:
        if self._run is not None and not self._run.stream.closed:
            logger.warning("sequenceStarted while a run is open; closing it first")
            self._finish()
        infos = summary.get("image_infos") or ()
        info: Mapping[str, Any] = infos[0] if infos else {}
        width = int(info.get("width", 0))
        height = int(info.get("height", 0))
        if not width or not height:
            raise ValueError(
                "The MDA summary metadata has no image size (image_infos[0] width "
                "and height); the engine's setup_sequence must report it."
            )
        n_cameras = int(info.get("num_camera_adapter_channels", 1) or 1)
        cameras = [
            str(i.get("camera_label") or f"camera{n}")
            for n, i in enumerate(infos[1 : n_cameras + 1])
        ]
        if len(cameras) != n_cameras or len(set(cameras)) != n_cameras:
            cameras = [f"camera{n}" for n in range(n_cameras)]
        pixel_size = info.get("pixel_size_um") or None
        self._gaps = None
        dims, plate, frame_numbers = self._layout(sequence, width, height, pixel_size)
        gaps = self._gaps
        if n_cameras > 1:
            dims, frame_numbers = _with_cameras(dims, frame_numbers, cameras)
        taken = None
        if gaps is not None:
            taken = [
                number * n_cameras + camera
                for number in _planned_numbers(*gaps)
                for camera in range(n_cameras)
            ]
        # (warnings, e.g. of memory, logged: on this thread they would reach
        # no one, and where warnings are errors they would stop the run)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            settings = AcquisitionSettings(
                root_path=str(self.path),
                dimensions=dims,
                plate=plate,
                dtype=str(info.get("dtype", "uint16")),
                **self._format_option(),
                **self._options,
            )
            stream = create_stream(settings)
        for warning in caught:
            logger.warning("ome-stream handler: %s", warning.message)
        self.settings = stream.settings
        run = self._run = _Run(stream, frame_numbers, settings.num_frames)
        run.first_error = len(self.errors)
        relay = threading.current_thread()
        if type(relay).__name__ == "MDARelayThread":  # called as `output=`
            run.watcher = threading.Thread(
                target=self._close_when_relay_ends,
                args=(relay, run),
                name="ome-stream-relay-watch",
            )
            run.watcher.start()
        if taken is not None and settings.num_frames is not None:
            run.planned = sorted(taken)
            run.last_frame = run.planned[-1] if run.planned else None
            run.not_planned = settings.num_frames - len(taken)

    def _summary(self, summary: Mapping[str, Any]) -> None:
        run = self._run
        if run is not None and not run.stream.closed:
            run.stream.set_global_metadata(
                "pymmcore_plus", {"summary_metadata": _to_builtins(summary)}
            )

    def _outputs(self) -> list[Path]:
        """What a run would replace: the format's output for one position,
        and for several (OME-TIFF: a directory of files) if it exists as
        an earlier run's (a directory of another use is not refused here:
        a run of one position does not touch it; one of several is
        refused when it starts)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (a format inferred: said at the run)
            probe = AcquisitionSettings(
                root_path=str(self.path),
                dimensions=[Dimension(name="y", count=1), Dimension(name="x", count=1)],
                dtype="uint16",
                **self._format_option(),
            )
        single = probe.format.get_output_path(str(self.path), num_positions=1)
        several = probe.format.get_output_path(str(self.path), num_positions=2)
        found = [single] if single.exists() or single.is_symlink() else []
        if several != single and several.is_dir():
            from .._formats.tiff.layout import is_directory_layout_file

            if any(is_directory_layout_file(f) for f in several.iterdir()):
                found.append(several)
        return found

    def _format_option(self) -> dict[str, Any]:
        return {} if self._format is None else {"format": self._format}

    def _layout(
        self, sequence: Any, width: int, height: int, pixel_size: float | None
    ) -> tuple[list[Dimension], Any, FrameNumbers | None]:
        # pymmcore-plus passes a placeholder (whose `sizes` only warns) when
        # the run is a generator or an event list of unknown shape.
        placeholder = type(sequence).__name__ == "GeneratorMDASequence"
        sizes = {} if placeholder else getattr(sequence, "sizes", None) or {}
        if any(sizes.values()):
            every = _every_frame(sequence)
            try:
                converted = useq_to_acquisition_settings(
                    every,
                    width,
                    height,
                    pixel_size_um=pixel_size,
                    chunk_shapes=self._chunk_shapes or None,
                    shard_shapes=self._shard_shapes or None,
                )
                dims = converted["dimensions"]
                numbers = _frame_numbers(every, dims)
                dims = _stage_xy_of_events(sequence, dims, numbers)
            except IrregularSequenceError as exc:
                logger.warning(
                    "%s; writing every frame along an unbounded axis instead, with "
                    "its event index in the frame metadata",
                    exc,
                )
            else:
                self._gaps = None if every is sequence else (sequence, numbers)
                return dims, converted["plate"], numbers
        y_chunk = self._chunk_shapes.get("y")
        x_chunk = self._chunk_shapes.get("x")
        scale = pixel_size if pixel_size and pixel_size > 0 else None
        dims = [
            Dimension(name="t", count=None, type="time"),
            Dimension(
                name="y", count=height, chunk_size=y_chunk, unit="um", scale=scale
            ),
            Dimension(
                name="x", count=width, chunk_size=x_chunk, unit="um", scale=scale
            ),
        ]
        return dims, None, None

    def _frame(self, image: Any, event: Any, metadata: Mapping[str, Any]) -> None:
        run = self._run
        if run is None:
            raise RuntimeError("frameReady before sequenceStarted; frame dropped")
        stream = run.stream
        frame_metadata = _frame_metadata(event, metadata)
        frame = np.asarray(image)
        copy = self.copy_frames
        if run.frame_numbers is None:
            stream.append(frame, frame_metadata=frame_metadata, copy=copy)
            return
        key = _index_key(event.index)
        number = run.frame_numbers.lookup(key)
        if number is None:
            raise ValueError(f"event index {dict(key)} is not part of the sequence")
        gap = number - stream.frames_appended
        if gap < 0:
            run.out_of_order.append(dict(key))
            raise ValueError(
                f"frame for event {dict(key)} arrived after later frames were "
                "written; it cannot be placed and was dropped"
            )
        if gap:
            stream.skip(frames=gap)
        stream.append(frame, frame_metadata=frame_metadata, copy=copy)
        if number == run.last_frame and run.expected_frames is not None:
            # the sequence's last frame: the frames after it in the array are
            # ones it never takes
            rest = run.expected_frames - stream.frames_appended
            if rest > 0:
                stream.skip(frames=rest)

    def _close_when_relay_ends(self, relay: threading.Thread, run: _Run) -> None:
        """Close `run` once pymmcore-plus's relay thread has ended, if
        sequenceFinished never came. (pymmcore-plus 0.18's relay sets its
        stop flag before it queues sequenceFinished, so a relay that finds
        its queue empty in between ends without delivering it. A run closed
        at its last frame or at sequenceCanceled is unaffected; one of
        unknown length would stay open.)"""
        relay.join()

        def close_if_open() -> None:
            if run.stream.closed:
                return
            logger.warning(
                "The pymmcore-plus relay thread ended without delivering "
                "sequenceFinished; closing %s now.",
                run.stream.settings.output_path,
            )
            self._finish(run)

        self._guard("close after the relay ended", close_if_open)

    def _finish(self, run: _Run | None = None) -> None:
        run = self._run if run is None else run
        if run is None:
            logger.info("sequenceFinished without sequenceStarted: nothing to close")
            return
        stream = run.stream
        if stream.closed:
            return
        appended = stream.frames_appended
        never_arrived = (
            None if run.expected_frames is None else run.expected_frames - appended
        )
        if run.planned is not None:  # (the frames it never takes are not due)
            never_arrived = len(run.planned) - bisect.bisect_left(run.planned, appended)
        # No signal says an engine error ended the run: attached, the runner
        # says; as `output=`, it shows as frames that never came (as do
        # events at the end that gave no frame, which no later frame shows)
        reason = "finished"
        if run.canceled:
            reason = "canceled"
        elif never_arrived:
            reason = "incomplete"
        reason = self._finish_reason_told() or reason
        status = {
            "finish_reason": reason,
            "frames_expected": run.expected_frames,
            # every frame appended is written unless writing fails (then
            # corrected below)
            "frames_written": appended - stream.frames_skipped,
            "frames_skipped": stream.frames_skipped,
            "frames_never_arrived": never_arrived,
            # (channels taken at some timepoints or planes only; skipped)
            "frames_not_planned": run.not_planned,
            "frames_out_of_order_dropped": run.out_of_order,
            "handler_errors": [
                f"{e.callback}: {e.error!r}" for e in self.errors[run.first_error :]
            ],
        }
        # Set before closing, so that the final metadata holds it: set after,
        # it rewrites the final metadata (for OME-TIFF with per-plane
        # metadata, as long as writing it at close took). Not when writing
        # has failed: that would raise the error again if frameReady has
        # already recorded it (close raises it only if not).
        recorded = False
        try:
            if stream._error is None:
                stream.set_global_metadata("acquisition_status", status)
                recorded = True
        finally:
            try:
                stream.close()
            finally:
                if not recorded or stream.frames_written != status["frames_written"]:
                    status["frames_written"] = stream.frames_written
                    stream.set_global_metadata("acquisition_status", status)


def _to_builtins(value: Any) -> Any:
    from pymmcore_plus.metadata import to_builtins

    return to_builtins(value)


def _frame_metadata(event: Any, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """FrameMetaV1 as the stream's per-frame metadata.

    runner_time_ms -> delta_t (s), exposure_ms -> exposure_time (s), stage
    position -> position_x/y/z (um); every other key is kept.
    """
    result: dict[str, Any] = {}
    runner_time = metadata.get("runner_time_ms")
    if isinstance(runner_time, (int, float)):
        result["delta_t"] = runner_time / 1000.0
    exposure = metadata.get("exposure_ms")
    if isinstance(exposure, (int, float)):
        result["exposure_time"] = exposure / 1000.0
    position = metadata.get("position") or {}
    for axis in ("x", "y", "z"):
        value = position.get(axis)
        if isinstance(value, (int, float)):
            result[f"position_{axis}"] = float(value)
    for key, value in metadata.items():
        if key in _CONVERTED_KEYS:
            continue
        if key == "mda_event":
            continue
        result[key] = _to_builtins(value)
    result["event_index"] = {
        str(getattr(k, "value", k)): int(v) for k, v in event.index.items()
    }
    channel = getattr(event, "channel", None)
    if channel is not None:
        result["channel"] = channel.config
    return result
