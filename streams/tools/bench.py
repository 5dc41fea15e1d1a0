"""``citystream bench``: throughput, latency and memory of one worker, with a baseline in the same run.

Phases, each on a fresh local stack (Tansu and InfluxDB on their own ports):

1. single: preload N single-reading messages (60% taxi, 30% parking, 10% environment) from
   ``--devices`` distinct devices; the baseline loop reads them; then a real worker (aggregation and
   alerts on) reads them into InfluxDB. Readings/s is from the worker's first reading to the last raw
   point visible in InfluxDB; its peak RSS is sampled meanwhile.
2. batch: the same with ``{"batch": [...]}`` envelopes of ``--batch-size`` readings of one device.
3. latency: the worker runs first; readings arrive at a fixed ``--rate``; a probe reading every
   100 ms carries its send time as its ``ts``, and a poller sees when its raw point is in InfluxDB.
   Parking lots that fill and empty in alternate minutes make alerts on every final minute; the
   worker measures their latency (final window to alert on the topic) and logs it at shutdown.

The baseline is the practical limit of Python here: aiokafka ``getmany``, ``orjson.loads`` and
pydantic validation of every reading, nothing written.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import itertools
import json
import random
import re
import shutil
import statistics
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import orjson
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas.readings import SOURCE_TOPICS, EnvReading, ParkingReading, SourceKind, TaxiReading
from streams.clients.influx import InfluxQLReader
from streams.clients.kafka import contract_topics, ensure_topics, read_range
from streams.tools import localstack
from streams.tools.localstack import ManagedService, free_port
from streams.tools.soak import rss_mb
from streams.tools.workerprocess import WorkerProcess

TAXI, PARKING, ENV = (SOURCE_TOPICS[kind] for kind in (SourceKind.TAXI, SourceKind.PARKING, SourceKind.ENVIRONMENT))
MODELS: dict[str, type[BaseModel]] = {TAXI: TaxiReading, PARKING: ParkingReading, ENV: EnvReading}
RAW_FIELDS = {"taxi_adas": "speed_kmh", "parking": "occupied", "environment": "pm25_ugm3"}
PARTITIONS = 12
DATABASE = "bench"
PROBE_DEVICE = "bench-probe"
WARM_UP_DEVICE = "bench-warm-up"
PROBE_EVERY_S = 0.1
LOTS, SPOTS_PER_LOT = 100, 20
WARNINGS = ("FCW", "UFCW", "PCW", "LDW_L", "LDW_R", "HMW", "OVERSPEED")

Message = tuple[str, bytes, bytes]  # topic, key, value


# readings ----------------------------------------------------------------------------------------


def _taxi(device: str, ts: int, seq: int, rng: random.Random, number: int = 0) -> dict[str, Any]:
    # a taxi drives: its position moves about 30 m a reading from a start of its own
    lat = 35.80 + (number * 7919 % 1000) / 1000 * 0.12 + (seq % 400) * 0.0003
    lon = 128.50 + (number * 104_729 % 1000) / 1000 * 0.20
    reading: dict[str, Any] = {
        "device_id": device,
        "ts": ts,
        "seq": seq,
        "lat": round(min(lat, 36.0), 6),
        "lon": round(lon, 6),
        "speed_kmh": round(rng.uniform(0, 80), 1),
        "heading_deg": float(rng.randrange(360)),
        "event": "NONE",
    }
    if rng.random() < 0.05:
        reading["event"] = rng.choice(WARNINGS)
        reading["ttc_s"] = round(rng.uniform(0.5, 3), 2)
    return reading


def _parking(device: str, ts: int, seq: int, rng: random.Random, lot: str, spot: str, occupied: bool) -> dict[str, Any]:
    return {
        "device_id": device,
        "ts": ts,
        "seq": seq,
        "lot_id": lot,
        "spot_id": spot,
        "occupied": occupied,
        "battery_v": round(rng.uniform(3.1, 3.6), 2),
        "rssi_dbm": float(-rng.randrange(60, 120)),
    }


def _env(device: str, ts: int, seq: int, rng: random.Random) -> dict[str, Any]:
    return {
        "device_id": device,
        "ts": ts,
        "seq": seq,
        "pm25_ugm3": round(rng.uniform(5, 60), 1),
        "pm10_ugm3": round(rng.uniform(10, 120), 1),
        "no2_ppm": round(rng.uniform(0.005, 0.05), 3),
        "temp_c": round(rng.uniform(-5, 30), 1),
        "humidity_pct": round(rng.uniform(20, 90), 1),
    }


class CityMix:
    """Readings as a city sends them: 60% taxi, 30% parking, 10% environment by count, from
    ``devices`` devices of which 5% are taxis (they report often), 1% stations and the rest parking
    sensors (many, each reporting rarely: a change of state, a heartbeat). Every device's readings
    come in order, with a rising ``seq``."""

    def __init__(self, devices: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.pools = {TAXI: max(1, devices * 5 // 100), ENV: max(1, devices // 100)}
        self.pools[PARKING] = max(1, devices - self.pools[TAXI] - self.pools[ENV])
        self.sent = dict.fromkeys(self.pools, 0)

    @staticmethod
    def topic_of(i: int) -> str:
        return TAXI if i % 10 < 6 else PARKING if i % 10 < 9 else ENV

    def reading(self, topic: str, ts: int, device: int | None = None, seq: int | None = None) -> dict[str, Any]:
        """The next reading of a kind (of one device when given)."""
        n = self.sent[topic]
        self.sent[topic] = n + 1
        pool = self.pools[topic]
        device = n % pool if device is None else device
        seq = n // pool if seq is None else seq
        rng = self.rng
        if topic == TAXI:
            return _taxi(f"taxi-{device:06d}", ts, seq, rng, device)
        if topic == PARKING:
            lot, spot = divmod(device, SPOTS_PER_LOT)
            occupied = rng.random() < 0.6
            return _parking(f"pk-{device:06d}", ts, seq, rng, f"lot-{lot:05d}", f"S{spot:02d}", occupied)
        return _env(f"env-{device:06d}", ts, seq, rng)


def single_messages(readings: int, devices: int, start_ms: int, span_ms: int, seed: int = 1) -> Iterator[Message]:
    """Single-reading messages of a :class:`CityMix`, spread over ``span_ms``."""
    mix = CityMix(devices, seed)
    for i in range(readings):
        topic = mix.topic_of(i)
        reading = mix.reading(topic, start_ms + i * span_ms // readings)
        yield topic, reading["device_id"].encode(), orjson.dumps(reading)


def batch_messages(readings: int, batch_size: int, start_ms: int, span_ms: int, seed: int = 2) -> Iterator[Message]:
    """Envelopes of ``batch_size`` readings of one device (a gateway's buffered upload), the kinds
    in the proportions of :class:`CityMix`."""
    batches = max(1, readings // batch_size)
    mix = CityMix(batches, seed)
    step = max(1, span_ms // batch_size)
    for b in range(batches):
        topic = mix.topic_of(b)
        device = b
        batch = [mix.reading(topic, start_ms + n * step, device, n) for n in range(batch_size)]
        yield topic, batch[0]["device_id"].encode(), orjson.dumps({"batch": batch})


# measuring ---------------------------------------------------------------------------------------


def influx_query(url: str, query: str) -> list[dict[str, Any]]:
    return InfluxQLReader(url, DATABASE, timeout_s=60).query(query)


def raw_points(url: str) -> int:
    total = 0
    for measurement, field_name in RAW_FIELDS.items():
        series = influx_query(url, f'SELECT count("{field_name}") FROM "{measurement}"')
        total += int(series[0]["values"][0][1]) if series else 0
    return total


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


ALERT_LATENCY = re.compile(r"alert latency from final window to topic: (\{.*\})")


def alert_latency(log: str) -> dict[str, float]:
    """The worker's own summary of alert latency, logged at shutdown."""
    found = ALERT_LATENCY.findall(log)
    return ast.literal_eval(found[-1]) if found else {}


# the stack and the worker ------------------------------------------------------------------------


@dataclass
class Stack:
    kafka: ManagedService
    influx: ManagedService

    @classmethod
    def start(cls, root: Path) -> Stack:
        shutil.rmtree(root, ignore_errors=True)
        kafka = localstack.tansu(free_port(), root / "tansu")
        influx = localstack.influxdb(free_port(), root / "influxdb")
        kafka.start(timeout=60)
        influx.start(timeout=60)
        localstack.create_database(influx.url, DATABASE)
        return cls(kafka, influx)

    def stop(self) -> None:
        self.kafka.stop()
        self.influx.stop()


def start_worker(stack: Stack, root: Path, **extra: str) -> tuple[WorkerProcess, int]:
    port = free_port()
    env = {
        "CITYSTREAM_KAFKA_BOOTSTRAP": stack.kafka.address,
        "CITYSTREAM_INFLUX_URL": stack.influx.url,
        "CITYSTREAM_INFLUX_DB": DATABASE,
        "CITYSTREAM_APP_ID": "bench",
        "CITYSTREAM_WEB_PORT": str(port),
        "CITYSTREAM_SOURCE_PARTITIONS": str(PARTITIONS),
        "CITYSTREAM_KAFKA_REBALANCE_TIMEOUT_S": "3",
        "CITYSTREAM_LOG_LEVEL": "warning",
        "CITYSTREAM_DATA_DIR": str(root / "worker"),
        **extra,
    }
    return WorkerProcess(root / "worker", env, root / "worker.log").start(), port


async def produce_all(bootstrap: str, messages: Iterator[Message], on_sent: Callable[[int], None]) -> int:
    await ensure_topics(bootstrap, contract_topics(PARTITIONS))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    count = 0
    try:
        pending = []
        for topic, key, value in messages:
            pending.append(await producer.send(topic, value, key=key))
            count += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                on_sent(count)
        await asyncio.gather(*pending)
        on_sent(count)
    finally:
        await producer.stop()
    return count


async def baseline(bootstrap: str, readings: int, timeout_s: float = 300) -> float:
    """Readings/s of aiokafka getmany + orjson + pydantic over the source topics, from the start."""
    loads, validators = orjson.loads, {topic: model.model_validate for topic, model in MODELS.items()}
    seen, started = 0, None
    deadline = time.monotonic() + timeout_s
    # every reading is on the topics already: the read ends at their end offsets (quiet_s only guards a stall)
    batches = read_range(bootstrap, list(MODELS), partitions=range(PARTITIONS), quiet_s=30, max_records=10_000)
    async with contextlib.aclosing(batches):
        async for records in batches:
            if started is None:
                started = time.perf_counter()
            validate = validators[records[0].topic]
            for record in records:
                document = loads(record.value)
                for reading in document.get("batch", (document,)):
                    validate(reading)
                    seen += 1
            if seen >= readings or time.monotonic() >= deadline:
                break
    if started is None or seen < readings:
        raise RuntimeError(f"the baseline read {seen} of {readings} readings")
    return readings / (time.perf_counter() - started)


@dataclass
class Throughput:
    readings_per_s: float
    processed_per_s: float
    baseline_per_s: float
    peak_rss_mb: float
    points: int
    seconds: float


@dataclass
class Latency:
    probes: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)
    sent: int = 0
    started: float = 0.0
    peak_rss_mb: float = 0.0
    alerts: dict[str, float] = field(default_factory=dict)


