"""``citystream schemas``: write the JSON Schema files of the wire models (schemas/export.py)."""

from __future__ import annotations

from pathlib import Path

import click

from schemas.export import write_schemas


@click.command("schemas", short_help="Write the JSON Schema files of the wire messages.")
@click.option(
    "--out",
    "folder",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the files into (created when missing; files of the same name are replaced). "
    "The repository keeps them in schemas/json.",
)
def schemas_command(folder: Path) -> None:
    """Write one JSON Schema (draft 2020-12) file per wire message, generated from the pydantic models.

    \b
      taxi-reading, parking-reading, environment-reading   a single reading of each source topic
      taxi-batch, parking-batch, environment-batch         the batch envelope {"batch": [...]} of each
      dead-letter, alert                                   what the worker publishes

    Each file is NAME.schema.json with `$schema` and `$id` (urn:citystream:schema:NAME); its
    description names what the processor checks beyond the schema. schemas/asyncapi.yaml refers to
    them by these names. After changing a model in schemas/, run

    \b
      citystream schemas --out schemas/json

    and commit the files: a unit test fails while a model and its file disagree.
    """
    for path in write_schemas(folder):
        click.echo(str(path))
