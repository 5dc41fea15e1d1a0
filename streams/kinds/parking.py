"""Parking stream (``city.parking.v1``): raw points ``parking`` and 1-minute windows per lot.

A lot's spot sensors are keyed by their own device ids, spread over the source partitions, so the
source agent forwards each valid reading, reduced to a :class:`SpotReport`, to an internal topic
keyed by lot; ``parking_1m`` is kept per partition of that topic.
"""

from __future__ import annotations

import bisect
from typing import Any, Final, NamedTuple

from schemas.readings import ParkingReading, SourceKind
from streams.core.lineprotocol import escape_tag, format_float
from streams.core.registry import Registry
from streams.core.windows import WindowedAggregate, WindowPolicy, window_start
from streams.kinds.spec import Merge, SensorKind
from streams.rules.finals import LotMinute
from streams.rules.partition import LotPartitionRules, SpotPartitionRules


def raw_point(reading: ParkingReading, registry: Registry) -> str:
    fields = f"occupied={int(reading.occupied)}i"
    if reading.battery_v is not None:
        fields += f",battery_v={format_float(reading.battery_v)}"
    if reading.rssi_dbm is not None:
        fields += f",rssi_dbm={format_float(reading.rssi_dbm)}"
    if reading.snr_db is not None:
        fields += f",snr_db={format_float(reading.snr_db)}"
    # lot_id and spot_id follow the device_id charset, their own normal form: escape_tag's fast path
    return f"parking,lot_id={escape_tag(reading.lot_id)},spot_id={escape_tag(reading.spot_id)} {fields} {reading.ts}"


class SpotReport(NamedTuple):
    """A parking reading reduced to what the lot windows need."""

    device_id: str
    ts: int
    seq: int | None
    lot_id: str
    spot_id: str
    occupied: bool
    change: bool
    battery_v: float | None

    @classmethod
    def of(cls, reading: ParkingReading) -> SpotReport:
        return cls(
            reading.device_id,
            reading.ts,
            reading.seq,
            reading.lot_id,
            reading.spot_id,
            reading.occupied,
            reading.parking_kind == "change",
            reading.battery_v,
        )


def partition_key(report: SpotReport) -> str:
    return report.lot_id


class LotState:
    """A lot's spots, each with its recent states in event-time order, and its windows' changes."""

    __slots__ = ("changes", "spots")

    def __init__(self) -> None:
        self.spots: dict[str, list[list[Any]]] = {}  # spot_id -> [[ts, occupied], ...] sorted by ts
        self.changes: dict[int, int] = {}  # window start -> readings of kind "change"

    def record(self, ts: int, spot_id: str, occupied: bool) -> None:
        history = self.spots.setdefault(spot_id, [])
        index = bisect.bisect_right(history, ts, key=lambda entry: entry[0])
        if index > 0 and history[index - 1][0] == ts:
            history[index - 1][1] = occupied  # the same instant reported twice: the later one wins
        else:
            history.insert(index, [ts, occupied])

    def state_at(self, end_ms: int) -> tuple[int, int]:
        """(occupied, known) spots from each spot's latest state before ``end_ms``."""
        occupied = known = 0
        for history in self.spots.values():
            index = bisect.bisect_left(history, end_ms, key=lambda entry: entry[0])
            if index > 0:
                known += 1
                occupied += bool(history[index - 1][1])
        return occupied, known

    def prune(self, horizon_ms: int) -> None:
        """Keep each spot's states from the horizon on, and the last one before it."""
        for spot_id, history in self.spots.items():
            index = bisect.bisect_left(history, horizon_ms, key=lambda entry: entry[0])
            if index > 1:
                self.spots[spot_id] = history[index - 1 :]


class ParkingLotAggregate(WindowedAggregate):
    """``parking_1m``: per lot and minute, occupancy at the window's end and the changes in it."""

    kind = "parking"

    def __init__(self, policy: WindowPolicy, registry: Registry) -> None:
        super().__init__(policy)
        self.registry = registry
        self.lots: dict[str, LotState] = {}
        self.dirty: set[tuple[int, str]] = set()

    def _fold(self, report: SpotReport) -> None:
        # keyed by the lot id as read: the id charset is its own normal form (normalize_tag)
        lot = self.lots.get(report.lot_id)
        if lot is None:
            lot = self.lots[report.lot_id] = LotState()
        lot.record(report.ts, report.spot_id, report.occupied)
        start = window_start(report.ts, self.policy.short_ms)
        lot.changes[start] = lot.changes.get(start, 0) + report.change
        # the occupancy at the end of this window and of every later one may have changed
        for other in lot.changes:
            if other >= start:
                self.dirty.add((other, report.lot_id))

    def _lines(self) -> list[str]:
        lines = []
        size = self.policy.short_ms
        for start, lot_id in sorted(self.dirty):
            lot = self.lots.get(lot_id)
            if lot is None or start not in lot.changes:
                continue
            occupied, known, capacity, occupancy = self.occupancy(lot_id, start + size)
            lines.append(
                f"parking_1m,lot_id={escape_tag(lot_id)} occupied={occupied}i,known_spots={known}i,"
                f"capacity={capacity}i,occupancy={format_float(occupancy)},changes={lot.changes[start]}i {start}"
            )
        self.dirty.clear()
        return lines

    def occupancy(self, lot_id: str, end_ms: int) -> tuple[int, int, int, float]:
        """(occupied, known spots, capacity, occupancy) of a lot at ``end_ms``."""
        occupied, known = self.lots[lot_id].state_at(end_ms)
        capacity = self.registry.lot_capacity(lot_id) or known or 1
        return occupied, known, capacity, occupied / capacity

    def _finals(self, after_ms: int | None, until_ms: int) -> list[LotMinute]:
        size = self.policy.short_ms
        finals = [
            (start + size, lot_id, start)
            for lot_id, lot in self.lots.items()
            for start in lot.changes
            if start + size <= until_ms and (after_ms is None or start + size > after_ms)
        ]
        finals.sort()
        return [LotMinute(lot_id, start, end, self.occupancy(lot_id, end)[3]) for end, lot_id, start in finals]

    def _evict(self, horizon_ms: int) -> None:
        size = self.policy.short_ms
        for lot in self.lots.values():
            for start in [s for s in lot.changes if s + size <= horizon_ms]:
                del lot.changes[start]
            lot.prune(horizon_ms)

    def _dump(self) -> Any:
        return {lot_id: [lot.spots, sorted(lot.changes.items())] for lot_id, lot in self.lots.items()}

    def _load(self, data: Any) -> None:
        for lot_id, (spots, changes) in data.items():
            lot = LotState()
            lot.spots = {spot_id: [list(e) for e in history] for spot_id, history in spots.items()}
            lot.changes = {int(start): count for start, count in changes}
            self.lots[lot_id] = lot


KIND: Final = SensorKind(
    kind=SourceKind.PARKING,
    model=ParkingReading,
    raw_point=raw_point,
    rules=SpotPartitionRules,  # battery and silence, per sensor, where its readings arrive
    merge=Merge(
        topic_suffix="parking-by-lot",
        record_type=SpotReport,
        reduce=SpotReport.of,
        key=partition_key,
        aggregate=ParkingLotAggregate,
        rules=LotPartitionRules,
    ),
)
