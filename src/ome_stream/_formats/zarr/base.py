"""What every OME-Zarr backend shares, whatever writes the arrays.

`ZarrBackend` owns the store layout (`layout.py`), the group documents (NGFF
`ome` metadata, our `ome_stream` section, the user's attributes), per-frame
records, the mask of frames written (so missing frames can be told from real
zeros), global metadata, `get_metadata`/`update_metadata`, and close. A
subclass writes the arrays: `_open_arrays`, `_write_frame`, `_skip_frame`,
`_finish_arrays` and `read_frame` (see `regions.py` for backends that write
array regions, `acquire_zarr.py` for a streaming one).
"""

from __future__ import annotations

import copy
import json
import shutil
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..._frame_metadata import FrameRecords, MetadataJSON, RecordSpill
from ..._missing import MissingFrames, missing_frames
from ..._settings import AcquisitionSettings
from ..backend import ArrayBackend
from . import ngff
from .layout import (
    NAMESPACE,
    ImageLocation,
    group_attributes,
    hierarchy_ome,
    image_locations,
    image_ome,
    image_section,
    prepare_store,
    write_group,
)


@dataclass
class ZarrImage:
    """One position's image group and what has been stored in its array."""

    location: ImageLocation
    written: np.ndarray  # True where a frame's pixels were given (not skipped)
    records: FrameRecords = field(default_factory=FrameRecords)
    extent: int = 0  # frames reached along the unbounded axis (max index + 1)


@dataclass
class _Group:
    ome: dict[str, Any] | None  # NGFF metadata; None for a plain group
    kind: str | None  # ngff.group_kind of `ome`
    user: dict[str, Any] = field(default_factory=dict)
    image: int | None = None  # position index when this is an image group


