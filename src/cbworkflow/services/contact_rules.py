"""A tenant's contact rules (`GET/PATCH /api/tenants/{id}/settings`): its time zone, contact hours and frequency
caps. An admin reads and changes their own tenant's; a superadmin any tenant's. Anyone else asking about another
tenant is told there is no such tenant (404), as for any other record of another tenant."""

from __future__ import annotations

from ..errors import NotFound
from ..models.access import Principal, Role
from ..models.contact_rules import TenantSettings, TenantSettingsPatch
from ..store.base import Store, SystemTx


class TenantSettingsService:
    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def _visible(principal: Principal, tenant_id: str) -> None:
        if principal.tenant != tenant_id and principal.role is not Role.SUPERADMIN:
            raise NotFound(f"no tenant {tenant_id!r}")

    async def get(self, principal: Principal, tenant_id: str) -> TenantSettings:
        self._visible(principal, tenant_id)

        def run(stx: SystemTx) -> TenantSettings:
            if stx.get_tenant(tenant_id) is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            return stx.for_tenant(tenant_id).get_settings()

        return await self.store.system_read(run)

    async def patch(self, principal: Principal, tenant_id: str, body: TenantSettingsPatch) -> TenantSettings:
        self._visible(principal, tenant_id)
        given = body.model_dump(include=body.model_fields_set)

        def run(stx: SystemTx) -> TenantSettings:
            if stx.get_tenant(tenant_id) is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            tx = stx.for_tenant(tenant_id)
            current = tx.get_settings().model_dump()
            defaults = TenantSettings().model_dump()
            merged = {key: (defaults[key] if value is None else value) for key, value in given.items()}
            updated = TenantSettings.model_validate({**current, **merged})
            tx.put_settings(updated)
            return updated

        return await self.store.system_write(run)
