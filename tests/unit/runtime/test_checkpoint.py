"""The checkpoint's order, without a broker: points durable, then the snapshot saved, then the acks.

A fake InfluxDB writer, an in-memory state store and a fake clock record what happens in one log;
the real PointSink and Checkpointer run on them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from schemas.readings import EnvReading
from streams.clients.influx import WriteFailed
from streams.core.registry import Registry
from streams.core.windows import FOLDED, WindowPolicy
from streams.kinds import environment
from streams.rules.policy import AlertPolicy
from streams.runtime.checkpoint import Checkpointer, decode_snapshot
from streams.runtime.sink import PointSink

T0 = 1_795_294_800_000  # 2026-11-21T21:00:00Z
ENV = "city.env.v1"


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


class FakeWriter:
    """Stores what it is sent; fails with a retryable error while ``failures`` > 0."""

    description = "a fake InfluxDB"

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.lines: list[str] = []
        self.failures = 0

    async def open(self) -> None: ...
    async def ping(self) -> bool:
        return True

    async def prepare(self) -> None: ...
    async def close(self) -> None: ...

    async def write(self, body: bytes) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise WriteFailed("InfluxDB answered 503", status=503, retry_after_s=0.01)
        self.lines += body.decode().split("\n")
        self.log.append("points")


class MemoryStore:
    """The state store in memory: the last snapshot of each partition."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.blobs: dict[tuple[str, int], bytes] = {}

    async def load(self, topic: str, partition: int) -> bytes | None:
        return self.blobs.get((topic, partition))

    async def load_many(self, topic: str, partitions: Any) -> dict[int, bytes | None]:
        return {partition: self.blobs.get((topic, partition)) for partition in partitions}

    async def save(self, topic: str, partition: int, blob: bytes) -> Awaitable[object]:
        self.blobs[(topic, partition)] = blob
        self.log.append(f"snapshot {topic}[{partition}]")
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def station_windows() -> Any:
    registry = Registry()
    return environment.KIND.aggregate(WindowPolicy(), registry), None, environment.KIND.rules(AlertPolicy())  # type: ignore[misc]


def setup(log: list[str], clock: Clock) -> tuple[Checkpointer, FakeWriter, MemoryStore]:
    writer = FakeWriter(log)
    store = MemoryStore(log)
    sink = PointSink(writer, batch_size=1000, interval_s=0.01, max_pending=10_000)
    checkpointer = Checkpointer(sink, store, lambda topic: station_windows(), interval_s=60, clock_ms=clock)
    return checkpointer, writer, store


def reading(seq: int, ts: int, pm25: float) -> EnvReading:
    return EnvReading.model_validate({"device_id": "env-1", "ts": ts, "seq": seq, "pm25_ugm3": pm25})


async def process(checkpointer: Checkpointer, offset: int, seq: int, ts: int, log: list[str], clock: Clock) -> None:
    """What the worker does with one message: fold it, then hold its ack until a checkpoint."""
    work = await checkpointer.work(ENV, 0)
    assert work.aggregate is not None
    sample = environment.StationSample.of(reading(seq, ts, 10.0 + seq), Registry())
    assert work.aggregate.fold(sample, clock()) == FOLDED
    work.processed(offset, lambda: log.append(f"ack {offset}"), ts, clock())


async def test_points_are_durable_before_the_snapshot_and_the_snapshot_before_the_acks() -> None:
    log: list[str] = []
    clock = Clock(T0 + 5_000)
    checkpointer, writer, store = setup(log, clock)
    for offset in range(3):
        await process(checkpointer, offset, offset, T0 + offset * 1000, log, clock)
    log.append("-- checkpoint")
    await checkpointer.checkpoint()
    after = log[log.index("-- checkpoint") + 1 :]
    assert after == ["points", f"snapshot {ENV}[0]", "ack 0", "ack 1", "ack 2"]
    assert any(line.startswith("environment_1m,") and "readings=3i" in line for line in writer.lines)
    offset, state = decode_snapshot(store.blobs[(ENV, 0)])
    assert offset == 2 and state["aggregate"]
    # what /metrics reports of it
    assert checkpointer.checkpoints == 1
    assert 0 < checkpointer.last_snapshots_s <= checkpointer.last_checkpoint_s


async def test_while_influxdb_fails_nothing_is_saved_nor_acknowledged() -> None:
    log: list[str] = []
    clock = Clock(T0 + 5_000)
    checkpointer, writer, _ = setup(log, clock)
    await process(checkpointer, 0, 0, T0, log, clock)
    writer.failures = 10**9
    log.clear()
    task = asyncio.ensure_future(checkpointer.checkpoint())
    await asyncio.sleep(0.3)
    assert not task.done() and log == []  # retrying: no snapshot, no ack
    assert checkpointer.sink.problem is not None
    writer.failures = 0  # InfluxDB is back
    await asyncio.wait_for(task, timeout=30)
    assert log == ["points", f"snapshot {ENV}[0]", "ack 0"]
    assert checkpointer.sink.problem is None


