"""``citystream bench`` end to end at a small size: every phase runs, the last line holds the figures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from streams.tools.workerprocess import WorkerProcess

pytestmark = pytest.mark.integration


def test_bench_runs_every_phase_and_ends_with_the_figures(tmp_path: Path) -> None:
    # the bench returns only once every raw point of both throughput phases is in InfluxDB
    command = [*WorkerProcess.command()[:-1], "bench", "--readings", "3000", "--devices", "500"]
    command += ["--batch-size", "50", "--latency-seconds", "15", "--rate", "500", "--dir", str(tmp_path)]
    command += ["--phases", "single,batch,latency"]  # the capacity ramp: the test below
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(figures) == {
        "single_readings_per_s",
        "batch_readings_per_s",
        "baseline_readings_per_s",
        "batch_ratio_to_baseline",
        "p50_latency_s",
        "p99_latency_s",
        "alert_p99_latency_s",
        "rss_mb",
        "snapshot_max_bytes",
        "worker_cpu_us_per_reading_single",
        "worker_cpu_us_per_reading_batch",
        "baseline_cpu_us_per_reading_single",
        "baseline_cpu_us_per_reading_batch",
        "cpu_ratio_single",
        "cpu_ratio_batch",
        "metrics_max_ms",
        "processes",
        "single_readings_per_s_processes",
        "batch_readings_per_s_processes",
        "worker_cpu_us_per_reading_single_processes",
        "worker_cpu_us_per_reading_batch_processes",
        "capacity_readings_per_s",
        "broker",
        "kind",
    }
    assert figures["capacity_readings_per_s"] is None  # not run
    assert figures["broker"] == "tansu"
    for name in (
        "single_readings_per_s",
        "batch_readings_per_s",
        "baseline_readings_per_s",
        "rss_mb",
        "snapshot_max_bytes",
    ):
        assert figures[name] > 0, name
    assert 0 < figures["batch_ratio_to_baseline"] < 10
    # CPU per reading: the worker's is dearer than the bare loop's, and both are measured
    for shape in ("single", "batch"):
        worker, loop = figures[f"worker_cpu_us_per_reading_{shape}"], figures[f"baseline_cpu_us_per_reading_{shape}"]
        assert 0 < loop < worker, (shape, loop, worker)
        assert figures[f"cpu_ratio_{shape}"] == pytest.approx(worker / loop, rel=0.05)
    # probes every 100 ms for 15 s, each seen in InfluxDB
    assert 0 < figures["p50_latency_s"] <= figures["p99_latency_s"] < 30
    # the worker's checkpoints, every second of the load: durations, of which the snapshots
    rows = [line.split(",") for line in (tmp_path / "latency" / "checkpoints.csv").read_text().splitlines()[1:]]
    assert len(rows) >= 12
    assert any(float(total) > 0 for _, total, _ in rows)
    assert all(0 <= float(snapshots) <= float(total) for _, total, snapshots in rows)


def test_bench_runs_the_throughput_phases_again_with_two_worker_processes(tmp_path: Path) -> None:
    command = [*WorkerProcess.command()[:-1], "bench", "--phases", "single", "--processes", "2"]
    command += ["--readings", "3000", "--devices", "300", "--dir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["processes"] == 2
    assert figures["single_readings_per_s"] > 0 and figures["single_readings_per_s_processes"] > 0
    assert figures["worker_cpu_us_per_reading_single_processes"] > 0
    assert figures["batch_readings_per_s_processes"] is None
    # the second run's worker ran two processes, each with its own data folder
    assert sorted(p.name for p in (tmp_path / "single-2p" / "worker").iterdir() if p.name.startswith("process-")) == [
        "process-0",
        "process-1",
    ]


def test_bench_runs_on_apache_kafka_and_says_so(tmp_path: Path) -> None:
    command = [*WorkerProcess.command()[:-1], "bench", "--broker", "kafka", "--phases", "single"]
    command += ["--readings", "2000", "--devices", "200", "--dir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["broker"] == "kafka"
    assert figures["single_readings_per_s"] > 0 and figures["batch_readings_per_s"] is None
    assert (tmp_path / "single" / "kafka").is_dir()  # the phase's stack ran Apache Kafka


def test_the_capacity_ramp_steps_up_until_its_limit(tmp_path: Path) -> None:
    """Steps of 500, 625 and 781 readings/s (10 s each) up to a limit of 800: each is listed with
    its probes until the first that did not hold, and the capacity is the fastest that held. One
    worker holds these rates easily; on a loaded machine a step may not, and the ramp stops there."""
    command = [*WorkerProcess.command()[:-1], "bench", "--phases", "capacity", "--capacity-start", "500"]
    command += ["--capacity-max", "800", "--capacity-step-seconds", "10", "--dir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["single_readings_per_s"] is None and figures["p99_latency_s"] is None
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in done.stdout.splitlines()]
    steps = [row for row in rows if len(row) == 6 and row[-1] in ("yes", "no")]
    asked = [row[0] for row in steps]
    held = [row[-1] == "yes" for row in steps]
    assert asked == ["500", "625", "781"][: len(asked)] and steps, done.stdout[-3000:]
    # the ramp goes on while steps hold, and stops at the limit or at the first that did not
    assert all(held[:-1]) and (len(asked) == 3 or not held[-1]), done.stdout[-3000:]
    fastest = max((int(row[0].replace(",", "")) for row, ok in zip(steps, held, strict=True) if ok), default=None)
    assert figures["capacity_readings_per_s"] == fastest
    # each step: about 100 probes (one every 100 ms), each landed or counted as endless
    for row in steps:
        probes, lost = row[4].split()
        assert 90 <= int(probes) + int(lost.strip("()")) <= 110, row
        assert row[-1] == "no" or lost == "(0)", row
