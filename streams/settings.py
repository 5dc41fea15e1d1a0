"""The worker's settings (schemas/CONTRACT.md section 8): one object, built once from the environment and `.env`.

Every setting is read from ``CITYSTREAM_<NAME>``. A bad value stops the worker with
:class:`ConfigError`, whose message names the variable and says what to fix.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import CitystreamError

if TYPE_CHECKING:
    from streams.core.qc import QcPolicy
    from streams.core.uplinks import TopicSpec
    from streams.rules.policy import AlertPolicy

ENV_PREFIX = "CITYSTREAM_"

_HOST_PORT = re.compile(r"^[A-Za-z0-9._\-\[\]:]+:\d{1,5}$")


class ConfigError(CitystreamError):
    """A setting is missing or wrong; the message says which variable and what to fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # schemas/CONTRACT.md section 8
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port...]")
    influx_url: str = Field("http://127.0.0.1:8086", description="InfluxDB base URL")
    influx_api: Literal["v1", "v2"] = Field(
        "v1", description="v1 (/write, /query) or v2 (/api/v2/write via influxdb-client)"
    )
    influx_db: str = Field("city", min_length=1, description="v1 database, or v2 bucket")
    influx_org: str | None = Field(None, description="v2 organisation")
    influx_token: SecretStr | None = Field(None, description="v1 token/password or v2 API token; never logged")
    influx_token_file: Path | None = Field(
        None, description="file holding the InfluxDB token (instead of CITYSTREAM_INFLUX_TOKEN)"
    )
    registry: Path | None = Field(None, description="path of the registry YAML")
    data_dir: Path = Field(Path("./var"), description="the worker's local state")

    # topics
    source_partitions: int = Field(12, ge=1, le=10_000, description="partitions of a source topic the worker creates")
    topic_replication: int = Field(1, ge=1, le=32, description="replication factor of topics the worker creates")

    # Kafka security (every Kafka client of the project: see kafka_client_kwargs)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how clients talk to the brokers"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)"
    )
    kafka_sasl_username: str | None = Field(None, min_length=1, description="SASL user")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password; never logged")
    kafka_sasl_password_file: Path | None = Field(None, description="file holding the SASL password")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers (else the system's)")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(None, description="client private key (mutual TLS)")

    kafka_session_timeout_s: float = Field(
        30.0, ge=3, le=600, description="consumer group session timeout: a silent worker's partitions move after this"
    )
    kafka_rebalance_timeout_s: float = Field(
        30.0, ge=1, le=600, description="how long a rebalance waits for workers to rejoin"
    )

    # validation (schemas/CONTRACT.md section 2)
    max_future_s: float = Field(300.0, ge=0, description="a reading's ts may lie this far ahead of the clock")
    max_age_s: float = Field(7 * 86_400.0, gt=0, description="a reading's ts may lie this far behind the clock")

    # event-time windows (schemas/CONTRACT.md section 3)
    window_short_s: int = Field(60, ge=1, le=3600, description="length of the short windows (the *_1m measurements)")
    window_long_s: int = Field(3600, ge=60, le=86_400, description="length of the long windows (environment_1h)")
    window_grace_s: float = Field(
        30.0, ge=0, le=3600, description="how long past its end a window waits for late readings before it is final"
    )
    max_lateness_s: float = Field(
        600.0, ge=0, le=7 * 86_400, description="how far behind the watermark a reading still revises an aggregate"
    )
    checkpoint_interval_s: float = Field(
        2.0, gt=0, le=300, description="how often windows are written, state saved and offsets committed"
    )

    # alert rules (schemas/CONTRACT.md section 6): the contract's thresholds unless overridden, as JSON, e.g.
    # CITYSTREAM_ALERT_THRESHOLDS='{"pm25_advisory_raise": 80, "station_offline_ms": 900000}'
    alert_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="overrides of the alert rules' thresholds (names of streams.rules.policy.AlertPolicy)",
    )
    # data-quality tests of environment readings (schemas/CONTRACT.md section 5.1): the defaults of
    # streams.core.qc unless overridden, as JSON, e.g.
    # CITYSTREAM_QC='{"pm25_ugm3": {"spike": 80, "high": 400}, "flat_suspect_min": 45}'
    qc: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "overrides of the data-quality thresholds: per measurement low, high, spike, rate_per_min, "
            "tolerance; and flat_suspect_min, flat_fail_min, max_gap_min"
        ),
    )

    # InfluxDB writes
    write_batch_size: int = Field(5_000, ge=1, le=1_000_000, description="points per InfluxDB write")
    write_interval_s: float = Field(0.25, gt=0, le=60, description="longest wait before buffered points are written")
    max_pending_points: int = Field(200_000, ge=1_000, description="buffered points at which consuming pauses")
    write_timeout_s: float = Field(10.0, gt=0, description="timeout of one InfluxDB write request")

    # process
    app_id: str = Field("citystream", pattern=r"^[A-Za-z0-9._-]+$", description="Kafka consumer group and Faust app id")
    web_port: int = Field(6066, ge=0, le=65535, description="HTTP port of the worker (metrics and health)")
    web_host: str = Field("127.0.0.1", description="address the worker's HTTP port binds to")
    startup_timeout_s: float = Field(60.0, gt=0, description="how long to wait for Kafka and InfluxDB at start")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field("text", description="text, or json: one JSON object per line")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers or not all(_HOST_PORT.match(s) for s in servers):
            raise ValueError("expected host:port[,host:port...], e.g. 127.0.0.1:9092")
        return ",".join(servers)

    @field_validator("influx_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http:// or https:// URL, e.g. http://127.0.0.1:8086")
        if "@" in value.split("://", 1)[1].split("/", 1)[0]:
            # credentials in a URL end up in log lines; the token has its own, secret, settings
            raise ValueError(
                "must not hold a user or password: use CITYSTREAM_INFLUX_TOKEN or CITYSTREAM_INFLUX_TOKEN_FILE"
            )
        return value.rstrip("/")

    @field_validator("registry")
    @classmethod
    def _registry_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no registry file at {value}")
        return value

    @field_validator(
        "influx_token_file",
        "kafka_sasl_password_file",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
    )
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no file at {value}")
        return value

    @model_validator(mode="after")
    def _read_secret_files(self) -> Settings:
        """A ``*_FILE`` setting (a Kubernetes or Docker secret) stands for its variable; both at once is an error."""
        for name in ("influx_token", "kafka_sasl_password"):
            path: Path | None = getattr(self, f"{name}_file")
            if path is None:
                continue
            variable = ENV_PREFIX + name.upper()
            if getattr(self, name) is not None:
                raise ValueError(f"set {variable} or {variable}_FILE, not both")
            secret = _read_secret(path, f"{variable}_FILE")
            object.__setattr__(self, name, SecretStr(secret))  # the model is frozen once built
        return self

    @model_validator(mode="after")
    def _kafka_security_fits(self) -> Settings:
        protocol = self.kafka_security_protocol
        sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
        tls = protocol in ("SSL", "SASL_SSL")
        where = f"CITYSTREAM_KAFKA_SECURITY_PROTOCOL={protocol}"
        if sasl:
            missing = [
                ENV_PREFIX + name.upper()
                for name, value in (
                    ("kafka_sasl_username", self.kafka_sasl_username),
                    ("kafka_sasl_password", self.kafka_sasl_password),
                )
                if value is None
            ]
            if missing:
                raise ValueError(f"{where} needs {' and '.join(missing)} (or CITYSTREAM_KAFKA_SASL_PASSWORD_FILE)")
        else:
            stray = [
                ENV_PREFIX + name.upper()
                for name in ("kafka_sasl_username", "kafka_sasl_password")
                if getattr(self, name) is not None
            ]
            if stray:
                raise ValueError(f"{' and '.join(stray)} set but {where} uses no SASL: use SASL_PLAINTEXT or SASL_SSL")
        files = {
            ENV_PREFIX + name.upper(): getattr(self, name)
            for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
        }
        if not tls:
            stray = [variable for variable, path in files.items() if path is not None]
            if stray:
                raise ValueError(f"{' and '.join(stray)} set but {where} uses no TLS: use SSL or SASL_SSL")
            return self
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError("CITYSTREAM_KAFKA_SSL_KEYFILE needs CITYSTREAM_KAFKA_SSL_CERTFILE (its certificate)")
        kafka_ssl_context(self)  # unreadable certificates stop the worker now, with the variable to check
        return self

    @model_validator(mode="after")
    def _v2_needs_org_and_token(self) -> Settings:
        if self.influx_api == "v2":
            missing = [
                ENV_PREFIX + name.upper()
                for name, value in (("influx_org", self.influx_org), ("influx_token", self.influx_token))
                if not value
            ]
            if missing:
                raise ValueError(f"CITYSTREAM_INFLUX_API=v2 needs {' and '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _windows_fit(self) -> Settings:
        if self.window_long_s % self.window_short_s:
            raise ValueError("CITYSTREAM_WINDOW_LONG_S must be a multiple of CITYSTREAM_WINDOW_SHORT_S")
        if self.max_lateness_s < self.window_grace_s:
            raise ValueError("CITYSTREAM_MAX_LATENESS_S must be at least CITYSTREAM_WINDOW_GRACE_S")
        return self

    @field_validator("alert_thresholds")
    @classmethod
    def _known_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        from streams.rules.policy import AlertPolicy

        known = set(AlertPolicy.__dataclass_fields__)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown threshold {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            AlertPolicy(**value)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("qc")
    @classmethod
    def _known_qc(cls, value: dict[str, Any]) -> dict[str, Any]:
        qc_policy(value)  # refuses unknown names and impossible values
        return value

    def qc_policy(self) -> QcPolicy:
        return qc_policy(self.qc)

    def alert_policy(self) -> AlertPolicy:
        from streams.rules.policy import AlertPolicy

        fields = AlertPolicy.__dataclass_fields__
        return AlertPolicy(
            **{  # type: ignore[arg-type]
                name: int(value) if fields[name].type in ("int", int) else value
                for name, value in self.alert_thresholds.items()
            }
        )

    @property
    def bootstrap_servers(self) -> list[str]:
        return self.kafka_bootstrap.split(",")


class BridgeSettings(Settings):
    """The MQTT bridge's settings (``citystream bridge mqtt``, schemas/CONTRACT.md section 9): the
    worker's (Kafka, registry, web port, logging) and the MQTT broker's."""

    mqtt_url: str = Field(
        "mqtt://127.0.0.1:1883", description="MQTT broker: mqtt://host[:port], or mqtts://host[:port] for TLS"
    )
    mqtt_username: str | None = Field(None, min_length=1, description="MQTT user")
    mqtt_password: SecretStr | None = Field(None, description="MQTT password; never logged")
    mqtt_password_file: Path | None = Field(None, description="file holding the MQTT password")
    mqtt_ssl_cafile: Path | None = Field(None, description="CA bundle to verify an mqtts:// broker (else the system's)")
    mqtt_topics: str = Field(
        "",
        description="comma-separated FORMAT:FILTER subscriptions (FORMAT chirpstack, tts, contract-parking, "
        "contract-env, contract-taxi); empty: ChirpStack's and The Things Stack's uplink topics",
    )
    mqtt_client_id: str = Field(
        "citystream-bridge",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="MQTT client id; its persistent session holds the uplinks while the bridge is away",
    )
    mqtt_share_group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="subscribe as $share/<group>/<filter>: the bridges of one group share the uplinks",
    )

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        if not re.match(r"^mqtts?://[^/\s@]+/?$", value):
            if "@" in value:
                # credentials in a URL end up in log lines; the password has its own, secret, settings
                raise ValueError("must not hold a user or password: use CITYSTREAM_MQTT_USERNAME and _PASSWORD")
            raise ValueError("expected mqtt://host[:port] or mqtts://host[:port], e.g. mqtt://127.0.0.1:1883")
        mqtt_address(value)
        return value.rstrip("/")

    @field_validator("mqtt_topics")
    @classmethod
    def _mqtt_topics(cls, value: str) -> str:
        from streams.core.uplinks import parse_topics

        parse_topics(value)
        return value

    @field_validator("mqtt_password_file", "mqtt_ssl_cafile")
    @classmethod
    def _mqtt_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no file at {value}")
        return value

    @model_validator(mode="after")
    def _read_mqtt_password_file(self) -> BridgeSettings:
        if self.mqtt_password_file is not None:
            variable = ENV_PREFIX + "MQTT_PASSWORD"
            if self.mqtt_password is not None:
                raise ValueError(f"set {variable} or {variable}_FILE, not both")
            object.__setattr__(
                self, "mqtt_password", SecretStr(_read_secret(self.mqtt_password_file, f"{variable}_FILE"))
            )
        return self

    @property
    def mqtt_tls(self) -> bool:
        return self.mqtt_url.startswith("mqtts://")

    @property
    def mqtt_host_port(self) -> tuple[str, int]:
        return mqtt_address(self.mqtt_url)

    def mqtt_subscriptions(self) -> tuple[TopicSpec, ...]:
        """What ``CITYSTREAM_MQTT_TOPICS`` asks for (ChirpStack's and The Things Stack's uplinks if empty)."""
        from streams.core.uplinks import parse_topics

        return parse_topics(self.mqtt_topics)


def mqtt_address(url: str) -> tuple[str, int]:
    """Host and port of an ``mqtt://`` (default port 1883) or ``mqtts://`` (8883) URL; ValueError if none."""
    scheme, _, rest = url.partition("://")
    netloc = rest.rstrip("/")
    default = 8883 if scheme == "mqtts" else 1883
    if netloc.startswith("["):  # [IPv6]:port
        host, _, tail = netloc[1:].partition("]")
        port_text = tail.removeprefix(":") if tail.startswith(":") else ""
        if tail and not tail.startswith(":"):
            raise ValueError(f"cannot read the host of {url}")
    elif netloc.count(":") == 1:
        host, _, port_text = netloc.partition(":")
    else:
        host, port_text = netloc, ""
    if not host:
        raise ValueError(f"{url} names no host")
    if not port_text:
        return host, default
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"the port of {url} is not a number from 1 to 65535")
    return host, int(port_text)


