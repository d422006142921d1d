"""Status callbacks through the real endpoint: signatures, replays, out-of-order events, unknown calls,
the follow-up a connected call records (once) and the circulation clock it resets; the simulator end to
end through a real RQ SimpleWorker."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from sqlalchemy import func, select

from app.clock import timestamp, utcnow
from app.jobs.worker import app_worker_class
from app.models.calls import (
    CALL_ANSWERED,
    CALL_DIALING,
    CALL_ENDED,
    CallEvent,
    CallRecord,
)
from app.models.sales import FollowUp, Opportunity
from app.services.calls import callbacks, dialing
from app.services.calls.providers import callback_body, callback_headers
from app.services.calls.simulator import SimulatorProvider
from app.services.sql import dialect_insert
from tests import factories as f
from tests.helpers import utc
from tests.test_ownership import build_world, owned

AT = "2026-03-02T12:00:00+08:00"  # noon in Shanghai: the clock and NOW agree
NOW = utc(AT)
pytestmark = pytest.mark.instant(AT)


@pytest.fixture
def world(session):
    return build_world(session)


@pytest.fixture
def call(session, world):
    """A placed call of a1 on an opportunity a1 owns (dialled through the simulator adapter)."""
    iface = f.make_interface(session, options={"realtime": False, "transcript": True, "talk_seconds": 61})
    line = f.make_line(session, iface)
    f.make_seat(session, line, world.emp(session, "a1"))
    f.make_number(session, line)
    opp_id = owned(session, world, "a1")[0]
    return dialing.click_to_call(session, world.a1, utcnow(), opportunity_id=opp_id)


def secret(iface) -> str:
    return SimulatorProvider.from_interface(iface).callback_secret


def post(client, iface, events, key: str | None = None, headers=None, raw: bytes | None = None):
    body = raw if raw is not None else callback_body(events)
    headers = headers if headers is not None else callback_headers(key or secret(iface), body)
    return client.post(f"/api/v1/calls/callback/{iface.id}", data=body,
                       headers={"Content-Type": "application/json", **headers})


def ev(call, status, at, **extra) -> dict:
    return {"event_id": f"{call.provider_call_id}:{status}", "call_id": call.provider_call_id,
            "correlation": call.uid, "status": status, "time": at.isoformat() + "Z", **extra}


def reload(session, call) -> CallRecord:
    session.expire_all()
    return session.get(CallRecord, call.id)


def events_of(session, call) -> int:
    return session.scalar(select(func.count()).select_from(CallEvent).where(CallEvent.call_id == call.id))


def test_signed_callbacks_move_the_call_and_record_one_follow_up(client, session, call):
    iface = call.interface
    opp = session.get(Opportunity, call.opportunity_id)
    opp.idle_since = opp.last_followup_at = NOW - dt.timedelta(days=6)
    session.commit()
    start = call.started_at
    assert post(client, iface, [ev(call, "ringing", start + dt.timedelta(seconds=1))]).get_json() == {
        "applied": 1, "ignored": 0, "unmatched": 0}
    resp = post(client, iface, [ev(call, "answered", start + dt.timedelta(seconds=6))])
    assert resp.status_code == 200
    transcript = [{"speaker": "agent", "start": 0, "end": 2.5, "text": "您好"}]
    resp = post(client, iface, [ev(call, "ended", start + dt.timedelta(seconds=67), duration=61,
                                   result="normal_clearing", recording_url="https://rec.example/1.mp3",
                                   transcript=transcript)])
    assert resp.get_json()["applied"] == 1
    got = reload(session, call)
    assert got.status == CALL_ENDED and got.duration_seconds == 61 and got.result == "normal_clearing"
    assert got.rang_at == start + dt.timedelta(seconds=1)
    assert got.answered_at == start + dt.timedelta(seconds=6)
    assert got.ended_at == start + dt.timedelta(seconds=67)
    assert got.recording_url == "https://rec.example/1.mp3" and json.loads(got.transcript) == transcript
    follow_ups = session.scalars(select(FollowUp).where(FollowUp.opportunity_id == opp.id)).all()
    assert len(follow_ups) == 1 and follow_ups[0].id == got.follow_up_id
    assert follow_ups[0].type.code == "call" and follow_ups[0].employee_id == call.employee_id
    assert follow_ups[0].result == "通话 61 秒"
    opp = session.get(Opportunity, opp.id)
    # the circulation clock restarted when the call connected
    assert opp.idle_since > NOW and opp.last_followup_at == opp.idle_since


def test_replayed_callbacks_change_nothing(client, session, call):
    iface = call.interface
    answered = [ev(call, "answered", call.started_at + dt.timedelta(seconds=3))]
    assert post(client, iface, answered).get_json()["applied"] == 1
    # the same event again (new nonce and timestamp: a provider retry) is a no-op
    assert post(client, iface, answered).get_json() == {"applied": 0, "ignored": 1, "unmatched": 0}
    assert events_of(session, call) == 1
    assert session.scalar(select(func.count()).select_from(FollowUp)
                          .where(FollowUp.opportunity_id == call.opportunity_id)) == 1
    ended = [ev(call, "ended", call.started_at + dt.timedelta(seconds=20), duration=17)]
    post(client, iface, ended)
    post(client, iface, ended)
    got = reload(session, call)
    assert got.status == CALL_ENDED and got.duration_seconds == 17 and events_of(session, call) == 2
    assert session.scalar(select(func.count()).select_from(FollowUp)
                          .where(FollowUp.opportunity_id == call.opportunity_id)) == 1


def test_out_of_order_callbacks_never_move_a_call_back(client, session, call):
    iface = call.interface
    start = call.started_at
    post(client, iface, [ev(call, "answered", start + dt.timedelta(seconds=5))])
    late_ring = post(client, iface, [ev(call, "ringing", start + dt.timedelta(seconds=2))])
    assert late_ring.get_json() == {"applied": 0, "ignored": 1, "unmatched": 0}
    got = reload(session, call)
    assert got.status == CALL_ANSWERED and got.rang_at == start + dt.timedelta(seconds=2)  # gap filled
    post(client, iface, [ev(call, "ended", start + dt.timedelta(seconds=35), duration=30)])
    assert reload(session, call).status == CALL_ENDED
    # a final status is final: a later "failed" does not replace it, nor its times
    post(client, iface, [ev(call, "failed", start + dt.timedelta(seconds=50), result="dropped")])
    got = reload(session, call)
    assert got.status == CALL_ENDED and got.duration_seconds == 30 and got.result == "ended"
    assert got.ended_at == start + dt.timedelta(seconds=35)


def test_bad_signatures_and_payloads_are_refused_with_json(client, session, call):
    iface = call.interface
    events = [ev(call, "answered", call.started_at)]
    assert post(client, iface, events, key="not-the-secret").status_code == 401
    resp = post(client, iface, events, headers={})
    assert resp.status_code == 401 and "signature" in resp.get_json()["message"].lower()
    body = callback_body(events)
    stale = callback_headers(secret(iface), body, now=timestamp() - 3600)  # an hour old
    assert post(client, iface, events, headers=stale).status_code == 401
    tampered = callback_headers(secret(iface), body)
    assert post(client, iface, events, headers=tampered, raw=body.replace(b"answered", b"ringing")
                ).status_code == 401
    for raw in (b"not json", b"[]", b'{"events": []}',
                b'{"events": [{"status": "exploded", "call_id": "x"}]}',
                b'{"events": [{"status": "ended"}]}'):
        resp = post(client, iface, None, raw=raw)
        assert resp.status_code == 400 and resp.get_json()["message"], raw
    assert post(client, iface, events, key=secret(iface)).status_code == 200
    assert client.post("/api/v1/calls/callback/999999", data=b"{}").status_code == 404
    got = reload(session, call)
    assert got.status == CALL_ANSWERED and events_of(session, call) == 1


def test_events_for_an_unknown_call_are_kept_and_matched_when_it_appears(client, session, world, call):
    iface = call.interface
    # a second call is reserved but its dial answer (the provider id) is not stored yet
    target = dialing.resolve_target(session, world.a1, opportunity_id=call.opportunity_id)
    pending = dialing.reserve(session, world.a1, target, call.started_at)
    session.commit()
    early = {"event_id": "prov-77:ringing", "call_id": "prov-77", "status": "ringing",
             "time": (call.started_at + dt.timedelta(seconds=1)).isoformat() + "Z"}
    assert post(client, iface, [early]).get_json() == {"applied": 0, "ignored": 0, "unmatched": 1}
    kept = session.scalar(select(CallEvent).where(CallEvent.event_key == "prov-77:ringing"))
    assert kept.call_id is None and kept.correlation == "prov-77"
    pending.provider_call_id, pending.status = "prov-77", CALL_DIALING
    assert callbacks.match_unmatched(session, pending) == 1
    session.commit()
    got = reload(session, pending)
    assert got.status == "ringing" and got.rang_at == call.started_at + dt.timedelta(seconds=1)
    assert session.get(CallEvent, kept.id).call_id == pending.id


def test_an_event_that_raced_the_dial_is_applied_by_the_sweep_job(app, session, world, call):
    """The dial stored the provider's id and matched kept events before a concurrent callback's event was
    committed: neither saw the other. The periodic sweep (a real RQ job) applies it; an event whose call
    never appears, or one older than the sweep's window, stays kept."""
    from rq import SimpleWorker

    from app.extensions import rq
    from app.jobs.calls import sweep_callbacks_job

    iface = call.interface
    target = dialing.resolve_target(session, world.a1, opportunity_id=call.opportunity_id)
    raced = dialing.reserve(session, world.a1, target, call.started_at)
    raced.provider_call_id, raced.status = "prov-88", CALL_DIALING
    session.commit()  # the dial's own match_unmatched has run: it found nothing yet
    at = utcnow()
    events = [{"event_id": f"{pid}:ringing", "call_id": pid, "status": "ringing",
               "time": at.isoformat() + "Z"} for pid in ("prov-88", "prov-nobody", "prov-stale")]
    # the callback looked for its call before the dial committed: stored as unknown
    for event in events:
        stmt = dialect_insert(session, CallEvent).values(
            interface_id=iface.id, event_key=event["event_id"], correlation=event["call_id"],
            status="ringing", occurred_at=at, received_at=at, applied=False, payload=json.dumps(event))
        session.execute(stmt)
    session.execute(CallEvent.__table__.update().where(CallEvent.event_key == "prov-stale:ringing")
                    .values(received_at=at - callbacks.SWEEP_WINDOW - dt.timedelta(minutes=1)))
    stale = session.get(CallRecord, call.id)
    stale.provider_call_id = "prov-stale"  # its call exists, but the event is past the window
    session.commit()

    job = rq.queue("low").enqueue(sweep_callbacks_job)
    app_worker_class(app, SimpleWorker)([rq.queue("low")], connection=rq.redis).work(burst=True)

    assert job.return_value() == 1
    got = reload(session, raced)
    assert got.status == "ringing" and got.rang_at == at
    kept = dict(session.execute(select(CallEvent.event_key, CallEvent.call_id)
                                .where(CallEvent.event_key.like("prov-%"))).all())
    assert kept == {"prov-88:ringing": raced.id, "prov-nobody:ringing": None, "prov-stale:ringing": None}


