"""``citystream deadletters``: list, summarise and replay the dead letters of ``city.deadletter.v1``.

A dead letter (schemas/CONTRACT.md section 4) holds why a message, or one element of a batch, could not be
processed, and the original payload. After a fix (a worker whose limits were wrong, a registry entry
that was missing, a gateway that sent a bad field and was corrected upstream), ``replay`` publishes
the original bytes again to their source topic with their original key, and the worker judges them
afresh. Duplicates are harmless: a reading already processed (same ``device_id`` and ``seq``, or
``ts``) changes no aggregate (schemas/CONTRACT.md section 3).

The pure functions (parsing, filtering, summarising, choosing what to replay) come first; the Kafka
reading and sending, and the commands, after them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import click
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from schemas import codec
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.readings import SOURCE_TOPICS, SourceKind
from schemas.timestamps import format_ms, parse_rfc3339_ms
from streams.clients.kafka import DEADLETTER_MAX_MESSAGE_BYTES, DEADLETTER_TOPIC
from streams.core.decode import MAX_MESSAGE_BYTES
from streams.settings import ConfigError, Settings, kafka_client_kwargs, load_settings

SOURCE_TOPIC_NAMES: Final = frozenset(SOURCE_TOPICS.values())
TOPIC_ALIASES: Final = {
    "taxi": SOURCE_TOPICS[SourceKind.TAXI],
    "parking": SOURCE_TOPICS[SourceKind.PARKING],
    "env": SOURCE_TOPICS[SourceKind.ENVIRONMENT],
    "environment": SOURCE_TOPICS[SourceKind.ENVIRONMENT],
}
REASONS: Final = tuple(reason.value for reason in DeadLetterReason)

# a replayed message carries this header: where it came from, for whoever traces it later
REPLAY_HEADER: Final = "citystream-replay-of"

# A dead letter's record timestamp is set by the producer when the worker publishes it, which is
# about its dead_lettered_at; seeking by time starts this much earlier to allow for clock skew.
SEEK_MARGIN_MS: Final = 5 * 60 * 1000

# how streams.core.decode keeps the bytes of a key that is not UTF-8 (errors="backslashreplace")
_ESCAPED_BYTE = re.compile(r"\\x[0-9a-f]{2}")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_MS: Final = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


class DeadLettersError(Exception):
    """A problem the operator must fix (a bad selection, an unreachable broker); the message says what."""


# ---------------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter with where it sits on ``city.deadletter.v1``."""

    partition: int
    offset: int
    timestamp_ms: int | None  # the dead-letter record's Kafka timestamp
    letter: DeadLetter
    at_ms: int  # when it was dead-lettered: dead_lettered_at, else the record timestamp
    device: str | None  # device_id of the payload, else the original key

    @property
    def coordinates(self) -> str:
        """``partition:offset`` on the dead-letter topic, as ``replay --offset`` takes it."""
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A record of the dead-letter topic that is not a dead letter of the contract."""

    partition: int
    offset: int
    problem: str


def parse_dead_letter(
    partition: int, offset: int, timestamp_ms: int | None, value: bytes | None
) -> StoredDeadLetter | Unreadable:
    """Parse one record of the dead-letter topic with the contract's model."""
    if value is None:
        return Unreadable(partition, offset, "the record has no value")
    try:
        letter = DeadLetter.model_validate_json(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        return Unreadable(partition, offset, f"not a dead letter: {where}: {first['msg']}")
    try:
        at_ms = parse_rfc3339_ms(letter.dead_lettered_at)
    except ValueError:
        at_ms = timestamp_ms if timestamp_ms is not None else 0
    return StoredDeadLetter(partition, offset, timestamp_ms, letter, at_ms, device_of(letter))


def device_of(letter: DeadLetter) -> str | None:
    """The device a dead letter came from: the payload's ``device_id`` when it has one, else the key."""
    if letter.payload is not None and len(letter.payload) <= MAX_MESSAGE_BYTES:
        try:
            document = codec.loads(letter.payload)
        except codec.JSONDecodeError:
            document = None
        if isinstance(document, dict):
            device_id = document.get("device_id")
            if isinstance(device_id, str) and device_id:
                return device_id
    return letter.source.key or None


# ---------------------------------------------------------------------------------------------------
# Selecting


def parse_moment(text: str, now_ms: int) -> int:
    """Epoch ms of ``--since``/``--until``: a duration back from now (``90s``, ``15m``, ``1h30m``, ``2d``,
    ``1w``) or an RFC 3339 time with its UTC offset."""
    text = text.strip()
    if text and _DURATION_PART.sub("", text) == "":
        total = sum(float(number) * _UNIT_MS[unit] for number, unit in _DURATION_PART.findall(text))
        return now_ms - int(total)
    try:
        return parse_rfc3339_ms(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30m, 1h, 2d, 1w) nor an RFC 3339 time (2026-11-21T10:00:00Z)"
        ) from None


