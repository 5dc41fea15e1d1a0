"""The one range reader of the project (streams.clients.kafka.read_range), against a fake consumer: which
partitions, from where, until where, and what it passes to aiokafka."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

import streams.clients.kafka
from streams.clients.kafka import BrokerUnavailable, TopicNotFound, read_range, topic_end_offsets

TOPIC = "city.deadletter.v1"


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes


@dataclass(frozen=True)
class Found:
    offset: int
    timestamp: int


class Broker:
    """Partitions as lists of (timestamp, value), their first offset, and the end offset reported."""

    def __init__(self, logs: Mapping[TopicPartition, list[int]], first: Mapping[TopicPartition, int] | None = None):
        self.logs = {tp: list(timestamps) for tp, timestamps in logs.items()}
        self.first = dict(first or {})
        self.reported_end: dict[TopicPartition, int] = {}  # as Tansu: less than the true end
        self.consumers: list[dict[str, Any]] = []
        self.described: list[list[str]] = []
        self.refuse = False

    def end(self, tp: TopicPartition) -> int:
        return self.first.get(tp, 0) + len(self.logs[tp])

    def consumer(self, *topics: str, **kwargs: Any) -> FakeConsumer:
        self.consumers.append(kwargs)
        return FakeConsumer(self)


class FakeConsumer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.assigned: set[TopicPartition] = set()
        self.stopped = False

    async def start(self) -> None:
        if self.broker.refuse:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    async def stop(self) -> None:
        self.stopped = True

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        # as Apache Kafka: a consumer that subscribed to nothing knows the topics it was assigned only
        return {tp.partition for tp in self.assigned if tp.topic == topic} or None

    async def topics(self) -> set[str]:
        return {tp.topic for tp in self.broker.logs}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.broker.first.get(tp, 0) for tp in tps}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.broker.reported_end.get(tp, self.broker.end(tp)) for tp in tps}

    async def offsets_for_times(self, times: Mapping[TopicPartition, int]) -> dict[TopicPartition, Found | None]:
        found: dict[TopicPartition, Found | None] = {}
        for tp, at in times.items():
            first = self.broker.first.get(tp, 0)
            hits = [(first + i, ts) for i, ts in enumerate(self.broker.logs[tp]) if ts >= at]
            found[tp] = Found(*hits[0]) if hits else None
        return found

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = set(tps)
        self.positions = dict.fromkeys(tps, 0)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        batches = {}
        for tp in tps:
            if tp in self.paused:
                continue
            first = self.broker.first.get(tp, 0)
            at = self.positions[tp]
            timestamps = self.broker.logs[tp][at - first :][:max_records]
            if timestamps:
                batches[tp] = [
                    Record(tp.topic, tp.partition, at + i, ts, f"{tp.partition}:{at + i}".encode())
                    for i, ts in enumerate(timestamps)
                ]
                self.positions[tp] = at + len(timestamps)
        return batches


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    """Two partitions of 5 records each, timestamps 1000, 2000, ... 5000."""
    fake = Broker({TopicPartition(TOPIC, p): [1000 * (i + 1) for i in range(5)] for p in (0, 1)})
    monkeypatch.setattr(streams.clients.kafka, "AIOKafkaConsumer", fake.consumer)

    async def partition_counts(bootstrap: Any, topics: list[str], **options: Any) -> dict[str, int]:
        fake.described.append(list(topics))  # the admin client describes what the consumer lacks
        return {t: n for t in topics if (n := len({tp for tp in fake.logs if tp.topic == t}))}

    monkeypatch.setattr(streams.clients.kafka, "partition_counts", partition_counts)
    monkeypatch.setattr(streams.clients.kafka, "TOPIC_METADATA_WAIT_S", 0.3)
    return fake


async def read(**options: Any) -> list[bytes]:
    return [record.value async for batch in read_range("k:9092", TOPIC, quiet_s=0.01, **options) for record in batch]


def values(*pairs: tuple[int, int]) -> list[bytes]:
    return [f"{p}:{o}".encode() for p, o in pairs]


async def test_reads_every_partition_from_its_first_offset_to_its_end(broker: Broker) -> None:
    assert sorted(await read()) == sorted(values(*((p, o) for p in (0, 1) for o in range(5))))
    assert broker.consumers[0]["group_id"] is None and broker.consumers[0]["enable_auto_commit"] is False


async def test_start_offsets_choose_the_partitions_and_the_start(broker: Broker) -> None:
    assert await read(start_offsets={TopicPartition(TOPIC, 1): 3}) == values((1, 3), (1, 4))


async def test_a_start_before_the_first_offset_kept_starts_at_it(broker: Broker) -> None:
    broker.first[TopicPartition(TOPIC, 0)] = 10  # retention removed what came before
    assert await read(start_offsets={TopicPartition(TOPIC, 0): 2}) == values(*((0, o) for o in range(10, 15)))


async def test_since_and_until_by_record_time(broker: Broker) -> None:
    got = await read(partitions=[0], since_ms=2500, until_ms=4000)
    assert got == values((0, 2))  # 3000 is in; 4000 is not, and ends the partition
    assert await read(partitions=[0], since_ms=9000) == []  # no record that late: nothing read


async def test_stop_offsets_replace_the_end_offsets(broker: Broker) -> None:
    tp = TopicPartition(TOPIC, 1)
    assert await read(start_offsets={tp: 1}, stop_offsets={tp: 2}, max_records=1) == values((1, 1))


async def test_the_whole_last_batch_counts_when_the_end_is_under_reported(broker: Broker) -> None:
    tp = TopicPartition(TOPIC, 0)
    broker.reported_end[tp] = 3  # Tansu: its last batch's first offset + 1
    assert await read(partitions=[0]) == values(*((0, o) for o in range(5)))
    assert await read(start_offsets={tp: 3}) == []  # at or past the end reported: not read


async def test_read_until_quiet_when_the_stop_lies_beyond_the_records(broker: Broker) -> None:
    tp = TopicPartition(TOPIC, 0)
    assert await read(start_offsets={tp: 4}, stop_offsets={tp: 99}) == values((0, 4))


async def test_an_unknown_topic_and_an_unreachable_broker(broker: Broker) -> None:
    with pytest.raises(TopicNotFound):
        [b async for b in read_range("k:9092", "city.nothing.v1")]
    assert len(broker.described) > 1  # described again while it waited for the topic to appear
    broker.refuse = True
    with pytest.raises(BrokerUnavailable, match="Unable to bootstrap"):
        await read()


async def test_the_security_settings_reach_the_consumer(broker: Broker) -> None:
    security = {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_plain_username": "city"}
    await read(max_partition_fetch_bytes=17 * 1024 * 1024, **security)
    ends = await topic_end_offsets("k:9092", TOPIC, partitions=[1], **security)
    assert ends == {TopicPartition(TOPIC, 1): 5}
    for options in broker.consumers:
        assert {k: options[k] for k in security} == security
    assert broker.consumers[0]["max_partition_fetch_bytes"] == 17 * 1024 * 1024
