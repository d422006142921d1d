"""The learning system's import (POST /api/v1/learning/activities → a "learning_import" job run on a real
RQ SimpleWorker) and the learning panel of the customer page.

Policy under test (app.services.learning): the request is signed with LEARNING_API_SECRET (no secret: 401);
the envelope is checked at the edge (4xx naming the field); each row stands on its own — bad rows and rows
of unknown users are reported with their line, the others kept; an activity id is stored once; a run
resumes from its saved position; the summary is recomputed from all of a customer's activity.
"""

from __future__ import annotations

import json

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import func, select

from app.jobs.worker import app_worker_class
from app.models.jobs import COMPLETED, JobRun
from app.models.learning import LearningActivity, LearningSummary
from app.models.sales import OWNED, Customer, Opportunity
from app.services import learning, runner, signing
from app.services.customers import Registration, register
from app.views.learning import HEADERS
from tests import factories
from tests.conftest import login

URL = "/api/v1/learning/activities"
SECRET = "test-learning-secret"


def signed_post(client, body, secret: str = SECRET, headers: dict | None = None, now: float | None = None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = signing.callback_headers(HEADERS, secret, data, now=now)
    sent.update(headers or {})
    return client.post(URL, data=data, headers={**sent, "Content-Type": "application/json"})


def signed_get(client, path: str):
    return client.get(path, headers=signing.callback_headers(HEADERS, SECRET, b""))


def work(app) -> None:
    q = Queue("default", connection=Redis.from_url(app.config["REDIS_URL"]))
    assert app_worker_class(app, SimpleWorker)([q], connection=q.connection).work(burst=True)


def registered(session, user_id: str, phone: str, name: str = "学员") -> Customer:
    customer = register(session, Registration(user_id, phone, name))
    session.commit()
    return customer


def row(n: int, user_id: str = "U1", **fields) -> dict:
    values = {"id": f"A{n}", "user_id": user_id, "course": "Python 入门", "lesson": f"第{n}课",
              "attended": True, "progress": min(100, n * 10), "occurred_at": "2026-06-16T19:30:00+08:00"}
    values.update(fields)
    return values


def web(app, username: str):
    client = app.test_client()
    assert login(client, username).status_code == 302
    client.get("/lang/en")
    return client


# --- signature and envelope -----------------------------------------------------------------------------
def test_signature_good_forged_stale_missing(app, client, session):
    body = {"activities": [row(1)]}
    assert signed_post(client, body).status_code == 202
    forged = signed_post(client, body, secret="not-the-secret")
    assert forged.status_code == 401 and forged.get_json()["field"] == "X-Learning-Signature"
    stale = signed_post(client, body, now=signing.clock.timestamp() - 3600)
    assert stale.status_code == 401 and stale.get_json()["field"] == "X-Learning-Timestamp"
    data = json.dumps(body).encode()
    missing = client.post(URL, data=data, headers={"Content-Type": "application/json"})
    assert missing.status_code == 401 and missing.get_json()["field"] == "X-Learning-Timestamp"
    # A signed body changed on the way is refused.
    sent = signing.callback_headers(HEADERS, SECRET, data)
    tampered = client.post(URL, data=data.replace(b"A1", b"A2"), headers=sent)
    assert tampered.status_code == 401
    assert session.scalar(select(func.count()).select_from(JobRun).where(JobRun.kind == learning.KIND)) == 1


@pytest.mark.config(LEARNING_API_SECRET="")
def test_no_secret_configured_refuses_everything(app, client):
    resp = signed_post(client, {"activities": [row(1)]}, secret="")
    assert resp.status_code == 401
    resp = signed_post(client, {"activities": [row(1)]}, secret="anything")
    assert resp.status_code == 401


@pytest.mark.parametrize("body,status,field", [
    (b"[1, 2]", 400, "body"),
    ({"rows": []}, 400, "activities"),
    ({"activities": {"id": 1}}, 400, "activities"),
    ({"activities": []}, 400, "activities"),
    ({"activities": [row(i) for i in range(learning.MAX_ROWS + 1)]}, 413, "activities"),
    (b"not json", 400, "body"),
])
def test_a_bad_envelope_is_refused_naming_the_field(app, client, session, body, status, field):
    resp = signed_post(client, body)
    assert resp.status_code == status, resp.get_json()
    assert resp.get_json()["field"] == field
    assert session.scalar(select(func.count()).select_from(JobRun).where(JobRun.kind == learning.KIND)) == 0


def test_a_body_over_the_cap_is_refused_unread(app, client):
    data = b'{"activities": "' + b"x" * (4 * 1024 * 1024) + b'"}'
    resp = client.post(URL, data=data, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.get_json()["field"] == "body"


# --- the import ---------------------------------------------------------------------------------------
def test_import_applies_rows_reports_bad_and_unknown_and_is_idempotent(app, client, session):
    alice = registered(session, "U1", "13800001111")
    bob = registered(session, "U2", "13800002222")
    rows = [
        row(1, attended=True, progress=10, occurred_at="2026-06-10T19:00:00+08:00"),
        row(2, attended=False, progress=None, occurred_at="2026-06-12T19:00:00+08:00"),
        row(3, attended=True, progress=40, occurred_at=1781600000),  # Unix seconds
        row(4, user_id="U2", course="英语", attended=None, progress=5),
        row(5, user_id="NOBODY"),
        row(6, progress=101),
        row(7, occurred_at="2026-06-10T19:00:00"),  # no offset
        {"id": "A8", "user_id": "U1"},
        "not an object",
        row(1),  # repeats line 1
    ]
    resp = signed_post(client, {"activities": rows})
    assert resp.status_code == 202
    run_id = resp.get_json()["run_id"]
    assert resp.get_json()["rows"] == len(rows)
    assert signed_get(client, f"/api/v1/learning/runs/{run_id}").get_json()["status"] == "queued"
    work(app)

    state = signed_get(client, f"/api/v1/learning/runs/{run_id}").get_json()
    assert state["status"] == COMPLETED
    assert (state["done"], state["failed"], state["total"]) == (5, 5, len(rows))
    problems = {p["line"]: p["errors"] for p in state["problems"]}
    assert set(problems) == {5, 6, 7, 8, 9}
    assert "unknown user" in problems[5]["user_id"]
    assert problems[6] == {"progress": "must be between 0 and 100"}
    assert "offset" in problems[7]["occurred_at"]
    assert set(problems[8]) == {"course", "occurred_at"}
    assert "line 5: user_id unknown user" in state["summary"]
    assert "4 imported, 1 already imported, 1 of unknown users, 4 invalid" in state["summary"]

    session.expire_all()
    assert session.scalar(select(func.count()).select_from(LearningActivity)) == 4
    summary = session.get(LearningSummary, alice.id)
    assert (summary.lessons_attended, summary.lessons_missed, summary.courses, summary.progress) == (
        2, 1, 1, 40)
    # Last active: the latest lesson attended (the missed one of the 12th does not count).
    assert summary.last_active_at == signing.parse_time(1781600000)
    other = session.get(LearningSummary, bob.id)
    assert (other.lessons_attended, other.lessons_missed, other.courses, other.progress) == (0, 0, 1, 5)

    # The same batch again: a new run that adds nothing; a new activity updates the summary.
    again = signed_post(client, {"activities": rows + [row(9, attended=True, progress=60)]})
    assert again.status_code == 202 and again.get_json()["run_id"] != run_id
    work(app)
    state = signed_get(client, f"/api/v1/learning/runs/{again.get_json()['run_id']}").get_json()
    assert "1 imported, 5 already imported" in state["summary"]
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(LearningActivity)) == 5
    summary = session.get(LearningSummary, alice.id)
    assert (summary.lessons_attended, summary.progress) == (3, 60)


def test_the_same_batch_posted_twice_before_it_runs_is_one_run(app, client, session):
    registered(session, "U1", "13800001111")
    first = signed_post(client, {"activities": [row(1)]}).get_json()["run_id"]
    assert signed_post(client, {"activities": [row(1)]}).get_json()["run_id"] == first
    assert signed_post(client, {"activities": [row(2)]}).get_json()["run_id"] != first


def test_a_run_resumes_from_its_saved_position_without_doubles(app, client, session):
    registered(session, "U1", "13800001111")
    rows = [row(i, progress=i % 101) for i in range(1, learning.CHUNK + 51)]
    run_id = signed_post(client, {"activities": rows}).get_json()["run_id"]
    Queue("default", connection=Redis.from_url(app.config["REDIS_URL"])).empty()  # its worker died …
    # … after committing its first chunk with the run's checkpoint (what the handler does per chunk),
    # and after applying part of the second chunk in a transaction that never committed its checkpoint.
    job = session.get(JobRun, run_id)
    tally = learning.Tally()
    learning.apply_chunk(session, rows[:learning.CHUNK], 0, tally)
    ctx = runner.RunContext(run_id=job.id, kind=job.kind, target_type=job.target_type,
                            target_id=job.target_id, params={}, position=None, attempt=1)
    ctx.checkpoint(session, done=tally.done, failed=tally.failed, position=tally.as_position())
    session.commit()
    learning.apply_chunk(session, rows[learning.CHUNK:learning.CHUNK + 20], learning.CHUNK, learning.Tally())
    session.commit()

    actions = runner.watchdog(session, signing.clock.utcnow() + signing.dt.timedelta(minutes=5))
    session.commit()
    assert len(actions) == 1
    work(app)
    state = signed_get(client, f"/api/v1/learning/runs/{run_id}").get_json()
    assert state["status"] == COMPLETED and state["done"] == len(rows)
    assert f"{len(rows) - 20} imported, 20 already imported" in state["summary"]
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(LearningActivity)) == len(rows)


