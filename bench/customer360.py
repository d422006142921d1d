"""Customer 360 on PostgreSQL: the timeline of one customer with about 2,000 events, among other customers'
rows (300,000 SMS messages, 200,000 website visits and learning activities of others).

    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/h_bench python bench/customer360.py

Prints the median time of the first page (50 events) as an administrator and as the owner of one of the
customer's two opportunities, the time to walk the whole timeline 50 by 50, the tags-and-segments summary
with 10 segments, and the plan of the SMS source (sms_message.customer_id has no index since migration
0007), then the first page again with such an index made on this database only. A quick measurement, not
a test: it builds `<database>_c360` from scratch each run.
"""

from __future__ import annotations

import statistics
import sys
import time

from sqlalchemy import select, text

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

from bench.common import fresh_pg_database, postgresql_url, run_at_fixed_instant  # noqa: E402

BULK = [
    ("other customers", """INSERT INTO customer (phone, name, marketing_consent, created_at, updated_at)
        SELECT '+86152' || lpad(g::text, 8, '0'), 'c' || g, true, :now,
        :now FROM generate_series(1, 50000) g"""),
    ("others' SMS", """INSERT INTO sms_message (customer_id, phone, content, segments, kind, status, attempts,
        created_at) SELECT :other + 1 + g % 50000, '+86152' || lpad((g % 50000)::text, 8, '0'), '您好', 1,
        'marketing', 'delivered', 1, :now - make_interval(secs => g) FROM generate_series(1, 300000) g"""),
    ("others' visits", """INSERT INTO customer_event (external_id, customer_id, kind, detail, occurred_at,
        imported_at) SELECT 'o' || g, :other + 1 + g % 50000, 'page_view', '/p',
        :now - make_interval(secs => g),
        :now FROM generate_series(1, 200000) g"""),
    ("others' learning", """INSERT INTO learning_activity (external_id, customer_id, course, attended,
        occurred_at, imported_at) SELECT 'o' || g, :other + 1 + g % 50000, '课', true,
        :now - make_interval(secs => g), :now FROM generate_series(1, 200000) g"""),
    # The customer's own history: about 2,000 events over a year.
    ("leads", """INSERT INTO lead (customer_id, opportunity_id, phone, product_line_id, channel, consult_note,
        created_at, updated_at) SELECT :cid, :opp1, '+8613800000000', :line, 'form', '请回电 13912345678',
        :now - make_interval(mins => 20000 * g), :now FROM generate_series(1, 20) g"""),
    ("assignments", """INSERT INTO assignment_log (created_at, opportunity_id, reason, to_owner_id,
        actor_name)
        SELECT :now - make_interval(mins => 5000 * g + 1), CASE WHEN g % 2 = 0 THEN :opp1 ELSE :opp2 END,
        'dispatch', :owner, 'bench' FROM generate_series(1, 100) g"""),
    ("follow-ups", """INSERT INTO follow_up (opportunity_id, employee_id, content, created_at, updated_at)
        SELECT CASE WHEN g % 2 = 0 THEN :opp1 ELSE :opp2 END, :owner, '跟进 ' || g,
        :now - make_interval(mins => 1000 * g + 2), :now FROM generate_series(1, 500) g"""),
    ("calls", """INSERT INTO call_record (uid, interface_id, line_id, employee_id, org_unit_id,
        opportunity_id,
        customer_id, callee_phone, status, started_at, duration_seconds, created_at, updated_at)
        SELECT md5('c' || g), :interface, :call_line, :owner, :unit,
        CASE WHEN g % 2 = 0 THEN :opp1 ELSE :opp2 END, :cid, '+8613800000000', 'ended',
        :now - make_interval(mins => 1200 * g + 3), 60, :now, :now FROM generate_series(1, 400) g"""),
    ("SMS", """INSERT INTO sms_message (customer_id, phone, content, segments, kind, status, attempts,
        created_at) SELECT :cid, '+8613800000000', '回电 13912345678', 1, 'marketing', 'delivered', 1,
        :now - make_interval(mins => 1700 * g + 4) FROM generate_series(1, 300) g"""),
    ("orders", """INSERT INTO sales_order (number, opportunity_id, customer_id, status, approval, list_total,
        final_total, origin, created_at, updated_at, paid_at) SELECT 'B360-' || g, :opp1, :cid,
        'paid', 'none',
        100, 100, 'console', :now - make_interval(mins => 12000 * g + 5), :now,
        :now - make_interval(mins => 12000 * g) FROM generate_series(1, 40) g"""),
    ("learning", """INSERT INTO learning_activity (external_id, customer_id, course, lesson, attended,
        occurred_at, imported_at) SELECT 'm' || g, :cid, '少儿编程', '第' || g || '课', g % 3 > 0,
        :now - make_interval(mins => 1700 * g + 6), :now FROM generate_series(1, 300) g"""),
    ("visits", """INSERT INTO customer_event (external_id, customer_id, kind, detail, occurred_at,
        imported_at)
        SELECT 'm' || g, :cid, 'page_view', '/price', :now - make_interval(mins => 2000 * g + 7), :now
        FROM generate_series(1, 260) g"""),
    ("tags", """INSERT INTO tag (code, name, source, subject, enabled, member_count, created_at, updated_at)
        SELECT 'b360-' || g, '标签' || g, 'rule', 'customer', true, 0, :now,
        :now FROM generate_series(1, 20) g"""),
    ("customer tags", """INSERT INTO customer_tag (tag_id, customer_id, source, added_at)
        SELECT id, :cid, 'rule',
        :now - make_interval(mins => 9000 * id) FROM tag WHERE code LIKE 'b360-%'"""),
    ("chats", """INSERT INTO chat_session (token, opportunity_id, status, started_at)
        SELECT 'b360-' || g, :opp1, 'closed', :now - make_interval(mins => 25000 * g + 8)
        FROM generate_series(1, 20) g"""),
    ("chat messages", """INSERT INTO chat_message (session_id, sender, body, created_at)
        SELECT s.id, 'visitor', '你好 ' || k, s.started_at FROM chat_session s
        CROSS JOIN generate_series(1, 5) k WHERE s.token LIKE 'b360-%'"""),
    ("segments", """INSERT INTO segment (name, subject, criteria, created_at, updated_at)
        SELECT 'b360 segment ' || g, CASE WHEN g % 2 = 0 THEN 'customer' ELSE 'opportunity' END,
        CASE WHEN g % 3 = 0 THEN '{"regions": ["北京"]}' ELSE '{}' END, :now, :now
        FROM generate_series(1, 10) g"""),
]


