"""Dead letters: parsing them as the worker makes them, filtering, summarising and choosing what to replay."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.deadletter import DeadLetterReason
from schemas.readings import EnvReading, TaxiReading
from streams.core.decode import (
    MAX_MESSAGE_BYTES,
    MAX_PAYLOAD_BYTES,
    ReadingModel,
    SourceMessage,
    dead_letter,
    decode_message,
    encode_dead_letter,
)
from streams.tools.deadletters import (
    REPLAY_HEADER,
    DeadLettersError,
    Filters,
    OffsetSpec,
    Refusal,
    Replay,
    StoredDeadLetter,
    Unreadable,
    deadletters_command,
    letter_json,
    letter_line,
    needs_confirmation,
    parse_dead_letter,
    parse_moment,
    parse_offset_spec,
    pick_offsets,
    plan_replay,
    replay_of,
    replay_warnings,
    resolve_topic,
    select,
    summarise,
    summary_json,
)

NOW = 1_795_296_000_000  # 2026-11-21T21:20:00Z
ENV, TAXI, PARKING = "city.env.v1", "city.taxi.adas.v1", "city.parking.v1"


def letters_of(
    value: bytes | None,
    *,
    topic: str = ENV,
    key: bytes | None = b"env-jung-03",
    source_offset: int = 100,
    model: ReadingModel = EnvReading,
    at_ms: int = NOW,
    partition: int = 0,
    first_offset: int = 0,
) -> list[StoredDeadLetter]:
    """The dead letters the worker's own code makes of one message, read back as the command reads them."""
    decoded = decode_message(model, value, NOW)
    source = SourceMessage(topic, 3, source_offset, key, NOW - 1000)
    stored = []
    for i, rejection in enumerate(decoded.rejections):
        record = encode_dead_letter(dead_letter(source, rejection, at_ms))
        parsed = parse_dead_letter(partition, first_offset + i, at_ms + 5, record)
        assert isinstance(parsed, StoredDeadLetter)
        stored.append(parsed)
    return stored


def one(value: bytes | None, **kwargs: object) -> StoredDeadLetter:
    found = letters_of(value, **kwargs)  # type: ignore[arg-type]
    assert len(found) == 1
    return found[0]


def env(device_id: str = "env-jung-03", **fields: object) -> dict[str, object]:
    return {"device_id": device_id, "ts": NOW, "pm25_ugm3": 21.0, **fields}


def replayed(stored: StoredDeadLetter) -> Replay:
    outcome = replay_of(stored)
    assert isinstance(outcome, Replay), outcome
    return outcome


# --- parsing -----------------------------------------------------------------------------------------


def test_a_schema_dead_letter_is_parsed_with_its_device_from_the_payload() -> None:
    stored = one(orjson.dumps(env("env-suseong-9", pm25_ugm3=5000.0)), key=b"other-key")
    assert stored.letter.reason is DeadLetterReason.SCHEMA
    assert stored.device == "env-suseong-9"
    assert stored.at_ms == NOW
    assert stored.timestamp_ms == NOW + 5
    assert stored.coordinates == "0:0"


def test_a_payload_without_device_falls_back_to_the_key() -> None:
    assert one(b"\xff\xfe not utf-8", key=b"env-bad-1").device == "env-bad-1"
    assert one(b"[1, 2]", key=b"env-arr").device == "env-arr"
    assert one(b"[1, 2]", key=None).device is None


def test_records_that_are_not_dead_letters_are_reported_not_dropped() -> None:
    garbage = parse_dead_letter(2, 7, None, b'{"reason": "schema"}')
    assert isinstance(garbage, Unreadable)
    assert (garbage.partition, garbage.offset) == (2, 7)
    assert "source" in garbage.problem
    assert isinstance(parse_dead_letter(2, 8, None, None), Unreadable)
    assert isinstance(parse_dead_letter(2, 9, None, b"\x00\x01"), Unreadable)