def resolve_topic(name: str) -> str:
    """A topic name as given to ``--topic``: the full name, or taxi, parking, env."""
    return TOPIC_ALIASES.get(name.lower(), name)


@dataclass(frozen=True, slots=True)
class Filters:
    """What ``list``, ``summary`` and ``replay`` select; an empty tuple selects everything."""

    reasons: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()  # exact ids or shell-style patterns (env-jung-*)
    since_ms: int | None = None
    until_ms: int | None = None

    def __post_init__(self) -> None:
        if self.since_ms is not None and self.until_ms is not None and self.since_ms > self.until_ms:
            raise DeadLettersError(
                f"--since ({format_ms(self.since_ms)}) lies after --until ({format_ms(self.until_ms)})"
            )

    @property
    def empty(self) -> bool:
        return not (self.reasons or self.topics or self.devices) and self.since_ms is None and self.until_ms is None

    def matches(self, stored: StoredDeadLetter) -> bool:
        letter = stored.letter
        if self.reasons and letter.reason.value not in self.reasons:
            return False
        if self.topics and letter.source.topic not in self.topics:
            return False
        if self.devices and not any(_device_matches(stored, pattern) for pattern in self.devices):
            return False
        if self.since_ms is not None and stored.at_ms < self.since_ms:
            return False
        return self.until_ms is None or stored.at_ms <= self.until_ms


def _device_matches(stored: StoredDeadLetter, pattern: str) -> bool:
    candidates = {stored.device, stored.letter.source.key} - {None}
    return any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates if candidate is not None)


def select(letters: Iterable[StoredDeadLetter], filters: Filters, limit: int | None = None) -> list[StoredDeadLetter]:
    """The matching dead letters oldest first; with ``limit``, only the ``limit`` most recent of them."""
    chosen = sorted((s for s in letters if filters.matches(s)), key=lambda s: (s.at_ms, s.partition, s.offset))
    if limit is not None:
        chosen = chosen[-limit:] if limit > 0 else []
    return chosen


@dataclass(frozen=True, slots=True, order=True)
class OffsetSpec:
    """``--offset``: ``PARTITION:OFFSET`` of the dead-letter topic, or ``OFFSET`` alone (partition None)."""

    partition: int | None
    offset: int

    def __str__(self) -> str:
        return str(self.offset) if self.partition is None else f"{self.partition}:{self.offset}"

    def matches(self, stored: StoredDeadLetter) -> bool:
        return stored.offset == self.offset and (self.partition is None or stored.partition == self.partition)


def parse_offset_spec(text: str) -> OffsetSpec:
    match = re.fullmatch(r"\s*(?:(\d+)\s*:\s*)?(\d+)\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not PARTITION:OFFSET (3:17) or OFFSET (17)")
    partition, offset = match.groups()
    return OffsetSpec(None if partition is None else int(partition), int(offset))


