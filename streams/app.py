"""Builds the Faust app from the settings. Nothing else: agents are attached by :mod:`streams.worker`."""

from __future__ import annotations

import faust

from streams.settings import Settings
from streams.topics import DEADLETTER_MAX_MESSAGE_BYTES


def build_app(settings: Settings) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers],
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
    )
