"""What a run is asked to simulate (:class:`SimulationOptions`) and what it sent (:class:`SimulationReport`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from streams.core.decode import MAX_BATCH_READINGS
from streams.tools.simulate.clock import wall_clock_ms

if TYPE_CHECKING:
    from streams.tools.simulate.messages import Message


Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]


def compression_available(compression: Compression) -> bool:
    from aiokafka import codec

    checks: dict[str, Callable[[], bool]] = {
        "gzip": codec.has_gzip,
        "snappy": codec.has_snappy,
        "lz4": codec.has_lz4,
        "zstd": codec.has_zstd,
    }
    return compression == "none" or checks[compression]()


@dataclass(frozen=True)
class SimulationOptions:
    """What to simulate and how to send it; the defaults make a lively demo of ~500 readings/s."""

    duration_s: float = 60.0
    rate: float = 500.0  # target valid readings per second, all topics (a token bucket caps it)
    taxis: int | None = None  # None: as many as ``rate`` needs (see resolved_taxis)
    lots: int = 12
    spots_per_lot: int = 80
    stations: int = 24
    speedup: float = 1.0
    batch_share: float = 0.2
    batch_size: int = 50
    invalid_share: float = 0.01
    duplicate_share: float = 0.005
    fault_rate: float = 0.5  # sensor faults per station and hour (EnvStation: spikes, stuck PM2.5)
    seed: int | None = None
    bootstrap: str | None = None
    registry_out: Path | None = None
    compression: Compression = "none"
    parking_via: Literal["kafka", "mqtt"] = "kafka"  # mqtt: ChirpStack uplinks for citystream bridge mqtt
    mqtt_url: str | None = None  # with parking_via mqtt; None: CITYSTREAM_MQTT_URL or mqtt://127.0.0.1:1883

    def __post_init__(self) -> None:
        checks = [
            (self.duration_s > 0, "duration must be > 0 s"),
            (self.rate > 0, "rate must be > 0 readings/s"),
            ((self.taxis or 0) >= 0 and self.lots >= 0 and self.stations >= 0, "taxis, lots and stations must be >= 0"),
            (1 <= self.spots_per_lot <= 2600, "spots per lot must be 1..2600 (A001..Z100)"),
            (self.speedup >= 1, "speedup must be >= 1"),
            (0 <= self.batch_share <= 1, "batch share must be 0..1"),
            (1 <= self.batch_size <= MAX_BATCH_READINGS, f"batch size must be 1..{MAX_BATCH_READINGS}"),
            (0 <= self.invalid_share <= 0.5, "invalid share must be 0..0.5"),
            (0 <= self.duplicate_share <= 0.5, "duplicate share must be 0..0.5"),
            (0 <= self.fault_rate <= 60, "fault rate must be 0..60 faults per station and hour"),
            (
                compression_available(self.compression),
                f"the compression library for {self.compression} is not installed",
            ),
        ]
        if self.mqtt_url is not None:
            from streams.settings import mqtt_address

            if not self.mqtt_url.startswith(("mqtt://", "mqtts://")):
                raise ValueError("the MQTT URL is mqtt://host[:port]")
            mqtt_address(self.mqtt_url)
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if resolved_taxis(self) + self.lots + self.stations == 0:
            raise ValueError("simulate at least one taxi, lot or station")

    @property
    def backdated_s(self) -> float:
        """How old the oldest simulated reading is when it is sent."""
        return self.duration_s * (self.speedup - 1)


# readings per simulated second, measured on the model: a taxi (moving, standing, at stands),
# a spot sensor (changes over a day), a station
TAXI_READINGS_PER_S: Final = 0.55
SPOT_READINGS_PER_S: Final = 0.00015
STATION_READINGS_PER_S: Final = 1 / 60
MAX_AUTO_TAXIS: Final = 100_000
AUTO_FLEET_HEADROOM: Final = 1.01


def resolved_taxis(options: SimulationOptions) -> int:
    """``options.taxis``, or the fleet that brings the city to ``options.rate`` readings per
    second at ``options.speedup`` (about 900 at the defaults; Daegu fitted 875 taxis with ADAS
    cameras in 2019-2020)."""
    if options.taxis is not None:
        return options.taxis
    others = options.lots * options.spots_per_lot * SPOT_READINGS_PER_S + options.stations * STATION_READINGS_PER_S
    # a little more than the rate, so that the token bucket, not the city, sets the pace
    needed = (options.rate * AUTO_FLEET_HEADROOM / options.speedup - others) / TAXI_READINGS_PER_S
    return min(max(round(needed), 0), MAX_AUTO_TAXIS)


def expected_readings_per_s(options: SimulationOptions) -> float:
    """About how many readings per wall second the city produces (before --rate caps it)."""
    per_simulated_s = (
        resolved_taxis(options) * TAXI_READINGS_PER_S
        + options.lots * options.spots_per_lot * SPOT_READINGS_PER_S
        + options.stations * STATION_READINGS_PER_S
    )
    return per_simulated_s * options.speedup


@dataclass
class SimulationReport:
    """What a run sent, counted when the broker acknowledged it.

    Per topic: ``readings_by_topic`` (valid readings, each counted once), ``messages_by_topic``
    (every message, invalid ones included), ``batches_by_topic`` (batch envelopes) and
    ``duplicates_by_topic`` (readings sent again). Per intended dead-letter reason:
    ``invalid_by_reason`` (whole messages) and ``invalid_elements_by_reason`` (invalid elements
    of otherwise valid batches); together they are the dead letters the worker should publish
    (``expected_dead_letters``). ``failed`` counts messages the broker refused, by error.
    """

    seed: int
    bootstrap: str
    speedup: float
    simulated_start_ms: int
    simulated_end_ms: int = 0  # the simulated time reached
    started_at_ms: int = 0
    finished_at_ms: int = 0
    taxis: int = 0
    readings_by_topic: Counter[str] = field(default_factory=Counter)
    messages_by_topic: Counter[str] = field(default_factory=Counter)
    batches_by_topic: Counter[str] = field(default_factory=Counter)
    duplicates_by_topic: Counter[str] = field(default_factory=Counter)
    invalid_by_reason: Counter[str] = field(default_factory=Counter)
    invalid_elements_by_reason: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    registry_path: Path | None = None

    @property
    def valid_readings(self) -> int:
        return sum(self.readings_by_topic.values())

    @property
    def messages(self) -> int:
        return sum(self.messages_by_topic.values())

    @property
    def duplicates(self) -> int:
        return sum(self.duplicates_by_topic.values())

    @property
    def invalid_messages(self) -> int:
        """Whole messages sent invalid on purpose."""
        return sum(self.invalid_by_reason.values())

    @property
    def invalid_elements(self) -> int:
        """Invalid elements inside otherwise valid batches."""
        return sum(self.invalid_elements_by_reason.values())

    @property
    def expected_dead_letters(self) -> int:
        """Dead letters the worker should publish for this run: one per invalid message and
        one per invalid batch element."""
        return self.invalid_messages + self.invalid_elements

    @property
    def dead_letters_by_reason(self) -> Counter[str]:
        return self.invalid_by_reason + self.invalid_elements_by_reason

    @property
    def elapsed_s(self) -> float:
        end = self.finished_at_ms or wall_clock_ms()
        return max(end - self.started_at_ms, 1) / 1000

    @property
    def readings_per_s(self) -> float:
        return self.valid_readings / self.elapsed_s

    def count(self, message: Message) -> None:
        """Add one acknowledged message."""
        self.messages_by_topic[message.topic] += 1
        self.readings_by_topic[message.topic] += message.readings
        self.duplicates_by_topic[message.topic] += message.duplicates
        if message.is_batch:
            self.batches_by_topic[message.topic] += 1
        if message.invalid_reason is not None:
            self.invalid_by_reason[message.invalid_reason] += 1
        for _, reason in message.invalid_elements:
            self.invalid_elements_by_reason[reason] += 1
