"""Offline checks of deploy/: the Dockerfile, docker-compose.yml and the kustomize base.

Nothing here needs Docker or a cluster: the files are parsed with PyYAML and compared with the
settings the worker really has (streams.settings.Settings). `kubectl kustomize` and
`docker compose config` are run only when those tools are installed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
WORKERS = ("worker-1", "worker-2")

SETTING_VARIABLES = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
# what a worker writing to InfluxDB 2.x cannot do without (the data dir may come from the image)
V2_REQUIRED = {
    ENV_PREFIX + name
    for name in (
        "KAFKA_BOOTSTRAP",
        "INFLUX_URL",
        "INFLUX_API",
        "INFLUX_DB",
        "INFLUX_ORG",
        "INFLUX_TOKEN",
        "DATA_DIR",
    )
}

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# --- loading -------------------------------------------------------------------------------------


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["version"]


def project_packages() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["packages"]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def interpolate(value: str) -> str:
    """Resolve compose's ${VAR}, ${VAR:-default} and ${VAR:?error} with stand-in values."""

    def repl(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if op in (":-", "-"):
            return arg
        return f"stand-in-{name.lower()}"

    return _INTERPOLATION.sub(repl, value)


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


def secret_template() -> dict[str, Any]:
    return yaml.safe_load((K8S / "secret.example.yaml").read_text())


def worker_container() -> dict[str, Any]:
    containers = k8s_one("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def configmap_data() -> dict[str, Any]:
    return k8s_one("ConfigMap")["data"]


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


# --- images --------------------------------------------------------------------------------------


def assert_pinned(image: str, where: str) -> None:
    assert "$" not in image, f"{where}: image {image!r} depends on a variable"
    if "@sha256:" in image:
        return
    last = image.rsplit("/", 1)[-1]
    _, sep, tag = last.partition(":")
    assert sep and tag, f"{where}: image {image!r} has no tag"
    assert tag != "latest", f"{where}: image {image!r} is not pinned"
    assert re.search(r"\d", tag), f"{where}: tag of {image!r} names no version"


def effective_k8s_images() -> list[str]:
    overrides = {entry["name"]: entry for entry in kustomization().get("images", [])}
    images = []
    for container in k8s_one("StatefulSet")["spec"]["template"]["spec"]["containers"]:
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


def test_every_k8s_image_is_pinned() -> None:
    for container in worker_container(), *k8s_one("StatefulSet")["spec"]["template"]["spec"].get(
        "initContainers", []
    ):
        assert_pinned(container["image"], f"k8s container {container['name']}")
    for entry in kustomization().get("images", []):
        if "newTag" in entry:
            assert_pinned(f"{entry['name']}:{entry['newTag']}", "kustomization images")
    for image in effective_k8s_images():
        assert_pinned(image, "k8s after kustomize")


def test_citystream_image_is_tagged_with_the_project_version() -> None:
    version = project_version()
    built = {name: s for name, s in services().items() if "build" in s}
    assert set(WORKERS) <= set(built), "the compose workers must build the citystream image"
    for name, service in built.items():
        assert service["image"] == f"citystream:{version}", name
    assert effective_k8s_images() == [f"citystream:{version}"]


# --- settings ------------------------------------------------------------------------------------


def test_compose_sets_only_real_settings() -> None:
    for name, service in services().items():
        unknown = {k for k in service_env(service) if k.startswith(ENV_PREFIX)} - SETTING_VARIABLES
        assert not unknown, f"compose service {name} sets unknown settings {sorted(unknown)}"


def test_k8s_sets_only_real_settings() -> None:
    container = worker_container()
    names = set(configmap_data()) | {e["name"] for e in container.get("env", [])}
    unknown = {n for n in names if n.startswith(ENV_PREFIX)} - SETTING_VARIABLES
    assert not unknown, f"k8s sets unknown settings {sorted(unknown)}"
    assert all(n.startswith(ENV_PREFIX) for n in configmap_data()), "stray ConfigMap keys"


def test_image_defaults_are_real_settings() -> None:
    env = image_env()
    assert env, "the runtime image sets no CITYSTREAM_* defaults"
    assert set(env) <= SETTING_VARIABLES, sorted(set(env) - SETTING_VARIABLES)


def build_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for variable in SETTING_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize("worker", WORKERS)
def test_compose_worker_has_a_complete_v2_configuration(
    worker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = image_env() | service_env(services()[worker])
    missing = V2_REQUIRED - set(env)
    assert not missing, f"{worker} lacks {sorted(missing)}"
    settings = build_settings(monkeypatch, {k: interpolate(v) for k, v in env.items()})
    assert settings.influx_api == "v2"
    assert settings.influx_org and settings.influx_token
    assert settings.web_host == "0.0.0.0"
    assert str(settings.data_dir) == "/var/lib/citystream"


def test_compose_workers_share_their_settings() -> None:
    first, second = (service_env(services()[w]) for w in WORKERS)
    assert first == second


def test_k8s_worker_has_a_complete_v2_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    env = image_env() | {k: str(v) for k, v in configmap_data().items()}
    env |= {e["name"]: "stand-in-token" for e in worker_container().get("env", [])}
    missing = V2_REQUIRED - set(env)
    assert not missing, f"the k8s worker lacks {sorted(missing)}"
    settings = build_settings(monkeypatch, env)
    assert settings.influx_api == "v2"
    assert settings.web_host == "0.0.0.0"


def test_configmap_values_are_strings() -> None:
    # a YAML number or boolean in a ConfigMap's data is rejected by the API server
    bad = {k: v for k, v in configmap_data().items() if not isinstance(v, str)}
    assert not bad, f"ConfigMap values must be quoted strings: {bad}"


# --- compose -------------------------------------------------------------------------------------


@pytest.mark.parametrize("worker", WORKERS)
def test_compose_worker_waits_for_kafka_and_influxdb(worker: str) -> None:
    depends = services()[worker]["depends_on"]
    assert isinstance(depends, dict), "depends_on needs conditions, not a plain list"
    for dependency in ("kafka", "influxdb"):
        assert depends[dependency]["condition"] == "service_healthy", (worker, dependency)
        assert services()[dependency].get("healthcheck", {}).get("test"), dependency


def test_compose_workers_have_their_own_volume_and_port() -> None:
    data_dir = (image_env() | service_env(services()[WORKERS[0]]))["CITYSTREAM_DATA_DIR"]
    named_volumes = set(compose().get("volumes") or {})
    volumes, host_ports = [], []
    for worker in WORKERS:
        service = services()[worker]
        mounts = [v.split(":") for v in service["volumes"]]
        data = [source for source, target, *_ in mounts if target == data_dir]
        assert len(data) == 1, f"{worker} mounts no volume at {data_dir}"
        assert data[0] in named_volumes, f"{worker}: {data[0]} is not a named volume"
        volumes.append(data[0])
        web_port = (image_env() | service_env(service)).get("CITYSTREAM_WEB_PORT", "6066")
        published = [p.rsplit(":", 2) for p in service["ports"]]
        web = [host for *_, host, container in published if container == web_port]
        assert len(web) == 1, f"{worker} does not publish its web port {web_port}"
        host_ports.append(web[0])
    assert len(set(volumes)) == len(WORKERS), volumes
    assert len(set(host_ports)) == len(WORKERS), host_ports


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
        bootstrap = service_env(service).get("CITYSTREAM_KAFKA_BOOTSTRAP")
        if bootstrap:
            assert set(bootstrap.split(",")) <= advertised, f"{name}: {bootstrap} not advertised"


def test_kafka_accepts_a_contract_sized_message() -> None:
    # contract section 2: a value of up to 1 MiB, plus its key and the record batch's overhead
    assert int(kafka_env()["KAFKA_MESSAGE_MAX_BYTES"]) >= 1024 * 1024 + 64 * 1024


def test_influxdb_is_initialised_for_the_workers() -> None:
    influx = service_env(services()["influxdb"])
    assert influx["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for worker in WORKERS:
        env = service_env(services()[worker])
        assert env["CITYSTREAM_INFLUX_ORG"] == influx["DOCKER_INFLUXDB_INIT_ORG"] == "daegu"
        assert env["CITYSTREAM_INFLUX_DB"] == influx["DOCKER_INFLUXDB_INIT_BUCKET"] == "city"
        assert env["CITYSTREAM_INFLUX_TOKEN"] == influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
        assert env["CITYSTREAM_INFLUX_URL"] == "http://influxdb:8086"
    assert influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"].startswith("${INFLUXDB_TOKEN:?")


def test_simulator_runs_against_the_compose_kafka() -> None:
    simulator = services()["simulator"]
    assert simulator["command"][0] == "simulate"
    assert simulator["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert service_env(simulator)["CITYSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_env_example_defines_every_required_variable() -> None:
    example = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    text = (DEPLOY / "docker-compose.yml").read_text()
    required = {m.group(1) for m in _INTERPOLATION.finditer(text) if m.group(2) in (":?", "?")}
    assert "INFLUXDB_TOKEN" in required
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


# --- Kubernetes ----------------------------------------------------------------------------------


def test_kustomization_lists_files_that_exist() -> None:
    resources = kustomization()["resources"]
    assert resources
    for name in resources:
        assert (K8S / name).is_file(), f"kustomization.yaml lists missing {name}"
    kinds = {d["kind"] for d in k8s_resources()}
    assert {"ConfigMap", "StatefulSet", "Service", "PodDisruptionBudget"} <= kinds


def test_k8s_token_comes_from_a_secret_not_the_configmap() -> None:
    data = configmap_data()
    leaked = [k for k in data if re.search(r"TOKEN|PASSWORD|SECRET", k)]
    assert not leaked, f"secrets in the ConfigMap: {leaked}"
    env = {e["name"]: e for e in worker_container().get("env", [])}
    ref = env["CITYSTREAM_INFLUX_TOKEN"]["valueFrom"]["secretKeyRef"]
    template = secret_template()
    assert template["kind"] == "Secret"
    assert ref["name"] == template["metadata"]["name"]
    values = template.get("stringData") or template.get("data")
    assert ref["key"] in values
    assert values[ref["key"]] == "REPLACE_ME"
    # applying the base must never overwrite the real Secret with the placeholder
    assert all(d["kind"] != "Secret" for d in k8s_resources())
    assert "secret.example.yaml" not in kustomization()["resources"]


def test_pdb_and_service_select_the_statefulset_pods() -> None:
    sts = k8s_one("StatefulSet")
    selector = sts["spec"]["selector"]["matchLabels"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    pdb = k8s_one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["maxUnavailable"] == 1
    service = k8s_one("Service")
    assert service["spec"]["selector"] == selector
    assert service["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    assert sts["spec"]["replicas"] == 2


def test_statefulset_runs_the_worker_safely() -> None:
    sts = k8s_one("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    container = worker_container()
    assert container.get("command") in (None, ["citystream"])
    assert container["args"] == ["worker"]
    assert container["envFrom"][0]["configMapRef"]["name"] == k8s_one("ConfigMap")["metadata"][
        "name"
    ]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False

    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind

    web_port = int(configmap_data().get("CITYSTREAM_WEB_PORT", 6066))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert web_port in ports.values()
    service_ports = k8s_one("Service")["spec"]["ports"]
    assert any(p["targetPort"] in (web_port, *[n for n, v in ports.items() if v == web_port])
               for p in service_ports)

    data_dir = (image_env() | configmap_data())["CITYSTREAM_DATA_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert data_dir in mounts, f"nothing mounted at {data_dir}"
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    assert mounts[data_dir] in claims, "the data dir is not on the pod's PersistentVolumeClaim"


# --- the image -----------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_with_pinned_bases() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    names = {stage_name(s) for s in stages} - {None}
    for stage in stages:
        base = stage[0][1].split()[0]
        if base not in names:
            assert_pinned(base, f"Dockerfile stage {stage_name(stage)}")
    builder, runtime = stages[0], stages[-1]
    assert any("wheel" in args for args in instructions(builder, "RUN")), "no wheel is built"
    assert runtime[0][1].split()[0] == "python:3.11-slim-bookworm"
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
    assert image_env().get("CITYSTREAM_WEB_PORT", "6066") in exposed


def test_dockerfile_declares_the_data_dir_as_a_volume() -> None:
    runtime = dockerfile_stages()[-1]
    data_dir = image_env()["CITYSTREAM_DATA_DIR"]
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
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "PodDisruptionBudget", "Service", "StatefulSet"]
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "citystream"
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    assert [c["image"] for c in sts["spec"]["template"]["spec"]["containers"]] == [
        f"citystream:{project_version()}"
    ]


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _docker_compose_available(), reason="docker compose is not installed")
def test_docker_compose_config_is_valid(tmp_path: Path) -> None:
    env_file = tmp_path / "compose.env"
    env_file.write_text("INFLUXDB_TOKEN=stand-in-token\nINFLUXDB_ADMIN_PASSWORD=stand-in-pass\n")
    result = subprocess.run(
        ["docker", "compose", "--env-file", str(env_file), "-f",
         str(DEPLOY / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
