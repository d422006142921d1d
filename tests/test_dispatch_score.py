"""Score-aware dispatch and segment-matched dispatch rules, on the real app (SQLite), through the real
engine (dispatch_batch / the RQ job) and the real pages; the expected outcomes are computed by hand from
what each test arranges (app.services.dispatch_score's docstring has the formulas)."""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from collections import Counter

import pytest
from sqlalchemy import func, select, update

from app.clock import utcnow
from app.models.bigdata import Segment
from app.models.employee import Employee
from app.models.sales import (
    LOST,
    ROUND_ROBIN,
    SCORE_AWARE,
    WON,
    AssignmentLog,
    Customer,
    DispatchRule,
    Opportunity,
    OwnerCooling,
)
from app.services import dispatch
from app.services.dispatch_score import SMOOTHING
from tests.conftest import login
from tests.test_dispatch import (
    assert_counters_match,
    make_rule,
    make_waiting,
    owners,
    people,
    run_job,
    team,
    the_log,
)


@pytest.fixture
def quiet(session):
    """No demo dispatch rule and no demo lead waiting (as tests/test_dispatch.py's)."""
    session.execute(update(DispatchRule).values(enabled=False))
    session.execute(update(Opportunity).where(Opportunity.status == "waiting").values(status=LOST))
    session.commit()
    return session


def history(session, employee_id, won, lost, product_line="k12_math", days_ago=10) -> None:
    """`employee_id` owned `won` won and `lost` lost opportunities that closed `days_ago` days ago."""
    closed_at = utcnow() - dt.timedelta(days=days_ago)
    for status, n in ((WON, won), (LOST, lost)):
        if n:
            ids = make_waiting(session, n, "HISTORY", product_line=product_line)
            session.execute(update(Opportunity).where(Opportunity.id.in_(ids))
                            .values(status=status, owner_id=employee_id, closed_at=closed_at))
    session.commit()


def score(session, ids, probabilities) -> None:
    for opp_id, p in zip(ids, probabilities, strict=True):
        session.execute(update(Opportunity).where(Opportunity.id == opp_id).values(win_probability=p))
    session.commit()


def counts(session, rule_id) -> dict[str, int]:
    session.expire_all()
    return json.loads(session.get(DispatchRule, rule_id).state)["counts"]


# --- segment match ------------------------------------------------------------------------------------
def test_a_rule_with_a_segment_matches_only_its_members_in_a_batch_and_in_the_dry_run(app, quiet):
    session = quiet
    a_team, b_team, c_team = team(session), team(session), team(session)
    a, b, c = people(session, a_team, 2), people(session, b_team, 2), people(session, c_team, 2)
    by_region = Segment(name="Shanghai opportunities", subject="opportunity",
                        criteria=json.dumps({"regions": ["上海"]}))
    beijing_customers = Segment(name="Beijing customers", subject="customer",
                                criteria=json.dumps({"regions": ["北京"]}))
    session.add_all([by_region, beijing_customers])
    session.commit()
    rule_a = make_rule(session, a_team, ROUND_ROBIN, "SEG-", priority=1, match_segment_id=by_region.id)
    rule_b = make_rule(session, b_team, SCORE_AWARE, "SEG-", priority=2,
                       match_segment_id=beijing_customers.id)
    rule_c = make_rule(session, c_team, ROUND_ROBIN, "SEG-", priority=3)
    shanghai = make_waiting(session, 3, "SEG-1", region="上海")
    beijing = make_waiting(session, 4, "SEG-1")
    session.execute(update(Customer).where(Customer.id.in_(
        select(Opportunity.customer_id).where(Opportunity.id.in_(beijing)))).values(region="北京"))
    others = make_waiting(session, 5, "SEG-1", region="北京")  # the opportunity's region, not the customer's
    session.commit()

    report = dispatch.simulate(session, now=utcnow(), seed=3)
    assert report["per_rule"] == {rule_a.name: 3, rule_b.name: 4, rule_c.name: 5}

    assert run_job(app, session)["assigned"] == 12
    got = owners(session, shanghai + beijing + others)
    assert {got[i] for i in shanghai} <= set(a)
    assert {got[i] for i in beijing} <= set(b)
    assert {got[i] for i in others} <= set(c)
    for ids, rule in ((shanghai, rule_a), (beijing, rule_b), (others, rule_c)):
        assert {the_log(session, i)[0].dispatch_rule_id for i in ids} == {rule.id}


