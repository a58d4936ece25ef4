"""CLI of the IaaS system: ``facerec web``, ``facerec worker`` and ``facerec iaas run-local|bootstrap|destroy``.

Common options as elsewhere: ``--prefix --region --endpoint-url --profile`` (flag > ``FACEREC_*`` >
``facerec.toml`` > default). The IaaS-only settings (``ami``, ``instance_type``, ``web_ami``,
``web_instance_type``, ``key_name``, ``port``, ``max_instances``...) follow the same precedence:
flag > ``FACEREC_<NAME>`` (e.g. ``FACEREC_AMI``) > the ``[iaas]`` table of ``facerec.toml`` > default.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from facerec_cli.cli.options import Device, DeviceOpt, RecogniseWeightsOpt, ThresholdOpt, friendly
from facerec_cli.errors import UserError
from facerec_cli.render import err, out

PrefixOpt = Annotated[
    str | None,
    typer.Option("--prefix", help="Resource name prefix: queues <prefix>-req-queue/-resp-queue, buckets <prefix>-in-bucket/-out-bucket. Default: FACEREC_PREFIX, facerec.toml, else facerec."),
]
RegionOpt = Annotated[str | None, typer.Option("--region", help="AWS region. Default: FACEREC_REGION, AWS_REGION/AWS_DEFAULT_REGION, facerec.toml, the profile's; us-east-1 only with an endpoint URL.")]
EndpointOpt = Annotated[str | None, typer.Option("--endpoint-url", help="Send AWS calls to this endpoint (e.g. a moto server); AWS_ENDPOINT_URL works too.")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="AWS profile from ~/.aws/config.")]
MaxInstancesOpt = Annotated[int | None, typer.Option("--max-instances", min=0, max=1000, help="Most app-tier instances (course: 20).")]
PerInstanceOpt = Annotated[int | None, typer.Option("--per-instance", min=1, help="Queued or in-progress requests per app instance.")]
ScaleInOpt = Annotated[float | None, typer.Option("--scale-in-after", min=0.0, help="Seconds demand must stay lower before instances are stopped (to 0 when idle).")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", min=0.1, help="Seconds an HTTP request waits for its answer before a 504.")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", help="Shared token the web tier asks every request for (header 'Authorization: Bearer <token>' or 'X-Facerec-Token'); 401 without it. Default: FACEREC_TOKEN; none: no token asked for."),
]

DEFAULTS: dict[str, Any] = {
    "ami": None,
    "instance_type": "t3.medium",
    "web_ami": None,
    "web_instance_type": "t3.small",
    "key_name": None,
    "port": 8000,
    "allow_cidr": None,  # required by bootstrap: no default that opens the web tier to the internet
    "token": None,
    "token_sha256": None,
    "max_instances": 20,
    "per_instance": 1,
    "scale_in_after": 30.0,
    "timeout": 60.0,
    "visibility_timeout": 30,
}


def _file_table() -> dict[str, Any]:
    from facerec_cli.config import config_files

    for path in config_files():
        if path.is_file():
            try:
                with path.open("rb") as fh:
                    table = tomllib.load(fh).get("iaas") or {}
            except tomllib.TOMLDecodeError as exc:
                raise UserError(f"{path} is not valid TOML: {exc}") from exc
            return table if isinstance(table, dict) else {}
    return {}


def setting(name: str, flag: Any, cast: type = str) -> Any:
    """flag > FACEREC_<NAME> > facerec.toml [iaas] > default."""
    if flag is not None:
        return flag
    env = os.environ.get(f"FACEREC_{name.upper()}")
    if env:
        return cast(env)
    table = _file_table()
    if name in table:
        return cast(table[name])
    return DEFAULTS.get(name)


def _settings(prefix: str | None, region: str | None, endpoint_url: str | None, profile: str | None) -> Any:
    from facerec_cli.config import load_settings

    return load_settings(prefix=prefix, region=region, endpoint_url=endpoint_url, profile=profile)


def _logging(verbose: bool = False) -> None:
    """Log lines of facerec's IaaS parts (and waitress) to stderr through rich; the root logger is left alone."""
    from rich.logging import RichHandler

    for name in ("facerec", "waitress"):
        logger = logging.getLogger(name)
        if not any(getattr(h, "_facerec", False) for h in logger.handlers):
            handler = RichHandler(console=err, show_path=False, markup=False, rich_tracebacks=False)
            handler._facerec = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def _fix_hint(exc: UserError) -> UserError:
    # The shared executor names the PaaS commands in its "run it again" hint.
    if exc.hint:
        exc.hint = exc.hint.replace("`facerec bootstrap`", "`facerec iaas bootstrap`").replace("`facerec destroy`", "`facerec iaas destroy`")
    return exc


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------ commands