def _read_secret(path: Path, variable: str) -> str:
    """A secret file's text without its trailing line break; the message of an error never holds the text."""
    try:
        secret = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ValueError(f"{variable}: cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{variable}: {path} is not UTF-8 text") from None
    secret = secret.rstrip("\r\n")
    if not secret:
        raise ValueError(f"{variable}: {path} is empty")
    return secret


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of the Kafka clients: the CA bundle (else the system's) and the client certificate.

    As :func:`aiokafka.helpers.create_ssl_context` builds it (hostnames checked), with errors that name
    the variable whose file failed.
    """
    cafile = settings.kafka_ssl_cafile
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"CITYSTREAM_KAFKA_SSL_CAFILE: cannot load CA certificates from {cafile}: {exc}") from None
    if settings.kafka_ssl_certfile is not None:
        try:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                "CITYSTREAM_KAFKA_SSL_CERTFILE, CITYSTREAM_KAFKA_SSL_KEYFILE: cannot load the client certificate "
                f"{settings.kafka_ssl_certfile} and key {settings.kafka_ssl_keyfile or '(in the certificate file)'}: "
                f"{exc}"
            ) from None
    return context


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for every aiokafka client (consumer, producer, admin) of the project.

    ``AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, **kafka_client_kwargs(settings))``.
    The bootstrap servers are not included. The SASL password is in the result: never log it.
    """
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        assert settings.kafka_sasl_password is not None  # the settings check it
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = kafka_ssl_context(settings)
    return kwargs


def prepare_data_dir(path: Path) -> None:
    """Create the worker's data directory if missing and check that files can be written in it.

    Raise :class:`ConfigError` (one line naming ``CITYSTREAM_DATA_DIR``) if it cannot be used.
    """
    variable = f"{ENV_PREFIX}DATA_DIR"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # exist_ok covers directories only
        raise ConfigError(f"{variable}: {path} is a file, not a directory") from None
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot create {path} ({exc.strerror or exc})") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot write in {path} ({exc.strerror or exc})") from None


