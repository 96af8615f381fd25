"""Output format models: `OmeZarrFormat`, `OmeTiffFormat`, `ScratchFormat`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt

from .base import SettingsModel

ZARR_SUFFIXES = (".zarr",)
TIFF_SUFFIXES = (".tif", ".tiff", ".tf2", ".tf8", ".btf")

ZarrBackendName = Literal["tensorstore", "acquire-zarr", "zarr-python"]
# "auto" takes the first of these that is installed (tensorstore always is).
ZARR_BACKEND_ORDER: tuple[str, ...] = ("tensorstore", "acquire-zarr", "zarr-python")
# The extra that installs each optional backend.
BACKEND_EXTRAS = {"acquire-zarr": "acquire-zarr", "zarr-python": "zarr-python"}
TiffBackendName = Literal["tifffile"]


def _strip_suffixes(name: str, suffixes: tuple[str, ...]) -> str:
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.lower().endswith(".ome"):
        name = name[:-4]
    return name


class OmeZarrFormat(SettingsModel):
    """OME-Zarr v0.5 (Zarr v3): one directory at `output_path`."""

    name: Literal["ome-zarr"] = "ome-zarr"
    backend: ZarrBackendName | Literal["auto"] = "auto"
    suffix: str = ".ome.zarr"

    def get_output_path(self, root_path: str, *, num_positions: int = 1) -> Path:
        """The store directory: `root_path`, plus the suffix if it has none."""
        if root_path.lower().endswith(ZARR_SUFFIXES):
            return Path(root_path)
        return Path(root_path + self.suffix)


class OmeTiffFormat(SettingsModel):
    """OME-TIFF: one file, or a directory of one file per position.

    `prefer_single_file`: "auto" writes one file for one position and a
    directory `<stem>/` of `<stem>_p000<suffix>`, … files for several;
    "always" writes one file whatever the number of positions (each position
    is an Image, i.e. a series, of that file); "never" always writes the
    directory, even for one position.

    `multi_file_metadata` (directory layouts only), as the OME-TIFF
    specification defines: "redundant" puts the full OME-XML in every file;
    "master-tiff" puts it in the first file and a `BinaryOnly` reference to
    it in the others; "companion-file" puts it in `<stem>.companion.ome`
    beside the files, each of which holds a `BinaryOnly` reference.
    """

    name: Literal["ome-tiff"] = "ome-tiff"
    backend: TiffBackendName | Literal["auto"] = "auto"
    suffix: str = ".ome.tiff"
    prefer_single_file: Literal["auto", "always", "never"] = "auto"
    multi_file_metadata: Literal["redundant", "master-tiff", "companion-file"] = (
        "redundant"
    )

    def is_single_file(self, num_positions: int) -> bool:
        if self.prefer_single_file == "auto":
            return num_positions == 1
        return self.prefer_single_file == "always"

    def get_output_path(self, root_path: str, *, num_positions: int = 1) -> Path:
        """The single file, or the directory holding one file per position."""
        if self.is_single_file(num_positions):
            if root_path.lower().endswith(TIFF_SUFFIXES):
                return Path(root_path)
            return Path(root_path + self.suffix)
        return Path(_strip_suffixes(root_path, TIFF_SUFFIXES))

    def file_paths(self, root_path: str, num_positions: int) -> list[Path]:
        """The TIFF files: one, or one per position in position order."""
        output = self.get_output_path(root_path, num_positions=num_positions)
        if self.is_single_file(num_positions):
            return [output]
        return [
            output / f"{output.name}_p{index:03d}{self.suffix}"
            for index in range(num_positions)
        ]

    def companion_path(self, root_path: str, num_positions: int) -> Path | None:
        """The companion OME-XML file, when `multi_file_metadata` asks for one."""
        if self.is_single_file(num_positions):
            return None
        if self.multi_file_metadata != "companion-file":
            return None
        output = self.get_output_path(root_path, num_positions=num_positions)
        return output / f"{output.name}.companion.ome"


class ScratchFormat(SettingsModel):
    """In-memory numpy arrays (for tests and live processing); nothing on disk."""

    name: Literal["scratch"] = "scratch"
    backend: Literal["scratch", "auto"] = "auto"
    max_memory_bytes: PositiveInt = 4 * 2**30
    suffix: str = ""

    def get_output_path(self, root_path: str, *, num_positions: int = 1) -> Path:
        return Path(root_path)


FormatModel = Annotated[
    OmeZarrFormat | OmeTiffFormat | ScratchFormat, Field(discriminator="name")
]

# Strings accepted for `format`: the format names, their short forms and the
# backend names (each backend writes exactly one format).
FORMAT_ALIASES: dict[str, dict[str, Any]] = {
    "ome-zarr": {"name": "ome-zarr"},
    "zarr": {"name": "ome-zarr"},
    "tensorstore": {"name": "ome-zarr", "backend": "tensorstore"},
    "acquire-zarr": {"name": "ome-zarr", "backend": "acquire-zarr"},
    "zarr-python": {"name": "ome-zarr", "backend": "zarr-python"},
    "ome-tiff": {"name": "ome-tiff"},
    "tiff": {"name": "ome-tiff"},
    "tifffile": {"name": "ome-tiff", "backend": "tifffile"},
    "scratch": {"name": "scratch"},
    "memory": {"name": "scratch"},
}


def format_from_suffix(root_path: str) -> str | None:
    """'ome-zarr' / 'ome-tiff' from the path's suffix, or None."""
    lower = root_path.lower().rstrip("/")
    if lower.endswith(ZARR_SUFFIXES):
        return "ome-zarr"
    if lower.endswith(TIFF_SUFFIXES):
        return "ome-tiff"
    return None


def path_suffix(root_path: str) -> str:
    """The suffix of root_path including '.ome' (".ome.tiff"), or ''."""
    name = Path(root_path.rstrip("/")).name
    suffixes = Path(name).suffixes
    if not suffixes:
        return ""
    if len(suffixes) >= 2 and suffixes[-2].lower() == ".ome":
        return suffixes[-2] + suffixes[-1]
    return suffixes[-1]
