"""An alert as a point of the ``alerts`` measurement (schemas/CONTRACT.md section 5, version 1.1).

Tags ``kind``, ``status``, ``severity``, ``subject_type`` and ``subject_id``; fields ``value``,
``threshold``, ``message`` and ``alert_id``; the time is the window end in milliseconds. With the
subject in the tags, two subjects' alerts of one kind and window end (two stations raising the PM2.5
advisory for the same hour, two lots filling in the same minute) are two series, so each keeps its
point, and analysts can ``GROUP BY "subject_id"``. The same alert written twice (after a restart)
is the same point.
"""

from __future__ import annotations

from typing import Final

from schemas.alert import Alert
from schemas.timestamps import parse_rfc3339_ms
from streams.core.lineprotocol import format_line

ALERTS_MEASUREMENT: Final = "alerts"


def alert_time_ms(alert: Alert) -> int:
    """The alert's point time: its window end, epoch milliseconds."""
    return parse_rfc3339_ms(alert.window_end)


def alert_line(alert: Alert) -> str:
    """The alert as a point of the ``alerts`` measurement, time in milliseconds (schemas/CONTRACT.md section 5)."""
    return format_line(
        ALERTS_MEASUREMENT,
        {
            "kind": alert.kind,
            "status": alert.status,
            "severity": alert.severity,
            "subject_type": alert.subject.type,
            "subject_id": alert.subject.id,
        },
        {
            "value": float(alert.value),
            "threshold": float(alert.threshold),
            "message": alert.message,
            "alert_id": alert.alert_id,
        },
        alert_time_ms(alert),
    )
