"""Exports of filtered lists (app/services/exports.py, app/views/export.py, app/jobs/exports.py) through
the real app: CSV and .xlsx contents (translated headers and labels, business-zone times, phones masked
unless the role sees full numbers), the data scope and the list's filters, the audit row; a big export
as a job on a real RQ worker with its download link, refused to anyone else, and the old files purged.
The kill -9 proof on PostgreSQL is test_pg_a_killed_export_resumes_with_each_row_once below."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from html import unescape

import pytest
from openpyxl import load_workbook
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import insert, select

from app import clock
from app.clock import utcnow
from app.extensions import db
from app.jobs.maintenance import purge_export_files
from app.jobs.worker import app_worker_class
from app.models.audit import AuditLog
from app.models.inbox import JOB_FINISHED, InboxNotification
from app.models.jobs import COMPLETED, EXPORT, RUNNING, JobRun
from app.models.org import OrgUnit
from app.models.sales import OWNED, Customer, Lead
from app.security import policy
from app.security.masking import mask_phone
from app.services import exports, runner
from tests import factories as f
from tests import helpers
from tests.conftest import login

HEADERS_ZH = ["创建时间", "名称", "手机号", "产品线", "线索来源"]  # the first export columns of the lead list
HEADERS_EN = ["Created at", "Name", "Phone", "Product line", "Lead source"]


@contextmanager
def dbs(app):
    with app.app_context():
        yield db.session


@dataclass
class World:
    seller: int  # user id of a salesperson (own scope) allowed to export leads
    other: int  # user id of a salesperson of the same team
    mine: dict  # lead id → full phone, leads of the seller's opportunities
    theirs: dict  # lead id → full phone, leads of the other's opportunities
    created: dt.datetime


def build(app, session, prefix: str = "Exp", per_person: int = 3) -> World:
    sales = session.scalar(select(OrgUnit).where(OrgUnit.code == "SALES"))  # under the seed director
    team = f.org_unit(session, parent=sales)
    people = [f.employee(session, team) for _ in range(2)]
    users = [f.login_user(app, session, emp, "Salesperson") for emp in people]
    sm = app.appbuilder.sm  # salespeople do not export by policy: this test's role does
    export_leads = sm.find_permission_view_menu(policy.EXPORT, policy.LEAD)
    sm.add_permission_role(sm.find_role("Salesperson"), export_leads)
    created = utcnow() - dt.timedelta(hours=3)
    leads: list[dict] = [{}, {}]
    for n, emp in enumerate(people):
        for i in range(per_person):
            opp = f.OPPORTUNITY.create(session, owner_id=emp.id, org_unit_id=team.id, status=OWNED)
            phone = f"+86138{emp.id % 1000:03d}0{n}{i:03d}"  # the last 4 digits tell them apart
            lead = f.LEAD.create(session, opportunity_id=opp.id, customer_id=opp.customer_id, phone=phone,
                                 name=f"{prefix}{'AB'[n]}-{i}", channel="form", created_at=created)
            leads[n][lead.id] = phone
    return World(users[0].id, users[1].id, leads[0], leads[1], created)


@pytest.fixture
def export_dir(app, tmp_path):
    app.config["CRM_EXPORT_DIR"] = str(tmp_path / "exports")
    return tmp_path / "exports"


@pytest.fixture
def world(app, export_dir) -> World:
    with dbs(app) as s:
        return build(app, s)


def client_as(app, username: str, password: str | None = None, lang: str | None = "en"):
    client = app.test_client()
    resp = login(client, username, password)
    assert resp.status_code == 302 and "/login" not in resp.headers["Location"], "login failed"
    if lang:
        client.get(f"/lang/{lang}")
    return client


def seller_client(app, w: World, user_id: int | None = None, lang: str | None = "en"):
    return client_as(app, f"user{_employee_of(app, user_id or w.seller)}", f.PASSWORD, lang)


def _employee_of(app, user_id: int) -> int:
    with dbs(app) as s:
        from app.models.employee import Employee

        return s.scalar(select(Employee.id).where(Employee.user_id == user_id))


def csv_rows(resp) -> list[list[str]]:
    assert resp.status_code == 200, resp.status_code
    text = resp.get_data(as_text=True)
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))


def xlsx_rows(data: bytes) -> list[list]:
    sheet = load_workbook(io.BytesIO(data), read_only=True).active
    return [["" if v is None else v for v in row] for row in sheet.iter_rows(values_only=True)]


def by_name(rows: list[list], prefix: str = "Exp") -> dict[str, list]:
    return {r[1]: r for r in rows[1:] if str(r[1]).startswith(prefix)}


def channel_label(app, locale: str) -> str:
    """The lead list's label of the channel "form" in `locale` (what the list page shows)."""
    from flask_babel import force_locale

    view = next(v for v in app.appbuilder.baseviews if type(v).__name__ == "LeadView")
    with app.test_request_context(), force_locale(locale):
        label = str(view.formatters_columns["channel"]("form"))
    assert label and label != "form"
    return label