def test_the_simulator_end_to_end_through_a_real_rq_worker(app, session, world):
    from rq import SimpleWorker

    from app.extensions import rq

    iface = f.make_interface(session, options={"realtime": False, "transcript": True, "talk_seconds": 42,
                                               "ring_seconds": 3})
    line = f.make_line(session, iface)
    emp = world.emp(session, "a1")
    f.make_seat(session, line, emp)
    f.make_number(session, line)
    opp_id = owned(session, world, "a1")[0]
    f.login_user(app, session, emp, "Salesperson")
    client = app.test_client()
    client.post("/login/", data={"username": f"user{emp.id}", "password": f.PASSWORD})
    resp = client.post("/calls/dial", json={"opportunity_id": opp_id})
    assert resp.status_code == 201
    call_id = resp.get_json()["id"]
    queue = rq.queue("default")
    assert queue.count == 1
    app_worker_class(app, SimpleWorker)([queue], connection=queue.connection).work(burst=True)
    session.expire_all()
    got = session.get(CallRecord, call_id)
    assert got.status == CALL_ENDED and got.duration_seconds == 42 and got.result == "normal_clearing"
    assert (got.answered_at - got.started_at) == dt.timedelta(seconds=4)
    assert got.recording_url and len(json.loads(got.transcript)) == 6
    assert got.follow_up_id is not None
    assert events_of(session, got) == 3
    status = client.get(f"/calls/status/{call_id}").get_json()
    assert status["final"] and status["connected"] and status["duration_seconds"] == 42
    # running the job again (an RQ retry) delivers the same events: nothing changes
    from app.jobs.calls import simulate_call_job

    with app.app_context():
        simulate_call_job(call_id)
    session.expire_all()
    assert events_of(session, got) == 3


