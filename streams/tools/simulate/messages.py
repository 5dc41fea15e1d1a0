"""From readings to Kafka messages: single readings, batch envelopes, invalid messages and duplicates."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import murmur2

from schemas.codec import dumps
from schemas.readings import SOURCE_TOPICS, SourceKind
from streams.tools.simulate.city import City, Emitted
from streams.tools.simulate.clock import SECOND_MS, format_ts
from streams.tools.simulate.invalid import (
    ELEMENT_REASONS,
    MESSAGE_REASONS,
    READING_TEMPLATES,
    IntendedReason,
    InvalidFactory,
)
from streams.tools.simulate.layout import CityLayout
from streams.tools.simulate.options import SimulationOptions


@dataclass(slots=True)
class Message:
    """One Kafka message to send, with what it carries for the report."""

    topic: str
    partition: int
    key: bytes
    value: bytes
    readings: int = 0  # valid readings sent for the first time
    duplicates: int = 0
    invalid_reason: IntendedReason | None = None  # the whole message is invalid
    invalid_elements: tuple[tuple[int, IntendedReason], ...] = ()  # (index, reason) in a batch
    is_batch: bool = False


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class _PendingBatch:
    __slots__ = ("devices", "elements", "invalid", "key", "oldest_sim_ms", "oldest_wall_ms", "readings")

    def __init__(self, key: bytes, sim_ms: int, wall_ms: int) -> None:
        self.key = key
        self.elements: list[Any] = []
        self.invalid: list[tuple[int, IntendedReason]] = []
        self.readings: list[Emitted] = []
        self.devices: set[str] = set()
        self.oldest_sim_ms = sim_ms
        self.oldest_wall_ms = wall_ms


def batch_reading_share(batch_share: float, batch_size: float) -> float:
    """The share of readings to put in batches so that ``batch_share`` of messages are batches
    of ``batch_size`` readings (the others carrying one reading each)."""
    if batch_share <= 0:
        return 0.0
    if batch_share >= 1:
        return 1.0
    return batch_share / (batch_share + (1 - batch_share) / batch_size)


class MessageComposer:
    """Turns readings into messages.

    A reading goes into a batch envelope with probability :func:`batch_reading_share` (of the
    mean size batches really reach, so that ``batch_share`` of the messages are batches); batches
    are gathered per partition (their key is their first device's id, and each device's
    readings stay in one partition, in order) and sent when full or when their oldest reading
    is ``max_batch_age_ms`` old in simulated or wall time. Invalid messages follow
    ``invalid_share`` of the messages, and each batch element is followed by an invalid one
    with the same probability. Duplicates re-send recently sent readings.
    """

    def __init__(
        self,
        options: SimulationOptions,
        partitions: Mapping[SourceKind, int],
        seed: int,
        max_batch_age_ms: int = 10 * SECOND_MS,
        max_batch_wall_age_ms: int = SECOND_MS,
    ) -> None:
        self.options = options
        self.partitions = dict(partitions)
        self.rng = random.Random(f"citystream-messages:{seed}")
        self.invalid = InvalidFactory(self.rng)
        self.batch_probability = batch_reading_share(options.batch_share, options.batch_size)
        # batches closed early (by age) are smaller: track their mean size to keep the share
        self._closed_batches = 2
        self._closed_batch_readings = 2 * options.batch_size
        self.invalid_after_message = options.invalid_share / (1 - options.invalid_share)
        self.max_batch_age_ms = max_batch_age_ms
        self.max_batch_wall_age_ms = max_batch_wall_age_ms
        self._pending: dict[tuple[SourceKind, int], _PendingBatch] = {}
        self._pending_devices: set[str] = set()
        self._partition_of: dict[str, int] = {}
        self._recent: deque[Emitted] = deque(maxlen=5000)
        self._latest: dict[SourceKind, Emitted] = {}
        self._reason_deck: list[IntendedReason] = []
        self._too_large_sent = False

    # -- public --

    def compose(self, readings: Iterable[Emitted], sim_ms: int, wall_ms: int) -> list[Message]:
        out: list[Message] = []
        rng = self.rng
        for reading in readings:
            self._latest[reading.kind] = reading
            if rng.random() < self.batch_probability:
                self._add_to_batch(reading, sim_ms, wall_ms, out)
            else:
                if reading.device_id in self._pending_devices:
                    # the device's earlier readings wait in a batch: they go first
                    slot = (reading.kind, self.partition_of(reading.kind, reading.device_id))
                    out.append(self._close_batch(slot))
                out.append(self._single(reading))
            if rng.random() < self.options.duplicate_share and self._recent:
                out.append(self._duplicate())
        out.extend(self.flush_due(sim_ms, wall_ms))
        return self._with_invalid(out, wall_ms)

    def flush_due(self, sim_ms: int, wall_ms: int) -> list[Message]:
        """Batches whose oldest reading has waited long enough."""
        due = [
            key
            for key, batch in self._pending.items()
            if sim_ms - batch.oldest_sim_ms >= self.max_batch_age_ms
            or wall_ms - batch.oldest_wall_ms >= self.max_batch_wall_age_ms
        ]
        return [self._close_batch(key) for key in due]

    def flush_all(self, wall_ms: int) -> list[Message]:
        """Every pending batch (at the end of a run)."""
        out = [self._close_batch(key) for key in list(self._pending)]
        return self._with_invalid(out, wall_ms)

    # -- building --

    def partition_of(self, kind: SourceKind, device_id: str) -> int:
        partition = self._partition_of.get(device_id)
        if partition is None:
            partition = kafka_partition(device_id.encode(), self.partitions[kind])
            self._partition_of[device_id] = partition
        return partition

    def _single(self, reading: Emitted) -> Message:
        self._recent.append(reading)
        return Message(
            topic=SOURCE_TOPICS[reading.kind],
            partition=self.partition_of(reading.kind, reading.device_id),
            key=reading.device_id.encode(),
            value=dumps(reading.body),
            readings=1,
        )

    def _duplicate(self) -> Message:
        again = self._recent[self.rng.randrange(len(self._recent))]
        return Message(
            topic=SOURCE_TOPICS[again.kind],
            partition=self.partition_of(again.kind, again.device_id),
            key=again.device_id.encode(),
            value=dumps(again.body),
            duplicates=1,
        )

    def _add_to_batch(self, reading: Emitted, sim_ms: int, wall_ms: int, out: list[Message]) -> None:
        slot = (reading.kind, self.partition_of(reading.kind, reading.device_id))
        batch = self._pending.get(slot)
        if batch is None:
            batch = self._pending[slot] = _PendingBatch(reading.device_id.encode(), reading.ts_ms, wall_ms)
        batch.elements.append(reading.body)
        batch.readings.append(reading)
        batch.devices.add(reading.device_id)
        self._pending_devices.add(reading.device_id)
        if self.rng.random() < self.options.invalid_share and len(batch.elements) < self.options.batch_size:
            reason = self.rng.choice(ELEMENT_REASONS)
            batch.invalid.append((len(batch.elements), reason))
            batch.elements.append(self.invalid.element(reason, reading.kind, reading.body, wall_ms))
        if len(batch.elements) >= self.options.batch_size:
            out.append(self._close_batch(slot))

    def _close_batch(self, slot: tuple[SourceKind, int]) -> Message:
        batch = self._pending.pop(slot)
        self._pending_devices.difference_update(batch.devices)
        self._closed_batches += 1
        self._closed_batch_readings += len(batch.elements)
        mean_size = self._closed_batch_readings / self._closed_batches
        self.batch_probability = batch_reading_share(self.options.batch_share, mean_size)
        self._recent.extend(batch.readings)
        kind, partition = slot
        return Message(
            topic=SOURCE_TOPICS[kind],
            partition=partition,
            key=batch.key,
            value=dumps({"batch": batch.elements}),
            readings=len(batch.readings),
            invalid_elements=tuple(batch.invalid),
            is_batch=True,
        )

    def _with_invalid(self, messages: list[Message], wall_ms: int) -> list[Message]:
        if self.invalid_after_message <= 0:
            return messages
        out: list[Message] = []
        for message in messages:
            out.append(message)
            if self.rng.random() < self.invalid_after_message:
                out.append(self.invalid_message(wall_ms))
        return out

    def next_reason(self) -> IntendedReason:
        """Reasons come in shuffled rounds, so a run covers all of them; the first round
        includes the one too_large message of the run."""
        if not self._reason_deck:
            deck = [r for r in MESSAGE_REASONS if r != "too_large" or not self._too_large_sent]
            self._too_large_sent = True
            self.rng.shuffle(deck)
            self._reason_deck = deck
        return self._reason_deck.pop()

    def invalid_message(self, wall_ms: int) -> Message:
        reason = self.next_reason()
        kind = self.rng.choice(list(SourceKind))
        latest = self._latest.get(kind)
        # the latest reading of that kind, or a template before there was one
        body = latest.body if latest is not None else {**READING_TEMPLATES[kind], "ts": format_ts(wall_ms, "kst")}
        device_id = str(body["device_id"])
        return Message(
            topic=SOURCE_TOPICS[kind],
            partition=self.partition_of(kind, device_id),
            key=device_id.encode(),
            value=self.invalid.message(reason, kind, body, wall_ms),
            invalid_reason=reason,
        )


def generate_messages(
    options: SimulationOptions,
    *,
    start_ms: int,
    end_ms: int,
    wall_ms: int | None = None,
    seed: int = 0,
    partitions: int = 12,
) -> tuple[CityLayout, list[Message]]:
    """Simulate ``start_ms``..``end_ms`` at once, without pacing or a broker (for tests and
    benchmarks): the layout and every message in sending order."""
    layout = CityLayout.build(options, seed)
    city = City(layout, start_ms, end_ms, seed, options.fault_rate)
    composer = MessageComposer(options, dict.fromkeys(SourceKind, partitions), seed)
    wall = end_ms if wall_ms is None else wall_ms
    messages: list[Message] = []
    step_ms = SECOND_MS
    for until_ms in range(start_ms + step_ms, end_ms + step_ms, step_ms):
        until_ms = min(until_ms, end_ms)
        messages.extend(composer.compose(city.advance(until_ms, 10**9), until_ms, wall))
    messages.extend(composer.flush_all(wall))
    return layout, messages
