"""Demo win probability: enough closed history to learn from, then a trained model and scored opportunities.

The small demo has only waiting leads, so nothing to learn from: when the demo has fewer than
HISTORY closed (won / lost) opportunities, this adds the missing ones — demo customers of their own (phones
+86136 5xxx xxxx), each with the lead that brought them, an opportunity dispatched to a salesperson of the
demo, a few follow-ups and (for some) attended trial lessons, closed over the past SPAN_DAYS as won or lost.
Who wins follows a plausible pattern (referrals and high intention win more often, as do customers who
were followed up and attended lessons), so the model has something true to find. The sales invariants
hold: a closed opportunity keeps its owner, its stage is the closing one, a lost one has a reason, the
owner's won_count counts its wins, and each assignment has its AssignmentLog row.

Then it trains (app.services.scoring.train) and scores every open opportunity — the services, not the
job: the demo is ready when `make run` starts. Idempotent: the history is added once (client keys
"demo-scoring:<n>"); training again only replaces the model with an equal one.
"""

from __future__ import annotations

import datetime as dt
import math
import random

from sqlalchemy import func, select

from app import clock
from app.models.employee import Employee
from app.models.learning import LearningActivity
from app.models.metadata import DictItem, DictType
from app.models.sales import (
    DISPATCH,
    LOST,
    WON,
    AssignmentLog,
    Customer,
    FollowUp,
    Lead,
    Opportunity,
    SalesProfile,
)
from app.services import learning, scoring, seed

HISTORY = 400  # closed opportunities the demo should have
SPAN_DAYS = 180
MARKER = "demo-scoring:"
SOURCES = {"web_form": (12, 0.0), "douyin": (25, -0.6), "baidu": (15, -0.3), "wechat": (14, 0.2),
           "referral": (8, 1.0), "offline": (6, 0.4), "landing_page": (12, -0.1), "chat": (8, 0.1)}
LEVELS = {"A": (20, 0.9), "B": (35, 0.2), "C": (30, -0.4), "D": (15, -1.2)}
STAGES_WON = (["interested", "trial", "negotiating"], [1, 4, 6])  # stage closed from: (codes, weights)
STAGES_LOST = (["new", "contacted", "interested", "trial", "negotiating"], [3, 3, 2, 1, 1])
LINES = {"k12_math": 0.2, "k12_english": 0.0, "adult_english": -0.3, "programming": 0.1}
REGIONS = ("上海", "北京", "广州", "成都", "杭州", "深圳")
LOST_REASONS = ("price", "competitor", "no_need")
NOTES = ("电话沟通课程安排", "微信发送课程资料", "约试听时间", "家长考虑价格", "回访试听感受")


def _items(session) -> dict[tuple[str, str], int]:
    return {(t, c): i for t, c, i in session.execute(
        select(DictType.code, DictItem.code, DictItem.id).join(DictItem.dict_type))}


def _weighted(rng: random.Random, table: dict) -> str:
    return rng.choices(list(table), weights=[v[0] for v in table.values()])[0]


