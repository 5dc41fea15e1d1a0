"""The state topics on Apache Kafka (Tansu does not compact): a partition's snapshot history shrinks to
its newest snapshot once its segments close, and a worker restores from what compaction left.

The worker creates its state topics with ``cleanup.policy=compact`` and segments of at most an hour
(``streams.clients.kafka.STATE_TOPIC_CONFIG``); here the topic's ``segment.ms`` is lowered to half a
second and the broker's cleaner looks every half second, so that a few seconds of checkpoints span
many segments and compaction comes within the test.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.readings import SOURCE_TOPICS, SourceKind
from streams.clients.kafka import STATE_TOPIC_CONFIG, state_topic
from streams.runtime.checkpoint import decode_snapshot
from streams.tools.localstack import ManagedService, apache_kafka, free_port
from tests.integration.helpers import (
    SOURCE_PARTITIONS,
    WorkerProcess,
    count_points,
    create_topics,
    encode,
    now_ms,
    produce,
    unique,
    wait_for,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

ENV = SOURCE_TOPICS[SourceKind.ENVIRONMENT]
ASSIGNED = "Setting newly assigned partitions"  # aiokafka's log line


@pytest.fixture
def compacting_kafka(tmp_path: Path) -> Iterator[str]:
    """An Apache Kafka node whose log cleaner looks for work every half second (default 15 s)."""
    broker: ManagedService = apache_kafka(free_port(), tmp_path / "kafka", settings={"log.cleaner.backoff.ms": "500"})
    broker.start(timeout=90)
    try:
        yield broker.address
    finally:
        broker.stop()


async def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        (resource,) = response.resources
        return {entry[0]: entry[1] for entry in resource[4]}
    finally:
        await admin.close()


async def alter_config(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, config)])
    finally:
        await admin.close()


async def history(bootstrap: str, topic: str) -> dict[int, list[Any]]:
    """Every message still in each partition of ``topic``, from its first offset to its end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=1 << 26
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(SOURCE_PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: dict[int, list[Any]] = {tp.partition: [] for tp in partitions}
        waiting = {tp for tp in partitions if ends[tp] > 0}
        while waiting:
            batches = await consumer.getmany(*waiting, timeout_ms=5000)
            assert batches, f"no message of {sorted(tp.partition for tp in waiting)} in 5 s"
            for tp, records in batches.items():
                found[tp.partition] += records
                if records[-1].offset >= ends[tp] - 1:
                    waiting.discard(tp)
        return found
    finally:
        await consumer.stop()


def reading(device: str, ts: int, seq: int) -> tuple[str, bytes, bytes]:
    body = {"device_id": device, "ts": ts, "district": "jung", "pm25_ugm3": float(seq % 90)}
    return ENV, device.encode(), encode(body)


async def test_state_topics_are_compacted_and_a_new_worker_restores_from_what_is_left(
    compacting_kafka: str, influx_url: str, tmp_path: Path
) -> None:
    kafka = compacting_kafka
    database = unique("state_topics")
    env = worker_env(kafka, influx_url, database, CITYSTREAM_CHECKPOINT_INTERVAL_S="0.2")
    topic = state_topic(env["CITYSTREAM_APP_ID"], ENV)
    devices = [f"cmp-{i:03d}" for i in range(40)]
    start = now_ms() - 30 * 60_000
    await create_topics(kafka)
    worker = WorkerProcess(tmp_path / "one", env).start()
    sent = 0
    try:
        wait_for(lambda: ASSIGNED in worker.log(), 90, "the worker's partitions", worker)
        # as the worker created it
        config = await topic_config(kafka, topic)
        assert {name: config[name] for name in STATE_TOPIC_CONFIG} == STATE_TOPIC_CONFIG
        # AlterConfigs replaces a topic's settings: the worker's are given again
        await alter_config(
            kafka, topic, {**STATE_TOPIC_CONFIG, "segment.ms": "500", "min.cleanable.dirty.ratio": "0.01"}
        )
        # ten seconds of readings: every partition changes at every checkpoint, a segment every 0.5 s
        for step in range(50):
            batch = [reading(d, start + step * 1000 + i, step) for i, d in enumerate(devices)]
            sent += await produce(kafka, batch)
            await asyncio.sleep(0.2)
        wait_for(
            lambda: count_points(influx_url, database, "environment", "pm25_ugm3") == sent,
            60,
            f"{sent} raw points",
            worker,
        )
        worker.kill()  # a crash: no snapshot comes after these
        # offsets are never reused: a partition's end offset is how many snapshots were ever written
        written: dict[int, int] = {}
        left: dict[int, int] = {}
        for _ in range(120):
            found = await history(kafka, topic)
            written = {p: records[-1].offset + 1 for p, records in found.items() if records}
            left = {p: len(records) for p, records in found.items()}
            if len(written) == SOURCE_PARTITIONS and all(left[p] <= written[p] // 4 for p in written):
                break
            await asyncio.sleep(0.5)
        assert len(written) == SOURCE_PARTITIONS, written
        assert min(written.values()) >= 20, written  # a history of many checkpoints, over many segments
        assert all(left[p] <= written[p] // 4 for p in written), (written, left)
        # one key per partition: its number
        assert {r.key for records in found.values() for r in records} == {str(p).encode() for p in written}
        newest = {p: records[-1] for p, records in found.items()}
        largest = max(len(r.value) for records in found.values() for r in records)
        assert largest < int(STATE_TOPIC_CONFIG["max.message.bytes"]) // 100
        print(f"{topic}: snapshots written per partition {written}, left {left}; largest {largest} B")
    finally:
        worker.kill()

    # a new worker restores each partition from the snapshot compaction kept, and goes on: the next
    # readings are stored, none of the earlier ones twice
    second = WorkerProcess(tmp_path / "two", {**env, "CITYSTREAM_WEB_PORT": str(free_port())}).start()
    try:
        wait_for(lambda: ASSIGNED in second.log(), 90, "the second worker's partitions", second)
        more = [reading(d, start + 60_000 + i, 100) for i, d in enumerate(devices)]
        sent += await produce(kafka, more)
        wait_for(
            lambda: count_points(influx_url, database, "environment", "pm25_ugm3") == sent,
            60,
            f"{sent} raw points after the restore",
            second,
        )
        restored = {
            int(p): int(offset)
            for p, offset in re.findall(rf"restored {re.escape(ENV)}\[(\d+)\] at offset (\d+)", second.log())
        }
        assert restored == {p: decode_snapshot(record.value)[0] for p, record in newest.items()}
    finally:
        assert second.stop() == 0, second.log()[-3000:]
