"""Contact files: reading a CSV or JSON-lines file into import items, and writing contacts out in either format.

Reading is two streaming passes over a file on disk (the request body is spooled there first), never the whole
file in memory:

1. `prepare` reads every record, refuses a malformed file (`MalformedFile`, 422: undecodable bytes, a quoted field
   cut off at the end, no `name` column, a NUL byte, a line too long, a JSON line that is not an object), checks
   each row as the contacts API would (bad email, empty name, a phone that does not parse, more fields than the
   header, duplicate id / external id / email inside the file), and writes one normalised item per row to a second
   file, in file order: `{"line", "reject"}` or `{"line", "fields", "metadata", "phone_e164", ...}`. That file is
   this process's own, read back by the same interpreter: `marshal` (JSON's types, exactly) is a fraction of the
   cost of JSON to write and read, each item behind its length.
2. `items` reads that file back, turning rows that only a shared phone could match into rejections (a phone repeated
   in the file is never used to match), and yields the items; the import writes them a batch per transaction.

Only hashes of the keys seen (ids, external ids, emails, phones) are kept between records, to find duplicates, in
flat arrays (`seen_keys.py`).
"""

from __future__ import annotations

import csv
import io
import json
import marshal
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError

from ..errors import InvalidInput
from ..models.consent import Channel
from ..models.contacts import Contact, ContactCreate
from ..models.imports import FileFormat
from .row_checks import e164, plain_email
from .seen_keys import SeenKeys

# Columns (or JSON keys) a row may write, as ContactCreate names them; `id` only when creating.
WRITABLE = (
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
)
# What an export adds beside them; an import reads past these (they are the server's to set), so an export reads
# back unchanged instead of filling `metadata` with them.
READ_ONLY = ("phone_e164", "created_at", "updated_at", "workflow_instance_ids", "tenant")
# Opt-outs a file may add but never take away: moving contacts between systems keeps every refusal, and no
# spreadsheet quietly opts a person back in (that is an admin's `DELETE /api/contacts/{id}/opt-out`).
ADD_ONLY = "opted_out"
EXPORTED = (*WRITABLE, "phone_e164", "opted_out", "created_at", "updated_at")
TEXT_FIELDS = ("external_id", "email", "phone", "county", "organization", "role", "timezone")

MAX_LINE_BYTES = 1024 * 1024  # one physical line of the file
MAX_FIELD_CHARS = 128 * 1024  # one CSV field (the csv module's own default limit)
csv.field_size_limit(MAX_FIELD_CHARS)


class MalformedFile(InvalidInput):
    """The file as a whole cannot be read: nothing of it is imported (422, the line and the reason)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, errors=[{"field": "body", "message": detail}])


@dataclass
class Prepared:
    """The outcome of the first pass: the items file, how many rows it holds, and what the second pass needs."""

    path: Path
    rows: int
    rejected: int
    repeated_phones: set[int] = field(default_factory=set)  # hashes of E.164 phones on more than one row
    first_phone_line: dict[int, int] = field(default_factory=dict)  # ... and the first line of each

    def items(self) -> Iterator[dict[str, Any]]:
        """Every row's item in file order (the second pass)."""
        with self.path.open("rb") as stream:
            while head := stream.read(4):
                item: dict[str, Any] = marshal.loads(stream.read(int.from_bytes(head, "little")))
                phone = item.get("phone_e164")
                if phone is not None and "reject" not in item and hash(phone) in self.repeated_phones:
                    if not (item["fields"].get("id") or item["fields"].get("external_id") or item.get("email_key")):
                        first = self.first_phone_line[hash(phone)]
                        item = {
                            "line": item["line"],
                            "reject": f"phone {phone} is on several rows of the file (first on line {first}); "
                            "with no id, external_id or email this row cannot be told apart from the others",
                        }
                    else:
                        item["phone_match"] = False
                yield item

    def chunks(self, size: int) -> Iterator[list[dict[str, Any]]]:
        """The items, `size` at a time."""
        chunk: list[dict[str, Any]] = []
        for item in self.items():
            chunk.append(item)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ reading records
