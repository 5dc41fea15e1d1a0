"""``citystream report``: charts and one HTML page of what InfluxDB and the dead-letter topic hold for a time range.

The report reads the window aggregates the worker writes (CONTRACT.md section 5) with InfluxQL over
``/query``, and counts the dead letters of ``city.deadletter.v1`` (section 4) per minute. It draws
four PNG charts with matplotlib and writes them, embedded, into one self-contained ``report.html``,
with ``summary.json`` holding the figures of the summary table:

* ``pm25.png``: PM2.5 per station (``environment_1m``: ``pm25_ugm3_mean``), one panel per district,
  over the shaded bands of Korea's CAI for PM2.5 (``streams.core.cai.BREAKPOINTS``);
* ``parking.png``: occupancy per lot (``parking_1m``: ``occupancy``, the last window of each bucket);
* ``adas_map.png``: ADAS warnings per H3 cell (``taxi_adas_1m``: ``fcw + ufcw + pcw + ldw + hmw +
  overspeed``), road hazards (``pothole + obstacle``) marked, cells with taxi readings but no warning
  in grey;
* ``throughput.png``: valid readings per minute of event time, per kind (``taxi_adas_1m`` and
  ``environment_1m``: ``sum(readings)``; raw ``parking``: ``count(occupied)``, since heartbeats are in
  no aggregate), and dead letters per minute (by their Kafka timestamp, the time they were
  dead-lettered) per reason.

The module has pure parts (time ranges, query building, turning query results into series, the CAI
band spans, the charts) and two thin readers (:class:`InfluxReader`, :func:`count_dead_letters`).
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
import h3
import orjson

from schemas.deadletter import DeadLetterReason
from schemas.timestamps import parse_rfc3339_ms
from streams.clients.kafka import DEADLETTER_TOPIC
from streams.core.cai import BREAKPOINTS, GRADES
from streams.core.registry import Registry, RegistryError, load_registry
from streams.kinds.taxi import COUNTERS
from streams.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

KST: Final = timezone(timedelta(hours=9), "KST")
MINUTE_MS: Final = 60_000
DEFAULT_SINCE: Final = "1h"
DEFAULT_OUT: Final = Path("var/report")

# taxi_adas_1m counters: driver warnings, and the road hazards the camera saw
WARNING_COUNTERS: Final = ("fcw", "ufcw", "pcw", "ldw", "hmw", "overspeed")
HAZARD_COUNTERS: Final = ("pothole", "obstacle")
assert set(WARNING_COUNTERS) | set(HAZARD_COUNTERS) == set(COUNTERS)

READING_KINDS: Final = ("taxi", "parking", "environment")

# bucket sizes for the time series: the smallest that keeps a range under MAX_BUCKETS points
BUCKETS_S: Final = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_BUCKETS: Final = 360

# AirKorea's colours of the four grades (blue, green, yellow, red), as light tints
CAI_BAND_COLOURS: Final = {
    "good": "#cfe3ff",
    "moderate": "#d5f2d0",
    "unhealthy": "#fff1b8",
    "very_unhealthy": "#ffc9c4",
}
# the same grades, saturated, for bars coloured by their grade
CAI_BAR_COLOURS: Final = {
    "good": "#3d85e0",
    "moderate": "#3ea34a",
    "unhealthy": "#e5a800",
    "very_unhealthy": "#d7301f",
}
GRADE_LABELS: Final = {
    "good": "good",
    "moderate": "moderate",
    "unhealthy": "unhealthy",
    "very_unhealthy": "very unhealthy",
}

DEAD_LETTER_REASONS: Final = tuple(reason.value for reason in DeadLetterReason)  # the contract's order
UNREADABLE_REASON: Final = "(unreadable)"


class ReportError(Exception):
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
                f"the range is empty: it ends ({_utc_text(self.end_ms)}) at or before it starts "
                f"({_utc_text(self.start_ms)})"
            )

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    @property
    def window_start_ms(self) -> int:
        """The start of the first one-minute window that overlaps the range."""
        return self.start_ms - self.start_ms % MINUTE_MS


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_MS = {"s": 1000, "m": MINUTE_MS, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"1h30m"``, ``"2d"`` -> milliseconds; ValueError otherwise."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION_PART.sub("", compact):
        raise ValueError(f"{text!r} is not a duration such as 30m, 1h, 1h30m or 2d")
    total = sum(float(number) * _UNIT_MS[unit] for number, unit in _DURATION_PART.findall(compact))
    if total <= 0:
        raise ValueError(f"{text!r}: the duration must be longer than zero")
    return int(total)


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
            start_ms = end_ms - parse_duration_ms(since or DEFAULT_SINCE)
        except ValueError as exc:
            raise ReportError(f"--since {exc}") from None
    return TimeRange(start_ms, end_ms)


def choose_bucket_s(duration_ms: int) -> int:
    """The bucket of the time series: the smallest of :data:`BUCKETS_S` giving at most
    :data:`MAX_BUCKETS` buckets over the range (one minute, the aggregates' window, at least)."""
    for bucket in BUCKETS_S:
        if duration_ms / (bucket * 1000) <= MAX_BUCKETS:
            return bucket
    return BUCKETS_S[-1]


# ----------------------------------------------------------------------------- queries


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _where(start_ms: int, end_ms: int) -> str:
    return f"time >= {start_ms}ms AND time < {end_ms}ms"


@dataclass(frozen=True)
class ReportQueries:
    """The InfluxQL statements of a report (one per chart input)."""

    pm25: str
    parking: str
    cells: str
    taxi_readings: str
    parking_readings: str
    environment_readings: str
    alerts: str

    def items(self) -> list[tuple[str, str]]:
        return list(asdict(self).items())


def build_queries(time_range: TimeRange, bucket_s: int) -> ReportQueries:
    """InfluxQL for a range: window aggregates whose window starts in it, raw points whose time is in it.

    Aggregates are selected from the start of the first minute window that overlaps the range, so a
    range starting at 10:00:30 still shows the 10:00 window. An alert's time is its window's end:
    alerts are counted whose window ends after the range's start and no later than the end of the
    range's last minute, so the alerts of the readings in the range's last minute count (the
    ``alerts`` points carry a sub-millisecond offset: the window's end is the time truncated to the
    millisecond).
    """
    aggregates = _where(time_range.window_start_ms, time_range.end_ms)
    raw = _where(time_range.start_ms, time_range.end_ms)
    by_time = f"GROUP BY time({bucket_s}s)"
    counters = ", ".join(f"sum({_ident(name)}) AS {_ident(name)}" for name in COUNTERS)
    return ReportQueries(
        pm25=(
            f'SELECT mean("pm25_ugm3_mean") AS "pm25" FROM "environment_1m" WHERE {aggregates} '
            f'{by_time}, "device_id", "district" fill(none)'
        ),
        parking=(
            'SELECT last("occupancy") AS "occupancy", last("occupied") AS "occupied", last("capacity") AS "capacity" '
            f'FROM "parking_1m" WHERE {aggregates} '
            f'{by_time}, "lot_id" fill(none)'
        ),
        cells=(
            f'SELECT sum("readings") AS "readings", {counters} FROM "taxi_adas_1m" WHERE {aggregates} GROUP BY "cell"'
        ),
        taxi_readings=f'SELECT sum("readings") AS "readings" FROM "taxi_adas_1m" WHERE {aggregates} {by_time} fill(0)',
        parking_readings=f'SELECT count("occupied") AS "readings" FROM "parking" WHERE {raw} {by_time} fill(0)',
        environment_readings=(
            f'SELECT sum("readings") AS "readings" FROM "environment_1m" WHERE {aggregates} {by_time} fill(0)'
        ),
        alerts=(
            f'SELECT count("value") AS "alerts" FROM "alerts" WHERE time >= {time_range.start_ms + 1}ms AND '
            f'time < {-(-time_range.end_ms // MINUTE_MS) * MINUTE_MS + 1}ms GROUP BY "kind", "status"'
        ),
    )


# ----------------------------------------------------------------------------- query results


@dataclass
class Series:
    """One line of a chart: bucket start times (epoch ms) and values."""

    times_ms: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.times_ms)

    @property
    def total(self) -> float:
        return math.fsum(self.values)


