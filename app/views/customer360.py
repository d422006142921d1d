"""Customer 360: the Timeline panel of the customer page and GET /api/v1/customer/<id>/timeline ("load
more" and the kind filter of the panel, or any client). The events, their scope and masking are
app.services.customer360's; this module only words them, in the reader's language and the business time
zone, the same way for the page and the JSON (`present`).
"""

from __future__ import annotations

from flask import current_app, request, url_for
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.api import expose as api_expose
from flask_babel import gettext
from flask_babel import lazy_gettext as _l

from app import clock
from app.extensions import db
from app.security import policy
from app.security.scope import current_viewer
from app.services import customer360
from app.services.customer360 import Event
from app.services.errors import DomainError
from app.views import labels, panels, uow

KIND_LABELS = {
    "lead": _l("Lead"), "opportunity": _l("Opportunity"), "follow_up": _l("Follow-up"),
    "call": _l("Phone call"),
    "sms": _l("Text message"), "order": _l("Order record"), "learning": _l("Learning"), "tag": _l("Tag"),
    "chat": _l("Chat"), "behaviour": _l("Website visit"), "customer": _l("Customer"),
}
ICONS = {
    "lead": "fa-id-card-o", "opportunity": "fa-handshake-o", "follow_up": "fa-comments", "call": "fa-phone",
    "sms": "fa-envelope-o", "order": "fa-shopping-cart", "learning": "fa-graduation-cap", "tag": "fa-tag",
    "chat": "fa-comment-o", "behaviour": "fa-mouse-pointer", "customer": "fa-user",
}
TAG_SOURCES = {"manual": _l("Manual tag"), "rule": _l("Rule tag"), "import": _l("Imported tag")}


def _join(*parts) -> str:
    return " · ".join(str(p) for p in parts if p not in (None, ""))


def _labelled(label, value) -> str:
    return "" if value in (None, "") else f"{label}: {value}"


def _duration(seconds: int) -> str:
    return f"{seconds // 60}:{seconds % 60:02d}"


def _lead(e: Event, d: dict):
    return (gettext("New lead") if not d["name"] else gettext("New lead: %(name)s", name=d["name"]),
            _join(_labelled(_l("Lead source"), d["source"]), _labelled(_l("Product line"), d["product_line"]),
                  _labelled(_l("Campaign"), d["marketing_campaign"] or d["campaign"]),
                  _labelled(_l("Landing page"), d["landing_page"]), d["note"]))


def _opportunity(e: Event, d: dict):
    if e.action == "created":
        return (gettext("Opportunity #%(id)s created", id=e.ref),
                _join(_labelled(_l("Product line"), d["product_line"]),
                      _labelled(_l("Lead source"), d["source"])))
    if e.action == "stage":
        return gettext("Stage: %(stage)s", stage=d["stage"] or "–"), ""
    if e.action == "won":
        return gettext("Opportunity #%(id)s won", id=e.ref), ""
    if e.action == "lost":
        return (gettext("Opportunity #%(id)s lost", id=e.ref),
                _labelled(_l("Lost reason"), d["lost_reason"]))
    # An assignment log row: the reason is the action.
    before = d["from_employee"] or d["from_pool"] or "–"
    after = d["to_employee"] or d["to_pool"] or "–"
    return (labels.text("assignment.reason", e.action),
            _join(f"{before} → {after}", _labelled(_l("By"), d["actor"]), d["note"]))


def _follow_up(e: Event, d: dict):
    title = gettext("Follow-up by %(name)s", name=d["employee"]) if d["employee"] else gettext("Follow-up")
    return _join(title, d["type"]), _join(d["content"], _labelled(_l("Result"), d["result"]))


def _call(e: Event, d: dict):
    return (gettext("Outbound call: %(status)s", status=labels.text("call.status", d["status"])),
            _join(_labelled(_l("Talk time"), _duration(d["duration"])) if d["connected"] else "",
                  _labelled(_l("By"), d["employee"]), labels.text("call.result", d["result"])))


def _sms(e: Event, d: dict):
    return (gettext("%(kind)s text message: %(status)s", kind=labels.text("sms_template.kind", e.action),
                    status=labels.text("sms_message.status", d["status"])),
            _join(_labelled(_l("Template"), d["template"]), _labelled(_l("SMS campaign"), d["sms_campaign"]),
                  labels.text("sms_message.cancel_reason", d["cancel_reason"]), d["content"]))


