"""The embedded local cloud: a real moto server over HTTP, real worker processes, real boto3 calls.

Handlers live in tests/runtime_handlers.py and leave their traces in S3, which is what these tests read.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
import time
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest

from facerec_cli.localcloud.server import LocalCloud
from facerec_cli.localcloud.runtime import check_seam
from facerec_cli.pipeline.local.handlers import pipeline_allowlist

# The runtime's own tests run the tiny handlers of tests/runtime_handlers.py, with a variable of theirs.
TEST_HANDLERS = pipeline_allowlist().widened(
    handlers=[f"tests.runtime_handlers.{name}" for name in ("echo_to_s3", "fail_once", "die_once", "always_fail", "slow_echo", "gated_echo", "client_files")],
    variables=["SETTING"],
)

INPUT, OUTPUT = "rt-input", "rt-output"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/facerec:latest"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}

LOGS_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": "*"}],
}


class Env:
    """A started cloud with an input and an output bucket and a Lambda role, as bootstrap would leave it."""

    def __init__(self, cloud: LocalCloud, failures: list[tuple[str, Any, str]]) -> None:
        self.cloud = cloud
        self.failures = failures
        self.s3 = cloud.client("s3")
        self.lam = cloud.client("lambda")
        iam = cloud.client("iam")
        for bucket in (INPUT, OUTPUT):
            self.s3.create_bucket(Bucket=bucket)
        self.role = iam.create_role(RoleName="facerec-lambda", AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
        # An inline policy, as bootstrap gives its roles (this cloud knows no AWS managed policy).
        iam.put_role_policy(RoleName="facerec-lambda", PolicyName="logs", PolicyDocument=json.dumps(LOGS_POLICY))

    def function(self, name: str, handler: str, *, memory_mb: int = 512, **variables: str) -> str:
        arn = self.lam.create_function(
            FunctionName=name,
            PackageType="Image",
            Code={"ImageUri": IMAGE},
            ImageConfig={"Command": [f"tests.runtime_handlers.{handler}"]},
            Role=self.role,
            Timeout=60,
            MemorySize=memory_mb,
            Environment={"Variables": {"OUTPUT_BUCKET": OUTPUT, **variables}},
        )["FunctionArn"]
        return arn

    def trigger(self, function_arn: str) -> None:
        """INPUT ObjectCreated -> the function, as bootstrap configures it on AWS."""
        self.lam.add_permission(
            FunctionName=function_arn,
            StatementId="s3-invoke",
            Action="lambda:InvokeFunction",
            Principal="s3.amazonaws.com",
            SourceArn=f"arn:aws:s3:::{INPUT}",
        )
        self.s3.put_bucket_notification_configuration(
            Bucket=INPUT,
            NotificationConfiguration={
                "LambdaFunctionConfigurations": [{"LambdaFunctionArn": function_arn, "Events": ["s3:ObjectCreated:*"]}]
            },
        )

    def outputs(self, prefix: str = "out/") -> dict[str, dict[str, Any]]:
        listed = self.s3.list_objects_v2(Bucket=OUTPUT, Prefix=prefix).get("Contents", [])
        return {
            o["Key"][len(prefix) :]: json.loads(self.s3.get_object(Bucket=OUTPUT, Key=o["Key"])["Body"].read())
            for o in listed
        }

    def idle(self, timeout: float = 30) -> None:
        assert self.cloud.dispatcher.wait_idle(timeout), f"still busy: {self.cloud.dispatcher.counters}"


@pytest.fixture
def make_env() -> Iterator[Any]:
    clouds: list[LocalCloud] = []

    def make(workers: int, **options: Any) -> Env:
        failures: list[tuple[str, Any, str]] = []
        cloud = LocalCloud(workers=workers, on_failure=lambda *args: failures.append(args), allow=TEST_HANDLERS, **options)
        cloud.start()
        clouds.append(cloud)
        return Env(cloud, failures)

    yield make
    for cloud in clouds:
        cloud.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("workers", [0, 2])
def test_s3_notifications_run_the_image_command_handler(make_env: Any, workers: int) -> None:
    env = make_env(workers)
    arn = env.function("splitter", "echo_to_s3", SETTING="from-function-env")
    env.trigger(arn)

    keys = [f"video {i}.mp4" for i in range(6)]  # a space: S3 notifications URL-encode keys
    for key in keys:
        env.s3.put_object(Bucket=INPUT, Key=key, Body=b"x")
    env.idle()

    out = env.outputs()
    assert sorted(out) == sorted(keys)
    first = out[keys[0]]
    assert first["function_name"] == "splitter"
    assert first["arn"] == arn
    assert first["memory"] == 512
    assert 0 < first["remaining_ms"] <= 60_000
    assert first["setting"] == "from-function-env"
    assert first["endpoint"] == env.cloud.endpoint_url
    pids = {o["pid"] for o in out.values()}
    if workers == 0:
        assert pids == {os.getpid()}
        assert os.environ.get("SETTING") is None  # applied around the call only
    else:
        assert os.getpid() not in pids and 1 <= len(pids) <= workers
    counters = env.cloud.dispatcher.counters
    assert (counters.succeeded, counters.failed, counters.retried, counters.in_flight) == (6, 0, 0, 0)
    assert env.failures == []


def test_put_object_and_event_invoke_return_before_the_handler_finishes(make_env: Any) -> None:
    env = make_env(1)
    arn = env.function("gated", "gated_echo")
    env.trigger(arn)
    env.cloud.prewarm("gated")

    # The handler waits for a release only the test gives: had either call waited for its handler,
    # that handler would have given up (released: false) and left its output before the call returned.
    env.s3.put_object(Bucket=INPUT, Key="a.mp4", Body=b"x")
    response = env.lam.invoke(FunctionName="gated", InvocationType="Event", Payload=json.dumps({"key": "direct"}))
    assert response["StatusCode"] == 202
    assert env.cloud.dispatcher.counters.in_flight == 2
    assert env.outputs() == {}  # both returned while their handlers were still running
    env.s3.put_object(Bucket=OUTPUT, Key="release", Body=b"")
    env.idle(60)
    assert sorted(env.outputs()) == ["a.mp4", "direct"]
    assert env.outputs("released/") == {"a.mp4": True, "direct": True}


def test_request_response_returns_the_payload_and_errors_unretried(make_env: Any) -> None:
    env = make_env(1)
    env.function("echo", "echo_to_s3", SETTING="v1")
    env.function("broken", "always_fail")

    response = env.lam.invoke(FunctionName="echo", Payload=json.dumps({"key": "sync"}))
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    payload = json.loads(response["Payload"].read())
    assert payload["key"] == "sync" and payload["setting"] == "v1"
    assert payload["request_id"] and payload["function_name"] == "echo"

    response = env.lam.invoke(FunctionName="broken", Payload=json.dumps({"key": "k"}))
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Payload"].read())
    assert error["errorType"] == "ValueError" and error["errorMessage"] == "always fails: k"
    assert env.cloud.dispatcher.counters.retried == 0
    assert env.failures == [] and env.cloud.dispatcher.failures == []

    # A configuration change reaches fresh workers.
    env.lam.update_function_configuration(
        FunctionName="echo", Environment={"Variables": {"OUTPUT_BUCKET": OUTPUT, "SETTING": "v2"}}
    )
    response = env.lam.invoke(FunctionName="echo", Payload=json.dumps({"key": "sync2"}))
    assert json.loads(response["Payload"].read())["setting"] == "v2"


@pytest.mark.parametrize("handler", ["fail_once", "die_once"])
def test_failed_attempts_are_retried(make_env: Any, handler: str) -> None:
    env = make_env(1)
    env.trigger(env.function("flaky", handler))
    env.s3.put_object(Bucket=INPUT, Key="v.mp4", Body=b"x")
    env.idle()

    assert list(env.outputs()) == ["v.mp4"]
    counters = env.cloud.dispatcher.counters
    assert (counters.succeeded, counters.failed, counters.retried) == (1, 0, 1)
    assert env.failures == []
    if handler == "die_once":  # the retry ran in a fresh worker
        first_pid = int(env.s3.get_object(Bucket=OUTPUT, Key="markers/die_once/v.mp4")["Body"].read())
        assert env.outputs()["v.mp4"]["pid"] != first_pid


def test_fail_once_in_process(make_env: Any) -> None:
    env = make_env(0)
    env.lam.invoke(
        FunctionName=env.function("flaky", "fail_once"), InvocationType="Event", Payload=json.dumps({"key": "k"})
    )
    env.idle()
    assert list(env.outputs()) == ["k"]
    assert env.cloud.dispatcher.counters.retried == 1


@pytest.mark.parametrize("workers", [0, 1])
def test_an_always_failing_event_ends_in_one_failure_after_three_attempts(make_env: Any, workers: int) -> None:
    env = make_env(workers)
    env.trigger(env.function("doomed", "always_fail"))
    env.s3.put_object(Bucket=INPUT, Key="bad.mp4", Body=b"x")
    env.idle()

    assert len(env.failures) == 1
    function_name, event, message = env.failures[0]
    assert function_name == "doomed"
    assert event["Records"][0]["s3"]["object"]["key"] == "bad.mp4"
    assert message == "ValueError: always fails: bad.mp4"
    [failure] = env.cloud.dispatcher.failures
    assert failure.attempts == 3
    counters = env.cloud.dispatcher.counters
    assert (counters.succeeded, counters.failed, counters.retried) == (0, 1, 2)


def test_stop_kills_busy_workers_also_on_keyboard_interrupt(tmp_path: Path) -> None:
    done = tmp_path / "done"
    from moto.awslambda.models import LambdaFunction

    original = LambdaFunction.__dict__["invoke"]
    with pytest.raises(KeyboardInterrupt):
        with LocalCloud(workers=1, allow=TEST_HANDLERS) as cloud:
            env = Env(cloud, [])
            env.function("slow", "slow_echo")
            event = {"key": "k", "sleep": 60, "done_file": str(done)}
            env.lam.invoke(FunctionName="slow", InvocationType="Event", Payload=json.dumps(event))
            deadline = time.monotonic() + 20
            while not env.outputs("started/") and time.monotonic() < deadline:
                time.sleep(0.05)
            pid = int(env.s3.get_object(Bucket=OUTPUT, Key="started/k")["Body"].read())
            raise KeyboardInterrupt
    assert not _alive(pid)
    assert not done.exists()  # killed mid-handler: stop did not wait out its 60 s
    assert LambdaFunction.__dict__["invoke"] is original  # moto restored
    assert not [t for t in threading.enumerate() if t.name.startswith("facerec-lane")]
    # The next cloud starts empty.
    with LocalCloud(workers=0) as cloud:
        assert cloud.client("s3").list_buckets()["Buckets"] == []


def test_a_worker_gets_the_cpu_share_of_its_memory(make_env):
    # Lambda gives a function CPU in proportion to its memory (1,769 MB: one vCPU): on this machine a
    # worker's nice level plays that share, so a 1 GB function yields to a 1,769 MB one.
    from facerec_cli.localcloud.runtime.workers import nice_for

    env = make_env(1)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    seen = {}
    for memory in (1769, 1024, 128):
        env.function(f"echo-{memory}", "echo_to_s3", memory_mb=memory)
        response = env.lam.invoke(FunctionName=f"echo-{memory}", Payload=json.dumps({"key": str(memory)}))
        seen[memory] = json.loads(response["Payload"].read())["nice"]
    assert [nice_for(m) for m in seen] == [0, 2, 12]
    assert seen == {m: max(ours, nice_for(m)) for m in seen}  # a process can lower its priority, never raise it


def test_settled_invocations_are_counted_per_function(make_env: Any) -> None:
    # run-local looks at the results when an invocation of a function that answers finishes, not after
    # every split: the count it waits on can be one function's.
    env = make_env(1)
    env.function("first", "echo_to_s3")
    env.function("second", "echo_to_s3")
    env.lam.invoke(FunctionName="first", Payload=json.dumps({"key": "a"}))
    dispatcher = env.cloud.dispatcher
    assert dispatcher.wait_settled(0, 0.0, ["second"]) == 0
    assert dispatcher.wait_settled(-1, 0.0, ["first", "second"]) == 1 == dispatcher.wait_settled(-1, 0.0)
    env.lam.invoke(FunctionName="second", Payload=json.dumps({"key": "b"}))
    assert dispatcher.wait_settled(0, 5.0, ["second"]) == 1 and dispatcher.wait_settled(0, 0.0) == 2


def test_a_workers_first_clients_parse_no_botocore_data(make_env: Any) -> None:
    # Parsing botocore's endpoints and service models cost each worker's first invocation 0.1-0.3 s:
    # the fork server parses them once (runtime/preload.py) and every worker starts with them.
    env = make_env(1)
    env.function("files", "client_files")
    response = env.lam.invoke(FunctionName="files", Payload=json.dumps({"key": "k"}))
    assert json.loads(response["Payload"].read()) == {"read": []}


def test_botocore_sessions_of_one_data_path_share_their_parsed_data(monkeypatch: Any) -> None:
    import boto3
    import botocore.session

    from facerec_cli.localcloud import botocore_data

    botocore_data.share_loaders()
    made = [boto3.Session(region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s") for _ in range(3)]
    for session in made:
        session.client("s3", endpoint_url="http://127.0.0.1:9")
    loaders = [s._session.get_component("data_loader") for s in made]
    assert loaders[0] is loaders[1] is loaders[2]
    # boto3 adds its data folder to the loader with every session: the shared loader's paths do not grow.
    grown_to = len(loaders[0].search_paths)
    for _ in range(5):
        boto3.Session(region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s").client("s3", endpoint_url="http://127.0.0.1:9")
    assert len(loaders[0].search_paths) == grown_to
    monkeypatch.setenv("AWS_DATA_PATH", "/nonexistent-models")  # another data path: a loader of its own
    other = botocore.session.Session().get_component("data_loader")
    assert other is not loaders[0] and "/nonexistent-models" in other.search_paths


def test_aws_managed_policies_only_when_asked_for() -> None:
    # run-local deploys inline policies only, and loading AWS's managed policies is half of moto's start;
    # `run-local --serve` asks for them, for outside clients that attach one.
    arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    for asked in (False, True):
        with LocalCloud(workers=0, aws_managed_policies=asked) as cloud:
            iam = cloud.client("iam")
            iam.create_role(RoleName="r", AssumeRolePolicyDocument=json.dumps(TRUST))
            if asked:
                iam.attach_role_policy(RoleName="r", PolicyArn=arn)
                assert [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName="r")["AttachedPolicies"]] == [arn]
            else:
                with pytest.raises(botocore.exceptions.ClientError, match="NoSuchEntity|not found|does not exist"):
                    iam.attach_role_policy(RoleName="r", PolicyArn=arn)


def test_a_moved_seam_fails_loudly(monkeypatch: Any) -> None:
    # A moto upgrade that moves or reshapes LambdaFunction.invoke cannot be produced with the pinned moto,
    # so the move is simulated by changing the class.
    from moto.awslambda.models import LambdaFunction

    check_seam()  # the pinned moto has the seam
    monkeypatch.delattr(LambdaFunction, "invoke")
    with pytest.raises(RuntimeError, match=r"moto 5\.2\.1.*LambdaFunction\.invoke does not exist"):
        check_seam()
    with pytest.raises(RuntimeError, match="moto 5.2.1"):
        LocalCloud().start()

    monkeypatch.setattr(LambdaFunction, "invoke", lambda self, event, context: None, raising=False)
    with pytest.raises(RuntimeError, match="has parameters"):
        check_seam()


def test_one_cloud_per_process() -> None:
    with LocalCloud(workers=0) as cloud:
        with pytest.raises(RuntimeError, match="already running"):
            LocalCloud().start()
        assert cloud.client("s3").list_buckets()["Buckets"] == []  # the refused start changed nothing


def test_a_multipart_upload_invokes_once(make_env: Any) -> None:
    # moto 5.2.1 also sends ObjectCreated:Put for a completed multipart upload; AWS does not.
    from boto3.s3.transfer import TransferConfig

    env = make_env(0)
    env.trigger(env.function("splitter", "echo_to_s3"))
    mib = 1024 * 1024
    env.s3.upload_fileobj(
        io.BytesIO(b"x" * 6 * mib),
        INPUT,
        "big.mp4",
        Config=TransferConfig(multipart_threshold=5 * mib, multipart_chunksize=5 * mib),
    )
    env.idle()
    [invocation] = env.cloud.dispatcher.invocations
    assert invocation.event["Records"][0]["eventName"] == "ObjectCreated:CompleteMultipartUpload"
    assert list(env.outputs()) == ["big.mp4"]


USER_SESSION = """
import json
from facerec_cli.localcloud.server import LocalCloud
from tests.test_local_runtime import TEST_HANDLERS, Env

