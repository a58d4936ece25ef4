"""Settings and resource names.

Precedence: command-line flag > environment (``FACEREC_*``) > ``facerec.toml`` (current directory, then
the user config directory) > default. Resource names follow the course convention: buckets
``<prefix>-input``, ``<prefix>-stage-1``, ``<prefix>-output``; functions ``video-splitting`` and
``face-recognition``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from .errors import UserError

DEFAULT_PREFIX = "facerec"
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Names:
    """Every AWS resource name the pipeline uses, derived from one prefix."""

    prefix: str
    splitting_function: str = "video-splitting"
    recognition_function: str = "face-recognition"

    @property
    def input_bucket(self) -> str:
        return f"{self.prefix}-input"

    @property
    def stage1_bucket(self) -> str:
        return f"{self.prefix}-stage-1"

    @property
    def output_bucket(self) -> str:
        return f"{self.prefix}-output"

    @property
    def buckets(self) -> tuple[str, str, str]:
        return (self.input_bucket, self.stage1_bucket, self.output_bucket)

    @property
    def ecr_repository(self) -> str:
        return f"{self.prefix}-facerec"

    @property
    def failure_queue(self) -> str:
        return f"{self.prefix}-failures"

    @property
    def gallery_key(self) -> str:
        # In the output bucket, beside the results, under a prefix that result listings skip.
        return ".facerec/gallery.pt"

    def role(self, function: str) -> str:
        return f"{self.prefix}-{function}-role"

    def log_group(self, function: str) -> str:
        return f"/aws/lambda/{function}"


@dataclass(frozen=True)
class Settings:
    prefix: str = DEFAULT_PREFIX
    region: str = DEFAULT_REGION
    endpoint_url: str | None = None
    profile: str | None = None
    # Registry that images are pushed to; None means the account's ECR registry.
    registry: str | None = None
    stage1_expiry_days: int = 1
    names: Names = field(init=False)

    def __post_init__(self) -> None:
        if not self.prefix or not _valid_prefix(self.prefix):
            raise UserError(
                f"invalid prefix {self.prefix!r}: use 3-40 lowercase letters, digits and hyphens "
                "(it becomes part of S3 bucket names)"
            )
        object.__setattr__(self, "names", Names(self.prefix))


def _valid_prefix(prefix: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    return 3 <= len(prefix) <= 40 and set(prefix) <= allowed and prefix[0] != "-" and prefix[-1] != "-"


def config_files() -> list[Path]:
    return [Path.cwd() / "facerec.toml", Path(platformdirs.user_config_dir("facerec")) / "facerec.toml"]


def _from_file() -> dict[str, Any]:
    for path in config_files():
        if path.is_file():
            try:
                with path.open("rb") as fh:
                    return tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise UserError(f"{path} is not valid TOML: {exc}") from exc
    return {}


def _profile_region(profile: str | None) -> str | None:
    try:
        import boto3

        return boto3.Session(profile_name=profile).region_name
    except Exception:  # a missing profile is reported when clients are made
        return None


def load_settings(**flags: Any) -> Settings:
    """Build settings from flags (None = not given), environment, config file and defaults."""
    names = [f.name for f in fields(Settings) if f.init]
    file_values = _from_file()
    values: dict[str, Any] = {}
    for name in names:
        if flags.get(name) is not None:
            values[name] = flags[name]
        elif os.environ.get(f"FACEREC_{name.upper()}"):
            values[name] = os.environ[f"FACEREC_{name.upper()}"]
        elif name == "endpoint_url" and os.environ.get("AWS_ENDPOINT_URL"):
            values[name] = os.environ["AWS_ENDPOINT_URL"]
        elif name == "region" and os.environ.get("AWS_DEFAULT_REGION") and name not in file_values:
            values[name] = os.environ["AWS_DEFAULT_REGION"]
        elif name in file_values:
            values[name] = file_values[name]
    if "region" not in values:
        # What `aws configure` set for the profile, before our default.
        values["region"] = _profile_region(values.get("profile")) or DEFAULT_REGION
    if "stage1_expiry_days" in values:
        values["stage1_expiry_days"] = int(values["stage1_expiry_days"])
    return Settings(**values)


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})
