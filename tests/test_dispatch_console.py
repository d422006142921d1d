"""The dispatch console: queue figures, run now (queues one job), and the dry run, for directors only."""

from __future__ import annotations

from redis import Redis
from rq import Queue
from sqlalchemy import func, select

from app.jobs.dispatch import DISPATCH_JOB_ID
from app.models.sales import AssignmentLog, Opportunity
from tests.conftest import login


def test_director_previews_and_starts_dispatch_without_the_preview_writing(app, client, session):
    login(client, "director")
    waiting = session.scalar(select(func.count()).where(Opportunity.status == "waiting"))
    assert waiting == 240
    page = client.get("/dispatch/simulate/").get_data(as_text=True)
    assert "crm-per-team" in page and f"<b>{waiting}</b>" in page
    assert session.scalar(select(func.count()).select_from(AssignmentLog)) == 0
    assert session.scalar(select(func.count()).where(Opportunity.status == "waiting")) == waiting

    for _ in range(3):  # however often it is pressed, one run is queued
        assert client.post("/dispatch/run/").status_code == 302
    queued = Queue("high", connection=Redis.from_url(app.config["REDIS_URL"])).get_job_ids()
    assert queued == [DISPATCH_JOB_ID]
    api = client.get("/api/v1/dispatch/simulate").get_json()
    assert api["waiting"] == waiting and sum(api["per_team"].values()) == api["assigned"]


def test_the_console_is_not_for_team_managers_or_salespeople(client):
    for username in ("manager1", "sales11"):
        login(client, username)
        assert client.get("/dispatch/").status_code in (302, 403)
        assert client.get("/api/v1/dispatch/simulate").status_code in (401, 403)
        client.get("/logout/")
