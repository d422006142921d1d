"""Lists that stay fast (app/views/fast_list.py): a bounded number of SQL statements per page whatever its
size, a capped count with the exact count on request, keyset pages equal to offset pages (filters, order
and data scope kept), and 400 for cursor arguments that are not positions in the list."""

from __future__ import annotations

import datetime as dt
import html as html_lib
import re
from contextlib import contextmanager

import pytest
from sqlalchemy import event, func, select

from app.extensions import db
from app.models.audit import AuditLog
from app.models.sales import OWNED, Opportunity
from app.models.sms import MSG_FAILED, NOTIFICATION
from tests import factories as f
from tests.conftest import login

CAMPAIGN = "fastlist"


def web(app, username: str):
    client = app.test_client()
    assert login(client, username).status_code == 302
    client.get("/lang/en")
    return client


def page(client, url: str) -> str:
    resp = client.get(url)
    assert resp.status_code == 200, (url, resp.status_code, resp.get_data(as_text=True)[:500])
    return resp.get_data(as_text=True)


def row_ids(text: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr data-pk="(\d+)"', text)]


def pager_link(text: str, label: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" title="[^"]*" data-pager="{label}">', text)
    return html_lib.unescape(found.group(1)) if found else None


@contextmanager
def counted_statements(app):
    """The SQL statements run while inside, counted on the app's engine."""
    seen: list[str] = []

    def count(conn, cursor, statement, *args):
        seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def owned_opportunities(session, owner, n: int, **fields) -> list[int]:
    ids = []
    for _ in range(n):
        opp = f.OPPORTUNITY.create(session, status=OWNED, owner_id=owner.id, org_unit_id=owner.org_unit_id,
                                   campaign=CAMPAIGN, **fields)
        ids.append(opp.id)
    session.commit()
    return ids


# --- eager loading: statements per page do not grow with its rows ------------------------------------
def _arrange_every_list(app, session) -> None:
    unit = f.org_unit(session)
    people = [f.employee(session, unit) for _ in range(3)]
    opps = []
    channels = [f.SMS_CHANNEL.create(session).id for _ in range(2)]
    for i in range(30):
        pool = f.POOL.create(session, org_unit_id=unit.id).id if i % 5 == 0 else None
        opp = f.OPPORTUNITY.create(session, status=OWNED, owner_id=people[i % 3].id, org_unit_id=unit.id,
                                   campaign=CAMPAIGN, pool_id=pool)
        opps.append(opp)
        f.LEAD.create(session, customer_id=opp.customer_id, opportunity_id=opp.id)
        f.FOLLOW_UP.create(session, opportunity_id=opp.id, employee_id=people[i % 3].id)
        f.CALL_RECORD.create(session, employee_id=people[i % 3].id, opportunity_id=opp.id,
                             customer_id=opp.customer_id)
        f.AUDIT_LOG.create(session)
        f.SMS_MESSAGE.create(session, kind=NOTIFICATION, status=MSG_FAILED, event="test_event",
                             channel_id=channels[i % 2], attempts=2)
    session.commit()


LISTS = ["OpportunityView", "LeadView", "CustomerView", "FollowUpView", "CallRecordView", "AuditLogView",
         "FailedNotificationView"]


@pytest.mark.parametrize("view", LISTS)
def test_statements_per_list_page_are_bounded_and_do_not_grow_with_rows(app, session, view):
    _arrange_every_list(app, session)
    client = web(app, "admin")
    with app.test_request_context():
        from flask import url_for
        url = url_for(f"{view}.list")
    page(client, url)  # warm: the login's and the reference data's caches
    counts = {}
    for size in (5, 25):
        with counted_statements(app) as seen:
            text = page(client, f"{url}?psize_{view}={size}")
        assert len(row_ids(text)) == size, view
        # FAB's permission checks (menu, buttons) are per request, not per row: left out of the bound.
        counts[size] = len([s for s in seen if "ab_permission_view" not in s])
    assert counts[5] == counts[25], (view, counts)
    assert counts[25] <= 30, (view, counts)


# --- the count --------------------------------------------------------------------------------------
def test_count_is_capped_and_exact_on_request(app, session):
    owner = f.employee(session, f.org_unit(session))
    owned_opportunities(session, owner, 8)
    app.config["CRM_LIST_COUNT_CAP"] = 5
    client = web(app, "admin")
    text = page(client, f"/opportunityview/list/?_flt_0_campaign={CAMPAIGN}&psize_OpportunityView=3")
    assert 'data-count="5+"' in text
    exact = re.search(r'id="crm-exact-count" href="([^"]+)"', text)
    assert exact, "no exact-count link"
    text = page(client, html_lib.unescape(exact.group(1)))
    assert 'data-count="8"' in text and 'id="crm-exact-count"' not in text
    # Paging still works past the cap: 3 pages of 3, 3, 2 rows.
    seen = row_ids(text)
    nxt = pager_link(text, "›")
    while nxt:
        text = page(client, nxt)
        seen += row_ids(text)
        nxt = pager_link(text, "›")
    assert len(seen) == len(set(seen)) == 8

    app.config["CRM_LIST_COUNT_CAP"] = 100
    text = page(client, f"/opportunityview/list/?_flt_0_campaign={CAMPAIGN}")
    assert 'data-count="8"' in text and 'id="crm-exact-count"' not in text


def test_an_unfiltered_list_counts_every_row(app, session):
    """An admin's list with no filter at all (no WHERE on the model): the count is the table's, not 1."""
    owner = f.employee(session, f.org_unit(session))
    owned_opportunities(session, owner, 3)
    client = web(app, "admin")
    for url, model in (("/opportunityview/list/", Opportunity), ("/auditlogview/list/", AuditLog)):
        total = session.scalar(select(func.count()).select_from(model))
        assert total > 1
        assert f'data-count="{total:,}"' in page(client, url), url


# --- keyset pages are the offset pages ----------------------------------------------------------------
def _walk(client, first_url: str) -> list[list[int]]:
    """Every page's row ids, following the "next" links (keyset) from the first page."""
    pages, url = [], first_url
    while url:
        text = page(client, url)
        pages.append(row_ids(text))
        url = pager_link(text, "›")
    return pages


def test_keyset_pages_equal_offset_pages_with_filters(app, session):
    unit = f.org_unit(session)
    a, b = f.employee(session, unit), f.employee(session, unit)
    stage = f.reference_item(session, "opportunity_stage", "new")
    owned_opportunities(session, a, 11)
    owned_opportunities(session, b, 6)
    client = web(app, "admin")
    base = (f"/opportunityview/list/?_flt_0_campaign={CAMPAIGN}&_flt_0_stage={stage.id}"
            "&psize_OpportunityView=4")
    pages = _walk(client, base)
    assert [len(p) for p in pages] == [4, 4, 4, 4, 1]
    for n, ids in enumerate(pages):
        assert row_ids(page(client, f"{base}&page_OpportunityView={n}")) == ids  # offset paging
    flat = [i for p in pages for i in p]
    assert flat == sorted(flat, reverse=True) and len(flat) == 17
    # Deep pages carry a cursor, and "previous" from the last page walks back to the first.
    last = page(client, f"{base}&page_OpportunityView=4&after_OpportunityView={pages[3][-1]}")
    assert row_ids(last) == pages[4]
    back, url = [], pager_link(last, "‹")
    while url:
        text = page(client, url)
        back.insert(0, row_ids(text))
        url = pager_link(text, "‹")
    assert back == pages[:4]
    assert "before_OpportunityView" in pager_link(last, "‹")


def test_keyset_follows_a_time_order_with_ties(app, session):
    """Follow-ups are listed newest first (created_at desc, id desc): rows sharing a time are neither
    skipped nor repeated across pages."""
    unit = f.org_unit(session)
    emp = f.employee(session, unit)
    opp = f.OPPORTUNITY.create(session, status=OWNED, owner_id=emp.id, org_unit_id=unit.id)
    when = dt.datetime(2026, 6, 1, 2, 0)
    for i in range(13):
        f.FOLLOW_UP.create(session, opportunity_id=opp.id, employee_id=emp.id, result=CAMPAIGN,
                           created_at=when + dt.timedelta(minutes=i // 4))  # four to a minute
    session.commit()
    client = web(app, "admin")
    base = f"/followupview/list/?_flt_0_result={CAMPAIGN}&psize_FollowUpView=3"
    pages = _walk(client, base)
    assert [len(p) for p in pages] == [3, 3, 3, 3, 1]
    for n, ids in enumerate(pages):
        assert row_ids(page(client, f"{base}&page_FollowUpView={n}")) == ids
    assert "after_FollowUpView=" in page(client, base).replace("&amp;", "&")


def test_a_salespersons_deep_pages_never_show_others_rows(app, session):
    me = f.employee_by_username(session, "sales11")
    other = f.employee_by_username(session, "sales12")
    mine, theirs = [], []
    for _ in range(7):  # interleaved ids
        mine += owned_opportunities(session, me, 1)
        theirs += owned_opportunities(session, other, 2)
    client = web(app, "sales11")
    base = f"/opportunityview/list/?_flt_0_campaign={CAMPAIGN}&psize_OpportunityView=2"
    pages = _walk(client, base)
    flat = [i for p in pages for i in p]
    assert flat == sorted(mine, reverse=True)
    # A hand-made cursor just above another's row moves the window, not the scope.
    for after in [max(theirs) + 1, theirs[3], 2**31 - 1]:
        ids = row_ids(page(client, f"{base}&page_OpportunityView=3&after_OpportunityView={after}"))
        assert ids and set(ids) <= set(mine)
    ids = row_ids(page(client, f"{base}&before_OpportunityView={min(theirs)}"))
    assert set(ids) <= set(mine)


@pytest.mark.parametrize("query", [
    "after_OpportunityView=abc",
    "after_OpportunityView=-3",
    "after_OpportunityView=99999999999",
    "after_OpportunityView=1%00",
    "after_OpportunityView=5&before_OpportunityView=9",
    "before_OpportunityView=1~2",
    "_oc_OpportunityView=next_followup_at&_od_OpportunityView=asc&after_OpportunityView=5",
    "count_OpportunityView=all",
])
def test_bad_list_arguments_answer_400(app, session, query):
    client = web(app, "admin")
    resp = client.get(f"/opportunityview/list/?{query}")
    assert resp.status_code == 400, (query, resp.status_code)


@pytest.mark.parametrize("cursor", ["12", "x~1780000000000000", "12~yesterday", "12~2026-06-01T02:00:00",
                                    "12~99999999999999999999", "12~-99999999999999999", "12~"])
def test_bad_time_cursor_answers_400(app, session, cursor):
    client = web(app, "admin")
    resp = client.get(f"/followupview/list/?after_FollowUpView={cursor}")
    assert resp.status_code == 400, (cursor, resp.status_code)


def test_opportunity_list_is_full_width_with_columns_that_fit(app, session):
    owner = f.employee(session, f.org_unit(session))
    owned_opportunities(session, owner, 2)
    text = page(web(app, "admin"), "/opportunityview/list/")
    assert "crm/lists.css" in text and 'class="crm-nowrap"' in text
    head = text[text.index("<thead>"):text.index("</thead>")]
    assert len(re.findall(r"<th[ >]", head)) <= 11  # checkbox + buttons + at most 9 columns
    with app.app_context():
        assert db.session.scalar(select(Opportunity.id).limit(1)) is not None