def check_web_port(host: str, port: int) -> None:
    """Check that the worker's web server can listen on ``host:port``, as aiohttp binds it later.

    Each address of ``host`` is bound with SO_REUSEADDR (IPv6 only on IPv6 sockets), put to listen
    and closed. Raise :class:`ConfigError` (one line naming the variables) if that fails.
    Port 0 ("any port") is refused too: Faust's web server would stop on it with a traceback.
    """
    host_variable, port_variable = f"{ENV_PREFIX}WEB_HOST", f"{ENV_PREFIX}WEB_PORT"
    if port == 0:
        raise ConfigError(
            f"{port_variable}: 0 (any port) is not supported by the worker's web server; "
            "choose a free port from 1 to 65535"
        )
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{host_variable}: cannot resolve {host} ({reason})") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # a family this machine lacks: the server skips it too
                continue
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                sock.listen()
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(
                        f"{port_variable}: port {port} on {host} ({host_variable}) is already in use "
                        "by another process; choose a free port"
                    ) from None
                where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                raise ConfigError(
                    f"{host_variable}, {port_variable}: cannot listen on {where} ({exc.strerror or exc}); "
                    "use an address of this machine and a free port"
                ) from None
    finally:
        for sock in sockets:
            sock.close()


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, `.env` and ``overrides``; raise ConfigError if wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None


