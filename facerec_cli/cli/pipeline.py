"""The AWS side of the CLI: bootstrap, upload, results, logs, destroy.

Every command takes the common options ``--prefix --region --endpoint-url --profile`` (resolved by
:func:`facerec_cli.config.load_settings`: flag > ``FACEREC_*`` > ``facerec.toml`` > default; boto3's
``AWS_ENDPOINT_URL`` is honoured too). AWS errors become one red line and exit code 1.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from facerec_cli.infra import aws
from facerec_cli.cli.options import JsonOpt, friendly
from facerec_cli.infra.cloud_errors import aws_errors
from facerec_cli.config import Settings, load_settings
from facerec_cli.errors import UserError
from facerec_cli.render import err, out

PrefixOpt = Annotated[
    str | None,
    typer.Option("--prefix", help="Resource name prefix: buckets <prefix>-input, <prefix>-stage-1, <prefix>-output. Default: FACEREC_PREFIX, facerec.toml, else facerec."),
]
WatchPrefixOpt = Annotated[
    str | None,
    typer.Option(
        "--prefix",
        help="Resource name prefix: buckets <prefix>-input, -stage-1, -output; with --iaas queues <prefix>-req-queue, -resp-queue and buckets <prefix>-in-bucket, -out-bucket. Default: FACEREC_PREFIX, facerec.toml, else facerec.",
    ),
]
RegionOpt = Annotated[str | None, typer.Option("--region", help="AWS region. Default: FACEREC_REGION, AWS_REGION/AWS_DEFAULT_REGION, facerec.toml, the profile's; us-east-1 only with an endpoint URL.")]
EndpointOpt = Annotated[
    str | None,
    typer.Option("--endpoint-url", help="Send AWS calls to this endpoint (e.g. a moto server); AWS_ENDPOINT_URL works too."),
]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="AWS profile from ~/.aws/config.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing.")]

# Exit code of `results --watch` when --timeout passed with uploads still unanswered (as timeout(1)).
TIMEOUT_EXIT = 124
ACTION_STYLE = {"create": "green", "update": "yellow", "delete": "red", "noop": "dim"}


def settings_from(prefix: str | None, region: str | None, endpoint_url: str | None, profile: str | None, **extra: Any) -> Settings:
    return load_settings(prefix=prefix, region=region, endpoint_url=endpoint_url, profile=profile, **extra)


def owner_checked_s3(settings: Settings, s3: Any | None = None, sts: Any | None = None) -> Any:
    """An S3 client whose calls on the deployment's buckets carry ExpectedBucketOwner (this account)."""
    from facerec_cli.infra.clients import owner_checked_s3 as checked

    return checked(settings, s3, sts)


def stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def print_plan(plan: Any, console: Console, *, extra: list[tuple[str, str, str]] | None = None) -> None:
    """One line per change (``+ create s3 bucket x: detail``), warnings, blockers, then the summary.
    ``extra``: (action, resource, detail) lines that are not AWS API steps (image builds)."""
    for action, resource, detail in extra or []:
        console.print(_plan_line(action, resource, detail), soft_wrap=True)
    for step in plan.changes:
        console.print(_plan_line(step.action, step.resource, step.detail), soft_wrap=True)
    for warning in plan.warnings:
        console.print(Text.assemble(("! ", "yellow"), warning), soft_wrap=True)
    for blocker in plan.blockers:
        console.print(Text.assemble(("!! ", "bold red"), blocker), soft_wrap=True)
    console.print(Text(plan.summary(), style="bold"), soft_wrap=True)


def _plan_line(action: str, resource: str, detail: str) -> Text:
    from facerec_cli.infra.plan import SYMBOLS

    style = ACTION_STYLE.get(action, "")
    line = Text.assemble((f"{SYMBOLS.get(action, '*')} {action:<6} ", style), resource)
    if detail:
        line.append(f": {detail}", style="dim")
    return line


