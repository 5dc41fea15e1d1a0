"""How the bench measures: InfluxDB counts, /metrics, percentiles, the local stack and the baseline loop."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import re
import shutil
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from aiokafka import AIOKafkaProducer

from streams.clients.influx import InfluxQLReader
from streams.clients.kafka import contract_topics, ensure_topics, read_range
from streams.tools import localstack
from streams.tools.bench.load import DATABASE, MODELS, PARTITIONS, RAW_FIELDS, Message
from streams.tools.localstack import ManagedService, free_port
from streams.tools.workerprocess import WorkerProcess


def influx_query(url: str, query: str) -> list[dict[str, Any]]:
    return InfluxQLReader(url, DATABASE, timeout_s=60).query(query)


def raw_points(url: str) -> int:
    total = 0
    for measurement, field_name in RAW_FIELDS.items():
        series = influx_query(url, f'SELECT count("{field_name}") FROM "{measurement}"')
        total += int(series[0]["values"][0][1]) if series else 0
    return total


def _samples(text: str, name: str) -> Iterator[float]:
    """The values of a metric's samples in a Prometheus exposition."""
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            yield float(line.rsplit(" ", 1)[1])


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus exposition."""
    return sum(_samples(text, name), 0.0)


def largest(text: str, name: str) -> float:
    """The largest of a metric's samples in a Prometheus exposition (0 when it has none)."""
    return max(_samples(text, name), default=0.0)


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


ALERT_LATENCY = re.compile(r"alert latency from final window to topic: (\{.*\})")


def alert_latency(log: str) -> dict[str, float]:
    """The worker's own summary of alert latency, logged at shutdown."""
    found = ALERT_LATENCY.findall(log)
    return ast.literal_eval(found[-1]) if found else {}


# the stack and the worker ------------------------------------------------------------------------


