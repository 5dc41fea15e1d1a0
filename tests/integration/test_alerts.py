"""Alerts end to end: every kind of the contract raised and cleared through a real broker and
InfluxDB, exactly once across a SIGKILL, and the alerting consumer with a webhook."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from streams.tools.localstack import free_port
from tests.integration import scenario as sc
from tests.integration.helpers import (
    WorkerProcess,
    create_topics,
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

MIN, HOUR = 60_000, 3_600_000
ALERTS = "city.alerts.v1"
OFFLINE_MS = 6_000


def station(device: str, ts: int, **values: float) -> tuple[str, bytes, bytes]:
    return (sc.ENV, device.encode(), encode({"device_id": device, "ts": ts, "district": "jung", **values}))


def spot(device: str, ts: int, lot: str, spot_id: str, occupied: bool, **extra: Any) -> tuple[str, bytes, bytes]:
    reading = {"device_id": device, "ts": ts, "lot_id": lot, "spot_id": spot_id, "occupied": occupied, **extra}
    return (sc.PARKING, device.encode(), encode(reading))


def taxi(device: str, ts: int, place: int, event: str = "NONE") -> tuple[str, bytes, bytes]:
    lat, lon = sc.PLACES[place]
    return (
        sc.TAXI,
        device.encode(),
        encode({"device_id": device, "ts": ts, "lat": lat, "lon": lon, "speed_kmh": 35.0, "event": event}),
    )


def city_of_alerts(base: int) -> list[tuple[str, bytes, bytes]]:
    """Readings that raise and clear every kind but device.offline, in event-time order per topic."""
    messages = []
    # air quality: hourly means of four stations over five hours (E only pushes the watermark on)
    hourly = {
        "env-a": [{"pm25_ugm3": 80}, {"pm25_ugm3": 90}, {"pm25_ugm3": 20}, {"pm25_ugm3": 20}],
        "env-b": [{"pm25_ugm3": 160}, {"pm25_ugm3": 170}, {"pm25_ugm3": 50}, {"pm25_ugm3": 20}],
        "env-c": [{"pm10_ugm3": 310}, {"pm10_ugm3": 320}, {"pm10_ugm3": 90}, {"pm10_ugm3": 40}],
        "env-d": [{"o3_ppm": 0.13}, {"o3_ppm": 0.05}, {"o3_ppm": 0.04}, {"o3_ppm": 0.04}],
    }
    for hour in range(4):
        for device, values in hourly.items():
            messages.append(station(device, base + hour * HOUR + 10 * MIN, **values[hour]))
    messages.append(station("env-e", base + 4 * HOUR + 10 * MIN, temp_c=9.5))
    # parking: a lot of 4 spots fills up in one minute and half empties two minutes later
    m0 = base + 5 * HOUR
    for n in range(4):
        messages.append(spot(f"pk-full-{n}", m0 + 1000 * n, "lot-full-1", f"S{n}", True))
    messages.append(spot("pk-bat", m0 + 5000, "lot-bat", "B1", True, battery_v=2.8))
    for n in range(2):
        messages.append(spot(f"pk-full-{n}", m0 + 2 * MIN + 1000 * n, "lot-full-1", f"S{n}", False))
    messages.append(spot("pk-bat", m0 + 2 * MIN + 5000, "lot-bat", "B1", True, battery_v=3.1))
    messages.append(spot("pk-push", m0 + 5 * MIN, "lot-push", "P1", False))
    # taxis: six collision warnings from three taxis in one cell, potholes from three taxis in another
    t0 = base + 6 * HOUR
    for n in range(3):
        for k in range(2):
            messages.append(taxi(f"taxi-h{n}", t0 + 1000 * (2 * n + k), 0, "FCW"))
        messages.append(taxi(f"taxi-p{n}", t0 + 10_000 + 1000 * n, 1, "POTHOLE"))
    messages.append(taxi("taxi-push", t0 + 62 * MIN, 2))  # an hour without warnings: the hotspot clears
    messages.append(taxi("taxi-push", t0 + 24 * HOUR + 2 * MIN, 2))  # a day without hazards: cleared
    return messages


EXPECTED_PAIRS = {
    ("air.pm25_advisory", "env-a"),
    ("air.pm25_advisory", "env-b"),
    ("air.pm25_warning", "env-b"),
    ("air.pm10_advisory", "env-c"),
    ("air.pm10_warning", "env-c"),
    ("air.o3_advisory", "env-d"),
    ("parking.lot_full", "lot-full-1"),
    ("device.battery_low", "pk-bat"),
    ("adas.hotspot", sc.h3.latlng_to_cell(*sc.PLACES[0], 9)),
    ("road.hazard", sc.h3.latlng_to_cell(*sc.PLACES[1], 9)),
}
STATIONS = {"env-a", "env-b", "env-c", "env-d", "env-e"}
SENSORS = {"pk-full-0", "pk-full-1", "pk-full-2", "pk-full-3", "pk-bat", "pk-push"}


def alert_documents(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


async def all_alerts(kafka: str, expected: int) -> list[dict[str, Any]]:
    return alert_documents(await read_topic(kafka, ALERTS, expected=expected, timeout=5))


def test_every_alert_kind_raised_and_cleared_once_across_a_sigkill(
    own_kafka: str, influx_url: str, tmp_path: Path
) -> None:
    database = unique("alerts_all")
    registry = tmp_path / "registry.yaml"
    registry.write_text("parking_lots:\n  lot-full-1: {capacity: 4}\n  lot-bat: {capacity: 10}\n")
    thresholds = json.dumps({"station_offline_ms": OFFLINE_MS, "parking_offline_ms": OFFLINE_MS})
    env = worker_env(
        own_kafka,
        influx_url,
        database,
        CITYSTREAM_SOURCE_PARTITIONS="1",
        CITYSTREAM_REGISTRY=str(registry),
        CITYSTREAM_CHECKPOINT_INTERVAL_S="0.5",
        CITYSTREAM_KAFKA_SESSION_TIMEOUT_S="6",
        CITYSTREAM_ALERT_THRESHOLDS=thresholds,
    )
    base = now_ms() - now_ms() % HOUR - 34 * HOUR
    messages = city_of_alerts(base)
    worker = WorkerProcess(tmp_path, env).start()
    try:
        # the worker creates the topics with one partition each: wait for it before producing
        wait_for(lambda: "Worker]: Ready" in worker.log(), 60, "the worker to start", worker)
        asyncio.run(produce(own_kafka, messages[: len(messages) // 2]))
        wait_for(lambda: len(asyncio.run(all_alerts(own_kafka, 1))) >= 1, 90, "a first alert", worker)
        worker.kill()  # SIGKILL between two alerts' worth of input
        worker = WorkerProcess(tmp_path, env, log_path=tmp_path / "after-kill.log").start()
        asyncio.run(produce(own_kafka, messages[len(messages) // 2 :]))

        missing: list[Any] = []

        def raised_and_cleared() -> bool:
            seen = Counter(
                (a["kind"], a["subject"]["id"], a["status"]) for a in asyncio.run(all_alerts(own_kafka, 10**6))
            )
            missing[:] = [(k, s, st) for k, s in EXPECTED_PAIRS for st in ("raised", "cleared") if not seen[(k, s, st)]]
            return not missing

        try:
            wait_for(raised_and_cleared, 180, "every kind raised and cleared", worker)
        except AssertionError as exc:
            raise AssertionError(f"missing {missing}\n{exc}") from None
        # device.offline: every device goes silent; two of them report again
        wait_for(
            lambda: (
                {a["subject"]["id"] for a in asyncio.run(all_alerts(own_kafka, 10**6)) if a["kind"] == "device.offline"}
                >= STATIONS | SENSORS
            ),
            90,
            "offline alerts",
            worker,
        )
        fresh = [station("env-a", now_ms(), temp_c=8.0), spot("pk-bat", now_ms(), "lot-bat", "B1", True)]
        asyncio.run(produce(own_kafka, fresh))
        wait_for(
            lambda: (
                sum(
                    1
                    for a in asyncio.run(all_alerts(own_kafka, 10**6))
                    if a["kind"] == "device.offline" and a["status"] == "cleared"
                )
                >= 2
            ),
            60,
            "offline cleared",
            worker,
        )
        time.sleep(3)  # anything published twice would show up now
        alerts = asyncio.run(all_alerts(own_kafka, 10**6))
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]

    once = Counter((a["alert_id"], a["status"]) for a in alerts)
    assert [key for key, n in once.items() if n > 1] == [], "an alert was published twice"
    by_id: dict[str, dict[str, dict[str, Any]]] = {}
    for alert in alerts:
        by_id.setdefault(alert["alert_id"], {})[alert["status"]] = alert
    for statuses in by_id.values():
        assert "raised" in statuses, f"a clear without its raise: {statuses}"
    pairs = {(a["kind"], a["subject"]["id"]) for a in alerts}
    assert pairs == EXPECTED_PAIRS | {("device.offline", d) for d in STATIONS | SENSORS}
    offline_cleared = {a["subject"]["id"] for a in alerts if a["kind"] == "device.offline" and a["status"] == "cleared"}
    assert offline_cleared == {"env-a", "pk-bat"}
    for kind, subject in EXPECTED_PAIRS:
        assert sum(1 for a in alerts if (a["kind"], a["subject"]["id"]) == (kind, subject)) == 2, (kind, subject)

    advisory = next(
        a for a in alerts if a["alert_id"].startswith("air.pm25_advisory:env-a:") and a["status"] == "raised"
    )
    hour1 = base + HOUR
    assert advisory["window_start"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(hour1 / 1000))
    assert advisory["value"] == 90.0 and advisory["threshold"] == 75.0
    assert advisory["severity"] == "warning" and advisory["subject"] == {"type": "station", "id": "env-a"}
    assert set(advisory) == {
        "alert_id",
        "kind",
        "status",
        "severity",
        "subject",
        "window_start",
        "window_end",
        "value",
        "threshold",
        "message",
        "emitted_at",
    }
    assert "2 consecutive hours" in advisory["message"]

    # the alerts measurement holds one point per alert on the topic
    rows = influx_rows(influx_url, database, "SELECT * FROM alerts GROUP BY *")
    assert sorted((r["alert_id"], r["status"]) for r in rows) == sorted(once)
    row = next(r for r in rows if r["alert_id"] == advisory["alert_id"] and r["status"] == "raised")
    assert (row["kind"], row["severity"], row["subject_type"], row["subject_id"], row["value"]) == (
        "air.pm25_advisory",
        "warning",
        "station",
        "env-a",
        90.0,
    )
    assert row["time"] == hour1 + HOUR  # the window end, in milliseconds
    # subjects are tags: one series per subject
    subjects = influx_rows(influx_url, database, 'SELECT count("value") FROM alerts GROUP BY "subject_id"')
    assert {r["subject_id"] for r in subjects} == {r["subject_id"] for r in rows}


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    failures_left = 2

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Receiver.failures_left > 0:
            _Receiver.failures_left -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Receiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _alert(kind: str, subject: str, status: str, severity: str, n: int) -> dict[str, Any]:
    return {
        "alert_id": f"{kind}:{subject}:2026-11-21T0{n}:00:00Z",
        "kind": kind,
        "status": status,
        "severity": severity,
        "subject": {"type": "station", "id": subject},
        "window_start": f"2026-11-21T0{n}:00:00Z",
        "window_end": f"2026-11-21T0{n + 1}:00:00Z",
        "value": 80.0,
        "threshold": 75.0,
        "message": f"test alert {n}",
        "emitted_at": "2026-11-21T10:00:00.000Z",
    }


async def test_alert_consumer_filters_prints_and_posts_with_retries(own_kafka: str, tmp_path: Path) -> None:
    alerts = [_alert("air.pm25_advisory", f"env-{n}", "raised", "warning", n) for n in range(4)]
    alerts += [_alert("parking.lot_full", "lot-9", "raised", "info", 5)]
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Receiver)
    _Receiver.received, _Receiver.failures_left = [], 2
    threading.Thread(target=server.serve_forever, daemon=True).start()
    executable = shutil.which("citystream")
    assert executable
    try:
        await create_topics(own_kafka)
        await produce(own_kafka, [(ALERTS, a["subject"]["id"].encode(), encode(a)) for a in alerts])
        result = subprocess.run(
            [
                executable,
                "alerts",
                "--from-beginning",
                "--kind",
                "air",
                "--webhook",
                f"http://127.0.0.1:{server.server_port}/hook",
                "--count",
                "4",
                "--group",
                "test-webhook",
            ],
            env={"CITYSTREAM_KAFKA_BOOTSTRAP": own_kafka, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 4 and all("RAISED" in line and "air.pm25_advisory" in line for line in lines)
    assert "lot-9" not in result.stdout  # filtered out by --kind air
    assert _Receiver.failures_left == 0  # the receiver's 503s were retried
    assert sorted(a["alert_id"] for a in _Receiver.received) == sorted(a["alert_id"] for a in alerts[:4])
    assert "retrying" in result.stderr
