"""What the signed import APIs (the learning system's, the big-data system's) share: checking a request's
signature against a secret setting, and the state of an import's job run as its caller polls it."""

from __future__ import annotations

import json

from flask import current_app, request

from app.extensions import db
from app.models.jobs import JobRun
from app.services import runner, signing


def verified(headers: signing.Headers, secret_setting: str, body: bytes, json_body: bool = True):
    """The signed JSON body (None when `json_body` is False), or a refusal: 401 for the signature, 400
    for a body that is not a JSON object."""
    config = current_app.config
    try:
        return signing.verify_callback(headers, config.get(secret_setting), body, request.headers,
                                       int(config.get("CRM_SIGNATURE_WINDOW_SECONDS", 300))), None
    except signing.BadSignature as exc:
        return None, (401, {"message": str(exc), **({"field": exc.field} if exc.field else {})})
    except signing.BadBody as exc:
        if not json_body:
            return None, None
        return None, (400, {"message": str(exc), "field": "body"})


def run_state(run_id: int, kind: str, tally, hidden: tuple[str, ...] = ("kind",)) -> dict | None:
    """The progress of import run `run_id` of `kind` with the rows it refused (`tally`: the import's
    Tally class, read from the run's saved position), minus the `hidden` keys; None when there is no such
    run."""
    job = db.session.get(JobRun, run_id) if 0 < run_id < 2**31 else None
    if job is None or job.kind != kind:
        return None
    state = runner.progress(job)
    state["problems"] = tally.of(_position(job)).problems
    for key in hidden:
        state.pop(key, None)
    return state


def _position(job: JobRun) -> dict:
    try:
        return json.loads(job.position) if job.position else {}
    except ValueError:
        return {}
