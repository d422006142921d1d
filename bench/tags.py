"""Rule tags at scale: the five example rule tags computed on a big PostgreSQL database, as the nightly
TAG_REFRESH run computes them (app.services.tag_rules.recompute: INSERT … SELECT of new members, DELETE of
those that no longer match, a count), timed per tag.

    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/h_bench python bench/tags.py --rows 1000000
    python bench/tags.py --rows 200000 --json        # one JSON object per tag and pass
    python bench/tags.py --rows 200000 --keep-db     # reuse a database already filled

The database `<database>_tags_<rows>` is filled by bench/bigdata.py (ROWS customers and opportunities, 2
calls per opportunity of which 60 % connected, 5 follow-ups each …), then this adds, server-side: a
learning summary for 30 % of the customers (0–6 lessons attended), page views for half of them (2 each;
two pages in five are the price page), and a marketing campaign that brought 5 % of the leads and their
opportunities. The tags: attended ≥ 3 lessons, open and idle ≥ 30 days, viewed "/price", from the
campaign (customers), called ≥ 2 times never connected (the fill makes 2 calls per opportunity).

Three passes per tag: "first" (every member is new: the largest INSERT), "again" (nothing changed: what
most nights cost) and "changed" (after 1 % of the learning summaries, page views and follow-ups moved).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sqlalchemy import create_engine, text  # noqa: E402

from bench import common  # noqa: E402

MARKER = "bench-tags"  # the campaign's code: the extra data is there


def say(message: str) -> None:
    print(f"[tags] {message}", file=sys.stderr, flush=True)



EXTRA = (
    ("learning summaries", """
        INSERT INTO learning_summary (customer_id, lessons_attended, lessons_missed, courses, progress,
                                      last_active_at, updated_at)
        SELECT id, (random() * 6)::int, (random() * 2)::int, 1, (random() * 100)::int, now(), now()
        FROM customer WHERE random() < 0.3 ON CONFLICT DO NOTHING"""),
    ("page views", """
        INSERT INTO customer_event (external_id, customer_id, kind, detail, occurred_at, imported_at)
        SELECT 'bench-' || c.id || '-' || n, c.id, 'page_view',
               (ARRAY['https://www.example.com/price', 'https://www.example.com/courses/k12',
                      'https://www.example.com/teachers', 'https://www.example.com/price?plan=term',
                      'https://www.example.com/about'])[1 + (random() * 4)::int],
               now() - random() * interval '30 days', now()
        FROM customer c CROSS JOIN generate_series(1, 2) n WHERE c.id % 2 = 0"""),
    ("campaign", """
        INSERT INTO marketing_campaign (code, name, channel_id, budget, start_date, active, created_at,
                                        updated_at)
        SELECT :marker, '压测活动', i.id, 0, current_date - 90, true, now(), now()
        FROM dict_item i JOIN dict_type t ON t.id = i.dict_type_id WHERE t.code = 'marketing_channel'
        ORDER BY i.id LIMIT 1"""),
    ("campaign opportunities", """
        UPDATE opportunity SET campaign_id = (SELECT id FROM marketing_campaign WHERE code = :marker)
        WHERE id % 20 = 0"""),
    ("campaign leads", """
        UPDATE lead l SET campaign_id = o.campaign_id FROM opportunity o
        WHERE o.id = l.opportunity_id AND o.campaign_id IS NOT NULL"""),
)

CHANGES = (
    ("1 % of learning summaries", "UPDATE learning_summary SET lessons_attended = 6 - lessons_attended "
                                  "WHERE customer_id % 100 = 7"),
    ("1 % more page views", """
        INSERT INTO customer_event (external_id, customer_id, kind, detail, occurred_at, imported_at)
        SELECT 'bench-more-' || id, id, 'page_view', 'https://www.example.com/price', now(), now()
        FROM customer WHERE id % 100 = 3 ON CONFLICT DO NOTHING"""),
    ("1 % of opportunities followed up",
     "UPDATE opportunity SET idle_since = now(), last_followup_at = now() "
     "WHERE id % 100 = 5 AND status IN ('owned', 'pooled', 'waiting')"),
)


def add_tag_data(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        if conn.execute(text("SELECT 1 FROM marketing_campaign WHERE code = :m"), {"m": MARKER}).first():
            say("tag data already there")
            engine.dispose()
            return
    for name, sql in EXTRA:
        t = time.perf_counter()
        with engine.begin() as conn:
            n = conn.execute(text(sql), {"marker": MARKER}).rowcount
        say(f"{name}: {n:,} rows in {time.perf_counter() - t:.1f} s")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()


def make_app(url: str):
    from app import create_app
    from config import TestConfig

    config = type("BenchConfig", (TestConfig,), {"SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": ""})
    return create_app(config)


def tag_values(campaign_id: int):
    from app.models.bigdata import (
        CUSTOMER,
        FROM_CAMPAIGN,
        IDLE_DAYS,
        OPPORTUNITY,
        RULE,
        TRIAL_LESSONS,
        UNREACHED_CALLS,
        VISITED_PAGE,
    )
    from app.services.tags import TagValues

    return (TagValues("bench-trial-3", "上过 3 节试听课", RULE, CUSTOMER, TRIAL_LESSONS, rule_number=3),
            TagValues("bench-idle-30", "30 天未跟进", RULE, OPPORTUNITY, IDLE_DAYS, rule_number=30),
            TagValues("bench-price", "看过价格页", RULE, CUSTOMER, VISITED_PAGE, rule_text="/price"),
            TagValues("bench-campaign", "来自压测活动", RULE, CUSTOMER, FROM_CAMPAIGN,
                      rule_campaign_id=campaign_id),
            TagValues("bench-unreached-2", "呼叫 2 次未接通", RULE, OPPORTUNITY, UNREACHED_CALLS,
                      rule_number=2))


def measure(url: str, rows: int) -> list[dict]:
    from app import clock
    from app.extensions import db
    from app.models.bigdata import CustomerTag, OpportunityTag, Tag
    from app.services import audit, tag_rules, tags

    app = make_app(url)
    figures = []
    with app.app_context(), audit.acting_as(None, "bench"):
        session = db.session
        for model in (CustomerTag, OpportunityTag):  # a clean first pass every time
            session.execute(model.__table__.delete().where(model.tag_id.in_(
                text("SELECT id FROM tag WHERE code LIKE 'bench-%'"))))
        session.execute(text("DELETE FROM tag WHERE code LIKE 'bench-%'"))
        session.commit()
        campaign = session.execute(text("SELECT id FROM marketing_campaign WHERE code = :m"),
                                   {"m": MARKER}).scalar()
        created = [tags.save_tag(session, v) for v in tag_values(campaign)]
        session.commit()
        for rerun in ("first", "again", "changed"):
            if rerun == "changed":
                for name, sql in CHANGES:
                    n = session.execute(text(sql)).rowcount
                    session.commit()
                    say(f"{name}: {n:,} rows")
            for tag in created:
                tag = session.get(Tag, tag.id)
                t = time.perf_counter()
                result = tag_rules.recompute(session, tag, clock.utcnow())
                session.commit()
                seconds = time.perf_counter() - t
                figures.append({"tag": tag.code, "pass": rerun, "rows": rows, "members": result.members,
                                "added": result.added, "removed": result.removed,
                                "seconds": round(seconds, 3)})
                say(f"{rerun:8s} {tag.code:18s} {result.members:>9,} members (+{result.added:,} "
                    f"−{result.removed:,}) in {seconds:6.2f} s")
        db.session.remove()
        db.engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="customers and opportunities")
    parser.add_argument("--keep-db", action="store_true", help="reuse the database of an earlier run")
    parser.add_argument("--json", action="store_true", help="one JSON object per tag and pass")
    args = parser.parse_args()
    from bench.common import postgresql_url, run_at_fixed_instant

    base = postgresql_url()
    if not base:
        raise SystemExit("set BENCH_DATABASE_URL (or TEST_DATABASE_URL) to a PostgreSQL server")
    run_at_fixed_instant()
    url = common.bigdata_database(base, "tags", args.rows, args.keep_db)
    common.fill_bigdata(url, args.rows, say)  # bench/bigdata.py skips what is already built
    add_tag_data(url)
    figures = measure(url, args.rows)
    if args.json:
        for row in figures:
            print(json.dumps(row, ensure_ascii=False))
        return
    print(f"{'pass':8s} {'tag':18s} {'members':>10s} {'added':>9s} {'removed':>8s} {'seconds':>8s}")
    for r in figures:
        print(f"{r['pass']:8s} {r['tag']:18s} {r['members']:>10,} {r['added']:>9,} {r['removed']:>8,} "
              f"{r['seconds']:>8.2f}")
    total = {p: sum(r["seconds"] for r in figures if r["pass"] == p) for p in ("first", "again", "changed")}
    print(f"all five tags, {args.rows:,} customers: first {total['first']:.1f} s, "
          f"again {total['again']:.1f} s, after changes {total['changed']:.1f} s")


if __name__ == "__main__":
    main()
