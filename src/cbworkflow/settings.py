"""Settings from environment variables (and a `.env` file), typed and checked once at start (running.md § Settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import phonenumbers
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """A setting has a bad value; the message names the variable and what it accepts."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CBW_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")
    database_url: str | None = None
    admin_token: str | None = Field(default=None, min_length=16)
    worker_poll_interval: float = Field(default=1.0, gt=0, le=3600)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    rate_limit: float = Field(default=100.0, ge=0)
    default_phone_region: str = "US"
    outbound_allow_private: bool = False
    executors: str = ""
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "NORMAL"

    anthropic_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "CBW_ANTHROPIC_API_KEY")
    )
    ai_model: str = "claude-sonnet-4-5"
    ai_base_url: str | None = None
    ai_timeout_s: float = Field(default=30.0, gt=0)

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_from: str | None = None

    sms_base_url: str | None = None
    sms_account_sid: str | None = None
    sms_auth_token: str | None = None
    sms_from: str | None = None

    @field_validator("default_phone_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("a two-letter region code such as US, GB or DE")
        return value.upper()

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:///", "postgresql://", "postgresql+", "json:///")):
            raise ValueError("sqlite:///path, postgresql://user@host/db or json:///path")
        return value

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'cbworkflow.db'}"


def load_settings(**overrides: object) -> Settings:
    """Read the settings; a bad value raises SettingsError with one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        variable = "ANTHROPIC_API_KEY" if field == "anthropic_api_key" else f"CBW_{field.upper()}"
        raise SettingsError(f"{variable}: {first['msg']} (got {first.get('input')!r})") from None
