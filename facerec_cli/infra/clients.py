"""The one bag of boto3 clients a deployment talks to: made on first use, from one session.

The pipeline's buckets are named from the prefix (``<prefix>-input``...), not by the user in full: a
name that someone else's account took (or takes after a destroy) must never receive our uploads or
results, nor have its objects read as ours. So every S3 call on those buckets that accepts it carries
``ExpectedBucketOwner`` (the caller's account, from sts:GetCallerIdentity): S3 refuses it with 403 when
another account owns the bucket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from facerec_cli.config import Settings
from facerec_cli.infra import aws


class Clients:
    """``clients.s3``, ``clients.iam``, ``clients.lambda_`` (``lambda`` is a Python keyword),
    ``clients.client("autoscaling")``...: one client per service, made when first asked for."""

    def __init__(self, make: Callable[[str], Any]) -> None:
        self._make = make
        self._clients: dict[str, Any] = {}
        self._account_id: str | None = None
        self._owned_buckets: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> "Clients":
        """Clients for the user's AWS (profile, region, endpoint from ``settings``); no credentials is
        one clear error at the first client."""
        sess = aws.session(settings)
        return cls(lambda service: aws.client(settings, service, sess=sess))

    @classmethod
    def from_session(cls, sess: Any, endpoint_url: str | None) -> "Clients":
        """Clients from a ready session (the local cloud's, which reads no user AWS files)."""
        return cls(lambda service: sess.client(service, endpoint_url=endpoint_url))

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._make(service)
        return self._clients[service]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.client("lambda" if name == "lambda_" else name)

    @property
    def account_id(self) -> str:
        """The caller's account (sts:GetCallerIdentity, asked once)."""
        if self._account_id is None:
            self._account_id = self.client("sts").get_caller_identity()["Account"]
        return self._account_id

    def expect_owner(self, buckets: Iterable[str]) -> None:
        """From now on S3 calls on ``buckets`` carry ExpectedBucketOwner (this account)."""
        if not self._owned_buckets:
            expect_bucket_owner(self.client("s3"), self._owned_buckets, lambda: self.account_id)
        self._owned_buckets.update(buckets)


def expect_bucket_owner(s3: Any, buckets: Iterable[str], account_id: Callable[[], str]) -> Any:
    """Make every call of ``s3`` on one of ``buckets`` whose API takes ExpectedBucketOwner send it, with
    ``account_id()`` (asked at the first such call). ``buckets`` is read at each call (a set may grow).
    Returns ``s3``."""
    names = buckets if isinstance(buckets, (set, frozenset)) else frozenset(buckets)

    def add_owner(params: dict[str, Any], model: Any, **_: Any) -> None:
        if params.get("Bucket") in names and "ExpectedBucketOwner" in model.input_shape.members and not params.get("ExpectedBucketOwner"):
            params["ExpectedBucketOwner"] = account_id()

    s3.meta.events.register("before-parameter-build.s3", add_owner, unique_id=f"facerec-expected-owner-{id(s3)}")
    return s3


def owner_checked_s3(settings: Settings, s3: Any | None = None, sts: Any | None = None) -> Any:
    """An S3 client for the CLI's calls on the pipeline's buckets (upload, results, reports), with
    ExpectedBucketOwner on them."""
    s3 = s3 or aws.client(settings, "s3")
    account: list[str] = []

    def account_id() -> str:
        if not account:
            account.append((sts or aws.client(settings, "sts")).get_caller_identity()["Account"])
        return account[0]

    return expect_bucket_owner(s3, settings.names.buckets, account_id)
