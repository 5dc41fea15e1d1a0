"""``citystream demo``: the local stack, a worker and a minute of simulated city, then what landed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from schemas.readings import SOURCE_TOPICS
from streams.clients.influx import InfluxQLReader
from streams.clients.kafka import (
    ALERTS_TOPIC,
    DEADLETTER_TOPIC,
    contract_topics,
    ensure_topics,
    partition_counts,
    read_range,
    topic_end_offsets,
)
from streams.tools.localstack import LocalStackError, free_port, local_up
from streams.tools.workerprocess import WorkerProcess

RAW_MEASUREMENTS = {"taxi_adas": "speed_kmh", "parking": "occupied", "environment": None}


def count_points_since(url: str, database: str, since_ms: int) -> dict[str, int]:
    """Points per raw measurement with a timestamp at or after ``since_ms``."""
    influx = InfluxQLReader(url, database, timeout_s=30)
    counts = {}
    for measurement, field in RAW_MEASUREMENTS.items():
        if field is None:
            # an environment point carries some of the measurements: count rows, not one field
            series = influx.query(f'SELECT * FROM "{measurement}" WHERE time >= {since_ms}ms')
            counts[measurement] = sum(len(s["values"]) for s in series)
        else:
            series = influx.query(f'SELECT count("{field}") FROM "{measurement}" WHERE time >= {since_ms}ms')
            counts[measurement] = int(series[0]["values"][0][1]) if series else 0
    return counts


async def committed_lag(bootstrap: str, group: str, topics: list[str], **client_options: Any) -> int:
    """Messages of ``topics`` that the consumer group has not committed yet."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, **client_options)
    await consumer.start()
    try:
        # asked of the broker: a new consumer may know no topic's metadata yet (Apache Kafka)
        counts = await partition_counts(bootstrap, topics, **client_options)
        partitions = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
        ends = await consumer.end_offsets(partitions)
        lag = 0
        for tp, end in ends.items():
            committed = await consumer.committed(tp)
            lag += end - (committed or 0)
        return lag
    finally:
        await consumer.stop()


async def published_since(
    bootstrap: str, topic: str, start: dict[TopicPartition, int], since_ms: int
) -> list[dict[str, Any]]:
    """The JSON documents published on ``topic`` at or after ``since_ms``, read from the ``start`` offsets on.

    ``start`` may lie a little before the first new record (the local broker under-reports end
    offsets), hence the time filter.
    """
    batches = read_range(bootstrap, topic, start_offsets=start, quiet_s=2.0)
    return [orjson.loads(r.value) async for batch in batches for r in batch if r.timestamp >= since_ms]


async def dead_letters_since(bootstrap: str, start: dict[TopicPartition, int], since_ms: int) -> Counter[str]:
    """Dead letters per reason published at or after ``since_ms``."""
    return Counter(d["reason"] for d in await published_since(bootstrap, DEADLETTER_TOPIC, start, since_ms))


async def alerts_since(bootstrap: str, start: dict[TopicPartition, int], since_ms: int) -> Counter[str]:
    """Alerts per kind and status published at or after ``since_ms``."""
    documents = await published_since(bootstrap, ALERTS_TOPIC, start, since_ms)
    return Counter(f"{d['kind']} {d['status']}" for d in documents)


AGGREGATE_MEASUREMENTS = ("taxi_adas_1m", "parking_1m", "environment_1m", "environment_1h")


def count_aggregates_since(url: str, database: str, since_ms: int) -> dict[str, int]:
    """Window points per aggregate measurement whose window ends after ``since_ms``."""
    influx = InfluxQLReader(url, database, timeout_s=30)
    counts = {}
    for measurement in AGGREGATE_MEASUREMENTS:
        size_ms = 3_600_000 if measurement.endswith("_1h") else 60_000
        start = since_ms - since_ms % size_ms
        field = "readings" if not measurement.startswith("parking") else "known_spots"
        series = influx.query(f'SELECT count("{field}") FROM "{measurement}" WHERE time >= {start}ms')
        counts[measurement] = int(series[0]["values"][0][1]) if series else 0
    return counts


