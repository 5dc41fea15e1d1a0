"""The one duration parser of the command-line tools (report --since, deadletters --since/--until)."""

from __future__ import annotations

import pytest

from streams.core.durations import parse_duration_ms

S, M, H, D, W = 1000, 60_000, 3_600_000, 86_400_000, 7 * 86_400_000


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("90s", 90 * S),
        ("30m", 30 * M),
        ("15m", 15 * M),
        ("1h", H),
        ("2h", 2 * H),
        ("1d", D),
        ("2d", 2 * D),
        ("1w", W),
        ("2w", 2 * W),
        ("1h30m", H + 30 * M),
        ("1d12h", D + 12 * H),
        ("1w2d3h4m5s", W + 2 * D + 3 * H + 4 * M + 5 * S),
        ("1.5h", 90 * M),
        ("0.5h", 30 * M),
        ("1.001s", 1001),  # exact: no floating-point rounding down to 1000
        ("0.0005s", 0),  # below a millisecond: rounded down
        ("0m", 0),
        (" 1H ", H),
        ("1W", W),
        ("1h 30m", H + 30 * M),
        ("30m1h", H + 30 * M),  # parts in any order
    ],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(
    "text",
    ["", " ", "1", "10", "h", "h1", "1x", "1y", "1h-5m", "-1h", "+1h", "1 hour", "1.h", ".5h", "1,5h", "yesterday"],
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration such as 30m, 2h, 1d, 1w, 1h30m"):
        parse_duration_ms(text)
