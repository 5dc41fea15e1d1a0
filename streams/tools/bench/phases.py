"""The bench's phases: single readings, batch envelopes, latency at a fixed rate, each on a fresh stack."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.progress import Progress, TaskID

from streams.clients.kafka import contract_topics, ensure_topics
from streams.tools.bench.load import (
    LOTS,
    PARKING,
    PARTITIONS,
    PROBE_DEVICE,
    PROBE_EVERY_S,
    SPOTS_PER_LOT,
    TAXI,
    WARM_UP_DEVICE,
    CityMix,
    Message,
    taxi_reading,
)
from streams.tools.bench.measure import (
    Latency,
    RampStep,
    Stack,
    Throughput,
    alert_latency,
    baseline,
    cpu_seconds,
    influx_query,
    largest,
    metric,
    produce_all,
    raw_points,
    rss_mb_tree,
    scrape,
    scrape_all,
    start_worker,
)
from streams.tools.soak import rss_mb
from streams.tools.workerprocess import WorkerProcess

POLL_S = 0.2  # how often the worker's counters and InfluxDB are polled
DRAIN_S = 10.0  # how long the probes of a steady load have to land once it stops
SETTLE_S = 15.0  # the capacity ramp's unmeasured load before its first step


class Bench:
    def __init__(
        self,
        root: Path,
        console: Console,
        progress: Progress,
        profile: bool = False,
        settings: dict[str, str] | None = None,
        broker: str = "tansu",
        processes: int = 1,
    ) -> None:
        self.root = root
        self.processes = processes  # worker processes of the throughput phases' second run
        self.broker = broker  # tansu, or kafka: Apache Kafka's KRaft node
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
        self,
        name: str,
        messages: Iterator[Message],
        readings: int,
        per_message: int,
        timeout_s: float,
        processes: int = 1,
    ) -> Throughput:
        root = self.root / name
        stack = Stack.start(root, self.broker)
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
            self.progress.update(
                task, total=1, completed=1, description=f"{name}: baseline {base.readings_per_s:,.0f} readings/s"
            )
            worker, ports = start_worker(stack, root, self.settings, processes)
            spy = self._profile(worker, name)
            task = self._task(f"{name}: worker", readings)
            first = processed = None
            peak = 0.0
            # the worker's CPU from the first poll that saw readings processed to the one that saw all
            cpu_first = cpu_last = 0.0
            valid_first = 0.0
            scrape_ms: list[float] = []
            deadline = time.monotonic() + timeout_s
            while True:
                if not worker.alive():
                    raise RuntimeError(f"the worker exited:\n{worker.log()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not store {readings} readings in {timeout_s:.0f} s")
                assert worker.pid is not None
                peak = max(peak, rss_mb_tree(worker.pid))
                cpu = cpu_seconds(worker.pid)
                asked = time.perf_counter()
                valid = metric(scrape_all(ports), "citystream_readings_valid_total")
                now = time.perf_counter()
                if first is not None and processed is None:  # under full load
                    scrape_ms.append((now - asked) * 1000)
                if valid and first is None:
                    first, cpu_first, valid_first = now, cpu, valid
                self.progress.update(task, completed=valid)
                if valid >= readings:
                    if processed is None:
                        processed, cpu_last = now, cpu
                    points = raw_points(stack.influx.url)
                    if points >= readings:
                        # the checkpoint that wrote the last points took the snapshots before it
                        snapshot = largest(scrape_all(ports), "citystream_snapshot_bytes")
                        break
                time.sleep(POLL_S)
            assert first is not None and processed is not None
            # both instants are seen by polling: a run shorter than one poll counts as one poll
            seconds = max(time.perf_counter() - first, POLL_S)
            processing = max(processed - first, POLL_S)
            counted = readings - valid_first
            worker_cpu_us = (cpu_last - cpu_first) / counted * 1e6 if counted > 0 else 0.0
            return Throughput(
                readings / seconds,
                readings / processing,
                base.readings_per_s,
                peak,
                points,
                seconds,
                snapshot,
                worker_cpu_us,
                base.cpu_us_per_reading,
                scrape_ms,
            )
        finally:
            if worker is not None:
                worker.stop()
            if spy is not None:
                spy.wait(timeout=60)
            stack.stop()

    def latency(self, rate: float, seconds: float) -> Latency:
        root = self.root / "latency"
        stack = Stack.start(root, self.broker)
        worker, (port,) = start_worker(stack, root, self.settings)
        spy = self._profile(worker, "latency")
        result = Latency()
        try:
            self._until_it_writes(stack, worker, port)
            task = self._task(f"latency: {rate:,.0f} readings/s", seconds)
            result.sent = asyncio.run(self._steady_load(stack, worker, rate, seconds, task, result, port))
            # each probe: seconds since the load started, and its latency
            lines = [f"{at:.3f},{latency:.3f}" for at, latency in result.timeline]
            (root / "probes.csv").write_text("\n".join(["sent_s,latency_s", *lines]) + "\n")
            lines = [f"{at:.1f},{total:.3f},{snapshots:.3f}" for at, total, snapshots in result.checkpoints]
            (root / "checkpoints.csv").write_text("\n".join(["at_s,checkpoint_s,snapshots_s", *lines]) + "\n")
        finally:
            worker.stop()
            if spy is not None:
                spy.wait(timeout=60)
            result.alerts = alert_latency(worker.log())
            stack.stop()
        return result

    def capacity(
        self, start_rate: float, factor: float, step_seconds: float, limit_s: float, max_rate: float | None = None
    ) -> list[RampStep]:
        """The ramp: the single-reading load of the latency phase at ``start_rate``, then ``factor``
        times faster, step after step on one worker, until p99 produce-to-InfluxDB exceeds ``limit_s``,
        the load cannot be sent at the rate, or the next step would be over ``max_rate``. Between two
        steps the load pauses until every probe has landed, so that each step starts with no backlog.
        Before the first step, the load runs unmeasured for :data:`SETTLE_S` seconds."""
        root = self.root / "capacity"
        stack = Stack.start(root, self.broker)
        worker, (port,) = start_worker(stack, root, self.settings)
        spy = self._profile(worker, "capacity")
        steps: list[RampStep] = []
        try:
            self._until_it_writes(stack, worker, port)
            # the first seconds of a new worker's load are slower (its first checkpoints, the alert
            # state read): settle at the first rate, unmeasured, so that the ramp measures the rate
            task = self._task(f"capacity: settling at {start_rate:,.0f} readings/s", SETTLE_S)
            asyncio.run(self._steady_load(stack, worker, start_rate, SETTLE_S, task, Latency()))
            rate = start_rate
            while True:
                task = self._task(f"capacity: {rate:,.0f} readings/s", step_seconds)
                result = Latency()
                result.sent = asyncio.run(self._steady_load(stack, worker, rate, step_seconds, task, result))
                probes = result.probes
                step = RampStep(
                    rate,
                    result.sent / result.seconds,
                    result.p99_s(),
                    statistics.median(probes) if probes else float("inf"),
                    len(probes),
                    result.lost,
                )
                steps.append(step)
                rate *= factor
                if not step.held(limit_s) or not worker.alive() or (max_rate is not None and rate > max_rate):
                    return steps
        finally:
            worker.stop()
            if spy is not None:
                spy.wait(timeout=60)
            stack.stop()

    def _until_it_writes(self, stack: Stack, worker: WorkerProcess, port: int) -> None:
        """Until the worker is ready and a reading sent now reaches InfluxDB."""
        asyncio.run(ensure_topics(stack.kafka.address, contract_topics(PARTITIONS)))
        deadline = time.monotonic() + 120
        while metric(scrape(port), "citystream_ready") < 1:
            if not worker.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not become ready:\n{worker.log()[-3000:]}")
            time.sleep(0.5)
        asyncio.run(self._warm_up(stack, worker))

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
                reading = taxi_reading(WARM_UP_DEVICE, time.time_ns() // 1_000_000, seq, random.Random(seq))
                await producer.send_and_wait(TAXI, orjson.dumps(reading), key=WARM_UP_DEVICE.encode())
                if await asyncio.to_thread(influx_query, stack.influx.url, query):
                    return
                await asyncio.sleep(0.5)
        finally:
            await producer.stop()

    async def _steady_load(
        self,
        stack: Stack,
        worker: WorkerProcess,
        rate: float,
        seconds: float,
        task: TaskID,
        result: Latency,
        port: int | None = None,
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
        next_probe = next_scrape = started
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
                    probe = taxi_reading(PROBE_DEVICE, now_ms, seq, rng)
                    sent_at[now_ms] = time.perf_counter()
                    await producer.send(TAXI, orjson.dumps(probe), key=PROBE_DEVICE.encode())
                    next_probe += PROBE_EVERY_S
                if port is not None and time.monotonic() >= next_scrape:
                    next_scrape += 1.0
                    text = await asyncio.to_thread(scrape, port)  # "" when the worker does not answer
                    result.checkpoints.append(
                        (
                            elapsed,
                            metric(text, "citystream_checkpoint_seconds"),
                            metric(text, "citystream_checkpoint_snapshot_seconds"),
                        )
                    )
                sent = i
                self.progress.update(task, completed=elapsed)
                if rss := rss_mb(worker.pid) if worker.pid else 0.0:
                    result.peak_rss_mb = max(result.peak_rss_mb, rss)
                await asyncio.sleep(max(0.0, started + (i / rate) - time.monotonic()))
            result.seconds = time.monotonic() - started
            await producer.flush()
            landed = time.monotonic() + DRAIN_S  # the last probes land
            while sent_at and time.monotonic() < landed:
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await poller
            await producer.stop()
            result.lost = len(sent_at)
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
