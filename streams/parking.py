"""Parking stream (``city.parking.v1``): raw points of measurement ``parking``."""

from __future__ import annotations

from typing import Final

from schemas.readings import ParkingReading, SourceKind
from streams.lineprotocol import format_float
from streams.registry import Registry
from streams.wiring import SourceStream


def raw_point(reading: ParkingReading, registry: Registry) -> str:
    fields = f"occupied={int(reading.occupied)}i"
    if reading.battery_v is not None:
        fields += f",battery_v={format_float(reading.battery_v)}"
    if reading.rssi_dbm is not None:
        fields += f",rssi_dbm={format_float(reading.rssi_dbm)}"
    if reading.snr_db is not None:
        fields += f",snr_db={format_float(reading.snr_db)}"
    # lot_id and spot_id follow the device_id charset: nothing to escape
    return f"parking,lot_id={reading.lot_id},spot_id={reading.spot_id} {fields} {reading.ts}"


STREAM: Final = SourceStream(kind=SourceKind.PARKING, model=ParkingReading, raw_point=raw_point)
