"""``facerec iaas run-local``: the whole IaaS system on this machine.

The queues and buckets live on the embedded moto server (:class:`~facerec_cli.localcloud.server.LocalCloud`)
and are made by the same plan as ``facerec iaas bootstrap`` (without the EC2 part); the gallery is
uploaded to the gallery bucket and workers read it from there, as on AWS. The web tier serves on
127.0.0.1, the auto-scaler runs beside it, and its "instances" are worker processes
(:class:`~facerec_cli.iaas.pools.LocalProcessPool`), each loading the models once::

    with LocalIaas(Path("gallery.pt"), LocalOptions(max_instances=2)) as system:
        requests.post(system.url, files={"inputFile": open("test_00.jpg", "rb")}).text  # "test_00:madonna"

With ``enforce_iam`` (the default) the two tiers run as on AWS, with credentials bound to exactly their
role's policy (:func:`~facerec_cli.iaas.stack.app_policy`, :func:`~facerec_cli.iaas.stack.web_policy`:
the roles are made and assumed here) while the moto server enforces IAM (:mod:`facerec_cli.localcloud.moto_fixes`); what
:meth:`LocalIaas.client` returns has an administrator's credentials.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.config

from facerec_cli.config import Settings
from facerec_cli.infra.clients import Clients
from facerec_cli.infra.executor import NullReporter, apply_plan
from facerec_cli.localcloud.server import LocalCloud
from facerec_cli.localcloud.environ import real_aws_keys
from facerec_cli.iaas.deployer import plan_bootstrap
from facerec_cli.iaas.policies import Arns, app_policy, ec2_trust_policy, web_policy
from facerec_cli.iaas.stack import IaasOptions
from facerec_cli.iaas.names import IaasNames
from facerec_cli.iaas.pools import LocalProcessPool
from facerec_cli.iaas.scaler import AutoScaler, ScalingPolicy
from facerec_cli.iaas.web import WebConfig, WebTier, token_sha256
from facerec_cli.iaas.web_server import WebServer
from facerec_cli.iaas.worker import WorkerConfig
from lambdas.core.names import plural

log = logging.getLogger("facerec.iaas.local")

LOCAL_PREFIX = "facerec-iaas-local"


@dataclass(frozen=True)
class LocalOptions:
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (see LocalIaas.url)
    max_instances: int = 2  # each worker process holds the models (~300 MB)
    per_instance: int = 1
    scale_in_after_s: float = 10.0
    scale_interval_s: float = 0.5
    visibility_timeout_s: int = 30
    max_receive_count: int = 5
    request_timeout_s: float = 60.0
    poll_wait_s: int = 2  # long polls of workers and router (short: quick shutdown)
    server_threads: int = 64  # waitress request threads: the most HTTP requests waiting at once
    max_upload_bytes: int = 10 * 2**20
    threshold: float | None = None
    # One inference thread per worker process: the workers share the cores, and oversubscribed
    # threads made recognition up to 6x slower on a busy 2-core machine (3.6 s vs 0.6 s a photo).
    worker_threads: int = 1
    log_path: str | None = None  # workers' output (None: this process's stderr)
    token: str | None = None  # the web tier asks for it (see facerec web --token)
    channel_timeout_s: int = 30
    read_timeout_s: float = 60.0
    lease_s: float = 30.0
    enforce_iam: bool = True  # the tiers run with their roles' credentials; moto enforces IAM


class LocalIaas:
    """The local system; a context manager (``start``/``stop``)."""

    def __init__(self, gallery: Path, options: LocalOptions | None = None) -> None:
        self.gallery = Path(gallery)
        self.options = options or LocalOptions()
        self.names = IaasNames(LOCAL_PREFIX)
        self.cloud: LocalCloud | None = None
        self.pool: LocalProcessPool | None = None
        self.scaler: AutoScaler | None = None
        self.web: WebTier | None = None
        self.server: WebServer | None = None
        self.clients: Clients | None = None
        self.credentials: dict[str, dict[str, str]] = {}  # "admin", "web", "app" (with enforce_iam)
        self._iam = contextlib.ExitStack()

    def start(self) -> "LocalIaas":
        from facerec_cli.gallery_files import load_gallery

        load_gallery(self.gallery)  # a bad gallery fails here, not in every worker the scaler starts
        options = self.options
        self.cloud = LocalCloud(workers=1).start()
        try:
            cloud = self.cloud
            settings = Settings(prefix=LOCAL_PREFIX, region=cloud.region, endpoint_url=cloud.endpoint_url)
            self.clients = Clients.from_session(cloud.session(), cloud.endpoint_url)
            bootstrap_options = IaasOptions(
                gallery=self.gallery,
                with_compute=False,
                visibility_timeout_s=options.visibility_timeout_s,
                max_receive_count=options.max_receive_count,
                request_timeout_s=int(-(-options.request_timeout_s // 1)),
            )
            apply_plan(plan_bootstrap(settings, bootstrap_options, self.clients), NullReporter())
            web_kwargs: dict[str, str] = {}
            app_env: dict[str, str] = {}
            if options.enforce_iam:
                web_kwargs, app_env = self._least_privilege(settings)

            config = WorkerConfig(
                gallery=self.names.gallery_uri, threshold=options.threshold, poll_wait_s=options.poll_wait_s, threads=options.worker_threads
            )
            env = {k: v for k, v in os.environ.items() if k not in real_aws_keys(os.environ)}
            env.update(cloud.env())
            env.update(app_env)
            self.pool = LocalProcessPool(LOCAL_PREFIX, config, env, log_path=options.log_path)
            web_config = WebConfig(
                timeout_s=options.request_timeout_s, max_upload_bytes=options.max_upload_bytes, poll_wait_s=options.poll_wait_s,
                token_sha256=token_sha256(options.token) if options.token else None, lease_s=options.lease_s,
            )
            pooled = botocore.config.Config(max_pool_connections=options.server_threads + 4)  # one per request thread
            self.web = WebTier(
                s3=cloud.client("s3", config=pooled, **web_kwargs), sqs=cloud.client("sqs", config=pooled, **web_kwargs),
                names=self.names, config=web_config,
            )
            policy = ScalingPolicy(options.max_instances, options.per_instance, options.scale_in_after_s, options.scale_interval_s)
            self.scaler = AutoScaler(self.pool, self.web.depth_source(cloud.client("sqs", **web_kwargs)), policy)
            self.web.scaler = self.scaler
            self.server = WebServer(
                self.web.app, host=options.host, port=options.port, threads=options.server_threads, max_body=options.max_upload_bytes + 2**20,
                channel_timeout_s=options.channel_timeout_s, read_timeout_s=options.read_timeout_s, counts=self.web.counts,
            )
            self.web.start()
            self.scaler.start()
            self.server.start()
        except BaseException:
            self.stop()
            raise
        log.info("web tier on %s; up to %s", self.url, plural(options.max_instances, "local app instance"))
        return self

    def _least_privilege(self, settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
        """Make the two roles (their bootstrap policies) and an administrator, assume the roles, then
        turn IAM enforcement on: (web tier client credentials, app tier environment)."""
        from facerec_cli.localcloud.moto_fixes import admin_credentials, credential_env, enforced, role_credentials

        assert self.clients is not None
        iam, sts = self.clients.iam, self.clients.sts
        arns = Arns(settings, self.clients.account_id)
        trust = ec2_trust_policy()
        self.credentials = {
            "admin": admin_credentials(iam),
            "app": role_credentials(iam, sts, self.names.app_role, app_policy(arns), trust, session="app-tier"),
            "web": role_credentials(iam, sts, self.names.web_role, web_policy(arns, LOCAL_PREFIX), trust, session="web-tier"),
        }
        self._iam.enter_context(enforced())
        return self.credentials["web"], credential_env(self.credentials["app"])

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("the local IaaS system is not started")
        return self.server.url + "/"

    def client(self, service: str, **kwargs: Any) -> Any:
        """A client of the local cloud with full rights (an administrator's credentials under
        ``enforce_iam``)."""
        assert self.cloud is not None
        return self.cloud.client(service, **{**self.credentials.get("admin", {}), **kwargs})

    def stop(self) -> None:
        """Scaler, router (waiting requests get 503), server, workers (SIGTERM, then SIGKILL), moto."""
        try:
            if self.scaler is not None:
                self.scaler.stop()
            if self.web is not None:
                self.web.stop()
            if self.server is not None:
                self.server.stop()
            if self.pool is not None:
                self.pool.close()
        finally:
            self._iam.close()
            if self.cloud is not None:
                self.cloud.stop()

    def __enter__(self) -> "LocalIaas":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
