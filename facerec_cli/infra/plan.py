"""The planner: read what exists, compare it with the desired state, and return the API calls that
would close the gap as an ordered :class:`Plan`. Nothing here changes anything until a step's
``call`` is run (by :func:`facerec_cli.infra.executor.apply_plan`), so a plan is also the dry run.

Order matters and is fixed here: buckets, failure queue, log groups, ECR repository, roles (IAM
propagates slowly: they come long before the functions), functions (recognition first: splitting
invokes it), event invoke configs (need the queue), the S3 invoke permission, then the bucket
notification (S3 validates it against the permission), then the gallery upload.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import botocore.exceptions

from facerec_cli.infra.aws import error_code
from facerec_cli.infra.clients import Clients
from facerec_cli.pipeline.stack import (
    NOTIFICATION_ID_PREFIX,
    RESULT_TAG_KEY,
    RESULT_TAG_VALUE,
    TLS_ONLY_SID,
    BucketSpec,
    DesiredState,
    EventInvokeSpec,
    FunctionSpec,
    GallerySpec,
    LogGroupSpec,
    NotificationSpec,
    PermissionSpec,
    QueueSpec,
    RepositorySpec,
    RoleSpec,
)
from facerec_cli.infra.errors import DeployError, explain

Action = Literal["create", "update", "delete", "noop"]

SYMBOLS = {"create": "+", "update": "~", "delete": "-", "noop": "="}

# Error codes that mean "this does not exist" for the describe/get calls used here.
ABSENT = frozenset(
    {
        "NoSuchBucket",
        "NoSuchKey",
        "NotFound",
        "404",
        "NoSuchEntity",
        "ResourceNotFoundException",
        "RepositoryNotFoundException",
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "ServerSideEncryptionConfigurationNotFoundError",
        "NoSuchPublicAccessBlockConfiguration",
        "OwnershipControlsNotFoundError",
        "NoSuchLifecycleConfiguration",
        "NoSuchBucketPolicy",
    }
)


# --------------------------------------------------------------------------------------- plan types


class Calls:
    """A step's call made of named parts run in order. ``done`` names the parts that completed, so a
    step that fails half way says exactly what it left behind."""

    def __init__(self, *parts: tuple[str, Callable[[], Any]]) -> None:
        self.parts = list(parts)
        self.done: list[str] = []

    def __call__(self) -> None:
        self.done = []
        for name, fn in self.parts:
            fn()
            self.done.append(name)

    def __repr__(self) -> str:
        return f"Calls({', '.join(name for name, _ in self.parts)})"


@dataclass
class Step:
    action: Action
    resource: str  # "<kind> <name>", e.g. "s3 bucket demo-input", "lambda function video-splitting"
    detail: str = ""
    call: Callable[[], Any] | None = None

    def __str__(self) -> str:
        text = f"{SYMBOLS[self.action]} {self.action:<6} {self.resource}"
        return f"{text}: {self.detail}" if self.detail else text

    @property
    def past(self) -> str:
        return {"create": "created", "update": "updated", "delete": "deleted", "noop": "unchanged"}[self.action]

    def to_dict(self) -> dict[str, str]:
        return {"action": self.action, "resource": self.resource, "detail": self.detail}


@dataclass
class Plan:
    kind: str  # "deploy" | "destroy"
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Problems known before anything runs that make a step certain to fail (a bucket name owned by
    # another account): apply_plan refuses such a plan instead of stopping half way through it.
    blockers: list[str] = field(default_factory=list)

    @property
    def changes(self) -> list[Step]:
        return [s for s in self.steps if s.action != "noop"]

    @property
    def empty(self) -> bool:
        return not self.changes

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "delete": 0, "noop": 0}
        for step in self.steps:
            out[step.action] += 1
        return out

    def summary(self) -> str:
        c = self.counts()
        if self.empty:
            if self.kind == "destroy":
                return "Nothing to destroy."
            return f"No changes: {c['noop']} resources up to date."
        parts = [f"{c[a]} to {a}" for a in ("create", "update", "delete") if c[a]]
        if c["noop"]:
            parts.append(f"{c['noop']} unchanged")
        return f"Plan ({self.kind}): " + ", ".join(parts) + "."

    def render(self, *, show_noops: bool = False) -> str:
        lines = [str(s) for s in self.steps if show_noops or s.action != "noop"]
        lines += [f"! {w}" for w in self.warnings]
        lines += [f"!! {b}" for b in self.blockers]
        lines.append(self.summary())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "steps": [s.to_dict() for s in self.steps],
            "warnings": list(self.warnings),
            "blockers": list(self.blockers),
            "summary": self.summary(),
        }


# --------------------------------------------------------------------------------------- helpers

# Patched by tests so that retries do not sleep.
_sleep: Callable[[float], None] = time.sleep


def get_or_none(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """``fn(**kwargs)``, or None when AWS says the thing does not exist."""
    try:
        return fn(**kwargs)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ABSENT:
            return None
        raise


def retrying(fn: Callable[[], Any], *, when: Callable[[botocore.exceptions.ClientError], bool], attempts: int = 8, first_delay: float = 1.0, max_delay: float = 10.0) -> Callable[[], Any]:
    """Wrap ``fn`` to retry ClientErrors that ``when`` accepts, with exponential backoff (~45 s)."""

    def run() -> Any:
        delay = first_delay
        for attempt in range(attempts):
            try:
                return fn()
            except botocore.exceptions.ClientError as exc:
                if attempt == attempts - 1 or not when(exc):
                    raise
                _sleep(delay)
                delay = min(delay * 2, max_delay)
        raise AssertionError("unreachable")

    return run


def _message(exc: botocore.exceptions.ClientError) -> str:
    return (exc.response.get("Error", {}).get("Message") or "").lower()


def iam_not_ready(exc: botocore.exceptions.ClientError) -> bool:
    """Lambda/S3 refusing a role or permission that IAM has not propagated yet, or a function still
    busy with its previous update."""
    code = error_code(exc)
    msg = _message(exc)
    if code == "InvalidParameterValueException" and ("role" in msg or "permission" in msg):
        return True
    if code == "ResourceConflictException" and ("in progress" in msg or "pending" in msg):
        return True
    if code == "InvalidArgument" and "unable to validate" in msg:  # S3 notification destination
        return True
    return False


def canonical_policy(doc: Any) -> Any:
    """A policy document with lists as sorted lists and single strings where AWS allows either, so
    that equal policies compare equal however AWS echoes them back."""
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except ValueError:
            return doc
    if isinstance(doc, dict):
        return {k: canonical_policy(v) for k, v in sorted(doc.items())}
    if isinstance(doc, list):
        items = [canonical_policy(v) for v in doc]
        if len(items) == 1 and isinstance(items[0], str):
            return items[0]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return doc


def _strip(resp: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (resp or {}).items() if k != "ResponseMetadata"}


def owned_buckets(clients: Clients) -> set[str]:
    """Buckets this account owns. A name missing here is either free or someone else's."""
    names: set[str] = set()
    kwargs: dict[str, Any] = {}
    while True:
        resp = clients.s3.list_buckets(**kwargs)
        names.update(b["Name"] for b in resp.get("Buckets", []))
        token = resp.get("ContinuationToken")
        if not token:
            return names
        kwargs = {"ContinuationToken": token, "MaxBuckets": 1000}


