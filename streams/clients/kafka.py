"""The contract's topics, creating the missing ones (the broker is never asked to auto-create), and reading
a range of them without a consumer group (:func:`read_range`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from schemas.readings import SOURCE_TOPICS, SourceKind
from streams.errors import CitystreamError

log = logging.getLogger(__name__)

DEADLETTER_TOPIC = "city.deadletter.v1"
ALERTS_TOPIC = "city.alerts.v1"

# A dead letter carries a whole source message (up to 1 MiB, more for a too_large one) as JSON text.
DEADLETTER_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# A source topic takes a valid message whole (a 1 MiB value, its key and the record's overhead: a
# broker's default max.message.bytes, 1 MiB + 12 bytes, refuses it uncompressed) and one a few times
# over the limit, which the worker then dead-letters as too_large instead of the broker refusing it.
SOURCE_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class BrokerUnavailable(CitystreamError):
    """The Kafka bootstrap servers did not answer (within the startup timeout, when there is one)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: Mapping[str, str]


def contract_topics(source_partitions: int) -> list[TopicSpec]:
    """Every topic of schemas/CONTRACT.md section 1, sized for this deployment."""
    source_config = {"max.message.bytes": str(SOURCE_MAX_MESSAGE_BYTES)}
    sources = [TopicSpec(SOURCE_TOPICS[kind], source_partitions, source_config) for kind in SourceKind]
    return [
        *sources,
        TopicSpec(DEADLETTER_TOPIC, source_partitions, {"max.message.bytes": str(DEADLETTER_MAX_MESSAGE_BYTES)}),
        TopicSpec(ALERTS_TOPIC, source_partitions, {}),
    ]


def state_topic(app_id: str, input_topic: str) -> str:
    """Where the snapshots of an input topic's partitions go."""
    return f"{app_id}.state.{input_topic}"


STATE_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Kafka compacts only closed segments, and its defaults (1 GiB, 7 days) would let a partition's
# snapshot history grow to a gigabyte first. A segment must hold the largest message, so twice it;
# and an hour, so that a quiet partition's history is compacted too.
STATE_SEGMENT_BYTES = 2 * STATE_MAX_MESSAGE_BYTES
STATE_SEGMENT_MS = 3_600_000
STATE_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "max.message.bytes": str(STATE_MAX_MESSAGE_BYTES),
    "segment.bytes": str(STATE_SEGMENT_BYTES),
    "segment.ms": str(STATE_SEGMENT_MS),
}
"""The settings of a state topic: one key per partition (its number), compacted to the newest snapshot."""


def internal_topics(
    app_id: str, partitions: int, source_partitions: dict[str, int], repartitioned: list[str]
) -> list[TopicSpec]:
    """The worker's own topics: the ``repartitioned`` ones (readings re-keyed by what their windows
    are keyed by, such as a cell or a lot: :class:`streams.kinds.spec.Merge`), and partition snapshots.

    A state topic has as many partitions as the topic whose partitions it snapshots.
    """
    state_config = STATE_TOPIC_CONFIG
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


class TopicNotFound(CitystreamError):
    """A topic the broker does not know (the worker creates the contract's topics when it starts)."""


@contextlib.asynccontextmanager
async def _reader(
    bootstrap_servers: list[str] | str, start_timeout_s: float | None, client_options: Mapping[str, Any]
) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer without a consumer group (it never commits, nor moves anyone's offsets).

    A broker that does not answer raises :class:`BrokerUnavailable` (after ``start_timeout_s``, when
    given) naming why.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False, **client_options
    )
    try:
        if start_timeout_s is None:
            await consumer.start()
        else:
            await asyncio.wait_for(consumer.start(), start_timeout_s)
    except (TimeoutError, KafkaError, OSError) as exc:
        await consumer.stop()
        raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc
    try:
        yield consumer
    finally:
        await consumer.stop()


TOPIC_METADATA_WAIT_S = 10.0


async def _partitions(
    consumer: AIOKafkaConsumer,
    topics: Sequence[str],
    partitions: Iterable[int] | None,
    bootstrap_servers: list[str] | str,
    client_options: Mapping[str, Any],
) -> list[TopicPartition]:
    """The partitions of ``topics`` (only those numbered ``partitions``, when given); TopicNotFound for an
    unknown topic. The partitions are assigned to ``consumer``, so that it fetches their metadata.

    A consumer that has subscribed to nothing may hold no topic's metadata (Apache Kafka answers a
    metadata request for no topics with none; Tansu with all of them), and a broker lists a topic
    only once its partitions have leaders: the topics are described for up to a few seconds.
    """
    known = {topic: consumer.partitions_for_topic(topic) for topic in topics}
    missing = [topic for topic, found in known.items() if not found]
    deadline = time.monotonic() + TOPIC_METADATA_WAIT_S
    while missing:
        counts = await partition_counts(bootstrap_servers, missing, **client_options)
        for topic, count in counts.items():
            known[topic] = set(range(count))
        missing = [topic for topic in missing if not known[topic]]
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    found: list[TopicPartition] = []
    for topic in topics:
        numbers = known[topic]
        if not numbers:
            raise TopicNotFound(topic)
        wanted = numbers if partitions is None else numbers & set(partitions)
        found += [TopicPartition(topic, p) for p in sorted(wanted)]
    if found:
        consumer.assign(found)
    return found


def _topic_list(topics: str | Sequence[str]) -> list[str]:
    return [topics] if isinstance(topics, str) else list(topics)


