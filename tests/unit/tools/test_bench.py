"""The benchmark's pure parts: its load, its parsing of the worker's figures, its summary."""

from __future__ import annotations

from collections import defaultdict

import orjson
import pytest

from schemas.readings import EnvReading, ParkingReading, TaxiReading
from streams.tools.bench import (
    ENV,
    PARKING,
    TAXI,
    CityMix,
    Latency,
    RampStep,
    Throughput,
    alert_latency,
    batch_messages,
    capacity,
    metric,
    percentile,
    single_messages,
    summarise,
)

MODELS = {TAXI: TaxiReading, PARKING: ParkingReading, ENV: EnvReading}


def test_single_messages_are_valid_keyed_by_device_and_in_order_per_device() -> None:
    messages = list(single_messages(5000, 1000, 1_700_000_000_000, 60_000))
    assert len(messages) == 5000
    last: dict[str, tuple[int, int]] = {}
    topics: dict[str, int] = defaultdict(int)
    for topic, key, value in messages:
        reading = MODELS[topic].model_validate(orjson.loads(value))
        assert key == reading.device_id.encode()
        assert reading.seq is not None
        if reading.device_id in last:
            ts, seq = last[reading.device_id]
            assert reading.ts >= ts and reading.seq > seq
        last[reading.device_id] = (reading.ts, reading.seq)
        topics[topic] += 1
    assert topics == {TAXI: 3000, PARKING: 1500, ENV: 500}
    assert len(last) == 1000  # every device of the mix reported


def test_city_mix_devices_by_kind() -> None:
    mix = CityMix(100_000, 1)
    assert mix.pools == {TAXI: 5000, ENV: 1000, PARKING: 94_000}


def test_batch_messages_hold_one_device_each() -> None:
    messages = list(batch_messages(1000, 100, 1_700_000_000_000, 60_000))
    assert len(messages) == 10
    for topic, key, value in messages:
        batch = orjson.loads(value)["batch"]
        assert len(batch) == 100
        assert {reading["device_id"] for reading in batch} == {key.decode()}
        assert [reading["seq"] for reading in batch] == list(range(100))
        for reading in batch:
            MODELS[topic].model_validate(reading)


EXPOSITION = """\
# HELP citystream_readings_valid_total Valid readings.
# TYPE citystream_readings_valid_total counter
citystream_readings_valid_total{kind="taxi"} 120.0
citystream_readings_valid_total{kind="parking"} 30.0
citystream_readings_valid_created{kind="taxi"} 1.7e9
citystream_ready 1.0
"""


def test_metric_sums_the_samples_of_one_name_only() -> None:
    assert metric(EXPOSITION, "citystream_readings_valid_total") == 150.0
    assert metric(EXPOSITION, "citystream_ready") == 1.0
    assert metric(EXPOSITION, "citystream_points_written_total") == 0.0


def test_alert_latency_reads_the_last_summary_the_worker_logged() -> None:
    log = (
        "[..] alert latency from final window to topic: {'alerts': 3, 'p50_s': 0.2, 'p99_s': 0.3, 'max_s': 0.3}\n"
        "[..] alert latency from final window to topic: {'alerts': 7, 'p50_s': 0.21, 'p99_s': 0.4, 'max_s': 0.5}\n"
    )
    assert alert_latency(log) == {"alerts": 7, "p50_s": 0.21, "p99_s": 0.4, "max_s": 0.5}
    assert alert_latency("no alerts") == {}


def test_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 100.0
    assert percentile(values, 0.5) == 51.0


def test_summary_has_every_key_and_nulls_for_phases_not_run() -> None:
    single = Throughput(10_000.0, 12_000.0, 200_000.0, 250.04, 500_000, 50.0, 123_456.0, 60.04, 8.0, [5.0, 120.04])
    batch = Throughput(40_000.0, 60_000.0, 320_000.0, 180.0, 500_000, 12.5, 0.0, 12.0, 4.0)
    latency = Latency(probes=[0.5] * 98 + [1.5, 2.5], sent=1000, alerts={"alerts": 10, "p99_s": 0.3456})
    figures = summarise(single, batch, latency)
    assert figures == {
        "single_readings_per_s": 10_000,
        "batch_readings_per_s": 40_000,
        "baseline_readings_per_s": 320_000,
        "batch_ratio_to_baseline": 0.125,
        "p50_latency_s": 0.5,
        "p99_latency_s": 2.5,
        "alert_p99_latency_s": 0.346,
        "rss_mb": 250.0,
        "snapshot_max_bytes": 123_456,
        "worker_cpu_us_per_reading_single": 60.0,
        "worker_cpu_us_per_reading_batch": 12.0,
        "baseline_cpu_us_per_reading_single": 8.0,
        "baseline_cpu_us_per_reading_batch": 4.0,
        "cpu_ratio_single": 7.5,
        "cpu_ratio_batch": 3.0,
        "metrics_max_ms": 120.0,
    }
    empty = summarise(None, None, None)
    assert set(empty) == set(figures) and set(empty.values()) == {None}


@pytest.mark.parametrize("setting", ["CHECKPOINT=5", "CITYSTREAM_X"])
def test_bad_worker_setting_is_refused(setting: str) -> None:
    from click.testing import CliRunner

    from streams.tools.bench import bench_command

    result = CliRunner().invoke(bench_command, ["--worker-setting", setting, "--phases", "latency"])
    assert result.exit_code == 2
    assert "CITYSTREAM_NAME=VALUE" in result.output


def test_a_ramp_step_holds_when_sent_in_full_within_the_p99_limit() -> None:
    assert RampStep(5000.0, 4990.0, 1.9, 0.4, 300, 0).held(2.0)
    assert not RampStep(5000.0, 4990.0, 2.1, 0.4, 300, 0).held(2.0)  # too slow
    assert not RampStep(5000.0, 4500.0, 0.5, 0.2, 300, 0).held(2.0)  # the load fell short of the rate


def test_a_probe_that_never_landed_counts_as_endless() -> None:
    assert Latency(probes=[0.1] * 99 + [0.2]).p99_s() == 0.2
    assert Latency(probes=[0.1] * 99, lost=1).p99_s() == float("inf")
    assert Latency().p99_s() == float("inf")


def test_the_capacity_is_the_fastest_step_that_held() -> None:
    ramp = [
        RampStep(2500.0, 2500.0, 0.6, 0.2, 300, 0),
        RampStep(3125.0, 3120.0, 0.9, 0.3, 300, 0),
        RampStep(3906.25, 3900.0, 2.6, 0.9, 300, 0),
    ]
    assert capacity(ramp) == 3125
    assert capacity(ramp[2:]) is None
    assert capacity([]) is None


def test_one_kind_only_from_devices_of_that_kind() -> None:
    singles = list(single_messages(3000, 100, 1_700_000_000_000, 60_000, only=ENV))
    assert {topic for topic, _, _ in singles} == {ENV}
    assert len({key for _, key, _ in singles}) == 100  # --devices stations
    for _, _, value in singles[:50]:
        EnvReading.model_validate(orjson.loads(value))
    batches = list(batch_messages(1000, 50, 1_700_000_000_000, 60_000, only=PARKING))
    assert len(batches) == 20 and {topic for topic, _, _ in batches} == {PARKING}
