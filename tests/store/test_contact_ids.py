"""`Tx.list_contact_ids` (what a bulk enrolment walks) gives, page by page, the ids and cursors `list_contacts`
gives, with and without filters, on every backend."""

from __future__ import annotations

import test_store
from test_store import contact, run

from cbworkflow.store.base import ContactFilter, PageRequest, Store, Tx

backend = test_store.backend
store = test_store.store


def test_contact_ids_page_as_contacts_do(store: Store) -> None:
    made = [
        contact(cid=f"c{i:02d}", minutes=i // 3, county="North" if i % 2 else "South", tags=["voter", f"w{i % 3}"])
        for i in range(23)
    ]
    run(store, "a", lambda tx: tx.insert_contacts(made))
    run(store, "b", lambda tx: tx.insert_contacts([contact("b", cid="c00")]))  # another tenant's: never listed
    for where in (ContactFilter(), ContactFilter(tags=["w1"]), ContactFilter(county="North", tags=["voter", "w2"])):
        cursor: str | None = None
        walked: list[str] = []
        while True:
            page = PageRequest(limit=4, cursor=cursor)

            def both(tx: Tx, page: PageRequest = page, where: ContactFilter = where) -> tuple[object, object]:
                return tx.list_contacts(where, page), tx.list_contact_ids(where, page)

            contacts, ids = run(store, "a", both, write=False)
            assert ids.items == [c.id for c in contacts.items]
            assert ids.next_cursor == contacts.next_cursor
            walked += ids.items
            cursor = ids.next_cursor
            if cursor is None:
                break
        everyone = run(store, "a", lambda tx, w=where: tx.list_contacts(w, PageRequest(limit=100)), write=False)
        assert walked
        assert walked == [c.id for c in everyone.items]
