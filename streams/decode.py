"""From a Kafka message's bytes to valid readings and rejections (contract sections 2 and 4).

Pure functions with no Faust or Kafka import: every byte string gives readings, rejections or both,
never an exception. A rejection becomes a dead letter once the message's coordinates are known.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from schemas import codec
from schemas.deadletter import DeadLetter, DeadLetterReason, DeadLetterSource, FieldError
from schemas.readings import EnvReading, ParkingReading, Reading, TaxiReading
from schemas.timestamps import format_ms

MAX_MESSAGE_BYTES: Final = 1024 * 1024
MAX_BATCH_READINGS: Final = 1000

ReadingModel = type[TaxiReading] | type[ParkingReading] | type[EnvReading]


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """How far a reading's ts may lie ahead of and behind the processor's clock."""

    max_future_ms: int = 5 * 60 * 1000
    max_age_ms: int = 7 * 86_400 * 1000


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message, or one element of a batch, cannot be processed."""

    reason: DeadLetterReason
    errors: tuple[FieldError, ...]
    payload: str | None
    payload_b64: str | None = None
    index: int | None = None


@dataclass(slots=True)
class Decoded:
    """The outcome of one message: its valid readings and its rejections, in message order."""

    readings: list[Reading] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """Where a message came from: what a dead letter needs besides the rejection."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int | None


def decode_message(model: ReadingModel, value: bytes | None, now_ms: int, limits: TimeLimits = TimeLimits()) -> Decoded:
    """Judge one message value: a single reading or a ``{"batch": [...]}`` envelope."""
    decoded = Decoded()
    if value is None or len(value) == 0:
        decoded.rejections.append(
            Rejection(DeadLetterReason.MALFORMED_JSON, (_error("", "the message has no value", "json_empty"),), None)
        )
        return decoded
    if len(value) > MAX_MESSAGE_BYTES:
        text, b64 = _original(value)
        msg = f"{len(value)} bytes is over the {MAX_MESSAGE_BYTES} byte limit of a message"
        decoded.rejections.append(Rejection(DeadLetterReason.TOO_LARGE, (_error("", msg, "too_large"),), text, b64))
        return decoded
    try:
        document = codec.loads(value)
    except codec.JSONDecodeError as exc:
        text, b64 = _original(value)
        if text is None:
            msg = "the message is not valid UTF-8"
            decoded.rejections.append(Rejection(DeadLetterReason.NOT_UTF8, (_error("", msg, "not_utf8"),), None, b64))
        else:
            decoded.rejections.append(
                Rejection(DeadLetterReason.MALFORMED_JSON, (_error("", str(exc), "json_invalid"),), text)
            )
        return decoded
    if not isinstance(document, dict):
        msg = f"a message is a JSON object, not {_json_type(document)}"
        decoded.rejections.append(
            Rejection(DeadLetterReason.NOT_AN_OBJECT, (_error("", msg, "not_an_object"),), _text(value))
        )
        return decoded
    if "batch" not in document:
        _judge_reading(model, document, now_ms, limits, decoded, index=None, payload=value)
        return decoded
    batch = document["batch"]
    problem = _batch_problem(batch)
    if problem is not None:
        decoded.rejections.append(
            Rejection(DeadLetterReason.BAD_BATCH, (_error("batch", problem, "bad_batch"),), _text(value))
        )
        return decoded
    for index, element in enumerate(batch):
        if isinstance(element, dict):
            _judge_reading(model, element, now_ms, limits, decoded, index=index, payload=None)
        else:
            msg = f"a batch element is a JSON object, not {_json_type(element)}"
            decoded.rejections.append(
                Rejection(
                    DeadLetterReason.NOT_AN_OBJECT,
                    (_error("", msg, "not_an_object"),),
                    codec.dumps_str(element),
                    index=index,
                )
            )
    return decoded


def dead_letter(source: SourceMessage, rejection: Rejection, now_ms: int) -> DeadLetter:
    key = None if source.key is None else source.key.decode("utf-8", errors="backslashreplace")
    return DeadLetter(
        source=DeadLetterSource(
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
            key=key,
            timestamp_ms=source.timestamp_ms,
        ),
        index=rejection.index,
        reason=rejection.reason,
        errors=list(rejection.errors),
        payload=rejection.payload,
        payload_b64=rejection.payload_b64,
        dead_lettered_at=format_ms(now_ms),
    )


def encode_dead_letter(letter: DeadLetter) -> bytes:
    return codec.dumps(letter.model_dump(mode="json"))


def _judge_reading(
    model: ReadingModel,
    document: Mapping[str, Any],
    now_ms: int,
    limits: TimeLimits,
    decoded: Decoded,
    *,
    index: int | None,
    payload: bytes | None,
) -> None:
    try:
        reading = model.model_validate(document)
    except ValidationError as exc:
        errors = tuple(
            _error(".".join(str(p) for p in err["loc"]), err["msg"], err["type"])
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        decoded.rejections.append(
            Rejection(DeadLetterReason.SCHEMA, errors, _element_text(document, payload), index=index)
        )
        return
    ahead_ms = reading.ts - now_ms
    if ahead_ms > limits.max_future_ms:
        msg = (
            f"ts {format_ms(reading.ts) if reading.ts < 253402300800000 else reading.ts} lies "
            f"{ahead_ms / 1000:.0f} s ahead of the processor's clock (limit {limits.max_future_ms / 1000:.0f} s)"
        )
        decoded.rejections.append(
            Rejection(
                DeadLetterReason.FUTURE_TIMESTAMP,
                (_error("ts", msg, "future_timestamp"),),
                _element_text(document, payload),
                index=index,
            )
        )
    elif -ahead_ms > limits.max_age_ms:
        msg = f"ts lies {-ahead_ms / 1000:.0f} s behind the processor's clock (limit {limits.max_age_ms / 1000:.0f} s)"
        decoded.rejections.append(
            Rejection(
                DeadLetterReason.STALE_TIMESTAMP,
                (_error("ts", msg, "stale_timestamp"),),
                _element_text(document, payload),
                index=index,
            )
        )
    else:
        decoded.readings.append(reading)


def _batch_problem(batch: Any) -> str | None:
    if not isinstance(batch, list):
        return f"batch is a list of readings, not {_json_type(batch)}"
    if not batch:
        return "batch is empty"
    if len(batch) > MAX_BATCH_READINGS:
        return f"batch holds {len(batch)} readings, over the limit of {MAX_BATCH_READINGS}"
    return None


def _error(loc: str, msg: str, type_: str) -> FieldError:
    return FieldError(loc=loc, msg=msg.removeprefix("Value error, "), type=type_)


def _original(value: bytes) -> tuple[str | None, str | None]:
    """The original bytes as text when they are UTF-8, else as base64."""
    try:
        return value.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, base64.b64encode(value).decode("ascii")


def _text(value: bytes) -> str:
    # only called once orjson has parsed the bytes, so they are UTF-8
    return value.decode("utf-8")


def _element_text(document: Mapping[str, Any], payload: bytes | None) -> str:
    return _text(payload) if payload is not None else codec.dumps_str(document)


_JSON_TYPES: Final = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), type(value).__name__)
