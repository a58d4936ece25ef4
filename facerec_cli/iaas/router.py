"""The web tier's response router: the only reader of the response queue.

One background thread long-polls the response queue and routes every response to the waiter of its
request id, so responses may arrive in any order. A response for an id already answered (a redelivered
request answered twice) or given up on (504 sent) is deleted and counted; one for an id this web tier
never issued is deleted after a warning. So there must be one web tier per response queue (see
:class:`~facerec_cli.iaas.lease.WebLease`).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from facerec_cli.iaas.messages import Response

log = logging.getLogger("facerec.iaas.web")


class Waiter:
    __slots__ = ("id", "event", "response", "cancelled")

    def __init__(self, request_id: str) -> None:
        self.id = request_id
        self.event = threading.Event()
        self.response: Response | None = None
        self.cancelled = False

    def wait(self, timeout: float) -> Response | None:
        self.event.wait(timeout)
        return self.response


class ResponseRouter:
    """Long-polls the response queue in one thread and hands each response to its request's waiter."""

    def __init__(self, sqs: Any, url: str, *, wait_s: int = 20, remember: int = 10_000) -> None:
        self.sqs = sqs
        self.url = url
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._waiters: dict[str, Waiter] = {}
        self._answered: collections.OrderedDict[str, Response] = collections.OrderedDict()  # id -> first response
        self._abandoned: collections.OrderedDict[str, float] = collections.OrderedDict()  # timed out ids
        self._remember = remember
        self.counts: collections.Counter[str] = collections.Counter()  # answered, duplicate, late, unknown, malformed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- for request threads

    def expect(self, request_id: str) -> Waiter:
        """Register before sending the request: its response may come back at once."""
        waiter = Waiter(request_id)
        with self._lock:
            self._waiters[request_id] = waiter
        return waiter

    def abandon(self, request_id: str) -> None:
        """The HTTP request gave up (timeout or a failed send): a later response is 'late'."""
        with self._lock:
            if self._waiters.pop(request_id, None) is not None:
                self._abandoned[request_id] = time.time()
                while len(self._abandoned) > self._remember:
                    self._abandoned.popitem(last=False)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)

    def answered(self, request_id: str) -> Response | None:
        """The response that answered ``request_id`` (the most recent ``remember`` ids)."""
        with self._lock:
            return self._answered.get(request_id)

    # -- the thread

    def start(self) -> "ResponseRouter":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="facerec-response-router", daemon=True)
            self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop polling and wake every waiter (their requests get a 503). The thread may be in a long
        poll of up to ``wait_s``: it is not waited for longer than ``timeout`` (it is a daemon thread; a
        response it receives after this is left in the queue, and the next router deletes it)."""
        self._stop.set()
        with self._lock:
            waiters, self._waiters = list(self._waiters.values()), {}
        for waiter in waiters:
            waiter.cancelled = True
            waiter.event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep routing; a dead router would time out every request
                if self._stop.is_set():
                    return
                log.exception("response router: polling %s failed; retrying in 1 s", self.url)
                self._stop.wait(1.0)

    def poll_once(self) -> int:
        resp = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=self.wait_s)
        messages = resp.get("Messages") or []
        if not messages:
            return 0
        for message in messages:
            self.route_body(message.get("Body") or "")
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        result = self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)
        for failed in result.get("Failed") or []:
            log.warning("response router: could not delete a response (%s); a duplicate may follow", failed.get("Code"))
        return len(messages)

    def route_body(self, body: str) -> str:
        """Hand one response to its waiter; returns what happened to it."""
        try:
            response = Response.from_body(body)
        except ValueError as exc:
            self.counts["malformed"] += 1
            log.error("response router: dropping a malformed response: %s", exc)
            return "malformed"
        with self._lock:
            waiter = self._waiters.pop(response.id, None)
            if waiter is not None:
                outcome = "answered"
                self._answered[response.id] = response
                while len(self._answered) > self._remember:
                    self._answered.popitem(last=False)
            elif response.id in self._answered:
                outcome = "duplicate"
            elif response.id in self._abandoned:
                outcome = "late"
            else:
                outcome = "unknown"
            self.counts[outcome] += 1
        if waiter is not None:
            waiter.response = response
            waiter.event.set()
        elif outcome == "unknown":
            log.warning("response router: deleted a response for unknown request %s (%s)", response.id, response.answer)
        else:
            log.info("response router: deleted a %s response for request %s", outcome, response.id)
        return outcome