# ------------------------------------------------------------------------------------------ bootstrap


def _gallery_weights(gallery: Path | None, weights: str | None) -> tuple[str | None, str | None]:
    """(weights the gallery was made with, weights to deploy); checks they agree."""
    if gallery is None:
        return None, weights
    from facerec_cli.galleries import load_gallery

    loaded = load_gallery(gallery)  # GalleryError (one red line) on a missing, empty or foreign file; old ones converted
    if not len(loaded.names):
        raise UserError(f"gallery {gallery} has nobody enrolled", hint="enrol photos with `facerec enroll PHOTOS_DIR -o GALLERY`")
    if weights is not None and weights != loaded.weights:
        raise UserError(
            f"gallery {gallery} was made with {loaded.weights} weights, not {weights}",
            hint=f"drop --weights, or enrol again with `facerec enroll ... --weights {weights}`",
        )
    return loaded.weights, loaded.weights


def _deployed_recognition_env(settings: Settings, clients: Any) -> dict[str, str]:
    """The deployed recognition function's environment ({} when there is no function yet): a bootstrap
    without --gallery/--weights or --annotate/--no-annotate keeps what the function does now (other
    weights than its gallery's would be refused at the first video)."""
    from facerec_cli.infra.plan import get_or_none

    config = get_or_none(clients.lambda_.get_function_configuration, FunctionName=settings.names.recognition_function)
    return dict(((config or {}).get("Environment") or {}).get("Variables") or {})


def _deployed_env(settings: Settings, clients: Any, function: str) -> dict[str, str]:
    """A deployed function's environment ({} when there is no such function yet)."""
    from facerec_cli.infra.plan import get_or_none

    config = get_or_none(clients.lambda_.get_function_configuration, FunctionName=function)
    return dict(((config or {}).get("Environment") or {}).get("Variables") or {})


def timeline_env(deployed: dict[str, str], timeline: bool | None, segment_seconds: float | None) -> dict[str, str]:
    """video-splitting's timeline settings: ``--timeline/--no-timeline`` and ``--segment-seconds``, else
    what the deployed function has (off for a new deployment)."""
    from lambdas import env as fenv

    on = deployed.get(fenv.TIMELINE) == "1" if timeline is None else timeline
    if not on:
        return {}
    wanted = {fenv.TIMELINE: "1"}
    seconds = segment_seconds if segment_seconds is not None else deployed.get(fenv.SEGMENT_SECONDS)
    if seconds is not None:
        wanted[fenv.SEGMENT_SECONDS] = f"{float(seconds):g}"
    if deployed.get(fenv.TIMELINE_FPS):
        wanted[fenv.TIMELINE_FPS] = deployed[fenv.TIMELINE_FPS]
    return wanted