def test_a_merged_customers_activity_lands_on_the_survivor(app, session):
    survivor = factories.CUSTOMER.create(session, phone="+8613800003333")
    merged = factories.CUSTOMER.create(session, phone="+8613800004444", registered_user_id="U9",
                                       merged_into_id=survivor.id)
    session.commit()
    tally = learning.Tally()
    learning.apply_chunk(session, [row(1, user_id="U9")], 0, tally)
    session.commit()
    assert tally.inserted == 1
    assert session.scalar(select(LearningActivity.customer_id)) == survivor.id != merged.id


# --- the customer page --------------------------------------------------------------------------------
@pytest.mark.instant("2026-06-17T10:00:00+08:00")
def test_the_panel_shows_the_timeline_in_business_time_to_those_who_see_the_customer(app, session):
    opp = session.scalars(select(Opportunity).order_by(Opportunity.id).limit(1)).one()
    owner = factories.employee_by_username(session, "sales11")
    opp.status, opp.owner_id, opp.org_unit_id = OWNED, owner.id, owner.org_unit_id
    opp.customer.registered_user_id = "U77"
    session.commit()
    customer_id = opp.customer_id
    tally = learning.Tally()
    learning.apply_chunk(session, [
        row(1, user_id="U77", course="少儿编程", lesson="变量", attended=True, progress=30,
            occurred_at="2026-06-16T23:30:00Z"),  # 07:30 on the 17th in Shanghai
        row(2, user_id="U77", course="少儿编程", lesson="循环", attended=False, progress=None,
            occurred_at="2026-06-17T01:00:00+00:00"),
    ], 0, tally)
    session.commit()

    page = web(app, "sales11").get(f"/customer/show/{customer_id}").get_data(as_text=True)
    assert 'id="crm-customer-learning"' in page and "变量" in page and "循环" in page
    assert "2026-06-17 07:30:00" in page and "2026-06-17 09:00:00" in page  # business time zone
    assert 'data-attended="1"' in page and 'data-missed="1"' in page and "Absent" in page
    assert page.index("循环") < page.index("变量")  # newest first

    # A salesperson who does not see the customer does not get the page (nor its panel).
    other = web(app, "sales21")
    resp = other.get(f"/customer/show/{customer_id}", follow_redirects=True)
    assert resp.status_code == 404 and "变量" not in resp.get_data(as_text=True)


