"""CSV import of clients: every valid row is added, every invalid row is reported.

The rules are the services' (``services.client_errors``); rows are checked in Python, the
phones already known are found with one query per chunk, and the new clients are created
by ``services.create_clients`` (bulk INSERTs, with their ``client.created`` events), so
100,000 rows take seconds. A duplicate phone (already a client, or
earlier in the same file) makes the row invalid.

The file has a header row naming its columns: ``phone`` and ``timezone`` are required,
``operator_code`` (taken from the phone when empty) and ``tag`` are optional.
"""

from __future__ import annotations

import codecs
import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from mailing import selectors, services
from mailing.actors import Actor
from mailing.rules import IMPORT_MAX_ROWS, operator_code_of

logger = logging.getLogger("mailing.imports")

REQUIRED_COLUMNS = ("phone", "timezone")
OPTIONAL_COLUMNS = ("operator_code", "tag")
CHUNK = 5000


@dataclass
class RowError:
    line: int
    phone: str
    reason: str


@dataclass
class ImportResult:
    created: int = 0
    rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    file_error: str = ""

    @property
    def ok(self) -> bool:
        return not self.file_error


def _reason(errors: dict[str, list[str]]) -> str:
    return " ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items())


def import_clients_csv(chunks: Iterable[bytes], *, actor: Actor | None = None) -> ImportResult:
    """Import clients from the bytes of a UTF-8 CSV file (an uploaded file's chunks)."""
    decoder = codecs.iterdecode(chunks, "utf-8-sig")
    result = ImportResult()
    try:
        reader = csv.reader(_lines(decoder))
        header = next(reader, None)
        if header is None:
            result.file_error = "The file is empty."
            return result
        columns = [name.strip().lower() for name in header]
        missing = [name for name in REQUIRED_COLUMNS if name not in columns]
        if missing:
            result.file_error = (
                f"The header row must name the columns {', '.join(REQUIRED_COLUMNS)} "
                f"(optional: {', '.join(OPTIONAL_COLUMNS)}); missing: {', '.join(missing)}."
            )
            return result
        index = {
            name: columns.index(name)
            for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
            if name in columns
        }
        pending: list[tuple[int, dict[str, str]]] = []
        seen: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            result.rows += 1
            if result.rows > IMPORT_MAX_ROWS:
                result.file_error = f"The file has more than {IMPORT_MAX_ROWS:,} rows; split it."
                return result
            if len(row) != len(columns):
                result.errors.append(
                    RowError(line, "", f"Expected {len(columns)} cells, found {len(row)}.")
                )
                continue
            values = {name: row[i].strip() for name, i in index.items()}
            phone = values["phone"]
            fields = {
                "phone": phone,
                "operator_code": values.get("operator_code") or operator_code_of(phone),
                "tag": values.get("tag", ""),
                "timezone": values["timezone"],
            }
            errors = services.client_errors(fields)
            if errors:
                result.errors.append(RowError(line, phone, _reason(errors)))
                continue
            if phone in seen:
                result.errors.append(
                    RowError(line, phone, f"Duplicate phone: already on line {seen[phone]}.")
                )
                continue
            seen[phone] = line
            pending.append((line, fields))
            if len(pending) >= CHUNK:
                result.created += _insert(pending, result, actor)
                pending = []
        if pending:
            result.created += _insert(pending, result, actor)
    except UnicodeDecodeError:
        result.file_error = "The file is not UTF-8 text."
    except csv.Error as exc:
        result.file_error = f"The file is not valid CSV: {exc}."
    result.errors.sort(key=lambda error: error.line)
    logger.info(
        "clients imported: %d created, %d invalid rows",
        result.created,
        len(result.errors),
        extra={"clients_created": result.created, "invalid_rows": len(result.errors)},
    )
    return result


def _lines(decoded: Iterable[str]) -> Iterable[str]:
    """Whole lines from decoded chunks (chunk borders fall anywhere)."""
    rest = ""
    for piece in decoded:
        rest += piece
        *lines, rest = rest.split("\n")
        for line in lines:
            yield line + "\n"
    if rest:
        yield rest


def _insert(
    pending: list[tuple[int, dict[str, str]]], result: ImportResult, actor: Actor | None
) -> int:
    """Create the chunk's clients whose phone is not taken yet; report the others."""
    taken = selectors.existing_phones([fields["phone"] for _, fields in pending])
    fresh = []
    for line, fields in pending:
        if fields["phone"] in taken:
            result.errors.append(
                RowError(line, fields["phone"], "Duplicate phone: a client with it already exists.")
            )
        else:
            fresh.append(fields)
    return services.create_clients(fresh, actor=actor)
