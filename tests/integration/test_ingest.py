"""End to end through a real broker (Tansu, and Apache Kafka) and a real InfluxDB: every reading kind,
every dead-letter reason, the v2 write path, an InfluxDB outage in the middle of a stream, and
misconfigurations."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import h3
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.clients.kafka import partition_counts
from streams.tools.localstack import free_port
from tests.integration.helpers import (
    WorkerProcess,
    count_points,
    create_topics,
    dead_letter_reasons,
    encode,
    influx_rows,
    now_ms,
    produce,
    read_topic,
    unique,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration

TAXI, PARKING, ENV, DEAD = "city.taxi.adas.v1", "city.parking.v1", "city.env.v1", "city.deadletter.v1"


def taxi(i: int, ts: int, **extra: Any) -> dict[str, Any]:
    return {
        "device_id": f"taxi-{i:04d}",
        "ts": ts,
        "seq": i,
        "lat": 35.80 + i * 0.003,
        "lon": 128.55 + i * 0.002,
        "speed_kmh": 20.0 + i,
        **extra,
    }


def spot(i: int, ts: int, **extra: Any) -> dict[str, Any]:
    return {
        "device_id": f"pk-lot-{i}",
        "ts": ts,
        "seq": i,
        "lot_id": "suseong-alpha-1",
        "spot_id": f"A{i:03d}",
        "occupied": i % 2 == 0,
        **extra,
    }


def station(device_id: str, ts: int, pm25: float, **extra: Any) -> dict[str, Any]:
    return {"device_id": device_id, "ts": ts, "pm25_ugm3": pm25, **extra}


async def test_every_kind_and_every_dead_letter_reason(kafka_bootstrap: str, influx_url: str, tmp_path: Path) -> None:
    database = unique("ingest_all")
    registry = tmp_path / "registry.yaml"
    registry.write_text("env_stations:\n  env-dong-01: {district: dong, lat: 35.88, lon: 128.63}\n")
    t = now_ms() - 60_000
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000 + 9 * 3600)) + ".250+09:00"
    too_large = encode(station("env-big", t, 1.0, padding="x" * (1024 * 1024)))
    messages: list[tuple[str, bytes | None, bytes | None]] = [
        # valid: 5 single taxi readings, one batch of 10 (one of them a warning with an RFC 3339 ts)
        *[(TAXI, f"taxi-{i:04d}".encode(), encode(taxi(i, t + i))) for i in range(5)],
        (
            TAXI,
            b"taxi-0100",
            encode(
                {
                    "batch": [taxi(100 + i, t + i, event="FCW" if i == 0 else "NONE", ttc_s=1.5) for i in range(9)]
                    + [taxi(200, iso, heading_deg=90.0)]
                }
            ),
        ),
        *[(PARKING, f"pk-lot-{i}".encode(), encode(spot(i, t + i, battery_v=3.4, rssi_dbm=-110.0))) for i in range(4)],
        (PARKING, b"pk-lot-10", encode({"batch": [spot(10 + i, t + i, kind="heartbeat") for i in range(3)]})),
        (ENV, b"env-jung-03", encode(station("env-jung-03", t, 31.5, district="jung", pm10_ugm3=55.0))),
        (ENV, b"env-dong-01", encode(station("env-dong-01", t, 12.0))),
        (ENV, b"env-nowhere", encode(station("env-nowhere", t, 8.0, noise_dba=61.5))),
        # one of each dead-letter reason
        (ENV, b"env-bad-1", b"\xff\xfe\x00not utf-8"),
        (ENV, b"env-bad-2", b'{"device_id": "env-bad-2", "ts": '),
        (ENV, b"env-bad-3", b"[1, 2, 3]"),
        (ENV, b"env-big", too_large),
        (PARKING, b"pk-bad", encode({"batch": []})),
        (TAXI, b"taxi-bad", encode(taxi(7, t, speed_kmh=400))),
        (ENV, b"env-future", encode(station("env-future", now_ms() + 3_600_000, 5.0))),
        (ENV, b"env-stale", encode(station("env-stale", now_ms() - 8 * 86_400_000, 5.0))),
        # a batch with two good readings and two bad elements
        (
            ENV,
            b"env-mixed",
            encode(
                {
                    "batch": [
                        station("env-mixed", t, 1.0),
                        42,
                        station("env-mixed", t + 1, 2000.0),
                        station("env-mixed", t + 2, 3.0),
                    ]
                }
            ),
        ),
        # a tombstone: no value at all
        (ENV, b"env-null", None),
    ]
    await create_topics(kafka_bootstrap)
    await produce(kafka_bootstrap, messages)

    worker = WorkerProcess(
        tmp_path, worker_env(kafka_bootstrap, influx_url, database, CITYSTREAM_REGISTRY=str(registry))
    ).start()
    try:
        wait_for(
            lambda: (
                count_points(influx_url, database, "taxi_adas", "speed_kmh") == 15
                and count_points(influx_url, database, "parking", "occupied") == 7
                and count_points(influx_url, database, "environment", "pm25_ugm3") == 5
            ),
            90,
            "raw points of every kind",
            worker,
        )
        letters = await read_topic(kafka_bootstrap, DEAD, expected=11)
        reasons = dead_letter_reasons(letters)
        assert reasons == {
            "not_utf8": 1,
            "malformed_json": 2,
            "not_an_object": 2,
            "too_large": 1,
            "bad_batch": 1,
            "schema": 2,
            "future_timestamp": 1,
            "stale_timestamp": 1,
        }

        documents = [orjson.loads(r.value) for r in letters]
        by_reason = {d["reason"]: d for d in documents}
        assert base64.b64decode(by_reason["not_utf8"]["payload_b64"]) == b"\xff\xfe\x00not utf-8"
        assert by_reason["not_utf8"]["payload"] is None
        large = by_reason["too_large"]  # its first MiB, with the original's size and SHA-256
        assert large["payload"].encode() == too_large[: 1024 * 1024] and large["payload_truncated"] is True
        assert large["payload_bytes"] == len(too_large)
        assert large["payload_sha256"] == hashlib.sha256(too_large).hexdigest()
        assert by_reason["stale_timestamp"]["source"]["topic"] == ENV
        mixed = sorted((d["index"], d["reason"]) for d in documents if d["source"]["key"] == "env-mixed")
        assert mixed == [(1, "not_an_object"), (2, "schema")]
        schema_letter = next(d for d in documents if d["reason"] == "schema" and d["source"]["key"] == "env-mixed")
        assert schema_letter["errors"][0]["loc"] == "pm25_ugm3"
        assert orjson.loads(schema_letter["payload"])["pm25_ugm3"] == 2000.0
        for record, document in zip(letters, documents, strict=True):
            assert record.key == (document["source"]["key"] or "").encode()
            assert document["dead_lettered_at"].endswith("Z")

        taxi_rows = influx_rows(influx_url, database, "SELECT * FROM taxi_adas GROUP BY *")
        for row in taxi_rows:
            assert row["cell"] == h3.latlng_to_cell(row["lat"], row["lon"], 9)
        assert {row["event"] for row in taxi_rows} == {"FCW", "NONE"}
        rfc3339 = next(row for row in taxi_rows if row["device_id"] == "taxi-0200")
        assert rfc3339["time"] == (t // 1000) * 1000 + 250 and rfc3339["heading_deg"] == 90.0

        parking_rows = influx_rows(influx_url, database, "SELECT * FROM parking GROUP BY *")
        assert sorted(row["occupied"] for row in parking_rows) == [0, 0, 0, 1, 1, 1, 1]
        assert {row["lot_id"] for row in parking_rows} == {"suseong-alpha-1"}

        env_rows = influx_rows(influx_url, database, "SELECT * FROM environment GROUP BY *")
        district = {row["device_id"]: row["district"] for row in env_rows}
        assert district == {
            "env-jung-03": "jung",
            "env-dong-01": "dong",
            "env-nowhere": "unknown",
            "env-mixed": "unknown",
        }

        # every source offset is committed once its points are stored
        await _wait_committed(kafka_bootstrap, f"test-{database}", [TAXI, PARKING, ENV])
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]


async def _wait_committed(bootstrap: str, group: str, topics: list[str], timeout: float = 30) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        counts = await partition_counts(bootstrap, topics)
        partitions = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
        assert partitions
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while True:
            behind = {
                tp: (await consumer.committed(tp), end)
                for tp, end in ends.items()
                if end > 0 and (await consumer.committed(tp) or 0) < end
            }
            if not behind:
                return
            assert time.monotonic() < deadline, f"offsets not committed: {behind}"
            time.sleep(0.5)
    finally:
        await consumer.stop()


OUTAGE_DEVICES = "device_id =~ /^out-/"


async def test_influxdb_outage_loses_nothing(kafka_bootstrap: str, influxdb: Any, tmp_path: Path) -> None:
    database = unique("outage")
    t = now_ms() - 120_000

    def burst(start: int, n: int = 500) -> list[tuple[str, bytes, bytes]]:
        return [
            (ENV, f"out-{i % 20:02d}".encode(), encode(station(f"out-{i % 20:02d}", t + i, float(i % 300))))
            for i in range(start, start + n)
        ]

    await create_topics(kafka_bootstrap)
    worker = WorkerProcess(tmp_path, worker_env(kafka_bootstrap, influxdb.url, database)).start()
    try:
        await produce(kafka_bootstrap, burst(0))
        wait_for(
            lambda: count_points(influxdb.url, database, "environment", "pm25_ugm3", OUTAGE_DEVICES) == 500,
            90,
            "the first burst",
            worker,
        )
        influxdb.stop()
        await produce(kafka_bootstrap, burst(500))
        await produce(kafka_bootstrap, burst(1000))
        wait_for(lambda: "unreachable" in worker.log(), 30, "the worker to notice the outage", worker)
        time.sleep(2)
        assert worker.alive()
        influxdb.start()
        await produce(kafka_bootstrap, burst(1500))
        wait_for(
            lambda: count_points(influxdb.url, database, "environment", "pm25_ugm3", OUTAGE_DEVICES) == 2000,
            120,
            "every point after the outage",
            worker,
        )
        times = influx_rows(influxdb.url, database, f"SELECT pm25_ugm3 FROM environment WHERE {OUTAGE_DEVICES}")
        assert sorted(row["time"] for row in times) == [t + i for i in range(2000)]
    finally:
        if not influxdb.is_running():
            influxdb.start()
        assert worker.stop() == 0, worker.log()[-3000:]


async def test_v2_write_path(kafka_bootstrap: str, victoria_metrics: str, tmp_path: Path) -> None:
    token = "v2-secret-token-0f3c9a"
    t = now_ms() - 30_000
    # VictoriaMetrics serves the tests of both brokers: this run's station and lot are its own
    device, lot = unique("env-v2"), unique("v2-lot")
    await create_topics(kafka_bootstrap)
    await produce(
        kafka_bootstrap,
        [
            *[(TAXI, b"taxi-v2", encode(taxi(300 + i, t + i * 1000))) for i in range(6)],
            *[(PARKING, b"pk-v2", encode(spot(400 + i, t + i * 1000, lot_id=lot))) for i in range(4)],
            *[
                (ENV, device.encode(), encode(station(device, t + i * 1000, 10.0 + i, district="seo")))
                for i in range(3)
            ],
        ],
    )
    env = worker_env(
        kafka_bootstrap,
        victoria_metrics,
        "city",
        CITYSTREAM_INFLUX_API="v2",
        CITYSTREAM_INFLUX_ORG="daegu",
        CITYSTREAM_INFLUX_TOKEN=token,
        CITYSTREAM_APP_ID=unique("test-v2"),
    )
    worker = WorkerProcess(tmp_path, env).start()

    def samples(metric: str, **labels: str) -> list[float]:
        selector = ",".join([f'__name__="{metric}"', *(f'{k}="{v}"' for k, v in labels.items())])
        query = urllib.parse.urlencode({"match[]": "{" + selector + "}"})
        with urllib.request.urlopen(f"{victoria_metrics}/api/v1/export?{query}", timeout=10) as response:
            lines = [orjson.loads(line) for line in response.read().splitlines() if line.strip()]
        return [v for line in lines for v in line["values"]]

    try:
        wait_for(
            lambda: (
                len(samples("taxi_adas_speed_kmh")) >= 6
                and len(samples("parking_occupied", lot_id=lot)) >= 4
                and len(samples("environment_pm25_ugm3", district="seo", device_id=device)) >= 3
            ),
            90,
            "points through /api/v2/write",
            worker,
        )
        assert sorted(samples("environment_pm25_ugm3", device_id=device)) == [10.0, 11.0, 12.0]
        assert sorted(samples("parking_occupied", lot_id=lot)) == [0, 0, 1, 1]
    finally:
        assert worker.stop() == 0
    assert token not in worker.log()


def _run_worker(env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("CITYSTREAM_")}
    full.update(env)
    executable = shutil.which("citystream")
    assert executable
    return subprocess.run(
        [executable, "worker"], env=full, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_bad_setting_stops_the_worker_with_what_to_fix(tmp_path: Path) -> None:
    result = _run_worker({"CITYSTREAM_INFLUX_API": "v3", "CITYSTREAM_INFLUX_TOKEN": "tok-123456"}, tmp_path)
    assert result.returncode == 2
    assert "CITYSTREAM_INFLUX_API: Input should be 'v1' or 'v2'" in result.stderr
    assert "tok-123456" not in result.stderr + result.stdout
    bad_registry = tmp_path / "registry.yaml"
    bad_registry.write_text("parking_lots:\n  lot-1: {capacity: -5}\n")
    result = _run_worker({"CITYSTREAM_REGISTRY": str(bad_registry)}, tmp_path)
    assert result.returncode == 2
    assert "parking_lots.lot-1.capacity" in result.stderr


def test_unreachable_services_give_up_after_the_startup_timeout(kafka_bootstrap: str, tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = _run_worker({"CITYSTREAM_KAFKA_BOOTSTRAP": nowhere, "CITYSTREAM_STARTUP_TIMEOUT_S": "3"}, tmp_path)
    assert result.returncode == 1
    assert "did not answer within 3 s" in result.stderr and "CITYSTREAM_KAFKA_BOOTSTRAP" in result.stderr
    assert time.monotonic() - started < 30
    result = _run_worker(
        {
            "CITYSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "CITYSTREAM_INFLUX_URL": f"http://{nowhere}",
            "CITYSTREAM_STARTUP_TIMEOUT_S": "3",
        },
        tmp_path,
    )
    assert result.returncode == 1
    assert "CITYSTREAM_INFLUX_URL" in result.stderr
