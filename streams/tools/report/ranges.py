"""The report's time range: ``--since``/``--from``/``--to``, the buckets of its series, and its texts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from schemas.timestamps import parse_rfc3339_ms
from streams.core.durations import parse_duration_ms
from streams.errors import CitystreamError

KST: Final = timezone(timedelta(hours=9), "KST")
MINUTE_MS: Final = 60_000
DEFAULT_SINCE: Final = "1h"

# bucket sizes for the time series: the smallest that keeps a range under MAX_BUCKETS points
BUCKETS_S: Final = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_BUCKETS: Final = 360


class ReportError(CitystreamError):
    """The report cannot be made: bad range, InfluxDB or Kafka unreachable, a query refused."""


# ----------------------------------------------------------------------------- time range


@dataclass(frozen=True)
class TimeRange:
    """``[start_ms, end_ms)`` in epoch milliseconds."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ReportError(
                f"the range is empty: it ends ({utc_text(self.end_ms)}) at or before it starts "
                f"({utc_text(self.start_ms)})"
            )

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    @property
    def window_start_ms(self) -> int:
        """The start of the first one-minute window that overlaps the range."""
        return self.start_ms - self.start_ms % MINUTE_MS


def resolve_range(since: str | None, start: str | None, end: str | None, now_ms: int) -> TimeRange:
    """The report's range from ``--since`` or ``--from``, and ``--to`` (default: now).

    ``--since`` and ``--from`` exclude each other; with neither, the last hour. Timestamps are RFC
    3339 with a UTC offset (``2026-11-21T19:00:00+09:00``, ``...Z``).
    """
    if since is not None and start is not None:
        raise ReportError("give --since or --from, not both")
    try:
        end_ms = parse_rfc3339_ms(end) if end is not None else now_ms
    except ValueError as exc:
        raise ReportError(f"--to {end!r}: {exc}") from None
    if start is not None:
        try:
            start_ms = parse_rfc3339_ms(start)
        except ValueError as exc:
            raise ReportError(f"--from {start!r}: {exc}") from None
    else:
        try:
            duration_ms = parse_duration_ms(since or DEFAULT_SINCE)
        except ValueError as exc:
            raise ReportError(f"--since {exc}") from None
        if duration_ms <= 0:
            raise ReportError(f"--since {since!r}: the duration must be longer than zero")
        start_ms = end_ms - duration_ms
    return TimeRange(start_ms, end_ms)


def choose_bucket_s(duration_ms: int) -> int:
    """The bucket of the time series: the smallest of :data:`BUCKETS_S` giving at most
    :data:`MAX_BUCKETS` buckets over the range (one minute, the aggregates' window, at least)."""
    for bucket in BUCKETS_S:
        if duration_ms / (bucket * 1000) <= MAX_BUCKETS:
            return bucket
    return BUCKETS_S[-1]


# ----------------------------------------------------------------------------- texts


def utc_text(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def kst_text(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, KST).strftime("%Y-%m-%d %H:%M:%S KST")


def range_text(time_range: TimeRange) -> str:
    start = datetime.fromtimestamp(time_range.start_ms / 1000, KST)
    end = datetime.fromtimestamp(time_range.end_ms / 1000, KST)
    end_format = "%H:%M:%S" if start.date() == end.date() else "%Y-%m-%d %H:%M:%S"
    return f"{start:%Y-%m-%d %H:%M:%S} to {end.strftime(end_format)} KST"


def bucket_text(bucket_s: int) -> str:
    if bucket_s % 3600 == 0:
        hours = bucket_s // 3600
        return "hour" if hours == 1 else f"{hours} hours"
    minutes = bucket_s // 60
    return "minute" if minutes == 1 else f"{minutes} minutes"
