"""RQ job handlers of the learning domain (runner kinds), registered with @runner.handler.

"learning_import": apply the batch stored in the run's params (app.services.learning.start_import) chunk
by chunk; each chunk commits together with the run's checkpoint, whose position is where a resumed run
(after a kill, through the watchdog) carries on. Chunks applied twice insert nothing twice (external ids).
"""

from __future__ import annotations

from flask import current_app

from app.extensions import db
from app.services import learning, runner
from app.services.errors import DomainError


@runner.handler(learning.KIND)
def import_activities(ctx: runner.RunContext) -> str:
    rows = ctx.params.get("rows")
    if not isinstance(rows, list):
        raise DomainError("The batch of this import is not stored")
    tally = learning.Tally.of(ctx.position)
    chunk = int(current_app.config.get("CRM_LEARNING_CHUNK") or learning.CHUNK)  # rows per commit
    while tally.next < len(rows):
        start = tally.next
        learning.apply_chunk(db.session, rows[start:start + chunk], start, tally)
        ctx.checkpoint(db.session, done=tally.done, failed=tally.failed, total=len(rows),
                       position=tally.as_position())
        db.session.commit()
        if ctx.cancelled(db.session):
            return f"Cancelled after row {tally.next}: " + tally.summary(len(rows))
    return tally.summary(len(rows))
