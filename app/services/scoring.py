"""Win probability: train the model on the company's closed opportunities, score every open one.

    model = scoring.train(session, now)            # None (with the reason in `why`) when history is short
    after = 0
    while (after := scoring.score_chunk(session, model, after, 2000)) is not None: session.commit()
    run = scoring.start_run(session, actor)       # the same as a SCORING job run ("Retrain now")

The model (app.services.scoring_model) is Odoo's predictive lead scoring — naive Bayes over frequency
tables of won and lost by variable value — learnt from this company's own WON / LOST opportunities, with
the variables the administrator chose (config item scoring.variables, from VARIABLES). It is evaluated on
a time split (trained on the earlier closed opportunities, scored on the latest 20 % by closed_at: AUC,
ECE, calibration bins) and, because naive Bayes counts correlated evidence twice and is overconfident,
Platt scaling fitted on a later slice is added — only when the evaluation shows it calibrates better
(bench/scoring.py: raw ECE ≈ 0.10, calibrated ≈ 0.02 at the same AUC).

Stored: a ScoringModel row (tables: the frequency tables and effects, and the calibration; evaluation: the
JSON the Win Probability page reads) — the newest one active, older ones deactivated. Each open
opportunity gets win_probability (0…1), win_factors (the three pieces of evidence with the largest
|effect|: [{"variable", "value", "effect"}], value as a dictionary item's code, a tag's or campaign's code,
a bin label like "2-3") and scored_at; closed opportunities keep what they had. Scoring writes set-wise,
without touching updated_at (a score is not an edit of the opportunity).
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import bindparam, func, select, text, update

from app import clock
from app.models.bigdata import ScoringModel
from app.models.jobs import SCORING, JobRun
from app.models.sales import LOST, OPEN_STATUSES, WON, Opportunity
from app.services import metadata, runner, scoring_model
from app.services.scoring_features import CHUNK, VARIABLES, closed_history, features, page_ids
from app.services.scoring_model import top_factors

__all__ = ["CHUNK", "KIND", "VARIABLES", "active_model", "chosen_variables", "explain", "features",
           "score_chunk", "score_rows", "start_run", "train"]

KIND = SCORING
CLOSED = (WON, LOST)


def chosen_variables(session) -> list[str]:
    """The administrator's choice (config scoring.variables), known codes only, in VARIABLES order."""
    value = metadata.config_value(session, "scoring.variables")
    chosen = set(value) if isinstance(value, list) else set(VARIABLES)
    return [v for v in VARIABLES if v in chosen]


def min_history(session) -> int:
    value = metadata.config_value(session, "scoring.min_history")
    return max(2, int(value)) if isinstance(value, int | float) else 40


def active_model(session) -> ScoringModel | None:
    """The newest active model (the one that scores)."""
    return session.scalar(select(ScoringModel).where(ScoringModel.active.is_(True))
                          .order_by(ScoringModel.created_at.desc(), ScoringModel.id.desc()).limit(1))


def tables_of(model) -> dict:
    """The fitted tables of a ScoringModel row (or a tables dict as it is)."""
    if isinstance(model, dict):
        return model
    return json.loads(model.tables) if model.tables else {}


# --- training -------------------------------------------------------------------------------------------
def train(session, now: dt.datetime | None = None, *, why: list[str] | None = None) -> ScoringModel | None:
    """Train a model on every closed opportunity and store it (active; older ones deactivated); flushes,
    the caller commits. None — with the reason appended to `why` — when the history is too short (fewer
    closed opportunities than scoring.min_history, or none won or none lost) or no variable is chosen."""
    now = now or clock.utcnow()
    variables = chosen_variables(session)
    counts = dict(session.execute(select(Opportunity.status, func.count())
                                  .where(Opportunity.status.in_(CLOSED), Opportunity.closed_at.is_not(None))
                                  .group_by(Opportunity.status)).all())
    won, lost, needed = counts.get(WON, 0), counts.get(LOST, 0), min_history(session)
    reason = None
    if not variables:
        reason = "No variable is chosen for the win probability"
    elif won + lost < needed:
        reason = f"Too little history: {won + lost} closed opportunities, {needed} needed"
    elif not won or not lost:
        reason = f"Too little history: {won} won and {lost} lost; both are needed"
    if reason:
        if why is not None:
            why.append(reason)
        return None
    by_time = (select(Opportunity.closed_at).where(Opportunity.status.in_(CLOSED),
                                                   Opportunity.closed_at.is_not(None))
               .order_by(Opportunity.closed_at).limit(1))
    cal_at, split_at = (session.scalar(by_time.offset(k)) for k in scoring_model.split_positions(won + lost))

    def stream():
        return closed_history(session, variables, CLOSED)

    tables, evaluation = scoring_model.train_history(stream, cal_at, split_at, variables)
    evaluation["trained_at"] = now.isoformat()
    # Chosen but learnt nothing from (e.g. "stage": every closed opportunity sits in its closing stage).
    evaluation["unused_variables"] = [v for v in variables if not tables["variables"][v]["effects"]]
    session.execute(update(ScoringModel).where(ScoringModel.active.is_(True)).values(active=False)
                    .execution_options(synchronize_session=False))
    model = ScoringModel(created_at=now, method=scoring_model.METHOD, variables=json.dumps(variables),
                         tables=json.dumps(tables, ensure_ascii=False, separators=(",", ":")),
                         won=tables["won"], lost=tables["lost"], auc=evaluation["auc"], ece=evaluation["ece"],
                         evaluation=json.dumps(evaluation, ensure_ascii=False), active=True)
    session.add(model)
    session.flush()
    return model


