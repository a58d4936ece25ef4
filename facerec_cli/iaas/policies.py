"""Least privilege for the IaaS tiers: what an app-tier instance and the web tier may do, and the ARNs
those policies name."""

from __future__ import annotations

from typing import Any

from facerec_cli.config import Settings
from facerec_cli.iaas.names import APP_INSTANCE_PREFIX, GALLERY_KEY, TAG_KEY, WEB_LOCK_KEY, IaasNames
from facerec_cli.infra.naming import partition_for
from facerec_cli.infra.resources.iam import trust_policy


class Arns:
    def __init__(self, settings: Settings, account: str) -> None:
        self.region = settings.region
        self.partition = partition_for(settings.region)
        self.account = account
        self.names = IaasNames(settings.prefix)

    def queue(self, name: str) -> str:
        return f"arn:{self.partition}:sqs:{self.region}:{self.account}:{name}"

    def bucket(self, name: str) -> str:
        return f"arn:{self.partition}:s3:::{name}"

    def role(self, name: str) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role/{name}"

    def ec2(self, kind: str, account: str | None = None) -> str:
        return f"arn:{self.partition}:ec2:{self.region}:{self.account if account is None else account}:{kind}/*"

    def autoscaling_group(self, name: str) -> str:
        # The ARN holds the group's id (a UUID) before its name: any id, this name.
        return f"arn:{self.partition}:autoscaling:{self.region}:{self.account}:autoScalingGroup:*:autoScalingGroupName/{name}"


def app_policy(arns: Arns) -> dict[str, Any]:
    """Least privilege for an app-tier instance: its requests in, its responses and results out."""
    n = arns.names
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "TakeRequests", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage"], "Resource": arns.queue(n.request_queue)},
            {"Sid": "SendResponses", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:SendMessage"], "Resource": arns.queue(n.response_queue)},
            {"Sid": "ReadUploads", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{arns.bucket(n.in_bucket)}/*"},
            # Without ListBucket, S3 answers a GET of a missing key with 403, not 404: the worker could not
            # tell "the upload is gone" (an error result, 422) from a real permission problem (retried).
            {"Sid": "ListUploads", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": arns.bucket(n.in_bucket)},
            {"Sid": "WriteResults", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{arns.bucket(n.out_bucket)}/*"},
            {"Sid": "ReadGallery", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{arns.bucket(n.gallery_bucket)}/{GALLERY_KEY}"},
        ],
    }


def web_policy(arns: Arns, prefix: str) -> dict[str, Any]:
    """Least privilege for the web tier and its auto-scaler. Of EC2 it may only set the desired
    capacity of this deployment's Auto Scaling group, take one of the group's instances out (scale-in
    of a chosen instance) and set the ``Name`` tag of the group's instances: no RunInstances, no
    PassRole, so neither the AMI, the instance type nor the user data of the app tier can be changed
    from the web tier. Its lease object (one web tier per prefix) is its only access to the gallery
    bucket."""
    n = arns.names
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "SendRequests", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:SendMessage", "sqs:GetQueueAttributes"], "Resource": arns.queue(n.request_queue)},
            {"Sid": "TakeResponses", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"], "Resource": arns.queue(n.response_queue)},
            {"Sid": "StoreUploads", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{arns.bucket(n.in_bucket)}/*"},
            {"Sid": "HoldTheLease", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": f"{arns.bucket(n.gallery_bucket)}/{WEB_LOCK_KEY}"},
            # Describe calls have no resource-level permissions in IAM.
            {"Sid": "SeeInstances", "Effect": "Allow", "Action": ["ec2:DescribeInstances", "autoscaling:DescribeAutoScalingGroups"], "Resource": "*"},
            {
                "Sid": "SizeTheAppTier",
                "Effect": "Allow",
                "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                "Resource": arns.autoscaling_group(n.autoscaling_group),
            },
            {
                "Sid": "NameAppInstances",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": arns.ec2("instance"),
                "Condition": {
                    "StringEquals": {"aws:ResourceTag/aws:autoscaling:groupName": n.autoscaling_group, f"aws:ResourceTag/{TAG_KEY}": prefix},
                    "ForAllValues:StringEquals": {"aws:TagKeys": ["Name"]},
                    "StringLike": {"aws:RequestTag/Name": f"{APP_INSTANCE_PREFIX}*"},
                },
            },
        ],
    }


def ec2_trust_policy() -> dict[str, Any]:
    return trust_policy("ec2.amazonaws.com")
