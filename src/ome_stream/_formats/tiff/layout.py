"""Where an OME-TIFF dataset's files go, and which of them hold the metadata.

The layouts the OME-TIFF specification defines:

- one file: every position is an Image (a series) of that file, which holds
  the full OME-XML;
- a directory `<stem>/` of `<stem>_p000<suffix>`, ... one file per position,
  the metadata being
  - "redundant": the full OME-XML in every file,
  - "master-tiff": the full OME-XML in the first file, a `BinaryOnly`
    reference to it in the others,
  - "companion-file": the full OME-XML in `<stem>.companion.ome` beside the
    files, each of which holds a `BinaryOnly` reference to it.

With `overwrite=True` a new run removes what an earlier run with the same
root path left that this run would not replace (files of more positions, a
companion, the other layout's file or directory), and only names this module
would write.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..._journal import HeldJournal, journal_path
from ..._settings import AcquisitionSettings, OmeTiffFormat
from ..._settings.formats import TIFF_SUFFIXES

Parsed = TypeVar("Parsed")

MetadataPlacement = Literal["single", "redundant", "master-tiff", "companion-file"]


@dataclass(frozen=True)
class TiffLayout:
    """The files of one dataset, in file-index order."""

    output_path: Path
    files: tuple[Path, ...]
    companion: Path | None
    placement: MetadataPlacement

    @classmethod
    def from_settings(cls, settings: AcquisitionSettings) -> TiffLayout:
        fmt = settings.format
        assert isinstance(fmt, OmeTiffFormat)
        n_positions = len(settings.positions)
        single = fmt.is_single_file(n_positions)
        return cls(
            output_path=settings.output_path,
            files=tuple(fmt.file_paths(settings.root_path, n_positions)),
            companion=fmt.companion_path(settings.root_path, n_positions),
            placement="single" if single else fmt.multi_file_metadata,
        )

    @property
    def single_file(self) -> bool:
        return self.placement == "single"

    def file_of_position(self, position_index: int) -> int:
        return 0 if self.single_file else position_index

    def holds_full_metadata(self, file_index: int) -> bool:
        """Whether the TIFF carries the full OME-XML (not a BinaryOnly stub)."""
        if self.placement in ("single", "redundant"):
            return True
        return self.placement == "master-tiff" and file_index == 0

    @property
    def companion_temporary(self) -> Path | None:
        """Where a new companion is written before it replaces the old one."""
        if self.companion is None:
            return None
        return self.companion.with_name(self.companion.name + ".tmp")


def _other_layouts(settings: AcquisitionSettings) -> tuple[Path, Path]:
    """The single file and the directory this root path gives."""
    fmt = settings.format
    assert isinstance(fmt, OmeTiffFormat)
    n_positions = len(settings.positions)
    single = fmt.model_copy(update={"prefer_single_file": "always"})
    directory = fmt.model_copy(update={"prefer_single_file": "never"})
    return (
        single.get_output_path(settings.root_path, num_positions=n_positions),
        directory.get_output_path(settings.root_path, num_positions=n_positions),
    )


def _is_ours(name: str, stem: str, suffix: str) -> bool:
    """Names ome-stream writes inside `<stem>/`: position files (any TIFF
    suffix, any number of positions) and the companion with its temporary."""
    suffixes = "|".join(
        re.escape(s)
        for s in {suffix, *TIFF_SUFFIXES, *(".ome" + s for s in TIFF_SUFFIXES)}
    )
    position_file = re.compile(rf"{re.escape(stem)}_p\d{{3,}}(?:{suffixes})", re.I)
    companion = f"{stem}.companion.ome"
    return bool(position_file.fullmatch(name)) or name in (
        companion,
        companion + ".tmp",
    )


def is_directory_layout_file(path: Path) -> bool:
    """Whether `path` is named as a file of a directory layout is, in the
    directory it is in (`<stem>/<stem>_p000.ome.tiff`, the companion)."""
    return _is_ours(path.name, path.parent.name, TIFF_SUFFIXES[0])


_LET_IT_FINISH = "close that stream (or let the recovery finish) first"


def claim_earlier_outputs(
    settings: AcquisitionSettings, layout: TiffLayout
) -> list[HeldJournal]:
    """The other layout's journal at this root path (a killed run's, of a
    single file or a directory), locked, before anything is replaced
    (overwrite=True): refused (BlockingIOError, nothing changed) while a
    stream or a recovery holds it. `remove_earlier_outputs` removes it
    first, then that run's files."""
    own = journal_path(layout.output_path)
    claimed: list[HeldJournal] = []
    try:
        for other in map(journal_path, _other_layouts(settings)):
            if other == own or not other.is_file():
                continue
            try:
                claimed.append(
                    HeldJournal(
                        other, "close that stream (or let the recovery finish) first"
                    )
                )
            except FileNotFoundError:
                continue  # (gone or empty: nothing of a run to give up)
    except BaseException:
        for held in claimed:
            held.close()
        raise
    return claimed


