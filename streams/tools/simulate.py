"""``citystream simulate``: a seeded simulator of Daegu's city sensors, producing to Kafka.

Taxis with ADAS cameras drive a street grid laid over the city, parking spot sensors follow each
lot's time-of-day occupancy, and air-quality stations report every minute with diurnal cycles and
fine-dust episodes. Every reading follows the wire contract (sections 1 and 2); a share of the
messages are deliberately invalid, one per dead-letter reason of section 4, and a share are
duplicates, so a demo exercises the whole worker.

The module has two layers:

* pure, seeded generation: :class:`CityLayout` (what exists: lots, stations, taxis),
  :class:`City` (what happens: readings in simulated time), :class:`MessageComposer` (how readings
  become Kafka messages: single readings, batch envelopes, invalid messages, duplicates) and
  :func:`generate_messages`, which tests call without a broker;
* a thin producer: :func:`run_simulation` paces readings with a token bucket, sends them through
  aiokafka record batches per partition and returns a :class:`SimulationReport`.

Simulated time never runs ahead of the clock: a run of D wall seconds at speedup S simulates the
D*S seconds that end when the run ends (see :class:`SimulatedPeriod`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import random
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import click
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from schemas.codec import dumps
from schemas.readings import ENV_MEASUREMENTS, SOURCE_TOPICS, SourceKind
from schemas.timestamps import format_ms
from streams.clients.kafka import BrokerUnavailable, contract_topics, ensure_topics
from streams.settings import ConfigError, Settings, kafka_client_kwargs, load_settings

# --------------------------------------------------------------------------------------------
# Contract limits (sections 2 and 4) the invalid messages are built against
# --------------------------------------------------------------------------------------------

MAX_MESSAGE_BYTES: Final = 1024 * 1024
MAX_BATCH_READINGS: Final = 1000
FUTURE_OFFSET_MS: Final = 3_600_000  # future_timestamp messages: 1 hour ahead of the clock
STALE_OFFSET_MS: Final = 8 * 86_400_000  # stale_timestamp messages: 8 days behind the clock

DeadLetterReason = Literal[
    "not_utf8",
    "malformed_json",
    "not_an_object",
    "too_large",
    "bad_batch",
    "schema",
    "future_timestamp",
    "stale_timestamp",
]
MESSAGE_REASONS: Final[tuple[DeadLetterReason, ...]] = (
    "not_utf8",
    "malformed_json",
    "not_an_object",
    "too_large",
    "bad_batch",
    "schema",
    "future_timestamp",
    "stale_timestamp",
)
# what one element of an otherwise valid batch can be wrong about
ELEMENT_REASONS: Final[tuple[DeadLetterReason, ...]] = (
    "schema",
    "future_timestamp",
    "stale_timestamp",
    "not_an_object",
)

KST: Final = timezone(timedelta(hours=9), "KST")
SECOND_MS: Final = 1000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS

# --------------------------------------------------------------------------------------------
# Daegu's geography
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BBox:
    south: float
    north: float
    west: float
    east: float

    def contains(self, lat: float, lon: float) -> bool:
        return self.south <= lat <= self.north and self.west <= lon <= self.east


DAEGU_BBOX: Final = BBox(35.60, 36.02, 128.35, 128.77)
URBAN_CORE: Final = BBox(35.80, 35.92, 128.50, 128.70)
# where taxis drive: the built-up part of the city, without Palgongsan and Biseulsan
TAXI_SERVICE_AREA: Final = BBox(35.70, 35.98, 128.42, 128.75)

# metres per degree at Daegu's latitude (~35.87 N)
M_PER_DEG_LAT: Final = 110_940.0
M_PER_DEG_LON: Final = 90_200.0


@dataclass(frozen=True)
class District:
    tag: str  # the district tag written to InfluxDB and the registry
    name: str
    lat: float
    lon: float
    spread_deg: float  # how far from the centroid its built-up area reaches
    taxi_weight: float  # share of taxi trips that end there


DISTRICTS: Final[dict[str, District]] = {
    d.tag: d
    for d in (
        District("jung", "Jung-gu", 35.8694, 128.5939, 0.008, 0.16),
        District("dong", "Dong-gu", 35.8950, 128.6600, 0.025, 0.13),
        District("seo", "Seo-gu", 35.8718, 128.5592, 0.010, 0.10),
        District("nam", "Nam-gu", 35.8461, 128.5975, 0.010, 0.10),
        District("buk", "Buk-gu", 35.9057, 128.5827, 0.018, 0.15),
        District("suseong", "Suseong-gu", 35.8400, 128.6480, 0.018, 0.13),
        District("dalseo", "Dalseo-gu", 35.8299, 128.5327, 0.018, 0.15),
        District("dalseong", "Dalseong-gun", 35.7746, 128.4614, 0.035, 0.08),
    )
}


class Place(NamedTuple):
    name: str
    lat: float
    lon: float


# where many taxi trips start and end
TAXI_HUBS: Final[tuple[Place, ...]] = (
    Place("Dongdaegu Station", 35.8796, 128.6286),
    Place("Daegu Station", 35.8757, 128.5962),
    Place("Banwoldang", 35.8655, 128.5934),
    Place("Seomun Market", 35.8687, 128.5807),
    Place("Daegu International Airport", 35.8994, 128.6390),
    Place("EXCO", 35.9066, 128.6131),
    Place("Kyungpook National University", 35.8903, 128.6113),
    Place("Beomeo Station", 35.8592, 128.6270),
    Place("Duryu Station", 35.8526, 128.5648),
    Place("Suseong Lake", 35.8270, 128.6171),
    Place("Seongseo Industrial Complex", 35.8452, 128.4967),
    Place("Chilgok", 35.9431, 128.5557),
)
HUB_TRIP_SHARE: Final = 0.35

# The street grid: taxis drive along lines of constant latitude (east-west roads) and constant
# longitude (north-south roads), one block (~500 m) apart, and stop at signalised crossings.
GRID_LAT0: Final = DAEGU_BBOX.south
GRID_LON0: Final = DAEGU_BBOX.west
BLOCK_DLAT: Final = 0.0045
BLOCK_DLON: Final = 0.0055
BLOCK_Y_M: Final = BLOCK_DLAT * M_PER_DEG_LAT  # ~499 m
BLOCK_X_M: Final = BLOCK_DLON * M_PER_DEG_LON  # ~496 m


def grid_node(lat: float, lon: float) -> tuple[int, int]:
    """The street crossing nearest to a point, as (row, column) of the grid."""
    return round((lat - GRID_LAT0) / BLOCK_DLAT), round((lon - GRID_LON0) / BLOCK_DLON)


def node_lat(row: float) -> float:
    return GRID_LAT0 + row * BLOCK_DLAT


def node_lon(col: float) -> float:
    return GRID_LON0 + col * BLOCK_DLON


_SERVICE_ROWS: Final = (
    math.ceil((TAXI_SERVICE_AREA.south - GRID_LAT0) / BLOCK_DLAT),
    math.floor((TAXI_SERVICE_AREA.north - GRID_LAT0) / BLOCK_DLAT),
)
_SERVICE_COLS: Final = (
    math.ceil((TAXI_SERVICE_AREA.west - GRID_LON0) / BLOCK_DLON),
    math.floor((TAXI_SERVICE_AREA.east - GRID_LON0) / BLOCK_DLON),
)


def road_speed_limit(line: int) -> float:
    """Speed limit (km/h) of the road along grid line ``line``: urban expressways, arterials at
    60 and 50 km/h ("safe speed 5030"), and 30 km/h residential streets."""
    if line % 12 == 0:
        return 70.0
    if line % 4 == 0:
        return 60.0
    if line % 2 == 0:
        return 50.0
    return 30.0


def is_signalised(row: int, col: int) -> bool:
    """Crossings on an arterial (an even line) have traffic lights."""
    return row % 2 == 0 or col % 2 == 0


@dataclass(frozen=True)
class Hotspot:
    """A crossing where collision warnings cluster (many pedestrians, weaving, short merges)."""

    name: str
    lat: float
    lon: float
    collision_factor: float  # multiplies FCW and UFCW rates within RADIUS_M
    pedestrian_factor: float  # multiplies PCW rates

    RADIUS_M = 150.0


def _hub_node(name: str) -> tuple[int, int]:
    hub = next(h for h in TAXI_HUBS if h.name == name)
    return grid_node(hub.lat, hub.lon)


def _hotspot(name: str, collision: float, pedestrian: float) -> Hotspot:
    row, col = _hub_node(name)
    return Hotspot(name, node_lat(row), node_lon(col), collision, pedestrian)


COLLISION_HOTSPOTS: Final[tuple[Hotspot, ...]] = (
    _hotspot("Banwoldang", 60.0, 70.0),
    _hotspot("Dongdaegu Station", 60.0, 40.0),
    _hotspot("Seomun Market", 30.0, 80.0),
    _hotspot("Beomeo Station", 60.0, 30.0),
    _hotspot("Duryu Station", 50.0, 40.0),
)


@dataclass(frozen=True)
class RoadHazard:
    """A fixed pothole or fallen object that the taxis' cameras report as they pass it."""

    label: str
    event: Literal["POTHOLE", "OBSTACLE"]
    axis: Literal["row", "col"]  # the road it lies on: a row (east-west) or a column (north-south)
    line: int
    position: float  # grid coordinate along that road

    DETECTION_M = 25.0
    DETECTION_PROBABILITY = 0.75

    @property
    def lat(self) -> float:
        return node_lat(self.line if self.axis == "row" else self.position)

    @property
    def lon(self) -> float:
        return node_lon(self.position if self.axis == "row" else self.line)


