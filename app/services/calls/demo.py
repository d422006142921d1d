"""Demo data for outbound calling and QA: the simulator interface, two lines, caller-ID numbers, a seat per
salesperson, do-not-call entries, a scorecard, a weekly sampling plan and ~14 days of call history with
transcripts and scored inspections, so the call and QA reports have something to show at once.

Idempotent: configuration is looked up by its natural key (name, number, seat no., phone) first; the call
history (uids "demo000000"…) and its inspections are written only when the first demo call is missing.
Deterministic: a fixed random seed, times relative to `now`.
"""

from __future__ import annotations

import datetime as dt
import json
import random

from sqlalchemy import select

from app import clock
from app.models.calls import (
    CALL_BUSY,
    CALL_ENDED,
    CALL_FAILED,
    CALL_NO_ANSWER,
    COUNTER_CALLEE_DAY,
    COUNTER_NUMBER_DAY,
    NUMBER_ACTIVE,
    NUMBER_FLAGGED,
    NUMBER_SUSPENDED,
    SIMULATOR,
    CallCounter,
    CallLine,
    CallNumber,
    CallRecord,
    DoNotCall,
    OutboundInterface,
    Seat,
)
from app.models.qa import (
    APPEAL_REJECTED,
    APPEAL_UPHELD,
    CHECK_FORBIDDEN,
    CHECK_MANUAL,
    CHECK_REQUIRED,
    CHECK_SILENCE,
    CHECK_SPEECH_RATE,
    QA_APPEALED,
    QA_FINAL,
    QA_SCORED,
    QaCheckItem,
    QaInspection,
    QaPlan,
    QaScorecard,
)
from app.models.sales import Customer, Opportunity
from app.services.calls import config

INTERFACE = "本地模拟外呼（simulator）"
# The simulator answers, except for the callees listed in fail_numbers (see app.services.calls.simulator).
SIMULATOR_OPTIONS = {"outcome": "answer", "ring_seconds": 6, "talk_seconds": 90, "transcript": True,
                     "fail_numbers": ["+8613970000003", "+8613970000013"], "realtime": True}
# (name, trunk, concurrency limit)
LINES = [("销售外呼线路 A", "sim-trunk-a", 30), ("销售外呼线路 B", "sim-trunk-b", 20)]
# (number, line index, area, daily cap, rate limit per hour, status, note)
NUMBERS = [
    ("+861062880001", 0, "北京", 200, 40, NUMBER_ACTIVE, None),
    ("+861062880002", 0, "北京", 200, 40, NUMBER_ACTIVE, None),
    ("+862150880001", 0, "上海", 150, 30, NUMBER_ACTIVE, None),
    ("+862150880002", 1, "上海", 150, 30, NUMBER_FLAGGED, "运营商标记为营销电话，申诉中"),
    ("+862038880001", 1, "广州", 120, 30, NUMBER_ACTIVE, None),
    ("+862038880002", 1, "广州", 120, 30, NUMBER_SUSPENDED, "投诉过多，暂停使用至月底"),
    ("+862885880001", 0, "成都", 100, 20, NUMBER_ACTIVE, None),
    ("+862885880002", 1, "成都", 100, 20, NUMBER_ACTIVE, None),
]
DO_NOT_CALL = [("+8613970000007", "客户要求不再来电"), ("+8613970000011", "投诉后加入免打扰")]
SCORECARD = "标准销售外呼质检"
# (name, kind, points, keywords, threshold)
CHECK_ITEMS = [
    ("开场问候", CHECK_REQUIRED, -10, "您好", None),
    ("确认需求", CHECK_REQUIRED, -5, "请问", None),
    ("违规承诺", CHECK_FORBIDDEN, -20, "保证提分\n100%通过", None),
    ("长时间静音", CHECK_SILENCE, -5, None, 8),
    ("语速过快", CHECK_SPEECH_RATE, -5, None, 300),
    ("服务态度", CHECK_MANUAL, -10, None, None),
    ("主动邀约试听", CHECK_MANUAL, 10, None, None),
]
PLAN = "销售事业部每周抽检"
HISTORY_DAYS = 14
FIRST_UID = "demo000000"


def _get_or_create(session, model, lookup: dict, values: dict):
    """The row with `lookup`, or a new one; calling configuration is written through its rules
    (app.services.calls.config.save), like the admin pages and the API write it."""
    obj = session.scalar(select(model).filter_by(**lookup))
    if obj is not None:
        return obj, False
    obj = model(**lookup, **values)
    if model in config.VALIDATORS:
        config.save(session, obj)
    else:
        session.add(obj)
        session.flush()
    return obj, True