def _lines(stream: BinaryIO) -> Iterator[tuple[int, str]]:
    """The file's physical lines, decoded as UTF-8 (a BOM at the start is dropped), with their numbers."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise MalformedFile(f"line {number}: longer than {MAX_LINE_BYTES // 1024} KiB; is this a contacts file?")
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedFile(
                f"line {number}: not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                "save the file as UTF-8 (with or without BOM)"
            ) from None
        if "\x00" in text:
            raise MalformedFile(f"line {number}: holds a NUL byte; this is not a text file")
        yield number, text


@dataclass
class Record:
    line: int
    values: dict[str, Any]
    problem: str | None = None  # a row the header cannot read (more fields than it has)


def _csv_records(stream: BinaryIO) -> Iterator[Record]:
    lines = _lines(stream)
    at = {"line": 0}

    def feed() -> Iterator[str]:
        for number, text in lines:
            at["line"] = number
            yield text

    reader = csv.reader(feed(), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise MalformedFile("the file is empty: a CSV file starts with a header row naming its columns")
        names = [name.strip() for name in header]
        if "name" not in names:
            shown = ", ".join(repr(n) for n in names[:8]) or "none"
            raise MalformedFile(f"line 1: the header has no `name` column (columns: {shown}); is it a CSV file?")
        for position, name in enumerate(names, 1):
            if not name:
                raise MalformedFile(f"line 1: column {position} of the header has no name")
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise MalformedFile(f"line 1: the header names the column {name!r} twice")
            seen.add(name)
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                return
            if not row:
                continue  # a blank line
            if len(row) > len(names):
                yield Record(start, {}, f"has {len(row)} fields, more than the header's {len(names)}")
                continue
            yield Record(start, dict(zip(names, row, strict=False)))  # fewer fields: the rest are empty
    except csv.Error as exc:
        raise MalformedFile(f"line {at['line']}: not valid CSV ({exc}); nothing was imported") from None


def _jsonl_records(stream: BinaryIO) -> Iterator[Record]:
    for number, text in _lines(stream):
        if not text.strip():
            continue
        try:
            value = json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            raise MalformedFile(f"line {number}: not valid JSON ({exc}); nothing was imported") from None
        if not isinstance(value, dict):
            raise MalformedFile(f"line {number}: a JSON-lines contacts file holds one JSON object per line")
        yield Record(number, value)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def records(stream: BinaryIO, fmt: FileFormat) -> Iterator[Record]:
    return _csv_records(stream) if fmt is FileFormat.CSV else _jsonl_records(stream)


# ------------------------------------------------------------------------------------------------ one row
def _reasons(exc: ValidationError) -> str:
    """A row's validation errors as the contacts API words them (`field: message; ...`)."""
    said = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "row"
        message = "required" if error.get("type") == "missing" else error.get("msg", "invalid value")
        said.append(f"{where}: {message}")
    return "; ".join(said[:5]) + (f"; and {len(said) - 5} more" if len(said) > 5 else "")


class RowProblem(Exception):
    """One row cannot be imported; the message is its reason."""