# --- the strategy -------------------------------------------------------------------------------------
def test_score_aware_gives_the_likeliest_leads_to_the_best_converter_within_the_band(app, quiet):
    session = quiet
    unit = team(session)
    best, mid, worst = people(session, unit, 3)
    history(session, best, 8, 2)
    history(session, mid, 4, 6)
    history(session, worst, 1, 9)
    rule = make_rule(session, unit, SCORE_AWARE, "SA-")  # the default band: ± 25 %
    assert rule.fairness_band == 25
    ids = make_waiting(session, 30, "SA-1")
    chances = [round(0.01 * (n + 1), 2) for n in range(30)]
    random.Random(4).shuffle(chances)
    score(session, ids, chances)

    result = dispatch.dispatch_batch(session, utcnow(), rng=random.Random(1))
    assert result.assigned == 30
    # Share 10; ceiling ceil(12.5) = 13, floor floor(7.5) = 7: the best converter takes the 13 likeliest,
    # the middle one the next 10, until what is left (7) is what the worst converter is owed.
    ranked = [i for _, i in sorted(zip(chances, ids, strict=True), reverse=True)]
    got = owners(session, ids)
    assert {got[i] for i in ranked[:13]} == {best}
    assert {got[i] for i in ranked[13:23]} == {mid}
    assert {got[i] for i in ranked[23:]} == {worst}
    assert counts(session, rule.id) == {str(best): 13, str(mid): 10, str(worst): 7}

    _, trace = the_log(session, ranked[0])
    s = trace["score"]
    assert (trace["chosen"], s["other"], s["other_why"], s["rank"], s["of"]) == (best, mid, "lower", 1, 30)
    assert s["p"] == 0.3 and s["est"] == 0 and (s["won"], s["closed"]) == (8, 10)
    team_rate = 13 / 30
    assert math.isclose(s["rate"], (8 + SMOOTHING * team_rate) / (10 + SMOOTHING), abs_tol=1e-4)
    _, trace = the_log(session, ranked[13])  # the best was at the ceiling
    assert (trace["chosen"], trace["score"]["other"], trace["score"]["other_why"]) == (mid, best, "ceiling")
    _, trace = the_log(session, ranked[23])  # owed
    assert (trace["chosen"], trace["score"]["mode"], trace["score"]["other_why"]) == (worst, "owed", "owed")
    assert_counters_match(session, [best, mid, worst])


def test_every_eligible_person_stays_within_the_band_over_many_batches(app, quiet):
    session = quiet
    unit = team(session)
    members = people(session, unit, 5)
    for member, won in zip(members, [9, 7, 5, 3, 1], strict=True):
        history(session, member, won, 10 - won)
    rule = make_rule(session, unit, SCORE_AWARE, "BAND-", fairness_band=20)
    rng = random.Random(8)
    total = 0
    for _ in range(25):
        size = rng.randint(1, 17)
        ids = make_waiting(session, size, "BAND-1")
        score(session, ids, [rng.random() for _ in ids])
        assert dispatch.dispatch_batch(session, utcnow(), rng=rng).assigned == size
        total += size
        share = total / len(members)
        got = counts(session, rule.id)
        assert sum(got.values()) == total
        # Within ± 20 % of the round-robin share after every batch, the floor give or take one lead: when
        # the floor goes up by one for several people at once, a batch of one lead can lift only one of them
        # (the others are owed, and served first, in the next batch).
        for member in members:
            low, high = math.floor(share * 0.8 + 1e-9), math.ceil(share * 1.2 - 1e-9)
            assert low - 1 <= got[str(member)] <= high, got
        lows = [m for m in members if got[str(m)] < math.floor(share * 0.8 + 1e-9)]
        assert len(lows) < len(members)
    # …and the better converters do get more than the round-robin share.
    got = counts(session, rule.id)
    assert got[str(members[0])] > total / 5 > got[str(members[-1])]
    assert_counters_match(session, members)


