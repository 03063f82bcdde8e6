"""The `email` executor: one plain-text message over SMTP to the contact's email address.

`smtplib` runs in a thread (`asyncio.to_thread`): it is the standard, well-known client, a message is one short
exchange, and a thread per message in flight is cheap next to the network time. Server, port, credentials,
STARTTLS and sender come from the settings (`CBW_SMTP_*`); the subject and body from `action_config` (rendered).

Failures: a reply code 4xx, a dropped or refused connection or a timeout is transient and retried with backoff
(bounded: `max_attempts`, default 3); a 5xx (bad recipient, authentication refused, message rejected), a contact
without a usable address or a bad config is permanent and answered at once with `failed`.

The idempotency key goes into `X-Idempotency-Key` and, hashed, into the `Message-ID`, so a message retried after
a timeout that the server did in fact accept carries the same Message-ID and can be recognised downstream.

The SMTP host is NOT put through the SSRF guard: it comes from the operator's settings, not from a template, and
the usual setup is a relay on localhost or the private network; guarding it would push operators to set
CBW_OUTBOUND_ALLOW_PRIVATE, which would open every tenant's webhooks to the internal network.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import smtplib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any

from cbworkflow import retry
from cbworkflow.executors.base import ConfigError, failed, succeeded
from cbworkflow.executors.webhook import TOTAL_BUDGET_S, number
from cbworkflow.runtime.work import ActionRequest, ActionResult

Sleep = Callable[[float], Awaitable[None]]
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS_CAP = 10
SMTP_TIMEOUT_S = 30.0
MAX_SUBJECT = 998  # RFC 5322 line length


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 25
    user: str | None = None
    password: str | None = None
    starttls: bool = False
    sender: str = ""
    timeout_s: float = SMTP_TIMEOUT_S

    def __repr__(self) -> str:  # never print the password
        return f"SmtpConfig(host={self.host!r}, port={self.port}, user={self.user!r}, starttls={self.starttls})"


class _Transient(Exception):
    """An SMTP failure worth another attempt."""


def _address(contact: dict[str, Any]) -> str:
    email = contact.get("email")
    if not isinstance(email, str) or not email.strip():
        raise ConfigError("the contact has no email address")
    email = email.strip()
    _, parsed = parseaddr(email)
    if parsed != email or "@" not in email or any(c in email for c in "\r\n\0 ,;<>"):
        raise ConfigError("the contact's email address is not usable")
    return email


def _one_line(value: Any, name: str, *, required: bool) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise ConfigError(f"{name} is required" if value is None else f"{name} must be text")
    return " ".join(value.split())[:MAX_SUBJECT]  # no line breaks in a header (no header injection)


def build_message(config: SmtpConfig, to: str, subject: str, body: str, idempotency_key: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    domain = parseaddr(config.sender)[1].rpartition("@")[2] or "cbworkflow.invalid"
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    message["Message-ID"] = f"<{digest}.cbworkflow@{domain}>"
    message["X-Idempotency-Key"] = " ".join(idempotency_key.split())
    message.set_content(body)
    return message


def _deliver(config: SmtpConfig, message: EmailMessage) -> None:
    """One SMTP session (in a thread). Raises _Transient for what is worth retrying; other exceptions are final."""
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout_s) as smtp:
            if config.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if config.user:
                smtp.login(config.user, config.password or "")
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        if codes and all(400 <= code < 500 for code in codes):
            raise _Transient(f"recipient refused for now ({codes[0]})") from None
        raise smtplib.SMTPException(f"recipient refused ({', '.join(map(str, codes))})") from None
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        if 400 <= exc.smtp_code < 500:
            raise _Transient(f"SMTP {exc.smtp_code} {text}".strip()) from None
        raise smtplib.SMTPException(f"SMTP {exc.smtp_code} {text}".strip()) from None
    except smtplib.SMTPServerDisconnected as exc:
        raise _Transient(f"connection closed: {exc}") from None
    except smtplib.SMTPException:  # not supported (STARTTLS, AUTH, SMTPUTF8...): final
        raise
    except ssl.SSLError as exc:
        raise smtplib.SMTPException(f"TLS: {exc}") from None
    except OSError as exc:  # refused, unreachable, name not resolved: the server may be back in a moment
        raise _Transient(f"{type(exc).__name__}: {exc}") from None


class EmailExecutor:
    """`action_config`: `subject`, `body` (required), `max_attempts` (3). Outcome `sent` / `failed`."""

    kind = "email"

    def __init__(
        self,
        config: SmtpConfig,
        *,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.config = config
        self.sleep = sleep
        self.jitter = jitter
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    async def run(self, request: ActionRequest) -> ActionResult:
        try:
            to = _address(request.contact)
            subject = _one_line(request.config.get("subject"), "subject", required=True)
            body = request.config.get("body")
            if not isinstance(body, str):
                raise ConfigError("body is required" if body is None else "body must be text")
            max_attempts = int(
                number(request.config.get("max_attempts"), "max_attempts", DEFAULT_MAX_ATTEMPTS, 1, MAX_ATTEMPTS_CAP)
            )
            message = build_message(self.config, to, subject, body, request.idempotency_key)
        except (ConfigError, ValueError, TypeError) as exc:
            return failed(f"email: {exc}", request.outcomes, {"attempts": []})
        attempts: list[dict[str, Any]] = []
        data: dict[str, Any] = {"server": f"{self.config.host}:{self.config.port}", "attempts": attempts}
        policy = retry.RetryPolicy(
            max_attempts=max_attempts,
            base_s=self.backoff_base_s,
            cap_s=self.backoff_max_s,
            deadline_s=TOTAL_BUDGET_S,
            min_attempt_s=self.config.timeout_s,  # a retry only when a whole SMTP session still fits
            honour_retry_after=False,  # SMTP has no such thing
        )

        async def once(_left: float | None) -> retry.Tried[Exception | None]:  # SMTP keeps its own timeout
            began = time.monotonic()
            try:
                await asyncio.to_thread(_deliver, self.config, message)
            except (_Transient, smtplib.SMTPException) as exc:  # an SMTPException is permanent: rejected, TLS, auth
                attempts.append({"error": str(exc), "elapsed_ms": round((time.monotonic() - began) * 1000, 1)})
                return retry.Tried(exc, retry.Next.AFTER_WAIT if isinstance(exc, _Transient) else retry.Next.STOP)
            attempts.append({"error": None, "elapsed_ms": round((time.monotonic() - began) * 1000, 1)})
            return retry.Tried(None)

        done = await retry.run(once, policy, sleep=self.sleep, jitter=self.jitter)
        if done.last is None:
            data["message_id"] = message["Message-ID"]
            return succeeded("sent", request.outcomes, data)
        if isinstance(done.last, smtplib.SMTPException):
            return failed(f"email not accepted: {done.last}", request.outcomes, data)
        return failed(f"email not sent after {len(attempts)} attempts: {done.last}", request.outcomes, data)
