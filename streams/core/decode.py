"""From a Kafka message's bytes to valid readings and rejections (schemas/CONTRACT.md sections 2 and 4).

Pure functions with no Faust or Kafka import: every byte string gives readings, rejections or both,
never an exception. A rejection becomes a dead letter once the message's coordinates are known, and
a dead letter always fits its topic: it keeps at most the first :data:`MAX_PAYLOAD_BYTES` of the
original (contract version 1.1), so that no message can stop a partition.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from schemas import codec
from schemas.batch import MAX_BATCH_READINGS
from schemas.deadletter import DeadLetter, DeadLetterReason, DeadLetterSource, FieldError
from schemas.readings import EnvReading, ParkingReading, Reading, TaxiReading
from schemas.timestamps import format_ms

MAX_MESSAGE_BYTES: Final = 1024 * 1024
# a dead letter keeps at most this much of the original payload, and of the original key
MAX_PAYLOAD_BYTES: Final = 1024 * 1024
MAX_KEY_BYTES: Final = 1024 * 1024

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
    payload: Payload
    index: int | None = None


@dataclass(frozen=True, slots=True)
class Payload:
    """What a dead letter keeps of the original: its text, or base64 when it is not UTF-8; at most
    :data:`MAX_PAYLOAD_BYTES` of it, with the original's size and SHA-256 when it was cut."""

    text: str | None = None
    b64: str | None = None
    truncated: bool = False
    original_bytes: int | None = None
    sha256: str | None = None

    @classmethod
    def of(cls, value: bytes | None) -> Payload:
        """The payload of original bytes; ``None`` (a message without a value) keeps nothing."""
        if value is None:
            return cls()
        cut = value[:MAX_PAYLOAD_BYTES]
        truncated = len(cut) < len(value)
        text: str | None = None
        b64: str | None = None
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            b64 = base64.b64encode(cut).decode("ascii")
        else:
            # the whole is UTF-8: a cut ends on a character boundary, at most 3 bytes earlier
            text = cut.decode("utf-8", errors="ignore") if truncated else cut.decode("utf-8")
        if not truncated:
            return cls(text, b64)
        return cls(text, b64, True, len(value), hashlib.sha256(value).hexdigest())


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


@dataclass(frozen=True, slots=True)
class BridgeSource:
    """Where a gateway bridge's message came from (contract version 1.1): ``mqtt:<topic>``, with no
    Kafka partition or offset."""

    topic: str
    key: bytes | None
    timestamp_ms: int | None
    partition: None = None
    offset: None = None


def decode_message(model: ReadingModel, value: bytes | None, now_ms: int, limits: TimeLimits = TimeLimits()) -> Decoded:
    """Judge one message value: a single reading or a ``{"batch": [...]}`` envelope."""
    decoded = Decoded()
    if value is None or len(value) == 0:
        decoded.rejections.append(
            Rejection(
                DeadLetterReason.MALFORMED_JSON, (_error("", "the message has no value", "json_empty"),), Payload()
            )
        )
        return decoded
    if len(value) > MAX_MESSAGE_BYTES:
        msg = f"{len(value)} bytes is over the {MAX_MESSAGE_BYTES} byte limit of a message"
        decoded.rejections.append(
            Rejection(DeadLetterReason.TOO_LARGE, (_error("", msg, "too_large"),), Payload.of(value))
        )
        return decoded
    try:
        document = codec.loads(value)
    except codec.JSONDecodeError as exc:
        payload = Payload.of(value)
        if payload.text is None:
            msg = "the message is not valid UTF-8"
            decoded.rejections.append(Rejection(DeadLetterReason.NOT_UTF8, (_error("", msg, "not_utf8"),), payload))
        else:
            decoded.rejections.append(
                Rejection(DeadLetterReason.MALFORMED_JSON, (_error("", str(exc), "json_invalid"),), payload)
            )
        return decoded
    if not isinstance(document, dict):
        msg = f"a message is a JSON object, not {_json_type(document)}"
        decoded.rejections.append(
            Rejection(DeadLetterReason.NOT_AN_OBJECT, (_error("", msg, "not_an_object"),), Payload.of(value))
        )
        return decoded
    if "batch" not in document:
        _judge_reading(model, document, now_ms, limits, decoded, index=None, original=value)
        return decoded
    batch = document["batch"]
    problem = _batch_problem(batch)
    if problem is not None:
        decoded.rejections.append(
            Rejection(DeadLetterReason.BAD_BATCH, (_error("batch", problem, "bad_batch"),), Payload.of(value))
        )
        return decoded
    try:  # a whole envelope in one call; one with an invalid element is judged element by element
        readings = _batch_adapter(model).validate_python(batch)
    except ValidationError:
        pass
    else:
        for index, reading in enumerate(readings):
            _judge_time(reading, now_ms, limits, decoded, batch[index], index=index, original=value)
        return decoded
    for index, element in enumerate(batch):
        if isinstance(element, dict):
            _judge_reading(model, element, now_ms, limits, decoded, index=index, original=value)
        else:
            msg = f"a batch element is a JSON object, not {_json_type(element)}"
            decoded.rejections.append(
                Rejection(
                    DeadLetterReason.NOT_AN_OBJECT,
                    (_error("", msg, "not_an_object"),),
                    _element_payload(element, value),
                    index=index,
                )
            )
    return decoded


