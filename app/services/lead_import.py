"""Lead file imports: accept an upload (check, record, store, start its job run) and import it chunk by
chunk, resuming where the last committed chunk stopped.

A LeadImport row is the record of one file: every data row ends up in exactly one of created_rows,
duplicate_rows and error_rows (with its line's messages in `errors`). Those counts commit together with
each chunk of leads, so their sum is also the import's own cursor: a run that was killed, or an import run
again, skips that many rows and carries on — and each row has the idempotency key
"import:<file sha256>:<line>", so even a chunk written twice creates nothing twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.models.employee import Employee
from app.models.jobs import LEAD_IMPORT, JobRun
from app.models.sales import LeadImport
from app.services import audit, runner
from app.services.errors import DomainError
from app.services.leads import Vocabulary, intake, parse

# Column headers accepted in import files (English or Chinese).
HEADERS = {
    "name": "name", "姓名": "name", "phone": "phone", "手机号": "phone", "电话": "phone",
    "source": "source", "来源": "source", "线索来源": "source", "campaign": "campaign", "活动": "campaign",
    "活动代码": "campaign", "utm_campaign": "campaign",  # the marketing campaign's tracking code
    "product_line": "product_line", "产品线": "product_line", "region": "region", "地区": "region",
    "intention_level": "intention_level", "意向等级": "intention_level", "consult_note": "consult_note",
    "咨询内容": "consult_note", "备注": "consult_note",
}
MAX_IMPORT_ROWS = 50_000
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
CHUNK = 500
TARGET = "lead_import"  # the JobRun target_type of an import


# --- stored uploads -------------------------------------------------------------------------------------
def upload_dir() -> str:
    """Where uploads wait for their job (CRM_UPLOAD_DIR, by default <instance>/uploads/leads); the web
    process and the workers must share it."""
    path = current_app.config.get("CRM_UPLOAD_DIR") or os.path.join(current_app.instance_path, "uploads",
                                                                    "leads")
    os.makedirs(path, exist_ok=True)
    return path


def stored_path(record: LeadImport) -> str:
    """Where the upload of `record` waits: "<import id><.csv|.xlsx>" until its import has finished."""
    ext = ".xlsx" if record.filename.lower().endswith(".xlsx") else ".csv"
    return os.path.join(upload_dir(), f"{record.id}{ext}")


# --- reading files --------------------------------------------------------------------------------------
def rows(filename: str, data: bytes):
    """(line number, {field: value}) for each data row of a CSV or .xlsx file (blank rows skipped)."""
    lower = filename.lower()
    if lower.endswith(".xlsx"):
        from openpyxl import load_workbook

        try:
            sheet = load_workbook(io.BytesIO(data), read_only=True, data_only=True).active
        except Exception as exc:
            raise DomainError("Not a readable .xlsx file: %(error)s", field="file", status=400,
                              error=str(exc)) from None
        raw_rows = sheet.iter_rows(values_only=True)
    elif lower.endswith(".csv"):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("gb18030", errors="replace")  # Excel in China saves CSV as GBK
        raw_rows = csv.reader(io.StringIO(text))
    else:
        raise DomainError("Upload a .csv or .xlsx file", field="file", status=400)
    header = next(raw_rows, None)
    if not header:
        raise DomainError("The file is empty", field="file", status=400)
    columns = [HEADERS.get(str(h or "").strip().lower(), HEADERS.get(str(h or "").strip())) for h in header]
    if "phone" not in columns or "product_line" not in columns:
        raise DomainError("The first row must name the columns, with at least phone and product_line",
                          field="file", status=400)
    for line, raw in enumerate(raw_rows, start=2):
        if raw is None or all(v in (None, "") for v in raw):
            continue
        yield line, {c: _cell(v) for c, v in zip(columns, raw, strict=False) if c}


def _cell(value) -> str:
    """A cell as text; Excel stores a phone typed as a number as 13812341234.0."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def count_rows(filename: str, data: bytes) -> int:
    """How many data rows a lead file holds (also checks that it is readable and names its columns)."""
    return sum(1 for _ in rows(filename, data))


# --- accept ---------------------------------------------------------------------------------------------
@dataclass
class Accepted:
    record: LeadImport
    run: JobRun
    imported_before: int | None  # the id of an earlier import of the same file, if any


