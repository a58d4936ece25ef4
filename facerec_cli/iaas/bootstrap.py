"""``facerec iaas bootstrap`` and ``facerec iaas destroy``: plan, then apply, on the PaaS planner's
machinery (:class:`~facerec_cli.deploy.plan.Plan`, :class:`~facerec_cli.deploy.plan.Step`,
:func:`~facerec_cli.deploy.apply.apply_plan`): read what exists, compare it with what should exist,
and list the API calls that close the gap. A plan that is not applied is the dry run; a second
bootstrap plans nothing; a second destroy finds nothing.

What bootstrap makes, in order:

1. S3 ``<prefix>-in-bucket``, ``<prefix>-out-bucket`` and ``<prefix>-gallery-bucket``: private
   (public access block), SSE-S3, BucketOwnerEnforced (the PaaS bucket step, reused);
2. SQS ``<prefix>-req-dlq`` (14 days), ``<prefix>-req-queue`` (redrive to the DLQ after
   ``max_receive_count`` receives, visibility ``visibility_timeout_s``, 20 s long polls) and
   ``<prefix>-resp-queue``; SSE-SQS on all three;
3. the gallery object ``s3://<prefix>-gallery-bucket/gallery.pt`` (with ``--gallery``);
4. the app tier's IAM role with a least-privilege inline policy (receive/delete on the request queue,
   send on the response queue, get uploads, put results, get the gallery) and its instance profile;
5. security groups: the web tier's (``port`` from ``allow_cidr``), the app tier's (no inbound);
6. the launch template ``<prefix>-app-tier``: AMI, instance type, app profile, app security group,
   IMDSv2 only, and user data that runs ``facerec worker`` as a systemd service;
7. the web tier's role and instance profile (send requests, receive/delete responses, put uploads,
   queue depth, pass the app role, launch ``app-tier-instance-*`` only from that launch template, by
   its id, with its AMI, and terminate only those), after the template whose id its policy names;
8. the ``web-instance``, whose user data runs ``facerec web`` (the web tier and the auto-scaler).

The AMIs must have facerec installed (``pip install facerec``) with its model weights already built
(run ``facerec enroll`` or ``facerec identify`` once while making the image).
"""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions

from .. import aws
from ..aws import error_code
from ..config import Settings
from ..deploy.desired import ROLE_POLICY_NAME, BucketSpec, GallerySpec, partition_for
from ..deploy.destroy import empty_bucket
from ..deploy.errors import DeployError, explain
from ..deploy.plan import Calls, DeployPlanner, Plan, Step, _paginate, canonical_policy, get_or_none, owned_buckets, retrying
from ..errors import UserError
from .names import APP_INSTANCE_PREFIX, GALLERY_KEY, MAX_APP_INSTANCES, TAG_KEY, WEB_INSTANCE, IaasNames
from .pools import _find_instances, find_app_instances

SSE = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
OWNERSHIP = "BucketOwnerEnforced"
DLQ_RETENTION_S = 14 * 24 * 3600
QUEUE_RETENTION_S = 3600  # an unanswered request is useless to its HTTP client long before this
LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
PENDING_TEMPLATE_ID = "lt-pending"  # in a planned web policy until the launch template exists


@dataclass(frozen=True)
class IaasOptions:
    gallery: Path | None = None
    ami: str | None = None  # app tier; None keeps the launch template's
    instance_type: str = "t3.medium"  # torch + models need ~1.5 GB
    web_ami: str | None = None  # default: the app tier's AMI
    web_instance_type: str = "t3.small"
    key_name: str | None = None
    port: int = 8000
    allow_cidr: str = "0.0.0.0/0"
    max_instances: int = MAX_APP_INSTANCES
    per_instance: int = 1
    scale_in_after_s: int = 30
    visibility_timeout_s: int = 30
    max_receive_count: int = 5
    request_timeout_s: int = 60
    with_compute: bool = True  # IAM, security groups, launch template (run-local: False)
    with_web: bool = True  # the web-instance


@dataclass
class IaasClients:
    s3: Any
    sqs: Any
    iam: Any
    ec2: Any
    sts: Any
    _account_id: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "IaasClients":
        sess = aws.session(settings)
        return cls(*(aws.client(settings, s, sess=sess) for s in ("s3", "sqs", "iam", "ec2", "sts")))

    @classmethod
    def from_session(cls, sess: boto3.Session, endpoint_url: str | None) -> "IaasClients":
        return cls(*(sess.client(s, endpoint_url=endpoint_url) for s in ("s3", "sqs", "iam", "ec2", "sts")))

    @property
    def account_id(self) -> str:
        if self._account_id is None:
            self._account_id = self.sts.get_caller_identity()["Account"]
        return self._account_id


