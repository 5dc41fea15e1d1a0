"""``citystream simulate``: a seeded simulator of Daegu's city sensors, producing to Kafka.

Taxis with ADAS cameras drive a street grid laid over the city, parking spot sensors follow each
lot's time-of-day occupancy, and air-quality stations report every minute with diurnal cycles and
fine-dust episodes. Every reading follows the wire contract (sections 1 and 2); a share of the
messages are deliberately invalid, one per dead-letter reason of section 4, and a share are
duplicates, so a demo exercises the whole worker.

The package has two layers:

* pure, seeded generation: :class:`CityLayout` (``layout``: what exists: lots, stations, taxis),
  :class:`City` (``city``: what happens: readings in simulated time, from the devices of
  ``taxis``, ``parking`` and ``environment`` on the map of ``geography``), :class:`MessageComposer`
  (``messages``: how readings become Kafka messages: single readings, batch envelopes, the
  invalid messages of ``invalid``, duplicates) and :func:`generate_messages`, which tests call
  without a broker;
* a thin producer (``producer``): :func:`run_simulation` paces readings with a token bucket, sends
  them through aiokafka record batches per partition and returns a :class:`SimulationReport`
  (``options``); ``display`` shows its progress and summary, ``command`` is the click command.

Simulated time never runs ahead of the clock: a run of D wall seconds at speedup S simulates the
D*S seconds that end when the run ends (see :class:`SimulatedPeriod` in ``clock``).

This module re-exports the names other code imports; the rest live in the modules above.
"""

from __future__ import annotations

from streams.core.decode import MAX_BATCH_READINGS, MAX_MESSAGE_BYTES
from streams.tools.simulate.city import City, Emitted
from streams.tools.simulate.clock import (
    DAY_MS,
    HOUR_MS,
    KST,
    MINUTE_MS,
    SECOND_MS,
    SimulatedPeriod,
    format_ts,
    kst_hour,
    wall_clock_ms,
)
from streams.tools.simulate.command import describe_city, simulate_command
from streams.tools.simulate.display import progress_line, render_summary
from streams.tools.simulate.environment import DustEpisode, EnvStation, StationSpec
from streams.tools.simulate.geography import COLLISION_HOTSPOTS, DAEGU_BBOX, DISTRICTS, ROAD_HAZARDS
from streams.tools.simulate.invalid import (
    ELEMENT_REASONS,
    FUTURE_OFFSET_MS,
    MESSAGE_REASONS,
    STALE_OFFSET_MS,
    IntendedReason,
    InvalidFactory,
)
from streams.tools.simulate.layout import CityLayout, write_registry
from streams.tools.simulate.messages import (
    Message,
    MessageComposer,
    batch_reading_share,
    generate_messages,
    kafka_partition,
)
from streams.tools.simulate.options import (
    SimulationOptions,
    SimulationReport,
    expected_readings_per_s,
    resolved_taxis,
)
from streams.tools.simulate.parking import LotSpec, ParkingSpot, occupancy_target
from streams.tools.simulate.producer import (
    PartitionBatchSender,
    TokenBucket,
    check_period,
    produce_paced,
    run_simulation,
)
from streams.tools.simulate.sensor import Sensor
from streams.tools.simulate.taxis import WARNING_RATE_BOUND, Taxi

__all__ = [
    "COLLISION_HOTSPOTS",
    "DAEGU_BBOX",
    "DAY_MS",
    "DISTRICTS",
    "ELEMENT_REASONS",
    "FUTURE_OFFSET_MS",
    "HOUR_MS",
    "KST",
    "MAX_BATCH_READINGS",
    "MAX_MESSAGE_BYTES",
    "MESSAGE_REASONS",
    "MINUTE_MS",
    "ROAD_HAZARDS",
    "SECOND_MS",
    "STALE_OFFSET_MS",
    "WARNING_RATE_BOUND",
    "City",
    "CityLayout",
    "DustEpisode",
    "Emitted",
    "EnvStation",
    "IntendedReason",
    "InvalidFactory",
    "LotSpec",
    "Message",
    "MessageComposer",
    "ParkingSpot",
    "PartitionBatchSender",
    "Sensor",
    "SimulatedPeriod",
    "SimulationOptions",
    "SimulationReport",
    "StationSpec",
    "Taxi",
    "TokenBucket",
    "batch_reading_share",
    "check_period",
    "describe_city",
    "expected_readings_per_s",
    "format_ts",
    "generate_messages",
    "kafka_partition",
    "kst_hour",
    "occupancy_target",
    "produce_paced",
    "progress_line",
    "render_summary",
    "resolved_taxis",
    "run_simulation",
    "simulate_command",
    "wall_clock_ms",
    "write_registry",
]