def test_an_unparseable_dead_lettered_at_falls_back_to_the_record_time() -> None:
    document = orjson.loads(encode_dead_letter(letters_of(b"[1]")[0].letter))
    document["dead_lettered_at"] = "yesterday"
    parsed = parse_dead_letter(0, 1, 1234, orjson.dumps(document))
    assert isinstance(parsed, StoredDeadLetter)
    assert parsed.at_ms == 1234


# --- times and selection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - 90_000),
        ("15m", NOW - 900_000),
        ("1h", NOW - 3_600_000),
        ("1h30m", NOW - 5_400_000),
        ("2d", NOW - 2 * 86_400_000),
        ("1w", NOW - 7 * 86_400_000),
        ("0.5h", NOW - 1_800_000),
        ("2026-11-21T21:20:00Z", NOW),
        ("2026-11-22T06:20:00.000+09:00", NOW),
    ],
)
def test_since_and_until_take_durations_and_rfc3339(text: str, expected: int) -> None:
    assert parse_moment(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "10", "1x", "yesterday", "2026-11-21T21:20:00", "h1"])
def test_a_bad_time_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_moment(text, NOW)


def test_filters_by_reason_topic_device_and_time() -> None:
    schema = one(orjson.dumps(env("env-jung-03", pm25_ugm3=5000.0)), at_ms=NOW - 10_000)
    stale = one(orjson.dumps(env("env-dong-01", ts=NOW - 8 * 86_400_000)), at_ms=NOW - 5_000, first_offset=1)
    taxi = one(
        orjson.dumps({"device_id": "taxi-0001", "ts": NOW, "lat": 35.8, "lon": 128.6, "speed_kmh": 400}),
        topic=TAXI,
        key=b"taxi-0001",
        model=TaxiReading,
        at_ms=NOW,
        first_offset=2,
    )
    binary = one(b"\xff", key=b"env-bin-7", at_ms=NOW, first_offset=3)
    every = [schema, stale, taxi, binary]

    def chosen(filters: Filters) -> list[StoredDeadLetter]:
        return select(every, filters)

    assert chosen(Filters()) == every
    assert chosen(Filters(reasons=("stale_timestamp",))) == [stale]
    assert chosen(Filters(reasons=("schema", "not_utf8"))) == [schema, taxi, binary]
    assert chosen(Filters(topics=(resolve_topic("taxi"),))) == [taxi]
    assert chosen(Filters(topics=(resolve_topic("env"),))) == [schema, stale, binary]
    assert chosen(Filters(devices=("env-*",))) == [schema, stale, binary]
    assert chosen(Filters(devices=("env-bin-7",))) == [binary]  # from the key
    assert chosen(Filters(devices=("env-jung-0",))) == []  # an exact id is not a prefix
    assert chosen(Filters(since_ms=NOW - 5_000)) == [stale, taxi, binary]
    assert chosen(Filters(until_ms=NOW - 5_000)) == [schema, stale]
    assert chosen(Filters(reasons=("schema",), devices=("taxi-*",), since_ms=NOW - 1)) == [taxi]
    assert Filters().empty and not Filters(since_ms=1).empty


def test_since_after_until_is_an_error() -> None:
    with pytest.raises(DeadLettersError, match="--since"):
        Filters(since_ms=NOW, until_ms=NOW - 1)


def test_limit_keeps_the_most_recent_oldest_first() -> None:
    letters = [one(b"[1]", at_ms=NOW + i, first_offset=i) for i in (3, 1, 4, 0, 2)]
    assert [s.at_ms - NOW for s in select(letters, Filters())] == [0, 1, 2, 3, 4]
    assert [s.at_ms - NOW for s in select(letters, Filters(), limit=2)] == [3, 4]