def _order(e: Event, d: dict):
    number, amount = d["number"], "" if d["final_total"] is None else f"{d['final_total']:,.2f}"
    if e.action == "paid":
        return gettext("Order %(number)s paid: %(amount)s", number=number, amount=amount), ""
    if e.action == "refunded":
        return gettext("Order %(number)s refunded: %(amount)s", number=number, amount=amount), ""
    if e.action == "cancelled":
        return gettext("Order %(number)s cancelled", number=number), ""
    return gettext("Order %(number)s created: %(amount)s", number=number, amount=amount), ""


def _learning(e: Event, d: dict):
    title = {"attended": _l("Attended a lesson"), "absent": _l("Missed a lesson")}.get(
        e.action, _l("Learning record"))
    progress = f"{d['progress']}%" if d["progress"] is not None else ""
    return str(title), _join(d["course"], d["lesson"], _labelled(_l("Progress"), progress))


def _tag(e: Event, d: dict):
    return (gettext("Tag added: %(name)s", name=d["tag"]),
            _join(TAG_SOURCES.get(d["tag_source"], d["tag_source"]), _labelled(_l("By"), d["by"])))


def _chat(e: Event, d: dict):
    return (gettext("Chat with %(n)s messages", n=d["messages"]),
            _join(_labelled(_l("Landing page"), d["landing_page"]), d["preview"]))


def _behaviour(e: Event, d: dict):
    title = gettext("Viewed a page") if e.action == "page_view" else gettext("Website event: %(kind)s",
                                                                             kind=e.action)
    return title, d["detail"] or ""


def _customer(e: Event, d: dict):
    if e.action == "merged":
        return gettext("Customer #%(id)s merged into this one", id=d["merged_id"]), d["name"] or ""
    return gettext("Customer record created"), ""


WORDING = {"lead": _lead, "opportunity": _opportunity, "follow_up": _follow_up, "call": _call, "sms": _sms,
           "order": _order, "learning": _learning, "tag": _tag, "chat": _chat, "behaviour": _behaviour,
           "customer": _customer}


def _link(endpoint: str, pk) -> str | None:
    return url_for(endpoint, pk=pk) if pk and endpoint in current_app.view_functions else None


def present(e: Event) -> dict:
    """An event as the page and the API show it (strings in the reader's language; no phone in clear)."""
    title, detail = WORDING[e.kind](e, e.data)
    link = _link("CommerceView.order", e.ref) if e.kind == "order" else None
    return {"kind": e.kind, "action": e.action, "at": clock.isoformat(e.at),
            "time": clock.format_datetime(e.at),
            "kind_label": str(KIND_LABELS[e.kind]), "icon": ICONS[e.kind], "title": str(title),
            "detail": str(detail), "opportunity_id": e.opportunity_id,
            "opportunity_link": _link("OpportunityView.show", e.opportunity_id), "link": link,
            "cursor": e.cursor}


def panel_context(customer) -> dict:
    """The Timeline panel's first page and summary (the page has checked the customer's scope)."""
    viewer = current_viewer()
    page = customer360.page(db.session, customer.id, viewer)
    summary = customer360.summary(db.session, customer.id, viewer)
    return {"c360": {
        "events": [present(e) for e in page.events], "next": page.next,
        "kinds": [(k, KIND_LABELS[k], ICONS[k]) for k in customer360.visible_kinds(viewer)],
        "tags": [(name, TAG_SOURCES.get(source, source)) for name, source in summary.tags],
        "segments": summary.segments,
        "api": url_for("CustomerTimelineApi.timeline", pk=customer.id),
    }}