def _rows(series: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    columns = series["columns"]
    for values in series.get("values", []):
        yield dict(zip(columns, values, strict=True))


def series_by_tag(result: Sequence[Mapping[str, Any]], tag: str, column: str) -> dict[str, Series]:
    """Turn a ``GROUP BY time(...), <tag>`` result into one :class:`Series` per tag value.

    Null values (a bucket without the field) are left out. Series of the same tag value (grouped by
    further tags) are merged in time order.
    """
    lines: dict[str, Series] = {}
    for series in result:
        key = str(series.get("tags", {}).get(tag) or "")
        line = lines.setdefault(key, Series())
        for row in _rows(series):
            value = row.get(column)
            if value is None:
                continue
            line.times_ms.append(int(row["time"]))
            line.values.append(float(value))
    for key, line in list(lines.items()):
        if not line:
            del lines[key]
            continue
        order = sorted(range(len(line)), key=line.times_ms.__getitem__)
        line.times_ms[:] = [line.times_ms[i] for i in order]
        line.values[:] = [line.values[i] for i in order]
    return dict(sorted(lines.items()))


def tag_pairs(result: Sequence[Mapping[str, Any]], tag: str, other: str) -> dict[str, str]:
    """``{tag value: other tag's value}`` from a result grouped by both (station -> district)."""
    return {
        str(s.get("tags", {}).get(tag)): str(s.get("tags", {}).get(other) or "unknown")
        for s in result
        if s.get("tags", {}).get(tag)
    }


def single_series(result: Sequence[Mapping[str, Any]], column: str) -> Series:
    """The one series of an ungrouped ``GROUP BY time(...)`` result (empty if none)."""
    return series_by_tag(result, "", column).get("", Series())


def latest_lot_spots(result: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """``{lot_id: (occupied, capacity)}`` of each lot's last window in the parking result."""
    occupied = series_by_tag(result, "lot_id", "occupied")
    capacity = series_by_tag(result, "lot_id", "capacity")
    return {
        lot: (int(line.values[-1]), int(capacity[lot].values[-1])) for lot, line in occupied.items() if lot in capacity
    }


@dataclass(frozen=True)
class CellCount:
    """One H3 cell's taxi readings and ADAS counters over the range."""

    cell: str
    readings: int
    counts: Mapping[str, int]

    @property
    def warnings(self) -> int:
        return sum(self.counts.get(name, 0) for name in WARNING_COUNTERS)

    @property
    def hazards(self) -> int:
        return sum(self.counts.get(name, 0) for name in HAZARD_COUNTERS)


def cell_counts(result: Sequence[Mapping[str, Any]]) -> list[CellCount]:
    """Per cell, from a ``GROUP BY "cell"`` result of sums; most warnings first."""
    cells = []
    for series in result:
        cell = series.get("tags", {}).get("cell")
        if not cell:
            continue
        for row in _rows(series):
            counts = {name: int(row.get(name) or 0) for name in COUNTERS}
            cells.append(CellCount(str(cell), int(row.get("readings") or 0), counts))
    cells.sort(key=lambda c: (-c.warnings, -c.hazards, -c.readings, c.cell))
    return cells


def alert_counts(result: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``{"<kind> <status>": count}`` from the alerts query."""
    counts: dict[str, int] = {}
    for series in result:
        tags = series.get("tags", {})
        for row in _rows(series):
            counts[f"{tags.get('kind')} {tags.get('status')}"] = int(row.get("alerts") or 0)
    return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------- CAI bands


@dataclass(frozen=True)
class BandSpan:
    low: float
    high: float
    grade: str
    colour: str

    @property
    def label(self) -> str:
        upper = f"{self.high - 1:g}" if math.isfinite(self.high) else "+"
        return f"{GRADE_LABELS[self.grade]} ({self.low:g}{'-' if math.isfinite(self.high) else ''}{upper})"


def cai_band_spans(pollutant: str = "pm25_ugm3") -> list[BandSpan]:
    """The CAI grade bands of a pollutant as contiguous spans for shading a chart.

    The breakpoints have gaps (PM2.5: good 0-15, moderate 16-35) because concentrations are truncated
    before the lookup (15.9 is good), so a band spans from its lower breakpoint to the next band's;
    the last band is open-ended.
    """
    bands = BREAKPOINTS[pollutant]
    lows = [float(low) for low, _ in bands]
    highs = [*lows[1:], math.inf]
    return [
        BandSpan(low, high, grade, CAI_BAND_COLOURS[grade])
        for low, high, grade in zip(lows, highs, GRADES, strict=True)
    ]


def pm25_grade(value: float) -> str:
    """The CAI grade band a PM2.5 concentration falls in (by the spans of :func:`cai_band_spans`)."""
    for span in cai_band_spans():
        if span.low <= value < span.high:
            return span.grade
    return GRADES[0]


# ----------------------------------------------------------------------------- reading InfluxDB


class InfluxReader:
    """InfluxQL over ``/query``: InfluxDB 1.x, and 2.x/3.x through their v1 compatibility API."""

    def __init__(self, url: str, database: str, token: str | None = None, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.token = token
        self.timeout_s = timeout_s

    def query(self, statement: str) -> list[dict[str, Any]]:
        """The series of one statement's result; raise ReportError with the server's reason."""
        params = urllib.parse.urlencode({"db": self.database, "q": statement, "epoch": "ms"})
        request = urllib.request.Request(f"{self.url}/query?{params}")
        if self.token:
            request.add_header("Authorization", f"Token {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                document = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()[:500]
            hint = " (check CITYSTREAM_INFLUX_TOKEN)" if exc.code in (401, 403) else ""
            raise ReportError(f"InfluxDB at {self.url} answered {exc.code}{hint}: {detail}") from None
        except (OSError, ValueError) as exc:
            raise ReportError(f"InfluxDB at {self.url} is not reachable ({exc}); check CITYSTREAM_INFLUX_URL") from None
        if "error" in document:
            raise ReportError(f"InfluxDB refused the query: {document['error']}")
        result = document["results"][0]
        if "error" in result:
            error = str(result["error"])
            if error.startswith("database not found"):
                raise ReportError(f"InfluxDB at {self.url}: {error}; check CITYSTREAM_INFLUX_DB")
            raise ReportError(f"InfluxDB refused the query: {error}\n  {statement}")
        if result.get("partial"):
            raise ReportError("InfluxDB truncated a result (max-row-limit); choose a shorter range\n  " + statement)
        return list(result.get("series", []))


# ----------------------------------------------------------------------------- dead letters


@dataclass
class DeadLetterCounts:
    """Dead letters per bucket start and reason, by their Kafka timestamp."""

    bucket_ms: int
    counts: dict[int, Counter[str]] = field(default_factory=dict)

    def add(self, timestamp_ms: int, reason: str) -> None:
        start = timestamp_ms - timestamp_ms % self.bucket_ms
        self.counts.setdefault(start, Counter())[reason] += 1

    @property
    def by_reason(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counter in self.counts.values():
            total.update(counter)
        return total

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def series(self) -> dict[str, Series]:
        """One series per reason, over the buckets that had any dead letter."""
        lines: dict[str, Series] = {}
        for reason in self.by_reason:
            line = lines[reason] = Series()
            for start in sorted(self.counts):
                line.times_ms.append(start)
                line.values.append(float(self.counts[start].get(reason, 0)))
        return dict(sorted(lines.items()))


def dead_letter_reason(value: bytes | None) -> str:
    """The ``reason`` of a dead letter's JSON value, or :data:`UNREADABLE_REASON`."""
    try:
        document = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return UNREADABLE_REASON
    reason = document.get("reason") if isinstance(document, dict) else None
    return reason if isinstance(reason, str) and reason else UNREADABLE_REASON


async def count_dead_letters(
    bootstrap_servers: list[str] | str,
    time_range: TimeRange,
    bucket_s: int,
    *,
    topic: str = DEADLETTER_TOPIC,
    quiet_s: float = 2.0,
    timeout_s: float = 30.0,
) -> DeadLetterCounts:
    """Count the dead letters whose Kafka timestamp lies in the range, per bucket and reason.

    Each partition is read from ``offsets_for_times(range start)`` (a broker that answers an earlier
    offset, as the local Tansu does, only costs reading more) until a record at or after the range's
    end, or until no record comes for ``quiet_s`` (Tansu under-reports end offsets, so they are not
    used). Records outside the range are skipped.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    counts = DeadLetterCounts(bucket_s * 1000)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
    except (TimeoutError, KafkaError, OSError) as exc:
        await consumer.stop()
        raise ReportError(
            f"Kafka at {bootstrap_servers} is not reachable ({exc or type(exc).__name__}); check "
            "CITYSTREAM_KAFKA_BOOTSTRAP, or leave the dead letters out with --no-dead-letters"
        ) from None
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        if not partitions:
            await consumer.topics()  # refresh the metadata once: a new client may not have it yet
            partitions = sorted(consumer.partitions_for_topic(topic) or [])
        if not partitions:
            return counts  # no topic, no dead letters
        tps = [TopicPartition(topic, p) for p in partitions]
        found = await consumer.offsets_for_times(dict.fromkeys(tps, time_range.start_ms))
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            answer = found.get(tp)
            # no record at or after the start: begin at the (possibly under-reported) end and listen
            consumer.seek(tp, answer.offset if answer is not None else max(ends[tp] - 1, 0))
        open_partitions = set(tps)
        while open_partitions:
            batches = await consumer.getmany(*open_partitions, timeout_ms=int(quiet_s * 1000))
            if not batches:
                break
            for tp, records in batches.items():
                for record in records:
                    if record.timestamp >= time_range.end_ms:
                        open_partitions.discard(tp)
                        consumer.pause(tp)
                        break
                    if record.timestamp >= time_range.start_ms:
                        counts.add(record.timestamp, dead_letter_reason(record.value))
    finally:
        await consumer.stop()
    return counts


# ----------------------------------------------------------------------------- the data of a report


@dataclass
class ReportData:
    time_range: TimeRange
    bucket_s: int
    pm25: dict[str, Series]
    station_districts: dict[str, str]
    occupancy: dict[str, Series]
    lot_spots: dict[str, tuple[int, int]]
    cells: list[CellCount]
    readings: dict[str, Series]
    dead_letters: DeadLetterCounts | None
    alerts: dict[str, int]
    registry: Registry = field(default_factory=Registry)
    source: str = ""

    def summary(self) -> dict[str, Any]:
        """The figures of the summary table (and ``summary.json``)."""
        warnings = {name: sum(c.counts.get(name, 0) for c in self.cells) for name in COUNTERS}
        pm_values = [v for s in self.pm25.values() for v in s.values]
        return {
            "range": {
                "start_utc": _utc_text(self.time_range.start_ms),
                "end_utc": _utc_text(self.time_range.end_ms),
                "start_ms": self.time_range.start_ms,
                "end_ms": self.time_range.end_ms,
                "bucket_s": self.bucket_s,
            },
            "readings": {kind: int(self.readings[kind].total) for kind in READING_KINDS},
            "dead_letters": (
                None
                if self.dead_letters is None
                else {"total": self.dead_letters.total, "by_reason": dict(sorted(self.dead_letters.by_reason.items()))}
            ),
            "stations": len(self.pm25),
            "pm25_max_ugm3": round(max(pm_values), 1) if pm_values else None,
            "lots": len(self.occupancy),
            "cells_with_readings": sum(1 for c in self.cells if c.readings),
            "cells_with_warnings": sum(1 for c in self.cells if c.warnings),
            "adas_counts": warnings,
            "alerts": self.alerts,
        }


def collect(
    reader: InfluxReader,
    time_range: TimeRange,
    *,
    bootstrap_servers: list[str] | str | None,
    registry: Registry | None = None,
) -> ReportData:
    """Query InfluxDB (and Kafka, unless ``bootstrap_servers`` is None) for a report's data."""
    bucket_s = choose_bucket_s(time_range.duration_ms)
    queries = build_queries(time_range, bucket_s)
    results = {name: reader.query(statement) for name, statement in queries.items()}
    dead = (
        None if bootstrap_servers is None else asyncio.run(count_dead_letters(bootstrap_servers, time_range, bucket_s))
    )
    return ReportData(
        time_range=time_range,
        bucket_s=bucket_s,
        pm25=series_by_tag(results["pm25"], "device_id", "pm25"),
        station_districts=tag_pairs(results["pm25"], "device_id", "district"),
        occupancy=series_by_tag(results["parking"], "lot_id", "occupancy"),
        lot_spots=latest_lot_spots(results["parking"]),
        cells=cell_counts(results["cells"]),
        readings={
            "taxi": single_series(results["taxi_readings"], "readings"),
            "parking": single_series(results["parking_readings"], "readings"),
            "environment": single_series(results["environment_readings"], "readings"),
        },
        dead_letters=dead,
        alerts=alert_counts(results["alerts"]),
        registry=registry or Registry(),
        source=f"{reader.url}, database {reader.database}",
    )


# ----------------------------------------------------------------------------- charts


def _utc_text(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _kst_text(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, KST).strftime("%Y-%m-%d %H:%M:%S KST")


def _range_text(time_range: TimeRange) -> str:
    start = datetime.fromtimestamp(time_range.start_ms / 1000, KST)
    end = datetime.fromtimestamp(time_range.end_ms / 1000, KST)
    end_format = "%H:%M:%S" if start.date() == end.date() else "%Y-%m-%d %H:%M:%S"
    return f"{start:%Y-%m-%d %H:%M:%S} to {end.strftime(end_format)} KST"


def _bucket_text(bucket_s: int) -> str:
    if bucket_s % 3600 == 0:
        hours = bucket_s // 3600
        return "hour" if hours == 1 else f"{hours} hours"
    minutes = bucket_s // 60
    return "minute" if minutes == 1 else f"{minutes} minutes"


def _dates(times_ms: Sequence[int]) -> list[float]:
    """Matplotlib date numbers (days since 1970, UTC) of epoch milliseconds; the axes show them in KST."""
    return [t / 86_400_000 for t in times_ms]


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _time_axis(ax: Axes, time_range: TimeRange, bucket_s: int) -> None:
    """KST dates on x, from the start of the range's first bucket to the end of its last; the parts of
    those buckets outside the range are hatched."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(tz=KST, minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=KST))
    bucket_ms = bucket_s * 1000
    first = time_range.start_ms - time_range.start_ms % bucket_ms
    last = -(-time_range.end_ms // bucket_ms) * bucket_ms
    left, start, end, right = _dates([first, time_range.start_ms, time_range.end_ms, last])
    ax.set_xlim(left, right)
    for low, high in ((left, start), (end, right)):
        if high > low:
            ax.axvspan(low, high, facecolor="#f4f4f4", edgecolor="#b8b8b8", hatch="///", linewidth=0, zorder=0.5)
    ax.grid(True, axis="both", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


def _no_data(ax: Axes, message: str = "no data in range") -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=13, color="#777777")


def _marker(series: Series) -> str | None:
    return "o" if len(series) <= 30 else None


def _station_palette(count: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(count)]


def with_gaps(line: Series, bucket_ms: int) -> tuple[list[int], list[float]]:
    """The series with a NaN between buckets that are not adjacent, so a plotted line breaks where
    data is missing instead of bridging the gap."""
    times: list[int] = []
    values: list[float] = []
    for t, v in zip(line.times_ms, line.values, strict=True):
        if times and t - times[-1] > bucket_ms:
            times.append(times[-1] + bucket_ms)
            values.append(math.nan)
        times.append(t)
        values.append(v)
    return times, values


def _station_means(data: ReportData) -> list[tuple[str, float]]:
    """Each station's mean PM2.5 over the range (mean of its bucket means), highest first."""
    means = [(station, math.fsum(line.values) / len(line)) for station, line in data.pm25.items()]
    return sorted(means, key=lambda item: (-item[1], item[0]))


def pm25_chart(data: ReportData) -> Figure:
    """PM2.5 per station: one panel per district over the CAI bands, and each station's mean over the range."""
    from matplotlib.patches import Patch

    spans = cai_band_spans()
    by_district: dict[str, list[str]] = defaultdict(list)
    for station in data.pm25:
        by_district[data.station_districts.get(station, "unknown")].append(station)
    districts = sorted(by_district)
    columns = 2 if len(districts) > 1 else 1
    rows = max(1, math.ceil(len(districts) / columns))
    figure = _new_figure(17, max(5.0, 1.4 + 2.4 * rows, 1.8 + 0.3 * len(data.pm25)))
    figure.suptitle(
        f"PM2.5 per station, {_bucket_text(data.bucket_s)} means of environment_1m, {_range_text(data.time_range)}",
        fontsize=13,
        fontweight="bold",
    )
    figure.legend(
        handles=[Patch(color=s.colour, label=s.label) for s in spans],
        loc="outside lower center",
        ncols=len(spans),
        title="Korean CAI bands for PM2.5, µg/m³ (official grades apply them to 24-hour means)",
        fontsize=9,
        title_fontsize=9,
        frameon=False,
    )
    if not districts:
        ax = figure.subplots()
        _time_axis(ax, data.time_range, data.bucket_s)
        ax.set_ylabel("PM2.5 (µg/m³)")
        ax.set_xlabel("time (KST, UTC+9)")
        ax.set_ylim(0, 40)
        _shade_bands(ax, spans, 40, horizontal=True)
        _no_data(ax)
        return figure
    means = _station_means(data)
    values = [v for s in data.pm25.values() for v in s.values]
    top = max(40.0, max(values) * 1.12)
    parts: Any = figure.subfigures(1, 2, width_ratios=[3.2, 1])
    series_part, ranking_part = parts[0], parts[1]
    axes = series_part.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    half_bucket = data.bucket_s * 500
    for index, ax in enumerate(axes.flat):
        if index >= len(districts):
            ax.set_visible(False)
            continue
        district = districts[index]
        _shade_bands(ax, spans, top, horizontal=True)
        stations = by_district[district]
        for station, colour in zip(stations, _station_palette(len(stations)), strict=True):
            line = data.pm25[station]
            mean = math.fsum(line.values) / len(line)
            times, values = with_gaps(line, data.bucket_s * 1000)
            ax.plot(
                _dates([t + half_bucket for t in times]), values, color=colour, linewidth=1.5,
                marker=_marker(line), markersize=5, label=f"{station} (mean {mean:.0f})",
            )  # fmt: skip
        ax.set_ylim(0, top)
        ax.set_title(district, loc="left", fontsize=11, fontweight="bold")
        _time_axis(ax, data.time_range, data.bucket_s)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, borderaxespad=0.3)
        if index % columns == 0:
            ax.set_ylabel("PM2.5 (µg/m³)")
    series_part.supxlabel(
        "time (KST, UTC+9); a point is the mean of its bucket, drawn at the bucket's middle", fontsize=9
    )
    ax = ranking_part.subplots()
    names = [station for station, _ in means][::-1]
    levels = [mean for _, mean in means][::-1]
    _shade_bands(ax, spans, max(40.0, max(levels) * 1.15), horizontal=False)
    colours = [CAI_BAR_COLOURS[pm25_grade(level)] for level in levels]
    ax.barh(names, levels, color=colours, edgecolor="#444444", linewidth=0.5, height=0.7)
    for y, level in enumerate(levels):
        ax.text(level, y, f" {level:.0f}", va="center", ha="left", fontsize=8)
    ax.set_xlim(0, max(40.0, max(levels) * 1.15))
    ax.set_xlabel("PM2.5 (µg/m³)")
    ax.set_title("mean over the range, per station", loc="left", fontsize=11, fontweight="bold")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return figure


def _shade_bands(ax: Axes, spans: Sequence[BandSpan], top: float, *, horizontal: bool) -> None:
    """Shade the CAI bands below ``top``: horizontal stripes (value on y) or vertical (value on x)."""
    for span in spans:
        if span.low >= top:
            continue
        if horizontal:
            ax.axhspan(span.low, min(span.high, top), color=span.colour, zorder=0, linewidth=0)
        else:
            ax.axvspan(span.low, min(span.high, top), color=span.colour, zorder=0, linewidth=0)


def parking_chart(data: ReportData) -> Figure:
    """Occupancy (%) per lot over time, as steps (a lot's occupancy holds until its next window), and
    each lot's latest occupancy as a bar in the colour of its line."""
    import matplotlib

    figure = _new_figure(16, 6)
    figure.suptitle(
        f"Parking occupancy per lot (parking_1m, at the end of each {_bucket_text(data.bucket_s)}), "
        f"{_range_text(data.time_range)}",
        fontsize=13,
        fontweight="bold",
    )
    ax, latest = figure.subplots(1, 2, width_ratios=[3, 1])
    _time_axis(ax, data.time_range, data.bucket_s)
    ax.set_ylabel("occupied spots (% of capacity)")
    ax.set_xlabel("time (KST, UTC+9); a step is a lot's occupancy at the end of a window, held until its next one")
    ax.set_ylim(0, 105)
    latest.set_xlim(0, 105)
    latest.set_xlabel("occupied spots (% of capacity)")
    latest.set_title("latest, per lot (line colours)", loc="left", fontsize=11, fontweight="bold")
    latest.grid(True, axis="x", color="#dddddd", linewidth=0.6)
    latest.set_axisbelow(True)
    for target in (ax, latest):
        line_at = target.axhline if target is ax else target.axvline
        line_at(95, color="#c0392b", linewidth=1, linestyle="--", zorder=1)
    ax.text(
        0.005, 95.5, "parking.lot_full alert at 95 %", transform=ax.get_yaxis_transform(), va="bottom", ha="left",
        fontsize=8, color="#c0392b",
    )  # fmt: skip
    if not data.occupancy:
        _no_data(ax)
        _no_data(latest)
        latest.set_yticks([])
        return figure
    cmap = matplotlib.colormaps["tab20"]
    colours = {lot: cmap(index % 20) for index, lot in enumerate(data.occupancy)}
    bucket_ms = data.bucket_s * 1000
    axis_end = -(-data.time_range.end_ms // bucket_ms) * bucket_ms
    for lot, line in data.occupancy.items():
        # a window's occupancy is the state at its end, and holds until the lot's next window
        ends = [t + bucket_ms for t in line.times_ms]
        percents = [v * 100 for v in line.values]
        ax.step(
            _dates([*ends, max(axis_end, ends[-1])]), [*percents, percents[-1]], where="post",
            color=colours[lot], linewidth=1.8,
        )  # fmt: skip
        if len(line) <= 30:
            ax.plot(_dates(ends), percents, "o", color=colours[lot], markersize=4, clip_on=False)
    ranked = sorted(data.occupancy, key=lambda lot: (data.occupancy[lot].values[-1], lot))
    levels = [data.occupancy[lot].values[-1] * 100 for lot in ranked]
    latest.barh(ranked, levels, color=[colours[lot] for lot in ranked], height=0.7)
    for y, (lot, level) in enumerate(zip(ranked, levels, strict=True)):
        occupied, capacity = data.lot_spots.get(lot, (0, 0))
        spots = f" ({occupied}/{capacity})" if capacity else ""
        latest.text(level, y, f" {level:.0f} %{spots}", va="center", ha="left", fontsize=8)
    latest.tick_params(axis="y", labelsize=8)
    return figure


def _district_centres(registry: Registry) -> dict[str, tuple[float, float]]:
    """Mean position of the registry's lots and stations per district."""
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    places = [(p.district, p.lat, p.lon) for p in registry.parking_lots.values()]
    places += [(p.district, p.lat, p.lon) for p in registry.env_stations.values()]
    for district, lat, lon in places:
        if district and lat is not None and lon is not None:
            points[district].append((lat, lon))
    return {
        district: (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts))
        for district, pts in points.items()
    }


def nearest_district(lat: float, lon: float, centres: Mapping[str, tuple[float, float]]) -> str | None:
    """The district whose registry centre is nearest (within 10 km), else None."""
    best: tuple[float, str] | None = None
    for district, (clat, clon) in centres.items():
        dy = (lat - clat) * 110.9
        dx = (lon - clon) * 111.3 * math.cos(math.radians(lat))
        distance = math.hypot(dx, dy)
        if distance <= 10 and (best is None or distance < best[0]):
            best = (distance, district)
    return best[1] if best else None


def warning_norm(most: int) -> Normalize:
    """The colour scale of warning counts: one colour per count up to 10, a log scale beyond."""
    from matplotlib.colors import BoundaryNorm, LogNorm

    if most <= 10:
        return BoundaryNorm([b - 0.5 for b in range(1, most + 2)], ncolors=256)
    return LogNorm(vmin=1, vmax=most)


def _cell_district(cell: str, centres: Mapping[str, tuple[float, float]]) -> str | None:
    lat, lon = h3.cell_to_latlng(cell)
    return nearest_district(lat, lon, centres)


def _cell_polygon(cell: str) -> list[tuple[float, float]]:
    return [(lon, lat) for lat, lon in h3.cell_to_boundary(cell)]


def adas_map(data: ReportData, labelled: int = 8) -> Figure:
    """ADAS warnings per H3 cell on lon/lat axes (aspect corrected for the latitude)."""
    import matplotlib
    import numpy as np
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patheffects import withStroke

    figure = _new_figure(12, 10)
    ax = figure.subplots()
    total = {name: sum(c.counts.get(name, 0) for c in data.cells) for name in COUNTERS}
    warnings = sum(total[name] for name in WARNING_COUNTERS)
    figure.suptitle(
        f"ADAS warnings per H3 cell (resolution 9, taxi_adas_1m), {_range_text(data.time_range)}",
        fontsize=13,
        fontweight="bold",
    )
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    if not data.cells:
        ax.set_xlim(128.35, 128.77)
        ax.set_ylim(35.60, 36.02)
        ax.set_aspect(1 / math.cos(math.radians(35.81)))
        _no_data(ax)
        return figure
    ax.set_title(
        f"{warnings:,} warnings: " + ", ".join(f"{name.upper()} {total[name]:,}" for name in WARNING_COUNTERS)
        + f"   ·   road hazards: pothole {total['pothole']:,}, obstacle {total['obstacle']:,}",
        fontsize=9,
    )  # fmt: skip
    quiet = [c for c in data.cells if not c.warnings]
    warned = sorted((c for c in data.cells if c.warnings), key=lambda c: c.warnings)
    ax.add_collection(
        PolyCollection([_cell_polygon(c.cell) for c in quiet], facecolors="#d9d9d9", edgecolors="none", zorder=1)
    )
    centres = _district_centres(data.registry)
    if warned:
        most = warned[-1].warnings
        norm = warning_norm(most)
        collection = PolyCollection(
            [_cell_polygon(c.cell) for c in warned],
            array=[c.warnings for c in warned],
            cmap=ListedColormap(matplotlib.colormaps["YlOrRd"](np.linspace(0.3, 1.0, 256))),
            norm=norm,
            edgecolors="#7f2704",
            linewidths=0.3,
            zorder=2,
        )
        ax.add_collection(collection)
        bar = figure.colorbar(collection, ax=ax, shrink=0.7, pad=0.01)
        if isinstance(norm, BoundaryNorm):
            bar.set_ticks(
                [b + 0.5 for b in norm.boundaries[:-1]], labels=[str(int(b + 0.5)) for b in norm.boundaries[:-1]]
            )
        bar.set_label("ADAS warnings in the range (FCW, UFCW, PCW, LDW, HMW, overspeed)")
    hazard_cells = [c for c in data.cells if c.hazards]
    if hazard_cells:
        centres_ll = [h3.cell_to_latlng(c.cell) for c in hazard_cells]
        ax.scatter(
            [lon for _, lon in centres_ll], [lat for lat, _ in centres_ll], marker="^", s=18, facecolors="none",
            edgecolors="#1f3b73", linewidths=0.9, zorder=3,
        )  # fmt: skip
    lats = [lat for c in data.cells for lat, _ in h3.cell_to_boundary(c.cell)]
    lons = [lon for c in data.cells for _, lon in h3.cell_to_boundary(c.cell)]
    pad_lat = max(0.01, (max(lats) - min(lats)) * 0.04)
    pad_lon = max(0.01, (max(lons) - min(lons)) * 0.04)
    ax.set_xlim(min(lons) - pad_lon, max(lons) + pad_lon)
    ax.set_ylim(min(lats) - pad_lat, max(lats) + pad_lat)
    mid = (min(lats) + max(lats)) / 2
    ax.set_aspect(1 / math.cos(math.radians(mid)))
    ax.grid(True, color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)
    for district, (lat, lon) in sorted(centres.items()):
        ax.text(
            lon, lat, district, fontsize=13, color="#3a3a3a", style="italic", ha="center", va="center", zorder=3.5,
            path_effects=[withStroke(linewidth=3, foreground="white")], alpha=0.8,
        )  # fmt: skip
    _label_top_cells(ax, [c for c in data.cells if c.warnings][:labelled], centres)  # the order of the HTML table
    legend = [
        Line2D([], [], marker="h", linestyle="none", markersize=10, markerfacecolor="#d9d9d9", markeredgecolor="none",
               label=f"taxi readings, no warning ({len(quiet):,} cells)"),
        Line2D([], [], marker="^", linestyle="none", markersize=7, markerfacecolor="none", markeredgecolor="#1f3b73",
               label=f"pothole or obstacle reported ({len(hazard_cells):,} cells)"),
    ]  # fmt: skip
    ax.legend(handles=legend, loc="lower right", fontsize=9, framealpha=0.9)
    return figure


# where a cell's number may go, in points from the cell: close first, then further out
_LABEL_OFFSETS: Final = tuple(
    (round(radius * math.cos(math.radians(angle))), round(radius * math.sin(math.radians(angle))))
    for radius in (14, 26, 38)
    for angle in (45, 135, -45, -135, 0, 180, 90, -90)
)


def label_offsets(points: Sequence[tuple[float, float]], ax: Axes, clearance: float = 15.0) -> list[tuple[int, int]]:
    """An offset (points) per data point such that no two labels lie closer than ``clearance`` points.

    Greedy, in the given order (most important first); a label that fits nowhere takes the last
    candidate. Positions come from the axes' current data-to-display transform.
    """
    scale = 72 / ax.figure.dpi  # display pixels to points
    placed: list[tuple[float, float]] = []
    chosen = []
    for x, y in points:
        px, py = ax.transData.transform((x, y))
        base = (px * scale, py * scale)
        for dx, dy in _LABEL_OFFSETS:
            spot = (base[0] + dx, base[1] + dy)
            if all(math.hypot(spot[0] - ox, spot[1] - oy) >= clearance for ox, oy in placed):
                break
        placed.append(spot)
        chosen.append((dx, dy))
    return chosen


def _label_top_cells(ax: Axes, cells: Sequence[CellCount], centres: Mapping[str, tuple[float, float]]) -> None:
    """Number the top cells on the map and list them in a box in the upper left corner."""
    if not cells:
        return
    lines = ["most warnings"]
    positions = [h3.cell_to_latlng(cell.cell) for cell in cells]
    offsets = label_offsets([(lon, lat) for lat, lon in positions], ax)
    for rank, (cell, (lat, lon), offset) in enumerate(zip(cells, positions, offsets, strict=True), start=1):
        ax.annotate(
            str(rank), (lon, lat), xytext=offset, textcoords="offset points", fontsize=9, fontweight="bold",
            ha="center", va="center",
            bbox={"boxstyle": "circle,pad=0.2", "facecolor": "white", "edgecolor": "#7f2704", "linewidth": 0.8},
            arrowprops={"arrowstyle": "-", "color": "#7f2704", "linewidth": 0.8}, zorder=4,
        )  # fmt: skip
        district = nearest_district(lat, lon, centres)
        where = f" {district}" if district else ""
        lines.append(f"{rank}. {cell.warnings:>4}  {cell.cell}{where}")
    ax.text(
        0.01, 0.99, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", fontsize=8, family="monospace",
        bbox={"facecolor": "white", "edgecolor": "#999999", "alpha": 0.9}, zorder=5,
    )  # fmt: skip


def throughput_chart(data: ReportData) -> Figure:
    """Valid readings per bucket per kind, and dead letters per bucket by reason (stacked)."""
    import matplotlib

    figure = _new_figure(14, 9.5)
    axes = figure.subplots(4, 1, sharex=True)
    unit = _bucket_text(data.bucket_s)
    figure.suptitle(
        f"Readings and dead letters per {unit}, {_range_text(data.time_range)}", fontsize=13, fontweight="bold"
    )
    width = data.bucket_s * 0.9 / 86_400
    colours = {"taxi": "#1f77b4", "parking": "#2ca02c", "environment": "#9467bd"}
    sources = {
        "taxi": "taxi_adas_1m readings",
        "parking": "raw parking points",
        "environment": "environment_1m readings",
    }
    for ax, kind in zip(axes[:3], READING_KINDS, strict=True):
        line = data.readings[kind]
        _time_axis(ax, data.time_range, data.bucket_s)
        ax.set_title(
            f"{kind} readings per {unit} of event time ({sources[kind]}; total {int(line.total):,})",
            loc="left", fontsize=10,
        )  # fmt: skip
        ax.set_ylabel("readings")
        if not line or not line.total:
            _no_data(ax)
            continue
        ax.bar(_dates(line.times_ms), line.values, width=width, align="edge", color=colours[kind])
        ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    ax = axes[3]
    _time_axis(ax, data.time_range, data.bucket_s)
    ax.set_ylabel("dead letters")
    ax.set_xlabel("time (KST, UTC+9)")
    dead = data.dead_letters
    if dead is None:
        ax.set_title("dead letters: not read (--no-dead-letters)", loc="left", fontsize=10)
        _no_data(ax, "dead letters not read")
        return figure
    ax.set_title(
        f"dead letters per {unit} by reason, by the time they were dead-lettered ({DEADLETTER_TOPIC}; "
        f"total {dead.total:,})",
        loc="left",
        fontsize=10,
    )
    reasons = dead.series()
    if not reasons:
        _no_data(ax)
        return figure
    cmap = matplotlib.colormaps["tab10"]
    order = [r for r in (*DEAD_LETTER_REASONS, UNREADABLE_REASON) if r in reasons] + sorted(
        r for r in reasons if r not in DEAD_LETTER_REASONS and r != UNREADABLE_REASON
    )
    bottom = [0.0] * len(next(iter(reasons.values())))
    for index, reason in enumerate(order):
        line = reasons[reason]
        ax.bar(
            _dates(line.times_ms), line.values, width=width, align="edge", bottom=bottom, color=cmap(index % 10),
            label=f"{reason} ({int(line.total):,})",
        )  # fmt: skip
        bottom = [b + v for b, v in zip(bottom, line.values, strict=True)]
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, borderaxespad=0.3)
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return figure


# ----------------------------------------------------------------------------- files


CHARTS: Final = (
    ("pm25.png", "PM2.5 per station", pm25_chart),
    ("parking.png", "Parking occupancy per lot", parking_chart),
    ("adas_map.png", "ADAS warnings by H3 cell", adas_map),
    ("throughput.png", "Readings and dead letters", throughput_chart),
)


@dataclass(frozen=True)
class ReportFiles:
    folder: Path
    html: Path
    charts: tuple[Path, ...]
    summary: dict[str, Any]


def render(data: ReportData, folder: Path) -> ReportFiles:
    """Write the PNGs, ``summary.json`` and ``report.html`` (PNGs embedded) into ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    folder.mkdir(parents=True, exist_ok=True)
    charts = []
    for name, _title, draw in CHARTS:
        figure = draw(data)
        path = folder / name
        figure.savefig(path, format="png", facecolor="white")
        charts.append(path)
    summary = data.summary()
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    page = folder / "report.html"
    page.write_text(report_html(data, summary, folder), encoding="utf-8")
    return ReportFiles(folder, page, tuple(charts), summary)


def _table(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def report_html(data: ReportData, summary: Mapping[str, Any], folder: Path) -> str:
    """One self-contained page: the summary table and every chart as a data URI."""
    rows: list[tuple[str, str]] = [
        ("range (KST)", _range_text(data.time_range)),
        ("range (UTC)", f"{summary['range']['start_utc']} to {summary['range']['end_utc']}"),
        ("time buckets", _bucket_text(data.bucket_s)),
        ("source", data.source),
    ]
    for kind in READING_KINDS:
        rows.append((f"{kind} readings", f"{summary['readings'][kind]:,}"))
    dead = summary["dead_letters"]
    if dead is None:
        rows.append(("dead letters", "not read"))
    else:
        detail = ", ".join(f"{reason} {count:,}" for reason, count in dead["by_reason"].items())
        rows.append(("dead letters", f"{dead['total']:,}" + (f" ({detail})" if detail else "")))
    pm_max = summary["pm25_max_ugm3"]
    highest = f"; highest PM2.5 mean {pm_max} µg/m³" if pm_max is not None else ""
    rows.append(("stations", f"{summary['stations']:,}{highest}"))
    rows.append(("parking lots", f"{summary['lots']:,}"))
    rows.append(
        ("H3 cells", f"{summary['cells_with_readings']:,} with taxi readings, {summary['cells_with_warnings']:,} "
                     "with warnings")
    )  # fmt: skip
    rows.append(("ADAS counts", ", ".join(f"{k} {v:,}" for k, v in summary["adas_counts"].items())))
    alerts = summary["alerts"]
    rows.append(("alerts", ", ".join(f"{k} {v:,}" for k, v in alerts.items()) if alerts else "none"))
    top = [c for c in data.cells if c.warnings][:10]
    centres = _district_centres(data.registry)
    top_rows = "".join(
        f"<tr><td>{rank}</td><td><code>{c.cell}</code></td>"
        f"<td>{html.escape(_cell_district(c.cell, centres) or '')}</td>"
        f"<td>{c.warnings:,}</td><td>{c.readings:,}</td>"
        f"<td>{', '.join(f'{n} {c.counts[n]}' for n in COUNTERS if c.counts.get(n))}</td></tr>"
        for rank, c in enumerate(top, start=1)
    )
    sections = []
    for name, title, _draw in CHARTS:
        encoded = base64.b64encode((folder / name).read_bytes()).decode("ascii")
        sections.append(
            f'<section><h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{encoded}"></section>'
        )
    generated = _kst_text(int(time.time() * 1000))
    cells_table = (
        "<table><tr><th>#</th><th>H3 cell</th><th>district</th><th>warnings</th><th>readings</th><th>counts</th></tr>"
        f"{top_rows}</table>"
        if top_rows
        else "<p>No ADAS warnings in the range.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>citystream report, {html.escape(_range_text(data.time_range))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1560px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ text-align: left; padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; vertical-align: top; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
section {{ margin-bottom: 2em; }}
</style>
</head>
<body>
<h1>citystream report</h1>
<p>{html.escape(_range_text(data.time_range))}. Generated {html.escape(generated)}. Times on the charts are
Korea Standard Time (KST, UTC+9).</p>
<h2>Summary</h2>
{_table(rows)}
<h2>Cells with the most ADAS warnings</h2>
{cells_table}
{"".join(sections)}
</body>
</html>
"""


def write_report(
    settings: Settings,
    time_range: TimeRange,
    folder: Path,
    *,
    dead_letters: bool = True,
) -> ReportFiles:
    """Read the data of ``time_range`` with ``settings`` and write the report into ``folder``."""
    token = settings.influx_token.get_secret_value() if settings.influx_token else None
    reader = InfluxReader(settings.influx_url, settings.influx_db, token)
    try:
        registry = load_registry(settings.registry)
    except RegistryError as exc:
        raise ReportError(str(exc)) from None
    data = collect(
        reader,
        time_range,
        bootstrap_servers=settings.bootstrap_servers if dead_letters else None,
        registry=registry,
    )
    return render(data, folder)


@click.command("report")
@click.option(
    "--since",
    metavar="DURATION",
    help=f"The range ends at --to (default now) and lasts this long: 30m, 1h, 1h30m, 2d. [default: {DEFAULT_SINCE}]",
)
@click.option(
    "--from", "start", metavar="TIME", help="Start of the range, RFC 3339 with offset: 2026-11-21T18:00:00+09:00."
)
@click.option("--to", "end", metavar="TIME", help="End of the range (exclusive), RFC 3339 with offset. [default: now]")
@click.option(
    "--out",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Folder for the PNGs, summary.json and report.html.",
)
@click.option("--no-dead-letters", is_flag=True, help="Do not read city.deadletter.v1 (no Kafka needed).")
def report_command(since: str | None, start: str | None, end: str | None, folder: Path, no_dead_letters: bool) -> None:
    """Charts and one HTML page of a time range: air, parking, ADAS warnings, throughput.

    Reads the window aggregates from InfluxDB with InfluxQL over /query (CITYSTREAM_INFLUX_URL,
    CITYSTREAM_INFLUX_DB, and CITYSTREAM_INFLUX_TOKEN sent as "Authorization: Token ...") and
    counts the dead letters of city.deadletter.v1 (CITYSTREAM_KAFKA_BOOTSTRAP). InfluxDB 1.x
    answers /query as is; InfluxDB 2.x and 3.x answer it through their v1 compatibility API, which
    needs a token and a DBRP mapping of the database name CITYSTREAM_INFLUX_DB to the bucket.

    Writes pm25.png (PM2.5 per station over the Korean CAI bands), parking.png (occupancy per
    lot), adas_map.png (ADAS warnings per H3 cell), throughput.png (readings and dead letters per
    minute), summary.json and report.html (everything in one self-contained page) into --out.
    Times are shown in KST (UTC+9).
    """
    try:
        settings = load_settings()
    except ConfigError as exc:
        click.echo(f"citystream report: {exc}", err=True)
        sys.exit(2)
    try:
        time_range = resolve_range(since, start, end, time.time_ns() // 1_000_000)
    except ReportError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        files = write_report(settings, time_range, folder, dead_letters=not no_dead_letters)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    summary = files.summary
    readings = ", ".join(f"{kind} {count:,}" for kind, count in summary["readings"].items())
    click.echo(f"{_range_text(time_range)}: readings {readings}")
    if summary["dead_letters"] is not None:
        click.echo(f"dead letters: {summary['dead_letters']['total']:,}")
    click.echo(f"report: {files.html}")