class Bench:
    def __init__(
        self,
        root: Path,
        console: Console,
        progress: Progress,
        profile: bool = False,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.settings = settings or {}
        self.console = console
        self.progress = progress
        self.profile = profile
        self.profiles: list[Path] = []

    def _profile(self, worker: WorkerProcess, name: str) -> subprocess.Popen[bytes] | None:
        """py-spy on the worker until it exits: a flame graph of where its time goes."""
        if not self.profile:
            return None
        output = self.root / f"profile-{name}.svg"
        self.profiles.append(output)
        command = ["py-spy", "record", "--pid", str(worker.pid), "--rate", "100", "--output", str(output)]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _task(self, description: str, total: float | None) -> TaskID:
        return self.progress.add_task(description, total=total)

    def throughput(
        self, name: str, messages: Iterator[Message], readings: int, per_message: int, timeout_s: float
    ) -> Throughput:
        root = self.root / name
        stack = Stack.start(root)
        worker = spy = None
        try:
            task = self._task(f"{name}: preload", readings)
            asyncio.run(
                produce_all(
                    stack.kafka.address, messages, lambda n: self.progress.update(task, completed=n * per_message)
                )
            )
            task = self._task(f"{name}: baseline loop", None)
            base = asyncio.run(baseline(stack.kafka.address, readings))
            self.progress.update(task, total=1, completed=1, description=f"{name}: baseline {base:,.0f} readings/s")
            worker, port = start_worker(stack, root, **self.settings)
            spy = self._profile(worker, name)
            task = self._task(f"{name}: worker", readings)
            first = processed = None
            peak = 0.0
            deadline = time.monotonic() + timeout_s
            while True:
                if not worker.alive():
                    raise RuntimeError(f"the worker exited:\n{worker.log()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not store {readings} readings in {timeout_s:.0f} s")
                assert worker.pid is not None
                peak = max(peak, rss_mb(worker.pid))
                valid = metric(scrape(port), "citystream_readings_valid_total")
                now = time.perf_counter()
                if valid and first is None:
                    first = now
                self.progress.update(task, completed=valid)
                if valid >= readings:
                    processed = processed or now
                    points = raw_points(stack.influx.url)
                    if points >= readings:
                        break
                time.sleep(0.2)
            assert first is not None and processed is not None
            seconds = time.perf_counter() - first
            return Throughput(readings / seconds, readings / (processed - first), base, peak, points, seconds)
        finally:
            if worker is not None:
                worker.stop()
            if spy is not None:
                spy.wait(timeout=60)
            stack.stop()

    def latency(self, rate: float, seconds: float) -> Latency:
        root = self.root / "latency"
        stack = Stack.start(root)
        worker, port = start_worker(stack, root, **self.settings)
        spy = self._profile(worker, "latency")
        result = Latency()
        try:
            asyncio.run(ensure_topics(stack.kafka.address, contract_topics(PARTITIONS)))
            deadline = time.monotonic() + 120
            while metric(scrape(port), "citystream_ready") < 1:
                if not worker.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not become ready:\n{worker.log()[-3000:]}")
                time.sleep(0.5)
            asyncio.run(self._warm_up(stack, worker))
            task = self._task(f"latency: {rate:,.0f} readings/s", seconds)
            result.sent = asyncio.run(self._steady_load(stack, worker, rate, seconds, task, result))
            # each probe: seconds since the load started, and its latency
            lines = [f"{at:.3f},{latency:.3f}" for at, latency in result.timeline]
            (root / "probes.csv").write_text("\n".join(["sent_s,latency_s", *lines]) + "\n")
        finally:
            worker.stop()
            if spy is not None:
                spy.wait(timeout=60)
            result.alerts = alert_latency(worker.log())
            stack.stop()
        return result

    async def _warm_up(self, stack: Stack, worker: WorkerProcess, timeout_s: float = 120) -> None:
        """Until a reading sent now reaches InfluxDB: the consumer group has settled, the clock can start."""
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka.address)
        await producer.start()
        query = f'SELECT count("speed_kmh") FROM "taxi_adas" WHERE device_id = \'{WARM_UP_DEVICE}\''
        deadline = time.monotonic() + timeout_s
        try:
            for seq in itertools.count():
                if not worker.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"no reading reached InfluxDB in {timeout_s:.0f} s:\n{worker.log()[-3000:]}")
                reading = _taxi(WARM_UP_DEVICE, time.time_ns() // 1_000_000, seq, random.Random(seq))
                await producer.send_and_wait(TAXI, orjson.dumps(reading), key=WARM_UP_DEVICE.encode())
                if await asyncio.to_thread(influx_query, stack.influx.url, query):
                    return
                await asyncio.sleep(0.5)
        finally:
            await producer.stop()

    async def _steady_load(
        self, stack: Stack, worker: WorkerProcess, rate: float, seconds: float, task: TaskID, result: Latency
    ) -> int:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka.address, linger_ms=5)
        await producer.start()
        sent_at: dict[int, float] = {}  # probe ts (ms) -> send time
        stop = asyncio.Event()
        poller = asyncio.ensure_future(self._poll_probes(stack.influx.url, sent_at, result, stop))
        mix = CityMix(10_000, 3)
        rng = mix.rng
        tick_s = 0.02
        per_tick = rate * tick_s
        sent, owed, i, seq = 0, 0.0, 0, 0
        started = time.monotonic()
        result.started = time.perf_counter()
        next_probe = started
        try:
            while (elapsed := time.monotonic() - started) < seconds:
                now_ms = time.time_ns() // 1_000_000
                owed += per_tick
                for _ in range(int(owed)):
                    topic = mix.topic_of(i)
                    reading = mix.reading(topic, now_ms)
                    if topic == PARKING:
                        # lots fill and empty in alternate minutes: an alert on every final minute
                        lot, spot = divmod(i % (LOTS * SPOTS_PER_LOT), SPOTS_PER_LOT)
                        reading["device_id"] = f"bench-pk-{lot:03d}-{spot:02d}"
                        reading["lot_id"], reading["spot_id"] = f"bench-lot-{lot:03d}", f"S{spot:02d}"
                        reading["occupied"] = (now_ms // 60_000) % 2 == 0
                        reading["seq"] = i // (LOTS * SPOTS_PER_LOT)  # a frame counter: +1 a reading
                    await producer.send(topic, orjson.dumps(reading), key=reading["device_id"].encode())
                    i += 1
                owed -= int(owed)
                if time.monotonic() >= next_probe:
                    seq += 1
                    probe = _taxi(PROBE_DEVICE, now_ms, seq, rng)
                    sent_at[now_ms] = time.perf_counter()
                    await producer.send(TAXI, orjson.dumps(probe), key=PROBE_DEVICE.encode())
                    next_probe += PROBE_EVERY_S
                sent = i
                self.progress.update(task, completed=elapsed)
                if rss := rss_mb(worker.pid) if worker.pid else 0.0:
                    result.peak_rss_mb = max(result.peak_rss_mb, rss)
                await asyncio.sleep(max(0.0, started + (i / rate) - time.monotonic()))
            await producer.flush()
            await asyncio.sleep(5)  # the last probes land
        finally:
            stop.set()
            await poller
            await producer.stop()
        self.progress.update(task, completed=seconds)
        return sent

    @staticmethod
    async def _poll_probes(url: str, sent_at: dict[int, float], result: Latency, stop: asyncio.Event) -> None:
        """Every 50 ms: the newest probe point in InfluxDB; each probe up to it is durable by now."""
        query = f'SELECT last("speed_kmh") FROM "taxi_adas" WHERE device_id = \'{PROBE_DEVICE}\''
        while not stop.is_set():
            series = await asyncio.to_thread(influx_query, url, query)
            seen = time.perf_counter()
            if series:
                newest = int(series[0]["values"][0][0])
                for ts in sorted(t for t in sent_at if t <= newest):
                    sent = sent_at.pop(ts)
                    result.probes.append(seen - sent)
                    result.timeline.append((sent - result.started, seen - sent))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)


