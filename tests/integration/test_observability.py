"""A real worker's /metrics, /healthz and /readyz against the real broker and InfluxDB, and its secrets.

The local brokers (Tansu, and Apache Kafka with the fixtures' PLAINTEXT listener) speak neither SASL
nor TLS: SASL and TLS are tested here by the clear failure a worker gives against them (and in
tests/unit/test_security.py by the client arguments).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.clients.kafka import contract_topics, ensure_topics
from streams.tools.localstack import ManagedService, free_port
from tests.integration.helpers import (
    WorkerProcess,
    count_points,
    encode,
    get,
    metric,
    now_ms,
    produce,
    samples_of,
    scrape,
    unique,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration

TAXI, PARKING, ENV = "city.taxi.adas.v1", "city.parking.v1", "city.env.v1"
PARTITIONS = 4

# a field every point of the measurement has
POINT_FIELDS = {
    "taxi_adas": "speed_kmh",
    "parking": "occupied",
    "environment": "pm25_ugm3",
    "taxi_adas_1m": "readings",
    "parking_1m": "known_spots",
    "environment_1m": "readings",
    "environment_1h": "readings",
    "alerts": "alert_id",
}


def influx_points(url: str, database: str) -> int:
    return sum(count_points(url, database, measurement, field) for measurement, field in POINT_FIELDS.items())


def taxi(device: str, ts: int, seq: int, i: int) -> dict[str, Any]:
    return {"device_id": device, "ts": ts, "seq": seq, "lat": 35.85 + i * 0.01, "lon": 128.55, "speed_kmh": 30.0}


def env(device: str, ts: int, seq: int) -> dict[str, Any]:
    return {"device_id": device, "ts": ts, "seq": seq, "pm25_ugm3": 10.0 + seq}


def spot(spot_id: str, ts: int, occupied: Any) -> dict[str, Any]:
    return {"device_id": f"pk-{spot_id}", "ts": ts, "lot_id": "obs-lot", "spot_id": spot_id, "occupied": occupied}


def known_messages(t: int) -> list[tuple[str, bytes | None, bytes | None]]:
    """8 taxi messages (a duplicate, a late one), 2 parking, 6 environment (a duplicate, a late one)."""
    late = t - 10 * 60_000  # behind the partition's watermark by more than CITYSTREAM_MAX_LATENESS_S=60
    return [
        *[(TAXI, f"taxi-{i}".encode(), encode(taxi(f"taxi-{i}", t + i, 1, i))) for i in range(6)],
        (TAXI, b"taxi-0", encode(taxi("taxi-0", t, 1, 0))),  # duplicate: same device and seq
        (TAXI, b"taxi-1", encode(taxi("taxi-1", late, 2, 1))),  # late
        (
            PARKING,
            b"pk-batch",
            encode({"batch": [spot("A1", t, True), spot("A2", t, False), spot("A3", t, False), spot("A4", t, "yes")]}),
        ),  # 3 valid, 1 schema
        (PARKING, b"pk-broken", b'{"device_id": "pk-broken", "ts": '),  # malformed_json
        (ENV, b"env-a", encode(env("env-a", t, 1))),
        (ENV, b"env-b", encode(env("env-b", t, 1))),
        (ENV, b"env-a", encode(env("env-a", t, 1))),  # duplicate
        (ENV, b"env-a", encode(env("env-a", late, 2))),  # late
        (ENV, b"env-bin", b"\xff\xfe not utf-8"),  # not_utf8
        (ENV, b"env-future", encode(env("env-future", now_ms() + 3_600_000, 1))),  # future_timestamp
    ]


@pytest.fixture
def influx_back_up(influxdb: ManagedService) -> Iterator[ManagedService]:
    """The InfluxDB fixture, started again right after the test if the test stopped it."""
    yield influxdb
    if not influxdb.is_running():
        influxdb.start(timeout=60)


async def test_metrics_count_what_was_sent_and_readiness_follows_influxdb(
    own_kafka: str, influx_back_up: ManagedService, tmp_path: Path
) -> None:
    influxdb = influx_back_up
    database = unique("observability")
    await ensure_topics(own_kafka, contract_topics(PARTITIONS), timeout_s=30)
    await produce(own_kafka, known_messages(now_ms() - 120_000))
    port = free_port()
    env_vars = worker_env(
        own_kafka,
        influxdb.url,
        database,
        CITYSTREAM_WEB_PORT=str(port),
        CITYSTREAM_MAX_LATENESS_S="60",
        # every message is in the windows before the first checkpoint: each window point is written once
        CITYSTREAM_CHECKPOINT_INTERVAL_S="8",
    )
    worker = WorkerProcess(tmp_path, env_vars).start()
    try:
        wait_for(lambda: "Worker]: Ready" in worker.log(), 60, "the worker to start", worker)
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        wait_for(
            lambda: sum(samples_of(scrape(port), "citystream_messages_total").values()) == 16,
            60,
            "every message counted",
            worker,
        )
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "/readyz 200", worker)
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200 and json.loads(body)["ready"] is True

        series = scrape(port)
        assert metric(series, "citystream_messages_total", topic=TAXI) == 8
        assert metric(series, "citystream_messages_total", topic=PARKING) == 2
        assert metric(series, "citystream_messages_total", topic=ENV) == 6
        assert metric(series, "citystream_readings_valid_total", kind="taxi") == 8
        assert metric(series, "citystream_readings_valid_total", kind="parking") == 3
        assert metric(series, "citystream_readings_valid_total", kind="environment") == 4
        letters = {
            dict(labels)["reason"]: value
            for labels, value in samples_of(series, "citystream_dead_letters_total").items()
        }
        assert {reason: n for reason, n in letters.items() if n} == {
            "schema": 1,
            "malformed_json": 1,
            "not_utf8": 1,
            "future_timestamp": 1,
        }
        assert metric(series, "citystream_duplicates_total", kind="taxi") == 1
        assert metric(series, "citystream_duplicates_total", kind="environment") == 1
        assert metric(series, "citystream_duplicates_total", kind="parking") == 0
        assert metric(series, "citystream_late_readings_total", kind="taxi") == 1
        assert metric(series, "citystream_late_readings_total", kind="environment") == 1
        assert metric(series, "citystream_ready") == 1
        assert metric(series, "citystream_assigned_partitions") > 0

        # the consumer has reached the end of every source partition
        def caught_up() -> bool:
            lags = samples_of(scrape(port), "citystream_consumer_lag")
            sources = {labels: lag for labels, lag in lags.items() if dict(labels)["topic"] in (TAXI, PARKING, ENV)}
            return len(sources) == 3 * PARTITIONS and not any(sources.values())

        wait_for(caught_up, 30, "the consumer lag to fall to 0", worker)

        # every point written is in InfluxDB; a duplicate's raw point is written again (the same point),
        # and so are the raw points of the environment readings the windows judged, with their qc
        # fields: the two aggregated and the late one
        def all_written() -> bool:
            current = scrape(port)
            written = metric(current, "citystream_points_written_total")
            return (
                metric(current, "citystream_influx_pending_points") == 0
                and count_points(influxdb.url, database, "environment_1h", "readings") == 2
                and written == influx_points(influxdb.url, database) + 2 + 3
            )

        wait_for(all_written, 60, "points_written to match the points in InfluxDB", worker)
        series = scrape(port)
        assert metric(series, "citystream_influx_write_seconds_count") > 0
        assert metric(series, "citystream_influx_write_seconds_sum") > 0
        assert metric(series, "citystream_influx_write_retries_total") == 0
        windows = samples_of(series, "citystream_open_windows")
        assert windows[(("topic", ENV),)] == 4  # env-a and env-b: a minute and an hour each
        delays = samples_of(series, "citystream_watermark_delay_seconds")
        assert delays and all(100 < delay < 3600 for delay in delays.values())  # readings two minutes old

        # InfluxDB down: not ready, with the reason; alive all the same
        influxdb.stop()
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 503, 40, "/readyz 503", worker)
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        document = json.loads(body)
        assert status == 503 and document["ready"] is False
        # the ping fails; writes may be failing too by now
        assert "influxdb" in document["failed"] and set(document["failed"]) <= {"influxdb", "influxdb_writes"}
        assert "/ping" in document["failed"]["influxdb"]
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert metric(scrape(port), "citystream_ready") == 0

        influxdb.start(timeout=60)
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 40, "/readyz 200 again", worker)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]


TOKEN = "tok-Obs3rv-5ecret-91c2"
PASSWORD = "pw-Obs3rv-5ecret-7f3a"


def run_worker(env: dict[str, str], cwd: Path, timeout: float = 90) -> tuple[int, str]:
    """``citystream worker`` to its end; (exit code, standard output and error together)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("CITYSTREAM_")}
    full.update(env)
    executable = shutil.which("citystream")
    assert executable
    result = subprocess.run(
        [executable, "worker"],
        env=full,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stdout


# What a PLAINTEXT listener answers a SaslHandshake with, as aiokafka logs it: Tansu says it has no
# such mechanism; Apache Kafka that SASL is not expected on this listener (ILLEGAL_SASL_STATE)
SASL_REFUSAL = {"tansu": "UnsupportedSaslMechanismError", "kafka": "IllegalSaslStateError"}


def assert_no_secret(output: str) -> None:
    for line in output.splitlines():
        assert TOKEN not in line and PASSWORD not in line, line


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_in_any_line_of_a_failing_worker(
    own_kafka: str, broker_kind: str, tmp_path: Path, log_format: str
) -> None:
    kafka_bootstrap = own_kafka  # a broker of its own: it writes to the source topics
    nowhere = f"127.0.0.1:{free_port()}"
    base = {
        "CITYSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CITYSTREAM_INFLUX_URL": f"http://{nowhere}",
        "CITYSTREAM_INFLUX_TOKEN": TOKEN,
        "CITYSTREAM_WEB_PORT": str(free_port()),
        "CITYSTREAM_STARTUP_TIMEOUT_S": "3",
        "CITYSTREAM_LOG_LEVEL": "debug",  # aiokafka logs its requests at debug level
        "CITYSTREAM_LOG_FORMAT": log_format,
        "CITYSTREAM_APP_ID": f"secrets-{log_format}",
    }
    sasl = {"CITYSTREAM_KAFKA_SASL_USERNAME": "city", "CITYSTREAM_KAFKA_SASL_PASSWORD": PASSWORD}
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    certificate = tmp_path / "ca.pem"
    certificate.write_text("not a certificate\n")

    # SASL against a broker without SASL: a clear failure that names the settings to check
    for mechanism in ("PLAIN", "SCRAM-SHA-256"):
        code, output = run_worker(
            {
                **base,
                **sasl,
                "CITYSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "CITYSTREAM_KAFKA_SASL_MECHANISM": mechanism,
            },
            tmp_path,
        )
        assert code == 1, output
        assert "CITYSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT" in output
        assert f"CITYSTREAM_KAFKA_SASL_MECHANISM={mechanism}" in output
        assert SASL_REFUSAL[broker_kind] in output  # the broker's answer, from aiokafka's log
        assert_no_secret(output)

    # TLS against a plaintext broker
    code, output = run_worker({**base, "CITYSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL"}, tmp_path)
    assert code == 1 and "CITYSTREAM_KAFKA_SECURITY_PROTOCOL=SSL" in output, output
    assert_no_secret(output)

    # InfluxDB unreachable
    code, output = run_worker(base, tmp_path)
    assert code == 1 and "did not answer" in output and "CITYSTREAM_INFLUX_URL" in output, output
    assert_no_secret(output)

    # bad settings, with the secrets set: exit code 2 and a message naming the variable
    for variables, expected in (
        (sasl, "CITYSTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no SASL"),
        (
            {
                **sasl,
                "CITYSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "CITYSTREAM_KAFKA_SASL_PASSWORD_FILE": str(password_file),
            },
            "set CITYSTREAM_KAFKA_SASL_PASSWORD or CITYSTREAM_KAFKA_SASL_PASSWORD_FILE, not both",
        ),
        (
            {"CITYSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL", "CITYSTREAM_KAFKA_SSL_CAFILE": str(certificate)},
            "CITYSTREAM_KAFKA_SSL_CAFILE: cannot load CA certificates",
        ),
        ({"CITYSTREAM_INFLUX_API": "v2"}, "CITYSTREAM_INFLUX_API=v2 needs CITYSTREAM_INFLUX_ORG"),
        (
            {"CITYSTREAM_INFLUX_URL": f"http://citystream:{TOKEN}@{nowhere}"},
            "CITYSTREAM_INFLUX_URL: must not hold a user or password",
        ),
        ({"CITYSTREAM_INFLUX_TOKEN_FILE": str(password_file)}, "set CITYSTREAM_INFLUX_TOKEN or"),
    ):
        code, output = run_worker({**base, **variables}, tmp_path)
        assert code == 2 and expected in output, output
        assert_no_secret(output)


def test_no_secret_in_the_logs_of_a_running_worker(own_kafka: str, influx_url: str, tmp_path: Path) -> None:
    kafka_bootstrap = own_kafka  # a broker of its own: it writes to the source topics
    """A worker that runs with a token (v1 sends it as a header) at debug level, in JSON: no line holds it."""
    port = free_port()
    env_vars = worker_env(
        kafka_bootstrap,
        influx_url,
        "secrets_running",
        CITYSTREAM_WEB_PORT=str(port),
        CITYSTREAM_INFLUX_TOKEN=TOKEN,
        CITYSTREAM_LOG_LEVEL="debug",
        CITYSTREAM_LOG_FORMAT="json",
    )
    worker = WorkerProcess(tmp_path, env_vars).start()
    try:
        wait_for(lambda: "Worker]: Ready" in worker.log(), 60, "the worker to start", worker)
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 60, "/readyz 200", worker)
        assert metric(scrape(port), "citystream_ready") == 1
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    lines = worker.log().splitlines()
    assert len(lines) > 50  # debug level: plenty
    for line in lines:
        document = json.loads(line)  # one JSON object per line, and nothing else
        assert {"time", "level", "logger", "message"} <= set(document), line
    assert any(json.loads(line)["logger"].startswith("aiokafka") for line in lines)
    assert_no_secret(worker.log())