@click.command("demo")
@click.option(
    "--duration",
    type=click.FloatRange(min=5),
    default=60.0,
    show_default=True,
    help="Seconds of simulated city to send.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=1000.0,
    show_default=True,
    help="Valid readings per second the simulated sensors send.",
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var"),
    show_default=True,
    help="Folder for the local stack, the worker's state and logs.",
)
@click.option("--kafka-port", type=int, default=9092, show_default=True, help="Port of the local Kafka broker.")
@click.option("--influx-port", type=int, default=8086, show_default=True, help="Port of the local InfluxDB.")
def demo_command(duration: float, rate: float, folder: Path, kafka_port: int, influx_port: int) -> None:
    """Run the whole pipeline locally and show what landed.

    Starts the local stack (Tansu and InfluxDB, installing InfluxDB when missing and run as root),
    a worker, and the simulator for DURATION seconds; waits until the worker has written
    everything; then prints the points per measurement and the dead letters per reason, and writes
    the report of the run (`citystream report`: charts and report.html) into DIR/demo/report. The stack
    keeps running afterwards (`citystream local down` stops it) so you can query InfluxDB yourself.
    """
    from streams.settings import load_settings
    from streams.tools.simulate import SimulationOptions, run_simulation

    console = Console()
    console.rule("[bold]citystream demo")
    try:
        stack = local_up(folder / "local", kafka_port, influx_port, echo=lambda m: console.print(f"  {m}"))
    except LocalStackError as exc:
        raise click.ClickException(str(exc)) from None
    demo_dir = (folder / "demo").resolve()
    demo_dir.mkdir(parents=True, exist_ok=True)
    registry = demo_dir / "registry.yaml"
    app_id = "citystream-demo"
    env = {
        **stack.env,
        "CITYSTREAM_APP_ID": app_id,
        "CITYSTREAM_DATA_DIR": str(demo_dir / "state"),
        "CITYSTREAM_REGISTRY": str(registry),
        "CITYSTREAM_WEB_PORT": str(free_port()),
        "CITYSTREAM_KAFKA_REBALANCE_TIMEOUT_S": "3",
    }
    settings = load_settings(kafka_bootstrap=stack.bootstrap)
    asyncio.run(ensure_topics(stack.bootstrap, contract_topics(settings.source_partitions), timeout_s=30))
    dead_start = asyncio.run(topic_end_offsets(stack.bootstrap, [DEADLETTER_TOPIC]))
    alerts_start = asyncio.run(topic_end_offsets(stack.bootstrap, [ALERTS_TOPIC]))
    since_ms = time.time_ns() // 1_000_000
    worker_log = demo_dir / "worker.log"
    worker = WorkerProcess(demo_dir, env, log_path=worker_log)
    options = SimulationOptions(duration_s=duration, rate=rate, bootstrap=stack.bootstrap, registry_out=registry)

    async def start_worker() -> None:
        # the simulator has written the registry: start the worker and let it join its group
        console.print(f"  worker: starting (log: {worker_log})")
        worker.start()
        for _ in range(60):
            if "Worker]: Ready" in worker.log():
                console.print("  worker: ready; sending readings")
                return
            if not worker.alive():
                raise click.ClickException(f"the worker stopped at start; see {worker_log}")
            await asyncio.sleep(0.5)

    try:
        report = asyncio.run(run_simulation(options, settings=settings, console=console, registry_ready=start_worker))
        console.print("  waiting for the worker to write everything ...")
        points = _wait_until_written(
            stack.bootstrap,
            stack.influx_url,
            stack.influx_db,
            app_id,
            since_ms,
            report.valid_readings,
            worker,
            worker_log,
        )
        # one more checkpoint for the windows of the last readings
        time.sleep(settings.checkpoint_interval_s * 2)
    finally:
        code = worker.stop()
        console.print(f"  worker: stopped (exit code {code})")
    aggregates = count_aggregates_since(stack.influx_url, stack.influx_db, since_ms)
    dead = asyncio.run(dead_letters_since(stack.bootstrap, dead_start, since_ms))
    alerts = asyncio.run(alerts_since(stack.bootstrap, alerts_start, since_ms))
    _print_summary(console, report, points, aggregates, dead, alerts, stack.influx_url, stack.influx_db)
    _write_report(console, stack.bootstrap, stack.influx_url, stack.influx_db, registry, since_ms, demo_dir / "report")


