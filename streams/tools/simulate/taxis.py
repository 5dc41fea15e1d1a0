"""Taxis: ADAS-camera taxis driving trips over the street grid, and the warnings they raise."""

from __future__ import annotations

import math
import random
from typing import Final, NamedTuple

from schemas.readings import SourceKind
from streams.tools.simulate.clock import MINUTE_MS, choose_style, daily_bump, format_ts, kst_hour
from streams.tools.simulate.geography import (
    BLOCK_X_M,
    BLOCK_Y_M,
    COLLISION_HOTSPOTS,
    DISTRICTS,
    HAZARDS_BY_ROAD,
    HUB_TRIP_SHARE,
    M_PER_DEG_LAT,
    M_PER_DEG_LON,
    SERVICE_COLS,
    SERVICE_ROWS,
    TAXI_HUBS,
    URBAN_CORE,
    Hotspot,
    RoadHazard,
    grid_node,
    is_signalised,
    node_lat,
    node_lon,
    road_speed_limit,
)
from streams.tools.simulate.sensor import Body, Sensor


def taxi_device_id(number: int) -> str:
    return f"taxi-{number:04d}"


ACCELERATION_MS2: Final = 1.8
COMFORT_BRAKING_MS2: Final = 2.0
MAX_BRAKING_MS2: Final = 3.5
TURN_SPEED_MS: Final = 22 / 3.6
CREEP_SPEED_MS: Final = 1.5  # the last metres to a stop line
MAX_STEP_MS: Final = 2000  # the driving model's longest time step
TAXI_STAND_SHARE: Final = 0.35  # trips after which the driver waits at a stand
MAX_TAXI_KMH: Final = 80.0
PER_HOUR: Final = 1 / 3600


class _Plan(NamedTuple):
    """What a taxi does at the crossing it is driving to."""

    stop_s: float  # seconds it stands there (red light, passenger) before driving on
    end_of_trip: bool
    next_axis: int  # 0: along a column (north-south), 1: along a row (east-west)
    next_direction: int  # +1 north/east, -1 south/west


