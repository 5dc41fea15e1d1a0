"""A sensor kind as one declaration: what the worker, the metrics and the tools are wired from.

A kind's readings arrive on its source topic, keyed by device. In their source partition each valid
reading is judged (duplicate? late?) and then either

* **folded** into windows kept right there, when a window's key is the device (environment stations:
  :attr:`SensorKind.fold`), or
* **merged**: reduced to a small record and forwarded to an internal topic keyed by what its windows
  are keyed by (a taxi's H3 cell, a parking lot), where readings from every source partition meet
  (:class:`Merge`).

Rules (:mod:`streams.rules`) run on the readings of the source partition and on the final windows of
the partition that keeps them. Adding a kind (a bus GPS feed, flood gauges) is one module in
:mod:`streams.kinds` that declares its :class:`SensorKind`, and one entry in
:data:`streams.kinds.KINDS`; see CONTRIBUTING.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from schemas.readings import Reading, SourceKind
from streams.core.ingest import SourceStream
from streams.core.registry import Registry
from streams.core.windows import SourceGate, WindowedAggregate, WindowPolicy
from streams.rules.partition import PartitionRules
from streams.rules.policy import AlertPolicy

R = TypeVar("R", bound=Reading)

AggregateFactory = Callable[[WindowPolicy, Registry], WindowedAggregate]
RulesFactory = Callable[[AlertPolicy], PartitionRules]


def source_gate(policy: WindowPolicy, registry: Registry) -> WindowedAggregate:
    """A source partition whose readings are merged elsewhere only judges them (duplicates, lateness)."""
    return SourceGate(policy)


@dataclass(frozen=True)
class Merge:
    """Readings reduced to records and re-keyed to an internal topic, where their windows are kept."""

    topic_suffix: str  # the internal topic is ``<app id>.<topic_suffix>``
    record_type: type[tuple[Any, ...]]  # a NamedTuple; forwarded as its fields and rebuilt from them
    reduce: Callable[[Any], tuple[Any, ...]]  # a valid reading -> its record
    key: Callable[[Any], str]  # a record -> its key on the internal topic
    aggregate: AggregateFactory
    rules: RulesFactory | None = None  # rules on the merged windows

    def topic(self, app_id: str) -> str:
        return f"{app_id}.{self.topic_suffix}"


@dataclass(frozen=True)
class SensorKind(SourceStream[R], Generic[R]):
    """One kind of sensor: its topic, model and raw point (:class:`SourceStream`), and its windows.

    ``aggregate`` is what its source partitions keep: the windows themselves when ``fold`` is given
    (``fold`` makes the sample the windows take from a reading), else a gate that only judges
    readings before ``merge`` forwards them. ``rules`` run in the source partitions.
    """

    aggregate: AggregateFactory = source_gate
    fold: Callable[[Any, Registry], Any] | None = None
    rules: RulesFactory | None = None
    merge: Merge | None = None

    def __post_init__(self) -> None:
        if (self.fold is None) == (self.merge is None):
            raise ValueError(f"{self.kind}: a kind either folds its readings where they arrive or merges them")

    @property
    def name(self) -> str:
        return self.kind.value


def kind_of(kind: SourceKind, kinds: tuple[SensorKind[Any], ...]) -> SensorKind[Any]:
    return next(spec for spec in kinds if spec.kind is kind)
