"""schemas/asyncapi.yaml checked by the AsyncAPI parser (@asyncapi/parser, run by tests/asyncapi/validate.mjs).

The parser validates the document against the AsyncAPI 3.0 specification and its bindings, and
resolves every $ref, the JSON Schema files of schemas/json/ included. Mutated copies must be refused,
so a validator that accepts anything fails here too. Needs Node.js and `npm ci --prefix tests/asyncapi`
(.ci/run does it); without them the test fails with that hint.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from schemas.readings import SOURCE_TOPICS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "schemas" / "asyncapi.yaml"
CHECKER = ROOT / "tests" / "asyncapi"
INSTALL_HINT = "run `npm ci --ignore-scripts --prefix tests/asyncapi` (Node.js 18 or newer; .ci/run does it)"


def validate(*files: Path) -> list[dict[str, Any]]:
    """One report per file from the AsyncAPI parser."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not installed (Debian: apt-get install nodejs npm); then {INSTALL_HINT}", pytrace=False)
    if not (CHECKER / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail(f"the AsyncAPI parser is not installed: {INSTALL_HINT}", pytrace=False)
    result = subprocess.run(
        [node, str(CHECKER / "validate.mjs"), *map(str, files)], capture_output=True, text=True, timeout=120
    )
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == len(files), f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.returncode == (0 if all(r["valid"] for r in reports) else 1), result.stderr
    return reports


def errors(report: dict[str, Any]) -> list[str]:
    return [f"{d['path']}: {d['message']}" for d in report["diagnostics"] if d["severity"] == "error"]


def test_the_document_is_valid_asyncapi_3() -> None:
    (report,) = validate(DOCUMENT)
    assert report["valid"], "\n".join(errors(report))
    assert not [d for d in report["diagnostics"] if d["severity"] == "warning"], report["diagnostics"]
    assert sorted(report["channels"].values()) == sorted(
        [*SOURCE_TOPICS.values(), "city.deadletter.v1", "city.alerts.v1"]
    )
    # the processor's point of view: it receives the readings, sends dead letters and alerts
    actions = {addresses[0]: action for action, addresses in report["operations"].values()}
    assert actions == {
        **dict.fromkeys(SOURCE_TOPICS.values(), "receive"),
        "city.deadletter.v1": "send",
        "city.alerts.v1": "send",
    }


MUTATIONS = {
    "an unknown action": ("action: receive", "action: consume"),
    "a payload file that does not exist": ("./json/taxi-batch.schema.json", "./json/taxi-batches.schema.json"),
    "an operation on a channel that does not exist": ("$ref: '#/channels/alerts'", "$ref: '#/channels/alert'"),
    "a Kafka binding field that does not exist": ("topic: city.env.v1", "topic: city.env.v1\n        partition: 3"),
    "a version that does not exist": ("asyncapi: 3.0.0", "asyncapi: 3.0.7"),
}


def test_mutated_copies_are_refused(tmp_path: Path) -> None:
    text = DOCUMENT.read_text(encoding="utf-8")
    copies = []
    for number, (what, (old, new)) in enumerate(MUTATIONS.items()):
        assert old in text, what
        folder = tmp_path / f"copy-{number}"
        shutil.copytree(ROOT / "schemas" / "json", folder / "json")
        (folder / "asyncapi.yaml").write_text(text.replace(old, new, 1), encoding="utf-8")
        copies.append(folder / "asyncapi.yaml")
    # the unchanged document copied the same way passes: the refusals are the mutations'
    shutil.copytree(ROOT / "schemas" / "json", tmp_path / "unchanged" / "json")
    shutil.copy(DOCUMENT, tmp_path / "unchanged" / "asyncapi.yaml")
    *mutated, unchanged = validate(*copies, tmp_path / "unchanged" / "asyncapi.yaml")
    assert unchanged["valid"], errors(unchanged)
    for what, report in zip(MUTATIONS, mutated, strict=True):
        assert not report["valid"] and errors(report), f"the parser accepted {what}"
