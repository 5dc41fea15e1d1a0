"""The bridge's /metrics families and /readyz verdict, from its counters."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.bridge.service import BridgeStats
from streams.bridge.web import bridge_registry, readiness


def samples(stats: BridgeStats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(bridge_registry(stats)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_follow_the_counters() -> None:
    stats = BridgeStats()
    stats.uplinks.update({"chirpstack": 5, "tts": 2})
    stats.readings["city.parking.v1"] += 6
    stats.dead_letters["unmappable"] += 1
    stats.mqtt_connects, stats.mqtt_errors, stats.kafka_errors = 2, 1, 0
    stats.mqtt_connected, stats.in_flight = True, 3
    found = samples(stats)
    assert found[("citystream_bridge_uplinks_total", (("format", "chirpstack"),))] == 5
    assert found[("citystream_bridge_uplinks_total", (("format", "tts"),))] == 2
    assert found[("citystream_bridge_readings_total", (("topic", "city.parking.v1"),))] == 6
    assert found[("citystream_bridge_dead_letters_total", (("reason", "unmappable"),))] == 1
    assert found[("citystream_bridge_mqtt_connects_total", ())] == 2
    assert found[("citystream_bridge_mqtt_errors_total", ())] == 1
    assert found[("citystream_bridge_kafka_errors_total", ())] == 0
    assert found[("citystream_bridge_mqtt_connected", ())] == 1
    assert found[("citystream_bridge_in_flight", ())] == 3


def test_ready_only_when_connected_to_both() -> None:
    stats = BridgeStats()
    ready, body = readiness(stats)
    assert not ready and set(body["failed"]) == {"kafka", "mqtt"}  # type: ignore[arg-type]
    stats.kafka_started = True
    stats.mqtt_problem = "MqttError: [Errno 111] Connection refused"
    ready, body = readiness(stats)
    assert not ready and body["failed"] == {"mqtt": "MqttError: [Errno 111] Connection refused"}
    stats.mqtt_connected = True
    assert readiness(stats) == (True, {"ready": True, "failed": {}})
