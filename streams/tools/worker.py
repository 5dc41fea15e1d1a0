"""``citystream worker``: run the processor (:class:`streams.runtime.worker.Runtime`) from the settings."""

from __future__ import annotations

import logging
import sys

import click

from streams.clients.influx import InfluxUnavailable
from streams.clients.kafka import BrokerUnavailable
from streams.core.registry import RegistryError
from streams.runtime.logs import Redactor, secret_values
from streams.runtime.worker import Runtime
from streams.settings import ConfigError, check_web_port, load_settings, prepare_data_dir

log = logging.getLogger("citystream.worker")


@click.command("worker")
def worker_command() -> None:
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
    try:
        settings = load_settings()
    except ConfigError as exc:  # its message never holds a setting's value
        click.echo(f"citystream worker: {exc}", err=True)
        sys.exit(2)
    redact = Redactor(secret_values(settings))
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
