"""Deploy planner/executor against a real moto server over HTTP.

Every test gets its own prefix and its own region: function names are not prefixed (course
convention: `video-splitting`, `face-recognition`), so two deployments only coexist in one moto server
when they live in different regions (or when destroy tells them apart, see the last tests).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from facerec_cli.config import Settings
from facerec_cli.infra.clients import Clients
from facerec_cli.infra.errors import DeployError
from facerec_cli.infra.executor import ListReporter, apply_plan
from facerec_cli.pipeline.deployer import plan_deploy, plan_destroy
from facerec_cli.pipeline.stack import DeployOptions
from facerec_cli.infra import executor as plan_module
from facerec_cli.infra.plan import APICall, EmptyBucket
from facerec_cli.infra.resources.awslambda import FunctionSpec
from facerec_cli.pipeline.stack import pipeline_stack
from facerec_cli.errors import UserError

_REGIONS = itertools.cycle(
    ["us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2", "eu-central-1", "ap-southeast-1",
     "ap-southeast-2", "ap-northeast-1", "ca-central-1", "sa-east-1", "eu-north-1", "ap-south-1"]
)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setattr(plan_module, "_sleep", lambda seconds: None)


@pytest.fixture
def settings(request: pytest.FixtureRequest, moto_url: str, aws_env: None) -> Any:
    """A fresh prefix in a region of its own (us-east-1 only when asked for: indirect param)."""
    region = getattr(request, "param", None) or next(_REGIONS)
    return Settings(prefix=f"t{uuid.uuid4().hex[:10]}", region=region, endpoint_url=moto_url, stage1_expiry_days=3)


@pytest.fixture
def clients(settings: Settings) -> Any:
    """Clients for ``settings``; whatever the test deployed is destroyed afterwards (moto's state is
    global to the process, and other test modules run their own moto servers in it)."""
    clients = Clients.from_settings(settings)
    yield clients
    try:
        apply_plan(plan_destroy(settings, DeployOptions(with_ecr=True), clients))
    except Exception as exc:  # noqa: BLE001 - cleanup must not mask the test's own result
        logging.getLogger(__name__).warning("cleanup of %s failed: %s", settings.prefix, exc)


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    path = tmp_path / "gallery.pt"
    path.write_bytes(b"not really a torch file, but bytes are bytes" * 100)
    return path


def code(exc: BaseException) -> str:
    assert isinstance(exc, botocore.exceptions.ClientError), exc
    return exc.response["Error"]["Code"]


def absent(fn: Any, **kwargs: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        fn(**kwargs)
    return code(info.value)


def statements(clients: Clients, role: str, policy: str) -> list[dict[str, Any]]:
    return clients.iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]["Statement"]


# ------------------------------------------------------------------------------------------ bootstrap


def overlapping_rules(configs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Pairs of configurations S3 may refuse as overlapping: the same event type with prefixes one of which
    starts the other and suffixes one of which ends the other (no filter: the empty string, which overlaps
    everything). S3 does not document the comparison as case sensitive, so it is read case-insensitively:
    moto accepts overlaps S3 refuses, so the rule is checked here."""
    def key(config: dict[str, Any], name: str) -> str:
        rules = ((config.get("Filter") or {}).get("Key") or {}).get("FilterRules") or []
        return next((r["Value"].lower() for r in rules if r["Name"].lower() == name), "")

    found = []
    for i, a in enumerate(configs):
        for b in configs[i + 1:]:
            if not set(a["Events"]) & set(b["Events"]):
                continue
            pa, pb, sa, sb = key(a, "prefix"), key(b, "prefix"), key(a, "suffix"), key(b, "suffix")
            if (pa.startswith(pb) or pb.startswith(pa)) and (sa.endswith(sb) or sb.endswith(sa)):
                found.append((a.get("Id", ""), b.get("Id", "")))
    return found


