"""Terminal output: result tables and JSON Lines. ``--json`` prints one object per video on stdout and
nothing else; everything for people goes to stderr or into rich tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lambdas.core.names import plural  # noqa: F401  (the one plural rule; here for the CLI's messages)
from lambdas.core.results import ERROR, NO_FACE, OK, UNKNOWN, Result

out = Console()
err = Console(stderr=True)

STATUS_STYLE = {OK: "green", UNKNOWN: "yellow", NO_FACE: "cyan", ERROR: "bold red"}


def print_json(value: Any) -> None:
    """One JSON line on stdout, written directly (rich would wrap long names)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_json_lines(results: Iterable[Result]) -> None:
    for result in results:
        sys.stdout.write(result.to_json() + "\n")
    sys.stdout.flush()


def results_table(results: Iterable[Result], title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("video", overflow="fold")
    table.add_column("status")
    table.add_column("name", overflow="fold")
    table.add_column("faces", justify="right")
    table.add_column("distances")
    table.add_column("frames", justify="right")
    table.add_column("ms", justify="right")
    for r in results:
        style = STATUS_STYLE.get(r.status, "")
        distances = " ".join(f"{f.distance:.2f}" for f in r.faces[:4]) + (" …" if len(r.faces) > 4 else "")
        t = r.timings_ms
        # In the pipeline "recognise" already contains decode/detect/embed/match.
        stages = ("split", "recognise") if "recognise" in t else ("decode", "detect", "embed", "match")
        total = sum(t.get(k, 0.0) for k in stages)
        table.add_row(
            escape(r.video),
            f"[{style}]{r.status}[/]",
            escape(r.name),
            str(len(r.faces)),
            distances,
            str(r.frames),
            f"{total:.0f}",
        )
    return table


def fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_errors(results: Iterable[Result]) -> None:
    """The message of every error result, one line each, below the table."""
    for r in results:
        if r.status == ERROR:
            err.print(f"[red]{escape(r.video)}[/]: {escape(str(r.error))}", highlight=False, soft_wrap=True)


def clock(seconds: float) -> str:
    """``m:ss.s``: a time in a video."""
    minutes, rest = divmod(max(0.0, seconds), 60)
    return f"{int(minutes)}:{rest:04.1f}"


def timeline_table(result: Result, max_ranges: int = 6) -> Table | None:
    """Who is on screen when (a result with a timeline): a row per person, their time ranges."""
    timeline = result.timeline
    if timeline is None:
        return None
    length = f", {clock(timeline.duration)} long" if timeline.duration else ""
    table = Table(title=f"{escape(result.video)}: timeline at {timeline.fps:g} fps{length}, {plural(timeline.segments, 'segment')}", title_justify="left")
    table.add_column("person", overflow="fold")
    table.add_column("on screen", overflow="fold")
    table.add_column("seen", justify="right")
    table.add_column("best", justify="right")
    table.add_column("best view", justify="right")
    for person in timeline.people:
        spans = [f"{clock(a)}–{clock(b)}" if b > a else clock(a) for a, b in person.ranges]
        shown = ", ".join(spans[:max_ranges]) + (f" … (+{len(spans) - max_ranges})" if len(spans) > max_ranges else "")
        best = f"{person.best_distance:.2f}" + ("" if person.known else f" ({escape(person.nearest)})")
        table.add_row(
            f"[{'green' if person.known else 'yellow'}]{escape(person.person)}[/]", shown, str(person.detections), best,
            clock(person.best.t),
        )
    if not timeline.people:
        table.caption = "nobody on screen"
    return table


def print_timelines(results: Iterable[Result]) -> None:
    for result in results:
        table = timeline_table(result)
        if table is not None:
            out.print(table)
