"""Demo segments: a few saved filters a sales floor uses from the first day (`seed_demo(session)`).

They name dictionary items and tags by code, looked up here; a tag the demo has not made yet (the tags
seed may run after this one) is left out of the criteria rather than failing. Saved through
app.services.segments.save (validated, audited); a segment whose name exists is left as it is.
"""

from __future__ import annotations

from sqlalchemy import select

from app.models.bigdata import CUSTOMER, OPPORTUNITY, Segment, Tag
from app.models.metadata import DictItem, DictType
from app.models.sales import OWNED, POOLED, WAITING
from app.services import audit
from app.services import segments as seg
from app.services.reference import OPPORTUNITY_STAGE, PRODUCT_LINE

#: (name, description, subject, criteria with codes: {"stages": [stage codes], "product_lines": [line codes],
#: "tags_any": [tag codes]} and plain values)
DEMO = (
    ("高意向未联系 7 天", "有意向或试听阶段、赢单概率不低于 40%，且 7 天以上没有跟进的商机", OPPORTUNITY,
     {"stages": ["interested", "trial", "negotiating"], "statuses": [OWNED, POOLED], "not_contacted_days": 7,
      "win_min": 40}),
    ("试听 ≥3 节的 K12 客户", "K12 产品线、上过至少 3 节课的客户", CUSTOMER,
     {"product_lines": ["k12_math", "k12_english"], "lessons_min": 3}),
    ("赢单概率 ≥ 60%", "待跟进中的高概率商机，优先拨打", OPPORTUNITY,
     {"statuses": [WAITING, OWNED, POOLED], "win_min": 60}),
    ("可营销的沉默客户", "同意接收营销信息、30 天以上没有跟进的客户（短信召回）", CUSTOMER,
     {"consent": True, "not_contacted_days": 30, "tags_none": ["unsubscribed"]}),
)


def _items(session, type_code: str) -> dict[str, int]:
    return dict(session.execute(select(DictItem.code, DictItem.id).join(DictItem.dict_type)
                                .where(DictType.code == type_code)).all())


def _criteria(session, raw: dict) -> dict:
    """The criteria with codes replaced by ids; codes that do not exist (yet) are left out."""
    stages, lines = _items(session, OPPORTUNITY_STAGE), _items(session, PRODUCT_LINE)
    tags = dict(session.execute(select(Tag.code, Tag.id)).all())
    lookups = {"stages": stages, "product_lines": lines,
               **{key: tags for key in ("tags_any", "tags_all", "tags_none")}}
    out = {}
    for key, value in raw.items():
        if key in lookups:
            ids = [lookups[key][code] for code in value if code in lookups[key]]
            if ids:
                out[key] = ids
        else:
            out[key] = value
    return out


def seed_demo(session) -> dict:
    """Add the demo segments that are not there; returns {"segments": how many added}; commits."""
    added = 0
    with audit.acting_as(None, "demo"):
        for name, description, subject, raw in DEMO:
            if session.scalar(select(Segment.id).where(Segment.name == name)) is not None:
                continue
            seg.save(session, None, {"name": name, "description": description, "subject": subject,
                                     "criteria": _criteria(session, raw)}, "demo")
            added += 1
        session.commit()
    return {"segments": added}
