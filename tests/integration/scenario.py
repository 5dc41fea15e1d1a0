"""A reproducible stream of readings for the window tests, and the aggregates it must give.

The expected aggregates are computed here independently of the worker's code (plain loops over
the readings), except the CAI, whose function has its own table-driven tests.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import h3
import orjson

from streams.core.cai import comprehensive_index, pm_24h_mean

MINUTE = 60_000
HOUR = 3_600_000
TAXI, PARKING, ENV = "city.taxi.adas.v1", "city.parking.v1", "city.env.v1"

# four spots in Daegu, each in its own H3 resolution-9 cell
PLACES = [(35.8714, 128.6014), (35.8580, 128.6300), (35.8850, 128.5850), (35.8400, 128.5500)]
EVENTS = ["NONE"] * 12 + ["FCW", "UFCW", "PCW", "LDW_L", "LDW_R", "HMW", "OVERSPEED", "POTHOLE", "OBSTACLE"]


@dataclass
class Scenario:
    messages: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    valid: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # counted in aggregates
    late: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # raw only
    duplicates: int = 0
    capacities: dict[str, int] = field(default_factory=dict)

    def registry_yaml(self) -> str:
        lots = "".join(f"  {lot}: {{capacity: {cap}}}\n" for lot, cap in self.capacities.items())
        return f"parking_lots:\n{lots}" if lots else ""


def build(
    start_ms: int,
    *,
    seed: int = 7,
    taxis: int = 6,
    minutes: int = 15,
    env_hours: int = 2,
    lots: int = 2,
    spots: int = 6,
    stations: int = 3,
) -> Scenario:
    """Readings from ``start_ms`` on (align it to an hour), sent roughly in event-time order with
    up to two minutes of disorder, some sent twice, and one late reading per taxi, spot and station."""
    rng = random.Random(seed)
    scenario = Scenario()
    readings: list[tuple[int, str, dict[str, Any]]] = []  # (send order key, topic, reading)

    for t in range(taxis):
        device = f"taxi-{seed}-{t}"
        seq = 0
        for ts in range(start_ms + rng.randrange(10_000), start_ms + minutes * MINUTE, 10_000):
            lat, lon = PLACES[rng.randrange(len(PLACES))]
            event = rng.choice(EVENTS)
            speed = round(rng.uniform(0, 90), 1)
            reading = {
                "device_id": device,
                "ts": ts,
                "seq": seq,
                "lat": lat,
                "lon": lon,
                "speed_kmh": speed,
                "event": event,
            }
            readings.append((ts, TAXI, reading))
            seq += 1
        newest = readings[-1][2]
        late = dict(newest, ts=newest["ts"] - 14 * MINUTE, seq=seq)
        readings.append((newest["ts"] + 1, TAXI, late))  # sent after its newest reading: same cell, late
        scenario.late.append((TAXI, late))

    for lot_number in range(lots):
        lot = f"lot-{seed}-{lot_number}"
        scenario.capacities[lot] = spots + 2
        for s in range(spots):
            device = f"pk-{seed}-{lot_number}-{s}"
            occupied = rng.random() < 0.5
            seq = 0
            ts = start_ms + rng.randrange(MINUTE)
            while ts < start_ms + minutes * MINUTE:
                kind = "heartbeat" if rng.random() < 0.2 else "change"
                if kind == "change":
                    occupied = not occupied
                reading = {
                    "device_id": device,
                    "ts": ts,
                    "seq": seq,
                    "lot_id": lot,
                    "spot_id": f"S{s:03d}",
                    "occupied": occupied,
                    "kind": kind,
                    "battery_v": round(rng.uniform(2.8, 3.6), 2),
                }
                readings.append((ts, PARKING, reading))
                seq += 1
                ts += rng.randrange(20_000, 150_000)
            newest = readings[-1][2]
            late = dict(newest, ts=newest["ts"] - 14 * MINUTE, seq=seq, occupied=not newest["occupied"])
            readings.append((newest["ts"] + 1, PARKING, late))
            scenario.late.append((PARKING, late))

    for n in range(stations):
        device = f"env-{seed}-{n}"
        district = ["jung", "dong gu", None][n % 3]
        seq = 0
        for ts in range(start_ms + rng.randrange(30_000), start_ms + env_hours * HOUR, 30_000):
            reading: dict[str, Any] = {
                "device_id": device,
                "ts": ts,
                "seq": seq,
                "pm25_ugm3": round(rng.uniform(5, 120), 1),
                "pm10_ugm3": round(rng.uniform(10, 200), 1),
                "o3_ppm": round(rng.uniform(0.0, 0.1), 3),
                "temp_c": round(rng.uniform(0, 15), 1),
            }
            if district is not None:
                reading["district"] = district
            if rng.random() < 0.3:
                del reading["o3_ppm"]
            readings.append((ts, ENV, reading))
            seq += 1
        newest = readings[-1][2]
        late = dict(newest, ts=newest["ts"] - 20 * MINUTE, seq=seq)
        readings.append((newest["ts"] + 1, ENV, late))
        scenario.late.append((ENV, late))

    late_ids = {id(r) for _, r in scenario.late}
    # send in event-time order with up to two minutes of disorder
    ordered = sorted(
        readings, key=lambda item: item[0] + (0 if id(item[2]) in late_ids else rng.uniform(-MINUTE, MINUTE))
    )
    for _, topic, reading in ordered:
        if id(reading) not in late_ids:
            scenario.valid.append((topic, reading))
        value = orjson.dumps(reading)
        scenario.messages.append((topic, reading["device_id"].encode(), value))
        if rng.random() < 0.05:
            scenario.messages.append((topic, reading["device_id"].encode(), value))
            scenario.duplicates += 1
    return scenario


def _stats(values: list[float]) -> tuple[float, float, float]:
    return math.fsum(values) / len(values), min(values), max(values)


def expected_taxi(scenario: Scenario) -> dict[tuple[str, int], dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for topic, r in scenario.valid:
        if topic == TAXI:
            groups[(h3.latlng_to_cell(r["lat"], r["lon"], 9), r["ts"] - r["ts"] % MINUTE)].append(r)
    result = {}
    for key, rs in groups.items():
        mean, low, high = _stats([r["speed_kmh"] for r in rs])
        events = [r["event"] for r in rs]
        result[key] = {
            "readings": len(rs),
            "taxis": len({r["device_id"] for r in rs}),
            "speed_mean": mean,
            "speed_min": low,
            "speed_max": high,
            "fcw": events.count("FCW"),
            "ufcw": events.count("UFCW"),
            "pcw": events.count("PCW"),
            "ldw": events.count("LDW_L") + events.count("LDW_R"),
            "hmw": events.count("HMW"),
            "overspeed": events.count("OVERSPEED"),
            "pothole": events.count("POTHOLE"),
            "obstacle": events.count("OBSTACLE"),
        }
    return result


def expected_parking(scenario: Scenario) -> dict[tuple[str, int], dict[str, Any]]:
    by_lot: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for topic, r in scenario.valid:
        if topic == PARKING:
            by_lot[r["lot_id"]].append(r)
    result = {}
    for lot, rs in by_lot.items():
        for start in sorted({r["ts"] - r["ts"] % MINUTE for r in rs}):
            end = start + MINUTE
            latest: dict[str, dict[str, Any]] = {}
            for r in sorted(rs, key=lambda r: r["ts"]):
                if r["ts"] < end:
                    latest[r["spot_id"]] = r
            occupied = sum(1 for r in latest.values() if r["occupied"])
            capacity = scenario.capacities.get(lot) or len(latest)
            result[(lot, start)] = {
                "occupied": occupied,
                "known_spots": len(latest),
                "capacity": capacity,
                "occupancy": occupied / capacity,
                "changes": sum(1 for r in rs if start <= r["ts"] < end and r["kind"] == "change"),
            }
    return result


MEASURED = ("pm10_ugm3", "pm25_ugm3", "o3_ppm", "temp_c")


def expected_environment(scenario: Scenario, size: int) -> dict[tuple[str, str, int], dict[str, Any]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for topic, r in scenario.valid:
        if topic == ENV:
            groups[(r["device_id"], r.get("district", "unknown"), r["ts"] - r["ts"] % size)].append(r)
    result: dict[tuple[str, str, int], dict[str, Any]] = {}
    for key, rs in sorted(groups.items(), key=lambda item: item[0][2]):
        row: dict[str, Any] = {"readings": len(rs)}
        for q in MEASURED:
            values = [r[q] for r in rs if q in r]
            if values:
                row[f"{q}_mean"], row[f"{q}_min"], row[f"{q}_max"] = _stats(values)
        result[key] = row
    if size == HOUR:
        for (device, district, start), row in result.items():
            history = {
                q: {
                    s: r[f"{q}_mean"]
                    for (d, di, s), r in result.items()
                    if (d, di) == (device, district) and f"{q}_mean" in r
                }
                for q in ("pm10_ugm3", "pm25_ugm3")
            }
            gases = {"o3_ppm": row["o3_ppm_mean"]} if "o3_ppm_mean" in row else {}
            particles = {
                q: m
                for q in history
                if (m := pm_24h_mean({s: v for s, v in history[q].items() if s <= start}, start)) is not None
            }
            cai = comprehensive_index(gases, particles)
            if cai is not None:
                row.update(cai=cai.cai, cai_grade=cai.grade, cai_pollutant=cai.pollutant)
    return result


def differences(expected: dict[Any, dict[str, Any]], actual: dict[Any, dict[str, Any]]) -> list[str]:
    """Human-readable differences; empty when every window has the expected values."""
    problems = []
    for key in sorted(set(expected) | set(actual), key=str):
        if key not in actual:
            problems.append(f"missing {key}")
            continue
        if key not in expected:
            problems.append(f"unexpected {key}: {actual[key]}")
            continue
        for name, want in expected[key].items():
            got = actual[key].get(name)
            if isinstance(want, float) and isinstance(got, (int, float)):
                if not math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-9):
                    problems.append(f"{key} {name}: expected {want}, got {got}")
            elif want != got:
                problems.append(f"{key} {name}: expected {want!r}, got {got!r}")
    return problems
