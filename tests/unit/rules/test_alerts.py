"""Alert rules (contract section 6): pure logic, every instant passed in."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.alert import Alert
from schemas.timestamps import parse_rfc3339_ms
from streams.rules.air import StationAirRules
from streams.rules.book import AlertBook
from streams.rules.cells import CellRules
from streams.rules.devices import DeviceRules
from streams.rules.lots import LotRules
from streams.rules.points import alert_line, alert_time_ms
from streams.rules.policy import (
    BATTERY_LOW,
    DEVICE_OFFLINE,
    HOTSPOT,
    KINDS,
    LOT_FULL,
    O3_ADVISORY,
    PM10_ADVISORY,
    PM10_WARNING,
    PM25_ADVISORY,
    PM25_WARNING,
    ROAD_HAZARD,
    AlertPolicy,
)

MINUTE = 60_000
HOUR = 3_600_000
DAY = 24 * HOUR
H0 = 1_795_251_600_000  # 2026-11-21T09:00:00Z
NOW = H0 + HOUR + 31_004  # 2026-11-21T10:00:31.004Z
STATION = "env-jung-03"
LOT = "suseong-alpha-1"
CELL = "8930e1d8a0bffff"


def test_h0_is_the_contract_hour() -> None:
    assert parse_rfc3339_ms("2026-11-21T09:00:00Z") == H0
    assert H0 % HOUR == 0


def roundtrip(data: Any) -> Any:
    """Through JSON bytes, as a checkpoint would."""
    return orjson.loads(orjson.dumps(data))


def statuses(alerts: Sequence[Alert], kind: str) -> str:
    """'r' raised, 'c' cleared, '.' nothing, '?' more than one of ``kind``."""
    mine = [a for a in alerts if a.kind == kind]
    if not mine:
        return "."
    if len(mine) > 1:
        return "?"
    return "r" if mine[0].status == "raised" else "c"


# --- the book ------------------------------------------------------------------------------------


def _raise(book: AlertBook, kind: str, subject: str, start: int, value: float = 1.0) -> Alert | None:
    return book.raise_alert(
        kind, subject, window_start_ms=start, window_end_ms=start + HOUR, value=value, threshold=0.5,
        message="m", now_ms=NOW,
    )  # fmt: skip


def _clear(book: AlertBook, kind: str, subject: str, start: int) -> Alert | None:
    return book.clear_alert(
        kind, subject, window_start_ms=start, window_end_ms=start + HOUR, value=0.0, threshold=0.5,
        message="c", now_ms=NOW,
    )  # fmt: skip


def test_book_one_open_alert_per_kind_and_subject() -> None:
    book = AlertBook()
    first = _raise(book, PM25_ADVISORY, STATION, H0)
    assert first is not None and first.status == "raised"
    assert first.alert_id == f"air.pm25_advisory:{STATION}:2026-11-21T09:00:00Z"
    assert _raise(book, PM25_ADVISORY, STATION, H0 + HOUR) is None
    # another kind or another subject is a separate alert
    assert _raise(book, PM25_WARNING, STATION, H0) is not None
    assert _raise(book, PM25_ADVISORY, "env-other", H0) is not None
    assert len(book) == 3
    cleared = _clear(book, PM25_ADVISORY, STATION, H0 + 2 * HOUR)
    assert cleared is not None
    assert (cleared.status, cleared.alert_id, cleared.severity) == ("cleared", first.alert_id, "warning")
    assert cleared.subject == first.subject
    assert cleared.window_start == "2026-11-21T11:00:00Z"
    assert _clear(book, PM25_ADVISORY, STATION, H0 + 3 * HOUR) is None
    again = _raise(book, PM25_ADVISORY, STATION, H0 + 4 * HOUR)
    assert again is not None and again.alert_id != first.alert_id
    assert again.alert_id.endswith("2026-11-21T13:00:00Z")


def test_book_refuses_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown alert kind"):
        _raise(AlertBook(), "air.nonsense", STATION, H0)


@pytest.mark.parametrize(
    ("kind", "subject_type", "severity"),
    [
        (PM25_ADVISORY, "station", "warning"),
        (PM25_WARNING, "station", "critical"),
        (PM10_ADVISORY, "station", "warning"),
        (PM10_WARNING, "station", "critical"),
        (O3_ADVISORY, "station", "warning"),
        (LOT_FULL, "lot", "info"),
        (HOTSPOT, "cell", "warning"),
        (ROAD_HAZARD, "cell", "info"),
        (DEVICE_OFFLINE, "device", "warning"),
        (BATTERY_LOW, "device", "info"),
    ],
)
def test_subject_type_and_severity_per_contract(kind: str, subject_type: str, severity: str) -> None:
    alert = _raise(AlertBook(), kind, "x-1", H0)
    assert alert is not None
    assert (alert.subject.type, alert.severity) == (subject_type, severity)


def test_kinds_table_is_complete() -> None:
    assert len(KINDS) == 11


def test_book_dump_load() -> None:
    book = AlertBook()
    raised = _raise(book, LOT_FULL, LOT, H0)
    loaded = AlertBook.load(roundtrip(book.dump()))
    assert len(loaded) == 1 and loaded.get(LOT_FULL, LOT) == raised
    assert _raise(loaded, LOT_FULL, LOT, H0 + HOUR) is None
    cleared = _clear(loaded, LOT_FULL, LOT, H0 + HOUR)
    assert cleared is not None and raised is not None and cleared.alert_id == raised.alert_id


# --- station air rules ---------------------------------------------------------------------------

# per rule: the quantity, and values R (at the raise threshold), U (just under it), B (between the
# clear and raise thresholds: keeps an open alert open), C (just under the clear threshold)
AIR = {
    PM25_ADVISORY: ("pm25_ugm3", {"R": 75.0, "U": 74.9, "B": 35.0, "C": 34.9}),
    PM25_WARNING: ("pm25_ugm3", {"R": 150.0, "U": 149.9, "B": 75.0, "C": 74.9}),
    PM10_ADVISORY: ("pm10_ugm3", {"R": 150.0, "U": 149.9, "B": 100.0, "C": 99.9}),
    PM10_WARNING: ("pm10_ugm3", {"R": 300.0, "U": 299.9, "B": 150.0, "C": 149.9}),
    O3_ADVISORY: ("o3_ppm", {"R": 0.12, "U": 0.1199, "C": 0.1199}),
}

# hour by hour ("_" = no final hour for the station) -> what happens to the alert of that kind
TWO_HOUR_CASES = [
    ("RR", ".r"),
    ("R", "."),
    ("UR", ".."),
    ("RU", ".."),
    ("UU", ".."),
    ("RUR", "..."),  # over, under, over: no two consecutive hours
    ("R_R", "..."),  # a missing hour breaks the run
    ("RRR", ".r."),  # no second raise while open
    ("RRBBB", ".r..."),  # hysteresis: between the thresholds stays open
    ("RRU", ".r."),
    ("RRBC", ".r.c"),
    ("RRC", ".rc"),
    ("RR_C", ".r.c"),  # a missing hour neither clears nor breaks the open alert
    ("RRCR", ".rc."),  # after a clear, the run starts again
    ("RRCRR", ".rc.r"),
]
ONE_HOUR_CASES = [
    ("R", "r"),
    ("U", "."),
    ("UR", ".r"),
    ("RR", "r."),
    ("RC", "rc"),  # O3 clears below the raise threshold itself
    ("RCR", "rcr"),
    ("R_R", "r.."),
]


def _air_cases() -> list[tuple[str, str, str]]:
    cases = []
    for kind in (PM25_ADVISORY, PM25_WARNING, PM10_ADVISORY, PM10_WARNING):
        cases += [(kind, hours, expected) for hours, expected in TWO_HOUR_CASES]
    cases += [(O3_ADVISORY, hours, expected) for hours, expected in ONE_HOUR_CASES]
    return cases


def run_hours(
    rules: StationAirRules, book: AlertBook, hours: Sequence[dict[str, float] | None], first: int = 0
) -> list[list[Alert]]:
    """Feed one final hour per entry (None: no hour) starting at H0 + first hours."""
    out = []
    for i, means in enumerate(hours, start=first):
        start = H0 + i * HOUR
        out.append([] if means is None else rules.on_final_hour(book, STATION, start, start + HOUR, means, NOW))
    return out


@pytest.mark.parametrize(("kind", "hours", "expected"), _air_cases())
def test_air_rule(kind: str, hours: str, expected: str) -> None:
    quantity, values = AIR[kind]
    rules, book = StationAirRules(), AlertBook()
    fed = [None if h == "_" else {quantity: values[h]} for h in hours]
    results = run_hours(rules, book, fed)
    assert "".join(statuses(alerts, kind) for alerts in results) == expected
    # every raise names its hour, every clear the raise before it
    open_id = None
    for i, alerts in enumerate(results):
        for alert in (a for a in alerts if a.kind == kind):
            assert alert.subject.id == STATION and alert.subject.type == "station"
            assert parse_rfc3339_ms(alert.window_start) == H0 + i * HOUR
            assert parse_rfc3339_ms(alert.window_end) == H0 + (i + 1) * HOUR
            assert alert.value == values[hours[i]]
            if alert.status == "raised":
                assert open_id is None
                open_id = alert.alert_id
                assert alert.alert_id == f"{kind}:{STATION}:{alert.window_start}"
                assert alert.threshold == values["R"]
            else:
                assert alert.alert_id == open_id
                open_id = None
                assert alert.threshold in (35.0, 75.0, 100.0, 150.0, 0.12)
                assert alert.value < alert.threshold
    assert book.is_open(kind, STATION) == (open_id is not None)


def test_air_rules_on_other_stations_are_independent() -> None:
    rules, book = StationAirRules(), AlertBook()
    assert rules.on_final_hour(book, "env-a", H0, H0 + HOUR, {"pm25_ugm3": 80.0}, NOW) == []
    assert rules.on_final_hour(book, "env-b", H0 + HOUR, H0 + 2 * HOUR, {"pm25_ugm3": 80.0}, NOW) == []
    raised = rules.on_final_hour(book, "env-a", H0 + HOUR, H0 + 2 * HOUR, {"pm25_ugm3": 80.0}, NOW)
    assert [(a.kind, a.subject.id) for a in raised] == [(PM25_ADVISORY, "env-a")]


def test_pm25_warning_and_advisory_are_both_open() -> None:
    rules, book = StationAirRules(), AlertBook()
    levels = [160.0, 160.0, 100.0, 60.0, 40.0, 30.0]
    results = run_hours(rules, book, [{"pm25_ugm3": v} for v in levels])
    # both raised in the second hour, the advisory first; the warning goes "back to advisory" below 75
    assert [[(a.kind, a.status) for a in alerts] for alerts in results] == [
        [],
        [(PM25_ADVISORY, "raised"), (PM25_WARNING, "raised")],
        [],
        [(PM25_WARNING, "cleared")],
        [],
        [(PM25_ADVISORY, "cleared")],
    ]
    assert results[3][0].message == f"PM2.5 hourly mean 60.0 µg/m³ < 75 at {STATION}: warning lifted"
    assert results[1][1].message == f"PM2.5 hourly mean 160.0 µg/m³ >= 150 for 2 consecutive hours at {STATION}"
    assert len(book) == 0


def test_warning_while_the_advisory_is_open_raises_only_the_warning() -> None:
    rules, book = StationAirRules(), AlertBook()
    results = run_hours(rules, book, [{"pm25_ugm3": v} for v in (80.0, 80.0, 155.0, 155.0)])
    assert [[(a.kind, a.status) for a in alerts] for alerts in results] == [
        [],
        [(PM25_ADVISORY, "raised")],
        [],
        [(PM25_WARNING, "raised")],
    ]


def test_air_rules_ignore_missing_quantities_and_older_hours() -> None:
    rules, book = StationAirRules(), AlertBook()
    run_hours(rules, book, [{"pm25_ugm3": 90.0}, {"pm25_ugm3": 90.0}])
    assert book.is_open(PM25_ADVISORY, STATION)
    # an hour without PM2.5 neither clears nor raises; other quantities are judged
    (alerts,) = run_hours(rules, book, [{"pm10_ugm3": 10.0, "no2_ppm": 0.5}], first=2)
    assert alerts == [] and book.is_open(PM25_ADVISORY, STATION)
    # an hour older than the newest one seen changes nothing
    assert rules.on_final_hour(book, STATION, H0, H0 + HOUR, {"pm25_ugm3": 1.0}, NOW) == []
    assert book.is_open(PM25_ADVISORY, STATION)


def test_revised_final_hour_is_judged_again() -> None:
    rules, book = StationAirRules(), AlertBook()
    run_hours(rules, book, [{"pm25_ugm3": 80.0}, {"pm25_ugm3": 70.0}])
    assert not book.is_open(PM25_ADVISORY, STATION)
    (alerts,) = run_hours(rules, book, [{"pm25_ugm3": 76.0}], first=1)
    assert [(a.kind, a.status) for a in alerts] == [(PM25_ADVISORY, "raised")]


@pytest.mark.parametrize(
    ("hours", "levels", "expected"),
    [
        (3, [80.0, 80.0], ".."),
        (3, [80.0, 80.0, 80.0], "..r"),
        (3, [80.0, 30.0, 80.0, 80.0], "...."),
        (1, [80.0], "r"),
    ],
)
def test_consecutive_hours_is_a_policy(hours: int, levels: list[float], expected: str) -> None:
    rules, book = StationAirRules(AlertPolicy(pm_consecutive_hours=hours)), AlertBook()
    results = run_hours(rules, book, [{"pm25_ugm3": v} for v in levels])
    assert "".join(statuses(alerts, PM25_ADVISORY) for alerts in results) == expected


def test_contract_example_alert_json() -> None:
    rules, book = StationAirRules(), AlertBook()
    assert rules.on_final_hour(book, STATION, H0 - HOUR, H0, {"pm25_ugm3": 78.0}, NOW - HOUR) == []
    (alert,) = rules.on_final_hour(book, STATION, H0, H0 + HOUR, {"pm25_ugm3": 81.4, "pm10_ugm3": 90.0}, NOW)
    contract = orjson.loads(
        """{"alert_id": "air.pm25_advisory:env-jung-03:2026-11-21T09:00:00Z",
            "kind": "air.pm25_advisory", "status": "raised", "severity": "warning",
            "subject": {"type": "station", "id": "env-jung-03"},
            "window_start": "2026-11-21T09:00:00Z", "window_end": "2026-11-21T10:00:00Z",
            "value": 81.4, "threshold": 75.0,
            "message": "PM2.5 hourly mean 81.4 µg/m³ >= 75 for 2 consecutive hours at env-jung-03",
            "emitted_at": "2026-11-21T10:00:31.004Z"}"""
    )
    produced = roundtrip(alert.model_dump(mode="json"))
    assert produced == contract
    assert list(produced) == list(contract)
    assert {k: type(v) for k, v in produced.items()} == {k: type(v) for k, v in contract.items()}


@pytest.mark.parametrize(
    ("quantity", "levels", "message"),
    [
        ("pm25_ugm3", [76.0, 76.0, 30.2], f"PM2.5 hourly mean 30.2 µg/m³ < 35 at {STATION}: advisory lifted"),
        # rounded to one decimal 34.96 would read "35.0 < 35": more digits are shown
        ("pm25_ugm3", [76.0, 76.0, 34.96], f"PM2.5 hourly mean 34.96 µg/m³ < 35 at {STATION}: advisory lifted"),
        ("pm25_ugm3", [76.0, 75.04], f"PM2.5 hourly mean 75.0 µg/m³ >= 75 for 2 consecutive hours at {STATION}"),
        ("pm10_ugm3", [151.0, 160.25], f"PM10 hourly mean 160.2 µg/m³ >= 150 for 2 consecutive hours at {STATION}"),
        ("o3_ppm", [0.1344], f"O3 hourly mean 0.134 ppm >= 0.12 at {STATION}"),
        ("o3_ppm", [0.13, 0.08], f"O3 hourly mean 0.080 ppm < 0.12 at {STATION}: advisory lifted"),
    ],
)
def test_air_messages(quantity: str, levels: list[float], message: str) -> None:
    rules, book = StationAirRules(), AlertBook()
    results = run_hours(rules, book, [{quantity: v} for v in levels])
    assert results[-1][-1].message == message


def test_air_dump_load_keeps_the_run_and_the_open_alert() -> None:
    rules, book = StationAirRules(), AlertBook()
    run_hours(rules, book, [{"pm25_ugm3": 90.0}])
    # the first hour of the run survives a restart
    rules = StationAirRules.load(roundtrip(rules.dump()))
    book = AlertBook.load(roundtrip(book.dump()))
    (raised,) = run_hours(rules, book, [{"pm25_ugm3": 90.0}], first=1)[0]
    rules = StationAirRules.load(roundtrip(rules.dump()))
    book = AlertBook.load(roundtrip(book.dump()))
    # no second raise after the restart, and the clear carries the raise's id
    assert run_hours(rules, book, [{"pm25_ugm3": 90.0}], first=2) == [[]]
    (cleared,) = run_hours(rules, book, [{"pm25_ugm3": 20.0}], first=3)[0]
    assert raised.status == "raised" and cleared.status == "cleared"
    assert cleared.alert_id == raised.alert_id == f"air.pm25_advisory:{STATION}:2026-11-21T10:00:00Z"


def test_air_keeps_only_recent_hours_and_evicts() -> None:
    rules, book = StationAirRules(), AlertBook()
    run_hours(rules, book, [{"pm25_ugm3": 10.0}] * 30)
    assert [start for start, _ in rules.dump()[STATION]] == [H0 + 28 * HOUR, H0 + 29 * HOUR]
    rules.evict(H0 + 29 * HOUR)
    assert [start for start, _ in rules.dump()[STATION]] == [H0 + 29 * HOUR]
    rules.evict(H0 + 30 * HOUR)
    assert rules.dump() == {}


@pytest.mark.parametrize(
    "changes",
    [
        {"pm25_advisory_clear": 80.0},
        {"lot_full_clear": 0.96},
        {"battery_low_clear": 2.8},
        {"pm_consecutive_hours": 0},
        {"hotspot_window_ms": 1000},
    ],
)
def test_policy_refuses_inconsistent_thresholds(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AlertPolicy(**changes)


# --- parking lots --------------------------------------------------------------------------------

LOT_CASES = [
    ([0.95], "r"),
    ([0.949], "."),
    ([1.0, 1.0], "r."),  # no second raise while open
    ([0.96, 0.9, 0.85], "r.."),  # between 0.85 and 0.95 stays open; 0.85 is not < 0.85
    ([0.96, 0.849], "rc"),
    ([0.96, 0.5, 0.94, 0.97], "rc.r"),
]


@pytest.mark.parametrize(("occupancies", "expected"), LOT_CASES)
def test_lot_full(occupancies: list[float], expected: str) -> None:
    rules, book = LotRules(), AlertBook()
    results = []
    for i, occupancy in enumerate(occupancies):
        start = H0 + i * MINUTE
        results.append(rules.on_final_minute(book, LOT, start, start + MINUTE, occupancy, NOW))
    assert "".join(statuses(alerts, LOT_FULL) for alerts in results) == expected
    raises = [a for alerts in results for a in alerts if a.status == "raised"]
    clears = [a for alerts in results for a in alerts if a.status == "cleared"]
    assert len({a.alert_id for a in raises}) == len(raises)  # a new raise, a new id
    for clear in clears:
        assert clear.alert_id == raises[0].alert_id and clear.threshold == 0.85
    for alert in raises:
        assert alert.threshold == 0.95 and alert.subject.type == "lot"
        assert parse_rfc3339_ms(alert.window_end) - parse_rfc3339_ms(alert.window_start) == MINUTE


def test_lot_messages() -> None:
    rules, book = LotRules(), AlertBook()
    (raised,) = rules.on_final_minute(book, LOT, H0, H0 + MINUTE, 0.9667, NOW)
    (cleared,) = rules.on_final_minute(book, LOT, H0 + MINUTE, H0 + 2 * MINUTE, 0.8, NOW)
    assert raised.message == f"Parking lot {LOT} occupancy 96.7% >= 95%: full"
    assert cleared.message == f"Parking lot {LOT} occupancy 80.0% < 85%: no longer full"
    assert (raised.value, cleared.value) == (0.9667, 0.8)


# --- cells: collision hotspots -------------------------------------------------------------------

T0 = H0  # minute i of a cell is the window [T0 + i min, T0 + (i + 1) min)


def feed_cell(
    rules: CellRules,
    book: AlertBook,
    minutes: dict[int, dict[str, int]] | None = None,
    hazards: dict[int, set[str]] | None = None,
    cell: str = CELL,
) -> list[Alert]:
    alerts = []
    minutes, hazards = minutes or {}, hazards or {}
    for i in sorted(set(minutes) | set(hazards)):
        start = T0 + i * MINUTE
        alerts += rules.on_final_minute(
            book, cell, start, start + MINUTE, minutes.get(i, {}), hazards.get(i, set()), NOW
        )
    return alerts


HOTSPOT_CASES = [
    ({0: {"t1": 3, "t2": 1, "t3": 1}}, 0),  # 5 warnings from 3 taxis in one minute
    ({0: {"t1": 2, "t2": 1, "t3": 1}}, None),  # 4 from 3 taxis
    ({0: {"t1": 4, "t2": 2}}, None),  # 6 from 2 taxis
    ({0: {"t1": 2, "t2": 2, "t3": 0}}, None),  # a taxi with 0 warnings is not a third taxi
    ({0: {"t1": 2}, 30: {"t2": 2}, 59: {"t3": 1}}, 59),  # over the last 60 minutes
    ({0: {"t1": 2}, 30: {"t2": 2}, 60: {"t3": 1}}, None),  # minute 0 has left the 60 minutes
    ({0: {"t1": 2}, 30: {"t2": 2}, 60: {"t3": 1}, 61: {"t1": 1}}, None),
    ({0: {"t1": 2}, 30: {"t2": 2}, 60: {"t3": 1}, 61: {"t1": 2}}, 61),
    ({0: {"t1": 5}, 1: {"t2": 1}, 2: {"t3": 1}, 3: {"t1": 9}}, 2),  # raised once
]


@pytest.mark.parametrize(("minutes", "raised_at"), HOTSPOT_CASES)
def test_hotspot_raise(minutes: dict[int, dict[str, int]], raised_at: int | None) -> None:
    rules, book = CellRules(), AlertBook()
    alerts = feed_cell(rules, book, minutes)
    if raised_at is None:
        assert alerts == [] and not book.is_open(HOTSPOT, CELL)
        return
    (alert,) = alerts
    end = T0 + (raised_at + 1) * MINUTE
    assert (alert.kind, alert.status, alert.severity) == (HOTSPOT, "raised", "warning")
    assert alert.subject.type == "cell" and alert.subject.id == CELL
    assert parse_rfc3339_ms(alert.window_end) == end
    assert parse_rfc3339_ms(alert.window_start) == end - HOUR
    counted = sum(n for i, counts in minutes.items() if i <= raised_at and i > raised_at - 60 for n in counts.values())
    assert alert.value == counted and alert.threshold == 5.0
    assert alert.alert_id == f"{HOTSPOT}:{CELL}:{alert.window_start}"


def test_hotspot_message() -> None:
    rules, book = CellRules(), AlertBook()
    (alert,) = feed_cell(rules, book, {0: {"t1": 4, "t2": 1, "t3": 1}})
    assert alert.message == (
        f"Collision warning hotspot in cell {CELL}: 6 warnings (FCW, UFCW, PCW) from 3 taxis within 60 min "
        "(>= 5 from >= 3 taxis)"
    )


def test_hotspot_clears_after_60_quiet_minutes_and_not_before() -> None:
    rules, book = CellRules(), AlertBook()
    (raised,) = feed_cell(rules, book, {0: {"t1": 3, "t2": 1, "t3": 1}, 10: {"t1": 1}})
    last_end = T0 + 11 * MINUTE  # a single warning after the raise keeps the hotspot going
    assert rules.on_frontier(book, last_end + 59 * MINUTE, NOW) == []
    assert rules.on_frontier(book, last_end + 59 * MINUTE + 59_999, NOW) == []
    assert book.is_open(HOTSPOT, CELL)
    (cleared,) = rules.on_frontier(book, last_end + HOUR, NOW)
    assert (cleared.status, cleared.alert_id, cleared.value, cleared.threshold) == (
        "cleared",
        raised.alert_id,
        0.0,
        0.0,
    )
    assert parse_rfc3339_ms(cleared.window_start) == last_end
    assert parse_rfc3339_ms(cleared.window_end) == last_end + HOUR
    assert cleared.message == f"No collision warnings in cell {CELL} for 60 min: hotspot cleared"
    assert rules.on_frontier(book, last_end + 2 * HOUR, NOW) == []
    # nothing is kept for a quiet cell
    assert rules.dump() == {"hotspots": {}, "hazards": {}}


def test_hotspot_new_raise_after_clear_has_a_new_id() -> None:
    rules, book = CellRules(), AlertBook()
    (first,) = feed_cell(rules, book, {0: {"t1": 3, "t2": 1, "t3": 1}})
    (cleared,) = rules.on_frontier(book, T0 + MINUTE + HOUR, NOW)
    (second,) = feed_cell(rules, book, {90: {"t4": 1, "t5": 1, "t6": 3}})
    assert cleared.alert_id == first.alert_id != second.alert_id
    assert second.alert_id == f"{HOTSPOT}:{CELL}:2026-11-21T09:31:00Z"


def test_hotspot_does_not_depend_on_how_the_frontier_moves() -> None:
    """Minute by minute with on_frontier after each, or everything then one on_frontier: same alerts."""
    warnings = {
        0: {"t1": 3, "t2": 1, "t3": 1},
        5: {"t1": 1},
        # quiet from the end of minute 5 (T0 + 6 min): cleared at T0 + 66 min
        70: {"t2": 1},
        80: {"t4": 2, "t5": 2},
        85: {"t6": 1},
    }

    def stripped(alerts: list[Alert]) -> list[dict[str, Any]]:
        return [a.model_dump(exclude={"emitted_at"}) for a in alerts]

    live_rules, live_book, live = CellRules(), AlertBook(), []
    for i in range(0, 200):
        if i in warnings:
            live += feed_cell(live_rules, live_book, {i: warnings[i]})
        live += live_rules.on_frontier(live_book, T0 + (i + 1) * MINUTE, NOW)

    jump_rules, jump_book = CellRules(), AlertBook()
    jumped = feed_cell(jump_rules, jump_book, warnings) + jump_rules.on_frontier(jump_book, T0 + 200 * MINUTE, NOW)

    assert [(a.status, a.window_end) for a in live] == [
        ("raised", "2026-11-21T09:01:00Z"),
        ("cleared", "2026-11-21T10:06:00Z"),
        ("raised", "2026-11-21T10:21:00Z"),  # minutes 70 and 80: 5 warnings from 3 taxis
        ("cleared", "2026-11-21T11:26:00Z"),
    ]
    assert stripped(jumped) == stripped(live)


def test_cells_are_independent() -> None:
    rules, book = CellRules(), AlertBook()
    assert feed_cell(rules, book, {0: {"t1": 3, "t2": 1}}, cell="cell-a") == []
    assert feed_cell(rules, book, {1: {"t3": 1}}, cell="cell-b") == []
    assert not book.is_open(HOTSPOT, "cell-a") and not book.is_open(HOTSPOT, "cell-b")


def test_cell_dump_load_keeps_counts_and_open_alerts() -> None:
    rules, book = CellRules(), AlertBook()
    assert feed_cell(rules, book, {0: {"t1": 2, "t2": 1}}) == []
    rules = CellRules.load(roundtrip(rules.dump()))
    book = AlertBook.load(roundtrip(book.dump()))
    (raised,) = feed_cell(rules, book, {1: {"t3": 2}})  # 5 warnings from 3 taxis across the restart
    rules = CellRules.load(roundtrip(rules.dump()))
    book = AlertBook.load(roundtrip(book.dump()))
    assert feed_cell(rules, book, {2: {"t4": 5, "t5": 1}}) == []  # no second raise
    assert rules.on_frontier(book, T0 + 3 * MINUTE + HOUR - 1, NOW) == []
    (cleared,) = rules.on_frontier(book, T0 + 3 * MINUTE + HOUR, NOW)
    assert cleared.alert_id == raised.alert_id


# --- cells: road hazards -------------------------------------------------------------------------

HAZARD_CASES = [
    ({0: {"t1", "t2", "t3"}}, 0),
    ({0: {"t1"}, 600: {"t2"}, 1439: {"t3"}}, 1439),  # within 24 hours
    ({0: {"t1"}, 600: {"t2"}, 1440: {"t3"}}, None),  # minute 0 has left the 24 hours
    ({0: {"t1"}, 600: {"t1"}, 1000: {"t1"}}, None),  # the same taxi three times
    ({0: {"t1", "t2"}, 5: {"t2", "t1"}}, None),
    ({0: {"t1", "t2"}, 5: {"t2", "t1"}, 6: {"t9"}}, 6),
]


@pytest.mark.parametrize(("hazards", "raised_at"), HAZARD_CASES)
def test_road_hazard_raise(hazards: dict[int, set[str]], raised_at: int | None) -> None:
    rules, book = CellRules(), AlertBook()
    alerts = feed_cell(rules, book, hazards=hazards)
    if raised_at is None:
        assert alerts == [] and not book.is_open(ROAD_HAZARD, CELL)
        return
    (alert,) = alerts
    end = T0 + (raised_at + 1) * MINUTE
    assert (alert.kind, alert.status, alert.severity, alert.value, alert.threshold) == (
        ROAD_HAZARD,
        "raised",
        "info",
        3.0,
        3.0,
    )
    assert parse_rfc3339_ms(alert.window_end) == end and parse_rfc3339_ms(alert.window_start) == end - DAY
    assert alert.message == (
        f"Road hazard in cell {CELL}: 3 taxis reported a pothole or obstacle within 24 h (>= 3 taxis)"
    )


def test_road_hazard_clears_after_24_quiet_hours() -> None:
    rules, book = CellRules(), AlertBook()
    (raised,) = feed_cell(rules, book, hazards={0: {"t1", "t2", "t3"}, 100: {"t1"}})
    last_end = T0 + 101 * MINUTE
    assert rules.on_frontier(book, last_end + DAY - MINUTE, NOW) == []
    (cleared,) = rules.on_frontier(book, last_end + DAY, NOW)
    assert (cleared.kind, cleared.status, cleared.alert_id) == (ROAD_HAZARD, "cleared", raised.alert_id)
    assert cleared.message == f"No pothole or obstacle reports in cell {CELL} for 24 h: hazard cleared"
    assert not book.is_open(ROAD_HAZARD, CELL)


def test_hazard_and_hotspot_are_separate() -> None:
    rules, book = CellRules(), AlertBook()
    alerts = feed_cell(rules, book, {0: {"t1": 3, "t2": 1, "t3": 1}}, {0: {"t1", "t2", "t3"}})
    assert sorted(a.kind for a in alerts) == [HOTSPOT, ROAD_HAZARD]
    (cleared,) = rules.on_frontier(book, T0 + MINUTE + HOUR, NOW)
    assert cleared.kind == HOTSPOT and book.is_open(ROAD_HAZARD, CELL)


def test_cell_history_is_pruned() -> None:
    rules, book = CellRules(), AlertBook()
    for i in range(0, 3 * 24 * 60, 7):
        feed_cell(rules, book, {i: {"t1": 1}}, {i: {"t1"}})
        rules.on_frontier(book, T0 + (i + 1) * MINUTE, NOW)
    last, minutes = rules.dump()["hotspots"][CELL]
    assert len(minutes) <= 60 // 7 + 1
    assert all(end > last - HOUR for end, _ in minutes)
    _, hazard_minutes = rules.dump()["hazards"][CELL]
    assert len(hazard_minutes) <= 24 * 60 // 7 + 1


# --- devices: offline ----------------------------------------------------------------------------

W0 = H0 + 5 * HOUR  # a wall clock


@pytest.mark.parametrize(("device_kind", "limit"), [("station", 10 * MINUTE), ("parking", 36 * HOUR)])
def test_offline(device_kind: str, limit: int) -> None:
    rules, book = DeviceRules(), AlertBook()
    assert rules.seen(book, "dev-1", device_kind, W0, NOW) == []
    assert rules.check_offline(book, W0 + limit - 1, NOW) == []
    (raised,) = rules.check_offline(book, W0 + limit, NOW)
    assert (raised.kind, raised.status, raised.severity) == (DEVICE_OFFLINE, "raised", "warning")
    assert raised.subject.type == "device" and raised.subject.id == "dev-1"
    assert parse_rfc3339_ms(raised.window_start) == W0 and parse_rfc3339_ms(raised.window_end) == W0 + limit
    assert (raised.value, raised.threshold) == (limit / 1000, limit / 1000)
    assert rules.check_offline(book, W0 + limit + HOUR, NOW) == []  # once
    (cleared,) = rules.seen(book, "dev-1", device_kind, W0 + 2 * limit, NOW)
    assert (cleared.status, cleared.alert_id) == ("cleared", raised.alert_id)
    assert cleared.value == 2 * limit / 1000
    assert parse_rfc3339_ms(cleared.window_end) == W0 + 2 * limit
    assert rules.check_offline(book, W0 + 2 * limit + 1, NOW) == []
    (again,) = rules.check_offline(book, W0 + 3 * limit, NOW)
    assert again.alert_id != raised.alert_id


def test_offline_messages_and_kinds() -> None:
    rules, book = DeviceRules(), AlertBook()
    rules.seen(book, "env-1", "station", W0, NOW)
    rules.seen(book, "ps-1", "parking", W0, NOW)
    station_alert, *rest = rules.check_offline(book, W0 + 12 * MINUTE, NOW)
    assert rest == []  # the parking sensor has 36 hours
    assert station_alert.message == (
        "Environment station env-1 silent for 12 min (limit 10 min), last reading 2026-11-21T14:00:00Z"
    )
    (parking_alert,) = [a for a in rules.check_offline(book, W0 + 37 * HOUR, NOW) if a.subject.id == "ps-1"]
    assert parking_alert.message.startswith("Parking sensor ps-1 silent for 37 h (limit 36 h)")
    (cleared,) = rules.seen(book, "env-1", "station", W0 + 25 * MINUTE, NOW)
    assert cleared.message == "Environment station env-1 reports again after 25 min of silence"


def test_offline_unknown_device_kind() -> None:
    with pytest.raises(ValueError, match="unknown device kind"):
        DeviceRules().seen(AlertBook(), "x", "taxi", W0, NOW)


def test_offline_dump_load() -> None:
    rules, book = DeviceRules(), AlertBook()
    rules.seen(book, "env-1", "station", W0, NOW)
    rules = DeviceRules.load(roundtrip(rules.dump()))
    (raised,) = rules.check_offline(book, W0 + 10 * MINUTE, NOW)
    rules = DeviceRules.load(roundtrip(rules.dump()))
    book = AlertBook.load(roundtrip(book.dump()))
    assert rules.check_offline(book, W0 + 20 * MINUTE, NOW) == []
    (cleared,) = rules.seen(book, "env-1", "station", W0 + 30 * MINUTE, NOW)
    assert cleared.alert_id == raised.alert_id


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["seen", "check"]),
            st.sampled_from(["env-1", "env-2", "ps-1", "ps-2"]),
            st.integers(0, 40 * HOUR),  # how far the wall clock moves on
            st.integers(-HOUR, 0),  # a reading's send time before the clock (a backlog)
        ),
        max_size=40,
    )
)
def test_offline_checks_skipped_until_a_device_is_due_raise_what_a_full_scan_raises(
    steps: list[tuple[str, str, int, int]],
) -> None:
    """``check_offline`` looks at the devices only once one can be due; what it raises and clears
    is what a scan of every device at every check raises and clears."""
    quick, quick_book = DeviceRules(), AlertBook()
    full, full_book = DeviceRules(), AlertBook()
    wall = W0
    for action, device_id, step_ms, behind_ms in steps:
        wall += step_ms // 10
        if action == "seen":
            kind = "station" if device_id.startswith("env") else "parking"
            got = quick.seen(quick_book, device_id, kind, wall + behind_ms, NOW)
            assert got == full.seen(full_book, device_id, kind, wall + behind_ms, NOW)
        else:
            full.next_due_ms = -math.inf  # the reference scans every device every time
            assert quick.check_offline(quick_book, wall, NOW) == full.check_offline(full_book, wall, NOW)
    assert quick_book.dump() == full_book.dump()


def test_offline_check_with_nothing_due_looks_at_no_device() -> None:
    rules, book = DeviceRules(), AlertBook()
    for number in range(1000):
        rules.seen(book, f"ps-{number}", "parking", W0 + number, NOW)
    assert rules.check_offline(book, W0 + HOUR, NOW) == []
    assert rules.next_due_ms == W0 + 36 * HOUR  # the earliest deadline: the first sensor's
    rules.devices.clear()  # a check before that must not look at them
    assert rules.check_offline(book, W0 + 36 * HOUR - 1, NOW) == []
    assert rules.next_due_ms == W0 + 36 * HOUR


# --- devices: battery ----------------------------------------------------------------------------

BATTERY_CASES = [
    ([2.95], "."),
    ([2.9], "."),  # low is below 2.9
    ([2.89], "r"),
    ([2.85, 2.85], "r."),
    ([2.85, 2.95], "r."),  # 2.95 keeps it open
    ([2.85, 2.999], "r."),
    ([2.85, 2.95, 3.0], "r.c"),
    ([2.85, 3.6, 2.8], "rcr"),
]


@pytest.mark.parametrize(("volts", "expected"), BATTERY_CASES)
def test_battery(volts: list[float], expected: str) -> None:
    rules, book = DeviceRules(), AlertBook()
    results = []
    for i, v in enumerate(volts):
        results.append(rules.battery(book, "ps-1", v, H0 + i * HOUR + 12_345, NOW))
    assert "".join(statuses(alerts, BATTERY_LOW) for alerts in results) == expected
    alerts = [a for batch in results for a in batch]
    ids = [a.alert_id for a in alerts if a.status == "raised"]
    assert len(set(ids)) == len(ids)
    for i, batch in enumerate(results):
        for alert in batch:
            assert parse_rfc3339_ms(alert.window_start) == H0 + i * HOUR  # the reading's minute
            assert parse_rfc3339_ms(alert.window_end) == H0 + i * HOUR + MINUTE
            assert alert.value == volts[i]
            assert alert.threshold == (2.9 if alert.status == "raised" else 3.0)
            assert alert.severity == "info" and alert.subject.type == "device"
            if alert.status == "cleared":
                assert alert.alert_id == ids[0]


def test_battery_messages_and_order() -> None:
    rules, book = DeviceRules(), AlertBook()
    (raised,) = rules.battery(book, "ps-1", 2.85, H0 + MINUTE, NOW)
    assert raised.message == "Parking sensor ps-1 battery 2.85 V < 2.9 V: low"
    # a reading older than the newest one judged changes nothing
    assert rules.battery(book, "ps-1", 3.5, H0, NOW) == []
    (cleared,) = rules.battery(book, "ps-1", 3.01, H0 + 2 * MINUTE, NOW)
    assert cleared.message == "Parking sensor ps-1 battery 3.01 V >= 3 V: no longer low"


def test_battery_dump_load() -> None:
    rules, book = DeviceRules(), AlertBook()
    (raised,) = rules.battery(book, "ps-1", 2.7, H0, NOW)
    rules = DeviceRules.load(roundtrip(rules.dump()))
    book = AlertBook.load(roundtrip(book.dump()))
    assert rules.battery(book, "ps-1", 2.6, H0 + MINUTE, NOW) == []
    assert rules.battery(book, "ps-1", 3.3, H0 - MINUTE, NOW) == []  # older than the newest judged
    (cleared,) = rules.battery(book, "ps-1", 3.3, H0 + 2 * MINUTE, NOW)
    assert cleared.alert_id == raised.alert_id


# --- the alerts measurement ------------------------------------------------------------------------


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and not escaped by a backslash."""
    parts, buf, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            buf.append(text[i : i + 2])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, Any], int]:
    head, fields_text, time_text = _split(line, " ")
    measurement, *tag_texts = _split(head, ",")
    tags: dict[str, str] = {}
    for tag in tag_texts:
        key, value = _split(tag, "=")
        tags[_unescape(key)] = _unescape(value)
    fields: dict[str, Any] = {}
    for field in _split(fields_text, ","):
        key, raw = _split(field, "=")
        fields[_unescape(key)] = _unescape(raw[1:-1]) if raw.startswith('"') else float(raw)
    return measurement, tags, fields, int(time_text)


