"""CSV import of clients, from the files people have, checked before anything is written.

A file is UTF-8 (with or without a BOM), UTF-16 with its BOM (Excel's "Unicode text") or
Windows-1251 (a Russian-locale Excel's "CSV"), delimited by commas, semicolons or tabs
(``csv.Sniffer``, confirmed by the header). The header row names the columns: ``phone``
and ``timezone`` are required, ``operator_code`` (taken from the phone when empty) and
``tag`` are optional. Phones are read in any common notation (``mailing.phones``).

Staff upload a file (``start``): a q2 job checks it (``check``: every row against the
services' rules, the phones already known found with one query per chunk, nothing
written) and keeps the counts and the first rows with their errors; staff see that
preview, choose whether existing clients (same phone) are updated, and confirm
(``confirm``); a second job imports it (``run``) in chunks, through
``services.create_clients`` and ``clients.update_by_phone``. Both jobs keep their counters
on the ``ClientImport`` row, which the page polls, and every invalid row as a
``ClientImportError`` (its page shows the first ones, a CSV download has them all).

A row is invalid when a rule refuses it, when its phone appeared earlier in the file, or,
without the update choice, when its phone is already a client's. Blank lines are skipped
but count toward ``IMPORT_MAX_ROWS`` lines.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from mailing import clients, phones, selectors, services
from mailing.actors import Actor
from mailing.models import ClientImport, ClientImportError
from mailing.rules import (
    FILENAME_MAX_LENGTH,
    IMPORT_CELL_MAX_LENGTH,
    IMPORT_MAX_ROWS,
    IMPORT_PREVIEW_ROWS,
    ImportStatus,
    operator_code_of,
)

logger = logging.getLogger("mailing.imports")

REQUIRED_COLUMNS = ("phone", "timezone")
OPTIONAL_COLUMNS = ("operator_code", "tag")
# What people call the columns in their spreadsheets.
ALIASES = {
    "phone number": "phone",
    "telephone": "phone",
    "телефон": "phone",
    "time zone": "timezone",
    "tz": "timezone",
    "часовой пояс": "timezone",
    "operator code": "operator_code",
    "operator": "operator_code",
    "код оператора": "operator_code",
    "тег": "tag",
}
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
CHUNK = 5000
# A valid row's outcome in the preview, in words.
NEW_ROW = "a new client"
EXISTING_ROW = "already a client: updated if you choose so, else skipped"
SNIFF_BYTES = 64 * 1024


class FileRefused(Exception):
    """The whole file cannot be imported; the message says why, in words for staff."""


@dataclass
class RowError:
    line: int
    phone: str
    reason: str


@dataclass
class ImportResult:
    """What a pass over a file found (a check) or did (an import)."""

    rows: int = 0  # data rows, blank lines not counted
    new: int = 0
    existing: int = 0
    created: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)
    invalid: int = 0
    file_error: str = ""
    encoding: str = ""
    delimiter: str = ""
    columns: list[str] = field(default_factory=list)
    preview: list[dict[str, object]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.file_error


# --- Reading a file -------------------------------------------------------------------


def decode(data: bytes) -> tuple[str, str]:
    """The file's text and the name of its encoding."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "UTF-16"
        except UnicodeDecodeError as exc:
            raise FileRefused("The file says it is UTF-16 but is not.") from exc
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[len(codecs.BOM_UTF8) :].decode("utf-8"), "UTF-8"
        except UnicodeDecodeError as exc:
            raise FileRefused("The file says it is UTF-8 but is not.") from exc
    try:
        return data.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1251"), "Windows-1251"
    except UnicodeDecodeError as exc:
        raise FileRefused("The file is not text in UTF-8 or Windows-1251.") from exc


def _column_name(cell: str) -> str:
    name = cell.strip().strip('"').strip().lower().replace("_", " ")
    name = ALIASES.get(name, name)
    return name.replace(" ", "_")


