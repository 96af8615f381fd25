"""Physical units: OME-NGFF names, OME-XML symbols and the aliases people type.

OME-NGFF 0.5 (§ "axes metadata") names units by the UDUNITS-2 long name
("micrometer", "millisecond"); OME-XML (ome.xsd, `UnitsLength` / `UnitsTime`)
uses symbols ("µm", "ms"). Settings store the NGFF name; the OME-TIFF writer
converts back to the symbol.
"""

from __future__ import annotations

from typing import Literal

UnitKind = Literal["space", "time"]

# NGFF name -> OME-XML symbol. Symbols are case-sensitive ("Mm" is megameter,
# "mm" millimeter), so only names are matched case-insensitively.
LENGTH_UNITS: dict[str, str] = {
    "angstrom": "Å",
    "attometer": "am",
    "centimeter": "cm",
    "decimeter": "dm",
    "exameter": "Em",
    "femtometer": "fm",
    "foot": "ft",
    "gigameter": "Gm",
    "hectometer": "hm",
    "inch": "in",
    "kilometer": "km",
    "megameter": "Mm",
    "meter": "m",
    "micrometer": "µm",
    "mile": "mi",
    "millimeter": "mm",
    "nanometer": "nm",
    "parsec": "pc",
    "petameter": "Pm",
    "picometer": "pm",
    "terameter": "Tm",
    "yard": "yd",
    "yoctometer": "ym",
    "yottameter": "Ym",
    "zeptometer": "zm",
    "zettameter": "Zm",
}

TIME_UNITS: dict[str, str] = {
    "attosecond": "as",
    "centisecond": "cs",
    "day": "d",
    "decisecond": "ds",
    "exasecond": "Es",
    "femtosecond": "fs",
    "gigasecond": "Gs",
    "hectosecond": "hs",
    "hour": "h",
    "kilosecond": "ks",
    "megasecond": "Ms",
    "microsecond": "µs",
    "millisecond": "ms",
    "minute": "min",
    "nanosecond": "ns",
    "petasecond": "Ps",
    "picosecond": "ps",
    "second": "s",
    "terasecond": "Ts",
    "yoctosecond": "ys",
    "yottasecond": "Ys",
    "zeptosecond": "zs",
    "zettasecond": "Zs",
}

# Size of one unit in meters / seconds, for converting (e.g. TIFF resolution tags
# in centimeters, stage positions in micrometers).
_LENGTH_IN_METERS: dict[str, float] = {
    "angstrom": 1e-10,
    "attometer": 1e-18,
    "centimeter": 1e-2,
    "decimeter": 1e-1,
    "exameter": 1e18,
    "femtometer": 1e-15,
    "foot": 0.3048,
    "gigameter": 1e9,
    "hectometer": 1e2,
    "inch": 0.0254,
    "kilometer": 1e3,
    "megameter": 1e6,
    "meter": 1.0,
    "micrometer": 1e-6,
    "mile": 1609.344,
    "millimeter": 1e-3,
    "nanometer": 1e-9,
    "parsec": 3.0857e16,
    "petameter": 1e15,
    "picometer": 1e-12,
    "terameter": 1e12,
    "yard": 0.9144,
    "yoctometer": 1e-24,
    "yottameter": 1e24,
    "zeptometer": 1e-21,
    "zettameter": 1e21,
}

_MICRO_SIGNS = ("µ", "μ")  # U+00B5 MICRO SIGN and U+03BC GREEK SMALL LETTER MU

_LENGTH_ALIASES: dict[str, str] = {
    "um": "micrometer",
    "u": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "A": "angstrom",
}
_TIME_ALIASES: dict[str, str] = {
    "us": "microsecond",
    "usec": "microsecond",
    "µsec": "microsecond",
    "msec": "millisecond",
    "sec": "second",
    "secs": "second",
    "seconds": "second",
    "mins": "minute",
    "minutes": "minute",
    "hr": "hour",
    "hours": "hour",
}


def _lookup_table(names: dict[str, str], aliases: dict[str, str]) -> dict[str, str]:
    table: dict[str, str] = {}
    for name, symbol in names.items():
        table[name] = name
        table[symbol] = name
        if symbol.startswith("µ"):
            table["μ" + symbol[1:]] = name
    table.update(aliases)
    return table


_LENGTH_LOOKUP = _lookup_table(LENGTH_UNITS, _LENGTH_ALIASES)
_TIME_LOOKUP = _lookup_table(TIME_UNITS, _TIME_ALIASES)


def _canonical_key(unit: str) -> str:
    unit = unit.strip()
    for sign in _MICRO_SIGNS:
        if unit.startswith(sign):
            return "µ" + unit[1:]
    # Names are case-insensitive; 1-2 character symbols are not (Mm != mm).
    return unit.lower() if len(unit) > 2 else unit


def normalize_unit(unit: str) -> tuple[str, UnitKind] | None:
    """Return `(ngff_name, kind)` for a recognised unit, else None."""
    key = _canonical_key(unit)
    if key in _LENGTH_LOOKUP:
        return _LENGTH_LOOKUP[key], "space"
    if key in _TIME_LOOKUP:
        return _TIME_LOOKUP[key], "time"
    if key.endswith("s") and key[:-1] in _LENGTH_LOOKUP and len(key) > 3:
        return _LENGTH_LOOKUP[key[:-1]], "space"  # "micrometers"
    if key.endswith("s") and key[:-1] in _TIME_LOOKUP and len(key) > 3:
        return _TIME_LOOKUP[key[:-1]], "time"  # "milliseconds"
    return None


def known_units(kind: UnitKind) -> list[str]:
    """The NGFF unit names of one kind, for error messages."""
    return sorted(LENGTH_UNITS if kind == "space" else TIME_UNITS)


def ome_symbol(ngff_unit: str) -> str | None:
    """The OME-XML symbol of an NGFF unit name, or None if OME has none."""
    return LENGTH_UNITS.get(ngff_unit) or TIME_UNITS.get(ngff_unit)


def length_in_meters(ngff_unit: str) -> float | None:
    """How many meters one `ngff_unit` is, or None for a non-length unit."""
    return _LENGTH_IN_METERS.get(ngff_unit)
