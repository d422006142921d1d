"""The big-data system's signed import (POST /api/v1/bigdata/tags and /events → a TAG_IMPORT job run on a
real RQ SimpleWorker; GET /api/v1/bigdata/runs/<id>), the nightly TAG_REFRESH run, and the manual tagging
JSON API (/api/v1/tag/…, /api/v1/tagging/…).

Policy under test: signed with BIGDATA_API_SECRET (none: 401); the envelope is checked at the edge (4xx
naming the field); rows stand on their own (bad and unknown ones reported with their line, the rest
kept); a batch applied twice changes nothing; a killed run resumes from its checkpoint; imported tags are
created on first use; the manual tagging API is scoped, audited and names the field it refuses.
"""

from __future__ import annotations

import json

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import func, select

from app.clock import utcnow
from app.jobs.tags import start_tag_refresh_job
from app.models.audit import AuditLog
from app.models.bigdata import (
    CUSTOMER,
    IMPORTED,
    OPPORTUNITY,
    RULE,
    TRIAL_LESSONS,
    VISITED_PAGE,
    CustomerEvent,
    CustomerTag,
    OpportunityTag,
    Tag,
)
from app.models.jobs import COMPLETED, TAG_IMPORT, TAG_REFRESH, JobRun
from app.models.sales import OWNED
from app.services import runner, signing, tag_import, tags
from app.views.tags_api import HEADERS
from tests import factories as f
from tests.conftest import api_token
from tests.test_learning import work

SECRET = "test-bigdata-secret"
TAGS_URL, EVENTS_URL = "/api/v1/bigdata/tags", "/api/v1/bigdata/events"


