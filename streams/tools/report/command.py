"""``citystream report``: the command, and :func:`write_report` (the demo writes one too)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Final

import click

from streams.clients.influx import InfluxQLReader
from streams.core.durations import EXAMPLES
from streams.core.registry import RegistryError, load_registry
from streams.settings import ConfigError, Settings, kafka_client_kwargs, load_settings
from streams.tools.report.data import collect
from streams.tools.report.page import ReportFiles, render
from streams.tools.report.ranges import DEFAULT_SINCE, ReportError, TimeRange, range_text, resolve_range

DEFAULT_OUT: Final = Path("var/report")


def write_report(
    settings: Settings,
    time_range: TimeRange,
    folder: Path,
    *,
    dead_letters: bool = True,
) -> ReportFiles:
    """Read the data of ``time_range`` with ``settings`` and write the report into ``folder``.

    InfluxDB with ``settings``' URL, database and token; the dead letters with its Kafka bootstrap
    servers and security settings (SASL, TLS), as every other Kafka client of the project.
    """
    reader = InfluxQLReader(settings.influx_url, settings.influx_db, settings.influx_token)
    try:
        registry = load_registry(settings.registry)
    except RegistryError as exc:
        raise ReportError(str(exc)) from None
    data = collect(
        reader,
        time_range,
        bootstrap_servers=settings.bootstrap_servers if dead_letters else None,
        registry=registry,
        kafka_options=kafka_client_kwargs(settings) if dead_letters else None,
    )
    return render(data, folder)


@click.command("report")
@click.option(
    "--since",
    metavar="DURATION",
    help=f"The range ends at --to (default now) and lasts this long: {EXAMPLES}. [default: {DEFAULT_SINCE}]",
)
@click.option(
    "--from", "start", metavar="TIME", help="Start of the range, RFC 3339 with offset: 2026-11-21T18:00:00+09:00."
)
@click.option("--to", "end", metavar="TIME", help="End of the range (exclusive), RFC 3339 with offset. [default: now]")
@click.option(
    "--out",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Folder for the PNGs, summary.json and report.html.",
)
@click.option("--no-dead-letters", is_flag=True, help="Do not read city.deadletter.v1 (no Kafka needed).")
def report_command(since: str | None, start: str | None, end: str | None, folder: Path, no_dead_letters: bool) -> None:
    """Charts and one HTML page of a time range: air, parking, ADAS warnings, throughput.

    Reads the window aggregates from InfluxDB with InfluxQL over /query (CITYSTREAM_INFLUX_URL,
    CITYSTREAM_INFLUX_DB, and CITYSTREAM_INFLUX_TOKEN sent as "Authorization: Token ...") and
    counts the dead letters of city.deadletter.v1 (CITYSTREAM_KAFKA_BOOTSTRAP, and the
    CITYSTREAM_KAFKA_SECURITY_PROTOCOL, SASL and TLS settings). InfluxDB 1.x answers /query as is;
    InfluxDB 2.x and 3.x answer it through their v1 compatibility API, which needs a token and a
    DBRP mapping of the database name CITYSTREAM_INFLUX_DB to the bucket.

    Writes pm25.png (PM2.5 per station over the Korean CAI bands), parking.png (occupancy per
    lot), adas_map.png (ADAS warnings per H3 cell), throughput.png (readings and dead letters per
    minute), summary.json and report.html (everything in one self-contained page) into --out.
    Times are shown in KST (UTC+9).
    """
    try:
        settings = load_settings()
    except ConfigError as exc:
        click.echo(f"citystream report: {exc}", err=True)
        sys.exit(2)
    try:
        time_range = resolve_range(since, start, end, time.time_ns() // 1_000_000)
    except ReportError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        files = write_report(settings, time_range, folder, dead_letters=not no_dead_letters)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    summary = files.summary
    readings = ", ".join(f"{kind} {count:,}" for kind, count in summary["readings"].items())
    click.echo(f"{range_text(time_range)}: readings {readings}")
    if summary["dead_letters"] is not None:
        click.echo(f"dead letters: {summary['dead_letters']['total']:,}")
    click.echo(f"report: {files.html}")
