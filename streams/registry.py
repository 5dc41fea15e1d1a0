"""The optional registry (contract section 7): what the processor cannot learn from readings."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.readings import District, Latitude, Longitude, LotId


class LotInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    capacity: int = Field(ge=1)
    district: District | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None


class StationInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    district: District | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None


class Registry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    parking_lots: dict[LotId, LotInfo] = Field(default_factory=dict)
    env_stations: dict[LotId, StationInfo] = Field(default_factory=dict)

    def station_district(self, device_id: str) -> str | None:
        station = self.env_stations.get(device_id)
        return station.district if station is not None else None

    def lot_capacity(self, lot_id: str) -> int | None:
        lot = self.parking_lots.get(lot_id)
        return lot.capacity if lot is not None else None


class RegistryError(Exception):
    """The registry file cannot be read or does not follow the contract's format."""


def load_registry(path: Path | None) -> Registry:
    if path is None:
        return Registry()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"cannot read the registry {path}: {exc}") from None
    try:
        return Registry.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise RegistryError(f"the registry {path} is not valid: {problems}") from None
