"""`recover`: turn an interrupted dataset into a valid one, sized to what
was acquired, from the journal written beside it (see _journal.py).

- OME-Zarr is repaired in place: unbounded axes trimmed to the data, image
  metadata rewritten with the journal's per-frame metadata and the list of
  missing frames, global metadata restored.
- OME-TIFF is repaired in place too: each file is cut after its journaled
  pages, and the stream's backend takes it up from there and closes it as a
  normal close does (the last step padded, OME-XML describing exactly the
  planes present). Recovery needs room for that only, not for a copy.
  Compressed files, whose pages tifffile writes, are rebuilt instead: the
  journaled pages copied, in order, into fresh files that then replace the
  interrupted ones.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._frame_metadata import RecordSpill
from ._journal import (
    HeldJournal,
    Index,
    JournalContents,
    find_dataset_journal,
    journal_path,
    os_absolute,
    record_recovery,
)
from ._missing import missing_frames
from ._settings import AcquisitionSettings, OmeTiffFormat, OmeZarrFormat

if TYPE_CHECKING:
    from ._formats.tiff.tifffile import TiffFileBackend


@dataclass
class RecoveryReport:
    """What `recover` found and did."""

    output_path: Path
    format: str
    frames_recovered: int
    frames_skipped: int
    frames_lost: list[tuple[int, Index]] = field(default_factory=list)
    """(position, storage index) of frames that reached the writer but not
    the file: the open write blocks (chunks/shards) at the moment of the kill."""
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    """Each image's array shape as recovered (OME-Zarr; the frame's y, x
    last), or its page count (OME-TIFF)."""
    pages_not_journaled: int = 0
    """OME-TIFF: complete pages the files held past the ones the journal
    lists (written in the last moments before the kill, so with no record
    of their frame or metadata): not kept."""


def find_journal(path: Path) -> tuple[Path, Path]:
    """The dataset `path` belongs to (its output_path: `path`, or the
    directory of a directory layout's file) and its journal."""
    found = find_dataset_journal(path)
    if found is not None:
        return found
    if not (path.exists() or path.is_symlink()):
        from ._validate import does_not_exist

        raise FileNotFoundError(does_not_exist(path))
    candidate = journal_path(os_absolute(path))
    raise FileNotFoundError(
        f"No ome-stream journal beside {path} ({candidate.name}): the dataset "
        "was closed cleanly (nothing to recover) or was not written by ome-stream."
    )


def recover(path: str | Path) -> RecoveryReport:
    """Recover the interrupted dataset at `path` (its `output_path`, or any
    file of a directory layout), where it is now: a dataset moved or copied
    with its journal is recovered there.

    Raises FileNotFoundError when there is no journal (nothing to recover),
    BlockingIOError when a stream still writing holds it, ValueError when
    the journal is not one ome-stream can use, and OSError(ENOSPC) when the
    disk has no room for the recovery (saying what to do).
    """
    output, journal_file = find_journal(Path(path))
    # held (locked) until done: a stream still writing, another recovery,
    # or a stream started meanwhile to replace the dataset is refused
    with HeldJournal(
        journal_file, "recover the dataset once that process has closed it or ended"
    ) as held:
        settings, contents = _read(held, output)
        if isinstance(settings.format, OmeZarrFormat):
            with _zarr_room(output):
                report = _recover_zarr(settings, contents)
        elif isinstance(settings.format, OmeTiffFormat):
            report = _recover_tiff(settings, contents)
        else:
            raise ValueError(f"Cannot recover format {settings.format.name!r}.")
        held.remove()
    return report


def _read(
    held: HeldJournal, output: Path
) -> tuple[AcquisitionSettings, JournalContents]:
    """The journal's contents and its settings, moved to `output`."""
    journal_file = held.path
    try:
        contents = held.read()
        settings = AcquisitionSettings.model_validate(contents.settings)
        _check_entries(settings, contents)
    except (ValueError, KeyError, TypeError) as exc:  # (pydantic's included)
        detail = str(exc).rstrip(".")
        if isinstance(exc, KeyError):
            detail = f"a record lacks its {detail} field"
        raise ValueError(
            f"The journal {journal_file.name} cannot be used to recover "
            f"{output.name}: {detail}. It was damaged or not written by this "
            "version of ome-stream; nothing was changed. The pixels in the "
            "files are still readable as they are: delete the journal to keep "
            "the dataset so."
        ) from exc
    if not output.exists():
        raise FileNotFoundError(
            f"{output} is not there, only its journal: recover a dataset where "
            "it is, with its journal beside it. Nothing was changed."
        )
    # where the dataset is now, not where it was written: the same name
    # (whatever suffix its settings give it) in another directory, or renamed
    written = settings.output_path
    suffix = settings.format.suffix
    roots = [output.parent / Path(settings.root_path).name, output]
    if output.name.endswith(suffix):
        roots.append(output.with_name(output.name[: -len(suffix)]))
    for root in roots:
        moved = settings.model_copy(update={"root_path": str(root)})
        if moved.output_path == output:
            return moved, contents
    raise ValueError(
        f"Cannot recover {output}: it was written as {written.name}. Rename it "
        "(and its journal) back and run recover again."
    )


def _check_entries(settings: AcquisitionSettings, contents: JournalContents) -> None:
    """Refuse journal records that do not fit the settings (ValueError)."""
    n_positions = len(settings.positions)
    counts = [d.count for d in settings.storage_index_dimensions]
    records = [*contents.frames, *contents.skipped, *contents.received]
    for position, index in records:
        fits = len(index) == len(counts) and all(
            i >= 0 and (n is None or i < n) for i, n in zip(index, counts)
        )
        if not 0 <= position < n_positions or not fits:
            raise ValueError(
                f"a frame record (position {position}, index {list(index)}) does "
                f"not fit its settings ({n_positions} positions, index sizes "
                f"{counts})"
            )


@contextlib.contextmanager
def _zarr_room(output: Path) -> Iterator[None]:
    """Turn a full disk while an OME-Zarr is recovered into the error saying
    what to do (tensorstore reports one as RESOURCE_EXHAUSTED)."""
    try:
        yield
    except (OSError, ValueError) as exc:
        full = getattr(exc, "errno", None) in _NO_SPACE
        if not (full or "RESOURCE_EXHAUSTED" in str(exc)):
            raise
        directory, free = _free_space(output)
        raise OSError(
            errno.ENOSPC,
            f"Not enough free space to recover {output.name}: recovery "
            "rewrites its metadata documents (zarr.json, a few KB each), and "
            f"the disk in {directory} is full ({_size(free)} free). The "
            "pixels are untouched and the journal is kept: free some space "
            "and run recover again.",
        ) from exc


def _per_position(contents: JournalContents, n_positions: int) -> list[list[Any]]:
    """Journal entries of each position, in the order they were written."""
    entries: list[list[Any]] = [[] for _ in range(n_positions)]
    for (position, index), metadata in contents.frames.items():
        entries[position].append((index, metadata, False))
    for position, index in contents.skipped:
        entries[position].append((index, None, True))
    return entries


def _recover_zarr(
    settings: AcquisitionSettings, contents: JournalContents
) -> RecoveryReport:
    import tensorstore as ts

    from ._formats.zarr.arrays import array_document
    from ._formats.zarr.chunkfiles import partial_files
    from ._formats.zarr.layout import (
        NAMESPACE,
        file_kvstore,
        group_attributes,
        hierarchy_ome,
        image_locations,
        image_ome,
        image_section,
        metadata_temporaries,
        read_group_attributes,
        write_group,
        write_json_atomic,
    )

    root = settings.output_path
    spill = RecordSpill(root.parent)  # (beside the store, as a stream's)
    locations = image_locations(settings)
    dims = settings.storage_index_dimensions
    unbounded = next((i for i, d in enumerate(dims) if d.count is None), None)
    entries = _per_position(contents, len(locations))

    def kept(path: str, ome: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        # NGFF metadata and user attributes (update_metadata) already in the
        # document win over regenerated ones; journaled global metadata wins
        # on the root. A document another library overwrote (acquire-zarr
        # rewrites group documents at close) keeps nothing.
        existing = read_group_attributes(root, path) or {}
        user = {k: v for k, v in existing.items() if k not in ("ome", NAMESPACE)}
        if path == "":
            user.update(contents.global_metadata)
        if ome is not None and isinstance(existing.get("ome"), dict):
            ome = existing["ome"]
        return ome, user

    shapes = []
    for position, location in enumerate(locations):
        shape = [d.count or 0 for d in dims] + list(settings.frame_shape)
        if unbounded is not None:
            # Frames lost in open blocks were acquired: keep their place (as
            # missing) so the array spans the whole acquisition.
            reached = [e[0] for e in entries[position]]
            reached += [index for p, index in contents.lost if p == position]
            shape[unbounded] = max((i[unbounded] + 1 for i in reached), default=1)
        array_dir = root / location.array_path
        if not (array_dir / "zarr.json").is_file():
            if settings.format.backend != "acquire-zarr":
                # written before the journal: the dataset was damaged since
                raise ValueError(
                    f"Cannot recover {root.name}: its array metadata "
                    f"{location.array_path}/zarr.json is missing (deleted, or "
                    "the dataset was not copied whole). Nothing was changed."
                )
            # acquire-zarr writes an array's metadata only with its first
            # chunks: killed before that, the array holds nothing readable.
            shutil.rmtree(array_dir, ignore_errors=True)
            document = array_document(settings, tuple(shape))
            write_json_atomic(array_dir / "zarr.json", document, compact=True)
        spec = {
            "driver": "zarr3",
            "kvstore": file_kvstore(array_dir),
        }
        array = ts.open(spec, open=True).result()
        if list(array.shape) != shape:
            # metadata only, in either direction; never touches chunks
            exclusive_max = [
                new if new != old else None for new, old in zip(shape, array.shape)
            ]
            grow = any(new > old for new, old in zip(shape, array.shape))
            array = array.resize(
                exclusive_max=exclusive_max,
                resize_metadata_only=True,
                expand_only=grow,
                shrink_only=not grow,
            ).result()
        if settings.format.backend == "acquire-zarr":
            _drop_undecodable_chunks(array, array_dir)
        for partial in partial_files(array_dir):
            partial.unlink()  # a chunk the kill interrupted: never journaled
        shapes.append(tuple(shape))
        written = np.zeros(shape[:-2], bool)
        records = spill.records()  # (a long run's are not all held)
        for index, metadata, skipped in entries[position]:
            if skipped:
                continue
            written[index] = True
            if metadata is not None:
                records.append(index, metadata)
        ome, user = kept(location.group_path, image_ome(settings, location))
        section = image_section(
            location, records, missing_frames(written), for_file=True
        )
        write_group(root, location.group_path, group_attributes(ome, section, user))
    for path, hierarchy in hierarchy_ome(settings, locations).items():
        ome, user = kept(path, hierarchy)
        write_group(root, path, group_attributes(ome, None, user))
    for temporary in metadata_temporaries(root):
        temporary.unlink()  # a zarr.json the kill interrupted, never renamed
    return RecoveryReport(
        output_path=root,
        format="ome-zarr",
        frames_recovered=len(contents.frames),
        frames_skipped=len(contents.skipped),
        frames_lost=contents.lost,
        shapes=shapes,
    )


def _drop_undecodable_chunks(array: Any, array_dir: Path) -> None:
    """Delete the chunk (shard) files of `array` that cannot be decoded.

    acquire-zarr writes chunks on its own threads and never says a frame is
    on disk, so its frames are all recovered as missing; a kill in the middle
    of writing a file would still leave that file unreadable and break
    readers of the whole array. Every file is read once (recovery is rare);
    the ones that decode keep their pixels.
    """
    from ._formats.zarr.chunkfiles import stored_chunks

    grid = tuple(array.chunk_layout.write_chunk.shape)
    for path, region in stored_chunks(array_dir, grid, tuple(array.shape)):
        try:
            array[region].read().result()
        except ValueError:  # tensorstore: DATA_LOSS
            path.unlink()


_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))

