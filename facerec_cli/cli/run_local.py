"""``facerec run-local``: rendering around ``facerec_cli.pipeline.local.runner``."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from lambdas import env as fenv
from lambdas.core.results import ERROR, Result

from facerec_cli.pipeline.local.runner import LocalPipeline, RunOptions, VideoJob, collect_videos, fetch_best_views, write_outputs
from facerec_cli.pipeline.observe.dashboard import Dashboard
from facerec_cli.pipeline.observe.dashboard_view import render
from facerec_cli.refresh import DEFAULT_INTERVAL
from facerec_cli.pipeline.observe.snapshot import PipelineSnapshot
from facerec_cli.pipeline.observe.report import write_report
from facerec_cli.render import STATUS_STYLE, err, out, plural, print_errors, print_json_lines, print_timelines, results_table

STATE_STYLE = {"waiting": "dim", "uploaded": "blue", "split": "magenta", "done": "green"}


def progress_table(jobs: list[VideoJob], pipeline: LocalPipeline) -> Table:
    counters = pipeline.cloud.dispatcher.counters
    done = sum(j.state == "done" for j in jobs)
    table = Table(
        title=f"run-local: {done}/{len(jobs)} done · invocations running {counters.running}, queued {counters.queued}, "
        f"retried {counters.retried}, failed {counters.failed}",
        title_justify="left",
    )
    table.add_column("video", overflow="fold")
    table.add_column("state")
    table.add_column("result")
    table.add_column("s", justify="right")
    shown = [j for j in jobs if j.state != "done"][:15] + [j for j in jobs if j.state == "done"][-5:]
    for job in shown:
        result = ""
        if job.result is not None:
            style = STATUS_STYLE.get(job.result.status, "")
            result = f"[{style}]{job.result.status}[/] {job.result.name}"
        latency = f"{job.latency_s:.2f}" if job.latency_s is not None else ""
        table.add_row(job.key, f"[{STATE_STYLE[job.state]}]{job.state}[/]", result, latency)
    return table


class LocalWatch:
    """``run-local --watch``: the `facerec watch` dashboard over the embedded cloud's buckets, failure
    queue and log groups, refreshed at most every ``interval`` seconds (list calls only, like
    `facerec watch` on AWS)."""

    def __init__(self, pipeline: LocalPipeline, interval: float = DEFAULT_INTERVAL) -> None:
        assert pipeline.settings is not None and pipeline.clients is not None
        c = pipeline.clients
        self.board = Dashboard(c.s3, c.sqs, c.logs, pipeline.settings.names, settings=pipeline.settings)
        self.interval = interval
        self.snapshot: PipelineSnapshot | None = None
        self._taken = 0.0

    def refresh(self, force: bool = False) -> PipelineSnapshot:
        if force or self.snapshot is None or time.monotonic() - self._taken >= self.interval:
            self.snapshot, self._taken = self.board.snapshot(), time.monotonic()
        return self.snapshot

    def view(self, force: bool = False) -> Group:
        return render(self.refresh(force), interval=self.interval)


def private_log_file() -> str:
    """A new log file for this run's functions in $TMPDIR, readable by this user only (mkstemp: 0600, a
    name nobody can guess or plant a link at): the handlers' output can name users' videos and people."""
    fd, path = tempfile.mkstemp(prefix="facerec-run-local-", suffix=".log")
    os.close(fd)
    return path


def run_local(
    inputs: list[Path], gallery: Path, options: RunOptions, *, json_lines: bool = False, out_dir: Path | None = None,
    html: Path | None = None, watch: bool = False,
) -> list[Result]:
    # The report shows each video's annotated frame, and a results folder of timelines holds each row's
    # best view (for `people list`): have the function store them.
    if html is not None or (out_dir is not None and options.extra_env.get(fenv.TIMELINE) == "1"):
        options = dataclasses.replace(options, extra_env={**options.extra_env, fenv.ANNOTATE: "1"})
    log_path = options.log_path or private_log_file()
    containers = options.runtime == "containers"
    # Checks gallery and weights (and with containers, the Docker engine); starts nothing. A failed
    # check is one red line and leaves no log file behind.
    try:
        pipeline = LocalPipeline(gallery, options, log_path=log_path, on_progress=lambda line: err.print(f"[dim]{escape(line)}[/]", soft_wrap=True))
    except BaseException:
        if options.log_path is None:
            Path(log_path).unlink(missing_ok=True)
        raise
    err.print(f"function logs: {log_path}", highlight=False, soft_wrap=True, style="dim")
    jobs, refused = collect_videos(inputs)
    with err.status("building the images, starting the local cloud and the containers…" if containers else "starting the local cloud and the workers…"):
        pipeline.__enter__()
    try:
        if watch:
            board = LocalWatch(pipeline)
            if err.is_terminal and not json_lines:
                with Live(board.view(), console=err, refresh_per_second=4, transient=False) as live:
                    results = pipeline.run(jobs, on_tick=lambda js: live.update(board.view()))
                    live.update(board.view(force=True))
            else:  # no terminal to animate: the final dashboard, once
                results = pipeline.run(jobs)
                err.print(board.view(force=True))
        elif json_lines:
            # One line per video as soon as its result is in (the refused inputs first): a consumer sees
            # the first answer while the rest are still running.
            print_json_lines(refused)
            printed: set[str] = set()

            def stream(js: list[VideoJob]) -> None:
                fresh = [j for j in js if j.result is not None and j.key not in printed]
                printed.update(j.key for j in fresh)
                print_json_lines([j.result for j in fresh if j.result is not None])

            results = pipeline.run(jobs, on_tick=stream)
            stream(jobs)
        elif not err.is_terminal:
            results = pipeline.run(jobs)
        else:
            with Live(progress_table(jobs, pipeline), console=err, refresh_per_second=4, transient=True) as live:
                results = pipeline.run(jobs, on_tick=lambda js: live.update(progress_table(js, pipeline)), track_split=True)
        if html is not None:  # while the local cloud still holds the buckets
            assert pipeline.settings is not None and pipeline.clients is not None
            write_report(html, pipeline.settings, pipeline.clients.s3, pipeline.clients.sqs, title="facerec run-local", extra=refused)
            err.print(f"report in {html}", highlight=False, soft_wrap=True)
        if out_dir is not None:  # the crops the results name, while the local cloud still holds them
            assert pipeline.settings is not None and pipeline.clients is not None
            fetch_best_views(pipeline.clients.s3, pipeline.settings.names.details_bucket, results, out_dir)
    finally:
        pipeline.__exit__(None, None, None)
    results = refused + results
    if out_dir is not None:
        write_outputs(out_dir, jobs, refused)
    if not json_lines:
        out.print(results_table(results, title="results"))
        print_timelines(results)
        print_errors(results)
        failed = sum(r.status == ERROR for r in results)
        err.print(f"{plural(len(results), 'video')}, {failed} failed; function logs in {log_path}" + (f"; results in {out_dir}" if out_dir else ""))
    return results