def bucket_taken(clients: Clients, name: str) -> bool:
    """True when a bucket we do not own has this name (HeadBucket: 404 free; 403/301/200 taken)."""
    try:
        clients.s3.head_bucket(Bucket=name)
        return True
    except botocore.exceptions.ClientError as exc:
        return error_code(exc) not in ("404", "NoSuchBucket", "NotFound")


def wait_function(clients: Clients, name: str, waiter: str) -> None:
    clients.lambda_.get_waiter(waiter).wait(FunctionName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 150})


# --------------------------------------------------------------------------------------- planner


class DeployPlanner:
    def __init__(self, desired: DesiredState, clients: Clients) -> None:
        self.d = desired
        self.c = clients
        self.warnings: list[str] = []
        self.blockers: list[str] = []
        self.owned: set[str] = set()
        self.existing_functions: dict[str, dict[str, Any]] = {}

    def plan(self) -> Plan:
        d = self.d
        self.owned = owned_buckets(self.c)
        steps: list[Step] = [self.bucket(b) for b in d.buckets]
        steps.append(self.queue(d.queue))
        steps += [self.log_group(g) for g in d.log_groups]
        if d.repository is not None:
            steps.append(repository_step(self.c, d.repository, d.tags))
        steps += [self.role(r) for r in d.roles]
        steps += [self.function(f) for f in d.functions]
        steps += [self.event_invoke(e) for e in d.event_invoke]
        steps.append(self.permission(d.permission))
        steps.append(self.notification(d.notification))
        if d.gallery is not None:
            steps.append(self.gallery(d.gallery))
        else:
            self.check_gallery_present()
        return Plan("deploy", steps, self.warnings, self.blockers)

    # ---- S3 buckets

    def bucket(self, b: BucketSpec) -> Step:
        s3 = self.c.s3
        resource = f"s3 bucket {b.name}"
        settings = "SSE-S3 (AES256), public access blocked, BucketOwnerEnforced"
        settings += ", TLS only (bucket policy)" if b.policy_statements else ", no TLS-only policy (plain-HTTP endpoint)"
        expiry = _expiry_text(b)
        if expiry:
            settings += f", {expiry}"

        put_pab = ("block public access", lambda: s3.put_public_access_block(Bucket=b.name, PublicAccessBlockConfiguration=b.public_access_block))
        put_own = ("enforce bucket owner", lambda: s3.put_bucket_ownership_controls(Bucket=b.name, OwnershipControls={"Rules": [{"ObjectOwnership": b.ownership}]}))
        put_sse = ("set default encryption", lambda: s3.put_bucket_encryption(Bucket=b.name, ServerSideEncryptionConfiguration=b.encryption))

        def put_policy(statements: list[dict[str, Any]]) -> tuple[str, Callable[[], Any]]:
            if not statements:
                return ("delete bucket policy", lambda: s3.delete_bucket_policy(Bucket=b.name))
            document = json.dumps({"Version": "2012-10-17", "Statement": statements})
            return ("set bucket policy (TLS only)", lambda: s3.put_bucket_policy(Bucket=b.name, Policy=document))

        def put_rules(rules: list[dict[str, Any]]) -> tuple[str, Callable[[], Any]]:
            if not rules:
                return ("delete lifecycle", lambda: s3.delete_bucket_lifecycle(Bucket=b.name))
            return ("set lifecycle", lambda: s3.put_bucket_lifecycle_configuration(Bucket=b.name, LifecycleConfiguration={"Rules": rules}))

        if b.name not in self.owned:
            detail = settings
            if bucket_taken(self.c, b.name):
                self.blockers.append(f"bucket name {b.name} is taken by another AWS account (choose another --prefix)")
                detail = f"{settings} [name taken by another account]"

            def create() -> None:
                kwargs: dict[str, Any] = {"Bucket": b.name}
                if b.region != "us-east-1":
                    kwargs["CreateBucketConfiguration"] = {"LocationConstraint": b.region}
                s3.create_bucket(**kwargs)

            parts = [("create bucket", create), put_pab, put_own, put_sse]
            if b.policy_statements:
                parts.append(put_policy(list(b.policy_statements)))
            if b.lifecycle_rules:
                parts.append(put_rules(list(b.lifecycle_rules)))
            return Step("create", resource, detail, Calls(*parts))

        drift: list[str] = []
        parts = []
        sse = _strip(get_or_none(s3.get_bucket_encryption, Bucket=b.name)).get("ServerSideEncryptionConfiguration", {})
        rules = sse.get("Rules") or [{}]
        default = rules[0].get("ApplyServerSideEncryptionByDefault", {})
        if default.get("SSEAlgorithm") != "AES256" or default.get("KMSMasterKeyID"):
            drift.append(f"encryption {default.get('SSEAlgorithm', 'none')} -> AES256")
            parts.append(put_sse)
        pab = _strip(get_or_none(s3.get_public_access_block, Bucket=b.name)).get("PublicAccessBlockConfiguration", {})
        if {k: bool(pab.get(k)) for k in b.public_access_block} != b.public_access_block:
            drift.append("public access block")
            parts.append(put_pab)
        own = _strip(get_or_none(s3.get_bucket_ownership_controls, Bucket=b.name)).get("OwnershipControls", {}).get("Rules") or [{}]
        if own[0].get("ObjectOwnership") != b.ownership:
            drift.append(f"object ownership {own[0].get('ObjectOwnership', 'none')} -> {b.ownership}")
            parts.append(put_own)

        # The bucket policy: this tool's statements (by Sid) as wanted, anyone else's kept.
        statements = _policy_statements(get_or_none(s3.get_bucket_policy, Bucket=b.name))
        ours = {st["Sid"] for st in b.policy_statements} | {TLS_ONLY_SID}
        mine = {st.get("Sid"): st for st in statements if st.get("Sid") in ours}
        wanted = {st["Sid"]: st for st in b.policy_statements}
        if {sid: canonical_policy(st) for sid, st in mine.items()} != {sid: canonical_policy(st) for sid, st in wanted.items()}:
            drift.append("bucket policy: TLS only" if wanted else "bucket policy: remove TLS-only statement")
            parts.append(put_policy([st for st in statements if st.get("Sid") not in ours] + list(b.policy_statements)))

        # Lifecycle: this tool's rules (by ID) as wanted, anyone else's kept.
        if b.lifecycle_rules or b.drop_rule_ids:
            current = _strip(get_or_none(s3.get_bucket_lifecycle_configuration, Bucket=b.name)).get("Rules", [])
            wanted_rules = list(b.lifecycle_rules or [])
            ids = {r["ID"] for r in wanted_rules} | set(b.drop_rule_ids)
            have = {r.get("ID"): _norm_rule(r) for r in current if r.get("ID") in ids}
            if have != {r["ID"]: _norm_rule(r) for r in wanted_rules}:
                drift.append(f"lifecycle: {expiry}" if wanted_rules and expiry else "lifecycle: remove the retention rule")
                parts.append(put_rules([r for r in current if r.get("ID") not in ids] + wanted_rules))
        if not drift:
            return Step("noop", resource, settings)
        return Step("update", resource, ", ".join(drift), Calls(*parts))

    # ---- SQS

    def queue(self, q: QueueSpec) -> Step:
        sqs = self.c.sqs
        resource = f"sqs queue {q.name}"
        detail = "failure destination, SSE (SQS-managed), 14 day retention"
        url = (get_or_none(sqs.get_queue_url, QueueName=q.name) or {}).get("QueueUrl")
        if url is None:
            return Step("create", resource, detail, Calls(("create queue", lambda: sqs.create_queue(QueueName=q.name, Attributes=q.attributes, tags=self.d.tags))))
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]).get("Attributes", {})
        changed = {k: v for k, v in q.attributes.items() if attrs.get(k) != v}
        if not changed:
            return Step("noop", resource, detail)
        return Step(
            "update", resource, ", ".join(f"{k} {attrs.get(k)} -> {v}" for k, v in changed.items()),
            Calls(("set attributes", lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes=changed))),
        )

    # ---- CloudWatch Logs

    def log_group(self, g: LogGroupSpec) -> Step:
        logs = self.c.logs
        resource = f"log group {g.name}"
        detail = f"retention {g.retention_days} days" if g.retention_days else "retention: never expire"
        current = find_log_group(self.c, g.name)

        def set_retention() -> None:
            if g.retention_days:
                logs.put_retention_policy(logGroupName=g.name, retentionInDays=g.retention_days)
            else:
                logs.delete_retention_policy(logGroupName=g.name)

        if current is None:
            parts = [("create log group", lambda: logs.create_log_group(logGroupName=g.name, tags=self.d.tags))]
            if g.retention_days:
                parts.append(("set retention", set_retention))
            return Step("create", resource, detail, Calls(*parts))
        if current.get("retentionInDays") == g.retention_days:
            return Step("noop", resource, detail)
        return Step("update", resource, f"retention {current.get('retentionInDays')} -> {g.retention_days}", Calls(("set retention", set_retention)))

    # ---- IAM

    def role(self, r: RoleSpec) -> Step:
        iam = self.c.iam
        resource = f"iam role {r.name}"
        detail = f"assumed by lambda.amazonaws.com; inline policy {r.policy_name} ({len(r.policy['Statement'])} statements)"
        put_policy = ("put inline policy", lambda: iam.put_role_policy(RoleName=r.name, PolicyName=r.policy_name, PolicyDocument=json.dumps(r.policy)))
        current = get_or_none(iam.get_role, RoleName=r.name)
        if current is None:
            create = (
                "create role",
                lambda: iam.create_role(
                    RoleName=r.name,
                    AssumeRolePolicyDocument=json.dumps(r.trust_policy),
                    Description=f"facerec: execution role of the {r.function} function",
                    Tags=[{"Key": k, "Value": v} for k, v in self.d.tags.items()],
                ),
            )
            return Step("create", resource, detail, Calls(create, put_policy))
        drift: list[str] = []
        parts: list[tuple[str, Callable[[], Any]]] = []
        if canonical_policy(current["Role"].get("AssumeRolePolicyDocument")) != canonical_policy(r.trust_policy):
            drift.append("trust policy")
            parts.append(("update trust policy", lambda: iam.update_assume_role_policy(RoleName=r.name, PolicyDocument=json.dumps(r.trust_policy))))
        doc = get_or_none(iam.get_role_policy, RoleName=r.name, PolicyName=r.policy_name)
        if doc is None or canonical_policy(doc.get("PolicyDocument")) != canonical_policy(r.policy):
            drift.append("inline policy")
            parts.append(put_policy)
        # Least privilege means nothing else: other inline policies and attached managed policies go.
        for name in _paginate(iam, "list_role_policies", "PolicyNames", RoleName=r.name):
            if name != r.policy_name:
                drift.append(f"remove inline policy {name}")
                parts.append((f"delete inline policy {name}", lambda name=name: iam.delete_role_policy(RoleName=r.name, PolicyName=name)))
        for pol in _paginate(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=r.name):
            arn = pol["PolicyArn"]
            drift.append(f"detach {pol.get('PolicyName', arn)}")
            parts.append((f"detach {arn}", lambda arn=arn: iam.detach_role_policy(RoleName=r.name, PolicyArn=arn)))
        if not drift:
            return Step("noop", resource, detail)
        return Step("update", resource, ", ".join(drift), Calls(*parts))

    # ---- Lambda functions

    def function(self, f: FunctionSpec) -> Step:
        lam = self.c.lambda_
        resource = f"lambda function {f.name}"
        image = f.image_uri or f"{f.placeholder_image_uri} (placeholder)"
        detail = f"image {image}, command {f.command[0]}, {f.memory} MB, {f.timeout} s"
        current = get_or_none(lam.get_function, FunctionName=f.name)

        def create() -> None:
            retrying(
                lambda: lam.create_function(
                    FunctionName=f.name,
                    Role=f.role_arn,
                    PackageType="Image",
                    Code={"ImageUri": f.create_image_uri},
                    ImageConfig={"Command": f.command},
                    Description=f.description,
                    MemorySize=f.memory,
                    Timeout=f.timeout,
                    Environment={"Variables": f.environment},
                    Architectures=f.architectures,
                    Tags=f.tags,
                ),
                when=iam_not_ready,
            )()

        create_parts = [("create function", create), ("wait until active", lambda: wait_function(self.c, f.name, "function_active_v2"))]
        if current is None:
            return Step("create", resource, detail, Calls(*create_parts))
        config = current["Configuration"]
        if config.get("Role") != f.role_arn:
            self.warnings.append(f"function {f.name} uses role {config.get('Role')}, not {f.role_arn}: another deployment in this region? bootstrap takes it over")
        if config.get("PackageType", "Zip") != "Image":
            parts = [("delete Zip function", lambda: lam.delete_function(FunctionName=f.name)), *create_parts]
            return Step("update", resource, f"replace: package type {config.get('PackageType')} -> Image", Calls(*parts))
        # Its event invoke config and permission are read (a replaced function loses both).
        self.existing_functions[f.name] = current

        drift: list[str] = []
        parts: list[tuple[str, Callable[[], Any]]] = []
        current_image = current.get("Code", {}).get("ImageUri")
        image_uri = f.image_uri or current_image
        if (f.image_uri and f.image_uri != current_image) or list(config.get("Architectures") or ["x86_64"]) != f.architectures:
            drift.append(f"image {current_image} -> {image_uri}" if image_uri != current_image else f"architectures -> {f.architectures}")
            parts.append(("update code", retrying(lambda: lam.update_function_code(FunctionName=f.name, ImageUri=image_uri, Architectures=f.architectures), when=iam_not_ready)))
            parts.append(("wait for code update", lambda: wait_function(self.c, f.name, "function_updated_v2")))
        changes: dict[str, Any] = {}
        if config.get("Role") != f.role_arn:
            changes["Role"] = f.role_arn
        if config.get("MemorySize") != f.memory:
            changes["MemorySize"] = f.memory
        if config.get("Timeout") != f.timeout:
            changes["Timeout"] = f.timeout
        if (config.get("Environment") or {}).get("Variables", {}) != f.environment:
            changes["Environment"] = {"Variables": f.environment}
        if (config.get("Description") or "") != f.description:
            changes["Description"] = f.description
        command = ((config.get("ImageConfigResponse") or {}).get("ImageConfig") or {}).get("Command") or []
        if list(command) != f.command:
            changes["ImageConfig"] = {"Command": f.command}
        if changes:
            drift += [_describe_change(k, config, v) for k, v in changes.items()]
            parts.append(("update configuration", retrying(lambda: lam.update_function_configuration(FunctionName=f.name, **changes), when=iam_not_ready)))
            parts.append(("wait for configuration update", lambda: wait_function(self.c, f.name, "function_updated_v2")))
        if not drift:
            return Step("noop", resource, detail)
        return Step("update", resource, "; ".join(drift), Calls(*parts))

    def event_invoke(self, e: EventInvokeSpec) -> Step:
        lam = self.c.lambda_
        resource = f"lambda event-invoke-config {e.function}"
        detail = f"{e.maximum_retry_attempts} retries, max age {e.maximum_event_age_seconds} s, on failure -> {e.on_failure_arn}"

        def put() -> None:
            retrying(
                lambda: lam.put_function_event_invoke_config(
                    FunctionName=e.function,
                    MaximumRetryAttempts=e.maximum_retry_attempts,
                    MaximumEventAgeInSeconds=e.maximum_event_age_seconds,
                    DestinationConfig={"OnFailure": {"Destination": e.on_failure_arn}},
                ),
                when=iam_not_ready,
            )()

        current = None
        if e.function in self.existing_functions:
            current = _strip(get_or_none(lam.get_function_event_invoke_config, FunctionName=e.function)) or None
        if current is None:
            return Step("create", resource, detail, Calls(("put event invoke config", put)))
        dest = current.get("DestinationConfig") or {}
        if (
            current.get("MaximumRetryAttempts") == e.maximum_retry_attempts
            and current.get("MaximumEventAgeInSeconds") == e.maximum_event_age_seconds
            and (dest.get("OnFailure") or {}).get("Destination") == e.on_failure_arn
            and not (dest.get("OnSuccess") or {}).get("Destination")
        ):
            return Step("noop", resource, detail)
        # Put replaces the whole config on AWS; moto 5.2 appends and keeps returning the first one,
        # so delete first: the same end state on both.
        return Step(
            "update", resource, detail,
            Calls(("delete old config", lambda: get_or_none(lam.delete_function_event_invoke_config, FunctionName=e.function)), ("put event invoke config", put)),
        )

    def permission(self, p: PermissionSpec) -> Step:
        lam = self.c.lambda_
        resource = f"lambda permission {p.function}/{p.sid}"
        detail = f"{p.principal} may invoke {p.function} for {p.source_arn} (account {p.source_account})"
        add = (
            "add permission",
            lambda: lam.add_permission(
                FunctionName=p.function, StatementId=p.sid, Action="lambda:InvokeFunction",
                Principal=p.principal, SourceArn=p.source_arn, SourceAccount=p.source_account,
            ),
        )
        statement = None
        if p.function in self.existing_functions:
            statement = find_statement(self.c, p.function, p.sid)
        if statement is None:
            return Step("create", resource, detail, Calls(add))
        if _permission_matches(statement, p):
            return Step("noop", resource, detail)
        return Step("update", resource, detail, Calls(("remove old permission", lambda: lam.remove_permission(FunctionName=p.function, StatementId=p.sid)), add))

    # ---- S3 notification and gallery

    def notification(self, n: NotificationSpec) -> Step:
        s3 = self.c.s3
        resource = f"s3 notification {n.bucket}"
        detail = f"s3:ObjectCreated:* with suffix {' '.join(n.suffixes)} -> {n.function_arn.rsplit(':', 1)[-1]}"
        current = _strip(get_or_none(s3.get_bucket_notification_configuration, Bucket=n.bucket)) if n.bucket in self.owned else {}
        others = [c for c in current.get("LambdaFunctionConfigurations", []) if not str(c.get("Id", "")).startswith(NOTIFICATION_ID_PREFIX)]
        mine = [c for c in current.get("LambdaFunctionConfigurations", []) if str(c.get("Id", "")).startswith(NOTIFICATION_ID_PREFIX)]
        wanted = n.configurations()
        if _norm_notifications(mine) == _norm_notifications(wanted):
            return Step("noop", resource, detail)
        config = {k: v for k, v in current.items() if k in ("QueueConfigurations", "TopicConfigurations", "EventBridgeConfiguration")}
        config["LambdaFunctionConfigurations"] = others + wanted
        put = retrying(lambda: s3.put_bucket_notification_configuration(Bucket=n.bucket, NotificationConfiguration=config), when=iam_not_ready)
        return Step("update" if mine else "create", resource, detail, Calls(("put notification configuration", put)))

    def gallery(self, g: GallerySpec) -> Step:
        s3 = self.c.s3
        resource = f"s3 object {g.uri}"
        converted = ", converted from torch to safetensors" if g.converted else ""
        detail = f"gallery {g.path} ({len(g.body) / 1e6:.1f} MB{converted}, md5 {g.md5})"

        def upload() -> None:
            content_md5 = base64.b64encode(bytes.fromhex(g.md5)).decode()
            s3.put_object(Bucket=g.bucket, Key=g.key, Body=g.body, ContentMD5=content_md5, Metadata={"md5": g.md5})

        current = get_or_none(s3.head_object, Bucket=g.bucket, Key=g.key) if g.bucket in self.owned else None
        if current is None:
            return Step("create", resource, detail, Calls(("upload gallery", upload)))
        remote = (current.get("Metadata") or {}).get("md5") or str(current.get("ETag", "")).strip('"')
        if remote == g.md5:
            return Step("noop", resource, detail)
        return Step("update", resource, f"{detail}; was md5 {remote}", Calls(("upload gallery", upload)))

    def check_gallery_present(self) -> None:
        n = self.d.settings.names
        try:
            present = n.output_bucket in self.owned and get_or_none(self.c.s3.head_object, Bucket=n.output_bucket, Key=n.gallery_key) is not None
        except botocore.exceptions.ClientError as exc:  # e.g. the TLS-only policy refusing a plain-HTTP endpoint
            self.warnings.append(f"could not check the gallery at s3://{n.output_bucket}/{n.gallery_key}: {error_code(exc)}")
            return
        if not present:
            self.warnings.append(f"no gallery at s3://{n.output_bucket}/{n.gallery_key}: recognition fails until one is uploaded (pass --gallery)")