# ------------------------------------------------------------------------------------------ desired


class Arns:
    def __init__(self, settings: Settings, account: str) -> None:
        self.region = settings.region
        self.partition = partition_for(settings.region)
        self.account = account
        self.n = IaasNames(settings.prefix)

    def queue(self, name: str) -> str:
        return f"arn:{self.partition}:sqs:{self.region}:{self.account}:{name}"

    def bucket(self, name: str) -> str:
        return f"arn:{self.partition}:s3:::{name}"

    def role(self, name: str) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role/{name}"

    def ec2(self, kind: str, account: str | None = None) -> str:
        return f"arn:{self.partition}:ec2:{self.region}:{self.account if account is None else account}:{kind}/*"

    def launch_template(self, template_id: str) -> str:
        # The ARN names the template by id (lt-...), not by name.
        return f"arn:{self.partition}:ec2:{self.region}:{self.account}:launch-template/{template_id}"


def queue_attributes(names: IaasNames, options: IaasOptions, arns: Arns) -> dict[str, dict[str, str]]:
    common = {"SqsManagedSseEnabled": "true", "ReceiveMessageWaitTimeSeconds": "20"}
    redrive = {"deadLetterTargetArn": arns.queue(names.dead_letter_queue), "maxReceiveCount": str(options.max_receive_count)}
    return {
        names.dead_letter_queue: {"SqsManagedSseEnabled": "true", "MessageRetentionPeriod": str(DLQ_RETENTION_S)},
        names.request_queue: {
            **common,
            "VisibilityTimeout": str(options.visibility_timeout_s),
            "MessageRetentionPeriod": str(QUEUE_RETENTION_S),
            "RedrivePolicy": json.dumps(redrive),
        },
        names.response_queue: {**common, "VisibilityTimeout": "30", "MessageRetentionPeriod": str(QUEUE_RETENTION_S)},
    }


def ec2_trust_policy() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }


def app_policy(arns: Arns) -> dict[str, Any]:
    """Least privilege for an app-tier instance: its requests in, its responses and results out."""
    n = arns.n
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


