"""The QA workbench through the Flask test client: the inspector's queue and inspection page (masked
callee, transcript with the machine's hits), scoring, the agent's single appeal, the final and audited
decision, permissions and data scope; scorecard and check-item forms; "Run now" on a plan through a real
RQ worker."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import func, select

from app import clock
from app.jobs.worker import app_worker_class
from app.models.audit import AuditLog
from app.models.qa import QaCheckItem, QaInspection, QaPlan, QaScorecard
from app.models.security import SCOPE_SUBTREE, RoleDataScope
from app.services.qa import sampling
from tests import factories as f
from tests.conftest import login
from tests.helpers import field_errors

NOW = dt.datetime(2026, 11, 18, 6, 0)
TRANSCRIPT = [{"speaker": "agent", "start": 0, "end": 4, "text": "您好，这课程保-证包过<b>"},
              {"speaker": "customer", "start": 5, "end": 6, "text": "真的吗"}]


def pop_flashes(client) -> list[tuple[str, str]]:
    with client.session_transaction() as sess:
        return list(sess.pop("_flashes", []))


@pytest.fixture
def world(app, session):
    """Agents A and B (Salesperson), inspector Q1 (assigned) and Q2 (an inspector of another unit),
    and one inspection of A's call sampled by a plan for Q1.

    The seeded QA Inspector role sees the whole company; a company that splits QA by unit gives its
    inspectors a role with a narrower data scope, as here ("QA Inspector (unit)": subtree)."""
    sm = app.appbuilder.sm
    unit_role = sm.add_role("QA Inspector (unit)")
    unit_role.permissions = list(sm.find_role("QA Inspector").permissions)
    unit_role.data_scope = RoleDataScope(scope=SCOPE_SUBTREE)
    session.commit()
    sales, other_sales = f.org_unit(session), f.org_unit(session)
    qa_one, qa_two = f.org_unit(session), f.org_unit(session)
    agent, other_agent = f.employee(session, sales), f.employee(session, other_sales)
    q1, q2 = f.employee(session, qa_one), f.employee(session, qa_two)
    for emp, role in ((agent, "Salesperson"), (other_agent, "Salesperson"), (q1, "QA Inspector (unit)"),
                      (q2, "QA Inspector (unit)")):
        f.login_user(app, session, emp, role)
    card = f.make_scorecard(session, [{"kind": "forbidden_words", "points": -20, "keywords": "包过"},
                                      {"kind": "manual", "points": -10, "name": "Polite"},
                                      {"kind": "manual", "points": 5, "name": "Upsell"}], base_score=90)
    call = f.make_call_record(session, agent, started_at=dt.datetime(2026, 11, 17, 2, 0),
                              callee_phone="+8613812345678", transcript=TRANSCRIPT,
                              recording_url="https://rec.example.com/a.mp3")
    plan = QaPlan(name="QA world", scorecard=card, org_unit_id=sales.id, mode="count", amount=5,
                  period="day", inspectors=[q1])
    session.add(plan)
    session.commit()
    sampling.sample_plan(session, plan.id, NOW, sampling.PREVIOUS)
    inspection = session.scalar(select(QaInspection).where(QaInspection.call_id == call.id))
    items = {i.name: i.id for i in card.items}
    return {"agent": agent, "other_agent": other_agent, "q1": q1, "q2": q2, "card": card, "plan": plan,
            "id": inspection.id, "items": items, "forbidden": card.items[0].id}


def as_(app, emp):
    client = app.test_client()
    client.get("/lang/en")
    assert login(client, f"user{emp.id}", f.PASSWORD).status_code == 302
    return client


def state(session, pk) -> QaInspection:
    session.expire_all()
    return session.get(QaInspection, pk)


def marks(world, **overrides) -> dict:
    """A scoring form: every item passes unless overridden by name ("fail" / "pass")."""
    data = {f"item-{item_id}": overrides.get(name, "pass") for name, item_id in world["items"].items()}
    return data


def test_inspector_queue_and_inspection_page(app, session, world):
    q1 = as_(app, world["q1"])
    page = q1.get("/qainspectionview/list/?queue=pending")
    assert page.status_code == 200
    assert f"/qainspectionview/show/{world['id']}" in page.text
    assert f"/qainspectionview/show/{world['id']}" not in q1.get("/qainspectionview/list/?queue=final").text

    page = q1.get(f"/qainspectionview/show/{world['id']}")
    assert page.status_code == 200
    html = page.text
    assert "138****5678" in html and "13812345678" not in html  # the callee stays masked
    assert 'href="https://rec.example.com/a.mp3"' in html
    # the machine's hit is highlighted in the original text, which stays escaped
    assert '<mark class="qa-hit-forbidden">包过</mark>&lt;b&gt;' in html
    assert "Forbidden words: 包过" in html
    assert 'id="qa-score-form"' in html and 'id="qa-appeal-form"' not in html
    assert state(session, world["id"]).machine_score == 70  # 90 − 20


def test_score_appeal_and_decide_upheld(app, session, world):
    pk, q1 = world["id"], as_(app, world["q1"])
    # every item must be judged
    partial = marks(world)
    partial.pop(f"item-{world['items']['Upsell']}")
    q1.post(f"/qainspectionview/score/{pk}", data=partial)
    assert any("Judge every item" in m for _c, m in pop_flashes(q1))
    assert state(session, pk).status == "pending"

    resp = q1.post(f"/qainspectionview/score/{pk}",
                   data={**marks(world, **{"forbidden_words 0": "fail", "Polite": "fail"}),
                         f"note-{world['forbidden']}": "said 包过", "comment": "Mind the promises"})
    assert resp.status_code == 302
    row = state(session, pk)
    assert (row.status, row.score, row.comment) == ("scored", 65, "Mind the promises")  # 90−20−10+5
    assert json.loads(row.item_results)[str(world["forbidden"])] == {"passed": False, "note": "said 包过"}

    # the agent sees their result and appeals, once, with a reason
    agent = as_(app, world["agent"])
    assert f"/qainspectionview/show/{pk}" in agent.get("/qainspectionview/list/?queue=my_calls").text
    page = agent.get(f"/qainspectionview/show/{pk}").text
    assert 'id="qa-appeal-form"' in page and 'id="qa-score-form"' not in page and "65" in page
    agent.post(f"/qainspectionview/appeal/{pk}", data={"reason": "  "})
    assert any("required" in m for _c, m in pop_flashes(agent))
    assert state(session, pk).status == "scored"
    agent.post(f"/qainspectionview/appeal/{pk}", data={"reason": "I was polite"})
    row = state(session, pk)
    assert (row.status, row.appeal_reason) == ("appealed", "I was polite")
    agent.post(f"/qainspectionview/appeal/{pk}", data={"reason": "again"})
    assert any("no second appeal" in m for _c, m in pop_flashes(agent))

    # under appeal the inspector cannot re-score; an upheld decision must change the marks
    q1.post(f"/qainspectionview/score/{pk}", data=marks(world))
    assert any("under appeal or final" in m for _c, m in pop_flashes(q1))
    q1.post(f"/qainspectionview/decide/{pk}", data={
        **marks(world, **{"forbidden_words 0": "fail", "Polite": "fail"}), "decision": "upheld",
        "decision_note": "ok"})
    assert any("change at least one item" in m for _c, m in pop_flashes(q1))
    q1.post(f"/qainspectionview/decide/{pk}", data={
        **marks(world, **{"forbidden_words 0": "fail"}), "decision": "upheld",
        "decision_note": "Polite after all"})
    row = state(session, pk)
    assert (row.status, row.appeal_decision, row.score, row.decided_by_id) == (
        "final", "upheld", 75, world["q1"].id)
    log = session.scalar(select(AuditLog).where(AuditLog.action == "qa_appeal_decision",
                                                AuditLog.target_id == str(pk)))
    assert log is not None and log.actor_name == f"user{world['q1'].id}"
    assert json.loads(log.before)["score"] == 65 and json.loads(log.after)["score"] == 75

    # final is final
    q1.post(f"/qainspectionview/score/{pk}", data=marks(world))
    q1.post(f"/qainspectionview/decide/{pk}", data={"decision": "rejected", "decision_note": "x"})
    assert state(session, pk).score == 75 and state(session, pk).status == "final"
    page = agent.get(f"/qainspectionview/show/{pk}").text
    assert 'id="qa-appeal-form"' not in page and "Polite after all" in page


def test_rejected_appeal_keeps_the_score(app, session, world):
    pk, q1, agent = world["id"], as_(app, world["q1"]), as_(app, world["agent"])
    q1.post(f"/qainspectionview/score/{pk}", data=marks(world, **{"Polite": "fail"}))
    agent.post(f"/qainspectionview/appeal/{pk}", data={"reason": "no"})
    q1.post(f"/qainspectionview/decide/{pk}", data={"decision": "rejected", "decision_note": ""})
    assert any("required" in m for _c, m in pop_flashes(q1))
    q1.post(f"/qainspectionview/decide/{pk}",
            data={"decision": "rejected", "decision_note": "Recording is clear"})
    row = state(session, pk)
    assert (row.status, row.appeal_decision, row.score) == ("final", "rejected", 85)
    assert session.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "qa_appeal_decision")) == 1


def test_scope_and_permissions(app, session, world):
    pk = world["id"]
    # another agent: cannot see it, list it or appeal it
    other = as_(app, world["other_agent"])
    assert f"/qainspectionview/show/{pk}" not in other.get("/qainspectionview/list/").text
    assert other.get(f"/qainspectionview/show/{pk}").status_code == 404
    q1 = as_(app, world["q1"])
    q1.post(f"/qainspectionview/score/{pk}", data=marks(world))
    assert other.post(f"/qainspectionview/appeal/{pk}", data={"reason": "mine?"}).status_code == 404
    # an inspector outside the scope and not assigned: cannot see, score or decide it
    q2 = as_(app, world["q2"])
    assert f"/qainspectionview/show/{pk}" not in q2.get("/qainspectionview/list/").text
    assert q2.get(f"/qainspectionview/show/{pk}").status_code == 404
    assert q2.post(f"/qainspectionview/score/{pk}", data=marks(world)).status_code == 404
    # the inspector has no appeal permission; the agent cannot score
    resp = q1.post(f"/qainspectionview/appeal/{pk}", data={"reason": "x"})
    assert resp.status_code == 403 and state(session, pk).status == "scored"
    agent = as_(app, world["agent"])
    menu = agent.get("/qainspectionview/list/").text
    assert "/qaplanview/list/" not in menu and "/qascorecardview/list/" not in menu
    assert agent.get("/qaplanview/list/").status_code == 403
    agent.post(f"/qainspectionview/score/{pk}", data=marks(world, Polite="fail"))
    assert state(session, pk).score == 95 and state(session, pk).status == "scored"
    agent.post(f"/qainspectionview/appeal/{pk}", data={"reason": "fine"})
    assert q2.post(f"/qainspectionview/decide/{pk}",
                   data={"decision": "rejected", "decision_note": "x"}).status_code == 404
    assert state(session, pk).status == "appealed"
    # FAB's own create / edit / delete are not offered
    assert q1.get("/qainspectionview/add").status_code == 404
    assert q1.post(f"/qainspectionview/delete/{pk}").status_code == 404


def test_scorecard_and_item_forms(app, session):
    client = app.test_client()
    client.get("/lang/en")
    login(client, "admin")
    resp = client.post("/qascorecardview/add", data={"name": "Telesales", "base_score": "120"})
    assert "between 0 and 100" in field_errors(resp.text).get("base_score", "")
    client.post("/qascorecardview/add", data={"name": "Telesales", "base_score": "90", "enabled": "y"})
    card = session.scalar(select(QaScorecard).where(QaScorecard.name == "Telesales"))
    assert card is not None
    resp = client.post("/qacheckitemview/add", data={"scorecard": str(card.id), "name": "No promises",
                                                      "kind": "forbidden_words", "points": "-20",
                                                      "position": "0"})
    assert "keywords" in field_errors(resp.text).get("keywords", "")
    resp = client.post("/qacheckitemview/add", data={"scorecard": str(card.id), "name": "Pace",
                                                      "kind": "speech_rate", "points": "-5", "position": "1"})
    assert "threshold" in field_errors(resp.text).get("threshold", "")
    resp = client.post("/qacheckitemview/add", data={"scorecard": str(card.id), "name": "No promises",
                                                      "kind": "forbidden_words", "points": "-20",
                                                      "keywords": "包过\n保证退款", "position": "0"})
    assert resp.status_code == 302, field_errors(resp.text)
    # the scorecard page's "Add a check item" link: the scorecard comes from the link
    add_url = f"/qacheckitemview/add?_flt_0_scorecard={card.id}"
    assert add_url in client.get(f"/qascorecardview/show/{card.id}").text
    assert client.get(add_url).status_code == 200
    resp = client.post(add_url, data={"name": "Polite", "kind": "manual", "points": "-10", "position": "2"})
    assert resp.status_code == 302, field_errors(resp.text)
    session.expire_all()
    assert [i.name for i in session.scalars(select(QaCheckItem).where(QaCheckItem.scorecard_id == card.id)
                                            .order_by(QaCheckItem.position))] == ["No promises", "Polite"]
    page = client.get(f"/qascorecardview/show/{card.id}").text
    assert "60–90" in page and "No promises" in page  # the range and the items listed on the page
    for url in ("/qascorecardview/list/", "/qacheckitemview/list/", "/qaplanview/list/",
                "/qainspectionview/list/", "/qainspectionview/export/"):
        assert client.get(url).status_code == 200, url


def test_run_now_queues_a_sampling_run(app, session, world):
    pk = world["plan"].id
    agent = world["agent"]
    current = sampling.period_at(session, "day", clock.utcnow())
    f.make_call_record(session, agent, started_at=current.start + dt.timedelta(minutes=1))
    q1 = as_(app, world["q1"])
    assert q1.get(f"/qaplanview/show/{pk}").status_code == 404  # a plan over the sales unit: not his scope
    client = app.test_client()
    client.get("/lang/en")
    login(client, "admin")
    assert 'id="qa-run-now"' in client.get(f"/qaplanview/show/{pk}").text
    resp = client.post(f"/qaplanview/run_now/{pk}", data={"which": "current"})
    assert resp.status_code == 302
    queue = Queue("default", connection=Redis.from_url(app.config["REDIS_URL"]))
    assert app_worker_class(app, SimpleWorker)([queue], connection=queue.connection).work(burst=True)
    session.expire_all()
    rows = list(session.scalars(select(QaInspection).where(QaInspection.plan_id == pk,
                                                           QaInspection.period == current.key)))
    assert len(rows) == 1 and rows[0].inspector_id == world["q1"].id
    assert client.post(f"/qaplanview/run_now/{pk}", data={"which": "bogus"}).status_code == 400


def test_plan_form_errors_and_save(app, session, world):
    client = app.test_client()
    client.get("/lang/en")
    login(client, "admin")
    form = {"name": "Weekly K12", "scorecard": str(world["card"].id),
            "org_unit": str(world["agent"].org_unit_id), "mode": "percent", "amount": "150",
            "period": "week", "connected_only": "y", "enabled": "y",
            "inspectors": [str(world["q1"].id), str(world["q2"].id)]}
    resp = client.post("/qaplanview/add", data=form)
    assert "at most 100" in field_errors(resp.text).get("amount", "")
    resp = client.post("/qaplanview/add", data={**form, "amount": "20", "min_duration": "90",
                                                 "max_duration": "30"})
    assert "longer than the maximum" in field_errors(resp.text).get("max_duration", "")
    resp = client.post("/qaplanview/add", data={**form, "amount": "20", "inspectors": []})
    assert "at least one inspector" in field_errors(resp.text).get("inspectors", "")
    resp = client.post("/qaplanview/add", data={**form, "amount": "20"})
    assert resp.status_code == 302, field_errors(resp.text)
    plan = session.scalar(select(QaPlan).where(QaPlan.name == "Weekly K12"))
    assert (plan.mode, plan.amount, plan.period, len(plan.inspectors)) == ("percent", 20, "week", 2)


def test_machine_notes_say_what_is_known_and_chinese_labels(app, session, world):
    """Rows the machine wrote with only "passed" (the demo's) read as a sentence — never "None 秒" or
    "缺少必说词：" with nothing after it — and a pending inspection reads 待质检, not the SMS 待发送."""
    from app.views.qa import machine_note

    with app.test_request_context("/"):  # Chinese by default
        notes = [machine_note("silence", {"checked": True, "passed": False}, 8),
                 machine_note("silence", {"checked": True, "passed": True, "value": 3.0}, 8),
                 machine_note("speech_rate", {"checked": True, "passed": True}, 300),
                 machine_note("required_words", {"checked": True, "passed": False}, None),
                 machine_note("forbidden_words", {"checked": True, "passed": False, "hits": []}, None)]
    assert notes == ["最长静音超过上限（8 秒）", "最长静音 3 秒（上限 8 秒）", "坐席语速未超上限（300）",
                     "有必说词未说", "说了禁用词"]

    client = app.test_client()  # Chinese by default
    assert login(client, f"user{world['q1'].id}", f.PASSWORD).status_code == 302
    page = client.get(f"/qainspectionview/show/{world['id']}").get_data(as_text=True)
    assert "待质检" in page and "待发送" not in page
    queue = client.get("/qainspectionview/list/").get_data(as_text=True)
    assert "待质检" in queue and "待发送" not in queue


def test_run_now_of_a_disabled_plan_is_refused_and_queues_nothing(app, session, world):
    plan = world["plan"]
    plan.enabled = False
    session.commit()
    queue = Queue("default", connection=Redis.from_url(app.config["REDIS_URL"]))
    queued = queue.count
    client = app.test_client()
    client.get("/lang/en")
    login(client, "admin")
    resp = client.post(f"/qaplanview/run_now/{plan.id}", data={"which": "previous"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/qaplanview/show/{plan.id}")
    assert ("danger", "The plan is disabled") in pop_flashes(client)
    assert queue.count == queued
