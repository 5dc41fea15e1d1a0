"""Event-time parsing: RFC 3339 with a UTC offset, or integer epoch milliseconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

# RFC 3339 section 5.6: full-date "T" full-time, where full-time requires an offset (Z or +hh:mm).
# The grammar allows "t", "z" and (by note) a space in place of "T".
# ASCII digits only: without re.ASCII, \d would take any Unicode digit ("٢٠٢٦" for 2026).
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_rfc3339_ms(text: str) -> int:
    """Return epoch milliseconds of an RFC 3339 timestamp; raise ValueError when it is not one.

    A timestamp without a UTC offset is rejected: its instant is unknown.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 timestamp with a UTC offset (e.g. 2026-11-21T19:00:00+09:00)")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset in ("Z", "z"):
        tz = UTC
    else:
        sign = 1 if offset[0] == "+" else -1
        off_h, off_m = int(offset[1:3]), int(offset[4:6])
        if off_h > 23 or off_m > 59:
            raise ValueError(f"UTC offset {offset} is out of range")
        tz = timezone(sign * timedelta(hours=off_h, minutes=off_m))
    micros = int((fraction or "0").ljust(6, "0")[:6])
    # datetime() raises ValueError for impossible dates and times (Feb 30, 25:00, leap second 60).
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=tz)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def format_ms(epoch_ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. ``2026-11-21T10:00:01.120Z``."""
    moment = _EPOCH + timedelta(milliseconds=epoch_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_ms_seconds(epoch_ms: int) -> str:
    """RFC 3339 in UTC to the second (window bounds), e.g. ``2026-11-21T09:00:00Z``."""
    moment = _EPOCH + timedelta(milliseconds=epoch_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
