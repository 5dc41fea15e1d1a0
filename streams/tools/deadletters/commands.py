"""``citystream deadletters list``, ``summary`` and ``replay``: the commands."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console

from schemas import codec
from schemas.timestamps import format_ms
from streams.clients.kafka import DEADLETTER_TOPIC
from streams.core.durations import EXAMPLES
from streams.settings import ConfigError, Settings, kafka_client_kwargs, load_settings
from streams.tools.deadletters.broker import ReadResult, read_dead_letters, send_replays
from streams.tools.deadletters.letters import (
    REASONS,
    DeadLettersError,
    Filters,
    OffsetSpec,
    letter_json,
    letter_line,
    parse_moment,
    parse_offset_spec,
    pick_offsets,
    resolve_topic,
    select,
    source_text,
    summarise,
    summary_json,
    summary_tables,
)
from streams.tools.deadletters.replay import needs_confirmation, plan_replay, replay_line, replay_warnings


class _Moment(click.ParamType):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_moment(str(value), time.time_ns() // 1_000_000)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _Offset(click.ParamType):
    name = "[PARTITION:]OFFSET"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> OffsetSpec:
        if isinstance(value, OffsetSpec):
            return value
        try:
            return parse_offset_spec(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _filter_options(function: Any) -> Any:
    options = [
        click.option(
            "--reason",
            "reasons",
            multiple=True,
            type=click.Choice(REASONS),
            help="Only dead letters of this reason (repeatable).",
        ),
        click.option(
            "--topic",
            "topics",
            multiple=True,
            metavar="TOPIC",
            help="Only dead letters of this source topic (repeatable; taxi, parking and env name the contract's).",
        ),
        click.option(
            "--device",
            "devices",
            multiple=True,
            metavar="ID",
            help="Only this device, from the payload's device_id or the key (repeatable; env-jung-* patterns too).",
        ),
        click.option(
            "--since",
            type=_Moment(),
            default=None,
            help=f"Only dead letters from this time on: a duration back from now ({EXAMPLES}) or RFC 3339.",
        ),
        click.option("--until", type=_Moment(), default=None, help="Only dead letters up to this time (as --since)."),
        click.option(
            "--limit",
            type=click.IntRange(min=1),
            default=None,
            help="At most this many dead letters: the most recent ones.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _filters(
    reasons: tuple[str, ...], topics: tuple[str, ...], devices: tuple[str, ...], since: int | None, until: int | None
) -> Filters:
    return Filters(
        reasons=reasons,
        topics=tuple(resolve_topic(t) for t in topics),
        devices=devices,
        since_ms=since,
        until_ms=until,
    )


@dataclass(frozen=True, slots=True)
class _Kafka:
    bootstrap: list[str]
    options: dict[str, Any]


def _kafka(command: str) -> _Kafka:
    try:
        settings: Settings = load_settings()
        return _Kafka(settings.bootstrap_servers, kafka_client_kwargs(settings))
    except (ConfigError, ValueError) as exc:
        click.echo(f"citystream deadletters {command}: {exc}", err=True)
        sys.exit(2)


def _read(command: str, kafka: _Kafka, filters: Filters, offsets: Sequence[OffsetSpec] = ()) -> ReadResult:
    try:
        result = asyncio.run(
            read_dead_letters(
                kafka.bootstrap,
                since_ms=filters.since_ms,
                until_ms=filters.until_ms,
                offsets=offsets,
                client_options=kafka.options,
            )
        )
    except DeadLettersError as exc:
        click.echo(f"citystream deadletters {command}: {exc}", err=True)
        sys.exit(1)
    if not result.topic_exists:
        click.echo(
            f"there is no topic {DEADLETTER_TOPIC} at {','.join(kafka.bootstrap)} yet (the worker creates it)", err=True
        )
    for bad in result.unreadable:
        click.echo(f"skipped {DEADLETTER_TOPIC} {bad.partition}:{bad.offset}: {bad.problem}", err=True)
    return result


@click.group("deadletters")
def deadletters_command() -> None:
    """Inspect and replay the dead letters of city.deadletter.v1.

    A dead letter is a message (or one batch element) the worker could not process, with its reason,
    its errors and its original payload. `list` and `summary` show them; `replay` publishes their
    original bytes again to their source topic once the cause is fixed. Kafka comes from
    CITYSTREAM_KAFKA_BOOTSTRAP (and the CITYSTREAM_KAFKA_SECURITY_PROTOCOL, SASL and TLS settings).
    """


@deadletters_command.command("list")
@_filter_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the dead letter, device, position).")
def list_command(
    reasons: tuple[str, ...],
    topics: tuple[str, ...],
    devices: tuple[str, ...],
    since: int | None,
    until: int | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List dead letters oldest first, one per line.

    Each line: when it was dead-lettered, its position on city.deadletter.v1 (PARTITION:OFFSET, as
    `replay --offset` takes it), reason, source topic[partition]@offset (#index for a batch element),
    device, and the first error.
    """
    kafka = _kafka("list")
    try:
        filters = _filters(reasons, topics, devices, since, until)
    except DeadLettersError as exc:
        raise click.UsageError(str(exc)) from None
    result = _read("list", kafka, filters)
    for stored in select(result.letters, filters, limit):
        click.echo(codec.dumps_str(letter_json(stored)) if as_json else letter_line(stored))


