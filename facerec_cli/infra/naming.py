"""What both stacks name the same way: ARN partitions, the deployment tag, the one inline policy of a
role, and the bucket policy statement that refuses plain HTTP."""

from __future__ import annotations

from typing import Any

TAG_KEY = "facerec:prefix"  # every resource of a deployment carries its prefix under this tag
ROLE_POLICY_NAME = "facerec-least-privilege"  # a role's only inline policy
TLS_ONLY_SID = "facerec-tls-only"  # the bucket policy statement refusing plain-HTTP requests


def partition_for(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def dns_suffix(region: str) -> str:
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def plain_http(endpoint_url: str | None) -> bool:
    """An endpoint without TLS (a local moto server), where a TLS-only bucket policy would refuse everything."""
    return bool(endpoint_url) and str(endpoint_url).lower().startswith("http://")


def tls_only_statement(bucket_arn: str) -> dict[str, Any]:
    """Deny every request to the bucket and its objects that does not come over TLS."""
    return {
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
