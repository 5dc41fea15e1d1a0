"""Daegu as the simulator draws it: districts, taxi hubs, the street grid, collision hotspots, road hazards."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple


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


SERVICE_ROWS: Final = (
    math.ceil((TAXI_SERVICE_AREA.south - GRID_LAT0) / BLOCK_DLAT),
    math.floor((TAXI_SERVICE_AREA.north - GRID_LAT0) / BLOCK_DLAT),
)
SERVICE_COLS: Final = (
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
HAZARDS_BY_ROAD: Final[dict[tuple[str, int], tuple[RoadHazard, ...]]] = {
    (axis, line): tuple(h for h in ROAD_HAZARDS if (h.axis, h.line) == (axis, line))
    for axis, line in {(h.axis, h.line) for h in ROAD_HAZARDS}
}
