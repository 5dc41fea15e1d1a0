"""Faults against real processes, counting what arrived: the partition leader of a three-node cluster
SIGKILLed mid-stream, a worker SIGKILLed while InfluxDB is down, the broker unreachable for a minute,
and a worker taking over the partitions of one SIGKILLed beside it.

After each fault the test counts every raw point in InfluxDB, compares every window with the
aggregates computed independently from the readings (tests/integration/scenario.py), reads the alerts
topic (none repeated, none lost) and the ``alerts`` measurement, and prints a line of figures
(``FIGURES ...``, shown with ``pytest -s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import h3
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streams.clients.kafka import ALERTS_TOPIC, topic_end_offsets
from streams.rules.policy import BATTERY_LOW, HOTSPOT, ROAD_HAZARD, AlertPolicy
from streams.tools.localstack import KafkaCluster, ManagedService, apache_kafka, free_port
from tests.integration import scenario as sc
from tests.integration.helpers import (
    WorkerProcess,
    count_points,
    create_topics,
    encode,
    influx_query,
    influx_rows,
    now_ms,
    produce,
    read_topic,
    unique,
    wait_for,
    worker_env,
)
from tests.integration.test_windows import (
    actual_windows,
    expected_windows,
    hour_aligned_hours_ago,
    wait_exact,
    window_env,
)

pytestmark = pytest.mark.integration

DAY_MS = 24 * sc.HOUR
# device.offline runs on the wall clock: out of these tests' way (their devices fall silent at the end)
QUIET_THRESHOLDS = json.dumps({"station_offline_ms": 7 * DAY_MS, "parking_offline_ms": 7 * DAY_MS})
MAX_LATENESS_MS = 600_000  # CITYSTREAM_MAX_LATENESS_S's default
RAW_FIELDS = {"taxi_adas": "speed_kmh", "parking": "occupied", "environment": "pm25_ugm3"}
COLLISIONS = {"FCW", "UFCW", "PCW"}
HAZARDS = {"POTHOLE", "OBSTACLE"}

Message = tuple[str, bytes, bytes]


def figures(test: str, **values: object) -> None:
    """One line of what a test counted and measured."""
    shown = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in values.items())
    print(f"\nFIGURES {test}: {shown}", flush=True)


def chunks(messages: Sequence[Message], count: int) -> list[list[Message]]:
    size = -(-len(messages) // count)
    return [list(messages[i : i + size]) for i in range(0, len(messages), size)]


def fault_env(
    bootstrap: str, influx_url: str, database: str, tmp_path: Path, scenario: sc.Scenario, **extra: str
) -> dict[str, str]:
    return window_env(
        bootstrap, influx_url, database, tmp_path, scenario, CITYSTREAM_ALERT_THRESHOLDS=QUIET_THRESHOLDS, **extra
    )


# ----------------------------------------------------------------------------- producing


async def produce_acked(bootstrap: str, messages: Sequence[Message], attempts: int = 6) -> int:
    """Send messages with acks=all and an idempotent producer; what fails (a leader lost before
    it replicated, a metadata timeout) is sent again. Returns the number sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=30_000,
        retry_backoff_ms=250,
        linger_ms=5,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    pending = list(messages)
    try:
        for _ in range(attempts):
            deliveries: list[asyncio.Future[Any] | BaseException] = []
            for topic, key, value in pending:
                try:
                    deliveries.append(await producer.send(topic, value, key=key))
                except KafkaError as exc:
                    deliveries.append(exc)
            results = await asyncio.gather(
                *(d for d in deliveries if not isinstance(d, BaseException)), return_exceptions=True
            )
            outcome = iter(results)
            failed = [
                message
                for message, delivery in zip(pending, deliveries, strict=True)
                if isinstance(delivery, BaseException) or isinstance(next(outcome), BaseException)
            ]
            if not failed:
                return len(messages)
            pending = failed
            await asyncio.sleep(1)
    finally:
        await producer.stop()
    raise AssertionError(f"{len(pending)} messages were never acknowledged by every in-sync replica")


# ----------------------------------------------------------------------------- what must arrive


