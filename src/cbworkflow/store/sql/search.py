"""Contact search by substring, in SQL: which contacts hold the text (name, email, phone digits).

How the matches are found is each backend's: SQLite by its FTS5 trigram table, PostgreSQL by `pg_trgm` indexes
(or the ordered scan, when the text is everywhere), any other by the portable scan in `SqlTx`.
"""

from __future__ import annotations

from sqlalchemy import func, or_
from sqlalchemy.sql import ColumnElement

from .. import schema as s
from ..base import PageRequest
from ..paging import int_cursor
from ..phones import phone_query_digits
from . import rows


def search_where(tenant: str, query: str, page: PageRequest) -> list[ColumnElement[bool]]:
    """The tenant's contacts whose lower-cased name or email, or phone digits, hold `query`, past the page's cursor."""
    c = s.contacts.c
    pattern = "%" + rows.escape_like(query.lower()) + "%"
    clauses = [func.lower(c.name).like(pattern, escape="\\"), func.lower(c.email).like(pattern, escape="\\")]
    digits = phone_query_digits(query)
    if digits:
        clauses.append(c.phone_digits.like("%" + digits + "%"))
    where = [c.tenant == tenant, or_(*clauses)]
    if page.cursor is not None:
        where.append(c.pk < int_cursor(page.cursor))
    return where
