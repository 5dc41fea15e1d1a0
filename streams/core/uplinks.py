"""What the MQTT bridge makes of one MQTT message (schemas/CONTRACT.md section 9): a reading for a
source topic, or the reason it cannot be mapped.

Pure functions with no MQTT or Kafka import. Three formats:

* ``chirpstack``: a ChirpStack v4 uplink event (``application/<id>/device/<DevEUI>/event/up``);
* ``tts``: a The Things Stack v3 uplink (``v3/<app>@<tenant>/devices/<device>/up``);
* ``contract-<kind>``: a contract reading (or batch) of that kind, forwarded as it came.

A LoRaWAN uplink becomes a parking reading: ``device_id`` is the DevEUI in lower-case hex, ``ts`` the
network server's reception time, ``seq`` the frame counter, ``lot_id``/``spot_id`` the registry's
``parking_sensors`` entry (else the decoded payload's), ``occupied``, ``battery_v`` and ``kind`` from
the decoded payload, ``rssi_dbm``/``snr_db`` from the gateway that heard it best. The reading's values
are not judged here: the worker judges them as it judges every reading.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from schemas import codec
from schemas.deadletter import DeadLetterReason, FieldError
from schemas.readings import SourceKind
from schemas.timestamps import format_ms, parse_rfc3339_ms
from streams.core.decode import MAX_MESSAGE_BYTES, Payload, Rejection
from streams.core.registry import Registry
from streams.errors import CitystreamError


class UplinkFormat(StrEnum):
    CHIRPSTACK = "chirpstack"
    TTS = "tts"
    CONTRACT_PARKING = "contract-parking"
    CONTRACT_ENV = "contract-env"
    CONTRACT_TAXI = "contract-taxi"

    @property
    def contract_kind(self) -> SourceKind | None:
        """The reading kind of a ``contract-*`` format; None for the network servers' formats."""
        return _CONTRACT_KINDS.get(self)


_CONTRACT_KINDS: Final = {
    UplinkFormat.CONTRACT_PARKING: SourceKind.PARKING,
    UplinkFormat.CONTRACT_ENV: SourceKind.ENVIRONMENT,
    UplinkFormat.CONTRACT_TAXI: SourceKind.TAXI,
}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One subscription of the bridge: an MQTT topic filter and the format of what arrives there."""

    format: UplinkFormat
    filter: str

    def __str__(self) -> str:
        return f"{self.format.value}:{self.filter}"


DEFAULT_TOPICS: Final = (
    TopicSpec(UplinkFormat.CHIRPSTACK, "application/+/device/+/event/up"),
    TopicSpec(UplinkFormat.TTS, "v3/+/devices/+/up"),
)


def parse_topics(text: str) -> tuple[TopicSpec, ...]:
    """``CITYSTREAM_MQTT_TOPICS``: comma-separated ``FORMAT:FILTER`` entries; empty means the defaults.

    ``FORMAT`` is ``chirpstack``, ``tts``, ``contract-parking``, ``contract-env`` or ``contract-taxi``.
    Raise ValueError naming the wrong entry.
    """
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if not entries:
        return DEFAULT_TOPICS
    specs: list[TopicSpec] = []
    formats = ", ".join(f.value for f in UplinkFormat)
    for entry in entries:
        name, sep, topic_filter = entry.partition(":")
        if not sep:
            raise ValueError(f"{entry!r} names no format: write FORMAT:FILTER, FORMAT one of {formats}")
        try:
            uplink_format = UplinkFormat(name.strip().lower())
        except ValueError:
            raise ValueError(f"{entry!r}: unknown format {name!r}; one of {formats}") from None
        problem = filter_problem(topic_filter.strip())
        if problem is not None:
            raise ValueError(f"{entry!r}: {problem}")
        specs.append(TopicSpec(uplink_format, topic_filter.strip()))
    if len({spec.filter for spec in specs}) < len(specs):
        raise ValueError("a topic filter is listed twice")
    return tuple(specs)


def filter_problem(topic_filter: str) -> str | None:
    """Why ``topic_filter`` is not a valid MQTT topic filter to subscribe to, or None."""
    if not topic_filter:
        return "the topic filter is empty"
    if topic_filter.startswith("$share/"):
        return "write the filter without $share/: CITYSTREAM_MQTT_SHARE_GROUP adds it"
    if len(topic_filter.encode("utf-8")) > 65_535 or "\0" in topic_filter:
        return "not a valid MQTT topic filter"
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return "# stands alone, as the last level"
        if "+" in level and level != "+":
            return "+ stands alone, as a whole level"
    return None


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether an MQTT topic matches a topic filter (``+`` one level, ``#`` the rest)."""
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    if topic.startswith("$") and filter_levels[0] in ("+", "#"):
        return False  # wildcards do not match $SYS and the like
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(topic_levels) == len(filter_levels)


