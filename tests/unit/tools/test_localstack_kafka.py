"""The pure parts of the local Apache Kafka service (no JVM started)."""

from __future__ import annotations

import uuid

import pytest

from streams.tools.localstack import kafka


def test_a_new_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xF8 encodes to "-" in URL-safe base64: Kafka's storage tool would take such an id for an option
    ids = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(ids))
    assert kafka.new_cluster_id() == "AQEBAQEBAQEBAQEBAQEBAQ"


def test_new_cluster_ids_are_22_url_safe_characters() -> None:
    for _ in range(200):
        value = kafka.new_cluster_id()
        assert len(value) == 22 and not value.startswith("-")
        assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
