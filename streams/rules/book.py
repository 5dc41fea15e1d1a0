"""The open alerts of one partition: where every alert is raised once and cleared once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from schemas.alert import Alert, AlertSubject
from schemas.timestamps import format_ms, format_ms_seconds
from streams.rules.policy import KINDS


class AlertBook:
    """The open alerts of one partition, at most one per (kind, subject id).

    ``raise_alert`` and ``clear_alert`` are where every alert is made: a raise is refused while the
    same (kind, subject) is open, a clear when none is, so whatever calls the rules repeats, an
    alert is raised once and cleared once.
    """

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], Alert] = {}

    def is_open(self, kind: str, subject_id: str) -> bool:
        return (kind, subject_id) in self._open

    def get(self, kind: str, subject_id: str) -> Alert | None:
        """The raise of the open alert of (kind, subject), if any."""
        return self._open.get((kind, subject_id))

    def __iter__(self) -> Iterator[Alert]:
        return iter(self._open.values())

    def __len__(self) -> int:
        return len(self._open)

    def raise_alert(
        self,
        kind: str,
        subject_id: str,
        *,
        window_start_ms: int,
        window_end_ms: int,
        value: float,
        threshold: float,
        message: str,
        now_ms: int,
    ) -> Alert | None:
        """Open an alert; None (and nothing changes) when (kind, subject) has one open already.

        ``alert_id`` is ``kind:subject:window start`` (RFC 3339 UTC to the second) of the window
        that raised it.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown alert kind {kind!r}")
        if (kind, subject_id) in self._open:
            return None
        subject_type, severity = KINDS[kind]
        start = format_ms_seconds(window_start_ms)
        alert = Alert(
            alert_id=f"{kind}:{subject_id}:{start}",
            kind=kind,
            status="raised",
            severity=severity,
            subject=AlertSubject(type=subject_type, id=subject_id),
            window_start=start,
            window_end=format_ms_seconds(window_end_ms),
            value=float(value),
            threshold=float(threshold),
            message=message,
            emitted_at=format_ms(now_ms),
        )
        self._open[(kind, subject_id)] = alert
        return alert

    def clear_alert(
        self,
        kind: str,
        subject_id: str,
        *,
        window_start_ms: int,
        window_end_ms: int,
        value: float,
        threshold: float,
        message: str,
        now_ms: int,
    ) -> Alert | None:
        """Close the open alert of (kind, subject): the ``cleared`` alert carrying the raise's
        ``alert_id``, subject and severity; None when none is open."""
        raised = self._open.pop((kind, subject_id), None)
        if raised is None:
            return None
        return Alert(
            alert_id=raised.alert_id,
            kind=kind,
            status="cleared",
            severity=raised.severity,
            subject=raised.subject,
            window_start=format_ms_seconds(window_start_ms),
            window_end=format_ms_seconds(window_end_ms),
            value=float(value),
            threshold=float(threshold),
            message=message,
            emitted_at=format_ms(now_ms),
        )

    def dump(self) -> list[dict[str, Any]]:
        return [alert.model_dump(mode="json") for _, alert in sorted(self._open.items())]

    @classmethod
    def load(cls, data: Iterable[Mapping[str, Any]]) -> AlertBook:
        book = cls()
        for item in data:
            alert = Alert.model_validate(item)
            book._open[(alert.kind, alert.subject.id)] = alert
        return book


def keep(alerts: list[Alert], alert: Alert | None) -> None:
    """Append ``alert`` unless it is None (a raise or a clear the book refused)."""
    if alert is not None:
        alerts.append(alert)
