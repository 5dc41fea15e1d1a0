"""Alert rules (schemas/CONTRACT.md section 6) as pure, deterministic logic.

Nothing here touches Faust, Kafka, InfluxDB or a clock: every instant is passed in (``now_ms`` only
stamps ``emitted_at``; ``wall_ms`` is the wall clock of the offline rule). A partition keeps one
:class:`AlertBook` (its open alerts) and the rule objects (what each rule remembers between
windows); all of them snapshot with ``dump()`` to JSON-able data and restore with ``load()``.
Checkpoint the book and the rules together, so that a restart neither repeats nor loses an alert.

How the rules are fed:

- :class:`StationAirRules.on_final_hour` with each final 1-hour window of a station (its hourly means).
- :class:`LotRules.on_final_minute` with each final 1-minute ``occupancy`` of a lot.
- :class:`CellRules.on_final_minute` with each final 1-minute window of an H3 cell (collision warnings
  per taxi, taxis that reported a road hazard), per cell in window order; then
  :class:`CellRules.on_frontier` with the new final-window frontier (a cell without readings has
  no windows, so only the frontier can tell that it has been quiet for an hour).
- :class:`DeviceRules.seen` with each valid reading (wall clock), :class:`DeviceRules.check_offline`
  periodically, :class:`DeviceRules.battery` with each parking reading that carries ``battery_v``.

Each rule returns the alerts it raised or cleared, to be published on ``city.alerts.v1`` (keyed by
the subject id) and written to the ``alerts`` measurement.

**The ``alerts`` measurement and colliding points.** schemas/CONTRACT.md section 5 puts ``kind``, ``status``
and ``severity`` in tags, the subject in a field and the window end (milliseconds) in the time.
Two alerts with the same kind, status and severity and the same window end -- two stations raising
the PM2.5 advisory for the same hour, two lots filling in the same minute -- are then the same
series at the same timestamp, and InfluxDB keeps only the last one written. Two line formats are
offered so the integrating code can choose:

- :func:`alert_line` follows the contract to the letter (time in milliseconds, written with
  ``precision=ms``) and loses all but one of such colliding alerts in InfluxDB (Kafka still carries
  all of them).
- :func:`alert_line_ns` writes the time in nanoseconds: the window end plus a per-subject offset
  below one millisecond (:func:`alert_time_ns`, from the CRC-32 of the subject id). Every alert
  keeps its point, the time still rounds down to the window end at millisecond precision, but those
  lines must be written with ``precision=ns`` (a separate write request from the millisecond
  lines). Two subjects share an offset with a probability of about one in a million.

Making the subject a tag would be the clean fix, but changes the contract.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from schemas.alert import Alert, AlertSeverity, AlertSubject, SubjectType
from schemas.timestamps import format_ms, format_ms_seconds, parse_rfc3339_ms
from streams.core.lineprotocol import format_line

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000

PM25_ADVISORY: Final = "air.pm25_advisory"
PM25_WARNING: Final = "air.pm25_warning"
PM10_ADVISORY: Final = "air.pm10_advisory"
PM10_WARNING: Final = "air.pm10_warning"
O3_ADVISORY: Final = "air.o3_advisory"
LOT_FULL: Final = "parking.lot_full"
HOTSPOT: Final = "adas.hotspot"
ROAD_HAZARD: Final = "road.hazard"
DEVICE_OFFLINE: Final = "device.offline"
BATTERY_LOW: Final = "device.battery_low"

#: kind -> (subject type, severity), as the contract's rules table
KINDS: Final[Mapping[str, tuple[SubjectType, AlertSeverity]]] = {
    PM25_ADVISORY: ("station", "warning"),
    PM25_WARNING: ("station", "critical"),
    PM10_ADVISORY: ("station", "warning"),
    PM10_WARNING: ("station", "critical"),
    O3_ADVISORY: ("station", "warning"),
    LOT_FULL: ("lot", "info"),
    HOTSPOT: ("cell", "warning"),
    ROAD_HAZARD: ("cell", "info"),
    DEVICE_OFFLINE: ("device", "warning"),
    BATTERY_LOW: ("device", "info"),
}

STATION: Final = "station"
PARKING: Final = "parking"


#: hourly-mean quantity -> (label, unit, decimals shown in messages)
AIR_QUANTITIES: Final[Mapping[str, tuple[str, str, int]]] = {
    "pm25_ugm3": ("PM2.5", "µg/m³", 1),
    "pm10_ugm3": ("PM10", "µg/m³", 1),
    "o3_ppm": ("O3", "ppm", 3),
}


@dataclass(frozen=True, slots=True)
class AirRule:
    """One hourly-mean rule of a station: raise at ``raise_at`` for ``hours`` hours, clear below ``clear_below``."""

    kind: str
    quantity: str  # key of the hourly means, one of AIR_QUANTITIES
    level: str  # "advisory" or "warning", for messages
    raise_at: float
    clear_below: float
    hours: int

    @property
    def label(self) -> str:
        return AIR_QUANTITIES[self.quantity][0]

    @property
    def unit(self) -> str:
        return AIR_QUANTITIES[self.quantity][1]

    @property
    def decimals(self) -> int:
        return AIR_QUANTITIES[self.quantity][2]


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """Every threshold of the rules; the defaults are the contract's (section 6).

    A ``*_raise`` value raises at or above it (battery: below it); a ``*_clear`` value clears below
    it (battery: at or above it). Durations are in milliseconds.
    """

    pm25_advisory_raise: float = 75.0
    pm25_advisory_clear: float = 35.0
    pm25_warning_raise: float = 150.0
    pm25_warning_clear: float = 75.0
    pm10_advisory_raise: float = 150.0
    pm10_advisory_clear: float = 100.0
    pm10_warning_raise: float = 300.0
    pm10_warning_clear: float = 150.0
    pm_consecutive_hours: int = 2
    o3_advisory_raise: float = 0.12
    o3_advisory_clear: float = 0.12
    o3_consecutive_hours: int = 1
    lot_full_raise: float = 0.95
    lot_full_clear: float = 0.85
    hotspot_min_warnings: int = 5
    hotspot_min_taxis: int = 3
    hotspot_window_ms: int = HOUR_MS
    hotspot_quiet_ms: int = HOUR_MS
    hazard_min_taxis: int = 3
    hazard_window_ms: int = 24 * HOUR_MS
    hazard_quiet_ms: int = 24 * HOUR_MS
    station_offline_ms: int = 10 * MINUTE_MS
    parking_offline_ms: int = 36 * HOUR_MS
    battery_low_raise: float = 2.9
    battery_low_clear: float = 3.0

    def __post_init__(self) -> None:
        for rule in self.air_rules():
            if rule.clear_below > rule.raise_at:
                raise ValueError(f"{rule.kind}: the clear threshold must not exceed the raise threshold")
            if rule.hours < 1:
                raise ValueError(f"{rule.kind}: needs at least 1 hour")
        if self.lot_full_clear > self.lot_full_raise:
            raise ValueError("lot_full_clear must not exceed lot_full_raise")
        if self.battery_low_clear < self.battery_low_raise:
            raise ValueError("battery_low_clear must not be below battery_low_raise")
        for name in ("hotspot_window_ms", "hotspot_quiet_ms", "hazard_window_ms", "hazard_quiet_ms"):
            if getattr(self, name) < MINUTE_MS:
                raise ValueError(f"{name} must be at least one minute")

    def air_rules(self) -> tuple[AirRule, ...]:
        """The station rules, in the order their alerts are emitted for one hour."""
        pm = self.pm_consecutive_hours
        return (
            AirRule(PM25_ADVISORY, "pm25_ugm3", "advisory", self.pm25_advisory_raise, self.pm25_advisory_clear, pm),
            AirRule(PM25_WARNING, "pm25_ugm3", "warning", self.pm25_warning_raise, self.pm25_warning_clear, pm),
            AirRule(PM10_ADVISORY, "pm10_ugm3", "advisory", self.pm10_advisory_raise, self.pm10_advisory_clear, pm),
            AirRule(PM10_WARNING, "pm10_ugm3", "warning", self.pm10_warning_raise, self.pm10_warning_clear, pm),
            AirRule(
                O3_ADVISORY,
                "o3_ppm",
                "advisory",
                self.o3_advisory_raise,
                self.o3_advisory_clear,
                self.o3_consecutive_hours,
            ),
        )

    def offline_ms(self, device_kind: str) -> int:
        if device_kind == STATION:
            return self.station_offline_ms
        if device_kind == PARKING:
            return self.parking_offline_ms
        raise ValueError(f"unknown device kind {device_kind!r} (expected {STATION!r} or {PARKING!r})")


# --- messages --------------------------------------------------------------------------------------


def _shown(value: float, threshold: float, decimals: int) -> str:
    """``value`` rounded for a message, with as many more digits as it takes not to contradict the
    comparison with ``threshold`` (74.96 is shown as 74.96, not 75.0, in "< 75")."""
    at_or_above = value >= threshold
    for places in range(decimals, decimals + 7):
        text = f"{value:.{places}f}"
        if (float(text) >= threshold) == at_or_above:
            return text
    return repr(float(value))


def _number(threshold: float) -> str:
    return f"{threshold:g}"


def _duration(ms: float) -> str:
    """A human duration: "45 s", "10 min", "60 min", "36 h", "2 h 5 min", "2 d 3 h"."""
    seconds = round(ms / 1000)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" if minutes == 0 else f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d" if hours == 0 else f"{days} d {hours} h"


_DEVICE_LABEL: Final = {STATION: "Environment station", PARKING: "Parking sensor"}


# --- the book of open alerts ---------------------------------------------------------------------------


class AlertBook:
    """The open alerts of one partition, at most one per (kind, subject id).

    ``raise_alert`` and ``clear_alert`` are where every alert is made: a raise is refused while the
    same (kind, subject) is open, a clear when none is, so whatever calls the rules repeats, an
    alert is raised once and cleared once.
    """

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], Alert] = {}

    def is_open(self, kind: str, subject_id: str) -> bool:
        return (kind, subject_id) in self._open

    def get(self, kind: str, subject_id: str) -> Alert | None:
        """The raise of the open alert of (kind, subject), if any."""
        return self._open.get((kind, subject_id))

    def __iter__(self) -> Iterator[Alert]:
        return iter(self._open.values())

    def __len__(self) -> int:
        return len(self._open)

    def raise_alert(
        self,
        kind: str,
        subject_id: str,
        *,
        window_start_ms: int,
        window_end_ms: int,
        value: float,
        threshold: float,
        message: str,
        now_ms: int,
    ) -> Alert | None:
        """Open an alert; None (and nothing changes) when (kind, subject) has one open already.

        ``alert_id`` is ``kind:subject:window start`` (RFC 3339 UTC to the second) of the window
        that raised it.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown alert kind {kind!r}")
        if (kind, subject_id) in self._open:
            return None
        subject_type, severity = KINDS[kind]
        start = format_ms_seconds(window_start_ms)
        alert = Alert(
            alert_id=f"{kind}:{subject_id}:{start}",
            kind=kind,
            status="raised",
            severity=severity,
            subject=AlertSubject(type=subject_type, id=subject_id),
            window_start=start,
            window_end=format_ms_seconds(window_end_ms),
            value=float(value),
            threshold=float(threshold),
            message=message,
            emitted_at=format_ms(now_ms),
        )
        self._open[(kind, subject_id)] = alert
        return alert

    def clear_alert(
        self,
        kind: str,
        subject_id: str,
        *,
        window_start_ms: int,
        window_end_ms: int,
        value: float,
        threshold: float,
        message: str,
        now_ms: int,
    ) -> Alert | None:
        """Close the open alert of (kind, subject): the ``cleared`` alert carrying the raise's
        ``alert_id``, subject and severity; None when none is open."""
        raised = self._open.pop((kind, subject_id), None)
        if raised is None:
            return None
        return Alert(
            alert_id=raised.alert_id,
            kind=kind,
            status="cleared",
            severity=raised.severity,
            subject=raised.subject,
            window_start=format_ms_seconds(window_start_ms),
            window_end=format_ms_seconds(window_end_ms),
            value=float(value),
            threshold=float(threshold),
            message=message,
            emitted_at=format_ms(now_ms),
        )

    def dump(self) -> list[dict[str, Any]]:
        return [alert.model_dump(mode="json") for _, alert in sorted(self._open.items())]

    @classmethod
    def load(cls, data: Iterable[Mapping[str, Any]]) -> AlertBook:
        book = cls()
        for item in data:
            alert = Alert.model_validate(item)
            book._open[(alert.kind, alert.subject.id)] = alert
        return book


