"""The one module that touches Faust's private attributes: checked against faust-streaming 0.15.3.

The project pins ``faust-streaming>=0.15.3,<0.16``; tests/unit/runtime/test_faust_adapter.py fails
loudly when the installed Faust is outside that range or when what this module relies on has
changed (the source of ``Consumer._drain_messages``, the attributes below). What it relies on:

* ``Consumer._drain_messages`` (replaced by :class:`BatchConsumer`), with ``_read_offset``,
  ``_add_gap``, ``_n_acked``, ``_commit_every``, ``_stopped`` and the fetcher's ``_stopped``;
* ``Consumer._read_offset`` and ``Consumer._committed_offset`` (read by :class:`FaustConsumerView`);
* ``Producer._producer``, the aiokafka producer, whose client answers metadata requests
  (:func:`producer_client`);
* ``Producer._settings_extra`` (the aiokafka producer's arguments beyond Faust's settings),
  extended by :class:`IdempotentProducer`;
* aiokafka's ``AIOKafkaClient._metadata_update`` and ``_retry_backoff`` (aiokafka 0.14), paced by
  :func:`pace_metadata_retries`.

**An idempotent producer.** A broker that goes away after writing a batch and before answering
leaves the client to send the batch again: without idempotence, the topic holds it twice (an alert
published twice, after a broker's restart). :class:`IdempotentProducer` turns idempotence on
(acks=all, which the worker uses anyway): the broker writes a batch sent again once. A broker that
does not take idempotent producers (Tansu, the local stack's: InitProducerId answers an unknown
error) is found before the app starts (:func:`idempotence_supported`), and the producer is then
made as Faust makes it.

**Metadata retries.** When no broker answers, aiokafka's producer (and fetcher) ask for a metadata
update again as soon as one fails, without the retry backoff: with the brokers away (a restart, a
network cut) every client of the worker tried to connect and logged two errors thousands of times a
second, a CPU core busy and tens of megabytes of log a minute. :func:`pace_metadata_retries` makes a
failed metadata update wait ``retry_backoff_ms`` (100 ms) before it reports its failure, so the
clients retry ten times a second; the callers waiting for it wait along, and a broker that answers
again is found within that.

**Batches.** Faust's consumer hands each fetched batch of messages to a handler at once.

Faust's consumer delivers one message at a time: for each it starts a task for the conductor's
callback and three more to race it against flow suspension and shutdown (``Service.wait_first``),
decodes an event, queues it, and the agent's stream takes it out again with its sensors and
context variables. Profiled under load, that machinery costs several times the work the worker
itself does with a reading. :class:`BatchConsumer` keeps everything else of Faust's aiokafka
consumer (the fetcher thread, rebalances, seeks to committed offsets, offset gaps, acks and
commits) and changes one thing: the messages of one ``getmany`` for topics that have a batch
handler go to that handler as a list, in partition order, in one call.

Acks stay as in Faust: a handler acknowledges each message with ``consumer.ack(message)`` when it
is done with it (the worker does so at a checkpoint), and the committed offset only moves past
acknowledged messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import ClusterAuthorizationFailedError, UnknownError, UnsupportedVersionError
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message, TransportT

BatchHandler = Callable[[list[Message]], Awaitable[None]]

log = logging.getLogger(__name__)


class BatchConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer with a batch path for the topics in ``app.batch_handlers``."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - exercised by the integration tests
        # The structure and checks are Faust's (``faust.transport.consumer.Consumer._drain_messages``);
        # the difference: messages are collected per fetch and handed over per topic.
        handlers: Mapping[str, BatchHandler] = cast(Any, self.app).batch_handlers
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        # Faust warns of a partition whose stream stopped taking events; tell it when they were taken
        inbound_time = self.app.monitor.stream_inbound_time
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                batches: dict[str, list[Message]] = {}
                others: list[Message] = []
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in getmany(timeout=1.0):
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is not None and offset < r_offset:
                            continue  # read already (Faust drops these too)
                        if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        set_read_offset(tp, offset)
                        if message.topic in handlers:
                            batch = batches.get(message.topic)
                            if batch is None:
                                batch = batches[message.topic] = []
                            batch.append(message)
                        else:
                            others.append(message)
                    unset_flag(CONSUMER_FETCHING)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                for topic, batch in batches.items():
                    now = time.monotonic()
                    for message in batch:
                        inbound_time[message.tp] = now
                    await self.wait_first(handlers[topic](batch), self.suspend_flow.wait())
                for message in others:
                    await self.wait_first(callback(message), self.suspend_flow.wait())
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class IdempotentProducer(aiokafka_driver.Producer):
    """Faust's aiokafka producer with idempotence on, unless ``app.idempotent_producer`` is False
    (see the module's doc)."""

    def _settings_extra(self) -> Mapping[str, Any]:
        extra = super()._settings_extra()
        if not getattr(self.app, "idempotent_producer", True):
            return extra
        return {**extra, "acks": "all", "enable_idempotence": True}


async def idempotence_supported(bootstrap_servers: list[str], timeout_s: float = 30.0, **client_options: Any) -> bool:
    """Whether the brokers take idempotent producers: False when they refuse one (an unknown error
    or an unsupported request, as from Tansu; no permission for it); True otherwise, a broker that
    does not answer within ``timeout_s`` included (the producer's own start then says why)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True, **client_options
    )
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
    except (UnknownError, UnsupportedVersionError, ClusterAuthorizationFailedError) as exc:
        log.warning(
            "the Kafka brokers refuse idempotent producers (%r): the worker's producer is not idempotent, "
            "and a batch sent again after a broker's restart may be written twice",
            exc,
        )
        return False
    except Exception:  # not a refusal (no answer, say): the producer's own start tells
        return True
    finally:
        await producer.stop()
    return True


class BatchTransport(aiokafka_driver.Transport):
    Consumer = BatchConsumer
    Producer = IdempotentProducer


class BatchApp(faust.App):
    """A Faust app whose consumer hands whole fetches to ``batch_handlers[topic]``.

    Register a handler with :meth:`batch_topic`; the topic is subscribed like an agent's, when the
    app starts (in its event loop).
    """

    batch_handlers: dict[str, BatchHandler]

    idempotent_producer = True  # see IdempotentProducer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.batch_handlers = {}
        self._batch_topics: list[faust.TopicT] = []
        super().__init__(*args, **kwargs)

    async def on_start(self) -> None:
        for topic in self._batch_topics:
            self.topics.add(topic)
        await super().on_start()

    def _new_transport(self) -> TransportT:
        return BatchTransport(self.conf.broker_consumer, self)

    def batch_topic(self, topic: faust.TopicT, handler: BatchHandler) -> None:
        for name in topic.topics:
            self.batch_handlers[name] = handler
        self._batch_topics.append(topic)


class FaustConsumerView:
    """Assignment, end offsets, read and committed offsets of Faust's consumer, without failing
    before it starts (:class:`streams.runtime.metrics.ConsumerView`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def _consumer(self) -> Any:
        return self.app.consumer

    def assignment(self) -> Iterable[tuple[str, int]]:
        try:
            return [(tp.topic, tp.partition) for tp in self._consumer().assignment()]
        except Exception:  # not started, or stopping
            return []

    def highwater(self, topic: str, partition: int) -> int | None:
        try:
            value = self._consumer().highwater(TP(topic, partition))
        except Exception:  # not fetched yet
            return None
        return value if isinstance(value, int) else None

    def read_offset(self, topic: str, partition: int) -> int | None:
        return self._offset("_read_offset", topic, partition)

    def committed_offset(self, topic: str, partition: int) -> int | None:
        """The offset committed for the group: the next message a restart would read (Faust keeps
        Kafka's committed offset, as read at assignment and as it commits; it keeps 0 as None)."""
        return self._offset("_committed_offset", topic, partition)

    def _offset(self, attribute: str, topic: str, partition: int) -> int | None:
        try:
            offsets = getattr(self._consumer(), attribute, {})
        except Exception:  # not started
            return None
        value = offsets.get(TP(topic, partition)) if hasattr(offsets, "get") else None
        return value if isinstance(value, int) else None


def producer_client(app: Any) -> Any | None:
    """The aiokafka client of Faust's producer (it answers metadata requests), once it has started."""
    producer = getattr(app.producer, "_producer", None)
    return getattr(producer, "client", None)


def pace_metadata_retries() -> None:
    """Make every aiokafka client of this process wait its retry backoff after a failed metadata
    update (see the module's doc). Idempotent."""
    update = AIOKafkaClient._metadata_update
    if getattr(update, "paced", False):
        return

    async def paced_update(self: AIOKafkaClient, cluster_metadata: Any, topics: Any) -> bool:
        updated: bool = await update(self, cluster_metadata, topics)
        if not updated:
            await asyncio.sleep(self._retry_backoff)
        return updated

    paced_update.paced = True  # type: ignore[attr-defined]
    AIOKafkaClient._metadata_update = paced_update
