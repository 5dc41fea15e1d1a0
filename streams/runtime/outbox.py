"""Publishing alerts exactly once, across restarts and moves of the partitions that raise them.

An alert is published on ``city.alerts.v1`` and written to the ``alerts`` measurement as soon as a
rule produces it. A checkpoint waits for its delivery before it saves the snapshot of the
partition that produced it, so an alert raised before a snapshot is never lost. After a crash the
next owner replays the messages after the snapshot and the rules produce the same alerts again:
to not publish those twice, every snapshot records how far the alerts topic's partitions had got
(``positions``), and a restored partition first reads the alerts published since then; the
(alert_id, status) pairs found there are not published again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiokafka import TopicPartition

from schemas import codec
from schemas.alert import Alert
from streams.clients.kafka import read_range, topic_end_offsets
from streams.clients.state import RETRY_S, transient
from streams.runtime.sink import PointSink

log = logging.getLogger(__name__)

Send = Callable[[str, bytes | None, bytes, int], Awaitable[Awaitable[object]]]
LineOf = Callable[[Alert], str]


def alerts_partition(subject_id: str, partitions: int) -> int:
    return zlib.crc32(subject_id.encode()) % partitions


class AlertOutbox:
    def __init__(
        self,
        topic: str,
        partitions: int,
        send: Send,
        sink: PointSink,
        line_of: LineOf,
        bootstrap_servers: list[str],
        *,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.partitions = partitions
        self._send = send
        self._sink = sink
        self._line_of = line_of
        self._bootstrap_servers = bootstrap_servers
        # more aiokafka arguments: the security ones of streams.settings.kafka_client_kwargs
        self.client_options: dict[str, Any] = dict(client_options or {})
        # where this worker's next alert on each partition of the topic will land, at the latest
        self.positions: dict[int, int] = {}
        self.already_published: set[tuple[str, str]] = set()
        self.published = 0
        self.suppressed = 0
        self.published_by: Counter[tuple[str, str]] = Counter()  # (kind, status) -> alerts published
        # seconds from a window becoming final (at the latest) to its alert being on the topic
        self.latencies: deque[float] = deque(maxlen=10_000)
        self._final_since: dict[tuple[str, str], int] = {}
        self._lock = asyncio.Lock()
        # partition of the topic -> the lowest position a restored partition asked to read from, not read yet
        self._asked: dict[int, int] = {}
        self.retry_s = RETRY_S  # a read that failed because no broker answered is tried again after this

    async def start(self) -> None:
        """Learn the alerts topic's current end offsets: the positions before any alert of ours."""
        ends = await topic_end_offsets(
            self._bootstrap_servers, self.topic, partitions=range(self.partitions), **self.client_options
        )
        self.positions = {tp.partition: max(0, end - 1) for tp, end in ends.items()}

    async def publish(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            key = (alert.alert_id, alert.status)
            if key in self.already_published:
                # on the topic already (published before a crash), perhaps not yet in InfluxDB:
                # writing its point again is idempotent
                self._sink.add([self._line_of(alert)])
                self.suppressed += 1
                continue
            value = codec.dumps(alert.model_dump(mode="json"))
            subject = alert.subject.id
            partition = alerts_partition(subject, self.partitions)
            delivery = await self._send(self.topic, subject.encode(), value, partition)
            self._sink.add([self._line_of(alert)], waits=[delivery])
            if isinstance(delivery, asyncio.Future):
                delivery.add_done_callback(self._delivered)
                since = self._final_since.pop(key, None)
                if since is not None:
                    delivery.add_done_callback(self._latency_recorder(since))
            self.published += 1
            self.published_by[(alert.kind, alert.status)] += 1
            log.info("alert %s %s (%s)", alert.status, alert.alert_id, alert.message)

    def track_latency(self, alerts: Iterable[Alert], final_since_ms: int | None) -> None:
        """Measure these alerts' latency from ``final_since_ms`` to their delivery on the topic."""
        if final_since_ms is None:
            return
        for alert in alerts:
            self._final_since[(alert.alert_id, alert.status)] = final_since_ms

    def _latency_recorder(self, since_ms: int) -> Callable[[asyncio.Future[object]], None]:
        def record(delivery: asyncio.Future[object]) -> None:
            if not delivery.cancelled() and delivery.exception() is None:
                self.latencies.append(time.time() - since_ms / 1000)

        return record

    def latency_summary(self) -> dict[str, float]:
        values = sorted(self.latencies)
        if not values:
            return {}
        return {
            "alerts": len(values),
            "p50_s": values[len(values) // 2],
            "p99_s": values[min(len(values) - 1, int(len(values) * 0.99))],
            "max_s": values[-1],
        }

    def _delivered(self, delivery: asyncio.Future[object]) -> None:
        if delivery.cancelled() or delivery.exception() is not None:
            return
        metadata = delivery.result()
        partition, offset = getattr(metadata, "partition", None), getattr(metadata, "offset", None)
        if isinstance(partition, int) and isinstance(offset, int):
            self.positions[partition] = max(self.positions.get(partition, 0), offset + 1)

    async def flush(self) -> None:
        """Wait until every alert published so far is on the topic and in InfluxDB."""
        await self._sink.flush()

    async def recover(self, positions: Mapping[str, int], quiet_s: float = 1.0) -> None:
        """Read the alerts published since ``positions`` (from a snapshot) and remember them.

        A rebalance hands a worker many partitions at once, restored together, each asking from its
        own snapshot's positions: the asks made meanwhile are read in one pass, from the lowest
        position of each partition of the topic (a read per restored partition, one after the other,
        held a worker taking over another's partitions for seconds). An ask returns once a pass that
        started after it has read the topic to its end. While no broker answers, the read is tried
        again every ``retry_s``.
        """
        if not positions:
            return
        for partition, offset in positions.items():
            number = int(partition)
            self._asked[number] = min(offset, self._asked.get(number, offset))
        await asyncio.sleep(0)  # the partitions restored with this one ask too
        async with self._lock:
            asked, self._asked = self._asked, {}
            if not asked:
                return  # read by the pass before, which started after this ask
            while True:
                try:
                    await self._read_published(asked, quiet_s)
                    return
                except Exception as exc:
                    if transient(exc):  # no broker answers: the restore waits for them
                        log.warning("reading %s failed (%r); trying again in %.0f s", self.topic, exc, self.retry_s)
                        await asyncio.sleep(self.retry_s)
                        continue
                    for number, offset in asked.items():  # asked again by whoever reads next
                        self._asked[number] = min(offset, self._asked.get(number, offset))
                    raise

    async def _read_published(self, positions: Mapping[int, int], quiet_s: float) -> None:
        start = {TopicPartition(self.topic, partition): offset for partition, offset in positions.items()}
        batches = read_range(
            self._bootstrap_servers, self.topic, start_offsets=start, quiet_s=quiet_s, **self.client_options
        )
        async for batch in batches:
            for record in batch:
                document = codec.loads(record.value)
                self.already_published.add((document["alert_id"], document["status"]))