def test_capacity_quota_cooling_and_pauses_still_bind(app, quiet):
    session = quiet
    unit = team(session)
    (full,) = people(session, unit, 1, capacity=2)
    (quota,) = people(session, unit, 1, daily_quota=3)
    (plain,) = people(session, unit, 1)
    (paused,) = people(session, unit, 1, paused=True)
    for member, won in ((full, 9), (quota, 8), (plain, 1), (paused, 10)):
        history(session, member, won, 10 - won)
    make_rule(session, unit, SCORE_AWARE, "CAPS-", fairness_band=100)
    ids = make_waiting(session, 12, "CAPS-1")
    score(session, ids, [0.9 - 0.05 * n for n in range(12)])
    session.add(OwnerCooling(opportunity_id=ids[0], employee_id=full, until=utcnow() + dt.timedelta(days=1)))
    session.commit()

    assert dispatch.dispatch_batch(session, utcnow(), rng=random.Random(2)).assigned == 12
    got = owners(session, ids)
    assert Counter(got.values()) == {full: 2, quota: 3, plain: 7}
    assert got[ids[0]] != full  # cooling: the likeliest lead went past its ex-owner
    _, trace = the_log(session, ids[0])
    assert trace["excluded"] == {str(paused): "paused", str(full): "cooling"}
    assert (trace["chosen"], trace["score"]["other"], trace["score"]["other_why"]) == (quota, full, "cooling")
    _, last = the_log(session, ids[-1])
    assert last["excluded"] == {str(paused): "paused", str(full): "capacity", str(quota): "quota"}
    assert paused not in got.values()
    assert_counters_match(session, [full, quota, plain, paused])


def test_a_newcomer_with_one_win_of_one_is_not_a_star_and_old_history_does_not_count(app, quiet):
    session = quiet
    unit = team(session)
    veteran, other, newcomer = people(session, unit, 3)
    history(session, veteran, 40, 60)
    history(session, other, 20, 80)
    history(session, other, 50, 0, days_ago=120)  # older than dispatch.conversion_days (90): ignored
    history(session, newcomer, 1, 0)
    make_rule(session, unit, SCORE_AWARE, "NEW-")
    (lead,) = make_waiting(session, 1, "NEW-1")
    score(session, [lead], [0.7])

    dispatch.dispatch_batch(session, utcnow(), rng=random.Random(0))
    _, trace = the_log(session, lead)
    team_rate = 61 / 201
    s = trace["score"]
    assert trace["chosen"] == veteran and (s["other"], s["other_why"]) == (newcomer, "lower")
    assert math.isclose(s["rate"], (40 + SMOOTHING * team_rate) / (100 + SMOOTHING), abs_tol=1e-4)
    assert math.isclose(s["other_rate"], (1 + SMOOTHING * team_rate) / (1 + SMOOTHING), abs_tol=1e-4)
    assert math.isclose(s["team"], team_rate, abs_tol=1e-4)


def test_unscored_leads_count_at_their_product_lines_average(app, quiet):
    session = quiet
    unit = team(session)
    good, poor = people(session, unit, 2)
    history(session, good, 9, 1)
    history(session, poor, 1, 9)
    make_rule(session, unit, SCORE_AWARE, "UNS-", fairness_band=100)
    scored = make_waiting(session, 2, "UNS-1")
    score(session, scored, [0.9, 0.1])
    (unscored,) = make_waiting(session, 1, "UNS-1")

    dispatch.dispatch_batch(session, utcnow(), rng=random.Random(0))
    s = the_log(session, unscored)[1]["score"]
    assert (s["p"], s["est"], s["rank"], s["of"]) == (0.5, 1, 2, 3)  # between 0.9 and 0.1


# --- the trace in words -------------------------------------------------------------------------------
def test_the_trace_reads_in_words_with_names_in_zh_and_en(app, client, quiet):
    session = quiet
    unit = team(session)
    best, second = people(session, unit, 2)
    (paused,) = people(session, unit, 1, paused=True)
    history(session, best, 8, 2)
    history(session, second, 2, 8)
    make_rule(session, unit, SCORE_AWARE, "WORDS-")
    make_rule(session, unit, ROUND_ROBIN, "WORDS-RR", priority=0)
    (lead,) = make_waiting(session, 1, "WORDS-1")
    (rr_lead,) = make_waiting(session, 1, "WORDS-RR1")
    score(session, [lead], [0.72])
    dispatch.dispatch_batch(session, utcnow(), rng=random.Random(0))
    names = dict(session.execute(select(AssignmentLog.opportunity_id, AssignmentLog.id)).all())
    name = {e: session.get(Employee, e).name for e in (best, second, paused)}

    login(client, "admin")  # the test's team is outside the director's division
    page = client.get(f"/assignmentlogview/show/{names[lead]}").get_data(as_text=True)
    assert "Win probability 72% (no. 1 of 1 in this batch)" in page
    assert f"{name[best]}: K12" in page and f"above {name[second]} (" in page
    assert f"{name[paused]} (Paused)" in page and "&#34;chosen&#34;" not in page and '"chosen"' not in page
    rr_page = client.get(f"/assignmentlogview/show/{names[rr_lead]}").get_data(as_text=True)
    assert "(Round robin)" in rr_page and "chosen among 3 candidates" in rr_page

    client.get("/lang/zh_CN")
    page = client.get(f"/assignmentlogview/show/{names[lead]}").get_data(as_text=True)
    assert "赢单概率 72%（本批第 1/1 高）" in page
    assert f"→ {name[best]}：近 90 天" in page and f"高于{name[second]}（" in page
    assert f"{name[paused]}（已暂停）" in page
    rr_page = client.get(f"/assignmentlogview/show/{names[rr_lead]}").get_data(as_text=True)
    assert "（轮询）" in rr_page and "从 3 名候选人中选中" in rr_page


