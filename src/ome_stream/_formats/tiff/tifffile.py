"""OME-TIFF backend: tifffile writes the pages, ome-types the OME-XML.

Pages are written in the order frames arrive (TIFF is sequential), which for
each position is its storage order. The OME-XML in the first page's
ImageDescription is rewritten at close to describe exactly the planes in the
file: an early close trims the outermost dimension to what was acquired and
fills the rest of its last step with zero planes recorded as missing.
"""

from __future__ import annotations

import math
import time
import uuid as uuid_module
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..._frame_metadata import FrameRecord
from ..._settings import AcquisitionSettings, OmeTiffFormat, tiff_axis_letter
from ..._settings.units import length_in_meters
from ..backend import ArrayBackend
from .ome_xml import ImageRecord, OmeXmlBuilder, PlaneRecord, dimension_order

# How often written pages are flushed and recorded in the journal.
JOURNAL_INTERVAL_S = 0.01
# How often the interim OME-XML of an open file is refreshed in place.
INTERIM_XML_INTERVAL_S = 1.0
# Classic TIFF addresses 4 GiB; leave room for IFDs and the OME-XML.
_CLASSIC_TIFF_LIMIT = 2**32 - 2**26
_COMPRESSION = {"lzw": "lzw", "deflate": "adobe_deflate"}


@dataclass
class _File:
    path: Path
    uuid: str
    writer: tifffile.TiffWriter | None
    pages: int = 0
    records: list[FrameRecord] = field(default_factory=list)
    missing: list[tuple[int, ...]] = field(default_factory=list)
    reserved: int = 0  # bytes kept for the first page's ImageDescription
    description_offset: int | None = None


