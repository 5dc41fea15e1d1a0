"""``citystream worker`` as a child process: how the demo, the benchmarks and the tests run it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Self


class WorkerProcess:
    """One worker with its own settings (``CITYSTREAM_*`` variables), logging to a file."""

    def __init__(
        self, workdir: Path, env: dict[str, str], log_path: Path | None = None, args: Sequence[str] = ()
    ) -> None:
        self.workdir = workdir
        self.env = env
        self.args = list(args)  # of ``citystream worker``, such as --processes 2
        self.log_path = log_path or workdir / f"worker-{env.get('CITYSTREAM_WEB_PORT', '6066')}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def command() -> list[str]:
        executable = shutil.which("citystream")
        if executable is None:
            # installed as a package but not on PATH (a venv not activated, say)
            candidate = Path(sys.executable).with_name("citystream")
            if not candidate.exists():
                raise FileNotFoundError("the citystream command is not installed: pip install -e .")
            executable = str(candidate)
        return [executable, "worker"]

    def start(self) -> Self:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSTREAM_")}
        env.update(self.env)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.command(), *self.args],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, as an operator stops it; SIGKILL if it has not exited after ``timeout``."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class BridgeProcess(WorkerProcess):
    """``citystream bridge mqtt`` as a child process, with its own settings, logging to a file."""

    def __init__(self, workdir: Path, env: dict[str, str], log_path: Path | None = None) -> None:
        client_id = env.get("CITYSTREAM_MQTT_CLIENT_ID", "citystream-bridge")
        super().__init__(workdir, env, log_path or workdir / f"bridge-{client_id}.log")

    @staticmethod
    def command() -> list[str]:
        return [*WorkerProcess.command()[:-1], "bridge", "mqtt"]
