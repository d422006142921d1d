"""The ad platform's spend report as a CSV upload: one figure per campaign and day, replacing what was there.

Columns are found by their header, in English or Chinese (date/日期, campaign/活动代码/推广计划, cost/spend/
消费/花费, impressions/展现, clicks/点击, …); a report's title lines above the header are skipped. The file
is UTF-8 (with or without BOM) or GBK, as Excel in China saves it. Rows of the same campaign and day (a
report per ad group or keyword) add up; that sum replaces the stored figure, so importing a file again
changes nothing. A bad row is reported with its line number and the others are imported; a day with any
bad row is left as it was. Synchronous and capped (MAX_ROWS rows, MAX_BYTES bytes): a daily report of a
few hundred campaigns is far below both.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from app import clock
from app.models.marketing import SPEND_IMPORTED, CampaignSpend, MarketingCampaign
from app.services import audit
from app.services.errors import DomainError
from app.services.marketing import check_day, count, money

MAX_ROWS = 10_000
MAX_BYTES = 2 * 1024 * 1024
HEADER_SEARCH = 10  # lines a report may have above its header
#: Header (lower case, without a unit such as "(元)") → field.
HEADERS = {
    "day": ("date", "day", "日期", "时间", "天"),
    "campaign": ("campaign", "campaign code", "campaign_code", "tracking code", "utm_campaign", "活动代码",
                 "活动", "推广计划", "推广计划名称", "计划名称", "广告计划", "计划"),
    "amount": ("cost", "spend", "amount", "消费", "花费", "消耗", "费用", "总费用", "金额"),
    "impressions": ("impressions", "展现", "展现量", "展示", "展示数", "曝光", "曝光量"),
    "clicks": ("clicks", "点击", "点击量", "点击数"),
}
ALIASES = {alias: name for name, aliases in HEADERS.items() for alias in aliases}
REQUIRED = ("day", "campaign", "amount")
UNIT = re.compile(r"\s*[(（][^)）]*[)）]\s*$")
DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y.%m.%d", "%Y年%m月%d日")


@dataclass
class ImportResult:
    rows: int = 0  # data rows read
    days: int = 0  # campaign-days written
    created: int = 0
    replaced: int = 0
    total: Decimal = Decimal("0.00")  # of the days written
    errors: list[dict] = field(default_factory=list)  # [{"line": n, "errors": {field: message}}]


def decode(data: bytes) -> str:
    """UTF-8 (a BOM is dropped), else GBK (GB18030, its superset)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        raise DomainError("The file is neither UTF-8 nor GBK text", field="file", status=400) from None


def _header(cell: str) -> str | None:
    name = UNIT.sub("", (cell or "").strip().lstrip("\ufeff")).strip().lower()
    return ALIASES.get(name)


def _columns(reader) -> list[str | None]:
    """The header row's fields, found among the first lines (a report's title lines come first)."""
    for _ in range(HEADER_SEARCH):
        row = next(reader, None)
        if row is None:
            break
        columns = [_header(c) for c in row]
        if all(name in columns for name in REQUIRED):
            return columns
    raise DomainError("No header row naming the date, campaign and cost columns (e.g. 日期, 推广计划, "
                      "消费) in the first %(n)d lines", field="file", status=400, n=HEADER_SEARCH)


def parse_day(raw: str) -> dt.date:
    text = (raw or "").strip()
    if not text:
        raise DomainError("Required", field="day")
    for fmt in DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise DomainError("Must be a date such as 2026-06-01", field="day")


def _read(data: bytes) -> tuple[list[tuple[int, dict]], int]:
    reader = csv.reader(io.StringIO(decode(data)))
    columns = _columns(reader)
    rows = []
    try:
        for raw in reader:
            if not any((c or "").strip() for c in raw):
                continue
            rows.append((reader.line_num, {c: v for c, v in zip(columns, raw, strict=False) if c}))
            if len(rows) > MAX_ROWS:
                raise DomainError("At most %(max)d rows per file", field="file", status=400, max=MAX_ROWS)
    except csv.Error as exc:
        raise DomainError("Not a readable CSV file (line %(line)d: %(error)s)", field="file", status=400,
                          line=reader.line_num, error=str(exc)) from None
    return rows, len(rows)


