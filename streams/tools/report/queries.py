"""The report's InfluxQL statements, and turning their results into series and counts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from streams.kinds.taxi import COUNTERS
from streams.tools.report.ranges import MINUTE_MS, TimeRange

# taxi_adas_1m counters: driver warnings, and the road hazards the camera saw
WARNING_COUNTERS: Final = ("fcw", "ufcw", "pcw", "ldw", "hmw", "overspeed")
HAZARD_COUNTERS: Final = ("pothole", "obstacle")
assert set(WARNING_COUNTERS) | set(HAZARD_COUNTERS) == set(COUNTERS)

READING_KINDS: Final = ("taxi", "parking", "environment")


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
    flagged: str
    stuck: str

    def items(self) -> list[tuple[str, str]]:
        return list(asdict(self).items())


def build_queries(time_range: TimeRange, bucket_s: int) -> ReportQueries:
    """InfluxQL for a range: window aggregates whose window starts in it, raw points whose time is in it.

    Aggregates are selected from the start of the first minute window that overlaps the range, so a
    range starting at 10:00:30 still shows the 10:00 window. An alert's time is its window's end:
    alerts are counted whose window ends after the range's start and no later than the end of the
    range's last minute, so the alerts of the readings in the range's last minute count.
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
        # raw readings whose PM2.5 a data-quality test flagged (contract section 5.1)
        flagged=(
            f'SELECT "pm25_ugm3", "qc", "qc_tests" FROM "environment" WHERE {raw} AND "qc" > 1 '
            f'AND "qc_tests" =~ /pm25_ugm3:/ GROUP BY "device_id"'
        ),
        # device.stuck raised or cleared in the range, or raised before it and cleared in it
        stuck=(
            f'SELECT "message" FROM "alerts" WHERE "kind" = \'device.stuck\' AND time < {time_range.end_ms}ms '
            f'GROUP BY "subject_id", "status"'
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


@dataclass(frozen=True)
class FlaggedReading:
    """A raw PM2.5 reading a data-quality test flagged."""

    ts_ms: int
    pm25: float
    qc: int
    tests: str


def flagged_readings(result: Sequence[Mapping[str, Any]]) -> dict[str, list[FlaggedReading]]:
    """Per station, its flagged PM2.5 readings in time order."""
    flagged: dict[str, list[FlaggedReading]] = {}
    for series in result:
        station = series.get("tags", {}).get("device_id")
        if not station:
            continue
        for row in _rows(series):
            if row.get("pm25_ugm3") is None:
                continue
            reading = FlaggedReading(
                int(row["time"]), float(row["pm25_ugm3"]), int(row.get("qc") or 0), str(row.get("qc_tests") or "")
            )
            flagged.setdefault(str(station), []).append(reading)
    return {station: sorted(readings, key=lambda r: r.ts_ms) for station, readings in sorted(flagged.items())}


@dataclass(frozen=True)
class StuckStation:
    """A station's device.stuck alert: raised when, cleared when (None: still stuck at the range's end)."""

    station: str
    raised_ms: int
    cleared_ms: int | None
    message: str


def stuck_stations(result: Sequence[Mapping[str, Any]], start_ms: int) -> list[StuckStation]:
    """The stations stuck at some time in the range, from the device.stuck alerts up to its end."""
    events: dict[str, list[tuple[int, str, str]]] = {}
    for series in result:
        tags = series.get("tags", {})
        station, status = tags.get("subject_id"), tags.get("status")
        if not station or status not in ("raised", "cleared"):
            continue
        for row in _rows(series):
            events.setdefault(str(station), []).append((int(row["time"]), str(status), str(row.get("message") or "")))
    stuck: list[StuckStation] = []
    for station, items in events.items():
        open_since: tuple[int, str] | None = None
        for time_ms, status, message in sorted(items, key=lambda e: (e[0], e[1] != "raised")):
            if status == "raised":
                open_since = (time_ms, message)
            elif open_since is not None:
                if time_ms >= start_ms:
                    stuck.append(StuckStation(station, open_since[0], time_ms, open_since[1]))
                open_since = None
        if open_since is not None:
            stuck.append(StuckStation(station, open_since[0], None, open_since[1]))
    return sorted(stuck, key=lambda s: (s.raised_ms, s.station))