with LocalCloud(workers=1, allow=TEST_HANDLERS) as cloud:
    env = Env(cloud, [])
    env.function("echo", "echo_to_s3")
    payload = env.lam.invoke(FunctionName="echo", Payload=json.dumps({"key": "k"}))["Payload"].read()
    print(payload.decode())
"""


def test_the_users_aws_files_and_profile_are_never_read(tmp_path: Path) -> None:
    # In a fresh process: moto caches the boto3 Session it builds for itself, so only a first start
    # shows whether that Session read the user's files. Files botocore cannot parse make any read fail.
    broken = tmp_path / "aws-config"
    broken.write_text("[profile broken\nthis is not ini\n")
    env = {
        **os.environ,
        "AWS_PROFILE": "someones-real-account",
        "AWS_CONFIG_FILE": str(broken),
        "AWS_SHARED_CREDENTIALS_FILE": str(broken),
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",  # would send the handler's S3 calls nowhere
    }
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", USER_SESSION], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    # Handler output (echo_to_s3 prints) goes to stderr: stdout stays for the CLI's own output (--json).
    [line] = proc.stdout.splitlines()
    payload = json.loads(line)
    assert payload["key"] == "k" and payload["profile"] is None
    assert "echo k" in proc.stderr


def test_one_notification_with_two_records_splits_and_recognises_both(make_env: Any, data: Path, celeb_gallery: Any, tmp_path: Path) -> None:
    """video-splitting with ONE S3 event holding TWO records (S3 may batch them): both videos get their
    stage-1 frames and their own face-recognition invocation; the real handlers run in the cloud."""
    from urllib.parse import quote_plus

    from facerec_cli.samples import still_video

    env = make_env(0)
    stage1 = "rt-stage-1"
    env.s3.create_bucket(Bucket=stage1)
    for name, command, variables in (
        ("face-recognition", "lambdas.face_recognition.handler", {"FACEREC_GALLERY": str(celeb_gallery[0])}),
        ("video-splitting", "lambdas.video_splitting.handler", {"STAGE1_BUCKET": stage1, "RECOGNITION_FUNCTION": "face-recognition"}),
    ):
        env.lam.create_function(
            FunctionName=name, PackageType="Image", Code={"ImageUri": IMAGE}, ImageConfig={"Command": [command]},
            Role=env.role, Timeout=120, MemorySize=1024, Environment={"Variables": {"OUTPUT_BUCKET": OUTPUT, **variables}},
        )  # fmt: skip
    people = {"madonna clip.mp4": "madonna", "elton+john.mp4": "elton_john"}  # keys arrive URL-encoded
    records = []
    for i, (key, person) in enumerate(people.items()):
        video = still_video(sorted((data / "5celeb" / "val" / person).iterdir())[0], tmp_path / f"{i}.mp4", seconds=2)
        env.s3.upload_file(str(video), INPUT, key)  # no notification on INPUT: only the event below runs
        head = env.s3.head_object(Bucket=INPUT, Key=key)
        records.append({
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": "2026-11-01T00:00:00.000Z",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": INPUT, "arn": f"arn:aws:s3:::{INPUT}"},
                   "object": {"key": quote_plus(key), "size": head["ContentLength"], "eTag": head["ETag"].strip('"'), "sequencer": f"{i + 1:016X}"}},
        })  # fmt: skip
    env.lam.invoke(FunctionName="video-splitting", InvocationType="Event", Payload=json.dumps({"Records": records}))
    env.idle(600)

    invocations = env.cloud.dispatcher.invocations
    assert [i.spec.name for i in invocations].count("video-splitting") == 1
    recognitions = [i.event for i in invocations if i.spec.name == "face-recognition"]
    assert sorted(r["video"] for r in recognitions) == sorted(people)
    stage1_keys = {o["Key"] for o in env.s3.list_objects_v2(Bucket=stage1).get("Contents", [])}
    for key, person in people.items():
        stem = key[: -len(".mp4")]
        assert f"{stem}.jpg" in stage1_keys
        (request,) = [r for r in recognitions if r["video"] == key]
        assert [f["key"] for f in request["frames"]] == [f"{stem}.jpg"] and len(request["samples"]) == 2  # decoded by recognition if needed
        assert env.s3.get_object(Bucket=OUTPUT, Key=f"{stem}.txt")["Body"].read().decode() == person
    counters = env.cloud.dispatcher.counters
    assert (counters.succeeded, counters.failed) == (3, 0) and env.failures == []


def test_the_local_runtime_imports_no_torch() -> None:
    """Spawned workers re-import their parent's __main__ module: a script (or the CLI) that imports the
    local runtime at the top must not make every video-splitting worker load torch (~2 s and ~500 MB
    of RSS here). Run in a fresh interpreter, as a spawned worker would."""
    import subprocess
    import sys

    code = (
        "import sys, facerec_cli.cli.app, facerec_cli.pipeline.local.runner, facerec_cli.cli.run_local, lambdas.video_splitting; "
        "print(sorted(m for m in ('torch', 'facenet_pytorch', 'torchvision') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_the_cli_registers_every_command_without_loading_aws_or_the_deploy_engine() -> None:
    """`facerec identify` starts lean with every command registered: the command modules import boto3,
    the deploy engine and the models inside their functions, not at the top."""
    import subprocess
    import sys

    code = (
        "import sys; from facerec_cli.cli.app import app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'torch', 'onnxruntime', 'moto') "
        "or m.startswith(('facerec_cli.infra', 'facerec_cli.pipeline', 'facerec_cli.iaas.', 'facerec_cli.cli.deploy_flow'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------ what runs


def test_the_runtime_runs_only_the_pipelines_handlers_and_variables() -> None:
    from facerec_cli.pipeline.stack import FAILURE_COMMAND, RECOGNITION_COMMAND, SPLITTING_COMMAND
    from facerec_cli.localcloud.runtime.functions import LocalFunction
    from facerec_cli.pipeline.local.handlers import PIPELINE_HANDLERS

    assert PIPELINE_HANDLERS == {SPLITTING_COMMAND, RECOGNITION_COMMAND, FAILURE_COMMAND}  # what bootstrap deploys
    allow = pipeline_allowlist()
    arn = "arn:aws:lambda:us-east-1:123456789012:function:face-recognition"
    good = LocalFunction("face-recognition", arn, RECOGNITION_COMMAND, {"OUTPUT_BUCKET": "o", "FACEREC_GALLERY": "s3://o/g", "FACEREC_THREADS": "1"})
    assert allow.refusal(good) is None
    for handler in ("tests.runtime_handlers.echo_to_s3", "os.system", None):
        refusal = allow.refusal(LocalFunction("face-recognition", arn, handler))
        assert refusal is not None and f"names the handler {handler!r}" in refusal, refusal
    for variable in ("LD_PRELOAD", "PYTHONPATH", "AWS_ENDPOINT_URL", "FACEREC_MODELS", "FACEREC_WEIGHTS_DIR", "HOME"):
        spec = LocalFunction("face-recognition", arn, RECOGNITION_COMMAND, {"OUTPUT_BUCKET": "o", variable: "/tmp/x"})
        refusal = allow.refusal(spec)
        assert refusal is not None and f"sets {variable}, which the local runtime does not pass" in refusal, refusal


def test_a_function_changed_to_another_handler_or_variable_is_refused(tmp_path: Path) -> None:
    """moto on 127.0.0.1 takes UpdateFunctionConfiguration from any local user: a configuration that sets
    LD_PRELOAD (or names another handler) must never reach a process. Refused with a clear error, logged."""
    log = tmp_path / "functions.log"
    failures: list[tuple[str, Any, str]] = []
    with LocalCloud(workers=1, on_failure=lambda *args: failures.append(args), log_path=str(log), allow=TEST_HANDLERS) as cloud:
        env = Env(cloud, failures)
        env.function("echo", "echo_to_s3", SETTING="v1")
        assert "FunctionError" not in env.lam.invoke(FunctionName="echo", Payload=json.dumps({"key": "before"}))
        (before_pid,) = cloud.dispatcher.worker_pids()["echo"]

        variables = {"OUTPUT_BUCKET": OUTPUT, "SETTING": "v1", "LD_PRELOAD": str(tmp_path / "evil.so")}
        env.lam.update_function_configuration(FunctionName="echo", Environment={"Variables": variables})
        refused = env.lam.invoke(FunctionName="echo", Payload=json.dumps({"key": "after"}))
        assert refused["FunctionError"] == "Unhandled"
        error = json.loads(refused["Payload"].read())
        assert error["errorType"] == "Runtime.ConfigurationRefused"
        assert error["errorMessage"].startswith("refused to run echo: its configuration sets LD_PRELOAD, which the local runtime does not pass")
        assert cloud.dispatcher.worker_pids()["echo"] == []  # no worker was started with it
        deadline = time.monotonic() + 10
        while _alive(before_pid) and time.monotonic() < deadline:  # the old worker was told to stop
            time.sleep(0.05)
        assert not _alive(before_pid)

        # Asynchronous invocations fail like any other failure: retried, then given up on.
        env.lam.invoke(FunctionName="echo", InvocationType="Event", Payload=json.dumps({"key": "async"}))
        env.idle()
        assert [(name, message.split(":")[0]) for name, _, message in failures] == [("echo", "Runtime.ConfigurationRefused")]

        # Another handler (moto keeps ImageConfig on updates: the function is made again, as anyone could).
        config = env.lam.get_function_configuration(FunctionName="echo")
        env.lam.delete_function(FunctionName="echo")
        env.lam.create_function(
            FunctionName="echo", PackageType="Image", Code={"ImageUri": IMAGE}, ImageConfig={"Command": ["os.system"]},
            Role=config["Role"], Environment={"Variables": {"OUTPUT_BUCKET": OUTPUT}},
        )  # fmt: skip
        other = json.loads(env.lam.invoke(FunctionName="echo", Payload=json.dumps({"key": "k"}))["Payload"].read())
        assert other["errorMessage"].startswith("refused to run echo: its configuration names the handler 'os.system'")
        assert sorted(env.outputs()) == ["before"]  # nothing ran after the change

    text = log.read_text()
    assert text.count("refused to run echo: its configuration sets LD_PRELOAD") == 1  # once per configuration
    assert "refused to run echo: its configuration names the handler 'os.system'" in text
    assert log.stat().st_mode & 0o777 == 0o600  # the workers created it private


def test_the_runtimes_default_allowlist_runs_nothing() -> None:
    # The runtime knows nothing of the pipeline: a cloud not handed an allowlist refuses even its handlers.
    with LocalCloud(workers=0) as cloud:
        env = Env(cloud, [])
        env.lam.create_function(
            FunctionName="splitter", PackageType="Image", Code={"ImageUri": IMAGE}, Role=env.role,
            ImageConfig={"Command": ["lambdas.video_splitting.handler"]}, Environment={"Variables": {"OUTPUT_BUCKET": OUTPUT}},
        )  # fmt: skip
        error = json.loads(env.lam.invoke(FunctionName="splitter", Payload=json.dumps({"key": "k"}))["Payload"].read())
        assert error["errorType"] == "Runtime.ConfigurationRefused", error
        assert "names the handler 'lambdas.video_splitting.handler', and the local runtime was started to run no handler" in error["errorMessage"]
        assert env.outputs() == {}


def test_the_pipelines_allowlist_refuses_anything_but_the_pipeline() -> None:
    with LocalCloud(workers=0, allow=pipeline_allowlist()) as cloud:
        env = Env(cloud, [])
        env.function("echo", "echo_to_s3")
        error = json.loads(env.lam.invoke(FunctionName="echo", Payload=json.dumps({"key": "k"}))["Payload"].read())
        assert error["errorType"] == "Runtime.ConfigurationRefused" and "'tests.runtime_handlers.echo_to_s3'" in error["errorMessage"]
        env.lam.create_function(
            FunctionName="splitter", PackageType="Image", Code={"ImageUri": IMAGE}, Role=env.role,
            ImageConfig={"Command": ["lambdas.video_splitting.handler"]}, Environment={"Variables": {"PYTHONPATH": "/tmp"}},
        )  # fmt: skip
        error = json.loads(env.lam.invoke(FunctionName="splitter", Payload=json.dumps({"key": "k"}))["Payload"].read())
        assert "refused to run splitter: its configuration sets PYTHONPATH" in error["errorMessage"]
        assert env.outputs() == {}


# ------------------------------------------------------------------------------------------ IAM


def test_with_iam_enforced_handlers_run_with_exactly_their_roles_policy(make_env: Any) -> None:
    import boto3
    import botocore.exceptions

    env = make_env(1, enforce_iam=True)
    iam = env.cloud.client("iam")
    # The fake keys of an unenforced cloud are refused; the cloud's own clients are an administrator's.
    fake = boto3.client("s3", endpoint_url=env.cloud.endpoint_url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId"):
        fake.list_buckets()
    assert {b["Name"] for b in env.s3.list_buckets()["Buckets"]} == {INPUT, OUTPUT}

    env.function("echo", "echo_to_s3")  # its role may only write logs (AWSLambdaBasicExecutionRole)
    denied = env.lam.invoke(FunctionName="echo", Payload=json.dumps({"key": "k"}))
    assert denied["FunctionError"] == "Unhandled"
    assert "AccessDenied" in json.loads(denied["Payload"].read())["errorMessage"]

    write_out = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{OUTPUT}/out/*"}]}
    iam.put_role_policy(RoleName="facerec-lambda", PolicyName="write-out", PolicyDocument=json.dumps(write_out))
    allowed = env.lam.invoke(FunctionName="echo", Payload=json.dumps({"key": "k"}))
    assert "FunctionError" not in allowed, allowed["Payload"].read()
    assert list(env.outputs()) == ["k"]
    # The policy is read at every request: taken away, the same warm worker is denied again.
    iam.delete_role_policy(RoleName="facerec-lambda", PolicyName="write-out")
    assert env.lam.invoke(FunctionName="echo", Payload=json.dumps({"key": "k2"}))["FunctionError"] == "Unhandled"
    assert len(env.cloud.dispatcher.worker_pids()["echo"]) == 1


def test_iam_enforcement_needs_worker_processes() -> None:
    with pytest.raises(ValueError, match="enforce_iam needs worker processes"):
        LocalCloud(workers=0, enforce_iam=True)


def test_moto_routes_without_listing_its_package_on_every_request(monkeypatch):
    """moto_routing reads moto's module list once: a request routed after that does not list the
    directory again (os.listdir made to fail), and the list is moto's own."""
    import os

    from moto import backends

    from facerec_cli.localcloud import moto_routing

    moto_routing.install()
    listed = list(backends.list_of_moto_modules())
    assert "s3" in listed and "awslambda" in listed

    def no_listing(path):  # a spy that fails: routing must not list moto's directory any more
        raise AssertionError(f"listed {path}")

    monkeypatch.setattr(os, "listdir", no_listing)
    assert list(backends.list_of_moto_modules()) == listed


