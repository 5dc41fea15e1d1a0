"""``citystream bridge mqtt``: MQTT uplinks to the source topics, at least once (schemas/CONTRACT.md section 9).

The bridge holds one MQTT session (QoS 1, ``clean_session`` false, a stable client id) and one Kafka
producer. Each MQTT message becomes a reading or a dead letter (:mod:`streams.core.uplinks`), which is
sent to Kafka; the message is acknowledged to the MQTT broker (PUBACK) only once Kafka has
acknowledged what it became, in the order the messages came. A bridge that stops or crashes before
that leaves the message in its session on the MQTT broker, which delivers it again when the bridge
comes back with the same client id: a repeat, which the worker drops as a duplicate by ``seq``.

A lost MQTT connection is opened again with a growing pause (0.5 s up to 30 s); a Kafka send that
fails after the producer's own retries drops the MQTT connection the same way, so that its message and
the ones after it are delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from aiokafka import AIOKafkaProducer

from schemas.deadletter import DeadLetterReason
from streams.clients.kafka import DEADLETTER_MAX_MESSAGE_BYTES, DEADLETTER_TOPIC, contract_topics, ensure_topics
from streams.core.decode import BridgeSource, Rejection, dead_letter, encode_dead_letter
from streams.core.registry import Registry
from streams.core.uplinks import Mapped, TopicSpec, format_of, map_message, subscription, unmappable
from streams.errors import CitystreamError
from streams.settings import BridgeSettings, kafka_client_kwargs

log = logging.getLogger("citystream.bridge")

FIRST_PAUSE_S = 0.5
LONGEST_PAUSE_S = 30.0
IN_FLIGHT = 10_000  # messages sent to Kafka and not yet acknowledged to the MQTT broker


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class BridgeStats:
    """What ``/metrics`` and ``/readyz`` report: plain counters, read at scrape time."""

    uplinks: Counter[str] = field(default_factory=Counter)  # by format
    readings: Counter[str] = field(default_factory=Counter)  # by Kafka topic, once Kafka acknowledged
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason, once Kafka acknowledged
    mqtt_connects: int = 0
    mqtt_errors: int = 0
    kafka_errors: int = 0
    mqtt_connected: bool = False
    kafka_started: bool = False
    in_flight: int = 0
    mqtt_problem: str = "not connected yet"


@dataclass(frozen=True, slots=True)
class _Sent:
    """An MQTT message on its way: what Kafka must acknowledge before the MQTT broker may hear of it."""

    mid: int
    qos: int
    delivery: Awaitable[Any]
    counter: Counter[str]
    label: str


class Bridge:
    """One bridge process: the MQTT session, the Kafka producer, and the counters."""

    def __init__(self, settings: BridgeSettings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.specs: tuple[TopicSpec, ...] = settings.mqtt_subscriptions()
        self.stats = BridgeStats()
        self.stopping = asyncio.Event()

    # --- Kafka ----------------------------------------------------------------------------------

    async def start_producer(self) -> AIOKafkaProducer:
        """Create the contract's topics if missing (Apache Kafka creates none by itself) and start the producer."""
        settings = self.settings
        options = kafka_client_kwargs(settings)
        await ensure_topics(
            settings.bootstrap_servers,
            contract_topics(settings.source_partitions),
            replication=settings.topic_replication,
            timeout_s=settings.startup_timeout_s,
            **options,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            acks="all",
            linger_ms=5,
            max_request_size=DEADLETTER_MAX_MESSAGE_BYTES,
            client_id=f"citystream-bridge-{settings.mqtt_client_id}",
            **options,
        )
        await producer.start()
        self.stats.kafka_started = True
        return producer

    # --- MQTT -----------------------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        settings = self.settings
        host, port = settings.mqtt_host_port
        tls: ssl.SSLContext | None = None
        if settings.mqtt_tls:
            tls = ssl.create_default_context(cafile=settings.mqtt_ssl_cafile)
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password is not None else None
        client = aiomqtt.Client(
            host,
            port,
            identifier=settings.mqtt_client_id,
            clean_session=False,  # a persistent session: the broker keeps what is not acknowledged
            protocol=aiomqtt.ProtocolVersion.V311,
            username=settings.mqtt_username,
            password=password,
            tls_context=tls,
            keepalive=30,
            timeout=10,
        )
        # PUBACK only once Kafka has the reading. aiomqtt 2 has no API for it yet; its paho-mqtt client
        # has, and it must be set before connecting: the session's held messages come right after CONNACK
        client._client.manual_ack_set(True)
        return client

    async def run(self) -> None:
        """Bridge until :attr:`stopping` is set; the MQTT connection is reopened whenever it is lost."""
        producer = await self.start_producer()
        try:
            pause = FIRST_PAUSE_S
            while not self.stopping.is_set():
                connected_at = time.monotonic()
                try:
                    await self._session(producer)
                except aiomqtt.MqttError as exc:
                    self.stats.mqtt_errors += 1
                    self.stats.mqtt_problem = f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "MQTT broker %s: %s; connecting again in %.1f s",
                        self._where(),
                        exc or type(exc).__name__,
                        pause,
                    )
                except _KafkaFailed as exc:
                    self.stats.kafka_errors += 1
                    self.stats.mqtt_problem = "disconnected after a failed Kafka send"
                    log.warning("Kafka did not take a message (%s); its uplinks come again in %.1f s", exc.cause, pause)
                finally:
                    self.stats.mqtt_connected = False
                    self.stats.in_flight = 0
                if self.stopping.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), timeout=pause)
                # a session that lasted a while starts the pauses over
                pause = FIRST_PAUSE_S if time.monotonic() - connected_at > 60 else min(pause * 2, LONGEST_PAUSE_S)
        finally:
            await producer.stop()

    def _where(self) -> str:
        host, port = self.settings.mqtt_host_port
        return f"{host}:{port}"

    async def _session(self, producer: AIOKafkaProducer) -> None:
        client = self._client()
        async with client:
            for spec in self.specs:
                await client.subscribe(subscription(spec, self.settings.mqtt_share_group), qos=1)
            self.stats.mqtt_connected = True
            self.stats.mqtt_connects += 1
            self.stats.mqtt_problem = ""
            log.info(
                "connected to the MQTT broker %s as %s; subscribed to %s",
                self._where(),
                self.settings.mqtt_client_id,
                ", ".join(subscription(s, self.settings.mqtt_share_group) for s in self.specs),
            )
            sent: asyncio.Queue[_Sent] = asyncio.Queue(maxsize=IN_FLIGHT)
            receive = asyncio.create_task(self._receive(client, producer, sent))
            acknowledge = asyncio.create_task(self._acknowledge(client, sent))
            stop = asyncio.create_task(self.stopping.wait())
            try:
                done, _ = await asyncio.wait({receive, acknowledge, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    # what was sent gets its acknowledgement before the session ends
                    receive.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receive
                    try:
                        await asyncio.wait_for(sent.join(), timeout=30)
                    except TimeoutError:  # they stay in the session, for the next start
                        log.warning("%d uplinks not acknowledged by Kafka within 30 s of the stop", sent.qsize())
                for task in done:
                    task.result()  # raise what ended the session
            finally:
                for task in (receive, acknowledge, stop):
                    task.cancel()
                for task in (receive, acknowledge, stop):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _receive(self, client: aiomqtt.Client, producer: AIOKafkaProducer, sent: asyncio.Queue[_Sent]) -> None:
        async for message in client.messages:
            await sent.put(await self._send(producer, message))
            self.stats.in_flight = sent.qsize()

    async def _send(self, producer: AIOKafkaProducer, message: aiomqtt.Message) -> _Sent:
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else str(message.payload).encode()
        value = bytes(payload)
        uplink_format = format_of(topic, self.specs)
        received_ms = _now_ms()
        outcome: Mapped | Rejection
        if uplink_format is None:
            outcome = unmappable(value, f"the MQTT topic {topic} matches none of CITYSTREAM_MQTT_TOPICS")
            self.stats.uplinks["unknown"] += 1
        else:
            self.stats.uplinks[uplink_format.value] += 1
            try:
                outcome = map_message(uplink_format, value, self.registry)
            except Exception as exc:  # a bug must not stop the bridge: the uplink is kept as a dead letter
                log.exception("mapping an uplink from %s failed", topic)
                outcome = unmappable(value, f"the bridge failed on this message: {type(exc).__name__}: {exc}")
        try:
            if isinstance(outcome, Mapped):
                delivery = await producer.send(outcome.topic, key=outcome.key, value=outcome.value)
                return _Sent(message.mid, message.qos, delivery, self.stats.readings, outcome.topic)
            letter = dead_letter(BridgeSource(f"mqtt:{topic}", None, received_ms), outcome, _now_ms())
            delivery = await producer.send(DEADLETTER_TOPIC, key=None, value=encode_dead_letter(letter))
            return _Sent(message.mid, message.qos, delivery, self.stats.dead_letters, DeadLetterReason.UNMAPPABLE.value)
        except Exception as exc:
            raise _KafkaFailed(exc) from exc

    async def _acknowledge(self, client: aiomqtt.Client, sent: asyncio.Queue[_Sent]) -> None:
        """PUBACK each message once Kafka has acknowledged it, in the order the messages came."""
        paho = client._client
        while True:
            item = await sent.get()
            try:
                await item.delivery
            except Exception as exc:
                raise _KafkaFailed(exc) from exc
            item.counter[item.label] += 1
            if item.qos > 0:
                paho.ack(item.mid, item.qos)
            sent.task_done()
            self.stats.in_flight = sent.qsize()


class _KafkaFailed(CitystreamError):
    """Kafka did not take a message, after the producer's own retries."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
