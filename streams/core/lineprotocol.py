"""InfluxDB line protocol: escaping and formatting of one point per line, timestamps in milliseconds.

Escaping follows what InfluxDB 1.x and later parse back to the same value: in tag keys, tag values
and field keys a comma, equals sign or space is preceded by a backslash; a string field value is
double-quoted with its double quotes and backslashes escaped.

Line protocol cannot carry every tag value: a line break ends the line, InfluxDB 1.x refuses a tag
that ends in a backslash, and a backslash before a space, comma, equals sign or double quote reads
as (part of) an escape to some parsers. :func:`normalize_tag` is the one rule that makes a value
carriable, and its result is what InfluxDB stores: control characters (``\\x00`` to ``\\x1f``
and ``\\x7f``) become spaces, and a run of backslashes before a space, comma, equals sign or double
quote, or at the end of the value, is dropped. Those are the only places where a stored tag
differs from the reading. Two values with the same normal form are one series in InfluxDB, so
whatever keys a window by a tag value must key it by the normal form (:func:`escape_tag` normalises
too, so that no line can break, but normalising there alone would let such windows overwrite each
other).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

_TAG_SPECIAL: Final = re.compile(r"([,= ])")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
# a run of backslashes that line protocol cannot carry: before a space, comma, equals sign or double
# quote, or at the end (\Z: `$` would also match before a final line break)
_UNCARRIED_BACKSLASHES: Final = re.compile(r'\\+(?=[ ,="]|\Z)')
# values that are their own normal form and need no escaping (the id charset of schemas.readings);
# used with fullmatch: `$` would let a final line break through
_SAFE_TAG: Final = re.compile(r"[A-Za-z0-9._:\-]+")

FieldValue = float | int | bool | str


def escape_measurement(name: str) -> str:
    return name.replace(",", r"\,").replace(" ", r"\ ")


def normalize_tag(value: str) -> str:
    """The tag value InfluxDB stores for ``value`` (see the module's docstring); idempotent.

    Empty when ``value`` is empty or only backslashes: line protocol has no empty tag value.
    """
    if _SAFE_TAG.fullmatch(value):
        return value
    return _UNCARRIED_BACKSLASHES.sub("", _CONTROL.sub(" ", value))


def escape_tag(text: str) -> str:
    """A tag key or value (and a field key), normalised (:func:`normalize_tag`) and escaped."""
    if _SAFE_TAG.fullmatch(text):
        return text
    return _TAG_SPECIAL.sub(r"\\\1", normalize_tag(text))


def escape_string_field(text: str) -> str:
    """A string field value, quoted."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_float(value: float) -> str:
    # repr is the shortest text that reads back as the same float ("35.0", "1e-05")
    return repr(float(value))


def format_field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return format_float(value)
    return escape_string_field(value)


def format_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue],
    time_ms: int,
) -> str:
    """One point. Tags with an empty value are left out (line protocol has no empty tag)."""
    if not fields:
        raise ValueError(f"a point of {measurement} needs at least one field")
    tag_part = "".join(
        f",{escape_tag(key)}={escaped}" for key, value in sorted(tags.items()) if (escaped := escape_tag(value))
    )
    field_part = ",".join(f"{escape_tag(key)}={format_field(value)}" for key, value in fields.items())
    return f"{escape_measurement(measurement)}{tag_part} {field_part} {time_ms}"


def join_lines(lines: Iterable[str]) -> bytes:
    return "\n".join(lines).encode("utf-8")
