"""Zarr v3 array metadata (chunks, shards, codecs) and write-block buffering."""

from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._refs import LOCAL_ONLY
from ..._settings import AcquisitionSettings

# Written in the normal form tensorstore writes (and reads back), so that every
# backend's zarr.json is the same document: `endian` only where the data type
# has more than one byte (zarr v3 core spec, "bytes" codec), and the sharding
# codec's `index_location` left at its default, "end".
_BYTES_LE = {"name": "bytes", "configuration": {"endian": "little"}}


def _bytes_codec(itemsize: int) -> dict[str, Any]:
    return _BYTES_LE if itemsize > 1 else {"name": "bytes"}


def compression_codecs(compression: str | None, itemsize: int) -> list[dict[str, Any]]:
    """Zarr v3 codec list after `bytes` (zarr v3 core spec, blosc/zstd codecs)."""
    if compression in (None, "none"):
        return []
    if compression in ("blosc-zstd", "blosc-lz4"):
        cname = compression.split("-", 1)[1]
        return [
            {
                "name": "blosc",
                "configuration": {
                    "cname": cname,
                    "clevel": 3 if cname == "zstd" else 5,
                    "shuffle": "shuffle" if itemsize > 1 else "bitshuffle",
                    "typesize": itemsize,
                    "blocksize": 0,
                },
            }
        ]
    if compression == "zstd":
        return [{"name": "zstd", "configuration": {"level": 3, "checksum": False}}]
    raise ValueError(f"compression {compression!r} is not a zarr codec")


def chunk_shape(settings: AcquisitionSettings) -> tuple[int, ...]:
    """Chunk shape in storage order: `chunk_size`, else 1 (index) / full (frame)."""
    dims = settings.array_storage_dimensions
    n_index = len(dims) - 2
    shape = []
    for axis, dim in enumerate(dims):
        default = 1 if axis < n_index else (dim.count or 1)
        size = dim.chunk_size or default
        if dim.count is not None:
            size = min(size, dim.count)
        shape.append(size)
    return tuple(shape)


def shard_shape(settings: AcquisitionSettings) -> tuple[int, ...] | None:
    """Shard shape in storage order (chunks x shard_size_chunks), or None."""
    dims = settings.array_storage_dimensions
    if not any(d.shard_size_chunks for d in dims):
        return None
    chunks = chunk_shape(settings)
    return tuple(c * (d.shard_size_chunks or 1) for c, d in zip(chunks, dims))


def array_metadata(
    settings: AcquisitionSettings, shape: tuple[int, ...]
) -> dict[str, Any]:
    """The zarr.json metadata of one position's array."""
    dtype = np.dtype(settings.dtype)
    codecs = [
        _bytes_codec(dtype.itemsize),
        *compression_codecs(settings.compression, dtype.itemsize),
    ]
    chunks = chunk_shape(settings)
    shards = shard_shape(settings)
    if shards is not None:
        codecs = [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(chunks),
                    "codecs": codecs,
                    "index_codecs": [_BYTES_LE, {"name": "crc32c"}],
                },
            }
        ]
    return {
        "shape": list(shape),
        "data_type": dtype.name,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": list(shards or chunks)},
        },
        "chunk_key_encoding": {"name": "default"},
        "fill_value": 0.0 if dtype.kind == "f" else 0,  # as tensorstore writes it
        "codecs": codecs,
        "dimension_names": [d.name for d in settings.array_storage_dimensions],
    }


def array_document(
    settings: AcquisitionSettings, shape: tuple[int, ...]
) -> dict[str, Any]:
    """The whole zarr.json of one position's array (zarr v3 core spec,
    "array metadata"), as every backend that writes it itself writes it."""
    return {"zarr_format": 3, "node_type": "array", **array_metadata(settings, shape)}


def write_block_shape(settings: AcquisitionSettings) -> tuple[int, ...]:
    """Frames to gather per index axis so that each write covers whole chunks
    (whole shards when sharded) and never reads-modifies-writes."""
    outer = shard_shape(settings) or chunk_shape(settings)
    return tuple(outer[:-2])


@dataclass
class _Block:
    data: np.ndarray
    expected: int
    # which frames were added (a slot `append` filled may never be: the
    # writer drops frames queued after a failure)
    set_frames: np.ndarray
    filled: int = 0
    # holds an earlier block's pixels: a skipped frame's slot is zeroed
    reused: bool = False


