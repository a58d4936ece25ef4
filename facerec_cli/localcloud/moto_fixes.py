"""IAM enforcement on the embedded moto server, with moto's gaps corrected: the one place that teaches
moto (5.2.1, pinned) what AWS does, for both local systems. ``facerec run-local --enforce-iam``
(:class:`~facerec_cli.localcloud.server.LocalCloud` with ``enforce_iam=True``: handlers run with their
function role's credentials) and ``facerec iaas run-local`` (:class:`~facerec_cli.iaas.local.LocalIaas`:
the tiers run with credentials bound to exactly their role's policy) both enter :func:`enforced`, so a
permission missing from a role's policy fails there, not first on AWS.

moto checks a request's signature and the caller's identity policies once
``INITIAL_NO_AUTH_ACTION_COUNT`` requests have passed (:func:`moto.core.authorization.
enable_iam_authentication` sets it to 0). Its evaluation is simpler than AWS's: statement
``Condition`` blocks are not evaluated (so they are neither proven nor disproven here), nor bucket
policies' conditions, and a service without its own resource lookup is authorized against ``*``, which
a statement naming a resource never matches. While enforcement is on, :func:`enforced` corrects it for
the calls the two systems make:

- Lambda: the action as IAM names it (``Invoke`` is ``lambda:InvokeFunction``), on the function's ARN
  (moto checked every Lambda action against ``*``), and the signature over the body that was sent
  (moto signed its parsed query parameters when the body was empty, so every GET failed);
- S3: a ``GetObject``/``HeadObject`` of a key that does not exist is ``403 AccessDenied`` unless the
  caller may ``s3:ListBucket`` the bucket (AWS's rule; moto answers 404 to anyone): the IaaS app tier's
  ``ListUploads`` statement is what turns a vanished upload into an error answer instead of retries;
  and signatures are checked over the path and query as the client sent them (moto re-signs the decoded
  path, so every key with a percent-encoded character, ``日本.jpg`` or ``a+b.jpg``, failed with
  SignatureDoesNotMatch);
- SQS ``GetQueueUrl`` is authorized against the queue's ARN (moto reads only ``QueueUrl`` and falls
  back to ``*``), and the batch calls by their single action (AWS has no ``sqs:DeleteMessageBatch``
  permission: ``DeleteMessageBatch`` needs ``sqs:DeleteMessage``, and so on; moto asked for the batch
  name, which no policy grants);
- Auto Scaling ``SetDesiredCapacity``/``TerminateInstanceInAutoScalingGroup``/``UpdateAutoScalingGroup``/
  ``DeleteAutoScalingGroup`` are authorized against the group's ARN, EC2 ``CreateTags`` against the
  tagged instance's ARN.

moto's state and settings are per process: there is one embedded cloud per process (see
:class:`~facerec_cli.localcloud.server.LocalCloud`), so enforcement applies to every client of it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

from facerec_cli.infra.naming import ROLE_POLICY_NAME

__all__ = [
    "CORRECTIONS",
    "TESTED_MOTO",
    "admin_credentials",
    "check_iam_seam",
    "credential_env",
    "enforced",
    "enforcing",
    "moto_version",
    "role_credentials",
]

TESTED_MOTO = "5.2.1"  # the moto that the local cloud's patches were built against (constraints.txt)

ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}

_SQS_BATCH = {"DeleteMessageBatch": "DeleteMessage", "SendMessageBatch": "SendMessage", "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}
_ASG_RESOURCE_ACTIONS = ("SetDesiredCapacity", "TerminateInstanceInAutoScalingGroup", "UpdateAutoScalingGroup", "DeleteAutoScalingGroup")
_LAMBDA_ACTIONS = {"lambda:Invoke": "lambda:InvokeFunction"}


def moto_version() -> str:
    try:
        import moto

        return str(getattr(moto, "__version__", "unknown"))
    except ImportError:
        return "not installed"


def enforcing() -> bool:
    """Whether moto checks credentials and policies right now."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    return ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT


def check_iam_seam() -> None:
    """Raise a RuntimeError naming the moto version if the parts of moto that IAM enforcement relies on
    moved (as :func:`~facerec_cli.localcloud.runtime.seam.check_seam` does for the invocation seam)."""
    problems: list[str] = []
    try:
        from moto import settings
        from moto.awslambda.responses import LambdaResponse
        from moto.core.authorization import ActionAuthenticatorMixin
        from moto.iam.access_control import IAMRequest
        from moto.sts.models import sts_backends  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"IAM enforcement in the local cloud cannot work with moto {moto_version()}: {exc}") from exc
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
            f"IAM enforcement in the local cloud cannot work with moto {moto_version()}: {'; '.join(problems)}. "
            f"It was built against moto {TESTED_MOTO}; install that (see constraints.txt) or port facerec_cli/localcloud/moto_fixes.py."
        )


