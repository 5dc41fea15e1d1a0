"""One server process on a loopback port: :class:`ManagedService`, and the pid file that finds it again.

Every service writes its output to ``<name>.log`` and its pid to ``<name>.pid`` in its folder, so a
later command can find it, check that the pid is still that process, and stop it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from streams.tools.localstack.errors import PortInUseError, ServiceStartError
from streams.tools.localstack.ports import HOST, Probe, port_is_free

_LOG_MARK = "=== citystream: "  # first characters of the line written before each start


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


def record_alive(record: ProcessRecord) -> bool:
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
        return record if record is not None and record_alive(record) else None

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
        if record is not None and record_alive(record):
            was_running = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, sig)
            if not _wait_gone(lambda: record_alive(record), timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record.pid, signal.SIGKILL)
                _wait_gone(lambda: record_alive(record), 10.0)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        return was_running
