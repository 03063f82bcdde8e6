"""The JSON-file store (`json:///path`): one readable, pretty-printed JSON file per entity, one folder per tenant.

    <root>/store.json                       the format version
    <root>/<tenant>/tenant.json
    <root>/<tenant>/contacts/<id>.json      the contact, with its own (contact-level) timeline events
    <root>/<tenant>/instances/<id>.json     the instance and its timeline
    <root>/<tenant>/templates/<id>.json
    <root>/<tenant>/template-versions/<template id>/<version>.json
    <root>/<tenant>/snapshots/<hash>.json   frozen node maps, shared by instances of the same graph
    <root>/<tenant>/tokens/<id>.json        a token with the SHA-256 of its secret (never the secret)
    <root>/<tenant>/users/<id>.json         a person who signs in: the password's argon2 hash, an invitation's SHA-256
    <root>/<tenant>/sessions/<id>.json      a signed-in browser: the SHA-256 of its cookie's secret, its CSRF token
    <root>/<tenant>/jobs/<id>.json          a background job (bulk enrolment), with the worker's lease on it
    <root>/<tenant>/job-rows/<job id>/<seq>.json   a chunk a job staged (an import's rows), until it is read
    <root>/<tenant>/contact-instances/<contact id>.json   instance ids of a contact (kept after the contact goes)
    <root>/<tenant>/external-ids/<sha256>.json            which contact holds an external id
    <root>/<tenant>/idempotency/<sha256>.json
    <root>/.tokens/<secret hash>.json       token lookup by hash, across tenants
    <root>/.user-emails/<sha256 of the email key>/<tenant>.json   who in that tenant signs in with the address
                                            (the tenant's uniqueness check, and sign-in by address across tenants)
    <root>/.due/<wake time>.<tenant>.<id>.json   instances whose work comes due, in time order (for the worker)
    <root>/.journal/                        multi-file commits in flight

Why it is safe for several threads and processes on one machine:
- Locks are per entity (`disk.py`): `<dir>/.<name>.lock`, taken with `flock` through portalocker before an entity
  is read for a write, held to the end of the transaction, and removed (while still held) after use. A lock is
  taken blocking only when the transaction holds no other; otherwise it is tried, and a busy lock makes the
  transaction let go of everything, wait for that lock, and run again from the start (its function has no side
  effects), so transactions can never deadlock (`transaction.py`, `store.py`).
- Each file is replaced atomically: temp file, fsync, `os.replace`, fsync of the folder.
- A commit touching several files (`journal.py`) first writes them all into one journal file (atomically),
  applies them, then deletes the journal. A process killed half way leaves a journal whose lock nobody holds;
  the next transaction that meets it replays it (under the entities' locks) before going on, so a commit is
  applied whole or not at all.
- Reads take no locks: each file is read whole and valid, but a read spanning files is not one snapshot.

File I/O runs on thread pools, never on the event loop. Lists, search and the work queue read every file of the
folder they list (keeping only a page in memory): see docs/performance.md for where that stops being a good
choice. The worker's questions (what is due, and when next) read only the `.due/` folder's names.

The modules, along these seams: `disk` (file I/O and locks), `journal`, `layout` (where each record lives),
`docs` (stored documents and pages over them), `transaction` (locks and pending changes), `tenant_tx` (one
tenant's `Tx`, with its parts: `keys`, `counts`, `outbox`, `hooks`, `subscriptions`, `people`), `system_tx` (the
`SystemTx`), `store` (`JsonFileStore`).
"""

from __future__ import annotations

from .store import JsonFileStore

__all__ = ["JsonFileStore"]
