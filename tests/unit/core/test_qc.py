"""The data-quality tests (streams/core/qc.py): each test on its edges, gaps, readings out of order,
what the station windows write of them, and the device.stuck alert they lead to."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from schemas.timestamps import format_ms_seconds
from streams.core.qc import (
    FAIL,
    PASS,
    SUSPECT,
    Flags,
    QcPolicy,
    StationQc,
    level,
    range_flags,
)
from streams.core.qc import (
    tests_text as qc_tests,
)
from streams.core.windows import FOLDED, LATE, WindowPolicy
from streams.kinds.environment import StationAggregate, StationSample
from streams.rules.book import AlertBook
from streams.rules.finals import StationMinute
from streams.rules.partition import StationPartitionRules
from streams.rules.policy import DEVICE_STUCK, AlertPolicy
from streams.rules.stuck import StuckRules

MINUTE = 60_000
T0 = 1_795_294_800_000  # an hour's start
POLICY = QcPolicy()


def run(values: list[tuple[int, float]], name: str = "pm25_ugm3", policy: QcPolicy = POLICY) -> dict[int, Flags]:
    """Every reading's final flags after adding ``(minute, value)`` readings in the given order."""
    station = StationQc()
    final: dict[int, Flags] = {}
    for minute, value in values:
        final.update(station.add(T0 + minute * MINUTE, "jung", {name: value}, policy))
    return {(t - T0) // MINUTE: flags for t, flags in sorted(final.items())}


def flagged(values: list[tuple[int, float]], **kwargs: Any) -> dict[int, str]:
    return {minute: qc_tests(flags) for minute, flags in run(values, **kwargs).items() if flags}


def steps(*values: float) -> list[tuple[int, float]]:
    return list(enumerate(values))


# ----------------------------------------------------------------------------- the tests, one by one


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # the contract's example: 350 jumps from 19 and falls back to 20
        (steps(18, 19, 350, 20), {2: "pm25_ugm3:spike"}),
        # a trough, the other way
        (steps(200, 201, 5, 199), {2: "pm25_ugm3:spike"}),
        # a step the next reading confirms is no spike
        (steps(18, 19, 350, 351), {}),
        # a jump of exactly the threshold (100) is no spike; just above it is
        (steps(20, 120, 20), {}),
        (steps(20, 120.5, 20), {1: "pm25_ugm3:spike"}),
        # the last reading has no next neighbour yet: not decided
        (steps(18, 19, 350), {}),
        # the first reading has no previous one
        (steps(350, 20, 21), {}),
    ],
)
def test_spike(values: list[tuple[int, float]], expected: dict[int, str]) -> None:
    assert flagged(values) == expected


def test_a_spike_is_flagged_one_reading_late() -> None:
    station = StationQc()
    changed = [station.add(T0 + i * MINUTE, "jung", {"pm25_ugm3": v}, POLICY) for i, v in enumerate([18, 19, 350])]
    assert changed[2] == {T0 + 2 * MINUTE: {}}  # 350 passes, for now
    # the next reading decides: 350's flags change, and the 20 itself passes
    assert station.add(T0 + 3 * MINUTE, "jung", {"pm25_ugm3": 20}, POLICY) == {
        T0 + 2 * MINUTE: {"pm25_ugm3:spike": SUSPECT},
        T0 + 3 * MINUTE: {},
    }


def test_neighbours_beyond_the_gap_are_not_compared() -> None:
    # 350 an hour and a minute after 19: no previous neighbour for the spike and rate tests
    assert flagged([(0, 18), (1, 19), (62, 350), (63, 20)]) == {}
    # within the hour, compared
    assert flagged([(0, 18), (1, 19), (60, 350), (61, 20)]) == {60: "pm25_ugm3:spike"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (steps(500, 500.5), {1: "pm25_ugm3:user_range"}),  # above 500 µg/m³
        ([(0, 0), (10, 500)], {}),  # the edges are in range
    ],
)
def test_user_range(values: list[tuple[int, float]], expected: dict[int, str]) -> None:
    policy = QcPolicy(flat_suspect_ms=10**12, flat_fail_ms=10**12)
    assert flagged(values, policy=policy) == expected


