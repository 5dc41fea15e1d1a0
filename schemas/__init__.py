"""Wire schemas of citystream, version 1 with the dead letters of 1.1 (the contract: schemas/CONTRACT.md).

One frozen pydantic v2 model per reading kind, per batch envelope, the dead letter and the alert.
Models know nothing of Kafka, Faust or InfluxDB; :mod:`schemas.codec` owns JSON encoding, and
:mod:`schemas.export` their JSON Schema files (schemas/json/).
"""

from schemas.alert import Alert, AlertSubject
from schemas.batch import BATCH_MODELS, MAX_BATCH_READINGS, EnvBatch, ParkingBatch, TaxiBatch
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
    "BATCH_MODELS",
    "ENV_MEASUREMENTS",
    "MAX_BATCH_READINGS",
    "READING_MODELS",
    "TAXI_EVENTS",
    "Alert",
    "AlertSubject",
    "DeadLetter",
    "DeadLetterReason",
    "DeadLetterSource",
    "EnvBatch",
    "EnvReading",
    "FieldError",
    "ParkingBatch",
    "ParkingReading",
    "Reading",
    "SourceKind",
    "TaxiBatch",
    "TaxiReading",
]
