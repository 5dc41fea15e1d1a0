"""Apache Kafka's own broker (KRaft mode, no ZooKeeper, no Docker) as a local-stack service.

The broker's jars come from Maven Central: :func:`fetch_kafka` writes a small ``pom.xml`` to a
temporary folder and runs ``mvn dependency:copy-dependencies`` into a cache folder,
``~/.cache/citystream/kafka/<version>/`` (``$CITYSTREAM_KAFKA_CACHE/<version>/`` when that is set),
once. It needs ``java`` (17 or newer) and ``mvn``; ``citystream local install --kafka`` installs
Debian's ``openjdk-17-jre-headless`` and ``maven`` when they are missing, and fetches the jars.

* :func:`apache_kafka`: one node that is both broker and controller, on 127.0.0.1:PORT.
* :func:`kafka_cluster`: three such nodes forming one controller quorum (a :class:`KafkaCluster`);
  new topics get replication factor 3 and ``min.insync.replicas=2``. Each node is a
  :class:`ManagedService` that can be stopped, killed and started again with its data.

Each node keeps its data (``data/``), its generated ``server.properties`` and ``log4j2.yaml``, its
log (``<name>.log``: stdout plus the broker's own log lines) and its pid file in its folder. The
storage is formatted the first time a node starts; later starts reuse it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from streams.tools.localstack.errors import InstallError, LocalStackError, MissingBinaryError, ServiceStartError
from streams.tools.localstack.install import apt_install
from streams.tools.localstack.ports import HOST, free_port
from streams.tools.localstack.process import ManagedService

KAFKA_VERSION = "4.4.0"
"""The version of ``org.apache.kafka:kafka_2.13`` fetched from Maven Central."""
SCALA_VERSION = "2.13"
CACHE_ENV = "CITYSTREAM_KAFKA_CACHE"
"""Environment variable naming the folder that holds one sub-folder of jars per Kafka version."""
# Kafka's jars log through SLF4J 1.7 and bring log4j-core without the binding between the two; the
# distribution ships log4j-slf4j-impl of the same log4j version, and so does this fetch
LOG4J_VERSION = "2.25.5"
DEPENDENCY_PLUGIN = "3.8.1"  # maven-dependency-plugin; pinned so Maven does not look for the newest
JAVA_PACKAGE = "openjdk-17-jre-headless"
MAVEN_PACKAGE = "maven"
INSTALL_HINT = "citystream local install --kafka"
_COMPLETE = ".complete"  # written last into a jar folder: a folder without it is not used

# ----------------------------------------------------------------------------- the jars


def kafka_cache_root() -> Path:
    """The folder holding one folder of jars per Kafka version."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "citystream" / "kafka"


def kafka_jar_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of ``version`` are (or will be) cached."""
    return kafka_cache_root() / version


def _apt_hint(package: str) -> str:
    return f"Run `{INSTALL_HINT}` (as root) or `sudo apt-get install -y {package}`."


def java_binary() -> str:
    """Path of ``java``: ``$JAVA_HOME/bin/java`` when set, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    path = shutil.which("java")
    if path is None:
        raise MissingBinaryError(
            "`java` is not installed: Apache Kafka needs Java 17 or newer, e.g. Debian's "
            f"`{JAVA_PACKAGE}` package. {_apt_hint(JAVA_PACKAGE)}"
        )
    return path


def maven_binary() -> str:
    """Path of ``mvn``, which fetches Kafka's jars from Maven Central."""
    path = shutil.which("mvn")
    if path is None:
        raise MissingBinaryError(
            "`mvn` is not installed: Apache Kafka's jars are fetched from Maven Central with "
            f"Maven, Debian's `{MAVEN_PACKAGE}` package. {_apt_hint(MAVEN_PACKAGE)}"
        )
    return path