def run_bootstrap(
    settings: Settings,
    *,
    gallery: Path | None,
    dry_run: bool,
    skip_images: bool,
    base_image: str | None,
    weights: str | None,
    yes: bool,
    annotate: bool | None = None,
    timeline: bool | None = None,
    segment_seconds: float | None = None,
) -> None:
    """Plan, check, then change. Everything that can refuse the deployment without changing anything
    (a bad gallery, a blocked bucket name, no Docker engine, a refused registry login) is checked before
    the first resource is created; the images are built after the ECR repository exists, and the
    functions are pointed at them last."""
    from lambdas import env as fenv

    from facerec_cli.pipeline.deploy import Clients, DeployOptions, Plan, RichReporter, apply_plan, plan_deploy, refuse_blocked

    _, weights = _gallery_weights(gallery, weights)  # before any AWS call: a bad gallery costs nothing
    clients = Clients.from_settings(settings)
    with aws_errors(settings, "reading the current deployment"):
        deployed = _deployed_recognition_env(settings, clients)
    weights = weights or deployed.get(fenv.WEIGHTS) or "casia-webface"
    if annotate is None:
        annotate = deployed.get(fenv.ANNOTATE) == "1"
    recognition_env = {fenv.ANNOTATE: "1"} if annotate else {}
    with aws_errors(settings, "reading the current deployment"):
        splitting_env = timeline_env(_deployed_env(settings, clients, settings.names.splitting_function), timeline, segment_seconds)
    options = DeployOptions(
        gallery=gallery, weights=weights, with_ecr=not skip_images, recognition_env=recognition_env, splitting_env=splitting_env
    )
    where = f"prefix {settings.prefix}, region {settings.region}" + (f", endpoint {settings.endpoint_url}" if settings.endpoint_url else "")
    err.print(f"bootstrap: {escape(where)}, weights {escape(weights)}", highlight=False)
    reporter = RichReporter(console=err)

    # The plan as it stands before any image exists: what the user sees and confirms, and its blockers.
    plan = plan_deploy(settings, options, clients)
    image_lines: list[tuple[str, str, str]] = []
    if skip_images:
        if any(s.action == "create" and s.resource.startswith("lambda function") for s in plan.steps):
            plan.warnings.append(
                "--skip-images: new functions point at a placeholder image (<repository>:local); AWS Lambda only accepts "
                "an image that exists in ECR, so run without --skip-images to build and push them"
            )
    else:
        repository = f"{settings.registry}/{settings.names.ecr_repository}" if settings.registry else f"ECR repository {settings.names.ecr_repository}"
        image_lines = [("create", "container images video-splitting, face-recognition", f"build with {weights} weights and push to {repository}")]
    print_plan(plan, out, extra=image_lines)
    if dry_run:
        err.print("dry run: nothing was changed", style="dim")
        return
    refuse_blocked(plan)
    if plan.empty and skip_images:
        return
    updates = [s for s in plan.changes if s.action in ("update", "delete")]
    if updates and not yes and stdin_is_tty():
        if not typer.confirm(f"Change {len(updates)} existing resource(s) as shown?", default=True, err=True):
            raise UserError("nothing was changed")

    if not skip_images:
        # Docker and the registry login are checked before the repository is created, so that "no
        # engine" leaves nothing behind; the images need the repository before they can be pushed.
        engine = _open_engine(settings, clients)
        try:
            repository_steps = [s for s in plan.changes if s.resource.startswith("ecr repository")]
            created = apply_plan(Plan("deploy", repository_steps), reporter)
            uris = _build_images(settings, clients, engine=engine, weights=weights, base_image=base_image, done_before=created)
        finally:
            engine.close()
        options = dataclasses.replace(options, splitting_image=uris.get("splitting"), recognition_image=uris.get("recognition"))
        shown = {(s.action, s.resource) for s in plan.changes}
        plan = plan_deploy(settings, options, clients)  # now with the pushed images (and the repository done)
        for step in plan.changes:  # what the images add to the plan shown above: functions on new images
            if (step.action, step.resource) not in shown:
                out.print(_plan_line(step.action, step.resource, step.detail), soft_wrap=True)
        if plan.empty:
            return
    apply_plan(plan, reporter)
    n = settings.names
    err.print(
        f"[green]deployed[/]: upload videos with `facerec upload VIDEO...` (to s3://{escape(n.input_bucket)}), "
        f"then `facerec results --watch` (from s3://{escape(n.output_bucket)})",
        highlight=False,
    )


def _images_module() -> Any:
    try:
        from facerec_cli.pipeline import images
    except ImportError as exc:
        raise UserError(
            f"building images is not available in this installation ({exc})",
            hint="pass --skip-images to keep the functions' current images",
        ) from exc
    return images


def _open_engine(settings: Settings, clients: Any) -> Any:
    with err.status("connecting to the Docker engine…"):
        return _images_module().open_engine(settings, clients, registry=settings.registry)


