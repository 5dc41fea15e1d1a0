"""Window aggregates end to end: disorder, duplicates, lateness, backfill, SIGKILL, two workers.

Each test has a broker of its own, so its topics hold only its scenario, and compares every window
in InfluxDB with the aggregates computed independently from the scenario's readings.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from streams.tools.localstack import free_port
from tests.integration import scenario as sc
from tests.integration.helpers import (
    WorkerProcess,
    count_points,
    create_topics,
    get,
    influx_rows,
    metric,
    now_ms,
    produce,
    scrape,
    unique,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration


def actual_windows(url: str, database: str) -> dict[str, dict[Any, dict[str, Any]]]:
    def rows(measurement: str) -> list[dict[str, Any]]:
        return influx_rows(url, database, f"SELECT * FROM {measurement} GROUP BY *")

    return {
        "taxi": {(r["cell"], r["time"]): r for r in rows("taxi_adas_1m")},
        "parking": {(r["lot_id"], r["time"]): r for r in rows("parking_1m")},
        "env_1m": {(r["device_id"], r["district"], r["time"]): r for r in rows("environment_1m")},
        "env_1h": {(r["device_id"], r["district"], r["time"]): r for r in rows("environment_1h")},
    }


def expected_windows(scenario: sc.Scenario) -> dict[str, dict[Any, dict[str, Any]]]:
    return {
        "taxi": sc.expected_taxi(scenario),
        "parking": sc.expected_parking(scenario),
        "env_1m": sc.expected_environment(scenario, sc.MINUTE),
        "env_1h": sc.expected_environment(scenario, sc.HOUR),
    }


def window_differences(url: str, database: str, expected: dict[str, dict[Any, dict[str, Any]]]) -> list[str]:
    actual = actual_windows(url, database)
    return [f"{name}: {problem}" for name in expected for problem in sc.differences(expected[name], actual[name])]


def wait_exact(url: str, database: str, scenario: sc.Scenario, workers: list[WorkerProcess], timeout: float) -> None:
    expected = expected_windows(scenario)
    assert all(expected.values()), "the scenario must produce windows of every measurement"
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    while time.monotonic() < deadline:
        problems = window_differences(url, database, expected)
        if not problems:
            return
        for worker in workers:
            assert worker.alive(), worker.log()[-4000:]
        time.sleep(1)
    shown = "\n".join(problems[:30])
    raise AssertionError(
        f"{len(problems)} window differences after {timeout:.0f} s:\n{shown}\n{workers[0].log()[-1500:]}"
    )


def hour_aligned_hours_ago(hours: int) -> int:
    now = now_ms()
    return now - now % sc.HOUR - hours * sc.HOUR


def window_env(
    kafka: str, influx_url: str, database: str, tmp_path: Path, scenario: sc.Scenario, **extra: str
) -> dict[str, str]:
    registry = tmp_path / "registry.yaml"
    registry.write_text(scenario.registry_yaml())
    return worker_env(
        kafka, influx_url, database, CITYSTREAM_REGISTRY=str(registry), CITYSTREAM_CHECKPOINT_INTERVAL_S="0.5", **extra
    )


async def test_windows_are_exact_with_disorder_duplicates_lateness_and_backfill(
    own_kafka: str, influx_url: str, tmp_path: Path
) -> None:
    database = unique("windows_exact")
    # a backfill: event time three hours ago, sent now, out of order, with duplicates and late readings
    scenario = sc.build(hour_aligned_hours_ago(3), seed=11)
    assert scenario.duplicates > 0 and len(scenario.late) >= 3
    await create_topics(own_kafka)
    await produce(own_kafka, scenario.messages)
    worker = WorkerProcess(tmp_path, window_env(own_kafka, influx_url, database, tmp_path, scenario)).start()
    try:
        wait_exact(influx_url, database, scenario, [worker], timeout=180)
        # late readings are stored raw, but aggregated nowhere (checked above)
        taxi_valid = sum(1 for topic, _ in scenario.valid if topic == sc.TAXI)
        taxi_late = sum(1 for topic, _ in scenario.late if topic == sc.TAXI)
        assert count_points(influx_url, database, "taxi_adas", "speed_kmh") == taxi_valid + taxi_late
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]


async def test_sigkill_at_random_moments_loses_and_doubles_nothing(
    own_kafka: str, influx_url: str, tmp_path: Path
) -> None:
    database = unique("windows_sigkill")
    scenario = sc.build(hour_aligned_hours_ago(4), seed=23, taxis=40, minutes=30, lots=4, spots=20, stations=10)
    env = window_env(own_kafka, influx_url, database, tmp_path, scenario, CITYSTREAM_KAFKA_SESSION_TIMEOUT_S="6")
    rng = random.Random(5)
    chunks = [scenario.messages[i : i + 1000] for i in range(0, len(scenario.messages), 1000)]
    await create_topics(own_kafka)
    worker = WorkerProcess(tmp_path, env).start()
    kills = 0
    try:
        for number, chunk in enumerate(chunks):
            await produce(own_kafka, chunk)
            if number % 2 == 1 and kills < 4:
                # SIGKILL while it is consuming, writing or checkpointing, then start it again
                await asyncio.sleep(rng.uniform(0.2, 3.0))
                worker.kill()
                kills += 1
                worker = WorkerProcess(tmp_path, env, log_path=tmp_path / f"worker-after-kill-{kills}.log").start()
        assert kills >= 3, f"only {kills} kills: make the scenario longer"
        wait_exact(influx_url, database, scenario, [worker], timeout=300)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]


def assigned_topics(log: str) -> set[str]:
    """Topics in the last partition assignment a worker logged."""
    lines = [line for line in log.splitlines() if "Setting newly assigned partitions" in line]
    if not lines:
        return set()
    topics = set(re.findall(r"TopicPartition\(topic='([^']+)'", lines[-1]))
    internal = ("taxi-by-cell", "parking-by-lot")
    return {topic for topic in topics if topic.startswith("city.") or topic.endswith(internal)}


async def test_two_workers_give_the_same_windows_as_one(own_kafka: str, influx_url: str, tmp_path: Path) -> None:
    database = unique("windows_two_workers")
    scenario = sc.build(hour_aligned_hours_ago(5), seed=31, taxis=12, stations=4)
    await create_topics(own_kafka)
    await produce(own_kafka, scenario.messages)
    env = window_env(own_kafka, influx_url, database, tmp_path, scenario)
    first = WorkerProcess(tmp_path / "one", env).start()
    second = WorkerProcess(tmp_path / "two", {**env, "CITYSTREAM_WEB_PORT": str(free_port())}).start()
    try:
        wait_exact(influx_url, database, scenario, [first, second], timeout=240)
        wait_for(
            lambda: bool(assigned_topics(first.log())) and bool(assigned_topics(second.log())),
            30,
            "both workers to hold partitions",
        )
        # the partitions are shared, not duplicated
        assert assigned_topics(first.log()) | assigned_topics(second.log()) >= {sc.TAXI, sc.PARKING, sc.ENV}
    finally:
        assert first.stop() == 0, first.log()[-3000:]
        assert second.stop() == 0, second.log()[-3000:]


async def test_a_worker_joining_mid_stream_takes_over_partitions_with_their_state(
    own_kafka: str, influx_url: str, tmp_path: Path
) -> None:
    database = unique("windows_join")
    scenario = sc.build(hour_aligned_hours_ago(6), seed=47, taxis=16, lots=3, spots=8, stations=4)
    env = window_env(own_kafka, influx_url, database, tmp_path, scenario)
    await create_topics(own_kafka)
    first = WorkerProcess(tmp_path / "one", env).start()
    second = WorkerProcess(tmp_path / "two", {**env, "CITYSTREAM_WEB_PORT": str(free_port())})
    half = len(scenario.messages) // 2
    try:
        await produce(own_kafka, scenario.messages[:half])
        wait_for(lambda: "restored" in first.log() or "Worker]: Ready" in first.log(), 60, "the first worker", first)
        time.sleep(3)  # the first worker holds every partition's state by now
        second.start()  # a rebalance: partitions and their snapshots move to the new worker
        wait_for(
            lambda: "Setting newly assigned partitions" in second.log(), 90, "the second worker's partitions", second
        )
        await produce(own_kafka, scenario.messages[half:])
        wait_exact(influx_url, database, scenario, [first, second], timeout=240)
        assert "restored" in second.log(), "the second worker took over no partition's state"
    finally:
        assert first.stop() == 0, first.log()[-3000:]
        assert second.stop() == 0, second.log()[-3000:]


def two_free_ports() -> int:
    """A free loopback port whose next one is free too."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two free ports in a row")