def _columns(header_line: str, delimiter: str) -> list[str]:
    return [_column_name(cell) for cell in next(csv.reader([header_line], delimiter=delimiter))]


def detect_delimiter(text: str) -> str:
    """The delimiter: the sniffer's guess when the header reads right with it, else the
    first one with which the header names the required columns."""
    sample = text[:SNIFF_BYTES]
    if len(text) > SNIFF_BYTES and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    header_line = sample.split("\n", 1)[0]
    candidates = list(DELIMITERS)
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters="".join(DELIMITERS)).delimiter
        candidates.insert(0, sniffed)
    except csv.Error:
        candidates.sort(key=header_line.count, reverse=True)
    for delimiter in candidates:
        if all(name in _columns(header_line, delimiter) for name in REQUIRED_COLUMNS):
            return delimiter
    return candidates[0]


@dataclass
class _Row:
    line: int
    cells: list[str]
    phone: str = ""  # as written
    fields: dict[str, str] | None = None
    update: dict[str, str] = field(default_factory=dict)
    error: str = ""


def _reason(errors: dict[str, list[str]]) -> str:
    return " ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items())


def _read(text: str, result: ImportResult) -> Iterator[_Row]:
    """The file's data rows, each checked against the rules (not yet against the database);
    fills the result's encoding-independent facts (delimiter, columns, row count)."""
    delimiter = detect_delimiter(text)
    result.delimiter = DELIMITERS.get(delimiter, delimiter)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None or not any(cell.strip() for cell in header):
        raise FileRefused("The file is empty.")
    columns = [_column_name(cell) for cell in header]
    while columns and not columns[-1]:
        columns.pop()  # a spreadsheet's empty trailing columns
    result.columns = columns
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise FileRefused(
            f"The header row must name the columns {', '.join(REQUIRED_COLUMNS)} "
            f"(optional: {', '.join(OPTIONAL_COLUMNS)}); missing: {', '.join(missing)}. "
            f"It reads: {', '.join(columns) or 'nothing'}."
        )
    index = {
        name: columns.index(name)
        for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
        if name in columns
    }
    seen: dict[str, int] = {}
    for cells in reader:
        line = reader.line_num
        if line > IMPORT_MAX_ROWS + 1:
            raise FileRefused(f"The file has more than {IMPORT_MAX_ROWS:,} lines; split it.")
        if not any(cell.strip() for cell in cells):
            continue
        result.rows += 1
        while len(cells) > len(columns) and not cells[-1].strip():
            cells = cells[:-1]
        row = _Row(line, cells)
        if len(cells) != len(columns):
            row.error = f"Expected {len(columns)} cells, found {len(cells)}."
            yield row
            continue
        values = {name: cells[i].strip() for name, i in index.items()}
        row.phone = values["phone"][:IMPORT_CELL_MAX_LENGTH]
        phone = phones.normalise(values["phone"])
        fields = {
            "phone": phone,
            "operator_code": values.get("operator_code") or operator_code_of(phone),
            "tag": values.get("tag", ""),
            "timezone": values["timezone"],
        }
        errors = services.client_errors(fields)
        if errors:
            row.error = _reason(errors)
        elif phone in seen:
            row.error = f"Duplicate phone: already on line {seen[phone]}."
        else:
            seen[phone] = line
            row.fields = fields
            # What an update of an existing client changes: the cells the file gives.
            row.update = {"phone": phone, "timezone": fields["timezone"]}
            if "tag" in index:
                row.update["tag"] = fields["tag"]
            if values.get("operator_code"):
                row.update["operator_code"] = fields["operator_code"]
        yield row


# --- One pass: a check or an import -----------------------------------------------------

Progress = Callable[[ImportResult, list[RowError], int], None]


