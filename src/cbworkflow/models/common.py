"""Building blocks shared by every model: strict request bodies, slugs, tags and pages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints

from ..ids import SLUG_PATTERN

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
JSONObject = dict[str, Any]


def _unique(values: list[str]) -> list[str]:
    """Tags are a set kept in the order first given: duplicates are dropped, not refused."""
    return list(dict.fromkeys(values))


Tags = Annotated[list[Slug], Field(max_length=100), AfterValidator(_unique)]


class RequestModel(BaseModel):
    """A request body: unknown fields and wrong types are refused (422 naming the field)."""

    model_config = ConfigDict(extra="forbid", strict=False, str_strip_whitespace=False)


class ResponseModel(BaseModel):
    """A record as the API returns it."""

    model_config = ConfigDict(extra="ignore")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list: `next_cursor` is null on the last page."""

    items: list[T]
    next_cursor: str | None = None


def _iso(value: datetime) -> str:
    """UTC ISO 8601 with an explicit offset (`+00:00`), as api.md asks."""
    return value.isoformat()


Timestamp = Annotated[datetime, PlainSerializer(_iso, when_used="json")]
