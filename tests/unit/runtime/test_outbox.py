"""The outbox's recovery of alerts published before a restore, without a broker: the alerts topic is
a list of records per partition, read by a stand-in for ``read_range`` that counts its reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, TopicAuthorizationFailedError

from schemas import codec
from streams.runtime import outbox as outbox_module
from streams.runtime.outbox import AlertOutbox

TOPIC = "city.alerts.v1"


class AlertsTopic:
    """Records per partition; every read and the offsets it started from are kept."""

    def __init__(self, records: Mapping[int, list[tuple[str, str]]]) -> None:
        self.records = records
        self.reads: list[dict[int, int]] = []
        self.failures: list[Exception] = []  # raised by the next reads, one each

    async def read_range(
        self, _servers: Any, topic: str, *, start_offsets: Mapping[TopicPartition, int], **_options: Any
    ) -> AsyncIterator[list[Any]]:
        assert topic == TOPIC
        self.reads.append({tp.partition: offset for tp, offset in start_offsets.items()})
        await asyncio.sleep(0.01)  # the broker answers later: other restores ask meanwhile
        if self.failures:
            raise self.failures.pop(0)
        for tp, offset in start_offsets.items():
            batch = [
                SimpleNamespace(value=codec.dumps({"alert_id": alert_id, "status": status}))
                for alert_id, status in self.records.get(tp.partition, [])[offset:]
            ]
            if batch:
                yield batch


def make_outbox(topic: AlertsTopic, monkeypatch: pytest.MonkeyPatch) -> AlertOutbox:
    monkeypatch.setattr(outbox_module, "read_range", topic.read_range)

    async def send(*_args: Any) -> Any:
        raise AssertionError("nothing is published here")

    return AlertOutbox(TOPIC, 3, send, sink=None, line_of=str, bootstrap_servers=["127.0.0.1:9"])  # type: ignore[arg-type]


ALERTS = {
    0: [("a:0", "raised"), ("a:0", "cleared"), ("b:0", "raised")],
    1: [("c:1", "raised"), ("d:1", "raised")],
    2: [("e:2", "raised")],
}


async def test_partitions_restored_together_read_the_topic_once_from_their_lowest_positions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = AlertsTopic(ALERTS)
    outbox = make_outbox(topic, monkeypatch)
    asks = [{"0": 2, "1": 1}, {"0": 1, "1": 2, "2": 0}, {"0": 3, "1": 1}, {}]
    await asyncio.gather(*(outbox.recover(positions) for positions in asks))
    assert topic.reads == [{0: 1, 1: 1, 2: 0}]  # one read, from the lowest position of each partition
    assert outbox.already_published == {("a:0", "cleared"), ("b:0", "raised"), ("d:1", "raised"), ("e:2", "raised")}


async def test_an_ask_made_during_a_read_is_read_by_the_next_one(monkeypatch: pytest.MonkeyPatch) -> None:
    topic = AlertsTopic(ALERTS)
    outbox = make_outbox(topic, monkeypatch)
    first = asyncio.ensure_future(outbox.recover({"0": 2}))
    await asyncio.sleep(0.005)  # the first read is under way
    await asyncio.gather(outbox.recover({"1": 0}), outbox.recover({"0": 0}), first)
    assert topic.reads == [{0: 2}, {0: 0, 1: 0}]
    assert ("a:0", "raised") in outbox.already_published and ("c:1", "raised") in outbox.already_published


async def test_a_read_without_brokers_is_tried_again_until_they_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    topic = AlertsTopic(ALERTS)
    topic.failures = [KafkaTimeoutError("Failed to get offsets by times in 40000 ms"), KafkaConnectionError("away")]
    outbox = make_outbox(topic, monkeypatch)
    outbox.retry_s = 0.01
    await asyncio.gather(outbox.recover({"0": 0}), outbox.recover({"2": 0}))
    assert topic.reads == [{0: 0, 2: 0}] * 3
    assert ("e:2", "raised") in outbox.already_published and ("a:0", "raised") in outbox.already_published


async def test_a_failed_read_leaves_its_asks_to_the_next_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    topic = AlertsTopic(ALERTS)
    topic.failures = [TopicAuthorizationFailedError()]  # not a broker away: the restore fails
    outbox = make_outbox(topic, monkeypatch)
    results = await asyncio.gather(outbox.recover({"0": 0}), outbox.recover({"2": 0}), return_exceptions=True)
    assert isinstance(results[0], TopicAuthorizationFailedError) and results[1] is None
    assert topic.reads == [{0: 0, 2: 0}, {0: 0, 2: 0}]  # the second restore read both again
    assert ("e:2", "raised") in outbox.already_published and ("a:0", "raised") in outbox.already_published
