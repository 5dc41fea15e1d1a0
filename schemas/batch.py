"""The batch envelope of the source topics (schemas/CONTRACT.md section 2): ``{"batch": [reading, ...]}``.

One model per reading kind. A sender's envelope holds 1 to :data:`MAX_BATCH_READINGS` valid readings
of its topic's kind; these models accept exactly that. The processor is more forgiving than the
models: it judges the elements one by one, processes the valid ones and dead-letters each invalid
one with its ``index``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field

from schemas.readings import EnvReading, ParkingReading, SourceKind, TaxiReading

MAX_BATCH_READINGS: Final = 1000

_BATCH_DESCRIPTION: Final = (
    f"1 to {MAX_BATCH_READINGS} readings of the topic's kind. The processor judges them one by one: "
    "valid ones are processed, each invalid one becomes its own dead letter with its index."
)


class _Batch(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    kind: ClassVar[SourceKind]


class TaxiBatch(_Batch):
    """A batch envelope of taxi ADAS readings (``city.taxi.adas.v1``)."""

    kind: ClassVar[SourceKind] = SourceKind.TAXI

    batch: Annotated[
        list[TaxiReading], Field(min_length=1, max_length=MAX_BATCH_READINGS, description=_BATCH_DESCRIPTION)
    ]


class ParkingBatch(_Batch):
    """A batch envelope of parking spot readings (``city.parking.v1``)."""

    kind: ClassVar[SourceKind] = SourceKind.PARKING

    batch: Annotated[
        list[ParkingReading], Field(min_length=1, max_length=MAX_BATCH_READINGS, description=_BATCH_DESCRIPTION)
    ]


class EnvBatch(_Batch):
    """A batch envelope of environment readings (``city.env.v1``)."""

    kind: ClassVar[SourceKind] = SourceKind.ENVIRONMENT

    batch: Annotated[
        list[EnvReading], Field(min_length=1, max_length=MAX_BATCH_READINGS, description=_BATCH_DESCRIPTION)
    ]


BATCH_MODELS: Final[dict[SourceKind, type[TaxiBatch] | type[ParkingBatch] | type[EnvBatch]]] = {
    SourceKind.TAXI: TaxiBatch,
    SourceKind.PARKING: ParkingBatch,
    SourceKind.ENVIRONMENT: EnvBatch,
}
