"""Contact search by substring, in SQL: which contacts hold the text (name, email, phone digits).

How the matches are found is each backend's: SQLite by its FTS5 trigram table, PostgreSQL by `pg_trgm` indexes
(or the ordered scan, when the text is everywhere), any other by the portable scan in `SqlTx`. What they share is
here: the condition itself, the narrower one PostgreSQL's indexes serve (a few rare trigrams, then the whole text
checked), and the texts a search sample is taken from (`search_sample.py`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, and_, func, or_, select
from sqlalchemy.sql import ColumnElement

from .. import schema as s
from ..base import PageRequest
from ..paging import cut_page, int_cursor, name_cursor
from ..phones import next_prefix, phone_query_digits
from . import rows


def search_where(tenant: str, query: str, page: PageRequest) -> list[ColumnElement[bool]]:
    """The tenant's contacts whose lower-cased name or email, or phone digits, hold `query`, past the page's cursor."""
    c = s.contacts.c
    words = query.strip().lower()
    pattern = "%" + rows.escape_like(words) + "%"
    clauses = [func.lower(c.name).like(pattern, escape="\\"), func.lower(c.email).like(pattern, escape="\\")]
    digits = phone_query_digits(query)
    if digits:
        clauses.append(c.phone_digits.like("%" + digits + "%"))
    return _tenant_page(tenant, or_(*clauses), page)


def held_where(
    tenant: str, words: str, digits: str | None, windows: tuple[list[str], list[str]], page: PageRequest
) -> list[ColumnElement[bool]]:
    """What `search_where` picks, written for trigram indexes: in each column, the text's rare `windows` (three
    letters or digits each, which an index finds: (those of the words, those of the digits)), then the whole
    text checked by position (`strpos`, which no index serves, so only the candidates are checked)."""
    c = s.contacts.c

    def held(column: ColumnElement[str], text: str, found: list[str]) -> ColumnElement[bool]:
        near = (column.like(f"%{rows.escape_like(w)}%", escape="\\") for w in found)
        return and_(*near, func.strpos(column, text) > 0)

    clauses = [held(func.lower(c.name), words, windows[0]), held(func.lower(c.email), words, windows[0])]
    if digits:
        clauses.append(held(c.phone_digits, digits, windows[1]))
    return _tenant_page(tenant, or_(*clauses), page)


def _tenant_page(tenant: str, held: ColumnElement[bool], page: PageRequest) -> list[ColumnElement[bool]]:
    c = s.contacts.c
    where = [c.tenant == tenant, held]
    if page.cursor is not None:
        where.append(c.pk < int_cursor(page.cursor))
    return where


def walk(conn: Connection, where: list[ColumnElement[bool]], page: PageRequest) -> tuple[list[Row[Any]], str | None]:
    """The contacts `where` picks, newest stored first, a page of them."""
    c = s.contacts.c
    found = conn.execute(select(s.contacts).where(*where).order_by(c.pk.desc()).limit(page.limit + 1)).all()
    return cut_page(found, page.limit, lambda row: (row.pk,))


def names(conn: Connection, tenant: str, prefix: str, page: PageRequest) -> tuple[list[Row[Any]], str | None]:
    """The tenant's contacts whose name key starts with `prefix`, by name key then age (short-name search)."""
    c = s.contacts.c
    query = select(s.contacts).where(c.tenant == tenant, c.name_key >= prefix)
    following = next_prefix(prefix)
    if following is not None:  # None: every key from `prefix` on starts with it
        query = query.where(c.name_key < following)
    if page.cursor is not None:
        after_key, after_pk = name_cursor(page.cursor)
        query = query.where(rows.beyond((c.name_key, c.pk), (after_key, after_pk), descending=False))
    found = conn.execute(query.order_by(c.name_key, c.pk).limit(page.limit + 1)).all()
    return cut_page(found, page.limit, lambda row: (row.name_key, row.pk))


def newest_texts(conn: Connection, tenant: str, count: int) -> list[tuple[str, str, str]]:
    """The lower-cased name and email and the phone digits of the tenant's `count` newest contacts."""
    c = s.contacts.c
    newest = (
        select(c.name, c.email, c.phone_digits)
        .where(c.tenant == tenant)
        .order_by(c.created_at.desc(), c.pk.desc())
        .limit(count)
    )
    return [(name.lower(), (email or "").lower(), phone or "") for name, email, phone in conn.execute(newest)]
