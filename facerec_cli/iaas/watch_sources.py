"""Where ``facerec watch --iaas`` takes its snapshots from, never downloading anything:

- the AWS APIs (AWS, or a moto endpoint): GetQueueAttributes on the request, response and dead-letter
  queues; DescribeInstances for the app-tier instances and the web-instance; ListObjectsV2 on the
  in/out buckets, counting ``KeyCount`` per page of up to 1000 keys. Seven calls, made concurrently.
- a web tier's ``GET /healthz`` (``--web-url``): one request. For ``facerec iaas run-local``, whose
  app instances are local worker processes and whose moto server is private to it. A web tier with a
  token wants it here too: it is read from ``FACEREC_TOKEN``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import botocore.exceptions

from facerec_cli.config import Settings
from facerec_cli.errors import UserError
from facerec_cli.iaas.names import WEB_INSTANCE, IaasNames
from facerec_cli.iaas.watch_snapshot import ACTIVE, PRESENT, AppInstance, IaasSnapshot, QueueCounts, by_number
from facerec_cli.infra.aws import error_code
from facerec_cli.infra.errors import IAAS_BOOTSTRAP_HINT, MISSING_QUEUE, not_deployed

HTTP_TIMEOUT_S = 5.0


# ------------------------------------------------------------------------------------ AWS APIs


class AwsSource:
    """Snapshots from the AWS APIs. Queue URLs are looked up once, on the first snapshot."""

    def __init__(self, sqs: Any, ec2: Any, s3: Any, names: IaasNames, *, settings: Settings | None = None, page_size: int = 1000) -> None:
        self.sqs = sqs
        self.ec2 = ec2
        self.s3 = s3
        self.names = names
        self.settings = settings or Settings(prefix=names.prefix)  # where the messages say it looked
        self.page_size = page_size
        self._urls: dict[str, str | None] | None = None

    def _not_deployed(self, what: str) -> UserError:
        return not_deployed(self.settings, what, hint=IAAS_BOOTSTRAP_HINT, lead="not deployed: ")

    def _queue_urls(self) -> dict[str, str | None]:
        if self._urls is None:
            names = self.names
            urls: dict[str, str | None] = {}
            for queue in (names.request_queue, names.response_queue, names.dead_letter_queue):
                try:
                    urls[queue] = self.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
                except botocore.exceptions.ClientError as exc:
                    if error_code(exc) not in MISSING_QUEUE:
                        raise
                    if queue != names.dead_letter_queue:
                        raise self._not_deployed(f"queue {queue}") from exc
                    urls[queue] = None  # shown as a note: the request queue still works without it
            self._urls = urls
        return self._urls

    def _counts(self, queue: str) -> QueueCounts | None:
        url = self._queue_urls()[queue]
        if url is None:
            return None
        try:
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in MISSING_QUEUE:  # deleted while watching
                raise self._not_deployed(f"queue {queue}") from exc
            raise
        return QueueCounts(int(attrs.get("ApproximateNumberOfMessages", 0)), int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)))

    def _app_instances(self) -> list[AppInstance]:
        from facerec_cli.iaas.pools import find_app_instances

        found = find_app_instances(self.ec2, self.names.prefix, PRESENT)
        return by_number([AppInstance(i["Name"], i["State"], i["InstanceId"]) for i in found])

    def _web_instance(self) -> str:
        from facerec_cli.iaas.pools import find_named_instances

        found = find_named_instances(self.ec2, self.names.prefix, WEB_INSTANCE, PRESENT)
        states = sorted({i["State"] for i in found}, key=lambda s: (s not in ACTIVE, s))
        return states[0] if states else "absent"

    def _objects(self, bucket: str) -> int | None:
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": self.page_size})
            return sum(int(page.get("KeyCount", 0)) for page in pages)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "NoSuchBucket":
                return None
            raise

    def snapshot(self) -> IaasSnapshot:
        names = self.names
        taken = datetime.now(timezone.utc)
        self._queue_urls()  # a missing deployment fails here, before the other calls
        with ThreadPoolExecutor(max_workers=7) as pool:
            request = pool.submit(self._counts, names.request_queue)
            response = pool.submit(self._counts, names.response_queue)
            dead = pool.submit(self._counts, names.dead_letter_queue)
            instances = pool.submit(self._app_instances)
            web = pool.submit(self._web_instance)
            in_objects = pool.submit(self._objects, names.in_bucket)
            out_objects = pool.submit(self._objects, names.out_bucket)
            snap = IaasSnapshot(
                taken_at=taken,
                source="aws",
                prefix=names.prefix,
                request=request.result(),
                response=response.result(),
                dead_letter=dead.result(),
                instances=instances.result(),
                web={"instance": web.result()},
                buckets={"in": in_objects.result(), "out": out_objects.result()},
            )
        if snap.dead_letter is None:
            snap.notes.append(f"no dead-letter queue {names.dead_letter_queue}")
        for name, bucket in (("in", names.in_bucket), ("out", names.out_bucket)):
            if snap.buckets[name] is None:
                snap.notes.append(f"no bucket {bucket}")
        return snap


# ------------------------------------------------------------------------------------ /healthz


def healthz_url(url: str) -> str:
    """``127.0.0.1:8000`` or ``http://host:8000/`` -> ``http://host:8000/healthz``."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"--web-url {url!r} is not an http(s) URL", hint="pass the URL the web tier printed, e.g. http://127.0.0.1:8000/")
    path = parts.path.rstrip("/")
    if not path.endswith("/healthz"):
        path += "/healthz"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


