"""AWS errors as messages a person can act on: :class:`DeployError` for deploys, :func:`explain` for any
AWS error, and :func:`aws_errors` for the commands that drive a deployment (upload, results, logs)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import botocore.exceptions

from facerec_cli.config import Settings
from facerec_cli.errors import UserError
from facerec_cli.infra.aws import error_code
from facerec_cli.infra.plan import Step

_ACCESS_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedAccess",
    "AuthorizationError",
    "Forbidden",
    "403",
}
_BAD_CREDENTIALS = {
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "UnrecognizedClientException",
    "InvalidToken",
}


class DeployError(UserError):
    """A deploy or destroy that stopped. ``completed`` are the steps that were carried out,
    ``failed`` the one that failed (None when reading the current state failed) and ``partial`` the
    parts of the failed step that were done before it failed."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        completed: list[Step] | None = None,
        failed: Step | None = None,
        partial: list[str] | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.completed = list(completed or [])
        self.failed = failed
        self.partial = list(partial or [])


def explain(exc: BaseException, *, what: str = "") -> tuple[str, str | None]:
    """(message, hint) for an error raised by an AWS call made while doing ``what``."""
    if isinstance(exc, UserError):
        return str(exc.args[0]) if exc.args else str(exc), exc.hint
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return "no AWS credentials found", "run `aws configure`, set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pass --profile"
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return f"cannot reach the AWS endpoint ({exc})", "check --endpoint-url / AWS_ENDPOINT_URL, --region and the network"
    if isinstance(exc, botocore.exceptions.WaiterError):
        return f"gave up waiting: {exc}", "the resource may still be settling; run the command again in a minute"
    code = error_code(exc)
    if code is None:
        return f"{type(exc).__name__}: {exc}", None
    message = exc.response.get("Error", {}).get("Message") or ""  # type: ignore[attr-defined]
    operation = getattr(exc, "operation_name", "") or "the call"
    if code == "BucketAlreadyExists":
        return (
            f"the bucket name {what + ' ' if what else ''}is already taken by another AWS account "
            "(S3 bucket names are global)",
            "choose another --prefix; `facerec destroy` with this prefix removes what was already created",
        )
    if code == "BucketAlreadyOwnedByYou":
        return f"{what or 'the bucket'} already belongs to you in another region", "use that bucket's --region or choose another --prefix"
    if code in _ACCESS_DENIED:
        return (
            f"AWS denied {operation}{' (' + message + ')' if message else ''}",
            "use credentials allowed to manage S3, IAM, Lambda, SQS, ECR and CloudWatch Logs (or pass --profile)",
        )
    if code in _BAD_CREDENTIALS:
        return f"AWS rejected the credentials ({code}: {message})", "check the access keys, refresh the session token, or pass --profile"
    if code in ("QueueDeletedRecently", "AWS.SimpleQueueService.QueueDeletedRecently"):
        return "the failure queue was deleted less than 60 seconds ago and cannot be recreated yet", "wait a minute and run the command again"
    if ecr_access_denied(exc):
        return (
            f"Lambda cannot read the function's image from ECR ({message})",
            "the repository policy must let lambda.amazonaws.com use ecr:BatchGetImage and ecr:GetDownloadUrlForLayer: "
            "run `facerec bootstrap` again (it sets that policy), or check that the image URI is in this account and region",
        )
    if code == "InvalidParameterValueException" and "role" in message.lower():
        return (
            f"Lambda cannot use the function's IAM role yet ({message})",
            "IAM changes take a few seconds to reach Lambda; run the command again in a minute",
        )
    if code in ("TooManyBuckets", "LimitExceeded", "LimitExceededException", "CodeStorageExceededException"):
        return f"an AWS account limit was reached ({code}: {message})", "delete unused resources or ask AWS for a higher quota"
    if code == "BucketNotEmpty":
        return f"{what or 'the bucket'} is not empty: something wrote to it while it was being emptied", "run the command again"
    return f"{code}: {message}" if message else code, None


def ecr_access_denied(exc: BaseException) -> bool:
    """Lambda refusing an image it may not read (CreateFunction/UpdateFunctionCode: "Lambda does not have
    permission to access the ECR image. Check the ECR permissions."): a repository policy to fix, not IAM
    propagation to wait for."""
    code = error_code(exc)
    if code not in ("InvalidParameterValueException", "AccessDeniedException"):
        return False
    message = (exc.response.get("Error", {}).get("Message") or "").lower()  # type: ignore[attr-defined]
    # AccessDeniedException alone may be the caller's own missing ecr:* permission: only Lambda's words count.
    return "ecr" in message and (code == "InvalidParameterValueException" or "lambda does not have permission" in message)


# ------------------------------------------------------------------------------------------ driving a deployment

MISSING_BUCKET = frozenset({"NoSuchBucket", "404", "NotFound"})


def not_deployed(settings: Settings, what: str) -> UserError:
    where = f"region {settings.region}" + (f", endpoint {settings.endpoint_url}" if settings.endpoint_url else "")
    return UserError(
        f"{what} does not exist (prefix {settings.prefix}, {where})",
        hint="run `facerec bootstrap` first, or pass the --prefix/--region it was deployed with",
    )


def user_error(settings: Settings, doing: str, exc: BaseException, *, bucket: str | None = None) -> UserError:
    """One UserError for an AWS error raised while ``doing``; a missing ``bucket`` says to bootstrap."""
    if isinstance(exc, UserError):
        return exc
    if bucket is not None and error_code(exc) == "NoSuchBucket":
        return not_deployed(settings, f"bucket {bucket}")
    message, hint = explain(exc, what=bucket or "")
    return UserError(f"{doing} failed: {message}", hint=hint)


@contextlib.contextmanager
def aws_errors(settings: Settings, doing: str, *, bucket: str | None = None) -> Iterator[None]:
    """Turn botocore errors inside the block into one UserError naming what was being done."""
    try:
        yield
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise user_error(settings, doing, exc, bucket=bucket) from exc
