"""``citystream worker``: the Faust worker that ingests the three source topics."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click
import faust
import mode

from streams import environment, parking, taxi
from streams.app import build_app
from streams.decode import SourceMessage, TimeLimits
from streams.registry import RegistryError, load_registry
from streams.settings import ConfigError, Settings, load_settings
from streams.sink import InfluxUnavailable, PointSink, make_writer, wait_until_ready
from streams.topics import DEADLETTER_TOPIC, BrokerUnavailable, contract_topics, ensure_topics
from streams.wiring import Ingestor, SourceStream

log = logging.getLogger("citystream.worker")

SOURCE_STREAMS: tuple[SourceStream[Any], ...] = (taxi.STREAM, parking.STREAM, environment.STREAM)


class SinkService(mode.Service):
    """Runs the point sink with the app; on shutdown writes what is buffered."""

    def __init__(self, sink: PointSink, **kwargs: Any) -> None:
        self.sink = sink
        super().__init__(**kwargs)

    @mode.Service.task
    async def _write_batches(self) -> None:
        await self.sink.run()

    async def on_stop(self) -> None:
        await self.sink.stop()


class Runtime:
    """One worker: the Faust app, its agents, the ingestor and the sink."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = load_registry(settings.registry)
        self.limits = TimeLimits(
            max_future_ms=int(settings.max_future_s * 1000), max_age_ms=int(settings.max_age_s * 1000)
        )
        self.app = build_app(settings)
        self.writer = make_writer(settings)
        self.sink = PointSink(
            self.writer,
            batch_size=settings.write_batch_size,
            interval_s=settings.write_interval_s,
            max_pending=settings.max_pending_points,
        )
        self.ingestor = Ingestor(self.registry, self.limits)
        for stream in SOURCE_STREAMS:
            self._attach(stream)

    def _attach(self, stream: SourceStream[Any]) -> None:
        app, ingestor, sink = self.app, self.ingestor, self.sink
        topic = app.topic(
            stream.topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.settings.source_partitions,
        )

        async def ingest(events: faust.StreamT) -> None:
            # acks are manual: a message is acknowledged (and its offset committed) only once its
            # points are stored in InfluxDB and its dead letters are on the dead-letter topic
            async for event in events.noack().events():  # type: ignore[attr-defined]
                message = event.message
                source = SourceMessage(
                    message.topic,
                    message.partition,
                    message.offset,
                    message.key,
                    int(message.timestamp * 1000) if message.timestamp else None,
                )
                outcome = ingestor.ingest(stream, source, message.value)
                waits = [
                    await app.producer.send(DEADLETTER_TOPIC, key, value, None, None, None)
                    for key, value in outcome.dead_letters
                ]
                sink.add(outcome.lines, waits=waits, on_durable=event.ack)
                await sink.wait_for_room()

        app.agent(topic, name=f"citystream.{stream.kind.value}")(ingest)

    async def preflight(self) -> None:
        """Create missing topics and wait for InfluxDB, each for at most the startup timeout."""
        settings = self.settings
        await ensure_topics(
            settings.bootstrap_servers,
            contract_topics(settings.source_partitions),
            replication=settings.topic_replication,
            timeout_s=settings.startup_timeout_s,
        )
        await self.writer.open()
        await wait_until_ready(self.writer, settings.startup_timeout_s)

    def run(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
            pass
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self.preflight())
        worker = faust.Worker(
            self.app,
            SinkService(self.sink, loop=loop),
            loop=loop,
            loglevel=self.settings.log_level.upper(),
            redirect_stdouts=False,
        )
        worker.execute_from_commandline()


@click.command("worker")
def worker_command() -> None:
    """Run the processor: consume the source topics, write InfluxDB, publish dead letters.

    Settings come from CITYSTREAM_* environment variables (and a .env file): Kafka with
    CITYSTREAM_KAFKA_BOOTSTRAP, InfluxDB with CITYSTREAM_INFLUX_URL, _API (v1 or v2), _DB, _ORG and
    _TOKEN, the registry with CITYSTREAM_REGISTRY. See the README for the full table. Several workers
    with the same settings share the partitions as one consumer group.
    """
    try:
        settings = load_settings()
        runtime = Runtime(settings)
    except (ConfigError, RegistryError) as exc:
        click.echo(f"citystream worker: {exc}", err=True)
        sys.exit(2)
    try:
        runtime.run()
    except (BrokerUnavailable, InfluxUnavailable) as exc:
        click.echo(f"citystream worker: {exc}", err=True)
        sys.exit(1)