def _hazard(
    label: str, event: Literal["POTHOLE", "OBSTACLE"], hub: str, axis: Literal["row", "col"], offset_blocks: float
) -> RoadHazard:
    row, col = _hub_node(hub)
    if axis == "row":  # on the east-west road through the hub, east (+) or west (-) of it
        return RoadHazard(label, event, "row", row, col + offset_blocks)
    return RoadHazard(label, event, "col", col, row + offset_blocks)


ROAD_HAZARDS: Final[tuple[RoadHazard, ...]] = (
    _hazard("pothole east of Dongdaegu Station", "POTHOLE", "Dongdaegu Station", "row", 0.5),
    _hazard("pothole north of Daegu Station", "POTHOLE", "Daegu Station", "col", 0.45),
    _hazard("fallen cargo west of EXCO", "OBSTACLE", "EXCO", "row", -0.4),
    _hazard("pothole south of Suseong Lake", "POTHOLE", "Suseong Lake", "col", -0.55),
    _hazard("construction debris east of Duryu Station", "OBSTACLE", "Duryu Station", "row", 0.5),
)
_HAZARDS_BY_ROAD: Final[dict[tuple[str, int], tuple[RoadHazard, ...]]] = {
    (axis, line): tuple(h for h in ROAD_HAZARDS if (h.axis, h.line) == (axis, line))
    for axis, line in {(h.axis, h.line) for h in ROAD_HAZARDS}
}

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

# --------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class SimulatedPeriod:
    """How a run's wall time maps to simulated time.

    A run that starts at wall time W and lasts D seconds at speedup S simulates the D*S seconds
    ending at W + D: simulated time t(w) = W + D - S * (W + D - w). It advances S times faster than
    the clock and reaches the clock exactly at the end, so no reading is ever ahead of the clock
    (t(w) <= w for every w of the run); with S = 1 it is the clock itself. The oldest reading
    is D*(S-1) seconds old when sent, which the worker must still accept (7 days by default).
    """

    run_start_ms: int
    duration_s: float
    speedup: float

    @property
    def start_ms(self) -> int:
        """Simulated time at the start of the run."""
        return self.end_ms - round(self.duration_s * self.speedup * 1000)

    @property
    def end_ms(self) -> int:
        """Simulated time at the end of the run: the wall clock then."""
        return self.run_start_ms + round(self.duration_s * 1000)

    def simulated_ms(self, wall_ms: int) -> int:
        """Simulated time at wall time ``wall_ms`` (never after ``wall_ms`` within the run)."""
        elapsed_ms = min(max(wall_ms - self.run_start_ms, 0), self.duration_s * 1000)
        return self.start_ms + int(elapsed_ms * self.speedup)


TsStyle = Literal["epoch_ms", "kst", "utc"]


def format_ts(epoch_ms: int, style: TsStyle) -> int | str:
    """A reading's ``ts`` as its sender writes it: epoch ms, or RFC 3339 in KST or UTC."""
    if style == "epoch_ms":
        return epoch_ms
    if style == "utc":
        return format_ms(epoch_ms)
    seconds, millis = divmod(epoch_ms, 1000)
    prefix = _KST_SECONDS.get(seconds)
    if prefix is None:
        if len(_KST_SECONDS) > 4096:
            _KST_SECONDS.clear()
        prefix = _KST_SECONDS[seconds] = datetime.fromtimestamp(seconds, KST).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{prefix}.{millis:03d}+09:00"


_KST_SECONDS: dict[int, str] = {}  # epoch second -> its KST text, for the many readings per second


def kst_hour(epoch_ms: int) -> float:
    """Hour of day in Korea (0 <= h < 24, fractional)."""
    return ((epoch_ms + 9 * HOUR_MS) % DAY_MS) / HOUR_MS


def kst_weekend(epoch_ms: int) -> bool:
    day = (epoch_ms + 9 * HOUR_MS) // DAY_MS  # days since 1970-01-01 (a Thursday) in KST
    return (day + 3) % 7 >= 5


def daily_bump(hour: float, centre: float, width: float) -> float:
    """A bell curve over the hour of day, wrapping around midnight; 1 at ``centre``."""
    delta = (hour - centre + 12.0) % 24.0 - 12.0
    return math.exp(-0.5 * (delta / width) ** 2)


def _choose_style(rng: random.Random, weights: Mapping[TsStyle, float]) -> TsStyle:
    styles = list(weights)
    return rng.choices(styles, weights=[weights[s] for s in styles])[0]


# --------------------------------------------------------------------------------------------
# Options and report
# --------------------------------------------------------------------------------------------

Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]


def compression_available(compression: Compression) -> bool:
    from aiokafka import codec

    checks: dict[str, Callable[[], bool]] = {
        "gzip": codec.has_gzip,
        "snappy": codec.has_snappy,
        "lz4": codec.has_lz4,
        "zstd": codec.has_zstd,
    }
    return compression == "none" or checks[compression]()


