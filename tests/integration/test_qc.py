"""Data-quality flags end to end (schemas/CONTRACT.md sections 5.1 and 6): a day of one station, with a
spike and a stuck period, replayed through a real broker and worker into InfluxDB, with and without
SIGKILLs; every reading's flags, the windows' counts and the device.stuck alert are checked."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from schemas.codec import loads
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

ENV = "city.env.v1"
ALERTS = "city.alerts.v1"
MINUTE = 60_000
HOUR = 60 * MINUTE
STATION = "env-qc-1"
SPIKE_AT = 100  # minute of the day: 350 µg/m³ between 24 and 21
STUCK = range(300, 441)  # minutes of the day at 42.0: 141 minutes, two hours and more


def value_at(minute: int) -> float:
    if minute == SPIKE_AT:
        return 350.0
    if minute in STUCK:
        return 42.0
    return 20.0 + minute % 5  # varies every minute, by at most 4 µg/m³


def expected_flags(minute: int) -> tuple[int, str | None]:
    """(qc, qc_tests) of the reading of ``minute``, as section 5.1 and the README's defaults say."""
    if minute == SPIKE_AT:
        return 3, "pm25_ugm3:spike"
    if minute in STUCK:
        run = minute - STUCK.start  # minutes since the value last changed
        if run >= 120:
            return 4, "pm25_ugm3:flat_line"
        if run >= 30:
            return 3, "pm25_ugm3:flat_line"
    return 1, None


def day_messages(day_start: int) -> list[tuple[str, bytes, bytes]]:
    return [
        (
            ENV,
            STATION.encode(),
            encode({"device_id": STATION, "ts": day_start + m * MINUTE, "seq": m, "pm25_ugm3": value_at(m)}),
        )
        for m in range(24 * 60)
    ]


def raw_flags(url: str, database: str) -> dict[int, tuple[Any, Any]]:
    rows = influx_rows(url, database, f"SELECT qc, qc_tests FROM environment WHERE device_id = '{STATION}'")
    return {int(r["time"]): (r["qc"], r["qc_tests"] or None) for r in rows}


@pytest.mark.parametrize("kills", [0, 3], ids=["straight", "sigkill"])
async def test_a_day_of_a_station_with_a_spike_and_a_stuck_period(
    own_kafka: str, influx_url: str, tmp_path: Path, kills: int
) -> None:
    database = unique("qc_day")
    now = now_ms()
    day_start = now - now % (24 * HOUR) - 24 * HOUR  # yesterday, UTC
    messages = day_messages(day_start)
    env = worker_env(
        own_kafka,
        influx_url,
        database,
        CITYSTREAM_SOURCE_PARTITIONS="1",
        CITYSTREAM_CHECKPOINT_INTERVAL_S="0.5",
        CITYSTREAM_KAFKA_SESSION_TIMEOUT_S="6",
    )
    await create_topics(own_kafka, partitions=1)
    worker = WorkerProcess(tmp_path, env).start()
    rng = random.Random(kills)
    expected = {day_start + m * MINUTE: expected_flags(m) for m in range(24 * 60)}
    try:
        chunks = [messages[i : i + 240] for i in range(0, len(messages), 240)]
        for number, chunk in enumerate(chunks):
            await produce(own_kafka, chunk)
            if number < kills:
                await asyncio.sleep(rng.uniform(0.3, 2.0))
                worker.kill()
                worker = WorkerProcess(tmp_path, env, log_path=tmp_path / f"worker-after-kill-{number}.log").start()
        wait_for(lambda: raw_flags(influx_url, database) == expected, 180, "every reading's flags", worker)

        # the windows count the flagged readings: per hour, from the expected flags
        hours = influx_rows(
            influx_url,
            database,
            f"SELECT readings, qc_suspect, qc_fail FROM environment_1h WHERE device_id = '{STATION}'",
        )
        counted = {int(r["time"]): (r["readings"], r["qc_suspect"], r["qc_fail"]) for r in hours}
        wanted: dict[int, list[int]] = {}
        for ts, (qc, _) in expected.items():
            hour = wanted.setdefault(ts - ts % HOUR, [0, 0, 0])
            hour[0] += 1
            hour[1] += qc == 3
            hour[2] += qc == 4
        assert counted == {start: tuple(c) for start, c in wanted.items()}
        assert sum(c[1] for c in wanted.values()) == 1 + 90 and sum(c[2] for c in wanted.values()) == 21

        # device.stuck raised once, at the minute two hours into the flat run, and cleared once, by
        # the first minute that varies again
        alerts: list[dict[str, Any]] = []
        for _ in range(30):
            documents = [loads(r.value) for r in await read_topic(own_kafka, ALERTS, expected=10**6, timeout=2)]
            alerts = [a for a in documents if a["kind"] == "device.stuck"]
            if len(alerts) >= 2:
                break
            assert worker.alive(), worker.log()[-3000:]
        await asyncio.sleep(3)  # a repeat would come within a few checkpoints
        documents = [loads(r.value) for r in await read_topic(own_kafka, ALERTS, expected=10**6, timeout=2)]
        alerts = [a for a in documents if a["kind"] == "device.stuck"]
        assert [(a["status"], a["subject"]) for a in alerts] == [
            ("raised", {"type": "device", "id": STATION}),
            ("cleared", {"type": "device", "id": STATION}),
        ]
        assert alerts[0]["alert_id"] == alerts[1]["alert_id"]
        assert alerts[0]["value"] == 7200.0 and alerts[0]["threshold"] == 7200.0
        # in InfluxDB too: one point each, with the subject as tags
        points = influx_rows(
            influx_url, database, "SELECT alert_id, status, subject_id FROM alerts WHERE kind = 'device.stuck'"
        )
        assert sorted((p["status"], p["subject_id"]) for p in points) == [("cleared", STATION), ("raised", STATION)]
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