# --- scoring --------------------------------------------------------------------------------------------
def explain(model, row: dict, limit: int = 3) -> list[dict]:
    """The `limit` pieces of evidence that moved this opportunity's log-odds most (from the prior),
    largest |effect| first: [{"variable", "value", "effect"}]. A variable the model was not trained
    with has no table, so it never appears."""
    return [{"variable": var, "value": value, "effect": round(effect, 4)}
            for var, value, effect in top_factors(tables_of(model), row, limit)]


def score_rows(model, rows: dict[int, dict]) -> dict[int, tuple[float, list[dict]]]:
    """{id: (probability, factors)} of feature rows (pure: no database)."""
    tables = tables_of(model)
    return {oid: (round(scoring_model.probability(tables, row), 4), explain(tables, row))
            for oid, row in rows.items()}


def score_chunk(session, model: ScoringModel, after_id: int, limit: int = CHUNK) -> int | None:
    """Score the next `limit` open opportunities after `after_id` (id order) with `model`; returns the
    last id scored, None when there were none left. One UPDATE per chunk; the caller commits."""
    ids = page_ids(session, after_id, limit, OPEN_STATUSES)
    if not ids:
        return None
    variables = json.loads(model.variables) if model.variables else list(VARIABLES)
    scores = score_rows(model, features(session, ids, variables=variables))
    _write(session, [{"id": oid, "p": p, "f": json.dumps(f, ensure_ascii=False, separators=(",", ":"))}
                     for oid, (p, f) in scores.items()], clock.utcnow())
    return ids[-1]


def _write(session, rows: list[dict], at: dt.datetime) -> None:
    """Set win_probability / win_factors / scored_at of these open opportunities. Plain SQL on purpose:
    an ORM or Core update of the table would also stamp updated_at (its onupdate), and a score is not
    an edit. PostgreSQL: one statement for the chunk (json_to_recordset); elsewhere an executemany."""
    if not rows:
        return
    conn = session.connection()
    at_param = bindparam("at", type_=Opportunity.__table__.c.scored_at.type)
    open_list = ", ".join(f"'{s}'" for s in OPEN_STATUSES)
    if conn.dialect.name == "postgresql":
        conn.execute(text(
            "UPDATE opportunity AS t SET win_probability = v.p, win_factors = v.f, scored_at = :at "
            "FROM json_to_recordset(CAST(:rows AS json)) AS v(id integer, p double precision, f text) "
            f"WHERE t.id = v.id AND t.status IN ({open_list})").bindparams(at_param),
            {"rows": json.dumps(rows, ensure_ascii=False, separators=(",", ":")), "at": at})
    else:
        conn.execute(text("UPDATE opportunity SET win_probability = :p, win_factors = :f, scored_at = :at "
                          f"WHERE id = :id AND status IN ({open_list})").bindparams(at_param),
                     [{**r, "at": at} for r in rows])


# --- the job run ----------------------------------------------------------------------------------------
def start_run(session, actor=None) -> JobRun:
    """Start a SCORING run ("Retrain now"; the nightly schedule too): train, then score every open
    opportunity. While one is queued or running, that one is returned. The caller commits (the RQ job is
    enqueued then)."""
    user_id = getattr(actor, "id", None) if actor is not None and not isinstance(actor, int) else actor
    return runner.start(session, KIND, started_by=user_id, queue="low")


def open_count(session, *, after_id: int | None = None, upto_id: int | None = None) -> int:
    """How many open opportunities (with after_id < id ≤ upto_id when given)."""
    query = select(func.count()).select_from(Opportunity).where(Opportunity.status.in_(OPEN_STATUSES))
    if after_id is not None:
        query = query.where(Opportunity.id > after_id)
    if upto_id is not None:
        query = query.where(Opportunity.id <= upto_id)
    return session.scalar(query) or 0
