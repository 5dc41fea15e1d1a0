"""Event-time building blocks shared by every stream's aggregates (contract section 3).

Tumbling windows aligned to UTC, running statistics, a per-partition event clock (watermark,
lateness, eviction) and duplicate detection. Everything here is plain data that snapshots to
JSON-able lists and restores from them, so a partition's state can be checkpointed to Kafka.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def window_start(ts_ms: int, size_ms: int) -> int:
    """Start of the UTC-aligned tumbling window of ``size_ms`` holding ``ts_ms``."""
    return ts_ms - ts_ms % size_ms


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """Window sizes, grace and maximum lateness, in milliseconds."""

    short_ms: int = 60_000
    long_ms: int = 3_600_000
    grace_ms: int = 30_000
    max_lateness_ms: int = 600_000


class Stats:
    """Running count, sum, minimum and maximum of one measured quantity."""

    __slots__ = ("count", "high", "low", "total")

    def __init__(self, count: int = 0, total: float = 0.0, low: float = math.inf, high: float = -math.inf) -> None:
        self.count = count
        self.total = total
        self.low = low
        self.high = high

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value

    @property
    def mean(self) -> float:
        return self.total / self.count

    def dump(self) -> list[Any]:
        return [self.count, self.total, self.low, self.high]

    @classmethod
    def load(cls, data: list[Any]) -> Stats:
        return cls(int(data[0]), float(data[1]), float(data[2]), float(data[3]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stats) and self.dump() == other.dump()

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
        """Whether a window ending at ``window_end_ms`` is final (contract section 3)."""
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

    def fold(self, record: Any, wall_ms: int) -> str:
        """Take one valid record; say whether it was aggregated, a duplicate, or late."""
        if not self.dedup.first_time(record.device_id, record.seq, record.ts):
            self.counts[DUPLICATE] += 1
            return DUPLICATE
        late = self.clock.is_late(record.ts)
        self.clock.observe(record.ts, wall_ms)
        if late:
            self.counts[LATE] += 1
            return LATE
        self._fold(record)
        self.counts[FOLDED] += 1
        return FOLDED

    def take_lines(self) -> list[str]:
        """Line protocol of every window changed since the last call (upserts)."""
        return self._lines()

    def expire(self) -> None:
        horizon = self.clock.horizon_ms()
        if horizon is not None:
            self.dedup.expire(horizon)
            self._evict(horizon)

    def dump(self) -> dict[str, Any]:
        return {
            "watermark_ms": self.clock.watermark_ms,
            "dedup": self.dedup.dump(),
            "counts": self.counts,
            "windows": self._dump(),
        }

    def load(self, data: dict[str, Any]) -> None:
        self.clock.watermark_ms = data["watermark_ms"]
        self.dedup = Dedup.load(data["dedup"])
        self.counts.update(data["counts"])
        self._load(data["windows"])

    # for subclasses
    def _fold(self, record: Any) -> None:
        raise NotImplementedError

    def _lines(self) -> list[str]:
        raise NotImplementedError

    def _evict(self, horizon_ms: int) -> None:
        raise NotImplementedError

    def _dump(self) -> Any:
        raise NotImplementedError

    def _load(self, data: Any) -> None:
        raise NotImplementedError
