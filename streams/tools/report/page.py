"""The report's files: the PNG charts, ``summary.json`` and the self-contained ``report.html``."""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from streams.kinds.taxi import COUNTERS
from streams.tools.report.cellmap import adas_map, cell_district, district_centres
from streams.tools.report.charts import parking_chart, pm25_chart, throughput_chart
from streams.tools.report.data import ReportData
from streams.tools.report.queries import READING_KINDS
from streams.tools.report.ranges import bucket_text, kst_text, range_text

CHARTS: Final = (
    ("pm25.png", "PM2.5 per station", pm25_chart),
    ("parking.png", "Parking occupancy per lot", parking_chart),
    ("adas_map.png", "ADAS warnings by H3 cell", adas_map),
    ("throughput.png", "Readings and dead letters", throughput_chart),
)


@dataclass(frozen=True)
class ReportFiles:
    folder: Path
    html: Path
    charts: tuple[Path, ...]
    summary: dict[str, Any]


def render(data: ReportData, folder: Path) -> ReportFiles:
    """Write the PNGs, ``summary.json`` and ``report.html`` (PNGs embedded) into ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    folder.mkdir(parents=True, exist_ok=True)
    charts = []
    for name, _title, draw in CHARTS:
        figure = draw(data)
        path = folder / name
        figure.savefig(path, format="png", facecolor="white")
        charts.append(path)
    summary = data.summary()
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    page = folder / "report.html"
    page.write_text(report_html(data, summary, folder), encoding="utf-8")
    return ReportFiles(folder, page, tuple(charts), summary)


def _table(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def report_html(data: ReportData, summary: Mapping[str, Any], folder: Path) -> str:
    """One self-contained page: the summary table and every chart as a data URI."""
    rows: list[tuple[str, str]] = [
        ("range (KST)", range_text(data.time_range)),
        ("range (UTC)", f"{summary['range']['start_utc']} to {summary['range']['end_utc']}"),
        ("time buckets", bucket_text(data.bucket_s)),
        ("source", data.source),
    ]
    for kind in READING_KINDS:
        rows.append((f"{kind} readings", f"{summary['readings'][kind]:,}"))
    dead = summary["dead_letters"]
    if dead is None:
        rows.append(("dead letters", "not read"))
    else:
        detail = ", ".join(f"{reason} {count:,}" for reason, count in dead["by_reason"].items())
        rows.append(("dead letters", f"{dead['total']:,}" + (f" ({detail})" if detail else "")))
    pm_max = summary["pm25_max_ugm3"]
    highest = f"; highest PM2.5 mean {pm_max} µg/m³" if pm_max is not None else ""
    rows.append(("stations", f"{summary['stations']:,}{highest}"))
    rows.append(("parking lots", f"{summary['lots']:,}"))
    rows.append(
        ("H3 cells", f"{summary['cells_with_readings']:,} with taxi readings, {summary['cells_with_warnings']:,} "
                     "with warnings")
    )  # fmt: skip
    rows.append(("ADAS counts", ", ".join(f"{k} {v:,}" for k, v in summary["adas_counts"].items())))
    alerts = summary["alerts"]
    rows.append(("alerts", ", ".join(f"{k} {v:,}" for k, v in alerts.items()) if alerts else "none"))
    flagged = summary["pm25_flagged"]
    rows.append(
        (
            "PM2.5 readings flagged",
            ", ".join(f"{station} {count:,}" for station, count in flagged.items()) if flagged else "none",
        )
    )
    stuck_rows = "".join(
        f"<tr><td>{html.escape(s['station'])}</td><td>{html.escape(s['raised_utc'])}</td>"
        f"<td>{html.escape(s['cleared_utc'] or 'still stuck')}</td><td>{html.escape(s['message'])}</td></tr>"
        for s in summary["stuck_stations"]
    )
    stuck_table = (
        "<table><tr><th>station</th><th>stuck since (UTC)</th><th>varies again (UTC)</th><th>alert</th></tr>"
        f"{stuck_rows}</table>"
        if stuck_rows
        else "<p>No station was stuck in the range.</p>"
    )
    top = [c for c in data.cells if c.warnings][:10]
    centres = district_centres(data.registry)
    top_rows = "".join(
        f"<tr><td>{rank}</td><td><code>{c.cell}</code></td>"
        f"<td>{html.escape(cell_district(c.cell, centres) or '')}</td>"
        f"<td>{c.warnings:,}</td><td>{c.readings:,}</td>"
        f"<td>{', '.join(f'{n} {c.counts[n]}' for n in COUNTERS if c.counts.get(n))}</td></tr>"
        for rank, c in enumerate(top, start=1)
    )
    sections = []
    for name, title, _draw in CHARTS:
        encoded = base64.b64encode((folder / name).read_bytes()).decode("ascii")
        sections.append(
            f'<section><h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{encoded}"></section>'
        )
    generated = kst_text(int(time.time() * 1000))
    cells_table = (
        "<table><tr><th>#</th><th>H3 cell</th><th>district</th><th>warnings</th><th>readings</th><th>counts</th></tr>"
        f"{top_rows}</table>"
        if top_rows
        else "<p>No ADAS warnings in the range.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>citystream report, {html.escape(range_text(data.time_range))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1560px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ text-align: left; padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; vertical-align: top; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
section {{ margin-bottom: 2em; }}
</style>
</head>
<body>
<h1>citystream report</h1>
<p>{html.escape(range_text(data.time_range))}. Generated {html.escape(generated)}. Times on the charts are
Korea Standard Time (KST, UTC+9).</p>
<h2>Summary</h2>
{_table(rows)}
<h2>Stuck stations (device.stuck)</h2>
{stuck_table}
<h2>Cells with the most ADAS warnings</h2>
{cells_table}
{"".join(sections)}
</body>
</html>
"""
