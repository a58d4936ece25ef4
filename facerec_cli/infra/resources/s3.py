"""S3: buckets (private, encrypted, owner-enforced, with this tool's policy statements and lifecycle
rules), single objects (the gallery) and a bucket's Lambda notifications."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import botocore.exceptions

from facerec_cli.infra.aws import error_code
from facerec_cli.infra.plan import APICall, EmptyBucket, Instruction, Step
from facerec_cli.infra.readers import bucket_taken, canonical_policy, get_or_none, object_versions, strip_metadata
from facerec_cli.infra.resources.context import PlanContext
from lambdas.core.names import plural

SSE_S3 = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
OWNER_ENFORCED = "BucketOwnerEnforced"
OTHER_NOTIFICATIONS = ("QueueConfigurations", "TopicConfigurations", "EventBridgeConfiguration")


@dataclass(frozen=True)
class BucketSpec:
    kind: ClassVar[str] = "s3 bucket"
    name: str
    region: str
    # This tool's bucket policy statements (by Sid; others' statements are kept); empty: none. ``owned_sids``
    # are the Sids this tool may have written before (removed when no longer wanted).
    policy_statements: tuple[dict[str, Any], ...] = ()
    owned_sids: frozenset[str] = frozenset()
    # This tool's lifecycle rules that must be there (others' rules are kept), and ids of its rules that must not.
    lifecycle_rules: tuple[dict[str, Any], ...] = ()
    drop_rule_ids: tuple[str, ...] = ()
    lifecycle_text: str = ""  # what the rules do, for the plan
    encryption: dict[str, Any] = field(default_factory=lambda: SSE_S3)
    public_access_block: dict[str, bool] = field(default_factory=lambda: PUBLIC_ACCESS_BLOCK)
    ownership: str = OWNER_ENFORCED


@dataclass(frozen=True)
class ObjectSpec:
    """One object with known bytes (``body``), compared by MD5. ``body`` None: the object is only
    expected to be there (``missing`` is the warning when it is not)."""

    kind: ClassVar[str] = "s3 object"
    bucket: str
    key: str
    body: bytes | None = field(default=None, repr=False)
    md5: str = ""
    description: str = ""
    missing: str = ""

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class NotificationSpec:
    """The bucket's Lambda notifications whose ids start with ``id_prefix`` (others' are kept)."""

    kind: ClassVar[str] = "s3 notification"
    bucket: str
    configurations: tuple[dict[str, Any], ...]
    id_prefix: str
    description: str

    @property
    def name(self) -> str:
        return self.bucket


# ------------------------------------------------------------------------------------------ buckets


def _policy_call(name: str, statements: list[dict[str, Any]]) -> APICall:
    if not statements:
        return APICall("s3", "delete_bucket_policy", {"Bucket": name})
    return APICall("s3", "put_bucket_policy", {"Bucket": name, "Policy": json.dumps({"Version": "2012-10-17", "Statement": statements})})


def _lifecycle_call(name: str, rules: list[dict[str, Any]]) -> APICall:
    if not rules:
        return APICall("s3", "delete_bucket_lifecycle", {"Bucket": name})
    return APICall("s3", "put_bucket_lifecycle_configuration", {"Bucket": name, "LifecycleConfiguration": {"Rules": rules}})


def plan_bucket(b: BucketSpec, ctx: PlanContext) -> Step:
    s3 = ctx.clients.s3
    settings = "SSE-S3 (AES256), public access blocked, BucketOwnerEnforced"
    settings += ", TLS only (bucket policy)" if b.policy_statements else ", no TLS-only policy (plain-HTTP endpoint)"
    if b.lifecycle_text:
        settings += f", {b.lifecycle_text}"
    put_pab = APICall("s3", "put_public_access_block", {"Bucket": b.name, "PublicAccessBlockConfiguration": b.public_access_block})
    put_own = APICall("s3", "put_bucket_ownership_controls", {"Bucket": b.name, "OwnershipControls": {"Rules": [{"ObjectOwnership": b.ownership}]}})
    put_sse = APICall("s3", "put_bucket_encryption", {"Bucket": b.name, "ServerSideEncryptionConfiguration": b.encryption})

    if b.name not in ctx.owned_buckets:
        detail = settings
        if bucket_taken(s3, b.name):
            ctx.blockers.append(f"bucket name {b.name} is taken by another AWS account (choose another --prefix)")
            detail = f"{settings} [name taken by another account]"
        create: dict[str, Any] = {"Bucket": b.name}
        if b.region != "us-east-1":
            create["CreateBucketConfiguration"] = {"LocationConstraint": b.region}
        calls: list[Instruction] = [APICall("s3", "create_bucket", create), put_pab, put_own, put_sse]
        if b.policy_statements:
            calls.append(_policy_call(b.name, list(b.policy_statements)))
        if b.lifecycle_rules:
            calls.append(_lifecycle_call(b.name, list(b.lifecycle_rules)))
        return Step("create", b.kind, b.name, detail, tuple(calls))

    # An owned bucket of this name in another region is another deployment of this prefix (or someone's
    # own bucket): adopting it would point this region's functions at it. Refused before anything is made.
    region = ctx.bucket_region(b.name)
    if region != b.region:
        ctx.blockers.append(f"bucket {b.name} already exists in region {region}, not {b.region} (use --region {region}, or choose another --prefix)")
        return Step("noop", b.kind, b.name, f"in region {region}, not {b.region}: left alone")

    drift: list[str] = []
    calls = []
    sse = strip_metadata(get_or_none(s3.get_bucket_encryption, Bucket=b.name)).get("ServerSideEncryptionConfiguration", {})
    default = (sse.get("Rules") or [{}])[0].get("ApplyServerSideEncryptionByDefault", {})
    if default.get("SSEAlgorithm") != "AES256" or default.get("KMSMasterKeyID"):
        drift.append(f"encryption {default.get('SSEAlgorithm', 'none')} -> AES256")
        calls.append(put_sse)
    pab = strip_metadata(get_or_none(s3.get_public_access_block, Bucket=b.name)).get("PublicAccessBlockConfiguration", {})
    if {k: bool(pab.get(k)) for k in b.public_access_block} != b.public_access_block:
        drift.append("public access block")
        calls.append(put_pab)
    own = strip_metadata(get_or_none(s3.get_bucket_ownership_controls, Bucket=b.name)).get("OwnershipControls", {}).get("Rules") or [{}]
    if own[0].get("ObjectOwnership") != b.ownership:
        drift.append(f"object ownership {own[0].get('ObjectOwnership', 'none')} -> {b.ownership}")
        calls.append(put_own)

    # The bucket policy: this tool's statements (by Sid) as wanted, anyone else's kept.
    statements = _policy_statements(get_or_none(s3.get_bucket_policy, Bucket=b.name))
    ours = {st["Sid"] for st in b.policy_statements} | set(b.owned_sids)
    mine = {st.get("Sid"): canonical_policy(st) for st in statements if st.get("Sid") in ours}
    wanted = {st["Sid"]: canonical_policy(st) for st in b.policy_statements}
    if mine != wanted:
        drift.append("bucket policy: TLS only" if wanted else "bucket policy: remove TLS-only statement")
        calls.append(_policy_call(b.name, [st for st in statements if st.get("Sid") not in ours] + list(b.policy_statements)))

    # Lifecycle: this tool's rules (by ID) as wanted, anyone else's kept.
    if b.lifecycle_rules or b.drop_rule_ids:
        current = strip_metadata(get_or_none(s3.get_bucket_lifecycle_configuration, Bucket=b.name)).get("Rules", [])
        ids = {r["ID"] for r in b.lifecycle_rules} | set(b.drop_rule_ids)
        have = {r.get("ID"): _norm_rule(r) for r in current if r.get("ID") in ids}
        if have != {r["ID"]: _norm_rule(r) for r in b.lifecycle_rules}:
            drift.append(f"lifecycle: {b.lifecycle_text}" if b.lifecycle_rules and b.lifecycle_text else "lifecycle: remove the retention rule")
            calls.append(_lifecycle_call(b.name, [r for r in current if r.get("ID") not in ids] + list(b.lifecycle_rules)))
    if not drift:
        return Step("noop", b.kind, b.name, settings)
    return Step("update", b.kind, b.name, ", ".join(drift), tuple(calls))


def plan_delete_bucket(b: BucketSpec, ctx: PlanContext) -> Step | None:
    if b.name not in ctx.owned_buckets:
        return None
    region = ctx.bucket_region(b.name)
    if region != b.region:  # another region's deployment of this prefix: not this destroy's to delete
        ctx.warnings.append(f"bucket {b.name} is in region {region}, not {b.region}: left alone (destroy with --region {region})")
        return None
    count = sum(1 for _ in object_versions(ctx.clients.s3, b.name))
    detail = f"emptied first: {plural(count, 'object')}, counting every version and delete marker" if count else "empty"
    return Step("delete", b.kind, b.name, detail, (EmptyBucket(b.name), APICall("s3", "delete_bucket", {"Bucket": b.name}, retry="bucket-refilled")))


def _policy_statements(resp: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The statements of a GetBucketPolicy answer ([] when there is no policy)."""
    if not resp or not resp.get("Policy"):
        return []
    statements = json.loads(resp["Policy"]).get("Statement") or []
    return [statements] if isinstance(statements, dict) else list(statements)


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


