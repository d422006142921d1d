"""How a campaign's audience reads on its pages: the segment (with a link), its criteria in words as they
were at the snapshot, the snapshot's count and time; an uploaded list; an old saved filter (read only)."""

from __future__ import annotations

import datetime as dt

from flask import url_for
from flask_babel import gettext as _
from sqlalchemy import select
from werkzeug.routing import BuildError

from app.models.bigdata import Tag
from app.models.marketing import MarketingCampaign
from app.models.metadata import DictItem
from app.services.errors import DomainError
from app.services.sms.campaign_audience import FILTER, SEGMENT, UPLOAD, audience_of
from app.views import labels, times

_ID_LISTS = {"tags_any": (Tag, "Has any of the tags"), "tags_all": (Tag, "Has all of the tags"),
             "tags_none": (Tag, "Has none of the tags"), "stages": (DictItem, "Stage"),
             "product_lines": (DictItem, "Product line"), "campaigns": (MarketingCampaign, "Campaign")}
_NUMBERS = {"lessons_min": "Attended at least %(n)s lessons",
            "active_within_days": "In class within %(n)s days",
            "contacted_within_days": "Contacted within %(n)s days",
            "not_contacted_days": "Not contacted for %(n)s days or more",
            "win_min": "Win probability at least %(n)s%%", "win_max": "Win probability at most %(n)s%%"}


def _names(session, model, ids) -> str:
    found = {row.id: str(row) if model is DictItem else row.name
             for row in session.scalars(select(model).where(model.id.in_(ids)))}
    return "、".join(found.get(i, f"#{i}") for i in ids)


def criteria_words(session, criteria: dict) -> list[str]:
    """The segment criteria (app.services.segments' schema) as sentences, one per criterion."""
    words = []
    for key, (model, title) in _ID_LISTS.items():
        if criteria.get(key):
            words.append(f"{_(title)}: {_names(session, model, criteria[key])}")
    if criteria.get("statuses"):
        words.append(f"{_('Opportunity status')}: "
                     + "、".join(labels.text("opportunity.status", s) for s in criteria["statuses"]))
    if criteria.get("regions"):
        words.append(f"{_('Region')}: " + "、".join(criteria["regions"]))
    for key, text in _NUMBERS.items():
        if criteria.get(key) is not None:
            words.append(_(text, n=criteria[key]))
    if criteria.get("consent") is not None:
        words.append(_("Agreed to marketing messages") if criteria["consent"]
                     else _("Did not agree to marketing messages"))
    return words or [_("Every customer")]


def segment_link(segment_id) -> str | None:
    """The segment's page, when the app has one."""
    for endpoint in ("SegmentView.show", "SegmentView.edit"):
        try:
            return url_for(endpoint, pk=segment_id)
        except BuildError:
            continue
    return None


def summary(session, campaign) -> dict:
    """What the campaign page shows about the audience: kind, title, link, criteria words, count, time."""
    try:
        spec = audience_of(campaign)
    except DomainError as exc:
        return {"kind": None, "title": exc.message, "words": []}
    kind = spec["kind"]
    if kind == SEGMENT:
        at = spec.get("snapshot_at")
        at = times.local_dt(dt.datetime.fromisoformat(at)) if at else None
        return {"kind": kind, "title": spec.get("name") or str(campaign.segment or ""),
                "link": segment_link(spec.get("segment_id") or campaign.segment_id),
                "words": criteria_words(session, spec["criteria"]) if "criteria" in spec else [],
                "count": spec.get("count"), "snapshot_at": at}
    if kind == UPLOAD:
        return {"kind": kind, "title": _("An uploaded list"), "words": []}
    words = [f"{key}: {value}" for key, value in spec.items() if key != "kind"]
    return {"kind": FILTER, "title": _("A saved filter (made before segments; read only)"), "words": words}