def pick_offsets(letters: Sequence[StoredDeadLetter], specs: Sequence[OffsetSpec]) -> list[StoredDeadLetter]:
    """The dead letters named by ``--offset``; an offset that names none, or several, is an error."""
    chosen: dict[tuple[int, int], StoredDeadLetter] = {}
    for spec in specs:
        found = [s for s in letters if spec.matches(s)]
        if not found:
            raise DeadLettersError(f"no dead letter at --offset {spec} on {DEADLETTER_TOPIC}")
        if len(found) > 1:
            named = ", ".join(s.coordinates for s in found)
            raise DeadLettersError(
                f"--offset {spec} is in several partitions ({named}); "
                f"give PARTITION:OFFSET, e.g. --offset {found[0].coordinates}"
            )
        chosen[(found[0].partition, found[0].offset)] = found[0]
    return sorted(chosen.values(), key=lambda s: (s.at_ms, s.partition, s.offset))


# ---------------------------------------------------------------------------------------------------
# Summarising


@dataclass(slots=True)
class Summary:
    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_topic: Counter[str] = field(default_factory=Counter)
    by_device: Counter[str] = field(default_factory=Counter)
    reasons_by_device: dict[str, Counter[str]] = field(default_factory=dict)
    first_ms: int | None = None
    last_ms: int | None = None


UNKNOWN_DEVICE: Final = "(unknown)"


def summarise(letters: Iterable[StoredDeadLetter]) -> Summary:
    summary = Summary()
    for stored in letters:
        letter = stored.letter
        device = stored.device or UNKNOWN_DEVICE
        summary.total += 1
        summary.by_reason[letter.reason.value] += 1
        summary.by_topic[letter.source.topic] += 1
        summary.by_device[device] += 1
        summary.reasons_by_device.setdefault(device, Counter())[letter.reason.value] += 1
        summary.first_ms = stored.at_ms if summary.first_ms is None else min(summary.first_ms, stored.at_ms)
        summary.last_ms = stored.at_ms if summary.last_ms is None else max(summary.last_ms, stored.at_ms)
    return summary


# ---------------------------------------------------------------------------------------------------
# Formatting


def first_error(letter: DeadLetter, width: int = 160) -> str:
    if not letter.errors:
        return ""
    error = letter.errors[0]
    text = f"{error.loc}: {error.msg}" if error.loc else error.msg
    if len(text) > width:
        text = text[: width - 1] + "…"
    if len(letter.errors) > 1:
        text += f" (+{len(letter.errors) - 1} more)"
    return text


def source_text(letter: DeadLetter) -> str:
    source = letter.source
    element = "" if letter.index is None else f"#{letter.index}"
    return f"{source.topic}[{source.partition}]@{source.offset}{element}"


def letter_line(stored: StoredDeadLetter) -> str:
    """One line: when, where on the dead-letter topic, reason, source, device, first error."""
    letter = stored.letter
    return (
        f"{format_ms(stored.at_ms)}  dl {stored.coordinates:<8}  {letter.reason.value:<16}  "
        f"{source_text(letter)}  {stored.device or '-'}  {first_error(letter)}"
    )


def letter_json(stored: StoredDeadLetter) -> dict[str, Any]:
    """The dead letter as the contract has it, plus ``device`` and where it sits on the topic."""
    document = stored.letter.model_dump(mode="json")
    document["device"] = stored.device
    document["deadletter"] = {
        "topic": DEADLETTER_TOPIC,
        "partition": stored.partition,
        "offset": stored.offset,
        "timestamp_ms": stored.timestamp_ms,
    }
    return document


def summary_tables(summary: Summary, top: int) -> list[Table]:
    reasons = Table(title="By reason", title_justify="left")
    reasons.add_column("reason")
    reasons.add_column("dead letters", justify="right")
    reasons.add_column("share", justify="right")
    for reason, count in summary.by_reason.most_common():
        reasons.add_row(reason, f"{count:,}", f"{count / summary.total:.1%}")
    topics = Table(title="By source topic", title_justify="left")
    topics.add_column("topic")
    topics.add_column("dead letters", justify="right")
    for topic, count in summary.by_topic.most_common():
        topics.add_row(topic + ("" if topic in SOURCE_TOPIC_NAMES else " (not a source topic)"), f"{count:,}")
    devices = Table(title=f"Top {top} devices", title_justify="left")
    devices.add_column("device")
    devices.add_column("dead letters", justify="right")
    devices.add_column("reasons")
    for device, count in summary.by_device.most_common(top):
        reasons_text = ", ".join(f"{r} {n}" for r, n in summary.reasons_by_device[device].most_common())
        devices.add_row(device, f"{count:,}", reasons_text)
    return [reasons, topics, devices]


