"""How a campaign's audience reads on its pages: the segment (with a link), its criteria in words as they
were at the snapshot, the snapshot's count and time; an uploaded list; an old saved filter (read only)."""

from __future__ import annotations

import datetime as dt

from flask import url_for
from flask_babel import gettext as _
from werkzeug.routing import BuildError

from app.models.bigdata import CUSTOMER
from app.services.errors import DomainError
from app.services.sms.campaign_audience import FILTER, SEGMENT, UPLOAD, audience_of
from app.views import segments_form, times


def criteria_words(session, criteria: dict, subject: str) -> list[str]:
    """The segment's criteria as they were at the snapshot, worded as the segment pages word them."""
    return segments_form.describe(criteria, subject, segments_form.Names(session, [criteria]))


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
                "words": criteria_words(session, spec["criteria"], spec.get("subject") or CUSTOMER)
                if "criteria" in spec else [],
                "count": spec.get("count"), "snapshot_at": at}
    if kind == UPLOAD:
        return {"kind": kind, "title": _("An uploaded list"), "words": []}
    words = [f"{key}: {value}" for key, value in spec.items() if key != "kind"]
    return {"kind": FILTER, "title": _("A saved filter (made before segments; read only)"), "words": words}

