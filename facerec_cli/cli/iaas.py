"""CLI of the IaaS system: ``facerec web``, ``facerec worker`` and ``facerec iaas run-local|bootstrap|destroy``.

Common options as elsewhere: ``--prefix --region --endpoint-url --profile`` (flag > ``FACEREC_*`` >
``facerec.toml`` > default). The IaaS-only settings (``ami``, ``instance_type``, ``web_ami``,
``web_instance_type``, ``key_name``, ``port``, ``max_instances``...) follow the same precedence:
flag > ``FACEREC_<NAME>`` (e.g. ``FACEREC_AMI``) > the ``[iaas]`` table of ``facerec.toml`` > default
(:func:`facerec_cli.config.load_iaas_settings`).

``app`` holds ``web`` and ``worker`` (merged into the root app without a group name), ``iaas_group``
the ``iaas`` group. The deploy flow behind ``iaas bootstrap``/``destroy`` is in :mod:`facerec_cli.cli.deploy_flow`.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from facerec_cli.cli.options import (
    AwsTarget,
    DestroyDryRunOpt,
    Device,
    DeviceOpt,
    DryRunOpt,
    IaasPrefixOpt,
    RecogniseWeightsOpt,
    ThresholdOpt,
    YesOpt,
    aws_target_options,
    user_errors_as_exit_codes,
)
from facerec_cli.config import ConfigFile, IaasSettings, Settings, load_iaas_settings
from facerec_cli.errors import UserError
from facerec_cli.config import CourseGrader, grader_settings
from facerec_cli.render import err, out, plural

MaxInstancesOpt = Annotated[int | None, typer.Option("--max-instances", min=0, max=1000, help="Most app-tier instances (default 20; the course's graders: at most 20 in 2024, exactly 15 in Fall 2025).")]
PerInstanceOpt = Annotated[int | None, typer.Option("--per-instance", min=1, help="Queued or in-progress requests per app instance.")]
ScaleInOpt = Annotated[float | None, typer.Option("--scale-in-after", min=0.0, help="Seconds demand must stay lower before instances are stopped (to 0 when idle).")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", min=0.1, help="Seconds an HTTP request waits for its answer before a 504 (default 60; a course grader waits up to 420).")]
ScaleIntervalOpt = Annotated[float | None, typer.Option("--scale-interval", min=0.1, help="Seconds between scaling decisions (default 5).")]
CourseGraderOpt = Annotated[
    CourseGrader | None,
    typer.Option(
        "--course-grader",
        help="Defaults a course's Project 1 grader expects: 2024 (at most 20 app instances) or fall2025 (exactly 15); "
        "both: --timeout 420, --scale-in-after 3, --scale-interval 1. Flags, FACEREC_* and facerec.toml still win.",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", help="Shared token the web tier asks every request for (header 'Authorization: Bearer <token>' or 'X-Facerec-Token'); 401 without it. Default: FACEREC_TOKEN; none: no token asked for."),
]
ChannelTimeoutOpt = Annotated[int, typer.Option("--channel-timeout", min=1, help="Seconds a connection may stay idle before it is closed.")]
ReadTimeoutOpt = Annotated[float, typer.Option("--read-timeout", min=1.0, help="Seconds a client has to send its whole request (then 408).")]

app = typer.Typer()
iaas_group = typer.Typer(
    name="iaas",
    help="The IaaS variant: web tier, SQS request/response queues and an auto-scaled EC2 app tier (or all on this machine).",
    no_args_is_help=True,
)


def load_settings_and_iaas(target: AwsTarget, course_grader: CourseGrader | None = None, **iaas_flags: Any) -> tuple[Settings, IaasSettings]:
    """The common settings and the IaaS ones, from one reading of facerec.toml (a course grader's
    values as the IaaS defaults)."""
    config = ConfigFile.read()
    return target.settings(config=config), load_iaas_settings(config=config, defaults=grader_settings(course_grader), **iaas_flags)


# ------------------------------------------------------------------------------------------ web, worker


@app.command("web")
@user_errors_as_exit_codes
@aws_target_options(IaasPrefixOpt)
def web_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 on the web instance).")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option("--port", min=0, max=65535, help="TCP port (default 8000).")] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, max=1024, help="Server threads: the most requests in flight.")] = 64,
    timeout: TimeoutOpt = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.01, help="Largest accepted image, MiB.")] = 10.0,
    max_instances: MaxInstancesOpt = None,
    per_instance: PerInstanceOpt = None,
    scale_in_after: ScaleInOpt = None,
    scale_interval: ScaleIntervalOpt = None,
    course_grader: CourseGraderOpt = None,
    scaler: Annotated[bool, typer.Option("--scaler/--no-scaler", help="Launch and stop app instances as the queue asks; --no-scaler: serve only.")] = True,
    token: TokenOpt = None,
    token_sha256: Annotated[str | None, typer.Option("--token-sha256", help="The token's SHA-256 (hex) instead of the token (what bootstrap puts on the web-instance). Default: FACEREC_TOKEN_SHA256.")] = None,
    channel_timeout: ChannelTimeoutOpt = 30,
    read_timeout: ReadTimeoutOpt = 60.0,
    target: AwsTarget = AwsTarget(),
) -> None:
    """Serve the web tier (POST / with the multipart field inputFile answers "<stem>:<name>"; GET /healthz) and run the auto-scaler (EC2 app instances from the launch template, by request-queue depth)."""
    from facerec_cli.iaas.web import token_sha256 as digest_of
    from facerec_cli.infra.errors import aws_errors

    log_to_stderr()
    settings, iaas = load_settings_and_iaas(
        target, course_grader, port=port, timeout=timeout, max_instances=max_instances, per_instance=per_instance,
        scale_in_after=scale_in_after, scale_interval=scale_interval, token=token, token_sha256=token_sha256,
    )
    digest = _token_digest(iaas.token, iaas.token_sha256, digest_of)
    with aws_errors(settings, "web tier"):
        run_web(
            settings, host=host, port=iaas.port, threads=threads, timeout=iaas.timeout, max_upload_mb=max_upload_mb,
            max_instances=iaas.max_instances, per_instance=iaas.per_instance, scale_in_after=iaas.scale_in_after,
            scale_interval=iaas.scale_interval, scaler=scaler, token_sha256=digest, channel_timeout=channel_timeout, read_timeout=read_timeout,
        )


@app.command("worker")
@user_errors_as_exit_codes
@aws_target_options(IaasPrefixOpt)
def worker_command(
    gallery: Annotated[str | None, typer.Option("--gallery", "-g", help="Gallery: s3://bucket/key or a file (default: the deployment's gallery bucket).")] = None,
    threshold: ThresholdOpt = None,
    weights: RecogniseWeightsOpt = None,
    device: DeviceOpt = Device.cpu,
    poll_wait: Annotated[int, typer.Option("--poll-wait", min=0, max=20, help="SQS long-poll seconds.")] = 20,
    threads: Annotated[int, typer.Option("--threads", "--torch-threads", min=0, help="onnxruntime threads per model; 0: all cores.")] = 0,
    exit_when_idle: Annotated[float | None, typer.Option("--exit-when-idle", min=0.0, help="Exit after this many seconds without a request.")] = None,
    target: AwsTarget = AwsTarget(),
) -> None:
    """Run one app-tier worker: take requests from the request queue, recognise, answer on the response queue and in the out-bucket. SIGTERM/Ctrl-C: finish the current request, then exit."""
    from facerec_cli.infra.errors import aws_errors

    log_to_stderr()
    settings = target.settings()
    with aws_errors(settings, "app-tier worker"):
        run_worker(settings, gallery=gallery, threshold=threshold, device=device.value, poll_wait=poll_wait,
                   threads=threads, exit_when_idle=exit_when_idle, weights=weights)


# ------------------------------------------------------------------------------------------ iaas group


@iaas_group.command("run-local")
@user_errors_as_exit_codes
def run_local_command(
    gallery: Annotated[Path, typer.Option("--gallery", "-g", help="Gallery file made by `facerec enroll`.")],
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1; 0 picks a free one.")] = 8000,
    max_instances: Annotated[int, typer.Option("--max-instances", min=0, max=32, help="Most local worker processes (~1 GB each).")] = 2,
    per_instance: Annotated[int, typer.Option("--per-instance", min=1, help="Queued or in-progress requests per worker.")] = 1,
    scale_in_after: Annotated[float, typer.Option("--scale-in-after", min=0.0, help="Idle seconds before workers are stopped.")] = 10.0,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds an HTTP request waits before a 504.")] = 60.0,
    visibility_timeout: Annotated[int, typer.Option("--visibility-timeout", min=1, max=43200, help="Seconds before a request a worker took reappears.")] = 30,
    threshold: ThresholdOpt = None,
    log_file: Annotated[Path | None, typer.Option("--log", help="Write the workers' logs here instead of stderr.")] = None,
    duration: Annotated[float | None, typer.Option("--duration", min=0.0, help="Stop after this many seconds (default: Ctrl-C).")] = None,
    token: TokenOpt = None,
    channel_timeout: ChannelTimeoutOpt = 30,
    read_timeout: ReadTimeoutOpt = 60.0,
) -> None:
    """The whole IaaS system on this machine: queues and buckets on an embedded moto server, the web tier on 127.0.0.1, and worker processes as the auto-scaled app instances."""
    from facerec_cli.iaas.local import LocalOptions

    log_to_stderr()
    options = LocalOptions(
        port=port, max_instances=max_instances, per_instance=per_instance, scale_in_after_s=scale_in_after,
        request_timeout_s=timeout, visibility_timeout_s=visibility_timeout, threshold=threshold,
        log_path=str(log_file) if log_file else None, token=load_iaas_settings(token=token).token,
        channel_timeout_s=channel_timeout, read_timeout_s=read_timeout,
    )
    run_local_system(gallery, options, duration=duration)


@iaas_group.command("bootstrap")
@user_errors_as_exit_codes
@aws_target_options(IaasPrefixOpt)
def bootstrap_command(
    gallery: Annotated[Path | None, typer.Option("--gallery", "-g", help="Gallery to upload for the app tier.")] = None,
    ami: Annotated[str | None, typer.Option("--ami", help="AMI of the app tier (facerec installed). Needed to create the launch template.")] = None,
    instance_type: Annotated[str | None, typer.Option("--instance-type", help="App-tier instance type (default t3.medium).")] = None,
    web_ami: Annotated[str | None, typer.Option("--web-ami", help="AMI of the web-instance (default: --ami).")] = None,
    web_instance_type: Annotated[str | None, typer.Option("--web-instance-type", help="Web-instance type (default t3.small).")] = None,
    key_name: Annotated[str | None, typer.Option("--key-name", help="EC2 key pair for SSH (default: none).")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="Web tier port (default 8000).")] = None,
    allow_cidr: Annotated[str | None, typer.Option("--allow-cidr", help="Required: who may reach the web tier, e.g. 203.0.113.7/32 (your address) or 0.0.0.0/0 (anyone; then pass --token too). Default: FACEREC_ALLOW_CIDR, facerec.toml.")] = None,
    token: TokenOpt = None,
    max_instances: MaxInstancesOpt = None,
    per_instance: PerInstanceOpt = None,
    scale_in_after: ScaleInOpt = None,
    scale_interval: ScaleIntervalOpt = None,
    timeout: TimeoutOpt = None,
    course_grader: CourseGraderOpt = None,
    visibility_timeout: Annotated[int | None, typer.Option("--visibility-timeout", min=1, max=43200, help="Request-queue visibility timeout, s (default 30).")] = None,
    web: Annotated[bool, typer.Option("--web/--no-web", help="Launch the web-instance; --no-web: run `facerec web` elsewhere.")] = True,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    target: AwsTarget = AwsTarget(),
) -> None:
    """Create or update the IaaS deployment on AWS, idempotently: buckets, queues (with a dead-letter queue), gallery, IAM roles and instance profiles, security groups, the app tier's launch template and Auto Scaling group, and the web-instance. A second run has nothing to change."""
    from facerec_cli.cli.deploy_flow import run_iaas_bootstrap

    settings, iaas = load_settings_and_iaas(
        target, course_grader, ami=ami, instance_type=instance_type, web_ami=web_ami, web_instance_type=web_instance_type,
        key_name=key_name, port=port, allow_cidr=allow_cidr, token=token, max_instances=max_instances, per_instance=per_instance,
        scale_in_after=scale_in_after, scale_interval=scale_interval, timeout=timeout, visibility_timeout=visibility_timeout,
    )
    _check_gallery(gallery)
    run_iaas_bootstrap(settings, iaas_options(iaas, gallery=gallery, with_web=web), dry_run=dry_run, yes=yes)


