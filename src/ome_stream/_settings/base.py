"""The base every settings model derives from."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

# What XML 1.0 cannot hold (not even escaped): C0 controls other than tab,
# newline and carriage return; lone surrogates; U+FFFE and U+FFFF.
XML_INCOMPATIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_compatible(value: str) -> str:
    found = XML_INCOMPATIBLE.search(value)
    if found is not None:
        raise ValueError(
            f"{value!r} contains U+{ord(found.group()):04X}, a character OME-XML "
            "cannot hold (a control character other than tab or newline, or a "
            "lone surrogate); remove it."
        )
    return value


# A name written to OME-XML (and OME-Zarr) as it is.
Text = Annotated[str, AfterValidator(_xml_compatible)]


class SettingsModel(BaseModel):
    """Validated on construction *and* on assignment; unknown fields are errors."""

    model_config = ConfigDict(
        validate_default=True,
        validate_assignment=True,
        extra="forbid",
    )
