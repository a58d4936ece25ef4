"""The AWS commands (bootstrap, upload, results, logs, destroy) through the real CLI (typer's CliRunner)
against a real moto server over HTTP. Nothing of AWS is mocked.

Each test gets its own prefix and a region of its own (function names are not prefixed, so two
deployments only coexist in one moto server in different regions), and its own state directory for
what `facerec upload` remembers. Settings reach the CLI the way a user's would: FACEREC_PREFIX,
FACEREC_REGION and boto3's own AWS_ENDPOINT_URL in the environment (one test passes the flags).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from typer.testing import CliRunner

from facerec_cli.pipeline.observe import function_logs
from facerec_cli.pipeline.observe import watch_results
from facerec_cli.config import Settings
from facerec_cli.infra.clients import Clients
from facerec_cli.infra.executor import apply_plan
from facerec_cli.pipeline.deployer import plan_destroy
from facerec_cli.pipeline.stack import DeployOptions
from facerec_cli.infra import executor as plan_module
from facerec_cli.cli.app import app
from facerec_cli.pipeline.observe.results import destination_record
from tests import aws_records
from tests.fake_clock import FakeClock
from facerec_cli.pipeline.upload_ledger import UploadLedger
from lambdas.core.results import ERROR, NO_FACE, OK, Face, Result

# Regions no other test module deploys to (tests/test_deploy.py cycles through its own list).
_REGIONS = itertools.cycle(
    ["eu-west-3", "eu-south-1", "ap-northeast-2", "ap-northeast-3", "me-south-1", "af-south-1", "ap-east-1",
     "eu-central-2", "ap-south-2", "eu-south-2", "me-central-1", "il-central-1", "ap-southeast-3", "ap-southeast-4"]
)
runner = CliRunner()


@dataclass
class Env:
    settings: Settings
    tmp: Path

    @functools.cached_property
    def clients(self) -> Clients:
        return Clients.from_settings(self.settings)

    @property
    def s3(self) -> Any:
        return self.clients.s3


def _user_environment(mp: pytest.MonkeyPatch, moto_url: str, home: Path) -> None:
    """A user's shell pointed at the moto server: fake keys, no AWS config files, boto3's own
    AWS_ENDPOINT_URL, no facerec.toml, and a state directory of its own."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_DEFAULT_REGION",
                 "FACEREC_ENDPOINT_URL", "FACEREC_PROFILE", "FACEREC_REGISTRY", "FACEREC_STAGE1_EXPIRY_DAYS"):
        mp.delenv(name, raising=False)
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_CONFIG_FILE", str(home / "no-config"))
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-credentials"))
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    mp.setenv("AWS_ENDPOINT_URL", moto_url)
    mp.setenv("FACEREC_STATE_DIR", str(home / "state"))
    mp.setenv("XDG_CONFIG_HOME", str(home / "config"))  # no user facerec.toml
    mp.setenv("COLUMNS", "400")  # keep table cells and error lines unwrapped
    mp.chdir(home)  # no ./facerec.toml
    mp.setattr(plan_module, "_sleep", lambda seconds: None)
    mp.setattr(watch_results, "POLL_SECONDS", 0.2)


def _use(mp: pytest.MonkeyPatch, settings: Settings) -> None:
    mp.setenv("FACEREC_PREFIX", settings.prefix)
    mp.setenv("FACEREC_REGION", settings.region)


def _destroy(settings: Settings) -> None:
    try:  # moto's state is global to the process: leave nothing behind
        clients = Clients.from_settings(settings)
        # bootstrap creates the buckets first: without them nothing else of this deployment exists
        if set(settings.names.buckets) & {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}:
            apply_plan(plan_destroy(settings, DeployOptions(with_ecr=True), clients))
    except Exception as exc:  # noqa: BLE001 - cleanup must not mask the test's own result
        logging.getLogger(__name__).warning("cleanup of %s failed: %s", settings.prefix, exc)


def _new_settings(moto_url: str) -> Settings:
    return Settings(prefix=f"c{uuid.uuid4().hex[:10]}", region=next(_REGIONS), endpoint_url=moto_url)