def _build_images(
    settings: Settings, clients: Any, *, engine: Any, weights: str, base_image: str | None, done_before: list[Any]
) -> dict[str, str]:
    """Build and push; a failure names what this bootstrap had already created (the repository)."""
    from facerec_cli.pipeline.deploy import DeployError

    images = _images_module()

    def on_progress(*args: Any, **kwargs: Any) -> None:
        message = " ".join(str(a) for a in args if a is not None) or ", ".join(f"{k}={v}" for k, v in kwargs.items())
        if message:
            err.print(Text(message, style="dim"), soft_wrap=True)

    try:
        with err.status("building and pushing the container images…"):
            uris = images.build_and_push(
                settings, clients, weights=weights, registry=settings.registry, base_image=base_image, on_progress=on_progress, engine=engine
            )
    except UserError as exc:
        if not done_before:
            raise
        done = "; ".join(f"{s.past} {s.resource}" for s in done_before)
        hint = f"{exc.hint}; " if exc.hint else ""
        raise DeployError(
            f"{exc.args[0] if exc.args else exc}. Done before it: {done}",
            hint=f"{hint}run `facerec bootstrap` again to finish: it only does what is left",
            completed=done_before,
        ) from exc
    for kind, uri in sorted(uris.items()):
        err.print(Text.assemble(("✓ ", "green"), f"image {kind}: {uri}"), soft_wrap=True)
    return uris


# ------------------------------------------------------------------------------------------ destroy


def run_destroy(settings: Settings, *, yes: bool, dry_run: bool) -> None:
    from facerec_cli.pipeline.deploy import Clients, DeployOptions, RichReporter, apply_plan, plan_destroy
    from facerec_cli.pipeline.upload_ledger import UploadLedger

    clients = Clients.from_settings(settings)
    plan = plan_destroy(settings, DeployOptions(with_ecr=True), clients)
    print_plan(plan, out)
    if dry_run:
        err.print("dry run: nothing was deleted", style="dim")
        return
    if plan.empty:
        UploadLedger(settings).forget()
        return
    if not yes:
        if not stdin_is_tty():
            raise UserError("not deleting anything without confirmation", hint="pass --yes to delete without asking")
        if not typer.confirm(f"Delete these {len(plan.changes)} resource(s) and everything in the buckets?", default=False, err=True):
            raise UserError("nothing was deleted")
    apply_plan(plan, RichReporter(console=err))
    UploadLedger(settings).forget()
    err.print(f"[green]destroyed[/] the deployment with prefix {escape(settings.prefix)} in {escape(settings.region)}", highlight=False)


# ------------------------------------------------------------------------------------------ results


def run_results(settings: Settings, *, watch: bool, json_lines: bool, timeout: float) -> int:
    """List (or follow) results; returns the exit code: 0, 1 if any video ended in error, or
    TIMEOUT_EXIT when --watch gave up with uploads still unanswered."""
    from facerec_cli.pipeline.observe import watch_results as wr
    from facerec_cli.pipeline.upload_ledger import UploadLedger

    sess = aws.session(settings)
    s3 = owner_checked_s3(settings, aws.client(settings, "s3", sess=sess), aws.client(settings, "sts", sess=sess))
    reader = wr.ResultsReader(settings, s3, aws.client(settings, "sqs", sess=sess))
    ledger = UploadLedger(settings)
    if not watch:
        snapshot = reader.refresh(ledger.records())
        wr.show(snapshot, json_lines=json_lines)
        return 1 if snapshot.errors else 0
    if not ledger.records():
        err.print("no uploads recorded by `facerec upload` for this deployment: nothing to wait for", style="yellow", highlight=False)
    outcome = wr.watch(reader, ledger.records, timeout=timeout, json_lines=json_lines)
    if not json_lines:
        wr.show(outcome.snapshot, json_lines=False)
    if outcome.timed_out:
        pending = outcome.snapshot.pending
        names = ", ".join(u.video for u in pending[:10]) + (" …" if len(pending) > 10 else "")
        err.print(
            f"[bold red]timed out[/] after {timeout:g}s: {len(pending)} uploaded video(s) without a result: {escape(names)} "
            "(see `facerec logs`)",
            highlight=False,
        )
        return TIMEOUT_EXIT
    return 1 if outcome.snapshot.errors else 0