def signed_post(client, url, body, secret: str = SECRET, now: float | None = None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = signing.callback_headers(HEADERS, secret, data, now=now)
    return client.post(url, data=data, headers={**sent, "Content-Type": "application/json"})


def state(client, run_id: int) -> dict:
    return client.get(f"/api/v1/bigdata/runs/{run_id}",
                      headers=signing.callback_headers(HEADERS, SECRET, b"")).get_json()


def runs(session) -> int:
    return session.scalar(select(func.count()).select_from(JobRun).where(JobRun.kind == TAG_IMPORT))


# --- signature and envelope -----------------------------------------------------------------------------
def test_signature_good_forged_stale_missing(app, client, session):
    body = {"assignments": [{"tag": "bd-x", "customer_id": 1}]}
    assert signed_post(client, TAGS_URL, body).status_code == 202
    forged = signed_post(client, TAGS_URL, body, secret="nope")
    assert forged.status_code == 401 and forged.get_json()["field"] == "X-BigData-Signature"
    stale = signed_post(client, EVENTS_URL, body, now=signing.clock.timestamp() - 3600)
    assert stale.status_code == 401 and stale.get_json()["field"] == "X-BigData-Timestamp"
    assert client.post(TAGS_URL, json=body).status_code == 401
    assert client.get("/api/v1/bigdata/runs/1").status_code == 401
    assert runs(session) == 1


@pytest.mark.config(BIGDATA_API_SECRET="")
def test_no_secret_configured_refuses_everything(app, client):
    for secret in ("", "anything"):
        assert signed_post(client, TAGS_URL, {"assignments": []}, secret=secret).status_code == 401
        assert signed_post(client, EVENTS_URL, {"events": []}, secret=secret).status_code == 401


@pytest.mark.parametrize("url,body,status,field", [
    (TAGS_URL, b"[1]", 400, "body"),
    (TAGS_URL, b"not json", 400, "body"),
    (TAGS_URL, {}, 400, "assignments"),
    (TAGS_URL, {"tags": [], "assignments": []}, 400, "assignments"),
    (TAGS_URL, {"assignments": {"tag": "x"}}, 400, "assignments"),
    (TAGS_URL, {"tags": "x", "assignments": [{}]}, 400, "tags"),
    (TAGS_URL, {"assignments": [{}] * (tag_import.MAX_ROWS + 1)}, 413, "assignments"),
    (TAGS_URL, {"tags": [{}] * (tag_import.MAX_TAGS + 1)}, 413, "tags"),
    (EVENTS_URL, {"rows": []}, 400, "events"),
    (EVENTS_URL, {"events": []}, 400, "events"),
    (EVENTS_URL, {"events": 3}, 400, "events"),
])
def test_a_bad_envelope_is_refused_naming_the_field(app, client, session, url, body, status, field):
    resp = signed_post(client, url, body)
    assert resp.status_code == status, resp.get_json()
    assert resp.get_json()["field"] == field
    assert runs(session) == 0


def test_unknown_run_ids_are_404(app, client, session):
    other = f.JOB_RUN.create(session, kind=TAG_REFRESH)
    for run_id in (other.id, 2**31 + 5):
        assert client.get(f"/api/v1/bigdata/runs/{run_id}",
                          headers=signing.callback_headers(HEADERS, SECRET, b"")).status_code == 404


# --- the tags import ------------------------------------------------------------------------------------
def test_tags_import_creates_tags_applies_rows_reports_bad_ones_and_is_idempotent(app, client, session):
    alice = f.CUSTOMER.create(session, phone="+8613800001111")
    bob = f.CUSTOMER.create(session)
    merged = f.CUSTOMER.create(session, merged_into_id=bob.id)
    opp = f.OPPORTUNITY.create(session, customer_id=bob.id)
    manual = f.TAG.create(session, code="vip")
    body = {
        "tags": [{"code": "bd-high-value", "name": "高价值用户"},
                 {"code": "vip", "name": "not ours"},  # a manual tag's code
                 {"code": "bd-opp", "name": "商机标签", "subject": "opportunity"},
                 {"code": "bad code"}],
        "assignments": [
            {"id": "r1", "tag": "bd-high-value", "customer_phone": "13800001111"},
            {"id": "r2", "tag": "bd-high-value", "customer_id": merged.id},  # lands on the survivor
            {"id": "r3", "tag": "bd-new", "customer_id": alice.id},  # created on first use
            {"id": "r4", "tag": "bd-opp", "opportunity_id": opp.id},
            {"id": "r5", "tag": "bd-high-value", "customer_id": 2**31 - 1},  # unknown
            {"id": "r6", "tag": "vip", "customer_id": alice.id},  # not an imported tag
            {"id": "r7", "tag": "bd-high-value", "customer_id": alice.id, "action": "maybe"},
            {"id": "r8", "tag": "bd-high-value", "customer_id": alice.id, "opportunity_id": opp.id},
            {"id": "r9", "tag": "bd-opp", "customer_id": alice.id},  # a tag of opportunities
            "nope",
        ]}
    resp = signed_post(client, TAGS_URL, body)
    assert resp.status_code == 202 and resp.get_json()["rows"] == 10 and resp.get_json()["tags"] == 4
    run_id = resp.get_json()["run_id"]
    assert state(client, run_id)["status"] == "queued"
    work(app)
    done = state(client, run_id)
    assert done["status"] == COMPLETED, done
    problems = {(p["list"], p["line"]): p["errors"] for p in done["problems"]}
    assert set(problems) == {("tags", 2), ("tags", 4), ("assignments", 5), ("assignments", 6),
                             ("assignments", 7), ("assignments", 8), ("assignments", 9), ("assignments", 10)}
    assert "manual tag" in problems[("tags", 2)]["code"] and "unknown" in problems[("assignments", 5)][
        "customer_id"]
    assert "not an imported one" in problems[("assignments", 6)]["tag"]
    assert "tag of opportunities" in problems[("assignments", 9)]["tag"]
    assert "4 added" in done["summary"] and "3 tags created" in done["summary"]

    session.expire_all()
    high = tags.by_code(session, "bd-high-value")
    assert (high.source, high.name, high.member_count) == (IMPORTED, "高价值用户", 2)
    assert high.computed_at is not None
    on = select(CustomerTag.customer_id).where(CustomerTag.tag_id == high.id)
    assert set(session.scalars(on)) == {alice.id, bob.id}
    assert tags.by_code(session, "bd-new").subject == CUSTOMER
    assert session.get(OpportunityTag, (tags.by_code(session, "bd-opp").id, opp.id)).source == IMPORTED
    assert session.get(Tag, manual.id).name != "not ours"

    # The same batch again: nothing changes; then a removal takes only imported memberships.
    again = signed_post(client, TAGS_URL, body).get_json()["run_id"]
    work(app)
    assert "0 added, 0 removed" in state(client, again)["summary"]
    remove = signed_post(client, TAGS_URL, {"assignments": [
        {"tag": "bd-high-value", "customer_id": alice.id, "action": "remove"},
        {"tag": "bd-high-value", "customer_id": bob.id, "action": "remove"},
        {"tag": "bd-high-value", "customer_id": bob.id, "action": "add"},  # the last line wins
    ]}).get_json()["run_id"]
    work(app)
    assert "0 added, 1 removed" in state(client, remove)["summary"]
    session.expire_all()
    assert session.get(Tag, high.id).member_count == 1


def test_the_same_batch_posted_twice_before_it_runs_is_one_run(app, client, session):
    body = {"assignments": [{"tag": "bd-x", "customer_id": 1}]}
    first = signed_post(client, TAGS_URL, body).get_json()["run_id"]
    assert signed_post(client, TAGS_URL, body).get_json()["run_id"] == first
    assert signed_post(client, EVENTS_URL, {"events": [{"id": "e", "customer_id": 1, "detail": "/x",
                                                        "occurred_at": 1781600000}]}).get_json()["run_id"] \
        != first


def test_a_killed_import_resumes_from_its_checkpoint_without_doubles(app, client, session):
    people = [f.CUSTOMER.create(session) for _ in range(12)]
    rows = [{"tag": "bd-many", "customer_id": p.id, "id": f"k{i}"} for i, p in enumerate(people)]
    rows += [{"tag": "bd-many", "customer_id": p.id, "action": "remove"} for p in people[:3]]
    app.config["CRM_TAG_IMPORT_CHUNK"] = 5
    run_id = signed_post(client, TAGS_URL, {"tags": [{"code": "bd-many", "name": "多"}],
                                            "assignments": rows}).get_json()["run_id"]
    Queue("default", connection=Redis.from_url(app.config["REDIS_URL"])).empty()  # its worker died …
    # … after committing the definitions and the first chunk with the checkpoint, and after applying part of
    # the second chunk in a transaction that never committed its checkpoint.
    job = session.get(JobRun, run_id)
    ctx = runner.RunContext(run_id=job.id, kind=job.kind, target_type=job.target_type,
                            target_id=job.target_id, params={}, position=None, attempt=1)
    tally = tag_import.Tally()
    tag_import.apply_definitions(session, [{"code": "bd-many", "name": "多"}], tally, utcnow())
    tag_import.apply_assignments(session, rows[:5], 0, tally)
    ctx.checkpoint(session, done=tally.done, failed=tally.failed, position=tally.as_position())
    session.commit()
    tag_import.apply_assignments(session, rows[5:8], 5, tag_import.Tally())
    session.commit()

    assert len(runner.watchdog(session, utcnow() + signing.dt.timedelta(minutes=5))) == 1
    session.commit()
    work(app)
    done = state(client, run_id)
    assert done["status"] == COMPLETED, done
    assert "9 added, 3 removed, 3 unchanged" in done["summary"]  # the 3 of the dead chunk: already on
    session.expire_all()
    tag = tags.by_code(session, "bd-many")
    assert tag.member_count == 9 == session.scalar(select(func.count()).select_from(CustomerTag)
                                                   .where(CustomerTag.tag_id == tag.id))


# --- events --------------------------------------------------------------------------------------------
def test_events_are_stored_once_and_feed_the_visited_page_rule(app, client, session):
    alice = f.CUSTOMER.create(session, phone="+8613800002222")
    events = [
        {"id": "pv-1", "customer_phone": "13800002222", "kind": "page_view",
         "detail": "https://www.example.com/price", "occurred_at": "2026-06-16T19:30:00+08:00"},
        {"id": "pv-2", "customer_id": alice.id, "detail": "/about", "occurred_at": 1781600000},
        {"id": "pv-3", "customer_id": 2**31 - 1, "detail": "/price", "occurred_at": 1781600000},
        {"id": "pv-4", "customer_id": alice.id, "detail": "/price", "occurred_at": "2026-06-16T19:30:00"},
        {"id": "pv-5", "customer_id": alice.id, "kind": "Page View!", "occurred_at": 1781600000},
        {"id": "pv-6", "opportunity_id": 1, "detail": "/price", "occurred_at": 1781600000},
        {"id": "pv-1", "customer_id": alice.id, "detail": "/again", "occurred_at": 1781600000},
    ]
    run_id = signed_post(client, EVENTS_URL, {"events": events}).get_json()["run_id"]
    work(app)
    done = state(client, run_id)
    assert done["status"] == COMPLETED
    assert {p["line"] for p in done["problems"]} == {3, 4, 5, 6}
    assert "2 stored, 1 already stored, 1 of unknown customers, 3 invalid" in done["summary"]
    run_id = signed_post(client, EVENTS_URL, {"events": events[:2]}).get_json()["run_id"]
    work(app)
    assert "0 stored, 2 already stored" in state(client, run_id)["summary"]
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(CustomerEvent)
                          .where(CustomerEvent.customer_id == alice.id)) == 2

    # The nightly refresh computes every enabled rule tag, the page view included.
    price = f.TAG.create(session, source=RULE, rule=VISITED_PAGE, rule_text="/price")
    trial = f.TAG.create(session, source=RULE, rule=TRIAL_LESSONS, rule_number=1)
    refresh_id = start_tag_refresh_job()
    assert start_tag_refresh_job() == refresh_id  # one at a time
    work(app)
    session.expire_all()
    run = session.get(JobRun, refresh_id)
    assert run.status == COMPLETED and run.done == run.total >= 2 and price.code in run.summary
    assert session.get(CustomerTag, (price.id, alice.id)).source == RULE
    assert session.get(Tag, trial.id).computed_at is not None


