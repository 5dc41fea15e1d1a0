"""``citystream soak``: the worker under simulated city load for a long time, its memory sampled.

Starts the local stack (on its own ports), a worker and the simulator at a high rate for the given
time, samples the worker's resident memory and its consumer lag, and prints the curve. Bounded
state shows as a flat curve once the first windows have been evicted (after the maximum lateness).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import click
import psutil
from rich.console import Console
from rich.table import Table

from schemas.readings import SOURCE_TOPICS
from streams.tools.demo import committed_lag
from streams.tools.localstack import LocalStackError, free_port, local_up
from streams.tools.workerprocess import WorkerProcess


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MiB (psutil)."""
    return float(psutil.Process(pid).memory_info().rss) / (1 << 20)


@click.command("soak")
@click.option("--minutes", type=click.FloatRange(min=1), default=30.0, show_default=True, help="How long to run.")
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=5000.0,
    show_default=True,
    help="Valid readings per second the simulator sends.",
)
@click.option(
    "--sample-every",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds between memory samples.",
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/soak"),
    show_default=True,
    help="Folder for the stack, the worker's state and logs.",
)
@click.option(
    "--broker",
    type=click.Choice(["tansu", "kafka"]),
    default="tansu",
    show_default=True,
    help="The local stack's Kafka broker: Tansu, or Apache Kafka (`citystream local install --kafka`).",
)
@click.option("--kafka-port", type=int, default=19092, show_default=True)
@click.option("--influx-port", type=int, default=18086, show_default=True)
def soak_command(
    minutes: float, rate: float, sample_every: float, folder: Path, broker: str, kafka_port: int, influx_port: int
) -> None:
    """Run a worker under simulated load for MINUTES and print its memory (RSS) over time."""
    from streams.settings import load_settings
    from streams.tools.simulate import SimulationOptions, run_simulation

    console = Console()
    try:
        stack = local_up(
            folder / "local", kafka_port, influx_port, echo=lambda m: console.print(f"  {m}"), broker=broker
        )
    except LocalStackError as exc:
        raise click.ClickException(str(exc)) from None
    work = (folder / "worker").resolve()
    registry = work / "registry.yaml"
    work.mkdir(parents=True, exist_ok=True)
    app_id = f"citystream-soak-{int(time.time())}"
    env = {
        **stack.env,
        "CITYSTREAM_APP_ID": app_id,
        "CITYSTREAM_DATA_DIR": str(work / "state"),
        "CITYSTREAM_REGISTRY": str(registry),
        "CITYSTREAM_WEB_PORT": str(free_port()),
        "CITYSTREAM_KAFKA_REBALANCE_TIMEOUT_S": "3",
        "CITYSTREAM_LOG_LEVEL": "warning",
    }
    worker = WorkerProcess(work, env, log_path=work / "worker.log")
    settings = load_settings(kafka_bootstrap=stack.bootstrap)
    options = SimulationOptions(
        duration_s=minutes * 60, rate=rate, bootstrap=stack.bootstrap, registry_out=registry, seed=1
    )
    samples: list[tuple[float, float, int]] = []
    sources = list(SOURCE_TOPICS.values())

    async def run() -> None:
        stop = asyncio.Event()

        async def sample() -> None:
            started = time.monotonic()
            while not stop.is_set():
                if worker.pid is not None and worker.alive():
                    lag = await committed_lag(stack.bootstrap, app_id, sources)
                    samples.append((time.monotonic() - started, rss_mb(worker.pid), lag))
                    console.print(f"  {samples[-1][0] / 60:5.1f} min  RSS {samples[-1][1]:7.1f} MB  lag {lag:,}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=sample_every)

        async def start_worker() -> None:
            worker.start()
            await asyncio.sleep(8)

        sampler = asyncio.ensure_future(sample())
        try:
            report = await run_simulation(options, settings=settings, registry_ready=start_worker)
            console.print(f"simulator: {report.valid_readings:,} valid readings at {report.readings_per_s:,.0f}/s")
        finally:
            stop.set()
            await sampler

    try:
        asyncio.run(run())
    finally:
        code = worker.stop()
        console.print(f"worker stopped (exit code {code}); log: {work / 'worker.log'}")
    table = Table(title=f"worker memory over time ({'Apache Kafka' if broker == 'kafka' else 'Tansu'})")
    table.add_column("minute", justify="right")
    table.add_column("RSS MB", justify="right")
    table.add_column("lag (messages)", justify="right")
    for elapsed, rss, lag in samples:
        table.add_row(f"{elapsed / 60:.1f}", f"{rss:.1f}", f"{lag:,}")
    console.print(table)
    if samples:
        late = [rss for elapsed, rss, _ in samples if elapsed >= 15 * 60] or [samples[-1][1]]
        print(
            json.dumps(
                {
                    "broker": broker,
                    "minutes": minutes,
                    "rate": rate,
                    "samples": len(samples),
                    "rss_mb_first": round(samples[0][1], 1),
                    "rss_mb_peak": round(max(s[1] for s in samples), 1),
                    "rss_mb_after_15_min_min": round(min(late), 1),
                    "rss_mb_after_15_min_max": round(max(late), 1),
                    "rss_mb_last": round(samples[-1][1], 1),
                    "lag_last": samples[-1][2],
                }
            )
        )