def dead_letter(source: SourceMessage | BridgeSource, rejection: Rejection, now_ms: int) -> DeadLetter:
    key = None if source.key is None else dead_letter_key(source.key).decode("utf-8", errors="backslashreplace")
    payload = rejection.payload
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
        payload=payload.text,
        payload_b64=payload.b64,
        dead_lettered_at=format_ms(now_ms),
        payload_truncated=payload.truncated,
        payload_bytes=payload.original_bytes,
        payload_sha256=payload.sha256,
    )


def dead_letter_key(key: bytes) -> bytes:
    """The key a dead letter is published with: the original key, cut to :data:`MAX_KEY_BYTES`."""
    return key[:MAX_KEY_BYTES]


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """The dead letter as JSON. Bounded: about 6 times :data:`MAX_PAYLOAD_BYTES` plus 6 times
    :data:`MAX_KEY_BYTES` at worst (every byte a control character, escaped as ``\\u00XX``)."""
    return codec.dumps(letter.model_dump(mode="json"))


def processing_error(exc: BaseException, value: bytes | None, index: int | None = None) -> Rejection:
    """The rejection of a message the processor itself failed on (a bug): the partition goes on."""
    msg = f"the processor failed on this message: {type(exc).__name__}: {exc}"[:2000]
    return Rejection(
        DeadLetterReason.PROCESSING_ERROR,
        (_error("", msg, "processing_error"),),
        Payload.of(value),
        index=index,
    )


def _judge_reading(
    model: ReadingModel,
    document: Mapping[str, Any],
    now_ms: int,
    limits: TimeLimits,
    decoded: Decoded,
    *,
    index: int | None,
    original: bytes,
) -> None:
    try:
        reading = model.model_validate(document)
    except ValidationError as exc:
        errors = tuple(
            _error(".".join(str(p) for p in err["loc"]), err["msg"], err["type"])
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        decoded.rejections.append(
            Rejection(DeadLetterReason.SCHEMA, errors, _reading_payload(document, original, index), index=index)
        )
        return
    _judge_time(reading, now_ms, limits, decoded, document, index=index, original=original)


def _judge_time(
    reading: Reading,
    now_ms: int,
    limits: TimeLimits,
    decoded: Decoded,
    document: Mapping[str, Any],
    *,
    index: int | None,
    original: bytes,
) -> None:
    """A valid reading whose ts lies within the limits is kept; another is rejected."""
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
                _reading_payload(document, original, index),
                index=index,
            )
        )
    elif -ahead_ms > limits.max_age_ms:
        msg = f"ts lies {-ahead_ms / 1000:.0f} s behind the processor's clock (limit {limits.max_age_ms / 1000:.0f} s)"
        decoded.rejections.append(
            Rejection(
                DeadLetterReason.STALE_TIMESTAMP,
                (_error("ts", msg, "stale_timestamp"),),
                _reading_payload(document, original, index),
                index=index,
            )
        )
    else:
        decoded.readings.append(reading)


@functools.cache
def _batch_adapter(model: ReadingModel) -> TypeAdapter[list[Reading]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


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


def _reading_payload(document: Mapping[str, Any], original: bytes, index: int | None) -> Payload:
    """A single reading keeps the message as it came; a batch element, that element as JSON."""
    return Payload.of(original) if index is None else _element_payload(document, original)


def _element_payload(element: Any, original: bytes) -> Payload:
    """A batch element as JSON; one that cannot be encoded again (nested deeper than the encoder
    allows, say) keeps the original text of the whole message instead."""
    try:
        return Payload.of(codec.dumps(element))
    except (TypeError, ValueError, RecursionError):  # orjson.JSONEncodeError is a TypeError
        return Payload.of(original)


_JSON_TYPES: Final = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), type(value).__name__)
