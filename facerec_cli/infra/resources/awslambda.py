"""Lambda: container-image functions, their asynchronous invocation settings and resource-policy
permissions. A function's event invoke config and permissions go with it when it is deleted."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from facerec_cli.infra.plan import APICall, Instruction, Step, Wait
from facerec_cli.infra.readers import get_or_none, strip_metadata
from facerec_cli.infra.resources.context import PlanContext


@dataclass(frozen=True)
class FunctionSpec:
    kind: ClassVar[str] = "lambda function"
    name: str
    arn: str
    role_arn: str
    image_uri: str | None  # None: the placeholder on create, the current image kept on update
    placeholder_image_uri: str
    command: list[str]
    memory: int
    timeout: int
    environment: dict[str, str]
    architectures: list[str]
    description: str
    tags: dict[str, str]
    ephemeral_mb: int = 512  # /tmp, in MB (Lambda: 512-10,240)


@dataclass(frozen=True)
class EventInvokeSpec:
    kind: ClassVar[str] = "lambda event-invoke-config"
    function: str
    maximum_retry_attempts: int
    maximum_event_age_seconds: int
    on_failure_arn: str

    @property
    def name(self) -> str:
        return self.function


@dataclass(frozen=True)
class PermissionSpec:
    kind: ClassVar[str] = "lambda permission"
    function: str
    sid: str
    principal: str
    source_arn: str
    source_account: str

    @property
    def name(self) -> str:
        return f"{self.function}/{self.sid}"


def _wait(name: str, waiter: str) -> Wait:
    return Wait("lambda", waiter, {"FunctionName": name})


def plan_function(f: FunctionSpec, ctx: PlanContext) -> Step:
    image = f.image_uri or f"{f.placeholder_image_uri} (placeholder)"
    detail = f"image {image}, command {f.command[0]}, {f.memory} MB, {f.timeout} s, /tmp {f.ephemeral_mb} MB"
    current = get_or_none(ctx.clients.lambda_.get_function, FunctionName=f.name)
    create = (
        APICall("lambda", "create_function", {
            "FunctionName": f.name, "Role": f.role_arn, "PackageType": "Image", "Code": {"ImageUri": f.image_uri or f.placeholder_image_uri},
            "ImageConfig": {"Command": f.command}, "Description": f.description, "MemorySize": f.memory, "Timeout": f.timeout,
            "Environment": {"Variables": f.environment}, "Architectures": f.architectures, "Tags": f.tags,
            "EphemeralStorage": {"Size": f.ephemeral_mb},
        }, retry="iam-propagation"),
        _wait(f.name, "function_active_v2"),
    )
    if current is None:
        return Step("create", f.kind, f.name, detail, create)
    config = current["Configuration"]
    if config.get("Role") != f.role_arn:
        ctx.warnings.append(f"function {f.name} uses role {config.get('Role')}, not {f.role_arn}: another deployment in this region? bootstrap takes it over")
    if config.get("PackageType", "Zip") != "Image":
        replace = (APICall("lambda", "delete_function", {"FunctionName": f.name}), *create)
        return Step("update", f.kind, f.name, f"replace: package type {config.get('PackageType')} -> Image", replace)
    # Its event invoke config and permission are read (a replaced function loses both).
    ctx.existing_functions[f.name] = current

    drift: list[str] = []
    calls: list[Instruction] = []
    current_image = current.get("Code", {}).get("ImageUri")
    image_uri = f.image_uri or current_image
    if (f.image_uri and f.image_uri != current_image) or list(config.get("Architectures") or ["x86_64"]) != f.architectures:
        drift.append(f"image {current_image} -> {image_uri}" if image_uri != current_image else f"architectures -> {f.architectures}")
        calls.append(APICall("lambda", "update_function_code", {"FunctionName": f.name, "ImageUri": image_uri, "Architectures": f.architectures}, retry="iam-propagation"))
        calls.append(_wait(f.name, "function_updated_v2"))
    changes: dict[str, Any] = {}
    if config.get("Role") != f.role_arn:
        changes["Role"] = f.role_arn
    if config.get("MemorySize") != f.memory:
        changes["MemorySize"] = f.memory
    if config.get("Timeout") != f.timeout:
        changes["Timeout"] = f.timeout
    if (config.get("Environment") or {}).get("Variables", {}) != f.environment:
        changes["Environment"] = {"Variables": f.environment}
    if (config.get("EphemeralStorage") or {}).get("Size", 512) != f.ephemeral_mb:
        changes["EphemeralStorage"] = {"Size": f.ephemeral_mb}
    if (config.get("Description") or "") != f.description:
        changes["Description"] = f.description
    command = ((config.get("ImageConfigResponse") or {}).get("ImageConfig") or {}).get("Command") or []
    if list(command) != f.command:
        changes["ImageConfig"] = {"Command": f.command}
    if changes:
        drift += [_describe_change(k, config, v) for k, v in changes.items()]
        calls.append(APICall("lambda", "update_function_configuration", {"FunctionName": f.name, **changes}, retry="iam-propagation"))
        calls.append(_wait(f.name, "function_updated_v2"))
    if not drift:
        return Step("noop", f.kind, f.name, detail)
    return Step("update", f.kind, f.name, "; ".join(drift), tuple(calls))


def plan_delete_function(f: FunctionSpec, ctx: PlanContext) -> Step | None:
    """Function names are not prefixed (course convention), so two deployments in one region share
    them: a function is deleted only when it runs with this deployment's role or carries its tags."""
    current = get_or_none(ctx.clients.lambda_.get_function, FunctionName=f.name)
    if current is None:
        return None
    role = current["Configuration"].get("Role")
    tags = current.get("Tags") or {}
    if role != f.role_arn and not (f.tags and all(tags.get(k) == v for k, v in f.tags.items())):
        ctx.warnings.append(f"function {f.name} belongs to another deployment (role {role}): left alone")
        ctx.foreign_functions.add(f.name)
        return None
    return Step("delete", f.kind, f.name, "with its event invoke config and invoke permissions", (APICall("lambda", "delete_function", {"FunctionName": f.name}, absent_ok=True),))


