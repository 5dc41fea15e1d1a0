"""Data-quality flags of environment readings (schemas/CONTRACT.md section 5.1), after IOOS QARTOD.

A reading that passes validation can still be wrong: a stuck sensor repeats one value, a glitch
jumps and falls back. Each measurement of a station is tested in event-time order; the flags never
drop a reading and never change an aggregate's other fields. Flags follow QARTOD: ``1`` pass,
``3`` suspect, ``4`` fail.

Tests, per station and measurement (thresholds: :class:`QcPolicy`, defaults in :data:`DEFAULTS`):

- ``user_range``: outside the measurement's plausible range (narrower than the contract's hard
  limits) is suspect;
- ``spike``: a reading that jumps more than the spike threshold from the previous reading and by
  as much back to the next one, the same way (a peak or a trough the next reading does not
  confirm), is suspect. It needs the next reading, so a spike is flagged one reading late, by
  writing the reading's point again. A step that the next reading confirms is no spike;
- ``rate_of_change``: a change from the previous reading faster than the measurement's largest
  plausible rate (per minute) is suspect;
- ``flat_line``: the reading and every reading before it back to at least 30 minutes earlier
  within the tolerance of its value is suspect; back to at least 2 hours earlier, a fail.

Neighbours more than ``max_gap_ms`` apart are not compared (a station that was silent for a day
has no previous reading for the spike and rate tests); a flat line goes on across a gap.

:class:`StationQc` keeps what the tests need: the recent readings of each measurement, sorted by
time, so a reading that arrives out of order (within the maximum lateness) takes its place and the
flags of its neighbours are decided again. It forgets what no later reading can need: readings
older than the flat-line fail duration before the horizon, and, before the horizon, readings
spread wider than twice the tolerance (no later value can be within the tolerance of both).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

PASS: Final = 1
SUSPECT: Final = 3
FAIL: Final = 4

USER_RANGE: Final = "user_range"
SPIKE: Final = "spike"
RATE_OF_CHANGE: Final = "rate_of_change"
FLAT_LINE: Final = "flat_line"

MINUTE_MS: Final = 60_000


@dataclass(frozen=True, slots=True)
class Limits:
    """One measurement's thresholds."""

    low: float  # user range: below is suspect
    high: float  # user range: above is suspect
    spike: float  # the jump (in the measurement's unit) a spike exceeds
    rate_per_min: float  # the largest plausible change per minute
    tolerance: float  # two values this close are the same value for the flat-line test


#: The defaults, from the measurements' physics and Korea's air-quality practice. PM: AirKorea's
#: highest CAI band starts at 151 (PM2.5) and 151 (PM10) µg/m³ and hourly means above 500 and 1000
#: are beyond what Korean networks have recorded outside instrument faults; a jump of 100 µg/m³
#: (PM2.5) or 200 (PM10) that falls back at the next reading is a glitch, not a plume (PM2.5
#: readings 18, 19, 350, 20 a minute apart make 350 a spike), while smoke next to an inlet can raise
#: a reading by a few hundred µg/m³ within a minute, hence the rates. Gases: the user ranges are
#: well above Korea's 1-hour standards (O3 0.1, NO2 0.1, SO2 0.15, CO 25 ppm); temperature,
#: humidity and noise: Daegu's climate and street levels. Tolerances are the instruments' display
#: resolutions: a station repeating a value to the last digit for 30 minutes is suspect.
DEFAULTS: Final[Mapping[str, Limits]] = {
    "pm10_ugm3": Limits(0.0, 1000.0, 200.0, 600.0, 0.0),
    "pm25_ugm3": Limits(0.0, 500.0, 100.0, 400.0, 0.0),
    "o3_ppm": Limits(0.0, 0.5, 0.1, 0.1, 0.0),
    "no2_ppm": Limits(0.0, 0.5, 0.1, 0.1, 0.0),
    "so2_ppm": Limits(0.0, 0.5, 0.1, 0.1, 0.0),
    "co_ppm": Limits(0.0, 50.0, 10.0, 10.0, 0.0),
    "temp_c": Limits(-25.0, 45.0, 5.0, 3.0, 0.0),
    "humidity_pct": Limits(1.0, 100.0, 20.0, 10.0, 0.0),
    "noise_dba": Limits(25.0, 130.0, 40.0, 60.0, 0.0),
}

