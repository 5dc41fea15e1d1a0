"""The report's charts (matplotlib, imported when drawing): PM2.5 per station over the CAI bands,
parking occupancy per lot, readings and dead letters per bucket; and the axes and texts they share."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from streams.clients.kafka import DEADLETTER_TOPIC
from streams.core.cai import BREAKPOINTS, GRADES
from streams.tools.report.data import DEAD_LETTER_REASONS, UNREADABLE_REASON, ReportData
from streams.tools.report.queries import READING_KINDS, Series
from streams.tools.report.ranges import KST, TimeRange, bucket_text, range_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# AirKorea's colours of the four grades (blue, green, yellow, red), as light tints
CAI_BAND_COLOURS: Final = {
    "good": "#cfe3ff",
    "moderate": "#d5f2d0",
    "unhealthy": "#fff1b8",
    "very_unhealthy": "#ffc9c4",
}
# the same grades, saturated, for bars coloured by their grade
CAI_BAR_COLOURS: Final = {
    "good": "#3d85e0",
    "moderate": "#3ea34a",
    "unhealthy": "#e5a800",
    "very_unhealthy": "#d7301f",
}
GRADE_LABELS: Final = {
    "good": "good",
    "moderate": "moderate",
    "unhealthy": "unhealthy",
    "very_unhealthy": "very unhealthy",
}


# ----------------------------------------------------------------------------- CAI bands


@dataclass(frozen=True)
class BandSpan:
    low: float
    high: float
    grade: str
    colour: str

    @property
    def label(self) -> str:
        upper = f"{self.high - 1:g}" if math.isfinite(self.high) else "+"
        return f"{GRADE_LABELS[self.grade]} ({self.low:g}{'-' if math.isfinite(self.high) else ''}{upper})"


def cai_band_spans(pollutant: str = "pm25_ugm3") -> list[BandSpan]:
    """The CAI grade bands of a pollutant as contiguous spans for shading a chart.

    The breakpoints have gaps (PM2.5: good 0-15, moderate 16-35) because concentrations are truncated
    before the lookup (15.9 is good), so a band spans from its lower breakpoint to the next band's;
    the last band is open-ended.
    """
    bands = BREAKPOINTS[pollutant]
    lows = [float(low) for low, _ in bands]
    highs = [*lows[1:], math.inf]
    return [
        BandSpan(low, high, grade, CAI_BAND_COLOURS[grade])
        for low, high, grade in zip(lows, highs, GRADES, strict=True)
    ]


def pm25_grade(value: float) -> str:
    """The CAI grade band a PM2.5 concentration falls in (by the spans of :func:`cai_band_spans`)."""
    for span in cai_band_spans():
        if span.low <= value < span.high:
            return span.grade
    return GRADES[0]


# ----------------------------------------------------------------------------- axes


def dates(times_ms: Sequence[int]) -> list[float]:
    """Matplotlib date numbers (days since 1970, UTC) of epoch milliseconds; the axes show them in KST."""
    return [t / 86_400_000 for t in times_ms]


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def time_axis(ax: Axes, time_range: TimeRange, bucket_s: int) -> None:
    """KST dates on x, from the start of the range's first bucket to the end of its last; the parts of
    those buckets outside the range are hatched."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(tz=KST, minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=KST))
    bucket_ms = bucket_s * 1000
    first = time_range.start_ms - time_range.start_ms % bucket_ms
    last = -(-time_range.end_ms // bucket_ms) * bucket_ms
    left, start, end, right = dates([first, time_range.start_ms, time_range.end_ms, last])
    ax.set_xlim(left, right)
    for low, high in ((left, start), (end, right)):
        if high > low:
            ax.axvspan(low, high, facecolor="#f4f4f4", edgecolor="#b8b8b8", hatch="///", linewidth=0, zorder=0.5)
    ax.grid(True, axis="both", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


def no_data(ax: Axes, message: str = "no data in range") -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=13, color="#777777")


def _marker(series: Series) -> str | None:
    return "o" if len(series) <= 30 else None


def _station_palette(count: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(count)]


def with_gaps(line: Series, bucket_ms: int) -> tuple[list[int], list[float]]:
    """The series with a NaN between buckets that are not adjacent, so a plotted line breaks where
    data is missing instead of bridging the gap."""
    times: list[int] = []
    values: list[float] = []
    for t, v in zip(line.times_ms, line.values, strict=True):
        if times and t - times[-1] > bucket_ms:
            times.append(times[-1] + bucket_ms)
            values.append(math.nan)
        times.append(t)
        values.append(v)
    return times, values


def _station_means(data: ReportData) -> list[tuple[str, float]]:
    """Each station's mean PM2.5 over the range (mean of its bucket means), highest first."""
    means = [(station, math.fsum(line.values) / len(line)) for station, line in data.pm25.items()]
    return sorted(means, key=lambda item: (-item[1], item[0]))


# ----------------------------------------------------------------------------- charts


def pm25_chart(data: ReportData) -> Figure:
    """PM2.5 per station: one panel per district over the CAI bands, and each station's mean over the range."""
    from matplotlib.patches import Patch

    spans = cai_band_spans()
    by_district: dict[str, list[str]] = defaultdict(list)
    for station in data.pm25:
        by_district[data.station_districts.get(station, "unknown")].append(station)
    districts = sorted(by_district)
    columns = 2 if len(districts) > 1 else 1
    rows = max(1, math.ceil(len(districts) / columns))
    figure = new_figure(17, max(5.0, 1.4 + 2.4 * rows, 1.8 + 0.3 * len(data.pm25)))
    figure.suptitle(
        f"PM2.5 per station, {bucket_text(data.bucket_s)} means of environment_1m, {range_text(data.time_range)}",
        fontsize=13,
        fontweight="bold",
    )
    figure.legend(
        handles=[Patch(color=s.colour, label=s.label) for s in spans],
        loc="outside lower center",
        ncols=len(spans),
        title="Korean CAI bands for PM2.5, µg/m³ (official grades apply them to 24-hour means)",
        fontsize=9,
        title_fontsize=9,
        frameon=False,
    )
    if not districts:
        ax = figure.subplots()
        time_axis(ax, data.time_range, data.bucket_s)
        ax.set_ylabel("PM2.5 (µg/m³)")
        ax.set_xlabel("time (KST, UTC+9)")
        ax.set_ylim(0, 40)
        _shade_bands(ax, spans, 40, horizontal=True)
        no_data(ax)
        return figure
    means = _station_means(data)
    values = [v for s in data.pm25.values() for v in s.values]
    top = max(40.0, max(values) * 1.12)
    parts: Any = figure.subfigures(1, 2, width_ratios=[3.2, 1])
    series_part, ranking_part = parts[0], parts[1]
    axes = series_part.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    half_bucket = data.bucket_s * 500
    for index, ax in enumerate(axes.flat):
        if index >= len(districts):
            ax.set_visible(False)
            continue
        district = districts[index]
        _shade_bands(ax, spans, top, horizontal=True)
        stations = by_district[district]
        for station, colour in zip(stations, _station_palette(len(stations)), strict=True):
            line = data.pm25[station]
            mean = math.fsum(line.values) / len(line)
            times, values = with_gaps(line, data.bucket_s * 1000)
            ax.plot(
                dates([t + half_bucket for t in times]), values, color=colour, linewidth=1.5,
                marker=_marker(line), markersize=5, label=f"{station} (mean {mean:.0f})",
            )  # fmt: skip
            flagged = data.flagged.get(station, [])
            if flagged:
                stuck = [r for r in flagged if "pm25_ugm3:flat_line" in r.tests]
                other = [r for r in flagged if "pm25_ugm3:flat_line" not in r.tests]
                # a spike above the axis is drawn at its top; a flat line is a row of small squares
                for readings, marker, size, what in (
                    (other, "X", 36, "spike, range or rate"),
                    (stuck, "s", 8, "flat line"),
                ):
                    if readings:
                        ax.scatter(
                            dates([r.ts_ms for r in readings]), [min(r.pm25, top * 0.98) for r in readings],
                            marker=marker, s=size, color=colour, edgecolors="#b00000", linewidths=0.8, zorder=5,
                            label=f"{station}: {len(readings)} flagged ({what})",
                        )  # fmt: skip
        ax.set_ylim(0, top)
        ax.set_title(district, loc="left", fontsize=11, fontweight="bold")
        time_axis(ax, data.time_range, data.bucket_s)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, borderaxespad=0.3)
        if index % columns == 0:
            ax.set_ylabel("PM2.5 (µg/m³)")
    series_part.supxlabel(
        "time (KST, UTC+9); a point is the mean of its bucket, drawn at the bucket's middle; "
        "red-edged marks are raw readings a data-quality test flagged (X spike, range, rate; squares flat line)",
        fontsize=9,
    )
    ax = ranking_part.subplots()
    names = [station for station, _ in means][::-1]
    levels = [mean for _, mean in means][::-1]
    _shade_bands(ax, spans, max(40.0, max(levels) * 1.15), horizontal=False)
    colours = [CAI_BAR_COLOURS[pm25_grade(level)] for level in levels]
    ax.barh(names, levels, color=colours, edgecolor="#444444", linewidth=0.5, height=0.7)
    for y, level in enumerate(levels):
        ax.text(level, y, f" {level:.0f}", va="center", ha="left", fontsize=8)
    ax.set_xlim(0, max(40.0, max(levels) * 1.15))
    ax.set_xlabel("PM2.5 (µg/m³)")
    ax.set_title("mean over the range, per station", loc="left", fontsize=11, fontweight="bold")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return figure