def summary_json(summary: Summary, top: int) -> dict[str, Any]:
    return {
        "total": summary.total,
        "first": None if summary.first_ms is None else format_ms(summary.first_ms),
        "last": None if summary.last_ms is None else format_ms(summary.last_ms),
        "by_reason": dict(summary.by_reason.most_common()),
        "by_topic": dict(summary.by_topic.most_common()),
        "top_devices": dict(summary.by_device.most_common(top)),
    }


# ---------------------------------------------------------------------------------------------------
# Replaying


@dataclass(frozen=True, slots=True)
class Replay:
    """One message to publish again: the original bytes and key, to the source topic."""

    topic: str
    key: bytes | None
    value: bytes
    origin: StoredDeadLetter

    @property
    def single_from_batch(self) -> bool:
        return self.origin.letter.index is not None

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [(REPLAY_HEADER, f"{DEADLETTER_TOPIC}:{self.origin.coordinates}".encode())]


@dataclass(frozen=True, slots=True)
class Refusal:
    origin: StoredDeadLetter
    why: str


@dataclass(slots=True)
class ReplayPlan:
    replays: list[Replay] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    duplicates: list[StoredDeadLetter] = field(default_factory=list)  # the same source message twice

    def by_topic(self) -> Counter[str]:
        return Counter(replay.topic for replay in self.replays)


def original_value(letter: DeadLetter) -> bytes:
    """The bytes to publish again: the base64 original, else the text (for a batch element: that element).

    Raises ValueError when the dead letter holds nothing to publish, or only the first part of it.
    """
    if letter.payload_truncated:
        size = f"{letter.payload_bytes:,} bytes" if letter.payload_bytes is not None else "its size unknown"
        raise ValueError(
            f"its payload keeps only the first part of the original ({size}, SHA-256 {letter.payload_sha256}): "
            "the original cannot be published again from it"
        )
    if letter.payload_b64 is not None:
        try:
            return base64.b64decode(letter.payload_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("its payload_b64 is not valid base64") from None
    if letter.payload is not None:
        return letter.payload.encode("utf-8")
    raise ValueError("the original message had no value (an empty or null message): there is nothing to publish")


def replay_of(stored: StoredDeadLetter) -> Replay | Refusal:
    letter = stored.letter
    topic = letter.source.topic
    if topic not in SOURCE_TOPIC_NAMES:
        return Refusal(
            stored,
            f"its source topic {topic!r} is not a source topic of the contract "
            f"({', '.join(sorted(SOURCE_TOPIC_NAMES))}); it is not replayed",
        )
    try:
        value = original_value(letter)
    except ValueError as exc:
        return Refusal(stored, str(exc))
    key = None if letter.source.key is None else letter.source.key.encode("utf-8")
    return Replay(topic, key, value, stored)


def plan_replay(letters: Iterable[StoredDeadLetter]) -> ReplayPlan:
    """What to publish for the chosen dead letters, in source order (so a device's readings keep their order).

    A source message (or batch element) dead-lettered twice (a worker that restarted before it
    committed) is published once.
    """
    plan = ReplayPlan()
    seen: set[tuple[str, int, int, int | None]] = set()
    ordered = sorted(
        letters,
        key=lambda s: (
            s.letter.source.topic,
            s.letter.source.partition,
            s.letter.source.offset,
            -1 if s.letter.index is None else s.letter.index,
            s.partition,
            s.offset,
        ),
    )
    for stored in ordered:
        source = stored.letter.source
        identity = (source.topic, source.partition, source.offset, stored.letter.index)
        if identity in seen:
            plan.duplicates.append(stored)
            continue
        seen.add(identity)
        outcome = replay_of(stored)
        if isinstance(outcome, Refusal):
            plan.refused.append(outcome)
        else:
            plan.replays.append(outcome)
    return plan


def needs_confirmation(count: int, *, threshold: int, yes: bool, dry_run: bool) -> bool:
    return count > threshold and not yes and not dry_run


def preview(value: bytes, width: int = 120) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(value):,} bytes, not UTF-8>"
    return text if len(text) <= width else text[: width - 1] + "…"


