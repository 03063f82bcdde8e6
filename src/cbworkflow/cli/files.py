"""Template files for `templates load` and `templates validate`: folders expanded, ids taken from file names.

A file without an `id` is named by its file name, made into a slug, so loading `county-outreach.json` twice
updates one template instead of making a new one with a random id each time.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..ids import SLUG_RE
from ..models.templates import TemplateCreate


class CliError(Exception):
    """A failure to report as one line on stderr (exit status 1)."""


def expand(paths: list[Path]) -> list[Path]:
    """Files as given; a folder stands for every `*.json` directly in it, in name order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.glob("*.json") if p.is_file())
            if not inside:
                raise CliError(f"{path}: the folder has no .json files")
            found.extend(inside)
        else:
            found.append(path)
    return found


def id_from_name(path: Path) -> str:
    """The slug a template id must be, made from the file's name: `County Outreach.json` is `county-outreach`."""
    ascii_stem = unicodedata.normalize("NFKD", path.stem).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9_-]+", "-", ascii_stem).strip("-_")
    if not SLUG_RE.fullmatch(slug):
        raise CliError(
            f'{path}: the file has no "id" and its name cannot be made into one (a template id is 1 to 64 '
            'lowercase letters, digits, "-" or "_"); add an "id" to the file or rename it'
        )
    return slug


def read_template(path: Path, *, name_by_file: bool = False) -> TemplateCreate:
    """The template in a file; with `name_by_file`, a file without an `id` gets `id_from_name`."""
    try:
        data: Any = json.loads(path.read_text())
    except IsADirectoryError:
        raise CliError(f"{path}: a folder, not a template file") from None
    except OSError as exc:
        raise CliError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"{path}: not valid JSON ({exc})") from None
    if name_by_file and isinstance(data, dict) and data.get("id") is None:
        data["id"] = id_from_name(path)
    try:
        return TemplateCreate.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(template)"
        raise CliError(f"{path}: {where}: {first['msg']}") from None
