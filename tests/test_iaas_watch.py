"""`facerec watch --iaas`: snapshots of the IaaS system from the AWS APIs (a real moto server over HTTP,
resources made by the real bootstrap plan, app instances started by the Auto Scaling group the EC2
pool sizes) and from a real web
tier's /healthz (served by waitress on 127.0.0.1, with a scaler whose pool the test controls)."""

from __future__ import annotations

import io
import json
import socket
import time
import types
from typing import Any

import pytest
import requests
from rich.console import Console
from typer.testing import CliRunner

from facerec_cli.config import Settings
from facerec_cli.infra.executor import NullReporter, apply_plan
from facerec_cli.iaas import watch as iaas_watch
from facerec_cli.iaas.deployer import plan_bootstrap
from facerec_cli.iaas.stack import IaasOptions
from facerec_cli.infra.clients import Clients
from facerec_cli.iaas.messages import Request, Response, new_id, queue_depth, queue_url
from facerec_cli.iaas.names import IaasNames
from facerec_cli.iaas.pools import AsgPool, InstanceInfo, find_app_instances
from facerec_cli.iaas.scaler import AutoScaler, ScalingPolicy
from facerec_cli.iaas.watch import AppInstance, AwsSource, QueueCounts, WebSource, healthz_url
from facerec_cli.iaas.web import WebConfig, WebTier, pool_report
from facerec_cli.iaas.web_server import WebServer
from facerec_cli.localcloud.server import LocalCloud
from facerec_cli.cli.app import app

PREFIX = "watchdemo"
runner = CliRunner()


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch):
    """A real moto server on 127.0.0.1, with fake credentials for the CLI's own clients."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with LocalCloud() as local:
        yield local


def deploy(cloud: LocalCloud, *, compute: bool = True) -> tuple[Clients, IaasNames]:
    """`facerec iaas bootstrap`'s plan, applied (with compute: roles, launch template, Auto Scaling group, web-instance)."""
    settings = Settings(prefix=PREFIX, region=cloud.region, endpoint_url=cloud.endpoint_url)
    clients = Clients.from_session(cloud.session(), cloud.endpoint_url)
    ami = clients.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"] if compute else None
    apply_plan(plan_bootstrap(settings, IaasOptions(ami=ami, with_compute=compute, allow_cidr="203.0.113.7/32"), clients), NullReporter())
    return clients, IaasNames(PREFIX)


def send_requests(sqs: Any, url: str, n: int) -> None:
    for i in range(n):
        sqs.send_message(QueueUrl=url, MessageBody=Request(new_id(), f"img_{i}.jpg").to_body())


def take(sqs: Any, url: str, n: int) -> list[str]:
    """Receive ``n`` messages (they stay in flight for 5 minutes); their receipt handles."""
    handles: list[str] = []
    while len(handles) < n:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=n - len(handles), VisibilityTimeout=300, WaitTimeSeconds=1).get("Messages") or []
        handles += [m["ReceiptHandle"] for m in got]
    return handles


def respond(sqs: Any, url: str) -> None:
    sqs.send_message(QueueUrl=url, MessageBody=Response(id=new_id(), key="img_0.jpg", name="madonna", status="ok").to_body())


