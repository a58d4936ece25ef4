"""The boto3 clients a deployment talks to, built once from Settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import aws
from ..config import Settings


@dataclass
class Clients:
    s3: Any
    iam: Any
    lambda_: Any
    sqs: Any
    sts: Any
    ecr: Any
    logs: Any
    _account_id: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Clients":
        sess = aws.session(settings)

        def make(service: str) -> Any:
            return aws.client(settings, service, sess=sess)

        return cls(
            s3=make("s3"), iam=make("iam"), lambda_=make("lambda"), sqs=make("sqs"),
            sts=make("sts"), ecr=make("ecr"), logs=make("logs"),
        )

    @classmethod
    def from_session(cls, sess: Any, endpoint_url: str | None) -> "Clients":
        """Clients from a ready session (the local cloud's, which reads no user AWS files)."""

        def make(service: str) -> Any:
            return sess.client(service, endpoint_url=endpoint_url)

        return cls(
            s3=make("s3"), iam=make("iam"), lambda_=make("lambda"), sqs=make("sqs"),
            sts=make("sts"), ecr=make("ecr"), logs=make("logs"),
        )

    @property
    def account_id(self) -> str:
        """The caller's account (sts:GetCallerIdentity, asked once)."""
        if self._account_id is None:
            self._account_id = self.sts.get_caller_identity()["Account"]
        return self._account_id
