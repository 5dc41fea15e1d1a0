"""The simulator against a real broker (Tansu, and Apache Kafka): what it reports is what lands on the topics."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codec import loads
from schemas.readings import SOURCE_TOPICS
from streams.clients.kafka import partition_counts
from streams.settings import load_settings
from streams.tools.simulate import (
    MAX_MESSAGE_BYTES,
    SimulationOptions,
    SimulationReport,
    kafka_partition,
    run_simulation,
)

pytestmark = pytest.mark.integration

TOPICS = list(SOURCE_TOPICS.values())


async def end_offsets(bootstrap: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        counts = await partition_counts(bootstrap, list(TOPICS))
        partitions = [TopicPartition(topic, p) for topic, n in counts.items() for p in range(n)]
        return await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


async def records_since(bootstrap: str, start: dict[TopicPartition, int], since_ms: int) -> list[Any]:
    """Every record from ``start`` on whose timestamp is ``since_ms`` or later, read until the
    topics stay quiet for 2 s. (Tansu reports a partition's end offset short by the rest of a
    multi-record batch, so end offsets cannot tell when everything has been read.)"""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * MAX_MESSAGE_BYTES,
        fetch_max_bytes=16 * MAX_MESSAGE_BYTES,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        counts = await partition_counts(bootstrap, list(TOPICS))
        partitions = [TopicPartition(topic, p) for topic, n in counts.items() for p in range(n)]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, start.get(tp, 0))
        loop = asyncio.get_running_loop()
        quiet_since, deadline = loop.time(), loop.time() + 60
        while loop.time() - quiet_since < 2 and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=250, max_records=5000)
            for batch in batches.values():
                records.extend(r for r in batch if r.timestamp >= since_ms)
            if any(batches.values()):
                quiet_since = loop.time()
    finally:
        await consumer.stop()
    return records


async def test_run_simulation_produces_what_it_reports(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = load_settings(kafka_bootstrap=kafka_bootstrap)
    registry = tmp_path / "registry.yaml"
    registry_seen: list[bool] = []
    progress: list[int] = []
    options = SimulationOptions(
        duration_s=3.0,
        rate=2000,
        lots=4,
        spots_per_lot=30,
        stations=8,
        seed=21,
        invalid_share=0.05,
        duplicate_share=0.01,
        bootstrap=kafka_bootstrap,
        registry_out=registry,
    )
    # the topics exist before the run only if another test made them: count from where they end
    before = await end_offsets(kafka_bootstrap) if await _topics_exist(kafka_bootstrap) else {}
    started_ms = time.time_ns() // 1_000_000

    report: SimulationReport = await run_simulation(
        options,
        settings=settings,
        registry_ready=lambda: registry_seen.append(registry.exists()),
        on_progress=lambda r: progress.append(r.valid_readings),
    )

    assert registry_seen == [True]
    document = yaml.safe_load(registry.read_text(encoding="utf-8"))
    assert len(document["parking_lots"]) == 4 and len(document["env_stations"]) == 8
    assert 0.8 * 2000 * 3 <= report.valid_readings <= 1.1 * 2000 * 3
    assert not report.failed
    assert set(report.invalid_by_reason) == {
        "not_utf8",
        "malformed_json",
        "not_an_object",
        "too_large",
        "bad_batch",
        "schema",
        "future_timestamp",
        "stale_timestamp",
    }
    assert progress and progress[-1] == report.valid_readings

    records = await records_since(kafka_bootstrap, before, started_ms)
    assert Counter(r.topic for r in records) == report.messages_by_topic
    readings = Counter[str]()
    partition_counts = Counter(tp.topic for tp in await end_offsets(kafka_bootstrap))
    for record in records:
        assert record.partition == kafka_partition(record.key, partition_counts[record.topic])
        if len(record.value) > MAX_MESSAGE_BYTES:
            continue
        try:
            document = loads(record.value)
        except Exception:
            continue
        if isinstance(document, dict):
            batch = document.get("batch", [document])
            if isinstance(batch, list):
                readings[record.topic] += sum(isinstance(e, dict) for e in batch)
    assert sum(1 for r in records if len(r.value) > MAX_MESSAGE_BYTES) == 1
    for topic in TOPICS:  # every reading arrived (plus invalid elements and bad batches)
        assert readings[topic] >= report.readings_by_topic[topic] + report.duplicates_by_topic[topic]


async def test_a_stopped_run_still_sends_what_it_generated(kafka_bootstrap: str) -> None:
    stop = asyncio.Event()
    options = SimulationOptions(
        duration_s=30.0, rate=1000, seed=3, bootstrap=kafka_bootstrap, invalid_share=0, duplicate_share=0
    )
    asyncio.get_running_loop().call_later(1.5, stop.set)
    started = asyncio.get_running_loop().time()
    report = await run_simulation(options, settings=load_settings(kafka_bootstrap=kafka_bootstrap), stop=stop)
    assert asyncio.get_running_loop().time() - started < 10
    assert 500 <= report.valid_readings <= 2500
    assert report.messages > 0 and not report.failed


async def _topics_exist(bootstrap: str) -> bool:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return set(TOPICS) <= await consumer.topics()
    finally:
        await consumer.stop()
