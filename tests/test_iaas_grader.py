"""What the course's Project 1 (IaaS) grader checks beyond the code: the request queue's 1 KiB messages,
and the settings `--course-grader TERM` makes (max instances per term, a 420 s request timeout, scale-in
to 0 well inside the 10 s the grader sleeps before it counts running app instances). Against a real
moto server over HTTP, as tests/test_iaas.py."""

from __future__ import annotations

import base64
import json

import botocore.exceptions
import pytest
from typer.testing import CliRunner

from facerec_cli.config import Settings, load_iaas_settings
from facerec_cli.iaas.deployer import plan_bootstrap
from facerec_cli.config import CourseGrader, grader_settings
from facerec_cli.iaas.messages import REQUEST_MAX_BYTES, message_bytes, queue_url, request_bytes
from facerec_cli.iaas.names import IaasNames
from facerec_cli.iaas.scaler import AutoScaler, ScalingPolicy
from facerec_cli.iaas.stack import IaasOptions
from facerec_cli.infra.clients import Clients
from facerec_cli.infra.executor import apply_plan
from tests.test_iaas import CIDR, PREFIX, FakePool, _png, moto_cloud, tiny_gallery  # noqa: F401 - fixtures

# The longest names the web tier takes (255 UTF-8 bytes), each made of the characters JSON and UTF-8
# inflate most: 2-byte letters (\u00e9 in JSON: 3x), 4-byte emoji (a surrogate pair, 3x), quotes (2x).
WORST_NAMES = ("é" * 125 + "x.png", "\U0001F600" * 62 + "xyz.png", '"' * 251 + ".png", "a" * 251 + ".png")


def _web_user_data(moto_cloud) -> str:
    ec2 = moto_cloud.client("ec2")
    [web] = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"] if i["State"]["Name"] == "running"]
    data = ec2.describe_instance_attribute(InstanceId=web["InstanceId"], Attribute="userData")["UserData"]["Value"]
    return base64.b64decode(data).decode()


def test_course_grader_settings_reach_the_queues_the_group_and_the_web_instance(moto_cloud, tiny_gallery) -> None:
    from facerec_cli.cli.app import app

    ec2 = moto_cloud.client("ec2")
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    common = ["--prefix", PREFIX, "--endpoint-url", moto_cloud.endpoint_url, "--region", "us-east-1", "--allow-cidr", CIDR]
    runner = CliRunner()
    n = IaasNames(PREFIX)

    first = runner.invoke(app, ["iaas", "bootstrap", *common, "--ami", ami, "--gallery", str(tiny_gallery), "--course-grader", "fall2025", "--yes"])
    assert first.exit_code == 0, first.output
    sqs = moto_cloud.client("sqs")
    req = sqs.get_queue_attributes(QueueUrl=queue_url(sqs, n.request_queue), AttributeNames=["All"])["Attributes"]
    # What grade_project1_p2.py reads (-20 points unless 1024); a request is kept as long as its client waits.
    assert req["MaximumMessageSize"] == "1024" and req["MessageRetentionPeriod"] == "420"
    group = moto_cloud.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[n.autoscaling_group])["AutoScalingGroups"][0]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, 15, 0)
    # The web-instance's service runs the scaler with the grader's timings, the interval included.
    user_data = _web_user_data(moto_cloud)
    for flags in ("--timeout 420", "--max-instances 15", "--scale-in-after 3", "--scale-interval 1"):
        assert flags in user_data, (flags, user_data)

    # The seeds' term: at most 20; a flag given beside the grader still wins for its own setting.
    again = runner.invoke(app, ["iaas", "bootstrap", *common, "--gallery", str(tiny_gallery), "--course-grader", "2024", "--timeout", "300", "--dry-run"])
    assert again.exit_code == 0, again.output
    assert "update autoscaling group demo-app-tier: size 0-15 -> 0-20" in again.output, again.output
    assert "update sqs queue demo-req-queue: MessageRetentionPeriod 420 -> 300" in again.output
    # The web-instance's settings changed: bootstrap says so (its user data runs at first boot only).
    assert "web-instance" in again.output and "its user data differs" in again.output

    bad = runner.invoke(app, ["iaas", "bootstrap", *common, "--course-grader", "spring2019", "--dry-run"])
    assert bad.exit_code != 0 and "--course-grader" in bad.output and "fall2025" in bad.output


