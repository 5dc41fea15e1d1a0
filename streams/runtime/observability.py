"""The worker's HTTP endpoints on Faust's web server: ``/metrics``, ``/healthz``, ``/readyz``.

``/metrics`` is Prometheus' text format (:mod:`streams.runtime.metrics`). ``/healthz`` answers 200 while
the event loop runs. ``/readyz`` answers 200 only when Kafka answered a metadata request and
InfluxDB its ping within the last 15 s and the consumer group has given this worker its
partitions (perhaps none), else 503 with a JSON body naming each failed check. Kafka and InfluxDB
are checked every 5 s, and every second after a check that failed (the first one may come before
Faust's producer has connected).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST

from streams.clients.influx import InfluxWriter
from streams.runtime.faust_adapter import FaustConsumerView, producer_client
from streams.runtime.metrics import MetricSources, Readiness, exposition, worker_registry
from streams.runtime.sink import PointSink

log = logging.getLogger("citystream.observability")

CHECK_INTERVAL_S = 5.0
RECHECK_INTERVAL_S = 1.0  # after a check that failed
CHECK_TIMEOUT_S = 5.0


class Observability:
    """Metrics, readiness and the web views of one worker.

    It is given what it reports on (the worker builds it last, from its parts) and changes none of
    them: ``sources`` are the counters read at scrape time, ``writer`` is pinged, ``sinks`` tell
    whether writes fail, ``servers`` name the Kafka bootstrap servers in messages.
    """

    def __init__(
        self, app: Any, sources: MetricSources, writer: InfluxWriter, sinks: Sequence[PointSink], servers: str
    ) -> None:
        self.app = app
        self.writer = writer
        self.servers = servers
        self.consumer = FaustConsumerView(app)
        self._assigned_once = False
        self.readiness = Readiness(
            settled=self._settled,
            assigned=lambda: len(list(self.consumer.assignment())),
            write_problems=lambda: [sink.problem for sink in sinks if sink.problem is not None],
        )
        sources.consumer = self.consumer
        sources.readiness = self.readiness
        self.registry = worker_registry(sources)
        app.on_partitions_assigned.connect(self._on_assigned)
        self._attach_views()

    async def _on_assigned(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        self._assigned_once = True

    def _settled(self) -> bool:
        return self._assigned_once and not getattr(self.app, "rebalancing", False)

    def _attach_views(self) -> None:
        app, registry, readiness = self.app, self.registry, self.readiness

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

    async def check(self) -> bool:
        """Ask Kafka for metadata and InfluxDB for a ping; remember when each last answered. Whether
        both answered."""
        broker_ok, broker_error = await self._broker_answers()
        self.readiness.broker_checked(broker_ok, broker_error)
        writer = self.writer
        try:
            influx_ok = await asyncio.wait_for(writer.ping(), timeout=CHECK_TIMEOUT_S)
        except TimeoutError:
            influx_ok = False
        self.readiness.influx_checked(influx_ok, f"no answer to /ping from {writer.description}")
        return broker_ok and influx_ok

    async def _broker_answers(self) -> tuple[bool, str]:
        servers = self.servers
        client = producer_client(self.app)
        if client is None:
            return False, "the Kafka producer has not started"
        if not client.cluster.brokers():
            return False, "the Kafka producer has not connected yet"
        try:
            await asyncio.wait_for(client.fetch_all_metadata(), timeout=CHECK_TIMEOUT_S)
        except (TimeoutError, KafkaError, OSError) as exc:
            return False, f"no metadata from Kafka at {servers}: {type(exc).__name__}: {exc}"
        return True, ""

    async def run_checks(self, should_stop: Any) -> None:
        """Check every few seconds, every second after a failed check, until ``should_stop()`` (the
        worker service's flag)."""
        while not should_stop():
            answered = False
            try:
                answered = await self.check()
            except Exception as exc:  # a probe must never stop the worker; readiness reports it
                log.warning("readiness check failed: %r", exc)
            await asyncio.sleep(CHECK_INTERVAL_S if answered else RECHECK_INTERVAL_S)
