"""Which buckets hold a deployment's results: found once per command with one HeadBucket, so that
readers (results, watch, people, search, the report) and the upload re-trigger of ``results --watch``
read a deployment of this release and one made before the details bucket existed alike."""

from __future__ import annotations

from typing import Any

import botocore.exceptions

from lambdas.env import ResultBuckets


def result_buckets(s3: Any, names: Any) -> ResultBuckets:
    """Where a deployment keeps its results: the answers in the output bucket, the details in the details
    bucket; for a deployment made by a release before the details bucket existed (it has none), both in
    the output bucket, where that release wrote them. `facerec bootstrap` with this release adds the
    details bucket; results written before stay where they are."""
    try:
        s3.head_bucket(Bucket=names.details_bucket)
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            return ResultBuckets(names.output_bucket, names.output_bucket)
        raise
    return ResultBuckets(names.output_bucket, names.details_bucket)