def import_spend(session, filename: str | None, data: bytes | None, created_by_id: int | None = None,
                 today: dt.date | None = None) -> ImportResult:
    """Import a spend CSV (see the module docstring). The caller commits; a refusal of the whole file
    (size, encoding, header) raises DomainError(field="file")."""
    if not filename:
        raise DomainError("Choose a .csv file", field="file", status=400)
    if not filename.lower().endswith((".csv", ".txt")):
        raise DomainError("Upload a .csv file", field="file", status=400)
    data = data or b""
    if len(data) > MAX_BYTES:
        raise DomainError("The file is larger than %(mb)d MB", field="file", status=400,
                          mb=MAX_BYTES // 2**20)
    today = today or clock.today()
    rows, total = _read(data)
    if not rows:
        raise DomainError("The file has no data rows", field="file", status=400)
    campaigns = {c.code: c for c in session.scalars(select(MarketingCampaign))}
    result = ImportResult(rows=total)
    sums: dict[tuple[int, dt.date], list] = {}  # (campaign id, day) → [amount, impressions, clicks]
    poisoned: set[tuple[int, dt.date]] = set()
    for line, row in rows:
        problems, key = {}, None
        campaign = campaigns.get((row.get("campaign") or "").strip())
        if campaign is None:
            code = (row.get("campaign") or "").strip()
            problems["campaign"] = (DomainError("No campaign has the tracking code %(code)s", code=code[:40])
                                    if code else DomainError("Required")).message
        try:
            day = parse_day(row.get("day"))
            if campaign is not None:
                check_day(day, campaign, today)
                key = (campaign.id, day)
        except DomainError as exc:
            problems["day"] = exc.message
        values = []
        for name, reader in (("amount", money), ("impressions", count), ("clicks", count)):
            try:
                values.append(reader(row.get(name), name))
            except DomainError as exc:
                problems[name] = exc.message
        if problems:
            result.errors.append({"line": line, "errors": problems})
            if key is not None:
                poisoned.add(key)
            continue
        acc = sums.setdefault(key, [Decimal("0.00"), None, None])
        acc[0] += values[0]
        for i in (1, 2):
            if values[i] is not None:
                acc[i] = (acc[i] or 0) + values[i]
    for key in poisoned:
        sums.pop(key, None)
    _write(session, sums, created_by_id, result)
    audit.record(session, "spend_import", target_type="campaign_spend", summary=(
        f"{filename}: {result.days} days, {result.total} yuan, {len(result.errors)} bad rows"),
        after={"file": filename[:100], "rows": result.rows, "days": result.days, "created": result.created,
               "replaced": result.replaced, "total": str(result.total), "bad_rows": len(result.errors)})
    return result


def _write(session, sums: dict, created_by_id: int | None, result: ImportResult) -> None:
    """Upsert the days: bulk UPDATE of the days already there, bulk INSERT of the new ones (one audit event
    for the whole file, not one per row)."""
    if not sums:
        return
    ids = {k[0] for k in sums}
    existing = {(c, d): i for i, c, d in session.execute(
        select(CampaignSpend.id, CampaignSpend.campaign_id, CampaignSpend.day)
        .where(CampaignSpend.campaign_id.in_(ids),
               CampaignSpend.day.between(min(k[1] for k in sums), max(k[1] for k in sums))))}
    now = clock.utcnow()
    updates, inserts = [], []
    for (campaign_id, day), (amount, impressions, clicks) in sums.items():
        values = {"amount": amount, "impressions": impressions, "clicks": clicks, "origin": SPEND_IMPORTED,
                  "updated_at": now}
        if (campaign_id, day) in existing:
            updates.append({"id": existing[(campaign_id, day)], **values})
        else:
            inserts.append({"campaign_id": campaign_id, "day": day, "created_at": now,
                            "created_by_id": created_by_id, **values})
        result.total += amount
    try:
        with session.begin_nested():
            if updates:
                session.execute(update(CampaignSpend), updates)
            if inserts:
                session.execute(insert(CampaignSpend), inserts)
    except IntegrityError:  # another import or entry wrote one of these days meanwhile
        raise DomainError("Spend of these days was being recorded at the same time: import the file again",
                          field="file", status=409) from None
    result.days, result.created, result.replaced = len(sums), len(inserts), len(updates)