def test_user_range_of_other_measurements() -> None:
    assert range_flags({"o3_ppm": 0.6, "temp_c": 20.0, "noise_dba": 10.0}, POLICY) == {
        "o3_ppm:user_range": SUSPECT,
        "noise_dba:user_range": SUSPECT,
    }


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # 400 µg/m³ a minute is the limit: at it passes, above it is suspect (and the step stays)
        ([(0, 10), (1, 410), (2, 411)], {}),
        ([(0, 10), (1, 410.5), (2, 411)], {1: "pm25_ugm3:rate_of_change"}),
        # the same change over two minutes is within the rate
        ([(0, 10), (2, 410.5), (3, 411)], {}),
        # within a minute it counts as a minute's change
        ([(0, 10), (0.5, 410.5), (1, 411)], {0.5: "pm25_ugm3:rate_of_change"}),
    ],
)
def test_rate_of_change(values: list[tuple[float, float]], expected: dict[float, str]) -> None:
    station = StationQc()
    final: dict[int, Flags] = {}
    for minute, value in values:
        final.update(station.add(T0 + int(minute * MINUTE), "jung", {"pm25_ugm3": value}, POLICY))
    got = {(t - T0) / MINUTE: qc_tests(f) for t, f in final.items() if f}
    assert got == expected


def test_flat_line_suspect_at_30_minutes_and_fail_at_2_hours() -> None:
    # one value every minute for 130 minutes
    flags = run([(m, 12.0) for m in range(131)])
    assert all(flags[m] == {} for m in range(30))
    assert all(flags[m] == {"pm25_ugm3:flat_line": SUSPECT} for m in range(30, 120))
    assert all(flags[m] == {"pm25_ugm3:flat_line": FAIL} for m in range(120, 131))
    assert level(flags[120]) == FAIL and level(flags[30]) == SUSPECT and level(flags[0]) == PASS


def test_a_station_repeating_one_value_for_40_minutes_is_suspect() -> None:
    flags = run([(0, 20.0), *[(m, 31.0) for m in range(1, 42)], (42, 25.0)])
    assert {m for m, f in flags.items() if f} == set(range(31, 42))  # from 30 minutes after minute 1
    assert flags[42] == {}  # varies again


def test_flat_line_goes_on_across_a_gap_and_ends_at_a_change() -> None:
    # the same value before and after three silent hours: still the same value
    assert flagged([(0, 5.0), (200, 5.0)]) == {200: "pm25_ugm3:flat_line"}
    # a tolerance lets close values count as one
    policy = QcPolicy(limits={"pm25_ugm3": POLICY.limits["pm25_ugm3"].__class__(0, 500, 100, 400, 0.5)})
    assert flagged([(m, 5.0 + (m % 2) * 0.5) for m in range(31)], policy=policy)[30] == "pm25_ugm3:flat_line"
    assert flagged([(m, 5.0 + (m % 2) * 0.6) for m in range(31)], policy=policy) == {}


def test_out_of_order_readings_take_their_place() -> None:
    values = [18.0, 19.0, 350.0, 20.0, 21.0, 22.0]
    in_order = run(steps(*values))
    # the 350 arrives after its successors; the 19 last of all
    shuffled = [(0, 18.0), (2, 350.0), (3, 20.0), (4, 21.0), (5, 22.0), (1, 19.0)]
    assert run(shuffled) == in_order
    # a reading that arrives late between a flat run's readings breaks the run for the later ones
    flat = [(m, 7.0) for m in range(40) if m != 10]
    assert flagged(flat)[39] == "pm25_ugm3:flat_line"
    assert flagged([*flat, (10, 9.0)]).get(39) is None  # the run now starts at minute 11


@pytest.mark.parametrize("seed", range(5))
def test_the_flags_do_not_depend_on_the_order_within_lateness(seed: int) -> None:
    rng = random.Random(seed)
    values = [(m, float(rng.choice([10, 10, 10, 11, 150, 300]))) for m in range(90)]
    expected = run(values)
    shuffled = values[:]
    # disorder within 8 minutes
    for i in range(len(shuffled) - 1):
        j = min(len(shuffled) - 1, i + rng.randrange(8))
        if abs(shuffled[i][0] - shuffled[j][0]) < 8:
            shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
    assert run(shuffled) == expected