def point_keys(messages: Iterable[Message]) -> dict[str, set[tuple[Any, ...]]]:
    """The raw points the readings make, by measurement: one per series and time (a reading sent
    twice, or two readings of one series at one instant, are one point)."""
    keys: dict[str, set[tuple[Any, ...]]] = {name: set() for name in RAW_FIELDS}
    for topic, _key, value in messages:
        r = orjson.loads(value)
        if topic == sc.TAXI:
            cell = h3.latlng_to_cell(r["lat"], r["lon"], 9)
            keys["taxi_adas"].add((cell, r["device_id"], r["event"], r["ts"]))
        elif topic == sc.PARKING:
            keys["parking"].add((r["lot_id"], r["spot_id"], r["ts"]))
        elif topic == sc.ENV:
            keys["environment"].add((r["device_id"], r["ts"]))
    return keys


def expected_points(messages: Iterable[Message]) -> dict[str, int]:
    return {name: len(keys) for name, keys in point_keys(messages).items()}


def found_points(url: str, database: str, where: str = "") -> dict[str, int]:
    return {name: count_points(url, database, name, field, where) for name, field in RAW_FIELDS.items()}


def wait_points(
    url: str, database: str, expected: dict[str, int], workers: list[WorkerProcess], timeout: float, what: str
) -> dict[str, int]:
    """Wait until InfluxDB holds exactly the expected raw points; return what it holds."""
    found: dict[str, int] = {}

    def arrived() -> bool:
        found.update(found_points(url, database))
        return found == expected

    try:
        wait_for(arrived, timeout, what, workers[0])
    except AssertionError as exc:
        raise AssertionError(f"raw points: expected {expected}, found {found}\n{exc}") from None
    for worker in workers:
        assert worker.alive(), worker.log()[-3000:]
    return found


def expected_battery_alerts(records: Iterable[Any]) -> Counter[tuple[str, str]]:
    """``device.battery_low`` (alert_id, status) pairs, from the parking topic as it is stored: in each
    partition's order, a reading sent twice (same device and seq) or over the maximum lateness behind
    the partition's newest reading counts once or not at all; per device, a reading older than the
    newest one judged changes nothing; below the raise threshold raises, at or above the clear
    threshold clears (schemas/CONTRACT.md section 6). A device raised, cleared and raised again
    within one minute has two raises of one alert_id: hence a Counter."""
    policy = AlertPolicy()
    by_partition: dict[int, list[Any]] = defaultdict(list)
    for record in records:
        by_partition[record.partition].append(record)
    pairs: Counter[tuple[str, str]] = Counter()
    for partition_records in by_partition.values():
        seen: set[tuple[str, int]] = set()
        watermark: int | None = None
        newest: dict[str, int] = {}
        open_alerts: dict[str, str] = {}
        for record in sorted(partition_records, key=lambda r: r.offset):
            r = orjson.loads(record.value)
            device, ts = r["device_id"], r["ts"]
            if (device, r["seq"]) in seen:
                continue
            seen.add((device, r["seq"]))
            late = watermark is not None and ts < watermark - MAX_LATENESS_MS
            watermark = ts if watermark is None else max(watermark, ts)
            if late or ts < newest.get(device, ts):
                continue
            newest[device] = ts
            volts = r["battery_v"]
            if device in open_alerts:
                if volts >= policy.battery_low_clear:
                    pairs[(open_alerts.pop(device), "cleared")] += 1
            elif volts < policy.battery_low_raise:
                start = ts - ts % sc.MINUTE
                alert_id = f"{BATTERY_LOW}:{device}:{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(start / 1000))}"
                open_alerts[device] = alert_id
                pairs[(alert_id, "raised")] += 1
    return pairs


def expected_cell_alerts(scenario: sc.Scenario, minutes: int) -> set[tuple[str, str]]:
    """The (kind, cell) pairs raised: a hotspot where the cell's readings hold at least 5 collision
    warnings from at least 3 taxis, a road hazard where at least 3 taxis reported a pothole or an
    obstacle (all the readings of a scenario of at most an hour fall in one hour's span)."""
    assert minutes * sc.MINUTE <= sc.HOUR
    policy = AlertPolicy()
    collisions: dict[str, Counter[str]] = defaultdict(Counter)
    hazards: dict[str, set[str]] = defaultdict(set)
    for topic, r in scenario.valid:
        if topic != sc.TAXI:
            continue
        cell = h3.latlng_to_cell(r["lat"], r["lon"], 9)
        if r["event"] in COLLISIONS:
            collisions[cell][r["device_id"]] += 1
        elif r["event"] in HAZARDS:
            hazards[cell].add(r["device_id"])
    pairs = {
        (HOTSPOT, cell)
        for cell, by_taxi in collisions.items()
        if sum(by_taxi.values()) >= policy.hotspot_min_warnings and len(by_taxi) >= policy.hotspot_min_taxis
    }
    pairs |= {(ROAD_HAZARD, cell) for cell, taxis in hazards.items() if len(taxis) >= policy.hazard_min_taxis}
    return pairs


