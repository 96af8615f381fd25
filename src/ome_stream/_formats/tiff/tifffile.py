"""OME-TIFF backend: tifffile writes the pages, ome-types the OME-XML.

Pages are written in the order frames arrive (TIFF is sequential): for each
position that is its storage order; when several positions share one file
their pages interleave as acquired, and TiffData elements map each run of
consecutive pages to its planes. Which files exist and which carry the
metadata is the layout's business (layout.py).

Metadata, for each file holding the full OME-XML (or the companion file):
until close an interim version describing only complete outer steps of each
position, refreshed about every second (in the first page's
ImageDescription, in the spare one of two slots reserved for it, then
pointed at: `DescriptionSlots`; the companion is replaced atomically), so a
killed run stays readable, and a reader never finds a version half written;
at close the final version, describing exactly the planes in the files: an
early close trims the outermost dimension to what was acquired and fills
the rest of its last step with zero planes recorded as missing. TIFFs
whose metadata lives elsewhere hold a fixed BinaryOnly reference from their
first page on.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import time
import uuid as uuid_module
import warnings
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from ome_types import OME

from ..._frame_metadata import FrameRecords, MetadataJSON, RecordSpill
from ..._journal import HeldJournal
from ..._settings import AcquisitionSettings, tiff_axis_letter
from ..._settings.units import length_in_meters
from ..backend import ArrayBackend
from .layout import TiffLayout, claim_earlier_outputs, remove_earlier_outputs
from .metadata import (
    AnnotationIds,
    check_document,
    rebase,
    set_namespace_annotation,
)
from .ome_xml import (
    ImageRecord,
    OmeXmlBuilder,
    PlaneRecord,
    PlaneText,
    binary_only,
    built_xml,
    dimension_order,
    global_annotation,
    namespace_uri,
    tiff_data_runs,
)
from .pages import (
    FIRST_IFD_BLOCK_BYTES,
    IFD_BLOCK_BYTES,
    IMAGE_DESCRIPTION,
    ChainCut,
    DescriptionSlots,
    FirstIfd,
    PageAppender,
    PageReader,
    read_at,
)
from .spool import TextPart, part_bytes, part_chunks, write_parts

# How often written pages are flushed and recorded in the journal.
JOURNAL_INTERVAL_S = 0.01
# How often the interim OME-XML of an open file is refreshed (at least; a
# large document is refreshed less often, so building it costs at most
# about a tenth of the writer's time).
INTERIM_XML_INTERVAL_S = 1.0
# TiffData elements the interim XML holds at most when positions interleave
# in one file (one per run of pages, so the XML grows with the outer steps
# and must fit a slot reserved at the first page, about 2 MB here). Past
# it, a killed file shows the first steps; `recover` restores all of them.
INTERIM_TIFF_DATA_LIMIT = 20_000
# Reserved bytes per TiffData element of the interim XML (an element with
# large numbers and its indentation is under 100).
_TIFF_DATA_BYTES = 112
# For recover's estimate of the room: the block a file's new bytes may
# start (at least; the file system's own where it says), and a new file's
# header with a BinaryOnly stub (under 1 KB).
_DISK_BLOCK = 4096
_NEW_FILE_BYTES = 4096
# Classic TIFF addresses 4 GiB; leave room for IFDs and the OME-XML.
_CLASSIC_TIFF_LIMIT = 2**32 - 2**26
_COMPRESSION = {"lzw": "lzw", "deflate": "adobe_deflate"}
COMPANION_KEY = -1


@dataclass
class _File:
    path: Path
    uuid: str
    writer: tifffile.TiffWriter | None  # until the first page is written,
    # or for every page when compressing
    full_metadata: bool  # the full OME-XML, or a BinaryOnly reference
    reader: PageReader
    appender: PageAppender | None = None  # uncompressed pages after the first
    is_open: bool = True
    pages: int = 0
    # bytes of each of the two slots of the first page's ImageDescription
    # (0: a BinaryOnly reference, in no slots), and the slots once found
    slot_size: int = 0
    slots: DescriptionSlots | None = None
    # a compressed page failed part way (a full disk): tifffile had already
    # linked it from the page before; unlinked at release unless a page
    # written since took its place in the chain
    torn: bool = False

    def find_slots(self, fd: int) -> DescriptionSlots | None:
        """The slots of the first description (`fd`: the file, open), or
        None when it has none (a BinaryOnly reference, or a file taken up by
        `resume`: the description it had stays until close replaces it)."""
        if self.slots is None and self.slot_size:
            self.slots = DescriptionSlots.find(fd, self.slot_size)
        return self.slots


def _unlink_torn_page(file: _File) -> None:
    """End the file after its `pages` whole pages: a compressed page that
    failed part way is linked from the page before it (tifffile links a
    page before it writes it), and read as one page too many, or garbage.
    Nothing is done to a file that does not read as its pages (damaged:
    validate names it)."""
    from .pages import ChainCut

    try:
        cut = ChainCut.plan(file.path, file.pages)
    except Exception:  # (what a damaged page raises depends on its codec)
        return
    cut.apply()
    file.torn = False


@dataclass
class _Image:
    """One position: which page of its file holds each of its planes."""

    file_index: int
    # IFD of each plane, by flat storage index (8 bytes a plane, not a list)
    ifds: array[int] = field(default_factory=lambda: array("q"))
    records: FrameRecords = field(default_factory=FrameRecords)
    missing: list[tuple[int, ...]] = field(default_factory=list)
    missing_flat: set[int] = field(default_factory=set)


@dataclass
class _UserDocument:
    """An OME passed to update_metadata before close, and what the stream
    did since: frames written (their Planes are added at close) and global
    metadata set (it replaces the document's annotation of that namespace)."""

    ome: OME
    records_seen: list[int]
    namespaces: set[str] = field(default_factory=set)


class TiffFileBackend(ArrayBackend):
    """OME-TIFF in any layout of OmeTiffFormat (see layout.py)."""

    def __init__(self, settings: AcquisitionSettings) -> None:
        super().__init__(settings)
        self.layout = TiffLayout.from_settings(settings)
        self.output_path = self.layout.output_path
        self.paths = list(self.layout.files)
        self.companion_path = self.layout.companion
        self._companion_uuid = str(uuid_module.uuid4())
        self._files: list[_File] = []
        # the other layout's killed run, held from `claim` until `open`
        # gives it up (overwrite=True)
        self._claimed: list[HeldJournal] | None = None
        # every frame's metadata, kept for the OME-XML at close; its file
        # beside the dataset (see ZarrBackend's)
        self._spill = RecordSpill(self.output_path.parent)
        self._images = [
            _Image(self.layout.file_of_position(p), records=self._spill.records())
            for p in range(len(settings.positions))
        ]
        dims = settings.storage_index_dimensions
        self._letters = [tiff_axis_letter(d) or "?" for d in dims]
        self._index_shape = [d.count for d in dims]
        strides = []
        stride = 1
        for count in reversed(self._index_shape):
            strides.append(stride)
            stride *= count or 1
        self._strides = list(reversed(strides))
        self._inner_planes = (
            stride
            if not self._index_shape
            else math.prod(c or 1 for c in self._index_shape[1:])
        )
        self._loop_counts = [d.count for d in settings.dimensions[:-2]]
        self._position_axis = settings.position_dimension_index
        self._interim_step_cap = self._step_cap()
        # (see `_slot_size`; measured once, at the first file's first page)
        self._whole_step_xml_bytes: int | None = None
        self._global: dict[str, dict[str, Any]] = {}
        self._builder = OmeXmlBuilder(settings)
        self._compression = _COMPRESSION.get(settings.compression or "none")
        self._next_refresh = time.monotonic() + INTERIM_XML_INTERVAL_S
        self._interim_stale = False  # pages written since the last refresh
        self._next_journal = 0.0
        # (position, storage index, metadata, skipped) of pages not journaled
        self._unjournaled: list[tuple[int, tuple[int, ...], Any, bool]] = []
        self._write_kwargs = self._page_options()
        self._user_documents: dict[int, _UserDocument] = {}
        self._handed_out: dict[int, OME] = {}  # what get_metadata last returned
        self._handed_out_records: list[int] = []  # frame records it included
        # namespaces of global metadata in the order set (as in the XML), and
        # how many of them the documents get_metadata last returned held
        self._global_set: list[str] = []
        self._handed_out_globals = 0
        self._written: dict[int, OME] = {}  # after close: what the files hold
        # ...or, until asked for, what to build those documents from (close
        # writes ours as text: `_close_texts`)
        self._written_from: tuple[list[ImageRecord], dict[str, Any]] | None = None
        # the interim document written last (with a file's UUID), and its XML
        self._last_interim: tuple[OME, bytes] | None = None
        self._closed = False

    # ----------------------------------------------------------------- open

    def _page_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "photometric": "minisblack",
            "metadata": None,
            "software": "ome-stream",
        }
        if self._compression:
            options["compression"] = self._compression
        # Not `contiguous`: each page's IFD is written with its data, so a
        # killed process leaves every written page reachable (uncompressed
        # pages after the first are appended by PageAppender, compressed ones
        # by tifffile).
        resolution = self._resolution()
        if resolution is not None:
            options["resolution"] = resolution
            options["resolutionunit"] = "CENTIMETER"
        return options

    def _resolution(self) -> tuple[float, float] | None:
        """Pixels per centimeter from the frame axes' physical size."""
        y_dim, x_dim = self.settings.frame_dimensions
        per_cm = []
        for dim in (x_dim, y_dim):
            meters = length_in_meters(dim.unit or "micrometer")
            if dim.scale is None or meters is None:
                return None
            per_cm.append(0.01 / (dim.scale * meters))
        return per_cm[0], per_cm[1]

    def _needs_bigtiff(self) -> bool:
        frames = self.settings.num_frames
        if frames is None:
            return True
        per_file = frames // len(self.paths)
        return per_file * (self.settings.frame_nbytes + 512) > _CLASSIC_TIFF_LIMIT

    def _step_cap(self) -> int | None:
        """Outer steps the interim XML may describe (None: all)."""
        per_step = self._runs_per_step()
        if not (self.layout.single_file and per_step):
            return None
        cap = max(1, INTERIM_TIFF_DATA_LIMIT // (len(self._images) * per_step))
        steps = self._index_shape[0] if self._index_shape else None
        return cap if steps is None or steps > cap else None

    def _runs_per_step(self) -> int:
        """TiffData runs of one position per outer step when positions
        interleave in one file: a position's pages are consecutive for the
        loops inside the position loop, so each iteration of the loops
        outside it (bar the outermost, the step itself) starts a run."""
        axis = self._position_axis
        if axis is None or len(self.settings.positions) == 1:
            return 0
        return math.prod(c or 1 for c in self._loop_counts[1:axis]) if axis else 0

    def claim(self) -> None:
        self.unclaim()
        self._claimed = claim_earlier_outputs(self.settings, self.layout)

    def unclaim(self) -> None:
        claimed, self._claimed = self._claimed, None
        for held in claimed or ():
            held.close()

    def open(self) -> None:
        settings = self.settings
        layout = self.layout
        target = layout.files[0] if layout.single_file else layout.output_path
        if target.exists() and not settings.overwrite:
            raise FileExistsError(
                f"{target} already exists. Pass overwrite=True to replace it, "
                "or choose another root_path."
            )
        if settings.overwrite:
            claimed, self._claimed = self._claimed, None
            remove_earlier_outputs(settings, layout, claimed)
        for path in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
        for index in range(len(self.paths)):
            self._files.append(self._new_file(index))
        if layout.companion is not None:
            self._write_companion(self._document(final=False))

    # ------------------------------------------------- taking up a killed run

    @property
    def compressed(self) -> bool:
        return self._compression is not None

    def replay(
        self, written: Iterable[tuple[int, tuple[int, ...], MetadataJSON | None, bool]]
    ) -> list[int]:
        """Take as written the pages a killed stream journaled: (position,
        storage index, metadata, skipped) in the order they were written.
        Nothing is read or written (`resume` takes up the files); returns
        each file's page count. ValueError if a position's planes do not
        follow one another (a journal that does not fit its settings)."""
        pages = [0] * len(self.paths)
        for position, index, metadata, skipped in written:
            image = self._images[position]
            if self.flat_index(index) != len(image.ifds):
                raise ValueError(
                    f"the pages of position {position} are not journaled in "
                    f"order: plane {list(index)} follows {len(image.ifds)} planes"
                )
            image.ifds.append(pages[image.file_index])
            pages[image.file_index] += 1
            if skipped:
                image.missing_flat.add(len(image.ifds) - 1)
                image.missing.append(index)
            elif metadata is not None:
                image.records.append(index, metadata)
        return pages

    def padding_nbytes(self) -> int:
        """About the disk space the blank pages close will append take: their
        IFDs (packed in blocks, see `PageAppender`), and their pixels, which
        are holes (`PageAppender.append_blank`) but for the disk blocks at
        their edges - except on Windows, whose files have no holes unless
        made sparse: there, the pixels and the blocks' unused room too."""
        blank = sum(
            math.ceil(max(1, len(image.ifds)) / self._inner_planes) * self._inner_planes
            - len(image.ifds)
            for image in self._images
        )
        pixels, per_ifd = self.settings.frame_nbytes, 512
        if os.name != "nt":
            pixels = min(pixels, 2 * self._disk_block())
        else:  # a block of 64-192 KiB holds 220 IFDs at least
            per_ifd = 1024
        return blank * (pixels + per_ifd)

    def _disk_block(self) -> int:
        """The file system's unit of allocation where the files are (a hole
        in a file starts and ends in one, which is written)."""
        try:
            block = os.statvfs(self.paths[0].parent).f_frsize
        except (AttributeError, OSError):  # (no statvfs on Windows)
            return _DISK_BLOCK
        return max(_DISK_BLOCK, block)

    def new_files_nbytes(self, pages: list[int]) -> int:
        """About the bytes `resume` and close add beyond the blank pages
        (`padding_nbytes`) and the final OME-XML: a disk block for each
        file's new bytes, and for each file started anew (no page
        journaled: `pages` as `replay` returned) its header and first
        description - for a file holding the full OME-XML, the interim one
        in the room reserved for its later versions (built now, as close
        will build it, with the global metadata set)."""
        anew = [index for index, count in enumerate(pages) if not count]
        per_file = self._disk_block()
        if os.name == "nt":  # (no holes: the room of the first IFD block and
            # of the next, which may hold few of the blank pages' IFDs)
            per_file += FIRST_IFD_BLOCK_BYTES + IFD_BLOCK_BYTES + IFD_BLOCK_BYTES // 2
        nbytes = len(self.paths) * per_file
        full = [index for index in anew if self.layout.holds_full_metadata(index)]
        if full:
            # (the files' names and UUIDs, as resume will give them, without
            # opening any)
            assert not self._files, "before resume"
            self._files = [self._new_file(i, writer=False) for i in range(len(pages))]
            try:
                interim = self._document(final=False)
                interim = self._with_uuid(interim, str(uuid_module.uuid4()))
                slot = self._slot_size(len(self._built_xml(interim)))
            finally:
                self._files = []
            nbytes += len(full) * 2 * slot
        # (a new file's first page is written by tifffile, pixels and all)
        per_file = _NEW_FILE_BYTES + self.settings.frame_nbytes
        return nbytes + len(anew) * per_file

    def resume(self, cuts: dict[int, ChainCut]) -> None:
        """Take up the files of a killed stream after `replay`, uncompressed:
        each file `cuts` names is cut to its replayed pages and appended to;
        the others (nothing of them journaled) are started anew. Then close
        pads the last steps and writes the final OME-XML (after the end of
        a file taken up: its slots are not known). New UUIDs: close rewrites
        every file's description."""
        assert not self.compressed, "compressed pages are not appended"
        for index, path in enumerate(self.paths):
            cut = cuts.get(index)
            if cut is None:
                self._files.append(self._new_file(index))
                continue
            cut.apply()
            file = self._new_file(index, writer=False)
            file.appender = PageAppender(path, after=cut)
            file.pages = cut.keep
            self._files.append(file)
        self._next_refresh = math.inf  # (close writes the final XML)

    def _new_file(self, index: int, *, writer: bool = True) -> _File:
        """File `index` with a new UUID: created (emptied) with a tifffile
        writer for its first page, or (writer=False) as it is."""
        path = self.paths[index]
        tiff_writer = None
        if writer:
            bigtiff = self._needs_bigtiff()
            tiff_writer = tifffile.TiffWriter(path, bigtiff=bigtiff, ome=False)
        return _File(
            path,
            str(uuid_module.uuid4()),
            tiff_writer,
            self.layout.holds_full_metadata(index),
            PageReader(path),
        )

    # ---------------------------------------------------------------- frames

    def flat_index(self, storage_index: tuple[int, ...]) -> int:
        """The plane number of a storage index within its position."""
        return sum(i * s for i, s in zip(storage_index, self._strides))

    def acquisition_number(
        self, position_index: int, storage_index: tuple[int, ...]
    ) -> int:
        """The frame number (acquisition order) of a position's plane: pages
        are written in this order (TIFF storage order is acquisition order)."""
        loop = list(storage_index)
        if self._position_axis is not None:
            loop.insert(self._position_axis, position_index)
        number = 0
        for value, count in zip(loop, self._loop_counts):
            number = number * (count or 1) + value
        return number

    def page_count(self, position_index: int) -> int:
        """Planes written for a position (padding included after close)."""
        return len(self._images[position_index].ifds)

    def write(
        self,
        position_index: int,
        storage_index: tuple[int, ...],
        frame: np.ndarray,
        frame_metadata: MetadataJSON | None,
    ) -> None:
        image = self._images[position_index]
        self._check_sequential(position_index, storage_index)
        self._write_page(image, frame)
        try:
            if frame_metadata is not None:
                image.records.append(storage_index, frame_metadata)
            if self.journal is not None:
                self._journal_later(
                    (position_index, storage_index, frame_metadata, False)
                )
            self._refresh_when_due()
        except OSError as exc:
            self._failed_after_the_page(exc)

    def skip(self, position_index: int, storage_index: tuple[int, ...]) -> None:
        image = self._images[position_index]
        self._check_sequential(position_index, storage_index)
        self._write_page(image, None)
        image.missing_flat.add(len(image.ifds) - 1)
        image.missing.append(storage_index)
        try:
            if self.journal is not None:
                self._journal_later((position_index, storage_index, None, True))
            self._refresh_when_due()
        except OSError as exc:
            self._failed_after_the_page(exc)

    def _failed_after_the_page(self, exc: OSError) -> None:
        """What follows a page's write (its journal line, the interim
        OME-XML) failed, a full disk say: the page is in the file, and is
        counted written; the error is kept as `write_error` (no frame lost
        with it) for the stream to raise. Raising it from `write` made the
        stream report the frame as not written ("Frames written before the
        failure: 0" with a companion file, refreshed at the first page)."""
        if self.write_error is None:
            self.write_error = exc

    def _journal_later(self, entry: tuple[int, tuple[int, ...], Any, bool]) -> None:
        """Journal pages in batches: one flush of the files, then one line per
        page, at most every JOURNAL_INTERVAL_S (a kill loses only the pages
        of the last interval from the journal, never a journaled page)."""
        self._unjournaled.append(entry)
        now = time.monotonic()
        if now < self._next_journal and len(self._unjournaled) < 256:
            return
        self._next_journal = now + JOURNAL_INTERVAL_S
        self._journal_now()

    def _journal_now(self) -> None:
        """Journal the pages written since the last time (flushed first)."""
        self._flush_files()
        assert self.journal is not None
        self.journal.written(self._unjournaled)
        self._unjournaled.clear()

    def idle(self) -> float | None:
        """Journal the last pages, and refresh the interim OME-XML if pages
        came since it was written (once it is due: see _refresh_interim_xml)."""
        if self.journal is not None and self._unjournaled:
            self._journal_now()
        if not self._interim_stale:
            return None
        wait = self._next_refresh - time.monotonic()
        if wait > 0:
            return wait
        self._refresh_interim_xml()
        return None

    def _flush_files(self) -> None:
        for file in self._files:
            if file.writer is not None:
                file.writer.filehandle.flush()

    def _check_sequential(
        self, position_index: int, storage_index: tuple[int, ...]
    ) -> None:
        expected = len(self._images[position_index].ifds)
        if self.flat_index(storage_index) != expected:
            raise RuntimeError(
                f"internal error: plane {storage_index} of position {position_index} "
                f"arrived out of order (expected plane number {expected})"
            )

    def _blank(self) -> np.ndarray:
        return np.zeros(self.settings.frame_shape, self.settings.dtype)

    def _write_page(self, image: _Image, frame: np.ndarray | None) -> None:
        """Write `frame` as the next page of `image`'s file; None: a blank
        page (skipped, or padding), its pixels left a hole where they can
        be (`PageAppender.append_blank`)."""
        file = self._files[image.file_index]
        image.ifds.append(file.pages)  # (the first page's XML counts it)
        try:
            if file.appender is None:
                self._write_with_tifffile(
                    file, self._blank() if frame is None else frame
                )
            elif frame is None:
                file.appender.append_blank(self.settings.frame_nbytes)
            else:
                file.appender.append(frame)
        except BaseException:
            # not in the file (a full disk): the records must not say it is,
            # or closing once space is freed describes a page too many
            image.ifds.pop()
            if file.appender is None and file.pages:
                file.torn = True
            raise
        file.pages += 1
        file.torn = False
        self._interim_stale = True

    def _write_with_tifffile(self, file: _File, frame: np.ndarray) -> None:
        """A file's first page (with its description), or any page of a
        compressed file: by tifffile. Uncompressed files are then appended
        to by a PageAppender."""
        assert file.writer is not None
        if file.pages:
            file.writer.write(frame, **self._write_kwargs)
            return
        description = self._first_description(file)
        file.writer.write(frame, description=description, **self._write_kwargs)
        if self.layout.companion is not None and not any(f.pages for f in self._files):
            # The companion, written at open, describes no planes, and the
            # TIFFs refer to it: refresh it now, not in a second, so that a
            # run killed meanwhile is readable too.
            self._next_refresh = 0.0
        if self._compression is None:
            file.writer.close()
            file.writer = None
            file.appender = PageAppender(file.path)

    def _refresh_when_due(self) -> None:
        """Refresh the interim OME-XML if it is time (after the page just
        written is in the journal's queue: the XML describes journaled pages
        only)."""
        if time.monotonic() >= self._next_refresh:
            self._refresh_interim_xml()

    def _first_description(self, file: _File) -> bytes:
        """The first page's ImageDescription: a BinaryOnly reference, or the
        interim OME-XML in space reserved for every later version of it."""
        index = self._files.index(file)
        if not file.full_metadata:
            return self._built_xml(self._stub(index))
        last = self._last_interim
        if last is None:
            document = self._with_uuid(self._document(final=False), file.uuid)
            last = self._last_interim = (document, self._built_xml(document))
        # Files after the first (a file per position) start with the interim
        # XML written last, with their own UUID: it describes a subset of
        # what is written (the next refresh brings it up to date), and
        # serialising it anew would cost each file ~10 ms, more with every
        # position the document describes. (Interim documents are built for
        # this and never changed, so its text still matches it.)
        copy = self._with_uuid(last[0], file.uuid)
        (interim,) = _xml_each([copy], known=last, built=[True])
        file.slot_size = self._slot_size(len(interim))
        return DescriptionSlots.initial(interim, file.slot_size)

    def _slot_size(self, first: int) -> int:
        """Bytes of each slot of a first description of `first` bytes: room
        for its later versions (see `DescriptionSlots`), an even number (a
        TIFF value starts on a word boundary). Counted from the text of a
        whole first step at least (the first text may describe part of one,
        a channel of many, say: `_whole_prefix`)."""
        if self._whole_step_xml_bytes is None:
            document = self._document(final=False, whole_prefix=False)
            document = self._with_uuid(document, str(uuid_module.uuid4()))
            self._whole_step_xml_bytes = len(self._built_xml(document))
        first = max(first, self._whole_step_xml_bytes)
        size = 2 * first + 8192 + self._reserve_for_runs() + 1
        return size + size % 2

    def _reserve_for_runs(self) -> int:
        """Room for the TiffData elements the interim XML gains as steps
        complete (several per position when positions interleave)."""
        per_step = self._runs_per_step()
        if not per_step:
            return 0
        steps = self._interim_step_cap or self._index_shape[0] or 1
        return len(self._images) * steps * per_step * _TIFF_DATA_BYTES

    def _refresh_interim_xml(self) -> None:
        started = time.monotonic()
        self._interim_stale = False
        # (not tried again at every page should it fail: a full disk)
        self._next_refresh = started + INTERIM_XML_INTERVAL_S
        if self.journal is not None and self._unjournaled:
            # The interim XML describes journaled pages only: `recover`
            # cuts the files after those, and a kill meanwhile must leave
            # a description of pages still there.
            self._journal_now()
        else:
            self._flush_files()
        document = self._document(final=False)
        files = [f for f in self._files if f.full_metadata and f.is_open and f.pages]
        copies = [self._with_uuid(document, file.uuid) for file in files]
        if self.layout.companion is not None:
            copies.append(self._with_uuid(document, self._companion_uuid))
        texts = _xml_each(copies, built=[True] * len(copies))
        if copies:
            self._last_interim = (copies[0], texts[0])
        for file, xml in zip(files, texts):
            self._rewrite_reserved(file, document, xml)
        if self.layout.companion is not None:
            self._replace_companion(texts[-1])
        spent = time.monotonic() - started
        self._next_refresh = time.monotonic() + max(INTERIM_XML_INTERVAL_S, 10 * spent)

    def _rewrite_reserved(self, file: _File, document: OME, xml: bytes) -> None:
        """Make `xml` (`document` with the file's UUID) the file's first
        ImageDescription, in its spare slot (`DescriptionSlots`)."""
        if len(xml) >= file.slot_size:
            # global metadata grew past the reservation: it is not needed to
            # read the pixels, and close writes it
            xml = self._built_xml(
                self._with_uuid(document, file.uuid, structured_annotations=None)
            )
            if len(xml) >= file.slot_size:
                return  # keep the older version; `recover` restores the rest
        with file.path.open("r+b") as f:
            slots = file.find_slots(f.fileno())
            assert slots is not None
            slots.write(f.fileno(), xml)

    # -------------------------------------------------------------- reading

    def read_frame(
        self, position_index: int, storage_index: tuple[int, ...]
    ) -> np.ndarray | None:
        """The frame at `storage_index` as written, or None when it is not
        written yet or was skipped (it then reads as zeros)."""
        image = self._images[position_index]
        flat = self.flat_index(storage_index)
        if flat >= len(image.ifds) or flat in image.missing_flat:
            return None
        file = self._files[image.file_index]
        if file.writer is not None:
            file.writer.filehandle.flush()
        return file.reader.read(image.ifds[flat])

    # -------------------------------------------------------------- metadata

    def set_global_metadata(self, namespace: str, metadata: dict[str, Any]) -> None:
        self._global[namespace] = metadata
        self._global_set.append(namespace_uri(namespace))  # as in the XML
        for user in self._user_documents.values():
            user.namespaces.add(self._global_set[-1])
        if self._closed:
            annotation = global_annotation("Annotation:0", namespace, metadata)
            for document in self._written_documents().values():
                if document.binary_only is None:
                    set_namespace_annotation(
                        document, annotation, AnnotationIds(document)
                    )
            self._write_documents(
                {
                    k: d
                    for k, d in self._written_documents().items()
                    if d.binary_only is None
                }
            )

    def get_metadata(self) -> dict[int, OME]:
        """{file index: a copy of the OME that file holds (after close) or will
        hold at close (before)}. -1 is the companion file; a TIFF whose
        metadata is elsewhere has its BinaryOnly reference."""
        if self._closed:
            documents = self._written_documents()
        else:
            documents = self._handed_out = self._documents_now()
            self._handed_out_records = [len(image.records) for image in self._images]
            self._handed_out_globals = len(self._global_set)
        return {key: doc.model_copy(deep=True) for key, doc in documents.items()}

    def update_metadata(self, metadata: Any) -> None:
        """Replace the OME of some files: {file index: OME}, as get_metadata
        returns. After close it is written at once; before, it is kept and
        written at close, brought up to date with what the stream wrote
        since (new Planes, sizes after an early close, global metadata set
        since). Nothing changes unless every document is valid: TypeError
        (not a dict of OME), KeyError (no such file), ValueError (it would
        not describe the pixels in the files)."""
        if not isinstance(metadata, dict):
            raise TypeError(
                "update_metadata takes a dict {file index: ome_types.OME} like "
                f"get_metadata() returns, not {type(metadata).__name__}."
            )
        current = self._written_documents() if self._closed else self._documents_now()
        for key, document in metadata.items():
            if key not in current:
                raise KeyError(
                    f"No file with index {key!r} in this dataset; valid indices: "
                    f"{sorted(current)} ({self._describe_keys()})."
                )
            if not isinstance(document, OME):
                raise TypeError(
                    f"metadata[{key!r}] must be an ome_types.OME (as get_metadata() "
                    f"returns), not {type(document).__name__}."
                )
        for key, document in metadata.items():
            earlier = None if self._closed else self._handed_out.get(key)
            check_document(self._where(key), document, current[key], earlier=earlier)
        if self._closed:
            self._write_documents(
                {k: d.model_copy(deep=True) for k, d in metadata.items()}
            )
            return
        for key, document in metadata.items():
            # Planes of frames written after the get_metadata the document
            # came from are added at close (frames may be written meanwhile).
            # So is global metadata set since (the stream queues it: it can
            # land between the get_metadata and this call).
            handed_out = key in self._handed_out
            seen = (
                self._handed_out_records
                if handed_out
                else [len(image.records) for image in self._images]
            )
            since = self._global_set[self._handed_out_globals :] if handed_out else []
            self._user_documents[key] = _UserDocument(
                document.model_copy(deep=True), list(seen), set(since)
            )

    def _describe_keys(self) -> str:
        if self.layout.companion is not None:
            return "-1 is the companion file, 0.. the TIFF files"
        if self.layout.single_file:
            return "0 is the file"
        return "0.. are the TIFF files in position order"

    def _where(self, key: int) -> str:
        if key == COMPANION_KEY:
            assert self.layout.companion is not None
            return f"the companion file {self.layout.companion.name} (key -1)"
        return f"file {key} ({self.paths[key].name})"

    # ------------------------------------------------------- documents

    def _image_record(
        self,
        position_index: int,
        *,
        final: bool,
        padding: int = 0,
        padding_ifd: int = 0,
        whole_prefix: bool = True,
    ) -> ImageRecord:
        """The XML's view of one position. Final: every plane, with
        `padding` planes of the last step still to be written from IFD
        `padding_ifd` on; interim: complete outer steps only (before the
        first is, `_whole_prefix`; without it, one step of no planes, the
        size of the text describing a whole step), no per-plane metadata."""
        image = self._images[position_index]
        ifds = image.ifds + array("q", range(padding_ifd, padding_ifd + padding))
        steps = len(ifds) // self._inner_planes
        if final:
            steps = max(1, steps)
        elif self._interim_step_cap is not None:
            steps = min(steps, self._interim_step_cap)
        counts: list[int | None] = list(self._index_shape)
        if counts:
            counts[0] = max(1, steps)
        if not final and not steps and len(ifds) and whole_prefix:
            counts = [*self._whole_prefix(len(ifds))]
        described = ifds[: math.prod(count or 1 for count in counts)]
        sizes = {"T": 1, "C": 1, "Z": 1}
        for letter, count in zip(self._letters, counts):
            sizes[letter] = count or 1
        planes: Iterable[PlaneRecord] = []
        missing: list[tuple[int, int, int]] = []
        if final:
            planes = _Planes(image.records, self._zct)
            missing = [self._zct(index) for index in image.missing]
            first_pad = len(image.ifds)
            missing += [
                self._zct(self._unravel(flat))
                for flat in range(first_pad, first_pad + padding)
            ]
        file = self._files[image.file_index]
        multi = not self.layout.single_file
        return ImageRecord(
            index=position_index,
            position=self.settings.positions[position_index],
            sizes=sizes,
            dimension_order=dimension_order(self._letters),
            tiff_data=tiff_data_runs(
                described,
                lambda flat: self._zct(self._unravel(flat)),
                file_name=file.path.name if multi else None,
                file_uuid=file.uuid if multi else None,
            ),
            planes=planes,
            missing=missing,
            acquisition_date=self.created,
        )

    def _whole_prefix(self, written: int) -> list[int]:
        """The index shape of the whole part of a position's first outer step
        of which `written` planes are: the outermost dimension one step of
        which is whole, as many of its steps as are, the dimensions outside
        it 1 and those inside it whole (a killed run's first z-stack of
        channel 0, say, shows the planes written). So readers show these
        planes before `recover` rather than an image of no planes, which
        Bio-Formats cannot open."""
        counts = [count or 1 for count in self._index_shape]
        for dimension in range(1, len(counts)):
            step = math.prod(counts[dimension + 1 :])
            if written >= step:
                steps = min(written // step, counts[dimension])
                return [1] * dimension + [steps, *counts[dimension + 1 :]]
        raise RuntimeError(f"internal error: no whole prefix of {written} planes")

    def _padding(self) -> list[tuple[int, int]]:
        """(planes, first IFD) each position's last step still needs at close;
        positions are padded in order, each file's pages appended."""
        next_page = [file.pages for file in self._files]
        padding = []
        for image in self._images:
            written = len(image.ifds)
            target = max(1, math.ceil(written / self._inner_planes))
            count = target * self._inner_planes - written
            padding.append((count, next_page[image.file_index]))
            next_page[image.file_index] += count
        return padding

    def _zct(self, storage_index: tuple[int, ...]) -> tuple[int, int, int]:
        found = dict(zip(self._letters, storage_index))
        return found.get("Z", 0), found.get("C", 0), found.get("T", 0)

    def _unravel(self, flat: int) -> tuple[int, ...]:
        index = []
        for stride in self._strides:
            value, flat = divmod(flat, stride)
            index.append(value)
        return tuple(index)

    def _document(self, *, final: bool, whole_prefix: bool = True) -> OME:
        """The full OME of the dataset (root UUID unset): final as if the
        stream closed now, or interim. The interim one leaves out positions
        with no plane written yet (and their WellSamples): no TiffData says
        "no planes" to every reader (tifffile takes PlaneCount="0" as every
        page from IFD, Bio-Formats takes MetadataOnly as every page of the
        file). `whole_prefix=False` (to size the slots, see `_slot_size`)
        keeps them, MetadataOnly, and describes whole steps (see
        `_image_record`)."""
        if final:
            images = self._final_image_records()
        else:
            images = [
                self._image_record(p, final=False, whole_prefix=whole_prefix)
                for p in range(len(self._images))
            ]
            if whole_prefix:
                images = [image for image in images if image.tiff_data]
        return self._builder.build(images, self._global)

    def _final_image_records(self) -> list[ImageRecord]:
        padding = self._padding()
        return [
            self._image_record(p, final=True, padding=n, padding_ifd=first)
            for p, (n, first) in enumerate(padding)
        ]

    def _stub(self, file_index: int) -> OME:
        layout = self.layout
        if layout.companion is not None:
            target, target_uuid = layout.companion.name, self._companion_uuid
        else:
            target, target_uuid = self._files[0].path.name, self._files[0].uuid
        return binary_only(self._files[file_index].uuid, target, target_uuid)

    def _with_uuid(self, document: OME, uuid: str, **update: Any) -> OME:
        return document.model_copy(update={"uuid": f"urn:uuid:{uuid}", **update})

    def _generated(
        self, built_from: tuple[list[ImageRecord], dict[str, Any]] | None = None
    ) -> dict[int, OME]:
        """What ome-stream writes at close, as if it closed now (or built
        from those final records and global metadata)."""
        if built_from is None:
            document = self._document(final=True)
        else:
            document = self._builder.build(*built_from)
        documents: dict[int, OME] = {}
        if self.layout.companion is not None:
            documents[COMPANION_KEY] = self._with_uuid(document, self._companion_uuid)
        for index, file in enumerate(self._files):
            documents[index] = (
                self._with_uuid(document, file.uuid)
                if file.full_metadata
                else self._stub(index)
            )
        return documents

    def _documents_now(self) -> dict[int, OME]:
        """The final documents as if the stream closed now, with the user's
        (update_metadata) brought up to date."""
        documents = self._generated()
        for key, user in self._user_documents.items():
            documents[key] = self._rebase(user, documents[key])
        return documents

    def _rebase(self, user: _UserDocument, generated: OME) -> OME:
        new_planes = [
            {self._zct(record.storage_index) for record in image.records.since(seen)}
            for image, seen in zip(self._images, user.records_seen)
        ]
        return rebase(
            user.ome, generated, new_planes=new_planes, namespaces=user.namespaces
        )

    @staticmethod
    def _xml(document: OME) -> bytes:
        return str(document.to_xml()).encode("utf-8")

    @staticmethod
    def _built_xml(document: OME) -> bytes:
        """`_xml` of a document `_builder` made (see `built_xml`)."""
        return built_xml(document).encode("utf-8")

    def _write_companion(self, document: OME) -> None:
        self._replace_companion(
            self._built_xml(self._with_uuid(document, self._companion_uuid))
        )

    def _replace_companion(self, xml: bytes | None) -> None:
        """Replace the companion file atomically: a reader sees the old or
        the new version, never a partial one. None: the new version is in
        the temporary file already."""
        companion = self.layout.companion
        temporary = self.layout.companion_temporary
        assert companion is not None
        assert temporary is not None
        if xml is not None:
            temporary.write_bytes(xml)
        os.replace(temporary, companion)

    def _write_documents(
        self, documents: dict[int, OME], built: frozenset[int] = frozenset()
    ) -> None:
        """Write each document to its file; `built`: the keys of documents
        as `_generated` made them (nothing changed since)."""
        texts = _xml_each(
            list(documents.values()), built=[key in built for key in documents]
        )
        for (key, document), xml in zip(documents.items(), texts):
            if key == COMPANION_KEY:
                self._replace_companion(xml)
            else:
                find_slots = self._files[key].find_slots
                write_description(self.paths[key], [xml], find_slots)
            self._written[key] = document

    # ----------------------------------------------------------------- close

    def close(self) -> None:
        if self._closed:
            return
        closing: _CloseText | None = None
        try:
            if self.journal is not None and self._unjournaled:
                # the pages written last, before the long work of close: a
                # kill meanwhile must not leave `recover` without them
                with contextlib.suppress(OSError):
                    # (a full disk: the final OME-XML may still fit in its
                    # room, and a finished file needs no journal)
                    self._journal_now()
            if not self._user_documents:
                closing = self._close_texts()
            if closing is None:
                final, built = self._final_documents()
            for image, (count, _) in zip(self._images, self._padding()):
                first = len(image.ifds)
                for flat in range(first, first + count):
                    image.missing_flat.add(flat)
                    self._write_page(image, None)
                    image.missing.append(self._unravel(flat))
        except BaseException:
            if closing is not None:
                closing.plane_text.close()
            raise
        finally:
            self._closed = True
            self.release()
        if closing is None:
            self._write_documents(final, built)
            return
        try:
            self._write_texts(closing.parts)
        finally:
            closing.plane_text.close()
        # what the files hold now; `get_metadata` builds its models from it
        self._written_from = closing.made_from

    def release(self) -> None:
        """Close the files as they are (close calls it; a failed recovery
        calls it alone, and the backend is closed from then on)."""
        self._closed = True
        for file in self._files:
            file.reader.close()
            file.is_open = False
            if file.writer is not None:
                file.writer.close()
                file.writer = None
                if file.torn:
                    _unlink_torn_page(file)
            if file.appender is not None:
                file.appender.close()
                file.appender = None

    def _close_texts(self) -> _CloseText | None:
        """Our documents at close, as each file's XML, written from the
        records without building the Planes' models (the bulk of the cost of
        closing with per-frame metadata) and without holding their text in
        memory (it goes to spools in the files' directory), and the records
        and global metadata it was made from: once the files hold it,
        `_written_documents` builds the models from them if asked. None if
        the text cannot be made so."""
        images = self._final_image_records()
        global_metadata = dict(self._global)
        text = self._builder.build_text(
            images, global_metadata, directory=self.paths[0].parent
        )
        keys = [COMPANION_KEY] if self.layout.companion is not None else []
        keys += [i for i, file in enumerate(self._files) if file.full_metadata]
        parts: dict[int, list[TextPart]] = {}
        first: tuple[str, str] | None = None
        for key in keys:
            uuid = f"urn:uuid:{self._uuid_of(key)}"
            rest = _with_root_uuid(first, uuid)
            if rest is None:
                rest = text.rest_text(uuid)
                first = None if rest is None else (uuid, rest)
            made = None if rest is None else text.parts(rest)
            if made is None:
                text.close()
                return None
            parts[key] = made
        for index, file in enumerate(self._files):
            if not file.full_metadata:
                parts[index] = [built_xml(self._stub(index))]
        return _CloseText(parts, text, (images, global_metadata))

    def _uuid_of(self, key: int) -> str:
        return self._companion_uuid if key == COMPANION_KEY else self._files[key].uuid

    def _write_texts(self, texts: dict[int, list[TextPart]]) -> None:
        for key, parts in texts.items():
            if key == COMPANION_KEY:
                companion = self.layout.companion_temporary
                assert companion is not None
                with companion.open("wb") as f:
                    write_parts(parts, f.write)
                self._replace_companion(None)
            else:
                write_description(self.paths[key], parts, self._files[key].find_slots)

    def _written_documents(self) -> dict[int, OME]:
        """After close: what the files hold (built now if close wrote text)."""
        if self._written_from is not None:
            generated = self._generated(self._written_from)
            self._written_from = None
            self._written = {**generated, **self._written}
        return self._written

    def _final_documents(self) -> tuple[dict[int, OME], frozenset[int]]:
        """The documents to write at close: ours, or the user's brought up to
        date (ours, with a warning, should that fail the checks); and the
        keys of ours."""
        generated = self._generated()
        documents = dict(generated)
        for key, user in self._user_documents.items():
            document = self._rebase(user, generated[key])
            try:
                check_document(self._where(key), document, generated[key])
            except ValueError as exc:
                warnings.warn(
                    f"The metadata passed to update_metadata for {self._where(key)} "
                    f"no longer fits the data ({exc}); wrote ome-stream's instead. "
                    "Call update_metadata again after close.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            documents[key] = document
        built = frozenset(k for k, d in documents.items() if d is generated[k])
        return documents, built


def _xml_each(
    documents: list[OME],
    known: tuple[OME, bytes] | None = None,
    *,
    built: list[bool] | None = None,
) -> list[bytes]:
    """Each document as OME-XML. The copies `_with_uuid` makes of one
    document (one per file) differ only in the root's UUID attribute: the
    first is serialised, the others reuse its text with their own UUID put
    in. Serialising a document of a few hundred planes takes ~10 ms, and
    this happens for every file at each interim refresh and at close.
    `known`: a document already serialised, and its text; `built`: for
    each document, whether it is as `_builder` made it (see `built_xml`)."""
    texts: list[bytes] = []
    last = known
    for number, document in enumerate(documents):
        if last is not None and _same_but_uuid(last[0], document):
            if document.uuid == last[0].uuid:
                texts.append(last[1])
                continue
            old = f'UUID="{last[0].uuid}"'.encode()
            if last[1].count(old) == 1:
                texts.append(last[1].replace(old, f'UUID="{document.uuid}"'.encode()))
                continue
        if built is not None and built[number]:
            xml = TiffFileBackend._built_xml(document)
        else:
            xml = TiffFileBackend._xml(document)
        texts.append(xml)
        last = (document, xml)
    return texts


def _same_but_uuid(a: OME, b: OME) -> bool:
    """Whether `b` is a copy of `a` sharing every field but (perhaps) the
    root UUID: the same objects, as `model_copy` leaves them. Nothing is
    compared by value, so call this only for documents nothing has changed
    since they were copied."""
    if type(a) is not type(b):
        return False
    return all(
        getattr(a, name) is getattr(b, name)
        for name in type(a).model_fields
        if name != "uuid"
    )


def _with_root_uuid(first: tuple[str, str] | None, uuid: str) -> str | None:
    """`first` (a UUID and the XML of a document with it as root UUID) with
    `uuid` instead; None if there is no first, or its UUID is not there
    exactly once."""
    if first is None:
        return None
    old = f'UUID="{first[0]}"'
    if first[1].count(old) != 1:
        return None
    return first[1].replace(old, f'UUID="{uuid}"')


@dataclass
class _CloseText:
    """What close writes (ours): each file's XML as parts, the PlaneText
    whose spools they read, and the records and global metadata they were
    made from."""

    parts: dict[int, list[TextPart]]
    plane_text: PlaneText
    made_from: tuple[list[ImageRecord], dict[str, Any]]

    def xml(self, key: int) -> bytes:
        """A file's XML, whole (for tests)."""
        return b"".join(part_chunks(self.parts[key]))


class _Planes:
    """An image's PlaneRecords, decoded from its frame records at each pass
    (they may be in the spill file: never all in memory at once)."""

    def __init__(
        self,
        records: FrameRecords,
        zct: Callable[[tuple[int, ...]], tuple[int, int, int]],
    ) -> None:
        self._records = records
        self._zct = zct

    def __iter__(self) -> Iterator[PlaneRecord]:
        zct = self._zct
        for record in self._records:
            yield PlaneRecord(*zct(record.storage_index), metadata=record.metadata)


def write_description(
    path: Path,
    parts: list[TextPart],
    find_slots: Callable[[int], DescriptionSlots | None] | None = None,
) -> None:
    """Make `parts` the ImageDescription of the file's first page, a chunk
    at a time (tifffile's `tiffcomment` needs the text in memory), so that
    the file always has a whole description, old or new - for a reader
    meanwhile, and after a kill (the journal stays until close is done).
    Where it fits, in the spare one of the file's two slots (`find_slots`,
    given the open file: `DescriptionSlots`); otherwise after the end of
    the file; either way the tag is then pointed at it with one write (as
    `tiffcomment` does not: it points the tag first). A file without slots
    that has this text already is left as it is. A text as short as an
    offset goes in the tag's entry, as TIFF requires."""
    size = sum(part_bytes(part) for part in parts) + 1  # with its NUL
    with path.open("r+b") as f:
        slots = None if find_slots is None else find_slots(f.fileno())
        ifd = FirstIfd.read(f.fileno())
        tag = ifd.tag(IMAGE_DESCRIPTION)
        entry = tag.entry
        number = ifd.offset_format
        if size <= ifd.inline:  # a value this short sits in its entry
            value = b"".join(part_chunks(parts)).ljust(ifd.inline, b"\0")
            f.seek(entry + 4)
            f.write(struct.pack(f"{ifd.order}{number}", size) + value)
            return
        if slots is not None and not slots.fits(size):
            slots = None
        if slots is not None:
            start = slots.spare()
        elif tag.count == size and _holds(f.fileno(), tag.value_offset, parts):
            return
        else:
            end = f.seek(0, os.SEEK_END)
            start = end + end % 2  # (a value starts on a word boundary)
            if not ifd.big and start + size > 2**32 - 1:
                raise ValueError(
                    f"The final OME-XML ({size} bytes) does not fit in "
                    f"{path.name}: a classic TIFF ends at 4 GiB (chosen from the "
                    "frames' count and size, not their metadata). Its pixels are "
                    "all there, with the interim OME-XML; for this much metadata "
                    "use an unbounded first dimension (BigTIFF) or OME-Zarr."
                )
            f.write(b"\0" * (start - end))
        f.seek(start)
        written = write_parts(parts, f.write)
        f.write(b"\0")
        _check_written(written, size)
        f.flush()
        if slots is not None:
            slots.point(f.fileno(), size)
        else:
            f.seek(entry + 4)  # the tag's count, then its value's offset
            f.write(struct.pack(f"{ifd.order}{number}{number}", size, start))


def _holds(fd: int, offset: int, parts: list[TextPart]) -> bool:
    """Whether the file has the text `parts` make at `offset`."""
    for chunk in part_chunks(parts):
        if read_at(fd, len(chunk), offset) != chunk:
            return False
        offset += len(chunk)
    return True


def _check_written(written: int, size: int) -> None:
    if written + 1 != size:  # (parts changed while written: never)
        raise RuntimeError(f"OME-XML of {size} bytes written as {written + 1}.")
