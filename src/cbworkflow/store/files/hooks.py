"""Triggers and goals in the JSON-file store: what templates listen for, and the enrolment keys of trigger-started
instances.

- `<tenant>/template-hooks/<template id>.json`: the triggers, goals and latest trigger errors of a template that
  has triggers or goals (none for one that has neither), kept in step with the template; a contact change reads
  only this folder, never the templates' graphs.
- `<tenant>/enrol-keys/<hash of the key>.json`: which unfinished instance holds an enrolment key. Looked up under
  its lock, so two transactions enrolling one contact by trigger queue on the file and the second finds it taken;
  removed when that instance ends or is deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...models.instances import WorkflowInstance
from ...models.templates import TemplateHooks, TriggerError, WorkflowTemplate, hooks_of
from .docs import Doc
from .layout import FINISHED_STATUSES, Layout, file_name, hashed
from .transaction import FileTransaction


class FileHooks:
    """The triggers-and-goals part of a tenant's `FileTx`."""

    txn: FileTransaction
    layout: Layout
    tenant: str
    home: Path

    insert_instance: Callable[[WorkflowInstance, str], None]  # FileTx's

    def _doc(self, folder: str, record_id: str) -> tuple[Path | None, Doc | None]:
        path = self.layout.record(self.tenant, folder, record_id)
        return path, None if path is None else self.txn.get(path)

    # ------------------------------------------------------------------ what templates listen for
    def _hooks_path(self, template_id: str) -> Path | None:
        name = file_name(template_id)
        return None if name is None else self.home / "template-hooks" / f"{name}.json"

    def _sync_hooks(self, template: WorkflowTemplate | None, template_id: str) -> None:
        """Write (or remove, for a template with neither, or deleted) the template's hooks file."""
        path = self._hooks_path(template_id)
        if path is None:
            return
        hooks = None if template is None else hooks_of(template.triggers, template.goals)
        old = self.txn.get(path)
        if hooks is None:
            if old is not None:
                self.txn.put(path, None)
            return
        errors = old.get("trigger_errors", []) if old else []
        self.txn.put(path, {"template_id": template_id, **hooks, "trigger_errors": errors})

    def template_hooks(self) -> list[TemplateHooks]:
        found = [TemplateHooks.model_validate(doc) for doc in self.txn.scan(self.home / "template-hooks")]
        return sorted(found, key=lambda hooks: hooks.template_id)

    def record_trigger_errors(self, template_id: str, errors: list[TriggerError]) -> None:
        stored = [error.model_dump(mode="json") for error in errors]
        path, doc = self._doc("templates", template_id)
        if path is None or doc is None:
            return
        self.txn.put(path, {**doc, "trigger_errors": stored})
        hooks = self._hooks_path(template_id)
        old = None if hooks is None else self.txn.get(hooks)
        if hooks is not None and old is not None:
            self.txn.put(hooks, {**old, "trigger_errors": stored})

    # ------------------------------------------------------------------ enrolment keys
    def _key_path(self, key: str) -> Path:
        return self.home / "enrol-keys" / f"{hashed(key)}.json"

    def _key_free(self, key: str) -> bool:
        """No unfinished instance holds `key` (a file left naming a finished or deleted one is free)."""
        doc = self.txn.get(self._key_path(key))
        if doc is None or doc.get("key") != key:
            return True
        _, holder = self._doc("instances", str(doc.get("instance_id")))
        return holder is None or holder["status"] in FINISHED_STATUSES or holder.get("enrol_key") != key

    def insert_enrolments(self, instances: Sequence[WorkflowInstance], snapshot_id: str) -> set[str]:
        inserted: set[str] = set()
        for instance in instances:
            key = instance.enrol_key
            if key is not None:
                if not self._key_free(key):
                    continue
                self.txn.put(self._key_path(key), {"key": key, "instance_id": instance.id})
            self.insert_instance(instance, snapshot_id)
            inserted.add(instance.id)
        return inserted

    def _sync_enrol_key(self, old: Doc | None, new: Doc | None) -> None:
        """Free the instance's enrolment key once it ends (or is deleted)."""
        key = None if old is None else old.get("enrol_key")
        if old is None or key is None or (new is not None and new.get("enrol_key") == key):
            return
        path = self._key_path(key)
        doc = self.txn.get(path)
        if doc is not None and doc.get("instance_id") == old["id"]:
            self.txn.put(path, None)


def enrol_key_field(instance: WorkflowInstance) -> dict[str, Any]:
    """The stored `enrol_key` of an instance: none once it has ended."""
    finished = instance.status.value in FINISHED_STATUSES
    return {"enrol_key": None if finished else instance.enrol_key}
