"""The state store's reads while no broker answers: they wait and try again, they do not fail the
worker (a broker away for a minute while a partition was being restored stopped it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    TopicAuthorizationFailedError,
)

from streams.clients import state
from streams.clients.kafka import BrokerUnavailable, state_topic
from streams.clients.state import KafkaStateStore, transient


def test_a_broker_away_is_transient_a_refusal_is_not() -> None:
    for away in (
        KafkaTimeoutError("Failed to get offsets by times in 40000 ms"),
        KafkaConnectionError("Unable to bootstrap"),
        LeaderNotAvailableError(),
        BrokerUnavailable("no answer"),
        ConnectionRefusedError(),
        TimeoutError(),
    ):
        assert transient(away), away
    for refused in (TopicAuthorizationFailedError(), ValueError("not a snapshot")):
        assert not transient(refused), refused


async def test_reading_snapshots_without_a_broker_waits_for_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def send(*_args: object) -> Awaitable[object]:
        raise AssertionError("nothing is saved here")

    monkeypatch.setattr(state, "RETRY_S", 0.05)
    store = KafkaStateStore(["127.0.0.1:1"], {"city.env.v1": state_topic("app", "city.env.v1")}, send)
    with caplog.at_level(logging.WARNING, logger="streams.clients.state"), pytest.raises(TimeoutError):
        await asyncio.wait_for(store.load_many("city.env.v1", [0, 1]), timeout=1.5)  # still waiting
    assert sum("trying again" in r.getMessage() for r in caplog.records) >= 2
    await store.close()