class TiffFileBackend(ArrayBackend):
    """One OME-TIFF file per position (one file in all for a single position)."""

    def __init__(self, settings: AcquisitionSettings) -> None:
        super().__init__(settings)
        fmt = settings.format
        assert isinstance(fmt, OmeTiffFormat)
        self.output_path = settings.output_path
        self.paths = fmt.file_paths(settings.root_path, len(settings.positions))
        self._files: list[_File] = []
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
        self._global: dict[str, dict[str, Any]] = {}
        self._created = datetime.now(timezone.utc)
        self._builder = OmeXmlBuilder(settings)
        self._compression = _COMPRESSION.get(settings.compression or "none")
        self._next_refresh = time.monotonic() + INTERIM_XML_INTERVAL_S
        self._next_journal = 0.0
        self._unjournaled: list[tuple[str, int, tuple[int, ...], Any]] = []
        self._write_kwargs = self._page_options()
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
        # Not `contiguous`: tifffile then writes each page's IFD with its data,
        # so a killed process leaves every written page reachable.
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

    def open(self) -> None:
        settings = self.settings
        targets = [self.output_path] if len(self.paths) > 1 else self.paths
        for target in targets:
            if target.exists() and not settings.overwrite:
                raise FileExistsError(
                    f"{target} already exists. Pass overwrite=True to replace it, "
                    "or choose another root_path."
                )
        if len(self.paths) > 1:
            self.output_path.mkdir(parents=True, exist_ok=True)
        for path in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
        bigtiff = self._needs_bigtiff()
        for path in self.paths:
            writer = tifffile.TiffWriter(path, bigtiff=bigtiff, ome=False)
            self._files.append(_File(path, str(uuid_module.uuid4()), writer))

    # ---------------------------------------------------------------- frames

    def flat_index(self, storage_index: tuple[int, ...]) -> int:
        """The page number of a storage index within its position's file."""
        return sum(i * s for i, s in zip(storage_index, self._strides))

    def page_count(self, position_index: int) -> int:
        return self._files[position_index].pages

    def write(
        self,
        position_index: int,
        storage_index: tuple[int, ...],
        frame: np.ndarray,
        frame_metadata: dict[str, Any] | None,
    ) -> None:
        file = self._files[position_index]
        self._check_sequential(file, storage_index)
        self._write_page(file, frame)
        if frame_metadata is not None:
            file.records.append(FrameRecord(storage_index, frame_metadata))
        if self.journal is not None:
            self._journal_later(
                ("frame", position_index, storage_index, frame_metadata)
            )

    def skip(self, position_index: int, storage_index: tuple[int, ...]) -> None:
        file = self._files[position_index]
        self._check_sequential(file, storage_index)
        self._write_page(file, self._blank())
        file.missing.append(storage_index)
        if self.journal is not None:
            self._journal_later(("skip", position_index, storage_index, None))

    def _journal_later(self, entry: tuple[str, int, tuple[int, ...], Any]) -> None:
        """Journal pages in batches: one flush of the files, then one line per
        page, at most every JOURNAL_INTERVAL_S (a kill loses only the pages
        of the last interval from the journal, never a journaled page)."""
        self._unjournaled.append(entry)
        now = time.monotonic()
        if now < self._next_journal and len(self._unjournaled) < 256:
            return
        self._next_journal = now + JOURNAL_INTERVAL_S
        for file in self._files:
            if file.writer is not None:
                file.writer.filehandle.flush()
        assert self.journal is not None
        for kind, position_index, storage_index, metadata in self._unjournaled:
            if kind == "frame":
                self.journal.frame(position_index, storage_index, metadata)
            else:
                self.journal.skip(position_index, storage_index)
        self._unjournaled.clear()

    def _check_sequential(self, file: _File, storage_index: tuple[int, ...]) -> None:
        if self.flat_index(storage_index) != file.pages:
            raise RuntimeError(
                f"internal error: plane {storage_index} arrived out of order for "
                f"{file.path.name} (expected plane number {file.pages})"
            )

    def _blank(self) -> np.ndarray:
        return np.zeros(self.settings.frame_shape, self.settings.dtype)

    def _write_page(self, file: _File, frame: np.ndarray) -> None:
        assert file.writer is not None
        if file.pages == 0:
            # The first page carries the OME-XML. Until close it is an interim
            # version describing only complete outer steps, refreshed in place
            # (hence the reserved space), so a killed run stays readable.
            interim = self._xml_for(file, final=False).encode()
            file.reserved = 2 * len(interim) + 8192
            description = interim.ljust(file.reserved)
            file.writer.write(frame, description=description, **self._write_kwargs)
        else:
            file.writer.write(frame, **self._write_kwargs)
        file.pages += 1
        if time.monotonic() >= self._next_refresh:
            self._refresh_interim_xml()

    def _refresh_interim_xml(self) -> None:
        self._next_refresh = time.monotonic() + INTERIM_XML_INTERVAL_S
        for file in self._files:
            if file.writer is None or file.pages == 0:
                continue
            file.writer.filehandle.flush()
            if file.description_offset is None:
                with tifffile.TiffFile(file.path) as tif:
                    tag = tif.pages.first.tags[270]
                    file.description_offset = tag.valueoffset
            xml = self._xml_for(file, final=False).encode()
            if len(xml) > file.reserved:
                continue  # cannot happen in practice; keep the older version
            with file.path.open("r+b") as f:
                f.seek(file.description_offset)
                f.write(xml.ljust(file.reserved))

    # -------------------------------------------------------------- metadata

    def set_global_metadata(self, namespace: str, metadata: dict[str, Any]) -> None:
        self._global[namespace] = metadata
        if self._closed:
            self._write_final_xml()

    def _image_record(self, index: int, file: _File, final: bool) -> ImageRecord:
        """The XML's view of one file: final (every page, after padding) or
        interim (only complete outer steps, no per-plane metadata)."""
        sizes = {"T": 1, "C": 1, "Z": 1}
        counts = list(self._index_shape)
        if counts:
            steps = file.pages / self._inner_planes
            counts[0] = max(1, math.ceil(steps) if final else math.floor(steps))
        for letter, count in zip(self._letters, counts):
            sizes[letter] = count or 1
        plane_count = math.prod(sizes.values())
        planes = []
        missing = []
        if final:
            for record in file.records:
                zct = self._zct(record.storage_index)
                planes.append(PlaneRecord(*zct, metadata=record.metadata))
            missing = [self._zct(idx) for idx in file.missing]
        multi = len(self._files) > 1
        return ImageRecord(
            index=index,
            position=self.settings.positions[index],
            sizes=sizes,
            dimension_order=dimension_order(self._letters),
            plane_count=plane_count,
            planes=planes,
            missing=missing,
            file_name=file.path.name if multi else None,
            file_uuid=file.uuid if multi else None,
            acquisition_date=self._created,
        )

    def _zct(self, storage_index: tuple[int, ...]) -> tuple[int, int, int]:
        found = dict(zip(self._letters, storage_index))
        return found.get("Z", 0), found.get("C", 0), found.get("T", 0)

    def _xml_for(self, file: _File, *, final: bool) -> str:
        images = [self._image_record(i, f, final) for i, f in enumerate(self._files)]
        ome = self._builder.build(images, self._global, uuid=f"urn:uuid:{file.uuid}")
        return str(ome.to_xml())

    def _write_final_xml(self) -> None:
        for file in self._files:
            xml = self._xml_for(file, final=True)
            tifffile.tiffcomment(file.path, comment=xml.encode("utf-8"))

    # ----------------------------------------------------------------- close

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for file in self._files:
                self._pad_last_step(file)
        finally:
            for file in self._files:
                if file.writer is not None:
                    file.writer.close()
                    file.writer = None
        self._write_final_xml()

    def _pad_last_step(self, file: _File) -> None:
        """Complete the outermost step with zero planes so the XML's sizes
        and the page count agree; the padding is recorded as missing."""
        target = max(1, math.ceil(file.pages / self._inner_planes)) * self._inner_planes
        while file.pages < target:
            index = self._unravel(file.pages)
            self._write_page(file, self._blank())
            file.missing.append(index)

    def _unravel(self, flat: int) -> tuple[int, ...]:
        index = []
        for stride in self._strides:
            value, flat = divmod(flat, stride)
            index.append(value)
        return tuple(index)
