"""Partition snapshots in Kafka, so that a partition's state follows it to any worker.

Each stateful input topic has a state topic with as many partitions; snapshots of input partition
``p`` go to partition ``p`` of its state topic, so the newest snapshot is that partition's last
message. Production Kafka should compact these topics (``cleanup.policy=compact`` is set when they
are created) or give them a retention well above the checkpoint interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError

from streams.clients.kafka import BrokerUnavailable

log = logging.getLogger(__name__)

SNAPSHOT_MAX_BYTES = 64 * 1024 * 1024
RETRY_S = 1.0
"""How long a read that failed because no broker answered waits before it is tried again."""


def transient(exc: BaseException) -> bool:
    """Whether a Kafka read failed because the brokers did not answer (away, restarting, electing a
    leader): worth trying again, not a reason to stop the worker."""
    if isinstance(exc, KafkaError):
        return exc.retriable or isinstance(exc, KafkaTimeoutError)
    return isinstance(exc, (BrokerUnavailable, OSError, TimeoutError))


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
        hands a worker many partitions at once: one read, not one per partition).

        While no broker answers, the read is tried again every ``RETRY_S``: the partitions wait
        for their snapshots, and the worker goes on when the brokers are back."""
        wanted = {TopicPartition(self.state_topics[topic], partition): partition for partition in partitions}
        found: dict[int, bytes | None] = dict.fromkeys(wanted.values())
        async with self._lock:
            while True:
                try:
                    consumer = await self._reader()
                    consumer.assign(list(wanted))
                    ends = await consumer.end_offsets(list(wanted))
                    break
                except Exception as exc:
                    if not transient(exc):
                        raise
                    log.warning("reading the snapshots of %s failed (%r); trying again in %.0f s", topic, exc, RETRY_S)
                    await self._drop_reader()
                    await asyncio.sleep(RETRY_S)
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

    async def _drop_reader(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
