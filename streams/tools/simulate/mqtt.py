"""``citystream simulate --parking-via mqtt``: the parking sensors as a LoRaWAN network would send them,
ChirpStack v4 uplink events on an MQTT broker, for ``citystream bridge mqtt`` to bring to Kafka.

Each sensor gets a DevEUI derived from its simulated id (the reading's ``device_id`` on Kafka is then
that DevEUI); the decoded payload carries its lot and spot, so the bridge needs no registry entry.
Only well-formed parking readings travel by MQTT (a batch is sent as one uplink per reading);
messages that are invalid on purpose still go straight to Kafka, so their dead letters stay as
the simulator's report counts them.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Final

import aiomqtt

from schemas import codec
from schemas.readings import SourceKind
from schemas.timestamps import format_ms
from streams.tools.simulate.messages import Message
from streams.tools.simulate.options import SimulationReport
from streams.tools.simulate.producer import PartitionBatchSender

APPLICATION_ID: Final = "5f0e6c1e-2b7a-4c3e-9d51-7c1a0c1d0a11"  # the simulated ChirpStack application
GATEWAY_ID: Final = "0016c001f1500001"
MAX_PENDING: Final = 2_000  # messages whose uplinks await the MQTT broker's acknowledgement


def dev_eui_of(device_id: str) -> str:
    """A stable DevEUI (16 lower-case hex digits) for a simulated sensor id."""
    return hashlib.sha256(device_id.encode()).hexdigest()[:16]


def chirpstack_uplink(reading: dict[str, Any]) -> tuple[str, bytes]:
    """A parking reading as the (topic, payload) of a ChirpStack v4 uplink event."""
    dev_eui = dev_eui_of(str(reading["device_id"]))
    ts = reading["ts"]
    decoded: dict[str, Any] = {
        "occupied": reading["occupied"],
        "lot_id": reading["lot_id"],
        "spot_id": reading["spot_id"],
        "kind": reading.get("kind", "change"),
    }
    if reading.get("battery_v") is not None:
        decoded["battery_v"] = reading["battery_v"]
    gateway: dict[str, Any] = {"gatewayId": GATEWAY_ID, "uplinkId": 1, "context": "AAAAAA=="}
    if reading.get("rssi_dbm") is not None:
        gateway["rssi"] = int(reading["rssi_dbm"])
    if reading.get("snr_db") is not None:
        gateway["snr"] = reading["snr_db"]
    event = {
        "deduplicationId": f"{dev_eui}-{reading.get('seq', 0)}",
        "time": format_ms(ts) if isinstance(ts, int) else ts,
        "deviceInfo": {
            "tenantName": "citystream simulate",
            "applicationId": APPLICATION_ID,
            "applicationName": "parking",
            "deviceName": str(reading["device_id"]),
            "devEui": dev_eui,
        },
        "fCnt": reading.get("seq", 0),
        "fPort": 2,
        "object": decoded,
        "rxInfo": [gateway],
        "txInfo": {"frequency": 922100000},
    }
    return f"application/{APPLICATION_ID}/device/{dev_eui}/event/up", codec.dumps(event)


class MqttParkingSender(PartitionBatchSender):
    """The Kafka sender, except for well-formed parking messages: those are published as ChirpStack
    uplinks (QoS 1) and counted in the report once the MQTT broker acknowledged them all."""

    def __init__(self, producer: Any, report: SimulationReport, client: aiomqtt.Client) -> None:
        super().__init__(producer, report)
        self.client = client
        self._publishing: set[asyncio.Task[None]] = set()
        self._parking_topic = SourceKind.PARKING.topic

    async def add(self, message: Message) -> None:
        if message.topic != self._parking_topic or message.invalid_reason is not None or message.invalid_elements:
            await super().add(message)
            return
        document = codec.loads(message.value)
        readings = document["batch"] if message.is_batch else [document]
        while len(self._publishing) >= MAX_PENDING:
            await asyncio.wait(self._publishing, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(self._publish(message, [chirpstack_uplink(r) for r in readings]))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, message: Message, uplinks: list[tuple[str, bytes]]) -> None:
        try:
            await asyncio.gather(*(self.client.publish(topic, payload, qos=1) for topic, payload in uplinks))
        except aiomqtt.MqttError as exc:
            self.report.failed[f"MQTT {type(exc).__name__}"] += 1
        else:
            self.report.count(message)

    async def drain(self) -> None:
        await super().drain()
        while self._publishing:
            await asyncio.wait(self._publishing)
