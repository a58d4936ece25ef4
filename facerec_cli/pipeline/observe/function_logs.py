"""`facerec logs`: the functions' CloudWatch Logs (``/aws/lambda/<function>``), merged in time order;
``--follow`` polls with a bounded interval until Ctrl-C."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import botocore.exceptions
from rich.console import Console
from rich.text import Text

from facerec_cli.infra.aws import error_code
from facerec_cli.infra.errors import user_error
from facerec_cli.config import Settings
from facerec_cli.errors import UserError

# Follow: poll again after this many seconds, doubling while nothing new arrives, up to the maximum.
FOLLOW_MIN_SECONDS = 1.0
FOLLOW_MAX_SECONDS = 10.0
_sleep: Callable[[float], None] = time.sleep  # patched by tests

STYLES = ("cyan", "magenta", "green", "yellow")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATIONS = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``10m``, ``1h30m``, ``2d``, ``45s``, or an ISO 8601 time (local time unless it has an offset)."""
    now = now or datetime.now(timezone.utc)
    value = text.strip()
    compact = value.replace(" ", "").lower()
    if compact and _DURATIONS.fullmatch(compact):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(compact))
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"--since {text!r} is neither a duration nor a time",
            hint="use e.g. 30s, 10m, 2h, 1d, 1h30m or 2026-01-31T14:00",
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


def resolve_functions(settings: Settings, function: str | None) -> list[str]:
    """The functions to read: both by default; ``splitting``/``recognition`` are accepted as short names."""
    names = settings.names
    both = [names.splitting_function, names.recognition_function]
    if function is None:
        return both
    aliases = {"splitting": names.splitting_function, "split": names.splitting_function, "recognition": names.recognition_function, "recognise": names.recognition_function, "recognize": names.recognition_function}
    name = aliases.get(function.lower(), function)
    if name not in both:
        raise UserError(f"unknown function {function!r}", hint=f"use {' or '.join(both)} (or leave --function out for both)")
    return [name]


@dataclass(frozen=True)
class LogEvent:
    timestamp: int  # ms since the epoch
    function: str
    message: str
    event_id: str


class LogReader:
    """filter_log_events over the functions' log groups. Groups that do not exist are remembered in
    ``missing`` (and asked for again on the next read)."""

    def __init__(self, settings: Settings, logs: Any, functions: Sequence[str]) -> None:
        self.settings = settings
        self.logs = logs
        self.functions = list(functions)
        self.missing: list[str] = []

    def read(self, start_ms: int, end_ms: int | None = None) -> list[LogEvent]:
        events: list[LogEvent] = []
        self.missing = []
        for function in self.functions:
            group = self.settings.names.log_group(function)
            kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start_ms}
            if end_ms is not None:
                kwargs["endTime"] = end_ms
            try:
                for page in self.logs.get_paginator("filter_log_events").paginate(**kwargs):
                    for e in page.get("events", []):
                        events.append(LogEvent(int(e["timestamp"]), function, str(e.get("message", "")), str(e.get("eventId", ""))))
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    self.missing.append(group)
                    continue
                raise user_error(self.settings, f"reading log group {group}", exc) from exc
            except botocore.exceptions.BotoCoreError as exc:
                raise user_error(self.settings, f"reading log group {group}", exc) from exc
        events.sort(key=lambda e: (e.timestamp, e.function))
        return events


def missing_message(settings: Settings, groups: Iterable[str]) -> str:
    where = f"region {settings.region}" + (f", endpoint {settings.endpoint_url}" if settings.endpoint_url else "")
    return f"no log group {', '.join(groups)} ({where})"


MISSING_HINT = "the functions are not deployed here: run `facerec bootstrap` first, or pass the --region it was deployed with"


class LogPrinter:
    def __init__(self, console: Console, functions: Sequence[str]) -> None:
        self.console = console
        self.styles = {f: STYLES[i % len(STYLES)] for i, f in enumerate(functions)}
        self.width = max((len(f) for f in functions), default=0)

    def print(self, event: LogEvent) -> None:
        moment = datetime.fromtimestamp(event.timestamp / 1000, tz=timezone.utc).astimezone()
        stamp = moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
        line = Text.assemble(
            (stamp, "dim"), " ", (event.function.ljust(self.width), self.styles.get(event.function, "")), " ", event.message.rstrip("\n")
        )
        self.console.print(line, soft_wrap=True, highlight=False)


def show_logs(
    settings: Settings,
    logs: Any,
    functions: Sequence[str],
    *,
    since: datetime,
    follow: bool,
    console: Console,
    warn: Callable[[str], None],
    sleep: Callable[[float], None] | None = None,
) -> int:
    """Print the events since ``since``; with ``follow`` keep polling until Ctrl-C. Returns how many
    events were printed."""
    reader = LogReader(settings, logs, functions)
    printer = LogPrinter(console, functions)
    start_ms = int(since.timestamp() * 1000)
    events = reader.read(start_ms)
    if len(reader.missing) == len(functions):
        raise UserError(missing_message(settings, reader.missing), hint=MISSING_HINT)
    if reader.missing:
        warn(missing_message(settings, reader.missing) + ": showing the others")
    for event in events:
        printer.print(event)
    printed = len(events)
    if not follow:
        if not events:
            warn(f"no log events since {since.astimezone().strftime('%Y-%m-%d %H:%M:%S')}")
        return printed

    # Events can arrive late with timestamps already passed: read from the newest timestamp seen
    # (inclusive) and skip event ids already printed.
    seen: deque[str] = deque(maxlen=10000)
    seen_set: set[str] = set()

    def remember(event: LogEvent) -> None:
        if len(seen) == seen.maxlen:
            seen_set.discard(seen[0])
        seen.append(event.event_id)
        seen_set.add(event.event_id)

    for event in events:
        remember(event)
    cursor = max((e.timestamp for e in events), default=start_ms)
    delay = FOLLOW_MIN_SECONDS
    sleep = sleep or _sleep
    try:
        while True:
            sleep(delay)
            fresh = [e for e in reader.read(cursor) if e.event_id not in seen_set]
            for event in fresh:
                printer.print(event)
                remember(event)
            printed += len(fresh)
            if fresh:
                cursor = max(cursor, max(e.timestamp for e in fresh))
                delay = FOLLOW_MIN_SECONDS
            else:
                delay = min(delay * 2, FOLLOW_MAX_SECONDS)
    except KeyboardInterrupt:
        return printed
