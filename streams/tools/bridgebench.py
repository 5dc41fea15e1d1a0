"""``citystream bridge bench``: the MQTT bridge's uplinks per second on this machine.

A Kafka broker (Tansu, or Apache Kafka) and Mosquitto are started in a folder, and one bridge as a
child process. Two figures: *live*, ChirpStack uplinks published with QoS 1 while the bridge runs,
timed from the first publish until Kafka has acknowledged every reading (the bridge's
``citystream_bridge_readings_total``); and *backlog*, the same number of uplinks held in the
bridge's persistent session while it is stopped, timed from its start until all are on Kafka.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import click
from prometheus_client.parser import text_string_to_metric_families

from schemas.readings import SourceKind
from streams.clients.kafka import contract_topics, ensure_topics
from streams.settings import mqtt_address
from streams.tools import localstack
from streams.tools.localstack.ports import LOOPBACK_OPENER
from streams.tools.simulate.mqtt import chirpstack_uplink
from streams.tools.workerprocess import BridgeProcess

PARKING = SourceKind.PARKING.topic


@dataclass(frozen=True)
class BridgeFigures:
    uplinks: int
    live_s: float
    publish_s: float
    backlog_s: float

    @property
    def live_per_s(self) -> float:
        return self.uplinks / self.live_s

    @property
    def backlog_per_s(self) -> float:
        return self.uplinks / self.backlog_s


def uplinks(count: int, start_ms: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """``count`` ChirpStack uplinks of 1000 parking sensors in 10 lots, one per sensor and second."""
    rng = random.Random(seed)
    sensors = 1000
    return [
        chirpstack_uplink(
            {
                "device_id": f"pk-bench-{n % sensors:04d}",
                "ts": start_ms + (n // sensors) * 1000 + n % sensors,
                "seq": n // sensors,
                "lot_id": f"bench-lot-{n % 10}",
                "spot_id": f"S{n % sensors:04d}",
                "occupied": rng.random() < 0.6,
                "kind": "change",
                "battery_v": 3.5,
                "rssi_dbm": -90.0,
                "snr_db": 5.5,
            }
        )
        for n in range(count)
    ]


async def publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    host, port = mqtt_address(url)
    async with aiomqtt.Client(host, port, max_inflight_messages=1000, timeout=60) as client:
        client.pending_calls_threshold = 2000  # 1000 publishes at once are what we mean to do
        for start in range(0, len(messages), 1000):
            await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in messages[start : start + 1000]))


def readings_bridged(port: int) -> float:
    try:
        with LOOPBACK_OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "citystream_bridge_readings_total" and sample.labels.get("topic") == PARKING:
                return sample.value
    return 0


def wait_ready(bridge: BridgeProcess, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not bridge.alive():
            raise click.ClickException(f"the bridge exited:\n{bridge.log()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise click.ClickException(f"the bridge was not ready within {timeout:.0f} s:\n{bridge.log()[-2000:]}")


async def wait_bridged(bridge: BridgeProcess, port: int, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while readings_bridged(port) < expected:
        if time.monotonic() > deadline or not bridge.alive():
            raise click.ClickException(
                f"{readings_bridged(port):.0f} of {expected} readings after {timeout:.0f} s:\n{bridge.log()[-2000:]}"
            )
        await asyncio.sleep(0.05)


async def measure(count: int, folder: Path, broker: str) -> BridgeFigures:
    factory = localstack.apache_kafka if broker == "kafka" else localstack.tansu
    kafka = factory(localstack.free_port(), folder / "kafka")
    mqtt = localstack.mosquitto(localstack.free_port(), folder / "mosquitto")
    kafka.start()
    bridge: BridgeProcess | None = None
    try:
        mqtt.start()
        await ensure_topics(kafka.address, contract_topics(12), timeout_s=60)
        port = localstack.free_port()
        env = {
            "CITYSTREAM_KAFKA_BOOTSTRAP": kafka.address,
            "CITYSTREAM_MQTT_URL": mqtt.url,
            "CITYSTREAM_MQTT_CLIENT_ID": "citystream-bridge-bench",
            "CITYSTREAM_WEB_PORT": str(port),
            "CITYSTREAM_LOG_LEVEL": "warning",
        }
        start_ms = time.time_ns() // 1_000_000 - 3 * 86_400_000
        live, backlog = uplinks(count, start_ms), uplinks(count, start_ms + 86_400_000)

        bridge = BridgeProcess(folder, env).start()
        wait_ready(bridge, port)
        live_started = time.monotonic()
        await publish(mqtt.url, live)
        publish_s = time.monotonic() - live_started
        await wait_bridged(bridge, port, count, timeout=600)
        live_s = time.monotonic() - live_started
        bridge.stop()

        # the uplinks wait in the bridge's persistent session; then the bridge drains them
        await publish(mqtt.url, backlog)
        bridge = BridgeProcess(folder, env).start()
        started = time.monotonic()
        await wait_bridged(bridge, port, count, timeout=600)
        backlog_s = time.monotonic() - started  # includes the bridge's start
        return BridgeFigures(count, live_s, publish_s, backlog_s)
    finally:
        if bridge is not None:
            bridge.stop()
        mqtt.stop()
        kafka.stop()
