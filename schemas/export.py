"""JSON Schema (draft 2020-12) documents of the wire models, one file each (``schemas/json/``).

The files are generated from the pydantic models by ``citystream schemas --out DIR``; a unit test
regenerates them and fails when a model and its checked-in file disagree. Each document carries
``$schema`` and ``$id``, and its description says what the schema cannot express and the
processor still checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from schemas.alert import Alert
from schemas.batch import BATCH_MODELS, MAX_BATCH_READINGS
from schemas.deadletter import DeadLetter
from schemas.readings import READING_MODELS, SourceKind

DRAFT_2020_12: Final = "https://json-schema.org/draft/2020-12/schema"
ID_PREFIX: Final = "urn:citystream:schema:"

_KIND_NAMES: Final = {SourceKind.TAXI: "taxi", SourceKind.PARKING: "parking", SourceKind.ENVIRONMENT: "environment"}

# What the processor checks beyond a reading's JSON Schema (schemas/CONTRACT.md sections 2 and 4).
SOURCE_LIMITS: Final = (
    "Checked by the processor, not expressible here: a message is at most 1 MiB (1,048,576 bytes) of "
    "UTF-8 JSON; an RFC 3339 ts must name a day its month has (2026-02-30 and 2025-02-29 match the "
    "pattern and are refused); an integer field (ts, seq) written with a fraction (5.0) is an integer "
    "to JSON Schema and a wrong type to the processor; a ts more than 5 minutes ahead of the "
    "processor's clock or 7 days behind it is dead-lettered (future_timestamp, stale_timestamp). "
    "A message with a batch member is always read as a batch envelope."
)
READER_NOTE: Final = (
    "Published by the processor; this schema describes what this build writes. Readers should ignore "
    "fields they do not know and accept values added later (schemas/CONTRACT.md section 9)."
)


@dataclass(frozen=True)
class SchemaFile:
    """One JSON Schema file: its name in the folder, the model it is generated from, what it adds."""

    name: str
    model: type[BaseModel]
    note: str

    @property
    def schema_id(self) -> str:
        return ID_PREFIX + self.name.removesuffix(".schema.json")


def schema_files() -> list[SchemaFile]:
    """Every file ``citystream schemas`` writes, in a fixed order."""
    files = []
    for kind, model in READING_MODELS.items():
        files.append(SchemaFile(f"{_KIND_NAMES[kind]}-reading.schema.json", model, SOURCE_LIMITS))
    for kind, batch in BATCH_MODELS.items():
        note = (
            f"1 to {MAX_BATCH_READINGS} readings, each as {_KIND_NAMES[kind]}-reading.schema.json describes it. "
            + SOURCE_LIMITS
        )
        files.append(SchemaFile(f"{_KIND_NAMES[kind]}-batch.schema.json", batch, note))
    files.append(SchemaFile("dead-letter.schema.json", DeadLetter, READER_NOTE))
    files.append(SchemaFile("alert.schema.json", Alert, READER_NOTE))
    return files


def json_schema(file: SchemaFile) -> dict[str, Any]:
    """The document of one file: ``$schema``, ``$id``, title and description, then pydantic's schema of the model."""
    generated = file.model.model_json_schema(mode="validation")
    description = " ".join((generated.pop("description", "") or "").replace("``", "`").split())
    document: dict[str, Any] = {
        "$schema": DRAFT_2020_12,
        "$id": file.schema_id,
        "title": generated.pop("title"),
        "description": f"{description} {file.note}".strip(),
    }
    document.update(generated)
    return document


def render(document: dict[str, Any]) -> str:
    """The file's text: two-space indents, UTF-8 as is, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    """Write every schema file into ``folder`` (created when missing); return the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file in schema_files():
        path = folder / file.name
        path.write_text(render(json_schema(file)), encoding="utf-8")
        written.append(path)
    return written
