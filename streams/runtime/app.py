"""Builds the Faust app from the settings. Nothing else: agents are attached by :mod:`streams.runtime.worker`."""

from __future__ import annotations

import faust
from faust.types.auth import CredentialsT

from streams.clients.kafka import DEADLETTER_MAX_MESSAGE_BYTES
from streams.runtime.faust_adapter import BatchApp, pace_metadata_retries
from streams.settings import Settings, kafka_ssl_context


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's form of the Kafka security settings (the same as :func:`streams.settings.kafka_client_kwargs`).

    Faust hands them to every aiokafka client it makes: ``SASLCredentials`` becomes SASL_SSL when
    given a TLS context, else SASL_PLAINTEXT, with the mechanism (PLAIN, SCRAM-SHA-256/512) as is.
    """
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    assert settings.kafka_sasl_password is not None  # the settings check it
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


def build_app(settings: Settings) -> BatchApp:
    pace_metadata_retries()  # no busy loop of the Kafka clients while no broker answers
    return BatchApp(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        autodiscover=False,
        datadir=str(settings.data_dir / "faust"),
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        topic_partitions=settings.source_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        # offsets are committed once the points of their messages are stored, so commit often
        broker_commit_interval=1.0,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
        # a revoked partition's unwritten messages are read again by its next owner: do not block
        # a rebalance on them while InfluxDB is down
        stream_wait_empty=False,
        producer_max_request_size=DEADLETTER_MAX_MESSAGE_BYTES,
        producer_acks=-1,
        producer_linger_ms=5,
        consumer_max_fetch_size=256 * 1024,
    )
