"""Line protocol escaping and the raw points of each reading kind."""

from __future__ import annotations

import re

import h3
import pytest
from pydantic import TypeAdapter, ValidationError

from schemas.readings import DeviceId, EnvReading, ParkingReading, SpotId, TaxiReading
from streams.core.lineprotocol import (
    escape_measurement,
    escape_string_field,
    escape_tag,
    format_field,
    format_line,
    normalize_tag,
)
from streams.core.registry import Registry, StationInfo
from streams.core.windows import FOLDED, WindowPolicy
from streams.kinds import environment, parking, taxi
from streams.kinds.environment import UNKNOWN_DISTRICT, StationAggregate, StationSample

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


# --- normalize_tag: what InfluxDB stores of a tag value -------------------------------------------

CONTROLS = [chr(code) for code in range(0x20)] + ["\x7f"]
SPECIALS = [" ", ",", "=", '"']


def influx1_tag_value(escaped: str) -> str:
    r"""The value InfluxDB 1.x stores for an escaped tag value, or AssertionError where it would answer 400.

    The 1.x scanner ends a tag value at a comma or space not preceded by a backslash, refuses an
    equals sign not preceded by one and a value that ends in one; its unescape only turns ``\,``,
    ``\ `` and ``\=`` back. Also asserts what other parsers (that read ``\\`` as one backslash)
    need: no backslash before an escaped character.
    """
    assert escaped, "no empty tag value in line protocol"
    assert not re.search(r"[\x00-\x1f\x7f]", escaped), f"control character in {escaped!r}"
    assert not escaped.endswith("\\"), f"{escaped!r} ends in a backslash"
    assert not re.search(r"(?<!\\)[ ,=]", escaped), f"unescaped space, comma or equals sign in {escaped!r}"
    assert not re.search(r'\\\\[ ,="]', escaped), f"ambiguous backslash before an escape in {escaped!r}"
    for char in (",", " ", "="):
        escaped = escaped.replace("\\" + char, char)
    return escaped


NORMALIZED = [
    # (value, what InfluxDB stores)
    *[(f"a{char}b", "a b") for char in CONTROLS],
    *[(char, " ") for char in CONTROLS],
    # line breaks at the start, in the middle, at the end
    ("\njung", " jung"),
    ("ju\nng", "ju ng"),
    ("jung\n", "jung "),
    ("jung\r\n", "jung  "),
    ("\n", " "),
    # trailing backslashes
    ("trailing\\", "trailing"),
    ("trailing\\\\\\", "trailing"),
    ("a\\b\\", "a\\b"),
    ("a\\\n", "a "),  # the line break becomes a space: the backslash before it goes too
    # a backslash (or a run of them) before each special character
    *[(f"a\\{char}b", f"a{char}b") for char in SPECIALS],
    *[(f"a\\\\\\{char}b", f"a{char}b") for char in SPECIALS],
    *[(f"\\{char}", char) for char in SPECIALS],
    ('a\\ \\,\\=\\"b\\', 'a ,="b'),
    # backslashes elsewhere are kept
    ("back\\slash", "back\\slash"),
    ("a\\\\b", "a\\\\b"),
    ("\\a", "\\a"),
    ("x\\대", "x\\대"),
    # nothing left
    ("\\", ""),
    ("\\\\\\\\", ""),
    ("", ""),
    # nothing to do
    ("env-jung-03", "env-jung-03"),
    ("Jung gu", "Jung gu"),
    ('say "hi"', 'say "hi"'),
    ("a,b=c", "a,b=c"),
    ("대구 중구", "대구 중구"),
    ("\u2028\x85", "\u2028\x85"),  # not line breaks to line protocol
]


@pytest.mark.parametrize(("value", "stored"), NORMALIZED)
def test_normalize_tag(value: str, stored: str) -> None:
    assert normalize_tag(value) == stored
    assert normalize_tag(stored) == stored  # idempotent
    assert escape_tag(value) == escape_tag(stored)
    if stored:
        assert influx1_tag_value(escape_tag(value)) == stored
    else:
        assert escape_tag(value) == ""


@pytest.mark.parametrize("char", CONTROLS)
def test_escape_tag_turns_every_control_character_into_an_escaped_space(char: str) -> None:
    assert escape_tag(f"k{char}") == r"k\ "
    assert escape_tag(f"{char}k") == r"\ k"


@pytest.mark.parametrize("char", SPECIALS)
def test_escape_tag_drops_a_backslash_before_a_special_character(char: str) -> None:
    escaped = {" ": r"\ ", ",": r"\,", "=": r"\=", '"': '"'}[char]
    assert escape_tag(f"a\\{char}b") == f"a{escaped}b"
    assert escape_tag(f"a\\\\{char}") == f"a{escaped}"


