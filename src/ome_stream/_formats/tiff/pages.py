"""Reading pages back from a TIFF file that may still be growing, and
appending uncompressed pages to it fast.

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
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile

from .. import backend

# more than the IFD of a page takes, with its entries and the values stored
# after them (PageAppender's and tifffile's pages: a dozen or two of tags)
_IFD_MAX_BYTES = 4096


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
        self._raw: Any = None  # the unbuffered file it reads
        self._keep_open = True

    def read(self, page: int) -> np.ndarray:
        """The pixels of page `page`. The writer must have flushed it."""
        try:
            offset = self._locate(page)
            # (the IFD, then its values, then its pixels: those of a page
            # appended since tifffile looked at the file are past the size
            # it knows, which it checks them against)
            tif = self._tiff_file(offset + _IFD_MAX_BYTES)
            tif.filehandle.seek(offset)
            parsed = tifffile.TiffPage(tif, index=page)
            end = _value_end(parsed)
            if tif.filehandle.size < end:
                tif = self._tiff_file(end)
                tif.filehandle.seek(offset)
                parsed = tifffile.TiffPage(tif, index=page)
            data: np.ndarray = parsed.asarray()
            return data
        finally:
            if not self._keep_open:
                self._release()

    def close(self) -> None:
        """Release the file; later reads open it for the time of the read."""
        self._keep_open = False
        self._release()

    def _release(self) -> None:
        self._close_tiff_file()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------ IFD chain

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        return self._fd

    def _read_exact(self, size: int, offset: int) -> bytes:
        data = read_at(self._descriptor(), size, offset)
        if len(data) != size:
            raise RuntimeError(
                f"internal error: {self.path.name} ends at byte {offset + len(data)} "
                f"inside an IFD"
            )
        return data

    def _header(self) -> tuple[str, int, int, str]:
        """(byte order, count size, entry size, offset format), the first
        IFD's offset noted, from the header (`FirstIfd`)."""
        if self._entry_format is None:
            first = FirstIfd.read(self._descriptor())
            self._entry_format = (
                first.order,
                first.count_size,
                first.entry_size,
                first.offset_format,
            )
            self._offsets.append(first.offset)
        return self._entry_format

    @property
    def offset_size(self) -> int:
        """Bytes of an offset in this file (4 classic TIFF, 8 BigTIFF)."""
        return struct.calcsize(self._header()[3])

    def link_field(self, offset: int) -> int:
        """Where the IFD at `offset` holds the next IFD's offset."""
        order, count_size, entry_size, _ = self._header()
        count_format = order + _COUNT_FORMATS[count_size]
        (entries,) = struct.unpack(count_format, self._read_exact(count_size, offset))
        return int(offset + count_size + entries * entry_size)

    def _next_offset(self, offset: int) -> int:
        order, _, _, offset_format = self._header()
        pointer = self.link_field(offset)
        size = struct.calcsize(offset_format)
        (following,) = struct.unpack(
            order + offset_format, self._read_exact(size, pointer)
        )
        return int(following)

    def _locate(self, page: int) -> int:
        """Offset of the page's IFD."""
        self._header()
        while len(self._offsets) <= page:
            following = self._next_offset(self._offsets[-1])
            if following == 0:
                break
            self._offsets.append(following)
        if page >= len(self._offsets):
            raise RuntimeError(
                f"internal error: {self.path.name} has {len(self._offsets)} pages, "
                f"page {page} was asked for"
            )
        return self._offsets[page]

    def chain(self, required: int = 0) -> array[int]:
        """The IFD offset of every page linked in the file, in chain order,
        up to the first link that leaves the file or turns back, or an IFD
        cut short (a file truncated or damaged since it was written: every
        writer here links each page after the ones before it). ValueError
        if that comes before `required` pages."""
        size = os.fstat(self._descriptor()).st_size
        try:
            self._header()
            while True:
                following = self._next_offset(self._offsets[-1])
                if following == 0:
                    return self._offsets
                if not self._offsets[-1] < following < size:
                    raise ValueError(
                        f"the IFD after page {len(self._offsets) - 1} would be at "
                        f"byte {following}, outside the file's {size} bytes"
                    )
                self._offsets.append(following)
        except (RuntimeError, ValueError) as exc:  # (RuntimeError: _read_exact)
            if len(self._offsets) >= required:
                return self._offsets  # damage past the pages needed only
            raise ValueError(str(exc).removeprefix("internal error: ")) from exc

    def _tiff_file(self, end: int) -> Any:
        """An open TiffFile that knows the file up to byte `end` (or its
        end); reopened when the file has grown since (tifffile checks
        offsets against the size it saw at open). It reads unbuffered: an
        IFD block is written after tifffile may have read (and a buffer
        would keep) the zeros that were there."""
        end = min(end, os.fstat(self._descriptor()).st_size)
        if self._tif is not None and self._tif.filehandle.size < end:
            self._close_tiff_file()
        if self._tif is None:
            raw = open(self.path, "rb", buffering=0)  # noqa: SIM115 (kept open)
            try:
                self._tif = tifffile.TiffFile(raw)
            except BaseException:
                raw.close()
                raise
            self._raw = raw
        return self._tif

    def _close_tiff_file(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None
        if self._raw is not None:
            self._raw.close()  # (a TiffFile leaves a handle it was given open)
            self._raw = None


# ------------------------------------------------------------------ writing

# TIFF field types (TIFF 6.0 section 2; LONG8 from the BigTIFF design)
_SHORT, _LONG, _LONG8 = 3, 4, 16
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8}
_TYPE_SIZES.update({11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8})
# Tags every appended page sets itself: the description (first page only)
# and the strip layout (one strip a page).
IMAGE_DESCRIPTION, _STRIP_OFFSETS, _ROWS_PER_STRIP, _STRIP_BYTE_COUNTS = (
    270,
    273,
    278,
    279,
)
_IMAGE_LENGTH, _COMPRESSION = 257, 259
# an IFD's entry count: 2 bytes (classic TIFF), 8 (BigTIFF)
_COUNT_FORMATS = {2: "H", 8: "Q"}


