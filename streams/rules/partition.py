"""Which alert rules each kind of partition runs, and when (schemas/CONTRACT.md section 6).

- a ``city.env.v1`` partition: PM2.5, PM10 and O3 per station on final hourly windows; stations
  stuck (a flat line) on final minute windows; stations offline, on each reading and the clock;
- a ``city.parking.v1`` partition: parking sensors offline (each reading, the clock), battery low;
- a ``taxi-by-cell`` partition: ADAS hotspot and road hazard on the final minute windows of a cell;
- a ``parking-by-lot`` partition: lot full on the final minute windows of a lot.

Each partition's rules and open alerts are part of its snapshot, so they move with it.
"""

from __future__ import annotations

from typing import Any

from schemas.alert import Alert
from streams.core.windows import MergeProgress, WindowedAggregate
from streams.rules.air import StationAirRules
from streams.rules.book import AlertBook
from streams.rules.cells import CellRules
from streams.rules.devices import DeviceRules
from streams.rules.finals import CellMinute, LotMinute, StationHour, StationMinute
from streams.rules.lots import LotRules
from streams.rules.policy import PARKING, STATION, AlertPolicy
from streams.rules.stuck import StuckRules

# a partition whose newest message is this recent, or which has had nothing new for this long, has
# caught up with its input: only then can silence be told from a backlog
CAUGHT_UP_MS = 5_000


class PartitionRules:
    """The open alerts of one partition and the rules that raise and clear them."""

    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy
        self.book = AlertBook()

    def on_reading(self, reading: Any, sent_ms: int, now_ms: int) -> list[Alert]:
        """A valid reading, new and on time, sent (Kafka timestamp) at ``sent_ms``."""
        return []

    def evaluate(
        self, aggregate: WindowedAggregate, progress: MergeProgress | None, caught_up: bool, now_ms: int
    ) -> list[Alert]:
        """Rules on the windows that became final, and on the clock."""
        return []

    def dump(self) -> dict[str, Any]:
        return {"book": self.book.dump(), **self._dump()}

    def load(self, data: dict[str, Any]) -> None:
        self.book = AlertBook.load(data["book"])
        self._load(data)

    def _dump(self) -> dict[str, Any]:
        return {}

    def _load(self, data: dict[str, Any]) -> None:
        pass


class StationPartitionRules(PartitionRules):
    def __init__(self, policy: AlertPolicy) -> None:
        super().__init__(policy)
        self.air = StationAirRules(policy)
        self.devices = DeviceRules(policy)
        self.stuck = StuckRules()

    def on_reading(self, reading: Any, sent_ms: int, now_ms: int) -> list[Alert]:
        return self.devices.seen(self.book, reading.device_id, STATION, sent_ms, now_ms)

    def evaluate(
        self, aggregate: WindowedAggregate, progress: MergeProgress | None, caught_up: bool, now_ms: int
    ) -> list[Alert]:
        alerts = []
        fail_ms = aggregate.policy.qc.flat_fail_ms
        for final in aggregate.finalize(now_ms):
            if isinstance(final, StationMinute):
                alerts += self.stuck.on_final_minute(self.book, final, fail_ms, now_ms)
            elif isinstance(final, StationHour):
                alerts += self.air.on_final_hour(
                    self.book, final.device_id, final.start_ms, final.end_ms, final.means, now_ms
                )
        if caught_up:
            alerts += self.devices.check_offline(self.book, now_ms, now_ms)
        return alerts

    def _dump(self) -> dict[str, Any]:
        return {"air": self.air.dump(), "devices": self.devices.dump(), "stuck": self.stuck.dump()}

    def _load(self, data: dict[str, Any]) -> None:
        self.air = StationAirRules.load(data["air"], self.policy)
        self.devices = DeviceRules.load(data["devices"], self.policy)
        self.stuck = StuckRules.load(data.get("stuck", {}))


class SpotPartitionRules(PartitionRules):
    def __init__(self, policy: AlertPolicy) -> None:
        super().__init__(policy)
        self.devices = DeviceRules(policy)

    def on_reading(self, reading: Any, sent_ms: int, now_ms: int) -> list[Alert]:
        alerts = self.devices.seen(self.book, reading.device_id, PARKING, sent_ms, now_ms)
        if reading.battery_v is not None:
            alerts += self.devices.battery(self.book, reading.device_id, reading.battery_v, reading.ts, now_ms)
        return alerts

    def evaluate(
        self, aggregate: WindowedAggregate, progress: MergeProgress | None, caught_up: bool, now_ms: int
    ) -> list[Alert]:
        return self.devices.check_offline(self.book, now_ms, now_ms) if caught_up else []

    def _dump(self) -> dict[str, Any]:
        return {"devices": self.devices.dump()}

    def _load(self, data: dict[str, Any]) -> None:
        self.devices = DeviceRules.load(data["devices"], self.policy)


class CellPartitionRules(PartitionRules):
    def __init__(self, policy: AlertPolicy) -> None:
        super().__init__(policy)
        self.cells = CellRules(policy)

    def evaluate(
        self, aggregate: WindowedAggregate, progress: MergeProgress | None, caught_up: bool, now_ms: int
    ) -> list[Alert]:
        watermark = progress.watermark_ms(now_ms) if progress is not None else None
        alerts = []
        minute: CellMinute
        for minute in aggregate.finalize(now_ms, watermark):
            alerts += self.cells.on_final_minute(
                self.book, minute.cell, minute.start_ms, minute.end_ms, minute.collisions, minute.hazards, now_ms
            )
        if aggregate.final_until_ms is not None:
            alerts += self.cells.on_frontier(self.book, aggregate.final_until_ms, now_ms)
        return alerts

    def _dump(self) -> dict[str, Any]:
        return {"cells": self.cells.dump()}

    def _load(self, data: dict[str, Any]) -> None:
        self.cells = CellRules.load(data["cells"], self.policy)


class LotPartitionRules(PartitionRules):
    def __init__(self, policy: AlertPolicy) -> None:
        super().__init__(policy)
        self.lots = LotRules(policy)

    def evaluate(
        self, aggregate: WindowedAggregate, progress: MergeProgress | None, caught_up: bool, now_ms: int
    ) -> list[Alert]:
        watermark = progress.watermark_ms(now_ms) if progress is not None else None
        alerts = []
        lot: LotMinute
        for lot in aggregate.finalize(now_ms, watermark):
            alerts += self.lots.on_final_minute(self.book, lot.lot_id, lot.start_ms, lot.end_ms, lot.occupancy, now_ms)
        return alerts
