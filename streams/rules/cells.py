"""``adas.hotspot`` and ``road.hazard``: each H3 cell's final 1-minute windows and the final-window frontier."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.alert import Alert
from streams.rules.book import AlertBook, keep
from streams.rules.messages import duration_text
from streams.rules.policy import HOTSPOT, ROAD_HAZARD, AlertPolicy


class _Track:
    """Per-minute counts by taxi of one cell, over a sliding span, and the end of the last minute with any."""

    __slots__ = ("last_end", "minutes")

    def __init__(self) -> None:
        self.minutes: list[tuple[int, dict[str, int]]] = []  # (window end, {taxi: count}), ascending
        self.last_end: int | None = None

    def record(self, window_end_ms: int, counts: Mapping[str, int]) -> None:
        kept = {taxi: int(n) for taxi, n in counts.items() if n > 0}
        index = next((i for i, (end, _) in enumerate(self.minutes) if end >= window_end_ms), len(self.minutes))
        if index < len(self.minutes) and self.minutes[index][0] == window_end_ms:
            # the same final window again (revised): its new counts replace the old ones
            if kept:
                self.minutes[index] = (window_end_ms, kept)
            else:
                del self.minutes[index]
        elif kept:
            self.minutes.insert(index, (window_end_ms, kept))
        # the last minute with any only grows: a revision that empties a minute at most delays a clear
        if kept and (self.last_end is None or window_end_ms > self.last_end):
            self.last_end = window_end_ms

    def totals(self, end_ms: int, span_ms: int) -> tuple[int, int]:
        """(sum of counts, distinct taxis) of the minutes whose window ends in (end - span, end]."""
        total = 0
        taxis: set[str] = set()
        for end, counts in self.minutes:
            if end_ms - span_ms < end <= end_ms:
                total += sum(counts.values())
                taxis.update(counts)
        return total, len(taxis)

    def prune(self, upto_ms: int) -> None:
        """Drop the minutes whose window ends at or before ``upto_ms``."""
        self.minutes = [minute for minute in self.minutes if minute[0] > upto_ms]

    def dump(self) -> list[Any]:
        return [self.last_end, [[end, counts] for end, counts in self.minutes]]

    @classmethod
    def load(cls, data: list[Any]) -> _Track:
        track = cls()
        track.last_end = None if data[0] is None else int(data[0])
        track.minutes = [(int(end), {taxi: int(n) for taxi, n in counts.items()}) for end, counts in data[1]]
        return track


@dataclass(frozen=True, slots=True)
class _CellRule:
    kind: str
    span_ms: int  # the sliding window of the raise
    quiet_ms: int  # without any for this long: cleared
    min_count: int  # sum of counts needed (hazards: taxis)
    min_taxis: int


class CellRules:
    """``adas.hotspot`` and ``road.hazard`` per H3 cell, on the cells' final 1-minute windows.

    Hotspot: the minutes whose window ends within (E - 60 min, E] of the newest final minute E hold
    >= 5 collision warnings (FCW, UFCW, PCW) from >= 3 distinct taxis. Hazard: >= 3 distinct taxis
    reported ``POTHOLE`` or ``OBSTACLE`` in the minutes ending within (E - 24 h, E]. A raise's window
    is that sliding window, [E - 60 min, E] (resp. 24 h), and ``value`` the warnings (resp. taxis)
    counted in it. A cell is cleared once the final-window frontier is 60 minutes (resp. 24 h) past
    the end of its last minute with a warning (resp. a hazard report); the clear's window is that
    quiet span [last end, last end + 60 min] whenever it is noticed, its ``value`` the warnings
    (hazard reports) in it: 0, its ``threshold`` 0 ("none").

    Feed every newly final minute (per cell in window order) before ``on_frontier`` for the new
    frontier; then the alerts do not depend on how far the frontier moved at a time (a restart,
    a backlog): a minute whose window starts 60 minutes or more after the cell's last warning
    clears the open hotspot before it is counted, as the frontier would have in a live run.
    """

    __slots__ = ("_hazard", "_hotspot", "hazards", "hotspots", "policy")

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()
        p = self.policy
        self._hotspot = _CellRule(
            HOTSPOT, p.hotspot_window_ms, p.hotspot_quiet_ms, p.hotspot_min_warnings, p.hotspot_min_taxis
        )
        self._hazard = _CellRule(
            ROAD_HAZARD, p.hazard_window_ms, p.hazard_quiet_ms, p.hazard_min_taxis, p.hazard_min_taxis
        )
        self.hotspots: dict[str, _Track] = {}
        self.hazards: dict[str, _Track] = {}

    def on_final_minute(
        self,
        book: AlertBook,
        cell: str,
        window_start_ms: int,
        window_end_ms: int,
        collisions: Mapping[str, int],
        hazards: Iterable[str],
        now_ms: int,
    ) -> list[Alert]:
        alerts: list[Alert] = []
        self._minute(
            book, self._hotspot, self.hotspots, cell, window_start_ms, window_end_ms, collisions, now_ms, alerts
        )
        self._minute(
            book,
            self._hazard,
            self.hazards,
            cell,
            window_start_ms,
            window_end_ms,
            dict.fromkeys(hazards, 1),
            now_ms,
            alerts,
        )
        return alerts

    def on_frontier(self, book: AlertBook, frontier_ms: int, now_ms: int) -> list[Alert]:
        """Clear the cells quiet for long enough before ``frontier_ms`` (every window ending at or
        before it is final and was fed), and forget what no later window can use."""
        alerts: list[Alert] = []
        for rule, tracks in ((self._hotspot, self.hotspots), (self._hazard, self.hazards)):
            for cell in sorted(tracks):
                track = tracks[cell]
                self._quiet(book, rule, cell, track, frontier_ms, now_ms, alerts)
                track.prune(frontier_ms - rule.span_ms)
                if not track.minutes and track.last_end is None:
                    del tracks[cell]
        return alerts

    def _minute(
        self,
        book: AlertBook,
        rule: _CellRule,
        tracks: dict[str, _Track],
        cell: str,
        window_start_ms: int,
        window_end_ms: int,
        counts: Mapping[str, int],
        now_ms: int,
        alerts: list[Alert],
    ) -> None:
        track = tracks.get(cell)
        if track is None:
            if not any(n > 0 for n in counts.values()):
                return
            track = tracks[cell] = _Track()
        # had the frontier reached this window's start, the cell would have been cleared already
        self._quiet(book, rule, cell, track, window_start_ms, now_ms, alerts)
        track.record(window_end_ms, counts)
        track.prune(window_end_ms - rule.span_ms)
        if book.is_open(rule.kind, cell):
            return
        total, taxis = track.totals(window_end_ms, rule.span_ms)
        if rule.kind == HOTSPOT:
            if total < rule.min_count or taxis < rule.min_taxis:
                return
            value, threshold = total, rule.min_count
            message = (
                f"Collision warning hotspot in cell {cell}: {total} warnings (FCW, UFCW, PCW) from {taxis} taxis "
                f"within {duration_text(rule.span_ms)} (>= {rule.min_count} from >= {rule.min_taxis} taxis)"
            )
        else:
            if taxis < rule.min_taxis:
                return
            value, threshold = taxis, rule.min_taxis
            message = (
                f"Road hazard in cell {cell}: {taxis} taxis reported a pothole or obstacle "
                f"within {duration_text(rule.span_ms)} (>= {rule.min_taxis} taxis)"
            )
        keep(
            alerts,
            book.raise_alert(
                rule.kind,
                cell,
                window_start_ms=window_end_ms - rule.span_ms,
                window_end_ms=window_end_ms,
                value=value,
                threshold=threshold,
                message=message,
                now_ms=now_ms,
            ),
        )

    @staticmethod
    def _quiet(
        book: AlertBook, rule: _CellRule, cell: str, track: _Track, upto_ms: int, now_ms: int, alerts: list[Alert]
    ) -> None:
        """Clear the cell when nothing was counted in the ``quiet_ms`` before ``upto_ms``."""
        last = track.last_end
        if last is None or upto_ms - last < rule.quiet_ms:
            return
        track.last_end = None
        if rule.kind == HOTSPOT:
            message = f"No collision warnings in cell {cell} for {duration_text(rule.quiet_ms)}: hotspot cleared"
        else:
            message = (
                f"No pothole or obstacle reports in cell {cell} for {duration_text(rule.quiet_ms)}: hazard cleared"
            )
        keep(
            alerts,
            book.clear_alert(
                rule.kind,
                cell,
                window_start_ms=last,
                window_end_ms=last + rule.quiet_ms,
                value=0.0,
                threshold=0.0,
                message=message,
                now_ms=now_ms,
            ),
        )

    def dump(self) -> dict[str, dict[str, list[Any]]]:
        return {
            "hotspots": {cell: track.dump() for cell, track in self.hotspots.items()},
            "hazards": {cell: track.dump() for cell, track in self.hazards.items()},
        }

    @classmethod
    def load(cls, data: Mapping[str, Mapping[str, list[Any]]], policy: AlertPolicy | None = None) -> CellRules:
        rules = cls(policy)
        rules.hotspots = {cell: _Track.load(track) for cell, track in data.get("hotspots", {}).items()}
        rules.hazards = {cell: _Track.load(track) for cell, track in data.get("hazards", {}).items()}
        return rules
