"""``citystream worker`` with a configuration error: exit code 2 and one line naming what to fix.

These errors are found before the worker connects to Kafka: the bootstrap address is a closed port
and no broker or InfluxDB is needed.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.tools.localstack import free_port
from streams.tools.workerprocess import WorkerProcess

pytestmark = pytest.mark.integration

DEEP = 5_000


def run_worker(workdir: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSTREAM_")}
    env.update(
        CITYSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",  # nothing listens there
        CITYSTREAM_INFLUX_URL=f"http://127.0.0.1:{free_port()}",
        CITYSTREAM_STARTUP_TIMEOUT_S="5",
        CITYSTREAM_WEB_PORT=str(free_port()),
        CITYSTREAM_DATA_DIR=str(workdir / "var"),
    )
    env.update(settings)
    return subprocess.run(
        WorkerProcess.command(),
        cwd=workdir,  # no .env there
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_config_error(result: subprocess.CompletedProcess[str], *names: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output
    line = lines[0]
    assert line.startswith("citystream worker: "), output
    for name in names:
        assert name in line, output
    return line


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"parking_lots:\n  lot-\xe9: {capacity: 4}\n", "not UTF-8 text at byte offset 20"),
        (("a: " + "[" * DEEP + "]" * DEEP).encode(), "nested too deeply"),
        ("\n".join(" " * depth + "k:" for depth in range(DEEP)).encode() + b" 1\n", "nested too deeply"),
    ],
    ids=["not-utf8", "deep-sequences", "deep-mappings"],
)
def test_bad_registry_file(tmp_path: Path, content: bytes, problem: str) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_bytes(content)
    line = assert_config_error(run_worker(tmp_path, CITYSTREAM_REGISTRY=str(registry)), "CITYSTREAM_REGISTRY")
    assert str(registry) in line
    assert problem in line


def test_data_dir_is_a_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.write_text("")
    line = assert_config_error(run_worker(tmp_path, CITYSTREAM_DATA_DIR=str(data_dir)), "CITYSTREAM_DATA_DIR")
    assert line.endswith(f"{data_dir} is a file, not a directory")


def test_data_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    data_dir = tmp_path / "file" / "var"
    line = assert_config_error(run_worker(tmp_path, CITYSTREAM_DATA_DIR=str(data_dir)), "CITYSTREAM_DATA_DIR")
    assert f"cannot create {data_dir}" in line


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_web_port_in_use(tmp_path: Path, busy_port: int) -> None:
    result = run_worker(tmp_path, CITYSTREAM_WEB_HOST="127.0.0.1", CITYSTREAM_WEB_PORT=str(busy_port))
    line = assert_config_error(result, "CITYSTREAM_WEB_PORT", "CITYSTREAM_WEB_HOST")
    assert f"port {busy_port} on 127.0.0.1 (CITYSTREAM_WEB_HOST) is already in use" in line
    assert "choose a free port" in line


def test_web_port_zero(tmp_path: Path) -> None:
    line = assert_config_error(run_worker(tmp_path, CITYSTREAM_WEB_PORT="0"), "CITYSTREAM_WEB_PORT")
    assert "choose a free port" in line
