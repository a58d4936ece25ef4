"""``facerec iaas run-local``: the whole IaaS system on this machine.

The queues and buckets live on the embedded moto server (:class:`~facerec_cli.local.server.LocalCloud`)
and are made by the same plan as ``facerec iaas bootstrap`` (without the EC2/IAM part); the gallery is
uploaded to the gallery bucket and workers read it from there, as on AWS. The web tier serves on
127.0.0.1, the auto-scaler runs beside it, and its "instances" are worker processes
(:class:`~facerec_cli.iaas.pools.LocalProcessPool`), each loading the models once::

    with LocalIaas(Path("gallery.pt"), LocalOptions(max_instances=2)) as system:
        requests.post(system.url, files={"inputFile": open("test_00.jpg", "rb")}).text  # "test_00:madonna"
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.config

from ..config import Settings
from ..deploy import NullReporter, apply_plan
from ..local.server import LocalCloud
from ..local.workers import real_aws_keys
from .bootstrap import IaasClients, IaasOptions, plan_bootstrap
from .messages import queue_depth, queue_url
from .names import IaasNames
from .pools import LocalProcessPool
from .scaler import AutoScaler, ScalingPolicy
from .web import WebConfig, WebServer, WebTier
from .worker import WorkerConfig

log = logging.getLogger("facerec.iaas.local")

LOCAL_PREFIX = "facerec-iaas-local"


@dataclass(frozen=True)
class LocalOptions:
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (see LocalIaas.url)
    max_instances: int = 2  # each worker process holds torch and the models (~1 GB)
    per_instance: int = 1
    scale_in_after_s: float = 10.0
    scale_interval_s: float = 0.5
    visibility_timeout_s: int = 30
    max_receive_count: int = 5
    request_timeout_s: float = 60.0
    poll_wait_s: int = 2  # long polls of workers and router (short: quick shutdown)
    threads: int = 64
    max_upload_bytes: int = 10 * 2**20
    threshold: float | None = None
    # One torch thread per worker process: the workers share the cores, and oversubscribed OpenMP
    # threads made recognition up to 6x slower on a busy 2-core machine (3.6 s vs 0.6 s a photo).
    threads: int = 1
    log_path: str | None = None  # workers' output (None: this process's stderr)


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
        self.clients: IaasClients | None = None

    def start(self) -> "LocalIaas":
        from ..galleries import load_gallery

        load_gallery(self.gallery)  # a bad gallery fails here, not in every worker the scaler starts
        o = self.options
        self.cloud = LocalCloud(workers=1).start()
        try:
            cloud = self.cloud
            settings = Settings(prefix=LOCAL_PREFIX, region=cloud.region, endpoint_url=cloud.endpoint_url)
            self.clients = IaasClients.from_session(cloud.session(), cloud.endpoint_url)
            options = IaasOptions(
                gallery=self.gallery,
                with_compute=False,
                visibility_timeout_s=o.visibility_timeout_s,
                max_receive_count=o.max_receive_count,
                request_timeout_s=int(o.request_timeout_s),
            )
            apply_plan(plan_bootstrap(settings, options, self.clients), NullReporter())

            config = WorkerConfig(
                gallery=self.names.gallery_uri, threshold=o.threshold, poll_wait_s=o.poll_wait_s, threads=o.threads
            )
            env = {k: v for k, v in os.environ.items() if k not in real_aws_keys(os.environ)}
            env.update(cloud.env())
            self.pool = LocalProcessPool(LOCAL_PREFIX, config, env, log_path=o.log_path)
            scaler_sqs = cloud.client("sqs")
            request_url = queue_url(scaler_sqs, self.names.request_queue)
            policy = ScalingPolicy(o.max_instances, o.per_instance, o.scale_in_after_s, o.scale_interval_s)
            self.scaler = AutoScaler(self.pool, lambda: queue_depth(scaler_sqs, request_url), policy)
            web_config = WebConfig(timeout_s=o.request_timeout_s, max_upload_bytes=o.max_upload_bytes, poll_wait_s=o.poll_wait_s)
            pooled = botocore.config.Config(max_pool_connections=o.threads + 4)  # one per request thread
            self.web = WebTier(
                s3=cloud.client("s3", config=pooled), sqs=cloud.client("sqs", config=pooled), names=self.names, config=web_config, scaler=self.scaler
            )
            self.server = WebServer(self.web.app, host=o.host, port=o.port, threads=o.threads, max_body=o.max_upload_bytes + 2**20)
            self.web.start()
            self.scaler.start()
            self.server.start()
        except BaseException:
            self.stop()
            raise
        log.info("web tier on %s; up to %d local app instance(s)", self.url, o.max_instances)
        return self

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("the local IaaS system is not started")
        return self.server.url + "/"

    def client(self, service: str) -> Any:
        assert self.cloud is not None
        return self.cloud.client(service)

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
            if self.cloud is not None:
                self.cloud.stop()

    def __enter__(self) -> "LocalIaas":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