@dataclass(frozen=True)
class SimulationOptions:
    """What to simulate and how to send it; the defaults make a lively demo of ~500 readings/s."""

    duration_s: float = 60.0
    rate: float = 500.0  # target valid readings per second, all topics (a token bucket caps it)
    taxis: int | None = None  # None: as many as ``rate`` needs (see resolved_taxis)
    lots: int = 12
    spots_per_lot: int = 80
    stations: int = 24
    speedup: float = 1.0
    batch_share: float = 0.2
    batch_size: int = 50
    invalid_share: float = 0.01
    duplicate_share: float = 0.005
    seed: int | None = None
    bootstrap: str | None = None
    registry_out: Path | None = None
    compression: Compression = "none"

    def __post_init__(self) -> None:
        checks = [
            (self.duration_s > 0, "duration must be > 0 s"),
            (self.rate > 0, "rate must be > 0 readings/s"),
            ((self.taxis or 0) >= 0 and self.lots >= 0 and self.stations >= 0, "taxis, lots and stations must be >= 0"),
            (1 <= self.spots_per_lot <= 2600, "spots per lot must be 1..2600 (A001..Z100)"),
            (self.speedup >= 1, "speedup must be >= 1"),
            (0 <= self.batch_share <= 1, "batch share must be 0..1"),
            (1 <= self.batch_size <= MAX_BATCH_READINGS, "batch size must be 1..1000"),
            (0 <= self.invalid_share <= 0.5, "invalid share must be 0..0.5"),
            (0 <= self.duplicate_share <= 0.5, "duplicate share must be 0..0.5"),
            (
                compression_available(self.compression),
                f"the compression library for {self.compression} is not installed",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if resolved_taxis(self) + self.lots + self.stations == 0:
            raise ValueError("simulate at least one taxi, lot or station")

    @property
    def backdated_s(self) -> float:
        """How old the oldest simulated reading is when it is sent."""
        return self.duration_s * (self.speedup - 1)


# readings per simulated second, measured on the model: a taxi (moving, standing, at stands),
# a spot sensor (changes over a day), a station
TAXI_READINGS_PER_S: Final = 0.55
SPOT_READINGS_PER_S: Final = 0.00015
STATION_READINGS_PER_S: Final = 1 / 60
MAX_AUTO_TAXIS: Final = 100_000
AUTO_FLEET_HEADROOM: Final = 1.01


def resolved_taxis(options: SimulationOptions) -> int:
    """``options.taxis``, or the fleet that brings the city to ``options.rate`` readings per
    second at ``options.speedup`` (about 900 at the defaults; Daegu fitted 875 taxis with ADAS
    cameras in 2019-2020)."""
    if options.taxis is not None:
        return options.taxis
    others = options.lots * options.spots_per_lot * SPOT_READINGS_PER_S + options.stations * STATION_READINGS_PER_S
    # a little more than the rate, so that the token bucket, not the city, sets the pace
    needed = (options.rate * AUTO_FLEET_HEADROOM / options.speedup - others) / TAXI_READINGS_PER_S
    return min(max(round(needed), 0), MAX_AUTO_TAXIS)


def expected_readings_per_s(options: SimulationOptions) -> float:
    """About how many readings per wall second the city produces (before --rate caps it)."""
    per_simulated_s = (
        resolved_taxis(options) * TAXI_READINGS_PER_S
        + options.lots * options.spots_per_lot * SPOT_READINGS_PER_S
        + options.stations * STATION_READINGS_PER_S
    )
    return per_simulated_s * options.speedup


@dataclass
class SimulationReport:
    """What a run sent, counted when the broker acknowledged it.

    Per topic: ``readings_by_topic`` (valid readings, each counted once), ``messages_by_topic``
    (every message, invalid ones included), ``batches_by_topic`` (batch envelopes) and
    ``duplicates_by_topic`` (readings sent again). Per intended dead-letter reason:
    ``invalid_by_reason`` (whole messages) and ``invalid_elements_by_reason`` (invalid elements
    of otherwise valid batches); together they are the dead letters the worker should publish
    (``expected_dead_letters``). ``failed`` counts messages the broker refused, by error.
    """

    seed: int
    bootstrap: str
    speedup: float
    simulated_start_ms: int
    simulated_end_ms: int = 0  # the simulated time reached
    started_at_ms: int = 0
    finished_at_ms: int = 0
    taxis: int = 0
    readings_by_topic: Counter[str] = field(default_factory=Counter)
    messages_by_topic: Counter[str] = field(default_factory=Counter)
    batches_by_topic: Counter[str] = field(default_factory=Counter)
    duplicates_by_topic: Counter[str] = field(default_factory=Counter)
    invalid_by_reason: Counter[str] = field(default_factory=Counter)
    invalid_elements_by_reason: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    registry_path: Path | None = None

    @property
    def valid_readings(self) -> int:
        return sum(self.readings_by_topic.values())

    @property
    def messages(self) -> int:
        return sum(self.messages_by_topic.values())

    @property
    def duplicates(self) -> int:
        return sum(self.duplicates_by_topic.values())

    @property
    def invalid_messages(self) -> int:
        """Whole messages sent invalid on purpose."""
        return sum(self.invalid_by_reason.values())

    @property
    def invalid_elements(self) -> int:
        """Invalid elements inside otherwise valid batches."""
        return sum(self.invalid_elements_by_reason.values())

    @property
    def expected_dead_letters(self) -> int:
        """Dead letters the worker should publish for this run: one per invalid message and
        one per invalid batch element."""
        return self.invalid_messages + self.invalid_elements

    @property
    def dead_letters_by_reason(self) -> Counter[str]:
        return self.invalid_by_reason + self.invalid_elements_by_reason

    @property
    def elapsed_s(self) -> float:
        end = self.finished_at_ms or wall_clock_ms()
        return max(end - self.started_at_ms, 1) / 1000

    @property
    def readings_per_s(self) -> float:
        return self.valid_readings / self.elapsed_s

    def count(self, message: Message) -> None:
        """Add one acknowledged message."""
        self.messages_by_topic[message.topic] += 1
        self.readings_by_topic[message.topic] += message.readings
        self.duplicates_by_topic[message.topic] += message.duplicates
        if message.is_batch:
            self.batches_by_topic[message.topic] += 1
        if message.invalid_reason is not None:
            self.invalid_by_reason[message.invalid_reason] += 1
        for _, reason in message.invalid_elements:
            self.invalid_elements_by_reason[reason] += 1


# --------------------------------------------------------------------------------------------
# Layout: what exists in the simulated city (depends on the options and the seed only)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LotSpec:
    lot_id: str
    district: str
    lat: float
    lon: float
    profile: ParkingProfile
    capacity: int
    peak_factor: float  # scales the profile's curve: some lots run fuller than others


@dataclass(frozen=True)
class StationSpec:
    device_id: str
    district: str
    lat: float
    lon: float
    roadside: bool


def spot_ids(count: int) -> list[str]:
    """Spot ids A001..A100, B001..B100, ... as painted on the ground."""
    return [f"{chr(ord('A') + i // 100)}{i % 100 + 1:03d}" for i in range(count)]


def parking_device_id(lot_id: str, spot_id: str) -> str:
    return f"pk-{lot_id}-{spot_id}"


def taxi_device_id(number: int) -> str:
    return f"taxi-{number:04d}"


# stations per district in the order they are added (bigger districts get more)
_STATION_ORDER: Final = (
    "jung",
    "dong",
    "seo",
    "nam",
    "buk",
    "suseong",
    "dalseo",
    "dalseong",
    "buk",
    "dalseo",
    "suseong",
    "dong",
    "dalseong",
    "jung",
    "seo",
    "nam",
)


@dataclass(frozen=True)
class CityLayout:
    """The lots, stations and taxis of a run: what the registry names (schemas/CONTRACT.md section 7)."""

    lots: tuple[LotSpec, ...]
    stations: tuple[StationSpec, ...]
    taxi_ids: tuple[str, ...]

    @classmethod
    def build(cls, options: SimulationOptions, seed: int) -> CityLayout:
        rng = random.Random(f"citystream-layout:{seed}")
        return cls(
            lots=tuple(_build_lots(options, rng)),
            stations=tuple(_build_stations(options, rng)),
            taxi_ids=tuple(taxi_device_id(n + 1) for n in range(resolved_taxis(options))),
        )

    def registry(self) -> dict[str, Any]:
        """The registry document (schemas/CONTRACT.md section 7) naming every lot and station."""
        return {
            "parking_lots": {
                lot.lot_id: {"capacity": lot.capacity, "district": lot.district, "lat": lot.lat, "lon": lot.lon}
                for lot in self.lots
            },
            "env_stations": {
                station.device_id: {"district": station.district, "lat": station.lat, "lon": station.lon}
                for station in self.stations
            },
        }


def _build_lots(options: SimulationOptions, rng: random.Random) -> Iterable[LotSpec]:
    used: Counter[str] = Counter()
    for index in range(options.lots):
        site = LOT_SITES[index % len(LOT_SITES)]
        used[site.name] += 1
        # a second lot at the same site lies a block or two away
        offset = 0.0 if used[site.name] == 1 else 0.004
        yield LotSpec(
            lot_id=f"{site.name}-{used[site.name]}",
            district=site.district,
            lat=round(site.lat + rng.uniform(-offset, offset), 4),
            lon=round(site.lon + rng.uniform(-offset, offset), 4),
            profile=site.profile,
            capacity=options.spots_per_lot,
            peak_factor=rng.uniform(0.93, 1.02),
        )


def _build_stations(options: SimulationOptions, rng: random.Random) -> Iterable[StationSpec]:
    numbers: Counter[str] = Counter()
    for index in range(options.stations):
        district = DISTRICTS[_STATION_ORDER[index % len(_STATION_ORDER)]]
        numbers[district.tag] += 1
        lat = rng.gauss(district.lat, district.spread_deg / 2)
        lon = rng.gauss(district.lon, district.spread_deg / 2)
        yield StationSpec(
            device_id=f"env-{district.tag}-{numbers[district.tag]:02d}",
            district=district.tag,
            lat=round(min(max(lat, DAEGU_BBOX.south), DAEGU_BBOX.north), 4),
            lon=round(min(max(lon, DAEGU_BBOX.west), DAEGU_BBOX.east), 4),
            roadside=district.tag in ("jung", "seo") or numbers[district.tag] % 3 == 2,
        )


def write_registry(path: Path, layout: CityLayout) -> None:
    """Write the registry YAML for the simulated lots and stations."""
    header = "# citystream registry of the simulated lots and stations (schemas/CONTRACT.md section 7)\n"
    body = yaml.safe_dump(layout.registry(), sort_keys=False, default_flow_style=None, width=120)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Sensors: each one is an event source in simulated time
# --------------------------------------------------------------------------------------------

Body = dict[str, Any]


class Sensor:
    """A device that fires at ``due_ms`` and then returns a reading (or None) and reschedules."""

    __slots__ = ("device_id", "due_ms")
    kind: SourceKind

    def __init__(self, device_id: str, due_ms: int) -> None:
        self.device_id = device_id
        self.due_ms = due_ms

    def fire(self, rng: random.Random) -> Body | None:
        raise NotImplementedError


# ---- taxis ----------------------------------------------------------------------------------

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
        self.ts_style = _choose_style(rng, {"epoch_ms": 0.7, "kst": 0.3})
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
        self.hazards = _HAZARDS_BY_ROAD.get(("col", line) if axis == 0 else ("row", line), ())
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
        row = min(max(row, _SERVICE_ROWS[0]), _SERVICE_ROWS[1])
        col = min(max(col, _SERVICE_COLS[0]), _SERVICE_COLS[1])
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


# ---- parking --------------------------------------------------------------------------------


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
        self.ts_style = _choose_style(rng, {"kst": 0.6, "utc": 0.2, "epoch_ms": 0.2})
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


# ---- environment stations -------------------------------------------------------------------


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


class EnvStation(Sensor):
    """An air-quality station reporting its 1-minute values every minute."""

    kind = SourceKind.ENVIRONMENT
    __slots__ = (
        "episodes",
        "pm25_base",
        "pm_drift",
        "seq",
        "spec",
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
    ) -> None:
        super().__init__(spec.device_id, start_ms + rng.randrange(0, STATION_INTERVAL_MS))
        self.spec = spec
        self.seq = rng.randrange(0, 100_000)
        self.ts_style = _choose_style(rng, {"kst": 0.8, "epoch_ms": 0.2})
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
        measurements = self.measure(now_ms, rng)
        for name, value in measurements.items():
            # an analyser is sometimes in calibration; PM2.5 always reports
            if name == "pm25_ugm3" or rng.random() >= 0.01:
                body[name] = value
        return body

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


# --------------------------------------------------------------------------------------------
# The city: every sensor in one schedule of simulated time
# --------------------------------------------------------------------------------------------


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

    def __init__(self, layout: CityLayout, start_ms: int, end_ms: int, seed: int) -> None:
        self.layout = layout
        self.rng = random.Random(f"citystream-city:{seed}")
        rng = self.rng
        self.episodes = dust_episodes(layout.stations, start_ms, end_ms, rng)
        weather = weather_anomaly(rng)
        sensors: list[Sensor] = [Taxi(device_id, start_ms, rng) for device_id in layout.taxi_ids]
        for lot in layout.lots:
            sensors.extend(ParkingSpot(lot, spot, start_ms, rng) for spot in spot_ids(lot.capacity))
        sensors.extend(EnvStation(s, start_ms, self.episodes, weather, rng) for s in layout.stations)
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


# --------------------------------------------------------------------------------------------
# Invalid messages, one kind per dead-letter reason
# --------------------------------------------------------------------------------------------

_TEMPLATES: Final[dict[SourceKind, Body]] = {
    SourceKind.TAXI: {
        "device_id": "taxi-0042",
        "lat": 35.8714,
        "lon": 128.6014,
        "speed_kmh": 42.0,
        "heading_deg": 90.0,
        "event": "NONE",
    },
    SourceKind.PARKING: {
        "device_id": "pk-dongseongro-lot-1-A001",
        "lot_id": "dongseongro-lot-1",
        "spot_id": "A001",
        "occupied": True,
        "kind": "change",
        "battery_v": 3.4,
        "rssi_dbm": -98.0,
        "snr_db": 4.5,
    },
    SourceKind.ENVIRONMENT: {
        "device_id": "env-jung-01",
        "district": "jung",
        "pm25_ugm3": 21.0,
        "pm10_ugm3": 38.0,
        "temp_c": 9.5,
    },
}

# (field, bad value) pairs that break one rule of a reading; None as value: drop the field
_SCHEMA_BREAKS: Final[dict[SourceKind, tuple[tuple[str, Any], ...]]] = {
    SourceKind.TAXI: (
        ("lat", None),
        ("speed_kmh", "42.5"),
        ("speed_kmh", 412.0),
        ("heading_deg", 360.0),
        ("event", "BRAKE"),
        ("lat", 95.2),
        ("device_id", "taxi 0042"),
        ("headway_s", -0.4),
        ("ttc_s", 12.5),
        ("lon", None),
        ("ts", "2026-11-21T19:00:00"),
        ("seq", -1),
    ),
    SourceKind.PARKING: (
        ("occupied", "yes"),
        ("spot_id", None),
        ("kind", "status"),
        ("battery_v", 7.5),
        ("rssi_dbm", 12.0),
        ("lot_id", ""),
        ("occupied", None),
        ("snr_db", -45.0),
        ("ts", True),
    ),
    SourceKind.ENVIRONMENT: (
        ("pm25_ugm3", 1500.0),
        ("humidity_pct", 120.0),
        ("temp_c", "cold"),
        ("co_ppm", -1.0),
        ("district", ""),
        ("device_id", None),
        ("o3_ppm", 1.7),
        ("ts", None),
        ("*measurements", None),
    ),
}


class InvalidFactory:
    """Builds messages and batch elements the worker must dead-letter, each for one reason."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def schema_break(self, kind: SourceKind, body: Body) -> Body:
        broken = dict(body)
        broken.pop("seq", None)  # a broken reading keeps no frame counter of the device's
        name, value = self.rng.choice(_SCHEMA_BREAKS[kind])
        if name == "*measurements":
            for measurement in ENV_MEASUREMENTS:
                broken.pop(measurement, None)
        elif value is None:
            broken.pop(name, None)
        else:
            broken[name] = value
        return broken

    def retimed(self, body: Body, epoch_ms: int) -> Body:
        moved = dict(body)
        moved.pop("seq", None)
        style: TsStyle = "epoch_ms" if isinstance(body.get("ts"), int) else "kst"
        moved["ts"] = format_ts(epoch_ms, style)
        return moved

    def element(self, reason: DeadLetterReason, kind: SourceKind, body: Body, wall_ms: int) -> Any:
        """An invalid element of a batch."""
        if reason == "schema":
            return self.schema_break(kind, body)
        if reason == "future_timestamp":
            return self.retimed(body, wall_ms + FUTURE_OFFSET_MS)
        if reason == "stale_timestamp":
            return self.retimed(body, wall_ms - STALE_OFFSET_MS)
        if reason == "not_an_object":
            return self.rng.choice([[body.get("device_id")], 42, "reading", None, True])
        raise ValueError(f"{reason} is not a batch element's reason")

    def message(self, reason: DeadLetterReason, kind: SourceKind, body: Body, wall_ms: int) -> bytes:
        """A whole message value that the worker dead-letters for ``reason``."""
        rng = self.rng
        if reason == "not_utf8":
            return self._not_utf8(body)
        if reason == "malformed_json":
            text = dumps(body)
            return rng.choice(
                [
                    text[: max(len(text) // 2, 2)],  # cut off in transit
                    text[:-1] + b",}",  # trailing comma
                    repr(body).encode(),  # Python's repr, single quotes
                    b'{"batch": [' + text,  # unterminated batch
                ]
            )
        if reason == "not_an_object":
            return rng.choice([dumps([body]), b"42", dumps(body["device_id"]), b"null", b"true"])
        if reason == "too_large":
            return self._too_large(body)
        if reason == "bad_batch":
            variant = rng.randrange(4)
            if variant == 0:
                return dumps({"batch": []})
            if variant == 1:
                unnumbered = {k: v for k, v in body.items() if k != "seq"}
                return dumps({"batch": [unnumbered] * (MAX_BATCH_READINGS + 1)})
            if variant == 2:
                return dumps({"batch": body})
            return dumps({"batch": rng.choice(["readings", 7, None])})
        if reason in ("schema", "future_timestamp", "stale_timestamp"):
            return dumps(self.element(reason, kind, body, wall_ms))
        raise ValueError(f"unknown dead-letter reason {reason}")

    def _not_utf8(self, body: Body) -> bytes:
        variant = self.rng.randrange(3)
        if variant == 0:  # a Korean note in the legacy code page (EUC-KR / CP949)
            text = dumps({**body, "note": "대구 중구"}).decode()
            return text.encode("cp949")
        if variant == 1:  # UTF-16 with a byte-order mark
            return dumps(body).decode().encode("utf-16")
        return b"\xff\xfe\x00" + dumps(body)[3:]  # a corrupt frame

    @staticmethod
    def _too_large(body: Body) -> bytes:
        """A reading padded with a raw frame dump to just over the 1 MiB limit."""
        shell = dumps({**body, "raw_frame": ""})
        padding = MAX_MESSAGE_BYTES + 64 - len(shell)
        return dumps({**body, "raw_frame": "A" * padding})


# --------------------------------------------------------------------------------------------
# From readings to messages: single readings, batch envelopes, invalid messages, duplicates
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Message:
    """One Kafka message to send, with what it carries for the report."""

    topic: str
    partition: int
    key: bytes
    value: bytes
    readings: int = 0  # valid readings sent for the first time
    duplicates: int = 0
    invalid_reason: DeadLetterReason | None = None  # the whole message is invalid
    invalid_elements: tuple[tuple[int, DeadLetterReason], ...] = ()  # (index, reason) in a batch
    is_batch: bool = False


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class _PendingBatch:
    __slots__ = ("devices", "elements", "invalid", "key", "oldest_sim_ms", "oldest_wall_ms", "readings")

    def __init__(self, key: bytes, sim_ms: int, wall_ms: int) -> None:
        self.key = key
        self.elements: list[Any] = []
        self.invalid: list[tuple[int, DeadLetterReason]] = []
        self.readings: list[Emitted] = []
        self.devices: set[str] = set()
        self.oldest_sim_ms = sim_ms
        self.oldest_wall_ms = wall_ms


def batch_reading_share(batch_share: float, batch_size: float) -> float:
    """The share of readings to put in batches so that ``batch_share`` of messages are batches
    of ``batch_size`` readings (the others carrying one reading each)."""
    if batch_share <= 0:
        return 0.0
    if batch_share >= 1:
        return 1.0
    return batch_share / (batch_share + (1 - batch_share) / batch_size)


class MessageComposer:
    """Turns readings into messages.

    A reading goes into a batch envelope with probability :func:`batch_reading_share` (of the
    mean size batches really reach, so that ``batch_share`` of the messages are batches); batches
    are gathered per partition (their key is their first device's id, and each device's
    readings stay in one partition, in order) and sent when full or when their oldest reading
    is ``max_batch_age_ms`` old in simulated or wall time. Invalid messages follow
    ``invalid_share`` of the messages, and each batch element is followed by an invalid one
    with the same probability. Duplicates re-send recently sent readings.
    """

    def __init__(
        self,
        options: SimulationOptions,
        partitions: Mapping[SourceKind, int],
        seed: int,
        max_batch_age_ms: int = 10 * SECOND_MS,
        max_batch_wall_age_ms: int = SECOND_MS,
    ) -> None:
        self.options = options
        self.partitions = dict(partitions)
        self.rng = random.Random(f"citystream-messages:{seed}")
        self.invalid = InvalidFactory(self.rng)
        self.batch_probability = batch_reading_share(options.batch_share, options.batch_size)
        # batches closed early (by age) are smaller: track their mean size to keep the share
        self._closed_batches = 2
        self._closed_batch_readings = 2 * options.batch_size
        self.invalid_after_message = options.invalid_share / (1 - options.invalid_share)
        self.max_batch_age_ms = max_batch_age_ms
        self.max_batch_wall_age_ms = max_batch_wall_age_ms
        self._pending: dict[tuple[SourceKind, int], _PendingBatch] = {}
        self._pending_devices: set[str] = set()
        self._partition_of: dict[str, int] = {}
        self._recent: deque[Emitted] = deque(maxlen=5000)
        self._latest: dict[SourceKind, Emitted] = {}
        self._reason_deck: list[DeadLetterReason] = []
        self._too_large_sent = False

    # -- public --

    def compose(self, readings: Iterable[Emitted], sim_ms: int, wall_ms: int) -> list[Message]:
        out: list[Message] = []
        rng = self.rng
        for reading in readings:
            self._latest[reading.kind] = reading
            if rng.random() < self.batch_probability:
                self._add_to_batch(reading, sim_ms, wall_ms, out)
            else:
                if reading.device_id in self._pending_devices:
                    # the device's earlier readings wait in a batch: they go first
                    slot = (reading.kind, self.partition_of(reading.kind, reading.device_id))
                    out.append(self._close_batch(slot))
                out.append(self._single(reading))
            if rng.random() < self.options.duplicate_share and self._recent:
                out.append(self._duplicate())
        out.extend(self.flush_due(sim_ms, wall_ms))
        return self._with_invalid(out, wall_ms)

    def flush_due(self, sim_ms: int, wall_ms: int) -> list[Message]:
        """Batches whose oldest reading has waited long enough."""
        due = [
            key
            for key, batch in self._pending.items()
            if sim_ms - batch.oldest_sim_ms >= self.max_batch_age_ms
            or wall_ms - batch.oldest_wall_ms >= self.max_batch_wall_age_ms
        ]
        return [self._close_batch(key) for key in due]

    def flush_all(self, wall_ms: int) -> list[Message]:
        """Every pending batch (at the end of a run)."""
        out = [self._close_batch(key) for key in list(self._pending)]
        return self._with_invalid(out, wall_ms)

    # -- building --

    def partition_of(self, kind: SourceKind, device_id: str) -> int:
        partition = self._partition_of.get(device_id)
        if partition is None:
            partition = kafka_partition(device_id.encode(), self.partitions[kind])
            self._partition_of[device_id] = partition
        return partition

    def _single(self, reading: Emitted) -> Message:
        self._recent.append(reading)
        return Message(
            topic=SOURCE_TOPICS[reading.kind],
            partition=self.partition_of(reading.kind, reading.device_id),
            key=reading.device_id.encode(),
            value=dumps(reading.body),
            readings=1,
        )

    def _duplicate(self) -> Message:
        again = self._recent[self.rng.randrange(len(self._recent))]
        return Message(
            topic=SOURCE_TOPICS[again.kind],
            partition=self.partition_of(again.kind, again.device_id),
            key=again.device_id.encode(),
            value=dumps(again.body),
            duplicates=1,
        )

    def _add_to_batch(self, reading: Emitted, sim_ms: int, wall_ms: int, out: list[Message]) -> None:
        slot = (reading.kind, self.partition_of(reading.kind, reading.device_id))
        batch = self._pending.get(slot)
        if batch is None:
            batch = self._pending[slot] = _PendingBatch(reading.device_id.encode(), reading.ts_ms, wall_ms)
        batch.elements.append(reading.body)
        batch.readings.append(reading)
        batch.devices.add(reading.device_id)
        self._pending_devices.add(reading.device_id)
        if self.rng.random() < self.options.invalid_share and len(batch.elements) < self.options.batch_size:
            reason = self.rng.choice(ELEMENT_REASONS)
            batch.invalid.append((len(batch.elements), reason))
            batch.elements.append(self.invalid.element(reason, reading.kind, reading.body, wall_ms))
        if len(batch.elements) >= self.options.batch_size:
            out.append(self._close_batch(slot))

    def _close_batch(self, slot: tuple[SourceKind, int]) -> Message:
        batch = self._pending.pop(slot)
        self._pending_devices.difference_update(batch.devices)
        self._closed_batches += 1
        self._closed_batch_readings += len(batch.elements)
        mean_size = self._closed_batch_readings / self._closed_batches
        self.batch_probability = batch_reading_share(self.options.batch_share, mean_size)
        self._recent.extend(batch.readings)
        kind, partition = slot
        return Message(
            topic=SOURCE_TOPICS[kind],
            partition=partition,
            key=batch.key,
            value=dumps({"batch": batch.elements}),
            readings=len(batch.readings),
            invalid_elements=tuple(batch.invalid),
            is_batch=True,
        )

    def _with_invalid(self, messages: list[Message], wall_ms: int) -> list[Message]:
        if self.invalid_after_message <= 0:
            return messages
        out: list[Message] = []
        for message in messages:
            out.append(message)
            if self.rng.random() < self.invalid_after_message:
                out.append(self.invalid_message(wall_ms))
        return out

    def next_reason(self) -> DeadLetterReason:
        """Reasons come in shuffled rounds, so a run covers all of them; the first round
        includes the one too_large message of the run."""
        if not self._reason_deck:
            deck = [r for r in MESSAGE_REASONS if r != "too_large" or not self._too_large_sent]
            self._too_large_sent = True
            self.rng.shuffle(deck)
            self._reason_deck = deck
        return self._reason_deck.pop()

    def invalid_message(self, wall_ms: int) -> Message:
        reason = self.next_reason()
        kind = self.rng.choice(list(SourceKind))
        latest = self._latest.get(kind)
        # the latest reading of that kind, or a template before there was one
        body = latest.body if latest is not None else {**_TEMPLATES[kind], "ts": format_ts(wall_ms, "kst")}
        device_id = str(body["device_id"])
        return Message(
            topic=SOURCE_TOPICS[kind],
            partition=self.partition_of(kind, device_id),
            key=device_id.encode(),
            value=self.invalid.message(reason, kind, body, wall_ms),
            invalid_reason=reason,
        )


def generate_messages(
    options: SimulationOptions,
    *,
    start_ms: int,
    end_ms: int,
    wall_ms: int | None = None,
    seed: int = 0,
    partitions: int = 12,
) -> tuple[CityLayout, list[Message]]:
    """Simulate ``start_ms``..``end_ms`` at once, without pacing or a broker (for tests and
    benchmarks): the layout and every message in sending order."""
    layout = CityLayout.build(options, seed)
    city = City(layout, start_ms, end_ms, seed)
    composer = MessageComposer(options, dict.fromkeys(SourceKind, partitions), seed)
    wall = end_ms if wall_ms is None else wall_ms
    messages: list[Message] = []
    step_ms = SECOND_MS
    for until_ms in range(start_ms + step_ms, end_ms + step_ms, step_ms):
        until_ms = min(until_ms, end_ms)
        messages.extend(composer.compose(city.advance(until_ms, 10**9), until_ms, wall))
    messages.extend(composer.flush_all(wall))
    return layout, messages


# --------------------------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------------------------


class TokenBucket:
    """Paces readings: ``rate`` tokens per second, holding at most ``burst``."""

    def __init__(self, rate: float, burst: float, now_s: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = min(self.burst, max(rate * 0.02, 1.0))
        self.updated_s = now_s

    def available(self, now_s: float) -> int:
        self.tokens = min(self.burst, self.tokens + (now_s - self.updated_s) * self.rate)
        self.updated_s = now_s
        return max(int(self.tokens), 0)

    def spend(self, tokens: int) -> None:
        self.tokens -= tokens

    def seconds_until(self, tokens: float) -> float:
        return max(tokens - self.tokens, 0.0) / self.rate


class PartitionBatchSender:
    """Sends messages as aiokafka record batches, one open batch per topic partition.

    This avoids a future per message (``producer.send``), which is what limits a Python producer
    at tens of thousands of messages per second. Counts a message in the report when its batch
    is acknowledged, and errors by name when the broker refuses it.
    """

    def __init__(self, producer: Any, report: SimulationReport) -> None:
        self.producer = producer
        self.report = report
        self._open: dict[tuple[str, int], tuple[Any, list[Message]]] = {}
        self._in_flight: set[asyncio.Future[Any]] = set()

    async def add(self, message: Message) -> None:
        slot = (message.topic, message.partition)
        entry = self._open.get(slot)
        if entry is None:
            entry = self._open[slot] = (self.producer.create_batch(), [])
        builder, carried = entry
        if builder.append(timestamp=None, key=message.key, value=message.value) is None:
            await self._send(slot)
            builder, carried = self._open[slot] = (self.producer.create_batch(), [])
            # an empty batch takes any one record, even one larger than the batch size
            builder.append(timestamp=None, key=message.key, value=message.value)
        carried.append(message)

    async def flush(self) -> None:
        """Send every open batch (the sender's linger)."""
        for slot in list(self._open):
            await self._send(slot)

    async def drain(self) -> None:
        """Send everything and wait until the broker answered for all of it."""
        await self.flush()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _send(self, slot: tuple[str, int]) -> None:
        builder, carried = self._open.pop(slot)
        if not carried:
            return
        topic, partition = slot
        try:
            future = await self.producer.send_batch(builder, topic, partition=partition)
        except Exception as exc:  # counted per message; the run goes on
            self._failed(carried, exc)
            return
        self._in_flight.add(future)
        future.add_done_callback(lambda f: self._delivered(f, carried))

    def _delivered(self, future: asyncio.Future[Any], carried: list[Message]) -> None:
        self._in_flight.discard(future)
        if future.cancelled():
            self._failed(carried, asyncio.CancelledError())
        elif (exc := future.exception()) is not None:
            self._failed(carried, exc)
        else:
            for message in carried:
                self.report.count(message)

    def _failed(self, carried: list[Message], exc: BaseException) -> None:
        name = type(exc).__name__
        for message in carried:
            label = f"{name} ({message.invalid_reason})" if message.invalid_reason else name
            self.report.failed[label] += 1


ProgressCallback = Callable[[SimulationReport], None]
TICK_S: Final = 0.01
SENDER_LINGER_S: Final = 0.02


def resolve_seed(seed: int | None) -> int:
    return seed if seed is not None else random.SystemRandom().randrange(1, 2**31)


def check_period(options: SimulationOptions, settings: Settings) -> None:
    """Refuse a period whose oldest readings the worker would dead-letter as stale."""
    limit_s = settings.max_age_s * 0.85
    if options.backdated_s > limit_s:
        raise ValueError(
            f"--duration x (--speedup - 1) = {options.backdated_s / 86_400:.1f} days reaches back "
            f"further than the worker accepts (keep it under {limit_s / 86_400:.1f} days)"
        )


async def run_simulation(
    options: SimulationOptions,
    *,
    settings: Settings | None = None,
    console: Any | None = None,
    registry_ready: Callable[[], Any] | None = None,
    on_progress: ProgressCallback | None = None,
    progress_interval_s: float = 0.25,
    stop: asyncio.Event | None = None,
) -> SimulationReport:
    """Simulate the city for ``options.duration_s`` wall seconds and produce to Kafka.

    Creates the missing topics, writes the registry when ``options.registry_out`` is set and
    then calls ``registry_ready`` (awaited if it returns an awaitable: start a worker there),
    then produces. ``console`` (a rich Console) shows a progress bar; ``on_progress`` receives
    the report as it grows; ``stop`` ends the run early (what was generated is still sent).
    Returns what the broker acknowledged. Raises :class:`streams.clients.kafka.BrokerUnavailable`
    when Kafka does not answer, ValueError for a period the worker would reject as stale.
    """
    settings = settings or load_settings()
    check_period(options, settings)
    servers = [s.strip() for s in (options.bootstrap or settings.kafka_bootstrap).split(",") if s.strip()]
    seed = resolve_seed(options.seed)
    layout = CityLayout.build(options, seed)
    kafka_options = kafka_client_kwargs(settings)  # SASL/TLS as the worker's
    await ensure_topics(
        servers, contract_topics(settings.source_partitions), timeout_s=settings.startup_timeout_s, **kafka_options
    )
    if options.registry_out is not None:
        write_registry(options.registry_out, layout)
    if registry_ready is not None:
        started = registry_ready()
        if inspect.isawaitable(started):
            await started

    producer = AIOKafkaProducer(
        bootstrap_servers=servers,
        client_id="citystream-simulate",
        linger_ms=int(SENDER_LINGER_S * 1000),
        max_batch_size=256 * 1024,
        max_request_size=4 * MAX_MESSAGE_BYTES,  # room for the one too_large message
        compression_type=None if options.compression == "none" else options.compression,
        request_timeout_ms=30_000,
        **kafka_options,
    )
    await producer.start()
    try:
        partitions = {kind: len(await producer.partitions_for(SOURCE_TOPICS[kind])) for kind in SourceKind}
        # building a big fleet takes a while: build first, then start the clock
        planned = SimulatedPeriod(wall_clock_ms(), options.duration_s, options.speedup)
        city = City(layout, planned.start_ms, planned.end_ms, seed)
        composer = MessageComposer(options, partitions, seed)
        period = SimulatedPeriod(wall_clock_ms(), options.duration_s, options.speedup)
        report = SimulationReport(
            seed=seed,
            bootstrap=",".join(servers),
            speedup=options.speedup,
            simulated_start_ms=planned.start_ms,
            started_at_ms=period.run_start_ms,
            taxis=len(layout.taxi_ids),
            registry_path=options.registry_out,
        )
        sender = PartitionBatchSender(producer, report)
        with _progress_display(console, options, on_progress) as show:
            await produce_paced(city, composer, sender, period, options, report, show, progress_interval_s, stop)
            await sender.drain()
            report.finished_at_ms = wall_clock_ms()
            show(report)
        return report
    finally:
        await producer.stop()


async def produce_paced(
    city: City,
    composer: MessageComposer,
    sender: PartitionBatchSender,
    period: SimulatedPeriod,
    options: SimulationOptions,
    report: SimulationReport,
    on_progress: ProgressCallback,
    progress_interval_s: float,
    stop: asyncio.Event | None,
) -> None:
    """The pacing loop: release due readings as the token bucket allows, send, repeat."""
    loop = asyncio.get_running_loop()
    started_s = loop.time()
    deadline_s = started_s + options.duration_s
    bucket = TokenBucket(options.rate, burst=options.rate * 0.1, now_s=started_s)
    next_flush_s = started_s + SENDER_LINGER_S
    next_progress_s = started_s
    while (now_s := loop.time()) < deadline_s and not (stop is not None and stop.is_set()):
        wall_ms = wall_clock_ms()
        readings = city.advance(period.simulated_ms(wall_ms), bucket.available(now_s))
        messages = composer.compose(readings, city.now_ms, wall_ms)
        bucket.spend(len(readings))  # invalid messages and duplicates come on top
        for message in messages:
            await sender.add(message)
        report.simulated_end_ms = city.now_ms
        if now_s >= next_flush_s:
            await sender.flush()
            next_flush_s = now_s + SENDER_LINGER_S
        if now_s >= next_progress_s:
            on_progress(report)
            next_progress_s = now_s + progress_interval_s
        # let the producer's sender run; sleep while nothing is due or no token is left
        await asyncio.sleep(TICK_S if len(readings) < 100 else 0)
    for message in composer.flush_all(wall_clock_ms()):
        await sender.add(message)


@contextlib.contextmanager
def _progress_display(
    console: Any | None, options: SimulationOptions, on_progress: ProgressCallback | None
) -> Iterator[ProgressCallback]:
    """A callback that updates a rich progress bar on ``console`` and calls ``on_progress``."""
    if console is None:
        yield on_progress or (lambda report: None)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        BarColumn(bar_width=16), TimeElapsedColumn(), TextColumn("{task.description}"), console=console
    ) as bar:
        task = bar.add_task("starting", total=options.duration_s)

        def show(report: SimulationReport) -> None:
            bar.update(task, completed=min(report.elapsed_s, options.duration_s), description=progress_line(report))
            if on_progress is not None:
                on_progress(report)

        yield show


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def _kst_text(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, KST).strftime("%Y-%m-%d %H:%M:%S KST")


def progress_line(report: SimulationReport) -> str:
    """Readings, messages, rate, invalid sent and simulated time (the bar shows elapsed)."""
    simulated = datetime.fromtimestamp((report.simulated_end_ms or report.simulated_start_ms) / 1000, KST)
    return (
        f"{report.valid_readings:,} readings, {report.messages:,} msgs, "
        f"{report.readings_per_s:,.0f}/s, {report.expected_dead_letters:,} invalid, "
        f"sim {simulated:%m-%d %H:%M:%S}"
    )


def render_summary(report: SimulationReport) -> Any:
    """The end-of-run summary as a rich renderable."""
    from rich.console import Group
    from rich.table import Table

    topics = Table(title="Sent (acknowledged by the broker)", title_justify="left")
    for column in ("topic", "readings", "messages", "batches", "duplicates"):
        topics.add_column(column, justify="left" if column == "topic" else "right")
    for kind in SourceKind:
        topic = SOURCE_TOPICS[kind]
        topics.add_row(
            topic,
            f"{report.readings_by_topic[topic]:,}",
            f"{report.messages_by_topic[topic]:,}",
            f"{report.batches_by_topic[topic]:,}",
            f"{report.duplicates_by_topic[topic]:,}",
        )
    topics.add_row(
        "total",
        f"{report.valid_readings:,}",
        f"{report.messages:,}",
        f"{sum(report.batches_by_topic.values()):,}",
        f"{report.duplicates:,}",
        style="bold",
    )
    invalid = Table(title="Invalid on purpose, by the dead-letter reason they should get", title_justify="left")
    invalid.add_column("reason")
    invalid.add_column("messages", justify="right")
    invalid.add_column("batch elements", justify="right")
    for reason in MESSAGE_REASONS:
        invalid.add_row(
            reason, f"{report.invalid_by_reason[reason]:,}", f"{report.invalid_elements_by_reason[reason]:,}"
        )
    invalid.add_row("total", f"{report.invalid_messages:,}", f"{report.invalid_elements:,}", style="bold")
    lines = [
        f"{report.elapsed_s:.1f} s, {report.readings_per_s:,.0f} readings/s to "
        f"{report.bootstrap}; {report.taxis} taxis; seed {report.seed}",
        f"simulated {_kst_text(report.simulated_start_ms)} .. "
        f"{_kst_text(report.simulated_end_ms)} (speedup {report.speedup:g})",
        f"expected dead letters: {report.expected_dead_letters:,}",
    ]
    if report.registry_path is not None:
        lines.append(f"registry written to {report.registry_path}")
    parts: list[Any] = [topics, invalid, *lines]
    if report.failed:
        failed = ", ".join(f"{name}: {count}" for name, count in sorted(report.failed.items()))
        parts.append(f"[yellow]refused by the broker: {failed}[/yellow]")
    return Group(*parts)


_HELP = """Simulate Daegu's city sensors and produce their readings to Kafka.

Taxis with ADAS cameras drive a street grid over the city (warnings cluster at collision
hotspots; potholes and obstacles lie at fixed places), parking spot sensors in lots across the
districts follow each lot's time of day, and air-quality stations report every minute with
morning and evening peaks and a fine-dust episode at some of them. A share of the messages are
batch envelopes, duplicates, or invalid on purpose (every dead-letter reason of the contract).

\b
Time: timestamps never lie in the future. A run of --duration D seconds at
--speedup S simulates the D*S seconds that END when the run ends: it starts
D*(S-1) seconds in the past and catches up with the clock at the end (with S=1
readings carry the current time). Keep D*(S-1) under about 6 days, as the worker
dead-letters readings older than 7 days. When the city produces more readings
than --rate allows, simulated time falls behind instead (readings get older).

Kafka comes from --bootstrap or CITYSTREAM_KAFKA_BOOTSTRAP; missing topics are created first.
"""


@click.command("simulate", help=_HELP)
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to run, in wall-clock seconds.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=500.0,
    show_default=True,
    metavar="READINGS_PER_S",
    help="Target valid readings per second, all topics together (invalid messages and "
    "duplicates come on top): the fleet is sized for it unless --taxis is given, "
    "and a token bucket never lets more through.",
)
@click.option(
    "--speedup",
    type=click.FloatRange(min=1),
    default=1.0,
    show_default=True,
    metavar="N",
    help="Simulated seconds per wall second; the simulated period ends now.",
)
@click.option(
    "--taxis",
    type=click.IntRange(min=0),
    default=None,
    help="Taxis (taxi-0001...), each reporting every 1-5 s of simulated time "
    "[default: as many as --rate needs at --speedup: about 900 at 500/s; Daegu "
    "fitted 875 taxis with ADAS cameras].",
)
@click.option(
    "--lots",
    type=click.IntRange(min=0),
    default=12,
    show_default=True,
    help="Parking lots (dongseongro-lot-1, suseong-alpha-1, ...).",
)
@click.option(
    "--spots-per-lot",
    type=click.IntRange(1, 2600),
    default=80,
    show_default=True,
    help="Spot sensors per lot (A001...), which is also the lot's capacity.",
)
@click.option(
    "--stations",
    type=click.IntRange(min=0),
    default=24,
    show_default=True,
    help="Air-quality stations (env-jung-01...), one reading per simulated minute each.",
)
@click.option(
    "--batch-share",
    type=click.FloatRange(0, 1),
    default=0.2,
    show_default=True,
    help='Share of messages sent as batch envelopes {"batch": [...]}.',
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH_READINGS),
    default=50,
    show_default=True,
    help="Readings per batch envelope (fewer when a batch has waited 10 simulated seconds or 1 wall second).",
)
@click.option(
    "--invalid-share",
    type=click.FloatRange(0, 0.5),
    default=0.01,
    show_default=True,
    help="Share of messages, and of batch elements, that are invalid, covering every "
    "dead-letter reason (at most one too_large message per run).",
)
@click.option(
    "--duplicate-share",
    type=click.FloatRange(0, 0.5),
    default=0.005,
    show_default=True,
    help="Share of readings sent again later as duplicates.",
)
@click.option(
    "--seed", type=int, default=None, help="Seed: the same seed gives the same city and readings [default: random]."
)
@click.option(
    "--bootstrap",
    default=None,
    metavar="HOST:PORT[,...]",
    help="Kafka bootstrap servers [default: CITYSTREAM_KAFKA_BOOTSTRAP].",
)
@click.option(
    "--registry-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="Write the registry YAML of the simulated lots and stations (for CITYSTREAM_REGISTRY).",
)
@click.option(
    "--compression",
    type=click.Choice(["none", "gzip", "snappy", "lz4", "zstd"]),
    default="none",
    show_default=True,
    help="Kafka compression (gzip is always available; the others need their library).",
)
@click.option("--quiet", is_flag=True, help="No progress display and no summary.")
def simulate_command(quiet: bool, **values: Any) -> None:
    try:
        options = SimulationOptions(**values)
        overrides = {"kafka_bootstrap": options.bootstrap} if options.bootstrap else {}
        settings = load_settings(**overrides)
        check_period(options, settings)
    except (ValueError, ConfigError) as exc:
        raise click.UsageError(str(exc)) from None
    console = None
    if not quiet:
        from rich.console import Console

        console = Console(stderr=True)
        console.print(describe_city(options))
    try:
        report = asyncio.run(_run_until_interrupted(options, settings, console))
    except (BrokerUnavailable, KafkaError) as exc:
        raise click.ClickException(str(exc)) from None
    if console is not None:
        from rich.console import Console

        Console().print(render_summary(report))
    # the broker may refuse the one too_large message (a Kafka topic's default limit is 1 MiB)
    if any("too_large" not in label for label in report.failed):
        raise SystemExit(1)


