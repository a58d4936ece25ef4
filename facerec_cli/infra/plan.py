"""The plan model: what a deploy or destroy will do, as data.

A :class:`Plan` is a list of :class:`Step` (one per resource: create, update, delete or noop), and a step
is a list of instructions, each one AWS API call (:class:`APICall`) or one of three things made of calls
that the executor knows how to carry out (:class:`Wait`, :class:`WaitUntilGone`, :class:`EmptyBucket`).
A value that an earlier call makes (a security group's id) is a :class:`Ref` to that call's ``output``,
resolved when the plan is applied. Nothing here talks to AWS: the planner (:mod:`.planner`) builds plans
from specs and what exists, the executor (:mod:`.executor`) runs them, and the dry run prints them with
:func:`describe`, so what is shown is exactly what runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

Action = Literal["create", "update", "delete", "noop"]
SYMBOLS = {"create": "+", "update": "~", "delete": "-", "noop": "="}
PAST = {"create": "created", "update": "updated", "delete": "deleted", "noop": "unchanged"}


@dataclass(frozen=True)
class Ref:
    """The ``output`` of an earlier call in the same plan; ``template`` formats it (``"{}"``: as text)."""

    output: str
    template: str | None = None

    def __str__(self) -> str:
        return f"<{self.output}>"


@dataclass(frozen=True)
class APICall:
    """``<service client>.<method>(**params)``. ``output``/``output_path``: keep the value at that dotted
    path of the answer for later :class:`Ref`\\s. ``retry``: a retry policy of the executor (AWS answers
    that mean "not ready yet": IAM propagation, a function still updating...). ``absent_ok``: an answer
    saying the thing does not exist counts as done (a delete of what is already gone)."""

    service: str
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    output: str | None = None
    output_path: str = ""
    retry: str | None = None
    absent_ok: bool = False


@dataclass(frozen=True)
class Wait:
    """A boto3 waiter: ``<service>.get_waiter(waiter).wait(**params)``, polling every ``delay`` s."""

    service: str
    waiter: str
    params: Mapping[str, Any]
    delay: int = 2
    max_attempts: int = 150


@dataclass(frozen=True)
class WaitUntilGone:
    """Call ``<service>.<method>(**params)`` every ``delay`` s until the list at ``path`` is empty (AWS
    deletes some things, such as an Auto Scaling group, in the background)."""

    service: str
    method: str
    params: Mapping[str, Any]
    path: str
    delay: int = 5
    max_attempts: int = 120


@dataclass(frozen=True)
class EmptyBucket:
    """Delete every object version, delete marker and unfinished multipart upload of ``bucket``
    (ListObjectVersions, DeleteObjects in batches of 1,000, ListMultipartUploads, AbortMultipartUpload)."""

    bucket: str


Instruction = Union[APICall, Wait, WaitUntilGone, EmptyBucket]


@dataclass
class Step:
    """One resource's change: ``kind`` ("s3 bucket", "lambda function"...), its ``name``, words for
    people (``detail``) and the instructions that make the change (none for a noop)."""

    action: Action
    kind: str
    name: str
    detail: str = ""
    calls: tuple[Instruction, ...] = ()

    @property
    def resource(self) -> str:
        return f"{self.kind} {self.name}"

    @property
    def past(self) -> str:
        return PAST[self.action]

    def __str__(self) -> str:
        text = f"{SYMBOLS[self.action]} {self.action:<6} {self.resource}"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass
class Plan:
    kind: Literal["deploy", "destroy"]
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Problems known before anything runs that make a step certain to fail (a bucket name owned by
    # another account): the executor refuses such a plan instead of stopping half way through it.
    blockers: list[str] = field(default_factory=list)
    # The command that applies this plan, for "run it again" hints ("facerec bootstrap", "facerec iaas destroy").
    command: str = ""
    # The clients the plan was read with: what the executor applies it with.
    clients: Any = field(default=None, repr=False, compare=False)

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
            return "Nothing to destroy." if self.kind == "destroy" else f"No changes: {c['noop']} resources up to date."
        parts = [f"{c[a]} to {a}" for a in ("create", "update", "delete") if c[a]]
        if c["noop"]:
            parts.append(f"{c['noop']} unchanged")
        return f"Plan ({self.kind}): " + ", ".join(parts) + "."

    def render(self, *, show_noops: bool = False, show_calls: bool = False) -> str:
        lines: list[str] = []
        for step in self.steps:
            if show_noops or step.action != "noop":
                lines.append(str(step))
                if show_calls:
                    lines += [f"    {describe(call)}" for call in step.calls]
        lines += [f"! {w}" for w in self.warnings]
        lines += [f"!! {b}" for b in self.blockers]
        lines.append(self.summary())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


# ------------------------------------------------------------------------------------------ display

_SHORT = 60  # longer strings are summarised in the dry run (policy documents, user data, bodies)
_LONG = 1000  # and a whole parameter is cut after this many characters (long lists)


def describe(instruction: Instruction) -> str:
    """One line naming the call(s) an instruction makes, with its parameters."""
    if isinstance(instruction, APICall):
        text = f"{instruction.service}.{instruction.method}({_params(instruction.params)})"
        if instruction.output:
            text += f" -> <{instruction.output}>"
        return text
    if isinstance(instruction, Wait):
        return f"{instruction.service}.get_waiter({instruction.waiter!r}).wait({_params(instruction.params)})"
    if isinstance(instruction, WaitUntilGone):
        return f"{instruction.service}.{instruction.method}({_params(instruction.params)}) until {instruction.path} is empty"
    return f"s3.list_object_versions/delete_objects/abort_multipart_upload(Bucket={instruction.bucket!r}): empty the bucket"


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={_cut(_value(value))}" for key, value in params.items())


def _cut(text: str) -> str:
    return text if len(text) <= _LONG else text[: _LONG - 1] + "…"


def _value(value: Any) -> str:
    """A parameter as Python would print it, with references as ``<output>`` and long strings summarised."""
    if isinstance(value, Ref):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value):,} bytes>"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, str) and len(value) > _SHORT:
        return f"<JSON document, {len(value):,} characters>" if value.lstrip().startswith("{") else f"<{len(value):,} characters>"
    return repr(value)
