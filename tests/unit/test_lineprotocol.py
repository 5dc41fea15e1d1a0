"""Line protocol escaping and the raw points of each reading kind."""

from __future__ import annotations

import h3
import pytest

from schemas.readings import EnvReading, ParkingReading, TaxiReading
from streams import environment, parking, taxi
from streams.lineprotocol import (
    escape_measurement,
    escape_string_field,
    escape_tag,
    format_field,
    format_line,
)
from streams.registry import Registry, StationInfo

TS = 1_795_296_000_000


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("env-jung-03", "env-jung-03"),
        ("Jung gu", r"Jung\ gu"),
        ("a,b", r"a\,b"),
        ("k=v", r"k\=v"),
        ('say "hi"', r'say\ "hi"'),
        ("back\\slash", "back\\slash"),
        ("대구 중구", r"대구\ 중구"),
        ("line\nbreak", r"line\ break"),
        ("trailing\\", "trailing"),
        ("\t", r"\ "),
    ],
)
def test_escape_tag(raw: str, escaped: str) -> None:
    assert escape_tag(raw) == escaped


def test_escape_measurement_keeps_equals_signs() -> None:
    assert escape_measurement("a b,c=d") == r"a\ b\,c=d"


@pytest.mark.parametrize(
    ("raw", "quoted"),
    [
        ("plain", '"plain"'),
        ('PM2.5 "high"', r'"PM2.5 \"high\""'),
        ("C:\\path", r'"C:\\path"'),
        ("µg/m³ ≥ 75", '"µg/m³ ≥ 75"'),
        ("two\nlines", '"two\nlines"'),
        ("a, b=c", '"a, b=c"'),
    ],
)
def test_escape_string_field(raw: str, quoted: str) -> None:
    assert escape_string_field(raw) == quoted


def test_field_types() -> None:
    assert format_field(3) == "3i"
    assert format_field(3.0) == "3.0"
    assert format_field(1e-5) == "1e-05"
    assert format_field(True) == "true"
    assert format_field("x") == '"x"'


def test_format_line_sorts_tags_and_drops_empty_ones() -> None:
    line = format_line(
        "alerts",
        {"status": "raised", "kind": "air.pm25_advisory", "severity": ""},
        {"value": 81.4, "message": 'PM2.5 "x"'},
        TS,
    )
    assert line == f'alerts,kind=air.pm25_advisory,status=raised value=81.4,message="PM2.5 \\"x\\"" {TS}'
    with pytest.raises(ValueError):
        format_line("m", {}, {}, TS)


def test_taxi_point_has_the_h3_cell_and_optional_fields() -> None:
    reading = TaxiReading.model_validate(
        {
            "device_id": "taxi-0001",
            "ts": TS,
            "lat": 35.8714,
            "lon": 128.6014,
            "speed_kmh": 42,
            "event": "FCW",
            "ttc_s": 1.8,
        }
    )
    cell = h3.latlng_to_cell(35.8714, 128.6014, 9)
    assert h3.get_resolution(cell) == 9
    assert taxi.raw_point(reading, Registry()) == (
        f"taxi_adas,cell={cell},device_id=taxi-0001,event=FCW lat=35.8714,lon=128.6014,speed_kmh=42.0,ttc_s=1.8 {TS}"
    )


def test_parking_point_writes_occupied_as_integer() -> None:
    reading = ParkingReading.model_validate(
        {
            "device_id": "pk-1",
            "ts": TS,
            "lot_id": "suseong-alpha-1",
            "spot_id": "A001",
            "occupied": False,
            "battery_v": 3.4,
            "rssi_dbm": -112,
            "kind": "heartbeat",
        }
    )
    assert parking.raw_point(reading, Registry()) == (
        f"parking,lot_id=suseong-alpha-1,spot_id=A001 occupied=0i,battery_v=3.4,rssi_dbm=-112.0 {TS}"
    )


def test_environment_district_from_reading_registry_or_unknown() -> None:
    registry = Registry(env_stations={"env-jung-03": StationInfo(district="jung")})
    own = EnvReading.model_validate({"device_id": "env-jung-03", "ts": TS, "district": "Jung gu", "pm25_ugm3": 12})
    assert environment.raw_point(own, registry) == (
        rf"environment,device_id=env-jung-03,district=Jung\ gu pm25_ugm3=12.0 {TS}"
    )
    listed = EnvReading.model_validate({"device_id": "env-jung-03", "ts": TS, "pm10_ugm3": 40, "noise_dba": 55.5})
    assert environment.raw_point(listed, registry) == (
        f"environment,device_id=env-jung-03,district=jung pm10_ugm3=40.0,noise_dba=55.5 {TS}"
    )
    stranger = EnvReading.model_validate({"device_id": "env-x", "ts": TS, "co_ppm": 0.4})
    assert environment.raw_point(stranger, registry) == (
        f"environment,device_id=env-x,district=unknown co_ppm=0.4 {TS}"
    )
