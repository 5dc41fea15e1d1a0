"""``device.offline`` (on the wall clock) and ``device.battery_low`` of each device."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from schemas.alert import Alert
from schemas.timestamps import format_ms_seconds, parse_rfc3339_ms
from streams.rules.book import AlertBook, keep
from streams.rules.messages import duration_text, number_text, value_text
from streams.rules.policy import BATTERY_LOW, DEVICE_OFFLINE, MINUTE_MS, PARKING, STATION, AlertPolicy

_DEVICE_LABEL: Final = {STATION: "Environment station", PARKING: "Parking sensor"}


class DeviceRules:
    """``device.offline`` (wall clock) and ``device.battery_low`` of each device.

    Offline: a device is known from its first valid reading on; once the wall clock is 10 minutes
    (environment station) or 36 hours (parking sensor) past its last reading, ``check_offline``
    raises, once; its next reading clears. The raise's window is [last reading, last reading +
    limit], the clear's [last reading before the silence, the reading that ended it]; ``value`` is
    the silence and ``threshold`` the limit, in seconds. Call ``check_offline`` only once the
    partition has caught up with its input (after a restart the backlog would otherwise look like
    silence).

    Battery: raise below 2.9 V, clear at 3.0 V or more, on each reading with ``battery_v`` (window:
    the reading's 1-minute window); a reading older than the newest one judged for the device
    changes nothing.
    """

    __slots__ = ("battery_ts", "devices", "next_due_ms", "policy")

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()
        self.devices: dict[str, list[Any]] = {}  # device id -> [kind, wall time of its last reading]
        self.battery_ts: dict[str, int] = {}  # device id -> ts of the newest battery reading judged
        # no device without an open device.offline can be due before this (a lower bound): the rules
        # run several times a second, and a partition may know tens of thousands of devices
        self.next_due_ms: float = -math.inf

    def seen(self, book: AlertBook, device_id: str, device_kind: str, wall_ms: int, now_ms: int) -> list[Alert]:
        limit = self.policy.offline_ms(device_kind)
        known = self.devices.get(device_id)
        last = known[1] if known is not None else None
        newest = wall_ms if last is None else max(last, wall_ms)
        self.devices[device_id] = [device_kind, newest]
        if newest + limit < self.next_due_ms:
            self.next_due_ms = newest + limit
        raised = book.get(DEVICE_OFFLINE, device_id)
        if raised is None:
            return []
        since = parse_rfc3339_ms(raised.window_start) if last is None else last
        silence = max(0, wall_ms - since)
        message = f"{_DEVICE_LABEL[device_kind]} {device_id} reports again after {duration_text(silence)} of silence"
        alert = book.clear_alert(
            DEVICE_OFFLINE,
            device_id,
            window_start_ms=since,
            window_end_ms=wall_ms,
            value=silence / 1000,
            threshold=limit / 1000,
            message=message,
            now_ms=now_ms,
        )
        return [alert] if alert is not None else []

    def check_offline(self, book: AlertBook, wall_ms: int, now_ms: int) -> list[Alert]:
        if wall_ms < self.next_due_ms:
            return []
        alerts: list[Alert] = []
        next_due_ms = math.inf
        for device_id in sorted(self.devices):
            device_kind, last = self.devices[device_id]
            limit = self.policy.offline_ms(device_kind)
            silence = wall_ms - last
            if book.is_open(DEVICE_OFFLINE, device_id):
                continue
            if silence < limit:
                next_due_ms = min(next_due_ms, last + limit)
                continue
            message = (
                f"{_DEVICE_LABEL[device_kind]} {device_id} silent for {duration_text(silence)} "
                f"(limit {duration_text(limit)}), last reading {format_ms_seconds(last)}"
            )
            keep(
                alerts,
                book.raise_alert(
                    DEVICE_OFFLINE,
                    device_id,
                    window_start_ms=last,
                    window_end_ms=last + limit,
                    value=silence / 1000,
                    threshold=limit / 1000,
                    message=message,
                    now_ms=now_ms,
                ),
            )
        self.next_due_ms = next_due_ms
        return alerts

    def battery(self, book: AlertBook, device_id: str, battery_v: float, ts_ms: int, now_ms: int) -> list[Alert]:
        newest = self.battery_ts.get(device_id)
        if newest is not None and ts_ms < newest:
            return []
        self.battery_ts[device_id] = ts_ms
        policy = self.policy
        start = ts_ms - ts_ms % MINUTE_MS
        volts = float(battery_v)
        if book.is_open(BATTERY_LOW, device_id):
            if volts < policy.battery_low_clear:
                return []
            shown = value_text(volts, policy.battery_low_clear, 2)
            message = (
                f"Parking sensor {device_id} battery {shown} V >= "
                f"{number_text(policy.battery_low_clear)} V: no longer low"
            )
            alert = book.clear_alert(
                BATTERY_LOW,
                device_id,
                window_start_ms=start,
                window_end_ms=start + MINUTE_MS,
                value=volts,
                threshold=policy.battery_low_clear,
                message=message,
                now_ms=now_ms,
            )
        else:
            if volts >= policy.battery_low_raise:
                return []
            shown = value_text(volts, policy.battery_low_raise, 2)
            message = f"Parking sensor {device_id} battery {shown} V < {number_text(policy.battery_low_raise)} V: low"
            alert = book.raise_alert(
                BATTERY_LOW,
                device_id,
                window_start_ms=start,
                window_end_ms=start + MINUTE_MS,
                value=volts,
                threshold=policy.battery_low_raise,
                message=message,
                now_ms=now_ms,
            )
        return [alert] if alert is not None else []

    def dump(self) -> dict[str, Any]:
        return {"devices": {d: list(v) for d, v in self.devices.items()}, "battery_ts": dict(self.battery_ts)}

    @classmethod
    def load(cls, data: Mapping[str, Any], policy: AlertPolicy | None = None) -> DeviceRules:
        rules = cls(policy)
        for device_id, (device_kind, last) in data.get("devices", {}).items():
            rules.policy.offline_ms(device_kind)  # refuses an unknown kind
            rules.devices[device_id] = [device_kind, int(last)]
        rules.battery_ts = {d: int(ts) for d, ts in data.get("battery_ts", {}).items()}
        return rules