async def topic_end_offsets(
    bootstrap_servers: list[str] | str,
    topics: str | Sequence[str],
    *,
    partitions: Iterable[int] | None = None,
    start_timeout_s: float | None = None,
    **client_options: Any,
) -> dict[TopicPartition, int]:
    """The end offsets of the topics' partitions now (where the next record of each will land).

    ``client_options`` are more aiokafka arguments, such as the security ones of
    :func:`streams.settings.kafka_client_kwargs`.
    """
    async with _reader(bootstrap_servers, start_timeout_s, client_options) as consumer:
        tps = await _partitions(consumer, _topic_list(topics), partitions, bootstrap_servers, client_options)
        return dict(await consumer.end_offsets(tps)) if tps else {}


async def read_range(
    bootstrap_servers: list[str] | str,
    topics: str | Sequence[str],
    *,
    partitions: Iterable[int] | None = None,
    start_offsets: Mapping[TopicPartition, int] | None = None,
    stop_offsets: Mapping[TopicPartition, int] | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    quiet_s: float = 2.0,
    max_records: int | None = None,
    max_partition_fetch_bytes: int = 1024 * 1024,
    start_timeout_s: float | None = None,
    **client_options: Any,
) -> AsyncGenerator[list[ConsumerRecord[bytes, bytes]], None]:
    """The records of a range of topic partitions, without a consumer group, as the batches fetched.

    Each batch holds records of one partition in offset order. What is read:

    * partitions: those numbered ``partitions`` of each topic, else those of ``start_offsets``,
      else all of them; an unknown topic raises :class:`TopicNotFound`;
    * from: the partition's first offset, or ``start_offsets[tp]`` when later, or the first offset
      whose timestamp is at or after ``since_ms`` when later still (a partition with no such record
      is not read);
    * until: the end offsets seen at the start (``stop_offsets[tp]`` instead, when given), or, with
      ``until_ms``, the first record whose timestamp is at or after it (that record and the
      partition's later ones are left out), or nothing fetched for ``quiet_s``.

    A partition ends once its position reaches its stop offset; records fetched with the last
    batch beyond it are kept (the local broker, Tansu, reports a partition's end as its last
    batch's first offset + 1: the whole last batch arriving together makes up for it). A broker that
    does not answer raises :class:`BrokerUnavailable`; other Kafka errors pass through.
    ``client_options`` are more aiokafka arguments, such as the security ones of
    :func:`streams.settings.kafka_client_kwargs`. Close the iterator (``contextlib.aclosing``) when
    leaving it early, so that the consumer stops at once.
    """
    options = {"max_partition_fetch_bytes": max_partition_fetch_bytes, **client_options}
    async with _reader(bootstrap_servers, start_timeout_s, options) as consumer:
        if partitions is None and start_offsets is not None:
            partitions_of = {tp.partition for tp in start_offsets}
            known = await _partitions(consumer, _topic_list(topics), partitions_of, bootstrap_servers, client_options)
            tps = [tp for tp in known if tp in start_offsets]
        else:
            tps = await _partitions(consumer, _topic_list(topics), partitions, bootstrap_servers, client_options)
        if not tps:
            return
        start = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            start[tp] = max(start[tp], (start_offsets or {}).get(tp, 0))
        if since_ms is not None:
            found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            for tp in tps:
                at = found.get(tp)
                start[tp] = max(start[tp], at.offset if at is not None else ends[tp])
        stop = {tp: (stop_offsets or {}).get(tp, ends[tp]) for tp in tps}
        reading = {tp for tp in tps if start[tp] < stop[tp]}
        if not reading:
            return
        consumer.assign(sorted(reading))
        for tp in reading:
            consumer.seek(tp, start[tp])
        while reading:
            batches = await consumer.getmany(*reading, timeout_ms=int(quiet_s * 1000), max_records=max_records)
            if not batches:
                break  # quiet
            for tp, records in batches.items():
                if tp not in reading:
                    continue
                if until_ms is not None:
                    late = next((i for i, r in enumerate(records) if (r.timestamp or 0) >= until_ms), None)
                    if late is not None:
                        records = records[:late]
                        reading.discard(tp)
                        consumer.pause(tp)
                if records:
                    yield records
            for tp in list(reading):
                if await consumer.position(tp) >= stop[tp]:
                    reading.discard(tp)
                    consumer.pause(tp)


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


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], deadline: float) -> None:
    """Wait until every partition of the topics has a leader.

    Apache Kafka answers CreateTopics once the controller has recorded the topic, before the brokers
    have caught up with it: until then the topic's metadata answers LEADER_NOT_AVAILABLE (or no
    topic at all), and a client that asks at once finds no partition to read or write. A topic
    another worker has just created is waited for too. Raises KafkaTimeoutError at ``deadline``.
    """
    pending = set(names)
    while True:
        described = await admin.describe_topics(sorted(pending))
        for topic in described:
            partitions = topic.get("partitions") or []
            ready = topic.get("error_code", 0) == 0 and partitions
            if ready and all(p.get("error_code", 0) == 0 and p.get("leader", -1) >= 0 for p in partitions):
                pending.discard(topic["topic"])
        if not pending:
            return
        if time.monotonic() > deadline:
            raise KafkaTimeoutError(f"no leader yet for every partition of {', '.join(sorted(pending))}")
        await asyncio.sleep(0.1)


async def ensure_topics(
    bootstrap_servers: list[str] | str,
    topics: list[TopicSpec],
    *,
    replication: int = 1,
    timeout_s: float = 60.0,
    **client_options: object,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Returns once every partition of every topic has a leader (Apache Kafka answers the creation
    before that). Retries an unreachable broker until ``timeout_s`` has passed, then raises
    BrokerUnavailable. Another worker creating the same topic at the same moment is not an error.
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
            await _wait_for_leaders(admin, [t.name for t in topics], deadline)
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
