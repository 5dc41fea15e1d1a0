"""``local up/down/status`` as a Python API: Tansu (or Apache Kafka), InfluxDB and, with ``--mqtt``, Mosquitto
started detached under one folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from streams.tools.localstack.errors import LocalStackError, PortInUseError
from streams.tools.localstack.install import install_packages, missing_packages, tansu_binary
from streams.tools.localstack.kafka import KAFKA_VERSION, apache_kafka, install_kafka, java_binary, kafka_jars
from streams.tools.localstack.kafka import KIND as APACHE_KAFKA
from streams.tools.localstack.ports import port_is_free
from streams.tools.localstack.process import ManagedService, ProcessRecord, record_alive
from streams.tools.localstack.services import DEFAULT_DB, FACTORIES, create_database, influxdb, mosquitto, tansu

DEFAULT_DIR = Path("var/local")
DEFAULT_KAFKA_PORT = 9092
DEFAULT_INFLUX_PORT = 8086
DEFAULT_MQTT_PORT = 1883
BROKERS = ("tansu", "kafka")
"""``--broker``: Tansu (the default; in memory) or Apache Kafka (KRaft, one node; data kept under --dir)."""


@dataclass(frozen=True)
class LocalStack:
    """Where ``local_up`` left the services, and the settings the worker needs to reach them."""

    dir: Path
    bootstrap: str
    influx_url: str
    influx_db: str = DEFAULT_DB
    started: tuple[str, ...] = ()
    already_running: tuple[str, ...] = ()
    pids: dict[str, int] = field(default_factory=dict)
    broker: str = "tansu"
    mqtt_url: str | None = None  # with --mqtt: Mosquitto, for citystream bridge mqtt

    @property
    def env(self) -> dict[str, str]:
        env = {
            "CITYSTREAM_KAFKA_BOOTSTRAP": self.bootstrap,
            "CITYSTREAM_INFLUX_URL": self.influx_url,
            "CITYSTREAM_INFLUX_DB": self.influx_db,
        }
        if self.mqtt_url is not None:
            env["CITYSTREAM_MQTT_URL"] = self.mqtt_url
        return env


# (name, which is also the folder under --dir; the kinds that may run there)
_LOCAL_SERVICES = (("kafka", ("tansu", APACHE_KAFKA)), ("influxdb", ("influxdb",)), ("mosquitto", ("mosquitto",)))
_OPTIONAL_SERVICES = ("mosquitto",)  # started by `up --mqtt` only


def _local_services(
    root: Path, kafka_port: int, influx_port: int, broker: str, mqtt_port: int | None = None
) -> list[ManagedService]:
    kafka_factory = apache_kafka if broker == "kafka" else tansu
    services = [
        kafka_factory(kafka_port, root / "kafka", detach=True),
        influxdb(influx_port, root / "influxdb", detach=True),
    ]
    if mqtt_port is not None:
        services.append(mosquitto(mqtt_port, root / "mosquitto", detach=True))
    return services


def _broker_name(kind: str) -> str:
    return f"Apache Kafka {KAFKA_VERSION}" if kind == APACHE_KAFKA else "Tansu"


def _recorded_services(
    root: Path,
) -> Iterator[tuple[str, ManagedService | None, ProcessRecord | None]]:
    """Each local service, rebuilt from its pid file (None, None when there is none)."""
    for name, kinds in _LOCAL_SERVICES:
        workdir = root / name
        record = ProcessRecord.load(workdir / f"{name}.pid")
        if record is None or record.kind not in kinds:
            if name not in _OPTIONAL_SERVICES:  # an optional one that never ran here is not shown
                yield name, None, None
            continue
        port = int(record.address.rsplit(":", 1)[1])
        yield name, FACTORIES[record.kind](port, workdir, detach=True), record


def local_up(
    dir: Path | str = DEFAULT_DIR,
    kafka_port: int = DEFAULT_KAFKA_PORT,
    influx_port: int = DEFAULT_INFLUX_PORT,
    *,
    install: bool = True,
    database: str = DEFAULT_DB,
    timeout: float = 60.0,
    echo: Callable[[str], None] | None = None,
    broker: str = "tansu",
    mqtt_port: int | None = None,
) -> LocalStack:
    """Start Tansu (or, with ``broker="kafka"``, Apache Kafka) and InfluxDB detached under ``dir``
    (unless already running there), create the database, and return where they are. Idempotent.
    Raises LocalStackError (or a subclass) with a message for the user when a binary is missing, a
    port is taken, or a service does not start.

    With ``install``, missing Debian packages are installed (as root) and Apache Kafka's jars are
    fetched into their cache when missing. With ``mqtt_port``, Mosquitto runs there too (for
    ``citystream bridge mqtt``), its persistent sessions saved under ``dir``.
    """
    say = echo or (lambda _message: None)
    if broker not in BROKERS:
        raise LocalStackError(f"unknown broker {broker!r}: choose one of {', '.join(BROKERS)}")
    root = Path(dir).resolve()
    if broker == "kafka":  # fail early, naming the Debian packages
        if install:
            install_kafka(echo=say)
        else:
            java_binary()
            kafka_jars(fetch=False)
    else:
        tansu_binary()  # fail early with the pip hint
    mqtt = mqtt_port is not None
    if install and missing_packages(mqtt=mqtt):
        say(f"installing the missing Debian packages: {', '.join(missing_packages(mqtt=mqtt))}")
        install_packages(mqtt=mqtt, echo=say)
    services = _local_services(root, kafka_port, influx_port, broker, mqtt_port)
    started: list[ManagedService] = []
    already: list[str] = []
    try:
        for service in services:
            record = service.record()
            if record is not None:
                if record.kind != service.kind:
                    raise LocalStackError(
                        f"{service.name} is already running from {root} as {_broker_name(record.kind)} "
                        f"(pid {record.pid}), not {_broker_name(service.kind)}: run "
                        f"`citystream local down --dir {root}` first"
                    )
                if record.address != service.address:
                    raise LocalStackError(
                        f"{service.name} is already running from {root} on {record.address} "
                        f"(pid {record.pid}), not on {service.address}: run "
                        f"`citystream local down --dir {root}` first, or ask for the same port"
                    )
                service.wait_ready(timeout)
                already.append(service.name)
                say(f"{service.name}: already running on {service.address} (pid {record.pid})")
                continue
            if not port_is_free(service.port):
                option = {"kafka": "--kafka-port", "mosquitto": "--mqtt-port"}.get(service.name, "--influx-port")
                extra = (
                    " (perhaps the system's influxdb service: `systemctl stop influxdb`)"
                    if service.kind == "influxdb"
                    else ""
                )
                raise PortInUseError(
                    f"port {service.address} is already in use by another process, not one "
                    f"started from {root}{extra}; choose another port with {option}"
                )
            service.start(timeout)
            started.append(service)
            say(f"{service.name}: started on {service.address} (pid {service.pid})")
        create_database(services[1].url, database)
    except BaseException:
        for service in started:  # leave nothing half-started behind
            service.stop()
        raise
    return LocalStack(
        dir=root,
        bootstrap=services[0].address,
        influx_url=services[1].url,
        influx_db=database,
        started=tuple(s.name for s in started),
        already_running=tuple(already),
        pids={s.name: pid for s in services if (pid := s.pid) is not None},
        broker=broker,
        mqtt_url=services[2].url if mqtt else None,
    )


def local_down(dir: Path | str = DEFAULT_DIR) -> dict[str, bool]:
    """Stop what ``local_up`` started under ``dir``. Idempotent.

    Returns {service name: whether it was running}.
    """
    root = Path(dir).resolve()
    result: dict[str, bool] = {}
    for name, service, _record in _recorded_services(root):
        result[name] = service.stop() if service is not None else False
    return result


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    address: str | None
    running: bool
    answering: bool
    log: Path | None
    kind: str | None = None  # "tansu" or "apache-kafka" for kafka

    @property
    def state(self) -> str:
        if self.running:
            return "running, answering" if self.answering else "running, NOT answering"
        return "stopped"


def local_status(dir: Path | str = DEFAULT_DIR) -> list[ServiceStatus]:
    """The state of each service ``local_up`` manages under ``dir``."""
    root = Path(dir).resolve()
    statuses = []
    for name, service, record in _recorded_services(root):
        if service is None or record is None:
            statuses.append(ServiceStatus(name, None, None, False, False, None))
            continue
        running = record_alive(record)
        statuses.append(
            ServiceStatus(
                name=name,
                pid=record.pid if running else None,
                address=service.address if name == "kafka" else service.url,
                running=running,
                answering=running and service.is_answering(),
                log=service.log_path,
                kind=record.kind,
            )
        )
    return statuses
