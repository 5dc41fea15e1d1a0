"""The map of ADAS warnings per H3 cell, with the registry's districts and the top cells numbered."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

import h3

from streams.core.registry import Registry
from streams.kinds.taxi import COUNTERS
from streams.tools.report.charts import new_figure, no_data
from streams.tools.report.data import ReportData
from streams.tools.report.queries import WARNING_COUNTERS, CellCount
from streams.tools.report.ranges import range_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure


def district_centres(registry: Registry) -> dict[str, tuple[float, float]]:
    """Mean position of the registry's lots and stations per district."""
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    places = [(p.district, p.lat, p.lon) for p in registry.parking_lots.values()]
    places += [(p.district, p.lat, p.lon) for p in registry.env_stations.values()]
    for district, lat, lon in places:
        if district and lat is not None and lon is not None:
            points[district].append((lat, lon))
    return {
        district: (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts))
        for district, pts in points.items()
    }


def nearest_district(lat: float, lon: float, centres: Mapping[str, tuple[float, float]]) -> str | None:
    """The district whose registry centre is nearest (within 10 km), else None."""
    best: tuple[float, str] | None = None
    for district, (clat, clon) in centres.items():
        dy = (lat - clat) * 110.9
        dx = (lon - clon) * 111.3 * math.cos(math.radians(lat))
        distance = math.hypot(dx, dy)
        if distance <= 10 and (best is None or distance < best[0]):
            best = (distance, district)
    return best[1] if best else None


def warning_norm(most: int) -> Normalize:
    """The colour scale of warning counts: one colour per count up to 10, a log scale beyond."""
    from matplotlib.colors import BoundaryNorm, LogNorm

    if most <= 10:
        return BoundaryNorm([b - 0.5 for b in range(1, most + 2)], ncolors=256)
    return LogNorm(vmin=1, vmax=most)


def cell_district(cell: str, centres: Mapping[str, tuple[float, float]]) -> str | None:
    lat, lon = h3.cell_to_latlng(cell)
    return nearest_district(lat, lon, centres)


def _cell_polygon(cell: str) -> list[tuple[float, float]]:
    return [(lon, lat) for lat, lon in h3.cell_to_boundary(cell)]


def adas_map(data: ReportData, labelled: int = 8) -> Figure:
    """ADAS warnings per H3 cell on lon/lat axes (aspect corrected for the latitude)."""
    import matplotlib
    import numpy as np
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patheffects import withStroke

    figure = new_figure(12, 10)
    ax = figure.subplots()
    total = {name: sum(c.counts.get(name, 0) for c in data.cells) for name in COUNTERS}
    warnings = sum(total[name] for name in WARNING_COUNTERS)
    figure.suptitle(
        f"ADAS warnings per H3 cell (resolution 9, taxi_adas_1m), {range_text(data.time_range)}",
        fontsize=13,
        fontweight="bold",
    )
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    if not data.cells:
        ax.set_xlim(128.35, 128.77)
        ax.set_ylim(35.60, 36.02)
        ax.set_aspect(1 / math.cos(math.radians(35.81)))
        no_data(ax)
        return figure
    ax.set_title(
        f"{warnings:,} warnings: " + ", ".join(f"{name.upper()} {total[name]:,}" for name in WARNING_COUNTERS)
        + f"   ·   road hazards: pothole {total['pothole']:,}, obstacle {total['obstacle']:,}",
        fontsize=9,
    )  # fmt: skip
    quiet = [c for c in data.cells if not c.warnings]
    warned = sorted((c for c in data.cells if c.warnings), key=lambda c: c.warnings)
    ax.add_collection(
        PolyCollection([_cell_polygon(c.cell) for c in quiet], facecolors="#d9d9d9", edgecolors="none", zorder=1)
    )
    centres = district_centres(data.registry)
    if warned:
        most = warned[-1].warnings
        norm = warning_norm(most)
        collection = PolyCollection(
            [_cell_polygon(c.cell) for c in warned],
            array=[c.warnings for c in warned],
            cmap=ListedColormap(matplotlib.colormaps["YlOrRd"](np.linspace(0.3, 1.0, 256))),
            norm=norm,
            edgecolors="#7f2704",
            linewidths=0.3,
            zorder=2,
        )
        ax.add_collection(collection)
        bar = figure.colorbar(collection, ax=ax, shrink=0.7, pad=0.01)
        if isinstance(norm, BoundaryNorm):
            bar.set_ticks(
                [b + 0.5 for b in norm.boundaries[:-1]], labels=[str(int(b + 0.5)) for b in norm.boundaries[:-1]]
            )
        bar.set_label("ADAS warnings in the range (FCW, UFCW, PCW, LDW, HMW, overspeed)")
    hazard_cells = [c for c in data.cells if c.hazards]
    if hazard_cells:
        centres_ll = [h3.cell_to_latlng(c.cell) for c in hazard_cells]
        ax.scatter(
            [lon for _, lon in centres_ll], [lat for lat, _ in centres_ll], marker="^", s=18, facecolors="none",
            edgecolors="#1f3b73", linewidths=0.9, zorder=3,
        )  # fmt: skip
    lats = [lat for c in data.cells for lat, _ in h3.cell_to_boundary(c.cell)]
    lons = [lon for c in data.cells for _, lon in h3.cell_to_boundary(c.cell)]
    pad_lat = max(0.01, (max(lats) - min(lats)) * 0.04)
    pad_lon = max(0.01, (max(lons) - min(lons)) * 0.04)
    ax.set_xlim(min(lons) - pad_lon, max(lons) + pad_lon)
    ax.set_ylim(min(lats) - pad_lat, max(lats) + pad_lat)
    mid = (min(lats) + max(lats)) / 2
    ax.set_aspect(1 / math.cos(math.radians(mid)))
    ax.grid(True, color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)
    for district, (lat, lon) in sorted(centres.items()):
        ax.text(
            lon, lat, district, fontsize=13, color="#3a3a3a", style="italic", ha="center", va="center", zorder=3.5,
            path_effects=[withStroke(linewidth=3, foreground="white")], alpha=0.8,
        )  # fmt: skip
    _label_top_cells(ax, [c for c in data.cells if c.warnings][:labelled], centres)  # the order of the HTML table
    legend = [
        Line2D([], [], marker="h", linestyle="none", markersize=10, markerfacecolor="#d9d9d9", markeredgecolor="none",
               label=f"taxi readings, no warning ({len(quiet):,} cells)"),
        Line2D([], [], marker="^", linestyle="none", markersize=7, markerfacecolor="none", markeredgecolor="#1f3b73",
               label=f"pothole or obstacle reported ({len(hazard_cells):,} cells)"),
    ]  # fmt: skip
    ax.legend(handles=legend, loc="lower right", fontsize=9, framealpha=0.9)
    return figure