def process(
    data: bytes,
    *,
    write: bool,
    update_existing: bool = False,
    actor: Actor | None = None,
    on_chunk: Progress | None = None,
    keep_errors: bool = True,
) -> ImportResult:
    """Check (``write=False``) or import a file. ``on_chunk(result, new_errors, line)`` is
    called after each chunk; with ``keep_errors=False`` errors go only to it."""
    result = ImportResult()
    try:
        text, result.encoding = decode(data)
        _pass(text, result, write, update_existing, actor, on_chunk, keep_errors)
    except FileRefused as refused:
        result.file_error = str(refused)
    except csv.Error as exc:
        result.file_error = f"The file is not valid CSV: {exc}."
    result.errors.sort(key=lambda error: error.line)
    return result


def _pass(
    text: str,
    result: ImportResult,
    write: bool,
    update_existing: bool,
    actor: Actor | None,
    on_chunk: Progress | None,
    keep_errors: bool,
) -> None:
    if write and text.count("\n") > IMPORT_MAX_ROWS + 1:
        raise FileRefused(f"The file has more than {IMPORT_MAX_ROWS:,} lines; split it.")
    pending: list[_Row] = []
    chunk_errors: list[RowError] = []

    def flush(line: int) -> None:
        chunk_errors.extend(_settle(pending, result, write, update_existing, actor))
        result.invalid += len(chunk_errors)
        if keep_errors:
            result.errors.extend(chunk_errors)
        if on_chunk is not None:
            on_chunk(result, list(chunk_errors), line)
        pending.clear()
        chunk_errors.clear()

    line = 0
    for row in _read(text, result):
        line = row.line
        if len(result.preview) < IMPORT_PREVIEW_ROWS:
            result.preview.append(
                {"line": row.line, "cells": row.cells, "outcome": row.error, "valid": not row.error}
            )
        if row.error:
            chunk_errors.append(RowError(row.line, row.phone, row.error))
        else:
            pending.append(row)
        if len(pending) + len(chunk_errors) >= CHUNK:
            flush(line)
    flush(line)


def _settle(
    rows: list[_Row],
    result: ImportResult,
    write: bool,
    update_existing: bool,
    actor: Actor | None,
) -> list[RowError]:
    """Sort a chunk's valid rows into new and existing clients; write them when asked."""
    if not rows:
        return []
    known = selectors.existing_phones([row.fields["phone"] for row in rows if row.fields])
    fresh: list[dict[str, str]] = []
    known_rows: list[dict[str, str]] = []
    errors: list[RowError] = []
    outcome: dict[int, str] = {}
    for row in rows:
        assert row.fields is not None
        if row.fields["phone"] not in known:
            fresh.append(row.fields)
            outcome[row.line] = NEW_ROW
        elif write and not update_existing:
            reason = "Already a client; choose to update existing clients to change it."
            errors.append(RowError(row.line, row.phone, reason))
        else:
            known_rows.append(row.update)
            outcome[row.line] = EXISTING_ROW
    for shown in result.preview:
        if shown["line"] in outcome:
            shown["outcome"] = outcome[int(shown["line"])]
    result.new += len(fresh)
    result.existing += len(known_rows)
    if write:
        result.created += services.create_clients(fresh, actor=actor)
        if known_rows:
            result.updated += clients.update_by_phone(known_rows, actor=actor)
    return errors


def import_clients_csv(
    chunks: Iterable[bytes],
    *,
    actor: Actor | None = None,
    update_existing: bool = False,
) -> ImportResult:
    """Import a file at once, in the caller's process (tests, benchmarks, commands)."""
    result = process(b"".join(chunks), write=True, update_existing=update_existing, actor=actor)
    _log(result)
    return result


def _log(result: ImportResult) -> None:
    logger.info(
        "clients imported: %d created, %d updated, %d invalid rows",
        result.created,
        result.updated,
        result.invalid,
        extra={
            "clients_created": result.created,
            "clients_updated": result.updated,
            "invalid_rows": result.invalid,
        },
    )


# --- The background jobs ------------------------------------------------------------------


