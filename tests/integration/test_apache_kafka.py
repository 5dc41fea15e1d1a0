"""Apache Kafka itself (KRaft, from Maven Central's jars) as the local stack's broker: one node, and a
three-node cluster that loses a node.

What Tansu does differently is tested here against the real broker: DescribeConfigs answers the
topic's settings (``retention.ms``), consumer groups commit and resume, and a replicated topic
survives a broker's crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from streams.clients.kafka import (
    DEADLETTER_MAX_MESSAGE_BYTES,
    DEADLETTER_TOPIC,
    SOURCE_MAX_MESSAGE_BYTES,
    TopicSpec,
    contract_topics,
    ensure_topics,
    partition_counts,
)
from streams.tools.localstack import (
    KAFKA_VERSION,
    InstallError,
    KafkaCluster,
    MissingBinaryError,
    apache_kafka,
    fetch_kafka,
    free_port,
    install_kafka,
    kafka_answers,
    local_down,
)
from streams.tools.localstack.kafka import CACHE_ENV, metadata_brokers

pytestmark = pytest.mark.integration


def _unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def _topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    async with _admin(bootstrap) as admin:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    answer: dict[str, Any] = responses[0].to_object()
    (resource,) = answer["resources"]
    assert resource["error_code"] == 0, resource
    return {entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]}


async def _partitions(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    async with _admin(bootstrap) as admin:
        (described,) = await admin.describe_topics([topic])
    return sorted(described["partitions"], key=lambda p: p["partition"])


async def _produce(bootstrap: str, topic: str, values: list[bytes], **options: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **options)
    await producer.start()
    try:
        sends = [await producer.send(topic, value, key=value) for value in values]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _consume(
    bootstrap: str, topic: str, count: int, *, group_id: str | None = None, **options: Any
) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **options,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while len(values) < count:
                batches = await consumer.getmany(timeout_ms=500)
                values += [m.value for messages in batches.values() for m in messages if m.value is not None]
        if group_id is not None:
            await consumer.commit()
    finally:
        await consumer.stop()
    return values


# ----------------------------------------------------------------------------- install, the CLI


def test_missing_java_names_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MissingBinaryError, match=r"`openjdk-17-jre-headless`.*citystream local install --kafka"):
        apache_kafka(free_port(), tmp_path / "kafka").start()


def test_missing_maven_names_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = shutil.which("java")
    assert java is not None
    (tmp_path / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "empty-cache"))
    with pytest.raises(MissingBinaryError, match=r"`maven` package.*citystream local install --kafka"):
        fetch_kafka()


def test_install_without_root_prints_the_sudo_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_apt = tmp_path / "apt-get"
    fake_apt.write_text("#!/bin/sh\nexit 99\n")
    fake_apt.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))  # java and mvn are "missing"
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(InstallError, match="sudo apt-get install -y openjdk-17-jre-headless maven"):
        install_kafka()


def test_the_cached_jars_are_used_without_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jars = fetch_kafka()  # fetched once (by `citystream local install --kafka`, or here)
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn, no java: not needed for a cached version
    assert fetch_kafka() == jars
    assert (jars / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.tools.localstack", *args],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_local_up_with_the_kafka_broker_keeps_topics_across_down_and_up(tmp_path: Path) -> None:
    # first in the file: it runs before the session's broker and cluster start
    folder = tmp_path / "local"
    kafka_port, influx_port = free_port(), free_port()
    up_args = ["up", "--dir", str(folder), "--broker", "kafka", "--kafka-port", str(kafka_port)]
    up_args += ["--influx-port", str(influx_port)]
    bootstrap = f"127.0.0.1:{kafka_port}"
    topic = _unique("local.kept")
    try:
        up = _cli(*up_args)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"Kafka (Apache Kafka {KAFKA_VERSION})  {bootstrap}" in up.stdout
        assert f"CITYSTREAM_KAFKA_BOOTSTRAP={bootstrap}" in up.stdout
        assert kafka_answers("127.0.0.1", kafka_port)

        status = _cli("status", "--dir", str(folder))
        assert status.returncode == 0, status.stderr
        assert re.search(rf"^kafka\s+\d+\s+{bootstrap}\s+running, answering$", status.stdout, re.MULTILINE)

        tansu_instead = _cli("up", "--dir", str(folder), "--kafka-port", str(kafka_port))
        assert tansu_instead.returncode == 1
        assert f"as Apache Kafka {KAFKA_VERSION}" in tansu_instead.stderr and "local down" in tansu_instead.stderr

        asyncio.run(ensure_topics(bootstrap, [TopicSpec(topic, 2, {})]))
        down = _cli("down", "--dir", str(folder))
        assert down.returncode == 0, down.stderr
        assert down.stdout.splitlines() == ["kafka: stopped", "influxdb: stopped"]
        assert not kafka_answers("127.0.0.1", kafka_port)

        again = _cli(*up_args)
        assert again.returncode == 0, again.stdout + again.stderr
        # unlike Tansu, Apache Kafka keeps its topics under --dir
        assert asyncio.run(partition_counts(bootstrap, [topic])) == {topic: 2}
    finally:
        local_down(folder)
    assert not kafka_answers("127.0.0.1", kafka_port)


# ----------------------------------------------------------------------------- one node


async def test_the_contract_topics_are_created_with_ensure_topics(apache_kafka: str) -> None:
    topics = contract_topics(3)
    created = await ensure_topics(apache_kafka, topics)
    assert sorted(created) == sorted(t.name for t in topics)
    assert await ensure_topics(apache_kafka, topics) == []  # idempotent
    counts = await partition_counts(apache_kafka, [t.name for t in topics])
    assert counts == {t.name: 3 for t in topics}


async def test_describe_configs_answers_the_topic_settings(apache_kafka: str) -> None:
    await ensure_topics(apache_kafka, contract_topics(3))
    deadletters = await _topic_configs(apache_kafka, DEADLETTER_TOPIC)
    # what Tansu answers empty, and what Quix Streams' windows need
    assert deadletters["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert deadletters["cleanup.policy"] == "delete"
    assert deadletters["max.message.bytes"] == str(DEADLETTER_MAX_MESSAGE_BYTES)  # set by ensure_topics
    assert deadletters["min.insync.replicas"] == "1"
    # a valid 1 MiB message with its key, and a too_large one, fit a source topic (the default does not)
    sources = await _topic_configs(apache_kafka, "city.env.v1")
    assert sources["max.message.bytes"] == str(SOURCE_MAX_MESSAGE_BYTES)


async def test_a_message_round_trips(apache_kafka: str) -> None:
    topic = _unique("kafka.roundtrip")
    await ensure_topics(apache_kafka, [TopicSpec(topic, 2, {})])
    values = [f'{{"device_id": "env-{i}"}}'.encode() for i in range(20)]
    await _produce(apache_kafka, topic, values, acks="all")
    assert sorted(await _consume(apache_kafka, topic, len(values))) == sorted(values)


async def test_a_consumer_group_commits_and_resumes(apache_kafka: str) -> None:
    topic = _unique("kafka.group")
    group = _unique("citystream-test")
    await ensure_topics(apache_kafka, [TopicSpec(topic, 2, {})])
    first = [f"first-{i}".encode() for i in range(10)]
    await _produce(apache_kafka, topic, first)
    assert sorted(await _consume(apache_kafka, topic, len(first), group_id=group)) == sorted(first)

    async with _admin(apache_kafka) as admin:
        committed = await admin.list_consumer_group_offsets(group)
    assert sum(meta.offset for meta in committed.values()) == len(first)
    assert set(committed) == {TopicPartition(topic, 0), TopicPartition(topic, 1)}

    later = [f"later-{i}".encode() for i in range(5)]
    await _produce(apache_kafka, topic, later)
    # the same group resumes after its committed offsets: only the later messages
    resumed = await _consume(apache_kafka, topic, len(later), group_id=group)
    assert sorted(resumed) == sorted(later)


# ----------------------------------------------------------------------------- three nodes


async def _wait_for_isr(bootstrap: str, topic: str, size: int, timeout: float = 45.0) -> list[dict[str, Any]]:
    """Poll the topic's metadata until every partition's ISR has ``size`` replicas.

    Until the controller fences a killed broker (after ``broker.session.timeout.ms``) the metadata
    still names it, and a client may pick it: such an attempt fails and is repeated.
    """
    deadline = time.monotonic() + timeout
    while True:
        partitions: list[dict[str, Any]] = []
        with contextlib.suppress(KafkaError):
            partitions = await _partitions(bootstrap, topic)
        if partitions and all(len(p["isr"]) == size for p in partitions):
            return partitions
        if time.monotonic() > deadline:
            raise AssertionError(f"the ISRs of {topic} did not reach {size} replicas: {partitions}")
        await asyncio.sleep(0.5)


async def test_the_cluster_keeps_accepting_acks_all_writes_with_a_node_killed(kafka_cluster: KafkaCluster) -> None:
    bootstrap = kafka_cluster.bootstrap
    topic = _unique("kafka.replicated")
    await ensure_topics(bootstrap, [TopicSpec(topic, 3, {})], replication=3)
    assert (await _topic_configs(bootstrap, topic))["min.insync.replicas"] == "2"  # the cluster's default
    partitions = await _wait_for_isr(bootstrap, topic, 3)
    assert all(len(p["replicas"]) == 3 for p in partitions)

    before = [f"before-{i}".encode() for i in range(50)]
    await _produce(bootstrap, topic, before, acks="all")

    victim = kafka_cluster.node(partitions[0]["leader"])  # the leader of partition 0
    assert victim.kill() is True
    assert not kafka_answers(victim.host, victim.port)

    during = [f"during-{i}".encode() for i in range(50)]
    await _produce(bootstrap, topic, during, acks="all", request_timeout_ms=30000)

    survivors = ",".join(node.address for node in kafka_cluster.nodes if node is not victim)
    victim_id = kafka_cluster.nodes.index(victim) + 1
    for partition in await _wait_for_isr(survivors, topic, 2):
        assert victim_id not in partition["isr"]
        assert partition["leader"] != victim_id
    values = await _consume(survivors, topic, len(before) + len(during))
    assert sorted(values) == sorted(before + during)  # nothing acknowledged was lost


async def test_a_killed_node_rejoins_after_start(kafka_cluster: KafkaCluster) -> None:
    bootstrap = kafka_cluster.bootstrap
    topic = _unique("kafka.rejoin")
    await ensure_topics(bootstrap, [TopicSpec(topic, 3, {})], replication=3)
    await _wait_for_isr(bootstrap, topic, 3)
    node = kafka_cluster.node(3)
    node.kill()
    survivors = ",".join(n.address for n in kafka_cluster.nodes if n is not node)
    await _wait_for_isr(survivors, topic, 2)
    missed = [f"missed-{i}".encode() for i in range(30)]
    await _produce(survivors, topic, missed, acks="all", request_timeout_ms=30000)

    node.start()  # returns once the broker is unfenced and lists itself
    assert node.is_answering()
    brokers = metadata_brokers(node.host, node.port)
    assert brokers is not None and sorted(brokers) == [1, 2, 3]
    # it caught up with what it missed and is back in every ISR
    for partition in await _wait_for_isr(bootstrap, topic, 3):
        assert 3 in partition["isr"]
    assert sorted(await _consume(bootstrap, topic, len(missed))) == sorted(missed)