FLAT_SUSPECT_MS: Final = 30 * MINUTE_MS
FLAT_FAIL_MS: Final = 2 * 60 * MINUTE_MS
MAX_GAP_MS: Final = 60 * MINUTE_MS


@dataclass(frozen=True, slots=True)
class QcPolicy:
    """Every threshold of the tests; ``CITYSTREAM_QC`` overrides them (streams/settings.py)."""

    limits: Mapping[str, Limits] = field(default_factory=lambda: dict(DEFAULTS))
    flat_suspect_ms: int = FLAT_SUSPECT_MS
    flat_fail_ms: int = FLAT_FAIL_MS
    max_gap_ms: int = MAX_GAP_MS


Flags = dict[str, int]
"""``"<measurement>:<test>"`` -> level (3 or 4), for the tests a reading did not pass."""


def level(flags: Flags) -> int:
    """The reading's ``qc``: its worst flag, or 1."""
    return max(flags.values(), default=PASS)


def tests_text(flags: Flags) -> str:
    """The reading's ``qc_tests``: the tests it did not pass, sorted."""
    return ",".join(sorted(flags))


def range_flags(measurements: Mapping[str, float], policy: QcPolicy) -> Flags:
    """The flags that need no other reading (a reading stored raw only, too late for the others)."""
    flags: Flags = {}
    for name, value in measurements.items():
        limits = policy.limits.get(name)
        if limits is not None and not limits.low <= value <= limits.high:
            flags[f"{name}:{USER_RANGE}"] = SUSPECT
    return flags


class Series:
    """One measurement of one station: times, values and each reading's flags, sorted by time."""

    __slots__ = ("levels", "runs", "times", "values")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.values: list[float] = []
        self.levels: list[dict[str, int]] = []  # test -> level, per reading
        self.runs: list[int] = []  # the start of the reading's flat run (its own time when none)

    def evaluate(self, i: int, limits: Limits, policy: QcPolicy) -> dict[str, int]:
        """The flags of reading ``i`` against its neighbours (and its flat run, recorded in ``runs``)."""
        times, values = self.times, self.values
        t, v = times[i], values[i]
        found: dict[str, int] = {}
        if not limits.low <= v <= limits.high:
            found[USER_RANGE] = SUSPECT
        gap = policy.max_gap_ms
        before = i > 0 and t - times[i - 1] <= gap
        after = i + 1 < len(times) and times[i + 1] - t <= gap
        if before:
            up = v - values[i - 1]
            # a change within a minute counts as a minute's: sub-minute steps are noisy
            minutes = max(t - times[i - 1], MINUTE_MS) / MINUTE_MS
            if abs(up) / minutes > limits.rate_per_min:
                found[RATE_OF_CHANGE] = SUSPECT
            if after:
                down = v - values[i + 1]
                if abs(up) > limits.spike and abs(down) > limits.spike and (up > 0) == (down > 0):
                    found[SPIKE] = SUSPECT
        start = t
        tolerance = limits.tolerance
        j = i - 1
        while j >= 0 and abs(values[j] - v) <= tolerance:
            start = times[j]
            if t - start >= policy.flat_fail_ms:
                break
            j -= 1
        self.runs[i] = start
        if t - start >= policy.flat_fail_ms:
            found[FLAT_LINE] = FAIL
        elif t - start >= policy.flat_suspect_ms:
            found[FLAT_LINE] = SUSPECT
        return found

    def prune(self, horizon_ms: int, tolerance: float, policy: QcPolicy) -> None:
        """Forget the readings no reading at or after ``horizon_ms`` can need."""
        times, values = self.times, self.values
        final = bisect.bisect_left(times, horizon_ms)  # readings before it can gain no neighbour before them
        if final <= 1:
            return
        # the newest reading at least the fail duration before the horizon ends any flat run there
        keep = max(0, bisect.bisect_right(times, horizon_ms - policy.flat_fail_ms) - 1)
        # before the horizon, a stretch wider than twice the tolerance: no later value is within the
        # tolerance of both ends, so no later run reaches past its newest such reading
        low = high = values[final - 1]
        for j in range(final - 2, keep - 1, -1):
            low, high = min(low, values[j]), max(high, values[j])
            if high - low > 2 * tolerance:
                keep = j
                break
        # the reading just before the horizon stays: the next reading's previous neighbour
        keep = min(keep, final - 1)
        if keep > 0:
            del times[:keep], values[:keep], self.levels[:keep], self.runs[:keep]

    def dump(self) -> list[Any]:
        return [self.times, self.values, self.levels, self.runs]

    @classmethod
    def load(cls, data: list[Any]) -> Series:
        series = cls()
        series.times = [int(t) for t in data[0]]
        series.values = [float(v) for v in data[1]]
        series.levels = [dict(flags) for flags in data[2]]
        series.runs = [int(r) for r in data[3]]
        return series