def test_the_trigger_configuration_has_no_rules_s3_may_refuse_as_overlapping() -> None:
    from facerec_cli.infra.resources.s3 import NotificationSpec

    stack = pipeline_stack(Settings(prefix="overlap"), DeployOptions(), "123456789012")
    [spec] = [s for s in stack.specs if isinstance(s, NotificationSpec)]
    assert spec.configurations and overlapping_rules(list(spec.configurations)) == []
    # with no filter, every new object reaches video-splitting: a console "folder" is no upload to answer
    from lambdas.events import uploads
    from tests.aws_records import s3_put_event

    assert uploads(s3_put_event("us-east-1", "in", "clips/")) == []
    assert [u.video for u in uploads(s3_put_event("us-east-1", "in", "clips/CLIP+ONE.MP4"))] == ["CLIP ONE.MP4"]
    # the rule itself: suffixes differing only in case count as overlapping
    assert overlapping_rules([{"Id": "a", "Events": ["s3:ObjectCreated:*"], "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".mp4"}]}}},
                              {"Id": "b", "Events": ["s3:ObjectCreated:*"], "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".MP4"}]}}}]) == [("a", "b")]




def test_bootstrap_creates_every_resource_as_configured(settings: Settings, clients: Clients, gallery: Path) -> None:
    n, region, acct = settings.names, settings.region, clients.account_id
    options = DeployOptions(gallery=gallery, frames=5, splitting_env={"EXTRA": "1"})
    plan = plan_deploy(settings, options, clients)
    assert [s.action for s in plan.steps] == ["create"] * len(plan.steps)
    reporter = ListReporter()
    done = apply_plan(plan, reporter)
    assert len(done) == len(plan.steps) == 20
    assert [e for e, _, _ in reporter.events] == ["started", "finished"] * 20

    s3, iam, lam = clients.s3, clients.iam, clients.lambda_
    # -- buckets
    for bucket in n.buckets:
        enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert enc[0]["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
        assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
        }
        assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        location = s3.get_bucket_location(Bucket=bucket)["LocationConstraint"]
        assert (location or "us-east-1") == region
    rules = s3.get_bucket_lifecycle_configuration(Bucket=n.stage1_bucket)["Rules"]
    assert len(rules) == 1
    assert rules[0]["Status"] == "Enabled" and rules[0]["Expiration"] == {"Days": 3}
    assert rules[0]["Filter"] == {"Prefix": ""}
    for bucket in (n.input_bucket, n.output_bucket, n.details_bucket):
        assert absent(s3.get_bucket_lifecycle_configuration, Bucket=bucket) == "NoSuchLifecycleConfiguration"

    # -- failure queue
    url = clients.sqs.get_queue_url(QueueName=n.failure_queue)["QueueUrl"]
    attrs = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    queue_arn = f"arn:aws:sqs:{region}:{acct}:{n.failure_queue}"
    assert attrs["QueueArn"] == queue_arn
    assert attrs["SqsManagedSseEnabled"] == "true"

    # -- roles: trust and the exact least-privilege statements
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    split, rec, fail = n.splitting_function, n.recognition_function, n.failure_function
    split_arn = f"arn:aws:lambda:{region}:{acct}:function:{split}"
    rec_arn = f"arn:aws:lambda:{region}:{acct}:function:{rec}"
    fail_arn = f"arn:aws:lambda:{region}:{acct}:function:{fail}"

    def logs(function: str) -> dict[str, Any]:
        group = f"arn:aws:logs:{region}:{acct}:log-group:/aws/lambda/{function}"
        return {"Sid": "OwnLogGroup", "Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], "Resource": [group, f"{group}:*"]}

    gallery_arn = f"arn:aws:s3:::{n.details_bucket}/{n.gallery_key}"
    write = ["s3:PutObject", "s3:PutObjectTagging"]  # results carry their tag (retention); never on the gallery
    details, output = f"arn:aws:s3:::{n.details_bucket}", f"arn:aws:s3:::{n.output_bucket}"

    def results(details_keys: str) -> list[dict[str, Any]]:
        # <stem>.json in the details bucket, <stem>.txt (alone) in the output bucket; both read back for the exactly-once check.
        return [
            {"Sid": "WriteResults", "Effect": "Allow", "Action": write, "Resource": [f"{details}/{details_keys}", f"{output}/*.txt"]},
            {"Sid": "ProtectGallery", "Effect": "Deny", "Action": write, "Resource": gallery_arn},
            {"Sid": "CheckResults", "Effect": "Allow", "Action": "s3:GetObject", "Resource": [f"{details}/*.json", f"{output}/*.txt"]},
            {"Sid": "ListResults", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": [details, output]},
        ]

    expected = {
        split: [
            {"Sid": "ReadUploads", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{n.input_bucket}/*"},
            {"Sid": "WriteFrames", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{n.stage1_bucket}/*"},
            *results("*.json"),
            {"Sid": "DoneMarkers", "Effect": "Allow", "Action": ["s3:GetObject", *write], "Resource": f"{details}/.facerec/split/*"},
            {"Sid": "InvokeRecognition", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": rec_arn},
            logs(split),
            {"Sid": "ReportFailures", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": fail_arn},
        ],
        rec: [
            {"Sid": "ReadFrames", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{n.stage1_bucket}/*"},
            {"Sid": "ListFrames", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{n.stage1_bucket}"},
            {"Sid": "ReadGallery", "Effect": "Allow", "Action": "s3:GetObject", "Resource": gallery_arn},
            *results("*"),
            logs(rec),
            {"Sid": "ReportFailures", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": fail_arn},
            {"Sid": "ReadUploadsForTimelines", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{n.input_bucket}/*"},
            {"Sid": "WriteTimelineSegments", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{n.stage1_bucket}/.facerec/segments/*"},
        ],
        fail: [
            *results("*.json"),
            {"Sid": "FailSegments", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": f"arn:aws:s3:::{n.stage1_bucket}/.facerec/segments/*"},
            {"Sid": "ListSegments", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{n.stage1_bucket}"},
            logs(fail),
            {"Sid": "ForwardFailures", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:SendMessage"], "Resource": queue_arn},
        ],
    }
    for function, wanted in expected.items():
        role = n.role(function)
        assert iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"] == trust
        assert iam.list_role_policies(RoleName=role)["PolicyNames"] == ["facerec-least-privilege"]
        assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
        assert statements(clients, role, "facerec-least-privilege") == wanted

    # -- functions
    image = f"{acct}.dkr.ecr.{region}.amazonaws.com/{n.ecr_repository}:local"
    env = {
        split: {"STAGE1_BUCKET": n.stage1_bucket, "RECOGNITION_FUNCTION": rec, "OUTPUT_BUCKET": n.output_bucket, "DETAILS_BUCKET": n.details_bucket,
                "FACEREC_FRAMES": "5", "EXTRA": "1"},
        rec: {"OUTPUT_BUCKET": n.output_bucket, "DETAILS_BUCKET": n.details_bucket, "FACEREC_GALLERY": f"s3://{n.details_bucket}/{n.gallery_key}",
              "FACEREC_WEIGHTS": "casia-webface", "FACEREC_THREADS": "1"},
        fail: {"OUTPUT_BUCKET": n.output_bucket, "DETAILS_BUCKET": n.details_bucket, "FACEREC_FAILURE_QUEUE": n.failure_queue},
    }
    # The on-failure destination runs in the splitting image (same placeholder here), with its own handler.
    shape = {split: (1024, 120, "lambdas.video_splitting.handler"), rec: (1769, 300, "lambdas.face_recognition.handler"),
             fail: (256, 60, "lambdas.on_failure.handler")}
    for function, (memory, timeout, command) in shape.items():
        got = lam.get_function(FunctionName=function)
        config = got["Configuration"]
        assert config["PackageType"] == "Image"
        assert got["Code"]["ImageUri"] == image
        assert config["ImageConfigResponse"]["ImageConfig"]["Command"] == [command]
        assert (config["MemorySize"], config["Timeout"]) == (memory, timeout)
        assert config["Environment"]["Variables"] == env[function]
        assert config["Architectures"] == ["x86_64"]
        assert config["Role"] == f"arn:aws:iam::{acct}:role/{n.role(function)}"
        eic = lam.get_function_event_invoke_config(FunctionName=function)
        assert eic["MaximumRetryAttempts"] == 2
        assert eic["MaximumEventAgeInSeconds"] == 3600
        # A failed or expired invocation goes to the on-failure function, which answers for it; its own to the queue.
        assert eic["DestinationConfig"]["OnFailure"]["Destination"] == (queue_arn if function == fail else fail_arn)
        group = clients.logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{function}")["logGroups"]
        assert [(g["logGroupName"], g.get("retentionInDays")) for g in group] == [(f"/aws/lambda/{function}", 14)]

    # -- S3 may invoke splitting, only for the input bucket of this account
    policy = json.loads(lam.get_policy(FunctionName=split)["Policy"])
    (statement,) = policy["Statement"]
    assert statement["Sid"] == "facerec-s3-invoke"
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"] == {"ArnLike": {"AWS:SourceArn": f"arn:aws:s3:::{n.input_bucket}"}, "StringEquals": {"AWS:SourceAccount": acct}}
    assert absent(lam.get_policy, FunctionName=rec) == "ResourceNotFoundException"

    # -- notification: every upload, whatever the case of its suffix, in a configuration S3 accepts
    configs = s3.get_bucket_notification_configuration(Bucket=n.input_bucket)["LambdaFunctionConfigurations"]
    assert [(c["LambdaFunctionArn"], c["Events"]) for c in configs] == [(split_arn, ["s3:ObjectCreated:*"])]
    assert not overlapping_rules(configs)

    # -- gallery
    body = s3.get_object(Bucket=n.details_bucket, Key=n.gallery_key)["Body"].read()
    assert body == gallery.read_bytes()

    # -- ECR only when asked for (bootstrap without --skip-images): then scanned on push
    assert absent(clients.ecr.describe_repositories, repositoryNames=[n.ecr_repository]) == "RepositoryNotFoundException"
    with_ecr = plan_deploy(settings, dataclasses.replace(options, with_ecr=True), clients)
    assert [(s.action, s.resource) for s in with_ecr.changes] == [("create", f"ecr repository {n.ecr_repository}")]
    apply_plan(with_ecr)
    [repo] = clients.ecr.describe_repositories(repositoryNames=[n.ecr_repository])["repositories"]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["imageTagMutability"] == "MUTABLE"
    assert repo["repositoryUri"] == f"{acct}.dkr.ecr.{region}.amazonaws.com/{n.ecr_repository}"

    # -- idempotent: a second plan changes nothing
    again = plan_deploy(settings, options, clients)
    assert again.changes == [], again.render()
    assert again.summary() == "No changes: 20 resources up to date."


def test_dry_run_changes_nothing(settings: Settings, clients: Clients, gallery: Path) -> None:
    n = settings.names
    plan = plan_deploy(settings, DeployOptions(gallery=gallery, with_ecr=True), clients)
    text = plan.render()
    assert f"+ create s3 bucket {n.input_bucket}" in text
    assert "+ create ecr repository" in text
    assert text.endswith("Plan (deploy): 21 to create.")
    # read back: nothing exists
    owned = {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}
    assert not owned & set(n.buckets)
    for function in (n.splitting_function, n.recognition_function):
        assert absent(clients.iam.get_role, RoleName=n.role(function)) == "NoSuchEntity"
        assert absent(clients.lambda_.get_function, FunctionName=function) == "ResourceNotFoundException"
    assert absent(clients.sqs.get_queue_url, QueueName=n.failure_queue) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
    assert absent(clients.ecr.describe_repositories, repositoryNames=[n.ecr_repository]) == "RepositoryNotFoundException"
    assert clients.logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"] == []
    # and the plan is the same when asked again
    assert plan_deploy(settings, DeployOptions(gallery=gallery, with_ecr=True), clients).render() == text


def test_no_gallery_is_a_warning(settings: Settings, clients: Clients) -> None:
    plan = plan_deploy(settings, DeployOptions(), clients)
    assert any("no gallery" in w for w in plan.warnings)
    assert "! no gallery" in plan.render()


def test_reserved_environment_names_are_refused(aws_env: None) -> None:
    settings = Settings(prefix="reserved-env")
    with pytest.raises(UserError, match="AWS_REGION .* reserved"):
        pipeline_stack(settings, DeployOptions(recognition_env={"AWS_REGION": "x"}), "123456789012")
    stack = pipeline_stack(settings, DeployOptions(recognition_env={"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}), "123456789012")
    [recognition] = [s for s in stack.specs if isinstance(s, FunctionSpec) and s.name == settings.names.recognition_function]
    assert recognition.environment["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"


def _writes_made(clients: Clients, services: tuple[str, ...], run: Any) -> list[tuple[str, str]]:
    """(service, operation) of every call ``run()`` makes through ``clients`` that is not a read."""
    seen: list[tuple[str, str]] = []
    reads = ("Get", "Describe", "List", "Head")

    def record(model: Any, **_: Any) -> None:
        if not model.name.startswith(reads):
            seen.append((model.service_model.service_name, model.name))

    for service in services:
        clients.client(service).meta.events.register("before-call", record)
    run()
    return seen


def test_the_dry_run_shows_the_calls_apply_makes(settings: Settings, clients: Clients, gallery: Path) -> None:
    """A plan is data: every step lists its API calls with their parameters, the dry run prints them,
    and applying makes exactly those calls (read-only calls of waiters aside), in that order."""
    n = settings.names
    plan = plan_deploy(settings, DeployOptions(gallery=gallery, with_ecr=True), clients)
    text = plan.render(show_calls=True)
    assert f"    s3.create_bucket(Bucket='{n.input_bucket}'" in text
    assert f"    lambda.create_function(FunctionName='{n.recognition_function}'" in text
    assert "PolicyDocument=<JSON document" in text, text  # long values summarised
    assert f"Body=<{gallery.stat().st_size:,} bytes>" in text, text
    planned = [
        (clients.client(call.service).meta.service_model.service_name, clients.client(call.service).meta.method_to_api_mapping[call.method])
        for step in plan.changes for call in step.calls if isinstance(call, APICall)
    ]
    services = ("s3", "sqs", "logs", "ecr", "iam", "lambda")
    assert _writes_made(clients, services, lambda: apply_plan(plan)) == planned
    assert plan_deploy(settings, DeployOptions(gallery=gallery, with_ecr=True), clients).empty

    teardown = plan_destroy(settings, DeployOptions(with_ecr=True), clients)
    assert teardown.steps[0].resource == f"s3 notification {n.input_bucket}" and teardown.steps[-1].resource == f"ecr repository {n.ecr_repository}"
    deletes = [call for step in teardown.changes for call in step.calls]
    assert any(isinstance(call, EmptyBucket) for call in deletes)  # shown as such in the dry run
    assert "s3.list_object_versions/delete_objects/abort_multipart_upload" in teardown.render(show_calls=True)


# ------------------------------------------------------------------------------------------ updates


def test_drift_is_planned_as_updates_and_repaired(settings: Settings, clients: Clients, gallery: Path) -> None:
    n = settings.names
    options = DeployOptions(gallery=gallery)
    apply_plan(plan_deploy(settings, options, clients))
    s3, iam, lam = clients.s3, clients.iam, clients.lambda_
    split, rec = n.splitting_function, n.recognition_function
    # drift everywhere
    s3.delete_bucket_encryption(Bucket=n.output_bucket)
    s3.delete_public_access_block(Bucket=n.input_bucket)
    s3.delete_bucket_lifecycle(Bucket=n.stage1_bucket)
    iam.put_role_policy(RoleName=n.role(rec), PolicyName="extra", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    lam.update_function_configuration(FunctionName=split, MemorySize=512, Environment={"Variables": {"STAGE1_BUCKET": "elsewhere"}})
    lam.delete_function_event_invoke_config(FunctionName=rec)
    # moto 5.2 appends on put and keeps returning the first config: delete first to change it
    lam.delete_function_event_invoke_config(FunctionName=split)
    lam.put_function_event_invoke_config(FunctionName=split, MaximumRetryAttempts=0)
    lam.remove_permission(FunctionName=split, StatementId="facerec-s3-invoke")
    s3.put_bucket_notification_configuration(Bucket=n.input_bucket, NotificationConfiguration={})
    gallery.write_bytes(b"a newer gallery")

    plan = plan_deploy(settings, options, clients)
    changes = {s.resource: s for s in plan.changes}
    assert set(changes) == {
        f"s3 bucket {n.input_bucket}", f"s3 bucket {n.stage1_bucket}", f"s3 bucket {n.output_bucket}",
        f"iam role {n.role(rec)}", f"lambda function {split}",
        f"lambda event-invoke-config {rec}", f"lambda event-invoke-config {split}",
        f"lambda permission {split}/facerec-s3-invoke", f"s3 notification {n.input_bucket}",
        f"s3 object s3://{n.details_bucket}/{n.gallery_key}",
    }, plan.render()
    assert changes[f"lambda function {split}"].action == "update"
    assert "MemorySize 512 -> 1024" in changes[f"lambda function {split}"].detail
    assert "remove inline policy extra" in changes[f"iam role {n.role(rec)}"].detail
    assert changes[f"lambda event-invoke-config {rec}"].action == "create"
    assert changes[f"lambda event-invoke-config {split}"].action == "update"
    assert changes[f"s3 object s3://{n.details_bucket}/{n.gallery_key}"].action == "update"
    apply_plan(plan)

    assert plan_deploy(settings, options, clients).changes == []
    assert iam.list_role_policies(RoleName=n.role(rec))["PolicyNames"] == ["facerec-least-privilege"]
    assert lam.get_function_configuration(FunctionName=split)["MemorySize"] == 1024
    assert lam.get_function_event_invoke_config(FunctionName=split)["MaximumRetryAttempts"] == 2
    assert s3.get_object(Bucket=n.details_bucket, Key=n.gallery_key)["Body"].read() == b"a newer gallery"


def test_images_and_sizes_from_options(settings: Settings, clients: Clients) -> None:
    n = settings.names
    split_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:split-1"
    rec_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:rec-1"
    options = DeployOptions(splitting_image=split_image, recognition_image=rec_image, recognition_memory=4096, recognition_timeout=600)
    apply_plan(plan_deploy(settings, options, clients))
    got = clients.lambda_.get_function(FunctionName=n.recognition_function)
    assert got["Code"]["ImageUri"] == rec_image
    assert (got["Configuration"]["MemorySize"], got["Configuration"]["Timeout"]) == (4096, 600)
    # a new image is an update of the code; no image (run-local style) keeps what is there
    newer = DeployOptions(splitting_image=split_image.replace("split-1", "split-2"), recognition_image=rec_image, recognition_memory=4096, recognition_timeout=600)
    plan = plan_deploy(settings, newer, clients)
    # the on-failure destination runs in the splitting image: it moves with it
    assert [(s.action, s.resource) for s in plan.changes] == [("update", f"lambda function {n.failure_function}"), ("update", f"lambda function {n.splitting_function}")]
    assert all("split-1 -> " in step.detail for step in plan.changes)
    apply_plan(plan)
    assert clients.lambda_.get_function(FunctionName=n.splitting_function)["Code"]["ImageUri"].endswith(":split-2")
    keep = DeployOptions(recognition_memory=4096, recognition_timeout=600)
    assert [s for s in plan_deploy(settings, keep, clients).changes if s.resource.startswith("lambda function")] == []


def test_create_function_retries_while_iam_propagates(settings: Settings, clients: Clients, monkeypatch: pytest.MonkeyPatch) -> None:
    # Real AWS refuses a role for a few seconds after it was created; moto never does, so the
    # refusal is injected. The retry must swallow it and the function must exist afterwards.
    real = clients.lambda_.create_function
    refusals = []

    def flaky(**kwargs: Any) -> Any:
        if len(refusals) < 2:
            refusals.append(kwargs["FunctionName"])
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "InvalidParameterValueException", "Message": "The role defined for the function cannot be assumed by Lambda."}},
                "CreateFunction",
            )
        return real(**kwargs)

    monkeypatch.setattr(clients.lambda_, "create_function", flaky)
    apply_plan(plan_deploy(settings, DeployOptions(), clients))
    assert len(refusals) == 2
    assert clients.lambda_.get_function(FunctionName=settings.names.recognition_function)["Configuration"]["State"] == "Active"


def test_iam_propagation_is_waited_for_about_90_seconds_and_shown(settings: Settings, clients: Clients, monkeypatch: pytest.MonkeyPatch) -> None:
    # A new role can take over a minute to reach Lambda on real AWS (moto accepts it at once): the refusal
    # is injected until a fake clock passes 75 s. The old budget (~45 s) gave up; the wait is reported.
    clock: list[float] = []
    monkeypatch.setattr(plan_module, "_sleep", clock.append)
    real = clients.lambda_.create_function

    def slow_iam(**kwargs: Any) -> Any:
        if sum(clock) < 75:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "InvalidParameterValueException", "Message": "The role defined for the function cannot be assumed by Lambda."}},
                "CreateFunction",
            )
        return real(**kwargs)

    monkeypatch.setattr(clients.lambda_, "create_function", slow_iam)
    reporter = ListReporter()
    apply_plan(plan_deploy(settings, DeployOptions(), clients), reporter)
    assert clients.lambda_.get_function(FunctionName=settings.names.recognition_function)["Configuration"]["State"] == "Active"
    assert 75 <= sum(clock) <= 100
    assert plan_module.RETRY_POLICIES["iam-propagation"].budget >= 85
    first = f"lambda function {settings.names.failure_function}"  # the first function created: the on-failure destination
    assert [resource for resource, _ in reporter.waits] == [first] * len(clock)
    assert "waiting for IAM to propagate the role (InvalidParameterValueException; retry in 1 s, 0 of up to 95 s waited)" == reporter.waits[0][1]


def test_the_repository_policy_lets_lambda_pull_and_is_planned_idempotently(settings: Settings, clients: Clients) -> None:
    n, account = settings.names, clients.account_id
    options = DeployOptions(with_ecr=True)
    dry = plan_deploy(settings, options, clients)
    step = next(s for s in dry.steps if s.resource == f"ecr repository {n.ecr_repository}")
    assert "lambda.amazonaws.com may ecr:BatchGetImage, ecr:GetDownloadUrlForLayer" in step.detail  # shown in the dry run
    assert [c.method for c in step.calls if isinstance(c, APICall)] == ["create_repository", "set_repository_policy"]
    apply_plan(dry)
    [statement] = json.loads(clients.ecr.get_repository_policy(repositoryName=n.ecr_repository)["policyText"])["Statement"]
    assert statement["Effect"] == "Allow" and statement["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert sorted(statement["Action"]) == ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    assert statement["Condition"] == {"StringLike": {"aws:sourceArn": f"arn:aws:lambda:{settings.region}:{account}:function:*"}}
    assert plan_deploy(settings, options, clients).changes == []  # idempotent
    clients.ecr.delete_repository_policy(repositoryName=n.ecr_repository)  # drift: repaired
    [change] = plan_deploy(settings, options, clients).changes
    assert change.resource == f"ecr repository {n.ecr_repository}" and change.detail == "no repository policy"
    apply_plan(plan_deploy(settings, options, clients))
    assert plan_deploy(settings, options, clients).changes == []


def test_tmp_holds_the_largest_video_allowed(settings: Settings, clients: Clients) -> None:
    # Lambda's /tmp is 512 MB unless EphemeralStorage says more; a 2 GB upload allowed by FACEREC_MAX_BYTES
    # would fill it. moto stores the setting as given (it does not run the image), so it is read back.
    n = settings.names
    big = DeployOptions(max_bytes=2 * 1024**3)
    apply_plan(plan_deploy(settings, big, clients))
    sizes = {f: clients.lambda_.get_function_configuration(FunctionName=f)["EphemeralStorage"]["Size"] for f in n.functions}
    assert sizes == {n.splitting_function: 2048 + 256, n.recognition_function: 2048 + 256, n.failure_function: 512}
    assert plan_deploy(settings, big, clients).changes == []
    [change] = [c for c in plan_deploy(settings, DeployOptions(), clients).changes if c.resource == f"lambda function {n.splitting_function}"]
    assert "/tmp 2304 -> 512 MB" in change.detail  # the default 200 MB limit: Lambda's free 512 MB
    with pytest.raises(UserError, match=r"FACEREC_MAX_BYTES=10737418240 does not fit in Lambda's /tmp: at most 10468982784 bytes"):
        pipeline_stack(settings, DeployOptions(max_bytes=10 * 1024**3), "123456789012")


def test_an_ecr_access_error_is_reported_at_once_with_its_fix(settings: Settings, clients: Clients, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lambda refuses an image whose repository policy does not let it pull; moto never checks, so the
    # refusal (the message AWS gives) is injected. It is not IAM propagation: no 95 s of retries.
    clock: list[float] = []
    monkeypatch.setattr(plan_module, "_sleep", clock.append)

    def refused(**kwargs: Any) -> Any:
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "InvalidParameterValueException", "Message": "Lambda does not have permission to access the ECR image. Check the ECR permissions."}},
            "CreateFunction",
        )

    monkeypatch.setattr(clients.lambda_, "create_function", refused)
    with pytest.raises(DeployError) as info:
        apply_plan(plan_deploy(settings, DeployOptions(), clients))
    assert clock == []
    assert "Lambda cannot read the function's image from ECR" in str(info.value)
    assert "ecr:BatchGetImage" in str(info.value.hint) and "run `facerec bootstrap` again" in str(info.value.hint)
    role_refusal = botocore.exceptions.ClientError(
        {"Error": {"Code": "InvalidParameterValueException", "Message": "The role defined for the function cannot be assumed by Lambda."}}, "CreateFunction")
    assert plan_module.RETRY_POLICIES["iam-propagation"].when(role_refusal)  # that one is still waited for


def _sqs_refusal(status: int, query_error: str, type_: str, message: str) -> Any:
    """An SQS JSON-protocol error response as AWS sends it (x-amzn-query-error carries the legacy code),
    parsed by botocore's own parser."""
    from botocore.awsrequest import AWSResponse

    class Raw:
        def stream(self, **_: Any) -> Any:
            yield json.dumps({"__type": type_, "message": message}).encode()

    headers = {"x-amzn-query-error": query_error, "Content-Type": "application/x-amz-json-1.0"}
    return AWSResponse("https://sqs", status, headers, Raw())


def test_queue_recreated_right_after_destroy_waits_for_sqs(settings: Settings, clients: Clients, monkeypatch: pytest.MonkeyPatch) -> None:
    # SQS refuses a deleted queue's name for 60 s (QueueDeletedRecently); moto never does, so the real
    # response (status, header and body of the JSON protocol) is injected before it is sent.
    apply_plan(plan_deploy(settings, DeployOptions(), clients))
    apply_plan(plan_destroy(settings, DeployOptions(), clients))
    clock: list[float] = []
    monkeypatch.setattr(plan_module, "_sleep", clock.append)

    def deleted_recently(request: Any, **_: Any) -> Any:
        if sum(clock) < 60:
            return _sqs_refusal(400, "AWS.SimpleQueueService.QueueDeletedRecently;Client", "com.amazonaws.sqs#QueueDeletedRecently",
                                "You must wait 60 seconds after deleting a queue before you can create another with the same name.")
        return None

    clients.sqs.meta.events.register("before-send.sqs.CreateQueue", deleted_recently)
    reporter = ListReporter()
    apply_plan(plan_deploy(settings, DeployOptions(), clients), reporter)
    assert clients.sqs.get_queue_url(QueueName=settings.names.failure_queue)["QueueUrl"]
    assert 60 <= sum(clock) <= 75
    queue = f"sqs queue {settings.names.failure_queue}"
    assert {resource for resource, _ in reporter.waits} == {queue}
    assert "SQS refuses a queue name for 60 s after its queue was deleted: waiting (AWS.SimpleQueueService.QueueDeletedRecently; retry in 5 s" in reporter.waits[0][1]


def test_the_on_failure_function_answers_for_failed_and_expired_invocations(settings: Settings, clients: Clients, moto_url: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """On AWS nothing but the on-failure destination hears of an invocation that timed out, ran out of
    memory or expired unrun: its handler (run here in process, with the function's environment, against
    moto; run-local runs it under IAM enforcement in tests/test_pipeline.py) writes the error result, fails
    a timeline segment, and forwards the record to the queue. The records are the shapes Lambda sends."""
    from lambdas import on_failure, segments
    from lambdas.events import RecognitionRequest
    from lambdas.storage import _client

    n, region, acct = settings.names, settings.region, clients.account_id
    apply_plan(plan_deploy(settings, DeployOptions(), clients))
    variables = clients.lambda_.get_function_configuration(FunctionName=n.failure_function)["Environment"]["Variables"]
    for name, value in {**variables, "AWS_ENDPOINT_URL": moto_url, "AWS_REGION": region, "AWS_DEFAULT_REGION": region}.items():
        monkeypatch.setenv(name, value)
    _client.cache_clear()
    arn = f"arn:aws:lambda:{region}:{acct}:function:{{}}:$LATEST"
    upload = {"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "2026-01-01T00:00:00.000Z",
                           "s3": {"bucket": {"name": n.input_bucket}, "object": {"key": "clips/throttled.mp4", "eTag": "e1", "size": 10}}}]}  # fmt: skip
    request = RecognitionRequest(n.stage1_bucket, "timed-out", "timed-out.mp4", [], {"event_id": "e2:1"}).to_dict()
    segment = segments.SegmentRequest(n.stage1_bucket, "long", "long.mp4", {"event_id": "e3:1"}, 1, 4, 30.0, 60.0, 2.0, 120.0).to_dict()
    records = [
        on_failure.failure_record(arn.format(n.splitting_function), "r1", upload, "", 0, condition="EventAgeExceeded"),
        on_failure.failure_record(arn.format(n.recognition_function), "r2", request, "Task timed out after 300.00 seconds", 3),
        on_failure.failure_record(arn.format(n.recognition_function), "r3", segment, "Runtime exited with error: signal: killed", 3),
    ]
    outcomes = [on_failure.handler(record, None)["outcome"] for record in records]
    assert outcomes == [["error result written"]] * 2 + [["error result written"]], outcomes

    def result(stem: str) -> dict[str, Any]:
        return json.loads(clients.s3.get_object(Bucket=n.details_bucket, Key=f"{stem}.json")["Body"].read())

    throttled, timed_out, long = result("clips/throttled"), result("timed-out"), result("long")
    assert throttled["status"] == "error" and throttled["video"] == "throttled.mp4"
    assert throttled["error"].startswith("video-splitting never ran it: the event waited longer than the maximum event age"), throttled
    assert timed_out["error"] == "face-recognition failed on every attempt: Task timed out after 300.00 seconds"
    assert "segment 2 of 4 (30-60 s)" in long["error"] and "signal: killed" in long["error"], long
    assert clients.s3.get_object(Bucket=n.output_bucket, Key="timed-out.txt")["Body"].read() == b"error"
    tags = clients.s3.get_object_tagging(Bucket=n.details_bucket, Key="timed-out.json")["TagSet"]
    assert tags == [{"Key": "facerec:kind", "Value": "result"}]  # expires with the results (--retain-days)
    # A result that is already there stands (a late duplicate of the failure, or one written before it)
    assert on_failure.handler(records[1], None)["outcome"] == ["result already written"]
    assert result("timed-out") == timed_out
    url = clients.sqs.get_queue_url(QueueName=n.failure_queue)["QueueUrl"]
    bodies = [json.loads(m["Body"]) for m in clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]]
    assert sorted(b["requestContext"]["requestId"] for b in bodies) == ["r1", "r2", "r2", "r3"]
    _client.cache_clear()


# ------------------------------------------------------------------------------------------ failures


def test_bucket_name_owned_by_another_account_stops_with_deploy_error(settings: Settings, clients: Clients, moto_url: str) -> None:
    n = settings.names
    # moto maps credentials from sts:AssumeRole into the role's account: a real second account.
    creds = clients.sts.assume_role(RoleArn="arn:aws:iam::111111111111:role/other", RoleSessionName="other-account")["Credentials"]
    other = boto3.client(
        "s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"],
    )
    other.create_bucket(Bucket=n.stage1_bucket)

    plan = plan_deploy(settings, DeployOptions(), clients)
    assert plan.blockers == [f"bucket name {n.stage1_bucket} is taken by another AWS account (choose another --prefix)"]
    assert f"!! bucket name {n.stage1_bucket} is taken" in plan.render()
    # the planner saw it coming: applying is refused before anything is created ...
    with pytest.raises(DeployError, match="nothing was changed: bucket name .*choose another --prefix"):
        apply_plan(plan)
    assert n.input_bucket not in {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}
    # ... and forced through, the executor stops at the failing step and names what it created
    reporter = ListReporter()
    plan.blockers = []
    with pytest.raises(DeployError) as info:
        apply_plan(plan, reporter)
    err = info.value
    assert [s.resource for s in err.completed] == [f"s3 bucket {n.input_bucket}"]
    assert err.failed is not None and err.failed.resource == f"s3 bucket {n.stage1_bucket}"
    text = str(err)
    assert "already taken by another AWS account" in text
    assert "choose another --prefix" in text
    assert f"created s3 bucket {n.input_bucket}" in text
    assert reporter.events[-1] == ("failed", "create", f"s3 bucket {n.stage1_bucket}")
    # it stopped: nothing after the failed step exists
    assert absent(clients.sqs.get_queue_url, QueueName=n.failure_queue) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
    # and the other account's bucket was not touched by a later destroy
    apply_plan(plan_destroy(settings, DeployOptions(), clients))
    assert other.head_bucket(Bucket=n.stage1_bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert plan_destroy(settings, DeployOptions(), clients).changes == []
    other.delete_bucket(Bucket=n.stage1_bucket)


def test_a_bucket_of_this_prefix_in_another_region_is_refused_not_adopted(settings: Settings, clients: Clients, moto_url: str) -> None:
    # The same account owns <prefix>-output in another region (a deployment there, or a bucket of its own):
    # the plan must not adopt it, and a destroy in this region must not delete it. moto keeps each bucket's
    # region, so no stand-in is needed.
    n = settings.names
    elsewhere = "ap-northeast-2" if settings.region != "ap-northeast-2" else "eu-west-3"
    there = boto3.client("s3", endpoint_url=moto_url, region_name=elsewhere)
    there.create_bucket(Bucket=n.output_bucket, CreateBucketConfiguration={"LocationConstraint": elsewhere})
    there.put_object(Bucket=n.output_bucket, Key="theirs.json", Body=b"{}")
    try:
        plan = plan_deploy(settings, DeployOptions(), clients)
        wanted = f"bucket {n.output_bucket} already exists in region {elsewhere}, not {settings.region} (use --region {elsewhere}, or choose another --prefix)"
        assert plan.blockers == [wanted]
        with pytest.raises(DeployError, match="nothing was changed: bucket .* already exists in region"):
            apply_plan(plan)
        assert n.input_bucket not in {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}
        destroy = plan_destroy(settings, DeployOptions(), clients)
        assert [s.resource for s in destroy.changes] == []
        assert destroy.warnings == [f"bucket {n.output_bucket} is in region {elsewhere}, not {settings.region}: left alone (destroy with --region {elsewhere})"]
        apply_plan(destroy)
        assert there.get_object(Bucket=n.output_bucket, Key="theirs.json")["Body"].read() == b"{}"
    finally:
        there.delete_object(Bucket=n.output_bucket, Key="theirs.json")
        there.delete_bucket(Bucket=n.output_bucket)


@pytest.mark.parametrize("prefix", ["xn--abc", "sthree-abc", "amzn-s3-demo-abc"])
def test_prefixes_making_reserved_bucket_names_are_refused(prefix: str) -> None:
    # S3 refuses these names at CreateBucket; moto accepts them, so the refusal must come before any call.
    with pytest.raises(UserError, match=f"invalid prefix '{prefix}': S3 reserves bucket names that start with"):
        Settings(prefix=prefix)


def test_every_derived_name_fits_aws_limits_and_a_longer_prefix_is_refused_in_one_line() -> None:
    """A 28-character prefix once made the on-failure role `<prefix>-<prefix>-on-failure-role` (73
    characters; IAM allows 64) and CreateRole failed half-way through a bootstrap. moto accepts any
    length, so the limits are checked against AWS's documented ones (NAME_LIMITS) for every name."""
    from facerec_cli.iaas.names import IaasNames
    from facerec_cli.infra.naming import NAME_LIMITS

    n = Settings(prefix="a" * 28).names
    assert n.role(n.failure_function) == "a" * 28 + "-on-failure-role"  # the prefix once, not twice
    with pytest.raises(UserError) as info:
        Settings(prefix="p" * 60)
    message = str(info.value.args[0])
    longest = int(message.split("at most ")[1].split()[0])
    assert message.startswith(f"prefix '{'p' * 60}' is too long: at most {longest} characters (the ") and "\n" not in message
    for prefix in ("abc", "b" * longest):
        names = [*Settings(prefix=prefix).names.all(), *IaasNames(prefix).all()]
        assert {kind for kind, _ in names} == set(NAME_LIMITS)  # every kind of name is checked
        for kind, name in names:
            low, high = NAME_LIMITS[kind]
            assert low <= len(name) <= high, (kind, name)
    assert any(len(name) == NAME_LIMITS[kind][1] for kind, name in Settings(prefix="b" * longest).names.all())  # the maximum is tight
    with pytest.raises(UserError, match=f"at most {longest} characters"):
        Settings(prefix="b" * (longest + 1))


def test_destroy_removes_the_on_failure_role_of_the_old_name(settings: Settings, clients: Clients) -> None:
    # Earlier versions named the on-failure role <prefix>-<prefix>-on-failure-role: made here as they did.
    n = settings.names
    old = f"{settings.prefix}-{n.failure_function}-role"
    apply_plan(plan_deploy(settings, DeployOptions(), clients))
    assert clients.iam.get_role(RoleName=n.role(n.failure_function))["Role"]["RoleName"] != old
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    clients.iam.create_role(RoleName=old, AssumeRolePolicyDocument=json.dumps(trust))
    clients.iam.put_role_policy(RoleName=old, PolicyName="facerec-least-privilege", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}]}))
    plan = plan_destroy(settings, DeployOptions(), clients)
    assert f"iam role {old}" in [s.resource for s in plan.steps]
    apply_plan(plan)
    assert absent(clients.iam.get_role, RoleName=old) == "NoSuchEntity"


def test_access_denied_names_the_step_and_what_was_half_done(settings: Settings, clients: Clients, monkeypatch: pytest.MonkeyPatch) -> None:
    # moto does not enforce IAM for the caller by default: AccessDenied is injected on one call.
    def denied(**kwargs: Any) -> Any:
        raise botocore.exceptions.ClientError({"Error": {"Code": "AccessDenied", "Message": "not allowed"}}, "PutRolePolicy")

    real = clients.iam.put_role_policy
    monkeypatch.setattr(clients.iam, "put_role_policy", denied)
    with pytest.raises(DeployError) as info:
        apply_plan(plan_deploy(settings, DeployOptions(), clients))
    err = info.value
    role = settings.names.role(settings.names.failure_function)
    assert err.failed is not None and err.failed.resource == f"iam role {role}"
    assert err.partial == ["iam.create_role"]
    assert "AWS denied PutRolePolicy" in str(err) and "Already done in that step: iam.create_role" in str(err)
    assert [s.resource.split(" ")[0] for s in err.completed] == ["s3"] * 4 + ["sqs", "log", "log", "log"]
    assert "run `facerec bootstrap` again" in str(err)
    # a re-run does only what is left
    monkeypatch.setattr(clients.iam, "put_role_policy", real)
    rerun = plan_deploy(settings, DeployOptions(), clients)
    assert [s.resource for s in rerun.changes][0] == f"iam role {role}"
    assert rerun.changes[0].action == "update" and rerun.changes[0].detail == "inline policy"


# ------------------------------------------------------------------------------------------ destroy


@pytest.mark.parametrize("settings", ["us-east-1"], indirect=True)  # the region without LocationConstraint
def test_destroy_removes_everything_and_is_idempotent(settings: Settings, clients: Clients, gallery: Path) -> None:
    n = settings.names
    options = DeployOptions(gallery=gallery, with_ecr=True)
    apply_plan(plan_deploy(settings, options, clients))
    s3 = clients.s3
    s3.put_object(Bucket=n.stage1_bucket, Key="video/frame-0.jpg", Body=b"jpg")
    s3.put_object(Bucket=n.output_bucket, Key="video.json", Body=b"{}")
    s3.put_bucket_versioning(Bucket=n.output_bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=n.output_bucket, Key="video.json", Body=b"{\"v\": 2}")
    s3.delete_object(Bucket=n.output_bucket, Key="video.json")  # a delete marker on top of versions
    s3.create_multipart_upload(Bucket=n.output_bucket, Key="big.bin")
    # Lambda creates log groups itself too; whatever exists under the functions' names goes.

    dry = plan_destroy(settings, options, clients)
    assert {s.action for s in dry.steps} == {"delete"}
    resources = [s.resource for s in dry.steps]
    assert resources[0] == f"s3 notification {n.input_bucket}"
    assert resources.index(f"lambda function {n.splitting_function}") < resources.index(f"s3 bucket {n.input_bucket}")
    assert resources[-1] == f"ecr repository {n.ecr_repository}"
    assert "emptied first: 3 objects" in next(s.detail for s in dry.steps if s.resource == f"s3 bucket {n.output_bucket}")
    # the dry run changed nothing
    assert plan_deploy(settings, options, clients).changes == []

    reporter = ListReporter()
    apply_plan(dry, reporter)
    assert [r for _, r in reporter.finished] == resources
    owned = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert not owned & set(n.buckets)
    for function in (n.splitting_function, n.recognition_function):
        assert absent(clients.iam.get_role, RoleName=n.role(function)) == "NoSuchEntity"
        assert absent(clients.lambda_.get_function, FunctionName=function) == "ResourceNotFoundException"
    assert absent(clients.sqs.get_queue_url, QueueName=n.failure_queue) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
    assert absent(clients.ecr.describe_repositories, repositoryNames=[n.ecr_repository]) == "RepositoryNotFoundException"
    assert clients.logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"] == []

    again = plan_destroy(settings, options, clients)
    assert again.steps == [] and again.summary() == "Nothing to destroy."


def test_destroy_leaves_another_deployments_functions_alone(settings: Settings, clients: Clients, moto_url: str) -> None:
    # Same region, another prefix: the function names collide (they are not prefixed).
    apply_plan(plan_deploy(settings, DeployOptions(), clients))
    neighbour = Settings(prefix=f"{settings.prefix}-b", region=settings.region, endpoint_url=moto_url)
    plan = plan_destroy(neighbour, DeployOptions(), Clients.from_settings(neighbour))
    assert plan.changes == []
    assert any("belongs to another deployment" in w for w in plan.warnings)
    assert clients.lambda_.get_function(FunctionName=settings.names.splitting_function)
    apply_plan(plan_destroy(settings, DeployOptions(), clients))


# ------------------------------------------------------------------------------------------ buckets


def test_tls_only_policy_and_retention_are_read_back_and_idempotent(settings: Settings, clients: Clients) -> None:
    n, s3 = settings.names, clients.s3
    retained = dataclasses.replace(settings, retain_days=30)
    options = DeployOptions(tls_only=True)  # by default off on a plain-HTTP endpoint such as this one
    plan = plan_deploy(retained, options, clients)
    detail = {s.resource: s.detail for s in plan.steps}
    assert "TLS only (bucket policy)" in detail[f"s3 bucket {n.stage1_bucket}"]
    assert "uploads expire after 30 days" in detail[f"s3 bucket {n.input_bucket}"]
    assert "results (tagged facerec:kind=result) expire after 30 days, the gallery stays" in detail[f"s3 bucket {n.details_bucket}"]
    assert "objects expire after 3 days" in detail[f"s3 bucket {n.stage1_bucket}"]  # stage-1 keeps its own expiry
    apply_plan(plan)

    for bucket in n.buckets:
        arn = f"arn:aws:s3:::{bucket}"
        assert json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"] == [{
            "Sid": "facerec-tls-only", "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": [arn, f"{arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }]  # fmt: skip
    retention = {"ID": "facerec-retention", "Status": "Enabled", "Expiration": {"Days": 30}}
    assert s3.get_bucket_lifecycle_configuration(Bucket=n.input_bucket)["Rules"] == [
        {**retention, "Filter": {"Prefix": ""}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}
    ]
    for bucket in (n.output_bucket, n.details_bucket):  # the details bucket holds the gallery, which stays
        assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == [
            {**retention, "Filter": {"Tag": {"Key": "facerec:kind", "Value": "result"}}}
        ]
    [stage1_rule] = s3.get_bucket_lifecycle_configuration(Bucket=n.stage1_bucket)["Rules"]
    assert (stage1_rule["ID"], stage1_rule["Expiration"]) == ("facerec-stage1-expiry", {"Days": 3})
    # A request over plain HTTP is refused (moto refuses it whatever the transport: it does not evaluate
    # the condition, which is also why run-local, on HTTP, gets no such policy).
    with pytest.raises(botocore.exceptions.ClientError) as info:
        s3.put_object(Bucket=n.input_bucket, Key="over-http.mp4", Body=b"x")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    assert plan_deploy(retained, options, clients).changes == []  # a second bootstrap changes nothing

    # Someone else's statement and rule are theirs: kept, and no reason to change anything.
    theirs = {"Sid": "theirs", "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteBucket", "Resource": f"arn:aws:s3:::{n.output_bucket}"}
    policy = json.loads(s3.get_bucket_policy(Bucket=n.output_bucket)["Policy"])
    s3.put_bucket_policy(Bucket=n.output_bucket, Policy=json.dumps({**policy, "Statement": [theirs, *policy["Statement"]]}))
    archive = {"ID": "their-archive", "Filter": {"Prefix": "archive/"}, "Status": "Enabled", "Expiration": {"Days": 400}}
    rules = s3.get_bucket_lifecycle_configuration(Bucket=n.output_bucket)["Rules"]
    s3.put_bucket_lifecycle_configuration(Bucket=n.output_bucket, LifecycleConfiguration={"Rules": [archive, *rules]})
    assert plan_deploy(retained, options, clients).changes == []

    # Not set anywhere: the buckets are left as deployed. --retain-days 0: this tool's rules go, shown.
    assert plan_deploy(settings, options, clients).changes == []
    off = plan_deploy(dataclasses.replace(settings, retain_days=0), options, clients)
    assert {s.resource: s.detail for s in off.changes} == {
        f"s3 bucket {n.input_bucket}": "lifecycle: remove the retention rule",
        f"s3 bucket {n.output_bucket}": "lifecycle: remove the retention rule",
        f"s3 bucket {n.details_bucket}": "lifecycle: remove the retention rule",
    }
    apply_plan(off)
    assert absent(s3.get_bucket_lifecycle_configuration, Bucket=n.input_bucket) == "NoSuchLifecycleConfiguration"
    assert [r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=n.output_bucket)["Rules"]] == ["their-archive"]
    assert plan_deploy(dataclasses.replace(settings, retain_days=0), options, clients).changes == []

    # Without the TLS-only policy (a plain-HTTP endpoint), this tool's statement goes and theirs stays.
    plain = plan_deploy(settings, DeployOptions(), clients)
    assert {s.detail for s in plain.changes} == {"bucket policy: remove TLS-only statement"} and len(plain.changes) == 4
    apply_plan(plain)
    assert [st["Sid"] for st in json.loads(s3.get_bucket_policy(Bucket=n.output_bucket)["Policy"])["Statement"]] == ["theirs"]
    assert absent(s3.get_bucket_policy, Bucket=n.input_bucket) == "NoSuchBucketPolicy"

    # destroy undoes all of it: the buckets go with their policies and rules
    apply_plan(plan_destroy(settings, DeployOptions(), clients))
    assert not set(n.buckets) & {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert plan_deploy(retained, options, clients).steps[0].action == "create"


def test_calls_on_the_prefix_named_buckets_carry_the_expected_owner(settings: Settings, clients: Clients, gallery: Path, moto_url: str) -> None:
    """S3 refuses a call carrying ExpectedBucketOwner when another account owns the bucket: every call
    on the buckets named from the prefix sends it, where the API takes it (moto does not check it, so
    the requests themselves are read here)."""
    from facerec_cli.infra.clients import owner_checked_s3

    n, account = settings.names, clients.account_id
    sent: list[tuple[str, str, str | None]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        bucket = request.url.split("://", 1)[1].split("/")[1].split("?")[0]
        owner = request.headers.get("x-amz-expected-bucket-owner")
        sent.append((event_name.rsplit(".", 1)[-1], bucket, owner.decode() if isinstance(owner, bytes) else owner))

    clients.s3.meta.events.register("before-send.s3", record)
    apply_plan(plan_deploy(settings, DeployOptions(gallery=gallery), clients))
    clients.s3.put_object(Bucket=n.output_bucket, Key="a.json", Body=b"{}")
    apply_plan(plan_destroy(settings, DeployOptions(), clients))
    # the CLI's own clients (upload, results, reports)
    cli = owner_checked_s3(settings)
    cli.meta.events.register("before-send.s3", record)
    with pytest.raises(botocore.exceptions.ClientError):
        cli.head_object(Bucket=n.input_bucket, Key="gone.mp4")

    model = clients.s3.meta.service_model
    ours = [(op, bucket, owner) for op, bucket, owner in sent if bucket in n.buckets]
    takes_it = {op for op, _, _ in ours if "ExpectedBucketOwner" in model.operation_model(op).input_shape.members}
    assert {"PutBucketEncryption", "PutBucketLifecycleConfiguration", "PutObject", "HeadObject", "DeleteBucket", "HeadBucket"} <= takes_it
    assert {"CreateBucket"} <= {op for op, _, _ in ours} - takes_it
    assert [(op, bucket) for op, bucket, owner in ours if op in takes_it and owner != account] == []
