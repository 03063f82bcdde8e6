"""Tokens are looked up in the store at most once a second per process, and a revoked token stops working.

Revoked through this process: refused on the next request. Revoked by another process (here: a second set of
services on the same store, as a CLI or another API process would be): refused once the cached second is over.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cbworkflow.errors import Unauthorized
from cbworkflow.models.access import Principal, Role, TokenCreate
from cbworkflow.services.token_cache import TokenCache
from cbworkflow.settings import Settings
from cbworkflow.wiring import bootstrap, build_services


def test_a_token_revoked_anywhere_is_refused_within_the_cache_time(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = Settings(data_dir=tmp_path, admin_token="token-cache-test-0123456789")
        api = await build_services(settings)
        await bootstrap(api, load_example=False)
        other = await build_services(settings)  # another process on the same store
        try:
            api.access.tokens = TokenCache(ttl=0.3)
            made = await api.access.create_token(None, TokenCreate(role=Role.STAFF))
            first = await api.access.authenticate(made.token)
            assert (first.role, first.token_id) == (Role.STAFF, made.id)
            lookups = 0
            read = api.store.system_read

            async def counted(fn):  # type: ignore[no-untyped-def]
                nonlocal lookups
                lookups += 1
                return await read(fn)

            api.store.system_read = counted  # type: ignore[method-assign]
            for _ in range(5):
                assert await api.access.authenticate(made.token) == first
            assert lookups == 0  # within the cached moment: no store round trip

            await other.access.revoke_token(None, first.tenant, made.id)
            assert await api.access.authenticate(made.token) == first  # still trusted for the cached moment
            await asyncio.sleep(0.35)
            with pytest.raises(Unauthorized):
                await api.access.authenticate(made.token)

            second = await api.access.create_token(None, TokenCreate(role=Role.VOLUNTEER))
            await api.access.authenticate(second.token)
            await api.access.revoke_token(None, first.tenant, second.id)  # through this process: at once
            with pytest.raises(Unauthorized):
                await api.access.authenticate(second.token)
        finally:
            await other.store.close()
            await api.store.close()

    asyncio.run(scenario())


def test_unknown_secrets_are_not_kept_and_a_full_cache_starts_over() -> None:
    cache = TokenCache(ttl=60, size=2)
    assert cache.get("nothing") is None

    one, two, three = (Principal(token_id=f"t{n}", tenant="default", role=Role.STAFF) for n in range(3))
    cache.put("a", one)
    cache.put("b", two)
    assert (cache.get("a"), cache.get("b")) == (one, two)
    cache.put("c", three)  # full: forget everything, keep the newest
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, None, three)
    off = TokenCache(ttl=0)  # off: nothing kept
    off.put("a", one)
    assert off.get("a") is None