def replay_line(replay: Replay, *, dry_run: bool) -> str:
    letter = replay.origin.letter
    key = "null" if replay.key is None else replay.key.decode("utf-8", errors="backslashreplace")
    what = " (batch element as a single reading)" if replay.single_from_batch else ""
    verb = "would send" if dry_run else "send"
    return (
        f"{verb} dl {replay.origin.coordinates} ({letter.reason.value}, {source_text(letter)}){what} "
        f"-> {replay.topic} key={key} {len(replay.value):,} B  {preview(replay.value)}"
    )


def replay_warnings(plan: ReplayPlan) -> list[str]:
    warnings = []
    for replay in plan.replays:
        if len(replay.value) > MAX_MESSAGE_BYTES:
            warnings.append(
                f"dl {replay.origin.coordinates}: {len(replay.value):,} bytes is over the {MAX_MESSAGE_BYTES:,} byte "
                "limit of a message: the worker will dead-letter it again"
            )
        if replay.key is not None and _ESCAPED_BYTE.search(replay.key.decode("utf-8")):
            warnings.append(
                f"dl {replay.origin.coordinates}: its key holds \\xNN escapes: the original key was not UTF-8, "
                "the dead letter kept it escaped, and it goes back as the escaped text"
            )
    return warnings


# ---------------------------------------------------------------------------------------------------
# Kafka


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

    A partition is read until it reaches the end offset it had when reading started, or until
    nothing has come for ``quiet_s``: Tansu under-reports a partition's end (its last batch's first
    offset + 1), which the whole last batch arriving together makes up for, and a topic that keeps
    growing does not keep the command reading forever. With ``offsets``, only the named offsets'
    partitions are read, from the lowest named offset to the highest.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=DEADLETTER_MAX_MESSAGE_BYTES + 1024 * 1024,
        **(client_options or {}),
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise DeadLettersError(_unreachable(bootstrap_servers, exc)) from None
    result = ReadResult()
    try:
        topics = await consumer.topics()
        if DEADLETTER_TOPIC not in topics:
            result.topic_exists = False  # the worker creates it when it starts: no dead letters yet
            return result
        partitions = sorted(consumer.partitions_for_topic(DEADLETTER_TOPIC) or ())
        tps = [TopicPartition(DEADLETTER_TOPIC, p) for p in partitions]
        start = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        stop: dict[TopicPartition, int] = dict(ends)
        if offsets:
            named: dict[int | None, list[int]] = {}
            for spec in offsets:
                named.setdefault(spec.partition, []).append(spec.offset)
            wanted: dict[TopicPartition, int] = {}
            for tp in tps:
                mine = named.get(tp.partition, []) + named.get(None, [])
                if mine:
                    start[tp] = max(start[tp], min(mine))
                    wanted[tp] = max(mine) + 1
            tps = list(wanted)
            stop = wanted
        if since_ms is not None and tps:
            found = await consumer.offsets_for_times({tp: max(0, since_ms - SEEK_MARGIN_MS) for tp in tps})
            for tp in tps:
                at = found.get(tp)
                # None: no record at or after that time (Tansu answers the first offset: harmless)
                start[tp] = max(start[tp], at.offset if at is not None else ends[tp])
        pending = [tp for tp in tps if start[tp] < stop[tp]]
        if not pending:
            return result
        consumer.assign(pending)
        for tp in pending:
            consumer.seek(tp, start[tp])
        reading = set(pending)
        late_ms = None if until_ms is None else until_ms + SEEK_MARGIN_MS
        while reading:
            batches = await consumer.getmany(*reading, timeout_ms=int(quiet_s * 1000))
            if not batches:
                break  # quiet
            for tp, records in batches.items():
                for record in records:
                    if offsets and not any(
                        spec.offset == record.offset and spec.partition in (None, tp.partition) for spec in offsets
                    ):
                        continue
                    parsed = parse_dead_letter(tp.partition, record.offset, record.timestamp, record.value)
                    if isinstance(parsed, Unreadable):
                        result.unreadable.append(parsed)
                    else:
                        result.letters.append(parsed)
                    if late_ms is not None and record.timestamp is not None and record.timestamp > late_ms:
                        reading.discard(tp)
            for tp in list(reading):
                if await consumer.position(tp) >= stop[tp]:
                    reading.discard(tp)
    except KafkaConnectionError as exc:
        raise DeadLettersError(_unreachable(bootstrap_servers, exc)) from None
    except KafkaError as exc:
        raise DeadLettersError(f"Kafka refused reading {DEADLETTER_TOPIC}: {type(exc).__name__}: {exc}") from None
    finally:
        await consumer.stop()
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


