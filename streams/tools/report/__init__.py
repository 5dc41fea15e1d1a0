"""``citystream report``: charts and one HTML page of what InfluxDB and the dead-letter topic hold for a time range.

The report reads the window aggregates the worker writes (CONTRACT.md section 5) with InfluxQL over
``/query``, and counts the dead letters of ``city.deadletter.v1`` (section 4) per minute. It draws
four PNG charts with matplotlib and writes them, embedded, into one self-contained ``report.html``,
with ``summary.json`` holding the figures of the summary table:

* ``pm25.png``: PM2.5 per station (``environment_1m``: ``pm25_ugm3_mean``), one panel per district,
  over the shaded bands of Korea's CAI for PM2.5 (``streams.core.cai.BREAKPOINTS``);
* ``parking.png``: occupancy per lot (``parking_1m``: ``occupancy``, the last window of each bucket);
* ``adas_map.png``: ADAS warnings per H3 cell (``taxi_adas_1m``: ``fcw + ufcw + pcw + ldw + hmw +
  overspeed``), road hazards (``pothole + obstacle``) marked, cells with taxi readings but no warning
  in grey;
* ``throughput.png``: valid readings per minute of event time, per kind (``taxi_adas_1m`` and
  ``environment_1m``: ``sum(readings)``; raw ``parking``: ``count(occupied)``, since heartbeats are in
  no aggregate), and dead letters per minute (by their Kafka timestamp, the time they were
  dead-lettered) per reason.

The modules, pure parts first: :mod:`.ranges` (the time range and its buckets), :mod:`.queries`
(InfluxQL and its results as series), :mod:`.data` (reading InfluxDB through
:class:`streams.clients.influx.InfluxQLReader` and counting dead letters through
:func:`streams.clients.kafka.read_range`), :mod:`.charts` and :mod:`.cellmap` (the charts),
:mod:`.page` (the files) and :mod:`.command` (the command).
"""

from __future__ import annotations

from streams.core.durations import parse_duration_ms
from streams.tools.report.cellmap import adas_map, label_offsets, nearest_district, warning_norm
from streams.tools.report.charts import (
    CAI_BAND_COLOURS,
    CAI_BAR_COLOURS,
    GRADE_LABELS,
    BandSpan,
    cai_band_spans,
    parking_chart,
    pm25_chart,
    pm25_grade,
    throughput_chart,
    with_gaps,
)
from streams.tools.report.command import DEFAULT_OUT, report_command, write_report
from streams.tools.report.data import (
    DEAD_LETTER_REASONS,
    UNREADABLE_REASON,
    DeadLetterCounts,
    ReportData,
    collect,
    count_dead_letters,
    dead_letter_reason,
)
from streams.tools.report.page import CHARTS, ReportFiles, render, report_html
from streams.tools.report.queries import (
    HAZARD_COUNTERS,
    READING_KINDS,
    WARNING_COUNTERS,
    CellCount,
    ReportQueries,
    Series,
    alert_counts,
    build_queries,
    cell_counts,
    latest_lot_spots,
    series_by_tag,
    single_series,
    tag_pairs,
)
from streams.tools.report.ranges import (
    BUCKETS_S,
    DEFAULT_SINCE,
    KST,
    MAX_BUCKETS,
    MINUTE_MS,
    ReportError,
    TimeRange,
    choose_bucket_s,
    resolve_range,
)

__all__ = [
    "BUCKETS_S",
    "CAI_BAND_COLOURS",
    "CAI_BAR_COLOURS",
    "CHARTS",
    "DEAD_LETTER_REASONS",
    "DEFAULT_OUT",
    "DEFAULT_SINCE",
    "GRADE_LABELS",
    "HAZARD_COUNTERS",
    "KST",
    "MAX_BUCKETS",
    "MINUTE_MS",
    "READING_KINDS",
    "UNREADABLE_REASON",
    "WARNING_COUNTERS",
    "BandSpan",
    "CellCount",
    "DeadLetterCounts",
    "ReportData",
    "ReportError",
    "ReportFiles",
    "ReportQueries",
    "Series",
    "TimeRange",
    "adas_map",
    "alert_counts",
    "build_queries",
    "cai_band_spans",
    "cell_counts",
    "choose_bucket_s",
    "collect",
    "count_dead_letters",
    "dead_letter_reason",
    "label_offsets",
    "latest_lot_spots",
    "nearest_district",
    "parking_chart",
    "parse_duration_ms",
    "pm25_chart",
    "pm25_grade",
    "render",
    "report_command",
    "report_html",
    "resolve_range",
    "series_by_tag",
    "single_series",
    "tag_pairs",
    "throughput_chart",
    "warning_norm",
    "with_gaps",
    "write_report",
]
