"""The one place that encodes and decodes JSON (orjson) for citystream."""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError

_DUMPS_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse one JSON document; raises :class:`JSONDecodeError` on anything that is not JSON."""
    return orjson.loads(data)


def dumps(obj: Any) -> bytes:
    """Serialise to compact UTF-8 JSON bytes (datetimes in UTC end in ``Z``)."""
    return orjson.dumps(obj, option=_DUMPS_OPTIONS)


def dumps_str(obj: Any) -> str:
    return dumps(obj).decode()