async def test_a_rebalance_during_the_checkpoint_saves_and_acknowledges_nothing() -> None:
    log: list[str] = []
    clock = Clock(T0 + 5_000)
    checkpointer, writer, _ = setup(log, clock)
    await process(checkpointer, 0, 0, T0, log, clock)
    log.clear()  # the first snapshot, made when the partition was first restored (empty)
    writer.failures = 1
    task = asyncio.ensure_future(checkpointer.checkpoint())
    await asyncio.sleep(0)
    checkpointer.revoke({(ENV, 0)})  # the partition goes to another worker meanwhile
    await asyncio.wait_for(task, timeout=30)
    assert "ack 0" not in log and not [entry for entry in log if entry.startswith("snapshot")]


async def test_the_next_owner_restores_the_snapshot_and_skips_what_it_holds() -> None:
    log: list[str] = []
    clock = Clock(T0 + 5_000)
    first, _, store = setup(log, clock)
    for offset in range(2):
        await process(first, offset, offset, T0 + offset * 1000, log, clock)
    await first.checkpoint()

    clock.now_ms += 60_000
    second, writer, _ = setup(log, clock)
    second.store = store
    work = await second.work(ENV, 0)
    assert work.already_applied(1) and not work.already_applied(2)
    # restored windows count on: a third reading makes a minute of three
    await process(second, 2, 2, T0 + 2000, log, clock)
    await second.checkpoint()
    assert any(line.startswith("environment_1m,") and "readings=3i" in line for line in writer.lines)
    assert work.aggregate is not None and work.aggregate.clock.last_input_wall_ms == clock.now_ms


@pytest.mark.parametrize("generation_bumps", [0, 1])
async def test_acks_wait_for_the_dead_letters_and_forwarded_readings(generation_bumps: int) -> None:
    log: list[str] = []
    clock = Clock(T0 + 5_000)
    checkpointer, _, _ = setup(log, clock)
    delivered: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def before_flush() -> list[Awaitable[object]]:
        return [delivered]

    checkpointer.before_flush = before_flush
    await process(checkpointer, 0, 0, T0, log, clock)
    task = asyncio.ensure_future(checkpointer.checkpoint())
    await asyncio.sleep(0.05)
    assert "ack 0" not in log  # the broker has not acknowledged the forwarded records yet
    for _ in range(generation_bumps):
        checkpointer.revoke(set())
    delivered.set_result(None)
    await asyncio.wait_for(task, timeout=10)
    assert ("ack 0" in log) == (generation_bumps == 0)


async def test_a_checkpoint_lets_messages_through_between_two_partitions_and_keeps_each_exact() -> None:
    """The snapshots are taken one partition at a time with the event loop free between two; a
    message processed meanwhile on a partition already taken waits for the next checkpoint (neither
    in that snapshot nor acknowledged), and one on a partition not taken yet is in its snapshot."""
    log: list[str] = []
    clock = Clock(T0 + 5_000)
    checkpointer, _, store = setup(log, clock)

    async def handle(partition: int, offset: int) -> None:
        work = await checkpointer.work(ENV, partition)
        assert work.aggregate is not None
        sample = environment.StationSample.of(reading(offset, T0 + offset * 1000, 10.0), Registry())
        work.aggregate.fold(sample, clock())
        work.processed(offset, lambda: log.append(f"ack {partition}@{offset}"), T0, clock())

    await handle(0, 0)
    await handle(1, 0)
    log.clear()
    task = asyncio.ensure_future(checkpointer.checkpoint())
    await asyncio.sleep(0)  # the checkpoint has taken partition 0 and yields before partition 1
    assert not task.done()
    await handle(0, 1)
    await handle(1, 1)
    await asyncio.wait_for(task, timeout=30)
    assert decode_snapshot(store.blobs[(ENV, 0)])[0] == 0
    assert decode_snapshot(store.blobs[(ENV, 1)])[0] == 1
    assert sorted(entry for entry in log if entry.startswith("ack")) == ["ack 0@0", "ack 1@0", "ack 1@1"]
    log.clear()
    await checkpointer.checkpoint()  # the next one takes what came on partition 0 meanwhile
    assert decode_snapshot(store.blobs[(ENV, 0)])[0] == 1
    assert [entry for entry in log if entry.startswith("ack")] == ["ack 0@1"]


async def test_no_periodic_checkpoint_after_the_last_one() -> None:
    """A worker stopping runs its last checkpoint (stop), then Faust stops the producer: the periodic
    loop, asleep meanwhile, must not start another one (it would send to a stopped producer)."""
    log: list[str] = []
    clock = Clock(T0 + 5_000)
    checkpointer, _, _ = setup(log, clock)
    checkpointer.interval_s = 0.05
    runs = asyncio.ensure_future(checkpointer.run())
    rules = asyncio.ensure_future(checkpointer.run_alert_rules(0.05))
    await asyncio.sleep(0.12)
    await process(checkpointer, 0, 0, T0, log, clock)
    await asyncio.sleep(0.01)  # the loops are asleep
    await checkpointer.stop()
    done = checkpointer.checkpoints
    await asyncio.wait_for(asyncio.gather(runs, rules), timeout=1)
    assert checkpointer.checkpoints == done
