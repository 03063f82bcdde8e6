"""`POST /api/contacts/import` inside the request (up to 5,000 rows) and `GET /api/contacts/export`, on every store:
good rows in, every bad row rejected with its line and reason, malformed files changing nothing, dry runs, matching
(id, external id, email, phone, ambiguity), duplicates inside the file, re-imports, round trips, 415 / 413 / 422.
The job path (202, the worker, a kill -9) is `tests/system/test_contacts_import_jobs.py`."""

from __future__ import annotations

import csv
import io
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

from conftest import Tenant

IMPORT = "/api/contacts/import"
EXPORT = "/api/contacts/export"
CSV = {"Content-Type": "text/csv"}
JSONL = {"Content-Type": "application/x-ndjson"}


def send(tenant: Tenant, body: str | bytes, headers: dict[str, str] = CSV, **params: Any) -> dict[str, Any]:
    answer = tenant.admin.post(
        IMPORT, content=body.encode() if isinstance(body, str) else body, headers=headers, params=params
    )
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def every_contact(tenant: Tenant) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = tenant.admin.get("/api/contacts", params={"limit": 500} | ({"cursor": cursor} if cursor else {})).json()
        found += page["items"]
        if not (cursor := page["next_cursor"]):
            return found


def by_name(tenant: Tenant) -> dict[str, dict[str, Any]]:
    return {contact["name"]: contact for contact in every_contact(tenant)}


def counts(answer: dict[str, Any]) -> tuple[int, int, int, int]:
    return answer["created"], answer["updated"], answer["unchanged"], answer["rejected"]


GOOD_AND_BAD = (
    "name,email,phone,county,external_id,tags,metadata,precinct\r\n"
    'Ada Lovelace,ada@example.org,(555) 201-3344,Kent,crm-1,voter;volunteer,"{""lang"": ""en""}",12\r\n'
    "Grace Hopper,grace@example.org,+44 20 7946 0958,Kent,crm-2,voter,,\r\n"
    ",nobody@example.org,,,,,,\r\n"
    "Bad Mail,not-an-email,,,,,,\r\n"
    "Bad Phone,,call me,,,,,\r\n"
    "Again Ada,ADA@example.org,,,,,,\r\n"
    "Again Crm,,,,crm-2,,,\r\n"
    "Too Many,,,,,,,,x,y\r\n"
    "Bad Tag,,,,,Not A Slug,,\r\n"
    'Bad Meta,,,,,,"[1, 2]",\r\n'
    '"Multi\r\nLine Name",multi@example.org,,,,,,\r\n'
    "Last,last@example.org,,,,,,7\r\n"
)


def test_good_rows_go_in_and_every_bad_row_is_named_by_line_and_reason(tenant: Tenant) -> None:
    answer = send(tenant, GOOD_AND_BAD)
    assert counts(answer) == (4, 0, 0, 8)
    reasons = {r["line"]: r["reason"] for r in answer["rejections"]}
    assert reasons == {
        4: "name: empty (every contact needs a name)",
        5: reasons[5],
        6: reasons[6],
        7: "duplicate email 'ada@example.org': line 2 has it too",
        8: "duplicate external_id 'crm-2': line 3 has it too",
        9: "has 10 fields, more than the header's 8",
        10: reasons[10],
        11: 'metadata: not a JSON object (write it as {"key": "value"})',
    }
    assert reasons[5].startswith("email: value is not a valid email address")
    assert reasons[6].startswith("phone: 'call me' could not be read as a phone number (for region US")
    assert reasons[10].startswith("tags.0: String should match pattern")
    assert [(r["line"], r["action"], r["matched_by"]) for r in answer["rows"]] == [
        (2, "created", None),
        (3, "created", None),
        (12, "created", None),  # a record spanning two lines is named by the line it starts on
        (14, "created", None),
    ]
    people = by_name(tenant)
    assert set(people) == {"Ada Lovelace", "Grace Hopper", "Multi\r\nLine Name", "Last"}
    ada = people["Ada Lovelace"]
    assert (ada["phone"], ada["phone_e164"], ada["county"], ada["external_id"]) == (
        "(555) 201-3344",
        "+15552013344",
        "Kent",
        "crm-1",
    )
    assert ada["tags"] == ["voter", "volunteer"]
    assert ada["metadata"] == {"lang": "en", "precinct": "12"}  # other columns go into metadata
    assert people["Grace Hopper"]["phone_e164"] == "+442079460958"
    assert people["Grace Hopper"]["metadata"] == {}  # empty cells of other columns are not written
    assert {r["contact_id"] for r in answer["rows"]} == {p["id"] for p in people.values()}

    again = send(tenant, GOOD_AND_BAD)  # the same file again: nothing new, nothing changed
    assert counts(again) == (0, 0, 4, 8)
    assert [r["matched_by"] for r in again["rows"]] == ["external_id", "external_id", "email", "email"]
    assert len(every_contact(tenant)) == 4


