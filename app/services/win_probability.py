"""The people-facing side of the win probability: the administrator's variable choice, the active model's
evaluation as the pages read it, and an opportunity's factors in words.

The model itself (training, scoring, the SCORING job) is app.services.scoring's. This module only reads
what it stores (ScoringModel rows, Opportunity.win_probability / win_factors) and writes the config item
`scoring.variables` the way the Configuration page does (the value checked by its type, the change
audited by the session listener of app.services.audit).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from app.models.bigdata import ScoringModel, Tag
from app.models.marketing import MarketingCampaign
from app.models.metadata import ConfigItem
from app.services import metadata, reference
from app.services.errors import DomainError

CONFIG_KEY = "scoring.variables"
#: Variable code → its label on screen.
VARIABLE_LABELS = {
    "source": _l("Source"), "campaign": _l("Campaign"), "product_line": _l("Product line"),
    "region": _l("Region"), "intention_level": _l("Intention level"), "stage": _l("Stage"),
    "follow_ups": _l("Number of follow-ups"), "calls": _l("Number of calls"),
    "learning": _l("Learning activity"), "tags": _l("Tags"),
}
#: Variables whose values are dictionary item codes: variable → dictionary type.
DICT_VARIABLES = {"source": reference.LEAD_SOURCE, "product_line": reference.PRODUCT_LINE,
                  "intention_level": reference.INTENTION_LEVEL, "stage": reference.OPPORTUNITY_STAGE}
#: An effect (log-odds) at least this large is shown with two arrows: it more than doubles (halves) the odds.
STRONG_EFFECT = math.log(2)
HISTORY_SIZE = 20


def known_variables() -> tuple[str, ...]:
    """The variable codes the model can learn from, in their order (app.services.scoring.VARIABLES)."""
    from app.services.scoring import VARIABLES

    return tuple(VARIABLES)


def variable_label(code: str) -> str:
    return str(VARIABLE_LABELS.get(code, code))


def chosen_variables(session) -> list[str]:
    """The variables the administrator chose (the config item; its declared default when unset)."""
    value = metadata.config_value(session, CONFIG_KEY)
    chosen = set(v for v in value if isinstance(v, str)) if isinstance(value, list) else set()
    return [v for v in known_variables() if v in chosen]


def save_variables(session, codes) -> list[str]:
    """Choose the variables the next training uses: at least one, each a known code. Written into the
    config item `scoring.variables` (created with its declaration when missing); flushes, the caller
    commits. The change is audited as any config item's."""
    known = known_variables()
    codes = [c.strip() if isinstance(c, str) else c for c in (codes or [])]
    unknown = [c for c in codes if c not in known]
    if unknown:
        raise DomainError("Unknown variable %(code)s", field="variables", code=repr(unknown[0]))
    if not codes:
        raise DomainError("Choose at least one variable", field="variables")
    chosen = [c for c in known if c in set(codes)]  # the canonical order, no repeats
    item = session.scalar(select(ConfigItem).where(ConfigItem.key == CONFIG_KEY))
    if item is None:
        declared = reference.setting(CONFIG_KEY)
        item = ConfigItem(key=CONFIG_KEY, value_type=declared.value_type, description=declared.description)
        session.add(item)
    item.value_type = "json"
    item.value = json.dumps(chosen)
    metadata.validate_config_item(item)
    session.flush()
    return chosen


# --- the model's evaluation -----------------------------------------------------------------------------
def _loads(text, default):
    try:
        value = json.loads(text) if text else default
    except (TypeError, ValueError):
        return default
    return value if isinstance(value, type(default)) else default


def _when(value) -> dt.datetime | None:
    """An ISO timestamp of the evaluation as naive UTC (how the pages' `local_dt` reads times)."""
    if isinstance(value, dt.datetime):
        return value
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def active_model(session) -> ScoringModel | None:
    """The model that scores now (app.services.scoring decides which one that is)."""
    from app.services import scoring

    return scoring.active_model(session)


@dataclass
class Evaluation:
    """A model with its evaluation read from the stored JSON (missing parts are None / empty)."""

    model: ScoringModel
    variables: list[str]
    trained_at: dt.datetime | None
    split_at: dt.datetime | None
    train: int | None
    test: int | None
    test_won: int | None
    auc: float | None
    ece: float | None
    calibrated: bool | None
    bins: list[dict]

    def as_json(self) -> dict:
        m = self.model
        return {"id": m.id, "method": m.method, "variables": self.variables, "won": m.won, "lost": m.lost,
                "active": m.active, "created_at": _iso(m.created_at), "trained_at": _iso(self.trained_at),
                "split_at": _iso(self.split_at), "train": self.train, "test": self.test,
                "test_won": self.test_won, "auc": self.auc, "ece": self.ece, "calibrated": self.calibrated,
                "bins": self.bins}


def _iso(value: dt.datetime | None) -> str | None:
    return value.replace(tzinfo=dt.UTC).isoformat() if value else None