# the command -------------------------------------------------------------------------------------


@click.command("bench")
@click.option(
    "--readings", type=click.IntRange(min=1000), default=500_000, show_default=True, help="Readings per shape."
)
@click.option(
    "--batch-size", type=click.IntRange(1, 1000), default=100, show_default=True, help="Readings per batch envelope."
)
@click.option(
    "--devices",
    type=click.IntRange(min=10),
    default=100_000,
    show_default=True,
    help="Distinct devices of the single-reading phase (the worker's peak RSS is measured there).",
)
@click.option(
    "--rate", type=click.FloatRange(min=1), default=5000.0, show_default=True, help="Readings/s of the latency phase."
)
@click.option(
    "--latency-seconds",
    type=click.FloatRange(min=10),
    default=150.0,
    show_default=True,
    help="Length of the latency phase (alerts come once a minute, when the windows are final).",
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/bench"),
    show_default=True,
    help="Folder for the stacks, the workers' state and logs (emptied first).",
)
@click.option(
    "--profile",
    is_flag=True,
    help="Record the worker of each phase with py-spy (pip install py-spy): DIR/profile-<phase>.svg.",
)
@click.option(
    "--phases",
    default="single,batch,latency",
    show_default=True,
    help="Which phases to run, comma-separated; the figures of the others are null.",
)
@click.option(
    "--worker-setting",
    "worker_settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="A CITYSTREAM_* setting for the workers, e.g. CITYSTREAM_CHECKPOINT_INTERVAL_S=5 (repeatable).",
)
def bench_command(
    readings: int,
    batch_size: int,
    devices: int,
    rate: float,
    latency_seconds: float,
    folder: Path,
    profile: bool,
    worker_settings: tuple[str, ...],
    phases: str,
) -> None:
    """Measure one worker: readings/s with single readings and with batch envelopes, against a baseline
    loop (aiokafka getmany + orjson + pydantic) on the same messages in the same run; produce-to-InfluxDB
    latency at a fixed rate; alert latency; peak memory with many devices.

    Each phase starts its own Tansu and InfluxDB (Debian's influxdb package, installed when missing, as
    root). The last line printed is one JSON object with the figures.
    """
    console = Console()
    try:  # InfluxDB comes from Debian's package: installed when missing, as `citystream local up` does
        localstack.install_packages(echo=console.print)
    except localstack.InstallError as exc:
        raise click.ClickException(str(exc)) from None
    folder = folder.resolve()
    chosen = {phase.strip() for phase in phases.split(",") if phase.strip()}
    if not chosen or chosen - {"single", "batch", "latency"}:
        raise click.BadParameter("choose among single, batch, latency", param_hint="--phases")
    phases = ",".join(sorted(chosen))
    timeout_s = max(600.0, readings / 500)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        if profile and shutil.which("py-spy") is None:
            raise click.UsageError("--profile needs py-spy on the PATH: pip install py-spy")
        settings = {}
        for item in worker_settings:
            name, equals, value = item.partition("=")
            if not equals or not name.startswith("CITYSTREAM_"):
                raise click.BadParameter(f"{item!r} is not CITYSTREAM_NAME=VALUE", param_hint="--worker-setting")
            settings[name] = value
        bench = Bench(folder, console, progress, profile, settings)
        single = batch = latency = None
        if "single" in phases:
            start_ms = time.time_ns() // 1_000_000 - 300_000
            messages = single_messages(readings, devices, start_ms, 240_000)
            single = bench.throughput("single", messages, readings, 1, timeout_s)
        if "batch" in phases:
            start_ms = time.time_ns() // 1_000_000 - 300_000
            messages = batch_messages(readings, batch_size, start_ms, 240_000)
            batch = bench.throughput("batch", messages, readings, batch_size, timeout_s)
        if "latency" in phases:
            latency = bench.latency(rate, latency_seconds)
    figures = summarise(single, batch, latency)
    console.print(figures_table(figures, single, batch, latency, batch_size=batch_size, rate=rate, devices=devices))
    for path in bench.profiles:
        console.print(f"profile: {path}")
    click.echo(json.dumps(figures))


