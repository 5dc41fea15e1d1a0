"""Partition snapshots in Kafka, so that a partition's state follows it to any worker.

Each stateful input topic has a state topic with as many partitions; snapshots of input partition
``p`` go to partition ``p`` of its state topic, so the newest snapshot is that partition's last
message. Production Kafka should compact these topics (``cleanup.policy=compact`` is set when they
are created) or give them a retention well above the checkpoint interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

SNAPSHOT_MAX_BYTES = 64 * 1024 * 1024

Send = Callable[[str, bytes | None, bytes, int], Awaitable[Awaitable[object]]]


class KafkaStateStore:
    def __init__(
        self, bootstrap_servers: list[str], state_topics: Mapping[str, str], send: Send, **client_options: object
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.state_topics = dict(state_topics)  # input topic -> state topic
        self._send = send
        # more aiokafka arguments: the security ones of streams.settings.kafka_client_kwargs
        self.client_options: dict[str, object] = dict(client_options)
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _reader(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                fetch_max_bytes=SNAPSHOT_MAX_BYTES,
                max_partition_fetch_bytes=SNAPSHOT_MAX_BYTES,
                **self.client_options,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def load(self, topic: str, partition: int) -> bytes | None:
        """The newest snapshot of an input partition, or None when it has none yet."""
        return (await self.load_many(topic, [partition]))[partition]

    async def load_many(self, topic: str, partitions: Iterable[int]) -> dict[int, bytes | None]:
        """The newest snapshots of several partitions of an input topic, read together (a rebalance
        hands a worker many partitions at once: one read, not one per partition)."""
        wanted = {TopicPartition(self.state_topics[topic], partition): partition for partition in partitions}
        found: dict[int, bytes | None] = dict.fromkeys(wanted.values())
        async with self._lock:
            consumer = await self._reader()
            consumer.assign(list(wanted))
            ends = await consumer.end_offsets(list(wanted))
            waiting = {}
            for state_tp, partition in wanted.items():
                if ends[state_tp] > 0:
                    consumer.seek(state_tp, ends[state_tp] - 1)
                    waiting[state_tp] = partition
            while waiting:
                batches = await consumer.getmany(*waiting, timeout_ms=10_000)
                for state_tp, records in batches.items():
                    if records and state_tp in waiting:
                        found[waiting.pop(state_tp)] = records[-1].value
                if not batches:
                    log.warning("waiting for the snapshots of %s %s", topic, sorted(waiting.values()))
        return found

    async def save(self, topic: str, partition: int, blob: bytes) -> Awaitable[object]:
        return await self._send(self.state_topics[topic], None, blob, partition)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
