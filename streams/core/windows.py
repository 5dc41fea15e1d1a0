"""Event-time building blocks shared by every stream's aggregates (schemas/CONTRACT.md section 3).

Tumbling windows aligned to UTC, running statistics, a per-partition event clock (watermark,
lateness, eviction) and duplicate detection. Everything here is plain data that snapshots to
JSON-able lists and restores from them, so a partition's state can be checkpointed to Kafka.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streams.core.qc import QcPolicy


def window_start(ts_ms: int, size_ms: int) -> int:
    """Start of the UTC-aligned tumbling window of ``size_ms`` holding ``ts_ms``."""
    return ts_ms - ts_ms % size_ms


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """Window sizes, grace and maximum lateness, in milliseconds; and the thresholds of the
    data-quality tests the environment windows run on their readings."""

    short_ms: int = 60_000
    long_ms: int = 3_600_000
    grace_ms: int = 30_000
    max_lateness_ms: int = 600_000
    qc: QcPolicy = field(default_factory=QcPolicy)


class Stats:
    """Running count, exact sum, minimum and maximum of one measured quantity.

    The sum is kept as non-overlapping partial sums (Shewchuk's algorithm, as ``math.fsum``), so the
    mean is the correctly rounded mean of the values whatever order they arrived in: a replay that
    interleaves partitions differently gives the same aggregates to the last bit.
    """

    __slots__ = ("count", "high", "low", "partials")

    def __init__(
        self, count: int = 0, partials: list[float] | None = None, low: float = math.inf, high: float = -math.inf
    ) -> None:
        self.count = count
        self.partials = partials if partials is not None else []
        self.low = low
        self.high = high

    def add(self, value: float) -> None:
        self.count += 1
        partials = self.partials
        x = float(value)
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            high = x + y
            low = y - (high - x)
            if low:
                partials[i] = low
                i += 1
            x = high
        partials[i:] = [x]
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value

    @property
    def total(self) -> float:
        return math.fsum(self.partials)

    @property
    def mean(self) -> float:
        return math.fsum(self.partials) / self.count

    def dump(self) -> list[Any]:
        return [self.count, self.partials, self.low, self.high]

    @classmethod
    def load(cls, data: list[Any]) -> Stats:
        partials = data[1] if isinstance(data[1], list) else [float(data[1])]
        return cls(int(data[0]), [float(p) for p in partials], float(data[2]), float(data[3]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stats) and (self.count, self.total, self.low, self.high) == (
            other.count,
            other.total,
            other.low,
            other.high,
        )

    def __repr__(self) -> str:
        return f"Stats(count={self.count}, total={self.total}, low={self.low}, high={self.high})"


class EventClock:
    """A partition's watermark (largest ts seen) and what follows from it."""

    __slots__ = ("last_input_wall_ms", "policy", "watermark_ms")

    def __init__(self, policy: WindowPolicy, watermark_ms: int | None = None) -> None:
        self.policy = policy
        self.watermark_ms = watermark_ms
        self.last_input_wall_ms: int | None = None

    def observe(self, ts_ms: int, wall_ms: int) -> None:
        self.last_input_wall_ms = wall_ms
        if self.watermark_ms is None or ts_ms > self.watermark_ms:
            self.watermark_ms = ts_ms

    def is_late(self, ts_ms: int) -> bool:
        """Over the maximum lateness behind the watermark: stored raw only, not aggregated."""
        return self.watermark_ms is not None and ts_ms < self.watermark_ms - self.policy.max_lateness_ms

    def horizon_ms(self) -> int | None:
        """Readings before this instant can no longer change an aggregate."""
        if self.watermark_ms is None:
            return None
        return self.watermark_ms - self.policy.max_lateness_ms

    def is_final(self, window_end_ms: int, wall_ms: int) -> bool:
        """Whether a window ending at ``window_end_ms`` is final (schemas/CONTRACT.md section 3)."""
        grace = self.policy.grace_ms
        if self.watermark_ms is not None and self.watermark_ms >= window_end_ms + grace:
            return True
        quiet = self.last_input_wall_ms is None or wall_ms - self.last_input_wall_ms >= grace
        return quiet and wall_ms >= window_end_ms + grace


class Dedup:
    """Readings already processed, by device: ``seq`` intervals, or ``ts`` when a reading has no seq.

    Frame counters mostly grow by one, so each device keeps a few ``[low, high, newest ts]``
    intervals of seen seq values. Entries whose newest reading lies before the event clock's
    horizon are dropped: a copy of such a reading would be late, and late readings aggregate
    nothing anyway.
    """

    __slots__ = ("seqs", "stamps")

    def __init__(self) -> None:
        self.seqs: dict[str, list[list[int]]] = {}
        self.stamps: dict[str, set[int]] = {}

    def first_time(self, device_id: str, seq: int | None, ts_ms: int) -> bool:
        """Record a reading; False when the same device's reading was seen already."""
        if seq is None:
            stamps = self.stamps.setdefault(device_id, set())
            if ts_ms in stamps:
                return False
            stamps.add(ts_ms)
            return True
        intervals = self.seqs.get(device_id)
        if intervals is None:
            self.seqs[device_id] = [[seq, seq, ts_ms]]
            return True
        # most readings extend the last interval: scan from the end
        for i in range(len(intervals) - 1, -1, -1):
            low, high, newest = intervals[i]
            if low <= seq <= high:
                return False
            if seq == high + 1:
                intervals[i][1] = seq
                intervals[i][2] = max(newest, ts_ms)
                if i + 1 < len(intervals) and intervals[i + 1][0] == seq + 1:
                    following = intervals.pop(i + 1)
                    intervals[i][1] = following[1]
                    intervals[i][2] = max(intervals[i][2], following[2])
                return True
            if seq == low - 1:
                intervals[i][0] = seq
                intervals[i][2] = max(newest, ts_ms)
                if i > 0 and intervals[i - 1][1] == seq - 1:
                    previous = intervals.pop(i - 1)
                    intervals[i - 1][0] = previous[0]
                    intervals[i - 1][2] = max(intervals[i - 1][2], previous[2])
                return True
            if seq > high:
                intervals.insert(i + 1, [seq, seq, ts_ms])
                return True
        intervals.insert(0, [seq, seq, ts_ms])
        return True

    def expire(self, horizon_ms: int) -> None:
        for device_id in list(self.seqs):
            kept = [interval for interval in self.seqs[device_id] if interval[2] >= horizon_ms]
            if kept:
                self.seqs[device_id] = kept
            else:
                del self.seqs[device_id]
        for device_id in list(self.stamps):
            stamps = {ts for ts in self.stamps[device_id] if ts >= horizon_ms}
            if stamps:
                self.stamps[device_id] = stamps
            else:
                del self.stamps[device_id]

    def __len__(self) -> int:
        return sum(len(v) for v in self.seqs.values()) + sum(len(v) for v in self.stamps.values())

    def dump(self) -> dict[str, Any]:
        return {"seqs": self.seqs, "stamps": {k: sorted(v) for k, v in self.stamps.items()}}

    @classmethod
    def load(cls, data: dict[str, Any]) -> Dedup:
        dedup = cls()
        dedup.seqs = {k: [list(i) for i in v] for k, v in data.get("seqs", {}).items()}
        dedup.stamps = {k: set(v) for k, v in data.get("stamps", {}).items()}
        return dedup


FOLDED = "aggregated"
DUPLICATE = "duplicate"
LATE = "late"


class Record:
    """What every record folded into windows has (a reading, reduced to what aggregates need)."""

    device_id: str
    ts: int
    seq: int | None


def _crosses_a_window_end(after_ms: int, until_ms: int, policy: WindowPolicy) -> bool:
    """Whether a window of either size can end in (after_ms, until_ms]."""
    return any(until_ms // size > after_ms // size for size in (policy.short_ms, policy.long_ms))


class WindowedAggregate:
    """One partition's aggregation state: clock, duplicates, and the stream's windows.

    Subclasses add their windows with ``_fold`` (a new, on-time record), ``_lines`` (points of the
    windows changed since the last call), ``_evict`` (drop what the horizon has passed) and
    ``_dump``/``_load``.
    """

    kind = ""

    def __init__(self, policy: WindowPolicy) -> None:
        self.policy = policy
        self.clock = EventClock(policy)
        self.dedup = Dedup()
        self.counts: dict[str, int] = {FOLDED: 0, DUPLICATE: 0, LATE: 0}
        # duplicates and late records seen by this process (``counts`` travels with the snapshots);
        # the worker shares one Counter per stream kind between partitions, for its metrics
        self.dropped: Counter[str] = Counter()
        self.evicted_before_ms = -(2**62)
        # windows ending at or before this instant have been reported final
        self.final_until_ms: int | None = None

    def judge(self, record: Any, wall_ms: int) -> str:
        """Decide whether a valid record is new and on time, and advance the clock."""
        if not self.dedup.first_time(record.device_id, record.seq, record.ts):
            self.counts[DUPLICATE] += 1
            self.dropped[DUPLICATE] += 1
            return DUPLICATE
        late = self.clock.is_late(record.ts)
        self.clock.observe(record.ts, wall_ms)
        if late:
            self.counts[LATE] += 1
            self.dropped[LATE] += 1
            return LATE
        self.counts[FOLDED] += 1
        return FOLDED

    def fold(self, record: Any, wall_ms: int) -> str:
        """Take one valid record; say whether it was aggregated, a duplicate, or late."""
        verdict = self.judge(record, wall_ms)
        if verdict == FOLDED:
            self._fold(record)
        return verdict

    def apply(self, record: Any, wall_ms: int | None = None) -> bool:
        """Fold a record judged new and on time upstream; False when its window was already evicted."""
        if wall_ms is not None:
            self.clock.last_input_wall_ms = wall_ms
        if record.ts < self.evicted_before_ms:
            self.counts[LATE] += 1
            self.dropped[LATE] += 1
            return False
        self._fold(record)
        self.counts[FOLDED] += 1
        return True

    def take_lines(self) -> list[str]:
        """Line protocol of every window changed since the last call (upserts)."""
        return self._lines()

    def finalize(self, wall_ms: int, watermark_ms: int | None = None) -> list[Any]:
        """The windows that became final since the last call, in the order of their end.

        A window is final once the watermark has passed its end plus the grace period, or, when the
        partition has received nothing for a grace period, once the wall clock has (contract
        section 3). ``watermark_ms`` overrides this partition's own watermark (an aggregate fed
        by several source partitions passes the slowest one's).
        """
        watermark = self.clock.watermark_ms if watermark_ms is None else watermark_ms
        grace = self.policy.grace_ms
        frontier = None if watermark is None else watermark - grace
        last_input = self.clock.last_input_wall_ms
        if last_input is not None and wall_ms - last_input >= grace:
            frontier = wall_ms - grace if frontier is None else max(frontier, wall_ms - grace)
        previous = self.final_until_ms
        if frontier is None or (previous is not None and frontier <= previous):
            return []
        self.final_until_ms = frontier
        if previous is not None and not _crosses_a_window_end(previous, frontier, self.policy):
            # windows end at multiples of their size (UTC-aligned): none ends in (previous, frontier],
            # so there is nothing to look for among the windows held (the rules run several times a
            # second, and a partition may hold tens of thousands of windows)
            return []
        return self._finals(previous, frontier)

    def expire(self, horizon_ms: int | None = None) -> None:
        """Drop duplicates and windows that no reading can change any more.

        ``horizon_ms`` defaults to this partition's own clock; an aggregate fed from several
        partitions passes the horizon of the slowest of them.
        """
        if horizon_ms is None:
            horizon_ms = self.clock.horizon_ms()
        if horizon_ms is None:
            return
        self.dedup.expire(horizon_ms)
        # windows wholly before the horizon are dropped; remember where, so nothing reopens them
        size = self.policy.short_ms
        self.evicted_before_ms = max(self.evicted_before_ms, horizon_ms - horizon_ms % size)
        self._evict(horizon_ms)

    def dump(self) -> dict[str, Any]:
        return {
            "watermark_ms": self.clock.watermark_ms,
            "dedup": self.dedup.dump(),
            "counts": self.counts,
            "evicted_before_ms": self.evicted_before_ms,
            "final_until_ms": self.final_until_ms,
            "windows": self._dump(),
        }

    def load(self, data: dict[str, Any]) -> None:
        self.clock.watermark_ms = data["watermark_ms"]
        self.dedup = Dedup.load(data["dedup"])
        self.counts.update(data["counts"])
        self.evicted_before_ms = data.get("evicted_before_ms", -(2**62))
        self.final_until_ms = data.get("final_until_ms")
        self._load(data["windows"])

    # for subclasses
    def _fold(self, record: Any) -> None:
        pass

    def _lines(self) -> list[str]:
        return []

    def _finals(self, after_ms: int | None, until_ms: int) -> list[Any]:
        """Windows ending in (after_ms, until_ms], as the rules of this stream need them."""
        return []

    def _evict(self, horizon_ms: int) -> None:
        pass

    def _dump(self) -> Any:
        return None

    def _load(self, data: Any) -> None:
        pass


class SourceGate(WindowedAggregate):
    """A source partition whose readings are aggregated elsewhere: only its clock and duplicates."""

    kind = "gate"


class MergeProgress:
    """An aggregate fed by all partitions of a source topic through an internal topic.

    Each forwarded record carries its source partition, offset, index in the message and the
    source's watermark. A record at or before what was applied already from its source is a re-send
    after a restart upstream, and is dropped. Every source partition also sends a heartbeat with its
    watermark at each checkpoint, so the windows know how far every source has got even when it
    sends nothing here. No record can arrive any more before the slowest source's watermark less
    the maximum lateness (the horizon), and only once every source partition has been heard from:
    one that is far behind may still send old readings. A source whose own input has stopped for
    ``idle_ms`` (wall clock) does not hold the horizon back, nor does one that has seen no reading.
    """

    __slots__ = ("expected_sources", "idle_ms", "max_lateness_ms", "sources")

    def __init__(self, max_lateness_ms: int, expected_sources: int, idle_ms: int = 300_000) -> None:
        self.max_lateness_ms = max_lateness_ms
        self.expected_sources = expected_sources
        self.idle_ms = idle_ms
        # source partition -> [offset, index, watermark or None, wall time of the source's last input]
        self.sources: dict[int, list[Any]] = {}

    def accept(self, source: int, offset: int, index: int, watermark_ms: int | None, wall_ms: int) -> bool:
        """Record a forwarded record's progress; False when it was applied already."""
        progress = self.sources.get(source)
        if progress is None:
            self.sources[source] = [offset, index, watermark_ms, wall_ms]
            return True
        if progress[0] is not None and (offset, index) <= (progress[0], progress[1]):
            return False
        progress[0], progress[1] = offset, index
        self._advance(progress, watermark_ms, wall_ms)
        return True

    def heartbeat(self, source: int, watermark_ms: int | None, last_input_wall_ms: int | None) -> None:
        progress = self.sources.get(source)
        if progress is None:
            self.sources[source] = [None, None, watermark_ms, last_input_wall_ms]
        else:
            self._advance(progress, watermark_ms, last_input_wall_ms)

    @staticmethod
    def _advance(progress: list[Any], watermark_ms: int | None, wall_ms: int | None) -> None:
        if watermark_ms is not None and (progress[2] is None or watermark_ms > progress[2]):
            progress[2] = watermark_ms
        if wall_ms is not None and (progress[3] is None or wall_ms > progress[3]):
            progress[3] = wall_ms

    def watermark_ms(self, wall_ms: int | None = None) -> int | None:
        """The slowest active source's watermark; None until every source partition has reported."""
        if len(self.sources) < self.expected_sources:
            return None
        seen = [p for p in self.sources.values() if p[2] is not None]
        if not seen:
            return None
        if wall_ms is not None:
            active = [p[2] for p in seen if p[3] is not None and wall_ms - p[3] < self.idle_ms]
            return min(active) if active else max(p[2] for p in seen)
        return min(p[2] for p in seen)

    def horizon_ms(self, wall_ms: int | None = None) -> int | None:
        watermark = self.watermark_ms(wall_ms)
        return None if watermark is None else watermark - self.max_lateness_ms

    def dump(self) -> dict[str, list[Any]]:
        return {str(source): progress for source, progress in self.sources.items()}

    def load(self, data: dict[str, list[Any]]) -> None:
        self.sources = {int(source): list(progress) for source, progress in data.items()}
