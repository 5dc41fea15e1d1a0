"""Settings from the environment and .env, and the messages a misconfiguration gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.core.registry import RegistryError, load_registry
from streams.settings import ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CITYSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_follow_the_contract() -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.influx_url == "http://127.0.0.1:8086"
    assert settings.influx_api == "v1"
    assert settings.influx_db == "city"
    assert settings.influx_org is None and settings.influx_token is None
    assert settings.registry is None
    assert settings.data_dir == Path("./var")
    assert settings.source_partitions == 12


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CITYSTREAM_INFLUX_DB=from_dotenv\nCITYSTREAM_SOURCE_PARTITIONS=4\n")
    monkeypatch.setenv("CITYSTREAM_SOURCE_PARTITIONS", "6")
    settings = load_settings()
    assert settings.influx_db == "from_dotenv"
    assert settings.source_partitions == 6  # the environment wins over .env


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CITYSTREAM_INFLUX_API", "v3", "CITYSTREAM_INFLUX_API: Input should be 'v1' or 'v2'"),
        ("CITYSTREAM_KAFKA_BOOTSTRAP", "localhost", "CITYSTREAM_KAFKA_BOOTSTRAP: expected host:port"),
        ("CITYSTREAM_INFLUX_URL", "influx:8086", "CITYSTREAM_INFLUX_URL: expected an http:// or https:// URL"),
        ("CITYSTREAM_SOURCE_PARTITIONS", "zero", "CITYSTREAM_SOURCE_PARTITIONS: Input should be a valid integer"),
        ("CITYSTREAM_REGISTRY", "/nonexistent/registry.yaml", "CITYSTREAM_REGISTRY: no registry file at"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert expected in str(info.value)


def test_v2_needs_org_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYSTREAM_INFLUX_API", "v2")
    monkeypatch.setenv("CITYSTREAM_INFLUX_ORG", "daegu")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "CITYSTREAM_INFLUX_TOKEN" in str(info.value)
    assert "CITYSTREAM_INFLUX_ORG" not in str(info.value).split("needs", 1)[1]


def test_token_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-token-value"
    monkeypatch.setenv("CITYSTREAM_INFLUX_TOKEN", secret)
    monkeypatch.setenv("CITYSTREAM_INFLUX_API", "v2")
    monkeypatch.setenv("CITYSTREAM_INFLUX_ORG", "daegu")
    settings = load_settings()
    assert secret not in repr(settings) and secret not in str(settings)
    assert settings.influx_token is not None and settings.influx_token.get_secret_value() == secret
    monkeypatch.setenv("CITYSTREAM_SOURCE_PARTITIONS", "-1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert secret not in str(info.value)


def test_registry_is_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "registry.yaml"
    good.write_text(
        "parking_lots:\n  suseong-alpha-1: {capacity: 120, district: suseong, lat: 35.8385, lon: 128.7046}\n"
        "env_stations:\n  env-jung-03: {district: jung, lat: 35.8690, lon: 128.5933}\n"
        "parking_sensors:\n  70B3D57ED005A1B2: {lot_id: suseong-alpha-1, spot_id: A-017}\n"
    )
    registry = load_registry(good)
    place = registry.sensor_place("70b3d57ed005a1b2")
    assert place is not None and (place.lot_id, place.spot_id) == ("suseong-alpha-1", "A-017")
    assert registry.sensor_place("70B3D57ED005A1B2") == place
    assert registry.sensor_place("0000000000000000") is None
    assert registry.lot_capacity("suseong-alpha-1") == 120
    assert registry.station_district("env-jung-03") == "jung"
    assert registry.station_district("env-none") is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("parking_lots:\n  lot-1: {capacity: 0}\n")
    with pytest.raises(RegistryError, match=r"parking_lots.lot-1.capacity"):
        load_registry(bad)
    not_a_dev_eui = tmp_path / "sensors.yaml"
    not_a_dev_eui.write_text("parking_sensors:\n  70b3d57e: {lot_id: lot-1, spot_id: A1}\n")
    with pytest.raises(RegistryError, match=r"parking_sensors"):
        load_registry(not_a_dev_eui)
    broken = tmp_path / "broken.yaml"
    broken.write_text("parking_lots: [\n")
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(broken)


# --- the MQTT bridge's settings ---------------------------------------------------------------------


def test_bridge_settings_defaults_and_parsing(tmp_path: Path) -> None:
    from streams.core.uplinks import DEFAULT_TOPICS, TopicSpec, UplinkFormat
    from streams.settings import load_bridge_settings

    defaults = load_bridge_settings(_env_file=None)
    assert defaults.mqtt_host_port == ("127.0.0.1", 1883) and not defaults.mqtt_tls
    assert defaults.mqtt_subscriptions() == DEFAULT_TOPICS
    assert defaults.mqtt_client_id == "citystream-bridge" and defaults.mqtt_share_group is None
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    settings = load_bridge_settings(
        _env_file=None,
        mqtt_url="mqtts://lns.example.org",
        mqtt_password_file=secret,
        mqtt_topics="contract-env:city/env/#",
        mqtt_share_group="citystream",
    )
    assert settings.mqtt_host_port == ("lns.example.org", 8883) and settings.mqtt_tls
    assert settings.mqtt_password is not None and settings.mqtt_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.mqtt_subscriptions() == (TopicSpec(UplinkFormat.CONTRACT_ENV, "city/env/#"),)
    assert load_bridge_settings(_env_file=None, mqtt_url="mqtt://[::1]:1884").mqtt_host_port == ("::1", 1884)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mqtt_url": "tcp://broker:1883"}, "CITYSTREAM_MQTT_URL: expected mqtt://host[:port]"),
        ({"mqtt_url": "mqtt://user:pw@broker"}, "CITYSTREAM_MQTT_URL: must not hold a user or password"),
        ({"mqtt_url": "mqtt://broker:0"}, "CITYSTREAM_MQTT_URL: the port"),
        ({"mqtt_topics": "application/+/device/+/event/up"}, "CITYSTREAM_MQTT_TOPICS: "),
        ({"mqtt_share_group": "a/b"}, "CITYSTREAM_MQTT_SHARE_GROUP"),
        ({"mqtt_client_id": ""}, "CITYSTREAM_MQTT_CLIENT_ID"),
        ({"mqtt_password": "x", "mqtt_password_file": __file__}, "not both"),
    ],
)
def test_wrong_bridge_settings(overrides: dict[str, object], message: str) -> None:
    from streams.settings import load_bridge_settings

    with pytest.raises(ConfigError) as excinfo:
        load_bridge_settings(_env_file=None, **overrides)
    assert message in str(excinfo.value)
    assert "pw" not in str(excinfo.value).replace("password", "")


def test_the_worker_settings_know_no_mqtt() -> None:
    assert not any(name.startswith("mqtt_") for name in Settings.model_fields)
