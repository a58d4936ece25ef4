"""What both stacks name the same way: ARN partitions, the deployment tag, the one inline policy of a
role, the bucket policy statement that refuses plain HTTP, and AWS's limits on the names themselves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from facerec_cli.errors import UserError

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


# The length limits of the names both stacks derive from a prefix: (shortest, longest, what the service
# calls it). From each service's API reference: CreateBucket, CreateFunction (FunctionName: 64 without a
# qualifier), CreateRole, CreateInstanceProfile, CreateQueue, CreateLogGroup, CreateRepository,
# CreateSecurityGroup (GroupName), CreateLaunchTemplate, CreateAutoScalingGroup.
NAME_LIMITS: dict[str, tuple[int, int]] = {
    "s3 bucket": (3, 63),
    "lambda function": (1, 64),
    "iam role": (1, 64),
    "iam instance-profile": (1, 128),
    "sqs queue": (1, 80),
    "log group": (1, 512),
    "ecr repository": (2, 256),
    "security group": (1, 255),
    "launch template": (3, 128),
    "auto scaling group": (1, 255),
}


def check_names(prefix: str, derive: Callable[[str], list[tuple[str, str]]]) -> None:
    """Refuse a prefix that makes any ``(kind, name)`` that ``derive(prefix)`` gives longer (or shorter)
    than its service allows, in one line naming the longest prefix allowed and a name that does not fit."""
    names = derive(prefix)
    bad = next(((kind, name) for kind, name in names if not NAME_LIMITS[kind][0] <= len(name) <= NAME_LIMITS[kind][1]), None)
    if bad is None:
        return
    kind, name = bad
    low, high = NAME_LIMITS[kind]
    raise UserError(
        f"prefix {prefix!r} is too long: at most {max_prefix_length(prefix, derive)} characters "
        f"(the {kind} {name} would be {len(name)} characters; AWS allows {low}-{high})",
        hint="choose a shorter --prefix",
    )


def max_prefix_length(prefix: str, derive: Callable[[str], list[tuple[str, str]]]) -> int:
    """The longest prefix for which every derived name fits: how much each name grows with the prefix is
    measured (a name without the prefix in it does not grow, and limits nothing)."""
    longest = 10**6
    for (kind, name), (_, longer) in zip(derive(prefix), derive(prefix + "x")):
        growth = len(longer) - len(name)
        if growth:
            longest = min(longest, len(prefix) + (NAME_LIMITS[kind][1] - len(name)) // growth)
    return longest
