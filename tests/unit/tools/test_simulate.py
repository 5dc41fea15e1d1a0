"""The simulator's pure layer: seeded generation of readings and messages, without a broker."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from click.testing import CliRunner
from pydantic import ValidationError

from schemas.codec import JSONDecodeError, dumps, loads
from schemas.deadletter import DeadLetterReason
from schemas.readings import SOURCE_TOPICS, EnvReading, ParkingReading, SourceKind, TaxiReading
from schemas.timestamps import parse_rfc3339_ms
from streams.tools.simulate import (
    COLLISION_HOTSPOTS,
    DAEGU_BBOX,
    DISTRICTS,
    ELEMENT_REASONS,
    FUTURE_OFFSET_MS,
    HOUR_MS,
    MAX_BATCH_READINGS,
    MAX_MESSAGE_BYTES,
    MESSAGE_REASONS,
    ROAD_HAZARDS,
    STALE_OFFSET_MS,
    WARNING_RATE_BOUND,
    City,
    CityLayout,
    IntendedReason,
    Message,
    MessageComposer,
    PartitionBatchSender,
    SimulatedPeriod,
    SimulationOptions,
    SimulationReport,
    TokenBucket,
    batch_reading_share,
    expected_readings_per_s,
    format_ts,
    kafka_partition,
    kst_hour,
    occupancy_target,
    produce_paced,
    resolved_taxis,
    simulate_command,
    wall_clock_ms,
    write_registry,
)

NOW_MS = 1_795_305_600_000  # 2026-11-22T09:00:00+09:00, a Sunday morning in Daegu
MAX_FUTURE_MS = 5 * 60 * 1000
MAX_AGE_MS = 7 * 86_400_000
MODELS = {
    SOURCE_TOPICS[SourceKind.TAXI]: TaxiReading,
    SOURCE_TOPICS[SourceKind.PARKING]: ParkingReading,
    SOURCE_TOPICS[SourceKind.ENVIRONMENT]: EnvReading,
}
TAXI_TOPIC = SOURCE_TOPICS[SourceKind.TAXI]
PARKING_TOPIC = SOURCE_TOPICS[SourceKind.PARKING]
ENV_TOPIC = SOURCE_TOPICS[SourceKind.ENVIRONMENT]

SMALL_CITY = SimulationOptions(
    taxis=120,
    lots=4,
    spots_per_lot=25,
    stations=8,
    seed=11,
    invalid_share=0.03,
    duplicate_share=0.01,
    batch_share=0.3,
    batch_size=40,
)


def simulate(
    options: SimulationOptions, span_ms: int, *, end_ms: int = NOW_MS, partitions: int = 12
) -> tuple[CityLayout, list[Message]]:
    """Every message of ``span_ms`` of simulated time ending at ``end_ms``, in sending order."""
    seed = options.seed or 0
    layout = CityLayout.build(options, seed)
    city = City(layout, end_ms - span_ms, end_ms, seed)
    composer = MessageComposer(options, dict.fromkeys(SourceKind, partitions), seed)
    messages: list[Message] = []
    for until_ms in range(end_ms - span_ms + 1000, end_ms + 1, 1000):
        messages.extend(composer.compose(city.advance(until_ms, 10**9), until_ms, end_ms))
    messages.extend(composer.flush_all(end_ms))
    return layout, messages


@cache
def small_run() -> tuple[CityLayout, tuple[Message, ...]]:
    layout, messages = simulate(SMALL_CITY, 5 * 60_000)
    return layout, tuple(messages)


def valid_readings(
    messages: Iterator[Message] | tuple[Message, ...] | list[Message], *, duplicates: bool = False
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(topic, reading) of every valid reading, in sending order (duplicates left out)."""
    for message in messages:
        if message.invalid_reason is not None or (message.duplicates and not duplicates):
            continue
        document = loads(message.value)
        elements = document.get("batch", [document])
        invalid = {index for index, _ in message.invalid_elements}
        for index, element in enumerate(elements):
            if index not in invalid:
                yield message.topic, element


