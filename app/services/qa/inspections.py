"""The inspection workflow: pending → scored (the inspector) → appealed (the agent, once) → final (the
inspector's decision: upheld revises the score, rejected keeps it). A scored inspection the agent does not
appeal stays "scored"; nothing changes once it is final. Who may act on which row (the data scope, the
permissions) is the caller's business; these functions check the workflow's own rules.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from app.models.qa import (
    APPEAL_REJECTED,
    APPEAL_UPHELD,
    QA_APPEALED,
    QA_FINAL,
    QA_PENDING,
    QA_SCORED,
    QaInspection,
)
from app.services import audit
from app.services.errors import DomainError
from app.services.qa.scoring import total

MAX_TEXT = 2000


@dataclass(frozen=True)
class ItemJudgement:
    passed: bool
    note: str = ""


def loads(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _get(session, inspection_id: int) -> QaInspection:
    row = session.get(QaInspection, inspection_id, with_for_update=True)
    if row is None:
        raise DomainError("Unknown inspection", status=404)
    return row


def _text(value: str | None, field: str, required: bool = False) -> str | None:
    value = (value or "").strip()
    if required and not value:
        raise DomainError("This field is required", field=field)
    if len(value) > MAX_TEXT:
        raise DomainError("At most %(limit)s characters", field=field, limit=MAX_TEXT)
    return value or None


def parse_judgements(form: dict) -> dict[int, ItemJudgement]:
    """{item id: judgement} from a flat mapping "item-<id>" → "pass"/"fail", "note-<id>" → text."""
    out = {}
    for key, value in form.items():
        if not key.startswith("item-"):
            continue
        try:
            item_id = int(key[5:])
        except ValueError:
            continue
        if value not in ("pass", "fail"):
            raise DomainError("Mark each item pass or fail", field=key, status=400)
        out[item_id] = ItemJudgement(value == "pass", (form.get(f"note-{item_id}") or "").strip()[:500])
    return out


def compute(row: QaInspection, judgements: dict[int, ItemJudgement]) -> tuple[int, str]:
    """(score, item_results JSON) for a judgement of every item of the row's scorecard."""
    items = list(row.scorecard.items)
    missing = [i.name for i in items if i.id not in judgements]
    if missing:
        raise DomainError("Judge every item: %(items)s", field="items", items=", ".join(missing))
    unknown = set(judgements) - {i.id for i in items}
    if unknown:
        raise DomainError("Unknown check item(s): %(items)s", field="items", status=400,
                          items=", ".join(map(str, sorted(unknown))))
    score = total(row.scorecard.base_score, [(i.points, judgements[i.id].passed) for i in items])
    results = {str(i.id): {"passed": judgements[i.id].passed, "note": judgements[i.id].note} for i in items}
    return score, json.dumps(results, ensure_ascii=False, sort_keys=True)


def score(session, inspection_id: int, inspector_id: int, judgements: dict[int, ItemJudgement],
          comment: str | None, now: dt.datetime) -> QaInspection:
    """The inspector scores (or re-scores, until the agent appeals) an inspection → scored."""
    row = _get(session, inspection_id)
    if row.status not in (QA_PENDING, QA_SCORED):
        raise DomainError("This inspection is under appeal or final: it can no longer be scored", status=409)
    if inspector_id == row.agent_id:
        raise DomainError("You cannot inspect your own call", status=403)
    row.score, row.item_results = compute(row, judgements)
    row.comment = _text(comment, "comment")
    row.status = QA_SCORED
    row.scored_at = now
    if row.inspector_id is None:
        row.inspector_id = inspector_id
    session.flush()
    return row


def appeal(session, inspection_id: int, agent_id: int, reason: str | None, now: dt.datetime) -> QaInspection:
    """The agent appeals the score of their own call, once → appealed."""
    row = _get(session, inspection_id)
    if row.agent_id != agent_id:
        raise DomainError("Only the agent whose call it is may appeal", status=403)
    if row.appealed_at is not None:
        raise DomainError("This inspection was already appealed: there is no second appeal", status=409)
    if row.status != QA_SCORED:
        raise DomainError("Only a scored inspection can be appealed", status=409)
    row.appeal_reason = _text(reason, "reason", required=True)
    row.appealed_at = now
    row.status = QA_APPEALED
    audit.record(session, "qa_appeal", target_type="qa_inspection", target_id=row.id,
                 summary=f"{row}: appealed (score {row.score})", after={"reason": row.appeal_reason})
    session.flush()
    return row


def decide(session, inspection_id: int, decider_id: int, decision: str, note: str | None,
           judgements: dict[int, ItemJudgement] | None, now: dt.datetime) -> QaInspection:
    """The inspector decides an appeal → final. Upheld: the score is revised from `judgements` (it must
    change); rejected: the score stands. Logged in the audit log; final for good."""
    row = _get(session, inspection_id)
    if row.status != QA_APPEALED:
        raise DomainError("Only an appealed inspection can be decided", status=409)
    if decider_id == row.agent_id:
        raise DomainError("You cannot decide the appeal of your own call", status=403)
    if decision not in (APPEAL_UPHELD, APPEAL_REJECTED):
        raise DomainError("Decide upheld or rejected", field="decision", status=400)
    before = {"score": row.score, "status": row.status}
    if decision == APPEAL_UPHELD:
        new_score, results = compute(row, judgements or {})
        def marks(text):
            return {k: v.get("passed") for k, v in loads(text).items()}

        if new_score == row.score and marks(results) == marks(row.item_results):
            raise DomainError("An upheld appeal revises the judgement: change at least one item",
                              field="items")
        row.score, row.item_results = new_score, results
    row.appeal_decision = decision
    row.decision_note = _text(note, "decision_note", required=True)
    row.decided_at = now
    row.decided_by_id = decider_id
    row.status = QA_FINAL
    audit.record(session, "qa_appeal_decision", target_type="qa_inspection", target_id=row.id,
                 summary=f"{row}: appeal {decision}, score {before['score']} → {row.score}",
                 before=before,
                 after={"score": row.score, "status": row.status, "decision": decision,
                        "note": row.decision_note})
    session.flush()
    return row
