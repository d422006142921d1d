"""RQ job handler of the win probability (runner kind SCORING), registered with @runner.handler.

A run trains once, then scores every open opportunity chunk by chunk (app.services.scoring). The model's
id goes into the run's position in the same commit as the model itself, so a run resumed after a kill
(the watchdog re-enqueues it) scores on with that model instead of training another; each chunk commits
together with the checkpoint holding the last id scored, so nothing is scored twice and none is missed.
Scoring an opportunity again is harmless anyway (the same value), so the run is idempotent.
"""

from __future__ import annotations

from flask import current_app

from app.extensions import db
from app.models.bigdata import ScoringModel
from app.services import runner, scoring
from app.services.errors import DomainError


@runner.handler(scoring.KIND)
def train_and_score(ctx: runner.RunContext) -> str:
    session = db.session
    position = dict(ctx.position or {})
    if position.get("skipped"):  # resumed after it found too little history: nothing more to do
        return f"{position['skipped']}; the opportunities keep their scores"
    if position.get("model_id") is None:
        why: list[str] = []
        model = scoring.train(session, why=why)
        if model is None:
            reason = why[0] if why else "No model was trained"
            ctx.checkpoint(session, done=0, total=0, position={"model_id": None, "skipped": reason})
            session.commit()
            return f"{reason}; the opportunities keep their scores"
        position = {"model_id": model.id, "after": 0, "scored": 0}
        ctx.checkpoint(session, done=0, total=scoring.open_count(session), position=position)
        session.commit()
    model = session.get(ScoringModel, position["model_id"])
    if model is None:
        raise DomainError("The model this run trained no longer exists")
    chunk = int(current_app.config.get("CRM_SCORING_CHUNK") or scoring.CHUNK)
    after, scored = int(position.get("after") or 0), int(position.get("scored") or 0)
    while True:
        before = after
        last = scoring.score_chunk(session, model, after, chunk)
        if last is None:
            break
        scored += scoring.open_count(session, after_id=before, upto_id=last)
        after = last
        ctx.checkpoint(session, done=scored,
                       position={"model_id": model.id, "after": after, "scored": scored})
        session.commit()
        if ctx.cancelled(session):
            return f"Cancelled after {scored} opportunities scored"
    auc = f"AUC {model.auc:.3f}" if model.auc is not None else "AUC not measured"
    return (f"Model #{model.id} trained ({model.won} won, {model.lost} lost; {auc}); "
            f"{scored} opportunities scored")


def start_scoring_job() -> int | None:
    """Scheduled nightly: start a SCORING run unless one is queued or running (then that one)."""
    run = scoring.start_run(db.session)
    db.session.commit()
    return run.id