def test_a_bom_and_json_lines_read_the_same(tenant: Tenant) -> None:
    with_bom = "\ufeffname,email\r\nZoë Ünal,zoe@example.org\r\n"
    assert counts(send(tenant, with_bom.encode("utf-8"))) == (1, 0, 0, 0)
    assert counts(send(tenant, "name,email\nZoë Ünal,zoe@example.org\n")) == (0, 0, 1, 0)
    lines = "\n".join(
        [
            json.dumps({"name": "Zoë Ünal", "email": "zoe@example.org", "tags": ["jsonl"], "shift": 2}),
            "",
            json.dumps({"name": "Lin", "phone": "555-201-9999", "tags": "a;b", "metadata": {"k": [1]}}),
            json.dumps({"name": "", "email": "x@example.org"}),
            json.dumps({"name": "Typed", "county": 5}),
        ]
    )
    answer = send(tenant, lines + "\n", JSONL)
    assert counts(answer) == (1, 1, 0, 2)
    assert [r["line"] for r in answer["rejections"]] == [4, 5]  # JSON lines: the file's own line numbers
    assert answer["rejections"][1]["reason"].startswith("county: Input should be a valid string")
    people = by_name(tenant)
    assert people["Zoë Ünal"]["tags"] == ["jsonl"]
    assert people["Zoë Ünal"]["metadata"] == {"shift": 2}
    assert people["Lin"]["tags"] == ["a", "b"]
    assert people["Lin"]["metadata"] == {"k": [1]}
    assert people["Lin"]["phone_e164"] == "+15552019999"
    other = tenant.admin.post(IMPORT, content=b'{"name": "Jo"}\n', headers={"Content-Type": "application/jsonl"})
    assert other.status_code == 200
    assert other.json()["created"] == 1


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'name,email\nAda,ada@example.org\n"Cut,off@example.org\n', "line 3: not valid CSV (unexpected end of data)"),
        (b"name,email\nAda,ada@example.org\nB\xe9a,bea@example.org\n", "line 3: not UTF-8 text (byte 0xe9"),
        (b"full_name,email\nAda,ada@example.org\n", "line 1: the header has no `name` column"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "line 1: not UTF-8 text"),
        (b"name,email\nA\x00da,ada@example.org\n", "line 2: holds a NUL byte; this is not a text file"),
        (b"", "the file is empty"),
        (b"name,email\n", "the file holds no contacts"),
        (b"name,name\nA,B\n", "line 1: the header names the column 'name' twice"),
        (b'name,email\n"Ada"x,ada@example.org\n', "line 2: not valid CSV"),
    ],
)
def test_a_malformed_file_changes_nothing_and_says_why(tenant: Tenant, body: bytes, said: str) -> None:
    answer = tenant.admin.post(IMPORT, content=body, headers=CSV)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(said), answer.json()
    assert answer.json()["errors"][0]["field"] == "body"
    assert every_contact(tenant) == []


def test_malformed_json_lines_change_nothing(tenant: Tenant) -> None:
    for body, said in [
        (b'{"name": "Ada"}\n{"name": "Bob"\n', "line 2: not valid JSON"),
        (b'{"name": "Ada"}\n["Bob"]\n', "line 2: a JSON-lines contacts file holds one JSON object per line"),
        (b'{"name": "Ada", "n": NaN}\n', "line 1: not valid JSON"),
    ]:
        answer = tenant.admin.post(IMPORT, content=body, headers=JSONL)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith(said)
    assert every_contact(tenant) == []