# The final OME-XML describes each frame's metadata in a Plane and a
# MapAnnotation: ~2x the bytes of its JSON in the journal for an MDA's
# metadata, ~4-6x for a single key, more for text XML must escape; in every
# file holding the full OME-XML. While it is written, the records and the
# text wait in scratch files beside it (~2x more). The files' reserved
# interim-XML space, counted with them, adds a margin. An estimate: should
# it be short, the rebuild stops at the full disk and says so.
_XML_BYTES_PER_JOURNAL_BYTE = 6
_SCRATCH_BYTES_PER_JOURNAL_BYTE = 2


def _room_to_rebuild(original: TiffFileBackend, output: Path) -> int:
    """About the bytes rebuilding an OME-TIFF's files beside them takes: the
    pixels they hold now and the final OME-XML in each file (or companion)
    holding it."""
    needed = sum(path.stat().st_size for path in original.paths)
    return needed + _xml_room(original, output)


def _room_in_place(
    backend: TiffFileBackend, contents: JournalContents, pages: list[int]
) -> int:
    """About the bytes completing an OME-TIFF's files in place takes, once
    `replay` gave each file's `pages`: the blank pages' IFDs, the files
    started anew, the final OME-XML. Sets the journal's global metadata on
    the backend (close writes it; the estimate counts it)."""
    for namespace, values in contents.global_metadata.items():
        backend.set_global_metadata(namespace, values)
    return (
        backend.padding_nbytes()
        + backend.new_files_nbytes(pages)
        + _xml_room(backend, backend.output_path)
    )


