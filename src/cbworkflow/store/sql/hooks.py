"""Triggers and goals in SQL: what templates listen for, and the enrolment keys of trigger-started instances.

A template's triggers and goals are kept beside its body in `templates.hooks` (NULL when it has neither), and a
partial index holds only the templates that have some, so the question every contact change asks ("who listens
in this tenant?") reads a few small rows, never the graphs. An instance a trigger starts carries `enrol_key`
(`<template>:<contact>`) under a partial unique index: a batch of them goes in by one
`INSERT … ON CONFLICT DO NOTHING`, so when two transactions enrol one contact at once the second waits for the
first and inserts nothing (no check-then-insert). The key is cleared when the instance ends (`rows.instance_values`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ...models.instances import WorkflowInstance
from ...models.templates import TemplateHooks, TriggerError
from .. import schema as s
from ..tallies import Tally, place_of
from . import rows
from .tags import INSTANCES, TagRows


def _insert_skipping_keys(conn: Connection) -> Any:
    """INSERT … ON CONFLICT (tenant, enrol_key) WHERE enrol_key IS NOT NULL DO NOTHING, in the connection's SQL."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(s.instances).on_conflict_do_nothing(
        index_elements=["tenant", "enrol_key"], index_where=s.ENROL_KEY_SQL
    )


class HookRows:
    """The triggers-and-goals part of `SqlTx`."""

    conn: Connection
    tenant: str
    tags: TagRows
    tally: Tally
    _places: dict[str, tuple[str, str | None]]

    def template_hooks(self) -> list[TemplateHooks]:
        t = s.templates.c  # along ix_templates_hooked, whose condition is repeated word for word
        query = select(t.id, t.hooks, t.trigger_errors).where(t.tenant == self.tenant, s.HOOKED_SQL).order_by(t.id)
        return [
            TemplateHooks.model_validate(
                {"template_id": row.id, **row.hooks, "trigger_errors": row.trigger_errors or []}
            )
            for row in self.conn.execute(query)
        ]

    def record_trigger_errors(self, template_id: str, errors: list[TriggerError]) -> None:
        t = s.templates.c
        stored = [error.model_dump(mode="json") for error in errors]
        statement = update(s.templates).where(t.tenant == self.tenant, t.id == template_id)
        self.conn.execute(statement.values(trigger_errors=stored))

    def insert_enrolments(self, instances: Sequence[WorkflowInstance], snapshot_id: str) -> set[str]:
        if not instances:
            return set()
        values = [{**rows.instance_values(instance), "snapshot_id": snapshot_id} for instance in instances]
        keyed = [row for row in values if row["enrol_key"] is not None]
        free = [row for row in values if row["enrol_key"] is None]
        if free:
            self.conn.execute(rows.INSERT_INSTANCE, free)
        if keyed:
            self.conn.execute(_insert_skipping_keys(self.conn), keyed)
        i = s.instances.c
        wanted = [instance.id for instance in instances]
        found = self.conn.execute(select(i.id, i.pk).where(i.tenant == self.tenant, i.id.in_(wanted))).all()
        pks: dict[str, int] = {row.id: row.pk for row in found}
        for instance in instances:
            if instance.id not in pks:
                continue  # its key was taken
            if instance.tags:
                self.tags.put(INSTANCES, pks[instance.id], instance.tags, instance.created_at, replace=False)
            self._places[instance.id] = place_of(instance)
            self.tally.moved(instance.template_id, None, self._places[instance.id])
        return set(pks)