def run_web(settings: Any, *, host: str, port: int, threads: int, timeout: float, max_upload_mb: float,
            max_instances: int, per_instance: int, scale_in_after: float, scale_interval: float, scaler: bool,
            token_sha256: str | None = None, channel_timeout: int = 30, read_timeout: float = 60.0) -> None:
    from facerec_cli.infra import aws
    from facerec_cli.iaas.names import IaasNames
    from facerec_cli.iaas.pools import AsgPool
    from facerec_cli.iaas.scaler import AutoScaler, ScalingPolicy
    from facerec_cli.iaas.web import WebConfig, WebServer, WebTier, limit_malloc_arenas

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
              + (f"; auto-scaling {names.autoscaling_group} up to {max_instances} app instance(s)" if auto else "; no auto-scaler"), highlight=False)
    try:
        server.serve_forever()  # returns on Ctrl-C / SIGTERM
    except KeyboardInterrupt:
        pass
    finally:
        if auto is not None:
            auto.stop()
        tier.stop()
        server.stop()


def _pooled_client(settings: Any, sess: Any, service: str, connections: int) -> Any:
    import botocore.config

    from facerec_cli.infra import aws

    aws.client(settings, service, sess=sess)  # no credentials: the one-line error every command gives
    config = botocore.config.Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=connections)
    return sess.client(service, endpoint_url=settings.endpoint_url, config=config)


