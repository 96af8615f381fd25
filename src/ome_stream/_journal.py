"""The write-ahead journal that makes an interrupted dataset recoverable.

A small append-only JSON-lines file beside the data
(`<output_path>.ome-stream-journal.jsonl`). The first line holds the
settings; then one line per frame once its pixels are in the file (handed to
the operating system, so a killed process cannot lose them), one per skipped
frame, one per global-metadata call, and - for buffered (chunked or sharded)
Zarr - one per frame received into a write block, so that recovery can
name the frames an interrupted block lost (all but those of the last
~20-40 ms: the lines are written a batch at a time, see
regions.RECEIVED_EVERY_S). A clean `close` deletes the
journal; its presence means the dataset was interrupted.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ._frame_metadata import MetadataJSON, encode_metadata
from ._version import __version__

SUFFIX = ".ome-stream-journal.jsonl"

Index = tuple[int, ...]
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_NO_METADATA: Any = object()  # a record without the "m" field


def _line(event: str, position: int, index: Index, metadata: Any = _NO_METADATA) -> str:
    """One frame's record, formatted directly: the same JSON the encoder
    would give, at a fraction of its cost (one line per frame). `metadata`
    is the frame's metadata already encoded (MetadataJSON), or None."""
    indices = ",".join(map(str, index))
    if metadata is _NO_METADATA:
        return f'{{"event":"{event}","p":{position},"i":[{indices}]}}\n'
    m = "null" if metadata is None else metadata
    return f'{{"event":"{event}","p":{position},"i":[{indices}],"m":{m}}}\n'


def journal_path(output_path: Path) -> Path:
    return output_path.with_name(output_path.name + SUFFIX)


def os_absolute(path: str | Path) -> Path:
    """`path` absolute, with `.` and `..` taken as the OS takes them (after
    the symbolic links before them: `link/..` is the link target's parent,
    not the directory holding the link), its last name kept as given."""
    path = Path(path)
    if path.name in ("", ".."):
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def path_spellings(path: Path) -> list[Path]:
    """Where a journal for `path` may be beside: `path` as the OS takes it
    (a stream writes its journal so), or, reached through a symbolic link,
    the path it leads to."""
    found = [os_absolute(path), Path(os.path.realpath(path))]
    return [p for i, p in enumerate(found) if p not in found[:i]]


def find_dataset_journal(path: str | Path) -> tuple[Path, Path] | None:
    """The dataset `path` belongs to (its output_path, absolute) and its
    journal: `path` itself, or, for a file of a directory layout (a
    position's TIFF, the companion file, named as ome-stream names them),
    the directory holding it. None when neither has a journal beside it."""
    from ._formats.tiff.layout import is_directory_layout_file

    path = Path(path)
    candidates = path_spellings(path)
    if path.is_file():
        for directory in path_spellings(path.parent):
            if is_directory_layout_file(directory / path.name):
                candidates.append(directory)
    for dataset in candidates:
        journal = journal_path(dataset)
        # (an empty one: a stream starting, or killed before its first
        # line; nothing to recover from it)
        if journal.is_file() and journal.stat().st_size:
            return dataset, journal
    return None


_CAN_LOCK = importlib.util.find_spec("fcntl") is not None


