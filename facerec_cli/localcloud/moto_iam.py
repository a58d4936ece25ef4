"""IAM enforcement on the embedded moto server: the IaaS tiers of ``facerec iaas run-local`` (and the
tests) run with credentials bound to exactly their role's policy, so a permission missing from
:func:`~facerec_cli.iaas.stack.app_policy` or :func:`~facerec_cli.iaas.stack.web_policy`
fails there, not first on AWS.

moto (5.2.1, pinned) checks a request's signature and the caller's identity policies once
``INITIAL_NO_AUTH_ACTION_COUNT`` requests have passed (:func:`moto.core.authorization.
enable_iam_authentication` sets it to 0). Its evaluation is simpler than AWS's: statement
``Condition`` blocks are not evaluated (so they are neither proven nor disproven here), and a service
without its own resource lookup is authorized against ``*``, which a statement naming a resource never
matches. :func:`enforced` therefore teaches it, while enforcement is on, what AWS does for the calls
the IaaS tiers make:

- SQS ``GetQueueUrl`` is authorized against the queue's ARN (moto reads only ``QueueUrl`` and falls
  back to ``*``), and the batch calls by their single action (AWS has no ``sqs:DeleteMessageBatch``
  permission: ``DeleteMessageBatch`` needs ``sqs:DeleteMessage``, and so on; moto asked for the
  batch name, which no policy grants);
- a ``GetObject``/``HeadObject`` of a key that does not exist is ``403 AccessDenied`` unless the caller
  may ``s3:ListBucket`` the bucket (AWS's rule; moto answers 404 to anyone): the app tier's
  ``ListUploads`` statement is what turns a vanished upload into an error answer instead of retries;
- S3 signatures are checked against the path as the client sent it (moto re-signs the decoded path,
  so every key with a character that is percent-encoded, ``日本.jpg`` or ``a+b.jpg``, failed with
  SignatureDoesNotMatch);
- Auto Scaling ``SetDesiredCapacity``/``TerminateInstanceInAutoScalingGroup``/``UpdateAutoScalingGroup``/
  ``DeleteAutoScalingGroup`` are authorized against the group's ARN, EC2 ``CreateTags`` against the
  tagged instance's ARN.

moto's state and settings are per process: there is one embedded cloud per process (see
:class:`~facerec_cli.localcloud.server.LocalCloud`), so enforcement applies to every client of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["admin_credentials", "credential_env", "enforced", "enforcing", "role_credentials"]

_SQS_BATCH = {"DeleteMessageBatch": "DeleteMessage", "SendMessageBatch": "SendMessage", "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}
_ASG_RESOURCE_ACTIONS = ("SetDesiredCapacity", "TerminateInstanceInAutoScalingGroup", "UpdateAutoScalingGroup", "DeleteAutoScalingGroup")


def enforcing() -> bool:
    """Whether moto checks credentials and policies right now."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    return ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT


def _signed_path(response: Any) -> str:
    """The request's path and query as the client signed them: percent-encoded as sent."""
    from urllib.parse import urlparse

    parsed = urlparse(response.uri)
    path = getattr(response, "raw_path", None) or parsed.path
    return path + (f"?{parsed.query}" if parsed.query else "")


def _require_list_bucket(response: Any, bucket: str) -> None:
    """AWS's rule for a missing key: AccessDenied unless the caller may list the bucket."""
    from moto.iam.access_control import S3IAMRequest
    from moto.utilities.utils import get_partition

    if not enforcing():
        return
    path = _signed_path(response)
    check = S3IAMRequest(
        account_id=response.current_account, method=response.method, path=path, data=response.data,
        body=response.raw_body, headers=response.headers, action="ListBucket",
    )
    check.check_action_permitted(f"arn:{get_partition(response.region)}:s3:::{bucket}")


