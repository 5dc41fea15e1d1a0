"""What streams.runtime.faust_adapter relies on in Faust is still there, as it was checked.

These fail loudly on a Faust upgrade: read the new ``Consumer._drain_messages`` against
``BatchConsumer._drain_messages``, check the attributes, then record the new hash and range.
"""

from __future__ import annotations

import hashlib
import inspect
import time
import tomllib
from pathlib import Path

import faust
from aiokafka.client import AIOKafkaClient
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as aiokafka_driver
from packaging.specifiers import SpecifierSet

from streams.runtime import faust_adapter
from streams.runtime.faust_adapter import BatchConsumer, FaustConsumerView, producer_client

ROOT = Path(__file__).resolve().parents[3]
CHECKED_VERSIONS = SpecifierSet(">=0.15.3,<0.16")
# sha256 of inspect.getsource(faust.transport.consumer.Consumer._drain_messages) in faust-streaming 0.15.3
DRAIN_MESSAGES_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


def test_the_installed_faust_is_in_the_checked_range_and_the_pinned_one() -> None:
    assert faust.__version__ in CHECKED_VERSIONS, f"faust-streaming {faust.__version__}: check faust_adapter"
    with (ROOT / "pyproject.toml").open("rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    pinned = next(d for d in dependencies if d.startswith("faust-streaming"))
    assert SpecifierSet(pinned.removeprefix("faust-streaming")) == CHECKED_VERSIONS
    assert "0.15.3" in faust_adapter.__doc__  # type: ignore[operator]


def test_drain_messages_is_the_one_batch_consumer_was_written_from() -> None:
    source = inspect.getsource(faust_consumer.Consumer._drain_messages)
    assert hashlib.sha256(source.encode()).hexdigest() == DRAIN_MESSAGES_SHA256, (
        "Faust's Consumer._drain_messages changed: compare it with BatchConsumer._drain_messages"
    )
    assert issubclass(BatchConsumer, aiokafka_driver.Consumer)
    assert "_drain_messages" in vars(BatchConsumer)


def test_the_private_attributes_used_are_still_set_by_faust() -> None:
    init = inspect.getsource(faust_consumer.Consumer.__init__)
    for attribute in ("_read_offset", "_committed_offset", "_commit_every"):
        assert f"self.{attribute}" in init, attribute
    annotations = inspect.get_annotations(faust_consumer.Consumer)
    assert "_n_acked" in annotations and "_read_offset" in annotations and "_committed_offset" in annotations
    assert callable(faust_consumer.Consumer._add_gap)
    assert "_producer" in inspect.get_annotations(aiokafka_driver.Producer)


class _Offsets:
    def __init__(self) -> None:
        self._read_offset = {faust.types.TP("t", 0): 41}
        self._committed_offset = {faust.types.TP("t", 0): 7}

    def assignment(self) -> set[faust.types.TP]:
        return {faust.types.TP("t", 0)}

    def highwater(self, tp: faust.types.TP) -> int:
        return 50


class _App:
    def __init__(self, consumer: object, producer: object) -> None:
        self.consumer, self.producer = consumer, producer


def test_the_consumer_view_reads_the_offsets_and_never_fails_before_the_start() -> None:
    view = FaustConsumerView(_App(_Offsets(), None))
    assert list(view.assignment()) == [("t", 0)]
    assert (view.highwater("t", 0), view.read_offset("t", 0), view.committed_offset("t", 0)) == (50, 41, 7)
    assert view.committed_offset("t", 1) is None

    class NotStarted:
        @property
        def consumer(self) -> object:
            raise RuntimeError("not started")

    idle = FaustConsumerView(NotStarted())
    assert list(idle.assignment()) == [] and idle.highwater("t", 0) is None and idle.read_offset("t", 0) is None


def test_producer_client_is_none_until_the_producer_starts() -> None:
    class Producer:
        _producer = None

    assert producer_client(_App(None, Producer())) is None
    client = object()

    class Started:
        class _producer:
            pass

    Started._producer.client = client  # type: ignore[attr-defined]
    assert producer_client(_App(None, Started())) is client


async def test_a_failed_metadata_update_waits_the_retry_backoff_before_it_is_asked_again() -> None:
    faust_adapter.pace_metadata_retries()
    faust_adapter.pace_metadata_retries()  # once only
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9", retry_backoff_ms=200)
    started = time.monotonic()
    assert await client._metadata_update(client.cluster, []) is False  # no broker known: fails at once
    assert time.monotonic() - started >= 0.2
    assert AIOKafkaClient._metadata_update.paced  # type: ignore[attr-defined]


async def test_the_workers_producer_is_idempotent() -> None:
    app = faust_adapter.BatchApp("idempotence-check", broker="kafka://127.0.0.1:1", producer_acks=-1)
    assert "_settings_extra" in vars(aiokafka_driver.Producer)
    producer = app.producer
    assert isinstance(producer, faust_adapter.IdempotentProducer)
    client = producer._new_producer()  # not started: no broker needed
    assert client._txn_manager is not None  # aiokafka's sequence numbers: idempotence on
    assert client._txn_manager.transactional_id is None  # not transactions


async def test_the_producer_is_made_as_faust_makes_it_for_brokers_that_refuse_idempotence() -> None:
    app = faust_adapter.BatchApp("idempotence-refused", broker="kafka://127.0.0.1:1", producer_acks=-1)
    app.idempotent_producer = False  # as the worker's preflight finds for Tansu
    assert app.producer._new_producer()._txn_manager is None
