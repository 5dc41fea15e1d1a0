"""Taxi ADAS stream (``city.taxi.adas.v1``): raw points of measurement ``taxi_adas``."""

from __future__ import annotations

from typing import Final

import h3

from schemas.readings import SourceKind, TaxiReading
from streams.lineprotocol import format_float
from streams.registry import Registry
from streams.wiring import SourceStream

H3_RESOLUTION: Final = 9


def cell_of(lat: float, lon: float) -> str:
    """The H3 index at resolution 9 (about 0.1 km²) of a position."""
    return h3.latlng_to_cell(lat, lon, H3_RESOLUTION)


def raw_point(reading: TaxiReading, registry: Registry) -> str:
    # tags in key order; device_id, event and cell never need escaping (contract charset, hex)
    fields = (
        f"lat={format_float(reading.lat)},lon={format_float(reading.lon)},speed_kmh={format_float(reading.speed_kmh)}"
    )
    if reading.heading_deg is not None:
        fields += f",heading_deg={format_float(reading.heading_deg)}"
    if reading.headway_s is not None:
        fields += f",headway_s={format_float(reading.headway_s)}"
    if reading.ttc_s is not None:
        fields += f",ttc_s={format_float(reading.ttc_s)}"
    cell = cell_of(reading.lat, reading.lon)
    return f"taxi_adas,cell={cell},device_id={reading.device_id},event={reading.event} {fields} {reading.ts}"


STREAM: Final = SourceStream(kind=SourceKind.TAXI, model=TaxiReading, raw_point=raw_point)