def _write_report(
    console: Console, bootstrap: str, influx_url: str, database: str, registry: Path, since_ms: int, folder: Path
) -> None:
    """The report of the run's time range (``citystream report``), and where it is."""
    from streams.settings import load_settings
    from streams.tools.report import ReportError, TimeRange, write_report

    settings = load_settings(kafka_bootstrap=bootstrap, influx_url=influx_url, influx_db=database, registry=registry)
    try:
        files = write_report(settings, TimeRange(since_ms, time.time_ns() // 1_000_000), folder)
    except ReportError as exc:
        raise click.ClickException(f"the report failed: {exc}") from None
    console.print(f"Report of this run (charts and a summary): [bold]{files.html}[/bold]")


def _wait_until_written(
    bootstrap: str,
    influx_url: str,
    database: str,
    group: str,
    since_ms: int,
    expected_points: int,
    worker: WorkerProcess,
    worker_log: Path,
) -> dict[str, int]:
    """Wait until the raw points of every valid reading sent are in InfluxDB, or nothing moves for 10 s."""
    sources = list(SOURCE_TOPICS.values())
    last_total, still_since = -1, time.monotonic()
    deadline = time.monotonic() + 300
    while True:
        points = count_points_since(influx_url, database, since_ms)
        total = sum(points.values())
        if total >= expected_points:
            return points
        if total != last_total:
            last_total, still_since = total, time.monotonic()
        elif time.monotonic() - still_since > 10 and asyncio.run(committed_lag(bootstrap, group, sources)) <= 0:
            return points
        if not worker.alive():
            raise click.ClickException(f"the worker stopped; see {worker_log}")
        if time.monotonic() > deadline:
            raise click.ClickException(f"the worker had not written everything after 5 minutes; see {worker_log}")
        time.sleep(1)


def _print_summary(
    console: Console,
    report: Any,
    points: dict[str, int],
    aggregates: dict[str, int],
    dead: Counter[str],
    alerts: Counter[str],
    influx_url: str,
    database: str,
) -> None:
    table = Table(title="Points written to InfluxDB", title_justify="left")
    table.add_column("measurement")
    table.add_column("points", justify="right")
    for measurement, count in {**points, **aggregates}.items():
        table.add_row(measurement, f"{count:,}")
    console.print(table)
    letters = Table(title=f"Dead letters on {DEADLETTER_TOPIC}", title_justify="left")
    letters.add_column("reason")
    letters.add_column("messages", justify="right")
    letters.add_column("sent as invalid", justify="right")
    sent = report.dead_letters_by_reason
    for reason in sorted(set(dead) | set(sent)):
        letters.add_row(reason, f"{dead.get(reason, 0):,}", f"{sent.get(reason, 0):,}")
    letters.add_row("[bold]total", f"[bold]{sum(dead.values()):,}", f"[bold]{report.expected_dead_letters:,}")
    console.print(letters)
    raised = Table(title=f"Alerts on {ALERTS_TOPIC}", title_justify="left")
    raised.add_column("kind and status")
    raised.add_column("alerts", justify="right")
    for name, count in sorted(alerts.items()):
        raised.add_row(name, f"{count:,}")
    if not alerts:
        raised.add_row("(none in this run)", "0")
    console.print(raised)
    raw = sum(points.values())
    console.print(
        f"The simulator sent {report.valid_readings:,} valid readings in {report.elapsed_s:.0f} s "
        f"({report.readings_per_s:,.0f} readings/s) and {report.duplicates:,} duplicates; "
        f"the worker wrote {raw:,} raw points."
    )
    console.print(
        f"Query them: curl -G {influx_url}/query --data-urlencode db={database} "
        "--data-urlencode 'q=SELECT * FROM environment_1m ORDER BY time DESC LIMIT 5'"
    )
    console.print("The local stack keeps running; stop it with: citystream local down")