@iaas_group.command("destroy")
@user_errors_as_exit_codes
@aws_target_options(IaasPrefixOpt)
def destroy_command(
    yes: YesOpt = False,
    dry_run: DestroyDryRunOpt = False,
    target: AwsTarget = AwsTarget(),
) -> None:
    """Delete everything `facerec iaas bootstrap` created (instances first, buckets with their objects last). Asks first unless --yes."""
    from facerec_cli.cli.deploy_flow import run_iaas_destroy

    settings = target.settings()
    run_iaas_destroy(settings, yes=yes, dry_run=dry_run)


# ------------------------------------------------------------------------------------------ what they run


def iaas_options(iaas: IaasSettings, *, gallery: Path | None, with_web: bool) -> Any:
    """The IaaS stack's options from the resolved settings (the token travels as its SHA-256 only)."""
    from facerec_cli.iaas.stack import IaasOptions
    from facerec_cli.iaas.web import token_sha256

    return IaasOptions(
        gallery=gallery, ami=iaas.ami, instance_type=iaas.instance_type, web_ami=iaas.web_ami, web_instance_type=iaas.web_instance_type,
        key_name=iaas.key_name, port=iaas.port, allow_cidr=iaas.allow_cidr, token_sha256=_token_digest(iaas.token, None, token_sha256),
        max_instances=iaas.max_instances, per_instance=iaas.per_instance, scale_in_after_s=int(iaas.scale_in_after), scale_interval_s=iaas.scale_interval,
        request_timeout_s=int(iaas.timeout), visibility_timeout_s=iaas.visibility_timeout, with_web=with_web,
    )


