"""``citystream report`` against the real InfluxDB and Kafka broker: known points and dead letters in,
valid PNGs and HTML out, and the summary's figures equal to what was written."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import h3
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner
from PIL import Image

from streams.clients.kafka import DEADLETTER_TOPIC, TopicSpec, ensure_topics
from streams.tools.localstack import create_database
from streams.tools.report import report_command
from tests.integration.helpers import now_ms, unique

pytestmark = pytest.mark.integration

DATABASE = "report_test"
LOT_FULL = "alerts,kind=parking.lot_full,severity=info,subject_type=lot"  # the start of an alerts point
STUCK = "alerts,kind=device.stuck,severity=warning,subject_type=device"
MINUTE = 60_000


def write_lines(url: str, database: str, lines: list[str], precision: str = "ms") -> None:
    query = urllib.parse.urlencode({"db": database, "precision": precision})
    request = urllib.request.Request(f"{url}/write?{query}", data="\n".join(lines).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204


async def produce_dead_letters(bootstrap: str, letters: list[tuple[int, str]]) -> None:
    """Send dead letters (Kafka timestamp, reason) in the given order, to one partition so they stay in order."""
    await ensure_topics(bootstrap, [TopicSpec(DEADLETTER_TOPIC, 4, {})], timeout_s=30)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for timestamp, reason in letters:
            value = orjson.dumps(
                {
                    "source": {"topic": "city.env.v1", "partition": 0, "offset": 1},
                    "index": None,
                    "reason": reason,
                    "errors": [],
                    "payload": "x",
                    "payload_b64": None,
                }
            )
            await producer.send_and_wait(
                DEADLETTER_TOPIC, value, key=b"report-test", partition=1, timestamp_ms=timestamp
            )
    finally:
        await producer.stop()


def rfc3339(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_report_of_known_points(influx_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    database = unique(DATABASE)  # the session's InfluxDB serves the tests of both brokers
    # a range in the near future: no other test's dead letter (stamped with the time it was sent) lies in it
    start = now_ms() + 10 * MINUTE
    start -= start % MINUTE
    end = start + 5 * MINUTE
    create_database(influx_url, database)
    cells = [h3.latlng_to_cell(35.8694, 128.5939, 9), h3.latlng_to_cell(35.8400, 128.6480, 9)]
    zeros = "ufcw=0i,pcw=0i,ldw=0i,hmw=0i,overspeed=0i,obstacle=0i"
    lines = [
        # two stations, three minutes
        *(
            f"environment_1m,device_id=env-jung-01,district=jung readings=1i,pm25_ugm3_mean={v} {start + i * MINUTE}"
            for i, v in enumerate((12.0, 40.0, 95.5))
        ),
        *(
            f"environment_1m,device_id=env-suseong-01,district=suseong readings=2i,pm25_ugm3_mean={v} "
            f"{start + i * MINUTE}"
            for i, v in enumerate((20.0, 22.0, 18.0))
        ),
        # one lot, filling up
        *(
            f"parking_1m,lot_id=lot-a occupied={o}i,known_spots=80i,capacity=80i,occupancy={o / 80},changes=3i "
            f"{start + i * MINUTE}"
            for i, o in enumerate((40, 60, 78))
        ),
        # warnings in one cell, readings only in the other
        f"taxi_adas_1m,cell={cells[0]} readings=30i,taxis=4i,speed_mean=30,speed_min=0,speed_max=50,fcw=2i,"
        f"pothole=1i,{zeros} {start}",
        f"taxi_adas_1m,cell={cells[0]} readings=20i,taxis=3i,speed_mean=30,speed_min=0,speed_max=50,fcw=1i,"
        f"pothole=0i,{zeros} {start + MINUTE}",
        f"taxi_adas_1m,cell={cells[1]} readings=50i,taxis=5i,speed_mean=30,speed_min=0,speed_max=50,fcw=0i,"
        f"pothole=0i,{zeros} {start + 2 * MINUTE}",
        # raw parking readings: four in the range
        *(f"parking,lot_id=lot-a,spot_id=A00{i} occupied=1i {start + i * 20_000}" for i in range(4)),
        f'{LOT_FULL},status=raised,subject_id=lot-a value=0.975,threshold=0.95,message="full",alert_id="x" '
        f"{start + 3 * MINUTE}",
        f'{LOT_FULL},status=raised,subject_id=lot-b value=0.975,threshold=0.95,message="full",alert_id="y" '
        f"{end + MINUTE}",
        # a raw reading a data-quality test flagged, one it passed, and a stuck station's alerts: one raised
        # before the range and cleared in it, one raised in it
        'environment,device_id=env-jung-01,district=jung pm25_ugm3=350,qc=3i,qc_tests="pm25_ugm3:spike" '
        f"{start + 90_000}",
        f"environment,device_id=env-jung-01,district=jung pm25_ugm3=20,qc=1i {start + 150_000}",
        f'{STUCK},status=raised,subject_id=env-old value=7200,threshold=7200,message="old stuck",alert_id="o" '
        f"{start - 10 * MINUTE}",
        f'{STUCK},status=cleared,subject_id=env-old value=0,threshold=7200,message="varies",alert_id="o" '
        f"{start + MINUTE}",
        f'{STUCK},status=raised,subject_id=env-jung-01 value=7300,threshold=7200,message="pm25_ugm3 unchanged",'
        f'alert_id="s" {start + 2 * MINUTE}',
        # outside the range: ignored
        f"environment_1m,device_id=env-jung-01,district=jung readings=7i,pm25_ugm3_mean=300 {end}",
        f"taxi_adas_1m,cell={cells[0]} readings=999i,fcw=99i {start - MINUTE}",
        f"parking,lot_id=lot-a,spot_id=A009 occupied=0i {start - 1}",
    ]
    write_lines(influx_url, database, lines)
    # an alert's time is its window's end: this one's window ends with the range, at the same time as
    # another lot's (subjects are tags: two series, two points)
    cleared = 'value=0.8,threshold=0.85,message="free",alert_id="x"'
    write_lines(
        influx_url,
        database,
        [
            f"{LOT_FULL},status=cleared,subject_id=lot-a {cleared} {end}",
            f"{LOT_FULL},status=cleared,subject_id=lot-c {cleared} {end}",
        ],
    )
    letters = [
        (start - 30_000, "schema"),  # before the range
        (start + 5_000, "schema"),
        (start + 10_000, "malformed_json"),
        (start + 70_000, "schema"),
        (start + 4 * MINUTE + 59_000, "too_large"),
        (end, "schema"),  # the range's end is exclusive
        (end + MINUTE, "bad_batch"),
    ]
    asyncio.run(produce_dead_letters(kafka_bootstrap, letters))
    registry = tmp_path / "registry.yaml"
    registry.write_text("parking_lots:\n  lot-a: {capacity: 80, district: jung, lat: 35.87, lon: 128.59}\n")
    out = tmp_path / "report"
    result = CliRunner().invoke(
        report_command,
        ["--from", rfc3339(start), "--to", rfc3339(end), "--out", str(out)],
        env={
            "CITYSTREAM_INFLUX_URL": influx_url,
            "CITYSTREAM_INFLUX_DB": database,
            "CITYSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "CITYSTREAM_REGISTRY": str(registry),
        },
    )
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'report.html'}" in result.output

    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["range"]["start_ms"] == start and summary["range"]["end_ms"] == end
    assert summary["readings"] == {"taxi": 100, "parking": 4, "environment": 9}
    assert summary["dead_letters"] == {"total": 4, "by_reason": {"malformed_json": 1, "schema": 2, "too_large": 1}}
    assert summary["stations"] == 2
    assert summary["pm25_max_ugm3"] == 95.5
    assert summary["lots"] == 1
    assert (summary["cells_with_readings"], summary["cells_with_warnings"]) == (2, 1)
    assert summary["adas_counts"] == {
        "fcw": 3,
        "ufcw": 0,
        "pcw": 0,
        "ldw": 0,
        "hmw": 0,
        "overspeed": 0,
        "pothole": 1,
        "obstacle": 0,
    }
    assert summary["alerts"] == {
        "device.stuck cleared": 1,
        "device.stuck raised": 1,
        "parking.lot_full cleared": 2,
        "parking.lot_full raised": 1,
    }
    assert summary["pm25_flagged"] == {"env-jung-01": 1}
    assert [(s["station"], s["cleared_utc"] is None) for s in summary["stuck_stations"]] == [
        ("env-old", False),
        ("env-jung-01", True),
    ]

    charts = {name: out / name for name in ("pm25.png", "parking.png", "adas_map.png", "throughput.png")}
    for path in charts.values():
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG"
            assert image.size[0] >= 1000 and image.size[1] >= 500
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(e) for e in embedded] == [path.read_bytes() for path in charts.values()]
    assert "<td>env-jung-01</td>" in page and "still stuck" in page and "pm25_ugm3 unchanged" in page
    # the top cells table, the district taken from the registry
    assert f"<code>{cells[0]}</code></td><td>jung</td><td>3</td>" in page
    with Image.open(io.BytesIO(base64.b64decode(embedded[2]))) as image:
        assert image.size == Image.open(charts["adas_map.png"]).size


def test_report_of_an_empty_range(influx_url: str, tmp_path: Path) -> None:
    create_database(influx_url, DATABASE)
    out = tmp_path / "empty"
    result = CliRunner().invoke(
        report_command,
        [
            "--from",
            "2020-01-01T00:00:00+09:00",
            "--to",
            "2020-01-01T01:00:00+09:00",
            "--out",
            str(out),
            "--no-dead-letters",
        ],
        env={"CITYSTREAM_INFLUX_URL": influx_url, "CITYSTREAM_INFLUX_DB": DATABASE},
    )
    assert result.exit_code == 0, result.output
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["readings"] == {"taxi": 0, "parking": 0, "environment": 0}
    assert summary["dead_letters"] is None and summary["stations"] == 0
    for name in ("pm25.png", "parking.png", "adas_map.png", "throughput.png"):
        with Image.open(out / name) as image:
            image.verify()


def test_report_names_a_missing_database(influx_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        report_command,
        ["--since", "10m", "--out", str(tmp_path), "--no-dead-letters"],
        env={"CITYSTREAM_INFLUX_URL": influx_url, "CITYSTREAM_INFLUX_DB": "no_such_database"},
    )
    assert result.exit_code == 1
    assert "database not found" in result.output and "CITYSTREAM_INFLUX_DB" in result.output
