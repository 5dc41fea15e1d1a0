"""The forwarder: records buffered per partition of an internal topic, sent in messages of up to 500."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from streams.core.forward import (
    HEARTBEAT,
    MAX_RECORDS_PER_MESSAGE,
    Forwarder,
    decode_records,
    encode_records,
    partition_for,
)


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, int]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int) -> Awaitable[object]:
        self.sent.append((topic, key, value, partition))
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_a_key_has_one_partition_in_every_worker_and_run() -> None:
    assert partition_for("8a30c1b6a4dffff", 12) == partition_for("8a30c1b6a4dffff", 12)
    assert {partition_for(f"lot-{i}", 4) for i in range(100)} == {0, 1, 2, 3}
    assert partition_for("lot-1", 4) == 3685290077 % 4  # crc32, not Python's salted hash


def test_records_round_trip() -> None:
    records = [(3, 17, 0, 1_795_294_800_000, "taxi-1", 1_795_294_799_000, None, "8a30c1b6a4dffff", 31.5, "FCW")]
    assert decode_records(encode_records(records)) == [list(records[0])]


async def test_flush_sends_each_partitions_records_in_order_in_messages_of_at_most_500() -> None:
    producer = FakeProducer()
    forwarder = Forwarder("app.taxi-by-cell", 4, producer.send)
    for i in range(MAX_RECORDS_PER_MESSAGE + 20):
        forwarder.add("cell-a", (0, i, 0, None, f"taxi-{i}"))
    forwarder.add("cell-b", (1, 0, 0, None, "taxi-x"))
    assert forwarder.unsent == MAX_RECORDS_PER_MESSAGE + 21
    deliveries = await forwarder.flush()
    assert len(deliveries) == len(producer.sent) and forwarder.unsent == 0
    by_partition: dict[int, list[list[object]]] = {}
    for topic, key, value, partition in producer.sent:
        assert topic == "app.taxi-by-cell" and key is None
        records = decode_records(value)
        assert len(records) <= MAX_RECORDS_PER_MESSAGE
        by_partition.setdefault(partition, []).extend(records)
    a, b = partition_for("cell-a", 4), partition_for("cell-b", 4)
    assert [r[4] for r in by_partition[a] if r[4] != "taxi-x"] == [f"taxi-{i}" for i in range(520)]
    assert [r[4] for r in by_partition[b] if r[4] == "taxi-x"] == ["taxi-x"]
    assert await forwarder.flush() == []  # nothing left


async def test_a_heartbeat_reaches_every_partition_after_the_records_before_it() -> None:
    producer = FakeProducer()
    forwarder = Forwarder("app.parking-by-lot", 3, producer.send)
    forwarder.add("lot-1", (2, 40, 0, 1000, "spot"))
    forwarder.heartbeat(2, 41, 1000, 5000)
    await forwarder.flush()
    seen = {partition: decode_records(value) for _, _, value, partition in producer.sent}
    assert set(seen) == {0, 1, 2}
    for records in seen.values():
        assert records[-1] == [2, 41, HEARTBEAT, 1000, 5000]
    assert seen[partition_for("lot-1", 3)][0] == [2, 40, 0, 1000, "spot"]