# ------------------------------------------------------------------------------------------ objects


def plan_object(o: ObjectSpec, ctx: PlanContext) -> Step | None:
    s3 = ctx.clients.s3
    try:
        current = get_or_none(s3.head_object, Bucket=o.bucket, Key=o.key) if o.bucket in ctx.owned_buckets else None
    except botocore.exceptions.ClientError as exc:  # e.g. the TLS-only policy refusing a plain-HTTP endpoint
        if o.body is not None:
            raise
        ctx.warnings.append(f"could not check {o.name}: {error_code(exc)}")
        return None
    if o.body is None:
        if current is None and o.missing:
            ctx.warnings.append(o.missing)
        return None
    put = APICall("s3", "put_object", {
        "Bucket": o.bucket, "Key": o.key, "Body": o.body,
        "ContentMD5": base64.b64encode(bytes.fromhex(o.md5)).decode(), "Metadata": {"md5": o.md5},
    })
    if current is None:
        return Step("create", o.kind, o.name, o.description, (put,))
    remote = (current.get("Metadata") or {}).get("md5") or str(current.get("ETag", "")).strip('"')
    if remote == o.md5:
        return Step("noop", o.kind, o.name, o.description)
    return Step("update", o.kind, o.name, f"{o.description}; was md5 {remote}", (put,))


