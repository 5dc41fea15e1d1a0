"""How numbers and durations read in the alerts' messages."""

from __future__ import annotations


def value_text(value: float, threshold: float, decimals: int) -> str:
    """``value`` rounded for a message, with as many more digits as it takes not to contradict the
    comparison with ``threshold`` (74.96 is shown as 74.96, not 75.0, in "< 75")."""
    at_or_above = value >= threshold
    for places in range(decimals, decimals + 7):
        text = f"{value:.{places}f}"
        if (float(text) >= threshold) == at_or_above:
            return text
    return repr(float(value))


def number_text(threshold: float) -> str:
    return f"{threshold:g}"


def duration_text(ms: float) -> str:
    """A human duration: "45 s", "10 min", "60 min", "36 h", "2 h 5 min", "2 d 3 h"."""
    seconds = round(ms / 1000)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" if minutes == 0 else f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d" if hours == 0 else f"{days} d {hours} h"