def last_audit(app, action: str = "export") -> AuditLog:
    with dbs(app) as s:
        stmt = select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id.desc())
        return s.scalars(stmt).first()


# --- direct exports ---------------------------------------------------------------------------------
def test_csv_of_a_salesperson_has_own_rows_masked_phones_translated_headers_local_times(app, world):
    w = world
    rows = csv_rows(seller_client(app, w, lang="zh_CN").get("/leadview/export/"))
    assert rows[0][:5] == HEADERS_ZH
    got = by_name(rows)
    assert set(got) == {f"ExpA-{i}" for i in range(3)}  # own scope: none of the colleague's
    for lead_id, phone in w.mine.items():
        row = next(r for r in rows[1:] if r[2] == mask_phone(phone) and r[1].startswith("ExpA"))
        assert phone.removeprefix("+86") not in ",".join(row), lead_id
        assert row[0] == clock.format_datetime(w.created)  # the business zone, as the list shows it
        assert row[7] == channel_label(app, "zh_CN")  # the channel's label, not the code "form"
    audit = last_audit(app)
    details = json.loads(audit.after)
    assert audit.summary.startswith(f"{len(rows) - 1} rows; csv; full phones: no")
    assert audit.actor_id == w.seller and audit.target_type == policy.LEAD
    assert (details["list"], details["format"], details["rows"], details["full_phones"]) == (
        "LeadView", "csv", len(rows) - 1, False)


def test_xlsx_of_a_director_has_full_phones_of_the_subtree_and_honours_the_filters(app, world):
    w = world
    director = client_as(app, "director")
    resp = director.get("/leadview/export/xlsx/?_flt_0_name=ExpB")
    assert resp.status_code == 200 and resp.mimetype == exports.MIMETYPES["xlsx"].split(";")[0]
    rows = xlsx_rows(resp.data)
    assert rows[0][:5] == HEADERS_EN
    got = by_name(rows)
    assert set(got) == {f"ExpB-{i}" for i in range(3)}  # the filter: the colleague's only
    assert {r[2] for r in got.values()} == set(w.theirs.values())  # full numbers: the director may
    assert {r[7] for r in got.values()} == {channel_label(app, "en")}
    audit = last_audit(app)
    assert audit.summary.startswith("3 rows; xlsx; full phones: yes")
    assert json.loads(audit.after)["filters"] == {"_flt_0_name": "ExpB"}


def test_cells_a_spreadsheet_would_run_as_formulas_stay_text(app, world):
    w = world
    with dbs(app) as s:
        lead = s.get(Lead, next(iter(w.mine)))
        lead.name, lead.region = "Exp=cmd", "=HYPERLINK(\"http://x\")"
        s.commit()
    manager = seller_client(app, w)
    rows = csv_rows(manager.get("/leadview/export/?_flt_0_name=Exp%3D"))
    assert len(rows) == 2 and rows[1][6] == "'=HYPERLINK(\"http://x\")"  # CSV: not a formula
    xlsx = xlsx_rows(manager.get("/leadview/export/xlsx/?_flt_0_name=Exp%3D").data)
    assert xlsx[1][6] == "=HYPERLINK(\"http://x\")"  # .xlsx: a text cell
    sheet = load_workbook(io.BytesIO(manager.get("/leadview/export/xlsx/?_flt_0_name=Exp%3D").data)).active
    assert sheet.cell(row=2, column=7).data_type == "s"


