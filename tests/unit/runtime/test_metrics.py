"""The Prometheus collector: the exposition after known work of the pure classes, and readiness."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from types import SimpleNamespace

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.alert import Alert, AlertSubject
from schemas.readings import EnvReading, SourceKind
from streams.clients.influx import WRITE_SECONDS_BUCKETS, WriteFailed
from streams.core.decode import SourceMessage, TimeLimits
from streams.core.ingest import Ingestor
from streams.core.registry import Registry
from streams.core.windows import DUPLICATE, LATE, WindowPolicy
from streams.kinds import environment
from streams.runtime.checkpoint import PartitionWork
from streams.runtime.metrics import (
    MetricSources,
    Readiness,
    committed_lag,
    consumer_lag,
    exposition,
    open_windows,
    worker_registry,
)
from streams.runtime.outbox import AlertOutbox
from streams.runtime.sink import PointSink, WriteProblem

NOW_MS = 1_795_000_000_000
ENV_TOPIC = SourceKind.ENVIRONMENT.topic


class FlakyWriter:
    """Fails the first write (retryable), stores the others."""

    description = "test writer"

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.failures = 1

    async def open(self) -> None: ...
    async def ping(self) -> bool:
        return True

    async def prepare(self) -> None: ...
    async def write(self, body: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise WriteFailed("InfluxDB answered 503", status=503, retry_after_s=0.0)
        self.bodies.append(body)

    async def close(self) -> None: ...


class Consumer:
    def __init__(
        self,
        highwaters: dict[tuple[str, int], int],
        read: dict[tuple[str, int], int],
        committed: dict[tuple[str, int], int] | None = None,
    ) -> None:
        self.highwaters, self.read, self.committed = highwaters, read, committed or {}

    def assignment(self) -> Iterable[tuple[str, int]]:
        return list(self.highwaters)

    def highwater(self, topic: str, partition: int) -> int | None:
        return self.highwaters[(topic, partition)]

    def read_offset(self, topic: str, partition: int) -> int | None:
        return self.read.get((topic, partition))

    def committed_offset(self, topic: str, partition: int) -> int | None:
        return self.committed.get((topic, partition))


def env_message(device: str, seq: int, ts_ms: int, pm25: float) -> bytes:
    return orjson.dumps({"device_id": device, "ts": ts_ms, "seq": seq, "pm25_ugm3": pm25})


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(series: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return series[(name, tuple(sorted(labels.items())))]


def test_exposition_after_known_work() -> None:
    registry = Registry()
    ingestor = Ingestor(registry, TimeLimits(), clock_ms=lambda: NOW_MS)
    source = SourceMessage(ENV_TOPIC, 0, 0, b"env-1", NOW_MS)
    readings = []
    for value_bytes in (
        env_message("env-1", 1, NOW_MS - 60_000, 12.0),
        env_message("env-1", 1, NOW_MS - 60_000, 12.0),  # a duplicate
        env_message("env-1", 2, NOW_MS - 3_600_000, 15.0),  # late: an hour behind the watermark
        b"{not json",
        orjson.dumps({"device_id": "env-2", "ts": NOW_MS, "pm25_ugm3": 5000}),  # schema: out of range
        orjson.dumps({"batch": [{"device_id": "env-3", "ts": NOW_MS, "pm25_ugm3": 9.0}, 7]}),
    ):
        readings += ingestor.ingest(environment.KIND, source, value_bytes).readings

    policy = WindowPolicy(max_lateness_ms=600_000)
    aggregate = environment.StationAggregate(policy, registry)
    dropped = {kind.value: Counter[str]() for kind in SourceKind}
    aggregate.dropped = dropped[SourceKind.ENVIRONMENT.value]  # as the worker shares it
    stations = [r for r in readings if isinstance(r, EnvReading)]
    assert len(stations) == len(readings) == 4
    verdicts = [aggregate.fold(environment.StationSample.of(r, registry), NOW_MS) for r in stations]
    assert verdicts.count(DUPLICATE) == 1 and verdicts.count(LATE) == 1
    work = PartitionWork(ENV_TOPIC, 0, aggregate)
    work.last_offset = 6
    blob = work.snapshot({})

    sink = PointSink(FlakyWriter(), batch_size=100, interval_s=1.0, max_pending=10_000)
    alerts_sink = PointSink(FlakyWriter(), batch_size=100, interval_s=1.0, max_pending=10_000)
    alerts_sink.writer.failures = 0  # type: ignore[attr-defined]

    async def send(topic: str, key: bytes | None, value: bytes, partition: int) -> asyncio.Future[object]:
        delivered: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    outbox = AlertOutbox("city.alerts.v1", 4, send, alerts_sink, lambda alert: "alerts value=1 1", [])

    def alert(status: str) -> Alert:
        return Alert(
            alert_id="air.o3_advisory:env-1:2026-11-21T09:00:00Z",
            kind="air.o3_advisory",
            status=status,  # type: ignore[arg-type]
            severity="warning",
            subject=AlertSubject(type="station", id="env-1"),
            window_start="2026-11-21T09:00:00Z",
            window_end="2026-11-21T10:00:00Z",
            value=0.13,
            threshold=0.12,
            message="O3",
            emitted_at="2026-11-21T10:00:01Z",
        )

    async def run() -> None:
        sink.add(aggregate.take_lines())
        sink.add(["environment pm25_ugm3=1 1", "environment pm25_ugm3=2 2"])
        await sink.flush()
        await outbox.publish([alert("raised"), alert("cleared")])
        await outbox.flush()
        sink.add(["environment pm25_ugm3=3 3"])  # still pending at the scrape

    asyncio.run(run())
    written = sum(body.count(b"\n") + 1 for body in sink.writer.bodies)  # type: ignore[attr-defined]

    readiness = Readiness(clock=lambda: 100.0, settled=lambda: True, assigned=lambda: 2)
    readiness.broker_checked(True)
    readiness.influx_checked(True)
    sources = MetricSources(
        ingest=ingestor.stats,
        sinks=[sink, alerts_sink],
        dropped=dropped,
        outbox=outbox,
        works=lambda: [work],
        consumer=Consumer({(ENV_TOPIC, 0): 10, (ENV_TOPIC, 1): 5}, {(ENV_TOPIC, 1): 4}, {(ENV_TOPIC, 0): 2}),
        readiness=readiness,
        wall_ms=lambda: NOW_MS,
        checkpointer=SimpleNamespace(checkpoints=3, last_checkpoint_s=0.25, last_snapshots_s=0.0625),
    )
    text = exposition(worker_registry(sources)).decode()
    series = samples(text)

    assert value(series, "citystream_messages_total", topic=ENV_TOPIC) == 6
    assert value(series, "citystream_messages_total", topic=SourceKind.TAXI.topic) == 0
    assert value(series, "citystream_readings_valid_total", kind="environment") == 4  # 3 of env-1, env-3
    assert value(series, "citystream_dead_letters_total", reason="malformed_json") == 1
    assert value(series, "citystream_dead_letters_total", reason="schema") == 1
    assert value(series, "citystream_dead_letters_total", reason="not_an_object") == 1  # the batch's 7
    assert value(series, "citystream_dead_letters_total", reason="not_utf8") == 0
    assert value(series, "citystream_duplicates_total", kind="environment") == 1
    assert value(series, "citystream_late_readings_total", kind="environment") == 1
    assert value(series, "citystream_duplicates_total", kind="taxi") == 0
    # both sinks: the environment points and the two alert points
    assert value(series, "citystream_points_written_total") == written + 2
    assert value(series, "citystream_influx_write_retries_total") == 1
    assert value(series, "citystream_influx_pending_points") == 1
    # one per successful write: the environment points after their retry, the two alerts
    assert value(series, "citystream_influx_write_seconds_count") == 2
    assert value(series, "citystream_influx_write_seconds_bucket", le="+Inf") == 2
    assert value(series, "citystream_influx_write_seconds_bucket", le=repr(WRITE_SECONDS_BUCKETS[-1])) == 2
    assert 0 < value(series, "citystream_influx_write_seconds_sum") < 5
    assert value(series, "citystream_alerts_total", kind="air.o3_advisory", status="raised") == 1
    assert value(series, "citystream_alerts_total", kind="air.o3_advisory", status="cleared") == 1
    assert value(series, "citystream_alerts_total", kind="parking.lot_full", status="raised") == 0
    assert value(series, "citystream_fetch_lag", topic=ENV_TOPIC, partition="0") == 3  # offsets 7, 8, 9
    assert value(series, "citystream_fetch_lag", topic=ENV_TOPIC, partition="1") == 0
    # from the committed offsets: what a restart would read again (nothing committed on partition 1)
    assert value(series, "citystream_consumer_lag", topic=ENV_TOPIC, partition="0") == 8  # offsets 2 to 9
    assert value(series, "citystream_consumer_lag", topic=ENV_TOPIC, partition="1") == 5
    watermark = aggregate.clock.watermark_ms
    assert watermark is not None
    assert value(series, "citystream_watermark_delay_seconds", topic=ENV_TOPIC, partition="0") == pytest.approx(
        (NOW_MS - watermark) / 1000
    )
    # env-1 and env-3: a minute window and an hour window each
    assert value(series, "citystream_open_windows", topic=ENV_TOPIC) == open_windows(aggregate) == 4
    # the size of the snapshot the partition's last checkpoint saved
    assert value(series, "citystream_snapshot_bytes", topic=ENV_TOPIC) == len(blob) > 0
    assert value(series, "citystream_assigned_partitions") == 2
    assert value(series, "citystream_ready") == 1
    assert value(series, "citystream_checkpoints_total") == 3
    assert value(series, "citystream_checkpoint_seconds") == 0.25
    assert value(series, "citystream_checkpoint_snapshot_seconds") == 0.0625
    assert "# TYPE citystream_influx_write_seconds histogram" in text
    assert "# TYPE citystream_consumer_lag gauge" in text


def test_write_durations_fall_in_cumulative_buckets() -> None:
    sink = PointSink(FlakyWriter(), batch_size=10, interval_s=1.0, max_pending=1_000)
    for seconds in (0.005, 0.006, 0.3, 100.0):
        sink.stats.observe_write(2, seconds)
    series = samples(exposition(worker_registry(MetricSources(ingest=Ingestor(Registry(), TimeLimits()).stats,
                                                              sinks=[sink], dropped={}))).decode())  # fmt: skip
    bucket = {
        le: value(series, "citystream_influx_write_seconds_bucket", le=le)
        for le in ("0.005", "0.01", "0.5", "30.0", "+Inf")
    }
    assert bucket == {"0.005": 1, "0.01": 2, "0.5": 3, "30.0": 3, "+Inf": 4}
    assert value(series, "citystream_influx_write_seconds_sum") == pytest.approx(100.311)
    assert value(series, "citystream_points_written_total") == 8


def test_each_registry_is_its_own() -> None:
    first = Ingestor(Registry(), TimeLimits())
    second = Ingestor(Registry(), TimeLimits())
    first.stats.messages["taxi"] += 5

    def scrape(ingestor: Ingestor) -> float:
        sources = MetricSources(ingest=ingestor.stats, sinks=[], dropped={})
        return value(samples(exposition(worker_registry(sources)).decode()), "citystream_messages_total",
                     topic=SourceKind.TAXI.topic)  # fmt: skip

    assert scrape(first) == 5 and scrape(second) == 0


def test_consumer_lag_never_negative() -> None:
    assert consumer_lag(None, 3) is None
    assert consumer_lag(10, None) == 10  # nothing read: all of it
    assert consumer_lag(10, 9) == 0
    assert consumer_lag(10, 12) == 0  # an end offset that undercounts (Tansu)


def test_committed_lag_counts_from_the_next_offset_a_restart_reads() -> None:
    assert committed_lag(None, 3) is None
    assert committed_lag(10, None) == 10  # nothing committed (Faust keeps 0 as None): all of it
    assert committed_lag(10, 3) == 7  # offsets 3 to 9 are read again after a restart
    assert committed_lag(10, 10) == 0
    assert committed_lag(10, 12) == 0  # an end offset that undercounts (Tansu)


def test_readiness_names_the_setting_of_a_refused_write_at_once_and_other_failures_after_a_while() -> None:
    now = [1000.0]
    problems: list[WriteProblem] = []
    readiness = Readiness(clock=lambda: now[0], settled=lambda: True, write_problems=lambda: problems)
    readiness.broker_checked(True)
    readiness.influx_checked(True)
    assert readiness.report()[0]

    problems.append(WriteProblem(since=now[0], error="InfluxDB answered 503: busy"))
    now[0] += 10
    assert readiness.report()[0]  # retried for 10 s: still within 15 s
    now[0] += 6
    readiness.broker_checked(True)
    readiness.influx_checked(True)  # InfluxDB answers its ping, yet writes fail
    ready, body = readiness.report()
    assert not ready and body["failed"] == {"influxdb_writes": "writes failing for 16 s: InfluxDB answered 503: busy"}

    problems[:] = [WriteProblem(since=now[0], error="InfluxDB answered 401", setting="CITYSTREAM_INFLUX_TOKEN")]
    ready, body = readiness.report()
    assert not ready and "check CITYSTREAM_INFLUX_TOKEN" in body["failed"]["influxdb_writes"]
    problems.clear()
    assert readiness.report()[0]


def test_readiness_names_each_failed_check() -> None:
    now = [1000.0]
    settled = [False]
    readiness = Readiness(clock=lambda: now[0], settled=lambda: settled[0], assigned=lambda: 0)
    ready, body = readiness.report()
    assert not ready and set(body["failed"]) == {"kafka", "influxdb", "partitions"}
    assert "never reachable" in body["failed"]["kafka"]

    readiness.broker_checked(True)
    readiness.influx_checked(True)
    settled[0] = True
    assert readiness.report() == (True, {"ready": True, "assigned_partitions": 0})  # settled with none

    now[0] += 10
    readiness.influx_checked(False, "no answer to /ping from InfluxDB")
    assert readiness.report()[0]  # the last answer is 10 s old: still within 15 s
    now[0] += 6
    readiness.broker_checked(True)
    ready, body = readiness.report()
    assert not ready and list(body["failed"]) == ["influxdb"]
    assert body["failed"]["influxdb"] == "not reachable for 16 s: no answer to /ping from InfluxDB"
