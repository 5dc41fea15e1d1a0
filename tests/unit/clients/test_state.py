"""The state store's writes, without a broker: a snapshot of input partition p goes to partition p of
its state topic (so that its newest snapshot is that partition's last message)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from streams.clients.kafka import internal_topics, state_topic
from streams.clients.state import KafkaStateStore
from streams.kinds import KINDS


async def test_a_snapshot_goes_to_the_same_partition_of_its_state_topic() -> None:
    sent: list[tuple[str, bytes | None, bytes, int]] = []

    async def send(topic: str, key: bytes | None, value: bytes, partition: int) -> Awaitable[object]:
        sent.append((topic, key, value, partition))
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    store = KafkaStateStore(["127.0.0.1:1"], {"city.env.v1": state_topic("app", "city.env.v1")}, send)
    await (await store.save("city.env.v1", 7, b"snapshot"))
    assert sent == [("app.state.city.env.v1", None, b"snapshot", 7)]
    await store.close()  # never started: nothing to stop


def test_every_stateful_topic_has_a_compacted_state_topic_as_wide_as_it() -> None:
    sources = {kind.topic: 6 for kind in KINDS}
    merged = [kind.merge.topic("app") for kind in KINDS if kind.merge is not None]
    topics = {spec.name: spec for spec in internal_topics("app", 4, sources, merged)}
    for name in merged:
        assert topics[name].partitions == 4
    for name, width in {**sources, **dict.fromkeys(merged, 4)}.items():
        state = topics[state_topic("app", name)]
        assert state.partitions == width and state.config["cleanup.policy"] == "compact"
        # a segment holds the largest snapshot: Kafka refuses a batch larger than a segment
        assert int(state.config["segment.bytes"]) >= 2 * int(state.config["max.message.bytes"])