@dataclass(frozen=True)
class FirstIfd:
    """The first IFD of a TIFF file: its byte order and flavour (classic or
    BigTIFF), where it is, and its entries' bytes (with the next-IFD
    offset), as TIFF 6.0 section 2 and the BigTIFF design lay them out."""

    order: Literal["<", ">"]
    big: bool
    offset: int
    entries: int
    raw: bytes

    @classmethod
    def read(cls, fd: int) -> FirstIfd:
        head = read_at(fd, 16, 0)
        order: Literal["<", ">"]
        if head[:2] == b"II":
            order = "<"
        elif head[:2] == b"MM":
            order = ">"
        else:
            raise ValueError("not a TIFF file (no byte order mark)")
        (version,) = struct.unpack(order + "H", head[2:4])
        if version not in (42, 43):
            raise ValueError(f"not a TIFF file (version {version}, not 42 or 43)")
        big = version == 43
        offset_format = "Q" if big else "I"
        if len(head) < (16 if big else 8):
            raise ValueError("the file ends inside its TIFF header")
        (first,) = struct.unpack_from(order + offset_format, head, 8 if big else 4)
        if not first:
            raise ValueError("the file has no pages (its header links none)")
        count_size, entry_size, inline = (8, 20, 8) if big else (2, 12, 4)
        count_bytes = read_at(fd, count_size, first)
        if len(count_bytes) != count_size:
            raise ValueError("the file ends before its first IFD")
        (entries,) = struct.unpack(order + _COUNT_FORMATS[count_size], count_bytes)
        raw = read_at(fd, entries * entry_size + inline, first + count_size)
        if len(raw) != entries * entry_size + inline:
            raise ValueError("the file ends inside its first IFD")
        return cls(order, big, first, entries, raw)

    @property
    def offset_format(self) -> str:
        return "Q" if self.big else "I"

    @property
    def count_format(self) -> str:
        """The struct format of the IFD's entry count."""
        return _COUNT_FORMATS[self.count_size]

    @property
    def count_size(self) -> int:
        return 8 if self.big else 2

    @property
    def entry_size(self) -> int:
        return 20 if self.big else 12

    @property
    def inline(self) -> int:
        """Bytes of a value held in its entry."""
        return 8 if self.big else 4

    def tag(self, code: int) -> TagField:
        """Where tag `code` of this IFD is. KeyError if it has none."""
        for n in range(self.entries):
            at = n * self.entry_size
            found, kind = struct.unpack_from(self.order + "HH", self.raw, at)
            if found != code:
                continue
            (count,) = struct.unpack_from(
                self.order + self.offset_format, self.raw, at + 4
            )
            entry = self.offset + self.count_size + at
            value_at = entry + 4 + self.inline
            if _TYPE_SIZES.get(kind, 1) * count > self.inline:
                (value_at,) = struct.unpack_from(
                    self.order + self.offset_format, self.raw, at + 4 + self.inline
                )
            return TagField(entry, int(count), int(value_at))
        raise KeyError(f"tag {code} not in the first IFD")


