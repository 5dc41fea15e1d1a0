"""The embedded local stack against the real servers: the session fixtures, restarts, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from click.testing import CliRunner
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from streams.tools.localstack import (
    InstallError,
    ManagedService,
    MissingBinaryError,
    PortInUseError,
    ServiceStartError,
    create_database,
    free_port,
    http_answers,
    install_packages,
    kafka_answers,
    local_command,
    local_down,
    mosquitto,
    mqtt_answers,
    tansu,
)
from streams.tools.localstack import influxdb as influxdb_service

pytestmark = pytest.mark.integration

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with _opener.open(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _write_point(url: str, db: str, line: str) -> None:
    status, body = _http("POST", f"{url}/write?db={db}&precision=ms", line.encode())
    assert status == 204, body


def _select(url: str, db: str, query: str) -> list[list[object]]:
    params = urllib.parse.urlencode({"db": db, "q": query, "epoch": "ms"})
    status, body = _http("GET", f"{url}/query?{params}")
    assert status == 200, body
    result = json.loads(body)["results"][0]
    assert "error" not in result, result
    series = result.get("series", [])
    return series[0]["values"] if series else []


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------------- the fixtures


async def test_kafka_fixture_round_trips_a_message(kafka_bootstrap: str) -> None:
    topic = _unique("localstack.roundtrip")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b'{"device_id": "env-1"}', key=b"env-1")
    finally:
        await producer.stop()
    assert sent.topic == topic and sent.offset == 0

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=20)
    finally:
        await consumer.stop()
    assert (message.key, message.value) == (b"env-1", b'{"device_id": "env-1"}')


def test_influxdb_fixture_writes_and_queries(influx_url: str) -> None:
    assert _http("GET", f"{influx_url}/ping")[0] == 204
    db = _unique("localstack")
    create_database(influx_url, db)
    create_database(influx_url, db)  # idempotent
    _write_point(influx_url, db, "environment,device_id=env-1 pm25_ugm3=42.5 1795000000000")
    rows = _select(influx_url, db, 'SELECT "pm25_ugm3" FROM "environment"')
    assert rows == [[1795000000000, 42.5]]


@pytest.mark.parametrize("outage", ["stop", "kill"])
def test_influxdb_keeps_its_data_across_a_restart(influxdb: ManagedService, outage: str) -> None:
    db = _unique("restart")
    create_database(influxdb.url, db)
    _write_point(influxdb.url, db, "parking,lot_id=a,spot_id=1 occupied=1i 1795000000000")
    pid = influxdb.pid
    port = influxdb.port

    assert getattr(influxdb, outage)() is True
    assert not influxdb.is_running()
    assert not influxdb.is_answering()
    assert influxdb.pid_path.exists() is False

    influxdb.start()
    assert influxdb.is_answering()
    assert influxdb.pid not in (None, pid)
    assert influxdb.port == port
    assert _select(influxdb.url, db, 'SELECT "occupied" FROM "parking"') == [[1795000000000, 1]]


def test_victoria_metrics_fixture_accepts_influxdb_client_v2_writes(victoria_metrics: str) -> None:
    status, body = _http("GET", f"{victoria_metrics}/health")
    assert (status, body.strip()) == (200, b"OK")

    device = _unique("env")
    now_ms = int(time.time() * 1000)
    with InfluxDBClient(url=victoria_metrics, token="unused", org="city") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket="city",
            record=f"environment,device_id={device} pm25_ugm3=12.5 {now_ms}",
            write_precision=WritePrecision.MS,
        )
    # A new series becomes searchable about 1 s after the write, and VictoriaMetrics 1.79 caches an
    # empty answer per filter for a while: poll with a filter that differs at every attempt.
    exported: list[dict[str, object]] = []
    for attempt in range(40):
        selector = f'{{device_id="{device}",__name__!="attempt_{attempt}"}}'
        _status, body = _http(
            "GET",
            f"{victoria_metrics}/api/v1/export?{urllib.parse.urlencode({'match[]': selector})}",
        )
        exported = [json.loads(line) for line in body.splitlines() if line.strip()]
        if exported:
            break
        time.sleep(0.25)
    assert exported == [
        {
            "metric": {"__name__": "environment_pm25_ugm3", "device_id": device},
            "values": [12.5],
            "timestamps": [now_ms],
        }
    ]


# ----------------------------------------------------------------------------- the Python API


def test_a_failed_start_reports_the_exit_code_and_the_log(tmp_path: Path) -> None:
    service = ManagedService(
        "bogus",
        "bogus",
        free_port(),
        tmp_path,
        command=lambda _s: [sys.executable, "-c", "print('cannot open the data folder'); exit(3)"],
        probe=kafka_answers,
        scheme="tcp",
    )
    with pytest.raises(ServiceStartError, match=r"(?s)exited with code 3.*cannot open the data"):
        service.start(timeout=10)
    assert not service.is_running()
    assert not service.pid_path.exists()


def test_a_taken_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port}"):
            tansu(port, tmp_path).start()


def test_a_missing_binary_names_the_package_and_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingBinaryError, match=r"`influxdb` package.*citystream local install"):
        influxdb_service(free_port(), tmp_path / "influxdb").start()
    monkeypatch.setattr("shutil.which", lambda *args, **kwargs: None)  # not in /usr/sbin either
    with pytest.raises(MissingBinaryError, match=r"`mosquitto` package.*citystream local install --mqtt"):
        mosquitto(free_port(), tmp_path / "mosquitto").start()


def test_install_without_root_prints_the_sudo_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_apt = tmp_path / "apt-get"
    fake_apt.write_text("#!/bin/sh\nexit 99\n")
    fake_apt.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))  # influxd and victoria-metrics are "missing"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(InstallError) as excinfo:
        install_packages(victoria_metrics=True)
    assert "sudo apt-get install -y influxdb victoria-metrics" in str(excinfo.value)


def test_install_does_nothing_when_the_packages_are_there() -> None:
    assert install_packages(victoria_metrics=True) == []
    assert install_packages(mqtt=True) == []


# ----------------------------------------------------------------------------- the CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``citystream local ARGS`` in a child process, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "streams.tools.localstack", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _status_rows(folder: Path) -> dict[str, list[str]]:
    result = _cli("status", "--dir", str(folder))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["SERVICE", "PID", "ADDRESS", "STATE"]
    return {line.split()[0]: re.split(r"\s{2,}", line.strip()) for line in lines[1:]}


def test_local_up_status_down_end_to_end(tmp_path: Path) -> None:
    folder = tmp_path / "local"
    kafka_port, influx_port = free_port(), free_port()
    ports = ("--kafka-port", str(kafka_port), "--influx-port", str(influx_port))
    influx_url = f"http://127.0.0.1:{influx_port}"
    try:
        up = _cli("up", "--dir", str(folder), *ports)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"CITYSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:{kafka_port}" in up.stdout
        assert f"CITYSTREAM_INFLUX_URL={influx_url}" in up.stdout

        # the `up` process has exited; the services outlive it and answer
        assert kafka_answers("127.0.0.1", kafka_port)
        assert http_answers("127.0.0.1", influx_port, path="/ping", status=204)
        assert ["city"] in _select(influx_url, "", "SHOW DATABASES")
        assert (folder / "kafka" / "kafka.log").is_file()
        assert (folder / "influxdb" / "influxdb.pid").is_file()

        rows = _status_rows(folder)
        assert rows["kafka"][2:] == [f"127.0.0.1:{kafka_port}", "running, answering"]
        assert rows["influxdb"][2:] == [influx_url, "running, answering"]
        pids = {name: int(row[1]) for name, row in rows.items()}

        again = _cli("up", "--dir", str(folder), *ports)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"kafka: already running on 127.0.0.1:{kafka_port} (pid {pids['kafka']})" in (again.stdout)
        assert "influxdb: already running" in again.stdout
        assert {name: int(row[1]) for name, row in _status_rows(folder).items()} == pids

        elsewhere = _cli("up", "--dir", str(folder), "--kafka-port", str(free_port()))
        assert elsewhere.returncode == 1
        assert "already running" in elsewhere.stderr and "local down" in elsewhere.stderr

        down = _cli("down", "--dir", str(folder))
        assert down.returncode == 0, down.stderr
        assert down.stdout.splitlines() == ["kafka: stopped", "influxdb: stopped"]
        assert not kafka_answers("127.0.0.1", kafka_port)
        assert not http_answers("127.0.0.1", influx_port, path="/ping", status=204)
        assert {name: row[-1] for name, row in _status_rows(folder).items()} == {
            "kafka": "stopped",
            "influxdb": "stopped",
        }

        down_again = _cli("down", "--dir", str(folder))
        assert down_again.returncode == 0
        assert down_again.stdout.splitlines() == ["kafka: not running", "influxdb: not running"]
    finally:
        local_down(folder)


def test_local_up_with_mqtt_runs_mosquitto(tmp_path: Path) -> None:
    folder = tmp_path / "local"
    mqtt_port = free_port()
    ports = ("--kafka-port", str(free_port()), "--influx-port", str(free_port()), "--mqtt-port", str(mqtt_port))
    try:
        up = _cli("up", "--dir", str(folder), *ports, "--mqtt")
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"CITYSTREAM_MQTT_URL=mqtt://127.0.0.1:{mqtt_port}" in up.stdout
        assert mqtt_answers("127.0.0.1", mqtt_port)
        config = (folder / "mosquitto" / "mosquitto.conf").read_text()
        assert "persistence true" in config and f"listener {mqtt_port} 127.0.0.1" in config
        rows = _status_rows(folder)
        assert rows["mosquitto"][2:] == [f"mqtt://127.0.0.1:{mqtt_port}", "running, answering"]

        down = _cli("down", "--dir", str(folder))
        assert down.stdout.splitlines() == ["kafka: stopped", "influxdb: stopped", "mosquitto: stopped"]
        assert not mqtt_answers("127.0.0.1", mqtt_port)
        assert (folder / "mosquitto" / "data" / "mosquitto.db").is_file()  # the sessions, saved on exit
    finally:
        local_down(folder)


def test_local_up_refuses_a_port_taken_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = CliRunner().invoke(
            local_command,
            ["up", "--dir", str(tmp_path), "--kafka-port", str(port), "--influx-port", "1"],
        )
    assert result.exit_code == 1
    assert f"port 127.0.0.1:{port} is already in use" in result.output
    assert "--kafka-port" in result.output
    assert not (tmp_path / "kafka" / "kafka.pid").exists()


def test_local_help_lists_the_subcommands() -> None:
    result = CliRunner().invoke(local_command, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "down", "status", "install"):
        assert re.search(rf"^\s+{command}\s+\S", result.output, re.MULTILINE), command
