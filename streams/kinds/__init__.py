"""The sensor kinds: what each kind's readings become (raw points, the record its windows keep, its windows).

Each kind is one module declaring a :class:`~streams.kinds.spec.SensorKind`; :data:`KINDS` lists them
in the order the worker attaches them. The worker, its metrics and the tools loop over it.
"""

from __future__ import annotations

from typing import Any, Final

from streams.kinds import environment, parking, taxi
from streams.kinds.spec import Merge, SensorKind

KINDS: Final[tuple[SensorKind[Any], ...]] = (taxi.KIND, parking.KIND, environment.KIND)

__all__ = ["KINDS", "Merge", "SensorKind"]
