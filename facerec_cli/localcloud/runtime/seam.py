"""From moto's Lambda to real handlers: the seam.

moto delivers S3 ObjectCreated notifications to Lambda synchronously inside PutObject by calling
``moto.awslambda.models.LambdaFunction.invoke(self, body, request_headers, response_headers)`` with
empty headers, and the Invoke API goes through the same method with the HTTP request's headers. moto
cannot run Image functions itself, so while a LocalCloud runs that method is replaced by one that hands
the invocation to a :class:`~.dispatch.Dispatcher`. The seam is checked before it is patched: if a moto
upgrade moves it, the local runtime fails loudly instead of silently never running a handler.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from facerec_cli.localcloud.moto_fixes import TESTED_MOTO, moto_version
from facerec_cli.localcloud.runtime.dispatch import Dispatcher
from facerec_cli.localcloud.runtime.invocations import DRY_RUN, EVENT, REQUEST_RESPONSE
from facerec_cli.localcloud.runtime.functions import LocalFunction

log = logging.getLogger(__name__)

SEAM = "moto.awslambda.models.LambdaFunction.invoke"
SEAM_PARAMETERS = ("self", "body", "request_headers", "response_headers")


def check_seam() -> Any:
    """Return moto's LambdaFunction class if its ``invoke`` is still the seam this runtime patches;
    otherwise raise a RuntimeError that names the installed moto version."""
    problem = None
    cls: Any = None
    try:
        from moto.awslambda.models import LambdaFunction as cls
    except ImportError as exc:
        problem = f"cannot import moto.awslambda.models.LambdaFunction ({exc})"
    if problem is None:
        method = getattr(cls, "invoke", None)
        if not callable(method):
            problem = f"{SEAM} does not exist"
        else:
            params = tuple(inspect.signature(getattr(method, "__wrapped__", method)).parameters)
            if params != SEAM_PARAMETERS:
                problem = f"{SEAM} has parameters {params}, expected {SEAM_PARAMETERS}"
        if problem is None and not callable(getattr(cls, "get_configuration", None)):
            problem = "moto.awslambda.models.LambdaFunction.get_configuration does not exist"
    if problem:
        raise RuntimeError(
            f"facerec's local runtime cannot dispatch Lambda invocations with moto {moto_version()}: {problem}. "
            f"It was built against moto {TESTED_MOTO}, where S3 notifications and Invoke calls pass through "
            f"{SEAM}{SEAM_PARAMETERS[1:]}. Install moto=={TESTED_MOTO} (see constraints.txt) or port "
            "facerec_cli/localcloud/runtime/seam.py to the new moto."
        )
    return cls


def invocation_type(request_headers: Any) -> str:
    """moto's internal callers (S3, SNS, SQS, EventBridge notifications) pass empty headers: AWS invokes
    those asynchronously. The Invoke API passes the HTTP headers (case-insensitive)."""
    if not request_headers:
        return EVENT
    return request_headers.get("x-amz-invocation-type") or REQUEST_RESPONSE


def is_multipart_put_echo(event_text: str) -> bool:
    """moto 5.2.1 completes a multipart upload through its put_object, which sends an extra
    ``ObjectCreated:Put`` notification before the ``ObjectCreated:CompleteMultipartUpload`` one; AWS sends
    only the latter. The extra one is recognisable: a multipart ETag ends in ``-<parts>``, which no
    single PutObject produces."""
    if '"aws:s3"' not in event_text or "ObjectCreated:Put" not in event_text:
        return False
    try:
        records = json.loads(event_text).get("Records") or []
    except (ValueError, AttributeError):
        return False
    return bool(records) and all(
        r.get("eventSource") == "aws:s3"
        and r.get("eventName") == "ObjectCreated:Put"
        and "-" in str(r.get("s3", {}).get("object", {}).get("eTag", ""))
        for r in records
    )


def _dispatching_invoke(dispatcher: Dispatcher) -> Callable[[Any, Any, Any, Any], bytes]:
    def invoke(self: Any, body: Any, request_headers: Any, response_headers: Any) -> bytes:
        spec = LocalFunction.from_configuration(self.get_configuration())
        event_text = body.decode("utf-8") if isinstance(body, bytes) else (body or "")
        kind = invocation_type(request_headers)
        response_headers["x-amz-executed-version"] = "$LATEST"
        if kind == DRY_RUN:
            return b""
        if kind == EVENT:
            if is_multipart_put_echo(event_text):
                log.debug("dropped moto's extra ObjectCreated:Put for a multipart upload")
                return b""
            # moto answers the Invoke API with 202 for a non-None payload; S3 ignores the return value.
            dispatcher.submit(spec, event_text, EVENT)
            return b""
        outcome = dispatcher.invoke(spec, event_text)
        if not outcome.ok:
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(dict(outcome.error or {})).encode("utf-8")
        return (outcome.payload or "null").encode("utf-8")

    return invoke


_installed_lock = threading.Lock()
_installed: Any = None  # the original method while patched


def install_seam(dispatcher: Dispatcher) -> Callable[[], None]:
    """Route moto's Lambda invocations to ``dispatcher``; returns the function that restores moto."""
    global _installed
    cls = check_seam()
    with _installed_lock:
        if _installed is not None:
            raise RuntimeError("a local cloud is already dispatching Lambda invocations in this process")
        _installed = cls.__dict__["invoke"]
        cls.invoke = _dispatching_invoke(dispatcher)

    def restore() -> None:
        global _installed
        with _installed_lock:
            if _installed is not None:
                cls.invoke = _installed
                _installed = None

    return restore
