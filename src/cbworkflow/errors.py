"""The exception tree of cbworkflow. Services raise these; the API maps each to one HTTP status in one place.

CbwError
├── NotFound          404  no such record in this tenant (also: another tenant's record)
├── Conflict          409  the request clashes with the current state
├── InvalidInput      422  a value is wrong; names the field
├── Unauthorized      401  missing or unknown token
├── Forbidden         403  the token's role may not do this
├── UnsupportedMediaType 415  a body of a type the route does not read
└── StoreError        503  the store failed (not the client's fault)
"""

from __future__ import annotations

from typing import Any


class CbwError(Exception):
    """Root of every error cbworkflow raises on purpose."""

    status_code = 500

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(CbwError):
    status_code = 404


class Conflict(CbwError):
    status_code = 409


class InvalidInput(CbwError):
    status_code = 422


class Unauthorized(CbwError):
    status_code = 401


class Forbidden(CbwError):
    status_code = 403


class UnsupportedMediaType(CbwError):
    status_code = 415


class StoreError(CbwError):
    status_code = 503