class StationQc:
    """The tests' state for one station: a :class:`Series` per measurement, and each recent
    reading's flags and district (to write its point again when its flags change)."""

    __slots__ = ("before", "readings", "series")

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}
        self.readings: dict[int, list[Any]] = {}  # ts -> [district, flags]
        self.before: dict[int, Flags | None] = {}  # of the last add: the changed readings' former flags

    def add(self, ts: int, district: str, measurements: Mapping[str, float], policy: QcPolicy) -> dict[int, Flags]:
        """Take a new reading; return the readings whose flags are new or changed (this one always)
        with their flags. :attr:`before` then holds the flags each of them had (None: new)."""
        touched: set[int] = {ts}
        for name, value in measurements.items():
            limits = policy.limits.get(name)
            if limits is None:
                continue
            series = self.series.get(name)
            if series is None:
                series = self.series[name] = Series()
            i = bisect.bisect_left(series.times, ts)
            series.times.insert(i, ts)
            series.values.insert(i, value)
            series.levels.insert(i, {})
            series.runs.insert(i, ts)
            # this reading, its previous neighbour (its next changed), and every later one (their
            # previous neighbour or their flat run may have changed)
            for k in range(max(i - 1, 0), len(series.times)):
                found = series.evaluate(k, limits, policy)
                if found != series.levels[k] or k == i:
                    series.levels[k] = found
                    touched.add(series.times[k])
        new = ts not in self.readings
        self.readings.setdefault(ts, [district, {}])[0] = district
        changed: dict[int, Flags] = {}
        self.before = {}
        for t in touched:
            record = self.readings.get(t)
            if record is None:  # flags of a reading whose record was forgotten: nothing to write
                continue
            flags = self._flags_at(t)
            if t == ts or flags != record[1]:
                self.before[t] = None if (t == ts and new) else record[1]
                record[1] = flags
                changed[t] = flags
        return changed

    def _flags_at(self, ts: int) -> Flags:
        flags: Flags = {}
        for name, series in self.series.items():
            i = bisect.bisect_left(series.times, ts)
            if i < len(series.times) and series.times[i] == ts:
                for test, flag in series.levels[i].items():
                    flags[f"{name}:{test}"] = flag
        return flags

    def flat_run_ms(self, name: str, start_ms: int, end_ms: int) -> int:
        """The longest flat run of a measurement's readings in [start, end) (0 when none is known)."""
        series = self.series.get(name)
        if series is None:
            return 0
        lo, hi = bisect.bisect_left(series.times, start_ms), bisect.bisect_left(series.times, end_ms)
        return max((series.times[k] - series.runs[k] for k in range(lo, hi)), default=0)

    def prune(self, horizon_ms: int, policy: QcPolicy) -> None:
        for name in list(self.series):
            series = self.series[name]
            series.prune(horizon_ms, policy.limits[name].tolerance, policy)
        oldest = min((s.times[0] for s in self.series.values() if s.times), default=None)
        for t in [t for t in self.readings if oldest is None or t < oldest]:
            del self.readings[t]

    def __bool__(self) -> bool:
        return bool(self.readings)

    def dump(self) -> dict[str, Any]:
        return {
            "series": {name: series.dump() for name, series in self.series.items()},
            "readings": [[t, district, flags] for t, (district, flags) in sorted(self.readings.items())],
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> StationQc:
        qc = cls()
        qc.series = {name: Series.load(series) for name, series in data["series"].items()}
        qc.readings = {int(t): [district, dict(flags)] for t, district, flags in data["readings"]}
        return qc
