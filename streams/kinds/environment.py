"""Environment stream (``city.env.v1``): raw points ``environment`` and station windows.

Stations are the source topic's keys, so a station's readings all arrive in one partition and its
windows (``environment_1m``, and ``environment_1h`` with Korea's CAI) are kept right there, with the
state of the data-quality tests (:mod:`streams.core.qc`): the station windows write the ``qc`` and
``qc_tests`` fields of the raw points (the same points the raw path writes, so InfluxDB merges the
fields) and count the flagged readings of each window (``qc_suspect``, ``qc_fail``).
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from schemas.readings import ENV_MEASUREMENTS, EnvReading, SourceKind
from streams.core.cai import comprehensive_index, pm_24h_mean
from streams.core.lineprotocol import escape_string_field, escape_tag, format_float, normalize_tag
from streams.core.qc import FAIL, FLAT_LINE, SUSPECT, Flags, StationQc, level, range_flags, tests_text
from streams.core.registry import Registry
from streams.core.windows import LATE, Stats, WindowedAggregate, WindowPolicy, window_start
from streams.kinds.spec import SensorKind
from streams.rules.finals import StationHour, StationMinute
from streams.rules.partition import StationPartitionRules

UNKNOWN_DISTRICT: Final = "unknown"
GASES: Final = ("so2_ppm", "no2_ppm", "co_ppm", "o3_ppm")
PARTICLES: Final = ("pm10_ugm3", "pm25_ugm3")
_DAY_MS: Final = 86_400_000


def district_of(reading: EnvReading, registry: Registry) -> str:
    """The reading's district, else the registry's, else ``unknown``, as InfluxDB stores it
    (schemas/CONTRACT.md section 2.3).

    The district is normalised here, once (:func:`~streams.core.lineprotocol.normalize_tag`; ``unknown``
    when nothing is left of it), before it keys a station window: two districts that InfluxDB
    stores as the same tag value ("k\\x01" and "k ") are one window, not two that overwrite each
    other's point. The raw point and the window points both carry this value.
    """
    district = reading.district or registry.station_district(reading.device_id)
    return (normalize_tag(district) if district else "") or UNKNOWN_DISTRICT


def raw_point(reading: EnvReading, registry: Registry) -> str:
    fields = ",".join(f"{name}={format_float(value)}" for name, value in reading.measurements().items())
    district = escape_tag(district_of(reading, registry))
    return f"environment,device_id={escape_tag(reading.device_id)},district={district} {fields} {reading.ts}"


class StationSample(NamedTuple):
    """An environment reading reduced to what the station windows need."""

    device_id: str
    ts: int
    seq: int | None
    district: str  # normalised (district_of)
    measurements: dict[str, float]

    @classmethod
    def of(cls, reading: EnvReading, registry: Registry) -> StationSample:
        return cls(reading.device_id, reading.ts, reading.seq, district_of(reading, registry), reading.measurements())


StationKey = tuple[str, str]  # (device_id, district)


class StationWindow:
    __slots__ = ("flat_fail", "qc_fail", "qc_suspect", "readings", "stats")

    def __init__(self) -> None:
        self.readings = 0
        self.stats: dict[str, Stats] = {}
        self.qc_suspect = 0  # readings whose qc is 3
        self.qc_fail = 0  # readings whose qc is 4
        self.flat_fail: dict[str, int] = {}  # measurement -> its readings failing the flat-line test

    def add(self, measurements: dict[str, float]) -> None:
        self.readings += 1
        for name, value in measurements.items():
            stats = self.stats.get(name)
            if stats is None:
                stats = self.stats[name] = Stats()
            stats.add(value)

    def count_flags(self, flags: Flags, sign: int) -> None:
        """Count (``sign`` 1) or uncount (-1) a reading's flags."""
        if not flags:  # passed every test: nothing to count (most readings)
            return
        worst = level(flags)
        if worst == SUSPECT:
            self.qc_suspect += sign
        elif worst == FAIL:
            self.qc_fail += sign
        for name, flag in flags.items():
            measurement, test = name.split(":", 1)
            if test == FLAT_LINE and flag == FAIL:
                count = self.flat_fail.get(measurement, 0) + sign
                if count:
                    self.flat_fail[measurement] = count
                else:
                    self.flat_fail.pop(measurement, None)

    def fields(self) -> str:
        parts = [f"readings={self.readings}i"]
        for name in ENV_MEASUREMENTS:
            stats = self.stats.get(name)
            if stats is not None:
                parts.append(
                    f"{name}_mean={format_float(stats.mean)},{name}_min={format_float(stats.low)},"
                    f"{name}_max={format_float(stats.high)}"
                )
        parts.append(f"qc_suspect={self.qc_suspect}i,qc_fail={self.qc_fail}i")
        return ",".join(parts)

    def dump(self) -> list[Any]:
        stats = {name: stats.dump() for name, stats in self.stats.items()}
        return [self.readings, stats, self.qc_suspect, self.qc_fail, self.flat_fail]

    @classmethod
    def load(cls, data: list[Any]) -> StationWindow:
        window = cls()
        window.readings = data[0]
        window.stats = {name: Stats.load(stats) for name, stats in data[1].items()}
        if len(data) > 2:  # snapshots taken before the data-quality flags have none
            window.qc_suspect, window.qc_fail, window.flat_fail = int(data[2]), int(data[3]), dict(data[4])
        return window