def test_a_resumed_refresh_goes_on_after_the_last_tag_done(app, session):
    first = f.TAG.create(session, source=RULE, rule=TRIAL_LESSONS, rule_number=1)
    second = f.TAG.create(session, source=RULE, rule=TRIAL_LESSONS, rule_number=2)
    run = runner.start(session, TAG_REFRESH)
    run.position = json.dumps({"after": first.id, "done": 1, "lines": ["done before"]})
    session.commit()
    work(app)
    session.expire_all()
    run = session.get(JobRun, run.id)
    assert run.status == COMPLETED and "done before" in run.summary
    assert session.get(Tag, first.id).computed_at is None and session.get(Tag, second.id).computed_at


# --- the manual tagging API ----------------------------------------------------------------------------
def test_the_tagging_api_is_scoped_audited_and_names_the_field(app, session):
    me = f.employee_by_username(session, "sales11")
    opp = f.OPPORTUNITY.create(session, status=OWNED, owner_id=me.id, org_unit_id=me.org_unit_id)
    vip = f.TAG.create(session, name="VIP家长")
    hot = f.TAG.create(session, subject=OPPORTUNITY)
    rule = f.TAG.create(session, source=RULE, rule=TRIAL_LESSONS, rule_number=1)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {api_token(client, 'sales11')}"}
    url = f"/api/v1/tagging/customer/{opp.customer_id}"
    resp = client.post(url, json={"tag_id": vip.id}, headers=auth)
    assert resp.status_code == 200 and resp.get_json() == {"changed": True}
    assert client.post(url, json={"tag_id": vip.id}, headers=auth).get_json() == {"changed": False}
    assert client.post(f"/api/v1/tagging/opportunity/{opp.id}", json={"tag_id": hot.id},
                       headers=auth).status_code == 200
    for body, status, field in (({}, 422, "tag_id"), ({"tag_id": "1"}, 422, "tag_id"),
                                ({"tag_id": rule.id}, 422, "tag_id"), ({"tag_id": hot.id}, 422, "tag_id"),
                                ({"tag_id": 2**31 - 1}, 404, "tag_id")):
        resp = client.post(url, json=body, headers=auth)
        assert resp.status_code == status and field in json.dumps(resp.get_json()), (body, resp.get_json())
    not_an_object = client.post(url, data="[]", headers={**auth, "Content-Type": "application/json"})
    assert not_an_object.status_code == 400 and not_an_object.get_json()["field"] == "body"
    assert client.post(f"/api/v1/tagging/lead/{opp.customer_id}", json={"tag_id": vip.id},
                       headers=auth).status_code == 404

    listed = client.get(f"/api/v1/tag/of/customer/{opp.customer_id}", headers=auth).get_json()["result"]
    assert [(t["code"], t["source"], t["added_by"]) for t in listed] == [(vip.code, "manual", "sales11")]
    assert any(t["code"] == rule.code for t in client.get("/api/v1/tag/", headers=auth).get_json()["result"])

    other = {"Authorization": f"Bearer {api_token(client, 'sales21')}"}
    assert client.post(url, json={"tag_id": vip.id}, headers=other).status_code == 404
    assert client.delete(f"{url}/{vip.id}", headers=other).status_code == 404
    assert client.get(f"/api/v1/tag/of/customer/{opp.customer_id}", headers=other).status_code == 404

    assert client.delete(f"{url}/{vip.id}", headers=auth).get_json() == {"changed": True}
    assert client.delete(f"{url}/{vip.id}", headers=auth).get_json() == {"changed": False}
    actions = session.scalars(select(AuditLog.action).where(AuditLog.target_id == str(opp.customer_id),
                                                            AuditLog.target_type == CUSTOMER)).all()
    assert sorted(actions) == [tags.TAGGED_ACTION, tags.UNTAGGED_ACTION]
    names = session.scalars(select(AuditLog.actor_name).where(AuditLog.action == tags.TAGGED_ACTION)).all()
    assert set(names) == {"sales11"}


