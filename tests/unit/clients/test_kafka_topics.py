"""Topic creation's wait for leaders, and the topics' settings, without a broker."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from streams.clients.kafka import (
    DEADLETTER_MAX_MESSAGE_BYTES,
    DEADLETTER_TOPIC,
    SOURCE_MAX_MESSAGE_BYTES,
    _wait_for_leaders,
    contract_topics,
)
from streams.core.decode import MAX_MESSAGE_BYTES


class Admin:
    """Answers metadata as Apache Kafka does right after CreateTopics: no leader for a few answers."""

    def __init__(self, answers_without_leader: int) -> None:
        self.left = answers_without_leader
        self.asked: list[list[str]] = []

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        self.asked.append(topics)
        leader = -1 if self.left > 0 else 1
        self.left -= 1
        partitions = [{"error_code": 5 if leader < 0 else 0, "partition": p, "leader": leader} for p in range(2)]
        return [{"error_code": 0, "topic": topic, "partitions": partitions} for topic in topics]


async def test_topics_are_waited_for_until_every_partition_has_a_leader() -> None:
    admin: Any = Admin(answers_without_leader=3)
    await _wait_for_leaders(admin, ["a", "b"], time.monotonic() + 10)
    assert admin.asked == [["a", "b"]] * 4


async def test_a_topic_without_leaders_past_the_deadline_is_a_timeout() -> None:
    admin: Any = Admin(answers_without_leader=10**6)
    with pytest.raises(KafkaTimeoutError, match="no leader yet for every partition of a"):
        await _wait_for_leaders(admin, ["a"], time.monotonic() + 0.3)


def test_a_source_topic_takes_a_valid_message_with_its_key_and_a_too_large_one() -> None:
    topics = {spec.name: spec for spec in contract_topics(3)}
    for name in ("city.taxi.adas.v1", "city.parking.v1", "city.env.v1"):
        limit = int(topics[name].config["max.message.bytes"])
        assert limit == SOURCE_MAX_MESSAGE_BYTES >= 2 * MAX_MESSAGE_BYTES + 1024  # a 1 MiB value and a 1 MiB key
    assert topics[DEADLETTER_TOPIC].config == {"max.message.bytes": str(DEADLETTER_MAX_MESSAGE_BYTES)}
    assert topics["city.alerts.v1"].config == {}
