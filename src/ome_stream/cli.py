"""The `ome-stream` command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

app = typer.Typer(
    help="Stream microscope acquisitions into OME-Zarr and OME-TIFF.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

FORMAT_SUFFIXES = {"zarr": ".ome.zarr", "tiff": ".ome.tiff"}


@app.callback()
def _root() -> None:
    """Stream microscope acquisitions into OME-Zarr and OME-TIFF."""


@app.command()
def demo(
    out: Annotated[
        Path, typer.Argument(help="Directory for the demo datasets.")
    ] = Path("ome-stream-demo"),
    format: Annotated[
        str, typer.Option("--format", "-f", help="zarr, tiff or both.")
    ] = "both",
) -> None:
    """Write a synthetic 5-D (t, c, z, y, x) acquisition and read it back."""
    from . import AcquisitionSettings, Channel, Dimension, create_stream
    from ._synthetic import SyntheticSample

    if format not in ("zarr", "tiff", "both"):
        raise typer.BadParameter("--format must be zarr, tiff or both")
    formats = ["zarr", "tiff"] if format == "both" else [format]
    out.mkdir(parents=True, exist_ok=True)
    n_t, n_z, shape = 4, 9, (512, 512)
    channels = [
        Channel(name="DAPI", emission_wavelength_nm=461, color="blue"),
        Channel(name="GFP", emission_wavelength_nm=510, color="lime"),
    ]
    dims = [
        Dimension(name="t", count=n_t, unit="s", scale=2.0),
        Dimension(name="c", coords=channels),
        Dimension(name="z", count=n_z, unit="um", scale=0.5),
        Dimension(name="y", count=shape[0], unit="um", scale=0.325),
        Dimension(name="x", count=shape[1], unit="um", scale=0.325),
    ]
    sample = SyntheticSample(shape)
    frames = []
    with console.status("Rendering synthetic frames"):
        for t in range(n_t):
            for c in range(len(channels)):
                for z in range(n_z):
                    frames.append(sample.frame(t=t, c=c, z=(z - n_z // 2) / n_z))
    table = Table(title="ome-stream demo: synthetic t/c/z acquisition")
    for column in ("format", "output", "frames", "MB", "seconds", "MB/s", "read back"):
        table.add_column(column)
    for name in formats:
        settings = AcquisitionSettings(
            root_path=str(out / f"demo{FORMAT_SUFFIXES[name]}"),
            dimensions=dims,
            dtype="uint16",
            overwrite=True,
        )
        start = time.perf_counter()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"writing {name}", total=len(frames))
            with create_stream(settings) as stream:
                for i, frame in enumerate(frames):
                    t = i // (len(channels) * n_z)
                    stream.append(frame, frame_metadata={"delta_t": t * 2.0})
                    progress.advance(task)
        seconds = time.perf_counter() - start
        megabytes = sum(f.nbytes for f in frames) / 1e6
        ok = _read_back_matches(settings.output_path, name, frames)
        table.add_row(
            name,
            str(settings.output_path),
            str(len(frames)),
            f"{megabytes:.1f}",
            f"{seconds:.2f}",
            f"{megabytes / seconds:.0f}",
            "[green]identical[/]" if ok else "[red]MISMATCH[/]",
        )
        if not ok:
            console.print(table)
            raise typer.Exit(1)
    console.print(table)


def _read_back_matches(path: Path, fmt: str, frames: list[np.ndarray]) -> bool:
    expected = np.stack(frames)
    if fmt == "tiff":
        import tifffile

        data = tifffile.imread(path)
    else:
        import tensorstore as ts

        store = ts.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "0")}}
        ).result()
        data = store.read().result()
    return bool(np.array_equal(data.reshape(expected.shape), expected))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