# ------------------------------------------------------------------------------------------ corrections


def _lambda_corrections(patch: Any) -> None:
    import re
    from urllib.parse import unquote, urlparse

    from botocore.awsrequest import AWSRequest
    from moto.awslambda.responses import LambdaResponse
    from moto.iam.access_control import IAMRequest
    from moto.utilities.utils import get_partition

    class LambdaIAMRequest(IAMRequest):  # type: ignore[misc, valid-type]
        """moto's IAM check of a Lambda API request, with the IAM action AWS uses and the signature
        computed over the body that was sent."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._action = _LAMBDA_ACTIONS.get(self._action, self._action)

        def _create_aws_request(self) -> AWSRequest:
            signed = self._get_string_between("SignedHeaders=", ",", self._headers["Authorization"]).split(";")
            headers = self._create_headers_for_aws_request(signed, self._headers)
            request = AWSRequest(method=self._method, url=self._path, data=self._body or b"", headers=headers)
            request.context["timestamp"] = headers["X-Amz-Date"]
            return request

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
        self._authenticate_and_authorize_action(LambdaIAMRequest, resource)

    patch(LambdaResponse, "_determine_resource", determine_resource)
    patch(LambdaResponse, "_authenticate_and_authorize_normal_action", authorize)


def _s3_corrections(patch: Any) -> None:
    from urllib.parse import urlparse, urlunparse

    from moto.s3.responses import S3Response

    authorize_s3 = S3Response._authenticate_and_authorize_s3_action

    def authorize_missing_key(self: Any, bucket_name: str | None = None, key_name: str | None = None) -> None:
        # HeadObject is authorized as GetObject too.
        authorize_s3(self, bucket_name=bucket_name, key_name=key_name)
        if not (bucket_name and key_name and self.data.get("Action") == "GetObject" and enforcing()):
            return
        try:
            missing = self.backend.get_bucket(bucket_name) is not None and self.backend.get_object(bucket_name, key_name) is None
        except Exception:  # noqa: BLE001 - no such bucket (or version): moto's own answer follows
            missing = False
        if missing:
            self.data["Action"] = "ListBucket"
            try:
                authorize_s3(self, bucket_name=bucket_name)
            finally:
                self.data["Action"] = "GetObject"

    authorize = S3Response._authenticate_and_authorize_action

    def authorize_as_sent(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        # The path and query as the client sent (and signed) them: the WSGI server's RAW_URI.
        environ = getattr(getattr(self, "request", None), "environ", None) or {}
        raw = environ.get("RAW_URI")
        if not raw:
            return authorize(self, iam_request_cls, resource)
        sent = urlparse(raw if raw.startswith("/") else f"/{raw}")
        decoded = self.uri
        self.uri = urlunparse(urlparse(decoded)._replace(path=sent.path, query=sent.query))
        try:
            return authorize(self, iam_request_cls, resource)
        finally:
            self.uri = decoded

    patch(S3Response, "_authenticate_and_authorize_s3_action", authorize_missing_key)
    patch(S3Response, "_authenticate_and_authorize_action", authorize_as_sent)


def _sqs_corrections(patch: Any) -> None:
    from moto.iam.access_control import IAMRequest
    from moto.sqs.responses import SQSResponse
    from moto.utilities.utils import get_partition

    sqs_resource = SQSResponse._determine_resource

    def determine_resource(self: Any) -> str:
        if self._get_action() == "GetQueueUrl":
            name = self._get_param("QueueName")
            if name:
                return f"arn:{get_partition(self.region)}:sqs:{self.region}:{self.current_account}:{name}"
        return sqs_resource(self)

    class SqsIAMRequest(IAMRequest):  # type: ignore[misc, valid-type]
        def __init__(self, *, action: str, **kwargs: Any) -> None:
            super().__init__(action=_SQS_BATCH.get(action, action), **kwargs)

    def authorize(self: Any, resource: str = "*") -> None:
        self._authenticate_and_authorize_action(SqsIAMRequest, resource)

    patch(SQSResponse, "_determine_resource", determine_resource)
    patch(SQSResponse, "_authenticate_and_authorize_normal_action", authorize)


def _ec2_corrections(patch: Any) -> None:
    from moto.autoscaling.responses import AutoScalingResponse
    from moto.ec2.responses import EC2Response
    from moto.utilities.utils import get_partition

    def asg_determine_resource(self: Any) -> str:
        action = self._get_action()
        if action not in _ASG_RESOURCE_ACTIONS:
            return "*"
        groups = self.autoscaling_backend.autoscaling_groups
        name = self._get_param("AutoScalingGroupName")
        if action == "TerminateInstanceInAutoScalingGroup":
            instance_id = self._get_param("InstanceId")
            name = next((g.name for g in groups.values() if any(s.instance.id == instance_id for s in g.instance_states)), None)
        group = groups.get(name) if name else None
        return group.arn if group is not None else "*"

    def ec2_determine_resource(self: Any) -> str:
        if self._get_action() == "CreateTags":
            ids = [v[0] if isinstance(v, list) else v for k, v in self.querystring.items() if k.startswith("ResourceId.")]
            if len(ids) == 1 and str(ids[0]).startswith("i-"):
                return f"arn:{get_partition(self.region)}:ec2:{self.region}:{self.current_account}:instance/{ids[0]}"
        return "*"

    patch(AutoScalingResponse, "_determine_resource", asg_determine_resource)
    patch(EC2Response, "_determine_resource", ec2_determine_resource)


_ABSENT = object()


# The corrections per service. The EC2 and Auto Scaling ones import moto's EC2 backend (0.7 s): a cloud
# whose callers make no EC2 call (run-local's pipeline) leaves them out.
CORRECTIONS = {"lambda": _lambda_corrections, "s3": _s3_corrections, "sqs": _sqs_corrections, "ec2": _ec2_corrections}


@contextlib.contextmanager
def _corrections(services: Iterable[str]) -> Iterator[None]:
    saved: list[tuple[Any, str, Any]] = []

    def patch(cls: Any, name: str, value: Any) -> None:
        saved.append((cls, name, cls.__dict__.get(name, _ABSENT)))
        setattr(cls, name, value)

    try:
        for service in services:
            CORRECTIONS[service](patch)
        yield
    finally:
        for cls, name, value in reversed(saved):
            if value is _ABSENT:
                delattr(cls, name)
            else:
                setattr(cls, name, value)


@contextlib.contextmanager
def enforced(services: Iterable[str] = tuple(CORRECTIONS)) -> Iterator[None]:
    """While in this block, the embedded moto server enforces IAM (signatures and identity policies),
    with the corrections above for ``services`` (default: all). Credentials must then be those of a moto
    IAM user or assumed role: make users, roles and keys before entering."""
    from moto.core.authorization import enable_iam_authentication

    with _corrections(services), enable_iam_authentication():
        yield


# ------------------------------------------------------------------------------------------ principals


def admin_credentials(iam: Any, name: str = "facerec-iaas-admin") -> dict[str, str]:
    """An IAM user allowed everything (for the side that set the cloud up and inspects it), as
    ``aws_access_key_id``/``aws_secret_access_key`` keyword arguments."""
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="everything", PolicyDocument=json.dumps(ADMIN_POLICY))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def role_credentials(iam: Any, sts: Any, role: str, policy: dict[str, Any], trust: dict[str, Any], *, session: str = "facerec-local") -> dict[str, str]:
    """Make ``role`` with ``policy`` as its only policy (if it does not exist yet; else it must already
    have exactly that) and assume it: temporary credentials bound to exactly that policy, as
    ``aws_access_key_id``/``aws_secret_access_key``/``aws_session_token`` keyword arguments. Call it
    before :func:`enforced` (the trust policy names an AWS service, which moto cannot play)."""
    import botocore.exceptions

    try:
        arn = iam.get_role(RoleName=role)["Role"]["Arn"]
    except botocore.exceptions.ClientError:
        arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        iam.put_role_policy(RoleName=role, PolicyName=ROLE_POLICY_NAME, PolicyDocument=json.dumps(policy))
    creds = sts.assume_role(RoleArn=arn, RoleSessionName=session)["Credentials"]
    return {"aws_access_key_id": creds["AccessKeyId"], "aws_secret_access_key": creds["SecretAccessKey"], "aws_session_token": creds["SessionToken"]}


def credential_env(credentials: dict[str, str]) -> dict[str, str]:
    """The same credentials as environment variables (for a worker process)."""
    env = {"AWS_ACCESS_KEY_ID": credentials["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": credentials["aws_secret_access_key"]}
    if credentials.get("aws_session_token"):
        env["AWS_SESSION_TOKEN"] = credentials["aws_session_token"]
    return env