class Taxi(Sensor):
    """A taxi driving trips between hubs and neighbourhoods along the street grid.

    Position is kept in grid coordinates (row, col as floats); one leg is one block to the
    adjacent crossing. The taxi accelerates to a cruise speed set by the road's limit, its
    driver and the traffic, brakes for red lights, turns and stops, and reports every 1-2 s
    while moving and every 3-5 s while standing.
    """

    kind = SourceKind.TAXI
    __slots__ = (
        "aggressiveness",
        "axis",
        "col",
        "cruise_ms",
        "dest",
        "direction",
        "gps_dx",
        "gps_dy",
        "hazards",
        "heading",
        "last_hazard",
        "last_ms",
        "limit_kmh",
        "omit_none_event",
        "plan",
        "row",
        "seq",
        "speed_ms",
        "standing_until_ms",
        "target",
        "ts_style",
    )

    def __init__(self, device_id: str, now_ms: int, rng: random.Random) -> None:
        super().__init__(device_id, now_ms + rng.randrange(0, 2000))
        self.seq = rng.randrange(0, 500_000)
        self.ts_style = choose_style(rng, {"epoch_ms": 0.7, "kst": 0.3})
        self.omit_none_event = rng.random() < 0.25
        self.aggressiveness = min(max(rng.gauss(1.02, 0.09), 0.85), MAX_AGGRESSIVENESS)
        self.gps_dy = 0.0  # correlated GPS error, metres
        self.gps_dx = 0.0
        self.last_hazard: tuple[RoadHazard | None, int] = (None, 0)
        row, col = _random_destination(rng)
        self.row, self.col = float(row), float(col)
        self.dest = _random_destination(rng, avoid=(row, col))
        self.speed_ms = 0.0
        self.standing_until_ms = 0
        self.last_ms = self.due_ms
        axis, direction = _route_step((row, col), self.dest, None, rng)
        self._start_leg(axis, direction, self.due_ms, rng)
        self.heading = self._leg_heading()
        if rng.random() < TAXI_STAND_SHARE / 2:  # waiting at a stand or a light at the start
            self.standing_until_ms = self.due_ms + rng.randrange(0, 300_000)
            return
        # somewhere along the first block, driving
        fraction = rng.uniform(0.0, 0.7)
        if self.axis == 0:
            self.row += self.direction * fraction
        else:
            self.col += self.direction * fraction
        self.speed_ms = self.cruise_ms * rng.uniform(0.3, 1.0)

    # -- driving --

    def _leg_heading(self) -> float:
        if self.axis == 0:
            return 0.0 if self.direction > 0 else 180.0
        return 90.0 if self.direction > 0 else 270.0

    def _start_leg(self, axis: int, direction: int, now_ms: int, rng: random.Random) -> None:
        self.axis, self.direction = axis, direction
        here = (round(self.row), round(self.col))
        self.target = (here[0] + direction, here[1]) if axis == 0 else (here[0], here[1] + direction)
        line = here[1] if axis == 0 else here[0]
        self.hazards = HAZARDS_BY_ROAD.get(("col", line) if axis == 0 else ("row", line), ())
        self.limit_kmh = road_speed_limit(line)
        cruise_kmh = self.limit_kmh * self.aggressiveness * rng.uniform(0.9, 1.05)
        cruise_kmh *= _traffic_factor(now_ms, node_lat(here[0]), node_lon(here[1]))
        self.cruise_ms = min(max(cruise_kmh, 15.0), MAX_TAXI_KMH) / 3.6
        self.plan = self._plan_at(self.target, rng)

    def _plan_at(self, crossing: tuple[int, int], rng: random.Random) -> _Plan:
        if crossing == self.dest:
            drop_off_s = rng.uniform(15, 60)
            if rng.random() < TAXI_STAND_SHARE:  # then queue at a taxi stand for the next fare
                drop_off_s += rng.uniform(60, 480)
            return _Plan(drop_off_s, True, 0, 0)
        axis, direction = _route_step(crossing, self.dest, (self.axis, self.direction), rng)
        if is_signalised(*crossing):
            stop_s = rng.uniform(15, 90) if rng.random() < 0.5 else 0.0
        else:  # a stop sign or a yield at a small crossing
            stop_s = rng.uniform(2, 5) if rng.random() < 0.15 else 0.0
        return _Plan(stop_s, False, axis, direction)

    def _arrive(self, at_ms: int, rng: random.Random) -> None:
        """At the crossing: stand for a light or a passenger, then take the next leg."""
        self.row, self.col = float(self.target[0]), float(self.target[1])
        plan = self.plan
        if plan.stop_s > 0:
            self.speed_ms = 0.0
            self.standing_until_ms = at_ms + int(plan.stop_s * 1000)
        if plan.end_of_trip:
            here = self.target
            self.dest = _random_destination(rng, avoid=here)
            axis, direction = _route_step(here, self.dest, None, rng)
        else:
            axis, direction = plan.next_axis, plan.next_direction
        self._start_leg(axis, direction, at_ms, rng)

    def drive(self, now_ms: int, rng: random.Random) -> None:
        """Move from ``last_ms`` to ``now_ms`` in sub-steps of at most MAX_STEP_MS."""
        t_ms = self.last_ms
        while t_ms < now_ms:
            if self.standing_until_ms > t_ms:
                t_ms = min(self.standing_until_ms, now_ms)
                continue
            step_s = min(now_ms - t_ms, MAX_STEP_MS) / 1000
            along_rows = self.axis == 0
            if along_rows:
                distance = abs(self.target[0] - self.row) * BLOCK_Y_M
            else:
                distance = abs(self.target[1] - self.col) * BLOCK_X_M
            plan, cruise = self.plan, self.cruise_ms
            end_speed = 0.0 if plan.stop_s > 0 else (TURN_SPEED_MS if plan.next_axis != self.axis else cruise)
            allowed = math.sqrt(end_speed * end_speed + 2 * COMFORT_BRAKING_MS2 * distance)
            allowed = min(cruise, max(CREEP_SPEED_MS, allowed))
            speed = self.speed_ms
            if speed < allowed:
                new_speed = min(allowed, speed + ACCELERATION_MS2 * step_s)
            else:
                new_speed = max(allowed, speed - MAX_BRAKING_MS2 * step_s)
            self.speed_ms = new_speed
            travel = (speed + new_speed) / 2 * step_s
            if travel >= distance:
                used_s = step_s * distance / travel if travel > 0 else step_s
                t_ms += max(int(used_s * 1000), 1)
                self._arrive(t_ms, rng)
            else:
                if along_rows:
                    self.row += self.direction * travel / BLOCK_Y_M
                else:
                    self.col += self.direction * travel / BLOCK_X_M
                t_ms += int(step_s * 1000)
        self.last_ms = now_ms

    # -- reporting --

    def fire(self, rng: random.Random) -> Body:
        now_ms = self.due_ms
        dt_s = (now_ms - self.last_ms) / 1000  # since the previous reading
        self.drive(now_ms, rng)
        # correlated GPS error: a few metres that wander slowly
        random_ = rng.random
        self.gps_dy = 0.9 * self.gps_dy + (random_() - 0.5) * 1.7
        self.gps_dx = 0.9 * self.gps_dx + (random_() - 0.5) * 1.7
        lat = node_lat(self.row) + self.gps_dy / M_PER_DEG_LAT
        lon = node_lon(self.col) + self.gps_dx / M_PER_DEG_LON
        speed_kmh = round(self.speed_ms * 3.6, 1)
        if speed_kmh > 0:
            self.heading = self._leg_heading()
        heading = round((self.heading + (random_() + random_() - 1.0) * 2.4) % 360.0, 1)
        if heading >= 360.0:
            heading = 0.0
        self.seq += 1
        body: Body = {
            "device_id": self.device_id,
            "ts": format_ts(now_ms, self.ts_style),
            "seq": self.seq,
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed_kmh": speed_kmh,
            "heading_deg": heading,
        }
        self._add_event(body, speed_kmh, lat, lon, now_ms, dt_s, rng)
        interval_s = rng.uniform(1.0, 2.0) if speed_kmh > 0 else rng.uniform(3.0, 5.0)
        self.due_ms = now_ms + int(interval_s * 1000)
        return body

    def _add_event(
        self, body: Body, speed_kmh: float, lat: float, lon: float, now_ms: int, dt_s: float, rng: random.Random
    ) -> None:
        hazard = self._hazard_in_view(now_ms, rng) if self.hazards and speed_kmh > 0 else None
        if hazard is not None:
            body["event"] = hazard.event
            return
        event = _adas_warning(speed_kmh, self.limit_kmh, self.aggressiveness, lat, lon, dt_s, rng)
        if event is None:
            if speed_kmh > 10 and rng.random() < 0.5:  # following a car: headway is measured
                body["headway_s"] = round(rng.uniform(0.8, 3.5), 2)
            if not self.omit_none_event:
                body["event"] = "NONE"
            return
        body["event"] = event
        if event == "FCW":
            body["ttc_s"] = round(rng.uniform(1.0, 2.7), 2)
            body["headway_s"] = round(rng.uniform(0.3, 1.2), 2)
        elif event == "UFCW":
            body["ttc_s"] = round(rng.uniform(0.6, 2.0), 2)
        elif event == "PCW":
            body["ttc_s"] = round(rng.uniform(0.8, 2.5), 2)
        elif event == "HMW":
            body["headway_s"] = round(rng.uniform(0.25, 0.59), 2)

    def _hazard_in_view(self, now_ms: int, rng: random.Random) -> RoadHazard | None:
        along, block_m = (self.row, BLOCK_Y_M) if self.axis == 0 else (self.col, BLOCK_X_M)
        for hazard in self.hazards:
            if abs(hazard.position - along) * block_m > RoadHazard.DETECTION_M:
                continue
            last, last_ms = self.last_hazard
            if last is hazard and now_ms - last_ms < 10 * MINUTE_MS:
                return None
            self.last_hazard = (hazard, now_ms)
            return hazard if rng.random() < RoadHazard.DETECTION_PROBABILITY else None
        return None


