"""The worker's logging: text or one JSON object per line (``CITYSTREAM_LOG_FORMAT``), secrets redacted.

Every line of the worker, Faust's and the libraries' included, goes through one handler on the root
logger (standard error). Its filter replaces the values of the secret settings (the InfluxDB token,
the Kafka SASL password) wherever they would appear, in a message or in an exception's text: a
library that logs a request at debug level (aiokafka logs its SASL requests) cannot leak them.
"""

from __future__ import annotations

import logging
import logging.config
import sys
import urllib.parse
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson

from streams.settings import Settings

REDACTED = "**********"

# a secret shorter than this is not searched for in log lines (it would garble them everywhere)
MIN_SECRET_LENGTH = 4

TEXT_FORMAT = "[%(asctime)s] [%(process)s] [%(levelname)s] %(name)s: %(message)s"


def secret_values(settings: Settings) -> list[str]:
    """The values that must never appear in a log line or an error message."""
    values = [
        secret.get_secret_value()
        # the bridge's settings add the MQTT password
        for secret in (settings.influx_token, settings.kafka_sasl_password, getattr(settings, "mqtt_password", None))
        if secret is not None
    ]
    return [value for value in values if len(value) >= MIN_SECRET_LENGTH]


def _forms(secret: str) -> set[str]:
    """A secret as it may be printed: itself, inside a bytes repr, percent-encoded."""
    return {secret, repr(secret.encode("utf-8"))[2:-1], urllib.parse.quote(secret, safe=""), repr(secret)[1:-1]}


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets for form in _forms(secret) if len(form) >= MIN_SECRET_LENGTH}
        # longest first, so a form containing another is replaced whole
        self.forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self.forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text


class RedactSecrets(logging.Filter):
    """Rewrites a record whose message or exception text holds a secret."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redact = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redact.forms:
            return True
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, RFC 3339), level, logger, message, and exception text."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        document: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = record.stack_info
        return orjson.dumps(document, default=str).decode("utf-8")


def logging_config(settings: Settings) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of the worker (also handed to Faust's worker, which applies it)."""
    level = settings.log_level.upper()
    formatter: dict[str, Any] = {"()": JsonFormatter} if settings.log_format == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets, "secrets": secret_values(settings)}},
        "formatters": {"citystream": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "citystream",
                "filters": ["redact"],
                "level": level,
            }
        },
        "root": {"level": level, "handlers": ["default"]},
    }


def configure_logging(settings: Settings) -> None:
    """Apply :func:`logging_config` now (Faust applies it again when its worker starts)."""
    logging.config.dictConfig(logging_config(settings))
    logging.captureWarnings(True)
    log = logging.getLogger("citystream")

    def log_uncaught(kind: type[BaseException], exc: BaseException, traceback: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, traceback)
            return
        log.critical("uncaught exception", exc_info=(kind, exc, traceback))

    sys.excepthook = log_uncaught
