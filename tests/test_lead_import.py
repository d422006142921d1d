"""Lead file imports (/leadimportview/…): upload a .csv or .xlsx, the import runs as a job run (app.services
.runner) on a real SimpleWorker (burst) against the private Redis, progress and per-line errors are recorded
on LeadImport.

Policy under test (app.services.lead_import): every row validated on its own; the good rows are
kept, the bad ones reported with their line numbers and a message per field; importing the same file
again creates nothing new; an interrupted import run again finishes without doubling anything.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re

import pytest
from flask.testing import FlaskClient
from openpyxl import Workbook
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import func, select

from app.clock import utcnow
from app.jobs.dispatch import DISPATCH_JOB_ID
from app.jobs.worker import app_worker_class
from app.models.jobs import LEAD_IMPORT
from app.models.sales import Lead, LeadImport, Opportunity
from app.services import runner
from app.services.lead_import import CHUNK, import_file
from app.services.seed import DEMO_PASSWORD
from tests import factories
from tests.conftest import login

ZH = ["姓名", "手机号", "线索来源", "产品线", "意向等级", "地区"]
EN = ["name", "phone", "source", "product_line", "intention_level", "region"]


@pytest.fixture
def uploads(app, tmp_path):
    path = tmp_path / "uploads"
    app.config["CRM_UPLOAD_DIR"] = str(path)
    return path


def web(app, username: str = "backoffice1") -> FlaskClient:
    client = app.test_client()
    assert login(client, username).status_code == 302
    client.get("/lang/en")
    return client


def queue(app, name: str = "default") -> Queue:
    return Queue(name, connection=Redis.from_url(app.config["REDIS_URL"]))


def work(app, name: str = "default") -> None:
    q = queue(app, name)
    assert app_worker_class(app, SimpleWorker)([q], connection=q.connection).work(burst=True)


def csv_bytes(header: list[str], rows: list[list]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8-sig")


def xlsx_bytes(header: list[str], rows: list[list]) -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def upload(client, filename: str, data: bytes):
    return client.post("/leadimportview/upload/", data={"file": (io.BytesIO(data), filename)},
                       content_type="multipart/form-data")


def progress(client, import_id: int) -> dict:
    return client.get(f"/leadimportview/progress/{import_id}").get_json()


def count(session, model) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


def last_import(session) -> LeadImport:
    session.expire_all()
    return session.scalars(select(LeadImport).order_by(LeadImport.id.desc())).first()


# Each arranged row: (cells in ZH / EN order, expected outcome: "created", "duplicate" or the bad fields).
# None stands for a blank line: skipped, but it still counts for the line numbers after it.
ROWS = [
    (["张家长", "13800138701", "douyin", "k12_math", "A", "上海"], "created"),
    (["李家长", "12345", "douyin", "k12_math", "A", "上海"], {"phone"}),
    (["王家长", "+86 138 0013 8703", "微信", "K12 英语", "B 中意向", "北京"], "created"),  # labels work too
    (["赵家长", "13800138704", "baidu", "", "Z", "广州"], {"product_line", "intention_level"}),
    None,
    (["张爸爸", "138-0013-8701", "web_form", "k12_math", "", "上海"], "duplicate"),  # joins line 2's
    (["钱家长", "13800138708", "offline", "adult_english", "C", "成都"], {"source"}),  # disabled below
    (["孙家长", "0086 138 0013 8709", "", "programming", "", ""], "created"),
]


def arranged(rows):
    """The cells to write, and what each line should become, from ROWS."""
    cells, expected = [], {}
    for line, row in enumerate(rows, start=2):
        if row is None:
            cells.append([])
            continue
        cells.append(row[0])
        expected[line] = row[1]
    return cells, expected


def check_outcome(session, record: LeadImport, expected: dict, new_leads: bool = True) -> None:
    outcomes = list(expected.values())
    errors = {line: set(fields) for line, fields in expected.items() if isinstance(fields, set)}
    assert record.total_rows == len(expected)
    if new_leads:
        assert (record.created_rows, record.duplicate_rows) == (outcomes.count("created"),
                                                                outcomes.count("duplicate"))
    else:  # the same file again: every good row was imported before
        assert (record.created_rows, record.duplicate_rows) == (0, len(expected) - len(errors))
    assert record.error_rows == len(errors)
    reported = {entry["line"]: set(entry["errors"]) for entry in json.loads(record.errors)}
    assert reported == errors


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_import_keeps_good_rows_reports_bad_lines_and_reimport_creates_nothing(app, session, uploads, kind):
    factories.dict_item(session, "lead_source", "offline").enabled = False
    session.commit()
    cells, expected = arranged(ROWS)
    if kind == "csv":
        filename, data = "春季线索.csv", csv_bytes(ZH, cells)
    else:  # phones typed as numbers, as Excel stores them
        numbers = [[int(c) if isinstance(c, str) and c.isdigit() else c for c in row] for row in cells]
        filename, data = "leads.xlsx", xlsx_bytes(EN, numbers)
    client = web(app)
    leads_before, opps_before = count(session, Lead), count(session, Opportunity)

    resp = upload(client, filename, data)
    assert resp.status_code == 302
    record = last_import(session)
    assert resp.headers["Location"].endswith(f"/leadimportview/show/{record.id}")
    assert record.filename == filename and record.total_rows == len(expected)
    run = runner.latest_run(session, LEAD_IMPORT, "lead_import", record.id)
    assert (run.status, run.total, run.started_by_fk) == ("queued", len(expected), record.created_by_id)
    assert queue(app).job_ids == [run.rq_job_id]
    assert progress(client, record.id) | {"message": None} == {
        "id": record.id, "status": "queued", "done": 0, "total": len(expected), "percent": 0,
        "created": 0, "duplicate": 0, "errors": 0, "message": None}
    stored = uploads / f"{record.id}.{kind}"
    assert stored.read_bytes() == data

    work(app)
    record = last_import(session)
    check_outcome(session, record, expected)
    assert progress(client, record.id)["status"] == "finished"
    assert progress(client, record.id)["percent"] == 100
    assert not stored.exists()  # imported: the file is not kept
    session.refresh(run)
    errors = len([o for o in expected.values() if isinstance(o, set)])
    assert (run.status, run.done, run.failed, run.total) == ("completed", len(expected) - errors, errors,
                                                             len(expected))

    created = [line for line, outcome in expected.items() if outcome in ("created", "duplicate")]
    leads = session.scalars(select(Lead).where(Lead.import_id == record.id).order_by(Lead.id)).all()
    assert [lead.client_key for lead in leads] == [f"import:{record.sha256[:40]}:{line}" for line in created]
    assert all(lead.channel == "import" and lead.phone.startswith("+86") for lead in leads)
    assert count(session, Lead) == leads_before + len(created)
    assert count(session, Opportunity) == opps_before + list(expected.values()).count("created")
    assert leads[0].opportunity_id == leads[2].opportunity_id  # line 7 joined line 2's opportunity
    assert queue(app, "high").job_ids == [DISPATCH_JOB_ID]  # new opportunities wait for dispatch

    page = client.get(f"/leadimportview/show/{record.id}").get_data(as_text=True)
    assert {int(n) for n in re.findall(r'class="crm-line">(\d+)<', page)} == {
        line for line, outcome in expected.items() if isinstance(outcome, set)}
    assert "not a valid phone number" in page and "unknown or disabled option" in page
    rows = list(csv.reader(io.StringIO(client.get(f"/leadimportview/errors/{record.id}.csv")
                                       .get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0] == ["line", "field", "message"]
    assert {(int(line), field) for line, field, _ in rows[1:]} == {
        (line, field) for line, fields in expected.items() if isinstance(fields, set) for field in fields}

    # The same file again: recorded as a second import, nothing new written.
    resp = upload(client, filename, data)
    assert "imported before" in client.get(resp.headers["Location"]).get_data(as_text=True)
    work(app)
    again = last_import(session)
    assert again.id != record.id and again.sha256 == record.sha256
    check_outcome(session, again, expected, new_leads=False)
    assert count(session, Lead) == leads_before + len(created)
    listing = client.get("/leadimportview/list/").get_data(as_text=True)
    assert listing.count(filename) == 2  # both imports are kept and listed


def test_progress_is_visible_while_the_import_runs(app, session, uploads):
    rows = [[f"家长{i}", f"137{i:08d}", "douyin", "k12_math", "", ""] for i in range(2 * CHUNK + 200)]
    data = csv_bytes(ZH, rows)
    client = web(app)
    assert upload(client, "big.csv", data).status_code == 302
    record = last_import(session)
    queue(app).empty()  # run it here instead, asking the progress page at every chunk
    seen = []
    import_file(session, record.filename, data, actor="backoffice1", record=record,
                progress=lambda rec: seen.append(progress(client, rec.id)))
    assert [(p["done"], p["total"], p["percent"]) for p in seen] == [
        (CHUNK, len(rows), 100 * CHUNK // len(rows)), (2 * CHUNK, len(rows), 100 * 2 * CHUNK // len(rows)),
        (len(rows), len(rows), 100)]
    assert seen[-1]["created"] == len(rows)


def test_an_interrupted_import_is_picked_up_by_the_watchdog_and_finishes_without_doubles(app, session,
                                                                                         uploads):
    rows = [[f"家长{i}", f"136{i:08d}", "baidu", "adult_english", "", ""] for i in range(CHUNK + 100)]
    data = csv_bytes(EN, rows)
    client = web(app)
    upload(client, "interrupted.csv", data)
    record = last_import(session)
    queue(app).empty()
    leads_before = count(session, Lead)

    def killed(rec):
        raise SystemExit("worker killed")

    with pytest.raises(SystemExit):  # dies after its first chunk was committed
        import_file(session, record.filename, data, actor="backoffice1", record=record, progress=killed)
    session.rollback()
    assert count(session, Lead) == leads_before + CHUNK
    state = progress(client, record.id)  # its run still says queued, but its RQ job is gone
    assert (state["status"], state["done"], state["total"]) == ("queued", CHUNK, len(rows))

    actions = runner.watchdog(session, utcnow() + dt.timedelta(minutes=5))
    session.commit()
    assert len(actions) == 1 and "no longer exists" in actions[0]
    work(app)
    record = last_import(session)
    assert (record.total_rows, record.created_rows, record.duplicate_rows, record.error_rows) == (
        len(rows), len(rows), 0, 0)
    assert count(session, Lead) == leads_before + len(rows)
    assert progress(client, record.id)["status"] == "finished"


@pytest.mark.parametrize("lang,header", [("zh", ZH), ("en", EN)])
def test_the_template_csv_names_accepted_headers(app, session, uploads, lang, header):
    client = web(app)
    resp = client.get(f"/leadimportview/template.csv?lang={lang}")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    [columns] = list(csv.reader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    assert set(header) <= set(columns)
    values = {"name": "模板家长", "phone": "13500135001", "product_line": "k12_math", "source": "wechat"}
    en = dict(zip(ZH, EN, strict=True)) | {"活动": "campaign", "咨询内容": "consult_note"}
    row = [values.get(en.get(c, c), "") for c in columns]
    upload(client, "template.csv", csv_bytes(columns, [row, [*row[:1], "13500135002", *row[2:]]]))
    work(app)
    record = last_import(session)
    assert (record.total_rows, record.created_rows, record.error_rows) == (2, 2, 0)


def test_unusable_files_are_refused_at_upload_and_nothing_is_recorded(app, session, uploads):
    client = web(app)
    before = count(session, LeadImport)
    cases = {
        ("leads.txt", b"phone\n13800138000\n"): "Upload a .csv or .xlsx file",
        ("leads.csv", csv_bytes(["name", "mobile"], [["a", "13800138000"]])):
            "at least phone and product_line",
        ("leads.csv", csv_bytes(EN, [])): "no data rows",
        ("leads.xlsx", b"not a spreadsheet"): "Not a readable .xlsx file",
    }
    for (filename, data), message in cases.items():
        resp = upload(client, filename, data)
        assert resp.status_code == 200, filename
        assert message in resp.get_data(as_text=True), filename
    resp = client.post("/leadimportview/upload/", data={}, content_type="multipart/form-data")
    assert "Choose a .csv or .xlsx file" in resp.get_data(as_text=True)
    assert count(session, LeadImport) == before
    assert queue(app).job_ids == []
    assert not uploads.exists() or os.listdir(uploads) == []


def test_salespeople_cannot_import(app, session, uploads):
    client = web(app, "sales11")
    resp = upload(client, "leads.csv", csv_bytes(EN, [["a", "13800138000", "", "k12_math", "", ""]]))
    assert resp.status_code == 403
    assert client.get("/leadimportview/list/").status_code == 403
    assert count(session, LeadImport) == 0


@pytest.mark.config(WTF_CSRF_ENABLED=True)
def test_the_upload_form_carries_a_csrf_token(app, session, uploads):
    def token_of(page: str) -> str:
        return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)

    client = app.test_client()
    login_token = token_of(client.get("/login/").get_data(as_text=True))
    assert client.post("/login/", data={"username": "backoffice1", "password": DEMO_PASSWORD,
                                        "csrf_token": login_token}).status_code == 302
    token = token_of(client.get("/leadimportview/upload/").get_data(as_text=True))
    data = csv_bytes(EN, [["a", "13500135101", "", "k12_math", "", ""]])
    refused = client.post("/leadimportview/upload/", data={"file": (io.BytesIO(data), "a.csv")},
                          content_type="multipart/form-data")
    assert refused.status_code == 400 and count(session, LeadImport) == 0
    accepted = client.post("/leadimportview/upload/", data={"file": (io.BytesIO(data), "a.csv"),
                                                            "csrf_token": token},
                           content_type="multipart/form-data")
    assert accepted.status_code == 302 and count(session, LeadImport) == 1
