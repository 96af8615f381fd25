"""Reading pages back from a TIFF file that may still be growing.

tifffile's TiffFile indexes the IFD chain once and caches file sizes and
buffers, so it does not see pages appended after it was opened. Here the IFD
chain is followed directly, as TIFF 6.0 section 2 ("Image File Directory")
and the BigTIFF specification define it, with unbuffered reads; each page is
then decoded by tifffile (`TiffPage` read at its IFD offset, which tifffile
documents), whatever its compression.

Page offsets are learned once and kept, so reading page n costs one IFD
parse, not a walk from the first page.
"""

from __future__ import annotations

import os
import struct
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import tifffile


class PageReader:
    """Decodes page number `n` (IFD order) of one TIFF file.

    Call `close` when done; after that the reader still works, opening and
    closing the file for each read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offsets = array("Q")  # IFD offset of each page found so far
        self._entry_format: tuple[str, int, int, str] | None = None
        self._fd: int | None = None
        self._tif: Any = None  # tifffile.TiffFile kept open while it is current
        self._keep_open = True

    def read(self, page: int) -> np.ndarray:
        """The pixels of page `page`. The writer must have flushed it."""
        try:
            offset, end = self._locate(page)
            tif = self._tiff_file(end)
            tif.filehandle.seek(offset)
            data: np.ndarray = tifffile.TiffPage(tif, index=page).asarray()
            return data
        finally:
            if not self._keep_open:
                self._release()

    def close(self) -> None:
        """Release the file; later reads open it for the time of the read."""
        self._keep_open = False
        self._release()

    def _release(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------ IFD chain

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def _read_exact(self, size: int, offset: int) -> bytes:
        data = os.pread(self._descriptor(), size, offset)
        if len(data) != size:
            raise RuntimeError(
                f"internal error: {self.path.name} ends at byte {offset + len(data)} "
                f"inside an IFD"
            )
        return data

    def _header(self) -> tuple[str, int, int, str]:
        """(byte order, count size, entry size, offset format) and the first
        IFD's offset, from the 8- or 16-byte header."""
        if self._entry_format is None:
            head = self._read_exact(16, 0)
            order = {b"II": "<", b"MM": ">"}.get(head[:2])
            if order is None:
                raise RuntimeError(f"internal error: {self.path.name} is not a TIFF")
            (version,) = struct.unpack(order + "H", head[2:4])
            if version == 43:  # BigTIFF: 8-byte counts and offsets, 20-byte entries
                self._entry_format = (order, 8, 20, "Q")
                (first,) = struct.unpack(order + "Q", head[8:16])
            else:  # classic TIFF: 2-byte counts, 12-byte entries, 4-byte offsets
                self._entry_format = (order, 2, 12, "I")
                (first,) = struct.unpack(order + "I", head[4:8])
            self._offsets.append(first)
        return self._entry_format

    def _next_offset(self, offset: int) -> int:
        order, count_size, entry_size, offset_format = self._header()
        count_format = order + ("Q" if count_size == 8 else "H")
        (entries,) = struct.unpack(count_format, self._read_exact(count_size, offset))
        pointer = offset + count_size + entries * entry_size
        size = struct.calcsize(offset_format)
        (following,) = struct.unpack(
            order + offset_format, self._read_exact(size, pointer)
        )
        return int(following)

    def _locate(self, page: int) -> tuple[int, int]:
        """Offset of the page's IFD and where the page's bytes end at the
        latest (the next IFD, or the end of the file)."""
        self._header()
        while len(self._offsets) <= page + 1:
            following = self._next_offset(self._offsets[-1])
            if following == 0:
                break
            self._offsets.append(following)
        if page >= len(self._offsets):
            raise RuntimeError(
                f"internal error: {self.path.name} has {len(self._offsets)} pages, "
                f"page {page} was asked for"
            )
        if page + 1 < len(self._offsets):
            # tifffile appends pages one after the other, each IFD first
            end = self._offsets[page + 1]
        else:
            end = os.fstat(self._descriptor()).st_size
        return self._offsets[page], end

    def _tiff_file(self, end: int) -> Any:
        """An open TiffFile that knows the file up to byte `end`; reopened
        when the file has grown since (tifffile checks offsets against the
        size it saw at open)."""
        if self._tif is not None and self._tif.filehandle.size < end:
            self._tif.close()
            self._tif = None
        if self._tif is None:
            self._tif = tifffile.TiffFile(self.path)
        return self._tif