def _keep(alerts: list[Alert], alert: Alert | None) -> None:
    if alert is not None:
        alerts.append(alert)


# --- station air quality ------------------------------------------------------------------------------


class StationAirRules:
    """PM2.5, PM10 and O3 rules of each station, on its final hourly means.

    Each kind is judged on its own, with its own hysteresis: the PM2.5 advisory stays open while the
    hourly mean is between 35 and 75, and the PM2.5 warning is a separate alert. Two hours at or
    above 150 raise the warning and -- unless it is open already -- the advisory (those hours are
    at or above 75 too), so the advisory is open whenever the warning is. When the mean falls below
    75 the warning clears and the advisory stays open until the mean falls below 35: the city's
    "back to advisory". A user subscribed to advisories therefore sees every episode from its start
    whether or not it went on to a warning, and one subscribed to warnings sees only the serious
    ones; nothing is cleared and raised again while the air only moves between levels.

    *Consecutive* hours are hour windows of the same station, each final, each with a mean of that
    quantity at or above the raise threshold, with no hour missing in between. The hour of the
    raise provides ``value``, ``window_start``/``window_end`` and so the ``alert_id``. Per station
    only the last ``max(hours)`` final hours' means are kept. An hour older than the newest one
    seen for the station changes nothing; the newest hour given again (a revised final window) is
    judged again with its new means.
    """

    __slots__ = ("_depth", "_rules", "hours", "policy")

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()
        self._rules = self.policy.air_rules()
        self._depth = max(rule.hours for rule in self._rules)
        # station -> [[hour window start, {quantity: mean}], ...] ascending, the newest last
        self.hours: dict[str, list[list[Any]]] = {}

    def on_final_hour(
        self,
        book: AlertBook,
        station_id: str,
        window_start_ms: int,
        window_end_ms: int,
        means: Mapping[str, float],
        now_ms: int,
    ) -> list[Alert]:
        history = self.hours.setdefault(station_id, [])
        if history and window_start_ms < history[-1][0]:
            return []
        known = {rule.quantity for rule in self._rules}
        current = {q: float(v) for q, v in means.items() if q in known and v is not None and math.isfinite(v)}
        if history and history[-1][0] == window_start_ms:
            history[-1][1] = current
        else:
            history.append([window_start_ms, current])
        del history[: max(0, len(history) - self._depth)]
        by_start = {start: hour_means for start, hour_means in history}

        alerts: list[Alert] = []
        for rule in self._rules:
            mean = current.get(rule.quantity)
            if mean is None:
                continue
            if book.is_open(rule.kind, station_id):
                if mean < rule.clear_below:
                    shown = _shown(mean, rule.clear_below, rule.decimals)
                    message = (
                        f"{rule.label} hourly mean {shown} {rule.unit} < {_number(rule.clear_below)} "
                        f"at {station_id}: {rule.level} lifted"
                    )
                    _keep(
                        alerts,
                        book.clear_alert(
                            rule.kind,
                            station_id,
                            window_start_ms=window_start_ms,
                            window_end_ms=window_end_ms,
                            value=mean,
                            threshold=rule.clear_below,
                            message=message,
                            now_ms=now_ms,
                        ),
                    )
                continue
            if mean < rule.raise_at:
                continue
            run = all(
                by_start.get(window_start_ms - back * HOUR_MS, {}).get(rule.quantity, -math.inf) >= rule.raise_at
                for back in range(1, rule.hours)
            )
            if not run:
                continue
            shown = _shown(mean, rule.raise_at, rule.decimals)
            message = f"{rule.label} hourly mean {shown} {rule.unit} >= {_number(rule.raise_at)}"
            if rule.hours > 1:
                message += f" for {rule.hours} consecutive hours"
            message += f" at {station_id}"
            _keep(
                alerts,
                book.raise_alert(
                    rule.kind,
                    station_id,
                    window_start_ms=window_start_ms,
                    window_end_ms=window_end_ms,
                    value=mean,
                    threshold=rule.raise_at,
                    message=message,
                    now_ms=now_ms,
                ),
            )
        return alerts

    def evict(self, before_ms: int) -> None:
        """Forget the hours that started before ``before_ms``, and stations left with none.

        An hour is only needed as the previous hour of a later one: with 2-hour rules, an hour window
        starting at S matters until the hour S + 1 h is final, so ``before_ms`` = (start of the
        oldest hour window that may still become final) - (max hours - 1) h is safe.
        """
        for station_id in list(self.hours):
            kept = [hour for hour in self.hours[station_id] if hour[0] >= before_ms]
            if kept:
                self.hours[station_id] = kept
            else:
                del self.hours[station_id]

    def dump(self) -> dict[str, list[list[Any]]]:
        return {station: [list(hour) for hour in hours] for station, hours in self.hours.items()}

    @classmethod
    def load(cls, data: Mapping[str, list[list[Any]]], policy: AlertPolicy | None = None) -> StationAirRules:
        rules = cls(policy)
        rules.hours = {
            station: [[int(start), {q: float(v) for q, v in means.items()}] for start, means in hours]
            for station, hours in data.items()
        }
        return rules


