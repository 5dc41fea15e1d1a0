"""``citystream bench``: throughput, latency and memory of one worker, with a baseline in the same run.

Phases, each on a fresh local stack (Tansu and InfluxDB on their own ports):

1. single: preload N single-reading messages (60% taxi, 30% parking, 10% environment) from
   ``--devices`` distinct devices; the baseline loop reads them; then a real worker (aggregation and
   alerts on) reads them into InfluxDB. Readings/s is from the worker's first reading to the last raw
   point visible in InfluxDB; its peak RSS is sampled meanwhile.
2. batch: the same with ``{"batch": [...]}`` envelopes of ``--batch-size`` readings of one device.
3. latency: the worker runs first; readings arrive at a fixed ``--rate``; a probe reading every
   100 ms carries its send time as its ``ts``, and a poller sees when its raw point is in InfluxDB.
   Parking lots that fill and empty in alternate minutes make alerts on every final minute; the
   worker measures their latency (final window to alert on the topic) and logs it at shutdown.
4. capacity: the load of the latency phase, 15 s unmeasured, then in steps of 30 s (``--capacity-step-seconds``), each
   1.25 times faster than the one before, from ``--capacity-start``; the capacity is the fastest
   step sent in full whose probes' p99 stayed within 2 s.

The baseline is the practical limit of Python here: aiokafka ``getmany``, ``orjson.loads`` and
pydantic validation of every reading, nothing written.
"""

from __future__ import annotations

from streams.tools.bench.command import bench_command, capacity, figures_table, summarise
from streams.tools.bench.load import ENV, MODELS, PARKING, TAXI, CityMix, batch_messages, single_messages
from streams.tools.bench.measure import Latency, RampStep, Throughput, alert_latency, baseline, metric, percentile
from streams.tools.bench.phases import Bench

__all__ = [
    "ENV",
    "MODELS",
    "PARKING",
    "TAXI",
    "Bench",
    "CityMix",
    "Latency",
    "RampStep",
    "Throughput",
    "alert_latency",
    "baseline",
    "batch_messages",
    "bench_command",
    "capacity",
    "figures_table",
    "metric",
    "percentile",
    "single_messages",
    "summarise",
]
