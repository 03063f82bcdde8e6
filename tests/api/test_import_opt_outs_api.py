"""Opt-outs in contacts files, on every store: a file may add them (an `opted_out` column: the export's JSON
object, a JSON list, or channels separated by `;`), never take them away; adding them does what any opt-out does
to the contact's instances; an export read back elsewhere keeps every refusal."""

from __future__ import annotations

from typing import Any

from test_contacts_import_api import CSV, EXPORT, JSONL, counts, send

from conftest import Tenant
from flows import one_call


def contact_by_email(tenant: Tenant, email: str) -> dict[str, Any]:
    found = tenant.admin.get("/api/contacts/search", params={"q": email}).json()["items"]
    assert len(found) == 1, found
    return dict(found[0])


def test_a_file_adds_opt_outs_and_never_takes_them_away(tenant: Tenant) -> None:
    existing = tenant.contact(name="Ada", email="ada@example.org")
    tenant.admin.post(f"/api/contacts/{existing['id']}/opt-out", json={"channels": ["mail"]}).raise_for_status()
    tenant.template(one_call())
    made = tenant.admin.post(
        "/api/instances", json={"contact_id": existing["id"], "template_id": "calls", "start": True}
    )
    assert made.status_code == 201, made.text
    body = (
        "name,email,opted_out\r\n"
        "Ada,ada@example.org,phone;sms\r\n"  # adds two to her mail: her call is cancelled (no opted_out outcome)
        'Bea,bea@example.org,"{""email"": ""2026-01-01T00:00:00+00:00""}"\r\n'  # a new contact, refusing email
        "Cal,cal@example.org,\r\n"
        "Dee,dee@example.org,fax\r\n"
    )
    dry = send(tenant, body, dry_run="true")
    assert counts(dry) == (2, 1, 0, 1)
    assert "'fax' is not a channel" in dry["rejections"][0]["reason"]
    assert sorted(contact_by_email(tenant, "ada@example.org")["opted_out"]) == ["mail"]  # the dry run wrote nothing

    done = send(tenant, body)
    assert counts(done) == (2, 1, 0, 1)
    assert sorted(contact_by_email(tenant, "ada@example.org")["opted_out"]) == ["mail", "phone", "sms"]
    assert list(contact_by_email(tenant, "bea@example.org")["opted_out"]) == ["email"]
    assert contact_by_email(tenant, "cal@example.org")["opted_out"] == {}
    assert tenant.admin.get(f"/api/instances/{made.json()['id']}").json()["status"] == "cancelled"
    events = tenant.admin.get(f"/api/contacts/{existing['id']}/timeline").json()["items"]
    [opted] = [e for e in events if e["type"] == "contact_opted_out" and e["data"]["source"] == "import"]
    assert sorted(opted["data"]["channels"]) == ["phone", "sms"]

    again = send(tenant, "name,email,opted_out\r\nAda,ada@example.org,\r\n")
    assert counts(again) == (0, 0, 1, 0)  # an empty cell takes nothing away
    assert sorted(contact_by_email(tenant, "ada@example.org")["opted_out"]) == ["mail", "phone", "sms"]


def test_an_export_read_back_in_another_tenant_keeps_every_refusal(tenant: Tenant, make_tenant: Any) -> None:
    refused = tenant.contact(name="Refused", email="no@example.org")
    tenant.contact(name="Willing", email="yes@example.org")
    tenant.admin.post(f"/api/contacts/{refused['id']}/opt-out", json={"channels": ["sms", "door"]}).raise_for_status()
    for fmt, headers in (("csv", CSV), ("jsonl", JSONL)):
        exported = tenant.admin.get(EXPORT, params={"format": fmt})
        assert exported.status_code == 200
        assert counts(send(tenant, exported.content, headers)) == (0, 0, 2, 0)  # read back unchanged
        elsewhere = make_tenant()
        assert counts(send(elsewhere, exported.content, headers)) == (2, 0, 0, 0)
        assert sorted(contact_by_email(elsewhere, "no@example.org")["opted_out"]) == ["door", "sms"]
        assert contact_by_email(elsewhere, "yes@example.org")["opted_out"] == {}
