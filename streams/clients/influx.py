"""Writing line protocol to InfluxDB: the v1 ``/write`` API and the v2 API (influxdb-client); reading
it back with InfluxQL over ``/query`` (:class:`InfluxQLReader`, for the tools).

A writer sends one batch and says whether it was stored, rejected for good, or failed in a way
worth retrying; :class:`streams.runtime.sink.PointSink` buffers points, retries and tells when a
batch is durable.

Write answers are taken as InfluxDB means them (1.x, 2.x and 3.x):

* 400 (line protocol or field type conflict), 422 (points outside the bucket's retention; older 2.x
  answer 500 "beyond retention", 1.x a 400), and 413 for a single line are permanent for the points
  concerned: InfluxDB keeps the other lines of the write (a partial write), sending again cannot
  change the answer, so the points are counted as rejected by reason, logged once per write at
  error level, and the sink goes on;
* 401/403 (token) and 404 (database, bucket or organisation) are configuration problems: retried
  with backoff and logged at error level, and the sink's ``problem`` names the setting to fix
  (``/readyz`` reports it); nothing after the unwritten points is acknowledged;
* everything else (unreachable, 429, 5xx) is retried with backoff, honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import yarl
from pydantic import SecretStr

from streams.errors import CitystreamError
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


class WriteFailed(CitystreamError):
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


class InfluxUnavailable(CitystreamError):
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


class InfluxQueryError(CitystreamError):
    """An InfluxQL query InfluxDB did not answer, or refused; the message names the setting to check."""


class InfluxQLReader:
    """InfluxQL over ``GET /query`` (synchronous, urllib): InfluxDB 1.x, and 2.x/3.x through their v1
    compatibility API, which needs the token (sent as ``Authorization: Token ...``, as the v1 writer
    does) and a DBRP mapping of the database name to a bucket."""

    def __init__(self, url: str, database: str, token: SecretStr | str | None = None, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self._token = token.get_secret_value() if isinstance(token, SecretStr) else token
        self.timeout_s = timeout_s

    def query(self, statement: str) -> list[dict[str, Any]]:
        """The series of one statement's result, times in epoch milliseconds; InfluxQueryError otherwise."""
        where = display_url(self.url)
        params = urllib.parse.urlencode({"db": self.database, "q": statement, "epoch": "ms"})
        request = urllib.request.Request(f"{self.url}/query?{params}")
        if self._token:
            request.add_header("Authorization", f"Token {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                document = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()[:500]
            hint = " (check CITYSTREAM_INFLUX_TOKEN)" if exc.code in (401, 403) else ""
            raise InfluxQueryError(f"InfluxDB at {where} answered {exc.code}{hint}: {detail}") from None
        except (OSError, ValueError) as exc:
            raise InfluxQueryError(
                f"InfluxDB at {where} is not reachable ({exc}); check CITYSTREAM_INFLUX_URL"
            ) from None
        if "error" in document:
            raise InfluxQueryError(f"InfluxDB refused the query: {document['error']}")
        result = document["results"][0]
        if "error" in result:
            error = str(result["error"])
            if error.startswith("database not found"):
                raise InfluxQueryError(f"InfluxDB at {where}: {error}; check CITYSTREAM_INFLUX_DB")
            raise InfluxQueryError(f"InfluxDB refused the query: {error}\n  {statement}")
        if result.get("partial"):
            raise InfluxQueryError(
                "InfluxDB truncated a result (max-row-limit); choose a shorter range\n  " + statement
            )
        return list(result.get("series", []))