# ---------------------------------------------------------------------------------------------------
# Commands


class _Moment(click.ParamType):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_moment(str(value), time.time_ns() // 1_000_000)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _Offset(click.ParamType):
    name = "[PARTITION:]OFFSET"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> OffsetSpec:
        if isinstance(value, OffsetSpec):
            return value
        try:
            return parse_offset_spec(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _filter_options(function: Any) -> Any:
    options = [
        click.option(
            "--reason",
            "reasons",
            multiple=True,
            type=click.Choice(REASONS),
            help="Only dead letters of this reason (repeatable).",
        ),
        click.option(
            "--topic",
            "topics",
            multiple=True,
            metavar="TOPIC",
            help="Only dead letters of this source topic (repeatable; taxi, parking and env name the contract's).",
        ),
        click.option(
            "--device",
            "devices",
            multiple=True,
            metavar="ID",
            help="Only this device, from the payload's device_id or the key (repeatable; env-jung-* patterns too).",
        ),
        click.option(
            "--since",
            type=_Moment(),
            default=None,
            help="Only dead letters from this time on: a duration back from now (30m, 1h, 2d) or RFC 3339.",
        ),
        click.option("--until", type=_Moment(), default=None, help="Only dead letters up to this time (as --since)."),
        click.option(
            "--limit",
            type=click.IntRange(min=1),
            default=None,
            help="At most this many dead letters: the most recent ones.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _filters(
    reasons: tuple[str, ...], topics: tuple[str, ...], devices: tuple[str, ...], since: int | None, until: int | None
) -> Filters:
    return Filters(
        reasons=reasons,
        topics=tuple(resolve_topic(t) for t in topics),
        devices=devices,
        since_ms=since,
        until_ms=until,
    )


@dataclass(frozen=True, slots=True)
class _Kafka:
    bootstrap: list[str]
    options: dict[str, Any]


def _kafka(command: str) -> _Kafka:
    try:
        settings: Settings = load_settings()
        return _Kafka(settings.bootstrap_servers, kafka_client_kwargs(settings))
    except (ConfigError, ValueError) as exc:
        click.echo(f"citystream deadletters {command}: {exc}", err=True)
        sys.exit(2)


def _read(command: str, kafka: _Kafka, filters: Filters, offsets: Sequence[OffsetSpec] = ()) -> ReadResult:
    try:
        result = asyncio.run(
            read_dead_letters(
                kafka.bootstrap,
                since_ms=filters.since_ms,
                until_ms=filters.until_ms,
                offsets=offsets,
                client_options=kafka.options,
            )
        )
    except DeadLettersError as exc:
        click.echo(f"citystream deadletters {command}: {exc}", err=True)
        sys.exit(1)
    if not result.topic_exists:
        click.echo(
            f"there is no topic {DEADLETTER_TOPIC} at {','.join(kafka.bootstrap)} yet (the worker creates it)", err=True
        )
    for bad in result.unreadable:
        click.echo(f"skipped {DEADLETTER_TOPIC} {bad.partition}:{bad.offset}: {bad.problem}", err=True)
    return result


@click.group("deadletters")
def deadletters_command() -> None:
    """Inspect and replay the dead letters of city.deadletter.v1.

    A dead letter is a message (or one batch element) the worker could not process, with its reason,
    its errors and its original payload. `list` and `summary` show them; `replay` publishes their
    original bytes again to their source topic once the cause is fixed. Kafka comes from
    CITYSTREAM_KAFKA_BOOTSTRAP (and the CITYSTREAM_KAFKA_SECURITY_PROTOCOL, SASL and TLS settings).
    """


@deadletters_command.command("list")
@_filter_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the dead letter, device, position).")
def list_command(
    reasons: tuple[str, ...],
    topics: tuple[str, ...],
    devices: tuple[str, ...],
    since: int | None,
    until: int | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List dead letters oldest first, one per line.

    Each line: when it was dead-lettered, its position on city.deadletter.v1 (PARTITION:OFFSET, as
    `replay --offset` takes it), reason, source topic[partition]@offset (#index for a batch element),
    device, and the first error.
    """
    kafka = _kafka("list")
    try:
        filters = _filters(reasons, topics, devices, since, until)
    except DeadLettersError as exc:
        raise click.UsageError(str(exc)) from None
    result = _read("list", kafka, filters)
    for stored in select(result.letters, filters, limit):
        click.echo(codec.dumps_str(letter_json(stored)) if as_json else letter_line(stored))


@deadletters_command.command("summary", short_help="Count dead letters by reason, source topic and device.")
@_filter_options
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="How many devices to show.")
@click.option("--json", "as_json", is_flag=True, help="The counts as one JSON object.")
def summary_command(
    reasons: tuple[str, ...],
    topics: tuple[str, ...],
    devices: tuple[str, ...],
    since: int | None,
    until: int | None,
    limit: int | None,
    top: int,
    as_json: bool,
) -> None:
    """Count dead letters by reason, by source topic and by device (the top ones), as tables."""
    kafka = _kafka("summary")
    try:
        filters = _filters(reasons, topics, devices, since, until)
    except DeadLettersError as exc:
        raise click.UsageError(str(exc)) from None
    result = _read("summary", kafka, filters)
    summary = summarise(select(result.letters, filters, limit))
    if as_json:
        click.echo(codec.dumps_str(summary_json(summary, top)))
        return
    console = Console(width=max(100, Console().width))
    if summary.total == 0:
        console.print(f"No dead letters on {DEADLETTER_TOPIC} match.")
        return
    assert summary.first_ms is not None and summary.last_ms is not None
    console.print(
        f"[bold]{summary.total:,}[/bold] dead letters on {DEADLETTER_TOPIC}, "
        f"{format_ms(summary.first_ms)} to {format_ms(summary.last_ms)}"
    )
    for table in summary_tables(summary, top):
        console.print(table)


@deadletters_command.command("replay", short_help="Publish chosen dead letters again to their source topic.")
@_filter_options
@click.option(
    "--offset",
    "offsets",
    multiple=True,
    type=_Offset(),
    help="The dead letter at this PARTITION:OFFSET of city.deadletter.v1, as `list` shows it (repeatable).",
)
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter (needed when nothing else selects).")
@click.option("--dry-run", is_flag=True, help="Show what would be sent, and send nothing.")
@click.option("--yes", is_flag=True, help="Do not ask before replaying more than --confirm-above dead letters.")
@click.option(
    "--confirm-above",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Ask (or, with no terminal, require --yes) before replaying more than this many.",
)
def replay_command(
    reasons: tuple[str, ...],
    topics: tuple[str, ...],
    devices: tuple[str, ...],
    since: int | None,
    until: int | None,
    limit: int | None,
    offsets: tuple[OffsetSpec, ...],
    everything: bool,
    dry_run: bool,
    yes: bool,
    confirm_above: int,
) -> None:
    """Publish chosen dead letters' original bytes again to their source topic.

    Each goes back with its original key, so a fixed worker (or registry entry) processes it again.
    Choose them with --offset and/or the filters (--all for every one); --dry-run shows what would
    be sent and sends nothing.

    A batch element's dead letter holds only that element: it goes back as a single reading. A
    payload kept as base64 (not UTF-8) goes back byte for byte. Dead letters whose source topic is
    not one of the contract's, or without a payload, are refused. Each message carries a
    citystream-replay-of header naming its dead letter. The command waits for the broker to
    acknowledge every message and prints how many went to each topic. Replaying more than
    --confirm-above dead letters asks first; with no terminal (CI, scripts) it needs --yes.
    """
    try:
        filters = _filters(reasons, topics, devices, since, until)
    except DeadLettersError as exc:
        raise click.UsageError(str(exc)) from None
    if filters.empty and not offsets and not everything:
        raise click.UsageError(
            "choose what to replay: --offset, --reason, --topic, --device, --since/--until, or --all"
        )
    kafka = _kafka("replay")
    result = _read("replay", kafka, filters, offsets)
    try:
        chosen = pick_offsets(result.letters, offsets) if offsets else result.letters
    except DeadLettersError as exc:
        click.echo(f"citystream deadletters replay: {exc}", err=True)
        sys.exit(2)
    chosen = select(chosen, filters, limit)
    plan = plan_replay(chosen)
    for stored in plan.duplicates:
        click.echo(
            f"dl {stored.coordinates}: the same source message as another chosen dead letter; sent once", err=True
        )
    for refusal in plan.refused:
        click.echo(
            f"refused dl {refusal.origin.coordinates} ({source_text(refusal.origin.letter)}): {refusal.why}", err=True
        )
    for warning in replay_warnings(plan):
        click.echo(f"warning: {warning}", err=True)
    if dry_run:
        for replay in plan.replays:
            click.echo(replay_line(replay, dry_run=True))
        click.echo(f"dry run: would send {_counts_text(plan.by_topic()) or 'nothing'}; sent nothing")
        sys.exit(1 if plan.refused else 0)
    if not plan.replays:
        if plan.refused:
            click.echo(f"nothing to replay: {len(plan.refused)} refused", err=True)
            sys.exit(1)
        click.echo(f"no dead letter on {DEADLETTER_TOPIC} matches: nothing sent", err=True)
        return
    if needs_confirmation(len(plan.replays), threshold=confirm_above, yes=yes, dry_run=dry_run):
        count = len(plan.replays)
        what = f"{count} dead letter{'' if count == 1 else 's'} ({_counts_text(plan.by_topic())})"
        if not sys.stdin.isatty():
            click.echo(
                f"citystream deadletters replay: replaying {what} is more than --confirm-above {confirm_above} "
                "and there is no terminal to ask on: add --yes (check with --dry-run first); nothing sent",
                err=True,
            )
            sys.exit(2)
        if not click.confirm(f"Replay {what}?", default=False):
            click.echo("nothing sent", err=True)
            sys.exit(1)
    try:
        sent = asyncio.run(send_replays(kafka.bootstrap, plan.replays, client_options=kafka.options))
    except DeadLettersError as exc:
        click.echo(f"citystream deadletters replay: {exc}", err=True)
        sys.exit(1)
    for replay, problem in sent.failed:
        click.echo(f"failed dl {replay.origin.coordinates} -> {replay.topic}: {problem}", err=True)
    for topic, count in sorted(sent.sent.items()):
        click.echo(f"sent {count} to {topic} (acknowledged)")
    if sent.failed or plan.refused:
        click.echo(f"{sum(sent.sent.values())} sent, {len(sent.failed)} failed, {len(plan.refused)} refused", err=True)
        sys.exit(1)


def _counts_text(counts: Counter[str]) -> str:
    return ", ".join(f"{n} to {topic}" for topic, n in sorted(counts.items()))
