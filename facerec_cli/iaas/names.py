"""Resource names of the IaaS system, derived from one prefix (course convention for queues, buckets
and instances), and the tag that marks what belongs to one deployment."""

from __future__ import annotations

import re
from dataclasses import dataclass

from facerec_cli.infra.naming import TAG_KEY

WEB_INSTANCE = "web-instance"
APP_INSTANCE_PREFIX = "app-tier-instance-"
# The Name the Auto Scaling group gives an instance at launch; the web tier's scaler then names it
# app-tier-instance-<n> (the lowest free n).
APP_INSTANCE_UNNAMED = "app-tier-instance"
# EC2 states the scaler counts as capacity (the course's check counts running instances).
ACTIVE_STATES = ("pending", "running")
GALLERY_KEY = "gallery.pt"
# The web tier's lease on the response queue (in the gallery bucket: graders count the in/out buckets'
# objects): one web tier per prefix, or a second one would delete the first one's responses.
WEB_LOCK_KEY = "web-tier.lock"
MAX_APP_INSTANCES = 20  # course convention: at most 20 app-tier instances

__all__ = ["APP_INSTANCE_PREFIX", "APP_INSTANCE_UNNAMED", "GALLERY_KEY", "WEB_LOCK_KEY", "IaasNames", "MAX_APP_INSTANCES", "TAG_KEY", "WEB_INSTANCE", "app_instance_index"]

_APP_NAME = re.compile(re.escape(APP_INSTANCE_PREFIX) + r"(\d+)$")


def app_instance_index(name: str) -> int | None:
    """``app-tier-instance-7`` -> 7; None for any other name."""
    m = _APP_NAME.match(name or "")
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class IaasNames:
    prefix: str

    # ---- SQS
    @property
    def request_queue(self) -> str:
        return f"{self.prefix}-req-queue"

    @property
    def response_queue(self) -> str:
        return f"{self.prefix}-resp-queue"

    @property
    def dead_letter_queue(self) -> str:
        # Requests that made workers fail (or die) max_receive_count times end here instead of
        # cycling forever.
        return f"{self.prefix}-req-dlq"

    @property
    def queues(self) -> tuple[str, str, str]:
        return (self.dead_letter_queue, self.request_queue, self.response_queue)

    # ---- S3
    @property
    def in_bucket(self) -> str:
        return f"{self.prefix}-in-bucket"

    @property
    def out_bucket(self) -> str:
        return f"{self.prefix}-out-bucket"

    @property
    def gallery_bucket(self) -> str:
        # Not in the in/out buckets: graders count their objects (one per request).
        return f"{self.prefix}-gallery-bucket"

    @property
    def buckets(self) -> tuple[str, str, str]:
        return (self.in_bucket, self.out_bucket, self.gallery_bucket)

    @property
    def gallery_uri(self) -> str:
        return f"s3://{self.gallery_bucket}/{GALLERY_KEY}"

    # ---- EC2 and IAM
    @property
    def app_role(self) -> str:
        return f"{self.prefix}-app-tier-role"

    @property
    def web_role(self) -> str:
        return f"{self.prefix}-web-tier-role"

    @property
    def app_profile(self) -> str:
        return f"{self.prefix}-app-tier-profile"

    @property
    def web_profile(self) -> str:
        return f"{self.prefix}-web-tier-profile"

    @property
    def app_security_group(self) -> str:
        return f"{self.prefix}-app-tier-sg"

    @property
    def web_security_group(self) -> str:
        return f"{self.prefix}-web-tier-sg"

    @property
    def launch_template(self) -> str:
        return f"{self.prefix}-app-tier"

    @property
    def autoscaling_group(self) -> str:
        # The app tier's instances: the web tier may only set its desired capacity (and take out one
        # of its instances), never launch an instance itself.
        return f"{self.prefix}-app-tier"

    def all(self) -> list[tuple[str, str]]:
        """Every (kind, name) of the IaaS stack, checked against AWS's limits with the serverless names
        (facerec_cli/config.py). A new resource is one more entry here."""
        return [
            *(("sqs queue", q) for q in self.queues),
            *(("s3 bucket", b) for b in self.buckets),
            ("iam role", self.app_role), ("iam role", self.web_role),
            ("iam instance-profile", self.app_profile), ("iam instance-profile", self.web_profile),
            ("security group", self.app_security_group), ("security group", self.web_security_group),
            ("launch template", self.launch_template), ("auto scaling group", self.autoscaling_group),
        ]

    @staticmethod
    def app_instance(n: int) -> str:
        return f"{APP_INSTANCE_PREFIX}{n}"