def _pom(version: str) -> str:
    return f"""\
<?xml version="1.0" encoding="UTF-8"?>
<!-- written by citystream (streams/tools/localstack/kafka.py) to fetch Apache Kafka's jars -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.citystream</groupId>
  <artifactId>apache-kafka-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{DEPENDENCY_PLUGIN}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


_fetch_lock = threading.Lock()


def fetch_kafka(version: str = KAFKA_VERSION, *, echo: Callable[[str], None] | None = None) -> Path:
    """Fetch Apache Kafka's jars with Maven into the cache, unless they are there; return their folder.

    Idempotent: a complete folder is used as it is. The jars are copied into a temporary folder
    beside the final one and renamed into place only when Maven succeeded, so an interrupted fetch
    never leaves a half folder that looks complete. Raises MissingBinaryError when ``mvn`` or
    ``java`` is missing, LocalStackError when Maven fails.
    """
    say = echo or (lambda _message: None)
    target = kafka_jar_dir(version)
    if (target / _COMPLETE).is_file():
        return target
    java_binary()  # Maven needs Java too; name the package before Maven fails obscurely
    mvn = maven_binary()
    with _fetch_lock:
        if (target / _COMPLETE).is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        try:
            with tempfile.TemporaryDirectory(prefix="citystream-kafka-pom-") as project:
                Path(project, "pom.xml").write_text(_pom(version), encoding="utf-8")
                argv = [
                    mvn,
                    "-q",
                    "-B",
                    f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN}:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={staging}",
                ]
                say(f"fetching Apache Kafka {version} from Maven Central into {target}")
                result = subprocess.run(
                    argv, cwd=project, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
                )
            if result.returncode != 0:
                output = (result.stdout + result.stderr).strip().splitlines()[-25:]
                raise LocalStackError(
                    f"Maven could not fetch org.apache.kafka:kafka_{SCALA_VERSION}:{version} (exit code "
                    f"{result.returncode}); its last lines:\n" + "\n".join(output)
                )
            if not any(staging.glob(f"kafka_{SCALA_VERSION}-{version}.jar")):
                raise LocalStackError(f"Maven finished but kafka_{SCALA_VERSION}-{version}.jar is not in {staging}")
            (staging / _COMPLETE).write_text(f"org.apache.kafka:kafka_{SCALA_VERSION}:{version}\n", encoding="utf-8")
            staging.chmod(0o755)  # mkdtemp made it private
            if (target / _COMPLETE).is_file():  # another process finished first: keep its folder
                return target
            if target.exists():  # an incomplete folder left by an older fetch
                shutil.rmtree(target)
            try:
                staging.rename(target)
            except OSError:
                if not (target / _COMPLETE).is_file():
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def kafka_jars(version: str = KAFKA_VERSION, *, fetch: bool = True) -> Path:
    """The folder of Kafka's jars; fetched first when missing (``fetch=False``: raise instead)."""
    target = kafka_jar_dir(version)
    if (target / _COMPLETE).is_file():
        return target
    if not fetch:
        raise MissingBinaryError(f"Apache Kafka {version}'s jars are not in {target}: run `{INSTALL_HINT}`")
    return fetch_kafka(version)


def cache_size(version: str = KAFKA_VERSION) -> int:
    """Bytes the cached jars of ``version`` take (0 when not fetched)."""
    folder = kafka_jar_dir(version)
    return sum(p.stat().st_size for p in folder.glob("*.jar")) if folder.is_dir() else 0


def missing_java_maven() -> list[str]:
    """The Debian packages (``openjdk-17-jre-headless``, ``maven``) whose binary is missing."""
    missing = []
    for package, check in ((JAVA_PACKAGE, java_binary), (MAVEN_PACKAGE, maven_binary)):
        try:
            check()
        except MissingBinaryError:
            missing.append(package)
    return missing


def install_kafka(version: str = KAFKA_VERSION, *, echo: Callable[[str], None] | None = None) -> Path:
    """``apt-get install`` Java and Maven when missing (as root), then fetch the jars. Returns their folder."""
    missing = missing_java_maven()
    if missing:
        apt_install(missing, what="Java 17 (or newer) and Maven", echo=echo)
        still = missing_java_maven()
        if still:
            raise InstallError(f"apt-get finished but {', '.join(still)} is still missing")
    return fetch_kafka(version, echo=echo)


# ----------------------------------------------------------------------------- readiness


def _string(data: bytes, at: int) -> tuple[str | None, int]:
    (size,) = struct.unpack_from(">h", data, at)
    at += 2
    if size < 0:
        return None, at
    return data[at : at + size].decode(errors="replace"), at + size


