"""Invalid messages on purpose: one kind per dead-letter reason of the contract (schemas/CONTRACT.md section 4).

The limits they are built against are the worker's own (:mod:`streams.core.decode`), and the reasons
are those of :class:`schemas.deadletter.DeadLetterReason`.
"""

from __future__ import annotations

import random
from typing import Any, Final, Literal, cast

from schemas.codec import dumps
from schemas.deadletter import DeadLetterReason
from schemas.readings import ENV_MEASUREMENTS, SourceKind
from streams.core.decode import MAX_BATCH_READINGS, MAX_MESSAGE_BYTES
from streams.tools.simulate.clock import TsStyle, format_ts
from streams.tools.simulate.sensor import Body

FUTURE_OFFSET_MS: Final = 3_600_000  # future_timestamp messages: 1 hour ahead of the clock
STALE_OFFSET_MS: Final = 8 * 86_400_000  # stale_timestamp messages: 8 days behind the clock

# The reasons a message on a source topic is sent invalid for: every DeadLetterReason but
# processing_error (the worker's failure, not the message's) and unmappable (a gateway bridge's,
# for MQTT uplinks), as the plain strings the report counts them by. The
# Literal lets mypy check InvalidFactory's branches; tests/unit/tools/test_simulate.py checks it
# names the same reasons as the enum.
IntendedReason = Literal[
    "not_utf8",
    "malformed_json",
    "not_an_object",
    "too_large",
    "bad_batch",
    "schema",
    "future_timestamp",
    "stale_timestamp",
]
NOT_FROM_A_MESSAGE: Final = frozenset({DeadLetterReason.PROCESSING_ERROR, DeadLetterReason.UNMAPPABLE})
MESSAGE_REASONS: Final[tuple[IntendedReason, ...]] = tuple(
    cast(IntendedReason, reason.value) for reason in DeadLetterReason if reason not in NOT_FROM_A_MESSAGE
)
# what one element of an otherwise valid batch can be wrong about
ELEMENT_REASONS: Final[tuple[IntendedReason, ...]] = (
    "schema",
    "future_timestamp",
    "stale_timestamp",
    "not_an_object",
)

# a reading of each kind, for an invalid message sent before the city sent one of that kind
READING_TEMPLATES: Final[dict[SourceKind, Body]] = {
    SourceKind.TAXI: {
        "device_id": "taxi-0042",
        "lat": 35.8714,
        "lon": 128.6014,
        "speed_kmh": 42.0,
        "heading_deg": 90.0,
        "event": "NONE",
    },
    SourceKind.PARKING: {
        "device_id": "pk-dongseongro-lot-1-A001",
        "lot_id": "dongseongro-lot-1",
        "spot_id": "A001",
        "occupied": True,
        "kind": "change",
        "battery_v": 3.4,
        "rssi_dbm": -98.0,
        "snr_db": 4.5,
    },
    SourceKind.ENVIRONMENT: {
        "device_id": "env-jung-01",
        "district": "jung",
        "pm25_ugm3": 21.0,
        "pm10_ugm3": 38.0,
        "temp_c": 9.5,
    },
}

# (field, bad value) pairs that break one rule of a reading; None as value: drop the field
_SCHEMA_BREAKS: Final[dict[SourceKind, tuple[tuple[str, Any], ...]]] = {
    SourceKind.TAXI: (
        ("lat", None),
        ("speed_kmh", "42.5"),
        ("speed_kmh", 412.0),
        ("heading_deg", 360.0),
        ("event", "BRAKE"),
        ("lat", 95.2),
        ("device_id", "taxi 0042"),
        ("headway_s", -0.4),
        ("ttc_s", 12.5),
        ("lon", None),
        ("ts", "2026-11-21T19:00:00"),
        ("seq", -1),
    ),
    SourceKind.PARKING: (
        ("occupied", "yes"),
        ("spot_id", None),
        ("kind", "status"),
        ("battery_v", 7.5),
        ("rssi_dbm", 12.0),
        ("lot_id", ""),
        ("occupied", None),
        ("snr_db", -45.0),
        ("ts", True),
    ),
    SourceKind.ENVIRONMENT: (
        ("pm25_ugm3", 1500.0),
        ("humidity_pct", 120.0),
        ("temp_c", "cold"),
        ("co_ppm", -1.0),
        ("district", ""),
        ("device_id", None),
        ("o3_ppm", 1.7),
        ("ts", None),
        ("*measurements", None),
    ),
}