def remove_earlier_outputs(
    settings: AcquisitionSettings,
    layout: TiffLayout,
    claimed: list[HeldJournal] | None = None,
) -> None:
    """Delete what an earlier run with this root path wrote (overwrite=True):
    our files in `<stem>/`, the other layout's single file, and their
    journals (the other layout's `claimed`, or claimed here; given up
    before its files are removed, so that a removal failing part way
    leaves no journal beside what it no longer describes). Files of other
    names are never touched."""
    fmt = settings.format
    assert isinstance(fmt, OmeTiffFormat)
    single, directory = _other_layouts(settings)
    if claimed is None:
        claimed = claim_earlier_outputs(settings, layout)
    try:
        for held in claimed:
            held.remove()
    finally:
        for held in claimed:
            held.close()
    # (this stream's own journal is held by it, and emptied, not removed)
    own = journal_path(layout.output_path)
    for other in (journal_path(single), journal_path(directory)):
        if other != own:
            other.unlink(missing_ok=True)  # (an empty one)
    if single.is_file():
        single.unlink()
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.is_file() and _is_ours(entry.name, directory.name, fmt.suffix):
                entry.unlink()
        if layout.single_file and not any(directory.iterdir()):
            directory.rmdir()


def read_dataset_ome(path: Path) -> tuple[Any, Path]:
    """The full OME (ome_types.OME) of the dataset a file belongs to, and the
    file holding it: a TIFF's own OME-XML, the file its BinaryOnly element
    names (relative to its directory), or a companion `.ome` file's.

    Raises ValueError when there is no OME-XML or a BinaryOnly reference
    leads nowhere.
    """
    from ome_types import from_xml

    def binary_only(ome: Any) -> str | None:
        return None if ome.binary_only is None else str(ome.binary_only.metadata_file)

    return read_dataset_xml(path, from_xml, binary_only)


def read_dataset_xml(
    path: Path,
    parse: Callable[[str], Parsed],
    binary_only: Callable[[Parsed], str | None],
) -> tuple[Parsed, Path]:
    """`parse` of the full OME-XML of the dataset a file belongs to (see
    `read_dataset_ome`), and the file holding it; `binary_only` names the
    file a parsed BinaryOnly stub refers to (None: not a stub)."""
    import tifffile

    holder = path
    for _ in range(2):  # a BinaryOnly stub names the holder; no chains
        if holder.name.lower().endswith(".ome"):
            xml = holder.read_text(encoding="utf-8")
        else:
            with tifffile.TiffFile(holder) as tif:
                xml = tif.pages.first.description
        if not xml.lstrip().startswith("<"):
            raise ValueError(f"{holder.name} holds no OME-XML.")
        parsed = parse(xml)
        metadata_file = binary_only(parsed)
        if metadata_file is None:
            return parsed, holder
        target = holder.parent / metadata_file
        if not target.is_file():
            raise ValueError(
                f"{holder.name} refers to {metadata_file} for its "
                "metadata (BinaryOnly), which does not exist beside it."
            )
        holder = target
    raise ValueError(f"{path.name}: BinaryOnly refers to another BinaryOnly file.")
