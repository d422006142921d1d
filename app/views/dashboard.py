"""The manager dashboard (/dashboard/, the home page of directors and managers) and its JSON twin,
GET /api/v1/dashboard/summary. Both read app.services.dashboard under the viewer's data scope; every
figure on the page links to the list behind it (`drill`), filtered by FAB's own list arguments."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import replace

from flask import current_app, flash, request, url_for
from flask_appbuilder import BaseView
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.api import expose as api_expose
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from app import clock
from app.clock import utcnow
from app.extensions import db, rq
from app.models.dashboard import IDLE_BUCKETS
from app.models.org import OrgUnit
from app.models.sales import OWNED, POOLED, WAITING, WON
from app.security import policy
from app.security.scope import Viewer, current_viewer, restrict
from app.services import dashboard, dashboard_refresh, marketing, metadata
from app.services.errors import DomainError
from app.services.reference import LEAD_SOURCE, PRODUCT_LINE
from app.views.sales import entry_label
from app.views.uow import error_json

CACHE_PREFIX = "crm:dashboard:"


# --- drill-down: FAB list arguments ---------------------------------------------------------------------
# FAB numbers each column's filters: relations 0 = equal; strings 3 = equal; dates and numbers
# 0 = equal, 1 = greater than, 2 = smaller than (app/views/times.py reads them as business-zone time).
def _after(day: dt.date) -> str:
    """The last second before `day` (the list filters take "greater than"; a link carries no microseconds)."""
    return (dt.datetime.combine(day, dt.time(0)) - dt.timedelta(seconds=1)).isoformat(" ")


def _before(day: dt.date) -> str:
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0)).isoformat(" ")


def _period(column: str, f: dashboard.Filters) -> dict:
    return {f"_flt_1_{column}": _after(f.start), f"_flt_2_{column}": _before(f.end)}


def opportunities_link(f: dashboard.Filters, **extra) -> str:
    """The opportunity list of the period's new opportunities under the filters, narrowed by `extra`."""
    args = _period("created_at", f)
    for column, value in (("product_line", f.product_line_id), ("source", f.source_id),
                          ("org_unit", f.org_unit_id)):
        if value is not None:
            args[f"_flt_0_{column}"] = value
    if f.campaign:
        args["_flt_3_campaign"] = f.campaign
    args.update({k: v for k, v in extra.items() if v is not None})
    return url_for("OpportunityView.list", **args)


def drill(f: dashboard.Filters, now: dt.datetime) -> dict:
    """The lists behind the dashboard's figures (person / team links are built per row in the template)."""
    since_epoch = "1970-01-01 00:00:00"
    today = clock.local_date(now)
    return {
        "leads": opportunities_link(f),
        "assigned": opportunities_link(f, _flt_1_assigned_at=since_epoch),
        "contacted": opportunities_link(f, _flt_1_last_followup_at=since_epoch),
        "won": opportunities_link(f, _flt_3_status=WON),
        "waiting": url_for("OpportunityView.list", _flt_3_status=WAITING),
        "pooled": url_for("OpportunityView.list", _flt_3_status=POOLED),
        "claimed_today": url_for("AssignmentLogView.list", _flt_3_reason="claim",
                                 **_period("created_at", dashboard.Filters(today, today))),
        "recycled": url_for("AssignmentLogView.list", _flt_3_reason="recycle", **_period("created_at", f)),
        "dispatched": url_for("AssignmentLogView.list", _flt_3_reason="dispatch", **_period("created_at", f)),
        "follow_ups": url_for("FollowUpView.list", **_period("created_at", f)),
        "calls": url_for("CallRecordView.list", **_period("started_at", f)),
        "idle": [_idle_link(now, lower, upper) for lower, upper in
                 zip(IDLE_BUCKETS, IDLE_BUCKETS[1:] + (None,), strict=True)],
    }


def _week_link(f: dashboard.Filters, week: str) -> str:
    """The opportunities that came in during one week of the trend (within the period)."""
    monday = dt.date.fromisoformat(week)
    sunday = monday + dt.timedelta(days=6)
    return opportunities_link(replace(f, start=max(monday, f.start), end=min(sunday, f.end)))


def _idle_link(now: dt.datetime, lower: int, upper: int | None) -> str:
    """Owned opportunities idle for [lower, upper) days at `now` (idle_since in business-zone time)."""
    def ago(days):
        return clock.format_datetime(now - dt.timedelta(days=days))

    args = {"_flt_3_status": OWNED, "_flt_2_idle_since": ago(lower)}
    if upper is not None:
        args["_flt_1_idle_since"] = ago(upper)
    return url_for("OpportunityView.list", **args)


# --- the figures, cached briefly ------------------------------------------------------------------------
def _scope_key(viewer: Viewer) -> str:
    """Who sees the same figures: the scope, and whose it is (the SMS section: who may read SMS reports)."""
    sms = viewer.can(policy.READ, policy.SMS_REPORT)
    return f"{viewer.scope}:{viewer.employee_id}:{viewer.org_unit_id}:{int(sms)}"


