"""The OpenAPI document as a client generator reads it: one operation id per route (`contacts_create`), the error
body on every error status, and the headers the API really sends and reads (`Retry-After`, `WWW-Authenticate`,
`X-Request-ID`, `Idempotency-Key`).

The operation ids are a table, not derived from function names: they are names clients are built on, so a route
renamed in Python must not rename a generated method. A route missing from the table stops the app from starting.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

OPERATION_IDS: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "health_live",
    ("GET", "/readyz"): "health_ready",
    ("GET", "/metrics"): "metrics_get",
    ("POST", "/api/tenants"): "tenants_create",
    ("GET", "/api/tenants"): "tenants_list",
    ("POST", "/api/tokens"): "tokens_create",
    ("GET", "/api/tokens"): "tokens_list",
    ("DELETE", "/api/tokens/{token_id}"): "tokens_revoke",
    ("POST", "/api/users"): "users_create",
    ("GET", "/api/users"): "users_list",
    ("GET", "/api/users/{user_id}"): "users_get",
    ("PATCH", "/api/users/{user_id}"): "users_update",
    ("DELETE", "/api/users/{user_id}"): "users_delete",
    ("GET", "/api/contacts"): "contacts_list",
    ("POST", "/api/contacts"): "contacts_create",
    ("GET", "/api/contacts/search"): "contacts_search",
    ("POST", "/api/contacts/import"): "contacts_import",
    ("GET", "/api/contacts/export"): "contacts_export",
    ("PUT", "/api/contacts/by-external-id/{external_id}"): "contacts_upsert_by_external_id",
    ("GET", "/api/contacts/{contact_id}"): "contacts_get",
    ("PATCH", "/api/contacts/{contact_id}"): "contacts_update",
    ("DELETE", "/api/contacts/{contact_id}"): "contacts_delete",
    ("POST", "/api/contacts/{contact_id}/tags/{tag}"): "contacts_add_tag",
    ("DELETE", "/api/contacts/{contact_id}/tags/{tag}"): "contacts_remove_tag",
    ("GET", "/api/contacts/{contact_id}/timeline"): "contacts_timeline",
    ("POST", "/api/contacts/{contact_id}/opt-out"): "contacts_opt_out",
    ("DELETE", "/api/contacts/{contact_id}/opt-out"): "contacts_opt_in",
    ("POST", "/api/inbound/sms"): "inbound_sms",
    ("GET", "/api/tenants/{tenant_id}/settings"): "tenants_get_settings",
    ("POST", "/api/workflows/{template_id}/simulate"): "workflows_simulate",
    ("POST", "/api/workflows/{template_id}/migrate"): "workflows_migrate",
    ("PATCH", "/api/tenants/{tenant_id}/settings"): "tenants_patch_settings",
    ("GET", "/api/workflows"): "workflows_list",
    ("POST", "/api/workflows"): "workflows_create",
    ("GET", "/api/workflows/{template_id}"): "workflows_get",
    ("PATCH", "/api/workflows/{template_id}"): "workflows_update",
    ("DELETE", "/api/workflows/{template_id}"): "workflows_delete",
    ("GET", "/api/workflows/{template_id}/versions"): "workflows_versions",
    ("POST", "/api/workflows/{template_id}/clone"): "workflows_clone",
    ("GET", "/api/workflows/{template_id}/validate"): "workflows_validate",
    ("GET", "/api/workflows/{template_id}/stats"): "workflows_stats",
    ("GET", "/api/workflows/{template_id}/diagram"): "workflows_diagram",
    ("GET", "/api/instances"): "instances_list",
    ("POST", "/api/instances"): "instances_create",
    ("POST", "/api/instances/bulk"): "instances_bulk_enrol",
    ("GET", "/api/instances/{instance_id}"): "instances_get",
    ("DELETE", "/api/instances/{instance_id}"): "instances_delete",
    ("POST", "/api/instances/{instance_id}/start"): "instances_start",
    ("POST", "/api/instances/{instance_id}/pause"): "instances_pause",
    ("POST", "/api/instances/{instance_id}/resume"): "instances_resume",
    ("POST", "/api/instances/{instance_id}/cancel"): "instances_cancel",
    ("POST", "/api/instances/{instance_id}/transition"): "instances_transition",
    ("POST", "/api/instances/{instance_id}/retry"): "instances_retry",
    ("POST", "/api/instances/{instance_id}/move"): "instances_move",
    ("POST", "/api/instances/{instance_id}/state"): "instances_update_state",
    ("POST", "/api/instances/{instance_id}/notes"): "instances_add_note",
    ("POST", "/api/instances/{instance_id}/tags/{tag}"): "instances_add_tag",
    ("DELETE", "/api/instances/{instance_id}/tags/{tag}"): "instances_remove_tag",
    ("GET", "/api/instances/{instance_id}/timeline"): "instances_timeline",
    ("GET", "/api/tasks"): "tasks_list",
    ("POST", "/api/tasks/claim"): "tasks_claim",
    ("POST", "/api/tasks/{instance_id}/release"): "tasks_release",
    ("POST", "/api/events"): "events_post",
    ("GET", "/api/stream"): "events_stream",
    ("GET", "/api/jobs"): "jobs_list",
    ("GET", "/api/jobs/{job_id}"): "jobs_get",
    ("POST", "/api/jobs/{job_id}/cancel"): "jobs_cancel",
    ("GET", "/api/subscriptions"): "subscriptions_list",
    ("POST", "/api/subscriptions"): "subscriptions_create",
    ("GET", "/api/subscriptions/{subscription_id}"): "subscriptions_get",
    ("PATCH", "/api/subscriptions/{subscription_id}"): "subscriptions_update",
    ("DELETE", "/api/subscriptions/{subscription_id}"): "subscriptions_delete",
    ("GET", "/api/subscriptions/{subscription_id}/deliveries"): "subscriptions_deliveries",
    ("POST", "/api/subscriptions/{subscription_id}/deliveries/{delivery_id}/redeliver"): "subscriptions_redeliver",
}


def operation_id(route: APIRoute) -> str:
    """The table's id for this route (FastAPI's `generate_unique_id_function`)."""
    (method,) = route.methods or {"GET"}  # every route of ours answers one method
    if not route.include_in_schema:
        return f"unlisted_{route.name}"  # /docs: no client calls it, so it needs no name in the table
    try:
        return OPERATION_IDS[(method, route.path_format)]
    except KeyError:
        raise LookupError(
            f"{method} {route.path_format} has no operation id: add it to OPERATION_IDS in api/openapi.py"
        ) from None


_REQUEST_ID = {
    "description": "this request's id, as in the server's log lines (the client's own X-Request-ID when it sent one)",
    "schema": {"type": "string"},
}
_RETRY_AFTER = {
    "description": "seconds to wait before trying again",
    "schema": {"type": "integer", "minimum": 0},
}
_WWW_AUTHENTICATE = {"description": "`Bearer`: send an API token", "schema": {"type": "string"}}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "any unique string of at most 255 printable characters. A POST that repeats a key this tenant sent to the"
        " same route in the last 24 hours gets the first answer again (with `Idempotent-Replayed: true`) and changes"
        " nothing. The same key with another body is a 422; while the first request is still running, a 409."
    ),
    "schema": {"type": "string", "maxLength": 255},
}


def _add_headers(path: str, method: str, operation: dict[str, Any]) -> None:
    for status, response in operation.get("responses", {}).items():
        headers = response.setdefault("headers", {})
        headers["X-Request-ID"] = _REQUEST_ID
        if status in ("429", "503"):
            headers["Retry-After"] = _RETRY_AFTER
        elif status == "401":
            headers["WWW-Authenticate"] = _WWW_AUTHENTICATE
    if method == "post" and path.startswith("/api/"):
        parameters = operation.setdefault("parameters", [])
        if not any(p.get("name") == IDEMPOTENCY_KEY["name"] for p in parameters):
            parameters.append(IDEMPOTENCY_KEY)


def install(app: FastAPI) -> None:
    """Serve the document with the headers added (built once, on first request)."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            for path, item in schema.get("paths", {}).items():
                for method, operation in item.items():
                    _add_headers(path, method, operation)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
