"""``citystream bridge mqtt``: LoRaWAN uplinks (ChirpStack v4, The Things Stack v3) and contract
readings from an MQTT broker to the source topics (:mod:`streams.bridge`)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from streams.bridge.main import run_bridge
from streams.clients.kafka import BrokerUnavailable
from streams.core.registry import RegistryError, load_registry
from streams.runtime.logs import Redactor, configure_logging, secret_values
from streams.settings import ConfigError, check_web_port, load_bridge_settings

log = logging.getLogger("citystream.bridge")


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (as the worker does), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(main)
        return
    uvloop.run(main)


@click.group("bridge")
def bridge_command() -> None:
    """Bring readings from other transports to the source topics."""


@bridge_command.command("mqtt")
def mqtt_command() -> None:
    """Subscribe to an MQTT broker and produce contract readings to the source topics.

    \b
    ChirpStack v4 uplink events and The Things Stack v3 uplinks of parking sensors become parking
    readings (the DevEUI's lot and spot from the registry's parking_sensors, else from the decoded
    payload); contract readings sent over MQTT are passed on as they came. An uplink that cannot be
    mapped goes to city.deadletter.v1 with reason unmappable and its original bytes.

    \b
    Settings (environment or .env), besides the worker's Kafka, registry and web ones:
      CITYSTREAM_MQTT_URL          mqtt://host:1883, or mqtts://host:8883 for TLS
      CITYSTREAM_MQTT_USERNAME     user; CITYSTREAM_MQTT_PASSWORD or _PASSWORD_FILE (never logged)
      CITYSTREAM_MQTT_SSL_CAFILE   CA bundle for mqtts:// (else the system's)
      CITYSTREAM_MQTT_TOPICS       FORMAT:FILTER,... with FORMAT chirpstack, tts, contract-parking,
                                   contract-env or contract-taxi (default: ChirpStack's and
                                   The Things Stack's uplink topics)
      CITYSTREAM_MQTT_CLIENT_ID    the persistent session's client id (default citystream-bridge)
      CITYSTREAM_MQTT_SHARE_GROUP  several bridges share the uplinks as $share/<group>/<filter>

    At least once: QoS 1 in a persistent session, and an MQTT message is acknowledged only after
    Kafka has acknowledged the reading it became. /metrics, /healthz and /readyz are served on
    CITYSTREAM_WEB_HOST:CITYSTREAM_WEB_PORT.
    """
    try:
        settings = load_bridge_settings()
    except ConfigError as exc:  # its message never holds a setting's value
        click.echo(f"citystream bridge mqtt: {exc}", err=True)
        sys.exit(2)
    redact = Redactor(secret_values(settings))
    try:
        check_web_port(settings.web_host, settings.web_port)
        registry = load_registry(settings.registry)
    except (ConfigError, RegistryError) as exc:
        click.echo(f"citystream bridge mqtt: {redact(str(exc))}", err=True)
        sys.exit(2)
    configure_logging(settings)
    try:
        _run(run_bridge(settings, registry))
    except BrokerUnavailable as exc:
        log.critical("%s", exc)
        sys.exit(1)


@bridge_command.command("bench")
@click.option("--uplinks", type=click.IntRange(min=100), default=20_000, show_default=True, help="Uplinks per figure.")
@click.option(
    "--broker",
    type=click.Choice(["tansu", "kafka"]),
    default="tansu",
    show_default=True,
    help="The Kafka broker: Tansu, or Apache Kafka (needs `citystream local install --kafka`).",
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/bench-bridge"),
    show_default=True,
    help="Folder of the brokers' data and the logs (emptied first).",
)
def bench_command(uplinks: int, broker: str, folder: Path) -> None:
    """Measure the MQTT bridge's uplinks/s on this machine, with Mosquitto and a local Kafka.

    \b
    live     ChirpStack uplinks published with QoS 1 while the bridge runs: from the first
             publish until Kafka has acknowledged every reading
    backlog  as many uplinks held in the bridge's persistent session while it was stopped:
             from the bridge's start until all are on Kafka
    """
    from streams.tools.bridgebench import measure

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    figures = asyncio.run(measure(uplinks, folder.resolve(), broker))
    click.echo(f"uplinks   {figures.uplinks:,} ChirpStack uplinks, QoS 1, Kafka on {broker}")
    click.echo(
        f"live      {figures.live_per_s:,.0f} uplinks/s ({figures.live_s:.1f} s; the publisher took "
        f"{figures.publish_s:.1f} s)"
    )
    click.echo(
        f"backlog   {figures.backlog_per_s:,.0f} uplinks/s ({figures.backlog_s:.1f} s, the bridge's start included)"
    )
