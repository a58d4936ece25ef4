"""Running the CLI in-process for tests that read its output: the command, its error lines, wide lines."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from facerec_cli.cli.app import app

runner = CliRunner()


def facerec(*args: Any) -> Any:
    """``facerec ARGS...`` in this process; an exception other than the exit is raised, not swallowed."""
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def error_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Import into a test module to keep its rich output unwrapped."""
    monkeypatch.setenv("COLUMNS", "400")