def _xml_room(backend: TiffFileBackend, output: Path) -> int:
    """About the bytes the final OME-XML of each file (or companion) holding
    it takes, with its scratch files."""
    paths = backend.paths
    documents = sum(map(backend.layout.holds_full_metadata, range(len(paths))))
    documents += backend.companion_path is not None
    per_byte = _XML_BYTES_PER_JOURNAL_BYTE * documents + _SCRATCH_BYTES_PER_JOURNAL_BYTE
    return per_byte * journal_path(output).stat().st_size


@contextlib.contextmanager
def _room(
    output: Path,
    needed: int,
    scratch: Path | None = None,
    *,
    in_place: bool = False,
    changed: bool | None = None,
    why: str = "",
) -> Iterator[None]:
    """Turn running out of disk space into the error saying what to do (after
    removing `scratch`, so that the free space it names is right). In place:
    the files were being completed, so they have changed (unless `changed`
    says otherwise)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _NO_SPACE:
            raise
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        changed = in_place if changed is None else changed
        raise _no_room(
            output, needed, in_place=in_place, changed=changed, why=why
        ) from exc


def _free_space(output: Path) -> tuple[Path, int]:
    """The directory holding `output`, and the bytes free on its disk."""
    directory = output.parent.resolve()
    return directory, shutil.disk_usage(directory).free


def _no_room(
    output: Path,
    needed: int,
    *,
    in_place: bool = False,
    changed: bool = False,
    why: str = "",
) -> OSError:
    """`why`: why the files are rebuilt rather than completed in place."""
    directory, free = _free_space(output)
    short = (
        ""
        if free < needed
        else " (it needed more than estimated, or the disk is out of inodes "
        "or over a quota)"
    )
    what = (
        "recovery completes the OME-TIFF files where they are (blank pages for "
        "the last step, and the final OME-XML)"
        if in_place
        else f"recovery rebuilds the OME-TIFF files beside them{why}"
    )
    if changed:
        outcome = (
            "Every journaled page is still in the files, and the journal is "
            "kept (readers may not open the files until recovery is done): "
            "free some space there and run recover again."
        )
    else:
        outcome = (
            "Nothing was changed. Free some space there, or copy the dataset "
            f"with {journal_path(output).name} to a disk with room and recover "
            "the copy."
        )
    return OSError(
        errno.ENOSPC,
        f"Not enough free space to recover {output.name}: {what}, which needs "
        f"about {_size(needed)} free in {directory}, and {_size(free)} "
        f"are{short}. {outcome}",
    )


@contextlib.contextmanager
def _unreadable(path: Path, page: int | None = None) -> Iterator[None]:
    """Name the file (and page) that cannot be read as the journal says."""
    try:
        yield
    except (ValueError, IndexError, struct.error) as exc:
        where = path.name if page is None else f"page {page} of {path.name}"
        raise ValueError(
            f"Cannot recover: {where} cannot be read ({exc}), though the journal "
            "says it was written. Was the file truncated or changed after the "
            "interruption? Nothing was changed."
        ) from exc


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes} bytes"


def _recover_tiff(
    settings: AcquisitionSettings, contents: JournalContents
) -> RecoveryReport:
    from ._formats.tiff.tifffile import TiffFileBackend

    output = settings.output_path
    original = TiffFileBackend(settings)  # names the interrupted files
    if contents.created is not None:
        original.created = contents.created  # (the acquisition's, not now)
    missing = [path.name for path in original.paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Cannot recover {output.name}: {', '.join(missing)} missing (renamed, "
            "or not copied?). Recovery needs every file as it was written, "
            "with its journal. Nothing was changed."
        )
    try:  # (also checks the journal before a rebuild)
        pages = original.replay(_write_order(original, contents))
    except ValueError as exc:
        raise ValueError(
            f"The journal {journal_path(output).name} cannot be used to recover "
            f"{output.name}: {exc}. Nothing was changed."
        ) from exc
    linked = _hard_linked(original)
    if original.compressed or linked:
        # (compressed pages are written by tifffile, which cannot take up a
        # file; a file with another name elsewhere - a hard-linked backup -
        # would change under that name too: both are rebuilt and replaced)
        why = (
            f" ({linked} has another link, a hard-linked copy, which completing "
            "it in place would change too)"
            if linked
            else ""
        )
        backend, not_journaled = _rebuild_tiff_beside(settings, contents, original, why)
    else:
        backend, not_journaled = _repair_tiff(contents, original, pages)
    positions = range(len(settings.positions))
    shapes: list[tuple[int, ...]] = [(backend.page_count(p),) for p in positions]
    return RecoveryReport(
        output_path=settings.output_path,
        format="ome-tiff",
        frames_recovered=len(contents.frames),
        frames_skipped=len(contents.skipped),
        frames_lost=contents.lost,
        shapes=shapes,
        pages_not_journaled=not_journaled,
    )


def _hard_linked(backend: TiffFileBackend) -> str:
    """The name of a file of the dataset that has another link (name)
    too, or ""."""
    paths = [*backend.paths]
    if backend.companion_path is not None and backend.companion_path.is_file():
        paths.append(backend.companion_path)
    return next((path.name for path in paths if path.stat().st_nlink > 1), "")


def _write_order(
    backend: TiffFileBackend, contents: JournalContents
) -> list[tuple[int, Index, Any, bool]]:
    """The journaled pages, (position, storage index, metadata, skipped), in
    the order they were written. The journal lists each page once it is in
    its file: positions sharing a file interleave as acquired, so a file's
    pages are its journaled planes in acquisition order."""
    n_positions = len(backend.settings.positions)
    entries = _per_position(contents, n_positions)
    ordered = sorted(
        (backend.acquisition_number(position, entry[0]), position, entry)
        for position in range(n_positions)
        for entry in entries[position]
    )
    return [(position, *entry) for _, position, entry in ordered]


def _repair_tiff(
    contents: JournalContents, backend: TiffFileBackend, pages: list[int]
) -> tuple[TiffFileBackend, int]:
    """Cut each file after its journaled pages (`pages`, as the backend
    replayed them), and close it as a stream would have: the backend
    (closed) and the number of pages cut."""
    from ._formats.tiff.pages import ChainCut

    output = backend.output_path
    # (the files are read first: a damaged file is the error to report,
    # since freeing space would not help)
    cuts: dict[int, ChainCut] = {}
    not_journaled = 0
    for index, (path, keep) in enumerate(zip(backend.paths, pages)):
        if keep:
            with _unreadable(path, keep - 1):
                cuts[index] = cut = ChainCut.plan(path, keep)
            not_journaled += cut.pages - keep
        else:
            not_journaled += _linked_pages(path)
    needed = _room_in_place(backend, contents, pages)
    if _free_space(output)[1] < needed:
        raise _no_room(output, needed, in_place=True)
    with _room(output, needed, in_place=True, changed=False):
        not_journaled = _first_count(output, contents, not_journaled)
    try:
        with _room(output, needed, in_place=True):
            backend.resume(cuts)
            backend.close()
    except BaseException:
        backend.release()
        # a companion written in part (recover writes it again)
        temporary = backend.layout.companion_temporary
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise
    return backend, not_journaled


def _first_count(output: Path, contents: JournalContents, not_journaled: int) -> int:
    """The pages not journaled as the first recovery found them, before it
    changed the files: a recovery run again after one that was stopped
    finds its blank pages, and not the pages it cut. Journaled the first
    time, before any file is changed."""
    if contents.recovery is not None:
        return int(contents.recovery.get("pages_not_journaled", 0))
    record_recovery(journal_path(output), contents, pages_not_journaled=not_journaled)
    return not_journaled


def _linked_pages(path: Path) -> int:
    """The pages a file holds (0 if it holds none readable)."""
    import tifffile

    from ._formats.tiff.pages import FirstIfd

    try:
        with path.open("rb") as f:  # (tifffile logs a file of no pages)
            FirstIfd.read(f.fileno())
        with tifffile.TiffFile(path) as tif:
            return len(tif.pages)
    except (tifffile.TiffFileError, ValueError, IndexError, struct.error):
        return 0


def _rebuild_tiff_beside(
    settings: AcquisitionSettings,
    contents: JournalContents,
    original: TiffFileBackend,
    why: str = "",
) -> tuple[TiffFileBackend, int]:
    """Replay the journaled pages, in the order they were written, into a
    fresh dataset of the same layout beside it, and let it replace the
    interrupted files (and companion). `why`: why not in place, for the
    error a full disk gives."""
    output = settings.output_path
    needed = _room_to_rebuild(original, output)
    if _free_space(output)[1] < needed:
        raise _no_room(output, needed, why=why)
    with _room(output, needed, why=why):
        scratch = Path(
            tempfile.mkdtemp(prefix=".ome-stream-recover-", dir=output.parent)
        )
    try:
        with _room(output, needed, scratch, why=why):
            backend, not_journaled = _rebuild_tiff(
                settings, contents, original, scratch
            )
            not_journaled = _first_count(output, contents, not_journaled)
        # (renaming needs no room: a failure here is reported as it is)
        for interrupted, rebuilt in zip(original.paths, backend.paths):
            rebuilt.replace(interrupted)
        if backend.companion_path is not None:
            assert original.companion_path is not None
            backend.companion_path.replace(original.companion_path)
            # a kill while the companion was being replaced leaves its temporary
            temporary = original.layout.companion_temporary
            assert temporary is not None
            temporary.unlink(missing_ok=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return backend, not_journaled


def _rebuild_tiff(
    settings: AcquisitionSettings,
    contents: JournalContents,
    original: TiffFileBackend,
    scratch: Path,
) -> tuple[TiffFileBackend, int]:
    """The journaled pages of `original`'s files written, closed, as a new
    dataset of the same layout in `scratch`: its backend, and the number of
    pages the files held past the journaled ones."""
    import tifffile

    from ._formats.tiff.tifffile import TiffFileBackend

    rebuilt_settings = settings.model_copy(
        update={"root_path": str(scratch / Path(settings.root_path).name)}
    )
    backend = TiffFileBackend(rebuilt_settings)
    backend.created = original.created
    pages_seen = [0] * len(original.paths)
    backend.open()
    sources: list[tifffile.TiffFile] = []
    try:
        for path in original.paths:
            with _unreadable(path):
                sources.append(tifffile.TiffFile(path))
        for position, index, metadata, skipped in _write_order(backend, contents):
            file_index = original.layout.file_of_position(position)
            page = pages_seen[file_index]
            pages_seen[file_index] += 1
            if skipped:
                backend.skip(position, index)
                continue
            with _unreadable(original.paths[file_index], page):
                data = sources[file_index].pages[page].asarray()
            backend.write(position, index, data, metadata)
        not_journaled = 0
        for path, source, seen in zip(original.paths, sources, pages_seen):
            with _unreadable(path):
                not_journaled += max(0, len(source.pages) - seen)
    except BaseException:
        backend.release()
        raise
    finally:
        for source in sources:
            source.close()
    for namespace, values in contents.global_metadata.items():
        backend.set_global_metadata(namespace, values)
    backend.close()
    if backend.write_error is not None:
        # a page's records or interim metadata failed (a full disk): the
        # rebuilt files may lack metadata; the originals are kept
        raise backend.write_error
    return backend, not_journaled
