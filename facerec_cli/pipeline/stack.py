"""Desired state: what `facerec bootstrap` should leave behind, as plain data.

Built from :class:`~facerec_cli.config.Settings` (names, region) plus :class:`DeployOptions` (images,
gallery, sizes, extra environment) and the account id. Nothing here talks to AWS; the planner
(:mod:`.plan`) compares this with what exists and the executor (:mod:`.apply`) makes the calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambdas import env as fenv
from lambdas.core.models import THREADS_ENV
from lambdas.core.media import VIDEO_SUFFIXES  # what the input bucket's notification triggers on

from facerec_cli.config import Settings
from facerec_cli.errors import UserError

SPLITTING = "splitting"
RECOGNITION = "recognition"

SPLITTING_COMMAND = "lambdas.video_splitting.handler"
RECOGNITION_COMMAND = "lambdas.face_recognition.handler"

# Statement id of the S3 -> splitting invoke permission and id prefix of the notification
# configurations this tool owns (configurations with other ids are left alone).
PERMISSION_SID = "facerec-s3-invoke"
NOTIFICATION_ID_PREFIX = "facerec-"
ROLE_POLICY_NAME = "facerec-least-privilege"
LIFECYCLE_RULE_ID = "facerec-stage1-expiry"
RETENTION_RULE_ID = "facerec-retention"  # --retain-days on the input and output buckets
TLS_ONLY_SID = "facerec-tls-only"  # the bucket policy statement refusing plain-HTTP requests
TAG_KEY = "facerec:prefix"
# Results carry this object tag (the output bucket's retention rule expires only tagged objects: S3 lifecycle
# filters cannot exclude a key, and the gallery lives in the same bucket).
from lambdas.storage import RESULT_TAG_KEY, RESULT_TAG_VALUE  # noqa: E402 - the handlers tag results with it

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


@dataclass(frozen=True)
class BucketSpec:
    name: str
    region: str
    encryption: dict[str, Any]
    public_access_block: dict[str, bool]
    ownership: str
    # Lifecycle rules this tool owns that must be there (others' rules are kept); None: none to ensure.
    lifecycle_rules: list[dict[str, Any]] | None
    drop_rule_ids: tuple[str, ...] = ()  # this tool's rules that must not be there (--retain-days 0)
    # Bucket policy statements this tool owns (by Sid; others' statements are kept); empty: none.
    policy_statements: tuple[dict[str, Any], ...] = ()
    role: str = ""  # "input" | "stage-1" | "output": what the plan says its rules do

    @property
    def arn(self) -> str:
        return f"arn:{partition_for(self.region)}:s3:::{self.name}"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arn: str
    attributes: dict[str, str]


@dataclass(frozen=True)
class LogGroupSpec:
    name: str
    function: str
    retention_days: int | None


@dataclass(frozen=True)
class RepositorySpec:
    name: str
    uri: str
    scan_on_push: bool = True
    tag_mutability: str = "MUTABLE"


@dataclass(frozen=True)
class RoleSpec:
    name: str
    arn: str
    function: str
    trust_policy: dict[str, Any]
    policy_name: str
    policy: dict[str, Any]


@dataclass(frozen=True)
class FunctionSpec:
    kind: str  # SPLITTING | RECOGNITION
    name: str
    arn: str
    role_arn: str
    image_uri: str | None  # None: placeholder on create, keep on update
    placeholder_image_uri: str
    command: list[str]
    memory: int
    timeout: int
    environment: dict[str, str]
    architectures: list[str]
    description: str
    tags: dict[str, str]

    @property
    def create_image_uri(self) -> str:
        return self.image_uri or self.placeholder_image_uri


@dataclass(frozen=True)
class EventInvokeSpec:
    function: str
    maximum_retry_attempts: int
    maximum_event_age_seconds: int
    on_failure_arn: str


@dataclass(frozen=True)
class PermissionSpec:
    function: str
    sid: str
    principal: str
    source_arn: str
    source_account: str


@dataclass(frozen=True)
class NotificationSpec:
    bucket: str
    function_arn: str
    suffixes: tuple[str, ...]

    def configurations(self) -> list[dict[str, Any]]:
        return [
            {
                "Id": notification_id(suffix),
                "LambdaFunctionArn": self.function_arn,
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": suffix}]}},
            }
            for suffix in self.suffixes
        ]


@dataclass(frozen=True)
class GallerySpec:
    bucket: str
    key: str
    path: Path
    md5: str  # of body
    body: bytes = field(repr=False)  # what is uploaded: the file's bytes, or an old torch gallery converted
    converted: bool = False  # body is the safetensors conversion of a torch file

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def of_file(cls, bucket: str, key: str, path: Path) -> "GallerySpec":
        """The upload of gallery file ``path``: a safetensors gallery as it is; an old torch gallery or
        a course data.pt converted (the runtime reads only safetensors and never unpickles)."""
        from facerec_cli.galleries import upload_body

        body, converted = upload_body(path)
        return cls(bucket, key, path, hashlib.md5(body).hexdigest(), body, converted)


@dataclass(frozen=True)
class DesiredState:
    settings: Settings
    account_id: str
    region: str
    partition: str
    buckets: list[BucketSpec]
    queue: QueueSpec
    log_groups: list[LogGroupSpec]
    repository: RepositorySpec | None
    roles: list[RoleSpec]
    functions: list[FunctionSpec]  # recognition first: splitting invokes it
    event_invoke: list[EventInvokeSpec]
    permission: PermissionSpec
    notification: NotificationSpec
    gallery: GallerySpec | None
    tags: dict[str, str]

    def function(self, kind: str) -> FunctionSpec:
        return next(f for f in self.functions if f.kind == kind)

    def role_for(self, function_name: str) -> RoleSpec:
        return next(r for r in self.roles if r.function == function_name)


def partition_for(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _dns_suffix(region: str) -> str:
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def notification_id(suffix: str) -> str:
    # Upper and lower case variants need distinct ids: ".MP4" -> "facerec-MP4".
    return f"{NOTIFICATION_ID_PREFIX}{suffix.lstrip('.')}"


# The input bucket notifies on every video suffix. S3 suffix filters are case sensitive, so the upper
# case variant of each gets its own configuration too (phones and cameras often write `.MP4`/`.MOV`).
def notification_suffixes(suffixes: tuple[str, ...] = VIDEO_SUFFIXES) -> tuple[str, ...]:
    out: list[str] = []
    for suffix in suffixes:
        for variant in (suffix.lower(), suffix.upper()):
            if variant not in out:
                out.append(variant)
    return tuple(out)


def trust_policy() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def _logs_statement(partition: str, region: str, account: str, group: str) -> dict[str, Any]:
    # `arn:...:log-group:NAME` is the log group itself (CreateLogGroup); `NAME:*` is how AWS prints
    # the group's ARN for its streams (CreateLogStream/PutLogEvents). Nothing outside this group.
    group_arn = f"arn:{partition}:logs:{region}:{account}:log-group:{group}"
    return {
        "Sid": "OwnLogGroup",
        "Effect": "Allow",
        "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": [group_arn, f"{group_arn}:*"],
    }


# Writing a result: the object, with its result tag (a PutObject carrying tags needs s3:PutObjectTagging
# too). Denied on the gallery: tagged as a result, it would expire with the results.
RESULT_WRITE_ACTIONS = ["s3:PutObject", "s3:PutObjectTagging"]


def tls_only_statement(bucket_arn: str) -> dict[str, Any]:
    """Deny every request to the bucket and its objects that does not come over TLS."""
    return {
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def retention_rule(days: int, *, tagged_results: bool) -> dict[str, Any]:
    """Expire objects ``days`` after they were written: every object (the input bucket's uploads, with
    their unfinished multipart uploads), or only those tagged as results (the output bucket, which also
    holds the gallery)."""
    rule: dict[str, Any] = {"ID": RETENTION_RULE_ID, "Status": "Enabled", "Expiration": {"Days": days}}
    if tagged_results:
        rule["Filter"] = {"Tag": {"Key": RESULT_TAG_KEY, "Value": RESULT_TAG_VALUE}}
    else:
        rule["Filter"] = {"Prefix": ""}
        rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": 1}
    return rule


def plain_http(endpoint_url: str | None) -> bool:
    return bool(endpoint_url) and str(endpoint_url).lower().startswith("http://")


def splitting_policy(settings: Settings, *, partition: str, account: str, recognition_arn: str, queue_arn: str) -> dict[str, Any]:
    """Least privilege for video-splitting.

    No s3:ListBucket/GetObject on the output bucket, and PutObject there only on ``*.json``/``*.txt``:
    the function only writes error results for refused inputs under deterministic keys
    (<stem>.json/.txt), so a redelivered event overwrites the same objects. It reads back its own done marker in stage-1 (HeadObject: GetObject, and ListBucket
    so that a missing key answers 404 rather than 403) to skip a redelivered S3 event. Writing the gallery object is
    denied explicitly: the function decodes untrusted uploads and must not be able to replace
    the gallery (the Allow on `output/*` would otherwise cover it).
    """
    n = settings.names
    s3 = f"arn:{partition}:s3:::"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadUploads", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.input_bucket}/*"},
            {"Sid": "WriteFrames", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{s3}{n.stage1_bucket}/*"},
            {"Sid": "CheckFrames", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.stage1_bucket}/*"},
            {"Sid": "ListFrames", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"{s3}{n.stage1_bucket}"},
            {
                "Sid": "WriteErrorResults", "Effect": "Allow", "Action": RESULT_WRITE_ACTIONS,
                "Resource": [f"{s3}{n.output_bucket}/*.json", f"{s3}{n.output_bucket}/*.txt"],
            },
            {"Sid": "ProtectGallery", "Effect": "Deny", "Action": RESULT_WRITE_ACTIONS, "Resource": f"{s3}{n.output_bucket}/{n.gallery_key}"},
            {"Sid": "InvokeRecognition", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": recognition_arn},
            _logs_statement(partition, settings.region, account, n.log_group(n.splitting_function)),
            {"Sid": "ReportFailures", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": queue_arn},
        ],
    }


def recognition_policy(settings: Settings, *, partition: str, account: str, queue_arn: str) -> dict[str, Any]:
    """Least privilege for face-recognition. Besides frames and the gallery it may read result JSON
    (HeadObject on ``<stem>.json``, with ListBucket so a missing key answers 404) to skip a duplicate
    invocation; nothing else in the output bucket."""
    n = settings.names
    s3 = f"arn:{partition}:s3:::"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadFrames", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.stage1_bucket}/*"},
            {"Sid": "ListFrames", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"{s3}{n.stage1_bucket}"},
            {"Sid": "ReadGallery", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.output_bucket}/{n.gallery_key}"},
            {"Sid": "CheckResults", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.output_bucket}/*.json"},
            {"Sid": "ListResults", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"{s3}{n.output_bucket}"},
            {"Sid": "WriteResults", "Effect": "Allow", "Action": RESULT_WRITE_ACTIONS, "Resource": f"{s3}{n.output_bucket}/*"},
            {"Sid": "ProtectGallery", "Effect": "Deny", "Action": RESULT_WRITE_ACTIONS, "Resource": f"{s3}{n.output_bucket}/{n.gallery_key}"},
            _logs_statement(partition, settings.region, account, n.log_group(n.recognition_function)),
            {"Sid": "ReportFailures", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": queue_arn},
            # Timelines (FACEREC_TIMELINE on video-splitting; lambdas/segments.py): each segment reads the
            # upload to decode its range, and stores its part and the merge claim beside the frames.
            {"Sid": "ReadUploadsForTimelines", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.input_bucket}/*"},
            {"Sid": "WriteTimelineSegments", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{s3}{n.stage1_bucket}/.facerec/segments/*"},
        ],
    }


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


def build_desired(settings: Settings, options: DeployOptions, account_id: str) -> DesiredState:
    n = settings.names
    region = settings.region
    partition = partition_for(region)
    tags = {TAG_KEY: settings.prefix}

    def s3_arn(bucket: str) -> str:
        return f"arn:{partition}:s3:::{bucket}"

    def lambda_arn(name: str) -> str:
        return f"arn:{partition}:lambda:{region}:{account_id}:function:{name}"

    sse = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
    pab = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    stage1_rules = [
        {
            "ID": LIFECYCLE_RULE_ID,
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "Expiration": {"Days": settings.stage1_expiry_days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
    ]
    tls_only = options.tls_only if options.tls_only is not None else not plain_http(settings.endpoint_url)
    retain = settings.retain_days

    def bucket(name: str, role: str) -> BucketSpec:
        rules: list[dict[str, Any]] | None = None
        drop: tuple[str, ...] = ()
        if role == "stage-1":
            rules = stage1_rules
        elif retain:
            rules = [retention_rule(retain, tagged_results=role == "output")]
        elif retain == 0:
            drop = (RETENTION_RULE_ID,)
        statements = (tls_only_statement(s3_arn(name)),) if tls_only else ()
        return BucketSpec(name, region, sse, pab, "BucketOwnerEnforced", rules, drop, statements, role)

    buckets = [bucket(n.input_bucket, "input"), bucket(n.stage1_bucket, "stage-1"), bucket(n.output_bucket, "output")]

    queue_arn = f"arn:{partition}:sqs:{region}:{account_id}:{n.failure_queue}"
    queue = QueueSpec(
        n.failure_queue,
        queue_arn,
        {"SqsManagedSseEnabled": "true", "MessageRetentionPeriod": str(FAILURE_RETENTION_SECONDS)},
    )

    repo_uri = f"{account_id}.dkr.ecr.{region}.{_dns_suffix(region)}/{n.ecr_repository}"
    repository = RepositorySpec(n.ecr_repository, repo_uri) if options.with_ecr else None
    placeholder = f"{repo_uri}:local"

    split_name, rec_name = n.splitting_function, n.recognition_function
    rec_arn = lambda_arn(rec_name)
    roles = [
        RoleSpec(
            n.role(rec_name),
            f"arn:{partition}:iam::{account_id}:role/{n.role(rec_name)}",
            rec_name,
            trust_policy(),
            ROLE_POLICY_NAME,
            recognition_policy(settings, partition=partition, account=account_id, queue_arn=queue_arn),
        ),
        RoleSpec(
            n.role(split_name),
            f"arn:{partition}:iam::{account_id}:role/{n.role(split_name)}",
            split_name,
            trust_policy(),
            ROLE_POLICY_NAME,
            splitting_policy(settings, partition=partition, account=account_id, recognition_arn=rec_arn, queue_arn=queue_arn),
        ),
    ]

    gallery_uri = f"s3://{n.output_bucket}/{n.gallery_key}"
    split_env: dict[str, str] = {
        fenv.STAGE1_BUCKET: n.stage1_bucket,
        fenv.RECOGNITION_FUNCTION: rec_name,
        fenv.OUTPUT_BUCKET: n.output_bucket,
    }
    for name, value in ((fenv.FRAMES, options.frames), (fenv.FPS, options.fps), (fenv.MAX_BYTES, options.max_bytes), (fenv.MAX_SECONDS, options.max_seconds)):
        if value is not None:
            split_env[name] = str(value)
    split_env.update(_check_env(SPLITTING, options.splitting_env))
    rec_env: dict[str, str] = {
        fenv.OUTPUT_BUCKET: n.output_bucket,
        fenv.GALLERY_URI: gallery_uri,
        fenv.WEIGHTS: options.weights,
    }
    # One onnxruntime thread: a second one doubled the CPU time per video for a few percent of speed
    # (benchmarks/lambda_memory.py); the local runtime sets its own share of the cores.
    rec_env[THREADS_ENV] = "1"
    if options.threshold is not None:
        rec_env[fenv.THRESHOLD] = str(options.threshold)
    rec_env.update(_check_env(RECOGNITION, options.recognition_env))

    functions = [
        FunctionSpec(
            RECOGNITION, rec_name, rec_arn, roles[0].arn, options.recognition_image, placeholder,
            [RECOGNITION_COMMAND], options.recognition_memory, options.recognition_timeout, rec_env,
            [options.architecture], f"facerec ({settings.prefix}): recognise faces in sampled frames", tags,
        ),
        FunctionSpec(
            SPLITTING, split_name, lambda_arn(split_name), roles[1].arn, options.splitting_image, placeholder,
            [SPLITTING_COMMAND], options.splitting_memory, options.splitting_timeout, split_env,
            [options.architecture], f"facerec ({settings.prefix}): sample frames from uploaded videos", tags,
        ),
    ]
    event_invoke = [EventInvokeSpec(f.name, MAX_RETRY_ATTEMPTS, MAX_EVENT_AGE_SECONDS, queue_arn) for f in functions]
    log_groups = [LogGroupSpec(n.log_group(f.name), f.name, options.log_retention_days) for f in functions]
    permission = PermissionSpec(split_name, PERMISSION_SID, "s3.amazonaws.com", s3_arn(n.input_bucket), account_id)
    notification = NotificationSpec(n.input_bucket, lambda_arn(split_name), notification_suffixes())

    gallery = None
    if options.gallery is not None:
        path = Path(options.gallery)
        if not path.is_file():
            raise UserError(f"gallery {path} not found", hint="make one with `facerec enroll PHOTOS_DIR -o GALLERY`")
        gallery = GallerySpec.of_file(n.output_bucket, n.gallery_key, path)

    return DesiredState(
        settings=settings, account_id=account_id, region=region, partition=partition, buckets=buckets,
        queue=queue, log_groups=log_groups, repository=repository, roles=roles, functions=functions,
        event_invoke=event_invoke, permission=permission, notification=notification, gallery=gallery, tags=tags,
    )