def plan_event_invoke(e: EventInvokeSpec, ctx: PlanContext) -> Step:
    detail = f"{e.maximum_retry_attempts} retries, max age {e.maximum_event_age_seconds} s, on failure -> {e.on_failure_arn}"
    put = APICall("lambda", "put_function_event_invoke_config", {
        "FunctionName": e.function, "MaximumRetryAttempts": e.maximum_retry_attempts, "MaximumEventAgeInSeconds": e.maximum_event_age_seconds,
        "DestinationConfig": {"OnFailure": {"Destination": e.on_failure_arn}},
    }, retry="iam-propagation")
    current = None
    if e.function in ctx.existing_functions:
        current = strip_metadata(get_or_none(ctx.clients.lambda_.get_function_event_invoke_config, FunctionName=e.function)) or None
    if current is None:
        return Step("create", e.kind, e.name, detail, (put,))
    destination = current.get("DestinationConfig") or {}
    if (
        current.get("MaximumRetryAttempts") == e.maximum_retry_attempts
        and current.get("MaximumEventAgeInSeconds") == e.maximum_event_age_seconds
        and (destination.get("OnFailure") or {}).get("Destination") == e.on_failure_arn
        and not (destination.get("OnSuccess") or {}).get("Destination")
    ):
        return Step("noop", e.kind, e.name, detail)
    # Put replaces the whole config on AWS; moto 5.2 appends and keeps returning the first one, so
    # delete first: the same end state on both.
    delete = APICall("lambda", "delete_function_event_invoke_config", {"FunctionName": e.function}, absent_ok=True)
    return Step("update", e.kind, e.name, detail, (delete, put))


def plan_permission(p: PermissionSpec, ctx: PlanContext) -> Step:
    detail = f"{p.principal} may invoke {p.function} for {p.source_arn} (account {p.source_account})"
    add = APICall("lambda", "add_permission", {
        "FunctionName": p.function, "StatementId": p.sid, "Action": "lambda:InvokeFunction", "Principal": p.principal,
        "SourceArn": p.source_arn, "SourceAccount": p.source_account,
    })
    statement = _statement(ctx.clients.lambda_, p.function, p.sid) if p.function in ctx.existing_functions else None
    if statement is None:
        return Step("create", p.kind, p.name, detail, (add,))
    if _permission_matches(statement, p):
        return Step("noop", p.kind, p.name, detail)
    return Step("update", p.kind, p.name, detail, (APICall("lambda", "remove_permission", {"FunctionName": p.function, "StatementId": p.sid}), add))


def goes_with_its_function(spec: Any, ctx: PlanContext) -> None:
    return None  # deleting a function deletes its event invoke config and resource policy


def _statement(lam: Any, function: str, sid: str) -> dict[str, Any] | None:
    resp = get_or_none(lam.get_policy, FunctionName=function)
    if not resp:
        return None
    return next((s for s in json.loads(resp["Policy"]).get("Statement", []) if s.get("Sid") == sid), None)


def _permission_matches(statement: dict[str, Any], p: PermissionSpec) -> bool:
    principal = statement.get("Principal")
    service = principal.get("Service") if isinstance(principal, dict) else principal
    condition = statement.get("Condition") or {}
    return (
        statement.get("Effect", "Allow") == "Allow"
        and service == p.principal
        and (condition.get("ArnLike") or {}).get("AWS:SourceArn") == p.source_arn
        and (condition.get("StringEquals") or {}).get("AWS:SourceAccount") == p.source_account
        and statement.get("Action") in ("lambda:InvokeFunction", ["lambda:InvokeFunction"])
    )


def _describe_change(key: str, config: dict[str, Any], value: Any) -> str:
    if key == "Environment":
        old = (config.get("Environment") or {}).get("Variables", {})
        new = value["Variables"]
        return f"environment ({', '.join(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)))})"
    if key == "ImageConfig":
        return f"command -> {value['Command']}"
    if key == "Description":
        return "description"
    if key == "EphemeralStorage":
        return f"/tmp {(config.get(key) or {}).get('Size', 512)} -> {value['Size']} MB"
    return f"{key} {config.get(key)} -> {value}"


PLANNERS = {
    FunctionSpec: (plan_function, plan_delete_function),
    EventInvokeSpec: (plan_event_invoke, goes_with_its_function),
    PermissionSpec: (plan_permission, goes_with_its_function),
}
