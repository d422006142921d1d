"""Exports of a filtered list as CSV or .xlsx: keyset chunks read from a scoped query, cells made safe
for spreadsheets, and a file written so that a killed export resumes from its saved position with
every row in the file exactly once.

What to export comes as an `ExportPlan` (built by the list's view from its filters, the data scope of
the person asking and their right to full phone numbers): this module knows nothing of requests.
Memory stays flat however many rows: rows are read `CHUNK` at a time after the last exported id, and
the .xlsx is written by openpyxl's write-only workbook from a spool of JSON lines.

A file export (the job of kind "export", app/jobs/exports.py) writes `<run id>.<ext>.part` under
`export_dir()`, durably, chunk by chunk; after each chunk the caller commits the position
{"after": last id, "bytes": file size, "rows": n}. A resumed run truncates the part file to the
committed size and carries on after the committed id, so rows written after the last commit are
written again exactly once. The finished file is renamed to `<run id>.<ext>`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import func, select

from app.clock import utcnow
from app.models.jobs import EXPORT, FINISHED, JobRun
from app.services.errors import DomainError

FORMATS = ("csv", "xlsx")
MIMETYPES = {"csv": "text/csv; charset=utf-8",
             "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
CHUNK = 2_000
DEFAULT_STREAM_MAX_ROWS = 5_000
DEFAULT_RETENTION_DAYS = 7
BOM = "\ufeff"  # Excel opens a UTF-8 CSV correctly only with it
#: A cell a spreadsheet would run as a formula (CSV injection): = @ tab CR, or + - not before a number.
FORMULA_START = re.compile(r"^(?:[=@\t\r]|[+-](?![\d .]*$))")


@dataclass
class ExportPlan:
    """What one export writes: `query` (an ORM query of the list's model, filters and data scope
    applied), its primary key column `pk`, the translated `headers`, and `row(item)` → the cells."""

    query: object
    pk: object
    headers: list[str]
    row: Callable[[object], list]
    full_phones: bool
    max_rows: int = 0  # 0: no cap
    columns: list[str] = field(default_factory=list)


def check_format(fmt: str | None) -> str:
    fmt = (fmt or "csv").lower()
    if fmt not in FORMATS:
        raise DomainError("Unknown export format %(format)s: choose csv or xlsx", field="format", status=400,
                          format=repr(fmt)[:40])
    return fmt


def stream_max_rows() -> int:
    """Exports of at most this many rows are answered directly; bigger ones run as a job."""
    return int(current_app.config.get("CRM_EXPORT_STREAM_MAX_ROWS", DEFAULT_STREAM_MAX_ROWS))


def retention_days() -> int:
    return int(current_app.config.get("CRM_EXPORT_RETENTION_DAYS", DEFAULT_RETENTION_DAYS))


def chunk_rows() -> int:
    """Rows read, written and checkpointed at a time (CRM_EXPORT_CHUNK_ROWS)."""
    return max(1, int(current_app.config.get("CRM_EXPORT_CHUNK_ROWS") or CHUNK))


def max_rows() -> int:
    return int(current_app.config.get("CRM_EXPORT_MAX_ROWS") or 0)


# --- reading ------------------------------------------------------------------------------------------
def count(query, limit: int | None = None) -> int:
    """Rows `query` selects, counting at most `limit` (a bounded count stays cheap on big tables)."""
    inner = query.order_by(None)
    if limit:
        inner = inner.limit(limit)
    return query.session.scalar(select(func.count()).select_from(inner.subquery())) or 0


def chunks(query, pk, after=None, size: int = CHUNK) -> Iterator[list]:
    """The rows of `query` in id order, `size` at a time, after id `after` (keyset: each chunk is an
    index range on the primary key, however deep the export has got)."""
    ordered = query.order_by(None).order_by(pk)
    while True:
        batch = (ordered.filter(pk > after) if after is not None else ordered).limit(size).all()
        if not batch:
            return
        yield batch
        after = getattr(batch[-1], pk.key)
        if len(batch) < size:
            return


def rows(plan: ExportPlan, after=None, done: int = 0, size: int | None = None) -> Iterator[list[tuple]]:
    """Chunks of (id, cells), stopping at the plan's row cap (`done` rows counted already)."""
    for batch in chunks(plan.query, plan.pk, after, size or chunk_rows()):
        if plan.max_rows:
            batch = batch[:max(0, plan.max_rows - done)]
        if not batch:
            return
        done += len(batch)
        yield [(getattr(item, plan.pk.key), plan.row(item)) for item in batch]


