"""Rule tags computed set-wise in SQL (app.services.tag_rules): each of the five rules takes the rows that
match, drops those that no longer do, touches only memberships of source "rule", counts its members and
is idempotent. The same checks run on PostgreSQL when TEST_DATABASE_URL is set."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from app import clock
from app.extensions import db
from app.models.bigdata import (
    CUSTOMER,
    FROM_CAMPAIGN,
    IDLE_DAYS,
    MANUAL,
    OPPORTUNITY,
    RULE,
    TRIAL_LESSONS,
    UNREACHED_CALLS,
    VISITED_PAGE,
    CustomerTag,
    OpportunityTag,
    Tag,
)
from app.models.calls import CALL_ENDED, CALL_FAILED, CALL_NO_ANSWER, CALL_RINGING
from app.models.sales import LOST, OWNED
from app.services import tag_rules
from app.services.errors import DomainError
from tests import factories as f


def members(session, tag: Tag) -> set[int]:
    model, column = (OpportunityTag, OpportunityTag.opportunity_id) if tag.subject == OPPORTUNITY \
        else (CustomerTag, CustomerTag.customer_id)
    return set(session.scalars(select(column).where(model.tag_id == tag.id)))


def rule_tag(session, rule: str, subject: str = CUSTOMER, **params) -> Tag:
    return f.TAG.create(session, source=RULE, subject=subject, rule=rule, **params)


def check_trial_lessons(session):
    tag = rule_tag(session, TRIAL_LESSONS, rule_number=3)
    three, two, merged = (f.CUSTOMER.create(session) for _ in range(3))
    f.LEARNING_SUMMARY.create(session, customer_id=three.id, lessons_attended=3)
    f.LEARNING_SUMMARY.create(session, customer_id=two.id, lessons_attended=2)
    f.LEARNING_SUMMARY.create(session, customer_id=merged.id, lessons_attended=9)
    merged.merged_into_id = three.id
    session.commit()
    now = clock.utcnow()
    result = tag_rules.recompute(session, tag, now)
    session.commit()
    got = members(session, tag)
    assert three.id in got and two.id not in got and merged.id not in got
    assert result.members == len(got) == tag.member_count and tag.computed_at == now
    # The second run adds and removes nothing; a customer who fell below drops out.
    again = tag_rules.recompute(session, tag)
    assert (again.added, again.removed) == (0, 0)
    from app.models.learning import LearningSummary

    session.get(LearningSummary, three.id).lessons_attended = 1
    session.get(LearningSummary, two.id).lessons_attended = 4
    session.commit()
    moved = tag_rules.recompute(session, tag)
    session.commit()
    got = members(session, tag)
    assert two.id in got and three.id not in got and (moved.added, moved.removed) == (1, 1)


def check_idle_days(session):
    now = clock.utcnow()
    tag = rule_tag(session, IDLE_DAYS, OPPORTUNITY, rule_number=30)
    idle = f.OPPORTUNITY.create(session, status=OWNED, idle_since=now - dt.timedelta(days=31))
    busy = f.OPPORTUNITY.create(session, status=OWNED, idle_since=now - dt.timedelta(days=3))
    closed = f.OPPORTUNITY.create(session, status=LOST, idle_since=now - dt.timedelta(days=90))
    never = f.OPPORTUNITY.create(session, idle_since=None, created_at=now - dt.timedelta(days=40))
    tag_rules.recompute(session, tag)
    session.commit()
    got = members(session, tag)
    assert {idle.id, never.id} <= got and not {busy.id, closed.id} & got
    idle.idle_since = now  # followed up today
    session.commit()
    tag_rules.recompute(session, tag)
    session.commit()
    assert idle.id not in members(session, tag)


def check_visited_page(session):
    tag = rule_tag(session, VISITED_PAGE, rule_text="/price")
    seen, other, literal = (f.CUSTOMER.create(session) for _ in range(3))
    f.CUSTOMER_EVENT.create(session, customer_id=seen.id, detail="https://www.example.com/price?utm=x")
    f.CUSTOMER_EVENT.create(session, customer_id=other.id, detail="https://www.example.com/about")
    f.CUSTOMER_EVENT.create(session, customer_id=other.id, kind="click", detail="/price-button")
    underscore = rule_tag(session, VISITED_PAGE, rule_text="a_b%")  # LIKE wildcards are taken literally
    f.CUSTOMER_EVENT.create(session, customer_id=literal.id, detail="/a_b%/x")
    f.CUSTOMER_EVENT.create(session, customer_id=other.id, detail="/aXbY/x")
    tag_rules.recompute(session, tag)
    tag_rules.recompute(session, underscore)
    session.commit()
    assert members(session, tag) == {seen.id}
    assert members(session, underscore) == {literal.id}


def check_from_campaign(session):
    campaign, elsewhere = f.CAMPAIGN.create(session), f.CAMPAIGN.create(session)
    by_lead, by_opp, neither = (f.CUSTOMER.create(session) for _ in range(3))
    f.LEAD.create(session, customer_id=by_lead.id, campaign_id=campaign.id)
    opp = f.OPPORTUNITY.create(session, customer_id=by_opp.id, campaign_id=campaign.id)
    other_opp = f.OPPORTUNITY.create(session, customer_id=neither.id, campaign_id=elsewhere.id)
    customers = rule_tag(session, FROM_CAMPAIGN, rule_campaign_id=campaign.id)
    opportunities = rule_tag(session, FROM_CAMPAIGN, OPPORTUNITY, rule_campaign_id=campaign.id)
    tag_rules.recompute(session, customers)
    tag_rules.recompute(session, opportunities)
    session.commit()
    assert members(session, customers) == {by_lead.id, by_opp.id}
    assert members(session, opportunities) == {opp.id}
    assert other_opp.id not in members(session, opportunities)


def check_unreached_calls(session):
    emp = f.employee_by_username(session, "sales11")
    tag = rule_tag(session, UNREACHED_CALLS, OPPORTUNITY, rule_number=3)
    unreached, reached, twice, errors, closed = (f.OPPORTUNITY.create(session, status=OWNED)
                                                 for _ in range(5))
    closed.status = LOST

    def calls(opp, *statuses, answered=False, result=None):
        for status in statuses:
            f.make_call_record(session, emp, opportunity_id=opp.id, status=status, result=result,
                               answered_at=clock.utcnow() if answered else None)

    calls(unreached, CALL_NO_ANSWER, CALL_NO_ANSWER, CALL_ENDED)
    calls(reached, CALL_NO_ANSWER, CALL_NO_ANSWER, CALL_NO_ANSWER)
    calls(reached, CALL_ENDED, answered=True)
    calls(twice, CALL_NO_ANSWER, CALL_NO_ANSWER, CALL_RINGING)  # the third is still ringing: not yet a call
    calls(errors, CALL_NO_ANSWER, CALL_NO_ANSWER)
    calls(errors, CALL_FAILED, result="provider_error")  # never placed
    calls(closed, CALL_NO_ANSWER, CALL_NO_ANSWER, CALL_NO_ANSWER)
    session.commit()
    tag_rules.recompute(session, tag)
    session.commit()
    got = members(session, tag)
    assert unreached.id in got and not {reached.id, twice.id, errors.id, closed.id} & got
    calls(unreached, CALL_ENDED, answered=True)  # finally reached: drops out
    session.commit()
    result = tag_rules.recompute(session, tag)
    session.commit()
    assert unreached.id not in members(session, tag) and result.removed >= 1


def check_only_rule_rows(session):
    """Recomputing never touches a membership another source put there (defence in depth)."""
    tag = rule_tag(session, TRIAL_LESSONS, rule_number=1)
    stranger = f.CUSTOMER.create(session)
    f.CUSTOMER_TAG.create(session, tag_id=tag.id, customer_id=stranger.id, source=MANUAL)
    tag_rules.recompute(session, tag)
    session.commit()
    assert stranger.id in members(session, tag)


CHECKS = (check_trial_lessons, check_idle_days, check_visited_page, check_from_campaign,
          check_unreached_calls, check_only_rule_rows)


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_rule(app, session, check):
    check(session)


def test_only_rule_tags_are_computed_and_a_bad_rule_is_refused(app, session):
    with pytest.raises(DomainError):
        tag_rules.recompute(session, f.TAG.create(session, source=MANUAL))
    with pytest.raises(DomainError) as refused:
        tag_rules.recompute(session, rule_tag(session, IDLE_DAYS, CUSTOMER, rule_number=3))
    assert refused.value.field == "rule"


def test_refreshable_lists_enabled_rule_tags_after_a_position(app, session):
    a, b = rule_tag(session, TRIAL_LESSONS, rule_number=1), rule_tag(session, TRIAL_LESSONS, rule_number=2)
    rule_tag(session, TRIAL_LESSONS, rule_number=2, enabled=False)
    f.TAG.create(session)
    assert [t.id for t in tag_rules.refreshable(session)][-2:] == [a.id, b.id]
    assert [t.id for t in tag_rules.refreshable(session, a.id)] == [b.id]
    assert [t.id for t in tag_rules.refreshable(session, 0, [b.id])] == [b.id]
    assert tag_rules.refreshable(session, 0, []) == []


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_rule_on_postgresql(pg_app, check):
    with pg_app.app_context():
        check(db.session)
        db.session.remove()
