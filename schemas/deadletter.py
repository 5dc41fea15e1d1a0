"""The dead letter (schemas/CONTRACT.md section 4): what could not be processed, why, and its original bytes."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class DeadLetterReason(StrEnum):
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    TOO_LARGE = "too_large"
    BAD_BATCH = "bad_batch"
    SCHEMA = "schema"
    FUTURE_TIMESTAMP = "future_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    PROCESSING_ERROR = "processing_error"  # the processor failed on the message (a bug); version 1.1
    # version 1.1: an uplink a gateway bridge could not map to a reading (no Kafka coordinates)
    UNMAPPABLE = "unmappable"


class FieldError(BaseModel):
    model_config = ConfigDict(frozen=True)

    loc: str
    msg: str
    type: str


class DeadLetterSource(BaseModel):
    """Where the message came from: a Kafka topic, partition and offset, or (version 1.1) a gateway
    bridge's ``mqtt:<topic>`` with no partition or offset."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int | None
    offset: int | None
    key: str | None
    timestamp_ms: int | None


class DeadLetter(BaseModel):
    """A message, or batch element, the processor could not process: why, and its original bytes
    (``city.deadletter.v1``)."""

    model_config = ConfigDict(frozen=True)

    source: DeadLetterSource
    index: int | None
    reason: DeadLetterReason
    errors: list[FieldError]
    payload: str | None
    payload_b64: str | None
    dead_lettered_at: str
    # version 1.1: the payload keeps at most the first 1 MiB of the original; when it was cut, these
    # say so and identify the original
    payload_truncated: bool = False
    payload_bytes: int | None = None
    payload_sha256: str | None = None