def accept(session, filename: str | None, data: bytes | None, created_by: int | None) -> Accepted:
    """Check an upload now (type, size, header, row count), record it, store it, and start its job run.
    The caller commits (the run's RQ job is enqueued then)."""
    if not filename:
        raise DomainError("Choose a .csv or .xlsx file", field="file")
    filename = os.path.basename(filename.replace("\\", "/"))[:255]
    if not filename.lower().endswith((".csv", ".xlsx")):
        raise DomainError("Upload a .csv or .xlsx file", field="file")
    data = data or b""
    if len(data) > MAX_UPLOAD_BYTES:
        raise DomainError("The file is larger than %(mb)d MB", field="file", mb=MAX_UPLOAD_BYTES // 2**20)
    total = count_rows(filename, data)
    if total == 0:
        raise DomainError("The file has no data rows", field="file")
    if total > MAX_IMPORT_ROWS:
        raise DomainError("At most %(max)d rows per file (%(n)d found)", field="file",
                          max=MAX_IMPORT_ROWS, n=total)
    sha = hashlib.sha256(data).hexdigest()
    before = session.scalar(select(LeadImport.id).where(LeadImport.sha256 == sha)
                            .order_by(LeadImport.id).limit(1))
    record = LeadImport(filename=filename, sha256=sha, total_rows=total, created_by_id=created_by)
    session.add(record)
    session.flush()
    with open(stored_path(record), "wb") as fh:
        fh.write(data)
    audit.record(session, "lead_import", target_type="lead_import", target_id=record.id,
                 summary=f"{filename}: {total} rows"[:255])
    run = start(session, record)
    return Accepted(record, run, before)


def start(session, record: LeadImport) -> JobRun:
    """Start (or find the active) job run importing `record`; it resumes after the rows already counted."""
    return runner.start(session, LEAD_IMPORT, target_type=TARGET, target_id=record.id,
                        started_by=record.created_by_id, total=record.total_rows)


def rerun(session, record: LeadImport) -> JobRun:
    """Run an interrupted, failed or cancelled import again from where it stopped."""
    if processed(record) >= record.total_rows and record.total_rows:
        raise DomainError("This import has finished", field="status", status=409)
    if not os.path.exists(stored_path(record)):
        raise DomainError("The uploaded file is no longer stored: upload it again", field="file", status=409)
    return start(session, record)


# --- import ---------------------------------------------------------------------------------------------
def processed(record: LeadImport) -> int:
    """Rows of the file the import has dealt with (committed with the chunk that dealt with them)."""
    return record.created_rows + record.duplicate_rows + record.error_rows


def import_chunks(session, record: LeadImport, data: bytes, actor: str = "import",
                  region: str = "CN", chunk: int = CHUNK) -> Iterator[int]:
    """Import `data` (the file of `record`) after the rows already counted, one chunk at a time: each
    chunk's leads and counts are staged in `session`, then the line number of its last row is yielded —
    the caller commits there (with its own progress, e.g. a job run's checkpoint) or stops."""
    total = count_rows(record.filename, data)
    if total > MAX_IMPORT_ROWS:
        raise DomainError("At most %(limit)s rows per file (%(count)s found)", field="file",
                          status=413, limit=MAX_IMPORT_ROWS, count=total)
    sha = hashlib.sha256(data).hexdigest()
    if record.sha256 != sha or record.total_rows != total:  # a new file for this record: count afresh
        record.sha256, record.total_rows, record.errors = sha, total, None
        record.created_rows = record.duplicate_rows = record.error_rows = 0
    vocab = Vocabulary(session)
    creator = session.scalar(select(Employee.id).where(Employee.user_id == record.created_by_id)) \
        if record.created_by_id else None
    remaining = islice(rows(record.filename, data), processed(record), None)
    while batch := list(islice(remaining, chunk)):
        errors = json.loads(record.errors) if record.errors else []
        for line, row in batch:
            _import_row(session, record, line, row, vocab, creator, actor, region, errors)
        record.errors = json.dumps(errors, ensure_ascii=False) if errors else None
        session.flush()
        yield batch[-1][0]


def _import_row(session, record, line, row, vocab, creator, actor, region, errors) -> None:
    values, problems = parse(row, vocab, region)
    if problems:
        errors.append({"line": line, "errors": problems})
        record.error_rows += 1
        return
    values.client_key = f"import:{record.sha256[:40]}:{line}"
    values.created_by_id = creator
    try:
        with session.begin_nested():
            result = intake(session, values, "import", actor, import_id=record.id)
    except DomainError as exc:
        errors.append({"line": line, "errors": {exc.field or "row": exc.message}})
        record.error_rows += 1
    except IntegrityError:  # a concurrent writer won twice in a row: report it, do not guess
        errors.append({"line": line, "errors": {"row": "written concurrently: import it again"}})
        record.error_rows += 1
    else:
        if result.replayed:
            ours = result.lead.import_id == record.id  # written by an earlier run of this import
            record.created_rows += ours
            record.duplicate_rows += not ours
        elif result.sticky:
            record.duplicate_rows += 1
        else:
            record.created_rows += 1


def import_file(session, filename: str, data: bytes, actor: str = "import",
                actor_id: int | None = None, region: str = "CN", progress=None,
                record: LeadImport | None = None) -> LeadImport:
    """Import a whole lead file here (no job run): commits every chunk and calls `progress(record)` then.
    `record`: an upload recorded earlier, imported from where its counts stopped."""
    if record is None:
        record = LeadImport(filename=filename[:255], sha256="", created_by_id=actor_id)
        session.add(record)
        session.flush()
    for _line in import_chunks(session, record, data, actor=actor, region=region):
        session.commit()
        if progress:
            progress(record)
    session.commit()
    return record