# --- the dry run's comparison -------------------------------------------------------------------------
def test_the_dry_run_compares_expected_wins_with_score_aware_on_a_hand_checked_case(app, client, quiet):
    session = quiet
    unit = team(session)
    a, b = people(session, unit, 2)
    history(session, a, 6, 4)
    history(session, b, 1, 9)
    rule = make_rule(session, unit, ROUND_ROBIN, "EW-", fairness_band=50)
    rule.state = json.dumps({"counts": {str(a): 2, str(b): 0}})
    session.commit()
    likely, unlikely = make_waiting(session, 2, "EW-1")
    score(session, [likely, unlikely], [0.8, 0.2])

    report = dispatch.simulate(session, now=utcnow(), seed=0)
    # Team rate 7/20 = 0.35; a: (6 + 20·0.35) / 30 = 13/30; b: (1 + 7) / 30 = 8/30.
    # Round robin (a 2, b 0): both to b → (0.8 + 0.2) × (8/30) / 0.35 = 0.762.
    # Score-aware, band 50 %: share (2 + 2) / 2 = 2, ceiling 3, floor 1 (b is owed 1): the 0.8 to a, the
    # 0.2 to b → (0.8 × 13/30 + 0.2 × 8/30) / 0.35 = 1.143: + 0.381, + 50 %.
    assert report["expected_wins"] == {"current": 0.76, "score_aware": 1.14, "difference": 0.38,
                                       "percent": 50.0, "conversion_days": 90}
    assert report["per_person"][0]["employee_id"] == b and report["per_person"][0]["count"] == 2
    assert session.scalar(select(func.count(AssignmentLog.id))) == 0
    session.expire_all()
    assert json.loads(session.get(DispatchRule, rule.id).state) == {"counts": {str(a): 2, str(b): 0}}

    login(client, "director")
    api = client.get("/api/v1/dispatch/simulate").get_json()
    assert api["expected_wins"]["score_aware"] == 1.14
    assert [s["opportunity_id"] for s in api["score_aware_samples"]] == [likely, unlikely]
    assert "Win probability 80%" in api["score_aware_samples"][0]["explanation"]
    client.get("/lang/zh_CN")
    page = client.get("/dispatch/simulate/").get_data(as_text=True)
    assert "当前规则预计赢单 0.8 单，按分调度 1.1 单（+50%）" in page
    assert "赢单概率 80%" in page