@contextlib.contextmanager
def _corrections() -> Iterator[None]:
    from moto.autoscaling.responses import AutoScalingResponse
    from moto.ec2.responses import EC2Response
    from moto.iam.access_control import IAMRequest
    from moto.s3.exceptions import MissingKey
    from moto.s3.responses import S3Response
    from moto.sqs.responses import SQSResponse
    from moto.utilities.utils import get_partition

    saved: list[tuple[Any, str, Any]] = []

    def patch(cls: Any, name: str, value: Any) -> None:
        saved.append((cls, name, cls.__dict__.get(name, _ABSENT)))
        setattr(cls, name, value)

    sqs_resource = SQSResponse._determine_resource

    def sqs_determine_resource(self: Any) -> str:
        if self._get_action() == "GetQueueUrl":
            name = self._get_param("QueueName")
            if name:
                return f"arn:{get_partition(self.region)}:sqs:{self.region}:{self.current_account}:{name}"
        return sqs_resource(self)

    key_get = S3Response._key_response_get

    def s3_key_response_get(self: Any, query: dict[str, Any], key_name: str) -> Any:
        try:
            return key_get(self, query, key_name)
        except MissingKey:
            _require_list_bucket(self, self.bucket_name)
            raise

    head_object = S3Response.head_object

    def s3_head_object(self: Any, bucket_name: str, query: dict[str, Any], key_name: str, headers: dict[str, Any]) -> Any:
        result = head_object(self, bucket_name, query, key_name, headers)
        if isinstance(result, tuple) and result and result[0] == 404:
            _require_list_bucket(self, bucket_name)
        return result

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

    authorize = S3Response._authenticate_and_authorize_action

    def s3_authorize(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        from urllib.parse import urlparse, urlunparse

        raw = getattr(self, "raw_path", None)
        if not raw:
            return authorize(self, iam_request_cls, resource)
        decoded = self.uri
        self.uri = urlunparse(urlparse(decoded)._replace(path=raw))
        try:
            return authorize(self, iam_request_cls, resource)
        finally:
            self.uri = decoded

    class SqsIAMRequest(IAMRequest):
        def __init__(self, *, action: str, **kwargs: Any) -> None:
            super().__init__(action=_SQS_BATCH.get(action, action), **kwargs)

    def sqs_authorize(self: Any, resource: str = "*") -> None:
        self._authenticate_and_authorize_action(SqsIAMRequest, resource)

    patch(SQSResponse, "_determine_resource", sqs_determine_resource)
    patch(SQSResponse, "_authenticate_and_authorize_normal_action", sqs_authorize)
    patch(S3Response, "_authenticate_and_authorize_action", s3_authorize)
    patch(S3Response, "_key_response_get", s3_key_response_get)
    patch(S3Response, "head_object", s3_head_object)
    patch(AutoScalingResponse, "_determine_resource", asg_determine_resource)
    patch(EC2Response, "_determine_resource", ec2_determine_resource)
    try:
        yield
    finally:
        for cls, name, value in reversed(saved):
            if value is _ABSENT:
                delattr(cls, name)
            else:
                setattr(cls, name, value)


_ABSENT = object()


@contextlib.contextmanager
def enforced() -> Iterator[None]:
    """While in this block, the embedded moto server enforces IAM (signatures and identity policies),
    with the corrections above. Credentials must then be those of a moto IAM user or assumed role:
    make users, roles and keys before entering."""
    from moto.core.authorization import enable_iam_authentication

    with _corrections(), enable_iam_authentication():
        yield


# ------------------------------------------------------------------------------------------ principals


def admin_credentials(iam: Any, name: str = "facerec-iaas-admin") -> dict[str, str]:
    """An IAM user allowed everything (for the side that set the cloud up and inspects it), as
    ``aws_access_key_id``/``aws_secret_access_key`` keyword arguments."""
    import json

    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="everything", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    ))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def role_credentials(iam: Any, sts: Any, role: str, policy: dict[str, Any], trust: dict[str, Any], *, session: str = "facerec-local") -> dict[str, str]:
    """Make ``role`` with ``policy`` as its only policy (if it does not exist yet; else it must already
    have exactly that) and assume it: temporary credentials bound to exactly that policy, as
    ``aws_access_key_id``/``aws_secret_access_key``/``aws_session_token`` keyword arguments. Call it
    before :func:`enforced` (the trust policy names an AWS service, which moto cannot play)."""
    import json

    import botocore.exceptions

    from facerec_cli.pipeline.stack import ROLE_POLICY_NAME

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
