"""The IaaS system: web tier, SQS request/response queues, auto-scaled app tier.

Unit tests of the scaling policy and the response router; bootstrap/destroy (and the Auto Scaling
pool) against a real moto server; the local system (`facerec iaas run-local` machinery) with real
photos: 100 requests 20 at a time, the workers scaling 0 -> 2 -> 0, one worker SIGKILLed while it
holds a request. The local system runs its tiers with their roles' credentials while moto enforces
IAM (facerec_cli.localcloud.moto_fixes), and the tiers' policies are also proven on their own: the app worker,
the web tier over HTTP and the scaler's EC2 calls, each with exactly its bootstrap policy.

Hardening: --allow-cidr required, the token (401), the sandboxed systemd units, the web role that can
only size the Auto Scaling group, bodies released before the wait, 408 for slow clients, requests past
their deadline skipped and not scaled for, one web tier per prefix (the lease), non-ASCII file names.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import io
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from facerec_cli.config import Settings
from facerec_cli.infra.errors import DeployError
from facerec_cli.infra.executor import ListReporter, apply_plan
from facerec_cli.iaas.deployer import plan_bootstrap, plan_teardown
from facerec_cli.iaas.stack import IaasOptions
from facerec_cli.infra.clients import Clients
from facerec_cli.infra.plan import Ref
from facerec_cli.iaas.messages import Response, queue_depth, queue_url
from facerec_cli.iaas.names import TAG_KEY, IaasNames
from facerec_cli.iaas.pools import AsgPool, find_app_instances
from facerec_cli.iaas.scaler import AutoScaler, ScalingPolicy
from facerec_cli.iaas.router import ResponseRouter
from facerec_cli.localcloud.server import LocalCloud

PREFIX = "demo"
CIDR = "203.0.113.7/32"


# ------------------------------------------------------------------------------------------ policy


class FakePool:
    def __init__(self) -> None:
        self.n = 0
        self.calls: list[int] = []

    def active(self) -> int:
        return self.n

    def scale_to(self, n: int) -> None:
        self.calls.append(n)
        self.n = n

    def close(self) -> None:
        pass


def test_scaler_scales_out_at_once_and_in_after_a_quiet_spell() -> None:
    now, depth = [0.0], [0]
    pool = FakePool()
    scaler = AutoScaler(pool, lambda: depth[0], ScalingPolicy(max_instances=20, per_instance=2, scale_in_after_s=10), clock=lambda: now[0])

    def at(t: float, d: int) -> int:
        now[0], depth[0] = t, d
        return scaler.tick().active

    assert at(0, 0) == 0 and pool.calls == []  # idle: nothing launched
    assert at(1, 7) == 4  # ceil(7 / 2), at once
    assert at(2, 100) == 20  # capped at max_instances
    assert at(5, 3) == 20  # demand fell: instances stay through the window
    assert at(12.5, 3) == 2  # 10 s after the last peak: down to ceil(3 / 2)
    assert at(13, 0) == 2
    assert at(23.5, 0) == 0  # idle for the window: none left
    assert pool.calls == [4, 20, 2, 0]
    assert ScalingPolicy(max_instances=0).wanted(50) == 0


# ------------------------------------------------------------------------------------------ router


class FakeSqs:
    def __init__(self, batches: list[list[str]]) -> None:
        self.batches = batches
        self.deleted: list[str] = []

    def receive_message(self, **kwargs):
        bodies = self.batches.pop(0) if self.batches else []
        return {"Messages": [{"Body": b, "ReceiptHandle": f"rh-{i}-{len(self.deleted)}"} for i, b in enumerate(bodies)]}

    def delete_message_batch(self, QueueUrl, Entries):  # noqa: N803 - boto3's names
        self.deleted += [e["ReceiptHandle"] for e in Entries]
        return {"Successful": Entries, "Failed": []}


def _response(request_id: str, key: str, name: str) -> str:
    return Response(id=request_id, key=key, name=name, status="ok").to_body()


def test_router_hands_each_response_to_its_own_waiter_and_deletes_the_rest() -> None:
    sqs = FakeSqs([
        [_response("b", "b.jpg", "madonna"), _response("zzz", "z.jpg", "x"), _response("a", "a.jpg", "elton_john"), "not json"],
        [_response("a", "a.jpg", "elton_john"), _response("c", "c.jpg", "late")],
    ])
    router = ResponseRouter(sqs, "url", wait_s=0)
    wa, wb, wc = router.expect("a"), router.expect("b"), router.expect("c")
    router.abandon("c")  # its HTTP request timed out
    assert router.poll_once() == 4
    assert wa.wait(0).answer == "a:elton_john" and wb.wait(0).answer == "b:madonna"  # out of order, each to its own
    assert router.poll_once() == 2
    assert wc.wait(0) is None
    assert dict(router.counts) == {"answered": 2, "unknown": 1, "malformed": 1, "duplicate": 1, "late": 1}
    assert len(sqs.deleted) == 6 and router.waiting == 0  # nothing is left in the queue


# ------------------------------------------------------------------------------------------ bootstrap on moto


@pytest.fixture
def moto_cloud(monkeypatch):
    """A real moto server on 127.0.0.1 (S3, SQS, IAM, EC2), with fake credentials for the CLI's clients."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with LocalCloud() as cloud:
        yield cloud


@pytest.fixture
def tiny_gallery(tmp_path: Path) -> Path:
    """A valid gallery file without enrolling photos (for tests where no worker recognises)."""
    import torch

    from lambdas.core.gallery import Gallery
    from lambdas.core.recognise import RECIPE

    path = tmp_path / "tiny.pt"
    Gallery(weights="casia-webface", embeddings=torch.randn(2, 512), names=["a", "b"], recipe=RECIPE).save(path)
    return path


def _exists(fn, **kwargs) -> bool:
    import botocore.exceptions

    try:
        fn(**kwargs)
        return True
    except botocore.exceptions.ClientError:
        return False


def test_iaas_buckets_refuse_plain_http_like_the_pipelines() -> None:
    """The IaaS buckets carry the same TLS-only statement as the pipeline's on AWS; against a plain-HTTP
    endpoint (a local moto server) none, since it would refuse every request."""
    from facerec_cli.infra.naming import TLS_ONLY_SID
    from facerec_cli.infra.resources.s3 import BucketSpec
    from facerec_cli.iaas.stack import iaas_stack

    n = IaasNames(PREFIX)
    on_aws = [s for s in iaas_stack(Settings(prefix=PREFIX, region="eu-west-1"), IaasOptions(), "123456789012").specs if isinstance(s, BucketSpec)]
    assert [b.name for b in on_aws] == list(n.buckets)
    for bucket in on_aws:
        [statement] = bucket.policy_statements
        assert statement["Sid"] == TLS_ONLY_SID and statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert statement["Resource"] == [f"arn:aws:s3:::{bucket.name}", f"arn:aws:s3:::{bucket.name}/*"]
    local = iaas_stack(Settings(prefix=PREFIX, region="eu-west-1", endpoint_url="http://127.0.0.1:5000"), IaasOptions(), "123456789012")
    assert all(not s.policy_statements for s in local.specs if isinstance(s, BucketSpec))