def test_a_filter_on_a_column_the_list_cannot_search_is_ignored(app, world):
    """The phone is no search column of the lead list: filtering the export by it (probing full numbers
    by row counts) selects what the unfiltered export does."""
    seller = seller_client(app, world)
    assert by_name(csv_rows(seller.get("/leadview/export/?_flt_0_phone=%2B86999"))).keys() == {
        f"ExpA-{i}" for i in range(3)}


def test_the_export_buttons_carry_the_list_filters(app, world):
    page = seller_client(app, world).get("/leadview/list/?_flt_0_name=ExpA").get_data(as_text=True)
    assert re.search(r'id="crm-export"\s+href="/leadview/export/\?_flt_0_name=ExpA"', page)
    assert re.search(r'id="crm-export-xlsx"\s+href="/leadview/export/xlsx/\?_flt_0_name=ExpA"', page)
    assert "Export Excel" in page


def test_the_export_links_of_a_filtered_list_give_only_its_rows(app, world):
    """Two filters, a page and a page size on the list: each link is one well-formed URL (one "?"), the
    paging is dropped, and following it exports exactly the filtered rows, as CSV and as .xlsx."""
    seller = seller_client(app, world)
    page = seller.get("/leadview/list/?_flt_0_name=Exp&_flt_1_name=-1&page_LeadView=0&psize_LeadView=25")
    html = page.get_data(as_text=True)
    links = {}
    for key in ("crm-export", "crm-export-xlsx"):
        href = unescape(re.search(rf'id="{key}"\s+href="([^"]+)"', html).group(1))
        assert href.count("?") == 1 and "page_" not in href and "psize_" not in href, href
        links[key] = href
    assert links["crm-export-xlsx"].startswith("/leadview/export/xlsx/?")
    assert by_name(csv_rows(seller.get(links["crm-export"]))).keys() == {"ExpA-1"}
    assert by_name(xlsx_rows(seller.get(links["crm-export-xlsx"]).data)).keys() == {"ExpA-1"}


def test_a_role_without_export_gets_403(app, world):
    manager = client_as(app, "manager1")  # Sales Manager: reads leads, does not export them
    assert manager.get("/leadview/export/").status_code == 403
    assert manager.get("/leadview/export/xlsx/").status_code == 403


# --- big exports: a job ---------------------------------------------------------------------------
def work(app) -> None:
    q = Queue("default", connection=Redis.from_url(app.config["REDIS_URL"]))
    app_worker_class(app, SimpleWorker)([q], connection=q.connection).work(burst=True)


def latest_export(app) -> JobRun:
    with dbs(app) as s:
        run = s.scalars(select(JobRun).where(JobRun.kind == EXPORT).order_by(JobRun.id.desc())).first()
        s.expunge(run)
        return run