# --- parking lots -------------------------------------------------------------------------------------


class LotRules:
    """``parking.lot_full`` on each lot's final 1-minute occupancy: raise at >= 0.95, clear below 0.85.

    Holds no state of its own (the open alerts are in the book), so it has nothing to dump.
    """

    __slots__ = ("policy",)

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()

    def on_final_minute(
        self,
        book: AlertBook,
        lot_id: str,
        window_start_ms: int,
        window_end_ms: int,
        occupancy: float,
        now_ms: int,
    ) -> list[Alert]:
        policy = self.policy
        occupancy = float(occupancy)
        if book.is_open(LOT_FULL, lot_id):
            if occupancy >= policy.lot_full_clear:
                return []
            shown = _shown(occupancy * 100, policy.lot_full_clear * 100, 1)
            message = (
                f"Parking lot {lot_id} occupancy {shown}% < {_number(policy.lot_full_clear * 100)}%: no longer full"
            )
            alert = book.clear_alert(
                LOT_FULL,
                lot_id,
                window_start_ms=window_start_ms,
                window_end_ms=window_end_ms,
                value=occupancy,
                threshold=policy.lot_full_clear,
                message=message,
                now_ms=now_ms,
            )
        else:
            if occupancy < policy.lot_full_raise:
                return []
            shown = _shown(occupancy * 100, policy.lot_full_raise * 100, 1)
            message = f"Parking lot {lot_id} occupancy {shown}% >= {_number(policy.lot_full_raise * 100)}%: full"
            alert = book.raise_alert(
                LOT_FULL,
                lot_id,
                window_start_ms=window_start_ms,
                window_end_ms=window_end_ms,
                value=occupancy,
                threshold=policy.lot_full_raise,
                message=message,
                now_ms=now_ms,
            )
        return [alert] if alert is not None else []