def _round(value: float | None, digits: int = 0) -> float | None:
    return None if value is None else round(value, digits) if digits else round(value)


def summarise(single: Throughput | None, batch: Throughput | None, latency: Latency | None) -> dict[str, Any]:
    """The figures of the last line; a phase not run gives nulls."""
    probes = latency.probes if latency is not None else []
    return {
        "single_readings_per_s": _round(single.readings_per_s) if single else None,
        "batch_readings_per_s": _round(batch.readings_per_s) if batch else None,
        "baseline_readings_per_s": _round(batch.baseline_per_s) if batch else None,
        "batch_ratio_to_baseline": _round(batch.readings_per_s / batch.baseline_per_s, 3) if batch else None,
        "p50_latency_s": _round(statistics.median(probes), 3) if probes else None,
        "p99_latency_s": _round(percentile(probes, 0.99), 3) if probes else None,
        "alert_p99_latency_s": _round(latency.alerts.get("p99_s"), 3) if latency else None,
        "rss_mb": _round(single.peak_rss_mb, 1) if single else None,
    }


def figures_table(
    figures: dict[str, Any],
    single: Throughput | None,
    batch: Throughput | None,
    latency: Latency | None,
    *,
    batch_size: int,
    rate: float,
    devices: int,
) -> Table:
    table = Table(title="citystream bench: one worker")
    table.add_column("figure")
    table.add_column("worker", justify="right")
    table.add_column("baseline loop", justify="right")
    for name, phase in (("single-reading messages", single), (f"batch envelopes of {batch_size}", batch)):
        if phase is None:
            continue
        table.add_row(
            f"{name}: readings/s stored in InfluxDB", f"{phase.readings_per_s:,.0f}", f"{phase.baseline_per_s:,.0f}"
        )
        table.add_row(f"{name}: readings/s validated and aggregated", f"{phase.processed_per_s:,.0f}", "")
        table.add_row(f"{name}: raw points stored", f"{phase.points:,} in {phase.seconds:.1f} s", "")
        table.add_row(f"{name}: peak RSS MB", f"{phase.peak_rss_mb:.0f}", "")
    if batch is not None:
        table.add_row("batch: worker / baseline", f"{figures['batch_ratio_to_baseline']:.3f}", "")
    if latency is not None:
        table.add_row(
            f"produce to InfluxDB at {rate:,.0f}/s, p50 / p99 s ({len(latency.probes)} probes)",
            f"{figures['p50_latency_s']} / {figures['p99_latency_s']}",
            "",
        )
        table.add_row(
            f"final window to alert, p99 s ({int(latency.alerts.get('alerts', 0))} alerts)",
            str(figures["alert_p99_latency_s"]),
            "",
        )
        table.add_row("latency phase: peak RSS MB", f"{latency.peak_rss_mb:.0f}", "")
    if single is not None:
        table.caption = f"{devices:,} distinct devices in the single-reading phase"
    return table
