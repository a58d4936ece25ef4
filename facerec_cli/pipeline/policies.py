"""Least-privilege IAM policies of the three functions: each may touch only what its handler needs."""

from __future__ import annotations

from typing import Any

from facerec_cli.config import Settings
from lambdas.stage1 import SPLIT_MARKERS

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


def _result_statements(settings: Settings, s3: str, *, write_all_details: bool = False) -> list[dict[str, Any]]:
    """Writing and checking results: ``<stem>.json`` in the details bucket and ``<stem>.txt`` in the output
    bucket, under deterministic keys (a redelivered event overwrites the same objects); HeadObject on both
    (GetObject, and ListBucket so that a missing key answers 404 rather than 403) for the exactly-once
    check. ``write_all_details``: any key of the details bucket (recognition's crops and annotated
    frames). Writing the gallery is denied explicitly, whatever the Allow covers."""
    n = settings.names
    details, output = f"{s3}{n.details_bucket}", f"{s3}{n.output_bucket}"
    return [
        {
            "Sid": "WriteResults", "Effect": "Allow", "Action": RESULT_WRITE_ACTIONS,
            "Resource": [f"{details}/*" if write_all_details else f"{details}/*.json", f"{output}/*.txt"],
        },
        {"Sid": "ProtectGallery", "Effect": "Deny", "Action": RESULT_WRITE_ACTIONS, "Resource": f"{details}/{n.gallery_key}"},
        {"Sid": "CheckResults", "Effect": "Allow", "Action": "s3:GetObject", "Resource": [f"{details}/*.json", f"{output}/*.txt"]},
        {"Sid": "ListResults", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": [details, output]},
    ]


def splitting_policy(settings: Settings, *, partition: str, account: str, recognition_arn: str, failure_arn: str) -> dict[str, Any]:
    """Least privilege for video-splitting.

    Frames into stage-1 (nothing read back there); error results for refused inputs (the result
    statements); its done marker in the details bucket (written, and read back to skip a redelivered S3
    event). Nothing of the gallery: the function decodes untrusted uploads and must not be able to
    replace it.
    """
    n = settings.names
    s3 = f"arn:{partition}:s3:::"
    markers = f"{s3}{n.details_bucket}/{SPLIT_MARKERS}*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadUploads", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.input_bucket}/*"},
            {"Sid": "WriteFrames", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{s3}{n.stage1_bucket}/*"},
            *_result_statements(settings, s3),
            {"Sid": "DoneMarkers", "Effect": "Allow", "Action": ["s3:GetObject", *RESULT_WRITE_ACTIONS], "Resource": markers},
            {"Sid": "InvokeRecognition", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": recognition_arn},
            _logs_statement(partition, settings.region, account, n.log_group(n.splitting_function)),
            _report_failures(failure_arn),
        ],
    }


def recognition_policy(settings: Settings, *, partition: str, account: str, failure_arn: str) -> dict[str, Any]:
    """Least privilege for face-recognition: frames, the gallery, and results (the result statements;
    any key of the details bucket but the gallery, for crops and annotated frames)."""
    n = settings.names
    s3 = f"arn:{partition}:s3:::"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadFrames", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.stage1_bucket}/*"},
            {"Sid": "ListFrames", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"{s3}{n.stage1_bucket}"},
            {"Sid": "ReadGallery", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{s3}{n.details_bucket}/{n.gallery_key}"},
            *_result_statements(settings, s3, write_all_details=True),
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
    keys as the others' (the result statements), a failed timeline segment's part and merge claim in
    stage-1, and the failure queue."""
    n = settings.names
    s3 = f"arn:{partition}:s3:::"
    segments = f"{s3}{n.stage1_bucket}/.facerec/segments/*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            *_result_statements(settings, s3),
            {"Sid": "FailSegments", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": segments},
            {"Sid": "ListSegments", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"{s3}{n.stage1_bucket}"},
            _logs_statement(partition, settings.region, account, n.log_group(n.failure_function)),
            {"Sid": "ForwardFailures", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:SendMessage"], "Resource": queue_arn},
        ],
    }
