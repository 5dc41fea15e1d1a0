"""Unit tests for streams.tools.report: time ranges, queries, query results to series, CAI bands, charts."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import h3
import orjson
import pytest
from click.testing import CliRunner

from streams.core.registry import LotInfo, Registry, StationInfo
from streams.tools import report
from streams.tools.report import (
    CellCount,
    DeadLetterCounts,
    ReportData,
    ReportError,
    Series,
    TimeRange,
    alert_counts,
    build_queries,
    cai_band_spans,
    cell_counts,
    choose_bucket_s,
    dead_letter_reason,
    label_offsets,
    latest_lot_spots,
    nearest_district,
    pm25_grade,
    render,
    resolve_range,
    series_by_tag,
    single_series,
    tag_pairs,
    warning_norm,
    with_gaps,
)
from streams.tools.report.queries import FlaggedReading, StuckStation, flagged_readings, stuck_stations

T0 = 1_795_300_000_000  # 2026-11-21T21:46:40Z
M0 = T0 - T0 % 60_000  # 21:46:00Z, a minute boundary
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- time range --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "ms"),
    [
        ("90s", 90_000),
        ("1h30m", 5_400_000),
        ("2d", 172_800_000),
        ("1w", 7 * 86_400_000),  # as citystream deadletters --since takes it (streams.core.durations)
        (" 1H ", 3_600_000),
    ],
)
def test_since_takes_the_durations_of_every_tool(since: str, ms: int) -> None:
    assert resolve_range(since, None, None, now_ms=T0) == TimeRange(T0 - ms, T0)


@pytest.mark.parametrize("since", ["0m", "0s", "0h0m"])
def test_since_must_be_longer_than_zero(since: str) -> None:
    with pytest.raises(ReportError, match="the duration must be longer than zero"):
        resolve_range(since, None, None, now_ms=T0)


def test_range_since_ends_now() -> None:
    assert resolve_range("30m", None, None, now_ms=T0) == TimeRange(T0 - 1_800_000, T0)


def test_range_default_is_the_last_hour() -> None:
    assert resolve_range(None, None, None, now_ms=T0) == TimeRange(T0 - 3_600_000, T0)


def test_range_from_to_with_offsets() -> None:
    time_range = resolve_range(None, "2026-11-21T18:00:00+09:00", "2026-11-21T10:00:00Z", now_ms=T0)
    assert time_range.start_ms == 1_795_251_600_000  # 09:00Z
    assert time_range.end_ms == 1_795_255_200_000  # 10:00Z
    assert time_range.duration_ms == 3_600_000


def test_range_since_before_to() -> None:
    time_range = resolve_range("2h", None, "2026-11-21T10:00:00Z", now_ms=T0)
    assert time_range == TimeRange(1_795_255_200_000 - 7_200_000, 1_795_255_200_000)


@pytest.mark.parametrize(
    ("since", "start", "end", "message"),
    [
        ("1h", "2026-11-21T09:00:00Z", None, "not both"),
        (None, "2026-11-21T09:00:00", None, "--from"),  # no offset
        (None, None, "yesterday", "--to"),
        ("soon", None, None, "--since"),
        (None, "2026-11-21T10:00:00Z", "2026-11-21T09:00:00Z", "empty"),
    ],
)
def test_bad_ranges(since: str | None, start: str | None, end: str | None, message: str) -> None:
    with pytest.raises(ReportError, match=message):
        resolve_range(since, start, end, now_ms=T0)


def test_window_start_is_the_minute_of_the_start() -> None:
    assert TimeRange(M0 + 30_500, M0 + 120_000).window_start_ms == M0
    assert TimeRange(M0, M0 + 120_000).window_start_ms == M0


@pytest.mark.parametrize(
    ("duration_ms", "bucket_s"),
    [
        (60_000, 60),
        (3_600_000, 60),
        (6 * 3_600_000, 60),
        (6 * 3_600_000 + 1, 300),
        (86_400_000, 300),
        (7 * 86_400_000, 1800),
        (400 * 86_400_000, 86400),
    ],
)
def test_bucket_keeps_series_short(duration_ms: int, bucket_s: int) -> None:
    assert choose_bucket_s(duration_ms) == bucket_s


# --- queries -----------------------------------------------------------------------------------


def test_queries_use_the_contract_names_and_the_range() -> None:
    time_range = TimeRange(M0 + 30_000, T0 + 3_600_000)
    window_start = M0
    queries = build_queries(time_range, 60)
    assert queries.pm25.startswith('SELECT mean("pm25_ugm3_mean") AS "pm25" FROM "environment_1m" ')
    assert f"time >= {window_start}ms AND time < {T0 + 3_600_000}ms" in queries.pm25
    assert 'GROUP BY time(60s), "device_id", "district" fill(none)' in queries.pm25
    assert 'last("occupancy")' in queries.parking and 'FROM "parking_1m"' in queries.parking
    assert 'GROUP BY time(60s), "lot_id"' in queries.parking
    for counter in ("fcw", "ufcw", "pcw", "ldw", "hmw", "overspeed", "pothole", "obstacle"):
        assert f'sum("{counter}") AS "{counter}"' in queries.cells
    assert queries.cells.endswith(
        'FROM "taxi_adas_1m" WHERE ' + f'time >= {window_start}ms AND time < {T0 + 3_600_000}ms GROUP BY "cell"'
    )
    assert 'sum("readings")' in queries.taxi_readings and '"taxi_adas_1m"' in queries.taxi_readings
    assert 'sum("readings")' in queries.environment_readings and '"environment_1m"' in queries.environment_readings
    # raw parking points (heartbeats included) are selected by their own time, not the window's
    assert queries.parking_readings == (
        f'SELECT count("occupied") AS "readings" FROM "parking" WHERE time >= {M0 + 30_000}ms AND '
        f"time < {T0 + 3_600_000}ms GROUP BY time(60s) fill(0)"
    )
    assert 'FROM "alerts"' in queries.alerts and 'GROUP BY "kind", "status"' in queries.alerts
    # an alert's time is its window's end: up to the end of the range's last minute
    assert f"time >= {M0 + 30_001}ms AND time < {M0 + 3_660_001}ms" in queries.alerts
    # flagged PM2.5 readings: raw points in the range; device.stuck: every alert up to the range's end
    assert queries.flagged.startswith('SELECT "pm25_ugm3", "qc", "qc_tests" FROM "environment" WHERE ')
    assert f"time >= {M0 + 30_000}ms AND time < {T0 + 3_600_000}ms" in queries.flagged
    assert "\"kind\" = 'device.stuck'" in queries.stuck and f"time < {T0 + 3_600_000}ms" in queries.stuck
    assert len(queries.items()) == 9


def test_flagged_readings_and_stuck_stations_from_their_results() -> None:
    flagged = flagged_readings(
        [
            _series("environment", {"device_id": "env-b"}, ["time", "pm25_ugm3", "qc", "qc_tests"],
                    [[T0 + 2, 350.0, 3, "pm25_ugm3:spike"], [T0 + 1, 42.0, 4, "pm25_ugm3:flat_line"]]),
            _series("environment", {"device_id": "env-a"}, ["time", "pm25_ugm3", "qc", "qc_tests"],
                    [[T0, None, 3, "pm25_ugm3:spike"]]),
        ]
    )  # fmt: skip
    assert flagged == {
        "env-b": [
            FlaggedReading(T0 + 1, 42.0, 4, "pm25_ugm3:flat_line"),
            FlaggedReading(T0 + 2, 350.0, 3, "pm25_ugm3:spike"),
        ]
    }
    hour = 3_600_000
    stuck = stuck_stations(
        [
            _series("alerts", {"subject_id": "env-a", "status": "raised"}, ["time", "message"],
                    [[T0 - 3 * hour, "old"], [T0 + hour // 2, "a stuck"]]),
            _series("alerts", {"subject_id": "env-a", "status": "cleared"}, ["time", "message"],
                    [[T0 - 2 * hour, "over before the range"]]),
            _series("alerts", {"subject_id": "env-b", "status": "raised"}, ["time", "message"],
                    [[T0 - hour, "b stuck"]]),
            _series("alerts", {"subject_id": "env-b", "status": "cleared"}, ["time", "message"],
                    [[T0 + hour // 4, "b varies"]]),
        ],
        T0,
    )  # fmt: skip
    assert stuck == [
        StuckStation("env-b", T0 - hour, T0 + hour // 4, "b stuck"),
        StuckStation("env-a", T0 + hour // 2, None, "a stuck"),
    ]


def test_queries_follow_the_bucket() -> None:
    queries = build_queries(TimeRange(T0, T0 + 86_400_000), 300)
    assert "GROUP BY time(300s)" in queries.pm25 and "GROUP BY time(300s)" in queries.taxi_readings


# --- query results to series -------------------------------------------------------------------


def _series(name: str, tags: dict[str, str] | None, columns: list[str], values: list[list[Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {"name": name, "columns": columns, "values": values}
    if tags is not None:
        document["tags"] = tags
    return document


def test_series_by_tag_sorts_merges_and_drops_nulls() -> None:
    result = [
        _series(
            "environment_1m",
            {"device_id": "env-b", "district": "jung"},
            ["time", "pm25"],
            [[T0 + 60_000, 20.5], [T0, 10.0], [T0 + 120_000, None]],
        ),
        _series("environment_1m", {"device_id": "env-a", "district": "seo"}, ["time", "pm25"], [[T0, 80.0]]),
        _series("environment_1m", {"device_id": "env-c", "district": "nam"}, ["time", "pm25"], [[T0, None]]),
    ]
    lines = series_by_tag(result, "device_id", "pm25")
    assert list(lines) == ["env-a", "env-b"]  # sorted; env-c had only nulls
    assert lines["env-b"].times_ms == [T0, T0 + 60_000]
    assert lines["env-b"].values == [10.0, 20.5]
    assert lines["env-b"].total == 30.5
    assert tag_pairs(result, "device_id", "district") == {"env-b": "jung", "env-a": "seo", "env-c": "nam"}


def test_single_series_and_empty_results() -> None:
    result = [_series("taxi_adas_1m", None, ["time", "readings"], [[T0, 5], [T0 + 60_000, 0]])]
    assert single_series(result, "readings") == Series([T0, T0 + 60_000], [5.0, 0.0])
    assert single_series([], "readings") == Series()
    assert series_by_tag([], "lot_id", "occupancy") == {}


def test_cell_counts_most_warnings_first() -> None:
    columns = ["time", "readings", "fcw", "ufcw", "pcw", "ldw", "hmw", "overspeed", "pothole", "obstacle"]
    result = [
        _series("taxi_adas_1m", {"cell": "c-quiet"}, columns, [[0, 50, 0, 0, 0, 0, 0, 0, 0, 0]]),
        _series("taxi_adas_1m", {"cell": "c-hot"}, columns, [[0, 10, 2, 1, 1, 0, 3, 0, 1, 0]]),
        _series("taxi_adas_1m", {"cell": "c-warm"}, columns, [[0, 10, 0, 0, 0, 1, 0, None, 0, 2]]),
    ]
    cells = cell_counts(result)
    assert [c.cell for c in cells] == ["c-hot", "c-warm", "c-quiet"]
    assert (cells[0].warnings, cells[0].hazards, cells[0].readings) == (7, 1, 10)
    assert (cells[1].warnings, cells[1].hazards) == (1, 2)
    assert cells[2].warnings == 0 and cells[2].counts["overspeed"] == 0


def test_latest_lot_spots_and_alert_counts() -> None:
    parking = [
        _series(
            "parking_1m",
            {"lot_id": "lot-1"},
            ["time", "occupancy", "occupied", "capacity"],
            [[T0, 0.5, 40, 80], [T0 + 60_000, 0.55, 44, 80]],
        ),
    ]
    assert latest_lot_spots(parking) == {"lot-1": (44, 80)}
    alerts = [
        _series("alerts", {"kind": "parking.lot_full", "status": "raised"}, ["time", "alerts"], [[0, 2]]),
        _series("alerts", {"kind": "air.pm25_advisory", "status": "cleared"}, ["time", "alerts"], [[0, 1]]),
    ]
    assert alert_counts(alerts) == {"air.pm25_advisory cleared": 1, "parking.lot_full raised": 2}


def test_lines_break_at_missing_buckets() -> None:
    line = Series([M0, M0 + 60_000, M0 + 240_000, M0 + 300_000], [1.0, 2.0, 3.0, 4.0])
    times, values = with_gaps(line, 60_000)
    assert times == [M0, M0 + 60_000, M0 + 120_000, M0 + 240_000, M0 + 300_000]
    assert values[:2] == [1.0, 2.0] and math.isnan(values[2]) and values[3:] == [3.0, 4.0]
    assert with_gaps(Series(), 60_000) == ([], [])


# --- dead letters ------------------------------------------------------------------------------


def test_dead_letter_reasons() -> None:
    assert dead_letter_reason(orjson.dumps({"reason": "schema", "payload": "{}"})) == "schema"
    assert dead_letter_reason(b"not json") == "(unreadable)"
    assert dead_letter_reason(b"[1, 2]") == "(unreadable)"
    assert dead_letter_reason(None) == "(unreadable)"
    assert dead_letter_reason(orjson.dumps({"reason": 3})) == "(unreadable)"


def test_dead_letter_counts_per_bucket() -> None:
    counts = DeadLetterCounts(60_000)
    counts.add(T0 - T0 % 60_000 + 5, "schema")
    counts.add(T0 - T0 % 60_000 + 59_999, "schema")
    counts.add(T0 - T0 % 60_000 + 60_000, "too_large")
    assert counts.total == 3
    assert counts.by_reason == Counter({"schema": 2, "too_large": 1})
    lines = counts.series()
    start = T0 - T0 % 60_000
    assert lines["schema"] == Series([start, start + 60_000], [2.0, 0.0])
    assert lines["too_large"] == Series([start, start + 60_000], [0.0, 1.0])


# --- CAI bands ---------------------------------------------------------------------------------


def test_pm25_bands_are_contiguous_and_follow_the_breakpoints() -> None:
    spans = cai_band_spans()
    assert [(s.low, s.high, s.grade) for s in spans] == [
        (0.0, 16.0, "good"),
        (16.0, 36.0, "moderate"),
        (36.0, 76.0, "unhealthy"),
        (76.0, math.inf, "very_unhealthy"),
    ]
    assert [s.label for s in spans] == ["good (0-15)", "moderate (16-35)", "unhealthy (36-75)", "very unhealthy (76+)"]
    assert len({s.colour for s in spans}) == 4


@pytest.mark.parametrize(
    ("value", "grade"),
    [
        (0, "good"),
        (15.9, "good"),
        (16, "moderate"),
        (35.99, "moderate"),
        (36, "unhealthy"),
        (75.5, "unhealthy"),
        (76, "very_unhealthy"),
        (900, "very_unhealthy"),
    ],
)
def test_pm25_grade_truncates_like_the_cai(value: float, grade: str) -> None:
    assert pm25_grade(value) == grade


def test_pm10_bands() -> None:
    assert [s.low for s in cai_band_spans("pm10_ugm3")] == [0.0, 31.0, 81.0, 151.0]


# --- map helpers -------------------------------------------------------------------------------


def test_nearest_district() -> None:
    centres = {"jung": (35.8694, 128.5939), "suseong": (35.8400, 128.6480)}
    assert nearest_district(35.8700, 128.5950, centres) == "jung"
    assert nearest_district(35.8390, 128.6400, centres) == "suseong"
    assert nearest_district(36.5, 127.0, centres) is None  # far from every district
    assert nearest_district(35.87, 128.59, {}) is None


def test_labels_of_neighbouring_cells_keep_apart() -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 6), dpi=100)
    ax = figure.subplots()
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    points = [(50.0, 50.0), (50.2, 50.1), (50.1, 49.9), (10.0, 10.0)]
    offsets = label_offsets(points, ax, clearance=15)
    assert offsets[0] == offsets[3] == (10, 10)  # the first and a far one take the first place
    scale = 72 / figure.dpi
    spots = []
    for (x, y), (dx, dy) in zip(points, offsets, strict=True):
        px, py = ax.transData.transform((x, y))
        spots.append((px * scale + dx, py * scale + dy))
    for i, a in enumerate(spots):
        for b in spots[i + 1 :]:
            assert math.dist(a, b) >= 15


def test_warning_norm_is_discrete_for_small_counts() -> None:
    from matplotlib.colors import BoundaryNorm, LogNorm

    small = warning_norm(4)
    assert isinstance(small, BoundaryNorm) and list(small.boundaries) == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert isinstance(warning_norm(50), LogNorm)


# --- charts and files --------------------------------------------------------------------------


def _empty_data() -> ReportData:
    time_range = TimeRange(T0, T0 + 600_000)
    return ReportData(
        time_range=time_range,
        bucket_s=60,
        pm25={},
        station_districts={},
        occupancy={},
        lot_spots={},
        cells=[],
        readings={kind: Series() for kind in report.READING_KINDS},
        dead_letters=DeadLetterCounts(60_000),
        alerts={},
    )


def _texts(figure: Any) -> list[str]:
    return [text.get_text() for ax in figure.get_axes() for text in ax.texts]


def test_empty_data_says_so_in_every_chart(tmp_path: Path) -> None:
    data = _empty_data()
    for _name, _title, draw in report.CHARTS:
        assert "no data in range" in _texts(draw(data))
    files = render(data, tmp_path)
    for chart in files.charts:
        assert chart.read_bytes().startswith(PNG_MAGIC)
    assert files.summary["readings"] == {"taxi": 0, "parking": 0, "environment": 0}
    assert files.summary["dead_letters"] == {"total": 0, "by_reason": {}}
    assert files.summary["pm25_max_ugm3"] is None
    page = files.html.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 4
    assert "No ADAS warnings in the range." in page


def _sample_data() -> ReportData:
    minute = T0 - T0 % 60_000
    time_range = TimeRange(minute, minute + 5 * 60_000)
    cell = h3.latlng_to_cell(35.8694, 128.5939, 9)
    other = h3.latlng_to_cell(35.8400, 128.6480, 9)
    dead = DeadLetterCounts(60_000)
    dead.add(minute + 1000, "schema")
    dead.add(minute + 61_000, "malformed_json")
    times = [minute + i * 60_000 for i in range(5)]
    return ReportData(
        time_range=time_range,
        bucket_s=60,
        pm25={"env-jung-01": Series(times, [10, 20, 40, 90, 30]), "env-seo-01": Series(times[:2], [12, 14])},
        station_districts={"env-jung-01": "jung", "env-seo-01": "seo"},
        occupancy={"lot-a": Series(times, [0.1, 0.5, 0.96, 0.9, 0.8])},
        lot_spots={"lot-a": (64, 80)},
        cells=[
            CellCount(cell, 30, {"fcw": 2, "pcw": 1, "pothole": 1}),
            CellCount(other, 12, {}),
        ],
        readings={
            "taxi": Series(times, [100, 120, 90, 0, 50]),
            "parking": Series(times, [1, 0, 0, 0, 2]),
            "environment": Series(times, [2, 2, 2, 2, 2]),
        },
        dead_letters=dead,
        alerts={"parking.lot_full raised": 1},
        registry=Registry(
            parking_lots={"lot-a": LotInfo(capacity=80, district="jung", lat=35.87, lon=128.59)},
            env_stations={"env-seo-01": StationInfo(district="seo", lat=35.8718, lon=128.5592)},
        ),
    )


def test_summary_and_html(tmp_path: Path) -> None:
    data = _sample_data()
    files = render(data, tmp_path)
    summary = files.summary
    assert summary["readings"] == {"taxi": 360, "parking": 3, "environment": 10}
    assert summary["dead_letters"] == {"total": 2, "by_reason": {"malformed_json": 1, "schema": 1}}
    assert summary["stations"] == 2 and summary["lots"] == 1
    assert summary["pm25_max_ugm3"] == 90
    assert (summary["cells_with_readings"], summary["cells_with_warnings"]) == (2, 1)
    assert summary["adas_counts"]["fcw"] == 2 and summary["adas_counts"]["pothole"] == 1
    assert orjson.loads((tmp_path / "summary.json").read_bytes()) == summary
    page = files.html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("data:image/png;base64,") == 4
    assert 'src="pm25.png"' not in page  # embedded, not linked
    assert "parking.lot_full raised 1" in page
    assert data.cells[0].cell in page  # the top cells table
    for chart in files.charts:
        assert chart.read_bytes().startswith(PNG_MAGIC)
        assert chart.stat().st_size > 10_000


def test_pm25_chart_shades_the_bands_and_ranks_the_stations() -> None:
    from matplotlib.patches import Rectangle

    figure = report.pm25_chart(_sample_data())
    axes = figure.get_axes()
    jung = next(ax for ax in axes if ax.get_title(loc="left") == "jung")
    shaded = sorted(
        (round(p.get_y(), 3), round(p.get_y() + p.get_height(), 3))
        for p in jung.patches
        if isinstance(p, Rectangle) and p.get_width() >= 0.99  # full-width band stripes (axes coordinates)
    )
    top = jung.get_ylim()[1]
    assert shaded == [(0, 16), (16, 36), (36, 76), (76, round(top, 3))]
    assert top >= 90  # the highest value fits
    ranking = next(ax for ax in axes if ax.get_title(loc="left") == "mean over the range, per station")
    assert [t.get_text() for t in ranking.get_yticklabels()] == ["env-seo-01", "env-jung-01"]  # highest on top


def test_map_numbers_the_top_cells_like_the_table() -> None:
    data = _sample_data()
    box = next(t for t in _texts(report.adas_map(data)) if t.startswith("most warnings"))
    assert box.splitlines()[1:] == [f"1.    3  {data.cells[0].cell} jung"]  # the quiet cell is not listed


def test_no_dead_letters_read(tmp_path: Path) -> None:
    data = _sample_data()
    data.dead_letters = None
    figure = report.throughput_chart(data)
    assert "dead letters not read" in _texts(figure)
    assert render(data, tmp_path).summary["dead_letters"] is None


# --- the command -------------------------------------------------------------------------------


def test_command_rejects_a_bad_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CITYSTREAM_INFLUX_API", raising=False)
    result = CliRunner().invoke(report.report_command, ["--since", "1h", "--from", "2026-11-21T09:00:00Z"])
    assert result.exit_code == 2
    assert "give --since or --from, not both" in result.output


def test_command_names_the_setting_when_influxdb_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.tools.localstack import free_port

    monkeypatch.setenv("CITYSTREAM_INFLUX_URL", f"http://127.0.0.1:{free_port()}")
    result = CliRunner().invoke(report.report_command, ["--out", str(tmp_path), "--no-dead-letters"])
    assert result.exit_code == 1
    assert "is not reachable" in result.output and "CITYSTREAM_INFLUX_URL" in result.output


def test_help_mentions_influxdb_2_compatibility() -> None:
    result = CliRunner().invoke(report.report_command, ["--help"])
    assert result.exit_code == 0
    assert "DBRP mapping" in result.output and "Authorization: Token" in result.output


def test_dead_letters_are_read_with_the_kafka_security_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SASL in the settings, the report's dead-letter reader gets them, as every other Kafka client."""
    import os
    import urllib.request

    import aiokafka
    from aiokafka.errors import KafkaConnectionError

    import streams.clients.kafka

    for name in list(os.environ):
        if name.startswith("CITYSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CITYSTREAM_KAFKA_BOOTSTRAP", "broker.example.org:9096")
    monkeypatch.setenv("CITYSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("CITYSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("CITYSTREAM_KAFKA_SASL_USERNAME", "city")
    monkeypatch.setenv("CITYSTREAM_KAFKA_SASL_PASSWORD", "Sasl-Pa55word-7f3a")

    class Answer:  # an empty InfluxQL result for every query
        def __enter__(self) -> Answer:
            return self

        def __exit__(self, *args: object) -> None:
            return None

        def read(self) -> bytes:
            return b'{"results": [{"statement_id": 0}]}'

    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: Answer())
    consumers: list[dict[str, Any]] = []

    class Consumer:  # records its arguments; the broker does not answer
        def __init__(self, *topics: str, **kwargs: Any) -> None:
            consumers.append(kwargs)

        async def start(self) -> None:
            raise KafkaConnectionError("no broker here")

        async def stop(self) -> None:
            return None

    # the project's reader (streams.clients.kafka), and any consumer made straight from aiokafka
    monkeypatch.setattr(streams.clients.kafka, "AIOKafkaConsumer", Consumer)
    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", Consumer)
    result = CliRunner().invoke(report.report_command, ["--since", "1h", "--out", str(tmp_path / "report")])
    assert result.exit_code == 1, result.output
    assert "not reachable" in result.output
    assert len(consumers) == 1
    options = consumers[0]
    assert options["bootstrap_servers"] == ["broker.example.org:9096"]
    assert options["group_id"] is None and options["enable_auto_commit"] is False
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "city"
    assert options["sasl_plain_password"] == "Sasl-Pa55word-7f3a"
