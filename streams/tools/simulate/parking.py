"""Parking: the lots' sites and time-of-day occupancy, and the LoRaWAN spot sensors that follow it."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from schemas.readings import SourceKind
from streams.tools.simulate.clock import DAY_MS, MINUTE_MS, choose_style, format_ts, kst_hour, kst_weekend
from streams.tools.simulate.sensor import Body, Sensor

ParkingProfile = Literal["office", "shopping", "market", "residential", "station", "leisure"]


class LotSite(NamedTuple):
    name: str  # lot ids are "<name>-<n>"
    district: str
    lat: float
    lon: float
    profile: ParkingProfile


LOT_SITES: Final[tuple[LotSite, ...]] = (
    LotSite("dongseongro-lot", "jung", 35.8695, 128.5960, "shopping"),
    LotSite("suseong-alpha", "suseong", 35.8385, 128.7046, "residential"),
    LotSite("dongdaegu-station-lot", "dong", 35.8794, 128.6288, "station"),
    LotSite("banwoldang-lot", "jung", 35.8653, 128.5932, "office"),
    LotSite("seomun-market-lot", "jung", 35.8690, 128.5807, "market"),
    LotSite("exco-lot", "buk", 35.9070, 128.6130, "office"),
    LotSite("duryu-park-lot", "dalseo", 35.8530, 128.5610, "leisure"),
    LotSite("daegu-station-lot", "buk", 35.8769, 128.5962, "station"),
    LotSite("seongseo-complex-lot", "dalseo", 35.8450, 128.4960, "office"),
    LotSite("beomeo-lot", "suseong", 35.8590, 128.6270, "office"),
    LotSite("sinam-lot", "dong", 35.8820, 128.6470, "residential"),
    LotSite("suseong-lake-lot", "suseong", 35.8277, 128.6172, "leisure"),
    LotSite("anjirang-lot", "nam", 35.8370, 128.5900, "market"),
    LotSite("chilgok-lot", "buk", 35.9440, 128.5590, "residential"),
    LotSite("hwawon-lot", "dalseong", 35.8040, 128.5000, "residential"),
    LotSite("airport-lot", "dong", 35.8990, 128.6390, "station"),
)

# Target occupancy by hour of day (KST, 0..23), weekday and weekend: cars arrive and leave so
# that a lot tracks it with a lag of about OCCUPANCY_TIME_CONSTANT_S.
OCCUPANCY_CURVES: Final[dict[ParkingProfile, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "office": (
        (
            0.08,
            0.07,
            0.06,
            0.06,
            0.06,
            0.08,
            0.12,
            0.30,
            0.65,
            0.92,
            0.97,
            0.98,
            0.94,
            0.97,
            0.98,
            0.97,
            0.93,
            0.85,
            0.60,
            0.35,
            0.22,
            0.15,
            0.11,
            0.09,
        ),
        (
            0.06,
            0.05,
            0.05,
            0.05,
            0.05,
            0.05,
            0.07,
            0.10,
            0.15,
            0.22,
            0.28,
            0.32,
            0.33,
            0.32,
            0.30,
            0.28,
            0.25,
            0.20,
            0.15,
            0.12,
            0.10,
            0.08,
            0.07,
            0.06,
        ),
    ),
    "shopping": (
        (
            0.10,
            0.07,
            0.05,
            0.05,
            0.05,
            0.05,
            0.06,
            0.10,
            0.18,
            0.30,
            0.45,
            0.65,
            0.80,
            0.85,
            0.88,
            0.90,
            0.93,
            0.95,
            0.97,
            0.92,
            0.80,
            0.55,
            0.30,
            0.15,
        ),
        (
            0.12,
            0.08,
            0.06,
            0.05,
            0.05,
            0.05,
            0.06,
            0.08,
            0.15,
            0.30,
            0.55,
            0.80,
            0.93,
            0.97,
            0.98,
            0.98,
            0.97,
            0.96,
            0.95,
            0.90,
            0.78,
            0.55,
            0.30,
            0.18,
        ),
    ),
    "market": (
        (
            0.05,
            0.05,
            0.05,
            0.06,
            0.10,
            0.20,
            0.35,
            0.55,
            0.80,
            0.92,
            0.96,
            0.97,
            0.95,
            0.92,
            0.88,
            0.82,
            0.72,
            0.60,
            0.45,
            0.30,
            0.18,
            0.10,
            0.07,
            0.05,
        ),
        (
            0.05,
            0.05,
            0.05,
            0.05,
            0.08,
            0.15,
            0.25,
            0.45,
            0.70,
            0.88,
            0.96,
            0.98,
            0.98,
            0.96,
            0.92,
            0.85,
            0.75,
            0.62,
            0.48,
            0.32,
            0.20,
            0.12,
            0.07,
            0.05,
        ),
    ),
    "residential": (
        (
            0.95,
            0.96,
            0.96,
            0.96,
            0.95,
            0.93,
            0.88,
            0.72,
            0.55,
            0.45,
            0.40,
            0.38,
            0.38,
            0.38,
            0.40,
            0.42,
            0.48,
            0.58,
            0.70,
            0.80,
            0.87,
            0.91,
            0.93,
            0.94,
        ),
        (
            0.95,
            0.96,
            0.96,
            0.96,
            0.96,
            0.95,
            0.93,
            0.88,
            0.80,
            0.70,
            0.62,
            0.58,
            0.55,
            0.55,
            0.56,
            0.58,
            0.62,
            0.70,
            0.78,
            0.85,
            0.90,
            0.93,
            0.94,
            0.95,
        ),
    ),
    "station": (
        (
            0.45,
            0.42,
            0.40,
            0.40,
            0.42,
            0.50,
            0.65,
            0.82,
            0.92,
            0.95,
            0.96,
            0.96,
            0.95,
            0.95,
            0.96,
            0.96,
            0.95,
            0.93,
            0.90,
            0.85,
            0.75,
            0.65,
            0.55,
            0.50,
        ),
        (
            0.40,
            0.38,
            0.36,
            0.36,
            0.38,
            0.42,
            0.50,
            0.62,
            0.75,
            0.85,
            0.90,
            0.92,
            0.93,
            0.93,
            0.92,
            0.92,
            0.92,
            0.90,
            0.86,
            0.80,
            0.70,
            0.60,
            0.50,
            0.45,
        ),
    ),
    "leisure": (
        (
            0.05,
            0.04,
            0.03,
            0.03,
            0.03,
            0.04,
            0.08,
            0.12,
            0.15,
            0.20,
            0.28,
            0.35,
            0.40,
            0.42,
            0.45,
            0.50,
            0.55,
            0.62,
            0.68,
            0.65,
            0.50,
            0.30,
            0.15,
            0.08,
        ),
        (
            0.06,
            0.04,
            0.03,
            0.03,
            0.03,
            0.05,
            0.10,
            0.20,
            0.35,
            0.55,
            0.75,
            0.88,
            0.94,
            0.97,
            0.98,
            0.97,
            0.95,
            0.90,
            0.85,
            0.75,
            0.55,
            0.35,
            0.18,
            0.10,
        ),
    ),
}
OCCUPANCY_TIME_CONSTANT_S: Final = 40 * 60.0
PARKING_RECHECK_MS: Final = 15 * MINUTE_MS  # the arrival/departure rates are re-read this often
PARKING_HEARTBEAT_MS: Final = DAY_MS
# At start every sensor reports its current state once within this much simulated time, as a
# network server does when its integration (re)connects: the worker learns every spot at once.
PARKING_STARTUP_SYNC_MS: Final = MINUTE_MS


@dataclass(frozen=True)
class LotSpec:
    lot_id: str
    district: str
    lat: float
    lon: float
    profile: ParkingProfile
    capacity: int
    peak_factor: float  # scales the profile's curve: some lots run fuller than others


def spot_ids(count: int) -> list[str]:
    """Spot ids A001..A100, B001..B100, ... as painted on the ground."""
    return [f"{chr(ord('A') + i // 100)}{i % 100 + 1:03d}" for i in range(count)]


def parking_device_id(lot_id: str, spot_id: str) -> str:
    return f"pk-{lot_id}-{spot_id}"


def occupancy_target(profile: ParkingProfile, epoch_ms: int, peak_factor: float) -> float:
    """The share of a lot's spots taken at this time of day (KST), from the lot's profile."""
    weekday, weekend = OCCUPANCY_CURVES[profile]
    curve = weekend if kst_weekend(epoch_ms) else weekday
    hour = kst_hour(epoch_ms)
    low = int(hour)
    frac = hour - low
    value = curve[low] * (1 - frac) + curve[(low + 1) % 24] * frac
    return min(max(value * peak_factor, 0.02), 0.985)


class ParkingSpot(Sensor):
    """A LoRaWAN spot sensor: an uplink on every change of state and a daily heartbeat.

    The spot is a two-state process whose arrival and departure rates follow the lot's target
    occupancy p(t): a free spot is taken at rate p/tau, a taken one freed at rate (1-p)/tau, so a
    lot tracks p(t) with a lag of tau (40 minutes).
    """

    kind = SourceKind.PARKING
    __slots__ = (
        "base_rssi",
        "battery_v",
        "lot",
        "next_change_ms",
        "next_heartbeat_ms",
        "occupied",
        "real_change",
        "seq",
        "spot_id",
        "ts_style",
    )

    def __init__(self, lot: LotSpec, spot_id: str, start_ms: int, rng: random.Random) -> None:
        self.lot = lot
        self.spot_id = spot_id
        self.occupied = rng.random() < occupancy_target(lot.profile, start_ms, lot.peak_factor)
        self.seq = rng.randrange(0, 40_000)
        self.ts_style = choose_style(rng, {"kst": 0.6, "utc": 0.2, "epoch_ms": 0.2})
        low_battery = rng.random() < 0.03
        self.battery_v = rng.uniform(2.70, 2.86) if low_battery else rng.uniform(3.05, 3.60)
        self.base_rssi = min(max(rng.gauss(-96.0, 9.0), -125.0), -62.0)
        self.next_heartbeat_ms = start_ms + rng.randrange(0, PARKING_STARTUP_SYNC_MS)
        self.next_change_ms = 0
        self.real_change = False
        self._schedule_change(start_ms, rng)
        super().__init__(parking_device_id(lot.lot_id, spot_id), self._next_due())

    def _next_due(self) -> int:
        return min(self.next_change_ms, self.next_heartbeat_ms)

    def _schedule_change(self, now_ms: int, rng: random.Random) -> None:
        share = occupancy_target(self.lot.profile, now_ms, self.lot.peak_factor)
        rate = (1 - share if self.occupied else share) / OCCUPANCY_TIME_CONSTANT_S
        wait_ms = int(rng.expovariate(rate) * 1000) + 1
        # the rates change with the time of day: look again after a while
        self.real_change = wait_ms <= PARKING_RECHECK_MS
        self.next_change_ms = now_ms + min(wait_ms, PARKING_RECHECK_MS)

    def fire(self, rng: random.Random) -> Body | None:
        now_ms = self.due_ms
        if now_ms == self.next_heartbeat_ms:
            kind = "heartbeat"
            self.next_heartbeat_ms = now_ms + PARKING_HEARTBEAT_MS + rng.randrange(-30 * MINUTE_MS, 30 * MINUTE_MS)
        else:
            change = self.real_change
            if change:
                self.occupied = not self.occupied
            self._schedule_change(now_ms, rng)
            kind = "change" if change else ""
        self.due_ms = self._next_due()
        if not kind:
            return None
        return self._uplink(now_ms, kind, rng)

    def _uplink(self, now_ms: int, kind: str, rng: random.Random) -> Body:
        self.seq += 1
        self.battery_v = max(self.battery_v - 0.00002, 2.5)
        rssi = round(self.base_rssi + rng.gauss(0.0, 2.5))
        snr = (rssi + 120) / 4 - 4 + rng.gauss(0.0, 1.2)
        return {
            "device_id": self.device_id,
            "ts": format_ts(now_ms, self.ts_style),
            "seq": self.seq,
            "lot_id": self.lot.lot_id,
            "spot_id": self.spot_id,
            "occupied": self.occupied,
            "kind": kind,
            "battery_v": round(self.battery_v + rng.uniform(-0.005, 0.005), 2),
            "rssi_dbm": float(min(max(rssi, -140), -40)),
            "snr_db": round(min(max(snr, -20.0), 12.0), 1),
        }
