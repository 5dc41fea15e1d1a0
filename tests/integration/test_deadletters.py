"""``citystream deadletters`` against the real broker: dead letters made by a real worker are listed,
summarised and replayed to a fixed worker, which processes them; the bytes and keys that go back are
the originals; what cannot be replayed is refused."""

from __future__ import annotations

import asyncio
import base64
import os
import pty
import re
import select
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from click.testing import CliRunner, Result

from schemas.readings import EnvReading
from streams.clients.kafka import DEADLETTER_TOPIC, contract_topics, ensure_topics, read_range
from streams.core.decode import MAX_MESSAGE_BYTES, SourceMessage, dead_letter, decode_message, encode_dead_letter
from streams.tools.deadletters import REPLAY_HEADER, deadletters_command
from tests.integration.helpers import (
    WorkerProcess,
    count_points,
    encode,
    now_ms,
    produce,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration

TAXI, PARKING, ENV = "city.taxi.adas.v1", "city.parking.v1", "city.env.v1"


def run(bootstrap: str, *args: str) -> Result:
    """``citystream deadletters ARGS`` in this process (no terminal on stdin, as in CI)."""
    return CliRunner().invoke(deadletters_command, list(args), env={"CITYSTREAM_KAFKA_BOOTSTRAP": bootstrap})


def listed(bootstrap: str, *args: str) -> list[dict[str, Any]]:
    result = run(bootstrap, "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def topic_records(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic, to its end offsets or until quiet."""

    async def read() -> list[ConsumerRecord[bytes, bytes]]:
        return [record async for batch in read_range(bootstrap, topic, quiet_s=1.0) for record in batch]

    return asyncio.run(read())


def keyed(records: list[ConsumerRecord[bytes, bytes]], prefix: str) -> list[ConsumerRecord[bytes, bytes]]:
    return [r for r in records if r.key is not None and r.key.decode(errors="replace").startswith(prefix)]


async def committed(bootstrap: str, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp: (await consumer.committed(tp)) or 0 for tp in partitions}
    finally:
        await consumer.stop()


def all_committed(bootstrap: str, group: str, records: list[ConsumerRecord[bytes, bytes]]) -> bool:
    """Whether the group has committed past every one of ``records``."""
    positions = {TopicPartition(r.topic, r.partition) for r in records}
    done = asyncio.run(committed(bootstrap, group, sorted(positions)))
    return all(done[TopicPartition(r.topic, r.partition)] > r.offset for r in records)


def replay_headers(record: ConsumerRecord[bytes, bytes]) -> list[bytes]:
    return [value for name, value in record.headers if name == REPLAY_HEADER]


def station(device_id: str, ts: int, pm25: float, seq: int) -> dict[str, Any]:
    return {"device_id": device_id, "ts": ts, "seq": seq, "pm25_ugm3": pm25}


def test_a_real_worker_s_dead_letters_listed_summarised_and_replayed_to_a_fixed_worker(
    own_kafka: str, influx_url: str, tmp_path: Path
) -> None:
    kafka_bootstrap = own_kafka  # a broker of its own: it writes to the source topics
    tag = f"dlt{uuid.uuid4().hex[:6]}"
    old_dev, batch_dev, binary_dev, taxi_dev = (f"{tag}-env-old", f"{tag}-env-batch", f"{tag}-pk-bin", f"{tag}-taxi")
    database = "deadletters_replay"
    asyncio.run(ensure_topics(kafka_bootstrap, contract_topics(4)))
    t = now_ms()
    two_hours_ago = t - 2 * 3_600_000
    old_messages = [encode(station(old_dev, two_hours_ago + i, 10.0 + i, seq=i)) for i in range(3)]
    stale_element = station(batch_dev, two_hours_ago, 40.0, seq=1)
    batch = {
        "batch": [
            station(batch_dev, t - 60_000, 20.0, seq=0),  # valid
            stale_element,  # index 1: stale under the first worker's 1 h limit
            station(batch_dev, t - 59_000, 2000.0, seq=2),  # index 2: out of range
        ]
    }
    not_utf8 = b"\xff\xfe\x00" + tag.encode()
    asyncio.run(
        produce(
            kafka_bootstrap,
            [
                *[(ENV, old_dev.encode(), value) for value in old_messages],
                (ENV, batch_dev.encode(), encode(batch)),
                (PARKING, binary_dev.encode(), not_utf8),
                (
                    TAXI,
                    taxi_dev.encode(),
                    encode({"device_id": taxi_dev, "ts": t, "lat": 35.87, "lon": 128.6, "speed_kmh": 400.0}),
                ),
            ],
        )
    )
    mine = f"{tag}-*"

    # a worker whose age limit is too strict (1 h) dead-letters the readings of two hours ago
    env = worker_env(kafka_bootstrap, influx_url, database, CITYSTREAM_MAX_AGE_S="3600")
    worker = WorkerProcess(tmp_path, env).start()
    try:
        wait_for(lambda: len(listed(kafka_bootstrap, "--device", mine)) == 7, 90, "7 dead letters", worker)
        wait_for(
            lambda: count_points(influx_url, database, "environment", "pm25_ugm3", f"device_id = '{batch_dev}'") == 1,
            30,
            "the batch's valid reading",
            worker,
        )
        # committed: the fixed worker will not see the originals again, only what is replayed
        sources = [r for topic in (ENV, PARKING, TAXI) for r in keyed(topic_records(kafka_bootstrap, topic), tag)]
        assert len(sources) == 6
        wait_for(lambda: all_committed(kafka_bootstrap, env["CITYSTREAM_APP_ID"], sources), 30, "commits", worker)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]

    letters = listed(kafka_bootstrap, "--device", mine)
    assert sorted(d["reason"] for d in letters) == ["not_utf8", "schema", "schema"] + ["stale_timestamp"] * 4
    elements = {d["index"]: d["reason"] for d in letters if d["device"] == batch_dev}
    assert elements == {1: "stale_timestamp", 2: "schema"}
    assert {d["device"] for d in letters} == {old_dev, batch_dev, binary_dev, taxi_dev}
    assert len(listed(kafka_bootstrap, "--device", mine, "--reason", "stale_timestamp")) == 4
    assert len(listed(kafka_bootstrap, "--device", mine, "--topic", "env")) == 5
    assert [d["device"] for d in listed(kafka_bootstrap, "--device", mine, "--topic", TAXI)] == [taxi_dev]
    assert len(listed(kafka_bootstrap, "--device", mine, "--since", "10m")) == 7
    assert listed(kafka_bootstrap, "--device", mine, "--until", "1h") == []
    assert len(listed(kafka_bootstrap, "--device", mine, "--limit", "2")) == 2

    lines = run(kafka_bootstrap, "list", "--device", mine, "--reason", "schema")
    assert lines.exit_code == 0, lines.output
    taxi_line = next(line for line in lines.stdout.splitlines() if taxi_dev in line)
    assert re.search(r"dl \d+:\d+ +schema +city\.taxi\.adas\.v1\[\d+\]@\d+  ", taxi_line), taxi_line
    assert "speed_kmh: Input should be less than or equal to 300" in taxi_line

    summary = run(kafka_bootstrap, "summary", "--device", mine, "--json")
    assert summary.exit_code == 0, summary.output
    assert orjson.loads(summary.stdout) | {"first": None, "last": None} == {
        "total": 7,
        "first": None,
        "last": None,
        "by_reason": {"stale_timestamp": 4, "schema": 2, "not_utf8": 1},
        "by_topic": {ENV: 5, PARKING: 1, TAXI: 1},
        "top_devices": {old_dev: 3, batch_dev: 2, binary_dev: 1, taxi_dev: 1},
    }
    tables = run(kafka_bootstrap, "summary", "--device", mine)
    assert tables.exit_code == 0, tables.output
    assert "7 dead letters" in tables.stdout
    assert re.search(r"stale_timestamp\s*│\s*4\s*│\s*57\.1%", tables.stdout), tables.stdout
    assert re.search(r"city\.env\.v1\s*│\s*5\s*│", tables.stdout), tables.stdout
    assert re.search(rf"{old_dev}\s*│\s*3\s*│\s*stale_timestamp 3", tables.stdout), tables.stdout

    # the fix: the default age limit (7 days); the same consumer group carries on where it stopped
    fixed = WorkerProcess(tmp_path, worker_env(kafka_bootstrap, influx_url, database)).start()
    try:
        env_before = keyed(topic_records(kafka_bootstrap, ENV), tag)
        assert len(env_before) == 4

        stale = ("--device", mine, "--reason", "stale_timestamp", "--confirm-above", "2")
        dry = run(kafka_bootstrap, "replay", *stale, "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert len([line for line in dry.stdout.splitlines() if line.startswith("would send dl")]) == 4
        assert "(batch element as a single reading)" in dry.stdout
        assert "dry run: would send 4 to city.env.v1; sent nothing" in dry.stdout

        unconfirmed = run(kafka_bootstrap, "replay", *stale)
        assert unconfirmed.exit_code == 2
        assert "add --yes" in unconfirmed.stderr and "nothing sent" in unconfirmed.stderr
        assert len(keyed(topic_records(kafka_bootstrap, ENV), tag)) == 4  # neither run sent anything

        sent = run(kafka_bootstrap, "replay", *stale, "--yes")
        assert sent.exit_code == 0, sent.output
        assert "sent 4 to city.env.v1 (acknowledged)" in sent.stdout

        env_after = keyed(topic_records(kafka_bootstrap, ENV), tag)
        replayed = [r for r in env_after if replay_headers(r)]
        assert len(env_after) == 8 and len(replayed) == 4
        back = sorted((r.key, r.value) for r in replayed if r.key == old_dev.encode())
        assert back == sorted((old_dev.encode(), value) for value in old_messages)  # byte for byte
        (element,) = [r for r in replayed if r.key == batch_dev.encode()]
        assert orjson.loads(element.value) == stale_element  # a single reading, not a batch
        dead = {f"{d['deadletter']['partition']}:{d['deadletter']['offset']}" for d in letters}
        assert {replay_headers(r)[0].decode().removeprefix(f"{DEADLETTER_TOPIC}:") for r in replayed} <= dead

        # the fixed worker stores what the strict one refused
        wait_for(
            lambda: (
                count_points(influx_url, database, "environment", "pm25_ugm3", f"device_id = '{old_dev}'") == 3
                and count_points(influx_url, database, "environment", "pm25_ugm3", f"device_id = '{batch_dev}'") == 2
            ),
            60,
            "the replayed readings stored",
            fixed,
        )

        # one dead letter by its position on the dead-letter topic: the bytes that are not UTF-8
        (binary,) = [d for d in letters if d["reason"] == "not_utf8"]
        position = f"{binary['deadletter']['partition']}:{binary['deadletter']['offset']}"
        one = run(kafka_bootstrap, "replay", "--offset", position)
        assert one.exit_code == 0, one.output
        assert "sent 1 to city.parking.v1 (acknowledged)" in one.stdout
        parking = [r for r in keyed(topic_records(kafka_bootstrap, PARKING), tag) if replay_headers(r)]
        assert [(r.key, r.value) for r in parking] == [(binary_dev.encode(), not_utf8)]
        # still not UTF-8: the worker dead-letters the replayed message, naming its new offset
        wait_for(lambda: len(listed(kafka_bootstrap, "--device", binary_dev)) == 2, 60, "a new dead letter", fixed)
        again = listed(kafka_bootstrap, "--device", binary_dev)[-1]
        assert again["source"]["offset"] == parking[0].offset
        assert base64.b64decode(again["payload_b64"]) == not_utf8
    finally:
        assert fixed.stop() == 0, fixed.log()[-3000:]


def test_replay_refuses_what_it_cannot_send_and_sends_big_binary_payloads_exactly(own_kafka: str) -> None:
    kafka_bootstrap = own_kafka  # a broker of its own: it writes to the source topics
    """Dead letters made by streams.core.decode and published directly (no worker): the unusual cases."""
    tag = f"dlr{uuid.uuid4().hex[:6]}"
    asyncio.run(ensure_topics(kafka_bootstrap, contract_topics(4)))
    now = now_ms()
    big = b"\xc3(" + bytes(range(256)) * ((MAX_MESSAGE_BYTES // 256) + 1)  # over 1 MiB, not UTF-8

    def letters_of(
        topic: str, key: str, value: bytes | None, offset: int
    ) -> list[tuple[str, bytes | None, bytes | None]]:
        decoded = decode_message(EnvReading, value, now)
        source = SourceMessage(topic, 0, offset, key.encode(), now)
        return [
            (DEADLETTER_TOPIC, key.encode(), encode_dead_letter(dead_letter(source, rejection, now)))
            for rejection in decoded.rejections
        ]

    # a version 1 dead letter kept a too-large payload whole: it goes back byte for byte
    cut_letter = letters_of(ENV, f"{tag}-cut", big, 43)  # version 1.1 keeps the first MiB only
    document = orjson.loads(cut_letter[0][2] or b"")
    assert document["reason"] == "too_large" and document["payload_truncated"] is True
    for field in ("payload_truncated", "payload_bytes", "payload_sha256"):
        del document[field]
    document["source"]["key"], document["source"]["offset"] = f"{tag}-big", 40
    document["payload_b64"] = base64.b64encode(big).decode()
    big_letter = [(DEADLETTER_TOPIC, f"{tag}-big".encode(), orjson.dumps(document))]
    asyncio.run(
        produce(
            kafka_bootstrap,
            [
                *big_letter,
                *big_letter,  # the same dead letter twice (a worker restarted before it committed)
                *letters_of("city.legacy.v0", f"{tag}-legacy", b"[1]", 41),
                *letters_of(ENV, f"{tag}-empty", None, 42),
                *cut_letter,
            ],
        )
    )
    mine = f"{tag}-*"
    assert len(listed(kafka_bootstrap, "--device", mine)) == 5

    # the real command line knows the subcommands
    completed = subprocess.run(
        ["citystream", "deadletters", "summary", "--json", "--device", mine],
        env={**os.environ, "CITYSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert orjson.loads(completed.stdout)["by_reason"] == {"too_large": 3, "not_an_object": 1, "malformed_json": 1}

    result = run(kafka_bootstrap, "replay", "--device", mine)
    assert result.exit_code == 1  # sent what it could, and says what it refused
    assert "sent 1 to city.env.v1 (acknowledged)" in result.stdout
    assert "same source message as another chosen dead letter; sent once" in result.stderr
    assert "'city.legacy.v0' is not a source topic of the contract" in result.stderr
    assert "the original message had no value" in result.stderr
    assert "will dead-letter it again" in result.stderr
    assert "keeps only the first part of the original" in result.stderr
    assert "1 sent, 0 failed, 3 refused" in result.stderr

    back = keyed(topic_records(kafka_bootstrap, ENV), tag)
    assert [(r.key, r.value) for r in back] == [(f"{tag}-big".encode(), big)]
    assert all(topic.startswith("city.legacy") is False for topic in asyncio.run(_topics(kafka_bootstrap)))


async def _topics(bootstrap: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def _replay_on_a_terminal(bootstrap: str, args: list[str], answer: bytes) -> tuple[int, str]:
    """Run ``citystream deadletters replay`` with a pseudo-terminal on stdin, answering its question."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        ["citystream", "deadletters", "replay", *args],
        env={**os.environ, "CITYSTREAM_KAFKA_BOOTSTRAP": bootstrap},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    try:
        deadline = time.monotonic() + 60
        while b"[y/N]" not in output and time.monotonic() < deadline and process.poll() is None:
            if select.select([controller], [], [], 0.5)[0]:
                output += os.read(controller, 4096)
        assert b"[y/N]" in output, output
        os.write(controller, answer + b"\n")
        code = process.wait(timeout=60)
        while select.select([controller], [], [], 0.2)[0]:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal is closed once the process has exited
                break
            if not chunk:
                break
            output += chunk
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
    return code, output.decode(errors="replace")


def test_on_a_terminal_replay_asks_first(own_kafka: str) -> None:
    kafka_bootstrap = own_kafka  # a broker of its own: it writes to the source topics
    tag = f"dlq{uuid.uuid4().hex[:6]}"
    asyncio.run(ensure_topics(kafka_bootstrap, contract_topics(4)))
    now = now_ms()
    original = encode(station(f"{tag}-env", now, 3000.0, seq=1))
    rejection = decode_message(EnvReading, original, now).rejections[0]
    source = SourceMessage(ENV, 1, 7, f"{tag}-env".encode(), now)
    letter = encode_dead_letter(dead_letter(source, rejection, now))
    asyncio.run(produce(kafka_bootstrap, [(DEADLETTER_TOPIC, f"{tag}-env".encode(), letter)]))
    args = ["--device", f"{tag}-*", "--confirm-above", "0"]

    code, output = _replay_on_a_terminal(kafka_bootstrap, args, b"n")
    assert code == 1, output
    assert "Replay 1 dead letter (1 to city.env.v1)?" in output and "nothing sent" in output
    assert keyed(topic_records(kafka_bootstrap, ENV), tag) == []

    code, output = _replay_on_a_terminal(kafka_bootstrap, args, b"y")
    assert code == 0, output
    assert "sent 1 to city.env.v1 (acknowledged)" in output
    assert [(r.key, r.value) for r in keyed(topic_records(kafka_bootstrap, ENV), tag)] == [
        (f"{tag}-env".encode(), original)
    ]
