"""``citystream worker``: run the processor (:class:`streams.runtime.worker.Runtime`) from the settings."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from streams.clients.influx import InfluxUnavailable
from streams.clients.kafka import BrokerUnavailable
from streams.core.registry import RegistryError
from streams.runtime.logs import Redactor, secret_values
from streams.runtime.worker import Runtime
from streams.settings import ConfigError, check_web_port, load_settings, prepare_data_dir

log = logging.getLogger("citystream.worker")


def _process_count(text: str) -> int:
    if text == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= 64:
        raise click.BadParameter(f"{text!r}: a number of processes from 1 to 64, or auto (one per core)")
    return count


@click.command("worker")
@click.option(
    "--processes",
    default="1",
    show_default=True,
    metavar="N|auto",
    help="Worker processes to run, as one consumer group (auto: one per core). Process i serves "
    "/metrics, /healthz and /readyz on CITYSTREAM_WEB_PORT + i and keeps its state in "
    "CITYSTREAM_DATA_DIR/process-i. A process that exits stops the others.",
)
def worker_command(processes: str) -> None:
    """Run the processor: consume the source topics, write InfluxDB, publish dead letters.

    Settings come from CITYSTREAM_* environment variables (and a .env file): Kafka with
    CITYSTREAM_KAFKA_BOOTSTRAP, InfluxDB with CITYSTREAM_INFLUX_URL, _API (v1 or v2), _DB, _ORG and
    _TOKEN, the registry with CITYSTREAM_REGISTRY. See the README for the full table. Several workers
    with the same settings share the partitions as one consumer group.

    Kafka security: CITYSTREAM_KAFKA_SECURITY_PROTOCOL (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL),
    _SASL_MECHANISM, _SASL_USERNAME, _SASL_PASSWORD (or _SASL_PASSWORD_FILE), _SSL_CAFILE,
    _SSL_CERTFILE, _SSL_KEYFILE; the InfluxDB token may come from CITYSTREAM_INFLUX_TOKEN_FILE.
    The worker serves /metrics (Prometheus), /healthz and /readyz on CITYSTREAM_WEB_HOST and
    CITYSTREAM_WEB_PORT; CITYSTREAM_LOG_FORMAT=json logs one JSON object per line.
    """
    count = _process_count(processes)
    try:
        settings = load_settings()
    except ConfigError as exc:  # its message never holds a setting's value
        click.echo(f"citystream worker: {exc}", err=True)
        sys.exit(2)
    redact = Redactor(secret_values(settings))
    if count > 1:
        sys.exit(_run_processes(count, settings.web_host, settings.web_port, settings.data_dir))
    try:
        # what the worker needs on this machine, checked before any connection
        prepare_data_dir(settings.data_dir)
        check_web_port(settings.web_host, settings.web_port)
        runtime = Runtime(settings)
    except (ConfigError, RegistryError) as exc:
        click.echo(f"citystream worker: {redact(str(exc))}", err=True)
        sys.exit(2)
    try:
        runtime.run()
    except (BrokerUnavailable, InfluxUnavailable) as exc:
        if settings.log_format == "json":
            log.critical("%s", exc)  # one JSON line, like the others
        else:
            click.echo(f"citystream worker: {redact(str(exc))}", err=True)
        sys.exit(1)


def _run_processes(count: int, web_host: str, web_port: int, data_dir: Path) -> int:
    """Run ``count`` workers with the same settings but their own web port and data folder, until
    one exits or a signal comes; return the first non-zero exit code (0 when stopped)."""
    try:
        for i in range(count):
            check_web_port(web_host, web_port + i)
            prepare_data_dir(data_dir / f"process-{i}")
    except ConfigError as exc:
        click.echo(f"citystream worker: {exc}", err=True)
        return 2
    children = []
    for i in range(count):
        env = {
            **os.environ,
            "CITYSTREAM_WEB_PORT": str(web_port + i),
            "CITYSTREAM_DATA_DIR": str(data_dir / f"process-{i}"),
        }
        command = [sys.executable, "-m", "streams.tools.cli", "worker"]
        children.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL))
    log.info("started %d worker processes, web ports %d-%d", count, web_port, web_port + count - 1)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    while any(child.poll() is None for child in children):
        exited = [child.returncode for child in children if child.returncode is not None]
        if exited and not stopping:
            code = next((c for c in exited if c), 0) or 1  # one ended by itself: stop the rest
            stop(signal.SIGTERM, None)
        time.sleep(0.2)
    codes = [child.returncode for child in children]
    if not code:
        code = next((c for c in codes if c not in (0, -signal.SIGTERM)), 0)
    return code
