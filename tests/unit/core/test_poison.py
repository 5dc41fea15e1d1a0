"""No message stops a partition: the whole per-message path, for any bytes and any key.

A property test over :meth:`streams.core.ingest.Ingestor.ingest` (decode, judge, raw points, dead letters)
and the reduction of each valid reading to what the windows keep, with deep nesting, huge strings,
control characters and huge keys among the strategies: nothing raises, every dead letter encodes
within the dead-letter topic's limit and parses back, and its payload follows contract 1.1
(the first 1 MiB of the original; when cut, its size and SHA-256).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.readings import EnvReading, ParkingReading, TaxiReading
from streams.clients.kafka import DEADLETTER_MAX_MESSAGE_BYTES
from streams.core.decode import MAX_KEY_BYTES, MAX_PAYLOAD_BYTES, SourceMessage, TimeLimits
from streams.core.ingest import Ingestor, SourceStream
from streams.core.registry import Registry
from streams.kinds import environment, parking, taxi

NOW = 1_795_294_800_000  # 2026-11-21T21:00:00Z
STREAMS = [taxi.KIND, parking.KIND, environment.KIND]
# what a Kafka record adds to its key and value (headers, lengths, attributes): generously
RECORD_OVERHEAD = 1024


def ingestor() -> Ingestor:
    return Ingestor(Registry(), TimeLimits(), clock_ms=lambda: NOW)


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    """A JSON value nested ``depth`` levels deep, alternating arrays and objects."""
    opening = b"".join(b"[" if level % 2 == 0 else b'{"k":' for level in range(depth))
    closing = b"".join(b"]" if level % 2 == 0 else b"}" for level in reversed(range(depth)))
    return opening + leaf + closing


def dumps(value: Any) -> bytes:
    """JSON of any value, integers beyond 64 bits included (which orjson cannot write)."""
    return json.dumps(value, ensure_ascii=False).encode()


def reading(stream: SourceStream[Any], **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"device_id": "dev-1", "ts": NOW - 1000, "seq": 1}
    if stream.model is TaxiReading:
        base |= {"lat": 35.87, "lon": 128.6, "speed_kmh": 30.0}
    elif stream.model is ParkingReading:
        base |= {"lot_id": "lot-1", "spot_id": "A1", "occupied": True}
    else:
        base |= {"pm25_ugm3": 12.0, "district": "jung"}
    return base | extra


def check_message(stream: SourceStream[Any], key: bytes | None, value: bytes | None) -> None:
    """The properties every message has, whatever its bytes."""
    source = SourceMessage(stream.topic, 3, 42, key, NOW - 5)
    outcome = ingestor().ingest(stream, source, value)
    registry = Registry()
    for valid in outcome.readings:  # what the windows keep of a valid reading
        if isinstance(valid, TaxiReading):
            taxi.TaxiFix.of(valid)
        elif isinstance(valid, ParkingReading):
            parking.SpotReport.of(valid)
        else:
            assert isinstance(valid, EnvReading)
            environment.StationSample.of(valid, registry)
    assert outcome.readings or outcome.dead_letters
    assert len(outcome.lines) == len(outcome.readings)
    for letter_key, letter_value in outcome.dead_letters:
        assert len(letter_value) + len(letter_key or b"") + RECORD_OVERHEAD <= DEADLETTER_MAX_MESSAGE_BYTES
        assert letter_key == (None if key is None else key[:MAX_KEY_BYTES])
        letter = DeadLetter.model_validate(orjson.loads(letter_value))
        assert (letter.source.topic, letter.source.partition, letter.source.offset) == (stream.topic, 3, 42)
        check_payload(letter, value)


def check_payload(letter: DeadLetter, value: bytes | None) -> None:
    if letter.payload is not None:
        kept = letter.payload.encode("utf-8")
        assert letter.payload_b64 is None
    elif letter.payload_b64 is not None:
        kept = base64.b64decode(letter.payload_b64)
    else:  # a message without a value keeps nothing
        assert not value
        return
    assert len(kept) <= MAX_PAYLOAD_BYTES
    if letter.payload_truncated:
        assert value is not None and letter.payload_bytes == len(value) > MAX_PAYLOAD_BYTES
        assert letter.payload_sha256 == hashlib.sha256(value).hexdigest()
        assert value.startswith(kept) and len(kept) > MAX_PAYLOAD_BYTES - 4
    else:
        assert letter.payload_bytes is None and letter.payload_sha256 is None
        if letter.index is None and value is not None:
            assert kept == value  # a whole message keeps its bytes exactly


_control = st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=40)
_text = st.text(max_size=40) | _control
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=12,
)


@st.composite
def hostile_values(draw: st.DrawFn, stream: SourceStream[Any]) -> bytes | None:
    """Any message value: bytes, JSON of any shape, deep nesting, huge strings, batches mixing all."""
    shape = draw(st.sampled_from(["bytes", "json", "deep", "huge", "batch", "reading", "none"]))
    if shape == "bytes":
        return draw(st.binary(max_size=200))
    if shape == "none":
        return draw(st.sampled_from([None, b""]))
    if shape == "json":
        return dumps(draw(_json))
    if shape == "deep":
        depth = draw(st.integers(200, 1100))
        inner = nested(depth)
        if draw(st.booleans()):  # inside a field of a reading, or of a batch element
            document = dumps(reading(stream, x=0)).replace(b'"x":0', b'"x":' + inner)
            return b'{"batch":[' + document + b"," + dumps(reading(stream)) + b"]}"
        return inner
    if shape == "huge":
        size = draw(st.sampled_from([MAX_PAYLOAD_BYTES - 10, MAX_PAYLOAD_BYTES + 1, 3 * MAX_PAYLOAD_BYTES]))
        filler = draw(st.sampled_from([b"x", b"\x01", "é".encode(), b"\xff", b"\\u0001"]))
        return b'{"device_id":"dev-1","pad":"' + filler * (size // len(filler)) + b'"}'
    if shape == "batch":
        elements = draw(
            st.lists(
                st.one_of(
                    _json.map(dumps),
                    st.builds(lambda extra: dumps(reading(stream, **extra)), st.dictionaries(_text, _json)),
                    st.integers(200, 1100).map(nested),
                ),
                min_size=0,
                max_size=6,
            )
        )
        return b'{"batch":[' + b",".join(elements) + b"]}"
    extra = draw(st.dictionaries(st.sampled_from(["ts", "seq", "district", "lat", "pm25_ugm3", "event"]), _json))
    return dumps(reading(stream, **extra))


@st.composite
def keys(draw: st.DrawFn) -> bytes | None:
    return draw(
        st.one_of(
            st.none(),
            st.binary(max_size=80),
            st.sampled_from([b"\xff" * (MAX_KEY_BYTES + 10), b"\x01" * (2 * MAX_KEY_BYTES)]),
        )
    )


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data(), st.sampled_from(STREAMS), keys())
def test_no_message_raises_and_every_dead_letter_fits(data: st.DataObject, stream: Any, key: bytes | None) -> None:
    check_message(stream, key, data.draw(hostile_values(stream)))


@pytest.mark.parametrize("stream", STREAMS, ids=lambda s: s.kind.value)
def test_a_batch_element_nested_300_deep_is_dead_lettered_with_the_message_text(stream: Any) -> None:
    # orjson reads up to 1024 levels but writes at most 254: the element cannot be encoded again
    element = orjson.dumps(reading(stream, x=0)).replace(b'"x":0', b'"x":' + nested(300))
    value = b'{"batch":[' + element + b"," + orjson.dumps(reading(stream, seq=2)) + b"]}"
    outcome = ingestor().ingest(stream, SourceMessage(stream.topic, 0, 7, b"dev-1", None), value)
    assert len(outcome.readings) == 2  # a field the contract does not name is ignored
    element = orjson.dumps({"device_id": "dev-1", "ts": NOW, "x": 0}).replace(b'"x":0', b'"x":' + nested(300))
    value = b'{"batch":[' + element + b"," + orjson.dumps(reading(stream, seq=2)) + b"]}"
    outcome = ingestor().ingest(stream, SourceMessage(stream.topic, 0, 7, b"dev-1", None), value)
    assert len(outcome.readings) == 1
    [(_, letter_value)] = outcome.dead_letters
    letter = DeadLetter.model_validate(orjson.loads(letter_value))
    assert letter.reason is DeadLetterReason.SCHEMA and letter.index == 0
    assert letter.payload == value.decode()  # the element could not be encoded: the message as it came
    check_message(stream, b"dev-1", value)


def test_three_mebibytes_of_control_characters_fit_the_dead_letter_topic() -> None:
    value = b'{"device_id":"env-1","pad":"' + b"\x01" * (3 * MAX_PAYLOAD_BYTES) + b'"}'
    outcome = ingestor().ingest(environment.KIND, SourceMessage("city.env.v1", 0, 1, b"env-1", None), value)
    [(_, letter_value)] = outcome.dead_letters
    letter = DeadLetter.model_validate(orjson.loads(letter_value))
    assert letter.reason is DeadLetterReason.TOO_LARGE and letter.payload_truncated
    assert letter.payload_bytes == len(value) and letter.payload_sha256 == hashlib.sha256(value).hexdigest()
    # escaped, each control character takes 6 bytes: 6 MiB, well under the topic's 16 MiB
    assert len(letter_value) < 7 * MAX_PAYLOAD_BYTES < DEADLETTER_MAX_MESSAGE_BYTES


def test_a_processing_error_is_a_dead_letter_with_the_original_bytes() -> None:
    ingest = ingestor()
    source = SourceMessage("city.env.v1", 2, 9, b"env-1", None)
    value = orjson.dumps(reading(environment.KIND))
    [(key, letter_value)] = ingest.failed(source, value, ZeroDivisionError("division by zero"))
    letter = DeadLetter.model_validate(orjson.loads(letter_value))
    assert key == b"env-1" and letter.reason is DeadLetterReason.PROCESSING_ERROR
    assert letter.payload == value.decode() and letter.index is None
    assert letter.errors[0].type == "processing_error"
    assert "ZeroDivisionError: division by zero" in letter.errors[0].msg
    assert ingest.stats.dead_letters["processing_error"] == 1
