"""Checkpoints: what makes a worker's output exact across crashes, restarts and rebalances.

Every input partition (a source topic's, or an internal topic's) has a :class:`PartitionWork`: its
aggregation state, if any, and the messages processed since the last checkpoint. A checkpoint,
every few seconds, does in this order:

1. takes the points of every window changed since the last one, a snapshot of every changed
   partition's state with the offset of the last message in it, and the acks of the messages up to
   that offset: for each partition in one step (nothing else runs meanwhile), yielding to the event
   loop between two partitions;
2. writes all buffered points to InfluxDB and waits for the dead letters and forwarded readings
   to be delivered;
3. saves the snapshots to the partition's state topic in Kafka;
4. acknowledges the messages, which lets Faust commit their offsets.

After a crash the next owner of a partition loads its last snapshot and skips the messages at or
before the snapshot's offset: those are in the state already, and their points and dead letters
are durable. Messages after it are processed again; writing a point again is idempotent, and a
forwarded reading that arrives twice is a duplicate to the windows downstream.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas import codec
from schemas.alert import Alert
from streams.core.windows import MergeProgress, WindowedAggregate
from streams.rules.partition import CAUGHT_UP_MS, PartitionRules
from streams.runtime.outbox import AlertOutbox
from streams.runtime.sink import PointSink

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]
REBALANCED = "a rebalance came during the checkpoint; its partitions restart from their last snapshot"


class StateStore(Protocol):
    async def load(self, topic: str, partition: int) -> bytes | None: ...
    async def load_many(self, topic: str, partitions: Iterable[int]) -> dict[int, bytes | None]: ...
    async def save(self, topic: str, partition: int, blob: bytes) -> Awaitable[object]: ...


def encode_snapshot(offset: int, state: dict[str, Any]) -> bytes:
    return zlib.compress(codec.dumps({"offset": offset, "state": state}), 1)


def decode_snapshot(blob: bytes) -> tuple[int, dict[str, Any]]:
    document = codec.loads(zlib.decompress(blob))
    return int(document["offset"]), document["state"]


@dataclass
class PartitionWork:
    topic: str
    partition: int
    aggregate: WindowedAggregate | None
    progress: MergeProgress | None = None  # for an aggregate fed by forwarded records
    rules: PartitionRules | None = None
    last_sent_ms: int | None = None  # Kafka timestamp of the newest message processed
    last_message_wall_ms: int | None = None
    evaluated_ms: int | None = None  # when the alert rules last ran on this partition
    restored_offset: int = -1  # messages at or before this offset are in the restored state
    last_offset: int = -1
    acks: list[Callable[[], object]] = field(default_factory=list)
    changed: bool = False
    snapshot_bytes: int = 0  # the size of the newest snapshot taken (or restored), compressed

    def already_applied(self, offset: int) -> bool:
        return offset <= self.restored_offset

    def processed(self, offset: int, ack: Callable[[], object], sent_ms: int | None, wall_ms: int) -> None:
        self.last_offset = offset
        self.acks.append(ack)
        self.changed = True
        self.last_sent_ms = sent_ms
        self.last_message_wall_ms = wall_ms

    def snapshot(self, alerts_positions: dict[int, int]) -> bytes:
        """The partition's state and the offset of the last message in it, encoded for its state topic."""
        assert self.aggregate is not None
        state = {
            "aggregate": self.aggregate.dump(),
            "progress": None if self.progress is None else self.progress.dump(),
            "rules": None if self.rules is None else self.rules.dump(),
            "alerts_positions": alerts_positions,
        }
        blob = encode_snapshot(self.last_offset, state)
        self.snapshot_bytes = len(blob)
        return blob

    def caught_up(self, now_ms: int) -> bool:
        """Whether the partition has processed its input up to about now (no backlog)."""
        if self.last_sent_ms is None or self.last_message_wall_ms is None:
            return True
        return now_ms - self.last_sent_ms < CAUGHT_UP_MS or now_ms - self.last_message_wall_ms >= CAUGHT_UP_MS


