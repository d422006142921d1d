"""SMS campaign preparation at scale: 1,000,000 recipients, 10,000 sensitive words, through the sink.

    python bench/sms.py                       # SQLite (a temp file), then PostgreSQL if a URL is set
    BENCH_ROWS=100000 python bench/sms.py     # a smaller run (the small run stays at 10,000)
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python bench/sms.py
    BENCH_AUDIENCE=filter python bench/sms.py # the audience as an old saved filter (default: a segment)
    BENCH_DATABASES=postgresql python bench/sms.py   # only PostgreSQL (default: sqlite,postgresql)

Each run happens in a child process of its own, so that its peak RSS (ru_maxrss) is its own: per database, the
same pipeline at 10,000 recipients and at BENCH_ROWS (default 1,000,000). Measured: messages prepared per
second by `prepare` — render + normalise + sensitive-word scan + blacklist + dedup + consent +
frequency check (Redis, one Lua call per chunk) + quiet hours per recipient zone + persist (one insert and the
cursor per chunk, on the writer thread) — in wall time and in the process's CPU time (all threads; on a shared
machine the CPU figure is the steadier one), and the process's peak RSS. Then a sample of the campaign
(BENCH_SEND, default 20,000 messages) is sent through the sink to show the sending path's rate. The audience:
customers with 1 % blacklisted, 2 % without marketing consent and 0.5 % whose name holds a blocked word;
10,000 random sensitive words (block and mask). As a segment (the default) the audience is first copied
into the campaign's snapshot by one INSERT … SELECT (measured apart: "snapshot_s"), then prepared from it;
as a saved filter (campaigns made before segments) it is read from the customers directly.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
SMALL = 10_000
WORDS = 10_000
SEND = int(os.environ.get("BENCH_SEND", "20000"))
AUDIENCE = os.environ.get("BENCH_AUDIENCE", "segment")  # segment | filter
DATABASES = os.environ.get("BENCH_DATABASES", "sqlite,postgresql").split(",")
INSERT_CHUNK = 50_000
_CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]  # common CJK block
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董袁潘"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕彬"


def make_app(url: str, redis_url: str):
    from app import create_app
    from config import TestConfig

    config = type("BenchConfig", (TestConfig,), {"SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": redis_url})
    return create_app(config)


def build(app, rows: int) -> int:
    """Schema, words, channel, template, `rows` customers and the blacklist; returns the campaign id."""
    from flask_migrate import upgrade
    from sqlalchemy import insert, text

    from app.extensions import db
    from app.models.bigdata import Segment
    from app.models.sales import Customer
    from app.models.sms import APPROVED, BlacklistEntry, SensitiveWord, SmsCampaign, SmsChannel, SmsTemplate
    from app.services.sms import campaigns

    rng = random.Random(4)
    with app.app_context():
        upgrade()
        s = db.session
        words = set()
        while len(words) < WORDS:
            words.add("".join(rng.choice(_CJK) for _ in range(rng.randint(2, 4))))
        words = sorted(words)
        s.execute(insert(SensitiveWord), [{"word": w, "action": "mask" if i % 10 == 0 else "block",
                                           "allowed": False} for i, w in enumerate(words)])
        blocked_word = next(w for i, w in enumerate(words) if i % 10)
        channel = SmsChannel(name="bench sink", provider="sink", signature="学而优", rate_limit=1_000_000,
                             batch_size=1000, timeout_seconds=5)
        s.add(channel)
        s.flush()
        tpl = SmsTemplate(name="bench", kind="marketing", channel_id=channel.id, variables="name,course",
                          body="{name}您好，{course}秋季班开课啦，前20名报名立减300元，详询400-000-0000。拒收请回复R",
                          status=APPROVED)
        s.add(tpl)
        s.flush()
        campaign = SmsCampaign(name="bench", template_id=tpl.id, channel_id=channel.id,
                               audience=json.dumps({"kind": "filter", "region": "华东"}),
                               variables=json.dumps({"course": "少儿编程"}))
        s.add(campaign)
        s.flush()
        if AUDIENCE == "segment":
            segment = Segment(name="bench 华东", subject="customer",
                              criteria=json.dumps({"regions": ["华东"]}))
            s.add(segment)
            s.flush()
            campaigns.check_draft(s, campaign, creating=False, segment=segment)
        for start in range(0, rows, INSERT_CHUNK):
            batch, black = [], []
            for n in range(start, min(rows, start + INSERT_CHUNK)):
                name = rng.choice(SURNAMES) + rng.choice(GIVEN) + (rng.choice(GIVEN) if n % 3 else "")
                if n % 200 == 7:
                    name = blocked_word + name
                phone = f"+861{3 + n % 7}{n:09d}"
                batch.append({"phone": phone, "name": name, "region": "华东",
                              "marketing_consent": n % 50 != 3})
                if n % 100 == 11:
                    source = "inbound" if n % 200 == 11 else "manual"
                    black.append({"phone": phone, "reason": "bench", "source": source})
            s.execute(insert(Customer), batch)
            if black:
                s.execute(insert(BlacklistEntry), black)
            s.commit()
        campaigns.launch(s, campaign, start=False)  # this bench drives the services itself
        s.commit()
        # Statistics as autovacuum keeps them on a live database (a bulk load is followed by ANALYZE):
        # without them PostgreSQL plans each chunk's keyset read as a scan of the whole table.
        s.execute(text("ANALYZE"))
        s.commit()
        campaign_id = campaign.id
        db.session.remove()
        db.engine.dispose()
    return campaign_id


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_build(url: str, redis_url: str, rows: int) -> None:
    t = time.perf_counter()
    campaign_id = build(make_app(url, redis_url), rows)
    print(json.dumps({"campaign_id": campaign_id, "build_s": time.perf_counter() - t}), flush=True)


def child(url: str, redis_url: str, rows: int, campaign_id: int) -> None:
    """One measured run (in a process of its own): prepare, send a sample; print one JSON line."""
    from sqlalchemy import func, select

    from app.extensions import db, rq
    from app.models.sms import SmsMessage
    from app.services.sms import campaign_preparation, campaign_segment, campaign_sending, words

    app = make_app(url, redis_url)
    with app.app_context():
        rq.redis.flushdb()
        words.matcher(db.session)  # build the automaton outside the timing (it is cached per process)
        rss_before = peak_rss_mib()
        t = time.perf_counter()
        copied = campaign_segment.ensure_snapshot(db.session, campaign_id)  # None for a saved filter
        db.session.commit()
        snapshot = time.perf_counter() - t
        t, cpu = time.perf_counter(), time.process_time()
        result = campaign_preparation.prepare(db.session, campaign_id, rq.redis)
        prep, prep_cpu = time.perf_counter() - t, time.process_time() - cpu
        rss = peak_rss_mib()
        total = db.session.scalar(select(func.count()).select_from(SmsMessage))
        assert total == rows == result.rows, (total, rows, result.rows)
        # send a sample through the sink
        sample = min(SEND, result.outcomes.get("pending", 0))
        t = time.perf_counter()
        sent = campaign_sending.send(db.session, campaign_id, rq.redis, max_batches=max(1, sample // 1000))
        send_time = time.perf_counter() - t
    print(json.dumps({"rows": rows, "audience": AUDIENCE, "snapshot_rows": copied, "snapshot_s": snapshot,
                      "prepare_s": prep, "rate": rows / prep, "rss_mib": rss,
                      "prepare_cpu_s": prep_cpu, "cpu_rate": rows / prep_cpu if prep_cpu else 0,
                      "rss_before_prepare_mib": rss_before,
                      "outcomes": dict(result.outcomes), "sent": sent.sent,
                      "send_rate": sent.sent / send_time if send_time else 0}), flush=True)


def _child(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=True, text=True,
                         cwd=ROOT)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"bench child failed: {args[0]} {args[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(url: str, redis_url: str, rows: int) -> dict:
    """Build the data in one process, measure in a fresh one (its RSS owes nothing to the build)."""
    built = _child("--build", url, redis_url, rows)
    result = _child("--child", url, redis_url, rows, built["campaign_id"])
    result["build_s"] = built["build_s"]
    return result


def databases(tmp: str, rows: int):
    from bench.common import fresh_pg_database, postgresql_url

    if "sqlite" in DATABASES:
        yield "SQLite", lambda n: f"sqlite:///{tmp}/sms_{n}.db"
    pg = postgresql_url()
    if pg and "postgresql" in DATABASES:
        yield "PostgreSQL", lambda n: fresh_pg_database(pg, f"bench_sms_{n}")


def main() -> None:
    from app.embedded_redis import EmbeddedRedis

    print(f"SMS campaign preparation: {WORDS:,} sensitive words; {SMALL:,} vs {ROWS:,} recipients; "
          f"the audience as a {AUDIENCE}")
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        for name, url_for in databases(tmp, ROWS):
            small, big = run(url_for(SMALL), server.url, SMALL), run(url_for(ROWS), server.url, ROWS)
            for r in (small, big):
                print(f"  {name:10s} {r['rows']:>9,} recipients: prepared {r['rate']:>9,.0f} msg/s "
                      f"({r['prepare_s']:.2f} s wall; this process's CPU {r['prepare_cpu_s']:.2f} s = "
                      f"{r['cpu_rate']:,.0f} msg/CPU-s), peak RSS {r['rss_mib']:.0f} MiB "
                      f"(before preparing {r['rss_before_prepare_mib']:.0f} MiB); "
                      f"sent sample {r['sent']:,} at {r['send_rate']:,.0f} msg/s")
                if r["snapshot_rows"] is not None:
                    print(f"  {name:10s} {r['rows']:>9,} recipients: snapshot of {r['snapshot_rows']:,} "
                          f"members (one INSERT … SELECT) in {r['snapshot_s']:.2f} s")
            print(f"  {name:10s} outcomes at {ROWS:,}: {big['outcomes']}")
            ratio = big["rss_mib"] / small["rss_mib"]
            print(f"  {name:10s} peak RSS {ROWS:,} / {SMALL:,} = {ratio:.2f}x (target <= 1.25x); "
                  f"rate {'meets' if big['rate'] >= 50_000 else 'MISSES'} the 50,000 msg/s target")


if __name__ == "__main__":
    from bench.common import run_at_fixed_instant

    run_at_fixed_instant()  # the sending sample runs inside the SMS window whatever the hour
    if len(sys.argv) > 1 and sys.argv[1] == "--build":
        child_build(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