def _flock(fd: int, *, shared: bool = False) -> bool | None:
    """Take an advisory lock on the open file `fd` (POSIX `flock`, held
    until every descriptor of this open is closed, by a killed process's OS
    too): True, False when another open of the file holds a conflicting
    one, None where that cannot be told (Windows, or a file system refusing
    locks)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def journal_in_use(path: Path) -> bool | None:
    """Whether a stream still writing holds the journal at `path` (True),
    or none does (False: its run was interrupted); None when that cannot
    be told (see `_flock`; locks on a network file system may hold on one
    host only)."""
    if not _CAN_LOCK:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        taken = _flock(fd, shared=True)
    finally:
        os.close(fd)  # (and our lock with it)
    return None if taken is None else not taken


def _in_use(path: Path, then: str) -> BlockingIOError:
    return BlockingIOError(
        f"{path.name} is held by a stream still writing to "
        f"{path.name.removesuffix(SUFFIX)}, or by a recovery of it (in this "
        f"or another process): {then}. Nothing was changed."
    )


class HeldJournal:
    """A journal opened and locked (exclusive) for a recovery: a stream
    still writing it, another recovery, or a stream started meanwhile to
    replace its dataset (overwrite=True) is refused for as long as it is
    held. Read, appended to and removed through this one descriptor, never
    another open of the file (on SMB mounts locks are mandatory, and other
    opens could not read it; on NFS, closing any descriptor of the file
    lets the lock go)."""

    def __init__(self, path: Path, then: str) -> None:
        """BlockingIOError (`then`: what to do, for the message) if a stream
        or a recovery holds it; FileNotFoundError if it is gone or empty
        once taken (nothing to recover)."""
        self.path = path
        self._pid = os.getpid()
        self._fd: int | None = None
        binary = getattr(os, "O_BINARY", 0)
        for _ in range(50):  # (a moment's wait for a check by validate)
            try:
                try:
                    fd, self.writable = os.open(path, os.O_RDWR | binary), True
                except PermissionError:  # (read-only: can be read and removed)
                    fd, self.writable = os.open(path, os.O_RDONLY | binary), False
            except FileNotFoundError:
                raise self._nothing("was removed as recover opened it") from None
            taken = _flock(fd)
            if taken is None or (taken and _is_at(fd, path)):
                break
            os.close(fd)
            time.sleep(0.01)
        else:
            raise _in_use(path, then)
        self._fd = fd
        _OPEN.add(self)
        if not os.fstat(fd).st_size:  # (emptied by a stream started meanwhile)
            self.close()
            raise self._nothing("was emptied as recover opened it")

    def _nothing(self, what: str) -> FileNotFoundError:
        return FileNotFoundError(
            f"{self.path} {what} (the stream writing it closed, or started "
            "anew, or another recovery finished): nothing to recover."
        )

    def read(self) -> JournalContents:
        assert self._fd is not None
        contents = _read_lines(self.path, _lines(self._fd))
        contents.held = self
        return contents

    def record(self, contents: JournalContents, **fields: Any) -> None:
        """Append a "recover" record (see `record_recovery`)."""
        assert self._fd is not None
        if not self.writable:
            raise PermissionError(
                errno.EACCES,
                f"{self.path.name} is read-only, and recover records in it what "
                "it found before it changes the files: make it writable and run "
                "recover again. Nothing was changed",
                str(self.path),
            )
        from ._formats.tiff.pages import _write_fully, read_at

        fd, end = self._fd, contents.end
        data = (_ENCODER.encode({"event": "recover", **fields}) + "\n").encode()
        if end and read_at(fd, 1, end - 1) != b"\n":
            data = b"\n" + data  # (a whole record, all but its newline)
        os.ftruncate(fd, end)  # (a torn tail)
        _write_fully(fd, [data], end)
        os.fsync(fd)
        contents.recovery = {"event": "recover", **fields}
        contents.end += len(data)

    def remove(self) -> None:
        """The dataset is recovered: remove the journal (while still locked:
        no one takes it meanwhile), then let it go."""
        if not _CAN_LOCK:  # (Windows: a file open cannot be removed)
            self.close()
            self.path.unlink(missing_ok=True)
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self.close()

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> HeldJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lines(fd: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The lines of the open file `fd` from its start (the last without
    its newline if it has none), read at their offsets: no other
    descriptor of the file is opened."""
    from ._formats.tiff.pages import read_at

    offset, rest = 0, b""
    while True:
        data = read_at(fd, chunk, offset)
        if not data:
            break
        offset += len(data)
        parts = (rest + data).split(b"\n")
        rest = parts.pop()
        for part in parts:
            yield part + b"\n"
    if rest:
        yield rest