class Checkpointer:
    """Owns every partition's work in this worker and runs the checkpoints."""

    def __init__(
        self,
        sink: PointSink,
        store: StateStore,
        aggregate_factory: Callable[
            [str], tuple[WindowedAggregate, MergeProgress | None, PartitionRules | None] | None
        ],
        *,
        interval_s: float,
        before_flush: Callable[[], Awaitable[list[Awaitable[object]]]] | None = None,
        is_assigned: Callable[[str, int], bool] = lambda topic, partition: True,
        outbox: AlertOutbox | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.clock_ms = clock_ms  # the wall clock, in epoch milliseconds
        self.outbox = outbox
        self.sink = sink
        self.store = store
        self.aggregate_factory = aggregate_factory
        self.interval_s = interval_s
        self.before_flush = before_flush
        self.is_assigned = is_assigned
        self.works: dict[TopicPartitionKey, PartitionWork] = {}
        self._loading: dict[TopicPartitionKey, asyncio.Future[PartitionWork]] = {}
        self._lock = asyncio.Lock()
        self._stopping = False
        self.checkpoints = 0
        self.last_checkpoint_s = 0.0  # the last checkpoint, from its start to its acks
        self.last_snapshots_s = 0.0  # of which taking the partitions' points and snapshots
        # bumped at every rebalance: work captured before one must not be saved or acknowledged
        self.generation = 0

    async def work(self, topic: str, partition: int) -> PartitionWork:
        """The partition's work, restored from its last snapshot the first time it is asked for."""
        key = (topic, partition)
        work = self.works.get(key)
        if work is not None:
            return work
        pending = self._loading.get(key)
        if pending is None:
            pending = self._loading[key] = asyncio.ensure_future(self._restore(topic, partition))
        try:
            work = await asyncio.shield(pending)
        finally:
            self._loading.pop(key, None)
        self.works[key] = work
        return work

    async def prepare(self, keys: Iterable[TopicPartitionKey]) -> None:
        """Restore the partitions of ``keys`` not restored yet, reading their snapshots together."""
        missing = [key for key in set(keys) if key not in self.works and key not in self._loading]
        if not missing:
            return
        by_topic: dict[str, list[int]] = {}
        for topic, partition in missing:
            by_topic.setdefault(topic, []).append(partition)

        async def read() -> dict[TopicPartitionKey, bytes | None]:
            blobs: dict[TopicPartitionKey, bytes | None] = {}
            for topic, partitions in by_topic.items():
                found = await self.store.load_many(topic, partitions)
                blobs.update({(topic, partition): blob for partition, blob in found.items()})
            return blobs

        blobs = asyncio.ensure_future(read())
        for topic, partition in missing:
            self._loading[(topic, partition)] = asyncio.ensure_future(self._restore(topic, partition, blobs))
        await asyncio.gather(*(self.work(topic, partition) for topic, partition in missing))

    async def _restore(
        self, topic: str, partition: int, blobs: asyncio.Future[dict[TopicPartitionKey, bytes | None]] | None = None
    ) -> PartitionWork:
        made = self.aggregate_factory(topic)
        if made is None:
            return PartitionWork(topic, partition, None)
        aggregate, progress, rules = made
        work = PartitionWork(topic, partition, aggregate, progress, rules)
        if blobs is None:
            blob = await self.store.load(topic, partition)
        else:
            blob = (await asyncio.shield(blobs)).get((topic, partition))
        if blob is None and rules is not None:
            # a first snapshot before anything is processed: it records where the alerts topic
            # stood, so whoever restores this partition later finds the alerts published since
            await (await self.store.save(topic, partition, work.snapshot(self._alerts_positions())))
        if blob is not None:
            offset, state = decode_snapshot(blob)
            aggregate.load(state["aggregate"])
            if progress is not None:
                progress.load(state["progress"])
            if rules is not None and state.get("rules") is not None:
                rules.load(state["rules"])
                if self.outbox is not None:
                    # alerts this partition published after its snapshot are not published again
                    await self.outbox.recover(state.get("alerts_positions") or {})
            work.restored_offset = work.last_offset = offset
            work.snapshot_bytes = len(blob)
            # quiet since the restore, as far as this worker knows: windows may close by the wall clock
            aggregate.clock.last_input_wall_ms = self.clock_ms()
            log.info(
                "restored %s[%d] at offset %d (watermark %s)", topic, partition, offset, aggregate.clock.watermark_ms
            )
        return work

    def _alerts_positions(self) -> dict[int, int]:
        return dict(self.outbox.positions) if self.outbox is not None else {}

    def revoke(self, partitions: set[TopicPartitionKey]) -> None:
        """Forget revoked partitions: their next owner restores them from the last snapshot.

        Faust seeks every partition it assigns to the committed offset, so a partition kept across
        a rebalance is restored from its snapshot too; a checkpoint under way is abandoned.
        """
        self.generation += 1
        for key in partitions:
            self.works.pop(key, None)

    async def run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.interval_s)
            if self._stopping:  # stopped meanwhile: the last checkpoint is stop()'s, the producer may be gone
                return
            await self.checkpoint()

    async def run_alert_rules(self, interval_s: float) -> None:
        """Evaluate the alert rules often, between checkpoints, so that alerts follow final windows fast."""
        while not self._stopping:
            await asyncio.sleep(interval_s)
            if self._stopping:
                return
            async with self._lock:
                alerts = self._evaluate(self.clock_ms())
                if alerts and self.outbox is not None:
                    await self.outbox.publish(alerts)

    def _evaluate(self, now_ms: int) -> list[Alert]:
        """Run every partition's rules on its newly final windows and the clock (synchronously)."""
        alerts: list[Alert] = []
        for work in self.works.values():
            if work.aggregate is None or work.rules is None:
                continue
            frontier = work.aggregate.final_until_ms
            raised = work.rules.evaluate(work.aggregate, work.progress, work.caught_up(now_ms), now_ms)
            if raised or frontier != work.aggregate.final_until_ms:
                work.changed = True
            if raised and self.outbox is not None:
                # the windows became final at the earliest after the previous evaluation
                self.outbox.track_latency(raised, work.evaluated_ms)
            work.evaluated_ms = now_ms
            alerts += raised
        return alerts

    async def stop(self) -> None:
        self._stopping = True
        await self.checkpoint()

    async def checkpoint(self) -> None:
        async with self._lock:
            generation = self.generation
            started = time.perf_counter()
            now_ms = self.clock_ms()
            snapshots: list[tuple[str, int, bytes]] = []
            acks: list[Callable[[], object]] = []
            positions = self._alerts_positions()
            alerts = self._evaluate(now_ms)
            for count, work in enumerate(list(self.works.values())):
                if count and work.aggregate is not None and work.changed:
                    # one partition at a time: /metrics, /healthz and the consumer's heartbeats run
                    # between two snapshots, so that the pause is one partition's, not the worker's
                    await asyncio.sleep(0)
                    if generation != self.generation:
                        log.info(REBALANCED)
                        return
                if work.aggregate is not None:
                    self.sink.add(work.aggregate.take_lines())
                    if work.changed:
                        progress = work.progress
                        if progress is None:
                            work.aggregate.expire()
                        else:
                            work.aggregate.expire(progress.horizon_ms(now_ms))
                        snapshots.append((work.topic, work.partition, work.snapshot(positions)))
                if self.is_assigned(work.topic, work.partition):
                    acks.extend(work.acks)
                work.acks = []
                work.changed = False
            snapshots_s = time.perf_counter() - started
            if self.outbox is not None:
                await self.outbox.publish(alerts)
            if self.before_flush is not None:
                self.sink.add([], waits=await self.before_flush())
            await self.sink.flush()
            if self.outbox is not None:
                await self.outbox.flush()
            if generation != self.generation:
                log.info(REBALANCED)
                return
            saves = [await self.store.save(topic, partition, blob) for topic, partition, blob in snapshots]
            if saves:
                await asyncio.gather(*saves)
            if generation != self.generation:
                return
            for ack in acks:
                ack()
            self.checkpoints += 1
            self.last_checkpoint_s = time.perf_counter() - started
            self.last_snapshots_s = snapshots_s
