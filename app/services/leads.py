"""Lead intake: the back-office form, file imports and the REST endpoint all come through `intake`.

A lead attaches to the customer with the same normalised phone (created if new). If that customer
already has an open opportunity in the lead's product line, the lead joins it and its owner keeps it
("sticky ownership", logged); otherwise a new opportunity waits for the dispatch engine. The config item
`leads.duplicate_policy` = "reject" refuses such a duplicate instead.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.clock import utcnow
from app.models.employee import Employee
from app.models.sales import (
    OPEN_STATUSES,
    OWNED,
    STICKY,
    WAITING,
    AssignmentLog,
    Customer,
    Lead,
    LeadImport,
    Opportunity,
)
from app.services import metadata
from app.services.errors import DomainError
from app.services.phones import normalise_phone

SOURCE, PRODUCT_LINE, INTENTION, STAGE = "lead_source", "product_line", "intention_level", "opportunity_stage"
FIELDS = ("name", "phone", "source", "campaign", "product_line", "region", "intention_level",
          "consult_note", "client_key")
# Column headers accepted in import files (English or Chinese).
HEADERS = {
    "name": "name", "姓名": "name", "phone": "phone", "手机号": "phone", "电话": "phone",
    "source": "source", "来源": "source", "线索来源": "source", "campaign": "campaign", "活动": "campaign",
    "product_line": "product_line", "产品线": "product_line", "region": "region", "地区": "region",
    "intention_level": "intention_level", "意向等级": "intention_level", "consult_note": "consult_note",
    "咨询内容": "consult_note", "备注": "consult_note",
}
MAX_IMPORT_ROWS = 50_000
CHUNK = 500


@dataclass
class LeadInput:
    phone: str
    product_line_id: int
    name: str | None = None
    source_id: int | None = None
    campaign: str | None = None
    region: str | None = None
    intention_level_id: int | None = None
    consult_note: str | None = None
    client_key: str | None = None
    raw_payload: dict | None = None
    created_by_id: int | None = None  # the employee who entered it (form, import)


@dataclass
class IntakeResult:
    lead: Lead
    opportunity: Opportunity
    created_opportunity: bool = False
    sticky: bool = False
    replayed: bool = False  # the client key was seen before: nothing new was written


def _codes(session, type_code: str) -> dict[str, int]:
    """code → id of the enabled items of a dictionary (labels are accepted too)."""
    result = {}
    for item in metadata.dict_items(session, type_code):
        result[item.code] = item.id
        result[item.label_zh] = item.id
        result[item.label_en] = item.id
    return result


class Vocabulary:
    """The dictionary lookups one batch of leads needs, read once."""

    def __init__(self, session):
        self.sources = _codes(session, SOURCE)
        self.product_lines = _codes(session, PRODUCT_LINE)
        self.intentions = _codes(session, INTENTION)


def parse(row: dict, vocab: Vocabulary, region: str = "CN") -> tuple[LeadInput | None, dict]:
    """Validate one lead given as strings; returns (input, {}) or (None, problems by field)."""
    problems: dict[str, str] = {}

    def text(name, limit):
        value = row.get(name)
        value = None if value is None else str(value).strip()
        if value and len(value) > limit:
            problems[name] = f"at most {limit} characters"
        return value or None

    phone = None
    try:
        phone = normalise_phone(row.get("phone"), region)
        if phone is None:
            problems["phone"] = "required"
    except DomainError as exc:
        problems["phone"] = exc.message

    def choice(name, table, required=False):
        value = row.get(name)
        value = None if value is None else str(value).strip()
        if not value:
            if required:
                problems[name] = "required"
            return None
        if value not in table:
            problems[name] = f"unknown or disabled option {value!r}"
            return None
        return table[value]

    values = LeadInput(
        phone=phone,
        product_line_id=choice("product_line", vocab.product_lines, required=True),
        name=text("name", 64),
        source_id=choice("source", vocab.sources),
        campaign=text("campaign", 100),
        region=text("region", 64),
        intention_level_id=choice("intention_level", vocab.intentions),
        consult_note=text("consult_note", 4000),
        client_key=text("client_key", 128),
        raw_payload=row.get("raw_payload") if isinstance(row.get("raw_payload"), dict) else None,
    )
    return (None, problems) if problems else (values, {})


def _customer(session, values: LeadInput) -> Customer:
    customer = session.scalar(select(Customer).where(Customer.phone == values.phone))
    if customer is None:
        try:
            with session.begin_nested():
                customer = Customer(phone=values.phone, name=values.name, region=values.region)
                session.add(customer)
        except IntegrityError:  # created meanwhile by a concurrent intake
            customer = session.scalar(select(Customer).where(Customer.phone == values.phone))
    elif values.name and not customer.name:
        customer.name = values.name
    return customer


def _stage_new(session) -> int | None:
    items = metadata.dict_items(session, STAGE)
    return next((i.id for i in items if i.code == "new"), items[0].id if items else None)


def intake(session, values: LeadInput, channel: str, actor: str = "system",
           import_id: int | None = None) -> IntakeResult:
    """Record one validated lead (see the module docstring). The caller commits.

    A concurrent intake may write the same client key, customer or open opportunity first (the unique
    indexes refuse the second writer): the lead is then recorded again against what that one wrote,
    i.e. replayed or sticky, never a second opportunity.
    """
    try:
        with session.begin_nested():
            return _intake(session, values, channel, actor, import_id)
    except IntegrityError:
        return _intake(session, values, channel, actor, import_id)


def _intake(session, values: LeadInput, channel: str, actor: str, import_id: int | None) -> IntakeResult:
    if values.client_key:
        existing = session.scalar(select(Lead).where(Lead.client_key == values.client_key))
        if existing is not None:
            return IntakeResult(existing, existing.opportunity, replayed=True)
    now = utcnow()
    customer = _customer(session, values)
    opportunity = session.scalar(select(Opportunity).where(
        Opportunity.customer_id == customer.id, Opportunity.product_line_id == values.product_line_id,
        Opportunity.status.in_(OPEN_STATUSES)))
    created = sticky = False
    if opportunity is not None:
        if metadata.config_value(session, "leads.duplicate_policy", "sticky") == "reject":
            raise DomainError("This customer already has an open opportunity in that product line",
                              field="phone", status=409)
        sticky = True
        if opportunity.status == OWNED:
            session.add(AssignmentLog(
                created_at=now, opportunity_id=opportunity.id, reason=STICKY,
                from_owner_id=opportunity.owner_id, to_owner_id=opportunity.owner_id, actor_name=actor,
                note=f"new {channel} lead for the same customer and product line"))
    else:
        opportunity = Opportunity(
            customer_id=customer.id, product_line_id=values.product_line_id, stage_id=_stage_new(session),
            intention_level_id=values.intention_level_id, source_id=values.source_id,
            campaign=values.campaign, region=values.region, status=WAITING)
        session.add(opportunity)
        created = True
    payload = json.dumps(values.raw_payload, ensure_ascii=False) if values.raw_payload else None
    lead = Lead(customer=customer, opportunity=opportunity, name=values.name, phone=values.phone,
                source_id=values.source_id, campaign=values.campaign, product_line_id=values.product_line_id,
                region=values.region, consult_note=values.consult_note, channel=channel,
                client_key=values.client_key, import_id=import_id, created_by_id=values.created_by_id,
                raw_payload=payload)
    session.add(lead)
    session.flush()
    return IntakeResult(lead, opportunity, created_opportunity=created, sticky=sticky)


# --- files --------------------------------------------------------------------------------------------
def _rows(filename: str, data: bytes):
    """(line number, {field: value}) for each data row of a CSV or .xlsx file."""
    lower = filename.lower()
    if lower.endswith(".xlsx"):
        from openpyxl import load_workbook

        try:
            sheet = load_workbook(io.BytesIO(data), read_only=True, data_only=True).active
        except Exception as exc:
            raise DomainError("Not a readable .xlsx file: %(error)s", field="file", status=400,
                              error=str(exc)) from None
        rows = sheet.iter_rows(values_only=True)
    elif lower.endswith(".csv"):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("gb18030", errors="replace")  # Excel in China saves CSV as GBK
        rows = csv.reader(io.StringIO(text))
    else:
        raise DomainError("Upload a .csv or .xlsx file", field="file", status=400)
    header = next(rows, None)
    if not header:
        raise DomainError("The file is empty", field="file", status=400)
    columns = [HEADERS.get(str(h or "").strip().lower(), HEADERS.get(str(h or "").strip())) for h in header]
    if "phone" not in columns or "product_line" not in columns:
        raise DomainError("The first row must name the columns, with at least phone and product_line",
                          field="file", status=400)
    for line, raw in enumerate(rows, start=2):
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
    return sum(1 for _ in _rows(filename, data))


def import_file(session, filename: str, data: bytes, actor: str = "import",
                actor_id: int | None = None, region: str = "CN", progress=None,
                record: LeadImport | None = None) -> LeadImport:
    """Import a lead file: each row validated, errors kept with their line numbers, good rows kept.

    Rows get the idempotency key "import:<file sha256>:<line>", so importing the same file again
    creates nothing new. `total_rows` is counted first (nothing is written for a file that cannot be
    read or is too large); then every row ends up in exactly one of created_rows (a new lead and a new
    opportunity), duplicate_rows (the lead joined the customer's open opportunity, or the row was
    imported before) and error_rows, so their sum over total_rows is the progress. Commits every CHUNK
    rows and calls `progress(record)` then. `record`: an upload recorded earlier (the import job); a
    second run of it starts its counts over, and the rows its first run wrote count as created again.
    """
    total = count_rows(filename, data)
    if total > MAX_IMPORT_ROWS:
        raise DomainError("At most %(limit)s rows per file (%(count)s found)", field="file",
                          status=413, limit=MAX_IMPORT_ROWS, count=total)
    sha = hashlib.sha256(data).hexdigest()
    if record is None:
        record = LeadImport(filename=filename[:255], sha256=sha, created_by_id=actor_id)
        session.add(record)
    record.sha256, record.total_rows, record.errors = sha, total, None
    record.created_rows = record.duplicate_rows = record.error_rows = 0
    session.flush()
    vocab = Vocabulary(session)
    creator = session.scalar(select(Employee.id).where(Employee.user_id == record.created_by_id)) \
        if record.created_by_id else None
    errors = []
    done = 0
    for line, row in _rows(filename, data):
        done += 1
        values, problems = parse(row, vocab, region)
        if problems:
            errors.append({"line": line, "errors": problems})
            record.error_rows += 1
        else:
            values.client_key = f"import:{sha[:40]}:{line}"
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
        if done % CHUNK == 0:
            record.errors = json.dumps(errors, ensure_ascii=False)
            session.commit()
            if progress:
                progress(record)
    record.errors = json.dumps(errors, ensure_ascii=False) if errors else None
    session.commit()
    if progress:
        progress(record)
    return record


# --- customers ------------------------------------------------------------------------------------
def register_user(session, registered_user_id: str, phone: str, name: str | None = None,
                  region: str = "CN") -> Customer:
    """A registered user of the learning/e-commerce side: merge with the customer of the same phone."""
    phone = normalise_phone(phone, region)
    by_user = session.scalar(select(Customer).where(Customer.registered_user_id == registered_user_id))
    by_phone = session.scalar(select(Customer).where(Customer.phone == phone))
    if by_user is None and by_phone is None:
        customer = Customer(phone=phone, name=name, registered_user_id=registered_user_id)
        session.add(customer)
    elif by_user is None:
        if by_phone.registered_user_id:  # the phone's customer is another registered user
            raise DomainError(
                "Phone %(phone)s belongs to registered user %(user)s "
                "(customer #%(customer)s), not %(other)s", field="phone", status=409, phone=phone,
                user=by_phone.registered_user_id, customer=by_phone.id, other=registered_user_id)
        by_phone.registered_user_id = registered_user_id
        by_phone.name = by_phone.name or name
        customer = by_phone
    elif by_phone is None or by_phone.id == by_user.id:
        customer = by_user
    else:
        raise DomainError(
            "Phone %(phone)s belongs to another customer (#%(customer)s) than user %(user)s "
            "(#%(other)s): merge them first", field="phone", status=409, phone=phone, customer=by_phone.id,
            user=registered_user_id, other=by_user.id)
    session.flush()
    return customer