def run_worker(settings: Any, *, gallery: str | None, threshold: float | None, device: str, poll_wait: int,
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
    from facerec_cli.galleries import load_gallery

    loaded = load_gallery(gallery)
    if not loaded.names:
        raise UserError(f"gallery {gallery} has nobody enrolled", hint="enrol photos with `facerec enroll PHOTOS_DIR -o GALLERY`")


def register(app: typer.Typer) -> None:
    """Add ``web``, ``worker`` and the ``iaas`` group (``run-local``, ``bootstrap``, ``destroy``)."""

    @app.command("web")
    @friendly
    def web_command(
        host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 on the web instance).")] = "127.0.0.1",
        port: Annotated[int | None, typer.Option("--port", min=0, max=65535, help="TCP port (default 8000).")] = None,
        threads: Annotated[int, typer.Option("--threads", min=1, max=1024, help="Server threads: the most requests in flight.")] = 64,
        timeout: TimeoutOpt = None,
        max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.01, help="Largest accepted image, MiB.")] = 10.0,
        max_instances: MaxInstancesOpt = None,
        per_instance: PerInstanceOpt = None,
        scale_in_after: ScaleInOpt = None,
        scale_interval: Annotated[float, typer.Option("--scale-interval", min=0.1, help="Seconds between scaling decisions.")] = 5.0,
        no_scaler: Annotated[bool, typer.Option("--no-scaler", help="Serve only; do not launch or stop app instances.")] = False,
        token: TokenOpt = None,
        token_sha256: Annotated[str | None, typer.Option("--token-sha256", help="The token's SHA-256 (hex) instead of the token (what bootstrap puts on the web-instance). Default: FACEREC_TOKEN_SHA256.")] = None,
        channel_timeout: Annotated[int, typer.Option("--channel-timeout", min=1, help="Seconds a connection may stay idle before it is closed.")] = 30,
        read_timeout: Annotated[float, typer.Option("--read-timeout", min=1.0, help="Seconds a client has to send its whole request (then 408).")] = 60.0,
        prefix: PrefixOpt = None,
        region: RegionOpt = None,
        endpoint_url: EndpointOpt = None,
        profile: ProfileOpt = None,
    ) -> None:
        """Serve the web tier (POST / with the multipart field inputFile answers "<stem>:<name>"; GET /healthz) and run the auto-scaler (EC2 app instances from the launch template, by request-queue depth)."""
        from facerec_cli.infra.cloud_errors import aws_errors

        from facerec_cli.iaas.web import token_sha256 as digest_of

        _logging()
        settings = _settings(prefix, region, endpoint_url, profile)
        digest = _token_digest(setting("token", token), setting("token_sha256", token_sha256), digest_of)
        with aws_errors(settings, "web tier"):
            run_web(
                settings, host=host, port=setting("port", port, int), threads=threads, timeout=setting("timeout", timeout, float),
                max_upload_mb=max_upload_mb, max_instances=setting("max_instances", max_instances, int),
                per_instance=setting("per_instance", per_instance, int), scale_in_after=setting("scale_in_after", scale_in_after, float),
                scale_interval=scale_interval, scaler=not no_scaler, token_sha256=digest,
                channel_timeout=channel_timeout, read_timeout=read_timeout,
            )

    @app.command("worker")
    @friendly
    def worker_command(
        gallery: Annotated[str | None, typer.Option("--gallery", "-g", help="Gallery: s3://bucket/key or a file (default: the deployment's gallery bucket).")] = None,
        threshold: ThresholdOpt = None,
        weights: RecogniseWeightsOpt = None,
        device: DeviceOpt = Device.cpu,
        poll_wait: Annotated[int, typer.Option("--poll-wait", min=0, max=20, help="SQS long-poll seconds.")] = 20,
        threads: Annotated[int, typer.Option("--threads", "--torch-threads", min=0, help="onnxruntime threads per model; 0: all cores.")] = 0,
        exit_when_idle: Annotated[float | None, typer.Option("--exit-when-idle", min=0.0, help="Exit after this many seconds without a request.")] = None,
        prefix: PrefixOpt = None,
        region: RegionOpt = None,
        endpoint_url: EndpointOpt = None,
        profile: ProfileOpt = None,
    ) -> None:
        """Run one app-tier worker: take requests from the request queue, recognise, answer on the response queue and in the out-bucket. SIGTERM/Ctrl-C: finish the current request, then exit."""
        from facerec_cli.infra.cloud_errors import aws_errors

        _logging()
        settings = _settings(prefix, region, endpoint_url, profile)
        with aws_errors(settings, "app-tier worker"):
            run_worker(settings, gallery=gallery, threshold=threshold, device=device.value, poll_wait=poll_wait,
                       threads=threads, exit_when_idle=exit_when_idle, weights=weights)

    iaas = typer.Typer(
        name="iaas",
        help="The IaaS variant: web tier, SQS request/response queues and an auto-scaled EC2 app tier (or all on this machine).",
        no_args_is_help=True,
    )

    @iaas.command("run-local")
    @friendly
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
        channel_timeout: Annotated[int, typer.Option("--channel-timeout", min=1, help="Seconds a connection may stay idle before it is closed.")] = 30,
        read_timeout: Annotated[float, typer.Option("--read-timeout", min=1.0, help="Seconds a client has to send its whole request (then 408).")] = 60.0,
    ) -> None:
        """The whole IaaS system on this machine: queues and buckets on an embedded moto server, the web tier on 127.0.0.1, and worker processes as the auto-scaled app instances."""
        from facerec_cli.iaas.local import LocalIaas, LocalOptions
        from facerec_cli.iaas.web import limit_malloc_arenas

        _logging()
        limit_malloc_arenas()
        options = LocalOptions(
            port=port, max_instances=max_instances, per_instance=per_instance, scale_in_after_s=scale_in_after,
            request_timeout_s=timeout, visibility_timeout_s=visibility_timeout, threshold=threshold,
            log_path=str(log_file) if log_file else None, token=setting("token", token),
            channel_timeout_s=channel_timeout, read_timeout_s=read_timeout,
        )
        with LocalIaas(gallery, options) as system:
            out.print(system.url, highlight=False)
            err.print(f"curl -F inputFile=@photo.jpg {escape(system.url)}   (Ctrl-C stops)", highlight=False)
            started = time.monotonic()
            try:
                while duration is None or time.monotonic() - started < duration:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                err.print("stopping…", style="dim")

    @iaas.command("bootstrap")
    @friendly
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
        timeout: TimeoutOpt = None,
        visibility_timeout: Annotated[int | None, typer.Option("--visibility-timeout", min=1, max=43200, help="Request-queue visibility timeout, s (default 30).")] = None,
        no_web: Annotated[bool, typer.Option("--no-web", help="Do not launch the web-instance (run `facerec web` elsewhere).")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing.")] = False,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
        prefix: PrefixOpt = None,
        region: RegionOpt = None,
        endpoint_url: EndpointOpt = None,
        profile: ProfileOpt = None,
    ) -> None:
        """Create or update the IaaS deployment on AWS, idempotently: buckets, queues (with a dead-letter queue), gallery, IAM roles and instance profiles, security groups, the app tier's launch template and Auto Scaling group, and the web-instance. A second run has nothing to change."""
        from facerec_cli.iaas.stack import IaasOptions
        from facerec_cli.iaas.web import token_sha256

        settings = _settings(prefix, region, endpoint_url, profile)
        _check_gallery(gallery)
        options = IaasOptions(
            gallery=gallery,
            ami=setting("ami", ami),
            instance_type=setting("instance_type", instance_type),
            web_ami=setting("web_ami", web_ami),
            web_instance_type=setting("web_instance_type", web_instance_type),
            key_name=setting("key_name", key_name),
            port=setting("port", port, int),
            allow_cidr=setting("allow_cidr", allow_cidr),
            token_sha256=_token_digest(setting("token", token), None, token_sha256),
            max_instances=setting("max_instances", max_instances, int),
            per_instance=setting("per_instance", per_instance, int),
            scale_in_after_s=int(setting("scale_in_after", scale_in_after, float)),
            request_timeout_s=int(setting("timeout", timeout, float)),
            visibility_timeout_s=setting("visibility_timeout", visibility_timeout, int),
            with_web=not no_web,
        )
        run_bootstrap(settings, options, dry_run=dry_run, yes=yes)

    @iaas.command("destroy")
    @friendly
    def destroy_command(
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be deleted and delete nothing.")] = False,
        prefix: PrefixOpt = None,
        region: RegionOpt = None,
        endpoint_url: EndpointOpt = None,
        profile: ProfileOpt = None,
    ) -> None:
        """Delete everything `facerec iaas bootstrap` created (instances first, buckets with their objects last). Asks first unless --yes."""
        settings = _settings(prefix, region, endpoint_url, profile)
        run_destroy(settings, yes=yes, dry_run=dry_run)

    app.add_typer(iaas, name="iaas")


