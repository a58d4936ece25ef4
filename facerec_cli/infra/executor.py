"""The executor: run a plan's instructions in order, report each step, stop at the first failure and
say exactly what was done before it. It is the only place where a plan touches AWS."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import botocore.exceptions

from facerec_cli.infra.aws import error_code
from facerec_cli.infra.clients import Clients
from facerec_cli.infra.errors import DeployError, ecr_access_denied, explain
from facerec_cli.infra.plan import APICall, EmptyBucket, Instruction, Plan, Ref, Step, Wait, WaitUntilGone
from facerec_cli.infra.readers import ABSENT, object_versions

# Patched by tests so that retries and polls do not sleep.
_sleep: Callable[[float], None] = time.sleep


# ------------------------------------------------------------------------------------------ reporters


class Reporter(Protocol):
    def step_started(self, step: Step, index: int, total: int) -> None: ...

    def step_finished(self, step: Step, index: int, total: int) -> None: ...

    def step_failed(self, step: Step, index: int, total: int, error: DeployError) -> None: ...

    def step_waiting(self, step: Step, index: int, total: int, message: str) -> None: ...


class NullReporter:
    def step_started(self, step: Step, index: int, total: int) -> None:
        pass

    def step_finished(self, step: Step, index: int, total: int) -> None:
        pass

    def step_failed(self, step: Step, index: int, total: int, error: DeployError) -> None:
        pass

    def step_waiting(self, step: Step, index: int, total: int, message: str) -> None:
        pass


class ListReporter:
    """Collects ``(event, action, resource)`` tuples; event is "started", "finished" or "failed";
    ``waits`` the ``(resource, message)`` of every retry wait."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.waits: list[tuple[str, str]] = []

    def step_started(self, step: Step, index: int, total: int) -> None:
        self.events.append(("started", step.action, step.resource))

    def step_finished(self, step: Step, index: int, total: int) -> None:
        self.events.append(("finished", step.action, step.resource))

    def step_failed(self, step: Step, index: int, total: int, error: DeployError) -> None:
        self.events.append(("failed", step.action, step.resource))

    def step_waiting(self, step: Step, index: int, total: int, message: str) -> None:
        self.waits.append((step.resource, message))

    @property
    def finished(self) -> list[tuple[str, str]]:
        return [(a, r) for e, a, r in self.events if e == "finished"]