def test_bootstrap_is_idempotent_and_destroy_removes_everything(moto_cloud, tiny_gallery) -> None:
    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = Clients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    ec2, sqs, s3, iam = clients.ec2, clients.sqs, clients.s3, clients.iam
    n = IaasNames(PREFIX)
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    options = IaasOptions(gallery=tiny_gallery, ami=ami, allow_cidr=CIDR)

    # Without an AMI nothing can be launched, without --allow-cidr nobody is let in: refused before
    # anything changes, each with what to pass.
    blocked = plan_bootstrap(settings, IaasOptions(), clients)
    assert any("--ami" in b for b in blocked.blockers)
    assert any(b.startswith("--allow-cidr is required") and "--allow-cidr 203.0.113.7/32" in b for b in blocked.blockers), blocked.blockers
    with pytest.raises(DeployError, match="--ami"):
        apply_plan(blocked)
    bad = plan_bootstrap(settings, IaasOptions(ami=ami, allow_cidr="203.0.113.7/8"), clients)  # host bits set
    assert any("--allow-cidr 203.0.113.7/8 is not a CIDR block" in b for b in bad.blockers), bad.blockers
    anyone = plan_bootstrap(settings, IaasOptions(ami=ami, allow_cidr="0.0.0.0/0"), clients)
    assert not anyone.blockers and any("pass --token" in w for w in anyone.warnings)

    plan = plan_bootstrap(settings, options, clients)  # the dry run
    assert len(plan.changes) == 16 and not plan.blockers
    assert not sqs.list_queues().get("QueueUrls") and not s3.list_buckets()["Buckets"]
    # The app group's id does not exist yet: the launch template refers to the output of the call that
    # makes it, and the dry run shows that reference.
    app_group = f"security-group/{n.app_security_group}"
    [template] = [s for s in plan.changes if s.resource == f"ec2 launch-template {n.launch_template}"]
    assert template.calls[0].params["LaunchTemplateData"]["SecurityGroupIds"] == [Ref(app_group)]
    assert f"'SecurityGroupIds': [<{app_group}>]" in plan.render(show_calls=True)

    reporter = ListReporter()
    apply_plan(plan, reporter)
    assert len(reporter.finished) == 16
    again = plan_bootstrap(settings, options, clients)
    assert again.empty and not again.warnings, again.render()
    # ... resolved when applied: the template runs its instances in the group that was made.
    data = ec2.describe_launch_template_versions(LaunchTemplateName=n.launch_template, Versions=["$Default"])["LaunchTemplateVersions"][0]
    group_id = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [n.app_security_group]}])["SecurityGroups"][0]["GroupId"]
    assert data["LaunchTemplateData"]["SecurityGroupIds"] == [group_id]

    # Read back: buckets private and encrypted, the gallery uploaded.
    for bucket in n.buckets:
        rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
        assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"][0]["ObjectOwnership"] == "BucketOwnerEnforced"
    assert s3.get_object(Bucket=n.gallery_bucket, Key="gallery.pt")["Body"].read() == tiny_gallery.read_bytes()

    # Queues: the request queue dead-letters into the DLQ; all encrypted.
    req = sqs.get_queue_attributes(QueueUrl=queue_url(sqs, n.request_queue), AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=queue_url(sqs, n.dead_letter_queue), AttributeNames=["All"])["Attributes"]
    redrive = json.loads(req["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"] and int(redrive["maxReceiveCount"]) == 5
    assert req["VisibilityTimeout"] == "30" and req["ReceiveMessageWaitTimeSeconds"] == "20"
    # A request (or its answer) is kept as long as its HTTP request waits (60 s), not an hour.
    resp = sqs.get_queue_attributes(QueueUrl=queue_url(sqs, n.response_queue), AttributeNames=["All"])["Attributes"]
    assert req["MessageRetentionPeriod"] == resp["MessageRetentionPeriod"] == "60"
    for name in n.queues:
        assert sqs.get_queue_attributes(QueueUrl=queue_url(sqs, name), AttributeNames=["All"])["Attributes"]["SqsManagedSseEnabled"] == "true"

    # IAM: EC2 roles with least privilege, each in its instance profile.
    app_role = iam.get_role(RoleName=n.app_role)["Role"]
    assert app_role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    app_policy = iam.get_role_policy(RoleName=n.app_role, PolicyName="facerec-least-privilege")["PolicyDocument"]
    grants = {(a, s["Resource"]) for s in app_policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    account = clients.account_id
    req_arn, resp_arn = f"arn:aws:sqs:us-east-1:{account}:{n.request_queue}", f"arn:aws:sqs:us-east-1:{account}:{n.response_queue}"
    assert grants == {
        ("sqs:GetQueueUrl", req_arn), ("sqs:ReceiveMessage", req_arn), ("sqs:DeleteMessage", req_arn),
        ("sqs:GetQueueUrl", resp_arn), ("sqs:SendMessage", resp_arn),
        ("s3:GetObject", f"arn:aws:s3:::{n.in_bucket}/*"), ("s3:ListBucket", f"arn:aws:s3:::{n.in_bucket}"),
        ("s3:PutObject", f"arn:aws:s3:::{n.out_bucket}/*"),
        ("s3:GetObject", f"arn:aws:s3:::{n.gallery_bucket}/gallery.pt"),
    }
    assert _web_policy(iam) == _expected_web_policy(account)
    for profile, role in ((n.app_profile, n.app_role), (n.web_profile, n.web_role)):
        assert [r["RoleName"] for r in iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]] == [role]

    # EC2: security groups, the launch template, the web instance.
    groups = {g["GroupName"]: g for g in ec2.describe_security_groups()["SecurityGroups"]}
    web_rules = groups[n.web_security_group]["IpPermissions"]
    assert [(p["IpProtocol"], p["FromPort"], p["IpRanges"][0]["CidrIp"]) for p in web_rules] == [("tcp", 8000, CIDR)]
    assert groups[n.app_security_group]["IpPermissions"] == []
    data = ec2.describe_launch_template_versions(LaunchTemplateName=n.launch_template, Versions=["$Default"])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["ImageId"] == ami and data["InstanceType"] == "t3.medium"
    assert data["IamInstanceProfile"] == {"Name": n.app_profile} and data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["SecurityGroupIds"] == [groups[n.app_security_group]["GroupId"]]
    app_data = base64.b64decode(data["UserData"]).decode()
    assert f"facerec worker --prefix {PREFIX} --region us-east-1 --gallery s3://{n.gallery_bucket}/gallery.pt" in app_data
    _assert_sandboxed(app_data, "facerec-worker")

    # The app tier's Auto Scaling group: on the template, 0..20 instances, none yet; the web tier sizes it.
    group = clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[n.autoscaling_group])["AutoScalingGroups"][0]
    assert group["LaunchTemplate"]["LaunchTemplateName"] == n.launch_template and group["LaunchTemplate"]["Version"] == "$Default"
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"], group["Instances"]) == (0, 20, 0, [])
    assert {t["Key"]: (t["Value"], t["PropagateAtLaunch"]) for t in group["Tags"]} == {"Name": ("app-tier-instance", True), TAG_KEY: (PREFIX, True)}
    web = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert len(web) == 1 and web[0]["State"]["Name"] in ("pending", "running")
    assert {t["Key"]: t["Value"] for t in web[0]["Tags"]} == {"Name": "web-instance", TAG_KEY: PREFIX}
    user_data = ec2.describe_instance_attribute(InstanceId=web[0]["InstanceId"], Attribute="userData")["UserData"]["Value"]
    web_data = base64.b64decode(user_data).decode()
    assert "facerec web --prefix demo --region us-east-1 --host 0.0.0.0 --port 8000" in web_data and "--token" not in web_data
    _assert_sandboxed(web_data, "facerec-web")

    # The auto-scaler's pool: the group starts the instances (from the template), the pool names them
    # app-tier-instance-<n>, and takes out the highest first. (Before the template gets a second
    # version: moto 5.2.1's group cannot launch from one, an AssertionError on its user data.)
    pool = AsgPool(clients.autoscaling, ec2, n)
    pool.scale_to(3)
    running = find_app_instances(ec2, PREFIX, ("pending", "running"))
    assert sorted(i["Name"] for i in running) == ["app-tier-instance-1", "app-tier-instance-2", "app-tier-instance-3"]
    assert {i["InstanceType"] for i in running} == {"t3.medium"} and pool.active() == 3
    pool.scale_to(1)
    assert [i["Name"] for i in find_app_instances(ec2, PREFIX, ("pending", "running"))] == ["app-tier-instance-1"] and pool.active() == 1
    pool.scale_to(25)  # capped at the group's maximum
    assert pool.active() == 20 and len(find_app_instances(ec2, PREFIX, ("pending", "running"))) == 20
    pool.scale_to(1)
    assert [i["Name"] for i in find_app_instances(ec2, PREFIX, ("pending", "running"))] == ["app-tier-instance-1"]

    # A changed setting is one update: a new default version of the launch template.
    bigger = IaasOptions(ami=ami, instance_type="t3.large", allow_cidr=CIDR)
    change = plan_bootstrap(settings, bigger, clients)
    assert [(s.action, s.resource) for s in change.changes] == [("update", f"ec2 launch-template {n.launch_template}")]
    apply_plan(change)
    data = ec2.describe_launch_template_versions(LaunchTemplateName=n.launch_template, Versions=["$Default"])["LaunchTemplateVersions"][0]
    assert data["VersionNumber"] == 2 and data["LaunchTemplateData"]["InstanceType"] == "t3.large"
    assert plan_bootstrap(settings, bigger, clients).empty

    # Drift in the web policy (an older, looser one) is planned as an update and put back.
    loose = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "*"}]}
    iam.put_role_policy(RoleName=n.web_role, PolicyName="facerec-least-privilege", PolicyDocument=json.dumps(loose))
    drift = plan_bootstrap(settings, bigger, clients)
    assert [(s.action, s.resource, s.detail) for s in drift.changes] == [("update", f"iam role {n.web_role}", "inline policy")]
    apply_plan(drift)
    assert _web_policy(iam) == _expected_web_policy(account)

    # A smaller app tier: the group's size is updated (never its desired capacity: the web tier's).
    smaller = IaasOptions(ami=ami, instance_type="t3.large", allow_cidr=CIDR, max_instances=5)
    resized = plan_bootstrap(settings, smaller, clients)
    assert [(s.action, s.resource, s.detail) for s in resized.changes] == [("update", f"autoscaling group {n.autoscaling_group}", "size 0-20 -> 0-5")]
    assert any("web-instance" in w for w in resized.warnings)  # it was launched with --max-instances 20
    apply_plan(resized)
    assert plan_bootstrap(settings, smaller, clients).changes == []


    # Destroy: the dry run deletes nothing; then everything goes in the reverse of the creation order (the
    # web tier and its scaler first, the group before any app instance it did not start, the buckets
    # last); a second finds nothing.
    teardown = plan_teardown(settings, clients)
    order = [s.resource for s in teardown.changes]
    assert order[0] == "ec2 instances web tier", order
    assert order.index(f"autoscaling group {n.autoscaling_group}") < order.index("ec2 instances app tier") < order.index(f"ec2 launch-template {n.launch_template}")
    assert order[-3:] == [f"s3 bucket {b}" for b in reversed(n.buckets)], order
    assert len(teardown.changes) == 16
    assert _exists(sqs.get_queue_url, QueueName=n.request_queue)
    apply_plan(teardown)
    assert plan_teardown(settings, clients).empty
    assert not sqs.list_queues().get("QueueUrls") and not s3.list_buckets()["Buckets"]
    assert not _exists(iam.get_role, RoleName=n.app_role) and not _exists(iam.get_instance_profile, InstanceProfileName=n.web_profile)
    assert not any(g["GroupName"].startswith(PREFIX) for g in ec2.describe_security_groups()["SecurityGroups"])
    assert not ec2.describe_launch_templates()["LaunchTemplates"]
    assert not clients.autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
    states = {i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert states == {"terminated"}


def _web_policy(iam) -> dict:
    return iam.get_role_policy(RoleName=IaasNames(PREFIX).web_role, PolicyName="facerec-least-privilege")["PolicyDocument"]


def _expected_web_policy(account: str) -> dict:
    """The web tier's whole policy, written out: its queues, its uploads, its lease, and of EC2 only
    the size of its Auto Scaling group and the names of the group's instances: it cannot launch."""
    n = IaasNames(PREFIX)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "SendRequests", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:SendMessage", "sqs:GetQueueAttributes"],
             "Resource": f"arn:aws:sqs:us-east-1:{account}:{n.request_queue}"},
            {"Sid": "TakeResponses", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
             "Resource": f"arn:aws:sqs:us-east-1:{account}:{n.response_queue}"},
            {"Sid": "StoreUploads", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{n.in_bucket}/*"},
            {"Sid": "HoldTheLease", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
             "Resource": f"arn:aws:s3:::{n.gallery_bucket}/web-tier.lock"},
            {"Sid": "SeeInstances", "Effect": "Allow", "Action": ["ec2:DescribeInstances", "autoscaling:DescribeAutoScalingGroups"], "Resource": "*"},
            {"Sid": "SizeTheAppTier", "Effect": "Allow", "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
             "Resource": f"arn:aws:autoscaling:us-east-1:{account}:autoScalingGroup:*:autoScalingGroupName/{n.autoscaling_group}"},
            {"Sid": "NameAppInstances", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": f"arn:aws:ec2:us-east-1:{account}:instance/*",
             "Condition": {"StringEquals": {"aws:ResourceTag/aws:autoscaling:groupName": n.autoscaling_group, f"aws:ResourceTag/{TAG_KEY}": PREFIX},
                           "ForAllValues:StringEquals": {"aws:TagKeys": ["Name"]},
                           "StringLike": {"aws:RequestTag/Name": "app-tier-instance-*"}}},
        ],
    }


def _assert_sandboxed(user_data: str, unit: str) -> None:
    """The boot script makes the system user and a unit that runs the service as it, sandboxed."""
    import subprocess

    assert subprocess.run(["bash", "-n"], input=user_data, text=True, capture_output=True).returncode == 0  # valid bash
    assert "useradd --system --home-dir /var/lib/facerec --no-create-home --shell /usr/sbin/nologin facerec" in user_data
    body = user_data.split(f"cat > /etc/systemd/system/{unit}.service <<'UNIT'\n", 1)[1].split("\nUNIT\n", 1)[0]
    service = body.split("[Service]\n", 1)[1].split("\n\n", 1)[0].splitlines()
    for line in ("User=facerec", "Group=facerec", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=yes",
                 "StateDirectory=facerec", "CapabilityBoundingSet=", "AmbientCapabilities="):  # fmt: skip
        assert line in service, (line, service)
    assert not any(line.startswith(("User=root", "ReadWritePaths=/")) for line in service)
    # systemd's own reading of the unit (where systemd-analyze exists, as on these machines): valid,
    # and an exposure level of "OK" or better (below 5 of 10; an unhardened service scores 9.6).
    import re
    import shutil
    import tempfile

    if shutil.which("systemd-analyze"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{unit}.service"
            path.write_text(body + "\n")
            verify = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
            assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
            security = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(path)], capture_output=True, text=True)
            level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
            assert level is not None and float(level.group(1)) < 5.0, security.stdout[-500:]


def test_cli_bootstrap_dry_run_apply_rerun_and_destroy(moto_cloud, tiny_gallery) -> None:
    from facerec_cli.cli.app import app
    ami = moto_cloud.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    common = ["--prefix", PREFIX, "--endpoint-url", moto_cloud.endpoint_url, "--region", "us-east-1"]
    runner = CliRunner()

    # No --allow-cidr: refused, nothing made, the flag named with an example.
    closed = runner.invoke(app, ["iaas", "bootstrap", *common, "--ami", ami, "--gallery", str(tiny_gallery), "--yes"])
    assert closed.exit_code == 1 and "--allow-cidr is required" in closed.output and "--allow-cidr 203.0.113.7/32" in closed.output, closed.output
    assert not moto_cloud.client("sqs").list_queues().get("QueueUrls")

    common += ["--allow-cidr", CIDR]
    dry = runner.invoke(app, ["iaas", "bootstrap", *common, "--ami", ami, "--gallery", str(tiny_gallery), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "create sqs queue demo-req-queue" in dry.output and "Plan (deploy): 16 to create." in dry.output
    assert not moto_cloud.client("sqs").list_queues().get("QueueUrls")

    first = runner.invoke(app, ["iaas", "bootstrap", *common, "--ami", ami, "--gallery", str(tiny_gallery), "--yes", "--token", "s3cret-t0ken"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["iaas", "bootstrap", *common, "--gallery", str(tiny_gallery), "--token", "s3cret-t0ken"])  # the template keeps its AMI
    assert second.exit_code == 0 and "No changes: 16 resources up to date." in second.output, second.output
    # The web-instance asks for the token by its SHA-256; the token itself is stored nowhere on AWS.
    ec2 = moto_cloud.client("ec2")
    web = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]][0]
    user_data = base64.b64decode(ec2.describe_instance_attribute(InstanceId=web["InstanceId"], Attribute="userData")["UserData"]["Value"]).decode()
    assert f"--token-sha256 {hashlib.sha256(b's3cret-t0ken').hexdigest()}" in user_data and "s3cret-t0ken" not in user_data

    refused = runner.invoke(app, ["iaas", "destroy", *common[:6]])  # no --yes, no terminal
    assert refused.exit_code == 1 and "--yes" in refused.output
    gone = runner.invoke(app, ["iaas", "destroy", *common[:6], "--yes"])
    assert gone.exit_code == 0 and "Plan (destroy): 15 to delete." in gone.output, gone.output
    assert "Nothing to destroy." in runner.invoke(app, ["iaas", "destroy", *common[:6], "--yes"]).output


def test_web_command_sizes_the_auto_scaling_group_by_live_requests_and_is_alone_on_its_prefix(moto_cloud, tiny_gallery) -> None:
    """`facerec web` against moto, with a token: a request with no app instance sets the Auto Scaling
    group to 1 and names its instance app-tier-instance-1; once the request's client had its 504 the
    request stays queued (no worker on moto) but drives no scaling: the instance is taken out. A second
    `facerec web` on the same prefix is refused. SIGTERM ends the server cleanly."""
    import os
    import signal
    import subprocess
    import sys

    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = Clients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    ami = clients.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    apply_plan(plan_bootstrap(settings, IaasOptions(gallery=tiny_gallery, ami=ami, with_web=False, allow_cidr=CIDR), clients))
    n = IaasNames(PREFIX)

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    port = free_port()
    script = "from facerec_cli.cli.app import app; app()"

    def web_command(port: int) -> list[str]:
        return [
            sys.executable, "-c", script, "web", "--prefix", PREFIX, "--endpoint-url", moto_cloud.endpoint_url, "--region", "us-east-1",
            "--port", str(port), "--timeout", "6", "--scale-interval", "0.3", "--scale-in-after", "1",
        ]

    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "FACEREC_TOKEN": "t0ken"}
    root = Path(__file__).resolve().parents[1]
    web = subprocess.Popen(web_command(port), env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    auth = {"Authorization": "Bearer t0ken"}

    def app_instances() -> list[tuple[str, str]]:
        found = find_app_instances(clients.ec2, PREFIX, ("pending", "running", "shutting-down", "terminated"))
        return sorted((i["Name"], i["State"]) for i in found)

    def desired() -> int:
        return clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[n.autoscaling_group])["AutoScalingGroups"][0]["DesiredCapacity"]

    def wait_for(predicate, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.2)
        return False

    try:
        assert wait_for(lambda: _get_ok(url + "healthz", auth), 60), "the web tier did not come up"
        assert requests.post(url, files={"inputFile": ("test_00.png", _png())}, timeout=10).status_code == 401  # no token
        with concurrent.futures.ThreadPoolExecutor(1) as one:
            waiting = one.submit(requests.post, url, files={"inputFile": ("test_00.png", _png())}, headers=auth, timeout=30)
            assert wait_for(lambda: app_instances() == [("app-tier-instance-1", "running")], 5), app_instances()
            assert desired() == 1 and requests.get(url + "healthz", headers=auth, timeout=10).json()["scaler"]["instances"] == 1

            # A second web tier on this prefix would delete this one's responses: refused.
            second = subprocess.run(web_command(free_port()), env=env, cwd=root, capture_output=True, text=True, timeout=60)
            assert second.returncode == 1 and "another web tier" in second.stderr and "serves prefix demo" in second.stderr, second.stderr
            r = waiting.result()
        assert r.status_code == 504  # no instance can answer on moto
        # The request is still queued, but nobody waits for it any more: no capacity for it.
        assert queue_depth(clients.sqs, queue_url(clients.sqs, n.request_queue)) == 1
        assert wait_for(lambda: app_instances() == [("app-tier-instance-1", "terminated")] and desired() == 0, 10), (app_instances(), desired())
    finally:
        web.send_signal(signal.SIGTERM)
        output, _ = web.communicate(timeout=60)
    assert web.returncode == 0, output
    assert "launched app-tier-instance-1" in output and "terminating app-tier-instance-1" in output
    # Stopped cleanly, it gave its lease back: the next web tier starts at once.
    assert not _exists(clients.s3.head_object, Bucket=n.gallery_bucket, Key="web-tier.lock")


def _get_ok(url: str, headers: dict | None = None) -> bool:
    try:
        return requests.get(url, headers=headers, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


# ------------------------------------------------------------------------------------------ the local system


def _png(size: int = 64) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 150, 100)).save(buf, format="PNG")
    return buf.getvalue()


def test_web_tier_refuses_bad_uploads_and_answers_504_without_workers(tiny_gallery) -> None:
    from facerec_cli.iaas.local import LocalIaas, LocalOptions

    options = LocalOptions(max_instances=0, request_timeout_s=1.5, max_upload_bytes=100_000, poll_wait_s=1, token="s3cret")
    with LocalIaas(tiny_gallery, options) as system:
        url = system.url
        http = requests.Session()
        http.headers["Authorization"] = "Bearer s3cret"
        # Local only: the listening socket is on the loopback interface, not 0.0.0.0.
        assert url.startswith("http://127.0.0.1:") and system.server.server.socket.getsockname()[0] == "127.0.0.1"
        health = http.get(url + "healthz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"

        # The token: 401 without it or with another one, on every route, before the body is looked at.
        for headers in ({}, {"Authorization": "Bearer s3cret!"}, {"Authorization": "Basic s3cret"}, {"X-Facerec-Token": "S3CRET"}):
            r = requests.post(url, files={"inputFile": ("a.png", _png())}, headers=headers, timeout=10)
            assert r.status_code == 401 and "Authorization: Bearer" in r.text and r.headers["WWW-Authenticate"].startswith("Bearer"), headers
            assert requests.get(url + "healthz", headers=headers, timeout=10).status_code == 401
        r = requests.post(url, files={"inputFile": ("notes.jpg", b"x")}, headers={"X-Facerec-Token": "s3cret"}, timeout=10)
        assert r.status_code == 415  # the other header works too (and then the body is checked)

        r = http.post(url, files={"inputFile": ("notes.jpg", b"this is not an image")}, timeout=10)
        assert r.status_code == 415 and "not an image" in r.text
        r = http.post(url, files={"image": ("a.png", _png())}, timeout=10)
        assert r.status_code == 400 and "inputFile" in r.text
        r = http.post(url, files={"inputFile": ("a.png", b"")}, timeout=10)
        assert r.status_code == 400 and "empty" in r.text
        r = http.post(url, files={"inputFile": ("big.png", b"\x89PNG" + b"\0" * 150_000)}, timeout=10)
        assert r.status_code == 413 and "100000 bytes" in r.text
        r = http.post(url, files={"inputFile": ("huge.bmp", b"x" * 2_000_000)}, timeout=10)  # over the whole-body limit
        assert r.status_code == 413
        r = http.post(url, files={"inputFile": ("../..", _png())}, timeout=10)
        assert r.status_code == 400 and "no usable name" in r.text
        assert http.get(url, timeout=10).status_code == 405

        # No app instance may run: the request waits for its timeout, then a clear 504.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            waiting = pool.submit(http.post, url, files={"inputFile": ("same.png", _png(64))}, timeout=10)
            time.sleep(0.5)
            # Same name, other content, while the first is in flight: refused rather than mixed up.
            clash = http.post(url, files={"inputFile": ("same.png", _png(32))}, timeout=10)
            slow = waiting.result()
        assert clash.status_code == 409 and "same.png" in clash.text
        assert slow.status_code == 504 and "no answer within 1.5 s" in slow.text
        assert system.pool.launched == 0

        # A response nobody waits for (the request above gave up; another never existed) is deleted.
        sqs = system.client("sqs")
        resp_url = queue_url(sqs, system.names.response_queue)
        sqs.send_message(QueueUrl=resp_url, MessageBody=_response("never-issued", "x.png", "nobody"))
        deadline = time.monotonic() + 10
        while system.web.router.counts["unknown"] < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert system.web.router.counts["unknown"] == 1
        # counted first, then deleted: give the delete its moment (the router does it right after)
        while queue_depth(sqs, resp_url) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert queue_depth(sqs, resp_url) == 0


def test_local_system_under_load_scales_and_survives_a_killed_worker(data: Path, celeb_gallery, tmp_path: Path) -> None:
    from facerec_cli.iaas.local import LocalIaas, LocalOptions

    photos = sorted((data / "5celeb" / "val").glob("*/*"))
    assert len(photos) == 25
    jobs = [photos[i % len(photos)] for i in range(100)]
    options = LocalOptions(
        max_instances=2, per_instance=1, scale_in_after_s=3, scale_interval_s=0.3, visibility_timeout_s=5,
        poll_wait_s=1, request_timeout_s=240, log_path=str(tmp_path / "workers.log"),
    )
    answers: list[str] = []
    killed: list = []
    alive: list[tuple[float, int]] = []
    stop = threading.Event()

    with LocalIaas(celeb_gallery[0], options) as system:
        pool = system.pool

        def watch() -> None:  # the worker count over time, and one SIGKILL once the run is under way
            while not stop.is_set():
                alive.append((time.monotonic(), pool.alive()))
                if not killed and len(answers) >= 10:
                    info = pool.kill_holding()
                    if info is not None:
                        killed.append(info)
                time.sleep(0.02)

        def post(path: Path) -> tuple[Path, int, str]:
            with path.open("rb") as fh:
                r = requests.post(system.url, files={"inputFile": (path.name, fh, "image/jpeg")}, timeout=300)
            answers.append(r.text)
            return path, r.status_code, r.text

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with concurrent.futures.ThreadPoolExecutor(20) as clients:
            results = list(clients.map(post, jobs))
        done = time.monotonic()

        # Every answer right, none lost.
        wrong = [(p.name, status, text) for p, status, text in results if (status, text) != (200, f"{p.stem}:{p.parent.name}")]
        assert not wrong, wrong[:5]
        router = system.web.router
        assert router.counts["answered"] == 100

        # The killed worker held an unanswered request: it came back and was answered by another worker.
        assert killed, "no worker was caught holding a request"
        answer = router.answered(killed[0].request_id)
        assert answer is not None and answer.receive_count >= 2, answer
        assert (killed[0].name, -9, False) in pool.exits

        # Scaled with the load, and back to 0 when idle.
        assert alive[0][1] == 0 and max(n for _, n in alive) == 2
        while pool.alive() and time.monotonic() - done < options.scale_in_after_s + 20:
            time.sleep(0.2)
        stop.set()
        watcher.join()
        assert pool.alive() == 0 and system.scaler.last.active == 0
        assert all(code == 0 for name, code, told in pool.exits if told), pool.exits  # SIGTERM: finished, exited cleanly

        # The out-bucket holds <stem> -> name; no request is left or dead-lettered.
        s3, sqs = system.client("s3"), system.client("sqs")
        for path in photos:
            assert s3.get_object(Bucket=system.names.out_bucket, Key=path.stem)["Body"].read().decode() == path.parent.name
        assert queue_depth(sqs, queue_url(sqs, system.names.request_queue)) == 0
        assert queue_depth(sqs, queue_url(sqs, system.names.dead_letter_queue)) == 0


def test_worker_command_answers_drops_garbage_and_exits_when_idle(moto_cloud, celeb_gallery, data: Path) -> None:
    import signal

    from facerec_cli.cli.app import app
    from facerec_cli.iaas.messages import Request

    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = Clients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    apply_plan(plan_bootstrap(settings, IaasOptions(gallery=celeb_gallery[0], with_compute=False), clients))
    n = IaasNames(PREFIX)
    sqs, s3 = clients.sqs, clients.s3
    photo = sorted((data / "5celeb" / "val" / "madonna").iterdir())[0]
    etag = s3.put_object(Bucket=n.in_bucket, Key="test_00.jpg", Body=photo.read_bytes())["ETag"]
    request_url, response_url = queue_url(sqs, n.request_queue), queue_url(sqs, n.response_queue)
    sqs.send_message(QueueUrl=request_url, MessageBody="garbage")  # dropped with a log line
    sqs.send_message(QueueUrl=request_url, MessageBody=Request("r-1", "test_00.jpg", etag).to_body())

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = CliRunner().invoke(app, [
            "worker", "--prefix", PREFIX, "--endpoint-url", moto_cloud.endpoint_url, "--region", "us-east-1",
            "--poll-wait", "1", "--exit-when-idle", "1.5",
        ])
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert result.exit_code == 0, result.output

    messages = sqs.receive_message(QueueUrl=response_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages") or []
    assert len(messages) == 1
    response = Response.from_body(messages[0]["Body"])
    assert (response.id, response.answer, response.status) == ("r-1", "test_00:madonna", "ok")
    assert s3.get_object(Bucket=n.out_bucket, Key="test_00")["Body"].read() == b"madonna"
    assert queue_depth(sqs, request_url) == 0 and queue_depth(sqs, queue_url(sqs, n.dead_letter_queue)) == 0


def test_worker_refuses_weights_other_than_the_gallerys(moto_cloud, celeb_gallery) -> None:
    from facerec_cli.cli.app import app
    result = CliRunner().invoke(app, [
        "worker", "--gallery", str(celeb_gallery[0]), "--weights", "vggface2", "--prefix", PREFIX,
        "--endpoint-url", moto_cloud.endpoint_url, "--region", "us-east-1", "--poll-wait", "0",
    ])
    assert result.exit_code == 1
    assert "weights vggface2 are not the weights the gallery was made with (casia-webface)" in result.output


# ------------------------------------------------------------------------------------------ worker: delete after the response


def _loaded_worker(moto_cloud, tiny_gallery, visibility_timeout_s: int = 30):
    """An AppWorker on the moto server, models and gallery loaded, with one request for a real PNG queued."""
    from facerec_cli.iaas.messages import Request
    from facerec_cli.iaas.worker import AppWorker, WorkerConfig

    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = Clients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    options = IaasOptions(gallery=tiny_gallery, with_compute=False, visibility_timeout_s=visibility_timeout_s)
    apply_plan(plan_bootstrap(settings, options, clients))
    n = IaasNames(PREFIX)
    sqs = clients.sqs
    etag = clients.s3.put_object(Bucket=n.in_bucket, Key="test_07.png", Body=_png())["ETag"]
    sqs.send_message(QueueUrl=queue_url(sqs, n.request_queue), MessageBody=Request("r-7", "test_07.png", etag).to_body())
    worker = AppWorker(sqs, clients.s3, n, WorkerConfig(gallery=n.gallery_uri, poll_wait_s=1))
    worker.load()
    return worker, clients, n


def test_worker_sends_the_response_before_it_deletes_the_request(moto_cloud, tiny_gallery) -> None:
    worker, clients, n = _loaded_worker(moto_cloud, tiny_gallery)
    sqs = clients.sqs
    req_url, resp_url = queue_url(sqs, n.request_queue), queue_url(sqs, n.response_queue)
    calls: list[tuple[str, str, str]] = []  # (start|done, operation, queue URL), in the order the worker's client made them

    def start(model, params, **kwargs) -> None:  # params: the API call's own (QueueUrl...)
        calls.append(("start", model.name, params.get("QueueUrl", "")))

    def done(model, http_response, **kwargs) -> None:
        calls.append(("done", model.name, str(http_response.status_code)))

    worker.sqs.meta.events.register("before-parameter-build.sqs.*", start)
    worker.sqs.meta.events.register("after-call.sqs.*", done)
    assert worker.poll_once() is True

    answering = [c for c in calls if c[1] in ("SendMessage", "DeleteMessage")]
    # The response was sent (and SQS answered 200) before the request's delete was even built.
    assert answering == [
        ("start", "SendMessage", resp_url), ("done", "SendMessage", "200"),
        ("start", "DeleteMessage", req_url), ("done", "DeleteMessage", "200"),
    ]
    response = Response.from_body(sqs.receive_message(QueueUrl=resp_url, WaitTimeSeconds=1)["Messages"][0]["Body"])
    assert response.id == "r-7" and worker.handled == 1
    assert queue_depth(sqs, req_url) == 0


def test_worker_keeps_the_request_when_the_response_cannot_be_sent(moto_cloud, tiny_gallery) -> None:
    """The response queue is deleted after the worker looked it up: SendMessage fails (a real
    QueueDoesNotExist from moto), so the request must stay and come back after the visibility timeout."""
    import botocore.exceptions

    worker, clients, n = _loaded_worker(moto_cloud, tiny_gallery, visibility_timeout_s=1)
    sqs = clients.sqs
    req_url = queue_url(sqs, n.request_queue)
    sqs.delete_queue(QueueUrl=queue_url(sqs, n.response_queue))
    deletes: list[str] = []
    worker.sqs.meta.events.register("before-call.sqs.DeleteMessage", lambda params, **kw: deletes.append(params["QueueUrl"]))

    with pytest.raises(botocore.exceptions.ClientError) as failed:
        worker.poll_once()
    assert "NonExistentQueue" in str(failed.value) or "QueueDoesNotExist" in str(failed.value)
    assert deletes == [] and worker.handled == 0
    # Still in the request queue: received again once its visibility timeout (1 s) passes.
    again = sqs.receive_message(QueueUrl=req_url, WaitTimeSeconds=5, AttributeNames=["ApproximateReceiveCount"]).get("Messages") or []
    assert len(again) == 1 and json.loads(again[0]["Body"])["id"] == "r-7"
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


# ------------------------------------------------------------------------------------------ hardening


def _noise_png(side: int = 1700, seed: int = 0) -> bytes:
    """A real PNG that does not compress: side x side random pixels (1700: 8.7 MB)."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _vm(pid: int, field: str = "VmRSS") -> float:
    """/proc/<pid>/status field in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def test_waiting_requests_hold_no_upload(moto_cloud) -> None:
    """The real `facerec web` over HTTP: 16 uploads of 8.7 MB wait for answers that do not come; the
    web tier's memory grows by far less than one upload per waiting request (the bodies are in S3 and
    released before the wait; held, they would add 16 x 8.7 MB)."""
    import os
    import signal
    import subprocess
    import sys

    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = Clients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    apply_plan(plan_bootstrap(settings, IaasOptions(with_compute=False), clients))
    big = _noise_png()
    assert 8_000_000 < len(big) < 10 * 2**20
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-c", "from facerec_cli.cli.app import app; app()", "web", "--prefix", PREFIX, "--endpoint-url", moto_cloud.endpoint_url,
        "--region", "us-east-1", "--port", str(port), "--timeout", "60", "--no-scaler",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    web = subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"

    def waiting(n: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if requests.get(url + "healthz", timeout=5).json()["waiting"] >= n:
                time.sleep(0.5)
                return
            time.sleep(0.2)
        raise AssertionError(f"{n} requests never waited")

    try:
        with concurrent.futures.ThreadPoolExecutor(17) as clients_pool:
            def post(name: str) -> requests.Response:
                return requests.post(url, files={"inputFile": (name, big, "image/png")}, timeout=90)

            deadline = time.monotonic() + 60
            while not _get_ok(url + "healthz") and time.monotonic() < deadline:
                time.sleep(0.2)
            futures = [clients_pool.submit(post, "warm.png")]  # a first upload: imports, thread, buffers
            waiting(1)
            before = _vm(web.pid)
            futures += [clients_pool.submit(post, f"big_{i}.png") for i in range(16)]
            waiting(17)
            after = _vm(web.pid)
            web.send_signal(signal.SIGTERM)  # the waiting requests get their 503
            codes = [f.result().status_code for f in futures]
    finally:
        if web.poll() is None:
            web.send_signal(signal.SIGTERM)
        web.wait(60)
    per_request = (after - before) / 16
    assert per_request < 2.0, f"{per_request:.1f} MiB more per waiting request (the upload is {len(big) / 2**20:.1f} MiB)"
    assert codes == [503] * 17
    assert len(clients.s3.list_objects_v2(Bucket=IaasNames(PREFIX).in_bucket)["Contents"]) == 17


def test_slow_clients_get_408_and_cannot_hold_the_connections(moto_cloud) -> None:
    """waitress reads requests in its event loop: slow clients hold connections, not threads. Headers
    sent a byte at a time, a body that trickles, and a connection that says nothing are all cut after
    the read/idle timeouts (the first two with a 408), so the connection limit frees up again."""
    from facerec_cli.iaas.web import WebConfig, WebTier
    from facerec_cli.iaas.web_server import WebServer

    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = Clients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    apply_plan(plan_bootstrap(settings, IaasOptions(with_compute=False), clients))
    tier = WebTier(s3=clients.s3, sqs=clients.sqs, names=IaasNames(PREFIX), config=WebConfig(poll_wait_s=1)).start()
    server = WebServer(tier.app, port=0, threads=4, channel_timeout_s=2, read_timeout_s=2.0, connection_limit=12).start()
    host, port = "127.0.0.1", server.server.effective_port
    stop = threading.Event()

    def slow(kind: str) -> tuple[bytes, bool]:
        """Trickle one byte every 0.2 s (for up to 40 s); what the server sent back, and whether the server
        ended the connection (rather than the trickle running out)."""
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
        with socket.create_connection((host, port), timeout=15) as conn:
            if kind == "body":
                conn.sendall(request)  # the headers at once, then the body trickles
            received = b""
            for i in range(200):
                if kind != "silent":
                    try:
                        conn.sendall(request[i : i + 1] if kind == "headers" else b"x")
                    except OSError:
                        return received, True
                conn.settimeout(0.2)
                try:
                    chunk = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return received, True
                if not chunk:
                    return received, True
                received += chunk
                if stop.is_set():
                    break
            return received, False

    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            kinds = ["headers"] * 6 + ["body"] * 4 + ["silent"] * 2  # the whole connection limit
            results = [pool.submit(slow, kind) for kind in kinds]
            time.sleep(1.0)
            # All 12 connections are held now; once they are cut, a normal request gets through.
            health = requests.get(server.url + "/healthz", timeout=15)
            outcomes = [f.result() for f in results]
        assert health.status_code == 200
        for kind, (received, cut) in zip(kinds, outcomes, strict=True):
            assert cut, (kind, received[:200])  # the server closed it, long before 200 trickled bytes
            if kind == "silent":
                assert received == b"", received  # an idle connection is closed, nothing to answer
            else:
                assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"not received within 2 s" in received, (kind, received[:200])
        assert server.refused == 10
    finally:
        stop.set()
        tier.stop()
        server.stop()


def test_workers_skip_requests_past_their_deadline(moto_cloud, tiny_gallery) -> None:
    """A request whose HTTP client already had its 504 is deleted unanswered (no recognition, no
    result, no response); the live one behind it is answered. The web tier's demand counts only
    requests someone waits for."""
    from facerec_cli.iaas.messages import Request, deadline_attributes
    from facerec_cli.iaas.web import WebConfig, WebTier

    worker, clients, n = _loaded_worker(moto_cloud, tiny_gallery)  # r-7 queued, without a deadline
    sqs, s3 = clients.sqs, clients.s3
    req_url, resp_url = queue_url(sqs, n.request_queue), queue_url(sqs, n.response_queue)
    etag = s3.put_object(Bucket=n.in_bucket, Key="late.png", Body=_png())["ETag"]
    sqs.purge_queue(QueueUrl=req_url)
    sqs.send_message(QueueUrl=req_url, MessageBody=Request("r-late", "late.png", etag).to_body(), MessageAttributes=deadline_attributes(time.time() - 5))
    etag = s3.put_object(Bucket=n.in_bucket, Key="test_07.png", Body=_png())["ETag"]
    sqs.send_message(QueueUrl=req_url, MessageBody=Request("r-7", "test_07.png", etag).to_body(), MessageAttributes=deadline_attributes(time.time() + 60))
    for _ in range(10):
        if worker.skipped + worker.handled == 2:
            break
        worker.poll_once()
    assert (worker.skipped, worker.handled) == (1, 1)
    responses = sqs.receive_message(QueueUrl=resp_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages") or []
    assert [Response.from_body(m["Body"]).id for m in responses] == ["r-7"]
    assert _exists(s3.head_object, Bucket=n.out_bucket, Key="test_07") and not _exists(s3.head_object, Bucket=n.out_bucket, Key="late")
    assert queue_depth(sqs, req_url) == 0

    # What the scaler is given: the queue's depth, but no more than the requests someone waits for.
    tier = WebTier(s3=s3, sqs=sqs, names=n, config=WebConfig(poll_wait_s=1, lock=False))
    assert tier.demand(5) == 0
    tier.router.expect("a"), tier.router.expect("b")
    assert tier.demand(5) == 2 and tier.demand(1) == 1
    tier.router.abandon("a")
    assert tier.demand(5) == 1


def test_one_web_tier_per_prefix(moto_cloud) -> None:
    """The lease: a second web tier on a prefix is refused (it would delete the first one's
    responses); it may start once the first stopped (lease released) or died (lease expired), and a
    web tier that finds its lease taken stops answering."""
    from facerec_cli.iaas.lease import LeaseHeld
    from facerec_cli.iaas.web import WebConfig, WebTier

    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = Clients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    apply_plan(plan_bootstrap(settings, IaasOptions(with_compute=False), clients))
    n = IaasNames(PREFIX)

    def tier() -> WebTier:
        return WebTier(s3=clients.s3, sqs=clients.sqs, names=n, config=WebConfig(poll_wait_s=1, lease_s=2.0))

    first = tier().start()
    second = tier()
    with pytest.raises(LeaseHeld, match="another web tier .* serves prefix demo") as refused:
        second.start()
    assert "stop that one first" in refused.value.hint and not second.router.alive
    first.stop()  # releases the lease
    second.start()
    assert second.router.alive

    # second dies without releasing (its renewals stop): refused until the lease is 2 s old, then taken over.
    second.lease._stop.set()
    second.lease._thread.join()
    third = tier()
    with pytest.raises(LeaseHeld):
        third.start()
    time.sleep(3.2)
    third.start()
    assert third.router.alive
    # second comes back to life: its next renewal finds the lease taken; it stops routing and answering.
    assert second.lease.renew() is False and second.lease.lost.is_set() and not second.router.alive
    assert second.submit("a.png", _png()) == (503, f"a.png: this web tier lost its lease on prefix {PREFIX} (another web tier may serve it); send it there")
    assert second.health()[1]["status"] == "lease lost"
    second.stop()
    assert third.lease.renew() and not third.lease.lost.is_set()  # the survivor keeps it
    third.stop()


def test_non_ascii_file_names_are_kept(data: Path, celeb_gallery) -> None:
    """`日本.jpg` is stored, recognised and answered as `日本:<name>` (not `jpg`), and two such names
    do not collide; names in other scripts, with blanks, as a Windows path or sent as RFC 2231
    `filename*` too."""
    from facerec_cli.iaas.local import LocalIaas, LocalOptions

    madonna = sorted((data / "5celeb" / "val" / "madonna").iterdir())[0].read_bytes()
    elton = sorted((data / "5celeb" / "val" / "elton_john").iterdir())[0].read_bytes()
    names = [("日本.jpg", madonna, "日本:madonna"), ("中国.jpg", elton, "中国:elton_john"), ("été à Paris.jpg", madonna, "été à Paris:madonna"),
             ("C:\\fakepath\\Ελλάδα.jpg", elton, "Ελλάδα:elton_john"), ("e\u0301te\u0301.jpg", elton, "\u00e9t\u00e9:elton_john")]  # fmt: skip
    options = LocalOptions(max_instances=1, poll_wait_s=1, request_timeout_s=120, scale_in_after_s=5)
    with LocalIaas(celeb_gallery[0], options) as system:
        def post(item: tuple[str, bytes, str]) -> tuple[int, str]:
            r = requests.post(system.url, files={"inputFile": (item[0], item[1], "image/jpeg")}, timeout=180)
            return r.status_code, r.text

        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            answers = list(pool.map(post, names))
        assert answers == [(200, want) for _, _, want in names]

        # The RFC 2231 form (filename*=UTF-8''...), as some clients send it.
        boundary = "b0undary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"inputFile\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC2.jpg\r\n"
                "Content-Type: image/jpeg\r\n\r\n").encode() + madonna + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
        r = requests.post(system.url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=180)
        assert (r.status_code, r.text) == (200, "日本2:madonna")
        # A Windows path in the raw header, its backslashes as browsers send them (HTML5: unescaped)
        # and doubled as some clients escape them: the last component is the name either way.
        for disposition, want in [('filename="C:\\fakepath\\Ελλάδα3.jpg"', "Ελλάδα3:madonna"),
                                  ('filename="D:\\\\photos\\\\Ελλάδα4.jpg"', "Ελλάδα4:madonna")]:  # fmt: skip
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"inputFile\"; {disposition}\r\n"
                    "Content-Type: image/jpeg\r\n\r\n").encode() + madonna + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
            r = requests.post(system.url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=180)
            assert (r.status_code, r.text) == (200, want), disposition
        r = requests.post(system.url, files={"inputFile": ("名" * 90 + ".jpg", madonna)}, timeout=30)
        assert r.status_code == 400 and "274 bytes long; at most 255 bytes" in r.text

        s3 = system.client("s3")
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=system.names.in_bucket)["Contents"]}
        assert keys == {"日本.jpg", "中国.jpg", "été à Paris.jpg", "Ελλάδα.jpg", "\u00e9t\u00e9.jpg", "日本2.jpg", "Ελλάδα3.jpg", "Ελλάδα4.jpg"}
        assert s3.get_object(Bucket=system.names.out_bucket, Key="日本")["Body"].read().decode() == "madonna"