class BlockPool:
    """Blocks handed back once written, for the next blocks to reuse.

    A fresh block costs a page fault per 4 KiB on its first write (on this
    kind of VM that was most of the cost of buffering a 256 x 256 frame); a
    reused one does not. A block is reused only when nothing refers to it any
    more (tensorstore holds it until it has copied it). At most `max_bytes`
    of blocks wait here (at least one).
    """

    def __init__(self, max_bytes: int = 64 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._blocks: list[np.ndarray] = []
        self._lock = threading.Lock()  # the caller's thread takes (frame_slot)

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        with self._lock:
            return self._take(shape, dtype)

    def _take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        for i in range(len(self._blocks)):
            block = self._blocks[i]
            # held by the list and `block` only (see _refs; not enumerate:
            # its cached result tuple would be one more reference)
            if (
                block.shape == shape
                and block.dtype == dtype
                and sys.getrefcount(block) <= LOCAL_ONLY + 1
            ):
                del self._blocks[i]
                return block
        return None

    def give_back(self, block: np.ndarray) -> None:
        if block.base is not None:
            return  # a view: its base is what would be reused
        with self._lock:
            self._blocks.append(block)
            while len(self._blocks) > 1 and (
                sum(b.nbytes for b in self._blocks) > self.max_bytes
            ):
                self._blocks.pop(0)


class BlockBuffer:
    """Gathers frames into write blocks; hands back each block once complete.

    Several blocks may be open at once (e.g. chunks along z while channels
    interleave). Skipped frames count as filled: they stay zero (fill value).

    `slot` gives the caller's thread the place of a frame still to come, so
    that `append` copies the frame there directly (one copy fewer); the
    writer's `add` then only counts it. A lock guards the open blocks
    between the two threads (held briefly, never across I/O).
    """

    def __init__(
        self,
        block_shape: tuple[int, ...],
        index_shape: tuple[int | None, ...],
        frame_shape: tuple[int, int],
        dtype: np.dtype,
        pool: BlockPool | None = None,
    ) -> None:
        self.block_shape = block_shape
        self.index_shape = index_shape
        self.frame_shape = frame_shape
        self.dtype = dtype
        self.pool = pool
        self._blocks: dict[tuple[int, ...], _Block] = {}
        self._lock = threading.Lock()

    def _expected(self, key: tuple[int, ...]) -> int:
        sizes = []
        for k, block, count in zip(key, self.block_shape, self.index_shape):
            sizes.append(block if count is None else min(block, count - k * block))
        return math.prod(sizes)

    def _new_block(self, key: tuple[int, ...]) -> _Block:
        shape = self.block_shape + self.frame_shape
        reused = self.pool.take(shape, self.dtype) if self.pool else None
        added = np.zeros(self.block_shape, bool)
        if reused is None:
            return _Block(np.zeros(shape, self.dtype), self._expected(key), added)
        return _Block(reused, self._expected(key), added, reused=True)

    def _open_block(self, key: tuple[int, ...]) -> _Block:
        block = self._blocks.get(key)
        if block is None:
            block = self._blocks[key] = self._new_block(key)
        return block

    def slot(self, storage_index: tuple[int, ...]) -> np.ndarray:
        """Where the frame at `storage_index` goes (a view into its block,
        opened if need be); fill it, then `add` it."""
        key = tuple(i // b for i, b in zip(storage_index, self.block_shape))
        offset = tuple(i % b for i, b in zip(storage_index, self.block_shape))
        with self._lock:
            frame: np.ndarray = self._open_block(key).data[offset]
        return frame

    def add(
        self, storage_index: tuple[int, ...], frame: np.ndarray | None
    ) -> tuple[tuple[int, ...], np.ndarray] | None:
        """Add a frame (None: skipped). Returns (start, block) when complete."""
        key = tuple(i // b for i, b in zip(storage_index, self.block_shape))
        offset = tuple(i % b for i, b in zip(storage_index, self.block_shape))
        with self._lock:
            block = self._open_block(key)
            return self._add(key, offset, block, frame)

    def _add(
        self,
        key: tuple[int, ...],
        offset: tuple[int, ...],
        block: _Block,
        frame: np.ndarray | None,
    ) -> tuple[tuple[int, ...], np.ndarray] | None:
        if frame is not None:
            if frame.base is not block.data:  # not already in its slot
                block.data[offset] = frame
        elif block.reused:
            block.data[offset] = 0
        block.set_frames[offset] = True
        block.filled += 1
        if block.filled < block.expected:
            return None
        del self._blocks[key]
        return self._start(key), block.data

    def peek(self, storage_index: tuple[int, ...]) -> np.ndarray | None:
        """The frame at `storage_index` if its block is still open (a view)."""
        key = tuple(i // b for i, b in zip(storage_index, self.block_shape))
        with self._lock:
            block = self._blocks.get(key)
        if block is None:
            return None
        offset = tuple(i % b for i, b in zip(storage_index, self.block_shape))
        frame: np.ndarray = block.data[offset]
        return frame

    def _start(self, key: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(k * b for k, b in zip(key, self.block_shape))

    def added(
        self, key: tuple[int, ...]
    ) -> tuple[tuple[int, ...], np.ndarray, np.ndarray] | None:
        """The open block `key` as it is, not copied: its start, its data and
        which frames were added (a copy; only those may be read: `append`
        may be copying a frame into another slot), or None if not open.
        Call from the thread that adds frames."""
        with self._lock:
            block = self._blocks.get(key)
        if block is None:
            return None
        return self._start(key), block.data, block.set_frames.copy()

    def drain(self) -> list[tuple[tuple[int, ...], np.ndarray]]:
        """Every incomplete block (early close, unbounded tail), emptied."""
        blocks = []
        with self._lock:
            for key, block in self._blocks.items():
                # frames that never came (or were copied to their slot and
                # then dropped) read as the fill value
                block.data[~block.set_frames] = 0
                blocks.append((self._start(key), block.data))
            self._blocks.clear()
        return blocks

    @property
    def buffered_bytes(self) -> int:
        return sum(b.data.nbytes for b in self._blocks.values())
