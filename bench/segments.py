"""Segment counts at 1,000,000 customers on PostgreSQL: the time of app.services.segments.count for realistic
segments, as an administrator (no scope) and as a salesperson (their own customers), first run and warm.

    python bench/segments.py postgresql://postgres@127.0.0.1:5432/h_segments_bench
    python bench/segments.py URL --rows 100000 --json        # one JSON line per segment and subject
    python bench/segments.py URL --keep-db                   # reuse a database this script filled
    python bench/segments.py URL --keep-db --explain 4       # EXPLAIN ANALYZE of segment 4

The database is dropped and made again (unless --keep-db): migrated, the reference data and the demo
organisation loaded (app.services.seed), salespeople added up to one per 2,000 customers (as
bench/bigdata.py does), then server-side (INSERT … SELECT over generate_series), relative to the fixed
instant of bench/common.py:
  - ROWS customers over 180 days (0.5 % of them merged into another), 90 % with marketing consent;
  - 1.2 opportunities per customer (a fifth of the customers have a second product line): 5 % won, 40 %
    lost, 25 % pooled, 30 % owned; stages, 7 regions, 6 marketing campaigns (70 % of them), a last
    follow-up on 85 %, a win probability on the open ones (skewed low, as a model's scores are);
  - learning summaries for 40 % of the customers (lessons attended: exponential, mean 3);
  - 5 customer tags of 1 %, 5 %, 10 %, 20 % and 30 % of the customers, 3 opportunity tags of 2 %, 10 %
    and 25 % of the opportunities;
then VACUUM ANALYZE. Each segment is counted with a new connection (its first run: no cached plan, the data in
the OS cache) and then `--repeat` times (warm: the median).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sqlalchemy import text  # noqa: E402

MARKER = "bench-segments"  # config item value marking a built database
CUSTOMER_TAGS = (("c_vip", "高净值", 0.01), ("c_price_page", "看过价格页", 0.05),
                 ("c_trial3", "试听≥3节", 0.10), ("c_idle", "沉默30天", 0.20), ("c_wechat", "已加微信", 0.30))
OPPORTUNITY_TAGS = (("o_hot", "高意向", 0.02), ("o_unreached", "三次未接通", 0.10),
                    ("o_discount", "要优惠", 0.25))
REGIONS = ("上海", "北京", "广州", "深圳", "成都", "杭州", "武汉")
LINES = ("k12_math", "k12_english", "adult_english", "programming")
STAGES = ("new", "contacted", "interested", "trial", "negotiating")
CAMPAIGNS = 6


def say(message: str) -> None:
    print(f"[segments] {message}", file=sys.stderr, flush=True)


def _array(values, cast: str = "int") -> str:
    if cast == "int":
        return "(ARRAY[" + ",".join(str(int(v)) for v in values) + "])"
    return "(ARRAY[" + ",".join("'" + str(v).replace("'", "''") + "'" for v in values) + "]::text[])"


def statements(item: dict, refs: dict) -> list[tuple[str, str]]:
    lines = _array(item[f"product_line.{c}"] for c in LINES)
    stages = _array(item[f"opportunity_stage.{c}"] for c in STAGES)
    levels = _array(item[f"intention_level.{c}"] for c in "ABCD")
    won, lost = item["opportunity_stage.won"], item["opportunity_stage.lost"]
    regions = _array(REGIONS, "text")
    out = [
        ("plan", """
        CREATE TEMP TABLE bc ON COMMIT PRESERVE ROWS AS
        SELECT g, CAST(:now AS timestamp) - make_interval(secs => 15552000 * (1 - power(random(), 0.8)))
                   AS created,
               1 + floor(random() * 7)::int AS ri, 1 + floor(random() * 4)::int AS li, random() AS u_two,
               random() < 0.9 AS consent
        FROM generate_series(1, :rows) g"""),
        ("plan index", "CREATE UNIQUE INDEX ON bc (g)"),
        ("customers", f"""
        INSERT INTO customer (id, phone, name, region, marketing_consent, created_at, updated_at)
        SELECT :base_customer + g, '+86151' || lpad(g::text, 8, '0'), '客户' || g, {regions}[ri], consent,
               created, created FROM bc"""),
        ("merged customers", """
        UPDATE customer SET merged_into_id = id - 1, merged_at = created_at
        WHERE id > :base_customer + 1 AND id % 200 = 7"""),
        ("opportunities", f"""
        INSERT INTO opportunity (id, customer_id, product_line_id, stage_id, intention_level_id, campaign_id,
            region, status, owner_id, pool_id, org_unit_id, is_recycled, recycle_count, locked, assigned_at,
            last_followup_at, idle_since, closed_at, win_probability, created_at, updated_at)
        SELECT :base_opportunity + row_number() OVER (), :base_customer + g,
               {lines}[1 + (li + k - 2) % 4],
               CASE status WHEN 'won' THEN {won} WHEN 'lost' THEN {lost}
                    ELSE {stages}[1 + floor(u_stage * u_stage * 5)::int] END,
               {levels}[1 + floor(u_lvl * 4)::int],
               CASE WHEN u_camp < 0.7
                    THEN (CAST(:campaigns AS int[]))[1 + floor(u_camp / 0.7 * {CAMPAIGNS})::int] END,
               {regions}[ri], status,
               CASE WHEN status = 'pooled' THEN NULL ELSE (CAST(:people AS int[]))[pi] END,
               CASE WHEN status = 'pooled' THEN {int(refs['pool'])} END,
               CASE WHEN status = 'pooled' THEN {int(refs['pool_unit'])} ELSE (CAST(:units AS int[]))[pi] END,
               status = 'pooled', (status = 'pooled')::int, false, created + interval '5 minutes',
               CASE WHEN u_fu < 0.85 THEN created + (CAST(:now AS timestamp) - created) * u_fu / 0.85 END,
               created, CASE WHEN status IN ('won', 'lost') THEN CAST(:now AS timestamp) END,
               CASE WHEN status IN ('owned', 'pooled') THEN round(power(u_win, 1.8)::numeric, 4) END,
               created, created
        FROM (SELECT bc.*, k, random() AS u_stage, random() AS u_lvl, random() AS u_camp, random() AS u_fu,
                     random() AS u_win,
                     1 + floor(random() * cardinality(CAST(:people AS int[])))::int AS pi,
                     (ARRAY['won','lost','lost','lost','lost','lost','lost','lost','lost','pooled','pooled',
                            'pooled','pooled','pooled','owned','owned','owned','owned','owned','owned'])
                         [1 + floor(random() * 20)::int] AS status
              FROM bc CROSS JOIN LATERAL generate_series(1, CASE WHEN u_two < 0.2 THEN 2 ELSE 1 END) k) x"""),
        ("learning summaries", """
        INSERT INTO learning_summary (customer_id, lessons_attended, lessons_missed, courses, progress,
            last_active_at, updated_at)
        SELECT :base_customer + g, floor(-ln(1 - random()) * 3)::int, floor(random() * 3)::int, 1,
               floor(random() * 100)::int,
               CAST(:now AS timestamp) - make_interval(secs => 86400 * 60 * random()), CAST(:now AS timestamp)
        FROM bc WHERE random() < 0.4"""),
        ("drop plan", "DROP TABLE bc"),
    ]
    for code, _name, share in CUSTOMER_TAGS:
        out.append((f"customer tag {code}", f"""
        INSERT INTO customer_tag (tag_id, customer_id, source, added_at)
        SELECT {int(refs['tag_' + code])}, id, 'rule', CAST(:now AS timestamp) FROM customer
        WHERE id > :base_customer AND random() < {share}"""))
    for code, _name, share in OPPORTUNITY_TAGS:
        out.append((f"opportunity tag {code}", f"""
        INSERT INTO opportunity_tag (tag_id, opportunity_id, source, added_at)
        SELECT {int(refs['tag_' + code])}, id, 'rule', CAST(:now AS timestamp) FROM opportunity
        WHERE id > :base_opportunity AND random() < {share}"""))
    return out


def make_app(url: str):
    from app import create_app
    from config import TestConfig

    config = type("BenchConfig", (TestConfig,), {"SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": ""})
    return create_app(config)


def _reference_rows(conn, now) -> dict:
    """Tags and campaigns the build refers to (made here), the pool, the dictionary items."""
    refs = {}
    channel = conn.execute(text("SELECT i.id FROM dict_item i JOIN dict_type t ON t.id = i.dict_type_id "
                                "WHERE t.code = 'marketing_channel' ORDER BY i.id LIMIT 1")).scalar()
    campaigns = []
    for n in range(1, CAMPAIGNS + 1):
        campaigns.append(conn.execute(text(
            "INSERT INTO marketing_campaign (code, name, channel_id, budget, start_date, active, created_at, "
            "updated_at) VALUES (:code, :name, :channel, 10000, :day, true, :now, :now) RETURNING id"),
            {"code": f"bench-seg-{n}", "name": f"压测活动{n}", "channel": channel, "day": now.date(),
             "now": now}).scalar())
    refs["campaigns"] = campaigns
    for code, name, _share in CUSTOMER_TAGS + OPPORTUNITY_TAGS:
        refs[f"tag_{code}"] = conn.execute(text(
            "INSERT INTO tag (code, name, source, subject, enabled, member_count, created_at, updated_at) "
            "VALUES (:code, :name, 'rule', :subject, true, 0, :now, :now) RETURNING id"),
            {"code": code, "name": name, "subject": "customer" if code.startswith("c_") else "opportunity",
             "now": now}).scalar()
    refs["pool"], refs["pool_unit"] = conn.execute(text(
        "SELECT id, org_unit_id FROM sales_pool ORDER BY id LIMIT 1")).one()
    return refs


def build(conn, rows: int, now) -> None:
    from bench.bigdata import _salespeople

    t0 = time.perf_counter()
    people, units = _salespeople(conn, rows)
    say(f"{len(people)} salespeople")
    item = {f"{t}.{c}": i for t, c, i in conn.execute(text(
        "SELECT t.code, i.code, i.id FROM dict_item i JOIN dict_type t ON t.id = i.dict_type_id"))}
    refs = _reference_rows(conn, now)
    base = {f"base_{t}": conn.execute(text(f"SELECT coalesce(max(id), 0) FROM {t}")).scalar()
            for t in ("customer", "opportunity")}
    params = {"rows": rows, "now": now, "people": people, "units": units, "campaigns": refs["campaigns"],
              **base}
    conn.execute(text("SET session_replication_role = replica"))
    conn.execute(text("SELECT setseed(0.14)"))
    for label, sql in statements(item, refs):
        t = time.perf_counter()
        result = conn.execute(text(sql), params)
        conn.commit()
        say(f"{label}: {result.rowcount:,} rows in {time.perf_counter() - t:.1f} s")
    conn.execute(text("SET session_replication_role = DEFAULT"))
    for table in ("customer", "opportunity"):
        conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                          f"(SELECT coalesce(max(id), 1) FROM {table}))"))
    conn.execute(text("UPDATE tag SET member_count = "
                      "(SELECT count(*) FROM customer_tag WHERE tag_id = tag.id) "
                      "+ (SELECT count(*) FROM opportunity_tag WHERE tag_id = tag.id), "
                      "computed_at = :now"),
                 {"now": now})
    conn.execute(text("INSERT INTO config_item (key, value_type, value, description, created_at, "
                      "updated_at) VALUES (:k, 'str', :v, 'bench', :now, :now)"),
                 {"k": MARKER, "v": str(rows), "now": now})
    conn.commit()
    t = time.perf_counter()
    conn.commit()
    # VACUUM as autovacuum would soon: the visibility map lets the tag tables' keys be read index-only.
    conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    say(f"VACUUM ANALYZE in {time.perf_counter() - t:.1f} s; built in {time.perf_counter() - t0:.1f} s")


def prepare(url: str, rows: int, keep: bool) -> None:
    from flask_migrate import upgrade

    from app import clock
    from app.extensions import db
    from app.services import audit
    from app.services.roles import sync_roles
    from app.services.seed import seed_demo

    app = make_app(url)
    with app.app_context():
        if keep and _built(db.session) == rows:
            say(f"reusing {url}")
        else:
            upgrade()
            with audit.acting_as(None, "bench"):
                sync_roles(app.appbuilder)
                seed_demo(db.session, app.appbuilder)
                with db.engine.connect() as conn:
                    build(conn, rows, clock.utcnow())
        db.session.remove()
        db.engine.dispose()


def _built(session) -> int | None:
    try:
        value = session.execute(text("SELECT value FROM config_item WHERE key = :k"), {"k": MARKER}).scalar()
    except Exception:  # noqa: BLE001 — no schema yet
        session.rollback()
        return None
    return int(value) if value else None


def segments(session) -> list[tuple[str, dict]]:
    """(name, criteria) of the benchmarked segments, with this database's ids."""
    tag = dict(session.execute(text("SELECT code, id FROM tag")).all())
    item = {f"{t}.{c}": i for t, c, i in session.execute(text(
        "SELECT t.code, i.code, i.id FROM dict_item i JOIN dict_type t ON t.id = i.dict_type_id"))}
    campaigns = list(session.scalars(text("SELECT id FROM marketing_campaign WHERE code LIKE 'bench-seg-%' "
                                          "ORDER BY id")))
    stage = {c: item[f"opportunity_stage.{c}"] for c in STAGES}
    line = {c: item[f"product_line.{c}"] for c in LINES}
    return [
        ("everyone", {}),
        ("tags any: vip 1% | hot opportunity 2%", {"tags_any": [tag["c_vip"], tag["o_hot"]]}),
        ("tags all: idle 20% & wechat 30%", {"tags_all": [tag["c_idle"], tag["c_wechat"]]}),
        ("tag trial3 10%, none of wechat 30%", {"tags_any": [tag["c_trial3"]],
                                                 "tags_none": [tag["c_wechat"]]}),
        ("stage interested/trial + K12 math", {"stages": [stage["interested"], stage["trial"]],
                                               "product_lines": [line["k12_math"]]}),
        ("2 campaigns, owned", {"campaigns": campaigns[:2], "statuses": ["owned"]}),
        ("Shanghai/Beijing, consent", {"regions": ["上海", "北京"], "consent": True}),
        ("lessons >= 3, in class within 14 days", {"lessons_min": 3, "active_within_days": 14}),
        ("open, not contacted 7 days, win >= 60%", {"statuses": ["owned", "pooled"], "not_contacted_days": 7,
                                                     "win_min": 60}),
        ("win 40-70%, contacted within 30 days", {"win_min": 40, "win_max": 70,
                                                   "contacted_within_days": 30}),
        ("combination: tags, K12, win >= 30%, region, consent, not vip", {
            "tags_any": [tag["c_price_page"], tag["c_trial3"], tag["o_discount"]],
            "tags_none": [tag["c_vip"]],
            "product_lines": [line["k12_math"], line["k12_english"]], "win_min": 30,
            "regions": ["上海", "北京", "广州", "深圳"], "consent": True}),
    ]