# --- the settings -------------------------------------------------------------------------------------
def test_the_rule_form_api_and_command_take_a_segment_and_a_band(app, client, runner, session):
    login(client, "director")
    segment = Segment(name="Hot leads", subject="opportunity", criteria=json.dumps({"win_min": 60}))
    session.add(segment)
    session.commit()
    seeded = session.scalar(select(DispatchRule).order_by(DispatchRule.id))
    body = {"name": "score rule", "priority": 5, "strategy": "score_aware", "match_recycled": "any",
            "target_org_unit": seeded.target_org_unit_id, "enabled": True, "working_hours_only": False,
            "match_segment": segment.id, "fairness_band": 101}
    resp = client.post("/api/v1/dispatch_rule/", json=body)
    assert resp.status_code == 422 and resp.get_json()["field"] == "fairness_band"
    for bad in ({"fairness_band": "wide"}, {"fairness_band": True}, {"fairness_band": -5},
                {"fairness_band": 30, "match_segment": 999999}):
        resp = client.post("/api/v1/dispatch_rule/", json={**body, **bad})
        assert 400 <= resp.status_code < 500, (bad, resp.status_code)
    resp = client.post("/api/v1/dispatch_rule/", json={**body, "fairness_band": 30})
    assert resp.status_code == 201, resp.get_json()
    saved = session.scalar(select(DispatchRule).where(DispatchRule.name == "score rule"))
    assert (saved.strategy, saved.match_segment_id, saved.fairness_band) == ("score_aware", segment.id, 30)

    form = {"name": "form rule", "priority": "7", "match_recycled": "any", "strategy": "score_aware",
            "target_org_unit": str(seeded.target_org_unit_id), "match_segment": str(segment.id),
            "fairness_band": "-1"}
    resp = client.post("/dispatchruleview/add", data=form)
    assert resp.status_code == 200 and "Enter a number from 0 to 100" in resp.get_data(as_text=True)
    resp = client.post("/dispatchruleview/add", data={**form, "fairness_band": ""})  # empty: the default
    assert resp.status_code == 302
    saved = session.scalar(select(DispatchRule).where(DispatchRule.name == "form rule"))
    assert (saved.match_segment_id, saved.fairness_band) == (segment.id, 25)
    assert "Score-aware" in client.get("/dispatchruleview/add").get_data(as_text=True)
    # The segment match is taken off again by choosing the blank ("—") entry.
    resp = client.post(f"/dispatchruleview/edit/{saved.id}", data={**form, "fairness_band": "25",
                                                                    "match_segment": "__None"})
    assert resp.status_code == 302
    session.expire_all()
    assert session.get(DispatchRule, saved.id).match_segment_id is None

    result = runner.invoke(args=["crm", "dispatch-rule", "form rule", "--fairness-band", "10",
                                 "--segment", str(segment.id)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["crm", "dispatch-rule", "form rule", "--segment", "999999"])
    assert result.exit_code != 0 and "match_segment" in result.output
    session.expire_all()
    assert session.get(DispatchRule, saved.id).fairness_band == 10


# --- PostgreSQL: two workers ----------------------------------------------------------------------------
def test_two_workers_on_postgresql_keep_the_band_and_place_each_lead_once(pg_app):
    """Two RQ worker processes dispatch score-aware leads at once (skipped without TEST_DATABASE_URL)."""
    from redis import Redis
    from rq import Queue, Worker

    from app.extensions import db
    from app.jobs.dispatch import dispatch_waiting_job
    from tests.test_dispatch_concurrency import check_counters, check_placed_once, start_worker, wait_for
    from tests.test_dispatch_concurrency import quiet as quiet_pg
    from tests.workers import stop

    with pg_app.app_context():
        session = db.session
        quiet_pg(session)
        unit = team(session)
        members = people(session, unit, 5, capacity=400)
        for member, won in zip(members, [9, 7, 5, 3, 1], strict=True):
            history(session, member, won, 10 - won)
        rule = make_rule(session, unit, SCORE_AWARE, "PG-SA-", fairness_band=20)
        rule_id = rule.id
        ids = make_waiting(session, 800, "PG-SA-1")
        rng = random.Random(5)
        score(session, ids, [round(rng.random(), 3) for _ in ids])
        session.remove()

    redis = Redis.from_url(pg_app.config["REDIS_URL"])
    queue = Queue("default", connection=redis)
    workers = [start_worker(pg_app, f"score-{n}") for n in range(2)]
    try:
        wait_for(lambda: len(Worker.all(connection=redis)) == 2, "two RQ workers")
        jobs = [queue.enqueue(dispatch_waiting_job, batch_size=40) for _ in range(2)]
        wait_for(lambda: all(j.get_status(refresh=True) in ("finished", "failed") for j in jobs), "the jobs",
                 every=0.1)
    finally:
        stop(workers)
    assert [j.get_status() for j in jobs] == ["finished", "finished"], jobs[0].latest_result().exc_string
    assert sum(j.return_value()["taken"] for j in jobs) == 800

    with pg_app.app_context():
        session = db.session
        check_placed_once(session, ids)
        owned = check_counters(session, members)
        got = json.loads(session.get(DispatchRule, rule_id).state)["counts"]
        assert {int(k): v for k, v in got.items()} == dict(owned) and sum(owned.values()) == 800
        for member in members:  # share 160, ± 20 %: 128…192
            assert 127 <= owned[member] <= 192, owned
        assert owned[members[0]] > 160 > owned[members[-1]]
        session.remove()