def subscription(spec: TopicSpec, share_group: str | None) -> str:
    """The filter the bridge subscribes to: a shared subscription ``$share/<group>/<filter>`` with a group."""
    return f"$share/{share_group}/{spec.filter}" if share_group else spec.filter


def format_of(topic: str, specs: tuple[TopicSpec, ...]) -> UplinkFormat | None:
    """The format of the first subscription whose filter matches ``topic``."""
    for spec in specs:
        if topic_matches(spec.filter, topic):
            return spec.format
    return None


@dataclass(frozen=True, slots=True)
class Mapped:
    """A message for a source topic: its key (the device) and value (contract JSON)."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class Uplink:
    """The fields a LoRaWAN network server's uplink carries, whatever its format."""

    dev_eui: str
    received_ms: int
    f_cnt: int
    rssi_dbm: float | None
    snr_db: float | None
    decoded: Mapping[str, Any] | None


class Unmappable(CitystreamError):
    """An uplink that cannot become a reading; the message says why."""


def map_message(uplink_format: UplinkFormat, value: bytes, registry: Registry) -> Mapped | Rejection:
    """One MQTT message: the reading it becomes, or an ``unmappable`` rejection with its original bytes."""
    kind = uplink_format.contract_kind
    try:
        if len(value) > MAX_MESSAGE_BYTES:
            raise Unmappable(f"{len(value)} bytes is over the {MAX_MESSAGE_BYTES} byte limit of a message")
        if kind is not None:
            return _contract(kind, value)
        uplink = parse_uplink(uplink_format, value)
        reading = parking_reading(uplink, registry)
    except Unmappable as exc:
        return unmappable(value, str(exc))
    return Mapped(SourceKind.PARKING.topic, reading["device_id"].encode(), codec.dumps(reading))


def unmappable(value: bytes, why: str, loc: str = "") -> Rejection:
    """The rejection of an MQTT message the bridge cannot map: a dead letter keeps its original bytes."""
    return Rejection(
        DeadLetterReason.UNMAPPABLE,
        (FieldError(loc=loc, msg=why[:2000], type="unmappable"),),
        Payload.of(value),
    )


def parse_uplink(uplink_format: UplinkFormat, value: bytes) -> Uplink:
    """The uplink in a network server's JSON; :class:`Unmappable` when it is not one."""
    document = _json_object(value)
    if uplink_format is UplinkFormat.CHIRPSTACK:
        return _chirpstack(document)
    if uplink_format is UplinkFormat.TTS:
        return _tts(document)
    raise Unmappable(f"{uplink_format.value} is not a LoRaWAN network server's format")


def parking_reading(uplink: Uplink, registry: Registry) -> dict[str, Any]:
    """The contract parking reading of an uplink; :class:`Unmappable` without a decoded payload or a place."""
    decoded = uplink.decoded
    if decoded is None:
        raise Unmappable("the uplink has no decoded payload: configure the device's payload codec")
    place = registry.sensor_place(uplink.dev_eui)
    if place is not None:
        lot_id: Any = place.lot_id
        spot_id: Any = place.spot_id
    else:
        lot_id, spot_id = decoded.get("lot_id"), decoded.get("spot_id")
        if lot_id is None or spot_id is None:
            raise Unmappable(
                f"DevEUI {uplink.dev_eui} is not in the registry's parking_sensors and the decoded payload "
                "names no lot_id and spot_id"
            )
    occupied = decoded.get("occupied")
    if isinstance(occupied, int) and not isinstance(occupied, bool) and occupied in (0, 1):
        occupied = bool(occupied)
    if not isinstance(occupied, bool):
        raise Unmappable("the decoded payload has no occupied (true or false)")
    reading: dict[str, Any] = {
        "device_id": uplink.dev_eui,
        "ts": format_ms(uplink.received_ms),
        "seq": uplink.f_cnt,
        "lot_id": lot_id,
        "spot_id": spot_id,
        "occupied": occupied,
        "kind": "heartbeat" if _is_heartbeat(decoded) else "change",
    }
    battery = decoded.get("battery_v")
    if battery is not None:
        reading["battery_v"] = battery
    if uplink.rssi_dbm is not None:
        reading["rssi_dbm"] = uplink.rssi_dbm
    if uplink.snr_db is not None:
        reading["snr_db"] = uplink.snr_db
    return reading