def metadata_brokers(host: str, port: int, timeout: float = 1.0) -> dict[int, tuple[str, int]] | None:
    """The live (unfenced) brokers that ``host:port`` names in a Metadata (v1, no topics) answer:
    ``{node id: (host, port)}``; None when it does not answer as a Kafka broker."""
    correlation_id = 0x4B46
    client_id = b"citystream-probe"
    body = struct.pack(">i", 0)  # an empty topic array: no topics, brokers only
    request = struct.pack(">hhih", 3, 1, correlation_id, len(client_id)) + client_id + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(request)) + request)
            data = b""
            size = None
            while size is None or len(data) < size + 4:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                data += chunk
                if size is None and len(data) >= 4:
                    (size,) = struct.unpack_from(">i", data)
    except OSError:
        return None
    try:
        answered_id, count = struct.unpack_from(">ii", data, 4)
        if answered_id != correlation_id:
            return None
        at = 12
        brokers: dict[int, tuple[str, int]] = {}
        for _ in range(count):
            (node_id,) = struct.unpack_from(">i", data, at)
            broker_host, at = _string(data, at + 4)
            (broker_port,) = struct.unpack_from(">i", data, at)
            _rack, at = _string(data, at + 4)
            brokers[node_id] = (broker_host or "", broker_port)
    except struct.error:
        return None
    return brokers


def broker_ready(node_id: int) -> Callable[[str, int], bool]:
    """A probe: True once the broker on ``host:port`` lists itself (node ``node_id``) as a live
    broker, i.e. it has caught up with the metadata log and the controller has unfenced it."""

    def probe(host: str, port: int) -> bool:
        brokers = metadata_brokers(host, port)
        return brokers is not None and node_id in brokers

    return probe


# ----------------------------------------------------------------------------- the nodes


def new_cluster_id() -> str:
    """A random cluster id as Kafka's storage tool makes them (a UUID in URL-safe base64), and as
    Kafka's ``Uuid.randomUuid`` never starting with ``-``, which a command line takes for an option."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):
            return value


@dataclass(frozen=True)
class NodeConfig:
    """What one KRaft node (broker and controller) is told in its ``server.properties``."""

    node_id: int
    voters: str  # "1@127.0.0.1:PORT,2@..." (a static quorum); empty: this node alone
    controller_port: int | None  # None: a fresh free port at each start (a node alone only)
    replication: int
    min_insync: int
    settings: tuple[tuple[str, str], ...] = ()


def server_properties(service: ManagedService, node: NodeConfig, controller_port: int) -> str:
    """``server.properties`` of one node: broker and controller on loopback, data under ``data/``."""
    voters = node.voters or f"{node.node_id}@{HOST}:{controller_port}"
    rf, isr = node.replication, node.min_insync
    lines = [
        f"# generated by citystream (streams/tools/localstack/kafka.py) at every start of {service.name};",
        "# edits are overwritten",
        "process.roles=broker,controller",
        f"node.id={node.node_id}",
        f"controller.quorum.voters={voters}",
        f"listeners=PLAINTEXT://{service.address},CONTROLLER://{HOST}:{controller_port}",
        f"advertised.listeners=PLAINTEXT://{service.address}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={service.workdir / 'data'}",
        # topics are created explicitly (as in production); defaults for those created without settings
        "auto.create.topics.enable=false",
        "num.partitions=1",
        f"default.replication.factor={rf}",
        f"min.insync.replicas={isr}",
        # the internal topics, sized for one machine (the defaults are 50 partitions each)
        f"offsets.topic.replication.factor={rf}",
        "offsets.topic.num.partitions=10",
        f"transaction.state.log.replication.factor={rf}",
        f"transaction.state.log.min.isr={isr}",
        "transaction.state.log.num.partitions=10",
        f"share.coordinator.state.topic.replication.factor={rf}",
        f"share.coordinator.state.topic.min.isr={isr}",
        "share.coordinator.state.topic.num.partitions=10",
        "group.initial.rebalance.delay.ms=0",
        # a broker that died is fenced after the session timeout, and a restarted one waits for
        # its previous incarnation's session to expire: the defaults (2 s heartbeats, 9 s) make a
        # restart after a SIGKILL, or a cluster's failover, wait long
        "broker.heartbeat.interval.ms=1000",
        "broker.session.timeout.ms=4000",
        # few threads and small buffers: a shared machine with few cores
        "num.network.threads=2",
        "num.io.threads=4",
        "background.threads=4",
        "num.recovery.threads.per.data.dir=1",
        "log.cleaner.threads=1",
        "log.cleaner.dedupe.buffer.size=16777216",
        *(f"{key}={value}" for key, value in node.settings),
    ]
    return "\n".join(lines) + "\n"


def log4j2_properties(service: ManagedService) -> str:
    """Log4j 2 configuration: everything from INFO to ``server.log`` in the node's folder (rolled
    over at 20 MB, three kept), and warnings and errors also to the process output, which goes to
    ``<name>.log``."""
    server_log = service.workdir / "server.log"
    return f"""\
