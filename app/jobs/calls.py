"""RQ entry points of outbound calling. Thin: the simulator's status callbacks.

`simulate_call_job` posts the simulator's scripted callbacks for one call, signed with the interface's
callback secret: over HTTP to our own endpoint when CALLS_CALLBACK_BASE_URL is set (exactly what a real
provider does), else straight through `callbacks.receive` with the same signed body. Re-running it is
harmless: every event has a fixed key, so a replay is a no-op.
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.error
import urllib.request

from flask import current_app

from app.extensions import db, rq
from app.models.calls import SIMULATOR, CallRecord, OutboundInterface
from app.services.calls import callbacks
from app.services.calls.providers import callback_body, callback_headers
from app.services.calls.simulator import SimulatorProvider

QUEUE = "default"


def _base_url() -> str | None:
    return current_app.config.get("CALLS_CALLBACK_BASE_URL") or os.environ.get("CALLS_CALLBACK_BASE_URL")


def deliver(interface: OutboundInterface, body: bytes, headers: dict) -> dict:
    base = _base_url()
    if base:
        url = f"{base.rstrip('/')}/api/v1/calls/callback/{interface.id}"
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return {"http": response.status}
        except urllib.error.HTTPError as exc:
            return {"http": exc.code}
    outcome = callbacks.receive(db.session, interface, body, headers)
    db.session.commit()
    return outcome.as_dict()


def simulate_call_job(call_id: int, step: int = 0) -> dict:
    call = db.session.get(CallRecord, call_id)
    if call is None or call.provider_call_id is None:
        return {"skipped": True}
    interface = db.session.get(OutboundInterface, call.interface_id)
    if interface is None or interface.provider != SIMULATOR:
        return {"skipped": True}
    provider = SimulatorProvider.from_interface(interface)
    script = provider.script(call.uid, call.provider_call_id, call.callee_phone, call.started_at)
    delivered = []
    while step < len(script):
        body = callback_body([script[step][1]])
        delivered.append(deliver(interface, body, callback_headers(provider.callback_secret, body)))
        step += 1
        if provider.realtime and step < len(script):
            wait = max(script[step][0] - script[step - 1][0], 0)
            rq.queue(QUEUE).enqueue_in(dt.timedelta(seconds=wait), simulate_call_job, call_id, step)
            break
    return {"delivered": delivered, "next_step": step}


def enqueue_simulation(call_id: int) -> None:
    rq.queue(QUEUE).enqueue(simulate_call_job, call_id)


def sweep_callbacks_job() -> int:
    """Scheduled: apply kept status events whose call has appeared since (see callbacks.sweep_unmatched)."""
    return callbacks.sweep_unmatched(db.session)