def test_the_panel_needs_the_learning_permission(app, session):
    customer = registered(session, "U5", "13800005555")
    learning.apply_chunk(session, [row(1, user_id="U5", lesson="独有的课")], 0, learning.Tally())
    session.commit()
    page = web(app, "admin").get(f"/customer/show/{customer.id}").get_data(as_text=True)
    assert "独有的课" in page
    # Back office reads customers but not learning (no ("can_read", "Learning")): no panel.
    page = web(app, "backoffice1").get(f"/customer/show/{customer.id}").get_data(as_text=True)
    assert "crm-customer-learning" not in page


# --- the administrators' upload -----------------------------------------------------------------------
def test_an_uploaded_csv_runs_the_same_import(app, session):
    registered(session, "U1", "13800001111")
    data = ("id,user_id,course,lesson,attended,progress,occurred_at\n"
            "F1,U1,英语,第1课,true,20,2026-06-16T19:00:00+08:00\n"
            "F2,U1,英语,第2课,否,,2026-06-16T20:00:00+08:00\n"
            "F3,U1,英语,第3课,maybe,,2026-06-16T20:00:00+08:00\n").encode()
    client = web(app, "admin")
    from io import BytesIO

    resp = client.post("/learning/import", data={"file": (BytesIO(data), "week.csv")},
                       content_type="multipart/form-data")
    assert resp.status_code == 302
    work(app)
    job = session.scalar(select(JobRun).where(JobRun.kind == learning.KIND).order_by(JobRun.id.desc()))
    assert job.status == COMPLETED and (job.done, job.failed) == (2, 1)
    assert "line 3: attended must be true, false or null" in job.summary
    bad = client.post("/learning/import", data={"file": (BytesIO(b"a,b\n1,2\n"), "x.csv")},
                      content_type="multipart/form-data")
    assert bad.status_code == 200 and "must name the columns" in bad.get_data(as_text=True)
    assert web(app, "sales11").get("/learning/import").status_code in (302, 403)
    for username in ("sales11", "manager1", "director"):  # who cannot import does not see the entry
        assert 'href="/learning/import"' not in web(app, username).get("/").get_data(as_text=True)
    assert 'href="/learning/import"' in client.get("/").get_data(as_text=True)