def build(app) -> dict:
    from flask_migrate import upgrade

    from app import clock
    from app.extensions import db
    from app.models.calls import CallLine, OutboundInterface
    from app.models.employee import CrmUser, Employee
    from app.models.metadata import DictItem, DictType
    from app.models.sales import OWNED, Customer, Opportunity
    from app.services import audit
    from app.services.roles import sync_roles
    from app.services.seed import seed_demo

    upgrade()
    with audit.acting_as(None, "bench"):
        sync_roles(app.appbuilder)
        seed_demo(db.session, app.appbuilder)
    session, now = db.session, clock.utcnow()
    owner = session.scalar(select(Employee).join(Employee.user).where(CrmUser.username == "sales11"))
    lines = list(session.scalars(select(DictItem).join(DictItem.dict_type)
                                 .where(DictType.code == "product_line").order_by(DictItem.id)))
    customer = Customer(phone="+8613800000000", name="基准客户", created_at=now)
    session.add(customer)
    session.flush()
    opps = [Opportunity(customer_id=customer.id, product_line_id=line.id, status=OWNED, owner_id=owner.id,
                        org_unit_id=owner.org_unit_id) for line in lines[:2]]
    session.add_all(opps)
    interface = (session.scalar(select(OutboundInterface).limit(1))
                 or OutboundInterface(name="b360", provider="simulator"))
    session.add(interface)
    session.flush()
    line = session.scalar(select(CallLine).limit(1)) or CallLine(name="b360", interface_id=interface.id)
    session.add(line)
    session.flush()
    params = {"now": now, "cid": customer.id, "opp1": opps[0].id, "opp2": opps[1].id, "owner": owner.id,
              "unit": owner.org_unit_id, "line": lines[0].id, "interface": line.interface_id,
              "call_line": line.id, "other": customer.id}
    for name, sql in BULK:
        t = time.perf_counter()
        session.execute(text(sql), params)
        print(f"  {name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    session.commit()
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    return {"customer_id": customer.id, "owner": owner.user}


def timed(work, runs: int = 20) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        work()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def main() -> None:
    url = postgresql_url()
    if not url:
        sys.exit("set BENCH_DATABASE_URL or TEST_DATABASE_URL to a PostgreSQL server")
    run_at_fixed_instant()
    from app import create_app
    from app.extensions import db
    from app.models.employee import CrmUser
    from app.security.scope import viewer_for_user
    from app.services import customer360
    from config import TestConfig

    config = type("BenchConfig", (TestConfig,), {"SQLALCHEMY_DATABASE_URI": fresh_pg_database(url, "c360"),
                                                 "REDIS_URL": ""})
    app = create_app(config)
    with app.test_request_context():
        built = build(app)
        session, cid = db.session, built["customer_id"]
        admin = viewer_for_user(session.scalar(select(CrmUser).where(CrmUser.username == "admin")))
        owner = viewer_for_user(session.merge(built["owner"]))
        events = customer360.timeline(session, cid, admin, limit=customer360.MAX_LIMIT)
        total, pages, before = 0, 0, None
        t = time.perf_counter()
        while True:
            page = customer360.page(session, cid, admin, before=before, limit=50)
            total, pages, before = total + len(page.events), pages + 1, page.next
            if before is None:
                break
        walk = (time.perf_counter() - t) * 1000
        print(f"events on the timeline: {total} ({len(events)} in the first page of 200)")
        first = timed(lambda: customer360.page(session, cid, admin))
        print(f"first page of 50, administrator: {first:.1f} ms")
        mine = timed(lambda: customer360.page(session, cid, owner))
        print(f"first page of 50, the owner:     {mine:.1f} ms")
        middle = events[-1].cursor
        print(f"a page of 50 deep in it:         "
              f"{timed(lambda: customer360.page(session, cid, admin, before=middle)):.1f} ms")
        print(f"whole timeline, {pages} pages of 50: {walk:.0f} ms")
        summary = timed(lambda: customer360.summary(session, cid, admin))
        print(f"summary (tags, 10 segments):     {summary:.1f} ms")
        plan = session.execute(text(
            "EXPLAIN ANALYZE SELECT id FROM sms_message WHERE customer_id = :cid "
            "ORDER BY created_at DESC, id DESC LIMIT 51"), {"cid": cid}).scalars().all()
        print("SMS source plan:\n  " + "\n  ".join(plan))
        # The index this source asks for (not in the schema: reported, measured here on this database only).
        session.execute(text("CREATE INDEX ix_bench_sms_customer_time ON sms_message "
                             "(customer_id, created_at) WHERE customer_id IS NOT NULL"))
        session.commit()
        with_index = timed(lambda: customer360.page(session, cid, admin))
        print(f"first page of 50 with an index on sms_message (customer_id, created_at): {with_index:.1f} ms")


if __name__ == "__main__":
    main()