def no_air_alerts_expected(scenario: sc.Scenario) -> None:
    """The scenario's hourly means stay under every air rule's raise threshold (no air alert is due)."""
    for rule in AlertPolicy().air_rules():
        for row in sc.expected_environment(scenario, sc.HOUR).values():
            assert row.get(f"{rule.quantity}_mean", 0) < rule.raise_at, (rule.kind, row)


def alert_problems(
    alerts: list[dict[str, Any]], battery: Counter[tuple[str, str]], cells: set[tuple[str, str]]
) -> list[str]:
    """What is wrong with the alerts on the topic, once the stream is over and its windows final:
    an alert published twice, a clear without its raise, a battery alert missing or unexpected, a
    cell without its alerts (or one with alerts it should not have), a hotspot not cleared (the
    windows close by the wall clock, hours after the readings), a hazard cleared (24 hours quiet)."""
    problems = []
    published = Counter((a["alert_id"], a["status"]) for a in alerts if a["kind"] != BATTERY_LOW)
    problems += [f"published {n} times: {pair}" for pair, n in published.items() if n > 1]
    raised = {a["alert_id"] for a in alerts if a["status"] == "raised"}
    cleared = {a["alert_id"] for a in alerts if a["status"] == "cleared"}
    problems += [f"cleared, never raised: {alert_id}" for alert_id in sorted(cleared - raised)]
    got_battery = Counter((a["alert_id"], a["status"]) for a in alerts if a["kind"] == BATTERY_LOW)
    problems += [f"missing {pair} x{n}" for pair, n in sorted((battery - got_battery).items())]
    problems += [f"unexpected or repeated {pair} x{n}" for pair, n in sorted((got_battery - battery).items())]
    got_cells = {(a["kind"], a["subject"]["id"]) for a in alerts if a["kind"] in (HOTSPOT, ROAD_HAZARD)}
    problems += [f"no alert for {pair}" for pair in sorted(cells - got_cells)]
    problems += [f"unexpected alert for {pair}" for pair in sorted(got_cells - cells)]
    hotspots = {a["alert_id"] for a in alerts if a["kind"] == HOTSPOT}
    problems += [f"not cleared: {alert_id}" for alert_id in sorted(hotspots - cleared)]
    hazards = {a["alert_id"] for a in alerts if a["kind"] == ROAD_HAZARD}
    problems += [f"cleared too early: {alert_id}" for alert_id in sorted(hazards & cleared)]
    others = Counter(a["kind"] for a in alerts if a["kind"] not in (BATTERY_LOW, HOTSPOT, ROAD_HAZARD))
    problems += [f"unexpected {kind} alerts: {n}" for kind, n in others.items()]
    return problems


async def check_alerts(
    bootstrap: str,
    influx_url: str,
    database: str,
    scenario: sc.Scenario,
    minutes: int,
    workers: list[WorkerProcess],
    timeout: float = 90,
) -> int:
    """Every alert due is on the topic once, and in the ``alerts`` measurement; returns how many."""
    no_air_alerts_expected(scenario)
    parking = sum(1 for topic, _, _ in scenario.messages if topic == sc.PARKING)
    battery = expected_battery_alerts(await read_topic(bootstrap, sc.PARKING, expected=parking, timeout=60))
    cells = expected_cell_alerts(scenario, minutes)
    assert battery and cells, "the scenario must raise alerts"

    async def problems_now() -> tuple[list[str], int]:
        records = await read_topic(bootstrap, ALERTS_TOPIC, expected=10**9, timeout=3)
        alerts = [orjson.loads(r.value) for r in records]
        problems = alert_problems(alerts, battery, cells)
        on_topic = {(a["alert_id"], a["status"]) for a in alerts}
        rows = influx_rows(influx_url, database, "SELECT * FROM alerts GROUP BY *")
        stored = {(r["alert_id"], r["status"]) for r in rows}
        if stored != on_topic:
            problems.append(f"{len(on_topic)} alerts on the topic, {len(stored)} in InfluxDB")
        return problems, len(alerts)

    deadline = time.monotonic() + timeout
    while True:
        problems, count = await problems_now()
        if not problems:
            break
        for worker in workers:
            assert worker.alive(), worker.log()[-3000:]
        if time.monotonic() > deadline:
            shown = "\n".join(problems[:30])
            raise AssertionError(f"{len(problems)} alert problems after {timeout:.0f} s:\n{shown}")
    await asyncio.sleep(3)  # an alert published twice would show up by now
    problems, count = await problems_now()
    assert problems == []
    return count


