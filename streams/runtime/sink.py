"""Buffering points for InfluxDB and writing them in batches, in order, never dropping one.

:class:`PointSink` buffers line-protocol points by size and interval, writes them through an
:class:`~streams.clients.influx.InfluxWriter`, retries with backoff, and runs the callbacks of a
batch (offset commits) only once InfluxDB has stored it. What InfluxDB's answers mean is said in
:mod:`streams.clients.influx`: a point refused for good is counted by reason and the sink goes on; a
write refused for the configuration (401/403/404) or failing otherwise is retried, and
:attr:`PointSink.problem` says why, for ``/readyz``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from streams.clients.influx import REJECTED_INVALID, WRITE_SECONDS_BUCKETS, InfluxWriter, WriteFailed

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Exponential backoff with full jitter, capped."""

    base_s: float = 0.25
    cap_s: float = 15.0
    attempt: int = 0

    def next_delay(self, floor_s: float | None = None) -> float:
        self.attempt += 1
        delay = random.uniform(0, min(self.cap_s, self.base_s * 2**self.attempt))
        return max(delay, floor_s or 0.0)


@dataclass(frozen=True)
class WriteProblem:
    """Why the sink cannot write now: since when (monotonic seconds), the last answer, and the
    setting to fix when the answer says the configuration is wrong (401/403/404)."""

    since: float
    error: str
    setting: str | None = None


@dataclass
class _Pending:
    lines: list[str] = field(default_factory=list)
    waits: list[Awaitable[object]] = field(default_factory=list)
    on_durable: list[Callable[[], object]] = field(default_factory=list)


@dataclass
class SinkStats:
    points_written: int = 0
    # points InfluxDB refused for good, by reason (REJECTED_REASONS)
    points_rejected: Counter[str] = field(default_factory=Counter)
    writes: int = 0
    write_retries: int = 0
    write_seconds: float = 0.0  # sum of the durations of the successful writes
    # successful writes by duration: write_buckets[i] counts those of at most WRITE_SECONDS_BUCKETS[i]
    # (and not of the bucket before); the last element those above every bound
    write_buckets: list[int] = field(default_factory=lambda: [0] * (len(WRITE_SECONDS_BUCKETS) + 1))

    def observe_write(self, points: int, seconds: float) -> None:
        self.writes += 1
        self.points_written += points
        self.write_seconds += seconds
        self.write_buckets[bisect.bisect_left(WRITE_SECONDS_BUCKETS, seconds)] += 1


class PointSink:
    """Buffers line-protocol points and writes them in batches, in order, never dropping one.

    ``add`` takes lines plus what must also be durable before the batch counts as done (dead-letter
    deliveries), and callbacks to run after that (acknowledging the source messages, which lets
    their offsets be committed). While InfluxDB is down the buffer grows to ``max_pending`` points;
    ``wait_for_room`` then blocks the caller, which stops consuming.
    """

    def __init__(self, writer: InfluxWriter, *, batch_size: int, interval_s: float, max_pending: int) -> None:
        self.writer = writer
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.max_pending = max_pending
        self.stats = SinkStats()
        self._pending = _Pending()
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._flush_lock = asyncio.Lock()
        self._stopping = False
        self.problem: WriteProblem | None = None  # set while a write keeps failing, cleared by a success

    @property
    def pending_points(self) -> int:
        return len(self._pending.lines) + self._in_flight

    def add(
        self,
        lines: list[str],
        *,
        waits: Sequence[Awaitable[object]] | None = None,
        on_durable: Callable[[], object] | None = None,
    ) -> None:
        pending = self._pending
        pending.lines.extend(lines)
        if waits:
            pending.waits.extend(waits)
        if on_durable is not None:
            pending.on_durable.append(on_durable)
        if len(pending.lines) >= self.batch_size:
            self._wake.set()
        if self.pending_points >= self.max_pending:
            self._room.clear()

    async def wait_for_room(self) -> None:
        if not self._room.is_set():
            await self._room.wait()

    async def run(self) -> None:
        """Write batches as they fill up or age, until :meth:`stop`."""
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            self._wake.clear()
            await self.flush()

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Write what is still buffered (for at most ``timeout_s``) and end :meth:`run`.

        Points not written by then are not lost: their source offsets were not committed, so the
        next worker to own those partitions reads them again.
        """
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(self.flush(), timeout=timeout_s)
        except TimeoutError:
            log.warning("stopped with %d points unwritten; they will be read again from Kafka", self.pending_points)

    async def flush(self) -> None:
        """Write what is buffered now; returns once it is stored (retrying as long as it takes)."""
        async with self._flush_lock:
            batch, self._pending = self._pending, _Pending()
            self._in_flight = len(batch.lines)
            try:
                for start in range(0, len(batch.lines), self.batch_size):
                    chunk = batch.lines[start : start + self.batch_size]
                    await self._write_with_retry(chunk)
                    self._in_flight -= len(chunk)
                if batch.waits:
                    await asyncio.gather(*batch.waits)
            finally:
                self._in_flight = 0
            for callback in batch.on_durable:
                callback()
            if self.pending_points < self.max_pending:
                self._room.set()

    async def _write_with_retry(self, lines: list[str]) -> None:
        body = "\n".join(lines).encode("utf-8")
        backoff = Backoff()
        while True:
            started = time.perf_counter()
            try:
                await self.writer.write(body)
            except WriteFailed as exc:
                if exc.status == 413 and len(lines) > 1:
                    half = len(lines) // 2
                    await self._write_with_retry(lines[:half])
                    await self._write_with_retry(lines[half:])
                    return
                if not exc.retryable:
                    self._rejected(exc, lines)
                    return
                delay = backoff.next_delay(exc.retry_after_s)
                self.stats.write_retries += 1
                self._failing(exc)
                level = logging.ERROR if exc.setting else logging.WARNING
                log.log(level, "write of %d points failed: %s; retrying in %.1f s", len(lines), exc, delay)
                await asyncio.sleep(delay)
                continue
            self.stats.observe_write(len(lines), time.perf_counter() - started)
            self.problem = None
            return

    def _rejected(self, exc: WriteFailed, lines: list[str]) -> None:
        """InfluxDB refused points for good: count them (as many as it said it dropped, else the
        whole write), log once at error level, and go on; it kept the other lines of the write."""
        reason = exc.reason or REJECTED_INVALID
        count = min(exc.dropped, len(lines)) if exc.dropped is not None else len(lines)
        self.stats.points_rejected[reason] += count
        self.problem = None  # InfluxDB answered: it is reachable and the settings are right
        first = lines[0][:200] if lines else ""
        log.error(
            "InfluxDB refused %d of %d points of a write for good (%s); the others are written and the "
            "worker goes on. %s. First line of the write: %s",
            count,
            len(lines),
            reason,
            exc,
            first,
        )

    def _failing(self, exc: WriteFailed) -> None:
        since = self.problem.since if self.problem is not None else time.monotonic()
        self.problem = WriteProblem(since, str(exc), exc.setting)
