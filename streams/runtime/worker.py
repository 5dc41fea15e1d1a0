"""``citystream worker``: the Faust worker that ingests the source topics and keeps the windows."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import faust
import mode
from faust.types import TP, Message

from schemas.alert import Alert
from streams.clients.influx import make_writer, wait_until_ready
from streams.clients.kafka import (
    ALERTS_TOPIC,
    DEADLETTER_TOPIC,
    contract_topics,
    ensure_topics,
    internal_topics,
    partition_counts,
    state_topic,
)
from streams.clients.state import KafkaStateStore
from streams.core.decode import SourceMessage, TimeLimits
from streams.core.forward import HEARTBEAT, Forwarder, decode_records
from streams.core.ingest import Ingestor, SourceStream
from streams.core.registry import load_registry
from streams.core.windows import FOLDED, MergeProgress, WindowedAggregate, WindowPolicy
from streams.kinds import KINDS, SensorKind
from streams.rules.partition import (
    PartitionRules,
)
from streams.rules.points import alert_line
from streams.runtime.app import build_app
from streams.runtime.checkpoint import Checkpointer, PartitionWork
from streams.runtime.faust_adapter import idempotence_supported
from streams.runtime.logs import configure_logging, logging_config
from streams.runtime.metrics import MetricSources
from streams.runtime.observability import Observability
from streams.runtime.outbox import AlertOutbox
from streams.runtime.sink import PointSink
from streams.settings import (
    Settings,
    kafka_client_kwargs,
)

log = logging.getLogger("citystream.worker")

# what a handler does with one message not yet in its partition's state
Apply = Callable[[SourceMessage, bytes | None, PartitionWork], Awaitable[None]]

FORWARD_INTERVAL_S = 0.2
# messages handled between two yields to the event loop: a fetch of thousands of messages would
# otherwise keep /metrics and /healthz waiting for a second or more
YIELD_EVERY = 200
ALERT_RULES_INTERVAL_S = 0.2


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class WorkerService(mode.Service):
    """Runs the sink, the forwarders and the checkpoints with the app; on shutdown, a last checkpoint."""

    def __init__(self, runtime: Runtime, **kwargs: Any) -> None:
        self.runtime = runtime
        super().__init__(**kwargs)

    @mode.Service.task
    async def _write_batches(self) -> None:
        await self.runtime.sink.run()

    @mode.Service.task
    async def _write_alerts(self) -> None:
        await self.runtime.alerts_sink.run()

    @mode.Service.task
    async def _checkpoints(self) -> None:
        await self.runtime.checkpointer.run()

    @mode.Service.task
    async def _alert_rules(self) -> None:
        await self.runtime.checkpointer.run_alert_rules(ALERT_RULES_INTERVAL_S)

    @mode.Service.timer(60.0)
    async def _report_alert_latency(self) -> None:
        summary = self.runtime.outbox.latency_summary()
        if summary:
            log.info("alert latency from final window to topic: %s", summary)

    @mode.Service.task
    async def _readiness_checks(self) -> None:
        await self.runtime.observability.run_checks(lambda: self.should_stop)

    @mode.Service.task
    async def _forward(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(FORWARD_INTERVAL_S)
            await self.runtime.flush_forwarders()

    async def on_stop(self) -> None:
        summary = self.runtime.outbox.latency_summary()
        if summary:
            log.warning("alert latency from final window to topic: %s", summary)
        await self.runtime.sink.stop()
        await self.runtime.alerts_sink.stop()
        await self.runtime.state_store.close()


class Runtime:
    """One worker: the Faust app, its agents, the sink, the forwarders and the checkpointer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = load_registry(settings.registry)
        self.limits = TimeLimits(
            max_future_ms=int(settings.max_future_s * 1000), max_age_ms=int(settings.max_age_s * 1000)
        )
        self.policy = WindowPolicy(
            short_ms=settings.window_short_s * 1000,
            long_ms=settings.window_long_s * 1000,
            grace_ms=int(settings.window_grace_s * 1000),
            max_lateness_ms=int(settings.max_lateness_s * 1000),
            qc=settings.qc_policy(),
        )
        self.app = build_app(settings)
        self.writer = make_writer(settings)
        self.sink = PointSink(
            self.writer,
            batch_size=settings.write_batch_size,
            interval_s=settings.write_interval_s,
            max_pending=settings.max_pending_points,
        )
        self.ingestor = Ingestor(self.registry, self.limits)
        self.alert_policy = settings.alert_policy()
        self.alerts_sink = PointSink(
            make_writer(settings),
            batch_size=settings.write_batch_size,
            interval_s=settings.write_interval_s,
            max_pending=settings.max_pending_points,
        )
        self.outbox = AlertOutbox(
            ALERTS_TOPIC,
            settings.source_partitions,
            self._send,
            self.alerts_sink,
            alert_line,
            settings.bootstrap_servers,
        )
        app_id = settings.app_id
        self.kinds = KINDS
        # the internal topic of each kind whose readings are merged, and the forwarder that feeds it
        self.merged_topics = {kind.topic: kind.merge.topic(app_id) for kind in KINDS if kind.merge is not None}
        self.forwarders = {
            source: Forwarder(merged, settings.source_partitions, self._send)
            for source, merged in self.merged_topics.items()
        }
        # the kind of every input topic, source or internal: its readings' counters and windows
        self.kind_of_topic = {kind.topic: kind for kind in KINDS} | {
            merged: kind for kind in KINDS if (merged := self.merged_topics.get(kind.topic))
        }
        self.dropped: dict[str, Counter[str]] = {kind.name: Counter() for kind in KINDS}
        # partitions of each source topic, as found at start (preflight)
        self.source_partitions = {kind.topic: settings.source_partitions for kind in KINDS}
        self.state_store = KafkaStateStore(
            settings.bootstrap_servers,
            {name: state_topic(app_id, name) for name in self.kind_of_topic},
            self._send_state,
        )
        self.checkpointer = Checkpointer(
            self.sink,
            self.state_store,
            self._aggregate_for,
            interval_s=settings.checkpoint_interval_s,
            before_flush=self.checkpoint_forwarders,
            is_assigned=self._is_assigned,
            outbox=self.outbox,
        )
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_before_shutdown.connect(self._last_checkpoint)  # type: ignore[arg-type]
        for kind in KINDS:
            self._attach_source(kind, self._folder(kind) if kind.fold is not None else self._forwarder(kind))
            if kind.merge is not None:
                self._attach_internal(self.merged_topics[kind.topic], kind.merge.record_type)
        # Kafka security for the clients made outside Faust (Faust's: streams.runtime.app.broker_credentials)
        self.kafka_options = kafka_client_kwargs(settings)
        self.state_store.client_options = self.kafka_options
        self.outbox.client_options = self.kafka_options
        # /metrics, /healthz, /readyz; counters read at scrape time, nothing added per message
        sinks = [self.sink, self.alerts_sink]
        sources = MetricSources(
            ingest=self.ingestor.stats,
            sinks=sinks,
            dropped=self.dropped,
            outbox=self.outbox,
            works=lambda: list(self.checkpointer.works.values()),
            checkpointer=self.checkpointer,
        )
        self.observability = Observability(self.app, sources, self.writer, sinks, settings.kafka_bootstrap)

    # Kafka output, through Faust's producer
    async def _send(self, topic: str, key: bytes | None, value: bytes, partition: int) -> Awaitable[object]:
        return await self.app.producer.send(topic, key, value, partition, None, None)

    async def _send_state(self, topic: str, key: bytes | None, value: bytes, partition: int) -> Awaitable[object]:
        return await self.app.producer.send(topic, str(partition).encode(), value, partition, None, None)

    def _heartbeats(self) -> None:
        """Every source partition this worker holds tells the windows downstream how far it has got;
        one that has had no message yet says so, so that it holds nothing back."""
        for tp in self.app.consumer.assignment():
            forwarder = self.forwarders.get(tp.topic)
            if forwarder is None:
                continue
            work = self.checkpointer.works.get((tp.topic, tp.partition))
            if work is not None and work.aggregate is not None:
                clock = work.aggregate.clock
                forwarder.heartbeat(work.partition, work.last_offset, clock.watermark_ms, clock.last_input_wall_ms)
            elif self._is_empty(tp):
                forwarder.heartbeat(tp.partition, -1, None, None)
            # else: messages not processed yet; staying silent keeps the windows downstream open

    def _is_empty(self, tp: TP) -> bool:
        """Whether a partition is known to hold no message at all."""
        try:
            return self.app.consumer.highwater(tp) == 0
        except Exception:  # not fetched yet
            return False

    async def checkpoint_forwarders(self) -> list[Awaitable[object]]:
        """At a checkpoint: heartbeats of the source partitions, then everything buffered."""
        self._heartbeats()
        return await self.flush_forwarders()

    async def flush_forwarders(self) -> list[Awaitable[object]]:
        deliveries: list[Awaitable[object]] = []
        for forwarder in self.forwarders.values():
            deliveries += await forwarder.flush()
        if deliveries:
            self.sink.add([], waits=deliveries)
        return deliveries

    def _aggregate_for(
        self, topic: str
    ) -> tuple[WindowedAggregate, MergeProgress | None, PartitionRules | None] | None:
        """What a partition of ``topic`` keeps: its windows (or gate), merge progress and rules."""
        kind = self.kind_of_topic.get(topic)
        if kind is None:
            return None
        policy, registry, alerts = self.policy, self.registry, self.alert_policy
        if topic == kind.topic:  # a source partition
            aggregate, progress = kind.aggregate(policy, registry), None
            rules = kind.rules(alerts) if kind.rules is not None else None
        else:  # a partition of the kind's internal topic, fed by every source partition
            assert kind.merge is not None
            aggregate = kind.merge.aggregate(policy, registry)
            progress = MergeProgress(policy.max_lateness_ms, self.source_partitions[kind.topic])
            rules = kind.merge.rules(alerts) if kind.merge.rules is not None else None
        aggregate.dropped = self.dropped[kind.name]  # duplicates and late readings, for the metrics
        return aggregate, progress, rules

    def _is_assigned(self, topic: str, partition: int) -> bool:
        return TP(topic, partition) in self.app.consumer.assignment()

    async def _last_checkpoint(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """On shutdown, while the producer still runs: write and save what was processed."""
        try:
            await asyncio.wait_for(self.checkpointer.stop(), timeout=30)
        except Exception as exc:  # the next owner re-reads from the previous checkpoint
            log.warning("the last checkpoint did not complete (%r); the next worker re-reads from the one before", exc)

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        revoked: set[TP] = args[0] if args else kwargs.get("revoked", set())
        self.checkpointer.revoke({(tp.topic, tp.partition) for tp in revoked})

    # what a source partition does with the valid readings of a message: readings that are new and
    # on time there are folded into the windows kept there (stations), or forwarded (cells, lots)
    def _forwarder(self, kind: SensorKind[Any]) -> Callable[[list[Any], PartitionWork, int, int], list[Alert]]:
        assert kind.merge is not None
        reduce, key, forwarder = kind.merge.reduce, kind.merge.key, self.forwarders[kind.topic]

        def forward(readings: list[Any], work: PartitionWork, offset: int, sent_ms: int) -> list[Alert]:
            gate, rules = work.aggregate, work.rules
            assert gate is not None
            now = wall_ms()
            alerts: list[Alert] = []
            for index, reading in enumerate(readings):
                if gate.judge(reading, now) == FOLDED:
                    record = reduce(reading)
                    forwarder.add(key(record), (work.partition, offset, index, gate.clock.watermark_ms, *record))
                    if rules is not None:
                        alerts += rules.on_reading(reading, sent_ms, now)
            return alerts

        return forward

    def _folder(self, kind: SensorKind[Any]) -> Callable[[list[Any], PartitionWork, int, int], list[Alert]]:
        assert kind.fold is not None
        sample_of, registry = kind.fold, self.registry

        def fold(readings: list[Any], work: PartitionWork, offset: int, sent_ms: int) -> list[Alert]:
            aggregate, rules = work.aggregate, work.rules
            assert aggregate is not None
            now = wall_ms()
            alerts: list[Alert] = []
            for reading in readings:
                if aggregate.fold(sample_of(reading, registry), now) == FOLDED and rules is not None:
                    alerts += rules.on_reading(reading, sent_ms, now)
            return alerts

        return fold

    def _topic(self, name: str, **options: Any) -> faust.TopicT:
        return self.app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.settings.source_partitions,
            **options,
        )

    def _handler(self, apply: Apply) -> Callable[[list[Message]], Awaitable[None]]:
        """The handler of a topic's fetched messages: each message not yet in its partition's state
        goes through ``apply``, then waits for its ack until the checkpoint that makes it durable.

        Acks are manual: a message is acknowledged (and its offset committed) by the checkpoint that
        made its points, dead letters, forwarded readings and state durable. Between two awaits
        nothing else runs: a checkpoint sees a message either not processed or processed with its
        points in the sink. Should ``apply`` raise (a bug), the message is dead-lettered
        (:meth:`processing_failed`) and the partition goes on.
        """
        app, checkpointer, sink = self.app, self.checkpointer, self.sink
        works = checkpointer.works

        async def handle(messages: list[Message]) -> None:
            ack = app.consumer.ack
            generation = checkpointer.generation
            # the partitions of a fetch seen for the first time: their snapshots read together
            new = {(m.topic, m.partition) for m in messages if (m.topic, m.partition) not in works}
            if new:
                await checkpointer.prepare(new)
            for count, message in enumerate(messages, start=1):
                if count % YIELD_EVERY == 0:
                    # let the web server (/metrics, /healthz) and the heartbeats run between messages
                    await asyncio.sleep(0)
                    if generation != checkpointer.generation:
                        return
                topic, partition, offset = message.topic, message.partition, message.offset
                work = works.get((topic, partition))
                if work is None:
                    work = await checkpointer.work(topic, partition)
                if generation != checkpointer.generation:
                    return  # a rebalance came meanwhile: Faust delivers these again from the committed offset
                sent_ms = int(message.timestamp * 1000) if message.timestamp else None
                if not work.already_applied(offset):
                    source = SourceMessage(topic, partition, offset, message.key, sent_ms)
                    try:
                        await apply(source, message.value, work)
                    except Exception as exc:  # a bug must not stop the partition
                        await self.processing_failed(source, message.value, exc)
                    if generation != checkpointer.generation:
                        return
                # the message waits for its ack until the next checkpoint: without its bytes
                message.key = message.value = None
                work.processed(offset, partial(ack, message), sent_ms, wall_ms())
            await sink.wait_for_room()

        return handle

    def _attach_source(
        self, stream: SourceStream[Any], then: Callable[[list[Any], PartitionWork, int, int], list[Alert]]
    ) -> None:
        """A source topic: judge each message, write raw points and dead letters, then fold or forward."""
        app, sink, outbox, ingest = self.app, self.sink, self.outbox, self.ingestor.ingest

        async def process(source: SourceMessage, value: bytes | None, work: PartitionWork) -> None:
            outcome = ingest(stream, source, value)
            waits = [
                await app.producer.send(DEADLETTER_TOPIC, key, letter, None, None, None)
                for key, letter in outcome.dead_letters
            ]
            sink.add(outcome.lines, waits=waits)
            if outcome.readings:
                alerts = then(outcome.readings, work, source.offset, source.timestamp_ms or wall_ms())
                if alerts:
                    await outbox.publish(alerts)

        app.batch_topic(self._topic(stream.topic), self._handler(process))

    def _attach_internal(self, topic_name: str, record_type: Any) -> None:
        """An internal topic: forwarded records and heartbeats into the windows kept there."""

        async def apply_records(source: SourceMessage, value: bytes | None, work: PartitionWork) -> None:
            assert work.aggregate is not None and work.progress is not None
            now = wall_ms()
            progress, apply = work.progress, work.aggregate.apply
            for source_partition, source_offset, index, watermark, *fields in decode_records(value or b""):
                if index == HEARTBEAT:
                    progress.heartbeat(source_partition, watermark, fields[0])
                elif progress.accept(source_partition, source_offset, index, watermark, now):
                    apply(record_type(*fields), now)

        self.app.batch_topic(self._topic(topic_name, internal=False), self._handler(apply_records))

    async def processing_failed(self, source: SourceMessage, value: bytes | None, exc: Exception) -> None:
        """The last resort when the processor fails on a message (a bug): the message is dead-lettered
        with reason ``processing_error``, logged at error level and counted, and the partition goes on.
        What the message had changed before the failure stays (its readings may be partly counted)."""
        log.error(
            "processing %s[%d]@%d failed; the message goes to %s as processing_error and the partition goes on",
            source.topic,
            source.partition,
            source.offset,
            DEADLETTER_TOPIC,
            exc_info=exc,
        )
        waits = [
            await self.app.producer.send(DEADLETTER_TOPIC, key, letter, None, None, None)
            for key, letter in self.ingestor.failed(source, value, exc)
        ]
        self.sink.add([], waits=waits)

    async def preflight(self) -> None:
        """Create missing topics and wait for InfluxDB, each for at most the startup timeout."""
        settings = self.settings
        servers = settings.bootstrap_servers
        await ensure_topics(
            servers,
            contract_topics(settings.source_partitions),
            replication=settings.topic_replication,
            timeout_s=settings.startup_timeout_s,
            **self.kafka_options,
        )
        self.app.idempotent_producer = await idempotence_supported(
            servers, settings.startup_timeout_s, **self.kafka_options
        )
        sources = [kind.topic for kind in KINDS]
        counts = await partition_counts(servers, [*sources, ALERTS_TOPIC], **self.kafka_options)
        self.outbox.partitions = counts.pop(ALERTS_TOPIC, settings.source_partitions)
        self.source_partitions.update(counts)
        await ensure_topics(
            servers,
            internal_topics(
                settings.app_id,
                settings.source_partitions,
                {name: counts.get(name, settings.source_partitions) for name in sources},
                list(self.merged_topics.values()),
            ),
            replication=settings.topic_replication,
            timeout_s=settings.startup_timeout_s,
            **self.kafka_options,
        )
        await self.outbox.start()
        await self.writer.open()
        await wait_until_ready(self.writer, settings.startup_timeout_s)
        await self.alerts_sink.writer.open()

    def run(self) -> None:
        configure_logging(self.settings)  # before the preflight; Faust's worker applies it again
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
            pass
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self.preflight())
        worker = faust.Worker(
            self.app,
            WorkerService(self, loop=loop),
            loop=loop,
            loglevel=self.settings.log_level.upper(),
            logging_config=logging_config(self.settings),
            # JSON logs: no start-up banner on standard output, only JSON lines
            quiet=self.settings.log_format == "json",
            redirect_stdouts=False,
        )
        worker.execute_from_commandline()