async def test_one_worker_of_two_processes_shares_the_partitions_and_gives_the_same_windows(
    own_kafka: str, influx_url: str, tmp_path: Path
) -> None:
    database = unique("windows_processes")
    scenario = sc.build(hour_aligned_hours_ago(7), seed=53, taxis=12, stations=4)
    await create_topics(own_kafka)
    await produce(own_kafka, scenario.messages)
    port = two_free_ports()
    env = {**window_env(own_kafka, influx_url, database, tmp_path, scenario), "CITYSTREAM_WEB_PORT": str(port)}
    worker = WorkerProcess(tmp_path, env, args=["--processes", "2"]).start()
    try:
        wait_exact(influx_url, database, scenario, [worker], timeout=240)
        # each process serves its own /metrics, on the port after the other's, and holds partitions
        held = [metric(scrape(port + i), "citystream_assigned_partitions") for i in (0, 1)]
        assert all(count > 0 for count in held), held
        # and keeps its state in a folder of its own
        assert (tmp_path / "var" / "process-0" / "faust").is_dir() and (
            tmp_path / "var" / "process-1" / "faust"
        ).is_dir()
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    # stopping the parent stopped both processes
    for i in (0, 1):
        assert get(f"http://127.0.0.1:{port + i}/healthz")[0] == 0
