"""The notification centre through the real parts: the circulation scan job on a real RQ worker reminding
each owner once a day, a failed job run telling its starter, the assignment and follow-up scans beside
their SMS, the bell on every page, marking read on the page and through the API, and scoping."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import func, select, update

from app.jobs.worker import app_worker_class
from app.models.employee import CrmUser, Employee
from app.models.inbox import (
    FOLLOW_UP_DUE,
    JOB_FAILED,
    JOB_FINISHED,
    NEW_ASSIGNMENT,
    RECYCLE_REMINDER,
    InboxNotification,
)
from app.models.jobs import CIRCULATION_SCAN, COMPLETED, FAILED, JobRun
from app.models.sales import CirculationRule, Opportunity
from app.models.sms import SmsMessage
from app.services import inbox, runner
from app.services.dispatch import dispatch_waiting
from app.services.errors import DomainError
from app.services.seed import DEMO_PASSWORD
from tests.conftest import api_token, login
from tests.helpers import utc

AT = "2026-11-24T10:00:00+08:00"  # a Tuesday morning in the business zone
NOW = utc(AT)
pytestmark = pytest.mark.instant(AT)
BREAKS, WORKS = "test_inbox_breaks", "test_inbox_works"


@runner.handler(BREAKS)
def breaks(ctx):
    raise DomainError("The file is not a CSV file")


@runner.handler(WORKS)
def works(ctx):
    return "all done"


def _work(app, name: str = "default") -> None:
    q = Queue(name, connection=Redis.from_url(app.config["REDIS_URL"]))
    app_worker_class(app, SimpleWorker)([q], connection=q.connection).work(burst=True)


def _user_id(session, username: str) -> int:
    return session.scalar(select(CrmUser.id).where(CrmUser.username == username))


def _web(app, username: str):
    client = app.test_client()
    assert login(client, username).status_code == 302
    client.get("/lang/en")
    return client


def _inbox(session, user_id: int, kind: str | None = None) -> list[InboxNotification]:
    session.expire_all()
    stmt = select(InboxNotification).where(InboxNotification.recipient_id == user_id)
    if kind:
        stmt = stmt.where(InboxNotification.kind == kind)
    return session.scalars(stmt.order_by(InboxNotification.id)).all()


def _bell(html: str) -> int | None:
    """The count on the bell (None: no bell on the page)."""
    if 'id="crm-inbox-bell"' not in html:
        return None
    return int(re.search(r'id="crm-inbox-count" data-unread="(\d+)"', html).group(1))


# --- recycle reminders from the circulation scan -----------------------------------------------------
@pytest.fixture
def owned(session):
    """The demo opportunities, dispatched, with every clock at NOW (nothing due for days)."""
    dispatch_waiting(session)
    session.execute(update(Opportunity).values(idle_since=NOW, assigned_at=NOW, protected_until=None,
                                               recycle_reminded_at=None))
    rule = session.scalar(select(CirculationRule).where(CirculationRule.name == "销售事业部默认流转规则"))
    rule.remind_hours = 24
    session.commit()
    by_owner: dict[int, list[int]] = {}
    for opp_id, owner_id in session.execute(select(Opportunity.id, Opportunity.owner_id)
                                            .where(Opportunity.owner_id.is_not(None)).order_by(Opportunity.id)):
        by_owner.setdefault(owner_id, []).append(opp_id)
    return rule, by_owner


def _due_in(session, rule, ids, hours: float) -> None:
    idle_since = NOW - dt.timedelta(days=rule.idle_days) + dt.timedelta(hours=hours)
    session.execute(update(Opportunity).where(Opportunity.id.in_(ids)).values(idle_since=idle_since))
    session.commit()


def _scan_job(app, session) -> JobRun:
    from app.jobs.dispatch import start_circulation_scan_job

    with app.app_context():
        run_id = start_circulation_scan_job()
    _work(app)
    session.expire_all()
    run = session.get(JobRun, run_id)
    assert (run.kind, run.status) == (CIRCULATION_SCAN, COMPLETED)
    return run


def test_the_circulation_scan_job_reminds_each_owner_once_a_day_with_the_count_and_date(app, session, owned):
    rule, by_owner = owned
    (a, a_opps), (b, b_opps) = [(e, ids) for e, ids in by_owner.items() if len(ids) >= 3][:2]
    _due_in(session, rule, a_opps[:2], 2)  # today, 12:00
    _due_in(session, rule, a_opps[2:3], 20)  # tomorrow, 06:00
    _due_in(session, rule, b_opps[:1], 22)  # tomorrow, 08:00
    user_a, user_b = (session.get(Employee, e).user_id for e in (a, b))

    first = _scan_job(app, session)
    assert json.loads(first.position)["reminded"] == 4
    _scan_job(app, session)  # run twice: still one each

    reminders = session.execute(select(InboxNotification.recipient_id, InboxNotification.params)
                                .where(InboxNotification.kind == RECYCLE_REMINDER)).all()
    assert {r.recipient_id: json.loads(r.params) for r in reminders} == {
        user_a: {"count": 3, "date": "2026-11-24"}, user_b: {"count": 1, "date": "2026-11-25"}}
    page = _web(app, session.get(CrmUser, user_a).username).get("/inbox/").get_data(as_text=True)
    assert "3 of your opportunities will be recycled on 2026-11-24" in page
    assert "/workbench/?f=recycle_soon" in page

    # Later the same day another of A's comes within the window: the day's reminder counts it (unread
    # again), no second notification; B's stays as it was.
    inbox.mark_all_read(session, user_a)
    session.commit()
    _due_in(session, rule, a_opps[3:4] or by_owner[a][-1:], 23)
    _scan_job(app, session)
    (mine,) = _inbox(session, user_a, RECYCLE_REMINDER)
    assert (mine.param_values, mine.read_at) == ({"count": 4, "date": "2026-11-24"}, None)
    assert len(_inbox(session, user_b, RECYCLE_REMINDER)) == 1


def test_the_next_day_makes_a_new_reminder(app, session, owned, traveller):
    rule, by_owner = owned
    owner, ids = next((e, ids) for e, ids in by_owner.items() if len(ids) >= 2)
    user = session.get(Employee, owner).user_id
    _due_in(session, rule, ids[:1], 3)
    _scan_job(app, session)
    traveller.shift(dt.timedelta(days=1))
    _due_in(session, rule, ids[1:2], 24 + 3)  # 3 h after the new now
    _scan_job(app, session)
    assert [(n.dedupe_key, n.param_values) for n in _inbox(session, user, RECYCLE_REMINDER)] == [
        ("2026-11-24", {"count": 1, "date": "2026-11-24"}),
        ("2026-11-25", {"count": 1, "date": "2026-11-25"})]


# --- jobs of yours ----------------------------------------------------------------------------------
def test_a_job_run_that_fails_tells_its_starter_and_one_that_completes_too(app, session):
    starter = _user_id(session, "backoffice1")
    failed = runner.start(session, BREAKS, target_type="thing", target_id=1, started_by=starter)
    done = runner.start(session, WORKS, target_type="thing", target_id=2, started_by=starter)
    system = runner.start(session, WORKS, target_type="thing", target_id=3)  # nobody to tell
    session.commit()
    _work(app)
    statuses = [session.get(JobRun, r.id).status for r in (failed, done, system)]
    assert statuses == [FAILED, COMPLETED, COMPLETED]

    notes = _inbox(session, starter)
    assert [(n.kind, n.subject_type, n.subject_id) for n in notes] == [
        (JOB_FAILED, "job_run", failed.id), (JOB_FINISHED, "job_run", done.id)]
    assert session.scalar(select(func.count()).select_from(InboxNotification)) == 2
    client = _web(app, "backoffice1")
    html = client.get("/inbox/").get_data(as_text=True)
    assert f"Your job {BREAKS} #{failed.id} failed" in html and f'href="/jobs/show/{failed.id}"' in html
    assert _bell(client.get("/jobs/").get_data(as_text=True)) == 2


def test_job_titles_are_translated_for_the_reader(app, session):
    starter = _user_id(session, "backoffice1")
    run = JobRun(kind="lead_import", status=FAILED, started_by_fk=starter, finished_at=NOW, queue="default")
    session.add(run)
    session.flush()
    inbox.job_ended(session, run)
    session.commit()
    client = _web(app, "backoffice1")
    assert f"Your job Lead import #{run.id} failed" in client.get("/inbox/").get_data(as_text=True)
    client.get("/lang/zh_CN")
    assert f"您的任务 线索导入 #{run.id} 失败" in client.get("/inbox/").get_data(as_text=True)


# --- assignments and follow-ups, beside their SMS ------------------------------------------------------
def test_new_assignments_and_follow_ups_due_reach_the_inbox_without_an_sms_template(app, session):
    from app.services.sms import notification_triggers

    redis = Redis.from_url(app.config["REDIS_URL"])
    notification_triggers.notify_assignments(session, redis=redis)  # the baseline
    dispatch_waiting(session)
    owners = dict(session.execute(select(Opportunity.id, Employee.user_id)
                                  .join(Employee, Employee.id == Opportunity.owner_id)).all())
    assert owners
    notification_triggers.notify_assignments(session, redis=redis)
    notification_triggers.notify_assignments(session, redis=redis)  # again: nothing twice
    redis.delete(notification_triggers.WATERMARK_KEY)  # Redis lost the watermark: the inbox remembers it
    notification_triggers.notify_assignments(session, redis=redis)
    told = session.execute(select(InboxNotification.subject_id, InboxNotification.recipient_id)
                           .where(InboxNotification.kind == NEW_ASSIGNMENT)).all()
    assert sorted(told) == sorted(owners.items())
    assert session.scalar(select(func.count()).select_from(SmsMessage)) == 0  # no template: no SMS

    opp_id = min(owners)
    session.execute(update(Opportunity).where(Opportunity.id == opp_id)
                    .values(next_followup_at=NOW - dt.timedelta(minutes=5)))
    session.commit()
    notification_triggers.notify_followups_due(session, redis=redis)
    notification_triggers.notify_followups_due(session, redis=redis)
    (due,) = _inbox(session, owners[opp_id], FOLLOW_UP_DUE)
    assert (due.subject_type, due.subject_id) == ("opportunity", opp_id)
    assert due.param_values["due"] == "2026-11-24 09:55"
    assert session.scalar(select(func.count()).select_from(SmsMessage)) == 0
    username = session.get(CrmUser, owners[opp_id]).username
    html = _web(app, username).get("/inbox/").get_data(as_text=True)
    assert "Follow-up due at 2026-11-24 09:55" in html and f'href="/opportunityview/show/{opp_id}"' in html


# --- the bell, the page, the API, scoping ----------------------------------------------------------------
def _three_for(session, username: str) -> list[int]:
    user = _user_id(session, username)
    ids = [inbox.notify(session, user, NEW_ASSIGNMENT, inbox.TITLES[NEW_ASSIGNMENT],
                        {"customer": f"客户{n}", "opportunity": n}, subject=("opportunity", n),
                        dedupe_key=f"t{n}", now=NOW + dt.timedelta(minutes=n)) for n in range(3)]
    session.commit()
    return ids


def test_the_bell_counts_unread_on_every_page_and_marking_read_on_the_page_and_the_api(app, session):
    ids = _three_for(session, "sales11")
    client = _web(app, "sales11")
    for url in ("/", "/workbench/", "/opportunityview/list/", "/jobs/"):
        assert _bell(client.get(url).get_data(as_text=True)) == 3, url
    html = client.get("/inbox/").get_data(as_text=True)
    shown = [int(i) for i in re.findall(r'class="crm-notification info crm-unread" data-id="(\d+)"', html)]
    assert shown == ids[::-1]  # newest first, all unread

    assert client.post(f"/inbox/read/{ids[0]}").status_code == 302
    assert _bell(client.get("/").get_data(as_text=True)) == 2
    resp = client.post(f"/api/v1/inbox/{ids[1]}/read")
    assert resp.status_code == 200 and resp.get_json()["unread"] == 1
    body = client.get("/api/v1/inbox/").get_json()
    assert (body["count"], body["unread"]) == (3, 1)
    assert [(r["id"], r["read"]) for r in body["result"]] == [(ids[2], False), (ids[1], True), (ids[0], True)]
    assert body["result"][0]["title"] == "New opportunity assigned to you: 客户2"
    assert body["result"][0]["created_at"] == "2026-11-24T10:02:00+08:00"
    assert client.post("/inbox/read_all").status_code == 302
    assert _bell(client.get("/").get_data(as_text=True)) == 0
    assert client.get("/api/v1/inbox/?unread=1").get_json()["count"] == 0


def test_another_user_cannot_read_or_mark_mine(app, session):
    mine = _three_for(session, "sales11")
    other = _web(app, "sales12")
    assert _bell(other.get("/").get_data(as_text=True)) == 0
    assert other.get("/api/v1/inbox/").get_json()["count"] == 0
    assert "客户" not in other.get("/inbox/").get_data(as_text=True)
    assert other.post(f"/inbox/read/{mine[0]}").status_code == 404
    resp = other.post(f"/api/v1/inbox/{mine[1]}/read")
    assert resp.status_code == 404 and resp.get_json()["message"] == "No such notification"
    assert other.post("/api/v1/inbox/read_all").get_json()["marked"] == 0
    assert other.post("/inbox/read_all").status_code == 302
    assert other.post("/api/v1/inbox/99999999999/read").status_code == 404  # beyond 32 bits: still a 404
    assert [n.read_at for n in _inbox(session, _user_id(session, "sales11"))] == [None, None, None]
    # By JWT as well: only one's own.
    token = api_token(app.test_client(), "sales12")
    assert app.test_client().get("/api/v1/inbox/", headers={"Authorization": f"Bearer {token}"}
                                 ).get_json()["count"] == 0
    assert _web(app, "sales11").get("/api/v1/inbox/").get_json()["unread"] == 3


def test_bad_list_arguments_are_a_400_naming_the_field(app, session):
    client = _web(app, "sales11")
    for query, field in (("page=-1", "page"), ("page=abc", "page"), ("page_size=0", "page_size"),
                         ("page_size=100000", "page_size"), ("page=99999999999999999999", "page"),
                         ("unread=yes", "unread"), ("unread=2", "unread"), ("page=²", "page"),
                         ("page=" + "9" * 5000, "page")):
        resp = client.get(f"/api/v1/inbox/?{query}")
        assert resp.status_code == 400 and resp.get_json()["field"] == field, query
    assert client.get("/inbox/?page=99999999999999999999").status_code == 200


@pytest.mark.config(WTF_CSRF_ENABLED=True)
def test_the_page_script_marks_read_through_the_api_with_the_csrf_header(app, session):
    ids = _three_for(session, "sales11")
    client = app.test_client()
    page = client.get("/login/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    assert client.post("/login/", data={"username": "sales11", "password": DEMO_PASSWORD,
                                        "csrf_token": token}).status_code in (302, 200)
    html = client.get("/inbox/").get_data(as_text=True)
    assert "X-CSRFToken" in html
    token = re.search(r'var token = "([^"]+)"', html).group(1)
    assert client.post(f"/api/v1/inbox/{ids[0]}/read").status_code == 400  # the session alone: refused
    resp = client.post(f"/api/v1/inbox/{ids[0]}/read", headers={"X-CSRFToken": token})
    assert resp.status_code == 200 and resp.get_json()["unread"] == 2


def test_every_human_role_has_an_inbox_and_the_login_page_no_bell(app, session):
    from app.services.seed import demo_logins

    assert _bell(app.test_client().get("/login/").get_data(as_text=True)) is None
    for username, _password, role in demo_logins():
        client = _web(app, username)
        assert client.get("/inbox/").status_code == 200, role
        assert _bell(client.get("/").get_data(as_text=True)) == 0, role


def test_the_scan_reminders_and_the_api_on_postgresql(pg_app):
    from app.extensions import db
    from app.services.circulation import scan

    with pg_app.app_context():
        session = db.session
        dispatch_waiting(session)
        session.execute(update(Opportunity).values(idle_since=NOW, assigned_at=NOW, protected_until=None,
                                                   recycle_reminded_at=None))
        rule = session.scalar(select(CirculationRule).where(CirculationRule.name == "销售事业部默认流转规则"))
        rule.remind_hours = 24
        session.commit()
        owner, ids = session.execute(select(Opportunity.owner_id, func.array_agg(Opportunity.id))
                                     .where(Opportunity.owner_id.is_not(None)).group_by(Opportunity.owner_id)
                                     .order_by(Opportunity.owner_id).limit(1)).one()
        user = session.get(Employee, owner).user_id
        _due_in(session, rule, ids[:1], 2)
        assert scan(session, now=NOW).reminded == 1
        assert scan(session, now=NOW).reminded == 0
        _due_in(session, rule, ids[1:2], 5)
        assert scan(session, now=NOW + dt.timedelta(minutes=10)).reminded == 1
        (mine,) = _inbox(session, user, RECYCLE_REMINDER)
        assert mine.param_values == {"count": 2, "date": "2026-11-24"}
        username = session.get(CrmUser, user).username
        session.remove()
    client = _web(pg_app, username)
    assert _bell(client.get("/").get_data(as_text=True)) == 1
    assert client.post("/api/v1/inbox/99999999999/read").status_code == 404
    assert client.post(f"/api/v1/inbox/{mine.id}/read").get_json()["unread"] == 0
    assert client.get("/api/v1/inbox/?page=100000").get_json()["result"] == []