# ------------------------------------------------------------------------------------------ watch --iaas


def run_iaas_watch(
    prefix: str | None,
    region: str | None,
    endpoint_url: str | None,
    profile: str | None,
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
        return iaas_watch.watch(source, interval=interval, until_idle=until_idle, json_lines=json_lines)
    from facerec_cli.cli.iaas import _settings  # the settings `facerec iaas ...` resolve

    settings = _settings(prefix, region, endpoint_url, profile)
    with aws_errors(settings, "watching the IaaS system"):
        source = iaas_watch.aws_source(settings)
        return iaas_watch.watch(source, interval=interval, until_idle=until_idle, json_lines=json_lines)


# ------------------------------------------------------------------------------------------ register


def register(app: typer.Typer) -> None:
    """Add the AWS commands to the app."""

    @app.command()
    @friendly
    def bootstrap(
        prefix: PrefixOpt = None,
        region: RegionOpt = None,
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
        retain_days: Annotated[
            int | None,
            typer.Option(
                "--retain-days", min=0,
                help="Uploads (input bucket) and results (output bucket; the gallery stays) expire after N days; 0 removes the rule. "
                "Default: FACEREC_RETAIN_DAYS, facerec.toml, else as deployed (a new deployment keeps everything).",
            ),
        ] = None,
        yes: YesOpt = False,
        endpoint_url: EndpointOpt = None,
        profile: ProfileOpt = None,
    ) -> None:
        """Create or update everything on AWS (buckets, failure queue, log groups, ECR, images, roles,
        functions, trigger, gallery), idempotently: a second run has nothing to change."""
        settings = settings_from(prefix, region, endpoint_url, profile, registry=registry, retain_days=retain_days)
        with aws_errors(settings, "bootstrap"):
            run_bootstrap(
                settings, gallery=gallery, dry_run=dry_run, skip_images=skip_images, base_image=base_image, weights=weights, yes=yes,
                annotate=annotate, timeline=timeline, segment_seconds=segment_seconds,
            )

    @app.command()
    @friendly
    def upload(
        videos: Annotated[list[Path], typer.Argument(metavar="VIDEO", help="Video files (.mp4 .mov .mkv .avi .webm .m4v); the key is the file name.")],
        prefix: PrefixOpt = None,
        region: RegionOpt = None,
        endpoint_url: EndpointOpt = None,
        profile: ProfileOpt = None,
    ) -> None:
        """Upload videos to the input bucket (multipart, with progress). Every file is checked first:
        nothing is sent if any is not a video or is empty."""
        from facerec_cli.pipeline.upload import check_files, upload_files

        settings = settings_from(prefix, region, endpoint_url, profile)
        items = check_files(videos)
        with aws_errors(settings, "upload"):
            records = upload_files(owner_checked_s3(settings), settings, items, console=err)
        total = sum(r.size for r in records)
        err.print(
            f"uploaded {len(records)} video(s), {total / 2**20:.1f} MiB, to s3://{escape(settings.names.input_bucket)}; "
            "follow them with `facerec results --watch`",
            highlight=False,
        )

    @app.command()
    @friendly
    def results(
        watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow new results live until every uploaded video is answered.")] = False,
        json_lines: JsonOpt = False,
        timeout: Annotated[
            float, typer.Option("--timeout", min=0.0, help="With --watch: give up after this many seconds (exit code 124).")
        ] = 900.0,
        html: Annotated[
            Path | None, typer.Option("--html", help="Also write a self-contained HTML report: a row per video with its annotated frame.")
        ] = None,
        prefix: PrefixOpt = None,
        region: RegionOpt = None,
        endpoint_url: EndpointOpt = None,
        profile: ProfileOpt = None,
    ) -> None:
        """List results from the output bucket, and failed invocations from the failure queue as
        errors. Exits 1 if any video ended in error."""
        settings = settings_from(prefix, region, endpoint_url, profile)
        with aws_errors(settings, "reading results"):
            code = run_results(settings, watch=watch, json_lines=json_lines, timeout=timeout)
        if html is not None:
            from facerec_cli.pipeline.observe.report import write_report

            with aws_errors(settings, "writing the HTML report"):
                sess = aws.session(settings)
                s3 = owner_checked_s3(settings, aws.client(settings, "s3", sess=sess), aws.client(settings, "sts", sess=sess))
                rows = write_report(html, settings, s3, aws.client(settings, "sqs", sess=sess))
            err.print(f"report of {rows} video(s) in {escape(str(html))}", highlight=False, soft_wrap=True)
        if code:
            raise typer.Exit(code)

    @app.command("watch")
    @friendly
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
        prefix: WatchPrefixOpt = None,
        region: RegionOpt = None,
        endpoint_url: EndpointOpt = None,
        profile: ProfileOpt = None,
    ) -> None:
        """Live dashboard of the pipeline until Ctrl-C: videos per bucket, in flight, finished, failed,
        latency upload -> result (p50/p95), and the last errors in the functions' logs. With --iaas: the
        IaaS system's queue depths and app instances. List calls only."""
        if iaas or web_url:
            run_iaas_watch(prefix, region, endpoint_url, profile, web_url=web_url, interval=interval, until_idle=until_idle, json_lines=json_lines)
            return
        from facerec_cli.pipeline.observe.dashboard import run_watch

        settings = settings_from(prefix, region, endpoint_url, profile)
        with aws_errors(settings, "watching the pipeline"):
            run_watch(settings, interval=interval, until_idle=until_idle, json_lines=json_lines)

    @app.command()
    @friendly
    def logs(
        function: Annotated[
            str | None, typer.Option("--function", "-f", help="video-splitting or face-recognition (short: splitting, recognition); default both.")
        ] = None,
        follow: Annotated[bool, typer.Option("--follow", help="Keep printing new events until Ctrl-C.")] = False,
        since: Annotated[str, typer.Option("--since", help="Start this long ago (30s, 10m, 2h, 1d) or at this time (2026-01-31T14:00).")] = "10m",
        prefix: PrefixOpt = None,
        region: RegionOpt = None,
        endpoint_url: EndpointOpt = None,
        profile: ProfileOpt = None,
    ) -> None:
        """CloudWatch logs of the functions: timestamp, function, message, oldest first."""
        from facerec_cli.pipeline.observe.function_logs import parse_since, resolve_functions, show_logs

        settings = settings_from(prefix, region, endpoint_url, profile)
        functions = resolve_functions(settings, function)
        start = parse_since(since)
        client = aws.client(settings, "logs")

        def warn(message: str) -> None:
            err.print(Text(message, style="yellow"), soft_wrap=True)

        with aws_errors(settings, "reading the logs"):
            show_logs(settings, client, functions, since=start, follow=follow, console=out, warn=warn)

    @app.command()
    @friendly
    def destroy(
        yes: YesOpt = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be deleted and delete nothing.")] = False,
        prefix: PrefixOpt = None,
        region: RegionOpt = None,
        endpoint_url: EndpointOpt = None,
        profile: ProfileOpt = None,
    ) -> None:
        """Delete everything bootstrap created (buckets with their objects, functions, roles, queue,
        log groups, ECR repository). Asks first unless --yes."""
        settings = settings_from(prefix, region, endpoint_url, profile)
        with aws_errors(settings, "destroy"):
            run_destroy(settings, yes=yes, dry_run=dry_run)