def plan_delete_object(o: ObjectSpec, ctx: PlanContext) -> None:
    return None  # deleted with its bucket


# ------------------------------------------------------------------------------------------ notifications


def _mine(configs: list[dict[str, Any]], prefix: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ours = [c for c in configs if str(c.get("Id", "")).startswith(prefix)]
    return ours, [c for c in configs if not str(c.get("Id", "")).startswith(prefix)]


def plan_notification(n: NotificationSpec, ctx: PlanContext) -> Step:
    s3 = ctx.clients.s3
    current = strip_metadata(get_or_none(s3.get_bucket_notification_configuration, Bucket=n.bucket)) if n.bucket in ctx.owned_buckets else {}
    mine, others = _mine(current.get("LambdaFunctionConfigurations", []), n.id_prefix)
    if _norm_notifications(mine) == _norm_notifications(n.configurations):
        return Step("noop", n.kind, n.name, n.description)
    config = {k: v for k, v in current.items() if k in OTHER_NOTIFICATIONS}
    config["LambdaFunctionConfigurations"] = others + list(n.configurations)
    put = APICall("s3", "put_bucket_notification_configuration", {"Bucket": n.bucket, "NotificationConfiguration": config}, retry="iam-propagation")
    return Step("update" if mine else "create", n.kind, n.name, n.description, (put,))


def plan_delete_notification(n: NotificationSpec, ctx: PlanContext) -> Step | None:
    if n.bucket not in ctx.owned_buckets:
        return None
    current = strip_metadata(get_or_none(ctx.clients.s3.get_bucket_notification_configuration, Bucket=n.bucket))
    mine, others = _mine(current.get("LambdaFunctionConfigurations", []), n.id_prefix)
    if not mine:
        return None
    config = {k: v for k, v in current.items() if k in OTHER_NOTIFICATIONS}
    if others:
        config["LambdaFunctionConfigurations"] = others
    put = APICall("s3", "put_bucket_notification_configuration", {"Bucket": n.bucket, "NotificationConfiguration": config})
    return Step("delete", n.kind, n.name, f"{plural(len(mine), 'trigger')} of this deployment", (put,))


def _norm_notifications(configs: Any) -> Any:
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


PLANNERS = {
    BucketSpec: (plan_bucket, plan_delete_bucket),
    ObjectSpec: (plan_object, plan_delete_object),
    NotificationSpec: (plan_notification, plan_delete_notification),
}