def test_format_line_normalises_tag_values() -> None:
    assert format_line("m", {"a": "x\n", "b": "\\", "c": "y\\"}, {"f": 1}, TS) == rf"m,a=x\ ,c=y f=1i {TS}"


def test_ids_that_the_schema_accepts_are_their_own_normal_form() -> None:
    # device_id, lot_id and spot_id key windows as read: right only if InfluxDB stores every id as it is
    values = [chr(code) for code in range(0x300)] + ["taxi-0001", "a" * 32, "대", "\u2028", "id\n", "id\\", "id\x00"]
    accepted = []
    for id_type in (DeviceId, SpotId):
        adapter = TypeAdapter(id_type)
        for value in values:
            try:
                adapter.validate_python(value)
            except ValidationError:
                continue
            accepted.append(value)
            assert normalize_tag(value) == value
            assert escape_tag(value) == value
    assert len(accepted) == 2 * (26 + 26 + 10 + 4 + 2)  # the id charset, "taxi-0001" and "a" * 32


def test_taxi_event_and_cell_are_their_own_normal_form() -> None:
    for event in taxi.EVENT_COUNTERS | {"NONE": ""}:
        assert escape_tag(event) == event
    cell = taxi.cell_of(35.8714, 128.6014)
    assert escape_tag(cell) == cell


# --- the district of an environment reading -----------------------------------------------------

DISTRICTS = [
    # (the reading's district, what InfluxDB stores)
    ("jung\n", "jung "),
    ("\njung", " jung"),
    ("ju\nng", "ju ng"),
    ("k\x01", "k "),
    ("k ", "k "),
    ("k\\", "k"),
    ("\\", UNKNOWN_DISTRICT),
    ("\\\\", UNKNOWN_DISTRICT),
    (None, UNKNOWN_DISTRICT),
    ("a\\ b", "a b"),
    ("a\\,b", "a,b"),
    ("a\\=b", "a=b"),
    ('a\\"b', 'a"b'),
    ("dong", "dong"),
]


def _env(district: str | None, ts: int = TS, device: str = "env-x", **values: float) -> EnvReading:
    document: dict[str, object] = {"device_id": device, "ts": ts, **(values or {"pm25_ugm3": 10.0})}
    if district is not None:
        document["district"] = district
    return EnvReading.model_validate(document)


@pytest.mark.parametrize(("district", "stored"), DISTRICTS)
def test_environment_district_is_normalised_for_the_point_and_the_sample(district: str | None, stored: str) -> None:
    reading = _env(district)
    assert environment.district_of(reading, Registry()) == stored
    assert StationSample.of(reading, Registry()).district == stored
    assert environment.raw_point(reading, Registry()) == (
        f"environment,device_id=env-x,district={escape_tag(stored)} pm25_ugm3=10.0 {TS}"
    )


def test_environment_registry_district_is_normalised_too() -> None:
    registry = Registry(env_stations={"env-x": StationInfo(district="seo\t\\")})
    assert environment.district_of(_env(None), registry) == "seo "
    # the reading's own district comes first, even when nothing of it is left
    assert environment.district_of(_env("\\"), registry) == UNKNOWN_DISTRICT


def _minute_points(readings: list[EnvReading]) -> list[tuple[str, str, str]]:
    """(series, fields, time) of each environment_1m line after folding ``readings`` as the worker does."""
    aggregate = StationAggregate(WindowPolicy(), Registry())
    for reading in readings:
        assert aggregate.fold(StationSample.of(reading, Registry()), TS + 60_000) == FOLDED
    return [
        (series, fields, time)
        for series, fields, time in (line.rsplit(" ", 2) for line in aggregate.take_lines())
        if series.startswith("environment_1m,")
    ]


def test_districts_that_influxdb_stores_alike_are_one_window() -> None:
    points = _minute_points([_env("k\x01", TS + 1_000, pm25_ugm3=20.0), _env("k ", TS + 2_000, pm25_ugm3=40.0)])
    assert points == [
        (
            r"environment_1m,device_id=env-x,district=k\ ",
            "readings=2i,pm25_ugm3_mean=30.0,pm25_ugm3_min=20.0,pm25_ugm3_max=40.0,qc_suspect=0i,qc_fail=0i",
            str(TS),
        )
    ]


def test_a_district_of_backslashes_and_no_district_are_both_unknown() -> None:
    points = _minute_points([_env("\\", TS + 1_000), _env(None, TS + 2_000), _env("\\\\\\", TS + 3_000)])
    assert [(series, fields.split(",")[0]) for series, fields, _ in points] == [
        ("environment_1m,device_id=env-x,district=unknown", "readings=3i")
    ]
