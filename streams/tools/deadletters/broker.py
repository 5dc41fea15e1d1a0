"""Reading ``city.deadletter.v1`` (without a consumer group) and publishing replays, on Kafka."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from streams.clients.kafka import (
    DEADLETTER_MAX_MESSAGE_BYTES,
    DEADLETTER_TOPIC,
    BrokerUnavailable,
    TopicNotFound,
    read_range,
    topic_end_offsets,
)
from streams.tools.deadletters.letters import (
    DeadLettersError,
    OffsetSpec,
    StoredDeadLetter,
    Unreadable,
    parse_dead_letter,
)
from streams.tools.deadletters.replay import Replay

# A dead letter's record timestamp is set by the producer when the worker publishes it, which is
# about its dead_lettered_at; seeking by time starts this much earlier to allow for clock skew.
SEEK_MARGIN_MS: Final = 5 * 60 * 1000


@dataclass(slots=True)
class ReadResult:
    letters: list[StoredDeadLetter] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    topic_exists: bool = True


async def read_dead_letters(
    bootstrap_servers: list[str] | str,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    offsets: Sequence[OffsetSpec] = (),
    quiet_s: float = 2.0,
    client_options: dict[str, Any] | None = None,
) -> ReadResult:
    """Read ``city.deadletter.v1`` without a consumer group, from ``since_ms`` (or the beginning).

    With :func:`streams.clients.kafka.read_range`: a partition is read until it reaches the end
    offset it had when reading started, or until nothing has come for ``quiet_s``, so that a topic
    that keeps growing does not keep the command reading forever. With ``offsets``, only the named
    offsets' partitions are read, from the lowest named offset to the highest.
    """
    options = client_options or {}
    result = ReadResult()
    start: dict[TopicPartition, int] | None = None
    stop: dict[TopicPartition, int] | None = None
    try:
        if offsets:
            named: dict[int | None, list[int]] = {}
            for spec in offsets:
                named.setdefault(spec.partition, []).append(spec.offset)
            start, stop = {}, {}
            for tp in await topic_end_offsets(bootstrap_servers, DEADLETTER_TOPIC, **options):
                mine = named.get(tp.partition, []) + named.get(None, [])
                if mine:
                    start[tp], stop[tp] = min(mine), max(mine) + 1
        batches = read_range(
            bootstrap_servers,
            DEADLETTER_TOPIC,
            start_offsets=start,
            stop_offsets=stop,
            since_ms=None if since_ms is None else max(0, since_ms - SEEK_MARGIN_MS),
            until_ms=None if until_ms is None else until_ms + SEEK_MARGIN_MS + 1,
            quiet_s=quiet_s,
            max_partition_fetch_bytes=DEADLETTER_MAX_MESSAGE_BYTES + 1024 * 1024,
            **options,
        )
        async with contextlib.aclosing(batches):
            async for records in batches:
                for record in records:
                    if offsets and not any(
                        spec.offset == record.offset and spec.partition in (None, record.partition) for spec in offsets
                    ):
                        continue
                    parsed = parse_dead_letter(record.partition, record.offset, record.timestamp, record.value)
                    if isinstance(parsed, Unreadable):
                        result.unreadable.append(parsed)
                    else:
                        result.letters.append(parsed)
    except TopicNotFound:
        result.topic_exists = False  # the worker creates it when it starts: no dead letters yet
    except BrokerUnavailable as exc:
        raise DeadLettersError(_unreachable(bootstrap_servers, exc)) from None
    except KafkaConnectionError as exc:
        raise DeadLettersError(_unreachable(bootstrap_servers, exc)) from None
    except KafkaError as exc:
        raise DeadLettersError(f"Kafka refused reading {DEADLETTER_TOPIC}: {type(exc).__name__}: {exc}") from None
    return result


def _unreachable(bootstrap_servers: list[str] | str, exc: Exception) -> str:
    servers = bootstrap_servers if isinstance(bootstrap_servers, str) else ",".join(bootstrap_servers)
    return (
        f"Kafka at {servers} is not reachable ({exc}); check CITYSTREAM_KAFKA_BOOTSTRAP "
        "and, if the brokers need them, the CITYSTREAM_KAFKA_SECURITY_PROTOCOL, SASL and TLS settings"
    )


@dataclass(slots=True)
class SendResult:
    sent: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[Replay, str]] = field(default_factory=list)


async def send_replays(
    bootstrap_servers: list[str] | str, replays: Sequence[Replay], *, client_options: dict[str, Any] | None = None
) -> SendResult:
    """Publish the replays and wait until the broker has acknowledged each (acks=all)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        linger_ms=5,
        max_request_size=DEADLETTER_MAX_MESSAGE_BYTES,
        **(client_options or {}),
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise DeadLettersError(_unreachable(bootstrap_servers, exc)) from None
    result = SendResult()
    try:
        queued: list[tuple[Replay, asyncio.Future[Any]]] = []
        for replay in replays:
            try:
                queued.append(
                    (replay, await producer.send(replay.topic, replay.value, key=replay.key, headers=replay.headers))
                )
            except KafkaError as exc:  # refused before it was queued (too large for the producer, say)
                result.failed.append((replay, f"{type(exc).__name__}: {exc}"))
        outcomes = await asyncio.gather(*(future for _, future in queued), return_exceptions=True)
        for (replay, _), outcome in zip(queued, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                result.failed.append((replay, f"{type(outcome).__name__}: {outcome}"))
            else:
                result.sent[replay.topic] += 1
    finally:
        await producer.stop()
    return result