# --------------------------------------------------------------------------------------- shared readers


def repository_step(clients: Clients, r: RepositorySpec, tags: dict[str, str]) -> Step:
    ecr = clients.ecr
    resource = f"ecr repository {r.name}"
    detail = f"{r.uri}, scan on push, tags {r.tag_mutability.lower()}"
    current = find_repository(clients, r.name)
    if current is None:
        return Step(
            "create", resource, detail,
            Calls((
                "create repository",
                lambda: ecr.create_repository(
                    repositoryName=r.name,
                    imageScanningConfiguration={"scanOnPush": r.scan_on_push},
                    imageTagMutability=r.tag_mutability,
                    tags=[{"Key": k, "Value": v} for k, v in tags.items()],
                ),
            )),
        )
    drift: list[str] = []
    parts: list[tuple[str, Callable[[], Any]]] = []
    if bool((current.get("imageScanningConfiguration") or {}).get("scanOnPush")) != r.scan_on_push:
        drift.append("scan on push")
        parts.append(("set scan on push", lambda: ecr.put_image_scanning_configuration(repositoryName=r.name, imageScanningConfiguration={"scanOnPush": r.scan_on_push})))
    if current.get("imageTagMutability") != r.tag_mutability:
        drift.append(f"tag mutability {current.get('imageTagMutability')} -> {r.tag_mutability}")
        parts.append(("set tag mutability", lambda: ecr.put_image_tag_mutability(repositoryName=r.name, imageTagMutability=r.tag_mutability)))
    if not drift:
        return Step("noop", resource, detail)
    return Step("update", resource, ", ".join(drift), Calls(*parts))


