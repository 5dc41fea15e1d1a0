"""The root of citystream's own exceptions.

Every error the project raises on purpose derives from :class:`CitystreamError`, so that a caller can
tell the project's refusals (a wrong setting, a registry that does not parse, a broker that does not
answer, a write InfluxDB refused) from a bug. Each says in its message what to fix.
"""

from __future__ import annotations


class CitystreamError(Exception):
    """An error citystream raises on purpose; its message says what went wrong and what to fix."""
