"""``citystream alerts``: an alerting consumer of ``city.alerts.v1``.

Prints one line per alert and, with ``--webhook``, POSTs each alert as JSON. Offsets are committed
only once an alert is handled (printed, and delivered to the webhook), so delivery is at least
once: a receiver deduplicates by ``alert_id`` and ``status``. Several instances with the same
``--group`` share the topic's partitions.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import click
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from schemas import codec
from streams.clients.kafka import ALERTS_TOPIC, BrokerUnavailable, contract_topics, ensure_topics
from streams.settings import ConfigError, kafka_client_kwargs, load_settings

log = logging.getLogger("citystream.alerts")

SEVERITIES = ("info", "warning", "critical")


def alert_line(alert: dict[str, Any]) -> str:
    """One readable line: when, status, severity, kind, subject, message, id."""
    subject = alert.get("subject") or {}
    return (
        f"{alert.get('emitted_at', '?')}  {str(alert.get('status', '?')).upper():7}  "
        f"{alert.get('severity', '?'):8}  {alert.get('kind', '?'):18}  "
        f"{subject.get('type', '?')} {subject.get('id', '?')}  "
        f"{alert.get('message', '')}  [{alert.get('alert_id', '')}]"
    )


def wanted(alert: dict[str, Any], kinds: Sequence[str], severities: Sequence[str]) -> bool:
    kind = str(alert.get("kind", ""))
    if kinds and not any(kind == k or kind.startswith(k.rstrip("*").rstrip(".") + ".") for k in kinds):
        return False
    return not severities or alert.get("severity") in severities


class _FromBeginning(ConsumerRebalanceListener):
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.done: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        fresh = [tp for tp in assigned if tp not in self.done]
        if fresh:
            await self.consumer.seek_to_beginning(*fresh)
            self.done.update(fresh)


async def post_with_retries(
    session: aiohttp.ClientSession, url: str, body: bytes, *, max_delay_s: float = 30.0
) -> bool:
    """POST until the receiver answers 2xx; give up (False) only on a 4xx other than 408 and 429."""
    attempt = 0
    while True:
        attempt += 1
        try:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                if 200 <= response.status < 300:
                    return True
                if 400 <= response.status < 500 and response.status not in (408, 429):
                    log.error("webhook %s refused an alert with %d; skipping it", url, response.status)
                    return False
                problem = f"answered {response.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            problem = f"unreachable ({exc!r})"
        delay = random.uniform(0, min(max_delay_s, 0.25 * 2**attempt))
        log.warning("webhook %s %s; retrying in %.1f s (attempt %d)", url, problem, delay, attempt)
        await asyncio.sleep(delay)


async def consume_alerts(
    bootstrap: list[str],
    *,
    group: str,
    from_beginning: bool,
    kinds: Sequence[str],
    severities: Sequence[str],
    webhook: str | None,
    count: int | None,
    startup_timeout_s: float,
    client_options: Mapping[str, Any] | None = None,
) -> int:
    """Print (and POST) the alerts; ``client_options``: Kafka security (streams.settings.kafka_client_kwargs)."""
    options = dict(client_options or {})
    await ensure_topics(bootstrap, contract_topics(12)[-1:], timeout_s=startup_timeout_s, **options)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **options,
    )
    if from_beginning:
        consumer.subscribe([ALERTS_TOPIC], listener=_FromBeginning(consumer))
    else:
        consumer.subscribe([ALERTS_TOPIC])
    await consumer.start()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) if webhook else None
    handled = 0
    try:
        while count is None or handled < count:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    try:
                        alert = codec.loads(record.value)
                    except codec.JSONDecodeError:
                        log.error("not an alert at %s[%d]@%d; skipping", tp.topic, tp.partition, record.offset)
                        continue
                    if not isinstance(alert, dict) or not wanted(alert, kinds, severities):
                        continue
                    click.echo(alert_line(alert))
                    if session is not None and webhook is not None:
                        await post_with_retries(session, webhook, record.value)
                    handled += 1
                    if count is not None and handled >= count:
                        break
                await consumer.commit({tp: records[-1].offset + 1})
    finally:
        if session is not None:
            await session.close()
        await consumer.stop()
    return handled


@click.command("alerts")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest alert on the topic, not at new ones.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="KIND",
    help="Only alerts of this kind (repeatable; a prefix such as 'air' takes air.*).",
)
@click.option(
    "--severity",
    "severities",
    multiple=True,
    type=click.Choice(SEVERITIES),
    help="Only alerts of this severity (repeatable).",
)
@click.option("--webhook", metavar="URL", help="POST each alert as JSON to URL, retrying with backoff.")
@click.option(
    "--group",
    default="citystream-alerts",
    show_default=True,
    help="Consumer group: instances with the same group share the work.",
)
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many alerts.")
def alerts_command(
    from_beginning: bool,
    kinds: tuple[str, ...],
    severities: tuple[str, ...],
    webhook: str | None,
    group: str,
    count: int | None,
) -> None:
    """Tail city.alerts.v1: one readable line per alert, optionally POSTed to a webhook.

    Kafka is CITYSTREAM_KAFKA_BOOTSTRAP. Delivery to the webhook is at least once: receivers
    deduplicate by alert_id and status.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        settings = load_settings()
    except ConfigError as exc:
        click.echo(f"citystream alerts: {exc}", err=True)
        sys.exit(2)
    try:
        asyncio.run(
            consume_alerts(
                settings.bootstrap_servers,
                group=group,
                from_beginning=from_beginning,
                kinds=kinds,
                severities=severities,
                webhook=webhook,
                count=count,
                startup_timeout_s=settings.startup_timeout_s,
                client_options=kafka_client_kwargs(settings),
            )
        )
    except BrokerUnavailable as exc:
        click.echo(f"citystream alerts: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