class WebSource:
    """Snapshots from a web tier's /healthz: one GET each (with the token of ``FACEREC_TOKEN``, if set)."""

    def __init__(self, url: str, *, timeout: float = HTTP_TIMEOUT_S, token: str | None = None) -> None:
        self.url = healthz_url(url)
        self.timeout = timeout
        self.token = token if token is not None else (os.environ.get("FACEREC_TOKEN") or None)
        # A proxy meant for the internet must not capture a web tier on this machine.
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(urllib.parse.urlsplit(self.url).hostname) else []
        self._opener = urllib.request.build_opener(*handlers)

    def _get(self) -> tuple[int, Any]:
        hint = "start it with `facerec iaas run-local` or `facerec web`, and pass the URL it printed"
        request = urllib.request.Request(self.url, headers={"Authorization": f"Bearer {self.token}"} if self.token else {})
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise UserError(f"the web tier at {self.url} wants its token", hint="set FACEREC_TOKEN to the token it was started with") from exc
            if exc.code != 503:  # 503 still carries the body (router stopped)
                raise UserError(f"the web tier at {self.url} answered HTTP {exc.code}", hint="is this a facerec web tier?") from exc
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise UserError(f"the web tier at {self.url} does not answer ({reason})", hint=hint) from exc
        try:
            return status, json.loads(raw)
        except ValueError as exc:
            raise UserError(f"{self.url} did not answer JSON: not a facerec web tier's /healthz") from exc

    def snapshot(self) -> IaasSnapshot:
        taken = datetime.now(timezone.utc)
        status, body = self._get()
        return from_health(body, taken_at=taken, url=self.url, http_status=status)


def from_health(body: Any, *, taken_at: datetime, url: str, http_status: int = 200) -> IaasSnapshot:
    """A snapshot from a /healthz body (see :meth:`facerec_cli.iaas.web.WebTier.health`)."""
    if not isinstance(body, dict) or not isinstance(body.get("queues"), dict):
        raise UserError(f"{url} reports no queue depths", hint="the web tier predates `facerec watch --iaas`: update facerec where it runs")
    notes: list[str] = []

    def counts(name: str) -> QueueCounts | None:
        q = body["queues"].get(name)
        if isinstance(q, dict) and "waiting" in q:
            return QueueCounts(int(q["waiting"]), int(q.get("in_flight", 0)))
        why = q.get("error") if isinstance(q, dict) else None
        notes.append(f"{name} queue not read: {why or 'not reported'}")
        return None

    request, response = counts("request"), counts("response")
    report = body.get("instances")
    instances: list[AppInstance] | None = None
    if report is None:
        notes.append("the web tier runs no auto-scaler: app instances unknown")
    elif isinstance(report, dict) and "error" in report:
        notes.append(f"app instances not read: {report['error']}")
    elif isinstance(report, dict) and isinstance(report.get("list"), list):
        instances = by_number([
            AppInstance(str(i.get("name", "")), str(i.get("state", "")), None if i.get("id") is None else str(i["id"]), i.get("phase"))
            for i in report["list"]
        ])  # fmt: skip
    elif isinstance(report, dict):  # a pool that only counts
        instances = [AppInstance("", "running") for _ in range(int(report.get("count") or 0))]
    web: dict[str, Any] = {"url": url, "status": body.get("status"), "http_waiting": body.get("waiting")}
    if http_status != 200:
        notes.append(f"/healthz answered HTTP {http_status}: {body.get('status')}")
    if body.get("scaler"):
        web["scaler"] = body["scaler"]
    return IaasSnapshot(
        taken_at=taken_at,
        source="web",
        prefix=body.get("prefix"),
        request=request,
        response=response,
        instances=instances,
        web=web,
        notes=notes,
    )


def aws_source(settings: Settings) -> AwsSource:
    """The AWS source for the deployment ``settings`` names (flags/env/facerec.toml as resolved)."""
    from facerec_cli.infra import aws

    sess = aws.session(settings)
    return AwsSource(
        aws.client(settings, "sqs", sess=sess),
        aws.client(settings, "ec2", sess=sess),
        aws.client(settings, "s3", sess=sess),
        IaasNames(settings.prefix),
        settings=settings,
    )


__all__ = ["AwsSource", "WebSource", "aws_source", "from_health", "healthz_url"]
