"""Reading models of the three source topics (schemas/CONTRACT.md section 2).

Models are strict (a number sent as a string is a wrong type, not a number), frozen, and ignore
fields they do not name, so newer senders keep working. ``ts`` is held as epoch milliseconds.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema, model_validator

from schemas.timestamps import parse_rfc3339_ms

_ID_PATTERN = r"^[A-Za-z0-9._:-]+$"

DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_ID_PATTERN)]
LotId = DeviceId
SpotId = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=_ID_PATTERN)]
District = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]


def _event_time_ms(value: Any) -> int:
    if isinstance(value, bool):  # bool is an int subclass in Python, not a timestamp
        raise ValueError("ts must be an RFC 3339 string or integer epoch milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return parse_rfc3339_ms(value)
    raise ValueError("ts must be an RFC 3339 string or integer epoch milliseconds")


# RFC 3339 date-time with a required offset, as parse_rfc3339_ms takes it, for the JSON Schema. It bounds
# months, days, hours, minutes, seconds and offsets; it cannot know the length of a month (Feb 30).
RFC3339_PATTERN: Final = (
    r"^(?!0000)[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)

EventTimeMs = Annotated[
    int,
    BeforeValidator(_event_time_ms),
    WithJsonSchema(
        {
            "description": "Event time: an RFC 3339 date-time with a UTC offset (Z or +hh:mm; t, z and a space "
            "instead of T are accepted), or an integer of epoch milliseconds. Digits beyond milliseconds "
            "are cut off.",
            "anyOf": [
                {"type": "string", "pattern": RFC3339_PATTERN},
                {"type": "integer"},
            ],
        }
    ),
]


class SourceKind(StrEnum):
    """The three reading kinds, each with its source topic."""

    TAXI = "taxi"
    PARKING = "parking"
    ENVIRONMENT = "environment"

    @property
    def topic(self) -> str:
        return SOURCE_TOPICS[self]


SOURCE_TOPICS: Final[dict[SourceKind, str]] = {
    SourceKind.TAXI: "city.taxi.adas.v1",
    SourceKind.PARKING: "city.parking.v1",
    SourceKind.ENVIRONMENT: "city.env.v1",
}


class _Reading(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    device_id: Annotated[DeviceId, Field(description="The sensor; also the message key.")]
    ts: EventTimeMs
    seq: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="A per-device counter (e.g. a LoRaWAN frame counter) used to spot duplicates."
    )

    kind: ClassVar[SourceKind]


TAXI_EVENTS: Final = (
    "NONE",
    "FCW",
    "UFCW",
    "PCW",
    "LDW_L",
    "LDW_R",
    "HMW",
    "OVERSPEED",
    "POTHOLE",
    "OBSTACLE",
)
TaxiEvent = Literal["NONE", "FCW", "UFCW", "PCW", "LDW_L", "LDW_R", "HMW", "OVERSPEED", "POTHOLE", "OBSTACLE"]


class TaxiReading(_Reading):
    """A taxi's ADAS telemetry or warning event with its GPS fix (``city.taxi.adas.v1``)."""

    kind: ClassVar[SourceKind] = SourceKind.TAXI

    lat: Latitude
    lon: Longitude
    speed_kmh: Annotated[float, Field(ge=0, le=300)]
    heading_deg: Annotated[float, Field(ge=0, lt=360)] | None = None
    event: TaxiEvent = "NONE"
    headway_s: Annotated[float, Field(ge=0, le=10)] | None = None
    ttc_s: Annotated[float, Field(ge=0, le=10)] | None = None


class ParkingReading(_Reading):
    """One parking spot sensor's state (``city.parking.v1``)."""

    kind: ClassVar[SourceKind] = SourceKind.PARKING

    lot_id: LotId
    spot_id: SpotId
    occupied: bool
    # named parking_kind in Python: `kind` is the reading kind of every model
    parking_kind: Literal["change", "heartbeat"] = Field(default="change", alias="kind")
    battery_v: Annotated[float, Field(ge=0, le=5)] | None = None
    rssi_dbm: Annotated[float, Field(ge=-150, le=0)] | None = None
    snr_db: Annotated[float, Field(ge=-30, le=30)] | None = None


ENV_MEASUREMENTS: Final = (
    "pm10_ugm3",
    "pm25_ugm3",
    "o3_ppm",
    "no2_ppm",
    "so2_ppm",
    "co_ppm",
    "temp_c",
    "humidity_pct",
    "noise_dba",
)


class EnvReading(_Reading):
    """An environmental / air-quality station's measurements (``city.env.v1``)."""

    kind: ClassVar[SourceKind] = SourceKind.ENVIRONMENT

    district: District | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None
    pm10_ugm3: Annotated[float, Field(ge=0, le=2000)] | None = None
    pm25_ugm3: Annotated[float, Field(ge=0, le=1000)] | None = None
    o3_ppm: Annotated[float, Field(ge=0, le=1)] | None = None
    no2_ppm: Annotated[float, Field(ge=0, le=2)] | None = None
    so2_ppm: Annotated[float, Field(ge=0, le=2)] | None = None
    co_ppm: Annotated[float, Field(ge=0, le=100)] | None = None
    temp_c: Annotated[float, Field(ge=-50, le=70)] | None = None
    humidity_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    noise_dba: Annotated[float, Field(ge=0, le=160)] | None = None

    # the model validator below, as JSON Schema: one measurement present and not null
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in ENV_MEASUREMENTS
            ]
        }
    )

    @model_validator(mode="after")
    def _at_least_one_measurement(self) -> EnvReading:
        values = self.__dict__  # the fields' values, read at C speed: this runs for every reading
        if list(map(values.get, ENV_MEASUREMENTS)).count(None) == len(ENV_MEASUREMENTS):
            raise ValueError("a reading carries at least one of " + ", ".join(ENV_MEASUREMENTS))
        return self

    def measurements(self) -> dict[str, float]:
        """The measurements present, by contract name."""
        values = self.__dict__
        return {name: value for name in ENV_MEASUREMENTS if (value := values[name]) is not None}


Reading = TaxiReading | ParkingReading | EnvReading

READING_MODELS: Final[dict[SourceKind, type[TaxiReading] | type[ParkingReading] | type[EnvReading]]] = {
    SourceKind.TAXI: TaxiReading,
    SourceKind.PARKING: ParkingReading,
    SourceKind.ENVIRONMENT: EnvReading,
}
