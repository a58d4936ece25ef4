"""The inverse of a deploy: plan deleting everything the desired state would create.

Order: the bucket notification first (no new invocations start), then the functions (deleting a
function also deletes its event invoke config and its resource policy, so the S3 permission goes
with it), then the buckets (emptied first: every object version, delete marker and unfinished
multipart upload), the log groups, the roles with their policies, the failure queue and, with
``with_ecr``, the ECR repository with its images. Only what exists is planned, so a second destroy is
an empty plan; a plan that is not applied is the dry run.

Function names are not prefixed (course convention), so two deployments in one region share them: a
function is deleted only when it runs with this deployment's role or carries its tag.
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions

from facerec_cli.infra.aws import error_code
from facerec_cli.infra.clients import Clients
from facerec_cli.pipeline.stack import NOTIFICATION_ID_PREFIX, TAG_KEY, DesiredState
from facerec_cli.infra.errors import DeployError, explain
from facerec_cli.infra.plan import Calls, Plan, Step, _paginate, _strip, find_log_group, find_repository, get_or_none, owned_buckets


class DestroyPlanner:
    def __init__(self, desired: DesiredState, clients: Clients) -> None:
        self.d = desired
        self.c = clients
        self.warnings: list[str] = []

    def plan(self) -> Plan:
        d = self.d
        owned = owned_buckets(self.c)
        steps: list[Step] = []
        n = d.notification
        if n.bucket in owned:
            step = self.notification(n.bucket)
            if step:
                steps.append(step)
        foreign: set[str] = set()
        for f in reversed(d.functions):  # splitting first: it feeds recognition
            step = self.function(f.name, f.role_arn)
            if step is None:
                continue
            if step.action == "noop":
                foreign.add(f.name)
            else:
                steps.append(step)
        for b in d.buckets:
            if b.name in owned:
                steps.append(self.bucket(b.name))
        for g in d.log_groups:
            if g.function not in foreign and find_log_group(self.c, g.name) is not None:
                steps.append(Step("delete", f"log group {g.name}", "", Calls(("delete log group", lambda g=g: self.c.logs.delete_log_group(logGroupName=g.name)))))
        for r in d.roles:
            step = self.role(r.name)
            if step:
                steps.append(step)
        url = (get_or_none(self.c.sqs.get_queue_url, QueueName=d.queue.name) or {}).get("QueueUrl")
        if url:
            steps.append(Step("delete", f"sqs queue {d.queue.name}", "with any failure records in it", Calls(("delete queue", lambda: self.c.sqs.delete_queue(QueueUrl=url)))))
        if d.repository is not None:
            repo = find_repository(self.c, d.repository.name)
            if repo is not None:
                images = _paginate(self.c.ecr, "list_images", "imageIds", repositoryName=d.repository.name)
                steps.append(Step(
                    "delete", f"ecr repository {d.repository.name}", f"with {len(images)} image(s)",
                    Calls(("delete repository", lambda: self.c.ecr.delete_repository(repositoryName=d.repository.name, force=True))),
                ))
        return Plan("destroy", steps, self.warnings)

    def notification(self, bucket: str) -> Step | None:
        s3 = self.c.s3
        current = _strip(get_or_none(s3.get_bucket_notification_configuration, Bucket=bucket))
        lambdas = current.get("LambdaFunctionConfigurations", [])
        keep = [c for c in lambdas if not str(c.get("Id", "")).startswith(NOTIFICATION_ID_PREFIX)]
        if len(keep) == len(lambdas):
            return None
        config = {k: v for k, v in current.items() if k in ("QueueConfigurations", "TopicConfigurations", "EventBridgeConfiguration")}
        if keep:
            config["LambdaFunctionConfigurations"] = keep
        return Step(
            "delete", f"s3 notification {bucket}", f"{len(lambdas) - len(keep)} trigger(s) to the splitting function",
            Calls(("put notification configuration", lambda: s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config))),
        )

    def function(self, name: str, role_arn: str) -> Step | None:
        """None when absent; a noop step when it belongs to another deployment."""
        current = get_or_none(self.c.lambda_.get_function, FunctionName=name)
        if current is None:
            return None
        role = current["Configuration"].get("Role")
        tag = (current.get("Tags") or {}).get(TAG_KEY)
        if role != role_arn and tag != self.d.settings.prefix:
            self.warnings.append(f"function {name} belongs to another deployment (role {role}): left alone")
            return Step("noop", f"lambda function {name}", "not this deployment's")
        return Step(
            "delete", f"lambda function {name}", "with its event invoke config and invoke permissions",
            Calls(("delete function", lambda: self.c.lambda_.delete_function(FunctionName=name))),
        )

    def bucket(self, name: str) -> Step:
        count = sum(1 for _ in _versions(self.c, name))
        detail = f"emptied first: {count} object(s), counting every version and delete marker" if count else "empty"
        return Step("delete", f"s3 bucket {name}", detail, Calls(("empty bucket", lambda: empty_bucket(self.c, name)), ("delete bucket", lambda: _delete_bucket(self.c, name))))

    def role(self, name: str) -> Step | None:
        iam = self.c.iam
        if get_or_none(iam.get_role, RoleName=name) is None:
            return None
        inline = _paginate(iam, "list_role_policies", "PolicyNames", RoleName=name)
        attached = [p["PolicyArn"] for p in _paginate(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=name)]
        profiles = [p["InstanceProfileName"] for p in _paginate(iam, "list_instance_profiles_for_role", "InstanceProfiles", RoleName=name)]
        parts: list[tuple[str, Any]] = []
        parts += [(f"delete inline policy {p}", lambda p=p: iam.delete_role_policy(RoleName=name, PolicyName=p)) for p in inline]
        parts += [(f"detach {a}", lambda a=a: iam.detach_role_policy(RoleName=name, PolicyArn=a)) for a in attached]
        parts += [(f"remove from instance profile {p}", lambda p=p: iam.remove_role_from_instance_profile(RoleName=name, InstanceProfileName=p)) for p in profiles]
        parts.append(("delete role", lambda: iam.delete_role(RoleName=name)))
        detail = ", ".join(f"inline policy {p}" for p in inline) or "no policies"
        return Step("delete", f"iam role {name}", f"with {detail}", Calls(*parts))


def _versions(clients: Clients, bucket: str) -> Any:
    for page in clients.s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for item in (page.get("Versions") or []) + (page.get("DeleteMarkers") or []):
            yield {"Key": item["Key"], "VersionId": item.get("VersionId") or "null"}


def empty_bucket(clients: Clients, bucket: str) -> int:
    """Delete every object version, delete marker and unfinished multipart upload; returns the count."""
    s3 = clients.s3
    deleted = 0
    batch: list[dict[str, str]] = []

    def flush() -> None:
        nonlocal deleted, batch
        if not batch:
            return
        resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        errors = resp.get("Errors") or []
        if errors:
            first = errors[0]
            raise DeployError(f"could not delete s3://{bucket}/{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".strip())
        deleted += len(batch)
        batch = []

    for item in list(_versions(clients, bucket)):
        batch.append(item)
        if len(batch) == 1000:
            flush()
    flush()
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads") or []:
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return deleted


def _delete_bucket(clients: Clients, bucket: str, attempts: int = 3) -> None:
    # A function still finishing may write after the bucket was emptied: empty again and retry.
    for attempt in range(attempts):
        try:
            clients.s3.delete_bucket(Bucket=bucket)
            return
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "BucketNotEmpty" or attempt == attempts - 1:
                raise
            empty_bucket(clients, bucket)


def plan_destroy_state(desired: DesiredState, clients: Clients) -> Plan:
    try:
        return DestroyPlanner(desired, clients).plan()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        message, hint = explain(exc)
        raise DeployError(f"could not read the current state: {message}", hint=hint) from exc