@dataclass(frozen=True)
class TagField:
    """An IFD entry's offset in the file, its value count and where its
    value is (in the entry itself when it fits there)."""

    entry: int
    count: int
    value_offset: int


@dataclass
class DescriptionSlots:
    """Room for a first page's ImageDescription that is rewritten while the
    file may be read (by another process, or after a kill): two slots of
    `size` bytes, one after the other from `start`. A new text goes in the
    slot the tag does not point at, then the tag is pointed at it - its
    count and offset, side by side in one IFD entry, set by one write of 8
    bytes (16 in a BigTIFF) - so a reader finds the old text or the new one,
    never part of one (unless it reads the text more than a rewrite after
    it read the tag: rewrites are a second apart, but for the last).

    The file is made with the first text in the first slot and NULs over
    the rest of both (`initial`): tifffile counts a description up to the
    NULs that follow it and writes them all, to keep room for later ones."""

    start: int
    size: int  # bytes of a slot; a text in it with its NUL at most
    entry: int  # where the tag's IFD entry is
    number: str  # struct format of its count, and of its offset
    current: int = 0  # the slot the tag points at

    @staticmethod
    def initial(text: bytes, size: int) -> bytes:
        """The first description, `text` in the first of two slots of `size`
        bytes, for tifffile to write."""
        if len(text) + 2 > size:
            raise ValueError(f"a text of {len(text)} bytes in a slot of {size}")
        return text.ljust(2 * size, b"\0")

    @classmethod
    def find(cls, fd: int, size: int) -> DescriptionSlots:
        """The slots of a file whose first page has the `initial` text."""
        ifd = FirstIfd.read(fd)
        tag = ifd.tag(IMAGE_DESCRIPTION)
        if not ifd.inline < tag.count <= size:
            raise RuntimeError(
                f"internal error: the first ImageDescription counts {tag.count} "
                f"bytes, not those of a text in a slot of {size}"
            )
        number = ifd.order + ifd.offset_format
        return cls(tag.value_offset, size, tag.entry, number)

    def fits(self, nbytes: int) -> bool:
        """Whether a text of `nbytes` (its NUL included) fits in a slot."""
        return nbytes <= self.size

    def spare(self) -> int:
        """Where the next text goes: the slot the tag does not point at.
        (Write it there with its NUL, then `point` the tag at it.)"""
        return self.start + (1 - self.current) * self.size

    def point(self, fd: int, nbytes: int) -> None:
        """Make the text of `nbytes` (its NUL included) written in the spare
        slot the description."""
        if not self.fits(nbytes):
            raise RuntimeError(
                f"internal error: a description of {nbytes} bytes pointed at in "
                f"slots of {self.size}"
            )
        at = self.spare()
        fields = struct.pack(self.number + self.number[1:], nbytes, at)
        _write_fully(fd, [fields], self.entry + 4)
        self.current = 1 - self.current

    def write(self, fd: int, text: bytes) -> None:
        """Make `text` the description (see `spare` and `point`)."""
        if not self.fits(len(text) + 1):
            raise ValueError(f"a text of {len(text)} bytes in a slot of {self.size}")
        _write_fully(fd, [text, b"\0"], self.spare())
        self.point(fd, len(text) + 1)