def run_local_system(gallery: Path, options: Any, *, duration: float | None) -> None:
    """Start the local IaaS system, print its URL on stdout, serve until ``duration`` or Ctrl-C."""
    from facerec_cli.iaas.local import LocalIaas
    from facerec_cli.iaas.web import limit_malloc_arenas

    limit_malloc_arenas()
    with LocalIaas(gallery, options) as system:
        out.print(system.url, highlight=False)
        err.print(f"curl -F inputFile=@photo.jpg {escape(system.url)}   (Ctrl-C stops)", highlight=False)
        started = time.monotonic()
        try:
            while duration is None or time.monotonic() - started < duration:
                time.sleep(0.5)
        except KeyboardInterrupt:
            err.print("stopping…", style="dim")


def log_to_stderr(verbose: bool = False) -> None:
    """Log lines of facerec's IaaS parts (and waitress) to stderr through rich; the root logger is left alone."""
    import logging

    from rich.logging import RichHandler

    for name in ("facerec", "waitress"):
        logger = logging.getLogger(name)
        if not any(getattr(h, "_facerec", False) for h in logger.handlers):
            handler = RichHandler(console=err, show_path=False, markup=False, rich_tracebacks=False)
            handler._facerec = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def run_web(settings: Settings, *, host: str, port: int, threads: int, timeout: float, max_upload_mb: float,
            max_instances: int, per_instance: int, scale_in_after: float, scale_interval: float, scaler: bool,
            token_sha256: str | None = None, channel_timeout: int = 30, read_timeout: float = 60.0) -> None:
    from facerec_cli.infra import aws
    from facerec_cli.iaas.names import IaasNames
    from facerec_cli.iaas.pools import AsgPool
    from facerec_cli.iaas.scaler import AutoScaler, ScalingPolicy
    from facerec_cli.iaas.web import WebConfig, WebTier, limit_malloc_arenas
    from facerec_cli.iaas.web_server import WebServer

    limit_malloc_arenas()  # before the request threads exist: bounded memory per waiting request
    names = IaasNames(settings.prefix)
    sess = aws.session(settings)
    sqs = _pooled_client(settings, sess, "sqs", threads + 4)  # one connection per request thread
    config = WebConfig(timeout_s=timeout, max_upload_bytes=int(max_upload_mb * 2**20), token_sha256=token_sha256)
    tier = WebTier(s3=_pooled_client(settings, sess, "s3", threads + 4), sqs=sqs, names=names, config=config)
    auto = None
    if scaler:
        pool = AsgPool(aws.client(settings, "autoscaling", sess=sess), aws.client(settings, "ec2", sess=sess), names)
        auto = AutoScaler(pool, tier.depth_source(aws.client(settings, "sqs", sess=sess)), ScalingPolicy(max_instances, per_instance, scale_in_after, scale_interval))
        tier.scaler = auto
    server = WebServer(tier.app, host=host, port=port, threads=threads, max_body=config.max_upload_bytes + 2**20,
                       channel_timeout_s=channel_timeout, read_timeout_s=read_timeout, counts=tier.counts)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    tier.start()  # the lease: refused while another web tier serves this prefix
    if auto is not None:
        auto.start()
    err.print(f"web tier on {escape(server.url)}/ (POST inputFile{', with the token' if token_sha256 else ''}); "
              f"queues {names.request_queue} / {names.response_queue}"
              + (f"; auto-scaling {names.autoscaling_group} up to {plural(max_instances, 'app instance')}" if auto else "; no auto-scaler"), highlight=False)
    try:
        server.serve_forever()  # returns on Ctrl-C / SIGTERM
    except KeyboardInterrupt:
        pass
    finally:
        if auto is not None:
            auto.stop()
        tier.stop()
        server.stop()