def _random_destination(rng: random.Random, avoid: tuple[int, int] | None = None) -> tuple[int, int]:
    """A crossing where a trip ends: a hub, or a point in a district weighted by its traffic."""
    districts = list(DISTRICTS.values())
    while True:
        if rng.random() < HUB_TRIP_SHARE:
            hub = rng.choice(TAXI_HUBS)
            lat, lon = hub.lat, hub.lon
        else:
            district = rng.choices(districts, weights=[d.taxi_weight for d in districts])[0]
            lat = rng.gauss(district.lat, district.spread_deg)
            lon = rng.gauss(district.lon, district.spread_deg)
        row, col = grid_node(lat, lon)
        row = min(max(row, SERVICE_ROWS[0]), SERVICE_ROWS[1])
        col = min(max(col, SERVICE_COLS[0]), SERVICE_COLS[1])
        if (row, col) != avoid:
            return row, col


def _route_step(
    here: tuple[int, int], dest: tuple[int, int], current: tuple[int, int] | None, rng: random.Random
) -> tuple[int, int]:
    """The next leg from ``here`` towards ``dest``: (axis, direction). Keeps straight on when that
    still gets closer, mostly; otherwise turns towards the larger remaining distance."""
    d_row, d_col = dest[0] - here[0], dest[1] - here[1]
    options: list[tuple[int, int, int]] = []  # (axis, direction, blocks left on that axis)
    if d_row:
        options.append((0, 1 if d_row > 0 else -1, abs(d_row)))
    if d_col:
        options.append((1, 1 if d_col > 0 else -1, abs(d_col)))
    if not options:  # already there: drive on around the block
        return (0, rng.choice((1, -1)))
    if current is not None:
        for axis, direction, _ in options:
            if (axis, direction) == current and rng.random() < 0.75:
                return axis, direction
    axis, direction, _ = rng.choices(options, weights=[o[2] for o in options])[0]
    return axis, direction


