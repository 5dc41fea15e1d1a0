"""Offline checks of deploy/: the Dockerfile, docker-compose.yml, Prometheus, Grafana and the kustomize base.

Nothing here needs Docker, a cluster or a network: the files are parsed with PyYAML and json and compared
with what the worker really has: its settings (streams.settings.Settings), the measurements, tags and fields
it writes (constants of streams/ and schemas/, contract section 5) and the Prometheus metrics it exports
(streams.runtime.metrics when it is there, else the operations spec's list below). `kubectl kustomize` and
`docker compose config` (or Debian's `docker-compose`) run when those tools are installed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from schemas.readings import ENV_MEASUREMENTS
from streams.core.cai import GRADES, INDEX_BANDS
from streams.kinds.taxi import COUNTERS as TAXI_COUNTERS
from streams.rules.points import ALERTS_MEASUREMENT
from streams.rules.policy import KINDS as ALERT_KINDS
from streams.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
WORKERS = ("worker-1", "worker-2")
DASHBOARD_FILES = ("air-quality.json", "parking.json", "adas.json", "pipeline.json")


def variable(name: str) -> str:
    return ENV_PREFIX + name.upper()


# every setting the worker reads: follows the model as settings are added
MODEL_VARIABLES = {variable(name) for name in Settings.model_fields}
# the operations spec's settings, named here too so that a rename in either place is caught
SPEC_VARIABLES = {
    variable(name)
    for name in (
        "web_port",
        "web_host",
        "log_format",
        "kafka_security_protocol",
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_sasl_password_file",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "influx_token_file",
    )
}
SETTING_VARIABLES = MODEL_VARIABLES | SPEC_VARIABLES
# settings that are secrets: never in a ConfigMap, in Kubernetes only through the Secret
SECRET_VARIABLES = {
    variable(name)
    for name, info in Settings.model_fields.items()
    if SecretStr in getattr(info.annotation, "__args__", ())
} | {variable("influx_token"), variable("kafka_sasl_password")}
# what a worker writing to InfluxDB 2.x cannot do without (the data dir may come from the image)
V2_REQUIRED = {variable(n) for n in ("kafka_bootstrap", "influx_url", "influx_api", "influx_db", "influx_org")}
# compose takes the token from INFLUXDB_TOKEN (InfluxDB is set up with it), so offers no token file
COMPOSE_NOT_OFFERED = {variable("influx_token_file")}

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# --- loading -------------------------------------------------------------------------------------


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["version"]


def project_packages() -> list[str]:
    """The top-level packages of the wheel (``packages.find`` includes their subpackages)."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    return [pattern.removesuffix("*") for pattern in include]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def service_env_names(service: dict[str, Any]) -> set[str]:
    """Every variable a service lists, passed-through ones (no value) included."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {item.split("=", 1)[0] for item in env}
    return set(env)


def service_env(service: dict[str, Any]) -> dict[str, str]:
    """The variables a service sets; one listed without a value is passed through (from .env or the
    shell) and so is left out: the worker's default applies unless the operator sets it."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env if "=" in item)
        return {key: value for key, value in pairs}
    return {key: str(value) for key, value in env.items() if value is not None}


def interpolate(value: str) -> str:
    """Resolve compose's ${VAR}, ${VAR:-default} and ${VAR:?error} with stand-in values."""

    def repl(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if op in (":-", "-"):
            return arg
        return f"stand-in-{name.lower()}"

    return _INTERPOLATION.sub(repl, value)


def worker_env(worker: str = WORKERS[0]) -> dict[str, str]:
    """What a compose worker's settings resolve to with nothing set in deploy/.env: image, then compose."""
    return image_env() | {k: interpolate(v) for k, v in service_env(services()[worker]).items()}


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def k8s_resources() -> list[dict[str, Any]]:
    """The documents of the files kustomization.yaml lists."""
    docs: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / name).read_text()) if d)
    return docs


def k8s_one(kind: str) -> dict[str, Any]:
    found = [d for d in k8s_resources() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in the kustomize base, found {len(found)}"
    return found[0]


def k8s_services() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_resources() if d["kind"] == "Service"}


def headless_service() -> dict[str, Any]:
    return k8s_services()[k8s_one("StatefulSet")["spec"]["serviceName"]]


def metrics_service() -> dict[str, Any]:
    found = [s for s in k8s_services().values() if any(p.get("name") == "metrics" for p in s["spec"]["ports"])]
    assert len(found) == 1, f"expected one Service with a port named metrics, found {len(found)}"
    return found[0]


def secret_template() -> dict[str, Any]:
    return yaml.safe_load((K8S / "secret.example.yaml").read_text())


def pod_spec() -> dict[str, Any]:
    return k8s_one("StatefulSet")["spec"]["template"]["spec"]


def worker_container() -> dict[str, Any]:
    containers = pod_spec()["containers"]
    assert len(containers) == 1
    return containers[0]


def configmap_data() -> dict[str, Any]:
    return k8s_one("ConfigMap")["data"]


_COMMENTED_YAML_KEY = re.compile(r"^\s*#\s*(CITYSTREAM_[A-Z0-9_]+):\s*(.*?)\s*$")
_ENV_LINE = re.compile(r"^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*?)\s*$")


def configmap_commented() -> dict[str, str]:
    """The settings configmap.yaml shows commented out, with the value shown."""
    found = {}
    for line in (K8S / "configmap.yaml").read_text().splitlines():
        match = _COMMENTED_YAML_KEY.match(line)
        if match:
            found[match.group(1)] = yaml.safe_load(match.group(2)) if match.group(2) else ""
    return found


def env_example() -> dict[str, tuple[str, bool]]:
    """.env.example's variables: name -> (value, commented out)."""
    found = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        match = _ENV_LINE.match(line)
        if match:
            found[match.group(2)] = (match.group(3), bool(match.group(1)))
    return found


# --- the Dockerfile ------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages, each a list of (INSTRUCTION, arguments), comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args.strip()))
    return stages


def stage_name(stage: list[tuple[str, str]]) -> str | None:
    words = stage[0][1].split()
    return words[2] if len(words) >= 3 and words[1].upper() == "AS" else None


