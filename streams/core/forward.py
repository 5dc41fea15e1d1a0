"""Forwarding readings to an internal topic partitioned by what they aggregate on (cell, lot)."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from schemas import codec

Send = Callable[[str, bytes | None, bytes, int], Awaitable[Awaitable[object]]]

MAX_RECORDS_PER_MESSAGE = 500
HEARTBEAT = -1  # the index of a heartbeat record: [source, offset, -1, watermark, last input wall time]


def partition_for(key: str, partitions: int) -> int:
    """A stable partition for a key, the same in every worker and every run."""
    return zlib.crc32(key.encode()) % partitions


def encode_records(records: Sequence[Sequence[Any]]) -> bytes:
    return codec.dumps([list(record) for record in records])


def decode_records(value: bytes) -> list[list[Any]]:
    records = codec.loads(value)
    assert isinstance(records, list)
    return records


class Forwarder:
    """Buffers records per partition of one internal topic and sends them in messages of up to 500."""

    def __init__(self, topic: str, partitions: int, send: Send) -> None:
        self.topic = topic
        self.partitions = partitions
        self._send = send
        self._buffers: dict[int, list[Sequence[Any]]] = {}
        self._unsent = 0

    def add(self, key: str, record: Sequence[Any]) -> None:
        self._buffers.setdefault(partition_for(key, self.partitions), []).append(record)
        self._unsent += 1

    def heartbeat(self, source: int, offset: int, watermark_ms: int | None, last_input_wall_ms: int | None) -> None:
        """Tell every partition how far a source partition has got, after its records so far."""
        record = (source, offset, HEARTBEAT, watermark_ms, last_input_wall_ms)
        for partition in range(self.partitions):
            self._buffers.setdefault(partition, []).append(record)

    @property
    def unsent(self) -> int:
        return self._unsent

    async def flush(self) -> list[Awaitable[object]]:
        """Send everything buffered; return the delivery futures."""
        buffers, self._buffers, self._unsent = self._buffers, {}, 0
        deliveries = []
        for partition, records in sorted(buffers.items()):
            for start in range(0, len(records), MAX_RECORDS_PER_MESSAGE):
                chunk = records[start : start + MAX_RECORDS_PER_MESSAGE]
                deliveries.append(await self._send(self.topic, None, encode_records(chunk), partition))
        return deliveries