class RichReporter:
    """One line per step on a rich console, with a spinner while the step runs."""

    STYLE = {"create": "green", "update": "yellow", "delete": "red"}

    def __init__(self, console: Any | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._status: Any = None

    def step_started(self, step: Step, index: int, total: int) -> None:
        self._status = self.console.status(f"[{index}/{total}] {step.action} {step.resource} ...")
        self._status.start()

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def step_finished(self, step: Step, index: int, total: int) -> None:
        from rich.markup import escape

        self._stop()
        style = self.STYLE.get(step.action, "white")
        self.console.print(f"[{style}]✓[/{style}] [{index}/{total}] {step.past} {escape(step.resource)}")

    def step_failed(self, step: Step, index: int, total: int, error: DeployError) -> None:
        from rich.markup import escape

        self._stop()
        self.console.print(f"[red]✗ [{index}/{total}] {step.action} {escape(step.resource)} failed[/red]")

    def step_waiting(self, step: Step, index: int, total: int, message: str) -> None:
        from rich.markup import escape

        if self._status is not None:  # the step's spinner line says what it waits for, and how long
            self._status.update(f"[{index}/{total}] {step.action} {escape(step.resource)}: {escape(message)}")


# ------------------------------------------------------------------------------------------ retries


def _message(exc: botocore.exceptions.ClientError) -> str:
    return (exc.response.get("Error", {}).get("Message") or "").lower()


def iam_not_ready(exc: botocore.exceptions.ClientError) -> bool:
    """Lambda/S3 refusing a role or permission that IAM has not propagated yet, or a function still
    busy with its previous update."""
    code, message = error_code(exc), _message(exc)
    if ecr_access_denied(exc):  # the repository policy, not IAM: waiting does not fix it
        return False
    if code == "InvalidParameterValueException" and ("role" in message or "permission" in message):
        return True
    if code == "ResourceConflictException" and ("in progress" in message or "pending" in message):
        return True
    return code == "InvalidArgument" and "unable to validate" in message  # an S3 notification's destination


def instance_profile_not_ready(exc: botocore.exceptions.ClientError) -> bool:
    """EC2 refusing an instance profile IAM has not propagated yet."""
    message = _message(exc)
    return error_code(exc) == "InvalidParameterValue" and ("instance profile" in message or "iaminstanceprofile" in message)


def queue_deleted_recently(exc: botocore.exceptions.ClientError) -> bool:
    """SQS refusing a queue name for 60 s after that queue was deleted (a bootstrap right after a destroy)."""
    return error_code(exc) in ("QueueDeletedRecently", "AWS.SimpleQueueService.QueueDeletedRecently")


@dataclass(frozen=True)
class RetryPolicy:
    when: Callable[[botocore.exceptions.ClientError], bool]
    attempts: int = 8
    first_delay: float = 1.0
    max_delay: float = 10.0
    # Run before each retry, with the call's parameters (a bucket that filled again is emptied again).
    before_retry: Callable[[Clients, Mapping[str, Any]], None] | None = None
    # What the step's progress line says while it waits ("waiting for IAM ...").
    waiting: str = "waiting for AWS"

    def delays(self) -> list[float]:
        """The sleeps between the attempts, in order."""
        out, delay = [], self.first_delay
        for _ in range(self.attempts - 1):
            out.append(delay)
            delay = min(delay * 2, self.max_delay)
        return out

    @property
    def budget(self) -> float:
        """Seconds waited in all before giving up."""
        return sum(self.delays())


RETRY_POLICIES: dict[str, RetryPolicy] = {
    # A new role or permission can take a minute or more to reach Lambda and S3: 95 s in all.
    "iam-propagation": RetryPolicy(iam_not_ready, attempts=13, waiting="waiting for IAM to propagate the role"),
    # SQS refuses a deleted queue's name for 60 s: 75 s in all.
    "queue-deleted-recently": RetryPolicy(
        queue_deleted_recently, attempts=9, first_delay=5.0,
        waiting="SQS refuses a queue name for 60 s after its queue was deleted: waiting",
    ),
    "instance-profile-propagation": RetryPolicy(instance_profile_not_ready),
    # Instances' network interfaces linger for a while after termination.
    "dependency-violation": RetryPolicy(lambda exc: error_code(exc) == "DependencyViolation", attempts=12),
    # A function still finishing may write to a bucket after it was emptied: empty it again.
    "bucket-refilled": RetryPolicy(
        lambda exc: error_code(exc) == "BucketNotEmpty", attempts=3, first_delay=0.0,
        before_retry=lambda clients, params: empty_bucket(clients.s3, params["Bucket"]),
    ),
}


# ------------------------------------------------------------------------------------------ executor


class Executor:
    """Carries out instructions against ``clients``; ``outputs`` holds what calls named ``output`` gave.
    ``on_wait`` hears each retry wait (for the progress line)."""

    def __init__(self, clients: Clients, *, on_wait: Callable[[str], None] | None = None) -> None:
        self.clients = clients
        self.outputs: dict[str, Any] = {}
        self.on_wait = on_wait or (lambda message: None)

    def run(self, instruction: Instruction) -> None:
        if isinstance(instruction, APICall):
            self._call(instruction)
        elif isinstance(instruction, Wait):
            client = self.clients.client(instruction.service)
            config = {"Delay": instruction.delay, "MaxAttempts": instruction.max_attempts}
            client.get_waiter(instruction.waiter).wait(**self.resolve(instruction.params), WaiterConfig=config)
        elif isinstance(instruction, WaitUntilGone):
            self._wait_until_gone(instruction)
        elif isinstance(instruction, EmptyBucket):
            empty_bucket(self.clients.s3, instruction.bucket)
        else:  # pragma: no cover - the Instruction union is closed
            raise TypeError(f"not an instruction: {instruction!r}")

    def resolve(self, value: Any) -> Any:
        """``value`` with every :class:`Ref` replaced by the output it names."""
        if isinstance(value, Ref):
            if value.output not in self.outputs:
                raise DeployError(f"internal error: {value.output} was not made by an earlier step")
            found = self.outputs[value.output]
            return value.template.format(found) if value.template else found
        if isinstance(value, Mapping):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.resolve(v) for v in value]
        return value

    def _call(self, call: APICall) -> None:
        method = getattr(self.clients.client(call.service), call.method)
        params = self.resolve(call.params)
        policy = RETRY_POLICIES[call.retry] if call.retry else None
        delays = policy.delays() if policy else []
        waited = 0.0
        for attempt in range(len(delays) + 1):
            try:
                answer = method(**params)
                break
            except botocore.exceptions.ClientError as exc:
                if call.absent_ok and error_code(exc) in ABSENT:
                    return
                if policy is None or attempt == len(delays) or not policy.when(exc):
                    raise
                delay = delays[attempt]
                self.on_wait(f"{policy.waiting} ({error_code(exc)}; retry in {delay:g} s, {waited:g} of up to {policy.budget:g} s waited)")
                _sleep(delay)
                waited += delay
                if policy.before_retry is not None:
                    policy.before_retry(self.clients, params)
        if call.output:
            self.outputs[call.output] = _at(answer, call.output_path)

    def _wait_until_gone(self, wait: WaitUntilGone) -> None:
        method = getattr(self.clients.client(wait.service), wait.method)
        params = self.resolve(wait.params)
        for _ in range(wait.max_attempts):
            if not _at(method(**params), wait.path):
                return
            _sleep(wait.delay)
        raise DeployError(f"still there after {wait.delay * wait.max_attempts} s: {wait.service}.{wait.method} {params}")


