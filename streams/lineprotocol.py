"""InfluxDB line protocol: escaping and formatting of one point per line, timestamps in milliseconds.

Escaping follows what InfluxDB 1.x and later parse back to the same value: in tag keys, tag values
and field keys a comma, equals sign or space is preceded by a backslash; a string field value is
double-quoted with its double quotes and backslashes escaped. Line protocol cannot carry a line
break in a tag, nor a backslash at a tag's end: control characters become spaces and trailing
backslashes are dropped, the only places where a stored tag differs from the reading.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

_TAG_SPECIAL: Final = re.compile(r"([,= ])")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_SAFE_TAG: Final = re.compile(r"^[A-Za-z0-9._:\-]+$")

FieldValue = float | int | bool | str


def escape_measurement(name: str) -> str:
    return name.replace(",", r"\,").replace(" ", r"\ ")


def escape_tag(text: str) -> str:
    """Escape a tag key or value (and a field key)."""
    if _SAFE_TAG.match(text):
        return text
    cleaned = _CONTROL.sub(" ", text).rstrip("\\")
    return _TAG_SPECIAL.sub(r"\\\1", cleaned)


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
