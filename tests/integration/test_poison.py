"""No message and no database answer may stop a partition: real workers, a real broker, real answers.

* messages that crashed the worker on every restart (a batch element nested 300 levels deep, a
  3 MiB message of control characters sent gzip-compressed) are dead-lettered, and every reading
  behind them arrives in InfluxDB 1.6.7;
* InfluxDB 2.x answers, from a small HTTP server of the test's own that answers ``/api/v2/write`` as
  InfluxDB 2.x does: 422 for points outside the retention period (the others are stored), and 401
  for a wrong token (nothing stored). The first is permanent for those points and the worker goes
  on; the second is a configuration problem: ``/readyz`` says which setting, the committed lag
  grows, nothing is lost, and everything arrives once the token is accepted;
* the real InfluxDB 1.6.7's answers to points beyond retention, a field type conflict and a
  database that does not exist.
"""

from __future__ import annotations

import gzip
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.clients.influx import V1Writer, WriteFailed
from streams.runtime.sink import PointSink
from streams.tools.localstack import free_port
from tests.integration.helpers import (
    WorkerProcess,
    count_points,
    create_topics,
    encode,
    get,
    metric,
    now_ms,
    produce,
    read_topic,
    samples_of,
    scrape,
    unique,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration

ENV, DEAD = "city.env.v1", "city.deadletter.v1"
SOURCES = ("city.taxi.adas.v1", "city.parking.v1", ENV)


def station(device: str, ts: int, seq: int, pm25: float = 10.0) -> dict[str, Any]:
    return {"device_id": device, "ts": ts, "seq": seq, "pm25_ugm3": pm25, "district": "jung"}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def committed_lag(port: int) -> float:
    lags = samples_of(scrape(port), "citystream_consumer_lag")
    return sum(lag for labels, lag in lags.items() if dict(labels)["topic"] in SOURCES)


async def produce_gzip(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    """One message in a gzip-compressed batch: the broker's limit applies to the compressed size."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", max_request_size=8 << 20)
    await producer.start()
    try:
        await (await producer.send(topic, key=key, value=value))
    finally:
        await producer.stop()


async def test_poison_messages_are_dead_lettered_and_the_partition_moves_on(
    own_kafka: str, influx_url: str, tmp_path: Path
) -> None:
    database = unique("poison")
    t = now_ms() - 120_000
    port = free_port()
    # every message to one partition (key env-p), so that a stuck partition would hold back the rest
    deep_element = encode(station("env-p", t, 1)).replace(b'"seq":1', b'"seq":"1","x":' + nested(300))
    deep_batch = b'{"batch":[' + deep_element + b"," + encode(station("env-p", t + 1, 2)) + b"]}"
    control = b'{"device_id":"env-p","pad":"' + b"\x01" * (3 << 20) + b'"}'
    after = [(ENV, b"env-p", encode(station("env-p", t + 10 + i, 10 + i))) for i in range(20)]

    await create_topics(own_kafka)
    await produce(own_kafka, [(ENV, b"env-p", encode(station("env-p", t - 1, 0)))])
    await produce(own_kafka, [(ENV, b"env-p", deep_batch)])
    await produce_gzip(own_kafka, ENV, b"env-p", control)
    await produce(own_kafka, after)

    env = worker_env(own_kafka, influx_url, database, CITYSTREAM_WEB_PORT=str(port))
    worker = WorkerProcess(tmp_path / "worker", env).start()
    try:
        # 1 before, 1 of the deep batch, 20 after
        wait_for(
            lambda: count_points(influx_url, database, "environment", "pm25_ugm3") == 22, 90, "22 raw points", worker
        )
        letters = [orjson.loads(record.value) for record in await read_topic(own_kafka, DEAD, expected=2, timeout=30)]
        by_reason = {letter["reason"]: letter for letter in letters}
        assert sorted(by_reason) == ["schema", "too_large"]
        deep = by_reason["schema"]
        assert deep["index"] == 0 and deep["payload"] == deep_batch.decode()  # could not be encoded: as it came
        large = by_reason["too_large"]
        assert large["payload_truncated"] is True and large["payload_bytes"] == len(control)
        assert len(large["payload"].encode()) == 1 << 20
        wait_for(lambda: committed_lag(port) == 0, 30, "the committed lag to fall to 0", worker)
        assert metric(scrape(port), "citystream_dead_letters_total", reason="too_large") == 1
        assert worker.alive()
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()


class InfluxV2StandIn:
    """Answers ``/api/v2/write`` as InfluxDB 2.x does: 204 and the lines stored; 422 with ``dropped=N``
    for points older than ``retention_ms`` (the others stored: a partial write); 401 for every write
    while ``token_refused``. ``/ping`` and ``/health`` answer as the real server."""

    def __init__(self, retention_ms: int | None = None) -> None:
        self.retention_ms = retention_ms
        self.token_refused = False
        self.lines: list[str] = []
        self.answers: list[int] = []
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.startswith("/ping"):
                    self._answer(204)
                else:
                    self._answer(200, {"status": "pass"})

            do_HEAD = do_GET

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if not self.path.startswith("/api/v2/write"):
                    self._answer(404, {"code": "not found", "message": "path not found"})
                    return
                status = stand_in.write(body.decode())
                with stand_in.lock:
                    stand_in.answers.append(min(status, 422))
                if status == 204:
                    self._answer(204)
                elif status == 401:
                    self._answer(401, {"code": "unauthorized", "message": "unauthorized access"})
                else:
                    dropped = status - 1000
                    message = (
                        "failure writing points to database: partial write: points beyond retention policy "
                        f"dropped={dropped}"
                    )
                    self._answer(422, {"code": "unprocessable entity", "message": message})

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def write(self, body: str) -> int:
        """Store what InfluxDB would; the status to answer (1000 + dropped for a 422)."""
        if self.token_refused:
            return 401
        lines = [line for line in body.split("\n") if line]
        oldest = None if self.retention_ms is None else now_ms() - self.retention_ms
        kept = [line for line in lines if oldest is None or int(line.rsplit(" ", 1)[1]) >= oldest]
        with self.lock:
            self.lines.extend(kept)
        return 204 if len(kept) == len(lines) else 1000 + len(lines) - len(kept)

    def count(self, measurement: str) -> int:
        with self.lock:
            return len({line.rsplit(" ", 1)[0].split(" ")[0] + line.rsplit(" ", 1)[1] for line in self.lines
                        if line.startswith(measurement + ",")})  # fmt: skip


@pytest.fixture
def influx_v2() -> Iterator[InfluxV2StandIn]:
    stand_in = InfluxV2StandIn()
    stand_in.thread.start()
    try:
        yield stand_in
    finally:
        stand_in.server.shutdown()
        stand_in.server.server_close()


def v2_env(kafka: str, url: str, name: str, port: int) -> dict[str, str]:
    return worker_env(
        kafka,
        url,
        "city",
        CITYSTREAM_APP_ID=f"test-{name}",
        CITYSTREAM_INFLUX_API="v2",
        CITYSTREAM_INFLUX_ORG="daegu",
        CITYSTREAM_INFLUX_TOKEN="tok-5tand-1n-secret",
        CITYSTREAM_WEB_PORT=str(port),
    )


async def test_points_beyond_retention_are_rejected_for_good_and_the_rest_is_written(
    own_kafka: str, influx_v2: InfluxV2StandIn, tmp_path: Path
) -> None:
    # the bucket keeps three hours: the hour windows of the readings of ten minutes ago start at most
    # 70 minutes ago, within it (with a bucket of one hour they fell out of it in an hour's first
    # ten minutes)
    influx_v2.retention_ms = 3 * 3_600_000
    t = now_ms() - 600_000
    old = now_ms() - 4 * 3_600_000  # within the worker's 7 days, beyond the bucket's three hours
    devices = [f"env-r{i:02d}" for i in range(40)]
    messages = [(ENV, d.encode(), encode(station(d, t + seq * 1000, seq))) for seq in range(60) for d in devices]
    for i in range(5):  # 5 old readings among 2,400
        messages.insert(100 + i * 400, (ENV, devices[i].encode(), encode(station(devices[i], old + i, 1000 + i))))
    await create_topics(own_kafka)
    await produce(own_kafka, messages)
    port = free_port()
    worker = WorkerProcess(tmp_path / "worker", v2_env(own_kafka, influx_v2.url, "retention", port)).start()
    try:
        wait_for(lambda: influx_v2.count("environment") == 2400, 120, "2,400 raw points in the bucket", worker)
        wait_for(lambda: committed_lag(port) == 0, 60, "the committed lag to fall to 0", worker)
        series = scrape(port)
        # the 5 raw points (too late for the windows, stored raw only) and the 5 writes of their qc
        # fields: refused for good, counted
        assert metric(series, "citystream_influx_points_rejected_total", reason="retention") == 5 + 5
        assert 422 in influx_v2.answers
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200, body
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    log = worker.log()
    assert "refused" in log and "retention" in log


async def test_a_refused_token_keeps_every_point_and_says_which_setting_to_fix(
    own_kafka: str, influx_v2: InfluxV2StandIn, tmp_path: Path
) -> None:
    influx_v2.token_refused = True
    t = now_ms() - 120_000
    messages = [(ENV, f"env-a{i}".encode(), encode(station(f"env-a{i}", t + i, i))) for i in range(200)]
    await create_topics(own_kafka)
    await produce(own_kafka, messages)
    port = free_port()
    worker = WorkerProcess(tmp_path / "worker", v2_env(own_kafka, influx_v2.url, "token", port)).start()
    readyz = f"http://127.0.0.1:{port}/readyz"
    try:
        wait_for(lambda: get(readyz)[0] == 503 and 401 in influx_v2.answers, 60, "/readyz 503 on a 401", worker)
        document = json.loads(get(readyz)[1])
        assert "CITYSTREAM_INFLUX_TOKEN" in document["failed"]["influxdb_writes"]
        series = scrape(port)
        assert metric(series, "citystream_influx_write_failing") == 1
        assert metric(series, "citystream_ready") == 0
        # nothing written, so nothing committed: a restart would read every message again
        assert committed_lag(port) == 200
        assert influx_v2.count("environment") == 0

        influx_v2.token_refused = False  # the operator fixes the token
        wait_for(lambda: influx_v2.count("environment") == 200, 60, "every raw point after the fix", worker)
        wait_for(lambda: committed_lag(port) == 0, 60, "the committed lag to fall to 0", worker)
        wait_for(lambda: get(readyz)[0] == 200, 30, "/readyz 200 again", worker)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    log = worker.log()
    assert "check CITYSTREAM_INFLUX_TOKEN" in log and "tok-5tand-1n-secret" not in log


async def test_influxdb_1_answers_are_classified_as_it_means_them(influx_url: str) -> None:
    """The real InfluxDB 1.6.7: a 400 "beyond retention policy" and a 400 field type conflict are
    partial writes, permanent for the points concerned (counted by reason, as many as it dropped);
    the other lines are stored and the sink goes on. A database that does not exist is a
    configuration problem that names the setting."""
    database = "answers"
    body = urllib.parse.urlencode({"q": f'CREATE DATABASE "{database}" WITH DURATION 1h'}).encode()
    with urllib.request.urlopen(f"{influx_url}/query", data=body, timeout=10) as response:
        assert response.status == 200
    writer = V1Writer(influx_url, database, None, timeout_s=10)
    await writer.open()
    sink = PointSink(writer, batch_size=1000, interval_s=0.1, max_pending=10_000)
    t = now_ms()
    try:
        old = [f"m,k=old{i} v=1.0 {t - 3 * 3_600_000 + i}" for i in range(2)]
        new = [f"m,k=new{i} v=1.0 {t - 1000 + i}" for i in range(3)]
        sink.add([*old, *new])
        await sink.flush()
        assert dict(sink.stats.points_rejected) == {"retention": 2}
        assert count_points(influx_url, database, "m", "v") == 3

        sink.add([f"m,k=new0 v=1i {t - 1000}", f"m,k=new9 v=2.0 {t}"])  # v is a float: an integer conflicts
        await sink.flush()
        assert dict(sink.stats.points_rejected) == {"retention": 2, "invalid": 1}
        assert count_points(influx_url, database, "m", "v") == 4
        assert sink.problem is None

        missing = V1Writer(influx_url, "no_such_database", None, timeout_s=10)
        await missing.open()
        try:
            with pytest.raises(WriteFailed) as failed:
                await missing.write(b"m v=1.0 1")
        finally:
            await missing.close()
        assert failed.value.retryable and failed.value.setting == "CITYSTREAM_INFLUX_DB"
    finally:
        await writer.close()