def _traffic_factor(now_ms: int, lat: float, lon: float) -> float:
    """How much slower than free flow traffic moves: rush hours in the urban core."""
    hour = kst_hour(now_ms)
    rush = max(daily_bump(hour, 8.2, 0.8), daily_bump(hour, 18.5, 1.1))
    core = 1.0 if URBAN_CORE.contains(lat, lon) else 0.4
    night = 0.06 * daily_bump(hour, 2.0, 2.5)
    return 1.0 - 0.5 * rush * core + night


def _hotspot_factors(lat: float, lon: float) -> tuple[float, float]:
    radius_lat = Hotspot.RADIUS_M / M_PER_DEG_LAT
    radius_lon = Hotspot.RADIUS_M / M_PER_DEG_LON
    for spot in COLLISION_HOTSPOTS:
        if abs(lat - spot.lat) < radius_lat and abs(lon - spot.lon) < radius_lon:
            return spot.collision_factor, spot.pedestrian_factor
    return 1.0, 1.0


MAX_AGGRESSIVENESS: Final = 1.3
# no taxi's warning rate (per second) exceeds this, whatever its speed and place
WARNING_RATE_BOUND: Final = (
    max(0.6 * MAX_AGGRESSIVENESS, 0.8) * max(h.collision_factor for h in COLLISION_HOTSPOTS)
    + 0.4 * max(h.pedestrian_factor for h in COLLISION_HOTSPOTS)
    + 2 * 4.0 * MAX_AGGRESSIVENESS
    + 3.0 * MAX_AGGRESSIVENESS**2
) * PER_HOUR + 1 / 60


def _adas_warning(
    speed_kmh: float, limit_kmh: float, aggressiveness: float, lat: float, lon: float, dt_s: float, rng: random.Random
) -> str | None:
    """A warning the ADAS unit raised since the last reading, or None.

    Rates per hour of driving follow Mobileye's activation rules: FCW above 30 km/h, UFCW below,
    LDW above 55 km/h, HMW at a headway under 0.6 s, OVERSPEED over the recognised limit; near
    the collision hotspots collision warnings are many times more frequent.
    """
    if speed_kmh < 5:
        return None
    draw = rng.random()
    if draw >= WARNING_RATE_BOUND * dt_s:  # the common case, decided without the rates
        return None
    collision, pedestrian = _hotspot_factors(lat, lon)
    rates: list[tuple[str, float]] = []
    if speed_kmh > 30:
        rates.append(("FCW", 0.6 * PER_HOUR * collision * aggressiveness))
    elif speed_kmh < 30:
        rates.append(("UFCW", 0.8 * PER_HOUR * collision))
    if speed_kmh < 50:
        rates.append(("PCW", 0.4 * PER_HOUR * pedestrian))
    if speed_kmh > 55:
        rates.append(("LDW_L", 4.0 * PER_HOUR * aggressiveness))
        rates.append(("LDW_R", 4.0 * PER_HOUR * aggressiveness))
    if speed_kmh > 25:
        rates.append(("HMW", 3.0 * PER_HOUR * aggressiveness**2))
    if speed_kmh > limit_kmh + 5:
        rates.append(("OVERSPEED", 1 / 60))
    total = sum(rate for _, rate in rates)
    if draw >= total * dt_s:
        return None
    threshold = draw / dt_s
    for event, rate in rates:
        threshold -= rate
        if threshold < 0:
            return event
    return rates[-1][0]
