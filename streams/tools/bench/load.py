"""What the bench sends: a city mix of single readings and batch envelopes, and its constants."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import orjson
from pydantic import BaseModel

from schemas.readings import SOURCE_TOPICS, EnvReading, ParkingReading, SourceKind, TaxiReading

TAXI, PARKING, ENV = (SOURCE_TOPICS[kind] for kind in (SourceKind.TAXI, SourceKind.PARKING, SourceKind.ENVIRONMENT))
MODELS: dict[str, type[BaseModel]] = {TAXI: TaxiReading, PARKING: ParkingReading, ENV: EnvReading}
RAW_FIELDS = {"taxi_adas": "speed_kmh", "parking": "occupied", "environment": "pm25_ugm3"}
PARTITIONS = 12
DATABASE = "bench"
PROBE_DEVICE = "bench-probe"
WARM_UP_DEVICE = "bench-warm-up"
PROBE_EVERY_S = 0.1
LOTS, SPOTS_PER_LOT = 100, 20
WARNINGS = ("FCW", "UFCW", "PCW", "LDW_L", "LDW_R", "HMW", "OVERSPEED")

Message = tuple[str, bytes, bytes]  # topic, key, value


# readings ----------------------------------------------------------------------------------------


def taxi_reading(device: str, ts: int, seq: int, rng: random.Random, number: int = 0) -> dict[str, Any]:
    # a taxi drives: its position moves about 30 m a reading from a start of its own
    lat = 35.80 + (number * 7919 % 1000) / 1000 * 0.12 + (seq % 400) * 0.0003
    lon = 128.50 + (number * 104_729 % 1000) / 1000 * 0.20
    reading: dict[str, Any] = {
        "device_id": device,
        "ts": ts,
        "seq": seq,
        "lat": round(min(lat, 36.0), 6),
        "lon": round(lon, 6),
        "speed_kmh": round(rng.uniform(0, 80), 1),
        "heading_deg": float(rng.randrange(360)),
        "event": "NONE",
    }
    if rng.random() < 0.05:
        reading["event"] = rng.choice(WARNINGS)
        reading["ttc_s"] = round(rng.uniform(0.5, 3), 2)
    return reading


def parking_reading(
    device: str, ts: int, seq: int, rng: random.Random, lot: str, spot: str, occupied: bool
) -> dict[str, Any]:
    return {
        "device_id": device,
        "ts": ts,
        "seq": seq,
        "lot_id": lot,
        "spot_id": spot,
        "occupied": occupied,
        "battery_v": round(rng.uniform(3.1, 3.6), 2),
        "rssi_dbm": float(-rng.randrange(60, 120)),
    }


def env_reading(device: str, ts: int, seq: int, rng: random.Random) -> dict[str, Any]:
    return {
        "device_id": device,
        "ts": ts,
        "seq": seq,
        "pm25_ugm3": round(rng.uniform(5, 60), 1),
        "pm10_ugm3": round(rng.uniform(10, 120), 1),
        "no2_ppm": round(rng.uniform(0.005, 0.05), 3),
        "temp_c": round(rng.uniform(-5, 30), 1),
        "humidity_pct": round(rng.uniform(20, 90), 1),
    }


class CityMix:
    """Readings as a city sends them: 60% taxi, 30% parking, 10% environment by count, from
    ``devices`` devices of which 5% are taxis (they report often), 1% stations and the rest parking
    sensors (many, each reporting rarely: a change of state, a heartbeat). Every device's readings
    come in order, with a rising ``seq``. With ``only`` (a source topic), readings of that kind alone,
    from ``devices`` devices of it."""

    def __init__(self, devices: int, seed: int, only: str | None = None) -> None:
        self.rng = random.Random(seed)
        self.only = only
        if only is not None:
            self.pools = {only: max(1, devices)}
        else:
            self.pools = {TAXI: max(1, devices * 5 // 100), ENV: max(1, devices // 100)}
            self.pools[PARKING] = max(1, devices - self.pools[TAXI] - self.pools[ENV])
        self.sent = dict.fromkeys(self.pools, 0)

    def topic_of(self, i: int) -> str:
        if self.only is not None:
            return self.only
        return TAXI if i % 10 < 6 else PARKING if i % 10 < 9 else ENV

    def reading(self, topic: str, ts: int, device: int | None = None, seq: int | None = None) -> dict[str, Any]:
        """The next reading of a kind (of one device when given)."""
        n = self.sent[topic]
        self.sent[topic] = n + 1
        pool = self.pools[topic]
        device = n % pool if device is None else device
        seq = n // pool if seq is None else seq
        rng = self.rng
        if topic == TAXI:
            return taxi_reading(f"taxi-{device:06d}", ts, seq, rng, device)
        if topic == PARKING:
            lot, spot = divmod(device, SPOTS_PER_LOT)
            occupied = rng.random() < 0.6
            return parking_reading(f"pk-{device:06d}", ts, seq, rng, f"lot-{lot:05d}", f"S{spot:02d}", occupied)
        return env_reading(f"env-{device:06d}", ts, seq, rng)


def single_messages(
    readings: int, devices: int, start_ms: int, span_ms: int, seed: int = 1, only: str | None = None
) -> Iterator[Message]:
    """Single-reading messages of a :class:`CityMix`, spread over ``span_ms``."""
    mix = CityMix(devices, seed, only)
    for i in range(readings):
        topic = mix.topic_of(i)
        reading = mix.reading(topic, start_ms + i * span_ms // readings)
        yield topic, reading["device_id"].encode(), orjson.dumps(reading)


def batch_messages(
    readings: int, batch_size: int, start_ms: int, span_ms: int, seed: int = 2, only: str | None = None
) -> Iterator[Message]:
    """Envelopes of ``batch_size`` readings of one device (a gateway's buffered upload), the kinds
    in the proportions of :class:`CityMix` (or ``only`` one)."""
    batches = max(1, readings // batch_size)
    mix = CityMix(batches, seed, only)
    step = max(1, span_ms // batch_size)
    for b in range(batches):
        topic = mix.topic_of(b)
        device = b
        batch = [mix.reading(topic, start_ms + n * step, device, n) for n in range(batch_size)]
        yield topic, batch[0]["device_id"].encode(), orjson.dumps({"batch": batch})


# measuring ---------------------------------------------------------------------------------------
