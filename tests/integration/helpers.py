"""Helpers of the integration tests: a real worker process, producing, reading back InfluxDB."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streams.clients.kafka import contract_topics, ensure_topics
from streams.tools.localstack import free_port
from streams.tools.workerprocess import WorkerProcess

SOURCE_PARTITIONS = 4
"""``CITYSTREAM_SOURCE_PARTITIONS`` of :func:`worker_env`."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def unique(name: str) -> str:
    """``name`` with a random suffix: a database (and consumer group) no other test run has used.

    The session's InfluxDB serves the tests of both brokers: a fixed name would mix one broker's
    points into the other's counts and windows."""
    return f"{name}_{uuid.uuid4().hex[:8]}"


def worker_env(kafka_bootstrap: str, influx_url: str, database: str, **extra: str) -> dict[str, str]:
    env = {
        "CITYSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CITYSTREAM_INFLUX_URL": influx_url,
        "CITYSTREAM_INFLUX_DB": database,
        "CITYSTREAM_APP_ID": f"test-{database}",
        "CITYSTREAM_WEB_PORT": str(free_port()),
        "CITYSTREAM_SOURCE_PARTITIONS": str(SOURCE_PARTITIONS),
        "CITYSTREAM_WRITE_INTERVAL_S": "0.2",
        "CITYSTREAM_KAFKA_REBALANCE_TIMEOUT_S": "3",
        "CITYSTREAM_KAFKA_SESSION_TIMEOUT_S": "10",
        "CITYSTREAM_STARTUP_TIMEOUT_S": "30",
        "CITYSTREAM_LOG_LEVEL": "info",
    }
    env.update(extra)
    return env


async def create_topics(bootstrap: str, partitions: int = SOURCE_PARTITIONS) -> None:
    """Create the contract's missing topics, as a worker does when it starts: Apache Kafka creates no
    topic on its first message (Tansu does), so a test that produces before a worker has started, or
    while one is starting, creates them first."""
    await ensure_topics(bootstrap, contract_topics(partitions), timeout_s=30)


async def produce(bootstrap: str, messages: Iterable[tuple[str, bytes | None, bytes | None]]) -> int:
    """Send (topic, key, value) messages and wait until all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        futures = [await producer.send(topic, key=key, value=value) for topic, key, value in messages]
        await asyncio.gather(*futures)
        sent = len(futures)
    finally:
        await producer.stop()
    return sent


def encode(document: Any) -> bytes:
    return orjson.dumps(document)


async def read_topic(bootstrap: str, topic: str, *, expected: int, timeout: float = 60) -> list[Any]:
    """Read a topic from the beginning until ``expected`` messages or the timeout."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


def influx_query(url: str, database: str, query: str) -> list[dict[str, Any]]:
    """Run an InfluxQL query; return its series (possibly empty)."""
    params = urllib.parse.urlencode({"db": database, "q": query, "epoch": "ms"})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=10) as response:
        document = json.loads(response.read())
    result = document["results"][0]
    if result.get("error", "").startswith("database not found"):
        return []  # the worker creates it when it starts
    assert "error" not in result, result
    return result.get("series", [])


def influx_rows(url: str, database: str, query: str) -> list[dict[str, Any]]:
    """Rows of a query as dicts (tags included), across series."""
    rows = []
    for series in influx_query(url, database, query):
        tags = series.get("tags", {})
        for values in series["values"]:
            row = dict(zip(series["columns"], values, strict=True))
            row.update(tags)
            rows.append(row)
    return rows


def count_points(url: str, database: str, measurement: str, field: str, where: str = "") -> int:
    condition = f" WHERE {where}" if where else ""
    series = influx_query(url, database, f'SELECT count("{field}") FROM "{measurement}"{condition}')
    return int(series[0]["values"][0][1]) if series else 0


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, worker: WorkerProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if worker is not None and not worker.alive():
            raise AssertionError(f"the worker exited while waiting for {what}:\n{worker.log()[-3000:]}")
        time.sleep(0.3)
    log = worker.log()[-3000:] if worker is not None else ""
    raise AssertionError(f"timed out waiting for {what}\n{log}")


def dead_letter_reasons(records: list[Any]) -> Counter[str]:
    return Counter(orjson.loads(record.value)["reason"] for record in records)


Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str) -> tuple[int, bytes]:
    """GET a URL: its status and body, an error status included; 0 while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError) as error:
        return 0, str(error).encode()


def scrape(port: int) -> Series:
    """A worker's /metrics as {(sample name, labels): value}."""
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def metric(series: Series, name: str, **labels: str) -> float:
    return series.get((name, tuple(sorted(labels.items()))), -1.0)


def samples_of(series: Series, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (sample, labels), value in series.items() if sample == name}
