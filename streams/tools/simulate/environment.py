"""Air quality: Daegu's climate, fine-dust episodes and the stations that report every minute."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from schemas.readings import SourceKind
from streams.tools.simulate.clock import (
    DAY_MS,
    HOUR_MS,
    KST,
    MINUTE_MS,
    choose_style,
    daily_bump,
    format_ts,
    kst_hour,
)
from streams.tools.simulate.geography import DISTRICTS, URBAN_CORE
from streams.tools.simulate.sensor import Body, Sensor

# Daegu's monthly climate normals (KMA 1991-2020, rounded): mean daily max, min (deg C) and
# mean relative humidity (%).
DAEGU_CLIMATE: Final[tuple[tuple[float, float, float], ...]] = (
    (6.0, -3.8, 53),
    (9.2, -1.5, 53),
    (14.9, 3.4, 55),
    (21.4, 9.0, 54),
    (26.5, 14.4, 58),
    (29.6, 19.2, 66),
    (31.0, 22.8, 74),
    (31.5, 23.2, 74),
    (27.3, 18.3, 71),
    (22.2, 11.4, 64),
    (14.9, 4.4, 59),
    (8.1, -1.6, 55),
)
STATION_INTERVAL_MS: Final = MINUTE_MS


@dataclass(frozen=True)
class StationSpec:
    device_id: str
    district: str
    lat: float
    lon: float
    roadside: bool


@dataclass(frozen=True)
class DustEpisode:
    """A fine-dust episode over part of the city: PM rises over ``rise_h``, stays, then clears."""

    onset_ms: int
    rise_h: float
    plateau_h: float
    fall_h: float
    pm25_add: float  # extra PM2.5 at the plateau, ug/m3
    pm10_ratio: float  # extra PM10 per extra PM2.5
    station_ids: frozenset[str]

    def strength(self, epoch_ms: int) -> float:
        """0 outside the episode, 1 on its plateau."""
        hours = (epoch_ms - self.onset_ms) / HOUR_MS
        if hours <= 0:
            return 0.0
        if hours < self.rise_h:
            x = hours / self.rise_h
            return x * x * (3 - 2 * x)
        hours -= self.rise_h
        if hours < self.plateau_h:
            return 1.0
        hours -= self.plateau_h
        if hours < self.fall_h:
            x = 1 - hours / self.fall_h
            return x * x * (3 - 2 * x)
        return 0.0

    @property
    def end_ms(self) -> int:
        return self.onset_ms + int((self.rise_h + self.plateau_h + self.fall_h) * HOUR_MS)


def dust_episodes(stations: Sequence[StationSpec], start_ms: int, end_ms: int, rng: random.Random) -> list[DustEpisode]:
    """Episodes over the simulated period: the first already under way when it starts (so even a
    short run shows one), then one every 1-3 days, each over the stations nearest a centre."""
    episodes: list[DustEpisode] = []
    if not stations:
        return episodes
    onset = start_ms - int(rng.uniform(1.5, 3.0) * HOUR_MS)
    while onset < end_ms:
        centre = rng.choice(list(DISTRICTS.values()))
        affected = max(1, round(0.3 * len(stations)))
        nearest = sorted(stations, key=lambda s: (s.lat - centre.lat) ** 2 + (s.lon - centre.lon) ** 2)
        episode = DustEpisode(
            onset_ms=onset,
            rise_h=rng.uniform(1.0, 2.0),
            plateau_h=rng.uniform(4.0, 7.0),
            fall_h=rng.uniform(1.5, 3.0),
            pm25_add=rng.uniform(70.0, 120.0),
            pm10_ratio=rng.uniform(1.7, 2.3),
            station_ids=frozenset(s.device_id for s in nearest[:affected]),
        )
        episodes.append(episode)
        onset = episode.end_ms + int(rng.uniform(24.0, 72.0) * HOUR_MS)
    return episodes


SPIKE_SHARE: Final = 0.8  # of sensor faults; the rest are stuck PM2.5 analysers


class EnvStation(Sensor):
    """An air-quality station reporting its 1-minute values every minute.

    ``fault_rate`` is the expected sensor faults per station and hour: a spike (one PM2.5 reading
    150-300 µg/m³ too high) or, one time in five, a PM2.5 analyser stuck on its last value for 40
    minutes to 3 hours (the data-quality flags and ``device.stuck`` of the worker). Faults are drawn
    from a generator of their own, so the rest of the city is the same with or without them.
    """

    kind = SourceKind.ENVIRONMENT
    __slots__ = (
        "episodes",
        "fault_rate",
        "faults",
        "pm25_base",
        "pm_drift",
        "seq",
        "spec",
        "stuck_until_ms",
        "stuck_value",
        "temp_offset",
        "ts_style",
        "weather",
    )

    def __init__(
        self,
        spec: StationSpec,
        start_ms: int,
        episodes: Sequence[DustEpisode],
        weather: Callable[[int], float],
        rng: random.Random,
        fault_rate: float = 0.0,
    ) -> None:
        super().__init__(spec.device_id, start_ms + rng.randrange(0, STATION_INTERVAL_MS))
        self.fault_rate = fault_rate
        self.faults = random.Random(f"citystream-faults:{spec.device_id}:{start_ms}")
        self.stuck_until_ms = 0
        self.stuck_value = 0.0
        self.spec = spec
        self.seq = rng.randrange(0, 100_000)
        self.ts_style = choose_style(rng, {"kst": 0.8, "epoch_ms": 0.2})
        self.episodes = [e for e in episodes if spec.device_id in e.station_ids]
        district_pm = {"seo": 4.0, "dalseo": 2.0, "jung": 2.0, "dalseong": -4.0, "suseong": -1.0}
        self.pm25_base = rng.gauss(20.0, 2.5) + district_pm.get(spec.district, 0.0)
        self.pm_drift = rng.gauss(0.0, 3.0)
        urban_heat = 0.8 if URBAN_CORE.contains(spec.lat, spec.lon) else -1.2
        self.temp_offset = urban_heat + rng.gauss(0.0, 0.3)
        self.weather = weather

    def fire(self, rng: random.Random) -> Body:
        now_ms = self.due_ms
        self.due_ms = now_ms + STATION_INTERVAL_MS
        self.seq += 1
        body: Body = {
            "device_id": self.device_id,
            "ts": format_ts(now_ms, self.ts_style),
            "seq": self.seq,
            "district": self.spec.district,
            "lat": self.spec.lat,
            "lon": self.spec.lon,
        }
        measurements = self.fault(now_ms, self.measure(now_ms, rng))
        for name, value in measurements.items():
            # an analyser is sometimes in calibration; PM2.5 always reports
            if name == "pm25_ugm3" or rng.random() >= 0.01:
                body[name] = value
        return body

    def fault(self, now_ms: int, measurements: dict[str, float]) -> dict[str, float]:
        """The measurements as a faulty analyser reports them (see the class doc)."""
        if now_ms < self.stuck_until_ms:
            return {**measurements, "pm25_ugm3": self.stuck_value}
        faults = self.faults
        if self.fault_rate and faults.random() < self.fault_rate * STATION_INTERVAL_MS / HOUR_MS:
            pm25 = measurements["pm25_ugm3"]
            if faults.random() < SPIKE_SHARE:
                return {**measurements, "pm25_ugm3": round(pm25 + faults.uniform(150.0, 300.0), 1)}
            self.stuck_value = pm25
            self.stuck_until_ms = now_ms + faults.randrange(40, 181) * MINUTE_MS
        return measurements

    def measure(self, epoch_ms: int, rng: random.Random) -> dict[str, float]:
        hour = kst_hour(epoch_ms)
        spec = self.spec
        traffic = daily_bump(hour, 8.3, 1.5) + 1.2 * daily_bump(hour, 19.5, 2.0)
        dust = sum(e.strength(epoch_ms) * e.pm25_add for e in self.episodes)
        dust10 = sum(e.strength(epoch_ms) * e.pm25_add * e.pm10_ratio for e in self.episodes)
        self.pm_drift = 0.98 * self.pm_drift + rng.gauss(0.0, 0.6)
        diurnal_pm = (
            0.8
            + 0.35 * daily_bump(hour, 8.5, 1.8)
            + 0.45 * daily_bump(hour, 21.0, 2.5)
            - 0.15 * daily_bump(hour, 15.0, 2.5)
        )
        pm25 = max(self.pm25_base * diurnal_pm + self.pm_drift + dust + rng.gauss(0.0, 1.5), 1.0)
        pm10 = max(pm25 * 1.6 + 6.0 + dust10 - dust * 1.6 + rng.gauss(0.0, 3.0), pm25 + 1.0)
        roadside = 1.5 if spec.roadside else 1.0
        rural = spec.district == "dalseong"
        no2 = (0.012 + 0.018 * traffic) * roadside * (0.6 if rural else 1.0)
        o3 = 0.008 + 0.030 * daily_bump(hour, 14.5, 2.8) + (0.006 if rural else 0.0) - 0.004 * min(dust / 80.0, 1.0)
        temp_max, temp_min, humidity_mean = _climate(epoch_ms)
        day_swing = math.cos(2 * math.pi * (hour - 14.5) / 24)
        temp = (
            (temp_max + temp_min) / 2
            + (temp_max - temp_min) / 2 * day_swing
            + self.temp_offset
            + self.weather(epoch_ms)
            + rng.gauss(0.0, 0.2)
        )
        humidity = humidity_mean - 17.0 * day_swing - 1.5 * self.weather(epoch_ms) + rng.gauss(0, 1.5)
        activity = 1 / (1 + math.exp(-(hour - 6.5) * 2)) - 1 / (1 + math.exp(-(hour - 22.5) * 2))
        noise = 42.0 + 20.0 * activity + 3.0 * traffic + (7.0 if spec.roadside else 0.0)
        return {
            "pm10_ugm3": round(pm10, 1),
            "pm25_ugm3": round(pm25, 1),
            "o3_ppm": round(max(o3 + rng.gauss(0.0, 0.002), 0.001), 3),
            "no2_ppm": round(max(no2 + rng.gauss(0.0, 0.002), 0.001), 3),
            "so2_ppm": round(
                max(
                    0.0025
                    + 0.001 * daily_bump(hour, 10.0, 4.0)
                    + (0.0015 if spec.district == "seo" else 0.0)
                    + rng.gauss(0.0, 0.0004),
                    0.001,
                ),
                3,
            ),
            "co_ppm": round(max(0.32 + 0.12 * traffic * roadside + rng.gauss(0.0, 0.03), 0.1), 2),
            "temp_c": round(temp, 1),
            "humidity_pct": round(min(max(humidity, 12.0), 99.0), 1),
            "noise_dba": round(noise + rng.gauss(0.0, 1.5), 1),
        }


def _climate(epoch_ms: int) -> tuple[float, float, float]:
    """Daegu's normals for the day of year, interpolated between mid-month values."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, KST)
    month = moment.month - 1
    frac = (moment.day - 15) / 30.0
    other = (month + (1 if frac >= 0 else -1)) % 12
    weight = abs(frac)
    here, there = DAEGU_CLIMATE[month], DAEGU_CLIMATE[other]
    return tuple(a * (1 - weight) + b * weight for a, b in zip(here, there, strict=True))  # type: ignore[return-value]


def weather_anomaly(rng: random.Random) -> Callable[[int], float]:
    """City-wide temperature anomaly (deg C) of passing weather systems: a few degrees over days."""
    phase1, phase2 = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
    amplitude = rng.uniform(1.5, 3.0)

    def anomaly(epoch_ms: int) -> float:
        days = epoch_ms / DAY_MS
        return amplitude * math.sin(2 * math.pi * days / 4.3 + phase1) + 0.8 * math.sin(
            2 * math.pi * days / 1.7 + phase2
        )

    return anomaly