async def _run_until_interrupted(
    options: SimulationOptions, settings: Settings, console: Any | None
) -> SimulationReport:
    """Run; Ctrl-C or SIGTERM ends the run early and still sends what was generated."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    return await run_simulation(options, settings=settings, console=console, stop=stop)


def describe_city(options: SimulationOptions) -> str:
    """What will be simulated, and whether --rate can be reached."""
    expected = expected_readings_per_s(options)
    text = (
        f"{resolved_taxis(options)} taxis, {options.lots} lots x {options.spots_per_lot} "
        f"spots, {options.stations} stations at speedup {options.speedup:g}: about "
        f"{expected:,.0f} readings/s (--rate {options.rate:,.0f})"
    )
    if expected > options.rate * 1.15:
        text += (
            "\n[yellow]more than --rate: simulated time will fall behind the clock (lower "
            "--taxis or --speedup, or raise --rate)[/yellow]"
        )
    elif expected < options.rate * 0.85:
        text += "\n[yellow]less than --rate: add --taxis to reach it[/yellow]"
    return text


__all__ = [
    "COLLISION_HOTSPOTS",
    "DAEGU_BBOX",
    "DISTRICTS",
    "ROAD_HAZARDS",
    "City",
    "CityLayout",
    "Emitted",
    "Message",
    "MessageComposer",
    "SimulatedPeriod",
    "SimulationOptions",
    "SimulationReport",
    "generate_messages",
    "run_simulation",
    "simulate_command",
    "write_registry",
]
