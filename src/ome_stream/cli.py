"""The `ome-stream` command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

if TYPE_CHECKING:
    from ._recover import RecoveryReport

app = typer.Typer(
    help="Stream microscope acquisitions into OME-Zarr and OME-TIFF.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

FORMAT_SUFFIXES = {"zarr": ".ome.zarr", "tiff": ".ome.tiff"}
# `info` lists at most this many ranges of missing frames per image
MISSING_RANGES_SHOWN = 20


@app.callback()
def _root() -> None:
    """Stream microscope acquisitions into OME-Zarr and OME-TIFF."""
    # Output that is not a terminal (a pipe, a file, a captured run) is not
    # wrapped: each message stays on one line, with its paths whole, for
    # grep and scripts; a terminal wraps at word boundaries as usual.
    console.soft_wrap = not console.is_terminal


@app.command()
def demo(
    out: Annotated[
        Path, typer.Argument(help="Directory for the demo datasets.")
    ] = Path("ome-stream-demo"),
    format: Annotated[
        str, typer.Option("--format", "-f", help="zarr, tiff or both.")
    ] = "both",
) -> None:
    """Run a t/p/c/z MDA on a simulated microscope, write it, and validate it."""
    from ._validate import validate_dataset

    if format not in ("zarr", "tiff", "both"):
        raise typer.BadParameter("--format must be zarr, tiff or both")
    try:
        import useq

        from .mmcore import OMEStreamHandler, simulated_core
    except ImportError as exc:
        console.print(
            f"[red]{escape(str(exc))}[/]. The demo drives pymmcore-plus: "
            "pip install 'ome-stream\\[mmcore]'"
        )
        raise typer.Exit(2) from None
    formats = ["zarr", "tiff"] if format == "both" else [format]
    out.mkdir(parents=True, exist_ok=True)
    sequence = useq.MDASequence(
        axis_order="tpcz",
        time_plan={"interval": 0, "loops": 3},
        stage_positions=[
            {"x": 0, "y": 0, "z": 0, "name": "A1-field"},
            {"x": 400, "y": 150, "z": 1, "name": "B2-field"},
        ],
        channels=["DAPI", "FITC"],
        z_plan={"range": 4, "step": 1},
    )
    table = Table(title="ome-stream demo: MDA on a simulated microscope")
    columns = ("format", "output", "frames", "MB", "seconds", "MB/s (run)", "check")
    for column in columns:
        table.add_column(column)
    n_frames = len(list(sequence))
    failed = False
    for name in formats:
        core = simulated_core(image_shape=(256, 256))
        handler = OMEStreamHandler(out / f"demo{FORMAT_SUFFIXES[name]}", overwrite=True)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"acquiring to {name}", total=n_frames)
            core.mda.events.frameReady.connect(
                lambda *_, task=task: progress.advance(task)
            )
            start = time.perf_counter()
            core.mda.run(sequence, output=handler)
            seconds = time.perf_counter() - start
        settings = handler.settings
        stream = handler.stream
        if settings is None or stream is None or handler.errors:
            console.print(
                f"[red]{name}: the run failed: {escape(str(handler.errors))}[/]"
            )
            raise typer.Exit(1)
        problems = validate_dataset(settings.output_path)
        failed |= bool(problems)
        megabytes = stream.frames_written * settings.frame_nbytes / 1e6
        table.add_row(
            name,
            escape(str(settings.output_path)),
            f"{stream.frames_written}/{n_frames}",
            f"{megabytes:.1f}",
            f"{seconds:.2f}",
            f"{megabytes / seconds:.0f}",
            "[green]valid[/]"
            if not problems
            else f"[red]{escape('; '.join(problems))}[/]",
        )
    console.print(table)
    dims = ", ".join(f"{k}={v}" for k, v in sequence.sizes.items() if v)
    positions = ", ".join(p.name or "?" for p in sequence.stage_positions)
    channels = ", ".join(c.config for c in sequence.channels)
    console.print(
        f"dims {dims}, y=256, x=256 · channels {channels} · positions {positions}"
    )
    if failed:
        raise typer.Exit(1)


@app.command()
def acquire(
    sequence_file: Annotated[
        Path, typer.Argument(help="A useq MDASequence as .yaml or .json.")
    ],
    out: Annotated[Path, typer.Option("--output", "-o", help="Output path.")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Micro-Manager config (default: simulated)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing output.")] = False,
) -> None:
    """Run a useq sequence file on the simulated microscope or real hardware."""
    try:
        import useq

        from .mmcore import OMEStreamHandler, simulated_core
    except ImportError as exc:
        console.print(f"[red]{escape(str(exc))}[/]: pip install 'ome-stream\\[mmcore]'")
        raise typer.Exit(2) from None
    if not sequence_file.is_file():
        raise typer.BadParameter(f"{sequence_file} does not exist")
    try:
        sequence = useq.MDASequence.from_file(sequence_file)
    except Exception as exc:
        console.print(
            f"[red]Cannot read {escape(str(sequence_file))} as a useq sequence: "
            f"{escape(str(exc))}[/]"
        )
        raise typer.Exit(2) from None
    from pymmcore_plus import CMMCorePlus

    core: CMMCorePlus
    if config is None:
        core = simulated_core()
    else:
        core = CMMCorePlus()
        core.loadSystemConfiguration(str(config))
    try:
        handler = OMEStreamHandler(out, overwrite=overwrite)
    except FileExistsError as exc:  # (refused before the microscope moves)
        console.print(f"[red]{escape(str(exc))}[/] (--overwrite replaces it)")
        raise typer.Exit(1) from None
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("acquiring", total=None)
        core.mda.events.frameReady.connect(lambda *_: progress.advance(task))
        # attached: a run whose frames cannot be written is canceled
        handler.attach(core)

        def count_frames(*_: object) -> None:
            # (after the handler laid the run out, with the camera's field
            # of view: a grid's tiles are known only then)
            if handler.settings is not None:
                progress.update(task, total=handler.settings.num_frames)

        core.mda.events.sequenceStarted.connect(count_frames)
        stopped: Exception | None = None
        try:
            core.mda.run(sequence)
        except Exception as exc:  # (the hardware: a preset that does not exist)
            stopped = exc
        finally:
            handler.detach()
    if stopped is not None:
        handler.wait_closed(30)
        written = handler.stream.frames_written if handler.stream else 0
        console.print(
            f"[red]The acquisition stopped: {escape(str(stopped))}[/]"
            + (
                f"\n{written} frames were written to "
                f"{escape(str(handler.output_path))}; it is closed, and its "
                "acquisition_status records how the run ended."
                if handler.output_path is not None
                else ""
            )
        )
        raise typer.Exit(1)
    if handler.errors or handler.settings is None:
        for error in handler.errors:
            console.print(f"[red]{escape(f'{error.callback}: {error.error!r}')}[/]")
        if handler.frames_dropped:
            console.print(
                f"[red]{handler.frames_dropped} frames were acquired after the "
                "failure and not written; the run was canceled.[/]"
            )
        raise typer.Exit(1)
    _print_summary(handler.settings.output_path)


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="An OME-Zarr or OME-TIFF dataset.")],
) -> None:
    """Summarise a dataset: images, dimensions, channels, frames, metadata."""
    if not path.exists():
        from ._validate import does_not_exist

        raise typer.BadParameter(does_not_exist(path))
    try:
        _print_summary(path)
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(1) from None


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="An OME-Zarr or OME-TIFF dataset.")],
) -> None:
    """Check a dataset: OME schema, NGFF schema, structure, every array read."""
    from ._validate import interrupted_note, validate_dataset

    problems = validate_dataset(path)
    for problem in problems:
        console.print(f"[red]✗[/] {escape(problem)}")
    if problems:
        raise typer.Exit(1)
    console.print(f"[green]✓[/] {escape(str(path))} is a valid, readable dataset.")
    note = interrupted_note(path)  # readable as it is, but not complete
    if note is not None:
        console.print(f"[yellow]![/] {escape(note)}")


def _lost_frames(report: RecoveryReport) -> str:
    """A recovery's lost frames, by position, as ranges of storage indices
    (a shard of 100 frames: one range, not 100 indices)."""
    from ._missing import ranges_of

    by_position: dict[int, list[tuple[int, ...]]] = {}
    for position, index in report.frames_lost:
        by_position.setdefault(position, []).append(tuple(index))
    parts = []
    for position, indices in sorted(by_position.items()):
        shape = report.shapes[position] if position < len(report.shapes) else ()
        shape = shape[: len(indices[0])]  # (the index axes: not y, x)
        fits = all(
            len(i) == len(shape) and all(0 <= v < n for v, n in zip(i, shape))
            for i in indices
        )
        ranges = ranges_of(indices, shape) if fits and shape else None
        if ranges is None:
            where = ", ".join(str(list(i)) for i in sorted(indices))
        else:
            where = ", ".join(str(a) if a == b else f"{a} to {b}" for a, b in ranges)
        parts.append(f"position {position} index {where}")
    return "; ".join(parts)


@app.command()
def recover(
    path: Annotated[Path, typer.Argument(help="The interrupted dataset.")],
) -> None:
    """Make an interrupted dataset valid again, sized to what was acquired."""
    from ._recover import recover as recover_dataset
    from ._validate import validate_dataset

    try:
        report = recover_dataset(path)
    except FileNotFoundError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(1) from None
    except (OSError, ValueError) as exc:  # no room, a damaged journal or file
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(1) from None
    console.print(
        f"Recovered {escape(str(report.output_path))} ({report.format}): "
        f"{report.frames_recovered} frames, {report.frames_skipped} skipped."
    )
    if report.pages_not_journaled:
        console.print(
            f"[yellow]{report.pages_not_journaled} pages written in the last moments "
            "before the interruption were not in the journal (no record of their "
            "frames): they are not kept.[/]"
        )
    if report.frames_lost:
        console.print(
            f"[yellow]{len(report.frames_lost)} frames were in open write blocks "
            f"and are lost: {escape(_lost_frames(report))}[/]"
        )
    problems = validate_dataset(report.output_path)
    for problem in problems:
        console.print(f"[red]✗[/] {escape(problem)}")
    if problems:
        raise typer.Exit(1)
    console.print(f"[green]✓[/] {escape(str(report.output_path))} is valid.")


def _print_summary(path: Path) -> None:
    from ._inspect import summarize

    summary = summarize(path)
    table = Table(title=f"{summary.format}: {escape(str(path))}")
    columns = ("image", "dims", "dtype", "channels", "with metadata", "missing")
    for column in columns:
        table.add_column(column)
    for image in summary.images:
        dims = " ".join(f"{n}={s}" for n, s in zip(image.axes, image.shape))
        table.add_row(
            escape(image.name),
            escape(dims),
            image.dtype,
            escape(", ".join(image.channels)),
            str(image.frames_with_metadata),
            str(image.missing),
        )
    console.print(table)
    for image in summary.images:
        if not image.missing_ranges:
            continue
        shown = image.missing_ranges[:MISSING_RANGES_SHOWN]
        more = len(image.missing_ranges) - len(shown)
        console.print(
            f"[bold]missing in {escape(image.name)}[/]: "
            + escape("; ".join(shown))
            + (f"; and {more} more range{'s' if more > 1 else ''}" if more else ""),
            highlight=False,
        )
    for key, value in summary.highlights.items():
        console.print(f"[bold]{escape(str(key))}[/]: {escape(str(value))}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
