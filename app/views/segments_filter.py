"""A segment as a filter of the customer and opportunity lists: `?segment=<id>` (a dropdown above the
list offers the segments of the viewer's choice) keeps the rows in the segment, together with the data
scope (the view's other base filters) and the list's own filters. The clause is `id IN (the segment's
ids)` (app.services.segments.visible_ids_clause): a semi-join the capped count and the page share.

A customer segment filters opportunities by their customer; an opportunity segment filters customers by
one of their opportunities. A segment argument that is not a segment answers 400 naming `segment`."""

from __future__ import annotations

from flask import abort, has_request_context, request, url_for
from flask_appbuilder.models.filters import BaseFilter
from flask_babel import gettext as _
from sqlalchemy import select

from app.extensions import db
from app.models.bigdata import Segment
from app.services import segments as seg

ARG = "segment"
INT32_MAX = 2**31 - 1


def requested_segment() -> Segment | None:
    """The segment the request's `?segment=` names, None without one; 400 when it names none."""
    if not has_request_context():
        return None
    raw = request.args.get(ARG)
    if raw in (None, ""):
        return None
    if not raw.isdigit() or not 0 < int(raw) <= INT32_MAX:
        abort(400, description=f"{ARG}: {_('Not a valid choice')}")
    segment = db.session.get(Segment, int(raw))
    if segment is None:
        abort(400, description=f"{ARG}: {_('No such segment')}")
    return segment


def segment_filter(subject: str) -> type[BaseFilter]:
    """The FAB base filter of a list of `subject` (customer / opportunity) rows."""

    class SegmentFilter(BaseFilter):
        name = "Segment"
        arg_name = "segment"

        def apply(self, query, value):
            segment = requested_segment()
            if segment is None:
                return query
            return query.filter(seg.visible_ids_clause(db.session, segment, subject))

    SegmentFilter.__name__ = f"{subject.title()}SegmentFilter"
    return SegmentFilter


def dropdown(link) -> dict | None:
    """What the list's segment dropdown shows: the current segment and a link per segment
    (`link(segment_id or None)`: the list's address with that segment, the other arguments kept)."""
    if not has_request_context() or request.endpoint is None:
        return None
    current = requested_segment()
    rows = db.session.execute(select(Segment.id, Segment.name).order_by(Segment.name, Segment.id)).all()
    return {"current": current, "clear": link(None),
            "items": [(i, name, link(i), current is not None and current.id == i) for i, name in rows]}


def list_url(endpoint: str, segment_id: int | None) -> str:
    """The request's list address with `segment` set (or removed) and the paging reset."""
    args = request.args.copy()
    for key in list(args):
        if key.startswith(("page_", "after_", "before_")):
            args.pop(key)
    args.pop(ARG, None)
    if segment_id is not None:
        args[ARG] = str(segment_id)
    return url_for(endpoint, **{**(request.view_args or {}), **args.to_dict(flat=False)})
