"""Demo learning activity: a few weeks of classes for demo customers who are registered users.

Idempotent: customers without a registered user id get one ("demo-u<customer id>") through the
registration service only while fewer than DEMO_CUSTOMERS are registered; activities have fixed external
ids ("demo-<customer id>-<n>"), so a second run adds nothing and the summaries stay as they are.
"""

from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import select

from app import clock
from app.models.sales import Customer
from app.services import customers, learning

DEMO_CUSTOMERS = 12
LESSONS = 10  # per customer
COURSES = ("K12 数学 · 秋季班", "少儿编程 · Scratch 入门", "成人英语 · 口语进阶", "K12 英语 · 自然拼读")


def _register_some(session) -> list[Customer]:
    """The demo customers that are registered users, registering the first ones when too few are."""
    standing = select(Customer).where(customers.not_merged()).order_by(Customer.id)
    registered = list(session.scalars(standing.where(Customer.registered_user_id.is_not(None))
                                      .limit(DEMO_CUSTOMERS)))
    if len(registered) < DEMO_CUSTOMERS:
        for customer in session.scalars(standing.where(Customer.registered_user_id.is_(None))
                                        .limit(DEMO_CUSTOMERS - len(registered))).all():
            try:
                with session.begin_nested():
                    registered.append(customers.register(session, customers.Registration(
                        f"demo-u{customer.id}", customer.phone, customer.name)))
            except Exception:  # e.g. the phone belongs to another registered user: leave this one out
                continue
    return registered


def seed_demo(session) -> dict:
    """Learning activity for the demo's registered customers; returns counts; commits."""
    now = clock.utcnow()
    rows = []
    for customer in _register_some(session):
        rng = random.Random(customer.id)
        course = COURSES[customer.id % len(COURSES)]
        progress = 0
        for n in range(1, LESSONS + 1):
            attended = rng.random() > 0.2
            progress = min(100, progress + (rng.randint(5, 12) if attended else 0))
            when = now - dt.timedelta(days=3 * (LESSONS - n) + 1, hours=rng.randint(0, 3))
            rows.append({"id": f"demo-{customer.id}-{n}", "user_id": customer.registered_user_id,
                         "course": course, "lesson": f"第 {n} 课", "attended": attended,
                         "progress": progress if attended else None,
                         "occurred_at": when.replace(microsecond=0).isoformat() + "+00:00"})
    tally = learning.Tally()
    for start in range(0, len(rows), learning.CHUNK):
        learning.apply_chunk(session, rows[start:start + learning.CHUNK], start, tally, now)
    session.commit()
    return {"learning_customers": len({r["user_id"] for r in rows}), "learning_activities": tally.inserted}
