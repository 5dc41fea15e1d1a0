"""The worker's settings (contract section 8): one object, built once from the environment and `.env`.

Every setting is read from ``CITYSTREAM_<NAME>``. A bad value stops the worker with
:class:`ConfigError`, whose message names the variable and says what to fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from streams.alerts import AlertPolicy

ENV_PREFIX = "CITYSTREAM_"

_HOST_PORT = re.compile(r"^[A-Za-z0-9._\-\[\]:]+:\d{1,5}$")


class ConfigError(Exception):
    """A setting is missing or wrong; the message says which variable and what to fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # contract section 8
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port...]")
    influx_url: str = Field("http://127.0.0.1:8086", description="InfluxDB base URL")
    influx_api: Literal["v1", "v2"] = Field(
        "v1", description="v1 (/write, /query) or v2 (/api/v2/write via influxdb-client)"
    )
    influx_db: str = Field("city", min_length=1, description="v1 database, or v2 bucket")
    influx_org: str | None = Field(None, description="v2 organisation")
    influx_token: SecretStr | None = Field(None, description="v1 token/password or v2 API token; never logged")
    registry: Path | None = Field(None, description="path of the registry YAML")
    data_dir: Path = Field(Path("./var"), description="the worker's local state")

    # topics
    source_partitions: int = Field(12, ge=1, le=10_000, description="partitions of a source topic the worker creates")
    topic_replication: int = Field(1, ge=1, le=32, description="replication factor of topics the worker creates")

    kafka_session_timeout_s: float = Field(
        30.0, ge=3, le=600, description="consumer group session timeout: a silent worker's partitions move after this"
    )
    kafka_rebalance_timeout_s: float = Field(
        30.0, ge=1, le=600, description="how long a rebalance waits for workers to rejoin"
    )

    # validation (contract section 2)
    max_future_s: float = Field(300.0, ge=0, description="a reading's ts may lie this far ahead of the clock")
    max_age_s: float = Field(7 * 86_400.0, gt=0, description="a reading's ts may lie this far behind the clock")

    # event-time windows (contract section 3)
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

    # alert rules (contract section 6): the contract's thresholds unless overridden, as JSON, e.g.
    # CITYSTREAM_ALERT_THRESHOLDS='{"pm25_advisory_raise": 80, "station_offline_ms": 900000}'
    alert_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="overrides of the alert rules' thresholds (names of streams.alerts.AlertPolicy)",
    )

    # InfluxDB writes
    write_batch_size: int = Field(5_000, ge=1, le=1_000_000, description="points per InfluxDB write")
    write_interval_s: float = Field(1.0, gt=0, le=60, description="longest wait before buffered points are written")
    max_pending_points: int = Field(200_000, ge=1_000, description="buffered points at which consuming pauses")
    write_timeout_s: float = Field(10.0, gt=0, description="timeout of one InfluxDB write request")

    # process
    app_id: str = Field("citystream", pattern=r"^[A-Za-z0-9._-]+$", description="Kafka consumer group and Faust app id")
    web_port: int = Field(6066, ge=0, le=65535, description="HTTP port of the worker (metrics and health)")
    web_host: str = Field("127.0.0.1", description="address the worker's HTTP port binds to")
    startup_timeout_s: float = Field(60.0, gt=0, description="how long to wait for Kafka and InfluxDB at start")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

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
        return value.rstrip("/")

    @field_validator("registry")
    @classmethod
    def _registry_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no registry file at {value}")
        return value

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
        from streams.alerts import AlertPolicy

        known = set(AlertPolicy.__dataclass_fields__)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown threshold {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            AlertPolicy(**value)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        return value

    def alert_policy(self) -> AlertPolicy:
        from streams.alerts import AlertPolicy

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


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, `.env` and ``overrides``; raise ConfigError if wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    lines = ["invalid settings:"]
    for error in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(part) for part in error["loc"])
        variable = ENV_PREFIX + name.upper() if name else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"  {variable}: {message}")
    return "\n".join(lines)
