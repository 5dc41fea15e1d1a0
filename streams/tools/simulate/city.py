"""The city: every sensor of a layout in one schedule of simulated time."""

from __future__ import annotations

import random
from typing import Final, NamedTuple

from schemas.readings import SourceKind
from streams.tools.simulate.environment import EnvStation, dust_episodes, weather_anomaly
from streams.tools.simulate.layout import CityLayout
from streams.tools.simulate.parking import ParkingSpot, spot_ids
from streams.tools.simulate.sensor import Body, Sensor
from streams.tools.simulate.taxis import Taxi


class Emitted(NamedTuple):
    """One valid reading as its device sent it."""

    kind: SourceKind
    device_id: str
    body: Body
    ts_ms: int


SCHEDULE_SLOT_MS: Final = 100


class City:
    """All sensors of a layout, fired in order of simulated time.

    The schedule is a calendar of 100 ms slots (a heap of a hundred thousand taxis costs more
    than the taxis): sensors due in one slot fire together, in no particular order, once the
    whole slot lies at or before the time asked for.
    """

    def __init__(self, layout: CityLayout, start_ms: int, end_ms: int, seed: int, fault_rate: float = 0.0) -> None:
        self.layout = layout
        self.rng = random.Random(f"citystream-city:{seed}")
        rng = self.rng
        self.episodes = dust_episodes(layout.stations, start_ms, end_ms, rng)
        weather = weather_anomaly(rng)
        sensors: list[Sensor] = [Taxi(device_id, start_ms, rng) for device_id in layout.taxi_ids]
        for lot in layout.lots:
            sensors.extend(ParkingSpot(lot, spot, start_ms, rng) for spot in spot_ids(lot.capacity))
        sensors.extend(EnvStation(s, start_ms, self.episodes, weather, rng, fault_rate) for s in layout.stations)
        self.sensors = sensors
        self._slots: dict[int, list[Sensor]] = {}
        for sensor in sensors:
            self._slots.setdefault(sensor.due_ms // SCHEDULE_SLOT_MS, []).append(sensor)
        self._slot = start_ms // SCHEDULE_SLOT_MS
        self.now_ms = start_ms

    def advance(self, until_ms: int, max_readings: int) -> list[Emitted]:
        """Fire every sensor due up to ``until_ms``, stopping after ``max_readings`` readings."""
        out: list[Emitted] = []
        slots, rng = self._slots, self.rng
        last_slot = (until_ms + 1) // SCHEDULE_SLOT_MS - 1  # the last slot wholly <= until_ms
        count = 0
        while self._slot <= last_slot:
            due = slots.get(self._slot)
            if not due:
                slots.pop(self._slot, None)
                self._slot += 1
                continue
            if count >= max_readings:
                return out
            sensor = due.pop()
            fired_ms = sensor.due_ms
            body = sensor.fire(rng)
            slots.setdefault(sensor.due_ms // SCHEDULE_SLOT_MS, []).append(sensor)
            self.now_ms = max(self.now_ms, fired_ms)
            if body is not None:
                out.append(Emitted(sensor.kind, sensor.device_id, body, fired_ms))
                count += 1
        self.now_ms = max(self.now_ms, until_ms)
        return out