def seed_calls(session, employees: dict, now: dt.datetime) -> dict:
    """Calling configuration and history for the demo employees (username → Employee)."""
    from app.models.org import OrgUnit

    counts = {"call_numbers": 0, "seats": 0, "calls": 0, "qa_inspections": 0}
    interface, _ = _get_or_create(session, OutboundInterface, {"name": INTERFACE}, {
        "provider": SIMULATOR, "options": json.dumps(SIMULATOR_OPTIONS, ensure_ascii=False),
        "connect_timeout": 3, "read_timeout": 10, "enabled": True})
    lines = [_get_or_create(session, CallLine, {"name": name}, {
        "interface_id": interface.id, "trunk": trunk, "concurrency_limit": limit, "binding_minutes": 30,
        "calling_windows": "09:00-21:00", "enabled": True})[0] for name, trunk, limit in LINES]
    numbers = []
    for number, line, area, cap, rate, status, note in NUMBERS:
        obj, created = _get_or_create(session, CallNumber, {"number": number}, {
            "line_id": lines[line].id, "area": area, "daily_cap": cap, "rate_limit": rate,
            "rate_period_minutes": 60, "status": status, "status_note": note})
        numbers.append(obj)
        counts["call_numbers"] += created
    sales = sorted((u, e) for u, e in employees.items() if u.startswith("sales"))
    seats = {}
    for n, (username, emp) in enumerate(sales):
        seat = session.scalar(select(Seat).where(Seat.employee_id == emp.id, Seat.active.is_(True)))
        if seat is None:
            seat, created = _get_or_create(session, Seat, {"seat_no": f"S{1001 + n}"}, {
                "line_id": lines[n % 2].id, "employee_id": emp.id, "active": True})
            counts["seats"] += created
        seats[username] = seat
    for phone, reason in DO_NOT_CALL:
        _get_or_create(session, DoNotCall, {"phone": phone}, {"reason": reason, "source": "manual"})
    scorecard, created = _get_or_create(session, QaScorecard, {"name": SCORECARD}, {
        "description": "开场、需求确认、合规承诺、静音与语速，加人工评分项", "base_score": 90})
    if created:
        for pos, (name, kind, points, words, threshold) in enumerate(CHECK_ITEMS, start=1):
            scorecard.items.append(QaCheckItem(name=name, kind=kind, points=points, keywords=words,
                                               threshold=threshold, position=pos))
        session.flush()
    inspectors = [e for u, e in sorted(employees.items()) if u.startswith("qa")]
    division = session.scalar(select(OrgUnit).where(OrgUnit.code == "SALES"))
    plan, created = _get_or_create(session, QaPlan, {"name": PLAN}, {
        "scorecard_id": scorecard.id, "org_unit_id": division.id, "mode": "count", "amount": 5,
        "min_duration": 30, "connected_only": True, "period": "week", "enabled": True})
    if created:
        plan.inspectors = inspectors
    if session.scalar(select(CallRecord.id).where(CallRecord.uid == FIRST_UID)) is None:
        calls = _history(session, interface, numbers, seats, dict(sales), now)
        counts["calls"] = len(calls)
        counts["qa_inspections"] = _inspections(session, calls, scorecard, inspectors, now)
    session.flush()
    return counts


# --- call history ---------------------------------------------------------------------------------------
OPENINGS = ["您好，我是学而优教育的课程顾问{agent}。", "您好，这里是学而优教育，我是{agent}。"]
QUESTIONS = ["请问孩子现在几年级了？", "请问您之前了解过我们的课程吗？", "请问您方便现在聊两分钟吗？"]
PITCHES = ["我们这周有免费的试听课，可以先带孩子体验一下。", "老师都是一对一跟进的，每周有学习报告。",
           "现在报名有双十一优惠，名额有限。"]
RISKY = ["报我们的班保证提分，肯定没问题。", "考试100%通过，不过全额退款。"]
REPLIES = ["嗯，你说。", "二年级了。", "之前没听说过。", "价格是多少？", "我考虑一下吧。",
           "可以，周末有时间。"]
CLOSINGS = ["好的，那我给您发一下试听时间，再见。", "感谢您的时间，祝您生活愉快。"]


