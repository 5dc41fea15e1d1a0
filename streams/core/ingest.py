"""What every source stream shares: judging a message, and its journey to InfluxDB and dead letters.

A stream module (taxi, parking, environment) declares a :class:`SourceStream`: its kind, its
reading model, and how a reading becomes a raw point. :class:`Ingestor` does the rest, with no Faust
import, so it is tested without a broker; :mod:`streams.runtime.worker` feeds it from Faust agents.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from schemas.readings import Reading, SourceKind
from streams.core.decode import (
    ReadingModel,
    Rejection,
    SourceMessage,
    TimeLimits,
    dead_letter,
    dead_letter_key,
    decode_message,
    encode_dead_letter,
    processing_error,
)
from streams.core.registry import Registry

R = TypeVar("R", bound=Reading)
DeadLetterRecord = tuple[bytes | None, bytes]  # (key, value) to publish on the dead-letter topic


@dataclass(frozen=True)
class SourceStream(Generic[R]):
    kind: SourceKind
    model: ReadingModel
    raw_point: Callable[[R, Registry], str]

    @property
    def topic(self) -> str:
        return self.kind.topic


@dataclass
class Outcome:
    """What one message produced: raw points, and dead letters as (key, value) to publish."""

    lines: list[str]
    dead_letters: list[DeadLetterRecord]
    readings: list[Reading]


@dataclass
class IngestStats:
    messages: Counter[str] = field(default_factory=Counter)
    readings_valid: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)


class Ingestor:
    """Turns source messages into raw points and dead letters."""

    def __init__(
        self, registry: Registry, limits: TimeLimits, clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.clock_ms = clock_ms
        self.stats = IngestStats()

    def ingest(self, stream: SourceStream[R], source: SourceMessage, value: bytes | None) -> Outcome:
        now_ms = self.clock_ms()
        decoded = decode_message(stream.model, value, now_ms, self.limits)
        raw_point = stream.raw_point
        registry = self.registry
        lines = [raw_point(reading, registry) for reading in decoded.readings]  # type: ignore[arg-type]
        letters = self._dead_letters(source, decoded.rejections, now_ms)
        self.stats.messages[stream.kind.value] += 1
        self.stats.readings_valid[stream.kind.value] += len(lines)
        return Outcome(lines, letters, decoded.readings)

    def failed(self, source: SourceMessage, value: bytes | None, exc: BaseException) -> list[DeadLetterRecord]:
        """The dead letter of a message the processor failed on (reason ``processing_error``)."""
        return self._dead_letters(source, [processing_error(exc, value)], self.clock_ms())

    def _dead_letters(self, source: SourceMessage, rejections: list[Rejection], now_ms: int) -> list[DeadLetterRecord]:
        key = None if source.key is None else dead_letter_key(source.key)
        letters = []
        for rejection in rejections:
            letters.append((key, encode_dead_letter(dead_letter(source, rejection, now_ms))))
            self.stats.dead_letters[rejection.reason.value] += 1
        return letters
