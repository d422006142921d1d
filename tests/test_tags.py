"""Tag definitions and manual tagging (app.services.tags), Big Data › Tags, and the tags panels.

Policy under test: a definition is validated (code unique and slug-like, source, subject, a rule tag's rule
and its parameter; source and subject fixed once it has members) and audited; only manual tags are put on
by hand, only on rows in the viewer's data scope (404 otherwise), idempotently, audited with who and what;
the panels show each tag's source and when; "Recompute now" starts a TAG_REFRESH run.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from app.models.audit import AuditLog
from app.models.bigdata import (
    CUSTOMER,
    FROM_CAMPAIGN,
    IDLE_DAYS,
    IMPORTED,
    MANUAL,
    OPPORTUNITY,
    RULE,
    TRIAL_LESSONS,
    UNREACHED_CALLS,
    VISITED_PAGE,
    CustomerTag,
    Tag,
)
from app.models.jobs import TAG_REFRESH, JobRun
from app.models.sales import OWNED
from app.security.scope import viewer_for_user
from app.services import seed_tags, tags
from app.services.errors import DomainError
from app.services.seed import DEMO_PASSWORD
from tests import factories as f
from tests.conftest import login

SALESPERSON, OTHER_SALESPERSON = "sales11", "sales21"


def web(app, username: str):
    client = app.test_client()
    assert login(client, username).status_code == 302
    client.get("/lang/en")
    return client


def viewer(session, username: str):
    emp = f.employee_by_username(session, username)
    return viewer_for_user(emp.user)


def own_opportunity(session, username: str = SALESPERSON):
    me = f.employee_by_username(session, username)
    return f.OPPORTUNITY.create(session, status=OWNED, owner_id=me.id, org_unit_id=me.org_unit_id)


def values(**changes) -> tags.TagValues:
    base = {"code": "t-1", "name": "标签", "source": MANUAL, "subject": CUSTOMER}
    base.update(changes)
    return tags.TagValues(**base)


# --- definitions --------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes,field", [
    ({"code": ""}, "code"),
    ({"code": "has space"}, "code"),
    ({"code": "-lead"}, "code"),
    ({"code": "x" * 65}, "code"),
    ({"name": " "}, "name"),
    ({"source": "magic"}, "source"),
    ({"subject": "lead"}, "subject"),
    ({"source": RULE}, "rule"),
    ({"source": RULE, "rule": "horoscope"}, "rule"),
    ({"source": RULE, "rule": TRIAL_LESSONS}, "rule_number"),
    ({"source": RULE, "rule": TRIAL_LESSONS, "rule_number": 0}, "rule_number"),
    ({"source": RULE, "rule": TRIAL_LESSONS, "rule_number": 3, "subject": OPPORTUNITY}, "subject"),
    ({"source": RULE, "rule": IDLE_DAYS, "rule_number": 30}, "subject"),
    ({"source": RULE, "rule": UNREACHED_CALLS, "rule_number": 3}, "subject"),
    ({"source": RULE, "rule": VISITED_PAGE, "rule_text": "  "}, "rule_text"),
    ({"source": RULE, "rule": FROM_CAMPAIGN}, "rule_campaign"),
    ({"source": RULE, "rule": FROM_CAMPAIGN, "rule_campaign_id": 2**31 - 1}, "rule_campaign"),
])
def test_a_bad_definition_is_refused_naming_the_field(app, session, changes, field):
    with pytest.raises(DomainError) as refused:
        tags.save_tag(session, values(**changes))
    assert refused.value.field == field
    session.rollback()


def test_definitions_are_unique_tidy_and_audited(app, session):
    campaign = f.CAMPAIGN.create(session)
    tag = tags.save_tag(session, values(code="Price-Page", source=RULE, rule=VISITED_PAGE,
                                        rule_text=" /price ", rule_number=5, rule_campaign_id=campaign.id))
    session.commit()
    assert (tag.rule_text, tag.rule_number, tag.rule_campaign_id) == ("/price", None, None)
    with pytest.raises(DomainError) as refused:
        tags.save_tag(session, values(code="price-page"))  # codes differ by case only
    assert refused.value.field == "code"
    session.rollback()
    manual = tags.save_tag(session, values(code="m", rule=TRIAL_LESSONS, rule_number=3))
    assert (manual.rule, manual.rule_number) == (None, None)
    by_campaign = tags.save_tag(session, values(code="camp", source=RULE, rule=FROM_CAMPAIGN,
                                                subject=OPPORTUNITY, rule_campaign_id=campaign.id))
    assert by_campaign.rule_campaign_id == campaign.id
    assert tags.rule_in_words(by_campaign) == f"Came from the campaign {campaign}"
    session.commit()
    logged = session.scalars(select(AuditLog).where(AuditLog.target_type == "tag",
                                                    AuditLog.target_id == str(tag.id))).all()
    assert logged and "Price-Page" in (logged[0].after or "")


def test_source_and_subject_stay_once_there_are_members_and_a_new_rule_is_computed_again(app, session):
    tag = tags.save_tag(session, values(code="vip"))
    f.CUSTOMER_TAG.create(session, tag_id=tag.id)
    with pytest.raises(DomainError) as refused:
        tags.save_tag(session, values(code="vip", subject=OPPORTUNITY), tag.id)
    assert refused.value.field == "subject"
    session.rollback()
    rule = tags.save_tag(session, values(code="trial", source=RULE, rule=TRIAL_LESSONS, rule_number=3))
    rule.computed_at = f.utcnow()
    session.commit()
    tags.save_tag(session, values(code="trial", source=RULE, rule=TRIAL_LESSONS, rule_number=5), rule.id)
    assert rule.computed_at is None  # its members are of the old rule until the next refresh
    imported = f.TAG.create(session, code="bd-x", source=IMPORTED)
    with pytest.raises(DomainError) as refused:
        tags.save_tag(session, values(code="bd-y", source=IMPORTED), imported.id)
    assert refused.value.field == "code"


# --- manual tagging -----------------------------------------------------------------------------------
def test_manual_tagging_is_scoped_idempotent_and_audited(app, session):
    opp = own_opportunity(session)
    customer_id = opp.customer_id
    vip = f.TAG.create(session, name="VIP家长")
    me = viewer(session, SALESPERSON)
    assert tags.add_tag(session, me, CUSTOMER, customer_id, vip.id, SALESPERSON) is True
    session.commit()
    assert tags.add_tag(session, me, CUSTOMER, customer_id, vip.id, SALESPERSON) is False  # already on
    session.commit()
    row = session.get(CustomerTag, (vip.id, customer_id))
    assert (row.source, row.added_by) == (MANUAL, SALESPERSON) and vip.member_count == 1
    logged = session.scalars(select(AuditLog).where(AuditLog.action == tags.TAGGED_ACTION)).all()
    assert len(logged) == 1 and logged[0].target_id == str(customer_id) and "VIP家长" in logged[0].summary

    # Someone else's customer: as if it did not exist.
    other = viewer(session, OTHER_SALESPERSON)
    for command in (tags.add_tag, tags.remove_tag):
        with pytest.raises(DomainError) as refused:
            command(session, other, CUSTOMER, customer_id, vip.id, OTHER_SALESPERSON)
        assert refused.value.status == 404
        session.rollback()

    assert tags.remove_tag(session, me, CUSTOMER, customer_id, vip.id, SALESPERSON) is True
    assert tags.remove_tag(session, me, CUSTOMER, customer_id, vip.id, SALESPERSON) is False
    session.commit()
    assert session.get(CustomerTag, (vip.id, customer_id)) is None and vip.member_count == 0
    assert session.scalar(select(func.count()).select_from(AuditLog)
                          .where(AuditLog.action == tags.UNTAGGED_ACTION)) == 1


@pytest.mark.parametrize("kind,field", [("rule", "tag_id"), ("import", "tag_id"), ("subject", "tag_id"),
                                        ("disabled", "tag_id"), ("missing", "tag_id")])
def test_only_enabled_manual_tags_of_the_subject_go_on_by_hand(app, session, kind, field):
    opp = own_opportunity(session)
    tag = {"rule": lambda: f.TAG.create(session, source=RULE, rule=TRIAL_LESSONS, rule_number=1),
           "import": lambda: f.TAG.create(session, source=IMPORTED),
           "subject": lambda: f.TAG.create(session, subject=OPPORTUNITY),
           "disabled": lambda: f.TAG.create(session, enabled=False),
           "missing": lambda: None}[kind]()
    with pytest.raises(DomainError) as refused:
        tags.add_tag(session, viewer(session, SALESPERSON), CUSTOMER, opp.customer_id,
                     tag.id if tag else 2**31 - 1, SALESPERSON)
    assert refused.value.field == field


def test_an_opportunity_is_tagged_within_scope(app, session):
    opp = own_opportunity(session)
    hot = f.TAG.create(session, subject=OPPORTUNITY, name="重点跟进")
    assert tags.add_tag(session, viewer(session, SALESPERSON), OPPORTUNITY, opp.id, hot.id, SALESPERSON)
    with pytest.raises(DomainError):
        tags.add_tag(session, viewer(session, OTHER_SALESPERSON), OPPORTUNITY, opp.id, hot.id, "x")


# --- pages --------------------------------------------------------------------------------------------
def test_the_customer_panel_shows_sources_and_tags_by_hand(app, session):
    opp = own_opportunity(session)
    vip = f.TAG.create(session, name="VIP家长")
    f.TAG.create(session, name="高意向")
    rule = f.TAG.create(session, name="看过价格页", source=RULE, rule=VISITED_PAGE, rule_text="/price",
                        computed_at=f.utcnow())
    f.CUSTOMER_TAG.create(session, tag_id=rule.id, customer_id=opp.customer_id, source=RULE)
    client = web(app, SALESPERSON)
    page = client.get(f"/customer/show/{opp.customer_id}").get_data(as_text=True)
    assert 'id="crm-customer-tags"' in page and "看过价格页" in page and 'data-source="rule"' in page
    assert "computed" in page and 'name="tag_id"' in page and "VIP家长" in page  # offered in the dropdown

    resp = client.post(f"/tagging/customer/{opp.customer_id}/add", data={"tag_id": str(vip.id)})
    assert resp.status_code == 302
    page = client.get(f"/customer/show/{opp.customer_id}").get_data(as_text=True)
    assert f'data-tag="{vip.code}" data-source="manual"' in page and "Tag added" in page
    resp = client.post(f"/tagging/customer/{opp.customer_id}/remove/{vip.id}")
    assert resp.status_code == 302 and session.get(CustomerTag, (vip.id, opp.customer_id)) is None
    # A rule tag cannot be removed by hand: refused with a message, nothing changes.
    client.post(f"/tagging/customer/{opp.customer_id}/remove/{rule.id}")
    session.expire_all()
    assert session.get(CustomerTag, (rule.id, opp.customer_id)) is not None

    # Another salesperson: no page, and the form answers 404.
    other = web(app, OTHER_SALESPERSON)
    assert other.post(f"/tagging/customer/{opp.customer_id}/add", data={"tag_id": str(vip.id)}).status_code \
        == 404
    assert other.post(f"/tagging/nothing/{opp.customer_id}/add", data={"tag_id": str(vip.id)}).status_code \
        == 404


def test_the_opportunity_panel(app, session):
    opp = own_opportunity(session)
    f.TAG.create(session, subject=OPPORTUNITY, name="重点跟进")
    page = web(app, SALESPERSON).get(f"/opportunityview/show/{opp.id}").get_data(as_text=True)
    assert 'id="crm-opportunity-tags"' in page and "重点跟进" in page


@pytest.mark.config(WTF_CSRF_ENABLED=True)
def test_the_panel_form_needs_the_csrf_token(app, session):
    opp = own_opportunity(session)
    vip = f.TAG.create(session)
    client = app.test_client()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login/").text).group(1)
    client.post("/login/", data={"username": SALESPERSON, "password": DEMO_PASSWORD, "csrf_token": token})
    url = f"/tagging/customer/{opp.customer_id}/add"
    assert client.post(url, data={"tag_id": str(vip.id)}).status_code == 400
    assert session.get(CustomerTag, (vip.id, opp.customer_id)) is None
    page = client.get(f"/customer/show/{opp.customer_id}").text
    token = re.search(r'id="crm-add-tag".*?name="csrf_token" value="([^"]+)"', page, re.S).group(1)
    assert client.post(url, data={"tag_id": str(vip.id), "csrf_token": token}).status_code == 302
    assert session.get(CustomerTag, (vip.id, opp.customer_id)) is not None


def test_the_tags_list_and_form(app, session):
    campaign = f.CAMPAIGN.create(session, name="春季活动")
    client = web(app, "marketing")
    resp = client.post("/tagview/add", data={"code": "from-spring", "name": "来自春季活动", "source": RULE,
                                             "subject": CUSTOMER, "rule": FROM_CAMPAIGN, "rule_number": "",
                                             "rule_text": "", "rule_campaign": str(campaign.id),
                                             "enabled": "y"})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    tag = tags.by_code(session, "from-spring")
    assert tag.rule_campaign_id == campaign.id and tag.source == RULE
    bad = client.post("/tagview/add", data={"code": "idle", "name": "未跟进", "source": RULE,
                                            "subject": OPPORTUNITY, "rule": IDLE_DAYS, "rule_number": "",
                                            "enabled": "y"})
    assert bad.status_code == 200 and "Give a whole number between 1 and" in bad.get_data(as_text=True)
    page = client.get("/tagview/list/").get_data(as_text=True)
    assert "来自春季活动" in page and "Came from the campaign 春季活动" in page and "Rule" in page

    assert "Came from the campaign 春季活动" in client.get(f"/tagview/show/{tag.id}").get_data(as_text=True)
    edit = client.get(f"/tagview/edit/{tag.id}").get_data(as_text=True)
    assert 'name="rule_number"' in edit and 'name="source"' not in edit  # the source stays what it is
    resp = client.post(f"/tagview/edit/{tag.id}", data={"code": "from-spring", "name": "春季活动来的",
                                                        "rule": VISITED_PAGE, "rule_text": "/spring",
                                                        "rule_number": "", "enabled": "y"})
    assert resp.status_code == 302
    session.expire_all()
    assert (tag.rule, tag.rule_text, tag.rule_campaign_id) == (VISITED_PAGE, "/spring", None)
    resp = client.post("/tagview/action_post", data={"action": "recompute", "rowid": [str(tag.id)]})
    assert resp.status_code == 302
    run = session.scalar(select(JobRun).where(JobRun.kind == TAG_REFRESH))
    assert (run.target_type, run.target_id) == ("tag", tag.id)

    # A salesperson reads the tags but does not define them.
    sales = web(app, SALESPERSON)
    assert sales.get("/tagview/list/").status_code == 200
    assert sales.get("/tagview/add").status_code in (302, 403)
    assert 'href="/tagview/list/"' in sales.get("/").get_data(as_text=True)
    assert session.scalar(select(func.count()).select_from(Tag).where(Tag.code == "idle")) == 0


# --- the demo -----------------------------------------------------------------------------------------
def test_the_demo_seed_is_idempotent_and_computes_the_rule_tags(app, session):
    first = seed_tags.seed_demo(session)
    assert first["tags"] == 10 and first["customer_events"] > 0 and first["tag_members"] > 0
    rule_tags = session.scalars(select(Tag).where(Tag.source == RULE)).all()
    assert len(rule_tags) == 5 and all(t.computed_at is not None for t in rule_tags)
    assert tags.by_code(session, "price-page").member_count > 0
    again = seed_tags.seed_demo(session)
    assert again == {**first, "tags": 0, "customer_events": 0}
