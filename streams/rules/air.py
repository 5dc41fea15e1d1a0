"""``air.pm25_*``, ``air.pm10_*`` and ``air.o3_advisory``: each station's final hourly means."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from schemas.alert import Alert
from streams.rules.book import AlertBook, keep
from streams.rules.messages import number_text, value_text
from streams.rules.policy import HOUR_MS, AlertPolicy


class StationAirRules:
    """PM2.5, PM10 and O3 rules of each station, on its final hourly means.

    Each kind is judged on its own, with its own hysteresis: the PM2.5 advisory stays open while the
    hourly mean is between 35 and 75, and the PM2.5 warning is a separate alert. Two hours at or
    above 150 raise the warning and -- unless it is open already -- the advisory (those hours are
    at or above 75 too), so the advisory is open whenever the warning is. When the mean falls below
    75 the warning clears and the advisory stays open until the mean falls below 35: the city's
    "back to advisory". A user subscribed to advisories therefore sees every episode from its start
    whether or not it went on to a warning, and one subscribed to warnings sees only the serious
    ones; nothing is cleared and raised again while the air only moves between levels.

    *Consecutive* hours are hour windows of the same station, each final, each with a mean of that
    quantity at or above the raise threshold, with no hour missing in between. The hour of the
    raise provides ``value``, ``window_start``/``window_end`` and so the ``alert_id``. Per station
    only the last ``max(hours)`` final hours' means are kept. An hour older than the newest one
    seen for the station changes nothing; the newest hour given again (a revised final window) is
    judged again with its new means.
    """

    __slots__ = ("_depth", "_rules", "hours", "policy")

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()
        self._rules = self.policy.air_rules()
        self._depth = max(rule.hours for rule in self._rules)
        # station -> [[hour window start, {quantity: mean}], ...] ascending, the newest last
        self.hours: dict[str, list[list[Any]]] = {}

    def on_final_hour(
        self,
        book: AlertBook,
        station_id: str,
        window_start_ms: int,
        window_end_ms: int,
        means: Mapping[str, float],
        now_ms: int,
    ) -> list[Alert]:
        history = self.hours.setdefault(station_id, [])
        if history and window_start_ms < history[-1][0]:
            return []
        known = {rule.quantity for rule in self._rules}
        current = {q: float(v) for q, v in means.items() if q in known and v is not None and math.isfinite(v)}
        if history and history[-1][0] == window_start_ms:
            history[-1][1] = current
        else:
            history.append([window_start_ms, current])
        del history[: max(0, len(history) - self._depth)]
        by_start = {start: hour_means for start, hour_means in history}

        alerts: list[Alert] = []
        for rule in self._rules:
            mean = current.get(rule.quantity)
            if mean is None:
                continue
            if book.is_open(rule.kind, station_id):
                if mean < rule.clear_below:
                    shown = value_text(mean, rule.clear_below, rule.decimals)
                    message = (
                        f"{rule.label} hourly mean {shown} {rule.unit} < {number_text(rule.clear_below)} "
                        f"at {station_id}: {rule.level} lifted"
                    )
                    keep(
                        alerts,
                        book.clear_alert(
                            rule.kind,
                            station_id,
                            window_start_ms=window_start_ms,
                            window_end_ms=window_end_ms,
                            value=mean,
                            threshold=rule.clear_below,
                            message=message,
                            now_ms=now_ms,
                        ),
                    )
                continue
            if mean < rule.raise_at:
                continue
            run = all(
                by_start.get(window_start_ms - back * HOUR_MS, {}).get(rule.quantity, -math.inf) >= rule.raise_at
                for back in range(1, rule.hours)
            )
            if not run:
                continue
            shown = value_text(mean, rule.raise_at, rule.decimals)
            message = f"{rule.label} hourly mean {shown} {rule.unit} >= {number_text(rule.raise_at)}"
            if rule.hours > 1:
                message += f" for {rule.hours} consecutive hours"
            message += f" at {station_id}"
            keep(
                alerts,
                book.raise_alert(
                    rule.kind,
                    station_id,
                    window_start_ms=window_start_ms,
                    window_end_ms=window_end_ms,
                    value=mean,
                    threshold=rule.raise_at,
                    message=message,
                    now_ms=now_ms,
                ),
            )
        return alerts

    def evict(self, before_ms: int) -> None:
        """Forget the hours that started before ``before_ms``, and stations left with none.

        An hour is only needed as the previous hour of a later one: with 2-hour rules, an hour window
        starting at S matters until the hour S + 1 h is final, so ``before_ms`` = (start of the
        oldest hour window that may still become final) - (max hours - 1) h is safe.
        """
        for station_id in list(self.hours):
            kept = [hour for hour in self.hours[station_id] if hour[0] >= before_ms]
            if kept:
                self.hours[station_id] = kept
            else:
                del self.hours[station_id]

    def dump(self) -> dict[str, list[list[Any]]]:
        return {station: [list(hour) for hour in hours] for station, hours in self.hours.items()}

    @classmethod
    def load(cls, data: Mapping[str, list[list[Any]]], policy: AlertPolicy | None = None) -> StationAirRules:
        rules = cls(policy)
        rules.hours = {
            station: [[int(start), {q: float(v) for q, v in means.items()}] for start, means in hours]
            for station, hours in data.items()
        }
        return rules