@pytest.mark.config(CRM_EXPORT_STREAM_MAX_ROWS=2, CRM_EXPORT_CHUNK_ROWS=2)
def test_a_big_export_runs_as_a_job_with_a_download_for_its_owner_only(app, world):
    w = world
    seller = seller_client(app, w)
    resp = seller.get("/leadview/export/xlsx/?_flt_0_name=Exp")
    run = latest_export(app)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/jobs/show/{run.id}")
    assert (run.status, run.started_by_fk, run.total) == ("queued", w.seller, 3)
    again = seller.get("/leadview/export/xlsx/?_flt_0_name=Exp")  # a double click: the same run
    assert again.headers["Location"].endswith(f"/jobs/show/{run.id}")
    assert seller.get(f"/exports/download/{run.id}").status_code == 409  # not finished yet

    # Between the request and the run the colleague's leads move to the seller: the job applies the
    # seller's scope as it is when it runs.
    with dbs(app) as s:
        from app.models.employee import Employee
        from app.models.sales import Opportunity

        seller_emp = s.scalar(select(Employee.id).where(Employee.user_id == w.seller))
        moved = next(iter(w.theirs))
        s.get(Opportunity, s.get(Lead, moved).opportunity_id).owner_id = seller_emp
        s.commit()
    work(app)
    run = latest_export(app)
    assert (run.status, run.done, run.total, run.summary) == (COMPLETED, 4, 4, "4 rows (xlsx)")
    page = seller.get(f"/jobs/show/{run.id}").get_data(as_text=True)
    assert f'href="/exports/download/{run.id}"' in page and "Download the file" in page

    resp = seller.get(f"/exports/download/{run.id}")
    assert resp.status_code == 200 and f"lead-{run.id}.xlsx" in resp.headers["Content-Disposition"]
    rows = xlsx_rows(resp.data)
    assert rows[0][:5] == HEADERS_EN
    phones = {mask_phone(p) for p in [*w.mine.values(), w.theirs[moved]]}
    assert sorted(r[2] for r in rows[1:]) == sorted(phones)  # masked, each row once
    audit = last_audit(app)
    assert audit.summary.startswith(f"4 rows; xlsx; full phones: no; list LeadView; job #{run.id}")
    assert audit.actor_id == w.seller
    with dbs(app) as s:
        note = s.scalar(select(InboxNotification).where(InboxNotification.recipient_id == w.seller,
                                                        InboxNotification.subject_id == run.id))
        assert note is not None and note.kind == JOB_FINISHED
    # Another user (even of the same team) cannot download it; an administrator can, audited.
    assert seller_client(app, w, w.other).get(f"/exports/download/{run.id}").status_code == 404
    admin = client_as(app, "admin")
    assert admin.get(f"/exports/download/{run.id}").status_code == 200
    assert last_audit(app, "export_download").actor_name == "admin"


@pytest.mark.config(CRM_EXPORT_STREAM_MAX_ROWS=2, CRM_EXPORT_CHUNK_ROWS=2)
def test_a_csv_job_resumes_from_its_saved_position_and_old_files_are_purged(app, world, export_dir):
    w = world
    seller = seller_client(app, w)
    assert seller.get("/leadview/export/?_flt_0_name=ExpA").status_code == 302
    run = latest_export(app)
    # What a worker killed after one chunk leaves: a part file with the header and two rows committed,
    # and a third row written after that checkpoint (it must not appear twice).
    with dbs(app) as s:
        first_two = sorted(w.mine)[:2]
        header = "\ufeff" + ",".join(["Created at", "Name"]) + "\r\n"
        committed = header + "".join(f"x,{i}\r\n" for i in first_two)
        os.makedirs(export_dir, exist_ok=True)
        with open(exports.part_path(run.id, "csv"), "w", encoding="utf-8", newline="") as fh:
            fh.write(committed + "x,written-after-the-checkpoint\r\n")
        row = s.get(JobRun, run.id)
        row.position = json.dumps({"phase": "rows", "after": first_two[-1],
                                   "bytes": len(committed.encode("utf-8")), "rows": 2})
        row.done = 2
        s.commit()
    work(app)
    run = latest_export(app)
    assert (run.status, run.done) == (COMPLETED, 3)
    rows = csv_rows(seller.get(f"/exports/download/{run.id}"))
    assert [r[1] for r in rows[1:]] == [*map(str, first_two), "ExpA-2"]  # resumed after id first_two[-1]
    assert "written-after-the-checkpoint" not in json.dumps(rows)

    path = os.path.join(export_dir, f"{run.id}.csv")
    assert os.path.exists(path)
    with dbs(app) as s:
        s.get(JobRun, run.id).finished_at = utcnow() - dt.timedelta(days=8)
        s.commit()
        assert purge_export_files() == 1
    assert not os.path.exists(path)
    resp = seller.get(f"/exports/download/{run.id}")
    assert resp.status_code == 410 and "removed after 7 days" in resp.get_data(as_text=True)


# --- PostgreSQL: killed with SIGKILL mid-file, resumed by the watchdog ------------------------------
PG_ROWS, PG_CHUNK, STALE = 30_000, 300, 3


