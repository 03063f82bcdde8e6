"""Settings from environment variables (and a `.env` file), typed and checked once at start (running.md § Settings)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import phonenumbers
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .models.consent import Channel, parse_action_channels


class SettingsError(Exception):
    """A setting has a bad value; the message names the variable and what it accepts."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CBW_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")
    database_url: str | None = None
    admin_token: str | None = Field(default=None, min_length=16)
    worker_poll_interval: float = Field(default=1.0, gt=0, le=3600)
    stream_heartbeat_s: float = Field(default=15.0, gt=0, le=300)  # a comment line this often keeps proxies open
    stream_send_timeout_s: float = Field(default=30.0, gt=0, le=600)  # a client that takes no data this long is cut
    outbox_poll_interval: float = Field(default=0.5, gt=0, le=60)  # how often a process looks for others' events
    worker_lease_s: float = Field(default=300.0, ge=1, le=86_400)  # how long a worker holds work it claimed
    worker_concurrency: int = Field(default=8, ge=1, le=256)  # pieces of work one worker runs at once
    job_lease_s: float = Field(default=60.0, ge=1, le=86_400)  # a job of a worker that died is taken over after this
    job_batch_size: int = Field(default=500, ge=1, le=10_000)  # items one transaction of a job handles
    bulk_inline_limit: int = Field(default=5_000, ge=0, le=1_000_000)  # larger bulk work becomes a job (202)
    # Webhook deliveries (docs/webhooks.md): requests in flight per process, and per subscription in a process (a
    # slow receiver holds only its own share); each attempt's timeout; how long a sender holds a delivery it claimed
    # (longer than the timeout: a delivery whose sender died is sent again after it).
    webhook_concurrency: int = Field(default=32, ge=1, le=1024)
    webhook_subscription_concurrency: int = Field(default=4, ge=1, le=256)
    webhook_timeout_s: float = Field(default=15.0, gt=0, le=120)
    webhook_lease_s: float = Field(default=60.0, ge=1, le=3600)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    import_max_bytes: int = Field(default=268_435_456, ge=1024)  # POST /api/contacts/import's own body limit
    import_inline_limit: int = Field(default=5_000, ge=0, le=1_000_000)  # a larger file becomes a job (202)
    rate_limit: float = Field(default=100.0, ge=0)
    public_url: str = "http://localhost:8000"  # where people reach the service (links in invitations)
    session_hours: float = Field(default=12.0, gt=0, le=24 * 90)  # a web session ends this long after its last use
    default_phone_region: str = "US"
    outbound_allow_private: bool = False
    executors: str = ""
    action_channels: str = ""  # more action=channel pairs for consent and contact hours (robocall=phone,flyer=mail)
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "NORMAL"

    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # When set, GET /metrics asks for `Authorization: Bearer <this>`; unset, it is open like /healthz.
    metrics_token: str | None = Field(default=None, min_length=16)

    anthropic_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "CBW_ANTHROPIC_API_KEY")
    )
    ai_model: str = "claude-sonnet-5-5"  # a current model (the SDK warns about deprecated ones)
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

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
            raise ValueError("an http:// or https:// address such as https://outreach.example.org")
        return value.rstrip("/")

    @field_validator("default_phone_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("a two-letter region code such as US, GB or DE")
        return value.upper()

    @field_validator("action_channels")
    @classmethod
    def _channel_pairs(cls, value: str) -> str:
        parse_action_channels(value)  # a ValueError names the pair
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:///", "postgresql://", "postgresql+", "json:///")):
            raise ValueError("sqlite:///path, postgresql://user@host/db or json:///path")
        return value

    @property
    def channels(self) -> dict[str, Channel]:
        """Which channel each action uses: the built-in map with `CBW_ACTION_CHANNELS` added."""
        return parse_action_channels(self.action_channels)

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'cbworkflow.db'}"


SECRETS = frozenset({"admin_token", "metrics_token", "anthropic_api_key", "smtp_password", "sms_auth_token"})


def load_settings(**overrides: object) -> Settings:
    """Read the settings; a bad value raises SettingsError with one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        variable = "ANTHROPIC_API_KEY" if field == "anthropic_api_key" else f"CBW_{field.upper()}"
        got = first.get("input")
        shown = f"a value of {len(got)} characters" if field in SECRETS and isinstance(got, str) else repr(got)
        raise SettingsError(f"{variable}: {first['msg']} (got {shown})") from None
