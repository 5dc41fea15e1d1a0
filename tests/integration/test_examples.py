"""The integrators' examples of examples/ run against a real broker, and what lands on the topic is valid.

Each example sends single readings and batch envelopes keyed by device_id; the test reads the topic
back and judges every message as the worker does (``decode_message``: the models and the clock
limits), and by the JSON Schema files. Topics are the test's own (``--topic``/``TOPIC``), so other
tests' messages on the session broker do not mix in. The kcat example needs Debian's kcat
(`citystream local install --kcat`); without it the test fails with that hint. It runs on Apache
Kafka only: kcat 1.7.1 (librdkafka 2.0.2, Debian 12) misreads Tansu 0.6's ApiVersions v3 answer
("Protocol read buffer underflow for ApiVersion v3") and stops.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from schemas.readings import READING_MODELS, SourceKind
from streams.clients.kafka import TopicSpec, ensure_topics
from streams.core.decode import decode_message
from tests.integration.helpers import now_ms, read_topic

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCHEMAS = ROOT / "schemas" / "json"
KCAT_HINT = "kcat is not installed: run `citystream local install --kcat` (as root) or `apt-get install -y kcat`"

KINDS = {"taxi": SourceKind.TAXI, "parking": SourceKind.PARKING, "environment": SourceKind.ENVIRONMENT}


async def new_topic(bootstrap: str, kind: str) -> str:
    topic = f"examples-{kind}-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [TopicSpec(topic, 3, {})])
    return topic


def schema_validator(kind: str, document: dict[str, Any]) -> Draft202012Validator:
    name = f"{kind}-batch.schema.json" if "batch" in document else f"{kind}-reading.schema.json"
    return Draft202012Validator(json.loads((SCHEMAS / name).read_text(encoding="utf-8")))


async def landed(bootstrap: str, topic: str, kind: str, expected: int) -> dict[str, list[tuple[int, bool]]]:
    """Read the topic; check each message as the worker would judge it and by its JSON Schema.
    Returns (seq, came in a batch) per device, in the order of each partition."""
    records = await read_topic(bootstrap, topic, expected=expected, timeout=30)
    assert len(records) == expected, f"{len(records)} of {expected} messages on {topic}"
    per_device: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    for record in records:
        decoded = decode_message(READING_MODELS[KINDS[kind]], record.value, now_ms())
        assert decoded.rejections == [], (record.value[:300], decoded.rejections)
        document = json.loads(record.value)
        errors = [error.message for error in schema_validator(kind, document).iter_errors(document)]
        assert errors == [], (record.value[:300], errors)
        assert {reading.device_id for reading in decoded.readings} == {record.key.decode()}, "keyed by device_id"
        for reading in decoded.readings:
            assert reading.seq is not None
            per_device[reading.device_id].append((reading.seq, "batch" in document))
    return per_device


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("kind", KINDS)
async def test_the_python_example_lands_valid_readings_and_batches(kafka_bootstrap: str, kind: str) -> None:
    topic = await new_topic(kafka_bootstrap, kind)
    result = run(
        [
            *(sys.executable, f"examples/python/produce_{kind}.py", "--bootstrap", kafka_bootstrap, "--topic", topic),
            *("--devices", "3", "--readings", "4", "--batch-size", "5", "--validate", "--seed", "7"),
        ]
    )
    assert result.returncode == 0, result.stderr
    assert f"sent 15 messages to {topic}" in result.stdout
    per_device = await landed(kafka_bootstrap, topic, kind, expected=15)
    assert len(per_device) == 3
    for seqs in per_device.values():  # one device's messages share a partition: its order holds
        numbers = [seq for seq, _ in seqs]
        assert numbers == list(range(numbers[0], numbers[0] + 9))
        assert [in_batch for _, in_batch in seqs] == [False] * 4 + [True] * 5


@pytest.mark.parametrize("kind", KINDS)
def test_the_python_example_defaults_to_the_contract_topic(kind: str) -> None:
    result = run([sys.executable, f"examples/python/produce_{kind}.py", "--help"])
    assert result.returncode == 0, result.stderr
    assert f"default: {KINDS[kind].topic}" in result.stdout


async def test_the_python_example_sends_nothing_its_schema_refuses(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = await new_topic(kafka_bootstrap, "parking")
    strict = json.loads((SCHEMAS / "parking-reading.schema.json").read_text())
    strict["properties"]["occupied"] = {"const": "never"}  # a schema no reading meets
    shutil.copytree(SCHEMAS, tmp_path / "json")
    (tmp_path / "json" / "parking-reading.schema.json").write_text(json.dumps(strict))
    result = run(
        [
            *(sys.executable, "examples/python/produce_parking.py", "--bootstrap", kafka_bootstrap, "--topic", topic),
            *("--validate", "--schemas", str(tmp_path / "json")),
        ]
    )
    assert result.returncode != 0
    assert "occupied" in result.stderr
    assert await read_topic(kafka_bootstrap, topic, expected=1, timeout=3) == []


def kcat_env(**values: str) -> dict[str, str]:
    if shutil.which("kcat") is None:
        pytest.fail(KCAT_HINT, pytrace=False)
    return {**os.environ, **values}


@pytest.mark.parametrize("kind", KINDS)
async def test_the_kcat_example_lands_valid_readings_and_a_batch(apache_kafka: str, kind: str) -> None:
    topic = await new_topic(apache_kafka, kind)
    env = kcat_env(BOOTSTRAP=apache_kafka, TOPIC=topic, SEQ="100")
    result = run(["bash", "examples/kcat/produce.sh", kind, "--validate"], env=env)
    assert result.returncode == 0, result.stderr
    per_device = await landed(apache_kafka, topic, kind, expected=4)
    ((device, seqs),) = per_device.items()
    assert seqs == [(100, False), (101, False), (102, False), (103, True), (104, True), (105, True)], device
    assert f"sent 4 messages to {topic}, keyed {device}" in result.stdout


async def test_the_kcat_example_sends_nothing_its_schema_refuses(apache_kafka: str) -> None:
    topic = await new_topic(apache_kafka, "taxi")
    env = kcat_env(BOOTSTRAP=apache_kafka, TOPIC=topic, DEVICE="taxi 42")  # a space is not allowed
    result = run(["bash", "examples/kcat/produce.sh", "taxi", "--validate"], env=env)
    assert result.returncode == 1
    assert "device_id" in result.stderr
    assert await read_topic(apache_kafka, topic, expected=1, timeout=3) == []