# --- H3 cells: collision hotspots and road hazards -------------------------------------------------------


class _Track:
    """Per-minute counts by taxi of one cell, over a sliding span, and the end of the last minute with any."""

    __slots__ = ("last_end", "minutes")

    def __init__(self) -> None:
        self.minutes: list[tuple[int, dict[str, int]]] = []  # (window end, {taxi: count}), ascending
        self.last_end: int | None = None

    def record(self, window_end_ms: int, counts: Mapping[str, int]) -> None:
        kept = {taxi: int(n) for taxi, n in counts.items() if n > 0}
        index = next((i for i, (end, _) in enumerate(self.minutes) if end >= window_end_ms), len(self.minutes))
        if index < len(self.minutes) and self.minutes[index][0] == window_end_ms:
            # the same final window again (revised): its new counts replace the old ones
            if kept:
                self.minutes[index] = (window_end_ms, kept)
            else:
                del self.minutes[index]
        elif kept:
            self.minutes.insert(index, (window_end_ms, kept))
        # the last minute with any only grows: a revision that empties a minute at most delays a clear
        if kept and (self.last_end is None or window_end_ms > self.last_end):
            self.last_end = window_end_ms

    def totals(self, end_ms: int, span_ms: int) -> tuple[int, int]:
        """(sum of counts, distinct taxis) of the minutes whose window ends in (end - span, end]."""
        total = 0
        taxis: set[str] = set()
        for end, counts in self.minutes:
            if end_ms - span_ms < end <= end_ms:
                total += sum(counts.values())
                taxis.update(counts)
        return total, len(taxis)

    def prune(self, upto_ms: int) -> None:
        """Drop the minutes whose window ends at or before ``upto_ms``."""
        self.minutes = [minute for minute in self.minutes if minute[0] > upto_ms]

    def dump(self) -> list[Any]:
        return [self.last_end, [[end, counts] for end, counts in self.minutes]]

    @classmethod
    def load(cls, data: list[Any]) -> _Track:
        track = cls()
        track.last_end = None if data[0] is None else int(data[0])
        track.minutes = [(int(end), {taxi: int(n) for taxi, n in counts.items()}) for end, counts in data[1]]
        return track


