"""What a run shows: the progress bar and line while it runs, and the summary at the end (rich)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from schemas.readings import SOURCE_TOPICS, SourceKind
from streams.tools.simulate.clock import KST
from streams.tools.simulate.invalid import MESSAGE_REASONS
from streams.tools.simulate.options import SimulationOptions, SimulationReport

ProgressCallback = Callable[[SimulationReport], None]


@contextlib.contextmanager
def progress_display(
    console: Any | None, options: SimulationOptions, on_progress: ProgressCallback | None
) -> Iterator[ProgressCallback]:
    """A callback that updates a rich progress bar on ``console`` and calls ``on_progress``."""
    if console is None:
        yield on_progress or (lambda report: None)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        BarColumn(bar_width=16), TimeElapsedColumn(), TextColumn("{task.description}"), console=console
    ) as bar:
        task = bar.add_task("starting", total=options.duration_s)

        def show(report: SimulationReport) -> None:
            bar.update(task, completed=min(report.elapsed_s, options.duration_s), description=progress_line(report))
            if on_progress is not None:
                on_progress(report)

        yield show


def _kst_text(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, KST).strftime("%Y-%m-%d %H:%M:%S KST")


def progress_line(report: SimulationReport) -> str:
    """Readings, messages, rate, invalid sent and simulated time (the bar shows elapsed)."""
    simulated = datetime.fromtimestamp((report.simulated_end_ms or report.simulated_start_ms) / 1000, KST)
    return (
        f"{report.valid_readings:,} readings, {report.messages:,} msgs, "
        f"{report.readings_per_s:,.0f}/s, {report.expected_dead_letters:,} invalid, "
        f"sim {simulated:%m-%d %H:%M:%S}"
    )


def render_summary(report: SimulationReport) -> Any:
    """The end-of-run summary as a rich renderable."""
    from rich.console import Group
    from rich.table import Table

    topics = Table(title="Sent (acknowledged by the broker)", title_justify="left")
    for column in ("topic", "readings", "messages", "batches", "duplicates"):
        topics.add_column(column, justify="left" if column == "topic" else "right")
    for kind in SourceKind:
        topic = SOURCE_TOPICS[kind]
        topics.add_row(
            topic,
            f"{report.readings_by_topic[topic]:,}",
            f"{report.messages_by_topic[topic]:,}",
            f"{report.batches_by_topic[topic]:,}",
            f"{report.duplicates_by_topic[topic]:,}",
        )
    topics.add_row(
        "total",
        f"{report.valid_readings:,}",
        f"{report.messages:,}",
        f"{sum(report.batches_by_topic.values()):,}",
        f"{report.duplicates:,}",
        style="bold",
    )
    invalid = Table(title="Invalid on purpose, by the dead-letter reason they should get", title_justify="left")
    invalid.add_column("reason")
    invalid.add_column("messages", justify="right")
    invalid.add_column("batch elements", justify="right")
    for reason in MESSAGE_REASONS:
        invalid.add_row(
            reason, f"{report.invalid_by_reason[reason]:,}", f"{report.invalid_elements_by_reason[reason]:,}"
        )
    invalid.add_row("total", f"{report.invalid_messages:,}", f"{report.invalid_elements:,}", style="bold")
    lines = [
        f"{report.elapsed_s:.1f} s, {report.readings_per_s:,.0f} readings/s to "
        f"{report.bootstrap}; {report.taxis} taxis; seed {report.seed}",
        f"simulated {_kst_text(report.simulated_start_ms)} .. "
        f"{_kst_text(report.simulated_end_ms)} (speedup {report.speedup:g})",
        f"expected dead letters: {report.expected_dead_letters:,}",
    ]
    if report.registry_path is not None:
        lines.append(f"registry written to {report.registry_path}")
    parts: list[Any] = [topics, invalid, *lines]
    if report.failed:
        failed = ", ".join(f"{name}: {count}" for name, count in sorted(report.failed.items()))
        parts.append(f"[yellow]refused by the broker: {failed}[/yellow]")
    return Group(*parts)
