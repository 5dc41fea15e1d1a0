"""``device.stuck``: an environment station whose measurement fails the flat-line test
(schemas/CONTRACT.md section 6, and section 5.1 for the test)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.alert import Alert
from streams.rules.book import AlertBook, keep
from streams.rules.finals import StationMinute
from streams.rules.messages import duration_text
from streams.rules.policy import DEVICE_STUCK


class StuckRules:
    """On each final minute of a station: raise when a measurement's readings fail the flat-line
    test (the same value for at least the fail duration), once; clear when every measurement that
    failed has varied again (a final minute with readings of it and none failing).

    The raise's window is the minute; ``value`` is the longest flat run in the minute and
    ``threshold`` the fail duration, in seconds. The clear's ``value`` is 0.
    """

    __slots__ = ("stuck",)

    def __init__(self) -> None:
        self.stuck: dict[str, list[str]] = {}  # station -> the measurements stuck while its alert is open

    def on_final_minute(self, book: AlertBook, minute: StationMinute, fail_ms: int, now_ms: int) -> list[Alert]:
        alerts: list[Alert] = []
        device_id = minute.device_id
        if book.is_open(DEVICE_STUCK, device_id):
            was = set(self.stuck.get(device_id, ())) | set(minute.stuck)
            stuck = was - set(minute.varied)
            if stuck:
                self.stuck[device_id] = sorted(stuck)
                return alerts
            self.stuck.pop(device_id, None)
            names = ", ".join(sorted(was))
            message = f"Environment station {device_id}: {names} varies again"
            keep(
                alerts,
                book.clear_alert(
                    DEVICE_STUCK,
                    device_id,
                    window_start_ms=minute.start_ms,
                    window_end_ms=minute.end_ms,
                    value=0.0,
                    threshold=fail_ms / 1000,
                    message=message,
                    now_ms=now_ms,
                ),
            )
        elif minute.stuck:
            run = max(max(minute.stuck.values()), fail_ms)
            names = ", ".join(sorted(minute.stuck))
            message = (
                f"Environment station {device_id}: {names} unchanged for {duration_text(run)} "
                f"(flat line, limit {duration_text(fail_ms)})"
            )
            raised = book.raise_alert(
                DEVICE_STUCK,
                device_id,
                window_start_ms=minute.start_ms,
                window_end_ms=minute.end_ms,
                value=run / 1000,
                threshold=fail_ms / 1000,
                message=message,
                now_ms=now_ms,
            )
            if raised is not None:
                self.stuck[device_id] = sorted(minute.stuck)
            keep(alerts, raised)
        return alerts

    def dump(self) -> dict[str, Any]:
        return {"stuck": dict(self.stuck)}

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> StuckRules:
        rules = cls()
        rules.stuck = {device: list(names) for device, names in data.get("stuck", {}).items()}
        return rules