@dataclass(frozen=True, slots=True)
class _CellRule:
    kind: str
    span_ms: int  # the sliding window of the raise
    quiet_ms: int  # without any for this long: cleared
    min_count: int  # sum of counts needed (hazards: taxis)
    min_taxis: int


class CellRules:
    """``adas.hotspot`` and ``road.hazard`` per H3 cell, on the cells' final 1-minute windows.

    Hotspot: the minutes whose window ends within (E - 60 min, E] of the newest final minute E hold
    >= 5 collision warnings (FCW, UFCW, PCW) from >= 3 distinct taxis. Hazard: >= 3 distinct taxis
    reported ``POTHOLE`` or ``OBSTACLE`` in the minutes ending within (E - 24 h, E]. A raise's window
    is that sliding window, [E - 60 min, E] (resp. 24 h), and ``value`` the warnings (resp. taxis)
    counted in it. A cell is cleared once the final-window frontier is 60 minutes (resp. 24 h) past
    the end of its last minute with a warning (resp. a hazard report); the clear's window is that
    quiet span [last end, last end + 60 min] whenever it is noticed, its ``value`` the warnings
    (hazard reports) in it: 0, its ``threshold`` 0 ("none").

    Feed every newly final minute (per cell in window order) before ``on_frontier`` for the new
    frontier; then the alerts do not depend on how far the frontier moved at a time (a restart,
    a backlog): a minute whose window starts 60 minutes or more after the cell's last warning
    clears the open hotspot before it is counted, as the frontier would have in a live run.
    """

    __slots__ = ("_hazard", "_hotspot", "hazards", "hotspots", "policy")

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()
        p = self.policy
        self._hotspot = _CellRule(
            HOTSPOT, p.hotspot_window_ms, p.hotspot_quiet_ms, p.hotspot_min_warnings, p.hotspot_min_taxis
        )
        self._hazard = _CellRule(
            ROAD_HAZARD, p.hazard_window_ms, p.hazard_quiet_ms, p.hazard_min_taxis, p.hazard_min_taxis
        )
        self.hotspots: dict[str, _Track] = {}
        self.hazards: dict[str, _Track] = {}

    def on_final_minute(
        self,
        book: AlertBook,
        cell: str,
        window_start_ms: int,
        window_end_ms: int,
        collisions: Mapping[str, int],
        hazards: Iterable[str],
        now_ms: int,
    ) -> list[Alert]:
        alerts: list[Alert] = []
        self._minute(
            book, self._hotspot, self.hotspots, cell, window_start_ms, window_end_ms, collisions, now_ms, alerts
        )
        self._minute(
            book,
            self._hazard,
            self.hazards,
            cell,
            window_start_ms,
            window_end_ms,
            dict.fromkeys(hazards, 1),
            now_ms,
            alerts,
        )
        return alerts

    def on_frontier(self, book: AlertBook, frontier_ms: int, now_ms: int) -> list[Alert]:
        """Clear the cells quiet for long enough before ``frontier_ms`` (every window ending at or
        before it is final and was fed), and forget what no later window can use."""
        alerts: list[Alert] = []
        for rule, tracks in ((self._hotspot, self.hotspots), (self._hazard, self.hazards)):
            for cell in sorted(tracks):
                track = tracks[cell]
                self._quiet(book, rule, cell, track, frontier_ms, now_ms, alerts)
                track.prune(frontier_ms - rule.span_ms)
                if not track.minutes and track.last_end is None:
                    del tracks[cell]
        return alerts

    def _minute(
        self,
        book: AlertBook,
        rule: _CellRule,
        tracks: dict[str, _Track],
        cell: str,
        window_start_ms: int,
        window_end_ms: int,
        counts: Mapping[str, int],
        now_ms: int,
        alerts: list[Alert],
    ) -> None:
        track = tracks.get(cell)
        if track is None:
            if not any(n > 0 for n in counts.values()):
                return
            track = tracks[cell] = _Track()
        # had the frontier reached this window's start, the cell would have been cleared already
        self._quiet(book, rule, cell, track, window_start_ms, now_ms, alerts)
        track.record(window_end_ms, counts)
        track.prune(window_end_ms - rule.span_ms)
        if book.is_open(rule.kind, cell):
            return
        total, taxis = track.totals(window_end_ms, rule.span_ms)
        if rule.kind == HOTSPOT:
            if total < rule.min_count or taxis < rule.min_taxis:
                return
            value, threshold = total, rule.min_count
            message = (
                f"Collision warning hotspot in cell {cell}: {total} warnings (FCW, UFCW, PCW) from {taxis} taxis "
                f"within {_duration(rule.span_ms)} (>= {rule.min_count} from >= {rule.min_taxis} taxis)"
            )
        else:
            if taxis < rule.min_taxis:
                return
            value, threshold = taxis, rule.min_taxis
            message = (
                f"Road hazard in cell {cell}: {taxis} taxis reported a pothole or obstacle "
                f"within {_duration(rule.span_ms)} (>= {rule.min_taxis} taxis)"
            )
        _keep(
            alerts,
            book.raise_alert(
                rule.kind,
                cell,
                window_start_ms=window_end_ms - rule.span_ms,
                window_end_ms=window_end_ms,
                value=value,
                threshold=threshold,
                message=message,
                now_ms=now_ms,
            ),
        )

    @staticmethod
    def _quiet(
        book: AlertBook, rule: _CellRule, cell: str, track: _Track, upto_ms: int, now_ms: int, alerts: list[Alert]
    ) -> None:
        """Clear the cell when nothing was counted in the ``quiet_ms`` before ``upto_ms``."""
        last = track.last_end
        if last is None or upto_ms - last < rule.quiet_ms:
            return
        track.last_end = None
        if rule.kind == HOTSPOT:
            message = f"No collision warnings in cell {cell} for {_duration(rule.quiet_ms)}: hotspot cleared"
        else:
            message = f"No pothole or obstacle reports in cell {cell} for {_duration(rule.quiet_ms)}: hazard cleared"
        _keep(
            alerts,
            book.clear_alert(
                rule.kind,
                cell,
                window_start_ms=last,
                window_end_ms=last + rule.quiet_ms,
                value=0.0,
                threshold=0.0,
                message=message,
                now_ms=now_ms,
            ),
        )

    def dump(self) -> dict[str, dict[str, list[Any]]]:
        return {
            "hotspots": {cell: track.dump() for cell, track in self.hotspots.items()},
            "hazards": {cell: track.dump() for cell, track in self.hazards.items()},
        }

    @classmethod
    def load(cls, data: Mapping[str, Mapping[str, list[Any]]], policy: AlertPolicy | None = None) -> CellRules:
        rules = cls(policy)
        rules.hotspots = {cell: _Track.load(track) for cell, track in data.get("hotspots", {}).items()}
        rules.hazards = {cell: _Track.load(track) for cell, track in data.get("hazards", {}).items()}
        return rules