def test_part_filename_reads_the_raw_header_as_clients_write_it() -> None:
    """What the web tier takes as the file name, whatever the multipart parser would make of it."""
    from urllib3.fields import format_multipart_header_param

    from facerec_cli.iaas.upload_checks import part_filename, upload_key

    # What requests/urllib3 put on the wire for a Windows path, read back and reduced to the key.
    sent = "form-data; name=\"inputFile\"; " + format_multipart_header_param("filename", "C:\\fakepath\\Ελλάδα.jpg")
    assert upload_key(part_filename(sent)) == "Ελλάδα.jpg"
    assert part_filename('form-data; name="f"; filename="say \\"hi\\".jpg"') == 'say "hi".jpg'
    assert part_filename("form-data; name=f; filename=plain.jpg") == "plain.jpg"
    both = "form-data; name=\"f\"; filename=\"fallback.jpg\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.jpg"
    assert part_filename(both) == "日本.jpg"
    assert part_filename("form-data; name=\"f\"; filename=\"ok.jpg\"; filename*=no-such-charset''%FF.jpg") == "ok.jpg"
    assert part_filename('form-data; name="f"') is None and part_filename(None) is None


# ------------------------------------------------------------------------------------------ IAM enforced


def test_tiers_work_with_exactly_their_role_policies_under_iam_enforcement(moto_cloud, tiny_gallery) -> None:
    """The deployment's own roles (bootstrap's policies), assumed; moto enforcing IAM. The web tier
    over HTTP and the app worker do a whole request; a vanished upload is a 404 for the app role (its
    s3:ListBucket) and so an error answer (422), where without that statement it is a 403 that the
    worker retries; the scaler sizes the group and names its instances; and each role is refused what
    it does not need."""
    import botocore.exceptions

    from facerec_cli.iaas.policies import Arns, app_policy, ec2_trust_policy
    from facerec_cli.localcloud.moto_fixes import admin_credentials, enforced, role_credentials
    from facerec_cli.iaas.web import WebConfig, WebTier
    from facerec_cli.iaas.web_server import WebServer
    from facerec_cli.iaas.worker import AppWorker, WorkerConfig

    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = Clients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    ami = clients.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    apply_plan(plan_bootstrap(settings, IaasOptions(gallery=tiny_gallery, ami=ami, allow_cidr=CIDR, with_web=False), clients))
    n = IaasNames(PREFIX)
    iam, sts = clients.iam, clients.sts
    # Another group in the account: the web tier must not be able to size it.
    clients.autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="someone-else", LaunchTemplate={"LaunchTemplateName": n.launch_template}, MinSize=0, MaxSize=2, DesiredCapacity=0,
        AvailabilityZones=["us-east-1a"],
    )
    trust, policy = ec2_trust_policy(), app_policy(Arns(settings, clients.account_id))
    # The roles exist (bootstrap made them): assumed as they are, with bootstrap's policies.
    web_creds = role_credentials(iam, sts, n.web_role, {}, trust, session="web-tier")
    app_creds = role_credentials(iam, sts, n.app_role, {}, trust, session="app-tier")
    admin = admin_credentials(iam)

    def client(service: str, creds: dict) -> object:
        return moto_cloud.client(service, **creds)

    with enforced():
        root = {service: client(service, admin) for service in ("s3", "sqs", "iam")}
        tier = WebTier(s3=client("s3", web_creds), sqs=client("sqs", web_creds), names=n, config=WebConfig(poll_wait_s=1, timeout_s=30)).start()
        server = WebServer(tier.app, port=0, threads=4).start()
        worker = AppWorker(client("sqs", app_creds), client("s3", app_creds), n, WorkerConfig(gallery=n.gallery_uri, poll_wait_s=1))
        worker.load()  # GetQueueUrl x2, the gallery
        try:
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                # A whole request: PutObject, SendMessage (web); Receive, GetObject, PutObject, Send, Delete (app); Receive, Delete (web).
                answer = pool.submit(requests.post, server.url + "/", files={"inputFile": ("日本.png", _png())}, timeout=60)
                while not worker.poll_once():
                    pass
                assert (answer.result().status_code, answer.result().text) == (200, "日本:no_face")

                # The upload vanishes before the worker reads it: with s3:ListBucket a 404, so an error answer.
                vanished = pool.submit(requests.post, server.url + "/", files={"inputFile": ("gone.png", _png(40))}, timeout=60)
                req_url = queue_url(root["sqs"], n.request_queue)
                while queue_depth(root["sqs"], req_url) < 1:
                    time.sleep(0.05)
                root["s3"].delete_object(Bucket=n.in_bucket, Key="gone.png")
                while not worker.poll_once():
                    pass
                r = vanished.result()
                assert r.status_code == 422 and "gone: could not recognise: gone.png: the upload is no longer in" in r.text, r.text
            app_s3 = client("s3", app_creds)
            with pytest.raises(botocore.exceptions.ClientError, match="NoSuchKey"):
                app_s3.get_object(Bucket=n.in_bucket, Key="never.png")

            # Without the ListUploads statement AWS answers 403 instead: the worker cannot tell and retries.
            stripped = {**policy, "Statement": [s for s in policy["Statement"] if s["Sid"] != "ListUploads"]}
            root["iam"].put_role_policy(RoleName=n.app_role, PolicyName="facerec-least-privilege", PolicyDocument=json.dumps(stripped))
            with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
                app_s3.get_object(Bucket=n.in_bucket, Key="never.png")
            from facerec_cli.iaas.messages import Request

            root["sqs"].send_message(QueueUrl=req_url, MessageBody=Request("r-gone", "never.png").to_body())
            with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
                worker.poll_once()
            root["iam"].put_role_policy(RoleName=n.app_role, PolicyName="facerec-least-privilege", PolicyDocument=json.dumps(policy))

            # The app role may not write uploads or read the out-bucket's neighbours; the web role may not read the gallery.
            with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
                app_s3.put_object(Bucket=n.in_bucket, Key="x.png", Body=b"x")
            with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
                client("s3", web_creds).get_object(Bucket=n.gallery_bucket, Key="gallery.pt")
        finally:
            tier.stop()
            server.stop()

        # The scaler with the web role: sizes its group and names the instances; nothing else of EC2.
        ec2_web, asg_web = client("ec2", web_creds), client("autoscaling", web_creds)
        pool = AsgPool(asg_web, ec2_web, n)
        pool.scale_to(2)
        assert sorted(i["Name"] for i in pool.instances(("pending", "running"))) == ["app-tier-instance-1", "app-tier-instance-2"]
        pool.scale_to(0)
        assert pool.active() == 0 and pool.instances(("pending", "running")) == []
        with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
            asg_web.set_desired_capacity(AutoScalingGroupName="someone-else", DesiredCapacity=1)
        with pytest.raises(botocore.exceptions.ClientError, match="UnauthorizedOperation|AccessDenied"):
            ec2_web.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.micro")
        with pytest.raises(botocore.exceptions.ClientError, match="UnauthorizedOperation|AccessDenied"):
            ec2_web.terminate_instances(InstanceIds=["i-0123456789abcdef0"])
        with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
            client("iam", web_creds).list_roles()


