"""Time in the simulator: Korea's clock, the run's simulated period, and how senders write ``ts``."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final, Literal

from schemas.timestamps import format_ms

KST: Final = timezone(timedelta(hours=9), "KST")
SECOND_MS: Final = 1000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class SimulatedPeriod:
    """How a run's wall time maps to simulated time.

    A run that starts at wall time W and lasts D seconds at speedup S simulates the D*S seconds
    ending at W + D: simulated time t(w) = W + D - S * (W + D - w). It advances S times faster than
    the clock and reaches the clock exactly at the end, so no reading is ever ahead of the clock
    (t(w) <= w for every w of the run); with S = 1 it is the clock itself. The oldest reading
    is D*(S-1) seconds old when sent, which the worker must still accept (7 days by default).
    """

    run_start_ms: int
    duration_s: float
    speedup: float

    @property
    def start_ms(self) -> int:
        """Simulated time at the start of the run."""
        return self.end_ms - round(self.duration_s * self.speedup * 1000)

    @property
    def end_ms(self) -> int:
        """Simulated time at the end of the run: the wall clock then."""
        return self.run_start_ms + round(self.duration_s * 1000)

    def simulated_ms(self, wall_ms: int) -> int:
        """Simulated time at wall time ``wall_ms`` (never after ``wall_ms`` within the run)."""
        elapsed_ms = min(max(wall_ms - self.run_start_ms, 0), self.duration_s * 1000)
        return self.start_ms + int(elapsed_ms * self.speedup)


TsStyle = Literal["epoch_ms", "kst", "utc"]


def format_ts(epoch_ms: int, style: TsStyle) -> int | str:
    """A reading's ``ts`` as its sender writes it: epoch ms, or RFC 3339 in KST or UTC."""
    if style == "epoch_ms":
        return epoch_ms
    if style == "utc":
        return format_ms(epoch_ms)
    seconds, millis = divmod(epoch_ms, 1000)
    prefix = _KST_SECONDS.get(seconds)
    if prefix is None:
        if len(_KST_SECONDS) > 4096:
            _KST_SECONDS.clear()
        prefix = _KST_SECONDS[seconds] = datetime.fromtimestamp(seconds, KST).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{prefix}.{millis:03d}+09:00"


_KST_SECONDS: dict[int, str] = {}  # epoch second -> its KST text, for the many readings per second


def kst_hour(epoch_ms: int) -> float:
    """Hour of day in Korea (0 <= h < 24, fractional)."""
    return ((epoch_ms + 9 * HOUR_MS) % DAY_MS) / HOUR_MS


def kst_weekend(epoch_ms: int) -> bool:
    day = (epoch_ms + 9 * HOUR_MS) // DAY_MS  # days since 1970-01-01 (a Thursday) in KST
    return (day + 3) % 7 >= 5


def daily_bump(hour: float, centre: float, width: float) -> float:
    """A bell curve over the hour of day, wrapping around midnight; 1 at ``centre``."""
    delta = (hour - centre + 12.0) % 24.0 - 12.0
    return math.exp(-0.5 * (delta / width) ** 2)


def choose_style(rng: random.Random, weights: Mapping[TsStyle, float]) -> TsStyle:
    """The ``ts`` style a device writes, drawn by weight (once per device)."""
    styles = list(weights)
    return rng.choices(styles, weights=[weights[s] for s in styles])[0]