def window_count(scenario: sc.Scenario) -> int:
    return sum(len(windows) for windows in expected_windows(scenario).values())


# ----------------------------------------------------------------------------- the cluster


@contextlib.asynccontextmanager
async def admin_client(bootstrap: str) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def replication_factors(bootstrap: str, app_id: str) -> dict[str, set[int]]:
    """The replica counts of the partitions of every topic a worker uses: the contract's, and its
    own (repartitioned readings, partition snapshots, Faust's)."""
    async with admin_client(bootstrap) as admin:
        names = [t for t in await admin.list_topics() if t.startswith(("city.", app_id))]
        described = await admin.describe_topics(names)
    return {t["topic"]: {len(p["replicas"]) for p in t["partitions"]} for t in described}


async def leader_of_busiest(bootstrap: str, topic: str) -> tuple[int, int]:
    """(partition, leader node id) of the topic's partition holding the most messages."""
    ends = await topic_end_offsets(bootstrap, topic)
    busiest = max(ends, key=lambda tp: ends[tp]).partition
    async with admin_client(bootstrap) as admin:
        (described,) = await admin.describe_topics([topic])
    (partition,) = [p for p in described["partitions"] if p["partition"] == busiest]
    return busiest, int(partition["leader"])


async def test_the_partition_leader_sigkilled_mid_stream_loses_and_repeats_nothing(
    kafka_cluster: KafkaCluster, influx_url: str, tmp_path: Path
) -> None:
    """A worker on the three-node cluster, its topics replicated three times: the leader of the
    busiest taxi partition is SIGKILLed mid-stream, more readings are sent while it is down
    (acks=all: two in-sync replicas of three), then it is started again and the stream finished.
    The same worker process carries on and nothing is lost or repeated."""
    bootstrap = kafka_cluster.bootstrap
    database = unique("faults_leader")
    minutes = 20
    scenario = sc.build(hour_aligned_hours_ago(4), seed=53, taxis=12, minutes=minutes, lots=2, spots=8, stations=4)
    env = fault_env(
        bootstrap,
        influx_url,
        database,
        tmp_path,
        scenario,
        CITYSTREAM_TOPIC_REPLICATION="3",
        CITYSTREAM_KAFKA_SESSION_TIMEOUT_S="10",
    )
    parts = chunks(scenario.messages, 10)
    worker = WorkerProcess(tmp_path, env).start()
    try:
        wait_for(lambda: "Worker]: Ready" in worker.log(), 90, "the worker to start", worker)
        # a city's cluster: every topic the worker made is on three brokers
        replicas = await replication_factors(bootstrap, env["CITYSTREAM_APP_ID"])
        assert len(replicas) >= 10 and all(counts == {3} for counts in replicas.values()), replicas

        sent = 0
        for part in parts[:4]:
            sent += await produce_acked(bootstrap, part)
            await asyncio.sleep(0.5)
        partition, leader = await leader_of_busiest(bootstrap, sc.TAXI)
        victim = kafka_cluster.node(leader)
        killed = time.monotonic()
        assert victim.kill() is True  # the leader of the busiest taxi partition, mid-stream
        during = [m for part in parts[4:7] for m in part]
        sent += await produce_acked(bootstrap, during)  # acknowledged by the two nodes left
        before_restart = [m for part in parts[:7] for m in part]
        wait_points(
            influx_url, database, expected_points(before_restart), [worker], 120, "the points sent with a node down"
        )
        recovered_s = time.monotonic() - killed
        victim.start(timeout=120)
        for part in parts[7:]:
            sent += await produce_acked(bootstrap, part)
        assert sent == len(scenario.messages)

        found = wait_points(influx_url, database, expected_points(scenario.messages), [worker], 120, "every point")
        wait_exact(influx_url, database, scenario, [worker], timeout=120)
        alerts = await check_alerts(bootstrap, influx_url, database, scenario, minutes, [worker])
        assert worker.alive(), "the worker must ride out a broker's crash"
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    figures(
        "leader SIGKILL",
        readings_sent=sent,
        points_found=f"{sum(found.values())} of {sum(expected_points(scenario.messages).values())}",
        aggregates_compared=window_count(scenario),
        alerts_counted=alerts,
        time_to_recover=f"{recovered_s:.1f} s (node {leader}, leader of {sc.TAXI}[{partition}], killed to every "
        "point sent meanwhile in InfluxDB)",
        session_timeout="10 s",
    )


