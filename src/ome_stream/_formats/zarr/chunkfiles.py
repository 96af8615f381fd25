"""Whole uncompressed chunks written straight to their files.

Without compression or sharding a Zarr v3 chunk file is nothing but the
chunk's bytes, little-endian, C order (zarr v3 core spec, "bytes" codec), at
the key `c/<i>/<j>/...` (the "default" chunk key encoding). When every write
covers whole chunks, as the region backends' writes do once a chunk spans the
whole frame, a chunk can be written with plain `write`s (of at most
`backend.WRITE_PIECE_BYTES` each) instead of going through a library: on
tmpfs that took 2048² frames from ~0.7x to ~0.8x a raw write, with a third
less CPU (docs/performance.md). Files are written by a few threads
(`regions.py`), so that the file system's per-file work overlaps.
Readers see the same array; only a chunk equal to the fill value, which
tensorstore would leave out, is stored.

Uncompressed shards of whole frames are written the same way
(`ShardFiles`): a shard file is its inner chunks one after the other, then
an index of (offset, length) pairs with its CRC-32C (zarr v3
"sharding_indexed" codec, index at the end). With one chunk per frame the
inner chunks are the write block's bytes as they are, so a shard of 100
256 x 256 frames is 13 MB of writes (and one of its index), without
tensorstore's copies while it encodes the shard: 4000 such frames went from
12 300 to 13 900 frames/s here (12 600 to 14 800 with `append(copy=False)`;
medians of 5 alternated runs), and varied less from run to run. Shards
under MIN_DIRECT_CHUNK_BYTES stay with tensorstore, as chunks do.

Each chunk is written to a hidden temporary file beside its key and renamed
into place once complete, so a reader (or a killed process) never sees a
partial chunk; `recover` deletes temporaries a kill left behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import numpy as np

from ..._settings import AcquisitionSettings
from .. import backend
from .arrays import chunk_shape, shard_shape

PARTIAL_SUFFIX = ".partial"
Region = tuple[slice | int, ...]
# Smaller chunks stay with tensorstore: for them the cost is the file
# system's per-file work, which tensorstore's I/O threads overlap without
# the GIL; Python threads doing the same (one file per 256 x 256 frame at
# 1000 frames/s) made `append` wait for the GIL (p99 0.8-4 ms against
# ~0.2 ms), and one thread fell behind the disk's slow moments.
MIN_DIRECT_CHUNK_BYTES = 256 * 2**10


def writes_whole_chunks(settings: AcquisitionSettings) -> bool:
    """Whether chunk files are written directly: no codec but `bytes`, no
    sharding, each chunk spans whole frames (so every region write of a frame
    or a write block is one whole chunk) and holds at least
    MIN_DIRECT_CHUNK_BYTES."""
    chunks = chunk_shape(settings)
    nbytes = math.prod(chunks) * np.dtype(settings.dtype).itemsize
    return (
        settings.compression in (None, "none")
        and shard_shape(settings) is None
        and chunks[-2:] == tuple(settings.frame_shape)
        and nbytes >= MIN_DIRECT_CHUNK_BYTES
    )


def writes_whole_shards(settings: AcquisitionSettings) -> bool:
    """Whether shard files are written directly (`ShardFiles`): sharded, no
    codec inside the shards but `bytes`, chunks and shards spanning whole
    frames (so every write block is one shard), and a shard of at least
    MIN_DIRECT_CHUNK_BYTES (smaller ones stay with tensorstore, as chunks
    do)."""
    shards = shard_shape(settings)
    frame = tuple(settings.frame_shape)
    return (
        settings.compression in (None, "none")
        and shards is not None
        and shards[-2:] == frame
        and chunk_shape(settings)[-2:] == frame
        and math.prod(shards) * np.dtype(settings.dtype).itemsize
        >= MIN_DIRECT_CHUNK_BYTES
    )


# zarr-python's (3.1.3 on): the chunk's key, a random hex name, ".partial"
_ZARR_PYTHON_PARTIAL = re.compile(r"[^.]+\.[0-9a-f]{32}\.partial")


def partial_files(array_dir: Path) -> list[Path]:
    """Temporary chunk files a killed writer left in the array at `array_dir`:
    ours (hidden: `.<key>.partial`) and zarr-python's (`<key>.<hex>.partial`,
    its local store writing each chunk file to a temporary renamed into
    place)."""
    chunks = array_dir / "c"
    if not chunks.is_dir():
        return []
    return [
        p
        for p in chunks.rglob(f"*{PARTIAL_SUFFIX}")
        if p.is_file()
        and (p.name.startswith(".") or _ZARR_PYTHON_PARTIAL.fullmatch(p.name))
    ]


class ChunkFiles:
    """Writes one array's chunks, each a whole chunk, to their files."""

    def __init__(self, array_dir: Path, chunks: tuple[int, ...], dtype: np.dtype):
        self.array_dir = array_dir
        self.chunks = chunks
        # zarr v3 "bytes" codec: little-endian (no byte order for one byte)
        self.dtype = dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype
        self._made: set[str] = set()

    def _directory(self, coords: tuple[int, ...]) -> str:
        """The directory of the chunks at `coords` (all but the last axis),
        made if need be: one `mkdir` per missing level, the levels above
        known to exist (a failed `mkdir` costs as much as one that works)."""
        path = os.path.join(self.array_dir, "c")
        if path not in self._made:
            os.makedirs(path, exist_ok=True)
            self._made.add(path)
        for c in coords:
            path = os.path.join(path, str(c))
            if path not in self._made:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path)
                self._made.add(path)
        return path

    def chunk_of(self, region: Region) -> tuple[int, ...]:
        """The chunk `region` starts at; it must start on a chunk boundary and
        span at most one chunk (a region is an index or a slice per axis)."""
        coords = []
        for axis, (r, size) in enumerate(zip(region, self.chunks)):
            start = r if isinstance(r, int) else (r.start or 0)
            stop = start + 1 if isinstance(r, int) else r.stop
            if start % size or (stop is not None and stop - start > size):
                raise ValueError(
                    f"region {region} does not start a whole chunk on axis {axis} "
                    f"(chunk shape {self.chunks})"
                )
            coords.append(start // size)
        return (*coords, *([0] * (len(self.chunks) - len(coords))))

    def _pixels(self, region: Region, data: np.ndarray) -> np.ndarray:
        """`data` shaped as the part of the chunk `region` covers (an index
        drops its axis from `data`; axes past the region, the frame's, are
        whole), little-endian."""
        data = np.asarray(data)
        if data.ndim != len(self.chunks):
            extent = [
                1 if isinstance(r, int) else r.stop - (r.start or 0) for r in region
            ]
            extent += self.chunks[len(region) :]
            data = data.reshape(extent)
        return data.astype(self.dtype, copy=False)

    def write(self, region: Region, data: np.ndarray) -> None:
        """Write the chunk at `region` from `data` (the region's pixels; a
        region cut short by the array's end is padded with the fill value)."""
        coords = self.chunk_of(region)
        self._store(coords, [_padded(self._pixels(region, data), self.chunks)])

    def _store(self, coords: tuple[int, ...], buffers: list[np.ndarray]) -> None:
        """Write the file of the chunk (or shard) at `coords`: the buffers'
        bytes one after the other, to a temporary renamed into place."""
        directory = self._directory(coords[:-1])
        name = str(coords[-1])
        final = os.path.join(directory, name)
        temporary = os.path.join(directory, f".{name}{PARTIAL_SUFFIX}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        fd = os.open(temporary, flags, 0o666)  # (binary: no newline translation)
        try:
            for buffer in buffers:
                view = np.ascontiguousarray(buffer).data.cast("B")
                while view:
                    written = os.write(fd, view[: backend.WRITE_PIECE_BYTES])
                    if written <= 0:
                        raise OSError(f"no bytes written to {temporary}")
                    view = view[written:]
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        os.close(fd)
        os.replace(temporary, final)


# The sharding codec's index entry of an inner chunk that is not stored
_NOT_STORED = 2**64 - 1


class ShardFiles(ChunkFiles):
    """Writes one array's uncompressed shards, each whole, to their files
    (zarr v3 "sharding_indexed" codec: inner chunks with the `bytes` codec,
    the index at the end with the `bytes` and `crc32c` codecs, as
    `arrays.array_metadata` declares)."""

    def __init__(
        self,
        array_dir: Path,
        shards: tuple[int, ...],
        chunks: tuple[int, ...],
        dtype: np.dtype,
    ):
        super().__init__(array_dir, shards, dtype)
        self.inner = chunks
        self.grid = tuple(s // c for s, c in zip(shards, chunks))
        self.chunk_bytes = math.prod(chunks) * dtype.itemsize
        # one chunk per index: the region's bytes in C order are the inner
        # chunks it covers, in C order
        self.frame_chunks = all(c == 1 for c in chunks[:-2])

    def write(self, region: Region, data: np.ndarray) -> None:
        """Write the shard at `region` from `data` (the region's pixels, cut
        short by the array's end: inner chunks past it are not stored)."""
        coords = self.chunk_of(region)
        pixels = self._pixels(region, data)
        index = np.full((*self.grid, 2), _NOT_STORED, dtype="<u8")
        if self.frame_chunks:
            buffers = [pixels]
            count = math.prod(pixels.shape[:-2])
            covered: tuple[slice | int, ...] = tuple(
                slice(0, n) for n in pixels.shape[:-2]
            )
            cells = index.reshape(*self.grid[:-2], 2)  # (one cell a frame)
            cells[(*covered, 0)] = (
                np.arange(count, dtype="<u8").reshape(pixels.shape[:-2])
                * self.chunk_bytes
            )
            cells[(*covered, 1)] = self.chunk_bytes
        else:
            buffers = []
            for cell in np.ndindex(*self.grid):
                where = tuple(
                    slice(i * c, (i + 1) * c) for i, c in zip(cell, self.inner)
                )
                piece = pixels[where]
                if piece.size == 0:
                    continue  # past the array's end
                index[cell] = (len(buffers) * self.chunk_bytes, self.chunk_bytes)
                buffers.append(_padded(piece, self.inner))
        encoded = index.tobytes()
        checksum = google_crc32c.value(encoded).to_bytes(4, "little")
        buffers.append(np.frombuffer(encoded + checksum, np.uint8))
        self._store(coords, buffers)

    def write_frames(
        self, region: Region, data: np.ndarray, present: np.ndarray
    ) -> None:
        """Write the shard at `region` (a shard of one inner chunk a frame:
        `frame_chunks`) holding only the frames `present` marks (a bool per
        frame of `data`, the region's pixels), taken from `data` as they
        are: the others are not stored, and read as the fill value. For a
        shard still being filled (`regions.PAUSE_WRITE_S`): no copy of it
        is made."""
        assert self.frame_chunks, "one inner chunk a frame"
        coords = self.chunk_of(region)
        pixels = self._pixels(region, data)
        index = np.full((*self.grid, 2), _NOT_STORED, dtype="<u8")
        cells = index.reshape(*self.grid[:-2], 2)  # (one cell a frame)
        buffers: list[np.ndarray] = []
        for frame in zip(*np.nonzero(present)):  # (C order)
            cells[frame] = (len(buffers) * self.chunk_bytes, self.chunk_bytes)
            buffers.append(pixels[frame])
        encoded = index.tobytes()
        checksum = google_crc32c.value(encoded).to_bytes(4, "little")
        buffers.append(np.frombuffer(encoded + checksum, np.uint8))
        self._store(coords, buffers)


def _padded(pixels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`pixels`, or where the array's end cuts them short, a `shape` chunk
    holding them and the fill value (0) around them."""
    if pixels.shape == shape:
        return pixels
    full = np.zeros(shape, pixels.dtype)
    full[tuple(slice(0, n) for n in pixels.shape)] = pixels
    return full


def stored_chunks(
    array_dir: Path, grid: tuple[int, ...], shape: tuple[int, ...]
) -> Iterator[tuple[Path, tuple[slice, ...]]]:
    """The chunk (or shard) files stored in the array at `array_dir`, each
    with the region of the array it holds: the keys `c/<i>/<j>/...` of the
    "default" chunk key encoding, `grid` being the chunk grid's shape (the
    shard shape when sharded). Files that are not chunk keys (temporaries)
    and chunks wholly past the array's `shape` are left out. The directories
    are walked as they are listed (not sorted), holding one open listing per
    level: a store of a million chunk files is not held in memory."""

    def walk(
        directory: str, cell: tuple[int, ...]
    ) -> Iterator[tuple[str, tuple[int, ...]]]:
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if not (name.isascii() and name.isdigit()) or name != str(int(name)):
                    continue  # not a chunk key part
                index = (*cell, int(name))
                if len(index) == len(grid):
                    if entry.is_file():
                        yield entry.path, index
                elif entry.is_dir():
                    yield from walk(entry.path, index)

    chunks = array_dir / "c"
    if not grid or not chunks.is_dir():
        return
    for path, index in walk(str(chunks), ()):
        region = tuple(
            slice(i * g, min((i + 1) * g, n)) for i, g, n in zip(index, grid, shape)
        )
        if all(r.start < r.stop for r in region):
            yield Path(path), region