@dataclass(frozen=True)
class ChainCut:
    """How to make a TIFF file end after its first `keep` pages (to take up
    writing a killed stream's file where its journal ends): the link out of
    the last kept page's IFD zeroed, and the file truncated after the kept
    pages' bytes (pages linked after them, and a page being written when the
    process was killed). `plan` reads the file and changes nothing, `apply`
    changes it."""

    path: Path
    keep: int
    pages: int  # pages linked in the file now
    link: int  # where that IFD's next-IFD offset is
    link_size: int
    end: int  # the kept pages' bytes (IFDs, values, pixels) end here

    @classmethod
    def plan(cls, path: Path, keep: int) -> ChainCut:
        """ValueError if the file does not hold `keep` >= 1 readable pages."""
        reader = PageReader(path)
        try:
            offsets = reader.chain(required=keep)
            if len(offsets) < keep:
                raise ValueError(
                    f"it links {len(offsets)} pages, not the {keep} written"
                )
            last = offsets[keep - 1]
            link = reader.link_field(last)
            link_size = reader.offset_size
            with tifffile.TiffFile(path) as tif:
                end = _value_end(tif.pages.first)  # (its OME-XML, where it is)
                tif.filehandle.seek(last)
                page = tifffile.TiffPage(tif, index=keep - 1)
                end = max(end, _value_end(page), link + link_size)
                page.asarray()  # its pixels are all there
        finally:
            reader.close()
        return cls(path, keep, len(offsets), link, link_size, end)

    def apply(self) -> None:
        with self.path.open("r+b") as f:
            f.seek(self.link)
            f.write(bytes(self.link_size))
            f.flush()
            if f.seek(0, os.SEEK_END) > self.end:
                f.truncate(self.end + self.end % 2)


def _value_end(page: Any) -> int:
    """Where the page's pixels and the tag values stored outside its IFD
    end."""
    end = 0
    for offset, count in zip(page.dataoffsets, page.databytecounts):
        end = max(end, offset + count)
    inline = 8 if page.parent.is_bigtiff else 4
    for tag in page.tags:
        if tag.valuebytecount > inline:
            end = max(end, tag.valueoffset + tag.valuebytecount)
    return int(end)


# The IFDs of appended pages are packed in blocks placed before the pixels
# of the pages they describe, so that the pixels follow one another as a raw
# write lays them out. Writes that start where the page cache's large folios
# do are ~20 % faster here than the same bytes behind a 200-byte IFD each
# (256 x 256 uint16: 24 000 vs 19 000 pages/s, single thread): blocks after
# the first end on a multiple of IFD_BLOCK_BYTES and hold at least half of
# it, so frames of a multiple of it start on one. The first block is small
# and where the file ends, so that a file of a few pages is hardly larger
# than its pixels (on file systems without holes too).
IFD_BLOCK_BYTES = 128 * 1024
FIRST_IFD_BLOCK_BYTES = 16 * 1024