# ----------------------------------------------------------------------------- InfluxDB down


async def test_the_worker_sigkilled_while_influxdb_is_down_loses_nothing(
    own_kafka: str, influxdb: ManagedService, tmp_path: Path
) -> None:
    """InfluxDB stopped mid-stream, the worker SIGKILLed while its writes fail, InfluxDB started
    again and a new worker started: it restores the last snapshots, reads again what was not made
    durable, and every raw point, window and alert arrives once."""
    database = unique("faults_influx_down")
    minutes = 20
    scenario = sc.build(hour_aligned_hours_ago(5), seed=61, taxis=10, minutes=minutes, lots=2, spots=8, stations=4)
    env = fault_env(own_kafka, influxdb.url, database, tmp_path, scenario, CITYSTREAM_KAFKA_SESSION_TIMEOUT_S="6")
    first, second, third = chunks(scenario.messages, 3)
    await create_topics(own_kafka)
    worker = WorkerProcess(tmp_path, env).start()
    try:
        sent = await produce(own_kafka, first)
        wait_points(influxdb.url, database, expected_points(first), [worker], 90, "the first third")
        influxdb.stop()
        sent += await produce(own_kafka, second)
        wait_for(lambda: "unreachable" in worker.log(), 30, "the worker to find InfluxDB down", worker)
        time.sleep(2)  # consuming, its writes failing, its checkpoints waiting
        worker.kill()
        influxdb.start()
        worker = WorkerProcess(tmp_path, env, log_path=tmp_path / "after-kill.log").start()
        restarted = time.monotonic()
        wait_points(influxdb.url, database, expected_points(first + second), [worker], 90, "the points of the outage")
        recovered_s = time.monotonic() - restarted
        sent += await produce(own_kafka, third)
        found = wait_points(influxdb.url, database, expected_points(scenario.messages), [worker], 90, "every point")
        wait_exact(influxdb.url, database, scenario, [worker], timeout=120)
        alerts = await check_alerts(own_kafka, influxdb.url, database, scenario, minutes, [worker])
    finally:
        if not influxdb.is_running():
            influxdb.start()
        assert worker.stop() == 0, worker.log()[-3000:]
    figures(
        "worker SIGKILL with InfluxDB down",
        readings_sent=sent,
        points_found=f"{sum(found.values())} of {sum(expected_points(scenario.messages).values())}",
        aggregates_compared=window_count(scenario),
        alerts_counted=alerts,
        time_to_recover=f"{recovered_s:.1f} s (new worker started to every point of the outage in InfluxDB)",
        session_timeout="6 s",
    )


# ----------------------------------------------------------------------------- the broker away a minute

OUTAGE_S = 60
MAX_LOG_LINES_PER_S = 300


