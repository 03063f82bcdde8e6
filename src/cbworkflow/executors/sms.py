"""The `sms` executor: a text through a Twilio-compatible HTTP API.

`POST {CBW_SMS_BASE_URL}/2010-04-01/Accounts/{CBW_SMS_ACCOUNT_SID}/Messages.json` with the form fields `To` (the
contact's `phone_e164`: a contact without one is refused before any call), `From` (`CBW_SMS_FROM`) and `Body`
(`action_config.message`, rendered), and HTTP basic auth `sid:token`. Any 2xx is `sent`. The call goes through
`outbound.http.send_with_retries`, so it is retried like a webhook (connection errors, timeouts, 429 honouring
Retry-After, 5xx) and carries the idempotency key in `Idempotency-Key` (a provider that honours it drops the
duplicate of a retried text; Twilio itself does not, so a retry after a timeout on a message Twilio did accept can
send the text twice, the usual at-least-once trade).

The base URL is operator configuration, not template input, so it is not put through the SSRF guard (see the email
executor for why): a gateway on the private network must work without CBW_OUTBOUND_ALLOW_PRIVATE.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from cbworkflow.executors.base import ConfigError, failed, http_data, last_error, succeeded
from cbworkflow.executors.webhook import DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_CAP, TOTAL_BUDGET_S, number
from cbworkflow.outbound.guard import Resolver
from cbworkflow.outbound.http import send_with_retries
from cbworkflow.runtime.work import ActionRequest, ActionResult

Sleep = Callable[[float], Awaitable[None]]
TWILIO_BASE_URL = "https://api.twilio.com"
TIMEOUT_S = 15.0
MAX_MESSAGE = 1600  # Twilio's limit for one message (it splits it into segments)


@dataclass(frozen=True)
class SmsConfig:
    account_sid: str
    auth_token: str
    sender: str
    base_url: str = TWILIO_BASE_URL

    def __repr__(self) -> str:  # never print the token
        return f"SmsConfig(account_sid={self.account_sid!r}, sender={self.sender!r}, base_url={self.base_url!r})"

    @property
    def messages_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/2010-04-01/Accounts/{quote(self.account_sid, safe='')}/Messages.json"


E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # ITU-T E.164: a plus, a country code, at most 15 digits in all


def _phone(contact: dict[str, Any]) -> str:
    """The contact's number in E.164 (`phone_e164`, set when the phone parsed). A phone that did not parse is kept
    on the contact as given, but never texted: the provider would get "call me maybe" as the `To`."""
    e164 = contact.get("phone_e164")
    if isinstance(e164, str) and E164.fullmatch(e164):
        return e164
    phone = contact.get("phone")
    if e164 is None and not (isinstance(phone, str) and phone.strip()):
        raise ConfigError("the contact has no phone number")
    raise ConfigError(
        "the contact's phone could not be read as a phone number (no E.164 form such as +15552013344), so no text "
        "was sent; correct the contact's phone, with its country code"
    )


def _provider_error(body: Any) -> dict[str, Any]:
    """Twilio's error object, the parts that are safe and useful in a timeline: `code` and `message`."""
    if not isinstance(body, dict):
        return {}
    shown = {k: body[k] for k in ("code", "message") if isinstance(body.get(k), str | int)}
    return {"provider_error": shown} if shown else {}


class SmsExecutor:
    """`action_config`: `message` (required), `max_attempts` (5). Outcome `sent` / `failed`."""

    kind = "sms"

    def __init__(
        self,
        config: SmsConfig,
        *,
        allow_private: bool = True,
        sleep: Sleep = asyncio.sleep,
        resolver: Resolver | None = None,
    ) -> None:
        self.config = config
        self.allow_private = allow_private
        self.sleep = sleep
        self.resolver = resolver

    async def run(self, request: ActionRequest) -> ActionResult:
        try:
            to = _phone(request.contact)
            message = request.config.get("message")
            if not isinstance(message, str) or not message.strip():
                raise ConfigError("message is required" if message is None else "message must be non-empty text")
            if len(message) > MAX_MESSAGE:
                raise ConfigError(f"message is longer than {MAX_MESSAGE} characters")
            max_attempts = int(
                number(request.config.get("max_attempts"), "max_attempts", DEFAULT_MAX_ATTEMPTS, 1, MAX_ATTEMPTS_CAP)
            )
        except ConfigError as exc:
            return failed(f"sms: {exc}", request.outcomes, {"attempts": []})
        credentials = base64.b64encode(f"{self.config.account_sid}:{self.config.auth_token}".encode()).decode()
        response, attempts = await send_with_retries(
            "POST",
            self.config.messages_url,
            headers={"Authorization": f"Basic {credentials}", "Content-Type": "application/x-www-form-urlencoded"},
            content=urlencode({"To": to, "From": self.config.sender, "Body": message}).encode(),
            timeout_s=TIMEOUT_S,
            max_attempts=max_attempts,
            max_total_s=TOTAL_BUDGET_S,
            allow_private=self.allow_private,
            idempotency_key=request.idempotency_key,
            sleep=self.sleep,
            resolver=self.resolver,
        )
        data = http_data(response, attempts)
        if response is not None and response.is_success:
            body = response.json if isinstance(response.json, dict) else {}
            for key in ("sid", "status"):
                if isinstance(body.get(key), str):
                    data[f"message_{key}"] = body[key]
            return succeeded("sent", request.outcomes, data)
        if response is not None:
            data |= _provider_error(response.json)
        return failed(f"sms not sent: {last_error(response, attempts)}", request.outcomes, data)