class PageAppender:
    """Appends uncompressed pages, each a copy of the first page's tags.

    tifffile writes the first page (its ImageDescription holds the OME-XML)
    and is closed; from then on every page is an IFD packed once, of which
    only the offsets change from page to page, and the pixels as one strip.
    The pixels of successive pages follow one another; their IFDs go in
    blocks among them (a block starts where the next pixels would, which
    then follow it; see IFD_BLOCK_BYTES). A page costs three writes: its
    pixels (in pieces of at most `backend.WRITE_PIECE_BYTES`), its IFD,
    then four or eight bytes that link the previous IFD to it. A page is
    linked only once it is complete, so a reader of a killed file never
    follows a link to a partial page; the IFDs' offsets grow along the
    chain.

    Packing each page's IFD in Python is what limits tifffile to about 5000
    pages/s of 256 x 256.
    """

    def __init__(self, path: Path, after: ChainCut | None = None) -> None:
        """`after`: a cut the file was given, to append after its kept pages
        (by default the file holds one page)."""
        self.path = path
        self._fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            self._prepare(after)
        except BaseException:
            os.close(self._fd)
            raise

    def _prepare(self, after: ChainCut | None) -> None:
        ifd = FirstIfd.read(self._fd)
        order, big, inline = ifd.order, ifd.big, ifd.inline
        self._order = order
        count_format = ifd.count_format
        offset_format = ifd.offset_format
        count_size, entry_size = ifd.count_size, ifd.entry_size
        first, entries = ifd.offset, ifd.entries
        # (code, type, count, value bytes) of the first page's tags
        tags: dict[int, tuple[int, int, int, bytes]] = {}
        for n in range(entries):
            code, kind, count, value = struct.unpack_from(
                order + "HH" + offset_format + f"{inline}s", ifd.raw, n * entry_size
            )
            size = _TYPE_SIZES.get(kind, 1) * count
            if size > inline:
                (where,) = struct.unpack(order + offset_format, value)
                value = read_at(self._fd, size, where)
            tags[code] = (code, kind, count, value[:size])
        compression = struct.unpack(order + "H", tags[_COMPRESSION][3][:2])[0]
        if compression != 1:
            raise ValueError("PageAppender writes uncompressed pages only")
        length_kind = tags[_IMAGE_LENGTH][1]
        rows = tags[_IMAGE_LENGTH][3]
        if length_kind == _SHORT:
            rows = struct.pack(order + "I", struct.unpack(order + "H", rows)[0])
        for code in (IMAGE_DESCRIPTION, _STRIP_OFFSETS, _STRIP_BYTE_COUNTS):
            tags.pop(code, None)
        offset_kind = _LONG8 if big else _LONG
        tags[_ROWS_PER_STRIP] = (_ROWS_PER_STRIP, _LONG, 1, rows)
        # placeholders, set per page
        tags[_STRIP_OFFSETS] = (_STRIP_OFFSETS, offset_kind, 1, bytes(inline))
        tags[_STRIP_BYTE_COUNTS] = (_STRIP_BYTE_COUNTS, offset_kind, 1, bytes(inline))

        # Pack: count, entries in tag order, next-IFD offset, then the values
        # too large to sit in their entry (each at an even offset).
        ordered = [tags[code] for code in sorted(tags)]
        ifd_size = count_size + len(ordered) * entry_size + inline
        header = bytearray(struct.pack(order + count_format, len(ordered)))
        extra = bytearray()
        self._relative: list[tuple[int, int]] = []  # (field, offset from IFD)
        for code, kind, count, value in ordered:
            entry = struct.pack(order + "HH" + offset_format, code, kind, count)
            field_at = len(header) + len(entry)
            if len(value) > inline:
                self._relative.append((field_at, ifd_size + len(extra)))
                extra += value + bytes(len(value) % 2)
                value = bytes(inline)
            header += entry + value.ljust(inline, b"\0")
            if code == _STRIP_OFFSETS:
                self._strip_offset_field = field_at
            elif code == _STRIP_BYTE_COUNTS:
                byte_count_field = field_at
        self._next_field = len(header)
        header += bytes(inline) + extra
        header += bytes(-len(header) % 8)  # the next IFD on a word boundary
        self._header = header
        self._offset_format = order + offset_format
        self._byte_count_field = byte_count_field
        self._nbytes = -1
        # frames whose bytes go to the file as they are
        native = "<" if sys.byteorder == "little" else ">"
        self._native_orders = {"|", order} | ({"="} if order == native else set())

        # The first page's IFD is the last of the chain (or the cut's): link
        # from it.
        self._link = first + count_size + entries * entry_size
        if after is not None:
            self._link = after.link
        self._end = os.fstat(self._fd).st_size  # where the next pixels go
        self._end += self._end % 2
        self._block = self._block_end = 0  # room for IFDs: none yet
        self._blocks = 0

    def append(self, frame: np.ndarray) -> int:
        """Write `frame` as the next page; return its IFD offset."""
        if (
            frame.dtype.byteorder not in self._native_orders
            or not frame.flags.c_contiguous
        ):
            frame = np.ascontiguousarray(frame, frame.dtype.newbyteorder(self._order))
        nbytes = frame.nbytes
        at = self._ifd_room()
        pixels = self._end
        # Most writes are whole at once; _write_fully continues a short one
        # and writes a large frame in pieces (backend.WRITE_PIECE_BYTES).
        if (
            nbytes > backend.WRITE_PIECE_BYTES
            or _pwritev(self._fd, [frame], pixels) != nbytes
        ):
            _write_fully(self._fd, [frame], pixels)
        # (odd sizes are padded: the next pixels start on a word boundary)
        self._end = pixels + nbytes + nbytes % 2
        self._write_ifd(at, pixels, nbytes)
        self._link_page(at)
        return at

    def append_blank(self, nbytes: int) -> int:
        """Write a page of `nbytes` zero bytes; return its IFD offset. Only
        the IFD is written: the pixels are a hole in the file, which reads
        as zeros and, where the file system keeps holes (ext4, XFS, APFS,
        tmpfs...), takes no disk space."""
        at = self._ifd_room()
        pixels = self._end
        end = pixels + nbytes + nbytes % 2
        size = os.fstat(self._fd).st_size
        if size > pixels:  # part of a page whose write failed (a full disk)
            zeros = bytes(min(size, end) - pixels)
            if _pwritev(self._fd, [zeros], pixels) != len(zeros):
                _write_fully(self._fd, [zeros], pixels)
        self._end = end
        self._write_ifd(at, pixels, nbytes)
        if size < end:
            os.ftruncate(self._fd, end)  # (the hole; never shortens)
        self._link_page(at)
        return at

    def _ifd_room(self) -> int:
        """Where the next IFD goes: in the current block, or a new one
        where the pixels would go (see IFD_BLOCK_BYTES)."""
        at = self._block
        ifd = len(self._header)
        if at + ifd > self._block_end:
            at = self._end
            if self._blocks:
                end = at + max(IFD_BLOCK_BYTES // 2, ifd)
                end += -end % IFD_BLOCK_BYTES
            else:  # (pixels 16-byte aligned, for readers that map them)
                end = at + max(FIRST_IFD_BLOCK_BYTES, ifd)
                end += -end % 16
            self._blocks += 1
            self._block_end = self._end = end
        self._block = at + ifd
        return at

    def _write_ifd(self, at: int, pixels: int, nbytes: int) -> None:
        """The IFD (and out-of-line values) of a page of `nbytes` pixel
        bytes at `pixels`, written at `at`."""
        header = self._header
        offset_format = self._offset_format
        if nbytes != self._nbytes:
            self._nbytes = nbytes
            struct.pack_into(offset_format, header, self._byte_count_field, nbytes)
        struct.pack_into(offset_format, header, self._strip_offset_field, pixels)
        for field_at, relative in self._relative:
            struct.pack_into(offset_format, header, field_at, at + relative)
        if _pwritev(self._fd, [header], at) != len(header):
            _write_fully(self._fd, [header], at)

    def _link_page(self, at: int) -> None:
        """Link the previous IFD to the complete page whose IFD is at `at`."""
        link = struct.pack(self._offset_format, at)
        if _pwritev(self._fd, [link], self._link) != len(link):
            _write_fully(self._fd, [link], self._link)
        self._link = at + self._next_field

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _pwritev(fd: int, buffers: list[Any], offset: int) -> int:
    """os.pwritev; where there is none (Windows), a seek and one write of the
    first buffer (callers continue a short write)."""
    if _HAS_PWRITEV:
        return os.pwritev(fd, buffers, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.write(fd, buffers[0])


_HAS_PWRITEV = hasattr(os, "pwritev")


def _write_fully(fd: int, buffers: list[Any], offset: int, done: int = 0) -> int:
    """Write the buffers at `offset`, one after the other, of which the
    first `done` bytes are written already; return the bytes written in all
    (a short write - rare on a local disk - is continued). At most
    backend.WRITE_PIECE_BYTES go to each system call."""
    views = [memoryview(b).cast("B") for b in buffers]
    total = sum(v.nbytes for v in views)
    written = done
    while True:
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views.pop(0)
        if written:
            views[0] = views[0][written:]
        if done >= total:
            return total
        written = _pwritev(
            fd, _first_bytes(views, backend.WRITE_PIECE_BYTES), offset + done
        )
        if not written:
            raise OSError(f"writing at byte {offset + done} of a TIFF wrote nothing")
        done += written


def _first_bytes(views: list[memoryview], limit: int) -> list[memoryview]:
    """The first `limit` bytes of the views (all of them if fewer)."""
    first = []
    for view in views:
        if limit <= 0:
            break
        first.append(view[:limit])
        limit -= first[-1].nbytes
    return first


def read_at(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # Windows
    return os.read(fd, size)
