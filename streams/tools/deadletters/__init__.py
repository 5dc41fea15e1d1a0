"""``citystream deadletters``: list, summarise and replay the dead letters of ``city.deadletter.v1``.

A dead letter (schemas/CONTRACT.md section 4) holds why a message, or one element of a batch, could not be
processed, and the original payload. After a fix (a worker whose limits were wrong, a registry entry
that was missing, a gateway that sent a bad field and was corrected upstream), ``replay`` publishes
the original bytes again to their source topic with their original key, and the worker judges them
afresh. Duplicates are harmless: a reading already processed (same ``device_id`` and ``seq``, or
``ts``) changes no aggregate (schemas/CONTRACT.md section 3).

The modules, pure ones first: :mod:`.letters` (parsing, selecting, summarising and showing dead
letters), :mod:`.replay` (choosing what to replay), :mod:`.broker` (reading the topic through
:func:`streams.clients.kafka.read_range`, and sending the replays) and :mod:`.commands`.
"""

from __future__ import annotations

from streams.tools.deadletters.broker import (
    SEEK_MARGIN_MS,
    ReadResult,
    SendResult,
    read_dead_letters,
    send_replays,
)
from streams.tools.deadletters.commands import (
    deadletters_command,
    list_command,
    replay_command,
    summary_command,
)
from streams.tools.deadletters.letters import (
    REASONS,
    SOURCE_TOPIC_NAMES,
    TOPIC_ALIASES,
    UNKNOWN_DEVICE,
    DeadLettersError,
    Filters,
    OffsetSpec,
    StoredDeadLetter,
    Summary,
    Unreadable,
    device_of,
    first_error,
    letter_json,
    letter_line,
    parse_dead_letter,
    parse_moment,
    parse_offset_spec,
    pick_offsets,
    resolve_topic,
    select,
    source_text,
    summarise,
    summary_json,
    summary_tables,
)
from streams.tools.deadletters.replay import (
    REPLAY_HEADER,
    Refusal,
    Replay,
    ReplayPlan,
    needs_confirmation,
    original_value,
    plan_replay,
    preview,
    replay_line,
    replay_of,
    replay_warnings,
)

__all__ = [
    "REASONS",
    "REPLAY_HEADER",
    "SEEK_MARGIN_MS",
    "SOURCE_TOPIC_NAMES",
    "TOPIC_ALIASES",
    "UNKNOWN_DEVICE",
    "DeadLettersError",
    "Filters",
    "OffsetSpec",
    "ReadResult",
    "Refusal",
    "Replay",
    "ReplayPlan",
    "SendResult",
    "StoredDeadLetter",
    "Summary",
    "Unreadable",
    "deadletters_command",
    "device_of",
    "first_error",
    "letter_json",
    "letter_line",
    "list_command",
    "needs_confirmation",
    "original_value",
    "parse_dead_letter",
    "parse_moment",
    "parse_offset_spec",
    "pick_offsets",
    "plan_replay",
    "preview",
    "read_dead_letters",
    "replay_command",
    "replay_line",
    "replay_of",
    "replay_warnings",
    "resolve_topic",
    "select",
    "send_replays",
    "source_text",
    "summarise",
    "summary_command",
    "summary_json",
    "summary_tables",
]
