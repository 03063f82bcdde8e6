"""`cbworkflow contacts import FILE` and `contacts export FILE`: inline batches, the report, FILE.rejected.csv."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

import pytest
from test_cli import cli, data_dir  # noqa: F401  (the fixture)

FILE = (
    "name,email,phone,external_id,tags,ward\n"
    "Ada Lovelace,ada@example.org,(555) 201-3344,crm-1,voter,3\n"
    "Bad Mail,not-an-email,,,,\n"
    ",empty@example.org,,,,\n"
    "Grace Hopper,grace@example.org,+1 555 010 9999,crm-2,voter;lead,4\n"
    "Dup,ADA@example.org,,,,\n"
)


def test_import_reports_and_writes_the_rejected_rows_beside_the_file(
    capsys: pytest.CaptureFixture[str],
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    source = tmp_path / "voters.csv"
    source.write_text(FILE)
    code, out, err = cli(capsys, "contacts", "import", str(source), "--dry-run")
    assert code == 0, err
    assert "(dry run: nothing written)" in out
    assert "would be created" in out
    code, out, err = cli(capsys, "contacts", "import", str(source))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{source}: 5 rows"
    assert [line.split()[-1] for line in lines[1:5]] == ["2", "0", "0", "3"]
    assert f"rejected rows (all 3 with their reasons in {source}.rejected.csv):" in out
    assert "  line 3: email: value is not a valid email address" in out
    with (tmp_path / "voters.csv.rejected.csv").open(newline="") as handle:
        rejected = list(csv.reader(handle))
    assert rejected[0] == ["line", "reason"]
    assert [row[0] for row in rejected[1:]] == ["3", "4", "6"]
    assert rejected[3][1] == "duplicate email 'ada@example.org': line 2 has it too"

    exported = tmp_path / "out.jsonl"
    code, out, err = cli(capsys, "contacts", "export", str(exported))
    assert (code, out.strip()) == (0, f"{exported}: 2 contacts"), err
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    people = {row["name"]: row for row in map(json.loads, exported.read_text().splitlines())}
    assert people["Grace Hopper"]["tags"] == ["voter", "lead"]
    assert people["Ada Lovelace"]["metadata"] == {"ward": "3"}
    code, out, _ = cli(capsys, "contacts", "import", str(exported))
    assert code == 0
    assert [line.split()[-1] for line in out.splitlines()[1:5]] == ["0", "0", "2", "0"]
    assert not (tmp_path / "out.jsonl.rejected.csv").exists()  # nothing rejected: no file
    as_csv = tmp_path / "out.csv"
    assert cli(capsys, "contacts", "export", str(as_csv))[0] == 0
    assert as_csv.read_text().splitlines()[0].startswith("id,external_id,name,email,phone")


def test_contacts_errors_are_one_line(capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    assert cli(capsys, "tenants", "list")[0] == 0  # the first start, which shows the generated token, is behind us
    code, _, err = cli(capsys, "contacts", "import", str(tmp_path / "missing.csv"))
    assert (code, err.strip()) == (1, f"cbworkflow: {tmp_path / 'missing.csv'}: no such file")
    code, _, err = cli(capsys, "contacts", "import", "list.txt")
    assert code == 2
    assert "name a .csv, .jsonl or .ndjson file" in err
    cut = tmp_path / "cut.csv"
    cut.write_text('name,email\nAda,a@example.org\n"Cut off\n')
    code, _, err = cli(capsys, "contacts", "import", str(cut))
    assert (code, err.strip()) == (
        1,
        "cbworkflow: line 3: not valid CSV (unexpected end of data); nothing was imported",
    )
    code, _, err = cli(capsys, "contacts", "export", str(tmp_path / "x.csv"), "--tenant", "nobody")
    assert code == 1
    assert "no tenant 'nobody'" in err
    assert not (tmp_path / "x.csv").exists()
