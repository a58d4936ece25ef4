"""The serverless pipeline's stack: every AWS resource `facerec bootstrap` makes, as specs in the order
they are created (the planner deletes them in the reverse order).

Built from :class:`~facerec_cli.config.Settings` (names, region), :class:`DeployOptions` (images, gallery,
sizes, extra environment) and the account id; nothing here talks to AWS. The ECR repository comes
first: the images are pushed to it before the functions that run them are made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facerec_cli.config import Settings
from facerec_cli.errors import UserError
from facerec_cli.gallery_files import gallery_object
from facerec_cli.infra.naming import ROLE_POLICY_NAME, TAG_KEY, TLS_ONLY_SID, dns_suffix, partition_for, plain_http, tls_only_statement
from facerec_cli.infra.planner import Stack
from facerec_cli.infra.resources.awslambda import EventInvokeSpec, FunctionSpec, PermissionSpec
from facerec_cli.infra.resources.ecr import RepositorySpec
from facerec_cli.infra.resources.iam import RoleSpec
from facerec_cli.infra.resources.logs import LogGroupSpec
from facerec_cli.infra.resources.s3 import BucketSpec, NotificationSpec, ObjectSpec
from facerec_cli.infra.resources.sqs import QueueSpec
from facerec_cli.pipeline.policies import failure_policy, recognition_policy, splitting_policy
from lambdas import env as fenv
from lambdas.core.models import THREADS_ENV
from lambdas.core.names import plural
# Results carry this object tag (the details bucket's retention rule expires only tagged objects: S3 lifecycle
# filters cannot exclude a key, and the gallery lives in the same bucket).
from lambdas.storage import RESULT_TAG_KEY, RESULT_TAG_VALUE

__all__ = ["ROLE_POLICY_NAME", "TAG_KEY", "DeployOptions", "pipeline_stack"]

SPLITTING_COMMAND = "lambdas.video_splitting.handler"
RECOGNITION_COMMAND = "lambdas.face_recognition.handler"
# The on-failure destination runs in the splitting image (boto3 and the handlers' code is all it needs).
FAILURE_COMMAND = "lambdas.on_failure.handler"
FAILURE_MEMORY, FAILURE_TIMEOUT = 256, 60
# Statement id of the S3 -> splitting invoke permission and id prefix of the notification
# configurations this tool owns (configurations with other ids are left alone).
PERMISSION_SID = "facerec-s3-invoke"
NOTIFICATION_ID_PREFIX = "facerec-"
LIFECYCLE_RULE_ID = "facerec-stage1-expiry"
ECR_POLICY_SID = "facerec-lambda-pull"  # the repository policy statement letting Lambda read the images
RETENTION_RULE_ID = "facerec-retention"  # --retain-days on the input, output and details buckets
MAX_RETRY_ATTEMPTS = 2
MAX_EVENT_AGE_SECONDS = 3600
FAILURE_RETENTION_SECONDS = 14 * 24 * 3600  # SQS maximum: failure records are worth keeping


@dataclass(frozen=True)
class DeployOptions:
    """Everything about a deployment that is not a resource name.

    ``splitting_image``/``recognition_image``: image URIs. ``None`` means: create the function with a
    placeholder URI (``<account>.dkr.ecr.<region>.amazonaws.com/<repo>:local``; the local runtime, on
    moto, never pulls it) and leave the image of an existing function as it is.
    """

    splitting_image: str | None = None
    recognition_image: str | None = None
    gallery: Path | None = None
    # From benchmarks/lambda_memory.py (README, "Lambda memory"): per video, splitting costs the same at
    # 512 MB but takes twice as long; recognition with one onnxruntime thread is cheapest per GB-s around
    # one vCPU (1,769 MB: 450 ms, 0.78 GB-s) and no faster above it; 3,008 MB with two threads cost 2.1x.
    splitting_memory: int = 1024
    splitting_timeout: int = 120
    recognition_memory: int = 1769
    recognition_timeout: int = 300
    # Set on the functions only when given; the handlers' defaults live in lambdas/env.py.
    frames: int | None = None
    fps: float | None = None
    max_bytes: int | None = None
    max_seconds: float | None = None
    threshold: float | None = None
    weights: str = "casia-webface"
    splitting_env: Mapping[str, str] = field(default_factory=dict)
    recognition_env: Mapping[str, str] = field(default_factory=dict)
    architecture: str = "x86_64"
    log_retention_days: int | None = 14
    with_ecr: bool = False
    # A bucket policy denying requests not made over TLS. None: on, unless the endpoint is plain http://
    # (a local moto server: every request to it would be denied).
    tls_only: bool | None = None


# The input bucket's trigger: one configuration with no key filter, and video-splitting answers any upload
# that is not a video with an error result. Why no suffix filters: S3 refuses a notification
# configuration whose rules overlap ("Notification configurations that use Filter cannot define filtering
# rules with overlapping prefixes, overlapping suffixes, or prefix and suffix overlapping" for the same
# event type: S3 User Guide, "Configuring event notifications using object key name filtering"), and the
# guide does not say that suffixes differing only in case (.mp4, .MP4) do not overlap; a suffix filter per
# case is the configuration that may be refused. Without a filter, .MP4, .Mov and .mp4 all trigger.
NOTIFICATION_ID = f"{NOTIFICATION_ID_PREFIX}uploads"

# Lambda's ephemeral storage (/tmp): 512 MB (the default, free) to 10,240 MB. Beyond the video itself,
# room for what sits beside it: frames being encoded, the gallery, the runtime's own files.
EPHEMERAL_MIN_MB, EPHEMERAL_MAX_MB = 512, 10240
TMP_HEADROOM_MB = 256


def ephemeral_storage_mb(max_bytes: int) -> int:
    """/tmp for a function that holds an upload of up to ``max_bytes`` (FACEREC_MAX_BYTES), in MB."""
    wanted = -(-max_bytes // (1024 * 1024)) + TMP_HEADROOM_MB
    if wanted > EPHEMERAL_MAX_MB:
        limit = (EPHEMERAL_MAX_MB - TMP_HEADROOM_MB) * 1024 * 1024
        raise UserError(
            f"{fenv.MAX_BYTES}={max_bytes} does not fit in Lambda's /tmp: at most {limit} bytes "
            f"({EPHEMERAL_MAX_MB} MB of ephemeral storage, less {TMP_HEADROOM_MB} MB for temporaries)",
            hint=f"set a smaller {fenv.MAX_BYTES} for the functions",
        )
    return max(EPHEMERAL_MIN_MB, wanted)


def retention_rule(days: int, *, tagged_results: bool) -> dict[str, Any]:
    """Expire objects ``days`` after they were written: every object (the input bucket's uploads, with
    their unfinished multipart uploads), or only those tagged as results (the output and details
    buckets; the details bucket also holds the gallery)."""
    rule: dict[str, Any] = {"ID": RETENTION_RULE_ID, "Status": "Enabled", "Expiration": {"Days": days}}
    if tagged_results:
        rule["Filter"] = {"Tag": {"Key": RESULT_TAG_KEY, "Value": RESULT_TAG_VALUE}}
    else:
        rule["Filter"] = {"Prefix": ""}
        rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": 1}
    return rule


# Names Lambda sets itself and refuses in a function's Environment.
RESERVED_ENV = frozenset(
    {
        "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
        "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
        "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
    }
)


def _check_env(kind: str, extra: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in extra.items():
        if key in RESERVED_ENV or key.startswith("AWS_LAMBDA_"):
            raise UserError(f"environment variable {key} for the {kind} function is reserved by Lambda", hint="choose another name")
        out[str(key)] = str(value)
    return out


def _buckets(settings: Settings, options: DeployOptions, partition: str) -> list[BucketSpec]:
    n, region, retain = settings.names, settings.region, settings.retain_days
    tls_only = options.tls_only if options.tls_only is not None else not plain_http(settings.endpoint_url)
    stage1_rule = {
        "ID": LIFECYCLE_RULE_ID, "Filter": {"Prefix": ""}, "Status": "Enabled",
        "Expiration": {"Days": settings.stage1_expiry_days}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }

    def bucket(name: str, role: str) -> BucketSpec:
        rules: tuple[dict[str, Any], ...] = ()
        drop: tuple[str, ...] = ()
        text = ""
        if role == "stage-1":
            rules, text = (stage1_rule,), f"objects expire after {plural(settings.stage1_expiry_days, 'day')}"
        elif retain:
            rules = (retention_rule(retain, tagged_results=role in ("output", "details")),)
            text = f"uploads expire after {plural(retain, 'day')}" if role == "input" else \
                f"results (tagged {RESULT_TAG_KEY}={RESULT_TAG_VALUE}) expire after {plural(retain, 'day')}, the gallery stays"
        elif retain == 0:
            drop, text = (RETENTION_RULE_ID,), "no retention rule"
        statements = (tls_only_statement(f"arn:{partition}:s3:::{name}"),) if tls_only else ()
        return BucketSpec(name, region, statements, frozenset({TLS_ONLY_SID}), rules, drop, text)

    return [bucket(n.input_bucket, "input"), bucket(n.stage1_bucket, "stage-1"), bucket(n.output_bucket, "output"),
            bucket(n.details_bucket, "details")]


def _environments(settings: Settings, options: DeployOptions) -> tuple[dict[str, str], dict[str, str]]:
    """(video-splitting's, face-recognition's) environment."""
    n = settings.names
    results = {fenv.OUTPUT_BUCKET: n.output_bucket, fenv.DETAILS_BUCKET: n.details_bucket}
    splitting = {fenv.STAGE1_BUCKET: n.stage1_bucket, fenv.RECOGNITION_FUNCTION: n.recognition_function, **results}
    for name, value in ((fenv.FRAMES, options.frames), (fenv.FPS, options.fps), (fenv.MAX_BYTES, options.max_bytes), (fenv.MAX_SECONDS, options.max_seconds)):
        if value is not None:
            splitting[name] = str(value)
    splitting.update(_check_env("splitting", options.splitting_env))
    # One onnxruntime thread: a second one doubled the CPU time per video for a few percent of speed
    # (benchmarks/lambda_memory.py); the local runtime sets its own share of the cores.
    recognition = {
        **results, fenv.GALLERY_URI: f"s3://{n.details_bucket}/{n.gallery_key}", fenv.WEIGHTS: options.weights, THREADS_ENV: "1",
    }
    if options.threshold is not None:
        recognition[fenv.THRESHOLD] = str(options.threshold)
    recognition.update(_check_env("recognition", options.recognition_env))
    return splitting, recognition


def pipeline_stack(settings: Settings, options: DeployOptions, account_id: str) -> Stack:
    n, region = settings.names, settings.region
    partition = partition_for(region)
    tags = {TAG_KEY: settings.prefix}

    def lambda_arn(name: str) -> str:
        return f"arn:{partition}:lambda:{region}:{account_id}:function:{name}"

    def role(function: str, policy: dict[str, Any]) -> RoleSpec:
        name = n.role(function)
        return RoleSpec(name, f"arn:{partition}:iam::{account_id}:role/{name}", "lambda.amazonaws.com", ROLE_POLICY_NAME, policy,
                        f"facerec: execution role of the {function} function")

    queue_arn = f"arn:{partition}:sqs:{region}:{account_id}:{n.failure_queue}"
    repo_uri = f"{account_id}.dkr.ecr.{region}.{dns_suffix(region)}/{n.ecr_repository}"
    split_name, rec_name = n.splitting_function, n.recognition_function
    fail_name = n.failure_function
    fail_role = role(fail_name, failure_policy(settings, partition=partition, account=account_id, queue_arn=queue_arn))
    rec_role = role(rec_name, recognition_policy(settings, partition=partition, account=account_id, failure_arn=lambda_arn(fail_name)))
    split_role = role(split_name, splitting_policy(settings, partition=partition, account=account_id, recognition_arn=lambda_arn(rec_name),
                                                   failure_arn=lambda_arn(fail_name)))  # fmt: skip
    split_env, rec_env = _environments(settings, options)
    fail_env = {fenv.OUTPUT_BUCKET: n.output_bucket, fenv.DETAILS_BUCKET: n.details_bucket, fenv.FAILURE_QUEUE: n.failure_queue}
    # Both hold a whole upload in /tmp: video-splitting while it samples, face-recognition while a
    # timeline's segments of it keep coming (lambdas/segments.py). The on-failure function needs none.
    video_tmp = ephemeral_storage_mb(int(split_env.get(fenv.MAX_BYTES) or fenv.DEFAULT_MAX_BYTES))

    def function(name: str, role: RoleSpec, image: str | None, command: str, memory: int, timeout: int, env: dict[str, str], what: str,
                 tmp: int = EPHEMERAL_MIN_MB) -> FunctionSpec:  # fmt: skip
        return FunctionSpec(name, lambda_arn(name), role.arn, image, f"{repo_uri}:local", [command], memory, timeout, env,
                            [options.architecture], f"facerec ({settings.prefix}): {what}", tags, tmp)

    # The on-failure destination first (the others name it), then recognition (splitting invokes it).
    functions = [
        function(fail_name, fail_role, options.splitting_image, FAILURE_COMMAND, FAILURE_MEMORY, FAILURE_TIMEOUT, fail_env,
                 "answer for invocations that failed every attempt or expired"),
        function(rec_name, rec_role, options.recognition_image, RECOGNITION_COMMAND, options.recognition_memory, options.recognition_timeout,
                 rec_env, "recognise faces in sampled frames", video_tmp),
        function(split_name, split_role, options.splitting_image, SPLITTING_COMMAND, options.splitting_memory, options.splitting_timeout,
                 split_env, "sample frames from uploaded videos", video_tmp),
    ]
    notification = NotificationSpec(
        n.input_bucket, (_notification(lambda_arn(split_name)),), NOTIFICATION_ID_PREFIX, f"s3:ObjectCreated:* (every key) -> {split_name}",
    )
    gallery_key = n.gallery_key
    if options.gallery is not None:
        path = Path(options.gallery)
        if not path.is_file():
            raise UserError(f"gallery {path} not found", hint="make one with `facerec enroll PHOTOS_DIR -o GALLERY`")
        gallery = gallery_object(n.details_bucket, gallery_key, path)
    else:
        gallery = ObjectSpec(n.details_bucket, gallery_key, missing=f"no gallery at s3://{n.details_bucket}/{gallery_key}: recognition fails until one is uploaded (pass --gallery)")

    specs: list[Any] = [RepositorySpec(n.ecr_repository, repo_uri, policy=lambda_pull_policy(partition, region, account_id))] if options.with_ecr else []
    specs += _buckets(settings, options, partition)
    specs.append(QueueSpec(n.failure_queue, {"SqsManagedSseEnabled": "true", "MessageRetentionPeriod": str(FAILURE_RETENTION_SECONDS)},
                           "failure destination, SSE (SQS-managed), 14 day retention", "with any failure records in it"))
    specs += [LogGroupSpec(n.log_group(f.name), f.name, options.log_retention_days) for f in functions]
    specs += [fail_role, rec_role, split_role, *functions]
    # Failed or expired invocations of the two go to the on-failure function; its own go to the queue.
    specs += [EventInvokeSpec(f.name, MAX_RETRY_ATTEMPTS, MAX_EVENT_AGE_SECONDS, queue_arn if f.name == fail_name else lambda_arn(fail_name))
              for f in functions]  # fmt: skip
    specs.append(PermissionSpec(split_name, PERMISSION_SID, "s3.amazonaws.com", f"arn:{partition}:s3:::{n.input_bucket}", account_id))
    specs += [notification, gallery]
    return Stack(specs, tags)


def lambda_pull_policy(partition: str, region: str, account_id: str) -> dict[str, Any]:
    """The repository policy that lets Lambda pull the images for this account's functions, as the Lambda
    developer guide gives it for container images ("Amazon ECR permissions"): the Lambda service may
    BatchGetImage and GetDownloadUrlForLayer when the source is a function of this account in this region.
    Lambda sets a policy of its own only when the caller of CreateFunction may SetRepositoryPolicy; set
    here, it does not depend on that."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": ECR_POLICY_SID,
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            "Condition": {"StringLike": {"aws:sourceArn": f"arn:{partition}:lambda:{region}:{account_id}:function:*"}},
        }],
    }  # fmt: skip


def _notification(function_arn: str) -> dict[str, Any]:
    return {"Id": NOTIFICATION_ID, "LambdaFunctionArn": function_arn, "Events": ["s3:ObjectCreated:*"]}