# --- devices: offline and battery ------------------------------------------------------------------------


class DeviceRules:
    """``device.offline`` (wall clock) and ``device.battery_low`` of each device.

    Offline: a device is known from its first valid reading on; once the wall clock is 10 minutes
    (environment station) or 36 hours (parking sensor) past its last reading, ``check_offline``
    raises, once; its next reading clears. The raise's window is [last reading, last reading +
    limit], the clear's [last reading before the silence, the reading that ended it]; ``value`` is
    the silence and ``threshold`` the limit, in seconds. Call ``check_offline`` only once the
    partition has caught up with its input (after a restart the backlog would otherwise look like
    silence).

    Battery: raise below 2.9 V, clear at 3.0 V or more, on each reading with ``battery_v`` (window:
    the reading's 1-minute window); a reading older than the newest one judged for the device
    changes nothing.
    """

    __slots__ = ("battery_ts", "devices", "policy")

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()
        self.devices: dict[str, list[Any]] = {}  # device id -> [kind, wall time of its last reading]
        self.battery_ts: dict[str, int] = {}  # device id -> ts of the newest battery reading judged

    def seen(self, book: AlertBook, device_id: str, device_kind: str, wall_ms: int, now_ms: int) -> list[Alert]:
        limit = self.policy.offline_ms(device_kind)
        known = self.devices.get(device_id)
        last = known[1] if known is not None else None
        self.devices[device_id] = [device_kind, wall_ms if last is None else max(last, wall_ms)]
        raised = book.get(DEVICE_OFFLINE, device_id)
        if raised is None:
            return []
        since = parse_rfc3339_ms(raised.window_start) if last is None else last
        silence = max(0, wall_ms - since)
        message = f"{_DEVICE_LABEL[device_kind]} {device_id} reports again after {_duration(silence)} of silence"
        alert = book.clear_alert(
            DEVICE_OFFLINE,
            device_id,
            window_start_ms=since,
            window_end_ms=wall_ms,
            value=silence / 1000,
            threshold=limit / 1000,
            message=message,
            now_ms=now_ms,
        )
        return [alert] if alert is not None else []

    def check_offline(self, book: AlertBook, wall_ms: int, now_ms: int) -> list[Alert]:
        alerts: list[Alert] = []
        for device_id in sorted(self.devices):
            device_kind, last = self.devices[device_id]
            limit = self.policy.offline_ms(device_kind)
            silence = wall_ms - last
            if silence < limit or book.is_open(DEVICE_OFFLINE, device_id):
                continue
            message = (
                f"{_DEVICE_LABEL[device_kind]} {device_id} silent for {_duration(silence)} "
                f"(limit {_duration(limit)}), last reading {format_ms_seconds(last)}"
            )
            _keep(
                alerts,
                book.raise_alert(
                    DEVICE_OFFLINE,
                    device_id,
                    window_start_ms=last,
                    window_end_ms=last + limit,
                    value=silence / 1000,
                    threshold=limit / 1000,
                    message=message,
                    now_ms=now_ms,
                ),
            )
        return alerts

    def battery(self, book: AlertBook, device_id: str, battery_v: float, ts_ms: int, now_ms: int) -> list[Alert]:
        newest = self.battery_ts.get(device_id)
        if newest is not None and ts_ms < newest:
            return []
        self.battery_ts[device_id] = ts_ms
        policy = self.policy
        start = ts_ms - ts_ms % MINUTE_MS
        volts = float(battery_v)
        if book.is_open(BATTERY_LOW, device_id):
            if volts < policy.battery_low_clear:
                return []
            shown = _shown(volts, policy.battery_low_clear, 2)
            message = (
                f"Parking sensor {device_id} battery {shown} V >= {_number(policy.battery_low_clear)} V: no longer low"
            )
            alert = book.clear_alert(
                BATTERY_LOW,
                device_id,
                window_start_ms=start,
                window_end_ms=start + MINUTE_MS,
                value=volts,
                threshold=policy.battery_low_clear,
                message=message,
                now_ms=now_ms,
            )
        else:
            if volts >= policy.battery_low_raise:
                return []
            shown = _shown(volts, policy.battery_low_raise, 2)
            message = f"Parking sensor {device_id} battery {shown} V < {_number(policy.battery_low_raise)} V: low"
            alert = book.raise_alert(
                BATTERY_LOW,
                device_id,
                window_start_ms=start,
                window_end_ms=start + MINUTE_MS,
                value=volts,
                threshold=policy.battery_low_raise,
                message=message,
                now_ms=now_ms,
            )
        return [alert] if alert is not None else []

    def dump(self) -> dict[str, Any]:
        return {"devices": {d: list(v) for d, v in self.devices.items()}, "battery_ts": dict(self.battery_ts)}

    @classmethod
    def load(cls, data: Mapping[str, Any], policy: AlertPolicy | None = None) -> DeviceRules:
        rules = cls(policy)
        for device_id, (device_kind, last) in data.get("devices", {}).items():
            rules.policy.offline_ms(device_kind)  # refuses an unknown kind
            rules.devices[device_id] = [device_kind, int(last)]
        rules.battery_ts = {d: int(ts) for d, ts in data.get("battery_ts", {}).items()}
        return rules


