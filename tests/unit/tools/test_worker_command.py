"""``citystream worker --processes``: how many, and what it refuses before starting any."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from streams.tools.worker import _process_count, worker_command


def test_a_number_or_one_per_core() -> None:
    assert _process_count("1") == 1 and _process_count("3") == 3
    assert _process_count("auto") == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("text", ["0", "65", "two", "-1", ""])
def test_anything_else_is_refused_with_what_is_expected(text: str) -> None:
    result = CliRunner().invoke(worker_command, ["--processes", text])
    assert result.exit_code == 2
    assert "a number of processes from 1 to 64, or auto" in result.output
