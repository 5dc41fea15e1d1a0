"""Unit tests for streams.core.cai (Korea's Comprehensive Air-quality Index)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from decimal import Decimal

import pytest

from streams.core.cai import (
    BREAKPOINTS,
    HOUR_MS,
    INDEX_BANDS,
    POLLUTANTS,
    CaiResult,
    comprehensive_index,
    grade,
    pm_24h_mean,
    sub_index,
    truncate,
)

# --- the table ------------------------------------------------------------------------------------

# AirKorea's CAI breakpoints (schemas/CONTRACT.md section 5), copied as published.
NOTES_TABLE = {
    "so2_ppm": [("0", "0.020"), ("0.021", "0.050"), ("0.051", "0.150"), ("0.151", "1")],
    "no2_ppm": [("0", "0.030"), ("0.031", "0.060"), ("0.061", "0.200"), ("0.201", "2")],
    "co_ppm": [("0", "2"), ("2.01", "9"), ("9.01", "15"), ("15.01", "50")],
    "o3_ppm": [("0", "0.030"), ("0.031", "0.090"), ("0.091", "0.150"), ("0.151", "0.6")],
    "pm10_ugm3": [("0", "30"), ("31", "80"), ("81", "150"), ("151", "600")],
    "pm25_ugm3": [("0", "15"), ("16", "35"), ("36", "75"), ("76", "500")],
}
STEP = {
    "so2_ppm": Decimal("0.001"),
    "no2_ppm": Decimal("0.001"),
    "co_ppm": Decimal("0.01"),
    "o3_ppm": Decimal("0.001"),
    "pm10_ugm3": Decimal("1"),
    "pm25_ugm3": Decimal("1"),
}


def test_table_matches_notes() -> None:
    assert list(POLLUTANTS) == list(NOTES_TABLE)
    assert INDEX_BANDS == ((0, 50), (51, 100), (101, 250), (251, 500))
    for pollutant, bands in NOTES_TABLE.items():
        assert [(lo, hi) for lo, hi in BREAKPOINTS[pollutant]] == [(Decimal(lo), Decimal(hi)) for lo, hi in bands]


@pytest.mark.parametrize("pollutant", list(NOTES_TABLE))
def test_bands_are_contiguous_after_truncation(pollutant: str) -> None:
    # Each band starts one truncation step after the previous one ends: no truncated value falls in a gap.
    bands = BREAKPOINTS[pollutant]
    assert bands[0][0] == 0
    for (_, prev_hi), (lo, _) in itertools.pairwise(bands):
        assert lo == prev_hi + STEP[pollutant]


# --- band edges ----------------------------------------------------------------------------------

EDGES = [
    # SO2 (ppm, 1 h)
    ("so2_ppm", 0.0, 0),
    ("so2_ppm", 0.020, 50),
    ("so2_ppm", 0.021, 51),
    ("so2_ppm", 0.050, 100),
    ("so2_ppm", 0.051, 101),
    ("so2_ppm", 0.150, 250),
    ("so2_ppm", 0.151, 251),
    ("so2_ppm", 1.0, 500),
    # NO2 (ppm, 1 h)
    ("no2_ppm", 0.0, 0),
    ("no2_ppm", 0.030, 50),
    ("no2_ppm", 0.031, 51),
    ("no2_ppm", 0.060, 100),
    ("no2_ppm", 0.061, 101),
    ("no2_ppm", 0.200, 250),
    ("no2_ppm", 0.201, 251),
    ("no2_ppm", 2.0, 500),
    # CO (ppm, 1 h)
    ("co_ppm", 0.0, 0),
    ("co_ppm", 2.0, 50),
    ("co_ppm", 2.01, 51),
    ("co_ppm", 9.0, 100),
    ("co_ppm", 9.01, 101),
    ("co_ppm", 15.0, 250),
    ("co_ppm", 15.01, 251),
    ("co_ppm", 50.0, 500),
    # O3 (ppm, 1 h)
    ("o3_ppm", 0.0, 0),
    ("o3_ppm", 0.030, 50),
    ("o3_ppm", 0.031, 51),
    ("o3_ppm", 0.090, 100),
    ("o3_ppm", 0.091, 101),
    ("o3_ppm", 0.150, 250),
    ("o3_ppm", 0.151, 251),
    ("o3_ppm", 0.6, 500),
    # PM10 (µg/m³, 24 h)
    ("pm10_ugm3", 0.0, 0),
    ("pm10_ugm3", 30.0, 50),
    ("pm10_ugm3", 31.0, 51),
    ("pm10_ugm3", 80.0, 100),
    ("pm10_ugm3", 81.0, 101),
    ("pm10_ugm3", 150.0, 250),
    ("pm10_ugm3", 151.0, 251),
    ("pm10_ugm3", 600.0, 500),
    # PM2.5 (µg/m³, 24 h)
    ("pm25_ugm3", 0.0, 0),
    ("pm25_ugm3", 15.0, 50),
    ("pm25_ugm3", 16.0, 51),
    ("pm25_ugm3", 35.0, 100),
    ("pm25_ugm3", 36.0, 101),
    ("pm25_ugm3", 75.0, 250),
    ("pm25_ugm3", 76.0, 251),
    ("pm25_ugm3", 500.0, 500),
]


@pytest.mark.parametrize(("pollutant", "concentration", "expected"), EDGES)
def test_band_edges(pollutant: str, concentration: float, expected: int) -> None:
    assert sub_index(pollutant, concentration) == expected


# --- gaps between bands: truncation, not rounding -------------------------------------------------

GAPS = [
    ("so2_ppm", 0.0209, "0.020", 50),  # not 0.021 -> 51
    ("so2_ppm", 0.0509, "0.050", 100),
    ("no2_ppm", 0.0305, "0.030", 50),
    ("no2_ppm", 0.2009, "0.200", 250),
    ("co_ppm", 2.009, "2.00", 50),  # not 2.01 -> 51
    ("co_ppm", 9.005, "9.00", 100),
    ("co_ppm", 15.0099, "15.00", 250),
    ("o3_ppm", 0.0305, "0.030", 50),  # not 0.031 -> 51
    ("o3_ppm", 0.0909, "0.090", 100),
    ("o3_ppm", 0.1509, "0.150", 250),
    ("pm10_ugm3", 30.9, "30", 50),
    ("pm10_ugm3", 80.5, "80", 100),
    ("pm10_ugm3", 150.99, "150", 250),
    ("pm25_ugm3", 15.7, "15", 50),  # not 16 -> 51
    ("pm25_ugm3", 35.5, "35", 100),  # rounding would give 36 -> 101
    ("pm25_ugm3", 75.9, "75", 250),
]


@pytest.mark.parametrize(("pollutant", "concentration", "truncated", "expected"), GAPS)
def test_gaps_truncate_down(pollutant: str, concentration: float, truncated: str, expected: int) -> None:
    assert truncate(pollutant, concentration) == Decimal(truncated)
    assert sub_index(pollutant, concentration) == expected


# --- floating point: a float just below a grid value that stands for it ---------------------------

FLOAT_TRAPS = [
    # (float expression that should be the grid value, grid value, sub-index of the grid value)
    ("o3_ppm", 0.051 - 0.021, "0.030", 50),  # 0.029999999999999995; 0.029 would give 48
    ("o3_ppm", 0.036 - 0.005, "0.031", 51),  # 0.030999999999999996; 0.030 would give 50
    ("so2_ppm", 0.022 - 0.001, "0.021", 51),  # 0.020999999999999998
    ("no2_ppm", 0.071 - 0.01, "0.061", 101),  # 0.06099999999999999
    ("co_ppm", 8.04 - 6.03, "2.01", 51),  # 2.009999999999999
    ("co_ppm", 13.04 - 4.03, "9.01", 101),  # 9.009999999999998
    ("pm10_ugm3", 32.3 - 1.3, "31", 51),  # 30.999999999999996
    ("pm25_ugm3", 16.4 - 0.4, "16", 51),  # 15.999999999999998
    ("pm25_ugm3", 64.1 - 28.1, "36", 101),  # 35.99999999999999
]


@pytest.mark.parametrize(("pollutant", "concentration", "grid", "expected"), FLOAT_TRAPS)
def test_float_just_below_grid_value_is_that_value(
    pollutant: str, concentration: float, grid: str, expected: int
) -> None:
    # The trap is real: the float is below the grid value, and naive truncation steps one down.
    assert concentration < float(grid)
    step = float(STEP[pollutant])
    assert math.floor(concentration / step) * step < float(grid) - step / 2
    assert truncate(pollutant, concentration) == Decimal(grid)
    assert sub_index(pollutant, concentration) == expected


@pytest.mark.parametrize(
    ("pollutant", "concentration", "truncated", "expected"),
    [
        # Values genuinely below a grid value (by far more than float error) still truncate down.
        ("o3_ppm", 0.0299999, "0.029", 48),  # 50 / 0.030 * 0.029 = 48.33 -> 48
        ("o3_ppm", 0.0309999, "0.030", 50),
        ("co_ppm", 2.0099999, "2.00", 50),
        ("pm25_ugm3", 15.999999, "15", 50),
        ("pm10_ugm3", 30.99999, "30", 50),
        # and floats a hair above a grid value stay on it
        ("o3_ppm", 0.1 * 0.3, "0.030", 50),  # 0.030000000000000002
        ("pm25_ugm3", 1.1 * 3, "3", 10),  # 3.3000000000000003 -> 3; 50 / 15 * 3 = 10
    ],
)
def test_truncation_below_grid(pollutant: str, concentration: float, truncated: str, expected: int) -> None:
    assert truncate(pollutant, concentration) == Decimal(truncated)
    assert sub_index(pollutant, concentration) == expected


# --- interpolation inside the bands (worked by hand) ---------------------------------------------

INTERPOLATED = [
    # PM10 55: (100-51)/(80-31)*(55-31)+51 = 49/49*24+51 = 75
    ("pm10_ugm3", 55.0, 75),
    # PM10 100: (250-101)/(150-81)*(100-81)+101 = 149/69*19+101 = 41.03+101 = 142.03 -> 142
    ("pm10_ugm3", 100.0, 142),
    # PM10 300: (500-251)/(600-151)*(300-151)+251 = 249/449*149+251 = 82.63+251 = 333.63 -> 334
    ("pm10_ugm3", 300.0, 334),
    # PM10 10: 50/30*10 = 16.67 -> 17
    ("pm10_ugm3", 10.0, 17),
    # PM2.5 10: 50/15*10 = 33.33 -> 33
    ("pm25_ugm3", 10.0, 33),
    # PM2.5 25: 49/19*(25-16)+51 = 23.21+51 = 74.21 -> 74
    ("pm25_ugm3", 25.0, 74),
    # PM2.5 50: 149/39*(50-36)+101 = 53.49+101 = 154.49 -> 154
    ("pm25_ugm3", 50.0, 154),
    # PM2.5 25.9 truncates to 25 -> 74 (not 25.9 -> 76.5)
    ("pm25_ugm3", 25.9, 74),
    # O3 0.06: 49/0.059*(0.060-0.031)+51 = 24.08+51 = 75.08 -> 75
    ("o3_ppm", 0.06, 75),
    # O3 0.12 (Daegu advisory): 149/0.059*(0.120-0.091)+101 = 73.24+101 = 174.24 -> 174
    ("o3_ppm", 0.12, 174),
    # NO2 0.045: 49/0.029*(0.045-0.031)+51 = 23.66+51 = 74.66 -> 75
    ("no2_ppm", 0.045, 75),
    # NO2 0.02: 50/0.030*0.020 = 33.33 -> 33
    ("no2_ppm", 0.02, 33),
    # SO2 0.1: 149/0.099*(0.100-0.051)+101 = 73.75+101 = 174.75 -> 175
    ("so2_ppm", 0.1, 175),
    # SO2 0.5: 249/0.849*(0.500-0.151)+251 = 102.36+251 = 353.36 -> 353
    ("so2_ppm", 0.5, 353),
    # CO 5: 49/6.99*(5-2.01)+51 = 20.96+51 = 71.96 -> 72
    ("co_ppm", 5.0, 72),
    # CO 1: 50/2*1 = 25
    ("co_ppm", 1.0, 25),
]


@pytest.mark.parametrize(("pollutant", "concentration", "expected"), INTERPOLATED)
def test_interpolation(pollutant: str, concentration: float, expected: int) -> None:
    assert sub_index(pollutant, concentration) == expected


@pytest.mark.parametrize(
    ("pollutant", "concentration", "expected"),
    [
        # Exact halves round up (half-to-even, Python's round(), would give the even neighbour).
        ("so2_ppm", 0.001, 3),  # 50/0.020*0.001 = 2.5 -> 3 (round() -> 2)
        ("so2_ppm", 0.005, 13),  # 12.5 -> 13 (round() -> 12)
        ("so2_ppm", 0.003, 8),  # 7.5 -> 8
        ("co_ppm", 0.02, 1),  # 50/2*0.02 = 0.5 -> 1 (round() -> 0)
        ("co_ppm", 0.10, 3),  # 2.5 -> 3
        ("pm25_ugm3", 288.0, 376),  # 249/424*(288-76)+251 = 124.5+251 = 375.5 -> 376
    ],
)
def test_halves_round_up(pollutant: str, concentration: float, expected: int) -> None:
    assert sub_index(pollutant, concentration) == expected


# --- above the top breakpoint, zero, bad input -----------------------------------------------------

ABOVE_TOP = [
    ("so2_ppm", 1.001),
    ("so2_ppm", 2.0),
    ("no2_ppm", 2.001),
    ("co_ppm", 50.01),
    ("co_ppm", 100.0),
    ("o3_ppm", 0.601),
    ("o3_ppm", 1.0),
    ("pm10_ugm3", 601.0),
    ("pm10_ugm3", 2000.0),
    ("pm25_ugm3", 501.0),
    ("pm25_ugm3", 1000.0),
    ("pm25_ugm3", 1e300),
]


@pytest.mark.parametrize(("pollutant", "concentration"), ABOVE_TOP)
def test_above_top_breakpoint_is_500(pollutant: str, concentration: float) -> None:
    assert sub_index(pollutant, concentration) == 500


@pytest.mark.parametrize(
    ("pollutant", "concentration"),
    [
        # Just above the top breakpoint but truncating onto it: 500 by interpolation at BP_hi.
        ("pm25_ugm3", 500.9),
        ("o3_ppm", 0.6009),
    ],
)
def test_truncating_onto_top_breakpoint(pollutant: str, concentration: float) -> None:
    assert sub_index(pollutant, concentration) == 500


@pytest.mark.parametrize("pollutant", list(NOTES_TABLE))
def test_zero_is_zero(pollutant: str) -> None:
    assert sub_index(pollutant, 0.0) == 0
    assert sub_index(pollutant, 0) == 0


@pytest.mark.parametrize(
    ("pollutant", "concentration"),
    [
        ("pm25_ugm3", -1.0),
        ("o3_ppm", -0.001),
        ("pm10_ugm3", math.nan),
        ("pm10_ugm3", math.inf),
        ("temp_c", 20.0),
        ("pm2.5", 10.0),
    ],
)
def test_invalid_input_raises(pollutant: str, concentration: float) -> None:
    with pytest.raises(ValueError):
        sub_index(pollutant, concentration)


# --- grade ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (0, "good"),
        (50, "good"),
        (51, "moderate"),
        (100, "moderate"),
        (101, "unhealthy"),
        (250, "unhealthy"),
        (251, "very_unhealthy"),
        (500, "very_unhealthy"),
    ],
)
def test_grade(index: int, expected: str) -> None:
    assert grade(index) == expected


@pytest.mark.parametrize("index", [-1, 501])
def test_grade_out_of_range_raises(index: int) -> None:
    with pytest.raises(ValueError):
        grade(index)


# --- pm_24h_mean ----------------------------------------------------------------------------------

H = 472_222 * HOUR_MS  # an hour start (2023-11-14 22:00 UTC)


@pytest.mark.parametrize(
    ("hourly", "expected"),
    [
        ({H: 10.0}, 10.0),  # this hour alone
        ({H: 10.0, H - 5 * HOUR_MS: 20.0, H - 23 * HOUR_MS: 30.0}, 20.0),  # gaps skipped: (10+20+30)/3
        ({H: 10.0, H - 24 * HOUR_MS: 1000.0}, 10.0),  # 24 h before: outside the window
        ({H: 10.0, H - 23 * HOUR_MS: 40.0}, 25.0),  # 23 h before: the oldest hour in the window
        ({H: 10.0, H + HOUR_MS: 1000.0}, 10.0),  # a later hour: not in this hour's window
        ({H - HOUR_MS: 12.0, H - 2 * HOUR_MS: 18.0}, 15.0),  # this hour without data: the others count
        ({H: 10.0, H - HOUR_MS: math.nan}, 10.0),  # NaN is no data
        ({H: 0.0, H - HOUR_MS: 30.0}, 15.0),  # a zero mean is data
        ({H - k * HOUR_MS: float(k) for k in range(30)}, 11.5),  # 0..23 in, 24..29 out: 276/24
    ],
)
def test_pm_24h_mean(hourly: dict[int, float], expected: float) -> None:
    assert pm_24h_mean(hourly, H) == pytest.approx(expected)


@pytest.mark.parametrize(
    "hourly",
    [
        {},
        {H - 24 * HOUR_MS: 5.0},
        {H + HOUR_MS: 5.0},
        {H: math.nan},
    ],
)
def test_pm_24h_mean_none(hourly: dict[int, float]) -> None:
    assert pm_24h_mean(hourly, H) is None


def test_pm_24h_mean_feeds_sub_index() -> None:
    # PM2.5 hourly means 15 and 17 -> 24-h mean 16 -> 51 (the hourly 15 alone would be 50)
    mean = pm_24h_mean({H: 17.0, H - 3 * HOUR_MS: 15.0}, H)
    assert mean == 16.0
    assert sub_index("pm25_ugm3", mean) == 51


# --- comprehensive_index --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gases", "pm", "expected"),
    [
        # nothing, or only non-pollutant measurements: no CAI
        ({}, {}, None),
        ({"temp_c": 21.0, "humidity_pct": 60.0, "noise_dba": 70.0}, {}, None),
        # PM is only taken from the 24-h mapping, gases only from the hourly one
        ({"pm25_ugm3": 200.0}, {}, None),
        ({}, {"o3_ppm": 0.2}, None),
        # only gases: O3 0.06 -> 75 beats NO2 0.02 -> 33
        ({"o3_ppm": 0.06, "no2_ppm": 0.02}, {}, CaiResult(75, "moderate", "o3_ppm")),
        # only PM: PM10 55 -> 75 beats PM2.5 10 -> 33
        ({}, {"pm10_ugm3": 55.0, "pm25_ugm3": 10.0}, CaiResult(75, "moderate", "pm10_ugm3")),
        # both: PM2.5 50 -> 154 beats O3 0.06 -> 75 and CO 1 -> 25
        ({"o3_ppm": 0.06, "co_ppm": 1.0}, {"pm25_ugm3": 50.0}, CaiResult(154, "unhealthy", "pm25_ugm3")),
        # a gas wins over PM: SO2 0.5 -> 353 vs PM10 300 -> 334
        ({"so2_ppm": 0.5, "temp_c": 3.0}, {"pm10_ugm3": 300.0}, CaiResult(353, "very_unhealthy", "so2_ppm")),
        # above the top breakpoint
        ({"no2_ppm": 0.01}, {"pm10_ugm3": 900.0}, CaiResult(500, "very_unhealthy", "pm10_ugm3")),
        # zero is present, not missing
        ({"o3_ppm": 0.0}, {}, CaiResult(0, "good", "o3_ppm")),
        ({"co_ppm": 0.0}, {"pm25_ugm3": 0.0}, CaiResult(0, "good", "co_ppm")),
        # ties: the first in table order (so2, no2, co, o3, pm10, pm25) is named
        ({"o3_ppm": 0.030}, {"pm25_ugm3": 15.0}, CaiResult(50, "good", "o3_ppm")),
        ({"o3_ppm": 0.030, "no2_ppm": 0.030}, {}, CaiResult(50, "good", "no2_ppm")),
        ({"so2_ppm": 0.020, "co_ppm": 2.0}, {"pm10_ugm3": 30.0}, CaiResult(50, "good", "so2_ppm")),
        ({}, {"pm25_ugm3": 15.0, "pm10_ugm3": 30.0}, CaiResult(50, "good", "pm10_ugm3")),
        ({"co_ppm": 60.0}, {"pm25_ugm3": 600.0}, CaiResult(500, "very_unhealthy", "co_ppm")),
        # not a tie: PM2.5 16 -> 51 beats O3 0.030 -> 50 although O3 comes first
        ({"o3_ppm": 0.030}, {"pm25_ugm3": 16.0}, CaiResult(51, "moderate", "pm25_ugm3")),
    ],
)
def test_comprehensive_index(gases: dict[str, float], pm: dict[str, float], expected: CaiResult | None) -> None:
    assert comprehensive_index(gases, pm) == expected


@pytest.mark.parametrize(
    ("index", "expected_grade"),
    [
        (50, "good"),
        (51, "moderate"),
        (100, "moderate"),
        (101, "unhealthy"),
        (250, "unhealthy"),
        (251, "very_unhealthy"),
    ],
)
def test_comprehensive_index_grade_at_edges(index: int, expected_grade: str) -> None:
    # PM10 is the identity on 31..80 (slope 1); use the PM10 edges to reach each index exactly.
    pm10 = {50: 30.0, 51: 31.0, 100: 80.0, 101: 81.0, 250: 150.0, 251: 151.0}[index]
    result = comprehensive_index({}, {"pm10_ugm3": pm10})
    assert result == CaiResult(index, expected_grade, "pm10_ugm3")


def test_comprehensive_index_rejects_negative() -> None:
    with pytest.raises(ValueError):
        comprehensive_index({"o3_ppm": -0.01}, {})


def test_cai_result_is_frozen() -> None:
    result = CaiResult(75, "moderate", "pm10_ugm3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.cai = 80  # type: ignore[misc]
