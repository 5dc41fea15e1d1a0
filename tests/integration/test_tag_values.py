"""Tag values that line protocol cannot carry as they are, through a real InfluxDB 1.6.7 and a real worker.

A district with a line break, a control character, or a backslash that InfluxDB's parser would take
as an escape must neither break a write (a 400 that loses the point and its windows) nor split a
window in the worker that InfluxDB then stores as one series (the last write of the two wins).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from schemas.readings import EnvReading
from streams.clients.kafka import contract_topics, ensure_topics
from streams.core.lineprotocol import normalize_tag
from streams.core.registry import Registry, StationInfo
from streams.kinds.environment import UNKNOWN_DISTRICT, raw_point
from streams.tools.localstack import create_database
from tests.integration.helpers import (
    WorkerProcess,
    encode,
    influx_query,
    influx_rows,
    now_ms,
    produce,
    unique,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration

ENV = "city.env.v1"
MINUTE = 60_000

NASTY_DISTRICTS = [
    *[f"k{chr(code)}" for code in [*range(0x20), 0x7F]],
    "\njung",
    "ju\nng",
    "jung\n",
    "jung\r\n",
    "\t",
    " ",
    "trailing\\",
    "trailing\\\\\\",
    "a\\ b",
    "a\\,b",
    "a\\=b",
    'a\\"b',
    "a\\\\\\ b",
    'a\\ \\,\\=\\"b\\',
    "a\\\n",
    "back\\slash",
    "a\\\\b",
    "\\a",
    'say "hi"',
    "a,b=c d",
    "대구 중구\\",
    "\\",
    "\\\\\\",
]


def _write(url: str, database: str, line: str) -> tuple[int, str]:
    params = urllib.parse.urlencode({"db": database, "precision": "ms"})
    request = urllib.request.Request(f"{url}/write?{params}", data=line.encode("utf-8"), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_influxdb_stores_each_district_as_normalize_tag_says(influx_url: str) -> None:
    database = "tag_values_round_trip"
    create_database(influx_url, database)
    registry = Registry(env_stations={"tagr-registry": StationInfo(district="seo\t\\")})
    ts = now_ms() - 60_000
    expected: dict[str, str] = {"tagr-registry": "seo ", "tagr-none": UNKNOWN_DISTRICT}
    readings = [EnvReading.model_validate({"device_id": device, "ts": ts, "pm25_ugm3": 1.0}) for device in expected]
    for number, district in enumerate(NASTY_DISTRICTS):
        device = f"tagr-{number:02d}"
        readings.append(
            EnvReading.model_validate({"device_id": device, "ts": ts, "district": district, "pm25_ugm3": 1.0})
        )
        expected[device] = normalize_tag(district) or UNKNOWN_DISTRICT
    assert expected["tagr-00"] == "k " and expected[f"tagr-{len(NASTY_DISTRICTS) - 1:02d}"] == UNKNOWN_DISTRICT

    for reading in readings:  # one write per point, so that each answer belongs to one value
        line = raw_point(reading, registry)
        assert _write(influx_url, database, line) == (204, ""), line

    rows = influx_rows(influx_url, database, "SELECT pm25_ugm3 FROM environment GROUP BY device_id, district")
    assert {row["device_id"]: row["district"] for row in rows} == expected
    assert len(rows) == len(expected)
    series = influx_query(influx_url, database, 'SHOW TAG VALUES FROM environment WITH KEY = "district"')
    assert {value for _, value in series[0]["values"]} == set(expected.values())


def _reading(device_id: str, ts: int, pm25: float, district: str | None) -> tuple[str, bytes, bytes]:
    document: dict[str, Any] = {"device_id": device_id, "ts": ts, "pm25_ugm3": pm25}
    if district is not None:
        document["district"] = district
    return ENV, device_id.encode(), encode(document)


async def test_worker_keeps_points_and_windows_of_districts_with_odd_characters(
    kafka_bootstrap: str, influx_url: str, tmp_path: Path
) -> None:
    database = unique("tag_values_worker")
    devices = "device_id =~ /^tagv-/"  # the session broker holds other tests' readings too
    minute = now_ms() // MINUTE * MINUTE - 5 * MINUTE
    await ensure_topics(kafka_bootstrap, contract_topics(4), timeout_s=30)
    worker = WorkerProcess(tmp_path, worker_env(kafka_bootstrap, influx_url, database)).start()
    try:
        await produce(
            kafka_bootstrap,
            [
                _reading("tagv-jung", minute + 1_000, 10.0, "jung\n"),
                # one station, one minute, two districts that InfluxDB stores as the same tag value
                _reading("tagv-k", minute + 2_000, 20.0, "k\u0001"),
                _reading("tagv-k", minute + 3_000, 40.0, "k "),
            ],
        )

        def raw() -> set[tuple[str, str, int]]:
            rows = influx_rows(influx_url, database, f"SELECT pm25_ugm3 FROM environment WHERE {devices} GROUP BY *")
            return {(row["device_id"], row["district"], row["time"]) for row in rows}

        wait_for(lambda: len(raw()) >= 2, 40, "the first raw points", worker)
        # a later reading, written after the odd ones
        await produce(kafka_bootstrap, [_reading("tagv-dong", minute + 4_000, 30.0, "dong")])
        expected_raw = {
            ("tagv-jung", "jung ", minute + 1_000),
            ("tagv-k", "k ", minute + 2_000),
            ("tagv-k", "k ", minute + 3_000),
            ("tagv-dong", "dong", minute + 4_000),
        }
        expected_minutes = {("tagv-jung", "jung "): 1, ("tagv-k", "k "): 2, ("tagv-dong", "dong"): 1}

        def minutes() -> dict[tuple[str, str], int]:
            rows = influx_rows(
                influx_url,
                database,
                f"SELECT readings FROM environment_1m WHERE {devices} AND time = {minute}ms GROUP BY *",
            )
            return {(row["device_id"], row["district"]): row["readings"] for row in rows}

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (raw() != expected_raw or minutes() != expected_minutes):
            assert worker.alive(), worker.log()[-3000:]
            time.sleep(0.3)
        log = worker.log()
        # a 400 names the lines it could not parse (the session broker may hold other tests' readings)
        rejected = [line for line in log.splitlines() if "rejected points" in line and "tagv-" in line]
        got_raw, got_minutes = raw(), minutes()
        shown = f"raw points: {sorted(got_raw)}\nenvironment_1m: {got_minutes}\n" + "\n".join(rejected[:5])
        assert got_raw == expected_raw, shown
        assert got_minutes == expected_minutes, shown
        assert not rejected, shown
        assert worker.alive(), log[-3000:]
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
