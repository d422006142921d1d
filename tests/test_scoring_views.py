"""The win probability as people see it: Big Data › Win Probability (the active model, its evaluation, the
history of models; the administrator's variables and "Retrain now"), GET /api/v1/scoring/model, the panel
of the opportunity page, the workbench's column and "likeliest first", and the opportunity REST API.

The models and scores are arranged as app.services.scoring stores them (ScoringModel rows,
Opportunity.win_probability / win_factors): these tests do not need the training.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from html import unescape

import pytest
from sqlalchemy import func, select

from app.clock import utcnow
from app.extensions import db
from app.models.audit import AuditLog
from app.models.jobs import SCORING, JobRun
from app.models.org import OrgUnit
from app.models.sales import OWNED, POOLED
from app.services import metadata, reference
from app.services.seed import ADMIN_PASSWORD
from tests import factories as f
from tests.conftest import api_token, login

BINS = [{"low": i / 10, "high": (i + 1) / 10, "count": 10 + i, "predicted": i / 10 + 0.05,
         "observed": i / 10 + 0.04} for i in range(10)]


def arrange_model(session, **overrides):
    """An older inactive model and the active one, with a full evaluation."""
    now = utcnow()
    f.SCORING_MODEL.create(session, created_at=now - dt.timedelta(days=7), active=False, won=40, lost=90,
                           auc=0.701, ece=0.061, variables=json.dumps(["source"]),
                           evaluation=json.dumps({"auc": 0.701, "ece": 0.061, "bins": BINS[:3]}))
    evaluation = {"split_at": "2026-05-01T00:00:00+00:00", "train": 800, "test": 200, "test_won": 60,
                  "auc": 0.8123, "ece": 0.0231, "bins": BINS, "calibrated": True,
                  "trained_at": "2026-06-16T18:00:00+00:00"}
    values = {"created_at": now - dt.timedelta(hours=8), "won": 300, "lost": 700, "auc": 0.8123,
              "ece": 0.0231, "variables": json.dumps(["source", "stage", "tags"]),
              "evaluation": json.dumps(evaluation)}
    return f.SCORING_MODEL.create(session, **{**values, **overrides})


def signed_in(app, username: str, lang: str = "en"):
    client = app.test_client()
    resp = login(client, username)
    assert resp.status_code == 302 and "/login" not in resp.headers["Location"], "login failed"
    client.get(f"/lang/{lang}")
    return client


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:td|h3|p|span|ul|div)>', html, re.S)
    assert match, f"no element {element_id}"
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split())


def flashes(client) -> list[tuple[str, str]]:
    with client.session_transaction() as sess:
        return list(sess.pop("_flashes", []))


# --- the page -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("username", ["admin", "director", "manager1", "marketing"])
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_page_shows_the_active_model_and_its_evaluation(app, session, username, lang):
    model = arrange_model(session)
    client = signed_in(app, username, lang)
    resp = client.get("/scoring/")
    assert resp.status_code == 200
    html = resp.text
    assert f'data-model="{model.id}"' in html
    assert 'href="/scoring/"' in html  # Big Data › Win Probability in the menu
    assert text_of(html, "crm-eval-auc") == "0.812"
    assert text_of(html, "crm-eval-ece") == "2.3%"
    assert text_of(html, "crm-eval-train") == "800" and text_of(html, "crm-eval-test") == "200"
    # Times in the business time zone (Asia/Shanghai): 18:00 UTC is 02:00 the next day.
    assert text_of(html, "crm-model-trained-at").startswith("2026-06-17 02:00")
    assert text_of(html, "crm-eval-split").startswith("2026-05-01 08:00")
    assert 'id="crm-calibration-chart"' in html and "chart-4.6.1.umd.min.js" in html
    chart = json.loads(re.search(r'id="crm-calibration-data" type="application/json">(.*?)</script>',
                                 html, re.S).group(1))
    assert chart["counts"] == [b["count"] for b in BINS] and len(chart["diagonal"]) == 10
    assert len(re.findall(r'<tr data-model="\d+">', html)) == 2  # the history: both models
    words = {"zh": ("赢单概率", "来源", "阶段", "标签", "赢单 300，输单 700", "朴素贝叶斯", "随机取一个赢单"),
             "en": ("Win probability", "Source", "Stage", "Tags", "300 won, 700 lost", "Naive Bayes",
                    "pick a won and a lost opportunity at random")}[lang]
    for word in words:
        assert word in html, word
    # Only the administrator chooses the variables and retrains.
    assert ('id="crm-variables-form"' in html) == (username == "admin")
    assert ('id="crm-retrain-form"' in html) == (username == "admin")


def test_without_a_model_the_page_says_so(app, session):
    html = signed_in(app, "director").get("/scoring/").text
    assert 'id="crm-no-model"' in html and "40" in text_of(html, "crm-no-model")


def test_a_salesperson_may_not_see_the_page_nor_change_anything(app, session):
    arrange_model(session)
    client = signed_in(app, "sales11")
    page = client.get("/scoring/")
    assert page.status_code in (302, 403) and 'id="crm-win-probability-page"' not in page.text
    assert 'href="/scoring/"' not in client.get("/workbench/").text  # not in their menu
    before = metadata.config_value(session, "scoring.variables")
    assert client.post("/scoring/variables", data={"variables": ["source"]}).status_code in (302, 403)
    assert client.post("/scoring/retrain").status_code in (302, 403)
    session.expire_all()
    assert metadata.config_value(session, "scoring.variables") == before
    assert session.scalar(select(func.count()).select_from(JobRun).where(JobRun.kind == SCORING)) == 0
    token = api_token(client, "sales11")
    resp = client.get("/api/v1/scoring/model", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 403


def test_a_director_reads_but_may_not_save(app, session):
    client = signed_in(app, "director")
    before = metadata.config_value(session, "scoring.variables")
    resp = client.post("/scoring/variables", data={"variables": ["source"]})
    assert resp.status_code in (302, 403)
    session.expire_all()
    assert metadata.config_value(session, "scoring.variables") == before


# --- the variables ------------------------------------------------------------------------------------
def config_audits(session, since: int) -> list[AuditLog]:
    return list(session.scalars(select(AuditLog).where(AuditLog.id > since,
                                                       AuditLog.target_type == "config_item")))


def test_saving_the_variables_is_validated_and_audited(app, session):
    client = signed_in(app, "admin")
    page = client.get("/scoring/").text
    for code in reference.setting("scoring.variables").default:
        assert f'name="variables" value="{code}" checked' in page
    since = session.scalar(select(func.max(AuditLog.id))) or 0

    resp = client.post("/scoring/variables", data={"variables": ["tags", "source", "calls"]})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/scoring/")
    assert [c for c, _ in flashes(client)] == ["success"]
    session.expire_all()
    assert metadata.config_value(session, "scoring.variables") == ["source", "calls", "tags"]  # their order
    audits = config_audits(session, since)
    assert len(audits) == 1 and audits[0].action == "update" and audits[0].actor_name == "admin"
    assert "calls" in audits[0].after and "campaign" in audits[0].before
    page = client.get("/scoring/").text
    assert 'value="calls" checked' in page and 'value="campaign" checked' not in page

    # An unknown code is refused, the field named; nothing changes, nothing is audited.
    since = session.scalar(select(func.max(AuditLog.id)))
    resp = client.post("/scoring/variables", data={"variables": ["source", "horoscope"]})
    assert resp.status_code == 302
    (category, message), = flashes(client)
    assert category == "danger" and message.startswith("Variables:") and "horoscope" in message
    resp = client.post("/scoring/variables", data={})
    (category, message), = flashes(client)
    assert category == "danger" and message == "Variables: Choose at least one variable"
    session.expire_all()
    assert metadata.config_value(session, "scoring.variables") == ["source", "calls", "tags"]
    assert config_audits(session, since) == []


def test_saving_needs_the_csrf_token(app, session):
    app.config["WTF_CSRF_ENABLED"] = True
    try:
        client = app.test_client()
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login/").text).group(1)
        client.post("/login/", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token})
        assert client.post("/scoring/variables", data={"variables": ["source"]}).status_code == 400
        page = client.get("/scoring/").text
        token = re.search(r'id="crm-variables-form".*?name="csrf_token" value="([^"]+)"', page, re.S).group(1)
        resp = client.post("/scoring/variables", data={"variables": ["source"], "csrf_token": token})
        assert resp.status_code == 302
    finally:
        app.config["WTF_CSRF_ENABLED"] = False
    session.expire_all()
    assert metadata.config_value(session, "scoring.variables") == ["source"]


# --- retraining ---------------------------------------------------------------------------------------
def test_retrain_now_starts_a_scoring_run(app, session):
    client = signed_in(app, "admin")
    resp = client.post("/scoring/retrain")
    assert resp.status_code == 302
    assert [c for c, _ in flashes(client)] == ["success"]
    runs = list(session.scalars(select(JobRun).where(JobRun.kind == SCORING)))
    assert len(runs) == 1 and runs[0].status in ("queued", "running", "completed")
    client.post("/scoring/retrain")  # while one is queued, the same run
    assert session.scalar(select(func.count()).select_from(JobRun).where(JobRun.kind == SCORING)) == 1
    html = client.get("/scoring/").text
    assert f'data-run="{runs[0].id}"' in html and f'/jobs/show/{runs[0].id}' in html


def test_the_latest_run_is_shown_with_a_link_to_the_jobs_page(app, session):
    run = JobRun(kind=SCORING, status="running", total=200, done=50, created_at=utcnow(),
                 heartbeat_at=utcnow())
    session.add(run)
    session.commit()
    html = signed_in(app, "admin").get("/scoring/").text
    assert f'data-run="{run.id}"' in html and 'data-status="running"' in html
    line = re.search(r'id="crm-latest-run".*?</p>', html, re.S).group(0)
    assert "25%" in line and f"/jobs/show/{run.id}" in line
    html = signed_in(app, "director").get("/scoring/").text
    assert f'data-run="{run.id}"' in html and f"/jobs/show/{run.id}" not in html  # not theirs to open


# --- the API ------------------------------------------------------------------------------------------
def test_the_api_answers_the_active_model(app, session):
    client = app.test_client()
    headers = {"Authorization": f"Bearer {api_token(client, 'manager1')}"}
    resp = client.get("/api/v1/scoring/model", headers=headers)
    assert resp.status_code == 404 and resp.get_json()["message"]
    model = arrange_model(session)
    body = client.get("/api/v1/scoring/model", headers=headers).get_json()
    assert body["id"] == model.id and body["method"] == "naive_bayes"
    assert body["variables"] == ["source", "stage", "tags"] and (body["won"], body["lost"]) == (300, 700)
    assert body["auc"] == pytest.approx(0.8123) and body["ece"] == pytest.approx(0.0231)
    assert (body["train"], body["test"], body["test_won"], body["calibrated"]) == (800, 200, 60, True)
    assert body["split_at"].startswith("2026-05-01T00:00:00") and len(body["bins"]) == 10
    assert body["bins"][3] == BINS[3]
    spec = client.get("/api/v1/_openapi", headers=headers)
    if spec.status_code == 200:
        assert "/scoring/model" in json.dumps(spec.get_json()["paths"])


# --- the opportunity page -----------------------------------------------------------------------------
def scored(session, probability, factors, **fields):
    return f.OPPORTUNITY.create(session, win_probability=probability, win_factors=json.dumps(factors),
                                scored_at=utcnow() - dt.timedelta(hours=3), **fields)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_opportunity_page_shows_the_probability_and_its_factors_in_words(app, session, lang):
    tag = f.TAG.create(session, code="trial-3", name="试听≥3次", subject="opportunity")
    opp = scored(session, 0.62, [
        {"variable": "source", "value": "referral", "effect": 0.9},
        {"variable": "tags", "value": tag.code, "effect": -0.3},
        {"variable": "follow_ups", "value": "3-5", "effect": 0.2}])
    blank = f.OPPORTUNITY.create(session)
    client = signed_in(app, "admin", lang)
    html = client.get(f"/opportunityview/show/{opp.id}").text
    percent = text_of(html, "crm-win-percent")
    assert percent == ("赢单概率 62%" if lang == "zh" else "Win probability 62%")
    factors = re.findall(r'<span class="crm-win-factor"[^>]*>(.*?)</span>', html, re.S)
    words = [" ".join(unescape(re.sub(r"<[^>]+>", " ", x)).split()) for x in factors]
    assert words == ({"zh": ["来源: 转介绍 ↑↑", "标签: 试听≥3次 ↓", "跟进次数: 3-5 ↑"],
                      "en": ["Source: Referral ↑↑", "Tags: 试听≥3次 ↓", "Number of follow-ups: 3-5 ↑"]}[lang])
    assert text_of(html, "crm-win-scored-at").startswith("2026-06-17 07:00")
    html = client.get(f"/opportunityview/show/{blank.id}").text
    assert 'id="crm-win-not-scored"' in html and 'id="crm-win-percent"' not in html


# --- the workbench ------------------------------------------------------------------------------------
def test_the_workbench_shows_the_probability_and_sorts_likeliest_first(app, session):
    check_the_workbench(app, session)


def test_the_workbench_sorts_likeliest_first_on_postgresql(pg_app):
    """The same on PostgreSQL (NULLs sort last there by the explicit IS NULL key, as on SQLite)."""
    with pg_app.app_context():
        check_the_workbench(pg_app, db.session)


def check_the_workbench(app, session):
    unit = session.scalar(select(OrgUnit).where(OrgUnit.code == "T-K12-1"))
    me = f.salesperson(app, session, unit)
    mine = {"owner_id": me.id, "status": OWNED, "org_unit_id": unit.id, "assigned_at": utcnow()}
    low = scored(session, 0.12, [{"variable": "stage", "value": "new", "effect": -0.5}], **mine)
    high = scored(session, 0.81, [{"variable": "source", "value": "referral", "effect": 1.2},
                                  {"variable": "calls", "value": "0", "effect": -0.1}], **mine)
    unscored = f.OPPORTUNITY.create(session, **mine)
    middle = scored(session, 0.45, [], **mine)
    pool = f.POOL.create(session, org_unit_id=unit.id)
    pooled = scored(session, 0.33, [{"variable": "tags", "value": "no-such-tag", "effect": 0.4}],
                    status=POOLED, pool_id=pool.id, org_unit_id=unit.id)
    client = app.test_client()
    assert login(client, f"user{me.id}", f.PASSWORD).status_code == 302
    client.get("/lang/en")

    html = client.get("/workbench/").text
    cells = dict(re.findall(r'<tr data-opportunity="(\d+)">.*?<td class="crm-win"[^>]*>\s*(.*?)\s*</td>',
                            html, re.S))
    assert cells == {str(high.id): "81%", str(low.id): "12%", str(middle.id): "45%", str(unscored.id): "—",
                     str(pooled.id): "33%"}  # mine, and one I may claim
    assert re.search(rf'data-opportunity="{pooled.id}">.*?title="Tags: no-such-tag ↑"', html, re.S)
    assert re.search(rf'data-opportunity="{high.id}">.*?title="Source: Referral ↑↑"', html, re.S)
    assert 'data-sort="likeliest"' in html  # the link to the other order

    html = client.get("/workbench/?sort=likeliest").text
    table = re.search(r'id="crm-my-opportunities".*?</table>', html, re.S).group(0)
    assert 'data-sort="likeliest"' in table
    order = [int(i) for i in re.findall(r'<tr data-opportunity="(\d+)"', table)]
    assert order == [high.id, middle.id, low.id, unscored.id]
    # The filters keep the order.
    assert 'href="?f=overdue&amp;sort=likeliest"' in html


def test_the_opportunity_api_exposes_the_win_probability(app, session):
    opp = scored(session, 0.37, [])
    client = app.test_client()
    headers = {"Authorization": f"Bearer {api_token(client, 'admin')}"}
    body = client.get(f"/api/v1/opportunity/{opp.id}", headers=headers).get_json()
    assert body["result"]["win_probability"] == pytest.approx(0.37)
    resp = client.get("/api/v1/opportunity/", headers=headers,
                      query_string={"q": json.dumps({"order_column": "win_probability",
                                                     "order_direction": "desc", "page_size": 5})})
    assert resp.status_code == 200 and "win_probability" in resp.get_json()["result"][0]