def find_repository(clients: Clients, name: str) -> dict[str, Any] | None:
    resp = get_or_none(clients.ecr.describe_repositories, repositoryNames=[name])
    repos = (resp or {}).get("repositories") or []
    return repos[0] if repos else None


def find_log_group(clients: Clients, name: str) -> dict[str, Any] | None:
    for group in _paginate(clients.logs, "describe_log_groups", "logGroups", logGroupNamePrefix=name):
        if group.get("logGroupName") == name:
            return group
    return None


def find_statement(clients: Clients, function: str, sid: str) -> dict[str, Any] | None:
    resp = get_or_none(clients.lambda_.get_policy, FunctionName=function)
    if not resp:
        return None
    policy = json.loads(resp["Policy"])
    return next((s for s in policy.get("Statement", []) if s.get("Sid") == sid), None)


def _permission_matches(statement: dict[str, Any], p: PermissionSpec) -> bool:
    principal = statement.get("Principal")
    service = principal.get("Service") if isinstance(principal, dict) else principal
    cond = statement.get("Condition") or {}
    source_arn = (cond.get("ArnLike") or {}).get("AWS:SourceArn")
    source_account = (cond.get("StringEquals") or {}).get("AWS:SourceAccount")
    action = statement.get("Action")
    return (
        statement.get("Effect", "Allow") == "Allow"
        and service == p.principal
        and source_arn == p.source_arn
        and source_account == p.source_account
        and action in ("lambda:InvokeFunction", ["lambda:InvokeFunction"])
    )


