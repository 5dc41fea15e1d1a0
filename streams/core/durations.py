"""Durations as the command-line tools take them: ``90s``, ``30m``, ``2h``, ``1d``, ``1w``, ``1h30m``, ``1.5h``.

A duration is one or more parts of a number (decimals allowed) and a unit: ``s`` seconds, ``m``
minutes, ``h`` hours, ``d`` days, ``w`` weeks (7 days). Case and spaces do not matter (``1H 30m``).
The parts add up (``1h30m`` is 90 minutes); the result is whole milliseconds, rounded down.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Final

UNIT_MS: Final = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
# for help texts and error messages
EXAMPLES: Final = "30m, 2h, 1d, 1w, 1h30m"

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration_ms(text: str) -> int:
    """Milliseconds of a duration such as ``30m`` or ``1h30m`` (zero for ``0m``); ValueError otherwise."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _PART.sub("", compact):
        raise ValueError(f"{text!r} is not a duration such as {EXAMPLES}")
    return int(sum(Fraction(number) * UNIT_MS[unit] for number, unit in _PART.findall(compact)))
