"""The embedded local cloud: a moto server on 127.0.0.1 whose Lambda runs real handlers.

moto keeps its state in module globals, and the seam is patched on a class, so there is one LocalCloud
per process at a time. Its state starts empty and is wiped on exit.

With ``enforce_iam=True`` the server checks every request against IAM, as AWS does: the cloud's own
calls (provisioning, uploads, reading results) are made as an administrator user created at start, and
the handlers of each function run with temporary credentials of the function's execution role (what
Lambda gives a function), so a permission missing from a role's policy fails the handler that needs it.
moto evaluates identity policies with their Action and Resource (not their Conditions, nor bucket
policies' conditions); where moto 5.2.1 differs from AWS in ways that hide a missing permission it is
corrected here: Lambda's IAM action names, resources and signatures (:func:`install_lambda_authorization`),
S3's 403 for a missing object to a caller without s3:ListBucket and its signatures of percent-encoded keys
(:func:`install_s3_missing_key_rule`). ``facerec_cli/localcloud/moto_iam.py`` makes corrections of the same kind
for the IaaS tiers' services. While such a cloud runs, every moto server in the process
checks IAM (moto's switch is process-wide).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

import boto3
import botocore.session

from facerec_cli.localcloud import s3_conditional
from facerec_cli.pipeline.local.dispatch import Dispatcher, FailureHook, RunnerFactory, check_seam, install_seam
from facerec_cli.pipeline.local.workers import Allowlist, FunctionSpec, applied_environ, real_aws_keys

DEFAULT_REGION = "us-east-1"
# Fake credentials: moto accepts any, and these can never be mistaken for a real account's.
FAKE_ACCESS_KEY_ID = "testing"
FAKE_SECRET_ACCESS_KEY = "testing"
ADMIN_USER = "facerec-local-admin"  # with IAM enforcement: the identity of the cloud's own calls
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
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
    ) -> None:
        """``allow``: the handlers and function variables the runtime accepts (default: the pipeline's two
        handlers and the variables lambdas/env.py names). ``enforce_iam``: check every request against IAM,
        handlers with their function role's credentials (needs ``workers >= 1`` or a ``runner_factory``)."""
        if enforce_iam and workers == 0 and runner_factory is None:
            raise ValueError(
                "enforce_iam needs worker processes (workers >= 1): handlers in one process share their boto3 "
                "clients, so one function would call with the other's credentials"
            )
        self.region = region
        self.enforce_iam = enforce_iam
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
        self._restore_iam: Any = None
        self._server: Any = None
        self._dispatcher: Dispatcher | None = None
        self._restore_seam: Any = None
        self._environ = contextlib.ExitStack()
        self._endpoint_url: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> LocalCloud:
        global _active
        # Before anything starts: a moved seam must fail here, not as handlers that never run.
        check_seam()
        s3_conditional.install()  # timelines' exactly-once merge needs S3's atomic conditional writes
        if self.enforce_iam:
            check_iam_seam()
        with _active_lock:
            if _active is not None:
                raise RuntimeError("a LocalCloud is already running in this process (moto's state is global)")
            _active = self
        from moto.server import ThreadedMotoServer

        # For as long as the cloud runs, this process sees no AWS profile and empty AWS config files:
        # moto itself builds boto3 Sessions in-process (to list regions), which would otherwise read the
        # user's ~/.aws files and fail outright on an AWS_PROFILE they do not define.
        # MOTO_IAM_LOAD_MANAGED_POLICIES is read when moto builds its IAM backend: bootstrap attaches
        # AWS managed policies.
        self._environ.enter_context(
            applied_environ(
                {
                    "AWS_CONFIG_FILE": os.devnull,
                    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                    "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
                },
                remove=real_aws_keys(os.environ),
            )
        )
        # werkzeug logs every request at INFO to stderr unless its logger has a level.
        werkzeug_logger = logging.getLogger("werkzeug")
        if werkzeug_logger.level == logging.NOTSET:
            werkzeug_logger.setLevel(logging.WARNING)
        try:
            if self._port:
                _check_port_free(self._host, self._port)
            _reset_moto()  # a fresh, empty cloud, with the IAM setting above applied
            self._server = ThreadedMotoServer(ip_address=self._host, port=self._port, verbose=False)
            self._server.start()
            host, port = self._server.get_host_and_port()  # the bound port when port=0
            self._endpoint_url = f"http://{host}:{port}"
            if self.enforce_iam:
                self._admin = self._create_admin()
                self._restore_iam = enable_iam_enforcement()
            self._dispatcher = Dispatcher(self.env(), **self._dispatcher_args)
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
        finally:
            if self._server is not None:
                server, self._server = self._server, None
                server.stop()
                # ThreadedMotoServer.stop() shuts the loop down but leaves the socket open.
                inner = getattr(server, "_server", None)
                if inner is not None:
                    inner.server_close()
            if self._restore_iam is not None:
                self._restore_iam()
                self._restore_iam = None
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
        core = botocore.session.Session(
            session_vars={
                "profile": (None, None, None, None),
                "config_file": (None, None, os.devnull, None),
                "credentials_file": (None, None, os.devnull, None),
            }
        )
        return boto3.Session(
            botocore_session=core,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=token,
            region_name=self.region,
        )

    def client(self, service: str, *, role: str | None = None, **kwargs: Any) -> Any:
        return self.session(role).client(service, endpoint_url=self.endpoint_url, **kwargs)

    # -- IAM ---------------------------------------------------------------------------------------

    def _create_admin(self) -> tuple[str, str]:
        """The administrator user (all actions, all resources) and its access key, made while moto does
        not check yet."""
        import json

        iam = self.client("iam")
        iam.create_user(UserName=ADMIN_USER)
        iam.put_user_policy(UserName=ADMIN_USER, PolicyName="everything", PolicyDocument=json.dumps(ADMIN_POLICY))
        key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

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

    def function_credentials(self, spec: FunctionSpec) -> dict[str, str]:
        """A function's handlers' credentials: its execution role's (the dispatcher asks for each new
        set of workers)."""
        if not spec.role:
            raise RuntimeError(f"the function {spec.name} has no execution role: nothing to run it as")
        return self.role_credentials(spec.role, spec.name)

    def function_spec(self, function_name: str) -> FunctionSpec:
        """A function's runtime view, read from moto (as the seam would at invocation time)."""
        from moto.awslambda.utils import get_backend
        from moto.core import DEFAULT_ACCOUNT_ID

        fn = get_backend(DEFAULT_ACCOUNT_ID, self.region).get_function(function_name)
        return FunctionSpec.from_configuration(fn.get_configuration())

    def prewarm(self, *function_names: str) -> None:
        """Start the named functions' workers now (after they are created), so that handler imports
        and model loads overlap with uploads."""
        for name in function_names:
            self.dispatcher.prewarm(self.function_spec(name))