def _csv_fields(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(contact fields given, other columns) of a CSV row: every cell is text, an empty cell clears a field."""
    given: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in values.items():
        text = value if isinstance(value, str) else ""
        if name == ADD_ONLY:
            given[name] = _channels(text)
            continue
        if name in READ_ONLY:
            continue
        if name not in WRITABLE:
            if text != "":
                extra[name] = text
            continue
        if name == "tags":
            given["tags"] = [tag.strip() for tag in text.split(";") if tag.strip()]
        elif name == "metadata":
            if text.strip() == "":
                given["metadata"] = {}
            else:
                try:
                    parsed = json.loads(text, parse_constant=_no_constant)
                except ValueError:
                    raise RowProblem('metadata: not a JSON object (write it as {"key": "value"})') from None
                if not isinstance(parsed, dict):
                    raise RowProblem('metadata: not a JSON object (write it as {"key": "value"})')
                given["metadata"] = parsed
        elif name == "id":
            if text.strip():
                given["id"] = text.strip()
        elif name == "name":
            given["name"] = text
        else:
            given[name] = text if text.strip() else None
    return given, extra


def _jsonl_fields(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(contact fields given, other keys) of a JSON line: keys left out leave a field as it is, null clears it."""
    given: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in values.items():
        if name == ADD_ONLY:
            given[name] = _channels(value)
            continue
        if name in READ_ONLY:
            continue
        if name not in WRITABLE:
            if value is not None:
                extra[name] = value
            continue
        if name == "tags":
            if isinstance(value, str):
                value = [tag.strip() for tag in value.split(";") if tag.strip()]
            given["tags"] = [] if value is None else value
        elif name == "metadata":
            given["metadata"] = {} if value is None else value
        elif name == "id":
            if value is not None:
                given["id"] = value
        else:
            given[name] = value
    return given, extra


def _channels(value: Any) -> list[str]:
    """The channels an `opted_out` cell names: a JSON object (as exported: channel to time), a JSON list, or
    names separated by `;`; empty for none. Raises RowProblem for anything else or an unknown channel."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("{", "[")):
            try:
                value = json.loads(text, parse_constant=_no_constant)
            except ValueError:
                raise RowProblem("opted_out: not a JSON object of channels, nor channels separated by ;") from None
        else:
            value = [part.strip() for part in text.split(";") if part.strip()]
    if value is None:
        value = []
    if isinstance(value, dict):
        value = list(value)
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise RowProblem("opted_out: not a JSON object of channels, nor channels separated by ;")
    known = [channel.value for channel in Channel]
    if unknown := [name for name in value if name not in known]:
        raise RowProblem(f"opted_out: {unknown[0]!r} is not a channel ({', '.join(known)})")
    return list(dict.fromkeys(value))


def normalise(values: dict[str, Any], fmt: FileFormat, region: str) -> dict[str, Any]:
    """A row as the import writes it: `fields` (validated, only those the row gives), how its `metadata` is
    written (`replace` with the row's, `merge` its other columns into the contact's, or None: left as it is),
    the E.164 phone. Raises RowProblem with the reason."""
    given, extra = (_csv_fields if fmt is FileFormat.CSV else _jsonl_fields)(values)
    opt_outs = given.pop(ADD_ONLY, [])
    name = given.get("name")
    if "name" not in given or name is None or (isinstance(name, str) and not name.strip()):
        raise RowProblem("name: empty (every contact needs a name)")
    mode: str | None = None
    if "metadata" in given:
        mode = "replace"
        if isinstance(given["metadata"], dict):
            given["metadata"] = {**given["metadata"], **extra}
    elif extra:
        mode = "merge"
        given["metadata"] = extra
    email = given.get("email")
    plain = plain_email(email) if isinstance(email, str) else None  # then the model need not check it again
    try:
        body = ContactCreate.model_validate(given if plain is None else {**given, "email": None})
    except ValidationError as exc:
        raise RowProblem(_reasons(exc)) from None
    fields = body.model_dump(mode="json", include=set(given))
    if plain is not None:
        fields["email"] = plain
    phone_e164 = None
    if body.phone is not None and body.phone.strip():
        phone_e164 = e164(body.phone, region)
        if phone_e164 is None:
            raise RowProblem(
                f"phone: {body.phone!r} could not be read as a phone number (for region {region}; a number "
                "elsewhere needs its country code, such as +44)"
            )
    return {"fields": fields, "metadata": mode, "phone_e164": phone_e164, "opt_outs": opt_outs}


# ------------------------------------------------------------------------------------------------ the first pass
def prepare(source: Path, fmt: FileFormat, region: str, work_dir: str | None = None) -> Prepared:
    """Read the whole file once: raises MalformedFile (nothing imported), else the items file of every row."""
    handle, name = tempfile.mkstemp(prefix="cbw-import-items-", suffix=".bin", dir=work_dir)
    out = os.fdopen(handle, "wb")
    prepared = Prepared(Path(name), 0, 0)
    keys = SeenKeys()  # hash of (kind, value) -> the first line holding it
    phones = SeenKeys()
    try:
        with out, source.open("rb") as stream:
            for record in records(stream, fmt):
                prepared.rows += 1
                item = _item(record, fmt, region, keys)
                if "reject" in item:
                    prepared.rejected += 1
                else:
                    phone = item.get("phone_e164")
                    if phone is not None:
                        key = hash(phone)
                        if phones.setdefault(key, record.line) != record.line:
                            prepared.repeated_phones.add(key)
                blob = marshal.dumps(item)
                out.write(len(blob).to_bytes(4, "little"))
                out.write(blob)
        prepared.first_phone_line = {key: phones.get(key) or 0 for key in prepared.repeated_phones}
    except BaseException:
        prepared.discard()
        raise
    if prepared.rows == 0:
        prepared.discard()
        raise MalformedFile(
            "the file holds no contacts (nothing after the header)"
            if fmt is FileFormat.CSV
            else "the file holds no contacts (no JSON line)"
        )
    return prepared


_KEY_NAMES = {"i": "id", "x": "external_id", "e": "email"}


def _item(record: Record, fmt: FileFormat, region: str, keys: SeenKeys) -> dict[str, Any]:
    if record.problem is not None:
        return {"line": record.line, "reject": record.problem}
    try:
        item = normalise(record.values, fmt, region)
    except RowProblem as problem:
        return {"line": record.line, "reject": str(problem)}
    fields = item["fields"]
    email = fields.get("email")
    row_keys = [("i", fields.get("id")), ("x", fields.get("external_id")), ("e", email.lower() if email else None)]
    for kind, value in row_keys:
        if value is None:
            continue
        first = keys.get(hash((kind, value)))
        if first is not None:
            return {"line": record.line, "reject": f"duplicate {_KEY_NAMES[kind]} {value!r}: line {first} has it too"}
    for kind, value in row_keys:
        if value is not None:
            keys.setdefault(hash((kind, value)), record.line)
    if email:
        item["email_key"] = email.lower()
    return {"line": record.line, **item, "phone_match": True}


# ------------------------------------------------------------------------------------------------ writing
def csv_header() -> str:
    return _csv_line(EXPORTED)


def _csv_line(cells: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue()


def export_values(contact: Contact) -> dict[str, Any]:
    """The exported fields of a contact, as JSON values."""
    data = contact.model_dump(mode="json", include=set(EXPORTED))
    return {name: data.get(name) for name in EXPORTED}


def csv_row(contact: Contact) -> str:
    """One CSV record: empty for null, tags `;`-joined, metadata and opt-outs as compact JSON (`{}` when empty)."""
    values = export_values(contact)
    cells = []
    for name in EXPORTED:
        value = values[name]
        if name == "tags":
            cells.append(";".join(value or []))
        elif name in ("metadata", "opted_out"):
            cells.append(json.dumps(value or {}, ensure_ascii=False, separators=(",", ":")))
        else:
            cells.append("" if value is None else str(value))
    return _csv_line(cells)


def jsonl_row(contact: Contact) -> str:
    return json.dumps(export_values(contact), ensure_ascii=False, separators=(",", ":")) + "\n"


def format_of(path: Path) -> FileFormat:
    """A file's format by its extension: `.csv`, or `.jsonl` / `.ndjson` for JSON lines."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return FileFormat.CSV
    if suffix in (".jsonl", ".ndjson"):
        return FileFormat.JSONL
    raise InvalidInput(f"{path.name}: name a .csv, .jsonl or .ndjson file (the format is read from the extension)")