@deadletters_command.command("summary", short_help="Count dead letters by reason, source topic and device.")
@_filter_options
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="How many devices to show.")
@click.option("--json", "as_json", is_flag=True, help="The counts as one JSON object.")
def summary_command(
    reasons: tuple[str, ...],
    topics: tuple[str, ...],
    devices: tuple[str, ...],
    since: int | None,
    until: int | None,
    limit: int | None,
    top: int,
    as_json: bool,
) -> None:
    """Count dead letters by reason, by source topic and by device (the top ones), as tables."""
    kafka = _kafka("summary")
    try:
        filters = _filters(reasons, topics, devices, since, until)
    except DeadLettersError as exc:
        raise click.UsageError(str(exc)) from None
    result = _read("summary", kafka, filters)
    summary = summarise(select(result.letters, filters, limit))
    if as_json:
        click.echo(codec.dumps_str(summary_json(summary, top)))
        return
    console = Console(width=max(100, Console().width))
    if summary.total == 0:
        console.print(f"No dead letters on {DEADLETTER_TOPIC} match.")
        return
    assert summary.first_ms is not None and summary.last_ms is not None
    console.print(
        f"[bold]{summary.total:,}[/bold] dead letters on {DEADLETTER_TOPIC}, "
        f"{format_ms(summary.first_ms)} to {format_ms(summary.last_ms)}"
    )
    for table in summary_tables(summary, top):
        console.print(table)


