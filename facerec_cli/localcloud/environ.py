"""The environment of the local systems' processes: the variables that would reach the user's real AWS
account (never passed on), variables set for the length of a block, and where a worker process's output
goes. Shared by the embedded cloud, the pipeline's Lambda workers and the IaaS app-tier workers; imports
nothing heavy (spawned workers import it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

# Variables that would let a worker reach the user's real AWS account (or make botocore look for a
# profile that the empty config file cannot have). Workers never inherit them.
REAL_AWS_KEYS = frozenset(
    {
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CREDENTIAL_EXPIRATION",
        # Would make boto3 ignore AWS_ENDPOINT_URL, i.e. talk to real AWS.
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    }
)


def real_aws_keys(environ: Mapping[str, str]) -> frozenset[str]:
    """The variables in ``environ`` that a local worker must not see: credentials and profiles, and
    per-service endpoints (``AWS_ENDPOINT_URL_S3``...) that would override the local cloud's."""
    return frozenset(k for k in environ if k in REAL_AWS_KEYS or k.startswith("AWS_ENDPOINT_URL_"))


@contextlib.contextmanager
def applied_environ(values: Mapping[str, str], remove: frozenset[str] = frozenset()) -> Iterator[None]:
    """Set (and unset) variables for the duration of a call and put the previous values back."""
    saved = {key: os.environ.get(key) for key in (*values, *remove)}
    for key in remove:
        os.environ.pop(key, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def redirect_output(log_path: str | None) -> None:
    """A worker process's stdout and stderr (its subprocesses' too) to ``log_path``, or stdout to
    stderr: the parent's stdout carries only results."""
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # private when it creates it
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    else:
        os.dup2(2, 1)
