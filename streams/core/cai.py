"""Korea's Comprehensive Air-quality Index (CAI, AirKorea): pure functions, no I/O.

The sub-index of a pollutant is the linear interpolation

    I = (I_hi - I_lo) / (BP_hi - BP_lo) * (C - BP_lo) + I_lo

inside the band that contains the concentration ``C``, and the CAI is the largest sub-index over the
pollutants present (schemas/CONTRACT.md section 5, with AirKorea's breakpoints).
The gases use their hourly means, PM10 and PM2.5 the mean of the hourly means of the last 24 hours
that have data (:func:`pm_24h_mean`).

Numerical choices, all exact (``decimal`` / ``fractions``, no floating point after the input):

* Truncation. The bands have gaps (PM2.5 15 | 16, O3 0.030 | 0.031, CO 2 | 2.01), so a
  concentration is truncated (never rounded) before the lookup: SO2, NO2 and O3 to 3 decimals, CO to
  2, PM10 and PM2.5 to an integer. An input float is first snapped to the nearest multiple of
  ``1e-9`` (:data:`SNAP`) so that binary artefacts such as ``0.051 - 0.021 == 0.029999999999999995``
  are truncated as the 0.030 they stand for and not to 0.029. A value that really lies below a
  grid point by more than ``5e-10`` (far below any sensor's resolution), such as 0.0299999, is
  truncated down as usual.
* Rounding of the sub-index to an integer: to the nearest integer, halves up (``x.5 -> x+1``),
  computed exactly from the truncated concentration. AirKorea publishes the formula and the
  breakpoints but no rounding rule; atmotube/aqipy (``aqipy/utils.py``, used by ``cai_kr.py``)
  applies Python's built-in ``round()`` to a float, i.e. halves to even, and subject to
  representation error. The two differ only on exact halves, e.g. SO2 0.001 ppm:
  50 / 0.020 * 0.001 = 2.5 -> 3 here (aqipy: 2). Halves up is the conventional rule.
* Above the top breakpoint the sub-index is 500. In the top band (251-500) the formula is
  interpolated like the others (aqipy returns 500 for the whole top band; we do not copy that).
* Zero is a valid concentration (sub-index 0); negative or non-finite concentrations raise
  :class:`ValueError` (the reading validation upstream rejects them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Final, TypeVar

__all__ = [
    "BREAKPOINTS",
    "GAS_POLLUTANTS",
    "GRADES",
    "HOUR_MS",
    "INDEX_BANDS",
    "PM_POLLUTANTS",
    "POLLUTANTS",
    "SNAP",
    "CaiResult",
    "comprehensive_index",
    "grade",
    "pm_24h_mean",
    "sub_index",
    "truncate",
]

HOUR_MS: Final = 3_600_000
"""One hour in milliseconds."""

INDEX_BANDS: Final[tuple[tuple[int, int], ...]] = ((0, 50), (51, 100), (101, 250), (251, 500))
"""Index ranges ``(I_lo, I_hi)`` of the four grades, lowest first."""

GRADES: Final[tuple[str, ...]] = ("good", "moderate", "unhealthy", "very_unhealthy")
"""Grade names, in the order of :data:`INDEX_BANDS`."""


def _bands(*edges: str) -> tuple[tuple[Decimal, Decimal], ...]:
    """``_bands("0", "0.020", "0.021", "0.050", ...)`` -> ((0, 0.020), (0.021, 0.050), ...)."""
    values = [Decimal(e) for e in edges]
    return tuple(zip(values[::2], values[1::2], strict=True))


BREAKPOINTS: Final[Mapping[str, tuple[tuple[Decimal, Decimal], ...]]] = MappingProxyType(
    {
        # (BP_lo, BP_hi) pairs for good, moderate, unhealthy, very unhealthy
        # gases: ppm, 1-hour mean
        "so2_ppm": _bands("0", "0.020", "0.021", "0.050", "0.051", "0.150", "0.151", "1"),
        "no2_ppm": _bands("0", "0.030", "0.031", "0.060", "0.061", "0.200", "0.201", "2"),
        "co_ppm": _bands("0", "2", "2.01", "9", "9.01", "15", "15.01", "50"),
        "o3_ppm": _bands("0", "0.030", "0.031", "0.090", "0.091", "0.150", "0.151", "0.6"),
        # particulate matter: µg/m³, 24-hour mean
        "pm10_ugm3": _bands("0", "30", "31", "80", "81", "150", "151", "600"),
        "pm25_ugm3": _bands("0", "15", "16", "35", "36", "75", "76", "500"),
    }
)
"""Concentration bands ``(BP_lo, BP_hi)`` per pollutant (AirKorea), one per :data:`INDEX_BANDS` entry."""

POLLUTANTS: Final[tuple[str, ...]] = tuple(BREAKPOINTS)
"""Pollutant field names in table order; this order also breaks ties in :func:`comprehensive_index`."""

GAS_POLLUTANTS: Final[tuple[str, ...]] = ("so2_ppm", "no2_ppm", "co_ppm", "o3_ppm")
"""Pollutants whose sub-index uses the hourly mean."""

PM_POLLUTANTS: Final[tuple[str, ...]] = ("pm10_ugm3", "pm25_ugm3")
"""Pollutants whose sub-index uses the 24-hour mean (:func:`pm_24h_mean`)."""

_TRUNCATION_STEP: Final[Mapping[str, Decimal]] = MappingProxyType(
    {
        "so2_ppm": Decimal("0.001"),
        "no2_ppm": Decimal("0.001"),
        "co_ppm": Decimal("0.01"),
        "o3_ppm": Decimal("0.001"),
        "pm10_ugm3": Decimal("1"),
        "pm25_ugm3": Decimal("1"),
    }
)

SNAP: Final = Decimal("1e-9")
"""Inputs are snapped to this grid (half to even) before truncation, to absorb float artefacts."""

# Enough digits for any finite float (about 1.8e308) to be quantized to 1e-9 without overflow.
_CTX: Final = Context(prec=400)


# Key types of the mappings given to comprehensive_index: any str subtype, e.g. a Literal of field
# names (Mapping is invariant in its key type, so Mapping[str, float] would reject dict[Literal[...], float]).
_GasKey = TypeVar("_GasKey", bound=str)
_PmKey = TypeVar("_PmKey", bound=str)


@dataclass(frozen=True, slots=True)
class CaiResult:
    """The CAI of one hour: the index, its grade and the pollutant that gives it."""

    cai: int
    grade: str
    pollutant: str


def _breakpoints(pollutant: str) -> tuple[tuple[Decimal, Decimal], ...]:
    try:
        return BREAKPOINTS[pollutant]
    except KeyError:
        raise ValueError(f"unknown CAI pollutant {pollutant!r}; expected one of {POLLUTANTS}") from None


def truncate(pollutant: str, concentration: float) -> Decimal:
    """The concentration truncated for the band lookup: 3 decimals (SO2, NO2, O3), 2 (CO), 0 (PM).

    The float is first snapped to the nearest multiple of :data:`SNAP` (1e-9), so that a float that
    stands for a grid value but lies a representation error below it (0.029999999999999995 for 0.030)
    is not truncated one step down. Raises ValueError for an unknown pollutant, a negative or a
    non-finite concentration.
    """
    _breakpoints(pollutant)
    if not math.isfinite(concentration):
        raise ValueError(f"{pollutant}: concentration must be finite, got {concentration!r}")
    if concentration < 0:
        raise ValueError(f"{pollutant}: concentration must be >= 0, got {concentration!r}")
    snapped = Decimal(concentration).quantize(SNAP, rounding=ROUND_HALF_EVEN, context=_CTX)
    return snapped.quantize(_TRUNCATION_STEP[pollutant], rounding=ROUND_DOWN, context=_CTX)


def _round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def sub_index(pollutant: str, concentration: float) -> int:
    """The CAI sub-index (0..500) of one pollutant.

    ``pollutant`` is a reading field name (:data:`POLLUTANTS`); ``concentration`` is the hourly mean
    for the gases (ppm) and the 24-hour mean for PM10/PM2.5 (µg/m³). The concentration is truncated
    (:func:`truncate`), the band containing it is looked up and
    ``I = (I_hi - I_lo) / (BP_hi - BP_lo) * (C - BP_lo) + I_lo`` is computed exactly and rounded to
    the nearest integer, halves up. Above the top breakpoint the sub-index is 500.
    """
    bands = _breakpoints(pollutant)
    c = truncate(pollutant, concentration)
    for (bp_lo, bp_hi), (i_lo, i_hi) in zip(bands, INDEX_BANDS, strict=True):
        if bp_lo <= c <= bp_hi:
            exact = Fraction(i_hi - i_lo) * (Fraction(c) - Fraction(bp_lo)) / (Fraction(bp_hi) - Fraction(bp_lo))
            return _round_half_up(exact + i_lo)
    if c > bands[-1][1]:
        return INDEX_BANDS[-1][1]
    # Unreachable: after truncation the bands are contiguous (checked by the unit tests).
    raise AssertionError(f"{pollutant}: truncated concentration {c} falls in no band")


def grade(index: int) -> str:
    """The grade of a CAI or sub-index: good (0-50), moderate (51-100), unhealthy (101-250),
    very_unhealthy (251-500). Raises ValueError outside 0..500."""
    for (lo, hi), name in zip(INDEX_BANDS, GRADES, strict=True):
        if lo <= index <= hi:
            return name
    raise ValueError(f"CAI index must be an integer in 0..500, got {index!r}")


def pm_24h_mean(hourly_means: Mapping[int, float], hour_start_ms: int) -> float | None:
    """The mean of the hourly means of the hours in ``[hour_start_ms - 23 h, hour_start_ms]`` that
    have data: 24 hours, this hour included.

    ``hourly_means`` maps an hour's start (epoch ms) to that hour's mean. Hours without an entry, or
    whose value is NaN, are skipped (they do not count as zero); hours before the window or after
    ``hour_start_ms`` are ignored. Returns None when no hour in the window has data.
    """
    first = hour_start_ms - 23 * HOUR_MS
    values = [v for start, v in hourly_means.items() if first <= start <= hour_start_ms and not math.isnan(v)]
    if not values:
        return None
    return math.fsum(values) / len(values)


def comprehensive_index(
    hourly_gas_means: Mapping[_GasKey, float], pm_24h_means: Mapping[_PmKey, float]
) -> CaiResult | None:
    """The CAI of one hour: the largest sub-index over the pollutants present.

    ``hourly_gas_means`` gives the hourly means of the gases (``so2_ppm``, ``no2_ppm``, ``co_ppm``,
    ``o3_ppm``) and ``pm_24h_means`` the 24-hour means of ``pm10_ugm3`` and ``pm25_ugm3``
    (:func:`pm_24h_mean`). Other keys are ignored, so whole per-measurement dicts (with ``temp_c``,
    ``noise_dba``, ...) may be passed; a gas is taken only from the first mapping and PM only from the
    second. ``pollutant`` in the result is the field name of the pollutant that gives the maximum; on
    a tie, the first in table order (:data:`POLLUTANTS`: SO2, NO2, CO, O3, PM10, PM2.5) wins. Returns
    None when no pollutant is present. Raises ValueError for a negative or non-finite concentration.
    """
    present: dict[str, float] = {name: value for name, value in hourly_gas_means.items() if name in GAS_POLLUTANTS}
    present.update((name, value) for name, value in pm_24h_means.items() if name in PM_POLLUTANTS)
    best: tuple[int, str] | None = None
    for pollutant in POLLUTANTS:  # table order, so the first of equal sub-indices is kept
        if pollutant not in present:
            continue
        index = sub_index(pollutant, present[pollutant])
        if best is None or index > best[0]:
            best = (index, pollutant)
    if best is None:
        return None
    return CaiResult(cai=best[0], grade=grade(best[0]), pollutant=best[1])
