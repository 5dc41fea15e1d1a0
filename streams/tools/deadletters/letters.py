"""Dead letters as stored on ``city.deadletter.v1``: parsing, selecting, summarising and showing them."""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError
from rich.table import Table

from schemas import codec
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.readings import SOURCE_TOPICS, SourceKind
from schemas.timestamps import format_ms, parse_rfc3339_ms
from streams.clients.kafka import DEADLETTER_TOPIC
from streams.core.decode import MAX_MESSAGE_BYTES
from streams.core.durations import EXAMPLES, parse_duration_ms
from streams.errors import CitystreamError

SOURCE_TOPIC_NAMES: Final = frozenset(SOURCE_TOPICS.values())
TOPIC_ALIASES: Final = {
    "taxi": SOURCE_TOPICS[SourceKind.TAXI],
    "parking": SOURCE_TOPICS[SourceKind.PARKING],
    "env": SOURCE_TOPICS[SourceKind.ENVIRONMENT],
    "environment": SOURCE_TOPICS[SourceKind.ENVIRONMENT],
}
REASONS: Final = tuple(reason.value for reason in DeadLetterReason)


class DeadLettersError(CitystreamError):
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
    ``1w``: :mod:`streams.core.durations`) or an RFC 3339 time with its UTC offset."""
    text = text.strip()
    try:
        return now_ms - parse_duration_ms(text)
    except ValueError:
        pass
    try:
        return parse_rfc3339_ms(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration ({EXAMPLES}) nor an RFC 3339 time (2026-11-21T10:00:00Z)"
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
    if source.partition is None or source.offset is None:  # from a gateway bridge: mqtt:<topic>
        return f"{source.topic}{element}"
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
