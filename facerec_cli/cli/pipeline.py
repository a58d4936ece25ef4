"""The Lambda pipeline's commands: bootstrap, upload, results, watch, logs, destroy.

Every command takes the common options ``--prefix --region --endpoint-url --profile`` (resolved by
:func:`facerec_cli.config.load_settings`: flag > ``FACEREC_*`` > ``facerec.toml`` > default; boto3's
``AWS_ENDPOINT_URL`` is honoured too). AWS errors become one red line and exit code 1. ``app`` has no
group name: the root app merges its commands. boto3 and the deploy modules are imported inside the
functions, so that registering these commands costs ``facerec identify`` nothing. The deploy flow
behind bootstrap/destroy is in :mod:`facerec_cli.cli.deploy_flow`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from facerec_cli.cli.options import (
    AwsTarget,
    DestroyDryRunOpt,
    DryRunOpt,
    JsonOpt,
    Stage1LayoutOpt,
    WatchPrefixOpt,
    YesOpt,
    aws_target_options,
    user_errors_as_exit_codes,
)
from facerec_cli.config import Settings
from facerec_cli.errors import UserError
from facerec_cli.render import err, out, plural

# Exit code of `results --watch` when --timeout passed with uploads still unanswered (as timeout(1)).
TIMEOUT_EXIT = 124

app = typer.Typer()


@app.command()
@user_errors_as_exit_codes
@aws_target_options()
def bootstrap(
    gallery: Annotated[
        Path | None, typer.Option("--gallery", "-g", help="Gallery file (from `facerec enroll`) to upload for the recognition function.")
    ] = None,
    dry_run: DryRunOpt = False,
    skip_images: Annotated[
        bool, typer.Option("--skip-images", help="Do not build or push images: existing functions keep theirs, new ones get a placeholder.")
    ] = False,
    registry: Annotated[
        str | None, typer.Option("--registry", help="Push images to this registry host instead of the account's ECR.")
    ] = None,
    base_image: Annotated[str | None, typer.Option("--base-image", help="Base image for the function images.")] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="Model weights in the images (default: the gallery's, else the deployed function's, else casia-webface).")
    ] = None,
    annotate: Annotated[
        bool | None,
        typer.Option(
            "--annotate/--no-annotate",
            help="The recognition function also stores <stem>.annotated.jpg (boxes and names) beside each result, for `results --html`. Default: as deployed (off for a new deployment).",
        ),
    ] = None,
    timeline: Annotated[
        bool | None,
        typer.Option(
            "--timeline/--no-timeline",
            help="Every upload also gets a timeline (who is on screen when, 2 frames a second), recognised in segments "
            "in parallel. Default: as deployed (off for a new deployment).",
        ),
    ] = None,
    segment_seconds: Annotated[
        float | None,
        typer.Option("--segment-seconds", min=1.0, help="With --timeline: seconds of video per segment invocation (default 30)."),
    ] = None,
    stage1_layout: Stage1LayoutOpt = None,
    retain_days: Annotated[
        int | None,
        typer.Option(
            "--retain-days", min=0,
            help="Uploads (input bucket) and results (output bucket; the gallery stays) expire after N days; 0 removes the rule. "
            "Default: FACEREC_RETAIN_DAYS, facerec.toml, else as deployed (a new deployment keeps everything).",
        ),
    ] = None,
    yes: YesOpt = False,
    target: AwsTarget = AwsTarget(),
) -> None:
    """Create or update everything on AWS (buckets, failure queue, log groups, ECR, images, roles,
    functions, trigger, gallery), idempotently: a second run has nothing to change."""
    settings = target.settings(registry=registry, retain_days=retain_days)
    from facerec_cli.cli.deploy_flow import run_bootstrap
    from facerec_cli.infra.errors import aws_errors

    with aws_errors(settings, "bootstrap"):
        run_bootstrap(
            settings, gallery=gallery, dry_run=dry_run, skip_images=skip_images, base_image=base_image, weights=weights, yes=yes,
            annotate=annotate, timeline=timeline, segment_seconds=segment_seconds,
            stage1_layout=stage1_layout.value if stage1_layout else None,
        )

@app.command()
@user_errors_as_exit_codes
@aws_target_options()
def upload(
    videos: Annotated[list[Path], typer.Argument(metavar="VIDEO", help="Video files (.mp4 .mov .mkv .avi .webm .m4v); the key is the file name.")],
    target: AwsTarget = AwsTarget(),
) -> None:
    """Upload videos to the input bucket (multipart, with progress). Every file is checked first:
    nothing is sent if any is not a video or is empty."""
    settings = target.settings()
    run_upload(settings, videos)

@app.command()
@user_errors_as_exit_codes
@aws_target_options()
def results(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow new results live until every uploaded video is answered.")] = False,
    json_lines: JsonOpt = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.0, help="With --watch: give up after this many seconds (exit code 124).")
    ] = 900.0,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report: a row per video with its annotated frame.")
    ] = None,
    reidentify: Annotated[
        bool, typer.Option("--reidentify", help="Re-answer the stored results against the gallery as it is now (from the embeddings they store; no video is read) and rewrite those that change.")
    ] = False,
    gallery: Annotated[
        Path | None, typer.Option("--gallery", "-g", help="With --reidentify: the gallery (default: the deployed one).")
    ] = None,
    results_dir: Annotated[
        Path | None, typer.Option("--results", help="A folder of results (`run-local --out DIR`) instead of the output bucket.")
    ] = None,
    target: AwsTarget = AwsTarget(),
) -> None:
    """List results from the output bucket (or a folder, --results DIR), and failed invocations from
    the failure queue as errors. Exits 1 if any video ended in error. With --reidentify: re-answer
    them instead."""
    from facerec_cli.infra.errors import aws_errors

    if reidentify:
        from facerec_cli.render import print_reidentified, print_rewritten
        from facerec_cli.stored_results import gallery_for, open_store, reidentify as run_reidentify

        if watch or html is not None:
            raise UserError("--reidentify re-answers stored results: it takes no --watch or --html")
        store = open_store(results_dir, target.settings)
        answered = run_reidentify(store, gallery_for(gallery, store, target.settings, required=True),  # type: ignore[arg-type]
                                  on_rewritten=lambda before, after: print_rewritten(before, after, json_lines=json_lines))
        if not json_lines:
            print_reidentified(answered)
        sys.stdout.flush()
        return
    if results_dir is not None:
        if watch or html is not None:
            raise UserError("--results DIR lists a folder of results: it takes no --watch or --html")
        if gallery is not None:
            raise UserError("--gallery is for --reidentify")
        if list_results_dir(results_dir, json_lines=json_lines):
            raise typer.Exit(1)
        return
    if gallery is not None:
        raise UserError("--gallery is for --reidentify")
    settings = target.settings()
    with aws_errors(settings, "reading results"):
        code = run_results(settings, watch=watch, json_lines=json_lines, timeout=timeout)
    if html is not None:
        write_html_report(settings, html)
    if code:
        raise typer.Exit(code)

@app.command("watch")
@user_errors_as_exit_codes
@aws_target_options(WatchPrefixOpt)
def watch_pipeline(
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Stop once no uploaded video is in flight (--iaas: no request queued or in flight and no app instance).")
    ] = False,
    json_lines: Annotated[bool, typer.Option("--json", help="Print one JSON snapshot per refresh on stdout (one line each), nothing else.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1, max=60.0, help="Seconds between refreshes.")] = 1.5,
    iaas: Annotated[
        bool, typer.Option("--iaas", help="Watch the IaaS system instead: request/response/dead-letter queue depths, app-tier instances, in/out buckets.")
    ] = False,
    web_url: Annotated[
        str | None,
        typer.Option("--web-url", help="With --iaas (implied): read a web tier's GET /healthz instead of the AWS APIs, e.g. the URL `facerec iaas run-local` printed."),
    ] = None,
    target: AwsTarget = AwsTarget(),
) -> None:
    """Live dashboard of the pipeline until Ctrl-C: videos per bucket, in flight, finished, failed,
    latency upload -> result (p50/p95), and the last errors in the functions' logs. With --iaas: the
    IaaS system's queue depths and app instances. List calls only."""
    if iaas or web_url:
        run_iaas_watch(target, web_url=web_url, interval=interval, until_idle=until_idle, json_lines=json_lines)
        return
    from facerec_cli.infra.errors import aws_errors
    from facerec_cli.pipeline.observe.dashboard_view import run_watch

    settings = target.settings()
    with aws_errors(settings, "watching the pipeline"):
        run_watch(settings, interval=interval, until_idle=until_idle, json_lines=json_lines)