# --- the alerts measurement -----------------------------------------------------------------------------

ALERTS_MEASUREMENT: Final = "alerts"


def alert_time_ms(alert: Alert) -> int:
    """The alert's point time: its window end, epoch milliseconds."""
    return parse_rfc3339_ms(alert.window_end)


def alert_time_ns(alert: Alert) -> int:
    """Window end in nanoseconds plus a per-subject offset below one millisecond (see the module doc)."""
    return alert_time_ms(alert) * 1_000_000 + zlib.crc32(alert.subject.id.encode("utf-8")) % 1_000_000


def _alert_point(alert: Alert, time: int) -> str:
    return format_line(
        ALERTS_MEASUREMENT,
        {"kind": alert.kind, "status": alert.status, "severity": alert.severity},
        {
            "subject": alert.subject.id,
            "value": float(alert.value),
            "threshold": float(alert.threshold),
            "message": alert.message,
            "alert_id": alert.alert_id,
        },
        time,
    )


def alert_line(alert: Alert) -> str:
    """The alert as a point of the ``alerts`` measurement, time in milliseconds (schemas/CONTRACT.md section 5)."""
    return _alert_point(alert, alert_time_ms(alert))


def alert_line_ns(alert: Alert) -> str:
    """As :func:`alert_line` with the time in nanoseconds (:func:`alert_time_ns`); write with ``precision=ns``."""
    return _alert_point(alert, alert_time_ns(alert))
