"""The final windows the rules are given: typed records, produced by the kinds' aggregates.

An aggregate's ``finalize`` returns the windows that became final since its last call, in the order
of their end; the partition's rules (:mod:`streams.rules.partition`) read them by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import NamedTuple


class StationHour(NamedTuple):
    """A station's final hour: the hourly means of the pollutants the air rules watch."""

    device_id: str
    district: str
    start_ms: int
    end_ms: int
    means: Mapping[str, float]  # pm25_ugm3, pm10_ugm3, o3_ppm: those measured in the hour


class StationMinute(NamedTuple):
    """A station's final minute: the measurements failing the flat-line test in it (with the longest
    flat run, ms) and those measured in it that did not."""

    device_id: str
    district: str
    start_ms: int
    end_ms: int
    stuck: Mapping[str, int]
    varied: AbstractSet[str]


class CellMinute(NamedTuple):
    """A cell's final minute: its collision warnings and road hazards, with the taxis that saw them."""

    cell: str
    start_ms: int
    end_ms: int
    collisions: Mapping[str, int]  # taxi -> its collision warnings (FCW, UFCW, PCW) in the minute
    hazards: AbstractSet[str]  # the taxis that reported a pothole or an obstacle


class LotMinute(NamedTuple):
    """A parking lot's final minute: its occupancy at the minute's end."""

    lot_id: str
    start_ms: int
    end_ms: int
    occupancy: float