def figures(viewer: Viewer, f: dashboard.Filters, now: dt.datetime) -> dict:
    """The summary of the viewer's scope under `f`; the same answer is kept in Redis for
    DASHBOARD_CACHE_SECONDS (20 users on one page ask it once), keyed by the aggregates' refresh."""
    ttl = int(current_app.config.get("DASHBOARD_CACHE_SECONDS", 30) or 0)
    if ttl <= 0:
        return dashboard.summary(db.session, viewer, f, now)
    state = dashboard_refresh.state(db.session)
    raw = json.dumps([_scope_key(viewer), f.as_dict(), state.version if state else None,
                      clock.local_date(now).isoformat()])
    key = CACHE_PREFIX + hashlib.sha256(raw.encode()).hexdigest()[:32]
    try:
        redis = rq.redis
        cached = redis.get(key)
        if cached is None:
            # One request computes, the others asking the same meanwhile wait for its answer.
            with redis.lock(key + ":lock", timeout=30, blocking_timeout=5):
                cached = redis.get(key)
                if cached is None:
                    result = dashboard.summary(db.session, viewer, f, now)
                    cached = json.dumps(result, default=str)
                    redis.set(key, cached, ex=ttl)
    except Exception:  # Redis down or the lock not had in time: compute here
        return json.loads(json.dumps(dashboard.summary(db.session, viewer, f, now), default=str))
    return json.loads(cached)


class DashboardView(BaseView):
    """The manager dashboard: funnel, speed to lead, rankings, pools, dispatch fairness, SMS and calls."""

    route_base = "/dashboard"
    default_view = "index"
    class_permission_name = policy.DASHBOARD
    method_permission_name = {"index": "read"}

    @expose("/")
    @has_access
    def index(self):
        return self.page()

    def page(self, headcount: dict | None = None):
        """The dashboard under the request's filters (a bad one is flashed and the defaults shown);
        `headcount`: the organisation strip the home page adds."""
        viewer, now = current_viewer(), utcnow()
        today = clock.local_date(now)
        try:
            f = dashboard.parse_filters({k: v for k, v in request.args.items() if v != ""}, today)
        except DomainError as exc:
            message = _l("A filter was not understood (%(field)s): the defaults are shown.", field=exc.field)
            flash(str(message), "warning")
            f = dashboard.parse_filters({}, today)
        data = figures(viewer, f, now)
        links = {"trend": [_week_link(f, row["week"]) for row in data["funnel"]["trend"]],
                 "idle": drill(f, now)["idle"]}
        units = db.session.execute(restrict(select(OrgUnit.id, OrgUnit.name, OrgUnit.path), OrgUnit, viewer)
                                   .order_by(OrgUnit.path)).all()
        return self.render_template(
            "crm/dashboard.html", data=data, f=f, drill=drill(f, now), units=units, headcount=headcount,
            chart_links=links, product_lines=metadata.dict_items(db.session, PRODUCT_LINE),
            sources=metadata.dict_items(db.session, LEAD_SOURCE), entry_label=entry_label,
            campaigns=marketing.campaign_codes(db.session),
            opportunities_link=opportunities_link, period=lambda column: _period(column, f),
            title=_l("Dashboard"))


class DashboardApi(BaseApi):
    """GET /api/v1/dashboard/summary: the dashboard as JSON (session or JWT)."""

    resource_name = "dashboard"
    class_permission_name = policy.DASHBOARD
    method_permission_name = {"summary": "read"}
    allow_browser_login = True
    openapi_spec_tag = "Dashboard"

    @api_expose("/summary", methods=["GET"])
    @protect()
    @safe
    def summary(self):
        """The manager dashboard's figures under the caller's data scope.
        ---
        get:
          parameters:
          - in: query
            name: from
            description: First day of the period, business time zone (default 29 days before `to`)
            schema: {type: string, format: date}
          - in: query
            name: to
            description: Last day of the period (default today)
            schema: {type: string, format: date}
          - in: query
            name: org_unit
            description: An org unit (with its whole subtree)
            schema: {type: integer, minimum: 1, maximum: 2147483647}
          - in: query
            name: product_line
            description: A product line (dictionary item id)
            schema: {type: integer, minimum: 1, maximum: 2147483647}
          - in: query
            name: source
            description: A lead source (dictionary item id)
            schema: {type: integer, minimum: 1, maximum: 2147483647}
          - in: query
            name: campaign
            description: A campaign (exact)
            schema: {type: string, maxLength: 100}
          responses:
            200:
              description: Funnel, ranking, pools, speed to lead, dispatch, SMS (null without SMS reports),
                calls, as_of (when the daily aggregates were last refreshed) and the filters applied
              content:
                application/json:
                  schema:
                    type: object
                    required: [funnel, ranking, pools, speed_to_lead, dispatch, sms, calls, as_of, filters]
                    properties:
                      funnel: {type: object}
                      ranking: {type: object}
                      pools: {type: object}
                      speed_to_lead: {type: object}
                      dispatch: {type: array, items: {type: object}}
                      sms: {type: object, nullable: true}
                      calls: {type: object}
                      as_of: {type: string, format: date-time, nullable: true}
                      filters: {type: object}
            400:
              description: A malformed query argument (message, field)
            422:
              description: The period is upside down, longer than 366 days or out of range (message, field)
        """
        now = utcnow()
        try:
            f = dashboard.parse_filters(request.args, clock.local_date(now))
        except DomainError as exc:
            return error_json(exc)
        # In the documented order (funnel, ranking, pools first): jsonify would sort the keys.
        body = json.dumps(figures(current_viewer(), f, now), ensure_ascii=False, default=str)
        return current_app.response_class(body, status=200, mimetype="application/json")



def register(appbuilder) -> None:
    appbuilder.add_view(DashboardView, "Dashboard", icon="fa-tachometer", label=_l("Dashboard"),
                        category="Sales")
    appbuilder.add_api(DashboardApi)
