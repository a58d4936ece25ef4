"""Help text in the conventions of click and the tools people know: arguments as ``GALLERY`` and
``PHOTOS...`` (required bare, optional in brackets), option values as ``PATH``, ``TEXT``, ``INTEGER``,
``[cpu|cuda]``, flags without a type, and docstring paragraphs re-flowed to the terminal's width.

The pinned Typer (constraints.txt) renders ``{gallery}``, ``<list[Path]>`` and ``<bool>`` and keeps a
docstring's hard line breaks inside a paragraph; its few display hooks are replaced here, once, when
the CLI is built. tests/test_help.py renders every command at 80 and 120 columns, so a Typer whose
hooks moved fails there, not in front of a user.
"""

from __future__ import annotations

import re
from typing import Any

from typer import core, rich_utils

_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "Path": "PATH", "path": "PATH", "file": "FILE",
               "directory": "DIR", "datetime": "DATETIME", "int range": "INTEGER RANGE"}  # fmt: skip


def _argument_name(param: Any) -> str:
    return param.metavar or (param.name or "").upper()


def _usage_name(self: Any) -> str:
    name = _argument_name(self) + ("..." if self.nargs != 1 else "")
    return name if self.required else f"[{name}]"


def _value_type(self: Any, ctx: Any) -> str | None:
    """An option's value as click shows it; None for a flag (its name says it all)."""
    if self.metavar is not None:
        return self.metavar
    if self.is_flag or self.count:
        return None
    desc = self.type_descriptor
    if desc.is_choice and desc.choices is not None:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices) + "]"
    shown = _original_display_type(self, ctx).strip("<>")
    shown = re.sub(r"^list\[(.*)\]$", r"\1", shown)
    name = _TYPE_NAMES.get(shown, shown.upper())
    return name + ("..." if self.nargs != 1 else "")


def _fix_linebreaks(paragraphs: list[str], markup_mode: Any) -> str:
    """Paragraphs joined by a blank line, each re-flowed: a docstring's line breaks are the source's, not
    the terminal's (a paragraph starting with ``\\b`` keeps them, as in click)."""
    return "\n\n".join(p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


_original_display_type = core.TyperOption.display_type


def install() -> None:
    """Replace Typer's display hooks (idempotent)."""
    core.TyperArgument.display_name_raw = property(_argument_name)  # type: ignore[assignment]
    core.TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]
    # A hidden argument (an old form kept for a release) is hidden from the usage line too.
    core.TyperArgument.get_usage_pieces = lambda self, ctx: [] if self.hidden else [self._usage_display_name()]  # type: ignore[method-assign]
    core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]  # the name says it
    core.TyperOption.display_type_rich = _value_type  # type: ignore[method-assign]
    rich_utils._fix_linebreaks = _fix_linebreaks  # type: ignore[assignment]