@pytest.fixture
def env(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A prefix and region with nothing deployed yet (destroyed after the test)."""
    _user_environment(monkeypatch, moto_url, tmp_path)
    settings = _new_settings(moto_url)
    _use(monkeypatch, settings)
    yield Env(settings, tmp_path)
    _destroy(settings)


@pytest.fixture(scope="module")
def shared_deployment(moto_url: str, gallery_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One deployment (bootstrap --skip-images) for the tests that only use it."""
    settings = _new_settings(moto_url)
    with pytest.MonkeyPatch.context() as mp:
        _user_environment(mp, moto_url, tmp_path_factory.mktemp("shared"))
        _use(mp, settings)
        deploy(gallery_file)
        yield settings
        _destroy(settings)


@pytest.fixture
def deployed(shared_deployment: Settings, moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Env:
    """The shared deployment, emptied: no uploads, no results (the gallery stays), no failure records."""
    _user_environment(monkeypatch, moto_url, tmp_path)
    _use(monkeypatch, shared_deployment)
    n = shared_deployment.names
    clients = Clients.from_settings(shared_deployment)
    for bucket in n.buckets:
        keys = [{"Key": o["Key"]} for o in clients.s3.list_objects_v2(Bucket=bucket).get("Contents", []) if o["Key"] != n.gallery_key]
        if keys:
            clients.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    clients.sqs.purge_queue(QueueUrl=clients.sqs.get_queue_url(QueueName=n.failure_queue)["QueueUrl"])
    return Env(shared_deployment, tmp_path)


@pytest.fixture(scope="module")
def gallery_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from lambdas.core.gallery import Gallery

    path = tmp_path_factory.mktemp("gallery") / "gallery.pt"
    Gallery(weights="casia-webface", embeddings=torch.randn(3, 512), names=["madonna", "madonna", "elton_john"]).save(path)
    return path


@pytest.fixture(scope="module")
def video(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real one-second H.264 MP4 of a photo of Madonna."""
    from facerec_cli.samples import still_video

    photo = sorted((data / "5celeb" / "train" / "madonna").iterdir())[0]
    return still_video(photo, tmp_path_factory.mktemp("video") / "madonna.mp4", seconds=1.0, size=(320, 240), fps=10)


def facerec(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def deploy(gallery: Path) -> None:
    result = facerec("bootstrap", "--skip-images", "--gallery", str(gallery))
    assert result.exit_code == 0, result.output


def error_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def ok_result(video: str, name: str = "madonna") -> Result:
    face = Face(frame=0, t=0.0, box=[10.0, 20.0, 110.0, 140.0], prob=0.999, name=name, distance=0.61)
    return Result(video=video, status=OK, name=name, faces=[face], model="casia-webface", frames=3, timings_ms={"detect": 40.0})


def put_result(env: Env, result: Result) -> None:
    stem = Path(result.video).stem
    s3 = env.s3
    s3.put_object(Bucket=env.settings.names.details_bucket, Key=f"{stem}.json", Body=result.to_json().encode(), ContentType="application/json")
    s3.put_object(Bucket=env.settings.names.output_bucket, Key=f"{stem}.txt", Body=result.name.encode())


def put_failure(env: Env, video: str, message: str = "Task timed out after 300.00 seconds") -> None:
    """What Lambda's OnFailure destination sends when the splitting function gave up on an upload."""
    s = env.settings
    clients = env.clients
    event = {"Records": [{
        "eventName": "ObjectCreated:Put", "eventTime": "2026-11-01T12:00:00.000Z",
        "s3": {"bucket": {"name": s.names.input_bucket}, "object": {"key": video.replace(" ", "+"), "size": 1000, "eTag": "abc"}},
    }]}  # fmt: skip
    arn = f"arn:aws:lambda:{s.region}:{clients.account_id}:function:{s.names.splitting_function}"
    url = clients.sqs.get_queue_url(QueueName=s.names.failure_queue)["QueueUrl"]
    clients.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(destination_record(arn, str(uuid.uuid4()), event, message, 3)))


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_dry_run_then_deploy_then_no_changes(env: Env, gallery_file: Path) -> None:
    n = env.settings.names
    dry = facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"+ create s3 bucket {n.input_bucket}" in dry.stdout
    assert "+ create lambda function video-splitting" in dry.stdout
    assert "Plan (deploy): 20 to create." in dry.stdout
    assert n.input_bucket not in {b["Name"] for b in env.s3.list_buckets()["Buckets"]}  # the dry run changed nothing

    first = facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file))
    assert first.exit_code == 0, first.output
    assert "[20/20] created" in first.stderr
    clients = env.clients
    assert set(n.buckets) <= {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}
    for function in (n.splitting_function, n.recognition_function):
        config = clients.lambda_.get_function_configuration(FunctionName=function)
        assert config["PackageType"] == "Image"
    assert clients.lambda_.get_function_configuration(FunctionName=n.recognition_function)["Environment"]["Variables"]["FACEREC_WEIGHTS"] == "casia-webface"
    head = clients.s3.head_object(Bucket=n.details_bucket, Key=n.gallery_key)
    assert head["ContentLength"] == gallery_file.stat().st_size
    triggers = clients.s3.get_bucket_notification_configuration(Bucket=n.input_bucket)["LambdaFunctionConfigurations"]
    assert {t["LambdaFunctionArn"].rsplit(":", 1)[-1] for t in triggers} == {n.splitting_function}
    assert clients.sqs.get_queue_url(QueueName=n.failure_queue)["QueueUrl"]

    second = facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file))
    assert second.exit_code == 0, second.output
    assert "No changes: 20 resources up to date." in second.stdout
    assert "created" not in second.stderr


def test_bootstrap_annotate_is_kept_until_turned_off(env: Env, gallery_file: Path) -> None:
    n = env.settings.names

    def annotate_var() -> str | None:
        config = env.clients.lambda_.get_function_configuration(FunctionName=n.recognition_function)
        return config["Environment"]["Variables"].get("FACEREC_ANNOTATE")

    assert facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file), "--annotate").exit_code == 0
    assert annotate_var() == "1"
    again = facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file))  # no flag: as deployed
    assert again.exit_code == 0 and "No changes" in again.stdout, again.output
    assert annotate_var() == "1"
    off = facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file), "--no-annotate", "--yes")
    assert off.exit_code == 0, off.output
    assert "update lambda function face-recognition" in off.stdout
    assert annotate_var() is None


