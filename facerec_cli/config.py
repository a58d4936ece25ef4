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

from facerec_cli.errors import UserError

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
        return ".facerec/gallery.safetensors"

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
    # Uploads (input bucket) and results (output bucket) expire after this many days; 0 removes the rule;
    # None (not set anywhere) leaves the buckets as they are (a new deployment keeps everything).
    retain_days: int | None = None
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


def _from_file() -> tuple[dict[str, Any], Path | None]:
    """The first facerec.toml found, and its path."""
    for path in config_files():
        if path.is_file():
            try:
                with path.open("rb") as fh:
                    return tomllib.load(fh), path
            except tomllib.TOMLDecodeError as exc:
                raise UserError(f"{path} is not valid TOML: {exc}") from exc
    return {}, None


def _profile_region(profile: str | None) -> str | None:
    try:
        import boto3

        return boto3.Session(profile_name=profile).region_name
    except Exception:  # a missing profile is reported when clients are made
        return None


def _positive_int(value: Any, name: str, source: str) -> int:
    """``value`` as an int >= 1, else a UserError naming the setting and where it came from."""
    # bool is an int to Python, and int() would truncate a float from TOML: refuse both.
    if isinstance(value, bool) or isinstance(value, float):
        number = None
    elif isinstance(value, int):
        number = value
    else:
        try:
            number = int(str(value).strip())
        except ValueError:
            number = None
    if number is None or number < 1:
        raise UserError(f"{name} from {source} must be a whole number of at least 1, not {value!r}")
    return number


# Integer settings, checked when read (a bad value is one red line naming its source, not a traceback).
_INT_SETTINGS = ("stage1_expiry_days",)
_COUNT_SETTINGS = ("retain_days",)  # 0 allowed (it means: none)
NO_REGION = "no AWS region: pass --region, set AWS_DEFAULT_REGION, or run `aws configure`"


def load_settings(**flags: Any) -> Settings:
    """Build settings from flags (None = not given), environment, config file and defaults.

    Without a region from any of flag, FACEREC_REGION, AWS_REGION/AWS_DEFAULT_REGION, facerec.toml or
    the profile, raises UserError, unless an endpoint URL is set (a local cloud such as moto, where
    us-east-1 is as good as any): guessing a region on real AWS would deploy to the wrong one.
    """
    names = [f.name for f in fields(Settings) if f.init]
    file_values, file_path = _from_file()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in names:
        env_name = f"FACEREC_{name.upper()}"
        if flags.get(name) is not None:
            values[name], sources[name] = flags[name], f"--{name.replace('_', '-')}"
        elif os.environ.get(env_name):
            values[name], sources[name] = os.environ[env_name], env_name
        elif name == "endpoint_url" and os.environ.get("AWS_ENDPOINT_URL"):
            values[name], sources[name] = os.environ["AWS_ENDPOINT_URL"], "AWS_ENDPOINT_URL"
        elif name == "region" and name not in file_values and (aws_var := _aws_region_variable()):
            values[name], sources[name] = os.environ[aws_var], aws_var
        elif name in file_values:
            values[name], sources[name] = file_values[name], str(file_path)
    if "region" not in values:
        # What `aws configure` set for the profile; a local endpoint needs no real region.
        region = _profile_region(values.get("profile")) or (DEFAULT_REGION if values.get("endpoint_url") else None)
        if region is None:
            raise UserError(NO_REGION)
        values["region"] = region
    for name in _INT_SETTINGS:
        if name in values:
            values[name] = _positive_int(values[name], name, sources[name])
    for name in _COUNT_SETTINGS:
        if name in values:
            value = values[name]
            if isinstance(value, bool) or str(value).strip() != "0":
                try:
                    value = _positive_int(value, name, sources[name])
                except UserError:
                    raise UserError(f"{name} from {sources[name]} must be a whole number of days, 0 for none, not {values[name]!r}") from None
            values[name] = int(value)
    return Settings(**values)


def _aws_region_variable() -> str | None:
    """The AWS SDKs' region variable that is set: AWS_REGION first (as the AWS CLI v2), then AWS_DEFAULT_REGION."""
    return next((name for name in ("AWS_REGION", "AWS_DEFAULT_REGION") if os.environ.get(name)), None)


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})