@pytest.mark.kafka
async def test_the_broker_unreachable_for_a_minute_the_worker_reconnects_by_itself(
    influx_url: str, tmp_path: Path
) -> None:
    """On Apache Kafka only: the broker must come back with its data (topics, committed offsets,
    snapshots), and Tansu keeps everything in memory; a Tansu started again is an empty broker."""
    broker = apache_kafka(free_port(), tmp_path / "kafka")
    broker.start(timeout=90)
    bootstrap = broker.address
    database = unique("faults_broker_away")
    minutes = 20
    scenario = sc.build(hour_aligned_hours_ago(6), seed=71, taxis=10, minutes=minutes, lots=2, spots=8, stations=4)
    env = fault_env(bootstrap, influx_url, database, tmp_path, scenario, CITYSTREAM_KAFKA_SESSION_TIMEOUT_S="10")
    before, after = chunks(scenario.messages, 2)
    worker = WorkerProcess(tmp_path, env).start()
    try:
        wait_for(lambda: "Worker]: Ready" in worker.log(), 90, "the worker to start", worker)
        pid = worker.pid
        sent = await produce_acked(bootstrap, before)
        # away while the worker is busy with the first half: reading, forwarding, restoring, saving
        wait_for(lambda: count_points(influx_url, database, "taxi_adas", "speed_kmh") > 0, 60, "a first point", worker)
        broker.stop()
        away = time.monotonic()
        lines_before = worker.log().count("\n")
        while time.monotonic() - away < OUTAGE_S:
            assert worker.alive(), f"the worker exited without its broker:\n{worker.log()[-3000:]}"
            time.sleep(1)
        logged = worker.log().count("\n") - lines_before
        broker.start(timeout=90)  # the same port, its data kept
        back = time.monotonic()
        # the clients retry at their backoff, not in a busy loop (which logged thousands of lines a second)
        assert logged < MAX_LOG_LINES_PER_S * OUTAGE_S, f"{logged} log lines in {OUTAGE_S} s without the broker"
        sent += await produce_acked(bootstrap, after)
        found = wait_points(influx_url, database, expected_points(scenario.messages), [worker], 120, "every point")
        recovered_s = time.monotonic() - back
        wait_exact(influx_url, database, scenario, [worker], timeout=120)
        # the broker's outage looks like quiet to the windows, which close by the wall clock after
        # the grace period: cell alerts may be cleared and raised again, but never published twice
        alerts = await check_alerts(bootstrap, influx_url, database, scenario, minutes, [worker])
        assert worker.alive() and worker.pid == pid, "the same worker process, never restarted"
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
        broker.stop()
    figures(
        f"broker away {OUTAGE_S} s",
        readings_sent=sent,
        points_found=f"{sum(found.values())} of {sum(expected_points(scenario.messages).values())}",
        aggregates_compared=window_count(scenario),
        alerts_counted=alerts,
        time_to_recover=f"{recovered_s:.1f} s (broker back to every point in InfluxDB, same worker process)",
        session_timeout="10 s",
        log_lines_while_away=logged,
    )


# ----------------------------------------------------------------------------- taking over

TAKEOVER_PARTITIONS = 12
TAKEOVER_SESSION_TIMEOUT_S = 6
TICK_S = 0.25
_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")
_TP = re.compile(r"TopicPartition\(topic='([^']+)', partition=(\d+)\)")
ASSIGNED = "Setting newly assigned partitions"


def _logged_at(line: str) -> float | None:
    """The time (epoch seconds) a worker's log line was written at."""
    stamp = _LOG_TIME.match(line)
    if stamp is None:
        return None
    return datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(stamp.group(2)) / 1000


def assignments(log: str) -> list[tuple[float, set[tuple[str, int]]]]:
    """Every partition assignment a worker logged: (epoch seconds, {(topic, partition)})."""
    found = []
    for line in log.splitlines():
        when = _logged_at(line) if ASSIGNED in line else None
        if when is not None:
            found.append((when, {(topic, int(p)) for topic, p in _TP.findall(line)}))
    return found


def restores(log: str, since: float) -> list[float]:
    """When a worker restored partitions from their snapshots, from ``since`` (epoch seconds) on."""
    times = (_logged_at(line) for line in log.splitlines() if "checkpoint: restored " in line)
    return [when for when in times if when is not None and when >= since]