# where a cell's number may go, in points from the cell: close first, then further out
_LABEL_OFFSETS: Final = tuple(
    (round(radius * math.cos(math.radians(angle))), round(radius * math.sin(math.radians(angle))))
    for radius in (14, 26, 38)
    for angle in (45, 135, -45, -135, 0, 180, 90, -90)
)


def label_offsets(points: Sequence[tuple[float, float]], ax: Axes, clearance: float = 15.0) -> list[tuple[int, int]]:
    """An offset (points) per data point such that no two labels lie closer than ``clearance`` points.

    Greedy, in the given order (most important first); a label that fits nowhere takes the last
    candidate. Positions come from the axes' current data-to-display transform.
    """
    scale = 72 / ax.figure.dpi  # display pixels to points
    placed: list[tuple[float, float]] = []
    chosen = []
    for x, y in points:
        px, py = ax.transData.transform((x, y))
        base = (px * scale, py * scale)
        for dx, dy in _LABEL_OFFSETS:
            spot = (base[0] + dx, base[1] + dy)
            if all(math.hypot(spot[0] - ox, spot[1] - oy) >= clearance for ox, oy in placed):
                break
        placed.append(spot)
        chosen.append((dx, dy))
    return chosen


def _label_top_cells(ax: Axes, cells: Sequence[CellCount], centres: Mapping[str, tuple[float, float]]) -> None:
    """Number the top cells on the map and list them in a box in the upper left corner."""
    if not cells:
        return
    lines = ["most warnings"]
    positions = [h3.cell_to_latlng(cell.cell) for cell in cells]
    offsets = label_offsets([(lon, lat) for lat, lon in positions], ax)
    for rank, (cell, (lat, lon), offset) in enumerate(zip(cells, positions, offsets, strict=True), start=1):
        ax.annotate(
            str(rank), (lon, lat), xytext=offset, textcoords="offset points", fontsize=9, fontweight="bold",
            ha="center", va="center",
            bbox={"boxstyle": "circle,pad=0.2", "facecolor": "white", "edgecolor": "#7f2704", "linewidth": 0.8},
            arrowprops={"arrowstyle": "-", "color": "#7f2704", "linewidth": 0.8}, zorder=4,
        )  # fmt: skip
        district = nearest_district(lat, lon, centres)
        where = f" {district}" if district else ""
        lines.append(f"{rank}. {cell.warnings:>4}  {cell.cell}{where}")
    ax.text(
        0.01, 0.99, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", fontsize=8, family="monospace",
        bbox={"facecolor": "white", "edgecolor": "#999999", "alpha": 0.9}, zorder=5,
    )  # fmt: skip
