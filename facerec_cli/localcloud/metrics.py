"""The Lambda metrics AWS publishes for every function, recorded in the local cloud's CloudWatch, so that
an outside client reads them as it would on AWS (``get_metric_data`` on namespace ``AWS/Lambda``,
dimension ``FunctionName``): the course's grader checks Duration (Average) and ConcurrentExecutions
(Maximum), dashboards read Invocations and Errors too.

Per invocation attempt, as AWS counts them: Invocations 1, Errors 1 or 0, Duration in milliseconds, and
ConcurrentExecutions, the number of the function's invocations running when it started (AWS reports the
maximum over each period). Recorded from the dispatcher's lane threads, sent from one thread of its own
in batches: a PutMetricData per invocation would add a request to the moto server in every hand-over.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger(__name__)

NAMESPACE = "AWS/Lambda"
FLUSH_S = 1.0
BATCH = 1000  # CloudWatch's limit of metric data per PutMetricData


class LambdaMetrics:
    """Collects datapoints and sends them to ``cloudwatch`` (a boto3 client of the local cloud)."""

    def __init__(self, cloudwatch: Any) -> None:
        self._cloudwatch = cloudwatch
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facerec-lambda-metrics", daemon=True)
        self._thread.start()

    def record(self, function: str, duration_ms: float, ok: bool, concurrent: int) -> None:
        """One finished invocation attempt of ``function``."""
        now = datetime.now(timezone.utc)
        dims = [{"Name": "FunctionName", "Value": function}]

        def datum(name: str, value: float, unit: str) -> dict[str, Any]:
            return {"MetricName": name, "Dimensions": dims, "Timestamp": now, "Value": float(value), "Unit": unit}

        points = [
            datum("Invocations", 1, "Count"), datum("Errors", 0 if ok else 1, "Count"),
            datum("Duration", duration_ms, "Milliseconds"), datum("ConcurrentExecutions", concurrent, "Count"),
        ]  # fmt: skip
        with self._lock:
            self._pending.extend(points)

    def flush(self) -> None:
        with self._lock:
            points, self._pending = self._pending, []
        for start in range(0, len(points), BATCH):
            try:
                self._cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=points[start : start + BATCH])
            except Exception:  # noqa: BLE001 - metrics are an extra: never fail the pipeline for them
                log.exception("could not record %d Lambda metric datapoints", len(points[start : start + BATCH]))

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.flush()

    def close(self) -> None:
        """Send what is left and stop (before the server stops). Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        self.flush()
