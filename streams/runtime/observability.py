"""The worker's HTTP endpoints on Faust's web server: ``/metrics``, ``/healthz``, ``/readyz``.

``/metrics`` is Prometheus' text format (:mod:`streams.runtime.metrics`). ``/healthz`` answers 200 while
the event loop runs. ``/readyz`` answers 200 only when Kafka answered a metadata request and
InfluxDB its ping within the last 15 s and the consumer group has given this worker its
partitions (perhaps none), else 503 with a JSON body naming each failed check.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST

from schemas.readings import SourceKind
from streams.kinds import environment, parking, taxi
from streams.runtime.faust_adapter import FaustConsumerView, producer_client
from streams.runtime.metrics import MetricSources, Readiness, exposition, worker_registry

if TYPE_CHECKING:
    from streams.runtime.worker import Runtime

log = logging.getLogger("citystream.observability")

CHECK_INTERVAL_S = 5.0
CHECK_TIMEOUT_S = 5.0


class Observability:
    """Metrics, readiness and the web views of one worker (:class:`streams.runtime.worker.Runtime`)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        app = runtime.app
        self.dropped: dict[str, Counter[str]] = {kind.value: Counter() for kind in SourceKind}
        self._kinds = {
            taxi.STREAM.topic: SourceKind.TAXI.value,
            runtime.taxi_cells_topic: SourceKind.TAXI.value,
            parking.STREAM.topic: SourceKind.PARKING.value,
            runtime.parking_lots_topic: SourceKind.PARKING.value,
            environment.STREAM.topic: SourceKind.ENVIRONMENT.value,
        }
        self._count_dropped_readings()
        self.consumer = FaustConsumerView(app)
        self._assigned_once = False
        sinks = (runtime.sink, runtime.alerts_sink)
        self.readiness = Readiness(
            settled=self._settled,
            assigned=lambda: len(list(self.consumer.assignment())),
            write_problems=lambda: [sink.problem for sink in sinks if sink.problem is not None],
        )
        self.registry = worker_registry(
            MetricSources(
                ingest=runtime.ingestor.stats,
                sinks=[runtime.sink, runtime.alerts_sink],
                dropped=self.dropped,
                outbox=runtime.outbox,
                works=lambda: list(runtime.checkpointer.works.values()),
                consumer=self.consumer,
                readiness=self.readiness,
            )
        )
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        self._attach_views()

    def _count_dropped_readings(self) -> None:
        """Every aggregate the checkpointer makes counts its duplicates and late records per stream kind."""
        checkpointer = self.runtime.checkpointer
        make = checkpointer.aggregate_factory

        def counted(topic: str) -> Any:
            made = make(topic)
            kind = self._kinds.get(topic)
            if made is not None and kind is not None:
                made[0].dropped = self.dropped[kind]
            return made

        checkpointer.aggregate_factory = counted

    async def _on_assigned(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        self._assigned_once = True

    def _settled(self) -> bool:
        return self._assigned_once and not getattr(self.runtime.app, "rebalancing", False)

    def _attach_views(self) -> None:
        app, registry, readiness = self.runtime.app, self.registry, self.readiness

        async def metrics(view: Any, request: Any) -> Any:
            return view.bytes(exposition(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(view: Any, request: Any) -> Any:
            return view.json({"alive": True})

        async def readyz(view: Any, request: Any) -> Any:
            ready, body = readiness.report()
            return view.json(body, status=200 if ready else 503)

        app.page("/metrics", name="citystream_metrics")(metrics)
        app.page("/healthz", name="citystream_healthz")(healthz)
        app.page("/readyz", name="citystream_readyz")(readyz)

    async def check(self) -> None:
        """Ask Kafka for metadata and InfluxDB for a ping; remember when each last answered."""
        broker_ok, broker_error = await self._broker_answers()
        self.readiness.broker_checked(broker_ok, broker_error)
        writer = self.runtime.writer
        try:
            influx_ok = await asyncio.wait_for(writer.ping(), timeout=CHECK_TIMEOUT_S)
        except TimeoutError:
            influx_ok = False
        self.readiness.influx_checked(influx_ok, f"no answer to /ping from {writer.description}")

    async def _broker_answers(self) -> tuple[bool, str]:
        servers = self.runtime.settings.kafka_bootstrap
        client = producer_client(self.runtime.app)
        if client is None:
            return False, "the Kafka producer has not started"
        try:
            await asyncio.wait_for(client.fetch_all_metadata(), timeout=CHECK_TIMEOUT_S)
        except (TimeoutError, KafkaError, OSError) as exc:
            return False, f"no metadata from Kafka at {servers}: {type(exc).__name__}: {exc}"
        return True, ""

    async def run_checks(self, should_stop: Any) -> None:
        """Check every few seconds until ``should_stop()`` (the worker service's flag)."""
        while not should_stop():
            try:
                await self.check()
            except Exception as exc:  # a probe must never stop the worker; readiness reports it
                log.warning("readiness check failed: %r", exc)
            await asyncio.sleep(CHECK_INTERVAL_S)
