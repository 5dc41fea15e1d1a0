"""Loopback ports, and the probes that tell whether a Kafka broker or an HTTP server answers on one."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import urllib.error
import urllib.request
from collections.abc import Callable

HOST = "127.0.0.1"


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


def mqtt_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` answers an MQTT 3.1.1 CONNECT with a CONNACK, i.e. is an MQTT broker.

    The probe connects with a clean session (nothing is left behind) and disconnects at once."""
    client_id = f"citystream-probe-{os.getpid()}".encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a"  # protocol name and level, clean session, keepalive 10 s
    body = variable + struct.pack(">H", len(client_id)) + client_id
    connect = bytes([0x10, len(body)]) + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(connect)
            answer = b""
            while len(answer) < 4:
                chunk = sock.recv(4 - len(answer))
                if not chunk:
                    return False
                answer += chunk
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError:
        return False
    return answer[0] == 0x20 and answer[1] == 0x02 and answer[3] == 0x00  # CONNACK, accepted


# Loopback requests never go through a proxy configured in the environment.
LOOPBACK_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_answers(host: str, port: int, path: str, status: int, timeout: float = 1.0) -> bool:
    """True when ``GET http://host:port{path}`` answers with ``status``."""
    try:
        with LOOPBACK_OPENER.open(f"http://{host}:{port}{path}", timeout=timeout) as response:
            return int(response.status) == status
    except (OSError, urllib.error.URLError, ValueError):
        return False


Probe = Callable[[str, int], bool]