def _number(value, kind=float):
    try:
        return kind(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def evaluation(model: ScoringModel) -> Evaluation:
    data = _loads(model.evaluation, {})
    bins = []
    for b in data.get("bins") or []:
        if isinstance(b, dict):
            bins.append({"low": _number(b.get("low")), "high": _number(b.get("high")),
                         "count": _number(b.get("count"), int) or 0, "predicted": _number(b.get("predicted")),
                         "observed": _number(b.get("observed"))})
    auc = model.auc if model.auc is not None else _number(data.get("auc"))
    ece = model.ece if model.ece is not None else _number(data.get("ece"))
    calibrated = data.get("calibrated")
    return Evaluation(model=model, variables=[v for v in _loads(model.variables, []) if isinstance(v, str)],
                      trained_at=_when(data.get("trained_at")) or model.created_at,
                      split_at=_when(data.get("split_at")), train=_number(data.get("train"), int),
                      test=_number(data.get("test"), int), test_won=_number(data.get("test_won"), int),
                      auc=auc, ece=ece, calibrated=calibrated if isinstance(calibrated, bool) else None,
                      bins=bins)


def history(session, limit: int = HISTORY_SIZE) -> list[Evaluation]:
    """The newest models first, active or not: how AUC and calibration moved over time."""
    models = session.scalars(select(ScoringModel).order_by(ScoringModel.created_at.desc(),
                                                           ScoringModel.id.desc()).limit(limit))
    return [evaluation(m) for m in models]


def chart(ev: Evaluation) -> dict:
    """The calibration chart's data: per bin its middle, predicted and observed rates, and its count."""
    bins = [b for b in ev.bins if b["low"] is not None and b["high"] is not None]
    return {"labels": [f"{b['low']:.1f}–{b['high']:.1f}" for b in bins],
            "predicted": [b["predicted"] for b in bins], "observed": [b["observed"] for b in bins],
            "counts": [b["count"] for b in bins],
            "diagonal": [round((b["low"] + b["high"]) / 2, 4) for b in bins]}


# --- an opportunity's factors in words ---------------------------------------------------------------------
@dataclass(frozen=True)
class Factor:
    variable: str
    label: str
    value: str
    effect: float

    @property
    def up(self) -> bool:
        return self.effect >= 0

    @property
    def arrows(self) -> str:
        arrow = "↑" if self.up else "↓"
        return arrow * 2 if abs(self.effect) >= STRONG_EFFECT else arrow

    @property
    def odds(self) -> float:
        """How many times the odds of winning it multiplies (below 1: divides)."""
        return math.exp(self.effect)

    def words(self) -> str:
        return f"{self.label}: {self.value} {self.arrows}"


def raw_factors(text) -> list[dict]:
    """An opportunity's stored factors (Opportunity.win_factors) as a list of dicts, bad ones left out."""
    rows = []
    for row in _loads(text, []):
        if isinstance(row, dict) and isinstance(row.get("variable"), str):
            effect = _number(row.get("effect"))
            if effect is not None and math.isfinite(effect):
                rows.append({"variable": row["variable"], "value": row.get("value"), "effect": effect})
    return rows[:3]


def _names(session, model, codes: set[str]) -> dict[str, str]:
    """{code: name} of the rows of `model` with those codes (no query for none)."""
    if not codes:
        return {}
    return dict(session.execute(select(model.code, model.name).where(model.code.in_(codes))).all())


class Words:
    """Turns factor values into readable words for many opportunities at once: dictionary codes into their
    labels (the metadata cache), tag codes into tag names and campaign codes into campaign names (one query
    each for all the values asked); bins and other values stay as they are."""

    def __init__(self, session, factor_lists: list[list[dict]]):
        self.session = session
        wanted: dict[str, set[str]] = {"tags": set(), "campaign": set()}
        for rows in factor_lists:
            for row in rows:
                if row["variable"] in wanted and row["value"] is not None:
                    wanted[row["variable"]].add(str(row["value"]))
        self.tags = _names(session, Tag, wanted["tags"])
        self.campaigns = _names(session, MarketingCampaign, wanted["campaign"])

    def value(self, variable: str, value) -> str:
        if value is None or value == "":
            return str(_l("(none)"))
        text = str(value)
        if variable in DICT_VARIABLES:
            for item in metadata.dict_items(self.session, DICT_VARIABLES[variable], include_disabled=True):
                if text in (item.code, str(item.id), item.label_zh, item.label_en):
                    return item.label
            return text
        if variable == "tags":
            return self.tags.get(text, text)
        if variable == "campaign":
            return self.campaigns.get(text, text)
        return text

    def factors(self, rows: list[dict]) -> list[Factor]:
        return [Factor(r["variable"], variable_label(r["variable"]), self.value(r["variable"], r["value"]),
                       r["effect"]) for r in rows]


def factors_of(session, opportunities) -> dict[int, list[Factor]]:
    """{opportunity id: its factors in words}, for a page of opportunities (at most two queries)."""
    stored = {o.id: raw_factors(o.win_factors) for o in opportunities}
    words = Words(session, list(stored.values()))
    return {opp_id: words.factors(rows) for opp_id, rows in stored.items()}
