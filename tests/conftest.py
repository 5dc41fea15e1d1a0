"""Session fixtures: real servers on loopback ports chosen at run time, data in temporary folders.

Every test that talks to Kafka through ``kafka_bootstrap`` or ``own_kafka`` runs twice, once per
broker of ``broker_kind``: Tansu (``[tansu]`` in the test id, marker ``tansu``) and Apache Kafka
(``[kafka]``, marker ``kafka``). One broker only: ``pytest -m tansu`` or ``pytest -m kafka`` (the
tests of tests/integration/test_apache_kafka.py, which use ``apache_kafka`` or ``kafka_cluster``
directly, carry the ``kafka`` marker too). The tests of one broker run together: pytest groups
them by the session parameter, so one session broker runs at a time.

* ``broker_kind``: ``"tansu"`` or ``"kafka"`` (a session parameter).
* ``kafka_bootstrap``: the session broker of that kind: Tansu (Kafka protocol, in memory), or one
  Apache Kafka node of its own (not the ``apache_kafka`` one). Yields ``"127.0.0.1:PORT"``; other
  tests' topics and messages are on it too. Tansu creates a topic on its first message (with
  partitions of its choosing), Apache Kafka never: create the topics first (``ensure_topics``,
  or ``create_topics`` of tests/integration/helpers.py for the contract's).
* ``own_kafka_service``: ``own_kafka``'s :class:`ManagedService` handle (to pause or stop it).
* ``own_kafka``: a broker of the test's own of that kind (a fresh Tansu, or a fresh Apache Kafka
  node, about 3 s to start), for tests whose counts would mix with other tests' messages (those
  that write the contract's source topics, or read a whole topic).
* ``influxdb``: InfluxDB 1.6.7 (v1 API only). Yields the :class:`ManagedService` handle
  (``.url``, ``.stop()``, ``.start()``, ``.kill()``) for outage tests; the data survives a restart.
  No database is created: call ``streams.tools.localstack.create_database(url, name)``.
* ``influx_url``: the InfluxDB base URL, ``"http://127.0.0.1:PORT"``.
* ``victoria_metrics``: VictoriaMetrics (accepts ``/api/v2/write``). Yields its base URL.
* ``mosquitto``: Mosquitto 2 (Debian's), an MQTT broker with persistent sessions (saved in its
  folder). Yields the :class:`ManagedService` handle; ``mqtt_url`` yields ``"mqtt://127.0.0.1:PORT"``.
  A missing mosquitto fails the fixture with the hint ``citystream local install --mqtt``.
* ``apache_kafka``: Apache Kafka itself, one KRaft node (broker and controller; topics are not
  auto-created). Yields ``"127.0.0.1:PORT"``. Needs Java 17 and Maven (the jars are fetched once
  into ~/.cache/citystream/kafka/: ``citystream local install --kafka``).
* ``kafka_cluster``: three Apache Kafka nodes (replication factor 3 and min.insync.replicas=2 by
  default). Yields the :class:`KafkaCluster` handle: ``.bootstrap``, ``.nodes`` (each a
  :class:`ManagedService` to stop, kill and start again), ``.node(id)``.

A missing server binary fails the fixture (it does not skip): the tests need the real servers,
installed by ``citystream local install --victoria-metrics``. A test that stops a session service
and does not start it again gets it restarted after it, so later tests still find it running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from streams.tools import localstack
from streams.tools.localstack import KafkaCluster, ManagedService, MissingBinaryError, free_port

INSTALL_HINT = "run `citystream local install --victoria-metrics`"

_session_services: list[ManagedService] = []


@contextmanager
def _serve(
    tmp_path_factory: pytest.TempPathFactory,
    factory: Callable[[int, Path], ManagedService],
    folder: str,
    hint: str = INSTALL_HINT,
) -> Iterator[ManagedService]:
    service = factory(free_port(), tmp_path_factory.mktemp(folder))
    missing = None
    try:
        service.start(timeout=60)
    except MissingBinaryError as exc:
        missing = str(exc)
    if missing is not None:  # fail (not skip): the tests need the real servers
        pytest.fail(f"{missing}\n{hint}", pytrace=False)
    _session_services.append(service)
    try:
        yield service
    finally:
        _session_services.remove(service)
        service.stop()


BROKERS = {"tansu": localstack.tansu, "kafka": localstack.apache_kafka}
"""The brokers every Kafka test runs on, by their ``broker_kind`` (and test id, and marker)."""


@pytest.fixture(
    scope="session",
    params=[pytest.param(kind, id=kind, marks=getattr(pytest.mark, kind)) for kind in BROKERS],
)
def broker_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(scope="session")
def kafka_bootstrap(broker_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _serve(tmp_path_factory, BROKERS[broker_kind], broker_kind) as service:
        yield service.address


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedService]:
    with _serve(tmp_path_factory, localstack.influxdb, "influxdb") as service:
        yield service


@pytest.fixture(scope="session")
def influx_url(influxdb: ManagedService) -> str:
    return influxdb.url


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _serve(tmp_path_factory, localstack.victoria_metrics, "victoria-metrics") as service:
        yield service.url


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedService]:
    hint = "run `citystream local install --mqtt`"
    with _serve(tmp_path_factory, localstack.mosquitto, "mosquitto", hint) as service:
        yield service


@pytest.fixture(scope="session")
def mqtt_url(mosquitto: ManagedService) -> str:
    return mosquitto.url


@pytest.fixture(autouse=True)
def _restart_stopped_services() -> Iterator[None]:
    """After each test, start again any session service the test left stopped or killed."""
    yield
    for service in list(_session_services):
        if not service.is_running():
            service.start(timeout=60)


@pytest.fixture
def own_kafka_service(broker_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedService]:
    """``own_kafka``'s :class:`ManagedService` handle, for tests that pause or stop their broker."""
    with _serve(tmp_path_factory, BROKERS[broker_kind], f"{broker_kind}-own") as service:
        yield service


@pytest.fixture
def own_kafka(own_kafka_service: ManagedService) -> str:
    """A broker of the test's own (Tansu, or a fresh Apache Kafka node), for tests that need topics
    no other test has written."""
    return own_kafka_service.address


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _serve(tmp_path_factory, localstack.apache_kafka, "apache-kafka") as service:
        yield service.address


_session_clusters: list[KafkaCluster] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests of Apache Kafka itself (``apache_kafka``, ``kafka_cluster``) run with ``-m kafka`` too."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "broker_kind" not in names and ({"apache_kafka", "kafka_cluster"} & set(names)):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    cluster = localstack.kafka_cluster(tmp_path_factory.mktemp("kafka-cluster"))
    missing = None
    try:
        cluster.start(timeout=120)
    except MissingBinaryError as exc:
        missing = str(exc)
    except BaseException:
        cluster.stop()
        raise
    if missing is not None:  # fail (not skip): the tests need the real servers
        cluster.stop()
        pytest.fail(f"{missing}\nrun `citystream local install --kafka`", pytrace=False)
    _session_clusters.append(cluster)
    try:
        yield cluster
    finally:
        _session_clusters.remove(cluster)
        cluster.stop()


@pytest.fixture(autouse=True)
def _restart_stopped_cluster_nodes() -> Iterator[None]:
    """After each test, start again the nodes of a session cluster that the test left stopped or
    killed (together: one node alone cannot start while the quorum is lost)."""
    yield
    for cluster in list(_session_clusters):
        if not all(node.is_running() for node in cluster.nodes):
            cluster.start(timeout=120)