def test_offsets_name_dead_letters_by_partition_and_offset() -> None:
    a = one(b"[1]", partition=0, first_offset=5)
    b = one(b"[2]", partition=1, first_offset=5, source_offset=101)
    c = one(b"[3]", partition=1, first_offset=6, source_offset=102)
    assert parse_offset_spec("1:5") == OffsetSpec(1, 5)
    assert parse_offset_spec(" 6 ") == OffsetSpec(None, 6)
    assert str(OffsetSpec(1, 5)) == "1:5"
    for bad in ("", "x", "1:", "-3", "1:2:3"):
        with pytest.raises(ValueError, match="PARTITION:OFFSET"):
            parse_offset_spec(bad)
    assert pick_offsets([a, b, c], [OffsetSpec(1, 5)]) == [b]
    assert pick_offsets([a, b, c], [OffsetSpec(None, 6), OffsetSpec(1, 6)]) == [c]
    with pytest.raises(DeadLettersError, match=r"several partitions \(0:5, 1:5\)"):
        pick_offsets([a, b, c], [OffsetSpec(None, 5)])
    with pytest.raises(DeadLettersError, match="no dead letter at --offset 2:5"):
        pick_offsets([a, b, c], [OffsetSpec(2, 5)])


# --- summary and output ---------------------------------------------------------------------------------


def test_summary_counts_by_reason_topic_and_device() -> None:
    batch = {"batch": [env("env-a"), env("env-a", pm25_ugm3=-1.0), 7, env("env-b", ts=NOW - 9 * 86_400_000)]}
    letters = [
        *letters_of(orjson.dumps(batch), key=b"env-a"),
        one(b"\xff", key=b"env-c"),
        one(b"{", key=None),
        one(orjson.dumps({"batch": []}), topic=PARKING, key=b"pk-1"),
    ]
    summary = summarise(letters)
    assert summary.total == 6
    assert summary.by_reason == {
        "schema": 1,
        "not_an_object": 1,
        "stale_timestamp": 1,
        "not_utf8": 1,
        "malformed_json": 1,
        "bad_batch": 1,
    }
    assert summary.by_topic == {ENV: 5, PARKING: 1}
    # the non-object element has no device_id: the key names it
    assert summary.by_device == {"env-a": 2, "env-b": 1, "env-c": 1, "(unknown)": 1, "pk-1": 1}
    assert summary.reasons_by_device["env-a"] == {"schema": 1, "not_an_object": 1}
    as_json = summary_json(summary, top=2)
    assert as_json["total"] == 6
    assert list(as_json["top_devices"]) == ["env-a", "env-b"]
    assert as_json["first"] == "2026-11-21T21:20:00.000Z"


def test_a_line_and_a_json_object_per_dead_letter() -> None:
    batch = {"batch": [env("env-a"), env("env-a", pm25_ugm3=-1.0)]}
    stored = letters_of(orjson.dumps(batch), key=b"env-a", partition=4, first_offset=17)[0]
    line = letter_line(stored)
    assert line.startswith("2026-11-21T21:20:00.000Z  dl 4:17")
    assert "schema" in line and "city.env.v1[3]@100#1" in line and "env-a" in line
    assert "pm25_ugm3: Input should be greater than or equal to 0" in line
    document = letter_json(stored)
    assert document["deadletter"] == {
        "topic": "city.deadletter.v1",
        "partition": 4,
        "offset": 17,
        "timestamp_ms": NOW + 5,
    }
    assert document["device"] == "env-a"
    assert document["index"] == 1 and document["reason"] == "schema"
    assert document["source"]["topic"] == ENV


# --- replay ----------------------------------------------------------------------------------------------


def test_a_single_message_goes_back_byte_for_byte_with_its_key() -> None:
    original = b'{"device_id": "env-jung-03",  "ts": 1, "pm25_ugm3": 21.0}'  # spacing kept as sent
    replay = replayed(one(original, key=b"env-jung-03"))
    assert (replay.topic, replay.key, replay.value) == (ENV, b"env-jung-03", original)
    assert not replay.single_from_batch
    assert replay.headers == [(REPLAY_HEADER, b"city.deadletter.v1:0:0")]


def test_a_batch_element_goes_back_as_a_single_reading() -> None:
    bad = env("env-a", pm25_ugm3=-1.0, seq=3)
    stored = letters_of(orjson.dumps({"batch": [env("env-a"), bad]}), key=b"env-a")
    replay = replayed(stored[0])
    assert replay.single_from_batch
    assert orjson.loads(replay.value) == bad  # the element alone, not a batch
    assert replay.key == b"env-a"


