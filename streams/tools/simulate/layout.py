"""What exists in the simulated city (it depends on the options and the seed only), and its registry file."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from streams.tools.simulate.environment import StationSpec
from streams.tools.simulate.geography import DAEGU_BBOX, DISTRICTS
from streams.tools.simulate.options import SimulationOptions, resolved_taxis
from streams.tools.simulate.parking import LOT_SITES, LotSpec
from streams.tools.simulate.taxis import taxi_device_id

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
