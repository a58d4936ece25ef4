"""The embedded local cloud: a moto server on 127.0.0.1 whose Lambda runs real handlers.

moto keeps its state in module globals, and the seam is patched on a class, so there is one LocalCloud
per process at a time. Its state starts empty and is wiped on exit. Both local systems run on it:
``facerec run-local`` (the pipeline: its Lambda invocations go to a dispatcher) and ``facerec iaas
run-local`` (queues and buckets only).

Its Lambda runtime is :mod:`facerec_cli.localcloud.runtime` (``.dispatch``, ``.seam``, ``.functions``):
running Lambda invocations is what this cloud adds to a bare moto server, its constructor's arguments
are the dispatcher's, and the seam must be patched between the server's start and the first request.
It runs only the handlers its caller allows (``allow``); run-local hands it the pipeline's
(:mod:`facerec_cli.pipeline.local.handlers`), so this module knows nothing of the pipeline.

With ``enforce_iam=True`` the server checks every request against IAM, as AWS does: the cloud's own
calls (provisioning, uploads, reading results) are made as an administrator user created at start, and
the handlers of each function run with temporary credentials of the function's execution role (what
Lambda gives a function), so a permission missing from a role's policy fails the handler that needs it.
Where moto 5.2.1 differs from AWS in ways that hide a missing permission it is corrected by
:mod:`facerec_cli.localcloud.moto_fixes` (the same corrections ``facerec iaas run-local`` uses). While
such a cloud runs, every moto server in the process checks IAM (moto's switch is process-wide).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

import boto3

from facerec_cli.localcloud import botocore_data, moto_routing, s3_conditional
from facerec_cli.localcloud.moto_server import MotoServer
from facerec_cli.localcloud.environ import applied_environ, real_aws_keys
from facerec_cli.localcloud.moto_fixes import CORRECTIONS, admin_credentials, check_iam_seam, enforced
from facerec_cli.localcloud.runtime.dispatch import Dispatcher, RunnerFactory
from facerec_cli.localcloud.runtime.invocations import FailureHook
from facerec_cli.localcloud.runtime.functions import Allowlist, LocalFunction
from facerec_cli.localcloud.runtime.seam import check_seam, install_seam

DEFAULT_REGION = "us-east-1"
# Fake credentials: moto accepts any, and these can never be mistaken for a real account's.
FAKE_ACCESS_KEY_ID = "testing"
FAKE_SECRET_ACCESS_KEY = "testing"
ADMIN_USER = "facerec-local-admin"  # with IAM enforcement: the identity of the cloud's own calls
ROLE_SESSION_SECONDS = 12 * 3600  # moto does not expire sessions; the number is for the record

_active_lock = threading.Lock()
_active: LocalCloud | None = None  # moto's state is per process: one cloud at a time


class LocalCloud:
    """A running moto server plus the dispatcher that runs its Lambda invocations.

    Usage::

        with LocalCloud(workers=2, on_failure=hook) as cloud:
            s3 = cloud.client("s3")   # or any boto3 client built from cloud.env()
            ...                       # create buckets, functions, notifications; upload
            cloud.dispatcher.wait_idle(600)
    """

    def __init__(
        self,
        *,
        workers: int = 1,
        on_failure: FailureHook | None = None,
        max_attempts: int = 3,
        log_path: str | None = None,
        region: str = DEFAULT_REGION,
        host: str = "127.0.0.1",
        port: int = 0,
        runner_factory: RunnerFactory | None = None,
        allow: Allowlist | None = None,
        enforce_iam: bool = False,
        iam_services: tuple[str, ...] | None = None,
        record_metrics: bool = False,
        aws_managed_policies: bool = False,
    ) -> None:
        """``allow``: the handlers and function variables the runtime accepts (default: none, so every
        invocation is refused; run-local passes the pipeline's). ``enforce_iam``: check every request against IAM,
        handlers with their function role's credentials (needs ``workers >= 1`` or a ``runner_factory``);
        ``iam_services``: the services whose moto gaps are corrected meanwhile (default: all of
        :data:`moto_fixes.CORRECTIONS`; a caller that makes no EC2 call saves importing moto's EC2).
        ``record_metrics``: each invocation's Lambda metrics in this cloud's CloudWatch (:mod:`.metrics`).
        ``aws_managed_policies``: IAM knows AWS's managed policies (``arn:aws:iam::aws:policy/...``), so
        that an outside client may attach them; loading them costs moto half a second at start, and
        nothing facerec deploys uses one (its roles have inline least-privilege policies)."""
        if enforce_iam and workers == 0 and runner_factory is None:
            raise ValueError(
                "enforce_iam needs worker processes (workers >= 1): handlers in one process share their boto3 "
                "clients, so one function would call with the other's credentials"
            )
        self.region = region
        self.enforce_iam = enforce_iam
        self._iam_services = tuple(CORRECTIONS) if iam_services is None else iam_services
        self._host, self._port = host, port
        self._dispatcher_args: dict[str, Any] = {
            "workers": workers,
            "on_failure": on_failure,
            "max_attempts": max_attempts,
            "log_path": log_path,
            "runner_factory": runner_factory,  # None: worker processes (or this process)
            "allow": allow,
            "credentials": self.function_credentials if enforce_iam else None,
        }
        self._admin: tuple[str, str] | None = None  # (key id, secret) of ADMIN_USER while IAM is enforced
        self._role_credentials: dict[tuple[str, str], dict[str, str]] = {}
        self._role_lock = threading.Lock()
        self._iam = contextlib.ExitStack()  # IAM enforcement, while on
        self._server: Any = None
        self._dispatcher: Dispatcher | None = None
        self._restore_seam: Any = None
        self._environ = contextlib.ExitStack()
        self._endpoint_url: str | None = None
        self._record_metrics = record_metrics
        self._aws_managed_policies = aws_managed_policies
        self._metrics: Any = None  # LambdaMetrics while running, with record_metrics

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> LocalCloud:
        global _active
        # Before anything starts: a moved seam must fail here, not as handlers that never run.
        check_seam()
        s3_conditional.install()  # timelines' exactly-once merge needs S3's atomic conditional writes
        moto_routing.install()  # moto lists its package directory on every request otherwise
        botocore_data.share_loaders()  # our sessions and moto's parse botocore's JSON once, not once each
        if self.enforce_iam:
            check_iam_seam()
        with _active_lock:
            if _active is not None:
                raise RuntimeError("a LocalCloud is already running in this process (moto's state is global)")
            _active = self
        # For as long as the cloud runs, this process sees no AWS profile and empty AWS config files:
        # moto itself builds boto3 Sessions in-process (to list regions), which would otherwise read the
        # user's ~/.aws files and fail outright on an AWS_PROFILE they do not define.
        # MOTO_IAM_LOAD_MANAGED_POLICIES is read when moto builds its IAM backend (see aws_managed_policies).
        self._environ.enter_context(
            applied_environ(
                {
                    "AWS_CONFIG_FILE": os.devnull,
                    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                    "MOTO_IAM_LOAD_MANAGED_POLICIES": "true" if self._aws_managed_policies else "false",
                },
                remove=real_aws_keys(os.environ),
            )
        )
        # werkzeug logs every request at INFO to stderr unless its logger has a level.
        werkzeug_logger = logging.getLogger("werkzeug")
        if werkzeug_logger.level == logging.NOTSET:
            werkzeug_logger.setLevel(logging.WARNING)
        try:
            _reset_moto()  # a fresh, empty cloud, with the IAM setting above applied
            self._server = MotoServer(self._host, self._port)
            self._server.start()
            host, port = self._server.host_and_port  # the bound port when port=0
            self._endpoint_url = f"http://{host}:{port}"
            if self.enforce_iam:
                admin = admin_credentials(self.client("iam"), ADMIN_USER)  # made while moto does not check yet
                self._admin = admin["aws_access_key_id"], admin["aws_secret_access_key"]
                self._iam.enter_context(enforced(self._iam_services))
            if self._record_metrics:
                from facerec_cli.localcloud.metrics import LambdaMetrics

                self._metrics = LambdaMetrics(self.client("cloudwatch"))
            self._dispatcher = Dispatcher(self.env(), **self._dispatcher_args, on_finished=self._metrics.record if self._metrics else None)
            self._restore_seam = install_seam(self._dispatcher)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop dispatching, stop the workers, then the server; wipe moto's state. Idempotent. The
        dispatcher stays readable (counters, failures) after stop."""
        global _active
        if _active is not self:
            return
        try:
            if self._restore_seam is not None:
                self._restore_seam()
                self._restore_seam = None
            if self._dispatcher is not None:
                self._dispatcher.close()  # before the server: running handlers still talk to it
            if self._metrics is not None:
                metrics, self._metrics = self._metrics, None
                metrics.close()  # the last datapoints, while the server still runs
        finally:
            if self._server is not None:
                server, self._server = self._server, None
                server.stop()
            self._iam.close()
            self._admin = None
            self._role_credentials.clear()
            # The environment first: rebuilding IAM with the managed policies would cost a second.
            self._environ.close()
            _reset_moto()
            with _active_lock:
                _active = None

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- for callers -------------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise RuntimeError("the local cloud is not started")
        return self._endpoint_url

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            raise RuntimeError("the local cloud is not started")
        return self._dispatcher

    def env(self) -> dict[str, str]:
        """Variables that point boto3 at this cloud and away from the user's AWS account and files."""
        no_proxy = ",".join(
            part for part in (os.environ.get("NO_PROXY") or os.environ.get("no_proxy"), "127.0.0.1,localhost") if part
        )
        key_id, secret = self._admin or (FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY)
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            # An HTTP(S)_PROXY meant for the internet must not capture requests to the local server.
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }

    def session(self, role: str | None = None) -> boto3.Session:
        """A boto3 session for this process that reads no AWS config/credentials file and ignores
        AWS_PROFILE, whatever the user's environment says. With IAM enforcement: the administrator's,
        or with ``role`` (an IAM role ARN) that role's temporary credentials."""
        if role is not None and self.enforce_iam:
            creds = self.role_credentials(role)
            key_id, secret, token = creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"], creds["AWS_SESSION_TOKEN"]
        else:
            (key_id, secret), token = self._admin or (FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY), None
        return boto3.Session(
            botocore_session=botocore_data.sealed_session(),
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=token,
            region_name=self.region,
        )

    def client(self, service: str, *, role: str | None = None, **kwargs: Any) -> Any:
        return self.session(role).client(service, endpoint_url=self.endpoint_url, **kwargs)

    # -- IAM ---------------------------------------------------------------------------------------

    def role_credentials(self, role_arn: str, session_name: str = "facerec-local") -> dict[str, str]:
        """Temporary credentials of ``role_arn`` (as AWS_* variables), as Lambda obtains them for a
        function: moto checks every request they sign against that role's policies, read live (a changed
        policy applies at once). Asked of moto's STS backend directly, as the Lambda service would:
        the role trusts lambda.amazonaws.com, not a user."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.sts.models import sts_backends
        from moto.utilities.utils import get_partition

        key = (role_arn, session_name)
        with self._role_lock:
            cached = self._role_credentials.get(key)
            if cached is None:
                role = sts_backends[DEFAULT_ACCOUNT_ID][get_partition(self.region)].assume_role(
                    region_name=self.region, role_session_name=session_name[:64], role_arn=role_arn,
                    policy=None, duration=ROLE_SESSION_SECONDS, external_id=None,
                )  # fmt: skip
                cached = {
                    "AWS_ACCESS_KEY_ID": role.access_key_id,
                    "AWS_SECRET_ACCESS_KEY": role.secret_access_key,
                    "AWS_SESSION_TOKEN": role.session_token,
                }
                self._role_credentials[key] = cached
            return dict(cached)

    def function_credentials(self, spec: LocalFunction) -> dict[str, str]:
        """A function's handlers' credentials: its execution role's (the dispatcher asks for each new
        set of workers)."""
        if not spec.role:
            raise RuntimeError(f"the function {spec.name} has no execution role: nothing to run it as")
        return self.role_credentials(spec.role, spec.name)

    def local_function(self, function_name: str) -> LocalFunction:
        """A function's runtime view, read from moto (as the seam would at invocation time)."""
        from moto.awslambda.utils import get_backend
        from moto.core import DEFAULT_ACCOUNT_ID

        fn = get_backend(DEFAULT_ACCOUNT_ID, self.region).get_function(function_name)
        return LocalFunction.from_configuration(fn.get_configuration())

    def prewarm(self, *function_names: str) -> None:
        """Start the named functions' workers now (after they are created), so that handler imports
        and model loads overlap with uploads."""
        for name in function_names:
            self.dispatcher.prewarm(self.local_function(name))


def _reset_moto() -> None:
    from moto.moto_api import _internal

    _internal.moto_api_backend.reset()

