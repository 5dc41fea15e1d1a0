"""The worker's Prometheus metrics and its readiness, read at scrape time.

Nothing here runs per message: the pure classes keep plain counters (:class:`streams.core.ingest.IngestStats`,
``WindowedAggregate.dropped``, :class:`streams.clients.influx.SinkStats`, ``AlertOutbox.published_by``) and
:class:`WorkerCollector` turns them into metric families when ``/metrics`` is scraped. Each worker
has its own :class:`prometheus_client.CollectorRegistry`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.deadletter import DeadLetterReason
from schemas.readings import SourceKind
from streams.clients.influx import REJECTED_REASONS, WRITE_SECONDS_BUCKETS
from streams.core.ingest import IngestStats
from streams.core.windows import DUPLICATE, LATE, WindowedAggregate
from streams.rules.policy import KINDS as ALERT_KINDS
from streams.runtime.checkpoint import PartitionWork
from streams.runtime.outbox import AlertOutbox
from streams.runtime.sink import PointSink, WriteProblem

ALERT_STATUSES = ("raised", "cleared")

# a check older than this no longer counts (the contract of /readyz: "within the last 15 s")
READY_WITHIN_S = 15.0


class ConsumerView(Protocol):
    """What the metrics need of the Kafka consumer (Faust's, in the worker)."""

    def assignment(self) -> Iterable[tuple[str, int]]: ...
    def highwater(self, topic: str, partition: int) -> int | None: ...
    def read_offset(self, topic: str, partition: int) -> int | None: ...
    def committed_offset(self, topic: str, partition: int) -> int | None: ...


def open_windows(aggregate: WindowedAggregate | None) -> int:
    """How many windows an aggregate holds in memory."""
    if aggregate is None:
        return 0
    count = 0
    for name in ("windows", "minutes", "hours"):  # cells; station minutes and hours
        held = getattr(aggregate, name, None)
        if isinstance(held, Mapping):
            count += len(held)
    lots = getattr(aggregate, "lots", None)  # a lot's windows are its minutes with changes
    if isinstance(lots, Mapping):
        count += sum(len(getattr(lot, "changes", ())) for lot in lots.values())
    return count


def consumer_lag(highwater: int | None, processed_offset: int | None) -> int | None:
    """Messages after the last one processed, up to the partition's end (never negative)."""
    if highwater is None:
        return None
    position = 0 if processed_offset is None else processed_offset + 1
    return max(0, highwater - position)


def committed_lag(highwater: int | None, committed: int | None) -> int | None:
    """Messages from the committed offset (the next one a restart reads) to the partition's end."""
    if highwater is None:
        return None
    return max(0, highwater - (committed or 0))


@dataclass
class Readiness:
    """What ``/readyz`` answers: recent successful checks of Kafka and InfluxDB, and partitions held."""

    within_s: float = READY_WITHIN_S
    clock: Callable[[], float] = time.monotonic
    broker_ok_at: float | None = None
    influx_ok_at: float | None = None
    broker_error: str = "not checked yet"
    influx_error: str = "not checked yet"
    # the consumer group has assigned this worker its partitions (perhaps none) and is not rebalancing
    settled: Callable[[], bool] = lambda: False
    assigned: Callable[[], int] = lambda: 0
    # the InfluxDB writes' problems: the sinks' WriteProblem (streams.clients.influx), when a write keeps failing
    write_problems: Callable[[], Sequence[WriteProblem]] = lambda: ()

    def broker_checked(self, ok: bool, error: str = "") -> None:
        if ok:
            self.broker_ok_at = self.clock()
        else:
            self.broker_error = error or "no answer"

    def influx_checked(self, ok: bool, error: str = "") -> None:
        if ok:
            self.influx_ok_at = self.clock()
        else:
            self.influx_error = error or "no answer to /ping"

    def failures(self) -> dict[str, str]:
        """Each failing check and why; empty when ready."""
        now = self.clock()
        failed: dict[str, str] = {}
        for name, at, error in (
            ("kafka", self.broker_ok_at, self.broker_error),
            ("influxdb", self.influx_ok_at, self.influx_error),
        ):
            if at is None:
                failed[name] = f"never reachable: {error}"
            elif now - at > self.within_s:
                failed[name] = f"not reachable for {now - at:.0f} s: {error}"
        if not self.settled():
            failed["partitions"] = "the consumer group has not assigned partitions yet (joining or rebalancing)"
        writes = self._writes_failing(now)
        if writes:
            failed["influxdb_writes"] = writes
        return failed

    def _writes_failing(self, now: float) -> str:
        """A write refused for a setting fails at once; any other failure after ``within_s``."""
        reasons = []
        for problem in self.write_problems():
            if problem.setting is not None:
                reasons.append(f"writes refused, check {problem.setting}: {problem.error}")
            elif now - problem.since > self.within_s:
                reasons.append(f"writes failing for {now - problem.since:.0f} s: {problem.error}")
        return "; ".join(reasons)

    def report(self) -> tuple[bool, dict[str, Any]]:
        failed = self.failures()
        body: dict[str, Any] = {"ready": not failed, "assigned_partitions": self.assigned()}
        if failed:
            body["failed"] = failed
        return not failed, body


class CheckpointView(Protocol):
    """What the metrics read of the checkpoints (:class:`streams.runtime.checkpoint.Checkpointer`)."""

    checkpoints: int
    last_checkpoint_s: float
    last_snapshots_s: float


@dataclass
class MetricSources:
    """Where the figures live; every field is read at scrape time."""

    ingest: IngestStats
    sinks: Sequence[PointSink]
    dropped: Mapping[str, Counter[str]]  # stream kind -> {duplicate, late} counts
    outbox: AlertOutbox | None = None
    works: Callable[[], Iterable[PartitionWork]] = lambda: ()
    checkpointer: CheckpointView | None = None
    consumer: ConsumerView | None = None
    readiness: Readiness = field(default_factory=Readiness)
    wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000


class WorkerCollector(Collector):
    """Every ``citystream_*`` metric of the operations spec, from :class:`MetricSources`."""

    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        yield from self._ingest()
        yield from self._windows()
        yield from self._influx()
        yield from self._alerts()
        yield from self._partitions()
        yield from self._checkpoints()

    def _checkpoints(self) -> Iterator[Metric]:
        checkpointer = self.sources.checkpointer  # None before the worker runs: every figure 0
        yield CounterMetricFamily(
            "citystream_checkpoints",
            "Checkpoints completed (points written, state saved, offsets committed).",
            value=checkpointer.checkpoints if checkpointer is not None else 0,
        )
        yield GaugeMetricFamily(
            "citystream_checkpoint_seconds",
            "Duration of the last checkpoint, from its start until its messages were acknowledged.",
            value=checkpointer.last_checkpoint_s if checkpointer is not None else 0.0,
        )
        yield GaugeMetricFamily(
            "citystream_checkpoint_snapshot_seconds",
            "Of the last checkpoint, the time taken by the partitions' window points and snapshots (the event "
            "loop runs between two partitions).",
            value=checkpointer.last_snapshots_s if checkpointer is not None else 0.0,
        )

    def _ingest(self) -> Iterator[Metric]:
        stats = self.sources.ingest
        messages = CounterMetricFamily("citystream_messages", "Source messages read.", labels=["topic"])
        valid = CounterMetricFamily("citystream_readings_valid", "Valid readings.", labels=["kind"])
        for kind in SourceKind:
            messages.add_metric([kind.topic], stats.messages.get(kind.value, 0))
            valid.add_metric([kind.value], stats.readings_valid.get(kind.value, 0))
        letters = CounterMetricFamily("citystream_dead_letters", "Dead letters published.", labels=["reason"])
        reasons = [reason.value for reason in DeadLetterReason]
        for reason in [*reasons, *sorted(set(stats.dead_letters) - set(reasons))]:
            letters.add_metric([reason], stats.dead_letters.get(reason, 0))
        yield from (messages, valid, letters)

    def _windows(self) -> Iterator[Metric]:
        dropped = self.sources.dropped
        duplicates = CounterMetricFamily("citystream_duplicates", "Readings dropped as duplicates.", labels=["kind"])
        late = CounterMetricFamily(
            "citystream_late_readings",
            "Readings dropped as later than the maximum lateness (stored raw, aggregated nowhere).",
            labels=["kind"],
        )
        for kind in SourceKind:
            counts = dropped.get(kind.value, Counter())
            duplicates.add_metric([kind.value], counts.get(DUPLICATE, 0))
            late.add_metric([kind.value], counts.get(LATE, 0))
        yield from (duplicates, late)

    def _influx(self) -> Iterator[Metric]:
        sinks = self.sources.sinks
        stats = [sink.stats for sink in sinks]
        yield CounterMetricFamily(
            "citystream_points_written", "Points InfluxDB accepted.", value=sum(s.points_written for s in stats)
        )
        cumulative, buckets = 0, []
        for index, bound in enumerate((*WRITE_SECONDS_BUCKETS, float("inf"))):
            cumulative += sum(s.write_buckets[index] for s in stats)
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
        yield HistogramMetricFamily(
            "citystream_influx_write_seconds",
            "Duration of one successful InfluxDB write.",
            buckets=buckets,
            sum_value=sum(s.write_seconds for s in stats),
        )
        yield CounterMetricFamily(
            "citystream_influx_write_retries", "Failed writes retried.", value=sum(s.write_retries for s in stats)
        )
        rejected = CounterMetricFamily(
            "citystream_influx_points_rejected",
            "Points InfluxDB refused for good, by reason: invalid (400), retention (422), too_large (413).",
            labels=["reason"],
        )
        rejected_by: Counter[str] = Counter()
        for s in stats:
            rejected_by.update(s.points_rejected)
        for reason in [*REJECTED_REASONS, *sorted(set(rejected_by) - set(REJECTED_REASONS))]:
            rejected.add_metric([reason], rejected_by.get(reason, 0))
        yield rejected
        yield GaugeMetricFamily(
            "citystream_influx_write_failing",
            "1 while a write to InfluxDB keeps failing (retried), else 0.",
            value=1 if any(sink.problem is not None for sink in sinks) else 0,
        )
        yield GaugeMetricFamily(
            "citystream_influx_pending_points",
            "Points buffered, not yet written.",
            value=sum(sink.pending_points for sink in sinks),
        )

    def _alerts(self) -> Iterator[Metric]:
        alerts = CounterMetricFamily("citystream_alerts", "Alerts published.", labels=["kind", "status"])
        published = self.sources.outbox.published_by if self.sources.outbox is not None else Counter()
        kinds = [*ALERT_KINDS, *sorted({kind for kind, _ in published} - set(ALERT_KINDS))]
        for kind in kinds:
            for status in ALERT_STATUSES:
                alerts.add_metric([kind, status], published.get((kind, status), 0))
        yield alerts

    def _partitions(self) -> Iterator[Metric]:
        sources = self.sources
        works = {(work.topic, work.partition): work for work in sources.works()}
        now_ms = sources.wall_ms()
        lag = GaugeMetricFamily(
            "citystream_consumer_lag",
            "Messages from the committed offset (what a restart would read again) to the partition's end.",
            labels=["topic", "partition"],
        )
        fetch_lag = GaugeMetricFamily(
            "citystream_fetch_lag",
            "Messages between the last one the worker fetched and processed and the partition's end.",
            labels=["topic", "partition"],
        )
        assigned = sorted(sources.consumer.assignment()) if sources.consumer is not None else []
        for topic, partition in assigned:
            assert sources.consumer is not None
            highwater = sources.consumer.highwater(topic, partition)
            work = works.get((topic, partition))
            processed = work.last_offset if work is not None and work.last_offset >= 0 else None
            if processed is None:
                processed = sources.consumer.read_offset(topic, partition)
            value = consumer_lag(highwater, processed)
            if value is not None:
                fetch_lag.add_metric([topic, str(partition)], value)
            value = committed_lag(highwater, sources.consumer.committed_offset(topic, partition))
            if value is not None:
                lag.add_metric([topic, str(partition)], value)
        yield lag
        yield fetch_lag
        delay = GaugeMetricFamily(
            "citystream_watermark_delay_seconds",
            "Wall clock minus the partition's event-time watermark.",
            labels=["topic", "partition"],
        )
        windows: Counter[str] = Counter()
        snapshots: dict[str, int] = {}
        for (topic, partition), work in sorted(works.items()):
            aggregate = work.aggregate
            if aggregate is None:
                continue
            windows[topic] += open_windows(aggregate)
            snapshots[topic] = max(snapshots.get(topic, 0), work.snapshot_bytes)
            watermark = aggregate.clock.watermark_ms if work.progress is None else work.progress.watermark_ms(now_ms)
            if watermark is not None:
                delay.add_metric([topic, str(partition)], (now_ms - watermark) / 1000)
        yield delay
        held = GaugeMetricFamily("citystream_open_windows", "Windows held in memory.", labels=["topic"])
        for topic in sorted(windows):
            held.add_metric([topic], windows[topic])
        yield held
        largest = GaugeMetricFamily(
            "citystream_snapshot_bytes",
            "The largest newest snapshot among the partitions of a topic this worker holds, as saved to "
            "its state topic (compressed); it must stay well under the state topic's max.message.bytes.",
            labels=["topic"],
        )
        for topic in sorted(snapshots):
            largest.add_metric([topic], snapshots[topic])
        yield largest
        yield GaugeMetricFamily("citystream_assigned_partitions", "Partitions this worker holds.", value=len(assigned))
        ready, _ = sources.readiness.report()
        yield GaugeMetricFamily("citystream_ready", "1 when /readyz would answer 200.", value=1 if ready else 0)


def worker_registry(sources: MetricSources) -> CollectorRegistry:
    """A registry of its own (not the process-wide default) holding the worker's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(sources))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text format of ``/metrics``."""
    return generate_latest(registry)