def test_base64_payloads_come_back_exactly() -> None:
    not_utf8 = b"\xff\xfe\x00" + bytes(range(256))
    replay = replayed(one(not_utf8))
    assert replay.value == not_utf8


@pytest.mark.parametrize("size", [MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES + 1000])
def test_a_payload_cut_to_its_first_mebibyte_is_not_replayed(size: int) -> None:
    too_large = (b"\xc3" + b"x" * size)[:size]  # over the limit and not UTF-8: its first MiB kept as base64
    stored = one(too_large)
    letter = stored.letter
    assert letter.reason is DeadLetterReason.TOO_LARGE and letter.payload_b64 is not None
    assert base64.b64decode(letter.payload_b64) == too_large[:MAX_PAYLOAD_BYTES]
    assert letter.payload_truncated and letter.payload_bytes == size
    assert letter.payload_sha256 == hashlib.sha256(too_large).hexdigest()
    refusal = replay_of(stored)
    assert isinstance(refusal, Refusal)
    assert f"{size:,} bytes" in refusal.why and letter.payload_sha256 in refusal.why


def test_a_utf8_too_large_payload_keeps_whole_characters() -> None:
    too_large = orjson.dumps(env("env-big", padding="é" * MAX_MESSAGE_BYTES))
    stored = one(too_large)
    letter = stored.letter
    assert letter.reason is DeadLetterReason.TOO_LARGE and letter.payload is not None
    kept = letter.payload.encode()
    assert too_large.startswith(kept) and MAX_PAYLOAD_BYTES - 4 < len(kept) <= MAX_PAYLOAD_BYTES
    assert letter.payload_truncated and letter.payload_bytes == len(too_large)
    assert isinstance(replay_of(stored), Refusal)


def test_what_cannot_be_replayed_is_refused_with_the_reason() -> None:
    unknown_topic = one(b"[1]", topic="city.legacy.v0")
    refusal = replay_of(unknown_topic)
    assert isinstance(refusal, Refusal)
    assert "'city.legacy.v0' is not a source topic of the contract" in refusal.why
    empty = one(None)
    refusal = replay_of(empty)
    assert isinstance(refusal, Refusal) and "no value" in refusal.why
    document = orjson.loads(encode_dead_letter(one(b"\xff").letter))
    document["payload_b64"] = "not base64!"
    broken = parse_dead_letter(0, 0, None, orjson.dumps(document))
    assert isinstance(broken, StoredDeadLetter)
    refusal = replay_of(broken)
    assert isinstance(refusal, Refusal) and "base64" in refusal.why


def test_a_null_key_stays_null() -> None:
    assert replayed(one(b"[1]", key=None)).key is None


def test_a_key_that_was_not_utf8_is_sent_as_kept_with_a_warning() -> None:
    stored = one(b"[1]", key=b"env-\xff-1")
    assert stored.letter.source.key == "env-\\xff-1"
    plan = plan_replay([stored])
    assert plan.replays[0].key == b"env-\\xff-1"
    assert "original key was not UTF-8" in replay_warnings(plan)[0]
    assert replay_warnings(plan_replay([one(b"[1]", key="env-ü".encode())])) == []


def test_a_plan_sends_each_source_message_once_in_source_order() -> None:
    first = one(b"[1]", source_offset=10, first_offset=0, at_ms=NOW + 2)
    second = one(b"[2]", source_offset=11, first_offset=1, at_ms=NOW + 1)
    again = one(b"[1]", source_offset=10, first_offset=2, at_ms=NOW + 3)  # a worker restarted before committing
    elsewhere = one(b"[3]", topic="city.legacy.v0", first_offset=3)
    plan = plan_replay([again, second, elsewhere, first])
    assert [r.value for r in plan.replays] == [b"[1]", b"[2]"]
    assert plan.replays[0].origin == first  # the first dead letter of the two is the one named
    assert plan.duplicates == [again]
    assert [r.origin for r in plan.refused] == [elsewhere]
    assert plan.by_topic() == {ENV: 2}