def qc_line(device_id: str, district: str, ts: int, flags: Flags, flagged_before: bool) -> str:
    """The ``qc`` fields of a raw ``environment`` point; ``qc_tests`` is written empty when a reading
    flagged before passes now (a field of a point cannot be removed)."""
    fields = f"qc={level(flags)}i"
    if flags or flagged_before:
        fields += f",qc_tests={escape_string_field(tests_text(flags))}"
    return f"environment,device_id={escape_tag(device_id)},district={escape_tag(district)} {fields} {ts}"


def _tags(key: StationKey) -> str:
    device_id, district = key
    # `or`: a window restored from a checkpoint of a version that did not normalise districts
    return f"device_id={escape_tag(device_id)},district={escape_tag(district) or UNKNOWN_DISTRICT}"


class StationAggregate(WindowedAggregate):
    """``environment_1m`` and ``environment_1h`` per station, with the CAI on the hourly windows."""

    kind = "environment"

    def __init__(self, policy: WindowPolicy, registry: Registry | None = None) -> None:
        super().__init__(policy)
        self.minutes: dict[tuple[int, StationKey], StationWindow] = {}
        self.hours: dict[tuple[int, StationKey], StationWindow] = {}
        # hourly PM means per station and hour start, for the 24-hour means of the CAI
        self.pm_hourly: dict[StationKey, dict[str, dict[int, float]]] = {}
        self.dirty_minutes: set[tuple[int, StationKey]] = set()
        self.dirty_hours: set[tuple[int, StationKey]] = set()
        # the data-quality tests' state per station, and the qc fields of raw points to write
        self.qc: dict[str, StationQc] = {}
        self.qc_lines: list[str] = []

    def fold(self, record: Any, wall_ms: int) -> str:
        verdict = super().fold(record, wall_ms)
        if verdict == LATE:  # stored raw only: flagged by the tests that need no other reading
            flags = range_flags(record.measurements, self.policy.qc)
            self.qc_lines.append(qc_line(record.device_id, record.district, record.ts, flags, False))
        return verdict

    def _fold(self, sample: StationSample) -> None:
        key = (sample.device_id, sample.district)
        for windows, dirty, size in (
            (self.minutes, self.dirty_minutes, self.policy.short_ms),
            (self.hours, self.dirty_hours, self.policy.long_ms),
        ):
            slot = (window_start(sample.ts, size), key)
            window = windows.get(slot)
            if window is None:
                window = windows[slot] = StationWindow()
            window.add(sample.measurements)
            dirty.add(slot)
        self._test(sample)

    def _test(self, sample: StationSample) -> None:
        """Run the data-quality tests with the new reading; write the qc fields of every reading
        whose flags it decided or changed, and move those readings between their windows' counts."""
        station = self.qc.get(sample.device_id)
        if station is None:
            station = self.qc[sample.device_id] = StationQc()
        changed = station.add(sample.ts, sample.district, sample.measurements, self.policy.qc)
        for ts, flags in changed.items():
            district = station.readings[ts][0]
            old = station.before.get(ts)
            key = (sample.device_id, district)
            for windows, dirty, size in (
                (self.minutes, self.dirty_minutes, self.policy.short_ms),
                (self.hours, self.dirty_hours, self.policy.long_ms),
            ):
                slot = (window_start(ts, size), key)
                window = windows.get(slot)
                if window is None:  # a window already dropped keeps its counts
                    continue
                if old is not None:
                    window.count_flags(old, -1)
                window.count_flags(flags, 1)
                dirty.add(slot)
            self.qc_lines.append(qc_line(sample.device_id, district, ts, flags, bool(old)))

    def _lines(self) -> list[str]:
        lines = self.qc_lines
        self.qc_lines = []
        lines += [
            f"environment_1m,{_tags(key)} {self.minutes[(start, key)].fields()} {start}"
            for start, key in sorted(self.dirty_minutes)
            if (start, key) in self.minutes
        ]
        self.dirty_minutes.clear()
        # an hour's PM means enter the 24-hour means of the hours after it: recompute those too
        changed = {slot for slot in self.dirty_hours if slot in self.hours}
        watermark = self.clock.watermark_ms or 0
        for start, key in list(changed):
            later = start + self.policy.long_ms
            while later <= watermark:
                if (later, key) in self.hours:
                    changed.add((later, key))
                later += self.policy.long_ms
        for start, key in sorted(changed):
            window = self.hours[(start, key)]
            history = self.pm_hourly.setdefault(key, {})
            for name in PARTICLES:
                stats = window.stats.get(name)
                if stats is not None:
                    history.setdefault(name, {})[start] = stats.mean
            fields = window.fields()
            gases = {name: window.stats[name].mean for name in GASES if name in window.stats}
            particles = {
                name: mean for name in PARTICLES
                if name in window.stats and (mean := pm_24h_mean(history.get(name, {}), start)) is not None
            }  # fmt: skip
            cai = comprehensive_index(gases, particles)
            if cai is not None:
                fields += (
                    f",cai={cai.cai}i,cai_grade={escape_string_field(cai.grade)},"
                    f"cai_pollutant={escape_string_field(cai.pollutant)}"
                )
            lines.append(f"environment_1h,{_tags(key)} {fields} {start}")
        self.dirty_hours.clear()
        return lines

    def _finals(self, after_ms: int | None, until_ms: int) -> list[StationMinute | StationHour]:
        """Final windows, in the order of their end: each minute with the measurements failing the
        flat-line test in it (and the longest run) and those that varied; each hour with its means
        of PM2.5, PM10 and O3."""
        short = self.policy.short_ms
        minutes = [
            (start + short, 0, key, start)
            for start, key in self.minutes
            if start + short <= until_ms and (after_ms is None or start + short > after_ms)
        ]
        hours = self._final_hours(after_ms, until_ms)
        finals: list[tuple[int, int, StationMinute | StationHour]] = [(h.end_ms, 1, h) for h in hours]
        for end, _, key, start in minutes:
            window = self.minutes[(start, key)]
            station = self.qc.get(key[0])
            stuck = {
                name: station.flat_run_ms(name, start, end) if station is not None else 0
                for name in sorted(window.flat_fail)
            }
            varied = frozenset(name for name in window.stats if name not in window.flat_fail)
            finals.append((end, 0, StationMinute(key[0], key[1], start, end, stuck, varied)))
        finals.sort(key=lambda item: (item[0], item[1], item[2][0]))
        return [window for _, _, window in finals]

    def _final_hours(self, after_ms: int | None, until_ms: int) -> list[StationHour]:
        size = self.policy.long_ms
        finals = sorted(
            (start + size, key, start)
            for start, key in self.hours
            if start + size <= until_ms and (after_ms is None or start + size > after_ms)
        )
        return [
            StationHour(
                key[0],
                key[1],
                start,
                end,
                {
                    name: stats.mean
                    for name in ("pm25_ugm3", "pm10_ugm3", "o3_ppm")
                    if (stats := self.hours[(start, key)].stats.get(name)) is not None
                },
            )
            for end, key, start in finals
        ]

    def _evict(self, horizon_ms: int) -> None:
        short, long = self.policy.short_ms, self.policy.long_ms
        for slot in [s for s in self.minutes if s[0] + short <= horizon_ms]:
            del self.minutes[slot]
        for slot in [s for s in self.hours if s[0] + long <= horizon_ms]:
            del self.hours[slot]
        oldest_needed = horizon_ms - long - _DAY_MS
        for key in list(self.pm_hourly):
            for means in self.pm_hourly[key].values():
                for hour in [h for h in means if h < oldest_needed]:
                    del means[hour]
            if not any(self.pm_hourly[key].values()):
                del self.pm_hourly[key]
        for device_id in list(self.qc):
            station = self.qc[device_id]
            station.prune(horizon_ms, self.policy.qc)
            if not station:
                del self.qc[device_id]

    def _dump(self) -> Any:
        return {
            "minutes": [[start, list(key), w.dump()] for (start, key), w in self.minutes.items()],
            "hours": [[start, list(key), w.dump()] for (start, key), w in self.hours.items()],
            "pm_hourly": [
                [list(key), {name: sorted(means.items()) for name, means in history.items()}]
                for key, history in self.pm_hourly.items()
            ],
            "qc": {device_id: station.dump() for device_id, station in self.qc.items()},
        }

    def _load(self, data: Any) -> None:
        self.minutes = {(start, (key[0], key[1])): StationWindow.load(w) for start, key, w in data["minutes"]}
        self.hours = {(start, (key[0], key[1])): StationWindow.load(w) for start, key, w in data["hours"]}
        self.pm_hourly = {
            (key[0], key[1]): {name: {int(h): m for h, m in means} for name, means in history.items()}
            for key, history in data["pm_hourly"]
        }
        self.qc = {device_id: StationQc.load(station) for device_id, station in data.get("qc", {}).items()}


KIND: Final = SensorKind(
    kind=SourceKind.ENVIRONMENT,
    model=EnvReading,
    raw_point=raw_point,
    aggregate=StationAggregate,  # a station's windows are keyed by the station: kept where it arrives
    fold=StationSample.of,
    rules=StationPartitionRules,
)
