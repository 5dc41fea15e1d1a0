"""The optional registry (schemas/CONTRACT.md section 7): what the processor cannot learn from readings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from schemas.readings import District, Latitude, Longitude, LotId, SpotId
from streams.errors import CitystreamError


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


class SensorInfo(BaseModel):
    """Where a LoRaWAN parking sensor is mounted (contract 1.1): what its uplinks do not say."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lot_id: LotId
    spot_id: SpotId


# a LoRaWAN DevEUI: 8 bytes in hex, kept in lower case as a reading's device_id carries it
DevEui = Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{16}$"), AfterValidator(str.lower)]


class Registry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    parking_lots: dict[LotId, LotInfo] = Field(default_factory=dict)
    env_stations: dict[LotId, StationInfo] = Field(default_factory=dict)
    parking_sensors: dict[DevEui, SensorInfo] = Field(default_factory=dict)

    def station_district(self, device_id: str) -> str | None:
        station = self.env_stations.get(device_id)
        return station.district if station is not None else None

    def sensor_place(self, dev_eui: str) -> SensorInfo | None:
        """The lot and spot of a parking sensor by its DevEUI (any case), if the registry has it."""
        return self.parking_sensors.get(dev_eui.lower())

    def lot_capacity(self, lot_id: str) -> int | None:
        lot = self.parking_lots.get(lot_id)
        return lot.capacity if lot is not None else None


VARIABLE = "CITYSTREAM_REGISTRY"


class RegistryError(CitystreamError):
    """The registry file cannot be read or does not follow the contract's format."""


def load_registry(path: Path | None) -> Registry:
    """The registry at ``path`` (an empty one without a path); :class:`RegistryError` if it cannot be used.

    The error's message is one line that names ``CITYSTREAM_REGISTRY``, the file and what is wrong.
    """
    if path is None:
        return Registry()
    where = f"{VARIABLE}: the registry {path}"
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise RegistryError(f"{VARIABLE}: cannot read the registry {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RegistryError(f"{where} is not UTF-8 text at byte offset {exc.start}: save it as UTF-8") from None
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RegistryError(f"{VARIABLE}: cannot read the registry {path}: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise RegistryError(
            f"{where} is nested too deeply (a registry has three levels): check its brackets and indentation"
        ) from None
    try:
        return Registry.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise RegistryError(f"{where} is not valid: {problems}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line, with its place in the file (not the multi-line excerpt PyYAML prints)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = ": ".join(part for part in (exc.context, exc.problem) if part)
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())