def viewers(session):
    from app.models.security import SCOPE_ALL, SCOPE_OWN
    from app.security.scope import Viewer

    owner, unit = session.execute(text(
        "SELECT owner_id, org_unit_id FROM opportunity WHERE owner_id IS NOT NULL "
        "GROUP BY owner_id, org_unit_id ORDER BY count(*) DESC LIMIT 1")).one()
    return {"admin": Viewer(user_id=1, scope=SCOPE_ALL),
            "salesperson": Viewer(user_id=2, scope=SCOPE_OWN, employee_id=owner, org_unit_id=unit)}


def measure(app, repeat: int, explain: int | None) -> list[dict]:
    from sqlalchemy.dialects import postgresql

    from app.extensions import db
    from app.services import segments as seg

    results = []
    with app.app_context():
        chosen = segments(db.session)
        people = viewers(db.session)
        db.session.remove()
        for n, (name, criteria) in enumerate(chosen):
            for subject in ("customer", "opportunity"):
                for who, viewer in people.items():
                    if explain is not None:
                        if n != explain:
                            continue
                        query = seg.ids_query(db.session, subject, seg.validate(criteria)).where(
                            *seg.scope_clauses(subject, viewer))
                        sql = str(query.compile(dialect=postgresql.dialect(),
                                                compile_kwargs={"literal_binds": True}))
                        plan = db.session.execute(
                            text(f"EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) FROM ({sql}) s"))
                        print(f"-- {name} / {subject} / {who}\n{sql}\n" + "\n".join(r[0] for r in plan))
                        db.session.remove()
                        continue
                    db.engine.dispose()  # a new connection: no prepared plan, a cold backend
                    t = time.perf_counter()
                    found = seg.count_for(db.session, subject, criteria, viewer)
                    first = time.perf_counter() - t
                    warm = []
                    for _ in range(repeat):
                        t = time.perf_counter()
                        seg.count_for(db.session, subject, criteria, viewer)
                        warm.append(time.perf_counter() - t)
                    db.session.remove()
                    results.append({"segment": name, "subject": subject, "viewer": who, "count": found,
                                    "first_ms": round(first * 1000, 1),
                                    "warm_ms": round(statistics.median(warm) * 1000, 1)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--explain", type=int, help="EXPLAIN ANALYZE the segment of this number instead")
    args = parser.parse_args()
    if not args.url or not args.url.startswith("postgresql"):
        raise SystemExit("give a PostgreSQL URL (or BENCH_DATABASE_URL)")
    from bench.common import run_at_fixed_instant

    run_at_fixed_instant()
    if not args.keep_db:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        base = make_url(args.url)
        engine = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{base.database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{base.database}"'))
        engine.dispose()
    prepare(args.url, args.rows, args.keep_db)
    results = measure(make_app(args.url), args.repeat, args.explain)
    for r in results:
        if args.json:
            print(json.dumps({"rows": args.rows, **r}, ensure_ascii=False))
        else:
            print(f"{r['segment'][:58]:58} {r['subject']:11} {r['viewer']:11} {r['count']:>9,} "
                  f"first {r['first_ms']:7.1f} ms  warm {r['warm_ms']:7.1f} ms")
    if results:
        worst = max(max(r["first_ms"], r["warm_ms"]) for r in results)
        say(f"slowest: {worst:.0f} ms ({'under' if worst < 1000 else 'OVER'} the 1 s target)")


if __name__ == "__main__":
    main()