def start(data: bytes, filename: str, *, actor: Actor | None = None) -> ClientImport:
    """Keep an uploaded file and queue its check; returns the import to follow."""
    limit = settings.CLIENT_IMPORT_MAX_BYTES
    if len(data) > limit:
        raise FileRefused(f"The file is larger than {limit:,} bytes; split it.")
    record = ClientImport.objects.create(
        filename=filename[:FILENAME_MAX_LENGTH],
        data=data,
        size=len(data),
        actor_id=actor.user_id if actor else None,
        actor_name=actor.name if actor else "",
    )
    _enqueue("mailing.imports.check", record.pk)
    return record


def confirm(record: ClientImport, *, update_existing: bool) -> bool:
    """Queue the import of a checked file (a conditional UPDATE: confirming twice, or a
    file that cannot be imported, starts nothing); True when it was queued."""
    queued = ClientImport.objects.filter(
        pk=record.pk, status=ImportStatus.CHECKED, file_error=""
    ).update(status=ImportStatus.IMPORTING, update_existing=update_existing, rows_done=0)
    if queued:
        _enqueue("mailing.imports.run", record.pk)
    return bool(queued)


def _enqueue(task: str, pk: int) -> None:
    from django_q.tasks import async_task

    # After the commit: the worker must find the row and its status.
    transaction.on_commit(lambda: async_task(task, pk, task_name=f"client import {pk}"))


def _reporter(record: ClientImport) -> Progress:
    def report(result: ImportResult, errors: list[RowError], line: int) -> None:
        ClientImportError.objects.bulk_create(
            [
                ClientImportError(
                    client_import_id=record.pk, line=e.line, phone=e.phone, reason=e.reason
                )
                for e in errors
            ],
            batch_size=1000,
        )
        ClientImport.objects.filter(pk=record.pk).update(**_counters(result))

    return report


def _counters(result: ImportResult) -> dict[str, int]:
    return {
        "rows_done": result.rows,
        "new": result.new,
        "existing": result.existing,
        "invalid": result.invalid,
        "created": result.created,
        "updated": result.updated,
    }


def check(pk: int) -> None:
    """q2 job: check an uploaded file; nothing about clients is written."""
    record = ClientImport.objects.get(pk=pk)
    if record.status != ImportStatus.CHECKING:
        return
    ClientImport.objects.filter(pk=pk).update(rows=_line_estimate(bytes(record.data)))
    result = process(bytes(record.data), write=False, on_chunk=_reporter(record), keep_errors=False)
    ClientImport.objects.filter(pk=pk, status=ImportStatus.CHECKING).update(
        status=ImportStatus.CHECKED if result.ok else ImportStatus.FAILED,
        file_error=result.file_error,
        encoding=result.encoding,
        delimiter=result.delimiter,
        columns=result.columns,
        preview=result.preview,
        rows=result.rows,
        finished_at=None if result.ok else timezone.now(),
        **_counters(result),
    )


def run(pk: int) -> None:
    """q2 job: import a checked, confirmed file (its check's errors are replaced)."""
    record = ClientImport.objects.get(pk=pk)
    if record.status != ImportStatus.IMPORTING:
        return
    ClientImportError.objects.filter(client_import_id=pk).delete()
    ClientImport.objects.filter(pk=pk).update(invalid=0, new=0, existing=0)
    actor = Actor(user_id=record.actor_id, name=record.actor_name) if record.actor_name else None
    result = process(
        bytes(record.data),
        write=True,
        update_existing=record.update_existing,
        actor=actor,
        on_chunk=_reporter(record),
        keep_errors=False,
    )
    ClientImport.objects.filter(pk=pk).update(
        status=ImportStatus.DONE if result.ok else ImportStatus.FAILED,
        file_error=result.file_error,
        finished_at=timezone.now(),
        data=b"",  # done with: the clients and the errors are what is kept
        **_counters(result),
    )
    _log(result)


def _line_estimate(data: bytes) -> int:
    """Rows to expect, for the progress bar while the check runs (lines but the header)."""
    return max(data.count(b"\n") - 1, 0) + (0 if data.endswith(b"\n") else 1)
