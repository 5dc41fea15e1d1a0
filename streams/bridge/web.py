"""The bridge's HTTP endpoints on ``CITYSTREAM_WEB_HOST:CITYSTREAM_WEB_PORT``: ``/metrics``, ``/healthz``, ``/readyz``.

``/metrics`` is Prometheus' text format, built from :class:`~streams.bridge.service.BridgeStats` at
scrape time. ``/healthz`` answers 200 while the event loop runs; ``/readyz`` 200 while the bridge is
connected to the MQTT broker and its Kafka producer has started, else 503 with a JSON body saying why.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.bridge.service import BridgeStats


class BridgeCollector(Collector):
    def __init__(self, stats: BridgeStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        uplinks = CounterMetricFamily(
            "citystream_bridge_uplinks", "MQTT messages received, by format.", labels=["format"]
        )
        for name, count in sorted(stats.uplinks.items()):
            uplinks.add_metric([name], count)
        readings = CounterMetricFamily(
            "citystream_bridge_readings",
            "Readings Kafka acknowledged, by source topic (then the MQTT message was acknowledged).",
            labels=["topic"],
        )
        for name, count in sorted(stats.readings.items()):
            readings.add_metric([name], count)
        letters = CounterMetricFamily(
            "citystream_bridge_dead_letters", "Dead letters Kafka acknowledged, by reason.", labels=["reason"]
        )
        for name, count in sorted(stats.dead_letters.items()):
            letters.add_metric([name], count)
        yield from (uplinks, readings, letters)
        yield CounterMetricFamily(
            "citystream_bridge_mqtt_connects", "Connections made to the MQTT broker.", value=stats.mqtt_connects
        )
        yield CounterMetricFamily(
            "citystream_bridge_mqtt_errors", "MQTT connections that failed or were lost.", value=stats.mqtt_errors
        )
        yield CounterMetricFamily(
            "citystream_bridge_kafka_errors",
            "Kafka sends that failed after the producer's retries (the MQTT session was then reopened).",
            value=stats.kafka_errors,
        )
        yield GaugeMetricFamily(
            "citystream_bridge_mqtt_connected", "1 while connected to the MQTT broker.", value=int(stats.mqtt_connected)
        )
        yield GaugeMetricFamily(
            "citystream_bridge_in_flight",
            "MQTT messages sent to Kafka and not yet acknowledged to the MQTT broker.",
            value=stats.in_flight,
        )


def bridge_registry(stats: BridgeStats) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BridgeCollector(stats))
    return registry


def readiness(stats: BridgeStats) -> tuple[bool, dict[str, object]]:
    failed: dict[str, str] = {}
    if not stats.kafka_started:
        failed["kafka"] = "the Kafka producer has not started"
    if not stats.mqtt_connected:
        failed["mqtt"] = stats.mqtt_problem or "not connected"
    return not failed, {"ready": not failed, "failed": failed}


def web_app(stats: BridgeStats) -> web.Application:
    registry = bridge_registry(stats)

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def readyz(request: web.Request) -> web.Response:
        ready, body = readiness(stats)
        return web.json_response(body, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(stats: BridgeStats, host: str, port: int) -> web.AppRunner:
    """Start the endpoints; the caller ends them with ``await runner.cleanup()``."""
    runner = web.AppRunner(web_app(stats), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
