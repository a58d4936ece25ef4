"""``facerec iaas bootstrap`` and ``facerec iaas destroy``: plan, then apply, on the PaaS planner's
machinery (:class:`~facerec_cli.infra.plan.Plan`, :class:`~facerec_cli.infra.plan.Step`,
:func:`~facerec_cli.infra.executor.apply_plan`): read what exists, compare it with what should exist,
and list the API calls that close the gap. A plan that is not applied is the dry run; a second
bootstrap plans nothing; a second destroy finds nothing.

What bootstrap makes, in order:

1. S3 ``<prefix>-in-bucket``, ``<prefix>-out-bucket`` and ``<prefix>-gallery-bucket``: private
   (public access block), SSE-S3, BucketOwnerEnforced (the PaaS bucket step, reused);
2. SQS ``<prefix>-req-dlq`` (14 days), ``<prefix>-req-queue`` (redrive to the DLQ after
   ``max_receive_count`` receives, visibility ``visibility_timeout_s``, 20 s long polls) and
   ``<prefix>-resp-queue``, both keeping a message only as long as the HTTP request that waits for it
   (``request_timeout_s``, at least SQS's minimum of 60 s); SSE-SQS on all three;
3. the gallery object ``s3://<prefix>-gallery-bucket/gallery.pt`` (with ``--gallery``);
4. the app tier's IAM role with a least-privilege inline policy (receive/delete on the request queue,
   send on the response queue, get (and list, so that a missing upload is a 404) uploads, put
   results, get the gallery) and its instance profile;
5. security groups: the web tier's (``port`` from ``allow_cidr``, which must be given), the app
   tier's (no inbound);
6. the launch template ``<prefix>-app-tier``: AMI, instance type, app profile, app security group,
   IMDSv2 only, and user data that runs ``facerec worker`` as a hardened systemd service (its own
   system user, ``NoNewPrivileges``, ``ProtectSystem=strict``, ``PrivateTmp``...);
7. the Auto Scaling group ``<prefix>-app-tier`` on that template (0 to ``max_instances``, the default
   VPC's subnets): the app tier's instances;
8. the web tier's role and instance profile: send requests, receive/delete responses, put uploads,
   its lease object, queue depth, and of EC2 only the group's desired capacity (set it, take out one
   of its instances) and the ``Name`` tag of its instances. It cannot launch an instance, so a
   compromised web tier cannot run code of its choosing under the app role;
9. the ``web-instance``, whose user data runs ``facerec web`` (the web tier and the auto-scaler), with
   the SHA-256 of ``--token`` when one is given (the token itself is not stored on AWS).

The AMIs must have facerec installed (``pip install facerec``) with its model weights already built
(run ``facerec enroll`` or ``facerec identify`` once while making the image).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions

from facerec_cli.infra import aws
from facerec_cli.infra.aws import error_code
from facerec_cli.config import Settings
from facerec_cli.pipeline.stack import ROLE_POLICY_NAME, BucketSpec, GallerySpec, partition_for
from facerec_cli.infra.destroy import empty_bucket
from facerec_cli.infra.errors import DeployError, explain
from facerec_cli.infra.plan import Calls, DeployPlanner, Plan, Step, _paginate, canonical_policy, get_or_none, owned_buckets, retrying
from facerec_cli.errors import UserError
from facerec_cli.iaas.names import APP_INSTANCE_PREFIX, APP_INSTANCE_UNNAMED, GALLERY_KEY, MAX_APP_INSTANCES, TAG_KEY, WEB_INSTANCE, WEB_LOCK_KEY, IaasNames
from facerec_cli.iaas.pools import _find_instances, find_app_instances

SSE = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
OWNERSHIP = "BucketOwnerEnforced"
DLQ_RETENTION_S = 14 * 24 * 3600
MIN_RETENTION_S = 60  # SQS's minimum MessageRetentionPeriod
LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
SERVICE_USER = "facerec"  # the system user the services run as
STATE_DIR = "/var/lib/facerec"  # the services' only writable directory (and HOME); weights cache below it
CIDR_EXAMPLE = "--allow-cidr 203.0.113.7/32"


@dataclass(frozen=True)
class IaasOptions:
    gallery: Path | None = None
    ami: str | None = None  # app tier; None keeps the launch template's
    instance_type: str = "t3.medium"  # torch + models need ~1.5 GB
    web_ami: str | None = None  # default: the app tier's AMI
    web_instance_type: str = "t3.small"
    key_name: str | None = None
    port: int = 8000
    # Who may reach the web tier; no default (bootstrap refuses without it): 0.0.0.0/0 must be asked for.
    allow_cidr: str | None = None
    token_sha256: str | None = None  # the web tier asks for the token with this SHA-256 (see web.token_sha256)
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
    autoscaling: Any = None
    _account_id: str | None = None

    SERVICES = ("s3", "sqs", "iam", "ec2", "sts", "autoscaling")

    @classmethod
    def from_settings(cls, settings: Settings) -> "IaasClients":
        sess = aws.session(settings)
        return cls(*(aws.client(settings, s, sess=sess) for s in cls.SERVICES))

    @classmethod
    def from_session(cls, sess: boto3.Session, endpoint_url: str | None) -> "IaasClients":
        return cls(*(sess.client(s, endpoint_url=endpoint_url) for s in cls.SERVICES))

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

    def autoscaling_group(self, name: str) -> str:
        # The ARN holds the group's id (a UUID) before its name: any id, this name.
        return f"arn:{self.partition}:autoscaling:{self.region}:{self.account}:autoScalingGroup:*:autoScalingGroupName/{name}"


def retention_s(options: IaasOptions) -> int:
    """How long the request and response queues keep a message: as long as the HTTP request that
    waits for it (a request is useless once its client had its 504), at least SQS's minimum."""
    return max(MIN_RETENTION_S, int(-(-options.request_timeout_s // 1)))


def queue_attributes(names: IaasNames, options: IaasOptions, arns: Arns) -> dict[str, dict[str, str]]:
    common = {"SqsManagedSseEnabled": "true", "ReceiveMessageWaitTimeSeconds": "20"}
    redrive = {"deadLetterTargetArn": arns.queue(names.dead_letter_queue), "maxReceiveCount": str(options.max_receive_count)}
    return {
        names.dead_letter_queue: {"SqsManagedSseEnabled": "true", "MessageRetentionPeriod": str(DLQ_RETENTION_S)},
        names.request_queue: {
            **common,
            "VisibilityTimeout": str(options.visibility_timeout_s),
            "MessageRetentionPeriod": str(retention_s(options)),
            "RedrivePolicy": json.dumps(redrive),
        },
        names.response_queue: {**common, "VisibilityTimeout": "30", "MessageRetentionPeriod": str(retention_s(options))},
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


def web_policy(arns: Arns, prefix: str) -> dict[str, Any]:
    """Least privilege for the web tier and its auto-scaler. Of EC2 it may only set the desired
    capacity of this deployment's Auto Scaling group, take one of the group's instances out (scale-in
    of a chosen instance) and set the ``Name`` tag of the group's instances: no RunInstances, no
    PassRole, so neither the AMI, the instance type nor the user data of the app tier can be changed
    from the web tier. Its lease object (one web tier per prefix) is its only access to the gallery
    bucket."""
    n = arns.n
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


def _service_user_data(unit: str, description: str, command: list[str], *, privileged_port: bool = False) -> str:
    """A boot script that installs and starts ``command`` as the systemd service ``unit``, run as the
    system user ``facerec`` (made here) in a sandbox: no privilege gain (``NoNewPrivileges``), the
    whole file system read-only (``ProtectSystem=strict``) but its state directory, a private /tmp,
    no home directories, no devices, no capabilities (but binding a port under 1024 when asked)."""
    exec_start = " ".join(shlex.quote(a) for a in command)
    capabilities = "CAP_NET_BIND_SERVICE" if privileged_port else ""
    return f"""#!/bin/bash
# Written by `facerec iaas bootstrap`: runs `{command[1]}` as the systemd service {unit}, as the
# system user {SERVICE_USER}, sandboxed. The AMI must have facerec installed (pip install facerec) and
# its models built where the service reads them:
#   sudo FACEREC_WEIGHTS_DIR={STATE_DIR}/weights facerec models build
set -euo pipefail
id -u {SERVICE_USER} >/dev/null 2>&1 || useradd --system --home-dir {STATE_DIR} --no-create-home --shell /usr/sbin/nologin {SERVICE_USER}
install -d -m 0750 {STATE_DIR}
chown -R {SERVICE_USER}:{SERVICE_USER} {STATE_DIR}
cat > /etc/systemd/system/{unit}.service <<'UNIT'
[Unit]
Description={description}
After=network-online.target
Wants=network-online.target

[Service]
User={SERVICE_USER}
Group={SERVICE_USER}
Environment=HOME={STATE_DIR} FACEREC_WEIGHTS_DIR={STATE_DIR}/weights
WorkingDirectory={STATE_DIR}
StateDirectory=facerec
ExecStart=/usr/bin/env {exec_start}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
ProtectKernelLogs=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
UMask=0077
CapabilityBoundingSet={capabilities}
AmbientCapabilities={capabilities}
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
    if options.token_sha256:
        command += ["--token-sha256", options.token_sha256]  # the token itself is never stored on AWS
    return _service_user_data("facerec-web", "facerec web tier and auto-scaler", command, privileged_port=options.port < 1024)


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
            web_rule = ("tcp", self.o.port, self.o.port, self.allowed_cidr())
            steps.append(self.security_group(self.n.web_security_group, f"facerec web tier: HTTP on port {self.o.port}", {web_rule}))
            steps.append(self.launch_template())
            steps.append(self.autoscaling_group())
            steps.append(self.role(self.n.web_role, web_policy(self.arns, self.s.prefix), "web tier"))
            steps.append(self.profile(self.n.web_profile, self.n.web_role))
            if self.o.with_web:
                steps.append(self.web_instance())
        return Plan("deploy", steps, self.warnings, self.blockers)

    def allowed_cidr(self) -> str:
        """``allow_cidr``, checked: required (refused without it, with an example), a valid CIDR; a
        warning when it lets the whole internet in without a token."""
        cidr = self.o.allow_cidr
        if not cidr:
            self.blockers.append(
                f"--allow-cidr is required: who may reach the web tier on port {self.o.port}. Example: {CIDR_EXAMPLE} "
                "(one address: yours, as https://checkip.amazonaws.com shows it), 10.0.0.0/16 (a network), or "
                "0.0.0.0/0 for anyone (then pass --token too)"
            )
            return "<--allow-cidr>"
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as exc:
            self.blockers.append(f"--allow-cidr {cidr} is not a CIDR block ({exc}); example: {CIDR_EXAMPLE}")
            return cidr
        if network.version != 4:
            self.blockers.append(f"--allow-cidr {cidr}: only IPv4 blocks are supported (the web-instance has an IPv4 address); example: {CIDR_EXAMPLE}")
        elif network.prefixlen == 0 and not self.o.token_sha256:
            self.warnings.append(f"--allow-cidr {cidr} lets anyone on the internet send images (and so start app instances): pass --token as well")
        return str(network)

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

    def role(self, name: str, policy: dict[str, Any], tier: str) -> Step:
        """A role assumed by EC2 with ``policy`` as its only (inline) policy."""
        iam = self.c.iam
        resource = f"iam role {name}"
        detail = f"assumed by ec2.amazonaws.com; inline policy {ROLE_POLICY_NAME} ({len(policy['Statement'])} statements)"
        put_policy = ("put inline policy", lambda: iam.put_role_policy(RoleName=name, PolicyName=ROLE_POLICY_NAME, PolicyDocument=json.dumps(policy)))
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

    def _default_subnets(self) -> list[str]:
        if not self._vpc:
            return []
        filters = [{"Name": "vpc-id", "Values": [self._vpc]}, {"Name": "default-for-az", "Values": ["true"]}]
        return sorted(s["SubnetId"] for s in self.c.ec2.describe_subnets(Filters=filters).get("Subnets") or [])

    def autoscaling_group(self) -> Step:
        """The app tier's instances: launched from the template by the group, sized by the web tier."""
        asg = self.c.autoscaling
        name, template = self.n.autoscaling_group, self.n.launch_template
        resource = f"autoscaling group {name}"
        subnets = self._default_subnets()
        if self._vpc and not subnets:
            self.blockers.append(f"the default VPC {self._vpc} has no default subnets for the app tier's Auto Scaling group")
        tags = {"Name": APP_INSTANCE_UNNAMED, TAG_KEY: self.s.prefix}
        wanted_template = {"LaunchTemplateName": template, "Version": "$Default"}
        detail = f"launch template {template} ($Default), 0-{self.o.max_instances} instances in {len(subnets)} default subnet(s); the web tier sets its size"
        groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name]).get("AutoScalingGroups") or []
        tag_list = [{"ResourceId": name, "ResourceType": "auto-scaling-group", "Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in tags.items()]
        if not groups:
            def create() -> None:
                asg.create_auto_scaling_group(
                    AutoScalingGroupName=name, LaunchTemplate=wanted_template, MinSize=0, MaxSize=self.o.max_instances,
                    DesiredCapacity=0, VPCZoneIdentifier=",".join(subnets), HealthCheckType="EC2",
                    Tags=[{k: v for k, v in t.items() if k not in ("ResourceId", "ResourceType")} for t in tag_list],
                )

            return Step("create", resource, detail, Calls(("create auto scaling group", create)))
        group = groups[0]
        drift: list[str] = []
        lt = group.get("LaunchTemplate") or {}
        if lt.get("LaunchTemplateName") != template or lt.get("Version") != "$Default":
            drift.append("launch template")
        if int(group.get("MinSize", 0)) != 0 or int(group.get("MaxSize", -1)) != self.o.max_instances:
            drift.append(f"size {group.get('MinSize')}-{group.get('MaxSize')} -> 0-{self.o.max_instances}")
        if sorted(x for x in (group.get("VPCZoneIdentifier") or "").split(",") if x) != subnets:
            drift.append("subnets")
        have = {t["Key"]: (t.get("Value"), bool(t.get("PropagateAtLaunch"))) for t in group.get("Tags") or []}
        missing_tags = [t for t in tag_list if have.get(t["Key"]) != (t["Value"], True)]
        if missing_tags:
            drift.append("tags")
        if not drift:
            return Step("noop", resource, detail)
        parts: list[tuple[str, Callable[[], Any]]] = []
        if any(d != "tags" for d in drift):
            # The desired capacity is the web tier's: never touched here.
            parts.append(("update auto scaling group", lambda: asg.update_auto_scaling_group(
                AutoScalingGroupName=name, LaunchTemplate=wanted_template, MinSize=0, MaxSize=self.o.max_instances,
                VPCZoneIdentifier=",".join(subnets),
            )))
        if missing_tags:
            parts.append(("tag", lambda: asg.create_or_update_tags(Tags=missing_tags)))
        return Step("update", resource, ", ".join(drift), Calls(*parts))

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
        asg = self.c.autoscaling
        group_name = self.n.autoscaling_group
        if asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name]).get("AutoScalingGroups"):
            def gone() -> None:
                for _ in range(120):  # AWS deletes a group (and terminates its instances) in the background
                    if not asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name]).get("AutoScalingGroups"):
                        return
                    time.sleep(5)
                raise DeployError(f"the Auto Scaling group {group_name} was still being deleted after 10 minutes")

            steps.append(Step("delete", f"autoscaling group {group_name}", "with its instances (ForceDelete)", Calls(
                ("delete auto scaling group", lambda: asg.delete_auto_scaling_group(AutoScalingGroupName=group_name, ForceDelete=True)),
                ("wait until deleted", gone),
            )))
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
