"""Tenants, API tokens, authentication and the first-start bootstrap.

Token secrets are 256-bit random strings, so a single SHA-256 is the right hash: it cannot be brute-forced
and lookups stay O(1). Only the hash is stored; the secret is shown once, when the token is made.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..clock import Clock
from ..errors import Conflict, Forbidden, NotFound, Unauthorized
from ..ids import new_id
from ..models.access import (
    Principal,
    Role,
    Tenant,
    TenantCreate,
    TenantCreated,
    Token,
    TokenCreate,
    TokenCreated,
)
from ..store.base import Page, PageRequest, Store, SystemTx, TokenRecord, Tx
from .token_cache import TokenCache

# The tenant the first start creates (api.md § Auth): a real tenant, which the CLI acts on unless told otherwise.
DEFAULT_TENANT = "default"
TOKEN_PREFIX = "cbw_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _free_token_file(data_dir: Path) -> Path:
    """`admin-token`, or `admin-token.2`, `.3`… when a token of another store already lives in this data folder:
    that token was shown once, so it must never be overwritten."""
    path = data_dir / "admin-token"
    n = 2
    while path.exists():
        path = data_dir / f"admin-token.{n}"
        n += 1
    return path


def write_private(path: Path, text: str) -> Path:
    """Write a secret readable by the owner only: a new temp file (0600, no symlink followed), then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


@dataclass
class Bootstrap:
    """What the first start created: the token is set only when it was generated here (to print once)."""

    created_tenant: bool
    generated_token: str | None
    token_file: Path | None


class AccessService:
    def __init__(self, store: Store, clock: Clock, tokens: TokenCache | None = None) -> None:
        self.store = store
        self.clock = clock
        self.tokens = tokens if tokens is not None else TokenCache()

    # ---------------------------------------------------------------- authentication
    async def authenticate(self, secret: str | None) -> Principal:
        if not secret:
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        secret_hash = hash_secret(secret)
        known = self.tokens.get(secret_hash)
        if known is not None:
            return known
        found = await self.store.system_read(lambda stx: stx.find_token_by_hash(secret_hash))
        if found is None:
            raise Unauthorized("unknown or revoked token")
        token = found.token
        principal = Principal(token_id=token.id, tenant=token.tenant, role=token.role, name=token.name)
        self.tokens.put(secret_hash, principal)
        return principal

    # ---------------------------------------------------------------- bootstrap
    async def bootstrap(self, data_dir: Path, admin_token: str | None) -> Bootstrap:
        """On an empty store: the `default` tenant and a superadmin token (CBW_ADMIN_TOKEN or a generated one).

        Only the first start does this, so a revoked bootstrap token stays revoked.
        """
        now = self.clock.now()
        generated = None if admin_token else new_secret()
        secret = admin_token or generated
        assert secret is not None

        def run(stx: SystemTx) -> tuple[bool, bool]:
            if stx.count_tenants() > 0:
                return False, False  # only the first start of an empty store bootstraps
            stx.insert_tenant(Tenant(id=DEFAULT_TENANT, name="Default", created_at=now))
            token = Token(id=new_id(), tenant=DEFAULT_TENANT, role=Role.SUPERADMIN, name="bootstrap", created_at=now)
            stx.for_tenant(DEFAULT_TENANT).insert_token(TokenRecord(token, hash_secret(secret)))
            return True, True

        created_tenant, made_token = await self.store.system_write(run)
        token_file = None
        if made_token and generated is not None:
            token_file = write_private(_free_token_file(data_dir), generated + "\n")
        return Bootstrap(created_tenant, generated if made_token else None, token_file)

    # ---------------------------------------------------------------- tenants
    async def create_tenant(self, principal: Principal | None, body: TenantCreate) -> TenantCreated:
        if principal is not None and principal.role is not Role.SUPERADMIN:
            raise Forbidden("only a superadmin may create tenants")
        tenant_id = body.id or new_id()
        now = self.clock.now()
        secret = new_secret()

        def run(stx: SystemTx) -> None:
            if stx.get_tenant(tenant_id) is not None:
                raise Conflict(f"a tenant with id {tenant_id!r} already exists")
            stx.insert_tenant(Tenant(id=tenant_id, name=body.name, created_at=now))
            token = Token(id=new_id(), tenant=tenant_id, role=Role.ADMIN, name="tenant admin", created_at=now)
            stx.for_tenant(tenant_id).insert_token(TokenRecord(token, hash_secret(secret)))

        await self.store.system_write(run)
        return TenantCreated(id=tenant_id, name=body.name, admin_token=secret)

    async def list_tenants(self, principal: Principal | None, page: PageRequest) -> Page[Tenant]:
        """Every tenant, newest first. `principal` None means the local CLI."""
        if principal is not None and principal.role is not Role.SUPERADMIN:
            raise Forbidden("only a superadmin may list tenants")
        return await self.store.system_read(lambda stx: stx.list_tenants(page))

    # ---------------------------------------------------------------- tokens
    async def create_token(self, principal: Principal | None, body: TokenCreate) -> TokenCreated:
        """`principal` None means the local CLI, which may do what a superadmin may."""
        tenant = body.tenant or (principal.tenant if principal else DEFAULT_TENANT)
        if principal is not None:
            if tenant != principal.tenant and principal.role is not Role.SUPERADMIN:
                raise Forbidden("only a superadmin may create tokens in another tenant")
            if body.role is Role.SUPERADMIN and principal.role is not Role.SUPERADMIN:
                raise Forbidden("only a superadmin may create superadmin tokens")
        now = self.clock.now()
        secret = new_secret()
        token = Token(id=new_id(), tenant=tenant, role=body.role, name=body.name, created_at=now)

        def run(stx: SystemTx) -> None:
            if stx.get_tenant(tenant) is None:
                raise NotFound(f"no tenant with id {tenant!r}")
            stx.for_tenant(tenant).insert_token(TokenRecord(token, hash_secret(secret)))

        await self.store.system_write(run)
        return TokenCreated(id=token.id, token=secret, role=token.role, tenant=tenant, name=token.name)

    async def list_tokens(self, tenant: str, page: PageRequest) -> Page[Token]:
        return await self.store.read(tenant, lambda tx: tx.list_tokens(page))

    async def revoke_token(self, principal: Principal | None, tenant: str, token_id: str) -> None:
        """`principal` None means the local CLI. Only a superadmin may revoke a superadmin token."""

        def run(tx: Tx) -> None:
            record = tx.get_token_record(token_id)
            if record is None:
                raise NotFound(f"no token with id {token_id!r}")
            if record.token.role is Role.SUPERADMIN and principal is not None and principal.role is not Role.SUPERADMIN:
                raise Forbidden("only a superadmin may revoke a superadmin token")
            tx.delete_token(token_id)

        await self.store.write(tenant, run)
        self.tokens.forget(token_id)