def test_the_api_needs_the_permissions(app, session):
    client = app.test_client()
    auth = {"Authorization": f"Bearer {api_token(client, 'backoffice1')}"}
    vip = f.TAG.create(session)
    customer = f.CUSTOMER.create(session)
    assert client.post(f"/api/v1/tagging/customer/{customer.id}", json={"tag_id": vip.id},
                       headers=auth).status_code in (401, 403)


def test_the_import_statements_on_postgresql(pg_app):
    """ON CONFLICT … RETURNING, the (tag, row) IN list of removals and the member counts on PostgreSQL."""
    from app.extensions import db

    with pg_app.app_context():
        session = db.session
        people = [f.CUSTOMER.create(session) for _ in range(4)]
        opp = f.OPPORTUNITY.create(session, customer_id=people[0].id)
        tally = tag_import.Tally()
        tag_import.apply_definitions(session, [{"code": "bd-pg", "name": "PG"}], tally, utcnow())
        rows = [{"tag": "bd-pg", "customer_id": p.id} for p in people]
        rows += [{"tag": "bd-pg", "customer_id": people[0].id, "action": "remove"},
                 {"tag": "bd-opp", "opportunity_id": opp.id}]
        tag_import.apply_assignments(session, rows, 0, tally)
        tag_import.apply_assignments(session, rows, 0, tally)  # again: nothing changes
        tag_import.apply_events(session, [{"id": "pg-1", "customer_id": people[1].id, "detail": "/price",
                                           "occurred_at": 1781600000}] * 2, 0, tally)
        session.commit()
        assert (tally.created, tally.added, tally.removed) == (2, 4 + 1, 0) and tally.invalid == 0
        assert tags.by_code(session, "bd-pg").member_count == 3
        assert tags.by_code(session, "bd-opp").member_count == 1
        assert session.scalar(select(func.count()).select_from(CustomerEvent)) == 1
        db.session.remove()
