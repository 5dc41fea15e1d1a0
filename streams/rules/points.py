"""An alert as a point of the ``alerts`` measurement (schemas/CONTRACT.md section 5).

**Colliding points.** The contract puts ``kind``, ``status`` and ``severity`` in tags, the subject in
a field and the window end (milliseconds) in the time. Two alerts with the same kind, status and
severity and the same window end -- two stations raising the PM2.5 advisory for the same hour, two
lots filling in the same minute -- are then the same series at the same timestamp, and InfluxDB
keeps only the last one written. Two line formats are offered so the integrating code can choose:

- :func:`alert_line` follows the contract to the letter (time in milliseconds, written with
  ``precision=ms``) and loses all but one of such colliding alerts in InfluxDB (Kafka still carries
  all of them).
- :func:`alert_line_ns` writes the time in nanoseconds: the window end plus a per-subject offset
  below one millisecond (:func:`alert_time_ns`, from the CRC-32 of the subject id). Every alert
  keeps its point, the time still rounds down to the window end at millisecond precision, but those
  lines must be written with ``precision=ns`` (a separate write request from the millisecond
  lines). Two subjects share an offset with a probability of about one in a million.

Making the subject a tag would be the clean fix, but changes the contract.
"""

from __future__ import annotations

import zlib
from typing import Final

from schemas.alert import Alert
from schemas.timestamps import parse_rfc3339_ms
from streams.core.lineprotocol import format_line

ALERTS_MEASUREMENT: Final = "alerts"


def alert_time_ms(alert: Alert) -> int:
    """The alert's point time: its window end, epoch milliseconds."""
    return parse_rfc3339_ms(alert.window_end)


def alert_time_ns(alert: Alert) -> int:
    """Window end in nanoseconds plus a per-subject offset below one millisecond (see the module doc)."""
    return alert_time_ms(alert) * 1_000_000 + zlib.crc32(alert.subject.id.encode("utf-8")) % 1_000_000


def _alert_point(alert: Alert, time: int) -> str:
    return format_line(
        ALERTS_MEASUREMENT,
        {"kind": alert.kind, "status": alert.status, "severity": alert.severity},
        {
            "subject": alert.subject.id,
            "value": float(alert.value),
            "threshold": float(alert.threshold),
            "message": alert.message,
            "alert_id": alert.alert_id,
        },
        time,
    )


def alert_line(alert: Alert) -> str:
    """The alert as a point of the ``alerts`` measurement, time in milliseconds (schemas/CONTRACT.md section 5)."""
    return _alert_point(alert, alert_time_ms(alert))


def alert_line_ns(alert: Alert) -> str:
    """As :func:`alert_line` with the time in nanoseconds (:func:`alert_time_ns`); write with ``precision=ns``."""
    return _alert_point(alert, alert_time_ns(alert))