@dataclass
class Stack:
    kafka: ManagedService
    influx: ManagedService

    @classmethod
    def start(cls, root: Path, broker: str = "tansu") -> Stack:
        """A fresh stack under ``root``: Tansu, or with ``broker="kafka"`` an Apache Kafka KRaft node."""
        shutil.rmtree(root, ignore_errors=True)
        if broker == "kafka":
            kafka = localstack.apache_kafka(free_port(), root / "kafka")
        else:
            kafka = localstack.tansu(free_port(), root / "tansu")
        influx = localstack.influxdb(free_port(), root / "influxdb")
        kafka.start(timeout=60)
        influx.start(timeout=60)
        localstack.create_database(influx.url, DATABASE)
        return cls(kafka, influx)

    def stop(self) -> None:
        self.kafka.stop()
        self.influx.stop()


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` free loopback ports in a row."""
    for _ in range(100):
        first = free_port()
        if all(_bindable(first + i) for i in range(1, count)):
            return first
    raise RuntimeError(f"no {count} free ports in a row")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_worker(
    stack: Stack, root: Path, extra: Mapping[str, str], processes: int = 1
) -> tuple[WorkerProcess, list[int]]:
    """``citystream worker`` (with ``--processes`` when more than one) and the web ports it serves."""
    port = consecutive_free_ports(processes)
    env = {
        "CITYSTREAM_KAFKA_BOOTSTRAP": stack.kafka.address,
        "CITYSTREAM_INFLUX_URL": stack.influx.url,
        "CITYSTREAM_INFLUX_DB": DATABASE,
        "CITYSTREAM_APP_ID": "bench",
        "CITYSTREAM_WEB_PORT": str(port),
        "CITYSTREAM_SOURCE_PARTITIONS": str(PARTITIONS),
        "CITYSTREAM_KAFKA_REBALANCE_TIMEOUT_S": "3",
        "CITYSTREAM_LOG_LEVEL": "warning",
        "CITYSTREAM_DATA_DIR": str(root / "worker"),
        **extra,
    }
    args = ["--processes", str(processes)] if processes > 1 else []
    worker = WorkerProcess(root / "worker", env, root / "worker.log", args=args).start()
    return worker, [port + i for i in range(processes)]


def scrape_all(ports: list[int]) -> str:
    """The /metrics of every process, one exposition after the other (the samples add up)."""
    return "\n".join(scrape(port) for port in ports)


async def produce_all(bootstrap: str, messages: Iterator[Message], on_sent: Callable[[int], None]) -> int:
    await ensure_topics(bootstrap, contract_topics(PARTITIONS))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    count = 0
    try:
        pending = []
        for topic, key, value in messages:
            pending.append(await producer.send(topic, value, key=key))
            count += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                on_sent(count)
        await asyncio.gather(*pending)
        on_sent(count)
    finally:
        await producer.stop()
    return count


@dataclass(frozen=True)
class Baseline:
    """The bare validation loop: its rate, and the CPU (user + system) it spent per reading."""

    readings_per_s: float
    cpu_us_per_reading: float


async def baseline(bootstrap: str, readings: int, timeout_s: float = 300) -> Baseline:
    """aiokafka getmany + orjson + pydantic over the source topics, from the start: readings/s and
    CPU per reading (this process's, from the first fetched batch to the last reading)."""
    loads, validators = orjson.loads, {topic: model.model_validate for topic, model in MODELS.items()}
    seen, started, cpu_started = 0, None, 0.0
    deadline = time.monotonic() + timeout_s
    # every reading is on the topics already: the read ends at their end offsets (quiet_s only guards a stall)
    # no max_records: Tansu reports a partition's end inside its last batch, which must come whole
    batches = read_range(bootstrap, list(MODELS), partitions=range(PARTITIONS), quiet_s=30)
    async with contextlib.aclosing(batches):
        async for records in batches:
            if started is None:
                started, cpu_started = time.perf_counter(), time.process_time()
            validate = validators[records[0].topic]
            for record in records:
                document = loads(record.value)
                for reading in document.get("batch", (document,)):
                    validate(reading)
                    seen += 1
            if seen >= readings or time.monotonic() >= deadline:
                break
    if started is None or seen < readings:
        raise RuntimeError(f"the baseline read {seen} of {readings} readings")
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    return Baseline(readings / seconds, cpu_s / seen * 1e6)


def _tree(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process and its children (worker processes) have used so far."""
    total = 0.0
    for process in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def rss_mb_tree(pid: int) -> float:
    """Resident memory of a process and its children, MiB."""
    total = 0
    for process in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total / (1 << 20)


@dataclass
class Throughput:
    readings_per_s: float
    processed_per_s: float
    baseline_per_s: float
    peak_rss_mb: float
    points: int
    seconds: float
    # the largest snapshot a partition saved to its state topic, with every reading in the state
    snapshot_bytes: float = 0.0
    # CPU (user + system) per reading: the worker's while it processed, the baseline loop's
    worker_cpu_us: float = 0.0
    baseline_cpu_us: float = 0.0
    # how long the worker took to answer /metrics while it worked through the backlog
    scrape_ms: list[float] = field(default_factory=list)


@dataclass
class Latency:
    probes: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)
    sent: int = 0
    started: float = 0.0
    peak_rss_mb: float = 0.0
    alerts: dict[str, float] = field(default_factory=dict)
    # every second of the load: seconds since it started, the worker's last checkpoint and, of it,
    # the snapshots (citystream_checkpoint_seconds, citystream_checkpoint_snapshot_seconds)
    checkpoints: list[tuple[float, float, float]] = field(default_factory=list)
    lost: int = 0  # probes not in InfluxDB a few seconds after the load stopped
    seconds: float = 0.0  # how long the load ran

    def p99_s(self) -> float:
        """The 99th percentile of the probes' latency; a probe that never landed counts as endless."""
        values = self.probes + [float("inf")] * self.lost
        return percentile(values, 0.99) if values else float("inf")


@dataclass
class RampStep:
    """One rate of the capacity ramp: what was asked, what was sent, and the latency it had."""

    rate: float
    sent_per_s: float
    p99_s: float
    p50_s: float
    probes: int
    lost: int

    def held(self, limit_s: float) -> bool:
        """Whether the worker sustained the rate: the load was sent in full and p99 stayed under the limit."""
        return self.sent_per_s >= 0.95 * self.rate and self.p99_s <= limit_s
