"""Event-time building blocks (contract section 3): windows, stats, the event clock, duplicates."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime

import orjson
import pytest

from streams.core.windows import Dedup, EventClock, Stats, WindowPolicy, window_start

MINUTE = 60_000
HOUR = 3_600_000
# 2026-11-21T21:00:00Z, an hour boundary
BASE = 1_795_294_800_000
POLICY = WindowPolicy()
GRACE = POLICY.grace_ms
LATENESS = POLICY.max_lateness_ms


def _utc(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, UTC)


# --- window_start --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "size", "start"),
    [
        (0, MINUTE, 0),
        (1, MINUTE, 0),
        (59_999, MINUTE, 0),
        (60_000, MINUTE, 60_000),
        (60_001, MINUTE, 60_000),
        (119_999, MINUTE, 60_000),
        (3_599_999, HOUR, 0),
        (3_600_000, HOUR, 3_600_000),
        (3_600_001, HOUR, 3_600_000),
        (-1, MINUTE, -60_000),  # before the epoch: still aligned to UTC minutes, not rounded towards zero
        (BASE, MINUTE, BASE),
        (BASE, HOUR, BASE),
        (BASE - 1, MINUTE, BASE - MINUTE),
        (BASE - 1, HOUR, BASE - HOUR),
        (BASE + 59_999, MINUTE, BASE),
        (BASE + 60_000, MINUTE, BASE + MINUTE),
        (BASE + 61_234, MINUTE, BASE + MINUTE),
        (BASE + 3_599_999, HOUR, BASE),
        (BASE + 3_600_000, HOUR, BASE + HOUR),
        (BASE + 3_600_000 + 59 * MINUTE + 59_999, HOUR, BASE + HOUR),
    ],
)
def test_window_start(ts: int, size: int, start: int) -> None:
    assert window_start(ts, size) == start


def test_base_is_a_real_utc_hour() -> None:
    assert _utc(BASE) == datetime(2026, 11, 21, 21, 0, 0, tzinfo=UTC)
    assert BASE % HOUR == 0


@pytest.mark.parametrize("ts", [1_795_296_012_345, 1_795_299_599_999, 1_767_225_600_000, 1_798_761_599_999])
def test_window_start_matches_utc_calendar(ts: int) -> None:
    """The start is the UTC minute / hour of the instant, as a calendar computes it."""
    moment = _utc(ts)
    assert _utc(window_start(ts, MINUTE)) == moment.replace(second=0, microsecond=0)
    assert _utc(window_start(ts, HOUR)) == moment.replace(minute=0, second=0, microsecond=0)


# --- Stats ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "count", "mean", "low", "high"),
    [
        ([5.0], 1, 5.0, 5.0, 5.0),
        ([3.0, 1.0, 2.0], 3, 2.0, 1.0, 3.0),
        ([-4.5, 0.0, 4.5, 10.0], 4, 2.5, -4.5, 10.0),
        ([0.0, 0.0], 2, 0.0, 0.0, 0.0),
        ([7.0, 7.0, 7.0, 1.0], 4, 5.5, 1.0, 7.0),
    ],
)
def test_stats(values: list[float], count: int, mean: float, low: float, high: float) -> None:
    stats = Stats()
    for value in values:
        stats.add(value)
    assert (stats.count, stats.mean, stats.low, stats.high) == (count, mean, low, high)
    assert stats.total == sum(values)


def test_stats_empty() -> None:
    stats = Stats()
    assert (stats.count, stats.total, stats.low, stats.high) == (0, 0.0, math.inf, -math.inf)
    with pytest.raises(ZeroDivisionError):
        _ = stats.mean


@pytest.mark.parametrize("values", [[1.0], [2.5, -1.25, 100.0], [0.1, 0.2, 0.3]])
def test_stats_dump_load_round_trip(values: list[float]) -> None:
    stats = Stats()
    for value in values:
        stats.add(value)
    for data in (stats.dump(), orjson.loads(orjson.dumps(stats.dump()))):
        restored = Stats.load(data)
        assert restored == stats
        assert (restored.count, restored.total, restored.low, restored.high) == (
            stats.count,
            stats.total,
            stats.low,
            stats.high,
        )
        restored.add(1000.0)
        stats_copy = Stats.load(stats.dump())
        stats_copy.add(1000.0)
        assert restored == stats_copy
        assert restored != stats


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ([1.0, 2.0], [2.0, 1.0], True),
        ([1.0, 2.0], [1.0, 2.0], True),
        ([1.0, 2.0], [1.0, 2.0, 2.0], False),
        ([1.0, 3.0], [2.0, 2.0], False),  # same count and total, different min/max
        ([], [], True),
    ],
)
def test_stats_equality(a: list[float], b: list[float], equal: bool) -> None:
    left, right = Stats(), Stats()
    for value in a:
        left.add(value)
    for value in b:
        right.add(value)
    assert (left == right) is equal
    assert left != [left.count, left.total, left.low, left.high]  # not equal to its dump


# --- EventClock ----------------------------------------------------------------------------------


def test_watermark_only_grows() -> None:
    clock = EventClock(POLICY)
    assert clock.watermark_ms is None
    assert clock.horizon_ms() is None
    seen = []
    for ts in (BASE + 5_000, BASE + 1_000, BASE + 5_000, BASE + 9_000, BASE, BASE + 8_999):
        clock.observe(ts, wall_ms=BASE)
        seen.append(clock.watermark_ms)
    assert seen == [BASE + 5_000, BASE + 5_000, BASE + 5_000, BASE + 9_000, BASE + 9_000, BASE + 9_000]
    assert clock.horizon_ms() == BASE + 9_000 - LATENESS


@pytest.mark.parametrize(
    ("ts", "late"),
    [
        (BASE + 20 * MINUTE, False),  # the watermark itself
        (BASE + 30 * MINUTE, False),  # ahead of it
        (BASE + 10 * MINUTE + 1, False),
        (BASE + 10 * MINUTE, False),  # exactly the maximum lateness behind: still aggregated
        (BASE + 10 * MINUTE - 1, True),  # one ms more: late
        (BASE, True),
    ],
)
def test_is_late_boundary(ts: int, late: bool) -> None:
    clock = EventClock(POLICY)
    clock.observe(BASE + 20 * MINUTE, wall_ms=BASE)
    assert clock.is_late(ts) is late


def test_nothing_is_late_without_a_watermark() -> None:
    assert EventClock(POLICY).is_late(0) is False


def test_is_late_follows_the_policy() -> None:
    clock = EventClock(WindowPolicy(max_lateness_ms=1_000))
    clock.observe(BASE, wall_ms=BASE)
    assert clock.is_late(BASE - 1_000) is False
    assert clock.is_late(BASE - 1_001) is True


END = BASE + MINUTE  # the end of the minute [BASE, BASE + 1 min)


@pytest.mark.parametrize(
    ("watermark", "last_input_wall", "wall", "final"),
    [
        # by watermark (the partition is busy: input a moment ago)
        (END + GRACE, BASE, BASE, True),  # end + grace reached
        (END + GRACE + 1, BASE, BASE, True),
        (END + GRACE - 1, BASE, BASE, False),
        (END, BASE, BASE, False),
        # by wall clock, partition quiet for a grace period of wall-clock time
        (END - 1, END, END + GRACE, True),  # quiet exactly grace, wall exactly end + grace
        (END - 1, END - 5 * MINUTE, END + GRACE, True),
        (END - 1, END - 5 * MINUTE, END + GRACE - 1, False),  # quiet, but wall clock not yet past end + grace
        # still receiving input: the wall clock alone does not close the window
        (END - 1, END + GRACE - 1, END + 2 * GRACE - 2, False),  # last input grace - 1 ms ago
        (END - 1, END + 10 * MINUTE, END + 10 * MINUTE, False),  # input right now, wall far past the end
        (END - 1, END + 10 * MINUTE - GRACE, END + 10 * MINUTE, True),  # input exactly grace ago
    ],
)
def test_is_final(watermark: int, last_input_wall: int, wall: int, final: bool) -> None:
    clock = EventClock(POLICY)
    clock.observe(watermark, wall_ms=last_input_wall)
    assert clock.last_input_wall_ms == last_input_wall
    assert clock.is_final(END, wall_ms=wall) is final


def test_is_final_without_any_input_uses_the_wall_clock() -> None:
    clock = EventClock(POLICY)
    assert clock.is_final(END, wall_ms=END + GRACE) is True
    assert clock.is_final(END, wall_ms=END + GRACE - 1) is False


def test_late_observation_refreshes_the_wall_clock_but_not_the_watermark() -> None:
    clock = EventClock(POLICY)
    clock.observe(END - 1, wall_ms=END)
    assert clock.is_final(END, wall_ms=END + GRACE) is True
    clock.observe(BASE, wall_ms=END + GRACE)  # still receiving (old) input
    assert clock.watermark_ms == END - 1
    assert clock.is_final(END, wall_ms=END + GRACE) is False
    assert clock.is_final(END, wall_ms=END + 2 * GRACE) is True


# --- Dedup ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "duplicate"),
    [
        (("dev-a", 7, BASE), ("dev-a", 7, BASE), True),
        (("dev-a", 7, BASE), ("dev-a", 7, BASE + 5_000), True),  # same seq, other ts: still a duplicate
        (("dev-a", 7, BASE), ("dev-b", 7, BASE), False),  # same seq on another device
        (("dev-a", 7, BASE), ("dev-a", 8, BASE), False),  # same ts, other seq
        (("dev-a", None, BASE), ("dev-a", None, BASE), True),  # no seq: same ts
        (("dev-a", None, BASE), ("dev-a", None, BASE + 1), False),
        (("dev-a", None, BASE), ("dev-b", None, BASE), False),
        (("dev-a", 7, BASE), ("dev-a", None, BASE), False),  # seq and ts are separate books
        (("dev-a", None, BASE), ("dev-a", 7, BASE), False),
    ],
)
def test_dedup_pairs(first: tuple[str, int | None, int], second: tuple[str, int | None, int], duplicate: bool) -> None:
    dedup = Dedup()
    assert dedup.first_time(*first) is True
    assert dedup.first_time(*second) is (not duplicate)


def _shape(dedup: Dedup, device: str = "d") -> list[tuple[int, int]]:
    return [(low, high) for low, high, _ in dedup.seqs[device]]


@pytest.mark.parametrize(
    ("order", "shapes"),
    [
        ([0, 1, 2], [[(0, 0)], [(0, 1)], [(0, 2)]]),
        ([2, 1, 0], [[(2, 2)], [(1, 2)], [(0, 2)]]),
        ([0, 1, 2, 5, 6, 3, 4], [[(0, 0)], [(0, 1)], [(0, 2)], [(0, 2), (5, 5)], [(0, 2), (5, 6)], [(0, 3), (5, 6)],
                                 [(0, 6)]]),
        ([10, 0, 5], [[(10, 10)], [(0, 0), (10, 10)], [(0, 0), (5, 5), (10, 10)]]),
        ([10, 0, 5, 4, 6, 1, 9, 3, 2, 7, 8], None),
        ([5, 3, 4], [[(5, 5)], [(3, 3), (5, 5)], [(3, 5)]]),  # a gap filled from below merges
        ([3, 5, 4], [[(3, 3)], [(3, 3), (5, 5)], [(3, 5)]]),  # ... and from above
        ([0, 20, 10, 30, 19, 21, 11, 9], [[(0, 0)], [(0, 0), (20, 20)], [(0, 0), (10, 10), (20, 20)],
                                          [(0, 0), (10, 10), (20, 20), (30, 30)],
                                          [(0, 0), (10, 10), (19, 20), (30, 30)],
                                          [(0, 0), (10, 10), (19, 21), (30, 30)],
                                          [(0, 0), (10, 11), (19, 21), (30, 30)],
                                          [(0, 0), (9, 11), (19, 21), (30, 30)]]),
    ],
)  # fmt: skip
def test_dedup_out_of_order_seqs(order: list[int], shapes: list[list[tuple[int, int]]] | None) -> None:
    dedup = Dedup()
    for step, seq in enumerate(order):
        assert dedup.first_time("d", seq, BASE + seq) is True
        if shapes is not None:
            assert _shape(dedup) == shapes[step]
        # intervals stay sorted and disjoint, not even touching
        intervals = dedup.seqs["d"]
        for (_, high, _), (low, _, _) in itertools.pairwise(intervals):
            assert high + 1 < low
    if shapes is None:
        assert _shape(dedup) == [(0, 10)]
    for seq in order:
        assert dedup.first_time("d", seq, BASE) is False
    # values between and around the intervals are still new
    seen = set(order)
    for seq in range(max(order) + 3):
        if seq not in seen:
            assert dedup.first_time("d", seq, BASE) is True


@pytest.mark.parametrize("direction", ["ascending", "descending", "shuffled"])
def test_dedup_long_run_stays_one_interval(direction: str) -> None:
    seqs = list(range(10_000))
    if direction == "descending":
        seqs.reverse()
    elif direction == "shuffled":
        random.Random(7).shuffle(seqs)
    dedup = Dedup()
    for seq in seqs:
        assert dedup.first_time("taxi-1", seq, BASE + seq * 1_000) is True
    assert dedup.seqs == {"taxi-1": [[0, 9_999, BASE + 9_999 * 1_000]]}
    assert len(dedup) == 1
    assert all(dedup.first_time("taxi-1", seq, BASE) is False for seq in (0, 1, 5_000, 9_998, 9_999))
    assert dedup.first_time("taxi-1", 10_000, BASE) is True


def test_dedup_in_order_run_keeps_few_intervals() -> None:
    dedup = Dedup()
    for seq in range(10_000):
        dedup.first_time("d", seq, BASE + seq)
        assert len(dedup.seqs["d"]) == 1


def test_dedup_merge_keeps_the_newest_ts() -> None:
    dedup = Dedup()
    dedup.first_time("d", 0, BASE + 500)
    dedup.first_time("d", 2, BASE + 100)
    dedup.first_time("d", 1, BASE + 200)  # joins both
    assert dedup.seqs["d"] == [[0, 2, BASE + 500]]
    dedup.first_time("d", 4, BASE + 50)
    dedup.first_time("d", 3, BASE + 10)  # joins [0, 2] and [4, 4]: the newest ts of both wins
    assert dedup.seqs["d"] == [[0, 4, BASE + 500]]


def test_dedup_expire() -> None:
    horizon = BASE + 10 * MINUTE
    dedup = Dedup()
    dedup.first_time("old", 0, horizon - 2)
    dedup.first_time("old", 1, horizon - 1)  # newest ts just before the horizon: dropped
    dedup.first_time("edge", 0, horizon - 5 * MINUTE)
    dedup.first_time("edge", 1, horizon)  # newest ts exactly at the horizon: kept
    dedup.first_time("mixed", 0, horizon - 1)
    dedup.first_time("mixed", 5, horizon + 1)  # [0, 0] dropped, [5, 5] kept
    dedup.first_time("mixed", 10, horizon - 3)  # [10, 10] dropped: its newest ts is old even though its seq is high
    dedup.first_time("stamps", None, horizon - 1)
    dedup.first_time("stamps", None, horizon)
    dedup.first_time("stamps", None, horizon + 1)
    dedup.first_time("old-stamps", None, horizon - 1)
    assert len(dedup) == 9  # old: 1 interval, edge: 1, mixed: 3, stamps: 3, old-stamps: 1
    dedup.expire(horizon)
    assert dedup.seqs == {"edge": [[0, 1, horizon]], "mixed": [[5, 5, horizon + 1]]}
    assert dedup.stamps == {"stamps": {horizon, horizon + 1}}
    assert len(dedup) == 4
    # what was kept is still recognised, what was dropped is new again
    assert dedup.first_time("edge", 0, horizon) is False
    assert dedup.first_time("mixed", 5, horizon + 1) is False
    assert dedup.first_time("stamps", None, horizon) is False
    assert dedup.first_time("old", 1, horizon - 1) is True
    assert dedup.first_time("mixed", 0, horizon - 1) is True
    assert dedup.first_time("stamps", None, horizon - 1) is True


def test_dedup_dump_load_round_trip() -> None:
    dedup = Dedup()
    for seq in [0, 1, 2, 5, 6, 9]:
        dedup.first_time("a", seq, BASE + seq)
    dedup.first_time("b", 3, BASE)
    for ts in (BASE + 3, BASE + 1, BASE + 2):
        dedup.first_time("c", None, ts)
    data = dedup.dump()
    assert data["stamps"] == {"c": [BASE + 1, BASE + 2, BASE + 3]}
    restored = Dedup.load(orjson.loads(orjson.dumps(data)))
    assert restored.seqs == dedup.seqs
    assert restored.stamps == dedup.stamps
    assert len(restored) == len(dedup)
    # the same answers afterwards, from both
    probes = [("a", s, BASE) for s in range(12)] + [("b", 3, BASE), ("b", 4, BASE), ("z", 0, BASE)]
    probes += [("c", None, BASE + t) for t in range(5)]
    for probe in probes:
        assert restored.first_time(*probe) is dedup.first_time(*probe), probe
    assert restored.seqs == dedup.seqs
    assert restored.dump() == dedup.dump()


def test_dedup_load_copies_intervals() -> None:
    data = {"seqs": {"a": [[0, 1, BASE]]}, "stamps": {}}
    restored = Dedup.load(data)
    restored.first_time("a", 2, BASE)
    assert data["seqs"]["a"] == [[0, 1, BASE]]  # the snapshot is not mutated
    assert Dedup.load({}).seqs == {}


@pytest.mark.parametrize("seed", range(5))
def test_finalize_in_small_steps_gives_every_final_window_once_in_order(seed: int) -> None:
    """The rules call ``finalize`` several times a second and most calls cross no window end (they
    skip the windows held): the windows they return, one call after another, are exactly those a
    single call returns at the end, in the same order (minutes and hours of environment stations)."""
    from schemas.readings import EnvReading
    from streams.core.registry import Registry
    from streams.kinds import environment

    rng = random.Random(seed)
    t0 = 1_795_294_800_000  # 2026-11-21T21:00:00Z, an hour's start
    registry = Registry()
    stepped = environment.KIND.aggregate(WindowPolicy(), registry)  # type: ignore[misc]
    at_once = environment.KIND.aggregate(WindowPolicy(), registry)  # type: ignore[misc]
    for number, ts in enumerate(sorted(t0 + rng.randrange(0, 3 * 3_600_000) for _ in range(300))):
        document = {"device_id": f"env-{rng.randrange(3)}", "ts": ts, "seq": number, "pm25_ugm3": 12.0}
        sample = environment.StationSample.of(EnvReading.model_validate(document), registry)
        stepped.fold(sample, t0)
        at_once.fold(sample, t0)
    finals = []
    wall = t0
    while wall < t0 + 4 * 3_600_000:
        wall += rng.choice([1, 200, 999, 30_000, 59_999, 60_000, 61_000])
        finals += stepped.finalize(wall, watermark_ms=wall)
    expected = at_once.finalize(wall, watermark_ms=wall)
    assert [(type(w).__name__, w.start_ms) for w in finals] == [(type(w).__name__, w.start_ms) for w in expected]
    assert len(expected) > 100 and any(type(w).__name__ == "StationHour" for w in expected)


def test_finalize_looks_at_the_windows_only_when_one_can_have_ended() -> None:
    from streams.core.windows import WindowedAggregate

    looked: list[tuple[int | None, int]] = []

    class Probe(WindowedAggregate):
        def _finals(self, after_ms: int | None, until_ms: int) -> list[object]:
            looked.append((after_ms, until_ms))
            return []

    aggregate = Probe(WindowPolicy(grace_ms=0))
    hour = 1_795_294_800_000
    for wall in (hour + 10, hour + 20, hour + 59_999, hour + 60_000, hour + 60_001, hour + 3_600_000):
        aggregate.finalize(wall, watermark_ms=wall)
    # the first call, the minute's end at hour + 60 s, and the next hour
    assert looked == [(None, hour + 10), (hour + 59_999, hour + 60_000), (hour + 60_001, hour + 3_600_000)]
