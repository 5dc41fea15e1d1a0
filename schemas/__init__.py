"""Wire schemas of citystream, version 1 with the dead letters of 1.1 (the contract: schemas/CONTRACT.md).

One frozen pydantic v2 model per reading kind, the dead letter and the alert. Models know nothing of
Kafka, Faust or InfluxDB; :mod:`schemas.codec` owns JSON encoding.
"""

from schemas.alert import Alert, AlertSubject
from schemas.deadletter import DeadLetter, DeadLetterReason, DeadLetterSource, FieldError
from schemas.readings import (
    ENV_MEASUREMENTS,
    READING_MODELS,
    TAXI_EVENTS,
    EnvReading,
    ParkingReading,
    Reading,
    SourceKind,
    TaxiReading,
)

__all__ = [
    "ENV_MEASUREMENTS",
    "READING_MODELS",
    "TAXI_EVENTS",
    "Alert",
    "AlertSubject",
    "DeadLetter",
    "DeadLetterReason",
    "DeadLetterSource",
    "EnvReading",
    "FieldError",
    "ParkingReading",
    "Reading",
    "SourceKind",
    "TaxiReading",
]