@pytest.mark.parametrize("outcome,status,connected", [("busy", "busy", False), ("fail", "failed", False),
                                                      ("no_answer", "no_answer", False),
                                                      ("hangup", "ended", False)])
def test_simulated_outcomes(app, session, world, outcome, status, connected):
    from app.jobs.calls import simulate_call_job

    iface = f.make_interface(session, options={"realtime": False, "outcome": outcome})
    line = f.make_line(session, iface)
    f.make_seat(session, line, world.emp(session, "a1"))
    f.make_number(session, line)
    opp_id = owned(session, world, "a1")[0]
    placed = dialing.click_to_call(session, world.a1, utcnow(), opportunity_id=opp_id)
    simulate_call_job(placed.id)
    got = reload(session, placed)
    assert got.status == status and got.connected is connected and got.follow_up_id is None


def test_the_simulator_posts_to_our_own_endpoint_when_a_base_url_is_set(app, session, world):
    """CALLS_CALLBACK_BASE_URL: the job POSTs the signed callbacks over HTTP to the running app."""
    from werkzeug.serving import make_server

    from app.jobs.calls import simulate_call_job

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    app.config["CALLS_CALLBACK_BASE_URL"] = f"http://127.0.0.1:{server.server_port}/"
    try:
        iface = f.make_interface(session, options={"realtime": False, "talk_seconds": 9})
        line = f.make_line(session, iface)
        f.make_seat(session, line, world.emp(session, "a1"))
        f.make_number(session, line)
        opp_id = owned(session, world, "a1")[0]
        placed = dialing.click_to_call(session, world.a1, utcnow(), opportunity_id=opp_id)
        result = simulate_call_job(placed.id)
        assert [d["http"] for d in result["delivered"]] == [200, 200, 200]
        got = reload(session, placed)
        assert got.status == CALL_ENDED and got.duration_seconds == 9 and got.follow_up_id is not None
    finally:
        server.shutdown()


def test_the_realtime_simulator_paces_its_callbacks_with_scheduled_jobs(app, session, world):
    from app.extensions import rq
    from app.jobs.calls import simulate_call_job

    iface = f.make_interface(session, options={"ring_seconds": 4, "talk_seconds": 30})  # realtime
    line = f.make_line(session, iface)
    f.make_seat(session, line, world.emp(session, "a1"))
    f.make_number(session, line)
    opp_id = owned(session, world, "a1")[0]
    placed = dialing.click_to_call(session, world.a1, utcnow(), opportunity_id=opp_id)
    assert simulate_call_job(placed.id)["next_step"] == 1
    assert reload(session, placed).status == "ringing"
    registry = rq.queue("default").scheduled_job_registry
    assert registry.count == 1  # "answered", due 4 s after the ring
    job = rq.queue("default").fetch_job(registry.get_job_ids()[0])
    assert job.args == (placed.id, 1)
    simulate_call_job(*job.args)
    assert reload(session, placed).status == CALL_ANSWERED
