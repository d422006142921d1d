"""SMS reports: per campaign and per channel counts, failures by reason, opt-outs and cost, computed in SQL
and checked against figures computed here from the arranged rows; the report page and its chart."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter

import pytest

from app.clock import utcnow
from app.models.sms import SmsCampaign, SmsChannel, SmsMessage, SmsReceipt, SmsTemplate
from app.services.sms import reports
from tests.conftest import login
from tests.helpers import DEFAULT_INSTANT, utc

T0 = utc(DEFAULT_INSTANT) - dt.timedelta(hours=2)  # two hours before the instant the tests run at
# (campaign, channel, status, segments, error code, cancel reason, provider id?)
ROWS = [
    ("A", "fast", "delivered", 1, None, None, True),
    ("A", "fast", "delivered", 2, None, None, True),
    ("A", "fast", "sent", 1, None, None, True),
    ("A", "fast", "failed", 1, "MK:0005", None, True),   # failed after acceptance: charged
    ("A", "cheap", "failed", 2, "InvalidPhone", None, False),  # refused on submit: not charged
    ("A", "cheap", "cancelled", 1, None, "blacklisted", False),
    ("A", "cheap", "cancelled", 1, None, "opted_out", False),
    ("A", "cheap", "pending", 1, None, None, False),
    ("B", "cheap", "delivered", 3, None, None, True),
    ("B", "cheap", "failed", 1, "MK:0005", None, True),
    ("B", "cheap", "cancelled", 1, None, "duplicate", False),
    (None, "fast", "delivered", 1, None, None, True),  # a notification: in the channel report only
]
PRICES = {"fast": 0.05, "cheap": 0.04}


@pytest.fixture
def arranged(session):
    return arrange(session)


def arrange(session):
    channels = {name: SmsChannel(name=name, provider="sink", signature="测试", price_per_segment=price,
                                 priority=n) for n, (name, price) in enumerate(PRICES.items())}
    session.add_all(channels.values())
    tpl = SmsTemplate(name="promo", kind="marketing", body="hello 拒收请回复R", status="approved")
    session.add(tpl)
    session.flush()
    campaigns = {name: SmsCampaign(name=f"campaign {name}", template_id=tpl.id, audience="{}",
                                   status="completed") for name in ("A", "B")}
    session.add_all(campaigns.values())
    session.flush()
    msgs = []
    for n, (camp, chan, status, segs, code, reason, accepted) in enumerate(ROWS):
        msgs.append(SmsMessage(
            campaign_id=campaigns[camp].id if camp else None, channel_id=channels[chan].id,
            phone=f"+86138000{n:05d}", status=status, segments=segs, error_code=code, cancel_reason=reason,
            provider_id=f"p{n}" if accepted else None, kind="marketing" if camp else "notification",
            created_at=T0, sent_at=T0 if accepted else None))
    session.add_all(msgs)
    # Opt-out replies: one after campaign A reached the number (counts), one from a number A never sent
    # to before the reply (the message was never sent), one plain reply (not an opt-out).
    session.add_all([
        SmsReceipt(channel_id=channels["fast"].id, kind="inbound", phone=msgs[0].phone, text="TD",
                   status="opt_out", matched=True, received_at=T0 + dt.timedelta(minutes=5)),
        SmsReceipt(channel_id=channels["cheap"].id, kind="inbound", phone=msgs[7].phone, text="R",
                   status="opt_out", matched=True, received_at=T0 + dt.timedelta(minutes=5)),
        SmsReceipt(channel_id=channels["fast"].id, kind="inbound", phone=msgs[1].phone, text="好的",
                   status="reply", matched=True, received_at=T0 + dt.timedelta(minutes=5)),
    ])
    session.commit()
    return channels, campaigns


def expected(select_row):
    rows = [r for r in ROWS if select_row(r)]
    charged = [r for r in rows if r[2] in ("sent", "delivered") or (r[2] == "failed" and r[6])]
    status = Counter(r[2] for r in rows)
    return {"total": len(rows), "sent": status["sent"] + status["delivered"],
            "delivered": status["delivered"], "failed": status["failed"],
            "cancelled": status["cancelled"], "pending": status["pending"],
            "segments": sum(r[3] for r in charged),
            "cost": round(sum(r[3] * PRICES[r[1]] for r in charged), 4)}


def figures(row: reports.ReportRow) -> dict:
    d = row.as_dict()
    return {k: d[k] for k in ("total", "sent", "delivered", "failed", "cancelled", "pending", "segments",
                              "cost")}


def test_per_campaign_figures(session, arranged):
    _, campaigns = arranged
    rows = {r.key: r for r in reports.by_campaign(session)}
    assert set(rows) == {c.id for c in campaigns.values()}
    for name, camp in campaigns.items():
        assert figures(rows[camp.id]) == expected(lambda r, name=name: r[0] == name)
    assert rows[campaigns["A"].id].opt_outs == 1 and rows[campaigns["B"].id].opt_outs == 0
    a = rows[campaigns["A"].id]
    assert a.delivery_rate == round(100 * a.delivered / (a.delivered + a.failed), 1)


def test_per_channel_figures_include_notifications(session, arranged):
    channels, _ = arranged
    rows = {r.key: r for r in reports.by_channel(session)}
    for name, chan in channels.items():
        assert figures(rows[chan.id]) == expected(lambda r, name=name: r[1] == name)
    assert rows[channels["fast"].id].opt_outs == 1 and rows[channels["cheap"].id].opt_outs == 1


def test_failures_by_reason(session, arranged):
    _, campaigns = arranged
    want = Counter((r[2], r[4] or r[5]) for r in ROWS if r[2] in ("failed", "cancelled"))
    got = {(x["status"], x["reason"]): x["count"] for x in reports.failure_reasons(session)}
    assert got == dict(want)
    only_b = {(x["status"], x["reason"]): x["count"]
              for x in reports.failure_reasons(session, campaign_id=campaigns["B"].id)}
    assert only_b == dict(Counter((r[2], r[4] or r[5]) for r in ROWS
                                  if r[0] == "B" and r[2] in ("failed", "cancelled")))


def test_window_leaves_older_messages_out(session, arranged):
    assert reports.by_campaign(session, since=utcnow() - dt.timedelta(minutes=30)) == []
    assert len(reports.by_channel(session, since=T0 - dt.timedelta(minutes=1))) == 2


def test_report_page_shows_tables_and_chart_data(client, session, arranged):
    channels, campaigns = arranged
    login(client, "marketing")
    resp = client.get("/sms/reports/?days=0")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert "campaign A" in html and "campaign B" in html and 'id="crm-sms-campaigns"' in html
    assert "vendor/chart-4.6.1.umd.min.js" in html
    chart = json.loads(re.search(r'<script id="crm-sms-chart" type="application/json">(.*?)</script>',
                                 html, re.S).group(1))
    assert {c["name"]: c["delivered"] for c in chart["campaigns"]} == {
        "campaign A": expected(lambda r: r[0] == "A")["delivered"],
        "campaign B": expected(lambda r: r[0] == "B")["delivered"]}
    assert {c["name"] for c in chart["channels"]} == set(PRICES)
    total_cost = sum(expected(lambda r, n=n: r[1] == n)["cost"] for n in PRICES)
    assert f"¥{total_cost:.2f}" in html

    page = client.get(f"/sms/reports/campaign/{campaigns['B'].id}")
    assert page.status_code == 200 and "MK:0005" in page.get_data(as_text=True)
    assert client.get("/sms/reports/campaign/99999").status_code == 404


def test_report_permissions(client, session, arranged):
    login(client, "director")
    assert client.get("/sms/reports/").status_code == 200
    other = client.application.test_client()
    login(other, "sales11")
    assert other.get("/sms/reports/").status_code == 403


def test_reports_on_postgresql(pg_app):
    from app.extensions import db

    with pg_app.app_context():
        channels, campaigns = arrange(db.session)
        rows = {r.key: r for r in reports.by_campaign(db.session)}
        for name, camp in campaigns.items():
            assert figures(rows[camp.id]) == expected(lambda r, name=name: r[0] == name)
        assert rows[campaigns["A"].id].opt_outs == 1
        by_channel = {r.key: r for r in reports.by_channel(db.session)}
        for name, chan in channels.items():
            assert figures(by_channel[chan.id]) == expected(lambda r, name=name: r[1] == name)
        want = Counter((r[2], r[4] or r[5]) for r in ROWS if r[2] in ("failed", "cancelled"))
        assert {(x["status"], x["reason"]): x["count"] for x in reports.failure_reasons(db.session)} == want
        db.session.remove()
