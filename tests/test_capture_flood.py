"""Issue 13 item 3: good posts are never lost. Under a flood from one address (over CRM_CAPTURE_IP_LIMIT,
counted per client address in Redis), that address gets 429 while posts from other addresses, interleaved
with it, all land: one lead each (resubmissions answered, not written twice), then dispatched by a real RQ
worker. Once on SQLite in one thread, once on PostgreSQL with concurrent clients."""

from __future__ import annotations

import threading

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import func, select

from app.jobs.worker import app_worker_class
from app.models.sales import WAITING, Lead
from tests.test_capture import URL, body, make_page, token_for

FLOOD_IP = "198.51.100.66"
FLOOD_POSTS = 120
GOOD_POSTS = 30
LIMIT = 20  # CRM_CAPTURE_IP_LIMIT "20 per minute", the default


def phone(n: int) -> str:
    return f"1370000{n:04d}"


def send(client, data: dict, ip: str):
    return client.post(URL, json=data, environ_base={"REMOTE_ADDR": ip}, headers={"Accept-Language": "en"})


def web_leads(session) -> list[Lead]:
    session.expire_all()
    return session.scalars(select(Lead).where(Lead.channel == "web").order_by(Lead.id)).all()


def check_every_good_post_kept(session, good: dict[str, str], flood_landed: int) -> None:
    leads = web_leads(session)
    assert len(leads) == len(good) + flood_landed
    assert len({lead.client_key for lead in leads}) == len(leads)  # no duplicates
    by_phone = {}
    for lead in leads:
        by_phone.setdefault(lead.phone, []).append(lead)
    for number in good:
        assert len(by_phone[f"+86{number}"]) == 1, number


@pytest.mark.config(CRM_CAPTURE_IP_LIMIT=f"{LIMIT} per minute")
def test_a_flood_from_one_address_is_refused_while_other_addresses_land(app, session):
    page = make_page(session)
    token = token_for(page)
    client = app.test_client()
    statuses: list[int] = []
    good: dict[str, str] = {}  # phone → reference
    for n in range(FLOOD_POSTS):
        statuses.append(send(client, body(token, phone=phone(n)), FLOOD_IP).status_code)
        if n % 4 == 0 and len(good) < GOOD_POSTS:  # a visitor from another address, now and then
            number = phone(5000 + n)
            resp = send(client, body(token_for(page), phone=number), f"203.0.113.{len(good) + 1}")
            assert resp.status_code == 201, resp.get_json()
            good[number] = resp.get_json()["reference"]
    assert statuses[:LIMIT] == [201] * LIMIT and set(statuses[LIMIT:]) == {429}
    refused = send(client, body(token, phone=phone(999)), FLOOD_IP)
    assert refused.status_code == 429 and refused.get_json()["message"].startswith("Too many requests")
    assert len(good) == GOOD_POSTS
    check_every_good_post_kept(session, good, LIMIT)

    # The lead was dispatched: a real worker runs the one dispatch job the posts asked for.
    queue = Queue("high", connection=Redis.from_url(app.config["REDIS_URL"]))
    assert queue.count == 1
    assert app_worker_class(app, SimpleWorker)([queue], connection=queue.connection).work(burst=True)
    session.expire_all()
    assert all(lead.opportunity.status != WAITING for lead in web_leads(session))


@pytest.mark.config(CRM_CAPTURE_IP_LIMIT=f"{LIMIT} per minute")
def test_concurrent_flood_and_good_posts_on_postgresql(pg_app):
    """Threads post at once: the flood, and two visitors' threads sending the same good posts at about the
    same time (a double click): one lead per good post, every one kept."""
    from app.extensions import db

    with pg_app.app_context():
        page = make_page(db.session)
        tokens = [token_for(page) for _ in range(GOOD_POSTS)]
        flood_token = token_for(page)
    flood_statuses: list[int] = []
    good_answers: dict[str, list] = {}
    lock = threading.Lock()
    start = threading.Barrier(3 + 1)

    def flood():
        client = pg_app.test_client()
        start.wait()
        for n in range(FLOOD_POSTS):
            code = send(client, body(flood_token, phone=phone(n)), FLOOD_IP).status_code
            with lock:
                flood_statuses.append(code)

    def visitors():  # two of these send the same forms, at about the same time
        client = pg_app.test_client()
        start.wait()
        for n in range(GOOD_POSTS):
            number = phone(5000 + n)
            resp = send(client, body(tokens[n], phone=number), f"203.0.113.{n + 1}")
            with lock:
                good_answers.setdefault(number, []).append((resp.status_code, resp.get_json()))

    threads = [threading.Thread(target=flood), threading.Thread(target=visitors),
               threading.Thread(target=visitors)]
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join(timeout=120)
    assert flood_statuses.count(201) == LIMIT and flood_statuses.count(429) == FLOOD_POSTS - LIMIT
    assert len(good_answers) == GOOD_POSTS
    for number, answers in good_answers.items():
        assert sorted(code for code, _ in answers) == [200, 201], (number, answers)
        assert answers[0][1]["reference"] == answers[1][1]["reference"]
    with pg_app.app_context():
        check_every_good_post_kept(db.session, {n: "" for n in good_answers}, LIMIT)
        assert db.session.scalar(select(func.count(Lead.id))
                                 .where(Lead.channel == "web", Lead.phone.like("+8613700005%"))) == GOOD_POSTS
