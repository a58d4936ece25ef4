"""boto3 sessions and clients built from Settings, with errors a person can act on."""

from __future__ import annotations

from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from facerec_cli.config import Settings
from facerec_cli.errors import UserError

_RETRIES = botocore.config.Config(retries={"max_attempts": 5, "mode": "standard"})


def session(settings: Settings) -> boto3.Session:
    try:
        return boto3.Session(profile_name=settings.profile, region_name=settings.region)
    except botocore.exceptions.ProfileNotFound as exc:
        raise UserError(f"AWS profile {settings.profile!r} not found", hint="check ~/.aws/config or drop --profile") from exc


def client(settings: Settings, service: str, *, sess: boto3.Session | None = None) -> Any:
    sess = sess or session(settings)
    if sess.get_credentials() is None:
        raise UserError(
            "no AWS credentials found",
            hint="run `aws configure`, set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pass --profile",
        )
    return sess.client(service, endpoint_url=settings.endpoint_url, config=_RETRIES)


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None
