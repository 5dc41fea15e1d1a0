"""The alert (schemas/CONTRACT.md section 6), published on ``city.alerts.v1`` and stored in InfluxDB."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

AlertStatus = Literal["raised", "cleared"]
AlertSeverity = Literal["info", "warning", "critical"]
SubjectType = Literal["station", "lot", "cell", "device"]


class AlertSubject(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: SubjectType
    id: str


class Alert(BaseModel):
    """An alert raised or cleared for a station, lot, cell or device (``city.alerts.v1``)."""

    model_config = ConfigDict(frozen=True)

    alert_id: str
    kind: str
    status: AlertStatus
    severity: AlertSeverity
    subject: AlertSubject
    window_start: str
    window_end: str
    value: float
    threshold: float
    message: str
    emitted_at: str
