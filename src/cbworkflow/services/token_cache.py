"""Recently seen API tokens, so a request does not look its token up in the store every time.

A token looked up is trusted for at most `ttl` seconds (1 by default): a token revoked in another process stops
working within that second, one revoked through this process at once. Only tokens the store knew are kept, so a
caller trying random secrets fills nothing; the cache holds at most `size` tokens and forgets all of them when full
(a deployment has few tokens; a full cache means something unusual, and forgetting is always safe).
"""

from __future__ import annotations

import time

from ..models.access import Principal

TTL_SECONDS = 1.0
MAX_TOKENS = 10_000


class TokenCache:
    def __init__(self, ttl: float = TTL_SECONDS, size: int = MAX_TOKENS) -> None:
        self.ttl = ttl
        self.size = size
        self._seen: dict[str, tuple[float, Principal]] = {}  # secret hash -> (monotonic expiry, principal)

    def get(self, secret_hash: str) -> Principal | None:
        found = self._seen.get(secret_hash)
        if found is None:
            return None
        expires, principal = found
        if time.monotonic() >= expires:
            self._seen.pop(secret_hash, None)
            return None
        return principal

    def put(self, secret_hash: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._seen) >= self.size:
            self._seen.clear()
        self._seen[secret_hash] = (time.monotonic() + self.ttl, principal)

    def forget(self, token_id: str) -> None:
        """Drop a token revoked here, so this process refuses it from the next request on."""
        for key in [key for key, (_, principal) in self._seen.items() if principal.token_id == token_id]:
            self._seen.pop(key, None)
