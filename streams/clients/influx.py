"""Writing line protocol to InfluxDB: the v1 ``/write`` API and the v2 API (influxdb-client).

A writer sends one batch and says whether it was stored, rejected for good, or failed in a way
worth retrying. :class:`PointSink` buffers points by size and interval, retries with backoff, and
runs the callbacks of a batch (offset commits) only once InfluxDB has stored it.

Write answers are taken as InfluxDB means them (1.x, 2.x and 3.x):

* 400 (line protocol or field type conflict), 422 (points outside the bucket's retention; older 2.x
  answer 500 "beyond retention", 1.x a 400), and 413 for a single line are permanent for the points
  concerned: InfluxDB keeps the other lines of the write (a partial write), sending again cannot
  change the answer, so the points are counted as rejected by reason, logged once per write at
  error level, and the sink goes on;
* 401/403 (token) and 404 (database, bucket or organisation) are configuration problems: retried
  with backoff and logged at error level, and :attr:`PointSink.problem` names the setting to fix
  (``/readyz`` reports it); nothing after the unwritten points is acknowledged;
* everything else (unreachable, 429, 5xx) is retried with backoff, honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gzip
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import yarl
from pydantic import SecretStr

from streams.settings import Settings

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# upper bounds (seconds) of the buckets of the write-duration histogram (citystream_influx_write_seconds)
WRITE_SECONDS_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def display_url(url: str) -> str:
    """The URL without a user and password, for log lines and error messages."""
    try:
        parsed = yarl.URL(url)
    except (TypeError, ValueError):
        return "<unparsable URL>"
    if parsed.user is None and parsed.password is None:
        return url
    return str(parsed.with_user(None))


# why InfluxDB refused points for good (the label of citystream_influx_points_rejected_total)
REJECTED_INVALID = "invalid"  # 400: a line that does not parse, or a field type conflict
REJECTED_RETENTION = "retention"  # 422 (or 500/400 "beyond retention"): older than the bucket keeps
REJECTED_TOO_LARGE = "too_large"  # 413 for a single line
REJECTED_REASONS: tuple[str, ...] = (REJECTED_INVALID, REJECTED_RETENTION, REJECTED_TOO_LARGE)

_DROPPED = re.compile(r"dropped=(\d+)")
_RETENTION = re.compile(r"beyond retention|outside (?:the )?retention|retention polic", re.IGNORECASE)


class WriteFailed(Exception):
    """A write that did not store its points.

    ``retryable`` says whether sending again may help; a permanent failure has a ``reason`` (one of
    :data:`REJECTED_REASONS`) and, when InfluxDB said how many, ``dropped`` points; a configuration
    problem names the ``setting`` to fix.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        retry_after_s: float | None = None,
        reason: str | None = None,
        dropped: int | None = None,
        setting: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.reason = reason
        self.dropped = dropped
        self.setting = setting


class InfluxUnavailable(Exception):
    """InfluxDB did not answer within the startup timeout."""


class InfluxWriter(Protocol):
    description: str

    async def open(self) -> None: ...
    async def ping(self) -> bool: ...
    async def prepare(self) -> None: ...
    async def write(self, body: bytes) -> None: ...
    async def close(self) -> None: ...


def _classify(status: int, text: str, retry_after: str | None, what: str, *, api: str = "v1") -> WriteFailed:
    """What an answer other than 204 means for the points of a write (see the module's docstring)."""
    detail = text.strip()[:500]
    dropped_match = _DROPPED.search(text)
    dropped = int(dropped_match.group(1)) if dropped_match else None
    if status == 422 or (status in (400, 500) and _RETENTION.search(text)):
        return WriteFailed(
            f"{what} refused points outside the retention period ({status}): {detail}",
            status=status,
            retryable=False,
            reason=REJECTED_RETENTION,
            dropped=dropped,
        )
    if status == 400:
        # a parse error or a field type conflict: InfluxDB kept the other lines; sending again
        # cannot change the answer
        return WriteFailed(
            f"{what} rejected points (400): {detail}",
            status=status,
            retryable=False,
            reason=REJECTED_INVALID,
            dropped=dropped,
        )
    if status == 413:
        return WriteFailed(
            f"{what}: request too large (413)", status=status, retryable=False, reason=REJECTED_TOO_LARGE
        )
    after = None
    if retry_after:
        try:
            after = float(retry_after)
        except ValueError:
            after = None
    setting = None
    if status in (401, 403):
        setting = "CITYSTREAM_INFLUX_TOKEN"
    elif status == 404:
        setting = "CITYSTREAM_INFLUX_DB" if api == "v1" else "CITYSTREAM_INFLUX_DB and CITYSTREAM_INFLUX_ORG"
    hint = f" (check {setting})" if setting else ""
    return WriteFailed(
        f"{what} answered {status}{hint}: {detail}",
        status=status,
        retryable=True,
        retry_after_s=after,
        setting=setting,
    )