def instructions(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


def image_env() -> dict[str, str]:
    """The CITYSTREAM_* defaults the runtime image sets with ENV."""
    env: dict[str, str] = {}
    for args in instructions(dockerfile_stages()[-1], "ENV"):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            if sep and key.startswith(ENV_PREFIX):
                env[key] = value
    return env


def web_port() -> str:
    return worker_env().get(variable("web_port"), "6066")


# --- images --------------------------------------------------------------------------------------


def assert_pinned(image: str, where: str) -> None:
    assert "$" not in image, f"{where}: image {image!r} depends on a variable"
    if "@sha256:" in image:
        return
    last = image.rsplit("/", 1)[-1]
    _, sep, tag = last.partition(":")
    assert sep and tag, f"{where}: image {image!r} has no tag"
    assert tag != "latest", f"{where}: image {image!r} is not pinned"
    # an exact version (3.9.1, v3.4.1, 12.0.2), not a moving one such as 3, 3.9 or 2-alpine
    assert re.match(r"^v?\d+\.\d+\.\d+", tag), f"{where}: tag of {image!r} is not an exact version"


def test_assert_pinned_refuses_moving_tags() -> None:
    for image in ("grafana/grafana", "grafana/grafana:latest", "prom/prometheus:v3", "influxdb:2.7", "x:${TAG}"):
        with pytest.raises(AssertionError):
            assert_pinned(image, "test")
    for image in ("grafana/grafana:12.0.2", "prom/prometheus:v3.4.1", "python:3.11.13-slim-bookworm", "a@sha256:0f"):
        assert_pinned(image, "test")


def effective_k8s_images() -> list[str]:
    overrides = {entry["name"]: entry for entry in kustomization().get("images", [])}
    images = []
    for container in pod_spec()["containers"]:
        name, _, tag = container["image"].partition(":")
        override = overrides.get(name, {})
        name = override.get("newName", name)
        tag = str(override.get("newTag", tag))
        images.append(f"{name}:{tag}")
    return images


def test_every_compose_image_is_pinned() -> None:
    for name, service in services().items():
        assert "image" in service, f"compose service {name} has no image name"
        assert_pinned(service["image"], f"compose service {name}")
    assert {"kafka", "influxdb", "prometheus", "grafana", *WORKERS, "simulator"} <= set(services())


def test_every_k8s_image_is_pinned() -> None:
    for container in worker_container(), *pod_spec().get("initContainers", []):
        assert_pinned(container["image"], f"k8s container {container['name']}")
    for entry in kustomization().get("images", []):
        if "newTag" in entry:
            assert_pinned(f"{entry['name']}:{entry['newTag']}", "kustomization images")
    for image in effective_k8s_images():
        assert_pinned(image, "k8s after kustomize")


def test_dockerfile_base_images_are_pinned() -> None:
    stages = dockerfile_stages()
    names = {stage_name(s) for s in stages} - {None}
    for stage in stages:
        base = stage[0][1].split()[0]
        if base not in names:
            assert_pinned(base, f"Dockerfile stage {stage_name(stage)}")


def test_citystream_image_is_tagged_with_the_project_version() -> None:
    version = project_version()
    built = {name: s for name, s in services().items() if "build" in s}
    assert set(WORKERS) <= set(built), "the compose workers must build the citystream image"
    for name, service in built.items():
        assert service["image"] == f"citystream:{version}", name
    assert effective_k8s_images() == [f"citystream:{version}"]


# --- settings: the names ----------------------------------------------------------------------------


def test_the_spec_settings_are_read_by_the_worker() -> None:
    missing = SPEC_VARIABLES - MODEL_VARIABLES
    assert not missing, f"streams.settings.Settings lacks the spec's {sorted(missing)}"
    assert {variable("influx_token"), variable("kafka_sasl_password")} == SECRET_VARIABLES


def test_compose_sets_only_real_settings() -> None:
    for name, service in services().items():
        unknown = {k for k in service_env_names(service) if k.startswith(ENV_PREFIX)} - SETTING_VARIABLES
        assert not unknown, f"compose service {name} sets unknown settings {sorted(unknown)}"


def test_k8s_sets_only_real_settings() -> None:
    container = worker_container()
    names = set(configmap_data()) | set(configmap_commented()) | {e["name"] for e in container.get("env", [])}
    unknown = {n for n in names if n.startswith(ENV_PREFIX)} - SETTING_VARIABLES
    assert not unknown, f"k8s sets unknown settings {sorted(unknown)}"
    assert all(n.startswith(ENV_PREFIX) for n in configmap_data()), "stray ConfigMap keys"


def test_image_defaults_are_real_settings() -> None:
    env = image_env()
    assert env, "the runtime image sets no CITYSTREAM_* defaults"
    assert set(env) <= SETTING_VARIABLES, sorted(set(env) - SETTING_VARIABLES)


def test_env_example_lists_every_setting() -> None:
    example = env_example()
    missing = SETTING_VARIABLES - set(example)
    assert not missing, f".env.example does not mention {sorted(missing)}"
    stray = {k for k in example if k.startswith(ENV_PREFIX)} - SETTING_VARIABLES
    assert not stray, f".env.example names settings the worker does not read: {sorted(stray)}"
    # worker settings are shown commented out: the file works as it is once the secrets are filled in
    assert all(commented for k, (_, commented) in example.items() if k.startswith(ENV_PREFIX))


@pytest.mark.parametrize("worker", WORKERS)
def test_compose_workers_list_every_setting(worker: str) -> None:
    listed = service_env_names(services()[worker])
    missing = SETTING_VARIABLES - COMPOSE_NOT_OFFERED - listed
    assert not missing, f"{worker} neither sets nor passes through {sorted(missing)}"
    for name in SPEC_VARIABLES - COMPOSE_NOT_OFFERED:
        assert name in listed, name


def test_every_setting_is_in_the_configmap_or_the_secret() -> None:
    data, commented = configmap_data(), configmap_commented()
    for name in sorted(SETTING_VARIABLES - SECRET_VARIABLES):
        assert name in data or name in commented, f"configmap.yaml neither sets nor shows {name}"
    for name in SPEC_VARIABLES - SECRET_VARIABLES:
        assert name in data or name in commented, name
    # a secret comes only from the Secret, as a file: its *_FILE setting points into the Secret's mount
    mounts = secret_mounts()
    keys = secret_keys()
    for name in sorted(SECRET_VARIABLES):
        assert name not in data and name not in commented, f"{name} must never be in the ConfigMap"
        path = data.get(name + "_FILE") or commented.get(name + "_FILE")
        assert path, f"the ConfigMap shows no {name}_FILE"
        parent, key = str(PurePosixPath(path).parent), PurePosixPath(path).name
        assert parent in mounts, f"{name}_FILE={path} is not in a mounted Secret"
        assert key in keys, f"{name}_FILE names key {key}, which secret.example.yaml does not show"
    assert variable("influx_token_file") in data, "the InfluxDB token file must be set, not only shown"


def test_configmap_hides_secrets() -> None:
    text = (K8S / "configmap.yaml").read_text()
    for name in SECRET_VARIABLES:
        assert re.search(rf"\b{name}\s*:", text) is None, f"{name} appears as a key in configmap.yaml"
    leaked = [k for k in configmap_data() if re.search(r"TOKEN|PASSWORD|SECRET", k) and not k.endswith("_FILE")]
    assert not leaked, f"secrets in the ConfigMap: {leaked}"
    assert all(e.get("name") not in SECRET_VARIABLES or "valueFrom" in e for e in worker_container().get("env", []))


def test_configmap_values_are_strings() -> None:
    # a YAML number or boolean in a ConfigMap's data is rejected by the API server
    bad = {k: v for k, v in configmap_data().items() if not isinstance(v, str)}
    assert not bad, f"ConfigMap values must be quoted strings: {bad}"


# --- settings: the values ------------------------------------------------------------------------


def build_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name in SETTING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def field_of(name: str) -> str:
    return name.removeprefix(ENV_PREFIX).lower()


def test_env_example_shows_what_the_compose_workers_get(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uncommenting a worker setting of .env.example as it stands changes nothing."""
    base = worker_env()
    unchanged = build_settings(monkeypatch, base)
    shown = 0
    for name, (value, _) in env_example().items():
        if not name.startswith(ENV_PREFIX) or not value:
            continue  # unset by default (the SASL user, the files, the token)
        changed = build_settings(monkeypatch, base | {name: value})
        assert plain(getattr(changed, field_of(name))) == plain(getattr(unchanged, field_of(name))), (
            f".env.example shows {name}={value}, but the compose workers get "
            f"{plain(getattr(unchanged, field_of(name)))!r}"
        )
        shown += 1
    assert shown >= 25


def test_env_example_leaves_unset_what_the_worker_leaves_unset() -> None:
    for name, (value, _) in env_example().items():
        if name.startswith(ENV_PREFIX) and not value and name in MODEL_VARIABLES:
            assert Settings.model_fields[field_of(name)].default is None, f"{name}: shown empty, but has a default"


def test_configmap_comments_show_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = build_settings(monkeypatch, {})
    for name, value in configmap_commented().items():
        if Settings.model_fields[field_of(name)].default is None:
            continue  # an example of a setting that is unset by default (paths, the SASL user)
        shown = build_settings(monkeypatch, {name: str(value)})
        assert getattr(shown, field_of(name)) == getattr(defaults, field_of(name)), f"configmap.yaml: {name}"


@pytest.mark.parametrize("worker", WORKERS)
def test_compose_worker_has_a_complete_v2_configuration(worker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = worker_env(worker)
    missing = (V2_REQUIRED | {variable("influx_token"), variable("data_dir")}) - set(env)
    assert not missing, f"{worker} lacks {sorted(missing)}"
    settings = build_settings(monkeypatch, env)
    assert settings.influx_api == "v2"
    assert settings.influx_org and settings.influx_token
    assert settings.web_host == "0.0.0.0"
    assert str(settings.data_dir) == "/var/lib/citystream"
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.log_format == "text"


def test_compose_workers_share_their_settings() -> None:
    first, second = (services()[w].get("environment") for w in WORKERS)
    assert first == second


def test_k8s_worker_has_a_complete_v2_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The ConfigMap and the mounted Secret make a valid configuration (the Secret's files made here)."""
    env = image_env() | {k: str(v) for k, v in configmap_data().items()}
    env |= {e["name"]: "stand-in" for e in worker_container().get("env", [])}
    missing = V2_REQUIRED - set(env)
    assert not missing, f"the k8s worker lacks {sorted(missing)}"
    for mount in secret_mounts():
        for name, value in env.items():
            if value.startswith(mount + "/"):
                path = tmp_path / value.removeprefix(mount + "/")
                path.write_text("stand-in-token\n")
                env[name] = str(path)
    settings = build_settings(monkeypatch, env)
    assert settings.influx_api == "v2"
    assert settings.influx_token is not None
    assert settings.influx_token.get_secret_value() == "stand-in-token"
    assert settings.web_host == "0.0.0.0"
    assert settings.log_format == "json", "k8s logs one JSON object per line for the cluster's collector"


# --- compose -------------------------------------------------------------------------------------


@pytest.mark.parametrize("worker", WORKERS)
def test_compose_worker_waits_for_kafka_and_influxdb(worker: str) -> None:
    depends = services()[worker]["depends_on"]
    assert isinstance(depends, dict), "depends_on needs conditions, not a plain list"
    for dependency in ("kafka", "influxdb"):
        assert depends[dependency]["condition"] == "service_healthy", (worker, dependency)
        assert services()[dependency].get("healthcheck", {}).get("test"), dependency


@pytest.mark.parametrize("worker", WORKERS)
def test_compose_worker_health_is_its_readiness(worker: str) -> None:
    test = " ".join(services()[worker]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{web_port()}/readyz" in test


def test_compose_workers_have_their_own_volume_and_port() -> None:
    data_dir = worker_env()[variable("data_dir")]
    named_volumes = set(compose().get("volumes") or {})
    volumes, host_ports = [], []
    for worker in WORKERS:
        service = services()[worker]
        mounts = [v.split(":") for v in service["volumes"]]
        data = [source for source, target, *_ in mounts if target == data_dir]
        assert len(data) == 1, f"{worker} mounts no volume at {data_dir}"
        assert data[0] in named_volumes, f"{worker}: {data[0]} is not a named volume"
        volumes.append(data[0])
        published = [p.rsplit(":", 2) for p in service["ports"]]
        web = [host for *_, host, container in published if container == web_port()]
        assert len(web) == 1, f"{worker} does not publish its web port {web_port()}"
        host_ports.append(web[0])
    assert len(set(volumes)) == len(WORKERS), volumes
    assert len(set(host_ports)) == len(WORKERS), host_ports


def test_compose_publishes_only_on_loopback() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"


def kafka_env() -> dict[str, str]:
    return service_env(services()["kafka"])


def test_kafka_does_not_auto_create_topics() -> None:
    assert kafka_env()["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"


def test_kafka_runs_kraft_and_advertises_the_workers_bootstrap() -> None:
    env = kafka_env()
    assert "controller" in env["KAFKA_PROCESS_ROLES"].split(",")
    assert env["CLUSTER_ID"], "the apache/kafka image refuses KRaft without CLUSTER_ID"
    assert "zookeeper" not in " ".join(env).lower()
    advertised = {a.split("://", 1)[1] for a in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name, service in services().items():
        bootstrap = service_env(service).get(variable("kafka_bootstrap"))
        if bootstrap:
            servers = set(interpolate(bootstrap).split(","))
            assert servers <= advertised, f"{name}: {bootstrap} not advertised"


def test_kafka_accepts_a_contract_sized_message() -> None:
    # contract section 2: a value of up to 1 MiB, plus its key and the record batch's overhead
    assert int(kafka_env()["KAFKA_MESSAGE_MAX_BYTES"]) >= 1024 * 1024 + 64 * 1024


def test_influxdb_is_initialised_for_the_workers_and_grafana() -> None:
    influx = service_env(services()["influxdb"])
    grafana = service_env(services()["grafana"])
    assert influx["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for worker in WORKERS:
        env = service_env(services()[worker])
        # the same compose variables, so that they cannot drift apart
        assert env[variable("influx_org")] == influx["DOCKER_INFLUXDB_INIT_ORG"] == grafana["INFLUXDB_ORG"]
        assert env[variable("influx_db")] == influx["DOCKER_INFLUXDB_INIT_BUCKET"] == grafana["INFLUXDB_BUCKET"]
        assert env[variable("influx_token")] == influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == grafana["INFLUXDB_TOKEN"]
        assert env[variable("influx_url")] == grafana["INFLUXDB_URL"] == "http://influxdb:8086"
    assert interpolate(influx["DOCKER_INFLUXDB_INIT_ORG"]) == "daegu"
    assert interpolate(influx["DOCKER_INFLUXDB_INIT_BUCKET"]) == "city"
    assert influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"].startswith("${INFLUXDB_TOKEN:?")


def test_simulator_runs_against_the_compose_kafka() -> None:
    simulator = services()["simulator"]
    assert simulator["command"][0] == "simulate"
    assert simulator["depends_on"]["kafka"]["condition"] == "service_healthy"
    env = service_env(simulator)
    assert interpolate(env[variable("kafka_bootstrap")]) == "kafka:9092"
    # the simulator reaches the same Kafka as the workers, with the same security settings
    worker = services()[WORKERS[0]]["environment"]
    connection = re.compile(r"CITYSTREAM_KAFKA_(BOOTSTRAP|SECURITY_PROTOCOL|SASL_\w+|SSL_\w+)")
    kafka = {k: v for k, v in worker.items() if connection.fullmatch(k)}
    assert len(kafka) == 9
    assert kafka.items() <= simulator["environment"].items()


def test_env_example_defines_every_required_variable() -> None:
    example = {k: v for k, (v, commented) in env_example().items() if not commented}
    text = (DEPLOY / "docker-compose.yml").read_text()
    required = {m.group(1) for m in _INTERPOLATION.finditer(text) if m.group(2) in (":?", "?")}
    assert {"INFLUXDB_TOKEN", "INFLUXDB_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= required
    assert required <= set(example), sorted(required - set(example))
    assert "openssl rand" in (DEPLOY / ".env.example").read_text()
    ignored = [line.strip() for line in (DEPLOY / ".gitignore").read_text().splitlines()]
    assert ".env" in ignored, "deploy/.env (the real token) must be git-ignored"


_HEX_SECRET = re.compile(r"\b[0-9a-fA-F]{32,}\b")
_B64_SECRET = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2}")


def test_no_real_looking_secrets_in_deploy() -> None:
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for match in (*_HEX_SECRET.finditer(line), *_B64_SECRET.finditer(line)):
                word = match.group(0)
                if not (re.search(r"\d", word) and re.search(r"[A-Za-z]", word)):
                    continue  # an identifier such as KAFKA_TRANSACTION_STATE_LOG_...
                if "-" in word.strip("-") and word.lower() == word:
                    continue  # a hyphenated placeholder such as replace-with-...
                pytest.fail(f"{path.relative_to(ROOT)}:{lineno} looks like a secret: {word}")


# --- Prometheus ----------------------------------------------------------------------------------


def prometheus_config_path() -> Path:
    service = services()["prometheus"]
    flag = next(a for a in service["command"] if a.startswith("--config.file="))
    target = flag.split("=", 1)[1]
    sources = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == target]
    assert len(sources) == 1, f"nothing mounted at {target}"
    return (DEPLOY / sources[0]).resolve()


def test_prometheus_scrapes_both_workers_on_their_web_port() -> None:
    config = yaml.safe_load(prometheus_config_path().read_text())
    assert prometheus_config_path() == DEPLOY / "prometheus" / "prometheus.yml"
    jobs = config["scrape_configs"]
    targets = {t for job in jobs for static in job.get("static_configs", []) for t in static["targets"]}
    assert targets == {f"{worker}:{web_port()}" for worker in WORKERS}
    for job in jobs:
        assert job.get("metrics_path", "/metrics") == "/metrics"
    for worker in WORKERS:
        # the target's host name resolves on the compose network: the service name (or its hostname)
        assert services()[worker].get("hostname", worker) == worker
        assert worker_env(worker)[variable("web_host")] == "0.0.0.0", "Prometheus cannot reach a loopback bind"


def prometheus_rule_files() -> list[Path]:
    """The rule files prometheus.yml loads, as files of deploy/ (through the compose mounts)."""
    config = yaml.safe_load(prometheus_config_path().read_text())
    mounted = {v.split(":")[1]: (DEPLOY / v.split(":")[0]).resolve() for v in services()["prometheus"]["volumes"]}
    files = []
    for path in config.get("rule_files", []):
        assert path in mounted, f"prometheus.yml loads {path}, which compose does not mount"
        files.append(mounted[path])
    return files


# `up` is the series Prometheus itself records for every target
PROMETHEUS_OWN: dict[str, tuple[str, frozenset[str]]] = {"up": ("gauge", frozenset())}


def test_prometheus_alert_rules_name_exported_metrics() -> None:
    files = prometheus_rule_files()
    assert files == [DEPLOY / "prometheus" / "alerts.yml"]
    jobs = {job["job_name"] for job in yaml.safe_load(prometheus_config_path().read_text())["scrape_configs"]}
    metrics = exported_metrics() | PROMETHEUS_OWN
    used: set[str] = set()
    for group in yaml.safe_load(files[0].read_text())["groups"]:
        for rule in group["rules"]:
            where = f"alerts.yml: {rule['alert']}"
            annotations = " ".join(rule.get("annotations", {}).values())
            legend = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", r"{{\1}}", annotations)
            used |= check_promql(where, rule["expr"], legend, metrics)
            for job in re.findall(r'job\s*=\s*"([^"]+)"', rule["expr"]):
                assert job in jobs, f"{where}: no scrape job {job}"
            assert rule["labels"]["severity"] in ("info", "warning", "critical"), where
    for needed in (
        "citystream_ready",
        "citystream_consumer_lag",
        "citystream_fetch_lag",
        "citystream_influx_write_failing",
        "citystream_influx_points_rejected_total",
        "up",
    ):
        assert needed in used, f"no alert rule on {needed}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_config_the_rules_and_every_dashboard_expression(tmp_path: Path) -> None:
    config = yaml.safe_load(prometheus_config_path().read_text())
    config["rule_files"] = [str(path) for path in prometheus_rule_files()]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    rules: list[dict[str, Any]] = []
    for name, board in dashboards().items():
        for where, expr, _ in queries(name, board).promql:
            if expr.lstrip().startswith("label_values("):
                continue  # a Grafana variable query, not PromQL
            expr = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
            rules.append({"record": f"dashboard:check:{len(rules)}", "expr": expr, "labels": {"where": where}})
    assert len(rules) >= 15
    (tmp_path / "dashboards.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    for command in (
        ["check", "config", str(tmp_path / "prometheus.yml")],
        ["check", "rules", str(tmp_path / "dashboards.yml")],
    ):
        result = subprocess.run(["promtool", *command], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana -------------------------------------------------------------------------------------


def grafana_mounts() -> dict[str, Path]:
    """Container path -> the deploy/ directory or file mounted there."""
    mounts = {}
    for volume in services()["grafana"]["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


def provisioning(kind: str) -> list[dict[str, Any]]:
    folder = grafana_mounts()["/etc/grafana/provisioning"] / kind
    files = sorted(folder.glob("*.y*ml"))
    assert files, f"no provisioning file in {folder}"
    return [yaml.safe_load(f.read_text()) for f in files]


def datasources() -> dict[str, dict[str, Any]]:
    return {ds["uid"]: ds for doc in provisioning("datasources") for ds in doc["datasources"]}


INFLUX_UID = "citystream-influxdb"
PROMETHEUS_UID = "citystream-prometheus"


def test_grafana_is_provisioned_from_deploy() -> None:
    mounts = grafana_mounts()
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    assert services()["grafana"]["ports"] == ["127.0.0.1:3000:3000"]
    env = service_env(services()["grafana"])
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    folder, name = str(PurePosixPath(home).parent), PurePosixPath(home).name
    assert (mounts[folder] / name).is_file(), f"the home dashboard {home} is not provisioned"


def test_grafana_datasources_read_the_workers_influxdb_and_prometheus() -> None:
    env = service_env(services()["grafana"])
    text = "\n".join(f.read_text() for f in (GRAFANA / "provisioning" / "datasources").glob("*.y*ml"))
    undefined = {m.group(1) for m in _INTERPOLATION.finditer(text)} - set(env)
    assert not undefined, f"datasources.yml reads {sorted(undefined)}, which the grafana service does not set"
    sources = datasources()
    influx, prometheus = sources[INFLUX_UID], sources[PROMETHEUS_UID]
    assert influx["type"] == "influxdb"
    assert influx["jsonData"]["version"] == "Flux"
    assert influx["url"] == "${INFLUXDB_URL}"
    assert influx["jsonData"]["organization"] == "${INFLUXDB_ORG}"
    assert influx["jsonData"]["defaultBucket"] == "${INFLUXDB_BUCKET}"
    assert influx["secureJsonData"]["token"] == "${INFLUXDB_TOKEN}"
    assert "token" not in influx.get("jsonData", {}), "the token belongs in secureJsonData"
    assert prometheus["type"] == "prometheus"
    assert interpolate(env[prometheus["url"].strip("${}")]) == "http://prometheus:9090"
    assert "9090:9090" in services()["prometheus"]["ports"][0]
    assert sum(1 for ds in sources.values() if ds.get("isDefault")) == 1


def test_dashboard_provider_loads_the_dashboards_directory() -> None:
    (provider,) = (p for doc in provisioning("dashboards") for p in doc["providers"])
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert grafana_mounts()[path] == DASHBOARDS
    present = sorted(p.name for p in DASHBOARDS.glob("*.json"))
    assert present == sorted(DASHBOARD_FILES)


# --- Grafana dashboards: what InfluxDB holds (contract section 5) -------------------------------------


@dataclass(frozen=True)
class Measurement:
    tags: frozenset[str]
    fields: frozenset[str]


def _stats(quantities: tuple[str, ...]) -> set[str]:
    return {f"{q}_{stat}" for q in quantities for stat in ("mean", "min", "max")}


_ENV_WINDOW = {"readings"} | _stats(ENV_MEASUREMENTS)
LAYOUT: dict[str, Measurement] = {
    "taxi_adas": Measurement(
        frozenset({"device_id", "event", "cell"}),
        frozenset({"lat", "lon", "speed_kmh", "heading_deg", "headway_s", "ttc_s"}),
    ),
    "parking": Measurement(
        frozenset({"lot_id", "spot_id"}), frozenset({"occupied", "battery_v", "rssi_dbm", "snr_db"})
    ),
    "environment": Measurement(frozenset({"device_id", "district"}), frozenset(ENV_MEASUREMENTS)),
    "taxi_adas_1m": Measurement(
        frozenset({"cell"}),
        frozenset({"readings", "taxis", "speed_mean", "speed_min", "speed_max", *TAXI_COUNTERS}),
    ),
    "parking_1m": Measurement(
        frozenset({"lot_id"}), frozenset({"occupied", "known_spots", "capacity", "occupancy", "changes"})
    ),
    "environment_1m": Measurement(frozenset({"device_id", "district"}), frozenset(_ENV_WINDOW)),
    "environment_1h": Measurement(
        frozenset({"device_id", "district"}), frozenset(_ENV_WINDOW | {"cai", "cai_grade", "cai_pollutant"})
    ),
    ALERTS_MEASUREMENT: Measurement(
        frozenset({"kind", "status", "severity", "subject_type", "subject_id"}),
        frozenset({"value", "threshold", "message", "alert_id"}),
    ),
}
FLUX_COLUMNS = frozenset({"_time", "_value", "_field", "_measurement", "_start", "_stop"})


def test_layout_matches_the_points_the_worker_writes() -> None:
    """The layout above against real line protocol of the worker's own code."""
    from schemas.alert import Alert
    from streams.rules.points import alert_line

    alert = Alert.model_validate(
        {
            "alert_id": "air.pm25_advisory:env-1:2026-11-21T09:00:00Z",
            "kind": "air.pm25_advisory",
            "status": "raised",
            "severity": "warning",
            "subject": {"type": "station", "id": "env-1"},
            "window_start": "2026-11-21T09:00:00Z",
            "window_end": "2026-11-21T10:00:00Z",
            "value": 81.4,
            "threshold": 75.0,
            "message": "PM2.5",
            "emitted_at": "2026-11-21T10:00:31.004Z",
        }
    )
    measurement, tags, fields = parse_line(alert_line(alert))
    assert measurement == ALERTS_MEASUREMENT
    assert tags == LAYOUT[measurement].tags
    assert fields == LAYOUT[measurement].fields
    assert tuple(TAXI_COUNTERS) == ("fcw", "ufcw", "pcw", "ldw", "hmw", "overspeed", "pothole", "obstacle")
    assert "pm25_ugm3" in ENV_MEASUREMENTS and "pm10_ugm3" in ENV_MEASUREMENTS


def parse_line(line: str) -> tuple[str, frozenset[str], frozenset[str]]:
    """Measurement, tag keys and field keys of one line of line protocol (no escaped separators)."""
    head, rest = re.split(r"(?<!\\) ", line, maxsplit=1)
    measurement, *tags = head.split(",")
    body = rest.rsplit(" ", 1)[0]
    keys = re.findall(r'(?:^|,)([A-Za-z_][A-Za-z0-9_]*)=(?:"(?:[^"\\]|\\.)*"|[^,]*)', body)
    return measurement, frozenset(t.split("=")[0] for t in tags), frozenset(keys)


def dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads((DASHBOARDS / name).read_text()) for name in DASHBOARD_FILES}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


@dataclass
class Queries:
    flux: list[tuple[str, str]] = field(default_factory=list)
    promql: list[tuple[str, str, str]] = field(default_factory=list)  # where, expr, legend


def queries(name: str, board: dict[str, Any]) -> Queries:
    found = Queries()
    for panel in panels(board):
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
            where = f"{name}: panel {panel['id']} {panel['title']!r} target {target.get('refId')}"
            if uid == INFLUX_UID:
                found.flux.append((where, target["query"]))
            elif uid == PROMETHEUS_UID:
                found.promql.append((where, target["expr"], target.get("legendFormat", "")))
            else:
                pytest.fail(f"{where}: datasource {uid!r} is not provisioned")
    for var in board.get("templating", {}).get("list", []):
        uid = (var.get("datasource") or {}).get("uid")
        query = var["query"]["query"] if isinstance(var.get("query"), dict) else var.get("query")
        where = f"{name}: variable {var['name']}"
        if uid == INFLUX_UID:
            found.flux.append((where, query))
        elif uid == PROMETHEUS_UID:
            found.promql.append((where, query, ""))
    return found


_STRINGS = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _string_list(text: str) -> list[str]:
    return _STRINGS.findall(text)


def check_flux(where: str, query: str) -> None:
    """The measurements, fields, tags and columns a Flux query names are ones the worker writes."""
    measurements = set(re.findall(r'r\._measurement\s*==\s*"([^"]+)"', query))
    assert measurements, f"{where}: the query names no measurement"
    unknown = measurements - set(LAYOUT)
    assert not unknown, f"{where}: no measurement {sorted(unknown)} in InfluxDB (contract section 5)"
    tags = frozenset().union(*(LAYOUT[m].tags for m in measurements))
    fields = frozenset().union(*(LAYOUT[m].fields for m in measurements))

    named = set(re.findall(r'r\._field\s*==\s*"([^"]+)"', query))
    for listed in re.findall(r"contains\(\s*value:\s*r\._field,\s*set:\s*\[([^\]]*)\]", query):
        named.update(_string_list(listed))
    assert not named - fields, f"{where}: {sorted(measurements)} has no field {sorted(named - fields)}"

    created = set()
    for body in re.findall(r"\{\s*r\s+with\s+([^}]*)\}", query):
        created.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*:", body))
    for body in re.findall(r"rename\(\s*columns:\s*\{([^}]*)\}", query):
        created.update(_string_list(body))
    columns = tags | fields | FLUX_COLUMNS | created

    referenced = set(re.findall(r"\br\.([A-Za-z_][A-Za-z0-9_]*)", query))
    for listed in re.findall(r"\b(?:columns|rowKey|columnKey|on):\s*\[([^\]]*)\]", query):
        referenced.update(_string_list(listed))
    referenced.update(re.findall(r'\btag:\s*"([^"]+)"', query))
    assert not referenced - columns, (
        f"{where}: {sorted(measurements)} has no tag or column {sorted(referenced - columns)}"
    )

    kinds = set(re.findall(r'r\.kind\s*==\s*"([^"]+)"', query))
    assert not kinds - set(ALERT_KINDS), f"{where}: no alert kind {sorted(kinds - set(ALERT_KINDS))}"
    for pattern in re.findall(r"r\.kind\s*=~\s*/((?:[^/\\]|\\.)*)/", query):
        assert any(re.search(pattern, kind) for kind in ALERT_KINDS), f"{where}: /{pattern}/ matches no alert kind"
    assert "v.defaultBucket" in query or "bucket:" not in query, f"{where}: name the bucket as v.defaultBucket"


def test_check_flux_catches_names_the_worker_does_not_write() -> None:
    good = (
        'from(bucket: v.defaultBucket) |> filter(fn: (r) => r._measurement == "parking_1m" and r._field == "occupancy")'
    )
    check_flux("good", good)
    for bad in (
        good.replace("parking_1m", "parking_5m"),
        good.replace('"occupancy"', '"occupancy_pct"'),
        good + ' |> filter(fn: (r) => r.cell == "x")',
        good + ' |> group(columns: ["district"])',
        good.replace("parking_1m", "alerts").replace('r._field == "occupancy"', 'r.kind == "air.pm1_advisory"'),
        "from(bucket: v.defaultBucket) |> range(start: -1h)",
    ):
        with pytest.raises(AssertionError):
            check_flux("bad", bad)


# --- Grafana dashboards: the metrics the workers export ----------------------------------------------


# The operations spec's metrics: name -> (type, labels)
SPEC_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "citystream_messages_total": ("counter", frozenset({"topic"})),
    "citystream_readings_valid_total": ("counter", frozenset({"kind"})),
    "citystream_dead_letters_total": ("counter", frozenset({"reason"})),
    "citystream_duplicates_total": ("counter", frozenset({"kind"})),
    "citystream_late_readings_total": ("counter", frozenset({"kind"})),
    "citystream_points_written_total": ("counter", frozenset()),
    "citystream_influx_write_seconds": ("histogram", frozenset()),
    "citystream_influx_write_retries_total": ("counter", frozenset()),
    "citystream_influx_pending_points": ("gauge", frozenset()),
    "citystream_influx_points_rejected_total": ("counter", frozenset({"reason"})),
    "citystream_influx_write_failing": ("gauge", frozenset()),
    "citystream_consumer_lag": ("gauge", frozenset({"topic", "partition"})),
    "citystream_fetch_lag": ("gauge", frozenset({"topic", "partition"})),
    "citystream_watermark_delay_seconds": ("gauge", frozenset({"topic", "partition"})),
    "citystream_open_windows": ("gauge", frozenset({"topic"})),
    "citystream_snapshot_bytes": ("gauge", frozenset({"topic"})),
    "citystream_alerts_total": ("counter", frozenset({"kind", "status"})),
    "citystream_assigned_partitions": ("gauge", frozenset()),
    "citystream_ready": ("gauge", frozenset()),
    "citystream_checkpoints_total": ("counter", frozenset()),
    "citystream_checkpoint_seconds": ("gauge", frozenset()),
    "citystream_checkpoint_snapshot_seconds": ("gauge", frozenset()),
}
# labels Prometheus adds to every scraped series
TARGET_LABELS = frozenset({"instance", "job"})


def exported_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """The series names the worker exports, with their labels: from streams.runtime.metrics when it is there (a
    collector over empty sources, as at a worker's start), else the spec's list."""
    try:
        from streams.core.ingest import IngestStats
        from streams.runtime import metrics
    except ImportError:
        return SPEC_METRICS
    registry = metrics.worker_registry(metrics.MetricSources(ingest=IngestStats(), sinks=[], dropped={}))
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = frozenset(label for sample in family.samples for label in sample.labels) - {"le"}
        # a labelled gauge has no series before partitions are assigned: take its labels from the spec
        labels |= SPEC_METRICS.get(name, ("", frozenset()))[1]
        found[name] = (family.type, labels)
    return found


def test_the_worker_exports_the_spec_metrics() -> None:
    exported = exported_metrics()
    assert {name: kind for name, (kind, _) in exported.items()} == {
        name: kind for name, (kind, _) in SPEC_METRICS.items()
    }
    for name, (_, labels) in SPEC_METRICS.items():
        assert labels <= exported[name][1], name


_PROMQL_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    }
)


def series_of(metrics: dict[str, tuple[str, frozenset[str]]]) -> dict[str, tuple[str, frozenset[str]]]:
    """Series name -> (metric, labels): a histogram's _bucket (with le), _sum and _count."""
    series = {}
    for name, (kind, labels) in metrics.items():
        if kind == "histogram":
            series[name + "_bucket"] = (name, labels | {"le"})
            series[name + "_sum"] = (name, labels)
            series[name + "_count"] = (name, labels)
        else:
            series[name] = (name, labels)
    return series


def check_promql(where: str, expr: str, legend: str, metrics: dict[str, tuple[str, frozenset[str]]]) -> set[str]:
    """The metrics and labels a PromQL expression names exist; returns the metrics it uses."""
    series = series_of(metrics)
    variable_query = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)\s*", expr)
    if variable_query:
        name, label = variable_query.groups()
        assert name in series, f"{where}: no metric {name}"
        assert label in series[name][1] | TARGET_LABELS, f"{where}: {name} has no label {label}"
        return {series[name][0]}
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    matchers = re.findall(r"\{([^}]*)\}", text)
    grouping = re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\s*(\()?", text):
        token, call = match.groups()
        if call or token.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(token)
    assert names, f"{where}: {expr!r} names no metric"
    unknown = names - set(series)
    assert not unknown, f"{where}: the workers export no {sorted(unknown)}"
    labels = frozenset().union(*(series[n][1] for n in names)) | TARGET_LABELS
    used = {label.strip() for group in grouping for label in group.split(",") if label.strip()}
    used |= {m.group(1) for matcher in matchers for m in re.finditer(r"(\w+)\s*(?:=~|!~|!=|=)", matcher)}
    assert used <= labels, f"{where}: {sorted(names)} have no label {sorted(used - labels)}"
    shown = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    assert shown <= used | (labels if not grouping else set()), f"{where}: legend shows {sorted(shown - used)}"
    return {series[n][0] for n in names}


def test_check_promql_catches_unknown_metrics_and_labels() -> None:
    expr = 'sum by (topic) (rate(citystream_messages_total{instance=~"$instance"}[$__rate_interval]))'
    assert check_promql("good", expr, "{{topic}}", SPEC_METRICS) == {"citystream_messages_total"}
    quantile = "histogram_quantile(0.99, sum by (le) (rate(citystream_influx_write_seconds_bucket[5m])))"
    assert check_promql("good", quantile, "p99", SPEC_METRICS) == {"citystream_influx_write_seconds"}
    for bad, legend in (
        (expr.replace("messages_total", "message_total"), ""),
        (expr.replace("by (topic)", "by (reason)"), ""),
        (expr, "{{kind}}"),
        ("sum(rate(up[5m]))", ""),
        ("citystream_ready_bucket", ""),
        ('citystream_ready{kind="x"}', ""),
        ("sum(rate(http_requests_total[5m]))", ""),
    ):
        with pytest.raises(AssertionError):
            check_promql("bad", bad, legend, SPEC_METRICS)


# --- Grafana dashboards: the files -----------------------------------------------------------------


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_parses_with_unique_panel_ids(name: str) -> None:
    board = json.loads((DASHBOARDS / name).read_text())
    ids = [panel["id"] for panel in panels(board)]
    assert ids and len(ids) == len(set(ids)), f"{name}: panel ids repeat: {ids}"
    assert board["uid"] and len(board["uid"]) <= 40
    assert board["title"].startswith("citystream")
    for panel in panels(board):
        assert panel.get("title"), f"{name}: panel {panel['id']} has no title"
        if panel["type"] != "row":
            assert panel.get("targets"), f"{name}: panel {panel['title']!r} queries nothing"
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{name}: panel {panel['title']!r} is wider than the grid"
        for ds in (panel.get("datasource"), *(t.get("datasource") for t in panel.get("targets", []))):
            if ds:
                assert ds["uid"] in datasources(), f"{name}: panel {panel['title']!r} uses {ds['uid']}"


def test_dashboard_uids_are_unique() -> None:
    uids = [board["uid"] for board in dashboards().values()]
    assert len(uids) == len(set(uids)), uids


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_queries_name_what_the_worker_writes(name: str) -> None:
    found = queries(name, dashboards()[name])
    metrics = exported_metrics()
    for where, query in found.flux:
        check_flux(where, query)
    for where, expr, legend in found.promql:
        check_promql(where, expr, legend, metrics)
    assert found.flux or found.promql


def test_air_quality_dashboard_shows_pm_and_cai_with_its_bands() -> None:
    found = queries("air-quality.json", dashboards()["air-quality.json"]).flux
    text = "\n".join(q for _, q in found)
    for measurement, field_name in (
        ("environment_1m", "pm25_ugm3_mean"),
        ("environment_1m", "pm10_ugm3_mean"),
        ("environment_1h", "cai"),
        ("alerts", "message"),
    ):
        assert any(f'"{measurement}"' in q and f'"{field_name}"' in q for _, q in found), (measurement, field_name)
    assert "device_id" in text, "per station"
    # every panel that draws the CAI colours it by the CAI bands (streams.core.cai.INDEX_BANDS)
    bands = [None, *(low for low, _ in INDEX_BANDS[1:])]
    cai_panels = 0
    for panel in panels(dashboards()["air-quality.json"]):
        queries_cai = any('r._field == "cai"' in t.get("query", "") for t in panel.get("targets", []))
        steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps")
        overrides = panel.get("fieldConfig", {}).get("overrides", [])
        for override in overrides:
            if override["matcher"].get("options") == "cai":
                steps = next(p["value"]["steps"] for p in override["properties"] if p["id"] == "thresholds")
                queries_cai = True
        if queries_cai:
            cai_panels += 1
            assert steps, f"panel {panel['title']!r} draws the CAI without its bands"
            assert [s["value"] for s in steps] == bands, f"panel {panel['title']!r}: {steps}"
            assert len({s["color"] for s in steps}) == len(GRADES)
    assert cai_panels >= 2
    graded = json.dumps(dashboards()["air-quality.json"])
    for grade in GRADES:
        assert f'"{grade}"' in graded, f"no colour for the CAI grade {grade}"


def test_parking_and_adas_dashboards_show_their_aggregates() -> None:
    parking = "\n".join(q for _, q in queries("parking.json", dashboards()["parking.json"]).flux)
    assert '"parking_1m"' in parking and '"occupancy"' in parking and "lot_id" in parking
    adas_board = dashboards()["adas.json"]
    adas = queries("adas.json", adas_board).flux
    assert any('"taxi_adas_1m"' in q and '"cell"' in q for _, q in adas), "no warnings per cell"
    (geomap,) = (p for p in panels(adas_board) if p["type"] == "geomap")
    (layer,) = geomap["options"]["layers"]
    location = layer["location"]
    assert location["mode"] == "coords"
    geo_query = geomap["targets"][0]["query"]
    for coordinate in (location["latitude"], location["longitude"]):
        # the coordinates are fields of the measurement the map reads
        assert coordinate in LAYOUT["taxi_adas"].fields and f'"{coordinate}"' in geo_query


def test_pipeline_dashboard_covers_every_spec_metric() -> None:
    metrics = exported_metrics()
    used: set[str] = set()
    for where, expr, legend in queries("pipeline.json", dashboards()["pipeline.json"]).promql:
        used |= check_promql(where, expr, legend, metrics)
    assert set(SPEC_METRICS) <= used, f"pipeline.json does not show {sorted(set(SPEC_METRICS) - used)}"
    exprs = [e for _, e, _ in queries("pipeline.json", dashboards()["pipeline.json"]).promql]
    assert any(e.startswith("histogram_quantile(0.99,") and "_bucket" in e for e in exprs), "no p99 write latency"
    assert any("by (reason)" in e and "citystream_dead_letters_total" in e for e in exprs)
    assert any("by (topic, partition)" in e and "citystream_consumer_lag" in e for e in exprs)


# --- Kubernetes ----------------------------------------------------------------------------------


def test_kustomization_lists_files_that_exist() -> None:
    resources = kustomization()["resources"]
    assert resources
    for name in resources:
        assert (K8S / name).is_file(), f"kustomization.yaml lists missing {name}"
    kinds = {d["kind"] for d in k8s_resources()}
    assert {"ConfigMap", "StatefulSet", "Service", "PodDisruptionBudget"} <= kinds


def secret_mounts() -> dict[str, str]:
    """Mount path -> Secret name, for the worker's Secret volumes."""
    volumes = {v["name"]: v["secret"]["secretName"] for v in pod_spec().get("volumes", []) if "secret" in v}
    return {m["mountPath"]: volumes[m["name"]] for m in worker_container()["volumeMounts"] if m["name"] in volumes}


def secret_keys() -> set[str]:
    """The keys secret.example.yaml shows, commented-out ones included."""
    template = secret_template()
    keys = set((template.get("stringData") or template.get("data") or {}).keys())
    text = (K8S / "secret.example.yaml").read_text()
    keys |= set(re.findall(r"^\s*#\s*([a-z0-9.-]+):\s*\"", text, re.MULTILINE))
    keys |= set(re.findall(r"--from-(?:literal|file)=([a-z0-9.-]+)=", text))
    return keys


def test_k8s_secrets_come_as_files_of_the_secret() -> None:
    template = secret_template()
    assert template["kind"] == "Secret"
    mounts = secret_mounts()
    assert set(mounts.values()) == {template["metadata"]["name"]}
    (volume,) = (v for v in pod_spec()["volumes"] if "secret" in v)
    mode = volume["secret"].get("defaultMode", 0o644)
    assert mode & 0o007 == 0, f"the Secret's files are world-readable (mode {mode:o})"
    assert pod_spec()["securityContext"]["fsGroup"] == pod_spec()["securityContext"]["runAsGroup"]
    assert all(m.get("readOnly") for m in worker_container()["volumeMounts"] if m["mountPath"] in mounts)
    values = template.get("stringData") or template.get("data") or {}
    token_key = PurePosixPath(configmap_data()[variable("influx_token_file")]).name
    assert values[token_key] == "REPLACE_ME"
    assert "kafka-sasl-password" in secret_keys()
    # applying the base must never overwrite the real Secret with the placeholder
    assert all(d["kind"] != "Secret" for d in k8s_resources())
    assert "secret.example.yaml" not in kustomization()["resources"]
    assert not any(variable("influx_token") == e["name"] for e in worker_container().get("env", []))


def container_port(port: int | str) -> int:
    named = {p["name"]: p["containerPort"] for p in worker_container()["ports"]}
    return named[port] if isinstance(port, str) else port


def test_probes_ask_the_worker_on_its_web_port() -> None:
    container = worker_container()
    port = int(configmap_data()[variable("web_port")])
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    for kind, probe in probes.items():
        assert container_port(probe["port"]) == port, f"{kind} asks port {probe['port']}, not {port}"
    # the startup probe outlasts the worker's own wait for Kafka and InfluxDB
    startup = container["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget > Settings.model_fields["startup_timeout_s"].default


def test_pdb_and_services_select_the_statefulset_pods() -> None:
    sts = k8s_one("StatefulSet")
    selector = sts["spec"]["selector"]["matchLabels"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    pdb = k8s_one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["maxUnavailable"] == 1
    headless = headless_service()
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == selector
    assert sts["spec"]["replicas"] == 2
    assert metrics_service()["spec"]["selector"].items() <= pod_labels.items()


def test_metrics_service_is_annotated_for_prometheus() -> None:
    service = metrics_service()
    assert service["metadata"]["name"] != headless_service()["metadata"]["name"]
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    (port,) = (p for p in service["spec"]["ports"] if p["name"] == "metrics")
    web = int(configmap_data()[variable("web_port")])
    assert container_port(port["targetPort"]) == web
    assert int(annotations["prometheus.io/port"]) == web


def test_statefulset_runs_the_worker_safely() -> None:
    sts = k8s_one("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    container = worker_container()
    assert container.get("command") in (None, ["citystream"])
    assert container["args"] == ["worker"]
    assert container["envFrom"][0]["configMapRef"]["name"] == k8s_one("ConfigMap")["metadata"]["name"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False

    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind

    web = int(configmap_data().get(variable("web_port"), 6066))
    assert web in {p["containerPort"] for p in container["ports"]}
    assert any(container_port(p["targetPort"]) == web for p in headless_service()["spec"]["ports"])


def test_statefulset_keeps_state_on_a_volume_per_pod() -> None:
    sts = k8s_one("StatefulSet")
    data_dir = (image_env() | configmap_data())[variable("data_dir")]
    mounts = {m["mountPath"]: m["name"] for m in worker_container()["volumeMounts"]}
    assert data_dir in mounts, f"nothing mounted at {data_dir}"
    claims = {c["metadata"]["name"]: c for c in sts["spec"]["volumeClaimTemplates"]}
    assert mounts[data_dir] in claims, "the data dir is not on the pod's PersistentVolumeClaim"
    claim = claims[mounts[data_dir]]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert claim["resources"]["requests"]["storage"]


# --- the image -----------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_with_pinned_bases() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builder, runtime = stages[0], stages[-1]
    assert any("wheel" in args for args in instructions(builder, "RUN")), "no wheel is built"
    # the Python the project targets, on the Debian release CI runs on
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", runtime[0][1].split()[0])
    assert builder[0][1].split()[0] == runtime[0][1].split()[0], "build and run on the same Python"
    assert any(f"--from={stage_name(builder)}" in a for a in instructions(runtime, "COPY"))


def test_dockerfile_runtime_runs_citystream_as_a_non_root_user() -> None:
    runtime = dockerfile_stages()[-1]
    users = instructions(runtime, "USER")
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user
    assert json.loads(instructions(runtime, "ENTRYPOINT")[-1]) == ["citystream"]
    assert json.loads(instructions(runtime, "CMD")[-1]) == ["worker"]
    exposed = " ".join(instructions(runtime, "EXPOSE")).split()
    assert image_env().get(variable("web_port"), "6066") in exposed


def test_dockerfile_healthcheck_asks_healthz() -> None:
    (check,) = instructions(dockerfile_stages()[-1], "HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3 :].strip())
    assert "/healthz" in " ".join(command)
    assert variable("web_port") in " ".join(command)


def test_dockerfile_declares_the_data_dir_as_a_volume() -> None:
    runtime = dockerfile_stages()[-1]
    data_dir = image_env()[variable("data_dir")]
    assert data_dir == "/var/lib/citystream"
    volumes = [v for args in instructions(runtime, "VOLUME") for v in json.loads(args)]
    assert data_dir in volumes
    run = " ".join(instructions(runtime, "RUN"))
    assert re.search(rf"chown \S+ {re.escape(data_dir)}", run), "the data dir is not chowned"
    # the chown must come before VOLUME, or a new volume starts out owned by root
    keywords = [kw for kw, _ in runtime]
    assert keywords.index("RUN") < keywords.index("VOLUME")


def test_dockerfile_copies_every_package_of_the_wheel() -> None:
    copies = " ".join(instructions(dockerfile_stages()[0], "COPY")).split()
    assert "pyproject.toml" in copies
    for package in project_packages():
        assert package in copies, f"the builder does not COPY package {package}"


def test_build_context_keeps_secrets_and_git_out() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "**/.env" in ignore
    assert "**/.git" in ignore


# --- the real tools, when installed --------------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_renders_the_base() -> None:
    result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "PodDisruptionBudget", "Service", "Service", "StatefulSet"]
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "citystream"
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    assert [c["image"] for c in sts["spec"]["template"]["spec"]["containers"]] == [f"citystream:{project_version()}"]
    (volume,) = (v for v in sts["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    assert volume["secret"]["defaultMode"] == 0o440


def compose_command() -> list[str] | None:
    """`docker compose` (v2) when installed, else Debian's `docker-compose` (v1), else None."""
    if shutil.which("docker"):
        try:
            probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            probe = None
        if probe is not None and probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.skipif(compose_command() is None, reason="neither docker compose nor docker-compose is installed")
def test_docker_compose_config_is_valid(tmp_path: Path) -> None:
    command = compose_command()
    assert command is not None
    env_file = tmp_path / "compose.env"
    env_file.write_text(
        "INFLUXDB_TOKEN=stand-in-token\nINFLUXDB_ADMIN_PASSWORD=stand-in-pass\nGRAFANA_ADMIN_PASSWORD=stand-in-pass\n"
        "CITYSTREAM_LOG_LEVEL=debug\nCITYSTREAM_WINDOW_GRACE_S=45\n"
    )
    compose_file = DEPLOY / "docker-compose.yml"
    if command == ["docker-compose"]:
        # compose v1 (1.29) checks the same services, but does not know the top-level `name`
        text = re.sub(r"(?m)^name:.*$", "", compose_file.read_text())
        compose_file = tmp_path / "docker-compose.yml"
        compose_file.write_text(text)
    result = subprocess.run(
        [*command, "--env-file", str(env_file), "--project-directory", str(DEPLOY), "-f", str(compose_file), "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    worker = rendered["services"][WORKERS[0]]["environment"]
    assert worker[variable("influx_token")] == "stand-in-token"
    assert worker[variable("log_level")] == "debug", "a setting of the env file does not reach the workers"
    assert str(worker[variable("window_grace_s")]) == "45", "a setting listed without a value is not passed through"
    assert worker.get(variable("kafka_sasl_username")) is None, "an unset setting must stay unset"
    grafana = rendered["services"]["grafana"]["environment"]
    assert grafana["INFLUXDB_TOKEN"] == "stand-in-token"


def test_docker_compose_without_the_secrets_is_refused(tmp_path: Path) -> None:
    """Each secret compose needs is required with ${VAR:?...}, so a missing one stops `up` with its name."""
    text = (DEPLOY / "docker-compose.yml").read_text()
    for name in ("INFLUXDB_TOKEN", "INFLUXDB_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        uses = re.findall(rf"\$\{{{name}(:?[-?]?)[^}}]*\}}", text)
        assert uses and all(op == ":?" for op in uses), f"{name}: {uses}"
