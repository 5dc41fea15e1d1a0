"""The JSON Schema files of schemas/json/: generated from the models, and accepting what the models accept.

The models are the processor's own judges (a reading as ``streams/core/decode.py`` validates it: the
JSON decoded, then ``model_validate``; a dead letter or alert as a reader would: ``model_validate_json``
in strict mode). Every example of the tables below is judged by both. Where they necessarily differ,
the case is listed in DIFFERENCES with the reason, and each schema's description says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from schemas.alert import Alert
from schemas.batch import BATCH_MODELS, MAX_BATCH_READINGS
from schemas.deadletter import DeadLetter
from schemas.export import DRAFT_2020_12, ID_PREFIX, SOURCE_LIMITS, schema_files
from schemas.readings import READING_MODELS, SourceKind
from streams.core.decode import MAX_BATCH_READINGS as DECODE_MAX_BATCH
from streams.tools.jsonschemas import schemas_command
from streams.tools.simulate import SimulationOptions, generate_messages

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "schemas" / "json"
REGENERATE = "citystream schemas --out schemas/json"

NOW = 1795255200000  # 2026-11-21T10:00:00Z


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((CHECKED_IN / name).read_text(encoding="utf-8")))


def model_of(name: str) -> type[BaseModel]:
    return {file.name: file.model for file in schema_files()}[name]


def model_accepts(name: str, text: str) -> bool:
    model = model_of(name)
    try:
        if model in (DeadLetter, Alert):
            model.model_validate_json(text, strict=True)
        else:  # as the processor: JSON decoded first, then the strict model
            model.model_validate(orjson.loads(text))
    except ValidationError:
        return False
    return True


def schema_accepts(name: str, text: str) -> bool:
    return validator(name).is_valid(json.loads(text))


# --- the files are the models' ---------------------------------------------------------------------


def test_the_checked_in_schemas_are_the_models_schemas(tmp_path: Path) -> None:
    result = CliRunner().invoke(schemas_command, ["--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    generated = sorted(p.name for p in tmp_path.iterdir())
    checked_in = sorted(p.name for p in CHECKED_IN.iterdir())
    assert generated == checked_in, f"schemas/json/ holds other files than the command writes: run `{REGENERATE}`"
    stale = [
        name
        for name in generated
        if (tmp_path / name).read_text(encoding="utf-8") != (CHECKED_IN / name).read_text(encoding="utf-8")
    ]
    assert not stale, f"schemas/json/{', '.join(stale)} disagree with the models: run `{REGENERATE}` and commit"


def citystream(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.tools.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_command_is_registered_and_prints_the_files(tmp_path: Path) -> None:
    result = citystream("schemas", "--out", str(tmp_path / "new"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "new" / file.name) for file in schema_files()]
    assert "JSON Schema" in citystream("--help").stdout


def test_the_command_needs_a_folder() -> None:
    result = citystream("schemas")
    assert result.returncode == 2
    assert "--out" in result.stderr


@pytest.mark.parametrize("file", schema_files(), ids=lambda f: f.name)
def test_each_file_is_a_draft_2020_12_schema_with_an_id(file: Any) -> None:
    document = json.loads((CHECKED_IN / file.name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(document)
    assert document["$schema"] == DRAFT_2020_12
    assert document["$id"] == ID_PREFIX + file.name.removesuffix(".schema.json")
    assert document["description"]


def test_source_schemas_say_what_they_cannot_express() -> None:
    for file in schema_files():
        if "reading" in file.name or "batch" in file.name:
            assert SOURCE_LIMITS in json.loads((CHECKED_IN / file.name).read_text())["description"]


def test_one_batch_limit() -> None:
    assert MAX_BATCH_READINGS == DECODE_MAX_BATCH == 1000
    schema = json.loads((CHECKED_IN / "taxi-batch.schema.json").read_text())
    assert (schema["properties"]["batch"]["minItems"], schema["properties"]["batch"]["maxItems"]) == (1, 1000)


# --- the tables ------------------------------------------------------------------------------------

TAXI = {
    "device_id": "taxi-0042",
    "ts": "2026-11-21T19:00:00.250+09:00",
    "seq": 18231,
    "lat": 35.8714,
    "lon": 128.6014,
    "speed_kmh": 41.5,
    "heading_deg": 92.0,
    "event": "FCW",
    "headway_s": 0.8,
    "ttc_s": 1.9,
}
PARKING = {
    "device_id": "70b3d57ed005a1b2",
    "ts": NOW,
    "seq": 5531,
    "lot_id": "suseong-alpha-1",
    "spot_id": "A-017",
    "occupied": True,
    "kind": "change",
    "battery_v": 3.31,
    "rssi_dbm": -104.0,
    "snr_db": 7.5,
    "fw": "2.4.1",
}
ENV = {
    "device_id": "env-jung-03",
    "ts": "2026-11-21T10:00:00Z",
    "seq": 907,
    "district": "jung",
    "pm10_ugm3": 62.0,
    "pm25_ugm3": 38.7,
    "o3_ppm": 0.0455,
    "no2_ppm": 0.021,
    "co_ppm": 0.4,
    "temp_c": 6.5,
    "humidity_pct": 58,
    "noise_dba": 61.2,
}
DEAD_LETTER = {
    "source": {"topic": "city.env.v1", "partition": 5, "offset": 40961, "key": "env-suseong-01", "timestamp_ms": NOW},
    "index": 1,
    "reason": "schema",
    "errors": [{"loc": "pm25_ugm3", "msg": "Input should be greater than or equal to 0", "type": "greater_than_equal"}],
    "payload": '{"device_id":"env-suseong-01","ts":1795255200000,"seq":13,"pm25_ugm3":-3}',
    "payload_b64": None,
    "dead_lettered_at": "2026-11-21T10:00:30.000Z",
    "payload_truncated": False,
    "payload_bytes": None,
    "payload_sha256": None,
}
ALERT = {
    "alert_id": "air.pm25_advisory:env-seo-07:2026-11-21T23:00:00Z",
    "kind": "air.pm25_advisory",
    "status": "raised",
    "severity": "warning",
    "subject": {"type": "station", "id": "env-seo-07"},
    "window_start": "2026-11-21T23:00:00Z",
    "window_end": "2026-11-22T00:00:00Z",
    "value": 92.4,
    "threshold": 75.0,
    "message": "PM2.5 hourly mean 92.4 µg/m³ >= 75 for 2 consecutive hours at env-seo-07",
    "emitted_at": "2026-11-22T00:00:30.412Z",
}

ABSENT = object()


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    document = dict(base)
    for name, value in changes.items():
        if value is ABSENT:
            document.pop(name, None)
        else:
            document[name] = value
    return document


def minimal_env(**changes: Any) -> dict[str, Any]:
    return with_({"device_id": "env-1", "ts": NOW, "pm25_ugm3": 10.0}, **changes)


READING_CASES: list[tuple[str, Any, bool]] = [
    # (file, document, valid)
    ("taxi-reading.schema.json", TAXI, True),
    ("taxi-reading.schema.json", {"device_id": "t", "ts": NOW, "lat": 0, "lon": 0, "speed_kmh": 0}, True),
    ("taxi-reading.schema.json", with_(TAXI, lat=90, lon=-180, speed_kmh=300, heading_deg=359.999), True),
    ("taxi-reading.schema.json", with_(TAXI, heading_deg=None, headway_s=None, ttc_s=None, seq=None), True),
    ("taxi-reading.schema.json", with_(TAXI, device_id="A.b_c:d-9" * 7 + "x"), True),  # 64 characters
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-11-21t10:00:00z"), True),
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-11-21 10:00:00.123456789-23:59"), True),
    ("taxi-reading.schema.json", with_(TAXI, ts="2024-02-29T00:00:00Z"), True),
    ("taxi-reading.schema.json", with_(TAXI, ts=-1), True),
    ("taxi-reading.schema.json", with_(TAXI, event=ABSENT, fw="2.4.1", batch_id=7), True),
    ("taxi-reading.schema.json", with_(TAXI, lat=ABSENT), False),
    ("taxi-reading.schema.json", with_(TAXI, lat=None), False),
    ("taxi-reading.schema.json", with_(TAXI, speed_kmh="41.5"), False),
    ("taxi-reading.schema.json", with_(TAXI, speed_kmh=300.01), False),
    ("taxi-reading.schema.json", with_(TAXI, heading_deg=360), False),
    ("taxi-reading.schema.json", with_(TAXI, event="fcw"), False),
    ("taxi-reading.schema.json", with_(TAXI, event=None), False),
    ("taxi-reading.schema.json", with_(TAXI, headway_s=10.5), False),
    ("taxi-reading.schema.json", with_(TAXI, ttc_s=-0.1), False),
    ("taxi-reading.schema.json", with_(TAXI, device_id=""), False),
    ("taxi-reading.schema.json", with_(TAXI, device_id="x" * 65), False),
    ("taxi-reading.schema.json", with_(TAXI, device_id="taxi 42"), False),
    ("taxi-reading.schema.json", with_(TAXI, device_id="taxi/42"), False),
    ("taxi-reading.schema.json", with_(TAXI, device_id=42), False),
    ("taxi-reading.schema.json", with_(TAXI, seq=-1), False),
    ("taxi-reading.schema.json", with_(TAXI, seq="5"), False),
    ("taxi-reading.schema.json", with_(TAXI, seq=True), False),
    ("taxi-reading.schema.json", with_(TAXI, ts=ABSENT), False),
    ("taxi-reading.schema.json", with_(TAXI, ts=None), False),
    ("taxi-reading.schema.json", with_(TAXI, ts=True), False),
    ("taxi-reading.schema.json", with_(TAXI, ts=NOW + 0.5), False),
    ("taxi-reading.schema.json", with_(TAXI, ts=str(NOW)), False),
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-11-21T19:00:00"), False),
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-11-21"), False),
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-11-21T19:00Z"), False),
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-13-01T00:00:00Z"), False),
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-11-32T00:00:00Z"), False),
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-11-21T24:00:00Z"), False),
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-11-21T23:60:00Z"), False),
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-12-31T23:59:60Z"), False),  # no leap seconds
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-11-21T10:00:00+24:00"), False),
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-11-21T10:00:00+09:60"), False),
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-11-21T10:00:00+0900"), False),
    ("taxi-reading.schema.json", with_(TAXI, ts="2026-11-21T10:00:00.1234567890Z"), False),
    ("taxi-reading.schema.json", with_(TAXI, ts="0000-01-01T00:00:00Z"), False),
    ("taxi-reading.schema.json", with_(TAXI, ts="\u0662\u0660\u0662\u0666-11-21T10:00:00Z"), False),
    ("taxi-reading.schema.json", [TAXI], False),
    ("taxi-reading.schema.json", "reading", False),
    ("parking-reading.schema.json", PARKING, True),
    ("parking-reading.schema.json", with_(PARKING, kind="heartbeat", occupied=False), True),
    ("parking-reading.schema.json", with_(PARKING, kind=ABSENT, battery_v=None, rssi_dbm=None, snr_db=None), True),
    ("parking-reading.schema.json", with_(PARKING, battery_v=0, rssi_dbm=-150, snr_db=30), True),
    ("parking-reading.schema.json", with_(PARKING, spot_id="S" * 32), True),
    ("parking-reading.schema.json", with_(PARKING, occupied=1), False),
    ("parking-reading.schema.json", with_(PARKING, occupied="true"), False),
    ("parking-reading.schema.json", with_(PARKING, occupied=None), False),
    ("parking-reading.schema.json", with_(PARKING, kind="status"), False),
    ("parking-reading.schema.json", with_(PARKING, kind=None), False),
    ("parking-reading.schema.json", with_(PARKING, spot_id="S" * 33), False),
    ("parking-reading.schema.json", with_(PARKING, lot_id=ABSENT), False),
    ("parking-reading.schema.json", with_(PARKING, lot_id="lot one"), False),
    ("parking-reading.schema.json", with_(PARKING, battery_v=5.01), False),
    ("parking-reading.schema.json", with_(PARKING, rssi_dbm=1), False),
    ("parking-reading.schema.json", with_(PARKING, snr_db=-30.5), False),
    ("environment-reading.schema.json", ENV, True),
    ("environment-reading.schema.json", minimal_env(), True),
    ("environment-reading.schema.json", minimal_env(pm25_ugm3=ABSENT, noise_dba=0), True),
    ("environment-reading.schema.json", minimal_env(pm10_ugm3=None, district="중구 (Jung-gu)"), True),
    ("environment-reading.schema.json", minimal_env(temp_c=-50, humidity_pct=100, lat=-90, lon=180), True),
    ("environment-reading.schema.json", minimal_env(pm25_ugm3=ABSENT), False),
    ("environment-reading.schema.json", minimal_env(pm25_ugm3=None), False),
    ("environment-reading.schema.json", minimal_env(pm25_ugm3=None, temp_c=None, fw=1.0), False),
    ("environment-reading.schema.json", minimal_env(pm25_ugm3=1000.5), False),
    ("environment-reading.schema.json", minimal_env(pm10_ugm3=-1), False),
    ("environment-reading.schema.json", minimal_env(o3_ppm=1.7), False),
    ("environment-reading.schema.json", minimal_env(humidity_pct=101), False),
    ("environment-reading.schema.json", minimal_env(temp_c="cold"), False),
    ("environment-reading.schema.json", minimal_env(district=""), False),
    ("environment-reading.schema.json", minimal_env(district="d" * 33), False),
    ("environment-reading.schema.json", minimal_env(lat=91), False),
]

BATCH_CASES: list[tuple[str, Any, bool]] = [
    ("taxi-batch.schema.json", {"batch": [TAXI]}, True),
    ("taxi-batch.schema.json", {"batch": [with_(TAXI, seq=n) for n in range(MAX_BATCH_READINGS)]}, True),
    ("taxi-batch.schema.json", {"batch": [TAXI], "gateway": "g-1"}, True),
    ("taxi-batch.schema.json", {"batch": []}, False),
    ("taxi-batch.schema.json", {"batch": [TAXI] * (MAX_BATCH_READINGS + 1)}, False),
    ("taxi-batch.schema.json", {"batch": TAXI}, False),
    ("taxi-batch.schema.json", {"batch": None}, False),
    ("taxi-batch.schema.json", {"readings": [TAXI]}, False),
    ("taxi-batch.schema.json", TAXI, False),
    ("taxi-batch.schema.json", {"batch": [TAXI, with_(TAXI, speed_kmh=-3)]}, False),
    ("taxi-batch.schema.json", {"batch": [TAXI, "oops"]}, False),
    ("taxi-batch.schema.json", {"batch": [PARKING]}, False),
    ("parking-batch.schema.json", {"batch": [PARKING, with_(PARKING, seq=5532, occupied=False)]}, True),
    ("parking-batch.schema.json", {"batch": [with_(PARKING, occupied=0)]}, False),
    ("environment-batch.schema.json", {"batch": [minimal_env(), ENV]}, True),
    ("environment-batch.schema.json", {"batch": [minimal_env(), minimal_env(pm25_ugm3=-3)]}, False),
    ("environment-batch.schema.json", {"batch": [minimal_env(pm25_ugm3=None)]}, False),
]

OUTPUT_CASES: list[tuple[str, Any, bool]] = [
    ("dead-letter.schema.json", DEAD_LETTER, True),
    (
        "dead-letter.schema.json",
        with_(
            DEAD_LETTER,
            source={"topic": "city.taxi.adas.v1", "partition": 0, "offset": 7, "key": None, "timestamp_ms": None},
            index=None,
            reason="not_utf8",
            errors=[{"loc": "", "msg": "not UTF-8", "type": "not_utf8"}],
            payload=None,
            payload_b64="/w==",
        ),
        True,
    ),
    ("dead-letter.schema.json", with_(DEAD_LETTER, payload_truncated=True, payload_bytes=3 << 20), True),
    ("dead-letter.schema.json", with_(DEAD_LETTER, payload_truncated=ABSENT, payload_sha256=ABSENT), True),
    ("dead-letter.schema.json", with_(DEAD_LETTER, reason="nope"), False),
    ("dead-letter.schema.json", with_(DEAD_LETTER, errors=ABSENT), False),
    ("dead-letter.schema.json", with_(DEAD_LETTER, index="1"), False),
    ("dead-letter.schema.json", with_(DEAD_LETTER, payload_truncated="false"), False),
    ("dead-letter.schema.json", with_(DEAD_LETTER, errors=[{"loc": "ts", "msg": "bad"}]), False),
    ("dead-letter.schema.json", with_(DEAD_LETTER, source={"topic": "t", "partition": "5", "offset": 1}), False),
    ("alert.schema.json", ALERT, True),
    ("alert.schema.json", with_(ALERT, status="cleared", value=31, threshold=35, extra="ignored"), True),
    ("alert.schema.json", with_(ALERT, subject={"type": "device", "id": "pk-1"}, severity="info"), True),
    ("alert.schema.json", with_(ALERT, status="open"), False),
    ("alert.schema.json", with_(ALERT, severity="high"), False),
    ("alert.schema.json", with_(ALERT, subject={"type": "district", "id": "jung"}), False),
    ("alert.schema.json", with_(ALERT, value="92.4"), False),
    ("alert.schema.json", with_(ALERT, alert_id=ABSENT), False),
]

# Where model and schema necessarily differ: (file, document, model accepts, schema accepts, why).
# Each reading and batch schema's description names the first two kinds (SOURCE_LIMITS).
DIFFERENCES: list[tuple[str, Any, bool, bool, str]] = [
    (
        "taxi-reading.schema.json",
        with_(TAXI, ts="2026-02-30T00:00:00Z"),
        False,
        True,
        "a pattern cannot know how many days a month has",
    ),
    (
        "environment-reading.schema.json",
        minimal_env(ts="2025-02-29T12:00:00+09:00"),
        False,
        True,
        "nor which years are leap years",
    ),
    (
        "taxi-reading.schema.json",
        with_(TAXI, seq=5.0),
        False,
        True,
        "JSON Schema's integer is any number without a fraction; the processor wants a JSON integer",
    ),
    (
        "parking-reading.schema.json",
        with_(PARKING, ts=float(NOW)),
        False,
        True,
        "the same for ts in epoch milliseconds",
    ),
    (
        "taxi-batch.schema.json",
        {"batch": [with_(TAXI, ts="2026-04-31T00:00:00Z")]},
        False,
        True,
        "a batch's elements are readings: the same differences",
    ),
    (
        "dead-letter.schema.json",
        with_(DEAD_LETTER, index=1.0),
        False,
        True,
        "the same for the integers of a dead letter",
    ),
    (
        "taxi-reading.schema.json",
        with_(TAXI, device_id="taxi-0042\n"),
        False,
        True,
        "Python's re (which the jsonschema package uses for `pattern`) lets `$` match before a final line "
        "feed; an ECMA-262 regular expression, the one JSON Schema names, does not, nor does the processor",
    ),
]


@pytest.mark.parametrize(
    ("name", "document", "valid"),
    READING_CASES + BATCH_CASES + OUTPUT_CASES,
    ids=lambda value: value if isinstance(value, str) and value.endswith(".json") else "",
)
def test_model_and_schema_agree(name: str, document: Any, valid: bool) -> None:
    text = json.dumps(document, ensure_ascii=False)
    assert model_accepts(name, text) is valid, f"the model of {name}: {text[:300]}"
    assert schema_accepts(name, text) is valid, f"{name}: {text[:300]}"


@pytest.mark.parametrize(("name", "document", "by_model", "by_schema", "why"), DIFFERENCES)
def test_where_model_and_schema_differ(name: str, document: Any, by_model: bool, by_schema: bool, why: str) -> None:
    text = json.dumps(document)
    assert (model_accepts(name, text), schema_accepts(name, text)) == (by_model, by_schema), why


def test_the_simulators_messages_are_judged_alike() -> None:
    """Valid and invalid messages of every kind, as the simulator sends them to the worker."""
    options = SimulationOptions(duration_s=5, rate=300, batch_share=0.3, batch_size=5, invalid_share=0.3)
    _, messages = generate_messages(options, start_ms=NOW, end_ms=NOW + 5_000, seed=3)
    kinds = {kind.topic: kind for kind in SourceKind}
    names = {file.model: file.name for file in schema_files()}
    judged = {True: 0, False: 0}
    for message in messages:
        try:
            document = orjson.loads(message.value)
        except orjson.JSONDecodeError:
            continue
        kind = kinds[message.topic]
        if not isinstance(document, dict):
            continue
        if "batch" in document:
            pairs = [(names[BATCH_MODELS[kind]], document)]
            if isinstance(document["batch"], list):
                pairs += [(names[READING_MODELS[kind]], element) for element in document["batch"]]
        else:
            pairs = [(names[READING_MODELS[kind]], document)]
        for name, part in pairs:
            text = json.dumps(part)
            verdict = model_accepts(name, text)
            assert schema_accepts(name, text) is verdict, f"{name}: model says {verdict} of {text[:300]}"
            judged[verdict] += 1
    assert judged[True] > 100 and judged[False] > 20, judged


# --- schemas/asyncapi.yaml refers to these files (the AsyncAPI parser checks it: tests/integration) -----

ASYNCAPI = ROOT / "schemas" / "asyncapi.yaml"


def asyncapi_messages() -> dict[str, Any]:
    document = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    messages: dict[str, Any] = document["components"]["messages"]
    return messages


def payload_files(message: dict[str, Any]) -> list[str]:
    payload = message["payload"]
    refs = [choice["$ref"] for choice in payload["oneOf"]] if "oneOf" in payload else [payload["$ref"]]
    assert all(ref.startswith("./json/") for ref in refs), refs
    return [ref.removeprefix("./json/") for ref in refs]


def test_the_asyncapi_payloads_are_the_schema_files() -> None:
    referenced = sorted(name for message in asyncapi_messages().values() for name in payload_files(message))
    assert referenced == sorted(file.name for file in schema_files())


def test_the_asyncapi_examples_are_valid_messages() -> None:
    examples = 0
    for message in asyncapi_messages().values():
        for example in message.get("examples", []):
            text = json.dumps(example["payload"])
            accepting = [name for name in payload_files(message) if schema_accepts(name, text)]
            assert len(accepting) == 1, f"{message['name']} example {example['name']}: oneOf matched {accepting}"
            assert model_accepts(accepting[0], text), f"{message['name']} example {example['name']}"
            examples += 1
    assert examples >= 4


def test_the_asyncapi_key_is_the_device_id() -> None:
    document = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    key = document["components"]["schemas"]["deviceKey"]
    device_id = validator("taxi-reading.schema.json").schema["properties"]["device_id"]
    assert {name: key[name] for name in ("minLength", "maxLength", "pattern")} == {
        name: device_id[name] for name in ("minLength", "maxLength", "pattern")
    }