def test_a_batch_s_elements_keep_their_order() -> None:
    batch = {"batch": [env("env-a", pm25_ugm3=-float(i) - 1) for i in range(4)]}
    letters = letters_of(orjson.dumps(batch), key=b"env-a")
    plan = plan_replay(reversed(letters))
    assert [orjson.loads(r.value)["pm25_ugm3"] for r in plan.replays] == [-1.0, -2.0, -3.0, -4.0]


@pytest.mark.parametrize(
    ("count", "yes", "dry_run", "asked"),
    [(10, False, False, False), (11, False, False, True), (11, True, False, False), (500, False, True, False)],
)
def test_confirmation_above_the_threshold(count: int, yes: bool, dry_run: bool, asked: bool) -> None:
    assert needs_confirmation(count, threshold=10, yes=yes, dry_run=dry_run) is asked


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.one_of(st.none(), st.binary(max_size=20)))
def test_any_rejected_message_replays_to_its_exact_bytes(value: bytes, key: bytes | None) -> None:
    key = None if key is None else key.decode("utf-8", errors="replace").encode("utf-8")  # keys are UTF-8
    for stored in letters_of(value, key=key):
        if stored.letter.index is None:
            replay = replayed(stored)
            assert replay.value == value
            assert replay.key == key


def test_base64_is_the_original_not_the_text() -> None:
    stored = one(b"\x80abc")
    assert stored.letter.payload is None
    assert base64.b64decode(stored.letter.payload_b64 or "") == replayed(stored).value == b"\x80abc"


# --- the command line, before any broker is asked -------------------------------------------------------------


def test_replay_without_a_selection_is_refused_before_kafka_is_asked() -> None:
    result = CliRunner().invoke(deadletters_command, ["replay", "--dry-run"], env={"CITYSTREAM_KAFKA_BOOTSTRAP": "x"})
    assert result.exit_code == 2
    assert "choose what to replay" in result.output


def test_bad_options_are_usage_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(deadletters_command, ["list", "--since", "soon"])
    assert result.exit_code == 2 and "neither a duration" in result.output
    result = runner.invoke(deadletters_command, ["replay", "--offset", "a:b"])
    assert result.exit_code == 2 and "PARTITION:OFFSET" in result.output
    result = runner.invoke(deadletters_command, ["list", "--since", "1h", "--until", "2h"])
    assert result.exit_code == 2 and "lies after --until" in result.output
    result = runner.invoke(deadletters_command, ["list", "--reason", "bogus"])
    assert result.exit_code == 2


def test_dead_letters_of_a_gateway_bridge_are_listed_and_refused_for_replay() -> None:
    """Contract 1.1: an uplink a bridge could not map has ``unmappable``, ``mqtt:<topic>`` and no Kafka
    coordinates; readers take it, replay refuses it, and two of them are two, not a repeat."""

    def bridged(offset: int, payload: str) -> StoredDeadLetter:
        document = {
            "source": {"topic": "mqtt:application/1/device/70b3d57ed005a1b2/event/up", "partition": None,
                       "offset": None, "key": None, "timestamp_ms": NOW},
            "index": None, "reason": "unmappable", "errors": [{"loc": "", "msg": "no decoded payload", "type": "x"}],
            "payload": payload, "payload_b64": None, "dead_lettered_at": "2026-11-21T21:20:00.000Z",
        }  # fmt: skip
        parsed = parse_dead_letter(0, offset, NOW, orjson.dumps(document))
        assert isinstance(parsed, StoredDeadLetter)
        return parsed

    first, second = bridged(0, '{"fCnt": 1}'), bridged(1, '{"fCnt": 2}')
    assert "mqtt:application/1/device/70b3d57ed005a1b2/event/up" in letter_line(first)
    assert "None" not in letter_line(first)
    plan = plan_replay([second, first])
    assert plan.duplicates == [] and plan.replays == []
    assert [r.origin for r in plan.refused] == [first, second]
    assert "not a source topic" in plan.refused[0].why