def _is_heartbeat(decoded: Mapping[str, Any]) -> bool:
    return decoded.get("kind") == "heartbeat" or decoded.get("heartbeat") is True


def _contract(kind: SourceKind, value: bytes) -> Mapped:
    document = _json_object(value)
    device = document.get("device_id")
    key = device.encode() if isinstance(device, str) and device else None
    return Mapped(kind.topic, key, value)


def _json_object(value: bytes) -> dict[str, Any]:
    try:
        document = codec.loads(value)
    except codec.JSONDecodeError:
        raise Unmappable("the message is not JSON") from None
    if not isinstance(document, dict):
        raise Unmappable("the message is JSON but not an object")
    return document


_DEV_EUI: Final = re.compile(r"[0-9A-Fa-f]{16}", re.ASCII)


def _dev_eui(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _DEV_EUI.fullmatch(value):
        raise Unmappable(f"{where} is not a DevEUI (16 hex digits)")
    return value.lower()


def _received_ms(value: Any, where: str) -> int:
    if not isinstance(value, str):
        raise Unmappable(f"the uplink has no {where}")
    try:
        return parse_rfc3339_ms(value)
    except ValueError:
        raise Unmappable(f"{where} is not an RFC 3339 timestamp") from None


def _frame_counter(value: Any, where: str) -> int:
    # protobuf's JSON form leaves out fields at their default: no counter is frame counter 0
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Unmappable(f"{where} is not a frame counter")
    return value


def _decoded(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, dict) and value else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _strongest(gateways: Any, rssi_keys: tuple[str, ...]) -> tuple[float | None, float | None]:
    """RSSI and SNR of the gateway with the strongest signal (highest RSSI, then SNR)."""
    best: tuple[float, float] | None = None
    best_snr: float | None = None
    if not isinstance(gateways, list):
        return None, None
    for gateway in gateways:
        if not isinstance(gateway, dict):
            continue
        rssi = next((r for key in rssi_keys if (r := _number(gateway.get(key))) is not None), None)
        snr = _number(gateway.get("snr"))
        if rssi is None:
            continue
        rank = (rssi, snr if snr is not None else float("-inf"))
        if best is None or rank > best:
            best, best_snr = rank, snr
    return (best[0] if best is not None else None), best_snr


def _chirpstack(document: Mapping[str, Any]) -> Uplink:
    info = document.get("deviceInfo")
    if not isinstance(info, dict):
        raise Unmappable("not a ChirpStack v4 uplink event: no deviceInfo")
    rssi, snr = _strongest(document.get("rxInfo"), ("rssi",))
    return Uplink(
        dev_eui=_dev_eui(info.get("devEui"), "deviceInfo.devEui"),
        received_ms=_received_ms(document.get("time"), "time"),
        f_cnt=_frame_counter(document.get("fCnt"), "fCnt"),
        rssi_dbm=rssi,
        snr_db=snr,
        decoded=_decoded(document.get("object")),
    )


def _tts(document: Mapping[str, Any]) -> Uplink:
    ids = document.get("end_device_ids")
    message = document.get("uplink_message")
    if not isinstance(ids, dict) or not isinstance(message, dict):
        raise Unmappable("not a The Things Stack uplink: no end_device_ids or uplink_message")
    # the network server's reception time; the application server's when it is missing
    received = message.get("received_at", document.get("received_at"))
    rssi, snr = _strongest(message.get("rx_metadata"), ("rssi", "channel_rssi"))
    return Uplink(
        dev_eui=_dev_eui(ids.get("dev_eui"), "end_device_ids.dev_eui"),
        received_ms=_received_ms(received, "uplink_message.received_at"),
        f_cnt=_frame_counter(message.get("f_cnt"), "uplink_message.f_cnt"),
        rssi_dbm=rssi,
        snr_db=snr,
        decoded=_decoded(message.get("decoded_payload")),
    )
