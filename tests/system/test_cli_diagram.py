"""`cbworkflow templates diagram`: a file or a stored template drawn as SVG or Mermaid, with one-line errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_cli import cli, data_dir

from conftest import REFERENCE

__all__ = ["data_dir"]  # the fixture, shared with the CLI's other tests


def test_a_file_drawn_as_svg(capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "outreach.svg"
    code, out, _ = cli(capsys, "templates", "diagram", str(REFERENCE), "-o", str(target))
    assert code == 0
    assert out.strip() == f"{target}: 9 node(s) drawn as SVG"
    root = ET.fromstring(target.read_text())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "Door knock" in target.read_text()


def test_a_stored_template_drawn_as_mermaid(capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path: Path) -> None:
    assert cli(capsys, "templates", "load", str(REFERENCE))[0] == 0
    target = tmp_path / "outreach.mmd"
    code, _, _ = cli(capsys, "templates", "diagram", "county-outreach-v1", "-o", str(target))
    assert code == 0
    text = target.read_text()
    assert "flowchart TD" in text
    assert "Door knock" in text


@pytest.mark.parametrize(
    ("source", "output", "code", "message"),
    [
        ("no-such-template", "x.svg", 1, "no workflow template with id 'no-such-template'"),
        (str(REFERENCE), "x.png", 2, "'x.png' must end in .svg or .mmd"),
        ("missing.json", "x.svg", 1, "missing.json: cannot read (No such file or directory)"),
        (str(REFERENCE), "no/such/folder/x.svg", 1, "no/such/folder/x.svg: cannot write (No such file or directory)"),
    ],
)
def test_failures_are_one_line(
    capsys: pytest.CaptureFixture[str], data_dir: Path, source: str, output: str, code: int, message: str
) -> None:
    cli(capsys, "tenants", "list")  # the first command makes the store and prints its admin token
    got, _, err = cli(capsys, "templates", "diagram", source, "-o", output)
    assert got == code
    assert len(err.strip().splitlines()) == 1
    assert message in err
