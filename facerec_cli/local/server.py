"""The embedded local cloud: a moto server on 127.0.0.1 whose Lambda runs real handlers.

moto keeps its state in module globals, and the seam is patched on a class, so there is one LocalCloud
per process at a time. Its state starts empty and is wiped on exit.
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

from .dispatch import Dispatcher, FailureHook, RunnerFactory, check_seam, install_seam
from .workers import FunctionSpec, applied_environ, real_aws_keys

DEFAULT_REGION = "us-east-1"
# Fake credentials: moto accepts any, and these can never be mistaken for a real account's.
FAKE_ACCESS_KEY_ID = "testing"
FAKE_SECRET_ACCESS_KEY = "testing"

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
    ) -> None:
        self.region = region
        self._host, self._port = host, port
        self._dispatcher_args: dict[str, Any] = {
            "workers": workers,
            "on_failure": on_failure,
            "max_attempts": max_attempts,
            "log_path": log_path,
            "runner_factory": runner_factory,  # None: worker processes (or this process)
        }
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
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            # An HTTP(S)_PROXY meant for the internet must not capture requests to the local server.
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }

    def session(self) -> boto3.Session:
        """A boto3 session for this process that reads no AWS config/credentials file and ignores
        AWS_PROFILE, whatever the user's environment says."""
        core = botocore.session.Session(
            session_vars={
                "profile": (None, None, None, None),
                "config_file": (None, None, os.devnull, None),
                "credentials_file": (None, None, os.devnull, None),
            }
        )
        return boto3.Session(
            botocore_session=core,
            aws_access_key_id=FAKE_ACCESS_KEY_ID,
            aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
            region_name=self.region,
        )

    def client(self, service: str, **kwargs: Any) -> Any:
        return self.session().client(service, endpoint_url=self.endpoint_url, **kwargs)

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