def test_bootstrap_flags_override_environment(env: Env, gallery_file: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FACEREC_PREFIX", "FACEREC_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(name, {"FACEREC_PREFIX": "someone-else", "FACEREC_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}[name])
    s = env.settings
    flags = ["--prefix", s.prefix, "--region", s.region, "--endpoint-url", moto_url]
    result = facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file), "--dry-run", *flags)
    assert result.exit_code == 0, result.output
    assert f"prefix {s.prefix}, region {s.region}" in result.stderr
    assert f"+ create s3 bucket {s.names.output_bucket}" in result.stdout


def test_bootstrap_retain_days_is_planned_applied_kept_and_removed(env: Env, gallery_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n, s3 = env.settings.names, env.s3
    dry = facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file), "--retain-days", "7", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "uploads expire after 7 days" in dry.stdout and "results (tagged facerec:kind=result) expire after 7 days" in dry.stdout
    assert facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file), "--retain-days", "7").exit_code == 0
    assert s3.get_bucket_lifecycle_configuration(Bucket=n.input_bucket)["Rules"][0]["Expiration"] == {"Days": 7}
    again = facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file))  # not given: as deployed
    assert again.exit_code == 0 and "No changes" in again.stdout, again.output
    monkeypatch.setenv("FACEREC_RETAIN_DAYS", "0")
    off = facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file), "--yes")
    assert off.exit_code == 0, off.output
    assert f"update s3 bucket {n.output_bucket}: lifecycle: remove the retention rule" in off.stdout
    with pytest.raises(botocore.exceptions.ClientError, match="NoSuchLifecycleConfiguration"):
        s3.get_bucket_lifecycle_configuration(Bucket=n.output_bucket)
    bad = facerec("bootstrap", "--skip-images", "--retain-days", "-3", "--dry-run")
    assert bad.exit_code == 2 and "--retain-days" in bad.output  # typer: not in the range x>=0
    monkeypatch.setenv("FACEREC_RETAIN_DAYS", "a week")
    [line] = error_lines(facerec("bootstrap", "--skip-images", "--dry-run"))
    assert "retain_days from FACEREC_RETAIN_DAYS must be a whole number of days, 0 for none, not 'a week'" in line, line


def test_bootstrap_builds_images_after_creating_the_repository(env: Env, gallery_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --skip-images: the Docker engine is opened before anything exists, then the ECR
    repository, then images.build_and_push, then the functions on the pushed URIs. The image builder
    (needs dockerd) is replaced by a recorder here; tests/test_containers.py runs the real one."""
    import types


    calls: list[dict[str, Any]] = []
    n = env.settings.names

    def repository_exists() -> bool:
        return any(r["repositoryName"] == n.ecr_repository for r in env.clients.ecr.describe_repositories()["repositories"])

    class Engine:
        closed = False

        def close(self) -> None:
            self.closed = True

    engine = Engine()

    def open_engine(settings: Settings, clients: Clients, **kwargs: Any) -> Engine:
        assert not repository_exists() and n.input_bucket not in {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}
        calls.append({"open_engine": kwargs})
        return engine

    def build_and_push(settings: Settings, clients: Clients, **kwargs: Any) -> dict[str, str]:
        assert repository_exists() and not engine.closed
        calls.append({"prefix": settings.prefix, **kwargs})
        kwargs["on_progress"]("pushed layer 1/3")
        return {kind: f"registry.test:5000/{n.ecr_repository}:{kind}-1" for kind in ("splitting", "recognition")}

    fake = types.ModuleType("facerec_cli.pipeline.images")
    fake.build_and_push = build_and_push  # type: ignore[attr-defined]
    fake.open_engine = open_engine  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "facerec_cli.pipeline.images", fake)

    dry = facerec("bootstrap", "--gallery", str(gallery_file), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"+ create ecr repository {n.ecr_repository}" in dry.stdout and "container images" in dry.stdout
    assert calls == []  # a dry run builds nothing

    result = facerec("bootstrap", "--gallery", str(gallery_file), "--base-image", "base:1", "--registry", "registry.test:5000")
    assert result.exit_code == 0, result.output
    assert calls == [
        {"open_engine": {"registry": "registry.test:5000"}},
        {"prefix": n.prefix, "weights": "casia-webface", "registry": "registry.test:5000", "base_image": "base:1",
         "on_progress": calls[1]["on_progress"], "engine": engine},
    ]  # fmt: skip
    assert engine.closed
    assert "pushed layer 1/3" in result.stderr
    assert "+ create container images" in result.stdout  # the plan is shown before the build
    lam = env.clients.lambda_
    assert lam.get_function(FunctionName=n.splitting_function)["Code"]["ImageUri"] == f"registry.test:5000/{n.ecr_repository}:splitting-1"
    assert lam.get_function(FunctionName=n.recognition_function)["Code"]["ImageUri"] == f"registry.test:5000/{n.ecr_repository}:recognition-1"


def test_bootstrap_names_the_repository_it_created_when_the_push_fails(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A push that fails after the repository was created: one red line with the push error and what
    was left behind. The builder is faked (no dockerd here); tests/test_containers.py fails a real push."""
    import types

    from facerec_cli.errors import UserError

    n = env.settings.names

    class Engine:
        def close(self) -> None:
            pass

    def build_and_push(settings: Settings, clients: Clients, **kwargs: Any) -> dict[str, str]:
        raise UserError("pushing 127.0.0.1:9/x:splitting-1 failed: connection refused", hint="the registry 127.0.0.1:9 cannot be reached")

    fake = types.ModuleType("facerec_cli.pipeline.images")
    fake.build_and_push = build_and_push  # type: ignore[attr-defined]
    fake.open_engine = lambda settings, clients, **kwargs: Engine()  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "facerec_cli.pipeline.images", fake)

    result = facerec("bootstrap", "--registry", "127.0.0.1:9")
    assert result.exit_code == 1, result.output
    [line] = error_lines(result)
    assert "pushing 127.0.0.1:9/x:splitting-1 failed: connection refused" in line, line
    assert f"Done before it: created ecr repository {n.ecr_repository}" in line, line
    assert "run `facerec bootstrap` again" in line, line
    assert not set(n.buckets) & {b["Name"] for b in env.s3.list_buckets()["Buckets"]}  # it stopped there
    env.clients.ecr.delete_repository(repositoryName=n.ecr_repository, force=True)  # the env cleanup starts from buckets