class InvalidFactory:
    """Builds messages and batch elements the worker must dead-letter, each for one reason."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def schema_break(self, kind: SourceKind, body: Body) -> Body:
        broken = dict(body)
        broken.pop("seq", None)  # a broken reading keeps no frame counter of the device's
        name, value = self.rng.choice(_SCHEMA_BREAKS[kind])
        if name == "*measurements":
            for measurement in ENV_MEASUREMENTS:
                broken.pop(measurement, None)
        elif value is None:
            broken.pop(name, None)
        else:
            broken[name] = value
        return broken

    def retimed(self, body: Body, epoch_ms: int) -> Body:
        moved = dict(body)
        moved.pop("seq", None)
        style: TsStyle = "epoch_ms" if isinstance(body.get("ts"), int) else "kst"
        moved["ts"] = format_ts(epoch_ms, style)
        return moved

    def element(self, reason: IntendedReason, kind: SourceKind, body: Body, wall_ms: int) -> Any:
        """An invalid element of a batch."""
        if reason == "schema":
            return self.schema_break(kind, body)
        if reason == "future_timestamp":
            return self.retimed(body, wall_ms + FUTURE_OFFSET_MS)
        if reason == "stale_timestamp":
            return self.retimed(body, wall_ms - STALE_OFFSET_MS)
        if reason == "not_an_object":
            return self.rng.choice([[body.get("device_id")], 42, "reading", None, True])
        raise ValueError(f"{reason} is not a batch element's reason")

    def message(self, reason: IntendedReason, kind: SourceKind, body: Body, wall_ms: int) -> bytes:
        """A whole message value that the worker dead-letters for ``reason``."""
        rng = self.rng
        if reason == "not_utf8":
            return self._not_utf8(body)
        if reason == "malformed_json":
            text = dumps(body)
            return rng.choice(
                [
                    text[: max(len(text) // 2, 2)],  # cut off in transit
                    text[:-1] + b",}",  # trailing comma
                    repr(body).encode(),  # Python's repr, single quotes
                    b'{"batch": [' + text,  # unterminated batch
                ]
            )
        if reason == "not_an_object":
            return rng.choice([dumps([body]), b"42", dumps(body["device_id"]), b"null", b"true"])
        if reason == "too_large":
            return self._too_large(body)
        if reason == "bad_batch":
            variant = rng.randrange(4)
            if variant == 0:
                return dumps({"batch": []})
            if variant == 1:
                unnumbered = {k: v for k, v in body.items() if k != "seq"}
                return dumps({"batch": [unnumbered] * (MAX_BATCH_READINGS + 1)})
            if variant == 2:
                return dumps({"batch": body})
            return dumps({"batch": rng.choice(["readings", 7, None])})
        if reason in ("schema", "future_timestamp", "stale_timestamp"):
            return dumps(self.element(reason, kind, body, wall_ms))
        raise ValueError(f"unknown dead-letter reason {reason}")

    def _not_utf8(self, body: Body) -> bytes:
        variant = self.rng.randrange(3)
        if variant == 0:  # a Korean note in the legacy code page (EUC-KR / CP949)
            text = dumps({**body, "note": "대구 중구"}).decode()
            return text.encode("cp949")
        if variant == 1:  # UTF-16 with a byte-order mark
            return dumps(body).decode().encode("utf-16")
        return b"\xff\xfe\x00" + dumps(body)[3:]  # a corrupt frame

    @staticmethod
    def _too_large(body: Body) -> bytes:
        """A reading padded with a raw frame dump to just over the 1 MiB limit."""
        shell = dumps({**body, "raw_frame": ""})
        padding = MAX_MESSAGE_BYTES + 64 - len(shell)
        return dumps({**body, "raw_frame": "A" * padding})