def test_course_grader_values_sit_below_flags_env_and_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("MAX_INSTANCES", "TIMEOUT", "SCALE_IN_AFTER", "SCALE_INTERVAL"):
        monkeypatch.delenv(f"FACEREC_{name}", raising=False)
    defaults = grader_settings(CourseGrader.fall2025)
    plain, graded = load_iaas_settings(), load_iaas_settings(defaults=defaults)
    assert (plain.max_instances, plain.timeout, plain.scale_in_after, plain.scale_interval) == (20, 60.0, 30.0, 5.0)
    assert (graded.max_instances, graded.timeout, graded.scale_in_after, graded.scale_interval) == (15, 420.0, 3.0, 1.0)
    assert grader_settings("2024")["max_instances"] == 20 and grader_settings(None) == {}
    (tmp_path / "facerec.toml").write_text("[iaas]\nscale_interval = 2.5\n")
    monkeypatch.setenv("FACEREC_TIMEOUT", "400")
    mixed = load_iaas_settings(defaults=defaults, max_instances=12)
    assert (mixed.max_instances, mixed.timeout, mixed.scale_interval, mixed.scale_in_after) == (12, 400.0, 2.5, 3.0)


@pytest.mark.parametrize("term", list(CourseGrader))
def test_course_grader_scaler_is_at_0_well_before_the_grader_counts(term) -> None:
    """The grader's workload ends with its last answer, sleeps 10 s, then counts running app instances
    (full points if 0 within 2 s). The scaler, ticking at the grader's interval on a simulated clock,
    lets the last instance go within scale_in_after + one interval of demand reaching 0, and peaks at
    exactly the term's maximum under the grader's 100 requests."""
    settings = grader_settings(term)
    policy = ScalingPolicy(settings["max_instances"], 1, settings["scale_in_after"], settings["scale_interval"])
    now, depth = [0.0], [0]
    pool = FakePool()
    scaler = AutoScaler(pool, lambda: depth[0], policy, clock=lambda: now[0])
    peak = 0
    for step in range(400):  # 100 requests, answered one per simulated 0.5 s from t = 60 s (cold starts)
        now[0] = step * policy.interval_s
        depth[0] = 100 if now[0] < 60 else max(0, 100 - int((now[0] - 60) * 2))
        peak = max(peak, scaler.tick().active)
        if depth[0] == 0:
            break
    last_answer = now[0]
    while pool.active():
        now[0] += policy.interval_s
        scaler.tick()
    assert peak == settings["max_instances"] and pool.calls[0] == settings["max_instances"]
    assert now[0] - last_answer <= settings["scale_in_after"] + policy.interval_s <= 5.0


def test_every_request_fits_the_request_queue_and_a_bigger_one_is_refused_clearly(moto_cloud, monkeypatch) -> None:
    from facerec_cli.iaas import web
    from facerec_cli.iaas.web import WebConfig, WebTier

    settings = Settings(prefix=PREFIX, region=moto_cloud.region, endpoint_url=moto_cloud.endpoint_url)
    clients = Clients.from_session(moto_cloud.session(), moto_cloud.endpoint_url)
    apply_plan(plan_bootstrap(settings, IaasOptions(with_compute=False), clients))
    n = IaasNames(PREFIX)
    sqs, s3 = clients.sqs, clients.s3
    req_url = queue_url(sqs, n.request_queue)

    # The queue really refuses a bigger message (so a request that did not fit would be lost).
    with pytest.raises(botocore.exceptions.ClientError, match="shorter than 1024 bytes"):
        sqs.send_message(QueueUrl=req_url, MessageBody="x" * 1025)

    # No app tier here: each request is queued, then its client gets the 504 (after 0.2 s).
    tier = WebTier(s3=s3, sqs=sqs, names=n, config=WebConfig(timeout_s=0.2, poll_wait_s=1, lock=False))
    for name in WORST_NAMES:
        assert len(name.encode()) == 255
        status, body = tier.submit(name, _png(), "image/png")
        assert status == 504, body
        [message] = sqs.receive_message(QueueUrl=req_url, MessageAttributeNames=["All"], WaitTimeSeconds=1)["Messages"]
        size = message_bytes(message["Body"], message["MessageAttributes"])
        assert size <= request_bytes(name) <= REQUEST_MAX_BYTES, (name, size)
        assert json.loads(message["Body"])["key"] == name
        sqs.delete_message(QueueUrl=req_url, ReceiptHandle=message["ReceiptHandle"])

    # A name whose request would not fit (not possible within the 255-byte name limit, so the limit is
    # lowered here to reach the check): a clear 400 before anything is stored or queued.
    monkeypatch.setattr(web, "REQUEST_MAX_BYTES", 400)
    status, body = tier.submit("b" * 251 + ".png", _png(), "image/png")
    assert status == 400 and "would not fit the request queue's 400-byte messages; use a shorter name" in body
    assert not s3.list_objects_v2(Bucket=n.in_bucket, Prefix="b").get("Contents")
    assert not sqs.receive_message(QueueUrl=req_url, WaitTimeSeconds=0).get("Messages")