def _pooled_client(settings: Settings, sess: Any, service: str, connections: int) -> Any:
    import botocore.config

    from facerec_cli.infra import aws

    aws.client(settings, service, sess=sess)  # no credentials: the one-line error every command gives
    config = botocore.config.Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=connections)
    return sess.client(service, endpoint_url=settings.endpoint_url, config=config)


def run_worker(settings: Settings, *, gallery: str | None, threshold: float | None, device: str, poll_wait: int,
               threads: int, exit_when_idle: float | None, weights: str | None = None) -> int:
    from facerec_cli.infra import aws
    from facerec_cli.iaas.names import IaasNames
    from facerec_cli.iaas.worker import AppWorker, WorkerConfig, install_stop_signals

    names = IaasNames(settings.prefix)
    config = WorkerConfig(
        gallery=gallery or names.gallery_uri, threshold=threshold, device=device, weights=weights, poll_wait_s=poll_wait,
        threads=threads, exit_when_idle_s=exit_when_idle,
    )
    sess = aws.session(settings)
    worker = AppWorker(aws.client(settings, "sqs", sess=sess), aws.client(settings, "s3", sess=sess), names, config)
    stop = threading.Event()
    install_stop_signals(stop)
    worker.load()
    return worker.run(stop)


def _token_digest(token: str | None, digest: str | None, digest_of: Any) -> str | None:
    if token and digest:
        raise UserError("pass --token or --token-sha256, not both")
    if digest:
        digest = digest.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise UserError(f"--token-sha256 {digest[:16]}… is not a SHA-256 in hex (64 characters)")
        return digest
    return digest_of(token) if token else None


def _check_gallery(gallery: Path | None) -> None:
    if gallery is None:
        return
    from facerec_cli.gallery_files import load_gallery

    loaded = load_gallery(gallery)
    if not loaded.names:
        raise UserError(f"gallery {gallery} has nobody enrolled", hint="enrol photos with `facerec enroll PHOTOS_DIR -o GALLERY`")