class ZarrBackend(ArrayBackend):
    """An OME-Zarr v0.5 store: groups and metadata here, arrays in subclasses."""

    def __init__(self, settings: AcquisitionSettings) -> None:
        super().__init__(settings)
        self.root = settings.output_path
        self._locations = image_locations(settings)
        self._images: list[ZarrImage] = []
        self._groups: dict[str, _Group] = {}
        self._index_shape = tuple(d.count for d in settings.storage_index_dimensions)
        self._unbounded_axis = next(
            (i for i, count in enumerate(self._index_shape) if count is None), None
        )
        self._closed = False
        # every frame's metadata, kept for the group documents at close; its
        # file beside the store, not in it (an open file there - named until
        # closed on Windows, `.nfs...` on NFS - keeps the store from being
        # deleted while the stream object lives)
        self._spill = RecordSpill(self.root.parent)

    @property
    def output_root(self) -> Path:
        return self.root

    # ----------------------------------------------------------------- hooks

    @abstractmethod
    def _open_arrays(self) -> None:
        """Create one array per image (`self._images`) at its `array_path`."""

    @abstractmethod
    def _write_frame(
        self,
        position_index: int,
        image: ZarrImage,
        storage_index: tuple[int, ...],
        frame: np.ndarray,
        frame_metadata: MetadataJSON | None,
    ) -> None:
        """Store the pixels; journal the frame once they are in the file."""

    @abstractmethod
    def _skip_frame(
        self, position_index: int, image: ZarrImage, storage_index: tuple[int, ...]
    ) -> None:
        """No frame will come for `storage_index` (it stays the fill value)."""

    @abstractmethod
    def _finish_arrays(self) -> None:
        """Write everything buffered and give each array its final shape
        (`final_index_shape` + the frame)."""

    # ----------------------------------------------------------------- open

    def open(self) -> None:
        settings = self.settings
        prepare_store(self.root, settings.overwrite)
        for path, ome in hierarchy_ome(settings, self._locations).items():
            kind = None if ome is None else ngff.group_kind(ome)
            self._groups[path] = _Group(ome, kind)
        initial = tuple(0 if c is None else c for c in self._index_shape)
        for position_index, location in enumerate(self._locations):
            ome = image_ome(settings, location)
            self._groups[location.group_path] = _Group(
                ome, "image", image=position_index
            )
            self._images.append(
                ZarrImage(
                    location, np.zeros(initial, bool), records=self._spill.records()
                )
            )
        try:
            for path in self._groups:
                self._write_group(path)
            self._open_arrays()
        except BaseException:
            # the store is ours (prepare_store made way for it): leave no
            # half-made store behind to block a retry
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    # ---------------------------------------------------------------- frames

    def write(
        self,
        position_index: int,
        storage_index: tuple[int, ...],
        frame: np.ndarray,
        frame_metadata: MetadataJSON | None,
    ) -> None:
        image = self._images[position_index]
        self._reach(image, storage_index)
        # recorded first: a write that fails in flight later forgets it
        image.written[storage_index] = True
        if frame_metadata is not None:
            image.records.append(storage_index, frame_metadata)
        try:
            self._write_frame(
                position_index, image, storage_index, frame, frame_metadata
            )
        except BaseException:
            self._forget(position_index, [storage_index])
            raise

    def _forget(
        self, position_index: int, storage_indices: list[tuple[int, ...]]
    ) -> None:
        """Frames whose write failed: no longer written (so listed missing),
        their metadata dropped."""
        image = self._images[position_index]
        for storage_index in storage_indices:
            image.written[storage_index] = False
        image.records.discard(set(storage_indices))

    def skip(self, position_index: int, storage_index: tuple[int, ...]) -> None:
        image = self._images[position_index]
        self._reach(image, storage_index)
        self._skip_frame(position_index, image, storage_index)

    def _reach(self, image: ZarrImage, storage_index: tuple[int, ...]) -> None:
        """Grow the unbounded axis of the written-mask to hold `storage_index`."""
        axis = self._unbounded_axis
        if axis is None:
            return
        needed = storage_index[axis] + 1
        if needed <= image.extent:
            return
        image.extent = needed
        current = image.written.shape[axis]
        if needed > current:
            pad = [(0, 0)] * image.written.ndim
            pad[axis] = (0, max(needed, 2 * current) - current)
            image.written = np.pad(image.written, pad)

    def was_written(self, position_index: int, storage_index: tuple[int, ...]) -> bool:
        """Whether a frame's pixels were given for `storage_index` (IndexError
        for a position or index outside the array)."""
        image = self._images[position_index]
        index = tuple(storage_index)
        if len(index) != len(self._index_shape):
            raise IndexError(
                f"storage_index {index} has {len(index)} entries; the arrays have "
                f"{len(self._index_shape)} index axes "
                f"{[d.name for d in self.settings.storage_index_dimensions]}."
            )
        for axis, (i, count) in enumerate(zip(index, self._index_shape)):
            if i < 0 or (count is not None and i >= count):
                raise IndexError(
                    f"storage_index {index} is outside the array (axis {axis} has "
                    f"{count} entries)."
                )
        if any(i >= n for i, n in zip(index, image.written.shape)):
            return False  # past the data on the unbounded axis
        return bool(image.written[index])

    def final_index_shape(self, image: ZarrImage) -> tuple[int, ...]:
        """The index shape at close: the unbounded axis sized to the data."""
        return tuple(
            max(image.extent, 1) if count is None else count
            for count in self._index_shape
        )

    def _missing(self, image: ZarrImage) -> MissingFrames:
        """The frames that never arrived or were
        skipped (they read as the fill value, 0; the record tells them from
        real zeros). See `_missing.py`."""
        shape = self.final_index_shape(image)
        written = image.written
        pad = [(0, max(0, s - w)) for s, w in zip(shape, written.shape)]
        if any(after for _, after in pad):
            written = np.pad(written, pad)
        return missing_frames(written[tuple(slice(0, s) for s in shape)])

    # -------------------------------------------------------------- metadata

    def set_global_metadata(self, namespace: str, metadata: dict[str, Any]) -> None:
        self._groups[""].user[namespace] = metadata
        self._write_group("")

    def _attributes(self, path: str, *, for_file: bool) -> dict[str, Any]:
        """A group's attributes; `for_file`: as written to its zarr.json (with
        every frame's metadata), else without the per-frame metadata."""
        group = self._groups[path]
        section = None
        if group.image is not None:
            image = self._images[group.image]
            section = image_section(
                image.location,
                image.records if for_file else [],
                self._missing(image) if self._closed else None,
                for_file=for_file,
            )
        return group_attributes(group.ome, section, group.user)

    def _write_group(self, path: str) -> None:
        write_group(self.root, path, self._attributes(path, for_file=True))

    def get_metadata(self) -> dict[str, dict[str, Any]]:
        """Every group's attributes by group path ("" is the root), copied;
        without the per-frame metadata list (`ome_stream.frame_metadata`)."""
        return {
            path: copy.deepcopy(self._attributes(path, for_file=False))
            for path in self._groups
        }

    def update_metadata(self, metadata: dict[str, dict[str, Any]]) -> None:
        """Replace the user attributes of the groups named in `metadata`.

        An `ome` key replaces the group's NGFF metadata after validation
        (yaozarrs NGFF 0.5 models, and the children it names must be the
        ones in the store); without it the NGFF metadata is kept. Each
        document is rewritten at once (atomically) and kept by the documents
        written later (global metadata, close). `ome_stream` is ours: it may
        only come back unchanged. Nothing changes if any group fails:
        KeyError for an unknown group path, TypeError for a value that is not
        a dict of JSON data, ValueError for a changed `ome_stream` or invalid
        `ome`.
        """
        if not isinstance(metadata, dict):
            raise TypeError(
                "metadata must be a dict of {group path: attributes dict}, got "
                f"{type(metadata).__name__}."
            )
        updates: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {}
        for path, attributes in metadata.items():
            group = self._groups.get(path)
            if group is None:
                raise KeyError(
                    f"No group {path!r} in this store; its groups are "
                    f"{list(self._groups)} ('' is the root)."
                )
            if not isinstance(attributes, dict):
                raise TypeError(
                    f"The attributes of group {path!r} must be a dict, got "
                    f"{type(attributes).__name__}."
                )
            user = _json_copy(attributes, path)
            if NAMESPACE in user:
                # ours: accepted back only unchanged (as get_metadata gave it)
                current = self._attributes(path, for_file=False)
                ours = _json_copy(current, path).get(NAMESPACE)
                if user.pop(NAMESPACE) != ours:
                    raise ValueError(
                        f"The {NAMESPACE!r} attributes (group {path!r}) are written "
                        "by ome-stream and cannot be changed; leave that key out "
                        "or as get_metadata returned it."
                    )
            ome = (
                self._checked_ome(path, group, user.pop("ome"))
                if "ome" in user
                else None
            )
            updates[path] = (ome, user)
        for path, (ome, user) in updates.items():
            group = self._groups[path]
            if ome is not None:
                group.ome = ome
            group.user = user
            self._write_group(path)

    def _checked_ome(self, path: str, group: _Group, ome: Any) -> dict[str, Any]:
        where = f"attributes['ome'] of group {path!r}"
        if group.ome is None or group.kind is None:
            raise ValueError(
                f"{where}: group {path!r} is a plain group (e.g. a plate row); "
                "OME-NGFF defines no metadata for it."
            )
        strict = group.kind != "image" or self.settings.storage_order == "ome"
        try:
            ngff.validate_group(group.kind, ome, strict=strict)
        except ValueError as exc:
            raise ValueError(
                f"{where} is not valid OME-NGFF 0.5 {group.kind} metadata: {exc}"
            ) from exc
        wanted = ngff.referenced_paths(group.ome)
        given = ngff.referenced_paths(ome)
        if given != wanted:
            raise ValueError(
                f"{where} refers to {sorted(given)}; this store has {sorted(wanted)} "
                "there."
            )
        if group.kind == "image":
            names = [d.name for d in self.settings.array_storage_dimensions]
            if ngff.axis_counts(ome) != {len(names)}:
                raise ValueError(
                    f"{where}: every multiscale needs {len(names)} axes, one per "
                    f"array dimension {names}."
                )
        return dict(ome)

    # ----------------------------------------------------------------- close

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._finish_arrays()
        for path in self._groups:
            self._write_group(path)


def _json_copy(attributes: dict[str, Any], path: str) -> dict[str, Any]:
    """A deep copy through JSON, or TypeError naming the group."""
    try:
        copied: dict[str, Any] = json.loads(json.dumps(attributes, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"The attributes of group {path!r} must be JSON data (str, number, "
            f"bool, None, list, dict with str keys; no NaN): {exc}"
        ) from None
    return copied
