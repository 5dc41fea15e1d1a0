"""The layers of ``streams/`` stay visible: what each package may import.

core      pure logic: schemas and the standard library, pydantic, orjson, h3, yaml
rules     core
kinds     core, rules (a kind declares the rule families that watch it)
clients   core (Kafka and InfluxDB clients live here)
runtime   core, kinds, rules, clients (the only package that imports Faust)
bridge    core, clients (the MQTT bridge: the only package besides tools that imports aiomqtt)
tools     anything; nothing imports tools
settings  (streams/settings.py, streams/errors.py, at the top) core, kinds, rules

A failing test names the module and the import that crosses a layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STREAMS = Path(__file__).resolve().parents[2] / "streams"

# project packages each layer may import (besides itself, schemas and streams.settings/errors)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "kinds": {"core", "rules"},
    "rules": {"core"},
    "clients": {"core"},
    "runtime": {"core", "kinds", "rules", "clients"},
    "bridge": {"core", "clients"},
    "tools": {"core", "kinds", "rules", "clients", "runtime", "bridge"},
}
# streams/settings.py checks the alert thresholds against the rules' policy
TOP_LEVEL_ALLOWED = {"core", "kinds", "rules"}
# third-party libraries that only some layers may import
EDGE_LIBRARIES = {
    "faust",
    "mode",
    "aiokafka",
    "aiohttp",
    "aiomqtt",
    "paho",
    "click",
    "influxdb_client",
    "rich",
    "matplotlib",
    "yarl",
}
LIBRARIES_ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "kinds": set(),
    "rules": set(),
    "clients": {"aiokafka", "aiohttp", "influxdb_client", "yarl"},
    "runtime": {"faust", "mode", "aiokafka", "aiohttp", "yarl"},
    "bridge": {"aiomqtt", "paho", "aiokafka", "aiohttp"},
    "tools": EDGE_LIBRARIES - {"faust", "mode"},
}


def modules() -> list[Path]:
    return sorted(p for p in STREAMS.rglob("*.py") if p.parent != STREAMS or p.name not in ("__init__.py",))


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            if node.module == "streams":
                names += [f"streams.{alias.name}" for alias in node.names]
    return names


def layer_of(path: Path) -> str | None:
    relative = path.relative_to(STREAMS)
    return relative.parts[0] if len(relative.parts) > 1 else None


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(STREAMS)))
def test_each_module_imports_only_the_layers_below(path: Path) -> None:
    layer = layer_of(path)
    if layer is None:  # streams/settings.py, streams/errors.py: used by every layer, above the pure ones only
        for name in imports_of(path):
            parts = name.split(".")
            if parts[0] == "streams" and len(parts) > 1 and parts[1] in ALLOWED:
                assert parts[1] in TOP_LEVEL_ALLOWED, f"{path.name} imports {name}"
            assert parts[0] not in EDGE_LIBRARIES, f"{path.name} imports {parts[0]}"
        return
    assert layer in ALLOWED, f"streams/{layer}/ is not a known layer: add it to ALLOWED"
    for name in imports_of(path):
        parts = name.split(".")
        if parts[0] == "streams" and len(parts) > 1 and parts[1] in ALLOWED:
            assert parts[1] == layer or parts[1] in ALLOWED[layer], f"{path.name} ({layer}) imports {name}"
        if parts[0] in EDGE_LIBRARIES:
            assert parts[0] in LIBRARIES_ALLOWED[layer], f"{path.name} ({layer}) imports {parts[0]}"