def live_readings(tick: int, ts: int) -> list[tuple[str, int, bytes, bytes]]:
    """One reading of each source topic's partitions: (topic, partition, key, value); device
    ``*-P`` always to partition P."""
    messages = []
    for p in range(TAKEOVER_PARTITIONS):
        station = f"live-env-{p:02d}"
        reading = {"device_id": station, "ts": ts, "seq": tick, "pm25_ugm3": float(10 + (tick + p) % 40)}
        messages.append((sc.ENV, p, station.encode(), encode(reading)))
        sensor = f"live-pk-{p:02d}"
        spot = {"device_id": sensor, "ts": ts, "seq": tick, "lot_id": f"live-lot-{p % 3}", "spot_id": f"L{p:02d}"}
        spot |= {"occupied": False, "kind": "heartbeat", "battery_v": 3.3}
        messages.append((sc.PARKING, p, sensor.encode(), encode(spot)))
        taxi = f"live-taxi-{p:02d}"
        lat, lon = sc.PLACES[p % len(sc.PLACES)]
        ride = {"device_id": taxi, "ts": ts, "seq": tick, "lat": lat, "lon": lon, "speed_kmh": 30.0, "event": "NONE"}
        messages.append((sc.TAXI, p, taxi.encode(), encode(ride)))
    return messages


