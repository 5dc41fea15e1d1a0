"""The bridge process: the endpoints and the bridge, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from streams.bridge.service import Bridge
from streams.bridge.web import serve
from streams.core.registry import Registry
from streams.settings import BridgeSettings

log = logging.getLogger("citystream.bridge")


async def run_bridge(settings: BridgeSettings, registry: Registry) -> None:
    """Serve the endpoints and bridge until a SIGTERM or SIGINT; what was sent to Kafka by then is
    acknowledged to the MQTT broker before the bridge disconnects."""
    bridge = Bridge(settings, registry)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on this platform's loop
            loop.add_signal_handler(sig, bridge.stopping.set)
    runner = await serve(bridge.stats, settings.web_host, settings.web_port)
    log.info(
        "bridge %s: MQTT %s to Kafka %s; /metrics on %s:%d",
        settings.mqtt_client_id,
        settings.mqtt_url,
        settings.kafka_bootstrap,
        settings.web_host,
        settings.web_port,
    )
    try:
        await bridge.run()
    finally:
        await runner.cleanup()
    log.info("bridge stopped")
