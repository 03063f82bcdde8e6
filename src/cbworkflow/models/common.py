"""Building blocks shared by every model: strict request bodies, slugs, tags and pages."""

from __future__ import annotations

import inspect
import json
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints

from ..ids import SLUG_PATTERN

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
JSONObject = dict[str, Any]
T = TypeVar("T")

MAX_FIELD_BYTES = 64 * 1024  # one free-form object a client writes (metadata, state updates, action_config)
MAX_STATE_BYTES = 256 * 1024  # an instance's state after every merge


def json_size(value: Any) -> int:
    """Size as compact ASCII JSON: an upper bound of the UTF-8 size that never fails to encode."""
    return len(json.dumps(value, separators=(",", ":")))


def _bounded(value: dict[str, Any]) -> dict[str, Any]:
    if json_size(value) > MAX_FIELD_BYTES:
        raise ValueError(f"larger than {MAX_FIELD_BYTES // 1024} KiB as JSON")
    return value


BoundedObject = Annotated[dict[str, Any], AfterValidator(_bounded)]
"""A free-form JSON object written by a client, at most MAX_FIELD_BYTES."""


def distinct(values: list[T]) -> list[T]:
    """A set kept in the order first given (tags, channels, days): duplicates are dropped, not refused."""
    return list(dict.fromkeys(values))


Tags = Annotated[list[Slug], Field(max_length=100), AfterValidator(distinct)]


class RequestModel(BaseModel):
    """A request body: unknown fields and wrong types are refused (422 naming the field)."""

    model_config = ConfigDict(extra="forbid", strict=False, str_strip_whitespace=False, use_attribute_docstrings=True)


class ResponseModel(BaseModel):
    """A record as the API returns it."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)


def _page_schema(schema: dict[str, Any], cls: type[Any]) -> None:
    """A parametrized page (`Page[Contact]`) is a class of its own without a docstring: give it `Page`'s."""
    schema.setdefault("description", inspect.cleandoc(Page.__doc__ or ""))


class Page(BaseModel, Generic[T]):
    """One page of a list: `next_cursor` is null on the last page."""

    model_config = ConfigDict(use_attribute_docstrings=True, json_schema_extra=_page_schema)

    items: list[T]
    """The records of this page, in the list's order (newest first unless the route says otherwise)."""
    next_cursor: str | None = None
    """Pass it back as `cursor` to get the next page; null on the last page."""


def _iso(value: datetime) -> str:
    """UTC ISO 8601 with an explicit offset (`+00:00`), as api.md asks."""
    return value.isoformat()


Timestamp = Annotated[datetime, PlainSerializer(_iso, when_used="json")]
