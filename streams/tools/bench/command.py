"""``citystream bench``: the command, its summary and its table."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas.readings import SourceKind
from streams.tools import localstack
from streams.tools.bench.load import batch_messages, single_messages
from streams.tools.bench.measure import Latency, RampStep, Throughput, percentile
from streams.tools.bench.phases import Bench

PHASES = {"single", "batch", "latency", "capacity"}
RAMP_FACTOR = 1.25
CAPACITY_P99_S = 2.0  # the latency a sustained rate keeps produce-to-InfluxDB p99 within


@click.command("bench")
@click.option(
    "--readings", type=click.IntRange(min=1000), default=500_000, show_default=True, help="Readings per shape."
)
@click.option(
    "--batch-size", type=click.IntRange(1, 1000), default=100, show_default=True, help="Readings per batch envelope."
)
@click.option(
    "--devices",
    type=click.IntRange(min=10),
    default=100_000,
    show_default=True,
    help="Distinct devices of the single-reading phase (the worker's peak RSS is measured there).",
)
@click.option(
    "--kind",
    "only_kind",
    type=click.Choice(["taxi", "parking", "environment"]),
    default=None,
    help="Readings of this kind only in the single and batch phases, from --devices devices of it "
    "(default: the city's mix).",
)
@click.option(
    "--rate", type=click.FloatRange(min=1), default=5000.0, show_default=True, help="Readings/s of the latency phase."
)
@click.option(
    "--latency-seconds",
    type=click.FloatRange(min=10),
    default=150.0,
    show_default=True,
    help="Length of the latency phase (alerts come once a minute, when the windows are final).",
)
@click.option(
    "--capacity-start",
    type=click.FloatRange(min=100),
    default=2500.0,
    show_default=True,
    help="Readings/s of the capacity ramp's first step; each next step is 1.25 times faster.",
)
@click.option(
    "--capacity-step-seconds",
    type=click.FloatRange(min=10),
    default=30.0,
    show_default=True,
    help="Length of each step of the capacity ramp.",
)
@click.option(
    "--capacity-max",
    type=click.FloatRange(min=100),
    default=None,
    help="Readings/s past which the capacity ramp stops even while it holds (default: no limit).",
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/bench"),
    show_default=True,
    help="Folder for the stacks, the workers' state and logs (emptied first).",
)
@click.option(
    "--profile",
    is_flag=True,
    help="Record the worker of each phase with py-spy (pip install py-spy): DIR/profile-<phase>.svg.",
)
@click.option(
    "--broker",
    type=click.Choice(["tansu", "kafka"]),
    default="tansu",
    show_default=True,
    help="The Kafka broker of each phase's stack: Tansu, or Apache Kafka (a KRaft node; `citystream local "
    "install --kafka` fetches its jars).",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="With N > 1, the single and batch phases run again with `citystream worker --processes N` "
    "(one consumer group), and the figures of both runs are reported side by side.",
)
@click.option(
    "--phases",
    default="single,batch,latency,capacity",
    show_default=True,
    help="Which phases to run, comma-separated; the figures of the others are null.",
)
@click.option(
    "--worker-setting",
    "worker_settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="A CITYSTREAM_* setting for the workers, e.g. CITYSTREAM_CHECKPOINT_INTERVAL_S=5 (repeatable).",
)
def bench_command(
    readings: int,
    batch_size: int,
    devices: int,
    only_kind: str | None,
    rate: float,
    latency_seconds: float,
    capacity_start: float,
    capacity_step_seconds: float,
    capacity_max: float | None,
    folder: Path,
    profile: bool,
    worker_settings: tuple[str, ...],
    phases: str,
    broker: str,
    processes: int,
) -> None:
    """Measure one worker: readings/s with single readings and with batch envelopes, against a baseline
    loop (aiokafka getmany + orjson + pydantic) on the same messages in the same run; produce-to-InfluxDB
    latency at a fixed rate; alert latency; peak memory with many devices; CPU seconds per reading of the
    worker and of the baseline loop; the capacity: the highest rate of single-reading messages whose
    produce-to-InfluxDB p99 stays within 2 s (a ramp of steps 1.25 times faster, from --capacity-start).

    Each phase starts its own broker (Tansu, or Apache Kafka with --broker kafka) and InfluxDB (Debian's
    influxdb package, installed when missing, as root). The last line printed is one JSON object with
    the figures and the broker they were measured on.
    """
    console = Console()
    try:  # InfluxDB comes from Debian's package: installed when missing, as `citystream local up` does
        localstack.install_packages(echo=console.print)
    except localstack.InstallError as exc:
        raise click.ClickException(str(exc)) from None
    folder = folder.resolve()
    chosen = {phase.strip() for phase in phases.split(",") if phase.strip()}
    if not chosen or chosen - PHASES:
        raise click.BadParameter(f"choose among {', '.join(sorted(PHASES))}", param_hint="--phases")
    phases = ",".join(sorted(chosen))
    timeout_s = max(600.0, readings / 500)
    only = None if only_kind is None else SourceKind(only_kind).topic
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        if profile and shutil.which("py-spy") is None:
            raise click.UsageError("--profile needs py-spy on the PATH: pip install py-spy")
        settings = {}
        for item in worker_settings:
            name, equals, value = item.partition("=")
            if not equals or not name.startswith("CITYSTREAM_"):
                raise click.BadParameter(f"{item!r} is not CITYSTREAM_NAME=VALUE", param_hint="--worker-setting")
            settings[name] = value
        bench = Bench(folder, console, progress, profile, settings, broker=broker)
        single = batch = latency = None
        ramp: list[RampStep] = []
        more: dict[str, Throughput] = {}  # the same phases with several worker processes
        for count in sorted({1, processes}):
            suffix = "" if count == 1 else f"-{count}p"
            if "single" in phases:
                start_ms = time.time_ns() // 1_000_000 - 300_000
                messages = single_messages(readings, devices, start_ms, 240_000, only=only)
                run = bench.throughput("single" + suffix, messages, readings, 1, timeout_s, count)
                single = run if count == 1 else single
                if count > 1:
                    more["single"] = run
            if "batch" in phases:
                start_ms = time.time_ns() // 1_000_000 - 300_000
                messages = batch_messages(readings, batch_size, start_ms, 240_000, only=only)
                run = bench.throughput("batch" + suffix, messages, readings, batch_size, timeout_s, count)
                batch = run if count == 1 else batch
                if count > 1:
                    more["batch"] = run
        if "latency" in phases:
            latency = bench.latency(rate, latency_seconds)
        if "capacity" in phases:
            ramp = bench.capacity(capacity_start, RAMP_FACTOR, capacity_step_seconds, CAPACITY_P99_S, capacity_max)
    figures = {
        **summarise(single, batch, latency),
        "capacity_readings_per_s": capacity(ramp),
        **processes_figures(processes, more.get("single"), more.get("batch")),
        "broker": broker,
        "kind": only_kind,
    }
    console.print(figures_table(figures, single, batch, latency, batch_size=batch_size, rate=rate, devices=devices))
    if more:
        console.print(processes_table(processes, single, batch, more))
    if ramp:
        console.print(ramp_table(ramp))
    for path in bench.profiles:
        console.print(f"profile: {path}")
    click.echo(json.dumps(figures))


def _round(value: float | None, digits: int = 0) -> float | None:
    return None if value is None else round(value, digits) if digits else round(value)


def summarise(single: Throughput | None, batch: Throughput | None, latency: Latency | None) -> dict[str, Any]:
    """The figures of the last line; a phase not run gives nulls."""
    probes = latency.probes if latency is not None else []
    return {
        "single_readings_per_s": _round(single.readings_per_s) if single else None,
        "batch_readings_per_s": _round(batch.readings_per_s) if batch else None,
        "baseline_readings_per_s": _round(batch.baseline_per_s) if batch else None,
        "batch_ratio_to_baseline": _round(batch.readings_per_s / batch.baseline_per_s, 3) if batch else None,
        "p50_latency_s": _round(statistics.median(probes), 3) if probes else None,
        "p99_latency_s": _round(percentile(probes, 0.99), 3) if probes else None,
        "alert_p99_latency_s": _round(latency.alerts.get("p99_s"), 3) if latency else None,
        "rss_mb": _round(single.peak_rss_mb, 1) if single else None,
        "snapshot_max_bytes": _round(single.snapshot_bytes) if single else None,
        "worker_cpu_us_per_reading_single": _round(single.worker_cpu_us, 1) if single else None,
        "worker_cpu_us_per_reading_batch": _round(batch.worker_cpu_us, 1) if batch else None,
        "baseline_cpu_us_per_reading_single": _round(single.baseline_cpu_us, 1) if single else None,
        "baseline_cpu_us_per_reading_batch": _round(batch.baseline_cpu_us, 1) if batch else None,
        "cpu_ratio_single": _round(single.worker_cpu_us / single.baseline_cpu_us, 2)
        if single and single.baseline_cpu_us
        else None,
        "cpu_ratio_batch": _round(batch.worker_cpu_us / batch.baseline_cpu_us, 2)
        if batch and batch.baseline_cpu_us
        else None,
        "metrics_max_ms": _round(max(single.scrape_ms + (batch.scrape_ms if batch else [])), 1)
        if single and single.scrape_ms
        else None,
    }


def capacity(ramp: list[RampStep]) -> float | None:
    """The highest rate of the ramp that held; None without a ramp, or when its first step did not hold."""
    held = [step.rate for step in ramp if step.held(CAPACITY_P99_S)]
    return _round(max(held)) if held else None


def ramp_table(ramp: list[RampStep]) -> Table:
    table = Table(title=f"capacity: single-reading messages until p99 produce to InfluxDB > {CAPACITY_P99_S:g} s")
    for column in ("readings/s asked", "sent/s", "p50 s", "p99 s", "probes (not landed)", "held"):
        table.add_column(column, justify="right")
    for step in ramp:
        table.add_row(
            f"{step.rate:,.0f}",
            f"{step.sent_per_s:,.0f}",
            f"{step.p50_s:.3f}",
            f"{step.p99_s:.3f}",
            f"{step.probes} ({step.lost})",
            "yes" if step.held(CAPACITY_P99_S) else "no",
        )
    table.caption = f"capacity: {capacity(ramp) or 0:,.0f} readings/s"
    return table


def processes_figures(processes: int, single: Throughput | None, batch: Throughput | None) -> dict[str, Any]:
    """The figures of the run with several worker processes (nulls without one)."""
    return {
        "processes": processes,
        "single_readings_per_s_processes": _round(single.readings_per_s) if single else None,
        "batch_readings_per_s_processes": _round(batch.readings_per_s) if batch else None,
        "worker_cpu_us_per_reading_single_processes": _round(single.worker_cpu_us, 1) if single else None,
        "worker_cpu_us_per_reading_batch_processes": _round(batch.worker_cpu_us, 1) if batch else None,
    }


def processes_table(
    processes: int, single: Throughput | None, batch: Throughput | None, more: dict[str, Throughput]
) -> Table:
    table = Table(title=f"one worker process beside {processes} (citystream worker --processes {processes})")
    table.add_column("figure")
    table.add_column("1 process", justify="right")
    table.add_column(f"{processes} processes", justify="right")
    for name, one in (("single-reading messages", single), ("batch envelopes", batch)):
        several = more.get(name.split("-")[0].split(" ")[0])
        if one is None or several is None:
            continue
        table.add_row(f"{name}: readings/s stored", f"{one.readings_per_s:,.0f}", f"{several.readings_per_s:,.0f}")
        table.add_row(
            f"{name}: readings/s validated and aggregated",
            f"{one.processed_per_s:,.0f}",
            f"{several.processed_per_s:,.0f}",
        )
        table.add_row(f"{name}: CPU µs per reading", f"{one.worker_cpu_us:,.1f}", f"{several.worker_cpu_us:,.1f}")
        table.add_row(f"{name}: peak RSS MB (all processes)", f"{one.peak_rss_mb:,.0f}", f"{several.peak_rss_mb:,.0f}")
    return table


def figures_table(
    figures: dict[str, Any],
    single: Throughput | None,
    batch: Throughput | None,
    latency: Latency | None,
    *,
    batch_size: int,
    rate: float,
    devices: int,
) -> Table:
    table = Table(title="citystream bench: one worker")
    table.add_column("figure")
    table.add_column("worker", justify="right")
    table.add_column("baseline loop", justify="right")
    for name, phase in (("single-reading messages", single), (f"batch envelopes of {batch_size}", batch)):
        if phase is None:
            continue
        table.add_row(
            f"{name}: readings/s stored in InfluxDB", f"{phase.readings_per_s:,.0f}", f"{phase.baseline_per_s:,.0f}"
        )
        table.add_row(f"{name}: readings/s validated and aggregated", f"{phase.processed_per_s:,.0f}", "")
        table.add_row(f"{name}: raw points stored", f"{phase.points:,} in {phase.seconds:.1f} s", "")
        table.add_row(f"{name}: peak RSS MB", f"{phase.peak_rss_mb:.0f}", "")
        table.add_row(f"{name}: largest partition snapshot", f"{phase.snapshot_bytes / 1024:,.0f} KiB", "")
        if phase.scrape_ms:
            table.add_row(
                f"{name}: /metrics answer under load, median / max ms ({len(phase.scrape_ms)} scrapes)",
                f"{statistics.median(phase.scrape_ms):,.0f} / {max(phase.scrape_ms):,.0f}",
                "",
            )
        table.add_row(
            f"{name}: CPU µs per reading (user + system)",
            f"{phase.worker_cpu_us:,.1f} ({phase.worker_cpu_us / max(phase.baseline_cpu_us, 1e-9):.1f}x)",
            f"{phase.baseline_cpu_us:,.1f}",
        )
    if batch is not None:
        table.add_row("batch: worker / baseline", f"{figures['batch_ratio_to_baseline']:.3f}", "")
    if latency is not None:
        table.add_row(
            f"produce to InfluxDB at {rate:,.0f}/s, p50 / p99 s ({len(latency.probes)} probes)",
            f"{figures['p50_latency_s']} / {figures['p99_latency_s']}",
            "",
        )
        table.add_row(
            f"final window to alert, p99 s ({int(latency.alerts.get('alerts', 0))} alerts)",
            str(figures["alert_p99_latency_s"]),
            "",
        )
        table.add_row("latency phase: peak RSS MB", f"{latency.peak_rss_mb:.0f}", "")
        if latency.checkpoints:
            quarter = max(1, len(latency.checkpoints) // 4)
            first, last = latency.checkpoints[:quarter], latency.checkpoints[-quarter:]
            table.add_row(
                "latency phase: checkpoint s, first / last quarter (of it snapshots), median",
                f"{statistics.median(c[1] for c in first):.3f} ({statistics.median(c[2] for c in first):.3f}) / "
                f"{statistics.median(c[1] for c in last):.3f} ({statistics.median(c[2] for c in last):.3f})",
                "",
            )
    if single is not None:
        table.caption = f"{devices:,} distinct devices in the single-reading phase"
    return table
