"""Windowed aggregates of each stream (contract sections 3 and 5): pure folds, no broker, no InfluxDB."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streams.core.cai import comprehensive_index, pm_24h_mean, sub_index
from streams.core.registry import LotInfo, Registry
from streams.core.windows import DUPLICATE, FOLDED, LATE, WindowedAggregate, WindowPolicy, window_start
from streams.kinds.environment import StationAggregate, StationSample
from streams.kinds.parking import ParkingLotAggregate, SpotReport
from streams.kinds.taxi import COUNTERS, TaxiCellAggregate, TaxiFix, cell_of

POLICY = WindowPolicy()
MINUTE = POLICY.short_ms
HOUR = POLICY.long_ms
GRACE = POLICY.grace_ms
LATENESS = POLICY.max_lateness_ms
BASE = 1_795_294_800_000  # 2026-11-21T21:00:00Z
WALL = BASE + 24 * HOUR  # a wall clock; the aggregates only keep it for the quiet-partition rule

CELL_A = cell_of(35.8714, 128.6014)  # Daegu, Jung-gu
CELL_B = cell_of(35.8563, 128.6289)  # Daegu, Suseong-gu


# --- line protocol, parsed back ------------------------------------------------------------------


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and not escaped by a backslash."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            buf.append(text[i : i + 2])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(buf))
            buf = []
            i += 1
            continue
        buf.append(ch)
        i += 1
    assert not quoted, f"unbalanced quotes in {text!r}"
    parts.append("".join(buf))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _value(text: str) -> Any:
    if text.startswith('"'):
        assert text.endswith('"') and len(text) >= 2, text
        return _unescape(text[1:-1])
    if re.fullmatch(r"-?\d+i", text):
        return int(text[:-1])
    assert re.fullmatch(r"-?(\d+\.\d*|\d+(\.\d*)?e[-+]?\d+|inf|nan)", text), f"not a float field: {text!r}"
    return float(text)


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, Any], int]:
    """(measurement, tags, fields, time) of one line; ints come back as int, floats as float, strings as str."""
    assert "\n" not in line
    head, field_text, time_text = _split(line, " ")
    measurement, *tag_texts = _split(head, ",")
    tags = {}
    for tag in tag_texts:
        key, value = _split(tag, "=")
        tags[_unescape(key)] = _unescape(value)
    fields = {}
    for field in _split(field_text, ","):
        key, value = _split(field, "=")
        fields[_unescape(key)] = _value(value)
    assert re.fullmatch(r"\d+", time_text), time_text
    return _unescape(measurement), tags, fields, int(time_text)


QC_FIELDS = ("qc_suspect", "qc_fail")


def by_key(lines: list[str], *tag_names: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Window lines keyed by (measurement, time, *tag values) -> fields; every key at most once.

    The data-quality lines of raw points (``environment``) and the windows' counts of flagged
    readings are left out: the aggregates' own fields are checked here, the flags in test_qc.py."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for line in lines:
        measurement, tags, fields, time = parse_line(line)
        if measurement == "environment":
            continue
        for name in QC_FIELDS:
            fields.pop(name, None)
        assert set(tags) == set(tag_names), line
        key = (measurement, time, *(tags[name] for name in tag_names))
        assert key not in out, f"two lines for {key}"
        out[key] = fields
    return out


def test_parse_line() -> None:
    line = r'environment_1h,device_id=e-1,district=jung\ gu readings=2i,x_mean=1.5,cai=7i,cai_grade="good" 123'
    assert parse_line(line) == (
        "environment_1h",
        {"device_id": "e-1", "district": "jung gu"},
        {"readings": 2, "x_mean": 1.5, "cai": 7, "cai_grade": "good"},
        123,
    )


def test_base_is_an_utc_hour() -> None:
    assert BASE % HOUR == 0
    assert window_start(BASE, HOUR) == BASE
    assert datetime.fromtimestamp(BASE / 1000, UTC) == datetime(2026, 11, 21, 21, tzinfo=UTC)


def test_policy_defaults() -> None:
    assert (MINUTE, HOUR, GRACE, LATENESS) == (60_000, 3_600_000, 30_000, 600_000)


def fold_all(aggregate: WindowedAggregate, records: list[Any]) -> list[str]:
    return [aggregate.fold(record, WALL) for record in records]


# --- taxi_adas_1m --------------------------------------------------------------------------------


def fix(device: str, ts: int, speed: float, event: str = "NONE", seq: int | None = None, cell: str = CELL_A) -> TaxiFix:
    return TaxiFix(device, ts, seq, cell, speed, event)


def taxi() -> TaxiCellAggregate:
    return TaxiCellAggregate(POLICY, Registry())


ZERO_COUNTS = dict.fromkeys(COUNTERS, 0)

TAXI_READINGS = [
    # cell A, minute 0
    fix("taxi-1", BASE + 1_000, 10.0, "NONE", 0),
    fix("taxi-1", BASE + 2_000, 20.0, "LDW_L", 1),
    fix("taxi-2", BASE + 3_000, 30.0, "LDW_R", 0),
    fix("taxi-2", BASE + 4_000, 40.0, "FCW", 1),
    fix("taxi-3", BASE + 59_999, 0.0, "UFCW"),  # no seq; last ms of the minute
    # cell B, minute 0
    fix("taxi-1", BASE + 30_000, 50.5, "PCW", 2, CELL_B),
    fix("taxi-1", BASE + 31_000, 49.5, "NONE", 3, CELL_B),
    # cell A, minute 1
    fix("taxi-1", BASE + 60_000, 60.0, "HMW", 4),  # first ms of the minute
    fix("taxi-2", BASE + 61_000, 120.0, "OVERSPEED", 2),
    fix("taxi-2", BASE + 62_000, 121.0, "OVERSPEED", 3),
    # cell B, minute 1
    fix("taxi-3", BASE + 119_999, 5.0, "POTHOLE", cell=CELL_B),
    fix("taxi-3", BASE + 100_000, 7.0, "OBSTACLE", cell=CELL_B),
]

TAXI_EXPECTED = {
    ("taxi_adas_1m", BASE, CELL_A): {
        "readings": 5, "taxis": 3, "speed_mean": 20.0, "speed_min": 0.0, "speed_max": 40.0,
        **ZERO_COUNTS, "fcw": 1, "ufcw": 1, "ldw": 2,
    },
    ("taxi_adas_1m", BASE, CELL_B): {
        "readings": 2, "taxis": 1, "speed_mean": 50.0, "speed_min": 49.5, "speed_max": 50.5,
        **ZERO_COUNTS, "pcw": 1,
    },
    ("taxi_adas_1m", BASE + MINUTE, CELL_A): {
        "readings": 3, "taxis": 2, "speed_mean": 301.0 / 3, "speed_min": 60.0, "speed_max": 121.0,
        **ZERO_COUNTS, "hmw": 1, "overspeed": 2,
    },
    ("taxi_adas_1m", BASE + MINUTE, CELL_B): {
        "readings": 2, "taxis": 1, "speed_mean": 6.0, "speed_min": 5.0, "speed_max": 7.0,
        **ZERO_COUNTS, "pothole": 1, "obstacle": 1,
    },
}  # fmt: skip


def test_taxi_lines_per_cell_and_minute() -> None:
    aggregate = taxi()
    assert fold_all(aggregate, TAXI_READINGS) == [FOLDED] * len(TAXI_READINGS)
    lines = aggregate.take_lines()
    assert len(lines) == 4
    got = by_key(lines, "cell")
    assert got == TAXI_EXPECTED
    for fields in got.values():
        # exactly the contract's fields: counts are integers, measured values floats
        assert list(fields) == ["readings", "taxis", "speed_mean", "speed_min", "speed_max", *COUNTERS]
        assert all(type(fields[name]) is int for name in ("readings", "taxis", *COUNTERS))
        assert all(type(fields[name]) is float for name in ("speed_mean", "speed_min", "speed_max"))
    assert aggregate.counts == {FOLDED: 12, DUPLICATE: 0, LATE: 0}


def test_taxi_event_none_counts_nothing() -> None:
    aggregate = taxi()
    fold_all(aggregate, [fix("taxi-1", BASE + i, 10.0, "NONE", i) for i in range(5)])
    [(_, fields)] = by_key(aggregate.take_lines(), "cell").items()
    assert fields["readings"] == 5
    assert all(fields[name] == 0 for name in COUNTERS)


@pytest.mark.parametrize(
    ("event", "counter"),
    [("FCW", "fcw"), ("UFCW", "ufcw"), ("PCW", "pcw"), ("LDW_L", "ldw"), ("LDW_R", "ldw"), ("HMW", "hmw"),
     ("OVERSPEED", "overspeed"), ("POTHOLE", "pothole"), ("OBSTACLE", "obstacle"), ("NONE", None)],
)  # fmt: skip
def test_taxi_each_event_counter(event: str, counter: str | None) -> None:
    aggregate = taxi()
    aggregate.fold(fix("taxi-1", BASE, 10.0, event, 0), WALL)
    aggregate.fold(fix("taxi-2", BASE + 1, 10.0, event, 0), WALL)
    [fields] = by_key(aggregate.take_lines(), "cell").values()
    expected = dict.fromkeys(COUNTERS, 0)
    if counter is not None:
        expected[counter] = 2
    assert {name: fields[name] for name in COUNTERS} == expected


def test_taxi_take_lines_returns_only_changed_windows() -> None:
    aggregate = taxi()
    fold_all(aggregate, TAXI_READINGS)
    assert len(aggregate.take_lines()) == 4
    assert aggregate.take_lines() == []
    # a new reading in an old window brings only that window back, with the new totals
    assert aggregate.fold(fix("taxi-4", BASE + 10_000, 90.0, "FCW", 0), WALL) == FOLDED
    got = by_key(aggregate.take_lines(), "cell")
    assert list(got) == [("taxi_adas_1m", BASE, CELL_A)]
    expected = TAXI_EXPECTED[("taxi_adas_1m", BASE, CELL_A)]
    assert got[("taxi_adas_1m", BASE, CELL_A)] == {
        **expected, "readings": 6, "taxis": 4, "speed_mean": 190.0 / 6, "speed_max": 90.0, "fcw": 2,
    }  # fmt: skip
    assert aggregate.take_lines() == []


@pytest.mark.parametrize(
    "duplicate",
    [
        fix("taxi-1", BASE + 1_000, 10.0, "NONE", 0),  # an exact copy
        fix("taxi-1", BASE + 9_000, 99.0, "FCW", 1, CELL_B),  # same device and seq, other content
        fix("taxi-1", BASE + 80_000, 99.0, "FCW", 4),  # same device and seq, in another window
        fix("taxi-3", BASE + 59_999, 99.0, "PCW"),  # no seq: same device and ts
    ],
)
def test_taxi_duplicates_change_nothing(duplicate: TaxiFix) -> None:
    aggregate = taxi()
    fold_all(aggregate, TAXI_READINGS)
    aggregate.take_lines()
    before = orjson.dumps(aggregate.dump()["windows"])
    assert aggregate.fold(duplicate, WALL) == DUPLICATE
    assert aggregate.take_lines() == []
    assert orjson.dumps(aggregate.dump()["windows"]) == before
    assert aggregate.counts == {FOLDED: 12, DUPLICATE: 1, LATE: 0}


def test_taxi_same_ts_other_device_is_not_a_duplicate() -> None:
    aggregate = taxi()
    assert aggregate.fold(fix("taxi-1", BASE, 10.0), WALL) == FOLDED
    assert aggregate.fold(fix("taxi-2", BASE, 20.0), WALL) == FOLDED
    assert aggregate.fold(fix("taxi-1", BASE, 30.0), WALL) == DUPLICATE
    assert aggregate.fold(fix("taxi-1", BASE + 1, 30.0), WALL) == FOLDED
    [fields] = by_key(aggregate.take_lines(), "cell").values()
    assert (fields["readings"], fields["taxis"], fields["speed_mean"]) == (3, 2, 20.0)


def test_taxi_out_of_order_within_lateness_is_aggregated() -> None:
    aggregate = taxi()
    readings = [
        fix("taxi-1", BASE + 5 * MINUTE, 50.0, seq=10),
        fix("taxi-1", BASE + 30_000, 10.0, seq=1),  # 4.5 min behind the watermark
        fix("taxi-1", BASE + 4 * MINUTE, 40.0, seq=9),
        fix("taxi-2", BASE + 5 * MINUTE - 10 * MINUTE + 60_000, 30.0, seq=0),  # before BASE: 9 min behind
    ]
    assert fold_all(aggregate, readings) == [FOLDED] * 4
    got = by_key(aggregate.take_lines(), "cell")
    assert sorted(time for _, time, _ in got) == [BASE - 4 * MINUTE, BASE, BASE + 4 * MINUTE, BASE + 5 * MINUTE]
    assert aggregate.clock.watermark_ms == BASE + 5 * MINUTE


def test_taxi_late_reading_is_counted_and_changes_nothing() -> None:
    aggregate = taxi()
    watermark = BASE + 20 * MINUTE
    fold_all(aggregate, [fix("taxi-1", BASE + 10 * MINUTE + 5_000, 10.0, seq=0), fix("taxi-1", watermark, 20.0, seq=1)])
    aggregate.take_lines()
    before = orjson.dumps(aggregate.dump()["windows"])
    # 10 minutes and 1 ms behind the watermark: late, even in a window that has data
    assert aggregate.fold(fix("taxi-2", watermark - LATENESS - 1, 99.0, "FCW", 0), WALL) == LATE
    assert aggregate.fold(fix("taxi-2", BASE, 99.0, "FCW", 1), WALL) == LATE
    assert aggregate.take_lines() == []
    assert orjson.dumps(aggregate.dump()["windows"]) == before
    assert aggregate.counts == {FOLDED: 2, DUPLICATE: 0, LATE: 2}
    assert aggregate.clock.watermark_ms == watermark
    # exactly the maximum lateness behind: still aggregated
    assert aggregate.fold(fix("taxi-2", watermark - LATENESS, 30.0, "FCW", 2), WALL) == FOLDED
    got = by_key(aggregate.take_lines(), "cell")
    assert got[("taxi_adas_1m", BASE + 10 * MINUTE, CELL_A)] == {
        **ZERO_COUNTS, "readings": 2, "taxis": 2, "speed_mean": 20.0, "speed_min": 10.0, "speed_max": 30.0, "fcw": 1,
    }  # fmt: skip


def test_taxi_final_window_is_revised_within_lateness() -> None:
    aggregate = taxi()
    fold_all(aggregate, [fix("taxi-1", BASE + 1_000, 10.0, seq=0), fix("taxi-1", BASE + 5 * MINUTE, 50.0, seq=1)])
    # the first minute is final by watermark (its end + grace has passed), and would be by wall clock too
    assert aggregate.clock.is_final(BASE + MINUTE, BASE) is True
    assert aggregate.clock.is_final(BASE + MINUTE, WALL) is True
    aggregate.take_lines()
    assert aggregate.fold(fix("taxi-2", BASE + 2_000, 30.0, "PCW", 0), WALL) == FOLDED
    got = by_key(aggregate.take_lines(), "cell")
    assert got == {
        ("taxi_adas_1m", BASE, CELL_A): {
            **ZERO_COUNTS, "readings": 2, "taxis": 2, "speed_mean": 20.0, "speed_min": 10.0, "speed_max": 30.0,
            "pcw": 1,
        }
    }  # fmt: skip


def _taxi_run(seed: int, decimals: int) -> list[TaxiFix]:
    """20 taxis, one reading every 3 s for 8 minutes (all within the maximum lateness of each other)."""
    rng = random.Random(seed)
    events = ["NONE"] * 20 + ["FCW", "UFCW", "PCW", "LDW_L", "LDW_R", "HMW", "OVERSPEED", "POTHOLE", "OBSTACLE"]
    cells = [CELL_A, CELL_B, cell_of(35.8800, 128.6200)]
    readings = []
    for n in range(20):
        device = f"taxi-{n:02d}"
        for i, ts in enumerate(range(BASE + rng.randrange(3_000), BASE + 8 * MINUTE, 3_000)):
            speed = round(rng.uniform(0, 120), decimals) if decimals else float(rng.randrange(120))
            readings.append(fix(device, ts, speed, rng.choice(events), i if n % 2 else None, rng.choice(cells)))
    return readings


def _final_lines(aggregate: WindowedAggregate, readings: list[Any]) -> list[str]:
    assert set(fold_all(aggregate, readings)) == {FOLDED}
    return sorted(aggregate.take_lines())


def test_taxi_order_does_not_matter_for_exact_values() -> None:
    """Counts, distinct taxis, min/max and (for speeds whose sums are exact) means do not depend on order."""
    readings = _taxi_run(seed=1, decimals=0)
    shuffled = readings[:]
    random.Random(42).shuffle(shuffled)
    assert shuffled != readings
    assert _final_lines(taxi(), readings) == _final_lines(taxi(), shuffled)


def test_taxi_order_does_not_matter() -> None:
    # A running float sum would make speed_mean (and every environment <q>_mean, and so the CAI inputs)
    # depend on the order readings arrive in: 0.1 + 0.2 + 0.3 != 0.3 + 0.2 + 0.1 in floats. A replay or
    # backfill interleaves the source partitions into the per-cell topic in another order than live data did,
    # and must still give the same final aggregates to the last bit: Stats keeps an exact sum.
    readings = _taxi_run(seed=1, decimals=1)
    shuffled = readings[:]
    random.Random(42).shuffle(shuffled)
    assert _final_lines(taxi(), readings) == _final_lines(taxi(), shuffled)


def test_stats_sum_order_minimal() -> None:
    # The smallest form of the scenario above: with a running float sum the two orders gave
    # speed_mean=0.20000000000000004 and speed_mean=0.19999999999999998.
    forward = [fix("taxi-1", BASE + i, speed, seq=i) for i, speed in enumerate([0.1, 0.2, 0.3])]
    backward = list(reversed(forward))
    assert _final_lines(taxi(), forward) == _final_lines(taxi(), backward)


def _roundtrip(aggregate: WindowedAggregate, fresh: WindowedAggregate) -> WindowedAggregate:
    blob = orjson.dumps(aggregate.dump())  # JSON-able
    fresh.load(orjson.loads(blob))
    return fresh


@pytest.mark.parametrize("cut", [1, 50, 400, 1_000])
def test_taxi_snapshot_restore(cut: int) -> None:
    readings = _taxi_run(seed=3, decimals=1)
    assert cut < len(readings)
    head, tail = readings[:cut], readings[cut:]
    uninterrupted, interrupted = taxi(), taxi()
    fold_all(uninterrupted, head)
    fold_all(interrupted, head)
    # the checkpoint takes the lines, then snapshots
    assert uninterrupted.take_lines() == interrupted.take_lines()
    restored = _roundtrip(interrupted, taxi())
    assert restored.clock.watermark_ms == uninterrupted.clock.watermark_ms
    assert restored.counts == uninterrupted.counts
    assert fold_all(restored, tail) == fold_all(uninterrupted, tail)
    lines = uninterrupted.take_lines()
    assert lines
    assert restored.take_lines() == lines
    left, right = restored.dump(), uninterrupted.dump()
    assert sorted(map(orjson.dumps, left["windows"])) == sorted(map(orjson.dumps, right["windows"]))
    assert (left["watermark_ms"], left["dedup"], left["counts"]) == (
        right["watermark_ms"],
        right["dedup"],
        right["counts"],
    )
    # readings folded before the snapshot are still duplicates after the restore (with and without seq)
    for reading in head[:: max(1, len(head) // 10)]:
        assert restored.fold(reading, WALL) == DUPLICATE
    assert restored.take_lines() == []
    assert restored.counts[DUPLICATE] == len(head[:: max(1, len(head) // 10)])


def test_taxi_expire() -> None:
    aggregate = taxi()
    for minute in range(16):
        aggregate.fold(fix("taxi-1", BASE + minute * MINUTE + 30_000, 10.0, seq=minute), WALL)
        aggregate.fold(fix("taxi-2", BASE + minute * MINUTE + 30_000, 10.0), WALL)
    aggregate.fold(fix("taxi-2", BASE + 15 * MINUTE, 10.0), WALL)  # watermark: 15:30 -> horizon 5:30
    aggregate.fold(fix("taxi-2", BASE + 5 * MINUTE, 10.0), WALL)  # a stamp at 5:00
    # watermark 15:30: the horizon is 5:30, so the windows ending before it (starts 0:00 .. 4:00) go
    aggregate.take_lines()
    assert aggregate.clock.horizon_ms() == BASE + 5 * MINUTE + 30_000
    aggregate.expire()
    starts = sorted({start for start, _ in aggregate.windows})
    assert starts == [BASE + m * MINUTE for m in range(5, 16)]
    # dedup: stamps before the horizon dropped; the seq interval of taxi-1 (newest ts 15:30) is kept
    assert aggregate.dedup.stamps["taxi-2"] == {BASE + m * MINUTE + 30_000 for m in range(5, 16)} | {BASE + 15 * MINUTE}
    assert aggregate.dedup.seqs["taxi-1"] == [[0, 15, BASE + 15 * MINUTE + 30_000]]
    # a copy of an expired reading is late (no longer known as a duplicate); a copy of a kept one is a duplicate
    assert aggregate.fold(fix("taxi-2", BASE + 4 * MINUTE + 30_000, 10.0), WALL) == LATE
    assert aggregate.fold(fix("taxi-2", BASE + 5 * MINUTE + 30_000, 10.0), WALL) == DUPLICATE
    assert aggregate.take_lines() == []


def test_taxi_expire_at_the_window_end_exactly() -> None:
    aggregate = taxi()
    aggregate.fold(fix("taxi-1", BASE + 1_000, 10.0, seq=0), WALL)
    aggregate.fold(fix("taxi-1", BASE + MINUTE + 1_000, 10.0, seq=1), WALL)
    aggregate.fold(fix("taxi-1", BASE + MINUTE + LATENESS, 10.0, seq=2), WALL)  # horizon = BASE + 1 min
    aggregate.expire()
    assert sorted(start for start, _ in aggregate.windows) == [BASE + MINUTE, BASE + MINUTE + LATENESS]
    aggregate.fold(fix("taxi-1", BASE + MINUTE + LATENESS + 1, 10.0, seq=3), WALL)  # horizon = BASE + 1 min + 1 ms
    aggregate.expire()
    assert sorted(start for start, _ in aggregate.windows) == [BASE + MINUTE, BASE + MINUTE + LATENESS]


def test_taxi_state_stays_bounded() -> None:
    """3 hours, a reading every second from each of 20 taxis; expire() every minute of event time."""
    cells = [cell_of(35.85 + 0.01 * i, 128.60) for i in range(4)]
    aggregate = taxi()
    # windows alive after expire: starts in (horizon - 1 min, watermark], plus one minute of input until the next
    bound_minutes = LATENESS // MINUTE + 3
    bound_windows = bound_minutes * len(cells)
    # dedup: one seq interval per even taxi; odd taxis (no seq) keep a stamp per second since the horizon
    bound_dedup = 10 + 10 * (LATENESS + 2 * MINUTE) // 1_000
    most_windows = most_dedup = 0
    for second in range(3 * 3_600):
        ts = BASE + second * 1_000
        for n in range(20):
            seq = second if n % 2 == 0 else None
            record = TaxiFix(f"taxi-{n}", ts + n, seq, cells[(n + second // 90) % len(cells)], 30.0, "NONE")
            if aggregate.fold(record, WALL) != FOLDED:
                raise AssertionError(record)
        if second % 60 == 59:
            aggregate.take_lines()
            aggregate.expire()
        most_windows = max(most_windows, len(aggregate.windows))
        most_dedup = max(most_dedup, len(aggregate.dedup))
    assert aggregate.counts[FOLDED] == 3 * 3_600 * 20
    assert most_windows <= bound_windows
    assert most_dedup <= bound_dedup
    assert len(aggregate.windows) >= LATENESS // MINUTE * len(cells)  # not over-evicted either
    assert all(len(intervals) == 1 for intervals in aggregate.dedup.seqs.values())
    assert len(orjson.dumps(aggregate.dump())) < 1_000_000


# --- parking_1m ----------------------------------------------------------------------------------


def spot(
    spot_id: str, ts: int, occupied: bool, change: bool = True, seq: int | None = None, lot: str = "lot-1"
) -> SpotReport:
    return SpotReport(f"p-{lot}-{spot_id}", ts, seq, lot, spot_id, occupied, change, 3.6)


def parking(registry: Registry | None = None) -> ParkingLotAggregate:
    return ParkingLotAggregate(POLICY, registry or Registry(parking_lots={"lot-1": LotInfo(capacity=10)}))


PARKING_READINGS = [
    # minute 0
    spot("s1", BASE + 1_000, True, seq=0),
    spot("s1", BASE + 50_000, False, seq=1),  # turned free before the end: free at the end
    spot("s2", BASE + 10_000, True, seq=0),  # its latest state (70 s) is after the end: occupied at the end
    spot("s3", BASE + 20_000, True, change=False),  # a heartbeat: occupied, not a change
    # minute 1
    spot("s5", BASE + MINUTE, True, seq=0),  # first report exactly at minute 0's end: not known at that end
    spot("s4", BASE + 65_000, True, seq=0),  # first report after minute 0's end
    spot("s2", BASE + 70_000, False, seq=1),
    # minute 2: nothing; minute 3
    spot("s1", BASE + 3 * MINUTE + 10_000, True, change=False, seq=2),
    spot("s3", BASE + 3 * MINUTE + 59_999, False, seq=0),
]


def _lot(occupied: int, known: int, capacity: int, changes: int) -> dict[str, Any]:
    return {
        "occupied": occupied,
        "known_spots": known,
        "capacity": capacity,
        "occupancy": occupied / capacity,
        "changes": changes,
    }


def test_parking_lines() -> None:
    aggregate = parking()
    assert fold_all(aggregate, PARKING_READINGS) == [FOLDED] * len(PARKING_READINGS)
    got = by_key(aggregate.take_lines(), "lot_id")
    assert got == {
        ("parking_1m", BASE, "lot-1"): _lot(occupied=2, known=3, capacity=10, changes=3),  # s2, s3 of s1..s3
        ("parking_1m", BASE + MINUTE, "lot-1"): _lot(occupied=3, known=5, capacity=10, changes=3),  # s3, s4, s5
        # no reading in minute 2: no line; minute 3: s1 (heartbeat), s4, s5 occupied; s3 turned free
        ("parking_1m", BASE + 3 * MINUTE, "lot-1"): _lot(occupied=3, known=5, capacity=10, changes=1),
    }
    for fields in got.values():
        assert list(fields) == ["occupied", "known_spots", "capacity", "occupancy", "changes"]
        assert type(fields["occupancy"]) is float
    assert aggregate.take_lines() == []


def test_parking_capacity_defaults_to_known_spots() -> None:
    aggregate = parking()
    readings = [r._replace(lot_id="lot-2", device_id=r.device_id.replace("lot-1", "lot-2")) for r in PARKING_READINGS]
    fold_all(aggregate, readings)
    got = by_key(aggregate.take_lines(), "lot_id")
    assert got[("parking_1m", BASE, "lot-2")] == _lot(occupied=2, known=3, capacity=3, changes=3)
    assert got[("parking_1m", BASE + MINUTE, "lot-2")] == _lot(occupied=3, known=5, capacity=5, changes=3)
    assert got[("parking_1m", BASE, "lot-2")]["occupancy"] == 2 / 3


def test_parking_heartbeat_only_minute_has_a_line_with_no_changes() -> None:
    aggregate = parking()
    aggregate.fold(spot("s1", BASE + 1_000, True, change=False), WALL)
    assert by_key(aggregate.take_lines(), "lot_id") == {
        ("parking_1m", BASE, "lot-1"): _lot(occupied=1, known=1, capacity=10, changes=0)
    }


def test_parking_late_reading_revises_its_window_and_later_ones() -> None:
    aggregate = parking()
    fold_all(aggregate, PARKING_READINGS)
    aggregate.take_lines()
    # s1 turned occupied again at 55 s (reported late, well within the maximum lateness)
    assert aggregate.fold(spot("s1", BASE + 55_000, True, seq=3), WALL) == FOLDED
    got = by_key(aggregate.take_lines(), "lot_id")
    assert got == {
        ("parking_1m", BASE, "lot-1"): _lot(occupied=3, known=3, capacity=10, changes=4),
        ("parking_1m", BASE + MINUTE, "lot-1"): _lot(occupied=4, known=5, capacity=10, changes=3),
        ("parking_1m", BASE + 3 * MINUTE, "lot-1"): _lot(occupied=3, known=5, capacity=10, changes=1),
    }
    # a late reading in the empty minute 2 gives it a line, and revises minute 3 (s6 is known at its end)
    assert aggregate.fold(spot("s6", BASE + 2 * MINUTE + 5_000, True), WALL) == FOLDED
    got = by_key(aggregate.take_lines(), "lot_id")
    assert got == {
        ("parking_1m", BASE + 2 * MINUTE, "lot-1"): _lot(occupied=5, known=6, capacity=10, changes=1),
        ("parking_1m", BASE + 3 * MINUTE, "lot-1"): _lot(occupied=4, known=6, capacity=10, changes=1),
    }


def test_parking_late_and_duplicate_readings() -> None:
    aggregate = parking()
    fold_all(aggregate, PARKING_READINGS)
    aggregate.fold(spot("s9", BASE + 20 * MINUTE, False, seq=0), WALL)
    aggregate.take_lines()
    assert aggregate.fold(spot("s1", BASE + 10 * MINUTE - 1, True, seq=9), WALL) == LATE
    assert aggregate.fold(spot("s3", BASE + 20_000, False, change=False), WALL) == DUPLICATE  # same device + ts
    assert aggregate.fold(spot("s2", BASE + 40_000, False, seq=1), WALL) == DUPLICATE  # same device + seq
    assert aggregate.take_lines() == []
    assert aggregate.counts == {FOLDED: len(PARKING_READINGS) + 1, DUPLICATE: 2, LATE: 1}


def test_parking_snapshot_restore() -> None:
    head, tail = PARKING_READINGS[:5], [*PARKING_READINGS[5:], spot("s1", BASE + 55_000, True, seq=3)]
    uninterrupted, interrupted = parking(), parking()
    fold_all(uninterrupted, head)
    fold_all(interrupted, head)
    assert uninterrupted.take_lines() == interrupted.take_lines()
    restored = _roundtrip(interrupted, parking())
    assert fold_all(restored, tail) == fold_all(uninterrupted, tail)
    assert restored.take_lines() == uninterrupted.take_lines()
    assert restored.fold(head[0], WALL) == DUPLICATE
    assert restored.fold(head[3], WALL) == DUPLICATE  # no seq: by ts


def test_parking_expire_keeps_each_spots_state() -> None:
    aggregate = parking()
    aggregate.fold(spot("s1", BASE + 1_000, True, seq=0), WALL)
    aggregate.fold(spot("s2", BASE + 2_000, False, seq=0), WALL)
    aggregate.fold(spot("s1", BASE + 2 * MINUTE, False, seq=1), WALL)
    aggregate.fold(spot("s1", BASE + 3 * MINUTE, True, seq=2), WALL)
    aggregate.fold(spot("s3", BASE + 30 * MINUTE, True, seq=0), WALL)  # horizon: BASE + 20 min
    aggregate.take_lines()
    aggregate.expire()
    lot = aggregate.lots["lot-1"]
    assert sorted(lot.changes) == [BASE + 30 * MINUTE]
    # the spots' states before the horizon are reduced to the last one, still known at later ends
    assert lot.spots["s1"] == [[BASE + 3 * MINUTE, True]]
    assert lot.state_at(BASE + 31 * MINUTE) == (2, 3)
    aggregate.fold(spot("s2", BASE + 25 * MINUTE, True, seq=1), WALL)
    got = by_key(aggregate.take_lines(), "lot_id")
    assert got == {
        ("parking_1m", BASE + 25 * MINUTE, "lot-1"): _lot(occupied=2, known=2, capacity=10, changes=1),
        ("parking_1m", BASE + 30 * MINUTE, "lot-1"): _lot(occupied=3, known=3, capacity=10, changes=1),
    }


# --- environment_1m / environment_1h -------------------------------------------------------------


def sample(
    ts: int, seq: int | None = None, device: str = "env-1", district: str = "jung gu", **values: float
) -> StationSample:
    return StationSample(device, ts, seq, district, values)


def station() -> StationAggregate:
    return StationAggregate(POLICY, Registry())


def _stats(*values: float) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def _fields(readings: int, **stats: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"readings": readings}
    for name, values in stats.items():
        for suffix, value in values.items():
            out[f"{name}_{suffix}"] = value
    return out


ENV_HOUR_1 = [
    sample(BASE + 10 * MINUTE + 5_000, 0, pm25_ugm3=30.0, o3_ppm=0.11, temp_c=2.5),
    sample(BASE + 10 * MINUTE + 35_000, 1, pm25_ugm3=50.0, o3_ppm=0.13),
    sample(BASE + 20 * MINUTE, 2, temp_c=1.5, noise_dba=55.0),
]
ENV_HOUR_2 = [
    sample(BASE + HOUR + 1 * MINUTE, 3, pm25_ugm3=10.0),
    sample(BASE + HOUR + 2 * MINUTE, 4, pm25_ugm3=14.0),
    sample(BASE + HOUR + 3 * MINUTE, 5, pm25_ugm3=15.0),
    sample(BASE + HOUR + 4 * MINUTE, 6, pm25_ugm3=21.0),
]
ENV_HOUR_3 = [
    sample(BASE + 2 * HOUR + MINUTE, 7, temp_c=0.5),
    sample(BASE + 2 * HOUR + 2 * MINUTE, 8, noise_dba=60.0),
]


def test_environment_minute_lines() -> None:
    aggregate = station()
    fold_all(aggregate, ENV_HOUR_1)
    lines = aggregate.take_lines()
    assert any(r"district=jung\ gu" in line for line in lines)
    got = {k: v for k, v in by_key(lines, "device_id", "district").items() if k[0] == "environment_1m"}
    assert got == {
        ("environment_1m", BASE + 10 * MINUTE, "env-1", "jung gu"): _fields(
            2, pm25_ugm3=_stats(30.0, 50.0), o3_ppm=_stats(0.11, 0.13), temp_c=_stats(2.5)
        ),
        ("environment_1m", BASE + 20 * MINUTE, "env-1", "jung gu"): _fields(
            1, temp_c=_stats(1.5), noise_dba=_stats(55.0)
        ),
    }


def test_environment_lines_per_device_and_district() -> None:
    aggregate = station()
    fold_all(
        aggregate,
        [
            sample(BASE + 1_000, device="env-1", district="jung", temp_c=1.0),
            sample(BASE + 2_000, device="env-2", district="jung", temp_c=2.0),
            sample(BASE + 3_000, device="env-1", district="dong gu", temp_c=3.0),
            sample(BASE + 4_000, device="env-1", district="jung", temp_c=5.0),
        ],
    )
    got = by_key(aggregate.take_lines(), "device_id", "district")
    assert got == {
        ("environment_1m", BASE, "env-1", "jung"): _fields(2, temp_c=_stats(1.0, 5.0)),
        ("environment_1m", BASE, "env-2", "jung"): _fields(1, temp_c=_stats(2.0)),
        ("environment_1m", BASE, "env-1", "dong gu"): _fields(1, temp_c=_stats(3.0)),
        ("environment_1h", BASE, "env-1", "jung"): _fields(2, temp_c=_stats(1.0, 5.0)),
        ("environment_1h", BASE, "env-2", "jung"): _fields(1, temp_c=_stats(2.0)),
        ("environment_1h", BASE, "env-1", "dong gu"): _fields(1, temp_c=_stats(3.0)),
    }


def _hours(lines: list[str]) -> dict[int, dict[str, Any]]:
    return {
        time: fields
        for (measurement, time, _, _), fields in by_key(lines, "device_id", "district").items()
        if measurement == "environment_1h"
    }


HOUR_1_FIELDS = _fields(
    3, pm25_ugm3=_stats(30.0, 50.0), o3_ppm=_stats(0.11, 0.13), temp_c=_stats(2.5, 1.5), noise_dba=_stats(55.0)
)
HOUR_2_FIELDS = _fields(4, pm25_ugm3=_stats(10.0, 14.0, 15.0, 21.0))


def test_hour_cai_values_by_hand() -> None:
    """The expected CAI values below, checked against the breakpoints independently of the aggregate."""
    # hour 1: O3 hourly mean 0.12 ppm -> 101 + 149 / 0.059 * 0.029 = 174.2; PM2.5 40 -> 101 + 149 / 39 * 4 = 116.3
    assert sub_index("o3_ppm", 0.12) == 174
    assert sub_index("pm25_ugm3", 40.0) == 116
    # hour 2: PM2.5 24-h mean = mean of the hourly means (40 + 15) / 2 = 27.5 -> 51 + 49 / 19 * 11 = 79.4
    # (this hour alone, 15, would give 50; the mean of all six readings, 23.3, would give 69)
    assert sub_index("pm25_ugm3", 27.5) == 79
    assert sub_index("pm25_ugm3", 15.0) == 50
    assert sub_index("pm25_ugm3", 140 / 6) == 69


@pytest.mark.parametrize("take_between_hours", [True, False])
def test_environment_hour_lines_and_cai(take_between_hours: bool) -> None:
    aggregate = station()
    fold_all(aggregate, ENV_HOUR_1)
    lines = aggregate.take_lines() if take_between_hours else []
    fold_all(aggregate, ENV_HOUR_2 + ENV_HOUR_3)
    lines += aggregate.take_lines()
    hours = _hours(lines)
    assert hours == {
        BASE: {**HOUR_1_FIELDS, "cai": 174, "cai_grade": "unhealthy", "cai_pollutant": "o3_ppm"},
        BASE + HOUR: {**HOUR_2_FIELDS, "cai": 79, "cai_grade": "moderate", "cai_pollutant": "pm25_ugm3"},
        # temp / noise only: no cai fields
        BASE + 2 * HOUR: _fields(2, temp_c=_stats(0.5), noise_dba=_stats(60.0)),
    }
    hour_1 = next(line for line in lines if line.startswith("environment_1h") and line.endswith(f" {BASE}"))
    assert ",cai=174i," in hour_1
    assert 'cai_grade="unhealthy"' in hour_1
    assert 'cai_pollutant="o3_ppm"' in hour_1
    # the same values as the CAI module computes from the hourly gas means and the PM 24-hour means
    expected = comprehensive_index({}, {"pm25_ugm3": pm_24h_mean({BASE: 40.0, BASE + HOUR: 15.0}, BASE + HOUR)})
    assert expected is not None
    assert (expected.cai, expected.grade, expected.pollutant) == (79, "moderate", "pm25_ugm3")


def test_environment_late_pm_revises_the_hour_and_the_next() -> None:
    aggregate = station()
    fold_all(aggregate, ENV_HOUR_1 + ENV_HOUR_2)
    aggregate.take_lines()
    # 5 minutes behind the watermark (BASE + 1 h 4 min): the first hour is final but revised, and so is the second
    # hour, whose PM2.5 24-hour mean includes the first hour's mean
    assert aggregate.fold(sample(BASE + 59 * MINUTE, 9, pm25_ugm3=100.0), WALL) == FOLDED
    lines = aggregate.take_lines()
    minutes = [key for key in by_key(lines, "device_id", "district") if key[0] == "environment_1m"]
    assert minutes == [("environment_1m", BASE + 59 * MINUTE, "env-1", "jung gu")]
    # hour 1: PM2.5 mean (30 + 50 + 100) / 3 = 60 -> 193 > O3 174; hour 2: (60 + 15) / 2 = 37.5 -> 105
    assert _hours(lines) == {
        BASE: {
            **HOUR_1_FIELDS, "readings": 4, **{f"pm25_ugm3_{k}": v for k, v in _stats(30.0, 50.0, 100.0).items()},
            "cai": 193, "cai_grade": "unhealthy", "cai_pollutant": "pm25_ugm3",
        },
        BASE + HOUR: {**HOUR_2_FIELDS, "cai": 105, "cai_grade": "unhealthy", "cai_pollutant": "pm25_ugm3"},
    }  # fmt: skip


def test_environment_duplicates_and_late() -> None:
    aggregate = station()
    fold_all(aggregate, ENV_HOUR_1 + ENV_HOUR_2)
    aggregate.take_lines()
    assert aggregate.fold(sample(BASE + 10 * MINUTE + 5_000, 0, pm25_ugm3=999.0), WALL) == DUPLICATE
    assert aggregate.fold(sample(BASE + 54 * MINUTE - 1, pm25_ugm3=999.0), WALL) == LATE
    assert aggregate.fold(sample(BASE + 2 * HOUR, pm25_ugm3=5.0), WALL) == FOLDED
    assert aggregate.fold(sample(BASE + 2 * HOUR, pm25_ugm3=999.0), WALL) == DUPLICATE  # no seq: same ts
    assert aggregate.counts == {FOLDED: 8, DUPLICATE: 2, LATE: 1}


def test_environment_snapshot_restore() -> None:
    head, tail = ENV_HOUR_1 + ENV_HOUR_2[:2], [*ENV_HOUR_2[2:], *ENV_HOUR_3, sample(BASE + HOUR, 20, pm25_ugm3=90.0)]
    uninterrupted, interrupted = station(), station()
    fold_all(uninterrupted, head)
    fold_all(interrupted, head)
    assert uninterrupted.take_lines() == interrupted.take_lines()
    restored = _roundtrip(interrupted, station())
    assert fold_all(restored, tail) == fold_all(uninterrupted, tail)
    assert restored.take_lines() == uninterrupted.take_lines()
    assert restored.fold(head[0], WALL) == DUPLICATE


def test_environment_expire() -> None:
    aggregate = station()
    fold_all(aggregate, ENV_HOUR_1 + ENV_HOUR_2 + ENV_HOUR_3)
    aggregate.take_lines()
    # watermark BASE + 2 h 2 min, horizon BASE + 1 h 52 min: the first hour (ending at BASE + 1 h) goes, the
    # second (ending at BASE + 2 h) stays; of the minutes only those of the third hour stay
    aggregate.expire()
    assert sorted(start for start, _ in aggregate.hours) == [BASE + HOUR, BASE + 2 * HOUR]
    assert sorted(start for start, _ in aggregate.minutes) == [BASE + 2 * HOUR + MINUTE, BASE + 2 * HOUR + 2 * MINUTE]
    # the hourly PM means stay for the 24-hour means of the hours still open
    assert aggregate.pm_hourly[("env-1", "jung gu")]["pm25_ugm3"] == {BASE: 40.0, BASE + HOUR: 15.0}


def test_taxi_snapshot_made_from_cached_windows_equals_a_fresh_one() -> None:
    """A window's part of the snapshot is made again only when it changed: the snapshot stays the
    same as one made from scratch, through folds, lines taken, expiry and a restore."""
    rng = random.Random(7)
    aggregate = taxi()
    events = ["NONE", "FCW", "PCW", "POTHOLE", "LDW_L"]
    for step in range(40):
        for _ in range(25):
            ts = BASE + step * 30_000 + rng.randrange(60_000)
            cell = rng.choice([CELL_A, CELL_B])
            aggregate.fold(
                fix(f"taxi-{rng.randrange(9)}", ts, rng.uniform(0, 80), rng.choice(events), None, cell), WALL
            )
        aggregate.take_lines()
        if step % 7 == 6:
            aggregate.expire()
        fresh = taxi()
        fresh.load(orjson.loads(orjson.dumps(aggregate.dump())))
        mine, theirs = (orjson.loads(orjson.dumps(a.dump())) for a in (aggregate, fresh))
        mine["windows"].sort()
        theirs["windows"].sort()
        assert mine == theirs
        reference = sorted(
            [start, cell, w.readings, sorted(w.taxis), w.speed.dump(), w.counts, w.collisions, sorted(w.hazards)]
            for (start, cell), w in aggregate.windows.items()
        )
        assert sorted(orjson.loads(orjson.dumps(aggregate.dump()["windows"]))) == orjson.loads(orjson.dumps(reference))
    assert len(aggregate.windows) < 2 * 40  # expiry dropped windows, and their snapshot parts
    assert set(aggregate._dumped) == set(aggregate.windows)
