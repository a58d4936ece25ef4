"""What the kind planners share while one plan is made (:class:`PlanContext`)."""

from __future__ import annotations

from typing import Any

from facerec_cli.infra.clients import Clients
from facerec_cli.infra.readers import bucket_region, owned_buckets


class PlanContext:
    """What the kind planners share while one plan is made: the clients, the tags, warnings and
    blockers found, and facts read once (owned buckets, the default VPC) or learnt from earlier steps
    (the functions that exist, those of another deployment)."""

    def __init__(self, clients: Clients, tags: dict[str, str]) -> None:
        self.clients = clients
        self.tags = tags
        self.warnings: list[str] = []
        self.blockers: list[str] = []
        self.existing_functions: dict[str, dict[str, Any]] = {}
        self.foreign_functions: set[str] = set()  # destroy: functions of another deployment, left alone
        self._owned: set[str] | None = None
        self._regions: dict[str, str] = {}
        self._vpc: tuple[str | None] | None = None

    @property
    def tag_list(self) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in self.tags.items()]

    @property
    def owned_buckets(self) -> set[str]:
        if self._owned is None:
            self._owned = owned_buckets(self.clients.s3)
        return self._owned

    def bucket_region(self, name: str) -> str:
        """The region of an owned bucket, read once."""
        if name not in self._regions:
            self._regions[name] = bucket_region(self.clients.s3, name)
        return self._regions[name]

    def default_vpc(self) -> str | None:
        """The region's default VPC (a blocker when there is none), read once."""
        if self._vpc is None:
            vpcs = self.clients.ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}]).get("Vpcs") or []
            self._vpc = (vpcs[0]["VpcId"] if vpcs else None,)
            if not vpcs:
                region = self.clients.ec2.meta.region_name
                self.blockers.append(f"no default VPC in {region}: create one (`aws ec2 create-default-vpc`) or use another --region")
        return self._vpc[0]