def _shade_bands(ax: Axes, spans: Sequence[BandSpan], top: float, *, horizontal: bool) -> None:
    """Shade the CAI bands below ``top``: horizontal stripes (value on y) or vertical (value on x)."""
    for span in spans:
        if span.low >= top:
            continue
        if horizontal:
            ax.axhspan(span.low, min(span.high, top), color=span.colour, zorder=0, linewidth=0)
        else:
            ax.axvspan(span.low, min(span.high, top), color=span.colour, zorder=0, linewidth=0)


def parking_chart(data: ReportData) -> Figure:
    """Occupancy (%) per lot over time, as steps (a lot's occupancy holds until its next window), and
    each lot's latest occupancy as a bar in the colour of its line."""
    import matplotlib

    figure = new_figure(16, 6)
    figure.suptitle(
        f"Parking occupancy per lot (parking_1m, at the end of each {bucket_text(data.bucket_s)}), "
        f"{range_text(data.time_range)}",
        fontsize=13,
        fontweight="bold",
    )
    ax, latest = figure.subplots(1, 2, width_ratios=[3, 1])
    time_axis(ax, data.time_range, data.bucket_s)
    ax.set_ylabel("occupied spots (% of capacity)")
    ax.set_xlabel("time (KST, UTC+9); a step is a lot's occupancy at the end of a window, held until its next one")
    ax.set_ylim(0, 105)
    latest.set_xlim(0, 105)
    latest.set_xlabel("occupied spots (% of capacity)")
    latest.set_title("latest, per lot (line colours)", loc="left", fontsize=11, fontweight="bold")
    latest.grid(True, axis="x", color="#dddddd", linewidth=0.6)
    latest.set_axisbelow(True)
    for target in (ax, latest):
        line_at = target.axhline if target is ax else target.axvline
        line_at(95, color="#c0392b", linewidth=1, linestyle="--", zorder=1)
    ax.text(
        0.005, 95.5, "parking.lot_full alert at 95 %", transform=ax.get_yaxis_transform(), va="bottom", ha="left",
        fontsize=8, color="#c0392b",
    )  # fmt: skip
    if not data.occupancy:
        no_data(ax)
        no_data(latest)
        latest.set_yticks([])
        return figure
    cmap = matplotlib.colormaps["tab20"]
    colours = {lot: cmap(index % 20) for index, lot in enumerate(data.occupancy)}
    bucket_ms = data.bucket_s * 1000
    axis_end = -(-data.time_range.end_ms // bucket_ms) * bucket_ms
    for lot, line in data.occupancy.items():
        # a window's occupancy is the state at its end, and holds until the lot's next window
        ends = [t + bucket_ms for t in line.times_ms]
        percents = [v * 100 for v in line.values]
        ax.step(
            dates([*ends, max(axis_end, ends[-1])]), [*percents, percents[-1]], where="post",
            color=colours[lot], linewidth=1.8,
        )  # fmt: skip
        if len(line) <= 30:
            ax.plot(dates(ends), percents, "o", color=colours[lot], markersize=4, clip_on=False)
    ranked = sorted(data.occupancy, key=lambda lot: (data.occupancy[lot].values[-1], lot))
    levels = [data.occupancy[lot].values[-1] * 100 for lot in ranked]
    latest.barh(ranked, levels, color=[colours[lot] for lot in ranked], height=0.7)
    for y, (lot, level) in enumerate(zip(ranked, levels, strict=True)):
        occupied, capacity = data.lot_spots.get(lot, (0, 0))
        spots = f" ({occupied}/{capacity})" if capacity else ""
        latest.text(level, y, f" {level:.0f} %{spots}", va="center", ha="left", fontsize=8)
    latest.tick_params(axis="y", labelsize=8)
    return figure


def throughput_chart(data: ReportData) -> Figure:
    """Valid readings per bucket per kind, and dead letters per bucket by reason (stacked)."""
    import matplotlib

    figure = new_figure(14, 9.5)
    axes = figure.subplots(4, 1, sharex=True)
    unit = bucket_text(data.bucket_s)
    figure.suptitle(
        f"Readings and dead letters per {unit}, {range_text(data.time_range)}", fontsize=13, fontweight="bold"
    )
    width = data.bucket_s * 0.9 / 86_400
    colours = {"taxi": "#1f77b4", "parking": "#2ca02c", "environment": "#9467bd"}
    sources = {
        "taxi": "taxi_adas_1m readings",
        "parking": "raw parking points",
        "environment": "environment_1m readings",
    }
    for ax, kind in zip(axes[:3], READING_KINDS, strict=True):
        line = data.readings[kind]
        time_axis(ax, data.time_range, data.bucket_s)
        ax.set_title(
            f"{kind} readings per {unit} of event time ({sources[kind]}; total {int(line.total):,})",
            loc="left", fontsize=10,
        )  # fmt: skip
        ax.set_ylabel("readings")
        if not line or not line.total:
            no_data(ax)
            continue
        ax.bar(dates(line.times_ms), line.values, width=width, align="edge", color=colours[kind])
        ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    ax = axes[3]
    time_axis(ax, data.time_range, data.bucket_s)
    ax.set_ylabel("dead letters")
    ax.set_xlabel("time (KST, UTC+9)")
    dead = data.dead_letters
    if dead is None:
        ax.set_title("dead letters: not read (--no-dead-letters)", loc="left", fontsize=10)
        no_data(ax, "dead letters not read")
        return figure
    ax.set_title(
        f"dead letters per {unit} by reason, by the time they were dead-lettered ({DEADLETTER_TOPIC}; "
        f"total {dead.total:,})",
        loc="left",
        fontsize=10,
    )
    reasons = dead.series()
    if not reasons:
        no_data(ax)
        return figure
    cmap = matplotlib.colormaps["tab10"]
    order = [r for r in (*DEAD_LETTER_REASONS, UNREADABLE_REASON) if r in reasons] + sorted(
        r for r in reasons if r not in DEAD_LETTER_REASONS and r != UNREADABLE_REASON
    )
    bottom = [0.0] * len(next(iter(reasons.values())))
    for index, reason in enumerate(order):
        line = reasons[reason]
        ax.bar(
            dates(line.times_ms), line.values, width=width, align="edge", bottom=bottom, color=cmap(index % 10),
            label=f"{reason} ({int(line.total):,})",
        )  # fmt: skip
        bottom = [b + v for b, v in zip(bottom, line.values, strict=True)]
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, borderaxespad=0.3)
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return figure
