"""The sales floor's activity for the large demo seed (app.services.seed_large): follow-ups, calls (the
unanswered attempts before a first contact, connected calls with talk time and a recording) and QA
inspections of some connected calls, as rows for a bulk insert."""

from __future__ import annotations

import datetime as dt
import json
import random

from app import clock
from app.models.calls import CallRecord
from app.models.qa import QaInspection
from app.models.sales import FollowUp

WORK_START, WORK_END = 9, 21  # calls and follow-ups happen in these business hours
QA_SHARE = 0.09  # of connected calls of 30 s or more
RESULTS = {"contacted": "已接通", "interested": "有意向", "trial": "已约试听", "negotiating": "谈价中",
           "won": "已成交", "idle": "待跟进", "lost": "输单", "no_answer": "未接通"}


class Activity:
    def __init__(self, world, ids, rng: random.Random, now: dt.datetime):
        from app.services.seed_large import NOTES

        self.world, self.ids, self.rng, self.now, self.notes = world, ids, rng, now, NOTES
        self.follow_ups, self.calls, self.inspections = [], [], []
        self.types = {code: world.item("followup_type", code) for code in ("call", "wechat", "sms", "visit")}

    def working(self, at: dt.datetime) -> dt.datetime:
        """`at`, or the next moment inside working hours (business time zone) after it."""
        local = clock.to_local(at)
        if WORK_START <= local.hour < WORK_END:
            return at
        day = local.date() + dt.timedelta(days=1 if local.hour >= WORK_END else 0)
        start = dt.datetime.combine(day, dt.time(WORK_START, self.rng.randrange(50), self.rng.randrange(60)))
        return clock.to_utc(start)

    # --- follow-ups ---------------------------------------------------------------------------------
    def _follow_up(self, opp: dict, owner: dict, at: dt.datetime, kind: str, code: str,
                   result: str | None = None) -> dict:
        rng = self.rng
        nxt = at + dt.timedelta(days=rng.choice((1, 2, 3, 5))) if code not in ("won", "lost") else None
        row = {"id": self.ids(FollowUp), "opportunity_id": opp["id"], "employee_id": owner["id"],
               "type_id": self.types[kind], "content": rng.choice(self.notes[code]),
               "result": result or RESULTS.get(code), "next_followup_at": nxt, "created_at": at,
               "updated_at": at}
        self.follow_ups.append(row)
        opp["last_followup_at"] = max(opp["last_followup_at"] or at, at)
        opp["idle_since"] = max(opp["idle_since"], at)
        return row

    def contact(self, opp: dict, customer: dict, owner: dict, at: dt.datetime, code: str,
                first: bool) -> None:
        """Reaching a stage: a connected call (always for the first contact), else a call, a WeChat
        conversation or a meeting; unanswered attempts may come before a first contact."""
        rng = self.rng
        kind = "call" if first else rng.choices(("call", "wechat", "visit"), (70, 20, 10 if code == "trial"
                                                                              else 3))[0]
        if first:
            for k in range(rng.choices((0, 1, 2, 3), (55, 25, 13, 7))[0]):
                attempt = at - dt.timedelta(minutes=rng.uniform(20, 240) * (k + 1))
                if attempt > opp["assigned_at"]:
                    self.call(opp, customer, owner, self.working(attempt), connected=False)
        if kind == "call":
            talk = int(min(1800, max(15, rng.lognormvariate(5.0 if code != "contacted" else 4.6, 0.7))))
            call = self.call(opp, customer, owner, at - dt.timedelta(seconds=talk + 10), connected=True,
                             talk=talk)
            row = self._follow_up(opp, owner, at, "call", code)
            if call is not None:
                call["follow_up_id"] = row["id"]
        else:
            self._follow_up(opp, owner, at, kind, code)

    def note(self, opp: dict, owner: dict, at: dt.datetime, code: str, result: str | None = None) -> None:
        at = self.working(at)
        if at < self.now:
            self._follow_up(opp, owner, at, self.rng.choice(("wechat", "call", "sms")), code, result)

    def no_answer(self, opp: dict, customer: dict, owner: dict, since: dt.datetime,
                  until: dt.datetime) -> None:
        """Two to four unanswered calls between `since` and `until`, and the follow-up that says so."""
        rng = self.rng
        span = max((until - since).total_seconds(), 600)
        times = sorted(self.working(since + dt.timedelta(seconds=rng.uniform(60, span)))
                       for _ in range(rng.randint(2, 4)))
        for at in times:
            if at < self.now:
                self.call(opp, customer, owner, at, connected=False)
        if times[-1] < self.now:
            self._follow_up(opp, owner, times[-1] + dt.timedelta(minutes=2), "call", "no_answer")

    # --- calls --------------------------------------------------------------------------------------
    def call(self, opp: dict, customer: dict, owner: dict, started: dt.datetime, connected: bool,
             talk: int = 0) -> dict | None:
        seat = self.world.seats.get(owner["id"])
        if seat is None or not self.world.numbers.get(seat[1]) or started >= self.now:
            return None
        rng = self.rng
        seat_id, line_id = seat
        call_id = self.ids(CallRecord)
        ring = rng.randint(3, 20)
        if connected:
            status, result = "ended", "normal_clearing"
            answered = started + dt.timedelta(seconds=ring)
            ended = answered + dt.timedelta(seconds=talk)
        else:
            status, result = rng.choices((("no_answer", "no_answer"), ("busy", "user_busy"),
                                          ("failed", "network_error")), (75, 20, 5))[0]
            answered, ended, talk = None, started + dt.timedelta(seconds=ring + 25), 0
        row = {"id": call_id, "uid": f"lg{call_id:030d}", "provider_call_id": f"sim-lg{call_id}",
               "interface_id": self.world.interface_of(line_id), "line_id": line_id,
               "number_id": rng.choice(self.world.numbers[line_id]), "seat_id": seat_id,
               "employee_id": owner["id"],
               "org_unit_id": owner["unit"], "opportunity_id": opp["id"], "customer_id": customer["id"],
               "callee_phone": customer["phone"], "privacy_number": None, "binding_expires_at": None,
               "status": status, "result": result, "started_at": started,
               "rang_at": started + dt.timedelta(seconds=2), "answered_at": answered, "ended_at": ended,
               "duration_seconds": talk, "recording_url": (f"https://recordings.example.invalid/demo/lg{call_id}.mp3"
                                                           if connected else None),
               "transcript": None, "follow_up_id": None, "created_at": started, "updated_at": ended}
        self.calls.append(row)
        if connected and talk >= 30 and rng.random() < QA_SHARE:
            self._inspect(row, owner)
        return row

    def _inspect(self, call: dict, owner: dict) -> None:
        """A QA inspection: scored a few hours to a day later (pending while that is still ahead), a few
        appealed and decided."""
        world, rng = self.world, self.rng
        if not world.inspectors or world.scorecard is None:
            return
        inspector = world.inspectors[len(self.inspections) % len(world.inspectors)]
        year, week, _ = clock.to_local(call["started_at"]).isocalendar()
        scored_at = call["ended_at"] + dt.timedelta(hours=rng.uniform(2, 30))
        machine = max(40, min(100, round(rng.gauss(80 + 10 * (owner["skill"] - 1), 8))))
        row = {"id": self.ids(QaInspection), "call_id": call["id"], "plan_id": None,
               "period": f"{year}-W{week:02d}",
               "scorecard_id": world.scorecard, "agent_id": owner["id"], "org_unit_id": owner["unit"],
               "inspector_id": inspector, "status": "pending", "machine_score": machine,
               "machine_results": json.dumps({}), "score": None, "item_results": None, "comment": None,
               "scored_at": None, "appeal_reason": None, "appealed_at": None, "appeal_decision": None,
               "decision_note": None, "decided_at": None, "decided_by_id": None,
               "created_at": call["ended_at"], "updated_at": call["ended_at"]}
        if scored_at < self.now:
            score = max(30, min(100, machine + rng.choice((-10, -5, 0, 0, 5, 10))))
            row.update(status="scored", score=score, scored_at=scored_at, updated_at=scored_at,
                       item_results=json.dumps({}), comment="需加强开场与需求确认" if score < 70 else None)
            appealed = scored_at + dt.timedelta(hours=rng.uniform(1, 20))
            if score < 75 and rng.random() < 0.3 and appealed < self.now:
                row.update(status="appealed", appeal_reason="客户先提到价格，我只是复述",
                           appealed_at=appealed)
                decided = appealed + dt.timedelta(hours=rng.uniform(4, 48))
                if decided < self.now:
                    upheld = rng.random() < 0.4
                    row.update(status="final", appeal_decision="upheld" if upheld else "rejected",
                               decided_at=decided, decided_by_id=inspector, updated_at=decided,
                               score=min(100, score + 10) if upheld else score,
                               decision_note="复听确认属实，撤销扣分" if upheld else "维持原判")
        self.inspections.append(row)
