"""Service configuration, read once at start-up from `REGISTRY_*` environment variables or a `.env` file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class SettingsError(Exception):
    """A setting is missing or wrong; the message names each offending variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REGISTRY_", env_file=".env", extra="ignore")

    storage: Literal["filesystem", "s3"] = "filesystem"
    data_dir: Path = Path("./data")
    staging_dir: Path = Path("./staging")

    s3_endpoint: str = "https://gateway.storjshare.io"
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "global"
    s3_part_size: int = Field(default=64 * MiB, ge=5 * MiB, le=5 * 1024 * MiB)
    s3_max_concurrency: int = Field(default=4, ge=1, le=64)
    s3_max_attempts: int = Field(default=8, ge=1, le=50)

    public_url: str = ""
    max_manifest_bytes: int = Field(default=4 * MiB, ge=1024)
    delete_enabled: bool = False
    upload_max_age_seconds: float = Field(default=24 * 3600, gt=0)

    # Operations: log format, and the graceful stop on SIGTERM (see app/lifecycle.py).
    log_format: Literal["text", "json"] = "text"
    shutdown_drain_seconds: float = Field(default=0, ge=0, le=600)
    shutdown_grace_seconds: float = Field(default=30, ge=0, le=3600)
    share_blobs: bool = True

    @field_validator("s3_prefix")
    @classmethod
    def _normalise_prefix(cls, value: str) -> str:
        value = value.strip("/")
        if any(part in ("", ".", "..") for part in value.split("/")) and value:
            raise ValueError("must be a plain key prefix without empty, '.' or '..' segments")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("s3_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _s3_needs_credentials(self) -> Settings:
        if self.storage == "s3":
            missing = [
                f"REGISTRY_{name.upper()}"
                for name in ("s3_bucket", "s3_access_key", "s3_secret_key")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"REGISTRY_STORAGE=s3 needs {', '.join(missing)}")
        return self


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one line per wrong variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            name = f"REGISTRY_{field.upper()}" if field else "settings"
            lines.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