def run_bootstrap(settings: Any, options: Any, *, dry_run: bool, yes: bool) -> Any:
    from facerec_cli.infra.cloud_errors import aws_errors
    from facerec_cli.cli.pipeline import print_plan
    from facerec_cli.pipeline.deploy import DeployError, RichReporter, apply_plan
    from facerec_cli.iaas.stack import IaasClients, plan_bootstrap
    from facerec_cli.iaas.names import WEB_INSTANCE
    from facerec_cli.iaas.pools import _find_instances

    where = f"prefix {settings.prefix}, region {settings.region}" + (f", endpoint {settings.endpoint_url}" if settings.endpoint_url else "")
    err.print(f"iaas bootstrap: {escape(where)}", highlight=False)
    with aws_errors(settings, "iaas bootstrap"):
        clients = IaasClients.from_settings(settings)
        plan = plan_bootstrap(settings, options, clients)
        print_plan(plan, out)
        if dry_run:
            err.print("dry run: nothing was changed", style="dim")
            return plan
        if plan.empty:
            return plan
        updates = [s for s in plan.changes if s.action in ("update", "delete")]
        if updates and not yes and _stdin_is_tty():
            if not typer.confirm(f"Change {len(updates)} existing resource(s) as shown?", default=True, err=True):
                raise UserError("nothing was changed")
        try:
            apply_plan(plan, RichReporter(console=err))
        except DeployError as exc:
            raise _fix_hint(exc) from exc
        web = _find_instances(clients.ec2, settings.prefix, WEB_INSTANCE, ("pending", "running")) if options.with_compute and options.with_web else []
    if web and web[0].get("PublicIpAddress"):
        err.print(f"[green]deployed[/]: the web tier answers at http://{web[0]['PublicIpAddress']}:{options.port}/ once the instance has booted", highlight=False)
    else:
        err.print("[green]deployed[/]", highlight=False)
    return plan


def run_destroy(settings: Any, *, yes: bool, dry_run: bool) -> Any:
    from facerec_cli.infra.cloud_errors import aws_errors
    from facerec_cli.cli.pipeline import print_plan
    from facerec_cli.pipeline.deploy import DeployError, RichReporter, apply_plan
    from facerec_cli.iaas.stack import IaasClients, plan_teardown

    with aws_errors(settings, "iaas destroy"):
        clients = IaasClients.from_settings(settings)
        plan = plan_teardown(settings, clients)
        print_plan(plan, out)
        if dry_run:
            err.print("dry run: nothing was deleted", style="dim")
            return plan
        if plan.empty:
            return plan
        if not yes:
            if not _stdin_is_tty():
                raise UserError("not deleting anything without confirmation", hint="pass --yes to delete without asking")
            if not typer.confirm(f"Delete these {len(plan.changes)} resource(s) and everything in the buckets and queues?", default=False, err=True):
                raise UserError("nothing was deleted")
        try:
            apply_plan(plan, RichReporter(console=err))
        except DeployError as exc:
            raise _fix_hint(exc) from exc
    err.print(f"[green]destroyed[/] the IaaS deployment with prefix {escape(settings.prefix)} in {escape(settings.region)}", highlight=False)
    return plan
