"""Least-privilege IAM policies of the three functions: each may touch only what its handler needs."""

from __future__ import annotations

from typing import Any

from facerec_cli.config import Settings

def _logs_statement(partition: str, region: str, account: str, group: str) -> dict[str, Any]:
    # `arn:...:log-group:NAME` is the log group itself (CreateLogGroup); `NAME:*` is how AWS prints
    # the group's ARN for its streams (CreateLogStream/PutLogEvents). Nothing outside this group.
    group_arn = f"arn:{partition}:logs:{region}:{account}:log-group:{group}"
    return {
        "Sid": "OwnLogGroup",
        "Effect": "Allow",
        "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": [group_arn, f"{group_arn}:*"],
    }


# Writing a result: the object, with its result tag (a PutObject carrying tags needs s3:PutObjectTagging
# too). Denied on the gallery: tagged as a result, it would expire with the results.
RESULT_WRITE_ACTIONS = ["s3:PutObject", "s3:PutObjectTagging"]


def _report_failures(failure_arn: str) -> dict[str, Any]:
    # Lambda hands a failed asynchronous invocation to the on-failure function with the failing function's
    # execution role: it needs lambda:InvokeFunction on that destination, and nothing of the queue.
    return {"Sid": "ReportFailures", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": failure_arn}


def splitting_policy(settings: Settings, *, partition: str, account: str, recognition_arn: str, failure_arn: str) -> dict[str, Any]:
    """Least privilege for video-splitting.

    No s3:ListBucket/GetObject on the output bucket, and PutObject there only on ``*.json``/``*.txt``:
    the function only writes error results for refused inputs under deterministic keys
    (<stem>.json/.txt), so a redelivered event overwrites the same objects. It reads back its own done marker in stage-1 (HeadObject: GetObject, and ListBucket
    so that a missing key answers 404 rather than 403) to skip a redelivered S3 event. Writing the gallery object is
    denied explicitly: the function decodes untrusted uploads and must not be able to replace
    the gallery (the Allow on `output/*` would otherwise cover it).
    """
    n = settings.names
    s3 = f"arn:{partition}:s3:::"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadUploads", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.input_bucket}/*"},
            {"Sid": "WriteFrames", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{s3}{n.stage1_bucket}/*"},
            {"Sid": "CheckFrames", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.stage1_bucket}/*"},
            {"Sid": "ListFrames", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"{s3}{n.stage1_bucket}"},
            {
                "Sid": "WriteErrorResults", "Effect": "Allow", "Action": RESULT_WRITE_ACTIONS,
                "Resource": [f"{s3}{n.output_bucket}/*.json", f"{s3}{n.output_bucket}/*.txt"],
            },
            {"Sid": "ProtectGallery", "Effect": "Deny", "Action": RESULT_WRITE_ACTIONS, "Resource": f"{s3}{n.output_bucket}/{n.gallery_key}"},
            {"Sid": "InvokeRecognition", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": recognition_arn},
            _logs_statement(partition, settings.region, account, n.log_group(n.splitting_function)),
            _report_failures(failure_arn),
        ],
    }


def recognition_policy(settings: Settings, *, partition: str, account: str, failure_arn: str) -> dict[str, Any]:
    """Least privilege for face-recognition. Besides frames and the gallery it may read result JSON
    (HeadObject on ``<stem>.json``, with ListBucket so a missing key answers 404) to skip a duplicate
    invocation; nothing else in the output bucket."""
    n = settings.names
    s3 = f"arn:{partition}:s3:::"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadFrames", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.stage1_bucket}/*"},
            {"Sid": "ListFrames", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"{s3}{n.stage1_bucket}"},
            {"Sid": "ReadGallery", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.output_bucket}/{n.gallery_key}"},
            {"Sid": "CheckResults", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.output_bucket}/*.json"},
            {"Sid": "ListResults", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"{s3}{n.output_bucket}"},
            {"Sid": "WriteResults", "Effect": "Allow", "Action": RESULT_WRITE_ACTIONS, "Resource": f"{s3}{n.output_bucket}/*"},
            {"Sid": "ProtectGallery", "Effect": "Deny", "Action": RESULT_WRITE_ACTIONS, "Resource": f"{s3}{n.output_bucket}/{n.gallery_key}"},
            _logs_statement(partition, settings.region, account, n.log_group(n.recognition_function)),
            _report_failures(failure_arn),
            # The upload: the samples after frame 0 are decoded from it when frame 0 does not settle the answer;
            # and timelines (FACEREC_TIMELINE on video-splitting; lambdas/segments.py): each segment decodes
            # its range from it, and stores its part and the merge claim beside the frames.
            {"Sid": "ReadUploadsForTimelines", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.input_bucket}/*"},
            {"Sid": "WriteTimelineSegments", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{s3}{n.stage1_bucket}/.facerec/segments/*"},
        ],
    }


def failure_policy(settings: Settings, *, partition: str, account: str, queue_arn: str) -> dict[str, Any]:
    """Least privilege for the on-failure function (lambdas/on_failure.py): error results under the same
    keys as the others' (not the gallery), the result check (HeadObject on ``<stem>.json``, ListBucket for
    a 404), a failed timeline segment's part and merge claim in stage-1, and the failure queue."""
    n = settings.names
    s3 = f"arn:{partition}:s3:::"
    segments = f"{s3}{n.stage1_bucket}/.facerec/segments/*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "WriteErrorResults", "Effect": "Allow", "Action": RESULT_WRITE_ACTIONS,
                "Resource": [f"{s3}{n.output_bucket}/*.json", f"{s3}{n.output_bucket}/*.txt"],
            },
            {"Sid": "ProtectGallery", "Effect": "Deny", "Action": RESULT_WRITE_ACTIONS, "Resource": f"{s3}{n.output_bucket}/{n.gallery_key}"},
            {"Sid": "CheckResults", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.output_bucket}/*.json"},
            {"Sid": "ListResults", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"{s3}{n.output_bucket}"},
            {"Sid": "FailSegments", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": segments},
            {"Sid": "ListSegments", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"{s3}{n.stage1_bucket}"},
            _logs_statement(partition, settings.region, account, n.log_group(n.failure_function)),
            {"Sid": "ForwardFailures", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:SendMessage"], "Resource": queue_arn},
        ],
    }