def _example() -> Alert:
    rules, book = StationAirRules(), AlertBook()
    rules.on_final_hour(book, STATION, H0 - HOUR, H0, {"pm25_ugm3": 78.0}, NOW)
    (alert,) = rules.on_final_hour(book, STATION, H0, H0 + HOUR, {"pm25_ugm3": 81.4}, NOW)
    return alert


def _other_station() -> Alert:
    rules, book = StationAirRules(), AlertBook()
    rules.on_final_hour(book, "env-suseong-01", H0 - HOUR, H0, {"pm25_ugm3": 90.0}, NOW)
    (alert,) = rules.on_final_hour(book, "env-suseong-01", H0, H0 + HOUR, {"pm25_ugm3": 95.5}, NOW)
    return alert


def test_alert_line_parses_back() -> None:
    alert = _example()
    measurement, tags, fields, time = parse_line(alert_line(alert))
    assert measurement == "alerts"
    assert tags == {
        "kind": "air.pm25_advisory",
        "status": "raised",
        "severity": "warning",
        "subject_type": "station",
        "subject_id": STATION,
    }
    assert fields == {
        "value": 81.4,
        "threshold": 75.0,
        "message": "PM2.5 hourly mean 81.4 µg/m³ >= 75 for 2 consecutive hours at env-jung-03",
        "alert_id": "air.pm25_advisory:env-jung-03:2026-11-21T09:00:00Z",
    }
    # the window end in milliseconds, with no offset
    assert time == H0 + HOUR == alert_time_ms(alert)
    assert alert_line(alert).split(" ")[0] == (
        f"alerts,kind=air.pm25_advisory,severity=warning,status=raised,subject_id={STATION},subject_type=station"
    )


def test_alert_line_escapes_messages() -> None:
    alert = _example().model_copy(update={"message": 'say "hi", a=b \\ end', "status": "cleared"})
    _, tags, fields, _ = parse_line(alert_line(alert))
    assert fields["message"] == 'say "hi", a=b \\ end' and tags["status"] == "cleared"


def test_two_subjects_alerts_of_one_window_are_two_series() -> None:
    a, b = _example(), _other_station()
    measurement_a, tags_a, _, t_a = parse_line(alert_line(a))
    measurement_b, tags_b, _, t_b = parse_line(alert_line(b))
    # one kind, one window end, one time: InfluxDB keeps both, as two series
    assert (measurement_a, t_a) == (measurement_b, t_b) and tags_a != tags_b
    assert {tags_a["subject_id"], tags_b["subject_id"]} == {a.subject.id, b.subject.id}
    # the same alert written again (a restart) is the same point
    assert alert_line(_example()) == alert_line(a)


@pytest.mark.parametrize("make", [_example, _other_station])
def test_every_alert_json_round_trips(make: Callable[[], Alert]) -> None:
    alert = make()
    assert Alert.model_validate(roundtrip(alert.model_dump(mode="json"))) == alert
