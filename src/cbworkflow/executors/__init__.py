"""Executors: code that performs an action node's action and returns its outcome (workflows.md § Actions).

Which actions run automatically is deployment configuration, `CBW_EXECUTORS`: a comma-separated list of
`action=kind` (`sms=sms,email=email,mail=webhook`; a bare `sms` means `sms=sms`), where the kind is one of
`webhook`, `email`, `sms`. An action not listed is a human task. `build_executors` reads it at start and refuses
(ValueError naming the variable) an unknown kind, a malformed entry, an action listed twice, or an executor whose
settings are missing, so a deployment finds out at start rather than at the first text.
"""

from __future__ import annotations

import re
from email.utils import parseaddr

from cbworkflow.executors.base import ConfigError, Executor
from cbworkflow.executors.email import EmailExecutor, SmtpConfig
from cbworkflow.executors.sms import TWILIO_BASE_URL, SmsConfig, SmsExecutor
from cbworkflow.executors.webhook import WebhookExecutor, call_webhook_node
from cbworkflow.runtime.work import ActionRequest, ActionResult, WebhookCall
from cbworkflow.settings import Settings

KINDS = ("email", "sms", "webhook")
_ACTION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

__all__ = [
    "KINDS",
    "ActionRequest",
    "ActionResult",
    "ConfigError",
    "EmailExecutor",
    "Executor",
    "SmsExecutor",
    "WebhookCall",
    "WebhookExecutor",
    "build_executors",
    "call_webhook_node",
    "parse_executors",
]


def parse_executors(value: str) -> dict[str, str]:
    """`CBW_EXECUTORS` as {action: kind}. Raises ValueError naming the variable."""
    mapping: dict[str, str] = {}
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            continue
        action, sep, kind = (part.strip() for part in entry.partition("="))
        if not sep:
            kind = action
        if not action or not _ACTION.fullmatch(action):
            raise ValueError(f"CBW_EXECUTORS: {entry!r} is not action=kind (e.g. sms=sms,mail=webhook)")
        if kind not in KINDS:
            raise ValueError(
                f"CBW_EXECUTORS: unknown executor {kind!r} for action {action!r} (known: {', '.join(KINDS)})"
            )
        if action in mapping:
            raise ValueError(f"CBW_EXECUTORS: action {action!r} is listed twice")
        mapping[action] = kind
    return mapping


def _needs(settings: Settings, kind: str, *fields: str) -> None:
    missing = [f"CBW_{name.upper()}" for name in fields if not getattr(settings, name)]
    if missing:
        raise ValueError(f"CBW_EXECUTORS: the {kind} executor needs {' and '.join(missing)}")


def build_executors(settings: Settings) -> dict[str, Executor]:
    """{action: executor} for the actions `CBW_EXECUTORS` makes automatic; one executor per kind, shared."""
    mapping = parse_executors(settings.executors)
    made: dict[str, Executor] = {}
    for kind in sorted(set(mapping.values())):
        if kind == "webhook":
            made[kind] = WebhookExecutor(allow_private=settings.outbound_allow_private)
        elif kind == "email":
            _needs(settings, kind, "smtp_host", "smtp_from")
            if "@" not in parseaddr(settings.smtp_from or "")[1]:
                raise ValueError("CBW_SMTP_FROM: an email address, e.g. Campaign <team@example.org>")
            if settings.smtp_password and not settings.smtp_user:
                raise ValueError("CBW_EXECUTORS: CBW_SMTP_PASSWORD is set without CBW_SMTP_USER")
            made[kind] = EmailExecutor(
                SmtpConfig(
                    host=settings.smtp_host or "",
                    port=settings.smtp_port,
                    user=settings.smtp_user,
                    password=settings.smtp_password,
                    starttls=settings.smtp_starttls,
                    sender=settings.smtp_from or "",
                )
            )
        else:
            _needs(settings, kind, "sms_account_sid", "sms_auth_token", "sms_from")
            base_url = settings.sms_base_url or TWILIO_BASE_URL
            if not base_url.startswith(("http://", "https://")):
                raise ValueError("CBW_SMS_BASE_URL: an http:// or https:// URL")
            made[kind] = SmsExecutor(
                SmsConfig(
                    account_sid=settings.sms_account_sid or "",
                    auth_token=settings.sms_auth_token or "",
                    sender=settings.sms_from or "",
                    base_url=base_url,
                )
            )
    return {action: made[kind] for action, kind in mapping.items()}
