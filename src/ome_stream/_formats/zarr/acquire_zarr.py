"""OME-Zarr backend streaming frames with acquire-zarr (>= 0.10).

Imported only when this backend is chosen (`pip install "ome-stream[acquire-zarr]"`).

acquire-zarr owns its arrays: one `ZarrStream` with one array per image,
fed each image's frames in acquisition order (it transposes to the storage
order itself, and buffers, compresses and writes chunks on its own
threads). It writes the arrays' zarr.json (always with a `sharding_indexed`
codec) and, at close, overwrites every group document between the store and
the arrays (acquire-zarr issue #186); everything else is ours, as for every
Zarr backend (`base.py`): the group documents are written at open, kept
current while streaming, and rewritten after acquire-zarr closes, so layout
and NGFF metadata match the other backends.

acquire-zarr gives no read access and does not say when a frame is on
disk, so:
- `read_frame` (the live view) answers from the frames this backend still
  holds (the most recent ones, at least two write blocks per image), then
  from the chunk files acquire-zarr has finished (read with tensorstore);
  a frame in neither reads as None (zeros). After close: from the file.
- The journal records each frame as received, never as written, so a
  killed process loses every frame to recovery (they are listed as missing;
  pixels acquire-zarr had written stay on disk).
- Skipped frames are appended as zero frames (listed as missing).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import Any

import acquire_zarr as az
import numpy as np

from ..._frame_metadata import MetadataJSON
from ..._settings import AcquisitionSettings
from .arrays import array_document, chunk_shape, compression_codecs, write_block_shape
from .base import ZarrBackend, ZarrImage
from .layout import ImageLocation, file_kvstore, write_json_atomic

_KINDS = {
    "time": az.DimensionType.TIME,
    "channel": az.DimensionType.CHANNEL,
    "space": az.DimensionType.SPACE,
}
_CODECS = {"zstd": az.CompressionCodec.BLOSC_ZSTD, "lz4": az.CompressionCodec.BLOSC_LZ4}
_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def _compression(settings: AcquisitionSettings) -> az.CompressionSettings | None:
    """The blosc settings of `compression_codecs` (the codec every other
    backend writes), in acquire-zarr's terms."""
    codecs = compression_codecs(settings.compression, np.dtype(settings.dtype).itemsize)
    if not codecs:
        return None
    (codec,) = codecs
    if codec["name"] != "blosc":  # excluded by acquire_zarr_incompatibility
        raise ValueError(f"acquire-zarr cannot write the {codec['name']!r} codec.")
    config = codec["configuration"]
    return az.CompressionSettings(
        compressor=az.Compressor.BLOSC1,
        codec=_CODECS[config["cname"]],
        level=config["clevel"],
        shuffle=_SHUFFLES[config["shuffle"]],
    )


