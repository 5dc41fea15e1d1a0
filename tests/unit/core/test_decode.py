"""Validation of source messages: every dead-letter reason, batches, timestamps, and arbitrary bytes."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.deadletter import DeadLetterReason
from schemas.readings import EnvReading, ParkingReading, TaxiReading
from streams.core.decode import (
    MAX_MESSAGE_BYTES,
    MAX_PAYLOAD_BYTES,
    SourceMessage,
    TimeLimits,
    dead_letter,
    decode_message,
    encode_dead_letter,
)

NOW = 1_795_296_000_000  # 2026-11-21T21:20:00Z
LIMITS = TimeLimits(max_future_ms=300_000, max_age_ms=7 * 86_400_000)


def taxi(**overrides: object) -> dict[str, object]:
    reading: dict[str, object] = {"device_id": "taxi-0001", "ts": NOW, "lat": 35.87, "lon": 128.6, "speed_kmh": 42.5}
    reading.update(overrides)
    return reading


def env(**overrides: object) -> dict[str, object]:
    reading: dict[str, object] = {"device_id": "env-jung-03", "ts": NOW, "pm25_ugm3": 21.0}
    reading.update(overrides)
    return reading


def parking(**overrides: object) -> dict[str, object]:
    reading: dict[str, object] = {
        "device_id": "pk-1",
        "ts": NOW,
        "lot_id": "suseong-alpha-1",
        "spot_id": "A001",
        "occupied": True,
    }
    reading.update(overrides)
    return reading


def decode(model, document_or_bytes):  # type: ignore[no-untyped-def]
    value = document_or_bytes if isinstance(document_or_bytes, bytes) else orjson.dumps(document_or_bytes)
    return decode_message(model, value, NOW, LIMITS)


def reasons(decoded) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.reason.value for r in decoded.rejections]


def test_valid_single_readings_of_each_kind() -> None:
    for model, document in ((TaxiReading, taxi()), (EnvReading, env()), (ParkingReading, parking())):
        decoded = decode(model, document)
        assert decoded.rejections == []
        assert len(decoded.readings) == 1
        assert decoded.readings[0].ts == NOW


@pytest.mark.parametrize(
    ("ts", "expected_ms"),
    [
        ("2026-11-22T06:20:00+09:00", NOW),
        ("2026-11-21T21:20:00Z", NOW),
        ("2026-11-21T21:20:00.250z", NOW + 250),
        ("2026-11-21 21:19:59.999999-00:00", NOW - 1),
        (NOW - 5, NOW - 5),
    ],
)
def test_event_time_forms(ts: object, expected_ms: int) -> None:
    decoded = decode(EnvReading, env(ts=ts))
    assert [r.ts for r in decoded.readings] == [expected_ms]


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-21T21:20:00",
        "2026-11-21",
        "2026-02-30T00:00:00Z",
        "2026-11-21T21:20:00+25:00",
        "٢٠٢٦-11-21T21:20:00Z",  # Arabic-Indic digits: RFC 3339 digits are ASCII
        "yesterday",
        1.7953e12,
        True,
        None,
        [NOW],
    ],
)
def test_bad_event_time_is_a_schema_error(ts: object) -> None:
    decoded = decode(EnvReading, env(ts=ts))
    assert reasons(decoded) == ["schema"]
    assert decoded.rejections[0].errors[0].loc == "ts"


def test_future_and_stale_limits_are_configurable() -> None:
    ahead = decode(EnvReading, env(ts=NOW + 300_001))
    assert reasons(ahead) == ["future_timestamp"]
    assert decode(EnvReading, env(ts=NOW + 300_000)).rejections == []
    behind = decode(EnvReading, env(ts=NOW - 7 * 86_400_000 - 1))
    assert reasons(behind) == ["stale_timestamp"]
    wide = decode_message(
        EnvReading, orjson.dumps(env(ts=NOW + 3_600_000)), NOW, TimeLimits(max_future_ms=7_200_000, max_age_ms=1000)
    )
    assert wide.rejections == [] and len(wide.readings) == 1


@pytest.mark.parametrize(
    ("model", "document", "loc", "error_type"),
    [
        (TaxiReading, taxi(speed_kmh="42"), "speed_kmh", "float_type"),
        (TaxiReading, taxi(speed_kmh=301), "speed_kmh", "less_than_equal"),
        (TaxiReading, taxi(lat=-90.5), "lat", "greater_than_equal"),
        (TaxiReading, taxi(heading_deg=360), "heading_deg", "less_than"),
        (TaxiReading, taxi(event="CRASH"), "event", "literal_error"),
        (TaxiReading, taxi(ttc_s=10.5), "ttc_s", "less_than_equal"),
        (TaxiReading, taxi(device_id="taxi 1"), "device_id", "string_pattern_mismatch"),
        (TaxiReading, taxi(device_id="x" * 65), "device_id", "string_too_long"),
        (TaxiReading, taxi(device_id=""), "device_id", "string_too_short"),
        (TaxiReading, taxi(seq=-1), "seq", "greater_than_equal"),
        (TaxiReading, taxi(seq=True), "seq", "int_type"),
        (ParkingReading, parking(occupied="yes"), "occupied", "bool_type"),
        (ParkingReading, parking(occupied=1), "occupied", "bool_type"),
        (ParkingReading, parking(kind="boot"), "kind", "literal_error"),
        (ParkingReading, parking(spot_id="s" * 33), "spot_id", "string_too_long"),
        (ParkingReading, parking(battery_v=5.1), "battery_v", "less_than_equal"),
        (ParkingReading, parking(rssi_dbm=1), "rssi_dbm", "less_than_equal"),
        (ParkingReading, parking(snr_db=-31), "snr_db", "greater_than_equal"),
        (EnvReading, env(pm25_ugm3=1000.5), "pm25_ugm3", "less_than_equal"),
        (EnvReading, env(pm10_ugm3=-1), "pm10_ugm3", "greater_than_equal"),
        (EnvReading, env(o3_ppm=1.01), "o3_ppm", "less_than_equal"),
        (EnvReading, env(noise_dba=161), "noise_dba", "less_than_equal"),
        (EnvReading, env(district="d" * 33), "district", "string_too_long"),
    ],
)
def test_schema_errors_name_the_field(model, document, loc: str, error_type: str) -> None:  # type: ignore[no-untyped-def]
    decoded = decode(model, document)
    assert reasons(decoded) == ["schema"]
    assert (decoded.rejections[0].errors[0].loc, decoded.rejections[0].errors[0].type) == (loc, error_type)
    assert orjson.loads(decoded.rejections[0].payload.text or "") == document


def test_missing_required_fields() -> None:
    decoded = decode(TaxiReading, {"device_id": "taxi-1", "ts": NOW})
    assert reasons(decoded) == ["schema"]
    assert {e.loc for e in decoded.rejections[0].errors} == {"lat", "lon", "speed_kmh"}
    assert {e.type for e in decoded.rejections[0].errors} == {"missing"}


def test_environment_reading_needs_a_measurement() -> None:
    decoded = decode(EnvReading, {"device_id": "env-1", "ts": NOW, "district": "jung", "lat": 35.8})
    assert reasons(decoded) == ["schema"]
    assert "at least one" in decoded.rejections[0].errors[0].msg


def test_unknown_fields_are_ignored() -> None:
    decoded = decode(TaxiReading, taxi(firmware="8.2", extra={"nested": [1, 2]}))
    assert decoded.rejections == [] and len(decoded.readings) == 1


def test_message_level_reasons() -> None:
    assert reasons(decode(EnvReading, b"\xff\xfe{}")) == ["not_utf8"]
    assert reasons(decode(EnvReading, b'{"device_id": ')) == ["malformed_json"]
    assert reasons(decode(EnvReading, b"NaN")) == ["malformed_json"]
    assert reasons(decode_message(EnvReading, None, NOW, LIMITS)) == ["malformed_json"]
    assert reasons(decode_message(EnvReading, b"", NOW, LIMITS)) == ["malformed_json"]
    for not_object in (b"[1, 2]", b"42", b'"text"', b"null", b"true"):
        assert reasons(decode(EnvReading, not_object)) == ["not_an_object"], not_object


def test_not_utf8_keeps_the_original_bytes() -> None:
    value = b'{"device_id": "env-\xc3\x28"}'
    rejection = decode(EnvReading, value).rejections[0]
    assert rejection.reason is DeadLetterReason.NOT_UTF8
    assert rejection.payload.text is None
    assert base64.b64decode(rejection.payload.b64 or "") == value


def test_too_large() -> None:
    value = orjson.dumps(env(note="x" * MAX_MESSAGE_BYTES))
    rejection = decode(EnvReading, value).rejections[0]
    assert rejection.reason is DeadLetterReason.TOO_LARGE
    payload = rejection.payload
    assert payload.text is not None and payload.text.encode() == value[:MAX_PAYLOAD_BYTES]
    assert payload.truncated and payload.original_bytes == len(value)
    assert payload.sha256 == hashlib.sha256(value).hexdigest()
    exactly = b'{"device_id":"e","ts":%d,"pm25_ugm3":1,"p":"' % NOW
    exactly += b"y" * (MAX_MESSAGE_BYTES - len(exactly) - 2) + b'"}'
    assert len(exactly) == MAX_MESSAGE_BYTES
    assert decode(EnvReading, exactly).rejections == []


@pytest.mark.parametrize("batch", [[], 7, "x", {"a": 1}, None, [env()] * 1001])
def test_bad_batch(batch: object) -> None:
    decoded = decode(EnvReading, {"batch": batch})
    assert reasons(decoded) == ["bad_batch"]
    assert decoded.rejections[0].index is None
    assert decoded.readings == []


def test_batch_elements_are_judged_one_by_one() -> None:
    elements = [env(seq=1), "oops", env(pm25_ugm3=5000), env(ts=NOW + 86_400_000), env(seq=2), env(ts=1)]
    decoded = decode(EnvReading, {"batch": elements})
    assert [r.seq for r in decoded.readings] == [1, 2]  # type: ignore[union-attr]
    assert [(r.index, r.reason.value) for r in decoded.rejections] == [
        (1, "not_an_object"),
        (2, "schema"),
        (3, "future_timestamp"),
        (5, "stale_timestamp"),
    ]
    assert orjson.loads(decoded.rejections[1].payload.text or "") == elements[2]
    assert decoded.rejections[0].payload.text == '"oops"'


def test_full_batch_of_1000_is_valid() -> None:
    decoded = decode(EnvReading, {"batch": [env(seq=i) for i in range(1000)]})
    assert len(decoded.readings) == 1000 and decoded.rejections == []


def test_dead_letter_document() -> None:
    value = orjson.dumps(env(pm25_ugm3=1200))
    rejection = decode(EnvReading, value).rejections[0]
    source = SourceMessage("city.env.v1", 3, 1234, b"env-jung-03", 1_795_000_000_000)
    document = orjson.loads(encode_dead_letter(dead_letter(source, rejection, NOW + 1120)))
    assert document == {
        "source": {
            "topic": "city.env.v1",
            "partition": 3,
            "offset": 1234,
            "key": "env-jung-03",
            "timestamp_ms": 1_795_000_000_000,
        },
        "index": None,
        "reason": "schema",
        "errors": [
            {"loc": "pm25_ugm3", "msg": "Input should be less than or equal to 1000", "type": "less_than_equal"}
        ],
        "payload": value.decode(),
        "payload_b64": None,
        "dead_lettered_at": "2026-11-21T21:20:01.120Z",
        "payload_truncated": False,
        "payload_bytes": None,
        "payload_sha256": None,
    }


def test_dead_letter_of_a_non_utf8_key() -> None:
    rejection = decode(EnvReading, b"[]").rejections[0]
    letter = dead_letter(SourceMessage("city.env.v1", 0, 1, b"\xffkey", None), rejection, NOW)
    assert letter.source.key == "\\xffkey"
    assert letter.source.timestamp_ms is None


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)
_reading_like = st.fixed_dictionaries(
    {
        "device_id": st.one_of(st.just("taxi-1"), st.text(max_size=70)),
        "ts": st.one_of(st.integers(NOW - 10**10, NOW + 10**10), st.text(max_size=40), st.just("2026-11-21T21:00:00Z")),
        "lat": st.one_of(st.floats(-100, 100), st.text(max_size=4)),
        "lon": st.floats(-200, 200),
        "speed_kmh": st.floats(-10, 400),
        "pm25_ugm3": st.floats(-1, 1500),
        "lot_id": st.text(max_size=5),
        "spot_id": st.just("A1"),
        "occupied": st.booleans(),
    },
    optional={"event": st.sampled_from(["NONE", "FCW", "X"]), "seq": st.integers(-3, 10**20)},
)


def _accounted(model, value: bytes) -> None:  # type: ignore[no-untyped-def]
    decoded = decode_message(model, value, NOW, LIMITS)
    assert decoded.readings or decoded.rejections
    for rejection in decoded.rejections:
        assert isinstance(rejection.reason, DeadLetterReason)
        assert rejection.errors
        assert (rejection.payload.text is None) != (rejection.payload.b64 is None) or value in (b"",)
        # every rejection becomes a dead letter that serialises
        encode_dead_letter(dead_letter(SourceMessage("t", 0, 0, None, None), rejection, NOW))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([TaxiReading, ParkingReading, EnvReading]))
def test_any_bytes_give_readings_or_dead_letters(value: bytes, model) -> None:  # type: ignore[no-untyped-def]
    _accounted(model, value)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        _json_values,
        _reading_like,
        st.fixed_dictionaries({"batch": st.lists(_reading_like | _json_values, max_size=5)}),
    ),
    st.sampled_from([TaxiReading, ParkingReading, EnvReading]),
)
def test_any_json_gives_readings_or_dead_letters(document: object, model) -> None:  # type: ignore[no-untyped-def]
    try:
        value = orjson.dumps(document)
    except (orjson.JSONEncodeError, TypeError):
        return
    _accounted(model, value)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_reading_like | _json_values, min_size=1, max_size=6),
    st.sampled_from([TaxiReading, ParkingReading, EnvReading]),
)
def test_a_batch_is_judged_as_its_elements_one_by_one(elements: list[object], model) -> None:  # type: ignore[no-untyped-def]
    """Whether an envelope is validated in one call or element by element, its readings and
    rejections are those of its elements sent alone (each rejection with the element's index)."""
    try:
        value = orjson.dumps({"batch": elements})
    except (orjson.JSONEncodeError, TypeError):
        return
    decoded = decode_message(model, value, NOW, LIMITS)
    readings: list[object] = []
    rejections: list[tuple[int, str]] = []
    for index, element in enumerate(elements):
        if not isinstance(element, dict):
            rejections.append((index, "not_an_object"))
            continue
        alone = decode_message(model, orjson.dumps(element), NOW, LIMITS)
        readings += alone.readings
        rejections += [(index, rejection.reason.value) for rejection in alone.rejections]
    assert decoded.readings == readings
    assert [(r.index, r.reason.value) for r in decoded.rejections] == rejections


def test_an_envelope_of_valid_readings_keeps_the_time_limits() -> None:
    """The one-call path (every element valid) still judges each reading's time."""
    decoded = decode(EnvReading, {"batch": [env(seq=1), env(seq=2, ts=NOW + 86_400_000), env(seq=3, ts=1)]})
    assert [r.seq for r in decoded.readings] == [1]  # type: ignore[union-attr]
    assert [(r.index, r.reason.value) for r in decoded.rejections] == [(1, "future_timestamp"), (2, "stale_timestamp")]
    assert orjson.loads(decoded.rejections[0].payload.text or "") == env(seq=2, ts=NOW + 86_400_000)
