"""Per-frame metadata: checked and encoded on `append`, stored by backends.

Special keys (units fixed by the spec we follow, `spec/003`): `delta_t` and
`exposure_time` in seconds, `position_x`, `position_y`, `position_z` in
micrometers. OME-TIFF writes them as `Plane` attributes; every other key goes
to a `MapAnnotation`. OME-Zarr stores the dict as given, with `storage_index`.

A frame's metadata travels and is kept as compact JSON text (`MetadataJSON`):
`append` encodes it once to check it, the journal writes that text as it is,
and backends keep it for the final metadata - every frame's, for the whole
run - at about a sixth of the memory of the dict (hardware metadata from
pymmcore-plus: ~0.5 against ~3 KB a frame). It is decoded when the final
metadata is built.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NewType

import numpy as np

PLANE_KEYS = ("delta_t", "exposure_time", "position_x", "position_y", "position_z")
RESERVED_KEYS = ("storage_index",)

# A frame's metadata as compact JSON text of an object (see the module doc).
MetadataJSON = NewType("MetadataJSON", str)


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """Metadata of one stored frame, in its image's storage coordinates."""

    storage_index: tuple[int, ...]
    metadata_json: MetadataJSON

    @classmethod
    def of(
        cls, storage_index: tuple[int, ...], metadata: dict[str, Any]
    ) -> FrameRecord:
        """A record of metadata already checked (e.g. read from a journal)."""
        return cls(storage_index, encode_metadata(metadata))

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata, decoded anew at each call."""
        decoded: dict[str, Any] = json.loads(self.metadata_json)
        return decoded

    def to_json(self) -> dict[str, Any]:
        return {**self.metadata, "storage_index": list(self.storage_index)}

    def json_text(self) -> str:
        """`to_json` as compact JSON text, without decoding the metadata."""
        index = ",".join(map(str, self.storage_index))
        text = self.metadata_json
        # (an object's text: "{}" or "{...}"; `storage_index` is reserved,
        # so it is never there already)
        sep = "" if text == "{}" else ","
        return f'{text[:-1]}{sep}"storage_index":[{index}]}}'


def encode_metadata(metadata: dict[str, Any]) -> MetadataJSON:
    """JSON-safe metadata (as `checked_metadata` returns) as MetadataJSON."""
    return MetadataJSON(json.dumps(metadata, separators=(",", ":"), allow_nan=False))


def _to_builtin(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def checked_metadata(metadata: Any, argument: str = "frame_metadata") -> dict[str, Any]:
    """A JSON-safe deep copy of `metadata`, or a clear error naming the problem.

    numpy scalars and arrays become Python numbers and lists; anything else that
    JSON cannot hold (datetime, objects, NaN, non-string keys) raises.
    """
    result: dict[str, Any] = json.loads(checked_metadata_json(metadata, argument))
    return result


def checked_metadata_json(
    metadata: Any, argument: str = "frame_metadata"
) -> MetadataJSON:
    """`checked_metadata`, as compact JSON text (one encoding, no copy)."""
    if not isinstance(metadata, Mapping):
        raise TypeError(
            f"{argument} must be a dict of JSON values, got {type(metadata).__name__}."
        )
    for key in metadata:
        if not isinstance(key, str):
            raise TypeError(f"{argument} keys must be strings; got {key!r}.")
        if key in RESERVED_KEYS:
            raise ValueError(
                f"{argument} key {key!r} is reserved (the writer sets it); rename it."
            )
    try:
        encoded = json.dumps(
            metadata, default=_to_builtin, allow_nan=False, separators=(",", ":")
        )
    except (TypeError, ValueError) as exc:
        bad = _first_bad_key(metadata)
        where = f" at key {bad!r}" if bad else ""
        raise TypeError(
            f"{argument} must be JSON-serializable{where}: {exc}. Convert the value "
            "to a str, number, bool, None, list or dict (NaN/inf are not JSON: use "
            "None)."
        ) from None
    return MetadataJSON(encoded)


def _first_bad_key(metadata: Mapping[str, Any]) -> str | None:
    for key, value in metadata.items():
        try:
            json.dumps(value, default=_to_builtin, allow_nan=False)
        except (TypeError, ValueError):
            return key
    return None


def plane_value(metadata: Mapping[str, Any], key: str) -> float | None:
    """A special key's value as a finite float, or None if absent/unusable."""
    value = metadata.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range: not a plane value
        return None
    return number if math.isfinite(number) else None
