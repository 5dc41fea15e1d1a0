"""Environment stream (``city.env.v1``): raw points of measurement ``environment``."""

from __future__ import annotations

from typing import Final

from schemas.readings import EnvReading, SourceKind
from streams.lineprotocol import escape_tag, format_float
from streams.registry import Registry
from streams.wiring import SourceStream

UNKNOWN_DISTRICT: Final = "unknown"


def district_of(reading: EnvReading, registry: Registry) -> str:
    """The reading's district, else the registry's, else ``unknown`` (contract 2.3)."""
    return reading.district or registry.station_district(reading.device_id) or UNKNOWN_DISTRICT


def raw_point(reading: EnvReading, registry: Registry) -> str:
    fields = ",".join(f"{name}={format_float(value)}" for name, value in reading.measurements().items())
    district = escape_tag(district_of(reading, registry)) or UNKNOWN_DISTRICT
    return f"environment,device_id={reading.device_id},district={district} {fields} {reading.ts}"


STREAM: Final = SourceStream(kind=SourceKind.ENVIRONMENT, model=EnvReading, raw_point=raw_point)