def web_policy(arns: Arns, prefix: str, launch_template_id: str) -> dict[str, Any]:
    """Least privilege for the web tier and its auto-scaler. RunInstances only through this
    deployment's launch template, with the template's own AMI, security group and key pair (not
    overridden in the call), for instances named ``app-tier-instance-*`` and tagged with the prefix;
    TerminateInstances only on those (never the ``web-instance``)."""
    n = arns.n
    template = arns.launch_template(launch_template_id)
    from_template = {"ec2:LaunchTemplate": template}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "SendRequests", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:SendMessage", "sqs:GetQueueAttributes"], "Resource": arns.queue(n.request_queue)},
            {"Sid": "TakeResponses", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"], "Resource": arns.queue(n.response_queue)},
            {"Sid": "StoreUploads", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{arns.bucket(n.in_bucket)}/*"},
            {"Sid": "SeeInstances", "Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"},
            {"Sid": "LaunchFromAppTemplateOnly", "Effect": "Allow", "Action": "ec2:RunInstances", "Resource": template},
            {
                "Sid": "LaunchNamedAppInstances",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": arns.ec2("instance"),
                "Condition": {
                    "StringEquals": {f"aws:RequestTag/{TAG_KEY}": prefix, **from_template},
                    "StringLike": {"aws:RequestTag/Name": f"{APP_INSTANCE_PREFIX}*"},
                },
            },
            {
                "Sid": "LaunchTaggedVolumes",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": arns.ec2("volume"),
                "Condition": {"StringEquals": {f"aws:RequestTag/{TAG_KEY}": prefix, **from_template}},
            },
            {
                # IsLaunchTemplateResource: the call cannot swap in another AMI, security group or key.
                "Sid": "TemplateResourcesOnly",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": [arns.ec2("image", account=""), arns.ec2("security-group"), arns.ec2("key-pair")],
                "Condition": {"StringEquals": {**from_template, "ec2:IsLaunchTemplateResource": "true"}},
            },
            {
                # Not in the template (EC2 picks the default subnet and makes the interface).
                "Sid": "NetworkForTemplateLaunches",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": [arns.ec2("subnet"), arns.ec2("network-interface")],
                "Condition": {"StringEquals": from_template},
            },
            {
                "Sid": "TagAtLaunch",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": [arns.ec2("instance"), arns.ec2("volume")],
                "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
            },
            {
                "Sid": "TerminateOwnAppInstances",
                "Effect": "Allow",
                "Action": "ec2:TerminateInstances",
                "Resource": arns.ec2("instance"),
                "Condition": {
                    "StringEquals": {f"aws:ResourceTag/{TAG_KEY}": prefix},
                    "StringLike": {"aws:ResourceTag/Name": f"{APP_INSTANCE_PREFIX}*"},
                },
            },
            {
                "Sid": "PassAppRole",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": arns.role(n.app_role),
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            },
        ],
    }


def _service_user_data(unit: str, description: str, command: list[str]) -> str:
    exec_start = " ".join(shlex.quote(a) for a in command)
    return f"""#!/bin/bash
# Written by `facerec iaas bootstrap`: runs `{command[1]}` as the systemd service {unit}.
# The AMI must have facerec installed (pip install facerec) with its model weights built.
set -euo pipefail
cat > /etc/systemd/system/{unit}.service <<'UNIT'
[Unit]
Description={description}
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/env {exec_start}
Restart=always
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=120

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now {unit}.service
"""


def app_user_data(settings: Settings, options: IaasOptions) -> str:
    names = IaasNames(settings.prefix)
    command = ["facerec", "worker", "--prefix", settings.prefix, "--region", settings.region, "--gallery", names.gallery_uri]
    return _service_user_data("facerec-worker", "facerec app tier: recognise requests from the request queue", command)


def web_user_data(settings: Settings, options: IaasOptions) -> str:
    command = [
        "facerec", "web", "--prefix", settings.prefix, "--region", settings.region, "--host", "0.0.0.0",
        "--port", str(options.port), "--timeout", str(options.request_timeout_s),
        "--max-instances", str(options.max_instances), "--per-instance", str(options.per_instance),
        "--scale-in-after", str(options.scale_in_after_s),
    ]
    return _service_user_data("facerec-web", "facerec web tier and auto-scaler", command)


# ------------------------------------------------------------------------------------------ planner


def _profile_not_ready(exc: botocore.exceptions.ClientError) -> bool:
    """EC2 refusing an instance profile IAM has not propagated yet."""
    msg = (exc.response.get("Error", {}).get("Message") or "").lower()
    return error_code(exc) == "InvalidParameterValue" and ("instance profile" in msg or "iaminstanceprofile" in msg)


def _lt_absent(exc: botocore.exceptions.ClientError) -> bool:
    return str(error_code(exc) or "").startswith(("InvalidLaunchTemplateName", "InvalidLaunchTemplateId"))


def find_launch_template(ec2: Any, name: str) -> dict[str, Any] | None:
    try:
        found = ec2.describe_launch_templates(LaunchTemplateNames=[name]).get("LaunchTemplates") or []
    except botocore.exceptions.ClientError as exc:
        if _lt_absent(exc):
            return None
        raise
    return found[0] if found else None


def find_security_group(ec2: Any, name: str, vpc_id: str | None = None) -> dict[str, Any] | None:
    filters = [{"Name": "group-name", "Values": [name]}]
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    groups = ec2.describe_security_groups(Filters=filters).get("SecurityGroups") or []
    return groups[0] if groups else None


def _ingress(permissions: list[dict[str, Any]]) -> set[tuple[str, int | None, int | None, str]]:
    out = set()
    for p in permissions or []:
        for r in p.get("IpRanges") or []:
            out.add((str(p.get("IpProtocol")), p.get("FromPort"), p.get("ToPort"), r.get("CidrIp")))
    return out


def _permission(rule: tuple[str, int | None, int | None, str]) -> dict[str, Any]:
    proto, from_port, to_port, cidr = rule
    perm: dict[str, Any] = {"IpProtocol": proto, "IpRanges": [{"CidrIp": cidr}]}
    if from_port is not None:
        perm["FromPort"], perm["ToPort"] = from_port, to_port
    return perm


def _same_queue_attribute(key: str, current: str | None, wanted: str) -> bool:
    if key == "RedrivePolicy":
        try:
            cur = json.loads(current or "{}")
        except ValueError:
            return False
        want = json.loads(wanted)
        return cur.get("deadLetterTargetArn") == want["deadLetterTargetArn"] and str(cur.get("maxReceiveCount")) == want["maxReceiveCount"]
    return str(current).lower() == wanted.lower() if key == "SqsManagedSseEnabled" else current == wanted


class IaasPlanner:
    def __init__(self, settings: Settings, options: IaasOptions, clients: IaasClients) -> None:
        self.s = settings
        self.o = options
        self.c = clients
        self.n = IaasNames(settings.prefix)
        self.arns = Arns(settings, clients.account_id)
        self.tags = {TAG_KEY: settings.prefix}
        self.warnings: list[str] = []
        self.blockers: list[str] = []
        self._vpc: str | None = None
        self._existing_template_id: str | None = None

    @property
    def tag_list(self) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in self.tags.items()]

    def plan(self) -> Plan:
        owned = owned_buckets(self.c)
        buckets = DeployPlanner(None, self.c)  # type: ignore[arg-type] - its bucket and gallery steps read only s3
        buckets.owned = owned
        steps = [buckets.bucket(BucketSpec(b, self.s.region, SSE, PUBLIC_ACCESS_BLOCK, OWNERSHIP, None)) for b in self.n.buckets]
        for name, attributes in queue_attributes(self.n, self.o, self.arns).items():
            steps.append(self.queue(name, attributes))
        if self.o.gallery is not None:
            path = Path(self.o.gallery)
            if not path.is_file():
                raise UserError(f"gallery {path} not found", hint="make one with `facerec enroll PHOTOS_DIR -o GALLERY`")
            steps.append(buckets.gallery(GallerySpec.of_file(self.n.gallery_bucket, GALLERY_KEY, path)))
        elif self.n.gallery_bucket not in owned or get_or_none(self.c.s3.head_object, Bucket=self.n.gallery_bucket, Key=GALLERY_KEY) is None:
            self.warnings.append(f"no gallery at {self.n.gallery_uri}: workers cannot start until one is uploaded (pass --gallery)")
        self.blockers += buckets.blockers
        if self.o.with_compute:
            self._vpc = self.default_vpc()
            steps.append(self.role(self.n.app_role, app_policy(self.arns), "app tier"))
            steps.append(self.profile(self.n.app_profile, self.n.app_role))
            steps.append(self.security_group(self.n.app_security_group, "facerec app tier: no inbound traffic", set()))
            web_rule = ("tcp", self.o.port, self.o.port, self.o.allow_cidr)
            steps.append(self.security_group(self.n.web_security_group, f"facerec web tier: HTTP on port {self.o.port}", {web_rule}))
            steps.append(self.launch_template())
            # The web policy names the template by id: after the template step, and read again when
            # applied (a template made by this plan has no id yet; a new id is drift to update).
            planned_id = self._existing_template_id or PENDING_TEMPLATE_ID
            steps.append(self.role(
                self.n.web_role, web_policy(self.arns, self.s.prefix, planned_id), "web tier",
                make_policy=lambda: web_policy(self.arns, self.s.prefix, self._template_id()),
            ))
            steps.append(self.profile(self.n.web_profile, self.n.web_role))
            if self.o.with_web:
                steps.append(self.web_instance())
        return Plan("deploy", steps, self.warnings, self.blockers)

    def default_vpc(self) -> str | None:
        vpcs = self.c.ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}]).get("Vpcs") or []
        if not vpcs:
            self.blockers.append(f"no default VPC in {self.s.region}: create one (`aws ec2 create-default-vpc`) or use another --region")
            return None
        return vpcs[0]["VpcId"]

    # ---- SQS

    def queue(self, name: str, attributes: dict[str, str]) -> Step:
        sqs = self.c.sqs
        resource = f"sqs queue {name}"
        parts = []
        if "RedrivePolicy" in attributes:
            parts.append(f"dead letters to {self.n.dead_letter_queue} after {self.o.max_receive_count} receives")
        if "VisibilityTimeout" in attributes:
            parts.append(f"visibility {attributes['VisibilityTimeout']} s")
        parts.append(f"retention {int(attributes['MessageRetentionPeriod']) // 3600} h, SSE-SQS")
        detail = ", ".join(parts)
        url = (get_or_none(sqs.get_queue_url, QueueName=name) or {}).get("QueueUrl")
        if url is None:
            return Step("create", resource, detail, Calls(("create queue", lambda: sqs.create_queue(QueueName=name, Attributes=attributes, tags=self.tags))))
        current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]).get("Attributes", {})
        drift = {k: v for k, v in attributes.items() if not _same_queue_attribute(k, current.get(k), v)}
        if not drift:
            return Step("noop", resource, detail)
        return Step("update", resource, ", ".join(sorted(drift)), Calls(("set attributes", lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes=drift))))

    # ---- IAM

    def role(self, name: str, policy: dict[str, Any], tier: str, *, make_policy: Callable[[], dict[str, Any]] | None = None) -> Step:
        """``policy`` is compared with the role's; ``make_policy`` (default: ``policy``) makes the one
        put when the step runs, for a policy that names something earlier steps create."""
        iam = self.c.iam
        resource = f"iam role {name}"
        detail = f"assumed by ec2.amazonaws.com; inline policy {ROLE_POLICY_NAME} ({len(policy['Statement'])} statements)"
        make = make_policy or (lambda: policy)
        put_policy = ("put inline policy", lambda: iam.put_role_policy(RoleName=name, PolicyName=ROLE_POLICY_NAME, PolicyDocument=json.dumps(make())))
        current = get_or_none(iam.get_role, RoleName=name)
        if current is None:
            create = (
                "create role",
                lambda: iam.create_role(
                    RoleName=name,
                    AssumeRolePolicyDocument=json.dumps(ec2_trust_policy()),
                    Description=f"facerec: the {tier} instances of {self.s.prefix}",
                    Tags=self.tag_list,
                ),
            )
            return Step("create", resource, detail, Calls(create, put_policy))
        drift: list[str] = []
        parts: list[tuple[str, Callable[[], Any]]] = []
        if canonical_policy(current["Role"].get("AssumeRolePolicyDocument")) != canonical_policy(ec2_trust_policy()):
            drift.append("trust policy")
            parts.append(("update trust policy", lambda: iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(ec2_trust_policy()))))
        doc = get_or_none(iam.get_role_policy, RoleName=name, PolicyName=ROLE_POLICY_NAME)
        if doc is None or canonical_policy(doc.get("PolicyDocument")) != canonical_policy(policy):
            drift.append("inline policy")
            parts.append(put_policy)
        for other in _paginate(iam, "list_role_policies", "PolicyNames", RoleName=name):
            if other != ROLE_POLICY_NAME:
                drift.append(f"remove inline policy {other}")
                parts.append((f"delete inline policy {other}", lambda other=other: iam.delete_role_policy(RoleName=name, PolicyName=other)))
        for pol in _paginate(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=name):
            arn = pol["PolicyArn"]
            drift.append(f"detach {pol.get('PolicyName', arn)}")
            parts.append((f"detach {arn}", lambda arn=arn: iam.detach_role_policy(RoleName=name, PolicyArn=arn)))
        if not drift:
            return Step("noop", resource, detail)
        return Step("update", resource, ", ".join(drift), Calls(*parts))

    def profile(self, name: str, role: str) -> Step:
        iam = self.c.iam
        resource = f"iam instance-profile {name}"
        detail = f"role {role}"
        add = ("add role", lambda: iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role))
        current = get_or_none(iam.get_instance_profile, InstanceProfileName=name)
        if current is None:
            create = ("create instance profile", lambda: iam.create_instance_profile(InstanceProfileName=name, Tags=self.tag_list))
            return Step("create", resource, detail, Calls(create, add))
        roles = [r["RoleName"] for r in current["InstanceProfile"].get("Roles") or []]
        if roles == [role]:
            return Step("noop", resource, detail)
        parts = [(f"remove role {r}", lambda r=r: iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=r)) for r in roles if r != role]
        if role not in roles:
            parts.append(add)
        return Step("update", resource, f"roles {roles} -> [{role}]", Calls(*parts))

    # ---- EC2

    def _template_id(self) -> str:
        template = find_launch_template(self.c.ec2, self.n.launch_template)
        if template is None:
            raise DeployError(f"launch template {self.n.launch_template} does not exist")
        return template["LaunchTemplateId"]

    def _group_id(self, name: str) -> str:
        group = find_security_group(self.c.ec2, name, self._vpc)
        if group is None:
            raise DeployError(f"security group {name} does not exist")
        return group["GroupId"]

    def security_group(self, name: str, description: str, ingress: set[tuple[str, int | None, int | None, str]]) -> Step:
        ec2 = self.c.ec2
        resource = f"ec2 security-group {name}"
        detail = ", ".join(f"inbound {p} {f} from {c}" for p, f, _, c in sorted(ingress, key=str)) or "no inbound traffic"
        current = find_security_group(ec2, name, self._vpc)
        if current is None:
            def create() -> None:
                kwargs: dict[str, Any] = {"GroupName": name, "Description": description}
                if self._vpc:
                    kwargs["VpcId"] = self._vpc
                kwargs["TagSpecifications"] = [{"ResourceType": "security-group", "Tags": self.tag_list}]
                group_id = ec2.create_security_group(**kwargs)["GroupId"]
                if ingress:
                    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[_permission(r) for r in sorted(ingress, key=str)])

            return Step("create", resource, detail, Calls(("create security group", create)))
        have = _ingress(current.get("IpPermissions") or [])
        missing, extra = ingress - have, have - ingress
        if not missing and not extra:
            return Step("noop", resource, detail)
        group_id = current["GroupId"]
        parts: list[tuple[str, Callable[[], Any]]] = []
        if extra:
            parts.append(("revoke extra inbound rules", lambda: ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[_permission(r) for r in sorted(extra, key=str)])))
        if missing:
            parts.append(("authorize inbound rules", lambda: ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[_permission(r) for r in sorted(missing, key=str)])))
        drift = [f"+ {r[0]} {r[1]} from {r[3]}" for r in sorted(missing, key=str)] + [f"- {r[0]} {r[1]} from {r[3]}" for r in sorted(extra, key=str)]
        return Step("update", resource, "inbound " + ", ".join(drift), Calls(*parts))

    def _template_data(self, ami: str, group_id: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ImageId": ami,
            "InstanceType": self.o.instance_type,
            "IamInstanceProfile": {"Name": self.n.app_profile},
            "UserData": base64.b64encode(app_user_data(self.s, self.o).encode()).decode(),
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        }
        if group_id:
            data["SecurityGroupIds"] = [group_id]
        if self.o.key_name:
            data["KeyName"] = self.o.key_name
        return data

    def launch_template(self) -> Step:
        ec2 = self.c.ec2
        name = self.n.launch_template
        resource = f"ec2 launch-template {name}"
        current = find_launch_template(ec2, name)
        self._existing_template_id = current["LaunchTemplateId"] if current else None
        data: dict[str, Any] = {}
        if current is not None:
            versions = ec2.describe_launch_template_versions(LaunchTemplateName=name, Versions=["$Default"]).get("LaunchTemplateVersions") or [{}]
            data = versions[0].get("LaunchTemplateData") or {}
        ami = self.o.ami or data.get("ImageId")
        if not ami:
            self.blockers.append("--ami is required: the AMI the app-tier instances boot (with facerec installed)")
            ami = "<--ami>"
        detail = f"{ami}, {self.o.instance_type}, profile {self.n.app_profile}, IMDSv2, user data: facerec worker"
        if current is None:
            def create() -> None:
                ec2.create_launch_template(
                    LaunchTemplateName=name,
                    LaunchTemplateData=self._template_data(ami, self._group_id(self.n.app_security_group)),
                    VersionDescription="facerec iaas bootstrap",
                    TagSpecifications=[{"ResourceType": "launch-template", "Tags": self.tag_list}],
                )

            return Step("create", resource, detail, Calls(("create launch template", create)))
        group = find_security_group(ec2, self.n.app_security_group, self._vpc)
        wanted = self._template_data(ami, group["GroupId"] if group else None)
        drift = []
        for key in ("ImageId", "InstanceType", "KeyName"):
            if data.get(key) != wanted.get(key):
                drift.append(f"{key} {data.get(key)} -> {wanted.get(key)}")
        if (data.get("IamInstanceProfile") or {}).get("Name") != self.n.app_profile:
            drift.append("instance profile")
        if group is None or sorted(data.get("SecurityGroupIds") or []) != [group["GroupId"]]:
            drift.append("security group")
        if (data.get("MetadataOptions") or {}).get("HttpTokens") != "required":
            drift.append("IMDSv2")
        try:
            user_data = base64.b64decode(data.get("UserData") or "").decode()
        except ValueError:
            user_data = ""
        if user_data != app_user_data(self.s, self.o):
            drift.append("user data")
        if not drift:
            return Step("noop", resource, detail)

        def new_version() -> None:
            version = ec2.create_launch_template_version(
                LaunchTemplateName=name,
                LaunchTemplateData=self._template_data(ami, self._group_id(self.n.app_security_group)),
                VersionDescription="facerec iaas bootstrap",
            )["LaunchTemplateVersion"]["VersionNumber"]
            ec2.modify_launch_template(LaunchTemplateName=name, DefaultVersion=str(version))

        return Step("update", resource, "new default version: " + ", ".join(drift), Calls(("create version and make it the default", new_version)))

    def web_instance(self) -> Step:
        ec2 = self.c.ec2
        resource = f"ec2 instance {WEB_INSTANCE}"
        ami = self.o.web_ami or self.o.ami
        found = _find_instances(ec2, self.s.prefix, WEB_INSTANCE, LIVE_STATES)
        detail = f"{ami or '<--web-ami>'}, {self.o.web_instance_type}, profile {self.n.web_profile}, user data: facerec web on port {self.o.port}"
        if not found:
            if not ami:
                self.blockers.append("--ami (or --web-ami) is required to launch the web-instance")

            def launch() -> None:
                kwargs: dict[str, Any] = {
                    "ImageId": ami,
                    "InstanceType": self.o.web_instance_type,
                    "MinCount": 1,
                    "MaxCount": 1,
                    "IamInstanceProfile": {"Name": self.n.web_profile},
                    "SecurityGroupIds": [self._group_id(self.n.web_security_group)],
                    "UserData": web_user_data(self.s, self.o),
                    "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
                    "TagSpecifications": [
                        {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": WEB_INSTANCE}, *self.tag_list]},
                        {"ResourceType": "volume", "Tags": self.tag_list},
                    ],
                }
                if self.o.key_name:
                    kwargs["KeyName"] = self.o.key_name
                retrying(lambda: ec2.run_instances(**kwargs), when=_profile_not_ready)()

            return Step("create", resource, detail, Calls(("run instance", launch)))
        if len(found) > 1:
            self.warnings.append(f"{len(found)} instances are named {WEB_INSTANCE} for prefix {self.s.prefix}: {', '.join(i['InstanceId'] for i in found)}")
        web = found[0]
        if (self.o.web_ami and web.get("ImageId") != self.o.web_ami) or web.get("InstanceType") != self.o.web_instance_type:
            self.warnings.append(
                f"{WEB_INSTANCE} ({web['InstanceId']}) runs {web.get('ImageId')} on {web.get('InstanceType')}, not as asked: "
                "terminate it and run bootstrap again to replace it"
            )
        try:
            attr = ec2.describe_instance_attribute(InstanceId=web["InstanceId"], Attribute="userData").get("UserData") or {}
            current_user_data = base64.b64decode(attr.get("Value") or "").decode()
        except (botocore.exceptions.ClientError, ValueError):
            current_user_data = None
        if current_user_data is not None and current_user_data != web_user_data(self.s, self.o):
            self.warnings.append(
                f"{WEB_INSTANCE} ({web['InstanceId']}) was launched with other web-tier settings (port, timeout or scaling): "
                "terminate it and run bootstrap again to apply them"
            )
        if web["State"] in ("stopped", "stopping"):
            return Step("update", resource, f"start {web['InstanceId']} (it is {web['State']})", Calls(("start instance", lambda: ec2.start_instances(InstanceIds=[web["InstanceId"]]))))
        return Step("noop", resource, f"{web['InstanceId']} {web['State']}")


# ------------------------------------------------------------------------------------------ destroy


class IaasDestroyPlanner:
    def __init__(self, settings: Settings, clients: IaasClients) -> None:
        self.s = settings
        self.c = clients
        self.n = IaasNames(settings.prefix)

    def _terminate(self, instances: list[dict[str, Any]], what: str) -> Step:
        ec2 = self.c.ec2
        ids = [i["InstanceId"] for i in instances]
        names = ", ".join(sorted({i["Name"] for i in instances}))

        def wait() -> None:
            ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 120})

        return Step(
            "delete", f"ec2 instances {what}", f"{names}: {', '.join(ids)}",
            Calls(("terminate", lambda: ec2.terminate_instances(InstanceIds=ids)), ("wait until terminated", wait)),
        )

    def plan(self) -> Plan:
        ec2, iam, sqs = self.c.ec2, self.c.iam, self.c.sqs
        steps: list[Step] = []
        app = find_app_instances(ec2, self.s.prefix, LIVE_STATES)
        if app:
            steps.append(self._terminate(app, "app tier"))
        web = _find_instances(ec2, self.s.prefix, WEB_INSTANCE, LIVE_STATES)
        if web:
            steps.append(self._terminate(web, "web tier"))
        template = find_launch_template(ec2, self.n.launch_template)
        if template is not None:
            steps.append(Step("delete", f"ec2 launch-template {self.n.launch_template}", template["LaunchTemplateId"],
                              Calls(("delete launch template", lambda: ec2.delete_launch_template(LaunchTemplateName=self.n.launch_template)))))
        for name in (self.n.web_security_group, self.n.app_security_group):
            group = find_security_group(ec2, name)
            if group is not None:
                gid = group["GroupId"]
                # Instances' network interfaces linger for a while after termination.
                delete = retrying(lambda gid=gid: ec2.delete_security_group(GroupId=gid), when=lambda e: error_code(e) == "DependencyViolation", attempts=12)
                steps.append(Step("delete", f"ec2 security-group {name}", gid, Calls(("delete security group", delete))))
        for profile in (self.n.web_profile, self.n.app_profile):
            current = get_or_none(iam.get_instance_profile, InstanceProfileName=profile)
            if current is not None:
                roles = [r["RoleName"] for r in current["InstanceProfile"].get("Roles") or []]
                parts = [(f"remove role {r}", lambda r=r, p=profile: iam.remove_role_from_instance_profile(InstanceProfileName=p, RoleName=r)) for r in roles]
                parts.append(("delete instance profile", lambda p=profile: iam.delete_instance_profile(InstanceProfileName=p)))
                steps.append(Step("delete", f"iam instance-profile {profile}", f"roles {', '.join(roles) or 'none'}", Calls(*parts)))
        for role in (self.n.web_role, self.n.app_role):
            if get_or_none(iam.get_role, RoleName=role) is None:
                continue
            inline = _paginate(iam, "list_role_policies", "PolicyNames", RoleName=role)
            attached = [p["PolicyArn"] for p in _paginate(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=role)]
            others = [p["InstanceProfileName"] for p in _paginate(iam, "list_instance_profiles_for_role", "InstanceProfiles", RoleName=role)]
            parts = [(f"delete inline policy {p}", lambda p=p, r=role: iam.delete_role_policy(RoleName=r, PolicyName=p)) for p in inline]
            parts += [(f"detach {a}", lambda a=a, r=role: iam.detach_role_policy(RoleName=r, PolicyArn=a)) for a in attached]
            parts += [(f"remove from {p}", lambda p=p, r=role: iam.remove_role_from_instance_profile(InstanceProfileName=p, RoleName=r))
                      for p in others if p not in (self.n.web_profile, self.n.app_profile)]
            parts.append(("delete role", lambda r=role: iam.delete_role(RoleName=r)))
            steps.append(Step("delete", f"iam role {role}", f"with {', '.join(inline) or 'no'} inline policies", Calls(*parts)))
        for name in (self.n.request_queue, self.n.response_queue, self.n.dead_letter_queue):
            url = (get_or_none(sqs.get_queue_url, QueueName=name) or {}).get("QueueUrl")
            if url:
                steps.append(Step("delete", f"sqs queue {name}", "with the messages in it", Calls(("delete queue", lambda url=url: sqs.delete_queue(QueueUrl=url)))))
        owned = owned_buckets(self.c)
        for bucket in self.n.buckets:
            if bucket in owned:
                steps.append(Step("delete", f"s3 bucket {bucket}", "emptied first", Calls(
                    ("empty bucket", lambda b=bucket: empty_bucket(self.c, b)),  # type: ignore[arg-type]
                    ("delete bucket", lambda b=bucket: self.c.s3.delete_bucket(Bucket=b)),
                )))
        return Plan("destroy", steps)


# ------------------------------------------------------------------------------------------ entry points


def _reading(fn: Callable[[], Plan]) -> Plan:
    try:
        return fn()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        message, hint = explain(exc)
        raise DeployError(f"could not read the current state: {message}", hint=hint) from exc


def plan_bootstrap(settings: Settings, options: IaasOptions, clients: IaasClients) -> Plan:
    """Everything ``facerec iaas bootstrap`` would create or change, in order; changes nothing."""
    return _reading(lambda: IaasPlanner(settings, options, clients).plan())


def plan_teardown(settings: Settings, clients: IaasClients) -> Plan:
    """Everything ``facerec iaas destroy`` would delete; empty when nothing is left."""
    return _reading(lambda: IaasDestroyPlanner(settings, clients).plan())
