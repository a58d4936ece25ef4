"""Tiny Lambda handlers for tests/test_local_runtime.py. They run inside the local cloud's workers, so
they reach S3 the way the real handlers do: a plain boto3 client configured by the environment.

Events are either S3 notifications or ``{"key": ...}`` from a direct Invoke. Results go to the bucket
named by the function's ``OUTPUT_BUCKET`` variable as ``out/<key>`` (JSON describing the call).
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any
from urllib.parse import unquote_plus

import boto3
import botocore.exceptions



@functools.lru_cache(maxsize=None)
def _client(endpoint: str | None) -> Any:
    # Created once per warm worker, like a real handler's module-level client, but per endpoint: with
    # workers=0 this module stays imported in the test process while each test starts a cloud on a
    # new port.
    return boto3.client("s3")


class _S3:
    def __getattr__(self, name: str) -> Any:
        return getattr(_client(os.environ.get("AWS_ENDPOINT_URL")), name)


S3 = _S3()


def _key(event: dict[str, Any]) -> str:
    if "Records" in event:
        return unquote_plus(event["Records"][0]["s3"]["object"]["key"])
    return str(event["key"])


def _first_time(name: str, key: str) -> bool:
    """True on the first call for (name, key): remembered as a marker object, since a retry may run in
    a fresh worker process."""
    bucket, marker = os.environ["OUTPUT_BUCKET"], f"markers/{name}/{key}"
    try:
        S3.head_object(Bucket=bucket, Key=marker)
        return False
    except botocore.exceptions.ClientError:
        S3.put_object(Bucket=bucket, Key=marker, Body=str(os.getpid()).encode())
        return True


def echo_to_s3(event: dict[str, Any], context: Any) -> dict[str, Any]:
    key = _key(event)
    print("echo", key)  # where handler output lands is part of the contract
    record = {
        "key": key,
        "pid": os.getpid(),
        "function_name": context.function_name,
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "setting": os.environ.get("SETTING"),
        "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
        "profile": os.environ.get("AWS_PROFILE"),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
    }
    S3.put_object(Bucket=os.environ["OUTPUT_BUCKET"], Key=f"out/{key}", Body=json.dumps(record).encode())
    return record


def fail_once(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if _first_time("fail_once", _key(event)):
        raise RuntimeError("first attempt fails")
    return echo_to_s3(event, context)


def die_once(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if _first_time("die_once", _key(event)):
        os._exit(1)  # what a worker killed mid-invocation (OOM, SIGKILL) looks like to the runtime
    return echo_to_s3(event, context)


def always_fail(event: dict[str, Any], context: Any) -> None:
    raise ValueError(f"always fails: {_key(event)}")


def slow_echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Announces its pid, then takes a while: for shutdown tests. With ``done_file`` it leaves that file
    once it has run to its end, which a killed handler never does."""
    key = _key(event)
    S3.put_object(Bucket=os.environ["OUTPUT_BUCKET"], Key=f"started/{key}", Body=str(os.getpid()).encode())
    time.sleep(float(event.get("sleep", 1.0)) if "Records" not in event else 1.0)
    if "done_file" in event:
        with open(event["done_file"], "w") as f:
            f.write(str(os.getpid()))
    return echo_to_s3(event, context)


def gated_echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Waits (up to 30 s) for the test to put ``release`` in the output bucket, then echoes with
    ``released`` saying whether it was let go or gave up: for non-blocking tests, with no timing."""
    bucket, released = os.environ["OUTPUT_BUCKET"], False
    for _ in range(600):
        try:
            S3.head_object(Bucket=bucket, Key="release")
            released = True
            break
        except botocore.exceptions.ClientError:
            time.sleep(0.05)
    record = echo_to_s3(event, context)
    S3.put_object(Bucket=bucket, Key=f"released/{_key(event)}", Body=json.dumps(released).encode())
    return record


def stubborn(event: dict[str, Any], context: Any) -> None:
    """Ignores SIGTERM and works forever: only its parent's end (facerec_cli.lifeline) stops it."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.1)


def client_files(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The botocore data files this worker reads to make its first S3 and Lambda clients (a fresh
    worker's own, as a handler's first call makes them): none when its fork server parsed them."""
    import botocore.loaders

    read: list[str] = []
    original = botocore.loaders.JSONFileLoader.load_file

    def load_file(self: Any, file_path: str, *args: Any) -> Any:
        read.append(os.path.basename(os.path.dirname(file_path)) + "/" + os.path.basename(file_path))
        return original(self, file_path, *args)

    botocore.loaders.JSONFileLoader.load_file = load_file  # type: ignore[method-assign]
    try:
        boto3.client("s3"), boto3.client("lambda")
    finally:
        botocore.loaders.JSONFileLoader.load_file = original  # type: ignore[method-assign]
    record = {"read": read}
    S3.put_object(Bucket=os.environ["OUTPUT_BUCKET"], Key=f"out/{_key(event)}", Body=json.dumps(record).encode())
    return record


def inherited_sessions(answer: Any, weights: str) -> None:
    """Run in a process the fork server forks (as a worker is): the onnxruntime sessions it started with
    (thread counts), whether a recognition worker's models (FACEREC_THREADS=1) are those very sessions,
    whether they give the same embedding, bit for bit, as a session made here, and whether torch came
    along. Sends the answer through ``answer`` (a queue)."""
    import sys

    import numpy as np

    from lambdas.core import models

    inherited = dict(models._sessions)
    report: dict[str, Any] = {"threads": sorted(n for _, n in inherited), "torch": "torch" in sys.modules}
    if inherited:
        os.environ[models.THREADS_ENV] = "1"
        found = models.model_dir(weights, build=False)
        nets = models.OnnxModels(found)
        report["reused"] = all(nets._sessions[net] is inherited[(str(found.file(net)), 1)] for net in models.NETS)
        x = np.random.default_rng(0).standard_normal((2, 3, 160, 160)).astype(np.float32)
        fresh = models._new_session(found.file("embedder"), 1, found.cached).run(None, {"x": x})[0]
        report["same_embedding"] = bool(np.array_equal(nets.embed(x), fresh))
    answer.put(report)