# --- the demo -----------------------------------------------------------------------------------------
def test_the_demo_seed_registers_customers_and_is_idempotent(app, session):
    from app.services import seed_learning

    first = seed_learning.seed_demo(session)
    assert first["learning_customers"] == seed_learning.DEMO_CUSTOMERS
    assert first["learning_activities"] == seed_learning.DEMO_CUSTOMERS * seed_learning.LESSONS
    assert seed_learning.seed_demo(session) == {**first, "learning_activities": 0}
    assert session.scalar(select(func.count()).select_from(LearningSummary)) == seed_learning.DEMO_CUSTOMERS
    assert session.scalar(select(func.count()).select_from(Customer).where(
        Customer.registered_user_id.like("demo-u%"))) == seed_learning.DEMO_CUSTOMERS


def test_a_merge_can_move_the_activity_to_the_survivor(app, session):
    survivor = registered(session, "U1", "13800001111")
    merged = registered(session, "U2", "13800002222")
    learning.apply_chunk(session, [row(1, user_id="U1"), row(2, user_id="U2"), row(3, user_id="U2",
                                                                                   attended=False)],
                         0, learning.Tally())
    session.commit()
    assert learning.move_to_survivor(session, merged.id, survivor.id) == 2
    session.commit()
    session.expire_all()
    assert session.get(LearningSummary, merged.id) is None
    summary = session.get(LearningSummary, survivor.id)
    assert (summary.lessons_attended, summary.lessons_missed) == (2, 1)
