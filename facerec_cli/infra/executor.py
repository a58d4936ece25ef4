"""The executor: run a plan's changes in order, report each step, stop at the first failure and say
exactly what was done before it."""

from __future__ import annotations

from typing import Any, Protocol

from facerec_cli.infra.errors import DeployError, explain
from facerec_cli.infra.plan import Plan, Step


class Reporter(Protocol):
    def step_started(self, step: Step, index: int, total: int) -> None: ...

    def step_finished(self, step: Step, index: int, total: int) -> None: ...

    def step_failed(self, step: Step, index: int, total: int, error: DeployError) -> None: ...


class NullReporter:
    def step_started(self, step: Step, index: int, total: int) -> None:
        pass

    def step_finished(self, step: Step, index: int, total: int) -> None:
        pass

    def step_failed(self, step: Step, index: int, total: int, error: DeployError) -> None:
        pass


class ListReporter:
    """Collects ``(event, action, resource)`` tuples; event is "started", "finished" or "failed"."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def step_started(self, step: Step, index: int, total: int) -> None:
        self.events.append(("started", step.action, step.resource))

    def step_finished(self, step: Step, index: int, total: int) -> None:
        self.events.append(("finished", step.action, step.resource))

    def step_failed(self, step: Step, index: int, total: int, error: DeployError) -> None:
        self.events.append(("failed", step.action, step.resource))

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


def apply_plan(plan: Plan, reporter: Reporter | None = None, *, ignore_blockers: bool = False) -> list[Step]:
    """Run the plan's changes (noops are skipped) in order; returns the steps carried out.

    A plan with blockers (steps known to fail, e.g. a bucket name owned by another account) is
    refused before anything runs, unless ``ignore_blockers``. On failure raises
    :class:`DeployError` naming the failed step, what it had done before failing, and every step
    completed before it. Re-running the command is always safe: a new plan only contains what is
    still missing.
    """
    if not ignore_blockers:
        refuse_blocked(plan)
    reporter = reporter or NullReporter()
    changes = plan.changes
    total = len(changes)
    completed: list[Step] = []
    for index, step in enumerate(changes, start=1):
        reporter.step_started(step, index, total)
        try:
            if step.call is not None:
                step.call()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a report naming what was done
            error = _failure(plan, step, exc, completed)
            reporter.step_failed(step, index, total, error)
            raise error from exc
        completed.append(step)
        reporter.step_finished(step, index, total)
    return completed


def refuse_blocked(plan: Plan) -> None:
    """Raise DeployError if the plan has blockers: steps known to fail before anything is changed."""
    if plan.blockers:
        raise DeployError("nothing was changed: " + "; ".join(plan.blockers), hint="fix that, then run the command again")


def _failure(plan: Plan, step: Step, exc: BaseException, completed: list[Step]) -> DeployError:
    resource_name = step.resource.split(" ")[-1]
    reason, hint = explain(exc, what=resource_name)
    partial = list(getattr(step.call, "done", []) or [])
    message = f"{step.action} {step.resource} failed: {reason}."
    if partial:
        message += f" Already done in that step: {', '.join(partial)}."
    if completed:
        message += " Done before it: " + "; ".join(f"{s.past} {s.resource}" for s in completed) + "."
    else:
        message += " Nothing was changed before it."
    command = "facerec destroy" if plan.kind == "destroy" else "facerec bootstrap"
    again = f"run `{command}` again to finish: it only does what is left"
    hint = f"{hint}; then {again}" if hint else again
    return DeployError(message, hint=hint, completed=completed, failed=step, partial=partial)