class V1Writer:
    """``POST /write?db=&precision=ms`` with a gzip body: InfluxDB 1.x and the 2.x/3.x v1 endpoints."""

    def __init__(
        self, url: str, database: str, token: SecretStr | None, timeout_s: float, precision: str = "ms"
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.precision = precision
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.description = f"InfluxDB v1 API at {display_url(self.url)}, database {database}"

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            return {}
        return {"Authorization": f"Token {self._token.get_secret_value()}"}

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers())

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("writer is not open")
        return self._session

    async def ping(self) -> bool:
        try:
            async with self.session.get(f"{self.url}/ping") as response:
                return response.status in (200, 204)
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def prepare(self) -> None:
        """Create the database when it is missing (InfluxDB 1.x); 2.x/3.x map it to a bucket."""
        query = f'CREATE DATABASE "{self.database}"'
        try:
            async with self.session.post(f"{self.url}/query", data={"q": query}) as response:
                if response.status != 200:
                    log.warning(
                        "could not create database %s (%s); writes assume it exists", self.database, response.status
                    )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("could not create database %s: %s", self.database, exc)

    async def write(self, body: bytes) -> None:
        params = {"db": self.database, "precision": self.precision}
        data = gzip.compress(body, compresslevel=1)
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
        try:
            async with self.session.post(f"{self.url}/write", params=params, data=data, headers=headers) as response:
                if response.status == 204:
                    return
                raise _classify(response.status, await response.text(), response.headers.get("Retry-After"), "InfluxDB")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise WriteFailed(f"InfluxDB at {display_url(self.url)} unreachable: {exc!r}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class V2Writer:
    """``/api/v2/write`` through influxdb-client's async client: InfluxDB 2.x, 3.x and Cloud."""

    def __init__(
        self, url: str, bucket: str, org: str, token: SecretStr, timeout_s: float, precision: str = "ms"
    ) -> None:
        self.url = url.rstrip("/")
        self.bucket = bucket
        self.precision = precision
        self.org = org
        self._token = token
        self._timeout_ms = int(timeout_s * 1000)
        self._client: Any = None
        self._write_api: Any = None
        self.description = f"InfluxDB v2 API at {display_url(self.url)}, org {org}, bucket {bucket}"

    async def open(self) -> None:
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        if self._client is None:
            client = InfluxDBClientAsync(
                url=self.url,
                token=self._token.get_secret_value(),
                org=self.org,
                timeout=self._timeout_ms,
                enable_gzip=True,
            )
            self._client = client
            self._write_api = client.write_api()

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except Exception:  # the client raises many kinds while the server is down
            return False

    async def prepare(self) -> None:
        """The bucket is created with the organisation; nothing to do here."""

    async def write(self, body: bytes) -> None:
        from influxdb_client.client.write_api import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            await self._write_api.write(
                bucket=self.bucket,
                org=self.org,
                record=body.decode("utf-8"),
                write_precision=WritePrecision.NS if self.precision == "ns" else WritePrecision.MS,
            )
        except ApiException as exc:
            headers: Mapping[str, str] = exc.headers or {}
            raise _classify(
                int(exc.status or 0), str(exc.body or exc.reason or ""), headers.get("Retry-After"), "InfluxDB"
            ) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise WriteFailed(f"InfluxDB at {display_url(self.url)} unreachable: {exc!r}") from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def make_writer(settings: Settings, precision: str = "ms") -> InfluxWriter:
    """A writer for line protocol with timestamps in ``precision`` (``ms`` or ``ns``)."""
    if settings.influx_api == "v2":
        assert settings.influx_org is not None and settings.influx_token is not None  # settings check it
        return V2Writer(
            settings.influx_url,
            settings.influx_db,
            settings.influx_org,
            settings.influx_token,
            settings.write_timeout_s,
            precision,
        )
    return V1Writer(settings.influx_url, settings.influx_db, settings.influx_token, settings.write_timeout_s, precision)


async def wait_until_ready(writer: InfluxWriter, timeout_s: float) -> None:
    """Wait for InfluxDB to answer a ping, for at most ``timeout_s``; then prepare it."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while not await writer.ping():
        if time.monotonic() + delay > deadline:
            raise InfluxUnavailable(
                f"{writer.description} did not answer within {timeout_s:.0f} s; check "
                "CITYSTREAM_INFLUX_URL and that InfluxDB is running"
            )
        log.warning("%s not reachable yet; retrying", writer.description)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
    await writer.prepare()


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