def _add_history(session, missing: int, now: dt.datetime) -> int:
    items = _items(session)
    people = session.execute(select(Employee.id, Employee.org_unit_id)
                             .join(SalesProfile, SalesProfile.employee_id == Employee.id)
                             .order_by(Employee.id)).all()
    if not people:
        return 0
    rng = random.Random(1414)
    start = session.scalar(select(func.count()).select_from(Lead).where(Lead.client_key.like(MARKER + "%")))
    wins: dict[int, int] = {}
    for n in range(start, start + missing):
        source, level = _weighted(rng, SOURCES), _weighted(rng, LEVELS)
        line = rng.choice(list(LINES))
        owner_id, unit_id = people[rng.randrange(len(people))]
        closed_at = now - dt.timedelta(days=rng.uniform(1, SPAN_DAYS), minutes=rng.uniform(0, 600))
        created = closed_at - dt.timedelta(days=rng.uniform(3, 40))
        engaged = rng.gauss(0, 1) + LEVELS[level][1] * 0.5
        follow_ups = max(0, int(round(rng.expovariate(1) * 2 + engaged)))
        lessons = max(0, int(round(rng.expovariate(1) * 2 + engaged))) if line != "adult_english" else 0
        logit = (-1.2 + SOURCES[source][1] + LEVELS[level][1] + LINES[line] + 0.25 * min(follow_ups, 6)
                 + 0.3 * min(lessons, 5))
        won = rng.random() < 1 / (1 + math.exp(-logit))
        # How far it got before closing: won ones mostly from a trial or the negotiation, lost ones earlier.
        before = rng.choices(*(STAGES_WON if won else STAGES_LOST))[0]
        parent = "" if line == "adult_english" else "家长"
        name = rng.choice(seed.SURNAMES) + rng.choice(seed.GIVEN) + parent
        customer = Customer(phone=f"+861365{n:07d}", name=name, region=rng.choice(REGIONS),
                            marketing_consent=True, created_at=created, updated_at=closed_at)
        session.add(customer)
        session.flush()
        assigned = created + dt.timedelta(minutes=rng.uniform(1, 30))
        opp = Opportunity(
            customer_id=customer.id, product_line_id=items[("product_line", line)],
            source_id=items[("lead_source", source)], intention_level_id=items[("intention_level", level)],
            campaign=f"{clock.to_local(created):%Y-%m}-{source}", region=customer.region,
            status=WON if won else LOST, owner_id=owner_id, org_unit_id=unit_id, assigned_at=assigned,
            idle_since=closed_at, stage_id=items[("opportunity_stage", "won" if won else "lost")],
            stage_changed_at=closed_at, closed_at=closed_at,
            closed_from_stage_id=items[("opportunity_stage", before)],
            lost_reason_id=None if won else items[("lost_reason", rng.choice(LOST_REASONS))],
            created_at=created, updated_at=closed_at)
        session.add(opp)
        session.flush()
        session.add(Lead(customer_id=customer.id, opportunity_id=opp.id, name=name, phone=customer.phone,
                         source_id=opp.source_id, campaign=opp.campaign, product_line_id=opp.product_line_id,
                         region=opp.region, channel="form", client_key=f"{MARKER}{n}", created_at=created,
                         updated_at=created))
        session.add(AssignmentLog(created_at=assigned, opportunity_id=opp.id, reason=DISPATCH,
                                  to_owner_id=owner_id, actor_name="seed-demo"))
        span = (closed_at - assigned).total_seconds()
        moments = sorted(assigned + dt.timedelta(seconds=rng.uniform(0, span)) for _ in range(follow_ups))
        for at in moments:
            session.add(FollowUp(opportunity_id=opp.id, employee_id=owner_id,
                                 type_id=items.get(("followup_type", "call")), content=rng.choice(NOTES),
                                 created_at=at, updated_at=at))
        opp.last_followup_at = moments[-1] if moments else None
        for k in range(lessons):
            at = assigned + dt.timedelta(seconds=rng.uniform(0, span))
            session.add(LearningActivity(external_id=f"{MARKER}{n}-{k}", customer_id=customer.id,
                                         course="试听课", lesson=f"第{k + 1}课", attended=True,
                                         occurred_at=at, imported_at=at))
        if won:
            wins[owner_id] = wins.get(owner_id, 0) + 1
        if lessons:
            session.flush()
            learning.refresh_summaries(session, [customer.id], now)
    for owner_id, count in wins.items():
        profile = session.get(SalesProfile, owner_id)
        profile.won_count += count
    session.flush()
    return missing


def seed_demo(session) -> dict:
    """Top the closed history up to HISTORY, train a model and score every open opportunity."""
    now = clock.utcnow()
    closed = session.scalar(select(func.count()).select_from(Opportunity)
                            .where(Opportunity.status.in_((WON, LOST)))) or 0
    added = _add_history(session, HISTORY - closed, now) if closed < HISTORY else 0
    why: list[str] = []
    model = scoring.train(session, now, why=why)
    scored = 0
    if model is not None:
        after = 0
        while (last := scoring.score_chunk(session, model, after)) is not None:
            scored += scoring.open_count(session, after_id=after, upto_id=last)
            after = last
    session.flush()
    return {"scoring_history_added": added, "scoring_model": model.id if model else None,
            "scoring_auc": model.auc if model else None, "scored": scored,
            **({"scoring_not_trained": why[0]} if why else {})}