# generated by citystream (streams/tools/localstack/kafka.py) at every start; edits are overwritten
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
appender.out.filter.threshold.type = ThresholdFilter
appender.out.filter.threshold.level = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {server_log}
appender.file.filePattern = {server_log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


def _jvm(java: str, jars: Path, heap: str, log4j: Path, workdir: Path) -> list[str]:
    return [
        java,
        "-Xms64m",
        f"-Xmx{heap}",
        "-XX:+UseSerialGC",  # one GC thread: little memory and CPU on a shared 2-core machine
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={workdir}",
        "-cp",
        f"{jars}/*",
    ]


def format_storage(service: ManagedService, jars: Path, heap: str, cluster_id: str) -> None:
    """Format the node's ``data/`` with Kafka's storage tool (once: a formatted folder is left alone)."""
    if (service.workdir / "data" / "meta.properties").is_file():
        return
    argv = [
        *_jvm(java_binary(), jars, heap, service.workdir / "log4j2.properties", service.workdir),
        "kafka.tools.StorageTool",
        "format",
        f"--cluster-id={cluster_id}",  # one argument: an id may start with "-" (an older one, say)
        "--config",
        str(service.workdir / "server.properties"),
    ]
    result = subprocess.run(
        argv, cwd=service.workdir, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    with service.log_path.open("a", encoding="utf-8") as log:
        log.write(result.stdout + result.stderr)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise ServiceStartError(
            f"formatting the storage of {service.name} in {service.workdir / 'data'} failed (exit code "
            f"{result.returncode}):\n" + "\n".join(output)
        )


def _cluster_id(folder: Path) -> str:
    """The cluster id kept in ``folder/cluster.id`` (made and written the first time)."""
    path = folder / "cluster.id"
    with contextlib.suppress(OSError):
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    value = new_cluster_id()
    path.write_text(value + "\n", encoding="utf-8")
    return value


def _node_command(node: NodeConfig, version: str, heap: str) -> Callable[[ManagedService], list[str]]:
    def command(service: ManagedService) -> list[str]:
        java = java_binary()
        jars = kafka_jars(version)
        controller_port = node.controller_port or free_port()
        config = service.workdir / "server.properties"
        config.write_text(server_properties(service, node, controller_port), encoding="utf-8")
        log4j = service.workdir / "log4j2.properties"
        log4j.write_text(log4j2_properties(service), encoding="utf-8")
        format_storage(service, jars, heap, _cluster_id(service.workdir))
        return [*_jvm(java, jars, heap, log4j, service.workdir), "kafka.Kafka", str(config)]

    return command


KIND = "apache-kafka"
"""The ``kind`` of every Apache Kafka node's :class:`ManagedService` (and its pid file)."""


def _node(
    name: str,
    port: int,
    workdir: Path | str,
    node: NodeConfig,
    *,
    version: str,
    heap: str,
    detach: bool,
    start_timeout: float,
) -> ManagedService:
    return ManagedService(
        name,
        KIND,
        port,
        workdir,
        command=_node_command(node, version, heap),
        probe=broker_ready(node.node_id),
        scheme="tcp",
        detach=detach,
        start_timeout=start_timeout,
    )


def apache_kafka(
    port: int,
    workdir: Path | str,
    *,
    detach: bool = False,
    version: str = KAFKA_VERSION,
    heap: str = "384m",
    settings: dict[str, str] | None = None,
) -> ManagedService:
    """Apache Kafka, one KRaft node (broker and controller), on 127.0.0.1:``port``.

    Its data persists in ``workdir/data`` across restarts (formatted at the first start); the
    controller listens on a fresh loopback port at each start. ``start()`` fetches the jars first
    when they are not cached, and returns once the broker is unfenced and answers metadata.
    ``settings`` are added to ``server.properties``.
    """
    node = NodeConfig(1, "", None, 1, 1, tuple((settings or {}).items()))
    return _node("kafka", port, workdir, node, version=version, heap=heap, detach=detach, start_timeout=90.0)


# a follower that stops fetching leaves the ISR after this (default 30 s)
CLUSTER_SETTINGS = {"replica.lag.time.max.ms": "10000"}


class KafkaCluster:
    """Three KRaft nodes on loopback, each broker and controller, one static controller quorum.

    ``nodes`` are :class:`ManagedService` objects: each can be stopped, killed (SIGKILL) and
    started again with its data (the quorum and the partitions stay available while two run).
    :meth:`start` starts the stopped nodes together (a node alone cannot become ready: the quorum
    needs two of three controllers) and returns when all are ready.
    """

    def __init__(self, nodes: Sequence[ManagedService], folder: Path) -> None:
        self.nodes = tuple(nodes)
        self.folder = folder

    def __repr__(self) -> str:
        return f"<KafkaCluster {self.bootstrap} in {self.folder}>"

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"``."""
        return ",".join(node.address for node in self.nodes)

    def node(self, node_id: int) -> ManagedService:
        """The node with Kafka node id ``node_id`` (1, 2 or 3)."""
        return self.nodes[node_id - 1]

    def start(self, timeout: float | None = None) -> KafkaCluster:
        """Start every node that is not running, all at once; wait until each is ready."""
        self._each(lambda node: node.start(timeout))
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every node (SIGTERM to all at once, then SIGKILL after ``timeout``)."""
        self._each(lambda node: node.stop(timeout))

    def kill(self) -> None:
        """SIGKILL every node."""
        self._each(lambda node: node.kill())

    def _each(self, action: Callable[[ManagedService], object]) -> None:
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            futures = [pool.submit(action, node) for node in self.nodes]
        errors = [exc for future in futures if (exc := future.exception()) is not None]
        if errors:
            raise errors[0]


def kafka_cluster(
    folder: Path | str,
    *,
    ports: Sequence[int] | None = None,
    controller_ports: Sequence[int] | None = None,
    detach: bool = False,
    version: str = KAFKA_VERSION,
    heap: str = "320m",
    settings: dict[str, str] | None = None,
) -> KafkaCluster:
    """A three-node Apache Kafka cluster on loopback (not started yet: call ``start()``).

    Node N keeps its data, configuration and logs in ``folder/node-N``. Its broker listens on
    ``ports[N-1]`` and its controller on ``controller_ports[N-1]`` (free ports by default); the
    ports stay fixed for the cluster's life. New topics get replication factor 3 and
    ``min.insync.replicas=2`` unless they say otherwise; the internal topics too.
    """
    root = Path(folder).resolve()
    broker_ports = list(ports) if ports is not None else []
    quorum_ports = list(controller_ports) if controller_ports is not None else []
    taken: set[int] = set(broker_ports) | set(quorum_ports)
    for chosen in (broker_ports, quorum_ports):
        while len(chosen) < 3:
            port = free_port()
            if port not in taken:
                taken.add(port)
                chosen.append(port)
    if len(broker_ports) != 3 or len(quorum_ports) != 3 or len(taken) != 6:
        raise LocalStackError("a Kafka cluster needs three broker ports and three controller ports, all different")
    voters = ",".join(f"{n}@{HOST}:{quorum_ports[n - 1]}" for n in (1, 2, 3))
    root.mkdir(parents=True, exist_ok=True)
    cluster_id = _cluster_id(root)
    merged = {**CLUSTER_SETTINGS, **(settings or {})}
    nodes = []
    for n in (1, 2, 3):
        workdir = root / f"node-{n}"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "cluster.id").write_text(cluster_id + "\n", encoding="utf-8")
        node = NodeConfig(n, voters, quorum_ports[n - 1], 3, 2, tuple(merged.items()))
        nodes.append(
            _node(
                f"kafka-{n}",
                broker_ports[n - 1],
                workdir,
                node,
                version=version,
                heap=heap,
                detach=detach,
                start_timeout=120.0,
            )
        )
    return KafkaCluster(nodes, root)