# ---------------------------------------------------------------------------------------------------
# IAM enforcement in moto


def check_iam_seam() -> None:
    """Raise a RuntimeError naming the moto version if the parts of moto that IAM enforcement relies on
    moved (as check_seam does for the invocation seam)."""
    from facerec_cli.pipeline.local.dispatch import TESTED_MOTO, _moto_version

    problems: list[str] = []
    try:
        from moto import settings
        from moto.awslambda.responses import LambdaResponse
        from moto.core.authorization import ActionAuthenticatorMixin
        from moto.iam.access_control import IAMRequest
        from moto.sts.models import sts_backends  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"IAM enforcement in the local cloud cannot work with moto {_moto_version()}: {exc}") from exc
    if not hasattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT"):
        problems.append("moto.settings.INITIAL_NO_AUTH_ACTION_COUNT is gone")
    if not hasattr(ActionAuthenticatorMixin, "request_count") or not callable(getattr(ActionAuthenticatorMixin, "_authenticate_and_authorize_action", None)):
        problems.append("ActionAuthenticatorMixin._authenticate_and_authorize_action is gone")
    from moto.s3.responses import S3Response

    for cls in (LambdaResponse, S3Response):
        if not issubclass(cls, ActionAuthenticatorMixin):
            problems.append(f"moto's {cls.__name__} no longer authorizes requests")
    if not callable(getattr(S3Response, "_authenticate_and_authorize_s3_action", None)):
        problems.append("S3Response._authenticate_and_authorize_s3_action is gone")
    for name in ("_create_aws_request", "_get_string_between", "check_action_permitted"):
        if not callable(getattr(IAMRequest, name, None)):
            problems.append(f"IAMRequest.{name} is gone")
    if problems:
        raise RuntimeError(
            f"IAM enforcement in the local cloud cannot work with moto {_moto_version()}: {'; '.join(problems)}. "
            f"It was built against moto {TESTED_MOTO}; install that (see constraints.txt) or port facerec_cli/localcloud/server.py."
        )


def _lambda_iam_request_class() -> type:
    from botocore.awsrequest import AWSRequest
    from moto.iam.access_control import IAMRequest

    class LambdaIAMRequest(IAMRequest):  # type: ignore[misc, valid-type]
        """moto's IAM check of a Lambda API request, with the IAM action AWS uses (Invoke is
        lambda:InvokeFunction) and the signature computed over the body that was sent: moto 5.2.1 signs
        its parsed query parameters instead when the body is empty, so every GET (GetFunction...) failed
        with SignatureDoesNotMatch."""

        ACTIONS = {"lambda:Invoke": "lambda:InvokeFunction"}

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._action = self.ACTIONS.get(self._action, self._action)

        def _create_aws_request(self) -> AWSRequest:
            signed = self._get_string_between("SignedHeaders=", ",", self._headers["Authorization"]).split(";")
            headers = self._create_headers_for_aws_request(signed, self._headers)
            request = AWSRequest(method=self._method, url=self._path, data=self._body or b"", headers=headers)
            request.context["timestamp"] = headers["X-Amz-Date"]
            return request

    return LambdaIAMRequest