@deadletters_command.command("replay", short_help="Publish chosen dead letters again to their source topic.")
@_filter_options
@click.option(
    "--offset",
    "offsets",
    multiple=True,
    type=_Offset(),
    help="The dead letter at this PARTITION:OFFSET of city.deadletter.v1, as `list` shows it (repeatable).",
)
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter (needed when nothing else selects).")
@click.option("--dry-run", is_flag=True, help="Show what would be sent, and send nothing.")
@click.option("--yes", is_flag=True, help="Do not ask before replaying more than --confirm-above dead letters.")
@click.option(
    "--confirm-above",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Ask (or, with no terminal, require --yes) before replaying more than this many.",
)
def replay_command(
    reasons: tuple[str, ...],
    topics: tuple[str, ...],
    devices: tuple[str, ...],
    since: int | None,
    until: int | None,
    limit: int | None,
    offsets: tuple[OffsetSpec, ...],
    everything: bool,
    dry_run: bool,
    yes: bool,
    confirm_above: int,
) -> None:
    """Publish chosen dead letters' original bytes again to their source topic.

    Each goes back with its original key, so a fixed worker (or registry entry) processes it again.
    Choose them with --offset and/or the filters (--all for every one); --dry-run shows what would
    be sent and sends nothing.

    A batch element's dead letter holds only that element: it goes back as a single reading. A
    payload kept as base64 (not UTF-8) goes back byte for byte. Dead letters whose source topic is
    not one of the contract's, or without a payload, are refused. Each message carries a
    citystream-replay-of header naming its dead letter. The command waits for the broker to
    acknowledge every message and prints how many went to each topic. Replaying more than
    --confirm-above dead letters asks first; with no terminal (CI, scripts) it needs --yes.
    """
    try:
        filters = _filters(reasons, topics, devices, since, until)
    except DeadLettersError as exc:
        raise click.UsageError(str(exc)) from None
    if filters.empty and not offsets and not everything:
        raise click.UsageError(
            "choose what to replay: --offset, --reason, --topic, --device, --since/--until, or --all"
        )
    kafka = _kafka("replay")
    result = _read("replay", kafka, filters, offsets)
    try:
        chosen = pick_offsets(result.letters, offsets) if offsets else result.letters
    except DeadLettersError as exc:
        click.echo(f"citystream deadletters replay: {exc}", err=True)
        sys.exit(2)
    chosen = select(chosen, filters, limit)
    plan = plan_replay(chosen)
    for stored in plan.duplicates:
        click.echo(
            f"dl {stored.coordinates}: the same source message as another chosen dead letter; sent once", err=True
        )
    for refusal in plan.refused:
        click.echo(
            f"refused dl {refusal.origin.coordinates} ({source_text(refusal.origin.letter)}): {refusal.why}", err=True
        )
    for warning in replay_warnings(plan):
        click.echo(f"warning: {warning}", err=True)
    if dry_run:
        for replay in plan.replays:
            click.echo(replay_line(replay, dry_run=True))
        click.echo(f"dry run: would send {_counts_text(plan.by_topic()) or 'nothing'}; sent nothing")
        sys.exit(1 if plan.refused else 0)
    if not plan.replays:
        if plan.refused:
            click.echo(f"nothing to replay: {len(plan.refused)} refused", err=True)
            sys.exit(1)
        click.echo(f"no dead letter on {DEADLETTER_TOPIC} matches: nothing sent", err=True)
        return
    if needs_confirmation(len(plan.replays), threshold=confirm_above, yes=yes, dry_run=dry_run):
        count = len(plan.replays)
        what = f"{count} dead letter{'' if count == 1 else 's'} ({_counts_text(plan.by_topic())})"
        if not sys.stdin.isatty():
            click.echo(
                f"citystream deadletters replay: replaying {what} is more than --confirm-above {confirm_above} "
                "and there is no terminal to ask on: add --yes (check with --dry-run first); nothing sent",
                err=True,
            )
            sys.exit(2)
        if not click.confirm(f"Replay {what}?", default=False):
            click.echo("nothing sent", err=True)
            sys.exit(1)
    try:
        sent = asyncio.run(send_replays(kafka.bootstrap, plan.replays, client_options=kafka.options))
    except DeadLettersError as exc:
        click.echo(f"citystream deadletters replay: {exc}", err=True)
        sys.exit(1)
    for replay, problem in sent.failed:
        click.echo(f"failed dl {replay.origin.coordinates} -> {replay.topic}: {problem}", err=True)
    for topic, count in sorted(sent.sent.items()):
        click.echo(f"sent {count} to {topic} (acknowledged)")
    if sent.failed or plan.refused:
        click.echo(f"{sum(sent.sent.values())} sent, {len(sent.failed)} failed, {len(plan.refused)} refused", err=True)
        sys.exit(1)


def _counts_text(counts: Counter[str]) -> str:
    return ", ".join(f"{n} to {topic}" for topic, n in sorted(counts.items()))
