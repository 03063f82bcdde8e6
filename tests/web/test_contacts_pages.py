"""/contacts and /contacts/{id} over HTTP on SQLite (ONE_STORE: a page only calls the services, whose storage the store
and sign-in suites test on every store): search, filters, pages, the import with its per-row report (and a large
file's job), the export, one contact with its instances and timeline, who may see and do what, and that what a user
typed is shown as text."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from conftest import ONE_STORE, Tenant
from pages import form_fields, form_token, signed_in, text_of

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def upload(
    client: httpx.Client, content: str | bytes, *, name: str = "people.csv", dry_run: bool = False, **extra: str
) -> httpx.Response:
    """Send the import form as a browser does: the file, the dry-run box when ticked, the form's token."""
    page = client.get("/contacts")
    assert page.status_code == 200, page.text
    action, hidden = form_fields(page, "/contacts/import")
    data = {**hidden, **({"dry_run": "1"} if dry_run else {}), **extra}
    body = content.encode() if isinstance(content, str) else content
    return client.post(action, data=data, files={"file": (name, body, "application/octet-stream")})


def csv_of(*rows: dict[str, str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def next_link(page: httpx.Response) -> str | None:
    found = re.search(r'<a class="button" href="([^"]+)" rel="next">', page.text)
    return found.group(1).replace("&amp;", "&") if found else None


def names_in(page: httpx.Response) -> list[str]:
    """The contacts listed in the table, in order."""
    return [
        re.sub(r"<[^>]+>", "", n) for n in re.findall(r'<th scope="row"><a href="/contacts/[^"]+">(.*?)</a>', page.text)
    ]


# ---------------------------------------------------------------------------------------------------- the list
@ONE_STORE
def test_the_list_shows_each_contact_and_links_to_it(tenant: Tenant) -> None:
    ada = tenant.contact(
        name="Ada Lovelace", email="ada@example.org", phone="(555) 201-3344", county="Kent", tags=["voter", "donor"]
    )
    tenant.contact(name="Grace Hopper")
    client, _ = signed_in(tenant, "staff")
    page = client.get("/contacts")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    text = text_of(page)
    assert "All contacts" in text
    assert names_in(page) == ["Grace Hopper", "Ada Lovelace"]  # newest first
    assert f'href="/contacts/{ada["id"]}"' in page.text
    row = page.text[page.text.index("Ada Lovelace") :]
    for shown in ("ada@example.org", "(555) 201-3344", "Kent", "<li>voter</li>", "<li>donor</li>"):
        assert shown in row
    assert 'href="/contacts/export.csv"' in page.text
    assert '<label for="q">' in page.text
    assert '<label for="f-county">' in page.text
    assert '<link rel="stylesheet" href="/static/contacts.css">' in page.text
    assert '<script src="/static/contacts.js" defer></script>' in page.text
    assert "Next page" not in text
    assert 'action="/contacts/import"' in page.text
    assert 'enctype="multipart/form-data"' in page.text
    assert "cbworkflow contacts import" in text  # bigger files go another way, and the page says so
    for static in ("/static/contacts.css", "/static/contacts.js"):
        assert client.get(static).status_code == 200


@ONE_STORE
def test_an_empty_tenant_says_so(tenant: Tenant) -> None:
    client, _ = signed_in(tenant, "admin")
    text = text_of(client.get("/contacts"))
    assert "No contacts yet." in text


@ONE_STORE
def test_search_by_name_email_or_phone(tenant: Tenant) -> None:
    tenant.contact(name="Ada Lovelace", email="countess@example.org", phone="(555) 201-3344")
    tenant.contact(name="Abe Lincoln")
    tenant.contact(name="Bob Abbot", email="bob@example.org")
    client, _ = signed_in(tenant, "viewer")
    assert names_in(client.get("/contacts", params={"q": "love"})) == ["Ada Lovelace"]
    assert names_in(client.get("/contacts", params={"q": "countess"})) == ["Ada Lovelace"]
    assert names_in(client.get("/contacts", params={"q": "555-201-3344"})) == ["Ada Lovelace"]
    assert names_in(client.get("/contacts", params={"q": "Ab"})) == ["Abe Lincoln"]  # the start of a name
    found = client.get("/contacts", params={"q": "abb"})
    assert names_in(found) == ["Bob Abbot"]
    assert 'value="abb"' in found.text  # the box keeps what was typed
    assert "Contacts matching “abb”" in text_of(found)
    assert 'href="/contacts"' in found.text  # back to everyone
    none = client.get("/contacts", params={"q": "zzz"})
    assert none.status_code == 200
    assert "No contact matches this search." in text_of(none)
    blank = client.get("/contacts", params={"q": "   "})
    assert len(names_in(blank)) == 3


@ONE_STORE
def test_a_search_that_cannot_be_run_is_shown_next_to_the_form(tenant: Tenant) -> None:
    tenant.contact(name="Ada")
    client, _ = signed_in(tenant, "staff")
    bad = client.get("/contacts", params={"q": "ada\x01"})
    assert bad.status_code == 422
    assert "Control characters cannot be searched for." in text_of(bad)
    assert '<input id="q"' in bad.text
    long = client.get("/contacts", params={"q": "x" * 600})
    assert long.status_code == 422
    assert "at most 500 characters" in text_of(long)


@ONE_STORE
def test_filters_by_county_tag_and_organization(tenant: Tenant) -> None:
    tenant.contact(name="Kent voter", county="Kent", tags=["voter"], organization="Acme")
    tenant.contact(name="Kent donor", county="Kent", tags=["donor", "voter"])
    tenant.contact(name="Sussex voter", county="Sussex", tags=["voter"])
    client, _ = signed_in(tenant, "staff")
    assert names_in(client.get("/contacts", params={"county": "Kent"})) == ["Kent donor", "Kent voter"]
    assert names_in(client.get("/contacts", params={"tag": "donor"})) == ["Kent donor"]
    both = client.get("/contacts", params={"tag": "voter donor", "county": "Kent"})  # several tags in the box
    assert names_in(both) == ["Kent donor"]
    assert "Contacts in Kent, tagged voter and donor" in text_of(both)
    assert 'value="voter donor"' in both.text  # kept in the form
    assert "open" in both.text[both.text.index('<details class="filters"') :][:40]
    repeated = client.get("/contacts?tag=voter&tag=donor")
    assert names_in(repeated) == ["Kent donor"]
    assert names_in(client.get("/contacts", params={"organization": "Acme"})) == ["Kent voter"]
    export = re.search(r'href="(/contacts/export\.csv[^"]*)"', both.text)
    assert export
    assert "county=Kent" in export.group(1)
    assert "tag=voter&amp;tag=donor" in export.group(1)
    none = client.get("/contacts", params={"county": "Nowhere"})
    assert "No contact matches these filters." in text_of(none)


@ONE_STORE
def test_a_filter_that_is_not_valid_is_shown_next_to_the_form(tenant: Tenant) -> None:
    tenant.contact(name="Someone", tags=["voter"])
    client, _ = signed_in(tenant, "staff")
    bad = client.get("/contacts", params={"tag": "Not A Tag!"})
    assert bad.status_code == 422
    text = text_of(bad)
    assert "'not' is not a tag" in text or "'tag!' is not a tag" in text
    too_many = client.get("/contacts", params={"tag": " ".join(f"t{i}" for i in range(25))})
    assert too_many.status_code == 422
    assert "at most 20 tags" in text_of(too_many)


@ONE_STORE
def test_pages_of_fifty_with_a_next_page_link_that_keeps_the_filters(tenant: Tenant) -> None:
    rows = [{"name": f"Kent {i:02d}", "county": "Kent"} for i in range(55)]
    rows += [{"name": f"Sussex {i}", "county": "Sussex"} for i in range(3)]
    client, _ = signed_in(tenant, "staff")
    assert upload(client, csv_of(*rows)).status_code == 200
    first = client.get("/contacts", params={"county": "Kent"})
    assert len(names_in(first)) == 50
    link = next_link(first)
    assert link is not None
    query = parse_qs(urlsplit(link).query)
    assert query["county"] == ["Kent"]
    assert query["cursor"]
    second = client.get(link)
    assert second.status_code == 200
    assert len(names_in(second)) == 5
    assert set(names_in(first) + names_in(second)) == {f"Kent {i:02d}" for i in range(55)}
    assert next_link(second) is None
    assert "First page" in text_of(second)
    searched = client.get("/contacts", params={"q": "kent"})  # a search pages with its own cursor
    assert len(names_in(searched)) == 50
    search_next = next_link(searched)
    assert search_next is not None
    assert "q=kent" in search_next
    assert len(names_in(client.get(search_next))) == 5
    stale = client.get("/contacts", params={"cursor": "not-a-cursor"})
    assert stale.status_code == 422
    assert "That page link is out of date" in text_of(stale)


# ---------------------------------------------------------------------------------------------------- import
@ONE_STORE
def test_an_import_shows_its_report_row_by_row(tenant: Tenant) -> None:
    existing = tenant.contact(name="Ada Lovelace", email="ada@example.org")
    tenant.contact(name="Same Already", external_id="crm-7", county="Kent")
    content = csv_of(
        {"name": "Ada Lovelace", "email": "ADA@example.org", "county": "Kent", "external_id": "", "precinct": "12"},
        {"name": "Grace Hopper", "email": "grace@example.org", "county": "", "external_id": "", "precinct": ""},
        {"name": "", "email": "nameless@example.org", "county": "", "external_id": "", "precinct": ""},
        {"name": "Bad Mail", "email": "not-an-email", "county": "", "external_id": "", "precinct": ""},
        {"name": "Same Already", "email": "", "county": "Kent", "external_id": "crm-7", "precinct": ""},
    )
    client, _ = signed_in(tenant, "staff")
    answer = upload(client, content)
    assert answer.status_code == 200, answer.text
    text = text_of(answer)
    assert "Imported people.csv" in text
    assert re.search(r"Added 1 Updated 1 Unchanged 1 Not imported 2", text), text
    assert "Rows not imported" in text
    assert re.search(r"4 name", text)  # line 4 (the header is line 1): the empty name
    assert re.search(r"5 email", text)  # line 5: the email that is not one
    assert f'href="/contacts/{existing["id"]}"' in answer.text
    assert "Updated (found by its email)" in text
    updated = tenant.admin.get(f"/api/contacts/{existing['id']}").json()
    assert updated["county"] == "Kent"
    assert updated["metadata"] == {"precinct": "12"}
    again = upload(client, content)
    assert re.search(r"Added 0 Updated 0 Unchanged 3 Not imported 2", text_of(again))


@ONE_STORE
def test_a_dry_run_changes_nothing(tenant: Tenant) -> None:
    client, _ = signed_in(tenant, "staff")
    answer = upload(client, csv_of({"name": "Would Be"}), dry_run=True)
    assert answer.status_code == 200, answer.text
    text = text_of(answer)
    assert "Dry run of people.csv" in text
    assert "Dry run: nothing was changed." in text
    assert re.search(r"Would be added 1", text)
    assert tenant.admin.get("/api/contacts").json()["items"] == []


@ONE_STORE
def test_a_json_lines_file_is_imported(tenant: Tenant) -> None:
    client, _ = signed_in(tenant, "admin")
    lines = "\n".join(json.dumps(row) for row in ({"name": "Mary Jackson", "tags": ["voter"]}, {"name": "Dorothy"}))
    answer = upload(client, lines, name="people.jsonl")
    assert answer.status_code == 200, answer.text
    assert re.search(r"Added 2 ", text_of(answer))
    names = {c["name"]: c for c in tenant.admin.get("/api/contacts").json()["items"]}
    assert names["Mary Jackson"]["tags"] == ["voter"]


@ONE_STORE
def test_a_file_that_cannot_be_imported_is_shown_next_to_the_form(tenant: Tenant) -> None:
    tenant.contact(name="Already here")
    client, _ = signed_in(tenant, "staff")
    malformed = upload(client, "email,phone\na@example.org,1\n", dry_run=True)
    assert malformed.status_code == 422
    text = text_of(malformed)
    assert "people.csv was not imported" in text
    assert "name" in text
    assert "Nothing was changed." in text
    assert 'id="import-error"' in malformed.text
    assert 'name="dry_run" type="checkbox" value="1" checked' in malformed.text  # the box stays ticked
    assert "Already here" in text  # the page around the form is the list
    wrong = upload(client, "name\nX\n", name="people.xlsx")
    assert wrong.status_code == 422
    assert "choose a .csv or a .jsonl file" in text_of(wrong)
    page = client.get("/contacts")
    nothing = client.post(
        "/contacts/import", data={"csrf": form_token(page)}, files={"file": ("", b"", "application/octet-stream")}
    )
    assert nothing.status_code == 422
    assert "Choose a file to import." in text_of(nothing)
    assert [c["name"] for c in tenant.admin.get("/api/contacts").json()["items"]] == ["Already here"]


@ONE_STORE
def test_a_file_over_the_pages_limit_is_refused_before_it_is_read(tenant: Tenant) -> None:
    client, _ = signed_in(tenant, "staff")
    page = client.get("/contacts")
    assert "Files up to 1 MB can be imported here." in text_of(page)
    assert 'data-max-bytes="1048576"' in page.text  # contacts.js refuses a bigger file before sending it
    big = "name\n" + "".join(f"Person {i:07d}\n" for i in range(80_000))
    refused = upload(client, big)
    assert refused.status_code == 413
    assert refused.headers["content-type"].startswith("text/html")  # a page for the browser, not JSON
    assert "cbworkflow contacts import" in text_of(refused)
    assert tenant.admin.get("/api/contacts").json()["items"] == []


@ONE_STORE
def test_the_import_form_needs_its_token(tenant: Tenant) -> None:
    client, _ = signed_in(tenant, "staff")
    refused = client.post("/contacts/import", files={"file": ("people.csv", b"name\nSneaky\n", "text/csv")})
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("text/html")
    wrong = client.post(
        "/contacts/import", data={"csrf": "forged"}, files={"file": ("people.csv", b"name\nSneaky\n", "text/csv")}
    )
    assert wrong.status_code == 403
    page = client.get("/contacts")
    other_site = client.post(
        "/contacts/import",
        data={"csrf": form_token(page)},
        files={"file": ("people.csv", b"name\nSneaky\n", "text/csv")},
        headers={"Origin": "https://evil.example"},
    )
    assert other_site.status_code == 403
    assert tenant.admin.get("/api/contacts").json()["items"] == []


@ONE_STORE
def test_a_large_file_is_imported_by_a_job_whose_page_shows_its_progress(
    tenant: Tenant, make_tenant: Callable[[], Tenant]
) -> None:
    rows = "".join(f"Person {i},p{i}@example.org\n" for i in range(5_001))
    client, _ = signed_in(tenant, "staff")
    answer = upload(client, "name,email\n" + rows, dry_run=True)
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert re.fullmatch(r"/contacts/jobs/[0-9a-f]{12}", location)
    page = client.get(location)
    assert page.status_code == 200
    text = text_of(page)
    assert "Dry run in the background" in text
    assert "Waiting to start: 0 of 5,001 rows done." in text  # no worker runs in the test server
    assert '<meta http-equiv="refresh" content="3">' in page.text
    assert "<progress" in page.text
    job_id = location.rsplit("/", 1)[1]
    assert tenant.admin.get(f"/api/jobs/{job_id}").json()["kind"] == "contacts_import"
    viewer, _ = signed_in(tenant, "viewer")
    assert viewer.get(location).status_code == 200
    other, _ = signed_in(make_tenant(), "admin")
    assert other.get(location).status_code == 404  # another tenant's job
    assert client.get("/contacts/jobs/000000000000").status_code == 404
    assert client.get("/contacts/jobs/NOT%20AN%20ID").status_code == 404
    assert tenant.admin.post(f"/api/jobs/{job_id}/cancel").status_code == 200
    ended = client.get(location)
    assert "Cancelled: 0 of 5,001 rows done." in text_of(ended)
    assert 'http-equiv="refresh"' not in ended.text  # nothing more to wait for


# ---------------------------------------------------------------------------------------------------- export
@ONE_STORE
def test_the_export_is_the_apis_csv_with_the_filters(tenant: Tenant) -> None:
    tenant.contact(name="Kent One", county="Kent", tags=["voter"], metadata={"precinct": "12"})
    tenant.contact(name="Kent Two", county="Kent", email="two@example.org")
    tenant.contact(name="Sussex", county="Sussex")
    client, _ = signed_in(tenant, "viewer")
    page = client.get("/contacts", params={"county": "Kent"})
    link = re.search(r'href="(/contacts/export\.csv[^"]*)"', page.text)
    assert link
    exported = client.get(link.group(1).replace("&amp;", "&"))
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    api = tenant.admin.get("/api/contacts/export", params={"county": "Kent"})
    assert exported.content == api.content
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["name"] for r in rows] == ["Kent Two", "Kent One"]
    everyone = client.get("/contacts/export.csv")
    assert len(list(csv.DictReader(io.StringIO(everyone.text)))) == 3
    tagged = client.get("/contacts/export.csv", params={"tag": "voter"})
    assert [r["name"] for r in csv.DictReader(io.StringIO(tagged.text))] == ["Kent One"]
    assert client.get("/contacts/export.csv", params={"tag": "Not!"}).status_code == 422


# ---------------------------------------------------------------------------------------------------- one contact
@ONE_STORE
def test_a_contact_with_its_fields_instances_and_timeline(tenant: Tenant) -> None:
    contact = tenant.contact(
        name="Ada Lovelace",
        email="ada@example.org",
        phone="(555) 201-3344",
        county="Kent",
        organization="Analytical Society",
        role="Countess",
        external_id="crm-1",
        tags=["voter"],
        metadata={"precinct": "12", "household": {"size": 2}},
    )
    instance = tenant.instance(contact["id"], start=True)
    assert tenant.admin.post(f"/api/contacts/{contact['id']}/tags/donor").status_code == 200
    client, _ = signed_in(tenant, "viewer")
    page = client.get(f"/contacts/{contact['id']}")
    assert page.status_code == 200
    text = text_of(page)
    for shown in (
        "Ada Lovelace",
        "ada@example.org",
        "(555) 201-3344",
        "+15552013344",
        "Kent",
        "Analytical Society",
        "Countess",
        "crm-1",
        contact["id"],
        "precinct 12",
        'household {"size": 2}',
    ):
        assert shown in text, shown
    assert 'href="tel:+15552013344"' in page.text
    assert 'href="mailto:ada%40example.org"' in page.text  # URL-encoded: an address cannot add fields
    assert '<a href="/contacts?tag=voter">voter</a>' in page.text
    assert '<a href="/contacts?tag=donor">donor</a>' in page.text
    workflows = text[text.index("Workflows") :]
    assert "County outreach" in workflows
    assert "Active" in workflows or "Waiting" in workflows
    assert "Initial phone call" in workflows
    assert f'href="/instances/{instance["id"]}"' in page.text
    timeline = page.text[page.text.index('id="timeline"') :]
    events = tenant.admin.get(f"/api/contacts/{contact['id']}/timeline").json()["items"]
    assert events[0]["type"] == "contact_tag_added"  # newest first, as the page lists them
    first = text_of(httpx.Response(200, text=timeline))
    assert first.index("donor") < first.index("Initial phone call")
    has_opt_outs = "opted_out" in tenant.admin.get(f"/api/contacts/{contact['id']}").json()
    assert ('id="opt-outs"' in page.text) == has_opt_outs  # shown once contacts have opt-outs


@ONE_STORE
def test_a_contacts_timeline_pages_newest_first(tenant: Tenant) -> None:
    contact = tenant.contact(name="Tagged often")
    for i in range(55):
        assert tenant.admin.post(f"/api/contacts/{contact['id']}/tags/t{i:02d}").status_code == 200
    client, _ = signed_in(tenant, "staff")
    page = client.get(f"/contacts/{contact['id']}")
    shown = re.findall(r'<li class="(?:contact_)?tag_added">', page.text)
    assert len(shown) == 50
    older = re.search(r'href="(/contacts/[^"]+\?timeline_cursor=[^"]+)"', page.text)
    assert older
    timeline = page.text[page.text.index('id="timeline"') :]
    assert timeline.index("t54") < timeline.index("t10")  # newest first
    rest = client.get(older.group(1).replace("&amp;", "&"))
    assert rest.status_code == 200
    assert len(re.findall(r'<li class="(?:contact_)?tag_added">', rest.text)) == 5
    assert "t00" in text_of(rest)
    stale = client.get(f"/contacts/{contact['id']}", params={"timeline_cursor": "bogus"})
    assert stale.status_code == 200
    assert "That page link is out of date" in text_of(stale)


@ONE_STORE
def test_a_contact_of_another_tenant_is_not_found(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    contact = tenant.contact(name="Mine")
    other, _ = signed_in(make_tenant(), "admin")
    refused = other.get(f"/contacts/{contact['id']}")
    assert refused.status_code == 404
    assert refused.headers["content-type"].startswith("text/html")
    assert "Mine" not in refused.text
    assert other.get("/contacts/nobody-here").status_code == 404
    assert other.get("/contacts/Not%20An%20Id").status_code == 404
    assert "Mine" not in other.get("/contacts").text
    assert "Mine" not in other.get("/contacts/export.csv").text


# ---------------------------------------------------------------------------------------------------- roles
@ONE_STORE
def test_who_may_see_and_import(tenant: Tenant) -> None:
    contact = tenant.contact(name="Ada")
    volunteer, _ = signed_in(tenant, "volunteer")
    for path in ("/contacts", f"/contacts/{contact['id']}", "/contacts/export.csv", "/contacts/jobs/000000000000"):
        refused = volunteer.get(path)
        assert refused.status_code == 403, path
        assert refused.headers["content-type"].startswith("text/html")
        assert "Ada" not in refused.text
    viewer, _ = signed_in(tenant, "viewer")
    page = viewer.get("/contacts")
    assert page.status_code == 200
    assert 'action="/contacts/import"' not in page.text  # a viewer reads only
    refused = viewer.post(
        "/contacts/import", data={"csrf": form_token(page)}, files={"file": ("p.csv", b"name\nX\n", "text/csv")}
    )
    assert refused.status_code == 403
    assert [c["name"] for c in tenant.admin.get("/api/contacts").json()["items"]] == ["Ada"]
    for role in ("staff", "admin"):
        client, _ = signed_in(tenant, role)
        assert 'action="/contacts/import"' in client.get("/contacts").text
    anonymous = httpx.get(f"{tenant.server.base_url}/contacts", headers={"Accept": "text/html"})
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/login?next=")


# ---------------------------------------------------------------------------------------------------- escaping
@ONE_STORE
def test_what_a_user_typed_is_shown_as_text(tenant: Tenant) -> None:
    contact = tenant.contact(
        name=HOSTILE, county=HOSTILE, organization=HOSTILE, role=HOSTILE, metadata={HOSTILE: HOSTILE}
    )
    template = tenant.admin.post(
        "/api/workflows/county-outreach-v1/clone", json={"id": "hostile", "name": "<script>alert(4)</script>"}
    )
    if template.status_code == 404:
        tenant.template()
        template = tenant.admin.post(
            "/api/workflows/county-outreach-v1/clone", json={"id": "hostile", "name": "<script>alert(4)</script>"}
        )
    assert template.status_code == 201, template.text
    tenant.instance(contact["id"], template_id="hostile", start=True)
    client, _ = signed_in(tenant, "staff")
    pages: list[tuple[httpx.Response, Any]] = [
        (client.get("/contacts"), None),
        (client.get("/contacts", params={"q": "script"}), None),
        (client.get("/contacts", params={"county": HOSTILE}), None),
        (client.get(f"/contacts/{contact['id']}"), "<script>alert(4)</script>"),
        (upload(client, csv_of({"name": HOSTILE, "email": HOSTILE}), name=f"{HOSTILE}.csv"), None),
    ]
    for page, also in pages:
        assert "<script>alert" not in page.text, page.url
        assert "<img src=x" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, page.url
        if also:
            assert also in text_of(page)
    assert HOSTILE in text_of(pages[3][0])
