"""RQ job handlers of the tags (runner kinds TAG_REFRESH and TAG_IMPORT), registered with @runner.handler.

TAG_REFRESH computes the enabled rule tags one by one (app.services.tag_rules.recompute), each committed
with the run's checkpoint {"after": the last tag done}: a resumed run goes on with the next tag, and a tag
computed twice ends the same (its recompute is idempotent). Its target is a tag ("Recompute now" on one
tag) or none (all of them: the nightly run, `start_tag_refresh_job`).

TAG_IMPORT applies a batch the big-data system sent (app.services.tag_import): the tag definitions first,
then the assignments or events chunk by chunk, each chunk committed with the checkpoint (the Tally).
"""

from __future__ import annotations

from flask import current_app

from app.clock import utcnow
from app.extensions import db
from app.models.jobs import TAG_IMPORT, TAG_REFRESH, JobRun
from app.services import runner, tag_import, tag_rules
from app.services.errors import DomainError

TAG_TARGET = "tag"  # JobRun.target_type of a run that recomputes one tag


def start_refresh(session, tag_id: int | None = None, started_by: int | None = None) -> JobRun:
    """A TAG_REFRESH run of one tag (or of all enabled rule tags), unless one for the same is active. The
    caller commits."""
    return runner.start(session, TAG_REFRESH, target_type=TAG_TARGET if tag_id else None, target_id=tag_id,
                        started_by=started_by)


def start_tag_refresh_job() -> int | None:
    """Scheduled nightly: start a TAG_REFRESH run of every enabled rule tag unless one is active."""
    run = start_refresh(db.session)
    db.session.commit()
    return run.id


@runner.handler(TAG_REFRESH)
def refresh_tags(ctx: runner.RunContext) -> str:
    position = ctx.position or {}
    after, done = int(position.get("after") or 0), int(position.get("done") or 0)
    only = [ctx.target_id] if ctx.target_type == TAG_TARGET and ctx.target_id else None
    pending = tag_rules.refreshable(db.session, after, only)
    total = done + len(pending)
    lines = list(position.get("lines") or [])
    for tag in pending:
        result = tag_rules.recompute(db.session, tag)
        done += 1
        lines.append(f"{tag.code}: {result.members} members (+{result.added} −{result.removed})")
        ctx.checkpoint(db.session, done=done, total=total,
                       position={"after": tag.id, "done": done, "lines": lines[-50:]})
        db.session.commit()
        if ctx.cancelled(db.session):
            return f"Cancelled after {done} tags: " + "; ".join(lines[-20:])
    if not done:
        return "No rule tag to compute"
    return f"{done} rule tags computed: " + "; ".join(lines[-20:])


@runner.handler(TAG_IMPORT)
def import_batch(ctx: runner.RunContext) -> str:
    batch = ctx.params.get("batch")
    rows, tags = ctx.params.get("rows"), ctx.params.get("tags") or []
    if batch not in tag_import.TARGETS or not isinstance(rows, list) or not isinstance(tags, list):
        raise DomainError("The batch of this import is not stored")
    tally = tag_import.Tally.of(ctx.position)
    total = len(rows) + len(tags)
    if not tally.defined:
        tag_import.apply_definitions(db.session, tags, tally, utcnow())
        ctx.checkpoint(db.session, done=tally.done, failed=tally.failed, total=total,
                       position=tally.as_position())
        db.session.commit()
    apply = tag_import.apply_events if batch == tag_import.EVENTS else tag_import.apply_assignments
    chunk = int(current_app.config.get("CRM_TAG_IMPORT_CHUNK") or tag_import.CHUNK)
    while tally.next < len(rows):
        start = tally.next
        apply(db.session, rows[start:start + chunk], start, tally)
        ctx.checkpoint(db.session, done=tally.done, failed=tally.failed, total=total,
                       position=tally.as_position())
        db.session.commit()
        if ctx.cancelled(db.session):
            return f"Cancelled after row {tally.next}: " + tally.summary(batch, total)
    return tally.summary(batch, total)