def test_a_dry_run_reports_the_same_and_writes_nothing(tenant: Tenant) -> None:
    tenant.contact(name="Old Ada", email="ada@example.org")
    body = "name,email,external_id\nAda,ada@example.org,\nNew,new@example.org,\nWith Id,w@example.org,\n"
    body += "Bad,bad,\n"
    dry = send(tenant, body, dry_run="true")
    assert dry["dry_run"] is True
    assert counts(dry) == (2, 1, 0, 1)
    assert [r["contact_id"] for r in dry["rows"]][1:] == [None, None]  # not made: no id yet
    assert [c["name"] for c in every_contact(tenant)] == ["Old Ada"]
    real = send(tenant, body)
    assert real["dry_run"] is False
    assert counts(real) == counts(dry)
    assert real["rejections"] == dry["rejections"]
    assert [(r["line"], r["action"], r["matched_by"]) for r in real["rows"]] == [
        (r["line"], r["action"], r["matched_by"]) for r in dry["rows"]
    ]


def test_matching_by_id_external_id_email_and_phone(tenant: Tenant) -> None:
    by_external = tenant.contact(name="Ext", external_id="crm-9", county="Old")
    by_email = tenant.contact(name="Mail", email="Mail@Example.org")
    by_phone = tenant.contact(name="Phone", phone="555-201-0001")
    by_id = tenant.contact(name="Id", id="kept-id")
    body = (
        "id,name,email,phone,external_id,county\n"
        ",Ext Renamed,,,crm-9,New\n"
        ",Mail Renamed,mail@example.org,,,\n"  # emails match whatever their case
        ",Phone Renamed,,(555) 201-0001,,\n"  # phones match in E.164
        "kept-id,Id Renamed,,,,\n"
        "fresh-id,Brand New,,,,\n"
    )
    answer = send(tenant, body)
    assert [(r["contact_id"], r["matched_by"], r["action"]) for r in answer["rows"]] == [
        (by_external["id"], "external_id", "updated"),
        (by_email["id"], "email", "updated"),
        (by_phone["id"], "phone", "updated"),
        (by_id["id"], "id", "updated"),
        ("fresh-id", None, "created"),
    ]
    people = by_name(tenant)
    assert people["Ext Renamed"]["county"] == "New"
    assert people["Mail Renamed"]["email"] == "mail@example.org"
    assert people["Brand New"]["id"] == "fresh-id"
    # The email column is empty on the other rows: an empty cell clears the field, as the file says.
    assert people["Phone Renamed"]["email"] is None
    # An external id found by email is filled in; a different one already there is a clash, not an update.
    tenant.contact(name="Has Crm", email="has@example.org", external_id="crm-1")
    clash = send(tenant, "name,email,external_id\nHas Crm,has@example.org,crm-2\nNo Crm,mail@example.org,crm-3\n")
    assert clash["rejections"] == [
        {
            "line": 2,
            "reason": "email matches contact "
            + by_name(tenant)["Has Crm"]["id"]
            + ", whose external_id is 'crm-1', not 'crm-2'",
        }
    ]
    assert by_name(tenant)["No Crm"]["external_id"] == "crm-3"  # renamed, and given the CRM id


def test_a_row_matching_two_contacts_is_rejected_not_guessed(tenant: Tenant) -> None:
    first = tenant.contact(name="Twin A", email="twin@example.org")
    second = tenant.contact(name="Twin B", email="twin@example.org")
    tenant.contact(name="House A", phone="555-201-7777")
    tenant.contact(name="House B", phone="555-201-7777")
    answer = send(tenant, "name,email,phone\nTwin,twin@example.org,\nHouse,,555 201 7777\n")
    assert counts(answer) == (0, 0, 0, 2)
    ids = ", ".join(sorted([first["id"], second["id"]]))
    assert answer["rejections"][0]["reason"] == (
        f"email 'twin@example.org' matches 2 contacts ({ids}); add an id or external_id column to say which one"
    )
    assert answer["rejections"][1]["reason"].startswith("phone +15552017777 matches 2 contacts")
    # A contact with an email of its own is someone else: a row with another email creates its own contact.
    tenant.contact(name="Mum", email="mum@example.org", phone="555-201-8888")
    kid = send(tenant, "name,email,phone\nKid,kid@example.org,555-201-8888\n")
    assert [(r["matched_by"], r["action"]) for r in kid["rows"]] == [(None, "created")]