def load_bridge_settings(**overrides: object) -> BridgeSettings:
    """The MQTT bridge's settings, as :func:`load_settings` builds the worker's."""
    try:
        return BridgeSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    lines = ["invalid settings:"]
    for error in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        # a check of several settings at once names its variables in its message
        lines.append(f"  {ENV_PREFIX}{name.upper()}: {message}" if name else f"  {message}")
    return "\n".join(lines)


QC_DURATIONS = {"flat_suspect_min": "flat_suspect_ms", "flat_fail_min": "flat_fail_ms", "max_gap_min": "max_gap_ms"}


def qc_policy(overrides: Mapping[str, Any]) -> QcPolicy:
    """The data-quality thresholds with ``CITYSTREAM_QC``'s overrides; ValueError names what is wrong."""
    from streams.core.qc import DEFAULTS, Limits, QcPolicy

    limits = dict(DEFAULTS)
    durations: dict[str, int] = {}
    for name, value in overrides.items():
        if name in QC_DURATIONS:
            if not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number of minutes")
            durations[QC_DURATIONS[name]] = int(value * 60_000)
        elif name in limits:
            if not isinstance(value, Mapping):
                raise ValueError(f'{name}: expected an object such as {{"spike": 80}}')
            unknown = sorted(set(value) - set(Limits.__dataclass_fields__))
            if unknown:
                raise ValueError(
                    f"{name}: unknown {', '.join(unknown)}; known: low, high, spike, rate_per_min, tolerance"
                )
            merged = Limits(**{**asdict(limits[name]), **{k: float(v) for k, v in value.items()}})
            if merged.low > merged.high or min(merged.spike, merged.rate_per_min) <= 0 or merged.tolerance < 0:
                raise ValueError(f"{name}: needs low <= high, spike and rate_per_min > 0, tolerance >= 0")
            limits[name] = merged
        else:
            known = ", ".join([*sorted(DEFAULTS), *QC_DURATIONS])
            raise ValueError(f"unknown name {name}; known: {known}")
    policy = QcPolicy(limits=limits, **durations)
    if policy.flat_suspect_ms > policy.flat_fail_ms:
        raise ValueError("flat_suspect_min must not exceed flat_fail_min")
    return policy
