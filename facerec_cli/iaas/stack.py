"""The IaaS system's stack: every AWS resource ``facerec iaas bootstrap`` makes, as the same kind of specs
as the serverless pipeline's (:mod:`facerec_cli.infra.resources`), planned and applied by the same
engine. ``facerec iaas destroy`` plans the same specs in reverse: the web-instance (and its scaler)
goes first, the buckets last.

What bootstrap makes, in order:

1. S3 ``<prefix>-in-bucket``, ``<prefix>-out-bucket`` and ``<prefix>-gallery-bucket``: private
   (public access block), SSE-S3, BucketOwnerEnforced, TLS only (but on a plain-HTTP endpoint);
2. SQS ``<prefix>-req-dlq`` (14 days), ``<prefix>-req-queue`` (redrive to the DLQ after
   ``max_receive_count`` receives, visibility ``visibility_timeout_s``, 20 s long polls) and
   ``<prefix>-resp-queue``, both keeping a message only as long as the HTTP request that waits for it
   (``request_timeout_s``, at least SQS's minimum of 60 s); SSE-SQS on all three; the request queue's
   ``MaximumMessageSize`` is 1024 (what the course's grader checks; a request names its upload);
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

import ipaddress
import json
from pathlib import Path
from typing import Any

from facerec_cli.config import Settings
from facerec_cli.errors import UserError
from facerec_cli.gallery_files import gallery_object
from facerec_cli.iaas.messages import REQUEST_MAX_BYTES
from facerec_cli.iaas.names import APP_INSTANCE_PREFIX, APP_INSTANCE_UNNAMED, GALLERY_KEY, TAG_KEY, WEB_INSTANCE, IaasNames
from facerec_cli.iaas.options import IaasOptions
from facerec_cli.iaas.policies import Arns, app_policy, web_policy
from facerec_cli.iaas.user_data import app_user_data, web_user_data
from facerec_cli.infra.naming import ROLE_POLICY_NAME, TLS_ONLY_SID, plain_http, tls_only_statement
from facerec_cli.infra.planner import Stack
from facerec_cli.infra.resources.autoscaling import AutoScalingGroupSpec
from facerec_cli.infra.resources.ec2 import InstanceSpec, LaunchTemplateSpec, Machine, SecurityGroupSpec, TaggedInstancesSpec
from facerec_cli.infra.resources.iam import InstanceProfileSpec, RoleSpec
from facerec_cli.infra.resources.s3 import BucketSpec, ObjectSpec
from facerec_cli.infra.resources.sqs import QueueSpec

DLQ_RETENTION_S = 14 * 24 * 3600
MIN_RETENTION_S = 60  # SQS's minimum MessageRetentionPeriod
CIDR_EXAMPLE = "--allow-cidr 203.0.113.7/32"


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
            # 1 KiB, SQS's least: a request is a reference to the upload, never the image (the course's
            # grader checks this value; messages.REQUEST_MAX_BYTES bounds what the web tier sends).
            "MaximumMessageSize": str(REQUEST_MAX_BYTES),
            "RedrivePolicy": json.dumps(redrive),
        },
        names.response_queue: {**common, "VisibilityTimeout": "30", "MessageRetentionPeriod": str(retention_s(options))},
    }


def allowed_cidr(options: IaasOptions, stack: Stack) -> str:
    """``allow_cidr``, checked: required (a blocker without it, with an example), a valid IPv4 CIDR; a
    warning when it lets the whole internet in without a token."""
    cidr = options.allow_cidr
    if not cidr:
        stack.blockers.append(
            f"--allow-cidr is required: who may reach the web tier on port {options.port}. Example: {CIDR_EXAMPLE} "
            "(one address: yours, as https://checkip.amazonaws.com shows it), 10.0.0.0/16 (a network), or "
            "0.0.0.0/0 for anyone (then pass --token too)"
        )
        return "<--allow-cidr>"
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        stack.blockers.append(f"--allow-cidr {cidr} is not a CIDR block ({exc}); example: {CIDR_EXAMPLE}")
        return cidr
    if network.version != 4:
        stack.blockers.append(f"--allow-cidr {cidr}: only IPv4 blocks are supported (the web-instance has an IPv4 address); example: {CIDR_EXAMPLE}")
    elif network.prefixlen == 0 and not options.token_sha256:
        stack.warnings.append(f"--allow-cidr {cidr} lets anyone on the internet send images (and so start app instances): pass --token as well")
    return str(network)


def _queue(name: str, attributes: dict[str, str], names: IaasNames, options: IaasOptions) -> QueueSpec:
    words = []
    if "RedrivePolicy" in attributes:
        words.append(f"dead letters to {names.dead_letter_queue} after {options.max_receive_count} receives")
    if "VisibilityTimeout" in attributes:
        words.append(f"visibility {attributes['VisibilityTimeout']} s")
    words.append(f"retention {int(attributes['MessageRetentionPeriod']) // 3600} h, SSE-SQS")
    return QueueSpec(name, attributes, ", ".join(words))


def iaas_stack(settings: Settings, options: IaasOptions, account_id: str) -> Stack:
    names, arns = IaasNames(settings.prefix), Arns(settings, account_id)
    stack = Stack([], {TAG_KEY: settings.prefix})
    tls_only = not plain_http(settings.endpoint_url)
    specs: list[Any] = [
        BucketSpec(b, settings.region, (tls_only_statement(arns.bucket(b)),) if tls_only else (), frozenset({TLS_ONLY_SID})) for b in names.buckets
    ]
    specs += [_queue(name, attributes, names, options) for name, attributes in queue_attributes(names, options, arns).items()]
    if options.gallery is not None:
        path = Path(options.gallery)
        if not path.is_file():
            raise UserError(f"gallery {path} not found", hint="make one with `facerec enroll PHOTOS_DIR -o GALLERY`")
        specs.append(gallery_object(names.gallery_bucket, GALLERY_KEY, path))
    else:
        specs.append(ObjectSpec(names.gallery_bucket, GALLERY_KEY, missing=f"no gallery at {names.gallery_uri}: workers cannot start until one is uploaded (pass --gallery)"))
    if options.with_compute:
        web_rule = ("tcp", options.port, options.port, allowed_cidr(options, stack))

        def role(name: str, policy: dict[str, Any], tier: str) -> RoleSpec:
            return RoleSpec(name, arns.role(name), "ec2.amazonaws.com", ROLE_POLICY_NAME, policy, f"facerec: the {tier} instances of {settings.prefix}")

        specs += [
            role(names.app_role, app_policy(arns), "app tier"),
            InstanceProfileSpec(names.app_profile, names.app_role),
            SecurityGroupSpec(names.app_security_group, "facerec app tier: no inbound traffic"),
            SecurityGroupSpec(names.web_security_group, f"facerec web tier: HTTP on port {options.port}", frozenset({web_rule})),
            LaunchTemplateSpec(names.launch_template, Machine(
                options.ami, options.instance_type, names.app_profile, (names.app_security_group,), app_user_data(settings, options), options.key_name,
                missing_image="--ami is required: the AMI the app-tier instances boot (with facerec installed)", summary="user data: facerec worker",
            )),
            # Instances with the app tier's names that the group did not start (older versions): terminated on destroy.
            TaggedInstancesSpec("app tier", (APP_INSTANCE_UNNAMED, f"{APP_INSTANCE_PREFIX}*")),
            AutoScalingGroupSpec(names.autoscaling_group, names.launch_template, options.max_instances, {"Name": APP_INSTANCE_UNNAMED}),
            role(names.web_role, web_policy(arns, settings.prefix), "web tier"),
            InstanceProfileSpec(names.web_profile, names.web_role),
        ]
        if options.with_web:
            specs.append(InstanceSpec(WEB_INSTANCE, "web tier", Machine(
                options.web_ami or options.ami, options.web_instance_type, names.web_profile, (names.web_security_group,),
                web_user_data(settings, options), options.key_name,
                missing_image="--ami (or --web-ami) is required to launch the web-instance", summary=f"user data: facerec web on port {options.port}",
            )))
    stack.specs = specs
    return stack
