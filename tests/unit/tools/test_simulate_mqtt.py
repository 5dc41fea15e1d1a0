"""``simulate --parking-via mqtt``: a simulated parking reading as a ChirpStack uplink maps back to itself."""

from __future__ import annotations

import orjson
import pytest

from streams.core.registry import Registry
from streams.core.uplinks import DEFAULT_TOPICS, Mapped, UplinkFormat, format_of, map_message
from streams.tools.simulate.mqtt import chirpstack_uplink, dev_eui_of

READING = {
    "device_id": "pk-suseong-alpha-1-A017",
    "ts": "2026-11-21T19:00:01.250+09:00",
    "seq": 4711,
    "lot_id": "suseong-alpha-1",
    "spot_id": "A017",
    "occupied": True,
    "kind": "heartbeat",
    "battery_v": 3.41,
    "rssi_dbm": -97.0,
    "snr_db": 4.5,
}


@pytest.mark.parametrize("ts", [READING["ts"], 1_795_255_201_250])
def test_a_simulated_uplink_maps_back_to_its_reading(ts: object) -> None:
    topic, payload = chirpstack_uplink({**READING, "ts": ts})
    assert format_of(topic, DEFAULT_TOPICS) is UplinkFormat.CHIRPSTACK
    result = map_message(UplinkFormat.CHIRPSTACK, payload, Registry())
    assert isinstance(result, Mapped)
    reading = orjson.loads(result.value)
    assert reading == {
        **READING,
        "device_id": dev_eui_of(READING["device_id"]),
        "ts": "2026-11-21T10:00:01.250Z",
    }


def test_dev_euis_are_stable_and_distinct() -> None:
    assert dev_eui_of("pk-1") == dev_eui_of("pk-1") != dev_eui_of("pk-2")
    assert len(dev_eui_of("pk-1")) == 16 and int(dev_eui_of("pk-1"), 16) >= 0
