"""What replaying dead letters publishes: the original bytes and key, to the source topic."""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from schemas.deadletter import DeadLetter
from streams.clients.kafka import DEADLETTER_TOPIC
from streams.core.decode import MAX_MESSAGE_BYTES
from streams.tools.deadletters.letters import SOURCE_TOPIC_NAMES, StoredDeadLetter, source_text

# a replayed message carries this header: where it came from, for whoever traces it later
REPLAY_HEADER: Final = "citystream-replay-of"

# how streams.core.decode keeps the bytes of a key that is not UTF-8 (errors="backslashreplace")
_ESCAPED_BYTE = re.compile(r"\\x[0-9a-f]{2}")


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
    seen: set[tuple[str, int | None, int | None, int | None]] = set()
    ordered = sorted(
        letters,
        key=lambda s: (
            s.letter.source.topic,
            -1 if s.letter.source.partition is None else s.letter.source.partition,
            -1 if s.letter.source.offset is None else s.letter.source.offset,
            -1 if s.letter.index is None else s.letter.index,
            s.partition,
            s.offset,
        ),
    )
    for stored in ordered:
        source = stored.letter.source
        if source.partition is None or source.offset is None:
            # from a gateway bridge (``mqtt:<topic>``): no Kafka coordinates to tell a repeat by
            identity = (source.topic, -1 - stored.partition, stored.offset, stored.letter.index)
        else:
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