def test_rows_sharing_a_phone_in_one_file(tenant: Tenant) -> None:
    """A phone on several rows never matches (it cannot say which of them is which): rows with an email or an
    external id are imported by those; a row with nothing but the shared phone is rejected."""
    body = (
        "name,email,phone,external_id\n"
        "Mum,mum@example.org,555-201-6666,\n"
        "Dad,,555-201-6666,crm-dad\n"
        "Someone,,555-201-6666,\n"
    )
    answer = send(tenant, body)
    assert counts(answer) == (2, 0, 0, 1)
    assert answer["rejections"] == [
        {
            "line": 4,
            "reason": "phone +15552016666 is on several rows of the file (first on line 2); with no id, external_id "
            "or email this row cannot be told apart from the others",
        }
    ]
    assert counts(send(tenant, body)) == (0, 0, 2, 1)


def test_export_then_import_round_trips_in_csv_and_json_lines(tenant: Tenant, make_tenant: Any) -> None:
    tenant.contact(
        name="Ada",
        email="ada@example.org",
        phone="(555) 201-3344",
        county="Kent",
        tags=["a", "b"],
        metadata={"nested": {"x": [1, "two"]}, "é": "ü"},
        external_id="org/1",
        role="Captain",
        timezone="Europe/London",
    )
    tenant.contact(name='Comma, "Quoted"\nNewline', organization="Library")
    tenant.contact(name="Bare")  # no key to match on but its id
    mine = every_contact(tenant)
    for fmt in ("csv", "jsonl"):
        exported = tenant.admin.get(EXPORT, params={"format": fmt})
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"].startswith("text/csv" if fmt == "csv" else "application/x-ndjson")
        assert exported.headers["content-disposition"] == f'attachment; filename="contacts.{fmt}"'
        headers = CSV if fmt == "csv" else JSONL
        again = send(tenant, exported.content, headers)
        assert counts(again) == (0, 0, 3, 0), again
        assert {r["matched_by"] for r in again["rows"]} == {"id"}
        elsewhere = make_tenant()
        copied = send(elsewhere, exported.content, headers)
        assert counts(copied) == (3, 0, 0, 0)
        theirs = every_contact(elsewhere)
        fields = (
            "id",
            "name",
            "email",
            "phone",
            "phone_e164",
            "county",
            "organization",
            "role",
            "external_id",
            "timezone",
            "tags",
            "metadata",
        )
        assert sorted(({k: c[k] for k in fields} for c in theirs), key=lambda c: c["id"]) == sorted(
            ({k: c[k] for k in fields} for c in mine), key=lambda c: c["id"]
        )
    rows = list(csv.reader(io.StringIO(tenant.admin.get(EXPORT).text)))
    assert rows[0] == [
        "id",
        "external_id",
        "name",
        "email",
        "phone",
        "county",
        "organization",
        "role",
        "timezone",
        "tags",
        "metadata",
        "phone_e164",
        "opted_out",
        "created_at",
        "updated_at",
    ]
    ada = next(row for row in rows if row[2] == "Ada")
    assert ada[8] == "Europe/London"
    assert ada[9] == "a;b"
    assert json.loads(ada[10]) == {"nested": {"x": [1, "two"]}, "é": "ü"}
    assert json.loads(ada[12]) == {}


@pytest.mark.slow
def test_export_takes_the_list_filters_and_pages_through_the_tenant(tenant: Tenant) -> None:
    lines = "".join(
        f"Voter {i},v{i}@example.org,{'Kent' if i % 2 else 'Adams'},{'x' if i % 3 == 0 else ''}\n" for i in range(1_200)
    )
    assert send(tenant, "name,email,county,tags\n" + lines)["created"] == 1_200
    every = tenant.admin.get(EXPORT, params={"format": "jsonl"}).text.splitlines()
    assert len(every) == 1_200  # more than two pages of the store's list
    assert len({json.loads(line)["id"] for line in every}) == 1_200
    kent = list(csv.DictReader(io.StringIO(tenant.admin.get(EXPORT, params={"county": "Kent", "tag": "x"}).text)))
    assert len(kent) == len([i for i in range(1_200) if i % 2 and i % 3 == 0])
    assert {row["county"] for row in kent} == {"Kent"}
    bad = tenant.admin.get(EXPORT, params={"format": "xml"})
    assert bad.status_code == 422


