"""What every simulated device is: an event source in simulated time that returns a reading body."""

from __future__ import annotations

import random
from typing import Any

from schemas.readings import SourceKind

Body = dict[str, Any]


class Sensor:
    """A device that fires at ``due_ms`` and then returns a reading (or None) and reschedules."""

    __slots__ = ("device_id", "due_ms")
    kind: SourceKind

    def __init__(self, device_id: str, due_ms: int) -> None:
        self.device_id = device_id
        self.due_ms = due_ms

    def fire(self, rng: random.Random) -> Body | None:
        raise NotImplementedError
