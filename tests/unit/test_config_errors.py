"""Configuration errors found at start: the registry file, the data directory and the web port.

Each gives one line that names the variable (or the file) and what to fix, never a traceback.
"""

from __future__ import annotations

import errno
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.core.registry import RegistryError, load_registry
from streams.settings import ConfigError, check_web_port, prepare_data_dir
from streams.tools.localstack import free_port

DEEP = 5_000


def _registry_error(path: Path) -> str:
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    message = str(info.value)
    assert "\n" not in message
    assert "CITYSTREAM_REGISTRY" in message
    assert str(path) in message
    return message


def test_registry_not_utf8_names_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    text = b"parking_lots:\n  lot-1: {capacity: 3}\n  lot-\xe9: {capacity: 4}\n"
    path.write_bytes(text)
    offset = text.index(b"\xe9")
    message = _registry_error(path)
    assert f"not UTF-8 text at byte offset {offset}" in message


def test_registry_utf16_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_bytes("parking_lots: {}\n".encode("utf-16"))
    assert "not UTF-8 text at byte offset 0" in _registry_error(path)


@pytest.mark.parametrize(
    "document",
    [
        "a: " + "[" * DEEP + "]" * DEEP,
        "a: " + "{b: " * DEEP + "1" + "}" * DEEP,
        "\n".join(" " * depth + "k:" for depth in range(DEEP)) + " 1\n",
    ],
    ids=["sequences", "flow-mappings", "block-mappings"],
)
def test_registry_nested_too_deeply(tmp_path: Path, document: str) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(document)
    assert "nested too deeply" in _registry_error(path)


def test_registry_yaml_error_is_one_line_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text("parking_lots:\n  lot-1: {capacity: 3\n")
    message = _registry_error(path)
    assert "cannot read the registry" in message
    assert "line 3" in message


def test_registry_invalid_content_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text("parking_lots:\n  lot-1: {capacity: 0}\n")
    message = _registry_error(path)
    assert "is not valid" in message
    assert "parking_lots.lot-1.capacity" in message


def test_registry_unreadable_names_the_variable(tmp_path: Path) -> None:
    message = _registry_error(tmp_path)  # a directory: read_text raises IsADirectoryError
    assert "cannot read the registry" in message


def _config_error(call: object, *args: object) -> str:
    with pytest.raises(ConfigError) as info:
        call(*args)  # type: ignore[operator]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_data_dir_is_created(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b" / "var"
    prepare_data_dir(data_dir)
    assert data_dir.is_dir()
    prepare_data_dir(data_dir)  # an existing directory is fine
    assert list(data_dir.iterdir()) == []  # the write check leaves nothing behind


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.write_text("not a directory")
    message = _config_error(prepare_data_dir, data_dir)
    assert message == f"CITYSTREAM_DATA_DIR: {data_dir} is a file, not a directory"


def test_data_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    data_dir = tmp_path / "file" / "var"
    message = _config_error(prepare_data_dir, data_dir)
    assert message.startswith(f"CITYSTREAM_DATA_DIR: cannot create {data_dir}")
    assert "Not a directory" in message


def test_data_dir_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # as root, permissions do not stop a write: the refusal is simulated
    def refuse(*args: object, **kwargs: object) -> object:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    message = _config_error(prepare_data_dir, tmp_path)
    assert message == f"CITYSTREAM_DATA_DIR: cannot write in {tmp_path} (Permission denied)"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_free_port_passes() -> None:
    port = free_port()
    check_web_port("127.0.0.1", port)
    check_web_port("127.0.0.1", port)  # the check leaves the port free


def test_port_zero_is_refused() -> None:
    # Faust's web server refuses port 0 ("any port") with a traceback: refused here, in one line
    message = _config_error(check_web_port, "127.0.0.1", 0)
    assert message.startswith("CITYSTREAM_WEB_PORT: 0 (any port) is not supported")
    assert "choose a free port" in message


def test_port_in_use(busy_port: int) -> None:
    message = _config_error(check_web_port, "127.0.0.1", busy_port)
    assert "CITYSTREAM_WEB_PORT" in message and "CITYSTREAM_WEB_HOST" in message
    assert message == (
        f"CITYSTREAM_WEB_PORT: port {busy_port} on 127.0.0.1 (CITYSTREAM_WEB_HOST) is already in use "
        "by another process; choose a free port"
    )


def test_port_in_use_on_all_interfaces(busy_port: int) -> None:
    message = _config_error(check_web_port, "0.0.0.0", busy_port)
    assert f"port {busy_port} on 0.0.0.0 (CITYSTREAM_WEB_HOST) is already in use" in message


@pytest.mark.parametrize("host", ["no-such-host.invalid", "a..b"])
def test_unknown_web_host(host: str) -> None:
    message = _config_error(check_web_port, host, free_port())
    assert message.startswith(f"CITYSTREAM_WEB_HOST: cannot resolve {host}")


def test_web_host_not_on_this_machine() -> None:
    message = _config_error(check_web_port, "192.0.2.1", free_port())  # TEST-NET-1: no interface has it
    assert message.startswith("CITYSTREAM_WEB_HOST, CITYSTREAM_WEB_PORT: cannot listen on 192.0.2.1:")