# --- cells --------------------------------------------------------------------------------------------
def cell(value):
    """A value as a spreadsheet cell: numbers stay numbers, the rest is text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return value
    return str(value)


def csv_cell(value) -> str:
    """Text for a CSV cell; one that a spreadsheet would run as a formula gets a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text and FORMULA_START.match(text) else text


def csv_lines(cells_rows: Iterable[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for cells in cells_rows:
        writer.writerow([csv_cell(v) for v in cells])
    return buffer.getvalue()


def stream_csv(plan: ExportPlan, size: int | None = None) -> Iterator[str]:
    """The whole CSV (BOM, header, rows) as text pieces of about one chunk each."""
    yield BOM + csv_lines([plan.headers])
    for batch in rows(plan, size=size):
        yield csv_lines(cells for _id, cells in batch)


def _xlsx_sheet():
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    return workbook, workbook.create_sheet()


def _xlsx_row(sheet, cells: list) -> list:
    """openpyxl runs a text starting with "=" as a formula: such a cell is written as text."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    out = []
    for value in cells:
        if isinstance(value, str):
            value = ILLEGAL_CHARACTERS_RE.sub("", value)
            if value.startswith("="):
                text = WriteOnlyCell(sheet, value)
                text.data_type = "s"
                value = text
        out.append(value)
    return out


def xlsx_bytes(plan: ExportPlan) -> bytes:
    """A small export as an .xlsx file in memory (big ones go through `write_file`)."""
    workbook, sheet = _xlsx_sheet()
    sheet.append(_xlsx_row(sheet, plan.headers))
    for batch in rows(plan):
        for _id, cells in batch:
            sheet.append(_xlsx_row(sheet, [cell(v) for v in cells]))
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


# --- files --------------------------------------------------------------------------------------------
def export_dir() -> str:
    """Where export files wait for their download (CRM_EXPORT_DIR, by default <instance>/exports); the
    web process and the workers must share it."""
    path = current_app.config.get("CRM_EXPORT_DIR") or os.path.join(current_app.instance_path, "exports")
    os.makedirs(path, exist_ok=True)
    return path


def file_path(run_id: int, fmt: str) -> str:
    return os.path.join(export_dir(), f"{int(run_id)}.{check_format(fmt)}")


def part_path(run_id: int, fmt: str) -> str:
    """CSV: the file itself while it grows; .xlsx: a spool of JSON lines (the header first)."""
    return file_path(run_id, fmt) + ".part"


def _append(path: str, size: int, text: str) -> int:
    """Append `text` to `path` once it is cut back to `size` bytes, durably; returns the new size."""
    with open(path, "r+b" if os.path.exists(path) else "wb") as fh:
        fh.truncate(size)
        fh.seek(size)
        fh.write(text.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
        return fh.tell()


def _spool_lines(cells_rows: Iterable[list]) -> str:
    return "".join(json.dumps(cells, ensure_ascii=False, default=str) + "\n" for cells in cells_rows)


def write_file(plan: ExportPlan, fmt: str, run_id: int, position: dict | None,
               checkpoint: Callable[[dict, int], bool], size: int | None = None) -> int:
    """Write the export of run `run_id` from `position` on; returns the rows in the finished file, or
    -1 when `checkpoint` said stop (cancelled). `checkpoint(position, rows)` is called once each chunk
    is on disk and must commit that position (it is where a resumed run carries on)."""
    final, part = file_path(run_id, fmt), part_path(run_id, fmt)
    position = dict(position or {})
    phase = position.get("phase", "rows")
    if phase == "done" or (position and not os.path.exists(part) and os.path.exists(final)):
        return int(position.get("rows", 0))  # finished by an execution that died before its end
    if position and (not os.path.exists(part) or os.path.getsize(part) < int(position.get("bytes", 0))):
        position, phase = {}, "rows"  # the part file lost what was committed (deleted, machine crash): anew
    encode = csv_lines if fmt == "csv" else _spool_lines
    if phase == "rows":
        if not position:  # a fresh start: nothing of an earlier try is kept
            for path in (final, part):
                if os.path.exists(path):
                    os.remove(path)
            header = (BOM + csv_lines([plan.headers])) if fmt == "csv" else _spool_lines([plan.headers])
            position = {"phase": "rows", "after": None, "bytes": _append(part, 0, header), "rows": 0}
            if not checkpoint(position, 0):
                return -1
        for batch in rows(plan, position["after"], position["rows"], size):
            written = _append(part, position["bytes"], encode(cells for _id, cells in batch))
            position = {"phase": "rows", "after": batch[-1][0], "bytes": written,
                        "rows": position["rows"] + len(batch)}
            if not checkpoint(position, position["rows"]):
                return -1
        if fmt == "xlsx":
            position = {**position, "phase": "xlsx"}
            checkpoint(position, position["rows"])
    if fmt == "xlsx":
        _spool_to_xlsx(part, final)
        os.remove(part)
    else:
        os.replace(part, final)
    return int(position["rows"])


def _spool_to_xlsx(spool: str, final: str) -> None:
    """The .xlsx from its spool, a line at a time (memory stays flat); written aside, then renamed."""
    workbook, sheet = _xlsx_sheet()
    with open(spool, encoding="utf-8") as fh:
        for line in fh:
            sheet.append(_xlsx_row(sheet, [cell(v) for v in json.loads(line)]))
    workbook.save(final + ".tmp")
    os.replace(final + ".tmp", final)


def remove_files(run_id: int) -> int:
    """Delete whatever files run `run_id` left (finished or partial); returns how many."""
    removed = 0
    for fmt in FORMATS:
        base = file_path(run_id, fmt)
        for path in (base, base + ".part", base + ".tmp"):
            if os.path.exists(path):
                os.remove(path)
                removed += 1
    return removed


def purge(session, days: int | None = None, now: dt.datetime | None = None, chunk: int = 500) -> int:
    """Delete the files of export runs that ended more than `days` (CRM_EXPORT_RETENTION_DAYS) ago;
    returns how many files. The runs stay, as the record of the exports."""
    days = int(days if days is not None else retention_days())
    if days < 1:
        raise ValueError(f"CRM_EXPORT_RETENTION_DAYS must be at least 1, not {days}")
    cutoff = (now or utcnow()) - dt.timedelta(days=days)
    after, removed = 0, 0
    while True:
        ids = session.scalars(select(JobRun.id).where(
            JobRun.kind == EXPORT, JobRun.status.in_(FINISHED), JobRun.finished_at < cutoff,
            JobRun.id > after).order_by(JobRun.id).limit(chunk)).all()
        if not ids:
            return removed
        removed += sum(remove_files(run_id) for run_id in ids)
        after = ids[-1]


def expired(run: JobRun, now: dt.datetime | None = None) -> bool:
    """True when the file of a finished export run has passed its retention period."""
    days = retention_days()
    return run.finished_at is not None and run.finished_at < (now or utcnow()) - dt.timedelta(days=days)


def audit_details(view_name: str, fmt: str, rows_count: int, full_phones: bool, filters: dict,
                  columns: list[str], run_id: int | None = None) -> tuple[str, dict]:
    """(summary, details) of an export's audit row: who is the audit's own; here which list, its
    filters, how many rows, the format and whether phone numbers were full."""
    summary = (f"{rows_count} rows; {fmt}; full phones: {'yes' if full_phones else 'no'}; "
               f"list {view_name}" + (f"; job #{run_id}" if run_id else "")
               + (f"; filters {json.dumps(filters, ensure_ascii=False)}" if filters else ""))
    details = {"list": view_name, "format": fmt, "rows": rows_count, "full_phones": full_phones,
               "filters": filters, "columns": columns}
    if run_id:
        details["job_run"] = run_id
    return summary, details
