"""`cbworkflow simulate`: every path of a file or a stored template as a table, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import cli, data_dir

from conftest import REFERENCE

__all__ = ["data_dir"]  # the fixture, shared with the CLI's other tests


def test_a_file_s_paths_as_a_table(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    code, out, _ = cli(capsys, "simulate", str(REFERENCE), "--start-at", "2026-10-05T14:00:00Z")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["#", "ends", "after", "path"]
    assert "initial_call (answered_interested) → schedule_followup (elapsed) → followup_text (sent)" in lines[1]
    assert " P3D " in lines[1]
    assert lines[-1] == "20 path(s)"


def test_a_stored_template_with_a_choice_and_a_limit(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    assert cli(capsys, "templates", "load", str(REFERENCE))[0] == 0
    code, out, _ = cli(
        capsys,
        "simulate",
        "county-outreach-v1",
        "--choose",
        "initial_call=answered_not_interested",
        "--max-paths",
        "5",
    )
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3
    assert "declined" in lines[1]
    assert lines[-1] == "1 path(s)"


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["no-such-template"], 1, "no workflow template with id 'no-such-template'"),
        ([str(REFERENCE), "--choose", "initial_call"], 2, "'initial_call' is not NODE=OUTCOME"),
        ([str(REFERENCE), "--start-at", "tomorrow"], 2, "--start-at"),
        ([str(REFERENCE), "--max-paths", "0"], 2, "--max-paths"),
    ],
)
def test_failures_are_one_line(
    capsys: pytest.CaptureFixture[str], data_dir: Path, arguments: list[str], code: int, message: str
) -> None:
    got, _, err = cli(capsys, "simulate", *arguments)
    assert got == code
    last = err.strip().splitlines()[-1]  # after the first start's banner, when the store was made just now
    assert last.startswith("cbworkflow: ")
    assert message in last
