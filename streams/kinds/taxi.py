"""Taxi ADAS stream (``city.taxi.adas.v1``): raw points ``taxi_adas`` and 1-minute windows per H3 cell.

A cell's readings come from taxis in every source partition, so the source agent forwards each
valid reading, reduced to a :class:`TaxiFix`, to an internal topic keyed by cell; the windows of
``taxi_adas_1m`` are kept per partition of that topic.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

import h3
import orjson

from schemas.readings import SourceKind, TaxiReading
from streams.core.lineprotocol import escape_tag, format_float
from streams.core.registry import Registry
from streams.core.windows import Stats, WindowedAggregate, WindowPolicy, window_start
from streams.kinds.spec import Merge, SensorKind
from streams.rules.finals import CellMinute
from streams.rules.partition import CellPartitionRules

H3_RESOLUTION: Final = 9

# counters of taxi_adas_1m, by event; LDW_L and LDW_R count together as ldw
EVENT_COUNTERS: Final = {
    "FCW": "fcw", "UFCW": "ufcw", "PCW": "pcw", "LDW_L": "ldw", "LDW_R": "ldw", "HMW": "hmw",
    "OVERSPEED": "overspeed", "POTHOLE": "pothole", "OBSTACLE": "obstacle",
}  # fmt: skip
COUNTERS: Final = ("fcw", "ufcw", "pcw", "ldw", "hmw", "overspeed", "pothole", "obstacle")
COLLISION_EVENTS: Final = frozenset({"FCW", "UFCW", "PCW"})
HAZARD_EVENTS: Final = frozenset({"POTHOLE", "OBSTACLE"})
_COUNTER_INDEX: Final = {name: i for i, name in enumerate(COUNTERS)}


_CELLS: dict[tuple[float, float], str] = {}
_CELLS_KEPT = 65_536


def cell_of(lat: float, lon: float) -> str:
    """The H3 index at resolution 9 (about 0.1 km²) of a position.

    A reading's cell is wanted twice (its raw point, its record for the cell windows): the last
    positions' cells are kept, which halves the H3 calls.
    """
    key = (lat, lon)
    cell = _CELLS.get(key)
    if cell is None:
        if len(_CELLS) >= _CELLS_KEPT:
            _CELLS.clear()
        cell = _CELLS[key] = h3.latlng_to_cell(lat, lon, H3_RESOLUTION)
    return cell


def raw_point(reading: TaxiReading, registry: Registry) -> str:
    # tags in key order; device_id, event and cell (contract charset, a literal, hex) are their own
    # normal form, so escape_tag takes its fast path
    fields = (
        f"lat={format_float(reading.lat)},lon={format_float(reading.lon)},speed_kmh={format_float(reading.speed_kmh)}"
    )
    if reading.heading_deg is not None:
        fields += f",heading_deg={format_float(reading.heading_deg)}"
    if reading.headway_s is not None:
        fields += f",headway_s={format_float(reading.headway_s)}"
    if reading.ttc_s is not None:
        fields += f",ttc_s={format_float(reading.ttc_s)}"
    cell = cell_of(reading.lat, reading.lon)
    tags = f"cell={escape_tag(cell)},device_id={escape_tag(reading.device_id)},event={escape_tag(reading.event)}"
    return f"taxi_adas,{tags} {fields} {reading.ts}"


class TaxiFix(NamedTuple):
    """A taxi reading reduced to what the cell windows need."""

    device_id: str
    ts: int
    seq: int | None
    cell: str
    speed_kmh: float
    event: str

    @classmethod
    def of(cls, reading: TaxiReading) -> TaxiFix:
        return cls(
            reading.device_id,
            reading.ts,
            reading.seq,
            cell_of(reading.lat, reading.lon),
            reading.speed_kmh,
            reading.event,
        )


def partition_key(fix: TaxiFix) -> str:
    return fix.cell


class CellWindow:
    __slots__ = ("collisions", "counts", "hazards", "readings", "speed", "taxis")

    def __init__(self) -> None:
        self.readings = 0
        self.taxis: set[str] = set()
        self.speed = Stats()
        self.counts = [0] * len(COUNTERS)
        self.collisions: dict[str, int] = {}  # taxi -> collision warnings (FCW, UFCW, PCW), for alerts
        self.hazards: set[str] = set()  # taxis that reported a pothole or an obstacle


class TaxiCellAggregate(WindowedAggregate):
    """``taxi_adas_1m``: per H3 cell and minute, readings, distinct taxis, speeds and warnings."""

    kind = "taxi"

    def __init__(self, policy: WindowPolicy, registry: Registry | None = None) -> None:
        super().__init__(policy)
        self.windows: dict[tuple[int, str], CellWindow] = {}
        self.dirty: set[tuple[int, str]] = set()
        # each window's part of the snapshot, made again only when the window changed
        self._dumped: dict[tuple[int, str], orjson.Fragment] = {}
        self._undumped: set[tuple[int, str]] = set()

    def _fold(self, fix: TaxiFix) -> None:
        # keyed by the cell as H3 gives it: hex, its own normal form (normalize_tag)
        key = (window_start(fix.ts, self.policy.short_ms), fix.cell)
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = CellWindow()
        window.readings += 1
        window.taxis.add(fix.device_id)
        window.speed.add(fix.speed_kmh)
        counter = EVENT_COUNTERS.get(fix.event)
        if counter is not None:
            window.counts[_COUNTER_INDEX[counter]] += 1
            if fix.event in COLLISION_EVENTS:
                window.collisions[fix.device_id] = window.collisions.get(fix.device_id, 0) + 1
            elif fix.event in HAZARD_EVENTS:
                window.hazards.add(fix.device_id)
        self.dirty.add(key)
        self._undumped.add(key)

    def _lines(self) -> list[str]:
        lines = []
        for key in sorted(self.dirty):
            window = self.windows.get(key)
            if window is None:
                continue
            start, cell = key
            counts = ",".join(f"{name}={count}i" for name, count in zip(COUNTERS, window.counts, strict=True))
            speed = window.speed
            lines.append(
                f"taxi_adas_1m,cell={escape_tag(cell)} readings={window.readings}i,taxis={len(window.taxis)}i,"
                f"speed_mean={format_float(speed.mean)},speed_min={format_float(speed.low)},"
                f"speed_max={format_float(speed.high)},{counts} {start}"
            )
        self.dirty.clear()
        return lines

    def _finals(self, after_ms: int | None, until_ms: int) -> list[CellMinute]:
        size = self.policy.short_ms
        finals = [
            (start + size, cell, start, window.collisions, window.hazards)
            for (start, cell), window in self.windows.items()
            if start + size <= until_ms and (after_ms is None or start + size > after_ms)
        ]
        finals.sort(key=lambda item: (item[0], item[1]))
        return [CellMinute(cell, start, end, collisions, hazards) for end, cell, start, collisions, hazards in finals]

    def _evict(self, horizon_ms: int) -> None:
        size = self.policy.short_ms
        for key in [k for k in self.windows if k[0] + size <= horizon_ms]:
            del self.windows[key]
            self._dumped.pop(key, None)
            self._undumped.discard(key)

    def _dump(self) -> Any:
        dumped, windows = self._dumped, self.windows
        for key in self._undumped:
            window = windows.get(key)
            if window is not None:
                start, cell = key
                # encoded once: a snapshot embeds the JSON of the windows that did not change
                dumped[key] = orjson.Fragment(
                    orjson.dumps(
                        [
                            start,
                            cell,
                            window.readings,
                            sorted(window.taxis),
                            window.speed.dump(),
                            window.counts,
                            window.collisions,
                            sorted(window.hazards),
                        ]
                    )
                )
        self._undumped.clear()
        return list(dumped.values())

    def _load(self, data: Any) -> None:
        for start, cell, readings, taxis, speed, counts, *alerting in data:
            window = CellWindow()
            window.readings, window.taxis, window.speed, window.counts = readings, set(taxis), Stats.load(speed), counts
            if alerting:
                window.collisions, window.hazards = dict(alerting[0]), set(alerting[1])
            self.windows[(start, cell)] = window
            self._undumped.add((start, cell))


KIND: Final = SensorKind(
    kind=SourceKind.TAXI,
    model=TaxiReading,
    raw_point=raw_point,
    merge=Merge(
        topic_suffix="taxi-by-cell",
        record_type=TaxiFix,
        reduce=TaxiFix.of,
        key=partition_key,
        aggregate=TaxiCellAggregate,
        rules=CellPartitionRules,
    ),
)