class LiveStream:
    """Readings to every source partition every TICK_S, until stopped; keeps what it sent."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.sent: list[Message] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        await producer.start()
        try:
            tick = 0
            while not self._stop.is_set():
                ts = now_ms()
                batch = live_readings(tick, ts)
                deliveries = [await producer.send(t, v, key=k, partition=p) for t, p, k, v in batch]
                await asyncio.gather(*deliveries)
                self.sent += [(t, k, v) for t, _, k, v in batch]
                tick += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), TICK_S)
        finally:
            await producer.stop()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


def newest_point_ms(url: str, database: str) -> dict[tuple[str, int], int]:
    """The time of the newest raw point of each live device, by its source partition."""
    newest = {}
    for topic, measurement, field, tag, pattern in (
        (sc.ENV, "environment", "pm25_ugm3", "device_id", "live-env-"),
        (sc.PARKING, "parking", "occupied", "spot_id", "L"),
        (sc.TAXI, "taxi_adas", "speed_kmh", "device_id", "live-taxi-"),
    ):
        query = f'SELECT last("{field}") FROM "{measurement}" WHERE {tag} =~ /^{pattern}/ GROUP BY {tag}'
        for series in influx_query(url, database, query):
            partition = int(series["tags"][tag][-2:])
            newest[(topic, partition)] = int(series["values"][0][0])
    return newest


async def committed_lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Messages of the topics after the group's committed offsets, as the broker answers them
    (a consumer of the group that joins nothing: it only asks)."""
    ends = await topic_end_offsets(bootstrap, topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        committed = {tp: await consumer.committed(tp) for tp in ends}
    finally:
        await consumer.stop()
    return sum(end - (committed[tp] or 0) for tp, end in ends.items())


async def test_a_worker_takes_over_a_sigkilled_workers_partitions_within_seconds(
    own_kafka: str, influx_url: str, tmp_path: Path
) -> None:
    """Worker A and worker B share the partitions (12 per topic: 36 source partitions, 24 of the
    repartitioned readings, and as many partition snapshots); A is SIGKILLed while readings keep
    arriving on every partition, and B takes over. Measured: SIGKILL to B's new assignment (at
    most the session timeout and a rebalance), assignment to B consuming every partition it took
    over (readings sent after the SIGKILL in InfluxDB; formerly about a second per partition), and
    SIGKILL to a committed lag of 0."""
    database = unique("faults_takeover")
    env = worker_env(
        own_kafka,
        influx_url,
        database,
        CITYSTREAM_SOURCE_PARTITIONS=str(TAKEOVER_PARTITIONS),
        CITYSTREAM_KAFKA_SESSION_TIMEOUT_S=str(TAKEOVER_SESSION_TIMEOUT_S),
        CITYSTREAM_CHECKPOINT_INTERVAL_S="0.5",
        CITYSTREAM_ALERT_THRESHOLDS=QUIET_THRESHOLDS,
    )
    group = env["CITYSTREAM_APP_ID"]
    sources = [sc.TAXI, sc.PARKING, sc.ENV]
    await create_topics(own_kafka, partitions=TAKEOVER_PARTITIONS)
    first = WorkerProcess(tmp_path / "a", env).start()
    second = WorkerProcess(tmp_path / "b", {**env, "CITYSTREAM_WEB_PORT": str(free_port())})
    stream = LiveStream(own_kafka)
    try:
        wait_for(lambda: "Worker]: Ready" in first.log(), 90, "worker A", first)
        second.start()
        stream.start()

        def shared() -> bool:
            a, b = assignments(first.log()), assignments(second.log())
            return bool(a and b) and a[-1][0] >= b[0][0] - 1 and not (a[-1][1] & b[-1][1])

        await asyncio.to_thread(wait_for, shared, 90, "A and B to share the partitions", second)
        await asyncio.sleep(4)  # both consuming, both checkpointing
        held_by_a = {tp for tp in assignments(first.log())[-1][1] if tp[0] in sources}
        assert held_by_a, "worker A holds no source partition"
        first.kill()
        killed_at = time.time()  # A is gone: a point of a reading sent after this is B's

        newest: dict[tuple[str, int], int] = {}
        resumed: dict[tuple[str, int], float] = {}
        deadline = time.monotonic() + TAKEOVER_SESSION_TIMEOUT_S + 60
        while set(resumed) < held_by_a and time.monotonic() < deadline:
            assert second.alive(), second.log()[-3000:]
            newest = await asyncio.to_thread(newest_point_ms, influx_url, database)
            now = time.time()
            for tp in held_by_a - set(resumed):
                if newest.get(tp, 0) > killed_at * 1000:
                    resumed[tp] = now
            await asyncio.sleep(0.2)
        await stream.stop()
        taken = [(when, tps) for when, tps in assignments(second.log()) if when >= killed_at and held_by_a <= tps]
        assert taken, f"B never took over A's partitions\n{second.log()[-3000:]}"
        assigned_at = taken[0][0]
        assert set(resumed) == held_by_a, f"never consumed again: {sorted(held_by_a - set(resumed))}"

        lag, deadline = -1, time.monotonic() + 60
        while time.monotonic() < deadline:
            lag = await committed_lag(own_kafka, group, sources)
            if lag == 0:
                break
            await asyncio.sleep(0.2)
        caught_up_at = time.time()
        assert lag == 0, f"committed lag {lag} left\n{second.log()[-3000:]}"

        found = await asyncio.to_thread(
            wait_points, influx_url, database, expected_points(stream.sent), [second], 60, "every live reading"
        )
        live = sc.Scenario(valid=[(t, orjson.loads(v)) for t, _, v in stream.sent])
        expected = {size: sc.expected_environment(live, size) for size in (sc.MINUTE, sc.HOUR)}
        actual = await asyncio.to_thread(actual_windows, influx_url, database)
        assert sc.differences(expected[sc.MINUTE], actual["env_1m"]) == []
        assert sc.differences(expected[sc.HOUR], actual["env_1h"]) == []
        alerts = [orjson.loads(r.value) for r in await read_topic(own_kafka, ALERTS_TOPIC, expected=10**9, timeout=3)]
        assert alerts == []
    finally:
        await stream.stop()
        first.kill()
        assert second.stop() == 0, second.log()[-3000:]

    restored = restores(second.log(), assigned_at)
    to_assignment = assigned_at - killed_at
    to_first = min(resumed.values()) - assigned_at
    to_all = max(resumed.values()) - assigned_at
    figures(
        "worker SIGKILL, the other takes over",
        readings_sent=len(stream.sent),
        points_found=f"{sum(found.values())} of {len(stream.sent)}",
        aggregates_compared=len(expected[sc.MINUTE]) + len(expected[sc.HOUR]),
        alerts_counted=len(alerts),
        partitions_taken_over=f"{len(held_by_a)} source partitions of {len(sources) * TAKEOVER_PARTITIONS}",
        SIGKILL_to_assignment=f"{to_assignment:.1f} s",
        partitions_restored_by_B=f"{len(restored)} in {max(restored, default=assigned_at) - assigned_at:.1f} s",
        assignment_to_first_consumed=f"{to_first:.1f} s",
        assignment_to_all_consumed=f"{to_all:.1f} s",
        SIGKILL_to_committed_lag_0=f"{caught_up_at - killed_at:.1f} s",
        session_timeout=f"{TAKEOVER_SESSION_TIMEOUT_S} s",
    )
    # the session timeout, then a rebalance; consuming again well within seconds of the
    # assignment (one second per partition, as before, would take over half a minute)
    assert to_assignment < TAKEOVER_SESSION_TIMEOUT_S + 15
    assert to_all < 10