def bulk_leads(session, n: int, prefix: str) -> None:
    """`n` leads (and their customers) in a few statements."""
    product = f.dict_item(session, "product_line", "k12_math").id
    start = session.scalar(select(Customer.id).order_by(Customer.id.desc()).limit(1)) or 0
    now = utcnow()
    for base in range(0, n, 5_000):
        count = min(5_000, n - base)
        session.execute(insert(Customer), [
            {"id": start + base + i + 1, "phone": f"+86129{base + i:08d}", "name": f"c{base + i}",
             "marketing_consent": True, "created_at": now, "updated_at": now} for i in range(count)])
        session.execute(insert(Lead), [
            {"customer_id": start + base + i + 1, "phone": f"+86129{base + i:08d}",
             "name": f"{prefix}{base + i}", "product_line_id": product, "channel": "import",
             "created_at": now, "updated_at": now}
            for i in range(count)])
    session.execute(db.text("SELECT setval(pg_get_serial_sequence('customer', 'id'), "
                            "(SELECT max(id) FROM customer))"))
    session.commit()


def test_pg_a_killed_export_resumes_with_each_row_once(pg_app, tmp_path):
    from tests.workers import children, kill_worker_and_horse, start_worker, stop

    overrides = {"CRM_EXPORT_DIR": str(tmp_path / "exports"), "CRM_JOB_STALE_SECONDS": STALE,
                 "CRM_EXPORT_CHUNK_ROWS": PG_CHUNK, "CRM_EXPORT_STREAM_MAX_ROWS": 1000}
    pg_app.config.update(overrides)
    with pg_app.app_context():
        bulk_leads(db.session, PG_ROWS, "Bulk")
    admin = client_as(pg_app, "admin")
    assert admin.get("/leadview/export/?_flt_0_name=Bulk").status_code == 302
    procs = []
    with pg_app.app_context():
        session = db.session
        run_id = session.scalar(select(JobRun.id).where(JobRun.kind == EXPORT))

        def state() -> JobRun:
            session.expire_all()
            return session.get(JobRun, run_id)

        try:
            worker = start_worker(pg_app, "export-pg-1", settings=overrides)
            procs.append(worker)
            helpers.wait_for(lambda: state().done >= 4 * PG_CHUNK and state().status == RUNNING,
                             "the export to get past a few chunks", 240, 0.02)
            kill_worker_and_horse(worker, helpers.wait_for(lambda: children(worker.pid), "the work horse"))
            killed = state()
            assert killed.done < PG_ROWS and killed.status == RUNNING  # killed mid-file
            helpers.wait_for(lambda: (utcnow() - state().heartbeat_at).total_seconds() > STALE,
                             "the heartbeat to go stale", 60)
            actions = runner.watchdog(session, utcnow())
            session.commit()
            assert len(actions) == 1 and "heartbeat" in actions[0]
            procs.append(start_worker(pg_app, "export-pg-2", settings=overrides))
            helpers.wait_for(lambda: state().status == COMPLETED, "the export to complete", 240)
        finally:
            stop(procs)
        final = state()
        assert (final.done, final.total, final.attempts) == (PG_ROWS, PG_ROWS, 2)
    rows = csv_rows(admin.get(f"/exports/download/{run_id}"))
    names = [r[1] for r in rows[1:]]
    assert len(names) == len(set(names)) == PG_ROWS  # every row exactly once
    assert set(names) == {f"Bulk{i}" for i in range(PG_ROWS)}


def test_a_resumed_export_whose_part_file_was_lost_starts_again_and_has_each_row_once(app, world, export_dir):
    """A position committed for bytes the file no longer holds (the file deleted, a machine crash before
    the disk had it) is not trusted: the export starts again rather than padding the file."""
    from flask import g

    from app.models.employee import CrmUser

    view = next(v for v in app.appbuilder.baseviews if type(v).__name__ == "LeadView")
    saved = []
    with dbs(app) as s, app.test_request_context("/?_flt_0_name=ExpA&_l_=en"):
        g.user = s.get(CrmUser, world.seller)
        plan = view.export_plan()
        lost = {"phase": "rows", "after": sorted(world.mine)[0], "bytes": 500, "rows": 1}
        written = exports.write_file(plan, "csv", 999, lost, lambda at, done: saved.append(done) or True)
        with open(exports.file_path(999, "csv"), encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    assert (written, saved) == (3, [0, 3])  # from the header on, not from the lost position
    assert rows[0][:5] == HEADERS_EN and sorted(r[1] for r in rows[1:]) == [f"ExpA-{i}" for i in range(3)]