def _norm_rule(rule: dict[str, Any] | None) -> Any:
    if rule is None:
        return None
    filt = rule.get("Filter")
    prefix = (filt or {}).get("Prefix", rule.get("Prefix", ""))
    other_filters = json.dumps(canonical_policy({k: v for k, v in (filt or {}).items() if k != "Prefix"}), sort_keys=True)
    return (
        rule.get("Status"),
        prefix or "",
        other_filters,
        (rule.get("Expiration") or {}).get("Days"),
        (rule.get("AbortIncompleteMultipartUpload") or {}).get("DaysAfterInitiation"),
    )


def _policy_statements(resp: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The statements of a GetBucketPolicy answer ([] when there is no policy)."""
    if not resp or not resp.get("Policy"):
        return []
    statements = json.loads(resp["Policy"]).get("Statement") or []
    return [statements] if isinstance(statements, dict) else list(statements)


def _expiry_text(b: BucketSpec) -> str:
    """What the bucket's lifecycle rules (this tool's) do, for the plan."""
    if b.drop_rule_ids and not b.lifecycle_rules:
        return "no retention rule"
    if not b.lifecycle_rules:
        return ""
    days = b.lifecycle_rules[0]["Expiration"]["Days"]
    if b.role == "input":
        return f"uploads expire after {days} day(s)"
    if b.role == "output":
        return f"results (tagged {RESULT_TAG_KEY}={RESULT_TAG_VALUE}) expire after {days} day(s), the gallery stays"
    return f"objects expire after {days} day(s)"


def _norm_notifications(configs: Iterable[dict[str, Any]]) -> Any:
    out = []
    for c in configs:
        rules = ((c.get("Filter") or {}).get("Key") or {}).get("FilterRules") or []
        out.append((
            c.get("Id"),
            c.get("LambdaFunctionArn"),
            tuple(sorted(c.get("Events") or [])),
            tuple(sorted((r["Name"].lower(), r["Value"]) for r in rules)),
        ))
    return sorted(out)


def _describe_change(key: str, config: dict[str, Any], value: Any) -> str:
    if key == "Environment":
        old = (config.get("Environment") or {}).get("Variables", {})
        new = value["Variables"]
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return f"environment ({', '.join(changed)})"
    if key == "ImageConfig":
        return f"command -> {value['Command']}"
    if key == "Description":
        return "description"
    return f"{key} {config.get(key)} -> {value}"


def _paginate(client: Any, method: str, key: str, **kwargs: Any) -> list[Any]:
    if client.can_paginate(method):
        out: list[Any] = []
        for page in client.get_paginator(method).paginate(**kwargs):
            out.extend(page.get(key) or [])
        return out
    return list(getattr(client, method)(**kwargs).get(key) or [])


def plan_state(desired: DesiredState, clients: Clients) -> Plan:
    """Plan a deploy of ``desired``; errors while reading the current state become DeployError."""
    try:
        return DeployPlanner(desired, clients).plan()
    except botocore.exceptions.BotoCoreError as exc:
        message, hint = explain(exc)
        raise DeployError(f"could not read the current state: {message}", hint=hint) from exc
    except botocore.exceptions.ClientError as exc:
        message, hint = explain(exc)
        raise DeployError(f"could not read the current state: {message}", hint=hint) from exc