def readings_of(topic: str, messages: tuple[Message, ...] | list[Message]) -> list[dict[str, Any]]:
    return [reading for t, reading in valid_readings(messages) if t == topic]


def ts_ms(reading: dict[str, Any]) -> int:
    ts = reading["ts"]
    return ts if isinstance(ts, int) else parse_rfc3339_ms(ts)


def metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    dy = (lat2 - lat1) * 110_940
    dx = (lon2 - lon1) * 111_320 * math.cos(math.radians((lat1 + lat2) / 2))
    return math.hypot(dx, dy)


def bearing(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    dy = (lat2 - lat1) * 110_940
    dx = (lon2 - lon1) * 111_320 * math.cos(math.radians((lat1 + lat2) / 2))
    return math.degrees(math.atan2(dx, dy)) % 360


def angle_between(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def by_device(readings: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    tracks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for reading in readings:
        tracks[reading["device_id"]].append(reading)
    return tracks


# ---- valid readings -------------------------------------------------------------------------


def test_every_valid_reading_validates_and_carries_a_recent_timestamp() -> None:
    _, messages = small_run()
    counted = Counter[str]()
    for topic, reading in valid_readings(messages):
        model = MODELS[topic].model_validate(reading)
        assert NOW_MS - 5 * 60_000 <= model.ts <= NOW_MS, reading
        counted[topic] += 1
    assert set(counted) == set(MODELS)
    assert sum(counted.values()) == sum(m.readings for m in messages)


def test_timestamps_mix_rfc3339_in_kst_and_epoch_milliseconds() -> None:
    _, messages = small_run()
    kinds = Counter(
        "epoch_ms" if isinstance(r["ts"], int) else r["ts"][-6:] if r["ts"].endswith("+09:00") else r["ts"][-1]
        for _, r in valid_readings(messages)
    )
    assert kinds["epoch_ms"] > 0 and kinds["+09:00"] > 0
    assert format_ts(NOW_MS + 250, "kst") == "2026-11-22T09:00:00.250+09:00"
    assert parse_rfc3339_ms(str(format_ts(NOW_MS + 250, "kst"))) == NOW_MS + 250


def test_taxis_stay_in_daegu_with_speeds_and_headings_in_range() -> None:
    _, messages = small_run()
    taxis = readings_of(TAXI_TOPIC, messages)
    assert len({r["device_id"] for r in taxis}) == SMALL_CITY.taxis
    for reading in taxis:
        assert DAEGU_BBOX.contains(reading["lat"], reading["lon"]), reading
        assert 0 <= reading["speed_kmh"] <= 80
        assert 0 <= reading["heading_deg"] < 360
    speeds = [r["speed_kmh"] for r in taxis]
    assert 0.05 < sum(s == 0 for s in speeds) / len(speeds) < 0.5  # some stand at lights
    assert max(speeds) > 50


def test_taxi_positions_speeds_and_headings_agree_between_readings() -> None:
    _, messages = small_run()
    ratios = []
    for track in by_device(readings_of(TAXI_TOPIC, messages)).values():
        for before, after in itertools.pairwise(track):
            dt_s = (ts_ms(after) - ts_ms(before)) / 1000
            assert 0.9 <= dt_s <= 5.1  # a reading every 1 to 5 s
            moved = metres(before["lat"], before["lon"], after["lat"], after["lon"])
            fastest = max(before["speed_kmh"], after["speed_kmh"]) / 3.6
            assert moved <= fastest * dt_s + 6.0, (before, after)  # 6 m: GPS error
            if (
                before["speed_kmh"] > 20
                and after["speed_kmh"] > 20
                and moved > 15
                and (angle_between(before["heading_deg"], after["heading_deg"]) < 5)
            ):
                ratios.append(moved / ((before["speed_kmh"] + after["speed_kmh"]) / 2 / 3.6 * dt_s))
                assert (
                    angle_between(
                        bearing(before["lat"], before["lon"], after["lat"], after["lon"]), after["heading_deg"]
                    )
                    < 15
                )
    assert len(ratios) > 1000
    ratios.sort()
    assert 0.9 < ratios[len(ratios) // 2] < 1.1  # the distance driven is the speed times the time


@cache
def warning_run() -> tuple[dict[str, Any], ...]:
    options = SimulationOptions(taxis=400, lots=0, stations=0, seed=5, invalid_share=0, duplicate_share=0)
    _, messages = simulate(options, 30 * 60_000)
    return tuple(r for r in readings_of(TAXI_TOPIC, messages) if r.get("event", "NONE") != "NONE")


def test_adas_warnings_follow_their_activation_rules() -> None:
    events = warning_run()
    kinds = Counter(r["event"] for r in events)
    assert {"FCW", "UFCW", "PCW", "HMW", "POTHOLE", "OBSTACLE"} <= set(kinds), kinds
    assert kinds["LDW_L"] + kinds["LDW_R"] > 0
    for reading in events:
        event, speed = reading["event"], reading["speed_kmh"]
        if event == "UFCW":
            assert 0 < speed < 30
        if event == "FCW":
            assert speed > 30
        if event in ("LDW_L", "LDW_R"):
            assert speed > 55
        if event in ("FCW", "UFCW", "PCW"):
            assert 0 < reading["ttc_s"] <= 10
        if event == "HMW":
            assert reading["headway_s"] < 0.6
    assert all(
        r.get("headway_s", 1.0) >= 0.6
        for r in readings_of(TAXI_TOPIC, list(small_run()[1]))
        if r.get("event", "NONE") == "NONE"
    )


def test_collision_warnings_cluster_at_the_hotspots() -> None:
    collisions = [r for r in warning_run() if r["event"] in ("FCW", "UFCW", "PCW")]
    near = [r for r in collisions if any(metres(r["lat"], r["lon"], h.lat, h.lon) < 250 for h in COLLISION_HOTSPOTS)]
    # the hotspots cover well under 1% of the streets but a good share of the warnings
    assert len(near) / len(collisions) > 0.25
    assert WARNING_RATE_BOUND < 0.1


def test_road_hazards_are_reported_by_several_taxis_at_the_same_spot() -> None:
    hazards = [r for r in warning_run() if r["event"] in ("POTHOLE", "OBSTACLE")]
    reporters: dict[str, set[str]] = defaultdict(set)
    for reading in hazards:
        nearest = min(ROAD_HAZARDS, key=lambda h: metres(reading["lat"], reading["lon"], h.lat, h.lon))
        assert metres(reading["lat"], reading["lon"], nearest.lat, nearest.lon) < 40
        assert reading["event"] == nearest.event
        reporters[nearest.label].add(reading["device_id"])
    assert max(len(taxis) for taxis in reporters.values()) >= 3


def test_seq_increments_by_one_per_device_in_sending_order() -> None:
    _, messages = small_run()
    last: dict[str, int] = {}
    for _, reading in valid_readings(messages):
        device = reading["device_id"]
        if device in last:
            assert reading["seq"] == last[device] + 1, reading
        last[device] = reading["seq"]
    assert len(last) > SMALL_CITY.taxis


def test_duplicates_resend_readings_already_sent() -> None:
    _, messages = small_run()
    sent: set[bytes] = set()
    duplicates = 0
    for message in messages:
        if message.duplicates:
            duplicates += 1
            assert message.value in sent
        elif message.invalid_reason is None:
            document = loads(message.value)
            for element in document.get("batch", [document]):
                sent.add(dumps(element))
    assert duplicates > 0


# ---- parking --------------------------------------------------------------------------------


def test_parking_occupancy_stays_within_capacity_and_follows_the_time_of_day() -> None:
    options = SimulationOptions(taxis=0, lots=6, spots_per_lot=30, stations=0, seed=3)
    layout = CityLayout.build(options, 3)
    start_ms = NOW_MS - 9 * HOUR_MS - 2 * 86_400_000  # Friday 00:00 KST
    city = City(layout, start_ms, start_ms + 86_400_000, 3)
    capacity = {lot.lot_id: lot.capacity for lot in layout.lots}
    state: dict[tuple[str, str], bool] = {}
    hourly: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    changes = 0
    for until_ms in range(start_ms + 60_000, start_ms + 86_400_000 + 1, 60_000):
        for emitted in city.advance(until_ms, 10**9):
            reading = ParkingReading.model_validate(emitted.body)
            spot = (reading.lot_id, reading.spot_id)
            if reading.parking_kind == "change":
                assert state.get(spot) is not reading.occupied  # a change changes the state
                changes += 1
            state[spot] = reading.occupied
            assert 2.5 <= (reading.battery_v or 0) <= 3.6
            assert -140 <= (reading.rssi_dbm or 0) <= -40 and -20 <= (reading.snr_db or 0) <= 12
        for lot_id, cap in capacity.items():
            occupied = sum(1 for (lot, _), taken in state.items() if lot == lot_id and taken)
            assert occupied <= cap
            hourly[lot_id][int(kst_hour(until_ms - 1))].append(occupied)
    assert changes > 500
    assert len(state) == sum(capacity.values())  # every spot reported at the start
    office = next(lot for lot in layout.lots if lot.profile == "office").lot_id
    residential = next(lot for lot in layout.lots if lot.profile == "residential").lot_id
    mean = {lot: {h: sum(v) / len(v) for h, v in hours.items()} for lot, hours in hourly.items()}
    assert mean[office][11] > 0.8 * capacity[office] > mean[office][3]
    assert mean[residential][3] > 0.8 * capacity[residential] > mean[residential][12]


def test_a_few_parking_sensors_have_low_batteries() -> None:
    options = SimulationOptions(taxis=0, lots=8, spots_per_lot=100, stations=0, seed=9)
    city = City(CityLayout.build(options, 9), NOW_MS - 60_000, NOW_MS, 9)
    batteries = [e.body["battery_v"] for e in city.advance(NOW_MS, 10**9)]
    low = sum(v < 2.9 for v in batteries)
    assert 0 < low < 0.1 * len(batteries)
    assert all(v < 2.9 or v >= 3.0 for v in batteries)  # clearly low, or clearly fine


# ---- environment ----------------------------------------------------------------------------


def test_air_quality_has_diurnal_cycles_and_a_fine_dust_episode() -> None:
    options = SimulationOptions(taxis=0, lots=0, stations=16, seed=4)
    layout = CityLayout.build(options, 4)
    start_ms = NOW_MS - 9 * HOUR_MS  # 00:00 KST
    city = City(layout, start_ms, start_ms + 86_400_000, 4)
    hourly: dict[str, dict[int, list[EnvReading]]] = defaultdict(lambda: defaultdict(list))
    for emitted in city.advance(start_ms + 86_400_000, 10**9):
        reading = EnvReading.model_validate(emitted.body)
        assert reading.district in DISTRICTS
        assert emitted.device_id.startswith(f"env-{reading.district}-")
        assert -10 < (reading.temp_c or 0) < 25  # November in Daegu
        hourly[emitted.device_id][int(kst_hour(reading.ts))].append(reading)
    assert all(
        len(hours) == 24 and all(len(v) == 60 for v in hours.values()) for hours in hourly.values()
    )  # a reading a minute

    def mean(device: str, hour: int, field: str) -> float:
        values = [getattr(r, field) for r in hourly[device][hour] if getattr(r, field) is not None]
        return sum(values) / len(values)

    episode = [
        d
        for d in hourly
        if any(
            mean(d, h, "pm25_ugm3") >= 75 and mean(d, h + 1, "pm25_ugm3") >= 75 and mean(d, h, "pm10_ugm3") >= 150
            for h in range(23)
        )
    ]
    assert 0 < len(episode) < len(hourly)
    clean = [d for d in hourly if d not in episode]
    assert all(mean(d, h, "pm25_ugm3") < 60 for d in clean for h in range(24))
    for device in clean:
        assert mean(device, 15, "o3_ppm") > 2 * mean(device, 5, "o3_ppm")  # afternoon ozone
        assert mean(device, 8, "no2_ppm") > mean(device, 3, "no2_ppm")  # morning traffic
        assert mean(device, 14, "temp_c") > mean(device, 5, "temp_c") + 4
        assert mean(device, 21, "pm25_ugm3") > mean(device, 15, "pm25_ugm3")  # evening peak


# ---- batches and invalid messages -----------------------------------------------------------


def test_batch_envelopes_hold_1_to_batch_size_readings() -> None:
    _, messages = small_run()
    batches = [m for m in messages if m.is_batch]
    assert batches
    for message in batches:
        elements = loads(message.value)["batch"]
        assert 1 <= len(elements) <= SMALL_CITY.batch_size
        assert message.readings + len(message.invalid_elements) == len(elements)
    valid = [m for m in messages if not m.invalid_reason and not m.duplicates]
    share = sum(m.is_batch for m in valid) / len(valid)
    assert 0.75 * SMALL_CITY.batch_share < share < 1.25 * SMALL_CITY.batch_share


def test_batch_size_of_1000_is_the_limit() -> None:
    options = SimulationOptions(
        taxis=900, lots=0, stations=0, seed=2, batch_share=1.0, batch_size=MAX_BATCH_READINGS, invalid_share=0.02
    )
    _, messages = simulate(options, 20_000, partitions=1)
    sizes = [len(loads(m.value)["batch"]) for m in messages if m.is_batch]
    assert max(sizes) == MAX_BATCH_READINGS
    assert batch_reading_share(0.2, 50) == pytest.approx(0.2 * 50 / (0.2 * 50 + 0.8))


def test_batches_keep_each_device_in_its_partition() -> None:
    _, messages = small_run()
    for message in messages:
        if message.is_batch:
            invalid = dict(message.invalid_elements)
            for index, element in enumerate(loads(message.value)["batch"]):
                if index not in invalid:
                    assert kafka_partition(element["device_id"].encode(), 12) == message.partition
        assert kafka_partition(message.key, 12) == message.partition


def test_partitions_match_kafkas_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    for key in (b"taxi-0001", b"pk-dongseongro-lot-1-A001", b"env-jung-03"):
        assert kafka_partition(key, 12) == partitioner(key, list(range(12)), list(range(12)))


def fails_as(value: bytes, model: Any, wall_ms: int) -> str:
    """The dead-letter reason of a whole message, judged independently of the simulator."""
    if len(value) > MAX_MESSAGE_BYTES:
        return "too_large"
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        document = loads(value)
    except JSONDecodeError:
        return "malformed_json"
    if not isinstance(document, dict):
        return "not_an_object"
    if "batch" in document:
        batch = document["batch"]
        if not isinstance(batch, list) or not 1 <= len(batch) <= MAX_BATCH_READINGS:
            return "bad_batch"
        return "valid batch"
    return element_fails_as(document, model, wall_ms)


def element_fails_as(element: Any, model: Any, wall_ms: int) -> str:
    if not isinstance(element, dict):
        return "not_an_object"
    try:
        reading = model.model_validate(element)
    except ValidationError:
        return "schema"
    if reading.ts > wall_ms + MAX_FUTURE_MS:
        return "future_timestamp"
    if reading.ts < wall_ms - MAX_AGE_MS:
        return "stale_timestamp"
    return "valid"


def test_invalid_messages_cover_every_dead_letter_reason_and_really_fail() -> None:
    _, messages = small_run()
    invalid = [m for m in messages if m.invalid_reason is not None]
    assert Counter(m.invalid_reason for m in invalid).keys() == set(MESSAGE_REASONS)
    assert sum(m.invalid_reason == "too_large" for m in invalid) == 1
    for message in invalid:
        assert fails_as(message.value, MODELS[message.topic], NOW_MS) == message.invalid_reason
        assert message.readings == 0
    too_large = next(m for m in invalid if m.invalid_reason == "too_large")
    assert MAX_MESSAGE_BYTES < len(too_large.value) < MAX_MESSAGE_BYTES + 1024
    future = [m for m in invalid if m.invalid_reason == "future_timestamp"]
    assert all(ts_ms(loads(m.value)) == NOW_MS + FUTURE_OFFSET_MS for m in future)
    stale = [m for m in invalid if m.invalid_reason == "stale_timestamp"]
    assert all(ts_ms(loads(m.value)) == NOW_MS - STALE_OFFSET_MS for m in stale)


def test_invalid_batch_elements_really_fail_and_the_rest_of_the_batch_is_valid() -> None:
    _, messages = small_run()
    reasons = Counter[str]()
    for message in messages:
        if not message.is_batch:
            continue
        elements = loads(message.value)["batch"]
        invalid = dict(message.invalid_elements)
        for index, element in enumerate(elements):
            expected = invalid.get(index, "valid")
            assert element_fails_as(element, MODELS[message.topic], NOW_MS) == expected
            reasons[expected] += 1
    assert set(ELEMENT_REASONS) < set(reasons)


def test_the_worker_decoder_agrees_with_every_intended_reason() -> None:
    decode = pytest.importorskip("streams.core.decode")
    _, messages = small_run()
    seen = set()
    for message in messages:
        decoded = decode.decode_message(MODELS[message.topic], message.value, NOW_MS)
        got = sorted((r.index, str(r.reason)) for r in decoded.rejections)
        if message.invalid_reason is not None:
            expected = [(None, message.invalid_reason)]
        else:
            expected = sorted(message.invalid_elements)
        assert got == expected
        assert len(decoded.readings) == message.readings + message.duplicates
        seen.update(reason for _, reason in got)
    assert seen == set(MESSAGE_REASONS)


def test_the_intended_reasons_are_the_contracts_dead_letter_reasons() -> None:
    contract = {reason.value for reason in DeadLetterReason}
    # every reason a message on a source topic can earn; processing_error is the worker's failure,
    # unmappable a gateway bridge's verdict on an MQTT uplink
    assert set(MESSAGE_REASONS) == contract - {
        DeadLetterReason.PROCESSING_ERROR.value,
        DeadLetterReason.UNMAPPABLE.value,
    }
    assert set(ELEMENT_REASONS) <= set(MESSAGE_REASONS)
    assert get_args(IntendedReason) == MESSAGE_REASONS
    assert all(type(reason) is str for reason in MESSAGE_REASONS)  # the report counts plain strings


def test_no_invalid_messages_or_duplicates_when_their_shares_are_zero() -> None:
    options = SimulationOptions(
        taxis=50, lots=1, spots_per_lot=10, stations=2, seed=1, invalid_share=0, duplicate_share=0
    )
    _, messages = simulate(options, 60_000)
    assert not any(m.invalid_reason or m.invalid_elements or m.duplicates for m in messages)


def test_the_same_seed_gives_the_same_messages() -> None:
    options = SimulationOptions(taxis=30, lots=1, spots_per_lot=10, stations=2, seed=77)
    first = [m.value for m in simulate(options, 30_000)[1]]
    again = [m.value for m in simulate(options, 30_000)[1]]
    other = [m.value for m in simulate(SimulationOptions(**{**options.__dict__, "seed": 78}), 30_000)[1]]
    assert first == again
    assert first != other


# ---- registry -------------------------------------------------------------------------------


def test_the_registry_yaml_names_every_lot_and_station(tmp_path: Path) -> None:
    options = SimulationOptions(taxis=5, lots=20, spots_per_lot=120, stations=30, seed=8)
    layout = CityLayout.build(options, 8)
    path = tmp_path / "nested" / "registry.yaml"
    write_registry(path, layout)
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(document) == {"parking_lots", "env_stations"}
    assert list(document["parking_lots"]) == [lot.lot_id for lot in layout.lots]
    assert list(document["env_stations"]) == [s.device_id for s in layout.stations]
    assert len(document["parking_lots"]) == 20 and len(document["env_stations"]) == 30
    assert "dongseongro-lot-1" in document["parking_lots"]
    assert "suseong-alpha-2" in document["parking_lots"]  # the 16 sites repeat with -2
    for entry in [*document["parking_lots"].values(), *document["env_stations"].values()]:
        assert entry["district"] in DISTRICTS
        assert DAEGU_BBOX.contains(entry["lat"], entry["lon"])
    assert all(entry["capacity"] == 120 for entry in document["parking_lots"].values())
    assert {entry["district"] for entry in document["env_stations"].values()} == set(DISTRICTS)


def test_the_layout_does_not_depend_on_time() -> None:
    options = SimulationOptions(taxis=3, lots=3, stations=3, seed=8)
    assert CityLayout.build(options, 8) == CityLayout.build(options, 8)
    assert CityLayout.build(options, 8) != CityLayout.build(options, 9)


# ---- time and pacing ------------------------------------------------------------------------


@pytest.mark.parametrize("speedup", [1.0, 2.5, 60.0, 3600.0])
def test_the_simulated_period_ends_now_and_never_runs_ahead_of_the_clock(speedup: float) -> None:
    period = SimulatedPeriod(run_start_ms=NOW_MS, duration_s=30, speedup=speedup)
    assert period.end_ms == NOW_MS + 30_000
    assert period.end_ms - period.start_ms == round(30_000 * speedup)
    for elapsed_ms in range(0, 30_001, 250):
        wall_ms = NOW_MS + elapsed_ms
        assert period.simulated_ms(wall_ms) <= wall_ms
    assert period.simulated_ms(NOW_MS + 30_000) == period.end_ms
    assert period.simulated_ms(NOW_MS + 99_000) == period.end_ms
    if speedup == 1.0:
        assert period.simulated_ms(NOW_MS + 1234) == NOW_MS + 1234


def test_the_fleet_is_sized_for_the_rate_unless_given() -> None:
    assert 850 <= resolved_taxis(SimulationOptions()) <= 950
    assert resolved_taxis(SimulationOptions(taxis=7)) == 7
    assert resolved_taxis(SimulationOptions(speedup=60)) < 20
    for options in (SimulationOptions(), SimulationOptions(rate=5000, speedup=3)):
        assert expected_readings_per_s(options) == pytest.approx(options.rate, rel=0.02)
    # and the model really produces about that many readings per simulated second
    _, messages = simulate(SimulationOptions(seed=1, invalid_share=0, duplicate_share=0), 120_000)
    assert 0.85 * 500 < sum(m.readings for m in messages) / 120 < 1.15 * 500


def test_token_bucket_releases_the_rate_and_holds_a_burst() -> None:
    bucket = TokenBucket(rate=1000, burst=100, now_s=0.0)
    assert bucket.available(0.0) <= 100
    bucket.spend(bucket.available(0.0))
    assert bucket.available(0.05) == 50
    bucket.spend(50)
    assert bucket.available(10.0) == 100
    assert bucket.seconds_until(150) == pytest.approx(0.05)


class FakeProducer:
    """create_batch / send_batch like AIOKafkaProducer, acknowledging every batch at once."""

    def __init__(self) -> None:
        self.records: list[tuple[str, int, bytes, bytes]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(64 * 1024, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        from aiokafka.record.default_records import DefaultRecordBatch

        batch.close()
        for record in DefaultRecordBatch(bytearray(batch._build())):
            self.records.append((topic, partition, record.key, record.value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_the_producer_loop_paces_readings_and_reports_what_was_acknowledged() -> None:
    options = SimulationOptions(
        duration_s=1.0,
        rate=400,
        taxis=2000,
        lots=1,
        spots_per_lot=10,
        stations=2,
        seed=6,
        invalid_share=0.02,
        duplicate_share=0.01,
    )
    layout = CityLayout.build(options, 6)
    wall_clock = wall_clock_ms()
    period = SimulatedPeriod(wall_clock, options.duration_s, options.speedup)
    report = SimulationReport(
        seed=6, bootstrap="fake:9092", speedup=1.0, simulated_start_ms=period.start_ms, started_at_ms=wall_clock
    )
    producer = FakeProducer()
    sender = PartitionBatchSender(producer, report)
    progress: list[int] = []
    await produce_paced(
        City(layout, period.start_ms, period.end_ms, 6),
        MessageComposer(options, dict.fromkeys(SourceKind, 12), 6),
        sender,
        period,
        options,
        report,
        lambda r: progress.append(r.valid_readings),
        0.1,
        None,
    )
    await sender.drain()
    # 2000 taxis would send ~1100 readings a second: the bucket holds them to ~400
    assert 300 <= report.valid_readings <= 480
    assert report.messages == len(producer.records)
    assert Counter(topic for topic, *_ in producer.records) == report.messages_by_topic
    assert report.expected_dead_letters == report.invalid_messages + report.invalid_elements
    assert len(progress) >= 5 and progress == sorted(progress)
    for topic, partition, key, _ in producer.records:
        assert kafka_partition(key, 12) == partition and topic in MODELS
    assert report.simulated_end_ms <= wall_clock + 1000


# ---- the command ----------------------------------------------------------------------------


def test_help_explains_the_options_and_that_the_period_ends_now() -> None:
    result = CliRunner().invoke(simulate_command, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--duration",
        "--rate",
        "--speedup",
        "--taxis",
        "--lots",
        "--spots-per-lot",
        "--stations",
        "--batch-share",
        "--batch-size",
        "--invalid-share",
        "--duplicate-share",
        "--seed",
        "--bootstrap",
        "--registry-out",
        "--quiet",
    ):
        assert option in result.output
    assert "END" in result.output and "7 days" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--duration", "600", "--speedup", "3600"], "days"),
        (["--batch-size", "1001"], "1001"),
        (["--invalid-share", "0.9"], "0.9"),
        (["--taxis", "0", "--lots", "0", "--stations", "0"], "at least one"),
        (["--bootstrap", "no port"], "CITYSTREAM_KAFKA_BOOTSTRAP"),
    ],
)
def test_the_command_rejects_bad_options_before_connecting(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(simulate_command, arguments)
    assert result.exit_code == 2
    assert message in result.output


def test_occupancy_targets_stay_between_empty_and_full() -> None:
    for profile in ("office", "shopping", "market", "residential", "station", "leisure"):
        for hour in range(0, 7 * 24):
            share = occupancy_target(profile, NOW_MS + hour * HOUR_MS, 1.02)  # type: ignore[arg-type]
            assert 0.02 <= share <= 0.985


def _station_flags(fault_rate: float) -> tuple[Counter[str], set[str]]:
    """The data-quality flags the worker's tests give six simulated hours of two stations, and the
    stations with a flat-line fail."""
    from streams.core.qc import QcPolicy, StationQc
    from streams.tools.simulate import generate_messages

    options = SimulationOptions(
        taxis=0, lots=0, stations=2, batch_share=0, invalid_share=0, duplicate_share=0, fault_rate=fault_rate
    )
    start = 1_795_294_800_000
    _, messages = generate_messages(options, start_ms=start, end_ms=start + 6 * HOUR_MS, seed=3)
    readings = sorted(
        (
            EnvReading.model_validate(loads(m.value))
            for m in messages
            if m.topic == SOURCE_TOPICS[SourceKind.ENVIRONMENT]
        ),
        key=lambda r: r.ts,
    )
    stations: dict[str, StationQc] = defaultdict(StationQc)
    tests: Counter[str] = Counter()
    stuck = set()
    for reading in readings:
        changed = stations[reading.device_id].add(reading.ts, "x", reading.measurements(), QcPolicy())
        for flags in changed.values():
            for name, level in flags.items():
                tests[name] += 1
                if name == "pm25_ugm3:flat_line" and level == 4:
                    stuck.add(reading.device_id)
    return tests, stuck


def test_sensor_faults_are_spikes_and_stuck_analysers_the_worker_flags() -> None:
    tests, _ = _station_flags(fault_rate=2.0)
    assert tests["pm25_ugm3:spike"] >= 5
    assert tests["pm25_ugm3:flat_line"] >= 30  # stuck for 30 minutes and more
    # without faults the simulated stations pass every test
    assert _station_flags(fault_rate=0.0) == (Counter(), set())