class AcquireZarrBackend(ZarrBackend):
    """Frames streamed to acquire-zarr; group documents and records ours."""

    def __init__(self, settings: AcquisitionSettings) -> None:
        super().__init__(settings)
        self._stream: az.ZarrStream | None = None
        self._frames_sent: list[int] = []  # per image, frames handed over
        self._zero_frame = np.zeros(settings.frame_shape, np.dtype(settings.dtype))
        self._acquired_counts = [d.count for d in settings.index_dimensions]
        # acquisition axis of each stored axis
        self._permutation = settings.storage_index_permutation or tuple(
            range(len(self._acquired_counts))
        )
        self._readers: dict[int, Any] = {}
        # Frames kept for live reads until acquire-zarr has surely written
        # them: a byte budget of two write blocks per image, plus slack.
        self._recent: OrderedDict[tuple[int, tuple[int, ...]], np.ndarray] = (
            OrderedDict()
        )
        self._recent_bytes = 0
        block_frames = math.prod(write_block_shape(settings))
        self._recent_budget = (
            2 * block_frames * settings.frame_nbytes * len(settings.positions)
            + 32 * 2**20
        )

    # ----------------------------------------------------------------- open

    def _array_settings(self, location: ImageLocation) -> az.ArraySettings:
        settings = self.settings
        stored = settings.array_storage_dimensions
        chunks = dict(zip((d.name for d in stored), chunk_shape(settings)))
        frame_names = {d.name for d in settings.frame_dimensions}
        dimensions = []
        for dim in settings.array_dimensions:  # acquisition order
            if dim.name in frame_names:
                kind = az.DimensionType.SPACE
            else:
                kind = _KINDS.get(str(dim.type), az.DimensionType.OTHER)
            dimensions.append(
                az.Dimension(
                    name=dim.name,
                    kind=kind,
                    array_size_px=dim.count or 0,  # 0: the append dimension
                    chunk_size_px=chunks[dim.name],
                    shard_size_chunks=dim.shard_size_chunks or 1,
                )
            )
        array = az.ArraySettings(
            output_key=location.array_path,
            dimensions=dimensions,
            data_type=np.dtype(settings.dtype),
            compression=_compression(settings),
        )
        order = [d.name for d in stored]
        if order != [d.name for d in settings.array_dimensions]:
            array.storage_dimension_order = order
        return array

    def _open_arrays(self) -> None:
        arrays = [self._array_settings(image.location) for image in self._images]
        self._stream = az.ZarrStream(
            az.StreamSettings(
                store_path=str(self.root),
                arrays=arrays,
                overwrite=False,  # the store (our group documents) is prepared
            )
        )
        self._frames_sent = [0] * len(self._images)

    # ---------------------------------------------------------------- frames

    def _storage_index_of(self, number: int) -> tuple[int, ...]:
        """Storage index of an image's `number`-th frame in acquisition order."""
        acquired = []
        for count in reversed(self._acquired_counts[1:]):
            number, index = divmod(number, count or 1)
            acquired.append(index)
        acquired.append(number)  # the outermost axis (maybe unbounded)
        acquired.reverse()
        return tuple(acquired[axis] for axis in self._permutation)

    def _send(
        self, position_index: int, storage_index: tuple[int, ...], frame: np.ndarray
    ) -> None:
        if self._stream is None:
            raise RuntimeError("The acquire-zarr stream is closed.")
        number = self._frames_sent[position_index]
        expected = self._storage_index_of(number)
        if tuple(storage_index) != expected:
            raise RuntimeError(
                f"acquire-zarr writes each image's frames in acquisition order: "
                f"frame {storage_index} of image {position_index} came where "
                f"{expected} was next. Use backend='tensorstore' to place frames "
                "in any order."
            )
        self._stream.append(frame, key=self._images[position_index].location.array_path)
        self._frames_sent[position_index] = number + 1

    def _write_frame(
        self,
        position_index: int,
        image: ZarrImage,
        storage_index: tuple[int, ...],
        frame: np.ndarray,
        frame_metadata: MetadataJSON | None,
    ) -> None:
        self._send(position_index, storage_index, frame)
        self._keep_recent(position_index, storage_index, frame)
        if self.journal is not None:
            # acquire-zarr does not say when the pixels reach the file
            self.journal.received([(position_index, storage_index)])

    def _keep_recent(
        self, position_index: int, storage_index: tuple[int, ...], frame: np.ndarray
    ) -> None:
        # The frame is the stream's own copy: keeping a reference costs no copy.
        self._recent[(position_index, tuple(storage_index))] = frame
        self._recent_bytes += frame.nbytes
        while self._recent_bytes > self._recent_budget and len(self._recent) > 1:
            _, old = self._recent.popitem(last=False)
            self._recent_bytes -= old.nbytes

    def _skip_frame(
        self, position_index: int, image: ZarrImage, storage_index: tuple[int, ...]
    ) -> None:
        self._send(position_index, storage_index, self._zero_frame)
        if self.journal is not None:
            self.journal.skip(position_index, storage_index)

    # ------------------------------------------------------------------ read

    def read_frame(
        self, position_index: int, storage_index: tuple[int, ...]
    ) -> np.ndarray | None:
        """While streaming: a frame still held, else from a chunk file
        acquire-zarr has finished, else None. After close: from the file.
        None where no frame was written."""
        if not self.was_written(position_index, storage_index):
            return None
        if not self._closed:
            recent = self._recent.get((position_index, tuple(storage_index)))
            if recent is not None:
                return recent
            # The array and its finished chunks are on disk already; reopen
            # once if the cached handle fails (acquire-zarr grew the array).
            for reopen in (False, True):
                try:
                    return self._read_file(position_index, storage_index, reopen=reopen)
                except Exception:
                    continue
            return None  # a chunk being written: not readable yet
        return self._read_file(position_index, storage_index, reopen=False)

    def _read_file(
        self, position_index: int, storage_index: tuple[int, ...], *, reopen: bool
    ) -> np.ndarray:
        import tensorstore as ts

        reader = None if reopen else self._readers.get(position_index)
        if reader is None:
            # Reopened while streaming: acquire-zarr grows an unbounded axis.
            path = self.root / self._images[position_index].location.array_path
            spec = {"driver": "zarr3", "kvstore": file_kvstore(path)}
            reader = ts.open(spec, open=True, read=True).result()
            self._readers[position_index] = reader
        return np.asarray(reader[tuple(storage_index)].read().result())

    # ----------------------------------------------------------------- close

    def _finish_arrays(self) -> None:
        self._recent.clear()
        self._recent_bytes = 0
        self._readers.clear()  # opened while streaming: shapes may be stale
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
        frame_shape = self.settings.frame_shape
        for image in self._images:
            # acquire-zarr sizes the first axis to the frames it received and
            # writes no array at all without frames: give every array the
            # shape the other backends give it (metadata only).
            shape = list(self.final_index_shape(image) + frame_shape)
            path = self.root / image.location.array_path / "zarr.json"
            if not path.is_file():
                document = array_document(self.settings, tuple(shape))
                write_json_atomic(path, document, compact=True)
                continue
            document = json.loads(path.read_text(encoding="utf-8"))
            if document.get("shape") != shape:
                document["shape"] = shape
                write_json_atomic(path, document)