@app.command()
@user_errors_as_exit_codes
@aws_target_options()
def logs(
    function: Annotated[
        str | None, typer.Option("--function", "-f", help="video-splitting or face-recognition (short: splitting, recognition); default both.")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing new events until Ctrl-C.")] = False,
    since: Annotated[str, typer.Option("--since", help="Start this long ago (30s, 10m, 2h, 1d) or at this time (2026-01-31T14:00).")] = "10m",
    target: AwsTarget = AwsTarget(),
) -> None:
    """CloudWatch logs of the functions: timestamp, function, message, oldest first."""
    settings = target.settings()
    run_logs(settings, function, follow=follow, since=since)

@app.command()
@user_errors_as_exit_codes
@aws_target_options()
def destroy(
    yes: YesOpt = False,
    dry_run: DestroyDryRunOpt = False,
    target: AwsTarget = AwsTarget(),
) -> None:
    """Delete everything bootstrap created (buckets with their objects, functions, roles, queue,
    log groups, ECR repository). Asks first unless --yes."""
    settings = target.settings()
    from facerec_cli.cli.deploy_flow import run_destroy
    from facerec_cli.infra.errors import aws_errors

    with aws_errors(settings, "destroy"):
        run_destroy(settings, yes=yes, dry_run=dry_run)


# ------------------------------------------------------------------------------------------ what they run


def list_results_dir(path: Path, *, json_lines: bool = False) -> int:
    """``results --results DIR``: the results a folder holds (``run-local --out DIR``), as ``results``
    lists the bucket's; returns how many ended in error."""
    from lambdas.core.results import ERROR

    from facerec_cli.pipeline.observe.result_store import DirStore, load_result
    from facerec_cli.render import plural, print_errors, print_json_lines, results_table

    store = DirStore(path)
    found = [load_result(text, stem) for stem, text in store.items()]
    if json_lines:
        print_json_lines(found)
    else:
        out.print(results_table(found))
        print_errors(found)
        err.print(f"{plural(len(found), 'result')} in {escape(str(path))}", highlight=False, soft_wrap=True)
    return sum(r.status == ERROR for r in found)


def owner_checked_s3(settings: Settings, s3: Any | None = None, sts: Any | None = None) -> Any:
    """An S3 client whose calls on the deployment's buckets carry ExpectedBucketOwner (this account)."""
    from facerec_cli.infra.clients import owner_checked_s3 as checked

    return checked(settings, s3, sts)


def results_clients(settings: Settings) -> tuple[Any, Any]:
    """(owner-checked S3, SQS) on one session: what reading results and the failure queue needs."""
    from facerec_cli.infra import aws

    sess = aws.session(settings)
    s3 = owner_checked_s3(settings, aws.client(settings, "s3", sess=sess), aws.client(settings, "sts", sess=sess))
    return s3, aws.client(settings, "sqs", sess=sess)


# ------------------------------------------------------------------------------------------ results


def run_results(settings: Settings, *, watch: bool, json_lines: bool, timeout: float) -> int:
    """List (or follow) results; returns the exit code: 0, 1 if any video ended in error, or
    TIMEOUT_EXIT when --watch gave up with uploads still unanswered."""
    from facerec_cli.infra.errors import aws_errors
    from facerec_cli.pipeline.observe import watch_results as wr
    from facerec_cli.pipeline.trigger import Retrigger
    from facerec_cli.pipeline.upload_ledger import UploadLedger

    reader = wr.ResultsReader(settings, *results_clients(settings))
    ledger = UploadLedger(settings)
    if not watch:
        snapshot = reader.refresh(ledger.records())
        wr.show(snapshot, json_lines=json_lines)
        return 1 if snapshot.errors else 0
    if not ledger.records():
        err.print("no uploads recorded by `facerec upload` for this deployment: nothing to wait for", style="yellow", highlight=False)
    retrigger = Retrigger(settings, reader.s3, ledger)

    def nudge(snapshot: Any) -> None:  # uploads the trigger may have missed (right after bootstrap)
        with aws_errors(settings, "re-triggering an upload", bucket=settings.names.input_bucket):
            for line in retrigger(snapshot.pending):
                err.print(Text(line, style="yellow"), highlight=False, soft_wrap=True)

    outcome = wr.watch_until_answered(reader, ledger.records, timeout=timeout, json_lines=json_lines, on_refresh=nudge)
    if not json_lines:
        wr.show(outcome.snapshot, json_lines=False)
    if outcome.timed_out:
        pending = outcome.snapshot.pending
        names = ", ".join(u.video for u in pending[:10]) + (" …" if len(pending) > 10 else "")
        err.print(
            f"[bold red]timed out[/] after {timeout:g}s: {plural(len(pending), 'uploaded video')} without a result: {escape(names)} "
            "(see `facerec logs`)",
            highlight=False,
        )
        return TIMEOUT_EXIT
    return 1 if outcome.snapshot.errors else 0


# ------------------------------------------------------------------------------------------ watch --iaas


def run_iaas_watch(
    target: AwsTarget,
    *,
    web_url: str | None,
    interval: float,
    until_idle: bool,
    json_lines: bool,
) -> Any:
    """``facerec watch --iaas``: from a web tier's /healthz with ``web_url``, else from the AWS APIs
    of the deployment the IaaS commands would address."""
    from facerec_cli.iaas import watch as iaas_watch

    if web_url:
        source: Any = iaas_watch.WebSource(web_url)
        return iaas_watch.watch_iaas(source, interval=interval, until_idle=until_idle, json_lines=json_lines)
    from facerec_cli.infra.errors import aws_errors

    settings = target.settings()
    with aws_errors(settings, "watching the IaaS system"):
        source = iaas_watch.aws_source(settings)
        return iaas_watch.watch_iaas(source, interval=interval, until_idle=until_idle, json_lines=json_lines)


# ------------------------------------------------------------------------------------------ upload, logs, report


def run_upload(settings: Settings, videos: list[Path]) -> None:
    from facerec_cli.infra.errors import aws_errors
    from facerec_cli.pipeline.trigger import settling_note
    from facerec_cli.pipeline.upload import check_files, upload_files

    items = check_files(videos)
    note = settling_note(settings)
    if note:
        err.print(Text(f"note: {note}", style="yellow"), highlight=False, soft_wrap=True)
    with aws_errors(settings, "upload"):
        records = upload_files(owner_checked_s3(settings), settings, items, console=err)
    total = sum(r.size for r in records)
    err.print(
        f"uploaded {plural(len(records), 'video')}, {total / 2**20:.1f} MiB, to s3://{escape(settings.names.input_bucket)}; "
        "follow them with `facerec results --watch`",
        highlight=False,
    )


def write_html_report(settings: Settings, html: Path) -> None:
    from facerec_cli.infra.errors import aws_errors
    from facerec_cli.pipeline.observe.report import write_report

    with aws_errors(settings, "writing the HTML report"):
        rows = write_report(html, settings, *results_clients(settings))
    err.print(f"report of {plural(rows, 'video')} in {escape(str(html))}", highlight=False, soft_wrap=True)


def run_logs(settings: Settings, function: str | None, *, follow: bool, since: str) -> None:
    from facerec_cli.infra import aws
    from facerec_cli.infra.errors import aws_errors
    from facerec_cli.pipeline.observe.function_logs import parse_since, resolve_functions, show_logs

    functions = resolve_functions(settings, function)
    start = parse_since(since)
    client = aws.client(settings, "logs")

    def warn(message: str) -> None:
        err.print(Text(message, style="yellow"), soft_wrap=True)

    with aws_errors(settings, "reading the logs"):
        show_logs(settings, client, functions, since=start, follow=follow, console=out, warn=warn)