def _is_at(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is the file at `path` now."""
    try:
        here = os.stat(path)
    except OSError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


# journals open in this process, closed in a child it forks (which would
# otherwise hold their locks for as long as it lives)
_OPEN: weakref.WeakSet[Journal | HeldJournal] = weakref.WeakSet()


def _forget_in_child() -> None:
    for journal in list(_OPEN):
        fd, journal._fd = journal._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _OPEN.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class Journal:
    """Appends records; each call's lines reach the OS in one write.

    Made in two steps: `Journal(path)` opens the file and locks it
    (BlockingIOError if a stream still writing holds it), before the stream
    makes its output; `start` then empties it and writes the first record.
    Locked until closed (`journal_in_use`). Only the process that opened it
    writes, closes or removes it (not a process forked from it).
    """

    def __init__(
        self,
        path: Path,
        settings_json: dict[str, Any] | None = None,
        created: datetime | None = None,
    ) -> None:
        """`settings_json` given: `start` at once."""
        self.path = path
        self._broken = False
        self._size = 0  # bytes of whole writes
        self._pid = os.getpid()
        self._fd: int | None = None
        self._made = False  # this journal made the file, or emptied it
        self.frames_recorded = 0  # frames journaled as written (in the files)
        self._take()
        _OPEN.add(self)
        if settings_json is not None:
            try:
                self.start(settings_json, created)
            except BaseException:
                self.abandon()
                raise

    def _take(self) -> None:
        """Open the file, made if need be, and lock it: the file that is at
        the path once locked (a journal being removed meanwhile is not
        taken). A moment's wait for a check by `validate` or `recover`,
        which holds a shared lock for as long as it takes to take it."""
        path = self.path
        flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0)
        for _ in range(50):
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
                made = True
            except FileExistsError:
                try:
                    fd = os.open(path, flags)
                except FileNotFoundError:
                    continue  # (removed meanwhile)
                made = False
            if _flock(fd) is not False and _is_at(fd, path):
                self._fd, self._made = fd, made
                return
            os.close(fd)
            time.sleep(0.01)
        raise _in_use(path, "close that stream (or let the recovery finish) first")

    def clear(self) -> None:
        """Empty the file: a killed run's journal at an output being
        replaced (overwrite=True, or its output gone) is given up before
        anything of that output is removed, so that a stream failing part
        way never leaves it beside data it no longer describes."""
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        self._made = True
        self._size = 0

    def start(self, settings_json: dict[str, Any], created: datetime | None) -> None:
        """Empty the file (if `clear` has not) and write its first record."""
        self.clear()
        record: dict[str, Any] = {"event": "open", "version": __version__}
        if created is not None:
            record["created"] = created.isoformat()
        self._write({**record, "settings": settings_json})

    def abandon(self) -> None:
        """The stream could not be made: let the journal go, removed if it
        holds nothing of a run (this one made or emptied it, or it is empty:
        made by another attempt that let it go first). Never raises."""
        if self._pid != os.getpid() or self._fd is None:
            return
        empty = False
        with contextlib.suppress(OSError):
            empty = os.fstat(self._fd).st_size == 0
            if (self._made or empty) and _CAN_LOCK and _is_at(self._fd, self.path):
                self.path.unlink()  # (still locked: no one takes it meanwhile)
        made = self._made
        with contextlib.suppress(OSError):
            self.close()
        if (made or empty) and not _CAN_LOCK:  # (Windows: closed first)
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)

    def _write(self, record: dict[str, Any]) -> None:
        self._write_text(_ENCODER.encode(record) + "\n")

    def _write_text(self, text: str) -> None:
        if self._fd is None or not text:
            return
        if self._broken:
            raise OSError(
                f"the journal {self.path} ends in part of a write that could "
                "not be taken back; nothing more is written to it"
            )
        data = memoryview(text.encode("utf-8"))
        size = len(data)
        try:
            while data:  # a short write is continued
                written = os.write(self._fd, data)
                if not written:
                    raise OSError(f"writing the journal {self.path} wrote nothing")
                data = data[written:]
        except BaseException:
            # Part of the lines may be in the file (a full disk): cut them
            # off, or the same lines written again after them would make one
            # line of two, which no reader takes.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._broken = True  # (a line after it would join it)
            raise
        self._size += size

    def written(
        self, entries: list[tuple[int, Index, MetadataJSON | None, bool]]
    ) -> None:
        """Record many frames at once: (position, index, metadata, skipped),
        the metadata as encoded on `append`."""
        self._write_text(
            "".join(
                [
                    _line("skip", p, i) if skipped else _line("frame", p, i, m)
                    for p, i, m, skipped in entries
                ]
            )
        )
        self.frames_recorded += sum(not entry[3] for entry in entries)

    def skip(self, position: int, index: Index) -> None:
        self._write_text(_line("skip", position, index))

    def received(self, entries: list[tuple[int, Index]]) -> None:
        """Record frames taken into a write block: (position, index)."""
        self._write_text("".join([_line("received", p, i) for p, i in entries]))

    def global_metadata(self, namespace: str, metadata: dict[str, Any]) -> None:
        self._write({"event": "global", "namespace": namespace, "data": metadata})

    def remove(self) -> None:
        """The dataset is complete: the journal is no longer needed."""
        if self._pid != os.getpid():
            return  # (the parent's, in a forked child)
        if not _CAN_LOCK:  # (Windows: a file open cannot be removed)
            self.close()
            self.path.unlink(missing_ok=True)
            return
        try:  # removed while still locked: `recover` never sees it
            self.path.unlink(missing_ok=True)
        finally:
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class JournalContents:
    settings: dict[str, Any]
    # each frame's metadata as the JSON text journaled (decoded on demand:
    # a long run's would take ~3 KB a frame decoded, ~0.4 as text)
    frames: dict[tuple[int, Index], MetadataJSON | None] = field(default_factory=dict)
    skipped: set[tuple[int, Index]] = field(default_factory=set)
    received: set[tuple[int, Index]] = field(default_factory=set)
    global_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the first "recover" record: a recovery that began, and was stopped
    # (killed, or a full disk) after it had started changing the files
    recovery: dict[str, Any] | None = None
    end: int = 0  # the byte after the last line read whole (not a torn tail)
    created: datetime | None = None  # when the acquisition began
    # the open it was read through, held for a recovery (records appended
    # through it)
    held: HeldJournal | None = field(default=None, repr=False, compare=False)

    @property
    def lost(self) -> list[tuple[int, Index]]:
        """Frames that reached the writer but not the file (open write blocks)."""
        return sorted(self.received - set(self.frames) - self.skipped)

    def metadata(self, key: tuple[int, Index]) -> dict[str, Any] | None:
        """A journaled frame's metadata, decoded."""
        text = self.frames[key]
        return None if text is None else dict(json.loads(text))


_FRAME_HEAD = b'{"event":"frame","p":'


def read_journal(path: Path) -> JournalContents:
    """Parse a journal, a line at a time; a bad last line (torn: the kill
    came mid-write, or garbage a power loss left) is ignored, a bad line
    before it refused."""
    with path.open("rb") as f:
        return _read_lines(path, f)


def _read_lines(path: Path, f: Iterable[bytes]) -> JournalContents:
    contents: JournalContents | None = None
    bad: int | None = None  # a line that did not parse: fatal unless last
    offset = 0
    for number, line in enumerate(f, start=1):
        offset += len(line)
        if not line.strip():
            continue
        if bad is not None:
            raise ValueError(f"{path}: line {bad} is not valid JSON")
        frame = _frame_line(line) if line.startswith(_FRAME_HEAD) else None
        if frame is not None:
            if contents is None:
                break  # (not a journal: refused below)
            contents.frames[frame[0]] = frame[1]
            contents.end = offset
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            bad = number
            continue
        if contents is None:
            if not isinstance(record, dict) or record.get("event") != "open":
                break
            contents = JournalContents(
                settings=record["settings"], created=_datetime(record)
            )
        else:
            _add_record(contents, record)
        contents.end = offset
    if contents is None:
        raise ValueError(f"{path} is not an ome-stream journal.")
    return contents


def _datetime(record: dict[str, Any]) -> datetime | None:
    """The open record's "created" time (None in a journal without it, or
    with a value that is not one)."""
    try:
        created = datetime.fromisoformat(str(record["created"]))
    except (KeyError, ValueError):
        return None
    return created if created.tzinfo is not None else None


def record_recovery(path: Path, contents: JournalContents, **fields: Any) -> None:
    """Append a "recover" record to the journal at `path` (as `contents`
    read it), on disk before it returns: what a recovery found before it
    changed anything, for a recovery run again after this one is stopped.
    A torn tail is cut first, so that the record is a whole line after the
    last whole one. Through the open `contents` was read with, if held."""
    if contents.held is not None:
        contents.held.record(contents, **fields)
        return
    with HeldJournal(path, "let it finish first") as held:
        held.record(contents, **fields)


def _frame_line(line: bytes) -> tuple[tuple[int, Index], MetadataJSON | None] | None:
    """A frame line as `_line` writes it, without decoding its metadata;
    None for anything else (then parsed as JSON)."""
    if not line.endswith(b"}\n"):
        return None
    position_end = line.find(b',"i":[', len(_FRAME_HEAD))
    index_end = line.find(b"]", position_end)
    if position_end < 0 or index_end < 0:
        return None
    rest = line[index_end + 1 : -2]
    if not rest.startswith(b',"m":'):
        return None
    try:
        position = int(line[len(_FRAME_HEAD) : position_end])
        index_text = line[position_end + 6 : index_end]
        index = tuple(map(int, index_text.split(b","))) if index_text else ()
        text = rest[5:].decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    if text == "null":
        return (position, index), None
    try:  # (checked, not kept: the text is what recover writes)
        if not isinstance(json.loads(text, parse_constant=_no_constant), dict):
            return None
    except (json.JSONDecodeError, ValueError):
        return None
    return (position, index), MetadataJSON(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # (NaN, Infinity: never journaled)


def _add_record(contents: JournalContents, record: dict[str, Any]) -> None:
    event = record.get("event")
    if event in ("frame", "skip", "received"):
        key = (int(record["p"]), tuple(int(i) for i in record["i"]))
        if event == "frame":
            metadata = record.get("m")
            contents.frames[key] = (
                None if metadata is None else encode_metadata(metadata)
            )
        elif event == "skip":
            contents.skipped.add(key)
        else:
            contents.received.add(key)
    elif event == "global":
        contents.global_metadata[record["namespace"]] = record["data"]
    elif event == "recover" and contents.recovery is None:
        contents.recovery = record
