"""`facerec watch` on a pipeline: the dashboard drawn with rich, refreshed by :func:`facerec_cli.refresh.refresh_loop`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from facerec_cli.config import Settings
from lambdas.core.names import plural
from facerec_cli.pipeline.observe.dashboard import Dashboard, Section
from facerec_cli.refresh import DEFAULT_INTERVAL, refresh_loop
from facerec_cli.pipeline.observe.snapshot import FAILED, FINISHED, IN_FLIGHT, SPLIT, UPLOADED, PipelineSnapshot


STATE_STYLE = {UPLOADED: "blue", SPLIT: "magenta", FINISHED: "green", FAILED: "bold red"}


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


def render(snapshot: PipelineSnapshot, *, interval: float | None = None, rows: int = 10) -> Group:
    """The dashboard: a header line, then counts, videos in flight, failures, errors, extra sections."""
    when = snapshot.taken_at.astimezone().strftime("%H:%M:%S")
    state = Text("idle", style="green") if snapshot.idle else Text(f"{snapshot.count(*IN_FLIGHT)} in flight", style="bold yellow")
    segments = [v.segments for v in snapshot.in_flight if v.segments is not None]
    if segments:  # timelines: segment invocations not finished yet
        state.append(f" ({plural(sum(t - d for d, t in segments), 'segment')})", style="yellow")
    header = Text.assemble(("facerec watch", "bold"), f" · prefix {snapshot.prefix} · {when}", " · ", state)
    if interval:
        header.append(f" · every {interval:g}s, Ctrl-C to stop", style="dim")

    counts = Table(title="pipeline", title_justify="left", show_header=True, box=None, pad_edge=False)
    for column in ("input", "stage-1", "output", "in flight", "finished", "failed", "latency p50", "p95", "max"):
        counts.add_column(column, justify="right")
    lat = snapshot.latency()
    b = snapshot.buckets
    counts.add_row(
        str(b["input"]), str(b["stage1_videos"]), str(b["output_results"]),
        Text(str(snapshot.count(*IN_FLIGHT)), style="yellow" if not snapshot.idle else ""),
        Text(str(snapshot.count(FINISHED)), style="green"),
        Text(str(snapshot.count(FAILED)), style="bold red" if snapshot.count(FAILED) else ""),
        _seconds(lat["p50"]), _seconds(lat["p95"]), _seconds(lat["max"]),  # type: ignore[arg-type]
    )  # fmt: skip
    counts.caption = f"videos per bucket; latency from upload to result over {plural(lat['n'], 'answered video')}"
    counts.caption_justify = "left"
    parts: list[Any] = [header, counts]

    waiting = snapshot.in_flight
    if waiting:
        table = Table(title="in flight (oldest first)", title_justify="left", box=None, pad_edge=False)
        table.add_column("video", overflow="fold")
        table.add_column("state")
        table.add_column("age", justify="right")
        timelines = any(v.segments is not None for v in waiting)
        if timelines:
            table.add_column("segments", justify="right")
        for v in waiting[:rows]:
            cells = [v.video, Text(v.state, style=STATE_STYLE[v.state]), _seconds(v.latency_s)]
            if timelines:
                cells.append(f"{v.segments[0]}/{v.segments[1]} done" if v.segments else "")
            table.add_row(*cells)
        if len(waiting) > rows:
            table.caption = f"… and {len(waiting) - rows} more"
        parts.append(table)
    if snapshot.failures:
        table = Table(title="failed (newest first)", title_justify="left", box=None, pad_edge=False)
        table.add_column("video", overflow="fold")
        table.add_column("why", overflow="fold")
        for v in snapshot.failures[: max(3, rows // 2)]:
            table.add_row(Text(v.video, style="red"), v.error or "")
        parts.append(table)
    if snapshot.errors or snapshot.notes:
        table = Table(title="last errors in the function logs", title_justify="left", box=None, pad_edge=False)
        table.add_column("time")
        table.add_column("function")
        table.add_column("message", overflow="fold")
        for e in snapshot.errors[-max(3, rows // 2):]:
            stamp = datetime.fromtimestamp(e.timestamp / 1000).strftime("%H:%M:%S")
            table.add_row(stamp, e.function, Text(e.message, style="red"))
        if snapshot.notes:
            table.caption = "; ".join(snapshot.notes)
            table.caption_justify = "left"
        parts.append(table)
    for name, values in snapshot.sections.items():
        table = Table(title=name, title_justify="left", box=None, pad_edge=False)
        for key in values:
            table.add_column(str(key), justify="right")
        table.add_row(*(str(v) for v in values.values()))
        parts.append(table)
    return Group(*parts)


def watch_pipeline(
    dashboard: Dashboard,
    *,
    interval: float = DEFAULT_INTERVAL,
    until_idle: bool = False,
    json_lines: bool = False,
    console: Console | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PipelineSnapshot | None:
    """`facerec watch` on a pipeline: :func:`refresh_loop` over ``dashboard``'s snapshots."""

    def draw(snapshot: PipelineSnapshot, height: int | None) -> Group:
        if height is None:
            return render(snapshot)
        return render(snapshot, interval=interval, rows=max(3, (height - 12) // 2))

    return refresh_loop(
        dashboard.snapshot, draw, interval=interval, until_idle=until_idle, json_lines=json_lines, console=console, sleep=sleep
    )


def run_watch(settings: Settings, *, interval: float, until_idle: bool, json_lines: bool, sections: Mapping[str, Section] | None = None) -> PipelineSnapshot | None:
    """``facerec watch`` for the deployment ``settings`` names."""
    from facerec_cli.infra import aws

    sess = aws.session(settings)
    dashboard = Dashboard(
        aws.client(settings, "s3", sess=sess),
        aws.client(settings, "sqs", sess=sess),
        aws.client(settings, "logs", sess=sess),
        settings.names,
        settings=settings,
        sections=sections,
    )
    return watch_pipeline(dashboard, interval=interval, until_idle=until_idle, json_lines=json_lines)
