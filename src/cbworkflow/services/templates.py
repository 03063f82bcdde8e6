"""Workflow templates: create, change (with the minor-version bump), keep versions, clone, delete, validate."""

from __future__ import annotations

from typing import Any

from ..clock import Clock
from ..errors import Conflict, InvalidInput, NotFound
from ..ids import new_id
from ..models.access import Principal
from ..models.templates import (
    CloneRequest,
    TemplateCreate,
    TemplateFields,
    TemplatePatch,
    TemplateVersion,
    ValidationReport,
    WorkflowTemplate,
    bump_minor,
    version_tuple,
)
from ..store.base import Page, PageRequest, Store, Tx
from ..validation import validate_template


def report_for(template: WorkflowTemplate) -> ValidationReport:
    return validate_template(template.start_node, template.nodes, template.triggers, template.goals)


def _keep_version(tx: Tx, template: WorkflowTemplate) -> None:
    tx.insert_template_version(
        TemplateVersion(
            template_id=template.id,
            version=template.version,
            template=template,
            created_at=template.updated_at,
        )
    )


class TemplateService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def get(self, tenant: str, template_id: str) -> WorkflowTemplate:
        found = await self.store.read(tenant, lambda tx: tx.get_template(template_id))
        if found is None:
            raise NotFound(f"no workflow template with id {template_id!r}")
        return found

    async def list(self, tenant: str, tag: str | None, page: PageRequest) -> Page[WorkflowTemplate]:
        return await self.store.read(tenant, lambda tx: tx.list_templates(tag, page))

    async def versions(self, tenant: str, template_id: str, page: PageRequest) -> Page[TemplateVersion]:
        def run(tx: Tx) -> Page[TemplateVersion]:
            if tx.get_template(template_id) is None:
                raise NotFound(f"no workflow template with id {template_id!r}")
            return tx.list_template_versions(template_id, page)

        return await self.store.read(tenant, run)

    async def validate(self, tenant: str, template_id: str) -> ValidationReport:
        return report_for(await self.get(tenant, template_id))

    def check(self, body: TemplateFields) -> ValidationReport:
        """The validation report of a template that is not saved (the pages' JSON editor checks an edit before
        saving it): the same judgement as `validate`, without a store."""
        return validate_template(body.start_node, body.nodes, body.triggers, body.goals)

    async def create(self, principal: Principal, body: TemplateCreate, *, replace: bool = False) -> WorkflowTemplate:
        """Store a new template. With `replace` (template files loaded by the CLI) an existing id is updated."""
        now = self.clock.now()
        template = WorkflowTemplate(
            **body.model_dump(exclude={"id"}),
            id=body.id or new_id(),
            tenant=principal.tenant,
            created_at=now,
            updated_at=now,
        )

        def run(tx: Tx) -> WorkflowTemplate:
            existing = tx.get_template(template.id)
            if existing is not None:
                if not replace:
                    raise Conflict(f"a workflow template with id {template.id!r} already exists")
                return self._apply(tx, existing, body.model_dump(exclude={"id"}), now)
            tx.insert_template(template)
            _keep_version(tx, template)
            return template

        return await self.store.write(principal.tenant, run)

    def _apply(self, tx: Tx, current: WorkflowTemplate, changes: dict[str, Any], now: Any) -> WorkflowTemplate:
        updated = WorkflowTemplate.model_validate({**current.model_dump(), **changes, "updated_at": now})
        graph_changed = updated.start_node != current.start_node or {
            k: v.model_dump() for k, v in updated.nodes.items()
        } != {k: v.model_dump() for k, v in current.nodes.items()}
        asked = changes.get("version")
        if asked is not None and version_tuple(asked) < version_tuple(current.version):
            raise InvalidInput(f"version: {asked} is lower than the current version {current.version}")
        if graph_changed and (asked is None or version_tuple(asked) <= version_tuple(current.version)):
            updated.version = bump_minor(current.version)
        if updated.model_dump() == {**current.model_dump(), "updated_at": now}:
            return current
        tx.update_template(updated)
        if updated.version == current.version:
            # The same version with other metadata: the kept copy of this version is replaced.
            tx.delete_template_version(updated.id, updated.version)
        _keep_version(tx, updated)
        return updated

    async def patch(self, principal: Principal, template_id: str, body: TemplatePatch) -> WorkflowTemplate:
        changes = body.model_dump(include=body.model_fields_set, exclude_none=False)
        changes = {
            k: v for k, v in changes.items() if v is not None or k in ("description", "start_node", "contact_hours")
        }
        now = self.clock.now()

        def run(tx: Tx) -> WorkflowTemplate:
            current = tx.get_template(template_id)
            if current is None:
                raise NotFound(f"no workflow template with id {template_id!r}")
            return self._apply(tx, current, changes, now)

        return await self.store.write(principal.tenant, run)

    async def clone(self, principal: Principal, template_id: str, body: CloneRequest) -> WorkflowTemplate:
        now = self.clock.now()

        def run(tx: Tx) -> WorkflowTemplate:
            source = tx.get_template(template_id)
            if source is None:
                raise NotFound(f"no workflow template with id {template_id!r}")
            copy = source.model_copy(
                update={
                    "id": body.id or new_id(),
                    "name": body.name or f"{source.name} (copy)",
                    "version": "1.0.0",
                    "created_at": now,
                    "updated_at": now,
                }
            )
            if tx.get_template(copy.id) is not None:
                raise Conflict(f"a workflow template with id {copy.id!r} already exists")
            tx.insert_template(copy)
            _keep_version(tx, copy)
            return copy

        return await self.store.write(principal.tenant, run)

    async def delete(self, principal: Principal, template_id: str) -> None:
        """Delete a template and its kept versions; instances keep running on their frozen copy."""
        if not await self.store.write(principal.tenant, lambda tx: tx.delete_template(template_id)):
            raise NotFound(f"no workflow template with id {template_id!r}")