def cli(*args: str) -> Any:
    result = runner.invoke(app, ["watch", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def common(cloud: LocalCloud, prefix: str = PREFIX) -> list[str]:
    return ["--prefix", prefix, "--endpoint-url", cloud.endpoint_url, "--region", "us-east-1"]


def rendered(snapshot: iaas_watch.IaasSnapshot) -> str:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(iaas_watch.render(snapshot))
    return console.file.getvalue()  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ AWS APIs


def test_aws_snapshot_counts_queues_instances_and_buckets(cloud: LocalCloud) -> None:
    clients, n = deploy(cloud)
    sqs, s3, ec2 = clients.sqs, clients.s3, clients.ec2
    req, resp, dlq = (queue_url(sqs, q) for q in (n.request_queue, n.response_queue, n.dead_letter_queue))
    send_requests(sqs, req, 5)
    handles = take(sqs, req, 2)
    respond(sqs, resp)
    sqs.send_message(QueueUrl=dlq, MessageBody=Request(new_id(), "poison.jpg").to_body())
    for i in range(3):
        s3.put_object(Bucket=n.in_bucket, Key=f"img_{i}.jpg", Body=b"x")
    s3.put_object(Bucket=n.out_bucket, Key="img_0", Body=b"madonna")
    pool = AsgPool(clients.autoscaling, ec2, n)  # the scaler's own code: the group starts them, the pool names them
    pool.scale_to(3)
    pool.scale_to(2)  # terminates app-tier-instance-3: no longer shown
    second = next(i for i in find_app_instances(ec2, PREFIX, ("running",)) if i["Name"] == "app-tier-instance-2")
    ec2.stop_instances(InstanceIds=[second["InstanceId"]])

    source = AwsSource(sqs, ec2, s3, n, page_size=2)  # pages of 2 keys: KeyCount summed over pages
    snap = source.snapshot()
    assert snap.request == QueueCounts(waiting=3, in_flight=2)
    assert snap.response == QueueCounts(1, 0) and snap.dead_letter == QueueCounts(1, 0)
    assert [(i.name, i.state) for i in snap.instances or []] == [("app-tier-instance-1", "running"), ("app-tier-instance-2", "stopped")]
    assert snap.app_instances == 1 and snap.by_state == {"running": 1, "stopped": 1}
    assert snap.web == {"instance": "running"}  # the web-instance bootstrap launched
    assert snap.buckets == {"in": 3, "out": 1} and snap.notes == [] and not snap.idle

    data = json.loads(snap.to_json())
    assert data["queues"] == {"request": {"waiting": 3, "in_flight": 2}, "response": {"waiting": 1, "in_flight": 0}, "dead_letter": {"waiting": 1, "in_flight": 0}}
    assert data["app_instances"] == 1 and data["app_instance_names"] == ["app-tier-instance-1"]
    assert data["instances_by_state"] == {"running": 1, "stopped": 1} and data["idle"] is False and data["source"] == "aws"
    text = rendered(snap)
    for shown in ("watchdemo-req-queue", "watchdemo-resp-queue", "watchdemo-req-dlq", "1 starting or running (1 running, 1 stopped)",
                  "app-tier-instance-2  stopped", "watchdemo-in-bucket: 3 objects", "busy"):  # fmt: skip
        assert shown in text, text

    # /healthz with the EC2 pool reports the same instances
    assert pool_report(pool) == {
        "count": 1,
        "names": ["app-tier-instance-1"],
        "list": [
            {"name": "app-tier-instance-1", "state": "running", "id": snap.instances[0].id},  # type: ignore[index]
            {"name": "app-tier-instance-2", "state": "stopped", "id": second["InstanceId"]},
        ],
    }

    # Idle: nothing waiting or in flight and no instance left starting or running (a stopped one costs
    # nothing); responses and dead letters do not keep the system busy.
    for handle in handles:
        sqs.delete_message(QueueUrl=req, ReceiptHandle=handle)
    sqs.purge_queue(QueueUrl=req)
    pool.scale_to(1)  # app-tier-instance-1 (running) is taken out; the stopped one stays
    idle = source.snapshot()
    assert idle.request == QueueCounts(0, 0) and idle.app_instances == 0 and idle.idle
    assert idle.response == QueueCounts(1, 0) and [(i.name, i.state) for i in idle.instances or []] == [("app-tier-instance-2", "stopped")]


def test_cli_json_until_idle_on_an_idle_system(cloud: LocalCloud) -> None:
    deploy(cloud)
    result = cli("--iaas", "--until-idle", "--json", *common(cloud))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout  # idle at once: one snapshot, nothing else on stdout
    data = json.loads(lines[0])
    assert data["idle"] is True and data["prefix"] == PREFIX and data["app_instances"] == 0 and data["instances"] == []
    assert data["queues"]["request"] == {"waiting": 0, "in_flight": 0} and data["buckets"] == {"in": 0, "out": 0}
    assert data["web"] == {"instance": "running"}

    board = cli("--iaas", "--until-idle", *common(cloud))  # not a terminal: the last table, once
    assert board.exit_code == 0 and "facerec watch --iaas" in board.stdout and "idle" in board.stdout
    assert "watchdemo-req-queue" in board.stdout and "0 starting or running (none)" in board.stdout


def test_watch_loop_on_a_busy_system_until_it_drains(cloud: LocalCloud, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    clients, n = deploy(cloud)
    sqs = clients.sqs
    req = queue_url(sqs, n.request_queue)
    send_requests(sqs, req, 4)
    take(sqs, req, 1)
    pool = AsgPool(clients.autoscaling, clients.ec2, n)
    pool.scale_to(2)

    # The loop itself, bounded: one JSON line per refresh, the same numbers each time.
    pauses: list[float] = []
    last = iaas_watch.watch_iaas(iaas_watch.aws_source(Settings(prefix=PREFIX, endpoint_url=cloud.endpoint_url)),
                            interval=0.25, until_idle=True, json_lines=True, sleep=pauses.append, max_refreshes=2)  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and pauses == [0.25] and last is not None and not last.idle
    for line in lines:
        data = json.loads(line)
        assert data["queues"]["request"] == {"waiting": 3, "in_flight": 1} and data["idle"] is False
        assert data["app_instances"] == 2 and data["app_instance_names"] == ["app-tier-instance-1", "app-tier-instance-2"]

    # The command: busy, then (the queue purged and the instances terminated between refreshes) idle.
    def drain(seconds: float) -> None:
        assert seconds == 0.2
        sqs.purge_queue(QueueUrl=req)
        pool.scale_to(0)

    monkeypatch.setattr(iaas_watch, "time", types.SimpleNamespace(sleep=drain))
    result = cli("--iaas", "--until-idle", "--json", "--interval", "0.2", *common(cloud))
    assert result.exit_code == 0, result.output
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert (first["queues"]["request"], first["app_instances"], first["idle"]) == ({"waiting": 3, "in_flight": 1}, 2, False)
    assert (second["queues"]["request"], second["app_instances"], second["idle"]) == ({"waiting": 0, "in_flight": 0}, 0, True)


def test_cli_errors_are_one_line(cloud: LocalCloud) -> None:
    missing = cli("--iaas", "--until-idle", "--json", *common(cloud, "nothing-here"))
    assert missing.exit_code == 1 and missing.stdout == ""
    assert "not deployed: queue nothing-here-req-queue does not exist" in missing.stderr
    assert "run `facerec iaas bootstrap` first" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = cli("--web-url", f"http://127.0.0.1:{port}/", "--until-idle", "--json")  # --web-url implies --iaas
    assert down.exit_code == 1 and down.stdout == ""
    assert f"the web tier at http://127.0.0.1:{port}/healthz does not answer" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def test_healthz_url() -> None:
    assert healthz_url("127.0.0.1:8000") == "http://127.0.0.1:8000/healthz"
    assert healthz_url("http://10.0.0.5:8000/") == "http://10.0.0.5:8000/healthz"
    assert healthz_url("https://web.example/app/healthz") == "https://web.example/app/healthz"


# ------------------------------------------------------------------------------------------ /healthz


class TinyPool:
    """Local app instances without processes: the scaler launches them, the test stops them."""

    def __init__(self) -> None:
        self.live: dict[int, InstanceInfo] = {}

    def active(self) -> int:
        return sum(not i.stopping for i in self.live.values())

    def instances(self) -> list[InstanceInfo]:
        return list(self.live.values())

    def scale_to(self, n: int) -> None:
        while self.active() < n:
            k = next(k for k in range(1, 100) if k not in self.live)
            self.live[k] = InstanceInfo(f"app-tier-instance-{k}", 4000 + k, "idle", "", False)
        if n == 0:
            self.live.clear()

    def stop(self, k: int) -> None:
        info = self.live[k]
        self.live[k] = InstanceInfo(info.name, info.pid, info.phase, info.request_id, True)

    def close(self) -> None:
        pass


def test_healthz_reports_queues_and_instances_and_watch_reads_it(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    clients, n = deploy(cloud, compute=False)  # as `facerec iaas run-local` deploys
    sqs = clients.sqs
    req, resp = queue_url(sqs, n.request_queue), queue_url(sqs, n.response_queue)
    send_requests(sqs, req, 4)
    take(sqs, req, 1)
    respond(sqs, resp)
    pool = TinyPool()
    scaler = AutoScaler(pool, lambda: queue_depth(sqs, req), ScalingPolicy(max_instances=5, per_instance=2))
    assert scaler.tick().active == 2  # depth 4, 2 per instance
    pool.stop(2)  # scale-in under way: app-tier-instance-2 finishes its request
    tier = WebTier(s3=clients.s3, sqs=sqs, names=n, config=WebConfig(poll_wait_s=1, health_cache_s=0), scaler=scaler)
    server = WebServer(tier.app, host="127.0.0.1", port=0, threads=4).start()
    url = server.url + "/"
    try:
        # The router is not started yet (so the response stays in its queue): 503, still with the body.
        health = requests.get(url + "healthz", timeout=10)
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "router stopped" and body["waiting"] == 0 and body["responses"] == {} and body["http"] == {}
        assert body["scaler"] == {"depth": 4, "target": 2, "instances": 2} and body["prefix"] == PREFIX
        assert body["queues"] == {"request": {"waiting": 3, "in_flight": 1}, "response": {"waiting": 1, "in_flight": 0}}
        assert body["instances"] == {
            "count": 1,
            "names": ["app-tier-instance-1"],
            "list": [
                {"name": "app-tier-instance-1", "state": "running", "id": 4001, "phase": "idle"},
                {"name": "app-tier-instance-2", "state": "stopping", "id": 4002, "phase": "idle"},
            ],
        }

        snap = WebSource(url).snapshot()
        assert snap.source == "web" and snap.prefix == PREFIX
        assert snap.request == QueueCounts(3, 1) and snap.response == QueueCounts(1, 0) and snap.dead_letter is None
        assert snap.instances == [AppInstance("app-tier-instance-1", "running", "4001", "idle"), AppInstance("app-tier-instance-2", "stopping", "4002", "idle")]
        assert snap.app_instances == 1 and not snap.idle
        assert snap.notes == ["/healthz answered HTTP 503: router stopped"]
        text = rendered(snap)
        assert "1 starting or running (1 running, 1 stopping)" in text and url + "healthz" in text and "dead-letter" not in text

        # With the router running the response is taken (nobody waits for it): 200 and no notes.
        tier.start()
        deadline = time.monotonic() + 10
        while tier.router.counts["unknown"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        snap = WebSource(url.rstrip("/")).snapshot()
        assert snap.response == QueueCounts(0, 0) and snap.web["status"] == "ok" and snap.notes == []

        # The command, one JSON line per refresh until the system drained between two refreshes.
        def drain(seconds: float) -> None:
            sqs.purge_queue(QueueUrl=req)
            pool.scale_to(0)

        monkeypatch.setattr(iaas_watch, "time", types.SimpleNamespace(sleep=drain))
        result = cli("--iaas", "--web-url", url, "--until-idle", "--json", "--interval", "0.1")
        assert result.exit_code == 0, result.output
        first, second = (json.loads(line) for line in result.stdout.splitlines())
        assert first["queues"] == {"request": {"waiting": 3, "in_flight": 1}, "response": {"waiting": 0, "in_flight": 0}, "dead_letter": None}
        assert first["app_instances"] == 1 and first["instances_by_state"] == {"running": 1, "stopping": 1} and first["idle"] is False
        assert second["app_instances"] == 0 and second["instances"] == [] and second["idle"] is True
    finally:
        tier.stop()
        server.stop()


def test_healthz_without_a_scaler_leaves_instances_unknown(cloud: LocalCloud) -> None:
    clients, n = deploy(cloud, compute=False)
    tier = WebTier(s3=clients.s3, sqs=clients.sqs, names=n, config=WebConfig(poll_wait_s=1, health_cache_s=0)).start()
    server = WebServer(tier.app, host="127.0.0.1", port=0, threads=2).start()
    try:
        snap = WebSource(server.url).snapshot()
        assert snap.instances is None and snap.app_instances is None and snap.idle  # queues empty; instances not known
        assert snap.notes == ["the web tier runs no auto-scaler: app instances unknown"]
        assert "unknown" in rendered(snap)
    finally:
        tier.stop()
        server.stop()