def _at(answer: Any, path: str) -> Any:
    for key in filter(None, path.split(".")):
        answer = answer[key]
    return answer


def empty_bucket(s3: Any, bucket: str) -> int:
    """Delete every object version, delete marker and unfinished multipart upload; returns the count."""
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

    for item in list(object_versions(s3, bucket)):
        batch.append(item)
        if len(batch) == 1000:
            flush()
    flush()
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads") or []:
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return deleted


def apply_plan(plan: Plan, reporter: Reporter | None = None, clients: Clients | None = None) -> list[Step]:
    """Run the plan's changes (noops are skipped) in order, with the clients it was planned against
    unless ``clients`` is given; returns the steps carried out.

    A plan with blockers (steps known to fail, e.g. a bucket name owned by another account) is refused
    before anything runs. On failure raises :class:`DeployError` naming the failed step, the calls of
    it that were made before it failed, and every step completed before it. Re-running the command is
    always safe: a new plan only contains what is still missing.
    """
    refuse_blocked(plan)
    changes = plan.changes
    if not changes:
        return []
    clients = clients or plan.clients
    if clients is None:
        raise DeployError("internal error: a plan with changes but no clients to apply it with")
    reporter = reporter or NullReporter()
    executor = Executor(clients)
    completed: list[Step] = []
    for index, step in enumerate(changes, start=1):
        reporter.step_started(step, index, len(changes))
        waiting = getattr(reporter, "step_waiting", None)  # reporters written before waits were shown have none
        executor.on_wait = (lambda message, s=step, i=index: waiting(s, i, len(changes), message)) if waiting else (lambda message: None)
        done: list[str] = []
        try:
            for instruction in step.calls:
                executor.run(instruction)
                done.append(_short(instruction))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a report naming what was done
            error = _failure(plan, step, exc, completed, done)
            reporter.step_failed(step, index, len(changes), error)
            raise error from exc
        completed.append(step)
        reporter.step_finished(step, index, len(changes))
    return completed


def refuse_blocked(plan: Plan) -> None:
    """Raise DeployError if the plan has blockers: steps known to fail before anything is changed."""
    if plan.blockers:
        raise DeployError("nothing was changed: " + "; ".join(plan.blockers), hint="fix that, then run the command again")


def _short(instruction: Instruction) -> str:
    if isinstance(instruction, APICall):
        return f"{instruction.service}.{instruction.method}"
    if isinstance(instruction, EmptyBucket):
        return f"emptied {instruction.bucket}"
    return f"waited ({instruction.service})"


def _failure(plan: Plan, step: Step, exc: BaseException, completed: list[Step], partial: list[str]) -> DeployError:
    reason, hint = explain(exc, what=step.name)
    message = f"{step.action} {step.resource} failed: {reason}."
    if partial:
        message += f" Already done in that step: {', '.join(partial)}."
    if completed:
        message += " Done before it: " + "; ".join(f"{s.past} {s.resource}" for s in completed) + "."
    else:
        message += " Nothing was changed before it."
    command = plan.command or ("facerec destroy" if plan.kind == "destroy" else "facerec bootstrap")
    again = f"run `{command}` again to finish: it only does what is left"
    hint = f"{hint}; then {again}" if hint else again
    return DeployError(message, hint=hint, completed=completed, failed=step, partial=partial)