def test_run_local_defaults_to_a_worker_per_core(monkeypatch):
    """One recognition worker per core by default (one left 100 uploads queued on it while the other core
    idled), at most four; one container per function with the containers runtime."""
    import os

    from facerec_cli.localcloud.runtime.workers import MAX_DEFAULT_WORKERS, default_workers

    for cores, expected in ((1, 1), (2, 2), (16, MAX_DEFAULT_WORKERS)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert (default_workers(), default_workers("containers")) == (expected, 1)


def test_the_fork_server_is_stopped_and_reaped():
    """run-local's workers come from a fork server; stopping it leaves no process behind (it would
    otherwise outlive run-local, re-parented), and the next worker starts a new one."""
    from multiprocessing import forkserver

    from facerec_cli.lifeline import alive
    from facerec_cli.localcloud.runtime.workers import start_fork_server, stop_fork_server

    start_fork_server()
    pid = forkserver._forkserver._forkserver_pid  # CPython's record of it (what stop_fork_server reaps)
    assert pid is not None and alive(pid)
    stop_fork_server()
    assert not alive(pid)
    start_fork_server()
    again = forkserver._forkserver._forkserver_pid
    assert again is not None and again != pid and alive(again)
    stop_fork_server()
    assert not alive(again)


def _forked_worker_sessions(gallery: Path, workers: int, weights: str = "casia-webface") -> dict[str, Any]:
    """What a process forked by a fork server started for run-local's (gallery, workers) holds, its
    models looked up for ``weights`` (see runtime_handlers.inherited_sessions)."""
    from facerec_cli.localcloud.runtime.workers import _context, start_fork_server, stop_fork_server
    from tests.runtime_handlers import inherited_sessions

    start_fork_server(gallery, None, workers)
    try:
        ctx = _context()
        answer = ctx.Queue()
        proc = ctx.Process(target=inherited_sessions, args=(answer, weights))
        proc.start()
        report = answer.get(timeout=60)
        proc.join(10)
        return report
    finally:
        stop_fork_server()


def test_the_fork_server_makes_the_recognition_models_its_workers_use(celeb_gallery: Any, monkeypatch: Any) -> None:
    # Each recognition worker made its own sessions of the four nets (0.2-0.25 s of its start on 2 cores,
    # after the deploy): the fork server makes them once, while moto starts and the deploy runs, and every
    # worker it forks starts with them, sharing their memory.
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})  # 2 cores, 2 workers: 1 thread each
    report = _forked_worker_sessions(celeb_gallery[0], 2, celeb_gallery[1].weights)
    assert report == {"threads": [1, 1, 1, 1], "torch": False, "reused": True, "same_embedding": True}


def test_the_fork_server_makes_no_sessions_a_worker_could_not_use(celeb_gallery: Any, tmp_path: Path, monkeypatch: Any) -> None:
    # Where the recognition workers get several threads each (16 cores, 2 workers: 7), a session made
    # before the fork would lose its thread pool: none is made. A torch gallery (a course data.pt) is not
    # converted there either: that would bring torch into every worker.
    import torch

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert _forked_worker_sessions(celeb_gallery[0], 2) == {"threads": [], "torch": False}
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    course = tmp_path / "data.torch"
    torch.save([[torch.zeros(1, 512)], ["someone"]], course)
    assert _forked_worker_sessions(course, 2) == {"threads": [], "torch": False}
