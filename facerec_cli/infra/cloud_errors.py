"""AWS errors raised while driving a deployment (upload, results, logs) as messages a person can act on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import botocore.exceptions

from facerec_cli.infra.aws import error_code
from facerec_cli.config import Settings
from facerec_cli.infra.errors import explain
from facerec_cli.errors import UserError

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
