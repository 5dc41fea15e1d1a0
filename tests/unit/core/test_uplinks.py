"""The MQTT bridge's mapping: ChirpStack v4 and The Things Stack v3 uplinks to parking readings,
contract messages passed through, and what is unmappable (schemas/CONTRACT.md section 9)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from schemas.deadletter import DeadLetterReason
from schemas.readings import ParkingReading
from streams.core.decode import MAX_MESSAGE_BYTES, MAX_PAYLOAD_BYTES, BridgeSource, Rejection, dead_letter
from streams.core.registry import Registry
from streams.core.uplinks import (
    DEFAULT_TOPICS,
    Mapped,
    TopicSpec,
    UplinkFormat,
    format_of,
    map_message,
    parse_topics,
    subscription,
    topic_matches,
)

# A ChirpStack v4 uplink event as its MQTT integration publishes it (JSON encoding), on
# application/17c82e96-be03-4f38-aef3-f83d48582d97/device/70b3d57ed005a1b2/event/up
CHIRPSTACK_UP: dict[str, Any] = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2026-11-21T10:00:01.823500726+00:00",
    "deviceInfo": {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        "tenantName": "ChirpStack",
        "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
        "applicationName": "parking",
        "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
        "deviceProfileName": "spot sensor",
        "deviceName": "suseong-alpha-1 A-017",
        "devEui": "70B3D57ED005A1B2",
        "tags": {},
    },
    "devAddr": "00189440",
    "adr": True,
    "dr": 5,
    "fCnt": 4217,
    "fPort": 2,
    "confirmed": False,
    "data": "AQ4Q",
    "object": {"occupied": True, "battery_v": 3.58},
    "rxInfo": [
        {
            "gatewayId": "0016c001f153a14c",
            "uplinkId": 4217106255,
            "rssi": -112,
            "snr": -4.5,
            "channel": 2,
            "location": {},
            "context": "E3OWOQ==",
            "metadata": {"region_config_id": "kr920", "region_common_name": "KR920"},
            "crcStatus": "CRC_OK",
        },
        {
            "gatewayId": "0016c001f153a14d",
            "uplinkId": 1174535013,
            "rssi": -87,
            "snr": 7.25,
            "channel": 2,
            "location": {},
            "context": "E3OWQQ==",
            "metadata": {"region_config_id": "kr920", "region_common_name": "KR920"},
            "crcStatus": "CRC_OK",
        },
    ],
    "txInfo": {
        "frequency": 922100000,
        "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}},
    },
}

# The Things Stack v3 uplink message on v3/parking-daegu@ttn/devices/spot-a-018/up
TTS_UP: dict[str, Any] = {
    "end_device_ids": {
        "device_id": "spot-a-018",
        "application_ids": {"application_id": "parking-daegu"},
        "dev_eui": "70B3D57ED005A1B3",
        "join_eui": "0000000000000000",
        "dev_addr": "260B1F2C",
    },
    "correlation_ids": ["as:up:01JD2QH6T4X1B1Q4T0B3M0E9PZ", "rpc:/ttn.lorawan.v3.AppAs/SimulateUplink:2b1c"],
    "received_at": "2026-11-21T10:00:02.512345678Z",
    "uplink_message": {
        "session_key_id": "AZNkX3bRbDq7t7Ckq6w+Aw==",
        "f_port": 2,
        "f_cnt": 88,
        "frm_payload": "AA4Q",
        "decoded_payload": {"occupied": False, "battery_v": 3.41, "kind": "heartbeat"},
        "rx_metadata": [
            {
                "gateway_ids": {"gateway_id": "daegu-gw-01", "eui": "B827EBFFFE8B01DD"},
                "time": "2026-11-21T10:00:02.301Z",
                "timestamp": 2463457000,
                "rssi": -96,
                "channel_rssi": -96,
                "snr": 9.5,
                "uplink_token": "ChkKFwoLZGFlZ3UtZ3ctMDESCLgn6//+iwHdEOjN3ZcJGgwI",
                "channel_index": 3,
                "received_at": "2026-11-21T10:00:02.307Z",
            }
        ],
        "settings": {
            "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 9, "coding_rate": "4/5"}},
            "frequency": "922500000",
            "timestamp": 2463457000,
        },
        "received_at": "2026-11-21T10:00:02.308974912Z",
        "consumed_airtime": "0.185344s",
        "network_ids": {"net_id": "000013", "tenant_id": "ttn", "cluster_id": "eu1", "cluster_address": "eu1.cloud"},
    },
}

REGISTRY = Registry.model_validate(
    {"parking_sensors": {"70b3d57ed005a1b2": {"lot_id": "suseong-alpha-1", "spot_id": "A-017"}}}
)


def with_changes(document: dict[str, Any], *changes: tuple[tuple[str, ...], Any]) -> bytes:
    """``document`` as JSON with each (path, value) set, or removed when value is ``...``."""
    changed = copy.deepcopy(document)
    for path, value in changes:
        node = changed
        for part in path[:-1]:
            node = node[part]
        if value is ...:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return orjson.dumps(changed)


def mapped(uplink_format: UplinkFormat, value: bytes, registry: Registry = REGISTRY) -> dict[str, Any]:
    result = map_message(uplink_format, value, registry)
    assert isinstance(result, Mapped), result
    assert result.topic == "city.parking.v1"
    reading = orjson.loads(result.value)
    assert result.key == reading["device_id"].encode()
    ParkingReading.model_validate(reading)  # what the worker will judge: a valid contract reading
    return dict(reading)


CS, TTS = UplinkFormat.CHIRPSTACK, UplinkFormat.TTS


@pytest.mark.parametrize(
    ("uplink_format", "value", "expected"),
    [
        pytest.param(
            CS,
            orjson.dumps(CHIRPSTACK_UP),
            {
                "device_id": "70b3d57ed005a1b2",
                "ts": "2026-11-21T10:00:01.823Z",
                "seq": 4217,
                "lot_id": "suseong-alpha-1",
                "spot_id": "A-017",
                "occupied": True,
                "kind": "change",
                "battery_v": 3.58,
                "rssi_dbm": -87.0,
                "snr_db": 7.25,
            },
            id="chirpstack: registry place, strongest of two gateways",
        ),
        pytest.param(
            TTS,
            orjson.dumps(TTS_UP),
            {
                "device_id": "70b3d57ed005a1b3",
                "ts": "2026-11-21T10:00:02.308Z",
                "seq": 88,
                "lot_id": "dongdaegu-station-p2",
                "spot_id": "B-101",
                "occupied": False,
                "kind": "heartbeat",
                "battery_v": 3.41,
                "rssi_dbm": -96.0,
                "snr_db": 9.5,
            },
            id="tts: place from the payload, heartbeat, the network server's time",
        ),
    ],
)
def test_uplinks_become_parking_readings(uplink_format: UplinkFormat, value: bytes, expected: dict[str, Any]) -> None:
    if uplink_format is TTS:  # not in the registry: the decoded payload names its place
        value = with_changes(
            orjson.loads(value),
            (("uplink_message", "decoded_payload", "lot_id"), "dongdaegu-station-p2"),
            (("uplink_message", "decoded_payload", "spot_id"), "B-101"),
        )
    assert mapped(uplink_format, value) == expected


@pytest.mark.parametrize(
    ("uplink_format", "changes", "field", "expected"),
    [
        # protobuf's JSON leaves out zero values: a first uplink has no fCnt
        (CS, [(("fCnt",), ...)], "seq", 0),
        (TTS, [(("uplink_message", "f_cnt"), ...)], "seq", 0),
        # the registry wins over the payload's place
        (CS, [(("object", "lot_id"), "elsewhere"), (("object", "spot_id"), "X")], "lot_id", "suseong-alpha-1"),
        # occupied as 0/1, as small codecs write it
        (CS, [(("object", "occupied"), 0)], "occupied", False),
        (CS, [(("object", "heartbeat"), True)], "kind", "heartbeat"),
        (CS, [(("object", "kind"), "change")], "kind", "change"),
        # a gateway without rssi does not count; no gateway at all: no rssi_dbm, snr_db
        (
            CS,
            [(("rxInfo",), [{"gatewayId": "a", "snr": 3.0}, {"gatewayId": "b", "rssi": -120, "snr": -7}])],
            "rssi_dbm",
            -120.0,
        ),
        (CS, [(("rxInfo",), ...)], "rssi_dbm", None),
        (CS, [(("rxInfo",), [{"rssi": -90, "snr": 1.0}, {"rssi": -90, "snr": 4.0}])], "snr_db", 4.0),
        # TTS: channel_rssi where rssi is missing; top-level received_at when uplink_message has none
        (TTS, [(("uplink_message", "rx_metadata", 0, "rssi"), ...)], "rssi_dbm", -96.0),
        (TTS, [(("uplink_message", "received_at"), ...)], "ts", "2026-11-21T10:00:02.512Z"),
        (CS, [(("object", "battery_v"), ...)], "battery_v", None),
        (CS, [(("time",), "2026-11-21T19:00:01+09:00")], "ts", "2026-11-21T10:00:01.000Z"),
    ],
)
def test_mapping_details(
    uplink_format: UplinkFormat, changes: list[tuple[tuple[Any, ...], Any]], field: str, expected: Any
) -> None:
    base = copy.deepcopy(CHIRPSTACK_UP if uplink_format is CS else TTS_UP)
    if uplink_format is TTS:
        base["uplink_message"]["decoded_payload"].update(lot_id="dongdaegu-station-p2", spot_id="B-101")
    reading = mapped(uplink_format, with_changes(base, *changes))
    assert reading.get(field) == expected


@pytest.mark.parametrize(
    ("uplink_format", "value", "why"),
    [
        (CS, with_changes(CHIRPSTACK_UP, (("object",), ...)), "no decoded payload"),
        (CS, with_changes(CHIRPSTACK_UP, (("object",), {})), "no decoded payload"),
        (TTS, with_changes(TTS_UP, (("uplink_message", "decoded_payload"), ...)), "no decoded payload"),
        (TTS, orjson.dumps(TTS_UP), "not in the registry's parking_sensors"),  # and no lot in the payload
        (CS, with_changes(CHIRPSTACK_UP, (("deviceInfo", "devEui"), "0000000000000001")), "not in the registry"),
        (CS, b"\x01\x0e\x10", "not JSON"),
        (CS, b"not json at all", "not JSON"),
        (CS, b"[1, 2]", "not an object"),
        (CS, orjson.dumps(TTS_UP), "no deviceInfo"),  # a TTS uplink on a ChirpStack topic
        (TTS, orjson.dumps(CHIRPSTACK_UP), "no end_device_ids"),
        (CS, with_changes(CHIRPSTACK_UP, (("deviceInfo", "devEui"), "70b3d57e")), "not a DevEUI"),
        (CS, with_changes(CHIRPSTACK_UP, (("time",), ...)), "no time"),
        (CS, with_changes(CHIRPSTACK_UP, (("time",), "2026-11-21 10:00")), "not an RFC 3339"),
        (CS, with_changes(CHIRPSTACK_UP, (("fCnt",), -1)), "not a frame counter"),
        (CS, with_changes(CHIRPSTACK_UP, (("fCnt",), "12")), "not a frame counter"),
        (CS, with_changes(CHIRPSTACK_UP, (("object", "occupied"), ...)), "no occupied"),
        (CS, with_changes(CHIRPSTACK_UP, (("object", "occupied"), "yes")), "no occupied"),
        (CS, with_changes(CHIRPSTACK_UP, (("object", "occupied"), 2)), "no occupied"),
        (UplinkFormat.CONTRACT_PARKING, b"{nope", "not JSON"),
    ],
)
def test_unmappable_uplinks(uplink_format: UplinkFormat, value: bytes, why: str) -> None:
    result = map_message(uplink_format, value, REGISTRY)
    assert isinstance(result, Rejection), result
    assert result.reason is DeadLetterReason.UNMAPPABLE
    assert why in result.errors[0].msg
    assert result.errors[0].type == "unmappable"
    original = result.payload.text if result.payload.text is not None else result.payload.b64
    assert original is not None  # the original bytes are kept


def test_unmappable_dead_letter_has_mqtt_source_and_original_bytes() -> None:
    value = b"\xff\x00 binary uplink"
    rejection = map_message(CS, value, REGISTRY)
    assert isinstance(rejection, Rejection)
    topic = "application/17c8/device/70b3d57ed005a1b2/event/up"
    letter = dead_letter(BridgeSource(f"mqtt:{topic}", None, 1_795_255_200_000), rejection, 1_795_255_200_500)
    document = orjson.loads(letter.model_dump_json())
    assert document["source"] == {
        "topic": f"mqtt:{topic}",
        "partition": None,
        "offset": None,
        "key": None,
        "timestamp_ms": 1_795_255_200_000,
    }
    assert document["reason"] == "unmappable"
    assert document["payload"] is None and document["payload_b64"] == "/wAgYmluYXJ5IHVwbGluaw=="


def test_a_huge_uplink_is_cut_in_its_dead_letter() -> None:
    value = b'{"x": "' + b"a" * (MAX_MESSAGE_BYTES + 10) + b'"}'
    rejection = map_message(CS, value, REGISTRY)
    assert isinstance(rejection, Rejection)
    assert rejection.payload.truncated and rejection.payload.original_bytes == len(value)
    assert rejection.payload.text is not None and len(rejection.payload.text.encode()) <= MAX_PAYLOAD_BYTES


@pytest.mark.parametrize(
    ("uplink_format", "value", "topic", "key"),
    [
        (UplinkFormat.CONTRACT_PARKING, b'{"device_id":"pk-1","ts":1}', "city.parking.v1", b"pk-1"),
        (UplinkFormat.CONTRACT_ENV, b'{"device_id":"env-1","ts":1,"pm25_ugm3":3}', "city.env.v1", b"env-1"),
        (UplinkFormat.CONTRACT_TAXI, b'{"batch":[{"device_id":"taxi-1"}]}', "city.taxi.adas.v1", None),
        # not judged here: the worker dead-letters a wrong reading with its Kafka coordinates
        (UplinkFormat.CONTRACT_PARKING, b'{"device_id": 5}', "city.parking.v1", None),
    ],
)
def test_contract_messages_pass_through(
    uplink_format: UplinkFormat, value: bytes, topic: str, key: bytes | None
) -> None:
    assert map_message(uplink_format, value, REGISTRY) == Mapped(topic, key, value)


def test_topics_setting() -> None:
    assert parse_topics("") == DEFAULT_TOPICS
    assert parse_topics(" chirpstack:application/+/device/+/event/up , contract-parking:city/parking/#") == (
        TopicSpec(UplinkFormat.CHIRPSTACK, "application/+/device/+/event/up"),
        TopicSpec(UplinkFormat.CONTRACT_PARKING, "city/parking/#"),
    )
    assert str(DEFAULT_TOPICS[1]) == "tts:v3/+/devices/+/up"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("application/+/device/+/event/up", "names no format"),
        ("loriot:up/#", "unknown format"),
        ("tts:", "empty"),
        ("tts:v3/#/up", "# stands alone"),
        ("tts:v3/a+/up", "+ stands alone"),
        ("tts:$share/g/v3/+/devices/+/up", "CITYSTREAM_MQTT_SHARE_GROUP"),
        ("tts:a/#,chirpstack:a/#", "twice"),
    ],
)
def test_wrong_topics_settings(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("+", r"\+").replace("$", r"\$")):
        parse_topics(text)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("application/+/device/+/event/up", "application/17c8/device/70b3d57ed005a1b2/event/up", True),
        ("application/+/device/+/event/up", "application/17c8/device/70b3d57ed005a1b2/event/join", False),
        ("v3/+/devices/+/up", "v3/parking@ttn/devices/spot-1/up", True),
        ("v3/+/devices/+/up", "v3/parking@ttn/devices/spot-1/up/extra", False),
        ("city/parking/#", "city/parking", True),
        ("city/parking/#", "city/parking/lot/7", True),
        ("#", "$SYS/broker/uptime", False),
        ("a/+", "a/", True),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches


def test_format_of_and_shared_subscriptions() -> None:
    specs = parse_topics("tts:v3/+/devices/+/up,contract-env:city/#")
    assert format_of("v3/a@ttn/devices/d/up", specs) is UplinkFormat.TTS
    assert format_of("city/env/station-1", specs) is UplinkFormat.CONTRACT_ENV
    assert format_of("other", specs) is None
    assert subscription(specs[0], None) == "v3/+/devices/+/up"
    assert subscription(specs[0], "citystream") == "$share/citystream/v3/+/devices/+/up"