def _transcript(rng: random.Random, agent: str, talk: int, risky: bool, polite: bool, asks: bool,
                pause: bool) -> list[dict]:
    """Alternating agent / customer turns with timings that fit `talk` seconds."""
    turns = [("agent", rng.choice(OPENINGS).format(agent=agent) if polite else f"喂，我是{agent}。")]
    if asks:
        turns.append(("agent", rng.choice(QUESTIONS)))
    turns.append(("customer", rng.choice(REPLIES)))
    turns.append(("agent", rng.choice(PITCHES)))
    if risky:
        turns.append(("agent", rng.choice(RISKY)))
    turns.append(("customer", rng.choice(REPLIES)))
    turns.append(("agent", rng.choice(CLOSINGS)))
    span = talk / len(turns)
    out, start = [], 0.5
    for k, (speaker, text) in enumerate(turns):
        gap = 10.0 if pause and k == len(turns) // 2 else 0.6
        length = max(1.5, min(span - 0.6, len(text) / 4.0))
        start = min(start, max(talk - length - 0.1, 0))
        out.append({"speaker": speaker, "start": round(start, 1), "end": round(start + length, 1),
                    "text": text})
        start += length + gap
    return out


def _history(session, interface, numbers, seats, sales: dict, now: dt.datetime) -> list[tuple]:
    """~14 days of calls for every salesperson with a seat, within 09:00–21:00 business time."""
    rng = random.Random(20261125)
    today = clock.local_date(now)
    usable = [n for n in numbers if n.status == NUMBER_ACTIVE]
    by_line: dict[int, list] = {}
    for n in usable:
        by_line.setdefault(n.line_id, []).append(n)
    owned = {}
    for opp_id, owner_id, customer_id, phone, region in session.execute(
            select(Opportunity.id, Opportunity.owner_id, Customer.id, Customer.phone, Opportunity.region)
            .join(Customer, Customer.id == Opportunity.customer_id)
            .where(Opportunity.owner_id.in_([e.id for e in sales.values()]))):
        owned.setdefault(owner_id, []).append((opp_id, customer_id, phone, region))
    # Waiting opportunities are not owned yet at seed time: then the agent calls one of the demo customers.
    customers = [(None, cid, phone, None) for cid, phone in session.execute(
        select(Customer.id, Customer.phone).where(Customer.phone.not_in([p for p, _ in DO_NOT_CALL]))
        .order_by(Customer.id).limit(500))]
    day_start, _ = clock.day_bounds(now)
    calls, used_today, seq = [], {}, 0
    for back in range(HISTORY_DAYS - 1, -1, -1):
        day = today - dt.timedelta(days=back)
        opening = clock.to_utc(dt.datetime.combine(day, dt.time(9)))
        for username, emp in sorted(sales.items()):
            seat = seats.get(username)
            if seat is None or not by_line.get(seat.line_id):
                continue
            skill = 0.45 + (int(username[-1]) % 5) * 0.08  # agents differ in connect rate
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
                started = opening + dt.timedelta(minutes=rng.randint(0, 715), seconds=rng.randint(0, 59))
                if started > now - dt.timedelta(minutes=5):
                    continue
                targets = owned.get(emp.id) or customers
                stranger = (None, None, f"+86137{rng.randint(10**7, 10**8 - 1)}", None)
                opp_id, customer_id, phone, region = rng.choice(targets) if targets else stranger
                pool = [n for n in by_line[seat.line_id] if n.area == region] or by_line[seat.line_id]
                number = rng.choice(pool)
                roll = rng.random()
                ring = rng.randint(3, 18)
                rec = CallRecord(
                    uid=f"demo{seq:06d}", provider_call_id=f"sim-demo{seq:06d}", interface_id=interface.id,
                    line_id=seat.line_id, number_id=number.id, seat_id=seat.id, employee_id=emp.id,
                    org_unit_id=emp.org_unit_id, opportunity_id=opp_id, customer_id=customer_id,
                    callee_phone=phone, started_at=started, rang_at=started + dt.timedelta(seconds=2),
                    created_at=started)
                flags = None
                if roll < skill:
                    talk = int(min(900, max(12, rng.lognormvariate(4.6, 0.7))))
                    rec.status, rec.result = CALL_ENDED, "normal_clearing"
                    rec.answered_at = started + dt.timedelta(seconds=ring)
                    rec.ended_at = rec.answered_at + dt.timedelta(seconds=talk)
                    rec.duration_seconds = talk
                    rec.recording_url = f"https://recordings.example.invalid/demo/{rec.uid}.mp3"
                    flags = {"risky": rng.random() < 0.12, "polite": rng.random() > 0.08,
                             "asks": rng.random() > 0.25, "pause": rng.random() < 0.1}
                    rec.transcript = json.dumps(_transcript(rng, emp.name, talk, **flags), ensure_ascii=False)
                else:
                    rec.status, rec.result = ((CALL_NO_ANSWER, "no_answer") if roll < skill + 0.3 else
                                              (CALL_BUSY, "user_busy") if roll < 0.97 else
                                              (CALL_FAILED, "network_error"))
                    rec.ended_at = started + dt.timedelta(seconds=ring + (30 if rec.status == CALL_NO_ANSWER
                                                                          else 1))
                session.add(rec)
                calls.append((rec, flags))
                seq += 1
                if started >= day_start:  # today's calls also hold their slots, as dialing takes them
                    for slot in ((COUNTER_NUMBER_DAY, str(number.id)), (COUNTER_CALLEE_DAY, phone)):
                        used_today[slot] = used_today.get(slot, 0) + 1
    session.flush()
    for (kind, slot_key), count in used_today.items():
        key = (kind, slot_key, day_start)
        counter = session.get(CallCounter, key)
        if counter is None:
            session.add(CallCounter(kind=key[0], key=key[1], window=key[2], count=count))
        else:
            counter.count += count
    return calls