def install_lambda_authorization() -> Any:
    """Make moto authorize Lambda API calls as AWS does: the action as IAM names it, on the function's
    ARN (moto 5.2.1 checks every Lambda action against the resource "*", so a policy naming the function,
    as least privilege does, never matched). Returns the function that restores moto."""
    import re
    from urllib.parse import unquote, urlparse

    from moto.awslambda.responses import LambdaResponse
    from moto.utilities.utils import get_partition

    request_cls = _lambda_iam_request_class()

    def determine_resource(self: Any) -> str:
        match = re.search(r"/functions/([^/]+)", urlparse(self.uri).path)
        if not match:
            return "*"
        name = unquote(match.group(1))
        if name.startswith("arn:"):
            return name
        qualifier = (self.querystring.get("Qualifier") or [None])[0]
        arn = f"arn:{get_partition(self.region)}:lambda:{self.region}:{self.current_account}:function:{name}"
        return f"{arn}:{qualifier}" if qualifier and ":" not in name else arn

    def authorize(self: Any, resource: str = "*") -> None:
        self._authenticate_and_authorize_action(request_cls, resource)

    added = {"_determine_resource": determine_resource, "_authenticate_and_authorize_normal_action": authorize}
    saved = {name: LambdaResponse.__dict__.get(name) for name in added}
    for name, value in added.items():
        setattr(LambdaResponse, name, value)

    def restore() -> None:
        for name, value in saved.items():
            if value is None:
                delattr(LambdaResponse, name)
            else:
                setattr(LambdaResponse, name, value)

    return restore


def install_s3_missing_key_rule() -> Any:
    """Make moto answer a read of a missing object as S3 does: 404 only to a caller that may list the
    bucket (s3:ListBucket), 403 AccessDenied to one that may not. moto 5.2.1 answers 404 to anyone, so
    a role without ListBucket (which turns every "not there yet" into an error on AWS) passed locally.
    And check S3 signatures over the path as sent. Returns the function that restores moto."""
    from moto.s3.responses import S3Response

    name = "_authenticate_and_authorize_s3_action"
    saved = S3Response.__dict__.get(name)
    original = getattr(S3Response, name)

    def authorize(self: Any, bucket_name: str | None = None, key_name: str | None = None) -> None:
        original(self, bucket_name=bucket_name, key_name=key_name)
        if not (bucket_name and key_name and self.data.get("Action") == "GetObject" and _iam_checking()):
            return
        try:
            missing = self.backend.get_bucket(bucket_name) is not None and self.backend.get_object(bucket_name, key_name) is None
        except Exception:  # noqa: BLE001 - no such bucket (or version): moto's own answer follows
            missing = False
        if missing:
            self.data["Action"] = "ListBucket"
            try:
                original(self, bucket_name=bucket_name)
            finally:
                self.data["Action"] = "GetObject"

    # moto re-signs the decoded path and query: every key or prefix with a percent-encoded character
    # (a space, "+", "/", "名前") failed with SignatureDoesNotMatch. Check the signature over the path and
    # query as the client sent them (the WSGI server's RAW_URI).
    signed_name = "_authenticate_and_authorize_action"
    signed_saved = S3Response.__dict__.get(signed_name)
    signed_original = getattr(S3Response, signed_name)

    def authorize_as_sent(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        from urllib.parse import urlparse, urlunparse

        environ = getattr(getattr(self, "request", None), "environ", None) or {}
        raw = environ.get("RAW_URI")
        if not raw:
            return signed_original(self, iam_request_cls, resource)
        sent = urlparse(raw if raw.startswith("/") else f"/{raw}")
        decoded = self.uri
        self.uri = urlunparse(urlparse(decoded)._replace(path=sent.path, query=sent.query))
        try:
            return signed_original(self, iam_request_cls, resource)
        finally:
            self.uri = decoded

    setattr(S3Response, name, authorize)
    setattr(S3Response, signed_name, authorize_as_sent)

    def restore() -> None:
        for attr, value in ((name, saved), (signed_name, signed_saved)):
            if value is None:
                delattr(S3Response, attr)
            else:
                setattr(S3Response, attr, value)

    return restore


def _iam_checking() -> bool:
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    return ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT


def enable_iam_enforcement() -> Any:
    """From now on every request to moto is authenticated and authorized; returns the function that
    switches it back off (and undoes the Lambda corrections)."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    restore_lambda = install_lambda_authorization()
    restore_s3 = install_s3_missing_key_rule()
    saved = (settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count)
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0

    def restore() -> None:
        settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = saved
        restore_s3()
        restore_lambda()

    return restore


def _reset_moto() -> None:
    from moto.moto_api import _internal

    _internal.moto_api_backend.reset()


def _check_port_free(host: str, port: int) -> None:
    # ThreadedMotoServer binds in its thread and waits for a ready event that a failed bind never sets:
    # start() would hang forever on a busy port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise RuntimeError(f"cannot start the local cloud on {host}:{port}: {exc.strerror}") from exc
