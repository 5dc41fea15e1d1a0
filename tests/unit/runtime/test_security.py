"""Kafka SASL/TLS and secret settings, the aiokafka and Faust forms of them, and secrets kept out of logs."""

from __future__ import annotations

import io
import json
import logging
import os
import ssl
import subprocess
from pathlib import Path

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.runtime.app import broker_credentials
from streams.runtime.logs import REDACTED, JsonFormatter, Redactor, RedactSecrets, logging_config, secret_values
from streams.settings import ConfigError, kafka_client_kwargs, load_settings

PASSWORD = "Sasl-Pa55word-7f3a"
TOKEN = "influx-token-91c2e"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("CITYSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key (PEM), made by openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "client.pem", folder / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=citystream-test",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def sasl(monkeypatch: pytest.MonkeyPatch, protocol: str = "SASL_PLAINTEXT", **extra: str) -> None:
    monkeypatch.setenv("CITYSTREAM_KAFKA_SECURITY_PROTOCOL", protocol)
    for name, value in extra.items():
        monkeypatch.setenv(f"CITYSTREAM_{name.upper()}", value)


def config_error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return str(info.value)


def test_defaults_are_plaintext_without_secrets() -> None:
    settings = load_settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_sasl_mechanism == "PLAIN"
    assert settings.kafka_sasl_username is None and settings.kafka_sasl_password is None
    assert settings.log_format == "text"
    assert kafka_client_kwargs(settings) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(settings) is None


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"CITYSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "CITYSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs CITYSTREAM_KAFKA_SASL_USERNAME and "
            "CITYSTREAM_KAFKA_SASL_PASSWORD",
        ),
        (
            {"CITYSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "CITYSTREAM_KAFKA_SASL_USERNAME": "city"},
            "CITYSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs CITYSTREAM_KAFKA_SASL_PASSWORD",
        ),
        (
            {"CITYSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CITYSTREAM_KAFKA_SASL_PASSWORD": PASSWORD},
            "needs CITYSTREAM_KAFKA_SASL_USERNAME",
        ),
        (
            {"CITYSTREAM_KAFKA_SASL_USERNAME": "city", "CITYSTREAM_KAFKA_SASL_PASSWORD": PASSWORD},
            "CITYSTREAM_KAFKA_SASL_USERNAME and CITYSTREAM_KAFKA_SASL_PASSWORD set but "
            "CITYSTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no SASL",
        ),
        ({"CITYSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "CITYSTREAM_KAFKA_SECURITY_PROTOCOL: Input should be"),
        ({"CITYSTREAM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "CITYSTREAM_KAFKA_SASL_MECHANISM: Input should be"),
        ({"CITYSTREAM_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"}, "CITYSTREAM_KAFKA_SASL_PASSWORD_FILE: no file at"),
        ({"CITYSTREAM_INFLUX_TOKEN_FILE": "/nonexistent/token"}, "CITYSTREAM_INFLUX_TOKEN_FILE: no file at"),
        ({"CITYSTREAM_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "CITYSTREAM_KAFKA_SSL_CAFILE: no file at"),
        ({"CITYSTREAM_KAFKA_SSL_CERTFILE": "/nonexistent/c.pem"}, "CITYSTREAM_KAFKA_SSL_CERTFILE: no file at"),
        ({"CITYSTREAM_KAFKA_SSL_KEYFILE": "/nonexistent/k.pem"}, "CITYSTREAM_KAFKA_SSL_KEYFILE: no file at"),
        ({"CITYSTREAM_LOG_FORMAT": "xml"}, "CITYSTREAM_LOG_FORMAT: Input should be 'text' or 'json'"),
        (
            {"CITYSTREAM_INFLUX_URL": f"https://city:{PASSWORD}@influx.example.org:8086"},
            "CITYSTREAM_INFLUX_URL: must not hold a user or password",
        ),
    ],
)
def test_invalid_security_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    message = config_error(monkeypatch, **variables)
    assert expected in message
    assert PASSWORD not in message


def test_tls_files_without_tls_and_a_key_without_its_certificate(
    monkeypatch: pytest.MonkeyPatch, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    message = config_error(monkeypatch, CITYSTREAM_KAFKA_SSL_CAFILE=str(cert))
    assert "CITYSTREAM_KAFKA_SSL_CAFILE set but CITYSTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no TLS" in message
    message = config_error(monkeypatch, CITYSTREAM_KAFKA_SECURITY_PROTOCOL="SSL", CITYSTREAM_KAFKA_SSL_KEYFILE=str(key))
    assert "CITYSTREAM_KAFKA_SSL_KEYFILE needs CITYSTREAM_KAFKA_SSL_CERTFILE" in message


def test_unreadable_tls_files_name_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    message = config_error(
        monkeypatch, CITYSTREAM_KAFKA_SECURITY_PROTOCOL="SSL", CITYSTREAM_KAFKA_SSL_CAFILE=str(not_pem)
    )
    assert "CITYSTREAM_KAFKA_SSL_CAFILE: cannot load CA certificates" in message
    monkeypatch.delenv("CITYSTREAM_KAFKA_SSL_CAFILE")
    message = config_error(monkeypatch, CITYSTREAM_KAFKA_SSL_CERTFILE=str(not_pem))
    assert "CITYSTREAM_KAFKA_SSL_CERTFILE, CITYSTREAM_KAFKA_SSL_KEYFILE: cannot load the client certificate" in message


def test_secret_files_are_read_without_the_trailing_newline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "token").write_text(TOKEN + "\r\n")
    sasl(monkeypatch, kafka_sasl_username="city", kafka_sasl_password_file=str(tmp_path / "pw"))
    monkeypatch.setenv("CITYSTREAM_INFLUX_TOKEN_FILE", str(tmp_path / "token"))
    settings = load_settings()
    assert settings.kafka_sasl_password is not None and settings.kafka_sasl_password.get_secret_value() == PASSWORD
    assert settings.influx_token is not None and settings.influx_token.get_secret_value() == TOKEN
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)


def test_token_file_satisfies_the_v2_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    monkeypatch.setenv("CITYSTREAM_INFLUX_API", "v2")
    monkeypatch.setenv("CITYSTREAM_INFLUX_ORG", "daegu")
    monkeypatch.setenv("CITYSTREAM_INFLUX_TOKEN_FILE", str(tmp_path / "token"))
    settings = load_settings()
    assert settings.influx_token is not None and settings.influx_token.get_secret_value() == TOKEN


@pytest.mark.parametrize("content", ["", "\n"])
def test_an_empty_secret_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str) -> None:
    (tmp_path / "token").write_text(content)
    message = config_error(monkeypatch, CITYSTREAM_INFLUX_TOKEN_FILE=str(tmp_path / "token"))
    assert "CITYSTREAM_INFLUX_TOKEN_FILE" in message and "is empty" in message


def test_a_secret_and_its_file_at_once_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "pw").write_text(PASSWORD)
    message = config_error(
        monkeypatch, CITYSTREAM_INFLUX_TOKEN=TOKEN, CITYSTREAM_INFLUX_TOKEN_FILE=str(tmp_path / "token")
    )
    assert "set CITYSTREAM_INFLUX_TOKEN or CITYSTREAM_INFLUX_TOKEN_FILE, not both" in message
    assert TOKEN not in message
    monkeypatch.delenv("CITYSTREAM_INFLUX_TOKEN")
    monkeypatch.delenv("CITYSTREAM_INFLUX_TOKEN_FILE")
    sasl(monkeypatch, kafka_sasl_username="city", kafka_sasl_password=PASSWORD)
    message = config_error(monkeypatch, CITYSTREAM_KAFKA_SASL_PASSWORD_FILE=str(tmp_path / "pw"))
    assert "set CITYSTREAM_KAFKA_SASL_PASSWORD or CITYSTREAM_KAFKA_SASL_PASSWORD_FILE, not both" in message
    assert PASSWORD not in message


def test_no_config_error_shows_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every failing combination with the secrets set: the message never holds them."""
    monkeypatch.setenv("CITYSTREAM_INFLUX_TOKEN", TOKEN)
    monkeypatch.setenv("CITYSTREAM_KAFKA_SASL_PASSWORD", PASSWORD)
    for variables in (
        {},  # a password without SASL
        {"CITYSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},  # no username
        {"CITYSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "CITYSTREAM_KAFKA_SASL_MECHANISM": PASSWORD},
        {"CITYSTREAM_INFLUX_API": "v2", "CITYSTREAM_INFLUX_URL": TOKEN},
        {"CITYSTREAM_SOURCE_PARTITIONS": TOKEN, "CITYSTREAM_KAFKA_BOOTSTRAP": PASSWORD},
    ):
        message = config_error(monkeypatch, **variables)
        assert message.startswith("invalid settings:")
        assert PASSWORD not in message and TOKEN not in message, message


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_kwargs_and_faust_credentials(monkeypatch: pytest.MonkeyPatch, mechanism: str) -> None:
    sasl(monkeypatch, kafka_sasl_mechanism=mechanism, kafka_sasl_username="city", kafka_sasl_password=PASSWORD)
    settings = load_settings()
    expected = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "city",
        "sasl_plain_password": PASSWORD,
    }
    assert kafka_client_kwargs(settings) == expected
    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    # what Faust hands to each of its aiokafka clients: the same as ours
    assert credentials_to_aiokafka_auth(credentials) == {**expected, "ssl_context": None}
    assert PASSWORD not in repr(credentials)


def test_sasl_ssl_kwargs_carry_a_verifying_context(
    monkeypatch: pytest.MonkeyPatch, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    sasl(
        monkeypatch,
        "SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="city",
        kafka_sasl_password=PASSWORD,
        kafka_ssl_cafile=str(cert),
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
    )
    settings = load_settings()
    kwargs = kafka_client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any(ca.get("subject") == ((("commonName", "citystream-test"),),) for ca in context.get_ca_certs())
    auth = credentials_to_aiokafka_auth(broker_credentials(settings))
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_ssl_kwargs_and_faust_credentials(monkeypatch: pytest.MonkeyPatch, certificate: tuple[Path, Path]) -> None:
    cert, _ = certificate
    sasl(monkeypatch, "SSL", kafka_ssl_cafile=str(cert))
    settings = load_settings()
    kwargs = kafka_client_kwargs(settings)
    assert set(kwargs) == {"security_protocol", "ssl_context"} and kwargs["security_protocol"] == "SSL"
    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"


def test_redactor_hides_every_printed_form_of_a_secret() -> None:
    secret = "pä55:wörd/+x"
    redact = Redactor([secret])
    for text in (
        f"token {secret}",
        f"request {secret.encode()!r}",  # a bytes repr, as aiokafka logs its SASL requests at debug level
        "url https://user:p%C3%A455%3Aw%C3%B6rd%2F%2Bx@influx",
        f"repr {secret!r}",
    ):
        redacted = redact(text)
        assert REDACTED in redacted and "55" not in redacted, redacted
    assert redact("nothing here") == "nothing here"
    assert Redactor(["abc"]).forms == []  # too short to search for


def _handler(formatter: logging.Formatter, secrets: list[str]) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets(secrets))
    logger = logging.getLogger(f"citystream.test.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_json_lines_with_exception_text_and_no_secret() -> None:
    logger, stream = _handler(JsonFormatter(), [TOKEN])
    logger.info("written %d points with %s", 3, TOKEN)
    try:
        raise RuntimeError(f"bad token {TOKEN}")
    except RuntimeError:
        logger.exception("write failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["level"] == "INFO" and first["message"] == f"written 3 points with {REDACTED}"
    assert first["time"].endswith("Z") and first["logger"].startswith("citystream.test")
    assert second["level"] == "ERROR" and "RuntimeError: bad token" in second["exception"]
    assert TOKEN not in stream.getvalue()


def test_text_lines_are_redacted_too() -> None:
    logger, stream = _handler(logging.Formatter("%(levelname)s %(message)s"), [PASSWORD])
    logger.debug("Request 7: SaslAuthenticateRequest(auth_bytes=%r)", b"\x00city\x00" + PASSWORD.encode())
    assert PASSWORD not in stream.getvalue() and REDACTED in stream.getvalue()


def test_logging_config_carries_the_secrets_to_the_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    sasl(monkeypatch, kafka_sasl_username="city", kafka_sasl_password=PASSWORD)
    monkeypatch.setenv("CITYSTREAM_INFLUX_TOKEN", TOKEN)
    monkeypatch.setenv("CITYSTREAM_LOG_FORMAT", "json")
    settings = load_settings()
    assert sorted(secret_values(settings)) == sorted([PASSWORD, TOKEN])
    config = logging_config(settings)
    assert config["filters"]["redact"]["secrets"] == secret_values(settings)
    assert config["formatters"]["citystream"] == {"()": JsonFormatter}
    assert config["handlers"]["default"]["filters"] == ["redact"]


def test_a_url_is_shown_without_its_credentials() -> None:
    from streams.clients.influx import display_url

    assert display_url(f"https://city:{PASSWORD}@influx.example.org:8086/x") == "https://influx.example.org:8086/x"
    assert display_url("http://127.0.0.1:8086") == "http://127.0.0.1:8086"
