"""The contract's topics, and creating the missing ones (the broker is never asked to auto-create)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from schemas.readings import SOURCE_TOPICS, SourceKind

log = logging.getLogger(__name__)

DEADLETTER_TOPIC = "city.deadletter.v1"
ALERTS_TOPIC = "city.alerts.v1"

# A dead letter carries a whole source message (up to 1 MiB, more for a too_large one) as JSON text.
DEADLETTER_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class BrokerUnavailable(Exception):
    """The Kafka bootstrap servers did not answer within the startup timeout."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: Mapping[str, str]


def contract_topics(source_partitions: int) -> list[TopicSpec]:
    """Every topic of schemas/CONTRACT.md section 1, sized for this deployment."""
    sources = [TopicSpec(SOURCE_TOPICS[kind], source_partitions, {}) for kind in SourceKind]
    return [
        *sources,
        TopicSpec(DEADLETTER_TOPIC, source_partitions, {"max.message.bytes": str(DEADLETTER_MAX_MESSAGE_BYTES)}),
        TopicSpec(ALERTS_TOPIC, source_partitions, {}),
    ]


def taxi_by_cell_topic(app_id: str) -> str:
    return f"{app_id}.taxi-by-cell"


def parking_by_lot_topic(app_id: str) -> str:
    return f"{app_id}.parking-by-lot"


def state_topic(app_id: str, input_topic: str) -> str:
    """Where the snapshots of an input topic's partitions go."""
    return f"{app_id}.state.{input_topic}"


STATE_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def internal_topics(app_id: str, partitions: int, source_partitions: dict[str, int]) -> list[TopicSpec]:
    """The worker's own topics: readings repartitioned by cell and lot, and partition snapshots.

    A state topic has as many partitions as the topic whose partitions it snapshots.
    """
    repartitioned = [taxi_by_cell_topic(app_id), parking_by_lot_topic(app_id)]
    state_config = {"cleanup.policy": "compact", "max.message.bytes": str(STATE_MAX_MESSAGE_BYTES)}
    stateful = {**source_partitions, **dict.fromkeys(repartitioned, partitions)}
    return [
        *(TopicSpec(name, partitions, {}) for name in repartitioned),
        *(TopicSpec(state_topic(app_id, name), count, state_config) for name, count in stateful.items()),
    ]


async def partition_counts(
    bootstrap_servers: list[str] | str, topics: list[str], **client_options: object
) -> dict[str, int]:
    """How many partitions each existing topic has."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_options)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
        return {topic["topic"]: len(topic["partitions"]) for topic in described if topic.get("partitions")}
    finally:
        await admin.close()


async def records_since(
    bootstrap_servers: list[str] | str,
    start: Mapping[TopicPartition, int],
    quiet_s: float = 1.0,
    **client_options: object,
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records of the given partitions from the given offsets on, read until none comes for ``quiet_s``.

    (Not until the end offsets: the local broker, Tansu, reports a partition's end as its last
    batch's first offset + 1.) ``client_options`` are more aiokafka arguments, such as the security
    ones of :func:`streams.settings.kafka_client_kwargs`.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False, **client_options
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        while batches := await consumer.getmany(timeout_ms=int(quiet_s * 1000)):
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def _security_hint(client_options: Mapping[str, object]) -> str:
    """What to check besides the address when the clients use TLS or SASL (the broker may refuse them)."""
    protocol = client_options.get("security_protocol", "PLAINTEXT")
    if protocol == "PLAINTEXT":
        return ""
    hint = f", and that it accepts CITYSTREAM_KAFKA_SECURITY_PROTOCOL={protocol}"
    if str(protocol).startswith("SASL"):
        hint += f" with CITYSTREAM_KAFKA_SASL_MECHANISM={client_options.get('sasl_mechanism')} and these credentials"
    if str(protocol).endswith("SSL"):
        hint += " (TLS: CITYSTREAM_KAFKA_SSL_CAFILE, _CERTFILE, _KEYFILE)"
    return hint + "; the aiokafka log lines before this one say more"


async def ensure_topics(
    bootstrap_servers: list[str] | str,
    topics: list[TopicSpec],
    *,
    replication: int = 1,
    timeout_s: float = 60.0,
    **client_options: object,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Retries an unreachable broker until ``timeout_s`` has passed, then raises BrokerUnavailable.
    Another worker creating the same topic at the same moment is not an error.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_options)
        try:
            # a broker that never answers the handshake (TLS to a plaintext port, say) must not hold
            # the start beyond the timeout
            remaining = max(1.0, deadline - time.monotonic())
            await asyncio.wait_for(admin.start(), timeout=remaining)
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t.name not in existing]
            created: list[str] = []
            for spec in missing:
                try:
                    await admin.create_topics(
                        [NewTopic(spec.name, spec.partitions, replication, topic_configs=dict(spec.config))]
                    )
                    created.append(spec.name)
                    log.info("created topic %s with %d partitions", spec.name, spec.partitions)
                except TopicAlreadyExistsError:
                    pass
            return created
        except (TimeoutError, KafkaConnectionError, OSError) as exc:
            if time.monotonic() + delay > deadline:
                why = str(exc) or type(exc).__name__  # a timeout has no text
                raise BrokerUnavailable(
                    f"Kafka at {bootstrap_servers} did not answer within {timeout_s:.0f} s ({why}); "
                    f"check CITYSTREAM_KAFKA_BOOTSTRAP and that the broker is running{_security_hint(client_options)}"
                ) from None
            log.warning("Kafka at %s not reachable yet (%s); retrying", bootstrap_servers, exc)
        except KafkaError as exc:
            if time.monotonic() + delay > deadline:
                raise BrokerUnavailable(f"Kafka at {bootstrap_servers} refused topic set-up: {exc}") from None
            log.warning("topic set-up failed (%s); retrying", exc)
        finally:
            with contextlib.suppress(Exception):  # closing a client that never connected
                await admin.close()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
