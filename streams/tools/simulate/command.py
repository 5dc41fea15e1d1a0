"""``citystream simulate``: the click command, its options and help, and the run it starts."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import click
from aiokafka.errors import KafkaError

from streams.clients.kafka import BrokerUnavailable
from streams.core.decode import MAX_BATCH_READINGS
from streams.settings import ConfigError, Settings, load_settings
from streams.tools.simulate.display import render_summary
from streams.tools.simulate.options import (
    SimulationOptions,
    SimulationReport,
    expected_readings_per_s,
    resolved_taxis,
)
from streams.tools.simulate.producer import check_period, run_simulation

_HELP = """Simulate Daegu's city sensors and produce their readings to Kafka.

Taxis with ADAS cameras drive a street grid over the city (warnings cluster at collision
hotspots; potholes and obstacles lie at fixed places), parking spot sensors in lots across the
districts follow each lot's time of day, and air-quality stations report every minute with
morning and evening peaks and a fine-dust episode at some of them. A share of the messages are
batch envelopes, duplicates, or invalid on purpose (every dead-letter reason of the contract).

\b
Time: timestamps never lie in the future. A run of --duration D seconds at
--speedup S simulates the D*S seconds that END when the run ends: it starts
D*(S-1) seconds in the past and catches up with the clock at the end (with S=1
readings carry the current time). Keep D*(S-1) under about 6 days, as the worker
dead-letters readings older than 7 days. When the city produces more readings
than --rate allows, simulated time falls behind instead (readings get older).

Kafka comes from --bootstrap or CITYSTREAM_KAFKA_BOOTSTRAP; missing topics are created first.
"""


@click.command("simulate", help=_HELP)
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to run, in wall-clock seconds.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=500.0,
    show_default=True,
    metavar="READINGS_PER_S",
    help="Target valid readings per second, all topics together (invalid messages and "
    "duplicates come on top): the fleet is sized for it unless --taxis is given, "
    "and a token bucket never lets more through.",
)
@click.option(
    "--speedup",
    type=click.FloatRange(min=1),
    default=1.0,
    show_default=True,
    metavar="N",
    help="Simulated seconds per wall second; the simulated period ends now.",
)
@click.option(
    "--taxis",
    type=click.IntRange(min=0),
    default=None,
    help="Taxis (taxi-0001...), each reporting every 1-5 s of simulated time "
    "[default: as many as --rate needs at --speedup: about 900 at 500/s; Daegu "
    "fitted 875 taxis with ADAS cameras].",
)
@click.option(
    "--lots",
    type=click.IntRange(min=0),
    default=12,
    show_default=True,
    help="Parking lots (dongseongro-lot-1, suseong-alpha-1, ...).",
)
@click.option(
    "--spots-per-lot",
    type=click.IntRange(1, 2600),
    default=80,
    show_default=True,
    help="Spot sensors per lot (A001...), which is also the lot's capacity.",
)
@click.option(
    "--stations",
    type=click.IntRange(min=0),
    default=24,
    show_default=True,
    help="Air-quality stations (env-jung-01...), one reading per simulated minute each.",
)
@click.option(
    "--batch-share",
    type=click.FloatRange(0, 1),
    default=0.2,
    show_default=True,
    help='Share of messages sent as batch envelopes {"batch": [...]}.',
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH_READINGS),
    default=50,
    show_default=True,
    help="Readings per batch envelope (fewer when a batch has waited 10 simulated seconds or 1 wall second).",
)
@click.option(
    "--invalid-share",
    type=click.FloatRange(0, 0.5),
    default=0.01,
    show_default=True,
    help="Share of messages, and of batch elements, that are invalid, covering every "
    "dead-letter reason (at most one too_large message per run).",
)
@click.option(
    "--duplicate-share",
    type=click.FloatRange(0, 0.5),
    default=0.005,
    show_default=True,
    help="Share of readings sent again later as duplicates.",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 60),
    default=0.5,
    show_default=True,
    help="Sensor faults per station and hour: a PM2.5 spike, or (one in five) a PM2.5 analyser stuck "
    "on one value for 40 minutes to 3 hours; the worker flags them (qc fields, device.stuck).",
)
@click.option(
    "--seed", type=int, default=None, help="Seed: the same seed gives the same city and readings [default: random]."
)
@click.option(
    "--bootstrap",
    default=None,
    metavar="HOST:PORT[,...]",
    help="Kafka bootstrap servers [default: CITYSTREAM_KAFKA_BOOTSTRAP].",
)
@click.option(
    "--registry-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="Write the registry YAML of the simulated lots and stations (for CITYSTREAM_REGISTRY).",
)
@click.option(
    "--compression",
    type=click.Choice(["none", "gzip", "snappy", "lz4", "zstd"]),
    default="none",
    show_default=True,
    help="Kafka compression (gzip is always available; the others need their library).",
)
@click.option(
    "--parking-via",
    type=click.Choice(["kafka", "mqtt"]),
    default="kafka",
    show_default=True,
    help="How the parking sensors report: straight to Kafka, or as ChirpStack v4 uplinks on an MQTT "
    "broker for `citystream bridge mqtt` (each sensor's DevEUI derived from its id; its lot and spot "
    "in the decoded payload; messages invalid on purpose still go to Kafka).",
)
@click.option(
    "--mqtt-url",
    default=None,
    metavar="mqtt://HOST:PORT",
    help="The MQTT broker of --parking-via mqtt [default: CITYSTREAM_MQTT_URL, else mqtt://127.0.0.1:1883].",
)
@click.option("--quiet", is_flag=True, help="No progress display and no summary.")
def simulate_command(quiet: bool, **values: Any) -> None:
    try:
        options = SimulationOptions(**values)
        overrides = {"kafka_bootstrap": options.bootstrap} if options.bootstrap else {}
        settings = load_settings(**overrides)
        check_period(options, settings)
    except (ValueError, ConfigError) as exc:
        raise click.UsageError(str(exc)) from None
    console = None
    if not quiet:
        from rich.console import Console

        console = Console(stderr=True)
        console.print(describe_city(options))
    try:
        report = asyncio.run(_run_until_interrupted(options, settings, console))
    except (BrokerUnavailable, KafkaError) as exc:
        raise click.ClickException(str(exc)) from None
    if console is not None:
        from rich.console import Console

        Console().print(render_summary(report))
    # the broker may refuse the one too_large message (a Kafka topic's default limit is 1 MiB)
    if any("too_large" not in label for label in report.failed):
        raise SystemExit(1)


async def _run_until_interrupted(
    options: SimulationOptions, settings: Settings, console: Any | None
) -> SimulationReport:
    """Run; Ctrl-C or SIGTERM ends the run early and still sends what was generated."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    return await run_simulation(options, settings=settings, console=console, stop=stop)


def describe_city(options: SimulationOptions) -> str:
    """What will be simulated, and whether --rate can be reached."""
    expected = expected_readings_per_s(options)
    text = (
        f"{resolved_taxis(options)} taxis, {options.lots} lots x {options.spots_per_lot} "
        f"spots, {options.stations} stations at speedup {options.speedup:g}: about "
        f"{expected:,.0f} readings/s (--rate {options.rate:,.0f})"
    )
    if expected > options.rate * 1.15:
        text += (
            "\n[yellow]more than --rate: simulated time will fall behind the clock (lower "
            "--taxis or --speedup, or raise --rate)[/yellow]"
        )
    elif expected < options.rate * 0.85:
        text += "\n[yellow]less than --rate: add --taxis to reach it[/yellow]"
    return text