# ------------------------------------------------------------------------------------------ /healthz cache


def test_healthz_reuses_queue_and_instance_counts_but_reports_the_router_live(moto_cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    from facerec_cli.iaas import web
    from facerec_cli.iaas.messages import Request
    from facerec_cli.iaas.web import WebConfig, WebTier
    from tests.fake_clock import FakeClock

    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = Clients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    apply_plan(plan_bootstrap(settings, IaasOptions(with_compute=False), clients))
    n = IaasNames(PREFIX)
    health_calls: list[str] = []  # the calls /healthz makes (the router's ReceiveMessage etc. are not counted)

    def record(model, **kwargs) -> None:
        if model.name in ("GetQueueAttributes", "DescribeInstances"):
            health_calls.append(model.name)

    for client in (clients.sqs, clients.ec2):
        client.meta.events.register("before-call.*.*", record)
    scaler = AutoScaler(AsgPool(clients.autoscaling, clients.ec2, n), lambda: 0, ScalingPolicy(max_instances=0))
    tier = WebTier(s3=clients.s3, sqs=clients.sqs, names=n, config=WebConfig(poll_wait_s=1), scaler=scaler)  # default: 2 s
    http = tier.app.test_client()
    # The cache's age is read on a fake clock that stands still unless moved: the burst is inside the
    # cache however slowly it runs. (Only /healthz reads the web tier's clock in this test.)
    clock = FakeClock()
    monkeypatch.setattr(web, "time", clock)
    try:
        first = http.get("/healthz")
        assert first.status_code == 503 and first.json["status"] == "router stopped"
        assert first.json["queues"]["request"] == {"waiting": 0, "in_flight": 0} and first.json["instances"]["count"] == 0
        one_read = ["DescribeInstances", "GetQueueAttributes", "GetQueueAttributes"]
        assert sorted(health_calls) == one_read

        clients.sqs.send_message(QueueUrl=tier.request_url, MessageBody=Request("r-1", "a.png").to_body())
        tier.start()
        for _ in range(50):  # a burst of outside calls: no AWS call, but the router's state is live
            again = http.get("/healthz")
        assert again.status_code == 200 and again.json["status"] == "ok"
        assert again.json["queues"]["request"] == {"waiting": 0, "in_flight": 0}  # the cached depth
        assert sorted(health_calls) == one_read

        clock.advance(2.1)  # past health_cache_s: one fresh read
        fresh = http.get("/healthz").json
        assert fresh["queues"]["request"] == {"waiting": 1, "in_flight": 0}
        assert sorted(health_calls) == sorted(one_read * 2)
    finally:
        tier.stop()


# ------------------------------------------------------------------------------------------ CLI settings


def test_iaas_setting_precedence_is_flag_env_file_default(tmp_path: Path, monkeypatch) -> None:
    from facerec_cli.errors import UserError
    from facerec_cli.config import load_iaas_settings as load

    monkeypatch.chdir(tmp_path)  # facerec.toml in the working directory is read first
    (tmp_path / "facerec.toml").write_text('[iaas]\nami = "ami-file"\nport = 9000\n')
    monkeypatch.setenv("FACEREC_AMI", "ami-env")
    monkeypatch.delenv("FACEREC_PORT", raising=False)
    monkeypatch.delenv("FACEREC_INSTANCE_TYPE", raising=False)

    assert load(ami="ami-flag").ami == "ami-flag"  # flag over everything
    assert load().ami == "ami-env"  # env over the file
    monkeypatch.setenv("FACEREC_AMI", "")  # set but empty: as if unset
    assert load().ami == "ami-file"
    assert load().port == 9000
    monkeypatch.setenv("FACEREC_PORT", "8100")
    assert load().port == 8100  # env values are cast
    assert load(port=0).port == 0  # a falsy flag is still a flag
    assert load().instance_type == "t3.medium" and load().max_instances == 20  # defaults

    (tmp_path / "facerec.toml").write_text("[iaas\n")
    monkeypatch.setenv("FACEREC_AMI", "")
    with pytest.raises(UserError, match="not valid TOML"):
        load()

    (tmp_path / "facerec.toml").write_text('[iaas]\nmax_instances = "many"\n')
    with pytest.raises(UserError, match=r"max_instances from \[iaas\] in .*facerec.toml must be a whole number of at least 0, not .many."):
        load()
    monkeypatch.setenv("FACEREC_PORT", "80.5")
    with pytest.raises(UserError, match="port from FACEREC_PORT must be a whole number of at least 0, not '80.5'"):
        load()
