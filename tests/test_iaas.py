"""The IaaS system: web tier, SQS request/response queues, auto-scaled app tier.

Unit tests of the scaling policy and the response router; bootstrap/destroy (and the EC2 pool) against
a real moto server; the local system (`facerec iaas run-local` machinery) with real photos: 100
requests 20 at a time, the workers scaling 0 -> 2 -> 0, one worker SIGKILLed while it holds a request.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import threading
import time
from pathlib import Path

import pytest
import requests
import typer
from typer.testing import CliRunner

from facerec_cli.config import Settings
from facerec_cli.deploy import DeployError, ListReporter, apply_plan
from facerec_cli.iaas.bootstrap import IaasClients, IaasOptions, plan_bootstrap, plan_teardown
from facerec_cli.iaas.messages import Response, queue_depth, queue_url
from facerec_cli.iaas.names import TAG_KEY, IaasNames
from facerec_cli.iaas.pools import Ec2Pool, find_app_instances
from facerec_cli.iaas.scaler import AutoScaler, ScalingPolicy
from facerec_cli.iaas.web import ResponseRouter
from facerec_cli.local.server import LocalCloud

PREFIX = "demo"


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


def test_bootstrap_is_idempotent_and_destroy_removes_everything(moto_cloud, tiny_gallery) -> None:
    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = IaasClients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    ec2, sqs, s3, iam = clients.ec2, clients.sqs, clients.s3, clients.iam
    n = IaasNames(PREFIX)
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    options = IaasOptions(gallery=tiny_gallery, ami=ami)

    # Without an AMI nothing can be launched: refused before anything changes.
    blocked = plan_bootstrap(settings, IaasOptions(), clients)
    assert any("--ami" in b for b in blocked.blockers)
    with pytest.raises(DeployError, match="--ami"):
        apply_plan(blocked)

    plan = plan_bootstrap(settings, options, clients)  # the dry run
    assert len(plan.changes) == 15 and not plan.blockers
    assert not sqs.list_queues().get("QueueUrls") and not s3.list_buckets()["Buckets"]

    reporter = ListReporter()
    apply_plan(plan, reporter)
    assert len(reporter.finished) == 15
    again = plan_bootstrap(settings, options, clients)
    assert again.empty and not again.warnings, again.render()

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
        ("s3:GetObject", f"arn:aws:s3:::{n.in_bucket}/*"),
        ("s3:PutObject", f"arn:aws:s3:::{n.out_bucket}/*"),
        ("s3:GetObject", f"arn:aws:s3:::{n.gallery_bucket}/gallery.pt"),
    }
    template_id = ec2.describe_launch_templates(LaunchTemplateNames=[n.launch_template])["LaunchTemplates"][0]["LaunchTemplateId"]
    assert _web_policy(iam) == _expected_web_policy(account, template_id)
    for profile, role in ((n.app_profile, n.app_role), (n.web_profile, n.web_role)):
        assert [r["RoleName"] for r in iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]] == [role]

    # EC2: security groups, the launch template, the web instance.
    groups = {g["GroupName"]: g for g in ec2.describe_security_groups()["SecurityGroups"]}
    web_rules = groups[n.web_security_group]["IpPermissions"]
    assert [(p["IpProtocol"], p["FromPort"], p["IpRanges"][0]["CidrIp"]) for p in web_rules] == [("tcp", 8000, "0.0.0.0/0")]
    assert groups[n.app_security_group]["IpPermissions"] == []
    data = ec2.describe_launch_template_versions(LaunchTemplateName=n.launch_template, Versions=["$Default"])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["ImageId"] == ami and data["InstanceType"] == "t3.medium"
    assert data["IamInstanceProfile"] == {"Name": n.app_profile} and data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["SecurityGroupIds"] == [groups[n.app_security_group]["GroupId"]]
    assert f"facerec worker --prefix {PREFIX} --region us-east-1 --gallery s3://{n.gallery_bucket}/gallery.pt" in base64.b64decode(data["UserData"]).decode()
    web = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert len(web) == 1 and web[0]["State"]["Name"] in ("pending", "running")
    assert {t["Key"]: t["Value"] for t in web[0]["Tags"]} == {"Name": "web-instance", TAG_KEY: PREFIX}
    user_data = ec2.describe_instance_attribute(InstanceId=web[0]["InstanceId"], Attribute="userData")["UserData"]["Value"]
    assert "facerec web --prefix demo --region us-east-1 --host 0.0.0.0 --port 8000" in base64.b64decode(user_data).decode()

    # A changed setting is one update: a new default version of the launch template.
    bigger = IaasOptions(ami=ami, instance_type="t3.large")
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
    assert _web_policy(iam) == _expected_web_policy(account, template_id)

    # A template made again has a new id: the policy follows it (read when the step runs).
    ec2.delete_launch_template(LaunchTemplateName=n.launch_template)
    remade = plan_bootstrap(settings, bigger, clients)
    assert [(s.action, s.resource) for s in remade.changes] == [
        ("create", f"ec2 launch-template {n.launch_template}"), ("update", f"iam role {n.web_role}"),
    ]
    apply_plan(remade)
    new_id = ec2.describe_launch_templates(LaunchTemplateNames=[n.launch_template])["LaunchTemplates"][0]["LaunchTemplateId"]
    assert new_id != template_id and _web_policy(iam) == _expected_web_policy(account, new_id)
    assert plan_bootstrap(settings, bigger, clients).empty

    # The auto-scaler's EC2 pool launches app-tier-instance-<n> from the template and stops the highest first.
    pool = Ec2Pool(ec2, n)
    pool.scale_to(3)
    running = find_app_instances(ec2, PREFIX, ("pending", "running"))
    assert sorted(i["Name"] for i in running) == ["app-tier-instance-1", "app-tier-instance-2", "app-tier-instance-3"]
    assert {i["InstanceType"] for i in running} == {"t3.large"} and pool.active() == 3
    pool.scale_to(1)
    assert [i["Name"] for i in find_app_instances(ec2, PREFIX, ("pending", "running"))] == ["app-tier-instance-1"]

    # Destroy: the dry run deletes nothing; then everything goes, instances first; a second finds nothing.
    teardown = plan_teardown(settings, clients)
    assert teardown.changes[0].resource == "ec2 instances app tier" and len(teardown.changes) == 15
    assert _exists(sqs.get_queue_url, QueueName=n.request_queue)
    apply_plan(teardown)
    assert plan_teardown(settings, clients).empty
    assert not sqs.list_queues().get("QueueUrls") and not s3.list_buckets()["Buckets"]
    assert not _exists(iam.get_role, RoleName=n.app_role) and not _exists(iam.get_instance_profile, InstanceProfileName=n.web_profile)
    assert not any(g["GroupName"].startswith(PREFIX) for g in ec2.describe_security_groups()["SecurityGroups"])
    assert not ec2.describe_launch_templates()["LaunchTemplates"]
    states = {i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert states == {"terminated"}


def _web_policy(iam) -> dict:
    return iam.get_role_policy(RoleName=IaasNames(PREFIX).web_role, PolicyName="facerec-least-privilege")["PolicyDocument"]


def _expected_web_policy(account: str, template_id: str) -> dict:
    """The web tier's whole policy, written out: RunInstances only through this deployment's launch
    template (its own AMI/security group/key) for tagged app-tier-instance-*; terminate only those."""
    n, ec2 = IaasNames(PREFIX), f"arn:aws:ec2:us-east-1:{account}"
    template = {"ec2:LaunchTemplate": f"{ec2}:launch-template/{template_id}"}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "SendRequests", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:SendMessage", "sqs:GetQueueAttributes"],
             "Resource": f"arn:aws:sqs:us-east-1:{account}:{n.request_queue}"},
            {"Sid": "TakeResponses", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
             "Resource": f"arn:aws:sqs:us-east-1:{account}:{n.response_queue}"},
            {"Sid": "StoreUploads", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{n.in_bucket}/*"},
            {"Sid": "SeeInstances", "Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"},
            {"Sid": "LaunchFromAppTemplateOnly", "Effect": "Allow", "Action": "ec2:RunInstances", "Resource": f"{ec2}:launch-template/{template_id}"},
            {"Sid": "LaunchNamedAppInstances", "Effect": "Allow", "Action": "ec2:RunInstances", "Resource": f"{ec2}:instance/*",
             "Condition": {"StringEquals": {f"aws:RequestTag/{TAG_KEY}": PREFIX, **template}, "StringLike": {"aws:RequestTag/Name": "app-tier-instance-*"}}},
            {"Sid": "LaunchTaggedVolumes", "Effect": "Allow", "Action": "ec2:RunInstances", "Resource": f"{ec2}:volume/*",
             "Condition": {"StringEquals": {f"aws:RequestTag/{TAG_KEY}": PREFIX, **template}}},
            {"Sid": "TemplateResourcesOnly", "Effect": "Allow", "Action": "ec2:RunInstances",
             "Resource": ["arn:aws:ec2:us-east-1::image/*", f"{ec2}:security-group/*", f"{ec2}:key-pair/*"],
             "Condition": {"StringEquals": {**template, "ec2:IsLaunchTemplateResource": "true"}}},
            {"Sid": "NetworkForTemplateLaunches", "Effect": "Allow", "Action": "ec2:RunInstances",
             "Resource": [f"{ec2}:subnet/*", f"{ec2}:network-interface/*"], "Condition": {"StringEquals": template}},
            {"Sid": "TagAtLaunch", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": [f"{ec2}:instance/*", f"{ec2}:volume/*"],
             "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}},
            {"Sid": "TerminateOwnAppInstances", "Effect": "Allow", "Action": "ec2:TerminateInstances", "Resource": f"{ec2}:instance/*",
             "Condition": {"StringEquals": {f"aws:ResourceTag/{TAG_KEY}": PREFIX}, "StringLike": {"aws:ResourceTag/Name": "app-tier-instance-*"}}},
            {"Sid": "PassAppRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": f"arn:aws:iam::{account}:role/{n.app_role}",
             "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
        ],
    }


def test_cli_bootstrap_dry_run_apply_rerun_and_destroy(moto_cloud, tiny_gallery) -> None:
    from facerec_cli.iaas.cli import register

    app = typer.Typer()
    app.command("noop")(lambda: None)
    register(app)
    ami = moto_cloud.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    common = ["--prefix", PREFIX, "--endpoint-url", moto_cloud.endpoint_url, "--region", "us-east-1"]
    runner = CliRunner()

    dry = runner.invoke(app, ["iaas", "bootstrap", *common, "--ami", ami, "--gallery", str(tiny_gallery), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "create sqs queue demo-req-queue" in dry.output and "Plan (deploy): 15 to create." in dry.output
    assert not moto_cloud.client("sqs").list_queues().get("QueueUrls")

    first = runner.invoke(app, ["iaas", "bootstrap", *common, "--ami", ami, "--gallery", str(tiny_gallery), "--yes"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["iaas", "bootstrap", *common, "--gallery", str(tiny_gallery)])  # the template keeps its AMI
    assert second.exit_code == 0 and "No changes: 15 resources up to date." in second.output, second.output

    refused = runner.invoke(app, ["iaas", "destroy", *common])  # no --yes, no terminal
    assert refused.exit_code == 1 and "--yes" in refused.output
    gone = runner.invoke(app, ["iaas", "destroy", *common, "--yes"])
    assert gone.exit_code == 0 and "Plan (destroy): 14 to delete." in gone.output, gone.output
    assert "Nothing to destroy." in runner.invoke(app, ["iaas", "destroy", *common, "--yes"]).output


def test_web_command_scales_ec2_app_instances_with_the_queue(moto_cloud, tiny_gallery) -> None:
    """`facerec web` against moto: a request with no app instance launches app-tier-instance-1 from the
    launch template; when the queue empties it is terminated; SIGTERM ends the server cleanly."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = IaasClients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    ami = clients.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    apply_plan(plan_bootstrap(settings, IaasOptions(gallery=tiny_gallery, ami=ami, with_web=False), clients))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = "import sys; from facerec_cli.main import app; from facerec_cli.iaas.cli import register; register(app); app()"
    command = [
        sys.executable, "-c", script, "web", "--prefix", PREFIX, "--endpoint-url", moto_cloud.endpoint_url, "--region", "us-east-1",
        "--port", str(port), "--timeout", "2", "--scale-interval", "0.3", "--scale-in-after", "1",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    web = subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"

    def app_instances() -> list[tuple[str, str]]:
        found = find_app_instances(clients.ec2, PREFIX, ("pending", "running", "shutting-down", "terminated"))
        return sorted((i["Name"], i["State"]) for i in found)

    def wait_for(predicate, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.2)
        return False

    try:
        assert wait_for(lambda: _get_ok(url + "healthz"), 60), "the web tier did not come up"
        r = requests.post(url, files={"inputFile": ("test_00.png", _png())}, timeout=30)
        assert r.status_code == 504  # no instance can answer on moto
        assert wait_for(lambda: app_instances() == [("app-tier-instance-1", "running")], 10), app_instances()
        assert requests.get(url + "healthz", timeout=10).json()["scaler"]["instances"] == 1
        sqs = clients.sqs
        sqs.purge_queue(QueueUrl=queue_url(sqs, IaasNames(PREFIX).request_queue))
        assert wait_for(lambda: app_instances() == [("app-tier-instance-1", "terminated")], 15), app_instances()
    finally:
        web.send_signal(signal.SIGTERM)
        output, _ = web.communicate(timeout=60)
    assert web.returncode == 0, output
    assert "launched app-tier-instance-1" in output and "terminating app-tier-instance-1" in output


def _get_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
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

    options = LocalOptions(max_instances=0, request_timeout_s=1.5, max_upload_bytes=100_000, poll_wait_s=1)
    with LocalIaas(tiny_gallery, options) as system:
        url = system.url
        # Local only: the listening socket is on the loopback interface, not 0.0.0.0.
        assert url.startswith("http://127.0.0.1:") and system.server.server.socket.getsockname()[0] == "127.0.0.1"
        health = requests.get(url + "healthz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"

        r = requests.post(url, files={"inputFile": ("notes.jpg", b"this is not an image")}, timeout=10)
        assert r.status_code == 415 and "not an image" in r.text
        r = requests.post(url, files={"image": ("a.png", _png())}, timeout=10)
        assert r.status_code == 400 and "inputFile" in r.text
        r = requests.post(url, files={"inputFile": ("a.png", b"")}, timeout=10)
        assert r.status_code == 400 and "empty" in r.text
        r = requests.post(url, files={"inputFile": ("big.png", b"\x89PNG" + b"\0" * 150_000)}, timeout=10)
        assert r.status_code == 413 and "100000 bytes" in r.text
        r = requests.post(url, files={"inputFile": ("huge.bmp", b"x" * 2_000_000)}, timeout=10)  # over the whole-body limit
        assert r.status_code == 413
        assert requests.get(url, timeout=10).status_code == 405

        # No app instance may run: the request waits for its timeout, then a clear 504.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            waiting = pool.submit(requests.post, url, files={"inputFile": ("same.png", _png(64))}, timeout=10)
            time.sleep(0.5)
            # Same name, other content, while the first is in flight: refused rather than mixed up.
            clash = requests.post(url, files={"inputFile": ("same.png", _png(32))}, timeout=10)
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

    from facerec_cli.iaas.cli import register
    from facerec_cli.iaas.messages import Request

    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = IaasClients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    apply_plan(plan_bootstrap(settings, IaasOptions(gallery=celeb_gallery[0], with_compute=False), clients))
    n = IaasNames(PREFIX)
    sqs, s3 = clients.sqs, clients.s3
    photo = sorted((data / "5celeb" / "val" / "madonna").iterdir())[0]
    etag = s3.put_object(Bucket=n.in_bucket, Key="test_00.jpg", Body=photo.read_bytes())["ETag"]
    request_url, response_url = queue_url(sqs, n.request_queue), queue_url(sqs, n.response_queue)
    sqs.send_message(QueueUrl=request_url, MessageBody="garbage")  # dropped with a log line
    sqs.send_message(QueueUrl=request_url, MessageBody=Request("r-1", "test_00.jpg", etag).to_body())

    app = typer.Typer()
    app.command("noop")(lambda: None)
    register(app)
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
    from facerec_cli.iaas.cli import register

    app = typer.Typer()
    app.command("noop")(lambda: None)
    register(app)
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
    clients = IaasClients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
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


# ------------------------------------------------------------------------------------------ /healthz cache


def test_healthz_reuses_queue_and_instance_counts_but_reports_the_router_live(moto_cloud) -> None:
    from facerec_cli.iaas.messages import Request
    from facerec_cli.iaas.web import WebConfig, WebTier

    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = IaasClients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    apply_plan(plan_bootstrap(settings, IaasOptions(with_compute=False), clients))
    n = IaasNames(PREFIX)
    health_calls: list[str] = []  # the calls /healthz makes (the router's ReceiveMessage etc. are not counted)

    def record(model, **kwargs) -> None:
        if model.name in ("GetQueueAttributes", "DescribeInstances"):
            health_calls.append(model.name)

    for client in (clients.sqs, clients.ec2):
        client.meta.events.register("before-call.*.*", record)
    scaler = AutoScaler(Ec2Pool(clients.ec2, n), lambda: 0, ScalingPolicy(max_instances=0))
    tier = WebTier(s3=clients.s3, sqs=clients.sqs, names=n, config=WebConfig(poll_wait_s=1), scaler=scaler)  # default: 2 s
    http = tier.app.test_client()
    try:
        first = http.get("/healthz")
        read_at = time.monotonic()  # (the cache's clock starts when the read is done)
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
        assert time.monotonic() - read_at < 2.0, "the burst outlasted the cache: this check proves nothing"
        assert sorted(health_calls) == one_read

        time.sleep(max(0.0, read_at + 2.1 - time.monotonic()))  # past health_cache_s: one fresh read
        fresh = http.get("/healthz").json
        assert fresh["queues"]["request"] == {"waiting": 1, "in_flight": 0}
        assert sorted(health_calls) == sorted(one_read * 2)
    finally:
        tier.stop()


# ------------------------------------------------------------------------------------------ CLI settings


def test_iaas_setting_precedence_is_flag_env_file_default(tmp_path: Path, monkeypatch) -> None:
    from facerec_cli.errors import UserError
    from facerec_cli.iaas.cli import setting

    monkeypatch.chdir(tmp_path)  # facerec.toml in the working directory is read first
    (tmp_path / "facerec.toml").write_text('[iaas]\nami = "ami-file"\nport = 9000\n')
    monkeypatch.setenv("FACEREC_AMI", "ami-env")
    monkeypatch.delenv("FACEREC_PORT", raising=False)
    monkeypatch.delenv("FACEREC_INSTANCE_TYPE", raising=False)

    assert setting("ami", "ami-flag") == "ami-flag"  # flag over everything
    assert setting("ami", None) == "ami-env"  # env over the file
    monkeypatch.setenv("FACEREC_AMI", "")  # set but empty: as if unset
    assert setting("ami", None) == "ami-file"
    assert setting("port", None, int) == 9000
    monkeypatch.setenv("FACEREC_PORT", "8100")
    assert setting("port", None, int) == 8100  # env values are cast
    assert setting("port", 0, int) == 0  # a falsy flag is still a flag
    assert setting("instance_type", None) == "t3.medium" and setting("max_instances", None, int) == 20  # defaults

    (tmp_path / "facerec.toml").write_text("[iaas\n")
    monkeypatch.setenv("FACEREC_AMI", "")
    with pytest.raises(UserError, match="not valid TOML"):
        setting("ami", None)