def _other_accounts_bucket(env: Env, moto_url: str, name: str) -> Any:
    """An S3 client of a second account (moto maps sts:AssumeRole credentials into the role's
    account), after it created bucket ``name``."""
    import boto3

    creds = env.clients.sts.assume_role(RoleArn="arn:aws:iam::111111111111:role/other", RoleSessionName="other-account")["Credentials"]
    other = boto3.client(
        "s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"],
    )  # fmt: skip
    other.create_bucket(Bucket=name)
    return other


def assert_nothing_created(env: Env) -> None:
    n = env.settings.names
    assert not set(n.buckets) & {b["Name"] for b in env.s3.list_buckets()["Buckets"]}
    assert n.ecr_repository not in {r["repositoryName"] for r in env.clients.ecr.describe_repositories()["repositories"]}
    assert not [u for u in env.clients.sqs.list_queues(QueueNamePrefix=n.failure_queue).get("QueueUrls", [])]
    roles = {r["RoleName"] for r in env.clients.iam.list_roles()["Roles"]}
    assert not {n.role(n.splitting_function), n.role(n.recognition_function)} & roles


def test_bootstrap_with_images_checks_blockers_before_docker_and_ecr(env: Env, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    n = env.settings.names
    # No engine either: the blocker must be what stops it, before Docker is even asked.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{env.tmp}/no-docker.sock")
    other = _other_accounts_bucket(env, moto_url, n.stage1_bucket)
    try:
        result = facerec("bootstrap")
        assert result.exit_code == 1, result.output
        [line] = error_lines(result)
        assert f"nothing was changed: bucket name {n.stage1_bucket} is taken by another AWS account" in line, line
        assert f"!! bucket name {n.stage1_bucket} is taken" in result.stdout  # the plan says why
        assert_nothing_created(env)
    finally:
        other.delete_bucket(Bucket=n.stage1_bucket)


def test_bootstrap_without_a_docker_engine_creates_nothing(env: Env, gallery_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    socket = env.tmp / "no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    result = facerec("bootstrap", "--gallery", str(gallery_file))
    assert result.exit_code == 1, result.output
    [line] = error_lines(result)
    assert "cannot reach a Docker engine" in line and str(socket) in line and "--skip-images" in line, line
    assert_nothing_created(env)


def test_no_region_is_one_red_line(env: Env, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user with credentials but no region anywhere: guessing us-east-1 would deploy to the wrong
    region, so every AWS command stops with what to do. Only a local endpoint (moto) may default."""
    home = env.tmp / "empty-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # no ~/.aws/config with a region, no facerec.toml
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for name in ("FACEREC_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "FACEREC_ENDPOINT_URL",
                 "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for args in (["bootstrap", "--skip-images"], ["upload", str(video)], ["results"], ["logs"], ["destroy", "--yes"], ["watch"]):
        result = facerec(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stdout == ""
        [line] = result.stderr.strip().splitlines()
        assert line == "error: no AWS region: pass --region, set AWS_DEFAULT_REGION, or run `aws configure`", (args, line)

    # a local endpoint (moto here) needs no real region: us-east-1 is used
    monkeypatch.setenv("AWS_ENDPOINT_URL", env.settings.endpoint_url or "")
    dry = facerec("bootstrap", "--skip-images", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"prefix {env.settings.prefix}, region us-east-1" in dry.stderr
    # and AWS_REGION is a region as good as AWS_DEFAULT_REGION
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_REGION", env.settings.region)
    flagged = facerec("bootstrap", "--skip-images", "--dry-run", "--endpoint-url", env.settings.endpoint_url or "")
    assert flagged.exit_code == 0, flagged.output
    assert f"region {env.settings.region}" in flagged.stderr


@pytest.mark.parametrize("value", ["three", "0", "-2", "1.5", ""])
def test_bad_stage1_expiry_days_names_the_setting_and_its_source(env: Env, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if value:
        monkeypatch.setenv("FACEREC_STAGE1_EXPIRY_DAYS", value)
        source = "FACEREC_STAGE1_EXPIRY_DAYS"
    else:  # from facerec.toml (the current directory's): a TOML number below 1
        (env.tmp / "facerec.toml").write_text("stage1_expiry_days = 0\n")
        value, source = "0", str(env.tmp / "facerec.toml")
    result = facerec("bootstrap", "--skip-images", "--dry-run")
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: stage1_expiry_days from {source}"), line
    assert "must be a whole number of at least 1" in line and value in line, line


def test_stage1_expiry_days_from_the_environment_reaches_the_lifecycle_rule(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEREC_STAGE1_EXPIRY_DAYS", " 7 ")
    result = facerec("bootstrap", "--skip-images", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"+ create s3 bucket {env.settings.names.stage1_bucket}" in result.stdout
    assert "objects expire after 7 days" in result.stdout


def test_bootstrap_refuses_a_bad_gallery_before_any_change(env: Env) -> None:
    bad = env.tmp / "gallery.pt"
    bad.write_bytes(b"certainly not a torch file")
    result = facerec("bootstrap", "--skip-images", "--gallery", str(bad))
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert "not a facerec gallery" in line
    assert env.settings.names.input_bucket not in {b["Name"] for b in env.s3.list_buckets()["Buckets"]}


def test_bootstrap_weights_must_match_the_gallery(env: Env, gallery_file: Path) -> None:
    result = facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file), "--weights", "vggface2", "--dry-run")
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert "made with casia-webface weights, not vggface2" in line


# ------------------------------------------------------------------------------------------ upload


def test_upload_sends_videos_with_content_type_and_remembers_them(deployed: Env, video: Path) -> None:
    spaced = copy(video, deployed.tmp / "test 00 clip.mp4")
    accented = copy(video, deployed.tmp / "vidéo ünïcode 名前.MOV")
    big = deployed.tmp / "big.webm"  # above the 8 MiB multipart threshold (the content is not checked on upload)
    big.write_bytes(video.read_bytes() * (9 * 1024 * 1024 // video.stat().st_size + 1))

    result = facerec("upload", str(spaced), str(accented), str(big))
    assert result.exit_code == 0, result.output
    assert "uploaded 3 videos" in result.stderr
    bucket = deployed.settings.names.input_bucket
    for path, content_type in ((spaced, "video/mp4"), (accented, "video/quicktime"), (big, "video/webm")):
        head = deployed.s3.head_object(Bucket=bucket, Key=path.name)
        assert head["ContentType"] == content_type
        assert head["ContentLength"] == path.stat().st_size
    assert deployed.s3.head_object(Bucket=bucket, Key=big.name)["ETag"].strip('"').endswith("-2")  # multipart: 8 MiB + rest
    body = deployed.s3.get_object(Bucket=bucket, Key=accented.name)["Body"].read()
    assert body == video.read_bytes()

    records = UploadLedger(deployed.settings).records()
    assert sorted(r.key for r in records) == sorted([spaced.name, accented.name, big.name])
    assert all(r.etag and r.size > 0 for r in records)


def test_upload_refuses_non_videos_and_empty_files_before_sending_anything(deployed: Env, video: Path) -> None:
    notes = deployed.tmp / "notes.txt"
    notes.write_text("not a video\n")
    empty = deployed.tmp / "empty.mp4"
    empty.write_bytes(b"")
    good = copy(video, deployed.tmp / "good.mp4")
    for files, reason in (([good, notes], "notes.txt: not a video"), ([empty, good], "empty.mp4: empty file"), ([good, deployed.tmp / "missing.mp4"], "no such file")):
        result = facerec("upload", *map(str, files))
        assert result.exit_code == 1, result.output
        [line] = error_lines(result)
        assert "nothing was uploaded" in line and reason in line
    assert deployed.s3.list_objects_v2(Bucket=deployed.settings.names.input_bucket).get("KeyCount", 0) == 0
    assert UploadLedger(deployed.settings).records() == []


def test_upload_before_bootstrap_says_to_bootstrap(env: Env, video: Path) -> None:
    result = facerec("upload", str(video))
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert f"input bucket {env.settings.names.input_bucket} does not exist" in line
    assert "run `facerec bootstrap` first" in line


# ------------------------------------------------------------------------------------------ results


def test_results_lists_result_objects_and_failures_as_errors(deployed: Env) -> None:
    put_result(deployed, ok_result("test_00.mp4"))
    put_result(deployed, Result(video="clip two.mp4", status=NO_FACE, name=NO_FACE, frames=3))
    put_failure(deployed, "broken one.mp4", "Task timed out after 120.00 seconds")

    table = facerec("results")
    assert table.exit_code == 1, table.output  # one video ended in error
    rows = {line.split("│")[1].strip(): line for line in table.stdout.splitlines() if line.count("│") > 3}
    assert set(rows) == {"test_00.mp4", "clip two.mp4", "broken one.mp4"}
    assert "madonna" in rows["test_00.mp4"] and " ok " in rows["test_00.mp4"]
    assert "no_face" in rows["clip two.mp4"]
    assert " error " in rows["broken one.mp4"]
    assert "video-splitting failed on every attempt: Task timed out after 120.00 seconds" in table.stderr
    assert "gallery" not in table.stdout  # facerec's own objects are not results

    lines = facerec("results", "--json")
    assert lines.exit_code == 1
    objects = [json.loads(line) for line in lines.stdout.splitlines()]  # every stdout line is JSON
    assert {o["video"]: o["status"] for o in objects} == {"test_00.mp4": OK, "clip two.mp4": NO_FACE, "broken one.mp4": ERROR}
    assert objects[[o["video"] for o in objects].index("test_00.mp4")] == ok_result("test_00.mp4").to_dict()

    # a refresh costs list calls; a result object is downloaded again only when its ETag changes
    clients = deployed.clients
    reader = watch_results.ResultsReader(deployed.settings, clients.s3, clients.sqs)
    assert sorted(reader.refresh().results) == ["broken one", "clip two", "test_00"] and reader.fetches == 2
    assert reader.refresh().results["test_00"].name == "madonna" and reader.fetches == 2
    put_result(deployed, ok_result("test_00.mp4", name="elton_john"))
    assert reader.refresh().results["test_00"].name == "elton_john" and reader.fetches == 3


def literal_failure_record(env: Env, key: str, qualifier: str = "") -> dict[str, Any]:
    """video-splitting's record after every attempt failed on the upload of ``key``, as AWS writes it
    (tests/aws_records.py)."""
    s = env.settings
    arn = aws_records.function_arn(s.region, env.clients.account_id, s.names.splitting_function, qualifier)
    return aws_records.retries_exhausted(arn, aws_records.s3_put_event(s.region, s.names.input_bucket, key))


def send_record(env: Env, record: dict[str, Any]) -> None:
    clients = env.clients
    url = clients.sqs.get_queue_url(QueueName=env.settings.names.failure_queue)["QueueUrl"]
    clients.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))


def test_results_reads_a_literal_lambda_failure_destination_record(deployed: Env) -> None:
    put_result(deployed, ok_result("test_00.mp4"))
    send_record(deployed, literal_failure_record(deployed, "holiday+clip+%281%29.mp4"))  # S3 URL-encodes the key

    lines = facerec("results", "--json")
    assert lines.exit_code == 1, lines.output
    objects = {o["video"]: o for o in map(json.loads, lines.stdout.splitlines())}
    assert set(objects) == {"test_00.mp4", "holiday clip (1).mp4"}
    failed = objects["holiday clip (1).mp4"]
    assert failed["status"] == ERROR
    assert "ffmpeg could not read the video: moov atom not found" in failed["error"]
    assert f"{deployed.settings.names.splitting_function} failed on every attempt" in failed["error"]
    assert objects["test_00.mp4"]["status"] == OK


def test_results_shows_a_video_as_failed_when_the_on_failure_function_failed_too(deployed: Env) -> None:
    """When the on-failure function itself fails on a record, Lambda sends its own record to the queue,
    whose requestPayload is the record it was given: the video is failed (not absent) and both errors show."""
    s = deployed.settings
    inner = literal_failure_record(deployed, "nested+one.mp4", qualifier=":$LATEST")
    arn = aws_records.function_arn(s.region, deployed.clients.account_id, s.names.failure_function, ":$LATEST")
    send_record(deployed, aws_records.retries_exhausted(arn, inner, error="An error occurred (AccessDenied) when calling the PutObject operation",
                                                        error_type="ClientError", request_id="0c7a2d3e-1111-4c4c-9d9d-123456789abc"))  # fmt: skip
    lines = facerec("results", "--json")
    assert lines.exit_code == 1, lines.output
    [failed] = [json.loads(line) for line in lines.stdout.splitlines()]
    assert failed["video"] == "nested one.mp4" and failed["status"] == ERROR
    assert f"{s.names.splitting_function} failed on every attempt: ffmpeg could not read the video: moov atom not found" in failed["error"]
    assert f"{s.names.failure_function} failed recording it: An error occurred (AccessDenied)" in failed["error"]


def test_results_names_the_function_of_a_qualified_arn(deployed: Env) -> None:
    send_record(deployed, literal_failure_record(deployed, "late.mp4", qualifier=":$LATEST"))
    lines = facerec("results", "--json")
    [failed] = [json.loads(line) for line in lines.stdout.splitlines()]
    assert failed["video"] == "late.mp4" and failed["status"] == ERROR
    assert f"{deployed.settings.names.splitting_function} failed on every attempt" in failed["error"]


def test_results_before_bootstrap_says_to_bootstrap(env: Env) -> None:
    result = facerec("results")
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert "output bucket" in line and "run `facerec bootstrap` first" in line


def test_results_watch_follows_until_every_upload_is_answered(deployed: Env, video: Path) -> None:
    first, second = copy(video, deployed.tmp / "first clip.mp4"), copy(video, deployed.tmp / "second.mp4")
    assert facerec("upload", str(first), str(second)).exit_code == 0

    second_put = threading.Event()

    def pipeline() -> None:  # plays the functions: answers arrive while `results --watch` runs
        time.sleep(0.8)
        put_result(deployed, ok_result("first clip.mp4"))
        time.sleep(0.6)
        put_result(deployed, ok_result("second.mp4", name="elton_john"))
        second_put.set()

    worker = threading.Thread(target=pipeline)
    worker.start()
    result = facerec("results", "--watch", "--json", "--timeout", "20")
    assert second_put.is_set()  # it returned only once the second answer was there (read before join)
    worker.join()
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["video"], o["name"]) for o in objects] == [("first clip.mp4", "madonna"), ("second.mp4", "elton_john")]


def test_an_upload_the_new_trigger_missed_is_noted_and_re_triggered(env: Env, gallery_file: Path, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 can take minutes to apply the notification configuration bootstrap puts; moto applies it at
    once, so "not applied yet" is played by removing the configuration for the first upload and putting
    it back after. The upload says the trigger is settling; `results --watch` finds the upload with no
    sign of video-splitting, copies it onto itself, and the new event gets it answered."""
    from facerec_cli.pipeline import trigger
    from tests.moto_seam import Recorder

    deploy(gallery_file)
    n, s3 = env.settings.names, env.s3
    assert UploadLedger(env.settings).trigger_put_at() is not None  # bootstrap recorded when it put the trigger
    applied = {k: v for k, v in s3.get_bucket_notification_configuration(Bucket=n.input_bucket).items() if k != "ResponseMetadata"}
    s3.put_bucket_notification_configuration(Bucket=n.input_bucket, NotificationConfiguration={})

    def split(function: str, event: dict[str, Any]) -> None:  # plays video-splitting and recognition: the answer
        if function == n.splitting_function:
            for record in event.get("Records", []):
                put_result(env, ok_result(Path(record["s3"]["object"]["key"].replace("+", " ")).name))

    recorder = Recorder(split)
    recorder.install(monkeypatch)
    clip = copy(video, env.tmp / "early clip.mp4")
    uploaded = facerec("upload", str(clip))
    assert uploaded.exit_code == 0, uploaded.output
    assert "note: bootstrap put the input bucket's trigger" in uploaded.stderr and "S3 can take several minutes" in uploaded.stderr
    assert recorder.of(n.splitting_function) == []  # the trigger missed it

    s3.put_bucket_notification_configuration(Bucket=n.input_bucket, NotificationConfiguration=applied)  # S3 applies it, later
    monkeypatch.setattr(trigger, "NUDGE_AFTER", 0.5)
    watched = facerec("results", "--watch", "--json", "--timeout", "30")
    assert watched.exit_code == 0, watched.output
    assert [(o["video"], o["status"]) for o in map(json.loads, watched.stdout.splitlines())] == [("early clip.mp4", OK)]
    assert "early clip.mp4: nothing after" in watched.stderr and "re-triggered (copied onto itself)" in watched.stderr
    [event] = [c["event"] for c in recorder.of(n.splitting_function)]
    assert event["Records"][0]["s3"]["object"]["key"] in ("early+clip.mp4", "early%20clip.mp4")
    assert s3.get_object(Bucket=n.input_bucket, Key="early clip.mp4")["Body"].read() == clip.read_bytes()  # the same bytes


def test_an_upload_video_splitting_finished_is_not_re_triggered(env: Env, gallery_file: Path) -> None:
    """`results --watch` tells a split upload (its done marker, in the details bucket; in a deployment
    made before that bucket, in stage-1) from one nothing picked up."""
    from datetime import datetime, timedelta, timezone

    from facerec_cli.pipeline.trigger import Retrigger
    from facerec_cli.pipeline.upload_ledger import UploadRecord
    from lambdas.stage1 import marker_key

    deploy(gallery_file)
    ledger = UploadLedger(env.settings)
    ten_minutes_ago = (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat()

    def record(key: str) -> UploadRecord:
        return UploadRecord(key=key, etag="e", size=1, uploaded=ten_minutes_ago)

    n = env.settings.names
    env.s3.put_object(Bucket=n.details_bucket, Key=marker_key("split"), Body=b"")
    assert Retrigger(env.settings, env.s3, ledger)([record("split.mp4")]) == []
    [line] = Retrigger(env.settings, env.s3, ledger)([record("lost.mp4")])
    assert line.startswith("lost.mp4: ")

    older = Settings(prefix=f"old-{uuid.uuid4().hex[:8]}", region=env.settings.region, endpoint_url=env.settings.endpoint_url)
    for bucket in (older.names.input_bucket, older.names.stage1_bucket, older.names.output_bucket):
        env.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": older.region})
    env.s3.put_object(Bucket=older.names.stage1_bucket, Key=marker_key("split"), Body=b"")
    assert Retrigger(older, env.s3, ledger)([record("split.mp4")]) == []


def test_results_watch_counts_failures_and_exits_non_zero(deployed: Env, video: Path) -> None:
    good, bad = copy(video, deployed.tmp / "good.mp4"), copy(video, deployed.tmp / "bad.mp4")
    assert facerec("upload", str(good), str(bad)).exit_code == 0

    def pipeline() -> None:
        time.sleep(0.5)
        put_result(deployed, ok_result("good.mp4"))
        put_failure(deployed, "bad.mp4", "Runtime exited with error: signal: killed")

    worker = threading.Thread(target=pipeline)
    worker.start()
    result = facerec("results", "--watch", "--timeout", "20")
    worker.join()
    assert result.exit_code == 1, result.output
    assert "good.mp4" in result.stdout and "bad.mp4" in result.stdout and "waiting" not in result.stdout
    assert "signal: killed" in result.stderr


def test_results_watch_times_out_with_a_non_zero_exit(deployed: Env, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old result of an earlier upload of the same name does not answer the new upload."""
    put_result(deployed, ok_result("never answered.mp4"))
    time.sleep(1.1)  # S3 times have one-second resolution: the upload must come after that old result
    assert facerec("upload", str(copy(video, deployed.tmp / "never answered.mp4"))).exit_code == 0
    # A fake clock (as test_deploy's): the watch's waits advance it, so "stopped at its timeout" is
    # counted in the watch's own seconds, not measured on a loaded machine.
    clock = FakeClock()
    monkeypatch.setattr(watch_results, "time", clock)
    result = facerec("results", "--watch", "--timeout", "1")
    assert result.exit_code == 124
    assert clock.slept and sum(clock.slept) == pytest.approx(1.0)  # it waited out its second, no more
    assert "waiting" in result.stdout and "madonna" not in result.stdout
    assert "timed out after 1s: 1 uploaded video without a result: never answered.mp4" in result.stderr


# ------------------------------------------------------------------------------------------ logs


def put_logs(deployed: Env, function: str, *messages: str) -> None:
    logs = deployed.clients.logs
    group = deployed.settings.names.log_group(function)
    stream = f"2026/11/01/[$LATEST]{uuid.uuid4().hex}"
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(messages)])


def test_logs_prints_both_functions_events(deployed: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    put_logs(deployed, "video-splitting", "split test_00.mp4 into 3 frames\n")
    put_logs(deployed, "face-recognition", "test_00: madonna (0.61)\n")

    both = facerec("logs")
    assert both.exit_code == 0, both.output
    lines = both.stdout.splitlines()
    assert any("video-splitting" in line and line.endswith("split test_00.mp4 into 3 frames") for line in lines)
    assert any("face-recognition" in line and line.endswith("test_00: madonna (0.61)") for line in lines)

    one = facerec("logs", "--function", "recognition", "--since", "1h")
    assert one.exit_code == 0
    assert "madonna" in one.stdout and "split test_00" not in one.stdout

    # --follow: the first poll finds a new event, the second is interrupted (Ctrl-C) and ends quietly
    polls: list[float] = []

    def fake_sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 1:
            put_logs(deployed, "face-recognition", "second.mp4: elton_john (0.7)")
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(function_logs, "_sleep", fake_sleep)
    followed = facerec("logs", "--function", "face-recognition", "--follow")
    assert followed.exit_code == 0, followed.output
    assert followed.stdout.count("test_00: madonna") == 1 and "second.mp4: elton_john" in followed.stdout
    assert polls[0] <= function_logs.FOLLOW_MAX_SECONDS

    unknown = facerec("logs", "--function", "nope")
    assert unknown.exit_code == 1 and "unknown function 'nope'" in error_lines(unknown)[0]
    bad_since = facerec("logs", "--since", "yesterday")
    assert bad_since.exit_code == 1 and "neither a duration nor a time" in error_lines(bad_since)[0]


def test_logs_of_a_missing_deployment_say_so(env: Env) -> None:
    result = facerec("logs")
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert "no log group /aws/lambda/video-splitting, /aws/lambda/face-recognition" in line
    assert "run `facerec bootstrap` first" in line


# ------------------------------------------------------------------------------------------ destroy


def test_destroy_asks_then_removes_everything(env: Env, gallery_file: Path, video: Path) -> None:
    deploy(gallery_file)
    assert facerec("upload", str(video)).exit_code == 0
    n = env.settings.names

    refused = facerec("destroy")  # no --yes and no terminal to ask on
    assert refused.exit_code == 1
    [line] = error_lines(refused)
    assert "without confirmation" in line and "--yes" in line
    dry = facerec("destroy", "--dry-run")
    assert dry.exit_code == 0 and f"- delete s3 bucket {n.input_bucket}" in dry.stdout
    assert set(n.buckets) <= {b["Name"] for b in env.s3.list_buckets()["Buckets"]}  # still there

    done = facerec("destroy", "--yes")
    assert done.exit_code == 0, done.output
    clients = env.clients
    assert not set(n.buckets) & {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}
    for function in (n.splitting_function, n.recognition_function):
        with pytest.raises(botocore.exceptions.ClientError):
            clients.lambda_.get_function(FunctionName=function)
    with pytest.raises(botocore.exceptions.ClientError):
        clients.sqs.get_queue_url(QueueName=n.failure_queue)
    assert UploadLedger(env.settings).records() == []
    again = facerec("destroy", "--yes")
    assert again.exit_code == 0 and "Nothing to destroy." in again.stdout


# ------------------------------------------------------------------------------------------ errors


def test_missing_credentials_are_one_red_line(env: Env, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = env.tmp / "empty-aws-file"
    empty.write_text("")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    for args in (["bootstrap", "--skip-images"], ["upload", str(video)], ["results"], ["results", "--watch"], ["logs"], ["destroy", "--yes"]):
        result = facerec(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stdout == ""
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: no AWS credentials found"), (args, line)


def test_access_denied_is_one_red_line(deployed: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """An IAM user with no policy at all: moto checks IAM when its no-auth allowance is 0."""
    import moto.settings
    from moto.core.authorization import ActionAuthenticatorMixin

    iam = deployed.clients.iam
    user = f"nobody-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    with monkeypatch.context() as m:  # undone before the fixture's cleanup needs the admin keys again
        m.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        m.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        m.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
        m.setattr(ActionAuthenticatorMixin, "request_count", 0)
        results = facerec("results")
        upload = facerec("upload", str(copy_text_video(deployed)))
    for result in (results, upload):
        assert result.exit_code == 1, result.output
        [line] = error_lines(result)
        assert "AWS denied" in line, line


def copy_text_video(deployed: Env) -> Path:
    path = deployed.tmp / "tiny.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    return path
