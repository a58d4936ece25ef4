"""``facerec watch --iaas``: queue depths and app-tier instances of the IaaS system, live.

Like the course's autoscaling check: requests waiting and in flight, responses waiting, and how many
app instances run. One snapshot per refresh (:mod:`facerec_cli.iaas.watch_snapshot`), from the AWS APIs
or a web tier's ``GET /healthz`` (:mod:`facerec_cli.iaas.watch_sources`), drawn here as one table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from facerec_cli.iaas.names import IaasNames
from facerec_cli.iaas.watch_snapshot import AppInstance, IaasSnapshot, QueueCounts, Source
from facerec_cli.iaas.watch_sources import AwsSource, WebSource, aws_source, from_health, healthz_url
from facerec_cli.refresh import DEFAULT_INTERVAL, refresh_loop
from lambdas.core.names import plural


# --------------------------------------------------------------------------------------- rendering

STATE_STYLE = {"running": "green", "pending": "yellow", "stopping": "magenta", "shutting-down": "magenta", "stopped": "dim"}


def _n(value: int | None) -> str:
    return "–" if value is None else str(value)


def _objects(value: int | None) -> str:
    return "– objects" if value is None else plural(value, "object")


def render(snap: IaasSnapshot, *, interval: float | None = None, rows: int = 20) -> Group:
    """A header line, then a table of the queues, the app tier's instances and the buckets."""
    when = snap.taken_at.astimezone().strftime("%H:%M:%S")
    where = f"prefix {snap.prefix}" if snap.prefix else ""
    if snap.source == "web":
        where = (where + " · " if where else "") + str(snap.web.get("url", ""))
    state = Text("idle", style="green") if snap.idle else Text("busy", style="bold yellow")
    header = Text.assemble(("facerec watch --iaas", "bold"), f" · {where} · {when} · ", state)
    if interval:
        header.append(f" · every {interval:g}s, Ctrl-C to stop", style="dim")

    table = Table(box=None, pad_edge=False, show_header=True)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    table.add_column("waiting", justify="right")
    table.add_column("in flight", justify="right")
    prefix = snap.prefix or "<prefix>"
    names = IaasNames(prefix)
    for label, queue, q in (
        ("request queue", names.request_queue, snap.request),
        ("response queue", names.response_queue, snap.response),
        ("dead-letter queue", names.dead_letter_queue, snap.dead_letter),
    ):
        if q is None and snap.source == "web" and label == "dead-letter queue":
            continue  # /healthz does not report it
        busy = q is not None and (q.waiting or q.in_flight) and label != "dead-letter queue"
        waiting = Text(_n(q.waiting if q else None), style="bold yellow" if busy else "")
        if label == "dead-letter queue" and q is not None and q.waiting:
            waiting.stylize("bold red")
        table.add_row(label, queue, waiting, _n(q.in_flight if q else None))
    table.add_section()

    count = snap.app_instances
    if snap.instances is None:
        table.add_row("app instances", "unknown", "", "")
    else:
        detail = ", ".join(f"{n} {s}" for s, n in snap.by_state.items()) or "none"
        table.add_row("app instances", Text(f"{count} starting or running ({detail})", style="bold" if count else "dim"), "", "")
        for inst in snap.instances[:rows]:
            extra = " · ".join(str(x) for x in (inst.id, inst.phase) if x)
            table.add_row("", Text.assemble(inst.name or "(unnamed)", "  ", (inst.state, STATE_STYLE.get(inst.state, "")), f"  {extra}" if extra else ""), "", "")
        if len(snap.instances) > rows:
            table.add_row("", Text(f"… and {len(snap.instances) - rows} more", style="dim"), "", "")
    if snap.source == "aws":
        web = str(snap.web.get("instance", "absent"))
        table.add_row("web instance", Text(web, style=STATE_STYLE.get(web, "dim")), "", "")
        table.add_section()
        table.add_row("in bucket", f"{names.in_bucket}: {_objects(snap.buckets.get('in'))}", "", "")
        table.add_row("out bucket", f"{names.out_bucket}: {_objects(snap.buckets.get('out'))}", "", "")
    else:
        table.add_row("web tier", f"{snap.web.get('status')}, {_n(snap.web.get('http_waiting'))} HTTP request(s) waiting", "", "")
    parts: list[Any] = [header, table]
    if snap.notes:
        parts.append(Text("; ".join(snap.notes), style="yellow"))
    return Group(*parts)


# ------------------------------------------------------------------------------------------ the loop


def watch_iaas(
    source: Source,
    *,
    interval: float = DEFAULT_INTERVAL,
    until_idle: bool = False,
    json_lines: bool = False,
    console: Console | None = None,
    sleep: Callable[[float], None] | None = None,
    max_refreshes: int | None = None,
) -> IaasSnapshot | None:
    """`facerec watch --iaas`: the loop of `facerec watch` (:func:`facerec_cli.refresh.refresh_loop`)
    over ``source``'s snapshots; ``until_idle`` stops at the first idle one."""
    def draw(snap: IaasSnapshot, height: int | None) -> Group:
        return render(snap) if height is None else render(snap, interval=interval, rows=max(3, height - 14))

    return refresh_loop(
        source.snapshot, draw, interval=interval, until_idle=until_idle, json_lines=json_lines, console=console,
        sleep=sleep or time.sleep, max_refreshes=max_refreshes,
    )


__all__ = [
    "AppInstance",
    "AwsSource",
    "IaasSnapshot",
    "QueueCounts",
    "WebSource",
    "aws_source",
    "from_health",
    "healthz_url",
    "render",
    "watch_iaas",
]