def test_wrong_type_and_roles(tenant: Tenant) -> None:
    for content_type in ("application/json", "text/plain", "text/csv; charset=latin-1", None):
        headers = {"Content-Type": content_type} if content_type else {}
        answer = tenant.admin.post(IMPORT, content=b"name\nAda\n", headers=headers)
        assert answer.status_code == 415, (content_type, answer.text)
        assert "send the file as text/csv, or as JSON lines with application/x-ndjson" in answer.json()["detail"]
    assert (
        tenant.admin.post(IMPORT, content=b"name\nAda\n", headers={"Content-Type": "text/csv; charset=UTF-8"}).json()[
            "created"
        ]
        == 1
    )
    viewer = tenant.as_role("viewer")
    assert viewer.post(IMPORT, content=b"name\nBob\n", headers=CSV).status_code == 403
    assert viewer.get(EXPORT).status_code == 200
    assert tenant.as_role("staff").post(IMPORT, content=b"name\nBob\n", headers=CSV).status_code == 200
    assert tenant.as_role("volunteer").get(EXPORT).status_code == 403


@pytest.mark.slow
def test_an_import_larger_than_its_limit_is_413_before_it_is_read(tenant: Tenant) -> None:
    address = urlsplit(tenant.server.base_url)
    request = (
        f"POST {IMPORT} HTTP/1.1\r\nHost: {address.netloc}\r\nAuthorization: Bearer {tenant.admin_token}\r\n"
        "Content-Type: text/csv\r\nContent-Length: 400000000\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(request.encode())
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):  # the headers and the body
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        answer = received.decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "larger than the import limit of 268435456 bytes (CBW_IMPORT_MAX_BYTES)" in answer
    # A file larger than the JSON body limit (1 MiB) is fine here.
    big = "name,email,notes\n" + "".join(f"P {i},p{i}@example.org,{'n' * 400}\n" for i in range(3_000))
    assert len(big) > 1_048_576
    assert send(tenant, big)["created"] == 3_000


def test_the_same_idempotency_key_replays_the_answer(tenant: Tenant) -> None:
    headers = {**CSV, "Idempotency-Key": "import-1"}
    first = tenant.admin.post(IMPORT, content=b"name\nAda\n", headers=headers)
    again = tenant.admin.post(IMPORT, content=b"name\nAda\n", headers=headers)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    assert len(every_contact(tenant)) == 1
    other = tenant.admin.post(IMPORT, content=b"name\nBob\n", headers=headers)
    assert other.status_code == 422  # the same key with another file
    dry = tenant.admin.post(IMPORT, content=b"name\nAda\n", headers=headers, params={"dry_run": "true"})
    assert dry.status_code == 422  # a dry run is another request


@pytest.mark.slow
def test_a_file_over_5000_rows_answers_202_with_a_job(tenant: Tenant) -> None:
    """The job itself (a worker, a kill -9) is tests/system/test_contacts_import_jobs.py: this server runs none."""
    rows = "".join(f"Voter {i},v{i}@example.org\n" for i in range(5_001))
    asked = tenant.admin.post(IMPORT, content=("name,email\n" + rows).encode(), headers=CSV, params={"dry_run": "true"})
    assert asked.status_code == 202, asked.text
    job = asked.json()
    assert asked.headers["location"] == f"/api/jobs/{job['id']}"
    assert (job["kind"], job["status"], job["progress"]) == ("contacts_import", "queued", {"done": 0, "total": 5_001})
    assert job["params"]["dry_run"] is True
    assert tenant.admin.post(f"/api/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert every_contact(tenant) == []
    five_thousand = "name,email\n" + "".join(f"Voter {i},v{i}@example.org\n" for i in range(5_000))
    assert send(tenant, five_thousand, dry_run="true")["created"] == 5_000  # up to 5,000: inside the request


def test_a_refused_import_is_not_stored_and_can_be_sent_again(tenant: Tenant) -> None:
    with tenant.server.client() as nobody:
        anonymous = nobody.post(IMPORT, content=b"name\nAda\n", headers=CSV)
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"]
    wrong = tenant.admin.post(
        IMPORT, content=b"name\nCy\n", headers={"Content-Type": "text/plain", "Idempotency-Key": "k2"}
    )
    assert wrong.status_code == 415
    right = tenant.admin.post(IMPORT, content=b"name\nCy\n", headers={**CSV, "Idempotency-Key": "k2"})
    assert right.status_code == 200, right.text  # a 415 keeps no answer for the key
    assert right.json()["created"] == 1