def _inspections(session, calls, scorecard, inspectors, now: dt.datetime) -> int:
    """Scored inspections of about a fifth of the connected calls of at least 30 s (picked by hand,
    plan_id left empty so the sampling plan's own periods are untouched), a few appealed and decided."""
    if not inspectors:
        return 0
    rng = random.Random(47)
    items = {i.name: i for i in scorecard.items}
    made = 0
    for rec, flags in calls:
        if flags is None or rec.duration_seconds < 30 or rng.random() > 0.22:
            continue
        scored_at = rec.ended_at + dt.timedelta(hours=rng.randint(2, 30))
        if scored_at > now:
            continue
        failed = {"开场问候": not flags["polite"], "确认需求": not flags["asks"], "违规承诺": flags["risky"],
                  "长时间静音": flags["pause"], "语速过快": False}
        machine = {str(items[name].id): {"passed": not bad, "hits": []} for name, bad in failed.items()}
        machine_score = scorecard.base_score + sum(items[n].points for n, bad in failed.items() if bad)
        manual_bad = rng.random() < 0.15
        invited = rng.random() < 0.5
        score = machine_score + (items["服务态度"].points if manual_bad else 0) + (
            items["主动邀约试听"].points if invited else 0)
        inspector = inspectors[made % len(inspectors)]
        results = dict(machine)
        results[str(items["服务态度"].id)] = {"passed": not manual_bad}
        results[str(items["主动邀约试听"].id)] = {"passed": invited}
        year, week, _ = rec.started_at.isocalendar()
        qa = QaInspection(
            call_id=rec.id, plan_id=None, period=f"{year}-W{week:02d}", scorecard_id=scorecard.id,
            agent_id=rec.employee_id, org_unit_id=rec.org_unit_id, inspector_id=inspector.id,
            status=QA_SCORED, machine_score=max(0, min(100, machine_score)),
            machine_results=json.dumps(machine), score=max(0, min(100, score)),
            item_results=json.dumps(results), scored_at=scored_at, created_at=scored_at,
            comment="违规承诺，需复训" if flags["risky"] else None)
        if flags["risky"] and rng.random() < 0.5:
            qa.appeal_reason = "客户先提到提分，我只是复述"
            qa.appealed_at = scored_at + dt.timedelta(hours=3)
            qa.status = QA_APPEALED
            if qa.appealed_at + dt.timedelta(hours=20) < now:
                upheld = rng.random() < 0.5
                qa.status, qa.decided_by_id = QA_FINAL, inspector.id
                qa.decided_at = qa.appealed_at + dt.timedelta(hours=20)
                qa.appeal_decision = APPEAL_UPHELD if upheld else APPEAL_REJECTED
                qa.decision_note = "复听确认属实，撤销扣分" if upheld else "录音中为主动承诺，维持原判"
                if upheld:
                    qa.score = min(100, qa.score - items["违规承诺"].points)
        session.add(qa)
        made += 1
    return made
