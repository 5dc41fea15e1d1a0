"""The data of a report: the query results from InfluxDB and the dead letters counted on Kafka."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiokafka.errors import KafkaError

from schemas.deadletter import DeadLetterReason
from streams.clients.influx import InfluxQLReader, InfluxQueryError
from streams.clients.kafka import DEADLETTER_TOPIC, BrokerUnavailable, TopicNotFound, read_range
from streams.core.registry import Registry
from streams.kinds.taxi import COUNTERS
from streams.tools.report.queries import (
    READING_KINDS,
    CellCount,
    FlaggedReading,
    Series,
    StuckStation,
    alert_counts,
    build_queries,
    cell_counts,
    flagged_readings,
    latest_lot_spots,
    series_by_tag,
    single_series,
    stuck_stations,
    tag_pairs,
)
from streams.tools.report.ranges import ReportError, TimeRange, choose_bucket_s, utc_text

DEAD_LETTER_REASONS: Final = tuple(reason.value for reason in DeadLetterReason)  # the contract's order
UNREADABLE_REASON: Final = "(unreadable)"


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
    client_options: Mapping[str, Any] | None = None,
) -> DeadLetterCounts:
    """Count the dead letters whose Kafka timestamp lies in the range, per bucket and reason.

    Each partition is read (:func:`streams.clients.kafka.read_range`) from ``offsets_for_times(range
    start)`` (a broker that answers an earlier offset, as the local Tansu does, only costs reading
    more) until a record at or after the range's end, its end offset when reading started, or until
    no record comes for ``quiet_s``. Records outside the range are skipped. ``client_options``: the
    Kafka security settings (:func:`streams.settings.kafka_client_kwargs`).
    """
    counts = DeadLetterCounts(bucket_s * 1000)
    batches = read_range(
        bootstrap_servers,
        topic,
        since_ms=time_range.start_ms,
        until_ms=time_range.end_ms,
        quiet_s=quiet_s,
        start_timeout_s=timeout_s,
        request_timeout_ms=int(timeout_s * 1000),
        **(client_options or {}),
    )
    try:
        async with contextlib.aclosing(batches):
            async for records in batches:
                for record in records:
                    if record.timestamp >= time_range.start_ms:
                        counts.add(record.timestamp, dead_letter_reason(record.value))
    except TopicNotFound:
        return counts  # no topic, no dead letters
    except BrokerUnavailable as exc:
        raise ReportError(
            f"Kafka at {bootstrap_servers} is not reachable ({exc}); check "
            "CITYSTREAM_KAFKA_BOOTSTRAP, or leave the dead letters out with --no-dead-letters"
        ) from None
    except KafkaError as exc:
        raise ReportError(f"Kafka refused reading {topic}: {type(exc).__name__}: {exc}") from None
    return counts


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
    flagged: dict[str, list[FlaggedReading]] = field(default_factory=dict)
    stuck: list[StuckStation] = field(default_factory=list)
    source: str = ""

    def summary(self) -> dict[str, Any]:
        """The figures of the summary table (and ``summary.json``)."""
        warnings = {name: sum(c.counts.get(name, 0) for c in self.cells) for name in COUNTERS}
        pm_values = [v for s in self.pm25.values() for v in s.values]
        return {
            "range": {
                "start_utc": utc_text(self.time_range.start_ms),
                "end_utc": utc_text(self.time_range.end_ms),
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
            "pm25_flagged": {station: len(readings) for station, readings in self.flagged.items()},
            "stuck_stations": [
                {
                    "station": s.station,
                    "raised_utc": utc_text(s.raised_ms),
                    "cleared_utc": None if s.cleared_ms is None else utc_text(s.cleared_ms),
                    "message": s.message,
                }
                for s in self.stuck
            ],
        }


def collect(
    reader: InfluxQLReader,
    time_range: TimeRange,
    *,
    bootstrap_servers: list[str] | str | None,
    registry: Registry | None = None,
    kafka_options: Mapping[str, Any] | None = None,
) -> ReportData:
    """Query InfluxDB (and Kafka, unless ``bootstrap_servers`` is None) for a report's data.

    ``kafka_options``: the Kafka security settings (:func:`streams.settings.kafka_client_kwargs`).
    """
    bucket_s = choose_bucket_s(time_range.duration_ms)
    queries = build_queries(time_range, bucket_s)
    try:
        results = {name: reader.query(statement) for name, statement in queries.items()}
    except InfluxQueryError as exc:
        raise ReportError(str(exc)) from None
    dead = (
        None
        if bootstrap_servers is None
        else asyncio.run(count_dead_letters(bootstrap_servers, time_range, bucket_s, client_options=kafka_options))
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
        flagged=flagged_readings(results["flagged"]),
        stuck=stuck_stations(results["stuck"], time_range.start_ms),
        registry=registry or Registry(),
        source=f"{reader.url}, database {reader.database}",
    )