def test_state_is_bounded_and_survives_a_snapshot() -> None:
    station = StationQc()
    for m in range(600):  # ten hours of a varying signal
        station.add(T0 + m * MINUTE, "jung", {"pm25_ugm3": float(m % 7), "temp_c": 20.0}, POLICY)
        station.prune(T0 + (m - 10) * MINUTE, POLICY)
    # the varying signal keeps a couple of readings; the flat one its last two hours
    # (and what is after the horizon: ten minutes here)
    assert len(station.series["pm25_ugm3"].times) <= 10 + 3
    assert len(station.series["temp_c"].times) <= 2 * 60 + 12
    restored = StationQc.load(orjson.loads(orjson.dumps(station.dump())))
    t = T0 + 600 * MINUTE
    assert restored.add(t, "jung", {"pm25_ugm3": 3.0, "temp_c": 20.0}, POLICY) == station.add(
        t, "jung", {"pm25_ugm3": 3.0, "temp_c": 20.0}, POLICY
    )


# ----------------------------------------------------------------------------- the station windows


def env(ts: int, **measurements: float) -> StationSample:
    return StationSample("env-q", ts, None, "jung", measurements)


def qc_points(lines: list[str]) -> dict[int, str]:
    """The qc fields of the raw points, by minute, the last line of each winning."""
    out = {}
    for line in lines:
        if line.startswith("environment,"):
            _, fields, ts = line.rsplit(" ", 2)
            out[(int(ts) - T0) // MINUTE] = fields
    return out


def test_the_windows_write_the_raw_points_qc_and_count_flagged_readings() -> None:
    aggregate = StationAggregate(WindowPolicy())
    lines: list[str] = []
    for minute, value in enumerate([18, 19, 350, 20]):
        assert aggregate.fold(env(T0 + minute * MINUTE, pm25_ugm3=value), T0) == FOLDED
        lines += aggregate.take_lines()
    points = qc_points(lines)
    assert points == {0: "qc=1i", 1: "qc=1i", 2: 'qc=3i,qc_tests="pm25_ugm3:spike"', 3: "qc=1i"}
    hour = [line for line in lines if line.startswith("environment_1h,")][-1]
    assert "readings=4i" in hour and "qc_suspect=1i,qc_fail=0i" in hour
    minute_2 = [line for line in lines if line.startswith("environment_1m,") and line.endswith(str(T0 + 2 * MINUTE))]
    assert "qc_suspect=1i" in minute_2[-1]


def test_a_reading_flagged_before_and_passing_now_has_its_qc_tests_emptied() -> None:
    aggregate = StationAggregate(WindowPolicy())
    for minute, value in [(0, 18), (1, 19), (2, 350), (4, 20)]:
        aggregate.fold(env(T0 + minute * MINUTE, pm25_ugm3=value), T0)
    lines = aggregate.take_lines()
    assert qc_points(lines)[2] == 'qc=3i,qc_tests="pm25_ugm3:spike"'
    # a reading arrives between 350 and 20, confirming the step: 350 is no spike any more
    aggregate.fold(env(T0 + 3 * MINUTE, pm25_ugm3=349), T0)
    assert qc_points(aggregate.take_lines())[2] == 'qc=1i,qc_tests=""'


def test_a_late_reading_is_flagged_by_its_range_only() -> None:
    aggregate = StationAggregate(WindowPolicy())
    aggregate.fold(env(T0 + 60 * MINUTE, pm25_ugm3=10), T0)
    aggregate.take_lines()
    assert aggregate.fold(env(T0, pm25_ugm3=600), T0) == LATE
    assert qc_points(aggregate.take_lines()) == {0: 'qc=3i,qc_tests="pm25_ugm3:user_range"'}


def test_station_windows_snapshot_with_their_flags() -> None:
    aggregate = StationAggregate(WindowPolicy())
    for minute in range(35):
        aggregate.fold(env(T0 + minute * MINUTE, pm25_ugm3=12.0), T0)
    aggregate.take_lines()
    restored = StationAggregate(WindowPolicy())
    restored.load(orjson.loads(orjson.dumps(aggregate.dump())))
    for each in (aggregate, restored):
        each.fold(env(T0 + 35 * MINUTE, pm25_ugm3=12.0), T0)
    assert aggregate.take_lines() == restored.take_lines()


# ----------------------------------------------------------------------------- device.stuck


def minute(start: int, stuck: dict[str, int], varied: set[str]) -> StationMinute:
    return StationMinute("env-q", "jung", T0 + start * MINUTE, T0 + (start + 1) * MINUTE, stuck, frozenset(varied))


def test_stuck_raises_once_and_clears_once_the_measurement_varies() -> None:
    book, rules, fail = AlertBook(), StuckRules(), 2 * 60 * MINUTE
    raised = rules.on_final_minute(book, minute(120, {"pm25_ugm3": 120 * MINUTE}, set()), fail, T0)
    assert [(a.kind, a.status, a.subject.type, a.value, a.threshold) for a in raised] == [
        (DEVICE_STUCK, "raised", "device", 7200.0, 7200.0)
    ]
    assert "pm25_ugm3 unchanged for 2 h" in raised[0].message
    assert rules.on_final_minute(book, minute(121, {"pm25_ugm3": 121 * MINUTE}, set()), fail, T0) == []
    # another measurement varying does not clear it
    assert rules.on_final_minute(book, minute(122, {"pm25_ugm3": 122 * MINUTE}, {"temp_c"}), fail, T0) == []
    # a minute without the stuck measurement changes nothing
    assert rules.on_final_minute(book, minute(123, {}, {"temp_c"}), fail, T0) == []
    (cleared,) = rules.on_final_minute(book, minute(124, {}, {"pm25_ugm3", "temp_c"}), fail, T0)
    assert (cleared.status, cleared.alert_id) == ("cleared", raised[0].alert_id)
    assert cleared.message == "Environment station env-q: pm25_ugm3 varies again"
    restored = StuckRules.load(orjson.loads(orjson.dumps(rules.dump())))
    assert restored.stuck == rules.stuck == {}


def test_a_flat_station_raises_device_stuck_from_its_final_minutes() -> None:
    aggregate = StationAggregate(WindowPolicy())
    rules = StationPartitionRules(AlertPolicy())
    alerts = []
    for m in range(140):
        value = 12.0 if m < 130 else 12.0 + m  # stuck for 130 minutes, then varies
        aggregate.fold(env(T0 + m * MINUTE, pm25_ugm3=value), T0 + m * MINUTE)
        alerts += rules.evaluate(aggregate, None, True, T0 + m * MINUTE)
    stuck = [(a.status, a.window_start) for a in alerts if a.kind == DEVICE_STUCK]
    # raised by the minute whose reading is 2 hours into the flat run, cleared by the first that varies
    assert stuck == [
        ("raised", format_ms_seconds(T0 + 120 * MINUTE)),
        ("cleared", format_ms_seconds(T0 + 130 * MINUTE)),
    ]


# ----------------------------------------------------------------------------- settings


def test_citystream_qc_overrides_the_defaults_and_refuses_unknown_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.settings import ConfigError, load_settings

    monkeypatch.setenv("CITYSTREAM_QC", '{"pm25_ugm3": {"spike": 80}, "flat_suspect_min": 45}')
    policy = load_settings().qc_policy()
    assert policy.limits["pm25_ugm3"].spike == 80 and policy.limits["pm25_ugm3"].high == 500
    assert policy.flat_suspect_ms == 45 * MINUTE and policy.flat_fail_ms == 120 * MINUTE
    for bad, why in [
        ('{"pm99": {}}', "unknown name pm99"),
        ('{"pm25_ugm3": {"spikes": 1}}', "unknown spikes"),
        ('{"pm25_ugm3": {"low": 10, "high": 5}}', "low <= high"),
        ('{"flat_suspect_min": 200}', "must not exceed"),
    ]:
        monkeypatch.setenv("CITYSTREAM_QC", bad)
        with pytest.raises(ConfigError, match="CITYSTREAM_QC") as error:
            load_settings()
        assert why in str(error.value)
