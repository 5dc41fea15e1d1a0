"""Producing to Kafka: the paced loop (a token bucket over the city's readings) and the record-batch sender."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
from collections.abc import Callable
from typing import Any, Final

from aiokafka import AIOKafkaProducer

from schemas.readings import SOURCE_TOPICS, SourceKind
from streams.clients.kafka import contract_topics, ensure_topics
from streams.core.decode import MAX_MESSAGE_BYTES
from streams.settings import Settings, kafka_client_kwargs, load_settings
from streams.tools.simulate.city import City
from streams.tools.simulate.clock import SimulatedPeriod, wall_clock_ms
from streams.tools.simulate.display import ProgressCallback, progress_display
from streams.tools.simulate.layout import CityLayout, write_registry
from streams.tools.simulate.messages import Message, MessageComposer
from streams.tools.simulate.options import SimulationOptions, SimulationReport


class TokenBucket:
    """Paces readings: ``rate`` tokens per second, holding at most ``burst``."""

    def __init__(self, rate: float, burst: float, now_s: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = min(self.burst, max(rate * 0.02, 1.0))
        self.updated_s = now_s

    def available(self, now_s: float) -> int:
        self.tokens = min(self.burst, self.tokens + (now_s - self.updated_s) * self.rate)
        self.updated_s = now_s
        return max(int(self.tokens), 0)

    def spend(self, tokens: int) -> None:
        self.tokens -= tokens

    def seconds_until(self, tokens: float) -> float:
        return max(tokens - self.tokens, 0.0) / self.rate


class PartitionBatchSender:
    """Sends messages as aiokafka record batches, one open batch per topic partition.

    This avoids a future per message (``producer.send``), which is what limits a Python producer
    at tens of thousands of messages per second. Counts a message in the report when its batch
    is acknowledged, and errors by name when the broker refuses it.
    """

    def __init__(self, producer: Any, report: SimulationReport) -> None:
        self.producer = producer
        self.report = report
        self._open: dict[tuple[str, int], tuple[Any, list[Message]]] = {}
        self._in_flight: set[asyncio.Future[Any]] = set()

    async def add(self, message: Message) -> None:
        slot = (message.topic, message.partition)
        entry = self._open.get(slot)
        if entry is None:
            entry = self._open[slot] = (self.producer.create_batch(), [])
        builder, carried = entry
        if builder.append(timestamp=None, key=message.key, value=message.value) is None:
            await self._send(slot)
            builder, carried = self._open[slot] = (self.producer.create_batch(), [])
            # an empty batch takes any one record, even one larger than the batch size
            builder.append(timestamp=None, key=message.key, value=message.value)
        carried.append(message)

    async def flush(self) -> None:
        """Send every open batch (the sender's linger)."""
        for slot in list(self._open):
            await self._send(slot)

    async def drain(self) -> None:
        """Send everything and wait until the broker answered for all of it."""
        await self.flush()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _send(self, slot: tuple[str, int]) -> None:
        builder, carried = self._open.pop(slot)
        if not carried:
            return
        topic, partition = slot
        try:
            future = await self.producer.send_batch(builder, topic, partition=partition)
        except Exception as exc:  # counted per message; the run goes on
            self._failed(carried, exc)
            return
        self._in_flight.add(future)
        future.add_done_callback(lambda f: self._delivered(f, carried))

    def _delivered(self, future: asyncio.Future[Any], carried: list[Message]) -> None:
        self._in_flight.discard(future)
        if future.cancelled():
            self._failed(carried, asyncio.CancelledError())
        elif (exc := future.exception()) is not None:
            self._failed(carried, exc)
        else:
            for message in carried:
                self.report.count(message)

    def _failed(self, carried: list[Message], exc: BaseException) -> None:
        name = type(exc).__name__
        for message in carried:
            label = f"{name} ({message.invalid_reason})" if message.invalid_reason else name
            self.report.failed[label] += 1


TICK_S: Final = 0.01
SENDER_LINGER_S: Final = 0.02


def resolve_seed(seed: int | None) -> int:
    return seed if seed is not None else random.SystemRandom().randrange(1, 2**31)


def check_period(options: SimulationOptions, settings: Settings) -> None:
    """Refuse a period whose oldest readings the worker would dead-letter as stale."""
    limit_s = settings.max_age_s * 0.85
    if options.backdated_s > limit_s:
        raise ValueError(
            f"--duration x (--speedup - 1) = {options.backdated_s / 86_400:.1f} days reaches back "
            f"further than the worker accepts (keep it under {limit_s / 86_400:.1f} days)"
        )


async def run_simulation(
    options: SimulationOptions,
    *,
    settings: Settings | None = None,
    console: Any | None = None,
    registry_ready: Callable[[], Any] | None = None,
    on_progress: ProgressCallback | None = None,
    progress_interval_s: float = 0.25,
    stop: asyncio.Event | None = None,
) -> SimulationReport:
    """Simulate the city for ``options.duration_s`` wall seconds and produce to Kafka.

    Creates the missing topics, writes the registry when ``options.registry_out`` is set and
    then calls ``registry_ready`` (awaited if it returns an awaitable: start a worker there),
    then produces. ``console`` (a rich Console) shows a progress bar; ``on_progress`` receives
    the report as it grows; ``stop`` ends the run early (what was generated is still sent).
    Returns what the broker acknowledged. Raises :class:`streams.clients.kafka.BrokerUnavailable`
    when Kafka does not answer, ValueError for a period the worker would reject as stale.
    """
    settings = settings or load_settings()
    check_period(options, settings)
    servers = [s.strip() for s in (options.bootstrap or settings.kafka_bootstrap).split(",") if s.strip()]
    seed = resolve_seed(options.seed)
    layout = CityLayout.build(options, seed)
    kafka_options = kafka_client_kwargs(settings)  # SASL/TLS as the worker's
    await ensure_topics(
        servers, contract_topics(settings.source_partitions), timeout_s=settings.startup_timeout_s, **kafka_options
    )
    if options.registry_out is not None:
        write_registry(options.registry_out, layout)
    if registry_ready is not None:
        started = registry_ready()
        if inspect.isawaitable(started):
            await started

    producer = AIOKafkaProducer(
        bootstrap_servers=servers,
        client_id="citystream-simulate",
        linger_ms=int(SENDER_LINGER_S * 1000),
        max_batch_size=256 * 1024,
        max_request_size=4 * MAX_MESSAGE_BYTES,  # room for the one too_large message
        compression_type=None if options.compression == "none" else options.compression,
        request_timeout_ms=30_000,
        **kafka_options,
    )
    await producer.start()
    mqtt = contextlib.AsyncExitStack()
    try:
        mqtt_client = await mqtt.enter_async_context(_mqtt_client(options)) if options.parking_via == "mqtt" else None
        partitions = {kind: len(await producer.partitions_for(SOURCE_TOPICS[kind])) for kind in SourceKind}
        # building a big fleet takes a while: build first, then start the clock
        planned = SimulatedPeriod(wall_clock_ms(), options.duration_s, options.speedup)
        city = City(layout, planned.start_ms, planned.end_ms, seed, options.fault_rate)
        composer = MessageComposer(options, partitions, seed)
        period = SimulatedPeriod(wall_clock_ms(), options.duration_s, options.speedup)
        report = SimulationReport(
            seed=seed,
            bootstrap=",".join(servers),
            speedup=options.speedup,
            simulated_start_ms=planned.start_ms,
            started_at_ms=period.run_start_ms,
            taxis=len(layout.taxi_ids),
            registry_path=options.registry_out,
        )
        sender = PartitionBatchSender(producer, report)
        if mqtt_client is not None:
            from streams.tools.simulate.mqtt import MqttParkingSender

            sender = MqttParkingSender(producer, report, mqtt_client)
        with progress_display(console, options, on_progress) as show:
            await produce_paced(city, composer, sender, period, options, report, show, progress_interval_s, stop)
            await sender.drain()
            report.finished_at_ms = wall_clock_ms()
            show(report)
        return report
    finally:
        await mqtt.aclose()
        await producer.stop()


def _mqtt_client(options: SimulationOptions) -> Any:
    """The MQTT client of ``--parking-via mqtt`` (an async context manager)."""
    import os

    import aiomqtt

    from streams.settings import mqtt_address

    url = options.mqtt_url or os.environ.get("CITYSTREAM_MQTT_URL") or "mqtt://127.0.0.1:1883"
    host, port = mqtt_address(url)
    client = aiomqtt.Client(host, port, identifier=None, max_inflight_messages=1000, timeout=30)
    client.pending_calls_threshold = 10_000  # many publishes await their acknowledgement at once, on purpose
    return client


async def produce_paced(
    city: City,
    composer: MessageComposer,
    sender: PartitionBatchSender,
    period: SimulatedPeriod,
    options: SimulationOptions,
    report: SimulationReport,
    on_progress: ProgressCallback,
    progress_interval_s: float,
    stop: asyncio.Event | None,
) -> None:
    """The pacing loop: release due readings as the token bucket allows, send, repeat."""
    loop = asyncio.get_running_loop()
    started_s = loop.time()
    deadline_s = started_s + options.duration_s
    bucket = TokenBucket(options.rate, burst=options.rate * 0.1, now_s=started_s)
    next_flush_s = started_s + SENDER_LINGER_S
    next_progress_s = started_s
    while (now_s := loop.time()) < deadline_s and not (stop is not None and stop.is_set()):
        wall_ms = wall_clock_ms()
        readings = city.advance(period.simulated_ms(wall_ms), bucket.available(now_s))
        messages = composer.compose(readings, city.now_ms, wall_ms)
        bucket.spend(len(readings))  # invalid messages and duplicates come on top
        for message in messages:
            await sender.add(message)
        report.simulated_end_ms = city.now_ms
        if now_s >= next_flush_s:
            await sender.flush()
            next_flush_s = now_s + SENDER_LINGER_S
        if now_s >= next_progress_s:
            on_progress(report)
            next_progress_s = now_s + progress_interval_s
        # let the producer's sender run; sleep while nothing is due or no token is left
        await asyncio.sleep(TICK_S if len(readings) < 100 else 0)
    for message in composer.flush_all(wall_clock_ms()):
        await sender.add(message)