class CustomerTimelineApi(BaseApi):
    """GET /api/v1/customer/<id>/timeline: a page of the customer's timeline (session or JWT)."""

    resource_name = "customer"
    class_permission_name = policy.CUSTOMER
    method_permission_name = {"timeline": "read"}
    allow_browser_login = True  # the panel's "load more" calls it with the session
    openapi_spec_tag = "Customers"

    @api_expose("/<int:pk>/timeline", methods=["GET"])
    @protect()
    @safe
    def timeline(self, pk: int):
        """A page of the customer's timeline, newest first: leads, opportunities and their assignment
        history, follow-ups, calls, SMS, orders, learning, tags, chats and website visits.
        ---
        get:
          description: >-
            What the caller may see: the customer must be in the caller's data scope, and what belongs to an
            opportunity the caller may not see is left out. Phone numbers are always masked. Times are ISO
            8601 in the business time zone; `time` is how a person reads it. The first page (no `before`)
            also carries the customer's tags and the saved segments that include the customer.
          parameters:
          - in: path
            name: pk
            required: true
            schema: {type: integer, minimum: 1, maximum: 2147483647}
          - in: query
            name: before
            description: >-
              The `next` value of the previous page (or the `cursor` of an event), or an ISO 8601 time (no
              offset = business time zone): only the events after it, newest first
            schema:
              anyOf:
              - {type: string, format: date-time}
              - {type: string, pattern: '^[0-9]{1,17}~(-1|1[0-8]|[0-9])~[0-9]{1,18}$'}
          - in: query
            name: kinds
            description: The kinds to show, comma separated (default all)
            style: form
            explode: false
            schema:
              type: array
              maxItems: 22
              items:
                type: string
                enum: [lead, opportunity, follow_up, call, sms, order, learning, tag, chat, behaviour,
                       customer]
            example: [lead, opportunity, call]
          - in: query
            name: limit
            schema: {type: integer, minimum: 1, maximum: 200, default: 50}
          responses:
            200:
              description: The events and the cursor of the next page (null when there is nothing older)
              content:
                application/json:
                  schema:
                    type: object
                    required: [customer_id, result, next, kinds]
                    properties:
                      customer_id: {type: integer}
                      next: {type: string, nullable: true}
                      kinds: {type: array, items: {type: string}}
                      tags:
                        type: array
                        items: {type: object, properties: {name: {type: string}, source: {type: string}}}
                      segments:
                        type: array
                        items: {type: object, properties: {id: {type: integer}, name: {type: string}}}
                      result:
                        type: array
                        items:
                          type: object
                          properties:
                            kind:
                              type: string
                              enum: [lead, opportunity, follow_up, call, sms, order, learning, tag, chat,
                                     behaviour, customer]
                            action: {type: string}
                            at: {type: string, format: date-time}
                            time: {type: string}
                            kind_label: {type: string}
                            icon: {type: string}
                            title: {type: string}
                            detail: {type: string}
                            opportunity_id: {type: integer, nullable: true}
                            opportunity_link: {type: string, nullable: true}
                            link: {type: string, nullable: true}
                            cursor: {type: string}
            400:
              description: A bad cursor, kind or limit (message, field)
            401:
              description: Not signed in
            403:
              description: No access to customers
            404:
              description: No such customer in the caller's data scope
        """
        try:
            limit = _limit(request.args.get("limit"))
            before = request.args.get("before")
            customer360.parse_cursor(before, blank_is_none=False)
            viewer = current_viewer()
            page = customer360.page(db.session, pk, viewer, before=before, limit=limit,
                                    kinds=request.args.get("kinds"))
            body = {"customer_id": pk, "result": [present(e) for e in page.events], "next": page.next,
                    "kinds": list(customer360.visible_kinds(viewer, customer360.parse_kinds(
                        request.args.get("kinds"))))}
            if not before:
                summary = customer360.summary(db.session, pk, viewer)
                body["tags"] = [{"name": n, "source": s} for n, s in summary.tags]
                body["segments"] = [{"id": s.id, "name": s.name} for s in summary.segments]
        except DomainError as exc:
            return uow.error_json(exc)
        return self.response(200, **body)


def _limit(raw) -> int:
    if raw is None:
        return customer360.DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 4 or not 1 <= int(raw) <= customer360.MAX_LIMIT:
        raise DomainError("Enter a number from %(low)s to %(high)s", field="limit", status=400, low=1,
                          high=customer360.MAX_LIMIT)
    return int(raw)


def register(appbuilder) -> None:
    """Add this module's views and APIs to `appbuilder`."""
    appbuilder.add_api(CustomerTimelineApi)
    panels.add(panels.CUSTOMER, "customer360/_timeline_panel.html", panel_context,
               permission=(policy.READ, policy.CUSTOMER))
